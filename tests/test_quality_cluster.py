"""Quality inspection in a cluster, on SQLite and on PostgreSQL, two nodes on
one store: calls written after their day was drawn are drawn by a later pass,
once, at the same share; each sample is checked on the node that holds its
recording, waits while that node is away, and is an error (saying why) once
the node is gone for good."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

from ivr.call_records import CallRecord, CallRecordStore
from ivr.node_roster import NodeRoster
from ivr.quality.inspection import DAY_S
from ivr.quality.samples import QualitySamples
from ivr.store import Database, open_store
from tests.quality_audio import CALLER_NUMBER, clean_parts, conversation
from tests.test_quality_store import OPS, POLICE, inspection, noon, settings

YESTERDAY = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
BEFORE = (datetime.date.today() - datetime.timedelta(days=2)).isoformat()
TODAY_NOON = noon(datetime.date.today().isoformat())


async def record(
    db: Database, day: str, names: range, path: Path, *, node: str | None = None
) -> None:
    """A call of ``day`` per number in ``names``, held by ``node``, with a
    conversation recording at ``path``."""
    records = CallRecordStore(db)
    for n in names:
        started = noon(day) - 3600 + n * 30
        call_id = f"{day}-{node}-{n}"
        await records.start(
            CallRecord(call_id, CALLER_NUMBER, "12345", started, answered_at=started, node=node)
        )
        rid = await records.add_conversation(call_id, OPS[n % len(OPS)], str(path), started + 5)
        await records.conversation_done(rid, 30.0)


async def test_calls_written_after_the_draw_are_drawn_once_by_a_later_pass(
    store_location: str | Path, tmp_path: Path
) -> None:
    now = [TODAY_NOON]
    s = settings(share=0.05, days_back=2)
    async with await open_store(store_location) as db_a, await open_store(store_location) as db_b:
        await record(db_a, YESTERDAY, range(40), tmp_path / "x.wav", node="node-a")
        a, b = inspection(db_a, "node-a", s, now), inspection(db_b, "node-b", s, now)
        first = await a.round()
        assert first is not None
        (drawn,) = [d for d in first.drawn if d.day == YESTERDAY]
        assert (drawn.candidates, len(drawn.picked), drawn.late_pass) == (40, 2, 0)

        # node b kept 20 calls of yesterday while the store was away, and one
        # to 110 (never drawn); they reach the store after the draw
        await record(db_b, YESTERDAY, range(100, 120), tmp_path / "x.wav", node="node-b")
        records = CallRecordStore(db_b)
        await records.start(CallRecord("late-110", CALLER_NUMBER, "12345", noon(YESTERDAY)))
        rid = await records.add_conversation("late-110", POLICE, "p.wav", noon(YESTERDAY))
        await records.conversation_done(rid, 30.0)

        now[0] += 600  # both nodes' next rounds, at once: the lease holder's pass draws
        await a.lease.release()
        done_a, done_b = await asyncio.gather(a.round(), b.round())
        holder = done_a or done_b
        assert holder is not None and (done_a is None) != (done_b is None)
        (late,) = holder.drawn
        # 5 % of 20 is exactly 1: floor(1.0 + u) whatever u
        assert (late.day, late.candidates, len(late.picked), late.late_pass) == (
            YESTERDAY,
            20,
            1,
            1,
        )

        # nothing is considered twice: every recording once, the late ones by pass 1
        rows = await db_a.fetch_all(
            "SELECT pass, count(*) AS n FROM quality_considered WHERE day = ? "
            "GROUP BY pass ORDER BY pass",
            (YESTERDAY,),
        )
        assert [(r["pass"], r["n"]) for r in rows] == [(0, 40), (1, 20)]
        day = await QualitySamples(db_a).day(YESTERDAY)
        assert day is not None
        assert (day["candidates"], day["picked"], day["late_passes"]) == (40, 2, 1)
        assert (day["late_candidates"], day["late_picked"]) == (20, 1)

        # later rounds and restarts of either node draw nothing more
        for node, db in (("node-a", db_a), ("node-b", db_b)):
            await a.stop()
            await b.stop()
            again = inspection(db, node, s, now)
            now[0] += 600
            later = await again.round()
            assert later is not None and later.drawn == []
            await again.stop()
        samples = await QualitySamples(db_a).recent()
        assert len(samples) == 3 and len({x.recording_id for x in samples}) == 3
        (late_sample,) = [x for x in samples if x.pass_no == 1]
        assert late_sample.call_id.startswith(f"{YESTERDAY}-node-b-")
        codes = {x.operator: x.seat_code for x in samples if x.pass_no == 0}
        if late_sample.operator in codes:  # the day's code for an operator already drawn
            assert codes[late_sample.operator] == late_sample.seat_code
        else:
            assert late_sample.seat_code not in codes.values()


async def test_a_late_call_is_drawn_with_the_share_as_its_chance(tmp_path: Path) -> None:
    """One late call on each of 60 days at share 0.25: drawn about one time in
    four (seeded, so the same every run), not always and not never."""
    days = [(datetime.date(2026, 1, 1) + datetime.timedelta(days=n)).isoformat() for n in range(60)]
    async with await open_store(tmp_path / "ivr.sqlite3") as db:
        q = QualitySamples(db)
        late_drawn = 0
        for day in days:
            await record(db, day, range(4), tmp_path / "x.wav")
            first = await q.draw_day(day, share=0.25, seed="s", now=0.0, node="n")
            assert first is not None and len(first.picked) == 1
            assert await q.draw_late(day, share=0.25, seed="s", now=1.0) is None  # nothing new
            await record(db, day, range(10, 11), tmp_path / "x.wav")
            late = await q.draw_late(day, share=0.25, seed="s", now=2.0)
            assert late is not None and late.candidates == 1
            late_drawn += len(late.picked)
        assert 6 <= late_drawn <= 24, late_drawn

        # a day drawn before the considered recordings were kept (migration 22)
        # gets no later pass: which of its calls were considered is unknown
        old = "2025-06-01"
        await record(db, old, range(3), tmp_path / "x.wav")
        assert await q.draw_day(old, share=0.25, seed=None, now=0.0, node="n") is not None
        await db.execute("UPDATE quality_days SET late_tracked = 0 WHERE day = ?", (old,))
        await record(db, old, range(10, 13), tmp_path / "x.wav")
        assert await q.draw_late(old, share=1.0, seed=None, now=1.0) is None
        assert old not in await q.late_days([old])


async def test_each_sample_is_checked_on_the_node_holding_its_recording(
    store_location: str | Path, tmp_path: Path
) -> None:
    now = [TODAY_NOON]
    s = settings(share=1.0, days_back=7)
    wavs = {n: tmp_path / n / "conversation.wav" for n in ("b", "c", "d", "e")}
    wavs["b"].parent.mkdir()
    conversation(wavs["b"], clean_parts(tmp_path))
    async with await open_store(store_location) as db_a, await open_store(store_location) as db_b:
        rosters = {
            name: NodeRoster(db, f"node-{name}", clock=lambda: now[0])
            for name, db in (("a", db_a), ("b", db_b), ("c", db_a), ("d", db_a))
        }
        for roster in rosters.values():
            await roster.join()
        # c stopped ten minutes ago (it may come back); d was lost eight days ago
        await db_a.execute(
            "UPDATE nodes SET state = 'stopped', heartbeat_at = ? WHERE node_id = 'node-c'",
            (now[0] - 600,),
        )
        await db_a.execute(
            "UPDATE nodes SET state = 'lost', heartbeat_at = ? WHERE node_id = 'node-d'",
            (now[0] - 8 * DAY_S,),
        )
        # one call a node: e was never in the roster (removed)
        for name in ("b", "c", "d", "e"):
            await record(db_a, YESTERDAY, range(1), wavs[name], node=f"node-{name}")
        a, b = inspection(db_a, "node-a", s, now), inspection(db_b, "node-b", s, now)

        done = await a.round()  # a holds the lease
        assert done is not None and len(done.drawn[-1].picked) == 4
        by_node = {x.node: x for x in await a.samples.recent()}
        # b is live: its sample is left to it, though a could read the file here
        assert by_node["node-b"].check_state == "pending" and by_node["node-b"].checks == {}
        # c is away for now: pending, saying why (not an error)
        assert by_node["node-c"].check_state == "pending"
        assert "node-c" in by_node["node-c"].checks["waiting"]
        assert "回来后由它检查" in by_node["node-c"].checks["waiting"]
        # d and e are gone for good: errors that say so
        assert by_node["node-d"].check_state == "error"
        assert "8 天无心跳（状态 lost），视为永久离开" in by_node["node-d"].checks["error"]
        assert by_node["node-e"].check_state == "error"
        assert "不在节点名册中" in by_node["node-e"].checks["error"]
        assert done.checked == 2

        # b's round (not the lease holder) checks its own sample, and only it
        assert await b.round() is None
        assert b.checked_here == 1
        got = await b.samples.get(by_node["node-b"].id)
        assert got is not None and got.check_state == "done" and got.checked_on == "node-b"
        assert got.checks["long_silence"]["state"] == "passed"

        # a again: c is still away, its sample still waits
        now[0] += 300
        for roster in (rosters["a"], rosters["b"]):
            await roster.beat()
        again = await a.round()
        assert again is not None and again.checked == 0
        waiting = await a.samples.get(by_node["node-c"].id)
        assert waiting is not None and waiting.check_state == "pending"

        # c comes back with its recording and checks it
        await rosters["c"].join()
        wavs["c"].parent.mkdir()
        conversation(wavs["c"], clean_parts(tmp_path))
        c = inspection(db_a, "node-c", s, now)
        assert await c.round() is None
        got = await c.samples.get(by_node["node-c"].id)
        assert got is not None and got.check_state == "done" and got.checked_on == "node-c"
        assert "waiting" not in got.checks

        # a recording gone from the node that made it is an error that says so
        await record(db_a, BEFORE, range(1), tmp_path / "c" / "moved.wav", node="node-c")
        now[0] += 300
        await rosters["c"].beat()
        await a.round()  # a later pass draws it (share 1); a leaves it to c, live
        assert await c.round() is None
        (moved,) = [x for x in await c.samples.recent() if x.day == BEFORE]
        assert moved.check_state == "error" and moved.checked_on == "node-c"
        assert "录音文件不在节点 node-c 上（已被移走或删除）" in moved.checks["error"]
        for q in (a, b, c):
            await q.stop()
