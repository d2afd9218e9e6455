"""Callbacks with real SIP peers: a caller hangs up while waiting for an
operator and a sipp uas standing for their phone gets the callback INVITE;
busy then answered (retry); the caller rings again first (cancelled, and
they keep their place)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from callbacks import CallbackState
from ivr.trial_call import TrialOptions, place_call
from tests.conftest import StartHotline
from tests.peers import SippUas, free_udp_port

DATA = Path(__file__).parent / "data"
PLAN = DATA / "dialplans" / "straight_to_queue.toml"
RING_ONLY = str(DATA / "sipp" / "uas_ring_only.xml")
NUMBER = "13800138000"
LOG = logging.getLogger("test.callbacks")

pytestmark = pytest.mark.peers


def callbacks_config(phone_port: int, retry: str = "[0, 1]") -> str:
    return f"""enabled = true
dial_uri = "sip:{{number}}@127.0.0.1:{phone_port}"
caller_id = "12345"
ring_timeout = 10
retry = {retry}
quiet_hours = ""
customer_first = true
"""


async def abandon(port: int, seconds: float = 3.0) -> Any:
    """Our trial caller waits in the queue for ``seconds``, then hangs up."""
    return await place_call(
        TrialOptions(target=f"sip:12345@127.0.0.1:{port}", duration=seconds, caller=NUMBER), LOG
    )


async def caller_records(hotline: Any, count: int) -> list[Any]:
    """Records of the caller's own calls (not callbacks), once ``count`` ended."""
    found: list[Any] = []

    async def ended() -> bool:
        nonlocal found
        found = [
            r
            for r in await hotline.records.list_recent(50)
            if r.ended_at is not None and r.dialled != "callback"
        ]
        return len(found) >= count

    await until(ended)
    return found


async def until(check: Any, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.2)):
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


async def test_abandoned_caller_is_called_back(start_hotline: StartHotline, tmp_path: Path) -> None:
    operator = SippUas(
        tmp_path / "op", free_udp_port(), free_udp_port(even=True), scenario=RING_ONLY
    )
    phone = SippUas(
        tmp_path / "phone", free_udp_port(), free_udp_port(even=True), user=NUMBER, trace=True
    )
    await operator.start()
    await phone.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=PLAN,
            ring_timeout=30.0,
            callbacks=callbacks_config(phone.port),
        )
        result = await abandon(hotline.endpoint.port)
        assert result.ended_by == "caller"
        (record,) = await caller_records(hotline, 1)
        assert record.outcome == "abandoned"

        async def invited() -> bool:
            return "INVITE sip:13800138000@" in phone.messages()

        await until(invited)
        queue = hotline.callback_queue
        assert queue is not None
        (callback,) = await queue.list()
        assert callback.number == NUMBER and callback.reason.value == "abandoned"
        assert callback.original_position == 1

        async def greeted() -> bool:
            return any(c.record.dialled == "callback" for c in hotline.calls.values())

        await until(greeted)
    finally:
        await hotline.stop(drain_timeout=1.0)
        await phone.stop()
        await operator.stop()
    invite = phone.messages().split("INVITE sip:13800138000@")[1]
    assert "From: <sip:12345@127.0.0.1" in invite and f"X-Callback-Id: {callback.id}" in invite
    events = [e.to_state.value for e in await _events(hotline, callback.id)]
    assert events[:3] == ["pending", "dialing", "connected"]


async def _events(hotline: Any, callback_id: int) -> list[Any]:
    from callbacks import CallbackQueue

    assert isinstance(hotline.callback_queue, CallbackQueue)
    from ivr.database import open_database

    db = await open_database(hotline.settings.storage.database)
    try:
        return await CallbackQueue(db, hotline.callback_queue.policy).events(callback_id)
    finally:
        await db.close()


async def test_busy_then_answered(start_hotline: StartHotline, tmp_path: Path) -> None:
    operator = SippUas(
        tmp_path / "op", free_udp_port(), free_udp_port(even=True), scenario=RING_ONLY
    )
    phone_port = free_udp_port()
    busy = SippUas(
        tmp_path / "busy",
        phone_port,
        free_udp_port(even=True),
        scenario=str(DATA / "sipp" / "uas_busy.xml"),
        user=NUMBER,
        trace=True,
    )
    await operator.start()
    await busy.start()
    answering = SippUas(
        tmp_path / "phone", phone_port, free_udp_port(even=True), user=NUMBER, trace=True
    )
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=PLAN,
            ring_timeout=30.0,
            callbacks=callbacks_config(phone_port, retry="[0, 2]"),
        )
        await abandon(hotline.endpoint.port)
        queue = hotline.callback_queue
        assert queue is not None

        async def was_busy() -> bool:
            cbs = await queue.list()
            return bool(cbs) and cbs[0].state is CallbackState.BUSY

        await until(was_busy)
        await busy.stop()  # the line is free again
        await answering.start()

        async def connected() -> bool:
            cbs = await queue.list()
            return cbs[0].state is CallbackState.CONNECTED

        await until(connected)
        (callback,) = await queue.list()
        assert callback.attempts == 2
    finally:
        await hotline.stop(drain_timeout=1.0)
        await answering.stop()
        await operator.stop()
    assert "486 Busy Here" in busy.messages()
    assert "INVITE sip:13800138000@" in answering.messages()


async def test_ringing_again_cancels_the_callback_and_keeps_the_place(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    operator = SippUas(
        tmp_path / "op", free_udp_port(), free_udp_port(even=True), scenario=RING_ONLY
    )
    phone = SippUas(
        tmp_path / "phone", free_udp_port(), free_udp_port(even=True), user=NUMBER, trace=True
    )
    await operator.start()
    await phone.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=PLAN,
            ring_timeout=30.0,
            callbacks=callbacks_config(phone.port, retry="[60]"),  # not dialled yet
        )
        await abandon(hotline.endpoint.port)
        await caller_records(hotline, 1)
        queue = hotline.callback_queue
        assert queue is not None
        (callback,) = await queue.list()
        assert callback.state is CallbackState.PENDING
        # someone else is waiting when our caller rings again
        other = asyncio.ensure_future(
            place_call(
                TrialOptions(
                    target=f"sip:12345@127.0.0.1:{hotline.endpoint.port}",
                    duration=6.0,
                    caller="13900000000",
                ),
                LOG,
            )
        )
        await asyncio.sleep(1.0)
        again = asyncio.ensure_future(abandon(hotline.endpoint.port, seconds=3.0))

        async def both_waiting() -> bool:
            return len(hotline.desk.queues["general"].line) == 2

        await until(both_waiting)
        line = hotline.desk.queues["general"].line
        by_caller = {c.call_id: c.caller for c in hotline.calls.values()}
        assert by_caller[line[0]] == NUMBER  # ahead of the caller who came later
        await again
        await other
        (cb,) = [c for c in await queue.list() if c.id == callback.id]
        assert cb.state is CallbackState.CANCELLED
        # they hung up again while waiting: a new callback, and only one is open
        await caller_records(hotline, 3)
        open_ones = [c for c in await queue.list() if c.state.is_open and c.number == NUMBER]
        assert len(open_ones) == 1
        # the same through the JSON API: list, cancel, and bad requests
        import aiohttp

        base = f"http://127.0.0.1:{hotline.api.port}/api/callbacks"
        async with aiohttp.ClientSession() as http:
            async with http.get(base, params={"state": "pending"}) as r:
                listed = (await r.json())["callbacks"]
                assert open_ones[0].id in [c["id"] for c in listed]
            async with http.post(f"{base}/{open_ones[0].id}/cancel", json={"reason": "test"}) as r:
                assert r.status == 200 and (await r.json())["callback"]["state"] == "cancelled"
            async with http.get(f"{base}/{open_ones[0].id}") as r:
                events = (await r.json())["events"]
                assert events[-1]["to_state"] == "cancelled" and "test" in events[-1]["detail"]
            async with http.post(f"{base}/999999/retry") as r:
                assert r.status == 404
            async with http.get(base, params={"state": "lost"}) as r:
                assert r.status == 400
    finally:
        await hotline.stop(drain_timeout=1.0)
        await phone.stop()
        await operator.stop()
    assert "INVITE" not in phone.messages()
