"""``ivr dispatch check | show``: the duty list from the command line.

ivr dispatch check [--duty-list FILE]   check a duty list (the config's by
                                        default) against the taxonomy and
                                        gazetteer; every mistake as file:line
ivr dispatch show TICKET                a dispatched ticket, from the store
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ivr.config import ConfigError, load_settings
from ivr.prefill import PrefillDataError, load_gazetteer, load_taxonomy
from ivr.store import DatabaseError, open_store
from ivr.tickets.dispatch import LEVEL_NAMES, STATES, Dispatches
from ivr.tickets.duty_list import DutyListError, load_duty_list


def add_dispatch_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    dispatch = subparsers.add_parser("dispatch", help="the duty list and dispatched tickets")
    sub = dispatch.add_subparsers(dest="dispatch_command", required=True)
    check = sub.add_parser("check", help="check a duty list (权责清单); mistakes as file:line")
    check.add_argument("--duty-list", type=Path, help="the file (default: [dispatch] duty_list)")
    check.set_defaults(func=cmd_check)
    show = sub.add_parser("show", help="where a dispatched ticket is, its level and time")
    show.add_argument("ticket", type=int)
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


def cmd_show(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(f"bad config: {exc}", code=2)

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
