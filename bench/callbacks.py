"""Callback latency: from a caller abandoning the queue to the callback
INVITE reaching their phone, with an operator free; and after a crash, from
the restart of `ivr serve` to the INVITE of the callback it left ringing.

`ivr serve` runs with a plan that puts callers straight into the operator
queue (one operator, a sipp that rings and never answers, so it is free
again the moment the caller leaves). Our trial caller abandons after 1.5 s.
The caller's "phone" is a UDP socket in this process that timestamps each
INVITE and answers 486 Busy (so each callback is one attempt). Abandon time =
the IVR's own record of the call ending (calls.ended_at).

    python -m bench.callbacks            # 20 abandons + the restart case, write figures
    python -m bench.callbacks --quick    # 3 abandons, write nothing
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import numpy as np

from bench.report import machine, merge_results, now, write_section

ROOT = Path(__file__).resolve().parents[1]
GOAL_P99_S = 2.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Phone(asyncio.DatagramProtocol):
    """Timestamps INVITEs by the number called; answers 486 (or nothing)."""

    def __init__(self) -> None:
        self.invites: dict[str, list[float]] = {}
        self.answer = True
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport is not a DatagramTransport subclass
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode(errors="replace")
        if not text.startswith("INVITE sip:"):
            return
        number = text[len("INVITE sip:") :].split("@", 1)[0]
        self.invites.setdefault(number, []).append(time.time())
        if not self.answer or self.transport is None:
            return
        keep = ("via:", "from:", "to:", "call-id:", "cseq:")
        lines = [ln for ln in text.split("\r\n") if ln.lower().startswith(keep)]
        lines = [ln + ";tag=busy1" if ln.lower().startswith("to:") else ln for ln in lines]
        reply = "SIP/2.0 486 Busy Here\r\n" + "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n"
        self.transport.sendto(reply.encode(), addr)


def write_config(directory: Path, sip_port: int, phone_port: int, operator_port: int) -> Path:
    config = directory / "config.toml"
    config.write_text(f"""
[sip]
host = "127.0.0.1"
port = {sip_port}
rtp_port_min = 31000
rtp_port_max = 31999

[dialplan]
file = "{ROOT / "tests" / "data" / "dialplans" / "straight_to_queue.toml"}"

[prompts]
voices_dir = "{ROOT / "voices"}"
cache_dir = "{ROOT / "var" / "prompt-cache"}"

[storage]
database = "{directory / "bench.sqlite3"}"

[tickets]
gazetteer = "{ROOT / "gazetteer.toml"}"

[web]
enabled = false

[operators]
ring_timeout = 600

[queues.general]
operators = ["sip:operator@127.0.0.1:{operator_port}"]

[callbacks]
dial_uri = "sip:{{number}}@127.0.0.1:{phone_port}"
retry = [0]
quiet_hours = ""
ring_timeout = 60
max_attempts_per_hour = 100

[logging]
level = "WARNING"
format = "json"
""")
    return config


async def serve(config: Path, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ivr.cli",
        "--config",
        str(config),
        "serve",
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def ended_at(db_path: Path, caller: str) -> float:
    from ivr.call_records import CallRecordStore
    from ivr.store import open_store

    for _ in range(200):
        db = await open_store(db_path)
        try:
            records = await CallRecordStore(db).list_recent(500)
        finally:
            await db.close()
        for record in records:
            if record.caller == caller and record.ended_at is not None:
                return float(record.ended_at)
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no ended call record for {caller}")


async def wait_invite(phone: Phone, number: str, count: int, timeout: float = 30.0) -> float:
    deadline = time.time() + timeout
    while len(phone.invites.get(number, [])) < count:
        if time.time() > deadline:
            raise RuntimeError(f"no callback INVITE to {number} in {timeout:.0f} s")
        await asyncio.sleep(0.01)
    return phone.invites[number][count - 1]


async def run(count: int) -> tuple[list[float], float]:
    from ivr.logs import setup_logging
    from ivr.trial_call import TrialOptions, place_call

    log = setup_logging("ERROR", "text")
    workdir = Path(tempfile.mkdtemp(prefix="ivr-callbacks-"))
    sip_port, phone_port, operator_port = free_port(), free_port(), free_port()
    loop = asyncio.get_running_loop()
    phone = Phone()
    await loop.create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", phone_port))
    operator = await asyncio.create_subprocess_exec(
        "sipp",
        "-sf",
        str(ROOT / "tests" / "data" / "sipp" / "uas_ring_only.xml"),
        "-i",
        "127.0.0.1",
        "-p",
        str(operator_port),
        "-nostdin",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    config = write_config(workdir, sip_port, phone_port, operator_port)
    server = await serve(config, workdir / "serve.log")
    await asyncio.sleep(4.0)
    latencies: list[float] = []
    try:
        for i in range(count):
            number = f"1380000{i:04d}"
            await place_call(
                TrialOptions(target=f"sip:12345@127.0.0.1:{sip_port}", duration=1.5, caller=number),
                log,
            )
            abandoned = await ended_at(workdir / "bench.sqlite3", number)
            invited = await wait_invite(phone, number, 1)
            latencies.append(invited - abandoned)
            print(
                f"abandon {i + 1}: callback INVITE after {latencies[-1] * 1000:.0f} ms", flush=True
            )
            await asyncio.sleep(0.5)
        # the restart case: a callback left ringing when the server is killed
        phone.answer = False
        number = "13999999999"
        await place_call(
            TrialOptions(target=f"sip:12345@127.0.0.1:{sip_port}", duration=1.5, caller=number),
            log,
        )
        await wait_invite(phone, number, 1)
        server.send_signal(signal.SIGKILL)
        await server.wait()
        restarted = time.time()
        server = await serve(config, workdir / "serve.log")
        after_restart = await wait_invite(phone, number, 2) - restarted
        print(f"after restart: callback INVITE {after_restart:.2f} s after the restart")
        return latencies, after_restart
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            await server.wait()
        operator.terminate()
        await operator.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    latencies, after_restart = asyncio.run(run(3 if args.quick else args.count))
    s = np.array(latencies)
    p50, p99, worst = (round(float(np.percentile(s, q)), 3) for q in (50, 99, 100))
    print(
        f"callback latency over {len(s)}: p50 {p50} s, p99 {p99} s, max {worst} s; "
        f"after restart {after_restart:.2f} s"
    )
    if args.quick:
        return 0
    info = machine()
    merge_results(
        {
            "callback_latency_p50_s": p50,
            "callback_latency_p99_s": p99,
            "callback_latency_after_restart_s": round(after_restart, 2),
            "callback_date": now(),
        }
    )
    write_section(
        "Callback latency (bench/callbacks.py)",
        f"""Measured {now()} on {info["cpu"]} ({info["nproc"]} cores), Python {info["python"]}.

Method: `ivr serve` with a plan that puts callers straight into the operator queue;
the one operator (sipp) rings and never answers, so it is free again the moment a
caller leaves. {len(s)} times, our trial caller (a new number each time) hangs up
after 1.5 s in the queue; the caller's phone is a UDP socket that timestamps the
callback INVITE and answers 486. Latency = INVITE arrival - the IVR's own
`calls.ended_at` for the abandoned call. Restart case: a callback is left ringing
(the phone does not answer), `ivr serve` is killed with SIGKILL and started again;
the figure is from the new process's launch to the callback's second INVITE (the
start itself - Python, config, prompts from the cache, SQLite - is inside it).

| p50 s | p99 s | max s | goal (p99) | after restart s |
|---|---|---|---|---|
| {p50} | {p99} | {worst} | <= {GOAL_P99_S:g} | {after_restart:.2f} |
""",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
