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
