"""The ticket's needs_counsellor flag (心理援助): set by the prefill when words
of distress are heard (with those words as its evidence), or by an operator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIELD = "needs_counsellor"
# what an operator may give for the flag (the console sends "true" / "false")
YES = frozenset({"true", "1", "yes", "是", "需要"})
NO = frozenset({"false", "0", "no", "否", "不需要"})


def flag_value(text: str) -> bool | None:
    """An operator's value for the flag: True, False, or None (neither a yes nor a no)."""
    word = text.strip().lower()
    return True if word in YES else False if word in NO else None


def flagged(fields: Mapping[str, Any]) -> bool:
    """Whether a ticket's fields say the caller needs a counsellor."""
    entry = fields.get(FIELD)
    value = entry.get("value") if isinstance(entry, dict) else None
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and flag_value(value) is True


def why(fields: Mapping[str, Any]) -> str | None:
    """What the screen says of the flag: the words of distress heard, or who
    flagged it; None when the ticket is not flagged."""
    if not flagged(fields):
        return None
    entry = fields[FIELD]
    evidence = entry.get("evidence") or []
    words = [str(e.get("text", "")) for e in evidence if isinstance(e, dict)]
    words = [w for w in dict.fromkeys(words) if w]
    if words:
        return "来电人说了" + "".join(f"「{w}」" for w in words)
    if entry.get("source") == "operator":
        return "坐席标记需心理援助"
    return "需心理援助"
