"""The composition root: builds every part from config.toml, runs, stops.

Nothing else constructs long-lived objects; nothing holds module state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from socket import SOCK_DGRAM, SOCK_STREAM
from typing import Any

from aiohttp import web_request

from ivr.audit import AccessGuard, AuditLog
from ivr.call import EndReason
from ivr.call_commands import CallCommands, CommandFailed
from ivr.call_progress import CallProgress
from ivr.call_records import CallRecordStore
from ivr.call_session import (
    CallParts,
    answer,
    call_back,
    callback_queue_name,
    record_conversation,
    watch_media,
)
from ivr.callbacks import CallbackQueue
from ivr.callbacks.dialling import CallbackDialler
from ivr.callbacks.settings import policy_from
from ivr.caller_profiles import CallerProfiles
from ivr.config import ConfigError, ConfigProblem, ConfigReload, Settings, reload_settings
from ivr.consultation import Consultations
from ivr.consultation_board import ConsultationBoard
from ivr.counsellors import prompt_texts as counsellor_prompts
from ivr.dialer import SipDialer
from ivr.dialplan.load import DialPlanError, load_dialplan, parse_dialplan
from ivr.dialplan.model import DialPlan, TransferNode
from ivr.enterprises import EnterpriseRegistry
from ivr.event_relay import EventRelay
from ivr.followups.service import FollowUps
from ivr.followups.web import followup_routes
from ivr.live_call import LiveCall
from ivr.lost_nodes import LostNodeWatch
from ivr.media.clock import MediaClock
from ivr.media.ports import RtpPorts
from ivr.metrics import HotlineMetrics, MetricSources
from ivr.node import wait_for_calls
from ivr.node_roster import NodeRoster, default_node_id
from ivr.operators import (
    ELDERLY_SKILL,
    OperatorDesk,
    QueueConfig,
)
from ivr.plan_store import PlanLoadError, PlanStore, logged_errors
from ivr.prefill import Prefiller, load_gazetteer, load_taxonomy
from ivr.prefill.classifier import load_classifier
from ivr.prompts import (
    PromptLibrary,
    plan_prompt_keys,
    plan_prompt_texts,
)
from ivr.quality.inspection import QualityInspection
from ivr.recordings import SharedRecordings, purge_conversations, purge_recordings
from ivr.shared_line import SharedLine
from ivr.sip.edge_guard import EdgePolicy
from ivr.sip.endpoint import SipEndpoint
from ivr.sip.incoming import IncomingInvite
from ivr.speech.transcriber import Transcriber
from ivr.speech.utterance import ListenSettings
from ivr.startup import Listener, StartupError, check_listeners, listen_failure
from ivr.store import Database, DatabaseError, open_store
from ivr.store_watch import FailingRounds, PendingWrites, StoreWatch
from ivr.tickets import TicketStore
from ivr.tickets.cases import CaseStore, MergeRule
from ivr.tickets.dispatch import Dispatches
from ivr.tickets.district_map import (
    DistrictLayout,
    DistrictMapError,
    grid_layout,
    load_district_map,
)
from ivr.tickets.duty_list import DutyList, parse_duty_list
from ivr.tickets.duty_store import CHECK_ERRORS, DutyListStore, RunningDutyList
from ivr.tickets.events import TicketEvents
from ivr.tickets.intake import Intake
from ivr.tickets.search import TicketSearch
from ivr.tickets.situation import Situation, SpikeRule
from ivr.tickets.spike_episodes import SpikeEpisodes
from ivr.tickets.supervision import Supervision
from ivr.tickets.work_orders import WorkOrderOutbox
from ivr.web.admin_plans import config_routes, plan_routes
from ivr.web.allow import WebAllow
from ivr.web.api import HotlineApi
from ivr.web.audit import audit_middleware, audit_routes
from ivr.web.auth import Accounts, require
from ivr.web.cases import case_routes
from ivr.web.console import ConsoleParts, console_routes
from ivr.web.dispatch import DispatchParts, dispatch_routes
from ivr.web.duty_lists import duty_list_routes
from ivr.web.enterprises import enterprise_routes
from ivr.web.metrics import MetricsAccess, metrics_routes
from ivr.web.quality import quality_routes
from ivr.web.situation import SituationParts, situation_routes

RECORDING_PURGE_EVERY_S = 6 * 3600
RECORDINGS_SHARE_CHECK_S = 30.0  # is recordings_dir shared with every live node?
PLAN_FOLLOW_EVERY_S = 2.0  # how often a node looks for a plan published on another node
SPIKE_PASS_EVERY_S = 60.0  # the spike episodes' passes (and at once on a ticket event)


@dataclass(frozen=True)
class ReloadResult:
    """What a reload (SIGHUP) did: config keys taken and left for a restart, the
    dial plan running now, and why the plan file was not taken (if it was not)."""

    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]
    plan_version: str | None
    plan_error: str | None = None
    map_error: str | None = None  # the situation map file refused, the running map kept

    def to_json(self) -> dict[str, object]:
        return {
            "applied": list(self.applied),
            "needs_restart": list(self.needs_restart),
            "plan_version": self.plan_version,
            "plan_error": self.plan_error,
            "map_error": self.map_error,
        }


class Hotline:
    """One running IVR."""

    def __init__(
        self,
        settings: Settings,
        log: logging.Logger,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.log = log
        self.wall_clock = clock  # wall time for the callback queue (tests may set it)
        sip = settings.sip
        self.endpoint = SipEndpoint(
            host=sip.host,
            port=sip.port,
            public_host=sip.public_host or sip.host,
            user_agent=sip.user_agent,
            log=log.getChild("sip"),
            edge=EdgePolicy.from_settings(sip),
            tcp=sip.tcp,
            tcp_max_connections=sip.tcp_max_connections,
            tcp_idle_timeout=sip.tcp_idle_timeout,
        )
        self.clock = MediaClock(log.getChild("media"))
        self.media_host = sip.rtp_host or sip.public_host or sip.host
        self.ports = RtpPorts(sip.rtp_host or sip.host, sip.rtp_port_min, sip.rtp_port_max)
        self.prompts = PromptLibrary.from_settings(settings, log.getChild("prompts"))
        self.dialer = SipDialer(
            self.endpoint,
            self.ports,
            self.clock,
            media_host=self.media_host,
            codecs=tuple(sip.codecs),
            log=log.getChild("operators"),
        )
        self.desk = OperatorDesk(
            _queue_configs(settings),
            dialer=self.dialer,
            ring_timeout=settings.operators.ring_timeout,
            wrap_up=settings.operators.wrap_up,
            log=log.getChild("operators"),
        )
        self.plan: DialPlan | None = None
        self.db: Database | None = None
        self.roster: NodeRoster | None = None
        self.lost_nodes: LostNodeWatch | None = None
        self.call_progress: CallProgress | None = None
        self._crashed_before = False
        self.plan_store: PlanStore | None = None
        self.accounts: Accounts | None = None
        self.audit: AuditLog | None = None  # who read, exported, changed what (ivr/audit.py)
        self.access_guard: AccessGuard | None = None  # [audit] thresholds and locks
        self.ticket_search: TicketSearch | None = None
        # the situation map (态势): counts and spike alerts from the store, the districts' shapes
        self.situation: Situation | None = None
        self.district_layout: DistrictLayout | None = None
        self.district_map_error: str | None = None  # why the last reload kept the running map
        self._districts: tuple[str, ...] = ()  # the gazetteer's, that the map draws
        self.spike_episodes: SpikeEpisodes | None = None  # began, ended, acknowledged
        self.cases: CaseStore | None = None  # [merging]: one matter, many reports
        self.records: CallRecordStore | None = None
        self.tickets: TicketStore | None = None
        self.profiles: CallerProfiles | None = None
        self.intake: Intake | None = None
        self.work_orders: WorkOrderOutbox | None = None
        self.transcriber: Transcriber | None = None
        self.events = TicketEvents()
        # departments brought into bridged calls, mixed (ivr/consultation.py)
        self.consultations = Consultations(
            dialer=self.dialer,
            clock=self.clock,
            settings=lambda: self.settings,
            events=self.events,
            log=log.getChild("consultation"),
            endpoint=self.endpoint,
        )
        self.desk.on_talking = self.consultations.begin
        # GET /metrics: this hotline's figures (a registry of its own, ivr/metrics.py)
        self.metrics = HotlineMetrics(log.getChild("metrics"), node=settings.node.id)
        self.desk.on_answered = self.metrics.queue_answer  # 服务水平 per queue
        self.desk.on_past_target = self.metrics.past_target
        self.listen = ListenSettings(
            end_silence=settings.speech.end_silence,
            pre_roll=settings.speech.pre_roll,
            vad_aggressiveness=settings.speech.vad_aggressiveness,
        )
        self.api = HotlineApi(
            tickets=lambda: self.tickets,
            events=self.events,
            status=self._health,
            log=log.getChild("api"),
            callbacks=lambda: self.callback_queue,
            callbacks_changed=self._wake_callbacks,
            records=lambda: self.records,
            allow=WebAllow(settings.web.allow, log.getChild("web")),
        )
        self._housekeeping: asyncio.Task[None] | None = None
        self.shared_recordings: SharedRecordings | None = None
        self._plan_follower: asyncio.Task[None] | None = None
        self.event_relay: EventRelay | None = None
        # console commands on calls, whichever node holds them (ivr/call_commands.py)
        self.call_commands: CallCommands | None = None
        self.callback_queue: CallbackQueue | None = None
        self.callback_dialler: CallbackDialler | None = None
        self.followups: FollowUps | None = None  # [followups]: 回访 after closed tickets
        # [dispatch]: the duty list running (the newest published in the store this
        # node can check, else the file; ivr/tickets/duty_store.py), the dispatched
        # tickets and the supervision rounds (ivr/tickets/dispatch.py)
        self.duty_lists: RunningDutyList | None = None
        self.dispatches: Dispatches | None = None
        self.supervision: Supervision | None = None
        # [quality]: the daily draw of conversations and their checks (ivr/quality/)
        self.quality: QualityInspection | None = None
        self.calls: dict[str, LiveCall] = {}
        self._call_tasks: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._reloading = asyncio.Lock()  # one reload (config, plan) at a time
        self._console: ConsoleParts | None = None
        self._call_parts: CallParts | None = None  # built at start, once the stores are open
        # the store lost while running: whether it answers, and what calls keep
        # for it meanwhile (ivr/store_watch.py)
        self.store_watch: StoreWatch | None = None
        self.pending_writes: PendingWrites | None = None
        self.stopped = asyncio.Event()
        self.drain_cut = asyncio.Event()  # set: a drain ends the calls left at once

    # -- start / reload / stop -------------------------------------------------
    def _load_plan(self, settings: Settings | None = None) -> DialPlan:
        """The plan file, checked against ``settings`` (the running ones by default)."""
        settings = settings or self.settings
        return load_dialplan(
            settings.dialplan.file,
            queues=set(settings.queues),
            recorded_prompts=self.prompts.recorded_keys(),
            dialects=settings.dialects.offered,
            speeds=settings.elderly.speeds,
        )

    def _prompt_texts(self, plan: DialPlan, settings: Settings | None = None) -> dict[str, str]:
        """The prompts to build for ``plan`` under ``settings`` (the running ones by
        default; a reload passes the new ones, so a counsellors' queue enabled by
        the reload gets its prompts)."""
        settings = settings or self.settings
        texts = plan_prompt_texts(plan, settings.callbacks.greeting)
        return {**texts, **counsellor_prompts(settings.counsellors)}

    async def _load_speech(self, plan: DialPlan) -> None:
        """Load the speech engine if ``plan`` listens and none is loaded yet.
        SpeechModelError (no model, corrupt model) stops the start / reload."""
        if not plan.needs_speech() or self.transcriber is not None:
            return
        speech = self.settings.speech
        self.transcriber = await Transcriber.load(
            speech.engine,
            speech.models_dir,
            workers=speech.workers,
            threads=speech.threads,
            language=speech.language,
            script=speech.script,
        )
        self.transcriber.metrics = self.metrics
        if self.intake is not None:
            self.intake.transcriber = self.transcriber
        self.log.info(
            "speech: %s engine loaded from %s", self.transcriber.engine.name, speech.models_dir
        )

    def _listeners(self) -> list[Listener]:
        sip, web = self.settings.sip, self.settings.web
        listeners = [Listener("SIP (UDP)", sip.host, sip.port, "[sip] host / port", SOCK_DGRAM)]
        if sip.tcp:  # SIP over TCP on the same host:port (ivr/sip/stream_transport.py)
            keys = "[sip] host / port (or tcp = false)"
            listeners.append(Listener("SIP (TCP)", sip.host, sip.port, keys, SOCK_STREAM))
        if web.enabled:
            http = "the web console (HTTP)"
            listeners.append(Listener(http, web.host, web.port, "[web] host / port", SOCK_STREAM))
        return listeners

    async def start(self) -> None:
        """Start everything; StartupError (or the error of a bad file) when it
        cannot. The caller then calls ``stop`` to close what did start."""
        source = self.settings.source
        check_listeners(self._listeners(), source)  # a taken port is said at once
        self.plan = self._load_plan()  # DialPlanError stops the start
        tickets_cfg = self.settings.tickets
        taxonomy = load_taxonomy(tickets_cfg.taxonomy)  # PrefillDataError stops the start
        classifier = await asyncio.to_thread(load_classifier)  # category and urgency model
        if unknown := classifier.fits(taxonomy.names):
            self.log.warning(
                "prefill: the classifier knows categories %s that taxonomy %s lacks; "
                "category and urgency come from the keyword rules alone",
                unknown,
                taxonomy.source,
            )
        prefiller = Prefiller(
            taxonomy,
            load_gazetteer(tickets_cfg.gazetteer),
            classifier=None if unknown else classifier,
        )
        # a bad [situation] map stops the start (file:line)
        self._districts = prefiller.gazetteer.districts
        try:
            self.district_layout = await asyncio.to_thread(
                self._load_district_layout, self.settings
            )
        except DistrictMapError as exc:
            raise StartupError(f"the situation map ([situation] map):\n{exc}") from exc
        await self._load_speech(self.plan)  # SpeechModelError stops the start
        await self.prompts.build(self._prompt_texts(self.plan), self.plan.dialect_prompts)
        try:
            self.db = await open_store(self.settings.storage.location)
        except DatabaseError as exc:
            where = f" in {source}" if source is not None else ""
            raise StartupError(f"{exc}; change [storage] url{where}") from exc
        self.records = CallRecordStore(self.db)
        self.tickets = TicketStore(self.db)
        merging = self.settings.merging
        self.cases = (
            CaseStore(
                self.db,
                self.tickets,
                MergeRule(
                    window=merging.window_hours * 3600.0,
                    burst=merging.burst_hours * 3600.0,
                    area_categories=frozenset(merging.area_categories),
                    home_city=prefiller.gazetteer.city or "",
                ),
            )
            if merging.enabled
            else None
        )
        self.profiles = CallerProfiles(self.db)
        self.store_watch = StoreWatch(self.db, log=self.log.getChild("store"))
        self.store_watch.start()
        self.pending_writes = PendingWrites(self.store_watch, log=self.log.getChild("store"))
        self.pending_writes.start()
        self.desk.watch = self.store_watch
        sip = self.settings.sip
        self.roster = NodeRoster(
            self.db,
            self.settings.node.id or default_node_id(sip.host, self.endpoint.port),
            sip_address=f"{sip.host}:{self.endpoint.port}",
            log=self.log.getChild("nodes"),
        )
        self._crashed_before = await self.roster.join()
        self.roster.start()
        self.metrics.node = self.roster.node_id
        self.shared_recordings = SharedRecordings(
            self.settings.storage.recordings_dir,
            self.roster.node_id,
            self.log.getChild("recordings"),
        )
        await asyncio.to_thread(self.shared_recordings.mark)
        await self.desk.attach(SharedLine(self.db, self.roster))
        self.event_relay = EventRelay(
            self.db, self.roster, self.events, log=self.log.getChild("events")
        )
        self.event_relay.start()  # screen pops of calls on other nodes reach these screens
        # who is in each consultation, and the console's buttons, on every node
        board = ConsultationBoard(self.db, self.roster, log=self.log.getChild("consultation"))
        await board.start()
        self.consultations.board = board
        self.call_commands = CallCommands(
            self.db,
            self.roster,
            {**self.consultations.commands(), "hangup": self._hangup_command},
            holds=lambda call_id: call_id in self.calls,
            log=self.log.getChild("commands"),
        )
        self.call_commands.start()
        wo = self.settings.work_orders
        self.work_orders = WorkOrderOutbox(
            self.db,
            url=wo.webhook,
            timeout=wo.timeout,
            retry_delays=wo.retry,
            log=self.log.getChild("work_orders"),
            node=self.roster.node_id,
        )
        self.work_orders.start()
        plan_file = self.settings.dialplan.file

        async def reload_published() -> bool:
            """reload_plan, raising why it failed so the admin who published sees it."""
            with logged_errors(self.log) as errors:
                if await self.reload_plan():
                    return True
            raise PlanLoadError(errors[-1] if errors else "see the server log")

        self.plan_store = PlanStore(
            self.db,
            plan_file,
            validate=lambda source: parse_dialplan(
                source,
                str(plan_file),
                queues=set(self.settings.queues),
                recorded_prompts=self.prompts.recorded_keys(),
                dialects=self.settings.dialects.offered,
                speeds=self.settings.elderly.speeds,
            ),
            reload=reload_published,
            log=self.log.getChild("plans"),
        )

        async def admin(request: web_request.Request) -> str:
            return require(request, "admin").name

        self.accounts = Accounts(self.db, log=self.log.getChild("web"))
        self.audit = AuditLog(self.db, node=self.roster.node_id, log=self.log.getChild("audit"))
        self.access_guard = AccessGuard(
            self.db, self.audit, self.events, lambda: self.settings.audit
        )
        self.accounts.guard = self.access_guard
        self.ticket_search = TicketSearch(self.db, self.tickets)
        self.situation = Situation(self.db, rule=self._spike_rule, clock=self.wall_clock)
        self.spike_episodes = SpikeEpisodes(
            self.db,
            self.situation,
            node=self.roster.node_id,
            check_every=lambda: SPIKE_PASS_EVERY_S,
            events=self.events,
            clock=self.wall_clock,
            log=self.log.getChild("spikes"),
        )
        self.events.on_publish.append(self._wake_spike_episodes)
        self.spike_episodes.start()  # passes on the holder of the lease "spike_episodes"
        self.dispatches = Dispatches(self.db)
        self.supervision = Supervision(
            self.db,
            node=self.roster.node_id,
            warn_share=lambda: self.settings.dispatch.warn_share,
            check_every=lambda: self.settings.dispatch.check_every,
            events=self.events,
            clock=self.wall_clock,
            log=self.log.getChild("supervision"),
        )
        self.duty_lists = RunningDutyList(
            DutyListStore(self.db, clock=self.wall_clock),
            check=self._check_duty_list,
            seed_file=lambda: self.settings.dispatch.duty_list,
            log=self.log.getChild("dispatch"),
        )
        try:  # the published list; without one, the file (a bad file stops the start)
            await self.duty_lists.start()
        except CHECK_ERRORS as exc:
            raise StartupError(f"the duty list ([dispatch] duty_list):\n{exc}") from exc
        if self.duty_lists.duty is not None:
            self.supervision.start()
        self.api.app.add_routes(dispatch_routes(self._dispatch_parts()))
        self.api.app.add_routes(duty_list_routes(self.duty_lists, admin))
        self.quality = QualityInspection(
            self.db,
            node=self.roster.node_id,
            settings=lambda: self.settings.quality,
            exclude=self._emergency_uris,  # a bridge to 110/119/120 is not an operator's
            transcriber=lambda: self.transcriber,
            clock=self.wall_clock,
            log=self.log.getChild("quality"),
        )
        self.quality.start()  # rounds on the holder of the lease "quality"
        self.api.app.add_routes(
            quality_routes(
                lambda: self.quality.samples if self.quality is not None else None,
                clock=self.wall_clock,
            )
        )
        self.api.use_accounts(self.accounts, secure_cookie=self.settings.web.secure_cookie)
        self.api.app.middlewares.append(  # after the log-in's: it audits the request's user
            audit_middleware(self.access_guard, lambda: self.settings.audit, log=self.audit.log)
        )
        self.api.app.add_routes(audit_routes(self.access_guard))
        self.api.app.add_routes(
            enterprise_routes(lambda: self.db, log=self.log.getChild("enterprises"))
        )
        self.api.app.add_routes(plan_routes(self.plan_store, admin, running=lambda: self.plan))
        self.api.app.add_routes(config_routes(self._reload_json, admin))
        self._console = self._console_parts()
        self.api.app.add_routes(console_routes(self._console))
        self.api.app.add_routes(
            situation_routes(
                SituationParts(
                    situation=lambda: self.situation,
                    layout=lambda: self.district_layout,
                    episodes=lambda: self.spike_episodes,
                    reload_map=self.reload_district_map,
                )
            )
        )
        self.api.app.add_routes(
            case_routes(
                lambda: self.cases,
                lambda: self.tickets,
                self.events,
                log=self.log.getChild("cases"),
            )
        )
        self.api.app.add_routes(
            followup_routes(
                lambda: self.followups.queue if self.followups is not None else None,
                lambda: self.db,
                changed=lambda: self.followups.wake() if self.followups is not None else None,
                log=self.log.getChild("followups"),
            )
        )
        self._watch_metrics()
        if self.settings.web.enabled and not await self.accounts.users():
            self.log.warning(
                "web console: no users yet; create the first admin with "
                "`ivr users add NAME --role admin`"
            )
        web = self.settings.web
        if web.enabled:
            try:
                await self.api.start(web.host, web.port)
            except OSError as exc:
                raise listen_failure(self._listeners()[1], exc, source) from exc
        self.intake = Intake(
            tickets=self.tickets,
            prefiller=prefiller,
            events=self.events,
            work_orders=self.work_orders,
            recordings_dir=self.settings.storage.recordings_dir,
            api_base=f"http://{web.host}:{self.api.port}" if web.enabled else "",
            log=self.log.getChild("intake"),
        )
        self.intake.transcriber = self.transcriber
        self.intake.watch = self.store_watch
        self.intake.pending = self.pending_writes
        self.intake.metrics = self.metrics
        self.intake.cases = self.cases
        parts = await self._start_calls()
        if self.settings.followups.enabled:  # a bad survey plan stops the start (file:line)
            self.followups = FollowUps(
                db=self.db,
                settings=lambda: self.settings,
                tickets=self.tickets,
                events=self.events,
                dialer=self.dialer,
                node=self.roster.node_id,
                clock=self.wall_clock,
                log=self.log.getChild("followups"),
            )
            await self.followups.start(parts, load_speech=self._load_speech)
        self.endpoint.on_invite = self._on_invite
        try:
            await self.endpoint.start()
        except OSError as exc:
            raise listen_failure(self._listeners()[0], exc, source) from exc
        self._watchdog = asyncio.ensure_future(watch_media(parts))
        self._housekeeping = asyncio.ensure_future(self._purge_recordings_forever())
        self._plan_follower = asyncio.ensure_future(self._follow_published_plans())
        self.log.info(
            "ivr: ready on sip:%s:%d, plan %s version %s, %d queue(s)",
            self.endpoint.public_host,
            self.endpoint.port,
            self.plan.name,
            self.plan.version,
            len(self.settings.queues),
        )

    def _watch_metrics(self) -> None:
        """GET /metrics: the live figures read at each scrape, and who may read it."""
        self.metrics.watch(
            MetricSources(
                node=lambda: self.metrics.node,
                calls=lambda: len(self.calls),
                desk=self.desk,
                transcriber=lambda: self.transcriber,
                # refused by reason; datagrams that do not parse as SIP are never
                # answered, counted by the transport
                rejected=lambda: {
                    **self.endpoint.rejected,
                    "unparseable": self.endpoint.bad_messages,
                },
                callbacks=lambda: self.callback_queue,
                work_orders=lambda: self.work_orders,
                watch=lambda: self.store_watch,
                situation=lambda: self.situation,
                spike_episodes=lambda: self.spike_episodes,
                dispatches=lambda: self.dispatches,
                clock=self.wall_clock,  # the time the tickets' deadlines are kept in
            )
        )
        access = MetricsAccess(
            allow=lambda: self.settings.web.metrics_allow,
            token=lambda: self.settings.web.metrics_token,
            log=self.log.getChild("web"),
        )
        self.api.app.add_routes(metrics_routes(self.metrics, access))

    def _console_parts(self) -> ConsoleParts:
        async def rebuild() -> None:
            if self.plan is not None:
                await self.prompts.build(self._prompt_texts(self.plan), self.plan.dialect_prompts)

        return ConsoleParts(
            desk=self.desk,
            tickets=lambda: self.tickets,
            search=lambda: self.ticket_search,
            callbacks=lambda: self.callback_queue,
            calls=lambda: self.calls,
            prompts=self.prompts,
            prompt_keys=lambda: (
                plan_prompt_keys(self.plan, self._prompt_texts(self.plan)) if self.plan else set()
            ),
            prompt_texts=lambda: self._prompt_texts(self.plan) if self.plan else {},
            rebuild_prompts=rebuild,
            dialects=tuple(dict.fromkeys(("mandarin", *self.settings.dialects.offered))),
            voices=self.settings.dialects.voices,
            voices_dir=self.settings.prompts.voices_dir,
            duplicate_window=self.settings.tickets.duplicate_window_days * 86400.0,
            events=self.events,
            log=self.log.getChild("web"),
            audit=lambda: self.settings.audit,
            consultations=self.consultations,
            commands=lambda: self.call_commands,
            board=lambda: self.consultations.board,
            cases=lambda: self.cases,
        )

    def _load_district_layout(self, settings: Settings) -> DistrictLayout:
        """The situation map's shapes: [situation] map, or a grid without one
        (DistrictMapError, file:line, when the file cannot be used)."""
        path = settings.situation.map
        if path is None:
            return grid_layout(self._districts)
        layout = load_district_map(path, self._districts)
        if layout.missing:
            self.log.warning(
                "situation: %s does not draw %s; they are listed beside the map",
                path,
                "、".join(layout.missing),
            )
        return layout

    async def reload_district_map(self) -> str | None:
        """Read the situation map file again (SIGHUP, the admins' reload): None,
        or why it was refused (file:line, logged) and the running map kept."""
        running = self.district_layout.version if self.district_layout is not None else "-"
        try:
            layout = await asyncio.to_thread(self._load_district_layout, self.settings)
        except DistrictMapError as exc:
            self.district_map_error = str(exc)
            self.log.error("situation map reload failed, keeping version %s:\n%s", running, exc)
            return str(exc)
        self.district_layout, self.district_map_error = layout, None
        if layout.version != running:
            self.log.info(
                "situation map loaded: %s version %s (was %s)",
                layout.source or "the grid",
                layout.version,
                running,
            )
        return None

    def _wake_spike_episodes(self, kind: str, _: dict[str, object]) -> None:
        """A ticket made or changed here: the spike episodes' pass runs now."""
        if self.spike_episodes is not None and kind in ("created", "prefilled", "edited"):
            self.spike_episodes.wake()

    def _spike_rule(self) -> SpikeRule:
        """[situation]'s rule as it is now (the keys reload)."""
        s = self.settings.situation
        return SpikeRule(
            window=s.window_hours * 3600.0,
            baseline_days=s.baseline_days,
            min_count=s.min_count,
            sd_factor=s.sd_factor,
            ratio=s.ratio,
        )

    def _check_duty_list(self, text: str, name: str) -> DutyList:
        """A duty list's text checked against the taxonomy's categories and the
        gazetteer's districts (DutyListError, PrefillDataError)."""
        tickets = self.settings.tickets
        return parse_duty_list(
            text,
            name,
            categories=load_taxonomy(tickets.taxonomy).names,
            districts=load_gazetteer(tickets.gazetteer).districts,
        )

    @property
    def duty_list(self) -> DutyList | None:
        """The duty list dispatch runs by now (None: no dispatch)."""
        return self.duty_lists.duty if self.duty_lists is not None else None

    async def reload_duty_list(self) -> str | None:
        """SIGHUP, the admins' reload: a newer published list, else the file read
        again. None, or why it was refused (file:line, logged; the list kept)."""
        if self.duty_lists is None:
            return None
        error = await self.duty_lists.reload()
        self._supervise_if_listed()
        return error

    def _supervise_if_listed(self) -> None:
        if self.duty_list is not None and self.supervision and not self.supervision.running:
            self.supervision.start()

    def _emergency_uris(self) -> tuple[str, ...]:
        e = self.settings.emergency
        return tuple(uri for uri in (e.police, e.fire, e.ambulance) if uri)

    def _dispatch_parts(self) -> DispatchParts:
        return DispatchParts(
            duty_list=lambda: self.duty_list,
            duty_error=lambda: self.duty_lists.error if self.duty_lists else None,
            dispatches=lambda: self.dispatches,
            tickets=lambda: self.tickets,
            search=lambda: self.ticket_search,
            supervision=lambda: self.supervision,
            reload_duty_list=self.reload_duty_list,
            events=self.events,
            log=self.log.getChild("dispatch"),
            clock=self.wall_clock,
            cases=lambda: self.cases,
        )

    async def reload_plan(self) -> bool:
        """Load the dial plan again; on any error keep the running one."""
        async with self._reloading:
            plan, _ = await self._prepare_plan(self.settings)
            if plan is None:
                return False
            self.plan = plan
            self.log.info("dial plan reloaded: %s version %s", plan.name, plan.version)
            return True

    async def _prepare_plan(self, settings: Settings) -> tuple[DialPlan | None, str | None]:
        """The plan file loaded against ``settings``, its speech engine loaded and
        its prompts built (new calls get them); or None and why (logged), the
        running plan kept."""
        running = self.plan.version if self.plan else "-"
        try:
            plan = self._load_plan(settings)
            await self._load_speech(plan)
            await self.prompts.build(self._prompt_texts(plan, settings), plan.dialect_prompts)
        except DialPlanError as exc:
            self.log.error("dial plan reload failed, keeping version %s:\n%s", running, exc)
            return None, str(exc)
        except Exception as exc:
            self.log.error("dial plan reload failed (prompts), keeping the running plan: %s", exc)
            return None, f"prompts: {exc}"
        return plan, None

    async def reload(self) -> ReloadResult:
        """What SIGHUP does: read config.toml again, then the dial plan, and take
        what can change while calls go on.

        Raises ConfigError (logged, naming file, line and key as at start) and
        changes nothing when config.toml does not load, or when the dial plan
        file does not load and the running plan needs a queue the file removes.
        Otherwise the reloadable keys take effect (each logged), every other
        changed key is logged as needing a restart and keeps its running value,
        and the dial plan is reloaded against the new settings (if the plan file
        does not load, the running plan stays: ``plan_error``).
        """
        async with self._reloading:
            source = self.settings.source
            if source is None:  # built from settings made in code: only the plan
                plan, error = await self._prepare_plan(self.settings)
                if plan is not None:
                    self.plan = plan
                return ReloadResult((), (), self.plan.version if self.plan else None, error)
            try:
                change = await asyncio.to_thread(reload_settings, source, self.settings)
                configs = _queue_configs(change.settings)
                try:
                    OperatorDesk.check(configs)
                except ValueError as exc:
                    problem = ConfigProblem(None, "queues", str(exc))
                    raise ConfigError(source, [problem]) from None
                plan, plan_error = await self._prepare_plan(change.settings)
                if plan is None and self.plan is not None:
                    self._check_running_plan(self.plan, change, plan_error or "")
            except ConfigError as exc:
                self.log.error(
                    "config reload failed; nothing changed (settings, dial plan %s; calls go "
                    "on):\n%s",
                    self.plan.version if self.plan else "-",
                    exc,
                )
                raise
            self._apply_settings(change, configs)
            await self.reload_duty_list()  # a bad one is logged, the running one kept
            map_error = await self.reload_district_map()  # the same
            if plan is not None:
                self.plan = plan
                self.log.info("dial plan reloaded: %s version %s", plan.name, plan.version)
            self.log.info(
                "config reloaded from %s: %d change(s) applied, %d need a restart",
                source,
                len(change.applied),
                len(change.needs_restart),
            )
            return ReloadResult(
                applied=tuple(c.key for c in change.applied),
                needs_restart=tuple(c.key for c in change.needs_restart),
                plan_version=self.plan.version if self.plan else None,
                plan_error=plan_error,
                map_error=map_error,
            )

    def _check_running_plan(self, plan: DialPlan, change: ConfigReload, why: str) -> None:
        """The plan file did not load, so ``plan`` goes on running: refuse a config
        that takes away a queue it transfers to."""
        used = {n.queue for n in plan.nodes.values() if isinstance(n, TransferNode)}
        lost = sorted(used - set(change.settings.queues))
        if not lost:
            return
        source = change.settings.source or Path("config.toml")
        problems = [
            ConfigProblem(
                None,
                f"queues.{name}",
                f"queues.{name} is removed, but the running dial plan (version {plan.version}) "
                f"transfers to it and {change.settings.dialplan.file} does not load to replace "
                f"it: keep the queue, or fix the dial plan and reload both ({why.strip()})",
            )
            for name in lost
        ]
        raise ConfigError(source, problems)

    def _apply_settings(self, change: ConfigReload, queues: Mapping[str, QueueConfig]) -> None:
        """Run with ``change.settings`` from now on (no await: all at once)."""
        new = change.settings
        self.desk.reconfigure(
            queues, ring_timeout=new.operators.ring_timeout, wrap_up=new.operators.wrap_up
        )
        self.settings = new  # read per call: sip limits, emergency, elderly, screen pop...
        self.listen = ListenSettings(
            end_silence=new.speech.end_silence,
            pre_roll=new.speech.pre_roll,
            vad_aggressiveness=new.speech.vad_aggressiveness,
        )
        if self._console is not None:
            self._console.duplicate_window = new.tickets.duplicate_window_days * 86400.0
        if self.work_orders is not None:
            wo = new.work_orders
            self.work_orders.reconfigure(url=wo.webhook, timeout=wo.timeout, retry_delays=wo.retry)
        if self.callback_queue is not None:
            self.callback_queue.policy = policy_from(new.callbacks)
            self._wake_callbacks()
        if self.followups is not None:
            self.followups.reconfigure(new)
        self.log.setLevel(new.logging.level)
        for c in change.applied:
            self.log.info("%s: %s (was %s): applied", change.where(c), c.describe(), c.old_text)
        for c in change.needs_restart:
            self.log.warning(
                "%s: %s needs a restart; running with %s until then",
                change.where(c),
                c.describe(),
                c.old_text,
            )

    async def _reload_json(self) -> dict[str, object]:
        return (await self.reload()).to_json()

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Drain, then close: INVITEs and OPTIONS get 503 (Kamailio sends new calls to
        other nodes), no new callback is dialled, calls in progress (callbacks too) go
        on for up to ``drain_timeout`` s or until ``drain_cut`` is set, then those left
        are ended (ivr/node.py)."""
        self.endpoint.accepting = False
        self.endpoint.refuse_reason = "Shutting Down"
        if self.roster is not None:
            self.roster.state = "draining"  # the next heartbeat says so
        dialler = self.callback_dialler
        if dialler is not None:
            dialler.stop_claiming()
        tasks = set(self._call_tasks) | (dialler.attempts if dialler is not None else set())
        if self.followups is not None:  # follow-up calls in progress finish like calls
            self.followups.stop_claiming()
            tasks |= self.followups.attempts
        if self.calls or tasks:
            self.log.info(
                "ivr: draining: waiting up to %.0f s for %d call(s)", drain_timeout, len(self.calls)
            )
            await wait_for_calls(
                tasks,
                timeout=drain_timeout,
                cut=self.drain_cut,
                left=lambda: len(self.calls),
                log=self.log,
            )
            pending = {task for task in tasks if not task.done()}
            for call in list(self.calls.values()):
                call.end(EndReason.SHUTDOWN)
            if pending:
                await asyncio.wait(pending, timeout=5.0)
            await self._cancel_unfinished(tasks)
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self._plan_follower is not None:
            self._plan_follower.cancel()
        await asyncio.sleep(0.1)  # let final BYEs leave
        if self.callback_dialler is not None:
            await self.callback_dialler.stop()
        if self.followups is not None:
            await self.followups.stop()
        if self.supervision is not None:
            await self.supervision.stop()  # the lease let go: another node goes on
        if self.quality is not None:
            await self.quality.stop()
        if self.spike_episodes is not None:
            await self.spike_episodes.stop()
        await self.api.stop()
        if self.work_orders is not None:
            await self.work_orders.stop()
        if self.transcriber is not None:
            self.transcriber.close()
        self.endpoint.close()
        self.clock.stop()
        await self.desk.detach()
        if self.event_relay is not None:
            await self.event_relay.stop()
        if self.call_commands is not None:
            await self.call_commands.stop()
        if self.consultations.board is not None:
            await self.consultations.board.stop()
        if self.lost_nodes is not None:
            await self.lost_nodes.stop()
        if self.call_progress is not None:
            await self.call_progress.stop()
        if self.pending_writes is not None:
            await self.pending_writes.stop()  # a last try; what is left is logged
        if self.store_watch is not None:
            await self.store_watch.stop()
        if self.roster is not None:
            await self.roster.stop()
        if self.db is not None:
            await self.db.close()
        self.stopped.set()
        self.log.info("ivr: stopped")

    async def _cancel_unfinished(self, tasks: set[asyncio.Task[None]]) -> None:
        """Calls still finishing their tickets (a transcription running after the
        caller hung up) when the drain is over are cancelled before the store
        closes: their tickets are already saved; what they would still add (a
        transcript, the case) is given up here and said in the log, rather than
        written to a closed store later."""
        unfinished = [task for task in tasks if not task.done()]
        if not unfinished:
            return
        self.log.warning(
            "ivr: %d call(s) still finishing their tickets at shutdown: given up",
            len(unfinished),
        )
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)

    def _health(self) -> dict[str, object]:
        """GET /api/health: the node, its state, the store; ``degraded`` while
        the store is unreachable (calls are still answered and put through)."""
        watch, roster = self.store_watch, self.roster
        store = watch.describe() if watch is not None else "not open"
        health: dict[str, object] = {
            "status": "degraded" if watch is not None and not watch.up else "ok",
            "node": roster.node_id if roster is not None else self.settings.node.id,
            "state": roster.state if roster is not None else "starting",
            "store": store,
            "calls": len(self.calls),
        }
        if watch is not None and watch.lost_at is not None:
            health["store_lost_at"] = watch.lost_at
        if self.pending_writes is not None:
            health["kept_writes"] = len(self.pending_writes)
        if self.desk.alone_since is not None:
            health["desk"] = "deciding alone"
        if self.shared_recordings is not None:
            health["recordings"] = self.shared_recordings.describe()
        return health

    # -- calls (their life: ivr/call_session.py) -----------------------------------
    async def _hangup_command(
        self, call_id: str, args: Mapping[str, Any], by: str
    ) -> dict[str, Any]:
        """The console's 挂断 (a command, ivr/call_commands.py): end the call."""
        call = self.calls.get(call_id)
        if call is None:
            raise CommandFailed("通话已结束")
        self.log.info("console: %s hangs up %s", by, call_id)
        call.end(EndReason.OPERATOR_HANGUP)
        return {"state": "ended"}

    def _on_invite(self, invite: IncomingInvite) -> None:
        assert self._call_parts is not None  # on_invite is set once they are built
        call = answer(self._call_parts, invite)
        if call is None:  # refused at once
            return
        task = asyncio.ensure_future(call)
        self._call_tasks.add(task)
        task.add_done_callback(self._call_tasks.discard)

    async def _start_calls(self) -> CallParts:
        """The parts every call is built from (the callback queue among them),
        the desk's conversation recording, then the callback dialler."""
        assert self.db is not None and self.records is not None
        assert self.tickets is not None and self.profiles is not None
        assert self.intake is not None
        cb = self.settings.callbacks
        policy = policy_from(cb)
        node = self.roster.node_id if self.roster is not None else None
        self.callback_queue = CallbackQueue(self.db, policy, node=node)
        parts = self._call_parts = CallParts(
            settings=lambda: self.settings,
            listen=lambda: self.listen,
            plan=lambda: self.plan,
            prompts=self.prompts,
            clock=self.clock,
            ports=self.ports,
            media_host=self.media_host,
            desk=self.desk,
            records=self.records,
            tickets=self.tickets,
            profiles=self.profiles,
            intake=self.intake,
            callback_queue=self.callback_queue,
            wake_callbacks=self._wake_callbacks,
            calls=self.calls,
            wall_clock=self.wall_clock,
            log=self.log,
            node=node,
            watch=self.store_watch,
            pending=self.pending_writes,
            metrics=self.metrics,
            enterprises=EnterpriseRegistry(self.db),
        )
        # calls in progress written as they go: whoever takes over after a kill
        # (a survivor, or this node alone when it starts again) reads their path
        self.call_progress = CallProgress(
            self.records, lambda: self.calls, log=self.log.getChild("calls")
        )
        self.call_progress.start()
        if self.roster is not None:
            self.lost_nodes = LostNodeWatch(
                self.db,
                self.roster,
                SharedLine(self.db, self.roster),
                lambda: self.callback_queue if self.settings.callbacks.enabled else None,
                on_callbacks=self._wake_callbacks,
                log=self.log.getChild("nodes"),
            )
            self.lost_nodes.start()
            watch = self.lost_nodes

            async def back_from_lost() -> None:  # cut off from the store, not dead
                await watch.back_from_lost(list(self.calls))

            self.roster.on_found_lost = back_from_lost
            if self._crashed_before:  # killed last time, and alone: its callers called back now
                await self.lost_nodes.take_over_own_past(crashed=True)
        consultations = self.consultations
        self.desk.on_bridged = lambda call, leg, operator: record_conversation(
            parts,
            call,
            leg,
            operator,
            on_recording=lambda r: consultations.recorded(call.call_id, r.right_from),
        )
        if not cb.enabled:
            return parts
        self.callback_dialler = CallbackDialler(
            queue=self.callback_queue,
            dialer=self.dialer,
            settings=cb,
            free_operators=lambda: self.desk.free_operators(callback_queue_name(self.settings)),
            start_call=lambda line, callback: call_back(parts, line, callback),
            flag_ticket=self._flag_ticket,
            clock=self.wall_clock,
            log=self.log.getChild("callbacks"),
        )
        self.desk.on_operator_free.append(self.callback_dialler.wake)
        await self.callback_dialler.start()
        return parts

    def _wake_callbacks(self) -> None:
        if self.callback_dialler is not None:
            self.callback_dialler.wake()

    async def _follow_published_plans(self) -> None:
        """A plan or a duty list published on another node is run here too."""
        failing = FailingRounds(self.log, "published plans not read")
        duty_failing = FailingRounds(self.log, "published duty lists not read")
        while True:
            await asyncio.sleep(PLAN_FOLLOW_EVERY_S)
            if self.plan_store is None:
                continue
            try:
                await self.plan_store.follow()
            except Exception as exc:  # the store is away: keep the running plan (said once)
                failing.failed(exc)
            else:
                failing.worked()
            if self.duty_lists is None:
                continue
            try:
                if await self.duty_lists.follow() is not None:
                    self._supervise_if_listed()
            except Exception as exc:  # the store is away: keep the running list (said once)
                duty_failing.failed(exc)
            else:
                duty_failing.worked()

    async def _flag_ticket(self, ticket_id: int, text: str) -> None:
        if self.tickets is not None:
            await self.tickets.add_note(ticket_id, text)
            ticket = await self.tickets.get(ticket_id)
            if ticket is not None:
                self.events.publish("updated", ticket.to_json())

    async def _recordings_shared(self) -> bool:
        """Whether every live node's recordings are in this node's recordings_dir."""
        share, roster = self.shared_recordings, self.roster
        if share is None or roster is None:
            return True
        try:
            alive = await roster.alive()
        except Exception:  # the store is away: keep what was known
            return share.shared
        return await asyncio.to_thread(share.check, alive)

    async def _purge_recordings_forever(self) -> None:
        loop = asyncio.get_running_loop()
        purge_at = loop.time()
        while True:
            shared = await self._recordings_shared()
            if loop.time() >= purge_at:
                purge_at = loop.time() + RECORDING_PURGE_EVERY_S
                await self._purge_recordings(forget_missing=shared)
            await asyncio.sleep(RECORDINGS_SHARE_CHECK_S)

    async def _purge_recordings(self, *, forget_missing: bool) -> None:
        days = self.settings.storage.recording_retention_days
        log = self.log.getChild("recordings")
        if self.tickets is not None:
            try:
                await purge_recordings(self.tickets, days, log, forget_missing=forget_missing)
            except Exception:
                self.log.exception("recordings: purge failed")
        if self.records is not None:
            try:
                await purge_conversations(self.records, days, log, forget_missing=forget_missing)
            except Exception:
                self.log.exception("conversations: purge failed")


def _queue_configs(settings: Settings) -> dict[str, QueueConfig]:
    """The operator desk's queues from config.toml's [queues.*] and dialect seats."""
    return {
        name: QueueConfig(
            q.operators,
            q.max_waiting,
            q.max_wait,
            skills={
                uri: settings.dialects.skills_of(uri)
                | (frozenset({ELDERLY_SKILL}) if uri in settings.elderly.seats else frozenset())
                for uri in q.operators
            },
            overflow_after=settings.dialects.overflow_after,
            elderly_overflow_after=settings.elderly.seat_overflow_after,
            target_answer=q.target_answer,
            overflow_to=q.overflow_to,
            overflow_to_after=q.overflow_to_after,
        )
        for name, q in settings.queues.items()
    }


async def serve(
    settings: Settings,
    log: logging.Logger,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop`` is set), then drain ([node]
    drain_timeout; a second SIGINT/SIGTERM ends the calls left at once); SIGHUP
    reloads config.toml and the dial plan (Hotline.reload)."""
    hotline = Hotline(settings, log)
    try:
        await hotline.start()
    except BaseException:
        # close what did start (the database's thread, the web server, the
        # speech workers): left open, they keep the process from exiting
        with contextlib.suppress(Exception):
            await hotline.stop(drain_timeout=0.0)
        raise
    loop = asyncio.get_running_loop()
    stop_requested = stop or asyncio.Event()
    reloads: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        try:
            await hotline.reload()
        except ConfigError:
            pass  # logged; the running setup goes on
        except Exception:
            log.exception("reload failed; the running setup goes on")

    def on_sighup() -> None:
        task = asyncio.ensure_future(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    def on_stop() -> None:
        if stop_requested.is_set():
            hotline.drain_cut.set()  # asked again: do not wait for the calls
        stop_requested.set()

    handled: list[signal.Signals] = []
    for signum, handler in (
        (signal.SIGINT, on_stop),
        (signal.SIGTERM, on_stop),
        (signal.SIGHUP, on_sighup),
    ):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, handler)
            handled.append(signum)
    try:
        if ready is not None:
            ready.set()
        await stop_requested.wait()
        if reloads:
            await asyncio.wait(reloads, timeout=30.0)
        await hotline.stop(drain_timeout=hotline.settings.node.drain_timeout)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def default_config_path() -> Path:
    return Path("config.toml")
