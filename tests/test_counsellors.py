"""Counsellors (issue 14 item 3): a caller who says words of distress is put
through to the counsellors' queue (or, when no counsellor answers in time, told
so and put through to the operators); an operator brings a counsellor into
their call from the screen, which says why. Real calls: our trial caller, sipp
phones for operators and counsellors, the scripted recogniser saying what the
caller "said"."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from ivr.tickets.counsellor import flag_value, flagged, why
from ivr.trial_call import place_call
from tests.audio_tools import best_match, write_wav
from tests.conftest import StartHotline, trial
from tests.peers import SippUas, free_udp_port
from tests.test_call_path import wait_records
from tests.test_web_console import browser  # noqa: F401 (a fixture)

LOG = logging.getLogger("ivr.test.counsellors")
ROOT = Path(__file__).resolve().parents[1]
DESCRIBE_PLAN = ROOT / "tests" / "data" / "dialplans" / "describe_then_operator.toml"
RING_ONLY = str(ROOT / "tests" / "data" / "sipp" / "uas_ring_only.xml")
DISTRESS = "我想不开了，活着真没意思，工作也没了，我真的不想活了"
CALM = "我家楼下的路灯坏了，晚上很黑"

pytestmark = pytest.mark.peers


# -- the flag -----------------------------------------------------------------------


def test_the_flag_and_why_the_screen_says_so() -> None:
    heard = {
        "needs_counsellor": {
            "value": True,
            "evidence": [
                {"start": 1, "end": 4, "text": "想不开"},
                {"start": 9, "end": 12, "text": "不想活"},
            ],
            "source": "speech",
        }
    }
    assert flagged(heard) and why(heard) == "来电人说了「想不开」「不想活」"
    by_operator = {"needs_counsellor": {"value": "true", "evidence": [], "source": "operator"}}
    assert flagged(by_operator) and why(by_operator) == "坐席标记需心理援助"
    for fields in (
        {},
        {"needs_counsellor": {"value": False, "evidence": [], "source": "default"}},
        {"needs_counsellor": {"value": "false", "evidence": [], "source": "operator"}},
    ):
        assert not flagged(fields) and why(fields) is None
    assert [flag_value(v) for v in ("true", " 是 ", "FALSE", "否", "maybe")] == [
        True,
        True,
        False,
        False,
        None,
    ]


def test_counsellors_config_names_a_queue_and_a_directory_entry_or_says_where(
    tmp_path: Path,
) -> None:
    from ivr.config import ConfigError, load_settings

    queues = (
        '[queues.general]\noperators = ["sip:op@127.0.0.1:5080"]\n'
        '[queues.counsellors]\noperators = ["sip:xl@127.0.0.1:5082"]\n'
        '[consultation]\ndirectory = { "心理援助热线" = "sip:xl@127.0.0.1:5083" }\n'
    )
    good = tmp_path / "good.toml"
    good.write_text(
        queues + '[counsellors]\nqueue = "counsellors"\nconsult = "心理援助热线"\nwait = 20\n'
    )
    settings = load_settings(good).counsellors
    assert (settings.queue, settings.consult, settings.wait) == ("counsellors", "心理援助热线", 20)
    bad = tmp_path / "bad.toml"
    bad.write_text(queues + '[counsellors]\nqueue = "xinli"\nconsult = "心理专家"\nwait = 0\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(bad)
    said = str(caught.value)
    assert f"{bad}:8" in said and "counsellors.queue" in said and "general, counsellors" in said
    assert f"{bad}:9" in said and "counsellors.consult" in said and "心理援助热线" in said
    assert f"{bad}:10" in said and "counsellors.wait" in said


# -- real calls ---------------------------------------------------------------------


def speech(seconds: float, seed: int = 7) -> npt.NDArray[np.int16]:
    """Voiced-like audio (a 180 Hz buzz with noise): the recogniser's script says the words."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(8000 * seconds)) / 8000
    wave = np.sin(2 * np.pi * 180 * t) * 0.5 + rng.normal(0, 0.1, t.size)
    return (wave * 12000).astype(np.int16)


def quiet(seconds: float) -> npt.NDArray[np.int16]:
    return np.zeros(int(8000 * seconds), dtype=np.int16)


def caller_voice(tmp_path: Path, name: str) -> Path:
    """Silence while 请讲 is said, two seconds of "speech", then silence."""
    return write_wav(tmp_path / f"{name}.wav", np.concatenate([quiet(2.5), speech(2.0), quiet(60)]))


def heard(path: Path) -> npt.NDArray[np.int16]:
    data, rate = sf.read(str(path), dtype="int16")
    assert rate == 8000
    return np.asarray(data, dtype=np.int16)


def said_to_caller(hotline: Any, key: str, recording: Path) -> float:
    """How well the caller's recording holds prompt ``key`` (1.0: exactly)."""
    pcm = hotline.prompts.get(key).pcm
    middle = pcm[len(pcm) // 2 - 4000 : len(pcm) // 2 + 4000]
    return best_match(heard(recording), middle)[0]


def invites(phone: SippUas) -> list[str]:
    return [m for m in phone.messages().split("\n\n") if m.lstrip().startswith("INVITE sip:")]


def counsellors_config(counsellor: str, *, wait: float = 20.0, consult: str = "") -> str:
    return (
        f'[queues.counsellors]\noperators = ["{counsellor}"]\nmax_wait = 60\n'
        f'[counsellors]\nqueue = "counsellors"\nwait = {wait}\n'
        + (f'consult = "{consult}"\n' if consult else "")
    )


async def test_a_caller_in_distress_goes_to_a_counsellor_and_a_calm_one_to_an_operator(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """Two calls: the first says their street lamp is broken (the operators'
    queue); the second says 想不开 ... 不想活了: they hear 正在为您转接心理援助专线,
    the counsellor's phone rings with 需心理援助 in the ticket summary, and the
    ticket says why. The operator's phone never rings for them."""
    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True), trace=True)
    counsellor = SippUas(
        tmp_path / "xl", free_udp_port(), free_udp_port(even=True), user="counsellor", trace=True
    )
    await operator.start()
    await counsellor.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=DESCRIBE_PLAN,
            script=[CALM, DISTRESS],
            extra=counsellors_config(counsellor.uri),
        )
        port = hotline.endpoint.port
        calm_heard, distress_heard = tmp_path / "calm-heard.wav", tmp_path / "distress-heard.wav"
        await place_call(
            trial(port, play=caller_voice(tmp_path, "calm"), duration=14.0, record=calm_heard),
            LOG,
        )
        (calm,) = await wait_records(hotline, 1)
        assert invites(operator) and not invites(counsellor)
        await place_call(
            trial(
                port,
                play=caller_voice(tmp_path, "distress"),
                duration=16.0,
                record=distress_heard,
                caller="13900002222",
            ),
            LOG,
        )
        records = await wait_records(hotline, 2)
    finally:
        await operator.stop()
        await counsellor.stop()
    assert (calm.queue, calm.operator, calm.outcome) == ("general", operator.uri, "bridged")
    (distressed,) = [r for r in records if r.caller == "13900002222"]
    assert distressed.queue == "counsellors" and distressed.outcome == "bridged"
    assert distressed.operator == counsellor.uri
    assert len(invites(operator)) == 1, "the operator's phone rang for the caller in distress"
    (invite,) = invites(counsellor)
    summary = invite.split("X-Ticket-Summary:")[1].splitlines()[0]
    assert summary.strip().startswith("需心理援助"), summary
    assert said_to_caller(hotline, "counsellor_connecting", distress_heard) > 0.8
    assert said_to_caller(hotline, "counsellor_connecting", calm_heard) < 0.5
    assert hotline.tickets is not None
    (ticket,) = await hotline.tickets.for_call(distressed.call_id)
    assert flagged(ticket.fields) and ticket.value("sentiment") == "求助"
    reason = why(ticket.fields)
    assert reason is not None and "想不开" in reason and "不想活" in reason
    assert f"转心理援助席位（counsellors）：{reason}" in ticket.notes
    (calm_ticket,) = await hotline.tickets.for_call(calm.call_id)
    assert not flagged(calm_ticket.fields) and not calm_ticket.notes


async def test_counsellors_enabled_by_a_reload_get_their_prompt_and_their_callers(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """The counsellors' seats exist but [counsellors] is off; SIGHUP's reload
    turns it on: the next caller in distress hears 正在为您转接心理援助专线
    (built by the reload, not at start) and reaches the counsellor."""
    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True), trace=True)
    counsellor = SippUas(
        tmp_path / "xl", free_udp_port(), free_udp_port(even=True), user="counsellor", trace=True
    )
    await operator.start()
    await counsellor.start()
    try:
        seats_only = f'[queues.counsellors]\noperators = ["{counsellor.uri}"]\nmax_wait = 60\n'
        hotline = await start_hotline(
            [operator.uri], dialplan=DESCRIBE_PLAN, script=[DISTRESS], extra=seats_only
        )
        config = hotline.settings.source
        assert config is not None
        with config.open("a", encoding="utf-8") as out:
            out.write('\n[counsellors]\nqueue = "counsellors"\n')
        result = await hotline.reload()
        assert "counsellors.queue" in result.applied
        recording = tmp_path / "heard.wav"
        await place_call(
            trial(
                hotline.endpoint.port,
                play=caller_voice(tmp_path, "distress"),
                duration=16.0,
                record=recording,
            ),
            LOG,
        )
        (record,) = await wait_records(hotline, 1)
    finally:
        await operator.stop()
        await counsellor.stop()
    assert (record.queue, record.operator) == ("counsellors", counsellor.uri)
    assert not invites(operator)
    assert said_to_caller(hotline, "counsellor_connecting", recording) > 0.8


async def test_no_counsellor_within_the_wait_the_caller_is_told_and_an_operator_answers(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """The counsellor's phone rings and is never answered: after [counsellors]
    wait (3 s) the caller hears that the counsellors are busy and is put
    through to the operators; the ticket says so for the operator."""
    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True), trace=True)
    counsellor = SippUas(
        tmp_path / "xl",
        free_udp_port(),
        free_udp_port(even=True),
        RING_ONLY,
        user="counsellor",
        trace=True,
    )
    await operator.start()
    await counsellor.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=DESCRIBE_PLAN,
            script=[DISTRESS],
            ring_timeout=10.0,
            extra=counsellors_config(counsellor.uri, wait=3),
        )
        recording = tmp_path / "heard.wav"
        await place_call(
            trial(
                hotline.endpoint.port,
                play=caller_voice(tmp_path, "distress"),
                duration=34.0,
                record=recording,
            ),
            LOG,
        )
        (record,) = await wait_records(hotline, 1)
    finally:
        await operator.stop()
        await counsellor.stop()
    assert invites(counsellor), "the counsellor was never rung"
    assert "CANCEL sip:" in counsellor.messages(), "the counsellor's ringing was not cancelled"
    assert (record.queue, record.operator, record.outcome) == ("general", operator.uri, "bridged")
    assert said_to_caller(hotline, "counsellor_connecting", recording) > 0.8
    assert said_to_caller(hotline, "counsellor_busy", recording) > 0.8
    assert hotline.tickets is not None
    (ticket,) = await hotline.tickets.for_call(record.call_id)
    reason = why(ticket.fields)
    assert f"3 秒内无心理咨询师接听，转人工坐席（general），请坐席关注：{reason}" in ticket.notes


async def test_the_operator_brings_a_counsellor_in_and_flags_the_ticket(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """No counsellors' queue: the caller (calm words) is with an operator, who
    presses 请心理咨询师 (the API behind the button): the counsellor of
    [counsellors] consult is rung into the call, the ticket is flagged by the
    operator and their screen says so. Bad input is refused with the reason."""
    from tests.web_client import hotline_client

    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True), trace=True)
    counsellor = SippUas(
        tmp_path / "xl", free_udp_port(), free_udp_port(even=True), user="counsellor", trace=True
    )
    await operator.start()
    await counsellor.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=DESCRIBE_PLAN,
            script=[CALM],
            extra=(
                f'[consultation]\ndirectory = {{ "心理援助热线" = "{counsellor.uri}" }}\n'
                '[counsellors]\nconsult = "心理援助热线"\n'
            ),
        )
        client = await hotline_client(hotline, "operator", "op1", sip_uri=operator.uri)
        base = f"http://127.0.0.1:{hotline.api.port}"
        try:
            call = asyncio.ensure_future(
                place_call(
                    trial(hotline.endpoint.port, play=caller_voice(tmp_path, "c"), duration=20.0),
                    LOG,
                )
            )
            me: dict[str, Any] = {}
            for _ in range(100):
                async with client.get(f"{base}/api/console/me") as r:
                    me = await r.json()
                if me.get("consultation"):
                    break
                await asyncio.sleep(0.2)
            assert me["consultation"], "the operator's call was never bridged"
            assert me["counsellor"] == {"needed": False, "why": None, "consult": "心理援助热线"}
            ticket_id = me["call"]["ticket_id"]
            async with client.post(
                f"{base}/api/tickets/{ticket_id}", json={"fields": {"needs_counsellor": "maybe"}}
            ) as r:
                assert r.status == 400 and "true" in (await r.json())["error"]
            async with client.post(f"{base}/api/console/counsellor", json={}) as r:
                assert r.status == 200, await r.text()
                assert await r.json() == {
                    "name": "心理援助热线",
                    "state": "ringing",
                    "flagged": True,
                }
            for _ in range(100):
                async with client.get(f"{base}/api/console/me") as r:
                    me = await r.json()
                if "心理援助热线" in me["consultation"]["parties"]:
                    break
                await asyncio.sleep(0.2)
            assert me["consultation"]["parties"] == ["caller", "operator", "心理援助热线"]
            assert me["counsellor"]["needed"] and me["counsellor"]["why"] == "坐席标记需心理援助"
            async with client.post(f"{base}/api/console/counsellor", json={}) as r:
                assert (await r.json())["state"] == "already"
            await asyncio.wait_for(call, 30)
            async with client.post(f"{base}/api/console/counsellor", json={}) as r:
                assert r.status == 409 and "no bridged call" in (await r.json())["error"]
        finally:
            await client.close()
        (record,) = await wait_records(hotline, 1)
    finally:
        await operator.stop()
        await counsellor.stop()
    assert "consult:心理援助热线" in record.path
    assert invites(counsellor)
    assert hotline.tickets is not None
    history = await hotline.tickets.history(ticket_id)
    assert any(h.what == "field:needs_counsellor" and h.who == "op1" for h in history)


async def test_the_screen_says_why_and_its_button_brings_the_counsellor_in(
    start_hotline: StartHotline,
    tmp_path: Path,
    browser: Any,  # noqa: F811 (the fixture)
) -> None:
    """In Chromium: a caller who said 想不开 ... 不想活了 is with an operator (no
    counsellors' queue configured); the screen pop says 需心理援助 and the words
    heard; 请心理咨询师 rings the counsellor in and the screen shows them in the call."""
    from tests.test_web_console import CHROMIUM, log_in, shot
    from tests.web_client import PASSWORD

    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True))
    counsellor = SippUas(
        tmp_path / "xl", free_udp_port(), free_udp_port(even=True), user="counsellor", trace=True
    )
    await operator.start()
    await counsellor.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=DESCRIBE_PLAN,
            script=[DISTRESS],
            extra=(
                f'[consultation]\ndirectory = {{ "心理援助热线" = "{counsellor.uri}" }}\n'
                '[counsellors]\nconsult = "心理援助热线"\n'
            ),
        )
        assert hotline.accounts is not None
        await hotline.accounts.add_user("op1", PASSWORD, "operator", sip_uri=operator.uri)
        base = f"http://127.0.0.1:{hotline.api.port}"
        page = await log_in(browser, base, "op1")
        await page.wait_for_url(f"{base}/operator")
        call = asyncio.ensure_future(
            place_call(
                trial(hotline.endpoint.port, play=caller_voice(tmp_path, "c"), duration=25.0), LOG
            )
        )
        await page.wait_for_selector("#counsellor-call:not(.hidden)", timeout=30_000)
        await page.wait_for_selector("#counsellor-why:has-text('不想活')", timeout=10_000)
        said = await page.locator("#counsellor-why").text_content() or ""
        assert said.startswith("需心理援助：来电人说了「想不开」"), said
        assert "需心理援助" in (await page.locator("#ticket-flags").text_content() or "")
        await page.click("#counsellor-call")
        await page.wait_for_selector("#consult-parties:has-text('心理援助热线')", timeout=20_000)
        assert await page.locator("#counsellor-call").is_disabled()
        await page.wait_for_selector("#counsellor-said:has-text('已加入通话')", timeout=5_000)
        await shot(page, "operator-counsellor")
        result = await asyncio.wait_for(call, 40)
    finally:
        await operator.stop()
        await counsellor.stop()
    assert result.ended_by == "caller"
    assert invites(counsellor), "the counsellor was never rung"


async def test_in_a_cluster_the_counsellors_line_and_the_flag_are_shared(
    request: pytest.FixtureRequest, tmp_path: Path, prompt_cache: Path
) -> None:
    """Two nodes on one PostgreSQL store: a caller in distress rings node A, is put
    through to the counsellor (their phone in both nodes' [queues.counsellors]);
    the counsellor's screen on node B's console shows the ticket, 需心理援助 and the
    words heard: the flag comes through the store, the line is the cluster's."""
    import re

    from ivr.config import load_settings
    from ivr.logs import setup_logging
    from ivr.server import Hotline
    from tests.conftest import new_postgres_database, write_config
    from tests.web_client import hotline_client

    url = new_postgres_database(request, request.getfixturevalue("postgres_server"))
    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True))
    counsellor = SippUas(
        tmp_path / "xl", free_udp_port(), free_udp_port(even=True), user="counsellor", trace=True
    )
    await operator.start()
    await counsellor.start()
    nodes: list[Hotline] = []
    log = setup_logging("DEBUG", "text")
    try:
        for name, script in (("node-a", [DISTRESS]), ("node-b", [])):
            (tmp_path / name).mkdir()
            path = write_config(
                tmp_path / name,
                operators=[operator.uri],
                prompt_cache=prompt_cache,
                dialplan=DESCRIBE_PLAN,
                script=script,
                extra=counsellors_config(counsellor.uri) + f'[node]\nid = "{name}"\n',
            )
            text, n = re.subn(r'(?m)^database = ".*"$', f'url = "{url}"', path.read_text())
            assert n == 1
            path.write_text(text)
            hotline = Hotline(load_settings(path), log)
            await hotline.start()
            nodes.append(hotline)
        a, b = nodes
        client = await hotline_client(b, "operator", "xl1", sip_uri=counsellor.uri)
        base = f"http://127.0.0.1:{b.api.port}"
        try:
            call = asyncio.ensure_future(
                place_call(
                    trial(a.endpoint.port, play=caller_voice(tmp_path, "c"), duration=20.0), LOG
                )
            )
            me: dict[str, Any] = {}
            for _ in range(150):
                async with client.get(f"{base}/api/console/me") as r:
                    me = await r.json()
                if me.get("ticket"):
                    break
                await asyncio.sleep(0.2)
            assert me.get("ticket"), "node B's console never showed the counsellor's call"
            assert me["counsellor"]["needed"] is True
            assert "想不开" in me["counsellor"]["why"] and "不想活" in me["counsellor"]["why"]
            # the call is node A's: who is in it reaches B's console through the store
            # (ivr/consultation_board.py) once A has bridged it
            assert me["consultation"] is None or me["consultation"]["node"] == "node-a"
            await asyncio.wait_for(call, 40)
        finally:
            await client.close()
        (record,) = await wait_records(a, 1)
    finally:
        for hotline in nodes:
            await hotline.stop(drain_timeout=2.0)
        logging.getLogger("ivr").handlers.clear()
        await operator.stop()
        await counsellor.stop()
    assert (record.queue, record.operator, record.node) == ("counsellors", counsellor.uri, "node-a")
    assert len(invites(counsellor)) == 1
