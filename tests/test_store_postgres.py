"""The PostgreSQL back end on a real server: the migrations, two nodes
starting at once, a node with an older program refused, a server that cannot
be reached named in the error, and the placeholder rewriting."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from ivr.store import (
    MIGRATIONS,
    ConstraintError,
    DatabaseError,
    Migration,
    SchemaTooNewError,
    open_store,
)
from ivr.store.migrations import for_postgres
from ivr.store.postgres import hide_password, numbered_placeholders
from tests.conftest import new_postgres_database
from tests.postgres_server import PostgresServer


@pytest.fixture
def url(request: pytest.FixtureRequest, postgres_server: PostgresServer) -> str:
    return new_postgres_database(request, postgres_server)


def tables(server: PostgresServer, url: str) -> set[str]:
    database = url.rsplit("/", 1)[1]
    out = server.psql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database=database
    )
    return set(out.split())


async def test_migrations_make_every_table_on_postgres(
    url: str, postgres_server: PostgresServer
) -> None:
    before = time.time()
    async with await open_store(url) as db:
        applied = await db.applied_migrations()
        assert await db.schema_version() == MIGRATIONS[-1].version
    assert [m.version for m in applied] == [m.version for m in MIGRATIONS]
    assert before - 1 <= applied[0].applied_at <= time.time()
    assert {
        "calls",
        "tickets",
        "ticket_history",
        "ticket_recordings",
        "work_order_outbox",
        "callbacks",
        "callback_events",
        "caller_profiles",
        "users",
        "sessions",
        "dialplan_versions",
        "conversation_recordings",
        "console_events",
        "audit_log",
        "address_locks",
        "followups",
        "followup_events",
        "schema_migrations",
    } <= tables(postgres_server, url)
    # reopening applies nothing again
    async with await open_store(url) as db:
        assert [m.applied_at for m in await db.applied_migrations()] == [
            m.applied_at for m in applied
        ]


async def test_two_nodes_starting_at_once_apply_each_migration_once(url: str) -> None:
    stores = await asyncio.gather(*(open_store(url) for _ in range(4)))
    try:
        rows = await stores[0].fetch_all("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]
    finally:
        for db in stores:
            await db.close()


async def test_a_node_with_an_older_program_refuses_to_join(url: str) -> None:
    async with await open_store(url) as db:
        await db.execute(
            "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
            (99, "from the future", 0.0),
        )
    with pytest.raises(SchemaTooNewError) as caught:
        await open_store(url)
    message = str(caught.value)
    assert url in message and "schema version 99" in message
    assert f"up to {MIGRATIONS[-1].version}" in message and "cannot join" in message


async def test_a_later_migration_upgrades_and_a_failed_one_leaves_nothing(
    url: str, postgres_server: PostgresServer
) -> None:
    nxt = MIGRATIONS[-1].version + 1
    broken = Migration(
        nxt, "half broken", ("CREATE TABLE half (id INTEGER)", "CREATE TABLE calls (x INTEGER)")
    )
    with pytest.raises(DatabaseError, match=rf"migration {nxt} \(half broken\) failed"):
        await open_store(url, migrations=(*MIGRATIONS, broken))
    assert "half" not in tables(postgres_server, url)

    upgrade = Migration(nxt, "notes", ("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",))
    async with await open_store(url, migrations=(*MIGRATIONS, upgrade)) as db:
        assert await db.schema_version() == nxt
        row = await db.fetch_one("INSERT INTO notes (body) VALUES (?) RETURNING id", ("ok",))
        again = await db.fetch_one("INSERT INTO notes (body) VALUES (?) RETURNING id", ("ok",))
        assert row is not None and again is not None and again["id"] == row["id"] + 1


async def test_json_checks_and_unique_indexes_hold_on_postgres(url: str) -> None:
    async with await open_store(url) as db:
        with pytest.raises(DatabaseError):
            await db.execute(
                "INSERT INTO tickets (call_id, caller, fields, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                ("c1", "13800138000", "{not json", 1.0, 1.0),
            )
        await db.execute("INSERT INTO caller_profiles (number, updated_at) VALUES (?, ?)", ("1", 1))
        with pytest.raises(ConstraintError):
            await db.execute(
                "INSERT INTO caller_profiles (number, updated_at) VALUES (?, ?)", ("1", 2.0)
            )


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_server_that_cannot_be_reached_is_named_with_its_password_hidden() -> None:
    port = _closed_port()
    url = f"postgresql://ivr:s3cret@127.0.0.1:{port}/ivr"
    with pytest.raises(DatabaseError) as caught:
        await open_store(url)
    message = str(caught.value)
    assert f"postgresql://ivr:***@127.0.0.1:{port}/ivr" in message
    assert "s3cret" not in message and "cannot connect" in message


async def test_a_database_that_does_not_exist_is_named(postgres_server: PostgresServer) -> None:
    url = postgres_server.url("no_such_database")
    with pytest.raises(DatabaseError, match=r"no_such_database.*cannot connect"):
        await open_store(url)


def test_placeholders_are_numbered_outside_quotes() -> None:
    assert numbered_placeholders("SELECT ? , '?' , \"a?\" , ? -- ?\n, ?") == (
        "SELECT $1 , '?' , \"a?\" , $2 -- ?\n, $3"
    )
    assert hide_password("postgresql://u:p@h:1/d") == "postgresql://u:***@h:1/d"
    assert hide_password("postgresql://u@h/d") == "postgresql://u@h/d"


def test_every_migration_reads_as_postgres() -> None:
    for migration in MIGRATIONS:
        for statement in migration.statements:
            translated = for_postgres(statement)
            assert "AUTOINCREMENT" not in translated and "json_valid" not in translated
            assert " REAL" not in translated and "INTEGER" not in translated
