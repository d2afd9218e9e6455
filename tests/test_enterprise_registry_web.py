"""The enterprise registry (企业专席) on the web (the admin's page beside
``ivr enterprises import``): an admin imports a CSV; a bad line is named
``file:line`` and nothing is imported; a number is taken out; each write is in
the audit log; an operator is refused. What the page writes is what the call
path reads (EnterpriseRegistry.find on the hotline's real store). The page
itself in Chromium: docs/screenshots/enterprise-registry.png."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ivr.enterprises import EnterpriseRegistry
from tests.conftest import StartHotline
from tests.test_web_console import CHROMIUM, browser, log_in, shot
from tests.web_client import hotline_client

__all__ = ["browser"]  # the fixture, used by name

GOOD = (
    "号码,企业名称,统一社会信用代码\n"
    "0571-8765 4321,杭州云栖科技有限公司,91330100MA2H3N7Q8K\n"
    "+86 138 0013 8000,西湖茶叶合作社\n"
)
BAD = "号码,企业名称\n057187654321,杭州云栖科技有限公司\n12ab,没有号码的企业\n13900139000,\n"


def upload(name: str, text: str, replace: bool = False) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", text.encode("utf-8"), filename=name, content_type="text/csv")
    if replace:
        form.add_field("replace", "1")
    return form


async def test_an_admin_imports_and_removes_and_a_bad_line_imports_nothing(
    start_hotline: StartHotline,
) -> None:
    hotline = await start_hotline()
    assert hotline.db is not None
    registry = EnterpriseRegistry(hotline.db)
    base = f"http://127.0.0.1:{hotline.api.port}"
    admin = await hotline_client(hotline, "admin")
    operator = await hotline_client(hotline, "operator")
    try:
        # a file with bad lines: each named by file:line, nothing written
        async with admin.post(
            f"{base}/api/admin/enterprises/import", data=upload("bad.csv", BAD)
        ) as r:
            assert r.status == 400
            body = await r.json()
        assert body["problems"] == [
            "bad.csv:3: '12ab' is not a phone number",
            "bad.csv:4: 13900139000 has no business name (second column)",
        ]
        assert await registry.count() == 0

        async with admin.post(
            f"{base}/api/admin/enterprises/import", data=upload("good.csv", GOOD)
        ) as r:
            assert r.status == 200, await r.text()
            assert await r.json() == {
                "file": "good.csv", "imported": 2, "added": 2, "updated": 0, "removed": 0,
            }  # fmt: skip
        # the call path finds the business by the caller's number as the trunk gives it
        found = await registry.find("+8657187654321")
        assert found is not None and found.name == "杭州云栖科技有限公司"
        assert found.credit_code == "91330100MA2H3N7Q8K" and found.source == "good.csv:2"
        async with admin.get(f"{base}/api/admin/enterprises") as r:
            listed = await r.json()
        assert {e["number"] for e in listed["enterprises"]} == {"057187654321", "13800138000"}

        # an operator may not read or change it
        async with operator.get(f"{base}/api/admin/enterprises") as r:
            assert r.status == 403
        async with operator.post(
            f"{base}/api/admin/enterprises/import", data=upload("x.csv", GOOD)
        ) as r:
            assert r.status == 403

        # bad requests: said what is wrong, nothing lost
        async with admin.post(f"{base}/api/admin/enterprises/import", json={"file": GOOD}) as r:
            assert r.status == 400 and "multipart" in (await r.json())["error"]
        async with admin.post(
            f"{base}/api/admin/enterprises/import", data=upload("latin.csv", "x")
        ) as r:
            assert r.status == 400  # a header alone: no business
        bad_bytes = aiohttp.FormData()
        bad_bytes.add_field("file", "13700137000,某公司\n".encode("gbk"), filename="gbk.csv")
        async with admin.post(f"{base}/api/admin/enterprises/import", data=bad_bytes) as r:
            assert r.status == 400
            assert (await r.json())["problems"][0].startswith("gbk.csv: not UTF-8")
        async with admin.post(
            f"{base}/api/admin/enterprises/import",
            data=b"--y\r\nnot a part",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        ) as r:
            assert r.status == 400 and "multipart body cannot be read" in (await r.json())["error"]
        async with admin.post(f"{base}/api/admin/enterprises/remove", json={"number": "abc"}) as r:
            assert r.status == 400
        assert await registry.count() == 2

        # replace: the registry becomes the file
        one = "13800138000,西湖茶叶合作社\n"
        async with admin.post(
            f"{base}/api/admin/enterprises/import", data=upload("one.csv", one, replace=True)
        ) as r:
            assert (await r.json())["removed"] == 1
        assert await registry.find("057187654321") is None

        async with admin.post(
            f"{base}/api/admin/enterprises/remove", json={"number": "138-0013-8000"}
        ) as r:
            assert r.status == 200 and (await r.json())["removed"] == "13800138000"
        async with admin.post(
            f"{base}/api/admin/enterprises/remove", json={"number": "13800138000"}
        ) as r:
            assert r.status == 404
        assert await registry.count() == 0

        # every write is in the audit log, with the numbers it touched
        async with admin.get(f"{base}/api/admin/audit?action=enterprises.") as r:
            rows = (await r.json())["entries"]
        seen = [(e["action"], e["user"], e["outcome"], e["status"]) for e in rows]
        assert ("enterprises.import", "test-admin", "allowed", 200) in seen
        assert ("enterprises.import", "test-admin", "failed", 400) in seen
        assert ("enterprises.import", "test-operator", "refused", 403) in seen
        assert ("enterprises.remove", "test-admin", "allowed", 200) in seen
        imported = next(e for e in rows if e["action"] == "enterprises.import" and e["items"] == 2)
        # the numbers touched, masked as every number in the audit log is
        assert imported["detail"] == "ids 0571****4321,138****8000"
    finally:
        await admin.close()
        await operator.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
async def test_the_registry_page_in_a_browser(
    start_hotline: StartHotline, tmp_path: Path, browser: Any
) -> None:
    hotline = await start_hotline()
    assert hotline.db is not None and hotline.accounts is not None
    from tests.web_client import PASSWORD

    await hotline.accounts.add_user("admin1", PASSWORD, "admin")
    base = f"http://127.0.0.1:{hotline.api.port}"
    (tmp_path / "bad.csv").write_text(BAD, encoding="utf-8")
    (tmp_path / "seats.csv").write_text(GOOD, encoding="utf-8")

    page = await log_in(browser, base, "admin1")
    await page.wait_for_url(f"{base}/admin")
    await page.click("#to-enterprises")
    await page.wait_for_url(f"{base}/admin/enterprises")
    await page.wait_for_selector("#none:not(.hidden)")

    await page.set_input_files("#import-file", str(tmp_path / "bad.csv"))
    await page.click("#import-button")
    await page.wait_for_selector("#import-problems li")
    problems = await page.inner_text("#import-problems")
    assert "bad.csv:3: '12ab' is not a phone number" in problems
    assert "bad.csv:4:" in problems
    assert "未导入" in await page.inner_text("#import-status")
    assert await EnterpriseRegistry(hotline.db).count() == 0

    await page.set_input_files("#import-file", str(tmp_path / "seats.csv"))
    await page.click("#import-button")
    await page.wait_for_selector('#rows tr[data-number="057187654321"]')
    assert "新增 2" in await page.inner_text("#import-status")
    assert await page.inner_text("#import-problems") == ""
    row = await page.inner_text('#rows tr[data-number="057187654321"]')
    assert "杭州云栖科技有限公司" in row and "91330100MA2H3N7Q8K" in row
    await shot(page, "enterprise-registry")

    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click('#rows tr[data-number="13800138000"] button')
    await page.wait_for_selector('#rows tr[data-number="13800138000"]', state="detached")
    assert "已移除 13800138000" in await page.inner_text("#remove-status")
    assert await EnterpriseRegistry(hotline.db).find("13800138000") is None
    assert await page.inner_text("#count") == "1"

    # an operator is told 无权限
    await hotline.accounts.add_user("op1", PASSWORD, "operator")
    other = await log_in(browser, base, "op1")
    await other.wait_for_url(f"{base}/operator")
    await other.goto(f"{base}/admin/enterprises")
    await other.wait_for_selector("#denied:not(.hidden)")
