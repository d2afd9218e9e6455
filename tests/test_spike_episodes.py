"""Spike episodes (issue 15 item 4): the 未诉先办 alerts kept in the store, one
row per episode (began, peak, ended, acknowledged), opened and closed by a
pass that runs once in a cluster, on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from ivr.config import load_settings
from ivr.leases import LeaderLease
from ivr.store import MIGRATIONS, ConstraintError, Database, open_store
from ivr.tickets import TicketStore
from ivr.tickets.situation import DAY, Situation
from ivr.tickets.spike_episodes import LEASE, AcknowledgeError, SpikeEpisodes
from tests.conftest import ROOT, StartHotline, new_postgres_database, write_config
from tests.test_metrics import scrape
from tests.test_situation import report, reports, write_map
from tests.web_client import hotline_client


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


# -- on a hotline: the API, the audit, /metrics ----------------------------------------------
async def test_a_supervisor_acknowledges_a_spike_audited_and_counted(
    start_hotline: StartHotline,
) -> None:
    hotline = await start_hotline()
    assert hotline.db is not None and hotline.tickets is not None
    assert hotline.spike_episodes is not None and hotline.spike_episodes.running
    db, now = hotline.db, time.time()
    await reports(db, hotline.tickets, "供水", "西湖区", now=6, per_day=[1] * 14, before=now)
    base = f"http://127.0.0.1:{hotline.api.port}"
    async with await hotline_client(hotline, "supervisor", "super1") as http:
        # computed at once, but no episode until a pass has run
        async with http.get(f"{base}/api/situation/spikes") as response:
            [spike] = (await response.json())["spikes"]
        assert (spike["district"], spike["episode"]) == ("西湖区", None)
        assert await hotline.spike_episodes.round() is not None  # the only node: the holder
        figures = await scrape(hotline)
        assert figures.value("ivr_situation_spikes_open") == 1
        assert figures.value("ivr_situation_spikes_unacknowledged") == 1
        async with http.get(f"{base}/api/situation/spikes") as response:
            [spike] = (await response.json())["spikes"]
        episode = spike["episode"]
        assert episode["open"] and episode["acknowledged_by"] is None
        assert (episode["began_count"], episode["peak"]) == (6, 6)

        url = f"{base}/api/situation/episodes/{episode['id']}/acknowledge"
        async with http.post(url, json={"note": "已派水务集团查看"}) as response:
            assert response.status == 200, await response.text()
            seen = (await response.json())["episode"]
        assert (seen["acknowledged_by"], seen["note"]) == ("super1", "已派水务集团查看")
        async with http.post(url, json={}) as response:
            assert response.status == 409
            assert "acknowledged by super1" in (await response.json())["error"]
        async with http.post(f"{base}/api/situation/episodes/77/acknowledge") as response:
            assert response.status == 404
        async with http.post(url, data="not json") as response:
            assert response.status == 400
        async with http.get(f"{base}/api/situation?hours=24") as response:
            [spike] = (await response.json())["spikes"]
        assert spike["episode"]["acknowledged_by"] == "super1"
        async with http.get(f"{base}/api/situation/episodes") as response:
            [listed] = (await response.json())["episodes"]
        assert listed["id"] == episode["id"] and listed["acknowledged_by"] == "super1"
    async with await hotline_client(hotline, "operator") as http:
        async with http.post(url, json={}) as response:
            assert response.status == 403
        async with http.get(f"{base}/api/situation/episodes") as response:
            assert response.status == 403

    figures = await scrape(hotline)
    assert figures.value("ivr_situation_spikes_open") == 1
    assert figures.value("ivr_situation_spikes_unacknowledged") == 0
    assert figures.value("ivr_situation_spikes") == 1  # the live figure is unchanged
    # the acknowledgement is in the audit log, with who and which episode
    rows = await db.fetch_all(
        "SELECT user_name, role, object_id, outcome, status FROM audit_log "
        "WHERE action = 'spike.acknowledge' ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        ("super1", "supervisor", str(episode["id"]), "allowed", 200),
        ("super1", "supervisor", str(episode["id"]), "failed", 409),
        ("super1", "supervisor", "77", "failed", 404),
        ("super1", "supervisor", str(episode["id"]), "failed", 400),
        ("test-operator", "operator", str(episode["id"]), "refused", 403),
    ]


# -- the map file reloads ---------------------------------------------------------------------
def city_map(path: Path, *, change: dict[str, Any] | None = None, drop: str = "") -> Path:
    """Hangzhou's map with the features named in ``change`` given new geometry
    and the one named ``drop`` left out, one feature a line."""
    data = json.loads((ROOT / "district_map.geojson").read_text(encoding="utf-8"))
    features = []
    for f in data["features"]:
        name = f["properties"]["name"]
        if name == drop:
            continue
        if change and name in change:
            f = {**f, "geometry": {"type": "Polygon", "coordinates": [change[name]]}}
        features.append(f)
    return write_map(path, features)


SQUARE = [[120.0, 30.0], [120.05, 30.0], [120.05, 30.05], [120.0, 30.05], [120.0, 30.0]]


async def test_the_map_reloads_on_sighup_and_by_an_admin_keeping_it_when_bad(
    start_hotline: StartHotline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    drawn = city_map(tmp_path / "city.geojson")
    hotline = await start_hotline(extra=f'[situation]\nmap = "{drawn}"')
    base = f"http://127.0.0.1:{hotline.api.port}"

    async def shapes(http: Any) -> dict[str, Any]:
        async with http.get(f"{base}/api/situation/map") as response:
            assert response.status == 200
            return dict(await response.json())

    async with await hotline_client(hotline, "admin") as http:
        first = await shapes(http)
        paths = {d["name"]: d["path"] for d in first["districts"]}
        assert len(paths) == 10 and first["missing"] == []
        async with http.get(f"{base}/api/situation") as response:
            assert (await response.json())["map_version"] == first["version"]

        # 西湖区 redrawn, 余杭区 left out: SIGHUP's reload takes it
        city_map(drawn, change={"西湖区": SQUARE}, drop="余杭区")
        result = await hotline.reload()
        assert result.map_error is None
        second = await shapes(http)
        now_paths = {d["name"]: d["path"] for d in second["districts"]}
        assert second["version"] != first["version"] and second["missing"] == ["余杭区"]
        assert now_paths["西湖区"] != paths["西湖区"] and "余杭区" not in now_paths
        async with http.get(f"{base}/api/situation") as response:
            assert (await response.json())["map_version"] == second["version"]

        # a bad file: refused at its line, logged, the running map kept (both ways)
        bad = city_map(drawn, change={"西湖区": SQUARE[:-1]})
        line = next(n for n, t in enumerate(bad.read_text().splitlines(), 1) if '"西湖区"' in t)
        caplog.clear()
        result = await hotline.reload()
        assert result.map_error is not None
        assert f"{bad}:{line}: features[" in result.map_error
        assert "the ring is not closed" in result.map_error
        assert await shapes(http) == second
        assert any(
            "situation map reload failed, keeping version " + second["version"] in r.getMessage()
            and f"{bad}:{line}:" in r.getMessage()
            for r in caplog.records
        )
        async with http.post(f"{base}/api/admin/situation/map/reload") as response:
            assert response.status == 422
            body = await response.json()
        assert f"{bad}:{line}: " in body["error"]
        assert body["running"]["version"] == second["version"]
        assert await shapes(http) == second
        async with http.post(f"{base}/api/admin/config/reload") as response:
            assert f"{bad}:{line}: " in (await response.json())["map_error"]

        # fixed: the admin's reload takes it at once
        city_map(drawn)
        async with http.post(f"{base}/api/admin/situation/map/reload") as response:
            assert response.status == 200
            assert (await response.json())["running"]["version"] == first["version"]
        assert await shapes(http) == first

        # another file named in config.toml: a reloadable key
        other = city_map(tmp_path / "other.geojson", drop="临安区")
        source = hotline.settings.source
        assert source is not None
        source.write_text(source.read_text().replace(str(drawn), str(other)))
        result = await hotline.reload()
        assert "situation.map" in result.applied and result.map_error is None
        assert (await shapes(http))["missing"] == ["临安区"]
    supervisor = await hotline_client(hotline, "supervisor")
    async with supervisor, supervisor.post(f"{base}/api/admin/situation/map/reload") as response:
        assert response.status == 403


# -- a cluster: two hotlines on one PostgreSQL ------------------------------------------------
async def test_two_hotlines_on_one_postgresql_keep_one_episode_and_take_over(
    request: pytest.FixtureRequest, tmp_path: Path, prompt_cache: Path
) -> None:
    """Both nodes run the passes' loop; one holds the lease and opens the episode,
    the other sees it (banner, /metrics); the holder stops, the other takes the
    passes over and carries on the same episode."""
    from ivr.logs import setup_logging
    from ivr.server import Hotline

    url = new_postgres_database(request, request.getfixturevalue("postgres_server"))
    nodes: list[Hotline] = []
    try:
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            config = write_config(
                directory,
                operators=["sip:nobody@127.0.0.1:9"],
                prompt_cache=prompt_cache,
                extra=f'[node]\nid = "node-{name}"\n',
            )
            text, stores = re.subn(r'(?m)^database = ".*"$', f'url = "{url}"', config.read_text())
            assert stores == 1
            config.write_text(text)
            hotline = Hotline(load_settings(config), setup_logging("DEBUG", "text"))
            nodes.append(hotline)
            await hotline.start()
        a, b = nodes
        assert a.db is not None and a.tickets is not None
        await reports(a.db, a.tickets, "燃气", "钱塘区", now=6, per_day=[], before=time.time())
        for node in nodes:  # as a ticket event would, on both nodes at once
            assert node.spike_episodes is not None
            node.spike_episodes.wake()

        async def opened() -> list[tuple[str, str, float | None]]:
            for _ in range(80):
                if found := await stored(a.db):  # type: ignore[arg-type]
                    return found
                await asyncio.sleep(0.1)
            return []

        assert await opened() == [("钱塘区", "燃气", None)]
        holder = await LeaderLease(a.db, LEASE, "x").holder()
        assert holder is not None
        first = next(n for n in nodes if n.metrics.node == holder[0])
        other = b if first is a else a
        assert first.spike_episodes is not None and other.spike_episodes is not None
        assert first.spike_episodes.passes >= 1 and other.spike_episodes.passes == 0
        for node in nodes:  # both see it, unacknowledged
            figures = await scrape(node)
            assert figures.value("ivr_situation_spikes_unacknowledged") == 1, node.metrics.node
        [episode] = await other.spike_episodes.open_episodes()

        # the holder stops (its lease let go): the other node's next pass carries on
        await first.stop(drain_timeout=2.0)
        nodes.remove(first)
        result = await other.spike_episodes.round()
        assert result is not None and result.opened == [] and result.going_on == 1
        assert [e.id for e in await other.spike_episodes.open_episodes()] == [episode.id]
        assert other.db is not None and len(await stored(other.db)) == 1
    finally:
        for hotline in nodes:
            await hotline.stop(drain_timeout=2.0)
        logging.getLogger("ivr").handlers.clear()
