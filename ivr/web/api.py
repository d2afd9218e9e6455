"""The JSON API over aiohttp: tickets for screens, and a server-sent event
stream of ticket changes (what the operator console listens to).

Every route but /api/health needs a logged-in user (ivr.web.auth): operators
read tickets and the event stream and act on callbacks; writes need the
session's CSRF token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ivr.audit import ALERT_EVENT
from ivr.call_history import record_json
from ivr.call_records import MAX_RECENT, CallRecordStore
from ivr.callbacks import CallbackError, CallbackNotFoundError, CallbackQueue, CallbackState
from ivr.tickets import TicketStore
from ivr.tickets.events import TicketEvents
from ivr.web.allow import WebAllow
from ivr.web.audit import shown
from ivr.web.auth import (
    SESSION_KEY,
    USER_KEY,
    Accounts,
    auth_middleware,
    auth_routes,
    require,
)
from ivr.web.responses import json_response as _json

KEEPALIVE_S = 15.0


class HotlineApi:
    def __init__(
        self,
        *,
        tickets: Callable[[], TicketStore | None],
        events: TicketEvents,
        status: Callable[[], dict[str, Any]],
        log: logging.Logger,
        callbacks: Callable[[], CallbackQueue | None] = lambda: None,
        callbacks_changed: Callable[[], None] = lambda: None,
        records: Callable[[], CallRecordStore | None] = lambda: None,
        allow: WebAllow | None = None,
    ) -> None:
        self._tickets = tickets
        self._records = records
        self._callbacks = callbacks
        self._callbacks_changed = callbacks_changed
        self._events = events
        self._status = status
        self._log = log
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.accounts: Accounts | None = None
        self._auth: Middleware | None = None
        # [web] allow first: other addresses get 403 before log-in or any handler
        self.allow = allow
        first = [allow.middleware()] if allow is not None else []
        self.app = web.Application(middlewares=[*first, self._authenticate])
        self.app.on_response_prepare.append(_security_headers)
        self.app.add_routes(
            [
                web.get("/api/health", self._health),
                web.get("/api/tickets/{id}", self._ticket),
                web.get("/api/tickets/{id}/history", self._history),
                web.get("/api/calls", self._call_list),
                web.get("/api/calls/{call_id}", self._call_show),
                web.get("/api/calls/{call_id}/tickets", self._call_tickets),
                web.get("/api/calls/{call_id}/conversations", self._conversations),
                web.get("/api/calls/{call_id}/conversations/{id}.wav", self._conversation_wav),
                web.get("/api/events", self._stream),
                web.get("/api/callbacks", self._callback_list),
                web.get("/api/callbacks/{id}", self._callback_show),
                web.post("/api/callbacks/{id}/cancel", self._callback_cancel),
                web.post("/api/callbacks/{id}/retry", self._callback_retry),
            ]
        )

    def use_accounts(self, accounts: Accounts, *, secure_cookie: bool = False) -> None:
        """Log-in and sessions (before ``start``): until then nobody is logged in."""
        self.accounts = accounts
        self._auth = auth_middleware(accounts)
        self.app.add_routes(auth_routes(accounts, secure_cookie=secure_cookie))

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._auth is None:
            request[USER_KEY] = None
            request[SESSION_KEY] = None
            return await handler(request)
        return await self._auth(request, handler)

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
    def _path_id(request: web.Request, what: str = "ticket") -> int:
        raw = request.match_info["id"]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"{what} id {raw[:40]!r} is not a number"}),
                content_type="application/json",
            )
        return int(raw)

    async def _conversations(self, request: web.Request) -> web.Response:
        """The call's conversation recordings (admin: they hold callers' voices)."""
        require(request, "admin")
        records = self._records()
        if records is None:
            return _json({"error": "starting up"}, status=503)
        call_id = request.match_info["call_id"]
        rows = await records.conversations_of(call_id)
        return _json(
            {
                "conversations": [
                    {
                        "id": r["id"],
                        "operator": r["operator"],
                        "started_at": r["started_at"],
                        "seconds": r["seconds"],
                        "kept": bool(r["path"]),
                        "url": f"/api/calls/{call_id}/conversations/{r['id']}.wav",
                    }
                    for r in rows
                ]
            }
        )

    async def _conversation_wav(self, request: web.Request) -> web.StreamResponse:
        require(request, "admin")
        records = self._records()
        if records is None:
            return _json({"error": "starting up"}, status=503)
        wanted = self._path_id(request, "recording")
        rows = await records.conversations_of(request.match_info["call_id"])
        row = next((r for r in rows if r["id"] == wanted), None)
        if row is None or not row["path"]:
            return _json({"error": f"no recording {wanted} of this call"}, status=404)
        path = Path(row["path"])
        if not path.is_file():
            return _json({"error": f"recording {wanted} is gone from disk"}, status=410)
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})

    async def _ticket(self, request: web.Request) -> web.Response:
        require(request, "operator")
        ticket_id = self._path_id(request)
        ticket = await self._store().get(ticket_id)
        if ticket is None:
            return _json({"error": f"no ticket {ticket_id}"}, status=404)
        return _json(ticket.to_json())

    async def _history(self, request: web.Request) -> web.Response:
        require(request, "operator")
        ticket_id = self._path_id(request)
        store = self._store()
        if await store.get(ticket_id) is None:
            return _json({"error": f"no ticket {ticket_id}"}, status=404)
        return _json({"history": [asdict(h) for h in await store.history(ticket_id)]})

    def _record_store(self) -> CallRecordStore:
        records = self._records()
        if records is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "starting up"}), content_type="application/json"
            )
        return records

    async def _call_list(self, request: web.Request) -> web.Response:
        """The most recent call records, newest first (?limit=N, default 50)."""
        require(request, "operator")
        raw = request.query.get("limit", "50")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and int(raw) <= MAX_RECENT):
            return _json({"error": f"limit {raw[:40]!r} is not 0..{MAX_RECENT}"}, status=400)
        found = await self._record_store().list_recent(int(raw))
        return _json({"calls": [record_json(r) for r in found]})

    async def _call_show(self, request: web.Request) -> web.Response:
        require(request, "operator")
        call_id = request.match_info["call_id"]
        record = await self._record_store().get(call_id)
        if record is None:
            return _json({"error": f"no call {call_id[:200]}"}, status=404)
        return _json(record_json(record))

    async def _call_tickets(self, request: web.Request) -> web.Response:
        require(request, "operator")
        tickets = await self._store().for_call(request.match_info["call_id"])
        shown(request, [t.id for t in tickets])  # the audit log counts them (ivr/web/audit.py)
        return _json({"tickets": [t.to_json() for t in tickets]})

    def _queue(self) -> CallbackQueue:
        queue = self._callbacks()
        if queue is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "callbacks are not running"}),
                content_type="application/json",
            )
        return queue

    async def _callback_list(self, request: web.Request) -> web.Response:
        require(request, "operator")
        states: list[CallbackState] = []
        for name in request.query.getall("state", []):
            try:
                states.append(CallbackState(name))
            except ValueError:
                known = ", ".join(s.value for s in CallbackState)
                return _json({"error": f"state {name[:40]!r} is not one of {known}"}, status=400)
        found = await self._queue().list(states or None)
        return _json({"callbacks": [c.to_json() for c in found]})

    async def _callback_show(self, request: web.Request) -> web.Response:
        require(request, "operator")
        callback_id = self._path_id(request, "callback")
        queue = self._queue()
        callback = await queue.get(callback_id)
        if callback is None:
            return _json({"error": f"no callback {callback_id}"}, status=404)
        events = [e.to_json() for e in await queue.events(callback_id)]
        return _json({"callback": callback.to_json(), "events": events})

    async def _callback_cancel(self, request: web.Request) -> web.Response:
        require(request, "operator")
        callback_id = self._path_id(request, "callback")
        try:
            body = await request.json() if request.can_read_body else {}
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # or nested too deep
            body = None
        if not isinstance(body, dict):
            return _json({"error": 'the body must be a JSON object, e.g. {"reason": "..."}'}, 400)
        reason = str(body.get("reason") or "cancelled through the API")[:200]
        return await self._change(callback_id, "cancel", reason)

    async def _callback_retry(self, request: web.Request) -> web.Response:
        require(request, "operator")
        return await self._change(self._path_id(request, "callback"), "retry", "")

    async def _change(self, callback_id: int, what: str, reason: str) -> web.Response:
        queue = self._queue()
        now = time.time()
        try:
            if what == "cancel":
                callback = await queue.cancel(callback_id, reason, now=now)
            else:
                callback = await queue.retry(callback_id, now=now)
        except CallbackNotFoundError:
            return _json({"error": f"no callback {callback_id}"}, status=404)
        except CallbackError as exc:
            return _json({"error": str(exc)}, status=409)
        self._callbacks_changed()
        self._log.info("api: callback %d %s", callback_id, what)
        return _json({"callback": callback.to_json()})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        user = require(request, "operator")
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
                    if event.kind == ALERT_EVENT and user.role != "admin":
                        continue  # the audit's alerts are for admins (ivr/audit.py)
                    data = json.dumps(event.ticket, ensure_ascii=False)
                    chunk = f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"
                try:
                    await response.write(chunk.encode())
                except (ConnectionResetError, RuntimeError):
                    break  # the screen went away
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer: no MIME sniffing, not framed by another site, and (but
    for the console's pages, which set their own) a policy that lets nothing
    load or run if the answer is opened as a document (JSON, scripts, a WAV)."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault(
        "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"
    )
