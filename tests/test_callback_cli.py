"""`ivr callbacks list | show | cancel | retry` on a database named by a config
file: in this process through main() and add_callback_commands, and once as
`python -m ivr.callbacks.cli`."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ivr.callbacks import CallbackPolicy, CallbackQueue, CallbackReason, CallbackState
from ivr.callbacks.cli import add_callback_commands, main
from ivr.config import Settings
from ivr.store import open_store

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[storage]
database = "db/ivr.sqlite3"

[queues.general]
operators = ["sip:op@127.0.0.1:5999"]
"""


class Seeded:
    def __init__(self, config: Path, database: Path) -> None:
        self.config = config
        self.database = database
        self.ids: dict[str, int] = {}


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    """A config and a database with a pending, a failed and a done callback."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    found = Seeded(config, tmp_path / "db" / "ivr.sqlite3")

    async def seed() -> None:
        now = time.time()
        async with await open_store(found.database) as db:
            queue = CallbackQueue(db, CallbackPolicy(retry_delays=(0.0,)))

            async def make(number: str, **kwargs: object) -> int:
                cb = await queue.request(
                    number,
                    call_id=f"call-{number}",
                    reason=CallbackReason.ABANDONED,
                    now=now - 60,
                    **kwargs,  # type: ignore[arg-type]
                )
                return cb.id

            # urgent ones, so quiet hours at the real time of the run never hold them
            found.ids["failed"] = await make("13800000002", emergency=True, ticket_id=12)
            found.ids["done"] = await make("13800000003", urgency="紧急")
            for cb in await queue.claim_due(now=now - 50, free_operators=5):
                if cb.id == found.ids["failed"]:  # its one attempt: gives up
                    await queue.outcome(cb.id, CallbackState.NO_ANSWER, now=now - 40)
                else:
                    await queue.outcome(cb.id, CallbackState.CONNECTED, now=now - 40)
                    await queue.done(cb.id, now=now - 30)
            found.ids["pending"] = await make("13800000001", urgency="紧急", ticket_id=11)

    asyncio.run(seed())
    return found


def run(seeded: Seeded, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--config", str(seeded.config), "callbacks", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_all_and_by_state(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(seeded, "list", "--json", capsys=capsys)
    assert code == 0
    listed = json.loads(out)
    assert [(item["id"], item["state"]) for item in listed] == [
        (seeded.ids["pending"], "pending"),  # open first, then closed ones newest first
        (seeded.ids["failed"], "failed"),
        (seeded.ids["done"], "done"),
    ]
    assert listed[0]["number"] == "13800000001" and listed[0]["ticket_id"] == 11

    code, out, _ = run(seeded, "list", "--state", "failed", "--json", capsys=capsys)
    assert code == 0
    assert [item["id"] for item in json.loads(out)] == [seeded.ids["failed"]]

    code, out, _ = run(
        seeded, "list", "--state", "done", "--state", "failed", "--json", capsys=capsys
    )
    assert sorted(item["id"] for item in json.loads(out)) == sorted(
        [seeded.ids["failed"], seeded.ids["done"]]
    )

    code, out, _ = run(seeded, "list", "--number", "13800000003", capsys=capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["id", "state", "reason", "number"]
    assert len(lines) == 2 and "13800000003" in lines[1] and "done" in lines[1]


def test_cancel_with_a_reason_then_show(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    target = seeded.ids["pending"]
    code, out, err = run(seeded, "cancel", str(target), "--reason", "caller asked", capsys=capsys)
    assert (code, err) == (0, "")
    assert f"callback {target} to 13800000001: cancelled" in out

    code, out, _ = run(seeded, "show", str(target), "--json", capsys=capsys)
    assert code == 0
    shown = json.loads(out)
    assert shown["callback"]["state"] == "cancelled"
    assert shown["events"][-1]["detail"] == "caller asked"
    assert shown["events"][-1]["to_state"] == "cancelled"

    code, out, _ = run(seeded, "show", str(target), capsys=capsys)
    assert code == 0 and "-> cancelled  caller asked" in out

    # cancelling it again, or a done one, or one that does not exist: a clear error
    code, _, err = run(seeded, "cancel", str(target), capsys=capsys)
    assert code == 1 and "only a pending, dialing, no_answer or busy" in err
    code, _, err = run(seeded, "cancel", str(seeded.ids["done"]), capsys=capsys)
    assert code == 1 and "is done" in err
    code, _, err = run(seeded, "cancel", "999", capsys=capsys)
    assert code == 1 and "no callback with id 999" in err
    code, _, err = run(seeded, "show", "999", capsys=capsys)
    assert code == 1 and "no callback with id 999" in err


def test_retry_makes_a_failed_callback_due_now_keeping_attempts(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    target = seeded.ids["failed"]
    before = time.time()
    code, out, _ = run(seeded, "retry", str(target), "--json", capsys=capsys)
    assert code == 0
    retried = json.loads(out)
    assert retried["state"] == "pending"
    assert retried["attempts"] == 1
    assert before <= retried["next_at"] <= time.time()

    code, _, err = run(seeded, "retry", "999", capsys=capsys)
    assert code == 1 and "no callback with id 999" in err


def test_a_bad_config_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[storage]\ndatabase = "x.sqlite3"\n', encoding="utf-8")
    code = main(["--config", str(config), "callbacks", "list"])
    _, err = capsys.readouterr()
    assert code == 2 and "bad config" in err and "queue" in err
    code = main(["--config", str(tmp_path / "missing.toml"), "callbacks", "list"])
    _, err = capsys.readouterr()
    assert code == 2 and "not found" in err


def test_commands_plug_into_another_parser_with_its_policy(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """The way ivr/cli.py wires it: its own --config, our sub-commands, a policy
    read from the settings (here: quiet now, so a non-urgent retry waits)."""
    asked: list[Path] = []
    clock = datetime.now(UTC)  # quiet from an hour ago to two hours from now
    start, end = ((clock + timedelta(hours=h)).strftime("%H:%M") for h in (-1, 2))

    def policy_for(settings: Settings) -> CallbackPolicy:
        asked.append(settings.storage.database)
        return CallbackPolicy(quiet_hours=(start, end), timezone="UTC")

    parser = argparse.ArgumentParser(prog="ivr")
    parser.add_argument("--config", type=Path, default=Path("config.toml"))
    sub = parser.add_subparsers(dest="command", required=True)
    add_callback_commands(sub, policy_for=policy_for)

    async def add_normal() -> int:
        async with await open_store(seeded.database) as db:
            queue = CallbackQueue(db, CallbackPolicy())
            cb = await queue.request(
                "13800000009", call_id="n1", reason=CallbackReason.DROPPED, now=time.time()
            )
            await queue.cancel(cb.id, "x", now=time.time())
            return cb.id

    normal = asyncio.run(add_normal())
    args = parser.parse_args(["--config", str(seeded.config), "callbacks", "retry", str(normal)])
    assert args.func(args) == 0
    out, _ = capsys.readouterr()
    assert asked == [seeded.database.resolve()]
    assert f"callback {normal} to 13800000009: due again, pending (next at " in out
    assert out.rstrip().endswith(f"{end}:00)")  # held to the end of the quiet hours (UTC)


def test_runs_as_a_module(seeded: Seeded) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ivr.callbacks.cli",
            "--config",
            str(seeded.config),
            "callbacks",
            "list",
            "--open",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [item["id"] for item in json.loads(done.stdout)] == [seeded.ids["pending"]]
