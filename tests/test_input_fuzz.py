"""Fuzz of the hotline's other inputs (issue 13 item 4): garbage RTP to a
call's media port during a real call, and malformed requests to every route of
the web console and API.

RTP: a raw caller (tests/sip_raw.py's INVITE, its own RTP socket) streams
G.711 and, from the same address and port (so the packets pass the latching
and reach the parser), thousands of bad packets from a fixed seed: wrong
versions, short headers, wrong payload types, absurd CSRC counts, header
extensions and padding running past the end, huge sequence and timestamp
jumps, foreign SSRCs, bad telephone-events, random bytes. The call goes on:
the caller keeps hearing the greeting, and the key pressed afterwards arrives.

Web: every route the server has (read from its router), with odd path
parameters, odd methods, broken JSON, JSON of the wrong types, deep nesting,
oversized and binary bodies, bad cookies and CSRF tokens, long URLs, path
traversal and unicode, plus malformed HTTP on a raw socket. Every answer is
below 500 (a 4xx says what is wrong), nothing is logged as an unhandled
error, the server keeps serving, and the stored tickets are as they were.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.http_exceptions import HttpProcessingError

from ivr.server import Hotline
from tests.conftest import StartHotline
from tests.sip_raw import header, invite, raw_peer, sdp, status_of
from tests.test_sip_fuzz import ack_and_bye, crashes, final_answer
from tests.web_client import hotline_client

SEED = 20261205
PCMU_SILENCE = b"\xff" * 160

# -- RTP ----------------------------------------------------------------------


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, ts, ssrc) + payload


def bad_rtp(rng: random.Random, seq: int, ts: int, ssrc: int) -> bytes:
    """One malformed or unexpected packet for a PCMU/101 stream."""
    kind = rng.randrange(14)
    payload = rng.randbytes(160)
    if kind == 0:  # version 0, 1 or 3
        return bytes([rng.choice((0x00, 0x40, 0xC0))]) + rtp(0, seq, ts, ssrc, payload)[1:]
    if kind == 1:  # shorter than a header
        return rng.randbytes(rng.randrange(12))
    if kind == 2:  # a payload type the call did not agree on (RTCP's among them)
        return rtp(rng.choice((8, 9, 13, 18, 72, 76, 96, 100, 127)), seq, ts, ssrc, payload)
    if kind == 3:  # 15 CSRCs announced, none there
        return bytes([0x8F]) + rtp(0, seq, ts, ssrc, b"")[1:]
    if kind == 4:  # a header extension whose length runs past the end
        ext = struct.pack("!HH", 0xBEDE, rng.choice((1, 200, 0xFFFF)))
        return bytes([0x90]) + rtp(0, seq, ts, ssrc, ext)[1:]
    if kind == 5:  # padding longer than the payload
        return bytes([0xA0]) + rtp(0, seq, ts, ssrc, payload[:-1] + b"\xff")[1:]
    if kind == 6:  # a huge sequence and timestamp jump
        jump = rng.randrange(1000, 65000)
        return rtp(0, (seq + jump) & 0xFFFF, (ts + jump * 160) & 0xFFFFFFFF, ssrc, PCMU_SILENCE)
    if kind == 7:  # an old sequence number (replayed or very late)
        return rtp(0, (seq - rng.randrange(1, 30000)) & 0xFFFF, ts, ssrc, PCMU_SILENCE)
    if kind == 8:  # another SSRC
        return rtp(0, rng.randrange(65536), rng.randrange(1 << 32), rng.randrange(1 << 32), payload)
    if kind == 9:  # telephone-events gone wrong: short, unknown event, zero duration
        event = rng.choice((b"", b"\x01", b"\x10\x0a\x00\xa0", b"\xff\x8a\x00\x00", b"\x05\x00"))
        return rtp(101, seq, ts, ssrc, event)
    if kind == 10:  # no audio, or far too much
        return rtp(0, seq, ts, ssrc, rng.choice((b"", rng.randbytes(1500), rng.randbytes(9000))))
    if kind == 11:  # a valid header on random bytes of any size
        return rtp(0, seq, ts, ssrc, rng.randbytes(rng.randrange(1, 400)))
    if kind == 12:  # the marker bit on every packet, timestamps going backwards
        return rtp(0, seq, (ts - rng.randrange(1, 1 << 20)) & 0xFFFFFFFF, ssrc, payload, True)
    return rng.randbytes(rng.randrange(0, 1500))  # random bytes


class RtpCaller(asyncio.DatagramProtocol):
    """The caller's RTP socket: counts what the IVR sends (and how much of it
    is not silence), sends audio, keys and garbage from one address."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.heard = 0
        self.heard_sound = 0  # frames that were not PCMU silence
        self.seq = 1000
        self.ts = 160_000
        self.ssrc = 0x12345678

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = int(transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > 12 and data[1] & 0x7F == 0:
            self.heard += 1
            if len(set(data[12:])) > 4:
                self.heard_sound += 1

    def error_received(self, exc: Exception) -> None:
        pass

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    def audio(self, addr: tuple[str, int]) -> None:
        self.send(rtp(0, self.seq, self.ts, self.ssrc, PCMU_SILENCE), addr)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF

    def key(self, digit: int, addr: tuple[str, int]) -> None:
        """An RFC 4733 event (payload type 101): three packets and three ends."""
        start = self.ts
        for n in range(1, 4):
            self.send(
                rtp(101, self.seq, start, self.ssrc, struct.pack("!BBH", digit, 10, n * 160)), addr
            )
            self.seq = (self.seq + 1) & 0xFFFF
        for _ in range(3):
            end = struct.pack("!BBH", digit, 0x80 | 10, 480)
            self.send(rtp(101, self.seq, start, self.ssrc, end), addr)
            self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 640) & 0xFFFFFFFF


def media_port(answer: str) -> int:
    for line in answer.split("\r\n"):
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise AssertionError(f"no m=audio in {answer!r}")


async def test_garbage_rtp_during_a_call_changes_nothing(
    start_hotline: StartHotline, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    hotline = await start_hotline()
    port = hotline.endpoint.port
    loop = asyncio.get_running_loop()
    _, media = await loop.create_datagram_endpoint(RtpCaller, local_addr=("127.0.0.1", 0))
    signalling = await raw_peer()
    rng = random.Random(SEED)
    try:
        text, call_id, _ = invite(signalling.port, port, body=sdp(media.port, "0 101"))
        signalling.send(text, port)
        ok = await final_answer(signalling)
        assert status_of(ok) == 200, ok
        to, frm = header(ok, "To"), header(ok, "From")
        ack = (
            f"ACK sip:ivr@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{signalling.port};"
            f"branch=z9hG4bKrtpack\r\nFrom: {frm}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            "CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        signalling.send(ack, port)
        ivr = ("127.0.0.1", media_port(ok))
        for _ in range(10):  # 200 ms of audio: the stream latches to our socket
            media.audio(ivr)
            await asyncio.sleep(0.02)
        garbage = 0
        heard_before = media.heard
        for _ in range(150):  # 3 s: each 20 ms a frame of audio and 20 bad packets
            media.audio(ivr)
            for _ in range(20):
                media.send(bad_rtp(rng, media.seq, media.ts, media.ssrc), ivr)
                garbage += 1
            await asyncio.sleep(0.02)
        heard_during = media.heard - heard_before
        assert garbage == 3000
        (call,) = hotline.calls.values()
        assert call.stream.garbage > 500, f"only {call.stream.garbage} packets judged bad"
        assert heard_during > 100, f"the IVR sent {heard_during} packets in the 3 s of garbage"
        sound_before = media.heard_sound
        for _ in range(15):
            media.audio(ivr)
            await asyncio.sleep(0.02)
        media.key(1, ivr)
        for _ in range(40):
            media.audio(ivr)
            await asyncio.sleep(0.02)
        assert media.heard_sound > sound_before, "the caller heard no prompt after the garbage"
        ack_and_bye(signalling, port, ok)
        deadline = loop.time() + 10.0
        while hotline.calls or hotline.ports.in_use:
            assert loop.time() < deadline, "the call did not end"
            await asyncio.sleep(0.1)
    finally:
        signalling.close()
        if media.transport is not None:
            media.transport.close()
    assert hotline.records is not None
    record = await hotline.records.get(call_id)
    assert record is not None and record.digits == "1", record
    assert not crashes(caplog.records), crashes(caplog.records)[:5]


# -- web ----------------------------------------------------------------------

ODD_PARAMS = (
    "0",
    "-1",
    "99999999999999999999999",
    "1.5",
    "abc",
    "%00",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "电话",
    "😀",
    "a" * 3000,
    "%ff%fe",
    "1%20OR%201=1",
)
ODD_BODIES: tuple[tuple[str, bytes, str], ...] = (
    ("broken JSON", b'{"status": "closed", ', "application/json"),
    ("empty", b"", "application/json"),
    ("a list", b"[1, 2, 3]", "application/json"),
    ("a string", b'"closed"', "application/json"),
    ("a number", b"12345", "application/json"),
    ("null", b"null", "application/json"),
    ("nested deep", b"[" * 100_000 + b"]" * 100_000, "application/json"),
    ("object deep", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "application/json"),
    (
        "wrong types",
        b'{"status": 5, "fields": "x", "ready": "yes", "source": 7, "of": []}',
        "application/json",
    ),
    (
        "nested types",
        b'{"fields": {"name": {"x": 1}}, "reason": {"a": 1}, "note": [1]}',
        "application/json",
    ),
    ("huge number", b'{"of": 1e999999, "ready": 1e400}', "application/json"),
    ("NaN", b'{"of": NaN, "status": Infinity}', "application/json"),
    ("not UTF-8", b'{"reason": "\xff\xfe\xfa"}', "application/json"),
    (
        "unicode",
        '{"fields": {"name": "\u202e\ud7ff电话\u0000"}, "status": "闭"}'.encode(),
        "application/json",
    ),
    ("binary", bytes(range(256)) * 8, "application/octet-stream"),
    ("form", b"status=closed&fields=x", "application/x-www-form-urlencoded"),
    (
        "multipart junk",
        b"--x\r\nContent-Disposition: form-data\r\n\r\n--",
        "multipart/form-data; boundary=x",
    ),
    ("wav junk", b"RIFF\xff\xff\xff\xffWAVEfmt " + b"\x00" * 40, "audio/wav"),
    ("oversized", b'{"reason": "' + b"x" * (3 * 1024 * 1024) + b'"}', "application/json"),
)
ODD_METHODS = ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FOO")
SKIPPED = {"/api/events", "/api/logout"}  # a stream that never ends; the log-out (done last)


@dataclass
class WebFuzz:
    base: str
    answers: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    unclear: list[str] = field(default_factory=list)
    sent: int = 0

    async def send(
        self, client: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
    ) -> None:
        what = f"{method} {path[:120]} {kwargs.get('headers', '')}"[:300]
        try:
            async with client.request(
                method, self.base + path, allow_redirects=False, **kwargs
            ) as response:
                body = await response.read()
                status = response.status
        except aiohttp.ClientResponseError as exc:  # a status line the client refused
            status, body = exc.status, b"?"
        self.sent += 1
        self.answers[status] = self.answers.get(status, 0) + 1
        if status >= 500 and not (status == 503 and b'"error"' in body):
            # (a 503 that says what is not running, e.g. follow-ups turned off, is an answer)
            self.server_errors.append(f"{status} to {what}: {body[:200]!r}")
        elif status >= 400 and not body.strip() and path.startswith("/api/"):
            # (the API's answers are read by the console's pages: each says what is wrong)
            self.unclear.append(f"{status} without a word to {what}")


def fill(path: str, value: str) -> str:
    parts = []
    for part in path.split("/"):
        parts.append(value if part.startswith("{") else part)
    return "/".join(parts)


def routes(hotline: Hotline) -> list[tuple[str, str]]:
    """(method, path pattern) of every route the web server has."""
    found = []
    for route in hotline.api.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        pattern = info.get("formatter") or info.get("path") or info.get("prefix") or ""
        if route.method != "HEAD" and pattern and pattern not in SKIPPED:
            found.append((route.method, pattern))
    return sorted(set(found))


async def tickets_now(hotline: Hotline, ids: list[int]) -> list[Any]:
    assert hotline.tickets is not None
    found = []
    for ticket_id in ids:
        ticket = await hotline.tickets.get(ticket_id)
        assert ticket is not None
        history = await hotline.tickets.history(ticket_id)
        found.append((ticket.to_json(), len(history)))
    return found


@pytest.fixture
async def web_hotline(start_hotline: StartHotline) -> AsyncIterator[tuple[Hotline, list[int]]]:
    hotline = await start_hotline(operators=["sip:op1@127.0.0.1:9"])
    assert hotline.tickets is not None
    ids = []
    for n, number in enumerate(("13800138000", "13900139000")):
        ticket = await hotline.tickets.create(f"call-{n}", number)
        await hotline.tickets.edit(ticket.id, {"name": "张三", "address": "朝阳路1号"}, who="t")
        ids.append(ticket.id)
    yield hotline, ids


async def test_malformed_web_requests_get_4xx_and_change_nothing(
    web_hotline: tuple[Hotline, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    hotline, ids = web_hotline
    before = await tickets_now(hotline, ids)
    fuzz = WebFuzz(f"http://127.0.0.1:{hotline.api.port}")
    admin = await hotline_client(hotline, "admin")
    anonymous = aiohttp.ClientSession()
    table = routes(hotline)
    assert len(table) > 30, table
    try:
        for method, pattern in table:
            paths = [fill(pattern, v) for v in ODD_PARAMS] if "{" in pattern else [pattern]
            for path in paths:
                await fuzz.send(admin, method, path)
                await fuzz.send(anonymous, method, path)
            for odd in ODD_METHODS:
                await fuzz.send(admin, odd, paths[0])
            if method == "POST":
                for _, body, kind in ODD_BODIES:
                    for path in paths[:2]:
                        await fuzz.send(
                            admin, "POST", path, data=body, headers={"Content-Type": kind}
                        )
            # the session's cookie and CSRF token gone wrong
            for cookie in ("", "x", "电话", "a" * 5000, "ivr_session=1; ivr_session=2"):
                async with aiohttp.ClientSession(cookies={"ivr_session": cookie}) as odd_client:
                    await fuzz.send(odd_client, method, paths[0])
            for token in ("", "wrong", "\u00e9\u00e9", "x" * 10_000):
                await fuzz.send(admin, method, paths[0], headers={"X-CSRF-Token": token})
            # query strings: negative, absurd, repeated, unicode
            for query in (
                "?limit=-1",
                "?limit=abc&limit=5",
                "?q=%00%ff",
                "?since=9999-99-99",
                "?q=" + "电" * 2000,
            ):
                await fuzz.send(admin, "GET" if method == "GET" else method, paths[0] + query)
        for path in (
            "/static/../../../../etc/passwd",
            "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/static/..%2f..%2fivr%2fserver.py",
            "/static/" + "a/" * 2000,
            "/" + "x" * 20_000,
            "/api/tickets?" + "a=1&" * 5000,
            "/api/" + "電" * 3000,
            "//api//tickets",
            "/api/tickets/1/../../../etc/passwd",
        ):
            await fuzz.send(admin, "GET", path)
    finally:
        await anonymous.close()
    raw = await raw_http(fuzz.base)
    # the server keeps serving: a new log-in works, the old session too
    fresh = await hotline_client(hotline, "operator", name="after-the-fuzz")
    try:
        async with fresh.get(fuzz.base + "/api/tickets/" + str(ids[0])) as response:
            assert response.status == 200
        async with admin.get(fuzz.base + "/api/stats") as response:
            assert response.status == 200
    finally:
        await fresh.close()
        await admin.close()
    assert fuzz.sent > 1000
    assert not fuzz.server_errors, "\n".join(fuzz.server_errors)
    assert not fuzz.unclear, fuzz.unclear[:10]
    assert raw.count(500) == 0, raw
    assert await tickets_now(hotline, ids) == before, "the fuzz changed a ticket"
    handled = [r for r in caplog.records if not bad_http(r)]  # aiohttp's 400s to junk HTTP
    assert not crashes(handled), crashes(handled)[:5]


def bad_http(record: logging.LogRecord) -> bool:
    """aiohttp's own log line for HTTP it could not parse (it answered 400)."""
    return (
        record.name == "aiohttp.server"
        and record.exc_info is not None
        and isinstance(record.exc_info[1], HttpProcessingError)
    )


async def raw_http(base: str) -> list[int]:
    """Malformed HTTP on a raw connection; the status of each answer (0: none)."""
    host, port = base.removeprefix("http://").split(":")
    requests = (
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999\r\n\r\n{}",
        b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n{}",
        b"POST /api/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /api/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100),  # a TLS hello
        b"GET\r\n\r\n",
        b"\xff\xfe\xfd GET / HTTP/1.1\r\n\r\n",
        "GET /电话 HTTP/1.1\r\nHost: 电话\r\n\r\n".encode(),
        b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"ivr_session=" + b"\x00" * 100 + b"\r\n\r\n",
    )
    statuses = []
    for request in requests:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(request)
            line = await asyncio.wait_for(reader.readline(), 5.0)
        except (ConnectionError, TimeoutError):
            line = b""
        finally:
            writer.close()
        parts = line.split()
        statuses.append(int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0)
    return statuses


@pytest.mark.parametrize(
    "path",
    [
        "/api/login",
        "/api/admin/plans/validate",
        "/api/admin/audit/unlock",
        "/api/console/availability",
        "/api/callbacks/1/cancel",
    ],
)
async def test_json_nested_too_deep_is_400(
    web_hotline: tuple[Hotline, list[int]], caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """JSON nested 5,000 deep (10 KB) made json raise RecursionError, which no
    handler caught: 500 and a traceback; now 400 saying what the body must be."""
    hotline, _ = web_hotline
    admin = await hotline_client(hotline, "admin")
    base = f"http://127.0.0.1:{hotline.api.port}"
    try:
        for body in (b"[" * 5000 + b"]" * 5000, b'{"a":' * 5000 + b"1" + b"}" * 5000):
            async with admin.post(
                base + path, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                assert response.status == 400, (path, response.status, await response.text())
                assert "JSON" in await response.text() or "want" in await response.text()
    finally:
        await admin.close()
    assert not crashes(caplog.records), crashes(caplog.records)[:3]


async def test_callback_cancel_takes_only_a_json_object(
    web_hotline: tuple[Hotline, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    """POST /api/callbacks/N/cancel with a JSON list, string, number or null
    body ('list' object has no attribute 'get') or with bytes that are not
    UTF-8 answered 500; now 400."""
    hotline, _ = web_hotline
    admin = await hotline_client(hotline, "admin")
    url = f"http://127.0.0.1:{hotline.api.port}/api/callbacks/1/cancel"
    try:
        for body in (b"[1]", b'"x"', b"5", b"null", b'{"reason": "\xff\xfe"}'):
            async with admin.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                text = await response.text()
                assert response.status == 400 and "JSON object" in text, (body, text)
    finally:
        await admin.close()
    assert not crashes(caplog.records), crashes(caplog.records)[:3]
