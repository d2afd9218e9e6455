"""Recordings (callers' utterances, and conversations with operators): kept
for a retention period, then deleted (a transcript stays on its ticket, a
conversation's row on its call)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ivr.call_records import CallRecordStore
from ivr.tickets import TicketStore


async def purge_recordings(store: TicketStore, retention_days: int, log: logging.Logger) -> int:
    """Delete utterance recordings older than the retention period (transcripts stay)."""
    return await _purge(
        "recordings", store.recordings_older_than, store.forget_recording, retention_days, log
    )


async def purge_conversations(
    records: CallRecordStore, retention_days: int, log: logging.Logger
) -> int:
    """Delete conversation recordings older than the retention period (rows stay)."""
    return await _purge(
        "conversations",
        records.conversations_older_than,
        records.forget_conversation,
        retention_days,
        log,
    )


async def _purge(
    what: str,
    older_than: Callable[[float], Awaitable[list[tuple[int, str]]]],
    forget: Callable[[int], Awaitable[None]],
    retention_days: int,
    log: logging.Logger,
) -> int:
    cutoff = time.time() - retention_days * 86400
    removed = 0
    for recording_id, path in await older_than(cutoff):
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
        await forget(recording_id)
        removed += 1
    if removed:
        log.info("%s: %d older than %d days deleted", what, removed, retention_days)
    return removed
