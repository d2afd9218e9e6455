"""The speech engine run off the event loop: a small thread pool of its own.

Recognition is CPU work of hundreds of milliseconds; on the event loop it
would stall every call's 20 ms audio.  CTranslate2 and Kaldi release the GIL
while they compute, so threads use the cores; the pool size caps how many
recognitions run at once (the rest wait in the pool's queue).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ivr.speech import SpeechEngine, Transcript, load_engine


class Transcriber:
    def __init__(self, engine: SpeechEngine, *, workers: int) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr")

    @classmethod
    async def load(
        cls,
        choice: str,
        models_dir: Path,
        *,
        workers: int,
        threads: int,
        language: str = "zh",
        script: Sequence[str] = (),
    ) -> Transcriber:
        """Load the model in a thread (seconds for Whisper); SpeechModelError
        when none is installed or it is corrupt. ``script``: the texts of the
        scripted recogniser (choice "scripted", tests and trials only)."""
        loop = asyncio.get_running_loop()
        engine = await loop.run_in_executor(
            None,
            lambda: load_engine(
                choice,
                models_dir,
                language=language,
                threads=threads,
                workers=workers,
                script=script,
            ),
        )
        return cls(engine, workers=workers)

    async def transcribe(
        self, pcm: npt.NDArray[np.int16], grammar: Sequence[str] | None = None
    ) -> Transcript:
        loop = asyncio.get_running_loop()
        if grammar and self.engine.name == "vosk":
            return await loop.run_in_executor(self._pool, self._with_grammar, pcm, grammar)
        return await loop.run_in_executor(self._pool, self.engine.transcribe, pcm)

    def _with_grammar(self, pcm: npt.NDArray[np.int16], grammar: Sequence[str]) -> Transcript:
        started = time.perf_counter()
        stream = self.engine.open_stream(list(grammar))
        stream.accept(pcm)
        result = stream.finish()
        if result.compute_seconds <= 0:
            return Transcript(
                result.text, result.engine, result.audio_seconds, time.perf_counter() - started
            )
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
