"""Conversation recordings for the quality-inspection tests, made the way
ivr/conversation_recorder.py writes them (stereo u-law WAV at 8 kHz, left the
caller, right the operator): the caller's side from the real recordings in
../shared/speech, the operator's phrases said by espeak-ng.

Whisper base hears espeak-ng's Mandarin unevenly (docs/decisions.md, "Test
speech"): each operator phrase here was tried at a few speeds and voices and
the rendition Whisper heard with its key words is used (再见 in any rendition
came back as 天 or 彩天, so the closing that is heard is 祝您生活愉快)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ivr.media import g711
from ivr.prompts import read_recording, to_pinyin
from tests.audio_tools import Pcm, read_8k
from tests.conftest import SHARED

SPEECH = SHARED / "speech"
RATE = 8000


def say(tmp: Path, text: str, *, speed: int = 105, voice: str = "cmn-latn-pinyin") -> Pcm:
    """``text`` said by espeak-ng, 8 kHz, through G.711 u-law."""
    name = hashlib.sha256(f"{text}/{speed}/{voice}".encode()).hexdigest()[:16]
    wav = tmp / f"espeak-{name}.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-g", "10", "-w", str(wav), to_pinyin(text)],
        check=True,
        capture_output=True,
    )
    pcm = np.clip(read_recording(wav), -32767, 32767).astype(np.int16)
    return g711.decode_ulaw(g711.encode_ulaw(pcm))


def plain(tmp: Path, text: str) -> Pcm:
    return say(tmp, text, speed=105, voice="cmn-latn-pinyin")


def f4(tmp: Path, text: str) -> Pcm:
    return say(tmp, text, speed=120, voice="cmn-latn-pinyin+f4")


def clip(tmp: Path, name: str) -> Pcm:
    return read_8k(SPEECH / name, tmp)


@dataclass(frozen=True)
class Part:
    side: str  # "caller" or "operator"
    pcm: Pcm
    gap: float  # seconds after the previous part's end; negative: over it


def conversation(path: Path, parts: Sequence[Part], lead: float = 0.5) -> list[float]:
    """Writes the recording; the start (s) of each part."""
    sides = {"caller": np.zeros(0, np.int32), "operator": np.zeros(0, np.int32)}
    starts = []
    t = lead
    for part in parts:
        t += part.gap
        a = int(t * RATE)
        track = sides[part.side]
        if a + len(part.pcm) > len(track):
            track = np.concatenate([track, np.zeros(a + len(part.pcm) - len(track), np.int32)])
        track[a : a + len(part.pcm)] += part.pcm
        sides[part.side] = track
        starts.append(t)
        t += len(part.pcm) / RATE
    n = max(len(s) for s in sides.values()) + RATE
    left, right = (
        np.clip(np.pad(sides[s], (0, n - len(sides[s]))), -32767, 32767).astype(np.int16)
        for s in ("caller", "operator")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.stack([left, right], axis=1), RATE, format="WAV", subtype="ULAW")
    return starts


CALLER_NUMBER = "13812345678"


def clean_parts(tmp: Path) -> list[Part]:
    """A call done right: greeting, the number read back, a closing; turns
    0.7 s apart."""
    return [
        Part("operator", plain(tmp, "您好，这里是12345热线。"), 0),
        Part("caller", clip(tmp, "aishell1_BAC009S0724W0121.wav"), 0.7),
        Part("operator", f4(tmp, "好的，我记下了。"), 0.7),
        Part("caller", clip(tmp, "wenetspeech_TEST_NET_S00000.wav"), 0.7),
        Part("operator", plain(tmp, "您的电话是幺三八幺二三四五六七八，对吗？"), 0.8),
        Part("caller", clip(tmp, "f5tts_basic_ref_zh.wav"), 0.7),
        Part("operator", f4(tmp, "祝您生活愉快，再见。"), 0.8),
    ]


SILENCE_S = 15.0
OVER_S = 4.0


def faulty_parts(tmp: Path) -> list[Part]:
    """No greeting; the operator talks over the caller for 4 s; 15 s of
    silence; a wrong number read back; the caller ends angry; no closing."""
    return [
        Part("operator", f4(tmp, "好的，我记下了。"), 0),
        Part("caller", clip(tmp, "f5tts_basic_ref_zh.wav"), 0.7),
        Part("operator", plain(tmp, "您的电话是幺三八九九九九零零零零，对吗？"), -OVER_S),
        Part("caller", clip(tmp, "wenetspeech_TEST_NET_S00000.wav"), SILENCE_S),
        Part("caller", plain(tmp, "你们太过分了！"), 0.7),
        Part("operator", f4(tmp, "好的，我记下了。"), 0.8),
    ]
