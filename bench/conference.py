"""Conference mixing bench: the CPU one 3-party conference costs the IVR.

K conferences of three parties run in this process on the IVR's own parts:
the shared 20 ms MediaClock, RtpStreams on real UDP sockets, ivr.conference.
Every 20 ms each party "receives" a G.711 frame (decoded to int16 as the
stream does for a packet) and the conference mixes N-1 (numpy), encodes each
party's frame and sends it as RTP to a sink socket. The process CPU time
(user + system) over T seconds with K conferences, minus the same with none
(the clock and the event loop idle), divided by T and K: % of one core per
conference. The feeding stands in for the network: receiving packets is the
same cost in a plain bridge, decoding them is counted.

    python -m bench.conference             # K = 20, 50, 100 over 20 s; writes the figure
    python -m bench.conference --quick     # K = 10 over 5 s, nothing written
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass

import numpy as np

from bench.report import machine, merge_results, now, write_section
from ivr.conference import CALLER, GUEST, OPERATOR, Conference
from ivr.media import codec as codecs
from ivr.media.clock import MediaClock
from ivr.media.mixer import FRAME_SAMPLES
from ivr.media.ports import RtpPorts
from ivr.media.rtp import RtpStream

LOG = logging.getLogger("bench.conference")
PARTIES = (("caller", CALLER, 500.0), ("operator", OPERATOR, 1100.0), ("dept", GUEST, 1700.0))


@dataclass
class Step:
    conferences: int
    seconds: float
    cpu_seconds: float
    cpu_percent: float  # of one core, the whole process
    per_conference_percent: float  # minus the idle baseline, divided by K
    late_ticks: int


def voice(hz: float) -> list[bytes]:
    """A second of a tone as 50 G.711 u-law frames (what a party sends)."""
    t = np.arange(8000) / 8000
    pcm = (6000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    data = codecs.encode(pcm, "PCMU")
    return [data[i : i + FRAME_SAMPLES] for i in range(0, len(data), FRAME_SAMPLES)]


class Feeder:
    """Each tick, one frame from every party, decoded as the stream would."""

    def __init__(self, conferences: list[Conference]) -> None:
        self._parties = [
            (p, voice(hz))
            for c in conferences
            for p, (_, _, hz) in zip(c.parties, PARTIES, strict=True)
        ]
        self._n = 0

    def tick(self) -> None:
        n = self._n % 50
        self._n += 1
        for party, frames in self._parties:
            party.hear(codecs.decode(frames[n], party.stream.codec))


async def run(k: int, seconds: float) -> Step:
    clock = MediaClock(LOG)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # never read: dropped
    sink_addr = sink.getsockname()
    ports = RtpPorts("127.0.0.1", 42000, 42000 + 2 * 3 * max(k, 1) + 200)
    conferences: list[Conference] = []
    streams: list[RtpStream] = []
    for _ in range(k):
        conference = Conference(clock, LOG, silent_after=3600.0)
        for name, role, _hz in PARTIES:
            stream = RtpStream(clock, LOG)
            await stream.open(ports)
            stream.set_remote(sink_addr, "PCMU", 0, None)
            conference.add(name, role, stream)
            streams.append(stream)
        conferences.append(conference)
    feeder = Feeder(conferences)

    class Keep:  # keeps the clock ticking with no conference (the baseline)
        def tick(self) -> None:
            pass

    clock.add(Keep())
    clock.add(feeder)
    await asyncio.sleep(1.0)  # settle
    late = clock.late_ticks
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    late = clock.late_ticks - late
    for conference in conferences:
        conference.close()
    for stream in streams:
        stream.close()
    clock.stop()
    sink.close()
    return Step(k, round(wall, 2), round(cpu, 3), round(100 * cpu / wall, 2), 0.0, late)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small step, nothing written")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    ks = [10] if args.quick else [20, 50, 100]
    seconds = 5.0 if args.quick else args.seconds
    load = os.getloadavg()[0]  # the machine is shared: said in the report
    baseline = asyncio.run(run(0, seconds))
    print(f"baseline (no conference): {baseline.cpu_percent} % of one core", flush=True)
    steps: list[Step] = []
    for k in ks:
        step = asyncio.run(run(k, seconds))
        step.per_conference_percent = round((step.cpu_percent - baseline.cpu_percent) / k, 3)
        steps.append(step)
        print(
            f"{k} conferences of 3: {step.cpu_percent} % of one core, "
            f"{step.per_conference_percent} % per conference, {step.late_ticks} late ticks",
            flush=True,
        )
    if args.quick:
        return 0
    figure = max(s.per_conference_percent for s in steps)  # the worst of the steps
    info, date = machine(), now()
    merge_results(
        {
            "conference_mix_cpu_percent_per_call": figure,
            "conference_steps": [asdict(s) for s in steps],
            "conference_baseline_cpu_percent": baseline.cpu_percent,
            "conference_date": date,
            "conference_load_average": round(load, 2),
            "conference_machine": info,
        }
    )
    rows = "\n".join(
        f"| {s.conferences} | {s.cpu_percent} | {s.per_conference_percent} | {s.late_ticks} |"
        for s in steps
    )
    body = f"""Measured {date} on {info["cpu"]} ({info["nproc"]} cores), Python {info["python"]};
`{info["uname"]}`; load average {load:.2f} when it started (other work on the machine).

Method: K conferences of three parties (caller, operator, department) in one process on
the IVR's own parts: the shared 20 ms media clock, RtpStreams on real UDP sockets,
ivr/conference.py. Every 20 ms each party is given one G.711 frame, decoded to int16
as the stream does for a received packet; each conference mixes N-1 in numpy, encodes
one frame per party and sends it as RTP (to a sink socket). Process CPU time (user +
system) over {seconds:.0f} s, minus the same process with no conference
({baseline.cpu_percent} % of one core: the clock and the event loop), divided by K.
Receiving the packets from the network is left out: a plain bridge pays it too.

| conferences | process CPU % of one core | CPU % per conference | late ticks |
|---|---|---|---|
{rows}

**conference_mix_cpu_percent_per_call: {figure}** (% of one core per 3-party conference,
the worst of the steps). So one core mixes about {int(100 / figure) if figure > 0 else "-"}
such conferences, beside everything else the IVR does on it.
"""
    write_section("Conference mixing (bench/conference.py)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
