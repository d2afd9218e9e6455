"""What a callback is: its states, why it was asked for, its priority, and the
plain records the queue hands out (JSON-ready for the CLI and the web API)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ivr.prefill.urgency import NORMAL, SOON, URGENT

URGENCIES = (URGENT, SOON, NORMAL)  # 紧急, 较急, 一般: the ticket's urgency field


class CallbackState(enum.StrEnum):
    PENDING = "pending"  # waiting for its first (or a recovered / manual) attempt
    DIALING = "dialing"  # claimed by a dialer; the INVITE is out
    CONNECTED = "connected"  # the caller answered; with (or queued for) an operator
    NO_ANSWER = "no_answer"  # the last attempt rang out; waiting for the next one
    BUSY = "busy"  # the last attempt found the line busy; waiting for the next one
    FAILED = "failed"  # gave up: every attempt used (the ticket is flagged)
    CANCELLED = "cancelled"  # the caller dialled in again, or someone cancelled it
    DONE = "done"  # the callback call is over

    @property
    def is_open(self) -> bool:
        """Open callbacks hold the number's one slot (the partial unique index)."""
        return self in OPEN_STATES

    @property
    def is_waiting(self) -> bool:
        """Waiting to be dialled at ``next_at``."""
        return self in WAITING_STATES


OPEN_STATES = frozenset(
    {
        CallbackState.PENDING,
        CallbackState.DIALING,
        CallbackState.CONNECTED,
        CallbackState.NO_ANSWER,
        CallbackState.BUSY,
    }
)
WAITING_STATES = frozenset({CallbackState.PENDING, CallbackState.NO_ANSWER, CallbackState.BUSY})


class CallbackReason(enum.StrEnum):
    ABANDONED = "abandoned"  # hung up while waiting for an operator
    DROPPED = "dropped"  # the call dropped abnormally after the greeting
    OPERATOR_FAILED = "operator_failed"  # the operator's leg failed mid-conversation


def is_urgent(urgency: str | None, emergency: bool) -> bool:
    """Emergencies and 紧急 tickets are dialled first and even in quiet hours."""
    return emergency or urgency == URGENT


def priority(urgency: str | None, emergency: bool, elderly: bool) -> int:
    """Smaller is dialled sooner: emergency, 紧急, 较急, then the rest; within
    each of those, elderly callers first.  An unknown urgency counts as 一般."""
    if emergency:
        tier = 0
    elif urgency == URGENT:
        tier = 1
    elif urgency == SOON:
        tier = 2
    else:
        tier = 3
    return tier * 2 + (0 if elderly else 1)


def more_urgent(a: str | None, b: str | None) -> str | None:
    """The more urgent of two ticket urgencies (None = not known)."""
    known = [u for u in (a, b) if u is not None]
    return min(known, key=URGENCIES.index) if known else None


@dataclass(frozen=True)
class OriginalPlace:
    """Where the caller stood in line on the call that was dropped: a new call
    from them keeps this place."""

    callback_id: int
    enqueued_at: float | None  # epoch seconds they joined the operator queue (None: never queued)
    position: int | None  # their position in that queue (1 = next), if known
    ticket_id: int | None
    call_id: str  # the first dropped call

    def to_json(self) -> dict[str, object]:
        return {
            "callback_id": self.callback_id,
            "enqueued_at": self.enqueued_at,
            "position": self.position,
            "ticket_id": self.ticket_id,
            "call_id": self.call_id,
        }


@dataclass(frozen=True)
class Callback:
    id: int
    number: str  # the caller's number, as it came in (From user part)
    call_id: str  # the latest dropped call
    first_call_id: str  # the call that first asked for this callback
    ticket_id: int | None
    reason: CallbackReason
    state: CallbackState
    priority: int  # see priority(); smaller first
    elderly: bool
    emergency: bool
    urgency: str | None  # 紧急 / 较急 / 一般, or None
    original_enqueued_at: float | None
    original_position: int | None
    attempts: int  # dial attempts made so far
    next_at: float  # epoch seconds it is due (meaningful while waiting)
    last_error: str | None
    created_at: float
    updated_at: float

    @property
    def urgent(self) -> bool:
        return is_urgent(self.urgency, self.emergency)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "number": self.number,
            "call_id": self.call_id,
            "first_call_id": self.first_call_id,
            "ticket_id": self.ticket_id,
            "reason": self.reason.value,
            "state": self.state.value,
            "priority": self.priority,
            "elderly": self.elderly,
            "emergency": self.emergency,
            "urgency": self.urgency,
            "original_enqueued_at": self.original_enqueued_at,
            "original_position": self.original_position,
            "attempts": self.attempts,
            "next_at": self.next_at,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class CallbackEvent:
    """One recorded transition (from_state None: the callback was created;
    from_state == to_state: a change without a new state, e.g. a merged drop)."""

    id: int
    callback_id: int
    at: float
    from_state: CallbackState | None
    to_state: CallbackState
    detail: str

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "callback_id": self.callback_id,
            "at": self.at,
            "from_state": self.from_state.value if self.from_state is not None else None,
            "to_state": self.to_state.value,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class AttemptResult:
    """What ``CallbackQueue.outcome`` did with a dial attempt."""

    callback: Callback  # as it is now
    gave_up: bool  # every attempt used: the callback is failed
    ticket_to_flag: int | None  # gave up and it has a ticket: flag that ticket

    def to_json(self) -> dict[str, object]:
        return {
            "callback": self.callback.to_json(),
            "gave_up": self.gave_up,
            "ticket_to_flag": self.ticket_to_flag,
        }
