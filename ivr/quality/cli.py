"""``ivr quality draw | list | export``: quality inspection from the command line.

ivr quality draw [--day YYYY-MM-DD]   draw an ended day not drawn yet (yesterday
                                      by default), as the lease holder's round
                                      would; a day drawn already is refused,
                                      saying when, by which node and what
ivr quality list [--day YYYY-MM-DD]   the days drawn; with --day, its samples
ivr quality export FILE.csv [--from D] [--to D]
                                      results per sample and per operator (the
                                      last 30 days by default); no caller details

The lease holder's rounds check the samples a draw added. A draw and an
export are written to the audit log as made by this machine's user (role cli).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ivr.audit import AuditLog
from ivr.config import ConfigError, Settings, load_settings
from ivr.quality.export import checked_day, results_csv
from ivr.quality.samples import QualitySamples
from ivr.store import Database, DatabaseError, open_store

EXPORT_DAYS = 30


def add_quality_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    quality = subparsers.add_parser("quality", help="quality inspection (双重质检)")
    sub = quality.add_subparsers(dest="quality_command", required=True)
    draw = sub.add_parser("draw", help="draw an ended day's sample now (yesterday by default)")
    draw.add_argument("--day", help="YYYY-MM-DD, a day that has ended and was not drawn")
    draw.set_defaults(func=cmd_draw)
    listing = sub.add_parser("list", help="the days drawn; with --day, that day's samples")
    listing.add_argument("--day", help="YYYY-MM-DD")
    listing.set_defaults(func=cmd_list)
    export = sub.add_parser(
        "export", help="results per sample and per operator as CSV (no caller details)"
    )
    export.add_argument("file", type=Path, help="the CSV file to write")
    export.add_argument("--from", dest="start", help=f"first day (default: {EXPORT_DAYS} days ago)")
    export.add_argument("--to", dest="end", help="last day (default: today)")
    export.set_defaults(func=cmd_export)
    return quality


class _Refused(Exception):
    """What the command will not do, and why (exit 1)."""


def _fail(message: str, code: int = 1) -> int:
    print(f"ivr quality: {message}", file=sys.stderr)
    return code


def _run(
    args: argparse.Namespace, work: Callable[[Settings, Database], Awaitable[list[str]]]
) -> int:
    """Run ``work(settings, db)`` on the store the config names; its lines printed."""
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(f"bad config: {exc}", code=2)
    except FileNotFoundError:
        return _fail(f"config file not found: {args.config}", code=2)

    async def go() -> list[str]:
        async with await open_store(settings.storage.location) as db:
            return await work(settings, db)

    try:
        lines = asyncio.run(go())
    except (_Refused, ValueError) as exc:
        return _fail(str(exc))
    except (DatabaseError, OSError) as exc:
        return _fail(str(exc), code=2)
    for line in lines:
        print(line)
    return 0


async def _audit(db: Database, action: str, object_id: str, detail: str) -> None:
    await AuditLog(db, node="cli").record(
        action=action, outcome="allowed", user=getpass.getuser(), role="cli",
        object_type="quality_day", object_id=object_id, address="local", detail=detail,
    )  # fmt: skip


def _local(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def _drawn_already(day: dict[str, object]) -> str:
    late = (
        f"; {day['late_passes']} later pass(es) drew {day['late_picked']} of "
        f"{day['late_candidates']} calls written after it"
        if day["late_passes"]
        else ""
    )
    return (
        f"{day['day']} was drawn already, at {_local(float(str(day['sampled_at'])))} by node "
        f"{day['node']}: {day['picked']} of {day['candidates']} conversations{late}; "
        "a day is drawn once (calls written to the store later are drawn by the "
        "lease holder's later pass)"
    )


def cmd_draw(args: argparse.Namespace) -> int:
    async def work(settings: Settings, db: Database) -> list[str]:
        today = datetime.date.today()
        day = checked_day(args.day, "--day") if args.day else (
            today - datetime.timedelta(days=1)
        ).isoformat()  # fmt: skip
        if day >= today.isoformat():
            raise _Refused(f"{day} has not ended yet: only a day before today is drawn")
        samples = QualitySamples(db)
        drawn = await samples.day(day)
        if drawn is not None:
            raise _Refused(_drawn_already(drawn))
        e = settings.emergency
        got = await samples.draw_day(
            day,
            share=settings.quality.share,
            seed=settings.quality.seed,
            now=time.time(),
            node="cli",
            exclude=tuple(uri for uri in (e.police, e.fire, e.ambulance) if uri),
        )
        if got is None:  # a node's round drew it meanwhile
            again = await samples.day(day)
            raise _Refused(_drawn_already(again) if again else f"{day} was drawn meanwhile")
        said = f"{len(got.picked)} of {got.candidates} conversations"
        await _audit(db, "quality.draw", day, said)
        ids = ", ".join(str(n) for n in got.picked)
        return [
            f"{day}: drew {said} (share {settings.quality.share:g})"
            + (f": samples {ids}" if ids else ""),
            "their automatic checks run on the nodes holding the recordings",
        ]

    return _run(args, work)


def cmd_list(args: argparse.Namespace) -> int:
    async def work(settings: Settings, db: Database) -> list[str]:
        samples = QualitySamples(db)
        if not args.day:
            days = await samples.days()
            if not days:
                return ["no day drawn yet"]
            lines = ["day         drawn      share  at                node  late (drawn/written)"]
            for d in days:
                late = f"{d['late_picked']}/{d['late_candidates']}" if d["late_tracked"] else "-"
                lines.append(
                    f"{d['day']}  {str(d['picked']) + '/' + str(d['candidates']):<9}  "
                    f"{float(d['share']):<5g}  {_local(float(d['sampled_at']))}  "
                    f"{d['node']}  {late}"
                )
            return lines
        day = checked_day(args.day, "--day")
        if await samples.day(day) is None:
            raise _Refused(f"{day} was not drawn (ivr quality draw --day {day})")
        found = await samples.of_days(day, day)
        lines = [
            f"{day}: {len(found)} sample(s)",
            "id  seat  operator  pass  checks  reviews  score",
        ]
        for s in found:
            scores = [int(r["score"]) for r in s.reviews]
            mean = f"{sum(scores) / len(scores):.1f}" if scores else "-"
            where = f" on {s.checked_on}" if s.checked_on else ""
            why = s.checks.get("error") or s.checks.get("waiting") or ""
            lines.append(
                f"{s.id}  {s.seat_code}  {s.operator}  {s.pass_no}  {s.check_state}{where}"
                f"  {len(scores)}  {mean}" + (f"  ({why})" if why else "")
            )
        return lines

    return _run(args, work)


def cmd_export(args: argparse.Namespace) -> int:
    async def work(settings: Settings, db: Database) -> list[str]:
        today = datetime.date.today()
        end = checked_day(args.end, "--to") if args.end else today.isoformat()
        start = (
            checked_day(args.start, "--from")
            if args.start
            else (today - datetime.timedelta(days=EXPORT_DAYS)).isoformat()
        )
        if start > end:
            raise _Refused(f"--from {start} is after --to {end}")
        text, ids = await results_csv(QualitySamples(db), start, end)
        count = len(ids)
        args.file.write_text(text, encoding="utf-8")
        await _audit(db, "quality.export", f"{start}..{end}", f"{count} sample(s) to {args.file}")
        return [f"{args.file}: {count} sample(s) of {start}..{end}, and the results per operator"]

    return _run(args, work)
