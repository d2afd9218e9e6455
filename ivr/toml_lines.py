"""TOML read with line numbers: the part the three validators share.

config.toml (ivr/config.py), dial plans (ivr/dialplan/load.py) and the
prefill data files (ivr/prefill/data_files.py) each report a problem as
``file:line: message``.  tomllib gives values but no positions, so:

- ``parse`` turns tomllib's syntax error into one that carries the line and
  column it names (each validator words the message its own way);
- ``KeyLines`` scans the source once and maps each table and key to the
  first line it is on (and each ``[[array]]`` table to its lines);
- ``line_containing`` finds the first line holding some text (a value);
- ``located`` / ``Problem`` write ``file:line: message``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_BARE_OR_QUOTED = r"(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
_HEADER_LINE = re.compile(r"\s*(?P<open>\[\[?)\s*(?P<key>[^\[\]]+?)\s*\]\]?\s*(?:#.*)?")
_ASSIGN_LINE = re.compile(rf"\s*(?P<key>{_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_KEY_PART = re.compile(r"[A-Za-z0-9_-]+|\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'")
_POSITION = re.compile(r"\s*\(at line (?P<line>\d+), column (?P<column>\d+)\)$")


class TomlSyntaxError(ValueError):
    """tomllib's error; ``str()`` is tomllib's message as it was."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        position = _POSITION.search(message)
        # The message without its "(at line N, column M)"; the line, column.
        self.reason = message[: position.start()] if position else message
        self.line: int | None = int(position["line"]) if position else None
        self.column: int | None = int(position["column"]) if position else None


def parse(text: str) -> dict[str, Any]:
    """``tomllib.loads``, raising TomlSyntaxError (with the line) on bad TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlSyntaxError(str(exc)) from None


def split_key(text: str) -> tuple[str, ...]:
    """``a."b.c".d`` -> ("a", "b.c", "d")."""
    parts: list[str] = []
    for match in _KEY_PART.finditer(text):
        quoted = match["dq"] if match["dq"] is not None else match["sq"]
        parts.append(quoted if quoted is not None else match[0])
    return tuple(parts)


class KeyLines:
    """Where each table and key of a TOML text is (1-based lines).

    A best-effort scan, not a parser, for text tomllib has accepted: keys
    inside inline tables map to the line of the inline table's key; lines
    inside multi-line strings are skipped.  A key under an ``[[array]]``
    table is indexed (first occurrence) as if under a plain table.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        self.tables: set[tuple[str, ...]] = set()  # the paths written as [table] or [[table]]
        self.arrays: dict[tuple[str, ...], list[int]] = {}
        table: tuple[str, ...] = ()
        open_string: str | None = None  # delimiter of a multi-line string we are in
        for number, line in enumerate(text.split("\n"), start=1):
            if open_string is not None:
                if line.count(open_string) % 2 == 1:
                    open_string = None
                continue
            rest = line
            header = _HEADER_LINE.fullmatch(line)
            if header is not None:
                table = split_key(header["key"])
                self.lines.setdefault(table, number)
                self.tables.add(table)
                if header["open"] == "[[":
                    self.arrays.setdefault(table, []).append(number)
                continue
            assign = _ASSIGN_LINE.match(line)
            if assign is not None:
                self.lines.setdefault((*table, *split_key(assign["key"])), number)
                rest = line[assign.end() :]
            for delimiter in ('"""', "'''"):
                if rest.count(delimiter) % 2 == 1:
                    open_string = delimiter
                    break

    def exact(self, path: Sequence[str]) -> int | None:
        """The line of this table or key itself."""
        return self.lines.get(tuple(path))

    def key(self, path: Sequence[str]) -> int | None:
        """The line of this key (not of a table header of that name)."""
        path = tuple(path)
        return None if path in self.tables else self.lines.get(path)

    def nearest(self, path: Sequence[str]) -> int | None:
        """The line of this table or key, else of the nearest one enclosing it."""
        path = tuple(path)
        for depth in range(len(path), 0, -1):
            if path[:depth] in self.lines:
                return self.lines[path[:depth]]
        return None

    def first_inside(self, path: Sequence[str]) -> int | None:
        """The first line of a key or table below this one."""
        path = tuple(path)
        below = [n for k, n in self.lines.items() if len(k) > len(path) and k[: len(path)] == path]
        return min(below) if below else None

    def array_table(self, path: Sequence[str], index: int) -> int | None:
        """The line of the ``index``-th (0-based) ``[[path]]`` table."""
        found = self.arrays.get(tuple(path), [])
        return found[index] if 0 <= index < len(found) else None


def line_containing(text: str, needle: str, *, after: int = 0) -> int | None:
    """The 1-based number of the first line at or after line ``after`` that
    contains ``needle`` outside a comment."""
    for number, line in enumerate(text.splitlines(), start=1):
        if number < after:
            continue
        code = line.split("#", 1)[0]
        if needle in code:
            return number
    return None


def located(file: str | Path, line: int | None, message: str) -> str:
    """``file:line: message``, or ``file: message`` when there is no line."""
    where = f"{file}:{line}" if line is not None else str(file)
    return f"{where}: {message}"


@dataclass(frozen=True)
class Problem:
    """One problem at one line of one file."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return located(self.file, self.line, self.message)
