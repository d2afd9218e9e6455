"""The dial plan interpreter: walks one call through the nodes."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

from ivr.call import Call, TransferOutcome
from ivr.dialplan.model import (
    MAX_ANNOUNCED,
    CallbackToNode,
    DescribeNode,
    DialectNode,
    DialPlan,
    ElderlyNode,
    EnterpriseNode,
    GotoNode,
    HangupNode,
    HoursNode,
    MenuNode,
    NoCallbackNode,
    PlayNode,
    SpeedNode,
    SurveyNode,
    TransferNode,
)
from ivr.media.prompt_audio import PromptAudio
from ivr.speech.spoken_options import match_option
from ivr.speech.utterance import ListenSettings

MAX_STEPS = 1000


class PromptSource(Protocol):
    def get(self, key: str, speed: float = 1.0, dialect: str | None = None) -> PromptAudio: ...


# runs a survey node on a follow-up call (ivr/followups/survey.py): the node id next
RunSurvey = Callable[[SurveyNode, Call, PromptSource, ListenSettings], Awaitable[str]]


def _prompt(prompts: PromptSource, key: str, call: Call) -> PromptAudio:
    """``key`` as this caller hears it: in their dialect, at their speed."""
    return prompts.get(key, call.speed, call.dialect)


def _announcer(
    prompts: PromptSource, node: TransferNode, call: Call
) -> Callable[[int], PromptAudio | None] | None:
    """The caller's place in line as a prompt ("您现在排在第三位"), or None."""
    key = node.position_prompt
    if not key:
        return None

    def announce(position: int) -> PromptAudio | None:
        return _prompt(prompts, f"{key}_{min(max(position, 1), MAX_ANNOUNCED)}", call)

    return announce


def _wait_announcer(
    prompts: PromptSource, node: TransferNode, call: Call
) -> Callable[[int], PromptAudio | None] | None:
    """The estimated wait in minutes as a prompt ("预计还需等待约三分钟"), or None."""
    key = node.wait_prompt
    if not key:
        return None

    def wait(minutes: int) -> PromptAudio | None:
        return _prompt(prompts, f"{key}_{min(max(minutes, 1), MAX_ANNOUNCED)}", call)

    return wait


async def run_dialplan(
    plan: DialPlan,
    call: Call,
    prompts: PromptSource,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    listen: ListenSettings | None = None,
    clock: Callable[[], float] = time.time,
    survey: RunSurvey | None = None,
) -> str:
    """Run ``call`` through ``plan``; returns the outcome ("bridged",
    "hangup", "loop_guard"). CallEnded propagates when the caller leaves.
    ``survey`` runs survey nodes (a follow-up call's); without it one ends the call."""
    node_id = plan.start
    if plan.enterprise_start and call.enterprise:
        node_id = plan.enterprise_start  # a number in the enterprise registry (企业专席)
    elif call.speed < 1.0 and plan.elderly_start:
        node_id = plan.elderly_start  # a known elderly caller (registry or last call)
    for _ in range(MAX_STEPS):
        node = plan.nodes[node_id]
        call.mark(node_id)
        if isinstance(node, PlayNode):
            await call.play(_prompt(prompts, node.prompt, call), barge_in=node.barge_in)
            node_id = node.next
        elif isinstance(node, MenuNode):
            node_id = await _menu(node, call, prompts, listen or ListenSettings())
        elif isinstance(node, TransferNode):
            if node.prompt:
                await call.play(_prompt(prompts, node.prompt, call), barge_in=False)
            hold = _prompt(prompts, node.hold_prompt, call) if node.hold_prompt else None
            announce = _announcer(prompts, node, call)
            result = await call.transfer(
                node.queue,
                hold_prompt=hold,
                announce=announce,
                announce_every=node.announce_every,
                wait=_wait_announcer(prompts, node, call),
            )
            if result.outcome is TransferOutcome.BRIDGED:
                return "bridged"
            node_id = node.on_no_operator
        elif isinstance(node, HangupNode):
            if node.prompt:
                await call.play(_prompt(prompts, node.prompt, call), barge_in=False)
            await call.hangup()
            return "hangup"
        elif isinstance(node, GotoNode):
            node_id = node.target
        elif isinstance(node, DescribeNode):
            node_id = await _describe(node, call, prompts, listen)
        elif isinstance(node, ElderlyNode):
            call.enter_elderly_mode()
            if node.prompt:
                await call.play(_prompt(prompts, node.prompt, call), barge_in=True)
            node_id = node.next
        elif isinstance(node, EnterpriseNode):
            call.enter_enterprise_service()
            if node.prompt:
                await call.play(_prompt(prompts, node.prompt, call), barge_in=True)
            node_id = node.next
        elif isinstance(node, DialectNode):
            call.set_dialect(node.dialect)
            if node.prompt:
                await call.play(_prompt(prompts, node.prompt, call), barge_in=True)
            node_id = node.next
        elif isinstance(node, SpeedNode):
            call.set_speed(node.speed)
            if node.prompt:
                await call.play(_prompt(prompts, node.prompt, call), barge_in=True)
            node_id = node.next
        elif isinstance(node, HoursNode):
            node_id = node.open_next if node.hours.is_open(clock()) else node.closed_next
        elif isinstance(node, CallbackToNode):
            call.callback_to(node.person)
            if node.prompt:
                await call.play(_prompt(prompts, node.prompt, call), barge_in=True)
            node_id = node.next
        elif isinstance(node, NoCallbackNode):
            call.decline_callback()
            if node.prompt:
                await call.play(_prompt(prompts, node.prompt, call), barge_in=True)
            node_id = node.next
        elif isinstance(node, SurveyNode):
            if survey is None:
                if log is not None:
                    log.error("survey node %r outside a follow-up call; hanging up", node.id)
                await call.hangup()
                return "hangup"
            node_id = await survey(node, call, prompts, listen or ListenSettings())
    if log is not None:
        log.error("dial plan %s: %d steps without an end; hanging up", plan.name, MAX_STEPS)
    await call.hangup()
    return "loop_guard"


async def _menu(node: MenuNode, call: Call, prompts: PromptSource, listen: ListenSettings) -> str:
    grammar = [word for words in node.words.values() for word in words]
    repeated = False
    attempt = 0
    while attempt < node.retries:
        await call.play(_prompt(prompts, node.prompt, call), barge_in=True)
        if node.spoken:
            key = await _key_or_word(node, call, listen, grammar)
        else:
            key = await call.collect_digits(1, node.timeout * call.timeout_factor)
        if key in node.options:
            return node.options[key]
        if not key and call.speed < 1.0 and node.elderly_repeat and not repeated:
            repeated = True  # elderly callers hear the menu once more before it counts
            continue
        attempt += 1
        last = attempt == node.retries
        follow_up = node.invalid_prompt if key else node.timeout_prompt
        if follow_up and not last:
            await call.play(_prompt(prompts, follow_up, call), barge_in=True)
    return node.after_retries


async def _key_or_word(
    node: MenuNode, call: Call, listen: ListenSettings, grammar: list[str]
) -> str:
    """A key, or the key whose words the caller said ("" for neither)."""
    key = await call.collect_digits(1, 0.05)  # a key that barged into the prompt
    if key:
        return key
    settings = replace(
        listen, no_speech_timeout=node.timeout * call.timeout_factor, max_seconds=8.0
    )
    heard = await call.listen(settings, stop_on_key=True)
    if isinstance(heard, str):
        return heard
    if not heard.heard:
        return ""
    text = await call.recognise(heard, grammar)
    match = match_option(text, node.words)
    return "?" if match is None else match.key  # "?": said something, but no option


async def _describe(
    node: DescribeNode, call: Call, prompts: PromptSource, listen: ListenSettings | None
) -> str:
    settings = replace(
        listen or ListenSettings(),
        max_seconds=node.max_seconds,
        end_silence=node.end_silence,
        no_speech_timeout=node.no_speech_timeout,
    )
    why = ""
    for attempt in range(2):
        key = node.prompt if attempt == 0 else (node.no_speech_prompt or node.prompt)
        await call.play(_prompt(prompts, key, call), barge_in=False)
        heard = await call.listen(settings, stop_on_key=False)
        if isinstance(heard, str):  # keys are not listened for here
            continue
        if heard.heard:
            await call.describe(heard, about=node.about)
            return node.next
        why = heard.end.value
    await call.note(f"{node.id}: caller said nothing recognisable twice ({why})")
    return node.on_no_speech
