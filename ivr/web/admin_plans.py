"""The admin's dial plan API: validate, diff, publish, history, rollback, graph.

All JSON.  Every route first asks ``guard(request)`` for the acting user's
name (it raises an aiohttp HTTP error, e.g. 401 / 403, to refuse); that name
is the author of what gets published.

    GET  /api/admin/plans                 {"current": {id, version, source}, "running": version,
                                           "history": [{id, version, author, note, published_at}]}
    GET  /api/admin/plans/graph           the running plan as nodes and edges (plan_graph),
                                          drawn: "svg" (Graphviz dot's layout; null when dot
                                          is missing or fails, "svg_error" saying why) and
                                          "names": the Chinese names of node types and edges
    POST /api/admin/plans/validate        {"source"} -> 200 {"ok": true, "version", "graph"}
                                          | 422 {"ok": false, "problems": [{line, message}]}
    POST /api/admin/plans/diff            {"source"} -> {"diff": unified diff published->draft}
    POST /api/admin/plans/publish         {"source", "note"?} -> 200 {id, version, author, ...}
                                          | 422 {"problems"} | 409 / 500 {"error"}
    POST /api/admin/plans/{id}/rollback   (no body) -> as publish; 404 if there is no such id
    POST /api/admin/config/reload         (no body) config.toml and the dial plan read again, as
                                          on SIGHUP -> 200 {applied: [keys], needs_restart: [keys],
                                          plan_version, plan_error}
                                          | 422 {"error", "problems": [{line, key, message}]}

A body that is not a JSON object with a string ``source`` gets 400 saying what
is wrong; a source over 256 KiB (or a body over aiohttp's 1 MiB) gets 413.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ivr.config import ConfigError
from ivr.dialplan.graph import (
    EDGE_NAMES,
    TYPE_NAMES,
    GraphvizError,
    SvgRenderer,
    graph_dot,
    plan_graph,
)
from ivr.dialplan.load import DialPlanError
from ivr.dialplan.model import DialPlan
from ivr.plan_store import PlanNotFoundError, PlanStore, PublishError
from ivr.toml_lines import Problem
from ivr.web.responses import json_response as _json

MAX_SOURCE_BYTES = 256 * 1024
MAX_NOTE_CHARS = 500

Guard = Callable[[web.Request], Awaitable[str]]
Reload = Callable[[], Awaitable[dict[str, Any]]]


def plan_routes(
    store: PlanStore,
    guard: Guard,
    *,
    running: Callable[[], DialPlan | None] = lambda: None,
    renderer: SvgRenderer | None = None,
) -> list[web.AbstractRouteDef]:
    """The routes, to add to the hotline's aiohttp application before it starts.
    ``running`` gives the plan new calls get (None: the plan file's); ``renderer``
    draws graphs (default: Graphviz ``dot`` from PATH)."""
    drawer = renderer or SvgRenderer()

    async def drawn(plan: DialPlan) -> dict[str, Any]:
        graph = plan_graph(plan)
        try:
            graph["svg"], graph["svg_error"] = await drawer.svg(graph_dot(graph)), None
        except GraphvizError as exc:
            graph["svg"], graph["svg_error"] = None, str(exc)
        graph["names"] = {"types": TYPE_NAMES, "edges": EDGE_NAMES}  # for a plain drawing
        return graph

    async def overview(request: web.Request) -> web.Response:
        await guard(request)
        current = await store.current()
        history = await store.history()
        plan = running()
        return _json(
            {
                "current": current.to_json(),
                "running": plan.version if plan is not None else current.version,
                "history": [h.to_json() for h in history],
            }
        )

    async def graph(request: web.Request) -> web.Response:
        await guard(request)
        plan = running()
        if plan is None:
            try:
                plan = await asyncio.to_thread(store.validate, (await store.current()).source)
            except DialPlanError as exc:  # the file was edited by hand into something broken
                return _json({"error": "the plan file does not load", **_problems(exc)}, 409)
        return _json(await drawn(plan))

    async def validate(request: web.Request) -> web.Response:
        await guard(request)
        source, _ = await _source_and_note(request)
        try:
            plan = await asyncio.to_thread(store.validate, source)
        except DialPlanError as exc:
            return _json({"ok": False, **_problems(exc)}, 422)
        return _json({"ok": True, "version": plan.version, "graph": await drawn(plan)})

    async def diff(request: web.Request) -> web.Response:
        await guard(request)
        source, _ = await _source_and_note(request)
        return _json({"diff": await store.diff(source)})

    async def publish(request: web.Request) -> web.Response:
        author = await guard(request)
        source, note = await _source_and_note(request)
        try:
            published = await store.publish(source, author=author, note=note)
        except DialPlanError as exc:
            return _json(_problems(exc), 422)
        except PublishError as exc:
            return _json({"error": exc.reason, "restored": exc.restored}, _failed(exc))
        return _json(published.to_json())

    async def rollback(request: web.Request) -> web.Response:
        author = await guard(request)
        raw = request.match_info["id"]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            return _json({"error": f"plan version id {raw[:40]!r} is not a number"}, 400)
        try:
            published = await store.rollback(int(raw), author=author)
        except PlanNotFoundError as exc:
            return _json({"error": str(exc)}, 404)
        except DialPlanError as exc:  # e.g. a queue it uses was removed from config.toml
            return _json(_problems(exc), 422)
        except PublishError as exc:
            return _json({"error": exc.reason, "restored": exc.restored}, _failed(exc))
        return _json(published.to_json())

    return [
        web.get("/api/admin/plans", overview),
        web.get("/api/admin/plans/graph", graph),
        web.post("/api/admin/plans/validate", validate),
        web.post("/api/admin/plans/diff", diff),
        web.post("/api/admin/plans/publish", publish),
        web.post("/api/admin/plans/{id}/rollback", rollback),
    ]


def config_routes(reload: Reload, guard: Guard) -> list[web.AbstractRouteDef]:
    """POST /api/admin/config/reload: ``reload`` is what SIGHUP does; it raises
    ConfigError (nothing changed) when config.toml cannot be taken."""

    async def reload_config(request: web.Request) -> web.Response:
        await guard(request)
        try:
            return _json(await reload())
        except ConfigError as exc:
            problems = [{"line": p.line, "key": p.key, "message": p.text} for p in exc.problems]
            return _json({"error": str(exc), "problems": problems}, 422)

    return [web.post("/api/admin/config/reload", reload_config)]


async def _source_and_note(request: web.Request) -> tuple[str, str]:
    """``source`` and ``note`` of a JSON body, or an HTTP error saying what is wrong."""
    limit = request.client_max_size
    try:
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(limit, request.content_length)
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _error(
            web.HTTPRequestEntityTooLarge,
            f"the body is over {limit // 1024} KiB; "
            f"a dial plan may be at most {MAX_SOURCE_BYTES // 1024} KiB",
            max_size=limit,
        ) from None
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # or too deep
        raise _error(
            web.HTTPBadRequest,
            f'the body must be JSON like {{"source": "<TOML>"}} ({exc})',
        ) from None
    if not isinstance(body, dict):
        raise _error(
            web.HTTPBadRequest,
            f'the body must be a JSON object like {{"source": "<TOML>"}}, '
            f"not {type(body).__name__}",
        )
    source = body.get("source")
    if not isinstance(source, str):
        got = "missing" if source is None else f"{type(source).__name__}"
        raise _error(web.HTTPBadRequest, f'"source" must be the plan\'s TOML as a string ({got})')
    size = len(source.encode("utf-8", errors="replace"))
    if size > MAX_SOURCE_BYTES:
        raise _error(
            web.HTTPRequestEntityTooLarge,
            f"the dial plan is {size // 1024} KiB; at most {MAX_SOURCE_BYTES // 1024} KiB",
            max_size=MAX_SOURCE_BYTES,
            actual_size=size,
        )
    note = body.get("note", "")
    if not isinstance(note, str):
        raise _error(web.HTTPBadRequest, '"note" must be a string')
    if len(note) > MAX_NOTE_CHARS:
        raise _error(web.HTTPBadRequest, f'"note" is longer than {MAX_NOTE_CHARS} characters')
    return source, note


def _problems(exc: DialPlanError) -> dict[str, Any]:
    return {"problems": [_problem(p) for p in exc.problems]}


def _problem(problem: Problem) -> dict[str, Any]:
    return {"line": problem.line, "message": problem.message}


def _failed(exc: PublishError) -> int:
    """409: not loaded, the previous plan runs; 500: the previous one could not be put back."""
    return 409 if exc.restored else 500


def _error(kind: type[web.HTTPException], message: str, **kwargs: Any) -> web.HTTPException:
    return kind(
        text=json.dumps({"error": message}, ensure_ascii=False),
        content_type="application/json",
        **kwargs,
    )
