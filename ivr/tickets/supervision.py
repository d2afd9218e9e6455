"""Graded supervision (分级督办) of dispatched tickets.

Levels, from the stored timestamps and counts of ``dispatches`` only (so a
restart, or another node taking over, loses nothing: the next round computes
the same thing):

- 1 初级预警: ``warn_share`` of the time limit is used and no answer yet;
- 2 中级警示 (推诿): the ticket was returned or reassigned twice (each further
  two passes raise it again);
- 3 高级督办: overdue without an answer, or 推诿 raised a second time.

A level only rises; each raising is a row of ``supervision_raises`` (for the
supervisors' lists and counts) and of the ticket's history (who:
``supervision``), and an event on the consoles' stream.  Raising is a
compare-and-set on the row (level and count as read), so two rounds at once
raise once; the rounds themselves run on one node of the cluster, the holder
of the ``supervision`` leader lease (ivr/leases.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ivr.leases import LeaderLease, LeaseRounds
from ivr.store import Database
from ivr.tickets.dispatch import _COLUMNS, LEVEL_NAMES, REPLIED, Dispatch, _dispatch, history
from ivr.tickets.events import TicketEvents

WHO = "supervision"  # the "who" of history rows written by supervision
LEASE = "supervision"
PASSES_FOR_LEVEL_2 = 2


@dataclass(frozen=True)
class Raise:
    ticket_id: int
    department: str
    level: int
    reason: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "ticket_id": self.ticket_id,
            "department": self.department,
            "level": self.level,
            "level_name": LEVEL_NAMES[self.level],
            "reason": self.reason,
            "at": self.at,
        }


def raises_due(
    d: Dispatch, now: float, warn_share: float
) -> tuple[int, int, list[tuple[int, str]]]:
    """(the new level, the new 推诿 count, the raisings (level, reason)) for ``d`` at ``now``."""
    if d.state == REPLIED:
        return d.level, d.passing_raised, []
    level, passing, found = d.level, d.passing_raised, []
    hours = (d.due_at - d.started_at) / 3600
    if now >= d.due_at and level < 3:
        late = (now - d.due_at) / 3600
        found.append((3, f"超期未答复：时限{hours:g}小时，已超{late:.1f}小时（{d.department}）"))
        level = 3
    while d.passes >= PASSES_FOR_LEVEL_2 * (passing + 1):
        passing += 1
        if passing >= 2:
            found.append((3, f"推诿再次发生：已退回或改派{d.passes}次（{d.department}）"))
            level = 3
        else:
            found.append((2, f"推诿：已退回或改派{d.passes}次（{d.department}）"))
            level = max(level, 2)
    if level < 1 and d.share_used(now) >= warn_share:
        used = d.share_used(now) * 100
        found.append((1, f"时限已用{used:.0f}%（{hours:g}小时），尚未答复（{d.department}）"))
        level = 1
    return level, passing, found


class Supervision:
    """Raises supervision levels: ``scan`` once, or ``start`` the rounds (every
    ``check_every`` s, on the node holding the lease)."""

    def __init__(
        self,
        db: Database,
        *,
        node: str,
        warn_share: Callable[[], float],
        check_every: Callable[[], float],
        events: TicketEvents | None = None,
        clock: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
    ) -> None:
        self._db = db
        self._warn_share = warn_share
        self._check_every = check_every
        self._events = events
        self._clock = clock
        self._log = log or logging.getLogger("ivr.supervision")
        self.lease = LeaderLease(db, LEASE, node)
        self._rounds = LeaseRounds(self.lease, self.round, every=check_every, log=self._log)
        self.rounds = 0  # rounds this node ran as the lease holder

    async def scan(self, now: float) -> list[Raise]:
        """Raise every level due at ``now``; the raisings made."""
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM dispatches WHERE state != ? ORDER BY ticket_id", (REPLIED,)
        )
        share = self._warn_share()
        made: list[Raise] = []
        for d in map(_dispatch, rows):
            level, passing, found = raises_due(d, now, share)
            if not found:
                continue
            async with self._db.transaction() as tx:
                changed = await tx.execute(
                    "UPDATE dispatches SET level = ?, passing_raised = ? "
                    "WHERE ticket_id = ? AND level = ? AND passing_raised = ? AND state != ?",
                    (level, passing, d.ticket_id, d.level, d.passing_raised, REPLIED),
                )
                if changed != 1:  # raised meanwhile (or answered): the next round sees it
                    continue
                for raised, reason in found:
                    await tx.execute(
                        "INSERT INTO supervision_raises (ticket_id, department, level, reason, at) "
                        "VALUES (?,?,?,?,?)",
                        (d.ticket_id, d.department, raised, reason, now),
                    )
                    await history(
                        tx,
                        d.ticket_id,
                        now,
                        WHO,
                        "supervision",
                        str(d.level),
                        f"{raised} {LEVEL_NAMES[raised]}：{reason}",
                    )
                    made.append(Raise(d.ticket_id, d.department, raised, reason, now))
        for r in made:
            self._log.warning(
                "supervision: ticket %d level %d (%s): %s",
                r.ticket_id,
                r.level,
                LEVEL_NAMES[r.level],
                r.reason,
            )
            if self._events is not None:
                self._events.publish("supervision", r.to_json())
        return made

    async def recent(self, limit: int = 100) -> list[Raise]:
        rows = await self._db.fetch_all(
            "SELECT ticket_id, department, level, reason, at FROM supervision_raises "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            Raise(int(r["ticket_id"]), str(r["department"]), int(r["level"]), r["reason"], r["at"])
            for r in rows
        ]

    async def round(self) -> list[Raise] | None:
        """One round: None when another node holds the lease."""
        now = self._clock()
        ttl = max(3 * self._check_every(), 10.0)
        if not await self.lease.hold(now, ttl=ttl):
            return None
        self.rounds += 1
        return await self.scan(now)

    @property
    def running(self) -> bool:
        return self._rounds.running

    def start(self) -> None:
        self._rounds.start()

    def wake(self) -> None:
        """Run a round now (a ticket was returned or reassigned)."""
        self._rounds.wake()

    async def stop(self) -> None:
        await self._rounds.stop()
