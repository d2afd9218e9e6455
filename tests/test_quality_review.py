"""Quality inspection end to end: a real call (baresip caller and baresip
operator) is recorded, drawn once its day has ended, checked; the reviewer,
in Chromium, sees it without the caller's number or the operator's name or
phone, plays it and scores it; the admin's results show the operator's score.
Screenshots: docs/screenshots/quality-review.png, quality-results.png."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.audio_tools import pad, read_8k, write_wav
from tests.conftest import SHARED, StartHotline
from tests.peers import Baresip, free_udp_port
from tests.test_call_path import wait_records
from tests.test_web_console import CHROMIUM, browser, log_in, shot
from tests.web_client import PASSWORD, hotline_client

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
    pytest.mark.skipif(not (SHARED / "speech").exists(), reason="../shared is not beside"),
]
__all__ = ["browser"]  # the fixture, used by name

CALLER = "13700001111"
CLIP = SHARED / "speech" / "aishell1_BAC009S0724W0121.wav"


async def test_a_real_call_is_sampled_reviewed_blind_and_counted(
    start_hotline: StartHotline, tmp_path: Path, browser: Any
) -> None:
    caller_voice = write_wav(tmp_path / "caller.wav", pad(read_8k(CLIP, tmp_path), 16.0, 30.0))
    op_clip = read_8k(SHARED / "speech" / "f5tts_basic_ref_zh.wav", tmp_path)
    operator_voice = write_wav(tmp_path / "operator.wav", pad(op_clip, 1.0, 30.0))
    operator = Baresip(
        tmp_path / "op", free_udp_port(), play=operator_voice, auto_answer=True, user="wang"
    )
    caller = Baresip(tmp_path / "caller", free_udp_port(), play=caller_voice, user=CALLER)
    await operator.start()
    await caller.start()
    try:
        hotline = await start_hotline([operator.uri])
        await caller.dial(f"sip:12345@127.0.0.1:{hotline.endpoint.port}")
        await asyncio.sleep(6.0)
        await caller.keys("0")
        await asyncio.sleep(18.0)
        await caller.hangup()
        (record,) = await wait_records(hotline, 1)
    finally:
        await caller.quit()
        await operator.quit()
    assert record.caller == CALLER and record.operator == operator.uri
    assert hotline.records is not None and hotline.quality is not None
    (conversation,) = await hotline.records.conversations_of(record.call_id)
    assert conversation["seconds"] > 5

    # today is not drawn while it lasts; the first round after it ends draws it
    assert (await hotline.quality.samples.recent()) == []
    done = await hotline.quality.round(time.time() + 86400)
    assert done is not None and done.checked == 1
    (sample,) = await hotline.quality.samples.recent()
    assert sample.call_id == record.call_id and sample.check_state == "done"

    assert hotline.accounts is not None
    await hotline.accounts.add_user("wang", PASSWORD, "operator", sip_uri=operator.uri)
    await hotline.accounts.add_user("zhang", PASSWORD, "reviewer")
    await hotline.accounts.add_user("boss", PASSWORD, "admin")
    base = f"http://127.0.0.1:{hotline.api.port}"
    hidden = [CALLER, CALLER[:3] + "****" + CALLER[-4:], "wang", operator.uri, record.call_id]

    # the reviewer: led to /quality; nothing on the page or in the API names anyone
    page = await log_in(browser, base, "zhang")
    await page.wait_for_url(f"{base}/quality")
    row = page.locator(f'tr[data-sample="{sample.id}"]')
    await row.wait_for()
    assert sample.seat_code in await row.inner_text()
    listed = await page.evaluate("fetch('/api/quality/samples').then(r => r.text())")
    shown = await page.evaluate(f"fetch('/api/quality/samples/{sample.id}').then(r => r.text())")
    for text in hidden:
        assert text not in listed and text not in shown, text
    await row.click()
    await page.locator("#sample:not(.hidden)").wait_for()
    silence = page.locator('tr[data-check="long_silence"]')
    assert await silence.locator(".state").inner_text() in ("通过", "未通过")
    greeting = await page.locator('tr[data-check="greeting"]').inner_text()
    assert "未运行" in greeting and "脚本识别器" in greeting  # never guessed

    # plays the recording: the browser gets the conversation's WAV, its length
    await page.locator("#player").evaluate("a => a.play()")
    await page.wait_for_function(
        "document.getElementById('player').readyState >= 1", timeout=15_000
    )
    duration = await page.locator("#player").evaluate("a => a.duration")
    assert abs(duration - conversation["seconds"]) < 0.5, (duration, conversation["seconds"])

    # scores it: four items, a comment
    for name, value in (("规范用语", 20), ("信息核实", 15), ("解答准确", 20), ("服务态度", 20)):
        await page.fill(f'#items input[name="{name}"]', str(value))
    await page.fill("#comment", "开场白不完整")
    assert await page.locator("#total").inner_text() == "75"
    await page.click("#review button[type=submit]")
    await page.locator("#status", has_text="已评分：75 分").wait_for()
    await row.locator("text=75 分").wait_for()
    for text in hidden:
        assert text not in await page.locator("body").inner_text(), text
    await shot(page, "quality-review")
    await page.close()

    stored = await hotline.quality.samples.get(sample.id)
    assert stored is not None
    assert [(r["reviewer"], r["score"], r["comment"]) for r in stored.reviews] == [
        ("zhang", 75, "开场白不完整")
    ]
    assert hotline.db is not None
    plays = await hotline.db.fetch_all(
        "SELECT user_name, object_id, outcome FROM audit_log WHERE action = 'quality.play'"
    )
    assert [tuple(r) for r in plays][:1] == [("zhang", str(sample.id), "allowed")]

    # the operator may not review (they are the ones reviewed)
    async with await hotline_client(hotline, "operator", "wang") as op:
        async with op.get(f"{base}/api/quality/samples") as response:
            assert response.status == 403
        async with op.get(f"{base}/api/quality/samples/{sample.id}/recording.wav") as response:
            assert response.status == 403

    # bad scores are refused saying what is wrong, and nothing is stored
    async with await hotline_client(hotline, "reviewer", "zhang") as reviewer:
        url = f"{base}/api/quality/samples/{sample.id}/review"
        for body, status, said in (
            ({"items": {"规范用语": 30}}, 400, "规范用语"),
            (
                {"items": dict.fromkeys(("规范用语", "信息核实", "解答准确", "服务态度"), 26)},
                400,
                "26",
            ),
            ([1, 2], 400, "items"),
        ):
            async with reviewer.post(url, json=body) as response:
                assert response.status == status and said in (await response.json())["error"]
        async with reviewer.post(f"{base}/api/quality/samples/999/review", json={}) as response:
            assert response.status == 404
        async with reviewer.get(f"{base}/api/quality/samples/x1") as response:
            assert response.status == 400 and "not a number" in (await response.json())["error"]
    again = await hotline.quality.samples.get(sample.id)
    assert again is not None and [r["score"] for r in again.reviews] == [75]

    # the admin: results per operator, by name
    page = await log_in(browser, base, "boss")
    await page.wait_for_url(f"{base}/admin")
    await page.goto(f"{base}/admin/quality")
    result = page.locator(f'tr[data-operator="{operator.uri}"]')
    await result.wait_for()
    cells = await result.locator("td").all_inner_texts()
    assert cells[0] == f"wang（{operator.uri}）"
    assert cells[1:5] == ["1", "1", "1", "75"]
    await shot(page, "quality-results")
    data = json.loads(
        await page.evaluate("fetch('/api/admin/quality/results').then(r => r.text())")
    )
    (mine,) = data["operators"]
    assert mine["average_score"] == 75 and mine["checks"]["greeting"]["ran"] == 0
    await page.close()


async def test_the_word_checks_run_on_a_real_call_heard_by_whisper(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """The same path with Whisper loaded (as in production): the operator's
    phone says the greeting, reads the caller's number back after the caller
    has spoken, and closes; the drawn call's word checks are run on what the
    recording holds, and pass."""
    from tests.quality_audio import f4, plain

    number = "13812345678"
    # the conversation's timeline (its recording starts about when the operator's
    # phone answers, ~10.6 s into the caller's call): greeting 1-10.6 s, the caller
    # 12-15 s, the number read back 16.5-29.7 s, the closing 30.5-36.4 s, hang-up ~39 s
    caller_voice = write_wav(tmp_path / "caller.wav", pad(read_8k(CLIP, tmp_path), 22.6, 40.0))
    greeting = plain(tmp_path, "您好，这里是12345热线。")
    read_back = plain(tmp_path, "您的电话是幺三八幺二三四五六七八，对吗？")
    closing = f4(tmp_path, "祝您生活愉快，再见。")

    said = np.zeros(int(8000 * 40.0), np.int16)
    for start, phrase in ((1.0, greeting), (16.5, read_back), (30.5, closing)):
        said[int(8000 * start) : int(8000 * start) + len(phrase)] = phrase
    operator_voice = write_wav(tmp_path / "operator.wav", pad(said, 0.0, 30.0))
    operator = Baresip(
        tmp_path / "op", free_udp_port(), play=operator_voice, auto_answer=True, user="wang"
    )
    caller = Baresip(tmp_path / "caller", free_udp_port(), play=caller_voice, user=number)
    await operator.start()
    await caller.start()
    try:
        hotline = await start_hotline([operator.uri], engine="auto")
        await caller.dial(f"sip:12345@127.0.0.1:{hotline.endpoint.port}")
        await asyncio.sleep(6.0)
        await caller.keys("0")
        await asyncio.sleep(44.0)
        await caller.hangup()
        (record,) = await wait_records(hotline, 1)
    finally:
        await caller.quit()
        await operator.quit()
    assert record.caller == number and record.operator == operator.uri
    assert hotline.quality is not None
    done = await hotline.quality.round(time.time() + 86400)
    assert done is not None and done.checked == 1
    (sample,) = await hotline.quality.samples.recent()
    assert sample.check_state == "done", sample.checks
    states = {n: c["state"] for n, c in sample.checks.items() if n != "transcript"}
    assert states["greeting"] == states["closing"] == states["phone_confirmed"] == "passed", (
        sample.checks
    )
    assert states["long_silence"] == states["talk_over"] == "passed", sample.checks
    assert states["end_sentiment"] != "not_run", sample.checks
