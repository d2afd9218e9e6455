"""One call leg's RTP stream: receive (jitter buffer, RFC 4733 digits,
in-band fallback) and send (paced by the shared MediaClock from pre-encoded
160-byte G.711 frames, or relayed from a bridged leg).

Symmetric RTP (RFC 4961; "comedia" in Asterisk): a stream given
:class:`MediaSources` latches on to the first source that sends it valid RTP,
if that source may (the SDP's address, the signalling peer's, or a trunk
network), and from then on sends there and takes packets from there only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import struct
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt
from aiortp.jitterbuffer import JitterBuffer
from aiortp.packet import RtpPacket

from ivr.media import codec as codecs
from ivr.media.clock import MediaClock
from ivr.media.ports import RtpPorts

Addr = tuple[str, int]
FRAME_BYTES = 160
CN_PT = 13
DTMF_EVENTS = "0123456789*#ABCD"
_HEADER = struct.Struct("!BBHII")

PcmListener = Callable[[npt.NDArray[np.int16]], None]
PayloadListener = Callable[[bytes, str], None]
DigitListener = Callable[[str, str], None]


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class MediaSources:
    """Where a stream's media may come from before it has latched: besides the
    address in the SDP, the signalling peer's (the address the INVITE came
    from: a NATed phone or an SBC sends its RTP from there) and the trunk
    networks (``[sip] trunk_networks``: the carrier's media servers)."""

    def __init__(self, peers: Iterable[str] = (), networks: Iterable[str | IpNetwork] = ()):
        self.peers = frozenset(ip for ip in (_ip(p) for p in peers) if ip is not None)
        self.networks: tuple[IpNetwork, ...] = tuple(
            n if not isinstance(n, str) else ipaddress.ip_network(n, strict=False) for n in networks
        )

    def accepts(self, host: str, sdp_host: str | None) -> bool:
        ip = _ip(host)
        if ip is None:
            return sdp_host is not None and host == sdp_host
        if sdp_host is not None and (host == sdp_host or ip == _ip(sdp_host)):
            return True
        return ip in self.peers or any(
            ip.version == net.version and ip in net for net in self.networks
        )


class Playback:
    """Frames being sent to the caller; ``done`` is True when played to the end."""

    def __init__(self, frames: tuple[bytes, ...], loop_forever: bool) -> None:
        self.frames = frames
        self.loop_forever = loop_forever
        self.index = 0
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def next_frame(self) -> bytes | None:
        if self.index >= len(self.frames):
            if not self.loop_forever or not self.frames:
                if not self.done.done():
                    self.done.set_result(True)
                return None
            self.index = 0
        frame = self.frames[self.index]
        self.index += 1
        return frame

    def stop(self) -> None:
        if not self.done.done():
            self.done.set_result(False)


class RtpStream(asyncio.DatagramProtocol):
    def __init__(
        self, clock: MediaClock, log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    ) -> None:
        self._clock = clock
        self.log = log
        self._transport: asyncio.DatagramTransport | None = None
        self._ports: RtpPorts | None = None
        self.local_port = 0
        self.remote: Addr | None = None  # where we send: the SDP's address, or the latched one
        self.sdp_remote: Addr | None = None  # the address the SDP said
        self.latched: Addr | None = None  # the source we latched on to (symmetric RTP)
        self._sources: MediaSources | None = None  # None: no latching, the SDP address only
        self.codec = "PCMU"
        self.payload_type = 0
        self.dtmf_pt: int | None = None
        self.on_hold = False
        # sending state
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._marker = True
        self._playback: Playback | None = None
        self._dtmf_out: list[bytes] = []  # telephone-event payloads to send, one per tick
        self._dtmf_ts = 0
        self._dtmf_started = False
        self._dtmf_elapsed = 0
        self._silence = bytes([codecs.silence_byte("PCMU")]) * FRAME_BYTES
        self.relay_to: RtpStream | None = None  # bridged: what we receive goes there
        self.relayed_from: RtpStream | None = None  # bridged: we send what they receive
        # receiving state
        self._jitter = JitterBuffer(capacity=16, skip_audio_gaps=True)
        self._last_event_ts: int | None = None
        self._last_seq: int | None = None
        self._last_ts = 0
        self.last_rx = 0.0
        self.packets_in = 0
        self.packets_out = 0
        self.garbage = 0
        self._bad_kinds_logged: set[str] = set()  # each kind of bad packet is logged once
        self.foreign = 0
        self._foreign_sources: set[Addr] = set()  # the first 16 refused sources, logged once each
        self.pcm_listeners: list[PcmListener] = []
        self.payload_listeners: list[PayloadListener] = []
        self.on_digit: DigitListener | None = None
        self._closed = False

    # -- set-up -----------------------------------------------------------
    async def open(self, ports: RtpPorts) -> int:
        transport, port = await ports.bind(lambda: self)
        self._transport = transport
        self._ports = ports
        self.local_port = port
        self.last_rx = asyncio.get_running_loop().time()
        return port

    def set_remote(self, addr: Addr, codec: str, payload_type: int, dtmf_pt: int | None) -> None:
        self.remote = addr
        self.sdp_remote = addr
        self.latched = None
        self.codec = codec
        self.payload_type = payload_type
        self.dtmf_pt = dtmf_pt
        self._silence = bytes([codecs.silence_byte(codec)]) * FRAME_BYTES

    def latch_on_first_source(self, sources: MediaSources) -> None:
        """Symmetric RTP: send to where the caller's RTP comes from, once it comes
        (until then to the SDP's address); see :class:`MediaSources`."""
        self._sources = sources

    def new_sdp_address(self, addr: Addr) -> None:
        """A re-INVITE's SDP: a new address starts latching afresh (the far end
        moved its media); the same address keeps the latched source."""
        if addr == self.sdp_remote:
            return
        self.sdp_remote = addr
        self.remote = addr
        if self.latched is not None:
            self.log.info(
                "rtp: new SDP address %s:%d: no longer latched to %s:%d",
                addr[0],
                addr[1],
                *self.latched,
            )
            self.latched = None

    def start_sending(self) -> None:
        self._clock.add(self)

    # -- sending ----------------------------------------------------------
    def play(self, frames: tuple[bytes, ...], *, loop_forever: bool = False) -> Playback:
        """Start sending ``frames``, replacing whatever was playing."""
        self.stop_playback()
        playback = Playback(frames, loop_forever)
        self._playback = playback
        return playback

    def stop_playback(self) -> None:
        if self._playback is not None:
            self._playback.stop()
            self._playback = None

    @property
    def playing(self) -> bool:
        return self._playback is not None

    def send_digit(self, digit: str, duration_ms: int = 100) -> None:
        """Queue an RFC 4733 key press (sent instead of audio, one packet a tick)."""
        event = DTMF_EVENTS.index(digit.upper())
        steps = max(1, duration_ms // 20)
        for i in range(1, steps + 1):
            self._dtmf_out.append(struct.pack("!BBH", event, 10, i * FRAME_BYTES))
        end = struct.pack("!BBH", event, 0x80 | 10, steps * FRAME_BYTES)
        self._dtmf_out.extend([end, end, end])
        self._dtmf_out.append(b"")  # a gap of one frame of audio after the event

    def _tick_dtmf(self) -> None:
        payload = self._dtmf_out.pop(0)
        if not payload:  # end of one event
            self._dtmf_started = False
            self._ts = (self._ts + self._dtmf_elapsed) & 0xFFFFFFFF
            return
        transport = self._transport
        if transport is None or self.remote is None or self.dtmf_pt is None:
            return
        first = not self._dtmf_started
        if first:
            self._dtmf_started = True
            self._dtmf_ts = self._ts
        self._dtmf_elapsed = struct.unpack("!H", payload[2:4])[0]
        header = _HEADER.pack(
            0x80, (0x80 if first else 0) | self.dtmf_pt, self._seq, self._dtmf_ts, self._ssrc
        )
        self._seq = (self._seq + 1) & 0xFFFF
        with contextlib.suppress(OSError, OverflowError, ValueError):
            transport.sendto(header + payload, self.remote)
            self.packets_out += 1

    def tick(self) -> None:
        if self._dtmf_out:
            self._tick_dtmf()
            return
        if self.relayed_from is not None or self.on_hold:
            return
        frame: bytes | None = None
        if self._playback is not None:
            frame = self._playback.next_frame()
            if frame is None:
                self._playback = None
        self.send_payload(frame if frame is not None else self._silence)

    def send_payload(self, payload: bytes) -> None:
        transport = self._transport
        if transport is None or self.remote is None:
            return
        if len(payload) < FRAME_BYTES:
            payload = payload + self._silence[len(payload) :]
        header = _HEADER.pack(
            0x80, (0x80 if self._marker else 0) | self.payload_type, self._seq, self._ts, self._ssrc
        )
        self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + len(payload)) & 0xFFFFFFFF
        try:
            transport.sendto(header + payload, self.remote)
            self.packets_out += 1
        except (OSError, OverflowError, ValueError) as exc:
            self.log.warning("rtp: send to %s failed: %s", self.remote, exc)

    # -- receiving --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass

    def error_received(self, exc: Exception) -> None:
        self.log.debug("rtp: socket error (ignored): %s", exc)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        latched = self.latched
        if latched is not None:
            if addr[0] != latched[0] or addr[1] != latched[1]:
                self._foreign(addr, f"latched to {latched[0]}:{latched[1]}")
                return
        elif self._sources is not None:
            sdp = self.sdp_remote
            if not self._sources.accepts(addr[0], sdp[0] if sdp is not None else None):
                self._foreign(
                    addr,
                    f"not the SDP's {sdp[0] if sdp else '-'}, the signalling peer "
                    "or in [sip] trunk_networks",
                )
                return
        else:
            remote = self.remote
            if remote is not None and addr[0] != remote[0]:
                self._foreign(addr, f"expected {remote[0]}")
                return
        if len(data) < 12 or data[0] >> 6 != 2:
            self._bad(f"not RTP ({len(data)} bytes, first byte {data[:1].hex() or '-'})", addr)
            return
        pt = data[1] & 0x7F
        if 72 <= pt <= 76:
            return  # RTCP on the RTP port (rtcp-mux from a confused peer): ignore
        try:
            packet = RtpPacket.parse(data)
        except ValueError as exc:
            self._bad(str(exc), addr)
            return
        if pt == self.dtmf_pt:
            self._valid_from(addr)
            self._telephone_event(packet)
            return
        if pt == CN_PT:
            self._valid_from(addr)
            return
        if pt != self.payload_type:
            self._bad(f"unexpected payload type {pt}", addr)
            return
        if len(packet.payload) == 0 or len(packet.payload) > 1600:
            self._bad(f"audio payload of {len(packet.payload)} bytes", addr)
            return
        self._valid_from(addr)
        self._last_seq = packet.sequence_number
        self._last_ts = packet.timestamp
        _, frame = self._jitter.add(packet)
        if frame is not None:
            self._deliver(frame.data)

    def _valid_from(self, addr: Addr) -> None:
        """A valid RTP packet for this stream arrived from ``addr``: count it, and
        latch on to ``addr`` if this stream latches and has not yet."""
        self.packets_in += 1
        self.last_rx = asyncio.get_running_loop().time()
        # port 0: a source that cannot be answered (RFC 768); keep to the SDP's address
        if self.latched is None and self._sources is not None and addr[1] != 0:
            self.latched = (addr[0], addr[1])
            self.remote = self.latched
            sdp = self.sdp_remote
            if sdp is not None and (sdp[0], sdp[1]) != self.latched:
                self.log.info(
                    "rtp: latched to %s:%d (the SDP said %s:%d); sending there",
                    addr[0],
                    addr[1],
                    sdp[0],
                    sdp[1],
                )
            else:
                self.log.debug("rtp: latched to %s:%d (the SDP's address)", addr[0], addr[1])

    def _foreign(self, addr: Addr, why: str) -> None:
        self.foreign += 1
        source = (addr[0], addr[1])
        new_source = source not in self._foreign_sources and len(self._foreign_sources) < 16
        if new_source:
            self._foreign_sources.add(source)
        if new_source or self.foreign % 500 == 0:  # each new source once, then rate-limited
            self.log.warning(
                "rtp: dropped %d packet(s) from unexpected address %s:%d (%s)",
                self.foreign,
                addr[0],
                addr[1],
                why,
            )

    def _bad(self, why: str, addr: Addr) -> None:
        self.garbage += 1
        kind = why.split(" (")[0]
        if kind not in self._bad_kinds_logged or self.garbage % 500 == 0:
            self._bad_kinds_logged.add(kind)
            self.log.warning(
                "rtp: dropped bad packet from %s:%d (%d so far): %s",
                addr[0],
                addr[1],
                self.garbage,
                why,
            )

    def _telephone_event(self, packet: RtpPacket) -> None:
        self._jitter.mark_non_media(packet.sequence_number)
        if len(packet.payload) < 4:
            return
        event = packet.payload[0]
        if event >= len(DTMF_EVENTS):
            return
        # one digit per event: an event is identified by its RTP timestamp;
        # report it on its first packet (fast barge-in), ignore the rest
        if packet.timestamp == self._last_event_ts:
            return
        self._last_event_ts = packet.timestamp
        if self.on_digit is not None:
            self.on_digit(DTMF_EVENTS[event], "rfc4733")

    def _deliver(self, payload: bytes) -> None:
        target = self.relay_to
        if target is not None:
            if target.codec == self.codec:
                target.send_payload(payload)
            else:
                target.send_payload(codecs.transcode(payload, self.codec, target.codec))
        for listener in self.payload_listeners:
            listener(payload, self.codec)
        if self.pcm_listeners:
            pcm = codecs.decode(payload, self.codec)
            for pcm_listener in self.pcm_listeners:
                pcm_listener(pcm)

    def flush(self) -> None:
        """Deliver the audio still held in the jitter buffer."""
        if self._last_seq is None:
            return
        marker = RtpPacket(
            payload_type=self.payload_type,
            sequence_number=(self._last_seq + 1) & 0xFFFF,
            timestamp=(self._last_ts + FRAME_BYTES) & 0xFFFFFFFF,
            payload=b"\x00",
        )
        _, frame = self._jitter.add(marker)
        if frame is not None:
            self._deliver(frame.data)
        self._last_seq = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop_playback()
        self.flush()
        self._clock.remove(self)
        if self.relay_to is not None:
            self.relay_to.relayed_from = None
            self.relay_to = None
        if self.relayed_from is not None:
            self.relayed_from.relay_to = None
            self.relayed_from = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._ports is not None:
            self._ports.release(self.local_port)
            self._ports = None


def bridge(a: RtpStream, b: RtpStream) -> None:
    """Relay audio both ways between two legs (the IVR keeps listening)."""
    a.stop_playback()
    b.stop_playback()
    a.relay_to, b.relayed_from = b, a
    b.relay_to, a.relayed_from = a, b


def unbridge(a: RtpStream, b: RtpStream) -> None:
    for x, y in ((a, b), (b, a)):
        if x.relay_to is y:
            x.relay_to = None
        if y.relayed_from is x:
            y.relayed_from = None
