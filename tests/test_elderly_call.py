"""The elderly service through a real call: our trial caller presses 7; what it
records afterwards is the IVR's prompt slowed by [elderly] speed (0.8): it
matches the slowed rendering, is 1/0.8 times as long (within 2 %) and has the
same pitch as the normal-speed prompt (within 5 %)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from ivr.trial_call import place_call
from tests.audio_tools import best_match
from tests.conftest import StartHotline, trial
from tests.test_call_path import wait_records
from tests.test_slow_speech import _f0


async def test_elderly_key_slows_the_prompts(start_hotline: StartHotline, tmp_path: Path) -> None:
    hotline = await start_hotline()
    heard_file = tmp_path / "heard.wav"
    await place_call(
        trial(hotline.endpoint.port, digits="7", digit_delay=2.0, duration=12.0, record=heard_file),
        logging.getLogger("ivr.test.caller"),
    )
    (record,) = await wait_records(hotline, 1)
    assert record.path[:3] == ["welcome", "main", "elderly"]
    normal = hotline.prompts.get("elderly").pcm
    slow = hotline.prompts.get("elderly", 0.8).pcm
    # the slowed rendering is 1/0.8 as long (trailing padding aside) and keeps the pitch
    assert abs(len(slow) / len(normal) - 1 / 0.8) < 0.02 * (1 / 0.8)
    heard, _ = sf.read(str(heard_file), dtype="int16")
    score, offset = best_match(heard, slow[8000:16000])
    assert score > 0.8, f"the caller did not hear the slowed prompt ({score:.2f})"
    start = offset - 8000
    segment = heard[start : start + len(slow)]
    assert len(segment) == len(slow)
    assert best_match(segment, normal[8000:16000])[0] < 0.6  # not the normal-speed audio
    f0_heard, f0_normal = _f0(np.asarray(segment)), _f0(normal)
    assert abs(f0_heard - f0_normal) / f0_normal < 0.05, (f0_heard, f0_normal)


async def test_the_next_call_starts_slow_until_the_number_is_forgotten(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    import asyncio
    import sys

    hotline = await start_hotline()
    log = logging.getLogger("ivr.test.caller")
    await place_call(trial(hotline.endpoint.port, digits="7", digit_delay=2.0, duration=5.0), log)
    await wait_records(hotline, 1)
    welcome_slow = hotline.prompts.get("elderly_welcome", 0.8).pcm
    welcome = hotline.prompts.get("welcome").pcm

    second = tmp_path / "second.wav"
    await place_call(trial(hotline.endpoint.port, duration=5.0, record=second), log)
    await wait_records(hotline, 2)
    heard, _ = sf.read(str(second), dtype="int16")
    assert best_match(heard, welcome_slow[8000:16000])[0] > 0.8  # slow from the first prompt

    config = tmp_path / "config.toml"
    done = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ivr.cli",
        "--config",
        str(config),
        "callers",
        "forget",
        "13800138000",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await done.communicate()
    assert "forgotten" in out.decode()
    third = tmp_path / "third.wav"
    await place_call(trial(hotline.endpoint.port, duration=5.0, record=third), log)
    await wait_records(hotline, 3)
    heard, _ = sf.read(str(third), dtype="int16")
    assert best_match(heard, welcome[8000:16000])[0] > 0.8  # normal speed again


async def test_a_number_in_the_elderly_registry_goes_straight_to_a_human(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    import asyncio
    import sys

    from tests.peers import SippUas, free_udp_port

    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True))
    await operator.start()
    try:
        hotline = await start_hotline([operator.uri])
        registry = tmp_path / "elderly.csv"
        registry.write_text("电话,姓名\n139 0000 1111,张大爷\nnot-a-number,x\n", encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ivr.cli",
            "--config",
            str(tmp_path / "config.toml"),
            "callers",
            "import-elderly",
            str(registry),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 1  # one line skipped, and said where
        assert "1 number(s) marked elderly" in out.decode()
        assert "elderly.csv:3: 'not-a-number' is not a phone number" in err.decode()
        heard_file = tmp_path / "heard.wav"
        await place_call(
            trial(hotline.endpoint.port, duration=25.0, record=heard_file, caller="13900001111"),
            logging.getLogger("ivr.test.caller"),
        )
        (record,) = await wait_records(hotline, 1)
    finally:
        await operator.stop()
    assert record.path == ["elderly_welcome", "operator"]  # no menus
    assert record.outcome == "bridged" and record.digits == ""
    heard, _ = sf.read(str(heard_file), dtype="int16")
    welcome_slow = hotline.prompts.get("elderly_welcome", 0.8).pcm
    assert best_match(heard, welcome_slow[8000:16000])[0] > 0.8


async def test_a_remembered_caller_changes_back_to_normal_speed(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await start_hotline()
    assert hotline.profiles is not None
    await hotline.profiles.remember("13800138000", speed=0.65)
    log = logging.getLogger("ivr.test.caller")
    await place_call(trial(hotline.endpoint.port, digits="3", digit_delay=2.0, duration=8.0), log)
    (record,) = await wait_records(hotline, 1)
    assert record.path[:3] == ["elderly_welcome", "speed_normal", "main"]
    profile = await hotline.profiles.get("13800138000")
    assert profile is not None and profile.speed == 1.0  # the next call starts normal
    heard = tmp_path / "next.wav"
    await place_call(trial(hotline.endpoint.port, duration=4.0, record=heard), log)
    (_, second) = sorted(await wait_records(hotline, 2), key=lambda r: r.started_at)
    assert second.path[0] == "welcome"
