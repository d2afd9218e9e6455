"""Counsellors (心理援助): a caller in distress is put through to a counsellor.

A ticket is flagged ``needs_counsellor`` when the prefill hears words of
distress (想不开, 不想活了 ... ivr/prefill/distress.py; its sentiment is then
求助), or when an operator flags it on their screen. When such a caller is
transferred to an operator queue and ``[counsellors] queue`` is set, they hear
"正在为您转接心理援助专线" and wait in the counsellors' queue instead; if no
counsellor answers within ``[counsellors] wait`` seconds (or that line is full)
they are told so and go on to the queue they were going to, ahead of the
callers who joined it meanwhile. Either way the ticket gets a note saying where
the call went and why, and the screen that takes the call shows why (the words
heard).

Once with an operator, the console's 请心理咨询师 button brings the
``[counsellors] consult`` entry of the consultation directory into the call (a
conference, ivr/consultation.py), flagging the ticket if it was not.

The flag lives on the ticket (the store), so every node and every screen sees
it; the counsellors' queue is an ordinary ``[queues.*]`` queue, shared by the
nodes like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ivr.call import TransferOutcome, TransferResult
from ivr.config import CounsellorSettings, Settings
from ivr.media.prompt_audio import PromptAudio
from ivr.operators import WaitingMusic
from ivr.prompts import PromptError
from ivr.tickets.counsellor import why

if TYPE_CHECKING:
    from ivr.live_call import LiveCall
    from ivr.operators import OperatorDesk

CONNECTING_KEY = "counsellor_connecting"
BUSY_KEY = "counsellor_busy"


def prompt_texts(settings: CounsellorSettings) -> dict[str, str]:
    """The prompts built for routing callers to counsellors (none when it is off)."""
    if not settings.queue:
        return {}
    return {CONNECTING_KEY: settings.connecting, BUSY_KEY: settings.busy}


class PromptSource(Protocol):
    def get(self, key: str, speed: float = 1.0, dialect: str | None = None) -> PromptAudio: ...


class CounsellorRouting:
    """The transfer of one call (LiveCall's ``transfer``): to the counsellors
    first when its ticket is flagged, else (and after them) as asked."""

    def __init__(
        self,
        desk: OperatorDesk,
        settings: Callable[[], Settings],
        prompts: PromptSource,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._desk = desk
        self._settings = settings
        self._prompts = prompts
        self._log = log

    async def transfer(self, call: LiveCall, queue: str, music: WaitingMusic) -> TransferResult:
        settings = self._settings().counsellors
        if not settings.queue or queue == settings.queue or call.intake is None:
            return await self._desk.connect(call, queue, music)
        reason = await self._reason(call, settings)
        if reason is None:
            return await self._desk.connect(call, queue, music)
        call.log.info("needs a counsellor (%s): to queue %s", reason, settings.queue)
        await call.note(f"转心理援助席位（{settings.queue}）：{reason}")
        await self._say(call, CONNECTING_KEY)
        result = await self._desk.connect(call, settings.queue, music, max_wait=settings.wait)
        if result.outcome is TransferOutcome.BRIDGED:
            return result
        why_not = (
            "心理援助席位已满"
            if result.outcome is TransferOutcome.QUEUE_FULL
            else (f"{settings.wait:.0f} 秒内无心理咨询师接听")
        )
        call.log.warning("no counsellor (%s): to queue %s", result.outcome.value, queue)
        await call.note(f"{why_not}，转人工坐席（{queue}），请坐席关注：{reason}")
        await self._say(call, BUSY_KEY)
        call.priority = True  # ahead of those who joined while they waited for a counsellor
        return await self._desk.connect(call, queue, music)

    async def _reason(self, call: LiveCall, settings: CounsellorSettings) -> str | None:
        """Why the call's ticket needs a counsellor, once what the caller said
        is transcribed (waiting at most ``wait_for_words``); None if it does not."""
        intake = call.intake
        assert intake is not None
        if intake.ticket_id is None:
            return None  # nothing said, nothing flagged
        if not await intake.settled(settings.wait_for_words):
            call.log.info("transfer before the transcript is back: not routed by its words")
        ticket = await intake.current()
        return why(ticket.fields) if ticket is not None else None

    async def _say(self, call: LiveCall, key: str) -> None:
        try:
            prompt = self._prompts.get(key, call.speed, call.dialect)
        except PromptError as exc:  # [counsellors] queue set by a reload: built at restart
            call.log.warning("counsellor prompt not said: %s", exc)
            return
        await call.play(prompt, barge_in=False)
