"""Ticket events for screens: every subscriber gets every event from the
moment it subscribes (the web console's event stream reads these)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

QUEUE_LIMIT = 1000  # events a slow subscriber may fall behind before it is dropped


@dataclass(frozen=True)
class TicketEvent:
    id: int  # increasing, for the SSE id: line
    kind: str  # created, prefilled, updated, emergency, screen_pop
    ticket: dict[str, Any]


class TicketEvents:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[TicketEvent | None]] = set()
        self._ids = itertools.count(1)
        # told of each event published here (the relay to the other nodes)
        self.on_publish: list[Callable[[str, dict[str, Any]], None]] = []

    def publish(self, kind: str, ticket: dict[str, Any]) -> None:
        """An event of this node: to this node's screens and to the other nodes."""
        self.deliver(kind, ticket)
        for listener in list(self.on_publish):
            listener(kind, ticket)

    def deliver(self, kind: str, ticket: dict[str, Any]) -> None:
        """An event to this node's screens (one of this node, or relayed)."""
        event = TicketEvent(next(self._ids), kind, ticket)
        for queue in list(self._subscribers):
            if queue.qsize() >= QUEUE_LIMIT:
                self._subscribers.discard(queue)  # too slow: it must reconnect
                queue.put_nowait(None)
            else:
                queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[TicketEvent | None]]:
        queue: asyncio.Queue[TicketEvent | None] = asyncio.Queue(QUEUE_LIMIT + 1)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._subscribers.clear()
