"""SIP fuzz bench (issue 13 item 7): a larger run of the fuzz in
tests/sip_fuzz.py against `ivr serve` (a subprocess, its own config):
50,000 malformed datagrams over UDP and 10,000 cases as TCP streams from
fixed seeds, in rounds of 1,000, each round followed by a real call (our trial
caller, with RTP: answered, the greeting heard, key 1 arriving in the call's
record, hung up). A round fails when its call fails, when the IVR's log shows
an unhandled exception (a traceback, "error handling message", "Exception in
callback", "sip socket lost") or an ERROR line, or when the IVR stops
answering OPTIONS over UDP or taking TCP connections.

    python -m bench.fuzz            # the full run, figures written
    python -m bench.fuzz --quick    # 3,000 + 1,000 cases, nothing written
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import machine, merge_results, now, write_section
from ivr.trial_call import TrialOptions, place_call
from tests.sip_fuzz import (
    FuzzCases,
    PeerCounts,
    fuzz_peer,
    send_cases,
    send_tcp_streams,
    udp_socket,
)

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261205
ROUND = 1_000
CRASH = re.compile(
    r"Traceback|error handling message|Exception in callback|sip socket lost|\bERROR\b"
)


@dataclass
class Totals:
    cases: int = 0
    rounds: int = 0
    failed_rounds: list[str] = field(default_factory=list)
    crash_lines: list[str] = field(default_factory=list)
    calls_ok: int = 0
    seconds: float = 0.0
    rss_first_mb: float = 0.0  # the IVR's, after the first round
    rss_end_mb: float = 0.0
    udp_drops: int = 0  # datagrams the kernel dropped at the IVR's full socket buffer


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def write_config(directory: Path, sip_port: int) -> Path:
    config = directory / "config.toml"
    config.write_text(f"""
[sip]
host = "127.0.0.1"
port = {sip_port}
rtp_port_min = 30000
rtp_port_max = 31999
rtp_timeout = 5.0
tcp = true
tcp_idle_timeout = 5.0
# the fuzz comes from one address: its rate is not limited, so every case is parsed
requests_per_second = 1000000
request_burst = 10000000

[dialplan]
file = "{ROOT / "dialplans" / "12345.toml"}"

[prompts]
voices_dir = "{ROOT / "voices"}"
cache_dir = "{ROOT / "var" / "prompt-cache"}"

[storage]
database = "{directory / "fuzz.sqlite3"}"
recordings_dir = "{directory / "recordings"}"

[speech]
engine = "scripted"

[queues.general]
operators = ["sip:nobody@127.0.0.1:9"]

[tickets]
gazetteer = "{ROOT / "gazetteer.toml"}"

[web]
enabled = false

[logging]
level = "INFO"
format = "text"
""")
    return config


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def real_call(sip_port: int, database: Path, number: int, tcp: bool) -> str | None:
    """A real call; None when it went through, else what went wrong."""
    caller = f"1370000{number:04d}"
    low = 33000 + (number % 100) * 8
    options = TrialOptions(
        target=f"sip:12345@127.0.0.1:{sip_port}" + (";transport=tcp" if tcp else ""),
        digits="1",
        digit_delay=0.8,
        duration=1.8,
        caller=caller,
        rtp_ports=(low, low + 6),
    )
    result = await place_call(options, logging.getLogger("bench.fuzz.caller"))
    if result.status != 200:
        return f"call {caller}: {result.status} {result.reason}"
    if result.packets_in < 20:
        return f"call {caller}: heard {result.packets_in} RTP packets"
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT digits, ended_at FROM calls WHERE caller = ?", (caller,)
            ).fetchone()
        if row is not None and row[1] is not None:
            return None if row[0] == "1" else f"call {caller}: the IVR got keys {row[0]!r}"
        await asyncio.sleep(0.2)
    return f"call {caller}: no ended call record"


async def still_listening(sip_port: int) -> str | None:
    """None when the IVR answers OPTIONS over UDP (sent three times, a second
    apart, as a phone retransmits) and takes a TCP connection."""
    peer = await fuzz_peer()
    probe = (
        f"OPTIONS sip:12345@127.0.0.1:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bKprobe{time.time_ns()}\r\n"
        "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:12345@127.0.0.1>\r\n"
        f"Call-ID: probe-{time.time_ns()}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    try:
        for _ in range(30):
            if _ % 10 == 0:
                peer.send(probe, ("127.0.0.1", sip_port))
            await asyncio.sleep(0.1)
            if peer.counts.answers.get(200):
                break
        else:
            return "no 200 to OPTIONS over UDP (three tries)"
    finally:
        peer.close()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sip_port)
        writer.close()
    except OSError as exc:
        return f"no TCP connection: {exc}"
    return None


def new_crash_lines(log: Path, seen: int) -> tuple[list[str], int]:
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines[seen:] if CRASH.search(line)], len(lines)


async def run(udp_cases: int, tcp_cases: int, sip_port: int, workdir: Path, pid: int) -> Totals:
    totals = Totals()
    log = workdir / "ivr.log"
    database = workdir / "fuzz.sqlite3"
    seen = 0
    started = time.monotonic()
    peer = await fuzz_peer()
    udp = FuzzCases(SEED, f"127.0.0.1:{sip_port}", port=peer.port)
    tcp = FuzzCases(SEED + 1, f"127.0.0.1:{sip_port}", port=9, transport="TCP")
    counts = PeerCounts()
    plan = [("udp", udp)] * (udp_cases // ROUND) + [("tcp", tcp)] * (tcp_cases // ROUND)
    try:
        for number, (kind, cases) in enumerate(plan):
            batch = cases.take(ROUND)
            if kind == "udp":
                await send_cases(peer, batch, ("127.0.0.1", sip_port))
            else:
                await send_tcp_streams(("127.0.0.1", sip_port), batch, counts)
            totals.cases += len(batch)
            totals.rounds += 1
            problem = await still_listening(sip_port)
            problem = problem or await real_call(sip_port, database, number, kind == "tcp")
            crashes, seen = new_crash_lines(log, seen)
            totals.crash_lines += crashes
            if problem is None and not crashes:
                totals.calls_ok += 1
            else:
                what = problem or crashes[0]
                totals.failed_rounds.append(
                    f"{kind} cases {batch[0].number}-{batch[-1].number}: {what}"
                )
            if number == 0:
                totals.rss_first_mb = rss_mb(pid)
            verdict = "ok" if problem is None and not crashes else f"FAIL {problem or crashes[0]}"
            where = f"{kind} round {number + 1:>3}/{len(plan)}: {totals.cases:>6} cases"
            print(f"{where}, {verdict}, RSS {rss_mb(pid):.1f} MB", flush=True)
    finally:
        peer.close()
    totals.seconds = round(time.monotonic() - started, 1)
    answers = dict(sorted(peer.counts.answers.items()))
    print(f"UDP answers by status: {answers}; TCP: {dict(sorted(counts.answers.items()))}")
    totals.rss_end_mb = rss_mb(pid)
    totals.udp_drops = udp_socket(sip_port)[1]
    print(f"datagrams dropped at the IVR's socket buffer: {totals.udp_drops}")
    print(f"RSS after the first round {totals.rss_first_mb:.1f} MB, at the end", end=" ")
    print(f"{totals.rss_end_mb:.1f} MB")
    return totals


def write_report(totals: Totals, udp_cases: int, tcp_cases: int) -> None:
    info = machine()
    date = now()
    failures = len(totals.failed_rounds)
    merge_results(
        {
            "sip_fuzz_cases": totals.cases,
            "sip_fuzz_failures": failures,
            "sip_fuzz_udp_cases": udp_cases,
            "sip_fuzz_tcp_cases": tcp_cases,
            "sip_fuzz_real_calls_ok": totals.calls_ok,
            "sip_fuzz_crash_lines": len(totals.crash_lines),
            "sip_fuzz_udp_drops": totals.udp_drops,
            "sip_fuzz_rss_mb": [round(totals.rss_first_mb, 1), round(totals.rss_end_mb, 1)],
            "sip_fuzz_seconds": totals.seconds,
            "sip_fuzz_date": date,
            "sip_fuzz_machine": info,
        }
    )
    failed = "\n".join(f"- {f}" for f in totals.failed_rounds[:20]) or "- none"
    body = f"""Measured {date} on {info["cpu"]} ({info["nproc"]} cores), Python {info["python"]};
`{info["uname"]}`.

Method: `ivr serve` (SQLite, scripted recogniser, web off; the fuzz source's
request rate not limited so that every case is parsed) receives the fuzz of
tests/sip_fuzz.py: {udp_cases:,} malformed datagrams over UDP (seed {SEED}) and
{tcp_cases:,} cases as TCP streams (seed {SEED + 1}, ten to a connection):
mutations of real INVITE (as sipp and baresip send them), ACK, BYE, INFO,
OPTIONS, CANCEL, REGISTER and 200 OK (bad SDP, absurd Content-Length, thousands
of headers, long lines, binary junk, unicode, truncations, duplicated or
missing headers, bad Via/CSeq/From/To/request-URI), and pure random bytes. After
every {ROUND:,} cases: OPTIONS over UDP must be answered, a TCP connection taken,
and a real call (our trial caller, over TCP after the TCP rounds) answered with
the greeting heard and key 1 in its call record; the IVR's log must show no
traceback, "error handling message", "Exception in callback" or ERROR line.
A failure is a round where any of these did not hold.

| figure | value |
|---|---|
| `sip_fuzz_cases` | {totals.cases:,} |
| `sip_fuzz_failures` (goal 0) | {failures} |
| real calls after a round that went through | {totals.calls_ok} of {totals.rounds} |
| crash lines in the IVR's log | {len(totals.crash_lines)} |
| datagrams dropped at the IVR's full socket buffer (not parsed) | {totals.udp_drops} |
| IVR RSS after the first round / at the end | {totals.rss_first_mb:.1f} / \
{totals.rss_end_mb:.1f} MB |
| wall time | {totals.seconds} s |

Failed rounds:

{failed}
"""
    write_section("SIP fuzz (bench/fuzz.py)", body)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run, nothing written")
    parser.add_argument("--udp", type=int, default=50_000)
    parser.add_argument("--tcp", type=int, default=10_000)
    args = parser.parse_args()
    udp_cases, tcp_cases = (3_000, 1_000) if args.quick else (args.udp, args.tcp)
    logging.basicConfig(level=logging.CRITICAL)
    workdir = Path(tempfile.mkdtemp(prefix="ivr-fuzz-"))
    sip_port = free_port()
    config = write_config(workdir, sip_port)
    with open(workdir / "ivr.log", "w") as log_file:
        ivr = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "ivr"), "--config", str(config), "serve"],
            cwd=ROOT,
            stderr=log_file,
            stdout=log_file,
        )
        try:
            for _ in range(120):
                time.sleep(0.5)
                if ivr.poll() is not None or "ready on sip" in (workdir / "ivr.log").read_text():
                    break
            if ivr.poll() is not None:
                print((workdir / "ivr.log").read_text(), file=sys.stderr)
                return 1
            totals = asyncio.run(run(udp_cases, tcp_cases, sip_port, workdir, ivr.pid))
        finally:
            ivr.terminate()
            try:
                ivr.wait(30)
            except subprocess.TimeoutExpired:
                ivr.kill()
    print(
        f"sip_fuzz_cases {totals.cases}, sip_fuzz_failures {len(totals.failed_rounds)}, "
        f"crash lines {len(totals.crash_lines)}, {totals.seconds} s; log {workdir / 'ivr.log'}"
    )
    for line in totals.failed_rounds[:10]:
        print("  ", line)
    if not args.quick:
        write_report(totals, udp_cases, tcp_cases)
    return 0 if not totals.failed_rounds else 1


if __name__ == "__main__":
    sys.exit(main())
