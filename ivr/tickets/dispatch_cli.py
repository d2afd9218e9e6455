"""``ivr dispatch check | publish | history | rollback | show``: the duty list
from the command line.

ivr dispatch check [--duty-list FILE]   check a duty list (the config's by
                                        default) against the taxonomy and
                                        gazetteer; every mistake as file:line
ivr dispatch publish FILE [--note N]    check it, then store it as the newest
                                        version: every node runs it within a few
                                        seconds (nothing stored on a mistake)
ivr dispatch history                    the published versions, newest first
ivr dispatch rollback ID                publish version ID's text again
ivr dispatch show                       the duty list the nodes run
ivr dispatch show TICKET                a dispatched ticket, from the store

A publish and a rollback are audited as the machine user's (role cli).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import sys
from pathlib import Path

from ivr.audit import AuditLog
from ivr.config import ConfigError, Settings, load_settings
from ivr.prefill import PrefillDataError, load_gazetteer, load_taxonomy
from ivr.store import Database, DatabaseError, open_store
from ivr.tickets.dispatch import LEVEL_NAMES, STATES, Dispatches
from ivr.tickets.duty_list import DutyList, DutyListError, load_duty_list, parse_duty_list
from ivr.tickets.duty_store import (
    CHECK_ERRORS,
    DutyListStore,
    DutyListVersion,
    check_size,
    stored_name,
)


def add_dispatch_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    dispatch = subparsers.add_parser("dispatch", help="the duty list and dispatched tickets")
    sub = dispatch.add_subparsers(dest="dispatch_command", required=True)
    check = sub.add_parser("check", help="check a duty list (权责清单); mistakes as file:line")
    check.add_argument("--duty-list", type=Path, help="the file (default: [dispatch] duty_list)")
    check.set_defaults(func=cmd_check)
    publish = sub.add_parser(
        "publish", help="check a duty list and publish it to every node (through the store)"
    )
    publish.add_argument("file", type=Path)
    publish.add_argument("--note", default="", help="what changed (kept in the history)")
    publish.set_defaults(func=cmd_publish)
    history = sub.add_parser("history", help="the published duty lists, newest first")
    history.set_defaults(func=cmd_history)
    rollback = sub.add_parser("rollback", help="publish an earlier version's list again")
    rollback.add_argument("version", type=int, help="the version's # (see history)")
    rollback.set_defaults(func=cmd_rollback)
    show = sub.add_parser(
        "show", help="the duty list the nodes run; with TICKET: where a dispatched ticket is"
    )
    show.add_argument("ticket", type=int, nargs="?")
    show.set_defaults(func=cmd_show)
    return dispatch


def _fail(message: str, code: int = 1) -> int:
    print(f"ivr dispatch: {message}", file=sys.stderr)
    return code


def cmd_check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(f"bad config: {exc}", code=2)
    path = args.duty_list or settings.dispatch.duty_list
    if path is None:
        return _fail("no duty list: give --duty-list or set [dispatch] duty_list", code=2)
    try:
        duty = load_duty_list(
            path,
            categories=load_taxonomy(settings.tickets.taxonomy).names,
            districts=load_gazetteer(settings.tickets.gazetteer).districts,
        )
    except (DutyListError, PrefillDataError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"{path}: ok, version {duty.version}: {len(duty.departments)} departments, "
        f"{len(duty.duties)} duties"
    )
    return 0


def _checker(settings: Settings) -> tuple[frozenset[str], frozenset[str]]:
    tickets = settings.tickets
    return (
        frozenset(load_taxonomy(tickets.taxonomy).names),
        frozenset(load_gazetteer(tickets.gazetteer).districts),
    )


def _check(settings: Settings, text: str, name: str) -> DutyList:
    """``text`` checked as a node with this config checks it (CHECK_ERRORS)."""
    check_size(text, name)
    categories, districts = _checker(settings)
    return parse_duty_list(text, name, categories=categories, districts=districts)


def _seed(settings: Settings) -> str | None:
    """The config's duty list file, if it checks: kept as the first version
    when nothing was published yet."""
    path = settings.dispatch.duty_list
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
        _check(settings, text, str(path))
    except (OSError, UnicodeDecodeError, *CHECK_ERRORS):
        return None
    return text


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).isoformat(sep=" ", timespec="seconds")


def _said(entry: DutyListVersion) -> str:
    note = f" ({entry.note})" if entry.note else ""
    when = _when(entry.published_at)
    return f"#{entry.id} version {entry.version} by {entry.author} at {when}{note}"


async def _audited(db: Database, action: str, entry: DutyListVersion) -> None:
    await AuditLog(db, node="cli").record(
        action=action, outcome="allowed", user=getpass.getuser(), role="cli",
        object_type="duty_list", object_id=str(entry.id), address="local",
        detail=f"version {entry.version}" + (f"; {entry.note}" if entry.note else ""),
    )  # fmt: skip


def _publish(settings: Settings, text: str, *, note: str, action: str) -> DutyListVersion:
    async def go() -> DutyListVersion:
        async with await open_store(settings.storage.location) as db:
            entry = await DutyListStore(db).publish(
                text, author=f"{getpass.getuser()} (cli)", note=note, seed=_seed(settings)
            )
            await _audited(db, action, entry)
            return entry

    return asyncio.run(go())


FOLLOWED = (
    "every node runs it within a few seconds "
    "(a node that cannot check it keeps its list and logs why)"
)


def cmd_publish(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(f"bad config: {exc}", code=2)
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"{args.file}: cannot read: {exc}", code=2)
    try:
        duty = _check(settings, text, str(args.file))
    except CHECK_ERRORS as exc:
        print(exc, file=sys.stderr)
        return _fail("nothing published")
    try:
        entry = _publish(settings, text, note=args.note, action="duty_list.publish")
    except DatabaseError as exc:
        return _fail(str(exc), code=2)
    print(
        f"published duty list {_said(entry)}: {len(duty.departments)} departments, "
        f"{len(duty.duties)} duties; {FOLLOWED}"
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(f"bad config: {exc}", code=2)

    async def stored() -> str | None:
        async with await open_store(settings.storage.location) as db:
            found = await DutyListStore(db).get(args.version)
            return found.text if found is not None else None

    try:
        text = asyncio.run(stored())
    except DatabaseError as exc:
        return _fail(str(exc), code=2)
    if text is None:
        return _fail(f"no published duty list #{args.version} (see `ivr dispatch history`)")
    try:
        _check(settings, text, stored_name(args.version))
    except CHECK_ERRORS as exc:
        print(exc, file=sys.stderr)
        return _fail(f"#{args.version} does not check now: nothing published")
    try:
        entry = _publish(
            settings, text, note=f"rollback to #{args.version}", action="duty_list.rollback"
        )
    except DatabaseError as exc:
        return _fail(str(exc), code=2)
    print(f"published duty list {_said(entry)}; {FOLLOWED}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(f"bad config: {exc}", code=2)

    async def go() -> list[DutyListVersion]:
        async with await open_store(settings.storage.location) as db:
            return await DutyListStore(db).history()

    try:
        versions = asyncio.run(go())
    except DatabaseError as exc:
        return _fail(str(exc), code=2)
    if not versions:
        print("no duty list published: each node runs its own file ([dispatch] duty_list)")
    for entry in versions:
        print(_said(entry))
    return 0


def _show_running(settings: Settings) -> int:
    async def go() -> DutyListVersion | None:
        async with await open_store(settings.storage.location) as db:
            return await DutyListStore(db).newest_entry()

    try:
        newest = asyncio.run(go())
    except DatabaseError as exc:
        return _fail(str(exc), code=2)
    if newest is not None:
        print(
            f"duty list {_said(newest)}, published through the store: every node that can "
            "check it runs it (a node that cannot logs why and shows it on /admin/duty-list)"
        )
        return 0
    path = settings.dispatch.duty_list
    if path is None:
        print("no duty list: nothing published and no [dispatch] duty_list (dispatch is off)")
        return 0
    try:
        categories, districts = _checker(settings)
        duty = load_duty_list(path, categories=categories, districts=districts)
    except CHECK_ERRORS as exc:
        print(exc, file=sys.stderr)
        return _fail("nothing published, and this node's file does not check")
    print(
        f"nothing published: each node runs its own file; here {path} version {duty.version} "
        f"({len(duty.departments)} departments, {len(duty.duties)} duties)"
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(f"bad config: {exc}", code=2)
    if args.ticket is None:
        return _show_running(settings)

    async def go() -> str | None:
        async with await open_store(settings.storage.location) as db:
            found = await Dispatches(db).get(args.ticket)
            if found is None:
                return None
            level = f"{found.level} {LEVEL_NAMES[found.level]}" if found.level else "0"
            return (
                f"ticket {found.ticket_id}: {found.department}, {found.state} "
                f"({'/'.join(STATES)}), level {level}, passes {found.passes}, "
                f"due {found.due_at:.0f}" + (f", result: {found.result}" if found.result else "")
            )

    try:
        line = asyncio.run(go())
    except DatabaseError as exc:
        return _fail(str(exc), code=2)
    if line is None:
        return _fail(f"ticket {args.ticket} was not dispatched")
    print(line)
    return 0
