"""The situation map in a real browser (Playwright driving Debian's Chromium):
an admin opens it from the dashboard and sees Hangzhou's districts coloured by
the tickets the test stored, the spike alert (未诉先办) for the district and
category that jumped, on the map page and on the admin page; chooses a
category and sees the colours and counts change; a new ticket's event redraws
the map without a reload. A supervisor may open it, an operator is told 无权限.
Screenshots: docs/screenshots/situation-map.png, situation-map-category.png,
admin-spike-alert.png."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, StartHotline
from tests.test_situation import report, reports
from tests.test_web_console import CHROMIUM, browser, log_in, shot, until
from tests.web_client import PASSWORD

__all__ = ["browser"]  # the fixture, used by name

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


async def counts_on_map(page: Any) -> dict[str, int]:
    """Each district's count as the map shows it (data-count of its shape)."""
    shapes = await page.query_selector_all("#map-svg g[data-district]")
    out = {}
    for g in shapes:
        out[await g.get_attribute("data-district")] = int(await g.get_attribute("data-count"))
    return out


async def loaded(page: Any, query: str) -> None:
    """Until the map shows the figures of ``query`` (the page marks what it drew)."""

    async def drawn() -> bool:
        return str(await page.get_attribute("body", "data-loaded")).startswith(query)

    await until(drawn, timeout=10.0)


async def fill_of(page: Any, district: str) -> str:
    return str(
        await page.get_attribute(f'#map-svg g[data-district="{district}"] path', "data-fill")
    )


async def test_the_map_coloured_by_counts_with_the_spike_alert(
    start_hotline: StartHotline, tmp_path: Path, browser: Any
) -> None:
    hotline = await start_hotline(extra=f'[situation]\nmap = "{ROOT / "district_map.geojson"}"')
    assert hotline.db is not None and hotline.tickets is not None and hotline.accounts is not None
    db, tickets, now = hotline.db, hotline.tickets, time.time()
    # 西湖区 供水 jumps (7 in the last day, about 1 a day before); 拱墅区 has the most
    # noise complaints, as it always has; 萧山区 a couple of roads
    await reports(db, tickets, "供水", "西湖区", now=7, per_day=[1, 1, 0, 1], before=now)
    await reports(db, tickets, "噪音扰民", "拱墅区", now=4, per_day=[4] * 14, before=now)
    await reports(db, tickets, "道路交通", "萧山区", now=2, per_day=[], before=now)
    await hotline.accounts.add_user("admin1", PASSWORD, "admin")
    base = f"http://127.0.0.1:{hotline.api.port}"

    page = await log_in(browser, base, "admin1")
    await page.wait_for_url(f"{base}/admin")
    await page.click('.tabs button[data-tab="dashboard"]')
    # the admin page says which district x category spikes
    await page.wait_for_selector('#spike-alert li[data-district="西湖区"][data-category="供水"]')
    alert = await page.inner_text("#spike-alert")
    assert "未诉先办预警" in alert and "西湖区 · 供水：最近 24 小时 7 件" in alert
    assert "拱墅区" not in alert
    await shot(page, "admin-spike-alert")

    await page.click("#to-situation")
    await page.wait_for_url(f"{base}/situation")
    await page.wait_for_selector("#map-svg")
    shown = await counts_on_map(page)
    assert len(shown) == 10  # every district of the gazetteer is drawn
    assert (shown["西湖区"], shown["拱墅区"], shown["萧山区"], shown["余杭区"]) == (7, 4, 2, 0)
    # the most tickets the darkest; none a pale grey; the spiking district outlined
    assert await fill_of(page, "西湖区") == "rgb(8,81,156)"
    assert await fill_of(page, "余杭区") == "#eef1f4"
    assert await fill_of(page, "拱墅区") not in ("rgb(8,81,156)", "#eef1f4")
    spiking = await page.get_attribute('#map-svg g[data-district="西湖区"] path', "class")
    assert spiking == "spike"
    assert await page.get_attribute('#map-svg g[data-district="拱墅区"] path', "class") == ""
    assert "西湖区 · 供水" in await page.inner_text("#spike-alert")
    assert await page.inner_text("#total") == "共 13 件"
    await shot(page, "situation-map")

    # one category: noise complaints only, 拱墅区 now the darkest, 西湖区 none
    await page.select_option("#category", "噪音扰民")
    await loaded(page, "hours=24&category=")
    shown = await counts_on_map(page)
    assert (shown["西湖区"], shown["拱墅区"], shown["萧山区"]) == (0, 4, 0)
    assert await fill_of(page, "拱墅区") == "rgb(8,81,156)"
    assert await fill_of(page, "西湖区") == "#eef1f4"
    assert await page.get_attribute('#map-svg g[data-district="西湖区"] path', "class") == ""
    await shot(page, "situation-map-category")

    # a longer period counts the days before too
    await page.select_option("#period", "168")
    await loaded(page, "hours=168&category=")
    assert (await counts_on_map(page))["拱墅区"] == 4 + 6 * 4

    # live: a ticket the IVR makes now (its "created" event, as the intake sends it)
    # is on the map without a reload
    made = await report(db, tickets, "噪音扰民", "余杭区", time.time() - 60)
    ticket = await tickets.get(made)
    assert ticket is not None
    hotline.events.publish("created", ticket.to_json())

    async def redrawn() -> bool:
        return (await counts_on_map(page)).get("余杭区") == 1

    await until(redrawn, timeout=10.0)

    # a supervisor may look; an operator is told 无权限
    await hotline.accounts.add_user("super1", PASSWORD, "supervisor")
    await hotline.accounts.add_user("op1", PASSWORD, "operator")
    supervisor = await log_in(browser, base, "super1")
    await supervisor.wait_for_url(f"{base}/supervisor")
    await supervisor.wait_for_selector('#spike-alert li[data-district="西湖区"]')
    await supervisor.goto(f"{base}/situation")
    await supervisor.wait_for_selector('#map-svg g[data-district="西湖区"][data-count="7"]')
    operator = await log_in(browser, base, "op1")
    await operator.wait_for_url(f"{base}/operator")
    await operator.goto(f"{base}/situation")
    await operator.wait_for_selector("#denied:not(.hidden)")
    assert "无权限" in await operator.inner_text("#denied")
