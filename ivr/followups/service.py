"""Follow-ups as the Hotline runs them: the queue (hooked to ticket closing),
the survey plan and its prompts, the dialler; built by ivr/server.py's
Hotline (the composition root) and held by it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from ivr.call import Call
from ivr.call_session import CallParts, follow_up
from ivr.callbacks.policy import CallbackPolicy
from ivr.config import FollowupSettings, Settings
from ivr.dialer import OperatorLine, SipDialer
from ivr.dialplan.load import load_dialplan
from ivr.dialplan.model import DialPlan
from ivr.followups.dialling import RAISED_NOTE, WHO, FollowupDialler, Trunk
from ivr.followups.model import Followup
from ivr.followups.queue import FollowupQueue
from ivr.followups.survey import SurveyRun
from ivr.media.prompt_audio import PromptAudio
from ivr.prompts import PromptLibrary, numbered
from ivr.store import Database, Transaction
from ivr.tickets import TicketStore
from ivr.tickets.events import TicketEvents


def followup_policy(settings: FollowupSettings) -> CallbackPolicy:
    """The callbacks' rules, with [followups]' own values."""
    quiet = settings.quiet_hours.split("-", 1) if settings.quiet_hours else None
    return CallbackPolicy(
        retry_delays=settings.retry,
        quiet_hours=(quiet[0], quiet[1]) if quiet else None,
        timezone=settings.timezone,
        max_attempts_per_hour=settings.max_attempts_per_hour,
        max_dialing=settings.max_dialing,
    )


def trunk_of(settings: Settings) -> Trunk:
    f, cb = settings.followups, settings.callbacks
    return Trunk(
        dial_uri=f.dial_uri or cb.dial_uri,
        caller_id=f.caller_id or cb.caller_id,
        ring_timeout=f.ring_timeout,
        username=cb.username,
        password=cb.password,
    )


def load_survey_plan(settings: Settings, recorded: set[str]) -> DialPlan:
    """[followups] plan, checked like the hotline's plan (DialPlanError: file:line)."""
    return load_dialplan(
        settings.followups.plan,
        queues=set(settings.queues),
        recorded_prompts=recorded,
        dialects=settings.dialects.offered,
        speeds=settings.elderly.speeds,
    )


class FollowUps:
    def __init__(
        self,
        *,
        db: Database,
        settings: Callable[[], Settings],
        tickets: TicketStore,
        events: TicketEvents,
        dialer: SipDialer,
        node: str | None,
        clock: Callable[[], float],
        log: logging.Logger,
    ) -> None:
        self._settings = settings
        self._tickets = tickets
        self._events = events
        self._dialer = dialer
        self._clock = clock
        self._log = log
        self.queue = FollowupQueue(db, followup_policy(settings().followups), node=node)
        self.db = db
        self.plan: DialPlan | None = None
        self.prompts: PromptLibrary | None = None
        self.dialler: FollowupDialler | None = None

    @property
    def plan_path(self) -> Path:
        return self._settings().followups.plan

    async def start(
        self, parts: CallParts, *, load_speech: Callable[[DialPlan], Awaitable[None]]
    ) -> None:
        """Load the survey plan (and the speech engine it listens with) and
        build its prompts (errors stop the start), queue a follow-up on every
        closing, and start dialling."""
        settings = self._settings()
        prompts = PromptLibrary.from_settings(settings, self._log.getChild("prompts"))
        self.plan = load_survey_plan(settings, prompts.recorded_keys())
        await load_speech(self.plan)
        await prompts.build(numbered(self.plan.prompts), self.plan.dialect_prompts)
        self.prompts = prompts
        self._tickets.on_closed = self._ticket_closed
        self.dialler = FollowupDialler(
            queue=self.queue,
            dialer=self._dialer,
            trunk=lambda: trunk_of(self._settings()),
            make_survey=self._survey_for,
            run_call=lambda line, followup, survey: self._run_call(parts, line, followup, survey),
            add_note=lambda ticket_id, note: self._tickets.add_note(ticket_id, note, who=WHO),
            raise_ticket=self.raise_ticket,
            clock=self._clock,
            log=self._log,
        )
        await self.dialler.start()
        self._log.info(
            "follow-ups: plan %s version %s, dialling through %s",
            self.plan.name,
            self.plan.version,
            trunk_of(settings).dial_uri,
        )

    def reconfigure(self, settings: Settings) -> None:
        """A reload: the new retry, quiet-hour and limit values from now on."""
        self.queue.policy = followup_policy(settings.followups)
        self.wake()

    def wake(self) -> None:
        if self.dialler is not None:
            self.dialler.wake()

    async def _ticket_closed(
        self, tx: Transaction, ticket_id: int, caller: str, fields: dict[str, object], _at: float
    ) -> None:
        followup = await self.queue.ticket_closed(tx, ticket_id, caller, fields, now=self._clock())
        self._log.info(
            "follow-up %d queued for ticket %d (%s)", followup.id, ticket_id, followup.number
        )
        self.wake()

    async def _survey_for(self, followup: Followup) -> SurveyRun:
        ticket = await self._tickets.get(followup.ticket_id)
        library = self.prompts
        assert library is not None

        async def speak(text: str, call: Call) -> PromptAudio:
            return await library.say(text, dialect=call.dialect, speed=call.speed)

        return SurveyRun(
            fields=ticket.fields if ticket is not None else {},
            reported_at=ticket.created_at if ticket is not None else followup.closed_at,
            zone=self.queue.policy.zone,
            speak=speak,
        )

    async def _run_call(
        self, parts: CallParts, line: OperatorLine, followup: Followup, survey: SurveyRun
    ) -> None:
        assert self.plan is not None and self.prompts is not None
        await follow_up(
            parts,
            line,
            number=followup.number,
            ticket_id=followup.ticket_id,
            plan=self.plan,
            prompts=self.prompts.current(),
            survey=survey,
            dialect=followup.dialect,
            speed=followup.speed,
        )

    async def raise_ticket(self, ticket_id: int, why: str) -> None:
        """不满意: the ticket is open again (its history says who and why) and
        raised to a supervisor (a note, and a ``raised`` event on the consoles)."""
        ticket = await self._tickets.get(ticket_id)
        if ticket is None:
            self._log.error("follow-up: ticket %d to reopen does not exist", ticket_id)
            return
        if ticket.status == "closed":
            await self._tickets.edit(ticket_id, {"status": "open"}, who=WHO)
        await self._tickets.add_note(ticket_id, f"{RAISED_NOTE}（{why}）", who=WHO)
        ticket = await self._tickets.get(ticket_id)
        if ticket is not None:
            self._events.publish("raised", {**ticket.to_json(), "raised": why})
        self._log.warning("ticket %d reopened and raised to a supervisor: %s", ticket_id, why)

    @property
    def attempts(self) -> set[asyncio.Task[None]]:
        """The follow-ups being dialled or in a call now."""
        return self.dialler.attempts if self.dialler is not None else set()

    def stop_claiming(self) -> None:
        if self.dialler is not None:
            self.dialler.stop_claiming()

    async def stop(self) -> None:
        if self.dialler is not None:
            await self.dialler.stop()
