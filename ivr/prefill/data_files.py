"""Reading the TOML data files (taxonomy, gazetteer) with errors that name
the file, the line where it can be found, and what is wrong."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from ivr.prefill.fields import PrefillDataError

_AT_LINE = re.compile(r"at line (\d+)")


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """The parsed file and its text (for finding lines in later errors)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PrefillDataError(f"{path}: no such file") from None
    except OSError as exc:
        raise PrefillDataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise PrefillDataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = _AT_LINE.search(message)
        where = f"{path}:{at.group(1)}" if at else str(path)
        raise PrefillDataError(f"{where}: not valid TOML: {message}") from None
    return data, text


def line_of(text: str, needle: str, *, after: int = 0) -> int | None:
    """The 1-based number of the first line at or after line ``after`` that
    contains ``needle`` outside a comment."""
    for number, line in enumerate(text.splitlines(), start=1):
        if number < after:
            continue
        code = line.split("#", 1)[0]
        if needle in code:
            return number
    return None


def table_line(text: str, header: str, index: int) -> int | None:
    """The line of the ``index``-th (0-based) ``[[header]]`` table."""
    seen = -1
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().replace(" ", "") == f"[[{header}]]":
            seen += 1
            if seen == index:
                return number
    return None


def error(path: Path, line: int | None, message: str) -> PrefillDataError:
    where = f"{path}:{line}" if line is not None else str(path)
    return PrefillDataError(f"{where}: {message}")


def string_list(value: object) -> list[str] | None:
    """``value`` when it is a list of non-empty strings, else None."""
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) and v.strip() for v in value):
        return None
    return [v.strip() for v in value]
