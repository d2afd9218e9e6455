"""The call path end to end with real SIP peers over 127.0.0.1:
sipp and baresip as callers, sipp uas and baresip as operators."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ivr.call_records import CallRecord
from tests.audio_tools import best_match, pad, read_8k, rms, write_rtp_pcap, write_wav
from tests.conftest import SHARED, StartHotline
from tests.peers import Baresip, SippUas, free_udp_port, run_sipp

DATA = Path(__file__).parent / "data"
CLIP = SHARED / "speech" / "aishell1_BAC009S0724W0121.wav"


async def wait_records(hotline: object, count: int, timeout: float = 20.0) -> list[CallRecord]:
    """Call records once ``count`` calls have ended."""
    from ivr.server import Hotline

    assert isinstance(hotline, Hotline) and hotline.records is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        records = [r for r in await hotline.records.list_recent(500) if r.ended_at is not None]
        if len(records) >= count and not hotline.calls:
            return records
        if loop.time() > deadline:
            raise AssertionError(f"only {len(records)} of {count} calls ended: {records}")
        await asyncio.sleep(0.2)


@pytest.mark.peers
async def test_sipp_uac_pcap_digit_arrives(start_hotline: StartHotline, tmp_path: Path) -> None:
    hotline = await start_hotline()
    port = hotline.endpoint.port
    result = await run_sipp(
        [
            "-sn",
            "uac_pcap",
            f"127.0.0.1:{port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_udp_port()),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(free_udp_port(even=True)),
            "-m",
            "1",
            "-s",
            "12345",
            "-trace_err",
            "-timeout",
            "30",
            "-timeout_error",
        ],
        tmp_path / "sipp",
    )
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    (record,) = await wait_records(hotline, 1)
    assert record.codec == "PCMA"  # uac_pcap offers PCMA only
    assert "1" in record.digits  # the RFC 2833 digit of dtmf_2833_1.pcap
    assert record.end_reason == "caller_hangup"
    assert record.path[0] == hotline.plan.start  # type: ignore[union-attr]
    assert hotline.endpoint.dialog_count == 0


@pytest.mark.peers
async def test_ten_sipp_calls_at_once(start_hotline: StartHotline, tmp_path: Path) -> None:
    hotline = await start_hotline()
    result = await run_sipp(
        [
            "-sn",
            "uac_pcap",
            f"127.0.0.1:{hotline.endpoint.port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_udp_port()),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(free_udp_port(even=True)),
            "-m",
            "10",
            "-l",
            "10",
            "-r",
            "10",
            "-s",
            "12345",
            "-trace_err",
            "-timeout",
            "40",
            "-timeout_error",
        ],
        tmp_path / "sipp",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    records = await wait_records(hotline, 10)
    assert len(records) == 10
    assert all("1" in r.digits and r.end_reason == "caller_hangup" for r in records)
    assert len({r.call_id for r in records}) == 10
    assert hotline.endpoint.dialog_count == 0 and hotline.ports.in_use == 0


@pytest.mark.peers
async def test_pcmu_speech_then_key_zero_reaches_sipp_operator(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """Our scenario: PCMU offer, real Mandarin speech, RFC 2833 key 0 ->
    transfer; the operator (sipp uas) answers; the caller hangs up and the
    operator leg is hung up too."""
    operator = SippUas(tmp_path / "operator", free_udp_port(), free_udp_port(even=True))
    await operator.start()
    try:
        hotline = await start_hotline([operator.uri])
        speech = write_rtp_pcap(
            tmp_path / "speech.pcap", pad(read_8k(CLIP, tmp_path), 0.5, 0.5), "PCMU", 0
        )
        scenario = (DATA / "sipp" / "uac_pcmu_speech_digit.xml").read_text()
        scenario = (
            scenario.replace("@SPEECH@", str(speech))
            .replace("@SPEECH_MS@", "5500")
            .replace("@DIGIT@", "pcap/dtmf_2833_0.pcap")
            .replace("@AFTER_MS@", "12000")
        )
        (tmp_path / "uac.xml").write_text(scenario)
        result = await run_sipp(
            [
                "-sf",
                str(tmp_path / "uac.xml"),
                f"127.0.0.1:{hotline.endpoint.port}",
                "-i",
                "127.0.0.1",
                "-p",
                str(free_udp_port()),
                "-mi",
                "127.0.0.1",
                "-mp",
                str(free_udp_port(even=True)),
                "-m",
                "1",
                "-s",
                "12345",
                "-trace_err",
                "-timeout",
                "30",
                "-timeout_error",
            ],
            tmp_path / "sipp",
        )
        assert result.returncode == 0, result.stderr + result.stdout[-2000:]
        (record,) = await wait_records(hotline, 1)
        assert record.codec == "PCMU"
        assert record.digits.startswith("0")
        assert record.queue == "general" and record.operator == operator.uri
        assert record.outcome == "bridged"
        assert record.end_reason == "caller_hangup"
        assert hotline.endpoint.dialog_count == 0, "the operator leg was not hung up"
    finally:
        await operator.stop()


@pytest.mark.peers
async def test_baresip_caller_hears_greeting_and_talks_to_baresip_operator(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """A person's view: the caller hears the greeting; after pressing 0 the
    operator hears the caller and the caller hears the operator; when the
    caller hangs up, the operator's leg ends too."""
    caller_voice = write_wav(tmp_path / "caller.wav", pad(read_8k(CLIP, tmp_path), 16.0, 30.0))
    op_clip = read_8k(SHARED / "speech" / "f5tts_basic_ref_zh.wav", tmp_path)
    operator_voice = write_wav(tmp_path / "operator.wav", pad(op_clip, 1.0, 30.0))
    operator = Baresip(
        tmp_path / "op", free_udp_port(), play=operator_voice, auto_answer=True, user="operator"
    )
    caller = Baresip(tmp_path / "caller", free_udp_port(), play=caller_voice)
    await operator.start()
    await caller.start()
    try:
        hotline = await start_hotline([operator.uri])
        await caller.dial(f"sip:12345@127.0.0.1:{hotline.endpoint.port}")
        await asyncio.sleep(6.0)
        await caller.keys("0")
        # the plan says "connecting" (~5 s), the operator answers, and the caller
        # speaks from 16 s into the call
        await asyncio.sleep(18.0)
        await caller.hangup()
        (record,) = await wait_records(hotline, 1)
    finally:
        await caller.quit()
        await operator.quit()
    assert record.digits == "0"
    assert record.outcome == "bridged" and record.operator == operator.uri
    assert record.end_reason == "caller_hangup"
    assert hotline.endpoint.dialog_count == 0

    import soundfile as sf

    (heard_file,) = caller.recordings("dec")
    heard, _ = sf.read(str(heard_file), dtype="int16")
    greeting = hotline.prompts.get(hotline.plan.nodes[hotline.plan.start].prompt).pcm  # type: ignore[union-attr, attr-defined]
    score, _ = best_match(heard, greeting[: 8000 * 2])
    assert score > 0.8, f"the caller did not hear the greeting (match {score:.2f})"
    score, _ = best_match(heard, op_clip[8000 : 8000 * 4])
    assert score > 0.6, f"the caller did not hear the operator (match {score:.2f})"
    (op_heard_file,) = operator.recordings("dec")
    op_heard, _ = sf.read(str(op_heard_file), dtype="int16")
    assert rms(op_heard) > 50
    clip = read_8k(CLIP, tmp_path)
    score, _ = best_match(op_heard, clip[4000 : 8000 * 3])
    assert score > 0.6, f"the operator did not hear the caller (match {score:.2f})"

    # the conversation was recorded: caller on the left, operator on the right
    assert hotline.records is not None
    (kept,) = await hotline.records.conversations_of(record.call_id)
    assert kept["operator"] == operator.uri and kept["seconds"] > 5
    stereo, rate = sf.read(kept["path"], dtype="int16")
    assert rate == 8000 and stereo.shape[1] == 2
    assert sf.info(kept["path"]).subtype == "ULAW"
    left, right = stereo[:, 0], stereo[:, 1]
    assert abs(len(stereo) / 8000 - kept["seconds"]) < 0.1
    assert best_match(left, clip[4000 : 8000 * 3])[0] > 0.6, "the caller is not on the left"
    assert best_match(right, op_clip[8000 : 8000 * 4])[0] > 0.6, "the operator is not on the right"
    assert best_match(left, op_clip[8000 : 8000 * 4])[0] < 0.5, "the operator leaks into the left"
    from tests.web_client import hotline_client

    url = f"http://127.0.0.1:{hotline.api.port}/api/calls/{record.call_id}/conversations"
    async with await hotline_client(hotline, "admin") as admin:
        async with admin.get(url) as response:
            (listed,) = (await response.json())["conversations"]
        assert listed["kept"] and listed["seconds"] == kept["seconds"]
        async with admin.get(f"http://127.0.0.1:{hotline.api.port}{listed['url']}") as response:
            assert response.status == 200 and response.content_type == "audio/wav"
            assert await response.read() == Path(kept["path"]).read_bytes()
    async with await hotline_client(hotline, "operator") as op_user, op_user.get(url) as response:
        assert response.status == 403
