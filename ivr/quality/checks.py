"""The automatic checks of quality inspection (双重质检), on one conversation
recording (ivr/conversation_recorder.py: a stereo WAV, left the caller, right
the operator, in step with the clock).

From the audio alone (numpy, 20 ms frames): a frame is speech when its level
is above ``speech_level_db``; gaps under 0.3 s inside a side's speech are
bridged (the pauses between words).

- ``long_silence``: neither side speaks for ``silence_s`` or longer between
  the first and the last words of the conversation;
- ``talk_over``: both sides speak at once for ``talk_over_s`` or longer (抢话;
  a short 嗯 over the other side is not).

From the recogniser's transcript of each side's utterances (cut where the side
pauses for 0.5 s, at most 25 s each):

- ``greeting``: one of ``greeting_words`` in the operator's first two utterances;
- ``closing``: one of ``closing_words`` in the operator's last two;
- ``phone_confirmed``: the operator says the last four digits of a number on
  record for the call (the caller's number, a callback number on its ticket);
- ``end_sentiment``: the caller's last two utterances read by the tickets'
  sentiment rules (ivr/prefill/sentiment.py); 愤怒 or 不满 fails.

Without a recogniser that hears (none loaded, or the scripted one of tests and
trials) those four are recorded as ``not_run`` with the reason; never guessed.
Each result says why, in words a reviewer reads; phone numbers in them are
masked.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from ivr.logs import mask_phone
from ivr.prefill.chinese_numbers import PHONE_DIGIT_CHARS, digit_string
from ivr.prefill.sentiment import ANGRY, DISSATISFIED, sentiment
from ivr.speech import Transcript

RATE = 8000
FRAME = 160  # 20 ms
FRAME_S = FRAME / RATE
BRIDGE_S = 0.3  # a side's pause shorter than this is inside its speech
UTTERANCE_GAP_S = 0.5  # a side's pause this long ends an utterance (for the recogniser)
UTTERANCE_MAX_S = 25.0  # Whisper reads 30 s windows
UTTERANCE_MIN_S = 0.3
PAD_S = 0.15
FIRST_LAST = 2  # utterances read for the greeting, the closing, the caller's end

PASSED, FAILED, NOT_RUN = "passed", "failed", "not_run"
CHECKS = ("greeting", "closing", "phone_confirmed", "long_silence", "talk_over", "end_sentiment")

Pcm = npt.NDArray[np.int16]
Recognise = Callable[[Pcm], Awaitable[Transcript]]


@dataclass(frozen=True)
class CheckSettings:
    silence_s: float
    talk_over_s: float
    speech_level_db: float
    greeting_words: tuple[str, ...]
    closing_words: tuple[str, ...]


@dataclass(frozen=True)
class Span:
    start: float  # seconds from the start of the recording
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def to_json(self) -> list[float]:
        return [round(self.start, 2), round(self.end, 2)]

    def said(self) -> str:
        return f"{clock(self.start)}–{clock(self.end)}"


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60:02d}:{s % 60:02d}"


def result(state: str, reason: str, **more: Any) -> dict[str, Any]:
    return {"state": state, "reason": mask_phone(reason), **more}


# -- the audio -----------------------------------------------------------------
def read_conversation(path: Path) -> tuple[Pcm, Pcm]:
    """(the caller's side, the operator's side) of a conversation recording;
    ValueError saying what is wrong with the file."""
    try:
        data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a readable WAV ({exc})") from exc
    if rate != RATE or data.shape[1] != 2:
        raise ValueError(
            f"{path}: a conversation recording is 8000 Hz stereo, not {rate} Hz "
            f"with {data.shape[1]} channel(s)"
        )
    return np.ascontiguousarray(data[:, 0]), np.ascontiguousarray(data[:, 1])


def frame_levels(pcm: Pcm) -> npt.NDArray[np.float64]:
    """The level of each whole 20 ms frame, dBFS."""
    frames = len(pcm) // FRAME
    x = pcm[: frames * FRAME].astype(np.float64).reshape(frames, FRAME) / 32768.0
    power = np.mean(x * x, axis=1)
    levels: npt.NDArray[np.float64] = 10.0 * np.log10(np.maximum(power, 1e-12))
    return levels


def speaking(pcm: Pcm, level_db: float) -> npt.NDArray[np.bool_]:
    """Per 20 ms frame: this side is speaking (pauses under BRIDGE_S bridged)."""
    active = frame_levels(pcm) > level_db
    return bridge(active, round(BRIDGE_S / FRAME_S))


def bridge(active: npt.NDArray[np.bool_], frames: int) -> npt.NDArray[np.bool_]:
    """``active`` with inner gaps of fewer than ``frames`` frames filled."""
    out = active.copy()
    for start, end in runs(~active):
        if start > 0 and end < len(active) and end - start < frames:
            out[start:end] = True
    return out


def runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    if not len(mask):
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def spans_of(mask: npt.NDArray[np.bool_], at_least_s: float) -> list[Span]:
    return [
        Span(a * FRAME_S, b * FRAME_S)
        for a, b in runs(mask)
        if (b - a) * FRAME_S >= at_least_s - 1e-9
    ]


@dataclass(frozen=True)
class Sides:
    """What the audio says of a conversation (computed in an executor)."""

    seconds: float
    caller: npt.NDArray[np.bool_]
    operator: npt.NDArray[np.bool_]
    caller_utterances: list[Span]
    operator_utterances: list[Span]


def analyse(caller: Pcm, operator: Pcm, level_db: float) -> Sides:
    n = min(len(caller), len(operator))
    left, right = speaking(caller[:n], level_db), speaking(operator[:n], level_db)
    return Sides(n / RATE, left, right, utterances(left), utterances(right))


def utterances(active: npt.NDArray[np.bool_]) -> list[Span]:
    """A side's utterances for the recogniser: speech cut at pauses of
    UTTERANCE_GAP_S, long ones in pieces of at most UTTERANCE_MAX_S."""
    joined = bridge(active, round(UTTERANCE_GAP_S / FRAME_S))
    found: list[Span] = []
    for span in spans_of(joined, UTTERANCE_MIN_S):
        start = span.start
        while start < span.end:
            end = min(span.end, start + UTTERANCE_MAX_S)
            found.append(Span(start, end))
            start = end
    return found


def long_silences(sides: Sides, silence_s: float) -> dict[str, Any]:
    anyone = sides.caller | sides.operator
    spoken = np.flatnonzero(anyone)
    if not len(spoken):
        return result(FAILED, "整段录音无人说话", spans=[])
    inside = np.zeros_like(anyone)
    inside[spoken[0] : spoken[-1] + 1] = True
    found = spans_of(inside & ~anyone, silence_s)
    if not found:
        return result(PASSED, f"无超过 {silence_s:g} 秒的静默", spans=[])
    said = "；".join(f"{s.said()} 双方静默 {s.seconds:.1f} 秒" for s in found)
    return result(FAILED, said, spans=[s.to_json() for s in found])


def talk_overs(sides: Sides, talk_over_s: float) -> dict[str, Any]:
    found = spans_of(sides.caller & sides.operator, talk_over_s)
    if not found:
        return result(PASSED, f"无超过 {talk_over_s:g} 秒的抢话", spans=[])
    said = "；".join(f"{s.said()} 双方同时说话 {s.seconds:.1f} 秒" for s in found)
    return result(FAILED, said, spans=[s.to_json() for s in found])


# -- the words -------------------------------------------------------------------
def cut(pcm: Pcm, span: Span) -> Pcm:
    a = max(0, int((span.start - PAD_S) * RATE))
    b = min(len(pcm), int((span.end + PAD_S) * RATE))
    return pcm[a:b]


async def _heard(recognise: Recognise, pcm: Pcm, spans: Sequence[Span]) -> list[str]:
    texts = []
    for span in spans:
        transcript = await recognise(cut(pcm, span))
        texts.append("" if transcript.unreliable else transcript.text.strip())
    return texts


def _quote(texts: Sequence[str]) -> str:
    joined = "".join(texts)
    return f"「{joined[:60]}{'…' if len(joined) > 60 else ''}」" if joined else "（未听清）"


def words_check(texts: Sequence[str], words: Sequence[str], what: str) -> dict[str, Any]:
    heard = "".join(texts)
    found = [w for w in words if w in heard]
    if found:
        return result(PASSED, f"{what}说了「{found[0]}」：{_quote(texts)}", heard=heard)
    return result(FAILED, f"{what}未听到{'/'.join(words[:4])}：{_quote(texts)}", heard=heard)


_DIGIT_RUN = re.compile(f"[{PHONE_DIGIT_CHARS}](?:[{PHONE_DIGIT_CHARS}]|[\\s,，、.。-])*")


def digit_runs(text: str) -> list[str]:
    """The numbers read out in ``text``, as digit strings (幺三八，1234 -> 1381234)."""
    return [digit_string(m.group()) for m in _DIGIT_RUN.finditer(text)]


def phone_check(operator_texts: Sequence[str], numbers: Sequence[str]) -> dict[str, Any]:
    tails = sorted({d[-4:] for d in (digit_string(n) for n in numbers) if len(d) >= 7})
    if not tails:
        return result(NOT_RUN, "本通话没有可核对的电话号码（主叫号码不全，工单无回拨号码）")
    said = [run for run in digit_runs("".join(operator_texts)) if len(run) >= 4]
    if any(tail in run for run in said for tail in tails):
        return result(PASSED, "坐席复述了来电或回拨号码（尾号相符）")
    if said:
        return result(FAILED, "坐席说的号码与来电、回拨号码的尾号都不符")
    return result(FAILED, "未听到坐席复述电话号码")


def sentiment_check(caller_texts: Sequence[str]) -> dict[str, Any]:
    heard = "".join(caller_texts)
    if not heard:
        return result(NOT_RUN, "结束时未听清来电人的话", value="")
    value = sentiment(heard)
    state = FAILED if value.value in (ANGRY, DISSATISFIED) else PASSED
    words = "、".join(heard[e.start : e.end] for e in value.evidence)
    because = f"（{words}）" if words else ""
    said = f"结束时来电人{value.value}{because}：{_quote(caller_texts)}"
    return result(state, said, value=value.value)


async def run_checks(
    path: Path,
    settings: CheckSettings,
    *,
    numbers: Sequence[str],
    recognise: Recognise | None,
    no_recogniser: str = "",
) -> dict[str, dict[str, Any]]:
    """Every check on the recording at ``path``: {name: {state, reason, ...}}.
    The audio is read and measured in an executor; ``recognise`` transcribes
    (in its own pool). ``no_recogniser``: why there is none (when None)."""
    loop = asyncio.get_running_loop()
    caller, operator = await loop.run_in_executor(None, read_conversation, path)
    sides = await loop.run_in_executor(None, analyse, caller, operator, settings.speech_level_db)
    checks: dict[str, dict[str, Any]] = {
        "long_silence": long_silences(sides, settings.silence_s),
        "talk_over": talk_overs(sides, settings.talk_over_s),
    }
    if recognise is None:
        for name in ("greeting", "closing", "phone_confirmed", "end_sentiment"):
            checks[name] = result(NOT_RUN, no_recogniser or "没有语音识别")
        return checks
    ops = sides.operator_utterances
    first = ops[:FIRST_LAST]
    last = ops[FIRST_LAST:][-FIRST_LAST:] if len(ops) > FIRST_LAST else []
    middle = ops[len(first) : len(ops) - len(last)]
    said_first = await _heard(recognise, operator, first)
    said_middle = await _heard(recognise, operator, middle)
    said_last = await _heard(recognise, operator, last)
    if not ops:
        checks["greeting"] = result(FAILED, "坐席一直没有说话")
        checks["closing"] = result(FAILED, "坐席一直没有说话")
    else:
        checks["greeting"] = words_check(said_first, settings.greeting_words, "开头坐席")
        closing = said_last or said_first[-1:]
        checks["closing"] = words_check(closing, settings.closing_words, "结束时坐席")
    checks["phone_confirmed"] = phone_check([*said_first, *said_middle, *said_last], numbers)
    caller_end = sides.caller_utterances[-FIRST_LAST:]
    checks["end_sentiment"] = sentiment_check(await _heard(recognise, caller, caller_end))
    checks["transcript"] = {
        "operator": mask_phone(" / ".join(t for t in [*said_first, *said_middle, *said_last] if t)),
    }
    return {name: checks[name] for name in (*CHECKS, "transcript") if name in checks}
