"""The quality results' CSV on /admin/quality: an admin downloads it in
Chromium (the 导出 CSV link, for the days shown), it holds each sample and each
operator without caller details, and the download is in the audit log as the
export quality.export; a reviewer may not export."""

from __future__ import annotations

import csv
import datetime
import io
from pathlib import Path
from typing import Any

import pytest

from ivr.quality.checks import CHECKS
from ivr.quality.samples import QualitySamples
from tests.conftest import StartHotline
from tests.quality_audio import CALLER_NUMBER
from tests.test_quality_cluster import record
from tests.test_web_console import CHROMIUM, browser, log_in
from tests.web_client import PASSWORD, hotline_client

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
__all__ = ["browser"]  # the fixture, used by name

DAY = (datetime.date.today() - datetime.timedelta(days=2)).isoformat()


async def test_the_admin_downloads_the_results_as_csv(
    start_hotline: StartHotline, tmp_path: Path, browser: Any
) -> None:
    # no rounds of its own: the test draws the day itself
    hotline = await start_hotline(extra="[quality]\nenabled = false\n")
    assert hotline.db is not None and hotline.accounts is not None
    await record(hotline.db, DAY, range(6), tmp_path / "x.wav", node="node-x")
    samples = QualitySamples(hotline.db)
    drawn = await samples.draw_day(DAY, share=0.5, seed="1", now=0.0, node="n")
    assert drawn is not None and len(drawn.picked) == 3
    first = drawn.picked[0]
    await samples.checked(
        first, {c: {"state": "passed"} for c in CHECKS}, now=0.0, node="node-x", state="done"
    )
    await hotline.accounts.add_user("boss", PASSWORD, "admin")
    await hotline.accounts.add_user("zhang", PASSWORD, "reviewer")
    await samples.review(first, "zhang", dict.fromkeys(("规范用语", "信息核实", "解答准确",
                         "服务态度"), 22), "", now=0.0)  # fmt: skip
    base = f"http://127.0.0.1:{hotline.api.port}"

    page = await log_in(browser, base, "boss")
    await page.wait_for_url(f"{base}/admin")
    await page.goto(f"{base}/admin/quality")
    await page.locator("tr[data-operator]").first.wait_for()
    await page.fill("#from", DAY)
    await page.click("#range button[type=submit]")
    await page.wait_for_function(
        f"document.getElementById('results-csv').href.includes('from={DAY}')"
    )
    async with page.expect_download() as downloading:  # the 导出 CSV link
        await page.locator("#results-csv").click()
    download = await downloading.value
    today = datetime.date.today().isoformat()
    assert download.suggested_filename == f"quality-{DAY}-{today}.csv"
    text = Path(await download.path()).read_text("utf-8-sig")
    await page.close()
    assert CALLER_NUMBER not in text and f"{DAY}-node-x-" not in text  # no caller, no call id
    table = list(csv.DictReader(io.StringIO(text)))
    by_sample = {int(r["sample"]): r for r in table if r["row"] == "sample"}
    assert set(by_sample) == set(drawn.picked)
    assert by_sample[first]["greeting"] == "passed" and by_sample[first]["average_score"] == "88.0"
    assert sum(int(r["sampled"]) for r in table if r["row"] == "operator") == 3

    # audited as an export, naming the samples it held
    rows = await hotline.db.fetch_all(
        "SELECT user_name, object_type, outcome, detail FROM audit_log "
        "WHERE action = 'quality.export'"
    )
    (row,) = rows
    assert (row["user_name"], row["object_type"], row["outcome"]) == (
        "boss",
        "quality_sample",
        "allowed",
    )
    assert f"from={DAY}" in row["detail"] and str(first) in row["detail"]

    # a reviewer may not export; a bad date is named
    url = f"{base}/api/admin/quality/results.csv"
    reviewer = await hotline_client(hotline, "reviewer", "zhang")
    async with reviewer, reviewer.get(url) as response:
        assert response.status == 403
    admin = await hotline_client(hotline, "admin", "boss")
    async with admin, admin.get(f"{url}?to=2026-13-01") as response:
        assert response.status == 400
        assert "to='2026-13-01'" in (await response.json())["error"]
