"""What every back end of the store offers, and what the rest of the hotline
may rely on: statements with ``?`` placeholders, rows readable by column name
or position, transactions, the schema version, and three SQL expressions
whose spelling differs between back ends (``SqlDialect``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

Params = Sequence[object]


class DatabaseError(Exception):
    """The database cannot be opened, reached or brought up to date."""


class SchemaTooNewError(DatabaseError):
    """The database was written by a newer version of this program."""


class StoreUnavailableError(DatabaseError):
    """The store was open but cannot be reached now (server stopped, network
    lost, connection cut): what was asked was not done; the same may work
    once the store is back."""


class ConstraintError(DatabaseError):
    """A statement broke a constraint (unique, check, foreign key); nothing changed."""


class Row(Protocol):
    """One result row: ``row["name"]``, ``row[0]``, ``dict(row)``, ``tuple(row)``."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    def keys(self) -> Any: ...


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    description: str
    applied_at: float  # epoch seconds


class SqlDialect(Protocol):
    """The few expressions the back ends spell differently."""

    def json_value(self, column: str, key: str) -> str:
        """``column`` holds a JSON object of {key: {"value": ...}}: the value as text."""
        ...

    def local_day(self, epoch_column: str) -> str:
        """The local date (YYYY-MM-DD) of an epoch-seconds column."""
        ...

    def text_in_values(self, column: str) -> str:
        """True where the text bound to the one ``?`` in it occurs in any
        {"value": ...} of the JSON object in ``column``."""
        ...

    def contains(self, column: str) -> str:
        """True where the text bound to the one ``?`` in it occurs in ``column``."""
        ...


class Statements(Protocol):
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None: ...

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]: ...


class Transaction(Statements, Protocol):
    """Statements inside ``Database.transaction()``; unusable after it ends."""

    async def lock(self, name: str) -> None:
        """Hold the lock ``name`` until this transaction ends: transactions
        that take the same name run one after the other, on every node (for
        a decision that reads then writes shared state, e.g. how many
        callbacks are dialling)."""
        ...


class Database(Statements, Protocol):
    """An open store. Each statement autocommits; several that must succeed or
    fail together go in ``async with db.transaction() as tx``."""

    sql: SqlDialect
    location: str  # the file or the URL (password hidden), for messages

    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    async def schema_version(self) -> int: ...

    async def applied_migrations(self) -> list[AppliedMigration]: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


async def rows_of(statements: Statements, sql: str, params: Params = ()) -> AsyncIterator[Row]:
    for row in await statements.fetch_all(sql, params):
        yield row
