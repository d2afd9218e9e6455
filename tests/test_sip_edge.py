"""The edge of the SIP endpoint (issue 13 items 1 and 2), with real peers on
loopback addresses: 127.0.0.1 stands for the trunk, 127.0.0.2 for a host that
is not in [sip] allow, 127.0.0.3 for a flooding source.

What a carrier or an admin would check: the trunk's call is answered and
heard; anyone else gets 403 (or nothing); digest credentials are asked for and
checked; a flood gets 503 beyond its limits, spends no RTP port, no call and
no row, while a real call goes on with its audio."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

import pytest
import soundfile as sf

from ivr.config import ConfigError, load_settings, reload_settings
from ivr.server import Hotline
from ivr.sip.edge_guard import RefusalLog, SourceBuckets
from ivr.trial_call import place_call
from tests.audio_tools import best_match
from tests.conftest import StartHotline, trial
from tests.peers import PeerResult, free_udp_port, run_sipp
from tests.sip_raw import RawPeer, header, invite, options, status_of
from tests.test_call_path import wait_records

DATA = Path(__file__).parent / "data"
LOG = logging.getLogger("ivr.test.edge")
TRUNK = "127.0.0.1"
STRANGER = "127.0.0.2"
FLOODER = "127.0.0.3"


async def peer_at(host: str) -> RawPeer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=(host, 0))
    return peer


def register(peer_port: int, server_port: int, host: str) -> str:
    branch = "z9hG4bK" + secrets.token_hex(8)
    return (
        f"REGISTER sip:127.0.0.1:{server_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{peer_port};branch={branch}\r\n"
        f"From: <sip:100@127.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\n"
        f"Call-ID: {secrets.token_hex(8)}\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:100@{host}:{peer_port}>\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )


def heard_welcome(hotline: Hotline, recorded: Path) -> float:
    heard, _ = sf.read(str(recorded), dtype="int16")
    welcome = hotline.prompts.get("welcome").pcm
    return best_match(heard, welcome[4000:12000])[0]


# ------------------------------------------------------------------ allow


async def test_the_trunk_is_answered_and_a_stranger_gets_403(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await start_hotline(sip_extra=f'allow = ["{TRUNK}/32"]')
    port = hotline.endpoint.port
    stranger = await peer_at(STRANGER)
    try:
        text, call_id, _ = invite(stranger.port, port)
        stranger.send(text, port)
        answer = await stranger.expect()
        assert status_of(answer) == 403
        assert "tag=" in (header(answer, "To") or "")
        assert header(answer, "Call-ID") == call_id
        stranger.send(options(stranger.port, port), port)
        assert status_of(await stranger.expect()) == 403
        # nothing was started for the stranger: no transaction, no invite, no port
        assert hotline.endpoint.pending_invites == 0
        assert len(hotline.endpoint.transactions_in) == 0
        assert hotline.ports.in_use == 0

        heard = tmp_path / "heard.wav"
        result = await place_call(trial(port, duration=4.0, record=heard), LOG)
    finally:
        stranger.close()
    assert result.status == 200, result.reason
    assert heard_welcome(hotline, heard) > 0.8, "the trunk's caller did not hear the welcome"
    records = await wait_records(hotline, 1)
    assert len(records) == 1  # the trunk's call only
    assert hotline.endpoint.rejected["not_allowed"] == 2


async def test_a_stranger_over_tcp_gets_403_too(start_hotline: StartHotline) -> None:
    """The edge is the same for both transports: it sees the source address only."""
    hotline = await start_hotline(sip_extra=f'allow = ["{TRUNK}/32"]')
    port = hotline.endpoint.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(STRANGER, 0))
    try:
        local_port = int(writer.get_extra_info("sockname")[1])
        text, call_id, _ = invite(local_port, port)
        writer.write(text.replace("SIP/2.0/UDP", "SIP/2.0/TCP").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    finally:
        writer.close()
    answer = head.decode()
    assert status_of(answer) == 403
    assert header(answer, "Call-ID") == call_id
    assert hotline.endpoint.pending_invites == 0 and hotline.ports.in_use == 0
    assert hotline.endpoint.rejected["not_allowed"] == 1


async def test_silence_mode_answers_a_stranger_nothing(start_hotline: StartHotline) -> None:
    hotline = await start_hotline(sip_extra=f'allow = ["{TRUNK}/32"]\nrefuse = "silence"')
    port = hotline.endpoint.port
    stranger = await peer_at(STRANGER)
    try:
        stranger.send(invite(stranger.port, port)[0], port)
        stranger.send(options(stranger.port, port), port)
        assert await stranger.nothing(1.0)
    finally:
        stranger.close()
    assert hotline.endpoint.rejected["not_allowed"] == 2
    assert hotline.endpoint.pending_invites == 0
    # the trunk is still answered
    trunk = await peer_at(TRUNK)
    try:
        trunk.send(options(trunk.port, port), port)
        assert status_of(await trunk.expect()) == 200
    finally:
        trunk.close()


async def test_a_scanners_sweep_gets_cheap_answers(start_hotline: StartHotline) -> None:
    """REGISTER 405 and OPTIONS 200, each without a transaction: nothing is kept."""
    hotline = await start_hotline()
    port = hotline.endpoint.port
    scanner = await peer_at(TRUNK)
    try:
        scanner.send(register(scanner.port, port, TRUNK), port)
        answer = await scanner.expect()
        for _ in range(50):
            scanner.send(options(scanner.port, port), port)
        probes = [await scanner.expect() for _ in range(50)]
    finally:
        scanner.close()
    assert status_of(answer) == 405
    assert "INVITE" in (header(answer, "Allow") or "")
    assert [status_of(p) for p in probes] == [200] * 50
    assert "tag=" in (header(probes[0], "To") or "")
    assert len(hotline.endpoint.transactions_in) == 0  # answered without a transaction
    assert hotline.endpoint.rejected["method"] == 1


# ------------------------------------------------------------------ digest


AUTH = '[sip.inbound_auth]\nrealm = "12345"\nusers = { carrier = "s3cret" }'


@pytest.mark.peers
async def test_digest_challenge_then_the_call(start_hotline: StartHotline, tmp_path: Path) -> None:
    hotline = await start_hotline(sip_extra=AUTH)
    result = await _sipp_digest(hotline.endpoint.port, tmp_path, "uac_digest.xml", "s3cret")
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    (record,) = await wait_records(hotline, 1)
    assert record.end_reason == "caller_hangup"
    messages = _sipp_messages(tmp_path)
    assert 'WWW-Authenticate: Digest realm="12345"' in messages
    assert 'Authorization: Digest username="carrier"' in messages
    assert hotline.endpoint.rejected["auth_challenge"] == 1
    assert hotline.endpoint.rejected["bad_credentials"] == 0


@pytest.mark.peers
async def test_digest_with_a_wrong_password_is_refused(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await start_hotline(sip_extra=AUTH)
    result = await _sipp_digest(
        hotline.endpoint.port, tmp_path, "uac_digest_refused.xml", "not-the-password"
    )
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    assert "SIP/2.0 403 Forbidden (bad credentials)" in _sipp_messages(tmp_path)
    assert hotline.endpoint.rejected["bad_credentials"] == 1
    assert hotline.endpoint.pending_invites == 0 and hotline.ports.in_use == 0
    await asyncio.sleep(0.5)
    assert hotline.records is not None
    assert await hotline.records.list_recent(10) == []  # no call row for it


async def test_a_forged_nonce_is_challenged_again(start_hotline: StartHotline) -> None:
    hotline = await start_hotline(sip_extra=AUTH)
    port = hotline.endpoint.port
    trunk = await peer_at(TRUNK)
    try:
        text, _, _ = invite(trunk.port, port)
        forged = (
            'Authorization: Digest username="carrier", realm="12345", '
            f'nonce="{0x60000000:x}.{"0" * 32}", uri="sip:12345@127.0.0.1:{port}", '
            'response="00000000000000000000000000000000"\r\n'
        )
        trunk.send(text.replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\n" + forged), port)
        answer = await trunk.expect()
    finally:
        trunk.close()
    assert status_of(answer) == 401
    assert "stale=true" in (header(answer, "WWW-Authenticate") or "")
    assert hotline.endpoint.pending_invites == 0


async def _sipp_digest(port: int, tmp_path: Path, scenario: str, password: str) -> PeerResult:
    return await run_sipp(
        [
            "-sf",
            str(DATA / "sipp" / scenario),
            f"127.0.0.1:{port}",
            "-i",
            TRUNK,
            "-p",
            str(free_udp_port()),
            "-mi",
            TRUNK,
            "-mp",
            str(free_udp_port(even=True)),
            "-au",
            "carrier",
            "-ap",
            password,
            "-m",
            "1",
            "-s",
            "12345",
            "-trace_msg",
            "-trace_err",
            "-timeout",
            "20",
            "-timeout_error",
        ],
        tmp_path / "sipp",
    )


def _sipp_messages(tmp_path: Path) -> str:
    return "".join(
        p.read_text(errors="replace") for p in sorted((tmp_path / "sipp").glob("*_messages.log"))
    )


# ------------------------------------------------------------------ floods


class Flood:
    """INVITEs from one source as fast as it can send them; what came back."""

    def __init__(self, peer: RawPeer, server_port: int) -> None:
        self.peer = peer
        self.server_port = server_port
        self.sent = 0
        self.finals: dict[str, int] = {}  # Call-ID -> final status
        self.answered: list[str] = []  # responses 180/183/200

    async def run(self, count: int) -> None:
        for i in range(count):
            text, _, _ = invite(self.peer.port, self.server_port)
            self.peer.send(text, self.server_port)
            self.sent += 1
            if i % 10 == 9:
                # the IVR reads in this process's loop: let it, or the kernel drops
                await asyncio.sleep(0.002)
        await self.drain(1.5)

    async def drain(self, quiet: float) -> None:
        while True:
            try:
                message = await self.peer.expect(timeout=quiet)
            except TimeoutError:
                return
            status = status_of(message)
            call_id = header(message, "Call-ID") or ""
            if status in (180, 183, 200):
                self.answered.append(message)
            if status >= 200:
                self.finals.setdefault(call_id, status)

    def hang_up(self) -> None:
        """ACK and BYE the calls that were answered (the ones let in)."""
        done: set[str | None] = set()
        for answer in self.answered:
            if status_of(answer) != 200 or header(answer, "Call-ID") in done:
                continue
            done.add(header(answer, "Call-ID"))
            for method, cseq in (("ACK", "1 ACK"), ("BYE", "2 BYE")):
                lines = [
                    f"{method} sip:ivr@127.0.0.1:{self.server_port} SIP/2.0",
                    f"Via: SIP/2.0/UDP {FLOODER}:{self.peer.port};branch=z9hG4bK"
                    + secrets.token_hex(8),
                    f"From: {header(answer, 'From')}",
                    f"To: {header(answer, 'To')}",
                    f"Call-ID: {header(answer, 'Call-ID')}",
                    f"CSeq: {cseq}",
                    "Max-Forwards: 70",
                    "Content-Length: 0",
                ]
                self.peer.send("\r\n".join(lines) + "\r\n\r\n", self.server_port)


async def test_a_flood_gets_503_beyond_its_limits_while_a_real_call_goes_on(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await start_hotline(
        sip_extra="requests_per_second = 20\nrequest_burst = 20\ncalls_per_source = 2"
    )
    port = hotline.endpoint.port
    heard = tmp_path / "heard.wav"
    real = asyncio.ensure_future(place_call(trial(port, duration=6.0, record=heard), LOG))
    await asyncio.sleep(1.0)  # the real call is in progress
    flooder = await peer_at(FLOODER)
    flood = Flood(flooder, port)
    most_ports = 0
    try:
        watching = True

        async def watch_ports() -> None:
            nonlocal most_ports
            while watching:
                most_ports = max(most_ports, hotline.ports.in_use)
                await asyncio.sleep(0.01)

        watcher = asyncio.ensure_future(watch_ports())
        await flood.run(400)
        watching = False
        await watcher
        in_progress = len(hotline.calls)
        result = await real
        flood.hang_up()
        await flood.drain(0.5)
    finally:
        flooder.close()

    # the real call from the trunk's address was answered and heard the IVR
    assert result.status == 200, result.reason
    assert heard_welcome(hotline, heard) > 0.8, "the real call did not hear the welcome"
    # the flood: two calls let in (its calls_per_source), every other INVITE 503
    oks = {header(a, "Call-ID") for a in flood.answered if status_of(a) == 200}
    assert len(oks) == 2, [status_of(a) for a in flood.answered]
    assert set(flood.finals.values()) == {200, 503}
    refused = [s for s in flood.finals.values() if s == 503]
    assert len(refused) >= (flood.sent - 2) * 0.9  # a few may be lost on a busy machine (UDP)
    rejected = hotline.endpoint.rejected
    assert rejected["calls"] >= 1 and rejected["rate"] >= 1
    assert len(refused) <= rejected["calls"] + rejected["rate"] <= flood.sent - 2
    # nothing spent for a refused INVITE: RTP ports, calls, invites, rows
    assert most_ports <= 3  # an RTP port for the real call and each flood call let in
    assert in_progress <= 3
    assert hotline.endpoint.pending_invites == 0
    records = await wait_records(hotline, 3)
    assert len(records) == 3


async def test_over_limit_in_silence_mode_answers_nothing(start_hotline: StartHotline) -> None:
    hotline = await start_hotline(
        sip_extra='requests_per_second = 1\nrequest_burst = 3\nover_limit = "silence"'
    )
    port = hotline.endpoint.port
    prober = await peer_at(FLOODER)
    try:
        for _ in range(10):
            prober.send(options(prober.port, port), port)
        answers = [await prober.expect() for _ in range(3)]
        assert await prober.nothing(0.5)
    finally:
        prober.close()
    assert [status_of(a) for a in answers] == [200, 200, 200]
    assert hotline.endpoint.rejected["rate"] == 7


# ------------------------------------------------------------------ config


def _config_error(tmp_path: Path, sip: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(f'[sip]\n{sip}\n\n[queues.general]\noperators = ["sip:op@127.0.0.1:5080"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return str(caught.value)


def test_edge_keys_are_checked_at_their_line(tmp_path: Path) -> None:
    message = _config_error(tmp_path, 'port = 5060\nallow = ["10.0.0.300/8"]')
    assert 'config.toml:3: sip.allow = ["10.0.0.300/8"]: "10.0.0.300/8" is not an IP network' in (
        message
    )
    message = _config_error(tmp_path, "allow = []")
    assert "config.toml:2: sip.allow = []: must list at least one network" in message
    message = _config_error(tmp_path, 'refuse = "drop"')
    assert "config.toml:2: sip.refuse" in message and "403, silence" in message
    message = _config_error(tmp_path, 'over_limit = "404"')
    assert "config.toml:2: sip.over_limit" in message and "503, silence" in message
    message = _config_error(tmp_path, "requests_per_second = 0")
    assert "config.toml:2: sip.requests_per_second = 0: must be a rate > 0" in message
    message = _config_error(tmp_path, '\n[sip.inbound_auth]\nrealm = "12345"')
    assert "config.toml:3: sip.inbound_auth.users: is missing" in message
    message = _config_error(tmp_path, '\n[sip.inbound_auth]\nusers = { carrier = "" }')
    assert "config.toml:4: sip.inbound_auth.users" in message
    assert "password must be a non-empty string" in message


def test_edge_defaults_let_loopback_in(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[queues.general]\noperators = ["sip:op@127.0.0.1:5080"]\n')
    settings = load_settings(path)
    assert settings.sip.allow == ("127.0.0.0/8", "::1/128")
    assert settings.web.allow == ("127.0.0.0/8", "::1/128")
    assert settings.sip.refuse == "403" and settings.sip.over_limit == "503"
    assert settings.sip.inbound_auth is None


# ------------------------------------------------------------------ bounded memory


def test_the_rate_table_stays_bounded_under_spoofed_sources() -> None:
    """A flood from ever-new addresses: the table keeps at most its capacity, the
    least recently seen dropped first; a source seen often keeps its (empty) bucket."""
    clock = [0.0]
    buckets = SourceBuckets(rate=1.0, burst=2, capacity=100, clock=lambda: clock[0])
    assert buckets.take("198.51.100.1") and buckets.take("198.51.100.1")
    assert not buckets.take("198.51.100.1")  # its burst is spent
    for i in range(10_000):
        buckets.take(f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}")
        if i % 50 == 0:
            assert not buckets.take("198.51.100.1")  # seen often: still remembered, still empty
        assert len(buckets) <= 100
    clock[0] += 1.0
    assert buckets.take("198.51.100.1")  # refilled at its rate


async def test_refusals_are_logged_once_then_summed(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("ivr.test.edge.refusals")
    refusals = RefusalLog(log, interval=0.2, max_sources=3)
    with caplog.at_level(logging.WARNING, logger=log.name):
        for i in range(1000):
            refusals.note(f"203.0.113.{i % 10}", "rate", "INVITE", "503")
        await asyncio.sleep(0.35)
    refusals.close()
    lines = [r.getMessage() for r in caplog.records if r.name == log.name]
    # three sources by name (first line, then one summary each), the other seven summed
    assert len(lines) == 3 + 3 + 1, lines
    assert "sip: refused 99 more requests from 203.0.113.0 in the last 0.2s (rate: 99)" in lines
    assert "sip: refused 700 requests from 7 other sources in the last 0.2s (rate: 700)" in lines


def test_a_changed_password_needs_a_restart_and_is_not_shown(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    queue = '\n[queues.general]\noperators = ["sip:op@127.0.0.1:5080"]\n'
    path.write_text(AUTH.replace("[sip.inbound_auth]", "[sip]\n[sip.inbound_auth]") + queue)
    running = load_settings(path)
    path.write_text(
        AUTH.replace(
            "[sip.inbound_auth]", '[sip]\nallow = ["10.1.0.0/16"]\n[sip.inbound_auth]'
        ).replace("s3cret", "n3w-secret")
        + queue
    )
    reload = reload_settings(path, running)
    changed = {c.key: c for c in reload.needs_restart}
    assert set(changed) == {"sip.allow", "sip.inbound_auth"}
    assert reload.settings.sip == running.sip  # kept until a restart
    said = changed["sip.inbound_auth"].describe() + changed["sip.inbound_auth"].old_text
    assert "secret" not in said and "s3cret" not in said
    assert changed["sip.allow"].describe() == 'sip.allow = ["10.1.0.0/16"]'
