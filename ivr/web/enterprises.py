"""The enterprise registry (企业专席) on the web: admins see the registered
business numbers, import a CSV (the same file and the same checks as
``ivr enterprises import``: a bad line is named ``file:line`` and nothing is
imported), and take a number out.  The registry is the store's table, so an
import on one node routes the business's next call on every node.

    GET  /admin/enterprises                     the page (admins)
    GET  /api/admin/enterprises                 {"enterprises": [...], "count": n}
    POST /api/admin/enterprises/import          multipart: file (CSV), replace ("1" or absent)
    POST /api/admin/enterprises/remove          {"number": "..."}

Both writes are audited by the audit middleware (ivr/web/audit.py:
enterprises.import, enterprises.remove, with the numbers touched)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from aiohttp import BodyPartReader, web

from ivr.enterprises import EnterpriseRegistry, RegistryFileError, normal_number, parse_registry
from ivr.store import Database
from ivr.web.audit import AUDIT_SHOWN
from ivr.web.auth import require
from ivr.web.responses import json_response as _json
from ivr.web.responses import static_page

MAX_UPLOAD = 2 * 1024 * 1024  # bytes of CSV (about 40,000 businesses)
MAX_NAME_OF_FILE = 100


async def _upload(request: web.Request) -> tuple[str, bytes, bool]:
    """The uploaded file's name and bytes and the replace flag; HTTPBadRequest
    saying what is wrong with the request."""
    if not request.content_type.startswith("multipart/"):
        raise _bad("send the CSV as multipart/form-data with a field named file")
    try:
        return await _read_parts(request)
    except web.HTTPException:
        raise
    except Exception as exc:  # aiohttp's multipart reader raises several kinds on a bad body
        why = f"{type(exc).__name__}: {exc}"[:200]
        raise _bad(f"the multipart body cannot be read ({why})") from None


async def _read_parts(request: web.Request) -> tuple[str, bytes, bool]:
    reader = await request.multipart()
    name, data, replace = "", b"", False
    seen_file = False
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise _bad("a nested multipart is not a CSV upload")
        if part.name == "file":
            seen_file = True
            name = (part.filename or "upload.csv")[:MAX_NAME_OF_FILE]
            chunks, size = [], 0
            while chunk := await part.read_chunk():
                size += len(chunk)
                if size > MAX_UPLOAD:
                    raise _bad(f"{name}: larger than {MAX_UPLOAD // (1024 * 1024)} MB")
                chunks.append(chunk)
            data = b"".join(chunks)
        elif part.name == "replace":
            replace = (await part.text()).strip() in ("1", "true", "on")
    if not seen_file:
        raise _bad("no file: send the CSV in a field named file")
    if not data.strip():
        raise _bad(f"{name}: the file is empty")
    return name, data, replace


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=json.dumps({"error": message}, ensure_ascii=False), content_type="application/json"
    )


def enterprise_routes(
    db: Callable[[], Database | None], *, log: logging.Logger
) -> list[web.AbstractRouteDef]:
    def registry() -> EnterpriseRegistry:
        store = db()
        if store is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "no store"}), content_type="application/json"
            )
        return EnterpriseRegistry(store)

    async def listing(request: web.Request) -> web.Response:
        require(request, "admin")
        found = await registry().all()
        return _json({"enterprises": [e.to_json() for e in found], "count": len(found)})

    async def importing(request: web.Request) -> web.Response:
        user = require(request, "admin")
        name, data, replace = await _upload(request)
        try:
            entries = parse_registry(data, name)
        except RegistryFileError as exc:
            log.warning(
                "enterprise registry: %s's upload %s refused: %s",
                user.name, name, "; ".join(exc.problems[:5]),
            )  # fmt: skip
            return _json(
                {
                    "error": f"nothing imported from {name}: {len(exc.problems)} bad line(s)",
                    "problems": exc.problems,
                },
                400,
            )
        if not entries:
            return _json({"error": f"nothing imported from {name}: it holds no business"}, 400)
        result = await registry().put(entries, replace=replace)
        request[AUDIT_SHOWN] = [e.number for e in entries]
        log.info(
            "enterprise registry: %s imported %s: %d new, %d updated, %d removed",
            user.name, name, result.added, result.updated, result.removed,
        )  # fmt: skip
        return _json(
            {
                "file": name,
                "imported": len(entries),
                "added": result.added,
                "updated": result.updated,
                "removed": result.removed,
            }
        )

    async def removing(request: web.Request) -> web.Response:
        user = require(request, "admin")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            body = None
        raw = body.get("number") if isinstance(body, dict) else None
        if not isinstance(raw, str) or not normal_number(raw[:40]):
            return _json({"error": 'want {"number": a phone number}'}, 400)
        number = normal_number(raw)
        request[AUDIT_SHOWN] = [number]
        if not await registry().remove(number):
            return _json({"error": f"{number} is not in the enterprise registry"}, 404)
        log.info("enterprise registry: %s removed %s", user.name, number)
        return _json({"removed": number})

    return [
        web.get("/admin/enterprises", static_page("enterprises.html")),
        web.get("/api/admin/enterprises", listing),
        web.post("/api/admin/enterprises/import", importing),
        web.post("/api/admin/enterprises/remove", removing),
    ]
