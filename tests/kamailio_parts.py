"""The cluster's real parts for tests, all on 127.0.0.x: Kamailio started from
deploy/kamailio/kamailio.cfg with generated defines and lists, `ivr serve` nodes
(subprocesses, so kill -9 is real), and sipp callers dialling Kamailio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ivr.config import load_settings
from tests.conftest import ROOT, write_config
from tests.peers import SIPP_PCAPS, free_udp_port, run_sipp
from tests.sip_raw import RawPeer, options, status_of

KAMAILIO_CFG = ROOT / "deploy" / "kamailio" / "kamailio.cfg"
SIPP_DATA = Path(__file__).parent / "data" / "sipp"
NO_SPEECH_PLAN = Path(__file__).parent / "data" / "dialplans" / "straight_to_queue.toml"


def kamailio_binary() -> str | None:
    """The kamailio program (Debian puts it in /usr/sbin, not on a user's PATH)."""
    return shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")


async def raw_peer_on(host: str) -> RawPeer:
    """A raw UDP SIP peer bound to ``host`` (a 127.0.0.x address)."""
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=(host, 0))
    return peer


async def options_status(port: int, *, source: str = "127.0.0.1", wait: float = 1.0) -> int:
    """The status a SIP OPTIONS to 127.0.0.1:``port`` from ``source`` gets (0: none)."""
    peer = await raw_peer_on(source)
    try:
        peer.send(options(peer.port, port), port)
        return status_of(await peer.expect(wait))
    except TimeoutError:
        return 0
    finally:
        peer.close()


@dataclass
class Kamailio:
    """Kamailio in the foreground (-DD -E) as whoever runs the tests, from a temp dir."""

    workdir: Path
    nodes: list[int]  # the IVR nodes' SIP ports on 127.0.0.1, dispatcher set 1
    allowed: list[str]  # addresses on the allow-list (permissions group 1)
    port: int = 0
    pike_density: int = 300
    pike_unit: int = 2
    ping_interval: int = 1
    fr_timer_ms: int = 1500
    proc: asyncio.subprocess.Process | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "kamailio.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def write_lists(self) -> tuple[Path, Path]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        dispatcher = self.workdir / "dispatcher.list"
        dispatcher.write_text(
            "".join(f"1 sip:127.0.0.1:{port} 0 0 duid=node{port}\n" for port in self.nodes)
        )
        allow = self.workdir / "address.list"
        allow.write_text("".join(f"1 {address} 32 0\n" for address in self.allowed))
        return dispatcher, allow

    def command(self) -> list[str]:
        binary = kamailio_binary()
        assert binary is not None, "kamailio is not installed (apt-get install kamailio)"
        dispatcher, allow = self.write_lists()
        run = self.workdir / "run"
        run.mkdir(exist_ok=True)
        defines = {
            "LISTEN_ADDR": "127.0.0.1",
            "LISTEN_PORT": str(self.port),
            "DS_LIST": f'"{dispatcher}"',
            "ALLOW_LIST": f'"{allow}"',
            "PING_INTERVAL": str(self.ping_interval),
            "FR_TIMER_MS": str(self.fr_timer_ms),
            "PIKE_DENSITY": str(self.pike_density),
            "PIKE_UNIT": str(self.pike_unit),
            "CHILDREN": "2",
        }
        args = [binary, "-f", str(KAMAILIO_CFG), "-DD", "-E", "-Y", str(run), "-w", str(run)]
        for name, value in defines.items():
            args += ["-A", f"{name}={value}"]
        return args

    async def start(self) -> None:
        if not self.port:
            self.port = free_udp_port()
        command = self.command()
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *command,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its children are stopped with it
            )
        probe = self.allowed[0] if self.allowed else "127.0.0.1"
        for _ in range(100):
            if self.proc.returncode is not None:
                raise RuntimeError(f"kamailio exited at start:\n{self.log()[-3000:]}")
            if await options_status(self.port, source=probe, wait=0.2) != 0:
                return
        raise RuntimeError(f"kamailio does not answer on {self.port}:\n{self.log()[-3000:]}")

    async def wait_log(self, pattern: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log()):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"kamailio never logged {pattern!r}:\n{self.log()[-3000:]}")

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


@dataclass
class IvrNode:
    """`ivr serve` in a subprocess with its own config, ports and SQLite."""

    name: str
    directory: Path
    config: Path
    proc: asyncio.subprocess.Process | None = None

    @classmethod
    def write(cls, name: str, directory: Path, prompt_cache: Path, extra: str = "") -> IvrNode:
        directory.mkdir(parents=True, exist_ok=True)
        config = write_config(
            directory,
            operators=["sip:nobody@127.0.0.1:9"],  # callers wait in the queue until they hang up
            prompt_cache=prompt_cache,
            dialplan=NO_SPEECH_PLAN,
            extra=extra,
        )
        return cls(name, directory, config)

    @property
    def sip_port(self) -> int:
        return load_settings(self.config).sip.port

    @property
    def rtp_ports(self) -> range:
        sip = load_settings(self.config).sip
        return range(sip.rtp_port_min, sip.rtp_port_max + 1)

    @property
    def log_path(self) -> Path:
        return self.directory / "serve.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ivr.cli", "--config", str(self.config), *args]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT)}

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command("serve"),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )

    async def ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"node {self.name} exited at start:\n{self.log()[-3000:]}")
            if await options_status(self.sip_port, wait=0.3) == 200:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"node {self.name} not ready:\n{self.log()[-3000:]}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def drain(self) -> tuple[int, str]:
        """`ivr drain --config ...`: waits until the node has exited."""
        proc = await asyncio.create_subprocess_exec(
            *self.command("drain"), cwd=ROOT, stdout=subprocess.PIPE, env=self.env
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode or 0, out.decode(errors="replace")

    async def exited(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)  # the second: end the calls now
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclass
class SippCalls:
    """What a run of sipp callers saw."""

    returncode: int
    successful: int
    failed: int
    answered_by: list[int] = field(default_factory=list)  # node SIP port, one per call
    media_ports: list[int] = field(default_factory=list)  # the SDP port in each 200 OK
    messages: str = ""
    stdout: str = ""


def _last_count(label: str, screen: str) -> int:
    found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", screen)
    return int(found[-1]) if found else 0


def parse_answers(messages: str) -> tuple[list[int], list[int]]:
    """Per call answered: the node's port in the 200 OK's Contact, the SDP's port."""
    nodes: dict[str, tuple[int, int]] = {}
    for block in re.split(r"\n-{10,}[^\n]*\n", messages):
        if "SIP/2.0 200 OK" not in block or not re.search(r"CSeq:\s*1 INVITE", block):
            continue
        call_id = re.search(r"Call-ID:\s*(\S+)", block)
        contact = re.search(r"Contact:\s*<?sip:ivr@127\.0\.0\.1:(\d+)", block)
        media = re.search(r"m=audio (\d+)", block)
        if call_id and contact and media:
            nodes.setdefault(call_id.group(1), (int(contact.group(1)), int(media.group(1))))
    return [n for n, _ in nodes.values()], [m for _, m in nodes.values()]


async def sipp_callers(
    workdir: Path,
    kamailio_port: int,
    *,
    calls: int = 1,
    duration_ms: int = 1000,
    rate: float = 2.0,
    limit: int = 10,
    scenario: str = "uac_via_proxy.xml",
    source: str = "127.0.0.1",
    timeout: float = 60.0,
) -> SippCalls:
    """sipp placing ``calls`` calls to 12345 through Kamailio from ``source``."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = _caller_args(kamailio_port, scenario, source, calls, rate, limit, duration_ms)
    args += ["-timeout", f"{int(timeout)}s", "-timeout_error"]
    result = await run_sipp(args, workdir, timeout=timeout + 10)
    messages = "".join(
        p.read_text(errors="replace") for p in sorted(workdir.glob("*_messages.log"))
    )
    nodes, media_ports = parse_answers(messages)
    return SippCalls(
        returncode=result.returncode,
        successful=_last_count("Successful call", result.stdout),
        failed=_last_count("Failed call", result.stdout),
        answered_by=nodes,
        media_ports=media_ports,
        messages=messages,
        stdout=result.stdout,
    )


def _caller_args(
    kamailio_port: int,
    scenario: str,
    source: str,
    calls: int,
    rate: float,
    limit: int,
    duration_ms: int,
) -> list[str]:
    return [
        f"127.0.0.1:{kamailio_port}",
        "-sf",
        str(SIPP_DATA / scenario),
        "-s",
        "12345",
        "-i",
        source,
        "-p",
        str(_free_port_on(source)),
        "-mi",
        source,
        "-mp",
        str(free_udp_port(even=True)),
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-l",
        str(limit),
        "-d",
        str(duration_ms),
        "-trace_msg",
        "-trace_err",
    ]


@dataclass
class SippCaller:
    """sipp calling 12345 through Kamailio (or straight to a node's port) as
    ``number``, in the background: the test decides when it is over (a caller
    whose node was killed never gets its BYE answered)."""

    workdir: Path
    port: int  # Kamailio's (or a node's) SIP port on 127.0.0.1
    number: str
    calls: int = 1
    duration_ms: int = 60_000
    rate: float = 10.0
    limit: int = 100
    source: str = "127.0.0.1"
    proc: asyncio.subprocess.Process | None = None
    stdout: str = ""

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        link = self.workdir / "pcap"
        if not link.exists():
            link.symlink_to(SIPP_PCAPS)
        args = _caller_args(
            self.port,
            "uac_via_proxy_as.xml",
            self.source,
            self.calls,
            self.rate,
            self.limit,
            self.duration_ms,
        )
        with (self.workdir / "screen.txt").open("wb") as screen:  # never a full pipe
            self.proc = await asyncio.create_subprocess_exec(
                "sipp",
                *args,
                "-key",
                "caller",
                self.number,
                "-nostdin",
                cwd=self.workdir,
                stdout=screen,
                stderr=subprocess.STDOUT,
            )

    def messages(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("*_messages.log"))
        )

    def answered_by(self) -> list[int]:
        """The SIP port of the node that answered each call so far."""
        return parse_answers(self.messages())[0]

    async def answered(self, count: int = 1, timeout: float = 15.0) -> list[int]:
        """Wait until ``count`` calls were answered; the nodes' ports."""
        deadline = time.monotonic() + timeout
        while len(found := self.answered_by()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.number}: {len(found)} of {count} calls answered")
            await asyncio.sleep(0.05)
        return found

    async def finished(self, timeout: float = 60.0) -> SippCalls:
        """Wait for sipp to end by itself; what it saw."""
        assert self.proc is not None
        await asyncio.wait_for(self.proc.wait(), timeout)
        return self._result()

    async def stop(self) -> SippCalls:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        return self._result()

    def _result(self) -> SippCalls:
        screen = self.workdir / "screen.txt"
        self.stdout = screen.read_text(errors="replace") if screen.exists() else ""
        messages = self.messages()
        nodes, media_ports = parse_answers(messages)
        return SippCalls(
            returncode=self.proc.returncode or 0 if self.proc is not None else 0,
            successful=_last_count("Successful call", self.stdout),
            failed=_last_count("Failed call", self.stdout),
            answered_by=nodes,
            media_ports=media_ports,
            messages=messages,
            stdout=self.stdout,
        )


@dataclass(frozen=True)
class SipMessage:
    """One SIP message of a sipp -trace_msg log."""

    at: float  # epoch seconds sipp logged it
    received: bool
    first_line: str
    headers: dict[str, str]  # lower-case name: the first value

    @property
    def method(self) -> str:
        """INVITE, CANCEL... for a request; "" for a response."""
        word = self.first_line.split(" ", 1)[0]
        return "" if word.startswith("SIP/") else word

    @property
    def status(self) -> int:
        parts = self.first_line.split(" ", 2)
        return int(parts[1]) if self.first_line.startswith("SIP/") and len(parts) > 1 else 0

    @property
    def via_port(self) -> int:
        found = re.search(r"SIP/2\.0/UDP [^:;\s]+:(\d+)", self.headers.get("via", ""))
        return int(found.group(1)) if found else 0

    @property
    def from_user(self) -> str:
        found = re.search(r"sip:([^@>;]+)@", self.headers.get("from", ""))
        return found.group(1) if found else ""


_TRACE_BLOCK = re.compile(
    r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n"
    r"UDP message (received|sent)[^\n]*\n\n",
    re.MULTILINE,
)


def sip_messages(trace: str) -> list[SipMessage]:
    """The messages of a sipp -trace_msg log, in the order sipp logged them."""
    parts = _TRACE_BLOCK.split(trace)
    out: list[SipMessage] = []
    for i in range(1, len(parts) - 2, 3):
        stamp, way, text = parts[i], parts[i + 1], parts[i + 2]
        lines = text.strip("\n").splitlines()
        if not lines:
            continue
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line.strip():
                break
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        out.append(SipMessage(at, way == "received", lines[0].strip(), headers))
    return out


@dataclass(frozen=True)
class Ring:
    """An INVITE a phone (a sipp uas) received, until it was over for the phone:
    CANCEL or BYE received, BYE sent, or a final error answer sent."""

    call_id: str
    began: float
    ended: float | None  # None: never over (its caller's node died mid-ring)
    rung_by: int  # the SIP port in the INVITE's Via: which node rang
    caller: str  # the From user: the number shown on the phone
    headers: dict[str, str]


def rings(trace: str) -> list[Ring]:
    """Every INVITE a sipp uas received (its -trace_msg log), in order."""
    messages = sip_messages(trace)
    found: dict[str, Ring] = {}
    ends: dict[str, float] = {}
    for m in messages:
        call_id = m.headers.get("call-id", "")
        if m.received and m.method == "INVITE" and "cseq" in m.headers:
            if call_id not in found and " INVITE" in m.headers["cseq"]:
                found[call_id] = Ring(call_id, m.at, None, m.via_port, m.from_user, m.headers)
            continue
        over = (
            (m.received and m.method in ("CANCEL", "BYE"))
            or (not m.received and m.method == "BYE")
            or (not m.received and m.status >= 300 and "INVITE" in m.headers.get("cseq", ""))
        )
        if over and call_id not in ends:
            ends[call_id] = m.at
    return [
        Ring(r.call_id, r.began, ends.get(r.call_id), r.rung_by, r.caller, r.headers)
        for r in sorted(found.values(), key=lambda r: r.began)
    ]


def double_rings(found: list[Ring]) -> list[tuple[Ring, Ring]]:
    """Pairs of rings of one phone that overlapped: the second INVITE came
    while the first was not over."""
    pairs = []
    for i, first in enumerate(found):
        for second in found[i + 1 :]:
            if first.ended is None or second.began < first.ended:
                pairs.append((first, second))
    return pairs


def _free_port_on(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
