"""Acknowledging a spike in a real browser (Playwright driving Debian's
Chromium): a supervisor sees the fresh 未诉先办 alarm on the situation map,
acknowledges it with a note from the banner, and the banner, the map and the
episodes' history say so; an admin's dashboard opened before sees it change
by the event alone. Then the map file is changed and reloaded: the open page
draws the new shapes without a reload of its own.
Screenshots: docs/screenshots/situation-spike-fresh.png, situation-spike-acknowledged.png."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartHotline
from tests.test_situation import reports
from tests.test_spike_episodes import SQUARE, city_map
from tests.test_web_console import CHROMIUM, browser, log_in, shot, until
from tests.web_client import PASSWORD

__all__ = ["browser"]  # the fixture, used by name

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")

XIHU = '#spike-alert li[data-district="西湖区"][data-category="供水"]'


async def test_a_supervisor_acknowledges_a_spike_and_the_banner_changes(
    start_hotline: StartHotline, tmp_path: Path, browser: Any
) -> None:
    drawn = city_map(tmp_path / "city.geojson")
    hotline = await start_hotline(extra=f'[situation]\nmap = "{drawn}"')
    assert hotline.db is not None and hotline.tickets is not None
    assert hotline.accounts is not None and hotline.spike_episodes is not None
    db, tickets, now = hotline.db, hotline.tickets, time.time()
    await reports(db, tickets, "供水", "西湖区", now=7, per_day=[1] * 14, before=now)
    assert await hotline.spike_episodes.round() is not None  # the episode opens
    await hotline.accounts.add_user("super1", PASSWORD, "supervisor")
    await hotline.accounts.add_user("admin1", PASSWORD, "admin")
    base = f"http://127.0.0.1:{hotline.api.port}"

    # the admin's dashboard, open all along: a fresh alarm
    admin = await log_in(browser, base, "admin1")
    await admin.wait_for_url(f"{base}/admin")
    await admin.wait_for_selector(f'{XIHU}[data-state="fresh"]')
    assert await admin.get_attribute("#spike-alert", "data-fresh") == "1"

    page = await log_in(browser, base, "super1")
    await page.wait_for_url(f"{base}/supervisor")
    await page.goto(f"{base}/situation")
    await page.wait_for_selector(f'{XIHU}[data-state="fresh"] button.ack')
    await page.wait_for_selector('#episodes tr[data-district="西湖区"]')
    banner = await page.inner_text("#spike-alert")
    assert "未诉先办预警：1 个区县·分类的工单激增" in banner and "均已确认" not in banner
    assert "acknowledged" not in str(await page.get_attribute("#spike-alert", "class"))
    assert await page.get_attribute("#spike-alert", "role") == "alert"
    shape = '#map-svg g[data-district="西湖区"] path'
    assert await page.get_attribute(shape, "class") == "spike"
    row = await page.inner_text('#episodes tr[data-district="西湖区"]')
    assert "进行中" in row and "未确认" in row and "7（起 7，基线均 1" in row
    await shot(page, "situation-spike-fresh")

    # acknowledged with a note, from the banner
    await page.fill(f"{XIHU} input.ack-note", "已通知西湖区水务")
    await page.click(f"{XIHU} button.ack")
    await page.wait_for_selector(f'{XIHU}[data-state="acknowledged"]')
    banner = await page.inner_text("#spike-alert")
    assert (
        "均已确认" in banner and "已由 super1 于" in banner and "确认：已通知西湖区水务" in banner
    )
    assert await page.query_selector(f"{XIHU} button.ack") is None
    assert "acknowledged" in str(await page.get_attribute("#spike-alert", "class"))
    assert await page.get_attribute("#spike-alert", "role") == "status"

    async def map_says_acknowledged() -> bool:
        return await page.get_attribute(shape, "class") == "spike acknowledged"

    await until(map_says_acknowledged, timeout=10.0)
    label = await page.text_content('#map-svg g[data-district="西湖区"] text.count')
    assert label == "✓ 7"

    async def history_says_who() -> bool:
        text = await page.inner_text('#episodes tr[data-district="西湖区"]')
        return "super1" in text and "已通知西湖区水务" in text

    await until(history_says_who, timeout=10.0)
    await shot(page, "situation-spike-acknowledged")

    # the admin's page changes by the spike event alone
    await admin.wait_for_selector(f'{XIHU}[data-state="acknowledged"]', timeout=10000)
    assert await admin.get_attribute("#spike-alert", "data-fresh") == "0"
    [row] = await db.fetch_all(
        "SELECT user_name, outcome FROM audit_log WHERE action = 'spike.acknowledge'"
    )
    assert tuple(row) == ("super1", "allowed")

    # the map file changes (西湖区 redrawn, 余杭区 left out) and is reloaded: the open
    # page draws the new shapes at its next refresh (here: a ticket event)
    before = await page.get_attribute(shape, "d")
    version = await page.get_attribute("body", "data-map")
    city_map(drawn, change={"西湖区": SQUARE}, drop="余杭区")
    assert await hotline.reload_district_map() is None
    hotline.events.publish("edited", {"id": 0})

    async def redrawn() -> bool:
        return await page.get_attribute("body", "data-map") != version

    await until(redrawn, timeout=10.0)
    await page.wait_for_selector('#map-svg g[data-district="西湖区"]')
    assert await page.get_attribute(shape, "d") != before
    assert await page.query_selector('#map-svg g[data-district="余杭区"]') is None
    assert "余杭区" in await page.inner_text("#missing")
