"""The duty list (权责清单) of a cluster: published through the store and
followed by every node, as dial plans are (ivr/plan_store.py).

A publish (``ivr dispatch publish FILE``, the admins' page /admin/duty-list)
checks the text first, with every check a node makes at start (categories of
the taxonomy, districts of the gazetteer, departments, hours: file:line), and
stores nothing if it fails; otherwise the text becomes the newest row of
``duty_list_versions`` (migration 21: version, text, who, when, note).  Every
node looks for a newer row every few seconds (``RunningDutyList.follow``),
checks it against its own taxonomy and gazetteer and swaps its running list in
one assignment (a dispatch in progress keeps the list object it read); a
version a node cannot check (a newer format, a district its gazetteer lacks)
is refused there, logged with the reason and shown on the admin page, and the
node keeps the list it runs.  A rollback publishes an earlier row's text again
as a new row, so the history only grows and every node follows it the same way.

With nothing published, each node runs its own file ([dispatch] duty_list),
read at start and on SIGHUP as before (one node: nothing changes).  The first
publish keeps the list the publishing side ran from its file as row 1 (author
``file``), so a rollback can go back to it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.prefill import PrefillDataError
from ivr.store import Database, Row
from ivr.tickets.duty_list import DutyList, DutyListError, read_duty_list

# what a check of a duty list's text raises: its own mistakes (file:line), or the
# taxonomy / gazetteer it is checked against cannot be read
CHECK_ERRORS = (DutyListError, PrefillDataError)
SEED_AUTHOR = "file"
SEED_NOTE = "the list run from the duty list file before the first publish"
MAX_TEXT_BYTES = 256 * 1024
HISTORY_LIMIT = 200

# (text, the name its problems are said with) -> the list; raises CHECK_ERRORS
Check = Callable[[str, str], DutyList]


class DutyListNotFoundError(LookupError):
    """No published duty list with that id."""


def version_of(text: str) -> str:
    """The version a duty list's text gets (as DutyList.version)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def stored_name(version_id: int) -> str:
    """How a published version is named in its problems: ``duty list #3:12: ...``."""
    return f"duty list #{version_id}"


def check_size(text: str, name: str) -> None:
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_TEXT_BYTES:
        raise DutyListError(
            f"{name}: the duty list is {size // 1024} KiB; at most {MAX_TEXT_BYTES // 1024} KiB"
        )


@dataclass(frozen=True)
class DutyListVersion:
    """One published duty list (a row of ``duty_list_versions``) without its text."""

    id: int
    version: str  # the first 12 hex digits of the text's sha256, as DutyList.version
    author: str
    note: str
    published_at: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class StoredDutyList:
    entry: DutyListVersion
    text: str


_COLUMNS = "id, version, author, note, published_at"


def _entry(row: Row) -> DutyListVersion:
    return DutyListVersion(
        id=int(row["id"]),
        version=str(row["version"]),
        author=str(row["author"]),
        note=str(row["note"]),
        published_at=float(row["published_at"]),
    )


class DutyListStore:
    """The published duty lists, over ``duty_list_versions``; what a node runs
    is ``RunningDutyList``'s."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    async def newest_entry(self) -> DutyListVersion | None:
        row = await self.db.fetch_one(
            f"SELECT {_COLUMNS} FROM duty_list_versions ORDER BY id DESC LIMIT 1"
        )
        return None if row is None else _entry(row)

    async def newest(self) -> StoredDutyList | None:
        row = await self.db.fetch_one(
            f"SELECT {_COLUMNS}, source FROM duty_list_versions ORDER BY id DESC LIMIT 1"
        )
        return None if row is None else StoredDutyList(_entry(row), str(row["source"]))

    async def get(self, version_id: int) -> StoredDutyList | None:
        row = await self.db.fetch_one(
            f"SELECT {_COLUMNS}, source FROM duty_list_versions WHERE id = ?", (version_id,)
        )
        return None if row is None else StoredDutyList(_entry(row), str(row["source"]))

    async def history(self, limit: int = HISTORY_LIMIT) -> list[DutyListVersion]:
        """The published versions, newest first."""
        rows = await self.db.fetch_all(
            f"SELECT {_COLUMNS} FROM duty_list_versions ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [_entry(r) for r in rows]

    async def publish(
        self, text: str, *, author: str, note: str = "", seed: str | None = None
    ) -> DutyListVersion:
        """Store ``text`` (checked by the caller) as the newest version. ``seed``:
        the text run from the file until now, kept first when nothing was
        published yet, so a rollback can go back to it."""
        now = self._clock()
        async with self.db.transaction() as tx:
            if seed is not None and version_of(seed) != version_of(text):
                row = await tx.fetch_one("SELECT count(*) AS n FROM duty_list_versions")
                if row is not None and int(row["n"]) == 0:
                    await tx.execute(
                        "INSERT INTO duty_list_versions "
                        "(version, source, author, note, published_at) VALUES (?, ?, ?, ?, ?)",
                        (version_of(seed), seed, SEED_AUTHOR, SEED_NOTE, now),
                    )
            row = await tx.fetch_one(
                "INSERT INTO duty_list_versions (version, source, author, note, published_at) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (version_of(text), text, author, note, now),
            )
        assert row is not None
        return DutyListVersion(int(row["id"]), version_of(text), author, note, now)


async def check_text(check: Check, text: str, name: str) -> DutyList:
    """``text`` checked (in a thread: it reads the taxonomy and gazetteer)."""
    check_size(text, name)
    return await asyncio.to_thread(check, text, name)


class RunningDutyList:
    """The duty list one node dispatches by: the newest published version this
    node can check, else its file; swapped whole, never edited in place."""

    def __init__(
        self,
        store: DutyListStore,
        *,
        check: Check,
        seed_file: Callable[[], Path | None],
        log: logging.Logger | None = None,
    ) -> None:
        """``check`` checks a text against this node's taxonomy and gazetteer;
        ``seed_file`` is [dispatch] duty_list as configured now (None: none)."""
        self.store = store
        self._check = check
        self._seed_file = seed_file
        self.log = log or logging.getLogger("ivr.dispatch")
        self.duty: DutyList | None = None
        self.entry: DutyListVersion | None = None  # the published version running; None: file
        self.text: str | None = None  # the running list's text
        self.error: str | None = None  # why the last load, reload or follow failed
        self.refused: tuple[DutyListVersion, str] | None = None  # a version not run here, why
        self._followed = 0  # the newest row this node runs or refused
        self._lock = asyncio.Lock()

    @property
    def published(self) -> bool:
        return self.entry is not None

    async def check(self, text: str, name: str) -> DutyList:
        """``text`` checked as this node would (CHECK_ERRORS), nothing stored."""
        return await check_text(self._check, text, name)

    # -- starting and following --------------------------------------------------
    async def start(self) -> None:
        """The newest published version this node can check; with none, the
        seed file (CHECK_ERRORS if that has a mistake: the start is refused)."""
        async with self._lock:
            for entry in await self.store.history():
                stored = await self.store.get(entry.id)
                if stored is None:
                    continue
                self._followed = max(self._followed, entry.id)
                try:
                    duty = await check_text(self._check, stored.text, stored_name(entry.id))
                except CHECK_ERRORS as exc:
                    self._refuse(entry, exc)
                    continue
                self._run(stored, duty)
                self.log.info(
                    "duty list #%d version %s (published by %s) runs on this node%s",
                    entry.id,
                    entry.version,
                    entry.author,
                    f"; the file {self._seed_file()} is only the seed" if self._seed_file() else "",
                )
                return
            await self._load_file()

    async def follow(self) -> DutyListVersion | None:
        """A version published on any node since: checked here and run (the
        next dispatch uses it). The version taken, or None when there is none
        or this node cannot check it (logged; the running list kept, that
        version not tried again)."""
        newest = await self.store.newest_entry()
        if newest is None or newest.id <= self._followed:
            return None
        async with self._lock:
            stored = await self.store.newest()
            if stored is None or stored.entry.id <= self._followed:
                return None
            entry = stored.entry
            self._followed = entry.id
            try:
                duty = await check_text(self._check, stored.text, stored_name(entry.id))
            except CHECK_ERRORS as exc:
                self._refuse(entry, exc)
                return None
            was = self.duty.version if self.duty is not None else "-"
            self._run(stored, duty)
            self.log.info(
                "duty list #%d version %s published by %s: running it (was %s)",
                entry.id,
                entry.version,
                entry.author,
                was,
            )
            return entry

    async def reload(self) -> str | None:
        """SIGHUP, the admins' 重新读取: a newer published version is taken now;
        with none published, the seed file is read again. None, or why it was
        refused (logged; the running list kept)."""
        refused = self.refused
        await self.follow()
        if self.refused is not None and self.refused is not refused:
            return self.error  # the newest published version does not check here
        if self.published:
            self.log.info(
                "duty list reload: the published version #%d runs (the file is only the seed "
                "before the first publish; publish a change with `ivr dispatch publish`)",
                self.entry.id if self.entry else 0,
            )
            return None
        async with self._lock:
            try:
                await self._load_file()
            except CHECK_ERRORS as exc:
                return str(exc)
            return None

    async def _load_file(self) -> None:
        path = self._seed_file()
        if path is None:
            self.duty, self.text, self.entry, self.error = None, None, None, None
            return
        running = self.duty.version if self.duty is not None else "-"
        try:
            text = await asyncio.to_thread(read_duty_list, path)
            duty = await check_text(self._check, text, str(path))
        except CHECK_ERRORS as exc:
            self.error = str(exc)
            self.log.error("duty list %s refused, keeping version %s:\n%s", path, running, exc)
            raise
        self.duty, self.text, self.entry, self.error = duty, text, None, None
        self.log.info("duty list loaded: %s version %s (was %s)", path, duty.version, running)

    def _run(self, stored: StoredDutyList, duty: DutyList) -> None:
        # one assignment each: a request reads the old list or the new one
        self.duty = dataclasses.replace(duty, source=stored_name(stored.entry.id))
        self.entry, self.text, self.error, self.refused = stored.entry, stored.text, None, None

    def _refuse(self, entry: DutyListVersion, exc: Exception) -> None:
        running = self.duty.version if self.duty is not None else "none"
        why = str(exc)
        self.refused = (entry, why)
        self.error = (
            f"duty list #{entry.id} (version {entry.version}, published by {entry.author}) "
            f"cannot run on this node:\n{why}"
        )
        self.log.error("%s\nkeeping version %s", self.error, running)

    # -- publishing ------------------------------------------------------------------
    async def publish(
        self, text: str, name: str, *, author: str, note: str = ""
    ) -> DutyListVersion:
        """Check ``text`` (problems said as ``name:line``), store it and run it
        here at once (the other nodes follow). CHECK_ERRORS: nothing stored,
        the running list unchanged."""
        async with self._lock:
            duty = await check_text(self._check, text, name)
            seed = self.text if not self.published else None
            entry = await self.store.publish(text, author=author, note=note, seed=seed)
            self._followed = max(self._followed, entry.id)
            self._run(StoredDutyList(entry, text), duty)
            self.log.info(
                "duty list #%d version %s published by %s%s",
                entry.id,
                entry.version,
                author,
                f" ({note})" if note else "",
            )
            return entry

    async def rollback(self, version_id: int, *, author: str) -> DutyListVersion:
        """Publish the text of version ``version_id`` again (checked again: the
        taxonomy may have changed since)."""
        stored = await self.store.get(version_id)
        if stored is None:
            raise DutyListNotFoundError(f"no published duty list #{version_id}")
        return await self.publish(
            stored.text, stored_name(version_id), author=author, note=f"rollback to #{version_id}"
        )

    def to_json(self) -> dict[str, Any]:
        """What this node runs, for the admins' page."""
        duty = self.duty
        return {
            "version": duty.version if duty is not None else None,
            "name": duty.source if duty is not None else None,
            "from": None if duty is None else ("store" if self.published else "file"),
            "published": self.entry.to_json() if self.entry is not None else None,
            "departments": len(duty.departments) if duty is not None else 0,
            "duties": len(duty.duties) if duty is not None else 0,
            "text": self.text,
            "error": self.error,
            "refused": (
                {**self.refused[0].to_json(), "reason": self.refused[1]} if self.refused else None
            ),
        }
