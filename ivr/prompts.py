"""Prompt key -> audio the caller hears.

A key resolves to a recording voices/<dialect>/<key>.<ext> (any format
soundfile reads) or, where none exists, to the dial plan's text spoken by
espeak-ng. Either way the audio is converted once to 8 kHz mono, cached in
cache_dir by a hash of its source, and pre-encoded to G.711: `build()` runs at
start (or by `ivr voices build`), never during a call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr
from pypinyin import Style, lazy_pinyin

from ivr.media import g711
from ivr.media.prompt_audio import FRAME_SAMPLES, SAMPLE_RATE, PromptAudio
from ivr.media.slow_speech import stretch

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".au")
CACHE_VERSION = "2"  # bump when conversion changes
DIGITS = str.maketrans("0123456789", "零幺二三四五六七八九")
PAUSES = str.maketrans(
    {
        "，": ", ",
        "。": ". ",
        "、": ", ",
        "；": "; ",
        "：": ": ",
        "？": "? ",
        "！": "! ",
        "（": " ",
        "）": " ",
    }
)


class PromptError(Exception):
    """A prompt that cannot be prepared; the message says which and why."""


def to_pinyin(text: str) -> str:
    """Chinese text as tone-numbered pinyin for espeak-ng's cmn-latn-pinyin."""
    syllables = lazy_pinyin(
        text.translate(DIGITS), style=Style.TONE3, neutral_tone_with_five=True, errors="default"
    )
    return " ".join(s.translate(PAUSES).strip() for s in syllables if s.strip())


def encode(key: str, pcm: npt.NDArray[np.int16], source: str, text: str = "") -> PromptAudio:
    pad = (-len(pcm)) % FRAME_SAMPLES
    padded = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)]) if pad else pcm
    return PromptAudio(
        key=key,
        pcm=pcm,
        ulaw=g711.encode_ulaw(padded),
        alaw=g711.encode_alaw(padded),
        source=source,
        text=text,
    )


def read_recording(path: Path) -> npt.NDArray[np.int16]:
    """Any soundfile-readable file as 8 kHz mono int16 (blocking: run in an executor)."""
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise PromptError(f"{path}: cannot read the recording: {exc}") from exc
    if data.size == 0:
        raise PromptError(f"{path}: the recording is empty")
    mono = data.mean(axis=1)
    converted = (
        soxr.resample(mono, int(rate), SAMPLE_RATE, quality="VHQ")
        if int(rate) != SAMPLE_RATE
        else mono
    )
    pcm: npt.NDArray[np.int16] = np.clip(np.round(converted * 32767), -32768, 32767).astype(
        np.int16
    )
    return pcm


class PromptLibrary:
    def __init__(
        self,
        voices_dir: Path,
        cache_dir: Path,
        dialect: str,
        espeak_voice: str,
        espeak_speed: int,
        log: logging.Logger | None = None,
        *,
        slow_speeds: tuple[float, ...] = (),
    ) -> None:
        self.voices_dir = voices_dir
        self.slow_speeds = tuple(s for s in slow_speeds if s < 1.0)
        self.cache_dir = cache_dir
        self.dialect = dialect
        self.espeak_voice = espeak_voice
        self.espeak_speed = espeak_speed
        self.log = log or logging.getLogger("ivr.prompts")
        self._ready: dict[str, PromptAudio] = {}
        self._slow: dict[tuple[str, float], PromptAudio] = {}
        self.renders = 0  # espeak-ng runs (the cache keeps this at 0 on a warm start)

    def recordings(self) -> dict[str, Path]:
        folder = self.voices_dir / self.dialect
        if not folder.is_dir():
            return {}
        return {
            p.stem: p
            for p in sorted(folder.iterdir())
            if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
        }

    def recorded_keys(self) -> set[str]:
        return set(self.recordings())

    def get(self, key: str, speed: float = 1.0) -> PromptAudio:
        """The prompt ``key``; at a slower ``speed`` if that was prepared."""
        if speed < 1.0:
            slow = self._slow.get((key, speed))
            if slow is not None:
                return slow
        try:
            return self._ready[key]
        except KeyError:
            raise PromptError(
                f"prompt {key!r} was not built (known: {', '.join(sorted(self._ready)) or 'none'})"
            ) from None

    async def build(self, texts: Mapping[str, str]) -> list[str]:
        """Prepare every prompt with a recording or a text; lines saying how."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        recordings = self.recordings()
        ready: dict[str, PromptAudio] = {}
        report: list[str] = []
        loop = asyncio.get_running_loop()
        for key in sorted(set(texts) | set(recordings)):
            if key in recordings:
                path = recordings[key]
                pcm = await loop.run_in_executor(None, self._cached_recording, path)
                ready[key] = encode(key, pcm, str(path), texts.get(key, ""))
                report.append(f"{key}: recorded {path}")
            else:
                pcm = await self._synthesised(texts[key])
                ready[key] = encode(key, pcm, f"espeak-ng:{self.espeak_voice}", texts[key])
                report.append(f"{key}: synthesised espeak-ng {self.espeak_voice}")
        slow: dict[tuple[str, float], PromptAudio] = {}
        for speed in self.slow_speeds:
            for key, prompt in ready.items():
                pcm = await loop.run_in_executor(None, self._stretched, prompt.pcm, speed)
                slow[(key, speed)] = encode(key, pcm, f"{prompt.source} at {speed:g}x", prompt.text)
            report.append(f"(every prompt also at speed {speed:g}, pitch kept)")
        self._ready = ready
        self._slow = slow
        return report

    def _stretched(self, pcm: npt.NDArray[np.int16], speed: float) -> npt.NDArray[np.int16]:
        cache = self._cache_path(b"slow", str(speed).encode(), pcm.tobytes())
        cached = self._load_cached(cache)
        if cached is not None:
            return cached
        slowed = stretch(pcm, speed, rate=SAMPLE_RATE)
        self._store(cache, slowed)
        return slowed

    # -- cache ----------------------------------------------------------------
    def _cache_path(self, *parts: bytes) -> Path:
        digest = hashlib.sha256()
        for part in (CACHE_VERSION.encode(), self.dialect.encode(), *parts):
            digest.update(len(part).to_bytes(8, "big") + part)
        return self.cache_dir / f"{digest.hexdigest()[:32]}.wav"

    def _load_cached(self, path: Path) -> npt.NDArray[np.int16] | None:
        if not path.exists():
            return None
        try:
            data, rate = sf.read(str(path), dtype="int16")
        except (sf.LibsndfileError, RuntimeError, OSError):
            return None
        if rate != SAMPLE_RATE or data.ndim != 1:
            return None
        return np.asarray(data, dtype=np.int16)

    def _store(self, path: Path, pcm: npt.NDArray[np.int16]) -> None:
        with tempfile.NamedTemporaryFile(dir=self.cache_dir, suffix=".tmp", delete=False) as tmp:
            sf.write(tmp, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        Path(tmp.name).replace(path)

    def _cached_recording(self, path: Path) -> npt.NDArray[np.int16]:
        try:
            source = path.read_bytes()
        except OSError as exc:
            raise PromptError(f"{path}: cannot read the recording: {exc}") from exc
        cache = self._cache_path(b"recording", source)
        pcm = self._load_cached(cache)
        if pcm is None:
            pcm = read_recording(path)
            self._store(cache, pcm)
        return pcm

    async def _synthesised(self, text: str) -> npt.NDArray[np.int16]:
        cache = self._cache_path(
            b"espeak-ng", self.espeak_voice.encode(), str(self.espeak_speed).encode(), text.encode()
        )
        loop = asyncio.get_running_loop()
        pcm = await loop.run_in_executor(None, self._load_cached, cache)
        if pcm is not None:
            return pcm
        spoken = to_pinyin(text) if "pinyin" in self.espeak_voice else text
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "tts.wav"
            try:
                proc = await asyncio.create_subprocess_exec(
                    "espeak-ng",
                    "-v",
                    self.espeak_voice,
                    "-s",
                    str(self.espeak_speed),
                    "-w",
                    str(out),
                    spoken,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
            except FileNotFoundError as exc:
                raise PromptError(
                    "espeak-ng is not installed (apt-get install espeak-ng); "
                    "it renders prompts that have no recording"
                ) from exc
            _, err = await proc.communicate()
            if proc.returncode != 0 or not out.exists():
                raise PromptError(f"espeak-ng failed for {text!r}: {err.decode().strip()}")
            self.renders += 1
            pcm = await loop.run_in_executor(None, read_recording, out)
        await loop.run_in_executor(None, self._store, cache, pcm)
        return pcm


async def build_prompts(library: PromptLibrary, texts: Mapping[str, str]) -> list[str]:
    return await library.build(texts)
