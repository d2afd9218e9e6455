"""Dial plans published over HTTP (issue 6, admin side): a broken plan is refused
with its line and changes nothing; a call in progress finishes on the plan it
started with while the next call gets the new one; history, rollback, diff, the
graph; bad bodies; the guard; a plan that validates but cannot be loaded is put
back. A real hotline, real HTTP, real calls from our trial caller."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ivr.dialplan.graph import SvgRenderer, graph_dot, plan_graph
from ivr.dialplan.load import DialPlanError, load_dialplan, parse_dialplan
from ivr.plan_store import PlanStore, PublishError, version_of
from ivr.server import Hotline
from ivr.store import open_store
from ivr.trial_call import place_call
from ivr.web.admin_plans import MAX_SOURCE_BYTES, plan_routes
from tests.conftest import StartHotline, trial
from tests.test_call_path import wait_records
from tests.web_client import hotline_client

PLANS = Path(__file__).parent / "data" / "dialplans"
LOG = logging.getLogger("ivr.test.caller")
OLD = (PLANS / "publish_a.toml").read_text()
NEW = (PLANS / "publish_b.toml").read_text()


async def _hotline(start_hotline: StartHotline, tmp_path: Path, **kwargs: Any) -> Hotline:
    """A hotline running a copy of publish_a.toml (publishing rewrites the file)."""
    plan_file = tmp_path / "plan.toml"
    shutil.copy(PLANS / "publish_a.toml", plan_file)
    return await start_hotline(dialplan=plan_file, **kwargs)


def _base(hotline: Hotline) -> str:
    return f"http://127.0.0.1:{hotline.api.port}/api/admin/plans"


async def _post(
    http: aiohttp.ClientSession, url: str, body: object = None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    async with http.post(url, json=body, **kwargs) as response:
        return response.status, await response.json()


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def _answered(hotline: Hotline) -> None:
    """Once the hotline has a call up (its plan was taken when the INVITE came)."""
    for _ in range(100):
        if hotline.calls:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the call was not answered")


async def test_broken_plan_is_refused_with_its_line_and_nothing_changes(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await _hotline(start_hotline, tmp_path)
    assert hotline.plan is not None
    running = hotline.plan.version
    on_disk = hotline.settings.dialplan.file.read_bytes()
    broken = OLD.replace('options = { "1" = "a" }', 'options = { "1" = "nowhere" }')
    line = broken.splitlines().index('options = { "1" = "nowhere" }') + 1
    syntax = OLD.replace("[nodes.bye]", "[nodes.bye")
    syntax_line = syntax.splitlines().index("[nodes.bye") + 1
    async with await hotline_client(hotline) as http:
        for url in (f"{_base(hotline)}/publish", f"{_base(hotline)}/validate"):
            status, body = await _post(http, url, {"source": broken, "note": "oops"})
            assert status == 422, body
            assert body["problems"] == [
                {"line": line, "message": "node 'main': options.1 -> unknown node 'nowhere'"}
            ]
            status, body = await _post(http, url, {"source": syntax})
            assert status == 422
            (problem,) = body["problems"]
            assert problem["line"] == syntax_line and "TOML syntax" in problem["message"]
        status, overview = await _get(http, _base(hotline))
    assert status == 200
    assert hotline.plan.version == running
    assert hotline.settings.dialplan.file.read_bytes() == on_disk
    assert overview["current"] == {"id": 1, "version": running, "source": OLD}
    assert overview["running"] == running
    # only the plan as found on disk, recorded on first use so there is a version 1
    assert [(h["id"], h["version"], h["author"]) for h in overview["history"]] == [
        (1, running, "file")
    ]
    # and callers still get the old plan
    await place_call(trial(hotline.endpoint.port, digits="1", digit_delay=3.0, duration=8.0), LOG)
    (record,) = await wait_records(hotline, 1)
    assert record.path == ["welcome", "main", "a"] and record.plan_version == running


async def test_call_in_progress_keeps_its_plan_then_history_diff_rollback(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await _hotline(start_hotline, tmp_path)
    assert hotline.plan is not None
    old_version = hotline.plan.version
    plan_file = hotline.settings.dialplan.file
    loop = asyncio.get_running_loop()
    async with await hotline_client(hotline) as http:
        status, body = await _post(http, f"{_base(hotline)}/diff", {"source": NEW})
        assert status == 200
        diff = body["diff"]
        assert diff.startswith("--- published\n+++ draft\n")
        assert '-options = { "1" = "a" }\n' in diff and '+options = { "1" = "b" }\n' in diff
        assert "+[nodes.b]\n" in diff and "-[nodes.a]\n" in diff

        # a call in progress: it presses 1 six seconds after the answer
        first = asyncio.ensure_future(
            place_call(
                trial(hotline.endpoint.port, digits="1", digit_delay=6.0, duration=14.0), LOG
            )
        )
        await _answered(hotline)
        answered = loop.time()
        status, published = await _post(
            http, f"{_base(hotline)}/publish", {"source": NEW, "note": "1 goes to b"}
        )
        assert status == 200, published
        assert loop.time() - answered < 5.0, "published after the caller pressed 1"
        new_version = published["version"]
        assert hotline.plan.version == new_version == version_of(NEW.encode())
        assert plan_file.read_text() == NEW
        assert published["author"] == "test-admin" and published["note"] == "1 goes to b"
        await first
        (old_call,) = await wait_records(hotline, 1)
        assert old_call.path == ["welcome", "main", "a"], old_call
        assert old_call.outcome == "hangup" and old_call.plan_version == old_version

        await place_call(
            trial(hotline.endpoint.port, digits="1", digit_delay=3.0, duration=8.0), LOG
        )
        records = await wait_records(hotline, 2)
        (new_call,) = [r for r in records if r.call_id != old_call.call_id]
        assert new_call.path == ["welcome", "main", "b"], new_call
        assert new_call.outcome == "hangup" and new_call.plan_version == new_version

        status, overview = await _get(http, _base(hotline))
        history = overview["history"]
        assert [(h["id"], h["version"], h["author"]) for h in history] == [
            (2, new_version, "test-admin"),
            (1, old_version, "file"),
        ]
        assert overview["current"] == {"id": 2, "version": new_version, "source": NEW}
        status, body = await _post(http, f"{_base(hotline)}/diff", {"source": NEW})
        assert body == {"diff": ""}

        status, rolled = await _post(http, f"{_base(hotline)}/1/rollback")
        assert status == 200, rolled
        assert rolled["version"] == old_version and rolled["note"] == "rollback to #1"
        assert plan_file.read_text() == OLD
        assert hotline.plan.version == old_version
        status, overview = await _get(http, _base(hotline))
        assert [h["version"] for h in overview["history"]] == [
            old_version,
            new_version,
            old_version,
        ]
        assert overview["current"]["id"] == 3  # the newest row with that version

        status, body = await _post(http, f"{_base(hotline)}/99/rollback")
        assert status == 404 and "99" in body["error"]
        status, body = await _post(http, f"{_base(hotline)}/x1/rollback")
        assert status == 400
    await place_call(trial(hotline.endpoint.port, digits="1", digit_delay=3.0, duration=8.0), LOG)
    records = await wait_records(hotline, 3)
    assert records[0].path == ["welcome", "main", "a"]  # newest first: the old plan again
    assert records[0].plan_version == old_version


async def test_call_in_progress_hears_a_prompt_the_new_plan_dropped(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await _hotline(start_hotline, tmp_path)
    without_a = NEW.replace('a = "这里是甲。"\n', "")
    assert without_a != NEW
    call = asyncio.ensure_future(
        place_call(trial(hotline.endpoint.port, digits="1", digit_delay=6.0, duration=14.0), LOG)
    )
    await _answered(hotline)
    async with await hotline_client(hotline) as http:
        status, _ = await _post(http, f"{_base(hotline)}/publish", {"source": without_a})
    assert status == 200
    await call
    (record,) = await wait_records(hotline, 1)
    assert record.path == ["welcome", "main", "a"]
    assert record.outcome == "hangup", record  # not "error"


async def test_call_in_progress_hears_its_own_plans_wording(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    import soundfile as sf

    from tests.audio_tools import best_match

    hotline = await _hotline(start_hotline, tmp_path)
    old_a = hotline.prompts.get("a").pcm
    reworded = OLD.replace('a = "这里是甲。"', 'a = "您好，这里换成了另一段很长的话。"')
    assert reworded != OLD
    heard = tmp_path / "heard.wav"
    call = asyncio.ensure_future(
        place_call(
            trial(hotline.endpoint.port, digits="1", digit_delay=6.0, duration=14.0, record=heard),
            LOG,
        )
    )
    await _answered(hotline)
    async with await hotline_client(hotline) as http:
        status, _ = await _post(http, f"{_base(hotline)}/publish", {"source": reworded})
    assert status == 200
    new_a = hotline.prompts.get("a").pcm
    await call
    (record,) = await wait_records(hotline, 1)
    assert record.path == ["welcome", "main", "a"]
    audio, _ = sf.read(str(heard), dtype="int16")
    assert best_match(audio, old_a[: len(old_a) // 2])[0] > 0.9  # the wording it started with
    assert best_match(audio, new_a[: len(new_a) // 2])[0] < 0.6


async def test_bad_bodies_and_the_graph_of_the_running_plan(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await _hotline(start_hotline, tmp_path)
    assert hotline.plan is not None
    plan_file = hotline.settings.dialplan.file
    on_disk = plan_file.read_bytes()
    publish = f"{_base(hotline)}/publish"
    async with await hotline_client(hotline) as http:
        for data, why in (
            (b"source = 1", "must be JSON"),
            (b"[1, 2]", "JSON object"),
            (b'{"note": "x"}', '"source" must be'),
            (b'{"source": 12}', '"source" must be'),
            (b'{"source": "x", "note": 3}', '"note" must be'),
            (b"\xff\xfe", "must be JSON"),
        ):
            async with http.post(
                publish, data=data, headers={"Content-Type": "application/json"}
            ) as response:
                assert response.status == 400, data
                assert why in (await response.json())["error"], data
        big = OLD + "#" * MAX_SOURCE_BYTES
        status, body = await _post(http, publish, {"source": big})
        assert status == 413 and "256 KiB" in body["error"]
        async with http.post(publish, data=b"x" * (2 * 1024 * 1024)) as response:
            assert response.status == 413
            assert "256 KiB" in (await response.json())["error"]
        status, graph = await _get(http, f"{_base(hotline)}/graph")
    assert status == 200
    assert graph["start"] == "welcome" and graph["version"] == hotline.plan.version
    assert [(n["id"], n["type"], n["label"]) for n in graph["nodes"]] == [
        ("welcome", "play", "welcome"),
        ("main", "menu", "menu"),
        ("a", "hangup", "a"),
        ("bye", "hangup", "bye"),
    ]
    assert graph["edges"] == [
        {"from": "welcome", "to": "main", "label": "next"},
        {"from": "main", "to": "a", "label": "1"},
        {"from": "main", "to": "bye", "label": "after_retries"},
    ]
    assert plan_file.read_bytes() == on_disk


def test_graph_of_every_node_type() -> None:
    plan = load_dialplan(PLANS / "every_node_type.toml")
    graph = plan_graph(plan)
    assert graph["start"] == "welcome" and graph["elderly_start"] == "operator"
    nodes = {n["id"]: (n["type"], n["label"]) for n in graph["nodes"]}
    assert nodes == {
        "welcome": ("play", "welcome"),
        "main": ("menu", "menu"),
        "slow": ("elderly", ""),
        "slower": ("speed", "0.8"),
        "cantonese": ("dialect", "yue"),
        "report": ("describe", "describe"),
        "quiet": ("no_callback", ""),
        "for_someone": ("proxy", "proxy"),
        "call_them": ("callback_to", "beneficiary"),
        "again": ("goto", "main"),
        "operator": ("transfer", "general"),
        "bye": ("hangup", "bye"),
    }
    lines = (PLANS / "every_node_type.toml").read_text().splitlines()
    for node in graph["nodes"]:
        assert lines[node["line"] - 1] == f"[nodes.{node['id']}]"
    edges = {(e["from"], e["label"], e["to"]) for e in graph["edges"]}
    assert edges == {
        ("welcome", "next", "main"),
        ("main", "1", "slow"),
        ("main", "2", "cantonese"),
        ("main", "3", "report"),
        ("main", "4", "for_someone"),
        ("main", "9", "again"),
        ("main", "after_retries", "bye"),
        ("slow", "next", "slower"),
        ("slower", "next", "operator"),
        ("cantonese", "next", "operator"),
        ("report", "next", "quiet"),
        ("report", "on_no_speech", "operator"),
        ("quiet", "next", "operator"),
        ("for_someone", "next", "call_them"),
        ("for_someone", "on_no_speech", "operator"),
        ("call_them", "next", "operator"),
        ("again", "goto", "main"),
        ("operator", "on_no_operator", "bye"),
    }
    assert len(graph["edges"]) == len(edges)


async def _fake_guard(request: web.Request) -> str:
    user = request.headers.get("X-Test-User")
    if not user:
        raise web.HTTPForbidden(text='{"error": "not an admin"}', content_type="application/json")
    return user


async def _serve(routes: list[web.AbstractRouteDef]) -> TestServer:
    app = web.Application()
    app.add_routes(routes)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_the_guard_decides_who_publishes(start_hotline: StartHotline, tmp_path: Path) -> None:
    hotline = await _hotline(start_hotline, tmp_path)
    assert hotline.plan is not None and hotline.plan_store is not None
    running = hotline.plan.version
    plan_file = hotline.settings.dialplan.file
    server = await _serve(plan_routes(hotline.plan_store, _fake_guard))
    base = str(server.make_url("/api/admin/plans"))
    try:
        async with aiohttp.ClientSession() as http:
            for method, path in (
                ("POST", "/publish"),
                ("POST", "/1/rollback"),
                ("POST", "/validate"),
                ("POST", "/diff"),
                ("GET", ""),
                ("GET", "/graph"),
            ):
                async with http.request(method, base + path, json={"source": NEW}) as response:
                    assert response.status == 403, path
                    assert (await response.json()) == {"error": "not an admin"}
            assert hotline.plan.version == running
            assert plan_file.read_text() == OLD
            assert hotline.db is not None  # not even the first row was recorded
            assert await hotline.db.fetch_all("SELECT id FROM dialplan_versions") == []
            status, published = await _post(
                http, base + "/publish", {"source": NEW}, headers={"X-Test-User": "王工"}
            )
            assert status == 200 and published["author"] == "王工"
            assert hotline.plan.version == published["version"]
            # the graph without a running plan to ask for: the plan file's
            async with http.get(base + "/graph", headers={"X-Test-User": "王工"}) as response:
                graph = await response.json()
            assert {n["id"] for n in graph["nodes"]} == {"welcome", "main", "b", "bye"}
    finally:
        await server.close()


async def test_plan_that_validates_but_does_not_load_is_put_back(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """A describe node passes validation, but no speech model is installed: the
    server cannot load the plan; the old file is put back and still runs."""
    hotline = await _hotline(
        start_hotline, tmp_path, models_dir=tmp_path / "no_models", engine="auto"
    )
    assert hotline.plan is not None
    running = hotline.plan.version
    plan_file = hotline.settings.dialplan.file
    listens = NEW.replace(
        '[nodes.b]\ntype = "hangup"\nprompt = "b"',
        '[nodes.b]\ntype = "describe"\nprompt = "b"\nnext = "bye"\non_no_speech = "bye"',
    )
    assert listens != NEW
    async with await hotline_client(hotline) as http:
        status, body = await _post(http, f"{_base(hotline)}/validate", {"source": listens})
        assert status == 200 and body["ok"], body
        status, body = await _post(http, f"{_base(hotline)}/publish", {"source": listens})
        assert status == 409, body
        assert body["restored"] is True
        assert "not loaded" in body["error"] and "previous plan is running again" in body["error"]
        assert "no_models" in body["error"] or "model" in body["error"], body["error"]
        status, overview = await _get(http, _base(hotline))
    assert plan_file.read_text() == OLD
    assert hotline.plan.version == running
    assert [h["version"] for h in overview["history"]] == [running]
    assert not list(tmp_path.glob(".plan.toml.*")), "temporary files left behind"
    await place_call(trial(hotline.endpoint.port, digits="1", digit_delay=3.0, duration=8.0), LOG)
    (record,) = await wait_records(hotline, 1)
    assert record.path == ["welcome", "main", "a"]


def _store_validate(source: str) -> Any:
    return parse_dialplan(source, "plan.toml", queues={"general"})


async def test_store_restores_the_file_when_reload_fails_and_serialises_publishes(
    tmp_path: Path,
) -> None:
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(OLD)
    reloads: list[str] = []
    fail = {"next": False}

    async def reload() -> bool:
        reloads.append(plan_file.read_text())
        await asyncio.sleep(0.05)  # a second publish could slip in here without the lock
        if fail["next"]:
            fail["next"] = False
            return False
        return True

    db = await open_store(tmp_path / "ivr.sqlite3")
    try:
        store = PlanStore(
            db, plan_file, _store_validate, reload, clock=iter(range(100, 200)).__next__
        )
        fail["next"] = True
        with pytest.raises(PublishError) as failed:
            await store.publish(NEW, author="ops")
        assert failed.value.restored
        assert "server could not load it" in failed.value.reason
        assert reloads == [NEW, OLD]  # tried the new one, then the old one again
        assert plan_file.read_text() == OLD
        assert [(h.author, h.version) for h in await store.history()] == [
            ("file", version_of(OLD.encode()))
        ]

        with pytest.raises(DialPlanError):
            await store.publish("[plan]\n", author="ops")
        assert plan_file.read_text() == OLD and len(reloads) == 2

        reloads.clear()
        publishes: list[Awaitable[Any]] = [
            store.publish(NEW, author="one"),
            store.publish(OLD, author="two"),
        ]
        first, second = await asyncio.gather(*publishes)
        assert reloads == [NEW, OLD]  # one after the other, each reload saw its own file
        assert (first.id, second.id) == (2, 3)
        assert [h.author for h in await store.history()] == ["two", "one", "file"]

        # a file edited by hand since the last publish is kept before it is replaced
        edited = OLD.replace("再见。", "再会。")
        plan_file.write_text(edited)
        current = await store.current()
        assert current.id is None and current.source == edited
        await store.publish(NEW, author="ops")
        history = await store.history()
        assert [(h.author, h.version) for h in history[:2]] == [
            ("ops", version_of(NEW.encode())),
            ("file", version_of(edited.encode())),
        ]
        stored = await store.get(history[1].id)
        assert stored is not None and stored.source == edited
    finally:
        await db.close()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")
async def test_dot_draws_every_node_and_loops_as_references() -> None:
    plan = load_dialplan(Path(__file__).parent.parent / "dialplans" / "12345.toml")
    graph = plan_graph(plan)
    drawn = await SvgRenderer().svg(graph_dot(graph))
    assert drawn.lstrip().startswith("<?xml") and "<svg" in drawn
    ids = [n["id"] for n in graph["nodes"]]
    for i in range(len(ids)):
        assert f'id="plan&#45;node&#45;{i}"' in drawn
    assert "转人工" in drawn and "菜单" in drawn  # node types in Chinese
    # "*" back to the main menu is a small "↩ main" beside the menu, not an edge up
    assert "↩ main" in drawn and "→ operator" in drawn
    width = float(drawn.split('<svg width="', 1)[1].split("pt", 1)[0])
    assert width < 1400, width  # a layered drawing, not one column per depth


async def test_without_dot_the_graph_is_still_sent_and_says_why(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await _hotline(start_hotline, tmp_path)
    assert hotline.plan_store is not None
    failing = tmp_path / "failing-dot"
    failing.write_text("#!/bin/sh\necho 'Error: syntax error in line 1' >&2\nexit 3\n")
    slow = tmp_path / "slow-dot"
    slow.write_text("#!/bin/sh\nexec sleep 5\n")
    for script in (failing, slow):
        script.chmod(0o755)
    for renderer, why in (
        (SvgRenderer(dot=str(tmp_path / "no-such-dot")), "not installed (Debian package graphviz)"),
        (SvgRenderer(dot=str(failing)), "failed (status 3): Error: syntax error in line 1"),
        (SvgRenderer(dot=str(slow), timeout=0.5), "took over 0.5 s"),
    ):
        server = await _serve(plan_routes(hotline.plan_store, _fake_guard, renderer=renderer))
        try:
            async with aiohttp.ClientSession(headers={"X-Test-User": "王工"}) as http:
                status, graph = await _get(http, str(server.make_url("/api/admin/plans/graph")))
                assert status == 200
                assert [n["id"] for n in graph["nodes"]] == ["welcome", "main", "a", "bye"]
                assert graph["svg"] is None and why in graph["svg_error"], graph["svg_error"]
                assert graph["names"]["types"]["menu"] == "菜单"
                status, body = await _post(
                    http, str(server.make_url("/api/admin/plans/validate")), {"source": NEW}
                )
                assert status == 200 and body["graph"]["svg"] is None
                assert why in body["graph"]["svg_error"]
        finally:
            await server.close()


async def test_a_plan_published_on_one_node_runs_on_every_node(
    tmp_path: Path, store_location: str | Path
) -> None:
    """Two nodes, each with its own plan file, share one store: a publish on A
    is written and reloaded on B by follow(); a plan B cannot load leaves B on
    its plan (and is not tried again)."""
    files = {name: tmp_path / f"{name}.toml" for name in ("a", "b")}
    for path in files.values():
        path.write_text(OLD)
    reloads: dict[str, list[str]] = {"a": [], "b": []}

    def reloader(name: str) -> Callable[[], Awaitable[bool]]:
        async def reload() -> bool:
            reloads[name].append(files[name].read_text())
            return "不能加载" not in files[name].read_text()

        return reload

    one, two = await open_store(store_location), await open_store(store_location)
    try:
        a = PlanStore(one, files["a"], _store_validate, reloader("a"))
        b = PlanStore(two, files["b"], _store_validate, reloader("b"))
        assert await b.follow() is None  # nothing published yet
        published = await a.publish(NEW, author="admin-on-a")
        assert await a.follow() is None  # A runs it already
        taken = await b.follow()
        assert taken is not None and taken.id == published.id
        assert files["b"].read_text() == NEW and reloads["b"] == [NEW]
        assert await b.follow() is None  # once

        await a.publish(OLD, author="admin-on-a")
        await a.publish(NEW, author="admin-on-a")  # back to what B runs: nothing to do
        assert await b.follow() is None and reloads["b"] == [NEW]

        broken = NEW.replace("再见。", "再见。不能加载")  # valid, but B's server refuses it
        assert broken != NEW
        await two.execute(
            "INSERT INTO dialplan_versions (version, source, author, note, published_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (version_of(broken.encode()), broken, "admin-on-c", "", 1.0),
        )
        assert await b.follow() is None  # did not load on B: the previous plan again
        assert files["b"].read_text() == NEW and reloads["b"] == [NEW, broken, NEW]
        assert await b.follow() is None and len(reloads["b"]) == 3  # not tried again
    finally:
        await one.close()
        await two.close()
