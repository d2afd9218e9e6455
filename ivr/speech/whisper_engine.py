"""Whisper base (faster-whisper on CTranslate2, int8 on the CPU).

Whisper decodes a whole utterance at once: it has no partial results, so its
stream only gathers audio and decodes at ``finish``. Telephone audio (8 kHz)
is resampled to the 16 kHz Whisper expects; the text is converted to
simplified Chinese (Whisper often writes traditional).

Decoding options, measured on the Mandarin clips of bench/asr.py (see
docs/benchmarks.md). The audio is padded with silence to a whole 30 s
window, as OpenAI's reference implementation does before computing the
mel spectrogram: faster-whisper otherwise pads the spectrogram with zeros,
which Whisper never saw in training, and that cost accuracy on telephone
audio. No initial prompt by default (measured: a "以下是普通话的句子。"
prompt makes Whisper write simplified characters itself, but raised the
error rate; OpenCC t2s does the conversion instead). One temperature (no
fallback re-decoding) bounds the time an utterance can take; our own VAD
cuts the utterance, so Whisper's is off; utterances are independent, so no
conditioning on earlier text.

Whisper base can fall into a loop on a long utterance and write its first
sentence again and again until the token limit (measured: espeak-ng's
"我的名字叫马龙" + an address + a number, 16 s, came out as the name forty
times, the address and number gone). A transcript that compresses like a
loop (zlib ratio above 2.4, Whisper's own threshold) is decoded once more
with a repetition penalty of 1.1: deterministic, unlike Whisper's fallback
to sampling at higher temperatures, and it costs a second decode only for
such utterances. So is one that ivr.speech.repetition reads as a loop (one
digit twelve times, a phrase four times in a row...). The decode that is not
a loop, else the one that compresses less, is kept; if that is still a loop
the transcript says so (``Transcript.unreliable``) and the ticket does not
take its words.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from ivr.speech.chinese_script import SimplifiedChinese
from ivr.speech.engine import TELEPHONE_RATE, SpeechModelError, Transcript, as_pcm16
from ivr.speech.models import check_whisper_base, install_command
from ivr.speech.repetition import compression_ratio as compression_ratio  # re-exported
from ivr.speech.repetition import loopiness, unreliable_reason

WHISPER_RATE = 16000
WINDOW_SECONDS = 30  # Whisper reads audio in 30 s windows
BEAM_SIZE = 5
# Tells Whisper the script to write: it then writes simplified characters and
# punctuates like the prompt. Off by default (see above); bench/asr.py
# measures it.
SIMPLIFIED_PROMPT = "以下是普通话的句子。"
LOOP_RATIO = 2.4  # zlib compression ratio above which a transcript is a loop
LOOP_PENALTY = 1.1  # repetition penalty of the second decode


class WhisperEngine:
    """One loaded Whisper model shared by every call. ``transcribe`` may run
    in several executor threads at once: CTranslate2 queues the model work
    (``num_workers`` replicas), the rest is per-call local state."""

    name = "whisper"

    def __init__(
        self,
        model_dir: Path,
        *,
        language: str = "zh",
        threads: int = 1,
        num_workers: int = 1,
        beam_size: int = BEAM_SIZE,
        initial_prompt: str | None = None,
    ) -> None:
        if not model_dir.is_dir():
            raise SpeechModelError(
                f"no Whisper model in {model_dir}: install it with "
                f"`{install_command(model_dir.parent)}`"
            )
        check_whisper_base(model_dir)
        from faster_whisper import WhisperModel  # type: ignore[import-untyped]

        try:
            self._model = WhisperModel(
                str(model_dir),
                device="cpu",
                compute_type="int8",
                cpu_threads=threads,
                num_workers=num_workers,
            )
        except Exception as error:  # CTranslate2 raises RuntimeError/ValueError
            raise SpeechModelError(
                f"Whisper model in {model_dir} could not be loaded ({error}); "
                f"reinstall it with `{install_command(model_dir.parent)}`"
            ) from error
        self.language = language
        self.model_dir = model_dir
        self.beam_size = beam_size
        self.initial_prompt = initial_prompt
        self.pad_to_window = True  # False only to measure faster-whisper's own padding
        self._simplified = SimplifiedChinese() if language == "zh" else None

    def transcribe(
        self,
        pcm: npt.NDArray[np.int16],
        *,
        sample_rate: int = TELEPHONE_RATE,
        hint: Sequence[str] | None = None,
    ) -> Transcript:
        """Transcribe int16 mono audio (8 kHz unless ``sample_rate`` says
        otherwise: 16 kHz wideband goes straight in). ``hint`` words are added
        to the prompt."""
        samples = as_pcm16(pcm)
        audio_seconds = len(samples) / sample_rate
        started = time.perf_counter()
        if len(samples) == 0:
            return Transcript("", self.name, 0.0, 0.0)
        audio = samples.astype(np.float32) / 32768.0
        if sample_rate != WHISPER_RATE:
            audio = soxr.resample(audio, sample_rate, WHISPER_RATE, quality="HQ")
        if self.pad_to_window:
            audio = pad_to_window(audio)
        text = self._decode(audio, hint, 1.0)
        if compression_ratio(text) > LOOP_RATIO or unreliable_reason(text) is not None:
            retry = self._decode(audio, hint, LOOP_PENALTY)
            if loopiness(retry) < loopiness(text):
                text = retry
        if self._simplified is not None:
            text = self._simplified.convert(text)
        return Transcript(
            text,
            self.name,
            audio_seconds,
            time.perf_counter() - started,
            unreliable=unreliable_reason(text),
        )

    def _decode(
        self, audio: npt.NDArray[np.float32], hint: Sequence[str] | None, penalty: float
    ) -> str:
        segments, _info = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            initial_prompt=self._prompt(hint),
            repetition_penalty=penalty,
        )
        return "".join(segment.text for segment in segments).strip()

    def _prompt(self, hint: Sequence[str] | None) -> str | None:
        if not hint:
            return self.initial_prompt
        words = "、".join(hint) + "。"
        return (self.initial_prompt or "") + words

    def open_stream(self, grammar: Sequence[str] | None = None) -> WhisperStream:
        return WhisperStream(self, grammar)


def pad_to_window(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``audio`` (16 kHz) followed by silence up to a whole number of 30 s
    windows, so every window Whisper reads is real audio or real silence."""
    window = WINDOW_SECONDS * WHISPER_RATE
    padding = -len(audio) % window
    if padding == 0:
        return audio
    return np.concatenate([audio, np.zeros(padding, dtype=np.float32)])


class WhisperStream:
    """Gathers one utterance; Whisper decodes it at ``finish``."""

    def __init__(self, engine: WhisperEngine, grammar: Sequence[str] | None) -> None:
        self._engine = engine
        self._grammar = list(grammar) if grammar else None
        self._chunks: list[npt.NDArray[np.int16]] = []
        self._lock = threading.Lock()

    def accept(self, pcm: npt.NDArray[np.int16]) -> str:
        samples = as_pcm16(pcm)
        with self._lock:
            self._chunks.append(samples.copy())
        return ""

    def finish(self) -> Transcript:
        with self._lock:
            chunks, self._chunks = self._chunks, []
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return self._engine.transcribe(audio, hint=self._grammar)
