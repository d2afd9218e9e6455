"""The scripted recogniser (tests and trials only): the script's texts in
turn, one per utterance, whatever the audio; chosen and checked in config."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ivr.config import ConfigError, load_settings
from ivr.speech import load_engine
from ivr.speech.scripted_engine import ScriptedEngine
from ivr.speech.transcriber import Transcriber

QUEUE = '[queues.general]\noperators = ["sip:operator@127.0.0.1:5080"]\n'


def noise(seconds: float, seed: int) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    return rng.integers(-3000, 3000, round(seconds * 8000)).astype(np.int16)


def test_texts_in_turn_then_nothing() -> None:
    engine = ScriptedEngine(["我叫王芳", " 人工 ", "人工"])
    heard = [engine.transcribe(noise(1.0, seed)) for seed in range(5)]
    assert [t.text for t in heard] == ["我叫王芳", "人工", "人工", "", ""]
    assert {t.engine for t in heard} == {"scripted"}
    assert heard[0].audio_seconds == pytest.approx(1.0)
    assert heard[0].unreliable is None
    assert engine.used == 3


def test_no_audio_takes_no_entry() -> None:
    engine = ScriptedEngine(["投诉"])
    assert engine.transcribe(np.zeros(0, dtype=np.int16)).text == ""
    assert engine.transcribe(noise(0.5, 1)).text == "投诉"


def test_an_utterance_recognised_early_then_whole_takes_one_entry() -> None:
    """The call path starts recognising at a pause and again when the caller
    goes on: the longer audio begins with the earlier one, same entry."""
    engine = ScriptedEngine(["我叫王芳，住在天目山路", "人工"])
    whole = noise(3.0, 7)
    early = engine.transcribe(whole[:8000])
    later = engine.transcribe(whole[:16000])
    final = engine.transcribe(whole)
    assert early.text == later.text == final.text == "我叫王芳，住在天目山路"
    assert engine.transcribe(noise(1.0, 8)).text == "人工"
    # the same audio again is another utterance, not a continuation
    assert engine.transcribe(noise(1.0, 8)).text == ""


def test_a_loop_in_the_script_is_flagged_as_whisper_would() -> None:
    engine = ScriptedEngine(["1111111111111111"])
    assert engine.transcribe(noise(1.0, 2)).unreliable is not None


def test_stream_gathers_and_ignores_the_grammar() -> None:
    engine = ScriptedEngine(["咨询"])
    stream = engine.open_stream(["咨询", "投诉"])
    assert stream.accept(noise(0.4, 3)) == ""
    assert stream.accept(noise(0.4, 4)) == ""
    assert stream.finish().text == "咨询"
    with pytest.raises(RuntimeError):
        stream.finish()


def test_threads_never_get_one_entry_twice() -> None:
    script = [f"第{n}句" for n in range(40)]
    engine = ScriptedEngine(script)
    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda n: engine.transcribe(noise(0.2, n)).text, range(40)))
    assert sorted(texts) == sorted(script)


async def test_loaded_by_name_without_a_model(tmp_path: Path) -> None:
    engine = load_engine("scripted", tmp_path / "no models here", script=["人工"])
    assert engine.name == "scripted"
    transcriber = await Transcriber.load(
        "scripted", tmp_path, workers=2, threads=1, script=["求助"]
    )
    try:
        assert (await transcriber.transcribe(noise(1.0, 5), ["求助"])).text == "求助"
    finally:
        transcriber.close()


# -- config ------------------------------------------------------------------------
def load(tmp_path: Path, speech: str) -> str | tuple[str, tuple[str, ...]]:
    """The engine and script of a config with ``speech`` as its [speech]
    table, or the error it gives."""
    path = tmp_path / "config.toml"
    path.write_text(f"{QUEUE}\n[speech]\n{speech}", encoding="utf-8")
    try:
        settings = load_settings(path)
    except ConfigError as error:
        return str(error)
    return settings.speech.engine, settings.speech.script


def test_config_takes_a_script(tmp_path: Path) -> None:
    speech = 'engine = "scripted"\nscript = ["我叫王芳", "", "人工", "人工"]\n'
    assert load(tmp_path, speech) == ("scripted", ("我叫王芳", "", "人工", "人工"))
    assert load(tmp_path, 'engine = "scripted"\n') == ("scripted", ())
    assert load(tmp_path, 'engine = "auto"\n') == ("auto", ())


@pytest.mark.parametrize(
    ("speech", "line", "says"),
    [
        (
            'engine = "whisper"\nscript = ["人工"]\n',
            6,
            'speech.script = ["人工"]: is read only by engine = "scripted"',
        ),
        ('engine = "scripted"\nscript = "人工"\n', 6, 'speech.script = "人工": must be an array'),
        ('engine = "scripted"\nscript = ["人工", 3]\n', 6, "must contain only strings; 3 is"),
        (
            'engine = "scrypted"\n',
            5,
            'speech.engine = "scrypted": must be one of auto, whisper, vosk, scripted',
        ),
    ],
)
def test_config_errors_name_the_line(tmp_path: Path, speech: str, line: int, says: str) -> None:
    error = load(tmp_path, speech)
    assert isinstance(error, str)
    assert f"config.toml:{line}:" in error and says in error, error
