"""`ivr followups list | show ID | cancel ID | retry ID` (retry = re-run).

Reads the store named by the config's [storage]; a running hotline picks up a
re-run follow-up at its dialler's next round (within 30 s)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ivr.config import ConfigError, load_settings
from ivr.followups.model import Followup, FollowupState, Outcome
from ivr.followups.queue import FollowupError, FollowupQueue
from ivr.followups.service import followup_policy
from ivr.store import DatabaseError, open_store

T = TypeVar("T")
PROG = "ivr followups"


def add_followup_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    followups = subparsers.add_parser("followups", help="follow-up calls after closed tickets")
    sub = followups.add_subparsers(dest="followups_command", required=True)
    listing = sub.add_parser("list", help="list follow-ups (open ones, soonest due, first)")
    listing.add_argument("--state", action="append", choices=[s.value for s in FollowupState])
    listing.add_argument("--outcome", choices=[o.value for o in Outcome])
    listing.add_argument("--ticket", type=int, help="only this ticket's")
    listing.add_argument("--limit", type=int, default=100, help="at most N (default 100)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="one follow-up and every change it went through")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_show)
    cancel = sub.add_parser("cancel", help="cancel an open follow-up")
    cancel.add_argument("id", type=int)
    cancel.add_argument("--reason", default="cancelled by an administrator", help="why")
    cancel.add_argument("--json", action="store_true", help="print JSON")
    cancel.set_defaults(func=cmd_cancel)
    retry = sub.add_parser("retry", help="run a follow-up again from its first attempt")
    retry.add_argument("id", type=int)
    retry.add_argument("--json", action="store_true", help="print JSON")
    retry.set_defaults(func=cmd_retry)
    return followups


def cmd_list(args: argparse.Namespace) -> int:
    if not 0 <= args.limit <= 10_000:
        return _fail("--limit must be 0..10000")
    found = _run(
        args,
        lambda q: q.list(args.state, ticket_id=args.ticket, outcome=args.outcome, limit=args.limit),
    )
    if isinstance(found, int):
        return found
    if args.json:
        _print_json([f.to_json() for f in found])
    elif not found:
        print("no follow-ups")
    else:
        for line in _table(found, args):
            print(line)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    async def run(queue: FollowupQueue) -> tuple[Followup | None, list[Any]]:
        return await queue.get(args.id), await queue.events(args.id)

    found = _run(args, run)
    if isinstance(found, int):
        return found
    followup, events = found
    if followup is None:
        return _fail(f"no follow-up with id {args.id}")
    if args.json:
        _print_json({"followup": followup.to_json(), "events": [e.to_json() for e in events]})
        return 0
    for line in _table([followup], args):
        print(line)
    for event in events:
        before = event.from_state.value if event.from_state is not None else "-"
        print(f"  {_local(event.at, args)}  {before} -> {event.to_state}  {event.detail}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    return _report(args, lambda q: q.cancel(args.id, args.reason, now=time.time()), "cancelled")


def cmd_retry(args: argparse.Namespace) -> int:
    return _report(args, lambda q: q.rerun(args.id, now=time.time(), who="the CLI"), "due again")


def _report(
    args: argparse.Namespace, action: Callable[[FollowupQueue], Awaitable[Followup]], what: str
) -> int:
    f = _run(args, action)
    if isinstance(f, int):
        return f
    if args.json:
        _print_json(f.to_json())
    else:
        when = f" (next at {_local(f.next_at, args)})" if f.state.is_waiting else ""
        print(f"follow-up {f.id} of ticket {f.ticket_id} to {f.number}: {what}, {f.state}{when}")
    return 0


def _run(args: argparse.Namespace, action: Callable[[FollowupQueue], Awaitable[T]]) -> T | int:
    config: Path = args.config
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        return _fail(f"bad config: {exc}", code=2)
    policy = followup_policy(settings.followups)
    args.zone = policy.zone

    async def go() -> T:
        async with await open_store(settings.storage.location) as db:
            return await action(FollowupQueue(db, policy))

    try:
        return asyncio.run(go())
    except DatabaseError as exc:
        return _fail(str(exc), code=2)
    except (FollowupError, ValueError) as exc:
        return _fail(str(exc))


def _fail(message: str, *, code: int = 1) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _local(at: float, args: argparse.Namespace) -> str:
    return datetime.fromtimestamp(at, args.zone).strftime("%Y-%m-%d %H:%M:%S")


def _table(followups: list[Followup], args: argparse.Namespace) -> list[str]:
    header = ("id", "ticket", "number", "state", "outcome", "tries", "next at", "comment")
    rows = [
        (
            str(f.id),
            str(f.ticket_id),
            f.number or "-",
            f.state.value,
            f.outcome.value if f.outcome is not None else "-",
            str(f.attempts),
            _local(f.next_at, args) if f.state.is_waiting else "-",
            f.comment or "",
        )
        for f in followups
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *rows)
    ]
