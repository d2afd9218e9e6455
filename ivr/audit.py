"""The audit log and abnormal access: who read which ticket or recording,
exported or changed what, when, from where, and whether it was allowed.

``AuditLog`` appends to the store's ``audit_log`` (migration 12), which is
append-only: nothing here updates or deletes a row, and the database refuses
it (triggers).  Every node writes to the same table, so what it counts is
the cluster's count.

``AccessGuard`` keeps the thresholds of ``[audit]`` (config.toml):

* an account shown more tickets, playing more recordings or exporting more
  often in the last hour than allowed is locked (``users.locked_at``): its
  sessions end, its log-in is refused with a message saying why, until an
  admin unlocks it;
* failed log-ins under many different names from one address within a window
  (password spraying) lock log-ins from that address (``address_locks``);

and each lock alerts the admins: an ``audit_alert`` event on the console's
event stream (relayed to every node by ivr.event_relay) and a row in the log.
Counts are read from ``audit_log`` itself, never kept in memory, so two nodes
see the same totals.

Phone numbers in what is written (the detail of a row, the log lines) are
masked as the logs mask them (138****5678); exports for roles without
``see_personal`` are masked by ``masked_csv``.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ivr.config import AuditSettings
from ivr.logs import mask_phone
from ivr.store import Database, Row
from ivr.tickets.events import TicketEvents

OUTCOMES = ("allowed", "refused", "failed")
HOUR_S = 3600.0
MAX_DETAIL = 500
MAX_FIELD = 200
MAX_PAGE = 500
ALERT_EVENT = "audit_alert"  # the console event an admin's page shows
SYSTEM = "system"  # who locks an account or an address: the hotline itself

# what each threshold counts: the actions, and whether a row counts its items
# (tickets a search listed) or once (an export)
TICKET_READS = ("ticket.read", "ticket.history", "ticket.search", "ticket.duplicates",
                "call.tickets")  # fmt: skip
RECORDING_PLAYS = ("recording.play", "conversation.play")
EXPORTS = ("ticket.export",)
KINDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "ticket": (TICKET_READS, True),
    "recording": (RECORDING_PLAYS, True),
    "export": (EXPORTS, False),
}


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    node: str
    user: str  # '' when nobody was logged in
    role: str
    action: str
    object_type: str
    object_id: str
    items: int
    address: str
    outcome: str  # allowed | refused | failed
    status: int | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        who = f"{self.user} ({self.role})" if self.user else "nobody logged in"
        what = " ".join(p for p in (self.action, self.object_type, self.object_id) if p)
        extra = f" [{self.items} shown]" if self.items > 1 else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"audit: {who} from {self.address or '?'}: {what}{extra} {self.outcome}{detail}"


@dataclass(frozen=True)
class AuditQuery:
    """What an admin searches for; every field optional. ``action`` ending in
    '.' is a prefix (``ticket.`` = every ticket action)."""

    user: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    address: str | None = None
    outcome: str | None = None
    since: float | None = None
    until: float | None = None
    before: int | None = None  # the page after the one ending at this id (newest first)
    limit: int = 100


@dataclass(frozen=True)
class Lock:
    kind: str  # account | address
    subject: str  # the account's name or the address
    locked_at: float
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _clip(text: str, limit: int = MAX_FIELD) -> str:
    """Printable, bounded, phone numbers masked: fit for a row and a log line."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text[: limit * 2])
    return mask_phone(cleaned)[:limit]


def _entry(row: Row) -> AuditEntry:
    return AuditEntry(
        id=int(row["id"]),
        at=float(row["at"]),
        node=str(row["node"]),
        user=str(row["user_name"]),
        role=str(row["role"]),
        action=str(row["action"]),
        object_type=str(row["object_type"]),
        object_id=str(row["object_id"]),
        items=int(row["items"]),
        address=str(row["address"]),
        outcome=str(row["outcome"]),
        status=None if row["status"] is None else int(row["status"]),
        detail=str(row["detail"]),
    )


class AuditLog:
    """Appends to and searches ``audit_log``; nothing else touches it."""

    def __init__(
        self,
        db: Database,
        *,
        node: str = "",
        clock: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
    ) -> None:
        self.db = db
        self.node = node
        self.clock = clock
        self.log = log or logging.getLogger("ivr.audit")

    async def record(
        self,
        *,
        action: str,
        outcome: str,
        user: str = "",
        role: str = "",
        object_type: str = "",
        object_id: str = "",
        items: int = 0,
        address: str = "",
        status: int | None = None,
        detail: str = "",
    ) -> AuditEntry:
        """Append one row (DatabaseError if the store cannot take it: the
        caller decides whether what it audits may go on without it)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")
        entry = AuditEntry(
            id=0,
            at=self.clock(),
            node=self.node,
            user=_clip(user, 64),
            role=_clip(role, 32),
            action=_clip(action, 100),
            object_type=_clip(object_type, 40),
            object_id=_clip(object_id),
            items=max(0, items),
            address=_clip(address, 64),
            outcome=outcome,
            status=status,
            detail=_clip(detail, MAX_DETAIL),
        )
        await self.db.execute(
            "INSERT INTO audit_log (at, node, user_name, role, action, object_type, "
            "object_id, items, address, outcome, status, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.at,
                entry.node,
                entry.user,
                entry.role,
                entry.action,
                entry.object_type,
                entry.object_id,
                entry.items,
                entry.address,
                entry.outcome,
                entry.status,
                entry.detail,
            ),
        )
        reads = entry.action in TICKET_READS or entry.action in RECORDING_PLAYS
        level = logging.DEBUG if entry.outcome == "allowed" and reads else logging.INFO
        self.log.log(level, "%s", entry.line())
        return entry

    async def search(self, query: AuditQuery) -> list[AuditEntry]:
        """Rows matching ``query``, newest first, at most ``query.limit``."""
        where: list[str] = []
        params: list[object] = []
        for column, value in (
            ("user_name", query.user),
            ("object_type", query.object_type),
            ("object_id", query.object_id),
            ("address", query.address),
            ("outcome", query.outcome),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.action is not None:
            if query.action.endswith("."):
                where.append("substr(action, 1, ?) = ?")
                params += [len(query.action), query.action]
            else:
                where.append("action = ?")
                params.append(query.action)
        if query.since is not None:
            where.append("at >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("at < ?")
            params.append(query.until)
        if query.before is not None:
            where.append("id < ?")
            params.append(query.before)
        sql = "SELECT * FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(1, min(query.limit, MAX_PAGE)))
        return [_entry(r) for r in await self.db.fetch_all(sql, params)]

    async def counted(self, user: str, kind: str, since: float) -> int:
        """What ``user`` was allowed of ``kind`` (ticket, recording, export) since
        then, or since an admin last unlocked the account if that was later (the
        admin vouched for what came before)."""
        actions, by_items = KINDS[kind]
        marks = ", ".join("?" for _ in actions)
        what = "COALESCE(SUM(items), 0)" if by_items else "COUNT(*)"
        row = await self.db.fetch_one(
            f"SELECT {what} FROM audit_log WHERE user_name = ? AND at >= ? "
            f"AND outcome = 'allowed' AND action IN ({marks}) "
            "AND at > (SELECT COALESCE(MAX(at), 0) FROM audit_log WHERE object_type = 'user' "
            "AND object_id = ? AND action = 'account.unlock' AND outcome = 'allowed')",
            (user, since, *actions, user),
        )
        return int(row[0]) if row is not None else 0

    async def names_failed(self, address: str, since: float) -> int:
        """How many different names failed to log in from ``address`` since then."""
        row = await self.db.fetch_one(
            "SELECT COUNT(DISTINCT object_id) FROM audit_log WHERE address = ? "
            "AND action = 'login' AND outcome = 'refused' AND at >= ?",
            (address, since),
        )
        return int(row[0]) if row is not None else 0


class AccessRefusedError(Exception):
    """A locked account or address: the message says why and what to do."""


class AccessGuard:
    """The thresholds of ``[audit]``, over ``AuditLog``'s counts; the locks."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        events: TicketEvents,
        settings: Callable[[], AuditSettings],
        *,
        log: logging.Logger | None = None,
    ) -> None:
        self.db = db
        self.audit = audit
        self.events = events
        self.settings = settings
        self.log = log or audit.log

    # -- thresholds ---------------------------------------------------------------
    def limit_of(self, kind: str) -> tuple[int, str]:
        s = self.settings()
        return {
            "ticket": (s.ticket_reads_per_hour, "ticket_reads_per_hour"),
            "recording": (s.recording_plays_per_hour, "recording_plays_per_hour"),
            "export": (s.exports_per_hour, "exports_per_hour"),
        }[kind]

    async def over_limit(self, user: str, kind: str, items: int, address: str) -> str | None:
        """None when ``user`` may be shown ``items`` more of ``kind`` now; else
        locks the account (alerting the admins) and says why."""
        limit, key = self.limit_of(kind)
        if limit <= 0:
            return None
        now = self.audit.clock()
        done = await self.audit.counted(user, kind, now - HOUR_S)
        wanted = done + (items if KINDS[kind][1] else 1)
        if wanted <= limit:
            return None
        nouns = {"ticket": "tickets read", "recording": "recordings played", "export": "exports"}
        reason = f"{wanted} {nouns[kind]} within an hour, over [audit] {key} = {limit}"
        await self.lock_account(user, reason, address=address)
        return reason

    async def login_refused(self, name: str, address: str, why: str) -> None:
        """A failed log-in (audited); locks the address when it is spraying."""
        await self.audit.record(
            action="login",
            outcome="refused",
            object_type="user",
            object_id=name[:64],
            address=address,
            detail=why,
        )
        s = self.settings()
        if s.login_spray_names <= 0:
            return
        since = self.audit.clock() - s.login_spray_window
        names = await self.audit.names_failed(address, since)
        if names >= s.login_spray_names:
            reason = (
                f"failed log-ins under {names} different names within "
                f"{s.login_spray_window:g} s (password spraying), [audit] login_spray_names = "
                f"{s.login_spray_names}"
            )
            await self.lock_address(address, reason)

    async def logged_in(self, user: str, role: str, address: str) -> None:
        await self.audit.record(
            action="login",
            outcome="allowed",
            user=user,
            role=role,
            object_type="user",
            object_id=user,
            address=address,
            status=200,
        )

    # -- locks --------------------------------------------------------------------
    async def check_address(self, address: str) -> None:
        """AccessRefusedError when log-ins from ``address`` are locked."""
        row = await self.db.fetch_one(
            "SELECT locked_at, reason FROM address_locks WHERE address = ?", (address,)
        )
        if row is not None:
            raise AccessRefusedError(
                f"log-ins from {address} are locked since {_when(float(row['locked_at']))} "
                f"({row['reason']}); an admin must unlock the address (审计页面 /admin/audit)"
            )

    async def check_account(self, name: str) -> None:
        """AccessRefusedError when the account ``name`` is locked."""
        row = await self.db.fetch_one(
            "SELECT locked_at, locked_reason FROM users WHERE name = ? AND locked_at IS NOT NULL",
            (name,),
        )
        if row is not None:
            raise AccessRefusedError(
                f"账号已锁定 the account {name} is locked since "
                f"{_when(float(row['locked_at']))} ({row['locked_reason']}); "
                "an admin must unlock it"
            )

    async def lock_account(self, name: str, reason: str, *, address: str = "") -> bool:
        """Lock ``name`` and end its sessions; alert the admins (once: False
        when it was locked already, by this node or another)."""
        now = self.audit.clock()
        async with self.db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE users SET locked_at = ?, locked_reason = ? "
                "WHERE name = ? AND locked_at IS NULL",
                (now, reason, name),
            )
            if changed:
                await tx.execute(
                    "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE name = ?)",
                    (name,),
                )
        if not changed:
            return False
        self.log.warning("audit: account %s locked: %s (last from %s)", name, reason, address)
        await self.audit.record(
            action="account.lock",
            outcome="allowed",
            user=SYSTEM,
            role=SYSTEM,
            object_type="user",
            object_id=name,
            address=address,
            detail=reason,
        )
        self._alert("account_locked", name, reason, now, address)
        return True

    async def lock_address(self, address: str, reason: str) -> bool:
        now = self.audit.clock()
        async with self.db.transaction() as tx:
            if await tx.fetch_one("SELECT 1 FROM address_locks WHERE address = ?", (address,)):
                return False
            await tx.execute(
                "INSERT INTO address_locks (address, locked_at, reason) VALUES (?, ?, ?)",
                (address, now, reason),
            )
        self.log.warning("audit: log-ins from %s locked: %s", address, reason)
        await self.audit.record(
            action="address.lock",
            outcome="allowed",
            user=SYSTEM,
            role=SYSTEM,
            object_type="address",
            object_id=address,
            address=address,
            detail=reason,
        )
        self._alert("address_locked", address, reason, now, address)
        return True

    async def locks(self) -> list[Lock]:
        """Accounts and addresses locked now, oldest first."""
        users = await self.db.fetch_all(
            "SELECT name, locked_at, locked_reason FROM users WHERE locked_at IS NOT NULL"
        )
        addresses = await self.db.fetch_all("SELECT address, locked_at, reason FROM address_locks")
        found = [
            Lock("account", str(r["name"]), float(r["locked_at"]), str(r["locked_reason"] or ""))
            for r in users
        ] + [
            Lock("address", str(r["address"]), float(r["locked_at"]), str(r["reason"]))
            for r in addresses
        ]
        return sorted(found, key=lambda lock: lock.locked_at)

    async def unlock(self, kind: str, subject: str, *, by: str, role: str, address: str) -> bool:
        """An admin unlocks an account or an address; False if it was not locked."""
        if kind == "account":
            changed = await self.db.execute(
                "UPDATE users SET locked_at = NULL, locked_reason = NULL "
                "WHERE name = ? AND locked_at IS NOT NULL",
                (subject,),
            )
        elif kind == "address":
            changed = await self.db.execute(
                "DELETE FROM address_locks WHERE address = ?", (subject,)
            )
        else:
            raise ValueError(f"kind {kind!r} is not account or address")
        await self.audit.record(
            action=f"{kind}.unlock",
            outcome="allowed" if changed else "failed",
            user=by,
            role=role,
            object_type="user" if kind == "account" else "address",
            object_id=subject,
            address=address,
            detail="" if changed else "was not locked",
        )
        if changed:
            self.log.info("audit: %s %s unlocked by %s", kind, subject, by)
            self.events.publish(
                ALERT_EVENT,
                {"kind": f"{kind}_unlocked", "subject": subject, "by": by, "at": time.time()},
            )
        return bool(changed)

    def _alert(self, kind: str, subject: str, reason: str, at: float, address: str) -> None:
        """To the admins' screens on every node (the event relay writes it to the store)."""
        self.events.publish(
            ALERT_EVENT,
            {"kind": kind, "subject": subject, "reason": reason, "at": at, "address": address},
        )


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def masked_csv(text: str, *, drop: Sequence[str] = ("transcript",)) -> str:
    """An export for a role that may not see personal data: every phone number
    masked (138****5678) in every cell, and the ``drop`` columns emptied."""
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    rows = list(csv.reader(io.StringIO(text[len(bom) :])))
    if not rows:
        return text
    header = rows[0]
    blank = {i for i, name in enumerate(header) if name in drop}
    out = io.StringIO()
    out.write(bom)
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows[1:]:
        writer.writerow(["" if i in blank else mask_phone(cell) for i, cell in enumerate(row)])
    return out.getvalue()
