"""The operator's case box in a real browser (Chromium, Playwright): a real
call (our trial caller) is put through to the operator (sipp); its ticket,
about the same water cut as a report already in a case, is saved on the
screen and shows 已并入案件 X（共 2 件反映）; the operator splits it back out.
Screenshot docs/screenshots/operator-case.png.  And two real calls whose
tickets are filed into one case when the calls are over (no browser needed,
kept here beside the call set-up)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from ivr.trial_call import place_call
from tests.conftest import StartHotline, trial
from tests.peers import SippUas, free_udp_port
from tests.test_cases_api import WATER
from tests.test_web_console import CHROMIUM, browser, log_in, shot, until
from tests.web_client import PASSWORD

PLANS = Path(__file__).parent / "data" / "dialplans"
LOG = logging.getLogger("ivr.test.caller")

__all__ = ["browser"]  # the fixture, used by name

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


async def test_a_saved_ticket_shows_its_case_and_is_split(
    start_hotline: StartHotline, tmp_path: Path, browser: Any
) -> None:
    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True))
    await operator.start()
    call: asyncio.Future[Any] | None = None
    try:
        hotline = await start_hotline(
            [operator.uri], dialplan=PLANS / "straight_to_queue.toml"
        )
        tickets, cases = hotline.tickets, hotline.cases
        assert hotline.accounts is not None and tickets is not None and cases is not None
        # an earlier report of the water cut, already in its case
        earlier = await tickets.create("earlier-call", "13800000001")
        await tickets.apply_prefill(earlier.id, WATER, "文三路90号停水了，一点水都没有", None)
        first = await cases.file(earlier.id)
        await hotline.accounts.add_user("op1", PASSWORD, "operator", sip_uri=operator.uri)
        base = f"http://127.0.0.1:{hotline.api.port}"
        page = await log_in(browser, base, "op1")
        await page.wait_for_url(f"{base}/operator")
        call = asyncio.ensure_future(
            place_call(trial(hotline.endpoint.port, duration=40.0, caller="13700002222"), LOG)
        )
        await page.locator("#ticket-id").wait_for(timeout=30_000)  # the screen pop

        async def popped() -> bool:
            return (await page.locator("#ticket-id").text_content() or "").startswith("#")

        await until(popped)
        ticket_id = int((await page.locator("#ticket-id").text_content() or "#0")[1:])
        # what the caller said, as the prefill would have filled it
        await tickets.apply_prefill(ticket_id, WATER, "我家水龙头没水了，文三路90号的", None)
        await page.select_option("#status", "in_progress")
        await page.click("#save")
        merged = f"已并入案件 {first.case.id}（共 2 件反映）"
        await page.wait_for_selector(f"#case-said:has-text('{merged}')")
        reports = page.locator("#case-reports li")
        assert await reports.count() == 2
        assert await page.locator("#case-reports li button.split").count() == 2
        await shot(page, "operator-case")
        await page.locator(f"#case-reports li[data-ticket='{ticket_id}'] button.split").click()
        await page.wait_for_selector("#case-status:has-text('已拆分')")
        await page.wait_for_selector("#case-said:has-text('仅此一件')")
        own = await cases.case_of(ticket_id)
        kept = await cases.get(first.case.id)
        assert own is not None and own.id != first.case.id and own.reports == (ticket_id,)
        assert kept is not None and kept.reports == (earlier.id,)
    finally:
        if call is not None:
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
        await operator.stop()


async def test_tickets_of_two_calls_are_filed_when_the_calls_are_over(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """Two callers describe the same water cut in their own words (the
    scripted recogniser hears them; the real prefill fills the tickets); no
    operator is free, so the IVR says goodbye; when each call is over its
    ticket is filed: the second joins the first's case."""
    import numpy as np

    from tests.audio_tools import write_wav

    hotline = await start_hotline(
        dialplan=PLANS / "describe_then_operator.toml",
        script=["文三路90号停水了，一点水都没有", "我家水龙头拧开没水，西湖区文三路90号的"],
    )
    assert hotline.tickets is not None and hotline.cases is not None
    rng = np.random.default_rng(3)
    t = np.arange(8000 * 2) / 8000
    buzz = (np.sin(2 * np.pi * 180 * t) * 0.5 + rng.normal(0, 0.1, t.size)) * 12000
    audio = np.concatenate([np.zeros(8000 * 2), buzz, np.zeros(8000 * 10)]).astype(np.int16)
    voice = write_wav(tmp_path / "caller.wav", audio)
    filed: list[int] = []
    for caller in ("13700000001", "13700000002"):
        options = trial(hotline.endpoint.port, play=voice, duration=12.0, caller=caller)
        await place_call(options, LOG)

        async def in_a_case(number: str = caller) -> bool:
            row = await hotline.db.fetch_one(  # type: ignore[union-attr]
                "SELECT id FROM tickets WHERE caller = ? AND case_id IS NOT NULL", (number,)
            )
            if row is not None:
                filed.append(int(row["id"]))
            return row is not None

        await until(in_a_case, 30.0)
    first, second = [await hotline.cases.case_of(i) for i in filed]
    assert first is not None and second is not None
    assert first.id == second.id and second.reports == tuple(filed)
    ticket = await hotline.tickets.get(filed[1])
    assert ticket is not None and ticket.value("category") == "供水"
    history = [h.new_value or "" for h in await hotline.tickets.history(filed[1])]
    assert any(h.startswith(f"merged into case {first.id}: same address") for h in history)
