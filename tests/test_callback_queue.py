"""The callback queue on real SQLite files, with the clock in the test's hands:
detection, dedupe, recall keeping the place in line, retries and giving up,
quiet hours, operator limits, rate limit, priority, atomic claims across two
connections, recovery after a crash, and the recorded transitions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.call_records import CallRecord
from ivr.callbacks import (
    Callback,
    CallbackNotFoundError,
    CallbackPolicy,
    CallbackQueue,
    CallbackReason,
    CallbackState,
    CallbackStateError,
    should_call_back,
)
from ivr.store import ConstraintError, Database, open_store

SHANGHAI = ZoneInfo("Asia/Shanghai")
ABANDONED = CallbackReason.ABANDONED


def local(day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    """Epoch seconds of a wall-clock time in Shanghai, March 2025."""
    return datetime(2025, 3, day, hour, minute, second, tzinfo=SHANGHAI).timestamp()


NOON = local(10, 12)


def policy(**changes: object) -> CallbackPolicy:
    """A policy whose rate limit stays out of the way unless a test sets it."""
    settings: dict[str, object] = {
        "retry_delays": (0.0, 60.0, 300.0),
        "quiet_hours": ("22:00", "07:00"),
        "max_attempts_per_hour": 100,
    }
    settings.update(changes)
    return CallbackPolicy(**settings)  # type: ignore[arg-type]


@pytest.fixture
async def db(store_location: str | Path) -> AsyncIterator[Database]:
    async with await open_store(store_location) as database:
        yield database


async def ask(
    queue: CallbackQueue, number: str = "13800000001", *, now: float = NOON, **kwargs: object
) -> Callback:
    kwargs.setdefault("call_id", f"call-{number}-{now}")
    kwargs.setdefault("reason", ABANDONED)
    return await queue.request(number, now=now, **kwargs)  # type: ignore[arg-type]


async def transitions(queue: CallbackQueue, callback_id: int) -> list[tuple[str | None, str]]:
    return [
        (e.from_state.value if e.from_state else None, e.to_state.value)
        for e in await queue.events(callback_id)
    ]


# ---------------------------------------------------------------- detection


def record(**changes: object) -> CallRecord:
    values: dict[str, object] = {
        "call_id": "c1",
        "caller": "13800000001",
        "dialled": "12345",
        "started_at": NOON,
        "path": ["welcome", "menu"],
    }
    values.update(changes)
    return CallRecord(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "started_greeting", "no_callback", "expected"),
    [
        ({"outcome": "abandoned", "end_reason": "caller_hangup"}, True, False, "abandoned"),
        (
            {"outcome": "operator_failed", "end_reason": "operator_hangup"},
            True,
            False,
            "operator_failed",
        ),
        ({"outcome": "bridged", "end_reason": "rtp_timeout"}, True, False, "dropped"),
        ({"outcome": None, "end_reason": "transport_error"}, False, False, "dropped"),
        # one node, but the greeting had started
        ({"path": ["welcome"], "end_reason": "rtp_timeout"}, True, False, "dropped"),
        # dropped before the greeting: nothing the caller said is lost
        ({"path": ["welcome"], "end_reason": "rtp_timeout"}, False, False, None),
        ({"path": [], "end_reason": "transport_error"}, False, False, None),
        # ended normally
        ({"outcome": "bridged", "end_reason": "caller_hangup"}, True, False, None),
        ({"outcome": "bridged", "end_reason": "operator_hangup"}, True, False, None),
        ({"outcome": "hangup", "end_reason": "ivr_hangup"}, True, False, None),
        ({"outcome": "ended_in_menu", "end_reason": "caller_hangup"}, True, False, None),
        # the caller said no callback
        ({"outcome": "abandoned", "end_reason": "caller_hangup"}, True, True, None),
        ({"outcome": "bridged", "end_reason": "rtp_timeout"}, True, True, None),
        # nobody to call
        ({"outcome": "abandoned", "caller": "anonymous"}, True, False, None),
        ({"outcome": "abandoned", "caller": " "}, True, False, None),
    ],
)
def test_which_calls_are_called_back(
    changes: dict[str, object], started_greeting: bool, no_callback: bool, expected: str | None
) -> None:
    reason = should_call_back(
        record(**changes), no_callback=no_callback, started_greeting=started_greeting
    )
    assert reason == (CallbackReason(expected) if expected else None)


# ---------------------------------------------------------------- request, dedupe, recall


async def test_request_creates_a_pending_callback_due_after_the_first_delay(db: Database) -> None:
    queue = CallbackQueue(db, policy(retry_delays=(5.0, 60.0)))
    cb = await ask(queue, call_id="c1", ticket_id=7, enqueued_at=NOON - 90, position=4)
    assert cb.state is CallbackState.PENDING
    assert (cb.call_id, cb.first_call_id, cb.ticket_id) == ("c1", "c1", 7)
    assert (cb.original_enqueued_at, cb.original_position) == (NOON - 90, 4)
    assert cb.attempts == 0
    assert cb.next_at == NOON + 5
    assert await queue.next_due_at() == NOON + 5
    assert await queue.claim_due(now=NOON + 4, free_operators=1) == []
    assert [c.id for c in await queue.claim_due(now=NOON + 5, free_operators=1)] == [cb.id]


async def test_a_second_drop_updates_the_open_callback(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    first = await ask(
        queue, call_id="c1", ticket_id=7, urgency="一般", enqueued_at=NOON - 120, position=3
    )
    second = await ask(
        queue,
        now=NOON + 30,
        call_id="c2",
        ticket_id=8,
        reason=CallbackReason.DROPPED,
        urgency="紧急",
        elderly=True,
        enqueued_at=NOON + 10,
        position=9,
    )
    assert second.id == first.id
    assert await queue.list() == [second]
    assert (second.call_id, second.first_call_id) == ("c2", "c1")
    assert second.reason is CallbackReason.DROPPED
    assert second.ticket_id == 7  # the first ticket holds the caller's story
    assert (second.original_enqueued_at, second.original_position) == (NOON - 120, 3)
    assert (second.urgency, second.elderly) == ("紧急", True)
    assert second.priority < first.priority
    # a later, less urgent report never lowers the priority
    third = await ask(queue, now=NOON + 40, call_id="c3", urgency="一般")
    assert third.urgency == "紧急" and third.priority == second.priority
    assert await transitions(queue, first.id) == [
        (None, "pending"),
        ("pending", "pending"),
        ("pending", "pending"),
    ]


async def test_the_database_refuses_a_second_open_callback_for_a_number(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    cb = await ask(queue)
    with pytest.raises(ConstraintError):
        await db.execute(
            "INSERT INTO callbacks (number, call_id, first_call_id, reason, state, priority, "
            "next_at, created_at, updated_at) VALUES (?, 'x', 'x', 'dropped', 'busy', 7, 0, 0, 0)",
            (cb.number,),
        )
    # once it is closed, a new drop opens a new callback
    await queue.cancel(cb.id, "test", now=NOON + 1)
    again = await ask(queue, now=NOON + 2, call_id="c9")
    assert again.id != cb.id and again.state is CallbackState.PENDING
    assert len(await queue.list()) == 2


async def test_calling_in_again_cancels_the_callback_and_keeps_the_place(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    cb = await ask(queue, call_id="c1", ticket_id=5, enqueued_at=NOON - 300, position=2)
    await ask(queue, now=NOON + 60, call_id="c2", enqueued_at=NOON + 30, position=8)
    place = await queue.caller_dialled_in(" 13800000001 ", now=NOON + 90, call_id="c3")
    assert place is not None
    assert (place.callback_id, place.enqueued_at, place.position) == (cb.id, NOON - 300, 2)
    assert (place.ticket_id, place.call_id) == (5, "c1")
    after = await queue.get(cb.id)
    assert after is not None and after.state is CallbackState.CANCELLED
    events = await queue.events(cb.id)
    assert events[-1].from_state is CallbackState.PENDING
    assert events[-1].to_state is CallbackState.CANCELLED
    assert "dialled in" in events[-1].detail and "c3" in events[-1].detail
    assert await queue.claim_due(now=NOON + 100, free_operators=5) == []
    assert await queue.caller_dialled_in("13800000001", now=NOON + 120) is None
    assert await queue.caller_dialled_in("13900000000", now=NOON + 120) is None


async def test_calling_in_while_a_callback_is_connected_leaves_it(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    cb = await ask(queue)
    await queue.claim_due(now=NOON, free_operators=1)
    await queue.outcome(cb.id, CallbackState.CONNECTED, now=NOON + 5)
    assert await queue.caller_dialled_in(cb.number, now=NOON + 6) is None
    still = await queue.get(cb.id)
    assert still is not None and still.state is CallbackState.CONNECTED


async def test_a_drop_while_dialing_updates_without_a_second_dial(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    cb = await ask(queue, call_id="c1")
    await queue.claim_due(now=NOON, free_operators=1)
    merged = await ask(queue, now=NOON + 1, call_id="c2")
    assert merged.state is CallbackState.DIALING and merged.call_id == "c2"
    assert await queue.claim_due(now=NOON + 2, free_operators=5) == []
    # the callback call itself dropped after connecting: start again from attempt 1
    await queue.outcome(cb.id, CallbackState.CONNECTED, now=NOON + 10)
    again = await ask(queue, now=NOON + 60, call_id="callback-leg", reason=CallbackReason.DROPPED)
    assert (again.id, again.state, again.attempts) == (cb.id, CallbackState.PENDING, 0)
    assert again.next_at == NOON + 60
    assert (await transitions(queue, cb.id))[-1] == ("connected", "pending")


# ---------------------------------------------------------------- retries and giving up


async def test_retries_back_off_then_give_up_and_flag_the_ticket(db: Database) -> None:
    queue = CallbackQueue(db, policy(retry_delays=(0.0, 60.0, 300.0)))
    cb = await ask(queue, ticket_id=42)
    t = NOON
    [first] = await queue.claim_due(now=t, free_operators=1)
    assert (first.state, first.attempts) == (CallbackState.DIALING, 1)

    result = await queue.outcome(cb.id, CallbackState.NO_ANSWER, now=t + 30, detail="480")
    assert not result.gave_up and result.ticket_to_flag is None
    assert result.callback.state is CallbackState.NO_ANSWER
    assert result.callback.next_at == t + 30 + 60
    assert result.callback.last_error == "no_answer: 480"
    assert await queue.claim_due(now=t + 89, free_operators=1) == []
    [second] = await queue.claim_due(now=t + 90, free_operators=1)
    assert second.attempts == 2

    result = await queue.outcome(cb.id, CallbackState.BUSY, now=t + 100, detail="486")
    assert result.callback.state is CallbackState.BUSY
    assert result.callback.next_at == t + 100 + 300
    assert await queue.claim_due(now=t + 399, free_operators=1) == []
    [third] = await queue.claim_due(now=t + 400, free_operators=1)
    assert third.attempts == 3

    result = await queue.outcome(cb.id, CallbackState.NO_ANSWER, now=t + 430)
    assert result.gave_up and result.ticket_to_flag == 42
    assert result.callback.state is CallbackState.FAILED
    assert await queue.claim_due(now=t + 10_000, free_operators=1) == []
    assert await queue.next_due_at() is None
    assert await transitions(queue, cb.id) == [
        (None, "pending"),
        ("pending", "dialing"),
        ("dialing", "no_answer"),
        ("no_answer", "dialing"),
        ("dialing", "busy"),
        ("busy", "dialing"),
        ("dialing", "failed"),
    ]
    assert "gave up after 3 attempts" in (await queue.events(cb.id))[-1].detail


async def test_an_error_is_retried_and_give_up_ends_at_once(db: Database) -> None:
    queue = CallbackQueue(db, policy(retry_delays=(0.0, 20.0, 20.0)))
    cb = await ask(queue)
    await queue.claim_due(now=NOON, free_operators=1)
    result = await queue.outcome(cb.id, CallbackState.FAILED, now=NOON + 1, detail="503")
    assert result.callback.state is CallbackState.PENDING and not result.gave_up
    assert result.callback.next_at == NOON + 21
    await queue.claim_due(now=NOON + 21, free_operators=1)
    result = await queue.outcome(
        cb.id, CallbackState.FAILED, now=NOON + 22, detail="404", give_up=True
    )
    assert result.gave_up and result.callback.state is CallbackState.FAILED
    assert result.ticket_to_flag is None  # no ticket to flag
    assert result.callback.attempts == 2


async def test_outcome_and_done_check_the_state(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    cb = await ask(queue)
    with pytest.raises(CallbackStateError):
        await queue.outcome(cb.id, CallbackState.CONNECTED, now=NOON)
    with pytest.raises(ValueError, match="outcome must be"):
        await queue.outcome(cb.id, CallbackState.DONE, now=NOON)
    with pytest.raises(CallbackStateError):
        await queue.done(cb.id, now=NOON)
    with pytest.raises(CallbackNotFoundError):
        await queue.outcome(999, CallbackState.BUSY, now=NOON)
    # cancelled while dialling: the dialer's report changes nothing
    await queue.claim_due(now=NOON, free_operators=1)
    await queue.caller_dialled_in(cb.number, now=NOON + 1)
    result = await queue.outcome(cb.id, CallbackState.NO_ANSWER, now=NOON + 2)
    assert result.callback.state is CallbackState.CANCELLED and not result.gave_up
    assert (await queue.done(cb.id, now=NOON + 3)).state is CallbackState.CANCELLED


async def test_every_transition_is_recorded_with_the_time(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    cb = await ask(queue, now=NOON, call_id="c1")
    await queue.claim_due(now=NOON + 1, free_operators=1)
    await queue.outcome(cb.id, CallbackState.CONNECTED, now=NOON + 7, detail="200 OK")
    done = await queue.done(cb.id, now=NOON + 95)
    assert done.state is CallbackState.DONE
    assert await queue.done(cb.id, now=NOON + 96) == done  # idempotent
    events = await queue.events(cb.id)
    assert [(e.at, e.from_state, e.to_state) for e in events] == [
        (NOON, None, CallbackState.PENDING),
        (NOON + 1, CallbackState.PENDING, CallbackState.DIALING),
        (NOON + 7, CallbackState.DIALING, CallbackState.CONNECTED),
        (NOON + 95, CallbackState.CONNECTED, CallbackState.DONE),
    ]
    assert events[0].detail == "abandoned: call c1"
    assert events[1].detail == "attempt 1 of 3"
    assert events[2].detail == "200 OK"
    json.dumps([e.to_json() for e in events])


# ---------------------------------------------------------------- quiet hours


async def test_quiet_hours_hold_non_urgent_callbacks_until_they_end(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    late = await ask(queue, "13800000001", now=local(10, 23, 30))
    after_midnight = await ask(queue, "13800000002", now=local(11, 1, 0))
    soon = await ask(queue, "13800000003", now=local(10, 23, 30), urgency="较急")
    urgent = await ask(queue, "13800000004", now=local(10, 23, 30), urgency="紧急")
    emergency = await ask(queue, "13800000005", now=local(10, 23, 30), emergency=True)
    assert late.next_at == local(11, 7)  # wraps past midnight to the next morning
    assert after_midnight.next_at == local(11, 7)
    assert soon.next_at == local(11, 7)
    assert urgent.next_at == local(10, 23, 30)
    assert emergency.next_at == local(10, 23, 30)
    claimed = await queue.claim_due(now=local(11, 6, 59, 59), free_operators=10)
    assert {c.id for c in claimed} == {urgent.id, emergency.id}
    claimed = await queue.claim_due(now=local(11, 7), free_operators=10)
    assert {c.id for c in claimed} == {late.id, after_midnight.id, soon.id}


async def test_a_retry_falling_in_quiet_hours_waits_for_morning(db: Database) -> None:
    queue = CallbackQueue(db, policy(retry_delays=(0.0, 300.0)))
    cb = await ask(queue, now=local(10, 21, 50))
    await queue.claim_due(now=local(10, 21, 50), free_operators=1)
    result = await queue.outcome(cb.id, CallbackState.NO_ANSWER, now=local(10, 21, 58))
    assert result.callback.next_at == local(11, 7)  # 22:03 is quiet


async def test_a_due_callback_not_dialled_before_quiet_hours_waits(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    normal = await ask(queue, "13800000001", now=local(10, 21, 59))
    urgent = await ask(queue, "13800000002", now=local(10, 21, 59), urgency="紧急")
    # no operator was free until after 22:00
    assert await queue.claim_due(now=local(10, 21, 59), free_operators=0) == []
    claimed = await queue.claim_due(now=local(10, 22, 1), free_operators=5)
    assert [c.id for c in claimed] == [urgent.id]
    held = await queue.get(normal.id)
    assert held is not None and held.state is CallbackState.PENDING
    assert held.next_at == local(11, 7)
    assert await queue.next_due_at() == local(11, 7)


def test_quiet_hours_in_local_time_with_and_without_wrapping() -> None:
    night = policy(quiet_hours=("22:00", "07:00"))
    assert night.in_quiet_hours(local(10, 22, 0))
    assert night.in_quiet_hours(local(10, 23, 59, 59))
    assert night.in_quiet_hours(local(11, 0, 0))
    assert night.in_quiet_hours(local(11, 6, 59, 59))
    assert not night.in_quiet_hours(local(11, 7, 0))
    assert not night.in_quiet_hours(local(10, 21, 59, 59))
    assert night.quiet_hours_end(local(10, 22, 0)) == local(11, 7)
    assert night.quiet_hours_end(local(11, 3, 0)) == local(11, 7)

    lunch = policy(quiet_hours=("12:00", "14:00"))
    assert lunch.in_quiet_hours(local(10, 13, 0))
    assert not lunch.in_quiet_hours(local(10, 14, 0))
    assert not lunch.in_quiet_hours(local(10, 23, 0))
    assert lunch.schedule(local(10, 12, 30), urgent=False) == local(10, 14)
    assert lunch.schedule(local(10, 12, 30), urgent=True) == local(10, 12, 30)

    # 23:30 in Shanghai is 15:30 in London: not quiet there
    london = policy(timezone="Europe/London")
    assert not london.in_quiet_hours(local(10, 23, 30))
    assert london.in_quiet_hours(local(10, 6, 30))  # 22:30 the evening before in London
    assert not policy(quiet_hours=None).in_quiet_hours(local(10, 23, 30))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"retry_delays": ()}, "at least one delay"),
        ({"retry_delays": (0.0, -5.0)}, "0 or more seconds"),
        ({"quiet_hours": ("25:00", "07:00")}, "HH:MM"),
        ({"quiet_hours": ("22:00", "7")}, "HH:MM"),
        ({"quiet_hours": ("07:00", "07:00")}, "same time"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"max_attempts_per_hour": 0}, "max_attempts_per_hour"),
        ({"max_dialing": 0}, "max_dialing"),
    ],
)
def test_a_bad_policy_is_refused_with_a_clear_message(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        policy(**changes)


# ---------------------------------------------------------------- dialling limits


async def test_never_more_dialing_than_operators_free(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    for n in range(5):
        await ask(queue, f"1380000000{n}")
    assert await queue.claim_due(now=NOON, free_operators=0) == []
    assert len(await queue.claim_due(now=NOON, free_operators=2)) == 2
    # the two still dialling count against the operators free
    assert await queue.claim_due(now=NOON + 1, free_operators=2) == []
    assert len(await queue.claim_due(now=NOON + 1, free_operators=3)) == 1
    assert len(await queue.claim_due(now=NOON + 1, free_operators=10, limit=1)) == 1
    assert (await queue.counts())["dialing"] == 4
    with pytest.raises(ValueError):
        await queue.claim_due(now=NOON, free_operators=-1)


async def test_customer_first_dials_up_to_max_dialing_regardless(db: Database) -> None:
    queue = CallbackQueue(db, policy(customer_first=True, max_dialing=3))
    for n in range(5):
        await ask(queue, f"1380000000{n}")
    claimed = await queue.claim_due(now=NOON, free_operators=0)
    assert len(claimed) == 3
    assert await queue.claim_due(now=NOON + 1, free_operators=50) == []
    await queue.outcome(claimed[0].id, CallbackState.CONNECTED, now=NOON + 2)
    assert len(await queue.claim_due(now=NOON + 3, free_operators=0)) == 1


async def test_rate_limit_per_number_per_hour(db: Database) -> None:
    queue = CallbackQueue(db, policy(retry_delays=(0.0,) * 6, max_attempts_per_hour=2))
    cb = await ask(queue, "13800000001")
    other = await ask(queue, "13900000009")
    for t in (NOON, NOON + 10):
        claimed = await queue.claim_due(now=t, free_operators=5)
        assert cb.id in {c.id for c in claimed}
        for c in claimed:
            await queue.outcome(c.id, CallbackState.NO_ANSWER, now=t + 1)
    # a third attempt within the hour waits until the first leaves the window
    claimed = await queue.claim_due(now=NOON + 20, free_operators=5)
    assert claimed == []
    held = await queue.get(cb.id)
    assert held is not None and held.next_at == NOON + 3600
    assert await queue.claim_due(now=NOON + 3599, free_operators=5) == []
    claimed = await queue.claim_due(now=NOON + 3600, free_operators=5)
    assert {c.id for c in claimed} == {cb.id, other.id}
    await queue.outcome(cb.id, CallbackState.NO_ANSWER, now=NOON + 3601)
    # the limit is per number, across callbacks: a new one for it waits too
    await queue.caller_dialled_in(cb.number, now=NOON + 3602)
    fresh = await ask(queue, cb.number, now=NOON + 3603, call_id="c-new")
    assert fresh.id != cb.id
    assert await queue.claim_due(now=NOON + 3603, free_operators=5) == []
    held = await queue.get(fresh.id)
    assert held is not None and held.next_at == NOON + 10 + 3600


async def test_priority_emergency_urgent_then_elderly_then_the_rest(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    made = {
        "normal early": await ask(queue, "10", enqueued_at=NOON - 900),
        "normal late": await ask(queue, "11", enqueued_at=NOON - 100),
        "elderly": await ask(queue, "12", elderly=True),
        "soon": await ask(queue, "13", urgency="较急"),
        "urgent": await ask(queue, "14", urgency="紧急"),
        "urgent elderly": await ask(queue, "15", urgency="紧急", elderly=True),
        "emergency": await ask(queue, "16", emergency=True, urgency="一般"),
    }
    # the normal caller who never queued (dropped in the menu) counts from the drop
    made["normal dropped"] = await ask(queue, "17", now=NOON - 500)
    claimed = await queue.claim_due(now=NOON, free_operators=20)
    names = {cb.id: name for name, cb in made.items()}
    assert [names[c.id] for c in claimed] == [
        "emergency",
        "urgent elderly",
        "urgent",
        "soon",
        "elderly",
        "normal early",
        "normal dropped",
        "normal late",
    ]
    listed = await queue.list(states=[CallbackState.DIALING])
    assert [c.id for c in listed] == [c.id for c in claimed]


# ---------------------------------------------------------------- crash safety


async def test_two_connections_never_claim_the_same_callback(
    store_location: str | Path,
) -> None:
    path = store_location
    async with await open_store(path) as one, await open_store(path) as two:
        first, second = CallbackQueue(one, policy()), CallbackQueue(two, policy())
        ids = {(await ask(first, f"13800{n:06d}")).id for n in range(40)}
        batches = await asyncio.gather(
            *(
                q.claim_due(now=NOON, free_operators=100, limit=3)
                for _ in range(10)
                for q in (first, second)
            )
        )
        claimed = [cb.id for batch in batches for cb in batch]
        assert len(claimed) == len(set(claimed)) == 40
        assert set(claimed) == ids
        for cb in await first.list():
            assert (cb.state, cb.attempts) == (CallbackState.DIALING, 1)
            assert await transitions(first, cb.id) == [(None, "pending"), ("pending", "dialing")]


async def test_two_connections_share_the_operator_limit(store_location: str | Path) -> None:
    path = store_location
    async with await open_store(path) as one, await open_store(path) as two:
        first, second = CallbackQueue(one, policy()), CallbackQueue(two, policy())
        for n in range(20):
            await ask(first, f"13800{n:06d}")
        batches = await asyncio.gather(
            *(q.claim_due(now=NOON, free_operators=5) for _ in range(6) for q in (first, second))
        )
        assert sum(len(batch) for batch in batches) == 5


async def test_recover_after_a_crash_mid_dial(store_location: str | Path) -> None:
    path = store_location
    db = await open_store(path)
    queue = CallbackQueue(db, policy())
    dialing = await ask(queue, "13800000001")
    connected = await ask(queue, "13800000002")
    waiting = await ask(queue, "13800000003", now=NOON + 500)
    await queue.claim_due(now=NOON, free_operators=2)
    await queue.outcome(connected.id, CallbackState.CONNECTED, now=NOON + 3)
    await db.close()  # the process dies: no outcome for the dial in progress

    async with await open_store(path) as reopened:
        queue = CallbackQueue(reopened, policy())
        assert await queue.recover(now=NOON + 60) == 2
        for cb_id in (dialing.id, connected.id):
            cb = await queue.get(cb_id)
            assert cb is not None
            assert (cb.state, cb.next_at, cb.attempts) == (CallbackState.PENDING, NOON + 60, 1)
            last = (await queue.events(cb_id))[-1]
            assert last.at == NOON + 60 and last.to_state is CallbackState.PENDING
            assert last.detail.startswith("recovered after restart")
        assert (await queue.events(dialing.id))[-1].detail == "recovered after restart"
        assert (await queue.events(dialing.id))[-1].from_state is CallbackState.DIALING
        untouched = await queue.get(waiting.id)
        assert untouched is not None and untouched.next_at == NOON + 500
        assert await queue.recover(now=NOON + 61) == 0
        again = await queue.claim_due(now=NOON + 60, free_operators=5)
        assert {c.id: c.attempts for c in again} == {dialing.id: 2, connected.id: 2}


# ---------------------------------------------------------------- admin


async def test_cancel_with_a_reason_and_retry_keeping_attempts(db: Database) -> None:
    queue = CallbackQueue(db, policy(retry_delays=(0.0,)))
    cb = await ask(queue, "13800000001", ticket_id=3)
    await queue.claim_due(now=NOON, free_operators=1)
    failed = await queue.outcome(cb.id, CallbackState.BUSY, now=NOON + 1)
    assert failed.gave_up and failed.ticket_to_flag == 3

    retried = await queue.retry(cb.id, now=NOON + 100)
    assert (retried.state, retried.attempts, retried.next_at) == (
        CallbackState.PENDING,
        1,
        NOON + 100,
    )
    assert (await queue.events(cb.id))[-1].detail == "retry requested (after 1 attempts)"
    [claimed] = await queue.claim_due(now=NOON + 100, free_operators=1)
    assert claimed.attempts == 2

    other = await ask(queue, "13800000002")
    cancelled = await queue.cancel(other.id, "duplicate of ticket 3", now=NOON + 200)
    assert cancelled.state is CallbackState.CANCELLED
    assert (await queue.events(other.id))[-1].detail == "duplicate of ticket 3"
    with pytest.raises(CallbackStateError):
        await queue.cancel(other.id, "again", now=NOON + 201)
    with pytest.raises(ValueError, match="reason"):
        await queue.cancel(claimed.id, "  ", now=NOON + 201)
    with pytest.raises(CallbackNotFoundError):
        await queue.cancel(999, "x", now=NOON)
    with pytest.raises(CallbackStateError, match="call in progress"):
        await queue.retry(claimed.id, now=NOON + 202)
    # a closed callback cannot reopen while the number has another open one
    await ask(queue, "13800000002", now=NOON + 300, call_id="c-new")
    with pytest.raises(CallbackStateError, match="already has open callback"):
        await queue.retry(other.id, now=NOON + 301)


async def test_retry_in_quiet_hours_waits_unless_urgent(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    normal = await ask(queue, "13800000001", now=local(10, 20))
    urgent = await ask(queue, "13800000002", now=local(10, 20), urgency="紧急")
    await queue.cancel(normal.id, "x", now=local(10, 21))
    await queue.cancel(urgent.id, "x", now=local(10, 21))
    assert (await queue.retry(normal.id, now=local(10, 23))).next_at == local(11, 7)
    assert (await queue.retry(urgent.id, now=local(10, 23))).next_at == local(10, 23)


async def test_list_filters_and_json(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    a = await ask(queue, "13800000001")
    b = await ask(queue, "13800000002", now=NOON + 1)
    c = await ask(queue, "13800000003", now=NOON + 2)
    await queue.cancel(b.id, "x", now=NOON + 3)
    assert [x.id for x in await queue.list()] == [a.id, c.id, b.id]
    assert [x.id for x in await queue.list(states=["cancelled"])] == [b.id]
    assert [x.id for x in await queue.list(states=["pending", "busy"])] == [a.id, c.id]
    assert [x.id for x in await queue.list(number="13800000003")] == [c.id]
    assert await queue.list(states=[]) == []
    assert len(await queue.list(limit=1)) == 1
    with pytest.raises(ValueError):
        await queue.list(states=["bogus"])
    assert (await queue.counts())["pending"] == 2
    assert (await queue.open_for("13800000001")) == a
    data = json.loads(json.dumps([x.to_json() for x in await queue.list()], ensure_ascii=False))
    assert data[0]["state"] == "pending" and data[0]["number"] == "13800000001"


async def test_request_refuses_bad_input(db: Database) -> None:
    queue = CallbackQueue(db, policy())
    with pytest.raises(ValueError, match="number"):
        await ask(queue, " ")
    with pytest.raises(ValueError, match="urgency"):
        await ask(queue, urgency="very")
    with pytest.raises(ValueError, match="now"):
        await ask(queue, now=float("nan"))
    with pytest.raises(ValueError, match="call_id"):
        await ask(queue, call_id="")
    assert await queue.list() == []


async def test_a_node_takes_back_only_its_own_dials(store_location: str | Path) -> None:
    """In a cluster a node recovers the callbacks it (or a lost node) was
    dialling, never those another live node is dialling now."""
    async with await open_store(store_location) as one, await open_store(store_location) as two:
        a = CallbackQueue(one, policy(), node="node-a")
        b = CallbackQueue(two, policy(), node="node-b")
        first = await ask(a, "13800000001")
        second = await ask(a, "13800000002")
        (on_a,) = await a.claim_due(now=NOON, free_operators=5, limit=1)
        (on_b,) = await b.claim_due(now=NOON, free_operators=5, limit=1)
        assert {on_a.id, on_b.id} == {first.id, second.id}
        assert await b.recover(now=NOON + 10, node="node-b") == 1  # b restarted
        mine = await b.get(on_b.id)
        theirs = await b.get(on_a.id)
        assert mine is not None and mine.state is CallbackState.PENDING
        assert theirs is not None and theirs.state is CallbackState.DIALING  # a dials on
        assert await a.recover(now=NOON + 20, node="node-a") == 1  # a lost: a survivor
        back = await a.get(on_a.id)
        assert back is not None and back.state is CallbackState.PENDING
