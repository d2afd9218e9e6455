"""LiveCall: a caller's SIP dialog and RTP stream seen as a ivr.call.Call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ivr.call import CallEnded, EndReason, TransferResult
from ivr.call_records import CallRecord
from ivr.config import ElderlySettings, EnterpriseSettings
from ivr.dialects import MANDARIN
from ivr.keypad import Keypad
from ivr.media.prompt_audio import PromptAudio
from ivr.media.rtp import RtpStream
from ivr.operators import ELDERLY_SKILL, WaitingMusic
from ivr.sip.dialog import Dialog, DialogEnd
from ivr.speech.utterance import ListenSettings, Utterance, UtteranceCapture

if TYPE_CHECKING:
    from ivr.tickets.intake import CallIntake

Transfer = Callable[["LiveCall", str, WaitingMusic], Awaitable[TransferResult]]

_DIALOG_END_TO_REASON = {
    DialogEnd.REMOTE_BYE: EndReason.CALLER_HANGUP,
    DialogEnd.LOCAL_BYE: EndReason.IVR_HANGUP,
    DialogEnd.TRANSPORT_ERROR: EndReason.TRANSPORT_ERROR,
    DialogEnd.SHUTDOWN: EndReason.SHUTDOWN,
}


class LiveCall:
    def __init__(
        self,
        *,
        dialog: Dialog,
        stream: RtpStream,
        record: CallRecord,
        transfer: Transfer,
        log: logging.LoggerAdapter[logging.Logger],
        inband_detector: Any | None = None,
        intake: CallIntake | None = None,
        screen_pop_wait: float = 0.0,
        elderly: ElderlySettings | None = None,
        dialect: str = MANDARIN,
        enterprise: EnterpriseSettings | None = None,
    ) -> None:
        self._elderly = elderly or ElderlySettings()
        self._enterprise = enterprise or EnterpriseSettings()
        # 企业专席: the business's name (registry), "" (chose 企业服务), None: not one
        self.enterprise: str | None = None
        self._default_dialect = dialect
        self.dialect = dialect  # prompts are said in it; not the default: routed to its seats
        self.elderly = False  # in the elderly service (slower prompts, more time)
        self.callback_person = "caller"  # or "beneficiary" (亲友代办: a relative reports)
        self.speed = 1.0
        self.timeout_factor = 1.0
        self.intake = intake
        self._screen_pop_wait = screen_pop_wait
        self.priority = False  # keeps an earlier place in the operator queue
        self.no_callback = False  # the caller asked not to be called back
        self.queued_at: float | None = None  # when the caller joined the operator line
        self.queue_position: int | None = None  # their place in it then (1 = next)
        self.dialog = dialog
        self._stream = stream
        self.record = record
        self._transfer = transfer
        self.log = log
        self.keypad = Keypad()
        loop = asyncio.get_running_loop()
        self._gone: asyncio.Future[EndReason] = loop.create_future()
        self._barge_in = False
        self._bye: asyncio.Future[None] | None = None
        dialog.on_digit = self._digit
        stream.on_digit = self._digit
        if inband_detector is not None:
            self._inband = inband_detector
            stream.pcm_listeners.append(self._inband_frame)
        dialog.ended.add_done_callback(self._dialog_ended)

    # -- Call protocol ------------------------------------------------------
    @property
    def call_id(self) -> str:
        return self.record.call_id

    @property
    def caller(self) -> str:
        return self.record.caller

    @property
    def stream(self) -> RtpStream:
        return self._stream

    @property
    def gone(self) -> asyncio.Future[EndReason]:
        return self._gone

    def ticket_id(self) -> int | None:
        """The call's ticket, once it has one."""
        return self.intake.ticket_id if self.intake is not None else None

    @property
    def skill(self) -> str | None:
        """The operator skill this caller needs: their dialect, unless every operator
        speaks it (mandarin, or the deployment's default dialect); else, in the
        elderly service where the deployment has elderly seats (老年人专席), those."""
        if self.dialect not in (MANDARIN, self._default_dialect):
            return self.dialect
        if self.elderly and self._elderly.seats:
            return ELDERLY_SKILL
        return None

    def mark(self, node_id: str) -> None:
        self.record.path.append(node_id)

    async def play(self, prompt: PromptAudio, *, barge_in: bool = True) -> str | None:
        self._check()
        if barge_in and self.keypad.peek() is not None:
            return self.keypad.peek()
        playback = self._stream.play(prompt.frames(self._stream.codec))
        self._barge_in = barge_in
        try:
            await self._until(playback.done)
        finally:
            self._barge_in = False
            if not playback.done.done():
                playback.stop()
                self._stream.stop_playback()
        if not playback.done.result():
            return self.keypad.peek()
        return None

    async def collect_digits(
        self, max_digits: int, timeout: float, *, terminator: str = "#"
    ) -> str:
        digits = ""
        while len(digits) < max_digits:
            self._check()
            digit = self.keypad.take()
            if digit is None:
                waiter = asyncio.ensure_future(self.keypad.wait())
                try:
                    done = await self._until(waiter, timeout)
                finally:
                    waiter.cancel()
                if not done:
                    break
                continue
            if digit == terminator and terminator:
                break
            digits += digit
        return digits

    async def transfer(
        self,
        queue: str,
        *,
        hold_prompt: PromptAudio | None,
        announce: Callable[[int], PromptAudio | None] | None = None,
        announce_every: float = 30.0,
        wait: Callable[[int], PromptAudio | None] | None = None,
    ) -> TransferResult:
        self._check()
        music = WaitingMusic(hold_prompt, announce, announce_every, wait)
        return await self._transfer(self, self.route(queue), music)

    def route(self, queue: str) -> str:
        """The queue a transfer to ``queue`` goes to: a business's goes to the
        enterprise seats ([enterprise] queue) when the deployment has them."""
        seats = self._enterprise.queue
        if self.enterprise is None or not seats or queue == seats:
            return queue
        self.log.info(
            "enterprise caller (%s): to queue %s, not %s",
            self.enterprise or "企业服务",
            seats,
            queue,
        )
        return seats

    def enter_enterprise_service(self) -> None:
        if self.enterprise is None:
            self.enterprise = ""
        self.log.info(
            "enterprise service%s",
            f" (seats: {self._enterprise.queue})" if self._enterprise.queue else "",
        )

    async def hangup(self) -> None:
        self.end(EndReason.IVR_HANGUP)

    async def listen(self, settings: ListenSettings, *, stop_on_key: bool) -> Utterance | str:
        self._check()
        if stop_on_key and self.keypad.peek() is not None:
            return self.keypad.take() or ""
        if self.speed < 1.0:
            settings = replace(
                settings, end_silence=max(settings.end_silence, self._elderly.end_silence)
            )
        capture = UtteranceCapture(
            settings, on_pause=self.intake.speculate if self.intake is not None else None
        )
        self._stream.pcm_listeners.append(capture.feed)
        waiters: set[asyncio.Future[Any]] = {capture.done, self._gone}
        key_waiter: asyncio.Future[Any] | None = None
        try:
            while True:
                if stop_on_key and key_waiter is None and not capture.speaking:
                    key_waiter = asyncio.ensure_future(self.keypad.wait())
                    waiters.add(key_waiter)
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if capture.done in done:
                    return capture.done.result()
                if self._gone in done:
                    capture.hung_up()
                    raise CallEnded(self._gone.result())
                if key_waiter is not None and key_waiter in done:
                    return self.keypad.take() or ""
        finally:
            if capture.feed in self._stream.pcm_listeners:
                self._stream.pcm_listeners.remove(capture.feed)
            if key_waiter is not None:
                key_waiter.cancel()

    async def recognise(self, utterance: Utterance, grammar: list[str] | None) -> str:
        if self.intake is None:
            return ""
        return await self.intake.recognise(utterance, grammar)

    async def describe(self, utterance: Utterance, *, about: str = "caller") -> None:
        if self.intake is not None:
            await self.intake.describe(utterance, about=about)

    async def screen_pop(self) -> dict[str, str]:
        """The ticket as INVITE headers for the operator, once any transcription
        still running is back (waiting at most screen_pop_wait seconds)."""
        if self.intake is None:
            return {}
        if not await self.intake.settled(self._screen_pop_wait):
            self.log.info("screen pop before the transcript is back; the screen will update")
        headers = await self.intake.screen_pop()
        if self.enterprise is not None:  # the operator's phone shows it is a business
            name = " ".join(self.enterprise.split())
            headers["X-Enterprise"] = name or "企业服务"
        return headers

    async def note(self, text: str) -> None:
        if self.intake is not None:
            await self.intake.note(text)

    # -- used by the operator desk and the server ------------------------------
    def note_transfer(self, queue: str, operator: str | None, outcome: str) -> None:
        self.record.queue = queue
        if operator is not None:
            self.record.operator = operator
        self.record.outcome = outcome

    def enter_elderly_mode(self, speed: float | None = None) -> None:
        self.elderly = True
        self.speed = speed if speed is not None else self._elderly.speed
        self.timeout_factor = self._elderly.timeout_factor
        self.log.info("elderly service: prompts at %.2fx", self.speed)

    def set_speed(self, speed: float) -> None:
        if speed < 1.0:
            self.enter_elderly_mode(speed)
            return
        self.elderly = False
        self.speed = 1.0
        self.timeout_factor = 1.0
        self.log.info("prompts at normal speed")

    def set_dialect(self, dialect: str) -> None:
        self.dialect = dialect
        self.log.info("dialect %s%s", dialect, f" (seats: {self.skill})" if self.skill else "")

    def callback_to(self, person: str) -> None:
        self.callback_person = person
        self.log.info("a callback would go to the %s", person)

    def decline_callback(self) -> None:
        self.no_callback = True
        self.log.info("caller declined a callback")

    def note_queued(self, position: int) -> None:
        self.queued_at = time.time()
        self.queue_position = position

    def end(self, reason: EndReason) -> None:
        """End the call from our side for ``reason`` (sends BYE if still up)."""
        if self._gone.done():
            return
        self._gone.set_result(reason)
        self.record.end_reason = reason.value
        self.record.ended_at = time.time()
        self._stream.stop_playback()
        if self.dialog.active:
            dialog_reason = (
                DialogEnd.SHUTDOWN if reason is EndReason.SHUTDOWN else DialogEnd.LOCAL_BYE
            )
            self._bye = asyncio.ensure_future(self.dialog.bye(dialog_reason))

    # -- internals ----------------------------------------------------------------
    def _digit(self, digit: str, source: str) -> None:
        if self._gone.done():
            return
        if not self.keypad.press(digit, source):
            return
        self.record.digits += digit
        self.log.info("key %s (%s)", digit, source)
        if self._barge_in:
            self._stream.stop_playback()  # barge-in: the next 20 ms frame is silence

    def _inband_frame(self, pcm: Any) -> None:
        if self.keypad.out_of_band_seen or self._stream.relay_to is not None:
            return  # keys come another way, or the caller is talking to an operator
        for digit in self._inband.feed(pcm):
            self._digit(digit, "inband")

    def _dialog_ended(self, ended: asyncio.Future[DialogEnd]) -> None:
        if ended.cancelled() or self._gone.done():
            return
        reason = _DIALOG_END_TO_REASON[ended.result()]
        self._gone.set_result(reason)
        self.record.end_reason = reason.value
        self.record.ended_at = time.time()
        self._stream.stop_playback()

    def _check(self) -> None:
        if self._gone.done():
            raise CallEnded(self._gone.result())

    async def _until(self, future: asyncio.Future[Any], timeout: float | None = None) -> bool:
        """Wait for ``future``; False on timeout; CallEnded if the caller goes."""
        done, _ = await asyncio.wait(
            {future, self._gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if self._gone in done:
            raise CallEnded(self._gone.result())
        return future in done
