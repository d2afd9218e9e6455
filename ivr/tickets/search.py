"""Finding tickets: search and filters (admin's ticket list, CSV export), the
situation dashboard's counts, and likely duplicates of a ticket (the operator
links a new report to an open one about the same problem)."""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ivr.store import Database
from ivr.tickets import Ticket, TicketStore

OPEN_STATUSES = ("open", "in_progress")
CSV_FIELDS = (
    "name",
    "phone",
    "address",
    "district",
    "category",
    "urgency",
    "sentiment",
    "beneficiary_name",
    "beneficiary_phone",
)
DUPLICATE_MIN_SCORE = 0.5


@dataclass(frozen=True)
class TicketFilter:
    category: str | None = None
    district: str | None = None
    urgency: str | None = None
    status: str | None = None
    since: float | None = None  # created at or after (epoch seconds)
    until: float | None = None  # created before
    text: str | None = None  # in the transcript or any field value
    limit: int = 200


@dataclass(frozen=True)
class Duplicate:
    ticket: Ticket
    score: float  # 0..1
    why: tuple[str, ...]  # "same address", "same category", "similar words 0.42"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.ticket.id,
            "score": round(self.score, 3),
            "why": list(self.why),
            "summary": self.ticket.summary(),
            "status": self.ticket.status,
            "created_at": self.ticket.created_at,
        }


class TicketSearch:
    def __init__(self, db: Database, tickets: TicketStore) -> None:
        self._db = db
        self._tickets = tickets

    async def find(self, f: TicketFilter) -> list[Ticket]:
        where: list[str] = []
        args: list[Any] = []
        for name, value in (
            ("category", f.category),
            ("district", f.district),
            ("urgency", f.urgency),
        ):
            if value:
                where.append(f"{self._db.sql.json_value('fields', name)} = ?")
                args.append(value)
        if f.status:
            where.append("status = ?")
            args.append(f.status)
        if f.since is not None:
            where.append("created_at >= ?")
            args.append(f.since)
        if f.until is not None:
            where.append("created_at < ?")
            args.append(f.until)
        if f.text:
            # the values only: the JSON around them ("value", "evidence", "source",
            # "operator"...) would match every ticket
            dialect = self._db.sql
            where.append(
                f"({dialect.contains('transcript')} OR {dialect.text_in_values('tickets.fields')})"
            )
            args.extend([f.text, f.text])
        sql = "SELECT id FROM tickets"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(max(1, min(f.limit, 5000)))
        rows = await self._db.fetch_all(sql, tuple(args))
        found = [await self._tickets.get(int(r["id"])) for r in rows]
        return [t for t in found if t is not None]

    async def counts(self, since: float, until: float) -> dict[str, Any]:
        """Tickets created in [since, until): by district, by category, and per
        day by category (days as YYYY-MM-DD, local time)."""
        sql = self._db.sql
        rows = await self._db.fetch_all(
            f"SELECT {sql.json_value('fields', 'district')} AS district, "
            f"{sql.json_value('fields', 'category')} AS category, "
            f"{sql.local_day('created_at')} AS day, count(*) AS n "
            "FROM tickets WHERE created_at >= ? AND created_at < ? GROUP BY 1, 2, 3",
            (since, until),
        )
        by_district: dict[str, int] = {}
        by_category: dict[str, int] = {}
        by_day: dict[str, dict[str, int]] = {}
        for r in rows:
            district = r["district"] or "未知"
            category = r["category"] or "其他"
            n = int(r["n"])
            by_district[district] = by_district.get(district, 0) + n
            by_category[category] = by_category.get(category, 0) + n
            day = by_day.setdefault(str(r["day"]), {})
            day[category] = day.get(category, 0) + n
        return {
            "total": sum(by_district.values()),
            "by_district": dict(sorted(by_district.items(), key=lambda kv: -kv[1])),
            "by_category": dict(sorted(by_category.items(), key=lambda kv: -kv[1])),
            "by_day": dict(sorted(by_day.items())),
        }

    async def duplicates(self, ticket: Ticket, *, window: float, limit: int = 5) -> list[Duplicate]:
        """Open tickets from the last ``window`` seconds that look like the same
        problem: same address and category, similar words."""
        rows = await self._db.fetch_all(
            "SELECT id FROM tickets WHERE id != ? AND created_at >= ? AND status IN (?, ?) "
            "ORDER BY created_at DESC LIMIT 500",
            (ticket.id, ticket.created_at - window, *OPEN_STATUSES),
        )
        found: list[Duplicate] = []
        for r in rows:
            other = await self._tickets.get(int(r["id"]))
            if other is None:
                continue
            score, why = likeness(ticket, other)
            if score >= DUPLICATE_MIN_SCORE:
                found.append(Duplicate(other, score, why))
        found.sort(key=lambda d: (-d.score, -d.ticket.created_at))
        return found[:limit]


def likeness(a: Ticket, b: Ticket) -> tuple[float, tuple[str, ...]]:
    """How alike two tickets are, 0..1, and why: the same address weighs most
    (0.4), then the same category (0.3), then the words (0.3 x bigram overlap)."""
    score = 0.0
    why: list[str] = []
    address_a, address_b = a.value("address"), b.value("address")
    if address_a and address_b and _same_place(address_a, address_b):
        score += 0.4
        why.append("same address")
    elif a.value("district") and a.value("district") == b.value("district"):
        score += 0.1
        why.append("same district")
    if a.value("category") and a.value("category") == b.value("category"):
        score += 0.3
        why.append("same category")
    words = _overlap(a.transcript, b.transcript)
    if words > 0:
        score += 0.3 * words
        why.append(f"similar words {words:.2f}")
    return min(score, 1.0), tuple(why)


def _same_place(a: str, b: str) -> bool:
    """The same address, one possibly more detailed (杭州市西湖区文三路90号 / 文三路90号)."""
    a, b = a.replace(" ", ""), b.replace(" ", "")
    return a == b or (min(len(a), len(b)) >= 4 and (a.endswith(b) or b.endswith(a)))


def _bigrams(text: str) -> set[str]:
    chars = [c for c in text if c.isalnum()]
    return {chars[i] + chars[i + 1] for i in range(len(chars) - 1)}


def _overlap(a: str, b: str) -> float:
    """Jaccard overlap of character bigrams (Chinese has no spaces between words)."""
    x, y = _bigrams(a), _bigrams(b)
    if not x or not y:
        return 0.0
    return len(x & y) / len(x | y)


def tickets_csv(tickets: Iterable[Ticket]) -> str:
    """The tickets as CSV (UTF-8 with a BOM, so spreadsheet programs read Chinese)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(["id", "created_at", "status", "caller", *CSV_FIELDS, "transcript"])
    for t in tickets:
        values = [spreadsheet_cell(t.value(name)) for name in CSV_FIELDS]
        writer.writerow(
            [
                t.id,
                _iso(t.created_at),
                t.status,
                spreadsheet_cell(t.caller),
                *values,
                spreadsheet_cell(t.transcript),
            ]
        )
    return out.getvalue()


def spreadsheet_cell(value: str | None) -> str:
    """A spreadsheet cell that cannot run as a formula (CSV injection)."""
    text = value or ""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).isoformat(timespec="seconds")
