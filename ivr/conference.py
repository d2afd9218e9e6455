"""A call's conference (多方通话): the caller, the operator and whoever they
bring in, every one hearing all the others.

The conference is a member of the shared 20 ms media clock. Each party's RTP
stream stops sending on its own (it leaves the clock); what it receives is
decoded by the stream and queued here. At every tick one frame of each party
is taken (silence for a party that sent nothing), mixed N-1 in numpy
(ivr.media.mixer: each hears the sum of the others), encoded in each party's
codec and sent on that party's stream. A tone meant for one party only (the
operator told a department is busy) is added to what that party hears.

A party may leave at any time; the others go on. A party brought in that has
sent no RTP for ``silent_after`` seconds is reported to ``on_silent`` (the
consultation drops it), checked once a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ivr.media.clock import MediaClock
from ivr.media.mixer import FRAME_SAMPLES, encode_rows, mix_minus
from ivr.media.rtp import PcmListener, RtpStream

CALLER, OPERATOR, GUEST = "caller", "operator", "guest"
MAX_QUEUED = 5 * FRAME_SAMPLES  # a party's audio queued beyond 100 ms is dropped (oldest)
CHECK_EVERY_TICKS = 50  # the silent-party check: once a second


class Party:
    """One leg of the conference: its stream and the audio it sent, not mixed yet."""

    def __init__(self, name: str, role: str, stream: RtpStream, joined: float) -> None:
        self.name = name
        self.role = role
        self.stream = stream
        self.joined = joined
        self._chunks: deque[npt.NDArray[np.int16]] = deque()
        self._queued = 0
        self.dropped_samples = 0  # audio that came faster than the clock took it
        self._tone: deque[npt.NDArray[np.int16]] = deque()  # frames for this party only

    def hear(self, pcm: npt.NDArray[np.int16]) -> None:
        """Audio this party sent (the stream's decoded-audio listener)."""
        self._chunks.append(pcm)
        self._queued += len(pcm)
        while self._queued > MAX_QUEUED and self._chunks:
            old = self._chunks.popleft()
            self._queued -= len(old)
            self.dropped_samples += len(old)

    def take(self, into: npt.NDArray[np.int16]) -> None:
        """This party's next frame into ``into`` (left as zeros when none came)."""
        if self._queued < FRAME_SAMPLES:
            return
        if len(self._chunks[0]) == FRAME_SAMPLES:
            into[:] = self._chunks.popleft()
        else:
            joined = np.concatenate(list(self._chunks))
            into[:] = joined[:FRAME_SAMPLES]
            rest = joined[FRAME_SAMPLES:]
            self._chunks = deque([rest] if len(rest) else [])
        self._queued -= FRAME_SAMPLES

    def tell(self, pcm: npt.NDArray[np.int16]) -> None:
        """Play ``pcm`` to this party only, over what they hear."""
        padded = np.zeros(-(-len(pcm) // FRAME_SAMPLES) * FRAME_SAMPLES, dtype=np.int16)
        padded[: len(pcm)] = pcm
        self._tone.extend(padded.reshape(-1, FRAME_SAMPLES))

    def tone_frame(self) -> npt.NDArray[np.int16] | None:
        return self._tone.popleft() if self._tone else None


class Conference:
    def __init__(
        self,
        clock: MediaClock,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        *,
        silent_after: float,
        on_silent: Callable[[Party], None] | None = None,
    ) -> None:
        self._clock = clock
        self._log = log
        self.silent_after = silent_after
        self.on_silent = on_silent
        self.parties: list[Party] = []
        # told each frame the caller hears (the sum of the others): the recording
        self.caller_hears: list[PcmListener] = []
        self._ticks = 0
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._reported: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return any(p.name == name for p in self.parties)

    def names(self) -> list[str]:
        return [p.name for p in self.parties]

    def add(self, name: str, role: str, stream: RtpStream) -> Party:
        """``stream`` joins: from the next tick it hears the others and is heard."""
        if self._closed:
            raise RuntimeError("the conference is over")
        if name in self:
            raise ValueError(f"{name} is in the conference already")
        party = Party(name, role, stream, self._loop.time())
        stream.stop_playback()
        self._clock.remove(stream)  # the conference sends for it from now on
        stream.pcm_listeners.append(party.hear)
        self.parties.append(party)
        if len(self.parties) == 1:
            self._clock.add(self)
        self._log.info("conference: %s joined (%d parties)", name, len(self.parties))
        return party

    def remove(self, name: str) -> Party | None:
        """``name`` leaves; the others go on."""
        for party in self.parties:
            if party.name == name:
                self.parties.remove(party)
                if party.hear in party.stream.pcm_listeners:
                    party.stream.pcm_listeners.remove(party.hear)
                self._log.info("conference: %s left (%d parties)", name, len(self.parties))
                return party
        return None

    def party(self, name: str) -> Party | None:
        for party in self.parties:
            if party.name == name:
                return party
        return None

    def tick(self) -> None:
        parties = self.parties
        if not parties:
            return
        frames = np.zeros((len(parties), FRAME_SAMPLES), dtype=np.int16)
        extra: npt.NDArray[np.int32] | None = None
        for i, party in enumerate(parties):
            party.take(frames[i])
            tone = party.tone_frame()
            if tone is not None:
                if extra is None:
                    extra = np.zeros((len(parties), FRAME_SAMPLES), dtype=np.int32)
                extra[i] = tone
        heard = mix_minus(frames, extra)
        payloads = encode_rows(heard, [p.stream.codec for p in parties])
        for i, party in enumerate(parties):
            party.stream.send_payload(payloads[i])
            if party.role == CALLER and self.caller_hears:
                for listener in self.caller_hears:
                    listener(heard[i])
        self._ticks += 1
        if self._ticks % CHECK_EVERY_TICKS == 0:
            self._check_silent()

    def _check_silent(self) -> None:
        now = self._loop.time()
        for party in list(self.parties):
            if party.role != GUEST or party.stream.on_hold or party.name in self._reported:
                continue
            heard_at = max(party.stream.last_rx, party.joined)
            if now - heard_at >= self.silent_after:
                self._reported.add(party.name)
                self._log.warning(
                    "conference: no RTP from %s for %.0f s", party.name, now - heard_at
                )
                if self.on_silent is not None:
                    self.on_silent(party)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._clock.remove(self)
        for party in list(self.parties):
            self.remove(party.name)
        self.caller_hears.clear()
