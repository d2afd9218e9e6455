"""The work-order webhook: tickets posted as JSON to the city's work-order
system, through an outbox in the store so that nothing is lost.

A ticket to post is first written to work_order_outbox (in the database,
so it survives a crash or restart), then delivered by one background task.
A delivery that fails (timeout, refused connection, non-2xx answer) stays
in the outbox with its error and is retried after the next delay of the
retry schedule, then every last delay, until the webhook takes it.

The URL, timeout and retry schedule may change while it runs (config.toml
reloaded): the next delivery uses them; with no URL nothing is posted and
what waits in the outbox waits for one.

In a cluster every node runs an outbox over the one store: a node leases the
entries it is about to post (lease_node, lease_until = now + timeout + a
margin, under the store's lock ``outbox``), so no entry is posted by two nodes
at once; an entry leased by a node that died is posted by another once the
lease expires.  Delivery is at least once (a node may die after the webhook
took the entry and before it wrote so): the payload's ticket id identifies it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from ivr.store import Database
from ivr.store_watch import FailingRounds

LEASE_MARGIN_S = 5.0  # a lease outlives the post's timeout by this much
LEASED_AT_ONCE = 20  # entries one node takes for one round


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    ticket_id: int
    attempts: int
    next_at: float
    last_error: str | None
    delivered_at: float | None


class WorkOrderOutbox:
    def __init__(
        self,
        db: Database,
        *,
        url: str,
        timeout: float,
        retry_delays: Sequence[float],
        log: logging.Logger,
        node: str | None = None,
    ) -> None:
        self._db = db
        # whose leases these are: the node, else this outbox alone
        self._node = node or f"outbox-{uuid.uuid4().hex[:12]}"
        self._url = url
        self._timeout = timeout
        self._delays = tuple(retry_delays) or (60.0,)
        self._log = log
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._url)

    async def post(self, ticket_id: int, payload: dict[str, Any]) -> int:
        """Queue ``payload`` for delivery (at once); returns the outbox id."""
        now = time.time()
        async with self._db.transaction() as tx:
            row = await tx.fetch_one(
                "INSERT INTO work_order_outbox (ticket_id, payload, next_at, created_at) "
                "VALUES (?,?,?,?)"
                " RETURNING id",
                (ticket_id, json.dumps(payload, ensure_ascii=False), now, now),
            )
            assert row is not None
        self._wake.set()
        return int(row["id"])

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.ensure_future(self._deliver_forever())

    def reconfigure(self, *, url: str, timeout: float, retry_delays: Sequence[float]) -> None:
        """Deliver to ``url`` from now on ("" = post nothing; the outbox keeps
        what waits), each post given ``timeout`` s, retried per ``retry_delays``."""
        self._url = url
        self._timeout = timeout
        self._delays = tuple(retry_delays) or (60.0,)
        if self.enabled:
            self.start()
            self._wake.set()  # entries waiting for a URL, or due by the new schedule

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        try:  # what this outbox leased and did not post: for another node at once
            await self._db.execute(
                "UPDATE work_order_outbox SET lease_until = NULL "
                "WHERE lease_node = ? AND delivered_at IS NULL",
                (self._node,),
            )
        except Exception as exc:
            self._log.warning("work-order outbox: leases not given back (%s)", exc)

    async def entries(self, ticket_id: int | None = None) -> list[OutboxEntry]:
        where, params = ("WHERE ticket_id = ?", (ticket_id,)) if ticket_id is not None else ("", ())
        rows = await self._db.fetch_all(
            "SELECT id, ticket_id, attempts, next_at, last_error, delivered_at "
            f"FROM work_order_outbox {where} ORDER BY id",
            params,
        )
        return [
            OutboxEntry(
                int(r["id"]),
                int(r["ticket_id"]),
                int(r["attempts"]),
                float(r["next_at"]),
                r["last_error"],
                r["delivered_at"],
            )
            for r in rows
        ]

    async def depth(self) -> tuple[int, float | None]:
        """How many entries wait to be delivered, and when the oldest was made
        (None: none waits); for /metrics."""
        row = await self._db.fetch_one(
            "SELECT COUNT(*), MIN(created_at) FROM work_order_outbox WHERE delivered_at IS NULL"
        )
        if row is None:
            return 0, None
        return int(row[0]), None if row[1] is None else float(row[1])

    async def _deliver_forever(self) -> None:
        failing = FailingRounds(self._log, "work-order outbox: delivery round failed")
        while True:
            self._wake.clear()
            if not self.enabled:  # the URL was taken out by a reload: wait for one
                await self._wake.wait()
                continue
            try:
                wait = await self._deliver_due()
            except Exception as exc:  # the store is away: said once, not every round
                failing.failed(exc, with_traceback=True)
                wait = 5.0
            else:
                failing.worked()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _deliver_due(self) -> float:
        """Try every due entry; the seconds until the next one is due."""
        now = time.time()
        lease_until = now + self._timeout + LEASE_MARGIN_S
        async with self._db.transaction() as tx:
            await tx.lock("outbox")
            rows = await tx.fetch_all(
                "SELECT id, ticket_id, payload, attempts FROM work_order_outbox "
                "WHERE delivered_at IS NULL AND next_at <= ? "
                "AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_at LIMIT ?",
                (now, now, LEASED_AT_ONCE),
            )
            for row in rows:
                await tx.execute(
                    "UPDATE work_order_outbox SET lease_node = ?, lease_until = ? WHERE id = ?",
                    (self._node, lease_until + len(rows) * self._timeout, int(row["id"])),
                )
        for row in rows:
            if not self.enabled:
                break  # the URL was taken out meanwhile
            await self._deliver(
                int(row["id"]), int(row["ticket_id"]), row["payload"], int(row["attempts"])
            )
        nxt = await self._db.fetch_one(
            "SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until > next_at "
            "THEN lease_until ELSE next_at END) AS at "
            "FROM work_order_outbox WHERE delivered_at IS NULL"
        )
        if nxt is None or nxt["at"] is None:
            return 3600.0
        return max(0.05, float(nxt["at"]) - time.time())

    async def _deliver(self, entry_id: int, ticket_id: int, payload: str, attempts: int) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        error: str | None = None
        try:
            async with self._session.post(
                self._url,
                data=payload.encode(),
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as response:
                if not 200 <= response.status < 300:
                    error = f"HTTP {response.status} {response.reason or ''}".strip()
        except TimeoutError:
            error = f"timed out after {self._timeout:g} s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        attempts += 1
        now = time.time()
        if error is None:
            await self._db.execute(
                "UPDATE work_order_outbox SET attempts = ?, delivered_at = ?, last_error = NULL, "
                "lease_until = NULL WHERE id = ?",
                (attempts, now, entry_id),
            )
            self._log.info("work order for ticket %d delivered (attempt %d)", ticket_id, attempts)
            return
        delay = self._delays[min(attempts - 1, len(self._delays) - 1)]
        await self._db.execute(
            "UPDATE work_order_outbox SET attempts = ?, next_at = ?, last_error = ?, "
            "lease_until = NULL WHERE id = ?",
            (attempts, now + delay, error, entry_id),
        )
        self._log.warning(
            "work order for ticket %d not delivered to %s (attempt %d): %s; retry in %.0f s",
            ticket_id,
            self._url,
            attempts,
            error,
            delay,
        )
