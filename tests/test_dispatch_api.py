"""Dispatch and graded supervision through the real web server (real log-in
per role, real SQLite, the hotline's own supervision rounds every second, its
wall clock moved by the test): the operator dispatches to the department the
duty list proposes; departments see and act on their own tickets only; a
department that never answers is raised to level 1 then 3, one that passes a
ticket on twice to level 2; the supervisors' page has the lists and counts; a
duty list with a mistake is refused with file:line and the running one kept."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp

from ivr.server import Hotline
from tests.conftest import ROOT, StartHotline
from tests.test_console_api import (
    LAMP,
    NOISE,
    WATER,
    WATER_AGAIN,
    base,
    console_hotline,
    get_json,
    post_json,
    ticket,
)
from tests.test_metrics import scrape
from tests.web_client import hotline_client

HOUR = 3600.0
GAS = "我叫陈刚，上城区解放路8号，燃气费多扣了两百块，已经好几天了没人管"


async def dispatch_hotline(
    start_hotline: StartHotline, tmp_path: Path, clock: list[float]
) -> tuple[Hotline, Path]:
    duty = tmp_path / "duty_list.toml"
    shutil.copy(ROOT / "duty_list.toml", duty)
    extra = f'[dispatch]\nduty_list = "{duty}"\nwarn_share = 0.8\ncheck_every = 1\n'
    hotline = await console_hotline(start_hotline, tmp_path, extra=extra, clock=lambda: clock[0])
    return hotline, duty


async def until(
    http: aiohttp.ClientSession, url: str, check: Any, timeout: float = 10.0
) -> dict[str, Any]:
    """GET ``url`` until ``check(body)`` holds (the supervision rounds run every second)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await get_json(http, url)
        assert status == 200, body
        if check(body) or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.2)


def level_ids(body: dict[str, Any], level: int) -> set[int]:
    return {t["id"] for t in body["levels"][str(level)]}


async def test_dispatch_departments_and_supervision(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    clock = [time.time()]
    hotline, _ = await dispatch_hotline(start_hotline, tmp_path, clock)
    url = base(hotline)
    water = await ticket(hotline, WATER)  # 供水, 西湖区, 较急: 24 hours
    noise = await ticket(hotline, NOISE)  # 噪音扰民, 拱墅区, 一般
    gas = await ticket(hotline, GAS)  # 燃气, 上城区, 较急: 12 hours
    assert (gas.value("category"), gas.value("urgency")) == ("燃气", "较急")
    async with (
        await hotline_client(hotline, "operator", "op1") as op,
        await hotline_client(hotline, "department", "water") as water_dept,
        await hotline_client(hotline, "department", "chengguan") as city,
        await hotline_client(hotline, "department", "xihu-chengguan") as xihu,
        await hotline_client(hotline, "department", "stranger") as stranger,
        await hotline_client(hotline, "supervisor", "boss") as boss,
    ):
        for http, page in ((water_dept, "/department"), (boss, "/supervisor"), (op, "/operator")):
            async with http.get(f"{url}/", allow_redirects=False) as response:
                assert response.headers["Location"] == page  # each role's own page
        # the operator's list: each ticket with the department the duty list proposes
        status, body = await get_json(op, f"{url}/api/dispatch/tickets")
        assert status == 200
        proposed = {t["id"]: t["proposal"] for t in body["tickets"]}
        assert proposed[water.id] == {"department": "市水务集团", "hours": 24}
        assert proposed[noise.id] == {"department": "市城管局", "hours": 120}
        assert proposed[gas.id] == {"department": "杭州市燃气集团", "hours": 12}
        for t, department in ((water, "市水务集团"), (noise, "市城管局"), (gas, "杭州市燃气集团")):
            status, sent = await post_json(
                op, f"{url}/api/dispatch/tickets/{t.id}", {"department": department}
            )
            assert status == 200, sent
        status, body = await post_json(
            op, f"{url}/api/dispatch/tickets/{water.id}", {"department": "市教委"}
        )
        assert status == 409 and "not a department of the duty list" in body["error"]

        # departments see their own tickets only, and cannot act on others'
        status, mine = await get_json(water_dept, f"{url}/api/department/tickets")
        assert status == 200 and mine["department"] == "市水务集团"
        assert [t["id"] for t in mine["tickets"]] == [water.id]
        assert mine["tickets"][0]["fields"]["address"]  # what they need to act
        status, body = await post_json(city, f"{url}/api/department/tickets/{water.id}/accept", {})
        assert status == 404
        status, body = await get_json(stranger, f"{url}/api/department/tickets")
        assert status == 403 and "acts for no department" in body["error"]
        status, _ = await post_json(op, f"{url}/api/department/tickets/{water.id}/accept", {})
        assert status == 403  # an operator is no department
        status, _ = await get_json(water_dept, f"{url}/api/tickets")
        assert status == 403  # nor does a department search every ticket
        status, _ = await get_json(op, f"{url}/api/supervision")
        assert status == 403

        # the water company accepts and asks for more time; the supervisor grants it
        status, _ = await post_json(
            water_dept, f"{url}/api/department/tickets/{water.id}/accept", {}
        )
        assert status == 200
        status, body = await post_json(
            water_dept,
            f"{url}/api/department/tickets/{water.id}/extension",
            {"hours": 12, "reason": "需要更换主管道"},
        )
        assert status == 200 and body["dispatch"]["extension_hours"] == 12
        status, seen = await get_json(boss, f"{url}/api/supervision")
        assert [t["id"] for t in seen["extensions"]] == [water.id]
        status, body = await post_json(
            boss, f"{url}/api/dispatch/tickets/{water.id}/extension", {"grant": True}
        )
        assert status == 200 and body["dispatch"]["due_at"] - body["dispatch"]["started_at"] == (
            36 * HOUR
        )

        # the city's 城管 returns the noise ticket, 西湖区's returns it again: 推诿
        status, body = await post_json(city, f"{url}/api/department/tickets/{noise.id}/return", {})
        assert status == 400 and "reason" in body["error"]
        status, _ = await post_json(
            city, f"{url}/api/department/tickets/{noise.id}/return", {"reason": "属拱墅区管辖"}
        )
        assert status == 200
        status, body = await get_json(op, f"{url}/api/dispatch/tickets")
        returned = [t for t in body["tickets"] if t["id"] == noise.id]
        assert returned and returned[0]["dispatch"]["state"] == "returned"
        status, _ = await post_json(
            op, f"{url}/api/dispatch/tickets/{noise.id}", {"department": "西湖区城管局"}
        )
        assert status == 200
        status, _ = await post_json(
            xihu, f"{url}/api/department/tickets/{noise.id}/return", {"reason": "不在西湖区"}
        )
        assert status == 200
        seen = await until(boss, f"{url}/api/supervision", lambda b: noise.id in level_ids(b, 2))
        assert level_ids(seen, 2) == {noise.id}, seen["levels"]

        # the gas company never answers: level 1 at 80% of its 12 hours, 3 when overdue
        clock[0] += 10 * HOUR
        seen = await until(boss, f"{url}/api/supervision", lambda b: gas.id in level_ids(b, 1))
        assert level_ids(seen, 1) == {gas.id}  # the water ticket has 36 hours: 28% used
        clock[0] += 3 * HOUR
        seen = await until(boss, f"{url}/api/supervision", lambda b: gas.id in level_ids(b, 3))
        assert level_ids(seen, 3) == {gas.id}
        counts = {c["department"]: c for c in seen["departments"]}
        assert counts["杭州市燃气集团"]["overdue"] == 1 and counts["杭州市燃气集团"]["level3"] == 1
        assert counts["西湖区城管局"]["returned"] == 1 and counts["市城管局"]["returned"] == 1
        assert counts["市水务集团"]["open"] == 1 and counts["市水务集团"]["overdue"] == 0
        reasons = [r["reason"] for r in seen["raises"] if r["ticket_id"] == gas.id]
        assert any("超期未答复" in r for r in reasons) and any("时限已用" in r for r in reasons)
        assert seen["rounds_on"] == hotline.roster.node_id  # type: ignore[union-attr]
        # the same counts for Prometheus
        figures = await scrape(hotline)
        gas_dept, water_co = "杭州市燃气集团", "市水务集团"
        assert figures.value("ivr_supervision_tickets", department=gas_dept, level="3") == 1
        assert figures.value("ivr_supervision_tickets", department=gas_dept, level="1") == 0
        assert figures.value("ivr_dispatch_overdue", department=gas_dept) == 1
        assert figures.value("ivr_dispatch_open", department=water_co) == 1
        assert figures.value("ivr_dispatch_overdue", department=water_co) == 0
        # and as the supervisors' CSV: where each ticket stands, no caller's details
        async with boss.get(f"{url}/api/supervision.csv") as response:
            assert response.status == 200 and response.content_type == "text/csv"
            text = await response.text()
        assert text.startswith("\ufeff工单,承办部门,状态")
        rows = {r["工单"]: r for r in csv.DictReader(io.StringIO(text.lstrip("\ufeff")))}
        assert set(rows) == {str(water.id), str(noise.id), str(gas.id)}
        gas_row = rows[str(gas.id)]
        assert (gas_row["承办部门"], gas_row["督办级别"], gas_row["超期"]) == (
            gas_dept,
            "高级督办",
            "是",
        )
        assert (gas_row["区县"], gas_row["时限已用"]) == ("上城区", "108%")
        assert rows[str(noise.id)]["督办级别"] == "中级警示"
        assert rows[str(noise.id)]["推诿次数"] == "2"
        assert "陈刚" not in text and "解放路" not in text  # no caller's name or address
        async with op.get(f"{url}/api/supervision.csv") as response:
            assert response.status == 403

        # the water company answers; every step is in the ticket's history
        status, _ = await post_json(
            water_dept,
            f"{url}/api/department/tickets/{water.id}/reply",
            {"result": "已更换主管道，恢复供水"},
        )
        assert status == 200
        status, shown = await get_json(op, f"{url}/api/dispatch/tickets/{water.id}")
        assert shown["dispatch"]["state"] == "replied"
        steps = [(h["who"], h["what"]) for h in shown["history"]]
        assert [s for s in steps if s[1] not in ("status", "created", "transcript")][-5:] == [
            ("op1", "dispatched"),
            ("water", "accepted"),
            ("water", "extension_asked"),
            ("boss", "extension_granted"),
            ("water", "replied"),
        ]
        status, mine = await get_json(water_dept, f"{url}/api/department/tickets")
        assert mine["tickets"] == [] and [t["id"] for t in mine["replied"]] == [water.id]


async def test_duty_list_reload_keeps_the_running_list_on_a_mistake(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    clock = [time.time()]
    hotline, duty = await dispatch_hotline(start_hotline, tmp_path, clock)
    url = base(hotline)
    lamp = await ticket(hotline, LAMP)  # 道路交通, 上城区
    async with (
        await hotline_client(hotline, "admin") as admin,
        await hotline_client(hotline, "operator", "op1") as op,
    ):
        status, body = await get_json(op, f"{url}/api/dispatch/duty-list")
        running = body["duty_list"]["version"]
        text = duty.read_text(encoding="utf-8")
        lines = text.split("\n")
        wrong = lines.index('department = "市交通运输局"') + 1
        lines[wrong - 1] = 'department = "市交警支队"'
        duty.write_text("\n".join(lines), encoding="utf-8")
        status, body = await post_json(admin, f"{url}/api/admin/duty-list/reload", {})
        assert status == 422
        assert body["error"].startswith(f"{duty}:{wrong}: duty: department '市交警支队'")
        assert body["running_version"] == running
        status, body = await get_json(op, f"{url}/api/dispatch/duty-list")
        assert body["duty_list"]["version"] == running and body["error"].startswith(str(duty))
        status, shown = await get_json(op, f"{url}/api/dispatch/tickets/{lamp.id}")
        assert shown["proposal"]["department"] == "市交通运输局"  # the running list

        # fixed: the next reload takes it (a new department for roads)
        lines[wrong - 1] = 'department = "市城管局"'
        duty.write_text("\n".join(lines), encoding="utf-8")
        status, body = await post_json(admin, f"{url}/api/admin/duty-list/reload", {})
        assert status == 200 and body["version"] != running
        status, shown = await get_json(op, f"{url}/api/dispatch/tickets/{lamp.id}")
        assert shown["proposal"]["department"] == "市城管局"
        status, _ = await post_json(op, f"{url}/api/admin/duty-list/reload", {})
        assert status == 403


async def test_the_reports_of_one_case_are_dispatched_once(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """Three callers report the same water cut at 文三路90号 (one case, merged);
    the dispatch list shows the case once (同案 3 件); sending it sends the case:
    the other reports leave the list with a note, the water company gets one
    ticket; when it returns the ticket, the case is back in the list, once."""
    clock = [time.time()]
    hotline, _ = await dispatch_hotline(start_hotline, tmp_path, clock)
    assert hotline.cases is not None
    url = base(hotline)
    first = await ticket(hotline, WATER, caller="13800000001")
    second = await ticket(hotline, WATER_AGAIN, caller="13800000002")
    third = await ticket(hotline, "文三路90号停水了，西湖区的，一直没水", caller="13800000003")
    noise = await ticket(hotline, NOISE)
    for t in (first, second, third, noise):
        await hotline.cases.file(t.id)
    case = await hotline.cases.case_of(first.id)
    assert case is not None and case.reports == (first.id, second.id, third.id)

    async with (
        await hotline_client(hotline, "operator", "op1") as op,
        await hotline_client(hotline, "department", "water") as water_dept,
    ):
        status, body = await get_json(op, f"{url}/api/dispatch/tickets")
        assert status == 200
        listed = {t["id"]: t for t in body["tickets"]}
        water_rows = [i for i in listed if i in case.reports]
        assert len(water_rows) == 1, body["tickets"]  # the case once
        (row_id,) = water_rows
        others = sorted(set(case.reports) - {row_id})
        assert sorted(listed[row_id]["case"]["with"]) == others
        assert noise.id in listed and "case" not in listed[noise.id]

        status, sent = await post_json(
            op, f"{url}/api/dispatch/tickets/{row_id}", {"department": "市水务集团"}
        )
        assert status == 200, sent
        status, body = await get_json(op, f"{url}/api/dispatch/tickets")
        assert [t["id"] for t in body["tickets"]] == [noise.id]  # the case is in hand
        assert hotline.tickets is not None
        for other in others:
            shown = await hotline.tickets.get(other)
            assert shown is not None
            assert f"同案件 {case.id}：随工单 {row_id} 派至 市水务集团 办理" in shown.notes
        status, mine = await get_json(water_dept, f"{url}/api/department/tickets")
        assert [t["id"] for t in mine["tickets"]] == [row_id]  # one ticket, not three

        status, _ = await post_json(
            water_dept,
            f"{url}/api/department/tickets/{row_id}/return",
            {"reason": "不属本单位"},
        )
        assert status == 200
        status, body = await get_json(op, f"{url}/api/dispatch/tickets")
        back = [t for t in body["tickets"] if t["id"] in case.reports]
        assert [t["id"] for t in back] == [row_id]  # returned: the case once again
        assert back[0]["dispatch"]["state"] == "returned"
