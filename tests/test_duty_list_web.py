"""The admins' duty list page (/admin/duty-list) in a real browser (Playwright,
Debian's Chromium): a file with a mistake uploaded and published is refused
with its file:line and the running list stays; a good file is published (the
hotline's dispatch proposes by it), then rolled back from the history.
Screenshot in docs/screenshots/duty-list.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartHotline
from tests.test_console_api import base
from tests.test_duty_list_publish import SAMPLE, WRONG, line_of, roads_to
from tests.test_web_console import CHROMIUM, browser, log_in, shot
from tests.web_client import hotline_client

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]
__all__ = ["browser"]  # the fixture, used by name


async def test_upload_publish_refuse_and_roll_back(
    start_hotline: StartHotline, tmp_path: Path, browser: Any
) -> None:
    duty = tmp_path / "duty_list.toml"
    duty.write_text(SAMPLE, encoding="utf-8")
    hotline = await start_hotline(extra=f'[dispatch]\nduty_list = "{duty}"\n')
    assert hotline.duty_list is not None
    running = hotline.duty_list.version
    async with await hotline_client(hotline, "admin", "boss"):
        pass  # the user made in the store
    url = base(hotline)
    page = await log_in(browser, url, "boss")
    await page.wait_for_url(lambda u: not u.endswith("/login"))
    await page.goto(f"{url}/admin/duty-list")
    await page.locator("#running-version", has_text=running).wait_for()
    assert "尚未发布" in await page.locator("#running-from").inner_text()

    # a file with a mistake: refused with its file:line, nothing published
    wrong = roads_to("市交警支队")
    bad = tmp_path / "bad.toml"
    bad.write_text(wrong, encoding="utf-8")
    await page.locator("#duty-file").set_input_files(str(bad))
    await page.locator("#duty-status", has_text="已读取 bad.toml").wait_for()
    await page.locator("#duty-publish").click()
    problem = page.locator("#duty-problems li").first
    await problem.wait_for()
    said = await problem.inner_text()
    assert said.startswith(f"bad.toml:{line_of(wrong, WRONG)}: duty: department '市交警支队'")
    assert await problem.get_attribute("data-line") == str(line_of(wrong, WRONG))
    assert await page.locator("#duty-status").inner_text() == "未发布 Not published"
    assert hotline.duty_list.version == running
    assert await page.locator("#duty-history tr").count() == 0

    # a good file: published, run at once, in the history with the file's list
    good = tmp_path / "roads.toml"
    good.write_text(roads_to("市城管局"), encoding="utf-8")
    await page.locator("#duty-file").set_input_files(str(good))
    await page.locator("#duty-status", has_text="已读取 roads.toml").wait_for()
    await page.locator("#duty-note").fill("道路交通改由城管办理")
    await page.locator("#duty-publish").click()
    await page.locator("#duty-status", has_text="已发布 Published: #2").wait_for()
    assert await page.locator("#duty-problems li").count() == 0
    assert hotline.duty_list.department_for("道路交通", "上城区") == "市城管局"
    assert "已发布版本 #2（boss" in await page.locator("#running-from").inner_text()
    rows = page.locator("#duty-history tr")
    assert await rows.count() == 2
    assert "道路交通改由城管办理" in await rows.nth(0).inner_text()
    assert "运行中" in await rows.nth(0).inner_text()
    assert "file" in await rows.nth(1).inner_text()
    await shot(page, "duty-list")

    # rolled back to the file's list (#1): a new version #3
    await rows.nth(1).locator("button", has_text="回滚").click()
    await page.locator("#duty-status", has_text="已回滚 Rolled back: #3").wait_for()
    assert hotline.duty_list.department_for("道路交通", "上城区") == "市交通运输局"
    assert hotline.duty_list.version == running
    assert await page.locator("#duty-history tr").count() == 3
    await page.close()
