"""A dial plan as a graph (nodes and labelled edges), for the admin console to draw."""

from __future__ import annotations

from typing import Any, assert_never

from ivr.dialplan.model import (
    CallbackToNode,
    DescribeNode,
    DialectNode,
    DialPlan,
    ElderlyNode,
    GotoNode,
    HangupNode,
    HoursNode,
    MenuNode,
    NoCallbackNode,
    Node,
    PlayNode,
    SpeedNode,
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
        PlayNode | NoCallbackNode | ElderlyNode | DialectNode | SpeedNode | CallbackToNode,
    ):
        return [("next", node.next)]
    if isinstance(node, HoursNode):
        return [("open", node.open_next), ("closed", node.closed_next)]
    assert_never(node)
