"""The SQLite database: one aiosqlite connection, WAL, versioned migrations.

``open_database(path)`` creates the folder and the file if needed, turns on
WAL, a busy timeout and foreign keys, and brings the schema up to date by
applying, in order, each migration in MIGRATIONS that the database has not
recorded in ``schema_migrations``.  Each migration runs in its own
transaction (BEGIN IMMEDIATE), so a failed one leaves nothing behind and two
processes opening the same file at once apply it only once.  A database
written by a newer version of the program is refused.

Statements go through ``Database.execute`` / ``fetch_one`` / ``fetch_all``
(each one autocommits) or, for several statements that must succeed or fail
together, through ``async with db.transaction() as tx``.  One asyncio lock
keeps other coroutines' statements out of an open transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import aiosqlite

BUSY_TIMEOUT_MS = 5000

Params = Sequence[object] | Mapping[str, object]


@dataclass(frozen=True)
class Migration:
    version: int  # 1, 2, 3 ... with no gaps
    description: str
    statements: tuple[str, ...]  # run one by one, in one transaction


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "calls: one record per call (path through the dial plan, queue, outcome)",
        (
            """
            CREATE TABLE calls (
                call_id      TEXT PRIMARY KEY NOT NULL,
                caller       TEXT NOT NULL,
                dialled      TEXT NOT NULL,
                started_at   REAL NOT NULL,
                answered_at  REAL,
                ended_at     REAL,
                path         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(path)),
                digits       TEXT NOT NULL DEFAULT '',
                queue        TEXT,
                operator     TEXT,
                outcome      TEXT,
                end_reason   TEXT,
                codec        TEXT,
                plan_version TEXT
            )
            """,
            "CREATE INDEX calls_by_started_at ON calls (started_at)",
            "CREATE INDEX calls_by_caller ON calls (caller, started_at)",
        ),
    ),
    Migration(
        2,
        "tickets (工单) with their history and recordings; the work-order webhook outbox",
        (
            """
            CREATE TABLE tickets (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                call_id     TEXT NOT NULL,
                caller      TEXT NOT NULL,
                status      TEXT NOT NULL DEFAULT 'open',
                fields      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(fields)),
                transcript  TEXT NOT NULL DEFAULT '',
                notes       TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(notes)),
                emergency   TEXT,
                created_at  REAL NOT NULL,
                updated_at  REAL NOT NULL
            )
            """,
            "CREATE INDEX tickets_by_call ON tickets (call_id)",
            "CREATE INDEX tickets_by_caller ON tickets (caller, created_at)",
            """
            CREATE TABLE ticket_history (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                ticket_id  INTEGER NOT NULL REFERENCES tickets (id),
                at         REAL NOT NULL,
                who        TEXT NOT NULL,
                what       TEXT NOT NULL,
                old_value  TEXT,
                new_value  TEXT
            )
            """,
            "CREATE INDEX ticket_history_by_ticket ON ticket_history (ticket_id, at)",
            """
            CREATE TABLE ticket_recordings (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                ticket_id  INTEGER NOT NULL REFERENCES tickets (id),
                path       TEXT NOT NULL,
                seconds    REAL NOT NULL,
                ending     TEXT NOT NULL,
                transcript TEXT,
                created_at REAL NOT NULL
            )
            """,
            "CREATE INDEX ticket_recordings_by_ticket ON ticket_recordings (ticket_id)",
            """
            CREATE TABLE work_order_outbox (
                id           INTEGER PRIMARY KEY AUTOINCREMENT,
                ticket_id    INTEGER NOT NULL REFERENCES tickets (id),
                payload      TEXT NOT NULL CHECK (json_valid(payload)),
                attempts     INTEGER NOT NULL DEFAULT 0,
                next_at      REAL NOT NULL,
                last_error   TEXT,
                delivered_at REAL,
                created_at   REAL NOT NULL
            )
            """,
            "CREATE INDEX work_order_outbox_due ON work_order_outbox (delivered_at, next_at)",
        ),
    ),
    Migration(
        3,
        "callbacks: the dropped-call callback queue (one open per number) and its transitions",
        (
            """
            CREATE TABLE callbacks (
                id                   INTEGER PRIMARY KEY AUTOINCREMENT,
                number               TEXT NOT NULL CHECK (number <> ''),
                call_id              TEXT NOT NULL,
                first_call_id        TEXT NOT NULL,
                ticket_id            INTEGER,
                reason               TEXT NOT NULL
                    CHECK (reason IN ('abandoned', 'dropped', 'operator_failed')),
                state                TEXT NOT NULL CHECK (state IN ('pending', 'dialing',
                    'connected', 'no_answer', 'busy', 'failed', 'cancelled', 'done')),
                priority             INTEGER NOT NULL,
                elderly              INTEGER NOT NULL DEFAULT 0 CHECK (elderly IN (0, 1)),
                emergency            INTEGER NOT NULL DEFAULT 0 CHECK (emergency IN (0, 1)),
                urgency              TEXT CHECK (urgency IN ('紧急', '较急', '一般')),
                original_enqueued_at REAL,
                original_position    INTEGER,
                attempts             INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
                next_at              REAL NOT NULL,
                last_error           TEXT,
                created_at           REAL NOT NULL,
                updated_at           REAL NOT NULL
            )
            """,
            """
            CREATE UNIQUE INDEX callbacks_one_open_per_number ON callbacks (number)
            WHERE state IN ('pending', 'dialing', 'connected', 'no_answer', 'busy')
            """,
            "CREATE INDEX callbacks_due ON callbacks (state, next_at)",
            "CREATE INDEX callbacks_by_number ON callbacks (number, created_at)",
            """
            CREATE TABLE callback_events (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                callback_id INTEGER NOT NULL REFERENCES callbacks (id),
                at          REAL NOT NULL,
                from_state  TEXT,
                to_state    TEXT NOT NULL,
                detail      TEXT NOT NULL DEFAULT ''
            )
            """,
            "CREATE INDEX callback_events_by_callback ON callback_events (callback_id, id)",
            "CREATE INDEX callback_events_attempts ON callback_events (to_state, at)",
        ),
    ),
    Migration(
        4,
        "caller profiles: how the last call from a number ended (speed, dialect, ticket)",
        (
            """
            CREATE TABLE caller_profiles (
                number         TEXT PRIMARY KEY NOT NULL,
                speed          REAL NOT NULL DEFAULT 1.0 CHECK (speed > 0 AND speed <= 1),
                dialect        TEXT,
                last_ticket_id INTEGER,
                updated_at     REAL NOT NULL
            )
            """,
        ),
    ),
    Migration(
        5,
        "caller profiles: 亲友代办 (whom a relative reports for) and whom to call back",
        (
            "ALTER TABLE caller_profiles ADD COLUMN beneficiary TEXT",  # JSON: name, phone, address
            "ALTER TABLE caller_profiles ADD COLUMN callback_to TEXT",  # caller | beneficiary
        ),
    ),
    Migration(
        6,
        "web console users (operator, admin) and their sessions",
        (
            """
            CREATE TABLE users (
                id            INTEGER PRIMARY KEY,
                name          TEXT NOT NULL UNIQUE,
                role          TEXT NOT NULL CHECK (role IN ('operator', 'admin')),
                password_hash TEXT NOT NULL,
                sip_uri       TEXT,          -- an operator's phone (their screen pops for it)
                disabled      INTEGER NOT NULL DEFAULT 0,
                created_at    REAL NOT NULL
            )
            """,
            """
            CREATE TABLE sessions (
                token_hash TEXT PRIMARY KEY NOT NULL,  -- sha256 of the cookie's token
                user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                csrf       TEXT NOT NULL,
                created_at REAL NOT NULL,
                expires_at REAL NOT NULL
            )
            """,
            "CREATE INDEX sessions_by_user ON sessions (user_id)",
        ),
    ),
    Migration(
        7,
        "dial plan versions: every published plan, for history and rollback",
        (
            """
            CREATE TABLE dialplan_versions (
                id           INTEGER PRIMARY KEY,
                version      TEXT NOT NULL,    -- first 12 hex digits of the source's sha256
                source       TEXT NOT NULL,    -- the TOML as published
                author       TEXT NOT NULL,
                note         TEXT NOT NULL DEFAULT '',
                published_at REAL NOT NULL
            )
            """,
        ),
    ),
    Migration(
        8,
        "conversation recordings: the caller and the operator, one stereo WAV a bridged call",
        (
            """
            CREATE TABLE conversation_recordings (
                id         INTEGER PRIMARY KEY,
                call_id    TEXT NOT NULL,
                operator   TEXT NOT NULL,
                path       TEXT NOT NULL,   -- '' once deleted by the retention period
                started_at REAL NOT NULL,
                seconds    REAL
            )
            """,
            "CREATE INDEX conversation_recordings_by_call ON conversation_recordings (call_id)",
            "CREATE INDEX conversation_recordings_by_start ON conversation_recordings (started_at)",
        ),
    ),
    Migration(
        9,
        "ticket recordings: a transcript that reads as the recogniser's loop is marked unreliable",
        (
            # why the transcript is unreliable (ivr.speech.repetition); NULL: it reads as speech
            "ALTER TABLE ticket_recordings ADD COLUMN transcript_unreliable TEXT",
        ),
    ),
)

_CREATE_SCHEMA_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version     INTEGER PRIMARY KEY NOT NULL,
        description TEXT NOT NULL,
        applied_at  REAL NOT NULL
    )
"""


class DatabaseError(Exception):
    """The database cannot be opened or brought up to date."""


class SchemaTooNewError(DatabaseError):
    """The database was written by a newer version of this program."""


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    description: str
    applied_at: float  # epoch seconds


async def open_database(path: Path, *, migrations: Sequence[Migration] = MIGRATIONS) -> Database:
    """Open (creating if needed) the database at ``path`` and migrate it.

    ``migrations`` is for tests; the program always uses MIGRATIONS.
    """
    _check_migrations(migrations)
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
    return Database(connection, path)


class Database:
    """An open database. Use ``open_database`` to get one; ``close()`` it."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self.path = path
        self._connection = connection
        self._lock = asyncio.Lock()
        self._lock_owner: asyncio.Task[object] | None = None

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement (autocommit); return the number of rows changed."""
        async with self._serialized():
            return await _execute(self._connection, sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        async with self._serialized():
            return await _fetch_one(self._connection, sql, params)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        async with self._serialized():
            return await _fetch_all(self._connection, sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """``async with db.transaction() as tx``: commit at the end, roll back
        on any exception. Use ``tx``, not ``db``, for statements inside."""
        async with self._serialized():
            tx = Transaction(self._connection)
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


class Transaction:
    """Statements inside ``Database.transaction()``; unusable after it ends."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection
        self.closed = False

    async def execute(self, sql: str, params: Params = ()) -> int:
        self._check_open()
        return await _execute(self._connection, sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        self._check_open()
        return await _fetch_one(self._connection, sql, params)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        self._check_open()
        return await _fetch_all(self._connection, sql, params)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("the transaction is over; open a new one")


async def _execute(connection: aiosqlite.Connection, sql: str, params: Params) -> int:
    async with connection.execute(sql, params) as cursor:
        return cursor.rowcount


async def _fetch_one(
    connection: aiosqlite.Connection, sql: str, params: Params
) -> sqlite3.Row | None:
    async with connection.execute(sql, params) as cursor:
        return await cursor.fetchone()


async def _fetch_all(
    connection: aiosqlite.Connection, sql: str, params: Params
) -> list[sqlite3.Row]:
    async with connection.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


def _check_migrations(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, 3 ... in order, got {versions}")


async def _configure(connection: aiosqlite.Connection, path: Path) -> None:
    try:
        await _execute(connection, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}", ())
        row = await _fetch_one(connection, "PRAGMA journal_mode = WAL", ())
        await _execute(connection, "PRAGMA foreign_keys = ON", ())
        await _execute(connection, "PRAGMA synchronous = NORMAL", ())
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(
            f"{path}: cannot use this file as the database ({exc}); "
            "is it an SQLite database? Move it away or point storage.database elsewhere"
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
    await _execute(connection, _CREATE_SCHEMA_TABLE, ())
    known = migrations[-1].version if migrations else 0
    current = await _schema_version(connection)
    if current > known:
        raise SchemaTooNewError(
            f"{path}: the database is at schema version {current} but this program knows "
            f"only versions up to {known}; run the newer program that wrote it, or point "
            "storage.database at another file"
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
            for statement in migration.statements:
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
