"""SDP offer/answer for G.711 audio (RFC 3264), over aiosipua's SDP parser.

Unlike aiosipua's negotiate_sdp, the answer keeps the telephone-event payload
type the offer used, and an unparseable SDP is a clear SdpError (-> 400/488)
instead of an exception escaping the handler.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from aiosipua import parse_sdp

STATIC_PT = {0: "PCMU", 8: "PCMA"}
SUPPORTED = ("PCMU", "PCMA")


class SdpError(ValueError):
    """An SDP we cannot use; the message says what is wrong."""


@dataclass(frozen=True)
class MediaOffer:
    """The audio part of a peer's SDP."""

    address: str
    port: int
    codecs: tuple[tuple[int, str], ...]  # (payload type, name upper-case), in offer order
    dtmf_pt: int | None
    direction: str

    @property
    def on_hold(self) -> bool:
        return self.direction in ("sendonly", "inactive") or self.address in ("0.0.0.0", "::")


@dataclass(frozen=True)
class Negotiated:
    codec: str
    payload_type: int
    dtmf_pt: int | None


def parse_media(body: str) -> MediaOffer:
    """Parse the audio stream of an SDP body; SdpError when unusable."""
    if not body.strip():
        raise SdpError("empty SDP body")
    try:
        sdp = parse_sdp(body)
    except (ValueError, IndexError, TypeError) as exc:
        raise SdpError(f"unparseable SDP: {exc}") from exc
    audio = sdp.audio
    if audio is None:
        raise SdpError("SDP has no audio stream (m=audio)")
    conn = audio.connection or sdp.connection
    if conn is None:
        raise SdpError("SDP has no connection address (c=)")
    try:
        ipaddress.ip_address(conn.address)
    except ValueError as exc:
        raise SdpError(f"SDP connection address {conn.address!r} is not an IP address") from exc
    if not 0 <= audio.port <= 65535:
        raise SdpError(f"SDP audio port {audio.port} out of range")
    if audio.port == 0:  # the stream refused or removed (RFC 3264 5.1, 8.2): no audio
        raise SdpError("SDP audio port 0: the audio stream is disabled")
    codecs: list[tuple[int, str]] = []
    dtmf_pt: int | None = None
    for codec in audio.codecs:
        if not 0 <= codec.payload_type <= 127:
            continue  # not an RTP payload type (7 bits, RFC 3550 5.1): never sent or matched
        name = codec.encoding_name.upper() or STATIC_PT.get(codec.payload_type, "")
        if name == "TELEPHONE-EVENT" and codec.clock_rate in (0, 8000):
            dtmf_pt = dtmf_pt if dtmf_pt is not None else codec.payload_type
        elif name in SUPPORTED and codec.clock_rate in (0, 8000):
            codecs.append((codec.payload_type, name))
    return MediaOffer(
        address=conn.address,
        port=audio.port,
        codecs=tuple(codecs),
        dtmf_pt=dtmf_pt,
        direction=audio.direction,
    )


def choose(offer: MediaOffer, preference: tuple[str, ...]) -> Negotiated | None:
    """The codec to use: the first of the offer's that we support, our
    preference breaking no ties (the offerer's order wins, RFC 3264 6.1)."""
    for pt, name in offer.codecs:
        if name in preference:
            return Negotiated(codec=name, payload_type=pt, dtmf_pt=offer.dtmf_pt)
    return None


def _answer_direction(offer_direction: str) -> str:
    return {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}.get(
        offer_direction, "sendrecv"
    )


def build_sdp(
    address: str,
    port: int,
    codecs: tuple[tuple[int, str], ...],
    dtmf_pt: int | None,
    *,
    session_id: int,
    version: int,
    direction: str = "sendrecv",
) -> str:
    ip_kind = "IP6" if ":" in address else "IP4"
    formats = [str(pt) for pt, _ in codecs]
    lines = [
        "v=0",
        f"o=12345-ivr {session_id} {version} IN {ip_kind} {address}",
        "s=12345 hotline",
        f"c=IN {ip_kind} {address}",
        "t=0 0",
    ]
    if dtmf_pt is not None:
        formats.append(str(dtmf_pt))
    lines.append(f"m=audio {port} RTP/AVP {' '.join(formats)}")
    for pt, name in codecs:
        lines.append(f"a=rtpmap:{pt} {name}/8000")
    if dtmf_pt is not None:
        lines.append(f"a=rtpmap:{dtmf_pt} telephone-event/8000")
        lines.append(f"a=fmtp:{dtmf_pt} 0-16")
    lines.append("a=ptime:20")
    lines.append(f"a={direction}")
    return "\r\n".join(lines) + "\r\n"


def build_answer(
    offer: MediaOffer, chosen: Negotiated, address: str, port: int, *, session_id: int, version: int
) -> str:
    return build_sdp(
        address,
        port,
        ((chosen.payload_type, chosen.codec),),
        chosen.dtmf_pt,
        session_id=session_id,
        version=version,
        direction=_answer_direction(offer.direction),
    )


def build_offer(
    address: str, port: int, preference: tuple[str, ...], *, dtmf_pt: int | None = 101
) -> str:
    pts = {"PCMU": 0, "PCMA": 8}
    codecs = tuple((pts[name], name) for name in preference if name in pts)
    session = int(time.time())
    return build_sdp(address, port, codecs, dtmf_pt, session_id=session, version=session)
