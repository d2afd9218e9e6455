"""Quality results as CSV (`ivr quality export`, /api/admin/quality/results.csv):
one row per sample of the days asked (its seat code and operator, the checks'
states, its reviews) and one per operator (how many sampled, checked and
reviewed, each check failed of ran, the average score). No caller details: no
call id, number or transcript. UTF-8 with a BOM (spreadsheets read Chinese);
every text cell made safe from formulas (CSV injection)."""

from __future__ import annotations

import csv
import datetime
import io
from typing import Any

from ivr.quality.checks import CHECKS, NOT_RUN
from ivr.quality.samples import QualitySamples, Sample
from ivr.tickets.search import spreadsheet_cell

HEADER = (
    "row", "day", "sample", "seat", "operator", "name", "late_pass", "check_state",
    *CHECKS, "reviews", "average_score", "sampled", "checked",
)  # fmt: skip


def _local(at: float | None) -> str:
    if at is None:
        return ""
    return datetime.datetime.fromtimestamp(at).isoformat(sep=" ", timespec="minutes")


def _sample_row(sample: Sample, name: str | None) -> list[Any]:
    scores = [int(r["score"]) for r in sample.reviews]
    return [
        "sample",
        sample.day,
        sample.id,
        sample.seat_code,
        spreadsheet_cell(sample.operator),
        spreadsheet_cell(name),
        sample.pass_no,
        sample.check_state,
        *(sample.checks.get(c, {}).get("state", NOT_RUN) if sample.check_state == "done" else ""
          for c in CHECKS),
        len(scores),
        round(sum(scores) / len(scores), 1) if scores else "",
        "",
        "",
    ]  # fmt: skip


def _operator_row(o: dict[str, Any], start: str, end: str) -> list[Any]:
    return [
        "operator",
        f"{start}..{end}",
        "",
        "",
        spreadsheet_cell(o["operator"]),
        spreadsheet_cell(o["name"]),
        "",
        "",
        *(f"{o['checks'][c]['failed']}/{o['checks'][c]['ran']} failed" for c in CHECKS),
        o["reviews"],
        "" if o["average_score"] is None else o["average_score"],
        o["sampled"],
        o["checked"],
    ]


async def results_csv(samples: QualitySamples, start: str, end: str) -> tuple[str, list[int]]:
    """The CSV of days ``start``..``end`` (YYYY-MM-DD), and the ids of its samples."""
    per_operator = await samples.results(start, end)
    names = {o["operator"]: o["name"] for o in per_operator}
    found = await samples.of_days(start, end)
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(HEADER)
    for sample in found:
        writer.writerow(_sample_row(sample, names.get(sample.operator)))
    for o in per_operator:
        writer.writerow(_operator_row(o, start, end))
    return out.getvalue(), [sample.id for sample in found]


def checked_day(value: str, what: str) -> str:
    """``value`` if it is a date YYYY-MM-DD; ValueError naming ``what`` otherwise."""
    try:
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"{what} {value[:20]!r}: want a date like 2026-11-25") from None


__all__ = ["HEADER", "checked_day", "results_csv"]
