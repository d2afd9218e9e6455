"""Follow-up calls (回访): every closed ticket is called back with a short
survey (满意 / 基本满意 / 不满意) — the queue, its dialler, the survey node
and the dashboard's figures.

    queue = FollowupQueue(db, CallbackPolicy(...), node="node-1")
    tickets.on_closed = queue.ticket_closed   # queued in the closing transaction
    for followup in await queue.claim_due(now=now):
        ...  # dial; queue.outcome(...); the survey; queue.answered(...)
"""

from ivr.followups.model import (
    ANSWERS,
    KEYS,
    Followup,
    FollowupEvent,
    FollowupState,
    Outcome,
)
from ivr.followups.queue import (
    FollowupError,
    FollowupNotFoundError,
    FollowupQueue,
    FollowupStateError,
    number_to_dial,
)

__all__ = [
    "ANSWERS",
    "KEYS",
    "Followup",
    "FollowupError",
    "FollowupEvent",
    "FollowupNotFoundError",
    "FollowupQueue",
    "FollowupState",
    "FollowupStateError",
    "Outcome",
    "number_to_dial",
]
