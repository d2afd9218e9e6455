"""Recordings (callers' utterances, and conversations with operators): kept
for a retention period, then deleted (a transcript stays on its ticket, a
conversation's row on its call).

In a cluster every node must write its recordings into one shared folder
(docs/cluster.md). ``SharedRecordings`` checks that it is: each node leaves a
mark file in ``recordings_dir/.nodes/`` and looks for the marks of the other
live nodes. While one is missing the folder is not shared with that node: the
health endpoint says so, and the clean-up forgets only the rows of files it
deleted itself (a file it cannot see may be on the other node's disk)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from ivr.call_records import CallRecordStore
from ivr.tickets import TicketStore

MARKS = ".nodes"


class SharedRecordings:
    """Whether the recordings folder is shared with every live node."""

    def __init__(self, directory: Path, node_id: str, log: logging.Logger) -> None:
        self.directory = directory
        self.node_id = node_id
        self.unseen: list[str] = []  # live nodes whose mark this node cannot see
        self._log = log

    @property
    def shared(self) -> bool:
        return not self.unseen

    def describe(self) -> str:
        """For the health endpoint."""
        if self.shared:
            return "ok"
        return "not shared with " + ", ".join(self.unseen)

    def mark(self) -> None:
        """Leave this node's mark in the folder (at start)."""
        marks = self.directory / MARKS
        marks.mkdir(parents=True, exist_ok=True)
        (marks / self.node_id).write_text(f"{self.node_id}\n", encoding="utf-8")

    def check(self, alive: Iterable[str]) -> bool:
        """Look for the marks of the ``alive`` nodes; True when all are seen.
        A change is logged once (a warning while a node's mark is missing)."""
        marks = self.directory / MARKS
        unseen = sorted(n for n in set(alive) - {self.node_id} if not (marks / n).is_file())
        if unseen != self.unseen:
            if unseen:
                self._log.warning(
                    "recordings_dir %s is not shared with node(s) %s: their recordings "
                    "cannot be played from this node, and are left to them to clean up "
                    "(docs/cluster.md: a shared mount)",
                    self.directory,
                    ", ".join(unseen),
                )
            else:
                self._log.info("recordings_dir %s is shared with every live node", self.directory)
        self.unseen = unseen
        return not unseen


async def purge_recordings(
    store: TicketStore, retention_days: int, log: logging.Logger, *, forget_missing: bool = True
) -> int:
    """Delete utterance recordings older than the retention period (transcripts stay)."""
    return await _purge(
        "recordings",
        store.recordings_older_than,
        store.forget_recording,
        retention_days,
        log,
        forget_missing,
    )


async def purge_conversations(
    records: CallRecordStore,
    retention_days: int,
    log: logging.Logger,
    *,
    forget_missing: bool = True,
) -> int:
    """Delete conversation recordings older than the retention period (rows stay)."""
    return await _purge(
        "conversations",
        records.conversations_older_than,
        records.forget_conversation,
        retention_days,
        log,
        forget_missing,
    )


async def _purge(
    what: str,
    older_than: Callable[[float], Awaitable[list[tuple[int, str]]]],
    forget: Callable[[int], Awaitable[None]],
    retention_days: int,
    log: logging.Logger,
    forget_missing: bool,
) -> int:
    """Delete the old files and forget their rows. A file already gone is
    forgotten too when ``forget_missing`` (the folder is shared: another
    node deleted it, or an admin did); otherwise its row is left for the node
    whose disk holds it."""
    cutoff = time.time() - retention_days * 86400
    removed = 0
    for recording_id, path in await older_than(cutoff):
        try:
            Path(path).unlink()
        except FileNotFoundError:
            if not forget_missing:
                continue
        await forget(recording_id)
        removed += 1
    if removed:
        log.info("%s: %d older than %d days deleted", what, removed, retention_days)
    return removed
