"""Past calls: `ivr calls list | show` and the JSON of a call record for
GET /api/calls (ivr.web.api)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ivr.call_records import MAX_RECENT, CallRecord
from ivr.logs import mask_phone


def duration(record: CallRecord) -> float | None:
    """Seconds from the INVITE to the end of the call; None while it lasts."""
    if record.ended_at is None:
        return None
    return round(max(0.0, record.ended_at - record.started_at), 1)


def record_json(record: CallRecord) -> dict[str, Any]:
    """Every field of the record, and its duration in seconds."""
    return {**asdict(record), "duration": duration(record)}


def _local(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def list_lines(records: list[CallRecord], *, unmasked: bool = False) -> list[str]:
    """A table of calls, one line each (as given: list_recent is newest first)."""
    show = (lambda n: n) if unmasked else mask_phone
    rows = [
        (
            r.call_id,
            _local(r.started_at),
            show(r.caller),
            show(r.dialled),
            r.outcome or "-",
            r.end_reason or "-",
            "-" if duration(r) is None else f"{duration(r):.1f}s",
            r.operator or "-",
        )
        for r in records
    ]
    head = (
        "call_id",
        "started",
        "caller",
        "dialled",
        "outcome",
        "end_reason",
        "duration",
        "operator",
    )
    widths = [max([len(head[i]), *(len(row[i]) for row in rows)]) for i in range(len(head) - 1)]
    return [
        "  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False))
        + f"  {row[-1]}"
        for row in (head, *rows)
    ]


def show_lines(record: CallRecord, ticket_ids: list[int], *, unmasked: bool = False) -> list[str]:
    """Every field of one record, one ``name: value`` a line, then its tickets."""
    show = (lambda n: n) if unmasked else mask_phone
    values = record_json(record)
    lines = []
    for name, value in values.items():
        if name in ("caller", "dialled"):
            text = show(str(value))
        elif name in ("started_at", "answered_at", "ended_at"):
            text = "-" if value is None else f"{_local(value)} ({value:.3f})"
        elif name == "path":
            text = " > ".join(value) or "-"
        elif name == "duration":
            text = "-" if value is None else f"{value:.1f}s"
        else:
            text = "-" if value in (None, "") else str(value)
        lines.append(f"{name + ':':<14}{text}")
    tickets = ", ".join(str(t) for t in ticket_ids) or "-"
    lines.append(f"{'tickets:':<14}{tickets}")
    return lines


def cmd_calls(args: argparse.Namespace) -> int:
    """`ivr calls list [--limit N] | show CALL_ID`: the call records."""
    from ivr.call_records import CallRecordError, CallRecordStore
    from ivr.cli import _settings
    from ivr.store import DatabaseError, open_store
    from ivr.tickets import TicketStore

    settings = _settings(args.config)
    path = settings.storage.location
    if isinstance(path, Path) and not path.is_file():
        print(
            f"ivr: no database at {path} (from {args.config}): no call was recorded with "
            "this config yet, or [storage] url points elsewhere",
            file=sys.stderr,
        )
        return 2
    if args.calls_command == "list" and not 0 <= args.limit <= MAX_RECENT:
        print(f"ivr: --limit must be 0..{MAX_RECENT}, got {args.limit}", file=sys.stderr)
        return 2

    async def run() -> list[str] | None:
        db = await open_store(path)
        try:
            records = CallRecordStore(db)
            if args.calls_command == "list":
                return list_lines(await records.list_recent(args.limit), unmasked=args.unmasked)
            record = await records.get(args.call_id)
            if record is None:
                return None
            tickets = await TicketStore(db).for_call(record.call_id)
            return show_lines(record, [t.id for t in tickets], unmasked=args.unmasked)
        finally:
            await db.close()

    try:
        lines = asyncio.run(run())
    except (CallRecordError, DatabaseError) as exc:
        print(f"ivr: {exc}", file=sys.stderr)
        return 1
    if lines is None:
        print(f"no call {args.call_id}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def add_calls_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    masked = (
        "phone numbers are masked like the logs mask them (137****1234) unless --unmasked is given"
    )
    calls = sub.add_parser(
        "calls", help="past calls (the call records)", description=f"Past calls; {masked}."
    )
    calls_sub = calls.add_subparsers(dest="calls_command", required=True)
    listing = calls_sub.add_parser(
        "list",
        help="recent calls, newest first",
        description=f"Recent calls, newest first; {masked}. Times are local.",
    )
    listing.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    show = calls_sub.add_parser(
        "show",
        help="every field of one call, and its tickets",
        description=f"Every field of one call record, and its ticket ids; {masked}.",
    )
    show.add_argument("call_id", help="the call's SIP Call-ID, as `ivr calls list` shows it")
    for one in (listing, show):
        one.add_argument("--unmasked", action="store_true", help="show whole phone numbers")
        one.set_defaults(func=cmd_calls)
