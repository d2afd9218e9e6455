"""The survey of a follow-up call (the dial plan's ``survey`` node): the
ticket's matter in one sentence, then 满意 / 基本满意 / 不满意 by key or by
voice, asked once more when the answer is neither, then an optional spoken
comment.

What the citizen says is matched most specific first: 不满意 contains 满意
and 基本满意 contains 满意, so the words of 不满意 are looked for first, then
those of 基本满意, then 满意; first as characters, then (for a recogniser's
near-homophones, 满一 for 满意) as folded pinyin syllables.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from ivr.call import Call
from ivr.dialplan.model import SurveyNode
from ivr.dialplan.run import PromptSource
from ivr.followups.model import KEYS, Outcome
from ivr.media.prompt_audio import PromptAudio
from ivr.prompts import count_words
from ivr.speech.spoken_options import sounds
from ivr.speech.utterance import ListenSettings, Utterance

# most specific first (see the module's docstring)
WORDS: tuple[tuple[Outcome, tuple[str, ...]], ...] = (
    (
        Outcome.UNSATISFIED,
        (
            "不满意",
            "不太满意",
            "很不满意",
            "非常不满意",
            "不是很满意",
            "不怎么满意",
            "不大满意",
            "很差",
            "太差",
        ),
    ),
    (
        Outcome.BASICALLY,
        ("基本满意", "比较满意", "还行", "还可以", "一般", "凑合", "马马虎虎", "差不多"),
    ),
    (Outcome.SATISFIED, ("满意", "非常满意", "很满意", "挺满意", "十分满意")),
)
GRAMMAR = [word for _, words in WORDS for word in words]  # Vosk's closed vocabulary
# the key said instead of pressed ("一", "按三")
_SAID_KEY = re.compile(r"(?:按)?([123一二三两幺])(?:号|键)?")
_SAID_DIGITS = {"一": "1", "幺": "1", "二": "2", "两": "2", "三": "3"}
_NOT_SPEECH = re.compile(r"[\s\W_]+", re.UNICODE)
COMMENT_NOTE = "回访意见："


def heard_answer(transcript: str) -> Outcome | None:
    """The answer a transcript says, or None (neither an answer word nor a key)."""
    text = _NOT_SPEECH.sub("", transcript)
    if not text:
        return None
    said = _SAID_KEY.fullmatch(text)
    if said is not None:
        return KEYS[_SAID_DIGITS.get(said.group(1), said.group(1))]
    for outcome, words in WORDS:
        if any(word in text for word in words):
            return outcome
    heard = sounds(text)
    for outcome, words in WORDS:
        for word in words:
            wanted = sounds(word)
            n = len(wanted)
            if any(heard[i : i + n] == wanted for i in range(len(heard) - n + 1)):
                return outcome
    return None


def matter_sentence(
    template: str,
    fields: Mapping[str, object],
    reported_at: float,
    zone: ZoneInfo,
) -> str:
    """The survey's first sentence for one ticket: {date} it was reported
    (十二月三日: numerals as words, so they are read as a date), {place}
    (district and address), {category}."""
    day = datetime.fromtimestamp(reported_at, zone)
    district = _field(fields, "district")
    address = _field(fields, "address")
    place = address if district and address.startswith(district) else district + address
    values = {
        "date": f"{count_words(day.month)}月{count_words(day.day)}日",
        "place": place,
        "category": _field(fields, "category"),
    }
    return re.sub(r"\{(date|place|category)\}", lambda m: values[m.group(1)], template)


def _field(fields: Mapping[str, object], name: str) -> str:
    entry = fields.get(name)
    if isinstance(entry, dict):
        value = entry.get("value")
        if isinstance(value, str):
            return value.strip()
    return ""


Speak = Callable[[str, Call], Awaitable[PromptAudio]]


async def _listen(call: Call, settings: ListenSettings) -> Utterance | str | None:
    """``call.listen``, stopping on a key, bounded by the clock too (None):
    listening counts the audio that arrives, and a phone that sends none would
    otherwise keep the survey waiting until the call's RTP timeout."""
    bound = settings.no_speech_timeout + settings.max_seconds + 2.0
    try:
        return await asyncio.wait_for(call.listen(settings, stop_on_key=True), bound)
    except TimeoutError:
        return None


class SurveyRun:
    """One follow-up call's survey: run as the plan's survey node, it keeps
    the answer and the comment for the dialler to record when the call ends
    (also when the citizen hangs up after answering)."""

    def __init__(
        self,
        *,
        fields: Mapping[str, object],
        reported_at: float,
        zone: ZoneInfo,
        speak: Speak,
    ) -> None:
        self._fields = fields
        self._reported_at = reported_at
        self._zone = zone
        self._speak = speak
        self.outcome: Outcome | None = None
        self.comment: str | None = None
        self.matter: str | None = None  # the sentence said
        self.asked = 0  # times the question was asked
        self.unrecognised: list[str] = []  # what was heard that was no answer

    async def __call__(
        self, node: SurveyNode, call: Call, prompts: PromptSource, listen: ListenSettings
    ) -> str:
        self.matter = matter_sentence(node.matter, self._fields, self._reported_at, self._zone)
        await call.play(await self._speak(self.matter, call), barge_in=True)
        for attempt in range(2):
            if attempt == 1 and node.invalid_prompt:
                await call.play(prompts.get(node.invalid_prompt, call.speed, call.dialect))
            key = await call.collect_digits(1, 0.05)  # pressed during the sentence
            if not key:
                self.asked += 1
                await call.play(prompts.get(node.prompt, call.speed, call.dialect))
                self.outcome = await self._answer(node, call, listen)
            else:
                self.outcome = KEYS.get(key)
                if self.outcome is None:
                    self.unrecognised.append(f"key {key}")
            if self.outcome is not None:
                await self._comment(node, call, prompts, listen)
                return node.next
        return node.on_no_answer

    async def _answer(self, node: SurveyNode, call: Call, listen: ListenSettings) -> Outcome | None:
        key = await call.collect_digits(1, 0.05)  # a key that barged into the question
        if not key:
            settings = replace(
                listen, no_speech_timeout=node.timeout * call.timeout_factor, max_seconds=8.0
            )
            heard = await _listen(call, settings)
            if isinstance(heard, str):
                key = heard
            elif heard is None or not heard.heard:
                self.unrecognised.append("silence")
                return None
            else:
                text = await call.recognise(heard, GRAMMAR)
                outcome = heard_answer(text)
                if outcome is None:
                    self.unrecognised.append(f"said {text!r}" if text else "unclear speech")
                return outcome
        outcome = KEYS.get(key)
        if outcome is None:
            self.unrecognised.append(f"key {key}")
        return outcome

    async def _comment(
        self, node: SurveyNode, call: Call, prompts: PromptSource, listen: ListenSettings
    ) -> None:
        if not node.comment_prompt:
            return
        await call.play(prompts.get(node.comment_prompt, call.speed, call.dialect), barge_in=True)
        settings = replace(listen, max_seconds=node.comment_seconds, no_speech_timeout=6.0)
        heard = await _listen(call, settings)
        if heard is None or isinstance(heard, str) or not heard.heard:
            return  # a key or silence: no comment
        text = (await call.recognise(heard, None)).strip()
        if text:
            self.comment = text
