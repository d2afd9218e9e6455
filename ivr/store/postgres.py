"""The PostgreSQL back end (asyncpg): the store every node of a cluster shares.

``open_postgres(url)`` connects a small pool, checks the server answers, and
brings the schema up to date with the same versioned migrations as SQLite
(``migrations.for_postgres`` turns each statement into PostgreSQL's dialect).
Two nodes starting at once apply each migration once: the migration runs
under a transaction-scoped advisory lock.  A database at a newer schema
version than this program knows is refused, so an old node never joins a
cluster that has moved on.

Statements are written with ``?`` placeholders as for SQLite; they are
rewritten to ``$1, $2 ...`` here (outside quoted text), once per statement.
Each statement outside a transaction takes a connection from the pool for
itself and autocommits; ``transaction()`` holds one connection until it
commits or rolls back.  As with SQLite, one transaction runs at a time on a
node (statements outside transactions run side by side); across nodes a
decision that reads then writes shared rows takes ``tx.lock(name)``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from ivr.store.base import (
    AppliedMigration,
    ConstraintError,
    DatabaseError,
    Params,
    Row,
    SchemaTooNewError,
    SqlDialect,
    StoreUnavailableError,
)
from ivr.store.migrations import (
    CREATE_SCHEMA_TABLE,
    MIGRATIONS,
    Migration,
    check_migrations,
    for_postgres,
)

CONNECT_TIMEOUT_S = 5.0
POOL_MIN = 1
POOL_MAX = 8
MIGRATION_LOCK_KEY = 12345_0001  # pg_advisory_xact_lock key of the schema's migrations

# what a lost or unreachable server raises (asyncpg's own and the socket's)
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.PostgresConnectionError,
)

# what a store that was reached before and is lost now raises: the above, and a
# server shutting down under the statement (pg_ctl stop, a crash)
_UNREACHABLE: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)


@contextmanager
def _reaching(location: str) -> Iterator[None]:
    """A lost server, a cut connection: StoreUnavailableError naming the store."""
    try:
        yield
    except _UNREACHABLE as exc:
        raise _lost(location, exc) from exc


_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    socket.gaierror,
    asyncpg.PostgresError,
    ValueError,
)


# what SQLite reports as a failed constraint: PostgreSQL's class 23, and class 22
# for text refused by a check's cast (a JSON column given text that is not JSON)
_REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
)


def hide_password(url: str) -> str:
    """The URL as it may appear in a message or a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))


def local_time_zone() -> str:
    """This machine's time zone as PostgreSQL names it (IANA), so that the
    server's dates are the node's local dates; UTC when none can be found."""
    named = os.environ.get("TZ", "").lstrip(":")
    if named and "/" in named and not named.startswith("/"):
        return named
    try:
        text = Path("/etc/timezone").read_text().strip()
        if text:
            return text
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        return "UTC"
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else "UTC"


def numbered_placeholders(sql: str) -> str:
    """``?`` -> ``$1``, ``$2`` ... outside quoted text and comments."""
    out: list[str] = []
    n = 0
    i = 0
    quote: str | None = None
    while i < len(sql):
        c = sql[i]
        if quote is not None:
            out.append(c)
            if c == quote:
                quote = None
        elif c in ("'", '"'):
            quote = c
            out.append(c)
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = len(sql) if end < 0 else end
            out.append(sql[i:end])
            i = end
            continue
        elif c == "?":
            n += 1
            out.append(f"${n}")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _changed(status: str) -> int:
    """Rows changed, from a command tag such as 'UPDATE 3' or 'INSERT 0 1'."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresDialect:
    def json_value(self, column: str, key: str) -> str:
        return f"(({column})::jsonb -> '{key}' ->> 'value')"

    def local_day(self, epoch_column: str) -> str:
        return f"to_char(to_timestamp({epoch_column}), 'YYYY-MM-DD')"

    def text_in_values(self, column: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM jsonb_each(({column})::jsonb) AS f(key, value) "
            "WHERE jsonb_typeof(f.value) = 'object' AND strpos(f.value ->> 'value', ?) > 0)"
        )

    def contains(self, column: str) -> str:
        return f"strpos({column}, ?) > 0"


class _Statements:
    """Placeholder rewriting, cached per statement text."""

    def __init__(self) -> None:
        self._rewritten: dict[str, str] = {}

    def rewrite(self, sql: str) -> str:
        done = self._rewritten.get(sql)
        if done is None:
            done = numbered_placeholders(sql)
            if len(self._rewritten) < 4096:
                self._rewritten[sql] = done
        return done


def _args(params: Params) -> Sequence[object]:
    if isinstance(params, dict):
        raise TypeError("the store takes positional ? parameters, not named ones")
    return params


async def open_postgres(
    url: str,
    *,
    migrations: Sequence[Migration] = MIGRATIONS,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    pool_max: int = POOL_MAX,
) -> PostgresDatabase:
    """Connect to the database at ``url`` (postgresql://user:pass@host:port/db)
    and migrate it. DatabaseError, naming the URL, when it cannot."""
    check_migrations(migrations)
    shown = hide_password(url)
    try:
        pool = await asyncpg.create_pool(
            dsn=url,
            min_size=POOL_MIN,
            max_size=pool_max,
            timeout=connect_timeout,
            command_timeout=60,
            server_settings={"application_name": "ivr", "TimeZone": local_time_zone()},
        )
    except _CONNECT_ERRORS as exc:
        raise DatabaseError(
            f"{shown}: cannot connect to the database ({type(exc).__name__}: {exc}); "
            "check [storage] url, that PostgreSQL runs there and lets this node in"
        ) from exc
    db = PostgresDatabase(pool, shown)
    try:
        await db.migrate(migrations)
    except BaseException:
        await db.close()
        raise
    return db


class PostgresDatabase:
    """An open PostgreSQL store. Use ``open_store`` to get one; ``close()`` it."""

    def __init__(self, pool: Any, location: str) -> None:
        self.location = location
        self.sql: SqlDialect = PostgresDialect()
        self._pool = pool
        self._statements = _Statements()
        self._in_transaction: set[asyncio.Task[Any]] = set()
        # one transaction at a time on this node, as with SQLite: code that reads
        # then writes inside a transaction sees no other task of this node meddle;
        # across nodes, shared decisions take tx.lock(name) or lock their rows
        self._transactions = asyncio.Lock()
        self._closed = False

    async def execute(self, sql: str, params: Params = ()) -> int:
        self._check_outside_transaction()
        with _reaching(self.location):
            async with self._pool.acquire() as connection:
                return await PostgresTransaction(
                    connection, self._statements, self.location
                ).execute(sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        self._check_outside_transaction()
        with _reaching(self.location):
            async with self._pool.acquire() as connection:
                return await PostgresTransaction(
                    connection, self._statements, self.location
                ).fetch_one(sql, params)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        self._check_outside_transaction()
        with _reaching(self.location):
            async with self._pool.acquire() as connection:
                return await PostgresTransaction(
                    connection, self._statements, self.location
                ).fetch_all(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """``async with db.transaction() as tx``: commit at the end, roll back
        on any exception. Use ``tx``, not ``db``, for statements inside."""
        self._check_outside_transaction()
        task = asyncio.current_task()
        # a lost server while connecting, beginning, committing or rolling back
        # is said as StoreUnavailableError too (statements inside say it themselves)
        with _reaching(self.location):
            async with self._transactions, self._pool.acquire() as connection:
                tx = PostgresTransaction(connection, self._statements, self.location)
                if task is not None:
                    self._in_transaction.add(task)
                try:
                    async with connection.transaction():
                        yield tx
                finally:
                    tx.closed = True
                    if task is not None:
                        self._in_transaction.discard(task)

    async def schema_version(self) -> int:
        row = await self.fetch_one("SELECT MAX(version) FROM schema_migrations")
        return int(row[0]) if row is not None and row[0] is not None else 0

    async def applied_migrations(self) -> list[AppliedMigration]:
        rows = await self.fetch_all(
            "SELECT version, description, applied_at FROM schema_migrations ORDER BY version"
        )
        return [AppliedMigration(int(r[0]), str(r[1]), float(r[2])) for r in rows]

    async def migrate(self, migrations: Sequence[Migration]) -> None:
        known = migrations[-1].version if migrations else 0
        async with self.transaction() as tx:
            await tx.fetch_one("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))
            await tx.execute(for_postgres(CREATE_SCHEMA_TABLE))
        current = await self.schema_version()
        if current > known:
            raise SchemaTooNewError(
                f"{self.location}: the database is at schema version {current} but this "
                f"program knows only versions up to {known}; this node cannot join: upgrade "
                "it to the version the other nodes run, or point [storage] url elsewhere"
            )
        for migration in migrations:
            if migration.version > current:
                await self._apply(migration)

    async def _apply(self, migration: Migration) -> None:
        try:
            async with self.transaction() as tx:
                await tx.fetch_one("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))
                done = await tx.fetch_one(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                )
                if done is not None:  # another node applied it meanwhile
                    return
                for statement in migration.statements:
                    await tx.execute(for_postgres(statement))
                for statement in migration.postgres_statements:
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, description, applied_at) "
                    "VALUES (?, ?, ?)",
                    (migration.version, migration.description, time.time()),
                )
        except asyncpg.PostgresError as exc:
            raise DatabaseError(
                f"{self.location}: migration {migration.version} ({migration.description}) "
                f"failed: {exc}; nothing of it was kept, the database stays at version "
                f"{migration.version - 1}"
            ) from exc

    async def close(self) -> None:
        """Close the pool (waits up to 10 s for statements in progress); idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._pool.close(), 10)
        except CONNECTION_ERRORS:
            self._pool.terminate()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_outside_transaction(self) -> None:
        task = asyncio.current_task()
        if task is not None and task in self._in_transaction:
            raise RuntimeError(
                "statement on the Database inside its own transaction() would deadlock; "
                "use the transaction's execute/fetch methods"
            )


class PostgresTransaction:
    """Statements on one connection (inside ``transaction()``, or one alone)."""

    def __init__(self, connection: Any, statements: _Statements, location: str = "") -> None:
        self._connection = connection
        self._statements = statements
        self._location = location
        self.closed = False

    async def execute(self, sql: str, params: Params = ()) -> int:
        self._check_open()
        try:
            status = await self._connection.execute(
                self._statements.rewrite(sql), *_args(params)
            )
        except _REFUSED as exc:
            raise ConstraintError(str(exc)) from exc
        except _UNREACHABLE as exc:
            raise _lost(self._location, exc) from exc
        return _changed(str(status))

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        self._check_open()
        try:
            row: Row | None = await self._connection.fetchrow(
                self._statements.rewrite(sql), *_args(params)
            )
        except _REFUSED as exc:
            raise ConstraintError(str(exc)) from exc
        except _UNREACHABLE as exc:
            raise _lost(self._location, exc) from exc
        return row

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        self._check_open()
        try:
            rows: list[Row] = await self._connection.fetch(
                self._statements.rewrite(sql), *_args(params)
            )
        except _REFUSED as exc:
            raise ConstraintError(str(exc)) from exc
        except _UNREACHABLE as exc:
            raise _lost(self._location, exc) from exc
        return rows

    async def lock(self, name: str) -> None:
        """A transaction-scoped advisory lock, keyed by the name's hash."""
        await self.fetch_one("SELECT pg_advisory_xact_lock(hashtext(?))", (name,))

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("the transaction is over; open a new one")


def _lost(location: str, exc: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"{location}: the database cannot be reached ({type(exc).__name__}: {exc})"
    )
