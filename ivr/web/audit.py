"""The web side of the audit log (ivr/audit.py): every audited request is
recorded by one middleware, admins search the log and unlock what the
thresholds locked.

Audited (``rule_for``): the reads of personal data listed in ``READS``
(a ticket, its history, a search's results, duplicates, a call's tickets,
call records, a recording or conversation played, the CSV export, the
audit log itself) and every write (POST, PUT, PATCH, DELETE) under /api/
but log-in and log-out, which ``Accounts`` audits with the name tried.
Not audited: the operator's own screen (/api/console/me: the call the desk
put through to them, polled every 1.5 s), the queue, the event stream (pushed,
not asked for), static files and pages.

A read that would take its account past an ``[audit]`` threshold is not
served: the account is locked and the answer is 423 saying why.  A read whose
row cannot be written is not served either (503): no unaudited read.

    GET  /admin/audit                           the page (admins)
    GET  /api/admin/audit?user=&action=&object_type=&object_id=&address=&outcome=
                          &from=&to=&before=&limit=   rows, newest first; next page:
                                                ?before=<"next_before" of this page>
    GET  /api/admin/audit/locks                 accounts and addresses locked now
    POST /api/admin/audit/unlock                {"kind": "account"|"address", "subject"}
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ivr.audit import OUTCOMES, AccessGuard, AuditEntry, AuditQuery
from ivr.config import AuditSettings
from ivr.store import DatabaseError
from ivr.web.auth import USER_KEY, User, require
from ivr.web.responses import json_response as _json
from ivr.web.responses import static_page

# what the handler showed: how many objects (a search's tickets) and their ids
AUDIT_SHOWN = web.RequestKey("audit_shown", object)
MAX_IDS_IN_DETAIL = 50


@dataclass(frozen=True)
class Rule:
    action: str
    object_type: str
    id_from: tuple[str, ...] = ()  # the route's parts naming the object, joined by "/"
    kind: str | None = None  # the threshold it counts towards (ticket, recording, export)
    query: bool = False  # the query string goes in the detail (a search's terms)


READS: dict[str, Rule] = {
    "/api/tickets/{id}": Rule("ticket.read", "ticket", ("id",), "ticket"),
    "/api/tickets/{id}/history": Rule("ticket.history", "ticket", ("id",), "ticket"),
    "/api/tickets/{id}/duplicates": Rule("ticket.duplicates", "ticket", ("id",), "ticket"),
    "/api/tickets": Rule("ticket.search", "ticket", (), "ticket", query=True),
    "/api/tickets.csv": Rule("ticket.export", "ticket", (), "export", query=True),
    "/api/supervision.csv": Rule("supervision.export", "ticket", (), "export", query=True),
    "/api/calls/{call_id}/tickets": Rule("call.tickets", "call", ("call_id",), "ticket"),
    "/api/tickets/{id}/recordings/{recording}.wav": Rule(
        "recording.play", "recording", ("id", "recording"), "recording"
    ),
    "/api/calls/{call_id}/conversations/{id}.wav": Rule(
        "conversation.play", "conversation", ("call_id", "id"), "recording"
    ),
    "/api/calls/{call_id}/conversations": Rule("conversation.list", "call", ("call_id",)),
    "/api/calls": Rule("call.list", "call", (), query=True),
    "/api/calls/{call_id}": Rule("call.read", "call", ("call_id",)),
    "/api/callbacks/{id}": Rule("callback.read", "callback", ("id",)),
    "/api/admin/audit": Rule("audit.search", "audit", (), query=True),
    "/api/admin/enterprises": Rule("enterprises.list", "enterprise_registry"),
    # quality inspection (ivr/web/quality.py): a sample's recording is a recording play
    "/api/quality/samples/{id}/recording.wav": Rule(
        "quality.play", "quality_sample", ("id",), "recording"
    ),
    "/api/quality/samples/{id}": Rule("quality.read", "quality_sample", ("id",)),
    "/api/admin/quality/results": Rule("quality.results", "operator", (), query=True),
    "/api/admin/quality/results.csv": Rule(
        "quality.export", "quality_sample", (), "export", query=True
    ),
}
WRITES: dict[str, Rule] = {
    "/api/tickets/{id}": Rule("ticket.edit", "ticket", ("id",)),
    "/api/tickets/{id}/duplicate": Rule("ticket.mark_duplicate", "ticket", ("id",)),
    "/api/callbacks/{id}/cancel": Rule("callback.cancel", "callback", ("id",)),
    "/api/callbacks/{id}/retry": Rule("callback.retry", "callback", ("id",)),
    "/api/console/availability": Rule("operator.availability", "user"),
    "/api/admin/plans/publish": Rule("plans.publish", "dialplan"),
    "/api/admin/plans/{id}/rollback": Rule("plans.rollback", "dialplan", ("id",)),
    "/api/admin/plans/validate": Rule("plans.validate", "dialplan"),
    "/api/admin/plans/diff": Rule("plans.diff", "dialplan"),
    "/api/admin/config/reload": Rule("config.reload", "config"),
    "/api/admin/duty-list/publish": Rule("duty_list.publish", "duty_list"),
    "/api/admin/duty-list/{id}/rollback": Rule("duty_list.rollback", "duty_list", ("id",)),
    "/api/admin/duty-list/validate": Rule("duty_list.validate", "duty_list"),
    "/api/admin/duty-list/reload": Rule("duty_list.reload", "duty_list"),
    "/api/admin/prompts/{dialect}/{key}": Rule("prompt.upload", "prompt", ("dialect", "key")),
    "/api/admin/prompts/{dialect}/{key}/synthesise": Rule(
        "prompt.synthesise", "prompt", ("dialect", "key")
    ),
    "/api/admin/audit/unlock": Rule("audit.unlock", "lock"),  # the guard's own row says more
    "/api/admin/enterprises/import": Rule("enterprises.import", "enterprise_registry"),
    "/api/admin/enterprises/remove": Rule("enterprises.remove", "enterprise_registry"),
    "/api/quality/samples/{id}/review": Rule("quality.review", "quality_sample", ("id",)),
    # the situation map (ivr/web/situation.py): the note is kept on the episode itself
    "/api/situation/episodes/{id}/acknowledge": Rule(
        "spike.acknowledge", "spike_episode", ("id",)
    ),
    "/api/admin/situation/map/reload": Rule("situation.map_reload", "situation_map"),
}
NOT_AUDITED_WRITES = frozenset({"/api/login", "/api/logout"})  # Accounts audits them
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def rule_for(method: str, canonical: str) -> Rule | None:
    """The rule of a route (its canonical path, e.g. /api/tickets/{id})."""
    if method in ("GET", "HEAD"):
        return READS.get(canonical)
    if method not in _WRITE_METHODS or not canonical.startswith("/api/"):
        return None
    if canonical in NOT_AUDITED_WRITES:
        return None
    known = WRITES.get(canonical)
    if known is not None:
        return known
    # a write route this table does not name yet: audited all the same
    parts = [p for p in canonical[len("/api/") :].split("/") if p and not p.startswith("{")]
    names = tuple(p[1:-1] for p in canonical.split("/") if p.startswith("{") and p.endswith("}"))
    return Rule(".".join(parts) or "api", parts[-1] if parts else "", names)


def shown(request: web.Request, ids: Iterable[object]) -> None:
    """A handler says which objects its answer shows (a search's tickets)."""
    request[AUDIT_SHOWN] = [str(i) for i in ids]


def client_address(request: web.Request, trusted: Iterable[str]) -> str:
    """The client: the peer's address, or behind a trusted proxy the last
    address in X-Forwarded-For that is not itself a trusted proxy."""
    peer = request.remote or ""
    networks = [ipaddress.ip_network(n) for n in trusted]
    if not networks or not _inside(peer, networks):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed([h for h in hops if h]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a forged or broken header: believe the peer only
        if not _inside(hop, networks):
            return hop
    return peer


def _inside(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def _outcome(status: int) -> str:
    if status < 400:
        return "allowed"
    if status in (401, 403, 423, 429):
        return "refused"
    return "failed"


def audit_middleware(
    guard: AccessGuard,
    settings: Callable[[], AuditSettings],
    *,
    log: logging.Logger | None = None,
) -> Middleware:
    """Records every audited request after it is handled; refuses a read past
    a threshold (423) or one that cannot be recorded (503). Goes after the
    auth middleware (it reads the request's user). Behind a trusted proxy the
    request's ``remote`` becomes the client's address for every handler."""
    logger = log or logging.getLogger("ivr.audit")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        address = client_address(request, settings().trusted_proxies)
        if address != request.remote:
            request = request.clone(remote=address)
        route = request.match_info.route.resource
        canonical = route.canonical if route is not None else ""
        rule = rule_for(request.method, canonical)
        if rule is None:
            return await handler(request)
        user: User | None = request.get(USER_KEY)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            await _record(request, rule, user, address, exc.status, reads=0)
            raise
        except Exception:
            await _record(request, rule, user, address, 500, reads=0)
            raise
        status = response.status
        ids: list[str] | None = request.get(AUDIT_SHOWN)
        items = (len(ids) if ids is not None else 1) if status < 300 else 0
        if rule.kind is not None and user is not None and status < 300:
            try:
                reason = await guard.over_limit(user.name, rule.kind, items, address)
            except DatabaseError as exc:
                logger.error("audit: %s not served: the audit log is unreachable (%s)",
                             rule.action, exc)  # fmt: skip
                return _json({"error": "the audit log cannot be written now; try again"}, 503)
            if reason is not None:
                await _record(request, rule, user, address, 423, reads=0, why=reason)
                return _json({"error": f"账号已锁定 account locked: {reason}"}, 423)
        written = await _record(request, rule, user, address, status, reads=items, ids=ids)
        if not written and request.method in ("GET", "HEAD"):
            return _json({"error": "the audit log cannot be written now; try again"}, 503)
        return response

    async def _record(
        request: web.Request,
        rule: Rule,
        user: User | None,
        address: str,
        status: int,
        *,
        reads: int,
        ids: list[str] | None = None,
        why: str = "",
    ) -> bool:
        parts = [request.match_info.get(name, "") for name in rule.id_from]
        details = []
        if why:
            details.append(why)
        if rule.query and request.query_string:
            details.append(f"query {request.query_string[:200]}")
        if ids:
            more = f" +{len(ids) - MAX_IDS_IN_DETAIL}" if len(ids) > MAX_IDS_IN_DETAIL else ""
            details.append(f"ids {','.join(ids[:MAX_IDS_IN_DETAIL])}{more}")
        try:
            await guard.audit.record(
                action=rule.action,
                outcome=_outcome(status),
                user=user.name if user is not None else "",
                role=user.role if user is not None else "",
                object_type=rule.object_type,
                object_id="/".join(p for p in parts if p),
                items=reads,
                address=address,
                status=status,
                detail="; ".join(details),
            )
        except DatabaseError as exc:
            logger.error(
                "audit: not recorded (store unreachable: %s): %s %s by %s from %s -> %d",
                exc,
                rule.action,
                "/".join(parts),
                user.name if user is not None else "nobody",
                address,
                status,
            )
            return False
        return True

    return middleware


def _epoch(text: str, name: str) -> float:
    """A date (2026-12-05) or a date and time (2026-12-05T13:30) as epoch seconds."""
    try:
        if len(text) <= 10:
            day = datetime.date.fromisoformat(text)
            return datetime.datetime.combine(day, datetime.time()).timestamp()
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps(
                {"error": f"{name}={text[:30]!r}: want a date like 2026-12-05 or 2026-12-05T13:30"}
            ),
            content_type="application/json",
        ) from None


def audit_routes(guard: AccessGuard) -> list[web.AbstractRouteDef]:
    async def search(request: web.Request) -> web.Response:
        require(request, "admin")
        q = request.query
        limit_text, before_text = q.get("limit", "100"), q.get("before", "")
        if not limit_text.isascii() or not limit_text.isdigit() or not 1 <= int(limit_text) <= 500:
            return _json({"error": f"limit={limit_text[:20]!r}: want 1..500"}, 400)
        if before_text and not (before_text.isascii() and before_text.isdigit()):
            return _json({"error": f"before={before_text[:20]!r}: want a row id"}, 400)
        outcome = q.get("outcome") or None
        if outcome is not None and outcome not in OUTCOMES:
            return _json({"error": f"outcome must be one of {', '.join(OUTCOMES)}"}, 400)
        until = q.get("to")
        query = AuditQuery(
            user=q.get("user") or None,
            action=q.get("action") or None,
            object_type=q.get("object_type") or None,
            object_id=q.get("object_id") or None,
            address=q.get("address") or None,
            outcome=outcome,
            since=_epoch(q["from"], "from") if q.get("from") else None,
            # a date alone: to the end of that day
            until=(_epoch(until, "to") + (86400 if len(until) <= 10 else 0)) if until else None,
            before=int(before_text) if before_text else None,
            limit=int(limit_text),
        )
        rows: list[AuditEntry] = await guard.audit.search(query)
        next_before = rows[-1].id if len(rows) == query.limit else None
        return _json({"entries": [r.to_json() for r in rows], "next_before": next_before})

    async def locks(request: web.Request) -> web.Response:
        require(request, "admin")
        return _json({"locks": [lock.to_json() for lock in await guard.locks()]})

    async def unlock(request: web.Request) -> web.Response:
        user = require(request, "admin")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # nested too deep
            body = None
        want = 'want {"kind": "account" or "address", "subject": name or address}'
        if not isinstance(body, dict) or body.get("kind") not in ("account", "address"):
            return _json({"error": want}, 400)
        subject = body.get("subject")
        if not isinstance(subject, str) or not 0 < len(subject) <= 64:
            return _json({"error": want}, 400)
        done = await guard.unlock(
            body["kind"], subject, by=user.name, role=user.role, address=request.remote or ""
        )
        if not done:
            return _json({"error": f"{body['kind']} {subject} is not locked"}, 404)
        return _json({"unlocked": {"kind": body["kind"], "subject": subject}})

    return [
        web.get("/admin/audit", static_page("audit.html")),
        web.get("/api/admin/audit", search),
        web.get("/api/admin/audit/locks", locks),
        web.post("/api/admin/audit/unlock", unlock),
    ]
