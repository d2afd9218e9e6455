"""GET /metrics (issue 13 item 5), scraped over HTTP from a real hotline and
parsed with prometheus_client's own parser: the figures a person watching the
line checks. A caller waits for an operator whose phone (sipp) rings and is
never picked up: calls in progress, callers waiting and the longest wait, the
operator ringing, then the call's end by reason. Refused SIP requests by
reason; the recogniser's and the prefill's latency after a described problem
(the scripted recogniser goes through the same recogniser threads as Whisper);
who may read the figures; and a scrape while the store hangs (PostgreSQL
frozen with SIGSTOP) answers at once with what the node knows."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ivr.config import ConfigError, load_settings
from ivr.logs import setup_logging
from ivr.server import Hotline
from ivr.trial_call import place_call
from tests.audio_tools import pad, read_8k, write_wav
from tests.conftest import StartHotline, trial, write_config
from tests.postgres_server import PostgresServer, PostgresUnavailable
from tests.sip_raw import invite, raw_peer, sdp, status_of
from tests.test_call_path import wait_records
from tests.test_callbacks_live import busy_operator
from tests.test_speech_calls import espeak
from tests.web_client import hotline_client

LOG = logging.getLogger("ivr.test.metrics")
DATA_DIR = Path(__file__).parent / "data"
QUEUE_PLAN = DATA_DIR / "dialplans" / "queue_position.toml"
DESCRIBE_PLAN = DATA_DIR / "dialplans" / "describe_then_operator.toml"
SCRAPE_TIMEOUT_S = 10.0  # Prometheus' default scrape timeout

pytestmark = pytest.mark.peers


# -- reading the figures --------------------------------------------------------
class Figures:
    """One scrape, parsed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families: dict[str, Metric] = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float:
        """The one sample named ``sample`` whose labels include ``labels``."""
        found = [
            s.value
            for family in self.families.values()
            for s in family.samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) == 1, f"{sample} {labels}: {len(found)} samples in\n{self.text}"
        return float(found[0])

    def has(self, family: str) -> bool:
        return family in self.families


async def scrape(
    hotline: Hotline,
    headers: dict[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> Figures:
    figures, status, text = await fetch(hotline, headers, session)
    assert status == 200, text
    assert figures is not None
    return figures


async def fetch(
    hotline: Hotline,
    headers: dict[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> tuple[Figures | None, int, str]:
    url = f"http://127.0.0.1:{hotline.api.port}/metrics"
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
    own = session is None
    client = session or aiohttp.ClientSession()
    try:
        async with client.get(url, headers=headers or {}, timeout=timeout) as response:
            text = await response.text()
            if response.status != 200:
                return None, response.status, text
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return Figures(text), response.status, text
    finally:
        if own:
            await client.close()


async def until(
    hotline: Hotline, check: Callable[[Figures], bool], what: str, timeout: float = 20.0
) -> Figures:
    """Scrape until ``check`` holds; that scrape."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        figures = await scrape(hotline)
        if check(figures):
            return figures
        if loop.time() > deadline:
            raise AssertionError(f"not in {timeout:.0f} s: {what}\n{figures.text}")
        await asyncio.sleep(0.3)


def operators_in(state: str, count: int) -> Callable[[Figures], bool]:
    return lambda f: f.value("ivr_operators", state=state) == count


def configured(
    directory: Path,
    prompt_cache: Path,
    web: str = "",
    store: str | Path = "",
    **keywords: Any,
) -> Path:
    """A test config (write_config's ``keywords``) with ``web`` lines added to
    its [web] table and, with ``store``, the store there (an SQLite file or a
    PostgreSQL URL: nodes given the same one share it)."""
    keywords.setdefault("operators", ["sip:nobody@127.0.0.1:9"])
    path = write_config(directory, prompt_cache=prompt_cache, **keywords)
    text = path.read_text().replace("[web]\nport = 0\n", f"[web]\nport = 0\n{web}\n", 1)
    if store:
        key = "url" if str(store).startswith("postgresql://") else "database"
        text, n = re.subn(r'(?m)^database = ".*"$', f'{key} = "{store}"', text)
        assert n == 1
    path.write_text(text)
    return path


async def own_hotline(path: Path) -> Hotline:
    log = setup_logging("DEBUG", "text")
    log.propagate = True  # caplog sees the IVR's lines
    hotline = Hotline(load_settings(path), log)
    try:
        await hotline.start()
    except BaseException:
        await hotline.stop(drain_timeout=0.0)
        raise
    return hotline


# -- a call waiting for an operator --------------------------------------------
async def test_a_waiting_call_shows_in_the_figures_and_its_end_is_counted(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    operator = busy_operator(tmp_path)  # rings, never answers
    await operator.start()
    try:
        hotline = await start_hotline(
            [operator.uri], dialplan=QUEUE_PLAN, ring_timeout=60.0, extra='[node]\nid = "n1"\n'
        )
        node = hotline.metrics.node
        assert node == "n1"
        before = await scrape(hotline)
        assert before.value("ivr_calls_in_progress", node=node) == 0
        assert before.value("ivr_queue_waiting_callers", queue="general") == 0
        assert before.value("ivr_queue_longest_wait_seconds", queue="general") == 0
        assert before.value("ivr_operators", state="ready") == 1
        assert before.value("ivr_operators", state="ringing") == 0
        assert before.value("ivr_metrics_store_read_ok", node=node) == 1
        assert before.value("ivr_work_order_outbox_depth") == 0
        assert before.value("ivr_callbacks", state="pending") == 0
        assert before.value("ivr_asr_queue_depth", node=node) == 0
        assert not [s for s in before.families["ivr_calls_ended"].samples]

        call = asyncio.ensure_future(
            place_call(trial(hotline.endpoint.port, duration=8.0, caller="13800000001"), LOG)
        )
        during = await until(
            hotline,
            lambda f: (
                f.value("ivr_calls_in_progress", node=node) == 1
                and f.value("ivr_queue_waiting_callers", queue="general") == 1
                and f.value("ivr_operators", state="ringing") == 1
            ),
            "the call in progress, waiting, its operator rung",
        )
        assert during.value("ivr_operators", state="ready") == 0
        await asyncio.sleep(1.0)
        later = await scrape(hotline)
        waited = later.value("ivr_queue_longest_wait_seconds", queue="general")
        assert waited >= 1.0, later.text
        result = await call
        assert result.status == 200
        await wait_records(hotline, 1)
    finally:
        await operator.stop()
    after = await until(
        hotline,
        lambda f: (
            f.value("ivr_calls_in_progress", node=node) == 0
            and f.value("ivr_operators", state="ready") == 1
        ),
        "no call in progress, the operator ready again",
    )
    assert after.value("ivr_calls_ended_total", node=node, reason="caller_hangup") == 1
    reasons = [s.labels["reason"] for s in after.families["ivr_calls_ended"].samples]
    assert reasons == ["caller_hangup"]  # the one call, once
    assert after.value("ivr_queue_waiting_callers", queue="general") == 0
    assert after.value("ivr_queue_longest_wait_seconds", queue="general") == 0
    assert after.value("ivr_operators", state="ringing") == 0
    # the operator pauses on their screen: paused, then ready again
    screen = await hotline_client(hotline, "operator", sip_uri=operator.uri)
    try:
        for ready, state in ((False, "paused"), (True, "ready")):
            async with screen.post(
                f"http://127.0.0.1:{hotline.api.port}/api/console/availability",
                json={"ready": ready},
            ) as response:
                assert response.status == 200, await response.text()
            await until(hotline, operators_in(state, 1), f"the operator {state}")
    finally:
        await screen.close()


# -- two nodes on one store -------------------------------------------------------------
async def test_two_nodes_show_the_one_line_and_each_its_own_calls(
    store_location: str | Path, tmp_path: Path, prompt_cache: Path
) -> None:
    """A caller held by node a waits for the operator node a rings: node b's
    figures show them waiting and the operator ringing (the shared line is the
    truth), and no call of its own."""
    operator = busy_operator(tmp_path)
    await operator.start()
    nodes: list[Hotline] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            path = configured(
                tmp_path / name,
                prompt_cache,
                store=store_location,
                operators=[operator.uri],
                dialplan=QUEUE_PLAN,
                ring_timeout=60.0,
                extra=f'[node]\nid = "{name}"\n',
            )
            nodes.append(await own_hotline(path))
        a, b = nodes
        call = asyncio.ensure_future(
            place_call(trial(a.endpoint.port, duration=8.0, caller="13800000001"), LOG)
        )
        seen_by_b = await until(
            b,
            lambda f: (
                f.value("ivr_queue_waiting_callers", queue="general") == 1
                and f.value("ivr_operators", state="ringing") == 1
            ),
            "node a's caller waiting and its operator ringing, seen by node b",
        )
        assert seen_by_b.value("ivr_calls_in_progress", node="b") == 0
        assert seen_by_b.value("ivr_queue_longest_wait_seconds", queue="general") > 0
        assert seen_by_b.value("ivr_operators", state="ready") == 0
        seen_by_a = await scrape(a)
        assert seen_by_a.value("ivr_calls_in_progress", node="a") == 1
        assert seen_by_a.value("ivr_queue_waiting_callers", queue="general") == 1
        assert (await call).status == 200
        await until(
            b,
            lambda f: (
                f.value("ivr_queue_waiting_callers", queue="general") == 0
                and f.value("ivr_operators", state="ready") == 1
            ),
            "the line empty again, seen by node b",
        )
        after = await scrape(a)
        assert after.value("ivr_calls_ended_total", node="a", reason="caller_hangup") == 1
        assert not (await scrape(b)).families["ivr_calls_ended"].samples
    finally:
        for node in nodes:
            await node.stop(drain_timeout=1.0)
        await operator.stop()
        logging.getLogger("ivr").handlers.clear()


# -- refused SIP, two hotlines side by side ----------------------------------------
def stray_bye(peer_port: int, server_port: int) -> str:
    """A BYE in a dialog that never was."""
    return (
        f"BYE sip:12345@127.0.0.1:{server_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{peer_port};branch=z9hG4bK{secrets.token_hex(8)}\r\n"
        f"From: <sip:13800138000@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:12345@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
        f"Call-ID: {secrets.token_hex(8)}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )


async def test_refused_sip_requests_are_counted_by_reason_on_their_own_hotline(
    start_hotline: StartHotline,
) -> None:
    hotline = await start_hotline()
    other = await start_hotline()  # a second hotline in this process: its own registry
    port = hotline.endpoint.port
    peer = await raw_peer()
    try:
        # a BYE of no call of ours: 481
        peer.send(stray_bye(peer.port, port), port)
        assert status_of(await peer.expect()) == 481
        # a CSeq naming another method: 400
        broken, _, _ = invite(peer.port, port, cseq="1 OPTIONS")
        peer.send(broken, port)
        assert status_of(await peer.expect()) == 400
        # an INVITE offering only G.729: 488, no shared codec
        g729, _, _ = invite(peer.port, port, body=sdp(peer.port + 2, codecs="18"))
        peer.send(g729, port)
        answers = [status_of(await peer.expect()) for _ in range(2)]
        assert 488 in answers, answers
        # not SIP at all: not answered, counted
        peer.send(b"\x00\x01 not sip \xff", port)
        await asyncio.sleep(0.3)
    finally:
        peer.close()
    figures = await scrape(hotline)
    node = hotline.metrics.node
    assert figures.value("ivr_sip_rejected_total", node=node, reason="no_dialog") == 1
    assert figures.value("ivr_sip_rejected_total", node=node, reason="malformed") == 1
    assert figures.value("ivr_sip_rejected_total", node=node, reason="no_codec") == 1
    assert figures.value("ivr_sip_rejected_total", node=node, reason="unparseable") == 1
    # the other hotline saw none of it
    theirs = await scrape(other)
    rejected = {
        s.labels["reason"]: s.value
        for s in theirs.families["ivr_sip_rejected"].samples
        if s.name == "ivr_sip_rejected_total"
    }
    assert set(rejected.values()) <= {0}, rejected
    assert theirs.value("ivr_calls_in_progress", node=other.metrics.node) == 0


# -- speech: the recogniser and the prefill ------------------------------------------
async def test_a_described_problem_is_timed_by_recogniser_and_prefill(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    said = espeak(tmp_path, "problem", "wo3 jia1 lou2 xia4 de5 lu4 deng1 huai4 le5.")
    voice = write_wav(tmp_path / "caller.wav", pad(read_8k(said, tmp_path), 3.0, 8.0))
    operator = busy_operator(tmp_path)
    await operator.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=DESCRIBE_PLAN,
            ring_timeout=30.0,
            engine="scripted",
            script=["我叫王芳，我家楼下的路灯坏了"],
        )
        node = hotline.metrics.node
        before = await scrape(hotline)
        assert before.value("ivr_asr_seconds_count", node=node) == 0
        assert before.value("ivr_prefill_seconds_count", node=node) == 0
        result = await place_call(trial(hotline.endpoint.port, play=voice, duration=16.0), LOG)
        assert result.status == 200
        await wait_records(hotline, 1)
    finally:
        await operator.stop()
    after = await until(
        hotline, lambda f: f.value("ivr_prefill_seconds_count", node=node) >= 1, "a prefill"
    )
    assert after.value("ivr_asr_seconds_count", node=node) >= 1
    assert after.value("ivr_asr_seconds_sum", node=node) > 0
    assert after.value("ivr_asr_seconds_bucket", node=node, le="+Inf") >= 1
    assert after.value("ivr_prefill_seconds_sum", node=node) > 0
    assert after.value("ivr_asr_queue_depth", node=node) == 0
    assert after.value("ivr_asr_in_progress", node=node) == 0
    assert hotline.tickets is not None
    (ticket,) = await hotline.tickets.for_call((await hotline.records.list_recent(1))[0].call_id)  # type: ignore[union-attr]
    assert "路灯" in ticket.transcript


# -- who may read the figures ------------------------------------------------------
TOKEN = "0123456789abcdef0123456789abcdef"


async def test_metrics_outside_the_allowed_addresses_need_the_token_or_an_admin(
    tmp_path: Path, prompt_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ivr")
    path = configured(
        tmp_path,
        prompt_cache,
        web=f'metrics_allow = ["192.0.2.0/24"]\nmetrics_token = "{TOKEN}"',
    )
    hotline = await own_hotline(path)
    try:
        _, status, text = await fetch(hotline)
        assert status == 403
        assert "metrics_allow" in text and "Bearer" in text
        _, status, text = await fetch(hotline, {"Authorization": "Bearer not-the-token"})
        assert status == 403 and "wrong" in text
        figures = await scrape(hotline, {"Authorization": f"Bearer {TOKEN}"})
        assert figures.value("ivr_calls_in_progress", node=hotline.metrics.node) == 0
        # an operator's log-in is not enough; an admin's is
        operator = await hotline_client(hotline, "operator")
        try:
            _, status, _ = await fetch(hotline, session=operator)
            assert status == 403
        finally:
            await operator.close()
        admin = await hotline_client(hotline, "admin")
        try:
            await scrape(hotline, session=admin)
        finally:
            await admin.close()
        # the list reloads (SIGHUP): loopback let in without a token from now on
        path.write_text(
            path.read_text().replace(
                'metrics_allow = ["192.0.2.0/24"]', 'metrics_allow = ["127.0.0.1/32"]'
            )
        )
        result = await hotline.reload()
        assert "web.metrics_allow" in result.applied
        await scrape(hotline)
    finally:
        await hotline.stop(drain_timeout=0.0)
        logging.getLogger("ivr").handlers.clear()
    assert "metrics: 403 to 127.0.0.1" in caplog.text
    assert TOKEN not in caplog.text


def test_a_short_metrics_token_is_refused_at_its_line(tmp_path: Path, prompt_cache: Path) -> None:
    path = configured(tmp_path, prompt_cache, web='metrics_token = "Xq9tooFew"')
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    message = str(raised.value)
    assert "metrics_token" in message and "16" in message and "Xq9tooFew" not in message


# -- the store hangs -----------------------------------------------------------------
@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own (it is frozen; the session's is left alone)."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


def server_processes(server: PostgresServer) -> list[int]:
    """The postmaster (its pid file) and every process it started."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == postmaster:
            pids.append(int(entry))
    return pids


async def test_a_scrape_while_the_store_hangs_answers_with_what_the_node_knows(
    own_postgres: PostgresServer, tmp_path: Path, prompt_cache: Path
) -> None:
    url = own_postgres.new_database("metrics_hang")
    hotline = await own_hotline(configured(tmp_path, prompt_cache, store=url))
    frozen: list[int] = []
    try:
        node = hotline.metrics.node
        up = await scrape(hotline)
        assert up.value("ivr_metrics_store_read_ok", node=node) == 1
        assert up.has("ivr_callbacks")
        frozen = server_processes(own_postgres)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        hung = await scrape(hotline)  # within Prometheus' own timeout, or it fails
        assert hung.value("ivr_metrics_store_read_ok", node=node) == 0
        assert hung.value("ivr_calls_in_progress", node=node) == 0
        assert hung.value("ivr_operators", state="ready") == 1  # as the desk last saw them
        assert hung.value("ivr_queue_waiting_callers", queue="general") == 0
        assert not hung.has("ivr_callbacks")  # not known: left out, not said to be 0
        assert not hung.has("ivr_work_order_outbox_depth")
        again = await scrape(hotline)  # and the next one too
        assert again.value("ivr_metrics_store_read_ok", node=node) == 0
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        frozen = []
        back = await until(
            hotline,
            lambda f: f.value("ivr_metrics_store_read_ok", node=node) == 1,
            "the store read again",
            timeout=30.0,
        )
        assert back.has("ivr_callbacks")
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        await hotline.stop(drain_timeout=1.0)
        logging.getLogger("ivr").handlers.clear()
