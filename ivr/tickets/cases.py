"""Cases (案件): one matter, many reports.  A ticket saved with the same matter
as an open case (same city and category, the same place, similar words,
within the window) is merged into it; otherwise it opens a case of its own.
An operator splits a wrong merge, or merges by hand (refused with the reason
across cities or categories); closing a case closes every report in it, and
each closing queues its caller's follow-up (TicketStore.on_closed).

The rule (``MergeRule.decide``) is pure: what a ticket says of its matter
(``Matter``) against the reports of each open case.  The place is compared
most detailed first: a door (road + number, or estate + building) must be
the same door; else an estate, a road or a street must be the same; else the
district.  The finer the place both name, the fewer words they need to share
(``min_words``).  Tables ``cases`` and ``tickets.case_id`` (migration
"cases"); the decision is made under the store's lock ``cases.file``, so two
nodes never open two cases for one matter at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ivr.store import Database, Row, Transaction
from ivr.tickets.ticket import IVR, Ticket, TicketError, TicketStore

OPEN_REPORTS = ("open", "in_progress")
# how finely two reports name one place, best first; "conflict": two places
DOOR, ESTATE, ROAD, STREET, DISTRICT, UNKNOWN, CONFLICT = (
    "door", "estate", "road", "street", "district", "unknown", "conflict",
)  # fmt: skip
LEVELS = (DOOR, ESTATE, ROAD, STREET, DISTRICT, UNKNOWN)
PLACE_WORDS = {
    DOOR: "same address",
    ESTATE: "same estate",
    ROAD: "same road",
    STREET: "same street",
    DISTRICT: "same district",
    UNKNOWN: "no place said",
}
MAX_REPORTS_COMPARED = 30  # the latest reports of a case the words are compared with
# characters that carry no matter: fillers, particles, digits (the place is compared apart)
_NOT_MATTER = frozenset(
    "的了在是我你他她它们这那个吗呢吧啊呀哦嗯呃么就都也还很有一下能不可以请问你好谢"
    "0123456789，。、？！,.?! 　"
)

# words of every matter (where, who, when), not of one
_NOT_MATTER_WORDS = (
    "小区", "街道", "那边", "这边", "这里", "那里", "附近", "我们", "我家", "家里", "他们",
    "什么", "时候", "怎么", "一直", "已经", "现在", "今天", "昨天", "好几", "突然", "反映",
)  # fmt: skip

_PLACE_ENDS = ("街道", "镇", "乡", "区", "县", "市")


class CaseError(TicketError):
    """A change of cases that cannot be made (the message says why)."""


class MergeRefusedError(CaseError):
    """An operator's merge of reports of different cities or categories."""


@dataclass(frozen=True)
class Matter:
    """What a report says of its matter, as the merging rule sees it."""

    city: str
    category: str
    district: str
    parts: Mapping[str, str]  # the address parts (road, number, street, community ...)
    text: str  # the caller's words

    def place(self) -> str:
        """The place as one line (for the case's record)."""
        keys = ("street", "road", "number", "community", "building")
        return "".join(self.parts.get(k, "") for k in keys) or self.district


@dataclass(frozen=True)
class MergeRule:
    """``window``: seconds since a case's latest report during which a new
    report may join it; ``min_words``: per place level, the least share of
    matter words (character pairs) two reports must have in common;
    ``burst``: seconds since a case's latest report during which a report of
    an ``area_categories`` matter (an outage: one break, a whole street
    without water) joins it at the same street, road or district whatever its
    words; ``home_city``: the city of a report that names none (the gazetteer's)."""

    window: float = 36 * 3600.0
    min_words: Mapping[str, float] | None = None
    burst: float = 3 * 3600.0
    area_categories: frozenset[str] = frozenset({"供水", "供电", "燃气", "供暖"})
    home_city: str = ""

    def threshold(self, level: str) -> float | None:
        table = DEFAULT_MIN_WORDS if self.min_words is None else self.min_words
        return table.get(level)

    def refusal(self, a: Matter, b: Matter) -> str | None:
        """Why reports ``a`` and ``b`` can never be one case (None: they may)."""
        city_a, city_b = a.city or self.home_city, b.city or self.home_city
        if city_a and city_b and city_a != city_b:
            return f"different cities: {city_a} / {city_b}"
        if a.category != b.category:
            return f"different categories: {a.category or '未分类'} / {b.category or '未分类'}"
        return None

    def likeness(self, a: Matter, b: Matter, *, burst: bool = False) -> tuple[bool, float, str]:
        """Whether ``a`` may join the case of report ``b``, a score to choose
        among cases, and why.  ``burst``: ``b``'s case had a report within
        ``burst`` seconds."""
        if self.refusal(a, b) is not None:
            return False, 0.0, ""
        level = place_level(a, b)
        if level == CONFLICT:
            return False, 0.0, ""
        words = word_overlap(a.text, b.text, a, b)
        need = self.threshold(level)
        why = f"{PLACE_WORDS[level]}, same category {a.category}, similar words {words:.2f}"
        outage = burst and a.category in self.area_categories and level != UNKNOWN
        if outage:
            why += ", an outage reported again within the burst"
        elif need is None or words < need:
            return False, 0.0, why
        return True, (len(LEVELS) - LEVELS.index(level)) + words, why

    def decide(
        self, matter: Matter, at: float, cases: Sequence[CaseCandidate]
    ) -> tuple[int | None, str]:
        """The open case ``matter`` joins (None: a case of its own), and why."""
        best: tuple[float, int, str] | None = None
        for case in cases:
            since = at - case.last_report_at
            if since > self.window:
                continue
            for report in case.reports[-MAX_REPORTS_COMPARED:]:
                ok, score, why = self.likeness(matter, report, burst=since <= self.burst)
                if ok and (best is None or score > best[0]):
                    best = (score, case.id, why)
        if best is None:
            return None, "no open case of the same matter"
        return best[1], best[2]


DEFAULT_MIN_WORDS: dict[str, float] = {
    DOOR: 0.0,
    ESTATE: 0.12,
    ROAD: 0.12,
    STREET: 0.12,
    DISTRICT: 0.30,
}


@dataclass(frozen=True)
class CaseCandidate:
    id: int
    opened_at: float
    last_report_at: float
    reports: Sequence[Matter]


def place_level(a: Matter, b: Matter) -> str:
    """How finely ``a`` and ``b`` name the same place, or CONFLICT."""
    pa, pb = a.parts, b.parts
    if a.district and b.district and a.district != b.district:
        return CONFLICT
    for first, second, level in (("road", "number", DOOR), ("community", "building", DOOR)):
        if pa.get(first) and pa.get(second) and pb.get(first) and pb.get(second):
            same = pa[first] == pb[first] and pa[second] == pb[second]
            return level if same else CONFLICT
    for key, level in (("community", ESTATE), ("road", ROAD), ("street", STREET)):
        if pa.get(key) and pb.get(key):
            return level if pa[key] == pb[key] else CONFLICT
    if a.district and b.district:
        return DISTRICT
    return UNKNOWN


def _pairs(text: str, drop: Sequence[str]) -> set[str]:
    for word in (*drop, *_NOT_MATTER_WORDS):
        if word:
            text = text.replace(word, " ")
    chars = [c if c not in _NOT_MATTER else " " for c in text]
    joined = "".join(chars)
    return {
        joined[i : i + 2]
        for i in range(len(joined) - 1)
        if " " not in joined[i : i + 2]
    }


def word_overlap(text_a: str, text_b: str, a: Matter, b: Matter) -> float:
    """The share of matter words two reports have in common: character pairs
    of what was said, place names left out (the place is compared apart),
    over the shorter report's."""
    names = {*a.parts.values(), *b.parts.values(), a.district, b.district, a.city, b.city}
    # and as said without their suffix: 仓前 for 仓前街道, 余杭 for 余杭区
    stems = {n.removesuffix(end) for n in names for end in _PLACE_ENDS if n.endswith(end)}
    drop = sorted({n for n in names | stems if len(n) >= 2}, key=len, reverse=True)
    x, y = _pairs(text_a, drop), _pairs(text_b, drop)
    if not x or not y:
        return 0.0
    return len(x & y) / min(len(x), len(y))


def matter_of(ticket: Ticket, home_city: str = "") -> Matter:
    """The matter of a saved ticket: its category, district, address parts and words."""
    return matter_from(ticket.fields, ticket.transcript, home_city)


def matter_from(fields: Mapping[str, Any], transcript: str, home_city: str = "") -> Matter:
    def value(name: str) -> object:
        entry = fields.get(name)
        return entry.get("value") if isinstance(entry, dict) else None

    raw = value("address_parts")
    parts = {str(k): str(v) for k, v in raw.items() if v} if isinstance(raw, dict) else {}
    district = value("district") or parts.get("district") or ""
    return Matter(
        city=parts.get("city") or home_city,
        category=str(value("category") or ""),
        district=str(district),
        parts=parts,
        text=transcript,
    )


# -- the store ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: int
    status: str  # open, closed
    city: str
    category: str
    district: str
    place: str
    opened_at: float
    last_report_at: float
    closed_at: float | None
    closed_by: str | None
    reports: tuple[int, ...]  # ticket ids, oldest first

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "city": self.city,
            "category": self.category,
            "district": self.district,
            "place": self.place,
            "opened_at": self.opened_at,
            "last_report_at": self.last_report_at,
            "closed_at": self.closed_at,
            "closed_by": self.closed_by,
            "reports": list(self.reports),
        }


@dataclass(frozen=True)
class Filing:
    """Where a saved ticket went: ``merged`` into an open case, or a case of its own."""

    case: Case
    merged: bool
    why: str


_CASE_COLUMNS = (
    "id, status, city, category, district, place, opened_at, last_report_at, closed_at, closed_by"
)


class CaseStore:
    def __init__(self, db: Database, tickets: TicketStore, rule: MergeRule) -> None:
        self._db = db
        self._tickets = tickets
        self.rule = rule

    async def case_of(self, ticket_id: int) -> Case | None:
        row = await self._db.fetch_one("SELECT case_id FROM tickets WHERE id = ?", (ticket_id,))
        if row is None or row["case_id"] is None:
            return None
        return await self.get(int(row["case_id"]))

    async def get(self, case_id: int) -> Case | None:
        row = await self._db.fetch_one(
            f"SELECT {_CASE_COLUMNS} FROM cases WHERE id = ?", (case_id,)
        )
        if row is None:
            return None
        reports = await self._db.fetch_all(
            "SELECT id FROM tickets WHERE case_id = ? ORDER BY created_at, id", (case_id,)
        )
        return _case(row, tuple(int(r["id"]) for r in reports))

    async def file(self, ticket_id: int, *, at: float | None = None) -> Filing:
        """The ticket is saved: merge it into the open case of its matter, or
        open its own.  A ticket already in a case stays there."""
        ticket = await self._require(ticket_id)
        when = ticket.created_at if at is None else at
        matter = matter_of(ticket, self.rule.home_city)
        async with self._db.transaction() as tx:
            await tx.lock("cases.file")
            row = await tx.fetch_one("SELECT case_id FROM tickets WHERE id = ?", (ticket_id,))
            if row is not None and row["case_id"] is not None:
                case_id = int(row["case_id"])
                merged, why = False, "already filed"
            else:
                candidates = await self._candidates(tx, matter, when)
                found, why = self.rule.decide(matter, when, candidates)
                merged = found is not None
                if found is None:
                    case_id = await self._open_case(tx, matter, when)
                    what = f"case {case_id} opened ({matter.place() or 'no place said'})"
                else:
                    case_id = found
                    what = f"merged into case {case_id}: {why}"
                    await tx.execute(
                        "UPDATE cases SET last_report_at = ? WHERE id = ? AND last_report_at < ?",
                        (when, case_id, when),
                    )
                await tx.execute(
                    "UPDATE tickets SET case_id = ? WHERE id = ?", (case_id, ticket_id)
                )
                await _note(tx, ticket_id, IVR, "case", None, what)
        case = await self.get(case_id)
        assert case is not None
        return Filing(case, merged, why)

    async def split(self, ticket_id: int, *, who: str) -> Case:
        """A wrong merge undone: the ticket leaves its case for one of its own,
        and is never merged automatically again."""
        ticket = await self._require(ticket_id)
        case = await self.case_of(ticket_id)
        if case is None:
            raise CaseError(f"ticket {ticket_id} is in no case yet")
        if len(case.reports) < 2:
            raise CaseError(f"ticket {ticket_id} is alone in case {case.id}: nothing to split")
        matter = matter_of(ticket, self.rule.home_city)
        now = time.time()
        async with self._db.transaction() as tx:
            await tx.lock("cases.file")
            new_id = await self._open_case(tx, matter, ticket.created_at)
            if ticket.status == "closed":
                await tx.execute(
                    "UPDATE cases SET status = 'closed', closed_at = ?, closed_by = ? "
                    "WHERE id = ?",
                    (now, who, new_id),
                )
            await tx.execute("UPDATE tickets SET case_id = ? WHERE id = ?", (new_id, ticket_id))
            await _note(
                tx, ticket_id, who, "case", str(case.id), f"split from case {case.id} into {new_id}"
            )
        split = await self.get(new_id)
        assert split is not None
        return split

    async def merge(self, ticket_id: int, case_id: int, *, who: str) -> Case:
        """An operator puts a ticket into ``case_id`` by hand; refused (with
        the reason) when its city or category is not the case's, or the case
        is closed."""
        ticket = await self._require(ticket_id)
        target = await self.get(case_id)
        if target is None:
            raise CaseError(f"case {case_id} does not exist")
        current = await self.case_of(ticket_id)
        if current is not None and current.id == case_id:
            return target
        if target.status != "open":
            raise CaseError(f"case {case_id} is closed: a report cannot join it")
        matter = matter_of(ticket, self.rule.home_city)
        for other_id in target.reports[:1]:
            other = await self._require(other_id)
            reason = self.rule.refusal(matter, matter_of(other, self.rule.home_city))
            if reason is not None:
                raise MergeRefusedError(
                    f"ticket {ticket_id} cannot join case {case_id}: {reason}"
                )
        async with self._db.transaction() as tx:
            await tx.lock("cases.file")
            await tx.execute("UPDATE tickets SET case_id = ? WHERE id = ?", (case_id, ticket_id))
            await tx.execute(
                "UPDATE cases SET last_report_at = ? WHERE id = ? AND last_report_at < ?",
                (ticket.created_at, case_id, ticket.created_at),
            )
            old = str(current.id) if current is not None else None
            await _note(tx, ticket_id, who, "case", old, f"merged into case {case_id} by {who}")
            if current is not None:
                await self._close_if_empty(tx, current.id, who)
        merged = await self.get(case_id)
        assert merged is not None
        return merged

    async def close(self, case_id: int, *, who: str) -> Case:
        """The matter is dealt with: every report of the case is closed, each
        closing queues its caller's follow-up (TicketStore.on_closed), in one
        transaction."""
        case = await self.get(case_id)
        if case is None:
            raise CaseError(f"case {case_id} does not exist")
        now = time.time()
        async with self._db.transaction() as tx:
            for ticket_id in case.reports:
                row = await tx.fetch_one(
                    "SELECT status, caller, fields FROM tickets WHERE id = ?", (ticket_id,)
                )
                if row is None or row["status"] in ("closed", "duplicate"):
                    continue
                await tx.execute(
                    "UPDATE tickets SET status = 'closed', updated_at = ? WHERE id = ?",
                    (now, ticket_id),
                )
                await _note(tx, ticket_id, who, "status", row["status"], "closed")
                await _note(tx, ticket_id, who, "case", str(case_id), f"case {case_id} closed")
                hook = self._tickets.on_closed
                if hook is not None:
                    await hook(tx, ticket_id, row["caller"], json.loads(row["fields"]), now)
            await tx.execute(
                "UPDATE cases SET status = 'closed', closed_at = ?, closed_by = ? WHERE id = ?",
                (now, who, case_id),
            )
        closed = await self.get(case_id)
        assert closed is not None
        return closed

    # -- internals -------------------------------------------------------------------
    async def _candidates(
        self, tx: Transaction, matter: Matter, at: float
    ) -> list[CaseCandidate]:
        """Open cases of the city and category with a report in the window,
        that still have an open report, with their reports' matters."""
        rows = await tx.fetch_all(
            f"SELECT {_CASE_COLUMNS} FROM cases WHERE status = 'open' AND category = ? "
            "AND city = ? AND last_report_at >= ? AND opened_at <= ? "
            "AND EXISTS (SELECT 1 FROM tickets WHERE tickets.case_id = cases.id "
            "AND tickets.status IN (?, ?)) ORDER BY last_report_at DESC LIMIT 200",
            (
                matter.category,
                matter.city,
                at - self.rule.window,
                at,
                *OPEN_REPORTS,
            ),
        )
        found: list[CaseCandidate] = []
        for row in rows:
            reports = await tx.fetch_all(
                "SELECT fields, transcript FROM tickets WHERE case_id = ? "
                "AND status != 'duplicate' ORDER BY created_at DESC, id DESC LIMIT ?",
                (int(row["id"]), MAX_REPORTS_COMPARED),
            )
            home = self.rule.home_city
            matters = [
                matter_from(json.loads(r["fields"]), r["transcript"], home)
                for r in reversed(reports)
            ]
            found.append(
                CaseCandidate(
                    int(row["id"]),
                    float(row["opened_at"]),
                    float(row["last_report_at"]),
                    matters,
                )
            )
        return found

    async def _open_case(self, tx: Transaction, matter: Matter, at: float) -> int:
        row = await tx.fetch_one(
            "INSERT INTO cases (status, city, category, district, place, opened_at, "
            "last_report_at) VALUES ('open', ?, ?, ?, ?, ?, ?) RETURNING id",
            (matter.city, matter.category, matter.district, matter.place(), at, at),
        )
        assert row is not None
        return int(row["id"])

    async def _close_if_empty(self, tx: Transaction, case_id: int, who: str) -> None:
        row = await tx.fetch_one(
            "SELECT count(*) AS n FROM tickets WHERE case_id = ?", (case_id,)
        )
        if row is not None and int(row["n"]) == 0:
            await tx.execute(
                "UPDATE cases SET status = 'closed', closed_at = ?, closed_by = ? WHERE id = ?",
                (time.time(), who, case_id),
            )

    async def _require(self, ticket_id: int) -> Ticket:
        ticket = await self._tickets.get(ticket_id)
        if ticket is None:
            raise CaseError(f"ticket {ticket_id} does not exist")
        return ticket


async def _note(
    tx: Transaction, ticket_id: int, who: str, what: str, old: str | None, new: str
) -> None:
    await tx.execute(
        "INSERT INTO ticket_history (ticket_id, at, who, what, old_value, new_value) "
        "VALUES (?,?,?,?,?,?)",
        (ticket_id, time.time(), who, what, old, new),
    )


def _case(row: Row, reports: tuple[int, ...]) -> Case:
    return Case(
        id=int(row["id"]),
        status=row["status"],
        city=row["city"],
        category=row["category"],
        district=row["district"],
        place=row["place"],
        opened_at=float(row["opened_at"]),
        last_report_at=float(row["last_report_at"]),
        closed_at=None if row["closed_at"] is None else float(row["closed_at"]),
        closed_by=row["closed_by"],
        reports=reports,
    )
