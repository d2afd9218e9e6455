"""The dashboard's follow-up panel in a real browser (Playwright driving
Debian's Chromium): coverage and satisfaction by category, and an admin
cancelling and re-running a follow-up with the panel's buttons.  Quiet hours
all day keep the hotline from dialling; the outcomes are recorded through
the queue as the dialler would."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ivr.callbacks import CallbackPolicy
from ivr.followups import FollowupQueue, FollowupState, Outcome
from tests.conftest import StartHotline
from tests.test_followups_api import QUIET_ALL_DAY
from tests.test_web_console import CHROMIUM, browser, log_in, shot  # noqa: F401
from tests.web_client import PASSWORD

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


async def test_the_dashboard_shows_coverage_and_an_admin_cancels_and_reruns(
    start_hotline: StartHotline,
    browser: Any,  # noqa: F811
) -> None:
    hotline = await start_hotline(extra=QUIET_ALL_DAY)
    assert hotline.tickets is not None and hotline.accounts is not None and hotline.db
    for n, category in enumerate(["供水", "供水", "道路"]):
        ticket = await hotline.tickets.create(f"call-{n}", f"1380000000{n}")
        await hotline.tickets.apply_prefill(
            ticket.id, {"category": {"value": category, "evidence": [], "source": "t"}}, "", None
        )
        await hotline.tickets.edit(ticket.id, {"status": "closed"}, who="op1")
    # the dialler (quiet hours all day) claims nothing; this queue claims them as
    # at the end of those quiet hours (before tomorrow's midnight)
    seeder = FollowupQueue(hotline.db, CallbackPolicy(quiet_hours=None), node="seeder")
    now = time.time() + 86400
    for followup in await seeder.claim_due(now=now + 1, limit=2):
        await seeder.outcome(followup.id, FollowupState.CONNECTED, now=now + 2)
        outcome = Outcome.SATISFIED if followup.ticket_id == 1 else Outcome.UNSATISFIED
        await seeder.answered(followup.id, outcome, now=now + 3)
    (waiting,) = await seeder.list([FollowupState.PENDING])
    await hotline.accounts.add_user("admin1", PASSWORD, "admin")
    base = f"http://127.0.0.1:{hotline.api.port}"
    page = await log_in(browser, base, "admin1")
    await page.wait_for_url(f"{base}/admin")
    await page.click(".tabs button[data-tab='dashboard']")
    coverage = page.locator("#fu-coverage")
    await page.wait_for_selector("#fu-coverage:has-text('已回访')")
    assert await coverage.text_content() == "覆盖率 66.7%：已回访 2 / 办结 3"
    assert await page.locator("#fu-satisfaction").text_content() == "满意率 50%"
    water = page.locator("#fu-category tr[data-name='供水'] td.coverage")
    assert await water.text_content() == "100%"
    road = page.locator("#fu-category tr[data-name='道路'] td.coverage")
    assert await road.text_content() == "0%"
    await shot(page, "admin-followups")

    row = page.locator(f"#fu-rows tr[data-id='{waiting.id}']")
    assert await row.locator("td.state").text_content() == "待拨打"
    page.once("dialog", lambda dialog: dialog.accept("市民要求不再回访"))
    await row.locator("button.cancel").click()
    await page.wait_for_selector(f"#fu-rows tr[data-id='{waiting.id}'][data-state='cancelled']")
    assert (await seeder.get(waiting.id)).state is FollowupState.CANCELLED  # type: ignore[union-attr]
    await page.locator(f"#fu-rows tr[data-id='{waiting.id}'] button.rerun").click()
    await page.wait_for_selector(f"#fu-rows tr[data-id='{waiting.id}'][data-state='pending']")
    events = [e.detail for e in await seeder.events(waiting.id)]
    assert "市民要求不再回访 (admin1)" in events and events[-1].startswith("re-run by admin1")
    await page.close()


def test_the_panel_script_is_served() -> None:
    static = Path(__file__).resolve().parents[1] / "ivr" / "web" / "static"
    assert 'src="/static/followups.js"' in (static / "admin.html").read_text()
