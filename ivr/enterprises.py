"""Enterprise seats (企业专席): the registry of business numbers.

A number in the registry is a business's: its calls start at the dial plan's
``enterprise_start`` (the bundled plan: straight to the enterprise seats), and
every transfer of such a call goes to ``[enterprise] queue`` instead of the
queue the plan names (ivr/live_call.py).  A business not registered gets
there with the key 企业服务 of the bundled plan (a dial-plan node of type
``enterprise``).

The registry lives in the store (table ``enterprise_numbers``), so every node
sees the same one.  It is filled from a CSV (``ivr enterprises import FILE``):
one business number a line, ``number,name[,统一社会信用代码]``; a first line
that is not a number is a header.  The file is checked whole before anything
is written: a bad line (not a phone number, no name, a credit code that is not
18 characters of GB 32100, a number given twice with two names) is reported
as ``file:line: what`` and nothing is imported; a good file is written in one
transaction.

Numbers are kept in one form so that the caller's number as the trunk gives it
matches the number as the list gives it: spaces and dashes dropped, the
country code (+86, 0086) taken off, a landline given with the country code
getting its trunk prefix 0 back (+86 10 1234 5678 -> 01012345678).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.store import Database

_NUMBER = re.compile(r"\+?[0-9]{5,20}")
# 统一社会信用代码 (GB 32100-2015): 18 of these characters (no I, O, S, V, Z)
_CREDIT_CODE = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}")
MAX_NAME = 100


def normal_number(raw: str) -> str:
    """The number in the registry's one form ("" when it is not a number)."""
    number = re.sub(r"[\s\-()]", "", raw)
    if not _NUMBER.fullmatch(number):
        return ""
    for prefix in ("+86", "0086"):
        if number.startswith(prefix) and len(number) > len(prefix) + 4:
            national = number[len(prefix) :]
            mobile = len(national) == 11 and national.startswith("1")
            return national if mobile or national.startswith("0") else "0" + national
    return number.lstrip("+")


@dataclass(frozen=True)
class Enterprise:
    number: str
    name: str
    credit_code: str = ""
    added_at: float = 0.0
    source: str = ""  # file:line it was imported from

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "credit_code": self.credit_code,
            "added_at": self.added_at,
            "source": self.source,
        }


@dataclass(frozen=True)
class ImportResult:
    added: int  # numbers new to the registry
    updated: int  # numbers already there (name or code written again)
    removed: int  # numbers taken out (``replace``)


class EnterpriseRegistry:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def find(self, caller: str) -> Enterprise | None:
        """The business whose number is ``caller``'s, if registered."""
        number = normal_number(caller)
        if not number:
            return None
        row = await self._db.fetch_one(
            "SELECT number, name, credit_code, added_at, source FROM enterprise_numbers "
            "WHERE number = ?",
            (number,),
        )
        return None if row is None else _enterprise(row)

    async def all(self) -> list[Enterprise]:
        rows = await self._db.fetch_all(
            "SELECT number, name, credit_code, added_at, source FROM enterprise_numbers "
            "ORDER BY name, number"
        )
        return [_enterprise(r) for r in rows]

    async def count(self) -> int:
        row = await self._db.fetch_one("SELECT COUNT(*) FROM enterprise_numbers")
        return int(row[0]) if row is not None else 0

    async def put(self, entries: Iterable[Enterprise], *, replace: bool = False) -> ImportResult:
        """Write ``entries`` in one transaction (all or none); ``replace``: the
        registry becomes exactly them (numbers not among them are removed)."""
        wanted = {e.number: e for e in entries}
        now = time.time()
        added = updated = removed = 0
        async with self._db.transaction() as tx:
            known = {str(r[0]) for r in await tx.fetch_all("SELECT number FROM enterprise_numbers")}
            for number, e in wanted.items():
                if number in known:
                    updated += 1
                    await tx.execute(
                        "UPDATE enterprise_numbers SET name = ?, credit_code = ?, source = ? "
                        "WHERE number = ?",
                        (e.name, e.credit_code, e.source, number),
                    )
                else:
                    added += 1
                    await tx.execute(
                        "INSERT INTO enterprise_numbers (number, name, credit_code, added_at, "
                        "source) VALUES (?, ?, ?, ?, ?)",
                        (number, e.name, e.credit_code, now, e.source),
                    )
            if replace:
                for number in sorted(known - set(wanted)):
                    removed += await tx.execute(
                        "DELETE FROM enterprise_numbers WHERE number = ?", (number,)
                    )
        return ImportResult(added, updated, removed)

    async def remove(self, number: str) -> bool:
        normal = normal_number(number)
        if not normal:
            return False
        return (
            await self._db.execute("DELETE FROM enterprise_numbers WHERE number = ?", (normal,)) > 0
        )


def _enterprise(row: Any) -> Enterprise:
    return Enterprise(
        number=str(row[0]),
        name=str(row[1]),
        credit_code=str(row[2] or ""),
        added_at=float(row[3]),
        source=str(row[4] or ""),
    )


class RegistryFileError(Exception):
    """The CSV cannot be imported; ``problems`` are "file:line: what" lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def read_registry_csv(path: Path) -> list[Enterprise]:
    """Every business in the CSV at ``path``; RegistryFileError listing every
    bad line (nothing is taken from a file with one)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RegistryFileError([f"{path}: cannot be read ({exc})"]) from None
    return parse_registry(data, str(path))


def parse_registry(data: bytes, source: str) -> list[Enterprise]:
    """Every business in the CSV ``data`` (a file's or an upload's bytes,
    named ``source`` in the errors: ``source:line: what``); RegistryFileError
    listing every bad line (nothing is taken from a file with one)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RegistryFileError([f"{source}: not UTF-8 ({exc.reason}); save it as UTF-8"]) from None
    try:
        rows = list(enumerate(csv.reader(io.StringIO(text, newline="")), start=1))
    except csv.Error as exc:
        raise RegistryFileError([f"{source}: not CSV ({exc})"]) from None
    found: dict[str, tuple[Enterprise, int]] = {}
    problems: list[str] = []
    first = True
    for line, row in rows:
        cells = [c.strip() for c in row]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue  # an empty line
        where = f"{source}:{line}"
        number = normal_number(cells[0])
        if first and not number:
            first = False
            continue  # a header
        first = False
        if not number:
            problems.append(f"{where}: {cells[0]!r} is not a phone number")
            continue
        if len(cells) > 3:
            problems.append(
                f"{where}: {len(cells)} columns; expected number,name[,统一社会信用代码]"
            )
            continue
        name = cells[1] if len(cells) > 1 else ""
        if not name:
            problems.append(f"{where}: {cells[0]} has no business name (second column)")
            continue
        if len(name) > MAX_NAME:
            problems.append(f"{where}: the name is {len(name)} characters; at most {MAX_NAME}")
            continue
        code = cells[2].upper() if len(cells) > 2 else ""
        if code and not _CREDIT_CODE.fullmatch(code):
            problems.append(
                f"{where}: {cells[2]!r} is not a 统一社会信用代码 "
                "(18 characters: digits and capitals other than I, O, S, V, Z)"
            )
            continue
        entry = Enterprise(number, name, code, source=where)
        earlier = found.get(number)
        if earlier is not None:
            if (earlier[0].name, earlier[0].credit_code) != (name, code):
                problems.append(
                    f"{where}: {number} is already line {earlier[1]}'s "
                    f"({earlier[0].name}); one number, one business"
                )
            continue
        found[number] = (entry, line)
    if problems:
        raise RegistryFileError(problems)
    return [entry for entry, _ in found.values()]


# -- `ivr enterprises ...` ---------------------------------------------------------
def add_enterprise_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    parser = subparsers.add_parser("enterprises", help="the enterprise registry (企业专席)")
    sub = parser.add_subparsers(dest="enterprises_command", required=True)
    importing = sub.add_parser(
        "import", help="add the businesses in a CSV (number,name[,统一社会信用代码])"
    )
    importing.add_argument("file", type=Path)
    importing.add_argument(
        "--replace", action="store_true", help="the registry becomes the file (others removed)"
    )
    importing.set_defaults(func=cmd_import)
    listing = sub.add_parser("list", help="the registered businesses")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_list)
    remove = sub.add_parser("remove", help="take a number out of the registry")
    remove.add_argument("number")
    remove.set_defaults(func=cmd_remove)


def _store_location(args: argparse.Namespace) -> str | Path | None:
    from ivr.config import ConfigError, load_settings

    try:
        return load_settings(args.config).storage.location
    except ConfigError as exc:
        print(f"ivr: {exc}", file=sys.stderr)
        return None


async def _audit(db: Database, action: str, object_id: str, detail: str) -> None:
    import getpass

    from ivr.audit import AuditLog

    await AuditLog(db, node="cli").record(
        action=action, outcome="allowed", user=getpass.getuser(), role="cli",
        object_type="enterprise_registry", object_id=object_id, address="local", detail=detail,
    )  # fmt: skip


def cmd_import(args: argparse.Namespace) -> int:
    from ivr.store import open_store

    try:
        entries = read_registry_csv(args.file)
    except RegistryFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"ivr: nothing imported from {args.file}; fix the lines above", file=sys.stderr)
        return 1
    location = _store_location(args)
    if location is None:
        return 2

    async def run() -> ImportResult:
        db = await open_store(location)
        try:
            result = await EnterpriseRegistry(db).put(entries, replace=args.replace)
            detail = f"{result.added} added, {result.updated} updated, {result.removed} removed"
            await _audit(db, "enterprises.import", str(args.file), detail)
            return result
        finally:
            await db.close()

    result = asyncio.run(run())
    print(
        f"{len(entries)} business number(s) imported: {result.added} new, "
        f"{result.updated} updated, {result.removed} removed"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ivr.store import open_store

    location = _store_location(args)
    if location is None:
        return 2

    async def run() -> list[Enterprise]:
        db = await open_store(location)
        try:
            return await EnterpriseRegistry(db).all()
        finally:
            await db.close()

    found = asyncio.run(run())
    if args.json:
        print(json.dumps([e.to_json() for e in found], ensure_ascii=False, indent=2))
    elif not found:
        print("no registered businesses")
    else:
        for e in found:
            print(f"{e.number:<16} {e.name}  {e.credit_code}".rstrip())
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from ivr.store import open_store

    location = _store_location(args)
    if location is None:
        return 2

    async def run() -> bool:
        db = await open_store(location)
        try:
            gone = await EnterpriseRegistry(db).remove(args.number)
            if gone:
                await _audit(db, "enterprises.remove", normal_number(args.number), "removed")
            return gone
        finally:
            await db.close()

    if asyncio.run(run()):
        print(f"{args.number} removed from the enterprise registry")
        return 0
    print(f"ivr: {args.number} is not in the enterprise registry", file=sys.stderr)
    return 1
