"""config.toml reloaded while calls go on (SIGHUP, or the admin's POST).

With real peers: a call bridged to operator A stays up while config.toml
replaces A with B, and the next call rings B; a caller waiting in line is kept
and gets the operator the reload brings; a broken config.toml (bad TOML, a bad
value) is refused naming file, line and key, and calls still reach the old
operator; a changed SIP port is reported as needing a restart and the old port
keeps answering. Without peers: which keys apply and which need a restart, the
operator desk keeping a removed queue's waiting caller and a removed operator's
call, the admin route, and a real SIGHUP to ``ivr serve`` (in this process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from ivr.call import EndReason
from ivr.config import ConfigError, load_settings, reload_settings
from ivr.operators import OperatorDesk, OperatorState, QueueConfig
from ivr.server import Hotline, serve
from ivr.trial_call import place_call
from tests.audio_tools import write_wav
from tests.conftest import ROOT, StartHotline, trial, write_config
from tests.peers import Baresip, SippUas, free_udp_port
from tests.test_call_path import wait_records
from tests.test_operator_seats import FakeCaller, FakeDialer
from tests.web_client import hotline_client

DATA = Path(__file__).parent / "data"
LOG = logging.getLogger("ivr.test.reload")


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


def edit(path: Path, old: str, new: str) -> int:
    """Replace ``old`` (once) in the file; the 1-based line the edit is on."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new))
    return text[: text.index(old)].count("\n") + 1


def operators_of(hotline: Hotline, queue: str = "general") -> list[str]:
    (shot,) = [q for q in hotline.desk.snapshot() if q.name == queue]
    return [op.uri for op in shot.operators]


def sipp(tmp_path: Path, name: str, scenario: str = "uas") -> SippUas:
    return SippUas(tmp_path / name, free_udp_port(), free_udp_port(even=True), scenario, user=name)


# ------------------------------------------------------------------ real peers


@pytest.mark.peers
async def test_operator_replaced_while_bridged_finishes_the_call_and_the_next_rings_the_new_one(
    start_hotline: StartHotline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = sipp(tmp_path, "op_a"), sipp(tmp_path, "op_b")
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(8000 * 60, dtype=np.int16))
    caller = Baresip(tmp_path / "caller", free_udp_port(), play=quiet, user="13900001111")
    for peer in (old, new):
        await peer.start()
    await caller.start()
    try:
        hotline = await start_hotline([old.uri])
        config = hotline.settings.source
        assert config is not None
        await caller.dial(f"sip:12345@127.0.0.1:{hotline.endpoint.port}")
        await until(
            lambda: any("main" in c.record.path for c in hotline.calls.values()),
            "the call reaches the main menu",
        )
        await asyncio.sleep(1.0)
        await caller.keys("0")
        await until(
            lambda: (
                hotline.desk.current_call(old.uri) is not None
                and any(c.record.outcome == "bridged" for c in hotline.calls.values())
            ),
            "the caller is bridged to operator A",
        )
        (call_id,) = hotline.calls

        line = edit(config, old.uri, new.uri)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ivr"):
            result = await hotline.reload()

        assert result.applied == ("queues.general.operators",)
        assert result.needs_restart == ()
        assert f"{config}:{line}: queues.general.operators" in caplog.text
        assert operators_of(hotline) == [new.uri]  # A is offered no new call ...
        await asyncio.sleep(2.0)
        assert list(hotline.calls) == [call_id]  # ... and finishes this one
        assert hotline.desk.current_call(old.uri) == call_id
        (operator_a,) = hotline.desk.operators_named(old.uri)
        assert operator_a.state is OperatorState.TALKING
        await caller.hangup()
        (first,) = await wait_records(hotline, 1)
        assert first.operator == old.uri and first.outcome == "bridged"
        assert first.end_reason == "caller_hangup"
        assert hotline.desk.operators_named(old.uri) == []  # gone once their call ended

        second = await place_call(
            trial(hotline.endpoint.port, digits="0", digit_delay=1.0, duration=10.0), LOG
        )
        assert second.status == 200
        records = await wait_records(hotline, 2)
    finally:
        await caller.quit()
        for peer in (old, new):
            await peer.stop()
    (latest,) = [r for r in records if r.call_id != call_id]
    assert latest.operator == new.uri and latest.outcome == "bridged"


@pytest.mark.peers
async def test_caller_waiting_in_line_is_kept_and_gets_the_operator_the_reload_brings(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    ringer = sipp(tmp_path, "ringer", str(DATA / "sipp" / "uas_ring_only.xml"))
    answerer = sipp(tmp_path, "answerer")
    for peer in (ringer, answerer):
        await peer.start()
    try:
        hotline = await start_hotline([ringer.uri], ring_timeout=2.0)
        config = hotline.settings.source
        assert config is not None
        call = asyncio.ensure_future(
            place_call(
                trial(hotline.endpoint.port, digits="0", digit_delay=1.0, duration=14.0), LOG
            )
        )
        await until(
            lambda: any(q.waiting for q in hotline.desk.snapshot()), "the caller waits in line"
        )
        edit(config, ringer.uri, answerer.uri)
        result = await hotline.reload()
        assert result.applied == ("queues.general.operators",)
        outcome = await asyncio.wait_for(call, 30)
        (record,) = await wait_records(hotline, 1)
    finally:
        for peer in (ringer, answerer):
            await peer.stop()
    assert outcome.status == 200 and outcome.ended_by == "caller"
    assert record.operator == answerer.uri and record.outcome == "bridged"
    assert hotline.desk.operators_named(ringer.uri) == []


@pytest.mark.peers
async def test_broken_config_is_refused_naming_line_and_key_and_calls_still_reach_the_old_operator(
    start_hotline: StartHotline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    operator = sipp(tmp_path, "op_a")
    await operator.start()
    try:
        hotline = await start_hotline([operator.uri])
        config = hotline.settings.source
        assert config is not None and hotline.plan is not None
        running, version, good = hotline.settings, hotline.plan.version, config.read_text()

        line = edit(config, "[queues.general]", "[queues.general")  # bad TOML
        with caplog.at_level(logging.ERROR, logger="ivr"), pytest.raises(ConfigError) as bad:
            await hotline.reload()
        assert f"{config}:{line}: TOML syntax error" in str(bad.value)
        assert "nothing changed" in caplog.text and f"{config}:{line}:" in caplog.text

        config.write_text(good)
        line = edit(config, "ring_timeout = 4.0", 'ring_timeout = "fast"')  # a bad value
        edit(config, operator.uri, "sip:someone-else@127.0.0.1:9")  # would apply, if it loaded
        with pytest.raises(ConfigError) as bad:
            await hotline.reload()
        assert f'{config}:{line}: operators.ring_timeout = "fast": must be a number' in str(
            bad.value
        )

        assert hotline.settings is running
        assert hotline.plan.version == version
        assert operators_of(hotline) == [operator.uri]
        result = await place_call(
            trial(hotline.endpoint.port, digits="0", digit_delay=1.0, duration=10.0), LOG
        )
        (record,) = await wait_records(hotline, 1)
    finally:
        await operator.stop()
    assert result.status == 200
    assert record.operator == operator.uri and record.outcome == "bridged"


@pytest.mark.peers
async def test_changed_sip_port_needs_a_restart_and_the_old_port_keeps_answering(
    start_hotline: StartHotline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hotline = await start_hotline()
    config = hotline.settings.source
    assert config is not None
    port, sip = hotline.endpoint.port, hotline.settings.sip
    other = free_udp_port()
    while sip.rtp_port_min <= other <= sip.rtp_port_max:
        other = free_udp_port()
    line = edit(config, f"port = {port}\n", f"port = {other}\n")
    config.write_text(config.read_text() + '\n[emergency]\nfire = "sip:119@127.0.0.1:5119"\n')

    with caplog.at_level(logging.INFO, logger="ivr"):
        result = await hotline.reload()

    assert result.needs_restart == ("sip.port",)
    assert result.applied == ("emergency.fire",)
    (text,) = [r.getMessage() for r in caplog.records if "needs a restart" in r.getMessage()]
    assert text.startswith(f"{config}:{line}: sip.port = {other} needs a restart")
    assert f"running with {port} until then" in text
    assert hotline.settings.sip.port == port == hotline.endpoint.port
    assert hotline.settings.emergency.fire == "sip:119@127.0.0.1:5119"
    answered = await place_call(trial(port, duration=1.5), LOG)
    assert answered.status == 200


# ------------------------------------------------------------- without peers


def test_reload_settings_applies_what_can_change_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[sip]\nport = 5060\n[queues.general]\noperators = ["sip:a@127.0.0.1:5080"]\n'
        '[callbacks]\npassword = "old-secret"\n'
    )
    running = load_settings(path)
    path.write_text(
        "[sip]\nport = 5070\nmax_calls = 10\n"
        '[queues.general]\noperators = ["sip:b@127.0.0.1:5080"]\nmax_wait = 30\n'
        '[queues.complaints]\noperators = ["sip:b@127.0.0.1:5080"]\n'
        '[callbacks]\npassword = "new-secret"\nqueue = "complaints"\n'
        '[speech]\nengine = "vosk"\nend_silence = 2.0\n'
        '[tickets]\nduplicate_window_days = 3\n[logging]\nlevel = "DEBUG"\n'
        '[work_orders]\nwebhook = "http://127.0.0.1:9/orders"\n'
    )
    change = reload_settings(path, running)

    assert {c.key for c in change.applied} == {
        "sip.max_calls",
        "queues.general.operators",
        "queues.general.max_wait",
        "queues.complaints",
        "callbacks.queue",
        "speech.end_silence",
        "tickets.duplicate_window_days",
        "logging.level",
        "work_orders.webhook",
    }
    assert [c.key for c in change.needs_restart] == [
        "sip.port",
        "speech.engine",
        "callbacks.password",
    ]
    s = change.settings
    assert (s.sip.port, s.sip.max_calls) == (5060, 10)
    assert (s.speech.engine, s.speech.end_silence) == ("auto", 2.0)
    assert s.callbacks.password == "old-secret" and s.callbacks.queue == "complaints"
    assert list(s.queues) == ["general", "complaints"]
    described = {c.key: f"{change.where(c)}: {c.describe()} ({c.old_text})" for c in change.applied}
    assert described["queues.complaints"] == f"{path}:7: queues.complaints added (none)"
    assert described["sip.max_calls"] == f"{path}:3: sip.max_calls = 10 (1000)"
    (secret,) = [c for c in change.needs_restart if c.key == "callbacks.password"]
    assert "secret" not in secret.describe() + secret.old_text


def test_reload_is_refused_when_kept_values_clash_with_new_ones(tmp_path: Path) -> None:
    """No overflow is fine for the dialects the file offers, not for one still
    offered until a restart that has no seat."""
    path = tmp_path / "config.toml"
    queue = '[queues.general]\noperators = ["sip:a@127.0.0.1:5080"]\n'
    path.write_text(queue + '[dialects]\noffered = ["mandarin", "yue"]\n')
    running = load_settings(path)
    path.write_text(queue + '[dialects]\noffered = ["mandarin"]\noverflow = false\n')
    with pytest.raises(ConfigError) as refused:
        reload_settings(path, running)
    assert f"{path}:5: dialects.overflow = false, but yue (offered until a restart)" in str(
        refused.value
    )


async def test_desk_keeps_a_removed_queues_caller_and_a_removed_operators_call() -> None:
    a, b = "sip:a@127.0.0.1:5081", "sip:b@127.0.0.1:5082"
    dialer = FakeDialer()
    desk = OperatorDesk(
        {"general": QueueConfig([a], 10, 30.0), "old": QueueConfig([a], 10, 30.0)},
        dialer=dialer,
        ring_timeout=0.2,
        wrap_up=0.0,
        log=LOG,
    )
    talking, waiting, later = FakeCaller("1001"), FakeCaller("1002"), FakeCaller("1003")
    first = asyncio.ensure_future(desk.connect(talking, "general", None))
    await until(lambda: "1001" in dialer.legs, "A answers the first caller", 2.0)
    second = asyncio.ensure_future(desk.connect(waiting, "old", None))
    await until(lambda: waiting.positions != [], "the second caller waits in old", 2.0)

    desk.reconfigure({"general": QueueConfig([b], 10, 30.0)}, ring_timeout=0.2, wrap_up=0.0)

    assert desk.queues["old"].retired and desk.queues["old"].line == [waiting.call_id]
    assert desk.queues["old"].operators == []  # A is in no queue any more
    (operator_a,) = desk.operators_named(a)
    assert operator_a.state is OperatorState.TALKING and desk.current_call(a) == "call-1001"
    third = asyncio.ensure_future(desk.connect(later, "general", None))
    await until(lambda: "1003" in dialer.legs, "B answers a new caller", 2.0)
    assert dialer.rung_for("1003") == [b]
    dialer.legs["1001"].ended.set_result("remote_bye")  # A's call ends normally
    await first
    assert desk.operators_named(a) == [] and dialer.rung_for("1002") == []

    desk.reconfigure(  # the queue comes back, with B: its caller is served
        {"general": QueueConfig([b], 10, 30.0), "old": QueueConfig([a], 10, 30.0)},
        ring_timeout=0.2,
        wrap_up=0.0,
    )
    await until(lambda: "1002" in dialer.legs, "A (new again) answers the waiting caller", 2.0)
    assert dialer.rung_for("1002") == [a]
    desk.reconfigure({"general": QueueConfig([b], 10, 30.0)}, ring_timeout=0.2, wrap_up=0.0)
    assert "old" not in desk.queues  # nobody waits in it: gone, though A talks on
    assert desk.current_call(a) == "call-1002"
    for caller in (waiting, later):
        caller.end(EndReason.CALLER_HANGUP)
    await asyncio.gather(second, third, return_exceptions=True)
    assert set(desk.queues) == {"general"}


async def test_removed_queue_with_nobody_waiting_goes_at_once() -> None:
    desk = OperatorDesk(
        {"general": QueueConfig(["sip:a@127.0.0.1:5081"], 10, 30.0)},
        dialer=FakeDialer(),
        ring_timeout=0.2,
        wrap_up=0.0,
        log=LOG,
    )
    desk.reconfigure(
        {"main": QueueConfig(["sip:a@127.0.0.1:5081"], 5, 10.0)}, ring_timeout=1.0, wrap_up=0.0
    )
    assert list(desk.queues) == ["main"] and desk.queues["main"].max_waiting == 5
    with pytest.raises(ValueError, match="skills given for"):
        desk.reconfigure(
            {"main": QueueConfig([], 5, 10.0, skills={"sip:x@h:1": frozenset({"yue"})})},
            ring_timeout=1.0,
            wrap_up=0.0,
        )
    assert list(desk.queues) == ["main"]  # nothing changed


async def test_config_removing_a_queue_the_running_plan_needs_is_refused(
    start_hotline: StartHotline,
) -> None:
    hotline = await start_hotline()
    config = hotline.settings.source
    assert config is not None
    running = hotline.settings
    edit(config, "[queues.general]", "[queues.main]")
    with pytest.raises(ConfigError) as refused:
        await hotline.reload()
    message = str(refused.value)
    assert f"{config}: queues.general is removed, but the running dial plan" in message
    assert "is not in config.toml" in message  # why the plan file does not load
    assert hotline.settings is running and operators_of(hotline) == ["sip:nobody@127.0.0.1:9"]


async def test_admin_reloads_config_over_http(start_hotline: StartHotline) -> None:
    hotline = await start_hotline()
    config = hotline.settings.source
    assert config is not None
    url = f"http://127.0.0.1:{hotline.api.port}/api/admin/config/reload"
    async with await hotline_client(hotline, "operator") as operator, operator.post(url) as r:
        assert r.status == 403
    async with await hotline_client(hotline, "admin") as admin:
        async with (
            aiohttp.ClientSession(cookie_jar=admin.cookie_jar) as no_csrf,
            no_csrf.post(url) as response,
        ):
            assert response.status == 403
            assert "csrf" in (await response.json())["error"]
        assert hotline.settings.operators.ring_timeout == 4.0

        edit(config, "ring_timeout = 4.0", "ring_timeout = 9.0")
        edit(config, 'format = "text"', 'format = "json"')
        async with admin.post(url) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
        assert body["applied"] == ["operators.ring_timeout"]
        assert body["needs_restart"] == ["logging.format"]
        assert hotline.plan is not None and body["plan_version"] == hotline.plan.version
        assert body["plan_error"] is None
        assert hotline.settings.operators.ring_timeout == 9.0

        line = edit(config, "max_wait = 60.0", "max_wait = -1")
        async with admin.post(url) as response:
            assert response.status == 422
            refused = await response.json()
        (problem,) = refused["problems"]
        assert problem["line"] == line and problem["key"] == "queues.general.max_wait"
        assert f"{config}:{line}: queues.general.max_wait = -1" in refused["error"]
        assert hotline.settings.queues["general"].max_wait == 60.0


async def test_sighup_to_serve_reloads_config_toml(
    tmp_path: Path, prompt_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real SIGHUP to this process, with `ivr serve`'s handlers installed."""
    config = write_config(tmp_path, operators=["sip:nobody@127.0.0.1:9"], prompt_cache=prompt_cache)
    settings = load_settings(config)
    log = logging.getLogger("ivr")
    log.setLevel(logging.DEBUG)
    log.propagate = True  # so caplog sees the IVR's lines
    ready, stop = asyncio.Event(), asyncio.Event()
    running = asyncio.ensure_future(serve(settings, log, ready=ready, stop=stop))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        handler = signal.getsignal(signal.SIGHUP)
        assert handler not in (signal.SIG_DFL, signal.SIG_IGN, None), "no SIGHUP handler"
        line = edit(config, "sip:nobody@127.0.0.1:9", "sip:somebody@127.0.0.1:9")
        with caplog.at_level(logging.INFO, logger="ivr"):
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: "config reloaded from" in caplog.text, "the reload", 30)
        assert re.search(
            rf"{re.escape(str(config))}:{line}: queues\.general\.operators = "
            r'\["sip:somebody@127\.0\.0\.1:9"\] \(was \["sip:nobody@127\.0\.0\.1:9"\]\): applied',
            caplog.text,
        ), caplog.text
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
        logging.getLogger("ivr").handlers.clear()
    assert signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None)  # handlers taken back


def test_the_bundled_config_reloads_onto_itself_with_no_change() -> None:
    running = load_settings(ROOT / "config.toml")
    change = reload_settings(ROOT / "config.toml", running)
    assert change.applied == () and change.needs_restart == ()
    assert change.settings == running
