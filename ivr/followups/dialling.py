"""The follow-up dialler: takes due follow-ups from the queue, rings the
number through the trunk, runs the survey on an answered call, and records
what came of it.

Its own loop, not the callbacks': a follow-up needs no operator, so it is
never held for a free one (at most ``max_dialing`` ring at once, on every node
together).  Dial results map to queue outcomes as callbacks' do: busy ->
busy, no answer -> no_answer, a number that does not exist -> no_answer at
once, any other failure -> tried again per the policy.  After the call:

* the answer (or ``no_answer`` when the citizen answered the phone but not
  the question, asked twice) on the follow-up;
* a spoken comment as a note on the ticket;
* 不满意: the ticket reopened (status open, the history says why) and raised
  to a supervisor: a note, and a console event ``raised`` that the admin
  console shows (docs/decisions.md, "Follow-up calls").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiosipua.auth import SipDigestAuth

from ivr.callbacks.dialling import BUSY, NO_ANSWER, NOT_A_NUMBER, REFUSED_US
from ivr.dialer import OperatorLine, SipDialer
from ivr.followups.model import Followup, FollowupState, Outcome
from ivr.followups.queue import FollowupQueue
from ivr.followups.survey import COMMENT_NOTE, SurveyRun
from ivr.sip.outgoing import Failed
from ivr.store_watch import FailingRounds

IDLE_WAIT_S = 30.0
FULL_POLL_S = 2.0  # due, but max_dialing are ringing: look again soon
WHO = "followup"  # the "who" of ticket changes made by follow-ups
RAISED_NOTE = "回访不满意：工单已重新打开，提交班长处理"
_DIALABLE = re.compile(r"\+?[0-9]{3,20}")


@dataclass(frozen=True)
class Trunk:
    """Where and as whom follow-ups are dialled ([followups], else [callbacks])."""

    dial_uri: str  # {number} is replaced
    caller_id: str
    ring_timeout: float
    username: str = ""
    password: str = ""


# runs the answered call: the survey plan on the ticket (ivr.call_session.follow_up)
RunCall = Callable[[OperatorLine, Followup, SurveyRun], Awaitable[None]]
# makes the survey for a follow-up (the ticket's matter read from the store)
MakeSurvey = Callable[[Followup], Awaitable[SurveyRun]]
# ticket changes: (ticket id, note) / (ticket id, why) reopen and raise
AddNote = Callable[[int, str], Awaitable[None]]
Raise = Callable[[int, str], Awaitable[None]]


class FollowupDialler:
    def __init__(
        self,
        *,
        queue: FollowupQueue,
        dialer: SipDialer,
        trunk: Callable[[], Trunk],
        make_survey: MakeSurvey,
        run_call: RunCall,
        add_note: AddNote,
        raise_ticket: Raise,
        clock: Callable[[], float],
        log: logging.Logger,
    ) -> None:
        self.queue = queue
        self._dialer = dialer
        self._trunk = trunk
        self._make_survey = make_survey
        self._run_call = run_call
        self._add_note = add_note
        self._raise = raise_ticket
        self._clock = clock
        self._log = log
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self.dialled: list[tuple[int, float]] = []  # (follow-up id, when the INVITE left)

    async def start(self) -> None:
        recovered = await self.queue.recover(now=self._clock(), node=self.queue.node)
        if recovered:
            self._log.warning(
                "follow-ups: %d left dialling by a previous run are due again", recovered
            )
        self._task = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        self._wake.set()

    def stop_claiming(self) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def attempts(self) -> set[asyncio.Task[None]]:
        return set(self._attempts)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for attempt in list(self._attempts):
            attempt.cancel()
        if self._attempts:
            await asyncio.wait(self._attempts, timeout=5)

    async def _run(self) -> None:
        failing = FailingRounds(self._log, "follow-ups: claiming due follow-ups failed")
        while True:
            self._wake.clear()
            try:
                taken = await self.queue.take_back_lost(now=self._clock())
                if taken:
                    self._log.warning("follow-ups: %d taken back from lost nodes", taken)
                claimed = await self.queue.claim_due(now=self._clock())
            except Exception as exc:  # the store is away: said once, not every round
                failing.failed(exc, with_traceback=True)
                claimed = []
            else:
                failing.worked()
            for followup in claimed:
                task = asyncio.ensure_future(self._attempt(followup))
                self._attempts.add(task)
                task.add_done_callback(self._attempts.discard)
            try:
                next_at = await self.queue.next_due_at()
            except Exception:
                next_at = None
            if next_at is None:
                wait = IDLE_WAIT_S
            elif next_at <= self._clock():
                wait = FULL_POLL_S
            else:
                wait = next_at - self._clock()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait, IDLE_WAIT_S))

    async def _attempt(self, followup: Followup) -> None:
        trunk = self._trunk()
        if _DIALABLE.fullmatch(followup.number) is None:
            await self._finish(
                followup,
                FollowupState.PENDING,
                f"{followup.number!r} is not a dialable number",
                give_up=True,
            )
            return
        uri = trunk.dial_uri.replace("{number}", followup.number)
        self._log.info(
            "follow-up %d (ticket %d): calling %s (attempt %d)",
            followup.id,
            followup.ticket_id,
            uri,
            followup.attempts,
        )
        self.dialled.append((followup.id, self._clock()))
        never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            result = await self._dialer.call_out(
                uri,
                caller_id=trunk.caller_id,
                timeout=trunk.ring_timeout,
                abort=never,
                extra_headers={"X-Followup-Id": str(followup.id)},
                auth=SipDigestAuth(trunk.username, trunk.password) if trunk.username else None,
            )
        except Exception as exc:
            self._log.exception("follow-up %d: dialling %s failed", followup.id, uri)
            await self._finish(followup, FollowupState.PENDING, f"dialling failed: {exc}")
            return
        if isinstance(result, Failed):
            await self._failed(followup, result)
            return
        answered = await self.queue.outcome(
            followup.id, FollowupState.CONNECTED, now=self._clock(), detail="answered"
        )
        if answered.state is FollowupState.CANCELLED:
            self._log.info("follow-up %d cancelled while ringing; hanging up", followup.id)
            await result.hangup()
            return
        survey: SurveyRun | None = None
        try:
            survey = await self._make_survey(answered)
            await self._run_call(result, answered, survey)
        except Exception:
            self._log.exception("follow-up %d: the call failed", followup.id)
            if survey is None:
                await result.hangup()
        finally:
            await self._record(answered, survey)
            self.wake()

    async def _record(self, followup: Followup, survey: SurveyRun | None) -> None:
        """What the survey got, on the follow-up and the ticket."""
        now = self._clock()
        outcome = survey.outcome if survey is not None else None
        if survey is not None and survey.comment:
            await self.queue.add_comment(followup.id, survey.comment, now=now)
            await self._add_note(followup.ticket_id, f"{COMMENT_NOTE}{survey.comment}")
        if outcome is None:
            heard = "; ".join(survey.unrecognised) if survey is not None else ""
            detail = "answered the phone, no answer to the survey" + (
                f" ({heard})" if heard else ""
            )
            await self.queue.answered(followup.id, Outcome.NO_ANSWER, now=now, detail=detail)
            self._log.info("follow-up %d: %s", followup.id, detail)
            return
        await self.queue.answered(followup.id, outcome, now=now)
        self._log.info(
            "follow-up %d (ticket %d): %s", followup.id, followup.ticket_id, outcome.value
        )
        if outcome is Outcome.UNSATISFIED:
            await self._raise(followup.ticket_id, f"回访不满意（回访 {followup.id}）")

    async def _failed(self, followup: Followup, failure: Failed) -> None:
        status = failure.status
        what = f"{status} {failure.reason}"
        if status == 408 and "local" in failure.reason.lower():
            await self._finish(
                followup,
                FollowupState.PENDING,
                f"the trunk did not answer at all ({what}); check followups.dial_uri",
            )
        elif status in BUSY:
            await self._finish(followup, FollowupState.BUSY, f"busy ({what})")
        elif status in NO_ANSWER:
            await self._finish(followup, FollowupState.NO_ANSWER, f"no answer ({what})")
        elif status in NOT_A_NUMBER:
            await self._finish(
                followup, FollowupState.PENDING, f"number not reachable ({what})", give_up=True
            )
        elif status in REFUSED_US:
            await self._finish(
                followup,
                FollowupState.PENDING,
                f"the trunk refused our credentials ({what}); check the trunk's username/password",
            )
        else:
            await self._finish(followup, FollowupState.PENDING, f"trunk error ({what})")

    async def _finish(
        self, followup: Followup, state: FollowupState, detail: str, *, give_up: bool = False
    ) -> None:
        self._log.warning("follow-up %d to %s: %s", followup.id, followup.number, detail)
        after = await self.queue.outcome(
            followup.id, state, now=self._clock(), detail=detail, give_up=give_up
        )
        if after.outcome is Outcome.NO_ANSWER:
            self._log.warning(
                "follow-up %d (ticket %d): no answer after %d attempts",
                followup.id,
                followup.ticket_id,
                after.attempts,
            )
        self.wake()
