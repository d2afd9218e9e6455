"""How urgent the ticket is (紧急程度), and why.

紧急: an emergency (fire, gas leak, violence, medical), words of distress,
danger to life or safety (被困, 触电, 漏电, 倒塌, 危险 ...), or an elderly
person living alone without heat or water in the cold.
较急: the problem has lasted days (已经好几天了, 三个月没发工资了), old
people, children or the sick are affected by it (a supply cut, or words of
hardship: 没法睡觉, 不方便, 不安全, 生病), or the caller asks for speed
(尽快, 赶紧).
一般: everything else."""

from __future__ import annotations

from ivr.prefill import phrases
from ivr.prefill.fields import DEFAULT, SPEECH, Evidence, FieldValue, spans

URGENT, SOON, NORMAL = "紧急", "较急", "一般"
EMERGENCY_WORDS = {
    "fire": "火情",
    "gas_leak": "燃气泄漏",
    "violence": "暴力伤害",
    "medical": "急病或受伤",
    "help": "呼救",
}
# Categories whose problem is a cut in supply: old people or children at home
# make these more urgent by themselves.
SUPPLY_CATEGORIES = frozenset({"供水", "供暖", "供电", "燃气"})

_DANGER = phrases.alternation(
    [
        r"生命危险",
        r"危险",
        r"被困",
        r"困在",
        r"关在电梯",
        r"关在?里面",
        r"触电",
        r"漏电",
        r"倒塌",
        r"坍塌",
        r"塌了",
        r"要塌",
        r"砸伤",
        r"砸到人",
        r"冒火花",
        r"打火花",
        r"电线(?:掉|断)",
        r"人命",
        r"落水",
        r"溺水",
        r"走失",
        r"走丢",
        r"孩子丢了",
    ],
    literal=False,
)
_ALONE = phrases.alternation(
    [r"独居", r"孤寡", r"空巢", r"一个人住", r"一个人在家", r"老人一个人", r"自己一个人"],
    literal=False,
)
_ELDERLY = phrases.alternation(
    [
        r"老人",
        r"老太",
        r"大爷",
        r"大妈",
        r"奶奶",
        r"爷爷",
        r"外婆",
        r"外公",
        r"老两口",
        r"老母亲",
        r"老父亲",
        r"老伴",
        r"[六七八九]十多?[一二三四五六七八九]?岁",
        r"今年[六七八九]十",
    ],
    literal=False,
)
_COLD_OR_DRY = phrases.alternation(
    [r"暖气", r"供暖", r"取暖", r"地暖", r"没水", r"停水", r"断水", r"冻", r"降温", r"冷"],
    literal=False,
)
_DURATION = phrases.alternation(
    [
        r"(?:好几|几|[两三四五六七八九十\d]+|半|一)个?多?(?:天|星期|礼拜|周|月|年)多?(?=了|没|都|还)",
        r"好久了",
        r"很久了",
    ],
    literal=False,
)
_VULNERABLE = phrases.alternation(
    [
        r"老人",
        r"老太",
        r"大爷",
        r"奶奶",
        r"爷爷",
        r"孩子",
        r"小孩",
        r"孕妇",
        r"婴儿",
        r"宝宝",
        r"残疾",
        r"瘫痪",
        r"卧床",
        r"病人",
        r"[六七八九]十多?岁",
    ],
    literal=False,
)
_HARDSHIP = phrases.alternation(
    [
        r"没法",
        r"不方便",
        r"受不了",
        r"睡不着",
        r"不安全",
        r"走不",
        r"欺负",
        r"生病",
        r"病",
        r"咳嗽",
        r"哮喘",
        r"发烧",
        r"冻",
        r"中暑",
        r"影响",
        r"摔",
        r"难受",
        r"出不了门",
        r"下不了楼",
    ],
    literal=False,
)
_HASTE = phrases.alternation(
    [r"尽快", r"赶紧", r"赶快", r"抓紧", r"很急", r"着急", r"急着", r"急用", r"越快越好"],
    literal=False,
)


def urgency(
    text: str,
    *,
    emergency: FieldValue | None,
    distress: tuple[Evidence, ...],
    category: str,
) -> tuple[FieldValue, str]:
    """The urgency and the reason, in the hotline's words."""
    if emergency is not None:
        words = phrases.quote(text, [(e.start, e.end) for e in emergency.evidence])
        reason = f"紧急：{EMERGENCY_WORDS.get(emergency.value, emergency.value)}{words}"
        return FieldValue(URGENT, emergency.evidence, SPEECH), reason
    if distress:
        words = phrases.quote(text, [(e.start, e.end) for e in distress])
        return FieldValue(URGENT, distress, SPEECH), f"紧急：来电人有轻生的话{words}，需心理援助"
    danger = phrases.find(text, _DANGER, skip_negated=True)
    if danger:
        reason = f"紧急：危及人身安全{phrases.quote(text, danger)}"
        return FieldValue(URGENT, spans(text, danger), SPEECH), reason
    alone = phrases.find(text, _ALONE)
    elderly = phrases.find(text, _ELDERLY)
    cold = phrases.find(text, _COLD_OR_DRY, skip_negated=True)
    if alone and elderly and cold:
        found = alone + elderly + cold
        reason = f"紧急：独居老人缺暖或缺水{phrases.quote(text, found, limit=4)}"
        return FieldValue(URGENT, spans(text, found), SPEECH), reason

    reasons: list[str] = []
    found = []
    duration = phrases.find(text, _DURATION)
    if duration:
        reasons.append(f"问题已持续多日{phrases.quote(text, duration)}")
        found += duration
    vulnerable = phrases.find(text, _VULNERABLE)
    hardship = phrases.find(text, _HARDSHIP, skip_negated=True)
    if vulnerable and (hardship or category in SUPPLY_CATEGORIES):
        why = hardship if hardship else []
        reasons.append(f"老人、孩子等受影响{phrases.quote(text, vulnerable + why, limit=4)}")
        found += vulnerable + why
    haste = phrases.find(text, _HASTE)
    if haste:
        reasons.append(f"来电人要求尽快{phrases.quote(text, haste)}")
        found += haste
    if reasons:
        return FieldValue(SOON, spans(text, found), SPEECH), "较急：" + "；".join(reasons)
    return (
        FieldValue(NORMAL, (), DEFAULT),
        "一般：没有听到危险、紧急情况、持续多日或老人孩子受影响的说法",
    )
