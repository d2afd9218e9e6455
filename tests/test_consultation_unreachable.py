"""Bad input for consultation (issue 14 item 6): a department whose URI is down
(nothing answers at its address) and one that rings and never answers. Real
peers: a caller (our trial caller) and an operator (baresip) who keep talking;
the operator hears the busy tone and their screen is told why, each time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import StartHotline
from tests.peers import SippUas, free_udp_port
from tests.test_call_path import wait_records
from tests.test_conference import (
    BUSY_TONE_HZ,
    CALLER_HZ,
    HEARD,
    NOT_HEARD,
    OPERATOR_HZ,
    RATE,
    Events,
    caller_heard,
    caller_with_tone,
    heard_by,
    heard_only,
    level,
    tone_phone,
    until,
    windows,
)

RING_ONLY = str(Path(__file__).parent / "data" / "sipp" / "uas_ring_only.xml")

pytestmark = pytest.mark.peers


async def test_a_department_that_is_down_or_never_answers_leaves_the_call_going(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """*71: 应急局 is down (no SIP peer at its address); *72: 街道办 rings and is
    never picked up. Each: after ring_timeout (3 s) the operator hears the busy
    tone and the screen says 无人接听; the caller hears neither, and caller and
    operator go on hearing each other to the end of the call."""
    operator = await tone_phone(tmp_path, "operator", OPERATOR_HZ)
    ringing = SippUas(
        tmp_path / "jdb", free_udp_port(), free_udp_port(even=True), RING_ONLY, trace=True
    )
    await ringing.start()
    down = f"sip:yjj@127.0.0.1:{free_udp_port()}"  # nothing listens there
    try:
        hotline = await start_hotline(
            [operator.uri],
            extra=(
                "[consultation]\nring_timeout = 3\n"
                f'directory = {{ "应急局" = "{down}", "街道办" = "{ringing.uri}" }}\n'
            ),
        )
        events = Events(hotline)
        call = await caller_with_tone(hotline, tmp_path, 24.0)
        await until(lambda: operator.saw("established"), 20, "the operator answers")
        await asyncio.sleep(1.0)
        await operator.keys("*71", gap=0.3)
        await until(lambda: len(events.states("应急局")) >= 2, 15, "told of the down department")
        await operator.keys("*72", gap=0.3)
        await until(lambda: len(events.states("街道办")) >= 2, 15, "told of the unanswered one")
        await asyncio.sleep(3.0)
        assert not call.done(), "the call ended with the unreachable departments"
        (talk,) = hotline.consultations.conversations.values()
        assert talk.conference is not None and talk.conference.names() == ["caller", "operator"]
        result = await asyncio.wait_for(call, 30)
        (record,) = await wait_records(hotline, 1)
    finally:
        await operator.quit()
        await ringing.stop()
    assert result.ended_by == "caller" and record.end_reason == "caller_hangup"
    assert events.states("应急局") == ["ringing", "no_answer"]
    assert events.states("街道办") == ["ringing", "no_answer"]
    for name in ("应急局", "街道办"):
        told = next(e for e in events.seen if e.get("name") == name and e["state"] == "no_answer")
        assert "无人接听" in str(told["words"]) and told["operator"] == operator.uri
    assert "CANCEL sip:" in ringing.messages(), "the unanswered department's ringing goes on"
    by_operator = heard_by(operator, tmp_path)
    beeps = [i for i, w in enumerate(windows(by_operator)) if level(w, BUSY_TONE_HZ) > HEARD]
    assert len(beeps) >= 2, "the operator did not hear the busy tone each time"
    caller = caller_heard(tmp_path)
    assert all(level(w, BUSY_TONE_HZ) < NOT_HEARD for w in windows(caller)), (
        "the busy tone is for the operator only"
    )
    assert heard_only(caller[-3 * RATE :], OPERATOR_HZ, BUSY_TONE_HZ) >= 4
    assert heard_only(by_operator[-4 * RATE :], CALLER_HZ, BUSY_TONE_HZ) >= 4
