"""Slow speech (WSOLA): longer by 1/speed, same pitch, no clicks."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
import soxr

from ivr.media.slow_speech import stretch

RATE = 8000
SPEECH_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "speech"
CLIP = SPEECH_DIR / "aishell1_BAC009S0724W0121.wav"


def _real_clip() -> npt.NDArray[np.int16]:
    if not SPEECH_DIR.is_dir():
        pytest.skip(f"{SPEECH_DIR} is missing")
    data, sr = sf.read(str(CLIP), dtype="float64", always_2d=False)
    if data.ndim > 1:
        data = data.mean(axis=1)
    resampled = soxr.resample(data, sr, RATE)
    return np.clip(np.rint(resampled * 32767.0), -32768, 32767).astype(np.int16)


def _harmonic_tone(seconds: float = 2.0) -> npt.NDArray[np.int16]:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = sum(np.sin(2 * np.pi * f * t) / i for i, f in enumerate((200, 400, 600), start=1))
    return np.rint(wave * 8000.0).astype(np.int16)


def _f0(pcm: npt.NDArray[np.int16], rate: int = RATE) -> float:
    """Median F0 over voiced 40 ms frames, by autocorrelation in 60-400 Hz."""
    x = pcm.astype(np.float64)
    n = round(0.040 * rate)
    frames = [x[i : i + n] for i in range(0, x.size - n + 1, n // 2)]
    rms = np.array([np.sqrt(np.mean(f * f)) for f in frames])
    min_lag, max_lag = round(rate / 400), round(rate / 60)
    f0s = []
    for frame, level in zip(frames, rms, strict=True):
        if level < 0.1 * rms.max():
            continue
        f = frame - frame.mean()
        ac = np.correlate(f, f, mode="full")[n - 1 :]
        if ac[0] <= 0:
            continue
        seg = ac[min_lag : max_lag + 1]
        i = int(np.argmax(seg))
        if seg[i] / ac[0] < 0.3:  # not periodic enough to call voiced
            continue
        lag = float(min_lag + i)
        if 0 < i < seg.size - 1:  # parabolic refinement of the peak
            a, b, c = seg[i - 1], seg[i], seg[i + 1]
            denom = a - 2 * b + c
            if denom != 0:
                lag += 0.5 * (a - c) / denom
        f0s.append(rate / lag)
    assert f0s, "no voiced frames found"
    return float(np.median(f0s))


def _naive_slowdown(pcm: npt.NDArray[np.int16], speed: float) -> npt.NDArray[np.int16]:
    """Slow down by resampling and playing at the original rate: pitch drops."""
    # Treat the clip as if recorded at rate*speed and convert it to rate: 1/speed
    # times as many samples, every frequency scaled by speed.
    y = soxr.resample(pcm.astype(np.float64), RATE * speed, RATE)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("speed", [0.8, 0.65])
def test_length_ratio_on_real_clip(speed: float) -> None:
    clip = _real_clip()
    out = stretch(clip, speed)
    ratio = out.size / clip.size
    print(f"\nspeed {speed}: length ratio {ratio:.4f} (target {1 / speed:.4f})")
    assert out.dtype == np.int16
    assert abs(ratio - 1 / speed) <= 0.02 * (1 / speed)


@pytest.mark.parametrize("speed", [0.8, 0.65])
def test_pitch_unchanged_on_real_clip(speed: float) -> None:
    clip = _real_clip()
    f0_in = _f0(clip)
    f0_out = _f0(stretch(clip, speed))
    print(f"\nspeed {speed}: real clip F0 {f0_in:.1f} Hz -> {f0_out:.1f} Hz")
    assert abs(f0_out - f0_in) <= 0.05 * f0_in


@pytest.mark.parametrize("speed", [0.8, 0.65])
def test_pitch_unchanged_on_harmonic_tone(speed: float) -> None:
    tone = _harmonic_tone()
    assert abs(_f0(tone) - 200.0) <= 0.01 * 200.0  # the estimator itself is right
    out = stretch(tone, speed)
    f0_out = _f0(out)
    naive_f0 = _f0(_naive_slowdown(tone, speed))
    print(f"\nspeed {speed}: tone F0 {f0_out:.1f} Hz (naive resample {naive_f0:.1f} Hz)")
    assert abs(f0_out - 200.0) <= 0.05 * 200.0
    # A naive slow-down fails the same check: its pitch drops by the speed factor.
    assert abs(naive_f0 - 200.0) > 0.05 * 200.0
    assert abs(naive_f0 - 200.0 * speed) <= 0.05 * 200.0 * speed
    assert _naive_slowdown(tone, speed).size == pytest.approx(tone.size / speed, rel=0.02)


@pytest.mark.parametrize("speed", [0.8, 0.65])
def test_no_clicks_on_harmonic_tone(speed: float) -> None:
    tone = _harmonic_tone()
    out = stretch(tone, speed)
    max_in = int(np.abs(np.diff(tone.astype(np.int32))).max())
    max_out = int(np.abs(np.diff(out.astype(np.int32))).max())
    print(f"\nspeed {speed}: max |diff| in {max_in}, out {max_out}")
    assert max_out <= 1.5 * max_in


def test_speed_one_returns_input_unchanged() -> None:
    tone = _harmonic_tone(0.5)
    out = stretch(tone, 1.0)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, tone)
    assert out is not tone
    out[0] ^= 1
    assert out[0] != tone[0]  # a copy, not a view


@pytest.mark.parametrize("speed", [0.0, 1.5, 0.3, -0.8, float("nan")])
def test_bad_speed_raises(speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        stretch(_harmonic_tone(0.1), speed)


def test_empty_or_not_1d_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        stretch(np.zeros(0, dtype=np.int16), 0.8)
    with pytest.raises(ValueError, match="1-D"):
        stretch(np.zeros((2, 100), dtype=np.int16), 0.8)


def test_time_for_ten_second_prompt() -> None:
    """Informal timing only, printed; no assertion on speed."""
    t = np.arange(10 * RATE) / RATE
    rng = np.random.default_rng(0)
    prompt = np.rint(
        6000 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
        + rng.normal(0, 300, t.size)
    ).astype(np.int16)
    stretch(prompt, 0.8)  # warm up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        out = stretch(prompt, 0.8)
        best = min(best, time.perf_counter() - start)
    print(f"\nstretch of a 10 s prompt at 8 kHz, speed 0.8: {best * 1000:.1f} ms")
    assert out.size == round(prompt.size / 0.8)
