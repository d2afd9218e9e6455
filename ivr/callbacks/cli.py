"""`ivr callbacks list | show ID | cancel ID | retry ID`.

``add_callback_commands(subparsers)`` adds the ``callbacks`` command to the
``ivr`` parser; its handlers read ``args.config`` (the top-level --config
option) and open the database named by [storage] database.  Run alone as
``python -m ivr.callbacks.cli --config config.toml callbacks list``.
"""

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

from ivr.callbacks.model import Callback, CallbackEvent, CallbackState
from ivr.callbacks.policy import CallbackPolicy
from ivr.callbacks.queue import CallbackError, CallbackQueue
from ivr.config import ConfigError, Settings, load_settings
from ivr.store import DatabaseError, open_store

PolicyFor = Callable[[Settings], CallbackPolicy]
T = TypeVar("T")

PROG = "ivr callbacks"


def default_policy(settings: Settings) -> CallbackPolicy:
    """The policy when the config has no callback settings of its own."""
    return CallbackPolicy()


def add_callback_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    policy_for: PolicyFor = default_policy,
) -> argparse.ArgumentParser:
    """Add ``callbacks list | show | cancel | retry`` to ``subparsers``.

    ``policy_for(settings)`` gives the callback policy (quiet hours, time
    zone) used by ``retry`` and to show times; pass one that reads the
    config's callback settings."""
    callbacks = subparsers.add_parser("callbacks", help="dropped-call callback queue")
    callbacks.set_defaults(policy_for=policy_for)
    sub = callbacks.add_subparsers(dest="callbacks_command", required=True)

    listing = sub.add_parser("list", help="list callbacks (open ones in dial order first)")
    listing.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in CallbackState],
        help="only callbacks in this state (repeat for several)",
    )
    listing.add_argument("--open", action="store_true", help="only open callbacks")
    listing.add_argument("--number", help="only callbacks to this number")
    listing.add_argument("--limit", type=int, default=100, help="at most N (default 100)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_callbacks_list)

    show = sub.add_parser("show", help="one callback and every change it went through")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_callbacks_show)

    cancel = sub.add_parser("cancel", help="cancel an open callback")
    cancel.add_argument("id", type=int)
    cancel.add_argument(
        "--reason", default="cancelled by an administrator", help="why (kept with the callback)"
    )
    cancel.add_argument("--json", action="store_true", help="print JSON")
    cancel.set_defaults(func=cmd_callbacks_cancel)

    retry = sub.add_parser("retry", help="dial a callback again now (attempts are kept)")
    retry.add_argument("id", type=int)
    retry.add_argument("--json", action="store_true", help="print JSON")
    retry.set_defaults(func=cmd_callbacks_retry)
    return callbacks


# ---------------------------------------------------------------- handlers


def cmd_callbacks_list(args: argparse.Namespace) -> int:
    states: list[str] | None = args.state
    if args.open:
        open_states = [s.value for s in CallbackState if s.is_open]
        states = [s for s in states if s in open_states] if states else open_states
    if not 0 <= args.limit <= 10_000:
        return _fail("--limit must be 0..10000")

    async def run(queue: CallbackQueue) -> list[Callback]:
        return await queue.list(states, number=args.number, limit=args.limit)

    found = _run(args, run)
    if isinstance(found, int):
        return found
    if args.json:
        _print_json([cb.to_json() for cb in found])
    elif not found:
        print("no callbacks")
    else:
        policy = _policy(args)
        for line in _table(found, policy):
            print(line)
    return 0


def cmd_callbacks_show(args: argparse.Namespace) -> int:
    async def run(queue: CallbackQueue) -> tuple[Callback | None, list[CallbackEvent]]:
        return await queue.get(args.id), await queue.events(args.id)

    found = _run(args, run)
    if isinstance(found, int):
        return found
    cb, events = found
    if cb is None:
        return _fail(f"no callback with id {args.id}")
    if args.json:
        _print_json({"callback": cb.to_json(), "events": [e.to_json() for e in events]})
        return 0
    policy = _policy(args)
    for line in _table([cb], policy):
        print(line)
    for event in events:
        before = event.from_state.value if event.from_state is not None else "-"
        print(f"  {_local(event.at, policy)}  {before} -> {event.to_state}  {event.detail}")
    return 0


def cmd_callbacks_cancel(args: argparse.Namespace) -> int:
    async def run(queue: CallbackQueue) -> Callback:
        return await queue.cancel(args.id, args.reason, now=time.time())

    return _report(args, run, "cancelled")


def cmd_callbacks_retry(args: argparse.Namespace) -> int:
    async def run(queue: CallbackQueue) -> Callback:
        return await queue.retry(args.id, now=time.time(), detail="retry requested from the CLI")

    return _report(args, run, "due again")


# ---------------------------------------------------------------- plumbing


def _report(
    args: argparse.Namespace, action: Callable[[CallbackQueue], Awaitable[Callback]], what: str
) -> int:
    cb = _run(args, action)
    if isinstance(cb, int):
        return cb
    if args.json:
        _print_json(cb.to_json())
    else:
        when = f" (next at {_local(cb.next_at, _policy(args))})" if cb.state.is_waiting else ""
        print(f"callback {cb.id} to {cb.number}: {what}, {cb.state}{when}")
    return 0


def _run(args: argparse.Namespace, action: Callable[[CallbackQueue], Awaitable[T]]) -> T | int:
    """Open the database from the config, run ``action``; an exit code on error."""
    config: Path = args.config
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        return _fail(f"bad config: {exc}", code=2)
    try:
        policy = args.policy_for(settings)
    except ValueError as exc:
        return _fail(f"bad callback settings in {config}: {exc}", code=2)
    args.policy = policy

    async def go() -> T:
        async with await open_store(settings.storage.location) as db:
            return await action(CallbackQueue(db, policy))

    try:
        return asyncio.run(go())
    except DatabaseError as exc:
        return _fail(str(exc), code=2)
    except (CallbackError, ValueError) as exc:
        return _fail(str(exc))


def _policy(args: argparse.Namespace) -> CallbackPolicy:
    policy: CallbackPolicy = args.policy
    return policy


def _fail(message: str, *, code: int = 1) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _local(at: float, policy: CallbackPolicy) -> str:
    return datetime.fromtimestamp(at, policy.zone).strftime("%Y-%m-%d %H:%M:%S")


def _table(callbacks: list[Callback], policy: CallbackPolicy) -> list[str]:
    header = ("id", "state", "reason", "number", "prio", "tries", "next at", "ticket", "last error")
    rows = [
        (
            str(cb.id),
            cb.state.value,
            cb.reason.value,
            cb.number,
            str(cb.priority),
            str(cb.attempts),
            _local(cb.next_at, policy) if cb.state.is_waiting else "-",
            str(cb.ticket_id) if cb.ticket_id is not None else "-",
            cb.last_error or "",
        )
        for cb in callbacks
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *rows)
    ]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m ivr.callbacks.cli``: ``--config`` and ``callbacks``."""
    parser = argparse.ArgumentParser(prog="python -m ivr.callbacks.cli")
    parser.add_argument(
        "--config", type=Path, default=Path("config.toml"), help="config file (./config.toml)"
    )
    add_callback_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
