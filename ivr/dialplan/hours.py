"""Opening hours for the dial plan's ``hours`` node: time-of-day, weekdays and
holidays (法定节假日), in the hotline's time zone.

    [nodes.office]
    type = "hours"
    open = ["08:30-12:00", "13:30-17:30"]   # one or more spans, local time
    days = "mon-fri"                        # or "mon,wed,fri", "mon-sun"
    holidays = ["2026-10-01", "2026-10-02"] # closed all day
    workdays = ["2026-10-11"]               # open though the weekday is not (调休)
    timezone = "Asia/Shanghai"
    open_next = "main"
    closed_next = "after_hours"

A span may pass midnight ("22:00-06:00": open from 22:00 to 06:00 the next
morning, counted on the day it starts).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")


class HoursError(ValueError):
    """A malformed opening-hours value; the message says which and why."""


@dataclass(frozen=True)
class OpeningHours:
    spans: tuple[tuple[int, int], ...]  # minutes after midnight, start < end, or end <= start
    days: frozenset[int]  # 0 = Monday
    holidays: frozenset[datetime.date] = field(default_factory=frozenset)
    workdays: frozenset[datetime.date] = field(default_factory=frozenset)
    timezone: str = "Asia/Shanghai"

    def is_open(self, when: float) -> bool:
        """Whether the hotline is open at the epoch time ``when``."""
        local = datetime.datetime.fromtimestamp(when, ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        today = local.date()
        yesterday = today - datetime.timedelta(days=1)
        for start, end in self.spans:
            if start < end:
                if self._open_day(today) and start <= minute < end:
                    return True
            else:  # passes midnight: the evening part today, the morning part from yesterday
                if self._open_day(today) and minute >= start:
                    return True
                if self._open_day(yesterday) and minute < end:
                    return True
        return False

    def _open_day(self, day: datetime.date) -> bool:
        if day in self.holidays:
            return False
        return day in self.workdays or day.weekday() in self.days


def parse_spans(values: list[object]) -> tuple[tuple[int, int], ...]:
    if not values:
        raise HoursError('open must list at least one span like "08:30-17:30"')
    spans: list[tuple[int, int]] = []
    for value in values:
        m = _SPAN.fullmatch(str(value).strip()) if isinstance(value, str) else None
        if m is None:
            raise HoursError(f'{value!r} is not a span like "08:30-17:30" (24-hour clock)')
        start = int(m[1]) * 60 + int(m[2])
        end = int(m[3]) * 60 + int(m[4])
        if end > 24 * 60:
            raise HoursError(f"{value!r}: a span ends at 24:00 at the latest")
        if start == end:
            raise HoursError(f"{value!r}: starts and ends at the same time")
        spans.append((start, end % (24 * 60) if end == 24 * 60 and start > 0 else end))
    return tuple(spans)


def parse_days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.replace(" ", "").lower().split(","):
        if "-" in part:
            first, _, last = part.partition("-")
            a, b = _day(first), _day(last)
            days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
        elif part:
            days.add(_day(part))
    if not days:
        raise HoursError('days must name weekdays, e.g. "mon-fri" or "mon,wed,fri"')
    return frozenset(days)


def _day(name: str) -> int:
    if name not in DAY_NAMES:
        raise HoursError(f"{name!r} is not a weekday ({', '.join(DAY_NAMES)})")
    return DAY_NAMES.index(name)


def parse_dates(values: list[object], what: str) -> frozenset[datetime.date]:
    dates: set[datetime.date] = set()
    for value in values:
        try:
            dates.add(datetime.date.fromisoformat(str(value)))
        except ValueError:
            raise HoursError(f"{what}: {value!r} is not a date like 2026-10-01") from None
    return frozenset(dates)


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise HoursError(
            f"timezone {name!r} is not an IANA time zone such as Asia/Shanghai"
        ) from None
    return name
