"""Fixtures: a real IVR (in this process, on 127.0.0.1) built from a config
file written for each test, and the paths of the project's assets."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ivr.trial_call import TrialOptions
from tests.peers import free_port_block, free_udp_port
from tests.postgres_server import PostgresServer

if TYPE_CHECKING:
    from ivr.server import Hotline

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

StartHotline = Callable[..., Awaitable["Hotline"]]


# where our trial callers take their RTP ports (by the IVR's SIP port); a
# test IVR's own RTP block is kept out of it, or the fuzz's answered calls
# could hold every port a trial caller may bind
TRIAL_RTP_REGION = (41000, 41000 + 999 * 4 + 40)


def trial(port: int, **kwargs: object) -> TrialOptions:
    """Options for our trial caller dialling the IVR on ``port``."""
    low = TRIAL_RTP_REGION[0] + (port % 1000) * 4
    kwargs.setdefault("rtp_ports", (low, low + 40))
    return TrialOptions(target=f"sip:12345@127.0.0.1:{port}", **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server (Debian's) for the whole run, on 127.0.0.1."""
    server = PostgresServer.start()
    yield server
    server.stop()


def new_postgres_database(request: pytest.FixtureRequest, server: PostgresServer) -> str:
    """A fresh database for this test on the shared server; its URL."""
    name = "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20]
    return server.new_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's store lives: an SQLite file, then a PostgreSQL database
    (every storage test runs on both back ends)."""
    if request.param == "sqlite":
        return tmp_path / "ivr.sqlite3"
    return new_postgres_database(request, request.getfixturevalue("postgres_server"))


@pytest.fixture(scope="session")
def prompt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prompt-cache")


def write_config(
    directory: Path,
    *,
    operators: list[str],
    prompt_cache: Path,
    dialplan: Path | None = None,
    sip_extra: str = "",
    ring_timeout: float = 4.0,
    max_wait: float = 60.0,
    queue_extra: str = "",
    extra: str = "",
    models_dir: Path | None = None,
    gazetteer: Path | None = None,
    taxonomy: Path | None = None,
    speech_extra: str = "",
    callbacks: str = "enabled = false",
    voices_dir: Path | None = None,
    engine: str = "scripted",
    script: Sequence[str] = (),
) -> Path:
    """A config for a test IVR. ``engine``: the speech engine; the scripted
    recogniser by default (no model loaded: utterances are heard as
    ``script``'s texts in turn, "" after the last), so tests of SIP, RTP, keys,
    queues and the console start fast; a test that checks what was *said*
    passes ``engine="auto"`` (Whisper base) or "vosk"."""
    low, high = free_port_block(400, avoid=TRIAL_RTP_REGION)
    sip_port = free_udp_port()
    while low <= sip_port <= high:
        sip_port = free_udp_port()
    ops = ", ".join(f'"{uri}"' for uri in operators)
    text = f"""
[sip]
host = "127.0.0.1"
port = {sip_port}
rtp_port_min = {low}
rtp_port_max = {high}
{sip_extra}

[dialplan]
file = "{dialplan or ROOT / "dialplans" / "12345.toml"}"

[prompts]
voices_dir = "{voices_dir or ROOT / "voices"}"
cache_dir = "{prompt_cache}"

[storage]
database = "{directory / "ivr.sqlite3"}"
recordings_dir = "{directory / "recordings"}"

[speech]
engine = "{engine}"
models_dir = "{models_dir or ROOT / "asr_models"}"
{f"script = {json.dumps(list(script), ensure_ascii=False)}" if engine == "scripted" else ""}
{speech_extra}

[tickets]
gazetteer = "{gazetteer or ROOT / "gazetteer.toml"}"
{f'taxonomy = "{taxonomy}"' if taxonomy else ""}

[web]
port = 0

[callbacks]
{callbacks}

[operators]
ring_timeout = {ring_timeout}

[queues.general]
operators = [{ops}]
max_wait = {max_wait}
{queue_extra}

[logging]
level = "DEBUG"
format = "text"
{extra}
"""
    path = directory / "config.toml"
    path.write_text(text)
    return path


@pytest.fixture
async def start_hotline(tmp_path: Path, prompt_cache: Path) -> AsyncIterator[StartHotline]:
    """``await start_hotline(operators, **write_config's keywords)``: a started
    IVR, stopped after the test. The scripted recogniser unless the test asks
    for a real engine (``engine="auto"``)."""
    started: list[Hotline] = []

    from ivr.server import Hotline

    async def start(operators: list[str] | None = None, **kwargs: object) -> Hotline:
        clock = kwargs.pop("clock", None)
        path = write_config(
            tmp_path,
            operators=operators or ["sip:nobody@127.0.0.1:9"],
            prompt_cache=prompt_cache,
            **kwargs,  # type: ignore[arg-type]
        )
        from ivr.config import load_settings
        from ivr.logs import setup_logging

        settings = load_settings(path)
        log = setup_logging("DEBUG", "text")
        log.propagate = True  # so caplog sees the IVR's lines too
        hotline = Hotline(settings, log, clock=clock) if clock else Hotline(settings, log)  # type: ignore[arg-type]
        await hotline.start()
        started.append(hotline)
        return hotline

    yield start
    for hotline in started:
        if not hotline.stopped.is_set():
            await hotline.stop(drain_timeout=2.0)
    logging.getLogger("ivr").handlers.clear()
