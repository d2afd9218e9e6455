"""Past calls: one real call (baresip) into a real hotline, then
`ivr calls list | show` on the test's config.toml and GET /api/calls."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import aiohttp
import numpy as np
import pytest

from ivr.call_records import CallRecord
from ivr.logs import mask_phone
from tests.audio_tools import write_wav
from tests.conftest import ROOT, StartHotline, write_config
from tests.peers import Baresip, free_udp_port
from tests.test_call_path import wait_records
from tests.web_client import hotline_client

CALLER = "13712341234"
MASKED = "137****1234"


async def ivr(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ivr.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.peers
async def test_a_real_call_is_listed_and_shown(start_hotline: StartHotline, tmp_path: Path) -> None:
    silence = write_wav(tmp_path / "silence.wav", np.zeros(8000 * 30, np.int16))
    caller = Baresip(tmp_path / "caller", free_udp_port(), play=silence, user=CALLER)
    await caller.start()
    try:
        hotline = await start_hotline()
        await caller.dial(f"sip:12345@127.0.0.1:{hotline.endpoint.port}")
        await asyncio.sleep(4.0)
        await caller.hangup()
        (record,) = await wait_records(hotline, 1)
    finally:
        await caller.quit()
    assert record.caller == CALLER and record.end_reason == "caller_hangup"
    config = str(tmp_path / "config.toml")
    call_id = record.call_id

    listed = await ivr("calls", "list", "--config", config)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "call_id",
        "started",
        "caller",
        "dialled",
        "outcome",
        "end_reason",
        "duration",
        "operator",
    ]
    (row,) = rows
    assert row.startswith(call_id) and MASKED in row and CALLER not in row
    assert "caller_hangup" in row and "12345" in row
    assert (await ivr("calls", "list", "--limit", "0", "--config", config)).stdout.count(
        "\n"
    ) == 1  # the header only
    unmasked = await ivr("calls", "list", "--unmasked", "--config", config)
    assert CALLER in unmasked.stdout

    shown = await ivr("calls", "show", call_id, "--config", config)
    assert shown.returncode == 0, shown.stderr
    fields = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    fields = {name: value.strip() for name, value in fields.items()}
    assert fields["call_id"] == call_id and fields["caller"] == MASKED
    assert fields["end_reason"] == "caller_hangup" and fields["dialled"] == "12345"
    assert fields["codec"] == record.codec and fields["tickets"] == "-"  # the menu's end
    assert fields["path"].split(" > ")[0] == hotline.plan.start  # type: ignore[union-attr]
    assert {"answered_at", "ended_at", "digits", "queue", "operator", "plan_version"} <= set(fields)
    assert fields["duration"].endswith("s")

    assert hotline.tickets is not None  # two tickets linked to the call by its call id
    ids = [(await hotline.tickets.create(call_id, CALLER)).id for _ in range(2)]
    shown = await ivr("calls", "show", call_id, "--config", config)
    assert f"tickets:      {ids[0]}, {ids[1]}" in shown.stdout.splitlines()

    unknown = await ivr("calls", "show", "no-such-call", "--config", config)
    assert unknown.returncode == 1 and "no call no-such-call" in unknown.stderr

    base = f"http://127.0.0.1:{hotline.api.port}"
    operator = await hotline_client(hotline, "operator")
    try:
        async with operator.get(f"{base}/api/calls?limit=10") as r:
            assert r.status == 200, await r.text()
            (call,) = (await r.json())["calls"]
        assert call["call_id"] == call_id and call["caller"] == CALLER  # as /api/tickets
        assert call["end_reason"] == "caller_hangup" and call["duration"] > 0
        async with operator.get(f"{base}/api/calls/{quote(call_id, safe='')}") as r:
            assert r.status == 200 and (await r.json())["started_at"] == record.started_at
        async with operator.get(f"{base}/api/calls/no-such-call") as r:
            assert r.status == 404 and (await r.json())["error"] == "no call no-such-call"
        async with operator.get(f"{base}/api/calls?limit=lots") as r:
            assert r.status == 400
    finally:
        await operator.close()
    async with aiohttp.ClientSession() as anonymous:
        for path in ("/api/calls", f"/api/calls/{quote(call_id, safe='')}"):
            async with anonymous.get(f"{base}{path}") as r:
                assert r.status == 401, path

    # a later call (a landline) is listed first
    assert hotline.records is not None
    later = CallRecord("later-call", "02112345678", "12345", record.started_at + 60)
    await hotline.records.start(later)
    listed = await ivr("calls", "list", "--config", config)
    assert [row.split()[0] for row in listed.stdout.splitlines()[1:]] == ["later-call", call_id]
    assert mask_phone("02112345678") in listed.stdout and "02112345678" not in listed.stdout


async def test_calls_without_a_database_or_config(tmp_path: Path, prompt_cache: Path) -> None:
    config = write_config(tmp_path, operators=["sip:op@127.0.0.1:9"], prompt_cache=prompt_cache)
    for command in (("list",), ("show", "x")):
        result = await ivr("calls", *command, "--config", str(config))
        assert result.returncode == 2 and "no database at" in result.stderr, result.stderr
    assert not (tmp_path / "ivr.sqlite3").exists()  # not made by looking
    missing = await ivr("calls", "list", "--config", str(tmp_path / "absent.toml"))
    assert missing.returncode == 2 and "config" in missing.stderr
