"""The web console's JSON API on a real hotline (real SQLite, real HTTP, real
log-in): ticket search and filters, the CSV export, the dashboard's counts,
duplicates, ticket edits, prompts (listen, upload a real espeak-ng recording,
back to synthesis) and the operator's live queue and availability."""

from __future__ import annotations

import csv
import io
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf
import soxr

from ivr.prefill import Prefiller, load_gazetteer, load_taxonomy
from ivr.server import Hotline
from ivr.tickets import Ticket
from ivr.tickets.intake import _fields
from ivr.tickets.search import CSV_FIELDS
from tests.conftest import ROOT, StartHotline
from tests.web_client import hotline_client

OPERATORS = ["sip:op1@127.0.0.1:9", "sip:op2@127.0.0.1:9"]
PLAN = """
[plan]
name = "console api test"
start = "welcome"

[prompts]
welcome = "您好，欢迎致电幺二三四五政务服务便民热线。"
hold = "请稍候。"
sorry = "再见。"

[nodes.welcome]
type = "play"
prompt = "welcome"
next = "operator"

[nodes.operator]
type = "transfer"
queue = "general"
hold_prompt = "hold"
on_no_operator = "sorry"

[nodes.sorry]
type = "hangup"
prompt = "sorry"
"""
DAY = 86400.0

# what callers say (the real prefill makes the fields)
WATER = "我叫王芳，住在西湖区文三路90号，家里停水两天了，电话13800138000"
WATER_AGAIN = "我是李明，西湖区文三路90号，小区停水了，家里一直没有水"
NOISE = "我叫张伟，拱墅区莫干山路100号，楼下餐馆噪音太大，晚上吵得睡不着"
LAMP = "上城区解放路8号路灯坏了，晚上很黑，老人摔倒了"
RUBBISH = "我叫赵敏，滨江区江南大道3号，垃圾没人清运，臭得很"


def espeak_recording(directory: Path, *, gain: float = 0.8) -> bytes:
    """A Cantonese prompt said by espeak-ng, as a voice talent's studio file:
    44.1 kHz stereo 16-bit WAV (``gain`` 8 overdrives it: clipped)."""
    raw = directory / "espeak-yue.wav"
    if not raw.exists():
        subprocess.run(
            [
                "espeak-ng",
                "-v",
                "yue",
                "-w",
                str(raw),
                "您好，欢迎致电幺二三四五政务服务便民热线。",
            ],
            check=True,
        )
    data, rate = sf.read(str(raw), dtype="float64")
    mono = np.asarray(soxr.resample(data * gain, rate, 44100, quality="VHQ"))
    stereo = np.clip(np.stack([mono, mono * 0.9], axis=1), -1.0, 32767 / 32768)
    out = io.BytesIO()
    sf.write(out, stereo, 44100, format="WAV", subtype="PCM_16")
    return out.getvalue()


def upload(data: bytes, name: str = "welcome.wav") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="audio/wav")
    return form


async def console_hotline(start_hotline: StartHotline, tmp_path: Path, **kwargs: Any) -> Hotline:
    """A hotline on a small plan (no speech model), its voices under tmp_path."""
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    return await start_hotline(
        operators=OPERATORS, dialplan=plan, voices_dir=tmp_path / "voices", **kwargs
    )


def base(hotline: Hotline) -> str:
    return f"http://127.0.0.1:{hotline.api.port}"


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def post_json(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as response:
        return response.status, await response.json()


async def ticket(
    hotline: Hotline, said: str, caller: str = "13900000000", age: float = 0
) -> Ticket:
    """A ticket as the IVR makes one: created for a call, prefilled from what
    was said; ``age`` seconds old."""
    assert hotline.tickets is not None and hotline.db is not None
    prefiller = Prefiller(load_taxonomy(), load_gazetteer(ROOT / "gazetteer.toml"))
    made = await hotline.tickets.create(f"call-{time.monotonic_ns()}", caller)
    fields = _fields(prefiller.prefill(said, caller_id=caller))
    await hotline.tickets.apply_prefill(made.id, fields, said, None)
    if age:
        await hotline.db.execute(
            "UPDATE tickets SET created_at = created_at - ? WHERE id = ?", (age, made.id)
        )
    got = await hotline.tickets.get(made.id)
    assert got is not None
    return got


def ids(body: dict[str, Any]) -> set[int]:
    return {t["id"] for t in body["tickets"]}


async def test_ticket_search_filters(start_hotline: StartHotline, tmp_path: Path) -> None:
    hotline = await console_hotline(start_hotline, tmp_path)
    water = await ticket(hotline, WATER)
    noise = await ticket(hotline, NOISE)
    lamp = await ticket(hotline, LAMP)
    old = await ticket(hotline, RUBBISH, age=10 * DAY)
    assert (water.value("category"), water.value("district"), water.value("urgency")) == (
        "供水",
        "西湖区",
        "较急",
    )
    assert (noise.value("category"), noise.value("urgency")) == ("噪音扰民", "一般")
    assert lamp.value("district") == "上城区" and old.value("district") == "滨江区"
    today = time.strftime("%Y-%m-%d")
    ten_days_ago = time.strftime("%Y-%m-%d", time.localtime(time.time() - 10 * DAY))
    url = f"{base(hotline)}/api/tickets"
    async with await hotline_client(hotline, "operator") as http:
        status, body = await get_json(http, url)
        assert status == 200
        assert [t["id"] for t in body["tickets"]] == [lamp.id, noise.id, water.id, old.id]
        assert body["tickets"][-1]["summary"]  # a line for the list
        for query, expected in (
            ("category=供水", {water.id}),
            ("category=噪音扰民", {noise.id}),
            ("district=上城区", {lamp.id}),
            ("district=滨江区", {old.id}),
            ("urgency=较急", {water.id, lamp.id}),
            ("urgency=一般", {noise.id, old.id}),
            ("q=停水", {water.id}),
            ("q=莫干山路", {noise.id}),  # a field value (and the transcript)
            ("q=13800138000", {water.id}),
            ("q=没有这句话", set()),
            # the JSON around the values is not searched
            ("q=evidence", set()),
            ("q=source", set()),
            (f"from={today}", {water.id, noise.id, lamp.id}),
            (f"to={ten_days_ago}", {old.id}),
            (f"from={ten_days_ago}&to={ten_days_ago}", {old.id}),
            (f"from={today}&district=西湖区&urgency=较急", {water.id}),
            ("category=供水&district=拱墅区", set()),
            ("status=open", {water.id, noise.id, lamp.id, old.id}),
        ):
            status, body = await get_json(http, f"{url}?{query}")
            assert status == 200, (query, body)
            assert ids(body) == expected, query
        status, body = await get_json(http, f"{url}?limit=2")
        assert [t["id"] for t in body["tickets"]] == [lamp.id, noise.id]
        for query, named in (
            ("from=2026-13-01", "from="),
            ("to=yesterday", "to="),
            ("limit=-1", "limit="),
            ("limit=²", "limit="),  # a digit to str.isdigit, not to int()
        ):
            status, body = await get_json(http, f"{url}?{query}")
            assert status == 400, query
            assert body["error"].startswith(named), body


async def test_csv_export_is_utf8_with_bom_and_defuses_formulas(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await console_hotline(start_hotline, tmp_path)
    water = await ticket(hotline, WATER)
    noise = await ticket(hotline, NOISE, caller='=HYPERLINK("http://evil.example","x")')
    async with await hotline_client(hotline, "admin") as http:
        status, _ = await post_json(
            http,
            f"{base(hotline)}/api/tickets/{water.id}",
            {"fields": {"name": "=1+2", "address": "@SUM(A1)", "sentiment": "-3+3"}},
        )
        assert status == 200
        async with http.get(f"{base(hotline)}/api/tickets.csv") as response:
            assert response.status == 200
            assert response.content_type == "text/csv" and response.charset == "utf-8"
            assert "attachment" in response.headers["Content-Disposition"]
            raw = await response.read()
        async with http.get(f"{base(hotline)}/api/tickets.csv?category=噪音扰民") as response:
            only_noise = list(csv.reader(io.StringIO((await response.read()).decode("utf-8-sig"))))
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0] == ["id", "created_at", "status", "caller", *CSV_FIELDS, "transcript"]
    assert len(rows) == 3  # the header and one row per ticket
    by_id = {int(r[0]): dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert set(by_id) == {water.id, noise.id}
    edited = by_id[water.id]
    assert edited["name"] == "'=1+2"
    assert edited["address"] == "'@SUM(A1)"
    assert edited["sentiment"] == "'-3+3"
    assert edited["phone"] == "13800138000" and edited["district"] == "西湖区"
    assert edited["category"] == "供水" and edited["transcript"] == WATER
    assert edited["created_at"].startswith(time.strftime("%Y-%m-%d"))
    spoofed = by_id[noise.id]
    assert spoofed["caller"] == '\'=HYPERLINK("http://evil.example","x")'  # caller ID is spoofable
    assert spoofed["name"] == "张伟" and spoofed["address"] == "拱墅区莫干山路100号"
    assert [int(r[0]) for r in only_noise[1:]] == [noise.id]


async def test_stats_count_by_district_and_category(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await console_hotline(start_hotline, tmp_path)
    await ticket(hotline, WATER)
    await ticket(hotline, WATER_AGAIN, age=2 * DAY)
    await ticket(hotline, NOISE)
    await ticket(hotline, RUBBISH, age=10 * DAY)  # outside the last 7 days
    async with await hotline_client(hotline, "admin") as http:
        status, week = await get_json(http, f"{base(hotline)}/api/stats?days=7")
        assert status == 200
        status, month = await get_json(http, f"{base(hotline)}/api/stats?days=30")
        assert status == 200
        for days in ("0", "367", "x", "-1", "²", "７"):
            status, body = await get_json(http, f"{base(hotline)}/api/stats?days={days}")
            assert status == 400 and "days" in body["error"], days
    assert week["days"] == 7 and week["total"] == 3
    assert week["by_district"] == {"西湖区": 2, "拱墅区": 1}
    assert week["by_category"] == {"供水": 2, "噪音扰民": 1}
    assert list(week["by_district"]) == ["西湖区", "拱墅区"]  # most first
    today = time.strftime("%Y-%m-%d")
    assert week["by_day"][today] == {"供水": 1, "噪音扰民": 1}
    assert sum(sum(d.values()) for d in week["by_day"].values()) == 3
    assert month["total"] == 4 and month["by_district"]["滨江区"] == 1
    assert month["by_category"]["环境卫生"] == 1


async def test_duplicates_are_proposed_and_linked(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await console_hotline(start_hotline, tmp_path)
    first = await ticket(hotline, WATER)
    unrelated = await ticket(hotline, NOISE)
    second = await ticket(hotline, WATER_AGAIN)
    url = f"{base(hotline)}/api/tickets"
    async with await hotline_client(hotline, "operator", name="op-wang") as http:
        status, body = await get_json(http, f"{url}/{second.id}/duplicates")
        assert status == 200
        (proposed,) = body["duplicates"]
        assert proposed["id"] == first.id
        assert "same address" in proposed["why"] and "same category" in proposed["why"]
        assert any(w.startswith("similar words") for w in proposed["why"])
        assert 0.7 < proposed["score"] <= 1.0 and proposed["status"] == "open"
        status, body = await get_json(http, f"{url}/{unrelated.id}/duplicates")
        assert status == 200 and body["duplicates"] == []
        status, body = await get_json(http, f"{url}/999/duplicates")
        assert status == 404

        for bad in ({"of": second.id}, {"of": "1"}, {"of": True}, {}):
            status, _ = await post_json(http, f"{url}/{second.id}/duplicate", bad)
            assert status == 400, bad
        status, body = await post_json(http, f"{url}/{second.id}/duplicate", {"of": 999})
        assert status == 404
        status, marked = await post_json(http, f"{url}/{second.id}/duplicate", {"of": first.id})
        assert status == 200, marked
        assert marked["status"] == "duplicate"
        assert marked["fields"]["duplicate_of"]["value"] == str(first.id)
        status, history = await get_json(http, f"{url}/{second.id}/history")
        assert status == 200
        changes = {(h["who"], h["what"], h["new_value"]) for h in history["history"]}
        assert ("op-wang", "status", "duplicate") in changes
        assert ("op-wang", "field:duplicate_of", str(first.id)) in changes
        status, other_history = await get_json(http, f"{url}/{first.id}/history")
        assert ("op-wang", "note", f"ticket {second.id} linked as a duplicate") in {
            (h["who"], h["what"], h["new_value"]) for h in other_history["history"]
        }
        # a ticket marked duplicate is no longer proposed for the next report
        third = await ticket(hotline, WATER_AGAIN)
        status, body = await get_json(http, f"{url}/{third.id}/duplicates")
        assert [d["id"] for d in body["duplicates"]] == [first.id]
    assert hotline.tickets is not None
    linked = await hotline.tickets.get(first.id)
    assert linked is not None and linked.notes == [f"ticket {second.id} linked as a duplicate"]
    assert linked.status == "open"


async def test_ticket_edits_are_validated(start_hotline: StartHotline, tmp_path: Path) -> None:
    hotline = await console_hotline(start_hotline, tmp_path)
    made = await ticket(hotline, NOISE)
    url = f"{base(hotline)}/api/tickets/{made.id}"
    async with await hotline_client(hotline, "operator") as http:
        for body, status_wanted, words in (
            ({"status": "gone"}, 400, "status must be one of"),
            ({"fields": {"../etc": "x"}}, 400, "only a-z"),
            ({"fields": {"Name": "x"}}, 400, "only a-z"),
            ({"fields": {"status": "gone"}}, 400, "status"),
            ({"fields": {"name": 3}}, 400, "want text"),
            ({"fields": {"name": "x" * 2001}}, 400, "2000"),
            ({"fields": ["name"]}, 400, '"fields"'),
            ({}, 400, "nothing to change"),
        ):
            status, got = await post_json(http, url, body)
            assert status == status_wanted and words in got["error"], (body, got)
        async with http.post(url, data=b"not json", headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 400
        status, got = await post_json(
            http, f"{base(hotline)}/api/tickets/999", {"fields": {"name": "x"}}
        )
        assert status == 404 and "999" in got["error"]
        for bad_id in ("abc", "²", "1" * 19):
            status, got = await post_json(
                http, f"{base(hotline)}/api/tickets/{bad_id}", {"status": "open"}
            )
            assert status == 400 and "is not a number" in got["error"], bad_id
            status, got = await get_json(http, f"{base(hotline)}/api/tickets/{bad_id}/duplicates")
            assert status == 400, bad_id
        status, got = await post_json(
            http, url, {"fields": {"name": "张卫"}, "status": "in_progress"}
        )
        assert status == 200
    assert got["status"] == "in_progress"
    assert got["fields"]["name"] == {"value": "张卫", "evidence": [], "source": "operator"}
    assert hotline.tickets is not None
    stored = await hotline.tickets.get(made.id)
    assert stored is not None and stored.value("name") == "张卫"
    assert stored.value("category") == "噪音扰民"  # untouched fields stay


async def test_prompts_listen_upload_and_synthesise(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await console_hotline(start_hotline, tmp_path)
    voices = tmp_path / "voices"
    url = f"{base(hotline)}/api/admin/prompts"
    studio = espeak_recording(tmp_path)
    assert sf.info(io.BytesIO(studio)).samplerate == 44100
    assert sf.info(io.BytesIO(studio)).channels == 2
    assert hotline.prompts.source("welcome", "yue") == "espeak-ng:yue"
    async with await hotline_client(hotline, "admin") as http:
        status, body = await get_json(http, url)
        assert status == 200
        assert body["dialects"] == ["mandarin", "yue"]
        table = {(r["dialect"], r["key"]): r for r in body["prompts"]}
        assert {d for d, _ in table} == {"mandarin", "yue"}
        assert {"welcome", "hold", "sorry"} <= {k for _, k in table}
        assert table["yue", "welcome"]["state"] == "synthesised"
        assert table["mandarin", "welcome"]["state"] == "synthesised"
        assert hotline.plan is not None  # each prompt with its words
        assert table["mandarin", "welcome"]["text"] == hotline.plan.prompts["welcome"]
        assert table["yue", "welcome"]["text"]

        async with http.get(f"{url}/yue/welcome.wav") as response:
            assert response.status == 200 and response.content_type == "audio/wav"
            audio, rate = sf.read(io.BytesIO(await response.read()), dtype="int16")
        assert rate == 8000 and audio.ndim == 1 and len(audio) > 0.5 * rate
        assert np.abs(audio).max() > 1000  # speech, not silence

        async with http.post(f"{url}/yue/welcome", data=upload(studio)) as response:
            assert response.status == 200, await response.text()
            accepted = await response.json()
        assert accepted["accepted"] is True
        assert "stereo -> mono" in accepted["changes"]
        assert "44100 Hz -> 8000 Hz" in accepted["changes"]
        installed = voices / "yue" / "welcome.wav"
        assert accepted["path"] == str(installed)
        info = sf.info(str(installed))
        assert (info.samplerate, info.channels) == (8000, 1) and info.duration > 1.0
        assert hotline.prompts.source("welcome", "yue") == str(installed)  # rebuilt
        assert hotline.prompts.source("welcome", "mandarin") == "espeak-ng:cmn-latn-pinyin"
        status, body = await get_json(http, url)
        table = {(r["dialect"], r["key"]): r for r in body["prompts"]}
        assert table["yue", "welcome"]["state"] == "recorded"
        assert table["yue", "welcome"]["path"] == str(installed)
        assert table["yue", "hold"]["state"] == "synthesised"
        async with http.get(f"{url}/yue/welcome.wav") as response:
            heard, _ = sf.read(io.BytesIO(await response.read()), dtype="int16")
        recorded = sf.read(str(installed), dtype="int16")[0]
        assert heard.shape == recorded.shape  # the recording, not espeak-ng (to rounding)
        assert np.abs(heard.astype(np.int32) - recorded).max() <= 2

        # a clipped take is refused and the good recording stays
        before = installed.read_bytes()
        loud = espeak_recording(tmp_path, gain=8.0)
        async with http.post(f"{url}/yue/welcome", data=upload(loud)) as response:
            assert response.status == 422
            refused = await response.json()
        assert refused["accepted"] is False
        assert any("clipped" in r for r in refused["reasons"]), refused
        assert installed.read_bytes() == before
        async with http.post(f"{url}/yue/welcome", data=upload(b"RIFF nonsense")) as response:
            assert response.status == 422
            assert "not an audio file" in (await response.json())["reasons"][0]

        status, body = await post_json(http, f"{url}/yue/welcome/synthesise", None)
        assert status == 200 and body["synthesised"] is True
        (aside,) = body["set_aside"]
        assert aside.startswith("welcome.") and aside.endswith(".wav")
        assert not installed.exists()
        assert (voices / "yue" / ".replaced" / aside).read_bytes() == before
        assert hotline.prompts.source("welcome", "yue") == "espeak-ng:yue"
        status, body = await get_json(http, url)
        table = {(r["dialect"], r["key"]): r for r in body["prompts"]}
        assert table["yue", "welcome"]["state"] == "synthesised"


async def test_live_queue_and_availability(start_hotline: StartHotline, tmp_path: Path) -> None:
    hotline = await console_hotline(start_hotline, tmp_path)
    op1 = OPERATORS[0]
    async with await hotline_client(hotline, "operator", name="op-one", sip_uri=op1) as http:
        status, body = await get_json(http, f"{base(hotline)}/api/console/queue")
        assert status == 200
        (queue,) = body["queues"]
        assert queue["name"] == "general" and queue["waiting"] == []
        assert [(o["uri"], o["state"]) for o in queue["operators"]] == [
            (OPERATORS[0], "free"),
            (OPERATORS[1], "free"),
        ]
        status, me = await get_json(http, f"{base(hotline)}/api/console/me")
        assert status == 200
        assert (me["sip_uri"], me["operator"], me["ready"], me["call"]) == (op1, True, True, None)

        url = f"{base(hotline)}/api/console/availability"
        status, body = await post_json(http, url, {"ready": False})
        assert status == 200 and body == {"ready": False}
        (seat,) = hotline.desk.operators_named(op1)
        assert seat.paused and seat.state.value == "paused"
        assert not hotline.desk.operators_named(OPERATORS[1])[0].paused
        status, body = await get_json(http, f"{base(hotline)}/api/console/queue")
        states = {o["uri"]: o["state"] for o in body["queues"][0]["operators"]}
        assert states == {OPERATORS[0]: "paused", OPERATORS[1]: "free"}
        status, me = await get_json(http, f"{base(hotline)}/api/console/me")
        assert me["ready"] is False and me["state"] == "paused"

        for bad in ({"ready": "no"}, {"ready": 0}, {}):
            status, _ = await post_json(http, url, bad)
            assert status == 400, bad
        assert hotline.desk.operators_named(op1)[0].paused

        status, body = await post_json(http, url, {"ready": True})
        assert status == 200 and body == {"ready": True}
        (seat,) = hotline.desk.operators_named(op1)
        assert not seat.paused and seat.state.value == "free"

    async with await hotline_client(hotline, "operator", name="no-phone") as http:
        status, body = await post_json(
            http, f"{base(hotline)}/api/console/availability", {"ready": False}
        )
        assert status == 409 and "no-phone" in body["error"]
    elsewhere = "sip:op9@127.0.0.1:9"  # a phone, but in no queue
    async with await hotline_client(hotline, "operator", name="op-nine", sip_uri=elsewhere) as http:
        status, body = await post_json(
            http, f"{base(hotline)}/api/console/availability", {"ready": False}
        )
        assert status == 409
    assert all(not op.paused for uri in OPERATORS for op in hotline.desk.operators_named(uri))


@pytest.mark.parametrize("role", ["operator", "admin"])
async def test_console_me_says_who_is_logged_in(
    start_hotline: StartHotline, tmp_path: Path, role: str
) -> None:
    hotline = await console_hotline(start_hotline, tmp_path)
    async with await hotline_client(hotline, role) as http:
        status, me = await get_json(http, f"{base(hotline)}/api/console/me")
    assert status == 200
    assert me["user"] == {"name": f"test-{role}", "role": role}
    assert (me["sip_uri"], me["operator"], me["ready"], me["ticket"]) == (None, False, False, None)


async def test_the_console_and_voices_status_count_the_same_prompts(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """`ivr voices status` and the admin page list the same prompt keys: the
    callback greeting (from config.toml, not the plan) and a prompt that
    exists only as a recording are in both (they were 65 and 66 before)."""
    import asyncio
    import re
    import sys

    plan = tmp_path / "plan.toml"
    plan.write_text(
        PLAN.replace('type = "hangup"\nprompt = "sorry"', 'type = "hangup"\nprompt = "farewell"')
    )
    (tmp_path / "voices" / "mandarin").mkdir(parents=True)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.float32)
    sf.write(str(tmp_path / "voices" / "mandarin" / "farewell.wav"), tone, 8000, subtype="PCM_16")
    hotline = await start_hotline(
        operators=OPERATORS, dialplan=plan, voices_dir=tmp_path / "voices"
    )
    async with await hotline_client(hotline, "admin") as http:
        status, body = await get_json(http, f"{base(hotline)}/api/admin/prompts")
    assert status == 200
    web = {d: {r["key"] for r in body["prompts"] if r["dialect"] == d} for d in body["dialects"]}
    assert {"callback_greeting", "farewell", "welcome", "hold", "sorry"} <= web["mandarin"]

    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "ivr.cli",
            "voices",
            "status",
            "--config",
            str(tmp_path / "config.toml"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    cli: dict[str, set[str]] = {}
    for line in done.stdout.splitlines():
        row = re.match(r"^(\w+)\s+(\S+)\s+(recorded|synthesised|missing)\s", line)
        if row:
            cli.setdefault(row[1], set()).add(row[2])
    assert cli == web
    for dialect, keys in web.items():
        summary = re.search(
            rf"^{dialect}: (\d+) recorded, (\d+) synthesised, (\d+) missing$", done.stdout, re.M
        )
        assert summary and sum(int(n) for n in summary.groups()) == len(keys), done.stdout


def readme_curls() -> list[str]:
    """The README's curl commands, each joined onto one line."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.startswith("    curl ")]


async def test_the_readme_curl_commands_log_in_and_read(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """What the README tells a new user to type: log in with curl into a
    cookie jar, then read a ticket and the callbacks with it (without the
    jar the API says 401), and write with the CSRF token from the log-in."""
    import asyncio
    import json
    import shlex

    from tests.web_client import PASSWORD

    hotline = await console_hotline(start_hotline, tmp_path)
    assert hotline.accounts is not None
    await hotline.accounts.add_user("admin", PASSWORD, "admin")
    made = await ticket(hotline, WATER)
    port = str(hotline.api.port)

    async def curl(command: str, *more: str) -> tuple[str, str]:
        """(HTTP status, body) of one README command, on this hotline's port."""
        line = command.replace("8080", port).replace('"..."', json.dumps(PASSWORD))
        args = shlex.split(line, comments=True)
        done = await asyncio.to_thread(
            subprocess.run,
            [*args, "-s", "-w", "\n%{http_code}", "-m", "10", *more],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=30,
        )
        body, _, status = done.stdout.rpartition("\n")
        return status, body

    curls = readme_curls()
    (log_in,) = [c for c in curls if "/api/login" in c]
    read_ticket = next(c for c in curls if "/api/tickets/1" in c)
    read_callbacks = next(c for c in curls if c.split("#")[0].rstrip().endswith("/api/callbacks"))

    status, _ = await curl(read_ticket.replace("-b jar ", ""))
    assert status == "401"  # what the README's reader met before
    status, body = await curl(log_in)
    assert status == "200", body
    csrf = json.loads(body)["csrf"]
    assert (tmp_path / "jar").exists()
    status, body = await curl(read_ticket)
    assert status == "200", body
    assert json.loads(body)["id"] == made.id == 1
    status, body = await curl(read_callbacks)
    assert status == "200", body
    write = f"curl -b jar -X POST http://127.0.0.1:{port}/api/callbacks/999/retry"
    status, _ = await curl(write)
    assert status == "403"  # no CSRF token
    status, body = await curl(write, "-H", f"X-CSRF-Token: {csrf}")
    assert status == "404", body  # the token let it through: there is no callback 999
