"""The persistent follow-up queue (tables ``followups`` and
``followup_events``, migration 13).

A ticket closed (``ticket_closed``, called inside the transaction that closes
it, so a closing never loses its follow-up) gets one follow-up: the number to
dial (the caller's, or for a 亲友代办 ticket the beneficiary's) with the
dialect and speed remembered for that number.  ``claim_due`` moves due ones
to ``dialing`` under the store's lock ``followups.claim`` and writes the
claiming node into ``lease_node``, so one node dials each; ``outcome``
schedules the next attempt per the policy (the callbacks' rules: retry
delays, quiet hours, a per-number limit per hour) or records ``no_answer``
after the last; ``answered`` records the citizen's 满意 / 基本满意 / 不满意.
Every change of state adds a ``followup_events`` row.

Every method that needs the time takes ``now`` (epoch seconds).
"""

from __future__ import annotations

import builtins
import json
import math
from collections.abc import Iterable, Mapping

from ivr.callbacks.policy import RATE_WINDOW, CallbackPolicy
from ivr.followups.model import (
    OPEN_STATES,
    WAITING_STATES,
    Followup,
    FollowupEvent,
    FollowupState,
    Outcome,
)
from ivr.store import Database, Row, Transaction

MAX_LIST = 10_000
RECOVERED = "recovered after restart"
NO_NUMBER = "no number to call"

_COLUMNS = (
    "id",
    "ticket_id",
    "number",
    "dialect",
    "speed",
    "state",
    "attempts",
    "next_at",
    "lease_node",
    "outcome",
    "comment",
    "last_error",
    "closed_at",
    "answered_at",
    "created_at",
    "updated_at",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM followups"


def _in(states: Iterable[FollowupState]) -> str:
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(states)) + ")"


_OPEN = _in(OPEN_STATES)
_WAITING = _in(WAITING_STATES)
_ATTEMPTS_SINCE = """
    SELECT e.at FROM followup_events AS e JOIN followups AS f ON f.id = e.followup_id
    WHERE f.number = ? AND e.to_state = 'dialing' AND e.at > ? ORDER BY e.at
"""


class FollowupError(Exception):
    """A follow-up operation that cannot be done."""


class FollowupNotFoundError(FollowupError, LookupError):
    """No follow-up with that id."""


class FollowupStateError(FollowupError, ValueError):
    """The follow-up is in a state that does not allow this."""


def number_to_dial(caller: str, fields: Mapping[str, object]) -> str:
    """Whom a closed ticket's follow-up calls: the beneficiary of a 亲友代办
    (proxy) ticket when their number was heard, else the caller."""
    if _value(fields, "proxy") not in (None, "", False, "false", "False"):
        phone = _value(fields, "beneficiary_phone")
        if isinstance(phone, str) and phone.strip():
            return phone.strip()
    return caller.strip()


class FollowupQueue:
    """Follow-ups in the store, dialled per ``policy`` (the callbacks' rules)."""

    def __init__(self, db: Database, policy: CallbackPolicy, *, node: str | None = None) -> None:
        self._db = db
        self.policy = policy
        self.node = node  # the node this queue dials from: its claims carry its name

    # ------------------------------------------------------------ queueing

    async def ticket_closed(
        self,
        tx: Transaction,
        ticket_id: int,
        caller: str,
        fields: Mapping[str, object],
        *,
        now: float,
    ) -> Followup:
        """Queue the follow-up of a ticket being closed, inside the closing
        transaction ``tx``.  A ticket with an open follow-up keeps that one."""
        _check_time("now", now)
        row = await tx.fetch_one(
            f"{_SELECT} WHERE ticket_id = ? AND state IN {_OPEN}", (ticket_id,)
        )
        if row is not None:
            return _followup(row)
        number = number_to_dial(caller, fields)
        dialect: str | None = None
        speed = 1.0
        if number:
            profile = await tx.fetch_one(
                "SELECT dialect, speed FROM caller_profiles WHERE number = ?", (number,)
            )
            if profile is not None:
                dialect = profile["dialect"]
                speed = float(profile["speed"])
        state = FollowupState.PENDING if number else FollowupState.DONE
        values = (
            ticket_id,
            number,
            dialect,
            speed,
            state.value,
            0,
            self.policy.first_due(now, urgent=False),
            None,
            None if number else Outcome.NO_ANSWER.value,
            None,
            None if number else NO_NUMBER,
            now,
            None,
            now,
            now,
        )
        columns = _COLUMNS[1:]
        inserted = await tx.fetch_one(
            f"INSERT INTO followups ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)}) RETURNING id",
            values,
        )
        assert inserted is not None
        followup_id = int(inserted[0])
        detail = f"ticket {ticket_id} closed; calling {number}" if number else NO_NUMBER
        await _event(tx, followup_id, now, None, state, detail)
        return await _require(tx, followup_id)

    # ------------------------------------------------------------ dialling

    async def claim_due(self, *, now: float, limit: int | None = None) -> list[Followup]:
        """Move the follow-ups due at ``now`` to ``dialing`` (attempts + 1),
        oldest closing first, at most ``policy.max_dialing`` dialling at once
        (on every node together).  In quiet hours nothing is claimed and what
        is due waits for their end; a number dialled
        ``policy.max_attempts_per_hour`` times in the last hour waits too."""
        _check_time("now", now)
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be 0 or more, got {limit}")
        due_sql = f"state IN {_WAITING} AND next_at <= ?"
        due = await self._db.fetch_one(f"SELECT 1 FROM followups WHERE {due_sql} LIMIT 1", (now,))
        if due is None:  # the common case: no lock taken
            return []
        async with self._db.transaction() as tx:
            await tx.lock("followups.claim")  # one claim at a time, on every node
            policy = self.policy
            if policy.in_quiet_hours(now):
                await tx.execute(
                    f"UPDATE followups SET next_at = ?, updated_at = ? WHERE {due_sql}",
                    (policy.quiet_hours_end(now), now, now),
                )
                return []
            row = await tx.fetch_one(
                "SELECT COUNT(*) FROM followups WHERE state = ?", (FollowupState.DIALING.value,)
            )
            room = policy.max_dialing - (int(row[0]) if row is not None else 0)
            if limit is not None:
                room = min(room, limit)
            claimed: list[Followup] = []
            if room <= 0:
                return claimed
            rows = await tx.fetch_all(f"{_SELECT} WHERE {due_sql} ORDER BY next_at, id", (now,))
            for candidate in (_followup(r) for r in rows):
                if len(claimed) >= room:
                    break
                recent = await tx.fetch_all(_ATTEMPTS_SINCE, (candidate.number, now - RATE_WINDOW))
                if len(recent) >= policy.max_attempts_per_hour:
                    frees_at = float(recent[len(recent) - policy.max_attempts_per_hour][0])
                    at = policy.schedule(frees_at + RATE_WINDOW, urgent=False)
                    await tx.execute(
                        "UPDATE followups SET next_at = ?, updated_at = ? WHERE id = ?",
                        (max(at, now), now, candidate.id),
                    )
                    continue
                attempt = candidate.attempts + 1
                await tx.execute(
                    "UPDATE followups SET state = ?, attempts = ?, updated_at = ?, lease_node = ? "
                    "WHERE id = ?",
                    (FollowupState.DIALING.value, attempt, now, self.node, candidate.id),
                )
                await _event(
                    tx,
                    candidate.id,
                    now,
                    candidate.state,
                    FollowupState.DIALING,
                    f"attempt {attempt} of {policy.max_attempts}"
                    + (f" by node {self.node}" if self.node else ""),
                )
                claimed.append(await _require(tx, candidate.id))
            return claimed

    async def outcome(
        self,
        followup_id: int,
        result: FollowupState,
        *,
        now: float,
        detail: str = "",
        give_up: bool = False,
    ) -> Followup:
        """How the dial of a ``dialing`` follow-up went: CONNECTED (answered:
        report the answer with ``answered``), NO_ANSWER, BUSY, or PENDING for
        any other failure.  A failed attempt is retried per the policy; after
        the last (or ``give_up``: the number does not exist) the follow-up is
        done with outcome ``no_answer``.  One cancelled meanwhile stays so."""
        result = FollowupState(result)
        if result not in (
            FollowupState.CONNECTED,
            FollowupState.NO_ANSWER,
            FollowupState.BUSY,
            FollowupState.PENDING,
        ):
            raise ValueError(
                f"follow-up outcome must be connected, no_answer, busy or pending, not {result}"
            )
        _check_time("now", now)
        async with self._db.transaction() as tx:
            f = await _require(tx, followup_id)
            if f.state is FollowupState.CANCELLED:
                return f
            if f.state is not FollowupState.DIALING:
                raise FollowupStateError(
                    f"follow-up {followup_id} is {f.state}, not dialing: report an outcome "
                    "only for a follow-up claimed with claim_due"
                )
            if result is FollowupState.CONNECTED:
                return await _set_state(tx, f, result, now, detail or "answered")
            error = f"{result}: {detail}" if detail else str(result)
            next_at = None if give_up else self.policy.retry_due(now, f.attempts, urgent=False)
            if next_at is None:
                why = "gave up" if give_up else f"no answer after {f.attempts} attempts"
                return await _set_state(
                    tx,
                    f,
                    FollowupState.DONE,
                    now,
                    f"{error}; {why}",
                    error=error,
                    outcome=Outcome.NO_ANSWER,
                )
            return await _set_state(
                tx,
                f,
                result,
                now,
                f"{error}; attempt {f.attempts + 1} due in {next_at - now:.0f} s",
                error=error,
                next_at=next_at,
            )

    async def answered(
        self, followup_id: int, outcome: Outcome, *, now: float, detail: str = ""
    ) -> Followup:
        """The survey call is over: the citizen's answer (or NO_ANSWER when
        they answered the phone but not the question)."""
        outcome = Outcome(outcome)
        _check_time("now", now)
        async with self._db.transaction() as tx:
            f = await _require(tx, followup_id)
            if f.state is FollowupState.CANCELLED:
                return f
            if f.state is not FollowupState.CONNECTED:
                raise FollowupStateError(
                    f"follow-up {followup_id} is {f.state}, not connected: only an answered "
                    "follow-up call has a survey answer"
                )
            text = detail or (
                f"answered {outcome.value}" if outcome.answered else "no answer to the survey"
            )
            return await _set_state(
                tx,
                f,
                FollowupState.DONE,
                now,
                text,
                outcome=outcome,
                answered_at=now if outcome.answered else None,
            )

    async def add_comment(self, followup_id: int, comment: str, *, now: float) -> Followup:
        """The citizen's spoken comment, as transcribed."""
        _check_time("now", now)
        async with self._db.transaction() as tx:
            f = await _require(tx, followup_id)
            await tx.execute(
                "UPDATE followups SET comment = ?, updated_at = ? WHERE id = ?",
                (comment, now, followup_id),
            )
            await _event(tx, f.id, now, f.state, f.state, f"comment: {comment}")
            return await _require(tx, followup_id)

    async def recover(self, *, now: float, node: str | None = None) -> int:
        """Follow-ups a dead process left ``dialing`` or ``connected`` go back to
        ``pending``, due at once (those ``node`` claimed; None: every one)."""
        _check_time("now", now)
        which = ""
        if node is not None:  # one's own (and unnamed ones); a lost node's: only its
            which = " AND (lease_node = ? OR lease_node IS NULL)"
            if node != self.node:
                which = " AND lease_node = ?"
        params: tuple[object, ...] = (FollowupState.DIALING.value, FollowupState.CONNECTED.value)
        if node is not None:
            params += (node,)
        async with self._db.transaction() as tx:
            await tx.lock("followups.claim")
            rows = await tx.fetch_all(f"{_SELECT} WHERE state IN (?, ?){which} ORDER BY id", params)
            for f in (_followup(r) for r in rows):
                detail = RECOVERED
                if node is not None and node != self.node:
                    detail = f"taken back from lost node {node}"
                await _set_state(tx, f, FollowupState.PENDING, now, detail, next_at=now)
            return len(rows)

    async def take_back_lost(self, *, now: float) -> int:
        """Follow-ups a node the cluster took for lost (``nodes.state`` 'lost',
        ivr/lost_nodes.py) was dialling or in a call with: due again, here."""
        rows = await self._db.fetch_all(
            "SELECT DISTINCT f.lease_node FROM followups AS f "
            "JOIN nodes AS n ON n.node_id = f.lease_node "
            "WHERE f.state IN (?, ?) AND n.state = 'lost'",
            (FollowupState.DIALING.value, FollowupState.CONNECTED.value),
        )
        taken = 0
        for row in rows:
            if str(row[0]) != self.node:
                taken += await self.recover(now=now, node=str(row[0]))
        return taken

    # ------------------------------------------------------------ admin

    async def cancel(self, followup_id: int, reason: str, *, now: float) -> Followup:
        """Cancel an open follow-up that is not in its call (a dial in progress
        ends as cancelled: the dialler hangs up if it is answered)."""
        reason = reason.strip()
        if not reason:
            raise ValueError("say why the follow-up is cancelled (reason must not be empty)")
        _check_time("now", now)
        async with self._db.transaction() as tx:
            f = await _require(tx, followup_id)
            if not f.state.is_open or f.state is FollowupState.CONNECTED:
                raise FollowupStateError(
                    f"follow-up {followup_id} is {f.state}: only a pending, dialing, "
                    "no_answer or busy follow-up can be cancelled"
                )
            return await _set_state(tx, f, FollowupState.CANCELLED, now, reason)

    async def rerun(self, followup_id: int, *, now: float, who: str = "admin") -> Followup:
        """Run a follow-up again from its first attempt (its answer, if any,
        is cleared; the earlier attempts stay in its history).  Due now, or at
        the end of quiet hours."""
        _check_time("now", now)
        async with self._db.transaction() as tx:
            f = await _require(tx, followup_id)
            if f.state in (FollowupState.DIALING, FollowupState.CONNECTED):
                raise FollowupStateError(
                    f"follow-up {followup_id} is {f.state}: wait for the call in progress"
                )
            if not f.number:
                raise FollowupStateError(f"follow-up {followup_id}: {NO_NUMBER}")
            if not f.state.is_open:
                other = await tx.fetch_one(
                    f"SELECT id FROM followups WHERE ticket_id = ? AND state IN {_OPEN}",
                    (f.ticket_id,),
                )
                if other is not None:
                    raise FollowupStateError(
                        f"follow-up {followup_id}: ticket {f.ticket_id} already has open "
                        f"follow-up {other[0]}"
                    )
            next_at = self.policy.schedule(now, urgent=False)
            await tx.execute(
                "UPDATE followups SET state = ?, attempts = 0, outcome = NULL, comment = NULL, "
                "answered_at = NULL, next_at = ?, updated_at = ? WHERE id = ?",
                (FollowupState.PENDING.value, next_at, now, f.id),
            )
            await _event(
                tx,
                f.id,
                now,
                f.state,
                FollowupState.PENDING,
                f"re-run by {who} (after {f.attempts} attempts"
                + (f", outcome {f.outcome.value})" if f.outcome else ")"),
            )
            return await _require(tx, f.id)

    async def get(self, followup_id: int) -> Followup | None:
        row = await self._db.fetch_one(f"{_SELECT} WHERE id = ?", (followup_id,))
        return _followup(row) if row is not None else None

    async def list(
        self,
        states: Iterable[FollowupState | str] | None = None,
        *,
        ticket_id: int | None = None,
        outcome: Outcome | str | None = None,
        limit: int = 100,
    ) -> builtins.list[Followup]:
        """Follow-ups, open ones first (soonest due), then the others newest first."""
        if not 0 <= limit <= MAX_LIST:
            raise ValueError(f"limit must be 0..{MAX_LIST}, got {limit}")
        where: builtins.list[str] = []
        params: builtins.list[object] = []
        if states is not None:
            wanted = sorted({FollowupState(s) for s in states})
            if not wanted:
                return []
            where.append(f"state IN ({', '.join('?' for _ in wanted)})")
            params.extend(s.value for s in wanted)
        if ticket_id is not None:
            where.append("ticket_id = ?")
            params.append(ticket_id)
        if outcome is not None:
            where.append("outcome = ?")
            params.append(Outcome(outcome).value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        is_open = f"state IN {_OPEN}"
        rows = await self._db.fetch_all(
            f"""{_SELECT}{clause}
            ORDER BY {is_open} DESC, CASE WHEN {is_open} THEN next_at ELSE -updated_at END, id
            LIMIT ?""",
            (*params, limit),
        )
        return [_followup(r) for r in rows]

    async def events(self, followup_id: int) -> builtins.list[FollowupEvent]:
        rows = await self._db.fetch_all(
            "SELECT id, followup_id, at, from_state, to_state, detail FROM followup_events "
            "WHERE followup_id = ? ORDER BY id",
            (followup_id,),
        )
        return [
            FollowupEvent(
                id=int(r[0]),
                followup_id=int(r[1]),
                at=float(r[2]),
                from_state=FollowupState(r[3]) if r[3] is not None else None,
                to_state=FollowupState(r[4]),
                detail=str(r[5]),
            )
            for r in rows
        ]

    async def counts(self) -> dict[str, int]:
        rows = await self._db.fetch_all("SELECT state, COUNT(*) FROM followups GROUP BY state")
        found = {str(r[0]): int(r[1]) for r in rows}
        return {s.value: found.get(s.value, 0) for s in FollowupState}

    async def next_due_at(self) -> float | None:
        row = await self._db.fetch_one(
            f"SELECT MIN(next_at) FROM followups WHERE state IN {_WAITING}"
        )
        return float(row[0]) if row is not None and row[0] is not None else None


# ---------------------------------------------------------------- helpers


def _value(fields: Mapping[str, object], name: str) -> object:
    entry = fields.get(name)
    if isinstance(entry, dict):
        return entry.get("value")
    return None


def _check_time(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"follow-up: {name} must be epoch seconds, got {value!r}")


async def _require(tx: Transaction, followup_id: int) -> Followup:
    row = await tx.fetch_one(f"{_SELECT} WHERE id = ?", (followup_id,))
    if row is None:
        raise FollowupNotFoundError(f"no follow-up with id {followup_id}")
    return _followup(row)


async def _event(
    tx: Transaction,
    followup_id: int,
    at: float,
    from_state: FollowupState | None,
    to_state: FollowupState,
    detail: str,
) -> None:
    await tx.execute(
        "INSERT INTO followup_events (followup_id, at, from_state, to_state, detail) "
        "VALUES (?, ?, ?, ?, ?)",
        (followup_id, at, from_state.value if from_state else None, to_state.value, detail),
    )


async def _set_state(
    tx: Transaction,
    f: Followup,
    state: FollowupState,
    now: float,
    detail: str,
    *,
    error: str | None = None,
    next_at: float | None = None,
    outcome: Outcome | None = None,
    answered_at: float | None = None,
) -> Followup:
    await tx.execute(
        """
        UPDATE followups SET state = ?, updated_at = ?,
            last_error = COALESCE(?, last_error), next_at = COALESCE(?, next_at),
            outcome = COALESCE(?, outcome), answered_at = COALESCE(?, answered_at)
        WHERE id = ?
        """,
        (
            state.value,
            now,
            error,
            next_at,
            outcome.value if outcome is not None else None,
            answered_at,
            f.id,
        ),
    )
    await _event(tx, f.id, now, f.state, state, detail)
    return await _require(tx, f.id)


def _followup(row: Row) -> Followup:
    v = dict(zip(_COLUMNS, tuple(row), strict=True))
    return Followup(
        id=int(v["id"]),
        ticket_id=int(v["ticket_id"]),
        number=str(v["number"]),
        dialect=str(v["dialect"]) if v["dialect"] is not None else None,
        speed=float(v["speed"]),
        state=FollowupState(v["state"]),
        attempts=int(v["attempts"]),
        next_at=float(v["next_at"]),
        lease_node=str(v["lease_node"]) if v["lease_node"] is not None else None,
        outcome=Outcome(v["outcome"]) if v["outcome"] is not None else None,
        comment=str(v["comment"]) if v["comment"] is not None else None,
        last_error=str(v["last_error"]) if v["last_error"] is not None else None,
        closed_at=float(v["closed_at"]),
        answered_at=float(v["answered_at"]) if v["answered_at"] is not None else None,
        created_at=float(v["created_at"]),
        updated_at=float(v["updated_at"]),
    )


def fields_of(text: str) -> dict[str, object]:
    """A ticket's fields column (JSON text) as a dict ({} when unreadable)."""
    try:
        loaded = json.loads(text)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}
