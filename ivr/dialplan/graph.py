"""A dial plan as a graph (nodes and labelled edges), for the admin console to draw.

``plan_graph`` is the graph as data; ``graph_dot`` writes it in Graphviz's DOT
language and ``SvgRenderer`` has Debian's ``dot`` lay it out as SVG (a layered
layout that keeps crossings few; see docs/decisions.md).  Edges that go back up
(a menu's "*" to the main menu, "next" after choosing a speed) and the many
edges into a node almost every menu leads to (the operator queue) are drawn to
a small reference box beside their source ("↩ main", "→ operator") instead of
across the whole picture.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import shutil
from collections import OrderedDict
from typing import Any, assert_never

from ivr.dialplan.model import (
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


def plan_graph(plan: DialPlan) -> dict[str, Any]:
    """``{"start", "elderly_start", "name", "version", "nodes": [{"id", "type",
    "label", "line"}], "edges": [{"from", "to", "label"}]}``, nodes in file order.

    A node's label is what it is about (its prompt key, queue, dialect, speed or
    person); an edge's label is the key pressed ("1") or the field it comes
    from ("next", "after_retries", "on_no_operator", "on_no_speech", "goto")."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, str]] = []
    for node in sorted(plan.nodes.values(), key=lambda n: n.line):
        kind, label = node_kind(node)
        nodes.append({"id": node.id, "type": kind, "label": label, "line": node.line})
        edges.extend({"from": node.id, "to": to, "label": why} for why, to in node_edges(node))
    return {
        "name": plan.name,
        "version": plan.version,
        "start": plan.start,
        "elderly_start": plan.elderly_start,
        "enterprise_start": plan.enterprise_start,
        "nodes": nodes,
        "edges": edges,
    }


def node_kind(node: Node) -> tuple[str, str]:
    """(type as written in the TOML, label)."""
    if isinstance(node, PlayNode):
        return "play", node.prompt
    if isinstance(node, MenuNode):
        return "menu", node.prompt
    if isinstance(node, TransferNode):
        return "transfer", node.queue
    if isinstance(node, HangupNode):
        return "hangup", node.prompt or ""
    if isinstance(node, GotoNode):
        return "goto", node.target
    if isinstance(node, DescribeNode):
        return ("proxy" if node.about == "beneficiary" else "describe"), node.prompt
    if isinstance(node, NoCallbackNode):
        return "no_callback", node.prompt or ""
    if isinstance(node, ElderlyNode):
        return "elderly", node.prompt or ""
    if isinstance(node, EnterpriseNode):
        return "enterprise", node.prompt or ""
    if isinstance(node, DialectNode):
        return "dialect", node.dialect
    if isinstance(node, SpeedNode):
        return "speed", f"{node.speed:g}"
    if isinstance(node, CallbackToNode):
        return "callback_to", node.person
    if isinstance(node, HoursNode):
        spans = ", ".join(
            f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}" for a, b in node.hours.spans
        )
        return "hours", spans
    if isinstance(node, SurveyNode):
        return "survey", node.prompt
    assert_never(node)


def node_edges(node: Node) -> list[tuple[str, str]]:
    """(label, target node id) of every way out of ``node``."""
    if isinstance(node, MenuNode):
        return [*node.options.items(), ("after_retries", node.after_retries)]
    if isinstance(node, TransferNode):
        return [("on_no_operator", node.on_no_operator)]
    if isinstance(node, HangupNode):
        return []
    if isinstance(node, GotoNode):
        return [("goto", node.target)]
    if isinstance(node, DescribeNode):
        return [("next", node.next), ("on_no_speech", node.on_no_speech)]
    if isinstance(
        node,
        PlayNode
        | NoCallbackNode
        | ElderlyNode
        | EnterpriseNode
        | DialectNode
        | SpeedNode
        | CallbackToNode,
    ):
        return [("next", node.next)]
    if isinstance(node, HoursNode):
        return [("open", node.open_next), ("closed", node.closed_next)]
    if isinstance(node, SurveyNode):
        return [("next", node.next), ("on_no_answer", node.on_no_answer)]
    assert_never(node)


# -- DOT and SVG ------------------------------------------------------------------------

# the CJK fonts tried in turn by dot's text layout (fontconfig falls back to whatever
# is installed) and named in the SVG; the page's CSS names its own list too
FONTS = "WenQuanYi Micro Hei,Noto Sans CJK SC,Source Han Sans SC,Microsoft YaHei,sans-serif"
DOT_PROGRAM = "dot"  # Debian package graphviz; looked up on PATH when a graph is drawn
DOT_TIMEOUT_S = 10.0
MAX_DOT_RUNS = 2  # at once, per renderer
CACHED_SVGS = 16
HUB_SOURCES = 6  # a node that this many nodes lead to gets references instead of edges

TYPE_NAMES = {
    "play": "播放",
    "menu": "菜单",
    "transfer": "转人工",
    "hangup": "挂机",
    "goto": "跳转",
    "describe": "描述诉求",
    "proxy": "代办描述",
    "no_callback": "不回拨",
    "elderly": "老年人服务",
    "enterprise": "企业服务",
    "dialect": "切换方言",
    "speed": "语速",
    "callback_to": "回拨对象",
    "hours": "工作时间",
    "survey": "回访调查",
}
# an edge's label by the field it comes from; "" = no label (the only way on)
EDGE_NAMES = {
    "next": "",
    "goto": "",
    "after_retries": "重试用尽",
    "on_no_operator": "无坐席",
    "on_no_speech": "未听到",
    "open": "工作时间",
    "closed": "非工作时间",
    "on_no_answer": "未作答",
}
_STYLE = {  # type -> (fill, border)
    "menu": ("#ffffff", "#0b4f8a"),
    "transfer": ("#dcfce7", "#1a7f37"),
    "hangup": ("#eef1f4", "#57606a"),
    "describe": ("#fef3c7", "#9a6700"),
    "proxy": ("#fef3c7", "#9a6700"),
}
_PLAIN = ("#ffffff", "#8c959f")
_START = "#dbeafe"


def _h(text: str) -> str:
    """Text for a Graphviz HTML-like label."""
    return html.escape(text, quote=True)


def _edge_label(labels: list[str]) -> str:
    """Keys first ("1,2,3"), then what the other ways out mean ("重试用尽")."""
    keys = [lab for lab in labels if lab not in EDGE_NAMES]
    words = [EDGE_NAMES[lab] for lab in labels if EDGE_NAMES.get(lab)]
    parts = []
    if keys:
        parts.append(f"<b>{_h(','.join(keys))}</b>")
    parts.extend(_h(w) for w in dict.fromkeys(words))
    return " / ".join(parts)


def graph_dot(graph: dict[str, Any]) -> str:
    """``graph`` (from ``plan_graph``) as DOT: top to bottom from the start node,
    node ``i`` of ``graph["nodes"]`` as ``id="plan-node-i"`` (class plan-node),
    references as class plan-ref, edges with the keys that take them."""
    ids = [str(n["id"]) for n in graph["nodes"]]
    index = {node_id: i for i, node_id in enumerate(ids)}
    merged: dict[tuple[str, str], list[str]] = {}
    for edge in graph["edges"]:
        if edge["from"] in index and edge["to"] in index:
            merged.setdefault((edge["from"], edge["to"]), []).append(str(edge["label"]))
    after: dict[str, list[str]] = {}
    for source, target in merged:
        after.setdefault(source, []).append(target)
    roots = [graph.get("start"), graph.get("elderly_start"), graph.get("enterprise_start")]
    back, parent = _depth_first(ids, after, roots)
    sources: dict[str, int] = {}
    for _, target in merged:
        sources[target] = sources.get(target, 0) + 1

    starts = {
        str(node): why
        for node, why in (
            (graph.get("start"), "入口"),
            (graph.get("elderly_start"), "老年人入口"),
            (graph.get("enterprise_start"), "企业入口"),
        )
        if node
    }
    lines = [
        "digraph plan {",
        '  graph [rankdir=TB, nodesep=0.18, ranksep=0.32, margin=0.05, bgcolor="transparent",'
        f' fontname="{FONTS}"];',
        f'  node [shape=box, style="rounded,filled", fontname="{FONTS}", fontsize=11,'
        ' margin="0.08,0.03", height=0.3];',
        f'  edge [fontname="{FONTS}", fontsize=10, color="#8c959f", fontcolor="#1b1f24",'
        " arrowsize=0.6];",
    ]
    for i, node in enumerate(graph["nodes"]):
        kind = str(node["type"])
        fill, border = _STYLE.get(kind, _PLAIN)
        about = TYPE_NAMES.get(kind, kind) + (f" · {node['label']}" if node["label"] else "")
        label = f'<b>{_h(ids[i])}</b><br/><font point-size="9" color="#57606a">{_h(about)}</font>'
        width = 1.0
        if ids[i] in starts:
            label += f'<br/><font point-size="9" color="#0b4f8a">{starts[ids[i]]}</font>'
            fill, width = _START, 2.0
        lines.append(
            f'  n{i} [id="plan-node-{i}", class="plan-node", label=<{label}>,'
            f' fillcolor="{fill}", color="{border}", penwidth={width}];'
        )
    refs = 0
    for j, ((source, target), labels) in enumerate(merged.items()):
        text = _edge_label(labels)
        attrs = f'id="plan-edge-{j}", class="plan-edge"' + (f", label=<{text}>" if text else "")
        is_back = (source, target) in back
        is_hub = sources[target] >= HUB_SOURCES and parent.get(target) != source
        if is_back or is_hub:
            refs += 1
            mark = "↩" if is_back else "→"
            lines.append(
                f'  r{refs} [id="plan-ref-{refs}", class="plan-ref", label=<{mark} {_h(target)}>,'
                ' style="rounded,dashed", color="#8c959f", fontcolor="#57606a", fontsize=10,'
                " height=0.22];"
            )
            lines.append(f"  n{index[source]} -> r{refs} [{attrs}, style=dashed];")
        else:
            lines.append(f"  n{index[source]} -> n{index[target]} [{attrs}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _depth_first(
    ids: list[str], after: dict[str, list[str]], starts: list[Any]
) -> tuple[set[tuple[str, str]], dict[str, str]]:
    """Edges that lead back to a node on the way to them (loops), and the
    node each node was first reached from, walking from the start nodes and then
    from any node not reached (iteratively: a plan may be deep)."""
    back: set[tuple[str, str]] = set()
    parent: dict[str, str] = {}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for root in [*(s for s in starts if s in set(ids)), *ids]:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(after.get(root, [])))]
        while stack:
            node, targets = stack[-1]
            target = next(targets, None)
            if target is None:
                state[node] = 2
                stack.pop()
            elif state.get(target) == 1:
                back.add((node, target))
            elif target not in state:
                state[target] = 1
                parent[target] = node
                stack.append((target, iter(after.get(target, []))))
    return back, parent


class GraphvizError(Exception):
    """dot is not installed, failed, or took too long; the message says which."""


class SvgRenderer:
    """Runs ``dot -Tsvg`` (at most MAX_DOT_RUNS at once, each within ``timeout``)
    and keeps the last CACHED_SVGS drawings by their DOT text."""

    def __init__(self, dot: str | None = None, timeout: float = DOT_TIMEOUT_S) -> None:
        self.dot = DOT_PROGRAM if dot is None else dot
        self.timeout = timeout
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._runs: asyncio.Semaphore | None = None

    def available(self) -> str | None:
        """The path of dot, or None when it is not installed."""
        return shutil.which(self.dot)

    async def svg(self, dot_text: str) -> str:
        key = hashlib.sha256(dot_text.encode("utf-8")).hexdigest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        program = self.available()
        if program is None:
            raise GraphvizError(f"Graphviz `{self.dot}` is not installed (Debian package graphviz)")
        if self._runs is None:
            self._runs = asyncio.Semaphore(MAX_DOT_RUNS)
        async with self._runs:
            out = await self._run(program, dot_text)
        self._cache[key] = out
        while len(self._cache) > CACHED_SVGS:
            self._cache.popitem(last=False)
        return out

    async def _run(self, program: str, dot_text: str) -> str:
        try:
            process = await asyncio.create_subprocess_exec(
                program,
                "-Tsvg",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise GraphvizError(f"cannot run {program}: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(
                process.communicate(dot_text.encode("utf-8")), self.timeout
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise GraphvizError(f"{program} took over {self.timeout:g} s") from None
        if process.returncode != 0 or not out:
            said = err.decode("utf-8", "replace").strip().splitlines()
            raise GraphvizError(
                f"{program} failed (status {process.returncode}): {said[-1] if said else ''}"
            )
        return out.decode("utf-8")
