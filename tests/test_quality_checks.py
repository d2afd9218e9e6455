"""The automatic checks of quality inspection on real audio: conversation
recordings made of the real clips in ../shared/speech (the caller) and
espeak-ng phrases (the operator), heard by Whisper base. A call done right
passes every check; one with no greeting, talk-over, a long silence, a wrong
number read back, an angry caller at the end and no closing fails each, at
the right place."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ivr.config import QualitySettings
from ivr.quality.checks import (
    CHECKS,
    FAILED,
    NOT_RUN,
    PASSED,
    CheckSettings,
    Recognise,
    read_conversation,
    run_checks,
)
from ivr.speech import Transcript, load_engine
from tests.quality_audio import (
    CALLER_NUMBER,
    OVER_S,
    SILENCE_S,
    SPEECH,
    clean_parts,
    conversation,
    faulty_parts,
)

MODELS = Path(__file__).resolve().parents[1] / "asr_models"
pytestmark = pytest.mark.skipif(not SPEECH.is_dir(), reason=f"{SPEECH} is missing")

D = QualitySettings()
SETTINGS = CheckSettings(
    silence_s=D.silence_s,
    talk_over_s=D.talk_over_s,
    speech_level_db=D.speech_level_db,
    greeting_words=D.greeting_words,
    closing_words=D.closing_words,
)


@pytest.fixture(scope="module")
def whisper_recognise() -> Recognise:
    engine = load_engine("whisper", MODELS)

    async def recognise(pcm: np.ndarray) -> Transcript:
        return await asyncio.get_running_loop().run_in_executor(None, engine.transcribe, pcm)

    return recognise


async def test_a_call_done_right_passes_every_check(
    tmp_path: Path, whisper_recognise: Recognise
) -> None:
    path = tmp_path / "clean.wav"
    conversation(path, clean_parts(tmp_path))
    checks = await run_checks(path, SETTINGS, numbers=[CALLER_NUMBER], recognise=whisper_recognise)
    for name in CHECKS:
        assert checks[name]["state"] == PASSED, (name, checks[name])
    assert "您好" in checks["greeting"]["reason"]
    assert "祝您" in checks["closing"]["reason"]
    assert checks["end_sentiment"]["value"] == "平静"


async def test_each_fault_is_caught_where_it_is(
    tmp_path: Path, whisper_recognise: Recognise
) -> None:
    path = tmp_path / "faulty.wav"
    starts = conversation(path, faulty_parts(tmp_path))
    checks = await run_checks(path, SETTINGS, numbers=[CALLER_NUMBER], recognise=whisper_recognise)
    for name in CHECKS:
        assert checks[name]["state"] == FAILED, (name, checks[name])
    # the silence: from the end of the operator's number (part 2) to the
    # caller's next words (part 3), 15 s and a little trailing quiet
    ((start, end),) = checks["long_silence"]["spans"]
    assert abs(end - starts[3]) < 0.3, (end, starts[3])
    assert SILENCE_S - 0.5 < end - start < SILENCE_S + 1.5
    assert "双方静默" in checks["long_silence"]["reason"]
    # the talk-over: inside the 4 s the operator's number overlaps the caller's clip
    ((start, end),) = checks["talk_over"]["spans"]
    assert starts[2] - 0.1 <= start and end <= starts[2] + OVER_S + 0.1
    assert end - start >= D.talk_over_s
    assert checks["end_sentiment"]["value"] == "愤怒"
    assert "太过分" in checks["end_sentiment"]["reason"]
    assert CALLER_NUMBER not in str(checks)  # reasons never carry a whole number


async def test_without_a_recogniser_the_word_checks_are_not_run(tmp_path: Path) -> None:
    path = tmp_path / "faulty.wav"
    conversation(path, faulty_parts(tmp_path))
    checks = await run_checks(
        path, SETTINGS, numbers=[CALLER_NUMBER], recognise=None, no_recogniser="没有识别器"
    )
    assert checks["long_silence"]["state"] == FAILED
    assert checks["talk_over"]["state"] == FAILED
    for name in ("greeting", "closing", "phone_confirmed", "end_sentiment"):
        assert checks[name] == {"state": NOT_RUN, "reason": "没有识别器"}


def test_a_file_that_is_not_a_conversation_is_refused_by_name(tmp_path: Path) -> None:
    mono = tmp_path / "mono.wav"
    import soundfile as sf

    sf.write(str(mono), np.zeros(8000, np.int16), 8000)
    with pytest.raises(ValueError, match=r"mono\.wav: a conversation recording is 8000 Hz stereo"):
        read_conversation(mono)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav")
    with pytest.raises(ValueError, match=r"junk\.wav: not a readable WAV"):
        read_conversation(junk)
