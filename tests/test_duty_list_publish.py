"""The duty list (权责清单) published through the store and followed by every
node (issue 15 item 1): migration 21 on both back ends; publish, follow,
refuse and roll back with real stores (SQLite, PostgreSQL) and the nodes'
own checks; two hotlines sharing PostgreSQL where a list published on A is
what B's dispatch proposal uses; a bad upload refused with file:line and the
running list intact; `ivr dispatch publish | history | rollback | show` as
a subprocess."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
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
from tests.conftest import ROOT, StartHotline, new_postgres_database, write_config
from tests.test_console_api import LAMP, OPERATORS, PLAN, base, get_json, post_json, ticket
from tests.web_client import hotline_client

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
        # found by SIGHUP's reload instead: the reload says why
        async with one.transaction() as tx:
            await tx.execute(
                "INSERT INTO duty_list_versions (version, source, author, note, published_at) "
                "VALUES (?, ?, 'future', '', 2.0)",
                (version_of(newer), newer),
            )
        said = await b.reload()
        assert said is not None and "cannot run on this node" in said
        assert b.refused[0].id == bad_id + 1
        assert b.duty.department_for("道路交通", "上城区") == "市城管局"
        bad_id += 1

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


# -- two hotlines on one PostgreSQL ---------------------------------------------------------
async def until_proposed(
    http: aiohttp.ClientSession, url: str, department: str, timeout: float = 15.0
) -> dict[str, Any]:
    """GET a ticket's dispatch view until the duty list proposes ``department``
    (a node looks for a newer published list every 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await get_json(http, url)
        assert status == 200, body
        if body["proposal"]["department"] == department or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.25)


async def test_a_list_published_on_node_a_is_what_node_b_proposes(
    request: pytest.FixtureRequest, tmp_path: Path, prompt_cache: Path
) -> None:
    """Admin on A uploads a list (a bad one first: 422 with file:line, nothing
    changes on either node); B's operator is then proposed the new department
    and can dispatch to it; a rollback made on B reaches A; each change is in
    the audit log."""
    from ivr.config import load_settings
    from ivr.logs import setup_logging
    from ivr.server import Hotline

    url = new_postgres_database(request, request.getfixturevalue("postgres_server"))
    nodes: list[Hotline] = []
    try:
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            duty = directory / "duty_list.toml"
            duty.write_text(SAMPLE, encoding="utf-8")
            plan = directory / "plan.toml"
            plan.write_text(PLAN)
            config = write_config(
                directory,
                operators=OPERATORS,
                prompt_cache=prompt_cache,
                dialplan=plan,
                voices_dir=directory / "voices",
                extra=f'[node]\nid = "node-{name}"\n[dispatch]\nduty_list = "{duty}"\n',
            )
            text, stores = re.subn(r'(?m)^database = ".*"$', f'url = "{url}"', config.read_text())
            assert stores == 1
            config.write_text(text)
            hotline = Hotline(load_settings(config), setup_logging("DEBUG", "text"))
            nodes.append(hotline)
            await hotline.start()
        a, b = nodes
        lamp = await ticket(a, LAMP)  # 道路交通, 上城区: taken on A, in the shared store
        async with (
            await hotline_client(a, "admin", "admin-a") as admin_a,
            await hotline_client(b, "admin", "admin-b") as admin_b,
            await hotline_client(b, "operator", "op-b") as op_b,
        ):
            shown = f"{base(b)}/api/dispatch/tickets/{lamp.id}"
            status, body = await get_json(op_b, shown)
            assert body["proposal"]["department"] == "市交通运输局"
            status, before = await get_json(admin_b, f"{base(b)}/api/admin/duty-list")
            assert before["running"]["from"] == "file" and before["history"] == []

            wrong = roads_to("市交警支队")
            status, body = await post_json(
                admin_a,
                f"{base(a)}/api/admin/duty-list/publish",
                {"source": wrong, "name": "bad.toml", "note": "oops"},
            )
            assert status == 422, body
            (problem,) = body["problems"]
            assert (problem["file"], problem["line"]) == ("bad.toml", line_of(wrong, WRONG))
            assert "市交警支队" in problem["message"]
            for node in (a, b):
                assert node.duty_list is not None
                assert node.duty_list.version == version_of(SAMPLE)

            status, body = await post_json(
                admin_a,
                f"{base(a)}/api/admin/duty-list/publish",
                {"source": roads_to("市城管局"), "name": "new.toml", "note": "roads to 城管"},
            )
            assert status == 200, body
            published = body["published"]
            assert body["running"]["from"] == "store" and published["author"] == "admin-a"
            body = await until_proposed(op_b, shown, "市城管局")
            assert body["proposal"]["department"] == "市城管局"  # B follows A's publish
            assert "市城管局" in body["departments"]
            status, sent = await post_json(op_b, shown, {"department": "市城管局"})
            assert status == 200, sent
            status, seen = await get_json(admin_b, f"{base(b)}/api/admin/duty-list")
            assert seen["running"]["published"]["id"] == published["id"]
            seed = seen["history"][-1]
            assert seed["author"] == SEED_AUTHOR and seed["version"] == version_of(SAMPLE)

            # rolled back on B: A follows
            status, body = await post_json(
                admin_b, f"{base(b)}/api/admin/duty-list/{seed['id']}/rollback", None
            )
            assert status == 200, body
            assert body["published"]["note"] == f"rollback to #{seed['id']}"
            deadline = time.monotonic() + 15
            while a.duty_list is not None and a.duty_list.version != version_of(SAMPLE):
                assert time.monotonic() < deadline, "A did not follow B's rollback"
                await asyncio.sleep(0.25)
            assert a.duty_list is not None
            assert a.duty_list.department_for("道路交通", "上城区") == "市交通运输局"
            admin_url = f"{base(b)}/api/admin/duty-list"
            status, body = await post_json(admin_b, f"{admin_url}/999/rollback", None)
            assert status == 404
            status, body = await post_json(op_b, f"{admin_url}/publish", {"source": SAMPLE})
            assert status == 403

        assert a.db is not None
        rows = await a.db.fetch_all(
            "SELECT user_name, action, outcome, node FROM audit_log "
            "WHERE action LIKE 'duty_list.%' ORDER BY id"
        )
        assert [(r["user_name"], r["action"], r["outcome"], r["node"]) for r in rows] == [
            ("admin-a", "duty_list.publish", "failed", "node-a"),
            ("admin-a", "duty_list.publish", "allowed", "node-a"),
            ("admin-b", "duty_list.rollback", "allowed", "node-b"),
            ("admin-b", "duty_list.rollback", "failed", "node-b"),
            ("op-b", "duty_list.publish", "refused", "node-b"),
        ]
    finally:
        for hotline in nodes:
            await hotline.stop(drain_timeout=2.0)
        logging.getLogger("ivr").handlers.clear()


# -- the command line, beside a running node --------------------------------------------------
async def ivr(config: Path, *args: str) -> tuple[int, str, str]:
    """``ivr --config CONFIG dispatch ARGS`` as a subprocess (the node keeps running)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ivr.cli",
        "--config",
        str(config),
        "dispatch",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_ivr_dispatch_publish_history_rollback_show(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """The CLI publishes into the store a running hotline shares (SQLite): a bad
    file is refused with file:line and nothing is stored; a good one is run by
    the node within seconds; history, rollback, show; audited as role cli."""
    duty = tmp_path / "duty_list.toml"
    duty.write_text(SAMPLE, encoding="utf-8")
    hotline = await start_hotline(extra=f'[dispatch]\nduty_list = "{duty}"\n')
    config = tmp_path / "config.toml"
    assert hotline.duty_list is not None and hotline.db is not None

    code, out, err = await ivr(config, "show")
    assert code == 0, err
    assert out.startswith(f"nothing published: each node runs its own file; here {duty} version")
    code, out, _ = await ivr(config, "history")
    assert code == 0 and out.startswith("no duty list published")

    wrong = roads_to("市交警支队")
    bad = tmp_path / "bad.toml"
    bad.write_text(wrong, encoding="utf-8")
    code, out, err = await ivr(config, "publish", str(bad))
    assert code == 1 and out == ""
    assert err.startswith(f"{bad}:{line_of(wrong, WRONG)}: duty: department '市交警支队'"), err
    assert err.rstrip().endswith("ivr dispatch: nothing published")
    assert await DutyListStore(hotline.db).history() == []

    good = tmp_path / "roads.toml"
    good.write_text(roads_to("市城管局"), encoding="utf-8")
    code, out, err = await ivr(config, "publish", str(good), "--note", "roads to 城管")
    assert code == 0, err
    assert out.startswith("published duty list #2 version ")
    assert "(roads to 城管)" in out and "every node runs it within a few seconds" in out
    deadline = time.monotonic() + 15
    while hotline.duty_list.department_for("道路交通", "上城区") != "市城管局":
        assert time.monotonic() < deadline, "the node did not take the published list"
        await asyncio.sleep(0.25)
    assert hotline.duty_list.version == version_of(roads_to("市城管局"))

    code, out, err = await ivr(config, "history")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("#2 version ") and "(roads to 城管)" in lines[0]
    assert lines[1].startswith(f"#1 version {version_of(SAMPLE)} by file ")  # the seed

    code, out, err = await ivr(config, "rollback", "7")
    assert code == 1 and "no published duty list #7" in err
    code, out, err = await ivr(config, "rollback", "1")
    assert code == 0, err
    assert out.startswith("published duty list #3 version ") and "(rollback to #1)" in out
    deadline = time.monotonic() + 15
    while hotline.duty_list.department_for("道路交通", "上城区") != "市交通运输局":
        assert time.monotonic() < deadline, "the node did not take the rollback"
        await asyncio.sleep(0.25)
    code, out, err = await ivr(config, "show")
    assert code == 0 and out.startswith(f"duty list #3 version {version_of(SAMPLE)} ")

    rows = await hotline.db.fetch_all(
        "SELECT role, action, object_id FROM audit_log WHERE action LIKE 'duty_list.%' ORDER BY id"
    )
    assert [(r["role"], r["action"], r["object_id"]) for r in rows] == [
        ("cli", "duty_list.publish", "2"),
        ("cli", "duty_list.rollback", "3"),
    ]
