"""Shared by the bench scripts: the machine's description, merging figures
into bench/results.json, and replacing one section of docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
DOC = ROOT / "docs" / "benchmarks.md"


def machine() -> dict[str, str]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "uname": " ".join(platform.uname()),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
    }


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M")


def merge_results(figures: dict[str, Any]) -> None:
    """Update bench/results.json with ``figures``, keeping every other key."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(figures)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def write_section(heading: str, body: str) -> None:
    """Put ``## heading`` with ``body`` into docs/benchmarks.md, replacing the
    section of that heading if there is one."""
    marker = f"## {heading}"
    section = f"{marker}\n\n{body.strip()}\n"
    text = (
        DOC.read_text()
        if DOC.exists()
        else "# Benchmarks\n\nFigures measured by the scripts in bench/.\n\n"
    )
    if marker in text:
        before, _, after = text.partition(marker)
        rest = after.split("\n## ", 1)
        text = before + section + ("\n## " + rest[1] if len(rest) > 1 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.write_text(text)
