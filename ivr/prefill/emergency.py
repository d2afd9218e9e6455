"""Emergencies heard in a call, for the operator to pass to 119/110/120 at
once: fire (着火), gas leak (煤气泄漏, 闻到煤气味), violence (打人, 持刀,
家暴, 抢劫) and medical (晕倒, 昏迷, 喘不上气).  Words said as not
happening (没有着火, 不是漏气, 差点打起来) do not count, and a question
about the gas bill is not a gas leak.

A fifth kind, a cry for help (help: 110), has no words of its own: 救命 and
快来人 are as often a figure of speech on a complaint line (这是我的救命钱,
你们快来人看看) as a cry, and sending a complaint to 110 by mistake costs
more than a real cry reaching a 12345 operator first.  A deployment that
wants them adds them, and any local words of the other kinds, in its
taxonomy file's [emergency_words]."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ivr.prefill import phrases
from ivr.prefill.fields import SPEECH, FieldValue, spans

FIRE, GAS_LEAK, VIOLENCE, MEDICAL, HELP = "fire", "gas_leak", "violence", "medical", "help"
KINDS = (FIRE, GAS_LEAK, VIOLENCE, MEDICAL, HELP)  # also the order of precedence
SERVICES = {FIRE: "119", GAS_LEAK: "119", VIOLENCE: "110", MEDICAL: "120", HELP: "110"}

_GAS = r"(?:煤气|燃气|天然气|液化气|瓦斯)"
_PATTERNS: dict[str, re.Pattern[str]] = {
    FIRE: phrases.alternation(
        [
            r"(?<![不点打])着火",  # not 点不着火 (a stove that will not light)
            r"起火",
            r"失火",
            r"火灾(?!隐患)",
            r"烧起来了",
            r"烧着了",
            r"冒烟着火",
            r"火烧起来",
            r"大火",
            r"火很大",
            r"火势",
            r"爆炸了",
        ],
        literal=False,
    ),
    GAS_LEAK: phrases.alternation(
        [
            rf"{_GAS}的?(?:泄漏|泄露|漏了|漏气)",
            r"(?<![轮车胎暖空调])漏气",
            rf"{_GAS}味",
            rf"(?:闻到|有股|一股).{{0,6}}{_GAS}.{{0,2}}味",
        ],
        literal=False,
    ),
    VIOLENCE: phrases.alternation(
        [
            r"打人",
            r"(?:打|揍)了?(?:我|她|他|孩子|小孩|老人|老婆|老公|店员|员工|保安|同学|邻居)"
            r"(?!的?(?:电话|手机|号码))",
            r"闹事",
            r"打砸",
            r"动手打",
            r"被打",
            r"殴打",
            r"打架",
            r"斗殴",
            r"持刀",
            r"拿着?刀",
            r"砍人",
            r"捅人",
            r"(?:被|拿刀)?砍伤",
            r"家暴",
            r"家庭暴力",
            r"抢劫",
            r"抢东西",
            r"行凶",
            r"杀人",
            r"绑架",
            r"强奸",
            r"性侵",
        ],
        literal=False,
    ),
    MEDICAL: phrases.alternation(
        [
            r"晕倒",
            r"昏倒",
            r"昏迷",
            r"不[省醒]人事",  # 不醒人事: Whisper's homophone
            r"叫不醒",
            r"心脏病(?:发作|犯了)",
            r"心梗",
            r"脑梗",
            r"中风了",
            r"说不出话",
            r"(?:半边|半个|身子|身体|手脚).{0,2}动不了",
            r"叫.{0,3}没.?反应",
            r"喘不上气",
            r"喘不过气",
            r"呼吸困难",
            r"没有?呼吸了?",
            r"出血不止",
            r"血流不止",
            r"大出血",
            r"流了(?:好多|很多)血",
            r"倒在地上",
            r"摔倒了?起不来",
            r"抽搐",
            r"休克",
            r"口吐白沫",
        ],
        literal=False,
    ),
    HELP: phrases.alternation([]),  # only a deployment's own words (see above)
}


def detect(text: str, extra: Mapping[str, re.Pattern[str]] | None = None) -> FieldValue | None:
    """The gravest emergency heard (fire, gas leak, violence, medical, a cry
    for help), its evidence every phrase of that kind; None when there is
    none. ``extra``: a deployment's own words per kind (a pattern each)."""
    for kind in KINDS:
        found = phrases.find(text, _PATTERNS[kind], skip_negated=True)
        if extra is not None and kind in extra:
            found = sorted(set(found) | set(phrases.find(text, extra[kind], skip_negated=True)))
        if found:
            return FieldValue(kind, spans(text, found), SPEECH)
    return None


def service(kind: str | None) -> str | None:
    """119 for fire and gas leaks, 110 for violence and cries for help, 120
    for medical."""
    return SERVICES.get(kind) if kind is not None else None
