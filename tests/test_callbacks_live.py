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

from ivr.callbacks import CallbackState
from ivr.trial_call import TrialOptions, place_call
from tests.audio_tools import best_match, write_wav
from tests.conftest import StartHotline
from tests.peers import Baresip, SippUas, free_udp_port
from tests.web_client import hotline_client

DATA = Path(__file__).parent / "data"
PLAN = DATA / "dialplans" / "straight_to_queue.toml"
RING_ONLY = str(DATA / "sipp" / "uas_ring_only.xml")
NUMBER = "13800138000"
LOG = logging.getLogger("test.callbacks")

pytestmark = pytest.mark.peers


def busy_operator(tmp_path: Path, *, trace: bool = False) -> SippUas:
    """An operator whose phone rings and is never picked up (callers wait in line)."""
    return SippUas(
        tmp_path / "op", free_udp_port(), free_udp_port(even=True), scenario=RING_ONLY, trace=trace
    )


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


@pytest.mark.parametrize("elderly", [False, True])
async def test_abandoned_caller_is_called_back(
    start_hotline: StartHotline, tmp_path: Path, elderly: bool
) -> None:
    operator = busy_operator(tmp_path, trace=True)
    import numpy as np

    silence = write_wav(tmp_path / "quiet.wav", np.zeros(8000 * 60, dtype=np.int16))
    phone = Baresip(
        tmp_path / "phone", free_udp_port(), play=silence, auto_answer=True, user=NUMBER
    )
    await operator.start()
    await phone.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=PLAN,
            ring_timeout=30.0,
            callbacks=callbacks_config(phone.sip_port),
        )
        if elderly:  # e.g. from the elderly registry: the greeting comes slowed
            assert hotline.profiles is not None
            await hotline.profiles.remember(NUMBER, speed=0.8)
        result = await abandon(hotline.endpoint.port)
        assert result.ended_by == "caller"
        (record,) = await caller_records(hotline, 1)
        assert record.outcome == "abandoned"
        queue = hotline.callback_queue
        assert queue is not None

        async def connected() -> bool:
            found = await queue.list()
            return bool(found) and found[0].state is CallbackState.CONNECTED

        await until(connected)
        (callback,) = await queue.list()
        assert callback.number == NUMBER and callback.reason.value == "abandoned"
        assert callback.original_position == 1

        async def second_operator_invite() -> bool:
            return operator.messages().count("INVITE sip:") >= 2

        await until(second_operator_invite)  # greeting played, queued again
        await asyncio.sleep(1.0)
        greeting = hotline.prompts.get("callback_greeting", 0.8 if elderly else 1.0).pcm
    finally:
        await phone.hangup()
        await asyncio.sleep(0.5)
        await phone.quit()
        await hotline.stop(drain_timeout=1.0)
        await operator.stop()
    # the phone heard the callback greeting
    import soundfile as sf

    (heard_file,) = phone.recordings("dec")
    heard, _ = sf.read(str(heard_file), dtype="int16")
    score, _ = best_match(heard, greeting[8000 : 8000 * 3])
    assert score > 0.8, f"the callee did not hear the callback greeting ({score:.2f})"
    # both INVITEs to the operator carry the same ticket: the first call's
    tickets = [
        line.split(":", 1)[1].strip()
        for line in operator.messages().splitlines()
        if line.startswith("X-Ticket-Id:")
    ]
    assert len(set(tickets)) == 1 and len(tickets) >= 2
    assert callback.ticket_id is not None and tickets[0] == str(callback.ticket_id)
    events = [e.to_state.value for e in await _events(hotline, callback.id)]
    assert events[:3] == ["pending", "dialing", "connected"]


async def _events(hotline: Any, callback_id: int) -> list[Any]:
    from ivr.callbacks import CallbackQueue

    assert isinstance(hotline.callback_queue, CallbackQueue)
    from ivr.store import open_store

    db = await open_store(hotline.settings.storage.location)
    try:
        return await CallbackQueue(db, hotline.callback_queue.policy).events(callback_id)
    finally:
        await db.close()


async def test_busy_then_answered(start_hotline: StartHotline, tmp_path: Path) -> None:
    operator = busy_operator(tmp_path)
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
    operator = busy_operator(tmp_path)
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

        base = f"http://127.0.0.1:{hotline.api.port}/api/callbacks"
        async with await hotline_client(hotline, "operator") as http:
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


async def test_a_trunk_refusing_our_credentials_is_retried_then_flagged(
    start_hotline: StartHotline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    operator = busy_operator(tmp_path)
    trunk = SippUas(
        tmp_path / "trunk",
        free_udp_port(),
        free_udp_port(even=True),
        scenario=str(DATA / "sipp" / "uas_digest.xml"),
        trace=True,
    )
    await operator.start()
    await trunk.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=PLAN,
            ring_timeout=30.0,
            callbacks=callbacks_config(trunk.port, retry="[0, 1]")
            + 'username = "ivr"\npassword = "not-the-password"\n',
        )
        await abandon(hotline.endpoint.port)
        queue = hotline.callback_queue
        assert queue is not None and hotline.tickets is not None

        async def failed() -> bool:
            found = await queue.list()
            return bool(found) and found[0].state is CallbackState.FAILED

        await until(failed)
        (callback,) = await queue.list()
        details = [e.detail for e in await queue.events(callback.id)]
        assert callback.ticket_id is not None
        ticket = await hotline.tickets.get(callback.ticket_id)
    finally:
        await hotline.stop(drain_timeout=1.0)
        await trunk.stop()
        await operator.stop()
    assert callback.attempts == 2
    refused = [d for d in details if "refused our credentials (403" in d]
    assert len(refused) == 2, details
    assert ticket is not None and any("given up" in n for n in ticket.notes)
    assert "the trunk refused our credentials" in caplog.text
    assert trunk.messages().count("403 Forbidden") == 2


async def test_a_number_that_cannot_be_dialled_is_flagged_not_dropped(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    operator = busy_operator(tmp_path)
    await operator.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=PLAN,
            ring_timeout=30.0,
            callbacks=callbacks_config(free_udp_port()),
        )
        await place_call(
            TrialOptions(
                target=f"sip:12345@127.0.0.1:{hotline.endpoint.port}",
                duration=3.0,
                caller="front-desk",
            ),
            LOG,
        )
        queue = hotline.callback_queue
        assert queue is not None and hotline.tickets is not None

        async def failed() -> bool:
            found = await queue.list()
            return bool(found) and found[0].state is CallbackState.FAILED

        await until(failed)
        (callback,) = await queue.list()
        assert callback.ticket_id is not None
        ticket = await hotline.tickets.get(callback.ticket_id)
        details = [e.detail for e in await queue.events(callback.id)]
    finally:
        await hotline.stop(drain_timeout=1.0)
        await operator.stop()
    assert callback.attempts == 1
    assert any("'front-desk' is not a dialable number" in d for d in details)
    assert ticket is not None and any("given up" in n for n in ticket.notes)


async def test_a_call_that_goes_dead_after_the_greeting_is_called_back(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    from tests.sip_raw import header, invite, raw_peer, status_of

    phone = SippUas(
        tmp_path / "phone", free_udp_port(), free_udp_port(even=True), user=NUMBER, trace=True
    )
    await phone.start()
    peer = await raw_peer()
    try:
        hotline = await start_hotline(
            sip_extra="rtp_timeout = 2.0", callbacks=callbacks_config(phone.port)
        )
        text, call_id, _ = invite(peer.port, hotline.endpoint.port)
        peer.send(text, hotline.endpoint.port)
        ok = ""
        while status_of(ok) < 200:
            ok = await peer.expect()
        peer.send(
            f"ACK sip:ivr@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{peer.port};"
            f"branch=z9hG4bKa1\r\nFrom: {header(ok, 'From')}\r\nTo: {header(ok, 'To')}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            hotline.endpoint.port,
        )
        # the phone sends no audio at all: after 2 s the IVR declares the call dead

        async def invited() -> bool:
            return "INVITE sip:13800138000@" in phone.messages()

        await until(invited)
        queue = hotline.callback_queue
        assert queue is not None
        (callback,) = await queue.list()
    finally:
        peer.close()
        await hotline.stop(drain_timeout=1.0)
        await phone.stop()
    assert callback.reason.value == "dropped" and callback.first_call_id == call_id


class SetClock:
    """Wall time the test sets (the IVR's callback queue reads it)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


async def test_quiet_hours_hold_a_callback_until_morning(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    shanghai = ZoneInfo("Asia/Shanghai")
    clock = SetClock(datetime(2026, 11, 25, 23, 30, tzinfo=shanghai).timestamp())
    operator = busy_operator(tmp_path)
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
            clock=clock,
            callbacks=callbacks_config(phone.port).replace(
                'quiet_hours = ""', 'quiet_hours = "22:00-07:00"'
            ),
        )
        await abandon(hotline.endpoint.port)
        queue = hotline.callback_queue
        assert queue is not None

        async def requested() -> bool:
            return bool(await queue.list())

        await until(requested)
        await asyncio.sleep(2.0)
        assert "INVITE" not in phone.messages()  # 23:30: a non-urgent callback waits
        (callback,) = await queue.list()
        morning = datetime(2026, 11, 26, 7, 0, tzinfo=shanghai).timestamp()
        assert callback.state is CallbackState.PENDING and callback.next_at == morning
        clock.at = morning + 1  # the next morning
        assert hotline.callback_dialler is not None
        hotline.callback_dialler.wake()

        async def invited() -> bool:
            return "INVITE sip:13800138000@" in phone.messages()

        await until(invited)
    finally:
        await hotline.stop(drain_timeout=1.0)
        await phone.stop()
        await operator.stop()


async def test_an_unreachable_trunk_is_logged_and_flagged(
    start_hotline: StartHotline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    operator = busy_operator(tmp_path)
    await operator.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=PLAN,
            ring_timeout=30.0,
            # nobody listens on this port: no response at all, not even 100 Trying
            callbacks=callbacks_config(free_udp_port(), retry="[0]").replace(
                "ring_timeout = 10", "ring_timeout = 60"
            ),
        )
        await abandon(hotline.endpoint.port)
        queue = hotline.callback_queue
        assert queue is not None and hotline.tickets is not None

        async def failed() -> bool:
            found = await queue.list()
            return bool(found) and found[0].state is CallbackState.FAILED

        await until(failed, timeout=45.0)  # SIP gives up on an unanswered INVITE after 32 s
        (callback,) = await queue.list()
        details = [e.detail for e in await queue.events(callback.id)]
        assert callback.ticket_id is not None
        ticket = await hotline.tickets.get(callback.ticket_id)
    finally:
        await hotline.stop(drain_timeout=1.0)
        await operator.stop()
    assert any("the trunk did not answer at all" in d for d in details), details
    assert "check callbacks.dial_uri" in caplog.text
    assert ticket is not None and any("given up" in n for n in ticket.notes)
