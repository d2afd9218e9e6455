"""`ivr serve` refuses a broken plan; `ivr voices build`; a held call (re-INVITE
sendonly) is tolerated and not taken for dead; the IVR's own hang-up ends the
caller's leg."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.trial_call import TrialOptions, place_call
from tests.conftest import ROOT, StartHotline, write_config
from tests.sip_raw import header, invite, raw_peer, sdp, status_of
from tests.test_call_path import wait_records


def test_serve_refuses_a_broken_plan(tmp_path: Path, prompt_cache: Path) -> None:
    broken = ROOT / "tests" / "data" / "dialplans" / "unknown_target.toml"
    config = write_config(
        tmp_path, operators=["sip:op@127.0.0.1:5999"], prompt_cache=prompt_cache, dialplan=broken
    )
    done = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown_target.toml:14:" in done.stderr and "not starting" in done.stderr


def test_serve_refuses_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[sip]\nport = "5060"\n\n[queues.general]\noperators = ["sip:a@127.0.0.1:5"]\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "config.toml:2:" in done.stderr and "sip.port" in done.stderr


def test_voices_build_lists_every_prompt(tmp_path: Path, prompt_cache: Path) -> None:
    config = write_config(tmp_path, operators=["sip:op@127.0.0.1:5999"], prompt_cache=prompt_cache)
    done = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "--config", str(config), "voices", "build"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "mandarin/welcome: synthesised espeak-ng cmn-latn-pinyin" in done.stdout
    assert "mandarin/main_menu: synthesised" in done.stdout


async def test_hold_reinvite_is_tolerated(start_hotline: StartHotline) -> None:
    hotline = await start_hotline(sip_extra="rtp_timeout = 1.5")
    peer = await raw_peer()
    port = hotline.endpoint.port
    try:
        text, call_id, _ = invite(peer.port, port)
        peer.send(text, port)
        ok = ""
        while status_of(ok) < 200:
            ok = await peer.expect()
        frm, to = header(ok, "From"), header(ok, "To")
        common = f"From: {frm}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
        peer.send(
            f"ACK sip:ivr@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{peer.port};"
            f"branch=z9hG4bKa1\r\n{common}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            port,
        )
        held = sdp(peer.port + 2, "0 101", "a=sendonly\r\n")
        peer.send(
            f"INVITE sip:ivr@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{peer.port};"
            f"branch=z9hG4bKre1\r\n{common}CSeq: 2 INVITE\r\n"
            f"Contact: <sip:x@127.0.0.1:{peer.port}>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(held)}\r\n\r\n{held}",
            port,
        )
        reply = ""
        while "2 INVITE" not in (header(reply, "CSeq") or "") or status_of(reply) < 200:
            reply = await peer.expect()
        assert status_of(reply) == 200 and "m=audio" in reply
        peer.send(
            f"ACK sip:ivr@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{peer.port};"
            f"branch=z9hG4bKa2\r\n{common}CSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n",
            port,
        )
        await asyncio.sleep(3.0)  # twice the RTP timeout, no RTP: held, so still up
        assert len(hotline.calls) == 1
        (call,) = hotline.calls.values()
        assert call.stream.on_hold
        peer.send(
            f"BYE sip:ivr@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{peer.port};"
            f"branch=z9hG4bKb1\r\n{common}CSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n",
            port,
        )
        bye_ok = ""
        while "BYE" not in (header(bye_ok, "CSeq") or ""):
            bye_ok = await peer.expect()
        assert status_of(bye_ok) == 200
    finally:
        peer.close()
    (record,) = await wait_records(hotline, 1)
    assert record.end_reason == "caller_hangup"


@pytest.mark.peers
async def test_ivr_hangup_ends_caller_leg(start_hotline: StartHotline) -> None:
    """Nobody answers in the queue: the plan says sorry and hangs up."""
    hotline = await start_hotline(
        ["sip:nobody@127.0.0.1:9"], ring_timeout=1.0, queue_extra="", max_wait=3.0
    )
    result = await place_call(
        TrialOptions(
            target=f"sip:12345@127.0.0.1:{hotline.endpoint.port}",
            digits="0",
            digit_delay=1.0,
            duration=30.0,
            rtp_ports=(44000, 44040),
        ),
        logging.getLogger("ivr.test.caller"),
    )
    assert result.ended_by == "ivr"
    (record,) = await wait_records(hotline, 1)
    assert record.end_reason == "ivr_hangup"
    assert record.path[-1] == "sorry"
