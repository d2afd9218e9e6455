"""Spike episodes (issue 15 item 4): the 未诉先办 alerts kept in the store, one
row per episode (began, peak, ended, acknowledged), opened and closed by a
pass that runs once in a cluster, on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.store import MIGRATIONS, ConstraintError, open_store


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
