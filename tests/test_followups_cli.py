"""`ivr followups list | show | cancel | retry` on the store a config names,
through the `ivr` command's own parser."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from ivr.callbacks import CallbackPolicy
from ivr.cli import main
from ivr.followups import FollowupQueue, FollowupState
from ivr.store import Transaction, open_store
from ivr.tickets import TicketStore

CONFIG = """
[storage]
database = "db/ivr.sqlite3"

[queues.general]
operators = ["sip:op@127.0.0.1:5999"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG, encoding="utf-8")

    async def seed() -> None:
        async with await open_store(tmp_path / "db" / "ivr.sqlite3") as db:
            queue = FollowupQueue(db, CallbackPolicy(quiet_hours=None))
            tickets = TicketStore(db)

            async def closed(
                tx: Transaction, ticket_id: int, caller: str, fields: dict[str, Any], at: float
            ) -> None:
                await queue.ticket_closed(tx, ticket_id, caller, fields, now=at)

            tickets.on_closed = closed
            ticket = await tickets.create("call-1", "13800000001")
            await tickets.edit(ticket.id, {"status": "closed"}, who="op1")

    asyncio.run(seed())
    return path


def test_list_cancel_and_retry(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["followups", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "13800000001" in out and "pending" in out
    assert main(["followups", "cancel", "1", "--reason", "市民要求", "--config", str(config)]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert main(["followups", "cancel", "1", "--config", str(config)]) == 1
    assert "only a pending" in capsys.readouterr().err
    assert main(["followups", "retry", "1", "--json", "--config", str(config)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == FollowupState.PENDING.value and shown["attempts"] == 0
    assert main(["followups", "show", "1", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "市民要求" in out and "re-run by the CLI" in out
    assert main(["followups", "show", "9", "--config", str(config)]) == 1
    assert "no follow-up with id 9" in capsys.readouterr().err
