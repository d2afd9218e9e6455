"""`ivr serve` that cannot start exits at once with status 2 and says what
failed, where, and the config key to change (a supervisor then restarts it;
before, a taken port printed "[Errno 98]" and the process never exited)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_config


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    # the timeout only catches a hang (the defect): it is not a figure
    return subprocess.run(
        [sys.executable, "-m", "ivr.cli", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def taken_udp() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@pytest.fixture
def taken_tcp() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def _with_port(config: Path, table: str, port: int) -> None:
    text = config.read_text()
    if table == "sip":
        text = re.sub(r"(?m)^port = \d+$", f"port = {port}", text, count=1)
    else:
        text = text.replace("[web]\nport = 0", f"[web]\nport = {port}")
    config.write_text(text)


def test_a_taken_sip_port_stops_the_start_naming_port_and_key(
    tmp_path: Path, prompt_cache: Path, taken_udp: int
) -> None:
    config = write_config(tmp_path, operators=["sip:op@127.0.0.1:5999"], prompt_cache=prompt_cache)
    _with_port(config, "sip", taken_udp)
    done = _serve(config)
    assert done.returncode == 2, done.stderr
    assert f"127.0.0.1:{taken_udp}" in done.stderr
    assert "already in use" in done.stderr
    assert "[sip] host / port" in done.stderr and str(config) in done.stderr
    assert "Traceback" not in done.stderr
    # and it is in the log (the text log goes to stderr as well)
    assert re.search(r"ERROR.*cannot listen for SIP", done.stderr)


def test_a_taken_web_port_stops_the_start_naming_port_and_key(
    tmp_path: Path, prompt_cache: Path, taken_tcp: int
) -> None:
    config = write_config(tmp_path, operators=["sip:op@127.0.0.1:5999"], prompt_cache=prompt_cache)
    _with_port(config, "web", taken_tcp)
    done = _serve(config)
    assert done.returncode == 2, done.stderr
    assert f"127.0.0.1:{taken_tcp}" in done.stderr
    assert "[web] host / port" in done.stderr


def test_a_database_that_cannot_open_stops_the_start_after_the_model_loaded(
    tmp_path: Path, prompt_cache: Path
) -> None:
    """A failure late in the start (the speech model and the web console are up
    by then) still ends the process: what had started is closed."""
    config = write_config(
        tmp_path,
        operators=["sip:op@127.0.0.1:5999"],
        prompt_cache=prompt_cache,
        engine="auto",  # Whisper really loaded (its threads must not hold the exit)
    )
    folder = tmp_path / "a-folder"
    folder.mkdir()
    config.write_text(
        re.sub(r'(?m)^database = ".*"$', f'database = "{folder}"', config.read_text())
    )
    done = _serve(config)
    assert done.returncode == 2, done.stderr
    assert f"{folder}: cannot open the database" in done.stderr
    assert "[storage] url" in done.stderr


def test_a_postgresql_server_that_cannot_be_reached_stops_the_start_naming_the_url(
    tmp_path: Path, prompt_cache: Path
) -> None:
    """A cluster node whose [storage] url names no running server does not start:
    status 2, the URL (password hidden) and the key to change."""
    config = write_config(tmp_path, operators=["sip:op@127.0.0.1:5999"], prompt_cache=prompt_cache)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])  # nothing listens there once closed
    url = f"postgresql://ivr:secret-pw@127.0.0.1:{closed}/hotline"
    config.write_text(re.sub(r'(?m)^database = ".*"$', f'url = "{url}"', config.read_text()))
    done = _serve(config)
    assert done.returncode == 2, done.stderr
    assert f"postgresql://ivr:***@127.0.0.1:{closed}/hotline" in done.stderr
    assert "cannot connect to the database" in done.stderr and "[storage] url" in done.stderr
    assert "secret-pw" not in done.stderr
