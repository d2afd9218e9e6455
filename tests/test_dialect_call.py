"""Dialects and slow speech through a real call (issue 5's acceptance test).

A baresip caller presses 6 (dialects) and 2 (粤语), then 7 (elderly service):
what baresip recorded is the Cantonese rendering of the prompts (espeak-ng yue,
not the Mandarin one), slowed by [elderly] speed 0.8: 1/0.8 times as long as
the normal-speed Cantonese prompt (within 2 %) and at the same pitch (within
5 %). Pressing 0 reaches the operator with the yue skill (the dialect seat),
though a Mandarin operator is free too. The second call from the same number
starts in Cantonese and slow from the first prompt, and goes to the seat."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from tests.audio_tools import best_match, write_wav
from tests.conftest import StartHotline
from tests.peers import Baresip, SippUas, free_udp_port
from tests.test_call_path import wait_records
from tests.test_slow_speech import _f0

NUMBER = "13600001234"
SPEED = 0.8

pytestmark = pytest.mark.peers


def voiced_span(pcm: npt.NDArray[np.int16]) -> tuple[int, int]:
    """First and last sample louder than a whisper (a rendering's silence trimmed)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 500)
    return int(loud[0]), int(loud[-1]) + 1


async def reached(hotline: Any, node: str, times: int = 1, timeout: float = 30.0) -> None:
    """Wait until the (one) call has entered ``node`` ``times`` times."""
    for _ in range(int(timeout / 0.1)):
        calls = list(hotline.calls.values())
        if calls and calls[0].record.path.count(node) >= times:
            return
        await asyncio.sleep(0.1)
    paths = [c.record.path for c in hotline.calls.values()]
    raise AssertionError(f"the call did not reach {node!r} x{times}: {paths}")


async def bridged(hotline: Any, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.1)):
        calls = list(hotline.calls.values())
        if calls and calls[0].record.outcome == "bridged":
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the call was not bridged to an operator")


async def test_cantonese_slow_call_reaches_the_yue_seat_and_is_remembered(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    mandarin_op = SippUas(tmp_path / "op-m", free_udp_port(), free_udp_port(even=True))
    yue_op = SippUas(
        tmp_path / "op-y", free_udp_port(), free_udp_port(even=True), user="operator-yue"
    )
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(8000 * 120, dtype=np.int16))
    caller = Baresip(tmp_path / "caller", free_udp_port(), play=quiet, user=NUMBER)
    for peer in (mandarin_op, yue_op):
        await peer.start()
    await caller.start()
    try:
        hotline = await start_hotline(
            [mandarin_op.uri, yue_op.uri],
            extra=f"""
[dialects]
offered = ["mandarin", "yue"]
overflow_after = 60

[dialects.seats]
yue = ["{yue_op.uri}"]
""",
        )
        target = f"sip:12345@127.0.0.1:{hotline.endpoint.port}"
        await caller.dial(target)
        await reached(hotline, "main")
        await asyncio.sleep(1.0)
        await caller.keys("6")
        await reached(hotline, "dialects")
        await asyncio.sleep(1.0)
        await caller.keys("2")
        await reached(hotline, "main", times=2)  # the main menu again, now in Cantonese
        await asyncio.sleep(1.5)
        await caller.keys("7")
        await reached(hotline, "elderly_menu")
        await asyncio.sleep(1.5)
        await caller.keys("0")
        await bridged(hotline)
        await asyncio.sleep(1.0)
        await caller.hangup()
        (first,) = await wait_records(hotline, 1)

        await caller.dial(target)  # the same number calls again
        await bridged(hotline)
        await asyncio.sleep(1.0)
        await caller.hangup()
        records = await wait_records(hotline, 2)
    finally:
        await caller.quit()
        await mandarin_op.stop()
        await yue_op.stop()

    assert first.path == [
        "welcome", "main", "dialects", "to_yue", "main", "elderly", "elderly_menu", "operator",
    ]  # fmt: skip
    assert first.digits == "6270"
    assert first.operator == yue_op.uri, "a Cantonese caller goes to the yue seat"

    prompts = hotline.prompts
    assert prompts.source("elderly", "yue") == "espeak-ng:yue"
    normal = prompts.get("elderly", 1.0, "yue").pcm
    slow = prompts.get("elderly", SPEED, "yue").pcm
    mandarin_slow = prompts.get("elderly", SPEED, "mandarin").pcm
    heard_files = caller.recordings("dec")
    assert len(heard_files) == 2, heard_files
    heard, _ = sf.read(str(heard_files[0]), dtype="int16")
    heard = np.asarray(heard, dtype=np.int16)

    # the caller heard the slowed Cantonese prompt, from its first word to its last
    s_start, s_end = voiced_span(slow)
    head, at_head = best_match(heard, slow[s_start : s_start + 8000])
    tail, at_tail = best_match(heard, slow[s_end - 8000 : s_end])
    assert head > 0.8 and tail > 0.8, f"slowed Cantonese prompt not heard ({head:.2f}, {tail:.2f})"
    heard_length = at_tail + 8000 - at_head
    n_start, n_end = voiced_span(normal)
    ratio = heard_length / (n_end - n_start)
    assert abs(ratio - 1 / SPEED) < 0.02 / SPEED, f"heard {ratio:.3f}x as long, want {1 / SPEED}"
    segment = heard[at_head : at_head + heard_length]
    f0_heard, f0_normal = _f0(segment), _f0(normal)
    assert abs(f0_heard - f0_normal) / f0_normal < 0.05, (f0_heard, f0_normal)
    # Cantonese, not the Mandarin prompt
    m_start, _ = voiced_span(mandarin_slow)
    assert best_match(heard, mandarin_slow[m_start : m_start + 8000])[0] < 0.5
    # the main menu after the choice was said in Cantonese too
    menu = prompts.get("main_menu", 1.0, "yue").pcm
    c_start, _ = voiced_span(menu)
    assert best_match(heard, menu[c_start : c_start + 6000])[0] > 0.8

    # the second call: Cantonese and slow from the first prompt, straight to the seat
    second = next(r for r in records if r.call_id != first.call_id)
    assert second.path == ["elderly_welcome", "operator"]
    assert second.operator == yue_op.uri
    heard2, _ = sf.read(str(heard_files[1]), dtype="int16")
    welcome = prompts.get("elderly_welcome", SPEED, "yue").pcm
    w_start, _ = voiced_span(welcome)
    assert best_match(np.asarray(heard2), welcome[w_start : w_start + 8000])[0] > 0.8
    assert hotline.profiles is not None
    profile = await hotline.profiles.get(NUMBER)
    assert profile is not None and profile.dialect == "yue" and profile.speed == SPEED


async def test_an_elderly_caller_reaches_the_elderly_seat(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    # 老年人专席: key 7 (the elderly service), then 0: the call goes to the seat
    # although the other operator, listed first, is free
    other_op = SippUas(tmp_path / "op-m", free_udp_port(), free_udp_port(even=True))
    seat_op = SippUas(
        tmp_path / "op-e", free_udp_port(), free_udp_port(even=True), user="operator-elderly"
    )
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(8000 * 60, dtype=np.int16))
    caller = Baresip(tmp_path / "caller", free_udp_port(), play=quiet, user="13900000077")
    for peer in (other_op, seat_op):
        await peer.start()
    await caller.start()
    try:
        hotline = await start_hotline(
            [other_op.uri, seat_op.uri],
            extra=f"""
[elderly]
seats = ["{seat_op.uri}"]
seat_overflow_after = 60
""",
        )
        await caller.dial(f"sip:12345@127.0.0.1:{hotline.endpoint.port}")
        await reached(hotline, "main")
        await asyncio.sleep(1.0)
        await caller.keys("7")
        await reached(hotline, "elderly_menu")
        await asyncio.sleep(1.5)
        await caller.keys("0")
        await bridged(hotline)
        await asyncio.sleep(1.0)
        await caller.hangup()
        (record,) = await wait_records(hotline, 1)
    finally:
        await caller.quit()
        await other_op.stop()
        await seat_op.stop()
    assert record.path[-2:] == ["elderly_menu", "operator"], record.path
    assert record.operator == seat_op.uri, "an elderly caller goes to the elderly seat"
