"""Bad input around speech: no model or a corrupt one stops `ivr serve` with
the folder and the fix; a broken gazetteer names its line; a caller who says
nothing (through a real call) is asked once more, then goes to an operator
with a note on the ticket."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audio_tools import write_wav
from tests.conftest import ROOT, StartHotline, write_config
from tests.peers import Baresip, SippUas, free_udp_port
from tests.test_call_path import wait_records

DATA = Path(__file__).parent / "data"


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ivr.cli", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_without_a_model_says_where_it_looked(tmp_path: Path, prompt_cache: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    config = write_config(
        tmp_path,
        operators=["sip:op@127.0.0.1:5999"],
        prompt_cache=prompt_cache,
        models_dir=empty,
        engine="auto",
    )
    done = serve(config)
    assert done.returncode == 2
    assert "no usable speech model" in done.stderr
    assert str(empty.resolve()) in done.stderr and "ivr.speech.install" in done.stderr


def test_serve_with_a_truncated_model_names_the_file(tmp_path: Path, prompt_cache: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(ROOT / "asr_models" / "whisper-base", models / "whisper-base")
    model = models / "whisper-base" / "model.bin"
    with model.open("r+b") as f:
        f.truncate(1_000_000)
    config = write_config(
        tmp_path,
        operators=["sip:op@127.0.0.1:5999"],
        prompt_cache=prompt_cache,
        models_dir=models,
        engine="auto",
    )
    done = serve(config)
    assert done.returncode == 2
    assert "model.bin" in done.stderr and "ivr.speech.install" in done.stderr


def test_serve_with_a_broken_gazetteer_names_the_line(tmp_path: Path, prompt_cache: Path) -> None:
    gazetteer = tmp_path / "gazetteer.toml"
    gazetteer.write_text('[city]\nname = "杭州市"\n[districts\n')
    config = write_config(
        tmp_path,
        operators=["sip:op@127.0.0.1:5999"],
        prompt_cache=prompt_cache,
        gazetteer=gazetteer,
    )
    done = serve(config)
    assert done.returncode == 2
    assert "bad ticket data file" in done.stderr and f"{gazetteer}:3" in done.stderr


@pytest.mark.peers
async def test_a_silent_caller_is_asked_again_then_reaches_an_operator_with_a_note(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    import numpy as np

    hiss = np.random.default_rng(3).normal(0, 3000, 8000 * 30).astype(np.int16)
    voice = write_wav(tmp_path / "caller.wav", hiss)  # a bad line: loud noise, no voice
    operator = SippUas(tmp_path / "op", free_udp_port(), free_udp_port(even=True))
    caller = Baresip(tmp_path / "caller", free_udp_port(), play=voice)
    await operator.start()
    await caller.start()
    try:
        hotline = await start_hotline(
            [operator.uri], dialplan=DATA / "dialplans" / "describe_then_operator.toml"
        )
        await caller.dial(f"sip:12345@127.0.0.1:{hotline.endpoint.port}")
        assert hotline.tickets is not None
        for _ in range(60):  # until the operator has the call
            if any(c.record.outcome == "bridged" for c in hotline.calls.values()):
                break
            await asyncio.sleep(0.3)
        await caller.hangup()
        records = await wait_records(hotline, 1)
        (ticket,) = await hotline.tickets.for_call(records[0].call_id)
    finally:
        await caller.quit()
        await operator.stop()
    assert records[0].path == ["ask", "operator"]
    assert records[0].operator == operator.uri
    assert ticket.recordings == []  # nothing was kept as speech
    assert any("said nothing recognisable twice (noise_only)" in n for n in ticket.notes)
