"""Bad input for follow-ups (issue 14 item 6): a spoken answer that is neither a
key nor an answer word. A baresip phone speaks at the moment the answer is
asked for, twice; the scripted recogniser hears words that are no answer (喂，
你说什么 / 我听不清楚): asked once more, then recorded as no answer, and the
ticket stays closed. (A key that is no answer, then silence: test_followups_live.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ivr.followups import Outcome
from ivr.followups.survey import matter_sentence
from tests.audio_tools import write_wav
from tests.conftest import StartHotline
from tests.peers import Baresip, free_udp_port
from tests.test_followups_live import CALLER, done, followups_config

pytestmark = pytest.mark.peers


async def test_words_that_are_no_answer_are_asked_again_then_recorded_as_no_answer(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    from ivr.prompts import PromptLibrary
    from tests.web_client import hotline_client

    port = free_udp_port()
    hotline: Any = await start_hotline(
        sip_extra="rtp_timeout = 120",
        extra=followups_config(port),
        script=["喂，你说什么", "我听不清楚"],
    )
    assert hotline.followups is not None and hotline.followups.plan is not None
    library: PromptLibrary = hotline.followups.prompts
    fields = {"district": "西湖区", "address": "文三路", "category": "停水"}
    ticket = await hotline.tickets.create("call-unclear", CALLER)
    matter = matter_sentence(
        hotline.followups.plan.nodes["survey"].matter,
        {k: {"value": v} for k, v in fields.items()},
        ticket.created_at,
        hotline.followups.queue.policy.zone,
    )
    said = len((await library.say(matter)).pcm) / 8000
    question = len(library.get("survey_question").pcm) / 8000
    again = len(library.get("survey_again").pcm) / 8000
    rng = np.random.default_rng(11)

    def speech(seconds: float) -> Any:  # voiced-like: a 180 Hz buzz with noise, loud
        t = np.arange(int(8000 * seconds)) / 8000
        wave = np.sin(2 * np.pi * 180 * t) * 0.5 + rng.normal(0, 0.1, t.size)
        return (wave * 12000).astype(np.int16)

    def quiet(seconds: float) -> Any:
        return np.zeros(int(8000 * seconds), dtype=np.int16)

    first_at = said + question + 2.5
    second_at = hotline.settings.speech.end_silence + again + question + 2.0
    audio = np.concatenate([quiet(first_at), speech(1.0), quiet(second_at), speech(1.0), quiet(40)])
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
        events = await hotline.followups.queue.events(followup.id)
        after = await hotline.tickets.get(ticket.id)
        records = await hotline.records.list_recent(10)
    finally:
        await phone.quit()
    assert followup.outcome is Outcome.NO_ANSWER and followup.attempts == 1, followup
    assert events[-1].detail == (
        "answered the phone, no answer to the survey (said '喂，你说什么'; said '我听不清楚')"
    )
    (record,) = [r for r in records if r.dialled == "followup"]
    assert record.path == ["survey", "goodbye"]
    assert after.status == "closed"  # nothing said that reopens it
    assert followup.comment in (None, "")
