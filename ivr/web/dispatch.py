"""Dispatch and supervision on the web console: the operators' dispatch page
(the department proposed by the duty list), the departments' page (accept,
return with a reason, ask for more time, reply), the supervisors' page (levels
raised, counts per department, extensions to decide), and the admins' reload
of the duty list.

    GET  /dispatch  /department  /supervisor                   the pages
    GET  /api/dispatch/duty-list                               operator
    GET  /api/dispatch/tickets                                 operator: waiting to be sent
    GET  /api/dispatch/tickets/{id}                            operator: proposal, history
    POST /api/dispatch/tickets/{id}            {"department"}  operator: dispatch
    POST /api/dispatch/tickets/{id}/extension  {"grant"}       supervisor
    GET  /api/department/tickets                               department: its own
    POST /api/department/tickets/{id}/accept                   department
    POST /api/department/tickets/{id}/return   {"reason"}      department
    POST /api/department/tickets/{id}/extension {"hours", "reason"}
    POST /api/department/tickets/{id}/reply    {"result"}      department
    GET  /api/supervision                                      supervisor
    GET  /api/supervision.csv  [?all=1]                        supervisor: export
    POST /api/admin/duty-list/reload                           admin
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ivr.tickets import Ticket, TicketStore
from ivr.tickets.cases import Case, CaseStore
from ivr.tickets.dispatch import (
    RETURNED,
    DispatchError,
    Dispatches,
    DispatchNotFoundError,
    dispatches_csv,
)
from ivr.tickets.duty_list import DutyList
from ivr.tickets.events import TicketEvents
from ivr.tickets.search import TicketFilter, TicketSearch
from ivr.tickets.supervision import Supervision
from ivr.web.audit import shown
from ivr.web.auth import User, require
from ivr.web.responses import json_response as _json
from ivr.web.responses import static_page

MAX_BODY = 16 * 1024
_NUMBER = re.compile(r"[0-9]{1,18}")
SHOWN_FIELDS = ("category", "urgency", "district", "address", "name", "phone")


@dataclass
class DispatchParts:
    """What the dispatch pages read and change; made by the composition root."""

    duty_list: Callable[[], DutyList | None]
    duty_error: Callable[[], str | None]  # why the duty list last failed to load
    dispatches: Callable[[], Dispatches | None]
    tickets: Callable[[], TicketStore | None]
    search: Callable[[], TicketSearch | None]
    supervision: Callable[[], Supervision | None]
    reload_duty_list: Callable[[], Awaitable[str | None]]  # None, or why it was refused
    events: TicketEvents
    log: logging.Logger
    clock: Callable[[], float] = time.time
    # [merging]: the reports of one case are dispatched once (None: merging is off)
    cases: Callable[[], CaseStore | None] = lambda: None


def _fail(status: int, message: str) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        403: web.HTTPForbidden,
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
        413: web.HTTPRequestEntityTooLarge,
        422: web.HTTPUnprocessableEntity,
        503: web.HTTPServiceUnavailable,
    }
    body = json.dumps({"error": message}, ensure_ascii=False)
    if status == 413:
        return web.HTTPRequestEntityTooLarge(
            max_size=MAX_BODY, actual_size=0, text=body, content_type="application/json"
        )
    return kinds[status](text=body, content_type="application/json")


def ticket_brief(ticket: Ticket) -> dict[str, Any]:
    """What a dispatch list shows of a ticket."""
    return {
        "id": ticket.id,
        "status": ticket.status,
        "created_at": ticket.created_at,
        "fields": {name: ticket.value(name) for name in SHOWN_FIELDS},
        "transcript": ticket.transcript,
        "notes": ticket.notes,
    }


def dispatch_routes(parts: DispatchParts) -> list[web.AbstractRouteDef]:
    d = _DispatchApi(parts)
    return [
        web.get("/dispatch", static_page("dispatch.html")),
        web.get("/department", static_page("department.html")),
        web.get("/supervisor", static_page("supervisor.html")),
        web.get("/api/dispatch/duty-list", d.duty_list),
        web.get("/api/dispatch/tickets", d.waiting),
        web.get("/api/dispatch/tickets/{id}", d.show),
        web.post("/api/dispatch/tickets/{id}", d.send),
        web.post("/api/dispatch/tickets/{id}/extension", d.decide_extension),
        web.get("/api/department/tickets", d.department_tickets),
        web.post("/api/department/tickets/{id}/{step}", d.department_step),
        web.get("/api/supervision", d.supervision),
        web.get("/api/supervision.csv", d.export),
        web.post("/api/admin/duty-list/reload", d.reload),
    ]


class _DispatchApi:
    def __init__(self, parts: DispatchParts) -> None:
        self.p = parts

    # -- helpers ----------------------------------------------------------------------
    def _duty(self) -> DutyList:
        duty = self.p.duty_list()
        if duty is None:
            why = self.p.duty_error() or "set [dispatch] duty_list in config.toml"
            raise _fail(503, f"dispatch is off: no duty list ({why})")
        return duty

    def _dispatches(self) -> Dispatches:
        found = self.p.dispatches()
        if found is None:
            raise _fail(503, "starting up")
        return found

    def _tickets(self) -> TicketStore:
        found = self.p.tickets()
        if found is None:
            raise _fail(503, "starting up")
        return found

    @staticmethod
    def _id(request: web.Request) -> int:
        raw = request.match_info["id"]
        if _NUMBER.fullmatch(raw) is None:
            raise _fail(400, f"ticket id {raw[:40]!r} is not a number")
        return int(raw)

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise _fail(413, f"the body is over {MAX_BODY} bytes")
        try:
            body = await request.json() if request.can_read_body else {}
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise _fail(400, "the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise _fail(400, "the body must be a JSON object")
        return body

    def _department_of(self, request: web.Request) -> tuple[User, str]:
        """The logged-in department user and the department the duty list says
        they act for."""
        user = require(request, "department")
        if user.role != "department":
            raise _fail(403, "this page is for departments' users (role department)")
        department = self._duty().department_of(user.name)
        if department is None:
            raise _fail(
                403,
                f"{user.name} acts for no department: add the name to a [[department]] "
                "users list of the duty list",
            )
        return user, department

    def _proposal(self, ticket: Ticket) -> dict[str, Any]:
        duty = self._duty()
        category, urgency = ticket.value("category"), ticket.value("urgency")
        return {
            "department": duty.department_for(category, ticket.value("district")),
            "hours": duty.time_limit_hours(category, urgency),
        }

    def _changed(self, ticket_id: int, what: str, dispatch: dict[str, Any]) -> None:
        self.p.events.publish("dispatch", {"id": ticket_id, "step": what, "dispatch": dispatch})
        supervision = self.p.supervision()
        if supervision is not None and what in ("returned", "reassigned"):
            supervision.wake()  # a pass may raise 推诿 now

    # -- operators ----------------------------------------------------------------------
    async def duty_list(self, request: web.Request) -> web.Response:
        require(request, "operator")
        duty = self.p.duty_list()
        return _json({"duty_list": duty.to_json() if duty else None, "error": self.p.duty_error()})

    async def waiting(self, request: web.Request) -> web.Response:
        """Open tickets not yet dispatched, and tickets returned by a department."""
        require(request, "operator")
        self._duty()
        dispatches = self._dispatches()
        search = self.p.search()
        if search is None:
            raise _fail(503, "starting up")
        tickets = self._tickets()
        rows: list[dict[str, Any]] = []
        now = self.p.clock()
        by_case: dict[int, dict[str, Any]] = {}  # a case's row: its other reports fold in
        for d in await dispatches.listed():
            if d.state != RETURNED:
                continue
            ticket = await tickets.get(d.ticket_id)
            if ticket is not None:
                row = {
                    **ticket_brief(ticket),
                    "dispatch": d.to_json(now),
                    "proposal": self._proposal(ticket),
                }
                case = await self._case_of(ticket.id)
                if case is not None and len(case.reports) > 1 and case.id not in by_case:
                    row["case"] = {"id": case.id, "reports": list(case.reports), "with": []}
                    by_case[case.id] = row
                rows.append(row)
        for ticket in await search.find(TicketFilter(status="open", limit=200)):
            if await dispatches.get(ticket.id) is not None:
                continue
            row = {**ticket_brief(ticket), "dispatch": None, "proposal": self._proposal(ticket)}
            case = await self._case_of(ticket.id)
            if case is not None and len(case.reports) > 1:
                if await self._case_dispatched(case) is not None:
                    continue  # handled with the report already sent for the case
                if case.id in by_case:
                    by_case[case.id]["case"]["with"].append(ticket.id)
                    continue
                row["case"] = {"id": case.id, "reports": list(case.reports), "with": []}
                by_case[case.id] = row
            rows.append(row)
        shown(request, [r["id"] for r in rows])
        return _json({"tickets": rows})

    async def _case_of(self, ticket_id: int) -> Case | None:
        cases = self.p.cases()
        return await cases.case_of(ticket_id) if cases is not None else None

    async def _case_dispatched(self, case: Case, but: int | None = None) -> int | None:
        """A report of ``case`` (other than ``but``) in a department's hands, if any."""
        dispatches = self._dispatches()
        for report in case.reports:
            if report == but:
                continue
            sent = await dispatches.get(report)
            if sent is not None and sent.state != RETURNED:
                return report
        return None

    async def show(self, request: web.Request) -> web.Response:
        require(request, "operator")
        ticket_id = self._id(request)
        ticket = await self._tickets().get(ticket_id)
        if ticket is None:
            raise _fail(404, f"no ticket {ticket_id}")
        shown(request, [ticket_id])
        dispatch = await self._dispatches().get(ticket_id)
        history = await self._tickets().history(ticket_id)
        return _json(
            {
                "ticket": ticket_brief(ticket),
                "dispatch": dispatch.to_json(self.p.clock()) if dispatch else None,
                "proposal": self._proposal(ticket),
                "departments": list(self._duty().departments),
                "history": [
                    {
                        "at": h.at,
                        "who": h.who,
                        "what": h.what,
                        "old": h.old_value,
                        "new": h.new_value,
                    }
                    for h in history
                ],
            }
        )

    async def send(self, request: web.Request) -> web.Response:
        user = require(request, "operator")
        ticket_id = self._id(request)
        body = await self._body(request)
        department = body.get("department")
        if not isinstance(department, str) or not department:
            raise _fail(400, 'want {"department": "<a department of the duty list>"}')
        ticket = await self._tickets().get(ticket_id)
        if ticket is None:
            raise _fail(404, f"no ticket {ticket_id}")
        dispatches = self._dispatches()
        before = await dispatches.get(ticket_id)
        try:
            sent = await dispatches.dispatch(
                ticket, department, self._duty(), who=user.name, now=self.p.clock()
            )
        except DispatchError as exc:
            raise _fail(409, str(exc)) from None
        what = "dispatched" if before is None else "reassigned"
        self.p.log.info("dispatch: %s %s ticket %d to %s", user.name, what, ticket_id, department)
        await self._note_case(ticket_id, department, who=user.name)
        body = sent.to_json(self.p.clock())
        self._changed(ticket_id, what, body)
        return _json({"dispatch": body})

    async def _note_case(self, ticket_id: int, department: str, *, who: str) -> None:
        """The case's other open reports, not dispatched themselves, are handled
        with this one: each says so (and leaves the dispatch list)."""
        case = await self._case_of(ticket_id)
        if case is None or len(case.reports) < 2:
            return
        tickets, dispatches = self._tickets(), self._dispatches()
        for report in case.reports:
            if report == ticket_id or await dispatches.get(report) is not None:
                continue
            other = await tickets.get(report)
            if other is None or other.status not in ("open", "in_progress"):
                continue
            await tickets.add_note(
                report, f"同案件 {case.id}：随工单 {ticket_id} 派至 {department} 办理", who=who
            )

    async def decide_extension(self, request: web.Request) -> web.Response:
        user = require(request, "supervisor")
        ticket_id = self._id(request)
        body = await self._body(request)
        grant = body.get("grant")
        if not isinstance(grant, bool):
            raise _fail(400, 'want {"grant": true} or {"grant": false}')
        try:
            decided = await self._dispatches().decide_extension(
                ticket_id, grant=grant, who=user.name, now=self.p.clock()
            )
        except DispatchNotFoundError as exc:
            raise _fail(404, str(exc)) from None
        except DispatchError as exc:
            raise _fail(409, str(exc)) from None
        self.p.log.info(
            "dispatch: %s %s the extension of ticket %d",
            user.name,
            "granted" if grant else "refused",
            ticket_id,
        )
        out = decided.to_json(self.p.clock())
        self._changed(ticket_id, "extension_granted" if grant else "extension_refused", out)
        return _json({"dispatch": out})

    # -- departments ------------------------------------------------------------------------
    async def department_tickets(self, request: web.Request) -> web.Response:
        _, department = self._department_of(request)
        dispatches, tickets = self._dispatches(), self._tickets()
        now = self.p.clock()
        out: dict[str, Any] = {"department": department}
        for key, replied in (("tickets", False), ("replied", True)):
            rows = []
            for d in await dispatches.of_department(department, replied=replied):
                if d.state == RETURNED:
                    continue  # given back: no longer theirs
                ticket = await tickets.get(d.ticket_id)
                if ticket is not None:
                    rows.append({**ticket_brief(ticket), "dispatch": d.to_json(now)})
            out[key] = rows[-50:] if replied else rows
        shown(request, [r["id"] for r in out["tickets"] + out["replied"]])
        return _json(out)

    async def department_step(self, request: web.Request) -> web.Response:
        user, department = self._department_of(request)
        ticket_id = self._id(request)
        step = request.match_info["step"]
        body = await self._body(request)
        dispatches = self._dispatches()
        now = self.p.clock()

        def text(name: str, example: str) -> str:
            value = body.get(name)
            if not isinstance(value, str) or not value.strip():
                raise _fail(400, f'want {{"{name}": "{example}"}}')
            return value

        try:
            if step == "accept":
                done = await dispatches.accept(ticket_id, department, who=user.name, now=now)
                what = "accepted"
            elif step == "return":
                reason = text("reason", "why it is not ours")
                done = await dispatches.give_back(
                    ticket_id, department, reason, who=user.name, now=now
                )
                what = "returned"
            elif step == "extension":
                hours = body.get("hours")
                if isinstance(hours, bool) or not isinstance(hours, int | float):
                    raise _fail(400, 'want {"hours": <more hours>, "reason": "why"}')
                reason = text("reason", "why more time is needed")
                done = await dispatches.ask_extension(
                    ticket_id, department, float(hours), reason, who=user.name, now=now
                )
                what = "extension_asked"
            elif step == "reply":
                result = text("result", "what was done")
                done = await dispatches.reply(ticket_id, department, result, who=user.name, now=now)
                what = "replied"
            else:
                raise _fail(404, f"no step {step[:20]!r} (accept, return, extension, reply)")
        except DispatchNotFoundError as exc:
            raise _fail(404, str(exc)) from None
        except DispatchError as exc:
            raise _fail(409, str(exc)) from None
        self.p.log.info("dispatch: %s (%s) %s ticket %d", user.name, department, what, ticket_id)
        out = done.to_json(now)
        self._changed(ticket_id, what, out)
        return _json({"dispatch": out})

    # -- supervisors --------------------------------------------------------------------------
    async def supervision(self, request: web.Request) -> web.Response:
        require(request, "supervisor")
        dispatches, tickets = self._dispatches(), self._tickets()
        now = self.p.clock()
        levels: dict[str, list[dict[str, Any]]] = {"1": [], "2": [], "3": []}
        extensions = []
        for d in await dispatches.listed():
            if d.level == 0 and d.extension_hours is None:
                continue
            ticket = await tickets.get(d.ticket_id)
            if ticket is None:
                continue
            row = {**ticket_brief(ticket), "dispatch": d.to_json(now)}
            if d.level:
                levels[str(d.level)].append(row)
            if d.extension_hours is not None:
                extensions.append(row)
        supervision = self.p.supervision()
        raises = await supervision.recent(50) if supervision is not None else []
        holder = await supervision.lease.holder() if supervision is not None else None
        shown(request, sorted({r["id"] for rows in levels.values() for r in rows}))
        return _json(
            {
                "levels": levels,
                "extensions": extensions,
                "departments": await dispatches.counts(now),
                "raises": [r.to_json() for r in raises],
                "rounds_on": holder[0] if holder and holder[1] > now else None,
            }
        )

    async def export(self, request: web.Request) -> web.Response:
        """The open dispatched tickets (every one with ``?all=1``) as CSV."""
        user = require(request, "supervisor")
        every = request.query.get("all", "") in ("1", "true")
        dispatches, tickets = self._dispatches(), self._tickets()
        rows = []
        for d in await dispatches.listed(open_only=not every):
            ticket = await tickets.get(d.ticket_id)
            rows.append((d, (ticket.value("district") or "") if ticket is not None else ""))
        shown(request, [d.ticket_id for d, _ in rows])
        self.p.log.info("dispatch: %s exported %d dispatched tickets as CSV", user.name, len(rows))
        return web.Response(
            body=dispatches_csv(rows, self.p.clock()).encode("utf-8"),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": 'attachment; filename="supervision.csv"'},
        )

    # -- admins ------------------------------------------------------------------------------
    async def reload(self, request: web.Request) -> web.Response:
        user = require(request, "admin")
        error = await self.p.reload_duty_list()
        duty = self.p.duty_list()
        if error is not None:
            running = duty.version if duty else None
            return _json({"error": error, "running_version": running}, 422)
        self.p.log.info("dispatch: %s reloaded the duty list", user.name)
        return _json({"version": duty.version if duty else None})
