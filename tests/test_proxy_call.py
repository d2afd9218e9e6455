"""亲友代办 through a real call: a relative (baresip, caller ID 13700001234)
says the elderly person's phone number (espeak-ng Mandarin), asks for the
callback to go to that person, and hangs up while waiting. The ticket holds
both persons (the reporter from the caller ID, the beneficiary from speech),
and the callback rings the beneficiary's number, not the relative's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.audio_tools import pad, read_8k, write_wav
from tests.conftest import SHARED, StartHotline
from tests.peers import Baresip, SippUas, free_udp_port
from tests.test_callbacks_live import busy_operator, callbacks_config, until
from tests.test_speech_calls import call_ticket, say_phone_number

DATA = Path(__file__).parent / "data"
RELATIVE = "13700001234"
BENEFICIARY = "13812345678"

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(not (SHARED / "speech").exists(), reason="../shared is not beside"),
]


async def test_proxy_ticket_has_both_persons_and_the_callback_goes_to_the_beneficiary(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    operator = busy_operator(tmp_path)  # rings, never answers: the relative waits
    phone = SippUas(tmp_path / "phone", free_udp_port(), free_udp_port(even=True), trace=True)
    await operator.start()
    await phone.start()
    caller: Baresip | None = None
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=DATA / "dialplans" / "proxy.toml",
            ring_timeout=30.0,
            callbacks=callbacks_config(phone.port),
            engine="auto",  # Whisper hears the beneficiary's number
        )
        said = say_phone_number(tmp_path)
        ask = hotline.prompts.get("proxy_describe").duration
        voice = write_wav(tmp_path / "relative.wav", pad(read_8k(said, tmp_path), ask + 1.5, 30.0))
        caller = Baresip(tmp_path / "caller", free_udp_port(), play=voice, user=RELATIVE)
        await caller.start()
        await caller.dial(f"sip:12345@127.0.0.1:{hotline.endpoint.port}")
        ticket = await call_ticket(hotline, 1)

        async def waiting() -> bool:
            return any(c.record.outcome == "waiting" for c in hotline.calls.values())

        await until(waiting)
        await caller.hangup()  # gives up waiting: a callback is due

        async def beneficiary_rung() -> bool:
            return f"INVITE sip:{BENEFICIARY}@" in phone.messages()

        await until(beneficiary_rung, timeout=30.0)
        assert hotline.callback_queue is not None
        (callback,) = await hotline.callback_queue.list()
    finally:
        if caller is not None:
            await caller.quit()
        await operator.stop()
        await phone.stop()
    fields = ticket["fields"]
    assert fields["proxy"]["value"] is True
    # the reporter: the relative, by caller ID
    assert fields["phone"]["value"] == RELATIVE and fields["phone"]["source"] == "caller_id"
    # the beneficiary: what the relative said, with the words it came from
    beneficiary = fields["beneficiary_phone"]
    assert beneficiary["value"] == BENEFICIARY, fields["beneficiary_said"]
    assert beneficiary["source"] == "speech" and beneficiary["evidence"]
    said_text = fields["beneficiary_said"]["value"]
    evidence = beneficiary["evidence"][0]
    assert said_text[evidence["start"] : evidence["end"]] == evidence["text"]
    assert callback.number == BENEFICIARY and callback.ticket_id == ticket["id"]
    assert f"INVITE sip:{RELATIVE}@" not in phone.messages()
    # the relative's number remembers whom they report for, and whom to call back
    assert hotline.profiles is not None
    profile = await hotline.profiles.get(RELATIVE)
    assert profile is not None
    assert profile.beneficiary.get("phone") == BENEFICIARY
    assert profile.callback_to == "beneficiary"
