"""Quality inspection on the web console: the reviewers' page (质检) and the
admins' results per operator.

Reviewers (role reviewer, or a supervisor or admin) see each sample by its
number, its day and a seat code drawn anew each day (坐席 A, B ...): never the
call id, the caller's number or the operator's name or phone. They play the
recording (audited as a recording play, counted towards [audit]
recording_plays_per_hour), read the automatic checks and score four items
0..25 with a comment; the score is stored with their name. Operators and
departments may not review.

    GET  /quality                                    the reviewers' page
    GET  /admin/quality                              the admins' results page
    GET  /api/quality/samples                        reviewer: the latest samples
    GET  /api/quality/samples/{id}                   reviewer: one, with the checks
    GET  /api/quality/samples/{id}/recording.wav     reviewer: the recording
    POST /api/quality/samples/{id}/review  {"items": {...}, "comment": "..."}
    GET  /api/admin/quality/results?from=&to=        admin: per operator
    GET  /api/admin/quality/results.csv?from=&to=    admin: per sample and per operator,
                                                     as CSV (no caller details; audited
                                                     as the export quality.export)
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from ivr.quality.checks import CHECKS
from ivr.quality.export import results_csv
from ivr.quality.samples import ITEM_MAX, ITEMS, QualitySamples, ReviewError
from ivr.web.audit import shown
from ivr.web.auth import User, require
from ivr.web.responses import json_response as _json
from ivr.web.responses import static_page

REVIEW_ROLES = frozenset({"reviewer", "supervisor", "admin"})
MAX_BODY = 16 * 1024
RESULT_DAYS = 30


def _fail(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(
        text=json.dumps({"error": message}, ensure_ascii=False), content_type="application/json"
    )


def reviewer(request: web.Request) -> User:
    """The logged-in user, if they may review (not an operator: they are reviewed)."""
    user = require(request, "reviewer")
    if user.role not in REVIEW_ROLES:
        raise _fail(web.HTTPForbidden, "quality review is for reviewers and supervisors")
    return user


def quality_routes(
    samples: Callable[[], QualitySamples | None], *, clock: Callable[[], float] = time.time
) -> list[web.AbstractRouteDef]:
    q = _QualityApi(samples, clock)
    return [
        web.get("/quality", static_page("quality.html")),
        web.get("/admin/quality", static_page("quality-results.html")),
        web.get("/api/quality/samples", q.list),
        web.get("/api/quality/samples/{id}", q.show),
        web.get("/api/quality/samples/{id}/recording.wav", q.recording),
        web.post("/api/quality/samples/{id}/review", q.review),
        web.get("/api/admin/quality/results", q.results),
        web.get("/api/admin/quality/results.csv", q.export),
    ]


class _QualityApi:
    def __init__(
        self, samples: Callable[[], QualitySamples | None], clock: Callable[[], float]
    ) -> None:
        self._samples = samples
        self._clock = clock

    def _store(self) -> QualitySamples:
        store = self._samples()
        if store is None:
            raise _fail(web.HTTPServiceUnavailable, "starting up")
        return store

    @staticmethod
    def _id(request: web.Request) -> int:
        raw = request.match_info["id"]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            raise _fail(web.HTTPBadRequest, f"sample id {raw[:40]!r} is not a number")
        return int(raw)

    async def list(self, request: web.Request) -> web.Response:
        user = reviewer(request)
        found = await self._store().recent()
        return _json(
            {
                "samples": [s.for_reviewer(user.name) for s in found],
                "items": list(ITEMS),
                "item_max": ITEM_MAX,
                "checks": list(CHECKS),
            }
        )

    async def show(self, request: web.Request) -> web.Response:
        user = reviewer(request)
        sample_id = self._id(request)
        sample = await self._store().get(sample_id)
        if sample is None:
            raise _fail(web.HTTPNotFound, f"no quality sample {sample_id}")
        return _json(sample.for_reviewer(user.name))

    async def recording(self, request: web.Request) -> web.StreamResponse:
        reviewer(request)
        sample_id = self._id(request)
        sample = await self._store().get(sample_id)
        if sample is None:
            raise _fail(web.HTTPNotFound, f"no quality sample {sample_id}")
        if not sample.path:
            raise _fail(web.HTTPGone, f"the recording of sample {sample_id} was deleted")
        path = Path(sample.path)
        if not path.is_file():
            raise _fail(web.HTTPGone, f"the recording of sample {sample_id} is not on this node")
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})

    async def review(self, request: web.Request) -> web.Response:
        user = reviewer(request)
        sample_id = self._id(request)
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise _fail(web.HTTPBadRequest, f"the body is over {MAX_BODY} bytes")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise _fail(web.HTTPBadRequest, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise _fail(web.HTTPBadRequest, 'want {"items": {...}, "comment": "..."}')
        try:
            stored = await self._store().review(
                sample_id, user.name, body.get("items"), body.get("comment", ""), now=self._clock()
            )
        except ReviewError as exc:
            kind = (
                web.HTTPNotFound if str(exc).startswith("no quality sample") else web.HTTPBadRequest
            )
            raise _fail(kind, str(exc)) from None
        return _json(stored)

    def _range(self, request: web.Request) -> tuple[str, str]:
        """The days asked (?from=&to=, the last RESULT_DAYS by default)."""
        today = datetime.datetime.fromtimestamp(self._clock()).date()
        start = (
            request.query.get("from") or (today - datetime.timedelta(days=RESULT_DAYS)).isoformat()
        )
        end = request.query.get("to") or today.isoformat()
        for name, value in (("from", start), ("to", end)):
            try:
                datetime.date.fromisoformat(value)
            except ValueError:
                raise _fail(
                    web.HTTPBadRequest, f"{name}={value[:20]!r}: want a date like 2026-11-25"
                ) from None
        return start, end

    async def results(self, request: web.Request) -> web.Response:
        require(request, "admin")
        start, end = self._range(request)
        rows = await self._store().results(start, end)
        return _json({"from": start, "to": end, "operators": rows, "checks": list(CHECKS)})

    async def export(self, request: web.Request) -> web.Response:
        require(request, "admin")
        start, end = self._range(request)
        text, ids = await results_csv(self._store(), start, end)
        shown(request, ids)  # the audit row lists the samples exported
        return web.Response(
            body=text.encode("utf-8"),
            content_type="text/csv",
            charset="utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="quality-{start}-{end}.csv"',
                "Cache-Control": "no-store",
            },
        )
