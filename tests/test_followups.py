"""The follow-up queue (回访) on both store back ends, with the clock in the
test's hands: queued when a ticket is closed (console or API: any
TicketStore.edit to closed), the beneficiary's number for a proxy ticket and
the dialect and speed remembered for it, one node's lease, retries and
no_answer after the last, quiet hours, the per-number limit, cancel and
re-run, recovery; the coverage and satisfaction figures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ivr.callbacks import CallbackPolicy
from ivr.caller_profiles import CallerProfiles
from ivr.followups import (
    FollowupQueue,
    FollowupState,
    FollowupStateError,
    Outcome,
)
from ivr.followups.figures import followup_figures
from ivr.store import Database, Transaction, open_store
from ivr.tickets import TicketStore

SHANGHAI = ZoneInfo("Asia/Shanghai")
CALLER = "13800000001"


def local(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 12, day, hour, minute, tzinfo=SHANGHAI).timestamp()


NOON = local(3, 12)


def policy(**changes: Any) -> CallbackPolicy:
    settings: dict[str, Any] = {
        "retry_delays": (0.0, 60.0, 300.0),
        "quiet_hours": ("22:00", "07:00"),
        "max_attempts_per_hour": 100,
        "max_dialing": 4,
    }
    settings.update(changes)
    return CallbackPolicy(**settings)


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now


@pytest.fixture
async def db(store_location: str | Path) -> AsyncIterator[Database]:
    async with await open_store(store_location) as database:
        yield database


def hooked(db: Database, queue: FollowupQueue, clock: Clock) -> TicketStore:
    """A ticket store whose closings queue follow-ups (as the hotline wires it)."""
    tickets = TicketStore(db)

    async def closed(
        tx: Transaction, ticket_id: int, caller: str, fields: dict[str, Any], _at: float
    ) -> None:
        await queue.ticket_closed(tx, ticket_id, caller, fields, now=clock.now)

    tickets.on_closed = closed
    return tickets


async def closed_ticket(
    tickets: TicketStore,
    caller: str = CALLER,
    *,
    fields: dict[str, Any] | None = None,
    who: str = "op1",
) -> int:
    ticket = await tickets.create(f"call-{caller}-{asyncio.get_running_loop().time()}", caller)
    if fields:
        await tickets.apply_prefill(
            ticket.id,
            {k: {"value": v, "evidence": [], "source": "test"} for k, v in fields.items()},
            "",
            None,
        )
    await tickets.edit(ticket.id, {"status": "closed"}, who=who)
    return ticket.id


async def test_closing_a_ticket_queues_one_followup_to_the_caller(db: Database) -> None:
    clock = Clock()
    queue = FollowupQueue(db, policy(), node="node-a")
    tickets = hooked(db, queue, clock)
    ticket_id = await closed_ticket(tickets)
    (followup,) = await queue.list()
    assert followup.ticket_id == ticket_id and followup.number == CALLER
    assert followup.state is FollowupState.PENDING and followup.next_at == NOON
    assert followup.dialect is None and followup.speed == 1.0
    # editing the closed ticket again, or closing it twice, queues nothing more
    await tickets.edit(ticket_id, {"status": "closed"}, who="op1")
    await tickets.edit(ticket_id, {"category": "供水"}, who="op1")
    assert len(await queue.list()) == 1
    # a ticket that is not closed queues nothing
    other = await tickets.create("call-x", "13900000002")
    await tickets.edit(other.id, {"status": "in_progress"}, who="op1")
    assert len(await queue.list()) == 1
    (event,) = await queue.events(followup.id)
    assert event.to_state is FollowupState.PENDING and f"ticket {ticket_id} closed" in event.detail


async def test_a_proxy_ticket_is_followed_up_with_the_beneficiary_in_their_dialect(
    db: Database,
) -> None:
    clock = Clock()
    queue = FollowupQueue(db, policy())
    tickets = hooked(db, queue, clock)
    await CallerProfiles(db).remember("13700000007", speed=0.8, dialect="yue")
    await closed_ticket(
        tickets, fields={"proxy": True, "beneficiary_phone": "13700000007", "category": "供水"}
    )
    (followup,) = await queue.list()
    assert followup.number == "13700000007"
    assert followup.dialect == "yue" and followup.speed == 0.8
    # a proxy ticket without the beneficiary's number: the caller is called
    await closed_ticket(tickets, "13600000006", fields={"proxy": True})
    numbers = {f.number for f in await queue.list()}
    assert numbers == {"13700000007", "13600000006"}


async def test_a_ticket_without_a_number_is_recorded_as_no_answer_at_once(db: Database) -> None:
    queue = FollowupQueue(db, policy())
    tickets = hooked(db, queue, Clock())
    await closed_ticket(tickets, "")
    (followup,) = await queue.list()
    assert followup.state is FollowupState.DONE and followup.outcome is Outcome.NO_ANSWER
    assert followup.last_error == "no number to call"
    assert await queue.claim_due(now=NOON + 10) == []


async def test_one_node_leases_each_followup(db: Database, store_location: str | Path) -> None:
    clock = Clock()
    a = FollowupQueue(db, policy(max_dialing=10), node="node-a")
    tickets = hooked(db, a, clock)
    for n in range(6):
        await closed_ticket(tickets, f"1380000010{n}")
    async with await open_store(store_location) as other_db:
        b = FollowupQueue(other_db, policy(max_dialing=10), node="node-b")
        got_a, got_b = await asyncio.gather(a.claim_due(now=NOON), b.claim_due(now=NOON))
    ids_a, ids_b = {f.id for f in got_a}, {f.id for f in got_b}
    assert not ids_a & ids_b and len(ids_a | ids_b) == 6
    for f in got_a:
        assert f.state is FollowupState.DIALING and f.lease_node == "node-a" and f.attempts == 1
    for f in got_b:
        assert f.lease_node == "node-b"
    # a node that restarts takes back its own dials only
    assert await a.recover(now=NOON + 5, node="node-a") == len(ids_a)
    still = await a.list([FollowupState.DIALING])
    assert {f.id for f in still} == ids_b


async def test_max_dialing_counts_every_node(db: Database) -> None:
    queue = FollowupQueue(db, policy(max_dialing=2), node="node-a")
    tickets = hooked(db, queue, Clock())
    for n in range(3):
        await closed_ticket(tickets, f"1380000020{n}")
    assert len(await queue.claim_due(now=NOON)) == 2
    assert await queue.claim_due(now=NOON) == []


async def test_retries_then_no_answer_after_the_last(db: Database) -> None:
    queue = FollowupQueue(db, policy(retry_delays=(0.0, 60.0, 300.0)))
    tickets = hooked(db, queue, Clock())
    await closed_ticket(tickets)
    now = NOON
    (f,) = await queue.claim_due(now=now)
    f = await queue.outcome(f.id, FollowupState.NO_ANSWER, now=now + 30, detail="480")
    assert f.state is FollowupState.NO_ANSWER and f.next_at == now + 30 + 60
    assert await queue.claim_due(now=now + 60) == []  # not yet due
    (f,) = await queue.claim_due(now=now + 90)
    assert f.attempts == 2
    f = await queue.outcome(f.id, FollowupState.BUSY, now=now + 100, detail="486")
    assert f.state is FollowupState.BUSY and f.next_at == now + 400
    (f,) = await queue.claim_due(now=now + 400)
    f = await queue.outcome(f.id, FollowupState.NO_ANSWER, now=now + 430, detail="480")
    assert f.state is FollowupState.DONE and f.outcome is Outcome.NO_ANSWER
    assert f.attempts == 3 and f.last_error is not None and "480" in f.last_error
    details = [e.detail for e in await queue.events(f.id)]
    assert details[-1].endswith("no answer after 3 attempts")
    assert await queue.claim_due(now=now + 10_000) == []


async def test_a_number_that_does_not_exist_gives_up_at_once(db: Database) -> None:
    queue = FollowupQueue(db, policy())
    tickets = hooked(db, queue, Clock())
    await closed_ticket(tickets)
    (f,) = await queue.claim_due(now=NOON)
    f = await queue.outcome(f.id, FollowupState.PENDING, now=NOON + 1, detail="404", give_up=True)
    assert f.state is FollowupState.DONE and f.outcome is Outcome.NO_ANSWER and f.attempts == 1


async def test_quiet_hours_hold_followups_until_morning(db: Database) -> None:
    clock = Clock(local(3, 23))
    queue = FollowupQueue(db, policy())
    tickets = hooked(db, queue, clock)
    await closed_ticket(tickets)  # closed at 23:00: due at 07:00
    (f,) = await queue.list()
    assert f.next_at == local(4, 7)
    assert await queue.claim_due(now=local(4, 6, 59)) == []
    (f,) = await queue.claim_due(now=local(4, 7))
    assert f.state is FollowupState.DIALING
    # a retry that falls in quiet hours waits for their end too
    f = await queue.outcome(f.id, FollowupState.NO_ANSWER, now=local(4, 21, 59), detail="480")
    assert f.next_at == local(5, 7)  # 60 s later is 22:00: quiet
    # whatever is due when quiet hours begin is moved to their end at the next claim
    await closed_ticket(tickets, "13900000009")
    assert await queue.claim_due(now=local(4, 22, 30)) == []
    waiting = {x.number: x.next_at for x in await queue.list(FollowupState)}
    assert waiting["13900000009"] == local(5, 7)


async def test_the_per_number_limit_holds_a_busy_number(db: Database) -> None:
    queue = FollowupQueue(db, policy(max_attempts_per_hour=2, retry_delays=(0.0, 0.0, 0.0, 0.0)))
    tickets = hooked(db, queue, Clock())
    await closed_ticket(tickets)
    now = NOON
    for _ in range(2):
        (f,) = await queue.claim_due(now=now)
        await queue.outcome(f.id, FollowupState.NO_ANSWER, now=now + 1)
        now += 10
    assert await queue.claim_due(now=now) == []  # two dials in the last hour
    (f,) = await queue.list()
    assert f.next_at == NOON + 3600  # when the older of the two leaves the hour
    (f,) = await queue.claim_due(now=NOON + 3600)
    assert f.attempts == 3


async def test_answered_records_the_outcome(db: Database) -> None:
    queue = FollowupQueue(db, policy())
    tickets = hooked(db, queue, Clock())
    await closed_ticket(tickets)
    (f,) = await queue.claim_due(now=NOON)
    f = await queue.outcome(f.id, FollowupState.CONNECTED, now=NOON + 5)
    assert f.state is FollowupState.CONNECTED
    f = await queue.add_comment(f.id, "处理得很快", now=NOON + 20)
    f = await queue.answered(f.id, Outcome.SATISFIED, now=NOON + 25)
    assert f.state is FollowupState.DONE and f.outcome is Outcome.SATISFIED
    assert f.comment == "处理得很快" and f.answered_at == NOON + 25
    with pytest.raises(FollowupStateError):
        await queue.answered(f.id, Outcome.UNSATISFIED, now=NOON + 30)


async def test_cancel_and_rerun(db: Database) -> None:
    queue = FollowupQueue(db, policy())
    tickets = hooked(db, queue, Clock())
    ticket_id = await closed_ticket(tickets)
    (f,) = await queue.list()
    with pytest.raises(ValueError, match="say why"):
        await queue.cancel(f.id, "  ", now=NOON)
    f = await queue.cancel(f.id, "市民要求不再回访", now=NOON)
    assert f.state is FollowupState.CANCELLED
    assert await queue.claim_due(now=NOON + 10) == []
    with pytest.raises(FollowupStateError):
        await queue.cancel(f.id, "again", now=NOON)
    f = await queue.rerun(f.id, now=NOON + 20, who="admin1")
    assert f.state is FollowupState.PENDING and f.attempts == 0 and f.next_at == NOON + 20
    # run to no_answer, then re-run: the answer is cleared, all attempts again
    for i in range(3):
        (f,) = await queue.claim_due(now=NOON + 1000 * (i + 1))
        f = await queue.outcome(f.id, FollowupState.NO_ANSWER, now=NOON + 1000 * (i + 1) + 1)
    assert f.outcome is Outcome.NO_ANSWER
    f = await queue.rerun(f.id, now=NOON + 5000)
    assert f.outcome is None and f.attempts == 0 and f.state is FollowupState.PENDING
    details = [e.detail for e in await queue.events(f.id)]
    assert any("re-run by admin1" in d for d in details)
    assert any("市民要求不再回访" in d for d in details)
    # a dial in progress cannot be re-run; a ticket closed again while one is open keeps it
    (f,) = await queue.claim_due(now=NOON + 6000)
    with pytest.raises(FollowupStateError, match="wait for the call"):
        await queue.rerun(f.id, now=NOON + 6001)
    await tickets.edit(ticket_id, {"status": "open"}, who="op1")
    await tickets.edit(ticket_id, {"status": "closed"}, who="op1")
    assert len(await queue.list(ticket_id=ticket_id)) == 1


async def test_a_reopened_and_closed_again_ticket_gets_a_new_followup(db: Database) -> None:
    queue = FollowupQueue(db, policy())
    tickets = hooked(db, queue, Clock())
    ticket_id = await closed_ticket(tickets)
    (f,) = await queue.claim_due(now=NOON)
    await queue.outcome(f.id, FollowupState.CONNECTED, now=NOON + 1)
    await queue.answered(f.id, Outcome.UNSATISFIED, now=NOON + 2)
    await tickets.edit(ticket_id, {"status": "open"}, who="followup")
    await tickets.edit(ticket_id, {"status": "closed"}, who="op1")
    found = await queue.list(ticket_id=ticket_id)
    assert [x.state for x in found] == [FollowupState.PENDING, FollowupState.DONE]


async def test_coverage_and_satisfaction_figures(db: Database) -> None:
    clock = Clock()
    queue = FollowupQueue(db, policy(retry_delays=(0.0,)))
    tickets = hooked(db, queue, clock)
    answers = {
        "13800000301": Outcome.SATISFIED,
        "13800000302": Outcome.BASICALLY,
        "13800000303": Outcome.UNSATISFIED,
        "13800000304": None,  # never answers
    }
    for n, number in enumerate(answers):
        await closed_ticket(
            tickets,
            number,
            fields={"category": "供水" if n < 2 else "道路", "district": "西湖区"},
        )
    plain = TicketStore(db)  # closed while follow-ups were off: not followed up
    off = await plain.create("call-off", "13800000305")
    await plain.edit(off.id, {"status": "closed"}, who="op1")
    for f in await queue.claim_due(now=NOON):
        outcome = answers[f.number]
        if outcome is None:
            await queue.outcome(f.id, FollowupState.NO_ANSWER, now=NOON + 30)
        else:
            await queue.outcome(f.id, FollowupState.CONNECTED, now=NOON + 5)
            await queue.answered(f.id, outcome, now=NOON + 20)
    figures = await followup_figures(db, since=NOON - 86400, until=NOON + 10 * 86400)
    # the ticket closed while follow-ups were off was closed now (real time), inside the window
    assert figures["closed"] == 5 and figures["followed_up"] == 3
    assert figures["coverage"] == 0.6
    assert figures["outcomes"] == {"满意": 1, "基本满意": 1, "不满意": 1, "no_answer": 1}
    assert figures["satisfaction"] == round(2 / 3, 4)
    by_category: Any = figures["by_category"]
    assert by_category["供水"]["coverage"] == 1.0 and by_category["供水"]["satisfaction"] == 1.0
    assert by_category["道路"]["closed"] == 2 and by_category["道路"]["followed_up"] == 1
    assert by_category["(未填)"]["closed"] == 1
    by_day: Any = figures["by_day"]
    assert by_day["2026-12-03"]["closed"] == 4


async def test_a_lost_nodes_followups_are_taken_back_by_a_survivor(db: Database) -> None:
    clock = Clock()
    a = FollowupQueue(db, policy(), node="node-a")
    b = FollowupQueue(db, policy(), node="node-b")
    tickets = hooked(db, a, clock)
    await closed_ticket(tickets)
    (f,) = await a.claim_due(now=NOON)
    await a.outcome(f.id, FollowupState.CONNECTED, now=NOON + 1)  # node-a dies mid-survey
    for node, state in (("node-a", "up"), ("node-b", "up")):
        await db.execute(
            "INSERT INTO nodes (node_id, started_at, heartbeat_at, state) VALUES (?, ?, ?, ?)",
            (node, NOON, NOON, state),
        )
    assert await b.take_back_lost(now=NOON + 10) == 0  # node-a is not taken for lost yet
    await db.execute("UPDATE nodes SET state = 'lost' WHERE node_id = 'node-a'")
    assert await b.take_back_lost(now=NOON + 20) == 1
    (f,) = await b.list()
    assert f.state is FollowupState.PENDING and f.next_at == NOON + 20
    assert (await b.events(f.id))[-1].detail == "taken back from lost node node-a"
    (f,) = await b.claim_due(now=NOON + 20)
    assert f.lease_node == "node-b" and f.attempts == 2
