"""The callback number (回拨电话): read out by the caller, else the caller ID.

A number is read digit by digit, in Arabic digits or Chinese (幺 for 1,
洞 for 0, 两 for 2), in groups with spaces or dashes between: 138 1234 5678,
0571-87654321, 零五七幺 八七六五 四三二幺.  Valid callback numbers are
mobiles (11 digits, 1[3-9]...), landlines with an area code (0 + 2-3 digit
code + 7-8 digits) and, after a phone cue, a local landline (7-8 digits, the
deployment's area code put in front).  12345, 110 and the like are too short
to be taken."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ivr.prefill.chinese_numbers import DIGIT_VALUES, digit_string
from ivr.prefill.fields import CALLER_ID, SPEECH, Evidence, FieldValue

SEPARATORS = frozenset(" \t-‐–—－·.，,、")
CUES = ("电话", "手机", "号码", "联系方式", "联系", "打这个", "回电", "拨打", "致电")
CUE_REACH = 12
MAX_DIGITS = 13  # +86 and a mobile  # characters between the end of a cue and the number
# A number followed by one of these is a quantity or part of an address.
NOT_AFTER = frozenset("元块号路栋幢单室楼岁年月日点分万千百个次平米斤公")

_MOBILE = re.compile(r"1[3-9]\d{9}")
_LANDLINE = re.compile(r"0(?:10|2\d)\d{8}|0[3-9]\d{2}\d{7,8}")
_LOCAL = re.compile(r"[2-9]\d{6,7}")


# What a recogniser writes for 幺 (yao1) when a number is read out digit by
# digit: homophones, and 有 (measured: Whisper base heard espeak-ng's
# "yao1. san1. ba1." as 有三八).  Taken as 1 only next to another digit.
ONE_SOUNDALIKES = frozenset("要腰妖邀有")


@dataclass(frozen=True)
class _Digit:
    value: str
    pos: int


def _runs(text: str) -> list[list[list[_Digit]]]:
    """Runs of digits, each a list of groups (split where a separator was)."""
    runs: list[list[list[_Digit]]] = []
    groups: list[list[_Digit]] = []
    group: list[_Digit] = []
    pending_sep = False
    for i, c in enumerate(text):
        soundalike = c in ONE_SOUNDALIKES and (bool(group) or _digit_follows(text, i + 1))
        if c in DIGIT_VALUES or soundalike:
            if pending_sep and group:
                groups.append(group)
                group = []
            pending_sep = False
            group.append(_Digit("1" if soundalike else str(DIGIT_VALUES[c]), i))
        elif c in SEPARATORS and (group or groups):
            pending_sep = True
        elif c == "+" and not group:
            continue
        else:
            if group:
                groups.append(group)
            if groups:
                runs.append(groups)
            groups, group, pending_sep = [], [], False
    if group:
        groups.append(group)
    if groups:
        runs.append(groups)
    return runs


def _digit_follows(text: str, start: int) -> bool:
    for c in text[start : start + 3]:
        if c in DIGIT_VALUES:
            return True
        if c not in SEPARATORS:
            return False
    return False


def _kind(digits: str, cued: bool) -> str | None:
    if len(digits) == 13 and digits.startswith("86") and _MOBILE.fullmatch(digits[2:]):
        return "mobile86"
    if _MOBILE.fullmatch(digits):
        return "mobile"
    if _LANDLINE.fullmatch(digits):
        return "landline"
    if cued and _LOCAL.fullmatch(digits):
        return "local"
    return None


def _cued(text: str, start: int) -> bool:
    before = text[max(0, start - CUE_REACH - 4) : start]
    return any(cue in before for cue in CUES)


@dataclass(frozen=True)
class _Candidate:
    digits: str
    start: int
    end: int
    cued: bool
    heard: str  # the digits as said (without an area code put in front)


def _candidate(text: str, flat: list[_Digit], area_code: str | None) -> _Candidate | None:
    heard = "".join(d.value for d in flat)
    start, end = flat[0].pos, flat[-1].pos + 1
    if end < len(text) and text[end] in NOT_AFTER:
        return None
    cued = _cued(text, start)
    kind = _kind(heard, cued)
    if kind is None:
        return None
    digits = heard
    if kind == "mobile86":
        digits = heard[2:]
    elif kind == "local":
        digits = (area_code or "") + heard
    return _Candidate(digits, start, end, cued, heard)


def _candidates(text: str, area_code: str | None) -> list[_Candidate]:
    found: list[_Candidate] = []
    for groups in _runs(text):
        best: _Candidate | None = None
        best_heard = 0  # digits heard (before an area code is put in front)
        n = len(groups)
        # the longest contiguous stretch of groups that makes a valid number
        for i in range(n):
            flat: list[_Digit] = []
            valid: _Candidate | None = None
            for j in range(i, n):
                flat += groups[j]
                if len(flat) > MAX_DIGITS:
                    break
                got = _candidate(text, flat, area_code)
                if got is not None:
                    valid = got
            if valid is not None and len(valid.heard) > best_heard:
                best, best_heard = valid, len(valid.heard)
        if best is not None:
            found.append(best)
    return found


def spoken_phone(text: str, area_code: str | None = None) -> FieldValue | None:
    """The number the caller read out: the first one after a phone cue
    (电话是, 手机号, 联系方式 ...), else the first valid one."""
    found = _candidates(text, area_code)
    if not found:
        return None
    chosen = next((c for c in found if c.cued), found[0])
    return FieldValue(chosen.digits, (Evidence.of(text, chosen.start, chosen.end),), SPEECH)


def caller_id_phone(caller_id: str | None) -> FieldValue | None:
    """The caller ID as a callback number when it looks like one: 7-12
    digits once a +86 / 86 / 0086 country prefix is taken off."""
    if not caller_id:
        return None
    raw = caller_id.strip()
    if raw.lower().startswith("sip:"):
        raw = raw[4:].split("@", 1)[0]
    digits = digit_string(raw)
    if len(digits) != len(re.sub(r"[\s\-+()]", "", raw)):
        return None  # letters or other characters: not a telephone number
    if digits.startswith("0086"):
        digits = digits[4:]
    elif len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    if not 7 <= len(digits) <= 12:
        return None
    return FieldValue(digits, (), CALLER_ID)
