"""`ivr dialplan check FILE`: the same validation the server runs at start."""

from __future__ import annotations

import sys
from collections.abc import Collection
from pathlib import Path

from ivr.dialplan.load import DialPlanError, load_dialplan


def check_command(
    path: Path,
    queues: Collection[str] | None,
    recorded_prompts: Collection[str],
    *,
    dialects: Collection[str] | None = None,
    speeds: Collection[float] | None = None,
    unchecked: str | None = None,
) -> int:
    """Print OK or the errors (file:line); ``unchecked`` says what could not
    be checked (no config to check queue names against) and is printed too."""
    try:
        plan = load_dialplan(
            path,
            queues=queues,
            recorded_prompts=recorded_prompts,
            dialects=dialects,
            speeds=speeds,
        )
    except DialPlanError as exc:
        print(exc, file=sys.stdout)
        return 1
    print(f"OK: {plan.name} ({len(plan.nodes)} nodes, version {plan.version})")
    if unchecked:
        print(f"warning: {unchecked}")
    return 0
