"""The store: everything the hotline keeps (calls, tickets, callbacks, the
work-order outbox, caller profiles, console users and sessions, dial-plan
versions), behind one interface with two back ends.

    db = await open_store("var/ivr.sqlite3")              # one machine (default)
    db = await open_store("postgresql://ivr@db:5432/ivr")  # a cluster's nodes

Both back ends run the same versioned migrations and take the same SQL
(``?`` placeholders); the few expressions they spell differently come from
``db.sql`` (``SqlDialect``).  Nothing outside this package knows which back
end it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ivr.store.base import (
    AppliedMigration,
    ConstraintError,
    Database,
    DatabaseError,
    Params,
    Row,
    SchemaTooNewError,
    SqlDialect,
    StoreUnavailableError,
    Transaction,
)
from ivr.store.migrations import MIGRATIONS, Migration

__all__ = [
    "MIGRATIONS",
    "AppliedMigration",
    "ConstraintError",
    "Database",
    "DatabaseError",
    "Migration",
    "Params",
    "Row",
    "SchemaTooNewError",
    "SqlDialect",
    "StoreUnavailableError",
    "Transaction",
    "is_postgres_url",
    "open_store",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


async def open_store(
    location: str | Path, *, migrations: Sequence[Migration] = MIGRATIONS
) -> Database:
    """Open the store at ``location``: a ``postgresql://`` URL, or the path of
    an SQLite file (created if needed). Migrates it; DatabaseError (naming the
    file or the URL) when it cannot be opened, reached or migrated.
    ``migrations`` is for tests; the program always uses MIGRATIONS."""
    if is_postgres_url(location):
        from ivr.store.postgres import open_postgres

        return await open_postgres(str(location), migrations=migrations)
    from ivr.store.sqlite import open_sqlite

    return await open_sqlite(Path(location), migrations=migrations)
