"""voices/ is a folder of the repository (issue 14 item 7): one folder per
dialect group, and a README saying how recordings are named, checked and
imported; the bundled config plays from it."""

from __future__ import annotations

from ivr.config import load_settings
from ivr.dialects import DIALECTS
from tests.conftest import ROOT

VOICES = ROOT / "voices"


def test_voices_is_a_folder_of_the_repository_with_one_folder_per_dialect() -> None:
    assert VOICES.is_dir()
    assert sorted(p.name for p in VOICES.iterdir() if p.is_dir()) == sorted(DIALECTS)
    readme = (VOICES / "README.md").read_text(encoding="utf-8")
    for dialect in DIALECTS:
        assert f"`{dialect}/`" in readme, dialect
    for said in ("ivr voices import", "ivr voices status", "8 kHz", "-20 dBFS", "0.3 s"):
        assert said in readme, said


def test_the_bundled_config_plays_recordings_from_it() -> None:
    settings = load_settings(ROOT / "config.toml")
    assert settings.prompts.voices_dir.resolve() == VOICES.resolve()
    for dialect in settings.dialects.offered:
        assert (VOICES / dialect).is_dir(), dialect
