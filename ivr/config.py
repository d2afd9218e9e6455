"""config.toml -> typed, validated settings.

``load_settings(path)`` reads the TOML file, checks every key (type, range,
syntax, unknown keys) and returns frozen dataclasses.  Every problem found is
reported at once in one ``ConfigError``, each line in the form

    config.toml:4: sip.port = 99999: must be an integer 1..65535

naming the file, the line where the key is (best effort: found by scanning
the source text), the dotted key, what is wrong and how to fix it.

Relative paths in the file are resolved against the config file's folder;
the dataclass defaults are relative paths that ``load_settings`` resolves the
same way.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivr.dialects import DIALECT_ALIASES, DIALECTS, ESPEAK_VOICES, MANDARIN
from ivr.toml_lines import KeyLines, TomlSyntaxError, located, parse

CODECS: tuple[str, ...] = ("PCMU", "PCMA")
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS: tuple[str, ...] = ("json", "text")

_DIALECT_GROUPS = DIALECT_ALIASES
_EXAMPLE_OPERATOR = "sip:operator@127.0.0.1:5080"
_MAX_SHOWN = 80  # characters of a bad value quoted back in a message

_QUEUE_NAME = re.compile(r"[a-z0-9_]{1,64}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_SIP_URI = re.compile(
    r"sip:(?P<user>[A-Za-z0-9\-_.!~*'()&=+$,%]+)@(?P<host>\[[^\]]*\]|[^:@\[\]]+):(?P<port>[0-9]+)"
    r"(?:;transport=(?i:udp|tcp))?"  # ;transport=tcp: dialled over TCP (RFC 3261 19.1.1)
)
_ESPEAK_VOICE = re.compile(r"[A-Za-z0-9_+\-]+")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")


# --------------------------------------------------------------------- settings


@dataclass(frozen=True)
class InboundAuthSettings:
    """[sip.inbound_auth]: digest credentials a caller's INVITE must carry."""

    realm: str
    users: Mapping[str, str]  # user name -> password
    nonce_lifetime: float = 300.0  # seconds a challenge's nonce is good for


@dataclass(frozen=True)
class SipSettings:
    host: str = "127.0.0.1"
    port: int = 5060
    public_host: str = ""  # "" = same as host
    rtp_host: str = ""  # "" = same as host
    rtp_port_min: int = 20000
    rtp_port_max: int = 29999
    rtp_timeout: float = 30.0
    answer_delay: float = 0.0  # seconds of ringing (180) before the IVR answers
    inband_dtmf: bool = True  # listen for key tones in the audio (Goertzel) as a fallback
    max_calls: int = 1000
    # SIP over TCP beside UDP on host:port (ivr/sip/stream_transport.py)
    tcp: bool = True
    tcp_max_connections: int = 1000  # open TCP connections at once; more are refused
    tcp_idle_timeout: float = 300.0  # s a connection carrying no call may stay quiet
    user_agent: str = "12345-hotline-ivr"
    codecs: tuple[str, ...] = CODECS
    # networks (CIDR) the caller's RTP may also come from, e.g. a carrier SBC's media range
    trunk_networks: tuple[str, ...] = ()
    # the edge (ivr/sip/edge_guard.py): sources (CIDR) that may send requests; others
    # get 403 or nothing (refuse); per source a request rate and calls in progress,
    # beyond them 503 or nothing (over_limit); digest auth of inbound INVITEs
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    refuse: str = "403"  # "403" | "silence"
    requests_per_second: float = 100.0
    request_burst: int = 200
    calls_per_source: int = 0  # 0 = no limit of its own (max_calls still applies)
    over_limit: str = "503"  # "503" | "silence"
    inbound_auth: InboundAuthSettings | None = None

    @property
    def contact_host(self) -> str:
        """The address put in Contact headers and SDP."""
        return self.public_host or self.host

    @property
    def media_host(self) -> str:
        """The address RTP sockets bind to."""
        return self.rtp_host or self.host


@dataclass(frozen=True)
class DialplanSettings:
    file: Path = Path("dialplans/12345.toml")


@dataclass(frozen=True)
class PromptSettings:
    voices_dir: Path = Path("voices")
    cache_dir: Path = Path("var/prompt-cache")
    dialect: str = MANDARIN  # the default dialect (callers hear it until they choose another)
    espeak_speed: int = 150


@dataclass(frozen=True)
class DialectSettings:
    offered: tuple[str, ...] = (MANDARIN, "yue")  # groups callers may choose
    # espeak-ng voice per dialect for prompts with no recording; others fall back to mandarin
    voices: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(dict(ESPEAK_VOICES)))
    # dialect -> operators (SIP URIs, each in some [queues.*]) who speak it: the dialect seats
    seats: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    overflow_after: float | None = 30.0  # s a dialect caller waits for a seat; None = for ever

    def skills_of(self, operator: str) -> frozenset[str]:
        return frozenset(d for d, uris in self.seats.items() if operator in uris)


@dataclass(frozen=True)
class StorageSettings:
    database: Path = Path("var/ivr.sqlite3")  # the SQLite file (when no PostgreSQL url)
    # [storage] url: "postgresql://user:password@host:port/dbname" (every node of a
    # cluster the same), else "" and the SQLite file above
    postgres_url: str = ""
    recordings_dir: Path = Path("var/recordings")
    recording_retention_days: int = 90
    # the caller and the operator, one stereo WAV a bridged call (recordings_dir/calls)
    record_conversations: bool = True

    @property
    def location(self) -> str | Path:
        """What ``ivr.store.open_store`` opens: the PostgreSQL URL or the SQLite file."""
        return self.postgres_url or self.database


# "scripted" recognises nothing: it hands out [speech] script's texts in turn
# (ivr/speech/scripted_engine.py), for tests and trials only
SPEECH_ENGINES: tuple[str, ...] = ("auto", "whisper", "vosk", "scripted")


@dataclass(frozen=True)
class SpeechSettings:
    engine: str = "auto"
    models_dir: Path = Path("asr_models")
    language: str = "zh"  # what callers speak (zh; another code for a non-Chinese model)
    workers: int = 2  # recognitions at once
    threads: int = 1  # CPU threads per recognition
    vad_aggressiveness: int = 2
    end_silence: float = 1.2
    pre_roll: float = 0.3
    # engine = "scripted" only: the texts utterances are heard as, in turn ("" after the last)
    script: tuple[str, ...] = ()


@dataclass(frozen=True)
class TicketSettings:
    taxonomy: Path | None = None  # None: the taxonomy bundled with the IVR
    gazetteer: Path = Path("gazetteer.toml")
    screen_pop_wait: float = 2.0
    duplicate_window_days: int = 7  # an operator is shown open tickets this recent as duplicates


@dataclass(frozen=True)
class MergingSettings:
    """[merging]: a saved ticket of the same matter joins the open case (ivr/tickets/cases.py)."""

    enabled: bool = True
    window_hours: float = 36.0  # since a case's latest report, a new report may join it
    burst_hours: float = 3.0  # an outage reported again this soon joins at street level
    area_categories: tuple[str, ...] = ("供水", "供电", "燃气", "供暖")  # outages of an area


@dataclass(frozen=True)
class QualitySettings:
    """[quality]: quality inspection (双重质检, ivr/quality/): each day's recorded
    conversations sampled at random, checked automatically, scored by reviewers."""

    enabled: bool = True
    share: float = 0.05  # of a day's recorded conversations sampled (at least one if any)
    seed: str | None = None  # None: a fresh random draw; a value: the same picks for a day
    days_back: int = 7  # ended days not yet sampled are caught up this far back
    check_every: float = 300.0  # s between rounds (on the node holding the lease "quality")
    silence_s: float = 10.0  # both sides silent this long mid-conversation: a long silence
    talk_over_s: float = 2.0  # both sides speaking at once this long: talk-over
    speech_level_db: float = -45.0  # a 20 ms frame louder than this (dBFS) is speech
    greeting_words: tuple[str, ...] = ("您好", "你好", "12345", "很高兴为您服务")
    closing_words: tuple[str, ...] = ("再见", "感谢来电", "感谢您的来电", "谢谢", "祝您")


@dataclass(frozen=True)
class DispatchSettings:
    """[dispatch]: tickets sent to departments by the duty list (权责清单), and
    graded supervision of their time limits (ivr/tickets/dispatch.py, supervision.py)."""

    duty_list: Path | None = None  # None: no dispatch (the console says so)
    warn_share: float = 0.8  # level 1 (初级预警) once this share of the time limit is used
    check_every: float = 30.0  # s between supervision rounds (on the node holding the lease)


@dataclass(frozen=True)
class SituationSettings:
    """[situation]: the situation map's shapes and the spike alert's rule
    (ivr/tickets/situation.py, ivr/tickets/district_map.py)."""

    map: Path | None = None  # a GeoJSON file of the districts; None: a grid of squares
    window_hours: float = 24.0  # a spike is counted over this many hours back from now
    baseline_days: int = 14  # against the same hours on each of this many days before
    min_count: int = 5  # at least this many tickets in the window
    sd_factor: float = 3.0  # and more than mean + sd_factor x sd of the baseline
    ratio: float = 2.0  # and at least ratio x its mean


@dataclass(frozen=True)
class EmergencySettings:
    police: str = ""  # 110: violence
    fire: str = ""  # 119: fire, gas leak
    ambulance: str = ""  # 120: someone collapsed, bleeding...

    def uri_for(self, service: str) -> str:
        return {"110": self.police, "119": self.fire, "120": self.ambulance}.get(service, "")


@dataclass(frozen=True)
class ConsultationSettings:
    """[consultation]: departments and experts an operator brings into a call (多方协同)."""

    # name -> SIP URI, in file order (the console lists them; *7N on the operator's phone)
    directory: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ring_timeout: float = 30.0  # s a department may ring before the operator is told
    silent_after: float = 15.0  # s without RTP from a party brought in: dropped


COUNSELLOR_CONNECTING = "正在为您转接心理援助专线，请不要挂机。"
COUNSELLOR_BUSY = "心理咨询师正在通话中，先为您转接人工坐席，请不要挂机。"


@dataclass(frozen=True)
class CounsellorSettings:
    """[counsellors]: a caller who said words of distress (心理援助) is put
    through to the counsellors' queue; the operator may bring one in."""

    queue: str = ""  # the [queues.*] of counsellors; "" = callers are not routed by distress
    # s a caller waits for a counsellor before the queue they were going to (said so)
    wait: float = 30.0
    # s a transfer waits for the caller's words still being transcribed before it chooses
    wait_for_words: float = 5.0
    # the [consultation] directory entry the console's 请心理咨询师 button rings ("" = none)
    consult: str = ""
    connecting: str = COUNSELLOR_CONNECTING  # said before the counsellors' queue
    busy: str = COUNSELLOR_BUSY  # said when no counsellor came within ``wait``


@dataclass(frozen=True)
class WorkOrderSettings:
    webhook: str = ""  # "" = do not post
    timeout: float = 5.0
    retry: tuple[float, ...] = (0.0, 10.0, 60.0, 300.0)


CALLBACK_GREETING = "您好，这里是幺二三四五热线，您刚才的来电中断了，现在为您接通人工服务。"


@dataclass(frozen=True)
class CallbackSettings:
    enabled: bool = True
    dial_uri: str = "sip:{number}@127.0.0.1:5070"  # the trunk; {number} is the caller's number
    caller_id: str = "12345"
    username: str = ""  # digest credentials for the trunk ("" = none)
    password: str = ""
    ring_timeout: float = 30.0
    retry: tuple[float, ...] = (0.0, 60.0, 300.0)
    quiet_hours: str = "22:00-07:00"  # "" = none
    timezone: str = "Asia/Shanghai"
    max_attempts_per_hour: int = 3
    customer_first: bool = False
    max_dialing: int = 4
    queue: str = ""  # operator queue for called-back callers; "" = the first queue
    greeting: str = CALLBACK_GREETING


@dataclass(frozen=True)
class FollowupSettings:
    """[followups]: a follow-up call (回访) after every closed ticket (ivr/followups)."""

    enabled: bool = False
    plan: Path = Path("dialplans/followup.toml")  # the survey's dial plan
    dial_uri: str = ""  # the trunk, {number} in it; "" = [callbacks] dial_uri
    caller_id: str = ""  # "" = [callbacks] caller_id
    ring_timeout: float = 30.0
    retry: tuple[float, ...] = (0.0, 1800.0, 7200.0)  # as [callbacks] retry
    quiet_hours: str = "20:00-09:00"  # "" = none
    timezone: str = "Asia/Shanghai"
    max_attempts_per_hour: int = 2
    max_dialing: int = 4  # ringing or in a survey at once, on every node together


@dataclass(frozen=True)
class ElderlySettings:
    speed: float = 0.8  # prompts slowed to this speed (pitch kept), 0.5..1.0
    speeds: tuple[float, ...] = (0.8, 0.65)  # slow speeds a caller may choose (speed included)
    timeout_factor: float = 1.5  # menu key timeouts are this many times longer
    end_silence: float = 2.0  # seconds of silence that end an utterance
    # 老年人专席: operators (each in some [queues.*]) who take callers in the elderly
    # service first; such a caller waits seat_overflow_after s for one, then any operator
    seats: tuple[str, ...] = ()
    seat_overflow_after: float = 20.0


@dataclass(frozen=True)
class EnterpriseSettings:
    """[enterprise]: 企业专席. Callers whose number is in the enterprise registry
    (ivr/enterprises.py) or who chose 企业服务 are transferred to ``queue``."""

    queue: str = ""  # the [queues.*] of the enterprise seats; "" = as the dial plan says


@dataclass(frozen=True)
class WebSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    secure_cookie: bool = False  # true behind HTTPS: the session cookie is sent only over it
    # source networks (CIDR) that may use the console and API; others get 403
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # GET /metrics without log-in from these networks; from elsewhere with
    # "Authorization: Bearer <metrics_token>" (when set) or an admin's log-in
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    metrics_token: str = ""


@dataclass(frozen=True)
class OperatorSettings:
    ring_timeout: float = 15.0
    wrap_up: float = 0.0


@dataclass(frozen=True)
class QueueSettings:
    name: str
    operators: tuple[str, ...]
    max_waiting: int = 50
    max_wait: float = 300.0
    # seconds within which a caller should be answered (服务水平); 0 = none. A caller
    # waiting longer is logged and counted (/metrics ivr_queue_answered{within_target})
    target_answer: float = 0.0
    # another queue whose free operators a caller of this one may take once they have
    # waited overflow_to_after s (a free general operator takes an enterprise caller
    # whose target is near), when no caller of that queue is waiting for them; "" = none
    overflow_to: str = ""
    overflow_to_after: float = 0.0


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "json"


@dataclass(frozen=True)
class NodeSettings:
    """This process as one node of the hotline (docs/cluster.md)."""

    # `ivr serve` writes its pid here and holds a lock on it; `ivr drain` signals that pid
    pid_file: Path = Path("var/ivr.pid")
    # seconds a draining node (SIGTERM, `ivr drain`) waits for its calls before ending them
    drain_timeout: float = 600.0
    # this node's name among the nodes sharing one store ("" = host name:SIP address:port)
    id: str = ""


@dataclass(frozen=True)
class AuditSettings:
    """[audit]: who read which ticket or recording, exported or changed what
    (ivr/audit.py), and what counts as abnormal access."""

    # an account shown more tickets than this in an hour (one read, or each
    # ticket a search lists) is locked until an admin unlocks it; 0 = no limit
    ticket_reads_per_hour: int = 3000
    recording_plays_per_hour: int = 200  # utterances and conversations played; 0 = no limit
    exports_per_hour: int = 20  # CSV exports by one account; 0 = no limit
    # failed log-ins under this many different names from one address within
    # login_spray_window seconds (password spraying) lock that address out; 0 = never
    login_spray_names: int = 10
    login_spray_window: float = 600.0
    # roles that see whole phone numbers and transcripts in exports (others: 138****5678)
    see_personal: tuple[str, ...] = ("admin",)
    export_roles: tuple[str, ...] = ("admin",)  # roles that may export tickets as CSV
    # proxies (CIDR) whose X-Forwarded-For names the client; from any other peer
    # the peer's own address is the client's
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    queues: Mapping[str, QueueSettings]  # read-only, by queue name, in file order
    sip: SipSettings = field(default_factory=SipSettings)
    dialplan: DialplanSettings = field(default_factory=DialplanSettings)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    operators: OperatorSettings = field(default_factory=OperatorSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    speech: SpeechSettings = field(default_factory=SpeechSettings)
    tickets: TicketSettings = field(default_factory=TicketSettings)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    emergency: EmergencySettings = field(default_factory=EmergencySettings)
    consultation: ConsultationSettings = field(default_factory=ConsultationSettings)
    counsellors: CounsellorSettings = field(default_factory=CounsellorSettings)
    work_orders: WorkOrderSettings = field(default_factory=WorkOrderSettings)
    web: WebSettings = field(default_factory=WebSettings)
    callbacks: CallbackSettings = field(default_factory=CallbackSettings)
    elderly: ElderlySettings = field(default_factory=ElderlySettings)
    enterprise: EnterpriseSettings = field(default_factory=EnterpriseSettings)
    dialects: DialectSettings = field(default_factory=DialectSettings)
    node: NodeSettings = field(default_factory=NodeSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    followups: FollowupSettings = field(default_factory=FollowupSettings)
    merging: MergingSettings = field(default_factory=MergingSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    situation: SituationSettings = field(default_factory=SituationSettings)
    # the file these settings were read from (load_settings sets it; a reload reads it again)
    source: Path | None = field(default=None, compare=False)


# ----------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigProblem:
    line: int | None  # 1-based; None when the key is not in the file at all
    key: str | None  # dotted key; None for whole-file problems
    text: str  # "key = value: what is wrong; how to fix it"


class ConfigError(Exception):
    """The config file cannot be used; ``str()`` lists every problem found."""

    def __init__(self, path: Path, problems: Iterable[ConfigProblem]) -> None:
        self.path = path
        self.problems = tuple(sorted(problems, key=lambda p: p.line or 0))
        super().__init__("\n".join(self._format(p) for p in self.problems))

    def _format(self, problem: ConfigProblem) -> str:
        return located(self.path, problem.line, problem.text)


# ---------------------------------------------------------------------- loading


def load_settings(path: Path) -> Settings:
    """Read and validate ``path``; raise ConfigError naming every problem."""
    settings, _ = _load(path)
    return settings


def _load(path: Path) -> tuple[Settings, _Report]:
    """The settings in ``path`` and the report that knows each key's line."""
    text = _read_text(path)
    try:
        data = parse(text)
    except TomlSyntaxError as exc:
        raise _syntax_error(path, exc) from None
    report = _Report(path, KeyLines(text))
    settings = _settings(_Table(report, "", data), path.resolve().parent)
    report.raise_if_any()
    return replace(settings, source=path), report


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _file_error(path, "file not found; create it or pass the right path") from None
    except OSError as exc:
        raise _file_error(path, f"cannot be read ({exc.strerror}); check the path") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problem = ConfigProblem(line, None, "not valid UTF-8; save the file as UTF-8")
        raise ConfigError(path, [problem]) from None


def _file_error(path: Path, text: str) -> ConfigError:
    return ConfigError(path, [ConfigProblem(None, None, text)])


def _syntax_error(path: Path, exc: TomlSyntaxError) -> ConfigError:
    message = str(exc)
    if exc.line is not None:
        message = f"{exc.reason} (column {exc.column})"
    text = f"TOML syntax error: {message}; fix the syntax (see https://toml.io)"
    return ConfigError(path, [ConfigProblem(exc.line, None, text)])


class _Report:
    """Collects problems, each placed on its line of the source."""

    def __init__(self, path: Path, key_lines: KeyLines) -> None:
        self._path = path
        self._key_lines = key_lines
        self._problems: list[ConfigProblem] = []

    def add(self, key: str, text: str) -> None:
        self._problems.append(ConfigProblem(self.line_of(key), key, text))

    def line_of(self, key: str) -> int | None:
        """The key's own line, else its first sub-key's, else its table's."""
        path = key.split(".")
        lines = self._key_lines
        return lines.exact(path) or lines.first_inside(path) or lines.nearest(path[:-1])

    def raise_if_any(self) -> None:
        if self._problems:
            raise ConfigError(self._path, self._problems)


class _Table:
    """One TOML table being validated: typed getters that report problems.

    A getter that finds a problem reports it and returns the default, so that
    validation goes on and every problem is reported in one go.
    """

    def __init__(self, report: _Report, dotted: str, values: Mapping[str, object]) -> None:
        self._report = report
        self.dotted = dotted
        self._values = values
        self._known: list[str] = []
        self._failed: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.dotted}.{name}" if self.dotted else name

    def has(self, name: str) -> bool:
        return name in self._values

    def names(self) -> list[str]:
        return list(self._values)

    def ok(self, *names: str) -> bool:
        """No problem has been reported for any of ``names``."""
        return not self._failed.intersection(names)

    def fail(self, name: str, problem: str, *, secret: bool = False) -> None:
        """``secret``: the value is not shown (a token)."""
        self._failed.add(name)
        key = self.key(name)
        if name in self._values and not isinstance(self._values[name], dict) and not secret:
            self._report.add(key, f"{key} = {_show(self._values[name])}: {problem}")
        else:
            self._report.add(key, f"{key}: {problem}")

    def raw(self, name: str) -> object | None:
        """The value as TOML gave it (None when absent), for checks of its own."""
        return self._take(name)

    def _take(self, name: str) -> object | None:
        """The raw value, or None when absent (TOML has no null)."""
        self._known.append(name)
        return self._values.get(name)

    def table(self, name: str) -> _Table:
        value = self._take(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            header = self.key(name)
            self.fail(name, f"must be a table, not {_kind(value)}; write it as [{header}]")
            value = {}
        return _Table(self._report, self.key(name), value)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._take(name)
        if value is None:
            return default
        want = f"must be an integer {low}..{high}"
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"{want}, not {_kind(value)}{_unquote_hint(value)}")
            return default
        if not low <= value <= high:
            self.fail(name, want)
            return default
        return value

    def number(
        self,
        name: str,
        default: float,
        low: float,
        high: float,
        *,
        low_open: bool,
        what: str = "a number of seconds",
    ) -> float:
        """A float (an integer is accepted too) in low..high (seconds unless ``what``)."""
        value = self._take(name)
        if value is None:
            return default
        lower = f"> {low:g}" if low_open else f">= {low:g}"
        want = f"must be {what} {lower} and <= {high:g}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(name, f"{want}, not {_kind(value)}{_unquote_hint(value)}")
            return default
        number = float(value)
        too_low = number <= low if low_open else number < low
        if not math.isfinite(number) or too_low or number > high:
            self.fail(name, want)
            return default
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self._take(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, not {_kind(value)}{_unquote_hint(value)}")
            return default
        return value

    def string(self, name: str, default: str, *, empty_ok: bool = False) -> str:
        value = self._take(name)
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(name, f'must be a string, not {_kind(value)}; put it in "quotes"')
            return default
        if not value and not empty_ok:
            self.fail(name, "must not be empty")
            return default
        return value

    def choice(
        self,
        name: str,
        default: str,
        options: tuple[str, ...],
        *,
        aliases: Mapping[str, str] | None = None,
    ) -> str:
        """One of ``options``; ``aliases`` maps other names to the option meant."""
        value = self._take(name)
        if value is None:
            return default
        one_of = ", ".join(options)
        if not isinstance(value, str):
            self.fail(name, f"must be a string, one of {one_of}; not {_kind(value)}")
            return default
        if value not in options:
            meant = (aliases or {}).get(value.strip().lower())
            hint = f'; did you mean "{meant}"?' if meant else _did_you_mean(value, options)
            self.fail(name, f"must be one of {one_of}{hint}")
            return default
        return value

    def string_list(self, name: str) -> tuple[str, ...] | None:
        """A non-empty array of strings without duplicates; None when absent or bad."""
        value = self._take(name)
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(name, f'must be an array of strings like ["a", "b"], not {_kind(value)}')
            return None
        if not value:
            self.fail(name, "must list at least one entry")
            return None
        for item in value:
            if not isinstance(item, str):
                self.fail(name, f"must contain only strings; {_show(item)} is {_kind(item)}")
                return None
        strings = tuple(str(item) for item in value)
        repeated = sorted({s for s in strings if strings.count(s) > 1})
        if repeated:
            self.fail(name, f"lists {_show(repeated[0])} more than once; remove the repeat")
            return None
        return strings

    def networks(self, name: str) -> tuple[str, ...]:
        """An array of IP networks in CIDR notation ("10.0.0.0/8", "2001:db8::/32";
        a bare address is one host), possibly empty; as normalised strings."""
        value = self._take(name)
        if value is None:
            return ()
        example = '["203.0.113.0/24", "2001:db8::/32"]'
        if not isinstance(value, list):
            self.fail(name, f"must be an array of networks like {example}, not {_kind(value)}")
            return ()
        networks: list[str] = []
        for item in value:
            if not isinstance(item, str):
                self.fail(
                    name,
                    f"must contain only strings like {example}; {_show(item)} is {_kind(item)}",
                )
                return ()
            try:
                network = ipaddress.ip_network(item.strip(), strict=True)
            except ValueError:
                try:
                    meant = ipaddress.ip_network(item.strip(), strict=False)
                except ValueError:
                    self.fail(
                        name,
                        f"{_show(item)} is not an IP network in CIDR notation "
                        f"(address/prefix length), e.g. {example}",
                    )
                    return ()
                self.fail(name, f'{_show(item)} has host bits set; did you mean "{meant}"?')
                return ()
            if str(network) in networks:
                self.fail(name, f"lists {_show(item)} more than once; remove the repeat")
                return ()
            networks.append(str(network))
        return tuple(networks)

    def seconds_list(
        self, name: str, default: tuple[float, ...], low: float, high: float
    ) -> tuple[float, ...]:
        """A non-empty array of numbers of seconds in low..high."""
        value = self._take(name)
        if value is None:
            return default
        numbers: list[float] = []
        if isinstance(value, list):
            for x in value:
                if isinstance(x, int | float) and not isinstance(x, bool) and low <= x <= high:
                    numbers.append(float(x))
        if not numbers or not isinstance(value, list) or len(numbers) != len(value):
            self.fail(
                name, f"must be an array of seconds, each {low:g}..{high:g}, e.g. [0, 10, 60]"
            )
            return default
        return tuple(numbers)

    def path(self, name: str, default: Path, base: Path) -> Path:
        text = self.string(name, "")
        relative = Path(text) if text else default
        return relative if relative.is_absolute() else base / relative

    def host(self, name: str, default: str, *, empty_ok: bool = False) -> str:
        value = self.string(name, default, empty_ok=empty_ok)
        if value and not _valid_host(value):
            self.fail(name, "must be an IP address or a host name, such as 127.0.0.1")
            return default
        return value

    def reject_unknown(self) -> None:
        """Report every key that no getter asked for (typos)."""
        for name in self._values:
            if name in self._known:
                continue
            kind = "table" if isinstance(self._values[name], dict) else "key"
            where = f" in [{self.dotted}]" if self.dotted else ""
            known = ", ".join(self._known)
            self.fail(
                name,
                f"unknown {kind}{_did_you_mean(name, self._known)} (valid keys{where}: {known})",
            )


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return "a date/time"
    return type(value).__name__


def _show(value: object) -> str:
    """A value written back the way TOML spells it, shortened if long."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, list):
        text = "[" + ", ".join(_show(item) for item in value) + "]"
    elif isinstance(value, dict):
        text = "{...}"
    else:
        text = str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _unquote_hint(value: object) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return "; write the number without quotes"
    return ""


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    by_folded = {option.lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(by_folded), n=1, cutoff=0.6)
    return f'; did you mean "{by_folded[close[0]]}"?' if close else ""


def _valid_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return _HOSTNAME.fullmatch(text) is not None
    return True


def _sip_uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not a usable sip:user@host:port[;transport=tcp], or None if it is."""
    shape = (
        f"must look like sip:user@host:port, e.g. {_EXAMPLE_OPERATOR} "
        "(with ;transport=tcp to call it over TCP)"
    )
    match = _SIP_URI.fullmatch(uri)
    if match is None:
        return shape
    host = match["host"]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{shape}; {host} is not an IPv6 address"
    elif not _valid_host(host):
        return f"{shape}; {host!r} is not a host name or IP address"
    if not 1 <= int(match["port"]) <= 65535:
        return f"{shape}; the port must be 1..65535"
    return None


# --------------------------------------------------------------- the sections


def _settings(root: _Table, base: Path) -> Settings:
    sip = _sip(root.table("sip"))
    dialplan = _dialplan(root.table("dialplan"), base)
    prompts = _prompts(root.table("prompts"), base)
    storage = _storage(root.table("storage"), base)
    operators = _operators(root.table("operators"))
    queues = _queues(root, root.table("queues"))
    logging = _logging(root.table("logging"))
    speech = _speech(root.table("speech"), base)
    tickets = _tickets(root.table("tickets"), base)
    dispatch = _dispatch(root.table("dispatch"), base)
    emergency = _emergency(root.table("emergency"))
    consultation = _consultation(root.table("consultation"))
    counsellors = _counsellors(root.table("counsellors"), queues, consultation)
    work_orders = _work_orders(root.table("work_orders"))
    web = _web(root.table("web"))
    callbacks = _callbacks(root.table("callbacks"), queues)
    elderly = _elderly(root.table("elderly"), queues)
    enterprise = _enterprise(root.table("enterprise"), queues)
    dialects = _dialects(root.table("dialects"), prompts, queues)
    node = _node(root.table("node"), base)
    audit = _audit(root.table("audit"))
    followups = _followups(root.table("followups"), base)
    merging = _merging(root.table("merging"))
    quality = _quality(root.table("quality"))
    situation = _situation(root.table("situation"), base)
    root.reject_unknown()
    return Settings(
        queues=queues,
        sip=sip,
        dialplan=dialplan,
        prompts=prompts,
        storage=storage,
        operators=operators,
        logging=logging,
        speech=speech,
        tickets=tickets,
        dispatch=dispatch,
        emergency=emergency,
        consultation=consultation,
        counsellors=counsellors,
        work_orders=work_orders,
        web=web,
        callbacks=callbacks,
        elderly=elderly,
        enterprise=enterprise,
        dialects=dialects,
        node=node,
        audit=audit,
        followups=followups,
        merging=merging,
        quality=quality,
        situation=situation,
    )


def _followups(t: _Table, base: Path) -> FollowupSettings:
    d = FollowupSettings()
    enabled = t.boolean("enabled", d.enabled)
    plan = t.path("plan", d.plan, base)
    dial_uri = t.string("dial_uri", d.dial_uri, empty_ok=True)
    if (
        dial_uri
        and t.ok("dial_uri")
        and (
            "{number}" not in dial_uri
            or _sip_uri_problem(dial_uri.replace("{number}", "1")) is not None
        )
    ):
        t.fail(
            "dial_uri",
            'must be a SIP URI with {number} in it, e.g. "sip:{number}@10.0.0.5:5060", '
            'or "" for [callbacks] dial_uri',
        )
        dial_uri = d.dial_uri
    caller_id = t.string("caller_id", d.caller_id, empty_ok=True)
    user = re.compile(r"\+?[0-9A-Za-z_.-]{1,32}")
    if caller_id and t.ok("caller_id") and user.fullmatch(caller_id) is None:
        t.fail("caller_id", "must be a number or SIP user name (digits, letters, + _ . -)")
        caller_id = d.caller_id
    ring_timeout = t.number("ring_timeout", d.ring_timeout, 1, 600, low_open=False)
    retry = t.seconds_list("retry", d.retry, 0, 7 * 86400)
    quiet = t.string("quiet_hours", d.quiet_hours, empty_ok=True)
    if quiet and t.ok("quiet_hours") and _QUIET.fullmatch(quiet) is None:
        t.fail("quiet_hours", 'must be "HH:MM-HH:MM" (e.g. "20:00-09:00") or "" for none')
        quiet = d.quiet_hours
    timezone = t.string("timezone", d.timezone)
    if t.ok("timezone"):
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            t.fail("timezone", 'must be an IANA time zone such as "Asia/Shanghai"')
            timezone = d.timezone
    max_per_hour = t.integer("max_attempts_per_hour", d.max_attempts_per_hour, 1, 100)
    max_dialing = t.integer("max_dialing", d.max_dialing, 1, 1000)
    t.reject_unknown()
    return FollowupSettings(
        enabled=enabled,
        plan=plan,
        dial_uri=dial_uri,
        caller_id=caller_id,
        ring_timeout=ring_timeout,
        retry=retry,
        quiet_hours=quiet,
        timezone=timezone,
        max_attempts_per_hour=max_per_hour,
        max_dialing=max_dialing,
    )


def _audit(t: _Table) -> AuditSettings:
    d = AuditSettings()
    ticket_reads = t.integer("ticket_reads_per_hour", d.ticket_reads_per_hour, 0, 10_000_000)
    plays = t.integer("recording_plays_per_hour", d.recording_plays_per_hour, 0, 10_000_000)
    exports = t.integer("exports_per_hour", d.exports_per_hour, 0, 1_000_000)
    spray_names = t.integer("login_spray_names", d.login_spray_names, 0, 100_000)
    spray_window = t.number(
        "login_spray_window", d.login_spray_window, 0, 7 * 86400, low_open=True
    )
    roles = ("operator", "admin")
    chosen: dict[str, tuple[str, ...]] = {}
    for name, default in (("see_personal", d.see_personal), ("export_roles", d.export_roles)):
        raw = t.raw(name)
        if raw is None:
            chosen[name] = default
        elif not isinstance(raw, list) or any(r not in roles for r in raw):
            listed = ", ".join(roles)
            t.fail(name, f'must be an array of roles ({listed}), e.g. ["admin"]; [] = none')
            chosen[name] = default
        else:
            chosen[name] = tuple(dict.fromkeys(str(r) for r in raw))
    proxies = t.networks("trusted_proxies")
    t.reject_unknown()
    return AuditSettings(
        ticket_reads_per_hour=ticket_reads,
        recording_plays_per_hour=plays,
        exports_per_hour=exports,
        login_spray_names=spray_names,
        login_spray_window=spray_window,
        see_personal=chosen["see_personal"],
        export_roles=chosen["export_roles"],
        trusted_proxies=proxies,
    )


def _node(t: _Table, base: Path) -> NodeSettings:
    d = NodeSettings()
    pid_file = t.path("pid_file", d.pid_file, base)
    drain_timeout = t.number("drain_timeout", d.drain_timeout, 0, 86400, low_open=False)
    node_id = t.string("id", d.id, empty_ok=True)
    if len(node_id) > 200:
        t.fail("id", "must be at most 200 characters")
        node_id = d.id
    t.reject_unknown()
    return NodeSettings(pid_file=pid_file, drain_timeout=drain_timeout, id=node_id)


def _elderly(t: _Table, queues: Mapping[str, QueueSettings]) -> ElderlySettings:
    d = ElderlySettings()
    speed = t.number("speed", d.speed, 0.5, 1.0, low_open=False, what="a speed")
    factor = t.number("timeout_factor", d.timeout_factor, 1.0, 4.0, low_open=False, what="a factor")
    end_silence = t.number("end_silence", d.end_silence, 0.3, 5.0, low_open=False)
    speeds = _speeds(t, d.speeds)
    seats = tuple(t.string_list("seats") or ())
    operators = {uri for q in queues.values() for uri in q.operators}
    for uri in seats:
        if uri not in operators:
            t.fail(
                "seats", f"{_show(uri)} is not an operator of any [queues.*]; add it there first"
            )
            seats = ()
            break
    after = t.number("seat_overflow_after", d.seat_overflow_after, 0, 3600, low_open=False)
    t.reject_unknown()
    if speed not in speeds:
        speeds = (speed, *speeds)
    return ElderlySettings(
        speed=speed,
        speeds=speeds,
        timeout_factor=factor,
        end_silence=end_silence,
        seats=seats,
        seat_overflow_after=after,
    )


def _enterprise(t: _Table, queues: Mapping[str, QueueSettings]) -> EnterpriseSettings:
    d = EnterpriseSettings()
    queue = t.string("queue", d.queue, empty_ok=True)
    if queue and t.ok("queue") and queues and queue not in queues:
        t.fail(
            "queue",
            f"is not a queue in this file; add [queues.{queue}] with the enterprise seats "
            f"(queues: {', '.join(queues)})",
        )
        queue = ""
    t.reject_unknown()
    return EnterpriseSettings(queue=queue)


def _speeds(t: _Table, default: tuple[float, ...]) -> tuple[float, ...]:
    value = t.raw("speeds")
    if value is None:
        return default
    want = "must be an array of speeds, each > 0.5 and < 1.0 (1.0 is normal), e.g. [0.8, 0.65]"
    if not isinstance(value, list) or not value:
        t.fail("speeds", want)
        return default
    speeds: list[float] = []
    for x in value:
        if isinstance(x, bool) or not isinstance(x, int | float) or not 0.5 <= x < 1.0:
            t.fail("speeds", f"{_show(x)} is not a speed we render; {want}")
            return default
        if float(x) not in speeds:
            speeds.append(float(x))
    return tuple(speeds)


def _dialects(
    t: _Table, prompts: PromptSettings, queues: Mapping[str, QueueSettings]
) -> DialectSettings:
    d = DialectSettings()
    offered = t.string_list("offered") or d.offered
    for dialect in offered:
        if dialect not in DIALECTS:
            meant = DIALECT_ALIASES.get(dialect.strip().lower())
            hint = f'; did you mean "{meant}"?' if meant else _did_you_mean(dialect, DIALECTS)
            t.fail(
                "offered", f"{_show(dialect)} is not a dialect group ({', '.join(DIALECTS)}){hint}"
            )
            offered = d.offered
            break
    if prompts.dialect not in offered:
        offered = (prompts.dialect, *offered)
    voices_table = t.table("voices")
    voices = dict(d.voices)
    for name in voices_table.names():
        if name not in DIALECTS:
            voices_table.raw(name)
            voices_table.fail(name, f"is not a dialect group ({', '.join(DIALECTS)})")
            continue
        voice = voices_table.string(name, voices.get(name, ""), empty_ok=True)
        if voice and _ESPEAK_VOICE.fullmatch(voice) is None:
            voices_table.fail(name, "must be an espeak-ng voice name such as yue")
            continue
        if voice:
            voices[name] = voice
        else:
            voices.pop(name, None)  # "" = no synthesis: recordings, else mandarin
    if MANDARIN not in voices:
        voices_table.fail(MANDARIN, "mandarin needs a voice: it is the last resort of every prompt")
        voices[MANDARIN] = ESPEAK_VOICES[MANDARIN]
    seats_table = t.table("seats")
    operators = {uri for q in queues.values() for uri in q.operators}
    seats: dict[str, tuple[str, ...]] = {}
    for name in seats_table.names():
        uris = seats_table.string_list(name)
        if name not in offered:
            seats_table.fail(
                name, f"is not an offered dialect (dialects.offered = {list(offered)})"
            )
            continue
        for uri in uris or ():
            if uri not in operators:
                seats_table.fail(
                    name, f"{_show(uri)} is not an operator of any [queues.*]; add it there first"
                )
                break
        else:
            if uris:
                seats[name] = uris
    overflow = t.boolean("overflow", True)
    after = t.number("overflow_after", 30.0, 0, 86400, low_open=False)
    overflow_after = after if overflow else None
    seatless = [d for d in offered if d not in (MANDARIN, prompts.dialect) and d not in seats]
    if not overflow and t.ok("overflow") and seatless:
        t.fail(
            "overflow",
            f"false, but {', '.join(seatless)} has no seat in [dialects.seats]: such callers "
            "could never be answered; add seats or set overflow = true",
        )
    seats_table.reject_unknown()
    voices_table.reject_unknown()
    t.reject_unknown()
    return DialectSettings(
        offered=offered,
        voices=MappingProxyType(voices),
        seats=MappingProxyType(seats),
        overflow_after=overflow_after,
    )


_QUIET = re.compile(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d")


def _callbacks(t: _Table, queues: Mapping[str, QueueSettings]) -> CallbackSettings:
    d = CallbackSettings()
    enabled = t.boolean("enabled", d.enabled)
    dial_uri = t.string("dial_uri", d.dial_uri)
    if t.ok("dial_uri") and (
        "{number}" not in dial_uri
        or _sip_uri_problem(dial_uri.replace("{number}", "1")) is not None
    ):
        t.fail(
            "dial_uri", 'must be a SIP URI with {number} in it, e.g. "sip:{number}@10.0.0.5:5060"'
        )
        dial_uri = d.dial_uri
    caller_id = t.string("caller_id", d.caller_id)
    if t.ok("caller_id") and re.fullmatch(r"\+?[0-9A-Za-z_.-]{1,32}", caller_id) is None:
        t.fail("caller_id", "must be a number or SIP user name (digits, letters, + _ . -)")
        caller_id = d.caller_id
    username = t.string("username", d.username, empty_ok=True)
    password = t.string("password", d.password, empty_ok=True)
    ring_timeout = t.number("ring_timeout", d.ring_timeout, 1, 600, low_open=False)
    retry = t.seconds_list("retry", d.retry, 0, 86400)
    quiet = t.string("quiet_hours", d.quiet_hours, empty_ok=True)
    if quiet and t.ok("quiet_hours") and _QUIET.fullmatch(quiet) is None:
        t.fail("quiet_hours", 'must be "HH:MM-HH:MM" (e.g. "22:00-07:00") or "" for none')
        quiet = d.quiet_hours
    timezone = t.string("timezone", d.timezone)
    if t.ok("timezone"):
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            t.fail("timezone", 'must be an IANA time zone such as "Asia/Shanghai"')
            timezone = d.timezone
    max_per_hour = t.integer("max_attempts_per_hour", d.max_attempts_per_hour, 1, 100)
    customer_first = t.boolean("customer_first", d.customer_first)
    max_dialing = t.integer("max_dialing", d.max_dialing, 1, 1000)
    queue = t.string("queue", d.queue, empty_ok=True)
    if queue and t.ok("queue") and queues and queue not in queues:
        t.fail("queue", f"is not a queue in this file; queues: {', '.join(queues)}")
        queue = ""
    greeting = t.string("greeting", d.greeting)
    t.reject_unknown()
    return CallbackSettings(
        enabled=enabled,
        dial_uri=dial_uri,
        caller_id=caller_id,
        username=username,
        password=password,
        ring_timeout=ring_timeout,
        retry=retry,
        quiet_hours=quiet,
        timezone=timezone,
        max_attempts_per_hour=max_per_hour,
        customer_first=customer_first,
        max_dialing=max_dialing,
        queue=queue,
        greeting=greeting,
    )


def _speech(t: _Table, base: Path) -> SpeechSettings:
    d = SpeechSettings()
    engine = t.choice("engine", d.engine, SPEECH_ENGINES)
    models_dir = t.path("models_dir", d.models_dir, base)
    language = t.string("language", d.language)
    if t.ok("language") and re.fullmatch(r"[a-z]{2,3}", language) is None:
        t.fail("language", 'must be a language code such as "zh"')
        language = d.language
    workers = t.integer("workers", d.workers, 1, 64)
    threads = t.integer("threads", d.threads, 1, 64)
    vad = t.integer("vad_aggressiveness", d.vad_aggressiveness, 0, 3)
    end_silence = t.number("end_silence", d.end_silence, 0.3, 5.0, low_open=False)
    pre_roll = t.number("pre_roll", d.pre_roll, 0.0, 2.0, low_open=False)
    script = _speech_script(t, engine)
    t.reject_unknown()
    return SpeechSettings(
        engine, models_dir, language, workers, threads, vad, end_silence, pre_roll, script
    )


def _speech_script(t: _Table, engine: str) -> tuple[str, ...]:
    """[speech] script: an array of texts (repeats and "" allowed), read by the
    scripted recogniser only."""
    value = t.raw("script")
    if value is None:
        return ()
    if engine != "scripted":
        if t.ok("engine"):
            t.fail("script", 'is read only by engine = "scripted" (tests and trials); remove it')
        return ()
    if not isinstance(value, list):
        t.fail("script", f'must be an array of texts like ["我叫王芳", "人工"], not {_kind(value)}')
        return ()
    for item in value:
        if not isinstance(item, str):
            t.fail("script", f"must contain only strings; {_show(item)} is {_kind(item)}")
            return ()
    return tuple(str(item) for item in value)


def _tickets(t: _Table, base: Path) -> TicketSettings:
    d = TicketSettings()
    taxonomy = t.path("taxonomy", Path("-"), base) if t.has("taxonomy") else None
    gazetteer = t.path("gazetteer", d.gazetteer, base)
    wait = t.number("screen_pop_wait", d.screen_pop_wait, 0, 30, low_open=False)
    window = t.integer("duplicate_window_days", d.duplicate_window_days, 1, 365)
    t.reject_unknown()
    return TicketSettings(
        taxonomy=taxonomy,
        gazetteer=gazetteer,
        screen_pop_wait=wait,
        duplicate_window_days=window,
    )


def _dispatch(t: _Table, base: Path) -> DispatchSettings:
    d = DispatchSettings()
    text = t.string("duty_list", "", empty_ok=True)  # "" = no dispatch
    duty_list = (Path(text) if Path(text).is_absolute() else base / text) if text else None
    warn_share = t.number("warn_share", d.warn_share, 0, 1, low_open=True, what="a share")
    check_every = t.number("check_every", d.check_every, 1, 3600, low_open=False)
    t.reject_unknown()
    return DispatchSettings(duty_list=duty_list, warn_share=warn_share, check_every=check_every)


def _merging(t: _Table) -> MergingSettings:
    d = MergingSettings()
    enabled = t.boolean("enabled", d.enabled)
    window = t.number("window_hours", d.window_hours, 0, 24 * 365, low_open=True)
    burst = t.number("burst_hours", d.burst_hours, 0, 24 * 365, low_open=False)
    if t.ok("window_hours", "burst_hours") and burst > window:
        t.fail("burst_hours", f"must be at most window_hours ({window:g}), not {burst:g}")
        burst = min(d.burst_hours, window)
    categories = t.string_list("area_categories")
    t.reject_unknown()
    return MergingSettings(
        enabled=enabled,
        window_hours=window,
        burst_hours=burst,
        area_categories=d.area_categories if categories is None else categories,
    )


def _quality(t: _Table) -> QualitySettings:
    d = QualitySettings()
    enabled = t.boolean("enabled", d.enabled)
    share = t.number("share", d.share, 0, 1, low_open=True, what="a share")
    seed: str | None = d.seed
    raw = t.raw("seed")
    if isinstance(raw, int) and not isinstance(raw, bool):
        seed = str(raw)
    elif isinstance(raw, str) and raw.strip():
        seed = raw.strip()
    elif raw is not None and raw != "":
        t.fail("seed", 'must be an integer or a string (the same picks each run), or "" for none')
    days_back = t.integer("days_back", d.days_back, 1, 366)
    check_every = t.number("check_every", d.check_every, 1, 86400, low_open=False)
    silence = t.number("silence_s", d.silence_s, 1, 600, low_open=False)
    talk_over = t.number("talk_over_s", d.talk_over_s, 0.2, 60, low_open=False)
    level = t.number("speech_level_db", d.speech_level_db, -90, -1, low_open=False, what="dBFS")
    greeting = t.string_list("greeting_words")
    closing = t.string_list("closing_words")
    t.reject_unknown()
    return QualitySettings(
        enabled=enabled,
        share=share,
        seed=seed,
        days_back=days_back,
        check_every=check_every,
        silence_s=silence,
        talk_over_s=talk_over,
        speech_level_db=level,
        greeting_words=d.greeting_words if greeting is None else greeting,
        closing_words=d.closing_words if closing is None else closing,
    )


def _situation(t: _Table, base: Path) -> SituationSettings:
    d = SituationSettings()
    text = t.string("map", "", empty_ok=True)  # "" = the grid
    drawn = (Path(text) if Path(text).is_absolute() else base / text) if text else None
    window = t.number("window_hours", d.window_hours, 0, 24, low_open=True, what="hours")
    days = t.integer("baseline_days", d.baseline_days, 1, 60)
    least = t.integer("min_count", d.min_count, 1, 100000)
    sd_factor = t.number("sd_factor", d.sd_factor, 0, 100, low_open=False, what="a number")
    ratio = t.number("ratio", d.ratio, 1, 100, low_open=False, what="a number")
    t.reject_unknown()
    return SituationSettings(
        map=drawn,
        window_hours=window,
        baseline_days=days,
        min_count=least,
        sd_factor=sd_factor,
        ratio=ratio,
    )


def _emergency(t: _Table) -> EmergencySettings:
    uris: dict[str, str] = {}
    for name in ("police", "fire", "ambulance"):
        uri = t.string(name, "", empty_ok=True)
        if uri and t.ok(name):
            problem = _sip_uri_problem(uri)
            if problem is not None:
                t.fail(name, problem)
                uri = ""
        uris[name] = uri
    t.reject_unknown()
    return EmergencySettings(**uris)


def _consultation(t: _Table) -> ConsultationSettings:
    d = ConsultationSettings()
    ring = t.number("ring_timeout", d.ring_timeout, 0, 300, low_open=True)
    silent = t.number("silent_after", d.silent_after, 0, 3600, low_open=True)
    entries = t.table("directory")
    directory: dict[str, str] = {}
    for name in entries.names():
        uri = entries.string(name, "")
        if not entries.ok(name):
            continue
        problem = _sip_uri_problem(uri) if name.strip() else "the name must not be blank"
        if problem is not None:
            entries.fail(name, problem)
            continue
        directory[name] = uri
    t.reject_unknown()
    return ConsultationSettings(
        directory=MappingProxyType(directory), ring_timeout=ring, silent_after=silent
    )


def _counsellors(
    t: _Table, queues: Mapping[str, QueueSettings], consultation: ConsultationSettings
) -> CounsellorSettings:
    d = CounsellorSettings()
    queue = t.string("queue", d.queue, empty_ok=True)
    if queue and t.ok("queue") and queues and queue not in queues:
        t.fail("queue", f"is not a queue in this file; queues: {', '.join(queues)}")
        queue = ""
    wait = t.number("wait", d.wait, 0, 3600, low_open=True)
    wait_for_words = t.number("wait_for_words", d.wait_for_words, 0, 60, low_open=False)
    consult = t.string("consult", d.consult, empty_ok=True)
    if consult and t.ok("consult") and consult not in consultation.directory:
        known = ", ".join(consultation.directory) or "none"
        t.fail(
            "consult",
            f"is not a name in [consultation] directory (names: {known}); add it there first",
        )
        consult = ""
    connecting = t.string("connecting", d.connecting)
    busy = t.string("busy", d.busy)
    t.reject_unknown()
    return CounsellorSettings(
        queue=queue,
        wait=wait,
        wait_for_words=wait_for_words,
        consult=consult,
        connecting=connecting,
        busy=busy,
    )


def _work_orders(t: _Table) -> WorkOrderSettings:
    d = WorkOrderSettings()
    webhook = t.string("webhook", d.webhook, empty_ok=True)
    if webhook and t.ok("webhook") and re.fullmatch(r"https?://[^\s/]+(/\S*)?", webhook) is None:
        t.fail("webhook", 'must be an http:// or https:// URL, or "" to post nothing')
        webhook = ""
    timeout = t.number("timeout", d.timeout, 0, 300, low_open=True)
    retry = t.seconds_list("retry", d.retry, 0, 86400)
    t.reject_unknown()
    return WorkOrderSettings(webhook=webhook, timeout=timeout, retry=retry)


def _web(t: _Table) -> WebSettings:
    d = WebSettings()
    enabled = t.boolean("enabled", d.enabled)
    host = t.host("host", d.host)
    port = t.integer("port", d.port, 0, 65535)
    secure_cookie = t.boolean("secure_cookie", d.secure_cookie)
    allow = _allow(t, d.allow)
    metrics_allow = t.networks("metrics_allow") if t.has("metrics_allow") else d.metrics_allow
    metrics_token = t.string("metrics_token", d.metrics_token, empty_ok=True)
    if t.ok("metrics_token") and metrics_token and not _METRICS_TOKEN.fullmatch(metrics_token):
        t.fail(
            "metrics_token",
            "must be at least 16 letters, digits or -._~+/= (e.g. the output of "
            "`openssl rand -hex 24`), or empty for none",
            secret=True,
        )
        metrics_token = ""
    t.reject_unknown()
    return WebSettings(
        enabled=enabled,
        host=host,
        port=port,
        secure_cookie=secure_cookie,
        allow=allow,
        metrics_allow=metrics_allow,
        metrics_token=metrics_token,
    )


_METRICS_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,}")


def _dialplan(t: _Table, base: Path) -> DialplanSettings:
    file = t.path("file", DialplanSettings().file, base)
    t.reject_unknown()
    return DialplanSettings(file=file)


def _storage(t: _Table, base: Path) -> StorageSettings:
    d = StorageSettings()
    database = t.path("database", d.database, base)
    postgres_url = ""
    if t.has("url"):
        url = t.string("url", "")
        if url.startswith(("postgresql://", "postgres://")):
            problem = _postgres_url_problem(url)
            if problem:
                t.fail("url", problem)
            else:
                postgres_url = url
        elif url:
            if t.has("database"):
                t.fail("url", "give the SQLite file as url or as database, not both")
            relative = Path(url)
            database = relative if relative.is_absolute() else base / relative
    recordings_dir = t.path("recordings_dir", d.recordings_dir, base)
    retention = t.integer("recording_retention_days", d.recording_retention_days, 1, 36500)
    conversations = t.boolean("record_conversations", d.record_conversations)
    t.reject_unknown()
    return StorageSettings(
        database=database,
        postgres_url=postgres_url,
        recordings_dir=recordings_dir,
        recording_retention_days=retention,
        record_conversations=conversations,
    )


def _postgres_url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid PostgreSQL URL ({exc})"
    if not parts.hostname:
        return "names no host: postgresql://user:password@host:5432/dbname"
    if not parts.path.strip("/"):
        return "names no database: postgresql://user:password@host:5432/dbname"
    if port == 0:
        return "port must be 1..65535"
    return None


def _sip(t: _Table) -> SipSettings:
    d = SipSettings()
    host = t.host("host", d.host)
    port = t.integer("port", d.port, 1, 65535)
    public_host = t.host("public_host", d.public_host, empty_ok=True)
    rtp_host = t.host("rtp_host", d.rtp_host, empty_ok=True)
    rtp_port_min = t.integer("rtp_port_min", d.rtp_port_min, 1, 65535)
    rtp_port_max = t.integer("rtp_port_max", d.rtp_port_max, 1, 65535)
    rtp_timeout = t.number("rtp_timeout", d.rtp_timeout, 0, 86400, low_open=True)
    answer_delay = t.number("answer_delay", d.answer_delay, 0, 30, low_open=False)
    inband_dtmf = t.boolean("inband_dtmf", d.inband_dtmf)
    max_calls = t.integer("max_calls", d.max_calls, 1, 100_000)
    tcp = t.boolean("tcp", d.tcp)
    tcp_max_connections = t.integer("tcp_max_connections", d.tcp_max_connections, 1, 1_000_000)
    tcp_idle_timeout = t.number("tcp_idle_timeout", d.tcp_idle_timeout, 0, 86400, low_open=True)
    user_agent = t.string("user_agent", d.user_agent)
    if t.ok("user_agent") and _PRINTABLE.fullmatch(user_agent) is None:
        t.fail("user_agent", "must not contain control characters (tabs, newlines)")
    codecs = _codecs(t)
    trunk_networks = t.networks("trunk_networks")
    allow = _allow(t, d.allow)
    refuse = t.choice("refuse", d.refuse, ("403", "silence"))
    rate = t.number(
        "requests_per_second", d.requests_per_second, 0, 1e6, low_open=True, what="a rate"
    )
    request_burst = t.integer("request_burst", d.request_burst, 1, 10_000_000)
    calls_per_source = t.integer("calls_per_source", d.calls_per_source, 0, 100_000)
    over_limit = t.choice("over_limit", d.over_limit, ("503", "silence"))
    inbound_auth = _inbound_auth(t)
    t.reject_unknown()

    ports = ("rtp_port_min", "rtp_port_max")
    if t.ok(*ports) and rtp_port_min >= rtp_port_max:
        if t.has("rtp_port_min"):
            t.fail("rtp_port_min", f"must be less than sip.rtp_port_max ({rtp_port_max})")
        else:
            t.fail("rtp_port_max", f"must be greater than sip.rtp_port_min ({rtp_port_min})")
    elif (
        t.ok("port", "host", "rtp_host", *ports)
        and (rtp_host or host) == host
        and rtp_port_min <= port <= rtp_port_max
    ):
        t.fail(
            "port",
            f"lies inside the RTP port range {rtp_port_min}..{rtp_port_max}; "
            "move sip.port or the RTP range so they do not overlap",
        )
    if t.ok("host", "public_host") and _is_unspecified(public_host or host):
        if t.has("public_host"):
            t.fail("public_host", "must be an address callers can reach, not a wildcard")
        else:
            t.fail(
                "host",
                "is a wildcard address: also set sip.public_host to an address callers "
                "can reach (it goes into Contact and SDP)",
            )
    return SipSettings(
        host=host,
        port=port,
        public_host=public_host,
        rtp_host=rtp_host,
        rtp_port_min=rtp_port_min,
        rtp_port_max=rtp_port_max,
        rtp_timeout=rtp_timeout,
        answer_delay=answer_delay,
        inband_dtmf=inband_dtmf,
        max_calls=max_calls,
        tcp=tcp,
        tcp_max_connections=tcp_max_connections,
        tcp_idle_timeout=tcp_idle_timeout,
        user_agent=user_agent,
        codecs=codecs,
        trunk_networks=trunk_networks,
        allow=allow,
        refuse=refuse,
        requests_per_second=rate,
        request_burst=request_burst,
        calls_per_source=calls_per_source,
        over_limit=over_limit,
        inbound_auth=inbound_auth,
    )


def _allow(t: _Table, default: tuple[str, ...]) -> tuple[str, ...]:
    """[sip] / [web] allow: the source networks let in; absent = loopback only."""
    if not t.has("allow"):
        return default
    allow = t.networks("allow")
    if t.ok("allow") and not allow:
        t.fail("allow", 'must list at least one network; to let anyone in: ["0.0.0.0/0", "::/0"]')
        return default
    return allow


def _inbound_auth(sip: _Table) -> InboundAuthSettings | None:
    if not sip.has("inbound_auth"):
        sip.raw("inbound_auth")
        return None
    t = sip.table("inbound_auth")
    realm = t.string("realm", "12345")
    if t.ok("realm") and (_PRINTABLE.fullmatch(realm) is None or '"' in realm):
        t.fail("realm", "must not contain quotes or control characters")
    lifetime = t.number("nonce_lifetime", 300.0, 1, 86400, low_open=False)
    users: dict[str, str] = {}
    raw = t.raw("users")
    example = '{ carrier = "a long secret" }'
    if raw is None:
        t.fail("users", f"is missing: name the users and passwords, e.g. users = {example}")
    elif not isinstance(raw, dict) or not raw:
        t.fail("users", f"must be a table of user names and passwords, e.g. {example}")
    else:
        for name, password in raw.items():
            if not isinstance(password, str) or not password:
                t.fail("users", f"{_show(name)}'s password must be a non-empty string")
                break
            if _PRINTABLE.fullmatch(name) is None or '"' in name:
                t.fail("users", f"{_show(name)} must not contain quotes or control characters")
                break
            users[name] = password
    t.reject_unknown()
    if not t.ok("realm", "users", "nonce_lifetime"):
        return None
    return InboundAuthSettings(realm=realm, users=MappingProxyType(users), nonce_lifetime=lifetime)


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _codecs(t: _Table) -> tuple[str, ...]:
    codecs = t.string_list("codecs")
    if codecs is None:
        return CODECS
    for codec in codecs:
        if codec not in CODECS:
            t.fail(
                "codecs",
                f"{_show(codec)} is not supported; use only {', '.join(CODECS)}"
                f"{_did_you_mean(codec, CODECS)}",
            )
            return CODECS
    return codecs


def _prompts(t: _Table, base: Path) -> PromptSettings:
    d = PromptSettings()
    voices_dir = t.path("voices_dir", d.voices_dir, base)
    cache_dir = t.path("cache_dir", d.cache_dir, base)
    dialect = t.choice("dialect", d.dialect, DIALECTS, aliases=_DIALECT_GROUPS)
    espeak_speed = t.integer("espeak_speed", d.espeak_speed, 80, 450)
    t.reject_unknown()
    return PromptSettings(
        voices_dir=voices_dir,
        cache_dir=cache_dir,
        dialect=dialect,
        espeak_speed=espeak_speed,
    )


def _operators(t: _Table) -> OperatorSettings:
    d = OperatorSettings()
    ring_timeout = t.number("ring_timeout", d.ring_timeout, 0, 600, low_open=True)
    wrap_up = t.number("wrap_up", d.wrap_up, 0, 3600, low_open=False)
    t.reject_unknown()
    return OperatorSettings(ring_timeout=ring_timeout, wrap_up=wrap_up)


def _queues(root: _Table, t: _Table) -> Mapping[str, QueueSettings]:
    queues: dict[str, QueueSettings] = {}
    tables: dict[str, _Table] = {}
    for name in t.names():
        if _QUEUE_NAME.fullmatch(name) is None:
            t.table(name)  # mark as known; its contents are not checked
            t.fail(
                name,
                "queue names may use only a-z, 0-9 and _ (at most 64); "
                f"rename [queues.{name}], e.g. to [queues.{_queue_name_hint(name)}]",
            )
            continue
        queue = t.table(name)
        if t.ok(name):
            queues[name] = _queue(name, queue)
            tables[name] = queue
    for name, q in queues.items():
        if not q.overflow_to:
            continue
        table = tables[name]
        if q.overflow_to == name or q.overflow_to not in queues:
            others = ", ".join(n for n in queues if n != name) or "none"
            table.fail("overflow_to", f"must name another queue of this file (others: {others})")
            queues[name] = replace(q, overflow_to="")
        elif q.overflow_to_after >= q.max_wait:
            table.fail(
                "overflow_to_after",
                f"must be less than max_wait ({q.max_wait:g}), or no caller ever overflows",
            )
    if not queues and t.ok(*t.names()):
        root.fail(
            "queues",
            "at least one operator queue is required; add a table [queues.general] "
            f'with operators = ["{_EXAMPLE_OPERATOR}"]',
        )
    return MappingProxyType(queues)


def _queue_name_hint(name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", name.lower())[:64] or "general"


def _queue(name: str, t: _Table) -> QueueSettings:
    d = QueueSettings(name=name, operators=())
    operators = t.string_list("operators")
    if operators is None and not t.has("operators"):
        t.fail(
            "operators",
            f'is required: list the operators\' SIP URIs, e.g. operators = ["{_EXAMPLE_OPERATOR}"]',
        )
    for uri in operators or ():
        problem = _sip_uri_problem(uri)
        if problem is not None:
            t.fail("operators", f"{_show(uri)} {problem}")
            break
    max_waiting = t.integer("max_waiting", d.max_waiting, 0, 100_000)
    max_wait = t.number("max_wait", d.max_wait, 0, 86400, low_open=True)
    target = t.number("target_answer", d.target_answer, 0, 86400, low_open=False)
    overflow_to = t.string("overflow_to", d.overflow_to, empty_ok=True)
    overflow_after = d.overflow_to_after
    if t.has("overflow_to_after"):
        overflow_after = t.number("overflow_to_after", 0.0, 0, 86400, low_open=False)
        if not overflow_to and t.ok("overflow_to_after"):
            t.fail("overflow_to_after", "is set but overflow_to is not; name the queue too")
    elif overflow_to and target > 0:
        overflow_after = round(target * 0.75, 1)  # "the target is near"
    elif overflow_to and t.ok("overflow_to"):
        t.fail(
            "overflow_to",
            "needs overflow_to_after (seconds of waiting) or target_answer (then 3/4 of it)",
        )
    t.reject_unknown()
    return QueueSettings(
        name=name,
        operators=operators or (),
        max_waiting=max_waiting,
        max_wait=max_wait,
        target_answer=target,
        overflow_to=overflow_to,
        overflow_to_after=overflow_after,
    )


def _logging(t: _Table) -> LoggingSettings:
    d = LoggingSettings()
    level = t.choice("level", d.level, LOG_LEVELS)
    format_ = t.choice("format", d.format, LOG_FORMATS)
    t.reject_unknown()
    return LoggingSettings(level=level, format=format_)


# -------------------------------------------------------------------- reloading

# What a running server takes from config.toml when told to reload (SIGHUP, or
# POST /api/admin/config/reload), as dotted keys; every [queues.*] key too.
# Any other key that changed needs a restart: it binds a socket (sip host/port,
# RTP range, web), opens a file or the database, loads a speech model or the
# prefill data, or was rendered into the prompts at start (dialects offered and
# their voices, elderly speeds, the callback greeting).  A key not listed is
# kept at its running value, so a new key is safe until someone wires it up.
RELOADABLE_KEYS: frozenset[str] = frozenset(
    {
        "sip.rtp_timeout",
        "sip.answer_delay",
        "sip.inband_dtmf",
        "sip.max_calls",
        "sip.trunk_networks",
        "operators.ring_timeout",
        "operators.wrap_up",
        "dialects.seats",
        "dialects.overflow_after",
        "emergency.police",
        "emergency.fire",
        "emergency.ambulance",
        "consultation.directory",
        "consultation.ring_timeout",
        "consultation.silent_after",
        "counsellors.queue",
        "counsellors.wait",
        "counsellors.wait_for_words",
        "counsellors.consult",
        "work_orders.webhook",
        "work_orders.timeout",
        "work_orders.retry",
        "tickets.screen_pop_wait",
        "tickets.duplicate_window_days",
        "dispatch.duty_list",
        "dispatch.warn_share",
        "dispatch.check_every",
        "situation.map",  # the file read again (a bad one keeps the running map)
        "situation.window_hours",
        "situation.baseline_days",
        "situation.min_count",
        "situation.sd_factor",
        "situation.ratio",
        "quality.enabled",
        "quality.share",
        "quality.seed",
        "quality.days_back",
        "quality.check_every",
        "quality.silence_s",
        "quality.talk_over_s",
        "quality.speech_level_db",
        "quality.greeting_words",
        "quality.closing_words",
        "storage.recording_retention_days",
        "storage.record_conversations",
        "speech.vad_aggressiveness",
        "speech.end_silence",
        "speech.pre_roll",
        "elderly.timeout_factor",
        "elderly.end_silence",
        "elderly.seats",
        "elderly.seat_overflow_after",
        "enterprise.queue",
        "callbacks.retry",
        "callbacks.quiet_hours",
        "callbacks.timezone",
        "callbacks.max_attempts_per_hour",
        "callbacks.customer_first",
        "callbacks.max_dialing",
        "callbacks.queue",
        "followups.dial_uri",
        "followups.caller_id",
        "followups.ring_timeout",
        "followups.retry",
        "followups.quiet_hours",
        "followups.timezone",
        "followups.max_attempts_per_hour",
        "followups.max_dialing",
        "logging.level",
        "node.drain_timeout",
        "web.metrics_allow",
        "web.metrics_token",
        "audit.ticket_reads_per_hour",
        "audit.recording_plays_per_hour",
        "audit.exports_per_hour",
        "audit.login_spray_names",
        "audit.login_spray_window",
        "audit.see_personal",
        "audit.export_roles",
        "audit.trusted_proxies",
    }
)
_SECRET_KEYS = frozenset({"callbacks.password", "web.metrics_token", "sip.inbound_auth"})


def is_reloadable(key: str) -> bool:
    """Whether a running server takes a new value of ``key`` without a restart."""
    return key in RELOADABLE_KEYS or key.startswith("queues.")


@dataclass(frozen=True)
class ConfigChange:
    """One key whose value in the file differs from the running one."""

    key: str  # dotted, e.g. "sip.port" or "queues.general.operators"
    line: int | None  # where the key is in the file (None: not in it, back to its default)
    old: object  # the running value; None: a queue the file adds
    new: object  # the file's value; None: a queue the file removes

    def describe(self) -> str:
        """``sip.port = 5070``, ``queues.support added`` / ``removed``."""
        if self.old is None:
            return f"{self.key} added"
        if self.new is None:
            return f"{self.key} removed"
        return f"{self.key} = {self._text(self.new)}"

    @property
    def old_text(self) -> str:
        """The running value as TOML spells it (a password is not shown)."""
        return "none" if self.old is None else self._text(self.old)

    def _text(self, value: object) -> str:
        return "(not shown)" if self.key in _SECRET_KEYS else _show(_plain(value))


@dataclass(frozen=True)
class ConfigReload:
    """What reloading the config file means for a running server."""

    settings: Settings  # to run with now: the file's reloadable keys, the rest as running
    applied: tuple[ConfigChange, ...]  # changes taken at once
    needs_restart: tuple[ConfigChange, ...]  # changes left out: the running value is kept

    def where(self, change: ConfigChange) -> str:
        """``config.toml:4`` (or just the file when the key is not in it)."""
        path = self.settings.source
        return f"{path}:{change.line}" if change.line is not None else f"{path}"


def reload_settings(path: Path, running: Settings) -> ConfigReload:
    """Read and validate ``path`` as :func:`load_settings` does, and compare it
    with the ``running`` settings: which changes apply at once, which need a
    restart (those keep their running value in the result's settings).
    Raises ConfigError, as at start, when the file cannot be used as it is or
    together with the values kept until a restart."""
    new, report = _load(path)
    changes = _changes(running, new, report)
    applied = tuple(c for c in changes if is_reloadable(c.key))
    needs_restart = tuple(c for c in changes if not is_reloadable(c.key))
    merged = _merge(running, new, applied)
    _check_merged(merged, report)
    report.raise_if_any()
    return ConfigReload(replace(merged, source=path), applied, needs_restart)


def _plain(value: object) -> object:
    """A value as TOML would hold it, to compare and show (tuples as lists...)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _changes(old: Settings, new: Settings, report: _Report) -> list[ConfigChange]:
    changes: list[ConfigChange] = []

    def differ(key: str, was: object, now: object) -> None:
        if _plain(was) != _plain(now):
            changes.append(ConfigChange(key, report.line_of(key), was, now))

    for section in fields(Settings):
        if section.name in ("queues", "source"):
            continue
        was, now = getattr(old, section.name), getattr(new, section.name)
        for item in fields(was):
            key = f"{section.name}.{item.name}"
            differ(key, getattr(was, item.name), getattr(now, item.name))
    for name in dict.fromkeys([*old.queues, *new.queues]):
        key = f"queues.{name}"
        before, after = old.queues.get(name), new.queues.get(name)
        if before is None or after is None:
            changes.append(ConfigChange(key, report.line_of(key), before, after))
            continue
        for item in fields(before):
            if item.name != "name":
                differ(f"{key}.{item.name}", getattr(before, item.name), getattr(after, item.name))
    return changes


def _merge(running: Settings, new: Settings, applied: Iterable[ConfigChange]) -> Settings:
    """``running`` with the ``applied`` changes taken from ``new`` (queues whole)."""
    updates: dict[str, dict[str, object]] = {}
    for change in applied:
        section, _, name = change.key.partition(".")
        if section != "queues":
            updates.setdefault(section, {})[name] = getattr(getattr(new, section), name)
    sections = {
        section: replace(getattr(running, section), **values) for section, values in updates.items()
    }
    return replace(running, queues=new.queues, **sections)


def _check_merged(settings: Settings, report: _Report) -> None:
    """What validation checks across sections, again for the mix of new values
    and values kept until a restart."""
    dialects = settings.dialects
    if dialects.overflow_after is None:
        seatless = [
            d
            for d in dialects.offered
            if d not in (MANDARIN, settings.prompts.dialect) and d not in dialects.seats
        ]
        if seatless:
            report.add(
                "dialects.overflow",
                f"dialects.overflow = false, but {', '.join(seatless)} (offered until a "
                "restart) has no seat in [dialects.seats]: such callers could never be "
                "answered; add seats or set overflow = true",
            )
