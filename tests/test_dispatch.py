"""Dispatch (派单) and graded supervision (分级督办) on both store back ends,
the clock in the test's hands: the duty list (the bundled sample, and files
with mistakes: file:line), dispatching by it, the department's steps (accept,
return with a reason, ask for more time, reply) each in the ticket's history,
levels 1-3 raised from the stored times (also after a restart, and once when
two nodes run rounds at once: the leader lease)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.prefill import load_gazetteer, load_taxonomy
from ivr.store import Database, open_store
from ivr.tickets import Ticket, TicketStore
from ivr.tickets.dispatch import DispatchError, Dispatches, DispatchNotFoundError
from ivr.tickets.duty_list import DutyList, DutyListError, load_duty_list, parse_duty_list
from ivr.tickets.supervision import Supervision
from tests.conftest import ROOT

HOUR = 3600.0
T0 = 1_800_000_000.0
DUTY_LIST = ROOT / "duty_list.toml"


def duty_list() -> DutyList:
    return load_duty_list(
        DUTY_LIST,
        categories=load_taxonomy().names,
        districts=load_gazetteer(ROOT / "gazetteer.toml").districts,
    )


def parse(text: str) -> DutyList:
    return parse_duty_list(
        text,
        "duty.toml",
        categories=load_taxonomy().names,
        districts=load_gazetteer(ROOT / "gazetteer.toml").districts,
    )


@pytest.fixture
async def db(store_location: str | Path) -> AsyncIterator[Database]:
    async with await open_store(store_location) as database:
        yield database


async def make_ticket(db: Database, category: str, district: str, urgency: str = "一般") -> Ticket:
    tickets = TicketStore(db)
    made = await tickets.create(f"call-{category}-{district}-{urgency}", "13800000001")
    fields = {
        name: {"value": value, "evidence": [], "source": "prefill"}
        for name, value in (("category", category), ("district", district), ("urgency", urgency))
    }
    return await tickets.apply_prefill(made.id, fields, f"{district}{category}", None)


def supervision(db: Database, node: str, clock: list[float]) -> Supervision:
    return Supervision(
        db,
        node=node,
        warn_share=lambda: 0.8,
        check_every=lambda: 30.0,
        clock=lambda: clock[0],
    )


# -- the duty list -------------------------------------------------------------------
def test_sample_duty_list_proposes_by_category_and_district() -> None:
    duty = duty_list()
    assert duty.department_for("噪音扰民", "西湖区") == "西湖区城管局"  # the district's own line
    assert duty.department_for("噪音扰民", "滨江区") == "市城管局"  # the category's "*"
    assert duty.department_for("供水", None) == "市水务集团"
    assert duty.department_for(None, "西湖区") is None
    assert duty.time_limit_hours("供水", "紧急") == 2  # the category's own
    assert duty.time_limit_hours("供水", "一般") == 120  # from default
    assert duty.time_limit_hours("噪音扰民", "较急") == 48
    assert duty.time_limit_hours("噪音扰民", None) == 120  # no urgency: 一般
    assert duty.department_of("water") == "市水务集团" and duty.department_of("nobody") is None


def test_unknown_category_district_department_named_with_their_lines() -> None:
    text = DUTY_LIST.read_text(encoding="utf-8")
    lines = text.split("\n")
    # the sample's own lines, each made wrong
    category_line = lines.index('category = "医疗"') + 1
    district_line = lines.index('district = "西湖区"') + 1
    department_line = lines.index('department = "市教育局"') + 1
    lines[category_line - 1] = 'category = "医药"'
    lines[district_line - 1] = 'district = "西虎区"'
    lines[department_line - 1] = 'department = "市教委"'
    with pytest.raises(DutyListError) as caught:
        parse("\n".join(lines))
    said = [str(p) for p in caught.value.problems]
    assert len(said) == 3, said
    assert said[0].startswith(f"duty.toml:{district_line}: duty: district '西虎区'")
    assert said[1].startswith(f"duty.toml:{category_line}: duty: category '医药'")
    assert said[2].startswith(f"duty.toml:{department_line}: duty: department '市教委'")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[time_limits]\ndefault = { "一般" = 1 }\n', 2, "较急, 紧急 are missing"),
        (
            '[time_limits]\ndefault = { "一般" = 1, "较急" = 1, "紧急" = 0 }\n',
            2,
            "want hours, a number over 0",
        ),
        ('[time_limits]\n"供水" = { "急" = 2 }\n', 2, "'急' is not an urgency"),
        ('[time_limits]\n"喝水" = { "紧急" = 2 }\n', 2, "'喝水' is not a category"),
        ("[time_limits\n", 1, "not valid TOML"),
        ('color = "red"\n', 1, "unknown key 'color'"),
    ],
)
def test_bad_time_limits_and_keys(text: str, line: int, words: str) -> None:
    with pytest.raises(DutyListError) as caught:
        parse(text)
    first = caught.value.problems[0]
    assert (first.line, words in first.message) == (line, True), str(caught.value)


def test_a_category_and_district_given_twice() -> None:
    text = (
        '[time_limits]\ndefault = { "一般" = 1, "较急" = 1, "紧急" = 1 }\n'
        '[[department]]\nname = "甲"\nusers = ["a"]\n'
        '[[department]]\nname = "乙"\nusers = ["a"]\n'
        '[[duty]]\ncategory = "供水"\ndistrict = ["西湖区", "*"]\ndepartment = "甲"\n'
        '[[duty]]\ncategory = "供水"\ndistrict = "西湖区"\ndepartment = "乙"\n'
    )
    with pytest.raises(DutyListError) as caught:
        parse(text)
    said = [str(p) for p in caught.value.problems]
    assert said == [
        "duty.toml:8: user 'a' already acts for 甲",
        "duty.toml:15: duty: 供水 in 西湖区 is already given to 甲 (line 11)",
    ]


# -- dispatch and the department's steps ----------------------------------------------
async def test_dispatch_accept_extend_reply_each_in_history(db: Database) -> None:
    duty = duty_list()
    dispatches = Dispatches(db)
    ticket = await make_ticket(db, "供水", "西湖区", "较急")
    department = duty.department_for("供水", "西湖区")
    assert department == "市水务集团"
    sent = await dispatches.dispatch(ticket, department, duty, who="op1", now=T0)
    assert (sent.state, sent.due_at - sent.started_at) == ("dispatched", 24 * HOUR)
    tickets = TicketStore(db)
    assert (await tickets.get(ticket.id)).status == "in_progress"  # type: ignore[union-attr]

    with pytest.raises(DispatchNotFoundError):  # another department cannot touch it
        await dispatches.accept(ticket.id, "市城管局", who="chengguan", now=T0 + 60)
    await dispatches.accept(ticket.id, department, who="water", now=T0 + 60)
    with pytest.raises(DispatchError, match="reason"):
        await dispatches.ask_extension(ticket.id, department, 12, " ", who="water", now=T0)
    asked = await dispatches.ask_extension(
        ticket.id, department, 12, "需要更换主管道", who="water", now=T0 + 120
    )
    assert asked.extension_hours == 12
    granted = await dispatches.decide_extension(ticket.id, grant=True, who="boss", now=T0 + 180)
    assert granted.due_at == T0 + 36 * HOUR and granted.extension_hours is None
    replied = await dispatches.reply(
        ticket.id, department, "已抢修，恢复供水", who="water", now=T0 + 2 * HOUR
    )
    assert (replied.state, replied.result) == ("replied", "已抢修，恢复供水")
    with pytest.raises(DispatchError, match="answered"):
        await dispatches.dispatch(ticket, "市城管局", duty, who="op1", now=T0 + 3 * HOUR)

    steps = [(h.who, h.what, h.new_value) for h in await tickets.history(ticket.id)]
    assert steps[-6:] == [
        ("op1", "dispatched", "市水务集团（时限24小时）"),
        ("op1", "status", "in_progress"),
        ("water", "accepted", "市水务集团"),
        ("water", "extension_asked", "12小时：需要更换主管道"),
        ("boss", "extension_granted", "12小时"),
        ("water", "replied", "已抢修，恢复供水"),
    ]


async def test_return_and_reassign_count_as_passes(db: Database) -> None:
    duty = duty_list()
    dispatches = Dispatches(db)
    ticket = await make_ticket(db, "噪音扰民", "滨江区")
    await dispatches.dispatch(ticket, "市城管局", duty, who="op1", now=T0)
    with pytest.raises(DispatchError, match="reason"):
        await dispatches.give_back(ticket.id, "市城管局", "", who="chengguan", now=T0)
    back = await dispatches.give_back(
        ticket.id, "市城管局", "非本单位职责，属物业管理", who="chengguan", now=T0 + HOUR
    )
    assert (back.state, back.passes) == ("returned", 1)
    again = await dispatches.dispatch(
        ticket, "市住房保障和房产管理局", duty, who="op1", now=T0 + 2 * HOUR
    )
    # the clock runs from the first dispatch; sending a returned ticket on is no new pass
    assert (again.state, again.passes, again.started_at) == ("dispatched", 1, T0)
    moved = await dispatches.dispatch(ticket, "西湖区城管局", duty, who="op2", now=T0 + 3 * HOUR)
    assert moved.passes == 2  # taken from a department that had not returned it
    with pytest.raises(DispatchError, match="not a department"):
        await dispatches.dispatch(ticket, "市教委", duty, who="op1", now=T0)
    steps = [(h.what, h.old_value, h.new_value) for h in await TicketStore(db).history(ticket.id)]
    assert ("returned", "市城管局", "非本单位职责，属物业管理") in steps
    assert ("reassigned", "市住房保障和房产管理局", "西湖区城管局（时限120小时）") in steps


# -- supervision -------------------------------------------------------------------------
async def test_a_department_that_never_answers_is_raised(db: Database) -> None:
    duty = duty_list()
    dispatches = Dispatches(db)
    ticket = await make_ticket(db, "燃气", "上城区", "较急")  # 12 hours
    await dispatches.dispatch(ticket, "杭州市燃气集团", duty, who="op1", now=T0)
    clock = [T0 + 9 * HOUR]
    watch = supervision(db, "node-a", clock)
    assert await watch.round() == []  # 75% used: nothing yet
    clock[0] = T0 + 10 * HOUR
    raised = await watch.round()
    assert raised is not None and [(r.level, r.ticket_id) for r in raised] == [(1, ticket.id)]
    assert "时限已用83%" in raised[0].reason
    assert await watch.round() == []  # raised once
    clock[0] = T0 + 12 * HOUR + 60
    raised = await watch.round()
    assert raised is not None and [r.level for r in raised] == [3]
    assert "超期未答复" in raised[0].reason
    row = await dispatches.get(ticket.id)
    assert row is not None and row.level == 3
    history = [h for h in await TicketStore(db).history(ticket.id) if h.who == "supervision"]
    assert [h.new_value[:6] for h in history if h.new_value] == ["1 初级预警", "3 高级督办"]
    counts = {c["department"]: c for c in await dispatches.counts(clock[0])}
    assert counts["杭州市燃气集团"]["overdue"] == 1 and counts["杭州市燃气集团"]["level3"] == 1


async def test_passing_twice_is_level_2_and_again_level_3(db: Database) -> None:
    duty = duty_list()
    dispatches = Dispatches(db)
    ticket = await make_ticket(db, "环境卫生", "拱墅区")  # 120 hours: time is no issue
    clock = [T0 + HOUR]
    watch = supervision(db, "node-a", clock)
    await dispatches.dispatch(ticket, "市城管局", duty, who="op", now=T0)
    await dispatches.give_back(ticket.id, "市城管局", "不归我们管", who="c", now=T0)
    await dispatches.dispatch(ticket, "西湖区城管局", duty, who="op", now=T0)
    assert await watch.round() == []  # one pass
    await dispatches.give_back(ticket.id, "西湖区城管局", "不在本区", who="x", now=T0)
    raised = await watch.round()
    assert raised is not None and [(r.level, r.department) for r in raised] == [(2, "西湖区城管局")]
    assert "推诿" in raised[0].reason
    await dispatches.dispatch(ticket, "市城管局", duty, who="op", now=T0)
    await dispatches.give_back(ticket.id, "市城管局", "仍不归我们", who="c", now=T0)
    assert await watch.round() == []  # three passes
    await dispatches.dispatch(ticket, "西湖区城管局", duty, who="op", now=T0)
    await dispatches.dispatch(ticket, "市城管局", duty, who="op", now=T0)  # reassigned: 4
    raised = await watch.round()
    assert raised is not None and [r.level for r in raised] == [3]
    assert "推诿再次发生" in raised[0].reason
    found = await dispatches.listed(level=3)
    assert [d.ticket_id for d in found] == [ticket.id]


async def test_levels_after_a_restart_from_the_stored_times(store_location: str | Path) -> None:
    """The node stops before the ticket is overdue; started again hours later
    (no round ran in between), its first round raises what is due."""
    duty = duty_list()
    async with await open_store(store_location) as db:
        ticket = await make_ticket(db, "供电", "滨江区", "紧急")  # 2 hours
        await Dispatches(db).dispatch(ticket, "国网杭州供电公司", duty, who="op", now=T0)
        clock = [T0 + 60]
        first = supervision(db, "node-a", clock)
        assert await first.round() == []
        await first.lease.release()
    async with await open_store(store_location) as db:
        clock = [T0 + 5 * HOUR]
        again = supervision(db, "node-a", clock)
        raised = await again.round()
        assert raised is not None and [r.level for r in raised] == [3]
        assert (await Dispatches(db).get(ticket.id)).level == 3  # type: ignore[union-attr]


async def test_one_node_runs_the_rounds(db: Database, store_location: str | Path) -> None:
    duty = duty_list()
    tickets = [await make_ticket(db, "供水", d, "紧急") for d in ("西湖区", "上城区", "滨江区")]
    for ticket in tickets:
        await Dispatches(db).dispatch(ticket, "市水务集团", duty, who="op", now=T0)
    clock = [T0 + 3 * HOUR]
    async with await open_store(store_location) as other_db:
        a, b = supervision(db, "node-a", clock), supervision(other_db, "node-b", clock)
        first, second = await asyncio.gather(a.round(), b.round())
        ran = [r for r in (first, second) if r is not None]
        assert len(ran) == 1 and sorted(r.ticket_id for r in ran[0]) == [t.id for t in tickets]
        holder = await a.lease.holder()
        assert holder is not None
        leader, follower = (a, b) if holder[0] == "node-a" else (b, a)
        assert await follower.round() is None  # the lease is still the leader's
        assert await leader.round() == []
        # the leader dies (no release): the other takes over once the lease ran out
        clock[0] += 91
        assert await follower.round() == []
        assert (await follower.lease.holder())[0] == follower.lease.node  # type: ignore[index]
        # a clean stop lets it go at once
        await follower.stop()
        assert await leader.round() == []
    raises = await db.fetch_all("SELECT ticket_id FROM supervision_raises")
    assert len(raises) == 3  # each ticket raised once, whoever ran


def test_ivr_dispatch_check(tmp_path: Path) -> None:
    """`ivr dispatch check`: the bundled list is ok; a wrong one gives file:line, exit 1."""
    import subprocess
    import sys

    command = ("dispatch", "check")

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "ivr.cli",
                "--config",
                str(ROOT / "config.toml"),
                *command,
                *args,
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )

    good = check()
    assert good.returncode == 0 and "ok, version" in good.stdout and "13 departments" in good.stdout
    lines = DUTY_LIST.read_text(encoding="utf-8").split("\n")
    wrong = lines.index('district = "西湖区"') + 1
    lines[wrong - 1] = 'district = "西虎区"'
    bad = tmp_path / "duty.toml"
    bad.write_text("\n".join(lines), encoding="utf-8")
    said = check("--duty-list", str(bad))
    assert said.returncode == 1
    assert said.stderr.startswith(f"{bad}:{wrong}: duty: district '西虎区'"), said.stderr


async def test_department_and_supervisor_users_are_stored(db: Database) -> None:
    """Migration 14 let users.role take the new roles on both back ends (and
    the program still refuses an unknown one)."""
    from ivr.web.auth import Accounts, AuthError

    accounts = Accounts(db)
    await accounts.add_user("water", "a-long-test-password", "department")
    await accounts.add_user("boss", "a-long-test-password", "supervisor")
    assert {(u.name, u.role) for u in await accounts.users()} == {
        ("water", "department"),
        ("boss", "supervisor"),
    }
    with pytest.raises(AuthError, match="not one of"):
        await accounts.add_user("root", "a-long-test-password", "root")
