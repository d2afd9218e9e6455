"""Conversation recordings (全程录音 of the operator's part of a call).

While a caller is bridged to an operator, both directions are written to one
stereo WAV (left: the caller, right: the operator; once a department is
brought in, right: everyone the caller hears, mixed), 8 kHz G.711 u-law (8 bits
a sample: 16 kB a second, half of 16-bit PCM). The audio comes from the
streams' decoded-audio listeners, which fire for relayed packets too.

The two directions arrive as independent packet streams, so each channel is
kept in step with the wall clock: a channel that fell silent (no packets:
the phone sends none, or they were lost) is filled with silence up to where
the clock says it should be, and the file is written up to the point both
channels have reached, once a second, in an executor (no disk I/O on the
event loop). What is buffered is at most about a second of audio a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from ivr.media.rtp import PcmListener, RtpStream

RATE = 8000
FLUSH_EVERY_S = 1.0
LAG_S = 0.2  # a channel this far behind the clock at a flush is filled with silence


class _Channel:
    """One direction's audio not written yet, and how much it has had in all."""

    def __init__(self) -> None:
        self.pending: list[npt.NDArray[np.int16]] = []
        self.pending_samples = 0
        self.total = 0  # samples received or filled since the start

    def add(self, pcm: npt.NDArray[np.int16]) -> None:
        self.pending.append(pcm)
        self.pending_samples += len(pcm)
        self.total += len(pcm)

    def fill_to(self, total: int) -> None:
        if total > self.total:
            self.add(np.zeros(total - self.total, dtype=np.int16))

    def take(self, samples: int) -> npt.NDArray[np.int16]:
        """The first ``samples`` of what is pending (all of them are there)."""
        joined = np.concatenate(self.pending) if self.pending else np.zeros(0, dtype=np.int16)
        head, rest = joined[:samples], joined[samples:]
        self.pending = [rest] if len(rest) else []
        self.pending_samples = len(rest)
        return head


class ConversationRecording:
    """Records one bridged conversation to ``path`` until :meth:`close`."""

    def __init__(
        self,
        path: Path,
        caller: RtpStream,
        operator: RtpStream,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._caller, self._operator = caller, operator
        self._log = log
        self._clock = clock
        self._left, self._right = _Channel(), _Channel()
        self._file: sf.SoundFile | None = None
        self._start = clock()
        self._written = 0
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._write_lock = asyncio.Lock()
        caller.pcm_listeners.append(self._left_audio)
        operator.pcm_listeners.append(self._right_audio)
        self._right_source = operator.pcm_listeners
        self._flusher = asyncio.ensure_future(self._flush_forever())

    def right_from(self, listeners: list[PcmListener]) -> None:
        """From now on the right channel is what ``listeners`` are told: in a
        consultation, the mix the caller hears (everyone but the caller)."""
        with contextlib.suppress(ValueError):
            self._right_source.remove(self._right_audio)
        self._right_source = listeners
        listeners.append(self._right_audio)

    @property
    def seconds(self) -> float:
        return self._written / RATE

    def _left_audio(self, pcm: npt.NDArray[np.int16]) -> None:
        self._audio(self._left, pcm)

    def _right_audio(self, pcm: npt.NDArray[np.int16]) -> None:
        self._audio(self._right, pcm)

    def _audio(self, channel: _Channel, pcm: npt.NDArray[np.int16]) -> None:
        # a gap (the phone sent nothing for a while) becomes silence where it was
        due = int((self._clock() - self._start) * RATE) - len(pcm)
        if due - channel.total > LAG_S * RATE:
            channel.fill_to(due)
        channel.add(pcm.astype(np.int16, copy=False))

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            await self._flush(final=False)

    async def _flush(self, *, final: bool) -> None:
        async with self._write_lock:
            if final:
                end = max(self._left.total, self._right.total)
            else:
                end = int((self._clock() - self._start - LAG_S) * RATE)
            for channel in (self._left, self._right):
                channel.fill_to(end)
            ready = min(self._left.total, self._right.total) - self._written
            if ready <= 0:
                return
            frames = np.stack([self._left.take(ready), self._right.take(ready)], axis=1)
            await self._loop.run_in_executor(None, self._write, frames)
            self._written += ready

    def _write(self, frames: npt.NDArray[np.int16]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = sf.SoundFile(
                str(self.path), "w", samplerate=RATE, channels=2, format="WAV", subtype="ULAW"
            )
        self._file.write(frames)

    async def close(self) -> float:
        """Stop recording, write the rest and close the file; the seconds recorded."""
        if self._closed:
            return self.seconds
        self._closed = True
        for listeners, listener in (
            (self._caller.pcm_listeners, self._left_audio),
            (self._right_source, self._right_audio),
        ):
            with contextlib.suppress(ValueError):
                listeners.remove(listener)
        self._flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._flusher
        try:
            await self._flush(final=True)
        finally:
            if self._file is not None:
                await self._loop.run_in_executor(None, self._file.close)
        self._log.info("conversation recorded: %s (%.1f s)", self.path.name, self.seconds)
        return self.seconds
