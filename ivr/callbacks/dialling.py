"""The callback dialler: takes due callbacks from the queue, rings the
caller through the trunk, and hands an answered call to the server (which
plays the callback greeting and queues the caller for an operator, with the
earlier ticket).

One loop: claim what is due (never more than operators are free, unless
customer-first), start one task per attempt, then sleep until the next
callback is due or ``wake()`` is called (a new drop).  Dial results map to
queue outcomes: busy -> busy, no answer -> no_answer, a number that does not
exist -> failed at once, a trunk that refuses us -> failed (retried per the
policy), each with the reason in the callback's history and the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiosipua.auth import SipDigestAuth

from ivr.callbacks.model import Callback, CallbackState
from ivr.callbacks.queue import CallbackQueue
from ivr.config import CallbackSettings
from ivr.dialer import OperatorLine, SipDialer
from ivr.sip.outgoing import Failed
from ivr.store_watch import FailingRounds

BUSY = frozenset({486, 600})
NO_ANSWER = frozenset({408, 480, 487})
NOT_A_NUMBER = frozenset({404, 484, 604})
REFUSED_US = frozenset({401, 403, 407})
_DIALABLE = re.compile(r"\+?[0-9]{3,20}")
IDLE_WAIT_S = 30.0
OPERATOR_POLL_S = 2.0  # the desk also wakes us when an operator is free

StartCall = Callable[[OperatorLine, Callback], Awaitable[None]]
FlagTicket = Callable[[int, str], Awaitable[None]]


class CallbackDialler:
    def __init__(
        self,
        *,
        queue: CallbackQueue,
        dialer: SipDialer,
        settings: CallbackSettings,
        free_operators: Callable[[], int],
        start_call: StartCall,
        flag_ticket: FlagTicket,
        clock: Callable[[], float],
        log: logging.Logger,
    ) -> None:
        self.queue = queue
        self._dialer = dialer
        self._settings = settings
        self._free_operators = free_operators
        self._start_call = start_call
        self._flag_ticket = flag_ticket
        self._clock = clock
        self._log = log
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._auth = (
            SipDigestAuth(settings.username, settings.password) if settings.username else None
        )
        self.dialled: list[tuple[int, float]] = []  # (callback id, when the INVITE left)

    async def start(self) -> None:
        # its own dials only: another node's are its own, a lost node's its survivor's
        recovered = await self.queue.recover(now=self._clock(), node=self.queue.node)
        if recovered:
            self._log.warning(
                "callbacks: %d left dialling by a previous run are pending again", recovered
            )
        self._task = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        self._wake.set()

    def stop_claiming(self) -> None:
        """Dial no new callback (a draining node); those ringing or connected go on."""
        if self._task is not None:
            self._task.cancel()

    @property
    def attempts(self) -> set[asyncio.Task[None]]:
        """The callbacks being dialled or in a call now."""
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
        failing = FailingRounds(self._log, "callbacks: claiming due callbacks failed")
        while True:
            self._wake.clear()
            try:
                claimed = await self.queue.claim_due(
                    now=self._clock(), free_operators=self._free_operators()
                )
            except Exception as exc:  # the store is away: said once, not every round
                failing.failed(exc, with_traceback=True)
                claimed = []
            else:
                failing.worked()
            for callback in claimed:
                task = asyncio.ensure_future(self._attempt(callback))
                self._attempts.add(task)
                task.add_done_callback(self._attempts.discard)
            next_at = await self.queue.next_due_at()
            if next_at is None:
                wait = IDLE_WAIT_S
            elif next_at <= self._clock():
                wait = OPERATOR_POLL_S  # due, but no operator is free: look again soon
            else:
                wait = next_at - self._clock()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait, IDLE_WAIT_S))

    async def _attempt(self, callback: Callback) -> None:
        now = self._clock()
        if _DIALABLE.fullmatch(callback.number) is None:
            await self._finish(
                callback,
                CallbackState.FAILED,
                f"{callback.number!r} is not a dialable number",
                give_up=True,
            )
            return
        uri = self._settings.dial_uri.replace("{number}", callback.number)
        self._log.info("callback %d: calling %s (attempt %d)", callback.id, uri, callback.attempts)
        self.dialled.append((callback.id, now))
        never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            result = await self._dialer.call_out(
                uri,
                caller_id=self._settings.caller_id,
                timeout=self._settings.ring_timeout,
                abort=never,
                extra_headers={"X-Callback-Id": str(callback.id)},
                auth=self._auth,
            )
        except Exception as exc:
            self._log.exception("callback %d: dialling %s failed", callback.id, uri)
            await self._finish(callback, CallbackState.FAILED, f"dialling failed: {exc}")
            return
        if isinstance(result, Failed):
            await self._failed(callback, result)
            return
        answered = await self.queue.outcome(
            callback.id, CallbackState.CONNECTED, now=self._clock(), detail="answered"
        )
        if answered.callback.state is CallbackState.CANCELLED:
            # the caller rang us while we rang them: they are already on the line
            self._log.info("callback %d cancelled while ringing; hanging up", callback.id)
            await result.hangup()
            return
        try:
            await self._start_call(result, callback)
        except Exception:
            self._log.exception("callback %d: the call failed", callback.id)
        finally:
            await self.queue.done(callback.id, now=self._clock(), detail="call over")
            self.wake()

    async def _failed(self, callback: Callback, failure: Failed) -> None:
        status = failure.status
        what = f"{status} {failure.reason}"
        if status == 408 and "local" in failure.reason.lower():
            # not even 100 Trying: the trunk is down or the address is wrong
            await self._finish(
                callback,
                CallbackState.FAILED,
                f"the trunk did not answer at all ({what}); check callbacks.dial_uri",
            )
        elif status in BUSY:
            await self._finish(callback, CallbackState.BUSY, f"busy ({what})")
        elif status in NO_ANSWER:
            await self._finish(callback, CallbackState.NO_ANSWER, f"no answer ({what})")
        elif status in NOT_A_NUMBER:
            await self._finish(
                callback, CallbackState.FAILED, f"number not reachable ({what})", give_up=True
            )
        elif status in REFUSED_US:
            await self._finish(
                callback,
                CallbackState.FAILED,
                f"the trunk refused our credentials ({what}); check callbacks.username/password",
            )
        else:
            await self._finish(callback, CallbackState.FAILED, f"trunk error ({what})")

    async def _finish(
        self, callback: Callback, state: CallbackState, detail: str, *, give_up: bool = False
    ) -> None:
        self._log.warning("callback %d to %s: %s", callback.id, callback.number, detail)
        result = await self.queue.outcome(
            callback.id, state, now=self._clock(), detail=detail, give_up=give_up
        )
        if result.ticket_to_flag is not None:
            await self._flag_ticket(
                result.ticket_to_flag, f"callback to {callback.number} given up: {detail}"
            )
        self.wake()
