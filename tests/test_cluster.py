"""The cluster with its real parts (issue 12 item 8): two `ivr serve` nodes
(subprocesses, so kill -9 is real) sharing one database on a real PostgreSQL
server, behind the project's Kamailio (deploy/kamailio/kamailio.cfg); sipp
callers dial Kamailio, sipp phones stand for the operators and for the callers'
own phones (callbacks); all on 127.0.0.x.

- calls are spread over both nodes, and the store's call records name both;
- one waiting line: with the operator busy, the caller who joined first (on one
  node) gets the operator before a caller who joined later on the other node,
  the node that freed the operator;
- 50 callers at once through Kamailio: the one operator's phone is never rung
  by both nodes at once (the phone's own log of INVITEs and CANCELs);
- kill -9 of a node: the next new calls are answered by the other node, and a
  caller it held past the greeting is called back by the survivor, with the
  ticket of the call that was lost;
- a callback the killed node was dialling is dialled by the other node;
- drain on the shared store: the node's call finishes, the node says it
  stopped, and no survivor takes its calls for lost;
- a rolling restart under load (each node drained, started again and taken
  back by Kamailio in turn, calls coming in all along) drops no call;
- a screen pop crosses nodes in the browser: an operator logged in on node A's
  web console sees the ticket of a call node B puts through to them.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ivr.config import load_settings
from ivr.node_roster import NODE_TIMEOUT_S
from ivr.store import Database, open_store
from ivr.tickets import TicketStore
from ivr.web.auth import Accounts
from tests.conftest import new_postgres_database, write_config
from tests.kamailio_parts import (
    IvrNode,
    Kamailio,
    SippCaller,
    double_rings,
    kamailio_binary,
    rings,
    sip_messages,
    sipp_callers,
)
from tests.peers import SippUas, free_udp_port
from tests.postgres_server import PostgresServer, server_binaries
from tests.test_callbacks_live import callbacks_config
from tests.test_web_console import browser, log_in  # noqa: F401 (browser: a fixture)
from tests.web_client import PASSWORD

DATA = Path(__file__).parent / "data"
STRAIGHT = DATA / "dialplans" / "straight_to_queue.toml"
WELCOME = DATA / "dialplans" / "welcome_then_queue.toml"  # in line = past the greeting
RING_ONLY = str(DATA / "sipp" / "uas_ring_only.xml")

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(
        kamailio_binary() is None,
        reason="the kamailio binary is missing: apt-get install kamailio "
        "(IVR_SETUP_FOR_TESTS=1 scripts/setup.sh installs it)",
    ),
    pytest.mark.skipif(
        server_binaries() is None,
        reason="PostgreSQL's server is missing: apt-get install postgresql",
    ),
]


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_node(
    name: str,
    directory: Path,
    url: str,
    prompt_cache: Path,
    *,
    operators: Sequence[str],
    plan: Path,
    ring_timeout: float,
    callbacks: str,
    web_port: int = 0,
) -> IvrNode:
    """A node's config: write_config's, with the shared PostgreSQL URL as its
    store, ``name`` as its [node] id and its own web port."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(
        directory,
        operators=list(operators),
        prompt_cache=prompt_cache,
        dialplan=plan,
        ring_timeout=ring_timeout,
        callbacks=callbacks,
        extra=f'\n[node]\nid = "{name}"\ndrain_timeout = 60\n',
    )
    text, stores = re.subn(r'(?m)^database = ".*"$', f'url = "{url}"', config.read_text())
    text, webs = re.subn(r"(?m)^\[web\]\nport = 0$", f"[web]\nport = {web_port}", text)
    assert stores == 1 and webs == 1, text
    config.write_text(text)
    assert load_settings(config).storage.postgres_url == url
    return IvrNode(name, directory, config)


@dataclass
class Cluster:
    kamailio: Kamailio
    a: IvrNode
    b: IvrNode
    db: Database  # the store both nodes share, as the test reads it
    web_a: int  # node A's web console port

    @property
    def port(self) -> int:
        return self.kamailio.port

    def node_at(self, sip_port: int) -> IvrNode:
        return next(n for n in (self.a, self.b) if n.sip_port == sip_port)

    def named(self, name: str) -> IvrNode:
        return next(n for n in (self.a, self.b) if n.name == name)

    def other(self, node: IvrNode) -> IvrNode:
        return self.b if node is self.a else self.a

    def logs(self) -> str:
        return (
            f"\n--- kamailio\n{self.kamailio.log()[-3000:]}\n--- node a\n{self.a.log()[-4000:]}"
            f"\n--- node b\n{self.b.log()[-4000:]}"
        )

    async def calls(self, caller: str | None = None) -> list[Any]:
        rows = await self.db.fetch_all(
            "SELECT call_id, caller, node, outcome, end_reason, operator, ended_at "
            "FROM calls ORDER BY started_at"
        )
        return [r for r in rows if caller is None or r["caller"] == caller]

    async def callback(self, number: str) -> Any:
        return await self.db.fetch_one(
            "SELECT id, state, reason, ticket_id, first_call_id, lease_node, attempts "
            "FROM callbacks WHERE number = ? ORDER BY id DESC LIMIT 1",
            (number,),
        )


StartCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def start_cluster(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    prompt_cache: Path,
    postgres_server: PostgresServer,
) -> AsyncIterator[StartCluster]:
    started: list[Cluster] = []

    async def start(
        operators: Sequence[str] = ("sip:nobody@127.0.0.1:9",),
        plan: Path = STRAIGHT,
        ring_timeout: float = 4.0,
        callbacks: str = "enabled = false",
    ) -> Cluster:
        url = new_postgres_database(request, postgres_server)
        web_a = free_tcp_port()
        a, b = (
            cluster_node(
                name,
                tmp_path / name,
                url,
                prompt_cache,
                operators=operators,
                plan=plan,
                ring_timeout=ring_timeout,
                callbacks=callbacks,
                web_port=web_a if name == "node-a" else 0,
            )
            for name in ("node-a", "node-b")
        )
        db = await open_store(url)
        cluster = Cluster(Kamailio(tmp_path / "kamailio", [], ["127.0.0.1"]), a, b, db, web_a)
        started.append(cluster)
        for node in (a, b):  # one at a time: the second finds the prompts rendered
            await node.start()
            await node.ready()
        cluster.kamailio.nodes = [a.sip_port, b.sip_port]
        await cluster.kamailio.start()
        return cluster

    yield start
    for cluster in started:
        await cluster.kamailio.stop()
        await asyncio.gather(cluster.a.stop(), cluster.b.stop())
        await cluster.db.close()


async def until(
    check: Callable[[], Any], timeout: float = 20.0, what: str = "", cluster: Cluster | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not in {timeout:.0f} s: {what}" + (cluster.logs() if cluster else ""))


def answered_calls(messages: str) -> dict[str, int]:
    """Per Call-ID a sipp caller placed: the SIP port of the node that answered."""
    found: dict[str, int] = {}
    for m in sip_messages(messages):
        contact = re.search(r"sip:ivr@127\.0\.0\.1:(\d+)", m.headers.get("contact", ""))
        if m.received and m.status == 200 and "INVITE" in m.headers.get("cseq", "") and contact:
            found.setdefault(m.headers["call-id"], int(contact.group(1)))
    return found


async def test_calls_are_spread_over_both_nodes_and_their_records_name_both(
    start_cluster: StartCluster, tmp_path: Path
) -> None:
    cluster = await start_cluster()
    calls = await sipp_callers(
        tmp_path / "callers", cluster.port, calls=6, rate=3, duration_ms=1000
    )
    assert calls.returncode == 0 and calls.successful == 6, calls.stdout + cluster.logs()
    answered = answered_calls(calls.messages)
    assert Counter(answered.values()) == {cluster.a.sip_port: 3, cluster.b.sip_port: 3}

    async def all_ended() -> bool:
        return sum(r["ended_at"] is not None for r in await cluster.calls()) == 6

    await until(all_ended, what="six call records ended")
    records = {r["call_id"]: r for r in await cluster.calls()}
    assert set(records) == set(answered)  # one store: every call of both nodes
    for call_id, port in answered.items():  # each record names the node that answered
        assert records[call_id]["node"] == cluster.node_at(port).name
        assert records[call_id]["end_reason"] == "caller_hangup"
    nodes = await cluster.db.fetch_all("SELECT node_id, state FROM nodes ORDER BY node_id")
    assert [tuple(r) for r in nodes] == [("node-a", "up"), ("node-b", "up")]


async def test_the_caller_who_joined_first_gets_the_operator_whichever_node_holds_them(
    start_cluster: StartCluster, tmp_path: Path
) -> None:
    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True), trace=True)
    await operator.start()
    callers: list[SippCaller] = []
    try:
        cluster = await start_cluster([operator.uri], ring_timeout=10.0)

        def caller(number: str, seconds: float) -> SippCaller:
            made = SippCaller(
                tmp_path / number, cluster.port, number, duration_ms=int(seconds * 1000)
            )
            callers.append(made)
            return made

        talking = caller("13900000000", 7.0)  # takes the operator, hangs up at ~7 s
        await talking.start()
        await until(lambda: rings(operator.messages()), what="the operator rung")
        first, later = caller("13900000001", 14.0), caller("13900000002", 14.0)
        await first.start()
        (first_node,) = await first.answered()
        await asyncio.sleep(1.0)
        await later.start()
        (later_node,) = await later.answered()

        async def both_in_line() -> bool:
            row = await cluster.db.fetch_one("SELECT COUNT(*) FROM queue_waiters")
            return row is not None and int(row[0]) == 2

        await until(both_in_line, what="two callers in the one line")
        (talking_node,) = talking.answered_by()
        assert first_node != later_node, "Kamailio put both waiting callers on one node"
        # round-robin: the later caller is on the node whose operator call ends first
        assert later_node == talking_node
        await until(lambda: len(rings(operator.messages())) >= 2, 15.0, "the operator rung again")
        order = [r.caller for r in rings(operator.messages())]
        assert order[:2] == ["13900000000", "13900000001"], [*order, cluster.logs()]
        second = rings(operator.messages())[1]
        assert second.rung_by == first_node  # the node holding the first caller rang
    finally:
        for made in callers:
            await made.stop()
        await operator.stop()


async def test_one_operator_is_never_rung_twice_at_once_under_50_callers(
    start_cluster: StartCluster, tmp_path: Path
) -> None:
    operator = SippUas(
        tmp_path / "op", free_udp_port(), free_udp_port(even=True), RING_ONLY, trace=True
    )
    await operator.start()
    try:
        cluster = await start_cluster([operator.uri], ring_timeout=1.0)
        calls = await sipp_callers(
            tmp_path / "callers",
            cluster.port,
            calls=50,
            rate=10,
            limit=50,
            duration_ms=15_000,
            timeout=60,
        )
        assert calls.successful == 50, calls.stdout[-2000:] + cluster.logs()
        assert Counter(calls.answered_by) == {cluster.a.sip_port: 25, cluster.b.sip_port: 25}
        await asyncio.sleep(0.5)  # the last CANCEL logged
        found = rings(operator.messages())
    finally:
        await operator.stop()
    assert len(found) >= 8, len(found)
    by_node = Counter(r.rung_by for r in found)  # both nodes rang it, in turns
    assert set(by_node) == {cluster.a.sip_port, cluster.b.sip_port} and min(by_node.values()) >= 3
    assert all(r.ended is not None for r in found)
    assert double_rings(found) == []
    state = await cluster.db.fetch_one(
        "SELECT state FROM operator_states WHERE uri = ?", (operator.uri,)
    )
    assert state is not None and state[0] == "free"


async def test_kill_9_next_call_on_the_other_node_and_its_caller_called_back_with_the_ticket(
    start_cluster: StartCluster, tmp_path: Path
) -> None:
    number = "13900000011"
    operator = SippUas(
        tmp_path / "op", free_udp_port(), free_udp_port(even=True), RING_ONLY, trace=True
    )
    phone = SippUas(
        tmp_path / "phone", free_udp_port(), free_udp_port(even=True), user=number, trace=True
    )
    await operator.start()
    await phone.start()
    held_caller: SippCaller | None = None
    try:
        cluster = await start_cluster(
            [operator.uri], plan=WELCOME, ring_timeout=60.0, callbacks=callbacks_config(phone.port)
        )
        held_caller = SippCaller(tmp_path / "held", cluster.port, number, duration_ms=120_000)
        await held_caller.start()
        (port,) = await held_caller.answered()
        held, survivor = cluster.node_at(port), cluster.other(cluster.node_at(port))
        # past the greeting, in line, ringing the operator with the call's ticket
        await until(lambda: rings(operator.messages()), what="the operator rung")
        (ring,) = rings(operator.messages())
        ticket_id = int(ring.headers["x-ticket-id"])
        (record,) = await cluster.calls(number)
        assert record["node"] == held.name

        async def in_line_in_the_store() -> bool:  # its progress written (every second)
            row = await cluster.db.fetch_one(
                "SELECT path FROM calls WHERE call_id = ?", (record["call_id"],)
            )
            return row is not None and "operator" in str(row[0])

        await until(in_line_in_the_store, 5.0, "the call's path in the store")
        await held.kill9()
        killed_at = time.time()
        for n in range(2):  # round-robin: one of the two is first sent to the dead node
            started = time.monotonic()
            call = await sipp_callers(tmp_path / f"after-{n}", cluster.port, duration_ms=200)
            assert call.successful == 1, call.stdout + cluster.logs()
            assert call.answered_by == [survivor.sip_port]
            assert time.monotonic() - started < 4.0

        await until(lambda: rings(phone.messages()), 20.0, "the callback INVITE", cluster)
        callback_ring = rings(phone.messages())[0]
        assert callback_ring.rung_by == survivor.sip_port
        assert callback_ring.began - killed_at < NODE_TIMEOUT_S + 5.0
        (lost,) = [r for r in await cluster.calls(number) if r["call_id"] == record["call_id"]]
        assert lost["end_reason"] == "node_lost" and lost["node"] == held.name
        callback = await cluster.callback(number)
        assert callback["reason"] == "dropped" and callback["first_call_id"] == record["call_id"]
        assert callback["ticket_id"] == ticket_id and callback["lease_node"] == survivor.name

        def put_through_again() -> list[Any]:
            return [r for r in rings(operator.messages()) if r.rung_by == survivor.sip_port]

        # the phone answered: the callback greeting, then the operator with the same ticket
        await until(put_through_again, 30.0, "the operator rung for the callback")
        assert put_through_again()[0].headers["x-ticket-id"] == str(ticket_id)
    finally:
        if held_caller is not None:
            await held_caller.stop()
        await phone.stop()
        await operator.stop()


async def test_a_callback_the_killed_node_was_dialling_is_dialled_by_the_other(
    start_cluster: StartCluster, tmp_path: Path
) -> None:
    number = "13900000022"
    operator = SippUas(
        tmp_path / "op", free_udp_port(), free_udp_port(even=True), RING_ONLY, trace=True
    )
    phone = SippUas(  # rings, never answered: the callback stays dialling
        tmp_path / "phone",
        free_udp_port(),
        free_udp_port(even=True),
        RING_ONLY,
        user=number,
        trace=True,
    )
    await operator.start()
    await phone.start()
    try:
        cluster = await start_cluster(
            [operator.uri],
            plan=WELCOME,
            ring_timeout=60.0,
            callbacks=callbacks_config(phone.port, retry="[0, 1, 1]").replace(
                "ring_timeout = 10", "ring_timeout = 120"
            ),
        )
        caller = SippCaller(tmp_path / "caller", cluster.port, number, duration_ms=3000)
        await caller.start()
        hung_up = await caller.finished(timeout=30)  # waited in line 3 s, hung up
        assert hung_up.successful == 1, hung_up.stdout + cluster.logs()
        await until(lambda: rings(phone.messages()), what="the callback INVITE", cluster=cluster)
        callback = await cluster.callback(number)
        assert callback["state"] == "dialing" and callback["attempts"] == 1
        dialling = cluster.named(callback["lease_node"])
        other = cluster.other(dialling)
        assert rings(phone.messages())[0].rung_by == dialling.sip_port

        await dialling.kill9()
        killed_at = time.time()
        await until(lambda: len(rings(phone.messages())) >= 2, 20.0, "the callback dialled again")
        again = rings(phone.messages())[1]
        assert again.rung_by == other.sip_port and again.caller == "12345"
        assert again.began - killed_at < NODE_TIMEOUT_S + 5.0
        callback = await cluster.callback(number)
        assert callback["state"] == "dialing" and callback["lease_node"] == other.name
        assert callback["attempts"] == 2
        assert len(rings(phone.messages())) == 2  # dialled once by each, never twice at once
    finally:
        await phone.stop()
        await operator.stop()


async def test_drain_finishes_a_call_in_progress_on_the_shared_store(
    start_cluster: StartCluster, tmp_path: Path
) -> None:
    cluster = await start_cluster()
    number = "13900000033"
    caller = SippCaller(tmp_path / "long", cluster.port, number, duration_ms=8000)
    await caller.start()
    try:
        (port,) = await caller.answered()
        held = cluster.node_at(port)
        other = cluster.other(held)
        draining = asyncio.ensure_future(held.drain())
        await cluster.kamailio.wait_log(rf"node sip:127\.0\.0\.1:{held.sip_port} is out")

        async def says_draining() -> bool:
            row = await cluster.db.fetch_one(
                "SELECT state FROM nodes WHERE node_id = ?", (held.name,)
            )
            return row is not None and row[0] == "draining"

        await until(says_draining, 5.0, "the heartbeat says draining")
        new = await sipp_callers(tmp_path / "new", cluster.port, calls=2, rate=4, duration_ms=300)
        assert new.successful == 2 and set(new.answered_by) == {other.sip_port}
        assert held.running, "the draining node left before its call was over"
        done = await caller.finished(timeout=30)
        assert done.successful == 1, done.stdout + cluster.logs()
        code, said = await draining
        assert code == 0 and "finished its calls and exited" in said, said + cluster.logs()
    finally:
        await caller.stop()
    (record,) = await cluster.calls(number)
    assert record["node"] == held.name and record["end_reason"] == "caller_hangup"
    # it said it stopped: past the timeout, the other node does not take it for lost
    await asyncio.sleep(NODE_TIMEOUT_S + 2.0)
    row = await cluster.db.fetch_one("SELECT state FROM nodes WHERE node_id = ?", (held.name,))
    assert row is not None and row[0] == "stopped"
    (record,) = await cluster.calls(number)
    assert record["end_reason"] == "caller_hangup"
    assert "lost (no heartbeat" not in other.log()


async def test_a_screen_pop_crosses_nodes_in_the_browser(
    start_cluster: StartCluster,
    tmp_path: Path,
    browser: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True), trace=True)
    await operator.start()
    caller: SippCaller | None = None
    try:
        cluster = await start_cluster([operator.uri], ring_timeout=20.0)
        await Accounts(cluster.db).add_user("op1", PASSWORD, "operator", sip_uri=operator.uri)
        base = f"http://127.0.0.1:{cluster.web_a}"  # node A's console
        page = await log_in(browser, base, "op1")
        await page.wait_for_url(f"{base}/operator")
        await page.wait_for_selector("#state:has-text('空闲')")
        number = "13900000044"
        caller = SippCaller(  # straight to node B: the call is B's
            tmp_path / "caller", cluster.b.sip_port, number, duration_ms=20_000
        )
        await caller.start()
        await page.wait_for_selector(f"#ticket-caller:has-text('{number}')", timeout=20_000)
        shown = int((await page.locator("#ticket-id").text_content() or "#0")[1:])
        assert await page.locator("#state").inner_text() in ("振铃中", "通话中")
        (record,) = await cluster.calls(number)
        assert record["node"] == "node-b"
        (ticket,) = await TicketStore(cluster.db).for_call(record["call_id"])
        assert shown == ticket.id
        assert rings(operator.messages())[0].headers["x-ticket-id"] == str(ticket.id)
    finally:
        if caller is not None:
            await caller.stop()
        await operator.stop()


async def test_a_rolling_restart_under_load_drops_no_call(
    start_cluster: StartCluster, tmp_path: Path
) -> None:
    """Item 5: calls keep coming through Kamailio (one a second, 4 s each)
    while node A is drained, started again and taken back by Kamailio, then
    node B the same: every call is answered and ends as the caller ends it."""
    cluster = await start_cluster()
    calls = 36
    number = "13900000055"
    load = SippCaller(
        tmp_path / "load", cluster.port, number, calls=calls, rate=1.0, limit=20, duration_ms=4000
    )
    await load.start()
    try:
        await load.answered(2, timeout=20)
        for node in (cluster.a, cluster.b):
            back_in = rf"node sip:127\.0\.0\.1:{node.sip_port} is in"
            seen_in = len(re.findall(back_in, cluster.kamailio.log()))
            code, said = await node.drain()
            assert code == 0 and "finished its calls and exited" in said, said + cluster.logs()
            await node.start()
            await node.ready()

            def taken_back(pattern: str = back_in, before: int = seen_in) -> bool:
                return len(re.findall(pattern, cluster.kamailio.log())) > before

            await until(taken_back, 20.0, f"Kamailio sends {node.name} calls again", cluster)
        done = await load.finished(timeout=120)
    finally:
        await load.stop()
    assert done.successful == calls and done.failed == 0, done.stdout[-2000:] + cluster.logs()
    assert set(done.answered_by) == {cluster.a.sip_port, cluster.b.sip_port}

    async def all_written() -> bool:
        ended = [r for r in await cluster.calls(number) if r["ended_at"] is not None]
        return len(ended) == calls

    await until(all_written, 10.0, "every call's end written", cluster)
    records = await cluster.calls(number)
    assert Counter(r["end_reason"] for r in records) == {"caller_hangup": calls}, records
