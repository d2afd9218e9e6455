"""Caller profiles: the next call from a number starts the way the last one
ended (the elderly service's slower prompts, the dialect, the last ticket).
An admin can forget a number (privacy): `ivr callers forget NUMBER`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ivr.database import Database


@dataclass(frozen=True)
class CallerProfile:
    number: str
    speed: float
    dialect: str | None
    last_ticket_id: int | None
    updated_at: float


class CallerProfiles:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, number: str) -> CallerProfile | None:
        row = await self._db.fetch_one(
            "SELECT number, speed, dialect, last_ticket_id, updated_at FROM caller_profiles "
            "WHERE number = ?",
            (number,),
        )
        if row is None:
            return None
        return CallerProfile(
            row["number"],
            float(row["speed"]),
            row["dialect"],
            row["last_ticket_id"],
            float(row["updated_at"]),
        )

    async def remember(
        self,
        number: str,
        *,
        speed: float,
        dialect: str | None = None,
        last_ticket_id: int | None = None,
    ) -> None:
        if not number.strip():
            return
        await self._db.execute(
            """
            INSERT INTO caller_profiles (number, speed, dialect, last_ticket_id, updated_at)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (number) DO UPDATE SET
                speed = excluded.speed,
                dialect = COALESCE(excluded.dialect, dialect),
                last_ticket_id = COALESCE(excluded.last_ticket_id, last_ticket_id),
                updated_at = excluded.updated_at
            """,
            (number, speed, dialect, last_ticket_id, time.time()),
        )

    async def forget(self, number: str) -> bool:
        return await self._db.execute("DELETE FROM caller_profiles WHERE number = ?", (number,)) > 0
