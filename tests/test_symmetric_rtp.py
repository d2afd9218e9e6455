"""Symmetric RTP (comedia, RFC 4961): a caller whose SDP names one address but
whose RTP comes from another (NAT, a carrier SBC) is heard, and hears the IVR
at the source its RTP comes from; a second source later in the call is refused.

The rule on real UDP sockets first, then whole calls from sipp and baresip."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from ivr.media import codec as codecs
from ivr.media.clock import MediaClock
from ivr.media.ports import RtpPorts
from ivr.media.rtp import MediaSources, RtpStream
from tests.audio_tools import Pcm, best_match, pad, read_8k, write_rtp_pcap, write_wav
from tests.conftest import SHARED, StartHotline
from tests.peers import Baresip, free_port_block, free_udp_port, run_sipp

DATA = Path(__file__).parent / "data"
CLIP = SHARED / "speech" / "aishell1_BAC009S0724W0121.wav"
LOG = logging.getLogger("ivr.test.latch")
SILENCE = bytes([0xFF]) * 160  # PCMU


class Peer(asyncio.DatagramProtocol):
    """A UDP socket standing for one end (a phone, a NAT's public side, an
    attacker): sends RTP and keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.seq = 100
        self.ts = 8000
        self.ssrc = 0x5EED0000 + id(self) % 0xFFFF

    @classmethod
    async def bind(cls, host: str = "127.0.0.1", port: int = 0) -> Peer:
        peer = cls()
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: peer, local_addr=(host, port)
        )
        peer.transport = transport
        return peer

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def rtp(self, to: tuple[str, int], payload: bytes = SILENCE, pt: int = 0) -> None:
        assert self.transport is not None
        header = struct.pack("!BBHII", 0x80, pt, self.seq, self.ts, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF
        self.transport.sendto(header + payload, to)

    def key(self, to: tuple[str, int], digit: int, pt: int = 101) -> None:
        """One RFC 4733 key press: a start packet and three end packets."""
        assert self.transport is not None
        self.ts = (self.ts + 1600) & 0xFFFFFFFF
        for i, flags in enumerate((10, 0x80 | 10, 0x80 | 10, 0x80 | 10)):
            header = struct.pack(
                "!BBHII", 0x80, (0x80 if i == 0 else 0) | pt, self.seq, self.ts, self.ssrc
            )
            self.seq = (self.seq + 1) & 0xFFFF
            self.transport.sendto(header + struct.pack("!BBH", digit, flags, 800), to)

    def audio_heard(self) -> Pcm:
        """The PCMU audio received, decoded, in arrival order."""
        payloads = [d[12:] for d, _ in self.received if len(d) > 12 and d[1] & 0x7F == 0]
        if not payloads:
            return np.zeros(0, np.int16)
        return codecs.decode(b"".join(payloads), "PCMU")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# ------------------------------------------------------------- the rule itself


@pytest.fixture
async def media() -> AsyncIterator[tuple[MediaClock, RtpPorts]]:
    clock = MediaClock(LOG)
    low, high = free_port_block(20)
    yield clock, RtpPorts("127.0.0.1", low, high)
    clock.stop()


async def latching_stream(
    media: tuple[MediaClock, RtpPorts], sdp: tuple[str, int], sources: MediaSources
) -> tuple[RtpStream, tuple[str, int], list[str]]:
    clock, ports = media
    stream = RtpStream(clock, LOG)
    port = await stream.open(ports)
    stream.set_remote(sdp, "PCMU", 0, 101)
    stream.latch_on_first_source(sources)
    digits: list[str] = []
    stream.on_digit = lambda digit, _how: digits.append(digit)
    return stream, ("127.0.0.1", port), digits


async def settle() -> None:
    await asyncio.sleep(0.05)


async def test_sends_to_the_sdp_address_until_the_first_packet_then_to_its_source(
    media: tuple[MediaClock, RtpPorts],
) -> None:
    sdp_side = await Peer.bind("127.0.0.2")  # the address the SDP says (private, say)
    phone = await Peer.bind("127.0.0.1")  # where the RTP really comes from
    stream, ivr, _ = await latching_stream(media, sdp_side.addr, MediaSources(["127.0.0.1"]))
    try:
        stream.send_payload(SILENCE)
        await settle()
        assert len(sdp_side.received) == 1 and not phone.received  # no packet yet: the SDP's
        phone.rtp(ivr)
        await settle()
        assert stream.latched == phone.addr and stream.remote == phone.addr
        stream.send_payload(SILENCE)
        stream.send_payload(SILENCE)
        await settle()
        assert len(phone.received) == 2 and len(sdp_side.received) == 1
        assert stream.packets_in == 1 and stream.foreign == 0
    finally:
        stream.close()
        sdp_side.close()
        phone.close()


async def test_a_second_source_after_latching_is_refused(
    media: tuple[MediaClock, RtpPorts], caplog: pytest.LogCaptureFixture
) -> None:
    phone = await Peer.bind("127.0.0.1")
    intruder = await Peer.bind("127.0.0.1")  # an acceptable address, another port
    stream, ivr, digits = await latching_stream(
        media, ("127.0.0.2", 40000), MediaSources(["127.0.0.1"])
    )
    try:
        phone.rtp(ivr)
        await settle()
        caplog.set_level(logging.WARNING, logger=LOG.name)
        for n in range(600):
            intruder.rtp(ivr)
            if n % 50 == 0:
                await asyncio.sleep(0.01)  # not all at once: the socket buffer would drop some
        intruder.key(ivr, 5)
        phone.key(ivr, 1)
        await asyncio.sleep(0.2)
        assert stream.latched == phone.addr
        assert digits == ["1"]  # the intruder's key press was not taken
        assert stream.foreign == 604 and stream.packets_in == 1 + 4
        stream.send_payload(SILENCE)
        await settle()
        assert len(phone.received) == 1 and not intruder.received
        warnings = [r.getMessage() for r in caplog.records if "unexpected address" in r.message]
        assert len(warnings) == 2, warnings  # the source once, then one every 500: rate-limited
        assert f"{intruder.addr[0]}:{intruder.addr[1]}" in warnings[0]
        assert f"latched to {phone.addr[0]}:{phone.addr[1]}" in warnings[0]
    finally:
        stream.close()
        phone.close()
        intruder.close()


async def test_unacceptable_sources_and_bad_packets_never_latch(
    media: tuple[MediaClock, RtpPorts], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOG.name)
    stranger = await Peer.bind("127.0.0.3")  # not the SDP's, not the peer's, not a trunk
    phone = await Peer.bind("127.0.0.1")
    stream, ivr, digits = await latching_stream(
        media, ("127.0.0.2", 40000), MediaSources(["127.0.0.1"])
    )
    try:
        for _ in range(5):
            stranger.rtp(ivr)
        stranger.key(ivr, 7)
        assert stranger.transport is not None and phone.transport is not None
        phone.transport.sendto(b"hello, not RTP", ivr)
        phone.rtp(ivr, pt=8)  # a payload type that was not negotiated
        await settle()
        assert stream.latched is None and stream.remote == ("127.0.0.2", 40000)
        assert stream.foreign == 9 and stream.garbage == 2 and not digits
        assert "unexpected address 127.0.0.3" in caplog.text
        assert "not the SDP's 127.0.0.2, the signalling peer or in [sip] trunk_networks" in (
            caplog.text
        )
        assert "not RTP" in caplog.text and "unexpected payload type 8" in caplog.text
        phone.key(ivr, 3)
        await settle()
        assert stream.latched == phone.addr and digits == ["3"]  # a key press latches too
    finally:
        stream.close()
        stranger.close()
        phone.close()


async def test_trunk_networks_and_the_sdp_address_may_latch(
    media: tuple[MediaClock, RtpPorts],
) -> None:
    sbc = await Peer.bind("127.0.0.66")
    stream, ivr, _ = await latching_stream(
        media, ("127.0.0.2", 40000), MediaSources(["127.0.0.1"], ["127.0.0.64/26"])
    )
    sdp_side = await Peer.bind("127.0.0.9")
    other, other_ivr, _ = await latching_stream(media, sdp_side.addr, MediaSources(["127.0.0.1"]))
    try:
        sbc.rtp(ivr)
        sdp_side.rtp(other_ivr)
        await settle()
        assert stream.latched == sbc.addr
        assert other.latched == sdp_side.addr
    finally:
        stream.close()
        other.close()
        sbc.close()
        sdp_side.close()


async def test_a_new_sdp_address_latches_afresh_the_same_one_keeps_the_latch(
    media: tuple[MediaClock, RtpPorts],
) -> None:
    phone = await Peer.bind("127.0.0.1")
    moved = await Peer.bind("127.0.0.1")
    stream, ivr, _ = await latching_stream(media, ("127.0.0.2", 40000), MediaSources(["127.0.0.1"]))
    try:
        phone.rtp(ivr)
        await settle()
        stream.new_sdp_address(("127.0.0.2", 40000))  # a re-INVITE resuming from hold
        assert stream.latched == phone.addr and stream.remote == phone.addr
        stream.new_sdp_address(("127.0.0.2", 40010))  # the far end moved its media
        assert stream.latched is None and stream.remote == ("127.0.0.2", 40010)
        moved.rtp(ivr)
        await settle()
        assert stream.latched == moved.addr
    finally:
        stream.close()
        phone.close()
        moved.close()


def test_media_sources_rule() -> None:
    sources = MediaSources(["192.0.2.7"], ["10.0.0.0/8", "2001:db8::/32"])
    assert sources.accepts("192.0.2.7", "198.51.100.1")  # the signalling peer
    assert sources.accepts("198.51.100.1", "198.51.100.1")  # the SDP's address
    assert sources.accepts("10.20.30.40", None)  # a trunk network
    assert sources.accepts("2001:db8::5", None)
    assert sources.accepts("::ffff:10.1.1.1", None)  # IPv4 seen on a dual-stack socket
    assert not sources.accepts("192.0.2.8", "198.51.100.1")
    assert not sources.accepts("2001:db9::5", None)
    assert not sources.accepts("not-an-address", None)


# ------------------------------------------------------------------ whole calls


async def caller_stream(hotline: object, timeout: float = 5.0) -> RtpStream:
    """The RTP stream of the (one) call in progress, once it is answered."""
    from ivr.server import Hotline

    assert isinstance(hotline, Hotline)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not hotline.calls:
        assert loop.time() < deadline, "no call came in"
        await asyncio.sleep(0.005)
    (call,) = hotline.calls.values()
    return call.stream


async def wait_ended(hotline: object, timeout: float = 20.0) -> object:
    from tests.test_call_path import wait_records

    (record,) = await wait_records(hotline, 1, timeout)
    return record


def greeting_pcm(hotline: object) -> Pcm:
    plan = hotline.plan  # type: ignore[attr-defined]
    pcm = hotline.prompts.get(plan.nodes[plan.start].prompt).pcm  # type: ignore[attr-defined]
    return np.asarray(pcm, dtype=np.int16)


@pytest.mark.peers
async def test_sipp_caller_behind_nat_is_heard_and_hears_the_ivr(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """sipp's SDP says c=IN IP4 127.0.0.2 (the phone's private address) but its
    RTP (speech, then key 0) comes from 127.0.0.1:P, where the NAT's public side
    listens: the IVR hears the speech and the key, and sends the greeting to
    127.0.0.1:P, not to the SDP's address; a stream injected from another port
    later in the call is refused, its key press too."""
    hotline = await start_hotline()
    private = await Peer.bind("127.0.0.2")  # the SDP's address: should hear ~nothing
    while True:  # the NAT's public side: sipp sends its RTP from here ([media_port+4])
        public = await Peer.bind("127.0.0.1", free_udp_port(even=True))
        media_port = public.addr[1] - 4
        try:
            for port in (media_port, media_port + 2):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("127.0.0.1", port))
            break
        except OSError:
            public.close()
    intruder = await Peer.bind("127.0.0.1")
    clip = read_8k(CLIP, tmp_path)
    speech = write_rtp_pcap(tmp_path / "speech.pcap", pad(clip, 0.5, 0.5), "PCMU", 0)
    scenario = (
        (DATA / "sipp" / "uac_nat_sdp_elsewhere.xml")
        .read_text()
        .replace("@SDP_IP@", private.addr[0])
        .replace("@SDP_PORT@", str(private.addr[1]))
        .replace("@SPEECH@", str(speech))
        .replace("@SPEECH_MS@", "5500")
        .replace("@DIGIT@", "pcap/dtmf_2833_0.pcap")
        .replace("@AFTER_MS@", "3000")
    )
    (tmp_path / "uac.xml").write_text(scenario)
    sipp = asyncio.ensure_future(
        run_sipp(
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
                str(media_port),
                "-m",
                "1",
                "-s",
                "12345",
                "-trace_err",
                "-timeout",
                "30",
                "-timeout_error",
            ],
            tmp_path / "sipp",
        )
    )
    heard_by_ivr: list[Pcm] = []
    try:
        stream = await caller_stream(hotline)
        stream.pcm_listeners.append(heard_by_ivr.append)
        ivr = ("127.0.0.1", stream.local_port)
        await asyncio.sleep(3.0)  # latched by now, speech coming in
        latched_at = len(private.received)
        for _ in range(50):  # another stream, from another port, later in the call
            intruder.rtp(ivr)
        intruder.key(ivr, 5)
        result = await sipp
        record = await wait_ended(hotline)
    finally:
        if not sipp.done():
            sipp.cancel()
        private.close()
        public.close()
        intruder.close()
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    assert stream.latched == public.addr
    assert record.digits.startswith("0") and "5" not in record.digits  # type: ignore[attr-defined]
    assert stream.foreign == 54
    heard = np.concatenate(heard_by_ivr)
    score, _ = best_match(heard, clip[4000 : 8000 * 3])
    assert score > 0.6, f"the IVR did not hear the caller (match {score:.2f})"
    # the caller hears the greeting at the address its RTP came from ...
    assert all(addr == ivr for _, addr in public.received)
    greeting = greeting_pcm(hotline)
    score, _ = best_match(public.audio_heard(), greeting[: 8000 * 2])
    assert score > 0.8, f"the caller did not hear the greeting (match {score:.2f})"
    # ... and nothing goes to the SDP's address once latched (at most the first
    # 20 ms ticks before the caller's first packet), nor to the intruder
    assert latched_at == len(private.received) <= 5
    assert not intruder.received


def lan_interface() -> tuple[str, str] | None:
    """A network interface with a non-loopback IPv4 address (name, address)."""
    import subprocess

    try:
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[2] == "inet" and not parts[3].startswith("127."):
            return parts[1], parts[3].split("/")[0]
    return None


@pytest.mark.peers
async def test_baresip_on_a_lan_machine_is_heard_and_hears_the_ivr(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """The issue's case: baresip dials 127.0.0.1 as the README says, on a machine
    with a LAN interface: its SDP names the LAN address, its RTP comes from
    127.0.0.1. Its key press arrives (before: every packet dropped) and it hears
    the greeting."""
    lan = lan_interface()
    if lan is None:
        pytest.skip("no non-loopback IPv4 interface on this machine")
    interface, lan_address = lan
    hotline = await start_hotline()
    voice = write_wav(tmp_path / "caller.wav", pad(read_8k(CLIP, tmp_path), 1.0, 20.0))
    caller = Baresip(tmp_path / "caller", free_udp_port(), play=voice)
    caller.write_config()
    config = caller.workdir / "config"
    config.write_text(
        config.read_text().replace("net_interface 127.0.0.1", f"net_interface {interface}")
    )
    original = caller.write_config
    caller.write_config = lambda: None  # type: ignore[method-assign]
    try:
        await caller.start()
        await caller.dial(f"sip:12345@127.0.0.1:{hotline.endpoint.port}")
        stream = await caller_stream(hotline, timeout=10.0)
        await asyncio.sleep(4.0)
        await caller.keys("0")
        await asyncio.sleep(1.0)
        await caller.hangup()
        record = await wait_ended(hotline)
    finally:
        caller.write_config = original  # type: ignore[method-assign]
        await caller.quit()
        print("\n".join(caller.output))
    assert stream.sdp_remote is not None and stream.sdp_remote[0] == lan_address
    assert stream.latched is not None and stream.latched[0] == "127.0.0.1"
    assert stream.foreign == 0
    assert record.digits == "0"  # type: ignore[attr-defined]
    import soundfile as sf

    (heard_file,) = caller.recordings("dec")
    heard, _ = sf.read(str(heard_file), dtype="int16")
    score, _ = best_match(heard, greeting_pcm(hotline)[: 8000 * 2])
    assert score > 0.8, f"the caller did not hear the greeting (match {score:.2f})"
