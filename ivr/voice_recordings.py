"""The prompt recording kit: check, convert and install recorded prompts.

A voice talent records the dial plan's prompts in a dialect (one file per
prompt key, e.g. ``welcome.wav``); ``import_folder`` checks each file, converts
it to what the IVR plays (8 kHz mono 16-bit PCM) and installs it as
``voices/<dialect>/<key>.wav``, where ``ivr.prompts`` prefers it to synthesis.
``voice_status`` says, per dialect and prompt key, whether callers hear a
recording, synthesised speech or (neither) the mandarin prompt.

What ``check_recording`` rejects (``reasons``) and converts (``changes``):

* not readable by libsndfile (WAV, FLAC, OGG, AIFF, AU...): rejected, with
  libsndfile's own words; empty (no samples) or shorter than
  ``MIN_SECONDS`` (0.3 s): rejected.
* more than ``MAX_CHANNELS`` (2) channels: rejected (a multitrack session
  export, not a prompt); 2 channels: averaged to mono.
* a sample rate below ``SAMPLE_RATE`` (8000 Hz): rejected (it would have to
  be invented); above it: resampled with soxr, quality VHQ.
* clipping, judged on the ORIGINAL samples (before any conversion hides it):
  a sample is "at full scale" when ``|x| >= CLIP_LEVEL`` (0.999 of full
  scale).  The file is rejected when more than ``CLIP_MAX_FRACTION`` (0.1 %)
  of its samples are at full scale, or when ``CLIP_RUN`` (3) or more
  consecutive samples of one channel are.  Why: a clean recording that was
  peak-normalised touches full scale on isolated samples (espeak-ng's own
  output has single samples at 0.9991), while an overdriven microphone or
  ADC flattens the wave top, which shows as runs of samples stuck at the rail
  -- 3 is the shortest run that is not a single crest sampled twice.  The
  fraction catches many short clips spread over the file.  espeak-ng speech
  amplified x8 has ~12 % of its samples clipped in runs of up to 35.
* silence: the audio (after conversion to 8 kHz mono) is "silent" when its
  peak is below ``SILENCE_DBFS`` (-50 dBFS): rejected.  A 20 ms frame is
  silent when its RMS is below the same level.  Silence longer than
  ``MAX_EDGE_SILENCE`` (0.5 s) at the start or end is trimmed to
  ``KEPT_EDGE_SILENCE`` (0.2 s): callers would otherwise hear dead air.
* level: the RMS of the active (non-silent) frames.  Below ``MIN_LEVEL_DBFS``
  (-40 dBFS) the file is rejected as too quiet (raising it 20 dB or more
  raises the room noise and hiss with it: record again closer to the
  microphone).  Otherwise a gain brings the active RMS to ``TARGET_DBFS``
  (-20 dBFS, the level of espeak-ng's prompts, so recorded and synthesised
  prompts sound equally loud) but never lifts the peak above ``PEAK_DBFS``
  (-1 dBFS, headroom for G.711 and resampling overshoot).  The gain is always
  applied; it is reported as a change when it is more than ``LEVEL_REPORT_DB``
  (1 dB).

``install_recording`` only accepts prompt keys matching ``KEY_PATTERN`` and
the dialect groups of ``ivr.dialects.DIALECTS``: the web console passes
uploaded names to it, so nothing like ``../x`` may become a path.
"""

from __future__ import annotations

import io
import math
import os
import re
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from ivr.dialects import DIALECT_ALIASES, DIALECTS, MANDARIN
from ivr.media.prompt_audio import SAMPLE_RATE
from ivr.prompts import AUDIO_SUFFIXES

MIN_SECONDS = 0.3  # shorter is a slip of the record button, not a prompt
MAX_CHANNELS = 2
CLIP_LEVEL = 0.999  # |sample| at or above this fraction of full scale counts as clipped
CLIP_MAX_FRACTION = 0.001  # more than 0.1 % of the samples at full scale: clipped
CLIP_RUN = 3  # this many consecutive samples at full scale: clipped
SILENCE_DBFS = -50.0  # a file whose peak is below this is silent; so is a 20 ms frame's RMS
FRAME_SECONDS = 0.02  # frames for silence detection and the speech level
MAX_EDGE_SILENCE = 0.5  # s of silence at the start or end tolerated as is
KEPT_EDGE_SILENCE = 0.2  # s of silence left when a longer one is trimmed
MIN_LEVEL_DBFS = -40.0  # active RMS below this: too quiet to raise
TARGET_DBFS = -20.0  # active RMS after normalising
PEAK_DBFS = -1.0  # the peak is never raised above this
LEVEL_REPORT_DB = 1.0  # a gain larger than this is reported as a change
RESAMPLE_QUALITY = "VHQ"
KEY_PATTERN = re.compile(r"[a-z0-9_]{1,64}")

Pcm = npt.NDArray[np.int16]
Floats = npt.NDArray[np.float64]
PromptState = Literal["recorded", "synthesised", "missing"]


class VoiceImportError(Exception):
    """A recording that cannot be installed where asked; the message says why."""


@dataclass(frozen=True, eq=False)
class RecordingCheck:
    """The verdict on one recording and, when accepted, the audio to install.

    ``pcm`` is 8 kHz mono int16 (read-only; empty when rejected); ``seconds`` is
    its duration, or the original's duration when rejected (0.0 if unreadable).
    """

    name: str
    accepted: bool
    reasons: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    pcm: Pcm = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    seconds: float = 0.0


@dataclass(frozen=True)
class ImportResult:
    """One file of an imported folder: installed (``installed`` set) or rejected."""

    file: Path
    key: str
    accepted: bool
    reasons: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    installed: Path | None = None
    replaced: bool = False  # a recording of this key in this dialect was overwritten


@dataclass(frozen=True)
class PromptStatus:
    """What callers of ``dialect`` hear for prompt ``key``."""

    dialect: str
    key: str
    state: PromptState
    note: str = ""
    path: Path | None = None  # the recording, when recorded


# ------------------------------------------------------------------ checking


def _db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else -math.inf


def _clipping(data: Floats, rate: int) -> str | None:
    """Why ``data`` (frames x channels, original scale) counts as clipped, or None."""
    at_rail = np.abs(data) >= CLIP_LEVEL
    count = int(at_rail.sum())
    if count == 0:
        return None
    longest = 0
    for channel in at_rail.T:
        edges = np.diff(np.concatenate(([0], channel.astype(np.int8), [0])))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)
        if starts.size:
            longest = max(longest, int((ends - starts).max()))
    if count <= CLIP_MAX_FRACTION * at_rail.size and longest < CLIP_RUN:
        return None
    first = float(np.flatnonzero(at_rail.any(axis=1))[0]) / rate
    return (
        f"clipped: {count} samples at full scale ({100.0 * count / at_rail.size:.2f} %, "
        f"longest run {longest}), first at {first:.2f} s; record again with less input gain"
    )


def _frame_levels(audio: Floats) -> Floats:
    """RMS in dBFS of each 20 ms frame (the last one zero-padded)."""
    size = round(FRAME_SECONDS * SAMPLE_RATE)
    count = -(-len(audio) // size)
    padded = np.zeros(count * size)
    padded[: len(audio)] = audio
    rms = np.sqrt(np.mean(padded.reshape(count, size) ** 2, axis=1))
    with np.errstate(divide="ignore"):
        levels: Floats = 20.0 * np.log10(rms)
    return levels


def _read(data: bytes | Path, name: str) -> tuple[Floats, int] | str:
    """(frames x channels float64, rate), or why the file cannot be read."""
    if isinstance(data, Path):
        try:
            data = data.read_bytes()
        except OSError as exc:
            return f"cannot read {name}: {exc.strerror or exc}"
    if not data:
        return "empty: the file is 0 bytes"
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except sf.LibsndfileError as exc:
        words = str(exc.error_string).strip().rstrip(".") or "unreadable"
        return f"not an audio file: {words}"
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as exc:
        return f"not an audio file: {exc}"
    return np.asarray(audio, dtype=np.float64), int(rate)


def _rejected(name: str, reasons: list[str], seconds: float = 0.0) -> RecordingCheck:
    return RecordingCheck(name=name, accepted=False, reasons=tuple(reasons), seconds=seconds)


def check_recording(data: bytes | Path, *, name: str) -> RecordingCheck:
    """Check one recording (file contents or a path) and convert it for the IVR.

    ``name`` is what messages call the file.  Never raises for bad audio: the
    verdict and its reasons are in the result (see the module docstring).
    """
    read = _read(data, name)
    if isinstance(read, str):
        return _rejected(name, [read])
    audio, rate = read
    frames, channels = audio.shape
    if frames == 0:
        return _rejected(name, ["empty: the file holds no audio samples"])
    seconds = frames / rate if rate > 0 else 0.0
    reasons: list[str] = []
    if seconds < MIN_SECONDS:
        reasons.append(f"too short: {seconds:.2f} s (a prompt is at least {MIN_SECONDS:g} s)")
    if channels > MAX_CHANNELS:
        reasons.append(
            f"{channels} channels: export the prompt as mono or stereo (at most {MAX_CHANNELS})"
        )
    if rate < SAMPLE_RATE:
        reasons.append(
            f"sample rate {rate} Hz is below the {SAMPLE_RATE} Hz telephone rate; "
            f"record at {SAMPLE_RATE} Hz or more"
        )
    clipped = _clipping(audio, rate) if rate > 0 else None
    if clipped:
        reasons.append(clipped)
    if channels > MAX_CHANNELS or rate < SAMPLE_RATE:
        return _rejected(name, reasons, seconds)

    changes: list[str] = []
    mono: Floats = audio.mean(axis=1) if channels == 2 else audio[:, 0]
    if channels == 2:
        changes.append("stereo -> mono")
    if rate != SAMPLE_RATE:
        mono = np.asarray(
            soxr.resample(mono, rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY), dtype=np.float64
        )
        changes.append(f"{rate} Hz -> {SAMPLE_RATE} Hz")

    peak_db = _db(float(np.abs(mono).max())) if mono.size else -math.inf
    if peak_db < SILENCE_DBFS:
        shown = "no signal" if peak_db == -math.inf else f"peak {peak_db:.1f} dBFS"
        reasons.append(f"silent: {shown} (below {SILENCE_DBFS:g} dBFS)")
        return _rejected(name, reasons, seconds)

    levels = _frame_levels(mono)
    active = np.flatnonzero(levels >= SILENCE_DBFS)
    if active.size == 0:
        reasons.append(
            f"too quiet: no 20 ms of it is louder than {SILENCE_DBFS:g} dBFS RMS "
            "(only clicks); record again closer to the microphone"
        )
        return _rejected(name, reasons, seconds)
    frame = round(FRAME_SECONDS * SAMPLE_RATE)
    lead = active[0] * FRAME_SECONDS
    tail = (len(levels) - 1 - active[-1]) * FRAME_SECONDS
    start, end = 0, len(mono)
    if lead > MAX_EDGE_SILENCE:
        start = active[0] * frame - round(KEPT_EDGE_SILENCE * SAMPLE_RATE)
        changes.append(f"trimmed {start / SAMPLE_RATE:.1f} s of silence at the start")
    if tail > MAX_EDGE_SILENCE:
        end = min(len(mono), (active[-1] + 1) * frame + round(KEPT_EDGE_SILENCE * SAMPLE_RATE))
        changes.append(f"trimmed {(len(mono) - end) / SAMPLE_RATE:.1f} s of silence at the end")

    speech = np.concatenate([mono[i * frame : (i + 1) * frame] for i in active])
    level_db = _db(float(np.sqrt(np.mean(speech**2))))
    if level_db < MIN_LEVEL_DBFS:
        reasons.append(
            f"too quiet: speech at {level_db:.1f} dBFS RMS (at least {MIN_LEVEL_DBFS:g} dBFS); "
            "record again closer to the microphone or with more input gain"
        )
    if reasons:
        return _rejected(name, reasons, seconds)

    mono = mono[start:end]
    gain_db = min(TARGET_DBFS - level_db, PEAK_DBFS - peak_db)
    mono = mono * 10.0 ** (gain_db / 20.0)
    if abs(gain_db) > LEVEL_REPORT_DB:
        verb = "raised" if gain_db > 0 else "lowered"
        reached = level_db + gain_db
        if reached < TARGET_DBFS - 0.05:
            changes.append(
                f"level {verb} {abs(gain_db):.1f} dB to {reached:.1f} dBFS "
                f"(peak held at {PEAK_DBFS:g} dBFS)"
            )
        else:
            changes.append(f"level {verb} {abs(gain_db):.1f} dB to {TARGET_DBFS:g} dBFS")
    pcm: Pcm = np.clip(np.round(mono * 32767.0), -32768, 32767).astype(np.int16)
    pcm.flags.writeable = False
    return RecordingCheck(
        name=name,
        accepted=True,
        changes=tuple(changes),
        pcm=pcm,
        seconds=len(pcm) / SAMPLE_RATE,
    )


# ---------------------------------------------------------------- installing


def check_dialect(dialect: str) -> None:
    """Raise VoiceImportError unless ``dialect`` is one of the dialect groups."""
    if dialect in DIALECTS:
        return
    meant = DIALECT_ALIASES.get(dialect.strip().lower())
    hint = f" (did you mean {meant!r}?)" if meant else ""
    raise VoiceImportError(f"unknown dialect {dialect!r}{hint}; one of: {', '.join(DIALECTS)}")


def check_key(key: str) -> None:
    """Raise VoiceImportError unless ``key`` can name a prompt file."""
    if not KEY_PATTERN.fullmatch(key):
        raise VoiceImportError(
            f"bad prompt key {key!r}: use 1 to 64 of a-z, 0-9 and _ (e.g. main_menu)"
        )


def install_recording(check: RecordingCheck, *, voices_dir: Path, dialect: str, key: str) -> Path:
    """Write an accepted recording to voices/<dialect>/<key>.wav (8 kHz mono
    PCM_16), atomically: a half-written file is never seen by the IVR."""
    check_dialect(dialect)
    check_key(key)
    if not check.accepted:
        raise VoiceImportError(f"{check.name} was rejected: {'; '.join(check.reasons)}")
    folder = voices_dir / dialect
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{key}.wav"
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            sf.write(out, check.pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def import_folder(
    src: Path, *, voices_dir: Path, dialect: str, known_keys: Collection[str]
) -> list[ImportResult]:
    """Check and install every file in ``src`` (not its subfolders; names starting
    with "." are skipped) as the prompt named by its stem, in name order.

    Raises VoiceImportError for a bad folder or dialect; a bad file is only
    reported in its result and never stops the others.
    """
    check_dialect(dialect)
    if not src.is_dir():
        raise VoiceImportError(f"not a folder: {src}")
    try:
        files = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        raise VoiceImportError(f"cannot list {src}: {exc.strerror or exc}") from exc
    known = ", ".join(sorted(known_keys)) or "none"
    results: list[ImportResult] = []
    for path in files:
        key = path.stem
        reasons: list[str] = []
        if key not in known_keys:
            reasons.append(f"no prompt key {key!r} in the dial plan; known: {known}")
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            reasons.append(
                f"not an audio file name: {path.suffix or 'no suffix'} "
                f"(use {', '.join(AUDIO_SUFFIXES)})"
            )
        if reasons:
            results.append(ImportResult(file=path, key=key, accepted=False, reasons=tuple(reasons)))
            continue
        check = check_recording(path, name=path.name)
        if not check.accepted:
            results.append(ImportResult(path, key, accepted=False, reasons=check.reasons))
            continue
        target = voices_dir / dialect / f"{key}.wav"
        replaced = target.exists()
        try:
            installed = install_recording(check, voices_dir=voices_dir, dialect=dialect, key=key)
        except (VoiceImportError, OSError) as exc:
            results.append(
                ImportResult(path, key, accepted=False, reasons=(f"cannot install: {exc}",))
            )
            continue
        results.append(
            ImportResult(
                path,
                key,
                accepted=True,
                changes=check.changes,
                installed=installed,
                replaced=replaced,
            )
        )
    return results


# -------------------------------------------------------------------- status


def recordings_in(folder: Path) -> dict[str, Path]:
    """Prompt key -> recording in ``folder``; of two for one key, the one
    ``ivr.prompts`` plays (the last in name order: .wav beats the others)."""
    if not folder.is_dir():
        return {}
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
    }


def voice_status(
    *,
    voices_dir: Path,
    dialects: Sequence[str],
    prompt_keys: Collection[str],
    synthesis_voices: Mapping[str, str],
    texts: Collection[str] | None = None,
) -> list[PromptStatus]:
    """Per dialect (in the order given) and prompt key (sorted): what callers hear.

    ``texts`` are the keys the dial plan has text for (synthesis needs one);
    None means every key.
    """
    statuses: list[PromptStatus] = []
    for dialect in dialects:
        recorded = recordings_in(voices_dir / dialect)
        voice = synthesis_voices.get(dialect)
        for key in sorted(prompt_keys):
            if key in recorded:
                statuses.append(
                    PromptStatus(dialect, key, "recorded", str(recorded[key]), recorded[key])
                )
            elif voice and (texts is None or key in texts):
                statuses.append(PromptStatus(dialect, key, "synthesised", f"espeak-ng {voice}"))
            else:
                why = (
                    "no recording and no synthesis voice"
                    if not voice
                    else ("no recording and no text to synthesise")
                )
                heard = (
                    "the prompt cannot be played"
                    if dialect == MANDARIN
                    else "callers hear the mandarin prompt"
                )
                statuses.append(PromptStatus(dialect, key, "missing", f"{why}: {heard}"))
    return statuses


def summary(statuses: Sequence[PromptStatus], dialect: str) -> str:
    """ "yue: 3 recorded, 14 synthesised, 0 missing"."""
    counts = {"recorded": 0, "synthesised": 0, "missing": 0}
    for status in statuses:
        if status.dialect == dialect:
            counts[status.state] += 1
    return f"{dialect}: " + ", ".join(f"{n} {state}" for state, n in counts.items())
