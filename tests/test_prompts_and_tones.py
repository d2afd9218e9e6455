"""Prompt audio (recordings converted, text spoken by real espeak-ng, cache)
and in-band key tones (every key found; real speech never taken for a key)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ivr.media import g711
from ivr.media.inband_dtmf import InbandDtmfDetector
from ivr.prompts import PromptError, PromptLibrary, to_pinyin
from ivr.trial_call import tone
from tests.audio_tools import read_8k
from tests.conftest import SHARED


def library(tmp_path: Path) -> PromptLibrary:
    (tmp_path / "voices" / "mandarin").mkdir(parents=True, exist_ok=True)
    return PromptLibrary(tmp_path / "voices", tmp_path / "cache")


async def test_recording_44k_stereo_becomes_8k_mono(tmp_path: Path) -> None:
    lib = library(tmp_path)
    t = np.arange(44100 * 2) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 1000 * t)], axis=1) * 0.5
    sf.write(str(tmp_path / "voices" / "mandarin" / "welcome.wav"), stereo, 44100)
    lines = await lib.build({"welcome": "您好"})
    where = tmp_path / "voices" / "mandarin" / "welcome.wav"
    assert lines == [f"mandarin/welcome: recorded {where}"]
    audio = lib.get("welcome")
    assert abs(audio.duration - 2.0) < 0.01
    spectrum = np.abs(np.fft.rfft(audio.pcm[4000:12000].astype(float)))
    assert abs(int(np.argmax(spectrum)) * 8000 / 8000 - 1000) <= 2
    assert len(audio.frames("PCMU")[0]) == 160 and len(audio.frames("PCMA")) == 100


async def test_ulaw_recording_is_read(tmp_path: Path) -> None:
    lib = library(tmp_path)
    pcm = (np.sin(2 * np.pi * 500 * np.arange(8000) / 8000) * 8000).astype(np.int16)
    sf.write(str(tmp_path / "voices" / "mandarin" / "hold.wav"), pcm, 8000, subtype="ULAW")
    await lib.build({})
    assert abs(lib.get("hold").duration - 1.0) < 0.01


async def test_text_is_spoken_by_espeak_and_cached(tmp_path: Path) -> None:
    lib = library(tmp_path)
    await lib.build({"welcome": "您好，欢迎致电幺二三四五热线。"})
    speech = lib.get("welcome")
    assert speech.duration > 1.0
    assert float(np.sqrt(np.mean(speech.pcm.astype(float) ** 2))) > 300
    assert lib.renders == 1
    again = library(tmp_path)
    await again.build({"welcome": "您好，欢迎致电幺二三四五热线。"})
    assert again.renders == 0, "a warm start must not run espeak-ng again"
    assert np.array_equal(again.get("welcome").pcm, speech.pcm)


def test_digits_read_as_chinese_numerals() -> None:
    assert to_pinyin("12345") == "yao1 er4 san1 si4 wu3"


async def test_unreadable_recording_names_the_file(tmp_path: Path) -> None:
    lib = library(tmp_path)
    bad = tmp_path / "voices" / "mandarin" / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav")
    with pytest.raises(PromptError, match=r"broken\.wav"):
        await lib.build({})


async def test_unknown_prompt_key(tmp_path: Path) -> None:
    lib = library(tmp_path)
    await lib.build({})
    with pytest.raises(PromptError, match="'nope'"):
        lib.get("nope")


def detect(signal: np.ndarray) -> str:
    detector = InbandDtmfDetector()
    found: list[str] = []
    for i in range(0, len(signal) - 159, 160):
        found += detector.feed(signal[i : i + 160])
    return "".join(found)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
@pytest.mark.parametrize("level", [0.05, 0.3, 1.0])
def test_every_key_through_g711(codec: str, level: float) -> None:
    keys = "0123456789*#"
    parts = []
    for key in keys:
        parts += [(tone(key, 100) * level).astype(np.int16), np.zeros(400, np.int16)]
    signal = np.concatenate(parts)
    rng = np.random.default_rng(1)
    noise = rng.normal(0, np.sqrt(np.mean(signal.astype(float) ** 2)) / 10, len(signal))
    noisy = np.clip(signal + noise, -32768, 32767).astype(np.int16)  # 20 dB SNR
    if codec == "PCMU":
        coded = g711.decode_ulaw(g711.encode_ulaw(noisy))
    else:
        coded = g711.decode_alaw(g711.encode_alaw(noisy))
    assert detect(coded) == keys


def test_a_held_key_counts_once() -> None:
    assert detect(np.concatenate([tone("5", 1000), np.zeros(800, np.int16)])) == "5"


@pytest.mark.parametrize("clip", sorted(p.name for p in (SHARED / "speech").glob("*.wav")))
def test_real_speech_is_never_a_key(clip: str, tmp_path: Path) -> None:
    assert detect(read_8k(SHARED / "speech" / clip, tmp_path)) == ""


def test_noise_and_silence_are_never_keys() -> None:
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 3000, 8000 * 5).astype(np.int16)
    assert detect(noise) == "" and detect(np.zeros(8000, np.int16)) == ""
