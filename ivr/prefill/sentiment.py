"""How the caller sounds, from their words: 愤怒 (angry: 气死了, 太过分,
投诉你们, swearing), 求助 (pleading: 求求, 帮帮我, 没办法了, or words of
distress), 不满 (dissatisfied: 怎么还没, 一直没人管, 好几次了), else 平静.
Anger outranks pleading, which outranks dissatisfaction."""

from __future__ import annotations

from ivr.prefill import phrases
from ivr.prefill.fields import DEFAULT, SPEECH, Evidence, FieldValue, spans

ANGRY, PLEADING, DISSATISFIED, CALM = "愤怒", "求助", "不满", "平静"

_ANGRY = phrases.alternation(
    [
        r"气死",
        r"太气人",
        r"气人",
        r"太过分",
        r"过分了",
        r"投诉你们",
        r"什么玩意",
        r"混蛋",
        r"王八蛋",
        r"他妈的",
        r"妈的",
        r"狗日的",
        r"操你",
        r"狗屁",
        r"忍无可忍",
        r"受够了",
        r"欺人太甚",
        r"干什么吃的",
        r"吃干饭",
        r"不作为",
        r"岂有此理",
        r"无法无天",
        r"凭什么",
        r"丧良心",
        r"没良心",
        r"良心都没有",
        r"找记者",
        r"找媒体",
        r"曝光",
        r"废物",
    ],
    literal=False,
)
_PLEADING = phrases.alternation(
    [
        r"求求",
        r"求你们",
        r"帮帮",
        r"救命",
        r"救救",
        r"没办法了",
        r"实在没办法",
        r"走投无路",
        r"(?:该|要)?怎么办(?!理)",
        r"快来人",
        r"来人啊",
        r"拜托",
        r"急死了",
        r"(?:该|不知道)找谁",
    ],
    literal=False,
)
_DISSATISFIED = phrases.alternation(
    [
        r"怎么还没",
        r"怎么到现在",
        r"到现在(?:都|还)没",
        r"还没人",
        r"一直没人",
        r"没人(?:管|处理|收|清|打扫|理|来|修|回复)",
        r"(?:也|都|就是|根本|一直)不管",
        r"管不管",
        r"不管不问",
        r"有没有人管",
        r"好几次",
        r"多少次",
        r"很多次",
        r"多次反映",
        r"几次了",
        r"推脱",
        r"推诿",
        r"推来推去",
        r"踢皮球",
        r"敷衍",
        r"态度.{0,2}差",
        r"不合理",
        r"不满意",
        r"太慢了",
        r"拖着不",
        r"一直拖",
        r"一直不(?:修|处理|解决|回复|给)",
        r"老是",
        r"总是",
        r"也没用",
        r"都没用",
        r"说了也",
        r"到底",
        r"什么时候才",
    ],
    literal=False,
)


def sentiment(text: str, distress: tuple[Evidence, ...] = ()) -> FieldValue:
    angry = phrases.find(text, _ANGRY)
    if angry:
        return FieldValue(ANGRY, spans(text, angry), SPEECH)
    pleading = phrases.find(text, _PLEADING)
    if pleading or distress:
        pairs = pleading + [(e.start, e.end) for e in distress]
        return FieldValue(PLEADING, spans(text, pairs), SPEECH)
    dissatisfied = phrases.find(text, _DISSATISFIED)
    if dissatisfied:
        return FieldValue(DISSATISFIED, spans(text, dissatisfied), SPEECH)
    return FieldValue(CALM, (), DEFAULT)
