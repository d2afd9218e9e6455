"""The speech engine run off the event loop: a small thread pool of its own.

Recognition is CPU work of hundreds of milliseconds; on the event loop it
would stall every call's 20 ms audio.  CTranslate2 and Kaldi release the GIL
while they compute, so threads use the cores; the pool size caps how many
recognitions run at once (the rest wait in the pool's queue).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from ivr.speech import SpeechEngine, Transcript, load_engine

if TYPE_CHECKING:
    from ivr.metrics import HotlineMetrics

T = TypeVar("T")


class Transcriber:
    def __init__(self, engine: SpeechEngine, *, workers: int) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr")
        # /metrics: utterances waiting for a thread and being recognised, and
        # each one's latency (set by the hotline)
        self.metrics: HotlineMetrics | None = None
        self.queued = 0
        self.running = 0
        self._counting = threading.Lock()

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
        if grammar and self.engine.name == "vosk":
            return await self._submit(lambda: self._with_grammar(pcm, grammar))
        return await self._submit(lambda: self.engine.transcribe(pcm))

    def _submit(self, recognise: Callable[[], Transcript]) -> asyncio.Future[Transcript]:
        """``recognise`` queued for the pool, counted as queued until a thread
        takes it (or it is cancelled before one does)."""
        with self._counting:
            self.queued += 1
        try:
            job = self._pool.submit(self._timed, recognise, time.monotonic())
        except BaseException:  # the pool is shut down (the hotline stops)
            with self._counting:
                self.queued -= 1
            raise

        def uncount(job: Future[Transcript]) -> None:
            if job.cancelled():  # never started: _timed did not count it out
                with self._counting:
                    self.queued -= 1

        job.add_done_callback(uncount)
        return asyncio.wrap_future(job)

    def _timed(self, recognise: Callable[[], T], submitted: float) -> T:
        """``recognise`` in a pool thread, counted as running (no longer queued);
        its latency from ``submitted`` goes to the metrics, finished or failed."""
        with self._counting:
            self.queued -= 1
            self.running += 1
        try:
            return recognise()
        finally:
            with self._counting:
                self.running -= 1
            if self.metrics is not None:
                self.metrics.recognised(time.monotonic() - submitted)

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
