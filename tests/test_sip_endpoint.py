"""The SIP endpoint against a raw UDP peer: transactions, dialogs, bad input.

Each bad message must get the right answer (or a log line when no answer is
possible) and the endpoint must take the next good request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from ivr.sip.endpoint import SipEndpoint
from ivr.sip.incoming import IncomingInvite
from ivr.sip.transactions import Timers
from tests.sip_raw import RawPeer, header, invite, options, raw_peer, sdp, status_of

ANSWER_SDP = sdp(40000, "0 101")


class Fixture:
    def __init__(self, endpoint: SipEndpoint, peer: RawPeer) -> None:
        self.endpoint = endpoint
        self.peer = peer
        self.invites: list[IncomingInvite] = []
        self.mode = "answer"
        self.digits: list[tuple[str, str]] = []

    def on_invite(self, inv: IncomingInvite) -> None:
        self.invites.append(inv)
        if self.mode == "answer":
            dialog = inv.answer(ANSWER_SDP)
            dialog.on_digit = lambda d, src: self.digits.append((d, src))
        elif self.mode == "ring":
            inv.ringing()

    async def still_works(self) -> None:
        self.peer.send(options(self.peer.port, self.endpoint.port), self.endpoint.port)
        reply = await self.peer.expect()
        assert status_of(reply) == 200, reply
        assert self.endpoint.is_open


@pytest.fixture
async def sip(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Fixture]:
    caplog.set_level(logging.DEBUG)
    endpoint = SipEndpoint(
        host="127.0.0.1",
        port=0,
        public_host="127.0.0.1",
        user_agent="test",
        log=logging.getLogger("ivr.test.sip"),
        timers=Timers(t1=0.1, t2=0.4, t4=0.5),
    )
    await endpoint.start()
    peer = await raw_peer()
    fixture = Fixture(endpoint, peer)
    endpoint.on_invite = fixture.on_invite
    yield fixture
    peer.close()
    endpoint.close()


async def next_final(peer: RawPeer) -> str:
    while True:
        message = await peer.expect()
        if status_of(message) >= 200:
            return message


async def test_options_answered_with_allow(sip: Fixture) -> None:
    sip.peer.send(options(sip.peer.port, sip.endpoint.port), sip.endpoint.port)
    reply = await sip.peer.expect()
    assert status_of(reply) == 200
    assert "INFO" in (header(reply, "Allow") or "")


async def test_invite_answered_and_retransmission_absorbed(sip: Fixture) -> None:
    text, call_id, _ = invite(sip.peer.port, sip.endpoint.port)
    sip.peer.send(text, sip.endpoint.port)
    assert status_of(await sip.peer.expect()) == 100
    ok = await next_final(sip.peer)
    assert status_of(ok) == 200 and header(ok, "Call-ID") == call_id
    sip.peer.send(text, sip.endpoint.port)  # the same INVITE again (same branch)
    again = await next_final(sip.peer)
    assert status_of(again) == 200
    assert len(sip.invites) == 1, "a retransmitted INVITE must not start a second call"
    assert sip.endpoint.dialog_count == 1


async def test_the_answer_to_an_invite_allows_refer_and_info(sip: Fixture) -> None:
    """An operator's phone learns from the 200 OK that it may send keys (INFO) and
    transfer (REFER, taken as bringing a department in: ivr/consultation.py)."""
    text, _, _ = invite(sip.peer.port, sip.endpoint.port)
    sip.peer.send(text, sip.endpoint.port)
    ok = await next_final(sip.peer)
    assert status_of(ok) == 200
    allowed = {m.strip() for m in (header(ok, "Allow") or "").split(",")}
    assert {"INVITE", "ACK", "BYE", "CANCEL", "INFO", "REFER"} <= allowed, allowed


async def test_200_retransmitted_until_ack_then_bye_ends_dialog(sip: Fixture) -> None:
    text, call_id, _ = invite(sip.peer.port, sip.endpoint.port)
    sip.peer.send(text, sip.endpoint.port)
    ok = await next_final(sip.peer)
    again = await next_final(sip.peer)  # no ACK yet: the 200 comes again (timer T1)
    assert status_of(again) == 200
    to = header(ok, "To") or ""
    frm = header(ok, "From") or ""
    common = (
        f"Via: SIP/2.0/UDP 127.0.0.1:{sip.peer.port};branch=z9hG4bKack1\r\n"
        f"From: {frm}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nMax-Forwards: 70\r\n"
    )
    sip.peer.send(
        f"ACK sip:ivr@127.0.0.1 SIP/2.0\r\n{common}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        sip.endpoint.port,
    )
    await asyncio.sleep(0.05)
    while not sip.peer.received.empty():
        sip.peer.received.get_nowait()
    assert await sip.peer.nothing(0.5), "200 OK still retransmitted after the ACK"
    bye = (
        "BYE sip:ivr@127.0.0.1 SIP/2.0\r\n"
        + common.replace("z9hG4bKack1", "z9hG4bKbye1")
        + "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    sip.peer.send(bye, sip.endpoint.port)
    assert status_of(await sip.peer.expect()) == 200
    assert sip.endpoint.dialog_count == 0


async def test_info_dtmf_relay_and_dtmf(sip: Fixture) -> None:
    text, call_id, _ = invite(sip.peer.port, sip.endpoint.port)
    sip.peer.send(text, sip.endpoint.port)
    ok = await next_final(sip.peer)
    to, frm = header(ok, "To"), header(ok, "From")
    for n, (ctype, body) in enumerate(
        [
            ("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"),
            ("application/dtmf", "#"),
            ("text/plain", "hello"),
        ],
        start=2,
    ):
        sip.peer.send(
            f"INFO sip:ivr@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{sip.peer.port};branch=z9hG4bKinfo{n}\r\n"
            f"From: {frm}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {n} INFO\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n{body}",
            sip.endpoint.port,
        )
        reply = await next_final(sip.peer)
        while "INFO" not in (header(reply, "CSeq") or ""):
            reply = await next_final(sip.peer)
        assert status_of(reply) == (415 if ctype == "text/plain" else 200)
    assert sip.digits == [("5", "info"), ("#", "info")]


async def test_cancel_before_answer(sip: Fixture) -> None:
    sip.mode = "ring"
    text, _, _ = invite(sip.peer.port, sip.endpoint.port)
    sip.peer.send(text, sip.endpoint.port)
    assert status_of(await sip.peer.expect()) == 100
    assert status_of(await sip.peer.expect()) == 180
    cancel = (
        f"CANCEL sip:12345@127.0.0.1:{sip.endpoint.port} SIP/2.0\r\n"
        + "\r\n".join(
            line
            for line in text.split("\r\n\r\n")[0].split("\r\n")[1:]
            if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "Max-Forwards")
        )
        + "\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    )
    sip.peer.send(cancel, sip.endpoint.port)
    replies = {status_of(await sip.peer.expect()) for _ in range(2)}
    assert replies == {200, 487}
    assert sip.invites[0].cancelled.done()
    assert sip.endpoint.pending_invites == 0


async def test_bye_for_unknown_dialog_gets_481(sip: Fixture) -> None:
    sip.peer.send(
        f"BYE sip:ivr@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sip.peer.port};"
        "branch=z9hG4bKx1\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\n"
        "Call-ID: nope\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n",
        sip.endpoint.port,
    )
    assert status_of(await sip.peer.expect()) == 481


@pytest.mark.parametrize(
    ("drop", "cseq", "reason"),
    [
        (("Call-ID",), "1 INVITE", "Call-Id"),
        (("CSeq",), "1 INVITE", "Cseq"),
        ((), "one INVITE", "Malformed CSeq"),
        ((), "1 BYE", "does not match"),
        (("From",), "1 INVITE", "From"),
    ],
)
async def test_malformed_request_gets_400_naming_the_problem(
    sip: Fixture, drop: tuple[str, ...], cseq: str, reason: str
) -> None:
    text, _, _ = invite(sip.peer.port, sip.endpoint.port, drop=drop, cseq=cseq)
    sip.peer.send(text, sip.endpoint.port)
    reply = await sip.peer.expect()
    assert status_of(reply) == 400
    assert reason.lower() in reply.split("\r\n")[0].lower()
    assert not sip.invites
    await sip.still_works()


async def test_missing_via_answered_to_source(sip: Fixture) -> None:
    text, _, _ = invite(sip.peer.port, sip.endpoint.port, drop=("Via",))
    sip.peer.send(text, sip.endpoint.port)
    assert status_of(await sip.peer.expect()) == 400
    await sip.still_works()


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00\xff\x13\x37" * 50,
        b"INVITE sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0",
        b"SIP/2.0 abc OK\r\n\r\n",
        b"INVITE\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(400)) + b"\r\n",
    ],
    ids=["binary", "truncated", "bad-status", "no-uri", "oversized", "too-many-headers"],
)
async def test_junk_is_logged_and_endpoint_keeps_working(
    sip: Fixture, junk: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    sip.peer.send(junk, sip.endpoint.port)
    await asyncio.sleep(0.1)
    assert any("sip:" in r.getMessage() and r.levelno >= logging.WARNING for r in caplog.records)
    while not sip.peer.received.empty():  # a 400 is fine where one could be built
        assert status_of(sip.peer.received.get_nowait().decode()) == 400
    await sip.still_works()


async def test_via_port_out_of_range_does_not_close_socket(sip: Fixture) -> None:
    text, _, _ = invite(sip.peer.port, sip.endpoint.port, via_port=99999)
    sip.peer.send(text, sip.endpoint.port)
    # answered to the source address (RFC 3581), never to port 99999
    assert status_of(await next_final(sip.peer)) == 200
    await asyncio.sleep(0.3)
    while not sip.peer.received.empty():
        sip.peer.received.get_nowait()
    await sip.still_works()
    text, _, _ = invite(sip.peer.port, sip.endpoint.port)
    sip.peer.send(text, sip.endpoint.port)
    assert status_of(await next_final(sip.peer)) == 200


async def test_unparseable_sdp_gets_488(sip: Fixture) -> None:
    text, _, _ = invite(sip.peer.port, sip.endpoint.port, body="v=zero\r\nm=audio x RTP\r\n")
    sip.peer.send(text, sip.endpoint.port)
    reply = await next_final(sip.peer)
    assert status_of(reply) == 488
    assert "SDP" in (header(reply, "Warning") or "")
    await sip.still_works()


async def test_unknown_method_gets_405(sip: Fixture) -> None:
    sip.peer.send(
        f"PUBLISH sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sip.peer.port};"
        "branch=z9hG4bKp1\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\n"
        "Call-ID: p1\r\nCSeq: 1 PUBLISH\r\nContent-Length: 0\r\n\r\n",
        sip.endpoint.port,
    )
    reply = await sip.peer.expect()
    assert status_of(reply) == 405 and header(reply, "Allow")


async def test_rejected_invite_is_retransmitted_until_ack(sip: Fixture) -> None:
    sip.mode = "reject"
    sip.endpoint.on_invite = lambda inv: inv.reject(486)
    text, call_id, branch = invite(sip.peer.port, sip.endpoint.port)
    sip.peer.send(text, sip.endpoint.port)
    first = await next_final(sip.peer)
    assert status_of(first) == 486
    assert status_of(await next_final(sip.peer)) == 486  # retransmitted (timer G)
    to = header(first, "To")
    sip.peer.send(
        f"ACK sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sip.peer.port};"
        f"branch={branch}\r\nFrom: {header(first, 'From')}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
        "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        sip.endpoint.port,
    )
    await asyncio.sleep(0.05)
    while not sip.peer.received.empty():
        sip.peer.received.get_nowait()
    assert await sip.peer.nothing(0.6)
    assert sip.endpoint.pending_invites == 0
