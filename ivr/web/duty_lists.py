"""The admins' duty list (权责清单) page: what this node runs, upload and
publish a new list to every node, roll back (ivr/tickets/duty_store.py).

    GET  /admin/duty-list                   the page
    GET  /api/admin/duty-list               {"running": {version, from: store|file, published,
                                             text, error, refused}, "history": [versions]}
    POST /api/admin/duty-list/validate      {"source", "name"?} -> 200 {ok, version, departments,
                                             duties} | 422 {"problems": [{file, line, message}]}
    POST /api/admin/duty-list/publish       {"source", "name"?, "note"?} -> 200 {"published",
                                             "running"} | 422 {"problems"} (nothing stored)
    POST /api/admin/duty-list/{id}/rollback (no body) -> as publish; 404 with no such version

``name`` is the uploaded file's name: problems are said as ``name:line``.
Every POST is audited (duty_list.*, ivr/web/audit.py); the author is the
admin logged in.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ivr.prefill import PrefillDataError
from ivr.tickets.duty_list import DutyListError
from ivr.tickets.duty_store import MAX_TEXT_BYTES, DutyListNotFoundError, RunningDutyList
from ivr.toml_lines import Problem
from ivr.web.responses import json_response as _json
from ivr.web.responses import static_page

MAX_NOTE_CHARS = 500
MAX_NAME_CHARS = 200
DEFAULT_NAME = "duty_list.toml"

Guard = Callable[[web.Request], Awaitable[str]]


def duty_list_routes(lists: RunningDutyList, guard: Guard) -> list[web.AbstractRouteDef]:
    """``guard`` gives the admin's name, or raises the HTTP error refusing them."""

    async def overview(request: web.Request) -> web.Response:
        await guard(request)
        history = await lists.store.history()
        return _json({"running": lists.to_json(), "history": [h.to_json() for h in history]})

    async def validate(request: web.Request) -> web.Response:
        await guard(request)
        source, name, _ = await _body(request)
        try:
            duty = await lists.check(source, name)
        except DutyListError as exc:
            return _json(_problems(exc), 422)
        except PrefillDataError as exc:
            return _json({"error": f"this node cannot check duty lists now: {exc}"}, 409)
        return _json(
            {
                "ok": True,
                "version": duty.version,
                "departments": len(duty.departments),
                "duties": len(duty.duties),
            }
        )

    async def publish(request: web.Request) -> web.Response:
        author = await guard(request)
        source, name, note = await _body(request)
        try:
            published = await lists.publish(source, name, author=author, note=note)
        except DutyListError as exc:
            return _json(_problems(exc), 422)
        except PrefillDataError as exc:
            return _json({"error": f"this node cannot check duty lists now: {exc}"}, 409)
        return _json({"published": published.to_json(), "running": lists.to_json()})

    async def rollback(request: web.Request) -> web.Response:
        author = await guard(request)
        raw = request.match_info["id"]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            return _json({"error": f"duty list version id {raw[:40]!r} is not a number"}, 400)
        try:
            published = await lists.rollback(int(raw), author=author)
        except DutyListNotFoundError as exc:
            return _json({"error": str(exc)}, 404)
        except DutyListError as exc:  # e.g. a district since taken out of the gazetteer
            return _json(_problems(exc), 422)
        except PrefillDataError as exc:
            return _json({"error": f"this node cannot check duty lists now: {exc}"}, 409)
        return _json({"published": published.to_json(), "running": lists.to_json()})

    return [
        web.get("/admin/duty-list", static_page("duty-list.html")),
        web.get("/api/admin/duty-list", overview),
        web.post("/api/admin/duty-list/validate", validate),
        web.post("/api/admin/duty-list/publish", publish),
        web.post("/api/admin/duty-list/{id}/rollback", rollback),
    ]


async def _body(request: web.Request) -> tuple[str, str, str]:
    """``source``, ``name`` and ``note`` of a JSON body, or an HTTP error saying
    what is wrong."""
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise _error(
            web.HTTPRequestEntityTooLarge,
            f"the body is over {limit // 1024} KiB; a duty list may be at most "
            f"{MAX_TEXT_BYTES // 1024} KiB",
            max_size=limit,
            actual_size=request.content_length,
        )
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _error(
            web.HTTPBadRequest, f'the body must be JSON like {{"source": "<TOML>"}} ({exc})'
        ) from None
    if not isinstance(body, dict):
        raise _error(web.HTTPBadRequest, 'the body must be a JSON object like {"source": "..."}')
    source = body.get("source")
    if not isinstance(source, str):
        raise _error(web.HTTPBadRequest, '"source" must be the duty list\'s TOML as a string')
    name = body.get("name") or DEFAULT_NAME
    note = body.get("note", "")
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or "\n" in name:
        raise _error(web.HTTPBadRequest, f'"name" must be a file name (at most {MAX_NAME_CHARS})')
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise _error(
            web.HTTPBadRequest, f'"note" must be a string of at most {MAX_NOTE_CHARS} characters'
        )
    return source, name, note


def _problems(exc: DutyListError) -> dict[str, Any]:
    return {"error": str(exc), "problems": [_problem(p) for p in exc.problems]}


def _problem(problem: Problem | str) -> dict[str, Any]:
    if isinstance(problem, str):  # one not at a line (the text is too big)
        return {"file": None, "line": None, "message": problem}
    return {"file": problem.file, "line": problem.line, "message": problem.message}


def _error(kind: type[web.HTTPException], message: str, **kwargs: Any) -> web.HTTPException:
    return kind(
        text=json.dumps({"error": message}, ensure_ascii=False),
        content_type="application/json",
        **kwargs,
    )
