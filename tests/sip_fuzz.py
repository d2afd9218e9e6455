"""A deterministic SIP fuzzer: malformed messages made from real ones.

``FuzzCases(seed, ...)`` yields the same cases for the same seed: each is a
real message (an INVITE as sipp and as baresip send it, ACK, BYE, INFO with a
key, OPTIONS, CANCEL, REGISTER, a 200 OK) put through one to three mutations
drawn from :data:`MUTATIONS` (bad SDP, absurd Content-Length, thousands of
headers, long lines, binary junk, unicode, truncations, duplicated or missing
mandatory headers, bad Via/CSeq/From/To, bad request-URIs, odd line ends...),
and a few are pure random bytes. :class:`FuzzPeer` sends them over UDP and
behaves like a sane caller with whatever comes back: it ACKs every final
answer to an INVITE and hangs up (BYE) what was answered 200, and answers the
hotline's own requests, so the fuzz leaves no call up for long.
:func:`tcp_stream` cuts a run of cases into one TCP byte stream.

Used by tests/test_sip_fuzz.py and bench/fuzz.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# -- real messages ----------------------------------------------------------
# {ip} the peer's address, {port} its SIP port, {server} the hotline's
# "ip:port", {call} a Call-ID, {branch} a Via branch, {tag} a From tag,
# {rtp} an RTP port; Content-Length is filled in from the body.

SIPP_SDP = (
    "v=0\r\n"
    "o=user1 53655765 2353687637 IN IP4 {ip}\r\n"
    "s=-\r\n"
    "c=IN IP4 {ip}\r\n"
    "t=0 0\r\n"
    "m=audio {rtp} RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)

BARESIP_SDP = (
    "v=0\r\n"
    "o=- 1466227893 3917476322 IN IP4 {ip}\r\n"
    "s=-\r\n"
    "c=IN IP4 {ip}\r\n"
    "t=0 0\r\n"
    "a=tool:baresip 3.10.1\r\n"
    "m=audio {rtp} RTP/AVP 0 8 101\r\n"
    "b=AS:64\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=sendrecv\r\n"
    "a=label:1\r\n"
    "a=rtcp-rsize\r\n"
    "a=ssrc:3129456789 cname:7f3c1a2b-baresip\r\n"
    "a=mid:0\r\n"
)

TEMPLATES: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    "invite-sipp": (
        "INVITE sip:12345@{server} SIP/2.0",
        [
            ("Via", "SIP/2.0/UDP {ip}:{port};branch={branch}"),
            ("From", "sipp <sip:sipp@{ip}:{port}>;tag={tag}"),
            ("To", "12345 <sip:12345@{server}>"),
            ("Call-ID", "{call}@{ip}"),
            ("CSeq", "1 INVITE"),
            ("Contact", "sip:sipp@{ip}:{port}"),
            ("Max-Forwards", "70"),
            ("Subject", "Performance Test"),
            ("Content-Type", "application/sdp"),
        ],
        SIPP_SDP,
    ),
    "invite-baresip": (
        "INVITE sip:12345@{server} SIP/2.0",
        [
            ("Via", "SIP/2.0/UDP {ip}:{port};branch={branch};rport"),
            ("Contact", '<sip:baresip-{tag}@{ip}:{port}>;+sip.instance="<urn:uuid:{call}>"'),
            ("Max-Forwards", "70"),
            ("To", "<sip:12345@{server}>"),
            ("From", '"13800138000" <sip:13800138000@{ip}>;tag={tag}'),
            ("Call-ID", "{call}"),
            ("CSeq", "4711 INVITE"),
            ("User-Agent", "baresip v3.10.1 (x86_64/linux)"),
            ("Allow", "INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER"),
            ("Supported", "replaces,norefersub,100rel"),
            ("Content-Type", "application/sdp"),
        ],
        BARESIP_SDP,
    ),
    "ack": (
        "ACK sip:ivr@{server} SIP/2.0",
        [
            ("Via", "SIP/2.0/UDP {ip}:{port};branch={branch}"),
            ("From", "sipp <sip:sipp@{ip}:{port}>;tag={tag}"),
            ("To", "12345 <sip:12345@{server}>;tag=a1b2c3d4e5f6"),
            ("Call-ID", "{call}@{ip}"),
            ("CSeq", "1 ACK"),
            ("Contact", "sip:sipp@{ip}:{port}"),
            ("Max-Forwards", "70"),
            ("Subject", "Performance Test"),
        ],
        "",
    ),
    "bye": (
        "BYE sip:ivr@{server} SIP/2.0",
        [
            ("Via", "SIP/2.0/UDP {ip}:{port};branch={branch};rport"),
            ("Contact", "<sip:baresip-{tag}@{ip}:{port}>"),
            ("Max-Forwards", "70"),
            ("To", "<sip:12345@{server}>;tag=a1b2c3d4e5f6"),
            ("From", '"13800138000" <sip:13800138000@{ip}>;tag={tag}'),
            ("Call-ID", "{call}"),
            ("CSeq", "4712 BYE"),
            ("User-Agent", "baresip v3.10.1 (x86_64/linux)"),
        ],
        "",
    ),
    "info": (
        "INFO sip:ivr@{server} SIP/2.0",
        [
            ("Via", "SIP/2.0/UDP {ip}:{port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("To", "<sip:12345@{server}>;tag=a1b2c3d4e5f6"),
            ("From", "<sip:13800138000@{ip}>;tag={tag}"),
            ("Call-ID", "{call}"),
            ("CSeq", "4713 INFO"),
            ("Content-Type", "application/dtmf-relay"),
        ],
        "Signal=5\r\nDuration=160\r\n",
    ),
    "options": (
        "OPTIONS sip:12345@{server} SIP/2.0",
        [
            ("Via", "SIP/2.0/UDP {ip}:{port};branch={branch}"),
            ("From", "<sip:probe@{ip}>;tag={tag}"),
            ("To", "<sip:12345@{server}>"),
            ("Call-ID", "{call}"),
            ("CSeq", "1 OPTIONS"),
            ("Max-Forwards", "70"),
            ("User-Agent", "friendly-scanner"),
            ("Accept", "application/sdp"),
        ],
        "",
    ),
    "cancel": (
        "CANCEL sip:12345@{server} SIP/2.0",
        [
            ("Via", "SIP/2.0/UDP {ip}:{port};branch={branch}"),
            ("From", "sipp <sip:sipp@{ip}:{port}>;tag={tag}"),
            ("To", "12345 <sip:12345@{server}>"),
            ("Call-ID", "{call}@{ip}"),
            ("CSeq", "1 CANCEL"),
            ("Max-Forwards", "70"),
        ],
        "",
    ),
    "register": (
        "REGISTER sip:{server} SIP/2.0",
        [
            ("Via", "SIP/2.0/UDP {ip}:{port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("To", "<sip:1001@{server}>"),
            ("From", "<sip:1001@{server}>;tag={tag}"),
            ("Call-ID", "{call}"),
            ("CSeq", "1 REGISTER"),
            ("Contact", "<sip:1001@{ip}:{port}>;expires=3600"),
            ("Expires", "3600"),
        ],
        "",
    ),
    "response-200": (
        "SIP/2.0 200 OK",
        [
            ("Via", "SIP/2.0/UDP {server};branch={branch};rport={port};received={ip}"),
            ("From", "<sip:ivr@{server}>;tag={tag}"),
            ("To", "<sip:op1@{ip}:{port}>;tag=ff00ff00"),
            ("Call-ID", "{call}"),
            ("CSeq", "1 INVITE"),
            ("Contact", "<sip:op1@{ip}:{port}>"),
            ("Content-Type", "application/sdp"),
        ],
        SIPP_SDP,
    ),
}

# odd values put in place of a header's (or the request-URI's, or SDP's)
ODD_VALUES = (
    "",
    " ",
    "\t",
    "0",
    "-1",
    "-2147483649",
    "4294967296",
    "99999999999999999999999999999",
    "1e309",
    "NaN",
    "null",
    "%00",
    "\x00",
    "\x00\x01\x02\x7f",
    ";",
    ";;;;",
    "<",
    ">",
    "<>",
    "<sip:>",
    "sip:",
    "sip:@",
    "sip::::",
    "sip:[::1",
    "sip:12345@[fe80::1%eth0]:5060",
    "sip:12345@256.256.256.256:5060",
    "sip:12345@127.0.0.1:99999",
    "sip:12345@127.0.0.1:-5",
    "tel:+861012345;phone-context=+86",
    "http://127.0.0.1/../../etc/passwd",
    "sips:12345@127.0.0.1;transport=tls",
    '"unterminated <sip:a@b>',
    "a" * 300,
    "=" * 40,
    "tag=;tag=;tag=",
    ";branch=",
    "SIP/2.0/UDP",
    "SIP/2.0/UDP :5060",
    "SIP/2.0/TLS 127.0.0.1:0;branch=z9hG4bK1",
    "SIP/3.0/SCTP host;branch=z9hG4bKx;received=::::",
    "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1, SIP/2.0/UDP ,,,",
    "1",
    "INVITE",
    "1 INVITE 2",
    "abc INVITE",
    "-1 INVITE",
    "4294967296 INVITE",
    "1 BYE",
    "1 invite",
    "１ INVITE",  # a full-width digit
    "电话 ☎ 市民热线",
    "\u202e\u200b\ufeff",
    "😀" * 50,
    "\ud800",  # a lone surrogate (encoded with surrogatepass)
    "é" * 100,
    "%s%s%s%n",
    "${jndi:ldap://127.0.0.1/a}",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
)

# SDP bodies that are not usable (or barely)
BAD_SDP = (
    "",
    "v=0\r\n",
    "garbage",
    "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nt=0 0\r\nm=audio {rtp} RTP/AVP 0\r\n",  # no c=
    "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n",  # no m=
    "v=0\r\nc=IN IP4 example.invalid\r\nm=audio {rtp} RTP/AVP 0\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio 70000 RTP/AVP 0\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio -1 RTP/AVP 0\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio abc RTP/AVP 0\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio {rtp} RTP/AVP\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio {rtp} RTP/AVP x y z\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio {rtp} RTP/AVP 99999\r\na=rtpmap:99999 PCMU/8000\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio {rtp} RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio {rtp} RTP/AVP 0\r\na=rtpmap:0\r\na=rtpmap:\r\n"
    "a=rtpmap:x y\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio {rtp} RTP/AVP 0\r\na=rtpmap:0 PCMU/abc\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio {rtp} RTP/AVP 101\r\na=rtpmap:101 telephone-event/8000\r\n",
    "v=0\r\nc=IN IP6 {ip}\r\nm=audio {rtp} RTP/AVP 0\r\n",
    "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 0 RTP/AVP 0\r\na=inactive\r\n",
    "v=0\r\nc=\r\nm=\r\na=\r\n=\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\n" + "m=audio {rtp} RTP/AVP 0\r\n" * 200,
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio {rtp} RTP/AVP 0\r\n" + "a=x:" + "y" * 9000 + "\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\nm=video {rtp} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio {rtp} RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 x\r\n",
    "v=0\nc=IN IP4 {ip}\nm=audio {rtp} RTP/AVP 0\n",  # LF only
    "\x00\xff\xfe" * 30,
    "v=0\r\nc=IN IP4 {ip}\r\nm=audio {rtp} RTP/AVP 0 8\r\na=rtpmap:8 PCMA/8000/1/2/3\r\n",
)

SHORT_NAMES = {"via": "v", "from": "f", "to": "t", "call-id": "i", "contact": "m"}
SHORT_NAMES |= {"content-type": "c", "content-length": "l", "supported": "k"}
MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length")


@dataclass
class Message:
    """A message being mutated: the start line, headers in order, the body;
    Content-Length is the body's unless a mutation set it."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes
    eol: str = "\r\n"
    length: str | None = ""  # "" = the body's length; None = no Content-Length header
    length_name: str = "Content-Length"

    def render(self) -> bytes:
        lines = [self.start, *(f"{name}: {value}" for name, value in self.headers)]
        if self.length is not None:
            value = str(len(self.body)) if self.length == "" else self.length
            lines.append(f"{self.length_name}: {value}")
        head = self.eol.join(lines) + self.eol + self.eol
        return head.encode("utf-8", "surrogatepass") + self.body


@dataclass(frozen=True)
class Case:
    """One fuzz case: the bytes, and what made them (for the failure report)."""

    number: int
    template: str
    mutations: tuple[str, ...]
    data: bytes

    def describe(self) -> str:
        return f"case {self.number}: {self.template} + {', '.join(self.mutations) or 'none'}"


Mutation = Callable[["FuzzCases", random.Random, Message], None]
ByteMutation = Callable[[random.Random, bytes], bytes]


def _odd(rng: random.Random) -> str:
    return rng.choice(ODD_VALUES)


def _pick_header(rng: random.Random, msg: Message) -> int | None:
    return rng.randrange(len(msg.headers)) if msg.headers else None


# -- structured mutations -----------------------------------------------------
def drop_header(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    """A mandatory header missing."""
    name = rng.choice(MANDATORY)
    if name == "Content-Length":
        msg.length = None
    msg.headers = [(k, v) for k, v in msg.headers if k.lower() != name.lower()]


def duplicate_header(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    """A header (often a mandatory one) twice or many times, sometimes differing."""
    index = _pick_header(rng, msg)
    if index is None:
        return
    name, value = msg.headers[index]
    copies = rng.choice((1, 1, 2, 50))
    other = value if rng.random() < 0.5 else _odd(rng)
    for _ in range(copies):
        msg.headers.insert(rng.randrange(len(msg.headers) + 1), (name, other))


def odd_header_value(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    index = _pick_header(rng, msg)
    if index is not None:
        msg.headers[index] = (msg.headers[index][0], _odd(rng))


def odd_header_name(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    """A header name that is empty, spaced, unicode, or cased oddly."""
    index = _pick_header(rng, msg)
    if index is None:
        return
    name, value = msg.headers[index]
    msg.headers[index] = (
        rng.choice(("", " ", f"{name} ", f" {name}", name.upper(), name.swapcase(), "通话", ":")),
        value,
    )


def bad_via(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    value = rng.choice(
        (
            "SIP/2.0/UDP {ip}:{port}",  # no branch
            "SIP/2.0/UDP {ip}:{port};branch=",
            "SIP/2.0/UDP {ip}:{port};branch",
            "SIP/2.0/UDP ;branch=z9hG4bKx",
            "SIP/2.0/UDP {ip}:0;branch=z9hG4bKx",
            "SIP/2.0/UDP {ip}:65536;branch=z9hG4bKx;rport=70000",
            "SIP/2.0/UDP {ip}:{port};branch=z9hG4bK" + "b" * 2000,
            "SIP/2.0/UDP [::1:{port};branch=z9hG4bKx",
            "SIP/2.0 {ip}:{port};branch=z9hG4bKx",
            "SIP/2.0/UDP host.invalid:{port};branch=z9hG4bKx;received=300.1.1.1",
            "SIP/2.0/UDP {ip}:{port};branch=z9hG4bKx;ttl=-5;maddr=;rport=",
            "garbage",
        )
    )
    _replace(msg, "via", fuzz.fill(value, rng))


def bad_cseq(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    method = msg.start.split(" ", 1)[0]
    value = rng.choice(
        (
            "",
            "1",
            method,
            f"x {method}",
            f"-1 {method}",
            f"4294967296 {method}",
            f"99999999999999999999 {method}",
            f"1.5 {method}",
            f"0x10 {method}",
            f"1 {method} extra",
            "1 FOO",
            f"1   {method}",
            f"١ {method}",  # an Arabic-Indic digit
        )
    )
    _replace(msg, "cseq", value)


def bad_from_to(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    value = rng.choice(
        (
            "<sip:a@b",
            "sip:a@b>",
            "<>",
            "<sip:a@b>;tag=",
            "<sip:a@b>;tag=1;tag=2",
            '"a\\"b" <sip:a@b>;tag=x',
            '"' + "n" * 3000 + '" <sip:a@b>;tag=x',
            "<sip:" + "u" * 3000 + "@127.0.0.1>;tag=x",
            "<tel:>;tag=x",
            "<sip:12345@[::1]:5060;transport=udp?x=y>;tag=x",
            "张三 <sip:张三@127.0.0.1>;tag=电话",
            ";tag=x",
            "<<sip:a@b>>;tag=x",
        )
    )
    _replace(msg, rng.choice(("from", "to")), value)


def bad_request_line(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    parts = msg.start.split(" ")
    choice = rng.randrange(9)
    if choice == 0:
        parts[0] = rng.choice(("FOO", "invite", "INV ITE", "", "INVITE\x00", "通话", "X" * 200))
    elif choice == 1 and len(parts) > 1:
        parts[1] = _odd(rng)
    elif choice == 2:
        parts[-1] = rng.choice(("SIP/3.0", "SIP/2.0 ", "HTTP/1.1", "SIP/", "", "sip/2.0"))
    elif choice == 3:
        parts = parts[: rng.randrange(len(parts))]
    elif choice == 4:
        parts = [*parts, "extra", "words"]
    elif choice == 5 and len(parts) > 1:
        parts[1] = "sip:" + "9" * rng.choice((300, 5000, 20000)) + "@127.0.0.1"
    elif choice == 6 and len(parts) > 1:
        parts[1] = rng.choice(("sip:12345@127.0.0.1:0", "sip:@", "sips:", "<sip:12345>", "*"))
    elif choice == 7:
        msg.start = "  " + msg.start
        return
    else:
        msg.start = msg.start.replace(" ", rng.choice(("\t", "  ", "")))
        return
    msg.start = " ".join(parts)


def bad_content_length(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    real = len(msg.body)
    msg.length = rng.choice(
        (
            "-1",
            "-99999",
            "99999999999999999999",
            str(real + rng.randint(1, 50)),
            str(max(0, real - rng.randint(1, 50))),
            "0",
            "abc",
            "",
            "1e3",
            "0x10",
            f"{real}, {real}",
            f" {real} ",
            "４２",  # full-width digits
        )
    )
    if rng.random() < 0.2:
        msg.length_name = rng.choice(("l", "content-length", "CONTENT-LENGTH"))


def many_headers(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    count = rng.choice((100, 1000, 3000))
    name = rng.choice(("X-Junk", "Via", "Record-Route", "Route", "Contact"))
    values = {
        "Via": "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKj",
        "Record-Route": "<sip:10.0.0.1;lr>",
        "Route": "<sip:10.0.0.1;lr>",
        "Contact": "<sip:x@10.0.0.1>",
    }
    value = values.get(name, "a")
    at = rng.randrange(len(msg.headers) + 1)
    msg.headers[at:at] = [(name, value)] * count


def long_line(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    length = rng.choice((1000, 8000, 15000, 70000))
    index = _pick_header(rng, msg)
    if index is None or rng.random() < 0.3:
        msg.headers.append(("X-Long", "z" * length))
    else:
        name, value = msg.headers[index]
        msg.headers[index] = (name, value + "x" * length)


def bad_sdp(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    msg.body = fuzz.fill(rng.choice(BAD_SDP), rng).encode("utf-8", "surrogatepass")
    if not any(k.lower() in ("content-type", "c") for k, _ in msg.headers):
        msg.headers.append(("Content-Type", "application/sdp"))


def odd_content_type(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    value = rng.choice(
        (
            "",
            "text/plain",
            "application/sdp; charset=utf-8",
            "APPLICATION/SDP",
            "multipart/mixed;boundary=unique",
            "application/dtmf",
            "application/dtmf-relay",
            ";;;",
            "application/" + "s" * 500,
        )
    )
    _replace(msg, "content-type", value)


def body_junk(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    """The body: random bytes, INFO key bodies gone wrong, or a huge one."""
    choice = rng.randrange(4)
    if choice == 0:
        msg.body = rng.randbytes(rng.randint(1, 1500))
    elif choice == 1:
        msg.body = rng.choice(
            (b"Signal=", b"Signal=Z", b"Signal=55555", b"=\r\n=", b"10", b"11", b"99", b"\x00")
        )
    elif choice == 2:
        msg.body = b"v=0\r\n" * rng.choice((10, 3000))
    else:
        msg.body = "号码 13800138000 ☎".encode() * rng.randint(1, 300)


def line_endings(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    msg.eol = rng.choice(("\n", "\r", "\n\r", "\r\r\n", "\r\n "))


def folded_header(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    """Header folding (obsolete continuation lines), well or badly placed."""
    index = _pick_header(rng, msg)
    if index is None:
        return
    name, value = msg.headers[index]
    msg.headers[index] = (name, value[: len(value) // 2] + "\r\n " + value[len(value) // 2 :])
    if rng.random() < 0.5:
        msg.headers.insert(0, (" continuation", "of nothing"))


def compact_names(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    """Compact header forms (RFC 3261 7.3.3), mixed with long ones."""
    msg.headers = [
        (SHORT_NAMES.get(k.lower(), k) if rng.random() < 0.7 else k, v) for k, v in msg.headers
    ]
    if rng.random() < 0.5:
        msg.length_name = "l"


def unicode_insert(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    index = _pick_header(rng, msg)
    junk = rng.choice(("电话", "\u202e", "\ufeff", "\u0000", "😀", "\ud800", "Ω" * 40, "\u2028"))
    if index is None or rng.random() < 0.2:
        msg.start = msg.start.replace(" ", " " + junk, 1)
    else:
        name, value = msg.headers[index]
        at = rng.randrange(len(value) + 1)
        msg.headers[index] = (name, value[:at] + junk + value[at:])


def no_blank_line(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    """The body glued to the headers (no empty line between)."""
    if msg.body:
        msg.headers.append(("X-Glued", msg.body.decode("latin-1").replace("\r\n", " ")))
        msg.body = b""


def as_response(fuzz: FuzzCases, rng: random.Random, msg: Message) -> None:
    """A status line instead of the request line (a stray or odd response)."""
    msg.start = rng.choice(
        (
            "SIP/2.0 200 OK",
            "SIP/2.0 180 Ringing",
            "SIP/2.0 99 Too Low",
            "SIP/2.0 700 Too High",
            "SIP/2.0 abc OK",
            "SIP/2.0 -200 OK",
            "SIP/2.0 200",
            "SIP/2.0",
            "SIP/2.0 487 请求终止",
            "SIP/2.0 481 " + "r" * 3000,
        )
    )


STRUCTURED: tuple[tuple[str, Mutation, int], ...] = (
    ("drop_header", drop_header, 8),
    ("duplicate_header", duplicate_header, 6),
    ("odd_header_value", odd_header_value, 10),
    ("odd_header_name", odd_header_name, 3),
    ("bad_via", bad_via, 6),
    ("bad_cseq", bad_cseq, 6),
    ("bad_from_to", bad_from_to, 6),
    ("bad_request_line", bad_request_line, 6),
    ("bad_content_length", bad_content_length, 7),
    ("many_headers", many_headers, 2),
    ("long_line", long_line, 3),
    ("bad_sdp", bad_sdp, 8),
    ("odd_content_type", odd_content_type, 3),
    ("body_junk", body_junk, 4),
    ("line_endings", line_endings, 3),
    ("folded_header", folded_header, 2),
    ("compact_names", compact_names, 2),
    ("unicode_insert", unicode_insert, 5),
    ("no_blank_line", no_blank_line, 1),
    ("as_response", as_response, 2),
)


# -- byte mutations (after rendering) ----------------------------------------
def flip_bits(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def random_bytes_in(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 20)):
        if out:
            out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def splice(rng: random.Random, data: bytes) -> bytes:
    """Two copies cut and joined (two messages, or one in another)."""
    a, b = rng.randrange(len(data) + 1), rng.randrange(len(data) + 1)
    return data[:a] + data[b:]


def overlong_utf8(rng: random.Random, data: bytes) -> bytes:
    """Invalid UTF-8 (overlong forms, stray continuation bytes) spliced in."""
    junk = rng.choice((b"\xc0\xaf", b"\xe0\x80\xaf", b"\x80\x80", b"\xff\xfe", b"\xed\xa0\x80"))
    at = rng.randrange(len(data) + 1)
    return data[:at] + junk + data[at:]


def nul_bytes(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + b"\x00" * rng.randint(1, 64) + data[at:]


BYTEWISE: tuple[tuple[str, ByteMutation, int], ...] = (
    ("flip_bits", flip_bits, 5),
    ("random_bytes_in", random_bytes_in, 4),
    ("truncate", truncate, 6),
    ("splice", splice, 2),
    ("overlong_utf8", overlong_utf8, 2),
    ("nul_bytes", nul_bytes, 2),
)


def _replace(msg: Message, name: str, value: str) -> None:
    short = SHORT_NAMES.get(name)
    for i, (key, _) in enumerate(msg.headers):
        if key.lower() in (name, short):
            msg.headers[i] = (key, value)
            return
    msg.headers.append((name.title(), value))


class FuzzCases:
    """The fuzz cases of ``seed``, addressed to ``server`` ("ip:port") from a
    peer at ``ip:port``; the same seed gives the same cases."""

    def __init__(
        self,
        seed: int,
        server: str,
        ip: str = "127.0.0.1",
        port: int = 5060,
        transport: str = "UDP",
    ) -> None:
        self.seed = seed
        self.server = server
        self.ip = ip
        self.port = port
        self.transport = transport  # in the Via headers: UDP, or TCP for streams
        self._rng = random.Random(seed)
        self._number = 0
        names = list(TEMPLATES)
        # INVITEs are what an attacker sends most and what costs the most
        self._templates = names
        self._template_weights = [4 if n.startswith("invite") else 1 for n in names]

    def fill(self, text: str, rng: random.Random) -> str:
        return (
            text.replace("SIP/2.0/UDP", f"SIP/2.0/{self.transport}")
            .replace("{ip}", self.ip)
            .replace("{port}", str(self.port))
            .replace("{server}", self.server)
            .replace("{call}", f"fz{self.seed}-{self._number}-{rng.randrange(1 << 30):x}")
            .replace("{branch}", f"z9hG4bKfz{self._number}x{rng.randrange(1 << 30):x}")
            .replace("{tag}", f"{rng.randrange(1 << 32):x}")
            .replace("{rtp}", str(rng.choice((6000, 10000, 40000, 0, 65535))))
        )

    def message(self, template: str, rng: random.Random) -> Message:
        start, headers, body = TEMPLATES[template]
        filled = [(k, self.fill(v, rng)) for k, v in headers]
        return Message(self.fill(start, rng), filled, self.fill(body, rng).encode())

    def next(self) -> Case:
        rng = self._rng
        number = self._number
        if rng.random() < 0.04:  # pure junk: random bytes or random text
            size = rng.choice((0, 1, 4, 12, 100, 1400, 9000))
            if rng.random() < 0.5:
                data = rng.randbytes(size)
            else:
                data = "".join(chr(rng.randrange(32, 0x3000)) for _ in range(size)).encode(
                    "utf-8", "surrogatepass"
                )
            self._number += 1
            return Case(number, "junk", ("random",), data)
        template = rng.choices(self._templates, self._template_weights)[0]
        msg = self.message(template, rng)
        applied: list[str] = []
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            name, mutate, _w = rng.choices(STRUCTURED, [w for _, _, w in STRUCTURED])[0]
            mutate(self, rng, msg)
            applied.append(name)
        data = msg.render()
        if rng.random() < 0.3:
            name, change, _w = rng.choices(BYTEWISE, [w for _, _, w in BYTEWISE])[0]
            data = change(rng, data)
            applied.append(name)
        self._number += 1
        return Case(number, template, tuple(applied), data)

    def take(self, count: int) -> list[Case]:
        return [self.next() for _ in range(count)]

    def __iter__(self) -> Iterator[Case]:
        while True:
            yield self.next()


def tcp_stream(cases: list[Case]) -> bytes:
    """Cases as one TCP byte stream: each message as it is (a wrong
    Content-Length makes the next message start in the wrong place, as on a
    real stream), CRLF keep-alives between some."""
    return b"".join(c.data + (b"\r\n\r\n" if c.number % 7 == 0 else b"") for c in cases)


# -- the peer that sends them -------------------------------------------------
def _headers(text: str) -> tuple[str, dict[str, str]]:
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    found: dict[str, str] = {}
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            key = {"v": "via", "f": "from", "t": "to", "i": "call-id"}.get(key, key)
            found.setdefault(key, value.strip())
    return head[0], found


@dataclass
class PeerCounts:
    sent: int = 0
    answers: dict[int, int] = field(default_factory=dict)
    acked: int = 0
    hung_up: int = 0
    requests_answered: int = 0
    connections: int = 0  # TCP connections opened
    closed_by_server: int = 0  # ... that the hotline closed (junk on the stream)


def replies_to(
    data: bytes, local: tuple[str, int], target: str, counts: PeerCounts, transport: str = "UDP"
) -> list[bytes]:
    """What a sane phone at ``local`` sends back for one message the hotline
    (at ``target``, "ip:port") sent: an ACK for a final answer to an INVITE and
    a BYE after a 200; a 200 for a request (a BYE at the end of a fuzzed call)."""
    text = data.decode("utf-8", "replace")
    first, headers = _headers(text)
    if not first.startswith("SIP/2.0 "):
        if first.startswith("ACK ") or " SIP/2.0" not in first:
            return []
        lines = ["SIP/2.0 200 OK"]
        lines += [f"{n.title()}: {headers.get(n, '')}" for n in ("via", "from", "to", "call-id")]
        lines += [f"CSeq: {headers.get('cseq', '')}", "Content-Length: 0"]
        counts.requests_answered += 1
        return [("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace")]
    try:
        status = int(first.split()[1])
    except (IndexError, ValueError):
        return []
    counts.answers[status] = counts.answers.get(status, 0) + 1
    cseq = headers.get("cseq", "").split()
    if status < 200 or len(cseq) != 2 or cseq[1].upper() != "INVITE":
        return []
    common = (
        f"From: {headers.get('from', '')}\r\nTo: {headers.get('to', '')}\r\n"
        f"Call-ID: {headers.get('call-id', '')}\r\nMax-Forwards: 70\r\n"
    )
    n = counts.acked
    own_via = f"SIP/2.0/{transport} {local[0]}:{local[1]};branch=z9hG4bK"
    # the ACK of a non-2xx is part of the INVITE's transaction: its Via
    via = f"{own_via}ack{n}" if status < 300 else headers.get("via", "")
    out = [f"ACK sip:ivr@{target} SIP/2.0\r\nVia: {via}\r\n{common}CSeq: {cseq[0]} ACK\r\n"]
    counts.acked += 1
    if status < 300:
        number = int(cseq[0]) + 1 if cseq[0].isdigit() else 2
        bye = f"BYE sip:ivr@{target} SIP/2.0\r\nVia: {own_via}bye{n}\r\n"
        out.append(f"{bye}{common}CSeq: {number} BYE\r\n")
        counts.hung_up += 1
    return [(m + "Content-Length: 0\r\n\r\n").encode("utf-8", "replace") for m in out]


class FuzzPeer(asyncio.DatagramProtocol):
    """Sends cases over UDP; answers like a sane phone (:func:`replies_to`)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.ip = "127.0.0.1"
        self.counts = PeerCounts()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ip, self.port = transport.get_extra_info("sockname")[:2]

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP from a port the hotline answered to that nobody listens on

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)
        self.counts.sent += 1

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        for reply in replies_to(data, (self.ip, self.port), f"{addr[0]}:{addr[1]}", self.counts):
            self.transport.sendto(reply, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def fuzz_peer(host: str = "127.0.0.1") -> FuzzPeer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(FuzzPeer, local_addr=(host, 0))
    return peer


async def send_cases(
    peer: FuzzPeer,
    cases: list[Case],
    addr: tuple[str, int],
    burst_bytes: int = 16_000,
    queue_limit: int = 48_000,
) -> int:
    """Send ``cases`` in bursts of about ``burst_bytes``; before each burst,
    wait until the hotline has read its socket's queue down to ``queue_limit``
    bytes (the kernel's count in /proc/net/udp: the hotline is on this
    machine), so the cases reach its parser rather than overflow its buffer.
    The datagrams the kernel dropped all the same, in the end."""
    first = udp_socket(addr[1])[1]
    sent = 0
    for case in cases:
        if sent == 0:
            for _ in range(500):  # at most a second: a hotline that stopped reading
                if udp_socket(addr[1])[0] <= queue_limit:
                    break
                await asyncio.sleep(0.002)
        if len(case.data) <= 65_000:  # the largest UDP payload over IPv4 loopback
            peer.send(case.data, addr)
        sent += len(case.data)
        if sent >= burst_bytes:
            sent = 0
            await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    return udp_socket(addr[1])[1] - first


def udp_socket(port: int) -> tuple[int, int]:
    """The bytes queued for reading and the datagrams dropped (the receive
    buffer full) on the UDP socket bound to ``port`` on this machine, from
    /proc/net/udp."""
    queued = drops = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 12 and int(fields[1].split(":")[1], 16) == port:
            queued += int(fields[4].split(":")[1], 16)
            drops += int(fields[-1])
    return queued, drops


def _frames(buffer: bytearray) -> list[bytes]:
    """Whole messages at the front of ``buffer`` (the hotline's own, so well
    framed), taken out of it; CRLF keep-alive answers skipped."""
    out: list[bytes] = []
    while True:
        while buffer[:2] == b"\r\n":
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return out
        _, headers = _headers(buffer[:end].decode("utf-8", "replace"))
        length = headers.get("content-length", headers.get("l", "0"))
        total = end + 4 + (int(length) if length.isdigit() else 0)
        if len(buffer) < total:
            return out
        out.append(bytes(buffer[:total]))
        del buffer[:total]


async def tcp_connection(
    addr: tuple[str, int], stream: bytes, counts: PeerCounts, linger: float = 0.3
) -> None:
    """One TCP connection: ``stream`` written, what comes back for ``linger``
    seconds answered like a phone would (:func:`replies_to`), then closed."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(*addr)
    counts.connections += 1
    local = writer.get_extra_info("sockname")[:2]
    target = f"{addr[0]}:{addr[1]}"
    buffer = bytearray()
    try:
        writer.write(stream)
        counts.sent += 1
        await writer.drain()
        deadline = loop.time() + linger
        while (left := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                break
            if not data:
                counts.closed_by_server += 1
                break
            buffer += data
            for message in _frames(buffer):
                for reply in replies_to(message, local, target, counts, transport="TCP"):
                    writer.write(reply)
    except (ConnectionError, OSError):
        counts.closed_by_server += 1
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def send_tcp_streams(
    addr: tuple[str, int],
    cases: list[Case],
    counts: PeerCounts,
    per_stream: int = 10,
    at_once: int = 20,
) -> None:
    """``cases`` over TCP, ``per_stream`` to a connection (:func:`tcp_stream`),
    ``at_once`` connections open together."""
    streams = [tcp_stream(cases[i : i + per_stream]) for i in range(0, len(cases), per_stream)]
    for i in range(0, len(streams), at_once):
        await asyncio.gather(*(tcp_connection(addr, s, counts) for s in streams[i : i + at_once]))
