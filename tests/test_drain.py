"""Draining a node (issue 12 item 5): OPTIONS and new INVITEs are answered 503,
the call in progress goes on to its end, then the node stops; `ivr drain` finds
`ivr serve` by its locked pid file and drains it."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.config import load_settings
from ivr.node import PidFile, running_pid
from ivr.startup import StartupError
from ivr.trial_call import place_call
from tests.conftest import ROOT, StartHotline, trial, write_config
from tests.sip_raw import invite, options, raw_peer, status_of

DATA = Path(__file__).parent / "data"
PLAN = DATA / "dialplans" / "straight_to_queue.toml"  # no speech: starts in seconds
LOG = logging.getLogger("test.drain")


async def until(check: object, timeout: float = 20.0) -> None:
    assert callable(check)
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def answer_to(port: int, text: str) -> int:
    peer = await raw_peer()
    try:
        peer.send(text, port)
        while True:
            status = status_of(await peer.expect(3.0))
            if status >= 200:
                return status
    finally:
        peer.close()


def test_pid_file_is_locked_while_held_and_stale_when_not(tmp_path: Path) -> None:
    path = tmp_path / "var" / "ivr.pid"
    assert running_pid(path) is None
    with PidFile(path):
        assert path.read_text().strip() == str(os.getpid())
        assert running_pid(path) == os.getpid()
        with pytest.raises(StartupError, match=rf"another `ivr serve` \(pid {os.getpid()}\)"):
            PidFile(path).acquire()
    assert not path.exists() and running_pid(path) is None
    path.write_text("1\n")  # left by a node killed with -9: nobody holds the lock
    assert running_pid(path) is None


async def test_drain_answers_503_and_lets_the_call_finish(start_hotline: StartHotline) -> None:
    hotline = await start_hotline(dialplan=PLAN)
    port = hotline.endpoint.port
    assert await answer_to(port, options(1, port)) == 200
    call = asyncio.ensure_future(place_call(trial(port, duration=4.0), LOG))
    await until(lambda: len(hotline.calls) == 1)
    stopping = asyncio.ensure_future(hotline.stop(drain_timeout=60.0))
    await asyncio.sleep(0.2)
    assert await answer_to(port, options(1, port)) == 503
    assert await answer_to(port, invite(1, port)[0]) == 503
    assert not stopping.done(), "the node stopped with a call in progress"
    result = await call
    assert result.status == 200 and result.ended_by == "caller", result
    await asyncio.wait_for(stopping, 5.0)  # the last call over: the node stops at once
    assert hotline.stopped.is_set()


async def test_drain_cut_ends_the_calls_at_once(start_hotline: StartHotline) -> None:
    hotline = await start_hotline(dialplan=PLAN)
    call = asyncio.ensure_future(place_call(trial(hotline.endpoint.port, duration=30.0), LOG))
    await until(lambda: len(hotline.calls) == 1)
    stopping = asyncio.ensure_future(hotline.stop(drain_timeout=60.0))
    await asyncio.sleep(0.5)
    hotline.drain_cut.set()  # what a second SIGTERM does
    await asyncio.wait_for(stopping, 10.0)
    result = await asyncio.wait_for(call, 10.0)
    assert result.ended_by == "ivr", result


async def test_ivr_drain_drains_the_running_serve(tmp_path: Path, prompt_cache: Path) -> None:
    config = write_config(
        tmp_path, operators=["sip:nobody@127.0.0.1:9"], prompt_cache=prompt_cache, dialplan=PLAN
    )
    settings = load_settings(config)
    port = settings.sip.port
    command = [sys.executable, "-m", "ivr.cli", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "serve.log").open("ab") as log:
        server = await asyncio.create_subprocess_exec(
            *command, "serve", cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    try:
        for _ in range(300):
            if running_pid(settings.node.pid_file) == server.pid:
                try:
                    if await answer_to(port, options(1, port)) == 200:
                        break
                except TimeoutError:
                    pass
            await asyncio.sleep(0.2)
        else:
            raise AssertionError((tmp_path / "serve.log").read_text()[-3000:])
        # a second node with the same pid file refuses to start, and says why
        second = await asyncio.create_subprocess_exec(
            *command, "serve", cwd=ROOT, stderr=subprocess.PIPE, env=env
        )
        _, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 2
        assert f"another `ivr serve` (pid {server.pid})" in err.decode()

        call = asyncio.ensure_future(place_call(trial(port, duration=4.0), LOG))
        await asyncio.sleep(1.5)
        drain = await asyncio.create_subprocess_exec(
            *command, "drain", cwd=ROOT, stdout=subprocess.PIPE, env=env
        )
        out, _ = await asyncio.wait_for(drain.communicate(), 60)
        said = out.decode()
        result = await call
        assert drain.returncode == 0, said
        assert f"node pid {server.pid} is draining" in said
        assert "finished its calls and exited" in said
        assert result.status == 200 and result.ended_by == "caller", result
        assert await asyncio.wait_for(server.wait(), 10) == 0
        assert not settings.node.pid_file.exists()
        again = await asyncio.create_subprocess_exec(
            *command, "drain", cwd=ROOT, stdout=subprocess.PIPE, env=env
        )
        out, _ = await asyncio.wait_for(again.communicate(), 60)
        assert again.returncode == 1 and "nothing to drain" in out.decode()
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    served = (tmp_path / "serve.log").read_text()
    assert "ivr: draining: waiting up to 600 s for 1 call(s)" in served
