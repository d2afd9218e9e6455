"""Callers waiting for an operator hear their place in line (real calls): the
second caller hears 第二位 on joining; when the first gives up, their next
announcement says 第一位. The first caller only ever hears 第一位. Once the
queue has handled a call, a waiting caller also hears the estimated wait."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ivr.operators import Operator, Queue
from ivr.prompts import count_words, numbered
from ivr.trial_call import place_call
from tests.audio_tools import best_match
from tests.conftest import StartHotline, trial
from tests.peers import SippUas, free_udp_port
from tests.test_call_path import wait_records
from tests.test_callbacks_live import busy_operator

PLAN = Path(__file__).parent / "data" / "dialplans" / "queue_position.toml"
LOG = logging.getLogger("ivr.test.caller")

pytestmark = pytest.mark.peers


def test_numbers_are_said_as_chinese_counts() -> None:
    assert [count_words(n) for n in (1, 2, 10, 12, 20, 21, 99)] == [
        "一", "二", "十", "十二", "二十", "二十一", "九十九",
    ]  # fmt: skip
    texts = numbered({"place": "您现在排在第{n}位。", "hold": "请稍候。"}, most=3)
    assert texts == {
        "place_1": "您现在排在第一位。",
        "place_2": "您现在排在第二位。",
        "place_3": "您现在排在第三位。",
        "hold": "请稍候。",
    }
    # a count (not after 第) says 两 for 2
    assert numbered({"wait": "约{n}分钟"}, most=3)["wait_2"] == "约两分钟"


def test_estimated_wait_is_place_times_handling_time_over_staffed_operators() -> None:
    a, b = Operator(uri="sip:a@x", queue="general"), Operator(uri="sip:b@x", queue="general")
    queue = Queue(name="general", operators=[a, b], max_waiting=10, max_wait=600)
    assert queue.estimated_wait(1) is None  # no call handled yet: nothing to say
    queue.handled.extend([120.0, 180.0])
    assert queue.estimated_wait(3) == 3 * 150.0 / 2
    b.paused = True
    assert queue.estimated_wait(1) == 150.0
    a.paused = True
    assert queue.estimated_wait(1) is None  # nobody staffs it
    a.paused = b.paused = False
    queue.handled.extend([60.0] * 30)  # only the last 20 calls count
    assert queue.estimated_wait(2) == 60.0
    # a caller waiting for a seat: only the operators with the skill serve them
    b.skills = frozenset({"yue"})
    assert queue.estimated_wait(2, "yue") == 120.0
    assert queue.estimated_wait(2, "min") == 60.0  # no min seat: any operator (overflow)


async def test_waiting_callers_hear_their_place_in_line(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    operator = busy_operator(tmp_path)  # rings, never answers
    await operator.start()
    try:
        hotline = await start_hotline([operator.uri], dialplan=PLAN, ring_timeout=60.0)
        first_heard, second_heard = tmp_path / "first.wav", tmp_path / "second.wav"
        first = asyncio.ensure_future(
            place_call(
                trial(
                    hotline.endpoint.port, duration=9.0, record=first_heard, caller="13800000001"
                ),
                LOG,
            )
        )
        await asyncio.sleep(2.0)
        second = await place_call(
            trial(
                hotline.endpoint.port,
                duration=22.0,
                record=second_heard,
                caller="13800000002",
                rtp_ports=(45000, 45040),
            ),
            LOG,
        )
        await first
        await wait_records(hotline, 2)
        place_1 = hotline.prompts.get("place_1").pcm
        place_2 = hotline.prompts.get("place_2").pcm
        wait_1 = hotline.prompts.get("wait_1").pcm
    finally:
        await operator.stop()
    assert second.status == 200

    def scores(heard: np.ndarray, start: float, end: float) -> tuple[float, float]:
        window = heard[int(start * 8000) : int(end * 8000)]
        return best_match(window, place_1)[0], best_match(window, place_2)[0]

    heard, _ = sf.read(str(second_heard), dtype="int16")
    one, two = scores(heard, 0.0, 4.0)  # on joining, behind the first caller
    assert two > 0.9 and two > one + 0.1, (one, two)
    one, two = scores(heard, 9.0, 22.0)  # the first caller gave up at 9 s
    assert one > 0.9 and one > two + 0.1, (one, two)
    # no call was handled: no estimate is said
    assert best_match(heard, wait_1)[0] < 0.6
    first_audio, _ = sf.read(str(first_heard), dtype="int16")
    one, two = scores(first_audio, 0.0, 9.0)
    assert one > 0.9 and one > two + 0.1, (one, two)


async def test_a_waiting_caller_hears_the_estimated_wait(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    # a first call is handled (bridged ~3 s), a second keeps the only operator
    # busy, a third waits: place 1 x ~3 s / 1 operator -> "约一分钟"
    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True))
    await operator.start()
    try:
        hotline = await start_hotline([operator.uri], dialplan=PLAN, ring_timeout=10.0)
        port = hotline.endpoint.port
        handled_heard = tmp_path / "handled.wav"
        handled = await place_call(
            trial(port, duration=4.0, record=handled_heard, caller="13800000001"), LOG
        )
        await wait_records(hotline, 1)
        busy = asyncio.ensure_future(
            place_call(
                trial(port, duration=16.0, caller="13800000002", rtp_ports=(45000, 45040)), LOG
            )
        )
        await asyncio.sleep(3.0)
        waiting_heard = tmp_path / "waiting.wav"
        waiting = await place_call(
            trial(
                port,
                duration=8.0,
                record=waiting_heard,
                caller="13800000003",
                rtp_ports=(45100, 45140),
            ),
            LOG,
        )
        await busy
        await wait_records(hotline, 3)
        wait_1 = hotline.prompts.get("wait_1").pcm
        wait_2 = hotline.prompts.get("wait_2").pcm
        handled_s = list(hotline.desk.queues["general"].handled)
    finally:
        await operator.stop()
    assert handled.status == 200 and waiting.status == 200
    assert len(handled_s) >= 1 and handled_s[0] < 60, handled_s
    heard, _ = sf.read(str(waiting_heard), dtype="int16")
    one, two = best_match(heard, wait_1)[0], best_match(heard, wait_2)[0]
    assert one > 0.9 and one > two + 0.1, (one, two)
    first, _ = sf.read(str(handled_heard), dtype="int16")
    assert best_match(first, wait_1)[0] < 0.6  # the first caller never waited


async def test_the_console_queue_shows_each_callers_estimated_wait() -> None:
    from ivr.call import EndReason
    from ivr.operators import OperatorDesk, QueueConfig
    from tests.test_config_reload import LOG as DESK_LOG
    from tests.test_config_reload import FakeCaller, FakeDialer, until

    a = "sip:a@127.0.0.1:5081"
    dialer = FakeDialer()
    desk = OperatorDesk(
        {"general": QueueConfig([a], 10, 30.0)},
        dialer=dialer,
        ring_timeout=0.5,
        wrap_up=0.0,
        log=DESK_LOG,
    )
    first, second, third = FakeCaller("2001"), FakeCaller("2002"), FakeCaller("2003")
    talks = [asyncio.ensure_future(desk.connect(first, "general", None))]
    await until(lambda: "2001" in dialer.legs, "A answers the first caller", 2.0)
    talks.append(asyncio.ensure_future(desk.connect(second, "general", None)))
    await until(lambda: second.positions != [], "the second caller waits", 2.0)
    (shot,) = desk.snapshot()
    assert shot.waiting[0].estimated_wait is None  # no call handled yet
    await asyncio.sleep(0.3)
    dialer.legs["2001"].ended.set_result("remote_bye")
    await until(lambda: "2002" in dialer.legs, "A answers the second caller", 2.0)
    talks.append(asyncio.ensure_future(desk.connect(third, "general", None)))
    await until(lambda: third.positions != [], "the third caller waits", 2.0)
    (shot,) = desk.snapshot()
    (waiter,) = shot.waiting
    handled = list(desk.queues["general"].handled)
    assert len(handled) == 1 and 0.3 <= handled[0] < 2.0, handled
    assert waiter.call_id == third.call_id and waiter.estimated_wait == handled[0]
    for caller in (second, third):
        caller.end(EndReason.CALLER_HANGUP)
    await asyncio.gather(*talks, return_exceptions=True)
