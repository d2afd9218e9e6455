"""In-band DTMF: key tones found in the caller's audio (Goertzel-style DFT at
the eight DTMF frequencies), for phones that signal keys no other way.

Fed 20 ms frames of 8 kHz audio. A key counts once, when its tone pair has
been present for two consecutive frames (40 ms); it must drop out for a frame
before the same key counts again. Speech is rejected by requiring the two
tones to carry most of the frame's energy, the strongest tone of each group
to stand well above the others, and the twist to stay within limits.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")
RATE = 8000
FRAME = 160
MIN_RMS = 150.0  # about -47 dBov: quieter frames are not keys
MIN_TONE_SHARE = 0.7  # the two tones carry >= 70% of the frame's energy
MIN_GROUP_MARGIN = 4.0  # strongest tone of a group >= 6 dB above the next
NORMAL_TWIST = 10 ** (8 / 10)  # column tone may be up to 8 dB below the row tone
REVERSE_TWIST = 10 ** (4 / 10)  # ... or up to 4 dB above it
FRAMES_TO_COUNT = 2


def _basis(n: int) -> npt.NDArray[np.float64]:
    """Cosine rows then sine rows of the eight DTMF frequencies (16 x n)."""
    t = np.arange(n) / RATE
    phase = 2 * np.pi * np.array(ROWS + COLS)[:, None] * t[None, :]
    basis: npt.NDArray[np.float64] = np.concatenate([np.cos(phase), np.sin(phase)])
    return basis


class InbandDtmfDetector:
    def __init__(self) -> None:
        self._basis = _basis(FRAME)
        self._candidate: str | None = None
        self._run = 0
        self._reported = False

    def classify(self, frame: npt.NDArray[np.int16]) -> str | None:
        """The key whose tone pair fills this frame, or None.

        Runs on every 20 ms frame of every call in a menu, so after one
        16 x 160 matrix product the eight tone powers are handled as plain
        floats (measured 7 us a frame with numpy on 8-element arrays, ~3 us so).
        """
        if len(frame) != FRAME:
            return None
        x = frame.astype(np.float64)
        energy = float(x @ x)
        if energy < MIN_RMS * MIN_RMS * FRAME:
            return None
        p = (self._basis @ x).tolist()
        # tone power normalised so a pure sinusoid's equals its frame energy
        power = [(p[i] * p[i] + p[i + 8] * p[i + 8]) * (2.0 / FRAME) for i in range(8)]
        rows, cols = power[:4], power[4:]
        r = rows.index(max(rows))
        c = cols.index(max(cols))
        row_power, col_power = rows[r], cols[c]
        if row_power + col_power < MIN_TONE_SHARE * energy:
            return None
        if sorted(rows)[-2] * MIN_GROUP_MARGIN > row_power:
            return None
        if sorted(cols)[-2] * MIN_GROUP_MARGIN > col_power:
            return None
        if col_power * NORMAL_TWIST < row_power or col_power > row_power * REVERSE_TWIST:
            return None
        return KEYS[r][c]

    def feed(self, frame: npt.NDArray[np.int16]) -> list[str]:
        """Keys that start counting with this 20 ms frame (usually none)."""
        key = self.classify(frame)
        if key is None or key != self._candidate:
            self._candidate = key
            self._run = 1 if key is not None else 0
            self._reported = False
            return []
        self._run += 1
        if self._run >= FRAMES_TO_COUNT and not self._reported:
            self._reported = True
            return [key]
        return []
