"""Which finished calls get called back, read from the call record."""

from __future__ import annotations

from ivr.call import EndReason
from ivr.call_records import CallRecord
from ivr.callbacks.model import CallbackReason

ABANDONED = "abandoned"  # outcome: hung up while waiting for an operator
OPERATOR_FAILED = "operator_failed"  # outcome: the operator's leg failed mid-conversation

# End reasons that mean the line broke rather than someone hanging up.  SIP
# 408/481/503 inside the dialog arrive here as transport_error.
ABNORMAL_ENDS = frozenset({EndReason.RTP_TIMEOUT.value, EndReason.TRANSPORT_ERROR.value})

# Caller ids that cannot be dialled back.
WITHHELD_NUMBERS = frozenset({"anonymous", "unknown", "restricted", "private", "unavailable"})


def should_call_back(
    record: CallRecord, *, no_callback: bool, started_greeting: bool
) -> CallbackReason | None:
    """Why this finished call should be called back, or None.

    ``no_callback``: the caller said they want no callback.
    ``started_greeting``: the greeting had begun (a call with two or more
    dial-plan nodes in its path is past the greeting anyway).
    """
    if no_callback or not can_dial(record.caller):
        return None
    if record.outcome == OPERATOR_FAILED:
        return CallbackReason.OPERATOR_FAILED
    if record.outcome == ABANDONED:
        return CallbackReason.ABANDONED
    past_greeting = started_greeting or len(record.path) >= 2
    if record.end_reason in ABNORMAL_ENDS and past_greeting:
        return CallbackReason.DROPPED
    return None


def can_dial(number: str) -> bool:
    """False for an empty or withheld caller id."""
    text = number.strip()
    return bool(text) and text.lower() not in WITHHELD_NUMBERS
