"""SIP over TCP (RFC 3261 section 18): a listener beside the UDP socket, and
connections we open to peers whose URI says ``;transport=tcp``.

A TCP byte stream has no message boundaries: each message ends where its
Content-Length says (18.3), so a message without one is an error there. Bytes
are taken as they come (a message split over many reads, several in one read),
CRLF keep-alives are answered (RFC 5626 3.5.1), and a peer that sends an
absurd header block or length loses only its own connection, with a log line.
What is parsed goes to the same handler as UDP's, with a :class:`TcpAddr`:
equal to the plain ``(host, port)`` tuple, so dispatch (and the edge guard
before it) need not know the transport, and what is sent to it goes back over
the connection it came on (18.2.2). Nothing a peer sends or does raises out of
here, and no send error stops the listener.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiosipua import SipRequest, SipResponse

from ivr.sip.messages import (
    SipParseError,
    check_request,
    make_response,
    parse_message,
    uri_addr,
)
from ivr.sip.transport import Addr, MessageHandler, valid_destination

MAX_HEADER_BYTES = 32 * 1024  # start line and headers of one message
MAX_BODY_BYTES = 64 * 1024  # one body (SDP is a few hundred bytes; a big INVITE tens of KiB)
MAX_WRITE_BACKLOG = 1024 * 1024  # bytes queued to a peer that does not read: it is dropped
CONNECT_TIMEOUT = 5.0
PING = b"\r\n\r\n"  # RFC 5626 keep-alive; answered with one CRLF (pong)
PONG = b"\r\n"

SipMessage = SipRequest | SipResponse


class TcpAddr(tuple[str, int]):
    """A peer's host and port, reached over TCP: over ``connection`` while it is
    open, else over a new connection to ``redial`` (or host:port)."""

    connection: SipConnection | None
    redial: Addr | None

    def __new__(
        cls,
        host: str,
        port: int,
        connection: SipConnection | None = None,
        redial: Addr | None = None,
    ) -> TcpAddr:
        addr = super().__new__(cls, (host, port))
        addr.connection = connection
        addr.redial = redial
        return addr

    def __getnewargs__(self) -> tuple[str, int]:
        return (self[0], self[1])


def is_reliable(addr: Addr) -> bool:
    """True when ``addr`` is reached over TCP (no retransmission timers, RFC 3261 17)."""
    return isinstance(addr, TcpAddr)


def transport_name(addr: Addr) -> str:
    return "TCP" if isinstance(addr, TcpAddr) else "UDP"


def uri_transport(uri: str) -> str:
    """The ``transport`` parameter of a SIP URI, upper case ("UDP" when none)."""
    params = uri.split("?", 1)[0].split(">", 1)[0].split(";")[1:]
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "transport" and value.strip():
            return value.strip().upper()
    return "UDP"


def hop_for(uri: str, default: Addr) -> Addr:
    """Where a request for ``uri`` goes: its host:port, over TCP when the URI
    says ``;transport=tcp``."""
    host, port = uri_addr(uri, (default[0], default[1]))
    if uri_transport(uri) == "TCP":
        return TcpAddr(host, port)
    return (host, port)


def dialog_hop(addr: Addr, remote_target: str) -> Addr:
    """The address in-dialog requests go to for a dialog whose INVITE came from
    ``addr``: over the same TCP connection while it lasts, then a new one to
    the remote target (the Contact); a UDP address is kept as it is."""
    if not isinstance(addr, TcpAddr):
        return addr
    redial = uri_addr(remote_target, (addr[0], 5060))
    return TcpAddr(addr[0], addr[1], addr.connection, redial)


class FramingError(ValueError):
    """The stream cannot be split into messages any more; the connection is closed."""

    def __init__(self, reason: str, head: bytes = b"", status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.head = head  # the header block, when it was complete (for an answer)
        self.status = status


def _content_length(head: bytes) -> int:
    """The one Content-Length of a header block (18.3); FramingError if none or bad."""
    found: set[str] = set()
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            found.add(value.strip().decode("latin-1"))
    if not found:
        raise FramingError("no Content-Length header (required over TCP, RFC 3261 18.3)", head, 400)
    if len(found) > 1:
        raise FramingError(f"conflicting Content-Length values {sorted(found)}", head, 400)
    (text,) = found
    if not text.isdigit() or len(text) > 12:
        raise FramingError(f"malformed Content-Length {text[:40]!r}", head, 400)
    length = int(text)
    if length > MAX_BODY_BYTES:
        raise FramingError(
            f"Content-Length {length} is over the {MAX_BODY_BYTES}-byte limit", head, 513
        )
    return length


def take_message(buffer: bytearray) -> bytes | None:
    """Remove and return the first whole message in ``buffer``; None when more
    bytes are needed. Raises FramingError when the stream cannot be framed."""
    ends = [i for i in (buffer.find(b"\r\n\r\n"), buffer.find(b"\n\n")) if i >= 0]
    if not ends:
        if len(buffer) > MAX_HEADER_BYTES:
            raise FramingError(f"no end of headers within {MAX_HEADER_BYTES} bytes", b"", 513)
        return None
    end = min(ends)
    separator = 4 if buffer[end : end + 4] == b"\r\n\r\n" else 2
    if end > MAX_HEADER_BYTES:
        raise FramingError(f"header block over {MAX_HEADER_BYTES} bytes", b"", 513)
    head = bytes(buffer[:end])
    total = end + separator + _content_length(head)
    if len(buffer) < total:
        return None
    message = bytes(buffer[:total])
    del buffer[:total]
    return message


class SipConnection(asyncio.Protocol):
    """One TCP connection: frames the stream into messages, sends ours."""

    def __init__(self, owner: SipStreamTransport, outbound: bool) -> None:
        self._owner = owner
        self.outbound = outbound
        self.peer: Addr = ("", 0)
        self.key: Addr = ("", 0)  # how the owner finds it (the peer, or the target we dialled)
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._closed = False
        self.last_active = 0.0
        self._idle: asyncio.TimerHandle | None = None

    # -- asyncio protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        try:
            peername = transport.get_extra_info("peername")
            self.peer = (str(peername[0]), int(peername[1]))
        except (TypeError, IndexError, ValueError):
            self.peer = ("", 0)
        self.key = self.peer
        self.last_active = self._owner.loop.time()
        if not self._owner.admit(self):
            self._closed = True
            transport.abort()
            return
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
        self._owner.forget(self)
        self._transport = None
        self._buffer.clear()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self.last_active = self._owner.loop.time()
        try:
            self._take(data)
        except Exception:  # never out of the protocol: the listener goes on
            self._owner.bad_messages += 1
            self._owner.log.exception(
                "sip: error reading TCP stream from %s:%d; closing it", *self.peer
            )
            self.close()

    def _take(self, data: bytes) -> None:
        self._buffer += data
        while self._buffer and not self._closed:
            while self._buffer.startswith(b"\r\n"):
                if self._buffer.startswith(PING):
                    del self._buffer[:4]
                    self.write(PONG)
                elif len(self._buffer) == 2:
                    return  # perhaps half of a ping
                else:
                    del self._buffer[:2]  # an empty line before a message (RFC 3261 7.5)
            try:
                raw = take_message(self._buffer)
            except FramingError as exc:
                self._framing_failed(exc)
                return
            if raw is None:
                return
            self._owner.deliver(raw, self)

    def _framing_failed(self, exc: FramingError) -> None:
        self._owner.bad_messages += 1
        self._owner.log.warning(
            "sip: closing TCP connection from %s:%d (%d bytes unread): %s",
            self.peer[0],
            self.peer[1],
            len(self._buffer),
            exc.reason,
        )
        if exc.head:  # answer a request we can read, without the body we refuse
            lines = exc.head.split(b"\n")
            kept = [
                line
                for line in lines
                if line.split(b":", 1)[0].strip().lower() not in (b"l", b"content-length")
            ]
            try:
                request = parse_message(b"\n".join(kept) + b"\r\n\r\n")
            except SipParseError:
                request = None
            if (
                isinstance(request, SipRequest)
                and request.method != "ACK"
                and check_request(request) is None  # one we can answer (Via, From, To...)
            ):
                self.write(bytes(make_response(request, exc.status, reason=exc.reason)))
        self._buffer.clear()
        self.close()

    # -- idle connections -------------------------------------------------
    def _arm_idle(self) -> None:
        timeout = self._owner.idle_timeout
        if timeout > 0 and not self._closed:
            self._idle = self._owner.loop.call_later(timeout, self._check_idle)

    def _check_idle(self) -> None:
        if self._closed:
            return
        quiet = self._owner.loop.time() - self.last_active
        if quiet < self._owner.idle_timeout or self._owner.in_use(self):
            self._arm_idle()
            return
        self._owner.log.info(
            "sip: closing TCP connection with %s:%d: idle for %.0f s", *self.peer, quiet
        )
        self.close()

    # -- sending ----------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return not self._closed and self._transport is not None and not self._transport.is_closing()

    def write(self, data: bytes) -> bool:
        transport = self._transport
        if not self.is_open or transport is None:
            return False
        try:
            transport.write(data)
        except (OSError, RuntimeError, ValueError) as exc:
            self._owner.log.warning("sip: TCP send to %s:%d failed: %s", *self.peer, exc)
            self.close()
            return False
        if transport.get_write_buffer_size() > MAX_WRITE_BACKLOG:
            self._owner.log.warning(
                "sip: closing TCP connection with %s:%d: it does not read (%d bytes queued)",
                *self.peer,
                transport.get_write_buffer_size(),
            )
            transport.abort()
            return False
        self.last_active = self._owner.loop.time()
        return True

    def close(self) -> None:
        self._closed = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


class SipStreamTransport:
    """The TCP side of the endpoint: the listener, and every open connection."""

    def __init__(
        self,
        on_message: MessageHandler,
        log: logging.Logger,
        *,
        max_connections: int = 1000,
        idle_timeout: float = 300.0,
    ) -> None:
        self._on_message = on_message
        self.log = log
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.bad_messages = 0
        self.refused_connections = 0
        # a connection's owner may keep it past the idle timeout (a call runs over it)
        self.keep: Callable[[SipConnection], bool] | None = None
        # a message that could not be sent (no connection could be opened)
        self.on_unsent: Callable[[SipMessage, Addr], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[SipConnection] = set()
        self._by_peer: dict[Addr, SipConnection] = {}
        self._dialling: dict[Addr, list[tuple[SipMessage, Addr]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_refusal_log = -1e9

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def is_listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def listen(self, host: str, port: int) -> int:
        """Listen on host:port (raises OSError when it is taken); the port."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: SipConnection(self, outbound=False), host, port
        )
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    # -- connections ------------------------------------------------------
    def admit(self, connection: SipConnection) -> bool:
        if len(self._connections) >= self.max_connections:
            self.refused_connections += 1
            now = self.loop.time()
            if now - self._last_refusal_log > 10.0:
                self._last_refusal_log = now
                self.log.warning(
                    "sip: refusing TCP connection from %s:%d: %d connections open "
                    "(sip.tcp_max_connections); %d refused so far",
                    connection.peer[0],
                    connection.peer[1],
                    len(self._connections),
                    self.refused_connections,
                )
            return False
        self._connections.add(connection)
        if not connection.outbound:
            self._by_peer[connection.key] = connection
        return True

    def forget(self, connection: SipConnection) -> None:
        self._connections.discard(connection)
        if self._by_peer.get(connection.key) is connection:
            del self._by_peer[connection.key]

    def in_use(self, connection: SipConnection) -> bool:
        return self.keep is not None and self.keep(connection)

    def deliver(self, raw: bytes, connection: SipConnection) -> None:
        """Parse one framed message and hand it on (the same handler as UDP's)."""
        host, port = connection.peer
        try:
            message = parse_message(raw)
        except SipParseError as exc:
            self.bad_messages += 1
            self.log.warning(
                "sip: bad message over TCP from %s:%d (%d bytes): %s", host, port, len(raw), exc
            )
            return
        addr = TcpAddr(host, port, connection)
        try:
            addr.redial = _via_redial(message, host)
            self._on_message(message, addr)
        except Exception:
            self.bad_messages += 1
            self.log.exception("sip: error handling message over TCP from %s:%d", host, port)
            if isinstance(message, SipRequest) and message.method != "ACK":
                self.send(make_response(message, 500), addr)

    # -- sending ----------------------------------------------------------
    def send(self, message: SipMessage, addr: Addr) -> bool:
        """Send over the connection ``addr`` names, else an open one to that
        peer, else a new one (then True means "on its way"). False (and a log
        line) when it cannot be sent."""
        connection = addr.connection if isinstance(addr, TcpAddr) else None
        try:
            data = bytes(message)
        except Exception as exc:  # a message we built badly: say so, do not crash
            self.log.warning("sip: cannot serialise message for %s:%d: %s", addr[0], addr[1], exc)
            return False
        if connection is not None and connection.is_open:
            return connection.write(data)
        target: Addr = (addr[0], addr[1])
        for key in (target, addr.redial if isinstance(addr, TcpAddr) else None):
            if key is None:
                continue
            existing = self._by_peer.get((key[0], key[1]))
            if existing is not None and existing.is_open:
                return existing.write(data)
        if isinstance(addr, TcpAddr) and addr.redial is not None:
            target = (addr.redial[0], addr.redial[1])
        if not valid_destination(target):
            self.log.warning("sip: not connecting to invalid address %r", target)
            return False
        queued = self._dialling.get(target)
        if queued is not None:
            queued.append((message, addr))
            return True
        self._dialling[target] = [(message, addr)]
        task = self.loop.create_task(self._dial(target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _dial(self, target: Addr) -> None:
        connection: SipConnection | None = None
        try:
            _, protocol = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: SipConnection(self, outbound=True), target[0], target[1]
                ),
                CONNECT_TIMEOUT,
            )
            connection = protocol
        except (OSError, TimeoutError) as exc:
            self.log.warning(
                "sip: cannot open TCP connection to %s:%d: %s",
                target[0],
                target[1],
                str(exc) or "timed out",
            )
        finally:
            waiting = self._dialling.pop(target, [])
        if connection is not None and connection.is_open:
            connection.key = target
            self._by_peer[target] = connection
            for message, _ in waiting:
                connection.write(bytes(message))
            return
        for message, addr in waiting:
            if self.on_unsent is not None:
                try:
                    self.on_unsent(message, addr)
                except Exception:
                    self.log.exception("sip: error reporting an unsent message")

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self._connections):
            connection.close()


def _via_redial(message: SipMessage, host: str) -> Addr | None:
    """Where to reconnect to answer a request whose connection closed (RFC 3261
    18.2.2): the source address, at the port of the top Via's sent-by."""
    if not isinstance(message, SipRequest):
        return None
    via = message.headers.get_first("via") or ""
    words = via.split(";", 1)[0].split(None, 1)  # none when the Via is blank
    sent_by = words[-1] if words else ""
    port_text = sent_by.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in sent_by else ""
    port = int(port_text) if port_text.isdigit() and len(port_text) <= 5 else 5060
    return (host, port) if 1 <= port <= 65535 else None
