"""Real SIP peers for tests: sipp and baresip, over 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

SIPP_PCAPS = Path("/usr/share/sip-tester")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def free_udp_port(even: bool = False) -> int:
    """A port free now on 127.0.0.1 for UDP and for TCP too (a SIP port
    listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if even and port % 2:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def free_port_block(size: int = 200, avoid: tuple[int, int] | None = None) -> tuple[int, int]:
    """A block of UDP ports that are free now (for RTP ranges), outside
    ``avoid`` (a range other peers take their ports from later)."""
    import random

    for _ in range(100):
        low = random.randrange(20000, 50000, 2)
        if avoid is not None and low <= avoid[1] and low + size - 1 >= avoid[0]:
            continue
        ok = True
        for port in range(low, low + size, 37):
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("127.0.0.1", port))
            except OSError:
                ok = False
                break
        if ok:
            return low, low + size - 1
    raise RuntimeError("no free port block")


@dataclass
class PeerResult:
    returncode: int
    stdout: str
    stderr: str
    workdir: Path


async def run_sipp(args: list[str], workdir: Path, timeout: float = 60.0) -> PeerResult:
    """Run sipp to completion in ``workdir`` (with pcap -> /usr/share/sip-tester)."""
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir / "pcap"
    if not link.exists():
        link.symlink_to(SIPP_PCAPS)
    proc = await asyncio.create_subprocess_exec(
        "sipp",
        *args,
        "-nostdin",
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    return PeerResult(
        proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"), workdir
    )


class SippUas:
    """sipp standing for a phone that answers and echoes RTP (an operator)."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        media_port: int,
        scenario: str = "uas",
        *,
        user: str = "operator",
        trace: bool = False,
    ) -> None:
        self.workdir = workdir
        self.port = port
        self.media_port = media_port
        self.scenario = scenario
        self.user = user
        self.trace = trace  # keep every SIP message sipp saw (messages())
        self.proc: asyncio.subprocess.Process | None = None

    def messages(self) -> str:
        """The SIP messages sipp received and sent (with trace=True)."""
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("*_messages.log"))
        )

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(self.media_port),
            "-rtp_echo",
            "-nostdin",
            "-trace_err",
        ]
        if self.trace:
            args.append("-trace_msg")
        if self.scenario.endswith(".xml"):
            args = ["-sf", self.scenario, *args]
        else:
            args = ["-sn", self.scenario, *args]
        self.proc = await asyncio.create_subprocess_exec(
            "sipp",
            *args,
            cwd=self.workdir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(0.3)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@dataclass
class Baresip:
    """A baresip user agent driven over stdin; records what it hears."""

    workdir: Path
    sip_port: int
    play: Path | None = None  # WAV played as this side's voice
    auto_answer: bool = False
    user: str = "caller"
    proc: asyncio.subprocess.Process | None = None
    output: list[str] = field(default_factory=list)

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "rec").mkdir(exist_ok=True)
        source = f"aufile,{self.play}" if self.play else "aufile,/dev/null"
        config = f"""
poll_method epoll
sip_listen 127.0.0.1:{self.sip_port}
net_interface 127.0.0.1
audio_player aubridge,nil
audio_source {source}
audio_alert aubridge,nil
audio_srate 8000
audio_channels 1
rtp_ports 30000-39999
module_path /usr/lib/baresip/modules
module stdio.so
module g711.so
module aufile.so
module aubridge.so
module sndfile.so
module menu.so
module account.so
snd_path {self.workdir / "rec"}
"""
        (self.workdir / "config").write_text(config)
        answer = ";answermode=auto" if self.auto_answer else ""
        (self.workdir / "accounts").write_text(
            f"<sip:{self.user}@127.0.0.1:{self.sip_port}>;regint=0;audio_codecs=PCMU,PCMA{answer}\n"
        )
        (self.workdir / "contacts").write_text("")

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.sip_port}"

    async def start(self) -> None:
        if shutil.which("baresip") is None:
            raise RuntimeError("baresip is not installed (apt-get install baresip-core)")
        # a port picked free may be taken before baresip binds it (by another
        # peer of the same test, or another test run): then baresip exits at
        # once, and it is started again on another port
        for _attempt in range(3):
            self.write_config()
            self.output = []
            self.proc = await asyncio.create_subprocess_exec(
                "baresip",
                "-f",
                str(self.workdir),
                cwd=self.workdir,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "HOME": str(self.workdir)},
            )
            self._reader = asyncio.ensure_future(self._read())
            await asyncio.sleep(1.0)
            if self.proc.returncode is None:
                return
            await self._reader
            self.sip_port = free_udp_port()
        raise RuntimeError("baresip exited at start:\n" + "\n".join(self.output[-20:]))

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.output.append(line.decode(errors="replace").rstrip())

    async def send(self, text: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        await self.proc.stdin.drain()

    async def dial(self, uri: str) -> None:
        await self.send(f"/dial {uri}\n")

    async def keys(self, digits: str, gap: float = 0.6) -> None:
        for digit in digits:
            await self.send(digit)
            await asyncio.sleep(gap)

    async def hangup(self) -> None:
        await self.send("/hangup\n")

    async def quit(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            await self.send("/quit\n")
            await asyncio.wait_for(self.proc.wait(), 5)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.proc.kill()
            await self.proc.wait()

    def recordings(self, kind: str = "dec") -> list[Path]:
        """WAVs sndfile wrote: ``dec`` is what this side heard."""
        return sorted((self.workdir / "rec").glob(f"*-{kind}.wav"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.output)
