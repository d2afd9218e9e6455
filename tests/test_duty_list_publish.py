"""The duty list (权责清单) published through the store and followed by every
node (issue 15 item 1): migration 21 on both back ends; publish, follow,
refuse and roll back with real stores (SQLite, PostgreSQL) and the nodes'
own checks; two hotlines sharing PostgreSQL where a list published on A is
what B's dispatch proposal uses; a bad upload refused with file:line and the
running list intact; `ivr dispatch publish | history | rollback | show` as
a subprocess."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ivr.prefill import load_gazetteer, load_taxonomy
from ivr.store import MIGRATIONS, open_store
from ivr.tickets.duty_list import DutyList, DutyListError, parse_duty_list
from ivr.tickets.duty_store import (
    SEED_AUTHOR,
    DutyListNotFoundError,
    DutyListStore,
    RunningDutyList,
    version_of,
)
from tests.conftest import ROOT

SAMPLE = (ROOT / "duty_list.toml").read_text(encoding="utf-8")
ROADS = 'department = "市交通运输局"'
WRONG = 'department = "市交警支队"'


def check(text: str, name: str) -> DutyList:
    return parse_duty_list(
        text,
        name,
        categories=load_taxonomy().names,
        districts=load_gazetteer(ROOT / "gazetteer.toml").districts,
    )


def roads_to(department: str, text: str = SAMPLE) -> str:
    """The sample with roads (道路交通) given to ``department`` (a line of its own)."""
    assert text.count(ROADS) == 1
    return text.replace(ROADS, f'department = "{department}"')


def line_of(text: str, line: str) -> int:
    return text.split("\n").index(line) + 1


async def test_migration_21_keeps_published_duty_lists(store_location: str | Path) -> None:
    async with await open_store(store_location) as db:
        assert await db.schema_version() >= 21
        assert MIGRATIONS[20].version == 21 and "duty list" in MIGRATIONS[20].description
        store = DutyListStore(db, clock=lambda: 1000.0)
        assert await store.newest() is None and await store.history() == []
        first = await store.publish(SAMPLE, author="alice", note="first")
        second = await store.publish(roads_to("市城管局"), author="bob")
        assert second.id > first.id
        newest = await store.newest()
        assert newest is not None and newest.entry == second
        assert newest.text == roads_to("市城管局")
        assert second.version == version_of(newest.text) == check(newest.text, "x").version
        assert [h.id for h in await store.history()] == [second.id, first.id]
        got = await store.get(first.id)
        assert got is not None and got.text == SAMPLE and got.entry.author == "alice"
        assert (got.entry.note, got.entry.published_at) == ("first", 1000.0)
        assert await store.get(first.id + 100) is None


def running(store: DutyListStore, seed: Path | None, name: str) -> RunningDutyList:
    return RunningDutyList(
        store, check=check, seed_file=lambda: seed, log=logging.getLogger(f"ivr.test.{name}")
    )


async def test_two_nodes_follow_refuse_and_roll_back(
    store_location: str | Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Node A publishes, node B (its own store connection) follows; a version B
    cannot check is refused on B with the reason and B keeps its list; a
    rollback is a new version both follow; the file is the seed until then."""
    seed = tmp_path / "duty_list.toml"
    seed.write_text(SAMPLE, encoding="utf-8")
    async with (
        await open_store(store_location) as one,
        await open_store(store_location) as two,
    ):
        a = running(DutyListStore(one), seed, "a")
        b = running(DutyListStore(two), seed, "b")
        await a.start()
        await b.start()
        assert a.duty is not None and b.duty is not None
        assert a.entry is None and a.duty.source == str(seed)  # nothing published: the file
        assert await b.follow() is None

        # a mistake: nothing stored, A's list unchanged, file:line
        wrong = roads_to("市交警支队")
        with pytest.raises(DutyListError) as refused:
            await a.publish(wrong, "upload.toml", author="admin")
        assert str(refused.value).startswith(
            f"upload.toml:{line_of(wrong, WRONG)}: duty: department"
        )
        assert await a.store.history() == [] and a.duty.version == version_of(SAMPLE)

        published = await a.publish(roads_to("市城管局"), "new.toml", author="admin", note="roads")
        assert a.duty.department_for("道路交通", "上城区") == "市城管局" and a.entry == published
        history = await a.store.history()
        # the file's list kept first, so there is something to roll back to
        assert [(h.id, h.author, h.version) for h in history] == [
            (published.id, "admin", version_of(roads_to("市城管局"))),
            (published.id - 1, SEED_AUTHOR, version_of(SAMPLE)),
        ]
        assert b.duty.department_for("道路交通", "上城区") == "市交通运输局"
        assert await b.follow() == published
        assert b.duty.department_for("道路交通", "上城区") == "市城管局"
        assert b.duty.source == f"duty list #{published.id}"
        assert await b.follow() is None  # once

        # a version B cannot check (a key of a newer format, written by hand into
        # the store): refused there with the reason, B keeps its list
        newer = "format = 2\n" + roads_to("市水务集团")
        async with one.transaction() as tx:
            await tx.execute(
                "INSERT INTO duty_list_versions (version, source, author, note, published_at) "
                "VALUES (?, ?, 'future', '', 1.0)",
                (version_of(newer), newer),
            )
        caplog.set_level(logging.ERROR, logger="ivr.test.b")
        assert await b.follow() is None
        assert b.duty.department_for("道路交通", "上城区") == "市城管局"
        assert b.refused is not None and b.refused[0].author == "future"
        bad_id = b.refused[0].id
        assert f"duty list #{bad_id}:1: unknown key 'format'" in b.refused[1]
        assert b.error is not None and "cannot run on this node" in b.error
        assert any(f"duty list #{bad_id}:1: unknown key" in r.getMessage() for r in caplog.records)
        assert await b.follow() is None and b.refused[0].id == bad_id  # not tried again

        # a restart of B: the newest it can check (the refused one is skipped)
        c = running(DutyListStore(two), seed, "c")
        await c.start()
        assert c.duty is not None and c.entry == published

        # rollback to the file's list: a new version, followed by B
        with pytest.raises(DutyListNotFoundError):
            await a.rollback(9999, author="admin")
        back = await a.rollback(published.id - 1, author="admin")
        assert back.id > bad_id and back.note == f"rollback to #{published.id - 1}"
        assert back.version == version_of(SAMPLE)
        assert await b.follow() == back
        assert b.duty.department_for("道路交通", "上城区") == "市交通运输局"
        assert b.refused is None and b.error is None

        # with a list published, SIGHUP's reload does not read the file (only the seed)
        seed.write_text(roads_to("市水务集团"), encoding="utf-8")
        assert await b.reload() is None
        assert b.duty.department_for("道路交通", "上城区") == "市交通运输局"


async def test_without_a_published_list_the_file_reloads_as_before(
    store_location: str | Path, tmp_path: Path
) -> None:
    seed = tmp_path / "duty_list.toml"
    seed.write_text(SAMPLE, encoding="utf-8")
    async with await open_store(store_location) as db:
        node = running(DutyListStore(db), seed, "one")
        await node.start()
        assert node.duty is not None
        wrong = roads_to("市交警支队")
        seed.write_text(wrong, encoding="utf-8")
        said = await node.reload()
        assert said is not None
        assert said.startswith(f"{seed}:{line_of(wrong, WRONG)}: duty:")
        assert node.duty.version == version_of(SAMPLE) and node.error == said
        seed.write_text(roads_to("市城管局"), encoding="utf-8")
        assert await node.reload() is None
        assert node.duty.department_for("道路交通", "上城区") == "市城管局"
        assert node.error is None and node.entry is None
        # no file and nothing published: no dispatch
        bare = running(DutyListStore(db), None, "bare")
        await bare.start()
        assert bare.duty is None and bare.error is None
