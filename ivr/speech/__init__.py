"""Speech recognition: engines behind one interface, chosen at start.

    engine = load_engine("auto", Path("asr_models"))
    transcript = await loop.run_in_executor(pool, engine.transcribe, pcm_8k)

``auto`` takes Whisper base when it is installed in the models folder, else
the first Vosk model found there. Loading checks the model and really loads
it, so a missing or damaged model stops the start with a message naming the
file and the fix, never a call later. ``scripted`` (tests and trials only)
loads no model and recognises nothing: it hands out the texts of ``script``
in turn (ivr.speech.scripted_engine).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ivr.speech.engine import (
    TELEPHONE_RATE,
    SpeechEngine,
    SpeechModelError,
    SpeechStream,
    Transcript,
)
from ivr.speech.error_rate import character_error_rate
from ivr.speech.models import (
    find_vosk_models,
    install_command,
    vosk_hint,
    whisper_base_dir,
)
from ivr.speech.repetition import unreliable_reason

__all__ = [
    "ENGINE_CHOICES",
    "TELEPHONE_RATE",
    "SpeechEngine",
    "SpeechModelError",
    "SpeechStream",
    "Transcript",
    "character_error_rate",
    "load_engine",
    "unreliable_reason",
]

ENGINE_CHOICES = ("auto", "whisper", "vosk", "scripted")


def load_engine(
    choice: str,
    models_dir: Path,
    *,
    language: str = "zh",
    threads: int = 1,
    workers: int = 1,
    script: Sequence[str] = (),
) -> SpeechEngine:
    """Load the engine ``choice`` ("auto", "whisper" or "vosk") from the
    models in ``models_dir``, or the scripted recogniser ("scripted", for
    tests and trials: no model, ``script``'s texts in turn, one per
    utterance; ``script`` is ignored by the other engines). ``threads`` is
    Whisper's CPU threads per transcription; ``workers`` how many
    transcriptions Whisper runs at once
    (CTranslate2 model replicas, ~30 MB each: with 1, concurrent calls take
    turns on one core). Pass the size of the thread pool that calls
    ``transcribe``. Vosk decodes each utterance on its caller's thread and
    ignores both. Raises SpeechModelError when no usable model is there."""
    if choice not in ENGINE_CHOICES:
        raise ValueError(
            f"unknown speech engine {choice!r}: choose one of {', '.join(ENGINE_CHOICES)}"
        )
    if choice == "scripted":
        from ivr.speech.scripted_engine import ScriptedEngine

        return ScriptedEngine(script)
    whisper_dir = whisper_base_dir(models_dir)
    if choice == "whisper" or (choice == "auto" and whisper_dir.exists()):
        from ivr.speech.whisper_engine import WhisperEngine

        return WhisperEngine(whisper_dir, language=language, threads=threads, num_workers=workers)
    vosk_dirs = find_vosk_models(models_dir)
    if vosk_dirs:
        from ivr.speech.vosk_engine import VoskEngine

        return VoskEngine(vosk_dirs[0], language=language)
    if choice == "vosk":
        raise SpeechModelError(
            f"no Vosk model in {models_dir.resolve()} (a folder holding am/final.mdl "
            f"or conf/model.conf): {vosk_hint(models_dir)}"
        )
    raise SpeechModelError(
        f"no speech model in {models_dir.resolve()}: install Whisper base with "
        f"`{install_command(models_dir)}`, or {vosk_hint(models_dir)}"
    )
