"""Two IVR nodes (`ivr serve` subprocesses, each with its own SQLite) behind the
project's Kamailio (deploy/kamailio/kamailio.cfg), sipp callers dialling Kamailio,
all on 127.0.0.x (issue 12 items 5, 7 and 8):

- calls are spread over both nodes, the ACK and BYE go through Kamailio, RTP goes
  straight to the node that answered (its own port range in the SDP);
- kill -9 of a node: the next new calls are answered by the other node;
- a draining node answers OPTIONS 503, Kamailio sends it no new call, its call in
  progress finishes normally, then it exits; a node's own BYE reaches the caller
  through Kamailio;
- a source not on the allow-list gets 403; a flood from one source is dropped by
  pike while the trunk's calls still work.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kamailio_parts import (
    IvrNode,
    Kamailio,
    kamailio_binary,
    options_status,
    raw_peer_on,
    sipp_callers,
)
from tests.sip_raw import invite, options, status_of

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(
        kamailio_binary() is None,
        reason="the kamailio binary is missing: apt-get install kamailio "
        "(IVR_SETUP_FOR_TESTS=1 scripts/setup.sh installs it)",
    ),
]


@dataclass
class Front:
    kamailio: Kamailio
    a: IvrNode
    b: IvrNode

    @property
    def port(self) -> int:
        return self.kamailio.port

    def logs(self) -> str:
        return (
            f"--- kamailio\n{self.kamailio.log()[-4000:]}\n--- node a\n{self.a.log()[-3000:]}"
            f"\n--- node b\n{self.b.log()[-3000:]}"
        )


StartFront = Callable[..., Awaitable[Front]]


@pytest.fixture
async def start_front(tmp_path: Path, prompt_cache: Path) -> AsyncIterator[StartFront]:
    started: list[Front] = []

    async def start(allowed: tuple[str, ...] = ("127.0.0.1",), **options: int) -> Front:
        a = IvrNode.write("a", tmp_path / "node-a", prompt_cache)
        b = IvrNode.write("b", tmp_path / "node-b", prompt_cache)
        front = Front(
            Kamailio(tmp_path / "kamailio", [], list(allowed), **options),  # type: ignore[arg-type]
            a,
            b,
        )
        started.append(front)
        await a.start()
        await a.ready()  # one at a time: the second finds the prompts rendered
        await b.start()
        await b.ready()
        front.kamailio.nodes = [a.sip_port, b.sip_port]
        await front.kamailio.start()
        return front

    yield start
    for front in started:
        await front.kamailio.stop()
        await asyncio.gather(front.a.stop(), front.b.stop())


async def test_calls_are_spread_over_both_nodes(start_front: StartFront, tmp_path: Path) -> None:
    front = await start_front()
    calls = await sipp_callers(tmp_path / "callers", front.port, calls=4, rate=2, duration_ms=1500)
    assert calls.returncode == 0 and calls.successful == 4, calls.stdout + front.logs()
    by_node = Counter(calls.answered_by)
    assert by_node == {front.a.sip_port: 2, front.b.sip_port: 2}, front.logs()
    # Kamailio record-routed: the callers' ACK and BYE went through it to the node
    assert f"Record-Route: <sip:127.0.0.1:{front.port};lr" in calls.messages
    # and left the SDP alone: RTP goes straight to the node that answered
    nodes = {front.a.sip_port: front.a, front.b.sip_port: front.b}
    for node_port, media_port in zip(calls.answered_by, calls.media_ports, strict=True):
        assert media_port in nodes[node_port].rtp_ports
    for node in (front.a, front.b):  # each took the caller's BYE, relayed by Kamailio
        assert node.log().count("call ended in the plan: caller_hangup") == 2, node.log()


async def test_kill_9_next_call_answered_by_the_other_node(
    start_front: StartFront, tmp_path: Path
) -> None:
    front = await start_front()
    warm = await sipp_callers(tmp_path / "warm", front.port, calls=2, rate=10, duration_ms=300)
    assert warm.successful == 2, warm.stdout + front.logs()
    await front.a.kill9()
    took = []
    for n in range(2):  # round-robin: one of the two is first sent to the dead node
        started = time.monotonic()
        call = await sipp_callers(tmp_path / f"after-{n}", front.port, duration_ms=200)
        took.append(time.monotonic() - started)
        assert call.successful == 1, call.stdout + front.logs()
        assert call.answered_by == [front.b.sip_port]
    # no reply in FR_TIMER_MS (1.5 s) from the dead node: the next node answers
    assert f"node sip:127.0.0.1:{front.a.sip_port} failed" in front.kamailio.log()
    assert max(took) < 4.0, took


async def test_draining_node_gets_no_new_calls_and_finishes_its_own(
    start_front: StartFront, tmp_path: Path
) -> None:
    front = await start_front()
    long_calls = asyncio.ensure_future(
        sipp_callers(tmp_path / "long", front.port, calls=2, rate=20, duration_ms=9000)
    )
    await asyncio.sleep(2.5)  # one call on each node
    draining = asyncio.ensure_future(front.a.drain())
    await front.kamailio.wait_log(rf"node sip:127\.0\.0\.1:{front.a.sip_port} is out")
    assert await options_status(front.a.sip_port) == 503
    new_calls = await sipp_callers(tmp_path / "new", front.port, calls=3, rate=4, duration_ms=300)
    assert new_calls.successful == 3, new_calls.stdout + front.logs()
    assert set(new_calls.answered_by) == {front.b.sip_port}
    assert front.a.running, "the draining node left before its call was over"
    long_done = await long_calls
    assert long_done.returncode == 0 and long_done.successful == 2, long_done.stdout
    assert sorted(long_done.answered_by) == sorted([front.a.sip_port, front.b.sip_port])
    code, said = await draining
    assert code == 0 and "finished its calls and exited" in said, said + front.logs()
    assert await front.a.exited() == 0


async def test_node_hangs_up_through_kamailio(start_front: StartFront, tmp_path: Path) -> None:
    front = await start_front()
    waiting = asyncio.ensure_future(
        sipp_callers(
            tmp_path / "hung",
            front.port,
            scenario="uac_via_proxy_ivr_hangs_up.xml",
            timeout=30,
        )
    )
    await asyncio.sleep(2.5)
    for node in (front.a, front.b):  # SIGTERM twice: drain, then end the calls now
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        with contextlib.suppress(ProcessLookupError):  # the node without a call is gone
            node.proc.send_signal(signal.SIGTERM)
    call = await waiting
    assert call.successful == 1, call.stdout + front.logs()
    bye = next(b for b in call.messages.split("-----") if "\nBYE sip:" in b)
    assert f"Via: SIP/2.0/UDP 127.0.0.1:{front.port};branch=" in bye, bye


async def test_allow_list_and_flood(start_front: StartFront, tmp_path: Path) -> None:
    front = await start_front(allowed=("127.0.0.1", "127.0.0.2"), pike_density=20)
    stranger = await raw_peer_on("127.0.0.3")
    try:
        stranger.send(invite(stranger.port, front.port)[0], front.port)
        assert status_of(await stranger.expect(2.0)) == 403
    finally:
        stranger.close()
    assert await options_status(front.port, source="127.0.0.3") == 403
    assert "not on the allow-list" in front.kamailio.log()

    flood = await raw_peer_on("127.0.0.2")  # a trunk gone mad, or someone posing as it
    try:
        for _ in range(300):
            flood.send(options(flood.port, front.port), front.port)
        answered = 0
        while not await flood.nothing(1.0):
            answered += 1
    finally:
        flood.close()
    assert 0 < answered <= 60, answered  # about one unit's PIKE_DENSITY, then silence
    await front.kamailio.wait_log(r"pike: flood from 127\.0\.0\.2")
    assert await options_status(front.port, source="127.0.0.2", wait=0.5) == 0
    calls = await sipp_callers(tmp_path / "trunk", front.port, calls=2, rate=4, duration_ms=300)
    assert calls.successful == 2, calls.stdout + front.logs()
