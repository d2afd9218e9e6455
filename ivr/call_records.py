"""Call records (CDR): one row per call in the ``calls`` table.

A record is started when a call is answered by the IVR and updated as the
call moves through the dial plan, reaches an operator and ends.  The dial
plan path is stored as a JSON array of node ids.
"""

from __future__ import annotations

import json
import math
from dataclasses import astuple, dataclass, field, fields
from typing import Any

from ivr.call import EndReason
from ivr.store import Database, Row

MAX_RECENT = 10_000  # largest list_recent() limit

_END_REASONS = frozenset(reason.value for reason in EndReason)


@dataclass
class CallRecord:
    call_id: str  # SIP Call-ID of the caller's leg
    caller: str  # the caller's number (From user part)
    dialled: str  # the number dialled (To / Request-URI user part)
    started_at: float  # epoch seconds the INVITE arrived
    answered_at: float | None = None
    ended_at: float | None = None
    path: list[str] = field(default_factory=list)  # dial-plan node ids, in order visited
    digits: str = ""  # every key the caller pressed, in order
    queue: str | None = None  # operator queue the call was transferred to
    operator: str | None = None  # SIP URI of the operator who took it
    outcome: str | None = None  # e.g. "bridged", "abandoned", "hangup_in_menu"
    end_reason: str | None = None  # an ivr.call.EndReason value
    codec: str | None = None  # "PCMU" / "PCMA"
    plan_version: str | None = None  # version of the dial plan the call ran
    node: str | None = None  # the node that answered and holds the call (a cluster)


class CallRecordError(ValueError):
    """A record that cannot be stored, or a stored row that cannot be read."""


_COLUMNS = tuple(f.name for f in fields(CallRecord))
_INSERT = f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_START = f"{_INSERT} ON CONFLICT (call_id) DO NOTHING"
_UPSERT = f"{_INSERT} ON CONFLICT (call_id) DO UPDATE SET " + ", ".join(
    f"{column} = excluded.{column}" for column in _COLUMNS if column != "call_id"
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM calls"


class CallRecordStore:
    """Call records in the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def start(self, record: CallRecord) -> None:
        """Store a new record; CallRecordError if its call_id is already stored."""
        if await self._db.execute(_START, _to_row(record)) == 0:
            raise CallRecordError(f"a call record with call_id {record.call_id!r} exists")

    async def update(self, record: CallRecord) -> None:
        """Store the record, replacing the one with the same call_id if any."""
        await self._db.execute(_UPSERT, _to_row(record))

    async def progress(self, record: CallRecord) -> bool:
        """Where a call in progress is (path, keys, queue, operator, outcome),
        unless its row has ended; whether a row was updated."""
        row = _to_row(record)
        names = ("path", "digits", "queue", "operator", "outcome")
        changed = await self._db.execute(
            "UPDATE calls SET path = ?, digits = ?, queue = ?, operator = ?, outcome = ? "
            "WHERE call_id = ? AND ended_at IS NULL",
            (*(row[_COLUMNS.index(n)] for n in names), record.call_id),
        )
        return changed > 0

    async def get(self, call_id: str) -> CallRecord | None:
        row = await self._db.fetch_one(f"{_SELECT} WHERE call_id = ?", (call_id,))
        return _from_row(row) if row is not None else None

    async def list_recent(self, limit: int = 50) -> list[CallRecord]:
        """The ``limit`` most recently started calls, newest first."""
        if not 0 <= limit <= MAX_RECENT:
            raise ValueError(f"limit must be 0..{MAX_RECENT}, got {limit}")
        rows = await self._db.fetch_all(
            f"{_SELECT} ORDER BY started_at DESC, call_id DESC LIMIT ?", (limit,)
        )
        return [_from_row(row) for row in rows]

    async def add_conversation(
        self, call_id: str, operator: str, path: str, started_at: float
    ) -> int:
        """A conversation recording begins; its id."""
        async with self._db.transaction() as tx:
            row = await tx.fetch_one(
                "INSERT INTO conversation_recordings (call_id, operator, path, started_at) "
                "VALUES (?, ?, ?, ?)"
                " RETURNING id",
                (call_id, operator, path, started_at),
            )
            assert row is not None
            return int(row["id"])

    async def conversation_done(self, recording_id: int, seconds: float) -> None:
        await self._db.execute(
            "UPDATE conversation_recordings SET seconds = ? WHERE id = ?",
            (seconds, recording_id),
        )

    async def conversations_of(self, call_id: str) -> list[dict[str, Any]]:
        """The call's conversation recordings, oldest first (path '' once deleted)."""
        rows = await self._db.fetch_all(
            "SELECT id, operator, path, started_at, seconds FROM conversation_recordings "
            "WHERE call_id = ? ORDER BY id",
            (call_id,),
        )
        return [dict(row) for row in rows]

    async def conversations_older_than(self, cutoff: float) -> list[tuple[int, str]]:
        rows = await self._db.fetch_all(
            "SELECT id, path FROM conversation_recordings WHERE started_at < ? AND path != ''",
            (cutoff,),
        )
        return [(int(r["id"]), str(r["path"])) for r in rows]

    async def forget_conversation(self, recording_id: int) -> None:
        """The file was deleted by the retention period; the row stays (it happened)."""
        await self._db.execute(
            "UPDATE conversation_recordings SET path = '' WHERE id = ?", (recording_id,)
        )


def _to_row(record: CallRecord) -> tuple[object, ...]:
    problem = _problem(record)
    if problem is not None:
        raise CallRecordError(f"call record {record.call_id!r}: {problem}")
    values = list(astuple(record))
    values[_COLUMNS.index("path")] = json.dumps(record.path, ensure_ascii=False)
    return tuple(values)


def _problem(record: CallRecord) -> str | None:
    if not record.call_id:
        return "call_id must not be empty"
    for name in ("started_at", "answered_at", "ended_at"):
        value = getattr(record, name)
        if value is not None and (isinstance(value, bool) or not _is_finite_number(value)):
            return f"{name} must be epoch seconds, got {value!r}"
    if not all(isinstance(node, str) for node in record.path):
        return f"path must be a list of dial-plan node ids (strings), got {record.path!r}"
    if record.end_reason is not None and record.end_reason not in _END_REASONS:
        return f"end_reason {record.end_reason!r} is not one of {', '.join(sorted(_END_REASONS))}"
    return None


def _is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _from_row(row: Row) -> CallRecord:
    values = dict(zip(_COLUMNS, tuple(row), strict=True))
    call_id = values["call_id"]
    try:
        path = json.loads(str(values["path"]))
    except json.JSONDecodeError as exc:
        raise CallRecordError(f"stored call {call_id!r}: path is not JSON ({exc})") from exc
    if not isinstance(path, list) or not all(isinstance(node, str) for node in path):
        raise CallRecordError(f"stored call {call_id!r}: path is not a list of strings")
    return CallRecord(
        call_id=str(call_id),
        caller=str(values["caller"]),
        dialled=str(values["dialled"]),
        started_at=float(values["started_at"]),
        answered_at=_float_or_none(values["answered_at"]),
        ended_at=_float_or_none(values["ended_at"]),
        path=path,
        digits=str(values["digits"]),
        queue=_str_or_none(values["queue"]),
        operator=_str_or_none(values["operator"]),
        outcome=_str_or_none(values["outcome"]),
        end_reason=_str_or_none(values["end_reason"]),
        codec=_str_or_none(values["codec"]),
        plan_version=_str_or_none(values["plan_version"]),
        node=_str_or_none(values["node"]),
    )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
