"""Follow-up calls (回访) with real SIP peers: a ticket closed through the
console is followed up by a call from the hotline to a sipp phone, which
presses a key (RFC 2833) — 3: the ticket is reopened and raised to a
supervisor; 1: 满意, counted in the dashboard's coverage — or never answers
(no_answer after the retries); a baresip phone says its answer and a
comment (the scripted recogniser: see test_a_spoken_unsatisfied_*)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ivr.followups import FollowupState, Outcome
from ivr.followups.dialling import RAISED_NOTE, WHO
from ivr.followups.survey import COMMENT_NOTE, matter_sentence
from tests.audio_tools import write_wav
from tests.conftest import StartHotline
from tests.peers import SIPP_PCAPS, Baresip, SippUas, free_udp_port

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]
KEY_SCENARIO = DATA / "sipp" / "uas_answer_key.xml"
RING_ONLY = str(DATA / "sipp" / "uas_ring_only.xml")
CALLER = "13800138000"

pytestmark = pytest.mark.peers


class KeyPhone:
    """sipp standing for citizens' phones on one port: answers every call,
    listens ``wait_ms`` (echoing what it hears, so RTP flows both ways as
    from a phone), presses ``digit``, waits for the hotline's BYE."""

    def __init__(
        self, workdir: Path, digit: str, wait_ms: int = 4000, port: int | None = None
    ) -> None:
        self.workdir = workdir
        self.port = port or free_udp_port()
        self.media_port = free_udp_port(even=True)
        self.digit = digit
        self.wait_ms = wait_ms
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        link = self.workdir / "pcap"
        if not link.exists():
            link.symlink_to(SIPP_PCAPS)
        scenario = self.workdir / "scenario.xml"
        scenario.write_text(
            KEY_SCENARIO.read_text()
            .replace("@WAIT_MS@", str(self.wait_ms))
            .replace("@DIGIT@", self.digit)
        )
        self.proc = await asyncio.create_subprocess_exec(
            "sipp",
            *("-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.port)),
            *("-mi", "127.0.0.1", "-mp", str(self.media_port)),
            *("-rtp_echo", "-nostdin", "-trace_msg", "-trace_err"),
            cwd=self.workdir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(0.3)

    def messages(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("*_messages.log"))
        )

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def followups_config(port: int, *, retry: str = "[0, 1]", ring_timeout: float = 10) -> str:
    return f"""
[followups]
enabled = true
plan = "{ROOT / "dialplans" / "followup.toml"}"
dial_uri = "sip:{{number}}@127.0.0.1:{port}"
caller_id = "12345"
ring_timeout = {ring_timeout}
retry = {retry}
quiet_hours = ""
max_attempts_per_hour = 10
"""


async def until(check: Any, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.2)):
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


async def closed_ticket(hotline: Any, client: Any, caller: str = CALLER, **fields: str) -> int:
    """A ticket with ``fields``, closed by an operator through the console."""
    ticket = await hotline.tickets.create(f"call-{caller}", caller)
    if fields:
        await hotline.tickets.apply_prefill(
            ticket.id,
            {k: {"value": v, "evidence": [], "source": "prefill"} for k, v in fields.items()},
            "",
            None,
        )
    base = f"http://127.0.0.1:{hotline.api.port}"
    async with client.post(f"{base}/api/tickets/{ticket.id}", json={"status": "closed"}) as r:
        assert r.status == 200, await r.text()
    return int(ticket.id)


async def done(hotline: Any, ticket_id: int, timeout: float = 60.0) -> Any:
    queue = hotline.followups.queue
    found: list[Any] = []

    async def over() -> bool:
        nonlocal found
        found = await queue.list(ticket_id=ticket_id)
        return bool(found) and found[0].state is FollowupState.DONE

    await until(over, timeout)
    return found[0]


@contextlib.asynccontextmanager
async def raised_events(hotline: Any) -> AsyncIterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    async with hotline.events.subscribe() as queue:

        async def read() -> None:
            while True:
                event = await queue.get()
                if event is not None and event.kind == "raised":
                    seen.append(event.ticket)

        reader = asyncio.ensure_future(read())
        try:
            yield seen
        finally:
            reader.cancel()


async def test_a_phone_that_presses_3_reopens_the_ticket_and_raises_it(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    from tests.web_client import hotline_client

    phone = KeyPhone(tmp_path / "phone", "3")
    await phone.start()
    try:
        hotline: Any = await start_hotline(
            sip_extra="rtp_timeout = 120", extra=followups_config(phone.port)
        )
        client = await hotline_client(hotline, "operator")
        try:
            async with raised_events(hotline) as raised:
                ticket_id = await closed_ticket(
                    hotline, client, district="西湖区", address="文三路", category="停水"
                )
                followup = await done(hotline, ticket_id)
                await until(lambda: _true(bool(raised)), 5)
        finally:
            await client.close()
        ticket = await hotline.tickets.get(ticket_id)
        history = await hotline.tickets.history(ticket_id)
        records = await hotline.records.list_recent(10)
    finally:
        await phone.stop()
    assert followup.outcome is Outcome.UNSATISFIED and followup.number == CALLER
    assert followup.attempts == 1
    # reopened: status back to open, by the follow-up, and the history says why
    assert ticket.status == "open"
    assert [(h.who, h.old_value, h.new_value) for h in history if h.what == "status"] == [
        ("test-operator", "open", "closed"),
        (WHO, "closed", "open"),
    ]
    assert any(RAISED_NOTE in n for n in ticket.notes)
    assert raised and raised[0]["id"] == ticket_id and "不满意" in raised[0]["raised"]
    # the phone got our INVITE, from 12345, naming the follow-up
    messages = phone.messages()
    assert f"INVITE sip:{CALLER}@127.0.0.1:{phone.port}" in messages
    assert f"X-Followup-Id: {followup.id}" in messages
    (record,) = [r for r in records if r.dialled == "followup"]
    assert record.caller == CALLER and "survey" in record.path


async def _true(value: bool) -> bool:
    return value


async def test_a_phone_that_presses_1_is_satisfied_and_counted_in_coverage(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    from tests.web_client import hotline_client

    phone = KeyPhone(tmp_path / "phone", "1")
    await phone.start()
    try:
        hotline: Any = await start_hotline(
            sip_extra="rtp_timeout = 120", extra=followups_config(phone.port)
        )
        operator = await hotline_client(hotline, "operator")
        admin = await hotline_client(hotline, "admin")
        base = f"http://127.0.0.1:{hotline.api.port}"
        try:
            answered = [
                await closed_ticket(hotline, operator, f"1380000100{n}", category=category)
                for n, category in enumerate(["供水", "供水", "道路"])
            ]
            # a ticket with no number to call: closed, never followed up
            lost = await closed_ticket(hotline, operator, "", category="道路")
            followups = [await done(hotline, t) for t in answered]
            async with admin.get(f"{base}/api/followups/figures?days=1") as r:
                assert r.status == 200, await r.text()
                figures = await r.json()
            async with operator.get(f"{base}/api/followups/figures") as r:
                assert r.status == 403  # the dashboard's figures are the admins'
        finally:
            await operator.close()
            await admin.close()
        tickets = [await hotline.tickets.get(t) for t in answered]
    finally:
        await phone.stop()
    assert [f.outcome for f in followups] == [Outcome.SATISFIED] * 3
    assert all(t.status == "closed" for t in tickets)  # 满意 leaves it closed
    assert figures["closed"] == 4 and figures["followed_up"] == 3
    assert figures["coverage"] == 0.75
    assert figures["outcomes"]["满意"] == 3 and figures["outcomes"]["no_answer"] == 1
    assert figures["by_category"]["供水"]["coverage"] == 1.0
    assert figures["by_category"]["道路"] == {
        "closed": 2,
        "followed_up": 1,
        "coverage": 0.5,
        "outcomes": {"满意": 1, "基本满意": 0, "不满意": 0, "no_answer": 1},
        "satisfaction": 1.0,
    }
    assert lost not in answered


async def test_a_phone_that_never_answers_is_no_answer_after_the_retries(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    from tests.web_client import hotline_client

    phone = SippUas(
        tmp_path / "phone", free_udp_port(), free_udp_port(even=True), RING_ONLY, trace=True
    )
    await phone.start()
    try:
        hotline: Any = await start_hotline(
            extra=followups_config(phone.port, retry="[0, 1, 1]", ring_timeout=2)
        )
        client = await hotline_client(hotline, "operator")
        try:
            ticket_id = await closed_ticket(hotline, client)
            followup = await done(hotline, ticket_id)
        finally:
            await client.close()
        events = await hotline.followups.queue.events(followup.id)
        ticket = await hotline.tickets.get(ticket_id)
    finally:
        await phone.stop()
    assert followup.outcome is Outcome.NO_ANSWER and followup.attempts == 3
    assert [e.to_state.value for e in events] == [
        "pending",
        *(["dialing", "no_answer"] * 2),
        "dialing",
        "done",
    ]
    assert "no answer after 3 attempts" in events[-1].detail
    assert phone.messages().count(f"INVITE sip:{CALLER}@") == 3
    assert phone.messages().count("CANCEL sip:") == 3
    assert ticket.status == "closed"  # nothing said: the ticket stays as it was


async def test_a_spoken_unsatisfied_and_a_comment(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """The citizen says 不满意 and a comment.  baresip plays a recording (speech-
    like noise bursts timed after the question and after the comment prompt);
    the scripted recogniser hears them as 不满意 and the comment.  The words'
    matching is tested on transcripts (tests/test_followups_survey.py); this
    test checks the call: audio heard at the right time, the answer taken from
    it, the ticket reopened and the comment on it."""
    from ivr.prompts import PromptLibrary
    from tests.web_client import hotline_client

    port = free_udp_port()
    hotline: Any = await start_hotline(
        sip_extra="rtp_timeout = 120",
        extra=followups_config(port),
        script=["不满意", "处理得太慢了"],
    )
    assert hotline.followups is not None and hotline.followups.plan is not None
    library: PromptLibrary = hotline.followups.prompts
    fields = {"district": "西湖区", "address": "文三路", "category": "停水"}
    ticket = await hotline.tickets.create("call-spoken", CALLER)
    matter = matter_sentence(
        hotline.followups.plan.nodes["survey"].matter,
        {k: {"value": v} for k, v in fields.items()},
        ticket.created_at,
        hotline.followups.queue.policy.zone,
    )
    said = len((await library.say(matter)).pcm) / 8000
    question = len(library.get("survey_question").pcm) / 8000
    comment_prompt = len(library.get("survey_comment").pcm) / 8000
    rng = np.random.default_rng(7)

    def speech(seconds: float) -> Any:  # voiced-like: a 180 Hz buzz with noise, loud
        t = np.arange(int(8000 * seconds)) / 8000
        wave = np.sin(2 * np.pi * 180 * t) * 0.5 + rng.normal(0, 0.1, t.size)
        return (wave * 12000).astype(np.int16)

    def quiet(seconds: float) -> Any:
        return np.zeros(int(8000 * seconds), dtype=np.int16)

    answer_at = said + question + 2.5
    comment_at = 1.2 + 1.0 + comment_prompt + 1.5  # after the answer ends and the prompt
    audio = np.concatenate(
        [quiet(answer_at), speech(1.0), quiet(comment_at), speech(2.0), quiet(30)]
    )
    recording = write_wav(tmp_path / "citizen.wav", audio)
    phone = Baresip(tmp_path / "phone", port, play=recording, auto_answer=True, user=CALLER)
    await phone.start()
    try:
        client = await hotline_client(hotline, "operator")
        try:
            await hotline.tickets.apply_prefill(
                ticket.id,
                {k: {"value": v, "evidence": [], "source": "prefill"} for k, v in fields.items()},
                "",
                None,
            )
            base = f"http://127.0.0.1:{hotline.api.port}"
            async with client.post(
                f"{base}/api/tickets/{ticket.id}", json={"status": "closed"}
            ) as r:
                assert r.status == 200
            followup = await done(hotline, ticket.id, timeout=90)
        finally:
            await client.close()
        after = await hotline.tickets.get(ticket.id)
    finally:
        await phone.quit()
    assert followup.outcome is Outcome.UNSATISFIED, followup
    assert followup.comment == "处理得太慢了"
    assert after.status == "open"
    assert f"{COMMENT_NOTE}处理得太慢了" in after.notes
    assert any(RAISED_NOTE in n for n in after.notes)


async def test_an_answer_that_is_neither_key_nor_word_is_asked_again_then_no_answer(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """The phone presses 9 (no answer of the survey), then says nothing when
    asked once more: recorded as no_answer, and the ticket stays closed."""
    from tests.web_client import hotline_client

    phone = KeyPhone(tmp_path / "phone", "9", wait_ms=1500)
    await phone.start()
    try:
        hotline: Any = await start_hotline(extra=followups_config(phone.port))
        client = await hotline_client(hotline, "operator")
        try:
            ticket_id = await closed_ticket(hotline, client)
            followup = await done(hotline, ticket_id)
        finally:
            await client.close()
        events = await hotline.followups.queue.events(followup.id)
        ticket = await hotline.tickets.get(ticket_id)
        records = await hotline.records.list_recent(10)
    finally:
        await phone.stop()
    assert followup.outcome is Outcome.NO_ANSWER and followup.attempts == 1
    assert events[-1].detail == "answered the phone, no answer to the survey (key 9; silence)"
    (record,) = [r for r in records if r.dialled == "followup"]
    assert record.path == ["survey", "goodbye"] and record.digits == "9"
    assert ticket.status == "closed"
