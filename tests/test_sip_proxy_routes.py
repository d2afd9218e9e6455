"""Calls through a record-routing proxy (Kamailio in front of the nodes), played by
raw UDP peers: the 200 OK carries the Record-Route back, the IVR's own in-dialog
requests (BYE) go to the proxy with the route set, and the same for the calls the
IVR places. And a node that stops taking calls answers OPTIONS with 503."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator

import pytest

from ivr.sip.dialog import Dialog
from ivr.sip.endpoint import SipEndpoint
from ivr.sip.incoming import IncomingInvite
from ivr.sip.outgoing import Answered
from ivr.sip.transactions import Timers
from tests.sip_raw import RawPeer, header, options, raw_peer, sdp, status_of

LOG = logging.getLogger("ivr.test.proxy")


def headers_named(message: str, name: str) -> list[str]:
    found = []
    for line in message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            found.extend(part.strip() for part in value.split(","))
    return found


def request_line(message: str) -> str:
    return message.split("\r\n", 1)[0]


class Proxied:
    """An endpoint, a caller and a proxy between them (both raw peers)."""

    def __init__(self, endpoint: SipEndpoint, proxy: RawPeer, caller: RawPeer) -> None:
        self.endpoint = endpoint
        self.proxy = proxy
        self.caller = caller
        self.dialogs: list[Dialog] = []

    def on_invite(self, invite: IncomingInvite) -> None:
        self.dialogs.append(invite.answer(sdp(40000, "0 101")))

    def proxied_invite(self, record_route: str) -> tuple[str, str]:
        """The INVITE as the proxy forwards it: its Via on top, its Record-Route."""
        call_id = secrets.token_hex(8)
        body = sdp(self.caller.port + 2)
        lines = [
            f"INVITE sip:12345@127.0.0.1:{self.endpoint.port} SIP/2.0",
            f"Record-Route: {record_route}",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.proxy.port};branch=z9hG4bKpx{call_id}",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.caller.port};branch=z9hG4bKuac{call_id};rport",
            "Max-Forwards: 69",
            f"From: <sip:13800138000@127.0.0.1:{self.caller.port}>;tag=caller1",
            f"To: <sip:12345@127.0.0.1:{self.proxy.port}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 INVITE",
            f"Contact: <sip:13800138000@127.0.0.1:{self.caller.port}>",
            "Content-Type: application/sdp",
            f"Content-Length: {len(body.encode())}",
        ]
        return "\r\n".join(lines) + "\r\n\r\n" + body, call_id


@pytest.fixture
async def proxied() -> AsyncIterator[Proxied]:
    endpoint = SipEndpoint(
        host="127.0.0.1",
        port=0,
        public_host="127.0.0.1",
        user_agent="test",
        log=LOG,
        timers=Timers(t1=0.1, t2=0.4, t4=0.5),
    )
    await endpoint.start()
    proxy = await raw_peer()
    caller = await raw_peer()
    parts = Proxied(endpoint, proxy, caller)
    endpoint.on_invite = parts.on_invite
    yield parts
    proxy.close()
    caller.close()
    endpoint.close()


async def final_of(peer: RawPeer) -> str:
    while True:
        message = await peer.expect()
        if status_of(message) >= 200:
            return message


async def request_to(peer: RawPeer, method: str) -> str:
    while True:
        message = await peer.expect()
        if request_line(message).startswith(method + " "):
            return message


async def test_answer_carries_record_route_and_bye_goes_through_the_proxy(
    proxied: Proxied,
) -> None:
    route = f"<sip:127.0.0.1:{proxied.proxy.port};lr;ftag=caller1>"
    text, call_id = proxied.proxied_invite(route)
    proxied.proxy.send(text, proxied.endpoint.port)
    ok = await final_of(proxied.proxy)
    assert status_of(ok) == 200
    assert headers_named(ok, "Record-Route") == [route], ok
    assert len(headers_named(ok, "Via")) == 2  # the proxy's and the caller's, in order
    # the ACK comes through the proxy, as the caller's route set says
    proxied.proxy.send(
        f"ACK sip:ivr@127.0.0.1:{proxied.endpoint.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{proxied.proxy.port};branch=z9hG4bKpxack\r\n"
        f"From: {header(ok, 'From')}\r\nTo: {header(ok, 'To')}\r\nCall-ID: {call_id}\r\n"
        "CSeq: 1 ACK\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n",
        proxied.endpoint.port,
    )
    (dialog,) = proxied.dialogs
    await asyncio.sleep(0.05)
    hangup = asyncio.ensure_future(dialog.bye())
    bye = await request_to(proxied.proxy, "BYE")
    # loose routing: the Request-URI is the caller's Contact, the Route names the proxy
    assert request_line(bye) == f"BYE sip:13800138000@127.0.0.1:{proxied.caller.port} SIP/2.0"
    assert headers_named(bye, "Route") == [route]
    assert await proxied.caller.nothing(0.2), "the BYE went around the proxy"
    proxied.proxy.send(
        "SIP/2.0 200 OK\r\n"
        + "".join(f"Via: {v}\r\n" for v in headers_named(bye, "Via"))
        + f"From: {header(bye, 'From')}\r\nTo: {header(bye, 'To')}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {header(bye, 'CSeq')}\r\nContent-Length: 0\r\n\r\n",
        proxied.endpoint.port,
    )
    await asyncio.wait_for(hangup, 2.0)


async def test_strict_router_gets_the_request_uri(proxied: Proxied) -> None:
    route = f"<sip:127.0.0.1:{proxied.proxy.port}>"  # no ;lr: an RFC 2543 proxy
    text, _ = proxied.proxied_invite(route)
    proxied.proxy.send(text, proxied.endpoint.port)
    assert status_of(await final_of(proxied.proxy)) == 200
    (dialog,) = proxied.dialogs
    hangup = asyncio.ensure_future(dialog.bye())
    bye = await request_to(proxied.proxy, "BYE")
    assert request_line(bye) == f"BYE sip:127.0.0.1:{proxied.proxy.port} SIP/2.0"
    assert headers_named(bye, "Route") == [f"<sip:13800138000@127.0.0.1:{proxied.caller.port}>"]
    hangup.cancel()


async def test_outgoing_call_follows_the_reversed_record_route(proxied: Proxied) -> None:
    """The IVR calls out (an operator, a callback) through two record-routing
    proxies: the ACK and the BYE go to the nearest one, with both routes in order."""
    near = f"<sip:127.0.0.1:{proxied.proxy.port};lr>"
    far = "<sip:127.0.0.9:5099;lr>"
    target = f"sip:operator@127.0.0.1:{proxied.proxy.port}"
    outgoing = proxied.endpoint.invite(
        target, ("127.0.0.1", proxied.proxy.port), from_user="12345", sdp=sdp(40000)
    )
    request = await request_to(proxied.proxy, "INVITE")
    body = sdp(41000)
    proxied.proxy.send(
        "SIP/2.0 200 OK\r\n"
        + f"Via: {header(request, 'Via')}\r\n"
        + f"Record-Route: {far}\r\nRecord-Route: {near}\r\n"
        + f"From: {header(request, 'From')}\r\nTo: {header(request, 'To')};tag=op1\r\n"
        f"Call-ID: {header(request, 'Call-ID')}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:operator@127.0.0.1:{proxied.caller.port}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}",
        proxied.endpoint.port,
    )
    result = await outgoing.result()
    assert isinstance(result, Answered)
    ack = await request_to(proxied.proxy, "ACK")
    assert request_line(ack) == f"ACK sip:operator@127.0.0.1:{proxied.caller.port} SIP/2.0"
    assert headers_named(ack, "Route") == [near, far]
    hangup = asyncio.ensure_future(result.dialog.bye())
    bye = await request_to(proxied.proxy, "BYE")
    assert headers_named(bye, "Route") == [near, far]
    assert await proxied.caller.nothing(0.2)
    hangup.cancel()


async def test_options_answered_503_when_not_accepting(proxied: Proxied) -> None:
    peer = proxied.proxy
    peer.send(options(peer.port, proxied.endpoint.port), proxied.endpoint.port)
    assert status_of(await peer.expect()) == 200
    proxied.endpoint.accepting = False
    proxied.endpoint.refuse_reason = "Draining"
    peer.send(options(peer.port, proxied.endpoint.port), proxied.endpoint.port)
    reply = await peer.expect()
    assert status_of(reply) == 503 and "Draining" in request_line(reply)
    assert header(reply, "Retry-After") == "5"
