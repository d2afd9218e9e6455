"""This process as one node of the hotline: its pid file, and draining it.

`ivr serve` writes its pid into ``[node] pid_file`` and holds an exclusive lock
(flock) on that file while it runs. `ivr drain` reads the pid only while the lock
is held, so a file left by a node that was killed never makes it signal some other
process that got the same pid, and sends the node SIGTERM, as systemd's stop does.

`ivr drain` on a node already draining (it answers OPTIONS 503) only waits;
`ivr drain --now` ends the node's calls at once (a second SIGTERM).

Draining (Hotline.stop): the SIP endpoint answers OPTIONS and new INVITEs with 503,
so Kamailio's dispatcher takes the node out and sends new calls to the others;
calls in progress go on, callbacks already ringing too, no new callback is claimed;
the node exits when its last call is over, or ends the calls left after
``[node] drain_timeout`` seconds, or at once on a second SIGTERM / Ctrl-C.
Why a signal and not an HTTP endpoint: docs/decisions.md, "Draining a node".
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from ivr.startup import StartupError


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None


class PidFile:
    """Held by a running `ivr serve`: the pid inside, an exclusive lock on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StartupError(
                f"cannot write the pid file {self.path}: {exc.strerror or exc}; "
                "change [node] pid_file"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_pid(fd)
            os.close(fd)
            who = f"pid {other}" if other else "another process"
            raise StartupError(
                f"another `ivr serve` ({who}) is running with the pid file {self.path}; "
                "stop or drain it first (`ivr drain`), or give this node its own "
                "[node] pid_file"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)  # the lock goes with it
        self._fd = None

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def running_pid(path: Path) -> int | None:
    """The pid of the `ivr serve` holding ``path``; None when none holds it."""
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                if pid is not None:
                    return pid
                # locked but not yet written: the node is just starting
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None  # a stale file: its node is gone
        finally:
            os.close(fd)
        time.sleep(0.05)
    return None


async def wait_for_calls(
    tasks: Iterable[asyncio.Future[Any]],
    *,
    timeout: float,
    cut: asyncio.Event,
    left: Callable[[], int],
    log: logging.Logger,
    report_every: float = 10.0,
) -> None:
    """Wait until every task is done, ``timeout`` s have passed, or ``cut`` is set;
    every ``report_every`` s log how many calls are ``left``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {task for task in tasks if not task.done()}
    cutting = asyncio.ensure_future(cut.wait())
    try:
        while pending and not cut.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("ivr: drain timeout: ending %d call(s) still in progress", left())
                return
            done, _ = await asyncio.wait(
                {*pending, cutting},
                timeout=min(remaining, report_every),
                return_when=asyncio.FIRST_COMPLETED,
            )
            pending -= done
            if pending and not done:
                log.info("ivr: draining: %d call(s) in progress, %.0f s left", left(), remaining)
        if cut.is_set() and pending:
            log.warning("ivr: drain cut short: ending %d call(s) now", left())
    finally:
        cutting.cancel()


def options_status(addr: tuple[str, int], timeout: float = 1.0) -> int | None:
    """The status a SIP OPTIONS to ``addr`` gets (200 taking calls, 503 draining),
    None when nothing answers."""
    host = addr[0]
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_unspecified:
            host = "127.0.0.1" if ipaddress.ip_address(host).version == 4 else "::1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    branch = "z9hG4bK" + secrets.token_hex(8)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.connect((host, addr[1]))
            own_host, own_port = sock.getsockname()[:2]
            sock.send(
                (
                    f"OPTIONS sip:{host}:{addr[1]} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {own_host}:{own_port};branch={branch};rport\r\n"
                    f"From: <sip:drain@{own_host}>;tag={secrets.token_hex(4)}\r\n"
                    f"To: <sip:{host}:{addr[1]}>\r\nCall-ID: {secrets.token_hex(8)}\r\n"
                    "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode()
            )
            first = sock.recv(65535).split(b"\r\n", 1)[0].split()
    except OSError:
        return None
    return int(first[1]) if len(first) > 1 and first[1].isdigit() else None


def drain(
    pid_file: Path,
    *,
    sip: tuple[str, int],
    wait: float | None,
    now: bool = False,
    say: Callable[[str], None],
) -> int:
    """Send the node holding ``pid_file`` SIGTERM, unless it is draining already
    (its SIP address ``sip`` answers OPTIONS 503); ``now``: end its calls at once
    (a second SIGTERM). With ``wait``, wait up to that many seconds for it to exit.
    The exit status for `ivr drain`."""
    pid = running_pid(pid_file)
    if pid is None:
        say(f"ivr drain: no `ivr serve` holds {pid_file} ([node] pid_file): nothing to drain")
        return 1
    draining = options_status(sip) == 503
    signals = 0 if draining else 1
    if now:
        signals += 1
    try:
        for n in range(signals):
            if n:
                time.sleep(0.3)  # the first one handled: the second cuts the drain short
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        say(f"ivr drain: pid {pid} from {pid_file} has just exited")
        return 0
    except PermissionError:
        say(f"ivr drain: not allowed to signal pid {pid}: run as the user `ivr serve` runs as")
        return 2
    if now:
        say(f"ivr drain: node pid {pid} is ending its calls now and exiting")
    elif draining:
        say(f"ivr drain: node pid {pid} is draining already (OPTIONS answered 503)")
    else:
        say(
            f"ivr drain: node pid {pid} is draining: OPTIONS and new calls are answered 503, "
            "its calls in progress go on"
        )
    if wait is None:
        return 0
    deadline = time.monotonic() + wait
    next_note = time.monotonic() + 30.0
    while running_pid(pid_file) == pid:
        moment = time.monotonic()
        if moment >= deadline:
            say(f"ivr drain: pid {pid} still running after {wait:.0f} s")
            return 3
        if moment >= next_note:
            say(f"ivr drain: pid {pid} still has calls, waiting")
            next_note = moment + 30.0
        time.sleep(0.2)
    say(f"ivr drain: pid {pid} has " + ("exited" if now else "finished its calls and exited"))
    return 0
