"""Operators (ring, skip, hang-up both ways) and the IVR's life cycle
(cancel before answer, graceful shutdown, dial-plan reload), with real peers."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest

from ivr.trial_call import place_call
from tests.conftest import ROOT, StartHotline, trial
from tests.peers import Baresip, SippUas, free_udp_port
from tests.sip_raw import header, invite, raw_peer, status_of
from tests.test_call_path import wait_records

DATA = Path(__file__).parent / "data"
LOG = logging.getLogger("ivr.test.caller")


@pytest.mark.peers
async def test_operator_who_does_not_answer_is_skipped(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    ringer = SippUas(
        tmp_path / "ringer",
        free_udp_port(),
        free_udp_port(even=True),
        scenario=str(DATA / "sipp" / "uas_ring_only.xml"),
    )
    answerer = SippUas(tmp_path / "answerer", free_udp_port(), free_udp_port(even=True))
    await ringer.start()
    await answerer.start()
    try:
        hotline = await start_hotline([ringer.uri, answerer.uri], ring_timeout=2.0)
        result = await place_call(
            trial(hotline.endpoint.port, digits="0", digit_delay=1.0, duration=9.0), LOG
        )
        assert result.status == 200
        (record,) = await wait_records(hotline, 1)
    finally:
        await ringer.stop()
        await answerer.stop()
    assert record.operator == answerer.uri, record
    assert record.outcome == "bridged"
    assert hotline.endpoint.dialog_count == 0


@pytest.mark.peers
async def test_operator_hangs_up_and_caller_leg_is_ended(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    import numpy as np

    from tests.audio_tools import write_wav

    voice = write_wav(tmp_path / "op.wav", np.zeros(8000 * 30, dtype=np.int16))
    operator = Baresip(
        tmp_path / "op", free_udp_port(), play=voice, auto_answer=True, user="operator"
    )
    await operator.start()
    try:
        hotline = await start_hotline([operator.uri])
        call = asyncio.ensure_future(
            place_call(
                trial(hotline.endpoint.port, digits="0", digit_delay=1.0, duration=20.0), LOG
            )
        )
        for _ in range(150):
            await asyncio.sleep(0.1)
            if operator.saw("established"):
                break
        assert operator.saw("established"), "\n".join(operator.output)
        await asyncio.sleep(1.0)
        await operator.hangup()
        result = await asyncio.wait_for(call, 15)
        (record,) = await wait_records(hotline, 1)
    finally:
        await operator.quit()
    assert result.ended_by == "ivr", "the caller's leg was not hung up by the IVR"
    assert record.end_reason == "operator_hangup"
    assert record.operator == operator.uri
    assert hotline.endpoint.dialog_count == 0


async def test_caller_who_leaves_the_queue_is_recorded_abandoned(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    ringer = SippUas(
        tmp_path / "ringer",
        free_udp_port(),
        free_udp_port(even=True),
        scenario=str(DATA / "sipp" / "uas_ring_only.xml"),
    )
    await ringer.start()
    try:
        hotline = await start_hotline([ringer.uri], ring_timeout=10.0)
        await place_call(
            trial(hotline.endpoint.port, digits="0", digit_delay=1.0, duration=9.0), LOG
        )
        (record,) = await wait_records(hotline, 1)
    finally:
        await ringer.stop()
    assert record.queue == "general"
    assert record.outcome == "abandoned"
    assert record.end_reason == "caller_hangup"


async def test_cancel_before_answer(start_hotline: StartHotline) -> None:
    hotline = await start_hotline(sip_extra="answer_delay = 3.0")
    peer = await raw_peer()
    try:
        text, call_id, _ = invite(peer.port, hotline.endpoint.port)
        peer.send(text, hotline.endpoint.port)
        assert status_of(await peer.expect()) == 100
        assert status_of(await peer.expect()) == 180
        cancel = (
            f"CANCEL sip:12345@127.0.0.1:{hotline.endpoint.port} SIP/2.0\r\n"
            + "\r\n".join(
                line
                for line in text.split("\r\n\r\n")[0].split("\r\n")[1:]
                if line.split(":")[0] in ("Via", "From", "To", "Call-ID")
            )
            + "\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
        )
        peer.send(cancel, hotline.endpoint.port)
        replies = {status_of(await peer.expect()) for _ in range(2)}
        assert replies == {200, 487}
        assert header(text, "Call-ID") == call_id
    finally:
        peer.close()
    (record,) = await wait_records(hotline, 1)
    assert record.outcome == "cancelled" and record.end_reason == "cancelled"


async def test_graceful_shutdown_refuses_new_calls_and_lets_current_finish(
    start_hotline: StartHotline,
) -> None:
    hotline = await start_hotline()
    call = asyncio.ensure_future(place_call(trial(hotline.endpoint.port, duration=3.0), LOG))
    await asyncio.sleep(1.0)
    stopping = asyncio.ensure_future(hotline.stop(drain_timeout=10.0))
    await asyncio.sleep(0.2)
    refused = await place_call(
        trial(hotline.endpoint.port, duration=1.0, rtp_ports=(43500, 43540)), LOG
    )
    assert refused.status == 503
    result = await call
    assert result.status == 200 and result.ended_by == "caller", "current call was cut"
    await stopping
    assert hotline.stopped.is_set()


async def test_reload_keeps_running_plan_when_new_one_is_broken(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    plan_file = tmp_path / "plan.toml"
    shutil.copy(ROOT / "dialplans" / "12345.toml", plan_file)
    hotline = await start_hotline(dialplan=plan_file)
    assert hotline.plan is not None
    version = hotline.plan.version
    plan_file.write_text(plan_file.read_text() + '\n[nodes.broken]\ntype = "teleport"\n')
    assert not await hotline.reload_plan()
    assert hotline.plan.version == version
    result = await place_call(trial(hotline.endpoint.port, duration=1.5), LOG)
    assert result.status == 200
