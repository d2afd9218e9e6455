"""The follow-up figures the dashboard shows: coverage (closed tickets
followed up / closed tickets) and satisfaction by category, district and day.

A closed ticket is one closed in the window: a follow-up was queued for it
then (``followups.closed_at``), or it is closed now and was last changed
then (closed while follow-ups were off).  It counts as followed up when its
latest follow-up got an answer (满意, 基本满意 or 不满意); one that never
answered, is still being dialled, or was cancelled does not.  A ticket that
不满意 reopened still counts: it was closed, and followed up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from ivr.followups.model import ANSWERS, Outcome
from ivr.followups.queue import fields_of
from ivr.store import Database

NOT_SAID = "(未填)"  # a ticket without a category or district


@dataclass
class Tally:
    closed: int = 0
    followed_up: int = 0
    outcomes: dict[str, int] = field(
        default_factory=lambda: {o.value: 0 for o in (*ANSWERS, Outcome.NO_ANSWER)}
    )

    def count(self, outcome: Outcome | None) -> None:
        self.closed += 1
        if outcome is not None:
            self.outcomes[outcome.value] += 1
            if outcome.answered:
                self.followed_up += 1

    def to_json(self) -> dict[str, object]:
        answered = sum(self.outcomes[o.value] for o in ANSWERS)
        satisfied = self.outcomes[Outcome.SATISFIED.value] + self.outcomes[Outcome.BASICALLY.value]
        return {
            "closed": self.closed,
            "followed_up": self.followed_up,
            "coverage": round(self.followed_up / self.closed, 4) if self.closed else None,
            "outcomes": dict(self.outcomes),
            # (满意 + 基本满意) / answered
            "satisfaction": round(satisfied / answered, 4) if answered else None,
        }


async def followup_figures(
    db: Database, *, since: float, until: float, timezone: str = "Asia/Shanghai"
) -> dict[str, object]:
    """Coverage and satisfaction of the tickets closed in [since, until)."""
    zone = ZoneInfo(timezone)
    latest: dict[int, tuple[Outcome | None, float]] = {}
    rows = await db.fetch_all(
        "SELECT ticket_id, outcome, closed_at, id FROM followups "
        "WHERE closed_at >= ? AND closed_at < ? ORDER BY id",
        (since, until),
    )
    for r in rows:  # the latest follow-up of each ticket
        outcome = Outcome(r["outcome"]) if r["outcome"] is not None else None
        latest[int(r["ticket_id"])] = (outcome, float(r["closed_at"]))
    closed_now = await db.fetch_all(
        "SELECT id, updated_at FROM tickets WHERE status = 'closed' "
        "AND updated_at >= ? AND updated_at < ?",
        (since, until),
    )
    for r in closed_now:
        latest.setdefault(int(r["id"]), (None, float(r["updated_at"])))
    fields: dict[int, Mapping[str, object]] = {}
    ids = sorted(latest)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found = await db.fetch_all(
            f"SELECT id, fields FROM tickets WHERE id IN ({', '.join('?' for _ in chunk)})",
            chunk,
        )
        fields.update({int(r["id"]): fields_of(str(r["fields"])) for r in found})
    total = Tally()
    by: dict[str, dict[str, Tally]] = {"category": {}, "district": {}, "day": {}}
    for ticket_id, (outcome, closed_at) in latest.items():
        values = fields.get(ticket_id, {})
        keys = {
            "category": _text(values, "category"),
            "district": _text(values, "district"),
            "day": datetime.fromtimestamp(closed_at, zone).date().isoformat(),
        }
        total.count(outcome)
        for name, key in keys.items():
            by[name].setdefault(key, Tally()).count(outcome)
    return {
        "since": since,
        "until": until,
        **total.to_json(),
        "by_category": {k: t.to_json() for k, t in sorted(by["category"].items())},
        "by_district": {k: t.to_json() for k, t in sorted(by["district"].items())},
        "by_day": {k: t.to_json() for k, t in sorted(by["day"].items())},
    }


def _text(fields: Mapping[str, object], name: str) -> str:
    entry = fields.get(name)
    if isinstance(entry, dict):
        value = entry.get("value")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return NOT_SAID
