"""Intake (受理): from what a caller says to a prefilled ticket.

One CallIntake per call.  A describe node hands it each utterance: the audio
is saved as a WAV linked to the call's ticket, and transcription starts in
the background while the caller moves on (to the queue, usually).  When a
transcript is back, the whole conversation so far is run through the
prefill, the ticket is updated (with history) and an event goes to the
screens.  Words of an emergency resolve ``emergency`` (the server then sends
the call to 110/119/120) and the ticket is posted to the work-order webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
import soundfile

from ivr.prefill import Prefill, Prefiller
from ivr.speech import Transcript, unreliable_reason
from ivr.speech.transcriber import Transcriber
from ivr.speech.utterance import RATE, Utterance, UtteranceEnd
from ivr.store_watch import PendingWrites, StoreWatch, Write
from ivr.tickets import UNRELIABLE_NOTICE, Ticket, TicketStore
from ivr.tickets.cases import CaseStore
from ivr.tickets.events import TicketEvents
from ivr.tickets.unwritten import TicketChanges, UnwrittenTicket
from ivr.tickets.work_orders import WorkOrderOutbox

if TYPE_CHECKING:
    from ivr.metrics import HotlineMetrics

T = TypeVar("T")

# Whisper's well-known inventions on silence and noise (subtitle credits):
# a transcript made only of these is no speech at all.
_HALLUCINATIONS = re.compile(
    r"^(?:[\s\W]|谢谢观看|谢谢大家|请不吝点赞|订阅|转发|打赏|支持明镜与点点栏目|字幕(?:由|by)?\S*|"
    r"中文字幕\S*|优优独播剧场\S*|李宗盛|感谢观看)*$",
    re.IGNORECASE,
)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Emergency:
    kind: str  # fire, gas_leak, violence, medical, help
    service: str  # 110, 119, 120
    ticket_id: int  # 0: the ticket is kept in memory (the store is away)
    words: str


def is_no_speech(text: str) -> bool:
    return _HALLUCINATIONS.fullmatch(text.strip()) is not None


class Intake:
    """Shared parts; ``for_call`` makes each call's CallIntake."""

    def __init__(
        self,
        *,
        tickets: TicketStore,
        prefiller: Prefiller,
        events: TicketEvents,
        work_orders: WorkOrderOutbox,
        recordings_dir: Path,
        api_base: str,
        log: logging.Logger,
    ) -> None:
        self.tickets = tickets
        self.prefiller = prefiller
        self.events = events
        self.work_orders = work_orders
        self.recordings_dir = recordings_dir
        self.api_base = api_base  # e.g. http://127.0.0.1:8080, for Call-Info
        self.transcriber: Transcriber | None = None
        self.log = log
        # set by the server: whether the store answers, and what is kept while not
        self.watch: StoreWatch | None = None
        self.pending: PendingWrites | None = None
        self.metrics: HotlineMetrics | None = None  # the prefill's latency (/metrics)
        self.cases: CaseStore | None = None  # [merging]: the ticket joins its matter's case

    async def write(self, what: str, content: str, write: Write) -> None:
        """Write now, or keep it for when the store is back (PendingWrites)."""
        if self.pending is None:
            await write()
        else:
            await self.pending.write(what, content, write)

    @property
    def transcriber_ready(self) -> bool:
        return self.transcriber is not None

    def for_call(
        self, call_id: str, caller: str, log: logging.LoggerAdapter[logging.Logger]
    ) -> CallIntake:
        return CallIntake(self, call_id, caller, log)


class CallIntake:
    def __init__(
        self, intake: Intake, call_id: str, caller: str, log: logging.LoggerAdapter[logging.Logger]
    ) -> None:
        self._intake = intake
        self.call_id = call_id
        self.caller = caller
        self.log = log
        self.ticket_id: int | None = None
        self._texts: list[str] = []
        self._beneficiary_texts: list[str] = []  # 亲友代办: what was said about the person
        self._about: list[str] = []  # per recording: "caller" or "beneficiary"
        # whom this number reported for last time (caller profile): shown on the ticket
        self.known_beneficiary: dict[str, str] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._ticket_lock = asyncio.Lock()
        self.emergency: asyncio.Future[Emergency] = asyncio.get_running_loop().create_future()
        # the ticket while the store is away (ivr/tickets/unwritten.py): from the
        # first change the store could not take until the call is over
        self._unwritten: UnwrittenTicket | None = None
        self._opened_unwritten = False  # a ticket was opened in memory
        self._after_ticket: list[tuple[str, Write]] = []  # writes waiting for it

    @property
    def unwritten(self) -> bool:
        """The ticket (or some of its changes) is kept in memory, not in the store."""
        return self._unwritten is not None

    @property
    def about_beneficiary(self) -> bool:
        """Something was said about a person reported for (亲友代办)."""
        return "beneficiary" in self._about

    async def _tickets(self, change: Callable[[TicketChanges], Awaitable[T]]) -> T:
        """``change`` made in the store; once the store is away, to the ticket
        kept in memory (for the rest of the call)."""
        if self._unwritten is None:
            watch = self._intake.watch
            if watch is None or watch.up:
                try:
                    return await change(self._intake.tickets)
                except Exception as exc:
                    if watch is None or not watch.failed(exc):
                        raise
            self._unwritten = UnwrittenTicket(self.call_id, self.caller, self.ticket_id)
            self.log.warning(
                "store unreachable: the call's ticket%s is kept in memory until the call "
                "is over, then written when the store takes it",
                f" {self.ticket_id}" if self.ticket_id is not None else "",
            )
        return await change(self._unwritten)

    def _publish(self, kind: str, ticket: Ticket) -> None:
        """An event for the screens, for a ticket the store has (an emergency always)."""
        if ticket.id > 0 or kind == "emergency":
            self._intake.events.publish(kind, ticket.to_json())

    # -- the ticket ---------------------------------------------------------
    async def ticket(self) -> int:
        """The call's ticket id (made on first use, prefilled with the caller ID);
        0 for a ticket opened in memory while the store is away."""
        async with self._ticket_lock:
            if self.ticket_id is None and not self._opened_unwritten:
                ticket = await self._tickets(lambda s: s.create(self.call_id, self.caller))
                if ticket.id > 0:
                    self.ticket_id = ticket.id
                else:
                    self._opened_unwritten = True
                prefill = self._intake.prefiller.prefill("", caller_id=self.caller)
                fields = _fields(prefill)
                for part, value in self.known_beneficiary.items():
                    fields[f"beneficiary_{part}"] = {
                        "value": value,
                        "evidence": [],
                        "source": "profile",  # said on an earlier call from this number
                    }
                opened = ticket.id
                ticket = await self._tickets(lambda s: s.apply_prefill(opened, fields, "", None))
                self._publish("created", ticket)
                if ticket.id > 0:
                    self.log.info("ticket %d opened", ticket.id)
                else:
                    self.log.info("ticket opened in memory (the store is unreachable)")
            return self.ticket_id or 0

    async def note(self, text: str) -> None:
        ticket_id = await self.ticket()
        await self._tickets(lambda s: s.add_note(ticket_id, text))
        self.log.info("ticket %d note: %s", ticket_id, text)

    async def write_after_ticket(self, what: str, content: str, write: Write) -> None:
        """A write that names the call's ticket (a callback request, the caller's
        profile): now, or kept for when the store is back; when the ticket itself
        is kept in memory, right after it is written."""
        if self._unwritten is None:
            await self._intake.write(what, content, write)
            return
        self._after_ticket.append((what, write))
        self.log.info("%s waits for the call's ticket (kept in memory): %s", what, content)

    # -- utterances -----------------------------------------------------------
    async def describe(self, utterance: Utterance, *, about: str = "caller") -> None:
        """Save the utterance, link it, transcribe it in the background.

        ``about="beneficiary"``: a relative is describing the person they report
        for (亲友代办); what is heard fills the ticket's beneficiary_* fields."""
        heard_at = time.monotonic()  # the utterance has just ended
        ticket_id = await self.ticket()
        index = len(self._texts)
        self._texts.append("")
        self._about.append(about)
        self._intake.events.publish(
            "recorded",
            {"id": ticket_id, "recording": index + 1, "seconds": round(utterance.seconds, 2)},
        )
        path = self._recording_path(index)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _write_wav, path, utterance.pcm)
        seconds, ending = utterance.seconds, utterance.end.value
        recording_id = await self._tickets(
            lambda s: s.add_recording(ticket_id, path, seconds, ending)
        )
        if utterance.end is UtteranceEnd.MAX_LENGTH:
            await self.note(
                f"recording {index + 1} cut at {utterance.seconds:.0f} s (the limit); "
                "what was said is kept"
            )
        task = asyncio.ensure_future(self._transcribe(index, recording_id, utterance, heard_at))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def speculate(self, pcm: npt.NDArray[np.int16]) -> asyncio.Future[Transcript] | None:
        """Start recognising ``pcm`` now (the caller has paused; if they stay
        silent this is the utterance, and its transcript is ready sooner)."""
        transcriber = self._intake.transcriber
        if transcriber is None:
            return None
        return asyncio.ensure_future(transcriber.transcribe(pcm))

    async def _recognised(
        self, utterance: Utterance, grammar: list[str] | None = None
    ) -> Transcript:
        transcriber = self._intake.transcriber
        assert transcriber is not None
        early = utterance.early
        if early is not None and not early.cancelled() and grammar is None:
            with contextlib.suppress(asyncio.CancelledError):
                result: Transcript = await early
                return result
        return await transcriber.transcribe(utterance.pcm, grammar)

    async def recognise(self, utterance: Utterance, grammar: list[str] | None) -> str:
        """The words of a short answer (a spoken menu choice), awaited."""
        if self._intake.transcriber is None:
            self.log.error("spoken menu but no speech engine loaded")
            return ""
        uses_grammar = grammar if self._intake.transcriber.engine.name == "vosk" else None
        result = await self._recognised(utterance, uses_grammar)
        self.log.info("heard %d characters in %.2f s", len(result.text), result.compute_seconds)
        return "" if is_no_speech(result.text) else result.text

    async def settled(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) for transcriptions still running."""
        if not self._pending:
            return True
        _, pending = await asyncio.wait(set(self._pending), timeout=timeout)
        return not pending

    async def current(self) -> Ticket | None:
        """The call's ticket as it is now (None before it has one)."""
        if self.ticket_id is None and not self._opened_unwritten:
            return None
        ticket_id = self.ticket_id or 0
        return await self._tickets(lambda s: s.get(ticket_id))

    async def screen_pop(self) -> dict[str, str]:
        """SIP headers for the INVITE to the operator: the ticket goes with the call."""
        ticket_id = await self.ticket()
        ticket = await self._tickets(lambda s: s.get(ticket_id))
        assert ticket is not None
        headers = {"X-Ticket-Summary": _header_text(ticket.summary())}
        if ticket.id > 0:  # a ticket only in memory has no id yet, nor a page
            headers["X-Ticket-Id"] = str(ticket.id)
            if self._intake.api_base:
                api = self._intake.api_base
                headers["Call-Info"] = f"<{api}/api/tickets/{ticket.id}>;purpose=info"
        self._publish("screen_pop", ticket)
        return headers

    async def close(self) -> None:
        """The call is over: let running transcriptions finish (they fill the
        ticket even after the caller has gone)."""
        await self.settled(timeout=120.0)
        for task in list(self._pending):
            task.cancel()
        unwritten = self._unwritten
        if unwritten is not None:
            await self._intake.write(
                f"ticket of call {self.call_id}", unwritten.content(), self._write_unwritten
            )
        elif self.ticket_id is not None:
            await self._file_case(self.ticket_id)

    async def _file_case(self, ticket_id: int) -> None:
        """The call is over, its ticket saved: into the open case of its matter
        or a case of its own ([merging]); the store being away loses no ticket."""
        cases = self._intake.cases
        if cases is None:
            return
        try:
            filing = await cases.file(ticket_id)
        except Exception:
            self.log.exception("ticket %d: filing into a case failed", ticket_id)
            return
        if filing.merged:
            self.log.info(
                "ticket %d merged into case %d (%d reports): %s",
                ticket_id,
                filing.case.id,
                len(filing.case.reports),
                filing.why,
            )
            ticket = await self._intake.tickets.get(ticket_id)
            if ticket is not None:
                self._publish("edited", ticket)

    async def _write_unwritten(self) -> None:
        """The ticket kept in memory goes to the store (made, or its changes
        applied), then the writes that waited for it."""
        unwritten = self._unwritten
        assert unwritten is not None
        intake = self._intake
        self.ticket_id = await unwritten.write_to(intake.tickets, intake.work_orders)
        ticket = await intake.tickets.get(self.ticket_id)
        if ticket is not None:
            intake.events.publish("created", ticket.to_json())
        self.log.info("ticket %d written from memory", self.ticket_id)
        while self._after_ticket:
            what, write = self._after_ticket[0]
            await write()
            self._after_ticket.pop(0)
            self.log.info("%s written after the ticket", what)

    # -- internals --------------------------------------------------------------
    def _recording_path(self, index: int) -> Path:
        day = time.strftime("%Y-%m-%d")
        name = f"{_SAFE_NAME.sub('_', self.call_id)[:80]}-{index + 1}.wav"
        return self._intake.recordings_dir / day / name

    async def _transcribe(
        self, index: int, recording_id: int, utterance: Utterance, heard_at: float
    ) -> None:
        intake = self._intake
        ticket_id = await self.ticket()
        transcriber = intake.transcriber
        if transcriber is None:
            await self.note("no speech engine is loaded; the recording is kept untranscribed")
            return
        try:
            transcript = await self._recognised(utterance)
        except Exception as exc:
            self.log.exception("transcription of recording %d failed", index + 1)
            await self.note(f"recording {index + 1} could not be transcribed: {exc}")
            return
        text = transcript.text.strip()
        self.log.info(
            "recording %d transcribed: %d characters in %.2f s",
            index + 1,
            len(text),
            transcript.compute_seconds,
        )
        if is_no_speech(text):
            text = ""
            await self.note(f"recording {index + 1}: no words recognised")
        # a loop of the recogniser (一一一零零零..., one phrase again and again):
        # kept with the recording, flagged, and left out of the ticket
        unreliable = (transcript.unreliable or unreliable_reason(text)) if text else None
        await self._tickets(
            lambda s: s.set_recording_transcript(recording_id, text, unreliable=unreliable)
        )
        if unreliable is not None:
            self.log.warning(
                "recording %d: transcript unreliable (%s), not used for the ticket",
                index + 1,
                unreliable,
            )
            await self.note(
                f"recording {index + 1}: {UNRELIABLE_NOTICE} ({unreliable}); "
                "its words are not used for the ticket"
            )
            flagged = await self._tickets(lambda s: s.get(ticket_id))
            if flagged is not None:  # the screens show the recording flagged
                self._publish("prefilled", flagged)
            return
        self._texts[index] = text
        said = [t for t, who in zip(self._texts, self._about, strict=True) if t and who == "caller"]
        full = "，".join(said)
        if self._about[index] == "beneficiary":
            prefill = await self._beneficiary_prefill()
            ticket = await self._tickets(lambda s: s.get(ticket_id))
            full = ticket.transcript if ticket is not None else full
            fields = _beneficiary_fields(prefill)
        else:
            prefill = intake.prefiller.prefill(full, caller_id=self.caller)
            fields = _fields(prefill)
        kind = prefill.emergency.value if prefill.emergency is not None else None
        said_all = full
        ticket = await self._tickets(
            lambda s: s.apply_prefill(ticket_id, fields, said_all, kind)
        )
        self._publish("prefilled", ticket)
        if intake.metrics is not None:
            intake.metrics.prefilled(time.monotonic() - heard_at)
        if prefill.emergency is not None and prefill.emergency_service:
            await self._raise_emergency(ticket, prefill)

    async def _beneficiary_prefill(self) -> Prefill:
        said = [t for t, who in zip(self._texts, self._about, strict=True) if t and who != "caller"]
        return self._intake.prefiller.prefill("，".join(said), caller_id="", about="beneficiary")

    async def _raise_emergency(self, ticket: Ticket, prefill: Prefill) -> None:
        assert prefill.emergency is not None and prefill.emergency_service is not None
        words = "".join(e.text for e in prefill.emergency.evidence)
        self.log.warning(
            "EMERGENCY %s (%s) in ticket %d: %r",
            prefill.emergency.value,
            prefill.emergency_service,
            ticket.id,
            words,
        )
        self._publish("emergency", ticket)
        if self._intake.work_orders.enabled:
            await self._post_work_order(ticket, _work_order(ticket, prefill))
        if not self.emergency.done():
            self.emergency.set_result(
                Emergency(prefill.emergency.value, prefill.emergency_service, ticket.id, words)
            )


    async def _post_work_order(self, ticket: Ticket, payload: dict[str, Any]) -> None:
        """Into the outbox (the store), or with the ticket kept in memory."""
        if self._unwritten is None and ticket.id > 0:
            watch = self._intake.watch
            try:
                await self._intake.work_orders.post(ticket.id, payload)
                return
            except Exception as exc:
                if watch is None or not watch.failed(exc):
                    raise
            self._unwritten = UnwrittenTicket(self.call_id, self.caller, self.ticket_id)
        assert self._unwritten is not None
        self._unwritten.work_orders.append(payload)
        self.log.warning("store unreachable: the work order is kept with the ticket in memory")


def _fields(prefill: Prefill) -> dict[str, Any]:
    data = prefill.to_json()
    data.pop("transcript", None)
    return data


BENEFICIARY_FIELDS = ("name", "phone", "address", "address_parts", "district")


def _beneficiary_fields(prefill: Prefill) -> dict[str, Any]:
    """The person a relative reports for (亲友代办): beneficiary_name, _phone,
    _address, _address_parts, _district (evidence in beneficiary_said), and
    proxy = true.  The caller's own fields (name, phone...) are the reporter's."""
    data = prefill.to_json()
    fields: dict[str, Any] = {f"beneficiary_{name}": data[name] for name in BENEFICIARY_FIELDS}
    fields["beneficiary_said"] = {"value": prefill.transcript, "evidence": [], "source": "speech"}
    fields["proxy"] = {"value": True, "evidence": [], "source": "dial_plan"}
    return fields


def _work_order(ticket: Ticket, prefill: Prefill) -> dict[str, Any]:
    return {
        "ticket_id": ticket.id,
        "call_id": ticket.call_id,
        "caller": ticket.caller,
        "emergency": prefill.emergency.value if prefill.emergency else None,
        "service": prefill.emergency_service,
        "fields": ticket.fields,
        "transcript": ticket.transcript,
        "created_at": ticket.created_at,
    }


def _header_text(text: str) -> str:
    """A SIP header value: one line, UTF-8 allowed (RFC 3261 TEXT-UTF8)."""
    return " ".join(text.replace("\r", " ").replace("\n", " ").split()) or "-"


def _write_wav(path: Path, pcm: npt.NDArray[np.int16]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    soundfile.write(str(tmp), pcm, RATE, subtype="PCM_16", format="WAV")
    tmp.replace(path)
