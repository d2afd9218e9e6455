"""The store lost while the node runs, and found again.

``StoreWatch`` says whether the store answers: it asks it ``SELECT 1`` every
second, and every part that fails to reach it says so at once
(``watch.failed(exc)``). The log says when the store was lost and when it
came back, once each; the health endpoint shows ``unreachable since <time>``.

``PendingWrites`` keeps what a call could not write while the store was away
(the call record at the end, a ticket, a callback request, a caller's
profile, a conversation recording's row), in memory, in order, and writes it
when the store is back. It is bounded (``limit`` items); each item kept and
each written later is a log line, with what it holds (phone numbers masked);
an item that cannot be kept (the queue is full) or is still unwritten when
the node stops is logged with its content at error level, so nothing is lost
without a word. Why memory and not a file: docs/decisions.md, "The store lost
while running".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ivr.logs import mask_phone
from ivr.store import Database, StoreUnavailableError

PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 3.0  # a probe not answered in this time: the store is unreachable
PENDING_LIMIT = 1000  # writes kept in memory at most


def local_time(epoch: float) -> str:
    """ISO 8601 local time with the offset, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch))


class StoreWatch:
    """Whether the store answers now, and since when it does not."""

    def __init__(
        self,
        db: Database,
        *,
        log: logging.Logger,
        every: float = PROBE_EVERY_S,
        timeout: float = PROBE_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.every = every
        self.timeout = timeout
        self.clock = clock
        self.lost_at: float | None = None  # None: the store answers
        self.back_at: float | None = None  # when it last came back
        self.why: str = ""  # what the first failure said
        self.on_back: list[Callable[[], None]] = []  # called when the store is back
        self._log = log
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self.lost_at is None

    def describe(self) -> str:
        """For the health endpoint: ``ok`` or ``unreachable since <local time>``."""
        if self.lost_at is None:
            return "ok"
        return f"unreachable since {local_time(self.lost_at)}"

    def failed(self, exc: BaseException) -> bool:
        """``exc`` came from the store: True when it means the store cannot be
        reached (it is marked lost then; the log says so once)."""
        if not isinstance(exc, StoreUnavailableError | TimeoutError):
            return False
        self.lost(str(exc))
        return True

    def lost(self, why: str) -> None:
        if self.lost_at is not None:
            return
        self.lost_at = self.clock()
        self.why = why
        self._log.error(
            "store lost at %s: %s; calls go on, new calls are answered and put through "
            "by this node alone, what cannot be written is kept in memory until it is back",
            local_time(self.lost_at),
            why,
        )
        self._wake()

    def reached(self) -> None:
        """The store answered."""
        if self.lost_at is None:
            return
        now = self.clock()
        self._log.warning(
            "store back at %s (unreachable since %s, %.1f s)",
            local_time(now),
            local_time(self.lost_at),
            now - self.lost_at,
        )
        self.lost_at = None
        self.back_at = now
        self.why = ""
        self._wake()
        for listener in list(self.on_back):
            listener()

    async def changed(self) -> None:
        """Wait for the store to be lost or found again."""
        await self._changed.wait()

    async def probe(self) -> bool:
        """Ask the store once; True when it answered."""
        try:
            await asyncio.wait_for(self.db.fetch_one("SELECT 1"), self.timeout)
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                self.lost(f"no answer to a probe in {self.timeout:.0f} s")
            else:
                self.lost(str(exc) or type(exc).__name__)
            return False
        self.reached()
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._probe_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self.probe()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


Write = Callable[[], Awaitable[object]]


@dataclass
class PendingWrite:
    what: str  # e.g. "call record 3f2a@10.0.0.5"
    content: str  # what it holds, for the log
    write: Write
    kept_at: float = field(default_factory=time.time)


class PendingWrites:
    """Writes kept while the store is away, written in order when it is back."""

    def __init__(
        self, watch: StoreWatch, *, log: logging.Logger, limit: int = PENDING_LIMIT
    ) -> None:
        self.watch = watch
        self.limit = limit
        self._items: deque[PendingWrite] = deque()
        self._log = log
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        self.written = 0  # items written after being kept (since start)
        self.dropped = 0  # items that could not be kept (full) or never written

    def __len__(self) -> int:
        return len(self._items)

    async def write(self, what: str, content: str, write: Write) -> bool:
        """Write now if the store answers (and nothing kept is waiting before
        this), else keep it for later. True when written now. An error that is
        not the store being away is raised as it is."""
        if self.watch.up and not self._items:
            try:
                await write()
                return True
            except Exception as exc:
                if not self.watch.failed(exc):
                    raise
        self.keep(what, content, write)
        return False

    def keep(self, what: str, content: str, write: Write) -> bool:
        """Keep ``write`` for when the store is back; False (logged with its
        content) when the queue is full."""
        shown = mask_phone(content)
        if len(self._items) >= self.limit:
            self.dropped += 1
            self._log.error(
                "store unreachable and %d writes kept already: %s NOT kept, its content: %s",
                len(self._items),
                what,
                shown,
            )
            return False
        self._items.append(PendingWrite(what, shown, write))
        why = "store unreachable" if not self.watch.up else "earlier writes still kept"
        self._log.warning(
            "%s: %s kept in memory, to write when it is back (%d kept): %s",
            why,
            what,
            len(self._items),
            shown,
        )
        return True

    async def flush(self) -> int:
        """Write what was kept, in order, while the store takes it; how many."""
        done = 0
        async with self._flushing:
            while self._items and self.watch.up:
                item = self._items[0]
                try:
                    await item.write()
                except Exception as exc:
                    if self.watch.failed(exc):
                        break
                    self._items.popleft()
                    self.dropped += 1
                    self._log.exception(
                        "%s kept since %s could not be written, given up; its content: %s",
                        item.what,
                        local_time(item.kept_at),
                        item.content,
                    )
                    continue
                self._items.popleft()
                done += 1
                self.written += 1
                self._log.info(
                    "%s written to the store (kept %.1f s; %d still kept)",
                    item.what,
                    time.time() - item.kept_at,
                    len(self._items),
                )
        return done

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._write_forever())

    async def stop(self) -> None:
        """One last try (if the store answers), then every item left is logged
        with its content: the node stops, memory goes with it."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._items and await self.watch.probe():
            with contextlib.suppress(Exception):
                await self.flush()
        while self._items:
            item = self._items.popleft()
            self.dropped += 1
            self._log.error(
                "node stopping with the store unreachable: %s (kept since %s) is not "
                "written; its content: %s",
                item.what,
                local_time(item.kept_at),
                item.content,
            )

    async def _write_forever(self) -> None:
        while True:
            if self._items and self.watch.up:
                await self.flush()
            with contextlib.suppress(TimeoutError):  # no task of its own (see LeaseRounds)
                async with asyncio.timeout(self.watch.every):
                    await self.watch.changed()


class FailingRounds:
    """A loop that reads or writes the store every round says once that its
    rounds fail (while the store is away they fail every round) and once
    that they work again; the rounds in between are debug lines."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self.what = what
        self.failing_since: float | None = None

    def failed(self, exc: BaseException, *, with_traceback: bool = False) -> None:
        if self.failing_since is not None:
            self._log.debug("%s: %s", self.what, exc)
            return
        self.failing_since = time.time()
        self._log.warning(
            "%s: %s (said once; until it works again)",
            self.what,
            exc,
            exc_info=exc if with_traceback else None,
        )

    def worked(self) -> None:
        if self.failing_since is None:
            return
        self._log.info(
            "%s: works again (failed for %.1f s)", self.what, time.time() - self.failing_since
        )
        self.failing_since = None
