"""Calls in progress written to the store as they go: every second, each call
of this node whose path in the dial plan, keys, queue, operator or outcome
changed since it was last written gets its row updated.

A call's record is otherwise written when it starts (path empty) and when it
ends. A node killed in between leaves only the first: a survivor taking it over
(ivr/lost_nodes.py) reads the path to tell a caller past the greeting (called
back, with their ticket) from one who never got that far. A row that has ended
(the call's own end, or a survivor's ``node_lost``) is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from ivr.call_records import CallRecord, CallRecordStore

PROGRESS_EVERY_S = 1.0


class HasRecord(Protocol):
    @property
    def record(self) -> CallRecord: ...


def _progress(record: CallRecord) -> tuple[object, ...]:
    return (
        tuple(record.path),
        record.digits,
        record.queue,
        record.operator,
        record.outcome,
    )


class CallProgress:
    def __init__(
        self,
        records: CallRecordStore,
        calls: Callable[[], Mapping[str, HasRecord]],
        *,
        every: float = PROGRESS_EVERY_S,
        log: logging.Logger | None = None,
    ) -> None:
        self._records = records
        self._calls = calls
        self._every = every
        self._log = log or logging.getLogger("ivr.calls")
        self._written: dict[str, tuple[object, ...]] = {}
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def write_changed(self) -> int:
        """Write the calls that moved on since last written; how many were."""
        calls = dict(self._calls())
        for gone in set(self._written) - set(calls):
            del self._written[gone]
        written = 0
        for call_id, call in calls.items():
            now = _progress(call.record)
            if self._written.get(call_id) == now:
                continue
            if await self._records.progress(call.record):
                self._written[call_id] = now
                written += 1
        return written

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self.write_changed()
            except Exception as exc:  # the store is away: the calls go on
                if not self._failing:
                    self._log.warning("calls in progress not written: %s", exc)
                self._failing = True
            else:
                self._failing = False
