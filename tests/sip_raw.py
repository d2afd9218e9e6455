"""A raw UDP SIP peer for tests that need to send exactly the bytes they want."""

from __future__ import annotations

import asyncio
import secrets


class RawPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # on Python 3.11 the selector transport is not a DatagramTransport subclass
        self.transport = transport  # type: ignore[assignment]
        self.port = int(transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    def send(self, data: bytes | str, port: int) -> None:
        assert self.transport is not None
        raw = data.encode() if isinstance(data, str) else data
        self.transport.sendto(raw, ("127.0.0.1", port))

    async def expect(self, timeout: float = 2.0) -> str:
        return (await asyncio.wait_for(self.received.get(), timeout)).decode(errors="replace")

    async def nothing(self, wait: float = 0.5) -> bool:
        try:
            await asyncio.wait_for(self.received.get(), wait)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def raw_peer() -> RawPeer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=("127.0.0.1", 0))
    return peer


def sdp(port: int, codecs: str = "0 8 101", extra: str = "") -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {codecs}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\n{extra}"
    )


def invite(
    peer_port: int,
    server_port: int,
    *,
    call_id: str | None = None,
    branch: str | None = None,
    body: str | None = None,
    via_port: int | None = None,
    cseq: str = "1 INVITE",
    drop: tuple[str, ...] = (),
) -> tuple[str, str, str]:
    """An INVITE as text, with its Call-ID and branch."""
    call_id = call_id or secrets.token_hex(8)
    branch = branch or "z9hG4bK" + secrets.token_hex(8)
    body = sdp(peer_port + 2) if body is None else body
    headers = [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{via_port or peer_port};branch={branch};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:13800138000@127.0.0.1:{peer_port}>;tag={secrets.token_hex(4)}"),
        ("To", f"<sip:12345@127.0.0.1:{server_port}>"),
        ("Call-ID", call_id),
        ("CSeq", cseq),
        ("Contact", f"<sip:13800138000@127.0.0.1:{peer_port}>"),
        ("Content-Type", "application/sdp"),
    ]
    lines = [f"INVITE sip:12345@127.0.0.1:{server_port} SIP/2.0"]
    lines += [f"{k}: {v}" for k, v in headers if k not in drop]
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body, call_id, branch


def options(peer_port: int, server_port: int) -> str:
    branch = "z9hG4bK" + secrets.token_hex(8)
    return (
        f"OPTIONS sip:12345@127.0.0.1:{server_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{peer_port};branch={branch}\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:12345@127.0.0.1>\r\n"
        f"Call-ID: {secrets.token_hex(8)}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )


def status_of(message: str) -> int:
    first = message.split("\r\n", 1)[0]
    parts = first.split()
    return int(parts[1]) if len(parts) > 1 and first.startswith("SIP/2.0") else 0


def header(message: str, name: str) -> str | None:
    for line in message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None
