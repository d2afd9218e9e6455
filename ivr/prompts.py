"""Prompt key -> audio the caller hears.

A key in a dialect resolves to a recording voices/<dialect>/<key>.<ext> (any
format soundfile reads), else to the dial plan's text spoken by espeak-ng in
that dialect's voice (mandarin, yue), else to the mandarin prompt. Either way
the audio is converted once to 8 kHz mono, slowed (WSOLA, pitch kept) to each
configured slow speed, cached in cache_dir by a hash of its source, and
pre-encoded to G.711: `build()` runs at start (or by `ivr voices build`),
never during a call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr
from pypinyin import Style, lazy_pinyin

if TYPE_CHECKING:
    from ivr.config import Settings
    from ivr.dialplan.model import DialPlan

from ivr.dialects import ESPEAK_VOICES, MANDARIN
from ivr.media import g711
from ivr.media.prompt_audio import FRAME_SAMPLES, SAMPLE_RATE, PromptAudio
from ivr.media.slow_speech import stretch

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".au")
CACHE_VERSION = "3"  # bump when conversion changes
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


class PromptSet:
    """One build's prompts, by (dialect, key) and (dialect, key, speed); frozen.

    A call is given the set built with its dial plan and keeps it to the end,
    so a plan published meanwhile changes nothing the call hears."""

    def __init__(
        self,
        ready: Mapping[tuple[str, str], PromptAudio],
        slow: Mapping[tuple[str, str, float], PromptAudio],
        default_dialect: str,
    ) -> None:
        self._ready = dict(ready)
        self._slow = dict(slow)
        self.default_dialect = default_dialect

    def get(self, key: str, speed: float = 1.0, dialect: str | None = None) -> PromptAudio:
        wanted = dialect or self.default_dialect
        if (wanted, key) not in self._ready:
            wanted = MANDARIN
        if speed < 1.0:
            slow = self._slow.get((wanted, key, speed))
            if slow is not None:
                return slow
        try:
            return self._ready[(wanted, key)]
        except KeyError:
            known = ", ".join(sorted({k for _, k in self._ready})) or "none"
            raise PromptError(f"prompt {key!r} was not built (known: {known})") from None


class PromptLibrary:
    """Every prompt of the dial plan in every offered dialect and speed, ready to send.

    A prompt in a dialect resolves through a fallback chain: a recording
    voices/<dialect>/<key> -> espeak-ng where ``voices`` has a voice for the
    dialect -> the mandarin prompt.  Each (prompt, dialect, speed) is rendered
    once at ``build()`` and cached on disk.
    """

    def __init__(
        self,
        voices_dir: Path,
        cache_dir: Path,
        *,
        dialects: tuple[str, ...] = (MANDARIN,),
        default_dialect: str = MANDARIN,
        voices: Mapping[str, str] | None = None,
        espeak_speed: int = 150,
        slow_speeds: tuple[float, ...] = (),
        log: logging.Logger | None = None,
    ) -> None:
        self.voices_dir = voices_dir
        self.cache_dir = cache_dir
        self.default_dialect = default_dialect
        self.dialects = tuple(dict.fromkeys((MANDARIN, default_dialect, *dialects)))
        self.voices = dict(ESPEAK_VOICES if voices is None else voices)
        self.espeak_speed = espeak_speed
        self.slow_speeds = tuple(s for s in slow_speeds if s < 1.0)
        self.log = log or logging.getLogger("ivr.prompts")
        self._current = PromptSet({}, {}, default_dialect)
        self.renders = 0  # espeak-ng runs (the cache keeps this at 0 on a warm start)

    @classmethod
    def from_settings(cls, settings: Settings, log: logging.Logger | None = None) -> PromptLibrary:
        return cls(
            settings.prompts.voices_dir,
            settings.prompts.cache_dir,
            dialects=settings.dialects.offered,
            default_dialect=settings.prompts.dialect,
            voices=settings.dialects.voices,
            espeak_speed=settings.prompts.espeak_speed,
            slow_speeds=settings.elderly.speeds,
            log=log,
        )

    def recordings(self, dialect: str = MANDARIN) -> dict[str, Path]:
        folder = self.voices_dir / dialect
        if not folder.is_dir():
            return {}
        return {
            p.stem: p
            for p in sorted(folder.iterdir())
            if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
        }

    def recorded_keys(self) -> set[str]:
        """Prompt keys that need no text: recorded in mandarin, the last resort."""
        return set(self.recordings(MANDARIN))

    def get(self, key: str, speed: float = 1.0, dialect: str | None = None) -> PromptAudio:
        """The prompt ``key`` in ``dialect`` (default: the deployment's); at a
        slower ``speed`` if that was prepared (from the newest build)."""
        return self._current.get(key, speed, dialect)

    def current(self) -> PromptSet:
        """The prompts of the newest build: a call keeps the set it started with."""
        return self._current

    def source(self, key: str, dialect: str) -> str:
        """Where the prompt ``key`` in ``dialect`` came from (after build)."""
        return self.get(key, 1.0, dialect).source

    async def build(
        self,
        texts: Mapping[str, str],
        dialect_texts: Mapping[str, Mapping[str, str]] | None = None,
    ) -> list[str]:
        """Prepare every prompt in every dialect; lines saying how.

        ``dialect_texts`` gives a dialect its own wording of some prompts
        (for synthesis); otherwise the dial plan's text is spoken in it."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        ready: dict[tuple[str, str], PromptAudio] = {}
        report: list[str] = []
        for dialect in self.dialects:  # mandarin first: the others fall back to it
            recordings = self.recordings(dialect)
            own = (dialect_texts or {}).get(dialect, {})
            voice = self.voices.get(dialect)
            for key in sorted(set(texts) | set(recordings) | set(ready_keys(ready))):
                text = own.get(key) or texts.get(key, "")
                if key in recordings:
                    path = recordings[key]
                    pcm = await loop.run_in_executor(None, self._cached_recording, path)
                    ready[(dialect, key)] = encode(key, pcm, str(path), text)
                    report.append(f"{dialect}/{key}: recorded {path}")
                elif voice and text:
                    pcm = await self._synthesised(text, voice)
                    ready[(dialect, key)] = encode(key, pcm, f"espeak-ng:{voice}", text)
                    report.append(f"{dialect}/{key}: synthesised espeak-ng {voice}")
                elif dialect != MANDARIN and (MANDARIN, key) in ready:
                    ready[(dialect, key)] = ready[(MANDARIN, key)]
                    report.append(f"{dialect}/{key}: missing, callers hear mandarin")
                else:
                    raise PromptError(
                        f"prompt {key!r} has no text and no recording in "
                        f"{self.voices_dir / MANDARIN}"
                    )
        slow: dict[tuple[str, str, float], PromptAudio] = {}
        for speed in self.slow_speeds:
            done: dict[int, PromptAudio] = {}  # a fallback shares its mandarin rendering
            for (dialect, key), prompt in ready.items():
                if id(prompt) not in done:
                    pcm = await loop.run_in_executor(None, self._stretched, prompt.pcm, speed)
                    done[id(prompt)] = encode(
                        key, pcm, f"{prompt.source} at {speed:g}x", prompt.text
                    )
                slow[(dialect, key, speed)] = done[id(prompt)]
            report.append(f"(every prompt also at speed {speed:g}, pitch kept)")
        # a new set: calls still on the old plan keep theirs (and its wording)
        self._current = PromptSet(ready, slow, self.default_dialect)
        return report

    async def say(
        self, text: str, *, dialect: str | None = None, speed: float = 1.0
    ) -> PromptAudio:
        """``text`` made for one call (a follow-up's sentence about the caller's
        ticket), spoken now by espeak-ng in the dialect's voice (mandarin's when
        the dialect has none) and slowed to ``speed``; cached like the prompts."""
        voice = self.voices.get(dialect or self.default_dialect) or self.voices.get(MANDARIN)
        if not voice:
            raise PromptError(f"no espeak-ng voice to say {text!r} (set [dialects.voices])")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        pcm = await self._synthesised(text, voice)
        source = f"espeak-ng:{voice}"
        if speed < 1.0:
            loop = asyncio.get_running_loop()
            pcm = await loop.run_in_executor(None, self._stretched, pcm, speed)
            source = f"{source} at {speed:g}x"
        return encode("spoken", pcm, source, text)

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
        for part in (CACHE_VERSION.encode(), *parts):
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

    async def _synthesised(self, text: str, voice: str) -> npt.NDArray[np.int16]:
        cache = self._cache_path(
            b"espeak-ng", voice.encode(), str(self.espeak_speed).encode(), text.encode()
        )
        loop = asyncio.get_running_loop()
        pcm = await loop.run_in_executor(None, self._load_cached, cache)
        if pcm is not None:
            return pcm
        spoken = to_pinyin(text) if "pinyin" in voice else text
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "tts.wav"
            try:
                proc = await asyncio.create_subprocess_exec(
                    "espeak-ng",
                    "-v",
                    voice,
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


_ONES = "零一二三四五六七八九"


def count_words(n: int) -> str:
    """1..99 as Chinese numerals (一, 十二, 二十): what a prompt says for {n}."""
    if not 0 < n < 100:
        raise ValueError(f"{n} is not 1..99")
    tens, ones = divmod(n, 10)
    if tens == 0:
        return _ONES[ones]
    head = "十" if tens == 1 else _ONES[tens] + "十"
    return head + (_ONES[ones] if ones else "")


def numbered(texts: Mapping[str, str], most: int = 20) -> dict[str, str]:
    """``texts`` with every text saying {n} replaced by key_1 .. key_<most>.
    After 第 the number is an ordinal (第二位); otherwise it counts something,
    and 2 is 两 (约两分钟)."""
    out: dict[str, str] = {}
    for key, text in texts.items():
        if "{n}" in text:
            ordinal = text.split("{n}", 1)[0].endswith("第")
            for n in range(1, most + 1):
                words = count_words(n)
                out[f"{key}_{n}"] = text.replace("{n}", "两" if n == 2 and not ordinal else words)
        else:
            out[key] = text
    return out


CALLBACK_GREETING_KEY = "callback_greeting"  # what a called-back caller hears first


def plan_prompt_texts(plan: DialPlan, callback_greeting: str) -> dict[str, str]:
    """Every prompt the hotline builds for ``plan``, by key: the plan's own
    (a prompt saying {n} once per number, for a caller's place in line) and
    the callback greeting from config.toml's [callbacks]."""
    return {CALLBACK_GREETING_KEY: callback_greeting, **numbered(plan.prompts)}


def plan_prompt_keys(plan: DialPlan, texts: Mapping[str, str]) -> set[str]:
    """Every prompt key a caller of ``plan`` may hear: those with text
    (``texts``, from plan_prompt_texts) and those that exist only as a
    recording.  The server's console and `ivr voices status` both count these."""
    recorded_only = {key for key in plan.prompt_keys() if key not in plan.prompts}
    return set(texts) | recorded_only


def ready_keys(ready: Mapping[tuple[str, str], PromptAudio]) -> set[str]:
    return {key for _, key in ready}


async def build_prompts(library: PromptLibrary, texts: Mapping[str, str]) -> list[str]:
    return await library.build(texts)
