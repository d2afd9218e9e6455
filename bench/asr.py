"""Speech recognition: accuracy, speed, memory and live streams per core of
the Whisper engine on the real Mandarin clips in ../shared/speech.

    .venv/bin/python -m bench.asr            # measure, print, record in
                                             # bench/results.json and docs/benchmarks.md
    .venv/bin/python -m bench.asr --no-write # measure and print only

Figures:
- cer_wideband: mean character error rate, clips at 16 kHz fed straight in.
- cer_telephone: the same after 8 kHz and G.711 u-law (what a call carries).
- asr_rtf: compute seconds / audio seconds, one stream, telephone path.
- asr_rss_mb: resident memory of a fresh process that loaded the model and
  transcribed every clip.
- asr_streams_per_core: the largest K for which K threads transcribing at
  once, in one process pinned to one core, keep up with real time (see
  the method below).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from bench.report import ROOT, machine, merge_results, now, write_section
from ivr.media import g711
from ivr.speech import character_error_rate, load_engine
from ivr.speech.whisper_engine import SIMPLIFIED_PROMPT, WhisperEngine

MODELS = ROOT / "asr_models"
SPEECH = ROOT.parent / "shared" / "speech"
SECTION = "Speech recognition (bench/asr.py)"
STREAM_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16)
LONG_STREAM_STEPS = (4, 8, 10, 12, 14, 16, 20)  # for the 16 s utterance
ROUNDS = 2  # each stream transcribes every clip this many times
GOAL_STREAMS = 8


@dataclass(frozen=True)
class Clip:
    name: str
    reference: str
    wideband: npt.NDArray[np.int16]  # 16 kHz
    telephone: npt.NDArray[np.int16]  # 8 kHz through G.711 u-law

    @property
    def seconds(self) -> float:
        return len(self.telephone) / 8000


def _pcm16(audio: npt.NDArray[np.float64]) -> npt.NDArray[np.int16]:
    return np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)


def load_clips() -> list[Clip]:
    if not SPEECH.is_dir():
        sys.exit(f"bench.asr: {SPEECH} (the shared Mandarin clips) is missing")
    clips = []
    for row in (SPEECH / "transcripts.tsv").read_text(encoding="utf-8").splitlines():
        if not row.strip():
            continue
        name, reference = row.split("\t")
        audio, rate = sf.read(SPEECH / name, dtype="float64", always_2d=True)
        mono = audio.mean(axis=1)
        wide = mono if rate == 16000 else soxr.resample(mono, rate, 16000, quality="VHQ")
        narrow = soxr.resample(mono, rate, 8000, quality="VHQ")
        line = g711.decode_ulaw(g711.encode_ulaw(_pcm16(narrow)))
        clips.append(Clip(name, reference, _pcm16(wide), line))
    return clips


# -- accuracy and single-stream speed ------------------------------------------


def accuracy(engine: WhisperEngine, clips: list[Clip]) -> dict[str, Any]:
    """Per clip: both transcripts, their CER and the telephone compute time
    (best of three, after a warm-up: the figure of an idle machine)."""
    engine.transcribe(clips[0].telephone)  # warm-up
    rows: list[dict[str, Any]] = []
    for clip in clips:
        wide = engine.transcribe(clip.wideband, sample_rate=16000)
        runs = [engine.transcribe(clip.telephone) for _ in range(3)]
        rows.append(
            {
                "clip": clip.name,
                "reference": clip.reference,
                "seconds": round(clip.seconds, 2),
                "wideband": wide.text,
                "cer_wideband": round(character_error_rate(clip.reference, wide.text), 3),
                "telephone": runs[0].text,
                "cer_telephone": round(character_error_rate(clip.reference, runs[0].text), 3),
                "compute_s": round(min(r.compute_seconds for r in runs), 3),
            }
        )
    return {
        "rows": rows,
        "cer_wideband": round(statistics.mean(r["cer_wideband"] for r in rows), 3),
        "cer_telephone": round(statistics.mean(r["cer_telephone"] for r in rows), 3),
        "rtf": round(sum(r["compute_s"] for r in rows) / sum(c.seconds for c in clips), 3),
    }


def options(engine: WhisperEngine, clips: list[Clip]) -> list[dict[str, Any]]:
    """The decoding choices measured against each other."""
    chosen = (engine.beam_size, engine.initial_prompt)
    table = []
    for beam in (1, 5):
        for prompt in (None, SIMPLIFIED_PROMPT):
            engine.beam_size, engine.initial_prompt = beam, prompt
            wide, tel, compute = [], [], 0.0
            for clip in clips:
                w = engine.transcribe(clip.wideband, sample_rate=16000)
                t = engine.transcribe(clip.telephone)
                wide.append(character_error_rate(clip.reference, w.text))
                tel.append(character_error_rate(clip.reference, t.text))
                compute += t.compute_seconds
            table.append(
                {
                    "beam": beam,
                    "prompt": prompt or "",
                    "padding": "silence to 30 s",
                    "cer_wideband": round(statistics.mean(wide), 3),
                    "cer_telephone": round(statistics.mean(tel), 3),
                    "rtf": round(compute / sum(c.seconds for c in clips), 3),
                }
            )
    engine.beam_size, engine.initial_prompt = chosen
    engine.pad_to_window = False
    wide, tel, compute = [], [], 0.0
    for clip in clips:
        w = engine.transcribe(clip.wideband, sample_rate=16000)
        t = engine.transcribe(clip.telephone)
        wide.append(character_error_rate(clip.reference, w.text))
        tel.append(character_error_rate(clip.reference, t.text))
        compute += t.compute_seconds
    engine.pad_to_window = True
    table.append(
        {
            "beam": engine.beam_size,
            "prompt": engine.initial_prompt or "",
            "padding": "faster-whisper's (zeros in the spectrogram)",
            "cer_wideband": round(statistics.mean(wide), 3),
            "cer_telephone": round(statistics.mean(tel), 3),
            "rtf": round(compute / sum(c.seconds for c in clips), 3),
        }
    )
    return table


def join(clips: list[Clip]) -> npt.NDArray[np.int16]:
    """The telephone clips one after another, 0.3 s apart, as one utterance."""
    gap = np.zeros(2400, dtype=np.int16)
    return np.concatenate([part for c in clips for part in (c.telephone, gap)])


def long_utterance(engine: WhisperEngine, clips: list[Clip]) -> dict[str, float]:
    """Every clip joined (0.3 s apart) into one utterance: Whisper encodes a
    whole 30 s window whatever the length, so longer utterances cost less per
    second of speech."""
    joined = join(clips)
    t = min((engine.transcribe(joined) for _ in range(2)), key=lambda t: t.compute_seconds)
    return {
        "seconds": round(t.audio_seconds, 2),
        "compute_s": round(t.compute_seconds, 3),
        "rtf": round(t.compute_seconds / t.audio_seconds, 3),
    }


def latency_with_threads(clips: list[Clip], threads: int) -> float:
    """Median seconds to transcribe one clip with ``threads`` CPU threads."""
    engine = load_engine("whisper", MODELS, threads=threads)
    engine.transcribe(clips[0].telephone)
    return round(
        statistics.median(engine.transcribe(c.telephone).compute_seconds for c in clips), 3
    )


# -- memory and streams per core, each in a fresh process ------------------------


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_worker() -> dict[str, float]:
    engine = load_engine("whisper", MODELS)
    for clip in load_clips():
        engine.transcribe(clip.telephone)
    return {"rss_mb": round(_vm("VmRSS"), 1), "peak_mb": round(_vm("VmHWM"), 1)}


def streams_worker(streams: int, rounds: int, joined: bool) -> dict[str, Any]:
    """``streams`` threads share one engine (cpu_threads=1), each
    transcribing every clip ``rounds`` times starting at a different clip
    (with ``joined``, all the clips as one long utterance). The process was
    pinned to one core before it started."""
    clips = load_clips()
    if joined:
        whole = join(clips)
        clips = [Clip("joined", "", np.zeros(0, dtype=np.int16), whole)]
    engine = load_engine("whisper", MODELS, threads=1)
    engine.transcribe(clips[0].telephone)  # warm-up
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(streams + 1)

    def stream(index: int) -> None:
        order = clips[index % len(clips) :] + clips[: index % len(clips)]
        start.wait()
        for _ in range(rounds):
            for clip in order:
                began = time.perf_counter()
                engine.transcribe(clip.telephone)
                with lock:
                    latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    audio = rounds * sum(c.seconds for c in clips)  # per stream
    latencies.sort()
    return {
        "streams": streams,
        "wall_s": round(wall, 2),
        "audio_s_per_stream": round(audio, 2),
        "rtf_per_stream": round(wall / audio, 3),
        "latency_p50_s": round(latencies[len(latencies) // 2], 2),
        "latency_p95_s": round(latencies[int(len(latencies) * 0.95)], 2),
        "ok": wall <= audio,
        "affinity": sorted(os.sched_getaffinity(0)),
    }


def pool_worker(workers: int, threads: int, callers: int) -> dict[str, Any]:
    """``callers`` threads over all cores, the engine loaded with
    ``workers`` and ``threads``: utterances a second and their latency."""
    clips = load_clips()
    engine = load_engine("whisper", MODELS, threads=threads, workers=workers)
    engine.transcribe(clips[0].telephone)
    latencies: list[float] = []

    def caller() -> None:
        for clip in clips * ROUNDS:
            began = time.perf_counter()
            engine.transcribe(clip.telephone)
            latencies.append(time.perf_counter() - began)

    threads_ = [threading.Thread(target=caller) for _ in range(callers)]
    began = time.perf_counter()
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    wall = time.perf_counter() - began
    return {
        "workers": workers,
        "threads": threads,
        "callers": callers,
        "utterances_per_s": round(len(latencies) / wall, 2),
        "latency_p50_s": round(statistics.median(latencies), 2),
        "rss_mb": round(_vm("VmRSS"), 1),
    }


def in_subprocess(*args: str, core: int | None = None) -> dict[str, Any]:
    def pin() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})  # inherited by every thread

    result = subprocess.run(
        [sys.executable, "-m", "bench.asr", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=pin,
    )
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def streams_per_core(
    steps_to_try: tuple[int, ...], *, joined: bool = False
) -> tuple[int, list[dict[str, Any]]]:
    """Try each K of ``steps_to_try`` until the core no longer keeps up."""
    core = max(os.sched_getaffinity(0))
    steps = []
    best = 0
    for k in steps_to_try:
        args = ["--streams-worker", str(k), "--rounds", str(ROUNDS)]
        step = in_subprocess(*args, *(["--joined"] if joined else []), core=core)
        steps.append(step)
        print(
            f"  {k:2d} streams on core {core}: wall {step['wall_s']} s for "
            f"{step['audio_s_per_stream']} s of speech a stream, RTF per stream "
            f"{step['rtf_per_stream']}, latency p95 {step['latency_p95_s']} s",
            flush=True,
        )
        if not step["ok"]:
            break
        best = k
    return best, steps


# -- report ----------------------------------------------------------------------


def _step_rows(steps: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| streams | wall s | speech s a stream | RTF per stream | latency p50 s | p95 s "
        "| keeps up |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        rows.append(
            f"| {s['streams']} | {s['wall_s']} | {s['audio_s_per_stream']} | "
            f"{s['rtf_per_stream']} | {s['latency_p50_s']} | {s['latency_p95_s']} | "
            f"{'yes' if s['ok'] else 'no'} |"
        )
    return rows


def report(
    figures: dict[str, Any],
    acc: dict[str, Any],
    opts: list[dict[str, Any]],
    long: dict[str, float],
    steps: list[dict[str, Any]],
    long_steps: list[dict[str, Any]],
    two_threads: float,
) -> str:
    m = machine()
    lines = [
        f"Measured {now()} on {m['cpu']} ({m['nproc']} cores), Python {m['python']}; "
        f"load average {figures['load_average']} when it started.",
        "",
        "Engine: Whisper base (faster-whisper 1.2.1, CTranslate2 int8 on the CPU, "
        "`cpu_threads=1`), beam 5, no initial prompt, one temperature, Whisper's VAD off, "
        "audio padded with silence to a 30 s window, output through OpenCC t2s. "
        f"Clips: the {len(acc['rows'])} real Mandarin recordings in ../shared/speech "
        "(AISHELL-1, AISHELL-2, WenetSpeech, F5-TTS example; "
        f"{sum(r['seconds'] for r in acc['rows']):.1f} s, "
        f"{sum(len(r['reference']) for r in acc['rows'])} reference characters). "
        "Wideband = the clip at 16 kHz fed straight in; telephone = resampled to 8 kHz, "
        "through G.711 u-law and back, then the engine's own 8 -> 16 kHz resampling. "
        "CER = edit distance over reference characters, punctuation and spaces removed.",
        "",
        "| clip | s | reference | wideband | CER | telephone | CER | compute s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in acc["rows"]:
        lines.append(
            f"| {r['clip']} | {r['seconds']} | {r['reference']} | {r['wideband']} | "
            f"{r['cer_wideband']} | {r['telephone']} | {r['cer_telephone']} | {r['compute_s']} |"
        )
    lines += [
        "",
        f"**cer_wideband {figures['cer_wideband']}, cer_telephone {figures['cer_telephone']}** "
        "(mean over clips). Four clips are few: one character is 7 to 25 points of one "
        "clip's CER (2 to 6 points of the mean), so read these as rough. DESIGN.md "
        "measured 16.75% / 22% on ten clips with faster-whisper's default padding.",
        "",
        f"**asr_rtf {figures['asr_rtf']}** (one stream, telephone path, best of three, "
        "warm). Whisper encodes a whole 30 s window whatever the utterance's length, so "
        "an utterance costs about the same "
        f"({min(r['compute_s'] for r in acc['rows'])}-"
        f"{max(r['compute_s'] for r in acc['rows'])} s here) whether it lasts 2 s or 7 s: "
        f"the {long['seconds']} s of all clips joined into one utterance took "
        f"{long['compute_s']} s (RTF {long['rtf']}). That is also the latency from the end "
        f"of an utterance to its text on an idle core; with `threads = 2` it is "
        f"{two_threads} s (median).",
        "",
        f"**asr_rss_mb {figures['asr_rss_mb']}** (a fresh process: model loaded, every "
        f"clip transcribed; peak {figures['asr_rss_peak_mb']} MB).",
        "",
        "Decoding choices (same clips; RTF on the telephone path, one run each):",
        "",
        "| beam | initial prompt | padding | CER wideband | CER telephone | RTF |",
        "|---|---|---|---|---|---|",
    ]
    for o in opts:
        lines.append(
            f"| {o['beam']} | {o['prompt'] or '(none)'} | {o['padding']} | "
            f"{o['cer_wideband']} | {o['cer_telephone']} | {o['rtf']} |"
        )
    lines += [
        "",
        "Beam 5 costs about what greedy search costs (the 30 s encoder dominates) and "
        "was more accurate. The prompt makes Whisper write simplified characters by "
        "itself, but it was less accurate here (it turned 换一首歌 into 坏一首歌), so "
        "OpenCC t2s does the conversion instead. The engine pads the audio with "
        "silence to 30 s before the spectrogram, as OpenAI's reference code does; "
        "faster-whisper on its own pads the spectrogram with zeros, which Whisper "
        "never saw in training (last row).",
        "",
        "Live streams per core. Method: a fresh process pinned to one core "
        "(`os.sched_setaffinity`) loads the engine once (`cpu_threads=1`) and starts K "
        f"threads; each transcribes every telephone clip {ROUNDS} times, back to back, "
        "starting at a different clip. A live call produces one second of speech a "
        "second, so the core keeps up with K callers talking without pause when the "
        "wall time is at most the speech each thread transcribed (RTF per stream <= 1). "
        "Latency is from handing an utterance to the engine to its text.",
        "",
    ]
    lines += _step_rows(steps)
    k = figures["asr_streams_per_core"]
    k_long = figures["asr_streams_per_core_long_utterance"]
    lines += [
        "",
        f"The same with one {long['seconds']} s utterance (every clip joined) per turn, "
        "like a caller describing a problem:",
        "",
        *_step_rows(long_steps),
    ]
    lines += [
        "",
        "Concurrent utterances are interleaved, not queued: CTranslate2 takes each "
        "one's encoder and decoder steps in turn, so every caller's latency grows with "
        "K rather than the first ones finishing early.",
        "",
        f"Settings for the whole machine ({figures['asr_pool_settings'][0]['callers']} "
        "callers talking without pause, over all cores; `workers` = `speech.workers` = "
        "model replicas and transcriptions at once, `threads` = `speech.threads` = CPU "
        "threads per transcription):",
        "",
        "| workers | threads | utterances a second | latency p50 s | RSS MB |",
        "|---|---|---|---|---|",
        *(
            f"| {p['workers']} | {p['threads']} | {p['utterances_per_s']} | "
            f"{p['latency_p50_s']} | {p['rss_mb']} |"
            for p in figures["asr_pool_settings"]
        ),
        "",
        "With one worker, concurrent calls take turns on one core whatever the pool "
        "size; one worker per core uses them all.",
    ]
    shortest = min(r["compute_s"] for r in acc["rows"])
    failed = [s for s in steps if not s["ok"]]
    if failed and failed[0]["rtf_per_stream"] <= 1.05:
        lines += [
            "",
            f"{failed[0]['streams']} streams were at the edge (RTF per stream "
            f"{failed[0]['rtf_per_stream']}): on an idle machine they may keep up.",
        ]
    verdict = f"**asr_streams_per_core {k}** (short answers; {k_long} with " + (
        f"{long['seconds']} s utterances): the goal of {GOAL_STREAMS} is "
    )
    if k >= GOAL_STREAMS:
        verdict += "met."
    else:
        verdict += (
            "not met for short utterances. Whisper has no streaming: each utterance is "
            "decoded at its end, and every decode runs the encoder over a full 30 s window "
            f"(about {shortest} s of one core for Whisper base int8 on this CPU) however "
            "short the utterance, so one core finishes about one utterance a second. With "
            f"the 2-7 s answers of these clips that is {k} callers speaking without pause; "
            f"with {long['seconds']} s descriptions it is {k_long}. Real callers pause "
            "(prompts play, they listen), so a core serves more calls than this, but "
            "menu answers are short. Ways to the goal: Vosk with a Chinese model for menu "
            "answers (a streaming decoder whose cost follows the audio, with grammars), a "
            "shorter encoder window for short utterances (CTranslate2 accepts it and it "
            "was 4-5x faster in a trial while building the engine, but Whisper then "
            "repeated itself on some clips: not used), or more cores."
        )
    lines += ["", verdict]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asr", description=__doc__)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--rss-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--streams-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=argparse.SUPPRESS)
    parser.add_argument("--joined", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pool-worker", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_worker:
        print(json.dumps(rss_worker()))
        return 0
    if args.pool_worker:
        print(json.dumps(pool_worker(*args.pool_worker)))
        return 0
    if args.streams_worker:
        print(json.dumps(streams_worker(args.streams_worker, args.rounds, args.joined)))
        return 0

    load_average = " ".join(f"{x:.2f}" for x in os.getloadavg())
    clips = load_clips()
    engine = load_engine("whisper", MODELS, threads=1)
    assert isinstance(engine, WhisperEngine)
    print("accuracy and single-stream speed ...", flush=True)
    acc = accuracy(engine, clips)
    for r in acc["rows"]:
        print(
            f"  {r['clip']}: {r['reference']} | wide {r['wideband']} ({r['cer_wideband']}) "
            f"| tel {r['telephone']} ({r['cer_telephone']}) | {r['compute_s']} s"
        )
    long = long_utterance(engine, clips)
    print("decoding choices ...", flush=True)
    opts = options(engine, clips)
    for o in opts:
        print(f"  {o}")
    del engine
    two_threads = latency_with_threads(clips, 2)
    print("memory ...", flush=True)
    rss = in_subprocess("--rss-worker")
    ncpu = len(os.sched_getaffinity(0))
    print(f"pool settings on {ncpu} cores ...", flush=True)
    pools = [
        in_subprocess("--pool-worker", str(w), str(t), str(ncpu))
        for w, t in ((1, 1), (ncpu, 1), (1, ncpu))
    ]
    for pool in pools:
        print(f"  {pool}")
    print("streams per core ...", flush=True)
    best, steps = streams_per_core(STREAM_STEPS)
    print("streams per core, one long utterance ...", flush=True)
    best_long, long_steps = streams_per_core(LONG_STREAM_STEPS, joined=True)
    figures: dict[str, Any] = {
        "load_average": load_average,
        "cer_wideband": acc["cer_wideband"],
        "cer_telephone": acc["cer_telephone"],
        "asr_rtf": acc["rtf"],
        "asr_rss_mb": rss["rss_mb"],
        "asr_rss_peak_mb": rss["peak_mb"],
        "asr_streams_per_core": best,
        "asr_streams_per_core_long_utterance": best_long,
        "asr_latency_s": round(statistics.median(r["compute_s"] for r in acc["rows"]), 3),
        "asr_clips": acc["rows"],
        "asr_stream_steps": steps,
        "asr_stream_steps_long_utterance": long_steps,
        "asr_pool_settings": pools,
    }
    body = report(figures, acc, opts, long, steps, long_steps, two_threads)
    del figures["load_average"]
    print()
    print(body)
    if not args.no_write:
        merge_results(figures)
        write_section(SECTION, body)
        print(f"\nrecorded in {ROOT / 'bench' / 'results.json'} and docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
