"""The dial plan as data: frozen dataclasses, one class per node type."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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


@dataclass(frozen=True)
class TransferNode:
    id: str
    line: int
    queue: str
    on_no_operator: str
    hold_prompt: str | None = None
    prompt: str | None = None  # said once before the caller waits


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


Node = PlayNode | MenuNode | TransferNode | HangupNode | GotoNode


@dataclass(frozen=True)
class DialPlan:
    name: str
    start: str
    prompts: dict[str, str]  # prompt key -> text for TTS
    nodes: dict[str, Node]
    source: Path
    version: str  # first 12 hex digits of the file's sha256
    extra: dict[str, str] = field(default_factory=dict)

    def prompt_keys(self) -> set[str]:
        """Every prompt key some node uses."""
        keys: set[str] = set()
        for node in self.nodes.values():
            for name in ("prompt", "invalid_prompt", "timeout_prompt", "hold_prompt"):
                value = getattr(node, name, None)
                if value:
                    keys.add(value)
        return keys
