"""A real PostgreSQL server (Debian's package) for tests and benches: a new
cluster in a temporary folder, run as an unprivileged user on 127.0.0.1 and a
free port, stopped and removed at the end.  Never a mock.

    server = PostgresServer.start()
    url = server.new_database("t1")   # postgresql://ivr@127.0.0.1:PORT/t1
    server.stop()

As root (CI, the developers' machines) the server runs as the ``postgres``
user the package creates (or ``nobody``): initdb refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER = "ivr"  # the database superuser the cluster is created with (trust auth, loopback only)


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or the server would not start."""


def server_binaries() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin holding initdb and pg_ctl."""
    def version(initdb: str) -> int:
        name = Path(initdb).parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    return Path(found[-1]).parent if found else None


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and no unprivileged user (postgres, nobody)")


@dataclass
class PostgresServer:
    bin_dir: Path
    folder: Path
    port: int
    user: str | None  # the OS user the server runs as (None: this process's)

    @classmethod
    def start(cls, *, durable: bool = False, max_connections: int = 200) -> PostgresServer:
        """A new cluster, started. ``durable``: fsync on (benches of the
        store's cost); off for tests (each test's data is thrown away)."""
        bin_dir = server_binaries()
        if bin_dir is None:
            raise PostgresUnavailable(
                "PostgreSQL's server is not installed (/usr/lib/postgresql/*/bin/initdb); "
                "scripts/setup.sh installs the Debian package postgresql"
            )
        user = _run_as()
        folder = Path(tempfile.mkdtemp(prefix="ivr-postgres-"))
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        server = cls(bin_dir, folder, _free_tcp_port(), user)
        try:
            server._initdb()
            server._pg_ctl_start(durable=durable, max_connections=max_connections)
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` (dropped first if there); its URL."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {done.stderr.strip()}")
        return done.stdout

    def is_running(self) -> bool:
        done = self._as_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "status"])
        return done.returncode == 0

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server, keep its data (``start_again`` brings it back)."""
        if self.data.exists():
            self._as_user(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]
            )

    def start_again(self) -> None:
        self._pg_ctl_start(durable=False, max_connections=200)

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        try:
            self.stop_server("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _initdb(self) -> None:
        done = self._as_user(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-N",
            ]
        )
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {done.stdout}{done.stderr}")

    def _pg_ctl_start(self, *, durable: bool, max_connections: int) -> None:
        options = [
            "-h 127.0.0.1",
            f"-p {self.port}",
            f"-k {self.folder}",
            f"-c max_connections={max_connections}",
        ]
        if not durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        done = self._as_user(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(options),
                "start",
            ]
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {done.stdout}{done.stderr}\n{log}")
        deadline = time.monotonic() + 30
        while True:
            try:
                self.psql("SELECT 1")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _as_user(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.folder)
