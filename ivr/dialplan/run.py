"""The dial plan interpreter: walks one call through the nodes."""

from __future__ import annotations

import logging
from typing import Protocol

from ivr.call import Call, TransferOutcome
from ivr.dialplan.model import (
    DialPlan,
    GotoNode,
    HangupNode,
    MenuNode,
    PlayNode,
    TransferNode,
)
from ivr.media.prompt_audio import PromptAudio

MAX_STEPS = 1000


class PromptSource(Protocol):
    def get(self, key: str) -> PromptAudio: ...


async def run_dialplan(
    plan: DialPlan,
    call: Call,
    prompts: PromptSource,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> str:
    """Run ``call`` through ``plan``; returns the outcome ("bridged",
    "hangup", "loop_guard"). CallEnded propagates when the caller leaves."""
    node_id = plan.start
    for _ in range(MAX_STEPS):
        node = plan.nodes[node_id]
        call.mark(node_id)
        if isinstance(node, PlayNode):
            await call.play(prompts.get(node.prompt), barge_in=node.barge_in)
            node_id = node.next
        elif isinstance(node, MenuNode):
            node_id = await _menu(node, call, prompts)
        elif isinstance(node, TransferNode):
            if node.prompt:
                await call.play(prompts.get(node.prompt), barge_in=False)
            hold = prompts.get(node.hold_prompt) if node.hold_prompt else None
            result = await call.transfer(node.queue, hold_prompt=hold)
            if result.outcome is TransferOutcome.BRIDGED:
                return "bridged"
            node_id = node.on_no_operator
        elif isinstance(node, HangupNode):
            if node.prompt:
                await call.play(prompts.get(node.prompt), barge_in=False)
            await call.hangup()
            return "hangup"
        elif isinstance(node, GotoNode):
            node_id = node.target
    if log is not None:
        log.error("dial plan %s: %d steps without an end; hanging up", plan.name, MAX_STEPS)
    await call.hangup()
    return "loop_guard"


async def _menu(node: MenuNode, call: Call, prompts: PromptSource) -> str:
    for attempt in range(node.retries):
        await call.play(prompts.get(node.prompt), barge_in=True)
        key = await call.collect_digits(1, node.timeout)
        if key in node.options:
            return node.options[key]
        last = attempt == node.retries - 1
        follow_up = node.invalid_prompt if key else node.timeout_prompt
        if follow_up and not last:
            await call.play(prompts.get(follow_up), barge_in=True)
    return node.after_retries
