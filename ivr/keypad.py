"""Key presses from all three DTMF paths, each press counted once.

A phone may signal one key two ways (RFC 4733 and SIP INFO, or RFC 4733
plus the tone still audible in the audio). Rules:
- once a call has sent any out-of-band digit (RFC 4733 or INFO), in-band
  tone detection is ignored for the rest of the call;
- the same key from a different path within ``window`` seconds is a repeat.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class Keypad:
    def __init__(self, window: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._pending: deque[str] = deque()
        self._arrived = asyncio.Event()
        self._out_of_band_seen = False
        self._last: tuple[str, str, float] | None = None
        self.history: list[tuple[str, str]] = []  # (digit, source) accepted

    @property
    def out_of_band_seen(self) -> bool:
        return self._out_of_band_seen

    def press(self, digit: str, source: str) -> bool:
        """Offer a detected digit; True when it counts as a new key press."""
        now = self._clock()
        if source == "inband" and self._out_of_band_seen:
            return False
        last = self._last
        if (
            last is not None
            and last[0] == digit
            and last[1] != source
            and now - last[2] < self._window
        ):
            return False
        if source != "inband":
            self._out_of_band_seen = True
        self._last = (digit, source, now)
        self._pending.append(digit)
        self.history.append((digit, source))
        self._arrived.set()
        return True

    def take(self) -> str | None:
        if not self._pending:
            self._arrived.clear()
            return None
        digit = self._pending.popleft()
        if not self._pending:
            self._arrived.clear()
        return digit

    def peek(self) -> str | None:
        return self._pending[0] if self._pending else None

    def clear(self) -> None:
        self._pending.clear()
        self._arrived.clear()

    async def wait(self) -> None:
        await self._arrived.wait()
