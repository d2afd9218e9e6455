"""Numbers as callers say them and Whisper writes them: Arabic digits,
full-width digits, Chinese numerals read digit by digit (五零一) or with
units (一百零八), and the telephone readings 幺 (1), 洞 (0), 两 (2), 拐 (7),
勾 (9)."""

from __future__ import annotations

# One digit each, as said when reading out a number digit by digit.
DIGIT_VALUES: dict[str, int] = {
    **{str(d): d for d in range(10)},
    **{chr(0xFF10 + d): d for d in range(10)},  # full-width ０-９
    "零": 0,
    "〇": 0,
    "○": 0,
    "洞": 0,
    "一": 1,
    "幺": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "拐": 7,
    "八": 8,
    "九": 9,
    "勾": 9,
}
UNITS: dict[str, int] = {"十": 10, "百": 100, "千": 1000, "万": 10000}

# Characters of a number in an address (building, unit, room, house number).
ADDRESS_NUMERAL_CHARS = "0123456789０１２３４５６７８９零〇一二两三四五六七八九十百千幺"
# Characters of a telephone number read out digit by digit.
PHONE_DIGIT_CHARS = "".join(DIGIT_VALUES)


def digit_string(text: str) -> str:
    """``"幺三八"`` -> ``"138"``; characters that are not digits are dropped."""
    return "".join(str(DIGIT_VALUES[c]) for c in text if c in DIGIT_VALUES)


def to_arabic(numeral: str) -> str:
    """A spoken number as Arabic digits.

    With units (十 百 千 万) it is a quantity: 二十三 -> 23, 一百零八 -> 108,
    十二 -> 12, 一百二 -> 120 (the colloquial short form).  Without units it
    was read digit by digit: 五零一 -> 501, 零五 -> 05.  Returns ``numeral``
    unchanged when it is not a number."""
    if not numeral or any(c not in DIGIT_VALUES and c not in UNITS for c in numeral):
        return numeral
    if not any(c in UNITS for c in numeral):
        return digit_string(numeral)
    total = 0
    section = 0
    digit: int | None = None
    last_unit = 1
    after_zero = False
    for c in numeral:
        if c in UNITS:
            unit = UNITS[c]
            if unit == 10000:
                total += (section + (digit or 0)) * unit
                section = 0
            else:
                section += (1 if digit is None else digit) * unit
            digit = None
            last_unit = unit
            after_zero = False
        else:
            value = DIGIT_VALUES[c]
            if digit is not None:
                # digits side by side inside a quantity (一百零五六?): keep reading digits
                digit = digit * 10 + value
            else:
                digit = value
            if value == 0:
                after_zero = True
                digit = None
    if digit is not None:
        if last_unit >= 100 and not after_zero and digit < 10:
            digit *= last_unit // 10  # 一百二 = 120, 三千五 = 3500
        section += digit
    return str(total + section)
