"""The hotline's figures for Prometheus (GET /metrics, ivr/web/metrics.py).

One ``HotlineMetrics`` per Hotline, with a ``CollectorRegistry`` of its own:
nothing is registered in prometheus_client's global registry, so two hotlines
in one process (the tests) never share a figure.

Two kinds of figure:

* events, counted where they happen by the parts the Hotline hands this
  object to: calls ended by reason (ivr/call_session.py), the recogniser's
  latency (ivr/speech/transcriber.py), the prefill's latency
  (ivr/tickets/intake.py);
* states, read when Prometheus scrapes (``LiveFigures``): calls in progress,
  the recogniser's queue, refused SIP requests by reason (the endpoint's own
  counter), and from the store, which every node shares, the callers waiting
  and the operators' states (the shared line is the truth in a cluster),
  callbacks by state, the work-order outbox and the situation map's spike
  alerts (computed from the tickets). Keeping a second count of these could
  only drift from them.

Store reads are bounded (``STORE_READ_TIMEOUT_S``): a scrape while the store
is away or slow answers at once with what the node knows (the line and the
operators as its desk last saw them; callbacks and the outbox left out) and
says so in ``ivr_metrics_store_read_ok 0``.

Figures of this node carry the label ``node`` (``[node] id``); the figures read
from the store (waiting callers, operators, callbacks, the outbox) are the
cluster's, the same on every node, and carry none (aggregate them with max,
not sum).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from ivr.operators import OperatorState
from ivr.store_watch import FailingRounds

if TYPE_CHECKING:
    from ivr.callbacks import CallbackQueue
    from ivr.operators import OperatorDesk
    from ivr.shared_line import LineEntry, OperatorRow
    from ivr.speech.transcriber import Transcriber
    from ivr.store_watch import StoreWatch
    from ivr.tickets.dispatch import Dispatches
    from ivr.tickets.situation import Situation, Spike
    from ivr.tickets.spike_episodes import SpikeEpisodes
    from ivr.tickets.work_orders import WorkOrderOutbox

STORE_READ_TIMEOUT_S = 1.0  # a scrape waits at most this long for the store
# seconds: a short answer in a menu (tenths) up to a long description on a busy pool
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
# seconds a caller waits in an operator queue: answered at once up to ten minutes
WAIT_BUCKETS = (1.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
# the operators' states as the console says them
STATE_NAMES: Mapping[OperatorState, str] = {
    OperatorState.FREE: "ready",
    OperatorState.PAUSED: "paused",
    OperatorState.RINGING: "ringing",
    OperatorState.TALKING: "talking",
    OperatorState.WRAP_UP: "wrap_up",
}


@dataclass(frozen=True)
class MetricSources:
    """Where the live figures are read at scrape time (functions: the parts are
    built at start, some replaced by a reload)."""

    node: Callable[[], str]
    calls: Callable[[], int]  # calls in progress on this node
    desk: OperatorDesk
    transcriber: Callable[[], Transcriber | None]
    rejected: Callable[[], Mapping[str, int]]  # refused SIP requests by reason
    callbacks: Callable[[], CallbackQueue | None]
    work_orders: Callable[[], WorkOrderOutbox | None]
    watch: Callable[[], StoreWatch | None]
    clock: Callable[[], float] = time.time
    # the situation map's spike alerts, computed from the tickets (ivr/tickets/situation.py)
    situation: Callable[[], Situation | None] = lambda: None
    # the spike episodes kept in the store (ivr/tickets/spike_episodes.py)
    spike_episodes: Callable[[], SpikeEpisodes | None] = lambda: None
    # dispatched tickets per department and supervision level (ivr/tickets/dispatch.py)
    dispatches: Callable[[], Dispatches | None] = lambda: None


@dataclass(frozen=True)
class OutboxDepth:
    waiting: int  # entries not delivered yet
    oldest: float | None  # created_at of the oldest of them


@dataclass
class StoreFigures:
    """What one scrape read from the store (None: not read in time)."""

    line: list[LineEntry] | None = None
    operators: dict[str, OperatorRow] | None = None
    callbacks: dict[str, int] | None = None
    outbox: OutboxDepth | None = None
    spikes: list[Spike] | None = None
    spikes_asked: bool = False  # a situation is watched, so spikes were to be read
    episodes: tuple[int, int] | None = None  # (open, open and unacknowledged)
    episodes_asked: bool = False
    departments: list[dict[str, Any]] | None = None  # Dispatches.counts
    departments_asked: bool = False

    @property
    def complete(self) -> bool:
        if self.spikes_asked and self.spikes is None:
            return False
        if self.episodes_asked and self.episodes is None:
            return False
        if self.departments_asked and self.departments is None:
            return False
        return None not in (self.line, self.operators, self.callbacks, self.outbox)


class HotlineMetrics:
    """The registry of one hotline, its event figures, and ``scrape``."""

    def __init__(self, log: logging.Logger, *, node: str = "") -> None:
        self.registry = CollectorRegistry()
        self._node = node  # [node] id; set again by the hotline once its roster has one
        self._log = log
        self.calls_ended = Counter(
            "ivr_calls_ended",
            "Calls ended on this node, by why they ended (caller_hangup, operator_hangup, "
            "ivr_hangup, rtp_timeout, cancelled, shutdown, ...)",
            ("node", "reason"),
            registry=self.registry,
        )
        self.asr_seconds = Histogram(
            "ivr_asr_seconds",
            "Speech recognition of one utterance, from handing it to the recogniser's "
            "threads to its transcript (time waiting in their queue included)",
            ("node",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prefill_seconds = Histogram(
            "ivr_prefill_seconds",
            "From the end of a caller's description to their ticket prefilled with its "
            "words (recognition, prefill and the ticket's write)",
            ("node",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_answered = Counter(
            "ivr_queue_answered",
            "Callers of an operator queue answered by an operator on this node, by whether "
            "within the queue's target_answer (yes, no; none: the queue has no target) and "
            "the queue of the operator who answered (another: its overflow_to)",
            ("node", "queue", "within_target", "by"),
            registry=self.registry,
        )
        self.queue_wait_seconds = Histogram(
            "ivr_queue_answer_wait_seconds",
            "Seconds a caller waited in an operator queue until an operator answered",
            ("node", "queue"),
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.queue_past_target = Counter(
            "ivr_queue_past_target",
            "Callers whose wait in an operator queue passed its target_answer (answered "
            "later, or not at all)",
            ("node", "queue"),
            registry=self.registry,
        )
        self._live: LiveFigures | None = None
        self._failing = FailingRounds(log, "metrics: the store not read for a scrape")
        self._abandoned: set[asyncio.Future[Any]] = set()  # reads a scrape gave up on

    @property
    def node(self) -> str:
        return self._node

    @node.setter
    def node(self, node: str) -> None:
        """This node's name, in the figures of this node from now on; its
        histograms show (empty) from now on too, not only after a first call."""
        self._node = node
        self.asr_seconds.labels(node)
        self.prefill_seconds.labels(node)

    def watch(self, sources: MetricSources) -> None:
        """Read the live figures from ``sources`` at every scrape (once, at start)."""
        if self._live is not None:
            raise RuntimeError("the live figures are already watched")
        self._live = LiveFigures(sources)
        self.registry.register(self._live)

    # -- events ----------------------------------------------------------------
    def call_ended(self, reason: str) -> None:
        self.calls_ended.labels(self.node, reason).inc()

    def recognised(self, seconds: float) -> None:
        """Called from the recogniser's threads (prometheus_client locks)."""
        self.asr_seconds.labels(self.node).observe(seconds)

    def prefilled(self, seconds: float) -> None:
        self.prefill_seconds.labels(self.node).observe(seconds)

    def queue_answer(self, queue: str, waited: float, target: float, by: str) -> None:
        """A caller of ``queue`` answered after ``waited`` s (OperatorDesk.on_answered)."""
        within = "none" if target <= 0 else ("yes" if waited <= target else "no")
        self.queue_answered.labels(self.node, queue, within, by).inc()
        self.queue_wait_seconds.labels(self.node, queue).observe(waited)

    def past_target(self, queue: str) -> None:
        self.queue_past_target.labels(self.node, queue).inc()

    # -- a scrape --------------------------------------------------------------
    async def scrape(self) -> bytes:
        """The text exposition of every figure, the store read first (bounded)."""
        live = self._live
        if live is None:
            return generate_latest(self.registry)
        figures = await self._read_store(live.sources)
        # no await from here on: a scrape running at the same time cannot mix in
        live.store = figures
        try:
            return generate_latest(self.registry)
        finally:
            live.store = None

    async def _read_store(self, sources: MetricSources) -> StoreFigures:
        """The store's figures, each read given ``STORE_READ_TIMEOUT_S`` at most.
        A read still unanswered then is cancelled and not waited for (a hung
        connection may take long to give up); while one is, later scrapes do
        not read the store, so hung reads never pile up."""
        figures = StoreFigures()
        watch = sources.watch()
        if watch is not None and not watch.up:
            self._failing.failed(RuntimeError("the store is unreachable"))
            return figures  # known to be away: not waited for
        if self._abandoned:
            self._failing.failed(
                RuntimeError(f"{len(self._abandoned)} read(s) of an earlier scrape still hang")
            )
            return figures
        desk, callbacks, outbox = sources.desk, sources.callbacks(), sources.work_orders()
        situation = sources.situation()
        shared = desk.shared
        reads: dict[str, asyncio.Future[Any]] = {}
        if shared is not None:
            reads["the waiting line"] = asyncio.ensure_future(shared.line())
            reads["operators"] = asyncio.ensure_future(shared.operators(operator_uris(desk)))
        if callbacks is not None:
            reads["callbacks"] = asyncio.ensure_future(callbacks.counts())
        if outbox is not None:
            reads["the outbox"] = asyncio.ensure_future(outbox_depth(outbox))
        if situation is not None:
            figures.spikes_asked = True
            reads["spike alerts"] = asyncio.ensure_future(situation.spikes())
        episodes = sources.spike_episodes()
        if episodes is not None:
            figures.episodes_asked = True
            reads["spike episodes"] = asyncio.ensure_future(episodes.counts())
        dispatches = sources.dispatches()
        if dispatches is not None:
            figures.departments_asked = True
            reads["dispatches"] = asyncio.ensure_future(dispatches.counts(sources.clock()))
        if not reads:
            return figures
        _, pending = await asyncio.wait(reads.values(), timeout=STORE_READ_TIMEOUT_S)
        answers: dict[str, Any] = {}
        for what, read in reads.items():
            if read in pending:
                read.cancel()
                self._abandoned.add(read)
                read.add_done_callback(self._forget)
                self._failing.failed(TimeoutError(f"{what}: no answer in {STORE_READ_TIMEOUT_S} s"))
            elif read.exception() is not None:
                self._failing.failed(RuntimeError(f"{what}: {read.exception()}"))
            else:
                answers[what] = read.result()
        figures.line = answers.get("the waiting line")
        figures.operators = answers.get("operators")
        figures.callbacks = answers.get("callbacks")
        figures.outbox = answers.get("the outbox")
        figures.spikes = answers.get("spike alerts")
        figures.episodes = answers.get("spike episodes")
        figures.departments = answers.get("dispatches")
        if figures.complete:
            self._failing.worked()
        return figures

    def _forget(self, read: asyncio.Future[Any]) -> None:
        """A read abandoned by a scrape has ended (cancelled, most likely)."""
        self._abandoned.discard(read)
        if not read.cancelled() and read.exception() is not None:
            self._log.debug("metrics: an abandoned store read failed: %s", read.exception())


async def outbox_depth(outbox: WorkOrderOutbox) -> OutboxDepth:
    waiting, oldest = await outbox.depth()
    return OutboxDepth(waiting, oldest)


def operator_uris(desk: OperatorDesk) -> list[str]:
    """The operators of this node's config (every queue), each once."""
    return list(dict.fromkeys(op.uri for q in desk.queues.values() for op in q.operators))


class LiveFigures:
    """A collector: the figures read when Prometheus scrapes."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources
        self.store: StoreFigures | None = None  # set by HotlineMetrics.scrape around collect

    def collect(self) -> Iterable[Metric]:
        src = self.sources
        node = src.node()
        store = self.store or StoreFigures()
        yield _gauge("ivr_calls_in_progress", "Calls in progress on this node", node, src.calls())
        transcriber = src.transcriber()
        queued, running = (transcriber.queued, transcriber.running) if transcriber else (0, 0)
        yield _gauge(
            "ivr_asr_queue_depth",
            "Utterances waiting for a free recogniser thread on this node",
            node,
            queued,
        )
        yield _gauge(
            "ivr_asr_in_progress", "Utterances being recognised on this node", node, running
        )
        rejected = CounterMetricFamily(
            "ivr_sip_rejected",
            "SIP requests this node refused, by reason (not_allowed, rate, calls, method, "
            "malformed, no_dialog, bad_sdp, full, draining, ...)",
            labels=("node", "reason"),
        )
        for reason, count in sorted(src.rejected().items()):
            rejected.add_metric((node, reason), count)
        yield rejected
        yield _gauge(
            "ivr_metrics_store_read_ok",
            "1 when this scrape read the store in time; 0: the line and operators are this "
            "node's last view, callbacks and the outbox are left out",
            node,
            1 if store.complete else 0,
        )
        yield from self._line(store)
        yield self._operators(store)
        if store.callbacks is not None:
            by_state = GaugeMetricFamily(
                "ivr_callbacks", "Callbacks in the queue by state (every node's)", labels=("state",)
            )
            for state, count in sorted(store.callbacks.items()):
                by_state.add_metric((state,), count)
            yield by_state
        if store.outbox is not None:
            yield GaugeMetricFamily(
                "ivr_work_order_outbox_depth",
                "Work orders waiting in the outbox for the webhook to take them",
                value=store.outbox.waiting,
            )
            oldest = store.outbox.oldest
            yield GaugeMetricFamily(
                "ivr_work_order_outbox_oldest_seconds",
                "How long the oldest work order in the outbox has waited (0: none waits)",
                value=max(0.0, src.clock() - oldest) if oldest is not None else 0.0,
            )

        if store.spikes is not None:
            yield from _spikes(store.spikes)
        if store.episodes is not None:
            yield from _episodes(*store.episodes)
        if store.departments is not None:
            yield from _departments(store.departments)

    def _line(self, store: StoreFigures) -> Iterable[Metric]:
        """Callers waiting per queue and the longest wait: every node's callers
        (the store's line), or this desk's view when the store did not answer."""
        desk, now = self.sources.desk, self.sources.clock()
        joined: dict[str, list[float]] = {name: [] for name in desk.queues}
        if store.line is not None:
            for entry in store.line:
                joined.setdefault(entry.queue, []).append(entry.joined_at)
        else:
            for name, queue in desk.queues.items():
                joined[name] = [queue.waiting[c].joined for c in queue.line if c in queue.waiting]
        waiting = GaugeMetricFamily(
            "ivr_queue_waiting_callers", "Callers waiting for an operator", labels=("queue",)
        )
        longest = GaugeMetricFamily(
            "ivr_queue_longest_wait_seconds",
            "How long the caller waiting longest has waited (0: nobody waits)",
            labels=("queue",),
        )
        for name, times in sorted(joined.items()):
            waiting.add_metric((name,), len(times))
            longest.add_metric((name,), max(0.0, now - min(times)) if times else 0.0)
        yield waiting
        yield longest

    def _operators(self, store: StoreFigures) -> Metric:
        """Operators by state: from the store (every node's claims), or as this
        desk last saw them."""
        desk = self.sources.desk
        states: dict[str, OperatorState] = {}
        if store.operators is not None:
            states = {uri: row.state for uri, row in store.operators.items()}
        else:
            for queue in desk.queues.values():
                for op in queue.operators:
                    states.setdefault(op.uri, op.state)
        counts = dict.fromkeys(STATE_NAMES.values(), 0)
        for state in states.values():
            counts[STATE_NAMES[state]] += 1
        family = GaugeMetricFamily(
            "ivr_operators",
            "Operators (each phone once) by state: ready, paused, ringing, talking, wrap_up",
            labels=("state",),
        )
        for name, count in counts.items():
            family.add_metric((name,), count)
        return family


def _departments(departments: list[dict[str, Any]]) -> Iterable[Metric]:
    """Dispatched tickets per department (every node's): open, overdue, and the
    open ones at each supervision level (1 初级预警, 2 中级警示, 3 高级督办)."""
    open_ = GaugeMetricFamily(
        "ivr_dispatch_open",
        "Dispatched tickets a department has not replied to yet",
        labels=("department",),
    )
    overdue = GaugeMetricFamily(
        "ivr_dispatch_overdue",
        "Dispatched tickets past their time limit, not replied to",
        labels=("department",),
    )
    levels = GaugeMetricFamily(
        "ivr_supervision_tickets",
        "Open dispatched tickets by supervision level (1 初级预警, 2 中级警示, 3 高级督办)",
        labels=("department", "level"),
    )
    for counted in departments:
        name = str(counted["department"])
        open_.add_metric((name,), counted["open"])
        overdue.add_metric((name,), counted["overdue"])
        for level in (1, 2, 3):
            levels.add_metric((name, str(level)), counted[f"level{level}"])
    yield open_
    yield overdue
    yield levels


def _spikes(spikes: list[Spike]) -> Iterable[Metric]:
    """The spike alerts (every node's tickets: the cluster's figure, no node label)."""
    yield GaugeMetricFamily(
        "ivr_situation_spikes",
        "District x category pairs whose tickets in the last [situation] window_hours rose "
        "well above the same hours of the previous baseline_days days (未诉先办)",
        value=len(spikes),
    )
    count = GaugeMetricFamily(
        "ivr_situation_spike_tickets",
        "Tickets in the window of a district x category that spikes (only those that do)",
        labels=("district", "category"),
    )
    mean = GaugeMetricFamily(
        "ivr_situation_spike_baseline",
        "The baseline's mean tickets per window of a district x category that spikes",
        labels=("district", "category"),
    )
    for spike in spikes:
        count.add_metric((spike.district, spike.category), spike.count)
        mean.add_metric((spike.district, spike.category), spike.mean)
    yield count
    yield mean


def _episodes(open_: int, unacknowledged: int) -> Iterable[Metric]:
    """The spike episodes in the store (the cluster's figure, no node label)."""
    yield GaugeMetricFamily(
        "ivr_situation_spikes_open",
        "Spike episodes begun and not ended yet, as the last pass of the lease holder left them",
        value=open_,
    )
    yield GaugeMetricFamily(
        "ivr_situation_spikes_unacknowledged",
        "Open spike episodes no supervisor or admin has acknowledged yet (fresh alarms)",
        value=unacknowledged,
    )


def _gauge(name: str, documentation: str, node: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=("node",))
    family.add_metric((node,), value)
    return family
