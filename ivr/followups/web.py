"""The follow-ups' JSON API (admins): list and show them, cancel or re-run
one, and the dashboard's figures (coverage and satisfaction by category,
district and day).

    GET  /api/followups?state=&outcome=&ticket=&limit=
    GET  /api/followups/figures?days=30
    GET  /api/followups/{id}            the follow-up and its history
    POST /api/followups/{id}/cancel     {"reason": "..."}
    POST /api/followups/{id}/rerun
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import time
from collections.abc import Callable

from aiohttp import web

from ivr.followups.figures import followup_figures
from ivr.followups.model import FollowupState, Outcome
from ivr.followups.queue import MAX_LIST, FollowupError, FollowupNotFoundError, FollowupQueue
from ivr.store import Database
from ivr.web.auth import require
from ivr.web.responses import json_response as _json

_NUMBER = re.compile(r"[0-9]{1,18}")


def _whole(text: str | None, what: str, low: int, high: int) -> int:
    if text is None or _NUMBER.fullmatch(text) is None or not low <= int(text) <= high:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{what} must be a whole number {low}..{high}"}),
            content_type="application/json",
        )
    return int(text)


def followup_routes(
    queue: Callable[[], FollowupQueue | None],
    db: Callable[[], Database | None],
    *,
    changed: Callable[[], None],
    log: logging.Logger,
) -> list[web.AbstractRouteDef]:
    def running() -> FollowupQueue:
        found = queue()
        if found is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "follow-ups are not running ([followups] enabled)"}),
                content_type="application/json",
            )
        return found

    async def list_them(request: web.Request) -> web.Response:
        require(request, "admin")
        q = request.query
        try:
            states = [FollowupState(s) for s in q.getall("state", [])]
            outcome = Outcome(q["outcome"]) if q.get("outcome") else None
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        ticket = _whole(q["ticket"], "ticket", 1, 10**15) if q.get("ticket") else None
        limit = _whole(q.get("limit", "100"), "limit", 1, MAX_LIST)
        found = await running().list(states or None, ticket_id=ticket, outcome=outcome, limit=limit)
        return _json({"followups": [f.to_json() for f in found]})

    async def show(request: web.Request) -> web.Response:
        require(request, "admin")
        followup_id = _whole(request.match_info["id"], "follow-up id", 1, 10**15)
        found = running()
        followup = await found.get(followup_id)
        if followup is None:
            return _json({"error": f"no follow-up {followup_id}"}, 404)
        events = [e.to_json() for e in await found.events(followup_id)]
        return _json({"followup": followup.to_json(), "events": events})

    async def change(request: web.Request, what: str) -> web.Response:
        user = require(request, "admin")
        followup_id = _whole(request.match_info["id"], "follow-up id", 1, 10**15)
        reason = ""
        if what == "cancel":
            try:
                body = await request.json() if request.can_read_body else {}
            except json.JSONDecodeError:
                return _json({"error": 'the body must be JSON, e.g. {"reason": "..."}'}, 400)
            if not isinstance(body, dict):
                return _json({"error": 'the body must be JSON, e.g. {"reason": "..."}'}, 400)
            reason = str(body.get("reason") or "").strip()[:200] or f"cancelled by {user.name}"
            if user.name not in reason:
                reason = f"{reason} ({user.name})"
        found = running()
        try:
            if what == "cancel":
                followup = await found.cancel(followup_id, reason, now=time.time())
            else:
                followup = await found.rerun(followup_id, now=time.time(), who=user.name)
        except FollowupNotFoundError:
            return _json({"error": f"no follow-up {followup_id}"}, 404)
        except FollowupError as exc:
            return _json({"error": str(exc)}, 409)
        changed()
        log.info("follow-up %d: %s by %s", followup_id, what, user.name)
        return _json({"followup": followup.to_json()})

    async def cancel(request: web.Request) -> web.Response:
        return await change(request, "cancel")

    async def rerun(request: web.Request) -> web.Response:
        return await change(request, "rerun")

    async def figures(request: web.Request) -> web.Response:
        require(request, "admin")
        days = _whole(request.query.get("days", "30"), "days", 1, 366)
        store = db()
        if store is None:
            raise web.HTTPServiceUnavailable(text='{"error": "starting up"}')
        found = queue()
        zone = found.policy.zone if found is not None else None
        now = datetime.datetime.now(zone)
        start = datetime.datetime.combine(
            now.date() - datetime.timedelta(days=days - 1), datetime.time(), tzinfo=zone
        )
        result = await followup_figures(
            store,
            since=start.timestamp(),
            until=time.time() + 1,
            timezone=str(zone) if zone is not None else "Asia/Shanghai",
        )
        raised = (
            await found.list([FollowupState.DONE], outcome=Outcome.UNSATISFIED, limit=50)
            if found is not None
            else []
        )
        return _json({"days": days, **result, "raised": [f.to_json() for f in raised]})

    return [
        web.get("/api/followups", list_them),
        web.get("/api/followups/figures", figures),
        web.get("/api/followups/{id}", show),
        web.post("/api/followups/{id}/cancel", cancel),
        web.post("/api/followups/{id}/rerun", rerun),
    ]
