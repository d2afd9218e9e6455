"""GET /metrics: the hotline's figures in the Prometheus text format.

Who may read them (docs/decisions.md, "Who reads /metrics"): a scraper from
an address in ``[web] metrics_allow`` (loopback by default) without logging
in; from elsewhere, one that sends ``Authorization: Bearer <[web]
metrics_token>`` (when a token is set); or a logged-in admin. Anyone else
gets 403 saying which of these to use. ``[web] allow`` is checked before all
of it (ivr/web/allow.py), as for every route of the console.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from ivr.metrics import HotlineMetrics
from ivr.sip.edge_guard import AllowList
from ivr.web.auth import ROLES, USER_KEY, User

MAX_LOGGED = 1024  # refused addresses remembered so each is logged once


class MetricsAccess:
    """Whether a request may read /metrics; the lists are read at each request
    (a reload may change them)."""

    def __init__(
        self,
        allow: Callable[[], tuple[str, ...]],
        token: Callable[[], str],
        log: logging.Logger,
    ) -> None:
        self._allow = allow
        self._token = token
        self._log = log
        self._list: tuple[tuple[str, ...], AllowList] | None = None
        self._logged: set[str] = set()

    def _allow_list(self) -> AllowList:
        networks = self._allow()
        if self._list is None or self._list[0] != networks:
            self._list = (networks, AllowList(networks))
        return self._list[1]

    def refusal(self, request: web.Request) -> str | None:
        """None when ``request`` may read the figures, else why not (for the 403)."""
        host = request.remote or ""
        if self._allow_list().allows(host):
            return None
        token = self._token()
        sent = request.headers.get("Authorization", "")
        if token and sent:
            scheme, _, given = sent.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                return None
            self._note(host, "a wrong bearer token")
            return "the bearer token is wrong"
        user: User | None = request.get(USER_KEY)
        if user is not None and ROLES.index(user.role) >= ROLES.index("admin"):
            return None
        self._note(host, "no token, not logged in as admin")
        if token:
            return (
                f"{host or 'this address'} is not in [web] metrics_allow: send "
                "Authorization: Bearer <[web] metrics_token>, or log in as an admin"
            )
        return (
            f"{host or 'this address'} is not in [web] metrics_allow: add it there (or set "
            "[web] metrics_token for scrapers elsewhere), or log in as an admin"
        )

    def _note(self, host: str, why: str) -> None:
        """Each refused address logged once (a bounded memory of them)."""
        if host in self._logged:
            self._log.debug("metrics: 403 to %s (%s)", host, why)
            return
        if len(self._logged) >= MAX_LOGGED:
            self._logged.clear()
        self._logged.add(host)
        self._log.warning(
            "metrics: 403 to %s: not in [web] metrics_allow, %s (said once per address)",
            host or "an unknown address",
            why,
        )


def metrics_routes(metrics: HotlineMetrics, access: MetricsAccess) -> list[web.RouteDef]:
    async def scrape(request: web.Request) -> web.Response:
        why = access.refusal(request)
        if why is not None:
            return web.Response(
                status=403,
                text=json.dumps({"error": why}, ensure_ascii=False),
                content_type="application/json",
            )
        body = await metrics.scrape()
        return web.Response(
            body=body,
            headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Cache-Control": "no-store"},
        )

    return [web.get("/metrics", scrape)]
