"""Draining a node (issue 12 item 5): OPTIONS and new INVITEs are answered 503,
the call in progress goes on to its end, then the node stops; `ivr drain` finds
`ivr serve` by its locked pid file and drains it."""

from __future__ import annotations

import asyncio
import contextlib
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


class Serve:
    """`ivr serve` in a subprocess, and `ivr drain` for it."""

    def __init__(self, tmp_path: Path, prompt_cache: Path) -> None:
        self.config = write_config(
            tmp_path, operators=["sip:nobody@127.0.0.1:9"], prompt_cache=prompt_cache, dialplan=PLAN
        )
        self.settings = load_settings(self.config)
        self.port = self.settings.sip.port
        self.log = tmp_path / "serve.log"
        self.command = [sys.executable, "-m", "ivr.cli", "--config", str(self.config)]
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> asyncio.subprocess.Process:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command, "serve", cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        for _ in range(300):
            if running_pid(self.settings.node.pid_file) == self.proc.pid:
                with contextlib.suppress(TimeoutError):
                    if await answer_to(self.port, options(1, self.port)) == 200:
                        return self.proc
            await asyncio.sleep(0.2)
        raise AssertionError(self.log.read_text()[-3000:])

    async def ivr(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *self.command,
            *args,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode() + err.decode()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def test_ivr_drain_drains_the_running_serve(tmp_path: Path, prompt_cache: Path) -> None:
    serve = Serve(tmp_path, prompt_cache)
    server = await serve.start()
    try:
        # a second node with the same pid file refuses to start, and says why
        code, said = await serve.ivr("serve")
        assert code == 2 and f"another `ivr serve` (pid {server.pid})" in said

        call = asyncio.ensure_future(place_call(trial(serve.port, duration=5.0), LOG))
        await asyncio.sleep(1.5)
        drain = asyncio.ensure_future(serve.ivr("drain"))
        await asyncio.sleep(1.0)
        # asked again while it drains: no second SIGTERM (that would end the call)
        code, said = await serve.ivr("drain", "--no-wait")
        assert code == 0 and "is draining already" in said, said
        code, said = await drain
        result = await call
        assert code == 0, said
        assert f"node pid {server.pid} is draining" in said
        assert "finished its calls and exited" in said
        assert result.status == 200 and result.ended_by == "caller", result
        assert await asyncio.wait_for(server.wait(), 10) == 0
        assert not serve.settings.node.pid_file.exists()
        code, said = await serve.ivr("drain")
        assert code == 1 and "nothing to drain" in said
    finally:
        await serve.kill()
    served = serve.log.read_text()
    assert "ivr: draining: waiting up to 600 s for 1 call(s)" in served


async def test_ivr_drain_now_ends_the_calls(tmp_path: Path, prompt_cache: Path) -> None:
    serve = Serve(tmp_path, prompt_cache)
    server = await serve.start()
    try:
        call = asyncio.ensure_future(place_call(trial(serve.port, duration=30.0), LOG))
        await asyncio.sleep(1.5)
        code, said = await serve.ivr("drain", "--now")
        assert code == 0 and "ending its calls now" in said, said
        result = await asyncio.wait_for(call, 10)
        assert result.status == 200 and result.ended_by == "ivr", result
        assert await asyncio.wait_for(server.wait(), 10) == 0
    finally:
        await serve.kill()
    assert "drain cut short: ending 1 call(s) now" in serve.log.read_text()
