"""[web] allow: only listed source networks reach the console and the API.

The first middleware of the web application: a connection from any other
address gets 403 before log-in, sessions or any handler see the request. The
address is the TCP peer's (``request.remote``); a proxy in front is one source
(X-Forwarded-For is not believed: it is whatever the client wrote).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ivr.sip.edge_guard import AllowList

LOG_EVERY_S = 60.0  # one log line per refused address per minute at most
REFUSED_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>无权访问 - 12345 热线</title></head>
<body style="font-family: sans-serif; margin: 3em">
<h1 id="refused">无权访问</h1>
<p>本机地址不在热线控制台允许的网络内（[web] allow）。请联系管理员。</p>
<p lang="en">This address may not use the hotline console ([web] allow).</p>
</body></html>
"""


def _wants_page(request: web.Request) -> bool:
    """A browser asking for a page (not the API) is shown a page, not JSON."""
    if request.path.startswith("/api/") or request.path == "/metrics":
        return False
    return "text/html" in request.headers.get("Accept", "")


class WebAllow:
    """The allow-list middleware; ``refused`` counts refusals by address (bounded)."""

    def __init__(
        self,
        networks: tuple[str, ...],
        log: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_logged: int = 1024,
    ) -> None:
        self.allow_list = AllowList(networks)
        self.networks = networks
        self._log = log
        self._clock = clock
        self._max_logged = max_logged
        self._last_logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        self.refused = 0

    def middleware(self) -> Middleware:
        @web.middleware
        async def allow_sources(request: web.Request, handler: Handler) -> web.StreamResponse:
            host = request.remote or ""
            if self.allow_list.allows(host):
                return await handler(request)
            self._refuse(host, request)
            if _wants_page(request):
                return web.Response(status=403, text=REFUSED_PAGE, content_type="text/html")
            return web.Response(
                status=403,
                text=json.dumps({"error": "this address may not use the console"}),
                content_type="application/json",
            )

        return allow_sources

    def _refuse(self, host: str, request: web.Request) -> None:
        self.refused += 1
        now = self._clock()
        last = self._last_logged.get(host)
        if last is not None and now - last < LOG_EVERY_S:
            self._unlogged[host] = self._unlogged.get(host, 0) + 1
            return
        if len(self._last_logged) >= self._max_logged:
            self._last_logged.clear()
            self._unlogged.clear()
        more = self._unlogged.pop(host, 0)
        self._last_logged[host] = now
        self._log.warning(
            "web: 403 to %s %s from %s: not in [web] allow (%s)%s",
            request.method,
            request.path[:200],
            host or "an unknown address",
            ", ".join(self.networks),
            f"; {more} more refused since the last line" if more else "",
        )
