"""Enterprise seats (企业专席, issue 14 item 4): the registry of business numbers
(CSV import: a bad line names its file:line and nothing is imported), a
registered number's call going to the enterprise queue's own seat, the key
企业服务 of the bundled plan, the queue's target answer time (logged, counted
in /metrics) and its overflow to a spare general operator.

The desk's rule (who may take a spare general operator, and when) is shown with
the desk's fake dialer as in tests/test_operator_seats.py; everything else with
real calls: our trial caller dialling the IVR, sipp phones as operators."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from ivr.call import EndReason
from ivr.enterprises import (
    Enterprise,
    EnterpriseRegistry,
    RegistryFileError,
    normal_number,
    read_registry_csv,
)
from ivr.node_roster import NodeRoster
from ivr.operators import Operator, OperatorDesk, OperatorState, Queue, QueueConfig
from ivr.shared_line import SharedLine
from ivr.store import open_store
from ivr.trial_call import place_call
from tests.conftest import StartHotline, trial
from tests.peers import SippUas, free_udp_port
from tests.test_call_path import wait_records
from tests.test_console_api import base, get_json
from tests.test_metrics import scrape
from tests.test_operator_seats import FakeCaller, FakeDialer, until
from tests.web_client import hotline_client

LOG = logging.getLogger("ivr.test.enterprise")
SEAT = "sip:seat@127.0.0.1:5091"
GENERAL_OP = "sip:general@127.0.0.1:5092"
GENERAL_OP_2 = "sip:general2@127.0.0.1:5093"


# -- the registry -----------------------------------------------------------------
def test_numbers_are_kept_in_one_form() -> None:
    assert normal_number("139 0000-2222") == "13900002222"
    assert normal_number("+86 139 0000 2222") == "13900002222"
    assert normal_number("0086-13900002222") == "13900002222"
    assert normal_number("+86 10 8765 4321") == "01087654321"  # a landline gets its 0 back
    assert normal_number("010-8765-4321") == "01087654321"
    assert normal_number("not a number") == ""


def test_a_bad_file_is_refused_whole_naming_each_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "企业.csv"
    path.write_text(
        "电话,企业名称,统一社会信用代码\n"
        "139 0000 2222,某某科技有限公司,91110108MA01ABCD3X\n"
        "12,太短的号码\n"
        "010-87654321,\n"
        "010-87654322,某某商贸有限公司,12345\n"
        "13900002222,另一家公司\n"
        "13900003333,甲公司,,多余\n",
        encoding="utf-8",
    )
    with pytest.raises(RegistryFileError) as caught:
        read_registry_csv(path)
    assert caught.value.problems == [
        f"{path}:3: '12' is not a phone number",
        f"{path}:4: 010-87654321 has no business name (second column)",
        f"{path}:5: '12345' is not a 统一社会信用代码 (18 characters: digits and capitals "
        "other than I, O, S, V, Z)",
        f"{path}:6: 13900002222 is already line 2's (某某科技有限公司); one number, one business",
        f"{path}:7: 4 columns; expected number,name[,统一社会信用代码]",
    ]


async def test_the_registry_finds_a_caller_however_the_number_is_written(
    store_location: str | Path,
) -> None:
    async with await open_store(store_location) as db:
        registry = EnterpriseRegistry(db)
        first = await registry.put(
            [Enterprise("13900002222", "某某科技有限公司"), Enterprise("01087654321", "某某商贸")]
        )
        assert (first.added, first.updated, first.removed) == (2, 0, 0)
        found = await registry.find("+8613900002222")
        assert found is not None and found.name == "某某科技有限公司"
        assert (await registry.find("+861087654321")) is not None
        assert await registry.find("13800138000") is None
        again = await registry.put([Enterprise("13900002222", "某某科技")], replace=True)
        assert (again.added, again.updated, again.removed) == (0, 1, 1)
        assert [e.name for e in await registry.all()] == ["某某科技"]
        assert await registry.remove("139-0000-2222")
        assert await registry.count() == 0


async def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr.cli", "--config", str(config), "enterprises", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


# -- the desk's rule: a spare general operator ------------------------------------
class TwoQueues:
    """A desk with "enterprise" (one seat) and "general" (``general`` operators);
    the enterprise caller who waited ``after`` s may take a spare general operator."""

    def __init__(self, general: list[str], *, after: float, target: float = 0.0) -> None:
        self.dialer = FakeDialer()
        self.desk = OperatorDesk(
            {
                "enterprise": QueueConfig(
                    [SEAT], 10, 10.0, target_answer=target, overflow_to="general",
                    overflow_to_after=after,
                ),
                "general": QueueConfig(general, 10, 10.0),
            },
            dialer=self.dialer, ring_timeout=0.2, wrap_up=0.0, log=LOG,
        )  # fmt: skip
        self.answered: list[tuple[str, float, float, str]] = []
        self.past: list[str] = []
        self.desk.on_answered = lambda *a: self.answered.append(a)
        self.desk.on_past_target = self.past.append
        self.tasks: list[asyncio.Task[object]] = []
        self.callers: list[FakeCaller] = []

    async def join(self, caller: FakeCaller, queue: str) -> None:
        self.tasks.append(asyncio.ensure_future(self.desk.connect(caller, queue, None)))
        self.callers.append(caller)
        await until(lambda: caller.positions != [])

    def talking(self, uri: str) -> bool:
        return any(
            op.uri == uri and op.state is OperatorState.TALKING
            for q in self.desk.queues.values()
            for op in q.operators
        )

    async def close(self) -> None:
        for caller in self.callers:
            caller.end(EndReason.CALLER_HANGUP)
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_a_business_waits_for_its_seat_then_takes_a_spare_general_operator() -> None:
    desk = TwoQueues([GENERAL_OP], after=0.6, target=1.0)
    try:
        first, second = FakeCaller("13900000001"), FakeCaller("13900000002")
        await desk.join(first, "enterprise")
        await until(lambda: desk.talking(SEAT))  # the seat is taken
        await desk.join(second, "enterprise")
        await asyncio.sleep(0.4)
        assert "13900000002" not in desk.dialer.legs  # not before overflow_to_after
        await until(lambda: "13900000002" in desk.dialer.legs)
        assert desk.dialer.legs["13900000002"].uri == GENERAL_OP
        assert second.outcomes[-1] == ("enterprise", GENERAL_OP, "bridged")
        (queue, waited, target, by) = desk.answered[-1]
        assert (queue, target, by) == ("enterprise", 1.0, "general") and 0.6 <= waited < 1.0
        assert desk.past == []  # answered within the target
    finally:
        await desk.close()


async def test_a_general_caller_in_line_keeps_their_operator_from_a_business() -> None:
    desk = TwoQueues([GENERAL_OP], after=0.0, target=0.3)
    try:
        business, talking = FakeCaller("13900000001"), FakeCaller("13800000001")
        waiting = FakeCaller("13800000002")
        await desk.join(FakeCaller("13900000009"), "enterprise")  # the seat is taken
        await until(lambda: desk.talking(SEAT))
        await desk.join(talking, "general")
        await until(lambda: desk.talking(GENERAL_OP))
        await desk.join(waiting, "general")
        await desk.join(business, "enterprise")  # may take a spare general operator at once
        await asyncio.sleep(0.5)
        assert desk.past == ["enterprise"]  # its wait passed the target (logged, counted)
        desk.dialer.legs["13800000001"].ended.set_result("remote_bye")  # the operator is free
        await until(lambda: "13800000002" in desk.dialer.legs)
        assert desk.dialer.legs["13800000002"].uri == GENERAL_OP  # the general caller's
        assert "13900000001" not in desk.dialer.legs
    finally:
        await desk.close()


# -- real calls ---------------------------------------------------------------------
def _enterprise_config(seat: str, *, target: float, overflow: str = "") -> str:
    return (
        f'[queues.enterprise]\noperators = ["{seat}"]\nmax_wait = 60\n'
        f"target_answer = {target}\n{overflow}\n"
        '[enterprise]\nqueue = "enterprise"\n'
    )


@pytest.mark.peers
async def test_a_registered_business_goes_to_the_enterprise_seat(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    seat = SippUas(tmp_path / "seat", free_udp_port(), free_udp_port(even=True), trace=True)
    general = SippUas(tmp_path / "general", free_udp_port(), free_udp_port(even=True), trace=True)
    await seat.start()
    await general.start()
    try:
        hotline = await start_hotline([general.uri], extra=_enterprise_config(seat.uri, target=60))
        config = tmp_path / "config.toml"
        bad = tmp_path / "bad.csv"
        bad.write_text("号码,名称\n139 0000 2222,某某科技有限公司\n139-0000-3333,\n", "utf-8")
        code, out, err = await _cli(config, "import", str(bad))
        assert code == 1 and out == ""
        assert f"{bad}:3: 139-0000-3333 has no business name (second column)" in err
        assert f"nothing imported from {bad}" in err
        assert (await _cli(config, "list"))[1].strip() == "no registered businesses"
        good = tmp_path / "good.csv"
        good.write_text(
            "号码,名称\n139 0000 2222,某某科技有限公司\n010-87654321,某某商贸\n", "utf-8"
        )
        code, out, _ = await _cli(config, "import", str(good))
        assert code == 0 and "2 business number(s) imported: 2 new" in out
        calling = asyncio.create_task(
            place_call(
                trial(hotline.endpoint.port, duration=14.0, caller="13900002222"),
                logging.getLogger("ivr.test.caller"),
            )
        )
        # the seat's console shows whose call it is while it is on
        async with await hotline_client(hotline, "operator", name="seat", sip_uri=seat.uri) as http:
            shown = None
            for _ in range(120):
                status, me = await get_json(http, f"{base(hotline)}/api/console/me")
                assert status == 200
                if me["call"] is not None:
                    shown = me["call"].get("enterprise")
                    break
                await asyncio.sleep(0.1)
        await calling
        (record,) = await wait_records(hotline, 1)
    finally:
        await seat.stop()
        await general.stop()
    assert shown == "某某科技有限公司"
    assert record.path == ["enterprise_welcome", "enterprise_operator"]  # no menus
    assert (record.queue, record.operator, record.outcome) == ("enterprise", seat.uri, "bridged")
    assert "X-Enterprise: 某某科技有限公司" in seat.messages()  # the seat's phone shows it
    assert "INVITE sip:" not in general.messages()


@pytest.mark.peers
async def test_the_key_for_enterprise_service_reaches_the_seat(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    seat = SippUas(tmp_path / "seat", free_udp_port(), free_udp_port(even=True), trace=True)
    await seat.start()
    try:
        hotline = await start_hotline(
            ["sip:nobody@127.0.0.1:9"], extra=_enterprise_config(seat.uri, target=60)
        )
        await place_call(
            trial(hotline.endpoint.port, digits="95", digit_delay=2.0, duration=16.0),
            logging.getLogger("ivr.test.caller"),
        )
        (record,) = await wait_records(hotline, 1)
    finally:
        await seat.stop()
    assert record.path == ["welcome", "main", "more", "enterprise", "operator"]
    assert (record.queue, record.operator, record.outcome) == ("enterprise", seat.uri, "bridged")
    assert "X-Enterprise: 企业服务" in seat.messages()


@pytest.mark.peers
async def test_a_business_past_the_target_is_logged_counted_and_lent_a_general_operator(
    start_hotline: StartHotline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The seat talks to one business; the next waits: past the target (2 s) it is
    logged and counted, and at 3 s a free general operator takes them."""
    seat = SippUas(tmp_path / "seat", free_udp_port(), free_udp_port(even=True))
    general = SippUas(tmp_path / "general", free_udp_port(), free_udp_port(even=True))
    await seat.start()
    await general.start()
    log = logging.getLogger("ivr.test.caller")
    try:
        extra = _enterprise_config(
            seat.uri, target=2, overflow='overflow_to = "general"\noverflow_to_after = 3'
        )
        hotline = await start_hotline([general.uri], extra=extra)
        assert hotline.db is not None
        await EnterpriseRegistry(hotline.db).put(
            [Enterprise("13900002222", "甲公司"), Enterprise("13900003333", "乙公司")]
        )
        first = asyncio.ensure_future(
            place_call(trial(hotline.endpoint.port, duration=45.0, caller="13900002222"), log)
        )
        seat_op = hotline.desk.queues["enterprise"].operators[0]
        for _ in range(200):
            if seat_op.state is OperatorState.TALKING:
                break
            await asyncio.sleep(0.1)
        assert seat_op.state is OperatorState.TALKING
        second = asyncio.ensure_future(
            place_call(trial(hotline.endpoint.port, duration=22.0, caller="13900003333"), log)
        )
        await asyncio.gather(first, second)
        records = {r.caller: r for r in await wait_records(hotline, 2)}
        figures = await scrape(hotline)
    finally:
        await seat.stop()
        await general.stop()
    assert records["13900002222"].operator == seat.uri
    lent = records["13900003333"]
    assert (lent.queue, lent.operator, lent.outcome) == ("enterprise", general.uri, "bridged")
    node = hotline.metrics.node
    answered = "ivr_queue_answered_total"
    assert figures.value(answered, node=node, queue="enterprise", by="enterprise") == 1
    assert figures.value(answered, node=node, queue="enterprise", by="general") == 1
    assert figures.value(answered, queue="enterprise", by="enterprise", within_target="yes") == 1
    assert figures.value(answered, queue="enterprise", by="general", within_target="no") == 1
    assert figures.value("ivr_queue_past_target_total", node=node, queue="enterprise") == 1
    assert "past its target answer time (2 s)" in caplog.text
    assert "a spare operator of general may take them" in caplog.text


# -- the same rule decided in the store, for every node (SQLite and PostgreSQL) ---------
def _queue(name: str, *uris: str, overflow_to: str = "", after: float = 0.0) -> Queue:
    return Queue(
        name=name,
        operators=[Operator(uri=u, queue=name) for u in uris],
        max_waiting=100,
        max_wait=600,
        target_answer=60.0,
        overflow_to=overflow_to,
        overflow_to_after=after,
    )


async def test_two_nodes_lend_a_general_operator_only_when_no_general_caller_needs_them(
    store_location: str | Path,
) -> None:
    clock = [1_000_000.0]
    made = []
    for name in ("node-a", "node-b"):
        db = await open_store(store_location)
        roster = NodeRoster(db, name, clock=lambda: clock[0], timeout=5.0)
        await roster.join()
        made.append((db, SharedLine(db, roster)))
    (db_a, a), (db_b, b) = made
    try:
        await a.add_operators([SEAT, GENERAL_OP])
        seats = _queue("enterprise", SEAT, overflow_to="general", after=45.0)
        general = _queue("general", GENERAL_OP)
        await a.join("enterprise", "first", "13900000001", None, priority=False)
        got = await a.claim(seats, "first", lender=general)
        assert got is not None and got.operator == SEAT  # the seat is rung for the first
        await a.rang("first", SEAT, answered=True)
        await a.leave("first")
        await a.join("enterprise", "business", "13900000002", None, priority=False)
        assert await a.claim(seats, "business", lender=general) is None  # seat busy, 0 s waited
        clock[0] += 46  # the target is near: the spare general operator may take them ...
        for line in (a, b):
            await line.roster.beat()  # both nodes live on
        await b.join("general", "citizen", "13800000001", None, priority=False)
        # ... but a general caller (on the other node) is due to them
        assert await a.claim(seats, "business", lender=general) is None
        got = await b.claim(general, "citizen")
        assert got is not None and got.operator == GENERAL_OP
        await b.rang("citizen", GENERAL_OP, answered=True)
        await b.leave("citizen")
        await b.talked(GENERAL_OP, wrap_up=0)  # free again, nobody in the general line
        got = await a.claim(seats, "business", lender=general)
        assert got is not None and got.operator == GENERAL_OP
        states = await b.operators()
        assert states[GENERAL_OP].state is OperatorState.RINGING
        assert states[GENERAL_OP].call_id == "business" and states[GENERAL_OP].node == "node-a"
    finally:
        await db_a.close()
        await db_b.close()


# -- config: a mistake names its key and line -------------------------------------------
def test_enterprise_settings_with_a_mistake_name_the_key_and_line(tmp_path: Path) -> None:
    from ivr.config import ConfigError, load_settings

    path = tmp_path / "config.toml"
    path.write_text(
        '[queues.general]\noperators = ["sip:op@127.0.0.1:5080"]\n'  # lines 1-2
        '[queues.enterprise]\noperators = ["sip:seat@127.0.0.1:5081"]\n'  # lines 3-4
        'target_answer = 60\noverflow_to = "genral"\n'  # lines 5-6
        '[enterprise]\nqueue = "enterprises"\n'  # lines 7-8
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    text = str(caught.value)
    assert f'{path}:6: queues.enterprise.overflow_to = "genral": must name another queue' in text
    assert f'{path}:8: enterprise.queue = "enterprises": is not a queue in this file' in text
    path.write_text(
        '[queues.general]\noperators = ["sip:op@127.0.0.1:5080"]\n'
        '[queues.enterprise]\noperators = ["sip:seat@127.0.0.1:5081"]\n'
        'overflow_to = "general"\n'  # line 5: no target_answer, no overflow_to_after
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert f"{path}:5: queues.enterprise.overflow_to" in str(caught.value)
    assert "needs overflow_to_after" in str(caught.value)
    path.write_text(
        '[queues.general]\noperators = ["sip:op@127.0.0.1:5080"]\n'
        '[queues.enterprise]\noperators = ["sip:seat@127.0.0.1:5081"]\n'
        'target_answer = 60\noverflow_to = "general"\n[enterprise]\nqueue = "enterprise"\n'
    )
    settings = load_settings(path)
    assert settings.queues["enterprise"].overflow_to_after == 45.0  # 3/4 of the target
    assert settings.enterprise.queue == "enterprise"
