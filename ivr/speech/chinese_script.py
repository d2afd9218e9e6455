"""Traditional to simplified Chinese (OpenCC t2s, opencc-python-reimplemented).

Whisper often answers Mandarin in traditional characters; tickets and the
operator screen use simplified. The converter loads its dictionaries once
when built and is read-only afterwards, so one instance is shared by every
executor thread.
"""

from __future__ import annotations

from opencc import OpenCC  # type: ignore[import-untyped]


class SimplifiedChinese:
    """Converts text to simplified Chinese; other scripts pass unchanged."""

    def __init__(self) -> None:
        self._t2s = OpenCC("t2s")

    def convert(self, text: str) -> str:
        result: str = self._t2s.convert(text)
        return result

    def traditional_characters(self, text: str) -> list[str]:
        """The characters of ``text`` that t2s would change, in order (empty
        when the text is all simplified)."""
        return [char for char in text if self._t2s.convert(char) != char]
