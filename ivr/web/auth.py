"""Who is at the web console: users (reviewer, department, operator, supervisor, admin),
log-in, sessions, CSRF.

Passwords are hashed with scrypt (a slow, memory-hard hash) in an executor, so a
log-in never blocks the event loop; the stored form is
``scrypt$n$r$p$salt_b64$hash_b64`` and the parameters are read back from it, so
they can be raised later (a log-in with an older hash rehashes it).

A log-in gives a random token for the ``ivr_session`` cookie (HttpOnly,
SameSite=Strict) and a per-session CSRF token that the page sends back in the
``X-CSRF-Token`` header on every write; the database keeps only the sha256 of
the cookie's token.  Failed log-ins are counted per (client address, name) and
per client address, and past the limit a client gets ``TooManyAttempts`` (HTTP
429) until its oldest failure leaves the window.

``Accounts`` holds the state; ``auth_middleware`` puts the session on each
request; handlers call ``require(request, "admin")``; ``auth_routes`` gives
``POST /api/login``, ``POST /api/logout`` and ``GET /api/me``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ivr.audit import AccessGuard, AccessRefusedError
from ivr.store import ConstraintError, Database, Row
from ivr.web.responses import json_response as _json

# in rising order: each can do everything the ones before it can, except that a
# department (a body the hotline dispatches tickets to, ivr/tickets/dispatch.py)
# sees and acts on only its own tickets, and nothing of the operators', and a
# reviewer (质检员, ivr/web/quality.py) only the quality samples, anonymised
ROLES = ("reviewer", "department", "operator", "supervisor", "admin")
SESSION_COOKIE = "ivr_session"
CSRF_HEADER = "X-CSRF-Token"

# scrypt: n=2**15, r=8 takes 32 MiB and ~90 ms a hash on this machine (docs/decisions.md)
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_HASH_BYTES = 32
_SCRYPT_MAX_N = 2**20  # bounds on parameters read back from the database
_SCRYPT_MAX_R = 32
_SCRYPT_MAX_P = 16

MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # longer is surely a mistake (or an attempt to make us hash megabytes)
NAME_PATTERN = re.compile(r"[a-z0-9_.-]{2,32}")
SIP_URI_PATTERN = re.compile(r"sips?:[^\s<>\"]{1,200}")
MAX_TOKEN = 128  # a cookie longer than this cannot be one of ours

CLIENT_FAILURE_FACTOR = 4  # per client over all names: this many times max_failures
_SWEEP_EVERY_S = 60.0
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_BAD_CREDENTIALS = "wrong name or password"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    sip_uri: str | None
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "sip_uri": self.sip_uri}


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires_at: float


# where the auth middleware leaves the request's session and user (None: not logged in)
SESSION_KEY = web.RequestKey("session", object)
USER_KEY = web.RequestKey("user", object)


class AuthError(ValueError):
    """A bad name, role or password (policy), an unknown user, or a failed log-in;
    the message says which (a failed log-in never says whether the name exists)."""


class TooManyAttempts(Exception):
    """Too many failed log-ins from this client; try again after ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many failed log-ins; try again in {math.ceil(retry_after)} s")


class Accounts:
    """The console's users and their sessions, over the ``users`` and
    ``sessions`` tables (migration 6)."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        session_ttl: float = 12 * 3600,
        max_failures: int = 5,
        failure_window: float = 300.0,
        log: logging.Logger | None = None,
    ) -> None:
        if max_failures < 1 or failure_window <= 0 or session_ttl <= 0:
            raise ValueError("max_failures, failure_window and session_ttl must be positive")
        self._db = db
        self._clock = clock
        self._session_ttl = session_ttl
        self._max_failures = max_failures
        self._max_client_failures = CLIENT_FAILURE_FACTOR * max_failures
        self._window = failure_window
        self._log = log or logging.getLogger("ivr.web.auth")
        # failed (or still running) log-ins: when, per (client, name) and per client
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._client_failures: dict[str, deque[float]] = {}
        self._last_sweep = 0.0
        # the audit log and its locks (ivr/audit.py): log-ins audited, locked
        # accounts and addresses refused; None: neither (tests of this class alone)
        self.guard: AccessGuard | None = None

    # -- users -----------------------------------------------------------------
    async def add_user(
        self, name: str, password: str, role: str, *, sip_uri: str | None = None
    ) -> User:
        _check_name(name)
        if role not in ROLES:
            raise AuthError(f"role {role[:40]!r} is not one of {', '.join(ROLES)}")
        if sip_uri is not None and SIP_URI_PATTERN.fullmatch(sip_uri) is None:
            raise AuthError(
                f"sip_uri {sip_uri[:80]!r} is not a SIP URI (e.g. sip:op1@192.0.2.10:5060)"
            )
        _check_password(password)
        if await self.user(name) is not None:
            raise AuthError(f"user {name!r} already exists")
        password_hash = await hash_password(password)
        now = self._clock()
        try:
            await self._db.execute(
                "INSERT INTO users (name, role, password_hash, sip_uri, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, role, password_hash, sip_uri, now),
            )
        except ConstraintError as exc:  # added meanwhile by another process
            raise AuthError(f"user {name!r} already exists") from exc
        user = await self.user(name)
        assert user is not None
        self._log.info("auth: user %s added (%s)", name, role)
        return user

    async def set_password(self, name: str, password: str) -> None:
        """Change a password and end every session of that user."""
        _check_password(password)
        user = await self.user(name)
        if user is None:
            raise AuthError(f"no user {name[:40]!r}")
        password_hash = await hash_password(password)
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user.id)
            )
            await tx.execute("DELETE FROM sessions WHERE user_id = ?", (user.id,))
        self._log.info("auth: password of %s changed; their sessions ended", name)

    async def users(self) -> list[User]:
        rows = await self._db.fetch_all(
            "SELECT id, name, role, sip_uri, created_at FROM users ORDER BY name"
        )
        return [_user(row) for row in rows]

    async def user(self, name: str) -> User | None:
        row = await self._db.fetch_one(
            "SELECT id, name, role, sip_uri, created_at FROM users WHERE name = ?", (name,)
        )
        return _user(row) if row is not None else None

    # -- log-in and sessions ---------------------------------------------------
    async def login(self, name: str, password: str, *, client: str) -> tuple[str, Session]:
        """(the token for the cookie, the new session). Raises TooManyAttempts
        when this client has failed too often, AuthError on bad credentials."""
        now = self._clock()
        self._sweep(now)
        key = (client, name)
        if self.guard is not None:
            try:
                await self.guard.check_address(client)
            except AccessRefusedError:
                await self.guard.login_refused(name, client, "the address is locked")
                raise
        retry_after = self._blocked(key, now)
        if retry_after is not None:
            self._log.warning(
                "auth: log-in as %r from %s refused: too many failures", name[:40], client
            )
            if self.guard is not None:
                await self.guard.login_refused(name, client, "too many failed log-ins")
            raise TooManyAttempts(retry_after)
        # counted as a failure until it succeeds, so parallel guesses cannot
        # all slip in while the slow hashes run
        self._failures.setdefault(key, deque()).append(now)
        self._client_failures.setdefault(client, deque()).append(now)

        row = None
        if 0 < len(password) <= MAX_PASSWORD and NAME_PATTERN.fullmatch(name):
            row = await self._db.fetch_one(
                "SELECT id, name, role, sip_uri, created_at, password_hash, disabled "
                "FROM users WHERE name = ?",
                (name,),
            )
        if row is None:
            await hash_password(password[:MAX_PASSWORD])  # the same time as a known name
        ok = row is not None and await verify_password(password, row["password_hash"])
        if row is None or not ok or row["disabled"]:
            self._log.warning("auth: failed log-in as %r from %s", name[:40], client)
            if self.guard is not None:
                await self.guard.login_refused(name, client, _BAD_CREDENTIALS)
            raise AuthError(_BAD_CREDENTIALS)

        self._forget_attempt(key, client)
        user = _user(row)
        if self.guard is not None:  # the right password, but the account may be locked
            try:
                await self.guard.check_account(name)
            except AccessRefusedError:
                await self.guard.login_refused(name, client, "the account is locked")
                raise
        if _needs_rehash(row["password_hash"]):
            await self._db.execute(
                "UPDATE users SET password_hash = ? WHERE id = ?",
                (await hash_password(password), user.id),
            )
        token = secrets.token_urlsafe(32)
        session = Session(
            user=user, csrf=secrets.token_urlsafe(24), expires_at=now + self._session_ttl
        )
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            await tx.execute(
                "INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (_token_hash(token), user.id, session.csrf, now, session.expires_at),
            )
        self._log.info("auth: %s logged in from %s", name, client)
        if self.guard is not None:
            await self.guard.logged_in(name, user.role, client)
        return token, session

    async def session(self, token: str) -> Session | None:
        """The session of a cookie's token; None if unknown, expired (then
        deleted) or its user is disabled."""
        if not token or len(token) > MAX_TOKEN:
            return None
        token_hash = _token_hash(token)
        row = await self._db.fetch_one(
            "SELECT s.csrf, s.expires_at, u.id, u.name, u.role, u.sip_uri, u.created_at, "
            "u.disabled, u.locked_at FROM sessions s JOIN users u ON u.id = s.user_id "
            "WHERE s.token_hash = ?",
            (token_hash,),
        )
        if row is None:
            return None
        if row["expires_at"] <= self._clock():
            await self._db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
            return None
        if row["disabled"] or row["locked_at"] is not None:  # locked: ivr/audit.py
            return None
        return Session(user=_user(row), csrf=row["csrf"], expires_at=row["expires_at"])

    async def logout(self, token: str) -> None:
        if token and len(token) <= MAX_TOKEN:
            await self._db.execute(
                "DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),)
            )

    # -- rate limit ------------------------------------------------------------
    def _blocked(self, key: tuple[str, str], now: float) -> float | None:
        """Seconds until this client may try this name again; None if it may now."""
        waits = []
        for failures, limit in (
            (self._failures.get(key), self._max_failures),
            (self._client_failures.get(key[0]), self._max_client_failures),
        ):
            if failures is None:
                continue
            while failures and failures[0] <= now - self._window:
                failures.popleft()
            if len(failures) >= limit:
                # wait until enough failures have left the window to be under the limit
                waits.append(failures[len(failures) - limit] + self._window - now)
        return max(waits) if waits else None

    def _forget_attempt(self, key: tuple[str, str], client: str) -> None:
        """A log-in succeeded: its own attempt was no failure, and neither were
        this client's earlier failures for this name (other names' stay)."""
        failures = self._failures.pop(key, deque())
        client_failures = self._client_failures.get(client)
        if client_failures is None:
            return
        for when in failures:
            with contextlib.suppress(ValueError):
                client_failures.remove(when)
        if not client_failures:
            del self._client_failures[client]

    def _sweep(self, now: float) -> None:
        """Drop counters with nothing left in the window (bounded memory)."""
        if now - self._last_sweep < _SWEEP_EVERY_S:
            return
        self._last_sweep = now
        horizon = now - self._window
        for key in [k for k, v in self._failures.items() if not v or v[-1] <= horizon]:
            del self._failures[key]
        for client in [c for c, v in self._client_failures.items() if not v or v[-1] <= horizon]:
            del self._client_failures[client]


# -- password hashing ------------------------------------------------------------
def _check_name(name: str) -> None:
    if NAME_PATTERN.fullmatch(name) is None:
        raise AuthError(
            f"name {name[:40]!r} must be 2 to 32 of a-z, 0-9, '_', '.', '-' (lower case)"
        )


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AuthError(f"the password must have at most {MAX_PASSWORD} characters")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=128 * n * r * p + 2**20,
        dklen=length,
    )


async def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt_b64$hash_b64``, computed in a worker thread."""
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    digest = await asyncio.to_thread(
        _scrypt, password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_HASH_BYTES
    )
    return "$".join(
        (
            "scrypt",
            str(SCRYPT_N),
            str(SCRYPT_R),
            str(SCRYPT_P),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        )
    )


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return None
    if not (
        1 < n <= _SCRYPT_MAX_N
        and n & (n - 1) == 0
        and 0 < r <= _SCRYPT_MAX_R
        and 0 < p <= _SCRYPT_MAX_P
        and salt
        and 16 <= len(digest) <= 64
    ):
        return None
    return n, r, p, salt, digest


async def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the stored hash (constant-time compare)."""
    parsed = _parse_hash(stored)
    if parsed is None:
        logging.getLogger("ivr.web.auth").error("auth: a stored password hash is unreadable")
        return False
    n, r, p, salt, digest = parsed
    computed = await asyncio.to_thread(_scrypt, password, salt, n, r, p, len(digest))
    return hmac.compare_digest(computed, digest)


def _needs_rehash(stored: str) -> bool:
    parsed = _parse_hash(stored)
    return parsed is not None and parsed[:3] != (SCRYPT_N, SCRYPT_R, SCRYPT_P)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _user(row: Row) -> User:
    return User(
        id=int(row["id"]),
        name=str(row["name"]),
        role=str(row["role"]),
        sip_uri=row["sip_uri"],
        created_at=float(row["created_at"]),
    )


# -- HTTP --------------------------------------------------------------------------
def _error(cls: type[web.HTTPError], message: str, **kwargs: Any) -> web.HTTPError:
    return cls(
        text=json.dumps({"error": message}, ensure_ascii=False),
        content_type="application/json",
        **kwargs,
    )


def auth_middleware(accounts: Accounts) -> Middleware:
    """Sets ``request[SESSION_KEY]`` and ``request[USER_KEY]`` (None when not
    logged in); a write (POST/PUT/PATCH/DELETE) with a session must carry the
    session's CSRF token in the X-CSRF-Token header (log-in excepted)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = request.cookies.get(SESSION_COOKIE, "")
        session = await accounts.session(token) if token else None
        request[SESSION_KEY] = session
        request[USER_KEY] = session.user if session is not None else None
        if (
            session is not None
            and request.method in _WRITE_METHODS
            and not (request.method == "POST" and request.path == "/api/login")
        ):
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                return _json({"error": "csrf token missing or wrong"}, status=403)
        return await handler(request)

    return middleware


def require(request: web.Request, role: str = "operator") -> User:
    """The logged-in user, if their role is ``role`` or higher; otherwise
    raises HTTPUnauthorized (not logged in) or HTTPForbidden (role too low)."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {ROLES}")
    user: User | None = request.get(USER_KEY)
    if user is None:
        raise _error(web.HTTPUnauthorized, "log in first")
    if ROLES.index(user.role) < ROLES.index(role):
        raise _error(web.HTTPForbidden, f"this needs the {role} role")
    return user


def auth_routes(accounts: Accounts, *, secure_cookie: bool = False) -> list[web.AbstractRouteDef]:
    """POST /api/login, POST /api/logout, GET /api/me."""

    async def login(request: web.Request) -> web.Response:
        malformed = 'the body must be JSON: {"name": "...", "password": "..."}'
        # JSON only: a cross-site HTML form cannot send it (no log-in CSRF)
        if request.content_type != "application/json":
            return _json({"error": malformed}, status=400)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # nested too deep
            return _json({"error": malformed}, status=400)
        if not (
            isinstance(body, dict)
            and isinstance(body.get("name"), str)
            and isinstance(body.get("password"), str)
        ):
            return _json({"error": malformed}, status=400)
        try:
            token, session = await accounts.login(
                body["name"], body["password"], client=request.remote or "unknown"
            )
        except TooManyAttempts as exc:
            response = _json({"error": str(exc)}, status=429)
            response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
            return response
        except AccessRefusedError as exc:  # a locked account or address (ivr/audit.py)
            return _json({"error": str(exc)}, status=423)
        except AuthError as exc:
            return _json({"error": str(exc)}, status=401)
        response = _json({"user": session.user.to_json(), "csrf": session.csrf})
        response.set_cookie(
            SESSION_COOKIE,
            token,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=True if secure_cookie else None,
        )
        return response

    async def logout(request: web.Request) -> web.Response:
        token = request.cookies.get(SESSION_COOKIE, "")
        if token:
            await accounts.logout(token)
        response = _json({"ok": True})
        response.del_cookie(SESSION_COOKIE, path="/", samesite="Strict")
        return response

    async def me(request: web.Request) -> web.Response:
        session: Session | None = request.get(SESSION_KEY)
        if session is None:
            return _json({"error": "not logged in"}, status=401)
        return _json({"user": session.user.to_json(), "csrf": session.csrf})

    return [
        web.post("/api/login", login),
        web.post("/api/logout", logout),
        web.get("/api/me", me),
    ]
