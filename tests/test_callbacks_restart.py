"""Crash safety: `ivr serve` is killed with -9 while one callback is ringing
and another waits; after a restart each is dialled, once, and none is lost."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from ivr.callbacks import CallbackQueue, CallbackState
from ivr.callbacks.settings import policy_for_config
from ivr.config import load_settings
from ivr.store import open_store
from ivr.trial_call import TrialOptions, place_call
from tests.conftest import ROOT, write_config
from tests.peers import SippUas, free_udp_port

DATA = Path(__file__).parent / "data"
LOG = logging.getLogger("test.restart")
NUMBERS = ("13800138000", "13900139000")

pytestmark = pytest.mark.peers


async def start_serve(config: Path, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ivr.cli",
        "--config",
        str(config),
        "serve",
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def states(config: Path) -> dict[str, CallbackState]:
    settings = load_settings(config)
    db = await open_store(settings.storage.location)
    try:
        queue = CallbackQueue(db, policy_for_config(settings))
        return {c.number: c.state for c in await queue.list()}
    finally:
        await db.close()


async def until(check: Any, timeout: float = 40.0) -> None:
    for _ in range(int(timeout / 0.25)):
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError("condition not met in time")


async def test_kill_9_then_restart_dials_each_once(tmp_path: Path, prompt_cache: Path) -> None:
    phone_port = free_udp_port()
    operator = SippUas(
        tmp_path / "op",
        free_udp_port(),
        free_udp_port(even=True),
        scenario=str(DATA / "sipp" / "uas_ring_only.xml"),
    )
    ringing_phone = SippUas(
        tmp_path / "ring",
        phone_port,
        free_udp_port(even=True),
        scenario=str(DATA / "sipp" / "uas_ring_only.xml"),
        trace=True,
    )
    config = write_config(
        tmp_path,
        operators=[operator.uri],
        prompt_cache=prompt_cache,
        dialplan=DATA / "dialplans" / "straight_to_queue.toml",
        ring_timeout=60.0,
        callbacks=f"""enabled = true
dial_uri = "sip:{{number}}@127.0.0.1:{phone_port}"
ring_timeout = 60
retry = [0, 1, 1]
quiet_hours = ""
customer_first = true
max_dialing = 1
""",
        # the two callers still wait for the operator at the end: no drain then
        extra="[node]\ndrain_timeout = 1.0",
    )
    sip_port = load_settings(config).sip.port
    await operator.start()
    await ringing_phone.start()
    server = await start_serve(config, tmp_path / "serve.log")
    answering = SippUas(tmp_path / "answer", phone_port, free_udp_port(even=True), trace=True)
    try:
        await asyncio.sleep(4.0)  # Whisper is not needed by this plan: start is quick
        for number in NUMBERS:
            await place_call(
                TrialOptions(target=f"sip:12345@127.0.0.1:{sip_port}", duration=2.0, caller=number),
                LOG,
            )

        async def one_dialling_one_waiting() -> bool:
            got = await states(config)
            return sorted(got.values()) == sorted([CallbackState.DIALING, CallbackState.PENDING])

        await until(one_dialling_one_waiting)
        server.send_signal(signal.SIGKILL)
        await server.wait()
        await ringing_phone.stop()
        await answering.start()
        server = await start_serve(config, tmp_path / "serve.log")

        async def both_answered() -> bool:
            got = await states(config)
            return all(s is CallbackState.CONNECTED for s in got.values()) and len(got) == 2

        await until(both_answered)
        await asyncio.sleep(1.0)  # anything dialled twice would show by now
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            await asyncio.wait_for(server.wait(), 30)
        await answering.stop()
        await ringing_phone.stop()
        await operator.stop()
    received = answering.messages()
    for number in NUMBERS:
        assert received.count(f"INVITE sip:{number}@") == 1, number
    settings = load_settings(config)
    db = await open_store(settings.storage.location)
    try:
        queue = CallbackQueue(db, policy_for_config(settings))
        for callback in await queue.list():
            details = [e.detail for e in await queue.events(callback.id)]
            assert any("recovered after restart" in d for d in details) or callback.attempts == 1
    finally:
        await db.close()
    assert "callbacks: 1 left dialling by a previous run" in (tmp_path / "serve.log").read_text()
