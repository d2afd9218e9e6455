"""Calling out through a trunk that asks for digest credentials (sipp checks
the Authorization with its verifyauth action): right password -> answered,
wrong password -> the 403 comes back as the reason."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiosipua.auth import SipDigestAuth

from ivr.dialer import OperatorLine, SipDialer
from ivr.media.clock import MediaClock
from ivr.media.ports import RtpPorts
from ivr.sip.endpoint import SipEndpoint
from ivr.sip.outgoing import Failed
from tests.peers import SippUas, free_port_block, free_udp_port

DATA = Path(__file__).parent / "data"
LOG = logging.getLogger("test.trunk")


@pytest.mark.peers
@pytest.mark.parametrize(("password", "answered"), [("s3cret", True), ("wrong", False)])
async def test_digest_challenge_is_answered(tmp_path: Path, password: str, answered: bool) -> None:
    trunk = SippUas(
        tmp_path / "trunk",
        free_udp_port(),
        free_udp_port(even=True),
        scenario=str(DATA / "sipp" / "uas_digest.xml"),
        user="13800138000",
        trace=True,
    )
    await trunk.start()
    endpoint = SipEndpoint(
        host="127.0.0.1", port=0, public_host="127.0.0.1", user_agent="test", log=LOG
    )
    await endpoint.start()
    clock = MediaClock(LOG)
    low, high = free_port_block(20)
    dialer = SipDialer(
        endpoint,
        RtpPorts("127.0.0.1", low, high),
        clock,
        media_host="127.0.0.1",
        codecs=("PCMU", "PCMA"),
        log=LOG,
    )
    never: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    try:
        result = await dialer.call_out(
            trunk.uri,
            caller_id="12345",
            timeout=10,
            abort=never,
            auth=SipDigestAuth("ivr", password),
        )
        if isinstance(result, OperatorLine):
            await result.hangup()
        await asyncio.sleep(0.5)
    finally:
        endpoint.close()
        clock.stop()
        await trunk.stop()
    messages = trunk.messages()
    assert "401 Unauthorized" in messages
    assert 'Authorization: Digest username="ivr"' in messages and "CSeq: 2 INVITE" in messages
    if answered:
        assert isinstance(result, OperatorLine)
        assert "BYE sip:" in messages
    else:
        assert isinstance(result, Failed) and result.status == 403
