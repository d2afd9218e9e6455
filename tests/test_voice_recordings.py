"""The prompt recording kit on real speech: espeak-ng renders a Cantonese prompt,
and numpy / sox make the faulty variants a voice talent might hand in."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
import soxr

from ivr.voice_recordings import (
    PEAK_DBFS,
    TARGET_DBFS,
    RecordingCheck,
    VoiceImportError,
    check_recording,
    import_folder,
    install_recording,
    voice_status,
)
from tests.conftest import ROOT

Floats = npt.NDArray[np.float64]
PLAN = ROOT / "dialplans" / "12345.toml"
KEYS = {"welcome", "goodbye", "hold", "main_menu"}


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Floats, int]:
    """A clean espeak-ng recording (22050 Hz mono, peaks touch full scale)."""
    out = tmp_path_factory.mktemp("espeak") / "yue.wav"
    subprocess.run(
        ["espeak-ng", "-v", "yue", "-w", str(out), "您好，欢迎致电幺二三四五政务服务便民热线。"],
        check=True,
    )
    data, rate = sf.read(str(out), dtype="float64")
    assert data.ndim == 1 and len(data) > rate  # more than a second of speech
    return np.asarray(data), int(rate)


def write(path: Path, audio: Floats, rate: int) -> Path:
    sf.write(str(path), np.clip(audio, -1.0, 32767 / 32768), rate, subtype="PCM_16")
    return path


def dbfs(x: Floats | npt.NDArray[np.int16]) -> float:
    """RMS in dBFS of float samples or of int16 PCM."""
    values = x / 32768.0 if x.dtype == np.int16 else x
    return 20 * math.log10(float(np.sqrt(np.mean(np.square(values)))))


def active_dbfs(pcm: npt.NDArray[np.int16], floor: float = -50.0) -> float:
    """RMS over the 20 ms frames louder than ``floor`` dBFS, as the kit measures it."""
    x = pcm.astype(np.float64) / 32768.0
    n = len(x) // 160
    frames = x[: n * 160].reshape(n, 160)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    loud = frames[rms >= 10 ** (floor / 20)]
    return 20 * math.log10(float(np.sqrt(np.mean(loud**2))))


def stereo_44k(speech: tuple[Floats, int]) -> Floats:
    data, rate = speech
    mono = np.asarray(soxr.resample(data * 0.8, rate, 44100, quality="VHQ"))
    return np.stack([mono, mono * 0.9], axis=1)


# ------------------------------------------------------------------ check_recording


def test_clean_speech_passes_although_a_sample_touches_full_scale(
    speech: tuple[Floats, int], tmp_path: Path
) -> None:
    data, rate = speech
    path = write(tmp_path / "clean.wav", data, rate)
    assert np.abs(sf.read(str(path))[0]).max() >= 0.99  # espeak-ng peak-normalises
    check = check_recording(path, name="clean.wav")
    assert check.accepted, check.reasons
    assert check.reasons == ()
    assert check.changes == (f"{rate} Hz -> 8000 Hz",)  # already at about -20 dBFS
    assert check.pcm.dtype == np.int16 and check.pcm.ndim == 1
    assert check.seconds == pytest.approx(len(data) / rate, rel=0.01)


def test_stereo_44k_is_converted_and_installed(speech: tuple[Floats, int], tmp_path: Path) -> None:
    audio = stereo_44k(speech)
    path = write(tmp_path / "welcome.wav", audio, 44100)
    check = check_recording(path.read_bytes(), name="welcome.wav")
    assert check.accepted, check.reasons
    assert "stereo -> mono" in check.changes
    assert "44100 Hz -> 8000 Hz" in check.changes
    voices = tmp_path / "voices"
    installed = install_recording(check, voices_dir=voices, dialect="yue", key="welcome")
    assert installed == voices / "yue" / "welcome.wav"
    info = sf.info(str(installed))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    assert info.duration == pytest.approx(len(audio) / 44100, rel=0.01)
    back, _ = sf.read(str(installed), dtype="int16")
    assert np.array_equal(back, check.pcm)
    assert [p.name for p in (voices / "yue").iterdir()] == ["welcome.wav"]  # no temp file left


def test_stereo_is_the_mean_of_both_channels(speech: tuple[Floats, int], tmp_path: Path) -> None:
    data, rate = speech
    gap = np.zeros_like(data)
    both = np.stack([np.concatenate([data, gap]), np.concatenate([gap, data])], axis=1)
    check = check_recording(write(tmp_path / "two.wav", both, rate), name="two.wav")
    assert check.accepted, check.reasons
    assert check.seconds == pytest.approx(2 * len(data) / rate, rel=0.01)  # nothing trimmed
    half = len(check.pcm) // 2
    assert abs(dbfs(check.pcm[:half]) - dbfs(check.pcm[half:])) < 0.5  # both takes heard


def test_clipped_recording_is_rejected(speech: tuple[Floats, int], tmp_path: Path) -> None:
    data, rate = speech
    path = write(tmp_path / "loud.wav", data * 8, rate)
    check = check_recording(path, name="loud.wav")
    assert not check.accepted
    assert len(check.pcm) == 0
    (reason,) = check.reasons
    match = re.fullmatch(
        r"clipped: (\d+) samples at full scale \(.*longest run (\d+)\), first at ([\d.]+) s; .*",
        reason,
    )
    assert match, reason
    assert int(match[1]) > 0.05 * len(data) and int(match[2]) >= 3
    assert 0.0 < float(match[3]) < 1.0


def test_a_few_isolated_full_scale_samples_are_not_clipping(
    speech: tuple[Floats, int], tmp_path: Path
) -> None:
    data, rate = speech
    ticked = data * 0.5
    ticked[[5000, 9000, 20000]] = 1.0  # single crests at the rail
    assert check_recording(write(tmp_path / "a.wav", ticked, rate), name="a.wav").accepted
    ticked[9001:9003] = 1.0  # now 3 in a row: a flattened top
    check = check_recording(write(tmp_path / "b.wav", ticked, rate), name="b.wav")
    assert not check.accepted
    assert check.reasons[0].startswith("clipped: 5 samples at full scale")
    assert f"first at {5000 / rate:.2f} s" in check.reasons[0]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty: the file is 0 bytes"),
        (
            lambda p: sf.write(str(p), np.zeros(0), 8000, subtype="PCM_16"),
            "empty: the file holds no audio samples",
        ),
        (
            lambda p: p.write_text("请在提示音后说出您的姓名\n"),
            "not an audio file: Format not recognised",
        ),
        (
            lambda p: sf.write(str(p), np.zeros(16000), 8000, subtype="PCM_16"),
            "silent: no signal (below -50 dBFS)",
        ),
        (
            lambda p: sf.write(str(p), np.full(16000, 82 / 32768), 8000, subtype="PCM_16"),
            "silent: peak -52.0 dBFS (below -50 dBFS)",
        ),
    ],
    ids=["zero-bytes", "zero-length-wav", "text-named-wav", "digital-silence", "near-silence"],
)
def test_unusable_files_are_rejected_with_the_reason(
    tmp_path: Path, make: object, reason: str
) -> None:
    path = tmp_path / "x.wav"
    make(path)  # type: ignore[operator]
    check = check_recording(path, name="x.wav")
    assert not check.accepted
    assert check.reasons == (reason,)


def test_too_short_many_channels_and_low_rate_are_rejected(
    speech: tuple[Floats, int], tmp_path: Path
) -> None:
    data, rate = speech
    short = check_recording(write(tmp_path / "s.wav", data[: rate // 10], rate), name="s.wav")
    assert short.reasons == ("too short: 0.10 s (a prompt is at least 0.3 s)",)
    quad = write(tmp_path / "q.wav", np.stack([data * 0.5] * 4, axis=1), rate)
    assert check_recording(quad, name="q.wav").reasons[0].startswith("4 channels")
    low = np.asarray(soxr.resample(data * 0.5, rate, 6000))
    reasons = check_recording(write(tmp_path / "l.wav", low, 6000), name="l.wav").reasons
    assert reasons[0].startswith("sample rate 6000 Hz is below the 8000 Hz")


def test_long_leading_silence_is_trimmed(speech: tuple[Floats, int], tmp_path: Path) -> None:
    data, rate = speech
    rng = np.random.default_rng(1)
    hiss = rng.normal(0.0, 10 ** (-65 / 20), int(2.0 * rate))  # a quiet room at -65 dBFS
    path = write(tmp_path / "late.wav", np.concatenate([hiss, data]), rate)
    check = check_recording(path, name="late.wav")
    assert check.accepted, check.reasons
    assert "trimmed 1.8 s of silence at the start" in check.changes
    assert check.seconds == pytest.approx(len(data) / rate + 0.2, abs=0.03)
    assert dbfs(check.pcm[: 8000 * 15 // 100]) < -55  # the kept 0.2 s is still quiet
    assert dbfs(check.pcm[1600:4000]) > -35  # and speech follows it


def test_short_edge_silence_is_kept(speech: tuple[Floats, int], tmp_path: Path) -> None:
    data, rate = speech
    # espeak-ng ends with ~0.3 s of quiet of its own: 0.1 s more is still < 0.5 s
    padded = np.concatenate([np.zeros(int(0.4 * rate)), data, np.zeros(int(0.1 * rate))])
    check = check_recording(write(tmp_path / "p.wav", padded, rate), name="p.wav")
    assert check.accepted
    assert not any(c.startswith("trimmed") for c in check.changes)
    assert check.seconds == pytest.approx(len(padded) / rate, rel=0.01)


def test_very_quiet_recording_is_rejected(speech: tuple[Floats, int], tmp_path: Path) -> None:
    data, rate = speech
    quiet = data * 10 ** ((-50 - dbfs(data)) / 20)
    assert dbfs(quiet) == pytest.approx(-50, abs=0.01)
    check = check_recording(write(tmp_path / "quiet.wav", quiet, rate), name="quiet.wav")
    assert not check.accepted
    (reason,) = check.reasons
    level = re.match(r"too quiet: speech at (-[\d.]+) dBFS RMS \(at least -40 dBFS\)", reason)
    assert level, reason
    assert -50 < float(level[1]) < -40


def test_moderately_quiet_recording_is_normalised(
    speech: tuple[Floats, int], tmp_path: Path
) -> None:
    data, rate = speech
    soft = data * 10 ** ((-32 - dbfs(data)) / 20)
    check = check_recording(write(tmp_path / "soft.wav", soft, rate), name="soft.wav")
    assert check.accepted, check.reasons
    (level,) = [c for c in check.changes if c.startswith("level")]
    raised = re.match(r"level raised ([\d.]+) dB to (-[\d.]+) dBFS", level)
    assert raised, level
    assert float(raised[1]) > 9
    peak = 20 * math.log10(np.abs(check.pcm.astype(np.float64)).max() / 32768)
    assert peak <= PEAK_DBFS + 0.01
    assert not any(c.startswith("trimmed") for c in check.changes)
    # the frames that were active before the gain, measured after it
    reached = active_dbfs(check.pcm, floor=-50 + float(raised[1]))
    assert reached == pytest.approx(float(raised[2]), abs=0.1)
    assert TARGET_DBFS - 3 < reached < TARGET_DBFS + 0.1


def test_accepted_pcm_is_read_only(speech: tuple[Floats, int], tmp_path: Path) -> None:
    data, rate = speech
    check = check_recording(write(tmp_path / "c.wav", data, rate), name="c.wav")
    with pytest.raises(ValueError):
        check.pcm[0] = 1


# ---------------------------------------------------------------- install / import


@pytest.mark.parametrize(
    ("dialect", "key", "words"),
    [
        ("yue", "../x", "bad prompt key '../x'"),
        ("yue", "", "bad prompt key ''"),
        ("yue", "Welcome", "bad prompt key 'Welcome'"),
        ("yue", "welcome\n", "bad prompt key"),
        ("klingon", "welcome", "unknown dialect 'klingon'"),
        ("../yue", "welcome", "unknown dialect '../yue'"),
        ("cantonese", "welcome", "did you mean 'yue'"),
    ],
)
def test_install_refuses_names_that_are_not_prompts(
    speech: tuple[Floats, int], tmp_path: Path, dialect: str, key: str, words: str
) -> None:
    data, rate = speech
    check = check_recording(write(tmp_path / "c.wav", data, rate), name="c.wav")
    voices = tmp_path / "voices"
    with pytest.raises(VoiceImportError, match=re.escape(words)):
        install_recording(check, voices_dir=voices, dialect=dialect, key=key)
    assert not voices.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.wav"]


def test_install_refuses_a_rejected_recording(tmp_path: Path) -> None:
    rejected = RecordingCheck(name="x.wav", accepted=False, reasons=("silent: no signal",))
    with pytest.raises(VoiceImportError, match=r"x.wav was rejected: silent"):
        install_recording(rejected, voices_dir=tmp_path, dialect="yue", key="welcome")


def test_import_folder_installs_the_good_and_reports_the_bad(
    speech: tuple[Floats, int], tmp_path: Path
) -> None:
    data, rate = speech
    src = tmp_path / "takes"
    src.mkdir()
    write(src / "welcome.wav", stereo_44k(speech), 44100)
    write(src / "goodbye.wav", data * 8, rate)  # clipped
    sf.write(str(src / "hold.flac"), data * 0.5, rate, subtype="PCM_16")
    write(src / "welcom.wav", data, rate)  # a typo
    (src / "main_menu.txt").write_text("script of the menu")
    (src / ".DS_Store").write_bytes(b"\0\1")
    (src / "sub").mkdir()
    write(src / "sub" / "welcome.wav", data, rate)
    voices = tmp_path / "voices"
    results = import_folder(src, voices_dir=voices, dialect="yue", known_keys=KEYS)
    by_name = {r.file.name: r for r in results}
    assert list(by_name) == [
        "goodbye.wav",
        "hold.flac",
        "main_menu.txt",
        "welcom.wav",
        "welcome.wav",
    ]
    assert not by_name["goodbye.wav"].accepted
    assert by_name["goodbye.wav"].reasons[0].startswith("clipped:")
    assert by_name["hold.flac"].installed == voices / "yue" / "hold.wav"
    assert by_name["main_menu.txt"].reasons == (
        "not an audio file name: .txt (use .wav, .flac, .ogg, .aiff, .aif, .au)",
    )
    assert by_name["welcom.wav"].reasons == (
        "no prompt key 'welcom' in the dial plan; known: goodbye, hold, main_menu, welcome",
    )
    welcome = by_name["welcome.wav"]
    assert welcome.accepted and welcome.installed == voices / "yue" / "welcome.wav"
    assert welcome.changes[:2] == ("stereo -> mono", "44100 Hz -> 8000 Hz")
    assert not welcome.replaced
    assert sorted(p.name for p in (voices / "yue").iterdir()) == ["hold.wav", "welcome.wav"]
    again = import_folder(src, voices_dir=voices, dialect="yue", known_keys=KEYS)
    assert [r.replaced for r in again if r.accepted] == [True, True]


def test_import_folder_refuses_bad_folder_or_dialect(tmp_path: Path) -> None:
    with pytest.raises(VoiceImportError, match="not a folder"):
        import_folder(tmp_path / "nope", voices_dir=tmp_path, dialect="yue", known_keys=KEYS)
    with pytest.raises(VoiceImportError, match="unknown dialect 'klingon'"):
        import_folder(tmp_path, voices_dir=tmp_path, dialect="klingon", known_keys=KEYS)


# ------------------------------------------------------------------------ status


def test_voice_status_recorded_synthesised_missing(tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    (voices / "yue").mkdir(parents=True)
    sf.write(str(voices / "yue" / "welcome.wav"), np.zeros(8000), 8000)
    (voices / "yue" / "readme.txt").write_text("not a recording")
    (voices / "hakka").mkdir()
    sf.write(str(voices / "hakka" / "hold.flac"), np.zeros(8000), 8000, subtype="PCM_16")
    statuses = voice_status(
        voices_dir=voices,
        dialects=("mandarin", "yue", "hakka"),
        prompt_keys={"welcome", "hold"},
        synthesis_voices={"mandarin": "cmn-latn-pinyin", "yue": "yue"},
    )
    table = {(s.dialect, s.key): s for s in statuses}
    assert [(s.dialect, s.key) for s in statuses] == [
        ("mandarin", "hold"),
        ("mandarin", "welcome"),
        ("yue", "hold"),
        ("yue", "welcome"),
        ("hakka", "hold"),
        ("hakka", "welcome"),
    ]
    assert table["mandarin", "welcome"].state == "synthesised"
    assert table["yue", "welcome"].state == "recorded"
    assert table["yue", "welcome"].path == voices / "yue" / "welcome.wav"
    assert table["yue", "hold"].state == "synthesised"
    assert table["yue", "hold"].note == "espeak-ng yue"
    assert table["hakka", "hold"].state == "recorded"
    missing = table["hakka", "welcome"]
    assert missing.state == "missing"
    assert "callers hear the mandarin prompt" in missing.note


def test_voice_status_needs_text_to_synthesise(tmp_path: Path) -> None:
    statuses = voice_status(
        voices_dir=tmp_path,
        dialects=("mandarin",),
        prompt_keys={"welcome", "beep"},
        synthesis_voices={"mandarin": "cmn-latn-pinyin"},
        texts={"welcome"},
    )
    assert [(s.key, s.state) for s in statuses] == [("beep", "missing"), ("welcome", "synthesised")]
    assert "cannot be played" in statuses[0].note


# --------------------------------------------------------------------------- CLI


def ivr(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    if not config.exists():
        config.write_text(
            f'[dialplan]\nfile = "{PLAN}"\n\n'
            '[prompts]\nvoices_dir = "voices"\ncache_dir = "cache"\n\n'
            '[storage]\ndatabase = "ivr.sqlite3"\n\n'
            '[queues.general]\noperators = ["sip:op@127.0.0.1:5999"]\n\n'
            '[dialects]\noffered = ["mandarin", "yue", "hakka"]\n'
        )
    return subprocess.run(
        [sys.executable, "-m", "ivr.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )


def test_cli_import_and_status(speech: tuple[Floats, int], tmp_path: Path) -> None:
    data, rate = speech
    takes = tmp_path / "takes"
    takes.mkdir()
    write(takes / "welcome.wav", stereo_44k(speech), 44100)
    write(takes / "goodbye.wav", data * 8, rate)

    done = ivr(tmp_path, "voices", "import", "takes", "--dialect", "yue")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("rejected goodbye.wav: clipped: ")
    assert re.fullmatch(
        r"installed welcome.wav -> voices/yue/welcome.wav \(stereo -> mono, 44100 Hz -> 8000 Hz"
        r"(, level raised [\d.]+ dB to -[\d.]+ dBFS[^)]*\))?\)",
        lines[1],
    ), lines[1]
    assert lines[2] == "1 installed, 1 rejected"
    assert sf.info(str(tmp_path / "voices" / "yue" / "welcome.wav")).samplerate == 8000
    assert not (tmp_path / "voices" / "yue" / "goodbye.wav").exists()

    (takes / "goodbye.wav").unlink()
    done = ivr(tmp_path, "voices", "import", "takes", "--dialect", "yue")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].startswith(
        "installed welcome.wav -> voices/yue/welcome.wav (replaced the previous recording"
    )

    done = ivr(tmp_path, "voices", "status")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^yue\s+welcome\s+recorded\s+voices/yue/welcome.wav$", done.stdout, re.M)
    assert re.search(r"^yue\s+goodbye\s+synthesised\s+espeak-ng yue$", done.stdout, re.M)
    assert re.search(r"^mandarin\s+welcome\s+synthesised\s", done.stdout, re.M)
    summary = re.search(r"^yue: (\d+) recorded, (\d+) synthesised, 0 missing$", done.stdout, re.M)
    assert summary, done.stdout
    assert int(summary[1]) == 1 and int(summary[2]) >= 10
    assert re.search(r"^mandarin: 0 recorded, \d+ synthesised, 0 missing$", done.stdout, re.M)
    hakka = re.search(r"^hakka: 0 recorded, 0 synthesised, (\d+) missing$", done.stdout, re.M)
    assert hakka and int(hakka[1]) == int(summary[2]) + 1  # every prompt key
    assert re.search(r"^hakka\s+welcome\s+missing\s+.*callers hear the mandarin", done.stdout, re.M)
    assert not re.search(r"^(wu|min|xiang|gan)\b", done.stdout, re.M)  # not offered


def test_cli_import_bad_dialect_or_folder_exits_2(tmp_path: Path) -> None:
    (tmp_path / "takes").mkdir()
    done = ivr(tmp_path, "voices", "import", "takes", "--dialect", "klingon")
    assert done.returncode == 2
    assert "unknown dialect 'klingon'" in done.stderr
    done = ivr(tmp_path, "voices", "import", "takes", "--dialect", "cantonese")
    assert done.returncode == 2
    assert "unknown dialect 'cantonese' (did you mean 'yue'?)" in done.stderr
    done = ivr(tmp_path, "voices", "import", "nowhere", "--dialect", "yue")
    assert done.returncode == 2
    assert "not a folder: nowhere" in done.stderr
    assert not (tmp_path / "voices").exists()
