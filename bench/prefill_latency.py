"""Prefill latency: from the end of a caller's 5 s utterance to the
prefilled ticket being readable through the API.

`ivr serve` runs with a dial plan that asks for a description again and
again; our own trial caller (ivr call) plays real Mandarin speech from
../shared/speech cut into 5 s utterances with 3 s of silence between them.
A client on the API's event stream (/api/events) notes when each recording
is announced ("recorded": the VAD has just ended the utterance) and when the
ticket carrying its transcript is published ("prefilled"), then reads the
ticket with GET /api/tickets/{id}. The latency is recorded -> ticket read.

    python -m bench.prefill_latency            # 20 utterances, write the figures
    python -m bench.prefill_latency --quick    # 4 utterances, write nothing
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import soundfile as sf
import soxr

from bench.report import machine, merge_results, now, write_section

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "speech"
UTTERANCE_S = 5.0
GAP_S = 3.0
GOAL_MS = 500.0


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def caller_audio(count: int, out: Path) -> Path:
    """``count`` utterances of 5 s of real speech, 3 s of silence after each."""
    pieces = []
    for wav in sorted(SPEECH.glob("*.wav")):
        audio, rate = sf.read(str(wav), dtype="float32")
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        pieces.append(soxr.resample(audio, rate, 8000))
    speech = np.concatenate(pieces)
    n = int(UTTERANCE_S * 8000)
    gap = np.zeros(int(GAP_S * 8000), dtype=np.float32)
    chunks = [np.zeros(8000 * 2, dtype=np.float32)]
    for i in range(count):
        start = (i * n) % max(1, len(speech) - n)
        chunks += [speech[start : start + n], gap]
    sf.write(str(out), np.concatenate(chunks), 8000, subtype="PCM_16")
    return out


def write_config(directory: Path, sip_port: int, web_port: int) -> Path:
    config = directory / "config.toml"
    config.write_text(f"""
[sip]
host = "127.0.0.1"
port = {sip_port}
rtp_port_min = 30000
rtp_port_max = 30999

[dialplan]
file = "{ROOT / "bench" / "describe_loop.toml"}"

[prompts]
voices_dir = "{ROOT / "voices"}"
cache_dir = "{ROOT / "var" / "prompt-cache"}"

[storage]
database = "{directory / "bench.sqlite3"}"
recordings_dir = "{directory / "recordings"}"

[speech]
models_dir = "{ROOT / "asr_models"}"

[tickets]
gazetteer = "{ROOT / "gazetteer.toml"}"

[web]
port = {web_port}

[queues.general]
operators = ["sip:nobody@127.0.0.1:9"]

[logging]
level = "WARNING"
format = "json"
""")
    return config


BENCH_USER = "bench"
BENCH_PASSWORD = "bench-password-123"


async def watch(base: str, expected: int, ready: asyncio.Event) -> list[float]:
    """Seconds from each "recorded" event to its ticket read through the API."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        login = {"name": BENCH_USER, "password": BENCH_PASSWORD}
        async with http.post(f"{base}/api/login", json=login) as response:
            assert response.status == 200, await response.text()
        async with http.get(f"{base}/api/events") as stream:
            return await _watch(http, stream, base, expected, ready)


async def _watch(
    http: aiohttp.ClientSession,
    stream: aiohttp.ClientResponse,
    base: str,
    expected: int,
    ready: asyncio.Event,
) -> list[float]:
    latencies: list[float] = []
    recorded_at: dict[int, float] = {}
    seen_recordings = 0
    ready.set()
    event = ""
    async for raw in stream.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            if event == "recorded":
                recorded_at[int(data["recording"])] = time.perf_counter()
            elif event == "prefilled":
                done = [r for r in data["recordings"] if r["transcript"] is not None]
                if len(done) > seen_recordings:
                    seen_recordings = len(done)
                    async with http.get(f"{base}/api/tickets/{data['id']}") as response:
                        ticket = await response.json()
                    assert len(ticket["recordings"]) >= seen_recordings
                    latencies.append(time.perf_counter() - recorded_at[seen_recordings])
                    print(
                        f"utterance {seen_recordings}: {latencies[-1] * 1000:.0f} ms "
                        f"({ticket['recordings'][seen_recordings - 1]['transcript']})",
                        flush=True,
                    )
                    if len(latencies) >= expected:
                        return latencies
    return latencies


async def run(count: int) -> list[float]:
    from ivr.logs import setup_logging
    from ivr.trial_call import TrialOptions, place_call

    workdir = Path(tempfile.mkdtemp(prefix="ivr-prefill-"))
    sip_port, web_port = free_port(), free_port(socket.SOCK_STREAM)
    config = write_config(workdir, sip_port, web_port)
    adding = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ivr.cli",
        "--config",
        str(config),
        "users",
        "add",
        BENCH_USER,
        "--role",
        "operator",
        "--password-stdin",
        stdin=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    await adding.communicate(BENCH_PASSWORD.encode() + b"\n")
    assert adding.returncode == 0, "could not add the bench's console user"
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ivr.cli",
        "--config",
        str(config),
        "serve",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    base = f"http://127.0.0.1:{web_port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(120):
                try:
                    async with http.get(f"{base}/api/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.5)
        ready = asyncio.Event()
        watcher = asyncio.ensure_future(watch(base, count, ready))
        await ready.wait()
        voice = caller_audio(count, workdir / "caller.wav")
        options = TrialOptions(
            target=f"sip:12345@127.0.0.1:{sip_port}",
            play=voice,
            duration=2 + count * (UTTERANCE_S + GAP_S) + 5,
            caller="13800138000",
        )
        call = asyncio.ensure_future(place_call(options, setup_logging("WARNING", "text")))
        latencies = await asyncio.wait_for(watcher, options.duration + 60)
        call.cancel()
        return latencies
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(server.wait(), 30)
        except TimeoutError:
            server.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    count = 4 if args.quick else args.count
    latencies = sorted(asyncio.run(run(count)))
    ms = np.array(latencies) * 1000
    p50, p95, worst = (round(float(np.percentile(ms, q)), 1) for q in (50, 95, 100))
    print(f"prefill latency over {len(ms)} utterances: p50 {p50} ms, p95 {p95} ms, max {worst}")
    if args.quick:
        return 0
    from ivr.speech.utterance import ListenSettings

    pause = ListenSettings().speculate_after
    info = machine()
    merge_results(
        {
            "prefill_latency_p95_ms": p95,
            "prefill_latency_p50_ms": p50,
            "prefill_latency_utterances": len(ms),
            "prefill_date": now(),
        }
    )
    write_section(
        "Prefill latency (bench/prefill_latency.py)",
        f"""Measured {now()} on {info["cpu"]} ({info["nproc"]} cores), Python {info["python"]}.

Method: `ivr serve` (Whisper base, int8, `speech.threads = 1`, `workers = 2`) with a
dial plan that asks for a description over and over; our trial caller plays
{len(ms)} utterances of {UTTERANCE_S:.0f} s of real Mandarin (../shared/speech) with
{GAP_S:.0f} s of silence after each, over G.711. Latency = from the "recorded" event
(the VAD has ended the utterance, 1.2 s of trailing silence) to the ticket holding
that transcript read back with GET /api/tickets/{{id}}, both seen by one client of
the event stream. Recognition starts in the caller's pause (after {pause:g} s of
silence), so most of it is done before the utterance is declared over.

| p50 ms | p95 ms | max ms | goal (p95) |
|---|---|---|---|
| {p50} | {p95} | {worst} | <= {GOAL_MS:.0f} |
""",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
