"""Quality inspection in the store, on SQLite and on PostgreSQL: each ended day
is drawn once by the holder of the lease `quality`, whichever node asks and
however often it restarts; the draw takes the share asked (at least one); the
samples are checked from their recordings; reviews are stored with the
reviewer's name; the results per operator count it all."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ivr.call_records import CallRecord, CallRecordStore
from ivr.config import QualitySettings
from ivr.quality.inspection import QualityInspection, ended_days
from ivr.quality.samples import (
    ITEMS,
    QualitySamples,
    ReviewError,
    day_bounds,
    how_many,
    seat_codes,
)
from ivr.speech.engine import Transcript
from ivr.speech.scripted_engine import ScriptedEngine
from ivr.speech.transcriber import Transcriber
from ivr.store import Database, open_store
from tests.quality_audio import CALLER_NUMBER, clean_parts, conversation, faulty_parts

OPS = ["sip:wang@127.0.0.1:5080", "sip:li@127.0.0.1:5081", "sip:zhao@127.0.0.1:5082"]
POLICE = "sip:110@10.0.0.1:5060"


def noon(day: str) -> float:
    start, _ = day_bounds(day)
    return start + 12 * 3600


async def record_calls(
    db: Database, day: str, count: int, files: list[Path], *, first: int = 0
) -> None:
    """``count`` answered calls of ``day`` with a conversation recording each,
    the operators in turn, the recordings the ``files`` in turn."""
    records = CallRecordStore(db)
    at = noon(day) - 3600
    for n in range(first, first + count):
        call_id = f"{day}-call-{n}"
        started = at + n * 60
        await records.start(
            CallRecord(call_id, CALLER_NUMBER, "12345", started, answered_at=started + 1)
        )
        rid = await records.add_conversation(
            call_id, OPS[n % len(OPS)], str(files[n % len(files)]), started + 20
        )
        await records.conversation_done(rid, 30.0)


def settings(**changes: object) -> QualitySettings:
    return dataclasses.replace(QualitySettings(), **changes)  # type: ignore[arg-type]


def inspection(db: Database, node: str, s: QualitySettings, now: list[float]) -> QualityInspection:
    return QualityInspection(
        db, node=node, settings=lambda: s, exclude=lambda: [POLICE], clock=lambda: now[0]
    )


def test_how_many_and_seat_codes() -> None:
    assert [how_many(0.05, n) for n in (0, 1, 3, 29, 30, 40, 100)] == [0, 1, 1, 1, 2, 2, 5]
    assert how_many(1.0, 7) == 7
    assert seat_codes(28)[:3] == ["坐席 A", "坐席 B", "坐席 C"]
    assert seat_codes(28)[25:] == ["坐席 Z", "坐席 AA", "坐席 AB"]
    assert ended_days(noon("2026-03-02"), 3) == ["2026-02-27", "2026-02-28", "2026-03-01"]


async def test_each_day_drawn_once_by_the_lease_holder_and_checked(
    store_location: str | Path, tmp_path: Path
) -> None:
    clean, faulty = tmp_path / "clean.wav", tmp_path / "faulty.wav"
    conversation(clean, clean_parts(tmp_path))
    conversation(faulty, faulty_parts(tmp_path))
    today = datetime.date.today()
    busy = (today - datetime.timedelta(days=1)).isoformat()
    quiet = (today - datetime.timedelta(days=2)).isoformat()
    s = settings(share=0.05, days_back=3)
    now = [noon(today.isoformat())]
    async with await open_store(store_location) as db:
        await record_calls(db, busy, 40, [clean, faulty])
        await record_calls(db, quiet, 3, [faulty], first=100)
        # a bridge to 110 is not an operator's conversation: never drawn
        records = CallRecordStore(db)
        await records.start(CallRecord("police-1", CALLER_NUMBER, "12345", noon(busy)))
        rid = await records.add_conversation("police-1", POLICE, str(clean), noon(busy))
        await records.conversation_done(rid, 30.0)
        # a call of today is not drawn until today has ended
        await record_calls(db, today.isoformat(), 2, [clean], first=200)

        a, b = inspection(db, "node-a", s, now), inspection(db, "node-b", s, now)
        done_a, done_b = await asyncio.gather(a.round(), b.round())
        assert (done_a is None) != (done_b is None), "exactly one node holds the lease"
        holder = done_a or done_b
        assert holder is not None
        drawn = {d.day: d for d in holder.drawn}
        assert set(drawn) == {ended_days(now[0], 3)[0], quiet, busy}
        assert drawn[busy].candidates == 40 and len(drawn[busy].picked) == 2  # 5 % of 40
        assert drawn[quiet].candidates == 3 and len(drawn[quiet].picked) == 1  # at least one
        assert drawn[ended_days(now[0], 3)[0]].picked == []
        assert holder.checked == 3

        # a restart of either node, or a later round, draws nothing again
        for node in ("node-a", "node-b"):
            again = inspection(db, node, s, now)
            await a.stop()
            await b.stop()
            later = await again.round()
            assert later is not None and later.drawn == [] and later.checked == 0
            await again.stop()
        samples = await a.samples.recent()
        assert len(samples) == 3
        assert all(x.operator != POLICE for x in samples)
        assert {x.day for x in samples} == {busy, quiet}

        by_day: dict[str, dict[str, str]] = {}
        for x in samples:
            codes = by_day.setdefault(x.day, {})
            assert codes.setdefault(x.operator, x.seat_code) == x.seat_code
        for codes in by_day.values():  # one code per operator and day
            assert len(set(codes.values())) == len(codes)

        # the checks ran on the recordings: audio checks for real, the word
        # checks not run (this node has no recogniser) and saying why
        for x in samples:
            assert x.check_state == "done", x.checks
            expected = "failed" if x.path == str(faulty) else "passed"
            assert x.checks["long_silence"]["state"] == expected
            assert x.checks["talk_over"]["state"] == expected
            assert x.checks["greeting"]["state"] == "not_run"
            assert "未加载语音识别" in x.checks["greeting"]["reason"]
            assert x.for_reviewer("r") == {
                "id": x.id,
                "day": x.day,
                "seat": x.seat_code,
                "seconds": 30.0,
                "kept": True,
                "check_state": "done",
                "checks": x.checks,
                "reviews": 0,
                "my_review": None,
            }

        # reviews: checked, stored with the reviewer's name, one per reviewer
        first = samples[-1]
        with pytest.raises(ReviewError, match="规范用语"):
            await a.samples.review(first.id, "r1", {"规范用语": 30}, "", now=now[0])
        with pytest.raises(ReviewError, match="no quality sample 999"):
            await a.samples.review(999, "r1", dict.fromkeys(ITEMS, 20), "", now=now[0])
        await a.samples.review(first.id, "r1", dict.fromkeys(ITEMS, 10), "slow", now=now[0])
        await a.samples.review(first.id, "r1", dict.fromkeys(ITEMS, 20), "好", now=now[0])
        await a.samples.review(first.id, "r2", dict.fromkeys(ITEMS, 15), "", now=now[0])
        got = await a.samples.get(first.id)
        assert got is not None
        assert [(r["reviewer"], r["score"], r["comment"]) for r in got.reviews] == [
            ("r1", 80, "好"),
            ("r2", 60, ""),
        ]

        results = {r["operator"]: r for r in await a.samples.results(quiet, busy)}
        assert sum(r["sampled"] for r in results.values()) == 3
        mine = results[first.operator]
        assert mine["average_score"] == 70.0 and mine["reviews"] == 2
        for r in results.values():
            ran = r["checks"]["long_silence"]
            assert ran["ran"] == r["checked"] == r["sampled"]
            assert r["checks"]["greeting"]["ran"] == 0
            assert r["checks"]["greeting"]["failed_share"] is None
        faulty_count = sum(1 for x in samples if x.path == str(faulty))
        assert sum(r["checks"]["talk_over"]["failed"] for r in results.values()) == faulty_count


async def test_a_lost_recording_is_reported_not_checked(
    store_location: str | Path, tmp_path: Path
) -> None:
    day = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    now = [noon(datetime.date.today().isoformat())]
    async with await open_store(store_location) as db:
        await record_calls(db, day, 1, [tmp_path / "gone.wav"])
        q = inspection(db, "node-a", settings(days_back=1), now)
        done = await q.round()
        assert done is not None and done.checked == 1
        (sample,) = await q.samples.recent()
        assert sample.check_state == "error"
        assert "录音文件不在节点 node-a 上" in sample.checks["error"]
        await q.stop()


async def test_the_same_seed_draws_the_same_calls(tmp_path: Path) -> None:
    day = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    picks = []
    for n in range(2):
        async with await open_store(tmp_path / f"s{n}.sqlite3") as db:
            await record_calls(db, day, 60, [tmp_path / "x.wav"])
            q = QualitySamples(db)
            got = await q.draw_day(day, share=0.1, seed="7", now=0.0, node="n")
            assert got is not None and len(got.picked) == 6
            picks.append([s.call_id for s in await q.recent()])
    assert picks[0] == picks[1]


def test_bad_quality_settings_name_the_line(tmp_path: Path) -> None:
    from ivr.config import ConfigError, load_settings

    path = tmp_path / "config.toml"
    path.write_text(
        '[queues.general]\noperators = ["sip:operator@127.0.0.1:5080"]\n'
        '[quality]\nshare = 0\nseed = 1.5\nsilence_s = "10"\ngreeting_words = []\n'
        "sample = 3\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "config.toml:4: quality.share = 0: must be a share > 0 and <= 1" in message
    assert "config.toml:5: quality.seed = 1.5: must be an integer or a string" in message
    assert "config.toml:6: quality.silence_s" in message and "without quotes" in message
    assert "config.toml:7: quality.greeting_words" in message
    assert "config.toml:8: quality.sample = 3: unknown key" in message
    path.write_text(
        '[queues.general]\noperators = ["sip:operator@127.0.0.1:5080"]\n'
        '[quality]\nshare = 0.1\nseed = 42\nclosing_words = ["再见"]\n',
        encoding="utf-8",
    )
    quality = load_settings(path).quality
    assert quality.share == 0.1 and quality.seed == "42"
    assert quality.closing_words == ("再见",) and quality.silence_s == 10.0


class _SlowEngine(ScriptedEngine):
    """A recogniser that takes a while and notes whose utterance it began when."""

    name = "slow-stand-in"

    def __init__(self) -> None:
        super().__init__(["来电人", "录音"])
        self.began: list[int] = []

    def transcribe(self, pcm: npt.NDArray[np.int16], *, sample_rate: int = 8000) -> Transcript:
        self.began.append(int(pcm[0]))
        time.sleep(0.6)
        return super().transcribe(pcm, sample_rate=sample_rate)


async def test_checks_wait_for_the_recogniser_to_be_free_of_callers(tmp_path: Path) -> None:
    """A sample's utterance goes to the recogniser only once no caller's
    utterance waits or is being recognised: the caller's, though sent later
    than the check asked, is begun first."""
    engine = _SlowEngine()
    transcriber = Transcriber(engine, workers=1)
    db = await open_store(tmp_path / "ivr.db")
    try:
        inspection = QualityInspection(
            db, node="n1", settings=QualitySettings, transcriber=lambda: transcriber
        )
        recognise, why_not = inspection._recogniser()
        assert recognise is not None and why_not == ""
        caller = np.full(8000, 1, dtype=np.int16)  # first sample says whose it is
        recording = np.full(8000, 2, dtype=np.int16)
        first_caller = asyncio.ensure_future(transcriber.transcribe(caller))
        await asyncio.sleep(0.1)  # the caller's utterance is being recognised
        check = asyncio.ensure_future(recognise(recording))
        await asyncio.sleep(0.1)
        second_caller = asyncio.ensure_future(transcriber.transcribe(caller))  # queued
        await asyncio.gather(first_caller, second_caller, check)
        assert engine.began == [1, 1, 2]  # both callers before the recording
    finally:
        transcriber.close()
        await db.close()


async def test_migration_22_keeps_each_considered_recording_once(
    store_location: str | Path,
) -> None:
    from ivr.store import MIGRATIONS, ConstraintError

    async with await open_store(store_location) as db:
        assert await db.schema_version() >= 22
        assert MIGRATIONS[21].version == 22 and "quality" in MIGRATIONS[21].description
        await db.execute(
            "INSERT INTO quality_days (day, share, candidates, picked, sampled_at, node) "
            "VALUES ('2026-03-01', 0.05, 3, 1, 1.0, 'n1')"
        )
        day = await db.fetch_one("SELECT * FROM quality_days")
        assert day is not None
        assert (day["late_tracked"], day["late_passes"], day["late_candidates"]) == (0, 0, 0)
        assert day["late_picked"] == 0
        add = "INSERT INTO quality_considered (recording_id, day, pass, considered_at) "
        await db.execute(add + "VALUES (7, '2026-03-01', 0, 1.0)")
        with pytest.raises(ConstraintError):  # a recording is considered once, ever
            await db.execute(add + "VALUES (7, '2026-03-01', 1, 2.0)")
        with pytest.raises(ConstraintError):  # only for a day that was drawn
            await db.execute(add + "VALUES (8, '2026-03-02', 0, 1.0)")
