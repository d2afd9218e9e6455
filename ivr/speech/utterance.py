"""Utterance capture: one stretch of the caller's speech, cut out of the call's
audio by voice activity detection (webrtcvad).

Fed 20 ms frames of 8 kHz int16 PCM as they arrive from the RTP stream (on the
event loop; webrtcvad takes ~1.5 us a frame).  Speech starts when most of the
last few frames are voiced; a little audio from before that point (pre-roll)
is kept so the first syllable is not clipped.  It ends after a stretch of
trailing silence, or at the maximum length (then flagged as cut).  With no
speech at all within ``no_speech_timeout`` the capture ends empty.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import webrtcvad

RATE = 8000
FRAME = 160  # 20 ms
FRAME_S = FRAME / RATE
TAIL_FRAMES = 10  # 200 ms of the trailing silence kept after the last voiced frame
NOISE_WINDOW = 75  # 1.5 s: a stretch the VAD calls speech with no voice in it is noise
NOISE_CHECK_EVERY = 25  # frames


class UtteranceEnd(enum.StrEnum):
    SILENCE = "silence"  # the caller stopped talking
    MAX_LENGTH = "max_length"  # cut at the limit; the audio so far is kept
    NO_SPEECH = "no_speech"  # nothing was said before no_speech_timeout
    NOISE_ONLY = "noise_only"  # the detector fired, but on noise, not on a voice
    HUNG_UP = "hung_up"  # the call ended during the capture


@dataclass(frozen=True)
class ListenSettings:
    end_silence: float = 1.2  # seconds of trailing silence that end an utterance
    max_seconds: float = 30.0  # longest utterance kept; longer speech is cut
    no_speech_timeout: float = 6.0  # seconds to wait for speech to start
    pre_roll: float = 0.3  # seconds of audio kept from before speech starts
    vad_aggressiveness: int = 2  # webrtcvad mode 0..3 (3 rejects most noise)
    start_frames: int = 4  # voiced frames among the last start_window that start speech
    start_window: int = 6
    min_voice_frames: int = 10  # voice-like frames (flat spectrum excluded) an utterance needs
    speculate_after: float = 0.24  # pause (s) after which recognition starts early; 0 = never


@dataclass(frozen=True)
class Utterance:
    pcm: npt.NDArray[np.int16]  # 8 kHz mono, pre-roll included
    end: UtteranceEnd
    speech_seconds: float  # from the start of speech to the end of the last voiced frame
    voiced_frames: int
    # recognition of exactly this audio, started during the trailing silence
    early: asyncio.Future[Any] | None = field(default=None, compare=False, repr=False)

    @property
    def seconds(self) -> float:
        return len(self.pcm) / RATE

    @property
    def heard(self) -> bool:
        return self.end in (UtteranceEnd.SILENCE, UtteranceEnd.MAX_LENGTH)


class UtteranceCapture:
    """Feed frames with ``feed``; ``done`` resolves with the Utterance."""

    def __init__(
        self,
        settings: ListenSettings,
        on_pause: Callable[[npt.NDArray[np.int16]], asyncio.Future[Any] | None] | None = None,
    ) -> None:
        """``on_pause`` is called with the audio so far when the caller pauses
        for ``speculate_after``; the future it returns (a recognition already
        running) is handed out with the utterance if the caller does not speak
        again, so the transcript is ready sooner after the end of speech."""
        self._settings = settings
        self._on_pause = on_pause
        self._early: tuple[int, asyncio.Future[Any]] | None = None
        self._vad = webrtcvad.Vad(settings.vad_aggressiveness)
        self._pre: deque[npt.NDArray[np.int16]] = deque(
            maxlen=max(1, round(settings.pre_roll / FRAME_S))
        )
        self._recent: deque[bool] = deque(maxlen=settings.start_window)
        self._frames: list[npt.NDArray[np.int16]] = []
        self._recent_vad: deque[bool] = deque(maxlen=NOISE_WINDOW)
        self._speaking = False
        self._silent_run = 0
        self._voiced = 0
        self._waited = 0
        self._last_voiced_at = 0  # frames into the utterance
        self._speech_from = 0  # index of the first frame of the start window
        self._partial = np.zeros(0, dtype=np.int16)
        self.done: asyncio.Future[Utterance] = asyncio.get_running_loop().create_future()

    @property
    def speaking(self) -> bool:
        return self._speaking

    def feed(self, pcm: npt.NDArray[np.int16]) -> None:
        if self.done.done():
            return
        if len(pcm) != FRAME or len(self._partial):
            joined = np.concatenate((self._partial, pcm))
            whole = len(joined) // FRAME * FRAME
            self._partial = joined[whole:]
            for start in range(0, whole, FRAME):
                self._frame(joined[start : start + FRAME])
            return
        self._frame(pcm)

    def hung_up(self) -> None:
        """The call ended: finish with what was heard so far."""
        if not self.done.done():
            self._finish(UtteranceEnd.HUNG_UP)

    def _frame(self, frame: npt.NDArray[np.int16]) -> None:
        if self.done.done():
            return
        voiced = self._vad.is_speech(frame.tobytes(), RATE)
        settings = self._settings
        if not self._speaking:
            self._pre.append(frame)
            self._recent.append(voiced)
            self._waited += 1
            if sum(self._recent) >= settings.start_frames:
                self._speaking = True
                self._frames = list(self._pre)
                self._speech_from = max(0, len(self._frames) - len(self._recent))
                self._voiced = sum(self._recent)
                self._last_voiced_at = len(self._frames)
                self._silent_run = 0
            elif self._waited * FRAME_S >= settings.no_speech_timeout:
                self._finish(UtteranceEnd.NO_SPEECH)
            return
        self._frames.append(frame)
        self._recent_vad.append(voiced)
        if (
            len(self._frames) % NOISE_CHECK_EVERY == 0
            and sum(self._recent_vad) >= NOISE_WINDOW * 0.8
            and voice_like_frames(np.concatenate(self._frames[-NOISE_WINDOW:]))
            < self._settings.min_voice_frames // 2
        ):
            self._finish(UtteranceEnd.NOISE_ONLY)  # a hiss or hum the VAD took for speech
            return
        if voiced:
            self._voiced += 1
            self._silent_run = 0
            self._last_voiced_at = len(self._frames)
        else:
            self._silent_run += 1
            self._maybe_speculate()
        if self._silent_run * FRAME_S >= settings.end_silence:
            self._finish(UtteranceEnd.SILENCE)
        elif len(self._frames) * FRAME_S >= settings.max_seconds:
            self._finish(UtteranceEnd.MAX_LENGTH)

    def _maybe_speculate(self) -> None:
        settings = self._settings
        if self._on_pause is None or settings.speculate_after <= 0:
            return
        at = max(TAIL_FRAMES + 1, round(settings.speculate_after / FRAME_S))
        if self._silent_run != at or at * FRAME_S >= settings.end_silence:
            return
        if self._early is not None:
            self._early[1].cancel()  # the caller spoke again: that guess is stale
        snapshot = np.concatenate(self._frames[: self._last_voiced_at + TAIL_FRAMES])
        future = self._on_pause(snapshot)
        self._early = (self._last_voiced_at, future) if future is not None else None

    def _finish(self, end: UtteranceEnd) -> None:
        if end is UtteranceEnd.NOISE_ONLY:
            if self._early is not None:
                self._early[1].cancel()
            self.done.set_result(Utterance(np.zeros(0, dtype=np.int16), end, 0.0, self._voiced))
            return
        if end is UtteranceEnd.NO_SPEECH or not self._speaking:
            pcm = np.zeros(0, dtype=np.int16)
            speech = 0.0
            if end is not UtteranceEnd.HUNG_UP:
                end = UtteranceEnd.NO_SPEECH
        else:
            # keep a little of the trailing silence, not all of it
            keep = len(self._frames)
            if end is UtteranceEnd.SILENCE:
                keep = min(keep, self._last_voiced_at + TAIL_FRAMES)
            pcm = np.concatenate(self._frames[:keep]) if keep else np.zeros(0, dtype=np.int16)
            speech = (self._last_voiced_at - self._speech_from) * FRAME_S
            if voice_like_frames(pcm) < self._settings.min_voice_frames:
                end = UtteranceEnd.NOISE_ONLY
        early: asyncio.Future[Any] | None = None
        if self._early is not None:
            if end is UtteranceEnd.SILENCE and self._early[0] == self._last_voiced_at:
                early = self._early[1]
            else:
                self._early[1].cancel()
        self.done.set_result(
            Utterance(
                pcm=pcm,
                end=end,
                speech_seconds=max(0.0, speech),
                voiced_frames=self._voiced,
                early=early,
            )
        )


FLATNESS_VOICE = 0.3  # spectral flatness below this is voice-like (speech ~0.01-0.2)
LOUD_DB = 25.0  # frames quieter than this (dB re 1 LSB^2) are not counted at all


def voice_like_frames(pcm: npt.NDArray[np.int16]) -> int:
    """How many 20 ms frames look like a voice rather than noise.

    webrtcvad fires on loud broadband noise (a fan, a bad line); speech has a
    peaky spectrum (harmonics, formants), noise a flat one.  The spectral
    flatness (geometric over arithmetic mean of the power in 200-3400 Hz) is
    ~0.5-0.6 for white noise and below 0.2 for most speech frames.
    """
    n = len(pcm) // FRAME
    if n == 0:
        return 0
    frames = pcm[: n * FRAME].reshape(n, FRAME).astype(np.float64) * np.hanning(FRAME)
    power = np.abs(np.fft.rfft(frames, 256, axis=1)) ** 2 + 1e-3
    band = power[:, 7:110]  # 219..3438 Hz
    flatness = np.exp(np.log(band).mean(axis=1)) / band.mean(axis=1)
    loud = 10 * np.log10(power.mean(axis=1)) > LOUD_DB
    return int(np.count_nonzero(loud & (flatness < FLATNESS_VOICE)))
