"""SIP over TCP (RFC 3261 section 18) beside UDP: the endpoint against a raw
TCP peer (framing, keep-alives, the transaction timers of a reliable
transport, bad streams), then the IVR with sipp -t t1 and baresip over TCP as
callers and a sipp operator reached at a ;transport=tcp URI."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.sip.dialog import Dialog
from ivr.sip.endpoint import SipEndpoint
from ivr.sip.incoming import IncomingInvite
from ivr.sip.outgoing import Answered, Failed
from ivr.sip.transactions import Timers
from tests.audio_tools import best_match, pad, read_8k, write_rtp_pcap, write_wav
from tests.conftest import SHARED, StartHotline
from tests.peers import Baresip, SippUas, free_udp_port, run_sipp
from tests.sip_raw import header, invite, options, raw_peer, sdp, status_of
from tests.test_call_path import wait_records

DATA = Path(__file__).parent / "data"
CLIP = SHARED / "speech" / "aishell1_BAC009S0724W0121.wav"
ANSWER_SDP = sdp(40000, "0 101")


def free_tcp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpPeer:
    """One TCP connection to the endpoint, reading whole SIP messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> TcpPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @property
    def port(self) -> int:
        return int(self.writer.get_extra_info("sockname")[1])

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def message(self, timeout: float = 3.0) -> str:
        """The next SIP message (framed by its Content-Length)."""

        async def read() -> str:
            head = await self.reader.readuntil(b"\r\n\r\n")
            while head.startswith(b"\r\n"):  # a pong
                head = head[2:]
                if not head:
                    head = await self.reader.readuntil(b"\r\n\r\n")
            length = int(header(head.decode(), "Content-Length") or "0")
            body = await self.reader.readexactly(length)
            return (head + body).decode()

        return await asyncio.wait_for(read(), timeout)

    async def final(self, method: str = "", timeout: float = 3.0) -> str:
        while True:
            message = await self.message(timeout)
            if status_of(message) >= 200 and method in (header(message, "CSeq") or ""):
                return message

    async def nothing(self, wait: float) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(65536), wait)
        except TimeoutError:
            return True
        return not data

    async def closed_by_peer(self, timeout: float = 3.0) -> bytes:
        """Everything sent until the endpoint closed the connection (EOF)."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    def close(self) -> None:
        self.writer.close()


def over_tcp(text: str, port: int) -> str:
    """A message from sip_raw, as sent over TCP from ``port``."""
    return text.replace("SIP/2.0/UDP", "SIP/2.0/TCP").replace(
        f"<sip:13800138000@127.0.0.1:{port}>", f"<sip:13800138000@127.0.0.1:{port};transport=tcp>"
    )


def ack_for(ok: str, call_id: str, cseq: int = 1) -> str:
    return (
        f"ACK sip:ivr@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK{secrets.token_hex(6)}\r\n"
        f"From: {header(ok, 'From')}\r\nTo: {header(ok, 'To')}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: {cseq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )


class Fixture:
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        self.invites: list[IncomingInvite] = []
        self.dialogs: list[Dialog] = []
        self.digits: list[str] = []
        self.peers: list[TcpPeer] = []

    def on_invite(self, inv: IncomingInvite) -> None:
        self.invites.append(inv)
        dialog = inv.answer(ANSWER_SDP)
        dialog.on_digit = lambda digit, _source: self.digits.append(digit)
        self.dialogs.append(dialog)

    async def peer(self) -> TcpPeer:
        peer = await TcpPeer.connect(self.endpoint.port)
        self.peers.append(peer)
        return peer

    async def still_works(self) -> None:
        """OPTIONS answered over a new TCP connection and over UDP."""
        peer = await self.peer()
        await peer.send(over_tcp(options(peer.port, self.endpoint.port), peer.port))
        assert status_of(await peer.message()) == 200
        udp = await raw_peer()
        try:
            udp.send(options(udp.port, self.endpoint.port), self.endpoint.port)
            assert status_of(await udp.expect()) == 200
        finally:
            udp.close()
        assert self.endpoint.is_open


def make_endpoint(**kwargs: object) -> SipEndpoint:
    return SipEndpoint(
        host="127.0.0.1",
        port=0,
        public_host="127.0.0.1",
        user_agent="test",
        log=logging.getLogger("ivr.test.sip"),
        timers=Timers(t1=0.1, t2=0.4, t4=0.5),
        tcp=True,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def sip(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Fixture]:
    caplog.set_level(logging.DEBUG)
    endpoint = make_endpoint()
    await endpoint.start()
    fixture = Fixture(endpoint)
    endpoint.on_invite = fixture.on_invite
    yield fixture
    for peer in fixture.peers:
        peer.close()
    endpoint.close()


# --------------------------------------------------------------- the stream


async def test_split_pipelined_and_keepalive_stream_is_parsed(sip: Fixture) -> None:
    """Messages split over many reads, two in one write, CRLF keep-alives
    before and between them: each is answered once, in order, on this connection."""
    peer = await sip.peer()
    first = over_tcp(options(peer.port, sip.endpoint.port), peer.port).encode()
    second = over_tcp(options(peer.port, sip.endpoint.port), peer.port).encode()
    await peer.send(b"\r\n\r\n")  # an RFC 5626 ping: answered with one CRLF
    assert await asyncio.wait_for(peer.reader.readexactly(2), 3) == b"\r\n"
    for i in range(0, len(first), 7):  # 7 bytes at a time
        await peer.send(first[i : i + 7])
        await asyncio.sleep(0.002)
    await peer.send(b"\r\n" + second + first)  # pipelined, an empty line before
    replies = [await peer.message() for _ in range(3)]
    assert [status_of(r) for r in replies] == [200, 200, 200]
    call_ids = [header(r, "Call-ID") for r in replies]
    sent = [header(m.decode(), "Call-ID") for m in (first, second, first)]
    assert call_ids == sent
    assert all((header(r, "Via") or "").startswith("SIP/2.0/TCP") for r in replies)


async def test_a_call_over_tcp_dtmf_and_bye_on_one_connection(sip: Fixture) -> None:
    """INVITE, 200 (with our Contact ;transport=tcp), ACK, INFO key, BYE: every
    answer comes back over the connection the request came on."""
    peer = await sip.peer()
    text, call_id, _ = invite(peer.port, sip.endpoint.port)
    await peer.send(over_tcp(text, peer.port))
    ok = await peer.final("INVITE")
    assert status_of(ok) == 200
    assert (header(ok, "Contact") or "").endswith(";transport=tcp>")
    await peer.send(ack_for(ok, call_id))
    body = "Signal=7\r\nDuration=160\r\n"
    await peer.send(
        f"INFO sip:ivr@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:{peer.port};branch=z9hG4bKinfo{secrets.token_hex(4)}\r\n"
        f"From: {header(ok, 'From')}\r\nTo: {header(ok, 'To')}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 2 INFO\r\nContent-Type: application/dtmf-relay\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    assert status_of(await peer.final("INFO")) == 200
    assert sip.digits == ["7"]
    await peer.send(
        f"BYE sip:ivr@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:{peer.port};branch=z9hG4bKbye{secrets.token_hex(4)}\r\n"
        f"From: {header(ok, 'From')}\r\nTo: {header(ok, 'To')}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    assert status_of(await peer.final("BYE")) == 200
    assert sip.endpoint.dialog_count == 0


async def test_reliable_transport_timers(sip: Fixture) -> None:
    """Over TCP a non-2xx final is sent once (no timer G); a 2xx to INVITE is
    still sent again until the ACK (RFC 3261 13.3.1.4, whatever the transport)."""
    peer = await sip.peer()
    text, _, _ = invite(peer.port, sip.endpoint.port, body="v=0\r\nthis is not SDP\r\n")
    await peer.send(over_tcp(text, peer.port))
    refused = await peer.final("INVITE")
    assert status_of(refused) == 488
    assert await peer.nothing(0.6), "a 488 over TCP was retransmitted (T1 is 0.1 s here)"

    text, call_id, _ = invite(peer.port, sip.endpoint.port)
    await peer.send(over_tcp(text, peer.port))
    ok = await peer.final("INVITE")
    again = await peer.final("INVITE")
    assert status_of(ok) == status_of(again) == 200
    await peer.send(ack_for(ok, call_id))
    await asyncio.sleep(0.15)
    while True:  # what was already on its way before the ACK
        try:
            await peer.message(0.05)
        except TimeoutError:
            break
    assert await peer.nothing(0.8), "200 OK still sent again after the ACK"
    assert len(sip.invites) == 1 and sip.endpoint.dialog_count == 1


async def test_an_invite_too_large_for_udp_works_over_tcp(sip: Fixture) -> None:
    """20 KiB of INVITE: dropped over UDP (over 16 KiB), answered over TCP."""
    udp = await raw_peer()
    try:
        big = sdp(udp.port + 2) + "".join(f"a=x-note:{'n' * 90}{i}\r\n" for i in range(200))
        text, _, _ = invite(udp.port, sip.endpoint.port, body=big)
        assert len(text.encode()) > 20 * 1024
        udp.send(text, sip.endpoint.port)
        assert await udp.nothing(0.5), "UDP took a datagram over its 16 KiB limit"
    finally:
        udp.close()
    peer = await sip.peer()
    text, call_id, _ = invite(peer.port, sip.endpoint.port, body=big)
    await peer.send(over_tcp(text, peer.port))
    ok = await peer.final("INVITE")
    assert status_of(ok) == 200 and header(ok, "Call-ID") == call_id
    assert len(sip.invites) == 1


@pytest.mark.parametrize(
    ("stream", "answer", "logged"),
    [
        (b"", None, "no end of headers"),  # filled in below: 40 KiB of binary junk
        (
            b"INVITE sip:12345@127.0.0.1 SIP/2.0\r\n"
            b"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKa\r\n"
            b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: y\r\n"
            b"CSeq: 1 INVITE\r\nContent-Length: 99999999999\r\n\r\nv=0",
            513,
            "over the 65536-byte limit",
        ),
        (
            b"OPTIONS sip:12345@127.0.0.1 SIP/2.0\r\n"
            b"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKb\r\n"
            b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: x\r\n"
            b"CSeq: 1 OPTIONS\r\n\r\n",
            400,
            "no Content-Length header",
        ),
        (
            b"BYE sip:x SIP/2.0\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            None,
            "conflicting Content-Length",
        ),
        (b"SIP/2.0 200 OK\r\nl: -5\r\n\r\n", None, "malformed Content-Length"),
    ],
    ids=["binary-junk", "absurd-length", "no-length", "two-lengths", "negative-length"],
)
async def test_a_bad_stream_closes_only_its_connection(
    sip: Fixture,
    caplog: pytest.LogCaptureFixture,
    stream: bytes,
    answer: int | None,
    logged: str,
) -> None:
    bystander = await sip.peer()  # a connection in use before, and after
    text, call_id, _ = invite(bystander.port, sip.endpoint.port)
    await bystander.send(over_tcp(text, bystander.port))
    ok = await bystander.final("INVITE")
    await bystander.send(ack_for(ok, call_id))

    if not stream:
        noise = random.Random(13)
        stream = bytes(noise.choice(range(256)) for _ in range(40 * 1024)).replace(b"\n", b"_")
    bad = await sip.peer()
    await bad.send(stream)
    said = await bad.closed_by_peer()  # the endpoint hung up on it
    if answer is None:
        assert not said.strip()
    else:
        assert status_of(said.decode(errors="replace")) == answer
    assert any(logged in r.getMessage() and "closing TCP" in r.getMessage() for r in caplog.records)

    await bystander.send(over_tcp(options(bystander.port, sip.endpoint.port), bystander.port))
    assert status_of(await bystander.final("OPTIONS")) == 200
    assert sip.endpoint.dialog_count == 1
    await sip.still_works()


async def test_junk_in_a_framed_message_is_logged_and_the_connection_goes_on(
    sip: Fixture, caplog: pytest.LogCaptureFixture
) -> None:
    """A message whose length is right but whose content is not SIP: logged,
    skipped; the stream's next message is answered."""
    peer = await sip.peer()
    junk = "\u7535\u8bdd\x00\xff garbage".encode("utf-8", errors="replace")
    framed = b"\xff\xfe\x00 ### junk\r\nContent-Length: %d\r\n\r\n%s" % (len(junk), junk)
    await peer.send(framed + over_tcp(options(peer.port, sip.endpoint.port), peer.port).encode())
    assert status_of(await peer.message()) == 200
    assert sip.endpoint.bad_messages >= 1
    assert any("bad message over TCP" in r.getMessage() for r in caplog.records)


async def test_connection_cap_and_idle_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    endpoint = make_endpoint(tcp_max_connections=3, tcp_idle_timeout=0.5)
    await endpoint.start()
    fixture = Fixture(endpoint)
    endpoint.on_invite = fixture.on_invite
    try:
        peers = [await fixture.peer() for _ in range(3)]
        # one carries a call: it stays open however quiet
        text, call_id, _ = invite(peers[0].port, endpoint.port)
        await peers[0].send(over_tcp(text, peers[0].port))
        ok = await peers[0].final("INVITE")
        await peers[0].send(ack_for(ok, call_id))
        await asyncio.sleep(0.1)
        extra = await TcpPeer.connect(endpoint.port)
        assert await extra.closed_by_peer() == b"", "a 4th connection was let in"
        extra.close()
        assert any("tcp_max_connections" in r.getMessage() for r in caplog.records)
        for quiet in peers[1:]:  # the idle two are closed after 0.5 s
            assert await quiet.closed_by_peer(5.0) == b""
        assert any("idle for" in r.getMessage() for r in caplog.records)
        await asyncio.sleep(0.8)
        await peers[0].send(over_tcp(options(peers[0].port, endpoint.port), peers[0].port))
        assert status_of(await peers[0].final("OPTIONS")) == 200, "the call's connection closed"
        await fixture.still_works()  # room again for new connections
    finally:
        for peer in fixture.peers:
            peer.close()
        endpoint.close()


async def test_the_edge_guard_screens_tcp_too() -> None:
    """A source outside [sip] allow gets its 403 over the TCP connection its
    INVITE came on, and no call is offered."""
    from ivr.sip.edge_guard import EdgePolicy

    endpoint = make_endpoint(edge=EdgePolicy(allow=("192.0.2.0/24",)))
    await endpoint.start()
    fixture = Fixture(endpoint)
    endpoint.on_invite = fixture.on_invite
    try:
        peer = await fixture.peer()
        text, _, _ = invite(peer.port, endpoint.port)
        await peer.send(over_tcp(text, peer.port))
        refused = await peer.final("INVITE")
        assert status_of(refused) == 403
        assert not fixture.invites and endpoint.rejected["not_allowed"] == 1
    finally:
        for peer in fixture.peers:
            peer.close()
        endpoint.close()


# ----------------------------------------------------- requests we send over TCP


class TcpPhone:
    """A TCP listener standing for a phone or an operator's set."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[TcpPeer] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections.put_nowait(TcpPeer(reader, writer))

        self.server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def accept(self, timeout: float = 3.0) -> TcpPeer:
        return await asyncio.wait_for(self.connections.get(), timeout)

    def close(self) -> None:
        while not self.connections.empty():
            self.connections.get_nowait().close()
        if self.server is not None:
            self.server.close()


def reply(request: str, status: int, reason: str, extra: str = "", body: str = "") -> str:
    lines = [f"SIP/2.0 {status} {reason}"]
    for name in ("Via", "From", "Call-ID", "CSeq"):
        lines.append(f"{name}: {header(request, name)}")
    lines.append(f"To: {header(request, 'To')}{';tag=op1' if status > 100 else ''}")
    lines += [line for line in extra.split("\r\n") if line]
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


async def test_our_bye_goes_over_the_callers_connection_then_a_new_one(sip: Fixture) -> None:
    """In-dialog requests we send for a TCP call: over the INVITE's connection
    while it is open; once it has closed, over a new one to the Contact."""
    phone = TcpPhone()
    await phone.start()
    try:
        peer = await sip.peer()
        text, call_id, _ = invite(peer.port, sip.endpoint.port)
        text = over_tcp(text, peer.port).replace(
            f"Contact: <sip:13800138000@127.0.0.1:{peer.port};transport=tcp>",
            f"Contact: <sip:13800138000@127.0.0.1:{phone.port};transport=tcp>",
        )
        await peer.send(text)
        ok = await peer.final("INVITE")
        await peer.send(ack_for(ok, call_id))
        await asyncio.sleep(0.1)
        (dialog,) = sip.dialogs
        info = dialog.new_request(
            "INFO", body=b"Signal=1\r\n", content_type="application/dtmf-relay"
        )
        sip.endpoint.send_request(info, dialog.remote_addr)
        got = await peer.message()
        assert got.startswith("INFO ") and (header(got, "Via") or "").startswith("SIP/2.0/TCP")
        assert (header(got, "Contact") or "").endswith(";transport=tcp>")
        await peer.send(reply(got, 200, "OK"))
        peer.close()  # the caller's side of the connection goes away
        await asyncio.sleep(0.2)
        bye_task = asyncio.ensure_future(dialog.bye())
        redialled = await phone.accept()
        bye = await redialled.message()
        assert bye.startswith("BYE ") and header(bye, "Call-ID") == call_id
        await redialled.send(reply(bye, 200, "OK"))
        await asyncio.wait_for(bye_task, 3)
        assert sip.endpoint.dialog_count == 0
    finally:
        phone.close()


async def test_outgoing_invite_to_a_tcp_uri(sip: Fixture) -> None:
    """An INVITE to sip:...;transport=tcp goes over TCP with our Via TCP and
    Contact ;transport=tcp, is not retransmitted (no timer A), and its ACK and
    BYE use the same connection. A TCP URI where nothing listens fails at once
    with 503 rather than after timer B."""
    phone = TcpPhone()
    await phone.start()
    try:
        target = f"sip:operator@127.0.0.1:{phone.port};transport=tcp"
        outgoing = sip.endpoint.invite(
            target, ("127.0.0.1", phone.port), from_user="12345", sdp=ANSWER_SDP
        )
        connection = await phone.accept()
        got = await connection.message()
        assert got.startswith(f"INVITE {target} SIP/2.0")
        assert (header(got, "Via") or "").startswith("SIP/2.0/TCP")
        assert (header(got, "Contact") or "").endswith(";transport=tcp>")
        await connection.send(reply(got, 180, "Ringing"))
        await asyncio.sleep(0.7)  # T1 is 0.1 s: over UDP the INVITE would have come 3 times
        contact = f"Contact: <sip:operator@127.0.0.1:{phone.port};transport=tcp>"
        await connection.send(reply(got, 200, "OK", contact, sdp(40100)))
        result = await asyncio.wait_for(outgoing.result(), 3)
        assert isinstance(result, Answered)
        ack = await connection.message()
        assert ack.startswith("ACK "), f"the INVITE was sent again over TCP: {ack[:60]}"
        bye_task = asyncio.ensure_future(result.dialog.bye())
        bye = await connection.message()
        assert bye.startswith("BYE ") and (header(bye, "Via") or "").startswith("SIP/2.0/TCP")
        await connection.send(reply(bye, 200, "OK"))
        await asyncio.wait_for(bye_task, 3)
    finally:
        phone.close()

    nobody = free_tcp_port()
    lost = sip.endpoint.invite(
        f"sip:operator@127.0.0.1:{nobody};transport=tcp",
        ("127.0.0.1", nobody),
        from_user="12345",
        sdp=ANSWER_SDP,
    )
    failed = await asyncio.wait_for(lost.result(), 5)
    assert isinstance(failed, Failed) and failed.status == 503
    await sip.still_works()


# ------------------------------------------------------- the IVR with real peers


def sipp_tcp_args(port: int, *extra: str) -> list[str]:
    return [
        f"127.0.0.1:{port}",
        "-t",
        "t1",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_tcp_port()),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(free_udp_port(even=True)),
        "-m",
        "1",
        "-s",
        "12345",
        "-trace_err",
        "-timeout",
        "40",
        "-timeout_error",
        *extra,
    ]


@pytest.mark.peers
async def test_sipp_over_tcp_rfc2833_digit_arrives(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await start_hotline()
    result = await run_sipp(
        ["-sn", "uac_pcap", *sipp_tcp_args(hotline.endpoint.port)], tmp_path / "sipp"
    )
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    (record,) = await wait_records(hotline, 1)
    assert "1" in record.digits  # the RFC 2833 digit of dtmf_2833_1.pcap
    assert record.end_reason == "caller_hangup"
    assert hotline.endpoint.dialog_count == 0


LARGE_INFO_UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac over tcp: a large INVITE, a key by INFO, BYE">
  <send>
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:13912345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:13912345678@[local_ip]:[local_port];transport=tcp>
      Max-Forwards: 70
@PADDING@
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
    ]]>
  </send>
  <recv response="100" optional="true"></recv>
  <recv response="180" optional="true"></recv>
  <recv response="200" rtd="true"></recv>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:13912345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <pause milliseconds="3000"/>
  <send>
    <![CDATA[
      INFO sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:13912345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 INFO
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal=2
      Duration=160
    ]]>
  </send>
  <recv response="200"></recv>
  <pause milliseconds="1500"/>
  <send>
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:13912345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"></recv>
</scenario>
"""


@pytest.mark.peers
async def test_sipp_over_tcp_large_invite_and_info_key(
    start_hotline: StartHotline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 20 KiB INVITE (forty 500-byte headers: what UDP refuses) over TCP is
    answered; the key sent by SIP INFO is in the call record."""
    hotline = await start_hotline()
    padding = "\n".join(f"      X-Route-Note-{i}: {'r' * 480}" for i in range(40))
    scenario = tmp_path / "uac_tcp.xml"
    scenario.write_text(LARGE_INFO_UAC.replace("@PADDING@", padding))
    result = await run_sipp(
        ["-sf", str(scenario), *sipp_tcp_args(hotline.endpoint.port)], tmp_path / "sipp"
    )
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    (record,) = await wait_records(hotline, 1)
    assert record.digits == "2"
    assert record.end_reason == "caller_hangup"
    assert hotline.endpoint.bad_messages == 0
    assert hotline.endpoint.dialog_count == 0


class TcpBaresip(Baresip):
    """baresip whose account registers nothing and calls over TCP."""

    def write_config(self) -> None:
        super().write_config()
        accounts = self.workdir / "accounts"
        accounts.write_text(
            accounts.read_text().replace(">;regint=0", ";transport=tcp>;regint=0", 1)
        )


@pytest.mark.peers
async def test_baresip_over_tcp_hears_the_greeting(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await start_hotline()
    voice = write_wav(tmp_path / "caller.wav", pad(read_8k(CLIP, tmp_path), 1.0, 10.0))
    caller = TcpBaresip(tmp_path / "caller", free_udp_port(), play=voice)
    await caller.start()
    try:
        # the account's ;transport=tcp is added to the URI dialled
        await caller.dial(f"sip:12345@127.0.0.1:{hotline.endpoint.port}")
        await asyncio.sleep(5.0)
        connections = hotline.endpoint.tcp_connections
        await caller.hangup()
        (record,) = await wait_records(hotline, 1)
    finally:
        await caller.quit()
    assert connections == 1, "the call did not come over TCP"
    assert record.end_reason == "caller_hangup"
    import soundfile as sf

    (heard_file,) = caller.recordings("dec")
    heard, _ = sf.read(str(heard_file), dtype="int16")
    plan = hotline.plan
    assert plan is not None
    prompt = getattr(plan.nodes[plan.start], "prompt", None)
    assert isinstance(prompt, str)
    greeting = hotline.prompts.get(prompt).pcm
    score, _ = best_match(heard, greeting[: 8000 * 2])
    assert score > 0.8, f"the caller did not hear the greeting (match {score:.2f})"


class TcpSippUas(SippUas):
    """sipp's uas over TCP (-t t1): answers, echoes RTP, takes the BYE."""

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = ["-sn", self.scenario, "-t", "t1", "-i", "127.0.0.1", "-p", str(self.port)]
        args += ["-mi", "127.0.0.1", "-mp", str(self.media_port), "-rtp_echo", "-nostdin"]
        args += ["-trace_err", "-trace_msg"] if self.trace else ["-trace_err"]
        self.proc = await asyncio.create_subprocess_exec(
            "sipp",
            *args,
            cwd=self.workdir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(0.3)


@pytest.mark.peers
async def test_operator_at_a_tcp_uri_is_rung_over_tcp(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """Key 0 puts the caller (over UDP) through to an operator whose URI says
    ;transport=tcp: sipp answers over TCP, and the operator's leg is hung up
    over TCP when the caller leaves."""
    operator = TcpSippUas(
        tmp_path / "operator", free_tcp_port(), free_udp_port(even=True), trace=True
    )
    operator_uri = f"{operator.uri};transport=tcp"
    await operator.start()
    try:
        hotline = await start_hotline([operator_uri])
        speech = write_rtp_pcap(
            tmp_path / "speech.pcap", pad(read_8k(CLIP, tmp_path), 0.5, 0.5), "PCMU", 0
        )
        scenario = (DATA / "sipp" / "uac_pcmu_speech_digit.xml").read_text()
        scenario = (
            scenario.replace("@SPEECH@", str(speech))
            .replace("@SPEECH_MS@", "5500")
            .replace("@DIGIT@", "pcap/dtmf_2833_0.pcap")
            .replace("@AFTER_MS@", "12000")
        )
        (tmp_path / "uac.xml").write_text(scenario)
        result = await run_sipp(
            [
                "-sf",
                str(tmp_path / "uac.xml"),
                f"127.0.0.1:{hotline.endpoint.port}",
                "-i",
                "127.0.0.1",
                "-p",
                str(free_udp_port()),
                "-mi",
                "127.0.0.1",
                "-mp",
                str(free_udp_port(even=True)),
                "-m",
                "1",
                "-s",
                "12345",
                "-trace_err",
                "-timeout",
                "40",
                "-timeout_error",
            ],
            tmp_path / "sipp",
        )
        assert result.returncode == 0, result.stderr + result.stdout[-2000:]
        (record,) = await wait_records(hotline, 1)
        assert record.outcome == "bridged" and record.operator == operator_uri
        assert record.end_reason == "caller_hangup"
        assert hotline.endpoint.dialog_count == 0, "the operator leg was not hung up"
    finally:
        await operator.stop()
    seen = operator.messages()
    assert "INVITE sip:operator@" in seen and "Via: SIP/2.0/TCP" in seen
    assert "BYE sip:" in seen


async def test_our_trial_caller_over_tcp(start_hotline: StartHotline) -> None:
    """`ivr call 'sip:12345@...;transport=tcp'`: the call and its INFO keys go over TCP."""
    import dataclasses

    from ivr.trial_call import place_call
    from tests.conftest import trial

    hotline = await start_hotline()
    port = hotline.endpoint.port
    options = dataclasses.replace(
        trial(port, digits="3", dtmf_mode="info", digit_delay=1.5, duration=4.0),
        target=f"sip:12345@127.0.0.1:{port};transport=tcp",
    )
    calling = asyncio.ensure_future(place_call(options, logging.getLogger("ivr.test.trial")))
    await asyncio.sleep(1.0)
    connections = hotline.endpoint.tcp_connections
    result = await calling
    assert result.status == 200 and result.digits_sent == "3"
    assert connections == 1, "the trial call did not come over TCP"
    (record,) = await wait_records(hotline, 1)
    assert record.digits == "3"


async def test_a_taken_tcp_port_stops_the_start_unless_tcp_is_off(
    tmp_path: Path, prompt_cache: Path
) -> None:
    """Another program listening on the SIP port over TCP: the start stops,
    naming SIP (TCP), the address and the keys; with tcp = false it starts."""
    import re
    import socket

    from ivr.config import load_settings
    from ivr.server import Hotline
    from ivr.startup import StartupError
    from tests.conftest import write_config

    log = logging.getLogger("ivr.test.start")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = int(taken.getsockname()[1])
        for tcp in (True, False):
            config = write_config(
                tmp_path,
                operators=["sip:op@127.0.0.1:5999"],
                prompt_cache=prompt_cache,
                sip_extra=f"tcp = {str(tcp).lower()}",
            )
            text = re.sub(r"(?m)^port = \d+$", f"port = {port}", config.read_text(), count=1)
            config.write_text(text)
            hotline = Hotline(load_settings(config), log)
            try:
                if tcp:
                    with pytest.raises(StartupError) as refused:
                        await hotline.start()
                    message = str(refused.value)
                    assert f"SIP (TCP) on 127.0.0.1:{port}" in message
                    assert "already in use" in message and "tcp = false" in message
                else:
                    await hotline.start()
                    assert hotline.endpoint.is_open and hotline.endpoint.port == port
            finally:
                await hotline.stop(drain_timeout=0.5)
