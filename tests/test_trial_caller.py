"""`ivr call` gives up within --duration when nothing answers (before: 37 s
and "408 Timeout (local)" although --duration 5 was given), and says why."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

from ivr.trial_call import TrialOptions, place_call
from tests.peers import free_udp_port
from tests.sip_raw import header, raw_peer


def test_nothing_listening_is_said_within_the_duration() -> None:
    port = free_udp_port()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ivr.cli",
            "call",
            f"sip:12345@127.0.0.1:{port}",
            "--duration",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=25,  # catches the old 37 s wait; not a figure
    )
    assert done.returncode == 1
    assert f"nothing answered at 127.0.0.1:{port} within 2 s" in done.stderr
    assert "Timeout (local)" not in done.stdout + done.stderr


def _reply(request: str, status: str) -> str:
    lines = [f"SIP/2.0 {status}"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        value = header(request, name)
        assert value is not None
        if name == "To" and "tag=" not in value:
            value += ";tag=ringing1"
        lines.append(f"{name}: {value}")
    lines.append("Content-Length: 0")
    return "\r\n".join(lines) + "\r\n\r\n"


async def test_a_phone_that_only_rings_is_cancelled_at_the_duration() -> None:
    phone = await raw_peer()
    try:
        options = TrialOptions(
            target=f"sip:12345@127.0.0.1:{phone.port}", duration=1.5, rtp_ports=(47100, 47140)
        )
        call = asyncio.ensure_future(place_call(options, logging.getLogger("test.trial")))
        request = await phone.expect(timeout=5.0)
        assert request.startswith("INVITE ")
        source = int((header(request, "Via") or "").split(":")[-1].split(";")[0])
        phone.send(_reply(request, "180 Ringing"), source)
        result = await asyncio.wait_for(call, 15.0)
        assert result.status == 408
        assert f"127.0.0.1:{phone.port} did not answer within 1.5 s" in result.reason
        seen = [await phone.expect(timeout=3.0)]
        while not seen[-1].startswith("CANCEL "):
            seen.append(await phone.expect(timeout=3.0))
        assert seen[-1].startswith("CANCEL ")
    finally:
        phone.close()
