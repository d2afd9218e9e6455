"""Opening hours of the dial plan's hours node: spans, weekdays, holidays and
调休 working days, in the hotline's time zone."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from ivr.dialplan.hours import HoursError, OpeningHours, parse_dates, parse_days, parse_spans

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp()


OFFICE = OpeningHours(
    spans=parse_spans(["08:30-12:00", "13:30-17:30"]),
    days=parse_days("mon-fri"),
    holidays=parse_dates(["2026-10-01"], "holidays"),
    workdays=parse_dates(["2026-10-10"], "workdays"),  # a Saturday worked (调休)
)


@pytest.mark.parametrize(
    ("when", "is_open"),
    [
        ("2026-11-25 08:29", False),  # Wednesday, before opening
        ("2026-11-25 08:30", True),
        ("2026-11-25 12:00", False),  # lunch
        ("2026-11-25 13:30", True),
        ("2026-11-25 17:29", True),
        ("2026-11-25 17:30", False),
        ("2026-11-28 10:00", False),  # Saturday
        ("2026-10-01 10:00", False),  # National Day, a Thursday
        ("2026-10-10 10:00", True),  # the Saturday worked instead
    ],
)
def test_office_hours(when: str, is_open: bool) -> None:
    assert OFFICE.is_open(at(when)) is is_open


def test_a_span_past_midnight_counts_on_the_day_it_starts() -> None:
    night = OpeningHours(spans=parse_spans(["22:00-06:00"]), days=parse_days("fri"))
    assert night.is_open(at("2026-11-27 23:00"))  # Friday night
    assert night.is_open(at("2026-11-28 05:59"))  # early Saturday: Friday's shift
    assert not night.is_open(at("2026-11-28 06:00"))
    assert not night.is_open(at("2026-11-28 23:00"))  # Saturday night: closed
    all_day = OpeningHours(spans=parse_spans(["00:00-24:00"]), days=parse_days("sat-sun"))
    assert all_day.is_open(at("2026-11-29 23:59")) and not all_day.is_open(at("2026-11-30 00:00"))


def test_the_time_zone_decides() -> None:
    utc = OpeningHours(
        spans=parse_spans(["08:30-17:30"]), days=parse_days("mon-sun"), timezone="UTC"
    )
    when = at("2026-11-25 08:45")  # 00:45 UTC
    assert OFFICE.is_open(when) and not utc.is_open(when)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: parse_spans(["8:30-17:30"]), "is not a span"),
        (lambda: parse_spans(["08:30-08:30"]), "same time"),
        (lambda: parse_spans([]), "at least one span"),
        (lambda: parse_days("mon-fry"), "'fry' is not a weekday"),
        (lambda: parse_dates(["2026-13-01"], "holidays"), "holidays: '2026-13-01' is not a date"),
    ],
)
def test_bad_values_say_what_is_wrong(call: object, words: str) -> None:
    with pytest.raises(HoursError, match=words):
        call()  # type: ignore[operator]


PLAN = """
[plan]
name = "hours"
start = "office"

[prompts]
hello = "您好。"
closed = "现在是下班时间。"

[nodes.office]
type = "hours"
open = ["08:30-17:30"]
days = "mon-fri"
holidays = ["2026-10-01"]
open_next = "hello"
closed_next = "closed"

[nodes.hello]
type = "hangup"
prompt = "hello"

[nodes.closed]
type = "hangup"
prompt = "closed"
"""


@pytest.mark.parametrize(
    ("when", "path"),
    [
        ("2026-11-25 10:00", ["office", "hello"]),
        ("2026-11-25 20:00", ["office", "closed"]),
        ("2026-10-01 10:00", ["office", "closed"]),
    ],
)
async def test_the_hours_node_routes_by_the_clock(when: str, path: list[str]) -> None:
    from ivr.dialplan.load import parse_dialplan
    from ivr.dialplan.run import run_dialplan
    from tests.test_dialplan import Prompts, ScriptedCall

    plan = parse_dialplan(PLAN, "hours.toml")
    call = ScriptedCall([])
    await run_dialplan(plan, call, Prompts(), clock=lambda: at(when))  # type: ignore[arg-type]
    assert call.path == path


def test_a_bad_hours_node_is_reported_at_its_line() -> None:
    from ivr.dialplan.load import DialPlanError, parse_dialplan

    bad = PLAN.replace('days = "mon-fri"', 'days = "mon-fry"')
    with pytest.raises(DialPlanError) as caught:
        parse_dialplan(bad, "hours.toml")
    line = bad.splitlines().index('days = "mon-fry"') + 1
    assert f"hours.toml:{line}: node 'office': days: 'fry' is not a weekday" in str(caught.value)
