"""Quality inspection rounds: once a day has ended, a share of its recorded
conversations is drawn (ivr/quality/samples.py) and each sample is checked
(ivr/quality/checks.py).

The rounds run on one node of the cluster, the holder of the leader lease
``quality`` (ivr/leases.py), every ``[quality] check_every`` seconds.  Each
round draws every ended day of the last ``days_back`` that has not been drawn
(so a node that was down, or a new lease holder, catches up; a day drawn is
never drawn again) and makes a later pass over each drawn day whose calls
reached the store after its draw, then checks the samples still pending,
renewing the lease between samples (a check that transcribes takes seconds).

A sample is checked on the node that held its call (``calls.node``), which has
its recording: every node's round checks its own; the lease holder checks its
own, those it can read (a shared folder) of nodes not live, and those of no
known node; a sample of a node away for now waits (pending, saying why), one of
a node gone for good (out of the roster, or no heartbeat for ``days_back``
days) is an error saying so.  The audio is
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
from ivr.node_roster import NODE_TIMEOUT_S
from ivr.quality.checks import CheckSettings, Pcm, Recognise, run_checks
from ivr.quality.samples import DayDrawn, QualitySamples, Sample, local_day
from ivr.speech.engine import Transcript
from ivr.speech.transcriber import Transcriber
from ivr.store import Database

LEASE = "quality"
CHECKS_PER_ROUND = 20
DAY_S = 86400.0
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
        node_timeout: float = NODE_TIMEOUT_S,
        log: logging.Logger | None = None,
    ) -> None:
        self.samples = QualitySamples(db)
        self.node = node
        self._settings = settings
        self._exclude = exclude
        self._transcriber = transcriber
        self._clock = clock
        self._node_timeout = node_timeout
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
        self.checked_here = 0  # samples this node checked (or found in error)

    def _ttl(self) -> float:
        return max(3 * self._settings().check_every, 60.0)

    async def round(self, now: float | None = None) -> RoundDone | None:
        """One round at ``now`` (the clock's by default): None when another
        node holds the lease (this node then checks only the samples whose
        recording it holds)."""
        now = self._clock() if now is None else now
        if not await self.lease.hold(now, ttl=self._ttl()):
            self.checked_here += await self.check_pending(holder=False)
            return None
        self.rounds += 1
        drawn = await self.draw(now)
        drawn += await self.draw_late(now)
        checked = await self.check_pending()
        self.checked_here += checked
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

    async def draw_late(self, now: float) -> list[DayDrawn]:
        """A later pass over each drawn day of the last ``days_back`` that has
        recordings written since its draw (and its last pass)."""
        settings = self._settings()
        drawn = []
        for day in await self.samples.late_days(ended_days(now, settings.days_back)):
            got = await self.samples.draw_late(
                day,
                share=settings.share,
                seed=settings.seed,
                now=now,
                exclude=tuple(self._exclude()),
            )
            if got is not None:
                drawn.append(got)
                self._log.info(
                    "quality: %s late pass %d, %d of %d conversations written after the draw",
                    day,
                    got.late_pass,
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

    def _where(
        self, sample: Sample, nodes: dict[str, tuple[str, float]], now: float
    ) -> tuple[str, str]:
        """Where the lease holder checks ``sample``: ("here", ""), ("error",
        why) or ("wait", why), when its recording is on another node that is
        not live (live nodes check their own; those are not asked here)."""
        if not sample.path or sample.node in (None, self.node) or Path(sample.path).is_file():
            return "here", ""  # a shared recordings folder: the holder reads it
        known = nodes.get(sample.node)
        if known is None:
            return "error", (
                f"录音在节点 {sample.node} 上，该节点已不在节点名册中（已移除），录音无法取得"
            )
        state, heartbeat = known
        gone_for = now - heartbeat
        if gone_for >= self._settings().days_back * DAY_S:
            return "error", (
                f"录音在节点 {sample.node} 上，该节点已 {gone_for / DAY_S:.0f} 天无心跳"
                f"（状态 {state}），视为永久离开，录音无法取得"
            )
        return "wait", (
            f"录音在节点 {sample.node} 上，该节点现不在线（状态 {state}），回来后由它检查"
        )

    async def check_pending(self, limit: int = CHECKS_PER_ROUND, *, holder: bool = True) -> int:
        """Check the samples not checked yet; how many were. Each is checked
        on the node that holds its recording: ``holder`` (this node holds the
        lease) also those whose node is unknown, those it can read (a shared
        folder), and it marks as error those of a node gone for good; any other
        node checks only its own."""
        count = 0
        now = self._clock()
        if holder:
            pending = await self.samples.to_check(
                on_node=self.node, not_live_since=now - self._node_timeout
            )
            nodes = await self.samples.nodes()
        else:
            pending = await self.samples.to_check(on_node=self.node)
            nodes = {}
        for sample in pending:
            if count >= limit:
                break
            if holder and count and not await self.lease.hold(self._clock(), ttl=self._ttl()):
                break  # another node took over (this one was too slow): it goes on
            where, why = self._where(sample, nodes, now) if holder else ("here", "")
            if where == "wait":
                if await self.samples.waiting(sample.id, why):
                    self._log.info("quality: sample %d waits: %s", sample.id, why)
                continue
            if where == "error":
                checks: dict[str, Any] = {"error": why}
                state = "error"
            else:
                checks, state = await self._check(sample)
            if state == "error":
                self._log.warning("quality: sample %d not checked: %s", sample.id, checks)
            await self.samples.checked(
                sample.id, checks, now=self._clock(), node=self.node, state=state
            )
            count += 1
        return count

    async def _check(self, sample: Sample) -> tuple[dict[str, Any], str]:
        """The checks of one sample whose recording should be on this node."""
        if not sample.path:
            return {"error": "录音已按保留期删除，无法检查"}, "error"
        if not Path(sample.path).is_file():
            if sample.node == self.node:  # it was recorded here
                return {"error": f"录音文件不在节点 {self.node} 上（已被移走或删除）"}, "error"
            return {"error": f"录音文件不在节点 {self.node} 上（录音目录未共享？）"}, "error"
        settings = self._settings()
        recognise, why_not = self._recogniser()
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
            return {"error": str(exc)}, "error"
        return checks, "done"

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
