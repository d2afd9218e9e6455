"""Spike episodes (未诉先办): the spike alerts of ivr/tickets/situation.py kept
in the store, one row of ``spike_episodes`` (migration 20) per episode.

An episode of a district x category begins at the first pass that finds it
spiking (its count and baseline then are kept), follows its peak while it
spikes, and ends at the first pass that finds it back below the rule. A
supervisor or admin may acknowledge an open episode, with a note: the banner
and the map then show it as acknowledged, not as a fresh alarm. A pair that
spikes again after it ended opens a new episode (a new alarm).

The passes run on one node of the cluster, the holder of the ``spike_episodes``
leader lease (ivr/leases.py), every ``check_every`` s or when woken (a ticket
was created or edited here). Each pass is one transaction under the store's
lock of that name and reads the open episodes from the store, so a restart or
another node taking over carries on the same episodes; the unique index on
the open episode of a pair refuses a second one whatever happens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ivr.leases import LeaderLease, LeaseRounds
from ivr.store import Database, Row
from ivr.tickets.events import TicketEvents
from ivr.tickets.situation import Situation, Spike

LEASE = "spike_episodes"
EVENT = "spike"  # the console event of an episode opened, ended or acknowledged
MAX_NOTE = 500
HISTORY_LIMIT = 50
_COLUMNS = (
    "id, district, category, began_at, began_count, began_mean, began_sd, peak, peak_at, "
    "last_count, ended_at, acknowledged_by, acknowledged_at, note, node"
)


@dataclass(frozen=True)
class SpikeEpisode:
    id: int
    district: str
    category: str
    began_at: float
    began_count: int  # tickets in the window when it began
    began_mean: float  # the baseline's mean then
    began_sd: float
    peak: int  # the most tickets in the window a pass saw while it lasted
    peak_at: float
    last_count: int  # what the latest pass saw
    ended_at: float | None  # None: still spiking
    acknowledged_by: str | None
    acknowledged_at: float | None
    note: str
    node: str  # the node whose pass opened it

    @property
    def open(self) -> bool:
        return self.ended_at is None

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "district": self.district,
            "category": self.category,
            "began_at": self.began_at,
            "began_count": self.began_count,
            "began_mean": round(self.began_mean, 2),
            "began_sd": round(self.began_sd, 2),
            "peak": self.peak,
            "peak_at": self.peak_at,
            "last_count": self.last_count,
            "ended_at": self.ended_at,
            "open": self.open,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at,
            "note": self.note,
        }


def _episode(row: Row) -> SpikeEpisode:
    return SpikeEpisode(
        id=int(row["id"]),
        district=str(row["district"]),
        category=str(row["category"]),
        began_at=float(row["began_at"]),
        began_count=int(row["began_count"]),
        began_mean=float(row["began_mean"]),
        began_sd=float(row["began_sd"]),
        peak=int(row["peak"]),
        peak_at=float(row["peak_at"]),
        last_count=int(row["last_count"]),
        ended_at=None if row["ended_at"] is None else float(row["ended_at"]),
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=None if row["acknowledged_at"] is None else float(row["acknowledged_at"]),
        note=str(row["note"] or ""),
        node=str(row["node"]),
    )


@dataclass
class PassResult:
    """What one pass changed."""

    opened: list[SpikeEpisode] = field(default_factory=list)
    ended: list[SpikeEpisode] = field(default_factory=list)
    going_on: int = 0  # open episodes still spiking


class AcknowledgeError(Exception):
    """The episode cannot be acknowledged: ``status`` 404 (no such episode),
    409 (ended, or acknowledged already), 400 (the note too long)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class SpikeEpisodes:
    """The episodes in the store: ``run_pass`` once, or ``start`` the rounds (on
    the node holding the lease); read, acknowledge."""

    def __init__(
        self,
        db: Database,
        situation: Situation,
        *,
        node: str,
        check_every: Callable[[], float],
        events: TicketEvents | None = None,
        clock: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
    ) -> None:
        self._db = db
        self._situation = situation
        self._node = node
        self._check_every = check_every
        self._events = events
        self._clock = clock
        self._log = log or logging.getLogger("ivr.spikes")
        self.lease = LeaderLease(db, LEASE, node)
        self._rounds = LeaseRounds(self.lease, self.round, every=check_every, log=self._log)
        self.passes = 0  # passes this node ran as the lease holder

    # -- the passes ------------------------------------------------------------------
    async def run_pass(self, now: float | None = None) -> PassResult:
        """Open, follow and end the episodes as the tickets stand at ``now``."""
        at = self._clock() if now is None else now
        spikes = {(s.district, s.category): s for s in await self._situation.spikes(at)}
        result = PassResult()
        async with self._db.transaction() as tx:
            await tx.lock(f"{LEASE}.pass")
            rows = await tx.fetch_all(
                f"SELECT {_COLUMNS} FROM spike_episodes WHERE ended_at IS NULL"
            )
            open_ = {(str(r["district"]), str(r["category"])): _episode(r) for r in rows}
            for key, episode in open_.items():
                spike = spikes.get(key)
                if spike is None:
                    await tx.execute(
                        "UPDATE spike_episodes SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
                        (at, episode.id),
                    )
                    result.ended.append(_ended(episode, at))
                    continue
                result.going_on += 1
                if spike.count > episode.peak:
                    await tx.execute(
                        "UPDATE spike_episodes SET last_count = ?, peak = ?, peak_at = ? "
                        "WHERE id = ?",
                        (spike.count, spike.count, at, episode.id),
                    )
                elif spike.count != episode.last_count:
                    await tx.execute(
                        "UPDATE spike_episodes SET last_count = ? WHERE id = ?",
                        (spike.count, episode.id),
                    )
            for key, spike in spikes.items():
                if key in open_:
                    continue
                row = await tx.fetch_one(
                    "INSERT INTO spike_episodes (district, category, began_at, began_count, "
                    "began_mean, began_sd, peak, peak_at, last_count, node) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (*key, at, spike.count, spike.mean, spike.sd, spike.count, at, spike.count,
                     self._node),
                )  # fmt: skip
                assert row is not None
                result.opened.append(_opened(int(row["id"]), spike, at, self._node))
        for episode in result.opened:
            self._log.warning(
                "spike: %s %s began: %d ticket(s) against a mean of %.1f",
                episode.district,
                episode.category,
                episode.began_count,
                episode.began_mean,
            )
            self._tell(episode)
        for episode in result.ended:
            self._log.info(
                "spike: %s %s ended (peak %d)", episode.district, episode.category, episode.peak
            )
            self._tell(episode)
        return result

    async def round(self) -> PassResult | None:
        """One round: None when another node holds the lease."""
        now = self._clock()
        if not await self.lease.hold(now, ttl=max(3 * self._check_every(), 10.0)):
            return None
        self.passes += 1
        return await self.run_pass(now)

    @property
    def running(self) -> bool:
        return self._rounds.running

    def start(self) -> None:
        self._rounds.start()

    def wake(self) -> None:
        """Run a round now (a ticket was created or changed)."""
        self._rounds.wake()

    async def stop(self) -> None:
        await self._rounds.stop()

    def _tell(self, episode: SpikeEpisode) -> None:
        if self._events is not None:
            self._events.publish(EVENT, episode.to_json())

    # -- reading and acknowledging ----------------------------------------------------------
    async def get(self, episode_id: int) -> SpikeEpisode | None:
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM spike_episodes WHERE id = ?", (episode_id,)
        )
        return None if row is None else _episode(row)

    async def open_episodes(self) -> list[SpikeEpisode]:
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM spike_episodes WHERE ended_at IS NULL ORDER BY began_at, id"
        )
        return [_episode(r) for r in rows]

    async def recent(self, limit: int = HISTORY_LIMIT) -> list[SpikeEpisode]:
        """The latest episodes, open or ended, the newest first."""
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM spike_episodes ORDER BY began_at DESC, id DESC LIMIT ?",
            (max(1, limit),),
        )
        return [_episode(r) for r in rows]

    async def counts(self) -> tuple[int, int]:
        """(open episodes, open episodes nobody acknowledged)."""
        row = await self._db.fetch_one(
            "SELECT count(*) AS n, "
            "SUM(CASE WHEN acknowledged_at IS NULL THEN 1 ELSE 0 END) AS fresh "
            "FROM spike_episodes WHERE ended_at IS NULL"
        )
        if row is None:
            return 0, 0
        return int(row["n"] or 0), int(row["fresh"] or 0)

    async def acknowledge(self, episode_id: int, who: str, note: str = "") -> SpikeEpisode:
        """``who`` has seen the open episode and acts on it; AcknowledgeError when
        there is none, it ended, or someone acknowledged it already."""
        note = note.strip()
        if len(note) > MAX_NOTE:
            raise AcknowledgeError(400, f"the note is {len(note)} characters; at most {MAX_NOTE}")
        at = self._clock()
        changed = await self._db.execute(
            "UPDATE spike_episodes SET acknowledged_by = ?, acknowledged_at = ?, note = ? "
            "WHERE id = ? AND ended_at IS NULL AND acknowledged_at IS NULL",
            (who, at, note, episode_id),
        )
        episode = await self.get(episode_id)
        if episode is None:
            raise AcknowledgeError(404, f"no spike episode {episode_id}")
        if not changed:
            if episode.acknowledged:
                raise AcknowledgeError(
                    409, f"spike episode {episode_id} was acknowledged by {episode.acknowledged_by}"
                )
            raise AcknowledgeError(409, f"spike episode {episode_id} has ended")
        self._log.info(
            "spike: %s %s (episode %d) acknowledged by %s%s",
            episode.district,
            episode.category,
            episode.id,
            who,
            f": {note}" if note else "",
        )
        self._tell(episode)
        return episode


def _opened(episode_id: int, spike: Spike, at: float, node: str) -> SpikeEpisode:
    return SpikeEpisode(
        id=episode_id,
        district=spike.district,
        category=spike.category,
        began_at=at,
        began_count=spike.count,
        began_mean=spike.mean,
        began_sd=spike.sd,
        peak=spike.count,
        peak_at=at,
        last_count=spike.count,
        ended_at=None,
        acknowledged_by=None,
        acknowledged_at=None,
        note="",
        node=node,
    )


def _ended(episode: SpikeEpisode, at: float) -> SpikeEpisode:
    return replace(episode, ended_at=at)
