"""Finding the hotline's set phrases in a transcript (shared by the
urgency, sentiment, emergency and distress rules)."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Words that, just before a phrase, say it is not happening ("没有着火",
# "不是漏气", "差点打起来", "预防火灾").
NEGATIONS = ("没有", "没", "不是", "并非", "并没有", "防止", "预防", "以防", "差点", "险些", "避免")
NEGATION_WINDOW = 4

Span = tuple[int, int]


def alternation(words: Iterable[str], *, literal: bool = True) -> re.Pattern[str]:
    """One pattern matching any of ``words``, longest first so that the longer
    phrase wins where two start at the same place.  With ``literal=False`` the
    words are regular expressions (written in code, never read from data)."""
    items = sorted(set(words), key=len, reverse=True)
    if not items:
        return re.compile(r"(?!x)x")
    body = "|".join(re.escape(w) if literal else f"(?:{w})" for w in items)
    return re.compile(body)


# Questions of suspicion are not denials: 是不是中风了, 有没有漏气.
SUSPICIONS = ("是不是", "有没有")


def negated(text: str, start: int) -> bool:
    before = text[max(0, start - NEGATION_WINDOW) : start]
    for suspicion in SUSPICIONS:
        before = before.replace(suspicion, "")
    return any(n in before for n in NEGATIONS)


def find(text: str, pattern: re.Pattern[str], *, skip_negated: bool = False) -> list[Span]:
    """Every (start, end) where ``pattern`` matches, left to right."""
    found: list[Span] = []
    for m in pattern.finditer(text):
        if m.end() == m.start():
            continue
        if skip_negated and negated(text, m.start()):
            continue
        found.append((m.start(), m.end()))
    return found


def quote(text: str, found: list[Span], limit: int = 3) -> str:
    """The words found, for a human-readable reason: 「停水」「好几天」."""
    seen: list[str] = []
    for s, e in found:
        word = text[s:e]
        if word not in seen:
            seen.append(word)
    return "".join(f"「{w}」" for w in seen[:limit])
