"""`ivr quality draw | list | export`, run as the `ivr` command in a
subprocess, on a store the config names (SQLite, then PostgreSQL)."""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import subprocess
import sys
from pathlib import Path

from ivr.quality.checks import CHECKS
from ivr.quality.export import HEADER
from ivr.quality.samples import QualitySamples
from ivr.store import open_store
from tests.conftest import ROOT
from tests.quality_audio import CALLER_NUMBER
from tests.test_quality_cluster import record

TODAY = datetime.date.today()
YESTERDAY = (TODAY - datetime.timedelta(days=1)).isoformat()
BEFORE = (TODAY - datetime.timedelta(days=2)).isoformat()


def ivr(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ivr.cli", *args, "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_config(tmp_path: Path, location: str | Path) -> Path:
    storage = f'url = "{location}"' if isinstance(location, str) else f'database = "{location}"'
    path = tmp_path / "config.toml"
    path.write_text(
        f'[storage]\n{storage}\n\n[queues.general]\noperators = ["sip:op@127.0.0.1:5999"]\n\n'
        "[quality]\nshare = 0.25\n",
        encoding="utf-8",
    )
    return path


async def test_draw_list_and_export_from_the_command_line(
    store_location: str | Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, store_location)
    async with await open_store(store_location) as db:
        await record(db, YESTERDAY, range(8), tmp_path / "x.wav", node="node-a")
        await record(db, BEFORE, range(4), tmp_path / "x.wav", node="node-a")

    # yesterday by default: a quarter of its 8 conversations
    drawn = await asyncio.to_thread(ivr, config, "quality", "draw")
    assert drawn.returncode == 0, drawn.stderr
    assert f"{YESTERDAY}: drew 2 of 8 conversations (share 0.25): samples 1, 2" in drawn.stdout

    # a day drawn already is refused, saying when, by whom and what
    again = await asyncio.to_thread(ivr, config, "quality", "draw", "--day", YESTERDAY)
    assert again.returncode == 1 and again.stdout == ""
    assert f"{YESTERDAY} was drawn already" in again.stderr
    assert "by node cli: 2 of 8 conversations" in again.stderr
    # today has not ended; a date must be a date
    today = await asyncio.to_thread(ivr, config, "quality", "draw", "--day", TODAY.isoformat())
    assert today.returncode == 1 and "has not ended yet" in today.stderr
    bad = await asyncio.to_thread(ivr, config, "quality", "draw", "--day", "2026-13-01")
    assert bad.returncode == 1 and "--day '2026-13-01': want a date like" in bad.stderr

    other = await asyncio.to_thread(ivr, config, "quality", "draw", "--day", BEFORE)
    assert other.returncode == 0, other.stderr
    assert f"{BEFORE}: drew 1 of 4 conversations" in other.stdout

    listed = await asyncio.to_thread(ivr, config, "quality", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[1].startswith(f"{YESTERDAY}  2/8") and lines[2].startswith(f"{BEFORE}  1/4")
    assert all(" cli " in line and line.endswith("0/0") for line in lines[1:])

    async with await open_store(store_location) as db:
        samples = QualitySamples(db)
        first, second = await samples.of_days(YESTERDAY, YESTERDAY)
        await samples.checked(
            first.id,
            {c: {"state": "passed" if c != "talk_over" else "failed"} for c in CHECKS},
            now=0.0,
            node="node-a",
            state="done",
        )
        await samples.review(first.id, "r1", dict.fromkeys(("规范用语", "信息核实",
                             "解答准确", "服务态度"), 20), "好", now=0.0)  # fmt: skip
    day = await asyncio.to_thread(ivr, config, "quality", "list", "--day", YESTERDAY)
    assert day.returncode == 0, day.stderr
    rows = day.stdout.splitlines()
    assert rows[0] == f"{YESTERDAY}: 2 sample(s)"
    assert rows[2].startswith(f"{first.id}  {first.seat_code}  {first.operator}  0  done on node-a")
    assert rows[2].endswith("1  80.0")
    assert rows[3].startswith(f"{second.id}  {second.seat_code}") and "pending" in rows[3]
    assert CALLER_NUMBER not in day.stdout
    none = await asyncio.to_thread(ivr, config, "quality", "list", "--day", "2020-01-01")
    assert none.returncode == 1 and "2020-01-01 was not drawn" in none.stderr

    out = tmp_path / "quality.csv"
    exported = await asyncio.to_thread(
        ivr, config, "quality", "export", str(out), "--from", BEFORE, "--to", YESTERDAY
    )
    assert exported.returncode == 0, exported.stderr
    assert f"3 sample(s) of {BEFORE}..{YESTERDAY}" in exported.stdout
    text = out.read_text(encoding="utf-8")
    assert text.startswith("\ufeff")
    assert CALLER_NUMBER not in text and first.call_id not in text
    table = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert list(table[0]) == list(HEADER)
    by_sample = {r["sample"]: r for r in table if r["row"] == "sample"}
    assert set(by_sample) == {str(first.id), str(second.id), "3"}
    mine = by_sample[str(first.id)]
    assert (mine["seat"], mine["operator"], mine["check_state"]) == (
        first.seat_code,
        first.operator,
        "done",
    )
    assert (mine["talk_over"], mine["greeting"], mine["reviews"], mine["average_score"]) == (
        "failed",
        "passed",
        "1",
        "80.0",
    )
    assert by_sample[str(second.id)]["talk_over"] == ""  # not checked yet
    operators = {r["operator"]: r for r in table if r["row"] == "operator"}
    assert sum(int(r["sampled"]) for r in operators.values()) == 3
    assert operators[first.operator]["talk_over"] == "1/1 failed"
    assert operators[first.operator]["day"] == f"{BEFORE}..{YESTERDAY}"

    # the draw and the export are in the audit log, as this machine's user's
    async with await open_store(store_location) as db:
        rows_ = await db.fetch_all(
            "SELECT action, role, object_id, detail FROM audit_log "
            "WHERE action LIKE 'quality.%' ORDER BY id"
        )
    assert [(r["action"], r["role"], r["object_id"]) for r in rows_] == [
        ("quality.draw", "cli", YESTERDAY),
        ("quality.draw", "cli", BEFORE),
        ("quality.export", "cli", f"{BEFORE}..{YESTERDAY}"),
    ]
    assert rows_[0]["detail"] == "2 of 8 conversations"

    bad_range = await asyncio.to_thread(
        ivr, config, "quality", "export", str(out), "--from", YESTERDAY, "--to", BEFORE
    )
    assert bad_range.returncode == 1 and "is after --to" in bad_range.stderr
