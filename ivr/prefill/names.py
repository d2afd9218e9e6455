"""The caller's name (来电人姓名): 我叫张伟, 我是李秀英, 本人刘洋, 名字叫...,
我姓王 (just "王", or "王先生"/"王女士" when that is said).

A name is a known surname and one or two more characters, ending at
punctuation or where the next clause starts (电话, 住在, 家住, 地址, 我 ...).
"我是说", "我是这个小区的业主", "我是余杭区的" are not names."""

from __future__ import annotations

import re

from ivr.prefill.fields import SPEECH, Evidence, FieldValue
from ivr.prefill.gazetteer import Gazetteer

SINGLE_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖萧田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫阎段雷侯龙史陶黎贺顾"
    "毛郝龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰"
    "焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲"
    "房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟"
    "应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
)
COMPOUND_SURNAMES = (
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙",
    "夏侯", "令狐", "宇文", "司徒", "端木", "呼延", "独孤", "南宫", "西门",
)  # fmt: skip
TITLES = ("先生", "女士", "小姐")

# Cues before a full name, and before a surname only.
_NAME_CUES = re.compile(
    r"我的名字叫|我的名字是|我名字叫|名字叫|名字是|姓名是|姓名|我叫|本人是|本人|我是"
)
_SURNAME_CUES = re.compile(r"免贵姓|本人姓|我姓")
# 亲友代办: a relative names the person they report for (老人叫, 我母亲叫, 她姓...).
_KIN = (
    "母亲|父亲|妈妈|爸爸|奶奶|爷爷|外婆|外公|姥姥|姥爷|婆婆|公公|老伴|岳母|岳父|"
    "老人家|老人|老太太|老爷子|老大爷|老奶奶|大爷|大妈|妈|爸|他|她"
)
_BENEFICIARY_CUES = re.compile(
    rf"(?:{_KIN})(?:的)?(?:名字|姓名)?(?:叫做|名叫|叫|是)|名字叫|名字是|姓名是|姓名"
)
_BENEFICIARY_SURNAME_CUES = re.compile(rf"(?:{_KIN})姓")
_STRICT_CUES = ("我是", "本人是", "本人")
# Where the name stops: the start of the next clause.
CLAUSE_WORDS = (
    "电话", "手机", "号码", "联系", "住在", "家住", "家里", "家在", "地址", "今年", "现在",
    "这边", "那边", "这个", "那个", "今天", "昨天", "想", "要", "反映", "投诉", "咨询",
    "有个", "有人", "有一", "有点", "有些", "有没有", "有件", "来自", "因为", "刚才",
)  # fmt: skip
STOP_CHARS = frozenset(
    "我你他她它们的了是在住想要打就说也和跟今这那电手反投咨因现年岁啊呀吧呢嘛哦嗯呃喂哈么"
    "从给到去对还都很不没吗呐哎诶噢一二三四五六七八九十个"
)
# Words after 我是 that name a role, not a person (房东 starts with the surname 房).
NOT_NAMES = (
    "房东", "车主", "商家", "党员", "包工", "单位", "司机", "甲方", "乙方", "师傅", "明天",
    "周末", "周边", "高兴", "关于", "应该", "方便", "简单", "单身", "单亲", "安全", "常住",
)  # fmt: skip
PLACE_SUFFIXES = frozenset("省市区县镇乡村路街道巷弄")
_SPACES = " \t　"
_BETWEEN = frozenset("，,、。叫是" + _SPACES)


def _is_cjk(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff"


def _surname_at(text: str, i: int) -> str | None:
    for compound in COMPOUND_SURNAMES:
        if text.startswith(compound, i):
            return compound
    if i < len(text) and text[i] in SINGLE_SURNAMES:
        return text[i]
    return None


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i] in _SPACES:
        i += 1
    return i


def _given_name_end(text: str, i: int, limit: int = 2) -> int:
    """Where a given name starting at ``i`` ends (up to ``limit`` characters)."""
    end = i
    while end < len(text) and end - i < limit:
        c = text[end]
        if not _is_cjk(c) or c in STOP_CHARS or c in PLACE_SUFFIXES:
            break
        if any(text.startswith(w, end) for w in CLAUSE_WORDS):
            break
        if text.startswith(TITLES, end):
            break
        end += 1
    return end


def _title_at(text: str, i: int) -> str | None:
    for title in TITLES:
        if text.startswith(title, i):
            return title
    return None


def _full_name(text: str, i: int, gazetteer: Gazetteer, strict: bool) -> tuple[str, int] | None:
    """A surname plus title or given name at ``i``: (name, end) or None."""
    surname = _surname_at(text, i)
    if surname is None:
        return None
    after = i + len(surname)
    title = _title_at(text, after)
    if title is not None:
        return surname + title, after + len(title)
    end = _given_name_end(text, after)
    if end == after:
        return None
    name = text[i:end]
    if any(name.startswith(w) for w in NOT_NAMES):
        return None
    if end < len(text) and text[end] in PLACE_SUFFIXES:
        return None  # 萧山区, 余杭区: a place, not a person
    if gazetteer.place_at(text, i) is not None:
        return None
    if strict and end < len(text) and text[end] in "的人":
        return None  # 我是王明的家属: someone else's name; 我是金华人: a place
    return name, end


def before(name: FieldValue | None, text: str, boundary: int | None) -> FieldValue | None:
    """``name`` cut where another field's words start (``boundary``): in
    我叫马龙有三八... Whisper wrote 有 for 幺, which begins the phone number,
    not the name. A name left with only its surname is dropped."""
    if name is None or boundary is None:
        return name
    (evidence,) = name.evidence[:1]
    if not evidence.start < boundary < evidence.end:
        return name
    surname = _surname_at(text, evidence.start)
    if surname is None or boundary - evidence.start <= len(surname):
        return None
    return FieldValue(
        text[evidence.start : boundary], (Evidence.of(text, evidence.start, boundary),), name.source
    )


def caller_name(text: str, gazetteer: Gazetteer) -> FieldValue | None:
    """The first name the caller gives for themself."""
    return _first_name(text, gazetteer, _NAME_CUES, _SURNAME_CUES)


def beneficiary_name(text: str, gazetteer: Gazetteer) -> FieldValue | None:
    """The name of the person a relative reports for (亲友代办): 老人叫张秀英,
    我母亲的名字是..., 她姓王; 名字叫 / 姓名是 also count (said of the person)."""
    return _first_name(text, gazetteer, _BENEFICIARY_CUES, _BENEFICIARY_SURNAME_CUES)


def _first_name(
    text: str, gazetteer: Gazetteer, name_cues: re.Pattern[str], surname_cues: re.Pattern[str]
) -> FieldValue | None:
    found: list[tuple[int, str, int, int]] = []  # (cue start, name, start, end)
    for m in name_cues.finditer(text):
        start = _skip_spaces(text, m.end())
        strict = m.group() in _STRICT_CUES or (
            name_cues is _BENEFICIARY_CUES and m.group().endswith("是")
        )
        got = _full_name(text, start, gazetteer, strict)
        if got is not None:
            found.append((m.start(), got[0], start, got[1]))
    for m in surname_cues.finditer(text):
        start = _skip_spaces(text, m.end())
        surname = _surname_at(text, start)
        if surname is None:
            continue
        end = start + len(surname)
        value = surname
        title = _title_at(text, end)
        if title is not None:
            value, end = surname + title, end + len(title)
        else:
            # 我姓王，王先生 / 我姓王叫王伟: the surname said again, with more
            j = end
            while j < len(text) and j - end < 3 and text[j] in _BETWEEN:
                j += 1
            again = _full_name(text, j, gazetteer, False) if text.startswith(surname, j) else None
            if again is not None:
                value, end = again
        found.append((m.start(), value, start, end))
    if not found:
        return None
    _, name, start, end = min(found)
    return FieldValue(name, (Evidence.of(text, start, end),), SPEECH)
