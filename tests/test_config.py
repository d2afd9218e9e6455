"""ivr.config: the bundled config loads; every bad config names file, line and key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ivr.config import (
    DIALECTS,
    ConfigError,
    QueueSettings,
    Settings,
    load_settings,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

QUEUE = '[queues.general]\noperators = ["sip:operator@127.0.0.1:5080"]\n'


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, fragment: str) -> int:
    """1-based number of the first line of ``text`` containing ``fragment``."""
    for number, line in enumerate(text.split("\n"), start=1):
        if fragment in line:
            return number
    raise AssertionError(f"{fragment!r} not in the test config")


def config_error(tmp_path: Path, text: str) -> str:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return str(caught.value)


# ------------------------------------------------------------------ good files


def test_bundled_config_loads() -> None:
    settings = load_settings(PROJECT_ROOT / "config.toml")

    assert isinstance(settings, Settings)
    assert settings.sip.host == "127.0.0.1"
    assert settings.sip.port == 5060
    assert settings.sip.codecs == ("PCMU", "PCMA")
    assert settings.sip.contact_host == "127.0.0.1"
    assert settings.sip.media_host == "127.0.0.1"
    assert settings.queues["general"] == QueueSettings(
        name="general",
        operators=("sip:operator@127.0.0.1:5080",),
        max_waiting=50,
        max_wait=300.0,
    )
    assert settings.prompts.dialect == "mandarin"
    assert settings.prompts.dialect in DIALECTS
    assert settings.dialplan.file == PROJECT_ROOT / "dialplans" / "12345.toml"
    assert settings.storage.database == PROJECT_ROOT / "var" / "ivr.sqlite3"
    assert settings.logging.level == "INFO"


def test_bundled_config_states_the_defaults(tmp_path: Path) -> None:
    """config.toml shows the defaults: a file with only a queue gives the same settings."""
    bundled = load_settings(PROJECT_ROOT / "config.toml")
    defaults = load_settings(write_config(tmp_path, QUEUE))

    assert defaults.sip == bundled.sip
    assert defaults.operators == bundled.operators
    assert defaults.logging == bundled.logging
    assert defaults.queues == bundled.queues
    for default_path, bundled_path in [
        (defaults.dialplan.file, bundled.dialplan.file),
        (defaults.prompts.voices_dir, bundled.prompts.voices_dir),
        (defaults.prompts.cache_dir, bundled.prompts.cache_dir),
        (defaults.storage.database, bundled.storage.database),
    ]:
        assert default_path.relative_to(tmp_path) == bundled_path.relative_to(PROJECT_ROOT)
    assert dataclasses.replace(defaults.prompts, voices_dir=Path(), cache_dir=Path()) == (
        dataclasses.replace(bundled.prompts, voices_dir=Path(), cache_dir=Path())
    )


def test_storage_url_is_a_sqlite_file_or_a_postgresql_url(tmp_path: Path) -> None:
    sqlite = load_settings(write_config(tmp_path, QUEUE + '[storage]\nurl = "db/x.sqlite3"\n'))
    assert sqlite.storage.location == tmp_path / "db" / "x.sqlite3"
    url = "postgresql://ivr:pw@db.example:5432/hotline"
    shared = load_settings(write_config(tmp_path, QUEUE + f'[storage]\nurl = "{url}"\n'))
    assert shared.storage.location == url and shared.storage.postgres_url == url


def test_minimal_config_gets_defaults_and_resolves_paths(tmp_path: Path) -> None:
    text = (
        QUEUE + '[storage]\ndatabase = "db/calls.sqlite3"\n[prompts]\nvoices_dir = "/srv/voices"\n'
    )
    settings = load_settings(write_config(tmp_path, text))

    assert settings.sip.rtp_timeout == 30.0
    assert settings.sip.max_calls == 1000
    assert settings.operators.ring_timeout == 15.0
    assert settings.storage.database == tmp_path / "db" / "calls.sqlite3"
    assert settings.prompts.voices_dir == Path("/srv/voices")
    assert settings.prompts.cache_dir == tmp_path / "var" / "prompt-cache"


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, QUEUE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.sip.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.queues["other"] = settings.queues["general"]  # type: ignore[index]


def test_trunk_networks(tmp_path: Path) -> None:
    """[sip] trunk_networks: CIDR networks (IPv4, IPv6, a bare address as one host);
    none by default."""
    assert load_settings(write_config(tmp_path, QUEUE)).sip.trunk_networks == ()
    text = '[sip]\ntrunk_networks = ["203.0.113.0/24", "2001:DB8::/32", "198.51.100.9"]\n'
    settings = load_settings(write_config(tmp_path, text + QUEUE))
    assert settings.sip.trunk_networks == ("203.0.113.0/24", "2001:db8::/32", "198.51.100.9/32")
    empty = load_settings(write_config(tmp_path, "[sip]\ntrunk_networks = []\n" + QUEUE))
    assert empty.sip.trunk_networks == ()


def test_integers_are_accepted_for_seconds_and_hosts_may_be_names(tmp_path: Path) -> None:
    text = (
        '[sip]\nhost = "0.0.0.0"\npublic_host = "ivr.example.gov.cn"\nrtp_timeout = 5\n'
        'codecs = ["PCMA"]\n' + QUEUE + "max_wait = 60\nmax_waiting = 0\n"
        '[queues.yue_seat]\noperators = ["sip:1001@[::1]:5080", "sip:op.2@op-host:5070"]\n'
    )
    settings = load_settings(write_config(tmp_path, text))

    assert settings.sip.rtp_timeout == 5.0
    assert isinstance(settings.sip.rtp_timeout, float)
    assert settings.sip.contact_host == "ivr.example.gov.cn"
    assert settings.sip.codecs == ("PCMA",)
    assert list(settings.queues) == ["general", "yue_seat"]
    assert settings.queues["general"].max_waiting == 0
    assert settings.queues["yue_seat"].operators[0] == "sip:1001@[::1]:5080"


# ------------------------------------------------------------------- bad files

# (config text, dotted key, fragment of the line to point at, words of the message)
BAD_CONFIGS = [
    pytest.param(
        "[sip]\nhost = '127.0.0.1'\nport = 99999\n" + QUEUE,
        "sip.port",
        "port = 99999",
        "sip.port = 99999: must be an integer 1..65535",
        id="out-of-range",
    ),
    pytest.param(
        '[sip]\nport = "5060"\n' + QUEUE,
        "sip.port",
        'port = "5060"',
        "not a string; write the number without quotes",
        id="wrong-type",
    ),
    pytest.param(
        "[sip]\nmax_calls = true\n" + QUEUE,
        "sip.max_calls",
        "max_calls",
        "not a boolean",
        id="bool-is-not-int",
    ),
    pytest.param(
        "[sip]\nrtp_timeout = 0\n" + QUEUE,
        "sip.rtp_timeout",
        "rtp_timeout",
        "must be a number of seconds > 0",
        id="zero-timeout",
    ),
    pytest.param(
        '[sip]\ncodecs = ["PCMU"]\ntrunk_networks = ["203.0.113.0/24", "10.0.0.0/33"]\n' + QUEUE,
        "sip.trunk_networks",
        "trunk_networks",
        '"10.0.0.0/33" is not an IP network in CIDR notation',
        id="trunk-network-bad-prefix",
    ),
    pytest.param(
        '[sip]\ntrunk_networks = ["203.0.113.7/24"]\n' + QUEUE,
        "sip.trunk_networks",
        "trunk_networks",
        'has host bits set; did you mean "203.0.113.0/24"?',
        id="trunk-network-host-bits",
    ),
    pytest.param(
        '[sip]\ntrunk_networks = "10.0.0.0/8"\n' + QUEUE,
        "sip.trunk_networks",
        "trunk_networks",
        "must be an array of networks like",
        id="trunk-networks-not-an-array",
    ),
    pytest.param(
        "[sip]\ntrunk_networks = [10]\n" + QUEUE,
        "sip.trunk_networks",
        "trunk_networks",
        "10 is an integer",
        id="trunk-network-not-a-string",
    ),
    pytest.param(
        '[sip]\ntrunk_networks = ["10.0.0.0/8", "10.0.0.0/8"]\n' + QUEUE,
        "sip.trunk_networks",
        "trunk_networks",
        "more than once",
        id="trunk-network-repeated",
    ),
    pytest.param(
        "[operators]\nwrap_up = -1.5\n" + QUEUE,
        "operators.wrap_up",
        "wrap_up",
        "must be a number of seconds >= 0",
        id="negative-wrap-up",
    ),
    pytest.param(
        "[sip]\nrtp_port_min = 30000\nrtp_port_max = 29999\n" + QUEUE,
        "sip.rtp_port_min",
        "rtp_port_min",
        "must be less than sip.rtp_port_max (29999)",
        id="rtp-range-reversed",
    ),
    pytest.param(
        "[sip]\nrtp_port_max = 10000\n" + QUEUE,
        "sip.rtp_port_max",
        "rtp_port_max",
        "must be greater than sip.rtp_port_min (20000)",
        id="rtp-max-below-default-min",
    ),
    pytest.param(
        "[sip]\nport = 20002\n" + QUEUE,
        "sip.port",
        "port = 20002",
        "inside the RTP port range",
        id="sip-port-in-rtp-range",
    ),
    pytest.param(
        '[sip]\nhost = "0.0.0.0"\n' + QUEUE,
        "sip.host",
        "host",
        "also set sip.public_host",
        id="wildcard-without-public-host",
    ),
    pytest.param(
        '[sip]\nhost = "not a host!"\n' + QUEUE,
        "sip.host",
        "host",
        "must be an IP address or a host name",
        id="bad-host",
    ),
    pytest.param(
        '[sip]\ncodecs = ["PCMU", "G729"]\n' + QUEUE,
        "sip.codecs",
        "codecs",
        '"G729" is not supported; use only PCMU, PCMA',
        id="bad-codec",
    ),
    pytest.param(
        '[sip]\ncodecs = ["PCMU", "PCMU"]\n' + QUEUE,
        "sip.codecs",
        "codecs",
        "more than once",
        id="repeated-codec",
    ),
    pytest.param(
        '[sip]\nuser_agent = "ivr\\r\\nX-Evil: 1"\n' + QUEUE,
        "sip.user_agent",
        "user_agent",
        "control characters",
        id="header-injection",
    ),
    pytest.param(
        "[sip]\nhost = '127.0.0.1'\nprot = 5060\n" + QUEUE,
        "sip.prot",
        "prot =",
        'unknown key; did you mean "port"?',
        id="unknown-key",
    ),
    pytest.param(
        QUEUE + "max_wiat = 10.0\n",
        "queues.general.max_wiat",
        "max_wiat",
        'did you mean "max_wait"?',
        id="unknown-queue-key",
    ),
    pytest.param(
        QUEUE + "\n[prompt]\ndialect = 'wu'\n",
        "prompt",
        "[prompt]",
        'unknown table; did you mean "prompts"?',
        id="unknown-table",
    ),
    pytest.param(
        '[prompts]\ndialect = "cantonese"\n' + QUEUE,
        "prompts.dialect",
        "dialect",
        'must be one of mandarin, wu, yue, min, hakka, xiang, gan; did you mean "yue"?',
        id="dialect-by-everyday-name",
    ),
    pytest.param(
        '[prompts]\ndialect = "hakkа"\n' + QUEUE,  # Cyrillic a
        "prompts.dialect",
        "dialect",
        'did you mean "hakka"?',
        id="dialect-typo",
    ),
    pytest.param(
        "[prompts]\nespeak_speed = 500\n" + QUEUE,
        "prompts.espeak_speed",
        "espeak_speed",
        "must be an integer 80..450",
        id="espeak-speed",
    ),
    pytest.param(
        '[logging]\nlevel = "info"\n' + QUEUE,
        "logging.level",
        "level",
        'did you mean "INFO"?',
        id="log-level-case",
    ),
    pytest.param(
        "[sip]\nport = 5060\n\n[queues]\n",
        "queues",
        "[queues]",
        "at least one operator queue is required",
        id="empty-queues",
    ),
    pytest.param(
        "[queues.general]\nmax_wait = 10.0\n",
        "queues.general.operators",
        "[queues.general]",
        "is required",
        id="queue-without-operators",
    ),
    pytest.param(
        "[queues.general]\noperators = []\n",
        "queues.general.operators",
        "operators",
        "at least one",
        id="queue-with-empty-operators",
    ),
    pytest.param(
        '[queues.general]\noperators = ["operator@127.0.0.1:5080"]\n',
        "queues.general.operators",
        "operators",
        "must look like sip:user@host:port",
        id="uri-without-scheme",
    ),
    pytest.param(
        '[queues.general]\noperators = ["sip:operator@127.0.0.1"]\n',
        "queues.general.operators",
        "operators",
        "must look like sip:user@host:port",
        id="uri-without-port",
    ),
    pytest.param(
        '[queues.general]\noperators = [\n  "sip:a@127.0.0.1:5080",\n'
        '  "sip:b@127.0.0.1:70000",\n]\n',
        "queues.general.operators",
        "operators",
        "the port must be 1..65535",
        id="uri-port-out-of-range",
    ),
    pytest.param(
        '[queues.Dialect-Seat]\noperators = ["sip:a@127.0.0.1:5080"]\n',
        "queues.Dialect-Seat",
        "[queues.Dialect-Seat]",
        "e.g. to [queues.dialect_seat]",
        id="bad-queue-name",
    ),
    pytest.param(
        'sip = "127.0.0.1"\n' + QUEUE,
        "sip",
        "sip =",
        "must be a table",
        id="section-not-a-table",
    ),
    pytest.param(
        QUEUE + "[storage]\ndatabase = ''\n",
        "storage.database",
        "database",
        "must not be empty",
        id="empty-path",
    ),
    pytest.param(
        QUEUE + '[storage]\nurl = "postgresql://ivr@/ivr"\n',
        "storage.url",
        "url",
        "names no host",
        id="postgres-url-no-host",
    ),
    pytest.param(
        QUEUE + '[storage]\nurl = "postgresql://ivr@db.example:5432"\n',
        "storage.url",
        "url",
        "names no database",
        id="postgres-url-no-database",
    ),
    pytest.param(
        QUEUE + '[storage]\nurl = "postgresql://ivr@db:99999/ivr"\n',
        "storage.url",
        "url",
        "not a valid PostgreSQL URL",
        id="postgres-url-bad-port",
    ),
    pytest.param(
        QUEUE + '[storage]\nurl = "a.sqlite3"\ndatabase = "b.sqlite3"\n',
        "storage.url",
        "url",
        "not both",
        id="sqlite-file-twice",
    ),
    pytest.param(
        QUEUE + '[dialects]\noffered = ["mandarin", "cantonese"]\n',
        "dialects.offered",
        "offered",
        '"cantonese" is not a dialect group (mandarin, wu, yue, min, hakka, xiang, gan); '
        'did you mean "yue"?',
        id="unknown-dialect-offered",
    ),
    pytest.param(
        QUEUE + "[elderly]\nspeeds = [0.8, 0.3]\n",
        "elderly.speeds",
        "speeds",
        "0.3 is not a speed we render",
        id="unknown-speed",
    ),
    pytest.param(
        QUEUE + '[dialects.seats]\nwu = ["sip:operator@127.0.0.1:5080"]\n',
        "dialects.seats.wu",
        "wu =",
        "is not an offered dialect",
        id="seat-for-a-dialect-not-offered",
    ),
    pytest.param(
        QUEUE + '[dialects.seats]\nyue = ["sip:someone@127.0.0.1:5099"]\n',
        "dialects.seats.yue",
        "yue =",
        "is not an operator of any [queues.*]",
        id="seat-not-an-operator",
    ),
    pytest.param(
        QUEUE + '[elderly]\nseats = ["sip:someone@127.0.0.1:5099"]\n',
        "elderly.seats",
        "seats =",
        "is not an operator of any [queues.*]",
        id="elderly-seat-not-an-operator",
    ),
    pytest.param(
        QUEUE + '[dialects.voices]\nklingon = "tlh"\n',
        "dialects.voices.klingon",
        "klingon",
        "is not a dialect group",
        id="voice-for-unknown-dialect",
    ),
]


def test_dialects_and_speeds_from_config(tmp_path: Path) -> None:
    text = (
        QUEUE
        + '[dialects]\noffered = ["mandarin", "yue", "wu"]\noverflow_after = 5\n'
        + '[dialects.seats]\nyue = ["sip:operator@127.0.0.1:5080"]\n'
        + '[dialects.voices]\nyue = ""\n'
        + "[elderly]\nspeed = 0.7\nspeeds = [0.65]\n"
    )
    settings = load_settings(write_config(tmp_path, text))
    assert settings.dialects.offered == ("mandarin", "yue", "wu")
    assert settings.dialects.overflow_after == 5.0
    assert settings.dialects.skills_of("sip:operator@127.0.0.1:5080") == frozenset({"yue"})
    assert "yue" not in settings.dialects.voices  # "": no synthesis, recordings or mandarin
    assert settings.elderly.speeds == (0.7, 0.65)  # the elderly speed is always rendered


@pytest.mark.parametrize(("text", "key", "line_fragment", "words"), BAD_CONFIGS)
def test_bad_config_names_file_line_and_key(
    tmp_path: Path, text: str, key: str, line_fragment: str, words: str
) -> None:
    message = config_error(tmp_path, text)

    line = line_of(text, line_fragment)
    assert f"config.toml:{line}: {key}" in message
    assert words in message
    assert str(tmp_path) in message


def test_no_queue_at_all_is_an_error_without_a_line(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[sip]\nport = 5060\n")

    assert message.startswith(f"{tmp_path / 'config.toml'}: queues: ")
    assert "at least one operator queue is required" in message
    assert "[queues.general]" in message  # says how to fix it


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = QUEUE + "[sip]\nport = 5060\nhost = \n"
    message = config_error(tmp_path, text)

    assert f"config.toml:{line_of(text, 'host =')}: TOML syntax error" in message


def test_toml_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    text = QUEUE + "[sip]\nport = 5060\nport = 5070\n"
    message = config_error(tmp_path, text)

    assert f"config.toml:{line_of(text, 'port = 5070')}: TOML syntax error" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.toml: file not found"):
        load_settings(tmp_path / "nowhere.toml")


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(QUEUE.encode() + '[prompts]\ndialect = "粤语"\n'.encode("gbk"))

    with pytest.raises(ConfigError, match=r"config\.toml:4: not valid UTF-8"):
        load_settings(path)


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    text = "[sip]\nport = 0\nmax_calls = -1\n[logging]\nformat = 'xml'\n" + QUEUE
    message = config_error(tmp_path, text)

    lines = message.split("\n")
    assert len(lines) == 3
    assert lines[0].endswith("config.toml:2: sip.port = 0: must be an integer 1..65535")
    assert "config.toml:3: sip.max_calls = -1" in lines[1]
    assert 'config.toml:5: logging.format = "xml": must be one of json, text' in lines[2]


def test_line_is_found_for_dotted_keys_and_inline_tables(tmp_path: Path) -> None:
    text = (
        'description = """\n'
        "port = 1 is not a key here\n"
        '"""\n'
        "sip.port = 99999\n"
        "[queues]\n"
        'general = { operators = ["sip:x@127.0.0.1"] }\n'
    )
    message = config_error(tmp_path, text)

    assert 'config.toml:1: description = "port = 1 is not a key here\\n": unknown key' in message
    assert "config.toml:4: sip.port = 99999" in message
    assert "config.toml:6: queues.general.operators" in message


def test_error_carries_structured_problems(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[sip]\nport = 99999\n" + QUEUE)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert caught.value.path == path
    (problem,) = caught.value.problems
    assert (problem.line, problem.key) == (2, "sip.port")


def test_no_overflow_needs_a_seat_for_every_dialect(tmp_path: Path) -> None:
    text = QUEUE + '[dialects]\noffered = ["mandarin", "yue"]\noverflow = false\n'
    message = config_error(tmp_path, text)
    assert f"config.toml:{line_of(text, 'overflow =')}: dialects.overflow" in message
    assert "yue has no seat" in message
