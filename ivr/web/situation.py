"""The situation map on the web console (态势地图): the gazetteer's districts
coloured by ticket counts over a period and category, and the spike alerts
(未诉先办). For supervisors and admins.

    GET /situation                                        the page
    GET /api/situation/map                                the districts' shapes
    GET /api/situation?hours=24&category=供水              counts and spikes
    GET /api/situation?from=2026-12-01&to=2026-12-05       (dates, local, both included)
    GET /api/situation/spikes                             the spike alerts now

Counts and spikes are read from the tickets table at each request
(ivr/tickets/situation.py): any node of a cluster answers the same.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ivr.tickets.district_map import DistrictLayout
from ivr.tickets.situation import Situation, SpikeRule
from ivr.web.auth import require
from ivr.web.responses import json_response as _json
from ivr.web.responses import static_page

MAX_HOURS = 24 * 366
_NUMBER = re.compile(r"[0-9]{1,6}")


@dataclass
class SituationParts:
    """What the situation map reads; made by the composition root."""

    situation: Callable[[], Situation | None]
    layout: Callable[[], DistrictLayout | None]


def situation_routes(parts: SituationParts) -> list[web.AbstractRouteDef]:
    s = _SituationApi(parts)
    return [
        web.get("/situation", static_page("situation.html")),
        web.get("/api/situation/map", s.map),
        web.get("/api/situation/spikes", s.spikes),
        web.get("/api/situation", s.figures),
    ]


def _bad(message: str) -> web.HTTPException:
    return web.HTTPBadRequest(
        text=json.dumps({"error": message}, ensure_ascii=False), content_type="application/json"
    )


def _starting() -> web.HTTPException:
    return web.HTTPServiceUnavailable(
        text=json.dumps({"error": "starting up"}), content_type="application/json"
    )


def _day(text: str, name: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise _bad(f"{name}={text[:20]!r}: want a date like 2026-11-25") from None


def _midnight(day: datetime.date) -> float:
    return datetime.datetime.combine(day, datetime.time()).timestamp()


def rule_json(rule: SpikeRule) -> dict[str, Any]:
    return {
        "window_hours": rule.window / 3600.0,
        "baseline_days": rule.baseline_days,
        "min_count": rule.min_count,
        "sd_factor": rule.sd_factor,
        "ratio": rule.ratio,
    }


class _SituationApi:
    def __init__(self, parts: SituationParts) -> None:
        self.p = parts

    def _situation(self) -> Situation:
        situation = self.p.situation()
        if situation is None:
            raise _starting()
        return situation

    async def map(self, request: web.Request) -> web.Response:
        require(request, "supervisor")
        layout = self.p.layout()
        if layout is None:
            raise _starting()
        return _json(layout.to_json())

    def _period(self, request: web.Request, now: float) -> tuple[float, float, str]:
        """[since, until) and how to say it, from hours=N or from=/to= dates."""
        q = request.query
        if q.get("from") or q.get("to"):
            today = datetime.date.fromtimestamp(now)
            first = _day(q["from"], "from") if q.get("from") else today
            last = _day(q["to"], "to") if q.get("to") else today
            if last < first:
                raise _bad(f"to={last} is before from={first}")
            until = _midnight(last + datetime.timedelta(days=1))
            return _midnight(first), until, f"{first} — {last}"
        text = q.get("hours", "24")
        if _NUMBER.fullmatch(text) is None or not 1 <= int(text) <= MAX_HOURS:
            raise _bad(f"hours={text[:20]!r}: want a whole number of hours, 1..{MAX_HOURS}")
        hours = int(text)
        return now - hours * 3600.0, now + 1.0, f"最近 {hours} 小时"

    async def figures(self, request: web.Request) -> web.Response:
        require(request, "supervisor")
        situation = self._situation()
        now = situation.now()
        since, until, said = self._period(request, now)
        category = request.query.get("category") or None
        counts = await situation.counts(since, until)
        spikes = await situation.spikes(now)
        by_district = counts.by_district(category)
        return _json(
            {
                "since": since,
                "until": until,
                "period": said,
                "category": category,
                "total": sum(by_district.values()),
                "by_district": by_district,
                "categories": counts.by_category(),
                "spikes": [s.to_json() for s in spikes],
                "rule": rule_json(situation.rule),
            }
        )

    async def spikes(self, request: web.Request) -> web.Response:
        require(request, "supervisor")
        situation = self._situation()
        spikes = await situation.spikes()
        return _json({"spikes": [s.to_json() for s in spikes], "rule": rule_json(situation.rule)})
