"""Reading the TOML data files (taxonomy, gazetteer) with errors that name
the file, the line where it can be found, and what is wrong."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ivr.prefill.fields import PrefillDataError
from ivr.toml_lines import KeyLines, TomlSyntaxError, line_containing, located, parse, split_key


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
        data = parse(text)
    except TomlSyntaxError as exc:
        raise error(path, exc.line, f"not valid TOML: {exc}") from None
    return data, text


def line_of(text: str, needle: str, *, after: int = 0) -> int | None:
    """The 1-based number of the first line at or after line ``after`` that
    contains ``needle`` outside a comment."""
    return line_containing(text, needle, after=after)


def table_line(text: str, header: str, index: int) -> int | None:
    """The line of the ``index``-th (0-based) ``[[header]]`` table."""
    return KeyLines(text).array_table(split_key(header), index)


def error(path: Path, line: int | None, message: str) -> PrefillDataError:
    return PrefillDataError(located(path, line, message))


def string_list(value: object) -> list[str] | None:
    """``value`` when it is a list of non-empty strings, else None."""
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) and v.strip() for v in value):
        return None
    return [v.strip() for v in value]


def tsv_rows(
    path: Path, header: Sequence[str], needed: int, what: str
) -> Iterator[tuple[int, list[str]]]:
    """The rows of a tab-separated file with ``header`` as its first line, each
    with its line number; blank lines skipped. A wrong header, a row with another
    number of cells or an empty cell ``needed`` raises ValueError naming file:line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t") != list(header):
        raise ValueError(f"{path}:1: header must be {' '.join(header)!r} (tab-separated)")
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(header) or not cells[needed].strip():
            raise ValueError(f"{path}:{number}: want {len(header)} cells and {what}")
        yield number, cells
