"""Callers waiting for an operator hear their place in line (real calls): the
second caller hears 第二位 on joining; when the first gives up, their next
announcement says 第一位. The first caller only ever hears 第一位."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ivr.prompts import count_words, numbered
from ivr.trial_call import place_call
from tests.audio_tools import best_match
from tests.conftest import StartHotline, trial
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
    first_audio, _ = sf.read(str(first_heard), dtype="int16")
    one, two = scores(first_audio, 0.0, 9.0)
    assert one > 0.9 and one > two + 0.1, (one, two)
