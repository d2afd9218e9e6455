"""Operator queues: who is free, who waits, who is rung next.

A caller transferred to a queue waits in line (first come, first served)
hearing the hold prompt. When they are at the head of the line and an
operator of the queue is free, that operator is rung; one who does not
answer within ``ring_timeout`` is skipped for the next. On answer the two
legs are bridged through the IVR, and when either side hangs up the other
is hung up too.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ivr.call import CallEnded, EndReason, TransferOutcome, TransferResult
from ivr.media.prompt_audio import PromptAudio
from ivr.media.rtp import RtpStream, bridge, unbridge


class OperatorState(enum.StrEnum):
    FREE = "free"
    RINGING = "ringing"
    TALKING = "talking"
    WRAP_UP = "wrap_up"


@dataclass
class Operator:
    uri: str
    queue: str
    state: OperatorState = OperatorState.FREE
    calls_taken: int = 0


class OperatorLeg(Protocol):
    """An answered call to an operator (made by the dialer)."""

    @property
    def stream(self) -> RtpStream: ...

    @property
    def ended(self) -> asyncio.Future[object]: ...

    async def hangup(self) -> None: ...


class Dialer(Protocol):
    async def dial(
        self,
        uri: str,
        *,
        caller_stream: RtpStream,
        caller_id: str,
        timeout: float,
        abort: asyncio.Future[EndReason],
        extra_headers: dict[str, str] | None = None,
    ) -> OperatorLeg | None: ...


class WaitingCaller(Protocol):
    """What the desk needs of a caller's call."""

    @property
    def call_id(self) -> str: ...

    @property
    def caller(self) -> str: ...

    @property
    def stream(self) -> RtpStream: ...

    @property
    def gone(self) -> asyncio.Future[EndReason]: ...

    def end(self, reason: EndReason) -> None: ...

    def note_transfer(self, queue: str, operator: str | None, outcome: str) -> None: ...

    def note_queued(self, position: int) -> None:
        """The caller joined the line at ``position`` (1 = next)."""
        ...

    @property
    def priority(self) -> bool:
        """Keeps an earlier place in line (called back, or ringing again)."""
        ...

    async def screen_pop(self) -> dict[str, str]:
        """Headers for the INVITE to the operator (the ticket goes with the call)."""
        ...


@dataclass
class Queue:
    name: str
    operators: list[Operator]
    max_waiting: int
    max_wait: float
    line: list[str] = field(default_factory=list)  # call ids, head first
    priority: set[str] = field(default_factory=set)  # call ids that keep an earlier place
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


@dataclass(frozen=True)
class QueueConfig:
    operators: Sequence[str]
    max_waiting: int
    max_wait: float


class OperatorDesk:
    def __init__(
        self,
        queues: Mapping[str, QueueConfig],
        *,
        dialer: Dialer,
        ring_timeout: float,
        wrap_up: float,
        log: logging.Logger,
    ) -> None:
        self._dialer = dialer
        self._ring_timeout = ring_timeout
        self._wrap_up = wrap_up
        self._log = log
        self._tasks: set[asyncio.Future[None]] = set()
        self.on_operator_free: list[Callable[[], None]] = []
        self.queues: dict[str, Queue] = {
            name: Queue(
                name=name,
                operators=[Operator(uri=uri, queue=name) for uri in cfg.operators],
                max_waiting=cfg.max_waiting,
                max_wait=cfg.max_wait,
            )
            for name, cfg in queues.items()
        }

    def free_operators(self, queue: str) -> int:
        q = self.queues.get(queue)
        return 0 if q is None else sum(op.state is OperatorState.FREE for op in q.operators)

    def waiting(self, queue: str) -> int:
        return len(self.queues[queue].line)

    async def connect(
        self, call: WaitingCaller, queue_name: str, hold_prompt: PromptAudio | None
    ) -> TransferResult:
        queue = self.queues.get(queue_name)
        if queue is None:
            self._log.error("transfer to unknown queue %r", queue_name)
            return TransferResult(TransferOutcome.NO_OPERATOR)
        if len(queue.line) >= queue.max_waiting:
            self._log.warning("queue %s full (%d waiting): overflow", queue.name, len(queue.line))
            call.note_transfer(queue.name, None, "queue_full")
            return TransferResult(TransferOutcome.QUEUE_FULL)
        if call.priority:
            # a caller called back, or ringing again after a drop, keeps their
            # place: ahead of everyone who joined since, behind earlier such callers
            ahead = [cid for cid in queue.line if cid in queue.priority]
            queue.line.insert(len(ahead), call.call_id)
            queue.priority.add(call.call_id)
        else:
            queue.line.append(call.call_id)
        call.note_queued(queue.line.index(call.call_id) + 1)
        hold = (
            call.stream.play(hold_prompt.frames(call.stream.codec), loop_forever=True)
            if (hold_prompt is not None)
            else None
        )
        call.note_transfer(queue.name, None, "waiting")
        try:
            return await asyncio.wait_for(self._wait_and_bridge(call, queue), queue.max_wait)
        except TimeoutError:
            self._log.info("no operator of %s within %.0f s", queue.name, queue.max_wait)
            call.note_transfer(queue.name, None, "no_operator")
            return TransferResult(TransferOutcome.NO_OPERATOR)
        finally:
            if call.call_id in queue.line:
                queue.line.remove(call.call_id)
            queue.priority.discard(call.call_id)
            if hold is not None:
                hold.stop()
            async with queue.changed:
                queue.changed.notify_all()

    async def _next_operator(
        self, call: WaitingCaller, queue: Queue, skipped: set[str]
    ) -> Operator:
        """Wait until this caller heads the line and an operator is free."""
        while True:
            if call.gone.done():
                raise CallEnded(call.gone.result())
            free = [op for op in queue.operators if op.state is OperatorState.FREE]
            untried = [op for op in free if op.uri not in skipped]
            if free and not untried:
                skipped.clear()  # everybody was tried: start over
                untried = free
            if queue.line and queue.line[0] == call.call_id and untried:
                operator = min(untried, key=lambda op: op.calls_taken)
                operator.state = OperatorState.RINGING
                return operator
            async with queue.changed:
                waiter: asyncio.Future[Any] = asyncio.ensure_future(queue.changed.wait())
                watched: set[asyncio.Future[Any]] = {waiter, call.gone}
                done, _ = await asyncio.wait(
                    watched, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                if waiter not in done:
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter

    async def _wait_and_bridge(self, call: WaitingCaller, queue: Queue) -> TransferResult:
        skipped: set[str] = set()
        while True:
            operator = await self._next_operator(call, queue, skipped)
            try:
                headers = await call.screen_pop()
            except Exception:
                self._log.exception("screen pop for %s failed; ringing without it", operator.uri)
                headers = {}
            try:
                leg = await self._dialer.dial(
                    operator.uri,
                    caller_stream=call.stream,
                    caller_id=call.caller or "anonymous",
                    timeout=self._ring_timeout,
                    abort=call.gone,
                    extra_headers=headers,
                )
            except asyncio.CancelledError:  # the caller was taken elsewhere (emergency)
                self._freed(operator)
                self._background(self._notify(queue))
                raise
            except Exception:
                self._log.exception("dialing operator %s failed", operator.uri)
                leg = None
            if leg is None:
                self._freed(operator)
                skipped.add(operator.uri)
                await self._notify(queue)
                if call.gone.done():
                    raise CallEnded(call.gone.result())
                continue
            if call.gone.done():
                await leg.hangup()
                self._freed(operator)
                await self._notify(queue)
                raise CallEnded(call.gone.result())
            operator.state = OperatorState.TALKING
            operator.calls_taken += 1
            if call.call_id in queue.line:
                queue.line.remove(call.call_id)
            await self._notify(queue)
            await self._talk(call, leg, operator, queue)
            return TransferResult(TransferOutcome.BRIDGED, operator=operator.uri)

    async def connect_direct(
        self, call: WaitingCaller, uri: str, label: str, *, ring_timeout: float
    ) -> TransferResult:
        """Bridge the caller straight to ``uri`` (an emergency service), no queue."""
        try:
            headers = await call.screen_pop()
        except Exception:
            headers = {}
        leg = await self._dialer.dial(
            uri,
            caller_stream=call.stream,
            caller_id=call.caller or "anonymous",
            timeout=ring_timeout,
            abort=call.gone,
            extra_headers=headers,
        )
        if leg is None:
            return TransferResult(TransferOutcome.NO_OPERATOR)
        if call.gone.done():
            await leg.hangup()
            raise CallEnded(call.gone.result())
        direct = Queue(name=label, operators=[], max_waiting=0, max_wait=0)
        await self._talk(call, leg, Operator(uri=uri, queue=label), direct, release=False)
        return TransferResult(TransferOutcome.BRIDGED, operator=uri)

    async def _talk(
        self,
        call: WaitingCaller,
        leg: OperatorLeg,
        operator: Operator,
        queue: Queue,
        *,
        release: bool = True,
    ) -> None:
        call.note_transfer(queue.name, operator.uri, "bridged")
        bridge(call.stream, leg.stream)
        self._log.info("bridged to operator %s", operator.uri)
        try:
            either: set[asyncio.Future[Any]] = {call.gone, leg.ended}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            unbridge(call.stream, leg.stream)
            if not call.gone.done():
                ended = leg.ended
                failed = (
                    ended.done()
                    and not ended.cancelled()
                    and str(ended.result()) == "transport_error"
                )
                if failed:  # the operator's leg died mid-call: the caller is called back
                    self._log.warning("operator %s leg failed mid-call", operator.uri)
                    call.note_transfer(queue.name, operator.uri, "operator_failed")
                call.end(EndReason.OPERATOR_HANGUP)
            await leg.hangup()
            self._log.info("operator %s call over", operator.uri)
            if release:
                self._release_later(operator, queue)

    def _release_later(self, operator: Operator, queue: Queue) -> None:
        if self._wrap_up <= 0:
            self._freed(operator)
            self._background(self._notify(queue))
            return
        operator.state = OperatorState.WRAP_UP

        async def release() -> None:
            await asyncio.sleep(self._wrap_up)
            self._freed(operator)
            await self._notify(queue)

        self._background(release())

    def _freed(self, operator: Operator) -> None:
        """``operator`` is free again: tell whoever waits for one (the callback dialler)."""
        operator.state = OperatorState.FREE
        for listener in list(self.on_operator_free):
            listener()

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _notify(queue: Queue) -> None:
        async with queue.changed:
            queue.changed.notify_all()
