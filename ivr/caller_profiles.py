"""Caller profiles: the next call from a number starts the way the last one
ended (the elderly service's slower prompts, the dialect, 亲友代办 and whom to
call back, the last ticket).  The caller changes it by choosing again (normal
speed, another dialect); an admin can forget a number (privacy):
`ivr callers forget NUMBER`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ivr.store import Database


@dataclass(frozen=True)
class CallerProfile:
    number: str
    speed: float
    dialect: str | None
    last_ticket_id: int | None
    updated_at: float
    # 亲友代办: the person this number last reported for (name, phone, address)
    beneficiary: dict[str, str] = field(default_factory=dict)
    callback_to: str | None = None  # "caller" or "beneficiary"

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "speed": self.speed,
            "dialect": self.dialect,
            "last_ticket_id": self.last_ticket_id,
            "beneficiary": self.beneficiary,
            "callback_to": self.callback_to,
            "updated_at": self.updated_at,
        }


class CallerProfiles:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, number: str) -> CallerProfile | None:
        row = await self._db.fetch_one(
            "SELECT number, speed, dialect, last_ticket_id, updated_at, beneficiary, "
            "callback_to FROM caller_profiles WHERE number = ?",
            (number,),
        )
        if row is None:
            return None
        beneficiary: dict[str, str] = {}
        if row["beneficiary"]:
            try:
                loaded = json.loads(row["beneficiary"])
            except ValueError:
                loaded = {}
            if isinstance(loaded, dict):
                beneficiary = {str(k): str(v) for k, v in loaded.items() if v}
        return CallerProfile(
            row["number"],
            float(row["speed"]),
            row["dialect"],
            row["last_ticket_id"],
            float(row["updated_at"]),
            beneficiary,
            row["callback_to"],
        )

    async def remember(
        self,
        number: str,
        *,
        speed: float,
        dialect: str | None = None,
        last_ticket_id: int | None = None,
        beneficiary: dict[str, str] | None = None,
        callback_to: str | None = None,
    ) -> None:
        """Keep how this call ended; None leaves what was remembered before."""
        if not number.strip():
            return
        await self._db.execute(
            """
            INSERT INTO caller_profiles
                (number, speed, dialect, last_ticket_id, updated_at, beneficiary, callback_to)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (number) DO UPDATE SET
                speed = excluded.speed,
                dialect = COALESCE(excluded.dialect, caller_profiles.dialect),
                last_ticket_id = COALESCE(excluded.last_ticket_id, caller_profiles.last_ticket_id),
                beneficiary = COALESCE(excluded.beneficiary, caller_profiles.beneficiary),
                callback_to = COALESCE(excluded.callback_to, caller_profiles.callback_to),
                updated_at = excluded.updated_at
            """,
            (
                number,
                speed,
                dialect,
                last_ticket_id,
                time.time(),
                json.dumps(beneficiary, ensure_ascii=False) if beneficiary else None,
                callback_to,
            ),
        )

    async def forget(self, number: str) -> bool:
        return await self._db.execute("DELETE FROM caller_profiles WHERE number = ?", (number,)) > 0
