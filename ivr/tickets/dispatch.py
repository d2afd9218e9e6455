"""Dispatch (派单): a ticket sent to the department the duty list names, and
what the department does with it: accept, return with a reason, ask for more
time, reply with the result.

One row of ``dispatches`` per ticket holds where it is now (migration 14);
every step is also a row of the ticket's history (``ticket_history``: who,
what, from, to), so the ticket's page tells the whole story.  The time limit
runs from the first dispatch: a ticket returned and sent on keeps its clock
(the citizen has been waiting all along), with the limit of its category and
urgency at the time; an extension granted moves the due time.

A return, and a reassignment of a ticket the department had not returned,
each count as a pass (``passes``): graded supervision (ivr/tickets/
supervision.py) reads them as 推诿.
"""

from __future__ import annotations

import csv
import datetime
import io
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ivr.store import Database, Row, Transaction
from ivr.tickets.duty_list import DutyList
from ivr.tickets.search import spreadsheet_cell
from ivr.tickets.ticket import Ticket, TicketError

DISPATCHED, ACCEPTED, RETURNED, REPLIED = "dispatched", "accepted", "returned", "replied"
STATES = (DISPATCHED, ACCEPTED, RETURNED, REPLIED)
HOUR = 3600.0
MAX_TEXT = 2000
MAX_EXTENSION_HOURS = 24 * 90
LEVEL_NAMES = {0: "", 1: "初级预警", 2: "中级警示", 3: "高级督办"}
STATE_NAMES = {DISPATCHED: "已派单", ACCEPTED: "办理中", RETURNED: "已退回", REPLIED: "已答复"}
CSV_HEADER = (
    "工单",
    "承办部门",
    "状态",
    "类别",
    "紧急程度",
    "区县",
    "派单时间",
    "办理时限",
    "时限已用",
    "超期",
    "推诿次数",
    "督办级别",
    "延期（小时）",
    "答复时间",
    "答复",
    "派单人",
)


class DispatchError(TicketError):
    """A step that cannot be taken now (the message says why)."""


class DispatchNotFoundError(DispatchError):
    """No such ticket, or it was never dispatched."""


@dataclass(frozen=True)
class Dispatch:
    ticket_id: int
    department: str
    state: str
    category: str
    urgency: str
    started_at: float
    due_at: float
    passes: int
    level: int
    passing_raised: int
    extension_hours: float | None
    extension_reason: str | None
    result: str | None
    replied_at: float | None
    dispatched_by: str
    updated_at: float

    def share_used(self, now: float) -> float:
        """The share of the time limit used by ``now`` (1.0 = due)."""
        span = self.due_at - self.started_at
        return (now - self.started_at) / span if span > 0 else 1.0

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        return {
            "ticket_id": self.ticket_id,
            "department": self.department,
            "state": self.state,
            "category": self.category,
            "urgency": self.urgency,
            "started_at": self.started_at,
            "due_at": self.due_at,
            "overdue": self.state != REPLIED and now > self.due_at,
            "seconds_left": round(self.due_at - now),  # by the server's clock
            "share_used": round(self.share_used(now), 3),
            "passes": self.passes,
            "level": self.level,
            "level_name": LEVEL_NAMES[self.level],
            "extension_hours": self.extension_hours,
            "extension_reason": self.extension_reason,
            "result": self.result,
            "replied_at": self.replied_at,
            "dispatched_by": self.dispatched_by,
        }


_COLUMNS = (
    "ticket_id, department, state, category, urgency, started_at, due_at, passes, level, "
    "passing_raised, extension_hours, extension_reason, result, replied_at, dispatched_by, "
    "updated_at"
)


def _dispatch(row: Row) -> Dispatch:
    return Dispatch(
        ticket_id=int(row["ticket_id"]),
        department=str(row["department"]),
        state=str(row["state"]),
        category=str(row["category"]),
        urgency=str(row["urgency"]),
        started_at=float(row["started_at"]),
        due_at=float(row["due_at"]),
        passes=int(row["passes"]),
        level=int(row["level"]),
        passing_raised=int(row["passing_raised"]),
        extension_hours=None if row["extension_hours"] is None else float(row["extension_hours"]),
        extension_reason=row["extension_reason"],
        result=row["result"],
        replied_at=None if row["replied_at"] is None else float(row["replied_at"]),
        dispatched_by=str(row["dispatched_by"]),
        updated_at=float(row["updated_at"]),
    )


def _text(value: str, what: str) -> str:
    value = " ".join(value.split())
    if not value:
        raise DispatchError(f"{what} is needed")
    if len(value) > MAX_TEXT:
        raise DispatchError(f"{what}: at most {MAX_TEXT} characters")
    return value


async def history(
    tx: Transaction, ticket_id: int, at: float, who: str, what: str, old: str | None, new: str
) -> None:
    await tx.execute(
        "INSERT INTO ticket_history (ticket_id, at, who, what, old_value, new_value) "
        "VALUES (?,?,?,?,?,?)",
        (ticket_id, at, who, what, old, new),
    )


class Dispatches:
    """The dispatched tickets, over ``dispatches`` and ``ticket_history``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, ticket_id: int) -> Dispatch | None:
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM dispatches WHERE ticket_id = ?", (ticket_id,)
        )
        return None if row is None else _dispatch(row)

    async def of_department(self, department: str, *, replied: bool = False) -> list[Dispatch]:
        """The department's tickets, the earliest due first (replied ones only if asked)."""
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM dispatches WHERE department = ? AND state "
            + ("= ?" if replied else "!= ?")
            + " ORDER BY due_at, ticket_id LIMIT 500",
            (department, REPLIED),
        )
        return [_dispatch(r) for r in rows]

    async def listed(self, *, level: int | None = None, open_only: bool = True) -> list[Dispatch]:
        """Dispatched tickets (not yet answered unless ``open_only`` is False),
        at ``level`` if given, the highest level and earliest due first."""
        where: list[str] = []
        params: list[object] = []
        if open_only:
            where.append("state != ?")
            params.append(REPLIED)
        if level is not None:
            where.append("level = ?")
            params.append(level)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM dispatches{clause} "
            "ORDER BY level DESC, due_at, ticket_id LIMIT 1000",
            params,
        )
        return [_dispatch(r) for r in rows]

    async def counts(self, now: float) -> list[dict[str, Any]]:
        """Per department: open, overdue and replied tickets, the open ones at
        each supervision level, and how many tickets it returned (ever)."""
        rows = await self._db.fetch_all(
            "SELECT department, "
            "SUM(CASE WHEN state != ? THEN 1 ELSE 0 END) AS open_count, "
            "SUM(CASE WHEN state != ? AND due_at < ? THEN 1 ELSE 0 END) AS overdue, "
            "SUM(CASE WHEN state = ? THEN 1 ELSE 0 END) AS replied, "
            "SUM(CASE WHEN state != ? AND level = 1 THEN 1 ELSE 0 END) AS level1, "
            "SUM(CASE WHEN state != ? AND level = 2 THEN 1 ELSE 0 END) AS level2, "
            "SUM(CASE WHEN state != ? AND level = 3 THEN 1 ELSE 0 END) AS level3 "
            "FROM dispatches GROUP BY department",
            (REPLIED, REPLIED, now, REPLIED, REPLIED, REPLIED, REPLIED),
        )
        returns = await self._db.fetch_all(
            "SELECT old_value AS department, COUNT(*) AS returned FROM ticket_history "
            "WHERE what = 'returned' GROUP BY old_value"
        )
        keys = ("open", "overdue", "replied", "returned", "level1", "level2", "level3")
        found: dict[str, dict[str, Any]] = {}

        def of(name: str) -> dict[str, Any]:
            return found.setdefault(name, {"department": name, **dict.fromkeys(keys, 0)})

        for r in rows:
            counted = of(str(r["department"]))
            counted["open"] = int(r["open_count"] or 0)
            for key in ("overdue", "replied", "level1", "level2", "level3"):
                counted[key] = int(r[key] or 0)
        for r in returns:
            of(str(r["department"]))["returned"] = int(r["returned"])
        return [found[name] for name in sorted(found)]

    # -- the operator ------------------------------------------------------------
    async def dispatch(
        self, ticket: Ticket, department: str, duty: DutyList, *, who: str, now: float
    ) -> Dispatch:
        """Send ``ticket`` to ``department`` (a department of the duty list):
        the first dispatch starts the clock; sending a returned ticket on is
        allowed; moving one the department holds counts as a pass."""
        if department not in duty.departments:
            known = "、".join(duty.departments)
            raise DispatchError(f"{department!r} is not a department of the duty list ({known})")
        if ticket.status in ("closed", "duplicate"):
            raise DispatchError(f"ticket {ticket.id} is {ticket.status}: it is not dispatched")
        category = ticket.value("category") or ""
        urgency = ticket.value("urgency") or ""
        limit = duty.time_limit_hours(category, urgency) * HOUR
        async with self._db.transaction() as tx:
            row = await tx.fetch_one(
                f"SELECT {_COLUMNS} FROM dispatches WHERE ticket_id = ?", (ticket.id,)
            )
            if row is None:
                await tx.execute(
                    f"INSERT INTO dispatches ({_COLUMNS}) VALUES "
                    "(?,?,?,?,?,?,?,0,0,0,NULL,NULL,NULL,NULL,?,?)",
                    (
                        ticket.id,
                        department,
                        DISPATCHED,
                        category,
                        urgency,
                        now,
                        now + limit,
                        who,
                        now,
                    ),
                )
                old = None
            else:
                current = _dispatch(row)
                if current.state == REPLIED:
                    raise DispatchError(
                        f"ticket {ticket.id} was answered by {current.department}: "
                        "it is not dispatched again"
                    )
                if current.state != RETURNED and current.department == department:
                    raise DispatchError(f"ticket {ticket.id} is already with {department}")
                passed = 1 if current.state != RETURNED else 0  # a return counted already
                await tx.execute(
                    "UPDATE dispatches SET department = ?, state = ?, category = ?, urgency = ?, "
                    "due_at = ?, passes = passes + ?, extension_hours = NULL, "
                    "extension_reason = NULL, dispatched_by = ?, updated_at = ? "
                    "WHERE ticket_id = ?",
                    (
                        department,
                        DISPATCHED,
                        category,
                        urgency,
                        current.started_at + limit,
                        passed,
                        who,
                        now,
                        ticket.id,
                    ),
                )
                old = current.department
            await history(
                tx,
                ticket.id,
                now,
                who,
                "dispatched" if old is None else "reassigned",
                old,
                f"{department}（时限{limit / HOUR:g}小时）",
            )
            if ticket.status == "open":
                await tx.execute(
                    "UPDATE tickets SET status = 'in_progress', updated_at = ? WHERE id = ?",
                    (now, ticket.id),
                )
                await history(tx, ticket.id, now, who, "status", "open", "in_progress")
        return await self._require(ticket.id)

    async def decide_extension(
        self, ticket_id: int, *, grant: bool, who: str, now: float
    ) -> Dispatch:
        """A supervisor grants or refuses the extension a department asked for."""
        async with self._db.transaction() as tx:
            current = await self._locked(tx, ticket_id)
            if current.extension_hours is None:
                raise DispatchError(f"ticket {ticket_id}: no extension was asked for")
            hours = current.extension_hours
            await tx.execute(
                "UPDATE dispatches SET due_at = due_at + ?, extension_hours = NULL, "
                "extension_reason = NULL, updated_at = ? WHERE ticket_id = ?",
                (hours * HOUR if grant else 0.0, now, ticket_id),
            )
            what = "extension_granted" if grant else "extension_refused"
            await history(tx, ticket_id, now, who, what, None, f"{hours:g}小时")
        return await self._require(ticket_id)

    # -- the department ------------------------------------------------------------
    async def accept(self, ticket_id: int, department: str, *, who: str, now: float) -> Dispatch:
        async with self._db.transaction() as tx:
            current = await self._held(tx, ticket_id, department)
            if current.state != DISPATCHED:
                raise DispatchError(f"ticket {ticket_id} is {current.state}, not waiting for you")
            await tx.execute(
                "UPDATE dispatches SET state = ?, updated_at = ? WHERE ticket_id = ?",
                (ACCEPTED, now, ticket_id),
            )
            await history(tx, ticket_id, now, who, "accepted", None, department)
        return await self._require(ticket_id)

    async def give_back(
        self, ticket_id: int, department: str, reason: str, *, who: str, now: float
    ) -> Dispatch:
        """Return the ticket (not ours: 非本单位职责), with the reason."""
        reason = _text(reason, "the reason for returning")
        async with self._db.transaction() as tx:
            current = await self._held(tx, ticket_id, department)
            if current.state not in (DISPATCHED, ACCEPTED):
                raise DispatchError(f"ticket {ticket_id} is {current.state}: nothing to return")
            await tx.execute(
                "UPDATE dispatches SET state = ?, passes = passes + 1, extension_hours = NULL, "
                "extension_reason = NULL, updated_at = ? WHERE ticket_id = ?",
                (RETURNED, now, ticket_id),
            )
            await history(tx, ticket_id, now, who, "returned", department, reason)
        return await self._require(ticket_id)

    async def ask_extension(
        self, ticket_id: int, department: str, hours: float, reason: str, *, who: str, now: float
    ) -> Dispatch:
        reason = _text(reason, "the reason for more time")
        if not 0 < hours <= MAX_EXTENSION_HOURS:
            raise DispatchError(f"hours: want a number over 0 and at most {MAX_EXTENSION_HOURS}")
        async with self._db.transaction() as tx:
            current = await self._held(tx, ticket_id, department)
            if current.state not in (DISPATCHED, ACCEPTED):
                raise DispatchError(f"ticket {ticket_id} is {current.state}: no time to extend")
            if current.extension_hours is not None:
                raise DispatchError(
                    f"ticket {ticket_id}: {current.extension_hours:g} hours were asked already, "
                    "not yet decided"
                )
            await tx.execute(
                "UPDATE dispatches SET extension_hours = ?, extension_reason = ?, updated_at = ? "
                "WHERE ticket_id = ?",
                (hours, reason, now, ticket_id),
            )
            await history(
                tx, ticket_id, now, who, "extension_asked", None, f"{hours:g}小时：{reason}"
            )
        return await self._require(ticket_id)

    async def reply(
        self, ticket_id: int, department: str, result: str, *, who: str, now: float
    ) -> Dispatch:
        """The department's answer (办理结果); the hotline then closes the ticket."""
        result = _text(result, "the result")
        async with self._db.transaction() as tx:
            current = await self._held(tx, ticket_id, department)
            if current.state not in (DISPATCHED, ACCEPTED):
                raise DispatchError(f"ticket {ticket_id} is {current.state}: nothing to answer")
            await tx.execute(
                "UPDATE dispatches SET state = ?, result = ?, replied_at = ?, "
                "extension_hours = NULL, extension_reason = NULL, updated_at = ? "
                "WHERE ticket_id = ?",
                (REPLIED, result, now, now, ticket_id),
            )
            await history(tx, ticket_id, now, who, "replied", department, result)
        return await self._require(ticket_id)

    # -- helpers -----------------------------------------------------------------------
    async def _locked(self, tx: Transaction, ticket_id: int) -> Dispatch:
        row = await tx.fetch_one(
            f"SELECT {_COLUMNS} FROM dispatches WHERE ticket_id = ?", (ticket_id,)
        )
        if row is None:
            raise DispatchNotFoundError(f"ticket {ticket_id} was not dispatched")
        return _dispatch(row)

    async def _held(self, tx: Transaction, ticket_id: int, department: str) -> Dispatch:
        current = await self._locked(tx, ticket_id)
        if current.department != department:
            # said as "not found": a department sees only its own tickets
            raise DispatchNotFoundError(f"ticket {ticket_id} is not with {department}")
        return current

    async def _require(self, ticket_id: int) -> Dispatch:
        found = await self.get(ticket_id)
        if found is None:
            raise DispatchNotFoundError(f"ticket {ticket_id} was not dispatched")
        return found


def dispatches_csv(rows: Iterable[tuple[Dispatch, str]], now: float) -> str:
    """The supervisors' export: each dispatched ticket (with its district) and
    where it stands, as CSV in UTF-8 with a BOM (spreadsheet programs read
    Chinese); no caller's name, number or address (the tickets' own export,
    for roles that may see them, has those)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for d, district in rows:
        writer.writerow(
            [
                d.ticket_id,
                spreadsheet_cell(d.department),
                STATE_NAMES.get(d.state, d.state),
                spreadsheet_cell(d.category),
                spreadsheet_cell(d.urgency),
                spreadsheet_cell(district),
                _local(d.started_at),
                _local(d.due_at),
                f"{d.share_used(d.replied_at if d.replied_at else now):.0%}",
                "是" if d.state != REPLIED and now > d.due_at else "",
                d.passes,
                LEVEL_NAMES[d.level],
                d.extension_hours if d.extension_hours is not None else "",
                _local(d.replied_at) if d.replied_at else "",
                spreadsheet_cell(d.result),
                spreadsheet_cell(d.dispatched_by),
            ]
        )
    return out.getvalue()


def _local(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).isoformat(sep=" ", timespec="minutes")
