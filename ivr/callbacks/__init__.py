"""Dropped-call callbacks: which calls are called back (detection), when
(policy), and the persistent queue the dialer takes them from.

    queue = CallbackQueue(db, CallbackPolicy(quiet_hours=("22:00", "07:00")))
    reason = should_call_back(record, no_callback=False, started_greeting=True)
    if reason is not None:
        await queue.request(record.caller, call_id=record.call_id, reason=reason, now=now)
    for callback in await queue.claim_due(now=now, free_operators=free):
        ...  # dial it, then queue.outcome(callback.id, CallbackState.CONNECTED, now=...)
"""

from ivr.callbacks.detection import should_call_back
from ivr.callbacks.model import (
    AttemptResult,
    Callback,
    CallbackEvent,
    CallbackReason,
    CallbackState,
    OriginalPlace,
)
from ivr.callbacks.policy import CallbackPolicy
from ivr.callbacks.queue import (
    CallbackError,
    CallbackNotFoundError,
    CallbackQueue,
    CallbackStateError,
)

__all__ = [
    "AttemptResult",
    "Callback",
    "CallbackError",
    "CallbackEvent",
    "CallbackNotFoundError",
    "CallbackPolicy",
    "CallbackQueue",
    "CallbackReason",
    "CallbackState",
    "CallbackStateError",
    "OriginalPlace",
    "should_call_back",
]
