"""The callback policy from config.toml's [callbacks] table."""

from __future__ import annotations

from ivr.callbacks.policy import CallbackPolicy
from ivr.config import CallbackSettings, Settings


def policy_from(settings: CallbackSettings) -> CallbackPolicy:
    quiet = settings.quiet_hours.split("-", 1) if settings.quiet_hours else None
    return CallbackPolicy(
        retry_delays=settings.retry,
        quiet_hours=(quiet[0], quiet[1]) if quiet else None,
        timezone=settings.timezone,
        max_attempts_per_hour=settings.max_attempts_per_hour,
        customer_first=settings.customer_first,
        max_dialing=settings.max_dialing,
    )


def policy_for_config(settings: Settings) -> CallbackPolicy:
    return policy_from(settings.callbacks)
