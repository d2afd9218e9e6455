"""Spoken menu options: which option's words does a transcript contain?

Recognisers get short Mandarin words wrong in predictable ways: a near
homophone in other characters (粤语 -> 越语, 人工 -> 人公), a tone off, or a
southern accent's merged initials and finals (zh/z, ch/c, sh/s, n/l, f/h,
-ng/-n).  So words are compared as toneless pinyin syllables with those
pairs folded together; an exact character match wins over a sound match, a
longer word over a shorter one, and two options that match equally well
are ambiguous (no choice is made: the caller is asked again).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pypinyin import Style, lazy_pinyin

_INITIAL_FOLDS = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("n", "l"), ("f", "h"), ("r", "l"))
_FINAL_FOLDS = (("ang", "an"), ("eng", "en"), ("ing", "in"), ("iang", "ian"), ("uang", "uan"))
_NOT_SPEECH = re.compile(r"[\s\W_]+", re.UNICODE)


def fold(syllable: str) -> str:
    """A toneless pinyin syllable with accent-merged sounds folded together."""
    s = syllable.lower()
    for long, short in _INITIAL_FOLDS:
        if s.startswith(long):
            s = short + s[len(long) :]
            break
    for long, short in _FINAL_FOLDS:
        if s.endswith(long):
            s = s[: -len(long)] + short
            break
    return s


def sounds(text: str) -> tuple[str, ...]:
    """The folded syllables of ``text`` (Latin letters and digits kept as words)."""
    clean = _NOT_SPEECH.sub("", text)
    return tuple(fold(s) for s in lazy_pinyin(clean, style=Style.NORMAL, errors="default"))


@dataclass(frozen=True)
class OptionMatch:
    key: str
    word: str
    exact: bool  # the characters themselves, not only the sound


def _contains(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    n = len(needle)
    if n == 0 or n > len(haystack):
        return False
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def match_option(transcript: str, words_by_key: Mapping[str, Sequence[str]]) -> OptionMatch | None:
    """The option whose words the transcript says, or None (nothing or ambiguous)."""
    text = _NOT_SPEECH.sub("", transcript)
    if not text:
        return None
    heard = sounds(text)
    best: tuple[tuple[int, int], OptionMatch] | None = None
    tied = False
    for key, words in words_by_key.items():
        for word in words:
            clean = _NOT_SPEECH.sub("", word)
            if not clean:
                continue
            if clean in text:
                score = (2, len(clean))
                found = OptionMatch(key, word, exact=True)
            elif _contains(heard, sounds(clean)):
                score = (1, len(clean))
                found = OptionMatch(key, word, exact=False)
            else:
                continue
            if best is None or score > best[0]:
                best, tied = (score, found), False
            elif score == best[0] and found.key != best[1].key:
                tied = True
    if best is None or tied:
        return None
    return best[1]
