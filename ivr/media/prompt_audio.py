"""Prompt audio ready to send: 8 kHz mono PCM plus pre-encoded G.711 frames.

A prompt is encoded once (when it is loaded or rendered), so the 20 ms
sending path only slices bytes: no per-sample work per packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
FRAME_MS = 20


@dataclass(frozen=True)
class PromptAudio:
    """One prompt as the caller will hear it.

    ``pcm`` is int16 mono at 8 kHz. ``ulaw`` and ``alaw`` are the same audio
    encoded as G.711, padded with silence to a whole number of 20 ms frames.
    """

    key: str
    pcm: npt.NDArray[np.int16]
    ulaw: bytes
    alaw: bytes
    source: str = ""  # where it came from: a recording path or "espeak-ng:<voice>"
    text: str = ""
    _frames: dict[str, tuple[bytes, ...]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def duration(self) -> float:
        return len(self.pcm) / SAMPLE_RATE

    def frames(self, codec: str) -> tuple[bytes, ...]:
        """The 160-byte frames of this prompt in ``codec`` ("PCMU" or "PCMA")."""
        cached = self._frames.get(codec)
        if cached is not None:
            return cached
        data = self.ulaw if codec == "PCMU" else self.alaw
        frames = tuple(data[i : i + FRAME_SAMPLES] for i in range(0, len(data), FRAME_SAMPLES))
        self._frames[codec] = frames
        return frames
