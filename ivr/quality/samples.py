"""Quality samples in the store (migration 18): which conversations of a day
were drawn, what the automatic checks found, what reviewers scored, and the
results per operator.

A day is sampled once: its ``quality_days`` row and its samples are written in
one transaction under the store's lock ``quality.sample``, and a day that has
a row is never drawn again (on this node, another node, or after a restart).
Every recording a draw considered is kept in ``quality_considered`` (migration
22); a later pass over a drawn day draws, at the same share, among its
recordings that reached the store after the draw (each considered once, ever).
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

from ivr.node_roster import live_nodes_sql
from ivr.quality.checks import CHECKS, FAILED, NOT_RUN
from ivr.store import Database, Row, Transaction

ITEMS = ("规范用语", "信息核实", "解答准确", "服务态度")  # each 0..25, the score their sum
ITEM_MAX = 25
MAX_COMMENT = 2000
CONSIDERED_CHUNK = 500  # recording ids kept as considered per statement


class ReviewError(ValueError):
    """A review that cannot be stored; the message says what is wrong."""


@dataclass(frozen=True)
class DayDrawn:
    day: str
    candidates: int
    picked: list[int]  # sample ids
    late_pass: int = 0  # 0: the day's draw; 1, 2 ...: a later pass over its late calls


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
    node: str | None = None  # the node that held the call, and so its recording
    checked_on: str = ""  # the node that ran the checks
    pass_no: int = 0  # 0: drawn with its day; 1, 2 ...: by a later pass over late calls
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


_DAY = (
    "SELECT day, share, candidates, picked, sampled_at, node, late_tracked, late_passes, "
    "late_candidates, late_picked FROM quality_days"
)

_SAMPLE = (
    "SELECT s.id, s.day, s.recording_id, s.call_id, s.operator, s.seat_code, s.sampled_at, "
    "s.check_state, s.checks, s.checked_at, s.checked_on, s.pass, r.seconds, r.path, "
    "c.node FROM quality_samples s JOIN conversation_recordings r ON r.id = s.recording_id "
    "LEFT JOIN calls c ON c.call_id = s.call_id"
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
        node=None if row["node"] is None else str(row["node"]),
        checked_on=str(row["checked_on"]),
        pass_no=int(row["pass"]),
    )


async def _candidates(
    tx: Transaction, day: str, exclude: Sequence[str], *, late: bool
) -> list[Row]:
    """The day's conversation recordings that ended and are kept, but for the
    ``exclude`` URIs; ``late``: only those no pass considered yet."""
    start, end = day_bounds(day)
    rows = await tx.fetch_all(
        "SELECT r.id, r.call_id, r.operator FROM conversation_recordings r "
        "WHERE r.started_at >= ? AND r.started_at < ? AND r.path != '' "
        "AND r.seconds IS NOT NULL AND r.seconds > 0"
        + (
            " AND NOT EXISTS (SELECT 1 FROM quality_considered c WHERE c.recording_id = r.id)"
            if late
            else ""
        )
        + " ORDER BY r.id",
        (start, end),
    )
    return [r for r in rows if str(r["operator"]) not in exclude]


async def _add_samples(
    tx: Transaction,
    day: str,
    candidates: Sequence[Row],
    picks: Sequence[Row],
    rng: random.Random,
    *,
    pass_no: int,
    now: float,
) -> list[int]:
    """Keep every candidate as considered by pass ``pass_no`` and add the
    picks as samples, each operator with the day's seat code (a new operator
    of the day gets the next code, the new ones shuffled); the sample ids."""
    for n in range(0, len(candidates), CONSIDERED_CHUNK):
        chunk = [int(r["id"]) for r in candidates[n : n + CONSIDERED_CHUNK]]
        marks = ", ".join("?" for _ in chunk)
        await tx.execute(
            "INSERT INTO quality_considered (recording_id, day, pass, considered_at) "
            f"SELECT id, ?, ?, ? FROM conversation_recordings WHERE id IN ({marks})",
            [day, pass_no, now, *chunk],
        )
    code = {
        str(r["operator"]): str(r["seat_code"])
        for r in await tx.fetch_all(
            "SELECT DISTINCT operator, seat_code FROM quality_samples WHERE day = ?", (day,)
        )
    }
    new = sorted({str(r["operator"]) for r in picks} - set(code))
    rng.shuffle(new)  # codes drawn anew each day: a reviewer cannot map them
    used = set(code.values())
    free = [c for c in seat_codes(len(used) + len(new)) if c not in used]
    code.update(zip(new, free, strict=True))
    ids = []
    for r in picks:
        added = await tx.fetch_one(
            "INSERT INTO quality_samples (day, recording_id, call_id, operator, "
            "seat_code, sampled_at, pass) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (day, r["id"], r["call_id"], r["operator"], code[str(r["operator"])], now, pass_no),
        )
        assert added is not None
        ids.append(int(added["id"]))
    return ids


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
        with anyone but the ``exclude`` URIs (110, 119, 120). Every candidate is
        kept in ``quality_considered`` (pass 0): a later pass draws only among
        the recordings written after this one."""
        async with self._db.transaction() as tx:
            await tx.lock("quality.sample")
            drawn = await tx.fetch_one("SELECT day FROM quality_days WHERE day = ?", (day,))
            if drawn is not None:
                return None
            candidates = await _candidates(tx, day, exclude, late=False)
            rng: random.Random = (
                random.Random(f"{seed}:{day}") if seed is not None else random.SystemRandom()
            )
            picks = sorted(
                rng.sample(candidates, how_many(share, len(candidates))), key=lambda r: r["id"]
            )
            await tx.execute(
                "INSERT INTO quality_days (day, share, candidates, picked, sampled_at, node, "
                "late_tracked) VALUES (?, ?, ?, ?, ?, ?, 1)",
                (day, share, len(candidates), len(picks), now, node),
            )
            ids = await _add_samples(tx, day, candidates, picks, rng, pass_no=0, now=now)
        return DayDrawn(day, len(candidates), ids)

    async def draw_late(
        self,
        day: str,
        *,
        share: float,
        seed: str | None,
        now: float,
        exclude: Sequence[str] = (),
    ) -> DayDrawn | None:
        """A later pass over a drawn ``day``: among its recordings that no pass
        considered yet (written to the store after the draw: kept by a node while
        the store was away, or still in progress at the draw), draw ``share`` of
        them, each with the chance ``share`` (the count rounded at random:
        ``floor(share x n + u)``, so one late call of 5 % is drawn one time in
        twenty, never always). None when the day was not drawn, was drawn before
        the considered recordings were kept (migration 22), or has nothing new."""
        async with self._db.transaction() as tx:
            await tx.lock("quality.sample")
            row = await tx.fetch_one(
                "SELECT late_tracked, late_passes FROM quality_days WHERE day = ?", (day,)
            )
            if row is None or not int(row["late_tracked"]):
                return None
            candidates = await _candidates(tx, day, exclude, late=True)
            if not candidates:
                return None
            pass_no = int(row["late_passes"]) + 1
            rng: random.Random = (
                random.Random(f"{seed}:{day}:{pass_no}")
                if seed is not None
                else random.SystemRandom()
            )
            count = min(len(candidates), math.floor(share * len(candidates) + rng.random()))
            picks = sorted(rng.sample(candidates, count), key=lambda r: r["id"])
            await tx.execute(
                "UPDATE quality_days SET late_passes = ?, late_candidates = late_candidates + ?, "
                "late_picked = late_picked + ? WHERE day = ?",
                (pass_no, len(candidates), len(picks), day),
            )
            ids = await _add_samples(tx, day, candidates, picks, rng, pass_no=pass_no, now=now)
        return DayDrawn(day, len(candidates), ids, pass_no)

    async def late_days(self, days: Iterable[str]) -> list[str]:
        """Of ``days``, those drawn with their considered recordings kept (a
        later pass may draw among their late calls)."""
        wanted = list(days)
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        rows = await self._db.fetch_all(
            f"SELECT day FROM quality_days WHERE late_tracked = 1 AND day IN ({marks}) "
            "ORDER BY day",
            wanted,
        )
        return [str(r["day"]) for r in rows]

    async def day(self, day: str) -> dict[str, Any] | None:
        row = await self._db.fetch_one(f"{_DAY} WHERE day = ?", (day,))
        return None if row is None else dict(row)

    async def days(self, limit: int = 60) -> list[dict[str, Any]]:
        rows = await self._db.fetch_all(f"{_DAY} ORDER BY day DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    # -- checking --------------------------------------------------------------------
    async def to_check(
        self, *, on_node: str | None = None, not_live_since: float | None = None
    ) -> list[Sample]:
        """The samples not checked yet, oldest first: with ``on_node``, only
        those whose call that node held; with ``not_live_since`` (now minus the
        node timeout), not those a live node other than ``on_node`` holds."""
        where, params = "s.check_state = 'pending'", []
        if not_live_since is not None:
            where += (
                " AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = c.node "
                f"AND n.node_id != ? AND {live_nodes_sql('n')})"
            )
            params += [on_node or "", not_live_since]
        elif on_node is not None:
            where += " AND c.node = ?"
            params.append(on_node)
        rows = await self._db.fetch_all(f"{_SAMPLE} WHERE {where} ORDER BY s.id", params)
        return [_sample(r) for r in rows]

    async def nodes(self) -> dict[str, tuple[str, float]]:
        """Every node of the roster: (its state, its last heartbeat)."""
        rows = await self._db.fetch_all("SELECT node_id, state, heartbeat_at FROM nodes")
        return {str(r["node_id"]): (str(r["state"]), float(r["heartbeat_at"])) for r in rows}

    async def waiting(self, sample_id: int, why: str) -> bool:
        """Say why a sample stays pending (its recording's node is away);
        whether that changed what it said."""
        note = json.dumps({"waiting": why}, ensure_ascii=False)
        return bool(
            await self._db.execute(
                "UPDATE quality_samples SET checks = ? WHERE id = ? AND check_state = 'pending' "
                "AND checks != ?",
                (note, sample_id, note),
            )
        )

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

    async def of_days(self, start_day: str, end_day: str) -> list[Sample]:
        """The samples of days start_day..end_day with their reviews, by day and id."""
        rows = await self._db.fetch_all(
            f"{_SAMPLE} WHERE s.day >= ? AND s.day <= ? ORDER BY s.day, s.id",
            (start_day, end_day),
        )
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
