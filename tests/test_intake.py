"""The intake on its own, with real parts: a real SQLite file, Whisper base
really loaded, the real prefill: a cut (too long) utterance is kept, flagged
and transcribed; a ticket update reaches the event stream."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import soxr

from ivr.logs import CallLog
from ivr.prefill import Prefiller, load_gazetteer, load_taxonomy
from ivr.speech.transcriber import Transcriber
from ivr.speech.utterance import FRAME, ListenSettings, UtteranceCapture, UtteranceEnd
from ivr.store import open_store
from ivr.tickets import TicketStore
from ivr.tickets.events import TicketEvents
from ivr.tickets.intake import Intake
from ivr.tickets.work_orders import WorkOrderOutbox
from tests.conftest import ROOT, SHARED

SPEECH = SHARED / "speech"
LOG = logging.getLogger("test.intake")

pytestmark = pytest.mark.skipif(not SPEECH.exists(), reason="../shared/speech is missing")


@pytest.fixture(scope="module")
def transcriber() -> Any:
    loop = asyncio.new_event_loop()
    try:
        t = loop.run_until_complete(
            Transcriber.load("whisper", ROOT / "asr_models", workers=1, threads=2)
        )
    finally:
        loop.close()
    yield t
    t.close()


async def test_a_cut_utterance_is_kept_flagged_and_transcribed(
    tmp_path: Path, transcriber: Transcriber
) -> None:
    db = await open_store(tmp_path / "ivr.sqlite3")
    tickets = TicketStore(db)
    events = TicketEvents()
    intake = Intake(
        tickets=tickets,
        prefiller=Prefiller(load_taxonomy(), load_gazetteer(ROOT / "gazetteer.toml")),
        events=events,
        work_orders=WorkOrderOutbox(db, url="", timeout=1, retry_delays=(1,), log=LOG),
        recordings_dir=tmp_path / "recordings",
        api_base="",
        log=LOG,
    )
    intake.transcriber = transcriber
    call = intake.for_call("call-cut", "13800138000", CallLog(LOG, {"call_id": "call-cut"}))

    audio, rate = soundfile.read(str(SPEECH / "f5tts_basic_ref_zh.wav"), dtype="float32")
    pcm = (soxr.resample(audio, rate, 8000) * 32767).astype(np.int16)
    capture = UtteranceCapture(ListenSettings(max_seconds=3.0))
    for start in range(0, len(pcm) - FRAME + 1, FRAME):
        capture.feed(pcm[start : start + FRAME])
    utterance = await capture.done
    assert utterance.end is UtteranceEnd.MAX_LENGTH

    async with events.subscribe() as queue:
        await call.describe(utterance)
        assert await call.settled(60)
        kinds = []
        while not queue.empty():
            event = queue.get_nowait()
            assert event is not None
            kinds.append(event.kind)
    assert "recorded" in kinds and kinds[-1] == "prefilled"

    (ticket,) = await tickets.for_call("call-cut")
    (recording,) = ticket.recordings
    assert recording.ending == "max_length" and 2.9 <= recording.seconds <= 3.3
    kept, kept_rate = soundfile.read(recording.path, dtype="int16")
    assert kept_rate == 8000 and len(kept) == len(utterance.pcm)
    assert any("cut at 3 s" in note for note in ticket.notes)
    assert recording.transcript and recording.transcript[0] == "对"  # 对，这就是我…
    assert ticket.transcript == recording.transcript
    assert ticket.value("phone") == "13800138000"  # nothing spoken: the caller ID
    assert ticket.fields["phone"]["source"] == "caller_id"
    await db.close()
