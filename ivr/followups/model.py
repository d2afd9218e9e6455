"""What a follow-up call (回访) is: its states, the citizen's answer, and the
plain records the queue hands out (JSON-ready for the CLI and the web API)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FollowupState(enum.StrEnum):
    PENDING = "pending"  # waiting for its first attempt (or a re-run / recovered one)
    DIALING = "dialing"  # claimed by a node's dialler; the INVITE is out
    CONNECTED = "connected"  # answered: the survey is being asked
    NO_ANSWER = "no_answer"  # the last attempt rang out; waiting for the next one
    BUSY = "busy"  # the last attempt found the line busy; waiting for the next one
    DONE = "done"  # over: ``outcome`` says how (an answer, or no_answer)
    CANCELLED = "cancelled"  # an admin cancelled it

    @property
    def is_open(self) -> bool:
        """Open follow-ups hold the ticket's one slot (the partial unique index)."""
        return self in OPEN_STATES

    @property
    def is_waiting(self) -> bool:
        return self in WAITING_STATES


OPEN_STATES = frozenset(
    {
        FollowupState.PENDING,
        FollowupState.DIALING,
        FollowupState.CONNECTED,
        FollowupState.NO_ANSWER,
        FollowupState.BUSY,
    }
)
WAITING_STATES = frozenset({FollowupState.PENDING, FollowupState.NO_ANSWER, FollowupState.BUSY})


class Outcome(enum.StrEnum):
    SATISFIED = "满意"
    BASICALLY = "基本满意"
    UNSATISFIED = "不满意"
    NO_ANSWER = "no_answer"  # never answered within the retries, or gave no answer

    @property
    def answered(self) -> bool:
        return self is not Outcome.NO_ANSWER


ANSWERS = (Outcome.SATISFIED, Outcome.BASICALLY, Outcome.UNSATISFIED)
KEYS = {"1": Outcome.SATISFIED, "2": Outcome.BASICALLY, "3": Outcome.UNSATISFIED}


@dataclass(frozen=True)
class Followup:
    id: int
    ticket_id: int
    number: str  # whom we dial: the caller, or the beneficiary of a proxy ticket
    dialect: str | None  # remembered for that number when the ticket was closed
    speed: float
    state: FollowupState
    attempts: int
    next_at: float
    lease_node: str | None
    outcome: Outcome | None
    comment: str | None
    last_error: str | None
    closed_at: float
    answered_at: float | None
    created_at: float
    updated_at: float

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "ticket_id": self.ticket_id,
            "number": self.number,
            "dialect": self.dialect,
            "speed": self.speed,
            "state": self.state.value,
            "attempts": self.attempts,
            "next_at": self.next_at,
            "lease_node": self.lease_node,
            "outcome": self.outcome.value if self.outcome is not None else None,
            "comment": self.comment,
            "last_error": self.last_error,
            "closed_at": self.closed_at,
            "answered_at": self.answered_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class FollowupEvent:
    id: int
    followup_id: int
    at: float
    from_state: FollowupState | None
    to_state: FollowupState
    detail: str

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "followup_id": self.followup_id,
            "at": self.at,
            "from_state": self.from_state.value if self.from_state is not None else None,
            "to_state": self.to_state.value,
            "detail": self.detail,
        }
