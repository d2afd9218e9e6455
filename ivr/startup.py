"""What stops `ivr serve` from starting, said so a deployer can fix it.

A start-up failure must end the process at once with a non-zero status (a
supervisor such as systemd restarts it, the terminal is given back) and name
what failed, where, and the config key to change.  The sockets the IVR
listens on are tried first, before the seconds spent loading the speech
model, so a taken port is reported at once.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path


class StartupError(Exception):
    """The IVR cannot start; the message says what, where and which key to change."""


@dataclass(frozen=True)
class Listener:
    what: str  # "SIP (UDP)", "the web console (HTTP)"
    host: str
    port: int
    keys: str  # "[sip] host / port"
    kind: int  # socket.SOCK_DGRAM or socket.SOCK_STREAM


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use (another program, or another ivr, listens there)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address"
    return exc.strerror or str(exc)


def listen_failure(listener: Listener, exc: OSError, config: Path | None) -> StartupError:
    where = f" in {config}" if config is not None else ""
    return StartupError(
        f"cannot listen for {listener.what} on {listener.host}:{listener.port}: "
        f"{_reason(exc)}; change {listener.keys}{where}"
    )


def check_listeners(listeners: list[Listener], config: Path | None) -> None:
    """Bind each address for a moment; StartupError naming the first that fails.

    Port 0 (any free port, as tests ask) is always free and not checked.
    """
    for listener in listeners:
        if listener.port == 0:
            continue
        try:
            infos = socket.getaddrinfo(listener.host, listener.port, type=listener.kind)
        except OSError as exc:
            where = f" in {config}" if config is not None else ""
            raise StartupError(
                f"cannot listen for {listener.what}: the host {listener.host!r} does not "
                f"resolve ({exc}); change {listener.keys}{where}"
            ) from exc
        family, kind, proto, _, address = infos[0]
        probe = socket.socket(family, kind, proto)
        try:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
            if kind == socket.SOCK_STREAM:
                probe.listen(1)
        except OSError as exc:
            raise listen_failure(listener, exc, config) from exc
        finally:
            probe.close()
