"""When callbacks are dialled: retries and their backoff, quiet hours, the
per-number rate limit and how many may be dialling at once.

Nothing here reads the clock: every method takes ``at`` / ``now`` (epoch
seconds); quiet hours are read in the policy's time zone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_RETRY_DELAYS = (0.0, 60.0, 300.0)
DEFAULT_QUIET_HOURS = ("22:00", "07:00")
DEFAULT_TIMEZONE = "Asia/Shanghai"
RATE_WINDOW = 3600.0  # the per-number limit counts attempts in the last hour

_CLOCK_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True)
class CallbackPolicy:
    # Delay before each attempt: the first after the drop, each next one after
    # the previous attempt failed.  len(retry_delays) attempts, then give up.
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    # ("22:00", "07:00") local time, may wrap past midnight; None: no quiet hours.
    # Non-urgent callbacks due inside them wait for their end.
    quiet_hours: tuple[str, str] | None = DEFAULT_QUIET_HOURS
    timezone: str = DEFAULT_TIMEZONE
    max_attempts_per_hour: int = 3  # dial attempts to one number in any hour
    # False: never more callbacks dialling than operators free.  True: dial
    # first and queue the answered caller for an operator, at most max_dialing.
    customer_first: bool = False
    max_dialing: int = 4
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        delays = tuple(self.retry_delays)
        if not delays:
            raise ValueError("callbacks: retry_delays must list at least one delay, e.g. [0, 60]")
        for delay in delays:
            if isinstance(delay, bool) or not isinstance(delay, int | float):
                raise ValueError(f"callbacks: retry delay {delay!r} must be a number of seconds")
            if not math.isfinite(delay) or delay < 0:
                raise ValueError(f"callbacks: retry delay {delay!r} must be 0 or more seconds")
        object.__setattr__(self, "retry_delays", tuple(float(d) for d in delays))
        if self.quiet_hours is not None:
            start, end = _quiet_pair(self.quiet_hours)
            if start == end:
                raise ValueError(
                    f"callbacks: quiet hours {self.quiet_hours[0]}-{self.quiet_hours[1]} "
                    "start and end at the same time; give two times or none"
                )
            object.__setattr__(self, "quiet_hours", (self.quiet_hours[0], self.quiet_hours[1]))
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"callbacks: unknown time zone {self.timezone!r}; use an IANA name "
                "such as Asia/Shanghai"
            ) from exc
        object.__setattr__(self, "zone", zone)
        if self.max_attempts_per_hour < 1:
            raise ValueError(
                f"callbacks: max_attempts_per_hour must be 1 or more, "
                f"got {self.max_attempts_per_hour}"
            )
        if self.max_dialing < 1:
            raise ValueError(f"callbacks: max_dialing must be 1 or more, got {self.max_dialing}")

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays)

    def first_due(self, now: float, *, urgent: bool) -> float:
        """When the first attempt of a callback asked for at ``now`` is due."""
        return self.schedule(now + self.retry_delays[0], urgent=urgent)

    def retry_due(self, now: float, attempts: int, *, urgent: bool) -> float | None:
        """When the next attempt is due after attempt number ``attempts`` failed
        at ``now``; None when every attempt is used (give up)."""
        if attempts >= self.max_attempts:
            return None
        return self.schedule(now + self.retry_delays[attempts], urgent=urgent)

    def schedule(self, at: float, *, urgent: bool) -> float:
        """``at``, or the end of the quiet hours when a non-urgent callback
        would fall due inside them."""
        if urgent or not self.in_quiet_hours(at):
            return at
        return self.quiet_hours_end(at)

    def in_quiet_hours(self, at: float) -> bool:
        if self.quiet_hours is None:
            return False
        start, end = _quiet_pair(self.quiet_hours)
        local = datetime.fromtimestamp(at, self.zone)
        second = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        if start < end:
            return start <= second < end
        return second >= start or second < end

    def quiet_hours_end(self, at: float) -> float:
        """The first end of quiet hours after ``at`` (epoch seconds)."""
        if self.quiet_hours is None:
            return at
        _, end = _quiet_pair(self.quiet_hours)
        local = datetime.fromtimestamp(at, self.zone)
        candidate = local.replace(
            hour=int(end // 3600), minute=int(end % 3600 // 60), second=0, microsecond=0
        )
        if candidate <= local:
            candidate += timedelta(days=1)  # wall-clock arithmetic in the zone
        return candidate.timestamp()


def _quiet_pair(pair: Sequence[str]) -> tuple[int, int]:
    if len(pair) != 2:
        raise ValueError(f"callbacks: quiet hours must be [start, end], got {list(pair)!r}")
    start, end = (_seconds_of_day(text) for text in pair)
    return start, end


def _seconds_of_day(text: str) -> int:
    match = _CLOCK_TIME.fullmatch(str(text))
    if match is None:
        raise ValueError(
            f"callbacks: quiet hours time {text!r} must be HH:MM on a 24-hour clock, e.g. 22:00"
        )
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60
