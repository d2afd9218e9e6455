"""Fuzz of the SIP edge (issue 13 item 4): 10,000 malformed datagrams from a
fixed seed (tests/sip_fuzz.py: mutations of real INVITE/ACK/BYE/INFO/OPTIONS,
bad SDP, absurd lengths, binary junk, unicode...) thrown at a real hotline;
after every 1,000 a real call (our trial caller, with RTP) is answered, hears
the greeting, presses a key that arrives, and hangs up. Throughout: no
unhandled exception in the hotline's log, the SIP socket open; afterwards no
call, dialog, pending INVITE, transaction, RTP port or task left over, and
the process's memory grew by no more than a bound."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.server import Hotline
from ivr.sip.sdp import parse_media
from ivr.trial_call import place_call
from tests.conftest import StartHotline, trial
from tests.sip_fuzz import (
    FuzzCases,
    FuzzPeer,
    PeerCounts,
    fuzz_peer,
    send_cases,
    send_tcp_streams,
)
from tests.sip_raw import RawPeer, header, invite, options, raw_peer, sdp, status_of

SEED = 20261205
CASES = 10_000
CHECK_EVERY = 1_000
TCP_CASES = 3_000
RSS_GROWTH_MB = 64  # bound on the process's growth over the fuzz (the first 1,000 warm it up)
# the edge's per-source rate limit is lifted for the fuzz source (one address
# sends everything), so every case reaches the parser; a fuzzed call the fuzz
# peer could not hang up ends after rtp_timeout without RTP; a TCP connection
# the hotline opened to a fuzzed Contact (its own address, say) closes when idle
FUZZ_SIP = (
    "requests_per_second = 1000000\nrequest_burst = 10000000\n"
    "rtp_timeout = 5.0\ntcp_idle_timeout = 5.0"
)
# what an unhandled exception leaves in the log (ivr/sip/transport.py, asyncio)
CRASH_MARKS = ("error handling message", "Exception in callback", "sip socket lost", "Traceback")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def crash_line(record: logging.LogRecord) -> str | None:
    """The record, if it says an exception went unhandled (or is an ERROR)."""
    text = record.getMessage()
    crashed = record.exc_info or any(mark in text for mark in CRASH_MARKS)
    if crashed or record.levelno >= logging.ERROR:
        return f"{record.name} {record.levelname}: {text[:300]}"
    return None


def crashes(records: list[logging.LogRecord]) -> list[str]:
    """Log lines that say an exception went unhandled."""
    return [line for line in map(crash_line, records) if line is not None]


class CrashWatch(logging.Handler):
    """Keeps the hotline's crash lines, and only those: the fuzz's ten thousand
    warnings are not kept (pytest's own capture would hold them all, and the
    process's RSS would measure the test's log instead of the hotline)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = crash_line(record)
        if line is not None:
            self.found.append(line)


@contextlib.contextmanager
def crash_watch() -> Iterator[CrashWatch]:
    """The "ivr" log (the hotline's) goes to a CrashWatch instead of pytest's
    capture for a while; asyncio's too (it says what no task handled)."""
    watch = CrashWatch()
    ivr, aio = logging.getLogger("ivr"), logging.getLogger("asyncio")
    ivr.addHandler(watch)
    aio.addHandler(watch)
    ivr.propagate = False
    try:
        yield watch
    finally:
        ivr.propagate = True
        ivr.removeHandler(watch)
        aio.removeHandler(watch)


async def real_call(hotline: Hotline, number: int, tcp: bool = False) -> None:
    """A real call (over TCP if ``tcp``): answered, the greeting heard, key 1
    arrives, hung up."""
    caller = f"1390000{number:04d}"
    options = trial(hotline.endpoint.port, digits="1", digit_delay=0.8, duration=1.8, caller=caller)
    if tcp:
        options = dataclasses.replace(options, target=options.target + ";transport=tcp")
    result = await place_call(options, logging.getLogger("ivr.test.caller"))
    assert result.status == 200, f"call {number} after the fuzz: {result.status} {result.reason}"
    assert result.packets_in > 20, f"call {number}: heard {result.packets_in} RTP packets"
    assert result.digits_sent == "1"
    assert hotline.records is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while True:
        records = [r for r in await hotline.records.list_recent(50) if r.caller == caller]
        if records and records[0].ended_at is not None:
            break
        assert loop.time() < deadline, f"call {number}'s record not ended: {records}"
        await asyncio.sleep(0.1)
    assert records[0].digits == "1", f"call {number}: the IVR got keys {records[0].digits!r}"


async def settled(hotline: Hotline, tasks_before: int, timeout: float) -> dict[str, int]:
    """Wait until the fuzz has left nothing behind; what is left at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        endpoint = hotline.endpoint
        left = {
            "calls": len(hotline.calls),
            "dialogs": endpoint.dialog_count,
            "pending invites": endpoint.pending_invites,
            "server transactions": len(endpoint.transactions_in),
            "client transactions": len(endpoint.transactions_out),
            "rtp ports": hotline.ports.in_use,
            "tcp connections": endpoint.tcp_connections,
            "tasks over the start": max(0, len(asyncio.all_tasks()) - tasks_before - 1),
        }
        if not any(left.values()) or loop.time() > deadline:
            if left["tasks over the start"]:  # say which, for whoever reads the failure
                running = sorted(t.get_coro().__qualname__ for t in asyncio.all_tasks())  # type: ignore[union-attr]
                logging.getLogger("ivr.test").error("tasks at the end: %s", ", ".join(running))
            return left
        await asyncio.sleep(0.5)


async def fuzz_rounds(hotline: Hotline, peer: FuzzPeer, watch: CrashWatch) -> tuple[float, int]:
    """Send the cases, 1,000 at a time, each thousand followed by a real call;
    the RSS after the first thousand, and the datagrams the kernel dropped."""
    cases = FuzzCases(SEED, f"127.0.0.1:{hotline.endpoint.port}", port=peer.port)
    addr = ("127.0.0.1", hotline.endpoint.port)
    rss_warm = 0.0
    dropped = 0
    for round_ in range(CASES // CHECK_EVERY):
        batch = cases.take(CHECK_EVERY)
        dropped += await send_cases(peer, batch, addr)
        where = f"after cases {batch[0].number}-{batch[-1].number}"
        assert hotline.endpoint.is_open, f"the SIP socket closed {where}"
        assert not watch.found, f"{where}: {watch.found[:5]}"
        await real_call(hotline, round_)
        if round_ == 0:
            rss_warm = rss_mb()
    return rss_warm, dropped


async def test_ten_thousand_malformed_datagrams_change_nothing(
    start_hotline: StartHotline,
) -> None:
    hotline = await start_hotline(sip_extra=FUZZ_SIP)
    tasks_before = len(asyncio.all_tasks())
    peer = await fuzz_peer()
    with crash_watch() as watch:
        try:
            rss_warm, dropped = await fuzz_rounds(hotline, peer, watch)
        finally:
            peer.close()
        assert peer.counts.sent >= CASES * 0.97  # all but the few larger than a UDP datagram
        # by the kernel, the socket's buffer full: the pacing keeps this small
        assert dropped < CASES // 20, f"{dropped} datagrams never reached the parser"
        answers = peer.counts.answers
        assert answers.get(400, 0) > 1000, f"the malformed were not answered 400: {answers}"
        assert hotline.endpoint.bad_messages > 300
        left = await settled(hotline, tasks_before, timeout=45.0)
        assert not any(left.values()), f"left behind by the fuzz: {left}"
        growth = rss_mb() - rss_warm
        assert growth < RSS_GROWTH_MB, f"RSS grew {growth:.1f} MB"
        assert hotline.endpoint.is_open
        await real_call(hotline, 99)  # and once more when all is quiet
    assert not watch.found, watch.found[:5]


async def test_malformed_tcp_streams_change_nothing(start_hotline: StartHotline) -> None:
    """The same kinds of cases over TCP (SIP/2.0/TCP in their Via), ten to a
    connection, twenty connections at once: a wrong Content-Length puts the
    next message in the wrong place, as on a real stream; the hotline closes
    a connection it cannot frame. A real call over TCP after every 1,000."""
    hotline = await start_hotline(sip_extra=FUZZ_SIP)
    assert hotline.endpoint.listen_tcp
    tasks_before = len(asyncio.all_tasks())
    counts = PeerCounts()
    # their Contact: a port where nothing listens (the hotline's BYE at the
    # end of a fuzzed call it answered fails at once)
    cases = FuzzCases(SEED + 1, f"127.0.0.1:{hotline.endpoint.port}", port=9, transport="TCP")
    rss_warm = 0.0
    with crash_watch() as watch:
        for round_ in range(TCP_CASES // CHECK_EVERY):
            batch = cases.take(CHECK_EVERY)
            await send_tcp_streams(("127.0.0.1", hotline.endpoint.port), batch, counts)
            where = f"after TCP cases {batch[0].number}-{batch[-1].number}"
            assert hotline.endpoint.is_open, f"the SIP listener closed {where}"
            assert not watch.found, f"{where}: {watch.found[:5]}"
            await real_call(hotline, round_, tcp=True)
            if round_ == 0:
                rss_warm = rss_mb()
        assert counts.connections == TCP_CASES // 10
        assert counts.closed_by_server > 0, "no stream was junk enough to be cut"
        assert counts.answers.get(400, 0) > 100, counts.answers
        left = await settled(hotline, tasks_before, timeout=45.0)
        assert not any(left.values()), f"left behind by the fuzz: {left}"
        growth = rss_mb() - rss_warm
        assert growth < RSS_GROWTH_MB, f"RSS grew {growth:.1f} MB"
        await real_call(hotline, 99, tcp=True)
        await real_call(hotline, 98)
    assert not watch.found, watch.found[:5]


# -- what the fuzz found (each a regression case) ---------------------------------


async def final_answer(peer: RawPeer) -> str:
    """The next final answer to an INVITE."""
    while True:
        message = await peer.expect(timeout=5.0)
        if status_of(message) >= 200 and "INVITE" in (header(message, "CSeq") or ""):
            return message


def ack_and_bye(peer: RawPeer, server_port: int, ok: str) -> None:
    """Hang up an answered raw INVITE: ACK its 200, then BYE."""
    common = (
        f"From: {header(ok, 'From')}\r\nTo: {header(ok, 'To')}\r\n"
        f"Call-ID: {header(ok, 'Call-ID')}\r\nMax-Forwards: 70\r\n"
    )
    via = f"Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK"
    peer.send(
        f"ACK sip:ivr@127.0.0.1 SIP/2.0\r\n{via}a1\r\n{common}CSeq: 1 ACK\r\n\r\n", server_port
    )
    peer.send(
        f"BYE sip:ivr@127.0.0.1 SIP/2.0\r\n{via}b1\r\n{common}CSeq: 2 BYE\r\n\r\n", server_port
    )


async def test_a_caller_without_a_number_is_served(
    start_hotline: StartHotline, caplog: pytest.LogCaptureFixture
) -> None:
    """From: <sip:@host> (no user part): the call task died on the callback
    look-up ("the caller's number must not be empty") and the caller heard
    silence; now the call runs like any other."""
    caplog.set_level(logging.INFO)
    hotline = await start_hotline()
    result = await place_call(
        trial(hotline.endpoint.port, digits="1", digit_delay=0.8, duration=1.8, caller=""),
        logging.getLogger("ivr.test.caller"),
    )
    assert result.status == 200 and result.packets_in > 20
    assert hotline.records is not None
    for _ in range(50):
        (record,) = await hotline.records.list_recent(5)
        if record.ended_at is not None:
            break
        await asyncio.sleep(0.1)
    assert record.caller == "" and record.digits == "1"
    assert not crashes(caplog.records), crashes(caplog.records)


async def test_payload_types_beyond_seven_bits_are_not_offered_codecs(
    start_hotline: StartHotline, caplog: pytest.LogCaptureFixture
) -> None:
    """a=rtpmap:300 PCMU/8000 was taken as PCMU on payload type 300, and the
    media clock's first packet failed (struct.error) and dropped the stream;
    now such a format is no codec: 488, and the next call is served."""
    caplog.set_level(logging.INFO)
    body = (
        "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 40002 RTP/AVP 300 101\r\n"
        "a=rtpmap:300 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    assert parse_media(body).codecs == ()
    assert parse_media(body.replace("300", "-8")).codecs == ()
    hotline = await start_hotline()
    peer = await raw_peer()
    try:
        text, _, _ = invite(peer.port, hotline.endpoint.port, body=body)
        peer.send(text, hotline.endpoint.port)
        assert status_of(await final_answer(peer)) == 488
        text, _, _ = invite(peer.port, hotline.endpoint.port, body=sdp(peer.port + 2, "300 0"))
        peer.send(text, hotline.endpoint.port)
        ok = await final_answer(peer)
        assert status_of(ok) == 200 and "RTP/AVP 0" in ok
        ack_and_bye(peer, hotline.endpoint.port, ok)
    finally:
        peer.close()
    assert not crashes(caplog.records), crashes(caplog.records)


async def test_an_invite_reusing_a_call_id_is_refused_and_the_call_goes_on(
    start_hotline: StartHotline, caplog: pytest.LogCaptureFixture
) -> None:
    """A second INVITE with the Call-ID of a call in progress took its place in
    the hotline's calls, and one with the Call-ID of an ended call died on
    "a call record with call_id ... exists", leaving its RTP port taken; now
    both get 482 and the first call and its record are untouched."""
    caplog.set_level(logging.INFO)
    hotline = await start_hotline()
    port = hotline.endpoint.port
    peer = await raw_peer()
    try:
        text, call_id, _ = invite(peer.port, port)
        peer.send(text, port)
        ok = await final_answer(peer)
        assert status_of(ok) == 200
        again, _, _ = invite(peer.port, port, call_id=call_id)  # a new branch
        peer.send(again, port)
        refused = await final_answer(peer)
        assert status_of(refused) == 482, refused
        assert list(hotline.calls) == [call_id]
        ack_and_bye(peer, port, ok)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while hotline.calls or hotline.ports.in_use:
            assert loop.time() < deadline, "the first call did not end"
            await asyncio.sleep(0.1)
        assert hotline.records is not None
        before = await hotline.records.get(call_id)
        assert before is not None and before.ended_at is not None
        later, _, _ = invite(peer.port, port, call_id=call_id)
        peer.send(later, port)
        refused = await final_answer(peer)
        assert status_of(refused) == 482, refused
        await asyncio.sleep(0.3)
        assert not hotline.calls and hotline.ports.in_use == 0
        assert await hotline.records.get(call_id) == before
    finally:
        peer.close()
    assert not crashes(caplog.records), crashes(caplog.records)


async def test_a_blank_via_over_tcp_is_answered_400(
    start_hotline: StartHotline, caplog: pytest.LogCaptureFixture
) -> None:
    """Via: (blanks only) over TCP raised IndexError in the stream reader
    (where to redial for the answer), logged as an error and the connection
    cut; now it is answered 400 on the connection, which stays open."""
    caplog.set_level(logging.INFO)
    hotline = await start_hotline()
    port = hotline.endpoint.port
    text, _, _ = invite(40000, port)
    text = text.replace(header(text, "Via") or "", " \t ", 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(text.encode())
        answer = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)).decode()
        assert status_of(answer) == 400, answer
        writer.write(options(40000, port).replace("SIP/2.0/UDP", "SIP/2.0/TCP").encode())
        answer = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)).decode()
        assert status_of(answer) == 200, answer
    finally:
        writer.close()
    assert not crashes(caplog.records), crashes(caplog.records)


async def test_an_offer_with_audio_port_0_is_refused(
    start_hotline: StartHotline, caplog: pytest.LogCaptureFixture
) -> None:
    """m=audio 0 (the stream refused, RFC 3264) was answered 200, and the call
    sent RTP to port 0 (EINVAL every 20 ms) until the RTP timeout; now 488
    with a Warning, and no RTP port or call is spent."""
    caplog.set_level(logging.INFO)
    hotline = await start_hotline()
    peer = await raw_peer()
    try:
        text, _, _ = invite(peer.port, hotline.endpoint.port, body=sdp(0))
        peer.send(text, hotline.endpoint.port)
        refused = await final_answer(peer)
        assert status_of(refused) == 488, refused
        assert "port 0" in (header(refused, "Warning") or "")
        assert not hotline.calls and hotline.ports.in_use == 0
    finally:
        peer.close()
    assert not crashes(caplog.records), crashes(caplog.records)


@pytest.mark.parametrize("name", ["From", "To"])
async def test_an_empty_tag_is_400(
    start_hotline: StartHotline, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """To: <sip:12345@...>;tag= (empty) was answered 200 with
    ";tag=;tag=<ours>", which the caller's BYE copies and no dialog matches
    (481; the call ran on to the RTP timeout); now 400 naming the header."""
    caplog.set_level(logging.INFO)
    hotline = await start_hotline()
    peer = await raw_peer()
    try:
        text, _, _ = invite(peer.port, hotline.endpoint.port)
        value = header(text, name) or ""
        base = value.split(";tag=")[0]
        text = text.replace(f"{name}: {value}", f"{name}: {base};tag=", 1)
        peer.send(text, hotline.endpoint.port)
        refused = await final_answer(peer)
        assert status_of(refused) == 400, refused
        assert f"Empty tag in the {name} header" in refused.split("\r\n", 1)[0]
        assert not hotline.calls
    finally:
        peer.close()
