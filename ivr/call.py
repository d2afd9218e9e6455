"""Call: the one interface the dial plan sees.

The dial plan interpreter (ivr.dialplan.run) drives a call only through this
protocol; the SIP/RTP implementation lives in ivr.sip / ivr.media and is
adapted to it by ivr.session (the live call).  Tests of the interpreter may
implement it with scripted digits; the real call path is tested with real
SIP peers.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ivr.media.prompt_audio import PromptAudio
from ivr.speech.utterance import ListenSettings, Utterance


class EndReason(enum.StrEnum):
    """Why a call ended. The callback queue keys on this."""

    CALLER_HANGUP = "caller_hangup"
    OPERATOR_HANGUP = "operator_hangup"
    IVR_HANGUP = "ivr_hangup"
    RTP_TIMEOUT = "rtp_timeout"
    TRANSPORT_ERROR = "transport_error"
    CANCELLED = "cancelled"  # caller cancelled before we answered
    REJECTED = "rejected"  # we refused the call (no shared codec, shutting down...)
    SHUTDOWN = "shutdown"
    NODE_LOST = "node_lost"  # the node holding the call died (ended by a survivor)


class CallEnded(Exception):
    """Raised inside the dial plan when the caller is gone."""

    def __init__(self, reason: EndReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class TransferOutcome(enum.StrEnum):
    BRIDGED = "bridged"  # talked to an operator; the call is over when this returns
    NO_OPERATOR = "no_operator"  # nobody answered / queue empty; dial plan continues
    QUEUE_FULL = "queue_full"


@dataclass(frozen=True)
class TransferResult:
    outcome: TransferOutcome
    operator: str | None = None


class Call(Protocol):
    """What the dial plan can do with one call."""

    @property
    def call_id(self) -> str: ...

    @property
    def caller(self) -> str: ...

    def mark(self, node_id: str) -> None:
        """Record that the call entered a dial-plan node (the call's path)."""

    async def play(self, prompt: PromptAudio, *, barge_in: bool = True) -> str | None:
        """Play a prompt to the end; with ``barge_in`` a key press stops it.

        Returns the digit that interrupted the prompt (it is also kept for the
        next collect_digits) or None when it played to the end.
        Raises CallEnded when the caller is gone.
        """

    async def collect_digits(
        self, max_digits: int, timeout: float, *, terminator: str = "#"
    ) -> str:
        """Digits pressed (including any that barged in), up to ``max_digits``
        or the terminator (not included), or "" after ``timeout`` seconds of
        no key. Raises CallEnded when the caller is gone."""

    async def transfer(
        self,
        queue: str,
        *,
        hold_prompt: PromptAudio | None,
        announce: Callable[[int], PromptAudio | None] | None = None,
        announce_every: float = 30.0,
        wait: Callable[[int], PromptAudio | None] | None = None,
    ) -> TransferResult:
        """Bridge the caller to an operator of ``queue``; the caller hears
        ``hold_prompt`` (looped) while waiting, and ``announce(place in line)``
        on joining and every ``announce_every`` s, followed by ``wait(minutes)``
        (the estimated wait) when the queue can estimate it."""

    async def hangup(self) -> None:
        """End the call from the IVR side (reason IVR_HANGUP)."""

    async def listen(self, settings: ListenSettings, *, stop_on_key: bool) -> Utterance | str:
        """The caller's next utterance (see ivr.speech.utterance); with
        ``stop_on_key`` a key pressed first is returned instead.
        Raises CallEnded when the caller is gone."""

    async def recognise(self, utterance: Utterance, grammar: list[str] | None) -> str:
        """The transcript of ``utterance`` (run off the event loop)."""

    async def describe(self, utterance: Utterance, *, about: str = "caller") -> None:
        """Keep ``utterance`` for the call's ticket and transcribe it in the
        background into the ticket's fields (the caller's own, or with
        ``about="beneficiary"`` those of the person a relative reports for,
        亲友代办); returns at once."""

    async def note(self, text: str) -> None:
        """Add a note to the call's ticket (e.g. "caller said nothing")."""

    def decline_callback(self) -> None:
        """The caller does not want to be called back if this call drops."""

    @property
    def speed(self) -> float:
        """Prompt speed for this caller (1.0; slower in the elderly service)."""
        ...

    @property
    def timeout_factor(self) -> float:
        """Key timeouts are multiplied by this (longer in the elderly service)."""
        ...

    def enter_elderly_mode(self) -> None:
        """Slower prompts, longer timeouts and end-of-speech silence from now on."""

    @property
    def enterprise(self) -> str | None:
        """The business the caller calls for (企业专席): its name in the enterprise
        registry, "" when they chose 企业服务; None: not a business."""
        ...

    def enter_enterprise_service(self) -> None:
        """The caller chose 企业服务: their transfers go to the enterprise seats."""

    @property
    def dialect(self) -> str:
        """The dialect prompts are said in (one of ivr.dialects.DIALECTS)."""
        ...

    def set_dialect(self, dialect: str) -> None:
        """Prompts in ``dialect`` from now on; routed to its dialect seats."""

    def set_speed(self, speed: float) -> None:
        """Prompts at ``speed`` from now on (1.0 normal; slower: the elderly
        service's longer timeouts too)."""

    def callback_to(self, person: str) -> None:
        """If the call drops, call back ``person``: "caller" or "beneficiary"."""
