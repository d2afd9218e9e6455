"""Structured logs: one JSON object a line, the call id on every call line,
phone numbers masked (138****5678) wherever they appear in a message."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any

_PHONE = re.compile(r"(?<!\d)(\+?86)?(1\d{2}|0\d{2,3})(\d{3,4})(\d{4})(?!\d)")


def mask_phone(text: str) -> str:
    """Mask the middle digits of mobile and landline numbers in ``text``."""

    def repl(match: re.Match[str]) -> str:
        prefix = match.group(1) or ""
        return f"{prefix}{match.group(2)}{'*' * len(match.group(3))}{match.group(4)}"

    return _PHONE.sub(repl, text)


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """A logger that stamps every line with the call id."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("call_id", (self.extra or {}).get("call_id"))
        kwargs["extra"] = extra
        return msg, kwargs


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
            + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "msg": mask_phone(record.getMessage()),
        }
        call_id = getattr(record, "call_id", None)
        if call_id:
            entry["call_id"] = call_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        call_id = getattr(record, "call_id", None)
        prefix = f"[{call_id}] " if call_id else ""
        line = (
            f"{time.strftime('%H:%M:%S', time.localtime(record.created))}."
            f"{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
            f"{prefix}{mask_phone(record.getMessage())}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str, fmt: str) -> logging.Logger:
    """Configure the "ivr" logger tree (called once, by the composition root)."""
    root = logging.getLogger("ivr")
    root.setLevel(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.handlers[:] = [handler]
    root.propagate = False
    return root
