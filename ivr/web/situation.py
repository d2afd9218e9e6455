"""The situation map on the web console (态势地图): the gazetteer's districts
coloured by ticket counts over a period and category, and the spike alerts
(未诉先办). For supervisors and admins.

    GET /situation                                        the page
    GET /api/situation/map                                the districts' shapes
    GET /api/situation?hours=24&category=供水              counts and spikes
    GET /api/situation?from=2026-12-01&to=2026-12-05       (dates, local, both included)
    GET /api/situation/spikes                             the spike alerts now, each
                                                          with its open episode
    GET /api/situation/episodes?limit=50                  the latest spike episodes
    POST /api/situation/episodes/{id}/acknowledge         {"note": "..."} (optional)
    POST /api/admin/situation/map/reload                  read the map file again (admins)

Counts and spikes are read from the tickets table at each request
(ivr/tickets/situation.py): any node of a cluster answers the same. The
episodes (when each spike began and ended, who acknowledged it) are rows of
the store kept by one node's passes (ivr/tickets/spike_episodes.py); an
acknowledgement is audited like every write (ivr/web/audit.py).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ivr.tickets.district_map import DistrictLayout
from ivr.tickets.situation import Situation, Spike, SpikeRule
from ivr.tickets.spike_episodes import HISTORY_LIMIT, AcknowledgeError, SpikeEpisodes
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
    episodes: Callable[[], SpikeEpisodes | None] = lambda: None
    # read the map file again: None, or why it was refused (the running map kept)
    reload_map: Callable[[], Awaitable[str | None]] | None = field(default=None)


def situation_routes(parts: SituationParts) -> list[web.AbstractRouteDef]:
    s = _SituationApi(parts)
    return [
        web.get("/situation", static_page("situation.html")),
        web.get("/api/situation/map", s.map),
        web.get("/api/situation/spikes", s.spikes),
        web.get("/api/situation/episodes", s.episodes),
        web.post("/api/situation/episodes/{id}/acknowledge", s.acknowledge),
        web.post("/api/admin/situation/map/reload", s.reload_map),
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

    async def _alerts(self, spikes: list[Spike]) -> list[dict[str, Any]]:
        """The spikes, each with its open episode (None until a pass has opened it)."""
        episodes = self.p.episodes()
        open_ = {}
        if episodes is not None:
            open_ = {(e.district, e.category): e for e in await episodes.open_episodes()}
        out = []
        for spike in spikes:
            episode = open_.get((spike.district, spike.category))
            out.append({**spike.to_json(), "episode": episode.to_json() if episode else None})
        if episodes is not None and any(a["episode"] is None for a in out):
            episodes.wake()  # a spike no pass has seen yet: the holder's pass opens it now
        return out

    def _episodes(self) -> SpikeEpisodes:
        episodes = self.p.episodes()
        if episodes is None:
            raise _starting()
        return episodes

    async def episodes(self, request: web.Request) -> web.Response:
        require(request, "supervisor")
        text = request.query.get("limit", str(HISTORY_LIMIT))
        if _NUMBER.fullmatch(text) is None or not 1 <= int(text) <= 500:
            raise _bad(f"limit={text[:20]!r}: want a whole number, 1..500")
        found = await self._episodes().recent(int(text))
        return _json({"episodes": [e.to_json() for e in found]})

    async def acknowledge(self, request: web.Request) -> web.Response:
        user = require(request, "supervisor")
        text = request.match_info["id"]
        if _NUMBER.fullmatch(text) is None:
            raise _bad(f"{text[:20]!r} is not a spike episode number")
        note = ""
        if request.can_read_body:
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                raise _bad('the body must be JSON: {"note": "..."}') from None
            if not isinstance(body, dict) or not isinstance(body.get("note", ""), str):
                raise _bad('the body must be JSON: {"note": "..."}')
            note = body.get("note", "")
        try:
            episode = await self._episodes().acknowledge(int(text), user.name, note)
        except AcknowledgeError as exc:
            return _json({"error": str(exc)}, exc.status)
        return _json({"episode": episode.to_json()})

    async def reload_map(self, request: web.Request) -> web.Response:
        require(request, "admin")
        if self.p.reload_map is None:
            raise _starting()
        error = await self.p.reload_map()
        layout = self.p.layout()
        running = layout.to_json() if layout is not None else None
        if running is not None:
            running = {k: running[k] for k in ("kind", "source", "version", "missing")}
        if error is not None:
            return _json({"error": error, "running": running}, 422)
        return _json({"running": running})

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
                "spikes": await self._alerts(spikes),
                "rule": rule_json(situation.rule),
                "map_version": layout.version if (layout := self.p.layout()) else None,
            }
        )

    async def spikes(self, request: web.Request) -> web.Response:
        require(request, "supervisor")
        situation = self._situation()
        spikes = await situation.spikes()
        return _json({"spikes": await self._alerts(spikes), "rule": rule_json(situation.rule)})
