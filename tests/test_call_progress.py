"""Calls in progress are written to the store as they go (ivr/call_progress.py):
a node killed mid-call leaves rows that say how far each caller got, so the
survivor calls back those past the greeting. Before, the row kept the empty path
it was started with until the call's end, and a survivor queued no callback for
a caller killed while waiting in line (tests/test_cluster.py found it)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ivr.call_progress import CallProgress
from ivr.call_records import CallRecord, CallRecordStore
from ivr.store import open_store
from ivr.trial_call import place_call
from tests.conftest import StartHotline, trial

PLAN = Path(__file__).parent / "data" / "dialplans" / "welcome_then_queue.toml"
LOG = logging.getLogger("test.call_progress")


async def test_a_call_waiting_in_line_has_its_path_in_the_store_before_it_ends(
    start_hotline: StartHotline,
) -> None:
    hotline = await start_hotline(dialplan=PLAN)
    assert hotline.records is not None
    caller = asyncio.ensure_future(
        place_call(trial(hotline.endpoint.port, duration=5.0, caller="13900000055"), LOG)
    )
    try:
        stored: CallRecord | None = None
        for _ in range(60):
            await asyncio.sleep(0.1)
            if hotline.calls:
                (call_id,) = hotline.calls
                stored = await hotline.records.get(call_id)
                if stored is not None and stored.path == ["welcome", "operator"]:
                    break
        assert stored is not None and stored.path == ["welcome", "operator"], stored
        assert stored.ended_at is None and stored.queue == "general"
        assert stored.outcome == "waiting"
    finally:
        await caller
    (ended,) = await hotline.records.list_recent(1)
    assert ended.ended_at is not None and ended.outcome == "abandoned"


class Held:
    def __init__(self, record: CallRecord) -> None:
        self.record = record


async def test_an_ended_row_is_never_written_over(tmp_path: Path) -> None:
    db = await open_store(tmp_path / "ivr.sqlite3")
    try:
        records = CallRecordStore(db)
        live = CallRecord("c1", "13900000001", "12345", 1.0, answered_at=1.0)
        lost = CallRecord("c2", "13900000002", "12345", 1.0, answered_at=1.0)
        await records.start(live)
        await records.start(lost)
        # a survivor ended c2 as node_lost (its node was silent): it stays so
        lost_row = CallRecord(**{**lost.__dict__, "ended_at": 2.0, "end_reason": "node_lost"})
        await records.update(lost_row)
        calls = {"c1": Held(live), "c2": Held(lost)}
        progress = CallProgress(records, lambda: calls)
        live.path.append("welcome")
        lost.path.append("welcome")
        assert await progress.write_changed() == 1
        assert await progress.write_changed() == 0  # nothing moved on since
        live.digits = "0"
        assert await progress.write_changed() == 1
        c1, c2 = await records.get("c1"), await records.get("c2")
        assert c1 is not None and c1.path == ["welcome"] and c1.digits == "0"
        assert c2 is not None and c2.path == [] and c2.end_reason == "node_lost"
    finally:
        await db.close()
