"""Follow-up coverage (回访): of the tickets closed, how many were followed
up — answered 满意 / 基本满意 / 不满意 — when every number answers within the
retries (goal 1.0).

A hotline (in this process, as the tests run it) with [followups] dialling a
sipp standing for every citizen's phone on one port. Some numbers do not
answer the first time: while their tickets are closed, that port is a sipp
answering 480 to everything; once all of them have had that first no-answer,
it is replaced by a sipp that answers every call and presses 1 (RFC 2833),
and the other tickets are closed. Coverage is the dashboard's own figure
(ivr.followups.figures); the time from closing to the answer is reported too.

    python -m bench.followups            # 20 tickets (5 after a first no-answer), write figures
    python -m bench.followups --quick    # 4 tickets, write nothing
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import machine, merge_results, now, write_section

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.0
RETRY = "[0, 5, 5]"


async def run(count: int, flaky: int) -> dict[str, Any]:
    from ivr.config import load_settings
    from ivr.followups import FollowupState
    from ivr.followups.figures import followup_figures
    from ivr.logs import setup_logging
    from ivr.server import Hotline
    from tests.peers import SippUas, free_udp_port
    from tests.test_followups_live import KeyPhone

    work = Path(tempfile.mkdtemp(prefix="bench-followups-"))
    port = free_udp_port()
    config = work / "config.toml"
    config.write_text(f"""
[sip]
host = "127.0.0.1"
port = {free_udp_port()}
rtp_port_min = 32000
rtp_port_max = 32999

[dialplan]
file = "{ROOT / "dialplans" / "12345.toml"}"

[prompts]
voices_dir = "{ROOT / "voices"}"
cache_dir = "{ROOT / "var" / "prompt-cache"}"

[storage]
database = "{work / "ivr.sqlite3"}"
recordings_dir = "{work / "recordings"}"

[speech]
engine = "scripted"

[tickets]
gazetteer = "{ROOT / "gazetteer.toml"}"

[web]
enabled = false

[callbacks]
enabled = false

[queues.general]
operators = ["sip:nobody@127.0.0.1:9"]

[logging]
level = "WARNING"
format = "text"

[followups]
enabled = true
plan = "{ROOT / "dialplans" / "followup.toml"}"
dial_uri = "sip:{{number}}@127.0.0.1:{port}"
ring_timeout = 10
retry = {RETRY}
quiet_hours = ""
max_attempts_per_hour = 5
max_dialing = 6
""")
    settings = load_settings(config)
    log = setup_logging("WARNING", "text")
    log.setLevel(logging.WARNING)
    hotline = Hotline(settings, log)
    await hotline.start()
    assert hotline.tickets is not None and hotline.followups is not None and hotline.db
    queue = hotline.followups.queue
    unreachable = SippUas(
        work / "unavailable",
        port,
        free_udp_port(even=True),
        str(ROOT / "tests" / "data" / "sipp" / "uas_unavailable.xml"),
    )
    phone = KeyPhone(work / "phones", "1", wait_ms=1500, port=port)
    numbers = [f"1390000{n:04d}" for n in range(count)]
    closed_at: dict[int, float] = {}
    started = time.time()

    async def close(number: str) -> None:
        ticket = await hotline.tickets.create(f"bench-{number}", number)  # type: ignore[union-attr]
        await hotline.tickets.edit(ticket.id, {"status": "closed"}, who="bench")  # type: ignore[union-attr]
        closed_at[ticket.id] = time.time()

    async def wait(check: Any, timeout: float) -> None:
        deadline = time.time() + timeout
        while not await check():
            if time.time() > deadline:
                raise TimeoutError("bench: follow-ups did not finish in time")
            await asyncio.sleep(0.2)

    try:
        await unreachable.start()
        for number in numbers[:flaky]:
            await close(number)

        async def all_missed_once() -> bool:
            found = await queue.list()
            return len(found) == flaky and all(
                f.state is FollowupState.NO_ANSWER and f.attempts == 1 for f in found
            )

        await wait(all_missed_once, 60)
        await unreachable.stop()
        await phone.start()
        for number in numbers[flaky:]:
            await close(number)

        async def all_done() -> bool:
            found = await queue.list(limit=count)
            return len(found) == count and all(f.state is FollowupState.DONE for f in found)

        await wait(all_done, 30 + 12 * count)
        followups = await queue.list(limit=count)
        figures = await followup_figures(hotline.db, since=started - 1, until=time.time() + 1)
    finally:
        await hotline.stop(drain_timeout=2.0)
        await phone.stop()
        await unreachable.stop()
    answer_s = [
        f.answered_at - closed_at[f.ticket_id] for f in followups if f.answered_at is not None
    ]
    return {
        "figures": figures,
        "attempts": sorted(f.attempts for f in followups),
        "answer_s": answer_s,
        "flaky": flaky,
        "count": count,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    count = 4 if args.quick else args.count
    flaky = max(1, count // 4)
    result = asyncio.run(run(count, flaky))
    figures = result["figures"]
    coverage = figures["coverage"]
    s = np.array(result["answer_s"]) if result["answer_s"] else np.array([float("nan")])
    p50, p95, worst = (round(float(np.percentile(s, q)), 1) for q in (50, 95, 100))
    retried = sum(1 for a in result["attempts"] if a > 1)
    print(
        f"follow-up coverage {coverage} ({figures['followed_up']} of {figures['closed']} closed; "
        f"{retried} answered on a retry); closing to answer p50 {p50} s, p95 {p95} s, max {worst} s"
    )
    if args.quick:
        return 0
    info = machine()
    table = f"{p50} / {p95} / {worst}"
    merge_results(
        {
            "followup_coverage": coverage,
            "followup_tickets": figures["closed"],
            "followup_close_to_answer_p95_s": p95,
            "followup_date": now(),
        }
    )
    write_section(
        "Follow-up coverage (bench/followups.py)",
        f"""Measured {now()} on {info["cpu"]} ({info["nproc"]} cores), Python {info["python"]}.

Method: a hotline with `[followups]` on (retry {RETRY} s, at most 6 dialling at once)
dials every follow-up to one sipp port standing for the citizens' phones. {count}
tickets are closed; for the first {result["flaky"]} the port answers 480 (not
reachable) to every INVITE, and once each of those has had its first no-answer it is
replaced by a sipp that answers every call and presses 1 (RFC 2833); then the other
{count - result["flaky"]} tickets are closed. Coverage is the dashboard's figure
(`/api/followups/figures`: closed tickets whose follow-up got an answer / closed
tickets); every number here answers within the retries, so the goal is 1.0.
Closing to answer: from the ticket's closing to the 满意 recorded (one survey call is
the matter sentence, the question, the comment prompt and ~6 s of listening for a
comment, and the goodbye).

| closed | followed up | on a retry | coverage | goal | closing to answer p50 / p95 / max s |
|---|---|---|---|---|---|
| {figures["closed"]} | {figures["followed_up"]} | {retried} | {coverage} | {GOAL:g} | {table} |
""",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
