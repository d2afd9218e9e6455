"""Slow speech for elderly callers: time-stretch a prompt, pitch unchanged.

Method: WSOLA (waveform-similarity overlap-add, Verhelst & Roelands 1993).
The output is built from Hann-windowed frames of ``frame_ms`` laid down at a
fixed output hop of half a frame (50% overlap). The nominal analysis position
of output frame ``k`` is ``k * hop * speed`` in the input, so the input is
traversed more slowly than the output and the result is ``1 / speed`` times
longer. Frames are copied, not resampled, so the pitch is kept.

To avoid phase jumps (clicks, roughness) each frame is taken not exactly at
its nominal position but at the offset within ``+-search_ms`` whose segment
best continues the previous frame: the template is the previous frame's
natural continuation (the input just after it, one output hop later), and
the candidate with the highest normalised cross-correlation wins. The
correlations for all candidate offsets are computed at once with a sliding
window view and a matrix-vector product. Frames are overlap-added and the sum
is divided by the summed window, then rounded and clipped to int16.

This is a pure function and not cheap enough to run per call: the caller
renders each prompt once and caches the result per (prompt, dialect, speed).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

_MIN_SPEED = 0.3  # exclusive
_MAX_SPEED = 1.0  # inclusive


def stretch(
    pcm: npt.NDArray[np.int16],
    speed: float,
    *,
    rate: int = 8000,
    frame_ms: float = 20.0,
    search_ms: float = 5.0,
) -> npt.NDArray[np.int16]:
    """Return ``pcm`` slowed to ``speed`` (0.3 < speed <= 1.0), pitch unchanged.

    The result has ``round(len(pcm) / speed)`` samples; ``speed == 1.0``
    returns a copy of the input. Raises ``ValueError`` for a speed out of
    range, empty or non-1-D input, or nonsensical frame parameters.
    """
    if not (math.isfinite(speed) and _MIN_SPEED < speed <= _MAX_SPEED):
        raise ValueError(f"speed must be in (0.3, 1.0], got {speed!r}")
    x_in = np.asarray(pcm)
    if x_in.ndim != 1:
        raise ValueError(f"pcm must be 1-D mono samples, got shape {x_in.shape}")
    if x_in.size == 0:
        raise ValueError("pcm is empty")
    if rate <= 0 or frame_ms <= 0 or search_ms < 0:
        raise ValueError(
            f"rate and frame_ms must be positive and search_ms >= 0, "
            f"got rate={rate}, frame_ms={frame_ms}, search_ms={search_ms}"
        )
    if speed == _MAX_SPEED:
        return x_in.astype(np.int16, copy=True)

    hop = max(1, round(frame_ms * rate / 2000.0))  # output hop: half a frame
    n = 2 * hop  # frame length
    delta = max(0, round(search_ms * rate / 1000.0))  # search radius
    ana_hop = hop * speed  # nominal analysis hop (fractional)

    out_len = round(x_in.size / speed)
    n_frames = math.ceil(out_len / hop) + 1

    # Padded input: the first frame starts half a frame before sample 0 (so
    # every output sample is covered by two frames), plus room for the search.
    pad_front = hop + delta
    need = pad_front + math.ceil(n_frames * ana_hop) + 2 * delta + 2 * n + hop
    x = np.zeros(max(need, pad_front + x_in.size), dtype=np.float64)
    x[pad_front : pad_front + x_in.size] = x_in

    # Periodic Hann: sums to exactly 1 at 50% overlap.
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    y = np.zeros((n_frames + 1) * hop, dtype=np.float64)
    wsum = np.zeros_like(y)

    # Running energy for normalising the correlations of all candidates.
    csum = np.concatenate(([0.0], np.cumsum(x * x)))
    tiny = 1e-9

    pos = delta  # frame 0 at its nominal position, no search
    prev = pos
    for k in range(n_frames):
        if k > 0:
            lo = round(k * ana_hop)  # nominal position is lo + delta
            template = x[prev + hop : prev + hop + n]
            t_energy = float(template @ template)
            if t_energy <= tiny:
                pos = lo + delta
            else:
                cands = sliding_window_view(x[lo : lo + 2 * delta + n], n)
                dots = cands @ template
                energies = csum[lo + n : lo + 2 * delta + n + 1] - csum[lo : lo + 2 * delta + 1]
                score = dots / np.sqrt(np.maximum(energies, tiny) * t_energy)
                pos = lo + int(np.argmax(score))
        start = k * hop
        y[start : start + n] += window * x[pos : pos + n]
        wsum[start : start + n] += window
        prev = pos

    out = y[hop : hop + out_len]
    norm = wsum[hop : hop + out_len]
    out = np.divide(out, norm, out=np.zeros_like(out), where=norm > tiny)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)
