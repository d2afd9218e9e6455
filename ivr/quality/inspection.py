"""Quality inspection rounds: once a day has ended, a share of its recorded
conversations is drawn (ivr/quality/samples.py) and each sample is checked
(ivr/quality/checks.py).

The rounds run on one node of the cluster, the holder of the leader lease
``quality`` (ivr/leases.py), every ``[quality] check_every`` seconds.  Each
round draws every ended day of the last ``days_back`` that has not been drawn
(so a node that was down, or a new lease holder, catches up; a day drawn is
never drawn again), then checks the samples still pending, renewing the lease
between samples (a check that transcribes takes seconds).  The audio is
measured in an executor; transcription goes to the hotline's recogniser pool, one
utterance at a time and only while no caller's utterance waits or is being recognised.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.config import QualitySettings
from ivr.leases import LeaderLease, LeaseRounds
from ivr.quality.checks import CheckSettings, Pcm, Recognise, run_checks
from ivr.quality.samples import DayDrawn, QualitySamples, local_day
from ivr.speech.engine import Transcript
from ivr.speech.transcriber import Transcriber
from ivr.store import Database

LEASE = "quality"
CHECKS_PER_ROUND = 20
IDLE_POLL_S = 0.5  # how often a check waiting for an idle recogniser looks again


@dataclass(frozen=True)
class RoundDone:
    drawn: list[DayDrawn]
    checked: int


def ended_days(now: float, days_back: int) -> list[str]:
    """The local days before ``now``'s, the oldest first, ``days_back`` of them."""
    today = datetime.datetime.fromtimestamp(now).date()
    return [(today - datetime.timedelta(days=n)).isoformat() for n in range(days_back, 0, -1)]


class QualityInspection:
    def __init__(
        self,
        db: Database,
        *,
        node: str,
        settings: Callable[[], QualitySettings],
        exclude: Callable[[], Sequence[str]] = lambda: (),
        transcriber: Callable[[], Transcriber | None] = lambda: None,
        clock: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
    ) -> None:
        self.samples = QualitySamples(db)
        self.node = node
        self._settings = settings
        self._exclude = exclude
        self._transcriber = transcriber
        self._clock = clock
        self._log = log or logging.getLogger("ivr.quality")
        self.lease = LeaderLease(db, LEASE, node)
        self._rounds = LeaseRounds(
            self.lease,
            self.round,
            every=lambda: self._settings().check_every,
            enabled=lambda: self._settings().enabled,
            log=self._log,
        )
        self.rounds = 0  # rounds this node ran as the lease holder

    def _ttl(self) -> float:
        return max(3 * self._settings().check_every, 60.0)

    async def round(self, now: float | None = None) -> RoundDone | None:
        """One round at ``now`` (the clock's by default): None when another
        node holds the lease."""
        now = self._clock() if now is None else now
        if not await self.lease.hold(now, ttl=self._ttl()):
            return None
        self.rounds += 1
        drawn = await self.draw(now)
        checked = await self.check_pending()
        return RoundDone(drawn, checked)

    async def draw(self, now: float) -> list[DayDrawn]:
        """Draw every ended day of the last ``days_back`` not drawn yet."""
        settings = self._settings()
        days = ended_days(now, settings.days_back)
        done = await self.samples.sampled_days(days)
        drawn = []
        for day in days:
            if day in done:
                continue
            got = await self.samples.draw_day(
                day,
                share=settings.share,
                seed=settings.seed,
                now=now,
                node=self.node,
                exclude=tuple(self._exclude()),
            )
            if got is not None:
                drawn.append(got)
                self._log.info(
                    "quality: %s drawn, %d of %d conversations",
                    day,
                    len(got.picked),
                    got.candidates,
                )
        return drawn

    def _recogniser(self) -> tuple[Recognise | None, str]:
        transcriber = self._transcriber()
        if transcriber is None:
            return None, (
                f"节点 {self.node} 未加载语音识别（拨号方案不听来电人说话时不加载），"
                "转写类检查未运行"
            )
        if transcriber.engine.name == "scripted":
            return None, "脚本识别器（测试与试用）不识别语音，转写类检查未运行"

        async def when_idle(pcm: Pcm) -> Transcript:
            """A recording's utterance goes to the recogniser only while no
            caller's is waiting or being recognised: live calls go first."""
            while True:
                if not (transcriber.queued or transcriber.running):
                    return await transcriber.transcribe(pcm)
                await asyncio.sleep(IDLE_POLL_S)

        return when_idle, ""

    async def check_pending(self, limit: int = CHECKS_PER_ROUND) -> int:
        """Check the samples not checked yet; how many were."""
        count = 0
        for sample in await self.samples.to_check(limit):
            if count and not await self.lease.hold(self._clock(), ttl=self._ttl()):
                break  # another node took over (this one was too slow): it goes on
            settings = self._settings()
            recognise, why_not = self._recogniser()
            state = "done"
            checks: dict[str, Any]
            if not sample.path:
                checks = {"error": "录音已按保留期删除，无法检查"}
                state = "error"
            elif not Path(sample.path).is_file():
                checks = {"error": f"录音文件不在节点 {self.node} 上（录音目录未共享？）"}
                state = "error"
            else:
                try:
                    checks = await run_checks(
                        Path(sample.path),
                        CheckSettings(
                            silence_s=settings.silence_s,
                            talk_over_s=settings.talk_over_s,
                            speech_level_db=settings.speech_level_db,
                            greeting_words=settings.greeting_words,
                            closing_words=settings.closing_words,
                        ),
                        numbers=await self.samples.numbers_of(sample.call_id),
                        recognise=recognise,
                        no_recogniser=why_not,
                    )
                except ValueError as exc:  # not a conversation recording
                    checks, state = {"error": str(exc)}, "error"
            if state == "error":
                self._log.warning("quality: sample %d not checked: %s", sample.id, checks)
            await self.samples.checked(
                sample.id, checks, now=self._clock(), node=self.node, state=state
            )
            count += 1
        return count

    @property
    def running(self) -> bool:
        return self._rounds.running

    def start(self) -> None:
        self._rounds.start()

    def wake(self) -> None:
        self._rounds.wake()

    async def stop(self) -> None:
        await self._rounds.stop()


__all__ = ["LEASE", "QualityInspection", "RoundDone", "ended_days", "local_day"]
