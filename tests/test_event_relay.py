"""Console events cross nodes through the store (SQLite and a real PostgreSQL
server): a screen pop published on node B reaches a screen subscribed on node A,
once, and a node's own events are not handed back to it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ivr.event_relay import EventRelay
from ivr.node_roster import NodeRoster
from ivr.store import open_store
from ivr.tickets.events import TicketEvents


async def test_a_screen_pop_on_one_node_reaches_the_screens_of_another(
    store_location: str | Path,
) -> None:
    one, two = await open_store(store_location), await open_store(store_location)
    events_a, events_b = TicketEvents(), TicketEvents()
    relay_a = EventRelay(one, NodeRoster(one, "node-a"), events_a, every=0.05)
    relay_b = EventRelay(two, NodeRoster(two, "node-b"), events_b, every=0.05)
    relay_a.start()
    relay_b.start()
    try:
        async with events_a.subscribe() as screen_a, events_b.subscribe() as screen_b:
            events_b.publish("screen_pop", {"id": 7, "caller": "13812345678"})
            got = await asyncio.wait_for(screen_a.get(), 5)
            assert got is not None and got.kind == "screen_pop"
            assert got.ticket == {"id": 7, "caller": "13812345678"}
            own = await asyncio.wait_for(screen_b.get(), 1)  # B's own screen, at once
            assert own is not None and own.ticket["id"] == 7
            await asyncio.sleep(0.3)  # several relay rounds: no second copy anywhere
            assert screen_a.empty() and screen_b.empty()
            events_a.publish("edited", {"id": 7, "name": "王芳"})
            back = await asyncio.wait_for(screen_b.get(), 5)
            assert back is not None and back.kind == "edited" and back.ticket["name"] == "王芳"
    finally:
        await relay_a.stop()
        await relay_b.stop()
        await one.close()
        await two.close()
