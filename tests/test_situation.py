"""The situation map (issue 15 item 4): counts per district and category and
the spike rule over tickets stored at set times in a real store (SQLite and
PostgreSQL); the district map file (Hangzhou's, and the mistakes a deployment
can make in one, each at its line); [situation] in config.toml; and the API
and /metrics on a real hotline, read by a supervisor, an admin and a scraper."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from ivr.config import ConfigError, load_settings
from ivr.prefill import load_gazetteer
from ivr.startup import StartupError
from ivr.store import Database, open_store
from ivr.tickets import TicketStore
from ivr.tickets.district_map import DistrictMapError, grid_layout, load_district_map
from ivr.tickets.situation import DAY, Situation, SpikeRule
from tests.conftest import ROOT, StartHotline, new_postgres_database, write_config
from tests.test_metrics import scrape
from tests.web_client import hotline_client

HOUR = 3600.0
T0 = 1_780_000_000.0  # "now" of the store tests
DISTRICTS = load_gazetteer(ROOT / "gazetteer.toml").districts
QUEUE = '[queues.general]\noperators = ["sip:op@127.0.0.1:5080"]\n'


def fields(category: str | None, district: str | None) -> dict[str, Any]:
    def value(v: object) -> dict[str, Any]:
        return {"value": v, "evidence": [], "source": "speech"}

    out: dict[str, Any] = {}
    if category:
        out["category"] = value(category)
    if district:
        out["district"] = value(district)
    return out


async def report(
    db: Database, tickets: TicketStore, category: str | None, district: str | None, at: float
) -> int:
    """A ticket of ``category`` in ``district`` created at ``at``."""
    made = await tickets.create(f"call-{time.monotonic_ns()}", "13800000000")
    await tickets.apply_prefill(made.id, fields(category, district), "说了问题", None)
    await db.execute("UPDATE tickets SET created_at = ? WHERE id = ?", (at, made.id))
    return made.id


async def reports(
    db: Database,
    tickets: TicketStore,
    category: str,
    district: str,
    *,
    now: int,
    per_day: list[int],
    before: float,
) -> None:
    """``now`` tickets in the last day before ``before``, and per_day[d-1] on
    day d before it (each 2 h into its window: within the same clock hours)."""
    for _ in range(now):
        await report(db, tickets, category, district, before - 2 * HOUR)
    for d, n in enumerate(per_day, start=1):
        for _ in range(n):
            await report(db, tickets, category, district, before - d * DAY - 2 * HOUR)


# -- the rule alone -------------------------------------------------------------------------
def test_the_rule_wants_a_minimum_a_rise_over_the_spread_and_a_multiple() -> None:
    rule = SpikeRule(min_count=5, sd_factor=3.0, ratio=2.0)
    assert rule.is_spike(5, [0] * 14)  # a new problem: 5 where there were none
    assert not rule.is_spike(4, [0] * 14)  # below the minimum
    assert rule.is_spike(8, [1] * 14)
    assert not rule.is_spike(12, [10] * 14)  # above a steady 10, but not twice it
    assert rule.is_spike(20, [10] * 14)
    assert not rule.is_spike(14, [0, 8] * 7)  # mean 4, sd 4: 14 is within mean + 3 sd
    assert rule.is_spike(17, [0, 8] * 7)
    assert rule.baseline([0, 8] * 7) == (4.0, 4.0)
    with pytest.raises(ValueError, match="at most a day"):
        SpikeRule(window=2 * DAY)


# -- in the store ---------------------------------------------------------------------------
async def test_spikes_and_counts_from_tickets_at_set_times(store_location: str | Path) -> None:
    async with await open_store(store_location) as db:
        tickets = TicketStore(db)
        # a district x category that jumps: 8 in the last day, 1 a day before
        await reports(db, tickets, "供水", "西湖区", now=8, per_day=[1] * 14, before=T0)
        # a busy one that stays busy: 12 now against a steady 10
        await reports(db, tickets, "噪音扰民", "拱墅区", now=12, per_day=[10] * 14, before=T0)
        # a quiet one that rises but stays below the minimum
        await reports(db, tickets, "道路交通", "上城区", now=4, per_day=[], before=T0)
        # a noisy one: 0 and 8 on alternate days, 14 now is within its spread
        await reports(db, tickets, "环境卫生", "滨江区", now=14, per_day=[0, 8] * 7, before=T0)
        # no district: counted, never alerted on
        for _ in range(6):
            await report(db, tickets, "供水", None, T0 - HOUR)
        # outside any window: 15 days back, and after "now"
        await report(db, tickets, "供水", "西湖区", T0 - 15 * DAY - 2 * HOUR)
        await report(db, tickets, "供水", "西湖区", T0 + HOUR)

        situation = Situation(db, clock=lambda: T0)
        spikes = await situation.spikes()
        assert [(s.district, s.category, s.count) for s in spikes] == [("西湖区", "供水", 8)]
        assert spikes[0].mean == 1.0 and spikes[0].sd == 0.0
        assert spikes[0].baseline == (1,) * 14 and spikes[0].since == T0 - DAY

        # the busy pair spikes once its count doubles; the quiet one at its fifth ticket
        for _ in range(8):
            await report(db, tickets, "噪音扰民", "拱墅区", T0 - HOUR)
        await report(db, tickets, "道路交通", "上城区", T0 - HOUR)
        found = {(s.district, s.category): s.count for s in await situation.spikes()}
        assert found == {
            ("西湖区", "供水"): 8,
            ("拱墅区", "噪音扰民"): 20,
            ("上城区", "道路交通"): 5,
        }

        # a shorter window: the last 3 hours against the same 3 hours of each day before
        short = Situation(db, rule=lambda: SpikeRule(window=3 * HOUR), clock=lambda: T0)
        found = {(s.district, s.category): s.count for s in await short.spikes()}
        assert found == {
            ("西湖区", "供水"): 8,
            ("拱墅区", "噪音扰民"): 20,
            ("上城区", "道路交通"): 5,
        }
        hour = Situation(db, rule=lambda: SpikeRule(window=HOUR), clock=lambda: T0)
        found = {(s.district, s.category): s.count for s in await hour.spikes()}
        assert found == {("拱墅区", "噪音扰民"): 8}  # only the 8 added an hour ago count

        # counts over a period, by district, of one category or all
        last_day = await situation.counts(T0 - DAY, T0)
        assert last_day.by_district() == {
            "西湖区": 8,
            "拱墅区": 20,
            "上城区": 5,
            "滨江区": 14,
            "未知": 6,
        }
        assert last_day.by_district("供水") == {"西湖区": 8, "未知": 6}
        assert last_day.by_category() == {
            "噪音扰民": 20,
            "供水": 14,
            "环境卫生": 14,
            "道路交通": 5,
        }
        week = await situation.counts(T0 - 7 * DAY, T0)
        assert week.by_district("供水")["西湖区"] == 8 + 6


# -- the map file ---------------------------------------------------------------------------
def test_hangzhous_map_draws_every_district_of_the_gazetteer() -> None:
    layout = load_district_map(ROOT / "district_map.geojson", DISTRICTS)
    assert layout.kind == "geojson" and layout.missing == ()
    assert sorted(s.name for s in layout.shapes) == sorted(DISTRICTS)
    assert layout.width == 1000.0 and 300 < layout.height < 800
    for shape in layout.shapes:
        assert shape.path.startswith("M") and shape.path.endswith("Z")
        x, y = shape.label
        assert 0 < x < layout.width and 0 < y < layout.height
    by_name = {s.name: s.label for s in layout.shapes}
    # north up, west left: 临安 west of 西湖, 萧山 south of 拱墅
    assert by_name["临安区"][0] < by_name["西湖区"][0]
    assert by_name["萧山区"][1] > by_name["拱墅区"][1]


def feature(name: str, ring: list[list[float]] | None = None) -> dict[str, Any]:
    ring = ring or [[120.0, 30.0], [120.1, 30.0], [120.1, 30.1], [120.0, 30.0]]
    return {
        "type": "Feature",
        "properties": {"name": name},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def write_map(path: Path, features: list[dict[str, Any]]) -> Path:
    lines = ['{"type": "FeatureCollection", "features": [']
    lines.append(",\n".join(json.dumps(f, ensure_ascii=False) for f in features))
    lines.append("]}")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_a_map_missing_districts_is_drawn_and_says_which(tmp_path: Path) -> None:
    path = write_map(tmp_path / "m.geojson", [feature("西湖区"), feature("上城区")])
    layout = load_district_map(path, DISTRICTS)
    assert [s.name for s in layout.shapes] == ["西湖区", "上城区"]
    assert set(layout.missing) == set(DISTRICTS) - {"西湖区", "上城区"}


def test_mistakes_in_the_map_file_are_said_at_their_line(tmp_path: Path) -> None:
    path = write_map(
        tmp_path / "bad.geojson",
        [
            feature("西湖区"),  # line 2
            feature("西湖"),  # line 3: an alias, not the district's name
            feature("上城区", [[120.0, 30.0], [120.1, 30.0], [120.1, 30.1], [120.2, 30.2]]),
            feature("西湖区"),  # line 5: twice
            feature("滨江区", [[120.0, 30.0], [120.1, 30.0]]),
            {"type": "Feature", "properties": {}, "geometry": None},
        ],
    )
    with pytest.raises(DistrictMapError) as caught:
        load_district_map(path, DISTRICTS)
    problems = caught.value.problems
    assert problems[0].startswith(
        f"{path}:3: features[1]: '西湖' is not a district of the gazetteer"
    )
    assert problems[1].startswith(
        f"{path}:4: features[2] (上城区): polygon 1: the ring is not closed"
    )
    assert problems[2] == f"{path}:5: features[3]: 西湖区 is drawn twice"
    assert (
        problems[3] == f"{path}:6: features[4] (滨江区): polygon 1: a ring needs 4 points or more"
    )
    assert problems[4] == f'{path}: features[5]: no "name" in its "properties"'
    assert len(problems) == 5

    broken = tmp_path / "broken.geojson"
    broken.write_text('{"type": "FeatureCollection",\n "features": [\n  {"type": "Feature",,}\n]}')
    with pytest.raises(DistrictMapError, match=rf"^{broken}:3: not valid JSON: Expecting"):
        load_district_map(broken, DISTRICTS)
    with pytest.raises(DistrictMapError, match="no such file"):
        load_district_map(tmp_path / "none.geojson", DISTRICTS)


def test_without_a_map_file_the_districts_are_a_grid() -> None:
    layout = grid_layout(DISTRICTS)
    assert layout.kind == "grid" and [s.name for s in layout.shapes] == list(DISTRICTS)
    assert (layout.width, layout.height) == (2 * 10 + 4 * 160 - 10, 2 * 10 + 3 * 160 - 10)  # 4 x 3


# -- config.toml --------------------------------------------------------------------------
def test_situation_settings_and_their_mistakes(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[situation]\nmap = "city.geojson"\nwindow_hours = 6\nbaseline_days = 28\n' + QUEUE
    )
    s = load_settings(config).situation
    assert (s.map, s.window_hours, s.baseline_days, s.min_count) == (
        tmp_path / "city.geojson",
        6.0,
        28,
        5,
    )
    config.write_text('[situation]\nmap = ""\nwindow_hours = 48\nratio = 0.5\nk = 2\n' + QUEUE)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    text = str(caught.value)
    assert "config.toml:3: situation.window_hours" in text
    assert "config.toml:4: situation.ratio" in text
    assert "config.toml:5" in text and "situation.k" in text


async def test_a_bad_map_stops_the_start_saying_where(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    bad = write_map(tmp_path / "bad.geojson", [feature("杭州区")])
    with pytest.raises(StartupError, match=rf"{bad}:2: features\[0\]: '杭州区' is not a district"):
        await start_hotline(extra=f'[situation]\nmap = "{bad}"')


# -- the API and /metrics on a hotline ------------------------------------------------------
async def test_the_api_and_metrics_show_counts_and_the_spike(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await start_hotline(extra=f'[situation]\nmap = "{ROOT / "district_map.geojson"}"')
    assert hotline.db is not None and hotline.tickets is not None
    db, tickets, now = hotline.db, hotline.tickets, time.time()
    await reports(db, tickets, "供水", "西湖区", now=6, per_day=[1, 0, 1], before=now)
    await reports(db, tickets, "噪音扰民", "拱墅区", now=3, per_day=[3] * 14, before=now)
    await report(db, tickets, "供水", "余杭区", now - 3 * DAY)
    base = f"http://127.0.0.1:{hotline.api.port}"

    async with await hotline_client(hotline, "supervisor") as http:
        async with http.get(f"{base}/api/situation/map") as response:
            assert response.status == 200
            drawn = await response.json()
        assert drawn["kind"] == "geojson" and len(drawn["districts"]) == len(DISTRICTS)
        async with http.get(f"{base}/api/situation?hours=24") as response:
            body = await response.json()
        assert body["by_district"] == {"西湖区": 6, "拱墅区": 3} and body["total"] == 9
        assert body["categories"] == {"供水": 6, "噪音扰民": 3}
        assert [(s["district"], s["category"], s["count"]) for s in body["spikes"]] == [
            ("西湖区", "供水", 6)
        ]
        assert body["spikes"][0]["mean"] == round(2 / 14, 2)
        async with http.get(f"{base}/api/situation?hours=168&category=供水") as response:
            body = await response.json()
        assert body["by_district"] == {"西湖区": 8, "余杭区": 1}
        today = time.strftime("%Y-%m-%d", time.localtime(now))
        async with http.get(f"{base}/api/situation?from={today}&to={today}") as response:
            body = await response.json()
        assert sum(body["by_district"].values()) <= 9 and body["period"] == f"{today} — {today}"
        async with http.get(f"{base}/api/situation?hours=abc") as response:
            assert response.status == 400
            assert "hours='abc'" in (await response.json())["error"]
        async with http.get(f"{base}/api/situation?from=2026-12-05&to=2026-12-01") as response:
            assert response.status == 400
        async with http.get(f"{base}/api/situation/spikes") as response:
            spikes = (await response.json())["spikes"]
        assert [(s["district"], s["count"]) for s in spikes] == [("西湖区", 6)]
    for role, status in (("admin", 200), ("operator", 403)):
        http = await hotline_client(hotline, role)
        async with http, http.get(f"{base}/api/situation/spikes") as response:
            assert response.status == status, role

    figures = await scrape(hotline)
    assert figures.value("ivr_situation_spikes") == 1
    assert figures.value("ivr_situation_spike_tickets", district="西湖区", category="供水") == 6
    assert figures.value("ivr_metrics_store_read_ok") == 1
    assert "拱墅区" not in figures.text  # no series for a pair that does not spike
    # the spike ends when its tickets leave the window: no alert, no series
    await db.execute(
        "UPDATE tickets SET created_at = created_at - ? WHERE created_at > ?", (2 * DAY, now - DAY)
    )
    figures = await scrape(hotline)
    assert figures.value("ivr_situation_spikes") == 0
    assert "ivr_situation_spike_tickets{" not in figures.text


# -- a cluster: two nodes on one PostgreSQL ---------------------------------------------------
async def test_two_nodes_on_one_postgresql_show_the_same_map_and_spike(
    request: pytest.FixtureRequest, tmp_path: Path, prompt_cache: Path
) -> None:
    """Tickets taken by node A are on node B's map, alert and /metrics: nothing of
    the situation lives in a node's memory."""
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
        a = nodes[0]
        assert a.db is not None and a.tickets is not None
        now = time.time()
        await reports(a.db, a.tickets, "燃气", "钱塘区", now=5, per_day=[], before=now)
        await report(a.db, a.tickets, "燃气", "临平区", now - HOUR)
        for node in nodes:
            async with await hotline_client(node, "supervisor") as http:
                address = f"http://127.0.0.1:{node.api.port}/api/situation?hours=24"
                async with http.get(address) as response:
                    body = await response.json()
            assert body["by_district"] == {"钱塘区": 5, "临平区": 1}, node.metrics.node
            assert [(s["district"], s["category"]) for s in body["spikes"]] == [("钱塘区", "燃气")]
            figures = await scrape(node)
            assert (
                figures.value("ivr_situation_spike_tickets", district="钱塘区", category="燃气")
                == 5
            )
    finally:
        for hotline in nodes:
            await hotline.stop(drain_timeout=2.0)
        logging.getLogger("ivr").handlers.clear()
