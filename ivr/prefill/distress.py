"""Words of distress (想不开, 不想活了, 活着没意思, 自杀 ...): the caller
may need a counsellor (心理援助) on the line, whatever they called about."""

from __future__ import annotations

from ivr.prefill import phrases
from ivr.prefill.fields import Evidence, spans

_DISTRESS = phrases.alternation(
    [
        r"想不开",
        r"不想活",
        r"不活了",
        r"活着.{0,3}没(?:有)?意思",
        r"活着.{0,3}有什么意思",
        r"活不下去",
        r"自杀",
        r"轻生",
        r"寻死",
        r"跳楼",
        r"跳河",
        r"跳江",
        r"跳湖",
        r"割腕",
        r"喝农药",
        r"吃安眠药",
        r"死了算了",
        r"不如死了",
        r"一死了之",
        r"一了百了",
        r"结束(?:自己的?)?生命",
    ],
    literal=False,
)


def distress(text: str) -> tuple[Evidence, ...]:
    """The words of distress heard (empty when none)."""
    return spans(text, phrases.find(text, _DISTRESS, skip_negated=True))
