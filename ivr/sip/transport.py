"""SIP over UDP: our own datagram protocol.

We do not use aiosipua's UdpSipTransport: on Python 3.11 its connection_made
asserts ``isinstance(transport, asyncio.DatagramTransport)``, which the
selector transport fails, and a failed sendto (e.g. a Via port of 99999)
makes asyncio close the socket. Here every destination is validated before
sending and no send error ever closes the listening socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable

from aiosipua import SipRequest, SipResponse

from ivr.sip.messages import SipParseError, make_response, parse_message

Addr = tuple[str, int]
MAX_DATAGRAM = 16 * 1024  # larger SIP over UDP is refused (RFC 3261 18.1.1 asks for TCP)

MessageHandler = Callable[[SipRequest | SipResponse, Addr], None]


def valid_destination(addr: Addr) -> bool:
    """True when ``addr`` is an IP literal and a port we can send to."""
    host, port = addr[0], addr[1]
    if not 1 <= port <= 65535:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class SipTransport(asyncio.DatagramProtocol):
    """Receives datagrams, parses them, hands them on; sends safely."""

    def __init__(self, on_message: MessageHandler, log: logging.Logger) -> None:
        self._on_message = on_message
        self._log = log
        self._transport: asyncio.BaseTransport | None = None
        self.bad_messages = 0

    # -- asyncio protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._log.error("sip socket lost: %s", exc)
        self._transport = None

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: a peer went away. Never fatal.
        self._log.warning("sip socket error (ignored): %s", exc)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if len(data) > MAX_DATAGRAM:
            self.bad_messages += 1
            self._log.warning(
                "sip: dropped %d-byte datagram from %s:%d: larger than %d bytes",
                len(data),
                addr[0],
                addr[1],
                MAX_DATAGRAM,
            )
            return
        if not data.strip():
            return  # keep-alive (CRLF)
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self.bad_messages += 1
            self._log.warning(
                "sip: bad message from %s:%d (%d bytes): %s", addr[0], addr[1], len(data), exc
            )
            return
        try:
            self._on_message(message, addr)
        except Exception:
            self.bad_messages += 1
            self._log.exception("sip: error handling message from %s:%d", addr[0], addr[1])
            if isinstance(message, SipRequest) and message.method != "ACK":
                self.send(make_response(message, 500), addr)

    # -- sending ----------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, message: SipRequest | SipResponse, addr: Addr) -> bool:
        """Send one message; False (and a log line) when it cannot be sent."""
        if not valid_destination(addr):
            self._log.warning("sip: not sending to invalid address %r", addr)
            return False
        transport = self._transport
        if not isinstance(transport, asyncio.DatagramTransport) and not hasattr(
            transport, "sendto"
        ):
            return False
        try:
            transport.sendto(bytes(message), addr)  # type: ignore[union-attr]
        except (OSError, OverflowError, ValueError) as exc:
            self._log.warning("sip: send to %s:%d failed: %s", addr[0], addr[1], exc)
            return False
        return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
