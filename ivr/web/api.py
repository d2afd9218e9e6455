"""The JSON API over aiohttp: tickets for screens, and a server-sent event
stream of ticket changes (what the operator console listens to).

Read-only for now and bound to 127.0.0.1 by default; log-in and roles come
with the web console (see docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from ivr.ticket_events import TicketEvents
from ivr.tickets import TicketStore

KEEPALIVE_S = 15.0


class HotlineApi:
    def __init__(
        self,
        *,
        tickets: Callable[[], TicketStore | None],
        events: TicketEvents,
        status: Callable[[], dict[str, Any]],
        log: logging.Logger,
    ) -> None:
        self._tickets = tickets
        self._events = events
        self._status = status
        self._log = log
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/api/health", self._health),
                web.get("/api/tickets/{id}", self._ticket),
                web.get("/api/tickets/{id}/history", self._history),
                web.get("/api/calls/{call_id}/tickets", self._call_tickets),
                web.get("/api/events", self._stream),
            ]
        )

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # the bound port when 0 was asked for
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        self._log.info("api: listening on http://%s:%d", host, self.port)

    async def stop(self) -> None:
        self._events.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ------------------------------------------------------------
    async def _health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", **self._status()})

    def _store(self) -> TicketStore:
        store = self._tickets()
        if store is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "starting up"}), content_type="application/json"
            )
        return store

    @staticmethod
    def _ticket_id(request: web.Request) -> int:
        raw = request.match_info["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"ticket id {raw[:40]!r} is not a number"}),
                content_type="application/json",
            )
        return int(raw)

    async def _ticket(self, request: web.Request) -> web.Response:
        ticket_id = self._ticket_id(request)
        ticket = await self._store().get(ticket_id)
        if ticket is None:
            return _json({"error": f"no ticket {ticket_id}"}, status=404)
        return _json(ticket.to_json())

    async def _history(self, request: web.Request) -> web.Response:
        ticket_id = self._ticket_id(request)
        store = self._store()
        if await store.get(ticket_id) is None:
            return _json({"error": f"no ticket {ticket_id}"}, status=404)
        return _json({"history": [asdict(h) for h in await store.history(ticket_id)]})

    async def _call_tickets(self, request: web.Request) -> web.Response:
        tickets = await self._store().for_call(request.match_info["call_id"])
        return _json({"tickets": [t.to_json() for t in tickets]})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await response.write(b": connected\n\n")
        async with self._events.subscribe() as queue:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    chunk = ": keep-alive\n\n"
                else:
                    if event is None:
                        break
                    data = json.dumps(event.ticket, ensure_ascii=False)
                    chunk = f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"
                try:
                    await response.write(chunk.encode())
                except (ConnectionResetError, RuntimeError):
                    break  # the screen went away
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False),
        status=status,
        content_type="application/json",
    )
