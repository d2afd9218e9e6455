"""The console's answers, written once for every part of it: JSON bodies and
its static pages.

JSON keeps Chinese as it is (``ensure_ascii=False``), writes what JSON has no
type for (a date, a path) as text, and is never cached (answers hold callers'
details). A page is served from ivr/web/static with a Content-Security-Policy
that lets it load only this server's scripts, styles and images (plus
``data:`` images and ``blob:`` audio, which the operator's and reviewers'
players use), never be framed, and never be sniffed as another type.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

STATIC = Path(__file__).parent / "static"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False, default=str),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def static_page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler serving the page ``name`` of ivr/web/static."""

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / name, headers=PAGE_HEADERS)

    return serve
