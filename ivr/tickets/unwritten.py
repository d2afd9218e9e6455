"""A call's ticket while the store is away.

When the store cannot be reached, a call's intake goes on with its ticket in
memory (``UnwrittenTicket``): the same changes the store would have taken
(opened, prefilled, recordings and their transcripts, notes, a work order
for an emergency), applied to this one ticket. The screen pop still carries
its summary. When the call is over the whole ticket is written in one kept
write (ivr/store_watch.py, ``PendingWrites``): made in the store if the store
never had it, else its changes applied to the one it has; step by step, each
step done once, so a write cut short by the store going away again goes on
where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ivr.tickets import IVR, Recording, Ticket, TicketStore
from ivr.tickets.work_orders import WorkOrderOutbox


class TicketChanges(Protocol):
    """What a call's intake does to its ticket: TicketStore, or UnwrittenTicket."""

    async def create(self, call_id: str, caller: str) -> Ticket: ...

    async def get(self, ticket_id: int) -> Ticket | None: ...

    async def add_recording(
        self, ticket_id: int, path: Path, seconds: float, ending: str
    ) -> int: ...

    async def set_recording_transcript(
        self, recording_id: int, text: str, *, unreliable: str | None = None
    ) -> None: ...

    async def apply_prefill(
        self,
        ticket_id: int,
        fields: dict[str, Any],
        transcript: str,
        emergency: str | None,
        *,
        who: str = IVR,
    ) -> Ticket: ...

    async def add_note(self, ticket_id: int, note: str, *, who: str = IVR) -> None: ...


@dataclass
class _Recording:
    path: Path
    seconds: float
    ending: str
    transcript: str | None = None
    unreliable: str | None = None
    stored_id: int | None = None  # once written
    transcript_written: bool = False


class UnwrittenTicket:
    """One call's ticket kept in memory. ``ticket_id``: the store's id when
    the ticket was made before the store went away, else None (id 0 here)."""

    def __init__(self, call_id: str, caller: str, ticket_id: int | None) -> None:
        self.call_id = call_id
        self.caller = caller
        self.ticket_id = ticket_id
        self.created_at = time.time()
        self.updated_at = self.created_at
        self.fields: dict[str, Any] = {}
        self.transcript = ""
        self.emergency: str | None = None
        self.prefilled = False  # a prefill to apply when written
        self.notes: list[str] = []
        self.recordings: list[_Recording] = []
        # transcripts of recordings the store has already (made before it went away)
        self.transcripts: dict[int, tuple[str, str | None]] = {}
        self.work_orders: list[dict[str, Any]] = []

    # -- what TicketStore does, for this ticket --------------------------------
    async def create(self, call_id: str, caller: str) -> Ticket:
        return self.as_ticket()

    async def get(self, ticket_id: int) -> Ticket | None:
        return self.as_ticket()

    async def add_recording(self, ticket_id: int, path: Path, seconds: float, ending: str) -> int:
        self.recordings.append(_Recording(path, seconds, ending))
        self._touch()
        return -len(self.recordings)  # negative: a recording of this memory

    async def set_recording_transcript(
        self, recording_id: int, text: str, *, unreliable: str | None = None
    ) -> None:
        if recording_id < 0:
            recording = self.recordings[-recording_id - 1]
            recording.transcript, recording.unreliable = text, unreliable
        else:
            self.transcripts[recording_id] = (text, unreliable)
        self._touch()

    async def apply_prefill(
        self,
        ticket_id: int,
        fields: dict[str, Any],
        transcript: str,
        emergency: str | None,
        *,
        who: str = IVR,
    ) -> Ticket:
        self.fields.update(fields)
        self.transcript = transcript
        self.emergency = emergency or self.emergency
        self.prefilled = True
        self._touch()
        return self.as_ticket()

    async def add_note(self, ticket_id: int, note: str, *, who: str = IVR) -> None:
        self.notes.append(note)
        self._touch()

    # -- seen and written ----------------------------------------------------------
    def as_ticket(self) -> Ticket:
        return Ticket(
            id=self.ticket_id or 0,
            call_id=self.call_id,
            caller=self.caller,
            status="open",
            fields=dict(self.fields),
            transcript=self.transcript,
            notes=list(self.notes),
            emergency=self.emergency,
            created_at=self.created_at,
            updated_at=self.updated_at,
            recordings=[
                Recording(
                    id=-(n + 1),
                    path=str(r.path),
                    seconds=r.seconds,
                    ending=r.ending,
                    transcript=r.transcript,
                    unreliable=r.unreliable,
                )
                for n, r in enumerate(self.recordings)
            ],
        )

    def content(self) -> str:
        """What it holds, for a log line (numbers are masked by the caller)."""
        values = {
            name: entry.get("value")
            for name, entry in self.fields.items()
            if isinstance(entry, dict) and entry.get("value") not in (None, "", [])
        }
        shown = json.dumps(values, ensure_ascii=False, default=str)
        recordings = ", ".join(f"{r.path} ({r.seconds:.1f} s)" for r in self.recordings)
        which = f"ticket {self.ticket_id}" if self.ticket_id else "new ticket"
        return (
            f"{which} of call {self.call_id} from {self.caller}: fields {shown}; "
            f"transcript {self.transcript!r}; recordings [{recordings}]; notes {self.notes}; "
            f"emergency {self.emergency}; work orders {len(self.work_orders)}"
        )

    async def write_to(self, store: TicketStore, work_orders: WorkOrderOutbox) -> int:
        """Write it (made, or its changes applied); the store's ticket id."""
        if self.ticket_id is None:
            self.ticket_id = (await store.create(self.call_id, self.caller)).id
        ticket_id = self.ticket_id
        for recording in self.recordings:
            if recording.stored_id is None:
                recording.stored_id = await store.add_recording(
                    ticket_id, recording.path, recording.seconds, recording.ending
                )
            if recording.transcript is not None and not recording.transcript_written:
                await store.set_recording_transcript(
                    recording.stored_id, recording.transcript, unreliable=recording.unreliable
                )
                recording.transcript_written = True
        while self.transcripts:
            recording_id, (text, unreliable) = next(iter(self.transcripts.items()))
            await store.set_recording_transcript(recording_id, text, unreliable=unreliable)
            del self.transcripts[recording_id]
        if self.prefilled:
            await store.apply_prefill(ticket_id, self.fields, self.transcript, self.emergency)
            self.prefilled = False
        while self.notes:
            await store.add_note(ticket_id, self.notes[0])
            self.notes.pop(0)
        while self.work_orders:
            payload = dict(self.work_orders[0], ticket_id=ticket_id)
            await work_orders.post(ticket_id, payload)
            self.work_orders.pop(0)
        return ticket_id

    def _touch(self) -> None:
        self.updated_at = time.time()
