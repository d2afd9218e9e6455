"""Concurrent-call bench: how many calls can one IVR process carry with the
greeting playing, RTP inter-packet gap p99 <= 25 ms and no loss?

The IVR runs as `ivr serve` (a subprocess, its own config). sipp places N
calls (signalling only); every call's SDP points its audio at one UDP port
owned by a separate receiver process, which timestamps every RTP packet the
IVR sends (demultiplexed by SSRC) and echoes it back, so the IVR's receive
path (jitter buffer, in-band DTMF detection) is loaded too. Over a steady
window with all N calls up it reports inter-packet gap percentiles and
sequence-number loss per stream, plus the IVR's CPU (% of one core) and RSS.

    python -m bench.calls            # ramp 50..800 calls, write the figures
    python -m bench.calls --quick    # two small steps, nothing written
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from bench.report import machine, merge_results, now, write_section

ROOT = Path(__file__).resolve().parents[1]
GAP_LIMIT_MS = 25.0
HOLD_S = 40  # each sipp call lasts this long; the window fits inside it
WINDOW_S = 10.0
RATE_CPS = 60  # calls per second sipp opens


@dataclass
class Step:
    calls: int
    streams_seen: int
    gap_p50_ms: float
    gap_p99_ms: float
    gap_max_ms: float
    packets: int
    lost: int
    cpu_percent: float
    rss_mb: float
    sipp_failed: int

    @property
    def ok(self) -> bool:
        return (
            self.streams_seen >= self.calls
            and self.gap_p99_ms <= GAP_LIMIT_MS
            and self.lost == 0
            and self.sipp_failed == 0
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the receiver (a separate process) -----------------------------------------
def receiver(port: int, conn: Connection) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    last: dict[int, tuple[int, int]] = {}  # ssrc -> (arrival ns, seq)
    gaps: list[int] = []
    lost = 0
    packets = 0
    measuring_until = 0.0
    active: dict[int, float] = {}
    while True:
        if conn.poll():
            command = conn.recv()
            if command[0] == "stop":
                return
            if command[0] == "count":
                now = time.monotonic()
                conn.send(sum(1 for t in active.values() if now - t < 1.0))
            elif command[0] == "measure":
                gaps, lost, packets, last = [], 0, 0, {}
                measuring_until = time.monotonic() + command[1]
        ready, _, _ = select.select([sock], [], [], 0.05)
        if not ready:
            if measuring_until and time.monotonic() > measuring_until:
                conn.send((np.asarray(gaps, dtype=np.int64), lost, packets, len(last)))
                measuring_until = 0.0
            continue
        for _ in range(256):
            try:
                data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                break
            now_ns = time.monotonic_ns()
            if len(data) < 12:
                continue
            sock.sendto(data, addr)  # echo: the IVR hears "the caller"
            ssrc = int.from_bytes(data[8:12], "big")
            seq = int.from_bytes(data[2:4], "big")
            active[ssrc] = now_ns / 1e9
            if not measuring_until:
                continue
            packets += 1
            previous = last.get(ssrc)
            if previous is not None:
                gaps.append(now_ns - previous[0])
                missing = (seq - previous[1] - 1) & 0xFFFF
                if missing < 1000:
                    lost += missing
            last[ssrc] = (now_ns, seq)
        if measuring_until and time.monotonic() > measuring_until:
            conn.send((np.asarray(gaps, dtype=np.int64), lost, packets, len(last)))
            measuring_until = 0.0


# -- the IVR under test ----------------------------------------------------------
def write_config(directory: Path, sip_port: int) -> Path:
    config = directory / "config.toml"
    config.write_text(f"""
[sip]
host = "127.0.0.1"
port = {sip_port}
rtp_port_min = 20000
rtp_port_max = 29999
rtp_timeout = 3600.0
max_calls = 5000

[dialplan]
file = "{ROOT / "bench" / "loop_plan.toml"}"

[prompts]
voices_dir = "{ROOT / "voices"}"
cache_dir = "{ROOT / "var" / "prompt-cache"}"

[storage]
database = "{directory / "bench.sqlite3"}"

[queues.general]
operators = ["sip:nobody@127.0.0.1:9"]

[tickets]
gazetteer = "{ROOT / "gazetteer.toml"}"

[web]
enabled = false

[logging]
level = "WARNING"
format = "json"
""")
    return config


def scenario(directory: Path, media_port: int) -> Path:
    path = directory / "uac_hold.xml"
    path.write_text(f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="bench hold">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:1390000[call_number]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=bench 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio {media_port} RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
  ]]></send>
  <recv response="100" optional="true"></recv>
  <recv response="180" optional="true"></recv>
  <recv response="200"></recv>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:1390000[call_number]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <pause milliseconds="{HOLD_S * 1000}"/>
  <send retrans="500"><![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:1390000[call_number]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200"></recv>
</scenario>
""")
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_step(
    n: int, ivr_pid: int, sip_port: int, conn: Connection, workdir: Path, xml: Path
) -> Step:
    sipp = subprocess.Popen(
        [
            "sipp",
            "-sf",
            str(xml),
            f"127.0.0.1:{sip_port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-m",
            str(n),
            "-l",
            str(n),
            "-r",
            str(RATE_CPS),
            "-s",
            "12345",
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(workdir / f"stat-{n}.csv"),
            "-timeout",
            str(HOLD_S + n // RATE_CPS + 30),
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + n / RATE_CPS + 15
    streams = 0
    while time.monotonic() < deadline:
        time.sleep(0.5)
        conn.send(("count",))
        streams = int(conn.recv())
        if streams >= n:
            break
    time.sleep(2.0)  # let the ramp settle
    cpu0, t0 = cpu_seconds(ivr_pid), time.monotonic()
    conn.send(("measure", WINDOW_S))
    gaps_ns, lost, packets, seen = conn.recv()
    cpu = (cpu_seconds(ivr_pid) - cpu0) / (time.monotonic() - t0) * 100
    rss = rss_mb(ivr_pid)
    sipp.wait(timeout=HOLD_S + n / RATE_CPS + 60)
    failed = sipp_failed(workdir / f"stat-{n}.csv")
    gaps = np.asarray(gaps_ns, dtype=np.float64) / 1e6
    time.sleep(2.0)  # calls torn down before the next step
    return Step(
        calls=n,
        streams_seen=int(seen),
        gap_p50_ms=round(float(np.percentile(gaps, 50)), 2) if len(gaps) else 0.0,
        gap_p99_ms=round(float(np.percentile(gaps, 99)), 2) if len(gaps) else 0.0,
        gap_max_ms=round(float(gaps.max()), 2) if len(gaps) else 0.0,
        packets=int(packets),
        lost=int(lost),
        cpu_percent=round(cpu, 1),
        rss_mb=round(rss, 1),
        sipp_failed=failed,
    )


def sipp_failed(stat: Path) -> int:
    try:
        rows = stat.read_text().splitlines()
    except OSError:
        return -1
    if len(rows) < 2:
        return -1
    header = rows[0].split(";")
    last = rows[-1].split(";")
    return int(last[header.index("FailedCall(C)")])


def profile(pid: int, seconds: int, out: Path) -> list[tuple[str, float]]:
    """Top functions by own time from py-spy (empty if py-spy cannot run here)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy==0.4.3"], check=False)
    try:
        subprocess.run(
            [
                spy,
                "record",
                "-p",
                str(pid),
                "-d",
                str(seconds),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(out),
                "--nonblocking",
            ],
            check=True,
            capture_output=True,
            timeout=seconds + 30,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"py-spy failed: {exc}", file=sys.stderr)
        return []
    own: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        leaf = re.sub(r":\d+\)$", ")", stack.split(";")[-1]) or "(native code)"
        own[leaf] = own.get(leaf, 0) + int(count)
        total += int(count)
    top = sorted(own.items(), key=lambda kv: -kv[1])[:12]
    return [(name, round(100 * count / total, 1)) for name, count in top]


def write_report(steps: list[Step], best: Step | None, top: list[tuple[str, float]]) -> None:
    info = machine()
    date = now()
    merge_results(
        {
            "calls_concurrent_max": best.calls if best else 0,
            "rtp_gap_p99_ms_at_max": best.gap_p99_ms if best else None,
            "cpu_percent_at_max": best.cpu_percent if best else None,
            "rss_mb_at_max": best.rss_mb if best else None,
            "calls_steps": [asdict(s) | {"ok": s.ok} for s in steps],
            "calls_date": date,
            "calls_machine": info,
            "calls_profile_top": top,
        }
    )
    rows = "\n".join(
        f"| {s.calls} | {s.streams_seen} | {s.gap_p50_ms} | {s.gap_p99_ms} | {s.gap_max_ms} "
        f"| {s.lost} | {s.cpu_percent} | {s.rss_mb} | {s.sipp_failed} | {'yes' if s.ok else 'no'} |"
        for s in steps
    )
    prof = "\n".join(f"| `{name}` | {share} |" for name, share in top) or "| (no profile) | |"
    table_head = (
        "| calls | streams | gap p50 ms | gap p99 ms | gap max ms | lost | IVR CPU % "
        "| RSS MB | sipp failed | pass |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    body = f"""Measured {date} on {info["cpu"]} ({info["nproc"]} cores), Python {info["python"]};
`{info["uname"]}`.

Method: `ivr serve` with a dial plan whose greeting loops; sipp opens N calls at
{RATE_CPS}/s, each held {HOLD_S} s; every call's audio goes to one receiver process
that timestamps each RTP packet (by SSRC) and echoes it back, so the IVR both sends
and receives 50 packets/s per call. Over a {WINDOW_S:.0f} s window with all calls up:
inter-packet gap percentiles over all streams, RTP sequence loss, the IVR process's
CPU (% of one core, from /proc) and RSS. Pass: gap p99 <= {GAP_LIMIT_MS:.0f} ms, no loss,
no failed sipp call. The receiver shares the 2 cores with the IVR and sipp, so its
own scheduling delay is inside the measured gaps.

{table_head}
{rows}

**Largest passing N: {best.calls if best else 0}** (gap p99 {best.gap_p99_ms if best else "-"} ms,
CPU {best.cpu_percent if best else "-"} % of one core, RSS {best.rss_mb if best else "-"} MB).
Goal: 500 calls on 2 cores.

Where the time goes (py-spy, {"at the largest passing N" if best else "at the last step"},
share of samples by innermost Python function, lines folded):

| function | % of samples |
|---|---|
{prof}
"""
    write_section("Concurrent calls (bench/calls.py)", body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small steps, write nothing")
    parser.add_argument("--steps", default="50,100,200,300,400,500,600,800")
    args = parser.parse_args()
    steps_n = [10, 30] if args.quick else [int(x) for x in args.steps.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="ivr-bench-"))
    sip_port = free_port()
    media_port = free_port()
    config = write_config(workdir, sip_port)
    xml = scenario(workdir, media_port)
    parent, child = mp.Pipe()
    rx = mp.Process(target=receiver, args=(media_port, child), daemon=True)
    rx.start()
    ivr = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "ivr"), "--config", str(config), "serve"],
        cwd=ROOT,
        stderr=open(workdir / "ivr.log", "w"),  # noqa: SIM115 (open while the IVR runs)
    )
    steps: list[Step] = []
    top: list[tuple[str, float]] = []
    try:
        time.sleep(8.0)  # prompts from cache, socket up
        if ivr.poll() is not None:
            print((workdir / "ivr.log").read_text(), file=sys.stderr)
            return 1
        print(
            f"{'calls':>6} {'streams':>7} {'p50':>6} {'p99':>6} {'max':>7} {'lost':>5} "
            f"{'cpu%':>6} {'rss':>6} {'fail':>4}"
        )
        for n in steps_n:
            step = run_step(n, ivr.pid, sip_port, parent, workdir, xml)
            steps.append(step)
            print(
                f"{step.calls:>6} {step.streams_seen:>7} {step.gap_p50_ms:>6} "
                f"{step.gap_p99_ms:>6} {step.gap_max_ms:>7} {step.lost:>5} "
                f"{step.cpu_percent:>6} {step.rss_mb:>6} {step.sipp_failed:>4} "
                f"{'ok' if step.ok else 'FAIL'}",
                flush=True,
            )
            if not step.ok:
                break
        passing = [s for s in steps if s.ok]
        best = max(passing, key=lambda s: s.calls) if passing else None
        if not args.quick:
            target = best.calls if best else steps_n[0]
            print(f"profiling at {target} calls ...", flush=True)
            sipp = subprocess.Popen(
                [
                    "sipp",
                    "-sf",
                    str(xml),
                    f"127.0.0.1:{sip_port}",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    str(free_port()),
                    "-m",
                    str(target),
                    "-l",
                    str(target),
                    "-r",
                    str(RATE_CPS),
                    "-s",
                    "12345",
                    "-nostdin",
                ],
                cwd=workdir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(target / RATE_CPS + 4)
            top = profile(ivr.pid, 10, workdir / "profile.txt")
            sipp.wait(timeout=HOLD_S + 60)
            write_report(steps, best, top)
            for name, share in top:
                print(f"  {share:5.1f}%  {name}")
        print(f"largest passing N: {best.calls if best else 0}")
    finally:
        ivr.send_signal(signal.SIGTERM)
        try:
            ivr.wait(timeout=40)
        except subprocess.TimeoutExpired:
            ivr.kill()
        parent.send(("stop",))
        rx.join(timeout=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
