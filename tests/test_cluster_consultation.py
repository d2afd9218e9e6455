"""Consultation in the cluster (issue 14 item 2 on issue 12's nodes): two
`ivr serve` nodes (subprocesses) sharing a real PostgreSQL server; a real call
(our trial caller, playing a tone and recording what it hears) held by node B
and bridged to a real operator's phone (baresip, its own tone); the operator's
console is on node A.

- node A's console shows the consultation of the call node B holds (who is in
  it, the directory's buttons), brings a department in (a command through the
  store, carried out by node B), and all three hear the other two (decoded from
  what each recorded); dropped from A's console, the department leaves and the
  caller and operator go on; A's 挂断 ends the call;
- the same in Chromium: the buttons on node A's screen pop bring the
  department into node B's call and drop it again;
- with node B killed, the command fails with the reason naming node B.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ivr.store import open_store
from ivr.trial_call import place_call
from ivr.web.auth import Accounts
from tests.audio_tools import pad, write_wav
from tests.conftest import new_postgres_database, trial
from tests.kamailio_parts import IvrNode
from tests.postgres_server import PostgresServer, server_binaries
from tests.test_cluster import STRAIGHT, cluster_node, free_tcp_port
from tests.test_conference import (
    CALLER_HZ,
    DEPARTMENT_HZ,
    LOG,
    OPERATOR_HZ,
    RATE,
    caller_heard,
    heard_both,
    heard_by,
    heard_only,
    sine,
    tone_phone,
    until,
)
from tests.test_web_console import CHROMIUM, browser  # noqa: F401 (browser: a fixture)
from tests.test_web_console import log_in as browser_log_in
from tests.web_client import PASSWORD, log_in

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(
        server_binaries() is None,
        reason="PostgreSQL's server is missing: apt-get install postgresql",
    ),
]

DEPARTMENT = "住建局"


class TwoNodes:
    def __init__(self, a: IvrNode, b: IvrNode, web_a: int, url: str) -> None:
        self.a, self.b, self.web_a, self.url = a, b, web_a, url

    @property
    def console(self) -> str:
        return f"http://127.0.0.1:{self.web_a}"  # node A's

    def logs(self) -> str:
        return f"\n--- node a\n{self.a.log()[-4000:]}\n--- node b\n{self.b.log()[-4000:]}"


StartNodes = Callable[[str, str], Awaitable[TwoNodes]]


@pytest.fixture
async def start_nodes(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    prompt_cache: Path,
    postgres_server: PostgresServer,
) -> AsyncIterator[StartNodes]:
    started: list[TwoNodes] = []

    async def start(operator_uri: str, department_uri: str) -> TwoNodes:
        url = new_postgres_database(request, postgres_server)
        web_a = free_tcp_port()
        nodes = []
        for name in ("node-a", "node-b"):
            node = cluster_node(
                name,
                tmp_path / name,
                url,
                prompt_cache,
                operators=[operator_uri],
                plan=STRAIGHT,
                ring_timeout=20.0,
                callbacks="enabled = false",
                web_port=web_a if name == "node-a" else 0,
            )
            with node.config.open("a") as config:
                config.write(
                    f'\n[consultation]\ndirectory = {{ "{DEPARTMENT}" = "{department_uri}" }}\n'
                )
            nodes.append(node)
        two = TwoNodes(nodes[0], nodes[1], web_a, url)
        started.append(two)
        for node in nodes:  # one at a time: the second finds the prompts rendered
            await node.start()
            await node.ready()
        db = await open_store(url)
        try:
            await Accounts(db).add_user("op1", PASSWORD, "operator", sip_uri=operator_uri)
        finally:
            await db.close()
        return two

    yield start
    for two in started:
        await asyncio.gather(two.a.stop(), two.b.stop())


async def call_json(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    async with session.request(method, url, json=body) as response:
        return response.status, await response.json()


async def caller_on(node: IvrNode, tmp_path: Path, duration: float) -> asyncio.Future[Any]:
    """Our trial caller dialling ``node`` straight: a tone, and what it hears recorded."""
    voice = write_wav(tmp_path / "caller.wav", pad(sine(CALLER_HZ, duration), 0.0, 0.0))
    options = trial(
        node.sip_port, duration=duration, play=voice, record=tmp_path / "caller-heard.wav"
    )
    return asyncio.ensure_future(place_call(options, LOG))


async def test_node_as_console_brings_a_department_into_node_bs_call_and_all_hear_each_other(
    start_nodes: StartNodes, tmp_path: Path
) -> None:
    operator = await tone_phone(tmp_path, "operator", OPERATOR_HZ)
    department = await tone_phone(tmp_path, "zjj", DEPARTMENT_HZ)
    session: aiohttp.ClientSession | None = None
    try:
        nodes = await start_nodes(operator.uri, department.uri)
        session = await log_in(nodes.console, "op1")
        call = await caller_on(nodes.b, tmp_path, 40.0)
        await until(lambda: operator.saw("established"), 20, "the operator answers")
        me_url = f"{nodes.console}/api/console/me"
        shown: dict[str, Any] = {}

        async def consultation_shown(parties: list[str]) -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                status, me = await call_json(session, "GET", me_url)
                assert status == 200, me
                shown.update(me.get("consultation") or {})
                if me.get("consultation") and me["consultation"]["parties"] == parties:
                    return
                await asyncio.sleep(0.2)
            raise AssertionError(f"node A's console shows {shown}, not {parties}" + nodes.logs())

        # node A's screen shows node B's call with the directory's button
        await consultation_shown(["caller", "operator"])
        assert shown["node"] == "node-b" and shown["operator"] == operator.uri
        assert [e["name"] for e in shown["directory"]] == [DEPARTMENT]
        await asyncio.sleep(1.5)

        status, brought = await call_json(
            session, "POST", f"{nodes.console}/api/console/consultation", {"name": DEPARTMENT}
        )
        assert status == 200, brought
        assert brought["state"] == "ringing" and brought["node"] == "node-b"
        assert brought["command"] is not None, "carried out on node A, not through the store"
        await until(lambda: department.saw("established"), 15, "the department answers")
        await consultation_shown(["caller", "operator", DEPARTMENT])
        await asyncio.sleep(5.0)  # all three talk

        status, dropped = await call_json(
            session,
            "POST",
            f"{nodes.console}/api/console/consultation/drop",
            {"name": DEPARTMENT},
        )
        assert status == 200 and dropped["state"] == "dropping", dropped
        await until(lambda: department.saw("terminated"), 10, "the department hung up")
        await consultation_shown(["caller", "operator"])
        await asyncio.sleep(4.0)  # caller and operator go on
        assert not call.done(), "the call ended when the department was dropped"
        status, again = await call_json(
            session, "POST", f"{nodes.console}/api/console/consultation/drop", {"name": DEPARTMENT}
        )
        assert status == 409 and DEPARTMENT in again["error"] and "不在通话中" in again["error"]

        status, ended = await call_json(session, "POST", f"{nodes.console}/api/console/hangup")
        assert status == 200 and ended["state"] == "ended", ended
        result = await asyncio.wait_for(call, 15)
    finally:
        if session is not None:
            await session.close()
        await operator.quit()
        await department.quit()
    assert result.ended_by == "ivr", "node A's 挂断 did not end the call on node B"

    caller = caller_heard(tmp_path)
    assert heard_both(caller, (OPERATOR_HZ, DEPARTMENT_HZ), CALLER_HZ) >= 4, (
        "the caller did not hear operator and department together"
    )
    assert heard_only(caller[-3 * RATE :], OPERATOR_HZ, DEPARTMENT_HZ) >= 4, (
        "after the department was dropped, the caller does not hear the operator alone"
    )
    by_operator = heard_by(operator, tmp_path)
    assert heard_both(by_operator, (CALLER_HZ, DEPARTMENT_HZ), OPERATOR_HZ) >= 4
    assert heard_only(by_operator, CALLER_HZ, DEPARTMENT_HZ) >= 4
    by_department = heard_by(department, tmp_path)
    assert heard_both(by_department, (CALLER_HZ, OPERATOR_HZ), DEPARTMENT_HZ) >= 4

    db = await open_store(nodes.url)
    try:
        rows = await db.fetch_all(
            "SELECT command, node, requested_from, requested_by, state FROM call_commands "
            "ORDER BY id"
        )
        left = await db.fetch_all("SELECT call_id FROM call_conversations")
    finally:
        await db.close()
    assert [tuple(r) for r in rows] == [
        ("consult", "node-b", "node-a", "op1", "done"),
        ("drop", "node-b", "node-a", "op1", "done"),
        ("drop", "node-b", "node-a", "op1", "failed"),
        ("hangup", "node-b", "node-a", "op1", "done"),
    ]
    assert left == [], "the conversation's row outlived the call"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
async def test_the_buttons_on_node_as_screen_act_on_node_bs_call_in_the_browser(
    start_nodes: StartNodes,
    tmp_path: Path,
    browser: Any,  # noqa: F811 (the fixture)
) -> None:
    operator = await tone_phone(tmp_path, "operator", OPERATOR_HZ)
    department = await tone_phone(tmp_path, "zjj", DEPARTMENT_HZ)
    try:
        nodes = await start_nodes(operator.uri, department.uri)
        page = await browser_log_in(browser, nodes.console, "op1")
        await page.wait_for_url(f"{nodes.console}/operator")
        call = await caller_on(nodes.b, tmp_path, 30.0)
        button = f"#consult-buttons button[data-name='{DEPARTMENT}']"
        await page.locator(button).wait_for(timeout=30_000)
        await page.click(button)
        await page.wait_for_selector(f"#consult-parties:has-text('{DEPARTMENT}')", timeout=20_000)
        assert await page.locator(button).is_disabled()
        assert department.saw("established")
        await asyncio.sleep(2.0)
        await page.click(f"#consult-drop button[data-drop='{DEPARTMENT}']")
        await until(lambda: department.saw("terminated"), 10, "the department dropped")
        dropped = f"#consult-drop button[data-drop='{DEPARTMENT}']"
        await page.wait_for_selector(dropped, state="detached", timeout=10_000)
        await page.wait_for_selector(f"{button}:not([disabled])", timeout=5_000)
        assert DEPARTMENT not in (await page.locator("#consult-parties").text_content() or "")
        assert not call.done(), "the call ended when the department was dropped"
        result = await asyncio.wait_for(call, 40)
    finally:
        await operator.quit()
        await department.quit()
    assert result.ended_by == "caller"
    by_department = heard_by(department, tmp_path)
    assert heard_both(by_department, (CALLER_HZ, OPERATOR_HZ), DEPARTMENT_HZ) >= 2


async def test_a_command_for_a_call_on_a_killed_node_fails_with_the_reason(
    start_nodes: StartNodes, tmp_path: Path
) -> None:
    operator = await tone_phone(tmp_path, "operator", OPERATOR_HZ)
    department = await tone_phone(tmp_path, "zjj", DEPARTMENT_HZ)
    session: aiohttp.ClientSession | None = None
    call: asyncio.Future[Any] | None = None
    try:
        nodes = await start_nodes(operator.uri, department.uri)
        session = await log_in(nodes.console, "op1")
        call = await caller_on(nodes.b, tmp_path, 30.0)
        await until(lambda: operator.saw("established"), 20, "the operator answers")
        await asyncio.sleep(1.5)  # node B's heartbeat and the shared operator state
        await nodes.b.kill9()
        started = time.monotonic()
        status, failed = await call_json(
            session, "POST", f"{nodes.console}/api/console/consultation", {"name": DEPARTMENT}
        )
        waited = time.monotonic() - started
    finally:
        if session is not None:
            await session.close()
        if call is not None:
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
        await operator.quit()
        await department.quit()
    assert status == 409, failed
    assert "node-b" in failed["error"] and "已失联" in failed["error"], failed
    assert waited < 10.0, f"the console waited {waited:.1f} s: the command expired, not failed"
    assert not department.saw("established") and not department.saw("incoming")
