"""The web console in a real browser: Playwright driving Debian's Chromium
headless (/usr/bin/chromium) against the hotline's own web server.

An operator logs in; a real call placed by baresip (a phone number said by
espeak-ng) lands on their screen with the prefilled ticket and the words the
fields came from highlighted; they correct the name and save. An admin
publishes a broken dial plan and sees the error at its line while the running
plan stays; then publishes a good plan while a call is in progress: that call
finishes on the old plan and the next call uses the new one. An operator who
opens /admin is told 无权限 and led back; the operator page says everything in
Chinese; the bundled plan's graph (Graphviz dot) fits the window with a box for
every node; the prompts page shows each prompt's words and filters them. Every
page is saved as a screenshot in docs/screenshots/ (the README shows them)."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ivr.callbacks import CallbackReason
from ivr.dialplan import graph as graph_module
from ivr.prompts import numbered
from ivr.trial_call import place_call
from tests.audio_tools import pad, read_8k, write_wav
from tests.conftest import ROOT, SHARED, StartHotline, trial
from tests.peers import Baresip, SippUas, free_udp_port
from tests.test_call_path import wait_records
from tests.test_console_api import LAMP, NOISE, RUBBISH, WATER, WATER_AGAIN, ticket
from tests.test_speech_calls import say_phone_number
from tests.web_client import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "docs" / "screenshots"
PLANS = Path(__file__).parent / "data" / "dialplans"
LOG = logging.getLogger("ivr.test.caller")
ENGLISH = re.compile(r"[A-Za-z]{2,}")  # a word; node ids and prompt keys are not on these

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
    said = say_phone_number(tmp_path)
    voice = write_wav(tmp_path / "caller.wav", pad(read_8k(said, tmp_path), 3.0, 60.0))
    caller = Baresip(tmp_path / "caller", free_udp_port(), play=voice, user="13700001111")
    await operator.start()
    await caller.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=PLANS / "describe_then_operator.toml",
            engine="auto",  # Whisper hears the number the screen is prefilled with
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
        assert await page.locator("#state").inner_text() in ("振铃中", "通话中")
        await page.click("#availability")
        await page.wait_for_selector("#availability:has-text('开始接听')")
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

    for said in (WATER, WATER_AGAIN, NOISE, LAMP, RUBBISH):  # the tabs show tickets
        await ticket(hotline, said)
    for tab, ready in (
        ("tickets", "#ticket-filter"),
        ("dashboard", "#chart-category svg"),
    ):
        await page.click(f".tabs button[data-tab='{tab}']")
        await page.wait_for_selector(ready)
        await shot(page, f"admin-{tab}")
    assert "共 5 件" in await page.locator("#tab-dashboard").inner_text()


async def visible_texts(page: Any, selector: str) -> list[str]:
    return list(
        await page.evaluate(
            "(s) => Array.from(document.querySelectorAll(s))"
            ".filter(e => e.getClientRects().length).map(e => e.innerText)",
            selector,
        )
    )


async def test_operator_page_in_chinese_and_no_admin_frame_for_operators(
    start_hotline: StartHotline, browser: Any
) -> None:
    phone = "sip:op1@127.0.0.1:9"
    hotline = await start_hotline(
        [phone],
        dialplan=PLANS / "straight_to_queue.toml",
        callbacks='enabled = true\ndial_uri = "sip:{number}@127.0.0.1:9"\n'
        'retry = [3600]\nquiet_hours = ""',
    )
    assert hotline.accounts is not None and hotline.callback_queue is not None
    await hotline.accounts.add_user("op1", PASSWORD, "operator", sip_uri=phone)
    await hotline.callback_queue.request(
        "13900001111", call_id="dropped-call", reason=CallbackReason.ABANDONED, now=time.time()
    )
    base = f"http://127.0.0.1:{hotline.api.port}"
    page = await log_in(browser, base, "op1")
    await page.wait_for_url(f"{base}/operator")
    await page.wait_for_selector("#state:has-text('空闲')")  # free
    row = page.locator("#callbacks tr:has-text('13900001111')")
    await row.wait_for()
    assert "排队时挂断" in await row.inner_text() and "待回拨" in await row.inner_text()
    await shot(page, "operator-callbacks")
    said = (await page.locator("body").inner_text()).replace("op1", "")
    assert not ENGLISH.findall(said), ENGLISH.findall(said)
    statuses = await page.locator("#status option").all_text_contents()  # hidden till a call
    assert statuses == ["待处理", "处理中", "已办结", "重复"]
    await page.click("#availability")
    await page.wait_for_selector("#state:has-text('暂停')")  # paused
    said = (await page.locator("body").inner_text()).replace("op1", "")
    assert not ENGLISH.findall(said), ENGLISH.findall(said)

    # the admin page: no empty frame, 无权限 and the way back
    await page.goto(f"{base}/admin")
    denied = page.locator("#denied")
    await denied.wait_for()
    assert "无权限" in await denied.inner_text() and "管理员" in await denied.inner_text()
    for frame in (".tabs", "main", "#tab-plans"):
        assert not await page.locator(frame).first.is_visible(), frame
    await shot(page, "admin-no-access")
    await page.click("#denied a[href='/operator']")
    await page.wait_for_url(f"{base}/operator")
    await page.wait_for_selector("#state:has-text('暂停')")
    # nobody logged in: to the log-in page as before
    anonymous = await browser.new_page()
    await anonymous.goto(f"{base}/admin")
    await anonymous.wait_for_url(f"{base}/login")


async def test_the_bundled_plan_as_a_graph_that_fits_and_the_prompts_with_their_words(
    start_hotline: StartHotline, browser: Any
) -> None:
    hotline = await start_hotline()  # dialplans/12345.toml
    assert hotline.accounts is not None and hotline.plan is not None
    plan = hotline.plan
    await hotline.accounts.add_user("admin1", PASSWORD, "admin")
    base = f"http://127.0.0.1:{hotline.api.port}"
    page = await log_in(browser, base, "admin1")
    await page.wait_for_url(f"{base}/admin")
    graph = page.locator("#plan-graph-svg")
    await graph.wait_for()
    window = page.viewport_size["width"]
    box = await graph.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= window, box
    assert await page.evaluate("document.documentElement.scrollWidth") <= window
    drawn = await page.evaluate(
        "Array.from(document.querySelectorAll('#plan-graph-svg g[data-node]'), g => g.dataset.node)"
    )
    assert sorted(drawn) == sorted(plan.nodes)  # one box per node
    if shutil.which("dot"):
        assert "graphviz" in (await graph.get_attribute("class") or "")
        edges = page.locator("#plan-graph-svg g.plan-edge text")
        labels = " ".join(await edges.all_text_contents())
        keys = {key for node in plan.nodes.values() for key in getattr(node, "options", {})}
        assert keys and keys <= set(re.split(r"[,/ ]+", labels)), labels
    await graph.scroll_into_view_if_needed()
    await shot(page, "admin-plans")

    # prompts: each with its words; a filter by key or words, and by state
    await page.click(".tabs button[data-tab='prompts']")
    welcome = page.locator("tr[data-prompt='mandarin/welcome']")
    await welcome.wait_for()
    assert plan.prompts["welcome"] in await welcome.inner_text()
    own = page.locator("tr[data-prompt='yue/dialect_set']")  # the yue wording
    assert plan.dialect_prompts["yue"]["dialect_set"] in (await own.text_content() or "")
    height = await page.evaluate("document.documentElement.scrollHeight")
    assert height < 3000, height
    await shot(page, "admin-prompts")
    everything = await visible_texts(page, "tr[data-prompt]")
    texts = {"callback_greeting": hotline.settings.callbacks.greeting, **numbered(plan.prompts)}
    wanted = {key for key, text in texts.items() if "老人" in key + text}
    assert wanted
    await page.fill("#prompt-filter", "老人")
    await until(lambda: _shown(page, "mandarin", wanted), 5.0)
    shown = await visible_texts(page, "tr[data-prompt]")
    assert shown and len(shown) < len(everything)
    assert all("老人" in text for text in shown), shown
    await page.fill("#prompt-filter", "position")  # a key: every number of it
    position = {key for key in texts if "position" in key}
    await until(lambda: _shown(page, "mandarin", position), 5.0)
    await page.fill("#prompt-filter", "")
    await page.select_option("#prompt-state", "recorded")
    await until(lambda: _shown(page, "mandarin", set()), 5.0)
    await page.wait_for_selector("#prompt-none:has-text('没有')")


async def _shown(page: Any, dialect: str, keys: set[str]) -> bool:
    """The rows of ``dialect`` on screen are those of ``keys``."""
    rows = await page.evaluate(
        "(d) => Array.from(document.querySelectorAll('tr[data-prompt^=\"' + d + '/\"]'))"
        ".filter(e => e.getClientRects().length).map(e => e.dataset.prompt)",
        dialect,
    )
    return {row.split("/", 1)[1] for row in rows} == keys


async def test_without_graphviz_the_graph_is_drawn_plainly_and_the_page_says_why(
    start_hotline: StartHotline, browser: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(graph_module, "DOT_PROGRAM", str(tmp_path / "no-dot"))  # not installed
    hotline = await start_hotline()
    assert hotline.accounts is not None and hotline.plan is not None
    await hotline.accounts.add_user("admin1", PASSWORD, "admin")
    base = f"http://127.0.0.1:{hotline.api.port}"
    page = await log_in(browser, base, "admin1")
    await page.wait_for_url(f"{base}/admin")
    graph = page.locator("#plan-graph-svg")
    await graph.wait_for()
    note = page.locator("#plan-graph-note")
    assert await note.is_visible()
    said = await note.inner_text()
    assert "Graphviz" in said and "not installed" in said and "简易排版" in said, said
    assert "graphviz" not in (await graph.get_attribute("class") or "")
    drawn = await page.evaluate(
        "Array.from(document.querySelectorAll('#plan-graph-svg g[data-node]'), g => g.dataset.node)"
    )
    assert sorted(drawn) == sorted(hotline.plan.nodes)
    window = page.viewport_size["width"]
    box = await graph.bounding_box()
    assert box is not None and box["x"] + box["width"] <= window, box
    assert await page.evaluate("document.documentElement.scrollWidth") <= window
