"""The situation map's figures (态势): tickets per district and category over a
period, and spike alerts (未诉先办 early warning) when a district x category
count rises well above its own recent baseline.

Everything is computed from the tickets in the store at the time it is asked
(by the console, or by a /metrics scrape), so every node of a cluster gives
the same answer and nothing needs to be kept between requests.

The spike rule (docs/decisions.md, "The situation map and spike alerts"):
for each district x category, ``count`` is the tickets created in the last
``window`` seconds; its baseline is the count in the same window of the day
(the same clock hours) on each of the previous ``baseline_days`` days, their
mean and standard deviation. A spike is

    count >= min_count  and  count > mean + sd_factor * sd  and  count >= ratio * mean

so a quiet pair needs ``min_count`` reports, a noisy one must rise above its
own spread, and a busy one must also at least multiply by ``ratio``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ivr.store import Database

DAY = 86400.0
NO_DISTRICT = "未知"  # a ticket whose district the prefill and the operator left empty
NO_CATEGORY = "其他"


@dataclass(frozen=True)
class SpikeRule:
    """[situation]: the window and the thresholds of the spike rule."""

    window: float = 24 * 3600.0  # seconds counted back from now; at most a day
    baseline_days: int = 14  # the same window on each of this many days before
    min_count: int = 5
    sd_factor: float = 3.0
    ratio: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.window <= DAY:
            raise ValueError(f"the window must be over 0 s and at most a day, not {self.window}")
        if self.baseline_days < 1:
            raise ValueError(f"baseline_days must be at least 1, not {self.baseline_days}")

    def baseline(self, counts: Sequence[int]) -> tuple[float, float]:
        """The mean and (population) standard deviation of the baseline windows."""
        if not counts:
            return 0.0, 0.0
        mean = sum(counts) / len(counts)
        return mean, math.sqrt(sum((c - mean) ** 2 for c in counts) / len(counts))

    def is_spike(self, count: int, baseline: Sequence[int]) -> bool:
        mean, sd = self.baseline(baseline)
        return (
            count >= self.min_count
            and count > mean + self.sd_factor * sd
            and count >= self.ratio * mean
        )


@dataclass(frozen=True)
class Spike:
    district: str
    category: str
    count: int  # tickets in the window ending now
    mean: float  # the baseline windows' mean
    sd: float
    baseline: tuple[int, ...]  # each baseline window's count, the day before first
    since: float  # the window's start (epoch seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "district": self.district,
            "category": self.category,
            "count": self.count,
            "mean": round(self.mean, 2),
            "sd": round(self.sd, 2),
            "baseline": list(self.baseline),
            "since": self.since,
        }


@dataclass(frozen=True)
class PeriodCounts:
    since: float
    until: float
    # district -> category -> tickets created in [since, until)
    cells: dict[str, dict[str, int]]

    def by_district(self, category: str | None = None) -> dict[str, int]:
        """Tickets per district, of ``category`` (None: all)."""
        out: dict[str, int] = {}
        for district, row in self.cells.items():
            n = sum(row.values()) if category is None else row.get(category, 0)
            if n:
                out[district] = n
        return out

    def by_category(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.cells.values():
            for category, n in row.items():
                out[category] = out.get(category, 0) + n
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


class Situation:
    """Reads the figures from the tickets table (SQLite or PostgreSQL)."""

    def __init__(
        self,
        db: Database,
        rule: Callable[[], SpikeRule] = SpikeRule,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._rule = rule  # read at each use: [situation] reloads
        self._clock = clock

    @property
    def rule(self) -> SpikeRule:
        return self._rule()

    def now(self) -> float:
        return self._clock()

    async def counts(self, since: float, until: float) -> PeriodCounts:
        """Tickets created in [since, until) by district and category."""
        sql = self._db.sql
        rows = await self._db.fetch_all(
            f"SELECT {sql.json_value('fields', 'district')} AS district, "
            f"{sql.json_value('fields', 'category')} AS category, count(*) AS n "
            "FROM tickets WHERE created_at >= ? AND created_at < ? GROUP BY 1, 2",
            (since, until),
        )
        cells: dict[str, dict[str, int]] = {}
        for r in rows:
            row = cells.setdefault(r["district"] or NO_DISTRICT, {})
            category = r["category"] or NO_CATEGORY
            row[category] = row.get(category, 0) + int(r["n"])
        return PeriodCounts(since, until, cells)

    async def spikes(self, now: float | None = None) -> list[Spike]:
        """The district x category pairs spiking at ``now`` (default: the clock),
        the largest rise over the baseline first. Tickets without a district or
        category are not alerted on (there is no place to send anyone)."""
        rule = self._rule()
        at = self._clock() if now is None else now
        # window 0 ends now; window d is the same clock hours d days before
        starts = [at - d * DAY - rule.window for d in range(rule.baseline_days + 1)]
        sql = self._db.sql
        district = sql.json_value("fields", "district")
        category = sql.json_value("fields", "category")
        columns = ", ".join(
            f"SUM(CASE WHEN created_at >= ? AND created_at < ? THEN 1 ELSE 0 END) AS w{d}"
            for d in range(len(starts))
        )
        args: list[Any] = []
        for start in starts:
            args.extend([start, start + rule.window])
        rows = await self._db.fetch_all(
            f"SELECT {district} AS district, {category} AS category, {columns} "
            f"FROM tickets WHERE created_at >= ? AND created_at < ? "
            f"AND {district} IS NOT NULL AND {category} IS NOT NULL GROUP BY 1, 2",
            (*args, starts[-1], at),
        )
        found: list[Spike] = []
        for r in rows:
            windows = [int(r[f"w{d}"] or 0) for d in range(len(starts))]
            count, baseline = windows[0], windows[1:]
            if rule.is_spike(count, baseline):
                mean, sd = rule.baseline(baseline)
                found.append(
                    Spike(
                        district=str(r["district"]),
                        category=str(r["category"]),
                        count=count,
                        mean=mean,
                        sd=sd,
                        baseline=tuple(baseline),
                        since=starts[0],
                    )
                )
        found.sort(key=lambda s: (-(s.count - s.mean), s.district, s.category))
        return found
