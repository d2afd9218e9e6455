"""Operator queues: who is free, who waits, who is rung next.

A caller transferred to a queue waits in line (first come, first served;
callers called back or ringing again keep an earlier place) hearing the hold
prompt. A free operator goes to the first caller in line who may take them:

* a caller who needs a skill (a dialect: 方言专席) may take an operator who has
  it; once they have waited ``overflow_after`` seconds in the queue, any
  operator (still preferring one with the skill);
* a caller who needs no skill may take any operator.

Among the operators a caller may take, those with the skill come first, then
those with the fewest skills (dialect seats stay free for dialect callers),
then those who took the fewest calls. So a dialect caller at the head of the
line waiting for their busy seat does not hold up a mandarin caller behind
them when a mandarin operator is free.

An operator who does not answer within ``ring_timeout`` is skipped for the
next one (all tried: start over). On answer the two legs are bridged through
the IVR, and when either side hangs up the other is hung up too.

:meth:`OperatorDesk.snapshot` shows each queue's operators and waiting
callers (for the operator console). :meth:`OperatorDesk.reconfigure` takes new
queues and operators (config.toml reloaded) without dropping a call.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ivr.call import CallEnded, EndReason, TransferOutcome, TransferResult
from ivr.media.prompt_audio import PromptAudio
from ivr.media.rtp import Playback, RtpStream, bridge, unbridge
from ivr.store import StoreUnavailableError

if TYPE_CHECKING:
    from ivr.shared_line import HeldOperator, SharedLine
    from ivr.store_watch import StoreWatch


class OperatorState(enum.StrEnum):
    FREE = "free"
    RINGING = "ringing"
    TALKING = "talking"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"  # not taking calls (the operator said so on their screen)


OVERFLOW_AFTER_S = 30.0  # default wait for a skilled seat before any operator may answer
ELDERLY_OVERFLOW_AFTER_S = 20.0  # default wait for the elderly seat
WAKE_EVERY_S = 1.0  # a waiting caller looks at the line at least this often
REFRESH_EVERY_S = 0.25  # the desk reads the shared line and operators' states this often
HANDLED_KEPT = 20  # the last calls a queue's estimated wait is averaged over
ELDERLY_SKILL = "elderly"  # operators on the elderly seat (老年人专席)


@dataclass
class Operator:
    uri: str
    queue: str
    state: OperatorState = OperatorState.FREE
    calls_taken: int = 0
    skills: frozenset[str] = frozenset()  # e.g. {"yue"}: a Cantonese dialect seat
    paused: bool = False  # takes no new call; a call in progress goes on
    call_id: str | None = None  # the caller they are talking to


class OperatorLeg(Protocol):
    """An answered call to an operator (made by the dialer)."""

    @property
    def stream(self) -> RtpStream: ...

    @property
    def ended(self) -> asyncio.Future[object]: ...

    async def hangup(self) -> None: ...


# called once a caller is bridged (caller, operator's leg, operator URI); what it
# returns, if anything, is awaited when the conversation is over (a recording)
ConversationHook = Callable[
    ["WaitingCaller", "OperatorLeg", str], Awaitable[Callable[[], Awaitable[None]] | None]
]


class Talk(Protocol):
    """A bridged call that others may join (ivr/consultation.py): ``over`` when the
    caller left, or nobody but the caller is left; the operator may leave first."""

    @property
    def over(self) -> asyncio.Future[str]: ...

    async def close(self) -> None: ...


# called once a caller is bridged (caller, operator's leg, operator URI)
TalkHook = Callable[["WaitingCaller", "OperatorLeg", str], Talk]


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
    def skill(self) -> str | None:
        """The operator skill the caller needs (their dialect); None: any operator."""
        ...

    @property
    def priority(self) -> bool:
        """Keeps an earlier place in line (called back, or ringing again)."""
        ...

    async def screen_pop(self) -> dict[str, str]:
        """Headers for the INVITE to the operator (the ticket goes with the call)."""
        ...


@dataclass
class Waiter:
    """A caller waiting in a queue's line."""

    call_id: str
    caller: str
    skill: str | None  # None: any operator
    joined: float  # time.time() when they joined this queue
    skipped: set[str] = field(default_factory=set)  # operators who did not answer them
    ringing: str | None = None  # the operator being rung for them now
    overflowed: bool = False  # waited overflow_after for a skilled seat (logged once)
    past_target: bool = False  # waited longer than the queue's target_answer (logged once)
    lent_to: bool = False  # may take a spare operator of the overflow_to queue (logged once)

    def may_take(self, operator: Operator, now: float, overflow_after: float | None) -> bool:
        if self.skill is None or self.skill in operator.skills:
            return True
        return overflow_after is not None and now - self.joined >= overflow_after

    def overflow_after(self, queue: Queue) -> float | None:
        """Seconds this caller waits for a skilled operator before any may take
        them: the elderly seat's own wait (never forever), else the dialects'."""
        if self.skill == ELDERLY_SKILL:
            return queue.elderly_overflow_after
        return queue.overflow_after

    def preference(self, operator: Operator) -> tuple[bool, int, int]:
        """Sort key, best first: has the skill, fewest skills, fewest calls taken."""
        lacks_skill = self.skill is not None and self.skill not in operator.skills
        return (lacks_skill, len(operator.skills), operator.calls_taken)


@dataclass
class Queue:
    name: str
    operators: list[Operator]
    max_waiting: int
    max_wait: float
    overflow_after: float | None = OVERFLOW_AFTER_S
    elderly_overflow_after: float = ELDERLY_OVERFLOW_AFTER_S
    # 服务水平: seconds within which a caller should be answered (0 = none)
    target_answer: float = 0.0
    # a caller who waited overflow_to_after s may also take a spare operator of
    # the queue overflow_to (one free and not due to any caller of that queue)
    overflow_to: str = ""
    overflow_to_after: float = 0.0
    retired: bool = False  # removed from config.toml: serves the callers in line, then goes
    line: list[str] = field(default_factory=list)  # call ids, head first
    priority: set[str] = field(default_factory=set)  # call ids that keep an earlier place
    waiting: dict[str, Waiter] = field(default_factory=dict)  # by call id
    # set (and replaced by a fresh one) when the line or an operator changes
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # seconds each of the last calls of this queue took an operator (talk + wrap-up)
    handled: deque[float] = field(default_factory=lambda: deque(maxlen=HANDLED_KEPT))

    def notify(self) -> None:
        """Wake every caller waiting in line to look at it again."""
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def estimated_wait(self, position: int, skill: str | None = None) -> float | None:
        """Seconds the caller at ``position`` (1 = head of the line) will
        likely wait: position x the average handling time of the last calls
        (talk + wrap-up) / the operators staffing the queue (not paused) —
        those with ``skill`` when the caller waits for a seat and there are
        some. None before any call was handled, or when nobody staffs it."""
        if not self.handled:
            return None
        staffing = [op for op in self.operators if not op.paused]
        seats = [op for op in staffing if skill is not None and skill in op.skills]
        staffed = len(seats or staffing)
        if staffed == 0:
            return None
        return position * statistics.fmean(self.handled) / staffed

    def assignment(
        self,
        now: float,
        only: set[str] | None = None,
        spare: Sequence[Operator] = (),
    ) -> dict[str, tuple[Operator, bool]]:
        """Who gets which free operator now: call id -> (operator, start over).

        Callers are served in line order, each taking the best free operator
        they may take that no one ahead of them took; they skip operators who
        did not answer them, unless they skipped every one they may take
        (start over: ``True``). Callers whose operator is ringing are passed over.
        ``only``: the line is these callers (a desk deciding alone: its own).
        ``spare``: free operators of the ``overflow_to`` queue nobody there is
        due to (:func:`spare_operators`); a caller who has waited
        ``overflow_to_after`` takes one of them when none of this queue's is theirs.
        """
        free = [op for op in self.operators if op.state is OperatorState.FREE]
        lendable = [op for op in spare if op.state is OperatorState.FREE and op not in free]
        plan: dict[str, tuple[Operator, bool]] = {}
        for call_id in self.line:
            if not free and not lendable:
                break
            if only is not None and call_id not in only:
                continue
            waiter = self.waiting.get(call_id)
            if waiter is None or waiter.ringing is not None:
                continue
            allowed = [op for op in free if waiter.may_take(op, now, waiter.overflow_after(self))]
            lent = list(lendable) if lendable and self.lends_to(waiter, now) else []
            # their own queue's operators first, then spare ones; those who did not
            # answer them only once every one was tried (start over)
            rounds = ((allowed, False), (lent, False), (allowed, True), (lent, True))
            for pool, start_over in rounds:
                choice = [op for op in pool if start_over or op.uri not in waiter.skipped]
                if choice:
                    operator = min(choice, key=waiter.preference)
                    plan[call_id] = (operator, start_over)
                    (free if operator in free else lendable).remove(operator)
                    break
        return plan

    def lends_to(self, waiter: Waiter, now: float) -> bool:
        """``waiter`` may take a spare operator of ``overflow_to`` now."""
        return bool(self.overflow_to) and now - waiter.joined >= self.overflow_to_after


def spare_operators(queue: Queue, other: Queue | None, now: float) -> list[Operator]:
    """The free operators of ``other`` (``queue``'s overflow_to) that no caller
    waiting in ``other`` gets now: they may take a caller of ``queue`` who has
    waited overflow_to_after. None while ``other``'s own callers need them."""
    if other is None or other is queue:
        return []
    due = {op.uri for op, _ in other.assignment(now).values()}
    own = {op.uri for op in queue.operators}
    return [
        op
        for op in other.operators
        if op.state is OperatorState.FREE and op.uri not in due and op.uri not in own
    ]


# states in which an operator is held by the node that rang them
_HELD = (OperatorState.RINGING, OperatorState.TALKING, OperatorState.WRAP_UP)


@dataclass(frozen=True)
class WaitingMusic:
    """What a caller hears in line: the hold prompt (looped), and their place in
    line said on joining and every ``every`` seconds, followed by the estimated
    wait in whole minutes (``wait(minutes)``) once the queue can estimate it."""

    hold: PromptAudio | None = None
    announce: Callable[[int], PromptAudio | None] | None = None
    every: float = 30.0
    wait: Callable[[int], PromptAudio | None] | None = None


@dataclass(frozen=True)
class QueueConfig:
    operators: Sequence[str]
    max_waiting: int
    max_wait: float
    # operator URI -> skills, e.g. {"sip:op2@127.0.0.1:5081": frozenset({"yue"})}
    skills: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # seconds a caller needing a skill waits for an operator with it before any
    # operator may take them (None: never; 0: any at once, a skilled one preferred)
    overflow_after: float | None = OVERFLOW_AFTER_S
    # the same for a caller in the elderly service waiting for the elderly seat
    elderly_overflow_after: float = ELDERLY_OVERFLOW_AFTER_S
    target_answer: float = 0.0  # seconds within which a caller should be answered; 0 = none
    overflow_to: str = ""  # a queue whose spare operators take callers who waited ...
    overflow_to_after: float = 0.0  # ... this long


@dataclass(frozen=True)
class OperatorSnapshot:
    uri: str
    state: OperatorState
    skills: tuple[str, ...]  # sorted
    calls_taken: int
    call_id: str | None = None  # whom they talk to (or are being rung for)


@dataclass(frozen=True)
class WaiterSnapshot:
    call_id: str
    caller: str
    skill: str | None
    position: int  # 1 = next in line
    waited: float  # seconds in this queue so far
    ringing: str | None  # the operator being rung for them, if any
    overflowed: bool  # any operator may take them now (waited overflow_after)
    estimated_wait: float | None  # seconds still to wait, likely (Queue.estimated_wait)


@dataclass(frozen=True)
class QueueSnapshot:
    """One queue as the operator console shows it (``dataclasses.asdict`` -> JSON)."""

    name: str
    operators: tuple[OperatorSnapshot, ...]
    waiting: tuple[WaiterSnapshot, ...]  # in line order, head first
    max_waiting: int
    max_wait: float
    overflow_after: float | None
    target_answer: float = 0.0  # 0 = none
    overflow_to: str = ""


# called when a caller of a queue is answered: queue, seconds waited in it, the
# queue's target_answer (0 = none), the queue of the operator who answered
Answered = Callable[[str, float, float, str], None]


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
        self.on_bridged: ConversationHook | None = None
        self.on_talking: TalkHook | None = None  # others may join the call (consultation)
        self.on_answered: Answered | None = None  # counted per queue (/metrics)
        self.on_past_target: Callable[[str], None] | None = None  # a wait passed the target
        self.queues: dict[str, Queue] = {}
        # one Operator per phone, shared by every queue it serves: a person in two
        # queues is rung for one caller at a time
        self._operators: dict[str, Operator] = {}
        # operators taken out of every queue by a reload while on a call: they
        # finish it (their screen still shows it), then are forgotten
        self._leaving: dict[str, Operator] = {}
        # the line and the operators' states every node shares (the store); None
        # until attach(): then this desk's Queue/Operator objects are a view of it,
        # refreshed every REFRESH_EVERY_S, and every claim is decided in the store
        self.shared: SharedLine | None = None
        self._local_calls: set[str] = set()  # callers this node holds in a line
        self._refresher: asyncio.Task[None] | None = None
        self._writes = asyncio.Lock()  # this desk's writes to the store, in order
        # the store lost while running: the desk decides alone from its own view
        # (its callers, the operators as last seen) from ``alone_since`` until
        # the store is back; then it writes back what it did (ivr/store_watch.py)
        self.watch: StoreWatch | None = None
        self.alone_since: float | None = None
        # operators this desk rings, talks to or wraps up: uri -> wrap-up end
        # (None while ringing or talking), written back after deciding alone
        self._mine: dict[str, float | None] = {}
        self._paused_alone: dict[str, bool] = {}  # pauses set while deciding alone
        self.reconfigure(queues, ring_timeout=ring_timeout, wrap_up=wrap_up)

    async def attach(self, shared: SharedLine) -> None:
        """Share the line and the operators' states with every other node."""
        self.shared = shared
        await shared.add_operators(self._operators)
        await self.refresh()
        self._refresher = asyncio.ensure_future(self._refresh_forever())

    async def detach(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_EVERY_S)
            alone = self.alone_since is not None
            if alone and self.watch is not None and not self.watch.up:
                continue  # the watch's probe says when the store is back
            try:
                if alone:
                    await self._write_back()
                await self.refresh()
            except Exception as exc:  # the store is away: keep the view, calls go on
                if self._unreachable(exc):
                    self._go_alone(exc)
                else:
                    self._log.warning("cannot read the shared line: %s", exc)
            else:
                if alone:
                    self._back()

    # -- the store lost while running ---------------------------------------------
    @property
    def _shared_usable(self) -> bool:
        """Decisions are made in the store (it is attached and answers)."""
        return (
            self.shared is not None
            and self.alone_since is None
            and (self.watch is None or self.watch.up)
        )

    def _unreachable(self, exc: BaseException) -> bool:
        if self.watch is not None:
            return self.watch.failed(exc)
        return isinstance(exc, StoreUnavailableError)

    def _go_alone(self, exc: BaseException | None = None) -> None:
        """The shared line cannot be reached: decide alone (said once)."""
        if self.alone_since is not None or self.shared is None:
            return
        self.alone_since = time.time()
        mine = sum(1 for q in self.queues.values() for c in q.line if c in self._local_calls)
        self._log.warning(
            "shared line unreachable (%s): this node's desk decides alone from its own view "
            "(its %d caller(s) in line, the operators as last seen) until the store is back; "
            "meanwhile another node deciding alone could ring an operator this node rings",
            exc if exc is not None else "the store is unreachable",
            mine,
        )

    def _back(self) -> None:
        assert self.alone_since is not None
        self._log.warning(
            "shared line reachable again after %.1f s: this node's callers in line and the "
            "operators it holds are written back; claims are decided in the store again",
            time.time() - self.alone_since,
        )
        self.alone_since = None
        for queue in self.queues.values():
            queue.notify()

    async def _write_back(self) -> None:
        """After deciding alone: the store's line and operators' states get this
        node's truth (its callers in line, the operators it rings, talks to or
        wraps up), in one transaction under the desk's lock."""
        assert self.shared is not None
        from ivr.shared_line import HeldOperator, LineEntry

        waiters: list[LineEntry] = []
        for name, queue in self.queues.items():
            for call_id in queue.line:
                waiter = queue.waiting.get(call_id)
                if call_id not in self._local_calls or waiter is None:
                    continue
                waiters.append(
                    LineEntry(
                        call_id=call_id,
                        queue=name,
                        node=self.shared.node_id,
                        caller=waiter.caller,
                        skill=waiter.skill,
                        priority=call_id in queue.priority,
                        joined_at=waiter.joined,
                        ringing=waiter.ringing,
                        skipped=frozenset(waiter.skipped),
                    )
                )
        held: list[HeldOperator] = []
        for uri, free_at in self._mine.items():
            operator = self._operators.get(uri) or self._leaving.get(uri)
            if operator is None or operator.state not in _HELD:
                continue
            held.append(HeldOperator(uri, operator.state, operator.call_id, free_at))
        await self.shared.write_back(waiters, held, dict(self._paused_alone))
        self._paused_alone.clear()

    async def refresh(self) -> None:
        """Bring this desk's view up to the store: every node's callers in line
        (place in line counts them all) and every operator's state."""
        shared = self.shared
        if shared is None:
            return
        entries = await shared.line(self.queues)
        states = await shared.operators()
        moved = False
        for uri, operator in {**self._leaving, **self._operators}.items():
            row = states.get(uri)
            if row is None:
                continue
            changed = (operator.state, operator.paused) != (row.state, row.paused)
            moved = moved or changed
            operator.state, operator.paused = row.state, row.paused
            operator.calls_taken = row.calls_taken
            operator.call_id = row.call_id
            if changed and row.state is OperatorState.FREE:
                for listener in list(self.on_operator_free):
                    listener()
        by_queue: dict[str, list[str]] = {}
        for entry in entries:
            by_queue.setdefault(entry.queue, []).append(entry.call_id)
        for name, queue in self.queues.items():
            line = by_queue.get(name, [])
            seen = set(line)
            # a caller of this node who joined after the store was read keeps a place
            line += [cid for cid in queue.line if cid in self._local_calls and cid not in seen]
            for entry in entries:
                if entry.queue != name or entry.call_id in self._local_calls:
                    continue
                queue.waiting[entry.call_id] = Waiter(
                    call_id=entry.call_id,
                    caller=entry.caller,
                    skill=entry.skill,
                    joined=entry.joined_at,
                    skipped=set(entry.skipped),
                    ringing=entry.ringing,
                )
            for cid in [c for c in queue.waiting if c not in line]:
                del queue.waiting[cid]
            queue.priority = {e.call_id for e in entries if e.queue == name and e.priority}
            if line != queue.line or moved:
                queue.line = line
                queue.notify()

    async def _store(self, what: str, coro: Coroutine[Any, Any, None]) -> None:
        """A write to the store, after this desk's earlier ones; a failure is
        logged (the call goes on; the state frees itself by time or node loss).
        While the desk decides alone it is left out: the write-back when the
        store is back says where things stand."""
        async with self._writes:
            if not self._shared_usable:
                coro.close()
                self._go_alone()
                self._log.debug("shared line: %s left for the write-back", what)
                return
            try:
                await coro
            except Exception as exc:
                if self._unreachable(exc):
                    self._go_alone(exc)
                else:
                    self._log.exception("shared line: %s failed", what)

    def _write(self, what: str, coro: Coroutine[Any, Any, None]) -> None:
        """A write to the store from code that cannot wait for it (in order)."""
        self._background(self._store(what, coro))

    @staticmethod
    def check(queues: Mapping[str, QueueConfig]) -> dict[str, frozenset[str]]:
        """Raise ValueError if ``queues`` cannot be taken; else each operator's skills."""
        skills: dict[str, frozenset[str]] = {}
        for name, cfg in queues.items():
            unknown = sorted(set(cfg.skills) - set(cfg.operators))
            if unknown:
                raise ValueError(
                    f"queue {name!r}: skills given for {', '.join(unknown)}, "
                    "who are not operators of the queue; add them to its operators "
                    "or remove their skills"
                )
            if cfg.overflow_after is not None and cfg.overflow_after < 0:
                raise ValueError(
                    f"queue {name!r}: overflow_after must be 0 or more seconds "
                    f"(or None: never), got {cfg.overflow_after}"
                )
            if cfg.overflow_to and (cfg.overflow_to == name or cfg.overflow_to not in queues):
                raise ValueError(
                    f"queue {name!r}: overflow_to {cfg.overflow_to!r} is not another queue"
                )
            for uri in cfg.operators:
                skills[uri] = skills.get(uri, frozenset()) | frozenset(cfg.skills.get(uri, ()))
        return skills

    def reconfigure(
        self, queues: Mapping[str, QueueConfig], *, ring_timeout: float, wrap_up: float
    ) -> None:
        """Take new queues and operators while calls go on (config.toml reloaded).

        Raises ValueError, changing nothing, when a queue's settings are wrong.
        Callers waiting keep their place; a queue's new operators are offered
        to them at once. An operator kept (in any queue) keeps their state,
        pause and calls taken. An operator no longer in any queue gets no new
        call and finishes the one they are on. A queue removed while callers
        wait in it stays, with those of its operators still configured, until
        its line is empty (new rings and max_wait apply to the next ring / the
        next caller; a caller's max_wait stays as it was when they joined).
        """
        skills = self.check(queues)
        self._ring_timeout = ring_timeout
        self._wrap_up = wrap_up
        operators: dict[str, Operator] = {}
        for name, cfg in queues.items():
            for uri in cfg.operators:
                if uri in operators:
                    continue
                known = self._operators.get(uri) or self._leaving.pop(uri, None)
                operator = known or Operator(uri=uri, queue=name)
                operator.skills = skills[uri]
                operators[uri] = operator
        for uri, operator in self._operators.items():
            if uri in operators:
                continue
            if operator.state in (OperatorState.FREE, OperatorState.PAUSED):
                self._log.info("operator %s removed", uri)
            else:
                self._leaving[uri] = operator
                self._log.info(
                    "operator %s removed: finishes the call in progress (%s), gets no new one",
                    uri,
                    operator.state.value,
                )
        self._operators = operators
        for name, cfg in queues.items():
            queue = self.queues.get(name)
            if queue is None:
                queue = self.queues[name] = Queue(
                    name=name, operators=[], max_waiting=0, max_wait=0.0
                )
            queue.operators = [operators[uri] for uri in cfg.operators]
            queue.max_waiting = cfg.max_waiting
            queue.max_wait = cfg.max_wait
            queue.overflow_after = cfg.overflow_after
            queue.elderly_overflow_after = cfg.elderly_overflow_after
            queue.target_answer = cfg.target_answer
            queue.overflow_to = cfg.overflow_to
            queue.overflow_to_after = cfg.overflow_to_after
            queue.retired = False
        for name, queue in list(self.queues.items()):
            if name in queues:
                continue
            queue.operators = [op for op in queue.operators if op.uri in operators]
            if queue.line:
                queue.retired = True
                self._log.warning(
                    "queue %s removed: kept until the %d caller(s) waiting in it are served",
                    name,
                    len(queue.line),
                )
            else:
                del self.queues[name]
                self._log.info("queue %s removed", name)
        for queue in self.queues.values():
            queue.notify()  # waiting callers look at the (new) operators again
        if self.shared is not None:
            self._write("new operators", self.shared.add_operators(list(operators)))

    def free_operators(self, queue: str) -> int:
        q = self.queues.get(queue)
        return 0 if q is None else sum(op.state is OperatorState.FREE for op in q.operators)

    def waiting(self, queue: str) -> int:
        return len(self.queues[queue].line)

    def snapshot(self) -> list[QueueSnapshot]:
        """Every queue now: its operators (state, skills, calls taken) and the
        callers waiting in line, head first, with how long each has waited."""
        now = time.time()
        shots: list[QueueSnapshot] = []
        for queue in self.queues.values():
            waiting: list[WaiterSnapshot] = []
            for call_id in queue.line:
                waiter = queue.waiting.get(call_id)
                if waiter is None:
                    continue
                waiting.append(
                    WaiterSnapshot(
                        call_id=call_id,
                        caller=waiter.caller,
                        skill=waiter.skill,
                        position=len(waiting) + 1,
                        waited=now - waiter.joined,
                        ringing=waiter.ringing,
                        overflowed=(
                            waiter.skill is not None
                            and (after := waiter.overflow_after(queue)) is not None
                            and now - waiter.joined >= after
                        ),
                        estimated_wait=queue.estimated_wait(len(waiting) + 1, waiter.skill),
                    )
                )
            shots.append(
                QueueSnapshot(
                    name=queue.name,
                    operators=tuple(
                        OperatorSnapshot(
                            uri=op.uri,
                            state=op.state,
                            skills=tuple(sorted(op.skills)),
                            calls_taken=op.calls_taken,
                            call_id=op.call_id,
                        )
                        for op in queue.operators
                    ),
                    waiting=tuple(waiting),
                    max_waiting=queue.max_waiting,
                    max_wait=queue.max_wait,
                    overflow_after=queue.overflow_after,
                    target_answer=queue.target_answer,
                    overflow_to=queue.overflow_to,
                )
            )
        return shots

    async def connect(
        self,
        call: WaitingCaller,
        queue_name: str,
        hold_prompt: PromptAudio | WaitingMusic | None,
        *,
        max_wait: float | None = None,
    ) -> TransferResult:
        """``max_wait``: the wait for an operator, if shorter than the queue's
        (a caller in distress waits this long for a counsellor, ivr/counsellors.py)."""
        queue = self.queues.get(queue_name)
        if queue is None:
            self._log.error("transfer to unknown queue %r", queue_name)
            return TransferResult(TransferOutcome.NO_OPERATOR)
        waiting = len(queue.line)
        if self._shared_usable:
            assert self.shared is not None
            try:
                waiting = await self.shared.waiting(queue.name)  # callers of every node
            except Exception as exc:
                if not self._unreachable(exc):
                    raise
                self._go_alone(exc)
        if self.alone_since is not None:  # the others' callers as last seen are stale
            waiting = sum(1 for cid in queue.line if cid in self._local_calls)
        if waiting >= queue.max_waiting:
            self._log.warning("queue %s full (%d waiting): overflow", queue.name, waiting)
            call.note_transfer(queue.name, None, "queue_full")
            return TransferResult(TransferOutcome.QUEUE_FULL)
        skill = call.skill
        if self._shared_usable:
            assert self.shared is not None
            try:
                await self.shared.join(
                    queue.name, call.call_id, call.caller, skill, priority=call.priority
                )
            except Exception as exc:
                if not self._unreachable(exc):
                    raise
                self._go_alone(exc)  # joins the store's line in the write-back
        elif self.shared is not None:
            self._go_alone()
        self._local_calls.add(call.call_id)
        if call.priority:
            # a caller called back, or ringing again after a drop, keeps their
            # place: ahead of everyone who joined since, behind earlier such callers
            ahead = [cid for cid in queue.line if cid in queue.priority]
            queue.line.insert(len(ahead), call.call_id)
            queue.priority.add(call.call_id)
        else:
            queue.line.append(call.call_id)
        waiter = Waiter(call_id=call.call_id, caller=call.caller, skill=skill, joined=time.time())
        queue.waiting[call.call_id] = waiter
        if skill is not None and not any(skill in op.skills for op in queue.operators):
            if waiter.overflow_after(queue) is None:
                self._log.warning(
                    "queue %s has no %s seat and never overflows: %s waits in vain",
                    queue.name,
                    skill,
                    call.call_id,
                )
            else:
                self._log.warning(
                    "queue %s has no %s seat: %s waits %.0f s, then any operator",
                    queue.name,
                    skill,
                    call.call_id,
                    waiter.overflow_after(queue),
                )
        call.note_queued(queue.line.index(call.call_id) + 1)
        music = hold_prompt if isinstance(hold_prompt, WaitingMusic) else WaitingMusic(hold_prompt)
        hold = asyncio.ensure_future(self._hold(call, queue, music))
        call.note_transfer(queue.name, None, "waiting")
        wait = queue.max_wait if max_wait is None else min(max_wait, queue.max_wait)
        try:
            # max_wait bounds the wait and the ringing, never the talk that follows
            async with asyncio.timeout(wait):
                operator, leg = await self._until_answered(call, queue)
        except TimeoutError:
            self._log.info("no operator of %s within %.0f s", queue.name, wait)
            call.note_transfer(queue.name, None, "no_operator")
            return TransferResult(TransferOutcome.NO_OPERATOR)
        finally:
            self._local_calls.discard(call.call_id)
            if self.shared is not None:
                self._write("leave the line", self.shared.leave(call.call_id))
            if call.call_id in queue.line:
                queue.line.remove(call.call_id)
            queue.priority.discard(call.call_id)
            queue.waiting.pop(call.call_id, None)
            hold.cancel()
            queue.notify()
            if queue.retired and not queue.line and self.queues.get(queue.name) is queue:
                del self.queues[queue.name]
                self._log.info("queue %s (removed from config) is empty: gone", queue.name)
        if call.gone.done():
            await leg.hangup()
            self._freed(operator)
            if self.shared is not None:
                self._write("release", self.shared.release(operator.uri))
            queue.notify()
            raise CallEnded(call.gone.result())
        operator.state = OperatorState.TALKING
        operator.calls_taken += 1
        self._answered(queue, operator, time.time() - waiter.joined)
        if self.shared is not None:
            await self._store(
                "talking", self.shared.rang(call.call_id, operator.uri, answered=True)
            )
        await self._talk(call, leg, operator, queue)
        return TransferResult(TransferOutcome.BRIDGED, operator=operator.uri)

    def _answered(self, queue: Queue, operator: Operator, waited: float) -> None:
        """A caller of ``queue`` is answered after ``waited`` s in its line."""
        lent = operator not in queue.operators
        if lent:
            self._log.info(
                "answered by %s of queue %s (overflow from %s after %.1f s)",
                operator.uri, operator.queue, queue.name, waited,
            )  # fmt: skip
        if self.on_answered is not None:
            try:
                self.on_answered(
                    queue.name, waited, queue.target_answer, operator.queue if lent else queue.name
                )
            except Exception:
                self._log.exception("answer not counted")

    def _mark_target(self, call: WaitingCaller, queue: Queue, waiter: Waiter, now: float) -> None:
        """Say once when the caller's wait passes the queue's target, and when they
        may take a spare operator of its overflow_to queue."""
        waited = now - waiter.joined
        if queue.target_answer > 0 and waited >= queue.target_answer and not waiter.past_target:
            waiter.past_target = True
            self._log.warning(
                "%s has waited %.0f s in queue %s: past its target answer time (%g s)",
                call.call_id, waited, queue.name, queue.target_answer,
            )  # fmt: skip
            if self.on_past_target is not None:
                self.on_past_target(queue.name)
        if queue.lends_to(waiter, now) and not waiter.lent_to:
            waiter.lent_to = True
            self._log.info(
                "%s has waited %.0f s in queue %s: a spare operator of %s may take them",
                call.call_id, waited, queue.name, queue.overflow_to,
            )  # fmt: skip

    def _next_moment(self, queue: Queue, waiter: Waiter, now: float) -> float | None:
        """The next moment this caller's options change by time alone (their
        target passed, the overflow_to queue opened to them), if any is ahead."""
        moments = []
        if queue.target_answer > 0 and not waiter.past_target:
            moments.append(waiter.joined + queue.target_answer)
        if queue.overflow_to and not waiter.lent_to:
            moments.append(waiter.joined + queue.overflow_to_after)
        ahead = [m for m in moments if m > now]
        return min(ahead) if ahead else None

    def spare(self, queue: Queue, now: float) -> list[Operator]:
        """This desk's view of the spare operators ``queue``'s callers may take."""
        if not queue.overflow_to:
            return []
        return spare_operators(queue, self.queues.get(queue.overflow_to), now)

    async def _next_operator(self, call: WaitingCaller, queue: Queue, waiter: Waiter) -> Operator:
        """Wait until a free operator is this caller's (see :meth:`Queue.assignment`)."""
        while True:
            if call.gone.done():
                raise CallEnded(call.gone.result())
            changed = queue.changed  # taken before looking: no change goes unseen
            now = time.time()
            self._mark_target(call, queue, waiter, now)
            overflow_after = waiter.overflow_after(queue)
            overflow_at = (
                None
                if waiter.skill is None or overflow_after is None
                else waiter.joined + overflow_after
            )
            if overflow_at is not None and now >= overflow_at and not waiter.overflowed:
                waiter.overflowed = True
                self._log.info(
                    "overflow: %s waited %.0f s for a %s seat; any operator now",
                    call.call_id,
                    now - waiter.joined,
                    waiter.skill,
                )
            mine = await self._claim(queue, call.call_id, now)
            if mine is not None:
                operator, start_over = mine
                if start_over:
                    waiter.skipped.clear()  # every operator they may take was tried
                operator.state = OperatorState.RINGING
                operator.call_id = call.call_id  # their screen shows this ticket now
                waiter.ringing = operator.uri
                return operator
            # wake on a change in the queue, the caller leaving, their overflow
            # moment, or at least every WAKE_EVERY_S
            wake = WAKE_EVERY_S
            if overflow_at is not None and now < overflow_at:
                wake = min(wake, overflow_at - now)
            moment = self._next_moment(queue, waiter, now)
            if moment is not None:
                wake = min(wake, moment - now)
            woken: asyncio.Future[Any] = asyncio.ensure_future(changed.wait())
            watched: set[asyncio.Future[Any]] = {woken, call.gone}
            try:
                await asyncio.wait(watched, timeout=wake, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()

    async def _claim(
        self, queue: Queue, call_id: str, now: float
    ) -> tuple[Operator, bool] | None:
        """The free operator this caller gets now: decided by the store for every
        node when shared (the operator is marked ringing for this node), else by
        this desk alone (one machine; or the store lost: among this node's
        callers only, with the operators as last seen)."""
        if self.shared is None:
            return queue.assignment(now, spare=self.spare(queue, now)).get(call_id)
        if self._shared_usable:
            try:
                lender = self.queues.get(queue.overflow_to) if queue.overflow_to else None
                claim = await self.shared.claim(queue, call_id, lender=lender)
            except Exception as exc:
                if not self._unreachable(exc):
                    raise
                self._go_alone(exc)
            else:
                if claim is None:
                    return None
                operator = self._operators.get(claim.operator)
                if operator is None:  # taken out of config.toml since: give it back
                    self._write("release", self.shared.release(claim.operator))
                    return None
                self._mine[operator.uri] = None
                return operator, claim.start_over
        else:
            self._go_alone()
        spare = self.spare(queue, now)
        mine = queue.assignment(now, only=self._local_calls, spare=spare).get(call_id)
        if mine is not None:
            self._mine[mine[0].uri] = None
        return mine

    async def _until_answered(
        self, call: WaitingCaller, queue: Queue
    ) -> tuple[Operator, OperatorLeg]:
        """Ring the operators this caller gets, one after another, until one answers."""
        waiter = queue.waiting[call.call_id]
        while True:
            operator = await self._next_operator(call, queue, waiter)
            try:
                headers = await call.screen_pop()
            except asyncio.CancelledError:
                waiter.ringing = None
                self._freed(operator)
                self._release_shared(operator)
                raise
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
            except asyncio.CancelledError:  # max_wait, or the caller was taken elsewhere
                waiter.ringing = None
                self._freed(operator)
                self._release_shared(operator)
                raise
            except Exception:
                self._log.exception("dialing operator %s failed", operator.uri)
                leg = None
            waiter.ringing = None
            if leg is not None:
                return operator, leg  # no await from here to _talk
            self._freed(operator)
            if self.shared is not None:
                await self._store(
                    "no answer", self.shared.rang(call.call_id, operator.uri, answered=False)
                )
            waiter.skipped.add(operator.uri)
            queue.notify()
            if call.gone.done():
                raise CallEnded(call.gone.result())

    def _release_shared(self, operator: Operator) -> None:
        if self.shared is not None:
            self._write("release", self.shared.release(operator.uri))

    async def _hold(self, call: WaitingCaller, queue: Queue, music: WaitingMusic) -> None:
        """Hold music while the caller waits, broken every ``music.every`` s (and
        at once) by their place in line. Cancelled when the wait is over."""
        playing: Playback | None = None
        codec = call.stream.codec
        try:
            while True:
                if music.announce is not None and call.call_id in queue.line:
                    position = queue.line.index(call.call_id) + 1
                    said = [music.announce(position)]
                    waiter = queue.waiting.get(call.call_id)
                    estimate = queue.estimated_wait(
                        position, waiter.skill if waiter is not None else None
                    )
                    if music.wait is not None and estimate is not None:
                        said.append(music.wait(max(1, math.ceil(estimate / 60))))
                    for prompt in said:
                        if prompt is not None:
                            playing = call.stream.play(prompt.frames(codec))
                            await playing.done
                if music.hold is not None:
                    playing = call.stream.play(music.hold.frames(codec), loop_forever=True)
                if music.announce is None:
                    await asyncio.Future()  # the hold prompt until cancelled
                await asyncio.sleep(music.every)
        finally:
            if playing is not None:
                playing.stop()

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
        operator.call_id = call.call_id
        began = time.monotonic()
        bridge(call.stream, leg.stream)
        self._log.info("bridged to operator %s", operator.uri)
        finish: Callable[[], Awaitable[None]] | None = None
        if self.on_bridged is not None:
            try:
                finish = await self.on_bridged(call, leg, operator.uri)
            except Exception:  # a recording that cannot start must not stop the call
                self._log.exception("conversation recording could not start")
        talk = self.on_talking(call, leg, operator.uri) if self.on_talking is not None else None
        left_at: float | None = None  # the operator left before the others
        try:
            either: set[asyncio.Future[Any]] = {call.gone, leg.ended}
            if talk is not None:
                either = {talk.over, leg.ended}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if talk is not None and not talk.over.done():
                # the operator left a consultation that goes on: free for the next call
                self._log.info("operator %s left; the others go on", operator.uri)
                left_at = time.monotonic()
                if release:
                    self._release_later(operator, queue)
                    release = False
                await talk.over
        finally:
            if talk is not None:
                try:
                    await talk.close()
                except Exception:
                    self._log.exception("the consultation could not be closed")
            unbridge(call.stream, leg.stream)
            if finish is not None:
                try:
                    await finish()
                except Exception:
                    self._log.exception("conversation recording could not be finished")
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
            talked = (left_at or time.monotonic()) - began
            queue.handled.append(talked + max(self._wrap_up, 0.0))
            if release:
                self._release_later(operator, queue)

    def _release_later(self, operator: Operator, queue: Queue) -> None:
        if self.shared is not None:
            self._write("call over", self.shared.talked(operator.uri, wrap_up=self._wrap_up))
        if self._wrap_up <= 0:
            self._freed(operator)
            queue.notify()
            return
        operator.state = OperatorState.WRAP_UP
        if operator.uri in self._mine:
            self._mine[operator.uri] = time.time() + self._wrap_up

        async def release() -> None:
            await asyncio.sleep(self._wrap_up)
            self._freed(operator)
            queue.notify()

        self._background(release())

    def _freed(self, operator: Operator) -> None:
        """``operator`` is free again: tell whoever waits for one (the callback dialler)."""
        operator.call_id = None
        self._mine.pop(operator.uri, None)
        if self._leaving.get(operator.uri) is operator:
            del self._leaving[operator.uri]  # removed from config.toml: no new call
            operator.state = OperatorState.FREE
            self._log.info("operator %s (removed from config) is done", operator.uri)
            return
        if operator.paused:
            operator.state = OperatorState.PAUSED
            return
        operator.state = OperatorState.FREE
        lenders = {q.name for q in self.queues.values() if operator in q.operators}
        for queue in self.queues.values():
            if operator in queue.operators or queue.overflow_to in lenders:
                queue.notify()  # callers of every queue they serve may take them now
        for listener in list(self.on_operator_free):
            listener()

    def operators_named(self, uri: str) -> list[Operator]:
        """The operator with phone ``uri`` (one object, whatever queues they serve)."""
        known = self._operators.get(uri) or self._leaving.get(uri)
        return [] if known is None else [known]

    def set_available(self, uri: str, available: bool) -> bool:
        """Ready (True) or paused (False), from the operator's screen; a call in
        progress goes on. False when ``uri`` is no operator of any queue."""
        found = self.operators_named(uri)
        if found and self.shared is not None:
            if not self._shared_usable:
                self._paused_alone[uri] = not available  # for the write-back
            self._write("pause", self.shared.set_paused(uri, not available))
        for operator in found:
            operator.paused = not available
            if not available and operator.state is OperatorState.FREE:
                operator.state = OperatorState.PAUSED
            elif available and operator.state is OperatorState.PAUSED:
                self._freed(operator)
        for queue in self.queues.values():
            queue.notify()
        if found:
            self._log.info("operator %s %s", uri, "ready" if available else "paused")
        return bool(found)

    def current_call(self, uri: str) -> str | None:
        """The call id ``uri`` is talking to (or being rung for), if any."""
        for operator in self.operators_named(uri):
            if operator.call_id is not None:
                return operator.call_id
        return None

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
