"""Enterprise seats (企业专席) under load: how soon is a business answered while
the general queue is busy?

`ivr serve` runs with bench/enterprise_plan.toml (every caller straight to the
general queue; a number in the enterprise registry hears the enterprise
greeting and goes to [enterprise] queue), two general operators and two
enterprise seats, all sipp phones. The business numbers are put in the
registry with `ivr enterprises import`. First many general callers (sipp)
fill the general queue: its two operators talk to two of them for the whole
run and the rest wait. Then a sipp caller from a registered number every
EVERY_S seconds; each seat (sipp) answers at once, talks for an exponentially
distributed time (mean TALK_S seconds) and hangs up. A business's answer
time is from its INVITE leaving the caller (the caller's sipp message log) to
the seat's 200 OK (the seat's sipp message log), so the greeting is inside it.

    python -m bench.enterprise            # 40 general + 40 business callers, write figures
    python -m bench.enterprise --quick    # 12 general + 6 business callers, write nothing
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from bench.report import machine, merge_results, now, write_section

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
GENERAL_OPERATORS = 2
SEATS = 2
EVERY_S = 5.0  # a business calls this often
TALK_S = 6.0  # a seat talks to each for an exponentially distributed time of this mean
TARGET_S = 60.0  # [queues.enterprise] target_answer
BUSINESS_HOLD_S = 120.0  # a business still waiting this long after the answer gives up
# a sipp message log entry's first line: dashes, date, time (and more)
_ENTRY = re.compile(r"^-{10,} (\d{4}-\d{2}-\d{2})[ \t](\d{2}:\d{2}:\d{2}\.\d+)", re.M)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, sip_port: int, web_port: int, general: list[str],
                 seats: list[str]) -> Path:  # fmt: skip
    def uris(ports: list[str]) -> str:
        return ", ".join(f'"{u}"' for u in ports)

    config = directory / "config.toml"
    config.write_text(f"""
[sip]
host = "127.0.0.1"
port = {sip_port}
rtp_port_min = 32000
rtp_port_max = 32999
rtp_timeout = 3600            # the sipp callers send no audio

[dialplan]
file = "{BENCH / "enterprise_plan.toml"}"

[prompts]
voices_dir = "{ROOT / "voices"}"
cache_dir = "{ROOT / "var" / "prompt-cache"}"

[storage]
database = "{directory / "bench.sqlite3"}"

[tickets]
gazetteer = "{ROOT / "gazetteer.toml"}"

[web]
port = {web_port}

[operators]
ring_timeout = 10

[queues.general]
operators = [{uris(general)}]
max_waiting = 500
max_wait = 3600

[queues.enterprise]
operators = [{uris(seats)}]
max_wait = 3600
target_answer = {TARGET_S:g}
overflow_to = "general"
overflow_to_after = {TARGET_S * 0.75:g}

[enterprise]
queue = "enterprise"

[callbacks]
enabled = false

[node]
drain_timeout = 5             # the sipp general callers are still up at the end

[logging]
level = "WARNING"
format = "json"
""")
    return config


async def run_cli(config: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr.cli", "--config", str(config), *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"ivr {' '.join(args)}: {out.decode()}")
    return out.decode()


async def sipp(workdir: Path, name: str, *args: str) -> asyncio.subprocess.Process:
    where = workdir / name
    where.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        "sipp", *args, "-nostdin", "-trace_err", cwd=where,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def metrics(web_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def sip_times(log: Path, first_line: str, number_from: str) -> dict[str, float]:
    """Epoch time of each message in a sipp message log whose first line starts
    with ``first_line``, by the number in its ``number_from`` header (From/To user)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    times: dict[str, float] = {}
    marks = list(_ENTRY.finditer(text))
    for i, mark in enumerate(marks):
        body = text[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
        start = next((j for j, ln in enumerate(lines) if not ln.endswith(":")), None)
        if start is None or not lines[start].startswith(first_line):
            continue
        header = next((ln for ln in lines if ln.lower().startswith(number_from.lower())), "")
        found = re.search(r"sip:(\+?\d+)@", header)
        if found is None:
            continue
        when = datetime.strptime(f"{mark.group(1)} {mark.group(2)}", "%Y-%m-%d %H:%M:%S.%f")
        times.setdefault(found.group(1), when.timestamp())
    return times


@dataclass
class Outcome:
    answer_s: list[float]  # INVITE -> the seat's 200 OK, per business answered
    talk_s: list[float]  # the seat's 200 OK -> its BYE, per business answered
    businesses: int
    general_waiting_min: float  # the general line at its shortest while businesses called
    answered_by_general: float
    within_target: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


async def wait_ready(web_port: int, server: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        if server.returncode is not None:
            raise RuntimeError("ivr serve stopped; see serve.log")
        try:
            metrics(web_port)
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("ivr serve did not start in 60 s")


async def run(general_callers: int, businesses: int, workdir: Path) -> Outcome:
    sip_port, web_port = free_port(), free_port(socket.SOCK_STREAM)
    general_ports = [free_port() for _ in range(GENERAL_OPERATORS)]
    seat_ports = [free_port() for _ in range(SEATS)]
    general = [f"sip:general{i}@127.0.0.1:{p}" for i, p in enumerate(general_ports)]
    seats = [f"sip:seat{i}@127.0.0.1:{p}" for i, p in enumerate(seat_ports)]
    config = write_config(workdir, sip_port, web_port, general, seats)
    numbers = [f"1390000{i:04d}" for i in range(1, businesses + 1)]
    registry = workdir / "enterprises.csv"
    registry.write_text(
        "号码,企业名称\n" + "".join(f"{n},测试企业{i}号\n" for i, n in enumerate(numbers, 1)),
        encoding="utf-8",
    )
    print((await run_cli(config, "enterprises", "import", str(registry))).strip())
    phones: list[asyncio.subprocess.Process] = []
    for i, port in enumerate(general_ports):  # answer, talk until the caller leaves
        phones.append(await sipp(workdir, f"general{i}", "-sn", "uas", "-i", "127.0.0.1",
                                 "-p", str(port), "-mp", str(free_port())))  # fmt: skip
    seat_scenario = workdir / "seat.xml"
    seat_scenario.write_text(
        (BENCH / "enterprise_seat.xml").read_text().replace("@TALK_MS@", f"{TALK_S * 1000:.0f}")
    )
    for i, port in enumerate(seat_ports):
        phones.append(await sipp(
            workdir, f"seat{i}", "-sf", str(seat_scenario), "-i", "127.0.0.1",
            "-p", str(port), "-mp", str(free_port()),
            "-trace_msg", "-message_file", str(workdir / f"seat{i}.log"),
        ))  # fmt: skip
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr.cli", "--config", str(config), "serve", cwd=ROOT,
        stdout=(workdir / "serve.log").open("ab"), stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    callers: list[asyncio.subprocess.Process] = []
    try:
        await wait_ready(web_port, server)
        target = f"127.0.0.1:{sip_port}"
        inject = workdir / "general.csv"
        inject.write_text("SEQUENTIAL\n" + "".join(f"1380000{i:04d};\n" for i in range(
            1, general_callers + 1)))  # fmt: skip
        callers.append(await sipp(
            workdir, "general_callers", target, "-sf", str(BENCH / "enterprise_caller.xml"),
            "-inf", str(inject), "-s", "12345", "-i", "127.0.0.1", "-p", str(free_port()),
            "-mp", str(free_port()), "-r", "4", "-m", str(general_callers), "-d", "3600000",
        ))  # fmt: skip
        want = general_callers - GENERAL_OPERATORS
        for _ in range(600):  # the general line fills
            if sample(metrics(web_port), "ivr_queue_waiting_callers", queue="general") >= want:
                break
            await asyncio.sleep(0.2)
        text = metrics(web_port)
        print(f"general queue: {sample(text, 'ivr_queue_waiting_callers', queue='general'):.0f} "
              f"waiting, {GENERAL_OPERATORS} operators talking")  # fmt: skip
        load_before = os.getloadavg()
        inject = workdir / "businesses.csv"
        inject.write_text("SEQUENTIAL\n" + "".join(f"{n};\n" for n in numbers))
        business_log = workdir / "businesses.log"
        businesses_sipp = await sipp(
            workdir, "businesses", target, "-sf", str(BENCH / "enterprise_caller.xml"),
            "-inf", str(inject), "-s", "12345", "-i", "127.0.0.1", "-p", str(free_port()),
            "-mp", str(free_port()), "-r", "1", "-rp", str(int(EVERY_S * 1000)),
            "-m", str(businesses), "-d", str(int(BUSINESS_HOLD_S * 1000)),
            "-trace_msg", "-message_file", str(business_log),
        )  # fmt: skip
        callers.append(businesses_sipp)
        shortest = float("inf")
        deadline = time.time() + businesses * EVERY_S + BUSINESS_HOLD_S + 60
        while businesses_sipp.returncode is None and time.time() < deadline:
            text = metrics(web_port)
            shortest = min(shortest, sample(text, "ivr_queue_waiting_callers", queue="general"))
            await asyncio.sleep(1.0)
        load_after = os.getloadavg()
        text = metrics(web_port)
        answered = "ivr_queue_answered_total"
        by_general = sample(text, answered, queue="enterprise", by="general")
        within = sample(text, answered, queue="enterprise", within_target="yes")
    finally:
        for proc in (*callers, server, *phones):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM if proc is server else signal.SIGKILL)
                await proc.wait()
    sent = sip_times(business_log, "INVITE sip:", "From:")
    answers: dict[str, float] = {}
    byes: dict[str, float] = {}
    for i in range(SEATS):
        answers.update(sip_times(workdir / f"seat{i}.log", "SIP/2.0 200 OK", "From:"))
        byes.update(sip_times(workdir / f"seat{i}.log", "BYE sip:", "To:"))
    answer_s = [answers[n] - sent[n] for n in numbers if n in sent and n in answers]
    talk_s = [byes[n] - answers[n] for n in numbers if n in answers and n in byes]
    return Outcome(
        answer_s, talk_s, businesses, shortest, by_general, within, load_before, load_after
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--general", type=int, default=40, help="general callers")
    parser.add_argument("--businesses", type=int, default=40, help="business callers")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    general, businesses = (12, 6) if args.quick else (args.general, args.businesses)
    workdir = Path(tempfile.mkdtemp(prefix="bench-enterprise-"))
    out = asyncio.run(run(general, businesses, workdir))
    if not out.answer_s:
        print(f"no business was answered; see {workdir}", file=sys.stderr)
        return 1
    s = np.array(out.answer_s)
    p50, p95, worst = (round(float(np.percentile(s, q)), 2) for q in (50, 95, 100))
    quickest = round(float(s.min()), 2)
    # the wait in the enterprise line: beyond the quickest answer (greeting + prompt)
    wait_p95 = round(float(np.percentile(s - s.min(), 95)), 2)
    load = f"{out.load_before[0]:.2f} before, {out.load_after[0]:.2f} after (1 min)"
    talk = round(float(np.mean(out.talk_s)), 1) if out.talk_s else float("nan")
    seat_load = f"{talk / EVERY_S / SEATS:.0%}"
    print(
        f"enterprise answer (INVITE -> seat's 200 OK), {len(s)} of {out.businesses} answered: "
        f"p50 {p50} s, p95 {p95} s, max {worst} s, quickest {quickest} s (the greeting); "
        f"in line p95 {wait_p95} s; seats talked {talk} s on average (load {seat_load}); "
        f"general queue at least {out.general_waiting_min:.0f} waiting throughout; "
        f"{out.answered_by_general:.0f} taken by a general operator; "
        f"{out.within_target:.0f} within the {TARGET_S:g} s target; load {load}"
    )
    if not args.keep and not args.quick:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    if args.quick:
        print(f"(quick: nothing written; logs in {workdir})")
        return 0
    info = machine()
    merge_results(
        {
            "enterprise_answer_p95_s": p95,
            "enterprise_answer_p50_s": p50,
            "enterprise_queue_wait_p95_s": wait_p95,
            "enterprise_answered": f"{len(s)}/{out.businesses}",
            "enterprise_load_avg_1min": round(out.load_before[0], 2),
            "enterprise_seat_load": seat_load,
            "enterprise_date": now(),
        }
    )
    write_section(
        "Enterprise seats under a busy general queue (bench/enterprise.py)",
        f"""Measured {now()} on {info["cpu"]} ({info["nproc"]} cores, shared with other
work), Python {info["python"]}; load average {load}.

Method: `ivr serve` with bench/enterprise_plan.toml; {GENERAL_OPERATORS} general operators
and {SEATS} enterprise seats, all sipp phones; {out.businesses} business numbers put in the
registry with `ivr enterprises import`. {general} general callers (sipp, no audio) fill the
general queue first: its operators talk to two of them for the whole run and the rest wait
(at least {out.general_waiting_min:.0f} waiting while the businesses called). Then a sipp
caller from a registered number every {EVERY_S:g} s; a seat answers at once, talks for an
exponentially distributed time (mean {TALK_S:g} s) and hangs up (seat load
{TALK_S / EVERY_S / SEATS:.0%}; as talked: {talk} s on average, load {seat_load}). Answer time = the
seat's 200 OK (its sipp message log) - the business's INVITE (the caller's sipp message
log): the enterprise greeting ({quickest} s, the quickest
answer) is inside it. [queues.enterprise] target_answer = {TARGET_S:g}, overflow_to general
after {TARGET_S * 0.75:g} s (none was ever spare: the general line never emptied). "In
line" = answer time - the quickest answer: the wait for a seat alone.

| answered | p50 s | p95 s | max s | in line p95 s | within target | by a general operator |
|---|---|---|---|---|---|---|
| {len(s)} / {out.businesses} | {p50} | {p95} | {worst} | {wait_p95} | \
{out.within_target:.0f} | {out.answered_by_general:.0f} |
""",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
