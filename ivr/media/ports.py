"""RTP port allocation: even ports from a configured range (RTCP = port + 1)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable


class PortsExhausted(RuntimeError):
    pass


class RtpPorts:
    def __init__(self, host: str, low: int, high: int) -> None:
        self.host = host
        self._low = low + (low % 2)
        self._high = high
        self._next = self._low
        self._used: set[int] = set()

    @property
    def in_use(self) -> int:
        return len(self._used)

    async def bind(
        self, factory: Callable[[], asyncio.DatagramProtocol]
    ) -> tuple[asyncio.DatagramTransport, int]:
        """Bind a datagram endpoint on the next free even port."""
        loop = asyncio.get_running_loop()
        span = (self._high - self._low) // 2 + 1
        for _ in range(span):
            port = self._next
            self._next = self._next + 2 if self._next + 2 <= self._high else self._low
            if port in self._used:
                continue
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    factory,
                    local_addr=(self.host, port),
                    family=socket.AF_INET if ":" not in self.host else socket.AF_INET6,
                )
            except OSError:
                continue
            self._used.add(port)
            return transport, port
        raise PortsExhausted(f"no free RTP port in {self._low}-{self._high} on {self.host}")

    def release(self, port: int) -> None:
        self._used.discard(port)
