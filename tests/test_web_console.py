"""The web console in a real browser: Playwright driving Debian's Chromium
headless (/usr/bin/chromium) against the hotline's own web server.

An operator logs in; a real call placed by baresip (a phone number said by
espeak-ng) lands on their screen with the prefilled ticket and the words the
fields came from highlighted; they correct the name and save. An admin
publishes a broken dial plan and sees the error at its line while the running
plan stays; then publishes a good plan while a call is in progress: that call
finishes on the old plan and the next call uses the new one. Every page is
saved as a screenshot in docs/screenshots/ (the README shows them)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ivr.trial_call import place_call
from tests.audio_tools import pad, read_8k, write_wav
from tests.conftest import ROOT, SHARED, StartHotline, trial
from tests.peers import Baresip, SippUas, free_udp_port
from tests.test_call_path import wait_records
from tests.test_speech_calls import espeak
from tests.web_client import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "docs" / "screenshots"
PLANS = Path(__file__).parent / "data" / "dialplans"
LOG = logging.getLogger("ivr.test.caller")

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def log_in(browser: Any, base: str, name: str) -> Any:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.goto(f"{base}/login")
    await page.fill("#name", name)
    await page.fill("#password", PASSWORD)
    await page.click("#login")
    return page


async def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def until(check: Any, timeout: float = 40.0) -> None:
    for _ in range(int(timeout / 0.25)):
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError("not in time")


@pytest.mark.skipif(not (SHARED / "speech").exists(), reason="../shared is not beside")
async def test_a_call_lands_on_the_operator_screen_prefilled_and_is_saved(
    start_hotline: StartHotline, tmp_path: Path, browser: Any
) -> None:
    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True))
    said = espeak(
        tmp_path, "phone", "yao1. san1. ba1. yao1. er4. san1. si4. wu3. liu4. qi1. ba1.", speed=120
    )
    voice = write_wav(tmp_path / "caller.wav", pad(read_8k(said, tmp_path), 3.0, 60.0))
    caller = Baresip(tmp_path / "caller", free_udp_port(), play=voice, user="13700001111")
    await operator.start()
    await caller.start()
    try:
        hotline = await start_hotline(
            [operator.uri], dialplan=PLANS / "describe_then_operator.toml"
        )
        assert hotline.accounts is not None and hotline.tickets is not None
        await hotline.accounts.add_user("op1", PASSWORD, "operator", sip_uri=operator.uri)
        base = f"http://127.0.0.1:{hotline.api.port}"
        page = await log_in(browser, base, "op1")
        await page.wait_for_url(f"{base}/operator")
        await page.wait_for_selector("#who:has-text('op1')")
        await shot(page, "operator-waiting")

        await caller.dial(f"sip:12345@127.0.0.1:{hotline.endpoint.port}")
        phone = page.locator("#f-phone")
        await phone.wait_for(timeout=60_000)  # the screen pop: the call is put through

        async def prefilled() -> bool:
            return bool(await phone.input_value() == "13812345678")

        await until(prefilled)
        assert await page.locator("#transcript mark").count() >= 1  # the words it came from
        marked = await page.locator("#transcript mark").first.text_content()
        assert marked and any(d in marked for d in "幺一三八")
        assert "13700001111" in (await page.locator("#ticket-caller").text_content() or "")
        await shot(page, "operator-screen-pop")

        await page.fill("#f-name", "李明")
        await page.click("#save")
        await page.wait_for_selector("#saved:has-text('已保存')")
        ticket_id = int((await page.locator("#ticket-id").text_content() or "#0")[1:])
        await shot(page, "operator-saved")
        ticket = await hotline.tickets.get(ticket_id)
        assert ticket is not None and ticket.value("name") == "李明"
        assert ticket.fields["name"]["source"] == "operator"
        assert ticket.value("phone") == "13812345678"  # the rest untouched
        history = await hotline.tickets.history(ticket_id)
        assert any(h.who == "op1" and h.what == "field:name" for h in history)
        # pausing: the operator takes no new call until ready again
        await page.click("#availability")
        await page.wait_for_selector("#availability:has-text('Ready')")
        assert all(op.paused for op in hotline.desk.operators_named(operator.uri))
    finally:
        await caller.quit()
        await operator.stop()


async def test_admin_publishes_plans_safely_in_the_browser(
    start_hotline: StartHotline, tmp_path: Path, browser: Any
) -> None:
    plan_file = tmp_path / "plan.toml"
    shutil.copy(PLANS / "publish_a.toml", plan_file)
    old_source = plan_file.read_text()
    new_source = (PLANS / "publish_b.toml").read_text()
    hotline = await start_hotline(dialplan=plan_file)
    assert hotline.accounts is not None and hotline.plan is not None
    await hotline.accounts.add_user("admin1", PASSWORD, "admin")
    base = f"http://127.0.0.1:{hotline.api.port}"
    page = await log_in(browser, base, "admin1")
    await page.wait_for_url(f"{base}/admin")
    await page.wait_for_selector("#plan-graph-svg")
    assert await page.input_value("#plan-source") == old_source
    await shot(page, "admin-plans")

    # a broken plan: the error is shown at its line, the running plan stays
    running = hotline.plan.version
    broken = old_source.replace('options = { "1" = "a" }', 'options = { "1" = "nowhere" }')
    line = broken.splitlines().index('options = { "1" = "nowhere" }') + 1
    await page.fill("#plan-source", broken)
    await page.click("#plan-publish")
    problem = page.locator(f"#plan-problems li[data-line='{line}']")
    await problem.wait_for()
    assert "nowhere" in (await problem.text_content() or "")
    assert hotline.plan.version == running and plan_file.read_text() == old_source
    await shot(page, "admin-plan-error")

    # a good plan published while a call is in progress
    first = asyncio.ensure_future(
        place_call(trial(hotline.endpoint.port, digits="1", digit_delay=6.0, duration=14.0), LOG)
    )

    async def answered() -> bool:
        return bool(hotline.calls)

    await until(answered, 10.0)
    await page.fill("#plan-source", new_source)
    await page.fill("#plan-note", "1 goes to b")
    await page.click("#plan-publish")
    await page.wait_for_selector("#plan-status:has-text('已发布')")
    assert hotline.plan.version != running and plan_file.read_text() == new_source
    await first
    (old_call,) = await wait_records(hotline, 1)
    assert old_call.path == ["welcome", "main", "a"] and old_call.plan_version == running
    await place_call(trial(hotline.endpoint.port, digits="1", digit_delay=3.0, duration=8.0), LOG)
    records = await wait_records(hotline, 2)
    (new_call,) = [r for r in records if r.call_id != old_call.call_id]
    assert new_call.path == ["welcome", "main", "b"]
    assert new_call.plan_version == hotline.plan.version
    rows = page.locator("#plan-history tr")
    assert await rows.count() == 2
    await shot(page, "admin-plan-published")

    # config.toml edited on disk, reloaded from the page: a bad value is shown at its
    # line and nothing changes; then a good one applies, a port change needs a restart
    config = tmp_path / "config.toml"
    good = config.read_text()
    config.write_text(good.replace("ring_timeout = 4.0", "ring_timeout = -1"))
    await page.click("#config-reload")
    await page.wait_for_selector("#config-status:has-text('未载入')")
    problem = await page.locator("#config-problems li").first.inner_text()
    assert "operators.ring_timeout" in problem and "config.toml:" in problem, problem
    assert hotline.settings.operators.ring_timeout == 4.0
    sip_port = hotline.settings.sip.port
    config.write_text(
        good.replace("ring_timeout = 4.0", "ring_timeout = 9.0").replace(
            f"port = {sip_port}", f"port = {sip_port + 1}"
        )
    )
    await page.click("#config-reload")
    await page.wait_for_selector("#config-status:has-text('已载入')")
    said = await page.locator("#config-problems").inner_text()
    assert "operators.ring_timeout" in said and "sip.port" in said, said
    assert hotline.settings.operators.ring_timeout == 9.0
    assert hotline.settings.sip.port == sip_port
    await shot(page, "admin-config-reloaded")

    for tab, ready in (
        ("prompts", "#prompt-rows tr"),
        ("tickets", "#ticket-filter"),
        ("dashboard", "#chart-category svg"),
    ):
        await page.click(f".tabs button[data-tab='{tab}']")
        await page.wait_for_selector(ready)
        await shot(page, f"admin-{tab}")
