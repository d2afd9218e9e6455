"""The one interface every speech recognition engine offers.

Callers hand an engine telephone audio (int16 mono at 8 kHz, the rate of a
G.711 call) and get back a :class:`Transcript`. ``transcribe`` is blocking
and CPU-heavy: the call path runs it in an executor, from several threads at
once, so engines keep no per-call state outside the stream objects they hand
out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

TELEPHONE_RATE = 8000  # Hz: what callers feed every engine


class SpeechModelError(Exception):
    """A speech model is missing or damaged. The message says which folder or
    file is wrong and how to fix it."""


@dataclass(frozen=True)
class Transcript:
    """What a caller said.

    ``text`` is simplified Chinese for ``zh`` with no leading or trailing
    spaces; ``engine`` is "whisper" or "vosk"; ``audio_seconds`` is the length
    of the audio heard and ``compute_seconds`` the wall time spent decoding it.
    ``unreliable`` says why the text reads as the recogniser's loop rather than
    speech (ivr.speech.repetition), None when it reads as speech.
    """

    text: str
    engine: str
    audio_seconds: float
    compute_seconds: float
    unreliable: str | None = None


class SpeechStream(Protocol):
    """One utterance fed as it arrives."""

    def accept(self, pcm: npt.NDArray[np.int16]) -> str:
        """Take int16 mono 8 kHz audio of any length; return the partial text
        so far ("" for engines without partials)."""
        ...

    def finish(self) -> Transcript:
        """End the utterance and return its transcript."""
        ...


class SpeechEngine(Protocol):
    """A loaded model that turns speech into text."""

    name: str

    def transcribe(self, pcm: npt.NDArray[np.int16]) -> Transcript:
        """Transcribe one utterance of int16 mono 8 kHz audio. Blocking;
        safe to call from several threads at once."""
        ...

    def open_stream(self, grammar: Sequence[str] | None = None) -> SpeechStream:
        """Start a streaming utterance, optionally restricted to the words or
        phrases of ``grammar`` (engines that cannot restrict use it as a hint)."""
        ...


def as_pcm16(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """``pcm`` as a flat, contiguous int16 array, or ValueError saying what
    was wrong with it."""
    array = np.asarray(pcm)
    if array.dtype != np.int16:
        raise ValueError(f"speech audio must be int16 samples, got {array.dtype}")
    if array.ndim > 1 and sum(1 for n in array.shape if n > 1) > 1:
        raise ValueError(f"speech audio must be mono, got shape {array.shape}")
    return np.ascontiguousarray(array.reshape(-1))
