"""The cases (案件) API: a ticket's case with its reports, splitting a wrong
merge, merging by hand (refused with the reason across cities or categories)
and closing a case (every report closed, every caller followed up).

    GET  /api/tickets/{id}/case     {"case": {...} | null, "reports": [...]}
    POST /api/tickets/{id}/split    the ticket leaves its case for its own
    POST /api/tickets/{id}/case     {"case": N}: into case N by hand (409 + why)
    GET  /api/cases/{id}            the case and its reports
    POST /api/cases/{id}/close      every report closed; follow-ups queued

Operators (and admins) use them; writes need the session's CSRF token (the
auth middleware)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ivr.tickets import TicketStore
from ivr.tickets.cases import Case, CaseError, CaseStore, MergeRefusedError
from ivr.tickets.events import TicketEvents
from ivr.web.audit import shown
from ivr.web.auth import require
from ivr.web.responses import json_response as _json

_NUMBER = re.compile(r"[0-9]{1,18}")
MAX_BODY = 4096


def _fail(status: int, message: str) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
        503: web.HTTPServiceUnavailable,
    }
    return kinds[status](
        text=json.dumps({"error": message}, ensure_ascii=False), content_type="application/json"
    )


def _id(request: web.Request, what: str) -> int:
    raw = request.match_info["id"]
    if _NUMBER.fullmatch(raw) is None:
        raise _fail(400, f"{what} id {raw[:40]!r} is not a number")
    return int(raw)


def case_routes(
    cases: Callable[[], CaseStore | None],
    tickets: Callable[[], TicketStore | None],
    events: TicketEvents,
    *,
    log: logging.Logger,
) -> list[web.AbstractRouteDef]:
    def stores() -> tuple[CaseStore, TicketStore]:
        case_store, ticket_store = cases(), tickets()
        if case_store is None or ticket_store is None:
            raise _fail(503, "starting up")
        return case_store, ticket_store

    async def described(case: Case, ticket_store: TicketStore) -> dict[str, Any]:
        reports = []
        for ticket_id in case.reports:
            ticket = await ticket_store.get(ticket_id)
            if ticket is not None:
                reports.append(
                    {
                        "id": ticket.id,
                        "status": ticket.status,
                        "created_at": ticket.created_at,
                        "summary": ticket.summary(),
                    }
                )
        return {"case": case.to_json(), "reports": reports}

    async def publish(case: Case, ticket_store: TicketStore) -> None:
        for ticket_id in case.reports:
            ticket = await ticket_store.get(ticket_id)
            if ticket is not None:
                events.publish("edited", ticket.to_json())

    async def ticket_case(request: web.Request) -> web.Response:
        require(request, "operator")
        ticket_id = _id(request, "ticket")
        case_store, ticket_store = stores()
        if await ticket_store.get(ticket_id) is None:
            raise _fail(404, f"no ticket {ticket_id}")
        case = await case_store.case_of(ticket_id)
        if case is None:
            return _json({"case": None, "reports": [], "ticket_id": ticket_id})
        body = await described(case, ticket_store)
        shown(request, list(case.reports))
        return _json({**body, "ticket_id": ticket_id})

    async def show(request: web.Request) -> web.Response:
        require(request, "operator")
        case_id = _id(request, "case")
        case_store, ticket_store = stores()
        case = await case_store.get(case_id)
        if case is None:
            raise _fail(404, f"no case {case_id}")
        shown(request, list(case.reports))
        return _json(await described(case, ticket_store))

    async def split(request: web.Request) -> web.Response:
        user = require(request, "operator")
        ticket_id = _id(request, "ticket")
        case_store, ticket_store = stores()
        before = await case_store.case_of(ticket_id)
        try:
            case = await case_store.split(ticket_id, who=user.name)
        except CaseError as exc:
            raise _fail(404 if "does not exist" in str(exc) else 409, str(exc)) from None
        log.info(
            "cases: %s split ticket %d from case %s into %d",
            user.name,
            ticket_id,
            before.id if before else "-",
            case.id,
        )
        await publish(case, ticket_store)
        return _json(await described(case, ticket_store))

    async def merge(request: web.Request) -> web.Response:
        user = require(request, "operator")
        ticket_id = _id(request, "ticket")
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise _fail(400, f"the body is over {MAX_BODY} bytes")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            body = None
        target = body.get("case") if isinstance(body, dict) else None
        if not isinstance(target, int) or isinstance(target, bool) or target < 1:
            raise _fail(400, 'want {"case": <the case\'s id>}')
        case_store, ticket_store = stores()
        try:
            case = await case_store.merge(ticket_id, target, who=user.name)
        except MergeRefusedError as exc:
            log.warning("cases: %s's merge refused: %s", user.name, exc)
            return _json({"error": str(exc), "refused": True}, status=409)
        except CaseError as exc:
            raise _fail(404 if "does not exist" in str(exc) else 409, str(exc)) from None
        log.info("cases: %s merged ticket %d into case %d", user.name, ticket_id, case.id)
        await publish(case, ticket_store)
        return _json(await described(case, ticket_store))

    async def close(request: web.Request) -> web.Response:
        user = require(request, "operator")
        case_id = _id(request, "case")
        case_store, ticket_store = stores()
        try:
            case = await case_store.close(case_id, who=user.name)
        except CaseError as exc:
            raise _fail(404 if "does not exist" in str(exc) else 409, str(exc)) from None
        log.info("cases: %s closed case %d (%d reports)", user.name, case_id, len(case.reports))
        await publish(case, ticket_store)
        return _json(await described(case, ticket_store))

    return [
        web.get("/api/tickets/{id}/case", ticket_case),
        web.post("/api/tickets/{id}/split", split),
        web.post("/api/tickets/{id}/case", merge),
        web.get("/api/cases/{id}", show),
        web.post("/api/cases/{id}/close", close),
    ]
