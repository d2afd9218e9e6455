"""The dispatch pages in a real browser (Playwright, Debian's Chromium): the
operator dispatches from /dispatch with the department the duty list proposes
already chosen; the department, on /department, accepts one ticket and returns
another with a reason; the supervisor, on /supervisor, sees the overdue ticket
at 高级督办 and the counts per department. Screenshots in docs/screenshots/."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartHotline
from tests.test_console_api import NOISE, WATER, base, post_json, ticket
from tests.test_dispatch_api import GAS, HOUR, dispatch_hotline
from tests.test_web_console import CHROMIUM, browser, shot, until
from tests.test_web_console import log_in as open_login
from tests.web_client import hotline_client

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]
__all__ = ["browser"]  # the fixture, used by name


async def log_in(browser: Any, url: str, name: str) -> Any:
    """Logged in, on the page the log-in leads this role to."""
    page = await open_login(browser, url, name)
    await page.wait_for_url(lambda u: not u.endswith("/login"))
    await page.wait_for_load_state()
    return page


async def test_department_and_supervisor_pages(
    start_hotline: StartHotline, tmp_path: Path, browser: Any
) -> None:
    clock = [time.time()]
    hotline, _ = await dispatch_hotline(start_hotline, tmp_path, clock)
    url = base(hotline)
    water = await ticket(hotline, WATER)
    noise = await ticket(hotline, NOISE)
    gas = await ticket(hotline, GAS)
    for name, role in (
        ("op1", "operator"),
        ("water", "department"),
        ("chengguan", "department"),
        ("boss", "supervisor"),
    ):
        async with await hotline_client(hotline, role, name):
            pass  # the user made in the store

    # the operator dispatches the water ticket from the page: the proposal is chosen
    page = await log_in(browser, url, "op1")
    assert page.url.endswith("/operator")
    await page.locator("#to-dispatch").click()  # from the operator's page to 派单
    await page.wait_for_url(f"{url}/dispatch")
    row = page.locator(f'tr[data-ticket="{water.id}"]')
    await row.wait_for()
    assert await row.locator("select").input_value() == "市水务集团"
    await row.locator("button", has_text="派单").click()
    await page.locator("#status", has_text="已派至 市水务集团").wait_for()
    await page.close()
    async with await hotline_client(hotline, "operator", "op1") as op:
        for t, department in ((noise, "市城管局"), (gas, "杭州市燃气集团")):
            status, body = await post_json(
                op, f"{url}/api/dispatch/tickets/{t.id}", {"department": department}
            )
            assert status == 200, body

    # the water company accepts on its page
    page = await log_in(browser, url, "water")
    assert page.url.endswith("/department")
    row = page.locator(f'tr[data-ticket="{water.id}"]')
    await row.wait_for()
    assert await page.locator("#department").inner_text() == "市水务集团"
    assert await page.locator(f'tr[data-ticket="{noise.id}"]').count() == 0  # not theirs
    await row.locator("button", has_text="签收").click()
    await page.locator("#status", has_text="已签收").wait_for()
    assert "办理中" in await page.locator(f'tr[data-ticket="{water.id}"]').inner_text()
    await shot(page, "department")
    await page.close()

    # 城管 returns the noise ticket; without a reason it is refused, with one it goes
    page = await log_in(browser, url, "chengguan")
    row = page.locator(f'tr[data-ticket="{noise.id}"]')
    await row.wait_for()
    await row.locator("button", has_text="退回").click()
    await page.locator("#status", has_text="reason").wait_for()
    await row.locator("input.note").fill("噪音来自居民楼内，属物业管理")
    await row.locator("button", has_text="退回").click()
    await page.locator("#status", has_text="已退回").wait_for()
    await page.locator("#mine-none").wait_for()
    await page.close()

    # 13 hours on: the gas company never answered its 12 hours
    clock[0] += 13 * HOUR
    assert hotline.supervision is not None

    async def raised() -> bool:
        return (await hotline.dispatches.get(gas.id)).level == 3  # type: ignore[union-attr]

    await until(raised, timeout=15)
    page = await log_in(browser, url, "boss")
    assert page.url.endswith("/supervisor")
    await page.locator(f'#level-3 tr[data-ticket="{gas.id}"]').wait_for()
    gas_row = page.locator('#counts tr[data-department="杭州市燃气集团"]')
    cells = await gas_row.locator("td").all_inner_texts()
    assert cells[:3] == ["杭州市燃气集团", "1", "1"]  # open 1, overdue 1
    city = await page.locator('#counts tr[data-department="市城管局"] td').all_inner_texts()
    assert city[4] == "1"  # returned once
    assert "超期未答复" in await page.locator("#raises").inner_text()
    await shot(page, "supervisor")
    async with page.expect_download() as downloading:  # the 导出 CSV button
        await page.locator("#supervision-csv").click()
    download = await downloading.value
    assert download.suggested_filename == "supervision.csv"
    exported = Path(await download.path()).read_text("utf-8-sig")
    assert f"{gas.id},杭州市燃气集团," in exported and "高级督办" in exported
    await page.close()
