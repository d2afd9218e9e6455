"""Dialect seats (方言专席) at the operator desk: who is rung for whom.

Unit tests of OperatorDesk with a fake dialer (it records which operator was
rung for which caller and answers, or lets the ring time out) and fake callers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, cast

import pytest

from ivr.call import EndReason, TransferOutcome, TransferResult
from ivr.media.rtp import RtpStream
from ivr.operators import OperatorDesk, OperatorState, QueueConfig

LOG = logging.getLogger("ivr.test.seats")

MANDARIN_OP = "sip:op1@127.0.0.1:5081"
YUE_SEAT = "sip:op2@127.0.0.1:5082"
YUE_SEAT_2 = "sip:op3@127.0.0.1:5083"
MIN_SEAT = "sip:op4@127.0.0.1:5084"
RING_TIMEOUT = 0.2


class FakeStream:
    """What bridge()/unbridge() touch of an RtpStream."""

    codec = "PCMU"

    def __init__(self) -> None:
        self.relay_to: FakeStream | None = None
        self.relayed_from: FakeStream | None = None

    def stop_playback(self) -> None:
        pass


class FakeLeg:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.stream = cast(RtpStream, FakeStream())
        self.ended: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def hangup(self) -> None:
        if not self.ended.done():
            self.ended.set_result("local_bye")


class FakeDialer:
    """Answers at once, except the operators in ``no_answer`` (the ring times out)."""

    def __init__(self, no_answer: frozenset[str] = frozenset()) -> None:
        self.no_answer = no_answer
        self.rung: list[tuple[str, str]] = []  # (operator uri, caller number)
        self.legs: dict[str, FakeLeg] = {}  # answered legs by caller number

    def rung_for(self, caller: str) -> list[str]:
        return [uri for uri, number in self.rung if number == caller]

    async def dial(
        self,
        uri: str,
        *,
        caller_stream: RtpStream,
        caller_id: str,
        timeout: float,
        abort: asyncio.Future[EndReason],
        extra_headers: dict[str, str] | None = None,
    ) -> FakeLeg | None:
        self.rung.append((uri, caller_id))
        if uri in self.no_answer:
            await asyncio.wait({abort}, timeout=timeout)
            return None
        leg = FakeLeg(uri)
        self.legs[caller_id] = leg
        return leg


class FakeCaller:
    def __init__(self, number: str, skill: str | None = None, *, priority: bool = False) -> None:
        self.call_id = f"call-{number}"
        self.caller = number
        self.skill = skill
        self.priority = priority
        self.stream = cast(RtpStream, FakeStream())
        self.gone: asyncio.Future[EndReason] = asyncio.get_running_loop().create_future()
        self.outcomes: list[tuple[str, str | None, str]] = []
        self.positions: list[int] = []

    def end(self, reason: EndReason) -> None:
        if not self.gone.done():
            self.gone.set_result(reason)

    def note_transfer(self, queue: str, operator: str | None, outcome: str) -> None:
        self.outcomes.append((queue, operator, outcome))

    def note_queued(self, position: int) -> None:
        self.positions.append(position)

    async def screen_pop(self) -> dict[str, str]:
        return {}


class Desk:
    """An OperatorDesk with one queue, "general", and the callers sent to it."""

    def __init__(
        self,
        operators: list[str],
        *,
        skills: dict[str, frozenset[str]] | None = None,
        overflow_after: float | None = 30.0,
        elderly_overflow_after: float = 20.0,
        max_wait: float = 10.0,
        no_answer: frozenset[str] = frozenset(),
    ) -> None:
        self.dialer = FakeDialer(no_answer)
        self.desk = OperatorDesk(
            {
                "general": QueueConfig(
                    operators,
                    10,
                    max_wait,
                    skills=skills or {},
                    overflow_after=overflow_after,
                    elderly_overflow_after=elderly_overflow_after,
                )
            },
            dialer=self.dialer,
            ring_timeout=RING_TIMEOUT,
            wrap_up=0.0,
            log=LOG,
        )
        self.tasks: dict[str, asyncio.Task[TransferResult]] = {}
        self.callers: dict[str, FakeCaller] = {}

    async def join(self, caller: FakeCaller) -> asyncio.Task[TransferResult]:
        task = asyncio.ensure_future(self.desk.connect(caller, "general", None))
        self.tasks[caller.caller] = task
        self.callers[caller.caller] = caller
        await until(lambda: caller.positions != [])
        return task

    async def connected(self, caller: FakeCaller) -> str:
        """The operator the caller was bridged to (waits for it)."""
        await until(lambda: caller.caller in self.dialer.legs)
        return self.dialer.legs[caller.caller].uri

    def operator_hangs_up(self, caller: FakeCaller) -> None:
        self.dialer.legs[caller.caller].ended.set_result("remote_bye")

    def state(self, uri: str) -> OperatorState:
        (op,) = [op for op in self.desk.queues["general"].operators if op.uri == uri]
        return op.state

    async def close(self) -> None:
        for caller in self.callers.values():
            caller.end(EndReason.CALLER_HANGUP)
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


YUE = {YUE_SEAT: frozenset({"yue"})}


async def test_yue_caller_goes_to_the_yue_seat_when_both_are_free() -> None:
    desk = Desk([MANDARIN_OP, YUE_SEAT], skills=YUE)  # the mandarin operator is listed first
    try:
        caller = FakeCaller("13800000001", "yue")
        await desk.join(caller)
        assert await desk.connected(caller) == YUE_SEAT
        assert desk.dialer.rung == [(YUE_SEAT, "13800000001")]
        assert desk.state(YUE_SEAT) is OperatorState.TALKING
        assert desk.state(MANDARIN_OP) is OperatorState.FREE
        assert caller.outcomes[-1] == ("general", YUE_SEAT, "bridged")
    finally:
        await desk.close()


async def test_mandarin_caller_gets_the_mandarin_operator_not_the_yue_seat() -> None:
    desk = Desk([YUE_SEAT, MANDARIN_OP], skills=YUE)  # the yue seat is listed first
    try:
        caller = FakeCaller("13800000002")
        await desk.join(caller)
        assert await desk.connected(caller) == MANDARIN_OP
        assert desk.dialer.rung == [(MANDARIN_OP, "13800000002")]
        assert desk.state(YUE_SEAT) is OperatorState.FREE
    finally:
        await desk.close()


async def test_mandarin_caller_takes_the_yue_seat_when_it_is_the_only_one_free() -> None:
    desk = Desk([MANDARIN_OP, YUE_SEAT], skills=YUE, overflow_after=None)
    try:
        first = FakeCaller("13800000003")
        await desk.join(first)
        assert await desk.connected(first) == MANDARIN_OP
        second = FakeCaller("13800000004")
        await desk.join(second)
        assert await desk.connected(second) == YUE_SEAT
    finally:
        await desk.close()


async def test_yue_caller_waits_for_the_busy_yue_seat_then_overflows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    desk = Desk([MANDARIN_OP, YUE_SEAT], skills=YUE, overflow_after=0.3)
    try:
        busy = FakeCaller("13800000005", "yue")
        await desk.join(busy)
        assert await desk.connected(busy) == YUE_SEAT
        waiting = FakeCaller("13800000006", "yue")
        joined = time.monotonic()
        await desk.join(waiting)
        await asyncio.sleep(0.15)
        assert desk.dialer.rung_for("13800000006") == []  # the mandarin operator is kept back
        assert await desk.connected(waiting) == MANDARIN_OP
        waited = time.monotonic() - joined
        # woken at the overflow moment, not by the once-a-second look at the line
        assert 0.3 <= waited < 0.9, waited
        assert desk.dialer.rung_for("13800000006") == [MANDARIN_OP]
        overflows = [r.getMessage() for r in caplog.records if "overflow:" in r.getMessage()]
        assert len(overflows) == 1, overflows
        assert "call-13800000006" in overflows[0] and "yue seat" in overflows[0]
    finally:
        await desk.close()


async def test_yue_caller_never_overflows_when_overflow_after_is_none() -> None:
    desk = Desk([MANDARIN_OP, YUE_SEAT], skills=YUE, overflow_after=None, max_wait=0.8)
    try:
        busy = FakeCaller("13800000007", "yue")
        await desk.join(busy)
        assert await desk.connected(busy) == YUE_SEAT
        waiting = FakeCaller("13800000008", "yue")
        result = await (await desk.join(waiting))
        assert result.outcome is TransferOutcome.NO_OPERATOR
        assert desk.dialer.rung_for("13800000008") == []
        assert desk.state(MANDARIN_OP) is OperatorState.FREE
        assert waiting.outcomes[-1] == ("general", None, "no_operator")
        assert desk.desk.queues["general"].line == []
        assert desk.desk.queues["general"].waiting == {}
    finally:
        await desk.close()


async def test_overflow_zero_prefers_the_yue_seat_but_takes_any_at_once() -> None:
    desk = Desk(
        [MIN_SEAT, MANDARIN_OP, YUE_SEAT],
        skills={**YUE, MIN_SEAT: frozenset({"min"})},
        overflow_after=0.0,
    )
    try:
        first = FakeCaller("13800000009", "yue")
        await desk.join(first)
        assert await desk.connected(first) == YUE_SEAT
        # the yue seat is busy: any operator at once, the one with the fewest skills first
        second = FakeCaller("13800000010", "yue")
        await desk.join(second)
        assert await desk.connected(second) == MANDARIN_OP
        third = FakeCaller("13800000027", "yue")
        await desk.join(third)
        assert await desk.connected(third) == MIN_SEAT
    finally:
        await desk.close()


async def test_yue_caller_at_the_head_does_not_block_a_mandarin_caller_behind() -> None:
    desk = Desk([MANDARIN_OP, YUE_SEAT], skills=YUE, overflow_after=None)
    try:
        busy = FakeCaller("13800000011", "yue")
        await desk.join(busy)
        assert await desk.connected(busy) == YUE_SEAT
        head = FakeCaller("13800000012", "yue")
        await desk.join(head)
        behind = FakeCaller("13800000013")
        await desk.join(behind)
        assert behind.positions == [2]
        assert await desk.connected(behind) == MANDARIN_OP
        assert desk.dialer.rung_for("13800000012") == []
        # the yue seat frees: the caller at the head gets it
        desk.operator_hangs_up(busy)
        assert await desk.connected(head) == YUE_SEAT
        assert desk.dialer.rung_for("13800000012") == [YUE_SEAT]
    finally:
        await desk.close()


async def test_priority_caller_is_still_first() -> None:
    desk = Desk([MANDARIN_OP, YUE_SEAT], skills=YUE, overflow_after=None)
    try:
        busy = FakeCaller("13800000014")
        await desk.join(busy)
        assert await desk.connected(busy) == MANDARIN_OP
        busy_yue = FakeCaller("13800000015")
        await desk.join(busy_yue)
        assert await desk.connected(busy_yue) == YUE_SEAT
        early = FakeCaller("13800000016")
        await desk.join(early)
        called_back = FakeCaller("13800000017", priority=True)
        await desk.join(called_back)
        assert called_back.positions == [1]
        assert desk.desk.queues["general"].line == ["call-13800000017", "call-13800000016"]
        desk.operator_hangs_up(busy)
        assert await desk.connected(called_back) == MANDARIN_OP
        assert desk.dialer.rung_for("13800000016") == []
        desk.operator_hangs_up(busy_yue)
        assert await desk.connected(early) == YUE_SEAT
    finally:
        await desk.close()


async def test_operator_who_does_not_answer_is_skipped_for_another_yue_seat() -> None:
    desk = Desk(
        [MANDARIN_OP, YUE_SEAT, YUE_SEAT_2],
        skills={YUE_SEAT: frozenset({"yue"}), YUE_SEAT_2: frozenset({"yue"})},
        overflow_after=None,
        no_answer=frozenset({YUE_SEAT}),
    )
    try:
        caller = FakeCaller("13800000018", "yue")
        await desk.join(caller)
        assert await desk.connected(caller) == YUE_SEAT_2
        assert desk.dialer.rung_for("13800000018") == [YUE_SEAT, YUE_SEAT_2]
        assert desk.state(YUE_SEAT) is OperatorState.FREE
    finally:
        await desk.close()


async def test_when_every_seat_was_tried_the_caller_starts_over() -> None:
    desk = Desk(
        [MANDARIN_OP, YUE_SEAT],
        skills=YUE,
        overflow_after=None,
        max_wait=RING_TIMEOUT * 2.5,
        no_answer=frozenset({YUE_SEAT}),
    )
    try:
        caller = FakeCaller("13800000019", "yue")
        result = await (await desk.join(caller))
        assert result.outcome is TransferOutcome.NO_OPERATOR
        assert desk.dialer.rung_for("13800000019") == [YUE_SEAT, YUE_SEAT, YUE_SEAT]
    finally:
        await desk.close()


async def test_a_ringing_caller_does_not_hold_back_the_callers_behind() -> None:
    desk = Desk([MANDARIN_OP, YUE_SEAT], skills=YUE, no_answer=frozenset({YUE_SEAT}))
    try:
        head = FakeCaller("13800000020", "yue")
        await desk.join(head)
        await until(lambda: desk.dialer.rung_for("13800000020") == [YUE_SEAT])
        behind = FakeCaller("13800000021")
        await desk.join(behind)
        assert await desk.connected(behind) == MANDARIN_OP
    finally:
        await desk.close()


async def test_snapshot_shows_operators_and_waiting_callers_in_order() -> None:
    desk = Desk([MANDARIN_OP, YUE_SEAT], skills=YUE, overflow_after=None)
    try:
        busy = FakeCaller("13800000022")
        await desk.join(busy)
        assert await desk.connected(busy) == MANDARIN_OP
        busy_yue = FakeCaller("13800000023", "yue")
        await desk.join(busy_yue)
        assert await desk.connected(busy_yue) == YUE_SEAT
        yue = FakeCaller("13800000024", "yue")
        await desk.join(yue)
        anyone = FakeCaller("13800000025")
        await desk.join(anyone)
        called_back = FakeCaller("13800000026", "yue", priority=True)
        await desk.join(called_back)
        await asyncio.sleep(0.05)

        (queue,) = desk.desk.snapshot()
        assert queue.name == "general"
        assert queue.overflow_after is None
        ops = {op.uri: op for op in queue.operators}
        assert ops[YUE_SEAT].skills == ("yue",)
        assert ops[YUE_SEAT].state is OperatorState.TALKING
        assert ops[YUE_SEAT].calls_taken == 1
        assert ops[MANDARIN_OP].skills == ()
        waiting = [(w.call_id, w.caller, w.skill, w.position) for w in queue.waiting]
        assert waiting == [
            ("call-13800000026", "13800000026", "yue", 1),
            ("call-13800000024", "13800000024", "yue", 2),
            ("call-13800000025", "13800000025", None, 3),
        ]
        assert queue.waiting[1].waited > queue.waiting[0].waited > 0
        assert not any(w.overflowed or w.ringing for w in queue.waiting)
        as_json: dict[str, Any] = asdict(queue)
        assert as_json["waiting"][0]["skill"] == "yue"
    finally:
        await desk.close()


def test_skills_for_an_operator_not_in_the_queue_are_refused() -> None:
    with pytest.raises(ValueError, match=r"sip:nobody@127\.0\.0\.1"):
        OperatorDesk(
            {
                "general": QueueConfig(
                    [MANDARIN_OP], 5, 60.0, skills={"sip:nobody@127.0.0.1": frozenset({"yue"})}
                )
            },
            dialer=FakeDialer(),
            ring_timeout=1.0,
            wrap_up=0.0,
            log=LOG,
        )


def test_queue_config_keeps_its_positional_order() -> None:
    cfg = QueueConfig([MANDARIN_OP], 5, 60.0)
    assert (cfg.max_waiting, cfg.max_wait, cfg.overflow_after, dict(cfg.skills)) == (
        5,
        60.0,
        30.0,
        {},
    )


async def test_a_bridged_call_is_not_cut_when_max_wait_passes() -> None:
    desk = Desk([MANDARIN_OP], max_wait=0.3)
    try:
        caller = FakeCaller("13800000028")
        task = await desk.join(caller)
        assert await desk.connected(caller) == MANDARIN_OP
        await asyncio.sleep(0.6)
        assert not task.done() and not caller.gone.done()
        desk.operator_hangs_up(caller)
        result = await task
        assert result.outcome is TransferOutcome.BRIDGED
        assert result.operator == MANDARIN_OP
        assert caller.gone.result() is EndReason.OPERATOR_HANGUP
        assert desk.state(MANDARIN_OP) is OperatorState.FREE
        assert desk.desk.snapshot()[0].operators[0].calls_taken == 1
    finally:
        await desk.close()


async def test_a_caller_who_waits_out_max_wait_is_told_no_operator() -> None:
    desk = Desk([MANDARIN_OP], max_wait=0.4)
    try:
        busy = FakeCaller("13800000029")
        await desk.join(busy)
        assert await desk.connected(busy) == MANDARIN_OP
        waiting = FakeCaller("13800000030")
        result = await (await desk.join(waiting))  # was: RuntimeError('Lock is not acquired.')
        assert result.outcome is TransferOutcome.NO_OPERATOR
        assert waiting.outcomes[-1] == ("general", None, "no_operator")
        assert [w.call_id for w in desk.desk.snapshot()[0].waiting] == []
    finally:
        await desk.close()


async def test_an_operator_in_two_queues_takes_one_caller_at_a_time() -> None:
    dialer = FakeDialer()
    desk = OperatorDesk(
        {
            "water": QueueConfig([MANDARIN_OP], 10, 10.0),
            "power": QueueConfig([MANDARIN_OP, YUE_SEAT], 10, 10.0, skills=YUE),
        },
        dialer=dialer,
        ring_timeout=RING_TIMEOUT,
        wrap_up=0.0,
        log=LOG,
    )
    first, second = FakeCaller("13800000011"), FakeCaller("13800000012", "yue")
    third = FakeCaller("13800000013")
    tasks = [
        asyncio.ensure_future(desk.connect(first, "water", None)),
        asyncio.ensure_future(desk.connect(second, "power", None)),
    ]
    try:
        await until(lambda: first.caller in dialer.legs and second.caller in dialer.legs)
        assert dialer.rung_for(first.caller) == [MANDARIN_OP]
        assert dialer.rung_for(second.caller) == [YUE_SEAT]
        # the person at MANDARIN_OP is busy in "water": a "power" caller is not rung to them
        tasks.append(asyncio.ensure_future(desk.connect(third, "power", None)))
        await until(lambda: third.positions != [])
        await asyncio.sleep(0.2)
        assert dialer.rung_for(third.caller) == []
        assert [op.state for op in desk.operators_named(MANDARIN_OP)] == [OperatorState.TALKING]
        dialer.legs[first.caller].ended.set_result("remote_bye")  # free again: "power" may take
        await until(lambda: third.caller in dialer.legs)
        assert dialer.rung_for(third.caller) == [MANDARIN_OP]
    finally:
        for caller in (first, second, third):
            caller.end(EndReason.CALLER_HANGUP)
        await asyncio.gather(*tasks, return_exceptions=True)


ELDERLY_SEAT = "sip:op5@127.0.0.1:5085"
ELDERLY = {ELDERLY_SEAT: frozenset({"elderly"})}


async def test_an_elderly_caller_goes_to_the_elderly_seat_then_overflows() -> None:
    # 老年人专席: the seat is preferred although the other operator is listed first
    # and free; with the seat busy, the caller waits the seat's own
    # overflow (even when dialect callers never overflow), then takes anyone
    desk = Desk(
        [MANDARIN_OP, ELDERLY_SEAT], skills=ELDERLY, overflow_after=None, elderly_overflow_after=0.3
    )
    try:
        first = FakeCaller("13800000031", "elderly")
        await desk.join(first)
        assert await desk.connected(first) == ELDERLY_SEAT
        assert desk.state(MANDARIN_OP) is OperatorState.FREE
        second = FakeCaller("13800000032", "elderly")
        joined = time.monotonic()
        await desk.join(second)
        await asyncio.sleep(0.15)
        assert desk.dialer.rung_for("13800000032") == []
        assert await desk.connected(second) == MANDARIN_OP
        assert 0.3 <= time.monotonic() - joined < 0.9
        # an ordinary caller is not held back for the seat
        third = FakeCaller("13800000033")
        desk.operator_hangs_up(second)
        await desk.join(third)
        assert await desk.connected(third) == MANDARIN_OP
    finally:
        await desk.close()
