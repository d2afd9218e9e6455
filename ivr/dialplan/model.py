"""The dial plan as data: frozen dataclasses, one class per node type."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ivr.dialplan.hours import OpeningHours

# the node fields that name a prompt
PROMPT_FIELDS = (
    "prompt",
    "invalid_prompt",
    "timeout_prompt",
    "hold_prompt",
    "no_speech_prompt",
    "position_prompt",
    "wait_prompt",
    "comment_prompt",
)
# a prompt whose text holds {n} is rendered once per number 1..MAX_ANNOUNCED as key_<n>
MAX_ANNOUNCED = 20


@dataclass(frozen=True)
class PlayNode:
    id: str
    line: int
    prompt: str
    next: str
    barge_in: bool = True


@dataclass(frozen=True)
class MenuNode:
    id: str
    line: int
    prompt: str
    options: dict[str, str]  # key (0-9 * #) -> node id
    after_retries: str
    timeout: float = 6.0
    retries: int = 3
    invalid_prompt: str | None = None
    timeout_prompt: str | None = None
    words: dict[str, tuple[str, ...]] = field(default_factory=dict)  # key -> spoken words
    # in the elderly service the prompt is said once more before silence counts;
    # false for a menu whose silence is an answer (e.g. "wait for an operator")
    elderly_repeat: bool = True

    @property
    def spoken(self) -> bool:
        return bool(self.words)


@dataclass(frozen=True)
class TransferNode:
    id: str
    line: int
    queue: str
    on_no_operator: str
    hold_prompt: str | None = None
    prompt: str | None = None  # said once before the caller waits
    # said on joining the line and every announce_every s while waiting ("您排在第{n}位")
    position_prompt: str | None = None
    announce_every: float = 30.0
    # said after the place in line once the queue can estimate the wait
    # ("预计还需等待约{n}分钟"; {n} whole minutes, at most 20)
    wait_prompt: str | None = None


@dataclass(frozen=True)
class HangupNode:
    id: str
    line: int
    prompt: str | None = None


@dataclass(frozen=True)
class GotoNode:
    id: str
    line: int
    target: str


@dataclass(frozen=True)
class DescribeNode:
    """Ask the caller to say who, where and what; record it for the ticket.

    The recording is transcribed in the background while the call goes on to
    ``next``.  Silence or noise: ``no_speech_prompt`` (default: the prompt
    again) once, then ``on_no_speech`` with a note on the ticket.
    """

    id: str
    line: int
    prompt: str
    next: str
    on_no_speech: str
    no_speech_prompt: str | None = None
    max_seconds: float = 30.0
    end_silence: float = 1.2
    no_speech_timeout: float = 6.0
    about: str = "caller"  # whose details: "caller", or "beneficiary" (a proxy node)


@dataclass(frozen=True)
class NoCallbackNode:
    """The caller said they do not want to be called back if the call drops."""

    id: str
    line: int
    next: str
    prompt: str | None = None  # e.g. "好的，不再回拨。"


@dataclass(frozen=True)
class ElderlyNode:
    """The caller chose the elderly service: slower prompts (pitch kept), longer
    key timeouts, a prompt repeated once before it counts as no input, and more
    silence before an utterance is taken as finished (config [elderly])."""

    id: str
    line: int
    next: str
    prompt: str | None = None  # said at the new speed


@dataclass(frozen=True)
class EnterpriseNode:
    """The caller is a business (企业服务): their transfers go to the enterprise
    seats (config.toml [enterprise] queue; where none is set, as the plan says)."""

    id: str
    line: int
    next: str
    prompt: str | None = None


@dataclass(frozen=True)
class DialectNode:
    """The caller chose a dialect: prompts in it from now on (the fallback chain
    of ivr.prompts) and, unless every operator speaks it, its dialect seats."""

    id: str
    line: int
    dialect: str
    next: str
    prompt: str | None = None  # said in the new dialect


@dataclass(frozen=True)
class SpeedNode:
    """The caller chose a prompt speed (1.0 normal; slower ones are the elderly
    service's, from config [elderly] speeds)."""

    id: str
    line: int
    speed: float
    next: str
    prompt: str | None = None  # said at the new speed


@dataclass(frozen=True)
class CallbackToNode:
    """Whom to call back if the call drops: the caller, or (亲友代办) the person
    they report for."""

    id: str
    line: int
    person: str  # "caller" or "beneficiary"
    next: str
    prompt: str | None = None


@dataclass(frozen=True)
class HoursNode:
    """Time-of-day, weekday and holiday routing (see ivr.dialplan.hours)."""

    id: str
    line: int
    hours: OpeningHours
    open_next: str
    closed_next: str


@dataclass(frozen=True)
class SurveyNode:
    """A follow-up call's survey (回访, ivr/followups): say the ticket's matter
    in one sentence (``matter``, with {date} {place} {category} of the ticket,
    synthesised for this call), ask ``prompt`` (满意请按1，基本满意请按2，不满意
    请按3) by key or by voice; an answer that is neither is asked once more
    (after ``invalid_prompt``), then ``on_no_answer``.  After an answer the
    optional ``comment_prompt`` invites a spoken comment (onto the ticket)."""

    id: str
    line: int
    matter: str
    prompt: str
    next: str
    on_no_answer: str
    invalid_prompt: str | None = None
    comment_prompt: str | None = None
    timeout: float = 8.0  # s to wait for a key or a word after the question
    comment_seconds: float = 20.0  # the longest comment kept


PERSONS = ("caller", "beneficiary")

Node = (
    PlayNode
    | MenuNode
    | TransferNode
    | HangupNode
    | GotoNode
    | DescribeNode
    | NoCallbackNode
    | ElderlyNode
    | EnterpriseNode
    | DialectNode
    | SpeedNode
    | CallbackToNode
    | HoursNode
    | SurveyNode
)


@dataclass(frozen=True)
class DialPlan:
    name: str
    start: str
    prompts: dict[str, str]  # prompt key -> text for TTS
    nodes: dict[str, Node]
    source: Path
    version: str  # first 12 hex digits of the file's sha256
    extra: dict[str, str] = field(default_factory=dict)
    # where callers already in the elderly service start (e.g. straight to a human,
    # as carriers do for callers over 65); None: at start like everyone
    elderly_start: str | None = None
    # where callers whose number is in the enterprise registry start (企业专席); None: at start
    enterprise_start: str | None = None
    # a dialect's own wording of some prompts ([prompts.yue] in the file), for synthesis
    dialect_prompts: dict[str, dict[str, str]] = field(default_factory=dict)

    def prompt_keys(self) -> set[str]:
        """Every prompt key some node uses."""
        keys: set[str] = set()
        for node in self.nodes.values():
            for name in PROMPT_FIELDS:
                value = getattr(node, name, None)
                if value:
                    keys.add(value)
        return keys

    def needs_speech(self) -> bool:
        """Some node listens to speech (a describe node or a spoken menu)."""
        return any(
            isinstance(node, DescribeNode | SurveyNode)
            or (isinstance(node, MenuNode) and node.spoken)
            for node in self.nodes.values()
        )
