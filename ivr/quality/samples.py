"""Quality samples in the store (migration 18): which conversations of a day
were drawn, what the automatic checks found, what reviewers scored, and the
results per operator.

A day is sampled once: its ``quality_days`` row and its samples are written in
one transaction under the store's lock ``quality.sample``, and a day that has
a row is never drawn again (on this node, another node, or after a restart).
The draw is random (``random.SystemRandom``), or with ``[quality] seed``
the same for the same day and conversations (``random.Random(seed:day)``).
"""

from __future__ import annotations

import datetime
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ivr.quality.checks import CHECKS, FAILED, NOT_RUN
from ivr.store import Database, Row

ITEMS = ("规范用语", "信息核实", "解答准确", "服务态度")  # each 0..25, the score their sum
ITEM_MAX = 25
MAX_COMMENT = 2000


class ReviewError(ValueError):
    """A review that cannot be stored; the message says what is wrong."""


@dataclass(frozen=True)
class DayDrawn:
    day: str
    candidates: int
    picked: list[int]  # sample ids


@dataclass(frozen=True)
class Sample:
    id: int
    day: str
    recording_id: int
    call_id: str
    operator: str
    seat_code: str
    sampled_at: float
    check_state: str
    checks: dict[str, Any]
    checked_at: float | None
    seconds: float | None
    path: str
    reviews: list[dict[str, Any]] = field(default_factory=list)

    def for_reviewer(self, reviewer: str) -> dict[str, Any]:
        """What a reviewer sees: no call id, no operator, no number."""
        mine = next((r for r in self.reviews if r["reviewer"] == reviewer), None)
        return {
            "id": self.id,
            "day": self.day,
            "seat": self.seat_code,
            "seconds": self.seconds,
            "kept": bool(self.path),
            "check_state": self.check_state,
            "checks": self.checks,
            "reviews": len(self.reviews),
            "my_review": mine,
        }


def day_bounds(day: str) -> tuple[float, float]:
    """Epoch seconds of the local day's start and of the next day's."""
    date = datetime.date.fromisoformat(day)
    start = datetime.datetime.combine(date, datetime.time())
    end = datetime.datetime.combine(date + datetime.timedelta(days=1), datetime.time())
    return start.timestamp(), end.timestamp()


def local_day(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch).date().isoformat()


def how_many(share: float, candidates: int) -> int:
    """``share`` of ``candidates``, rounded, at least one when there are any."""
    if candidates <= 0:
        return 0
    return min(candidates, max(1, math.floor(share * candidates + 0.5)))


def seat_codes(count: int) -> list[str]:
    """坐席 A, B ... Z, AA, AB ..."""
    codes = []
    for n in range(count):
        letters = ""
        n += 1
        while n:
            n, rest = divmod(n - 1, 26)
            letters = chr(ord("A") + rest) + letters
        codes.append(f"坐席 {letters}")
    return codes


_SAMPLE = (
    "SELECT s.id, s.day, s.recording_id, s.call_id, s.operator, s.seat_code, s.sampled_at, "
    "s.check_state, s.checks, s.checked_at, r.seconds, r.path "
    "FROM quality_samples s JOIN conversation_recordings r ON r.id = s.recording_id"
)


def _sample(row: Row) -> Sample:
    return Sample(
        id=int(row["id"]),
        day=str(row["day"]),
        recording_id=int(row["recording_id"]),
        call_id=str(row["call_id"]),
        operator=str(row["operator"]),
        seat_code=str(row["seat_code"]),
        sampled_at=float(row["sampled_at"]),
        check_state=str(row["check_state"]),
        checks=json.loads(str(row["checks"])),
        checked_at=None if row["checked_at"] is None else float(row["checked_at"]),
        seconds=None if row["seconds"] is None else float(row["seconds"]),
        path=str(row["path"]),
    )


class QualitySamples:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- drawing -------------------------------------------------------------------
    async def sampled_days(self, days: Iterable[str]) -> set[str]:
        wanted = list(days)
        if not wanted:
            return set()
        marks = ", ".join("?" for _ in wanted)
        rows = await self._db.fetch_all(
            f"SELECT day FROM quality_days WHERE day IN ({marks})", wanted
        )
        return {str(r["day"]) for r in rows}

    async def draw_day(
        self,
        day: str,
        *,
        share: float,
        seed: str | None,
        now: float,
        node: str,
        exclude: Sequence[str] = (),
    ) -> DayDrawn | None:
        """Draw ``day``'s sample, unless it was drawn already (None then).
        Candidates: the day's conversation recordings that ended and are kept,
        with anyone but the ``exclude`` URIs (110, 119, 120)."""
        start, end = day_bounds(day)
        async with self._db.transaction() as tx:
            await tx.lock("quality.sample")
            drawn = await tx.fetch_one("SELECT day FROM quality_days WHERE day = ?", (day,))
            if drawn is not None:
                return None
            rows = await tx.fetch_all(
                "SELECT id, call_id, operator FROM conversation_recordings "
                "WHERE started_at >= ? AND started_at < ? AND path != '' "
                "AND seconds IS NOT NULL AND seconds > 0 ORDER BY id",
                (start, end),
            )
            candidates = [r for r in rows if str(r["operator"]) not in exclude]
            rng: random.Random = (
                random.Random(f"{seed}:{day}") if seed is not None else random.SystemRandom()
            )
            picks = sorted(
                rng.sample(candidates, how_many(share, len(candidates))), key=lambda r: r["id"]
            )
            operators = sorted({str(r["operator"]) for r in picks})
            rng.shuffle(operators)  # codes drawn anew each day: a reviewer cannot map them
            code = dict(zip(operators, seat_codes(len(operators)), strict=True))
            await tx.execute(
                "INSERT INTO quality_days (day, share, candidates, picked, sampled_at, node) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (day, share, len(candidates), len(picks), now, node),
            )
            ids = []
            for r in picks:
                added = await tx.fetch_one(
                    "INSERT INTO quality_samples (day, recording_id, call_id, operator, "
                    "seat_code, sampled_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    (day, r["id"], r["call_id"], r["operator"], code[str(r["operator"])], now),
                )
                assert added is not None
                ids.append(int(added["id"]))
        return DayDrawn(day, len(candidates), ids)

    async def days(self, limit: int = 60) -> list[dict[str, Any]]:
        rows = await self._db.fetch_all(
            "SELECT day, share, candidates, picked, sampled_at, node FROM quality_days "
            "ORDER BY day DESC LIMIT ?",
            (limit,),
        )
        return [dict(r) for r in rows]

    # -- checking --------------------------------------------------------------------
    async def to_check(self, limit: int = 20) -> list[Sample]:
        rows = await self._db.fetch_all(
            f"{_SAMPLE} WHERE s.check_state = 'pending' ORDER BY s.id LIMIT ?", (limit,)
        )
        return [_sample(r) for r in rows]

    async def numbers_of(self, call_id: str) -> list[str]:
        """The numbers on record for a call: the caller's, and the callback
        numbers its tickets were given."""
        sql = self._db.sql
        found: list[str] = []
        call = await self._db.fetch_one("SELECT caller FROM calls WHERE call_id = ?", (call_id,))
        if call is not None and call["caller"]:
            found.append(str(call["caller"]))
        rows = await self._db.fetch_all(
            f"SELECT {sql.json_value('fields', 'phone')} AS phone, "
            f"{sql.json_value('fields', 'beneficiary_phone')} AS other "
            "FROM tickets WHERE call_id = ?",
            (call_id,),
        )
        for r in rows:
            found.extend(str(v) for v in (r["phone"], r["other"]) if v)
        return found

    async def checked(
        self, sample_id: int, checks: dict[str, Any], *, now: float, node: str, state: str
    ) -> None:
        await self._db.execute(
            "UPDATE quality_samples SET checks = ?, check_state = ?, checked_at = ?, "
            "checked_on = ? WHERE id = ?",
            (json.dumps(checks, ensure_ascii=False), state, now, node, sample_id),
        )

    # -- reviewing -------------------------------------------------------------------
    async def get(self, sample_id: int) -> Sample | None:
        row = await self._db.fetch_one(f"{_SAMPLE} WHERE s.id = ?", (sample_id,))
        if row is None:
            return None
        sample = _sample(row)
        sample.reviews.extend(await self._reviews([sample_id]))
        return sample

    async def recent(self, limit: int = 200) -> list[Sample]:
        rows = await self._db.fetch_all(f"{_SAMPLE} ORDER BY s.id DESC LIMIT ?", (limit,))
        samples = [_sample(r) for r in rows]
        by_id = {s.id: s for s in samples}
        for review in await self._reviews(list(by_id)):
            by_id[review["sample_id"]].reviews.append(review)
        return samples

    async def _reviews(self, sample_ids: Sequence[int]) -> list[dict[str, Any]]:
        if not sample_ids:
            return []
        marks = ", ".join("?" for _ in sample_ids)
        rows = await self._db.fetch_all(
            "SELECT sample_id, reviewer, score, items, comment, reviewed_at FROM quality_reviews "
            f"WHERE sample_id IN ({marks}) ORDER BY id",
            list(sample_ids),
        )
        return [
            {
                "sample_id": int(r["sample_id"]),
                "reviewer": str(r["reviewer"]),
                "score": int(r["score"]),
                "items": json.loads(str(r["items"])),
                "comment": str(r["comment"]),
                "reviewed_at": float(r["reviewed_at"]),
            }
            for r in rows
        ]

    async def review(
        self, sample_id: int, reviewer: str, items: object, comment: object, *, now: float
    ) -> dict[str, Any]:
        """Store ``reviewer``'s score of a sample (their earlier one replaced);
        ReviewError saying what is wrong with the items or the comment."""
        async with self._db.transaction() as tx:
            found = await tx.fetch_one("SELECT id FROM quality_samples WHERE id = ?", (sample_id,))
            if found is None:
                raise ReviewError(f"no quality sample {sample_id}")
            scores = check_items(items)
            if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
                raise ReviewError(f"comment must be text of at most {MAX_COMMENT} characters")
            score = sum(scores.values())
            # one review per reviewer and sample: a second one replaces the first
            await tx.execute(
                "DELETE FROM quality_reviews WHERE sample_id = ? AND reviewer = ?",
                (sample_id, reviewer),
            )
            await tx.execute(
                "INSERT INTO quality_reviews (sample_id, reviewer, score, items, "
                "comment, reviewed_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    sample_id,
                    reviewer,
                    score,
                    json.dumps(scores, ensure_ascii=False),
                    comment.strip(),
                    now,
                ),
            )
        return {"sample_id": sample_id, "reviewer": reviewer, "score": score, "items": scores}

    # -- results -----------------------------------------------------------------------
    async def results(self, start_day: str, end_day: str) -> list[dict[str, Any]]:
        """Per operator, the samples of days start_day..end_day: how many, how
        many reviewed, the average score, and the share of each automatic check
        failed (of the samples where it ran)."""
        rows = await self._db.fetch_all(
            "SELECT s.id, s.operator, s.check_state, s.checks FROM quality_samples s "
            "WHERE s.day >= ? AND s.day <= ? ORDER BY s.id",
            (start_day, end_day),
        )
        scores = await self._db.fetch_all(
            "SELECT s.operator, q.score FROM quality_reviews q "
            "JOIN quality_samples s ON s.id = q.sample_id WHERE s.day >= ? AND s.day <= ?",
            (start_day, end_day),
        )
        names = {
            str(r["sip_uri"]): str(r["name"])
            for r in await self._db.fetch_all(
                "SELECT name, sip_uri FROM users WHERE sip_uri IS NOT NULL ORDER BY id"
            )
        }
        per: dict[str, dict[str, Any]] = {}
        for r in rows:
            operator = str(r["operator"])
            o = per.setdefault(operator, _blank(operator, names.get(operator)))
            o["sampled"] += 1
            if r["check_state"] != "done":
                continue
            o["checked"] += 1
            checks = json.loads(str(r["checks"]))
            for name in CHECKS:
                state = checks.get(name, {}).get("state", NOT_RUN)
                if state != NOT_RUN:
                    o["checks"][name]["ran"] += 1
                    o["checks"][name]["failed"] += state == FAILED
        reviewed: dict[str, list[int]] = {}
        for r in scores:
            reviewed.setdefault(str(r["operator"]), []).append(int(r["score"]))
        for operator, o in per.items():
            got = reviewed.get(operator, [])
            o["reviews"] = len(got)
            o["average_score"] = round(sum(got) / len(got), 1) if got else None
            for c in o["checks"].values():
                c["failed_share"] = round(c["failed"] / c["ran"], 3) if c["ran"] else None
        return sorted(per.values(), key=lambda o: (o["name"] or "~", o["operator"]))


def _blank(operator: str, name: str | None) -> dict[str, Any]:
    return {
        "operator": operator,
        "name": name,
        "sampled": 0,
        "checked": 0,
        "checks": {c: {"ran": 0, "failed": 0} for c in CHECKS},
    }


def check_items(items: object) -> dict[str, int]:
    """The per-item scores of a review: every item of ITEMS, an integer 0..25."""
    want = f"items must give each of {', '.join(ITEMS)} an integer 0..{ITEM_MAX}"
    if not isinstance(items, dict) or set(items) != set(ITEMS):
        raise ReviewError(want)
    scores: dict[str, int] = {}
    for name in ITEMS:
        value = items[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= ITEM_MAX:
            raise ReviewError(f"{want}; {name} is {value!r}")
        scores[name] = value
    return scores
