"""Helpers of scripts/cluster.sh (run with the project's venv):

    cluster_parts.py node-config BASE_CONFIG OUT_DIR SIP_PORT RTP_MIN RTP_MAX WEB_PORT [STORAGE_URL]
        write OUT_DIR/config.toml: BASE_CONFIG's settings, its paths made absolute, and
        this node's own ports, [node] id (OUT_DIR's name), SQLite file (or STORAGE_URL),
        recordings and pid file
    cluster_parts.py probe PORT
        print what 127.0.0.1:PORT answers to a SIP OPTIONS (200, 503...), or "none"
    cluster_parts.py postgres-start DIR PORT
        the trial's PostgreSQL (Debian's server binaries): a cluster in DIR/data made
        once (initdb; as the user postgres, or nobody, when run as root: initdb refuses
        root), started on 127.0.0.1:PORT, with a database "ivr"; prints its URL
    cluster_parts.py postgres-stop DIR
        stop it (its data stays for the next start)
    cluster_parts.py postgres-status DIR
        print "running PORT" or "stopped"
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import secrets
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from ivr.config import load_settings

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(name: str) -> str:
    return name if BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _emit(table: dict[str, Any], path: tuple[str, ...] = ()) -> list[str]:
    plain = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    lines: list[str] = []
    if path and (plain or not tables):
        lines += ["", "[" + ".".join(_key(part) for part in path) + "]"]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in plain]
    for name, sub in tables:
        lines += _emit(sub, (*path, name))
    return lines


def node_config(
    base: Path,
    out: Path,
    sip_port: int,
    rtp_min: int,
    rtp_max: int,
    web_port: int,
    storage_url: str = "",
) -> Path:
    settings = load_settings(base)  # the base must be valid; its paths come back absolute
    data = tomllib.loads(base.read_text(encoding="utf-8"))

    def put(section: str, key: str, value: object) -> None:
        data.setdefault(section, {})[key] = value

    put("sip", "host", "127.0.0.1")
    put("sip", "public_host", "")
    put("sip", "rtp_host", "")
    put("sip", "port", sip_port)
    put("sip", "rtp_port_min", rtp_min)
    put("sip", "rtp_port_max", rtp_max)
    put("web", "host", "127.0.0.1")
    put("web", "port", web_port)
    put("dialplan", "file", str(settings.dialplan.file))
    put("prompts", "voices_dir", str(settings.prompts.voices_dir))
    put("prompts", "cache_dir", str(settings.prompts.cache_dir))  # shared: rendered once
    put("speech", "models_dir", str(settings.speech.models_dir))
    put("tickets", "gazetteer", str(settings.tickets.gazetteer))
    if settings.tickets.taxonomy is not None:
        put("tickets", "taxonomy", str(settings.tickets.taxonomy))
    storage = data.setdefault("storage", {})
    storage.pop("url", None)
    storage.pop("database", None)
    if storage_url:
        storage["url"] = storage_url  # the one store every node shares
    else:
        storage["database"] = str(out / "ivr.sqlite3")  # a node alone: its own file
    storage["recordings_dir"] = str(out / "recordings")
    put("node", "pid_file", str(out / "ivr.pid"))
    put("node", "id", out.name)  # node-K: its name in the shared store (heartbeat, calls)
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(
        [
            f"# Written by scripts/cluster.sh from {base.resolve()}: edit that file and",
            "# start the cluster again; only ports, paths and the store are this node's own.",
            *_emit(data),
        ]
    )
    path = out / "config.toml"
    path.write_text(text.lstrip("\n") + "\n", encoding="utf-8")
    load_settings(path)  # what we wrote must load
    return path


def probe(port: int) -> str:
    branch = "z9hG4bK" + secrets.token_hex(8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(1.0)
        own = s.getsockname()[1]
        s.sendto(
            (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{own};branch={branch};rport\r\n"
                f"From: <sip:cluster@127.0.0.1:{own}>;tag={secrets.token_hex(4)}\r\n"
                f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: {secrets.token_hex(8)}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", port),
        )
        try:
            data = s.recv(65535)
        except OSError:
            return "none"
    parts = data.split(b"\r\n", 1)[0].split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 else "none"


PG_USER = "ivr"  # the database superuser of the trial's cluster (trust, loopback only)
PG_DATABASE = "ivr"


class PostgresError(RuntimeError):
    pass


def _pg_binaries() -> Path:
    """The newest /usr/lib/postgresql/N/bin with initdb and pg_ctl."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if not found:
        raise PostgresError(
            "PostgreSQL's server is not installed (apt-get install postgresql), "
            "or give CLUSTER_STORAGE_URL=postgresql://... of a running one"
        )
    return Path(found[-1]).parent


def _pg_os_user() -> str | None:
    """Whom the server runs as: this user, or postgres (else nobody) for root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresError("running as root and there is no user postgres or nobody to run it as")


def _pg(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    user = _pg_os_user()
    command = [str(_pg_binaries() / argv[0]), *argv[1:]]
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=folder)


def _psql(folder: Path, port: int, sql: str) -> str:
    done = _pg(
        folder, "psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(port),
        "-U", PG_USER, "-d", "postgres", "-c", sql,
    )  # fmt: skip
    if done.returncode != 0:
        raise PostgresError(f"psql {sql!r}: {done.stderr.strip()}")
    return done.stdout.strip()


def postgres_url(port: int) -> str:
    return f"postgresql://{PG_USER}@127.0.0.1:{port}/{PG_DATABASE}"


def postgres_running(folder: Path) -> bool:
    data = folder / "data"
    return data.exists() and _pg(folder, "pg_ctl", "-D", str(data), "status").returncode == 0


def postgres_start(folder: Path, port: int) -> str:
    """Make (once) and start the trial's PostgreSQL in ``folder``; its URL."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    user = _pg_os_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    data = folder / "data"
    if not (data / "PG_VERSION").exists():
        done = _pg(
            folder, "initdb", "-D", str(data), "-U", PG_USER, "-A", "trust", "-E", "UTF8",
            "--locale=C.UTF-8",
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresError(f"initdb failed: {done.stdout}{done.stderr}")
    if postgres_running(folder):
        port = int((folder / "port").read_text())
    else:
        options = f"-h 127.0.0.1 -p {port} -k {folder} -c max_connections=200"
        done = _pg(
            folder, "pg_ctl", "-D", str(data), "-l", str(folder / "server.log"), "-w",
            "-t", "60", "-o", options, "start",
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresError(f"pg_ctl start failed: {done.stdout}{done.stderr}")
        (folder / "port").write_text(f"{port}\n")
    deadline = time.monotonic() + 30
    while True:
        try:
            exists = _psql(
                folder, port, f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'"
            )
            break
        except PostgresError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    if not exists:
        _psql(folder, port, f'CREATE DATABASE "{PG_DATABASE}"')
    return postgres_url(port)


def postgres_stop(folder: Path) -> bool:
    """Stop it (fast: its clients are gone by now); whether it was running."""
    folder = folder.resolve()
    if not postgres_running(folder):
        return False
    done = _pg(folder, "pg_ctl", "-D", str(folder / "data"), "-m", "fast", "-w", "stop")
    if done.returncode != 0:
        raise PostgresError(f"pg_ctl stop failed: {done.stdout}{done.stderr}")
    return True


def main(argv: list[str]) -> int:
    if len(argv) >= 7 and argv[0] == "node-config":
        base, out = Path(argv[1]), Path(argv[2]).resolve()
        numbers = [int(x) for x in argv[3:7]]
        url = argv[7] if len(argv) > 7 else ""
        print(node_config(base, out, *numbers, storage_url=url))
        return 0
    if len(argv) == 2 and argv[0] == "probe":
        print(probe(int(argv[1])))
        return 0
    try:
        if len(argv) == 3 and argv[0] == "postgres-start":
            print(postgres_start(Path(argv[1]), int(argv[2])))
            return 0
        if len(argv) == 2 and argv[0] == "postgres-stop":
            print("stopped" if postgres_stop(Path(argv[1])) else "not running")
            return 0
        if len(argv) == 2 and argv[0] == "postgres-status":
            folder = Path(argv[1]).resolve()
            running = postgres_running(folder)
            print(f"running {(folder / 'port').read_text().strip()}" if running else "stopped")
            return 0
    except PostgresError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
