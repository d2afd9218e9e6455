"""Merging duplicates (issue 15 item 3): how well the merging rule puts reports
of one matter into one case, measured on labelled streams of reports.

Each report of a stream (tests/data/merge_stream*/reports.tsv) is saved as a
ticket in a real SQLite store, with the fields the prefill gives (category,
district, the address parts found by the prefill's own address parser in the
address said, the city when another was named, the caller's words), in the
order of its minute, and filed (ivr/tickets/cases.py, CaseStore.file) at that
time.  Scored against the true case ids, over pairs of reports:

  merge_precision            of the pairs put in one case, the share truly one matter
  merge_recall               of the pairs truly one matter, the share put in one case
  repeat_dispatch_reduction  dispatches with merging / without (one per case vs one
                             per report; lower is better, the seed's goal < 0.5)

The test stream (tests/data/merge_stream) gives the figures; the development
stream (tests/data/merge_stream_dev, the one the rule was tuned on) is printed
apart and kept under merge_dev_* in bench/results.json.

    .venv/bin/python -m bench.merge            # both streams, writes the figures
    .venv/bin/python -m bench.merge --no-write # print only
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from bench.report import ROOT, machine, merge_results, now, write_section
from ivr.prefill import load_gazetteer
from ivr.prefill.address import find_address
from ivr.prefill.gazetteer import Gazetteer
from ivr.store import open_store
from ivr.tickets import TicketStore
from ivr.tickets.cases import CaseStore, MergeRule

TEST_STREAM = ROOT / "tests" / "data" / "merge_stream" / "reports.tsv"
DEV_STREAM = ROOT / "tests" / "data" / "merge_stream_dev" / "reports.tsv"
START = 1_780_000_000.0  # the streams' minute 0 (epoch seconds)


@dataclass(frozen=True)
class Report:
    report: str
    case: str  # the true case
    minute: int
    phone: str
    city: str
    district: str
    address: str
    category: str
    text: str


@dataclass(frozen=True)
class Scores:
    reports: int
    true_cases: int
    cases: int
    pairs_merged: int
    pairs_true: int
    pairs_right: int

    @property
    def precision(self) -> float:
        return self.pairs_right / self.pairs_merged if self.pairs_merged else 1.0

    @property
    def recall(self) -> float:
        return self.pairs_right / self.pairs_true if self.pairs_true else 1.0

    @property
    def dispatch_ratio(self) -> float:
        """Dispatches with merging / without: one per case vs one per report."""
        return self.cases / self.reports if self.reports else 1.0


def load_stream(path: Path) -> list[Report]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    reports = [
        Report(
            r["report"],
            r["case"],
            int(r["minute"]),
            r["phone"],
            r["city"],
            r["district"],
            r["address"],
            r["category"],
            r["text"],
        )
        for r in rows
    ]
    return sorted(reports, key=lambda r: (r.minute, r.report))


def score(truth: Mapping[str, str], found: Mapping[str, str]) -> Scores:
    """Pairwise scores of ``found`` (report -> case given) against ``truth``
    (report -> true case), over the reports of ``truth``."""
    ids = sorted(truth)
    merged = {(a, b) for a, b in combinations(ids, 2) if found[a] == found[b]}
    true = {(a, b) for a, b in combinations(ids, 2) if truth[a] == truth[b]}
    return Scores(
        reports=len(ids),
        true_cases=len(set(truth.values())),
        cases=len({found[i] for i in ids}),
        pairs_merged=len(merged),
        pairs_true=len(true),
        pairs_right=len(merged & true),
    )


def _fields(report: Report, gazetteer: Gazetteer) -> dict[str, object]:
    address = find_address(report.address, gazetteer) if report.address else None
    parts = address.as_dict() if address is not None else {}
    if report.city:
        parts["city"] = report.city

    def said(value: object) -> dict[str, object]:
        return {"value": value, "evidence": [], "source": "speech" if value else "default"}

    return {
        "category": said(report.category),
        "district": said(report.district or None),
        "address": said(report.address or None),
        "address_parts": said(parts),
        "phone": said(report.phone),
    }


async def run_stream(
    reports: Iterable[Report], rule: MergeRule, directory: Path
) -> dict[str, str]:
    """Each report saved and filed in a fresh SQLite store: report -> case id."""
    gazetteer = load_gazetteer(ROOT / "gazetteer.toml")
    found: dict[str, str] = {}
    async with await open_store(directory / "merge.sqlite3") as db:
        tickets = TicketStore(db)
        cases = CaseStore(db, tickets, rule)
        for report in reports:
            ticket = await tickets.create(report.report, report.phone)
            await tickets.apply_prefill(ticket.id, _fields(report, gazetteer), report.text, None)
            filing = await cases.file(ticket.id, at=START + report.minute * 60.0)
            found[report.report] = str(filing.case.id)
    return found


async def measure(path: Path, rule: MergeRule) -> tuple[Scores, dict[str, str]]:
    reports = load_stream(path)
    with tempfile.TemporaryDirectory() as tmp:
        found = await run_stream(reports, rule, Path(tmp))
    return score({r.report: r.case for r in reports}, found), found


def _line(name: str, s: Scores) -> str:
    return (
        f"{name}: {s.reports} reports, {s.true_cases} true cases, {s.cases} cases made; "
        f"merge_precision {s.precision:.3f} ({s.pairs_right}/{s.pairs_merged} pairs), "
        f"merge_recall {s.recall:.3f} ({s.pairs_right}/{s.pairs_true}), "
        f"repeat_dispatch_reduction {s.dispatch_ratio:.3f} "
        f"(best possible {s.true_cases / s.reports:.3f})"
    )


def _misses(path: Path, found: Mapping[str, str]) -> list[str]:
    """Reports put apart from their case, or with another case (for tuning on dev)."""
    reports = {r.report: r for r in load_stream(path)}
    lines = []
    for a, b in combinations(sorted(reports), 2):
        same_true = reports[a].case == reports[b].case
        same_found = found[a] == found[b]
        if same_true != same_found:
            kind = "apart" if same_true else "WRONG"
            lines.append(f"  {kind} {a} {b}: {reports[a].text[:30]} | {reports[b].text[:30]}")
    return lines


def _table(test: Scores, dev: Scores) -> str:
    head = (
        "| stream | reports | true cases | cases made | merge_precision | merge_recall "
        "| repeat_dispatch_reduction |\n|---|---|---|---|---|---|---|"
    )
    rows = [
        ("test (tests/data/merge_stream, never tuned on)", test),
        ("dev (tests/data/merge_stream_dev, tuned on)", dev),
    ]
    lines = [
        f"| {name} | {s.reports} | {s.true_cases} | {s.cases} | {s.precision:.3f} "
        f"| {s.recall:.3f} | {s.dispatch_ratio:.3f} |"
        for name, s in rows
    ]
    return "\n".join([head, *lines])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print, write nothing")
    parser.add_argument("--dev-misses", action="store_true", help="list the dev stream's misses")
    parser.add_argument(
        "--dev-only", action="store_true", help="the dev stream only (while tuning the rule)"
    )
    args = parser.parse_args()
    rule = MergeRule(home_city="杭州市")
    dev, dev_found = asyncio.run(measure(DEV_STREAM, rule))
    print(_line("dev stream (tuned on)", dev))
    if args.dev_misses:
        print("\n".join(_misses(DEV_STREAM, dev_found)))
    if args.dev_only:
        return 0
    test, _ = asyncio.run(measure(TEST_STREAM, rule))
    print(_line("test stream", test))
    if args.no_write:
        return 0
    merge_results(
        {
            "merge_precision": round(test.precision, 3),
            "merge_recall": round(test.recall, 3),
            "repeat_dispatch_reduction": round(test.dispatch_ratio, 3),
            "merge_dev_precision": round(dev.precision, 3),
            "merge_dev_recall": round(dev.recall, 3),
            "merge_dev_repeat_dispatch_reduction": round(dev.dispatch_ratio, 3),
        }
    )
    m = machine()
    window_h = rule.window / 3600
    write_section(
        "Merging duplicates (bench/merge.py)",
        f"""
Measured {now()} on {m["cpu"]} ({m["nproc"]} CPUs), Python {m["python"]}: each report
saved as a ticket in a real SQLite store and filed by ivr/tickets/cases.py (window
{window_h:g} h from a case's latest report), in the order of its minute; scored over
pairs of reports against the true case ids.

{_table(test, dev)}

repeat_dispatch_reduction is dispatches with merging / without (one per case, one per
report); the seed's figure is "more than half fewer", i.e. below 0.5. The best any rule
could reach on the test stream is {test.true_cases / test.reports:.3f} (one dispatch per
true case): the stream has many single reports, so the ratio is bounded by what was
written, not only by the rule.
""",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
