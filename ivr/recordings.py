"""Recordings (callers' utterances, and conversations with operators): kept
for a retention period, then deleted (a transcript stays on its ticket, a
conversation's row on its call)."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from ivr.call_records import CallRecordStore
from ivr.tickets import TicketStore


async def purge_recordings(store: TicketStore, retention_days: int, log: logging.Logger) -> int:
    """Delete recordings older than the retention period (transcripts stay)."""
    cutoff = time.time() - retention_days * 86400
    removed = 0
    for recording_id, path in await store.recordings_older_than(cutoff):
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
        await store.forget_recording(recording_id)
        removed += 1
    if removed:
        log.info("recordings: %d older than %d days deleted", removed, retention_days)
    return removed


async def purge_conversations(
    records: CallRecordStore, retention_days: int, log: logging.Logger
) -> int:
    """Delete conversation recordings older than the retention period."""
    cutoff = time.time() - retention_days * 86400
    removed = 0
    for recording_id, path in await records.conversations_older_than(cutoff):
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
        await records.forget_conversation(recording_id)
        removed += 1
    if removed:
        log.info("conversations: %d older than %d days deleted", removed, retention_days)
    return removed
