"""Cases (案件, ivr/tickets/cases.py) through the real store, SQLite and
PostgreSQL: a saved ticket of the same matter joins the open case, another
matter (category, city, place, too late) does not; an operator splits a wrong
merge and is refused a merge across cities or categories with the reason;
closing a case closes every report and queues a follow-up for every caller.
And the bench's scorer on a hand-counted example."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench.merge import score
from ivr.callbacks.policy import CallbackPolicy
from ivr.config import ConfigError, load_settings
from ivr.followups import FollowupQueue
from ivr.store import open_store
from ivr.tickets import TicketStore
from ivr.tickets.cases import CaseError, CaseStore, MergeRefusedError, MergeRule

HOUR = 3600.0
T0 = 1_780_000_000.0


def fields(
    category: str, district: str, parts: dict[str, str], *, city: str | None = None
) -> dict[str, Any]:
    said = dict(parts, city=city) if city else dict(parts)

    def value(v: object) -> dict[str, Any]:
        return {"value": v, "evidence": [], "source": "speech"}

    return {
        "category": value(category),
        "district": value(district),
        "address": value("".join(parts.values()) or None),
        "address_parts": value(said),
    }


async def report(
    tickets: TicketStore, caller: str, text: str, f: dict[str, Any]
) -> int:
    ticket = await tickets.create(f"call-{caller}-{len(text)}", caller)
    await tickets.apply_prefill(ticket.id, f, text, None)
    return ticket.id


WATER = fields("供水", "西湖区", {"road": "文三路", "number": "90号"})


async def test_same_matter_merges_other_matters_do_not(store_location: str | Path) -> None:
    async with await open_store(store_location) as db:
        tickets = TicketStore(db)
        cases = CaseStore(db, tickets, MergeRule(home_city="杭州市"))
        first = await report(tickets, "13800000001", "文三路90号停水了，一点水都没有", WATER)
        opened = await cases.file(first, at=T0)
        assert not opened.merged and opened.case.reports == (first,)
        # the same door, the same category, other words, an hour later
        again = await report(
            tickets, "13800000002", "我家水龙头拧开什么都没有，文三路90号的", WATER
        )
        joined = await cases.file(again, at=T0 + HOUR)
        assert joined.merged and joined.case.id == opened.case.id
        assert joined.case.reports == (first, again)
        assert "same address" in joined.why
        history = [h.new_value for h in await tickets.history(again) if h.what == "case"]
        assert history == [f"merged into case {opened.case.id}: {joined.why}"]
        # the same address, another matter (category)
        noise = await report(
            tickets,
            "13800000003",
            "文三路90号楼下饭店半夜搬东西，吵得睡不着",
            fields("噪音扰民", "西湖区", {"road": "文三路", "number": "90号"}),
        )
        assert not (await cases.file(noise, at=T0 + 2 * HOUR)).merged
        # another city's 文三路90号, the same minute
        elsewhere = await report(
            tickets,
            "13800000004",
            "宁波文三路90号停水了",
            fields("供水", "海曙区", {"road": "文三路", "number": "90号"}, city="宁波市"),
        )
        assert not (await cases.file(elsewhere, at=T0 + 2 * HOUR)).merged
        # the same category down the road
        down = await report(
            tickets,
            "13800000005",
            "文三路200号停水了",
            fields("供水", "西湖区", {"road": "文三路", "number": "200号"}),
        )
        assert not (await cases.file(down, at=T0 + 2 * HOUR)).merged
        # the same door and matter, long after the case's last report: a new case
        later = await report(tickets, "13800000006", "文三路90号又停水了", WATER)
        late = await cases.file(later, at=T0 + HOUR + 40 * HOUR)
        assert not late.merged and late.case.id != opened.case.id
        # a ticket filed again stays where it is
        assert (await cases.file(again)).case.id == opened.case.id
        case = await cases.get(opened.case.id)
        assert case is not None and case.reports == (first, again)


async def test_an_outage_burst_joins_by_street(store_location: str | Path) -> None:
    """Many callers of one street without power, in their own words and with
    or without a road: one case; a street away, another."""
    async with await open_store(store_location) as db:
        tickets = TicketStore(db)
        cases = CaseStore(db, tickets, MergeRule(home_city="杭州市"))
        power = "供电"
        a = await report(
            tickets, "1", "长河街道这一片都停电了", fields(power, "滨江区", {"street": "长河街道"})
        )
        b = await report(
            tickets,
            "2",
            "江南大道这边好几个小区都没电",
            fields(power, "滨江区", {"street": "长河街道", "road": "江南大道"}),
        )
        c = await report(
            tickets, "3", "浦沿那边也断电了吗", fields(power, "滨江区", {"street": "浦沿街道"})
        )
        first = await cases.file(a, at=T0)
        assert (await cases.file(b, at=T0 + 600)).case.id == first.case.id
        assert (await cases.file(c, at=T0 + 900)).case.id != first.case.id


async def test_two_nodes_filing_at_once_open_one_case(store_location: str | Path) -> None:
    """Two stores on one database (two nodes) file reports of one matter at
    the same moment: the lock ``cases.file`` lets one decide after the other."""
    async with (
        await open_store(store_location) as db1,
        await open_store(store_location) as db2,
    ):
        t1, t2 = TicketStore(db1), TicketStore(db2)
        rule = MergeRule(home_city="杭州市")
        a = await report(t1, "1", "文三路90号停水了", WATER)
        b = await report(t2, "2", "文三路90号没水了", WATER)
        filed = await asyncio.gather(
            CaseStore(db1, t1, rule).file(a, at=T0), CaseStore(db2, t2, rule).file(b, at=T0)
        )
        assert filed[0].case.id == filed[1].case.id
        assert sorted(f.merged for f in filed) == [False, True]


async def test_split_and_refused_merge(store_location: str | Path) -> None:
    async with await open_store(store_location) as db:
        tickets = TicketStore(db)
        cases = CaseStore(db, tickets, MergeRule(home_city="杭州市"))
        a = await report(tickets, "1", "文三路90号停水了", WATER)
        b = await report(tickets, "2", "文三路90号水管漏水", WATER)
        case = (await cases.file(a, at=T0)).case
        assert (await cases.file(b, at=T0 + 60)).case.id == case.id
        own = await cases.split(b, who="王芳")
        assert own.id != case.id and own.reports == (b,)
        kept = await cases.get(case.id)
        assert kept is not None and kept.reports == (a,)
        history = [h for h in await tickets.history(b) if h.what == "case"]
        assert history[-1].who == "王芳"
        assert history[-1].new_value == f"split from case {case.id} into {own.id}"
        with pytest.raises(CaseError, match="alone in case"):
            await cases.split(b, who="王芳")
        # a split ticket filed again stays in its own case
        assert (await cases.file(b)).case.id == own.id
        # merged back by hand
        assert (await cases.merge(b, case.id, who="王芳")).reports == (a, b)
        # another category, another city: refused, the reason named
        noise = await report(
            tickets,
            "3",
            "文三路90号饭店吵",
            fields("噪音扰民", "西湖区", {"road": "文三路", "number": "90号"}),
        )
        await cases.file(noise, at=T0 + 120)
        with pytest.raises(MergeRefusedError, match="different categories: 噪音扰民 / 供水"):
            await cases.merge(noise, case.id, who="王芳")
        ningbo = await report(
            tickets,
            "4",
            "宁波文三路90号停水",
            fields("供水", "海曙区", {"road": "文三路", "number": "90号"}, city="宁波市"),
        )
        await cases.file(ningbo, at=T0 + 180)
        with pytest.raises(MergeRefusedError, match="different cities: 宁波市 / 杭州市"):
            await cases.merge(ningbo, case.id, who="王芳")
        after = await cases.get(case.id)
        assert after is not None and after.reports == (a, b)


async def test_closing_a_case_closes_its_reports_and_follows_up_every_caller(
    store_location: str | Path,
) -> None:
    async with await open_store(store_location) as db:
        tickets = TicketStore(db)
        queue = FollowupQueue(db, CallbackPolicy(quiet_hours=None))

        async def closed(tx: Any, ticket_id: int, caller: str, f: Any, now: float) -> None:
            await queue.ticket_closed(tx, ticket_id, caller, f, now=now)

        tickets.on_closed = closed
        cases = CaseStore(db, tickets, MergeRule(home_city="杭州市"))
        callers = ["13800000001", "13800000002", "13800000003"]
        ids = [
            await report(tickets, number, f"文三路90号停水了{n}", WATER)
            for n, number in enumerate(callers)
        ]
        for n, ticket_id in enumerate(ids):
            await cases.file(ticket_id, at=T0 + n * 60)
        case = await cases.case_of(ids[0])
        assert case is not None and case.reports == tuple(ids)
        done = await cases.close(case.id, who="王芳")
        assert done.status == "closed" and done.closed_by == "王芳"
        for ticket_id in ids:
            ticket = await tickets.get(ticket_id)
            assert ticket is not None and ticket.status == "closed"
        followups = await queue.list()
        assert sorted(f.number for f in followups) == callers
        assert sorted(f.ticket_id for f in followups) == ids
        # a closed case takes no new report
        new = await report(tickets, "13800000009", "文三路90号还是没水", WATER)
        assert (await cases.file(new, at=T0 + 600)).case.id != case.id


def test_the_bench_scores_pairs() -> None:
    """Five reports in two true cases {a,b,c} {d,e}; the rule made {a,b} {c,d} {e}.
    Pairs merged: ab, cd (2); truly one matter: ab ac bc de (4); right: ab."""
    truth = {"a": "1", "b": "1", "c": "1", "d": "2", "e": "2"}
    found = {"a": "x", "b": "x", "c": "y", "d": "y", "e": "z"}
    s = score(truth, found)
    assert (s.pairs_merged, s.pairs_true, s.pairs_right) == (2, 4, 1)
    assert s.precision == 0.5 and s.recall == 0.25
    assert s.dispatch_ratio == 3 / 5
    perfect = score(truth, {"a": "p", "b": "p", "c": "p", "d": "q", "e": "q"})
    assert perfect.precision == perfect.recall == 1.0 and perfect.dispatch_ratio == 2 / 5


def test_bad_merging_settings_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[queues.general]\noperators = ["sip:operator@127.0.0.1:5080"]\n'
        "[merging]\nwindow_hours = 2\nburst_hours = 5\narea_categories = \"供水\"\n"
        "windows = 3\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "config.toml:5: merging.burst_hours = 5: must be at most window_hours (2)" in message
    assert "config.toml:6: merging.area_categories" in message
    assert "config.toml:7: merging.windows" in message
    path.write_text(
        '[queues.general]\noperators = ["sip:operator@127.0.0.1:5080"]\n'
        '[merging]\nwindow_hours = 24\narea_categories = ["供电"]\n',
        encoding="utf-8",
    )
    merging = load_settings(path).merging
    assert merging.enabled and merging.window_hours == 24.0 and merging.burst_hours == 3.0
    assert merging.area_categories == ("供电",)
