"""Keys by all three paths, barge-in, and bad media, with our trial caller
(`ivr call`'s engine) and a raw UDP peer against a real IVR on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ivr.trial_call import place_call
from tests.audio_tools import best_match
from tests.conftest import StartHotline, trial
from tests.sip_raw import header, invite, raw_peer, sdp, status_of
from tests.test_call_path import wait_records


@pytest.mark.parametrize("mode", ["rfc4733", "info", "inband"])
async def test_key_arrives_by_each_path(
    start_hotline: StartHotline, tmp_path: Path, mode: str
) -> None:
    hotline = await start_hotline()
    result = await place_call(
        trial(
            hotline.endpoint.port,
            digits="1",
            dtmf_mode=mode,
            digit_delay=1.5,
            duration=4.0,
        ),
        logging.getLogger("ivr.test.caller"),
    )
    assert result.status == 200 and result.digits_sent == "1"
    (record,) = await wait_records(hotline, 1)
    assert record.digits == "1", f"{mode}: IVR got {record.digits!r}"


@pytest.mark.parametrize("mode", ["info+inband", "rfc4733+info"])
async def test_key_sent_two_ways_counts_once(
    start_hotline: StartHotline, tmp_path: Path, mode: str
) -> None:
    hotline = await start_hotline()
    await place_call(
        trial(
            hotline.endpoint.port,
            digits="1",
            dtmf_mode=mode,
            digit_delay=1.5,
            duration=4.0,
        ),
        logging.getLogger("ivr.test.caller"),
    )
    (record,) = await wait_records(hotline, 1)
    assert record.digits == "1", f"{mode}: IVR counted {record.digits!r}"


async def test_barge_in_stops_the_greeting(start_hotline: StartHotline, tmp_path: Path) -> None:
    hotline = await start_hotline()
    assert hotline.plan is not None
    greeting = hotline.prompts.get(hotline.plan.nodes[hotline.plan.start].prompt).pcm  # type: ignore[attr-defined]
    assert len(greeting) > 8000 * 2.5, "the greeting is too short for this test"
    result = await place_call(
        trial(
            hotline.endpoint.port,
            digits="1",
            digit_delay=1.6,
            duration=4.0,
            record=tmp_path / "heard.wav",
        ),
        logging.getLogger("ivr.test.caller"),
    )
    heard, _ = sf.read(str(tmp_path / "heard.wav"), dtype="int16")
    start_score, start = best_match(heard, greeting[:4000])
    assert start_score > 0.9, "the caller did not hear the greeting"
    key_at = result.key_samples[0]
    into = key_at - start  # how far into the greeting the key was pressed
    before = heard[key_at - 4000 : key_at]
    assert best_match(before, greeting[into - 4000 : into])[0] > 0.9
    # from one frame after the key (plus network/jitter slack of two frames) the
    # greeting must be gone: what is heard is no longer the greeting's continuation
    after = heard[key_at + 480 : key_at + 480 + 4000]
    expected_if_not_stopped = greeting[into + 480 : into + 480 + 4000]
    a = after.astype(np.float64)
    b = expected_if_not_stopped.astype(np.float64)
    same = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))
    assert same < 0.3, f"the greeting went on after the key (correlation {same:.2f})"


async def test_garbage_rtp_and_foreign_address_are_dropped(
    start_hotline: StartHotline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    hotline = await start_hotline()
    call_task = asyncio.ensure_future(
        place_call(
            trial(hotline.endpoint.port, digits="1", digit_delay=2.5, duration=4.5),
            logging.getLogger("ivr.test.caller"),
        )
    )
    await asyncio.sleep(1.0)
    (call,) = hotline.calls.values()
    rtp_port = call.stream.local_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
        junk.bind(("127.0.0.1", 0))
        junk_port = junk.getsockname()[1]
        for payload in (
            b"",
            b"\x00" * 5,
            b"\xff" * 400,
            b"\x80\x00" + b"\x00" * 6,
            bytes([0x80, 99]) + b"\x00" * 170,
            b"\x80\x00\x00\x01" + b"\x00" * 8,
        ):
            junk.sendto(payload, ("127.0.0.1", rtp_port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.2", 0))
        stranger.sendto(bytes([0x80, 0]) + b"\x00" * 170, ("127.0.0.1", rtp_port))
    result = await call_task
    assert result.status == 200
    (record,) = await wait_records(hotline, 1)
    assert record.digits == "1", "the call did not go on after the garbage"
    text = caplog.text
    # the stream latched on to the caller's RTP (symmetric RTP): the junk from another
    # port is refused as another source (tests/test_symmetric_rtp.py: bad packets from
    # the caller's source are dropped as bad), and so is a stranger's packet
    assert f"unexpected address 127.0.0.1:{junk_port} (latched to" in text
    assert "unexpected address 127.0.0.2" in text


async def test_no_shared_codec_gets_488_and_next_call_works(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await start_hotline()
    peer = await raw_peer()
    try:
        body = sdp(peer.port + 2, "18 9").replace(
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", "a=rtpmap:18 G729/8000\r\n"
        )
        text, _, _ = invite(peer.port, hotline.endpoint.port, body=body)
        peer.send(text, hotline.endpoint.port)
        while True:
            reply = await peer.expect()
            if status_of(reply) >= 200:
                break
        assert status_of(reply) == 488
        assert "codec" in (header(reply, "Warning") or "")
    finally:
        peer.close()
    result = await place_call(
        trial(hotline.endpoint.port, duration=1.5), logging.getLogger("ivr.test.caller")
    )
    assert result.status == 200


async def test_rtp_timeout_ends_a_silent_call(start_hotline: StartHotline) -> None:
    hotline = await start_hotline(sip_extra="rtp_timeout = 1.5")
    peer = await raw_peer()
    try:
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
        bye = ""
        while not bye.startswith("BYE"):
            bye = await peer.expect(timeout=5.0)
    finally:
        peer.close()
    (record,) = await wait_records(hotline, 1)
    assert record.end_reason == "rtp_timeout"
