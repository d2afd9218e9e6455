"""Dial plans published safely: validated, written atomically, reloaded, kept.

The plan file named in config.toml stays what ``ivr serve`` runs (an admin may
still edit it by hand and send SIGHUP); every plan published through the
store is also kept in the ``dialplan_versions`` table, for history and
rollback.  A publish is: validate the source with everything the server
checks (nothing is written if it fails) -> write the file atomically (a
temporary file in the same folder, then a rename) -> reload the running
server -> if the server could not load it, put the previous file back, reload
again and raise PublishError -> record the version.  Calls in progress keep
the plan object they started with; the next call gets the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.dialplan.model import DialPlan
from ivr.store import Database

FIRST_AUTHOR = "file"  # who wrote a plan the store found on disk rather than published
HAND_EDITED_NOTE = "the file as found on disk"


class PublishError(Exception):
    """The plan passed validation but the server could not load it.

    ``restored`` says whether the previous plan file was put back and loaded
    again (it was unless the folder became unwritable in between)."""

    def __init__(self, reason: str, *, restored: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.restored = restored


class PlanLoadError(Exception):
    """What ``reload`` may raise instead of returning False: why it failed."""


class PlanNotFoundError(LookupError):
    """No published version with that id."""


@dataclass(frozen=True)
class PlanVersion:
    """One published plan (a row of ``dialplan_versions``), without its source."""

    id: int
    version: str  # first 12 hex digits of the source's sha256, as DialPlan.version
    author: str
    note: str
    published_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "author": self.author,
            "note": self.note,
            "published_at": self.published_at,
        }


@dataclass(frozen=True)
class StoredPlan:
    """A published version with the TOML as it was published."""

    entry: PlanVersion
    source: str


@dataclass(frozen=True)
class PublishedPlan:
    """The plan file as it is now (what the server runs after a reload)."""

    source: str
    version: str
    id: int | None  # the newest history row with this version, if any

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "source": self.source}


def version_of(data: bytes) -> str:
    """The version a dial plan's bytes get (as ivr.dialplan.load computes it)."""
    return hashlib.sha256(data).hexdigest()[:12]


class PlanStore:
    """Publishes, lists and rolls back the dial plan of one running hotline."""

    def __init__(
        self,
        db: Database,
        plan_file: Path,
        validate: Callable[[str], DialPlan],
        reload: Callable[[], Awaitable[bool]],
        clock: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
    ) -> None:
        """``validate`` parses a TOML source with every check the server makes and
        raises DialPlanError; ``reload`` makes the server load the plan file again
        and returns False, or raises PlanLoadError with the reason, if it could not."""
        self.db = db
        self.plan_file = plan_file
        self._validate = validate
        self._reload = reload
        self._clock = clock
        self._log = log or logging.getLogger("ivr.plans")
        self._lock = asyncio.Lock()  # one publish at a time
        self._seed_lock = asyncio.Lock()
        self._seeded = False
        self._followed = 0  # the newest history row this node runs or gave up on

    # -- other nodes ---------------------------------------------------------
    async def follow(self) -> PlanVersion | None:
        """A cluster: the newest plan published on any node becomes this node's
        too (validated, written, reloaded; the next calls get it). The version
        taken, or None when there is nothing new or it cannot be loaded here
        (logged; this node keeps its plan and does not try that version again)."""
        row = await self.db.fetch_one(
            "SELECT id, version, author, note, published_at, source FROM dialplan_versions "
            "ORDER BY id DESC LIMIT 1"
        )
        if row is None or int(row["id"]) <= self._followed:
            return None
        async with self._lock:
            entry = _entry(row)
            self._followed = max(self._followed, entry.id)
            data = await self._read_file()
            if data is not None and version_of(data) == entry.version:
                return None  # running it already (published here, or the same file)
            source = str(row["source"])
            try:
                await asyncio.to_thread(self._validate, source)
            except Exception as exc:
                self._log.error(
                    "dial plan %s published by %s cannot run on this node: %s",
                    entry.version,
                    entry.author,
                    exc,
                )
                return None
            await asyncio.to_thread(_write_atomically, self.plan_file, source.encode("utf-8"))
            try:
                loaded = await self._reload()
            except Exception:
                loaded = False
            if not loaded:
                restored = await self._restore(data)
                self._log.error(
                    "dial plan %s published by %s did not load on this node; %s",
                    entry.version,
                    entry.author,
                    "the previous plan runs again" if restored else "check the plan file",
                )
                return None
            self._log.info(
                "dial plan %s published by %s on another node: running it for the next calls",
                entry.version,
                entry.author,
            )
            return entry

    # -- reading -----------------------------------------------------------
    async def current(self) -> PublishedPlan:
        await self._seed()
        data = await asyncio.to_thread(self.plan_file.read_bytes)
        version = version_of(data)
        row = await self.db.fetch_one(
            "SELECT id FROM dialplan_versions WHERE version = ? ORDER BY id DESC LIMIT 1",
            (version,),
        )
        return PublishedPlan(
            source=data.decode("utf-8", errors="replace"),
            version=version,
            id=int(row["id"]) if row is not None else None,
        )

    async def history(self) -> list[PlanVersion]:
        """Every published version, newest first."""
        await self._seed()
        rows = await self.db.fetch_all(
            "SELECT id, version, author, note, published_at FROM dialplan_versions ORDER BY id DESC"
        )
        return [_entry(row) for row in rows]

    async def get(self, version_id: int) -> StoredPlan | None:
        row = await self.db.fetch_one(
            "SELECT id, version, author, note, published_at, source FROM dialplan_versions "
            "WHERE id = ?",
            (version_id,),
        )
        if row is None:
            return None
        return StoredPlan(_entry(row), str(row["source"]))

    def validate(self, source: str) -> DialPlan:
        """The plan ``source`` would become; DialPlanError lists every problem."""
        return self._validate(source)

    async def diff(self, source: str) -> str:
        """A unified diff from the published plan file to ``source``."""
        published = (await self.current()).source
        return "".join(
            difflib.unified_diff(_diff_lines(published), _diff_lines(source), "published", "draft")
        )

    # -- publishing --------------------------------------------------------
    async def publish(self, source: str, *, author: str, note: str = "") -> PlanVersion:
        """Make ``source`` the running plan. DialPlanError: nothing was written and
        the running plan is unchanged; PublishError: the server could not load it
        and runs the previous plan again."""
        async with self._lock:
            return await self._publish(source, author=author, note=note)

    async def rollback(self, version_id: int, *, author: str) -> PlanVersion:
        """Publish the source of history row ``version_id`` again."""
        async with self._lock:
            stored = await self.get(version_id)
            if stored is None:
                raise PlanNotFoundError(f"no published dial plan #{version_id}")
            return await self._publish(
                stored.source, author=author, note=f"rollback to #{version_id}"
            )

    async def _publish(self, source: str, *, author: str, note: str) -> PlanVersion:
        plan = await asyncio.to_thread(self._validate, source)  # DialPlanError propagates
        await self._seed()
        previous = await self._read_file()
        if previous is not None:
            await self._record_if_hand_edited(previous)
        await asyncio.to_thread(_write_atomically, self.plan_file, source.encode("utf-8"))
        try:
            loaded = await self._reload()
            reason = "" if loaded else "the server could not load it (see the server log)"
        except Exception as exc:
            loaded, reason = False, str(exc) or type(exc).__name__
        if not loaded:
            restored = await self._restore(previous)
            again = (
                "the previous plan is running again"
                if restored
                else "the previous plan could NOT be put back: check the plan file and the log"
            )
            raise PublishError(
                f"plan {plan.version} not loaded: {reason}; {again}", restored=restored
            )
        entry = await self._insert(plan.version, source, author, note)
        self._followed = max(self._followed, entry.id)
        return entry

    async def _restore(self, previous: bytes | None) -> bool:
        try:
            if previous is None:
                await asyncio.to_thread(self.plan_file.unlink, True)
                return False
            await asyncio.to_thread(_write_atomically, self.plan_file, previous)
            return await self._reload()
        except Exception:
            return False

    async def _read_file(self) -> bytes | None:
        try:
            return await asyncio.to_thread(self.plan_file.read_bytes)
        except FileNotFoundError:
            return None

    async def _seed(self) -> None:
        """On first use, record the plan file as it is, so there is something to
        roll back to."""
        async with self._seed_lock:
            if self._seeded:
                return
            row = await self.db.fetch_one("SELECT count(*) AS n FROM dialplan_versions")
            if row is not None and int(row["n"]) == 0:
                data = await self._read_file()
                if data is not None:
                    await self._insert(
                        version_of(data), _text(data), FIRST_AUTHOR, HAND_EDITED_NOTE
                    )
            self._seeded = True

    async def _record_if_hand_edited(self, data: bytes) -> None:
        """The file differs from the last published version (edited by hand):
        keep it too, so a publish never loses a plan that could be rolled back to."""
        row = await self.db.fetch_one(
            "SELECT version FROM dialplan_versions ORDER BY id DESC LIMIT 1"
        )
        if row is None or str(row["version"]) != version_of(data):
            await self._insert(version_of(data), _text(data), FIRST_AUTHOR, HAND_EDITED_NOTE)

    async def _insert(self, version: str, source: str, author: str, note: str) -> PlanVersion:
        now = self._clock()
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(
                "INSERT INTO dialplan_versions (version, source, author, note, published_at) "
                "VALUES (?, ?, ?, ?, ?)"
                " RETURNING id",
                (version, source, author, note, now),
            )
        assert row is not None
        return PlanVersion(int(row["id"]), version, author, note, now)


def _entry(row: Any) -> PlanVersion:
    return PlanVersion(
        id=int(row["id"]),
        version=str(row["version"]),
        author=str(row["author"]),
        note=str(row["note"]),
        published_at=float(row["published_at"]),
    )


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _diff_lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one,
    never half of one: a temporary file in the same folder, synced, renamed."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(OSError):
            os.chmod(temp, path.stat().st_mode & 0o7777)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@contextlib.contextmanager
def logged_errors(log: logging.Logger) -> Iterator[list[str]]:
    """The ERROR lines ``log`` itself (not its children) writes inside the block:
    why a reload failed, for the admin who published."""
    lines: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name == log.name and record.levelno >= logging.ERROR:
                lines.append(record.getMessage())

    handler = Catch(logging.ERROR)
    log.addHandler(handler)
    try:
        yield lines
    finally:
        log.removeHandler(handler)
