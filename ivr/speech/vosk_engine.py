"""Vosk (Kaldi): the streaming engine, with partial results and grammars.

One Vosk model is loaded per engine and shared; every utterance gets its own
recogniser, so concurrent calls never share decoder state. Telephone audio
(8 kHz) is resampled with soxr to the rate the model's features use (its
conf/mfcc.conf, 16 kHz unless it says otherwise). Chinese models put spaces
between words: they are removed for ``zh``.

A grammar restricts recognition to its phrases (menus: "查询", "投诉"...).
Each phrase is rewritten into words the model knows: for Chinese, the
longest vocabulary words from left to right (single characters otherwise);
words the model does not know are dropped with a warning, since Vosk would
silently ignore them anyway. "[unk]" is added when the model has it, so
speech outside the grammar comes out as nothing rather than as the nearest
menu word.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from ivr.speech.engine import TELEPHONE_RATE, SpeechModelError, Transcript, as_pcm16
from ivr.speech.models import check_vosk_model, vosk_sample_rate

log = logging.getLogger(__name__)

UNKNOWN_WORD = "[unk]"
LONGEST_CHINESE_WORD = 6  # characters tried when splitting a grammar phrase


class VoskEngine:
    """A loaded Vosk model; hands each utterance its own recogniser."""

    name = "vosk"

    def __init__(self, model_dir: Path, *, language: str = "zh") -> None:
        check_vosk_model(model_dir)
        import vosk  # type: ignore[import-untyped]

        vosk.SetLogLevel(-1)
        try:
            self._model = vosk.Model(str(model_dir))
        except Exception as error:  # vosk raises a bare Exception
            raise SpeechModelError(
                f"Vosk model {model_dir} could not be loaded ({error}): a file in it is "
                f"damaged (Kaldi's error just above on stderr names what it expected); "
                f"unpack the model again"
            ) from error
        self._vosk = vosk
        self.model_dir = model_dir
        self.language = language
        self.model_rate = vosk_sample_rate(model_dir)
        self._has_unknown = self._model.vosk_model_find_word(UNKNOWN_WORD) >= 0

    def transcribe(
        self, pcm: npt.NDArray[np.int16], *, sample_rate: int = TELEPHONE_RATE
    ) -> Transcript:
        """Transcribe one utterance of int16 mono audio (8 kHz unless
        ``sample_rate`` says otherwise). Safe from several threads."""
        stream = VoskStream(self, None, sample_rate=sample_rate)
        stream.accept(pcm)
        return stream.finish()

    def open_stream(self, grammar: Sequence[str] | None = None) -> VoskStream:
        return VoskStream(self, grammar)

    def recogniser(self, grammar: Sequence[str] | None) -> Any:
        """A new KaldiRecognizer at the model's rate, with ``grammar`` if any."""
        if grammar is None:
            return self._vosk.KaldiRecognizer(self._model, self.model_rate)
        phrases = self.grammar_phrases(grammar)
        return self._vosk.KaldiRecognizer(
            self._model, self.model_rate, json.dumps(phrases, ensure_ascii=False)
        )

    def grammar_phrases(self, grammar: Sequence[str]) -> list[str]:
        """``grammar`` as Vosk phrases of known words separated by spaces."""
        phrases: list[str] = []
        unknown: list[str] = []
        for phrase in grammar:
            words: list[str] = []
            for token in phrase.split():
                if self.language == "zh":
                    words.extend(self._split_chinese(token, unknown))
                elif self._knows(token):
                    words.append(token)
                else:
                    unknown.append(token)
            if words:
                phrases.append(" ".join(words))
        if unknown:
            log.warning(
                "grammar words not in the Vosk model %s, left out: %s",
                self.model_dir.name,
                ", ".join(unknown),
            )
        if not phrases:
            raise ValueError(
                f"no word of the grammar {list(grammar)} is in the Vosk model {self.model_dir}"
            )
        if self._has_unknown:
            phrases.append(UNKNOWN_WORD)
        return phrases

    def _knows(self, word: str) -> bool:
        found: int = self._model.vosk_model_find_word(word)
        return found >= 0

    def _split_chinese(self, text: str, unknown: list[str]) -> list[str]:
        """Longest known words from the left; a character the model does not
        know is reported in ``unknown`` and skipped."""
        words: list[str] = []
        start = 0
        while start < len(text):
            for end in range(min(len(text), start + LONGEST_CHINESE_WORD), start, -1):
                if self._knows(text[start:end]):
                    words.append(text[start:end])
                    start = end
                    break
            else:
                if not unicodedata.category(text[start]).startswith("P"):
                    unknown.append(text[start])
                start += 1
        return words

    def clean(self, text: str) -> str:
        """Recogniser output as the caller's words: no "[unk]", and for
        Chinese no spaces between words."""
        words = [w for w in text.split() if w != UNKNOWN_WORD]
        return ("" if self.language == "zh" else " ").join(words)


class VoskStream:
    """One utterance fed to its own recogniser as the audio arrives."""

    def __init__(
        self,
        engine: VoskEngine,
        grammar: Sequence[str] | None,
        *,
        sample_rate: int = TELEPHONE_RATE,
    ) -> None:
        self._engine = engine
        self._recogniser = engine.recogniser(grammar)
        self._sample_rate = sample_rate
        self._resampler = (
            soxr.ResampleStream(sample_rate, engine.model_rate, 1, dtype="int16", quality="HQ")
            if sample_rate != engine.model_rate
            else None
        )
        self._final_parts: list[str] = []  # text of the segments Vosk has closed
        self._samples = 0
        self._compute = 0.0
        self._finished = False
        self._lock = threading.Lock()

    def accept(self, pcm: npt.NDArray[np.int16]) -> str:
        """Feed audio; return the text so far (closed segments + partial)."""
        samples = as_pcm16(pcm)
        with self._lock:
            if self._finished:
                raise RuntimeError("speech stream already finished")
            started = time.perf_counter()
            self._samples += len(samples)
            partial = self._feed(samples, last=False)
            self._compute += time.perf_counter() - started
            return self._text(partial)

    def finish(self) -> Transcript:
        with self._lock:
            if self._finished:
                raise RuntimeError("speech stream already finished")
            self._finished = True
            started = time.perf_counter()
            self._feed(np.zeros(0, dtype=np.int16), last=True)
            rec = self._recogniser
            final = json.loads(rec.FinalResult()).get("text", "")
            self._compute += time.perf_counter() - started
            return Transcript(
                self._text(final),
                self._engine.name,
                self._samples / self._sample_rate,
                self._compute,
            )

    def _feed(self, samples: npt.NDArray[np.int16], *, last: bool) -> str:
        """Give the recogniser ``samples``; return its current partial text."""
        rec = self._recogniser
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        if len(samples) == 0:
            return ""
        if rec.AcceptWaveform(samples.tobytes()):
            # Vosk closed a segment at a pause: keep its text, start afresh
            self._final_parts.append(json.loads(rec.Result()).get("text", ""))
            return ""
        partial: str = json.loads(rec.PartialResult()).get("partial", "")
        return partial

    def _text(self, current: str) -> str:
        return self._engine.clean(" ".join([*self._final_parts, current]))
