"""A scripted recogniser, for tests and trials only: it recognises nothing.

``[speech] engine = "scripted"`` with ``script = ["我叫王芳", "人工"]`` hands
out the script's texts in turn, one per utterance the IVR asks it to
recognise, whatever the caller said; once the script is used up every
utterance is heard as nothing (""). An empty entry is an utterance heard as
nothing. No model is loaded, so an IVR with it starts in milliseconds and
holds no Whisper in memory: the tests of SIP, RTP, keys, queues and the web
console use it. Anything that checks what a caller *said* (transcripts,
tickets prefilled from speech, spoken menu words from real audio) needs a
real engine (Whisper or Vosk).

The audio is looked at for one thing only: the call path may start
recognising an utterance early, when the caller pauses, and again when they
go on speaking (ivr.speech.utterance, ``speculate_after``). Audio that begins
with exactly the audio of the previous request and is longer is that same
utterance going on, so it gets the same entry rather than the next one; the
script then advances once per utterance however the pauses fall.

Transcripts are marked ``engine = "scripted"``; like Whisper's they carry
``unreliable`` when the text reads as a recogniser's loop, so a script can
exercise that path too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ivr.speech.engine import TELEPHONE_RATE, Transcript, as_pcm16
from ivr.speech.repetition import unreliable_reason

log = logging.getLogger(__name__)


class ScriptedEngine:
    """Hands out ``script``'s texts in turn, one per utterance; "" after the
    last. Safe from several threads; keeps no model."""

    name = "scripted"

    def __init__(self, script: Sequence[str] = ()) -> None:
        self.script: tuple[str, ...] = tuple(text.strip() for text in script)
        self._next = 0  # index of the entry the next utterance gets
        self._last_audio: npt.NDArray[np.int16] | None = None
        self._last_text = ""
        self._lock = threading.Lock()
        log.warning(
            "speech: scripted recogniser (for tests and trials): callers' words are not "
            "recognised; utterances are heard as the %d texts of [speech] script, in turn",
            len(self.script),
        )

    @property
    def used(self) -> int:
        """How many entries of the script have been handed out."""
        with self._lock:
            return self._next

    def transcribe(
        self, pcm: npt.NDArray[np.int16], *, sample_rate: int = TELEPHONE_RATE
    ) -> Transcript:
        """The next entry of the script for this utterance (the same entry when
        ``pcm`` continues the previous utterance); "" when the script is used
        up or ``pcm`` is empty."""
        samples = as_pcm16(pcm)
        started = time.perf_counter()
        seconds = len(samples) / sample_rate
        if len(samples) == 0:
            return Transcript("", self.name, 0.0, 0.0)
        with self._lock:
            if self._continues(samples):
                text = self._last_text
            else:
                text = self.script[self._next] if self._next < len(self.script) else ""
                if self._next < len(self.script):
                    self._next += 1
                    log.debug("scripted recogniser: entry %d of %d", self._next, len(self.script))
                else:
                    log.debug("scripted recogniser: script used up, heard as nothing")
            self._last_audio = samples.copy()
            self._last_text = text
        return Transcript(
            text,
            self.name,
            seconds,
            time.perf_counter() - started,
            unreliable=unreliable_reason(text) if text else None,
        )

    def _continues(self, samples: npt.NDArray[np.int16]) -> bool:
        """``samples`` is the previous request's audio and more (held lock)."""
        last = self._last_audio
        return (
            last is not None
            and len(samples) > len(last)
            and bool(np.array_equal(samples[: len(last)], last))
        )

    def open_stream(self, grammar: Sequence[str] | None = None) -> ScriptedStream:
        """A stream that gathers the utterance; ``grammar`` is ignored."""
        return ScriptedStream(self)


class ScriptedStream:
    """Gathers one utterance; it gets its script entry at ``finish``."""

    def __init__(self, engine: ScriptedEngine) -> None:
        self._engine = engine
        self._chunks: list[npt.NDArray[np.int16]] = []
        self._finished = False
        self._lock = threading.Lock()

    def accept(self, pcm: npt.NDArray[np.int16]) -> str:
        samples = as_pcm16(pcm)
        with self._lock:
            if self._finished:
                raise RuntimeError("speech stream already finished")
            self._chunks.append(samples.copy())
        return ""

    def finish(self) -> Transcript:
        with self._lock:
            if self._finished:
                raise RuntimeError("speech stream already finished")
            self._finished = True
            chunks, self._chunks = self._chunks, []
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return self._engine.transcribe(audio)
