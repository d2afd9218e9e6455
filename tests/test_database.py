"""ivr.store and ivr.call_records on a real SQLite file and a real PostgreSQL
server (the statements, transactions and call records on both)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.call import EndReason, TransferOutcome
from ivr.call_records import CallRecord, CallRecordError, CallRecordStore
from ivr.store import (
    MIGRATIONS,
    Database,
    DatabaseError,
    Migration,
    SchemaTooNewError,
    open_store,
)


@pytest.fixture
async def db(store_location: str | Path) -> AsyncIterator[Database]:
    database = await open_store(store_location)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_store(tmp_path / "var" / "ivr.sqlite3")
    try:
        yield database
    finally:
        await database.close()


def table_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


# ------------------------------------------------------------------ database


async def test_open_creates_folder_and_applies_migrations_once(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "ivr.sqlite3"
    before = time.time()

    async with await open_store(path) as db:
        applied = await db.applied_migrations()
        assert await db.schema_version() == MIGRATIONS[-1].version

    assert path.is_file()
    assert [m.version for m in applied] == [m.version for m in MIGRATIONS]
    assert applied[0].description == MIGRATIONS[0].description
    assert before <= applied[0].applied_at <= time.time()
    assert {"calls", "schema_migrations"} <= table_names(path)


async def test_reopen_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "ivr.sqlite3"
    async with await open_store(path) as db:
        first = await db.applied_migrations()
        await CallRecordStore(db).start(CallRecord("c1", "13800000000", "12345", 1.0))

    async with await open_store(path) as db:
        assert await db.applied_migrations() == first
        assert await CallRecordStore(db).get("c1") is not None


async def test_connection_settings(sqlite_db: Database) -> None:
    journal = await sqlite_db.fetch_one("PRAGMA journal_mode")
    foreign_keys = await sqlite_db.fetch_one("PRAGMA foreign_keys")
    busy_timeout = await sqlite_db.fetch_one("PRAGMA busy_timeout")

    assert journal is not None and journal[0] == "wal"
    assert foreign_keys is not None and foreign_keys[0] == 1
    assert busy_timeout is not None and busy_timeout[0] >= 1000


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ivr.sqlite3"
    async with await open_store(path):
        pass
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO schema_migrations (version, description, applied_at) "
            "VALUES (99, 'from the future', 0)"
        )

    with pytest.raises(SchemaTooNewError) as caught:
        await open_store(path)

    message = str(caught.value)
    assert str(path) in message
    assert "schema version 99" in message
    assert f"up to {MIGRATIONS[-1].version}" in message


async def test_later_migration_upgrades_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "ivr.sqlite3"
    async with await open_store(path):
        pass
    nxt = MIGRATIONS[-1].version + 1
    upgrade = Migration(nxt, "notes", ("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",))
    expected = [*(m.version for m in MIGRATIONS), nxt]

    async with await open_store(path, migrations=(*MIGRATIONS, upgrade)) as db:
        versions = [m.version for m in await db.applied_migrations()]
        assert versions == expected
        await db.execute("INSERT INTO notes (body) VALUES (?)", ("ok",))

    async with await open_store(path, migrations=(*MIGRATIONS, upgrade)) as db:
        assert [m.version for m in await db.applied_migrations()] == expected


async def test_failed_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "ivr.sqlite3"
    broken = Migration(
        2,
        "half broken",
        ("CREATE TABLE half (id INTEGER)", "CREATE TABLE calls (id INTEGER)"),
    )

    with pytest.raises(DatabaseError, match=r"migration 2 \(half broken\) failed"):
        await open_store(path, migrations=(MIGRATIONS[0], broken))

    assert "half" not in table_names(path)
    async with await open_store(path, migrations=(MIGRATIONS[0],)) as db:
        assert await db.schema_version() == 1


def test_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


async def test_out_of_order_migrations_are_a_programming_error(tmp_path: Path) -> None:
    gap = Migration(3, "gap", ("SELECT 1",))
    with pytest.raises(ValueError, match="1, 2, 3"):
        await open_store(tmp_path / "x.sqlite3", migrations=(MIGRATIONS[0], gap))


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ivr.sqlite3"
    path.write_bytes(b"this is a text file, not SQLite" * 100)

    with pytest.raises(DatabaseError, match="cannot use this file as the database"):
        await open_store(path)


async def test_transaction_commits_or_rolls_back(db: Database) -> None:
    await db.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO counter (n) VALUES (1)")

    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO counter (n) VALUES (2)")
            raise RuntimeError("boom")

    assert [row[0] for row in await db.fetch_all("SELECT n FROM counter")] == [1]
    with pytest.raises(RuntimeError, match="transaction is over"):
        await tx.execute("SELECT 1")


async def test_transactions_of_concurrent_tasks_do_not_interleave(db: Database) -> None:
    await db.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
    await db.execute("INSERT INTO counter (n) VALUES (0)")

    async def increment() -> None:
        async with db.transaction() as tx:
            row = await tx.fetch_one("SELECT n FROM counter")
            assert row is not None
            await asyncio.sleep(0)
            await tx.execute("UPDATE counter SET n = ?", (row[0] + 1,))

    await asyncio.gather(*(increment() for _ in range(20)))

    row = await db.fetch_one("SELECT n FROM counter")
    assert row is not None and row[0] == 20


async def test_database_statement_inside_own_transaction_is_refused(db: Database) -> None:
    async with db.transaction():
        with pytest.raises(RuntimeError, match="deadlock"):
            await db.execute("SELECT 1")


# -------------------------------------------------------------- call records


def full_record(call_id: str = "a84b4c76e66710@127.0.0.1", started_at: float = 1.0) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        caller="13800138000",
        dialled="12345",
        started_at=started_at,
        answered_at=started_at + 0.5,
        ended_at=started_at + 95.25,
        path=["greeting", "main_menu", "转人工"],
        digits="3#0",
        queue="general",
        operator="sip:operator@127.0.0.1:5080",
        outcome=TransferOutcome.BRIDGED.value,
        end_reason=EndReason.CALLER_HANGUP.value,
        codec="PCMA",
        plan_version="2026-11-25.3",
    )


async def test_call_record_round_trip(db: Database) -> None:
    store = CallRecordStore(db)
    record = full_record()

    await store.start(record)

    assert await store.get(record.call_id) == record


async def test_call_record_minimal_round_trip(db: Database) -> None:
    store = CallRecordStore(db)
    record = CallRecord("c-min", "anonymous", "12345", 1700000000.125)

    await store.start(record)

    got = await store.get("c-min")
    assert got == record
    assert got is not None
    assert got.path == []
    assert got.answered_at is None


async def test_call_record_update_as_the_call_goes_on(db: Database) -> None:
    store = CallRecordStore(db)
    record = CallRecord("c2", "13900000000", "12345", 10.0)
    await store.start(record)

    record.answered_at = 10.2
    record.path.append("greeting")
    record.digits += "1"
    await store.update(record)
    record.path.append("hangup")
    record.ended_at = 30.0
    record.outcome = "hangup_in_menu"
    record.end_reason = EndReason.CALLER_HANGUP.value
    await store.update(record)

    assert await store.get("c2") == record
    assert len(await store.list_recent()) == 1


async def test_update_of_an_unknown_call_inserts_it(db: Database) -> None:
    store = CallRecordStore(db)
    await store.update(full_record("late"))

    assert await store.get("late") == full_record("late")


async def test_starting_a_call_twice_is_an_error(db: Database) -> None:
    store = CallRecordStore(db)
    await store.start(full_record("dup"))

    with pytest.raises(CallRecordError, match="'dup' exists"):
        await store.start(CallRecord("dup", "x", "12345", 5.0))
    assert await store.get("dup") == full_record("dup")


async def test_get_unknown_call(db: Database) -> None:
    assert await CallRecordStore(db).get("nobody") is None


async def test_list_recent_is_newest_first_and_limited(db: Database) -> None:
    store = CallRecordStore(db)
    for n in range(5):
        await store.start(full_record(f"call-{n}", started_at=100.0 + n))

    recent = await store.list_recent(limit=3)

    assert [r.call_id for r in recent] == ["call-4", "call-3", "call-2"]
    assert len(await store.list_recent()) == 5
    assert await store.list_recent(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        await store.list_recent(limit=-1)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"end_reason": "he_just_left"}, "end_reason 'he_just_left' is not one of"),
        ({"started_at": float("nan")}, "started_at must be epoch seconds"),
        ({"path": ["greeting", 3]}, "path must be a list"),
        ({"call_id": ""}, "call_id must not be empty"),
    ],
)
async def test_bad_call_records_are_refused(
    db: Database, change: dict[str, object], words: str
) -> None:
    record = full_record("bad")
    for name, value in change.items():
        setattr(record, name, value)

    with pytest.raises(CallRecordError, match=words):
        await CallRecordStore(db).update(record)
    assert await CallRecordStore(db).list_recent() == []


async def test_every_end_reason_is_accepted(db: Database) -> None:
    store = CallRecordStore(db)
    for reason in EndReason:
        record = full_record(f"call-{reason.value}")
        record.end_reason = reason.value
        await store.start(record)
        got = await store.get(record.call_id)
        assert got is not None and EndReason(got.end_reason or "") is reason
