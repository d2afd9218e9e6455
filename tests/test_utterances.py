"""Utterance capture on real speech and noise, and spoken-option matching."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile
import soxr

from ivr.speech.spoken_options import match_option
from ivr.speech.utterance import (
    FRAME,
    ListenSettings,
    Utterance,
    UtteranceCapture,
    UtteranceEnd,
    voice_like_frames,
)
from tests.conftest import ROOT

SPEECH = ROOT.parent / "shared" / "speech"


def clip(name: str) -> npt.NDArray[np.int16]:
    audio, rate = soundfile.read(str(SPEECH / name), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return (soxr.resample(audio, rate, 8000) * 32767).astype(np.int16)


def silence(seconds: float) -> npt.NDArray[np.int16]:
    return np.zeros(int(seconds * 8000), dtype=np.int16)


async def capture(pcm: npt.NDArray[np.int16], settings: ListenSettings) -> Utterance:
    """Feed ``pcm`` in 20 ms frames, as the RTP stream does."""
    cap = UtteranceCapture(settings)
    for start in range(0, len(pcm) - FRAME + 1, FRAME):
        cap.feed(pcm[start : start + FRAME])
        if cap.done.done():
            break
    if not cap.done.done():
        cap.hung_up()
    return await asyncio.wait_for(cap.done, 1)


@pytest.mark.skipif(not SPEECH.exists(), reason="../shared/speech is not beside the checkout")
async def test_real_speech_is_cut_at_the_trailing_silence() -> None:
    speech = clip("aishell1_BAC009S0724W0121.wav")
    audio = np.concatenate([silence(1.0), speech, silence(3.0)])
    got = await capture(audio, ListenSettings(end_silence=1.0, pre_roll=0.3))
    assert got.end is UtteranceEnd.SILENCE
    # the capture is one stretch of the input, frame-aligned: find where it starts
    starts = [
        i
        for i in range(0, len(audio) - FRAME, FRAME)
        if np.array_equal(audio[i : i + FRAME], got.pcm[:FRAME])
    ]
    assert len(starts) == 1
    begin, end = starts[0], starts[0] + len(got.pcm)
    # every loud sample of the sentence (first and last syllable included) is inside it
    loud = np.flatnonzero(np.abs(audio) > 0.1 * np.abs(speech).max())
    assert begin <= loud[0] and loud[-1] < end
    # and not much else: at most pre-roll + start window before, 0.3 s kept after
    assert loud[0] - begin <= 0.3 * 8000 + 6 * FRAME
    assert end - loud[-1] <= 0.3 * 8000 + 0.5 * 8000


@pytest.mark.skipif(not SPEECH.exists(), reason="../shared/speech is not beside the checkout")
async def test_speech_longer_than_the_limit_is_cut_and_flagged() -> None:
    speech = np.concatenate([clip(n.name) for n in sorted(SPEECH.glob("*.wav"))])
    got = await capture(speech, ListenSettings(max_seconds=4.0))
    assert got.end is UtteranceEnd.MAX_LENGTH
    assert 3.9 <= got.seconds <= 4.4 and got.heard


async def test_silence_is_no_speech() -> None:
    got = await capture(silence(5.0), ListenSettings(no_speech_timeout=3.0))
    assert got.end is UtteranceEnd.NO_SPEECH and not got.heard and got.seconds == 0


async def test_loud_noise_is_not_taken_for_speech() -> None:
    noise = np.random.default_rng(7).normal(0, 4000, 8000 * 4).astype(np.int16)
    got = await capture(np.concatenate([noise, silence(2.0)]), ListenSettings())
    assert got.end is UtteranceEnd.NOISE_ONLY and not got.heard


def test_espeak_speech_is_voice_like(tmp_path: Path) -> None:
    wav = tmp_path / "s.wav"
    subprocess.run(
        ["espeak-ng", "-v", "cmn-latn-pinyin", "-w", str(wav), "wo3 jiao4 wang2 fang1"],
        check=True,
    )
    audio, rate = soundfile.read(str(wav), dtype="float32")
    pcm = (soxr.resample(audio, rate, 8000) * 32767).astype(np.int16)
    assert voice_like_frames(pcm) >= 20


OPTIONS = {"1": ["普通话"], "2": ["粤语", "广东话"], "3": ["老年人"], "0": ["人工", "转人工"]}


@pytest.mark.parametrize(
    ("said", "key"),
    [
        ("我要说普通话", "1"),
        ("越语", "2"),  # near-homophone from the recogniser
        ("广东化", "2"),
        ("老连人服务", "3"),  # n/l merged, as in southern accents
        ("帮我转人公", "0"),
        ("你好", None),
        ("转人工，普通话", None),  # two options equally: ask again
        ("", None),
    ],
)
def test_spoken_options(said: str, key: str | None) -> None:
    match = match_option(said, OPTIONS)
    assert (match.key if match else None) == key


@pytest.mark.skipif(not SPEECH.exists(), reason="../shared/speech is not beside the checkout")
async def test_recognition_starts_in_the_pause_and_is_kept_if_the_caller_stays_silent() -> None:
    speech = clip("aishell2_IT0011W0001.wav")
    loop = asyncio.get_running_loop()
    started: list[npt.NDArray[np.int16]] = []

    def on_pause(pcm: npt.NDArray[np.int16]) -> asyncio.Future[object]:
        started.append(pcm)
        return loop.create_future()

    settings = ListenSettings(end_silence=1.2, speculate_after=0.4)
    cap = UtteranceCapture(settings, on_pause=on_pause)
    audio = np.concatenate([silence(0.5), speech, silence(2.0)])
    for start in range(0, len(audio) - FRAME + 1, FRAME):
        cap.feed(audio[start : start + FRAME])
    got = await asyncio.wait_for(cap.done, 1)
    assert got.end is UtteranceEnd.SILENCE and got.early is not None
    # the early recognition was given exactly the audio the utterance ends up with
    assert np.array_equal(started[-1], got.pcm)


@pytest.mark.skipif(not SPEECH.exists(), reason="../shared/speech is not beside the checkout")
async def test_an_early_recognition_is_dropped_when_the_caller_speaks_again() -> None:
    first, second = clip("aishell2_IT0011W0001.wav"), clip("aishell1_BAC009S0724W0121.wav")
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[object]] = []

    def on_pause(pcm: npt.NDArray[np.int16]) -> asyncio.Future[object]:
        futures.append(loop.create_future())
        return futures[-1]

    cap = UtteranceCapture(ListenSettings(end_silence=1.2, speculate_after=0.4), on_pause)
    audio = np.concatenate([silence(0.5), first, silence(0.2), second, silence(2.0)])
    for start in range(0, len(audio) - FRAME + 1, FRAME):
        cap.feed(audio[start : start + FRAME])
    got = await asyncio.wait_for(cap.done, 1)
    assert len(futures) >= 2 and futures[0].cancelled()
    assert got.early is futures[-1] and not futures[-1].cancelled()
    assert got.seconds > (len(first) + len(second)) / 8000 - 0.5


async def test_a_hiss_is_given_up_on_within_two_seconds() -> None:
    noise = np.random.default_rng(5).normal(0, 3000, 8000 * 30).astype(np.int16)
    cap = UtteranceCapture(ListenSettings(max_seconds=30.0))
    fed = 0
    while not cap.done.done():
        cap.feed(noise[fed : fed + FRAME])
        fed += FRAME
    assert cap.done.result().end is UtteranceEnd.NOISE_ONLY
    assert fed / 8000 < 2.5
