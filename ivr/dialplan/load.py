"""Dial plan TOML -> DialPlan, with every problem reported as file:line.

tomllib gives values but no positions, so the source is scanned once to map
each table and key to its line; every problem names the line an admin has to
look at.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from ivr.dialects import DIALECT_ALIASES, DIALECTS
from ivr.dialplan.hours import (
    HoursError,
    OpeningHours,
    check_timezone,
    parse_dates,
    parse_days,
    parse_spans,
)
from ivr.dialplan.model import (
    PERSONS,
    PROMPT_FIELDS,
    CallbackToNode,
    DescribeNode,
    DialectNode,
    DialPlan,
    ElderlyNode,
    EnterpriseNode,
    GotoNode,
    HangupNode,
    HoursNode,
    MenuNode,
    NoCallbackNode,
    Node,
    PlayNode,
    SpeedNode,
    SurveyNode,
    TransferNode,
)
from ivr.toml_lines import KeyLines, Problem, TomlSyntaxError
from ivr.toml_lines import parse as parse_toml

NODE_TYPES = (
    "play",
    "menu",
    "transfer",
    "hangup",
    "goto",
    "describe",
    "no_callback",
    "elderly",
    "enterprise",
    "dialect",
    "speed",
    "proxy",
    "callback_to",
    "hours",
    "survey",
)
MENU_KEYS = frozenset("0123456789*#")
FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "play": {"type": str, "prompt": str, "next": str, "barge_in": bool},
    "menu": {
        "type": str,
        "prompt": str,
        "options": dict,
        "after_retries": str,
        "timeout": (int, float),
        "retries": int,
        "invalid_prompt": str,
        "timeout_prompt": str,
        "words": dict,
        "elderly_repeat": bool,
    },
    "transfer": {
        "type": str,
        "queue": str,
        "on_no_operator": str,
        "hold_prompt": str,
        "prompt": str,
        "position_prompt": str,
        "announce_every": (int, float),
        "wait_prompt": str,
    },
    "hangup": {"type": str, "prompt": str},
    "goto": {"type": str, "target": str},
    "no_callback": {"type": str, "next": str, "prompt": str},
    "elderly": {"type": str, "next": str, "prompt": str},
    "enterprise": {"type": str, "next": str, "prompt": str},
    "dialect": {"type": str, "dialect": str, "next": str, "prompt": str},
    "speed": {"type": str, "speed": (int, float), "next": str, "prompt": str},
    "callback_to": {"type": str, "person": str, "next": str, "prompt": str},
    "hours": {
        "type": str,
        "open": list,
        "days": str,
        "holidays": list,
        "workdays": list,
        "timezone": str,
        "open_next": str,
        "closed_next": str,
    },
    "describe": {
        "type": str,
        "prompt": str,
        "next": str,
        "on_no_speech": str,
        "no_speech_prompt": str,
        "max_seconds": (int, float),
        "end_silence": (int, float),
        "no_speech_timeout": (int, float),
    },
}
FIELDS["proxy"] = FIELDS["describe"]
FIELDS["survey"] = {
    "type": str,
    "matter": str,
    "prompt": str,
    "next": str,
    "on_no_answer": str,
    "invalid_prompt": str,
    "comment_prompt": str,
    "timeout": (int, float),
    "comment_seconds": (int, float),
}
# what a survey's matter sentence may say of the ticket
SURVEY_FIELDS = ("date", "place", "category")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
REQUIRED = {
    "play": ("prompt", "next"),
    "menu": ("prompt", "options", "after_retries"),
    "transfer": ("queue", "on_no_operator"),
    "hangup": (),
    "goto": ("target",),
    "describe": ("prompt", "next", "on_no_speech"),
    "no_callback": ("next",),
    "elderly": ("next",),
    "enterprise": ("next",),
    "dialect": ("dialect", "next"),
    "speed": ("speed", "next"),
    "proxy": ("prompt", "next", "on_no_speech"),
    "callback_to": ("person", "next"),
    "hours": ("open", "open_next", "closed_next"),
    "survey": ("matter", "prompt", "next", "on_no_answer"),
}
TOP_LEVEL = ("plan", "prompts", "nodes")


class DialPlanError(Exception):
    """Every problem found in one dial plan file."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: p.line)
        super().__init__("\n".join(str(p) for p in self.problems))


class LineMap:
    """Where each table and key of a dial plan is; line 1 when not found."""

    def __init__(self, text: str) -> None:
        self._lines = KeyLines(text)

    def table(self, *path: str) -> int:
        return self._lines.nearest(path) or 1

    def key(self, *path: str) -> int:
        """The key's line, else the line of its table (or the nearest enclosing one)."""
        return self._lines.key(path) or self.table(*path[:-1])


def _did_you_mean(word: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        bool: "true or false",
        int: "an integer",
        float: "a number",
        dict: "a table",
    }
    if isinstance(kind, tuple):
        return "a number"
    return names.get(kind, kind.__name__)


def load_dialplan(
    path: Path,
    *,
    queues: Collection[str] | None = None,
    recorded_prompts: Collection[str] = (),
    dialects: Collection[str] | None = None,
    speeds: Collection[float] | None = None,
) -> DialPlan:
    """``queues``, ``dialects`` (offered) and ``speeds`` (rendered slow speeds)
    come from config.toml; None: not checked."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DialPlanError([Problem(str(path), 1, f"cannot read the dial plan: {exc}")]) from exc
    return parse_dialplan(
        data.decode("utf-8", errors="replace"),
        str(path),
        queues=queues,
        recorded_prompts=recorded_prompts,
        dialects=dialects,
        speeds=speeds,
        source=path,
        version=hashlib.sha256(data).hexdigest()[:12],
    )


def parse_dialplan(
    text: str,
    filename: str,
    *,
    queues: Collection[str] | None = None,
    recorded_prompts: Collection[str] = (),
    dialects: Collection[str] | None = None,
    speeds: Collection[float] | None = None,
    source: Path | None = None,
    version: str | None = None,
) -> DialPlan:
    problems: list[Problem] = []

    def fail(line: int, message: str) -> None:
        problems.append(Problem(filename, line, message))

    try:
        raw = parse_toml(text)
    except TomlSyntaxError as exc:
        message = str(exc)
        if "Cannot overwrite a value" in message or "Cannot declare" in message:
            message = f"duplicate key: {message}"
        raise DialPlanError([Problem(filename, exc.line or 1, f"TOML syntax: {message}")]) from exc
    lines = LineMap(text)
    for key in raw:
        if key not in TOP_LEVEL:
            fail(lines.table(key), f"unknown table [{key}]{_did_you_mean(key, TOP_LEVEL)}")

    plan_table = raw.get("plan")
    name, start, elderly_start, enterprise_start = "", "", "", ""
    plan_keys = ("name", "start", "elderly_start", "enterprise_start")
    if not isinstance(plan_table, dict):
        fail(1, "missing [plan] table with name and start")
    else:
        for key in plan_table:
            if key not in plan_keys:
                fail(
                    lines.key("plan", key),
                    f"plan.{key}: unknown key{_did_you_mean(key, plan_keys)}",
                )
        elderly_start = plan_table.get("elderly_start", "")
        if not isinstance(elderly_start, str):
            fail(lines.key("plan", "elderly_start"), "plan.elderly_start must name a node")
            elderly_start = ""
        enterprise_start = plan_table.get("enterprise_start", "")
        if not isinstance(enterprise_start, str):
            fail(lines.key("plan", "enterprise_start"), "plan.enterprise_start must name a node")
            enterprise_start = ""
        name = plan_table.get("name", "")
        start = plan_table.get("start", "")
        if not isinstance(name, str) or not name:
            fail(lines.key("plan", "name"), "plan.name must be a non-empty string")
            name = ""
        if not isinstance(start, str) or not start:
            fail(lines.key("plan", "start"), "plan.start must name the first node")
            start = ""

    prompts: dict[str, str] = {}
    dialect_prompts: dict[str, dict[str, str]] = {}
    prompt_table = raw.get("prompts", {})
    if not isinstance(prompt_table, dict):
        fail(lines.table("prompts"), '[prompts] must be a table of key = "text"')
    else:
        for key, value in prompt_table.items():
            if isinstance(value, dict):
                own = _dialect_prompts(key, value, lines, fail)
                if own is not None:
                    dialect_prompts[key] = own
            elif not isinstance(value, str) or not value.strip():
                fail(lines.key("prompts", key), f"prompt {key!r} must be a non-empty string")
            else:
                prompts[key] = value

    nodes: dict[str, Node] = {}
    node_table = raw.get("nodes")
    if not isinstance(node_table, dict) or not node_table:
        fail(lines.table("nodes"), "no nodes: add [nodes.<id>] tables")
        node_table = {}
    for node_id, body in node_table.items():
        node = _node(node_id, body, lines, fail)
        if node is not None:
            nodes[node_id] = node

    if problems:
        raise DialPlanError(problems)
    _check_graph(
        start, nodes, node_table, lines, fail, filename, also=(elderly_start, enterprise_start)
    )
    for key, entry in (("elderly_start", elderly_start), ("enterprise_start", enterprise_start)):
        if entry and entry not in nodes:
            fail(
                lines.key("plan", key),
                f"plan.{key}: no node {entry!r}{_did_you_mean(entry, nodes)}",
            )
    _check_prompts(nodes, prompts, recorded_prompts, lines, fail)
    for dialect, own in dialect_prompts.items():
        for key in own:
            if key not in prompts:
                fail(
                    lines.key("prompts", dialect, key),
                    f"prompts.{dialect}.{key}: no prompt {key!r} in [prompts] to reword"
                    f"{_did_you_mean(key, prompts)}",
                )
    for node in nodes.values():
        if isinstance(node, TransferNode) and node.position_prompt:
            wording = prompts.get(node.position_prompt)
            if wording is not None and "{n}" not in wording:
                fail(
                    lines.key("nodes", node.id, "position_prompt"),
                    f"node {node.id!r}: position_prompt {node.position_prompt!r} must say "
                    "{n} where the caller's place in line goes, e.g. 您现在排在第{n}位",
                )
        if isinstance(node, TransferNode) and node.wait_prompt:
            wording = prompts.get(node.wait_prompt)
            if wording is not None and "{n}" not in wording:
                fail(
                    lines.key("nodes", node.id, "wait_prompt"),
                    f"node {node.id!r}: wait_prompt {node.wait_prompt!r} must say {{n}} "
                    "where the minutes go, e.g. 预计还需等待约{n}分钟",
                )
            if not node.position_prompt:
                fail(
                    lines.key("nodes", node.id, "wait_prompt"),
                    f"node {node.id!r}: wait_prompt is said after the place in line: "
                    "set position_prompt too",
                )
    _check_against_config(nodes, lines, fail, dialects, speeds)
    if queues is not None:
        for node in nodes.values():
            if isinstance(node, TransferNode) and node.queue not in queues:
                fail(
                    lines.key("nodes", node.id, "queue"),
                    f"node {node.id!r}: queue {node.queue!r} is not in config.toml"
                    f"{_did_you_mean(node.queue, queues)}; queues: {', '.join(sorted(queues))}",
                )
    if problems:
        raise DialPlanError(problems)
    return DialPlan(
        name=name,
        start=start,
        elderly_start=elderly_start or None,
        enterprise_start=enterprise_start or None,
        prompts=prompts,
        dialect_prompts=dialect_prompts,
        nodes=nodes,
        source=source or Path(filename),
        version=version or hashlib.sha256(text.encode()).hexdigest()[:12],
    )


def _node(node_id: str, body: Any, lines: LineMap, fail: Any) -> Node | None:
    line = lines.table("nodes", node_id)
    if not isinstance(body, dict):
        fail(line, f"node {node_id!r} must be a table [nodes.{node_id}]")
        return None
    kind = body.get("type")
    if kind not in NODE_TYPES:
        where = lines.key("nodes", node_id, "type")
        if kind is None:
            fail(line, f"node {node_id!r}: missing type (one of {', '.join(NODE_TYPES)})")
        else:
            fail(
                where,
                f"node {node_id!r}: unknown type {kind!r}"
                f"{_did_you_mean(str(kind), NODE_TYPES)}; types: {', '.join(NODE_TYPES)}",
            )
        return None
    fields = FIELDS[kind]
    ok = True
    for key, value in body.items():
        where = lines.key("nodes", node_id, key)
        if key not in fields:
            fail(
                where, f"node {node_id!r} ({kind}): unknown key {key!r}{_did_you_mean(key, fields)}"
            )
            ok = False
            continue
        want = fields[key]
        if isinstance(value, bool) and want is not bool:
            fail(where, f"node {node_id!r}: {key} must be {_type_name(want)}, not true/false")
            ok = False
        elif not isinstance(value, want):
            fail(
                where,
                f"node {node_id!r}: {key} must be {_type_name(want)}, "
                f"not {type(value).__name__} {value!r}",
            )
            ok = False
    for key in REQUIRED[kind]:
        if key not in body:
            fail(line, f"node {node_id!r} ({kind}): missing {key}")
            ok = False
    if not ok:
        return None
    if kind == "play":
        return PlayNode(node_id, line, body["prompt"], body["next"], body.get("barge_in", True))
    if kind == "menu":
        options: dict[str, str] = {}
        good = True
        for key, target in body["options"].items():
            where = lines.key("nodes", node_id, "options", key)
            if where == line or where == lines.table("nodes", node_id, "options"):
                where = lines.key("nodes", node_id, "options")
            if str(key) not in MENU_KEYS:
                fail(
                    where, f"node {node_id!r}: option key {key!r} is not a phone key (0-9, * or #)"
                )
                good = False
            elif not isinstance(target, str):
                fail(where, f"node {node_id!r}: option {key!r} must name a node")
                good = False
            else:
                options[str(key)] = target
        timeout = float(body.get("timeout", 6.0))
        retries = body.get("retries", 3)
        if not 0.5 <= timeout <= 60:
            fail(
                lines.key("nodes", node_id, "timeout"),
                f"node {node_id!r}: timeout {timeout:g} s out of range 0.5..60",
            )
            good = False
        if not 1 <= retries <= 10:
            fail(
                lines.key("nodes", node_id, "retries"),
                f"node {node_id!r}: retries {retries} out of range 1..10",
            )
            good = False
        if not options:
            fail(line, f"node {node_id!r}: a menu needs at least one option")
            good = False
        words = _menu_words(node_id, body.get("words", {}), options, lines, fail)
        if words is None:
            good = False
        if not good:
            return None
        return MenuNode(
            node_id,
            line,
            body["prompt"],
            options,
            body["after_retries"],
            timeout,
            retries,
            body.get("invalid_prompt"),
            body.get("timeout_prompt"),
            words or {},
            body.get("elderly_repeat", True),
        )
    if kind == "transfer":
        every = float(body.get("announce_every", 30.0))
        if not 5 <= every <= 600:
            fail(
                lines.key("nodes", node_id, "announce_every"),
                f"node {node_id!r}: announce_every {every:g} s out of range 5..600",
            )
            return None
        return TransferNode(
            node_id,
            line,
            body["queue"],
            body["on_no_operator"],
            body.get("hold_prompt"),
            body.get("prompt"),
            body.get("position_prompt"),
            every,
            body.get("wait_prompt"),
        )
    if kind == "hangup":
        return HangupNode(node_id, line, body.get("prompt"))
    if kind in ("describe", "proxy"):
        return _describe(node_id, line, body, lines, fail)
    if kind == "dialect":
        dialect = body["dialect"]
        if dialect not in DIALECTS:
            meant = DIALECT_ALIASES.get(dialect.strip().lower())
            hint = f" (did you mean {meant!r}?)" if meant else _did_you_mean(dialect, DIALECTS)
            fail(
                lines.key("nodes", node_id, "dialect"),
                f"node {node_id!r}: dialect {dialect!r} is not one of {', '.join(DIALECTS)}{hint}",
            )
            return None
        return DialectNode(node_id, line, dialect, body["next"], body.get("prompt"))
    if kind == "speed":
        speed = float(body["speed"])
        if not 0.5 <= speed <= 1.0:
            fail(
                lines.key("nodes", node_id, "speed"),
                f"node {node_id!r}: speed {speed:g} out of range 0.5..1.0 (1.0 is normal)",
            )
            return None
        return SpeedNode(node_id, line, speed, body["next"], body.get("prompt"))
    if kind == "hours":
        return _hours(node_id, line, body, lines, fail)
    if kind == "survey":
        return _survey(node_id, line, body, lines, fail)
    if kind == "callback_to":
        person = body["person"]
        if person not in PERSONS:
            fail(
                lines.key("nodes", node_id, "person"),
                f"node {node_id!r}: person {person!r} must be one of {', '.join(PERSONS)}",
            )
            return None
        return CallbackToNode(node_id, line, person, body["next"], body.get("prompt"))
    if kind == "no_callback":
        return NoCallbackNode(node_id, line, body["next"], body.get("prompt"))
    if kind == "elderly":
        return ElderlyNode(node_id, line, body["next"], body.get("prompt"))
    if kind == "enterprise":
        return EnterpriseNode(node_id, line, body["next"], body.get("prompt"))
    return GotoNode(node_id, line, body["target"])


_DESCRIBE_RANGES = {
    "max_seconds": (3.0, 120.0, 30.0),
    "end_silence": (0.3, 5.0, 1.2),
    "no_speech_timeout": (1.0, 30.0, 6.0),
}


def _describe(
    node_id: str, line: int, body: dict[str, Any], lines: LineMap, fail: Any
) -> DescribeNode | None:
    values: dict[str, float] = {}
    good = True
    for key, (low, high, default) in _DESCRIBE_RANGES.items():
        value = float(body.get(key, default))
        if not low <= value <= high:
            fail(
                lines.key("nodes", node_id, key),
                f"node {node_id!r}: {key} {value:g} s out of range {low:g}..{high:g}",
            )
            good = False
        values[key] = value
    if not good:
        return None
    return DescribeNode(
        node_id,
        line,
        body["prompt"],
        body["next"],
        body["on_no_speech"],
        body.get("no_speech_prompt"),
        values["max_seconds"],
        values["end_silence"],
        values["no_speech_timeout"],
        about="beneficiary" if body["type"] == "proxy" else "caller",
    )


def _survey(
    node_id: str, line: int, body: dict[str, Any], lines: LineMap, fail: Any
) -> SurveyNode | None:
    good = True
    matter = body["matter"]
    where = lines.key("nodes", node_id, "matter")
    if not matter.strip():
        fail(
            where,
            f"node {node_id!r}: matter must say the ticket's matter, e.g. "
            "您于{date}反映的{place}{category}问题已办结",
        )
        good = False
    for name in _PLACEHOLDER.findall(matter):
        if name not in SURVEY_FIELDS:
            fail(
                where,
                f"node {node_id!r}: matter says {{{name}}}; it may say "
                + ", ".join("{" + f + "}" for f in SURVEY_FIELDS)
                + _did_you_mean(name, SURVEY_FIELDS),
            )
            good = False
    values: dict[str, float] = {}
    for key, (low, high, default) in (
        ("timeout", (1.0, 60.0, 8.0)),
        ("comment_seconds", (3.0, 120.0, 20.0)),
    ):
        value = float(body.get(key, default))
        if not low <= value <= high:
            fail(
                lines.key("nodes", node_id, key),
                f"node {node_id!r}: {key} {value:g} s out of range {low:g}..{high:g}",
            )
            good = False
        values[key] = value
    if not good:
        return None
    return SurveyNode(
        node_id,
        line,
        matter,
        body["prompt"],
        body["next"],
        body["on_no_answer"],
        body.get("invalid_prompt"),
        body.get("comment_prompt"),
        values["timeout"],
        values["comment_seconds"],
    )


def _hours(
    node_id: str, line: int, body: dict[str, Any], lines: LineMap, fail: Any
) -> HoursNode | None:
    try:
        spans = parse_spans(body["open"])
    except HoursError as exc:
        fail(lines.key("nodes", node_id, "open"), f"node {node_id!r}: open: {exc}")
        return None
    parsed: dict[str, Any] = {}
    for key, parse in (
        ("days", lambda v: parse_days(v)),
        ("holidays", lambda v: parse_dates(v, "holidays")),
        ("workdays", lambda v: parse_dates(v, "workdays")),
        ("timezone", lambda v: check_timezone(v)),
    ):
        if key not in body:
            continue
        try:
            parsed[key] = parse(body[key])
        except HoursError as exc:
            fail(lines.key("nodes", node_id, key), f"node {node_id!r}: {key}: {exc}")
            return None
    hours = OpeningHours(
        spans=spans,
        days=parsed.get("days", parse_days("mon-sun")),
        holidays=parsed.get("holidays", frozenset()),
        workdays=parsed.get("workdays", frozenset()),
        timezone=parsed.get("timezone", "Asia/Shanghai"),
    )
    return HoursNode(node_id, line, hours, body["open_next"], body["closed_next"])


def _dialect_prompts(
    dialect: str, table: dict[str, Any], lines: LineMap, fail: Any
) -> dict[str, str] | None:
    """``[prompts.yue]``: a dialect's own wording of prompts, for synthesis."""
    if dialect not in DIALECTS:
        fail(
            lines.table("prompts", dialect),
            f"[prompts.{dialect}]: {dialect!r} is not a dialect group "
            f"({', '.join(DIALECTS)}){_did_you_mean(dialect, DIALECTS)}",
        )
        return None
    own: dict[str, str] = {}
    for key, value in table.items():
        if not isinstance(value, str) or not value.strip():
            fail(
                lines.key("prompts", dialect, key),
                f"prompts.{dialect}.{key} must be a non-empty string",
            )
            continue
        own[key] = value
    return own


def _check_against_config(
    nodes: dict[str, Node],
    lines: LineMap,
    fail: Any,
    dialects: Collection[str] | None,
    speeds: Collection[float] | None,
) -> None:
    for node in nodes.values():
        if isinstance(node, DialectNode) and dialects is not None and node.dialect not in dialects:
            fail(
                lines.key("nodes", node.id, "dialect"),
                f"node {node.id!r}: dialect {node.dialect!r} is not offered in config.toml "
                f"(dialects.offered = {sorted(dialects)}); offer it there or remove the node",
            )
        if (
            isinstance(node, SpeedNode)
            and speeds is not None
            and node.speed != 1.0
            and node.speed not in speeds
        ):
            fail(
                lines.key("nodes", node.id, "speed"),
                f"node {node.id!r}: speed {node.speed:g} is not rendered; add it to "
                f"config.toml [elderly] speeds = {sorted(speeds, reverse=True)}",
            )


def _menu_words(
    node_id: str, raw: dict[str, Any], options: dict[str, str], lines: LineMap, fail: Any
) -> dict[str, tuple[str, ...]] | None:
    """``words = { "1" = ["普通话"], ... }``: what a caller may say instead of a key."""
    words: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    good = True
    for key, value in raw.items():
        where = lines.key("nodes", node_id, "words", key)
        if where == lines.table("nodes", node_id):
            where = lines.key("nodes", node_id, "words")
        if str(key) not in options:
            fail(where, f"node {node_id!r}: words for key {key!r}, which is not an option")
            good = False
            continue
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(w, str) and w.strip() for w in value)
        ):
            fail(where, f"node {node_id!r}: words.{key} must be a list of non-empty strings")
            good = False
            continue
        for word in value:
            if word in seen and seen[word] != key:
                fail(
                    where,
                    f"node {node_id!r}: the word {word!r} is given for keys "
                    f"{seen[word]!r} and {key!r}",
                )
                good = False
            seen[word] = key
        words[str(key)] = tuple(value)
    return words if good else None


def _edges(node: Node) -> list[tuple[str, str]]:
    """(field, target) pairs of a node."""
    if isinstance(node, PlayNode):
        return [("next", node.next)]
    if isinstance(node, MenuNode):
        return [
            *((f"options.{k}", t) for k, t in node.options.items()),
            ("after_retries", node.after_retries),
        ]
    if isinstance(node, TransferNode):
        return [("on_no_operator", node.on_no_operator)]
    if isinstance(node, GotoNode):
        return [("target", node.target)]
    if isinstance(node, DescribeNode):
        return [("next", node.next), ("on_no_speech", node.on_no_speech)]
    if isinstance(
        node,
        NoCallbackNode | ElderlyNode | EnterpriseNode | DialectNode | SpeedNode | CallbackToNode,
    ):
        return [("next", node.next)]
    if isinstance(node, HoursNode):
        return [("open_next", node.open_next), ("closed_next", node.closed_next)]
    if isinstance(node, SurveyNode):
        return [("next", node.next), ("on_no_answer", node.on_no_answer)]
    return []


def _check_graph(
    start: str,
    nodes: dict[str, Node],
    raw: dict[str, Any],
    lines: LineMap,
    fail: Any,
    filename: str,
    *,
    also: tuple[str, ...] = (),
) -> None:
    if start not in nodes:
        fail(
            lines.key("plan", "start"),
            f"plan.start: no node {start!r}{_did_you_mean(start, nodes)}",
        )
        return
    broken = False
    for node in nodes.values():
        for field_name, target in _edges(node):
            if target not in nodes:
                path = field_name.split(".")
                where = lines.key("nodes", node.id, *path)
                if where == node.line and len(path) > 1:
                    where = lines.key("nodes", node.id, path[0])
                fail(
                    where,
                    f"node {node.id!r}: {field_name} -> unknown node {target!r}"
                    f"{_did_you_mean(target, nodes)}",
                )
                broken = True
    if broken:
        return
    roots = [start, *(root for root in also if root in nodes)]
    seen = set(roots)
    todo = list(roots)
    while todo:
        for _, target in _edges(nodes[todo.pop()]):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    for node_id, node in nodes.items():
        if node_id not in seen:
            fail(node.line, f"node {node_id!r} cannot be reached from {start!r}")
    for node in nodes.values():
        if isinstance(node, GotoNode):
            hops = {node.id}
            current: Node = node
            while isinstance(current, GotoNode):
                nxt = nodes[current.target]
                if nxt.id in hops:
                    fail(
                        node.line,
                        f"node {node.id!r}: goto loop with nothing for the caller "
                        f"({' -> '.join(sorted(hops))})",
                    )
                    break
                hops.add(nxt.id)
                current = nxt


def _check_prompts(
    nodes: dict[str, Node],
    prompts: dict[str, str],
    recorded: Collection[str],
    lines: LineMap,
    fail: Any,
) -> None:
    for node in nodes.values():
        for name in PROMPT_FIELDS:
            key = getattr(node, name, None)
            if key and key not in prompts and key not in recorded:
                fail(
                    lines.key("nodes", node.id, name),
                    f"node {node.id!r}: {name} {key!r} has no text in [prompts] and no "
                    f"recording{_did_you_mean(key, prompts)}",
                )
