"""Tickets (工单) in SQLite: the prefilled fields with their evidence, the
transcript, the caller's recordings, notes, and every change as history.

Fields are stored as one JSON object, ``{name: {"value", "evidence",
"source"}}`` (the shape of ivr.prefill.Prefill.to_json()), so an operator's
correction replaces one field and keeps the others' evidence.  Every change,
by the IVR's prefill or by an operator, adds a ticket_history row saying who
changed what, when, from what to what.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.store import Database, Row, Transaction
from ivr.tickets.counsellor import flagged

STATUSES = ("open", "in_progress", "closed", "duplicate")
IVR = "ivr"  # the "who" of changes made by the IVR itself
# shown to the operator beside a recording whose transcript is a loop
UNRELIABLE_NOTICE = "转写不可靠，请听录音"
# told inside the transaction that closes a ticket (ticket id, caller, fields,
# when): the follow-up queue (ivr/followups) queues its 回访 there, so a
# closing is never without its follow-up
ClosedHook = Callable[[Transaction, int, str, dict[str, Any], float], Awaitable[object]]


class TicketError(ValueError):
    """A change that cannot be made (unknown ticket, field or status)."""


@dataclass(frozen=True)
class Recording:
    id: int
    path: str
    seconds: float
    ending: str  # how the utterance ended: silence, max_length (cut), hung_up
    transcript: str | None
    # why the transcript reads as the recogniser's loop (kept for the record,
    # not used for the ticket); None when it reads as speech
    unreliable: str | None = None


@dataclass(frozen=True)
class HistoryEntry:
    at: float
    who: str
    what: str
    old_value: str | None
    new_value: str | None


@dataclass
class Ticket:
    id: int
    call_id: str
    caller: str
    status: str
    fields: dict[str, Any]
    transcript: str
    notes: list[str]
    emergency: str | None
    created_at: float
    updated_at: float
    recordings: list[Recording] = field(default_factory=list)

    def value(self, name: str) -> str | None:
        entry = self.fields.get(name)
        if isinstance(entry, dict):
            value = entry.get("value")
            return None if value is None else str(value)
        return None

    def summary(self, limit: int = 120) -> str:
        """One line for the operator's phone display and the INVITE header."""
        parts = [
            self.value(name) or "" for name in ("category", "urgency", "district", "name", "phone")
        ]
        head = " ".join(p for p in parts if p)
        if self.emergency:
            head = f"!{self.emergency} {head}"
        if flagged(self.fields):
            head = f"需心理援助 {head}"
        unreliable = [str(n) for n, r in enumerate(self.recordings, 1) if r.unreliable]
        if unreliable:
            head = f"{head} [录音{'、'.join(unreliable)}：{UNRELIABLE_NOTICE}]"
        text = f"{head} | {self.transcript}" if self.transcript else head
        text = " ".join(text.split())
        return text[:limit] if len(text) > limit else text

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "call_id": self.call_id,
            "caller": self.caller,
            "status": self.status,
            "fields": self.fields,
            "transcript": self.transcript,
            "notes": self.notes,
            "emergency": self.emergency,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "recordings": [
                {
                    "id": r.id,
                    "path": r.path,
                    "seconds": r.seconds,
                    "ending": r.ending,
                    "transcript": r.transcript,
                    "unreliable": r.unreliable is not None,
                    "unreliable_reason": r.unreliable,
                }
                for r in self.recordings
            ],
        }


_COLUMNS = (
    "id, call_id, caller, status, fields, transcript, notes, emergency, created_at, updated_at"
)


class TicketStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.on_closed: ClosedHook | None = None

    async def create(self, call_id: str, caller: str) -> Ticket:
        now = time.time()
        async with self._db.transaction() as tx:
            row = await tx.fetch_one(
                "INSERT INTO tickets (call_id, caller, created_at, updated_at) VALUES (?,?,?,?)"
                " RETURNING id",
                (call_id, caller, now, now),
            )
            assert row is not None
            ticket_id = int(row["id"])
            await tx.execute(
                "INSERT INTO ticket_history (ticket_id, at, who, what, new_value) "
                "VALUES (?,?,?,?,?)",
                (ticket_id, now, IVR, "created", call_id),
            )
        ticket = await self.get(ticket_id)
        assert ticket is not None
        return ticket

    async def get(self, ticket_id: int) -> Ticket | None:
        row = await self._db.fetch_one(f"SELECT {_COLUMNS} FROM tickets WHERE id = ?", (ticket_id,))
        if row is None:
            return None
        recordings = await self._db.fetch_all(
            "SELECT id, path, seconds, ending, transcript, transcript_unreliable "
            "FROM ticket_recordings "
            "WHERE ticket_id = ? ORDER BY id",
            (ticket_id,),
        )
        return _ticket(row, [_recording(r) for r in recordings])

    async def for_call(self, call_id: str) -> list[Ticket]:
        rows = await self._db.fetch_all(
            "SELECT id FROM tickets WHERE call_id = ? ORDER BY id", (call_id,)
        )
        tickets = [await self.get(int(r["id"])) for r in rows]
        return [t for t in tickets if t is not None]

    async def add_recording(self, ticket_id: int, path: Path, seconds: float, ending: str) -> int:
        async with self._db.transaction() as tx:
            row = await tx.fetch_one(
                "INSERT INTO ticket_recordings (ticket_id, path, seconds, ending, created_at) "
                "VALUES (?,?,?,?,?) RETURNING id",
                (ticket_id, str(path), seconds, ending, time.time()),
            )
            assert row is not None
            return int(row["id"])

    async def set_recording_transcript(
        self, recording_id: int, text: str, *, unreliable: str | None = None
    ) -> None:
        """``unreliable``: why the text reads as the recogniser's loop (it is
        kept with the recording, for the record, and flagged)."""
        await self._db.execute(
            "UPDATE ticket_recordings SET transcript = ?, transcript_unreliable = ? WHERE id = ?",
            (text, unreliable, recording_id),
        )

    async def apply_prefill(
        self,
        ticket_id: int,
        fields: dict[str, Any],
        transcript: str,
        emergency: str | None,
        *,
        who: str = IVR,
    ) -> Ticket:
        """Replace fields the prefill found (keeping an operator's edits)."""
        ticket = await self._require(ticket_id)
        now = time.time()
        merged = dict(ticket.fields)
        changes: list[tuple[str, str | None, str | None]] = []
        for name, entry in fields.items():
            current = merged.get(name)
            if isinstance(current, dict) and current.get("source") == "operator":
                continue  # an operator's correction is not overwritten by the machine
            old = _value_text(current)
            new = _value_text(entry)
            merged[name] = entry
            if old != new:
                changes.append((f"field:{name}", old, new))
        if transcript != ticket.transcript:
            changes.append(("transcript", ticket.transcript or None, transcript))
        if emergency != ticket.emergency and emergency is not None:
            changes.append(("emergency", ticket.emergency, emergency))
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE tickets SET fields = ?, transcript = ?, "
                "emergency = COALESCE(?, emergency), updated_at = ? WHERE id = ?",
                (json.dumps(merged, ensure_ascii=False), transcript, emergency, now, ticket_id),
            )
            await _history(tx, ticket_id, now, who, changes)
        return await self._require(ticket_id)

    async def edit(self, ticket_id: int, changes: dict[str, str], *, who: str) -> Ticket:
        """An operator's corrections: field values, or "status"."""
        ticket = await self._require(ticket_id)
        now = time.time()
        fields = dict(ticket.fields)
        status = ticket.status
        recorded: list[tuple[str, str | None, str | None]] = []
        for name, value in changes.items():
            if name == "status":
                if value not in STATUSES:
                    raise TicketError(f"status {value!r}: must be one of {', '.join(STATUSES)}")
                recorded.append(("status", status, value))
                status = value
                continue
            recorded.append((f"field:{name}", _value_text(fields.get(name)), value))
            fields[name] = {"value": value, "evidence": [], "source": "operator"}
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE tickets SET fields = ?, status = ?, updated_at = ? WHERE id = ?",
                (json.dumps(fields, ensure_ascii=False), status, now, ticket_id),
            )
            await _history(tx, ticket_id, now, who, recorded)
            if status == "closed" and ticket.status != "closed" and self.on_closed is not None:
                await self.on_closed(tx, ticket_id, ticket.caller, fields, now)
        return await self._require(ticket_id)

    async def add_note(self, ticket_id: int, note: str, *, who: str = IVR) -> None:
        ticket = await self._require(ticket_id)
        now = time.time()
        notes = [*ticket.notes, note]
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE tickets SET notes = ?, updated_at = ? WHERE id = ?",
                (json.dumps(notes, ensure_ascii=False), now, ticket_id),
            )
            await _history(tx, ticket_id, now, who, [("note", None, note)])

    async def history(self, ticket_id: int) -> list[HistoryEntry]:
        rows = await self._db.fetch_all(
            "SELECT at, who, what, old_value, new_value FROM ticket_history "
            "WHERE ticket_id = ? ORDER BY id",
            (ticket_id,),
        )
        return [
            HistoryEntry(r["at"], r["who"], r["what"], r["old_value"], r["new_value"]) for r in rows
        ]

    async def recordings_older_than(self, cutoff: float) -> list[tuple[int, str]]:
        rows = await self._db.fetch_all(
            "SELECT id, path FROM ticket_recordings WHERE created_at < ? AND path != ''",
            (cutoff,),
        )
        return [(int(r["id"]), str(r["path"])) for r in rows]

    async def forget_recording(self, recording_id: int) -> None:
        """The audio file was deleted by the retention policy; keep its transcript."""
        await self._db.execute(
            "UPDATE ticket_recordings SET path = '' WHERE id = ?", (recording_id,)
        )

    async def _require(self, ticket_id: int) -> Ticket:
        ticket = await self.get(ticket_id)
        if ticket is None:
            raise TicketError(f"ticket {ticket_id} does not exist")
        return ticket


async def _history(
    tx: Transaction,
    ticket_id: int,
    at: float,
    who: str,
    changes: list[tuple[str, str | None, str | None]],
) -> None:
    for what, old, new in changes:
        await tx.execute(
            "INSERT INTO ticket_history (ticket_id, at, who, what, old_value, new_value) "
            "VALUES (?,?,?,?,?,?)",
            (ticket_id, at, who, what, old, new),
        )


def _value_text(entry: object) -> str | None:
    if isinstance(entry, dict):
        value = entry.get("value")
        if value is None:
            return None
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return None


def _ticket(row: Row, recordings: list[Recording]) -> Ticket:
    return Ticket(
        id=int(row["id"]),
        call_id=row["call_id"],
        caller=row["caller"],
        status=row["status"],
        fields=json.loads(row["fields"]),
        transcript=row["transcript"],
        notes=json.loads(row["notes"]),
        emergency=row["emergency"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        recordings=recordings,
    )


def _recording(row: Row) -> Recording:
    return Recording(
        id=int(row["id"]),
        path=row["path"],
        seconds=float(row["seconds"]),
        ending=row["ending"],
        transcript=row["transcript"],
        unreliable=row["transcript_unreliable"],
    )
