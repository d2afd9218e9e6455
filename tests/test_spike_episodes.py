"""Spike episodes (issue 15 item 4): the 未诉先办 alerts kept in the store, one
row per episode (began, peak, ended, acknowledged), opened and closed by a
pass that runs once in a cluster, on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ivr.leases import LeaderLease
from ivr.store import MIGRATIONS, ConstraintError, Database, open_store
from ivr.tickets import TicketStore
from ivr.tickets.situation import DAY, Situation
from ivr.tickets.spike_episodes import LEASE, AcknowledgeError, SpikeEpisodes
from tests.test_situation import report, reports


async def test_migration_20_allows_one_open_episode_per_pair(store_location: str | Path) -> None:
    async with await open_store(store_location) as db:
        assert await db.schema_version() >= 20
        assert MIGRATIONS[19].version == 20 and "spike" in MIGRATIONS[19].description
        insert = (
            "INSERT INTO spike_episodes (district, category, began_at, began_count, "
            "began_mean, began_sd, peak, peak_at, last_count, ended_at, node) "
            "VALUES (?, ?, ?, 8, 1.0, 0.0, 8, ?, 8, ?, 'n1')"
        )
        await db.execute(insert, ("西湖区", "供水", 100.0, 100.0, None))
        with pytest.raises(ConstraintError):
            await db.execute(insert, ("西湖区", "供水", 200.0, 200.0, None))
        # another pair, and a closed episode of the same pair, are fine
        await db.execute(insert, ("拱墅区", "供水", 100.0, 100.0, None))
        await db.execute(insert, ("西湖区", "供水", 50.0, 50.0, 90.0))
        rows = await db.fetch_all("SELECT count(*) AS n FROM spike_episodes")
        assert rows[0]["n"] == 3


# -- the passes ----------------------------------------------------------------------------
HOUR = 3600.0
T0 = 1_780_000_000.0


def episodes_of(db: Database, node: str, now: list[float]) -> SpikeEpisodes:
    """The episodes of ``node``, at the time now[0] (the test moves it)."""
    clock = lambda: now[0]  # noqa: E731
    return SpikeEpisodes(
        db, Situation(db, clock=clock), node=node, check_every=lambda: 60.0, clock=clock
    )


async def stored(db: Database) -> list[tuple[str, str, float | None]]:
    rows = await db.fetch_all("SELECT district, category, ended_at FROM spike_episodes ORDER BY id")
    return [(r["district"], r["category"], r["ended_at"]) for r in rows]


async def test_an_episode_opens_follows_its_peak_ends_and_is_acknowledged(
    store_location: str | Path,
) -> None:
    async with await open_store(store_location) as db:
        tickets = TicketStore(db)
        now = [T0]
        episodes = episodes_of(db, "n1", now)
        # nothing spikes yet: no episode
        await reports(db, tickets, "供水", "西湖区", now=4, per_day=[1] * 14, before=T0)
        assert (await episodes.run_pass()).opened == []
        # the fifth ticket: 5 against a steady 1 a day
        await report(db, tickets, "供水", "西湖区", T0 - HOUR)
        first = await episodes.run_pass()
        assert [(e.district, e.category, e.began_count) for e in first.opened] == [
            ("西湖区", "供水", 5)
        ]
        episode = first.opened[0]
        assert episode.began_at == T0 and episode.began_mean == 1.0 and episode.open
        # it goes on, rising: the peak follows, no second episode
        for _ in range(3):
            await report(db, tickets, "供水", "西湖区", T0 + 30 * 60)
        now[0] = T0 + HOUR
        later = await episodes.run_pass()
        assert later.opened == [] and later.ended == [] and later.going_on == 1
        again = await episodes.get(episode.id)
        assert again is not None
        assert (again.peak, again.peak_at, again.last_count) == (8, T0 + HOUR, 8)
        assert (again.began_count, again.began_at) == (5, T0)

        # acknowledged by a supervisor, with a note; a second acknowledgement is refused
        seen = await episodes.acknowledge(episode.id, "super1", "  已通知西湖区水务  ")
        assert (seen.acknowledged_by, seen.acknowledged_at, seen.note) == (
            "super1",
            T0 + HOUR,
            "已通知西湖区水务",
        )
        assert await episodes.counts() == (1, 0)
        with pytest.raises(AcknowledgeError, match="acknowledged by super1") as refused:
            await episodes.acknowledge(episode.id, "admin1")
        assert refused.value.status == 409
        with pytest.raises(AcknowledgeError, match="no spike episode 999") as missing:
            await episodes.acknowledge(999, "admin1")
        assert missing.value.status == 404
        with pytest.raises(AcknowledgeError, match="at most 500") as long:
            await episodes.acknowledge(episode.id, "admin1", "长" * 501)
        assert long.value.status == 400

        # a day and more later the window has passed: the episode ends, peak kept
        now[0] = T0 + DAY + 2 * HOUR
        ended = await episodes.run_pass()
        assert [e.id for e in ended.ended] == [episode.id]
        closed = await episodes.get(episode.id)
        assert closed is not None and closed.ended_at == T0 + DAY + 2 * HOUR
        assert closed.peak == 8 and closed.acknowledged_by == "super1"
        assert await episodes.counts() == (0, 0)
        fresh = await episodes.run_pass()  # nothing more to do
        assert fresh.opened == fresh.ended == []
        await db.execute("UPDATE spike_episodes SET acknowledged_at = NULL")
        with pytest.raises(AcknowledgeError, match="has ended"):
            await episodes.acknowledge(episode.id, "admin1")

        # it spikes again (the 8 are now in its baseline): a new episode, a fresh alarm
        for _ in range(10):
            await report(db, tickets, "供水", "西湖区", now[0] - HOUR)
        reopened = await episodes.run_pass()
        assert len(reopened.opened) == 1 and reopened.opened[0].id != episode.id
        assert await episodes.counts() == (1, 1)
        history = await episodes.recent()
        assert [e.id for e in history] == [reopened.opened[0].id, episode.id]
        assert [e.open for e in history] == [True, False]


async def test_two_nodes_on_one_store_open_one_episode(store_location: str | Path) -> None:
    async with (
        await open_store(store_location) as db1,
        await open_store(store_location) as db2,
    ):
        tickets = TicketStore(db1)
        await reports(db1, tickets, "供水", "西湖区", now=6, per_day=[1] * 14, before=T0)
        await reports(db1, tickets, "噪音扰民", "拱墅区", now=7, per_day=[], before=T0)
        now = [T0]
        one, two = episodes_of(db1, "n1", now), episodes_of(db2, "n2", now)
        # rounds at once: one node holds the lease, the other does nothing
        results = await asyncio.gather(one.round(), two.round(), one.round(), two.round())
        assert sum(r is not None for r in results) == 2  # the holder's two rounds
        assert one.passes + two.passes == 2 and min(one.passes, two.passes) == 0
        assert sorted(await stored(db1)) == [("拱墅区", "噪音扰民", None), ("西湖区", "供水", None)]
        # even passes run at once outside the lease open each episode once
        now[0] = T0 + 60
        await asyncio.gather(*(e.run_pass() for e in (one, two, one, two)))
        assert len(await stored(db2)) == 2


async def test_a_restart_carries_on_the_open_episodes(store_location: str | Path) -> None:
    now = [T0]
    async with await open_store(store_location) as db:
        await reports(db, TicketStore(db), "供水", "西湖区", now=6, per_day=[1] * 14, before=T0)
        before = await episodes_of(db, "n1", now).run_pass()
        assert len(before.opened) == 1
    # the node restarts (and another takes the lease over): the same episode goes on
    now[0] = T0 + 120
    async with await open_store(store_location) as db:
        for node in ("n1", "n2"):
            after = await episodes_of(db, node, now).round()
            assert after is not None and after.opened == [] and after.going_on == 1
            await LeaderLease(db, LEASE, node).release()
        assert await stored(db) == [("西湖区", "供水", None)]
        [episode] = await episodes_of(db, "n2", now).open_episodes()
        assert episode.id == before.opened[0].id and episode.began_at == T0
