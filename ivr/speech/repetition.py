"""Is a transcript a recogniser's loop rather than what was said?

Whisper base, stuck, writes the same thing until its token limit: one digit
(``4,3,2,1,1,1,0,0,0,0,0...``), one phrase (我的名字叫马龙 forty times), or a
few words in a near-identical cycle.  ``unreliable_reason`` says why a text
looks like that, or None for a text that reads like speech.  It looks at
units: each Chinese character, digit or other letter is one unit, a run of
Latin letters is one word; spaces and punctuation only separate.

Four signs, any one is enough (the figures leave room above what callers
really say: tests/test_transcript_reliability.py checks that no real
transcript, in ../shared/speech or tests/data/hotline_utterances.tsv, is
flagged):

- one unit 12 times or more in a row: more than any phone number holds (an
  11-digit mobile number has at most ten of one digit, 18888888888); people
  say 喂喂喂 or 九九九九, not twelve;
- a phrase of 2 to 40 units said again and again with nothing between:
  4 times in a row or more, the repeats together 16 units or more (a frightened
  caller's 救命救命救命 or 快来人啊快来人啊快来人啊, a number said twice, stay under it);
- few distinct units for the length: at least 30 units of which under a quarter
  are different (speech of 30 units has half or more different);
- zlib compresses the text more than 2.4 times (Whisper's own loop threshold;
  a loop with small changes from one turn to the next, which the second sign
  misses, still compresses like a loop).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

SAME_UNIT_RUN = 12  # one unit this many times in a row
PHRASE_REPEATS = 4  # a phrase this many times in a row...
PHRASE_SPAN = 16  # ...covering at least this many units
LONGEST_PHRASE = 40  # units; Whisper's loops are a sentence or shorter
DIVERSITY_MIN_UNITS = 30
DIVERSITY_RATIO = 0.25  # distinct units / units below this: a loop
COMPRESSION_RATIO = 2.4  # Whisper's compression_ratio_threshold

_UNIT = re.compile(r"[A-Za-z]+|[^\W_]")


def units(text: str) -> list[str]:
    """The text as units: a Latin word (lower case), or one other letter,
    Chinese character or digit; everything else dropped."""
    return [u.lower() for u in _UNIT.findall(text)]


def compression_ratio(text: str) -> float:
    """How much zlib shrinks ``text`` (UTF-8): a loop of one sentence
    shrinks far more than speech does."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def longest_tandem(seq: Sequence[str], period: int) -> tuple[int, int]:
    """The longest stretch of ``seq`` that repeats with ``period``: (start,
    number of whole repeats); (0, 1) when nothing repeats."""
    best_start, best_repeats = 0, 1
    run = 0  # how many units so far equal the one ``period`` before
    for i in range(period, len(seq)):
        run = run + 1 if seq[i] == seq[i - period] else 0
        repeats = 1 + (run // period)
        if repeats > best_repeats:
            best_repeats = repeats
            best_start = i - run - period + 1
    return best_start, best_repeats


def unreliable_reason(text: str) -> str | None:
    """Why ``text`` reads as a recogniser's loop, or None if it reads as speech."""
    seq = units(text)
    if not seq:
        return None
    start, repeats = longest_tandem(seq, 1)
    if repeats >= SAME_UNIT_RUN:
        return f"「{seq[start]}」 {repeats} times in a row"
    for period in range(2, min(LONGEST_PHRASE, len(seq) // PHRASE_REPEATS) + 1):
        start, repeats = longest_tandem(seq, period)
        if repeats >= PHRASE_REPEATS and repeats * period >= PHRASE_SPAN:
            phrase = "".join(seq[start : start + period])
            return f"「{phrase}」 {repeats} times in a row"
    if len(seq) >= DIVERSITY_MIN_UNITS:
        distinct = len(set(seq))
        if distinct / len(seq) < DIVERSITY_RATIO:
            return f"{distinct} different characters in {len(seq)}"
    ratio = compression_ratio(text)
    if ratio > COMPRESSION_RATIO:
        return f"repeats itself (compresses {ratio:.1f} times)"
    return None


def loopiness(text: str) -> tuple[bool, float]:
    """For choosing between two decodes of one utterance: the one that is
    not flagged, then the one that compresses less, is the better."""
    return unreliable_reason(text) is not None, compression_ratio(text)
