"""Cases over the web API of a real hotline, with real HTTP log-ins: tickets
an operator saves join their matter's case; the operator reads "merged into
case X (n reports)", splits a wrong merge, is refused a merge across
categories or cities with the reason (409), and closes the case: every
report closed, every caller's follow-up queued."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import StartHotline
from tests.web_client import hotline_client

ROOT = Path(__file__).resolve().parents[1]
FOLLOWUPS_QUIET = f"""
[followups]
enabled = true
plan = "{ROOT / "dialplans" / "followup.toml"}"
dial_uri = "sip:{{number}}@127.0.0.1:9"
quiet_hours = "00:00-23:59"
"""


def said(category: str, district: str, parts: dict[str, str]) -> dict[str, Any]:
    def value(v: object) -> dict[str, Any]:
        return {"value": v, "evidence": [], "source": "speech"}

    return {
        "category": value(category),
        "district": value(district),
        "address": value("".join(parts.values())),
        "address_parts": value(parts),
    }


WATER = said("供水", "西湖区", {"road": "文三路", "number": "90号"})
NOISE = said("噪音扰民", "西湖区", {"road": "文三路", "number": "90号"})


async def test_operators_see_split_refuse_and_close_cases(start_hotline: StartHotline) -> None:
    hotline = await start_hotline(extra=FOLLOWUPS_QUIET)
    tickets = hotline.tickets
    assert tickets is not None and hotline.followups is not None
    reports = [
        ("13800000001", "文三路90号停水了，一点水都没有", WATER),
        ("13800000002", "我家水龙头拧开没水，文三路90号的", WATER),
        ("13800000003", "文三路90号也停水了", WATER),
        ("13800000004", "文三路90号楼下饭店半夜很吵", NOISE),
    ]
    ids = []
    for caller, text, fields in reports:
        ticket = await tickets.create(f"call-{caller}", caller)
        await tickets.apply_prefill(ticket.id, fields, text, None)
        ids.append(ticket.id)
    operator = await hotline_client(hotline, "operator")
    base = f"http://127.0.0.1:{hotline.api.port}"
    try:
        async with operator.get(f"{base}/api/tickets/{ids[0]}/case") as r:
            assert r.status == 200 and (await r.json())["case"] is None  # not saved yet
        for ticket_id in ids:  # the operator saves each: filed into its matter's case
            async with operator.post(
                f"{base}/api/tickets/{ticket_id}", json={"status": "in_progress"}
            ) as r:
                assert r.status == 200, await r.text()
        async with operator.get(f"{base}/api/tickets/{ids[1]}/case") as r:
            shown = await r.json()
        case_id = shown["case"]["id"]
        assert [t["id"] for t in shown["reports"]] == ids[:3]
        async with operator.get(f"{base}/api/tickets/{ids[3]}/case") as r:
            noise_case = (await r.json())["case"]
        assert noise_case["id"] != case_id and noise_case["reports"] == [ids[3]]
        # a wrong merge split
        async with operator.post(f"{base}/api/tickets/{ids[2]}/split", json={}) as r:
            assert r.status == 200, await r.text()
            split = await r.json()
        assert split["case"]["id"] not in (case_id, noise_case["id"])
        assert split["case"]["reports"] == [ids[2]]
        async with operator.get(f"{base}/api/cases/{case_id}") as r:
            assert [t["id"] for t in (await r.json())["reports"]] == ids[:2]
        async with operator.post(f"{base}/api/tickets/{ids[2]}/split", json={}) as r:
            assert r.status == 409 and "alone in case" in (await r.json())["error"]
        # the noise report cannot join the water case: the reason is given
        async with operator.post(
            f"{base}/api/tickets/{ids[3]}/case", json={"case": case_id}
        ) as r:
            assert r.status == 409
            refused = await r.json()
        assert refused["refused"] is True
        assert refused["error"] == (
            f"ticket {ids[3]} cannot join case {case_id}: different categories: 噪音扰民 / 供水"
        )
        async with operator.post(f"{base}/api/tickets/{ids[3]}/case", json={"case": "x"}) as r:
            assert r.status == 400
        async with operator.post(f"{base}/api/tickets/{ids[3]}/case", json={"case": 9999}) as r:
            assert r.status == 404
        # the case closed: both reports closed, both callers followed up
        async with operator.post(f"{base}/api/cases/{case_id}/close", json={}) as r:
            assert r.status == 200, await r.text()
            closed = await r.json()
        assert closed["case"]["status"] == "closed"
        assert {t["status"] for t in closed["reports"]} == {"closed"}
        followups = await hotline.followups.queue.list()
        assert sorted(f.number for f in followups) == ["13800000001", "13800000002"]
        async with operator.get(f"{base}/api/cases/abc") as r:
            assert r.status == 400
        async with operator.get(f"{base}/api/cases/4242") as r:
            assert r.status == 404
    finally:
        await operator.close()
