"""A call's life on the hotline: taken, run, ended, remembered.

A call reaches the hotline two ways: a citizen dials in (``answer``: a media
port, ringing, the 200 OK, then the dial plan), or a callback the dialler
placed is answered (``call_back``: the callback greeting, then the operator
queue). Both are built by one builder, ``CallSession.open`` (the call record,
the ticket intake, the LiveCall, started the way the caller's last call ended),
and both end in ``CallSession.end`` (both legs down, the record stored, the
caller's profile kept, a callback asked for if the call was dropped).

While a call is with an operator the desk calls ``record_conversation``;
``watch_media`` ends calls whose caller stopped sending RTP.

Everything a call needs from the hotline comes in one ``CallParts``, which
the server builds once from config.toml; nothing here keeps state beyond the
call it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from ivr.call import CallEnded, EndReason, TransferOutcome
from ivr.call_records import CallRecord, CallRecordStore
from ivr.callbacks import CallbackQueue, should_call_back
from ivr.callbacks.model import Callback, CallbackReason
from ivr.caller_profiles import CallerProfile, CallerProfiles
from ivr.config import Settings
from ivr.conversation_recorder import ConversationRecording
from ivr.counsellors import CounsellorRouting
from ivr.dialer import OperatorLine
from ivr.dialplan.model import DialPlan, TransferNode
from ivr.dialplan.run import RunSurvey, run_dialplan
from ivr.enterprises import EnterpriseRegistry
from ivr.live_call import LiveCall
from ivr.logs import CallLog
from ivr.media.clock import MediaClock
from ivr.media.inband_dtmf import InbandDtmfDetector
from ivr.media.ports import PortsExhausted, RtpPorts
from ivr.media.rtp import MediaSources, RtpStream
from ivr.metrics import HotlineMetrics
from ivr.operators import OperatorDesk, OperatorLeg, WaitingCaller
from ivr.prompts import CALLBACK_GREETING_KEY, PromptLibrary, PromptSet
from ivr.sip.dialog import Dialog
from ivr.sip.incoming import IncomingInvite
from ivr.sip.sdp import MediaOffer, Negotiated, build_answer, choose
from ivr.speech.utterance import ListenSettings
from ivr.store_watch import PendingWrites, StoreWatch, local_time
from ivr.tickets import TicketStore
from ivr.tickets.intake import CallIntake, Intake

FinishRecording = Callable[[], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True)
class CallParts:
    """What a call needs from the hotline that holds it; built once by the server.

    ``settings``, ``listen`` and ``plan`` are read through functions because a
    reload (SIGHUP, a published dial plan) replaces them while calls go on: a
    call reads the settings when it uses them, and the dial plan (with the
    prompts built for it) once, when it begins, keeping that version to the end.
    """

    settings: Callable[[], Settings]
    listen: Callable[[], ListenSettings]
    plan: Callable[[], DialPlan | None]
    prompts: PromptLibrary
    clock: MediaClock
    ports: RtpPorts
    media_host: str  # the address our SDP gives for RTP
    desk: OperatorDesk
    records: CallRecordStore
    tickets: TicketStore
    profiles: CallerProfiles
    intake: Intake
    callback_queue: CallbackQueue
    wake_callbacks: Callable[[], None]  # a callback was asked for: the dialler looks now
    calls: dict[str, LiveCall]  # the calls in progress by Call-ID, shared with the hotline
    wall_clock: Callable[[], float]  # wall time for the callback queue (tests may set it)
    log: logging.Logger
    node: str | None = None  # this node's name (its calls carry it; a survivor ends them)
    # the store lost while running (ivr/store_watch.py): whether it answers, and
    # what calls could not write, kept to write when it is back
    watch: StoreWatch | None = None
    pending: PendingWrites | None = None
    metrics: HotlineMetrics | None = None  # calls ended by reason (/metrics)
    enterprises: EnterpriseRegistry | None = None  # business numbers (企业专席)

    def ended(self, reason: str | None) -> None:
        if self.metrics is not None:
            self.metrics.call_ended(reason or "unknown")

    async def write(self, what: str, content: str, write: Callable[[], Awaitable[object]]) -> None:
        """Write now, or keep it for when the store is back."""
        if self.pending is None:
            await write()
        else:
            await self.pending.write(what, content, write)

    async def read(
        self, what: str, read: Callable[[], Awaitable[T]], log: CallLog, *, default: T
    ) -> T:
        """A read the call can do without: ``default`` while the store is away."""
        watch = self.watch
        if watch is not None and not watch.up:
            log.info("%s not read: the store is unreachable", what)
            return default
        try:
            return await read()
        except Exception as exc:
            if watch is None or not watch.failed(exc):
                raise
            log.warning("%s not read: %s", what, exc)
            return default


def record_content(record: CallRecord) -> str:
    """A call record as a log line shows it (numbers masked by the log)."""
    ended = local_time(record.ended_at) if record.ended_at is not None else "-"
    return (
        f"caller {record.caller}, dialled {record.dialled}, "
        f"started {local_time(record.started_at)}, ended {ended}, "
        f"outcome {record.outcome}, end {record.end_reason}, "
        f"path {'>'.join(record.path)}, digits {record.digits!r}, queue {record.queue}, "
        f"operator {record.operator}, node {record.node}"
    )


def callback_queue_name(settings: Settings) -> str:
    """The operator queue callbacks are put through to."""
    return settings.callbacks.queue or next(iter(settings.queues))


# -- taking a call -------------------------------------------------------------
def answer(parts: CallParts, invite: IncomingInvite) -> Coroutine[Any, Any, None] | None:
    """An INVITE refused at once (None: 503 when ``max_calls`` are up, 488 when
    no codec is shared), or the call to run until it is over."""
    settings = parts.settings()
    log = CallLog(parts.log.getChild("call"), {"call_id": invite.call_id})
    if len(parts.calls) >= settings.sip.max_calls:
        log.warning("refusing call: %d calls up (max_calls)", len(parts.calls))
        invite.reject(503, warning="too many calls", counted_as="full")
        return None
    chosen = choose(invite.offer, tuple(settings.sip.codecs))
    if chosen is None:
        offered = ", ".join(f"{name}/{pt}" for pt, name in invite.offer.codecs) or "none we know"
        log.warning("488: no shared codec (offered: %s)", offered)
        invite.reject(
            488,
            warning=f"no shared codec; we take {'/'.join(settings.sip.codecs)}",
            counted_as="no_codec",
        )
        return None
    return _answer_and_run(parts, invite, chosen, log)


async def _answer_and_run(
    parts: CallParts, invite: IncomingInvite, chosen: Negotiated, log: CallLog
) -> None:
    plan = parts.plan()  # this call keeps this version even if the plan is reloaded
    prompts = parts.prompts.current()  # ... and the prompts built with it
    assert plan is not None
    # a new INVITE with the Call-ID of an earlier call would take over its record
    earlier = await parts.read(
        "an earlier call's record", lambda: parts.records.get(invite.call_id), log, default=None
    )
    if earlier is not None:
        log.warning("482: the Call-ID of an earlier call (from %s); not answered", earlier.caller)
        invite.reject(482, warning="Call-ID of an earlier call")
        return
    stream = RtpStream(parts.clock, log)
    try:
        await stream.open(parts.ports)
    except PortsExhausted as exc:
        log.error("503: %s", exc)
        invite.reject(503, warning="no media ports", counted_as="no_media_ports")
        return
    delay = parts.settings().sip.answer_delay
    if delay > 0:
        invite.ringing()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(invite.cancelled), delay)
    if invite.cancelled.done():
        log.info("caller cancelled before answer")
        stream.close()
        cancelled = CallRecord(
            call_id=invite.call_id,
            caller=invite.caller,
            dialled=invite.dialled,
            started_at=time.time(),
            ended_at=time.time(),
            outcome="cancelled",
            end_reason=EndReason.CANCELLED.value,
            plan_version=plan.version,
        )
        parts.ended(cancelled.end_reason)
        await parts.write(
            f"call record {invite.call_id}",
            record_content(cancelled),
            lambda: parts.records.update(cancelled),
        )
        return
    settings = parts.settings()  # again: a reload may have come while it rang
    offer = invite.offer
    stream.set_remote(
        (offer.address, offer.port), chosen.codec, chosen.payload_type, chosen.dtmf_pt
    )
    stream.latch_on_first_source(  # symmetric RTP (comedia): docs/decisions.md
        MediaSources((invite.addr[0],), settings.sip.trunk_networks)
    )
    stream.on_hold = offer.on_hold
    sdp = build_answer(
        offer,
        chosen,
        parts.media_host,
        stream.local_port,
        session_id=int(time.time()),
        version=int(time.time()),
    )
    dialog = invite.answer(sdp)
    stream.start_sending()

    def reoffer(new_offer: MediaOffer) -> None:
        stream.on_hold = new_offer.on_hold
        if not new_offer.on_hold:
            stream.new_sdp_address((new_offer.address, new_offer.port))
        log.info("re-INVITE: %s", "hold" if new_offer.on_hold else "resume")

    dialog.on_reoffer = reoffer
    log.info("call from %s to %s answered (%s)", invite.caller, invite.dialled, chosen.codec)
    session = await CallSession.open(
        parts,
        dialog=dialog,
        stream=stream,
        caller=invite.caller,
        dialled=invite.dialled,
        plan=plan,
        prompts=prompts,
        log=log,
        # tones in the audio are listened for only from phones that cannot send
        # RFC 4733 events (their offer has no telephone-event): the others send keys
        # as events, and the detector is a tenth of the media path's CPU
        inband_detector=InbandDtmfDetector()
        if settings.sip.inband_dtmf and chosen.dtmf_pt is None
        else None,
        screen_pop_wait=settings.tickets.screen_pop_wait,
    )
    now = parts.wall_clock()
    # a caller without a number (an anonymous From) has no callback to look up
    place = (
        await parts.read(
            "the caller's callback",
            lambda: parts.callback_queue.caller_dialled_in(
                invite.caller, now=now, call_id=invite.call_id
            ),
            log,
            default=None,
        )
        if invite.caller.strip()
        else None
    )
    if (
        invite.caller.strip()
        and parts.watch is not None
        and not parts.watch.up
        and parts.settings().callbacks.enabled
    ):
        # their callback (if any) is cancelled when the store is back: they rang again
        await parts.write(
            f"callback cancel for {invite.caller}",
            f"caller {invite.caller} rang again (call {invite.call_id})",
            lambda: parts.callback_queue.caller_dialled_in(
                invite.caller, now=now, call_id=invite.call_id
            ),
        )
    if place is not None:  # they rang again: no callback; they keep their place
        session.call.priority = True
        session.intake.ticket_id = place.ticket_id
        log.info("caller rang again: callback %d cancelled", place.callback_id)
    await session.run_plan()


async def call_back(parts: CallParts, line: OperatorLine, callback: Callback) -> None:
    """An answered callback: the greeting, then an operator with the old ticket."""
    log = CallLog(parts.log.getChild("call"), {"call_id": line.dialog.call_id})
    session = await CallSession.open(
        parts,
        dialog=line.dialog,
        stream=line.stream,
        caller=callback.number,
        dialled="callback",
        plan=parts.plan(),
        prompts=parts.prompts.current(),
        log=log,
        ticket_id=callback.ticket_id,
        priority=True,
    )
    await session.run_callback(callback)


async def follow_up(
    parts: CallParts,
    line: OperatorLine,
    *,
    number: str,
    ticket_id: int,
    plan: DialPlan,
    prompts: PromptSet,
    survey: RunSurvey,
    dialect: str | None,
    speed: float,
) -> None:
    """An answered follow-up call (回访, ivr/followups): the survey plan on the
    ticket, in the dialect and at the speed remembered for the number."""
    log = CallLog(parts.log.getChild("call"), {"call_id": line.dialog.call_id})
    session = await CallSession.open(
        parts,
        dialog=line.dialog,
        stream=line.stream,
        caller=number,
        dialled="followup",
        plan=plan,
        prompts=prompts,
        log=log,
        ticket_id=ticket_id,
    )
    if session.profile is None:  # forgotten since the ticket closed: as remembered then
        call = session.call
        if speed < 1.0:
            call.enter_elderly_mode(speed if speed in parts.settings().elderly.speeds else None)
        if dialect and dialect in parts.settings().dialects.offered:
            call.set_dialect(dialect)
    await session.run_followup(survey)


# -- one call ------------------------------------------------------------------
class CallSession:
    """One call, dialled in or called back: the LiveCall, the dial plan and
    prompts it keeps to the end, and the caller's profile as the call began."""

    def __init__(
        self,
        parts: CallParts,
        call: LiveCall,
        intake: CallIntake,
        *,
        plan: DialPlan | None,
        prompts: PromptSet,
        profile: CallerProfile | None,
    ) -> None:
        self._parts = parts
        self.call = call
        self.intake = intake
        self.plan = plan
        self.prompts = prompts
        self.profile = profile

    @classmethod
    async def open(
        cls,
        parts: CallParts,
        *,
        dialog: Dialog,
        stream: RtpStream,
        caller: str,
        dialled: str,
        plan: DialPlan | None,
        prompts: PromptSet,
        log: CallLog,
        ticket_id: int | None = None,
        priority: bool = False,
        inband_detector: InbandDtmfDetector | None = None,
        screen_pop_wait: float = 0.0,
    ) -> CallSession:
        """The one builder of a call, dialled in or called back, once its media
        flows: its record, its ticket intake (on ``ticket_id`` if it has one), the
        LiveCall in the hotline's calls, started the way the caller's last call
        ended (from the first prompt: their dialect, their speed)."""
        settings = parts.settings()
        call_id = dialog.call_id
        record = CallRecord(
            call_id=call_id,
            caller=caller,
            dialled=dialled,
            started_at=time.time(),
            answered_at=time.time(),
            codec=stream.codec,
            plan_version=plan.version if plan is not None else None,
            node=parts.node,
        )
        intake = parts.intake.for_call(call_id, caller, log)
        intake.ticket_id = ticket_id
        call = LiveCall(
            dialog=dialog,
            stream=stream,
            record=record,
            # to the counsellors first when the ticket says so (ivr/counsellors.py)
            transfer=CounsellorRouting(parts.desk, parts.settings, prompts, log).transfer,
            log=log,
            inband_detector=inband_detector,
            intake=intake,
            screen_pop_wait=screen_pop_wait,
            elderly=settings.elderly,
            dialect=settings.prompts.dialect,
            enterprise=settings.enterprise,
        )
        call.priority = priority
        parts.calls[call_id] = call
        profile = await parts.read(
            "caller profile", lambda: parts.profiles.get(caller), log, default=None
        )
        registry = parts.enterprises
        if registry is not None:
            business = await parts.read(
                "enterprise registry", lambda: registry.find(caller), log, default=None
            )
            if business is not None:
                call.enterprise = business.name
                log.info("enterprise caller: %s", business.name)
        session = cls(parts, call, intake, plan=plan, prompts=prompts, profile=profile)
        session._apply_profile()
        return session

    def _apply_profile(self) -> None:
        """Start the call the way the caller's last one ended."""
        profile, call = self.profile, self.call
        if profile is None:
            return
        settings = self._parts.settings()
        if profile.speed < 1.0:
            rendered = profile.speed in settings.elderly.speeds
            call.enter_elderly_mode(profile.speed if rendered else None)
        if profile.dialect and profile.dialect in settings.dialects.offered:
            call.set_dialect(profile.dialect)
        if profile.callback_to:
            call.callback_person = profile.callback_to
        if profile.beneficiary:
            self.intake.known_beneficiary = dict(profile.beneficiary)

    # -- run -------------------------------------------------------------------
    async def run_plan(self) -> None:
        """A dialled-in call: the dial plan to its end (words of an emergency
        cut it short), then ``end``."""
        call, record = self.call, self.call.record
        await self._start_record()
        try:
            outcome = await self._walk_plan()
            if record.outcome is None or record.outcome == "waiting":
                record.outcome = outcome
        except CallEnded as ended:
            if record.outcome == "waiting":
                record.outcome = "abandoned"
            elif record.outcome is None:
                record.outcome = f"ended_in_{record.path[-1]}" if record.path else "ended"
            call.log.info("call ended in the plan: %s", ended.reason.value)
        except Exception:
            call.log.exception("dial plan failed; hanging up")
            record.outcome = "error"
            call.end(EndReason.IVR_HANGUP)
        finally:
            await self.end()

    async def _walk_plan(self) -> str:
        """Run the dial plan; words of an emergency interrupt it at once and
        send the caller to 110 / 119 / 120 (unless already with an operator)."""
        parts, call, log = self._parts, self.call, self.call.log
        plan = self.plan
        assert plan is not None
        clock = parts.wall_clock
        walk = asyncio.ensure_future(
            run_dialplan(plan, call, self.prompts, log, parts.listen(), clock=clock)
        )
        emergency = self.intake.emergency
        watched: set[asyncio.Future[Any]] = {walk, emergency}
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if walk.done():
            return walk.result()
        found = emergency.result()
        uri = parts.settings().emergency.uri_for(found.service)
        if not uri or call.record.outcome == "bridged":
            if not uri:
                log.error(
                    "emergency %s: no [emergency] endpoint for %s configured",
                    found.kind,
                    found.service,
                )
            return await walk
        walk.cancel()
        with contextlib.suppress(asyncio.CancelledError, CallEnded):
            await walk
        if call.gone.done():
            raise CallEnded(call.gone.result())
        log.warning("emergency %s: transferring to %s (%s)", found.kind, found.service, uri)
        call.stream.stop_playback()
        call.mark(f"emergency_{found.service}")
        call.note_transfer(f"emergency_{found.service}", None, "waiting")
        result = await parts.desk.connect_direct(
            call, uri, f"emergency_{found.service}", ring_timeout=60.0
        )
        if result.outcome is TransferOutcome.BRIDGED:
            return "emergency_bridged"
        log.error("emergency %s: %s did not answer", found.kind, uri)
        return await run_dialplan(plan, call, self.prompts, log, parts.listen(), clock=clock)

    async def run_callback(self, callback: Callback) -> None:
        """A callback the caller answered: the callback greeting, then the
        callback queue with the plan's hold prompt; then ``end``."""
        call, record = self.call, self.call.record
        await self._start_record()
        call.log.info("callback %d answered by %s", callback.id, callback.number)
        try:
            call.mark("callback")
            greeting = self.prompts.get(CALLBACK_GREETING_KEY, call.speed, call.dialect)
            await call.play(greeting, barge_in=False)
            hold = None
            if self.plan is not None:
                holds = [
                    n.hold_prompt
                    for n in self.plan.nodes.values()
                    if isinstance(n, TransferNode) and n.hold_prompt
                ]
                hold = (
                    self.prompts.get(holds[0], call.speed, call.dialect)
                    if holds and holds[0]
                    else None
                )
            queue = callback_queue_name(self._parts.settings())
            result = await call.transfer(queue, hold_prompt=hold)
            record.outcome = record.outcome or result.outcome.value
        except CallEnded:
            if record.outcome == "waiting":
                record.outcome = "abandoned"
        finally:
            await self.end()

    async def run_followup(self, survey: RunSurvey) -> None:
        """A follow-up call answered: the survey plan to its end, then ``end``
        (never a callback: the call was ours)."""
        call, record = self.call, self.call.record
        await self._start_record()
        call.decline_callback()
        assert self.plan is not None
        try:
            record.outcome = await run_dialplan(
                self.plan,
                call,
                self.prompts,
                call.log,
                self._parts.listen(),
                clock=self._parts.wall_clock,
                survey=survey,
            )
        except CallEnded:
            record.outcome = record.outcome or (
                f"ended_in_{record.path[-1]}" if record.path else "ended"
            )
        except Exception:
            call.log.exception("follow-up survey failed; hanging up")
            record.outcome = "error"
            call.end(EndReason.IVR_HANGUP)
        finally:
            await self.end()

    async def _start_record(self) -> None:
        """The call's record as it begins; while the store is away only the
        record at the end is written (it holds all of it)."""
        parts, call = self._parts, self.call
        if parts.watch is not None and not parts.watch.up:
            call.log.info("call record not started: the store is unreachable (kept at the end)")
            return
        try:
            await parts.records.start(call.record)
        except Exception as exc:
            if parts.watch is None or not parts.watch.failed(exc):
                raise
            call.log.warning("call record not started: %s (kept at the end)", exc)

    # -- end -------------------------------------------------------------------
    async def end(self) -> None:
        """Every call, answered or called back, ends here: both legs down, the
        record stored, the caller's profile kept, a callback asked for if due."""
        parts, call = self._parts, self.call
        record = call.record
        if not call.gone.done():
            call.end(EndReason.IVR_HANGUP)
        call.stream.close()
        parts.calls.pop(call.call_id, None)
        parts.ended(record.end_reason)
        try:
            await parts.write(
                f"call record {record.call_id}",
                record_content(record),
                lambda: parts.records.update(record),
            )
        except Exception:
            call.log.exception("call record not stored: %s", record_content(record))
        try:
            if self._may_remember():
                await self.intake.write_after_ticket(
                    f"caller profile of {call.caller}",
                    f"speed {call.speed}, dialect {call.dialect}, "
                    f"callback to {call.callback_person}",
                    self._remember,
                )
        except Exception:
            call.log.exception("caller profile not saved")
        try:
            reason = self._callback_reason()
            if reason is not None:
                await self.intake.write_after_ticket(
                    f"callback request for {record.caller}",
                    f"call {record.call_id} ({reason.value}), number {record.caller}, "
                    f"callback to {call.callback_person}",
                    lambda: self._request_callback(reason),
                )
        except Exception:
            call.log.exception("callback request failed")
        call.log.info(
            "call over: %s, %s, path %s, digits %r",
            record.outcome,
            record.end_reason,
            ">".join(record.path),
            record.digits,
        )
        await self.intake.close()  # transcriptions still running fill the ticket

    def _may_remember(self) -> bool:
        """Something to keep for the caller's next call, or kept before."""
        call, settings = self.call, self._parts.settings()
        return (
            self.profile is not None
            or call.speed < 1.0
            or call.dialect != settings.prompts.dialect
            or call.callback_person != "caller"
            or self.intake.about_beneficiary
            or bool(self.intake.known_beneficiary)
        )

    async def _remember(self) -> None:
        """Keep the caller's choices for their next call (if there is something
        to keep, or something kept before that this call may have changed)."""
        parts, call = self._parts, self.call
        ticket_id = self.intake.ticket_id
        beneficiary: dict[str, str] = {}
        if ticket_id is not None:
            ticket = await parts.tickets.get(ticket_id)
            if ticket is not None and ticket.value("proxy"):
                for part in ("name", "phone", "address"):
                    value = ticket.value(f"beneficiary_{part}")
                    if value:
                        beneficiary[part] = value
        chose = (
            call.speed < 1.0
            or call.dialect != parts.settings().prompts.dialect
            or bool(beneficiary)
            or call.callback_person != "caller"
        )
        if not (chose or self.profile is not None):
            return
        await parts.profiles.remember(
            call.caller,
            speed=call.speed,
            dialect=call.dialect,
            last_ticket_id=ticket_id,
            beneficiary=beneficiary or None,
            callback_to=call.callback_person,
        )

    def _callback_reason(self) -> CallbackReason | None:
        """Why the caller is to be called back (abandoned, dropped), if they are."""
        parts, call = self._parts, self.call
        record = call.record
        if not parts.settings().callbacks.enabled:
            return None
        if record.dialled == "callback" and record.outcome == "abandoned":
            return None  # they answered our callback and hung up in the queue: their choice
        return should_call_back(
            record, no_callback=call.no_callback, started_greeting=bool(record.path)
        )

    async def _request_callback(self, reason: CallbackReason) -> None:
        """Ask for a callback (the ticket's urgency and whom to call read now)."""
        parts, call = self._parts, self.call
        record = call.record
        urgency: str | None = None
        emergency = False
        ticket_id = self.intake.ticket_id
        if ticket_id is not None:
            ticket = await parts.tickets.get(ticket_id)
            if ticket is not None:
                urgency = ticket.value("urgency")
                emergency = ticket.emergency is not None
        number = record.caller
        if call.callback_person == "beneficiary" and ticket_id is not None:
            ticket = await parts.tickets.get(ticket_id)
            phone = ticket.value("beneficiary_phone") if ticket is not None else None
            if phone:
                number = phone  # 亲友代办: the caller asked us to call the person back
            else:
                call.log.warning("callback to the beneficiary asked, but no number heard")
        callback = await parts.callback_queue.request(
            number,
            call_id=record.call_id,
            reason=reason,
            now=parts.wall_clock(),
            ticket_id=ticket_id,
            urgency=urgency if urgency in ("紧急", "较急", "一般") else None,
            emergency=emergency,
            enqueued_at=call.queued_at,
            position=call.queue_position,
        )
        call.log.info("callback %d requested (%s)", callback.id, reason.value)
        parts.wake_callbacks()


# -- while calls go on ---------------------------------------------------------
async def record_conversation(
    parts: CallParts,
    call: WaitingCaller,
    leg: OperatorLeg,
    operator: str,
    on_recording: Callable[[ConversationRecording], None] | None = None,
) -> FinishRecording | None:
    """The desk bridged ``call`` to ``operator``: start recording the
    conversation (``[storage] record_conversations``); what finishes it when
    the call is over. ``on_recording``: told of the recording (a consultation
    records its mix)."""
    storage = parts.settings().storage
    if not storage.record_conversations:
        return None
    records = parts.records
    started = time.time()
    name = re.sub(r"[^A-Za-z0-9._-]", "_", call.call_id)[:80]
    day = time.strftime("%Y-%m-%d", time.localtime(started))
    path = storage.recordings_dir / "calls" / day / f"{name}-{int(started)}.wav"
    live = parts.calls.get(call.call_id)
    log = live.log if live is not None else parts.log
    recording = ConversationRecording(path, call.stream, leg.stream, log)
    if on_recording is not None:
        on_recording(recording)
    recording_id: int | None = None
    if parts.watch is None or parts.watch.up:
        try:
            recording_id = await records.add_conversation(
                call.call_id, operator, str(path), started
            )
        except Exception as exc:
            if parts.watch is None or not parts.watch.failed(exc):
                raise
    if recording_id is None:
        log.warning("conversation recorded to %s; its row is kept until the store is back", path)

    async def finish() -> None:
        seconds = await recording.close()
        if recording_id is not None:
            await parts.write(
                f"conversation recording {recording_id} of call {call.call_id}",
                f"{path}, {seconds:.1f} s",
                lambda: records.conversation_done(recording_id, seconds),
            )
            return

        async def add() -> None:
            added = await records.add_conversation(call.call_id, operator, str(path), started)
            await records.conversation_done(added, seconds)

        await parts.write(
            f"conversation recording of call {call.call_id}",
            f"{path}, operator {operator}, {seconds:.1f} s",
            add,
        )

    return finish


async def watch_media(parts: CallParts) -> None:
    """Dead-call detection: no RTP from the caller for rtp_timeout seconds."""
    loop = asyncio.get_running_loop()
    while True:
        timeout = parts.settings().sip.rtp_timeout  # may change on a reload
        await asyncio.sleep(min(1.0, timeout / 4))
        now = loop.time()
        for call in list(parts.calls.values()):
            stream = call.stream
            if stream.on_hold or call.gone.done():
                continue
            if now - stream.last_rx > timeout:
                call.log.warning("no RTP for %.1f s: ending the call", now - stream.last_rx)
                call.end(EndReason.RTP_TIMEOUT)
