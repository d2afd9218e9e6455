"""The SQLite back end: one aiosqlite connection, WAL, versioned migrations.

The embedded default for one machine.  ``open_sqlite(path)`` creates the
folder and the file if needed, turns on WAL, a busy timeout and foreign keys,
and brings the schema up to date by applying, in order, each migration that
the database has not recorded in ``schema_migrations``.  Each migration runs
in its own transaction (BEGIN IMMEDIATE), so a failed one leaves nothing
behind and two processes opening the same file at once apply it only once.
A database written by a newer version of the program is refused.

One asyncio lock keeps other coroutines' statements out of an open
transaction (BEGIN IMMEDIATE also keeps other processes' writers out).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import aiosqlite

from ivr.store.base import (
    AppliedMigration,
    ConstraintError,
    DatabaseError,
    Params,
    Row,
    SchemaTooNewError,
    SqlDialect,
)
from ivr.store.migrations import CREATE_SCHEMA_TABLE, MIGRATIONS, Migration, check_migrations

BUSY_TIMEOUT_MS = 5000


class SqliteDialect:
    def json_value(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}.value')"

    def local_day(self, epoch_column: str) -> str:
        return f"date({epoch_column}, 'unixepoch', 'localtime')"

    def text_in_values(self, column: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM json_each({column}) AS f WHERE instr(CASE WHEN "
            "f.type = 'object' THEN json_extract(f.value, '$.value') END, ?) > 0)"
        )

    def contains(self, column: str) -> str:
        return f"instr({column}, ?) > 0"


async def open_sqlite(
    path: Path, *, migrations: Sequence[Migration] = MIGRATIONS
) -> SqliteDatabase:
    """Open (creating if needed) the database at ``path`` and migrate it.

    ``migrations`` is for tests; the program always uses MIGRATIONS.
    """
    check_migrations(migrations)
    try:
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise DatabaseError(f"{path}: cannot open the database ({exc}); check the path") from exc
    try:
        connection.row_factory = sqlite3.Row
        await _configure(connection, path)
        await _migrate(connection, path, migrations)
    except BaseException:
        await connection.close()
        raise
    return SqliteDatabase(connection, path)


class SqliteDatabase:
    """An open SQLite store. Use ``open_store`` to get one; ``close()`` it."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self.sql: SqlDialect = SqliteDialect()
        self._connection = connection
        self._lock = asyncio.Lock()
        self._lock_owner: asyncio.Task[object] | None = None

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement (autocommit); return the number of rows changed."""
        async with self._serialized():
            return await _execute(self._connection, sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        async with self._serialized():
            return await _fetch_one(self._connection, sql, params)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._serialized():
            return await _fetch_all(self._connection, sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        """``async with db.transaction() as tx``: commit at the end, roll back
        on any exception. Use ``tx``, not ``db``, for statements inside."""
        async with self._serialized():
            tx = SqliteTransaction(self._connection)
            await _execute(self._connection, "BEGIN IMMEDIATE", ())
            try:
                yield tx
            except BaseException:
                tx.closed = True
                await _execute(self._connection, "ROLLBACK", ())
                raise
            tx.closed = True
            await _execute(self._connection, "COMMIT", ())

    async def schema_version(self) -> int:
        async with self._serialized():
            return await _schema_version(self._connection)

    async def applied_migrations(self) -> list[AppliedMigration]:
        rows = await self.fetch_all(
            "SELECT version, description, applied_at FROM schema_migrations ORDER BY version"
        )
        return [AppliedMigration(row[0], row[1], row[2]) for row in rows]

    async def close(self) -> None:
        """Close the connection (waits for a transaction in progress); idempotent."""
        async with self._serialized():
            await self._connection.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def _serialized(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and task is self._lock_owner:
            raise RuntimeError(
                "statement on the Database inside its own transaction() would deadlock; "
                "use the transaction's execute/fetch methods"
            )
        async with self._lock:
            self._lock_owner = task
            try:
                yield
            finally:
                self._lock_owner = None


class SqliteTransaction:
    """Statements inside ``Database.transaction()``; unusable after it ends."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection
        self.closed = False

    async def execute(self, sql: str, params: Params = ()) -> int:
        self._check_open()
        return await _execute(self._connection, sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        self._check_open()
        return await _fetch_one(self._connection, sql, params)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        self._check_open()
        return await _fetch_all(self._connection, sql, params)

    async def lock(self, name: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already keeps every other writer out."""
        self._check_open()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("the transaction is over; open a new one")


async def _execute(connection: aiosqlite.Connection, sql: str, params: Params) -> int:
    try:
        async with connection.execute(sql, params) as cursor:
            return cursor.rowcount
    except sqlite3.IntegrityError as exc:
        raise ConstraintError(str(exc)) from exc


async def _fetch_one(
    connection: aiosqlite.Connection, sql: str, params: Params
) -> Row | None:
    try:
        async with connection.execute(sql, params) as cursor:
            return await cursor.fetchone()
    except sqlite3.IntegrityError as exc:
        raise ConstraintError(str(exc)) from exc


async def _fetch_all(
    connection: aiosqlite.Connection, sql: str, params: Params
) -> list[Row]:
    try:
        async with connection.execute(sql, params) as cursor:
            return list(await cursor.fetchall())
    except sqlite3.IntegrityError as exc:
        raise ConstraintError(str(exc)) from exc


async def _configure(connection: aiosqlite.Connection, path: Path) -> None:
    try:
        await _execute(connection, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}", ())
        row = await _fetch_one(connection, "PRAGMA journal_mode = WAL", ())
        await _execute(connection, "PRAGMA foreign_keys = ON", ())
        await _execute(connection, "PRAGMA synchronous = NORMAL", ())
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(
            f"{path}: cannot use this file as the database ({exc}); "
            "is it an SQLite database? Move it away or point [storage] url elsewhere"
        ) from exc
    mode = str(row[0]).lower() if row is not None else "unknown"
    if mode != "wal":
        raise DatabaseError(
            f"{path}: could not switch to WAL journal mode (got {mode}); "
            "the database must be on a local file system"
        )


async def _schema_version(connection: aiosqlite.Connection) -> int:
    row = await _fetch_one(connection, "SELECT MAX(version) FROM schema_migrations", ())
    return int(row[0]) if row is not None and row[0] is not None else 0


async def _migrate(
    connection: aiosqlite.Connection, path: Path, migrations: Sequence[Migration]
) -> None:
    await _execute(connection, CREATE_SCHEMA_TABLE, ())
    known = migrations[-1].version if migrations else 0
    current = await _schema_version(connection)
    if current > known:
        raise SchemaTooNewError(
            f"{path}: the database is at schema version {current} but this program knows "
            f"only versions up to {known}; run the newer program that wrote it, or point "
            "[storage] url at another file"
        )
    for migration in migrations:
        if migration.version > current:
            await _apply(connection, path, migration)


async def _apply(connection: aiosqlite.Connection, path: Path, migration: Migration) -> None:
    await _execute(connection, "BEGIN IMMEDIATE", ())
    try:
        done = await _fetch_one(
            connection,
            "SELECT 1 FROM schema_migrations WHERE version = ?",
            (migration.version,),
        )
        if done is None:  # another process may have applied it meanwhile
            for statement in (*migration.statements, *migration.sqlite_statements):
                await _execute(connection, statement, ())
            await _execute(
                connection,
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, time.time()),
            )
    except sqlite3.Error as exc:
        await _execute(connection, "ROLLBACK", ())
        raise DatabaseError(
            f"{path}: migration {migration.version} ({migration.description}) failed: {exc}; "
            f"nothing of it was kept, the database stays at version {migration.version - 1}"
        ) from exc
    await _execute(connection, "COMMIT", ())
