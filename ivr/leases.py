"""Leader leases: one node of the cluster does a periodic job at a time.

A lease is a row of ``leader_leases`` (migration 14): the job's name, the node
holding it, until when.  ``hold`` takes the lease when it is free, expired or
already this node's, and extends it; otherwise it says no.  It runs in one
short transaction under the store's lock of that name, so two nodes asking at
once cannot both get it.  A node that dies stops renewing and another takes the
job over once ``until`` has passed; a node that stops cleanly lets it go at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ivr.store import Database
from ivr.store_watch import FailingRounds


class LeaderLease:
    def __init__(self, db: Database, name: str, node: str) -> None:
        self._db = db
        self.name = name
        self.node = node

    async def hold(self, now: float, *, ttl: float) -> bool:
        """Whether this node holds the lease until ``now + ttl`` (taken or renewed)."""
        async with self._db.transaction() as tx:
            await tx.lock(f"lease.{self.name}")
            row = await tx.fetch_one(
                "SELECT node, until FROM leader_leases WHERE name = ?", (self.name,)
            )
            if row is None:
                await tx.execute(
                    "INSERT INTO leader_leases (name, node, since, until) VALUES (?, ?, ?, ?)",
                    (self.name, self.node, now, now + ttl),
                )
                return True
            if row["node"] != self.node and float(row["until"]) > now:
                return False
            since_now = row["node"] != self.node
            await tx.execute(
                "UPDATE leader_leases SET node = ?, until = ?"
                + (", since = ?" if since_now else "")
                + " WHERE name = ?",
                (self.node, now + ttl, now, self.name)
                if since_now
                else (self.node, now + ttl, self.name),
            )
            return True

    async def holder(self) -> tuple[str, float] | None:
        """(the node holding it, until when), or None if nobody ever took it."""
        row = await self._db.fetch_one(
            "SELECT node, until FROM leader_leases WHERE name = ?", (self.name,)
        )
        return None if row is None else (str(row["node"]), float(row["until"]))

    async def release(self) -> None:
        """Let it go now (a clean stop), if this node holds it."""
        await self._db.execute(
            "UPDATE leader_leases SET until = 0 WHERE name = ? AND node = ?",
            (self.name, self.node),
        )


class LeaseRounds:
    """A periodic job's loop on every node: each round (``round``, which takes or
    renews the lease itself and does nothing where another node holds it) every
    ``every()`` seconds, or at once when woken, while ``enabled()``. A round that
    fails (the store away) is said once until one works again; a clean stop lets
    the lease go, so another node takes the job over at once."""

    def __init__(
        self,
        lease: LeaderLease,
        round_: Callable[[], Awaitable[object]],
        *,
        every: Callable[[], float],
        log: logging.Logger,
        enabled: Callable[[], bool] = lambda: True,
    ) -> None:
        self.lease = lease
        self._round = round_
        self._every = every
        self._enabled = enabled
        self._log = log
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        """Run a round now."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.lease.release()  # another node takes over at once
        except Exception as exc:
            self._log.warning("%s: lease not released: %s", self.lease.name, exc)

    async def _run(self) -> None:
        failing = FailingRounds(self._log, f"{self.lease.name} rounds failed")
        while True:
            if self._enabled():
                try:
                    await self._round()
                except Exception as exc:  # the store is away: the next round does it all
                    failing.failed(exc)
                else:
                    failing.worked()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the wait
            # in a task of its own each round, and tests that count the loop's
            # tasks (nothing left behind) saw one more or one fewer
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._every()):
                    await self._wake.wait()
            self._wake.clear()
