"""The follow-ups' web API with a real hotline and real HTTP log-ins: admins
list, cancel and re-run follow-ups and read the figures; operators may not;
bad input gets a clear 400/404/409.  Quiet hours all day keep every
follow-up from being dialled."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import StartHotline
from tests.web_client import hotline_client

ROOT = Path(__file__).resolve().parents[1]
QUIET_ALL_DAY = f"""
[followups]
enabled = true
plan = "{ROOT / "dialplans" / "followup.toml"}"
dial_uri = "sip:{{number}}@127.0.0.1:9"
quiet_hours = "00:00-23:59"
"""


async def test_admins_cancel_and_rerun_followups(start_hotline: StartHotline) -> None:
    hotline = await start_hotline(extra=QUIET_ALL_DAY)
    assert hotline.tickets is not None and hotline.followups is not None
    ticket = await hotline.tickets.create("call-1", "13800000001")
    admin = await hotline_client(hotline, "admin")
    operator = await hotline_client(hotline, "operator")
    base = f"http://127.0.0.1:{hotline.api.port}"
    try:
        async with operator.post(f"{base}/api/tickets/{ticket.id}", json={"status": "closed"}) as r:
            assert r.status == 200
        async with admin.get(f"{base}/api/followups") as r:
            assert r.status == 200
            (listed,) = (await r.json())["followups"]
        assert listed["ticket_id"] == ticket.id and listed["state"] == "pending"
        fid = listed["id"]
        async with operator.post(f"{base}/api/followups/{fid}/cancel", json={}) as r:
            assert r.status == 403
        async with admin.post(
            f"{base}/api/followups/{fid}/cancel", json={"reason": "市民要求不再回访"}
        ) as r:
            assert r.status == 200
            assert (await r.json())["followup"]["state"] == "cancelled"
        async with admin.post(f"{base}/api/followups/{fid}/cancel", json={}) as r:
            assert r.status == 409 and "only a pending" in (await r.json())["error"]
        async with admin.post(f"{base}/api/followups/{fid}/rerun") as r:
            assert r.status == 200
            assert (await r.json())["followup"]["state"] == "pending"
        async with admin.get(f"{base}/api/followups/{fid}") as r:
            shown = await r.json()
        details = [e["detail"] for e in shown["events"]]
        assert "市民要求不再回访 (test-admin)" in details
        assert any(d.startswith("re-run by test-admin") for d in details)
        async with admin.get(f"{base}/api/followups/999") as r:
            assert r.status == 404
        async with admin.get(f"{base}/api/followups?state=asleep") as r:
            assert r.status == 400 and "asleep" in (await r.json())["error"]
        async with admin.get(f"{base}/api/followups/figures?days=0") as r:
            assert r.status == 400 and "days" in (await r.json())["error"]
        async with admin.get(f"{base}/api/followups/figures") as r:
            figures = await r.json()
        assert figures["closed"] == 1 and figures["followed_up"] == 0
        assert figures["coverage"] == 0.0
    finally:
        await admin.close()
        await operator.close()
