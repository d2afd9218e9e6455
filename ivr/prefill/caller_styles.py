"""Callers' ways of saying a situation: the second procedure that writes the
classifier's training data (issue 15 item 5).

``ivr/prefill/training/situations.tsv`` lists situations per category and
urgency level, written from the categories' and urgency levels' descriptions
(tests/data/unseen/taxonomy_descriptions.md), each a plain first-person
sentence.  Each situation is said here in ``RENDERINGS`` ways, each a
combination of speaker styles picked from the situation's text (so the same
file always gives the same utterances, and the style does not depend on the
label):

- an opening (喂，你好 / 那个，嗯 / 是12345吗 ...) or none;
- the caller or someone calling for them (帮我妈打的 ...);
- a dialect flavour: 粤语, 吴语, 川渝 or 东北 words put in for Mandarin ones,
  or plain Mandarin;
- numbers as words (三天) or as Whisper writes them (3天);
- a closing (你们帮忙看看 / 谢谢 ...) or none.

Every rendering of one situation carries its ``group`` (the situation's line),
so cross-validation keeps them in one fold: a model is never scored on a
situation it was trained on in another style."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ivr.prefill.chinese_numbers import to_arabic
from ivr.prefill.data_files import tsv_rows

SITUATIONS = Path(__file__).resolve().parent / "training" / "situations.tsv"
HEADER = ["category", "urgency", "situation"]
RENDERINGS = 2

OPENINGS = (
    "",
    "喂，你好，",
    "你好，",
    "那个，嗯，",
    "喂，是12345吗？",
    "你好，我想反映个事，",
    "哎，",
)
# (who calls for the caller, what "my home" becomes): used on a situation that
# starts with 我家 or 家里
CALLERS = (
    ("", ""),
    ("我是帮我妈打的，", "她家"),
    ("我替我们楼里的邻居打的，", "他家"),
    ("我是帮我外婆问的，", "她家"),
    ("我帮我爸打的，他说不清楚，", "他家"),
)
CLOSINGS = (
    "",
    "，你们帮忙看看",
    "，谢谢啊",
    "，这个事归谁管啊",
    "，麻烦你们处理一下",
    "，就这个事",
)
# (name, Mandarin -> dialect word), applied in order
DIALECTS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("普通话", ()),
    (
        "粤语",
        (
            ("这个", "呢个"),
            ("我们", "我哋"),
            ("他们", "佢哋"),
            ("没有", "冇"),
            ("没", "冇"),
            ("现在", "而家"),
            ("今天", "今日"),
            ("什么", "乜嘢"),
            ("不", "唔"),
            ("是", "係"),
            ("的", "嘅"),
            ("在", "喺"),
            ("家里", "屋企"),
        ),
    ),
    (
        "吴语",
        (
            ("我们", "阿拉"),
            ("我家", "阿拉屋里"),
            ("家里", "屋里厢"),
            ("你们", "侬"),
            ("今天", "今朝"),
            ("什么", "啥"),
            ("不", "勿"),
            ("的", "额"),
            ("很", "老"),
        ),
    ),
    (
        "川渝",
        (
            ("家里", "屋头"),
            ("什么", "啥子"),
            ("怎么", "咋个"),
            ("孩子", "娃儿"),
            ("没有", "莫得"),
            ("知道", "晓得"),
            ("很", "好"),
            ("吗", "嘛"),
        ),
    ),
    (
        "东北",
        (
            ("怎么办", "咋整"),
            ("怎么", "咋"),
            ("干什么", "嘎哈"),
            ("什么", "啥"),
            ("这里", "这嘎达"),
            ("我们", "咱们"),
            ("很", "贼"),
            ("特别", "老"),
        ),
    ),
)
# a Chinese number before a measure word (三天, 十二点, 两个): said as digits in some renderings
NUMERAL = "零一二两三四五六七八九十百"
MEASURE = "天个号楼点岁块度月年层栋户次小分公趟万"
NUMBER = re.compile(f"(?<![几{NUMERAL}])[{NUMERAL}]+(?=[{MEASURE}])")


@dataclass(frozen=True)
class Situation:
    line: int  # in situations.tsv
    category: str
    urgency: str
    text: str


@dataclass(frozen=True)
class Utterance:
    id: str
    transcript: str
    category: str
    urgency: str
    group: str  # the situation it says (renderings of one situation share it)
    style: str


def read_situations(path: Path = SITUATIONS) -> list[Situation]:
    """The situations TSV; a bad line raises ValueError naming ``file:line``."""
    return [
        Situation(number, cells[0], cells[1], cells[2])
        for number, cells in tsv_rows(path, HEADER, 2, "a situation")
    ]


def digits(text: str) -> str:
    """Chinese numbers before a measure word as Arabic digits (三天 -> 3天)."""

    def one(match: re.Match[str]) -> str:
        said = match.group(0)
        if said == "一" or (said == "两" and text[match.end()] in "个次趟"):
            return said  # 一天 / 两个 stay words, as Whisper mostly writes them
        return to_arabic(said)

    return NUMBER.sub(one, text)


def _pick(key: str, options: Sequence[str]) -> str:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def _flavoured(text: str, dialect: str) -> str:
    for plain, flavoured in dict(DIALECTS)[dialect]:
        text = text.replace(plain, flavoured)
    return text


def say(situation: Situation, rendering: int) -> tuple[str, str]:
    """(utterance, style) of one rendering of ``situation``."""
    key = f"{situation.text}|{rendering}"
    dialect_names = [name for name, _ in DIALECTS]
    dialect = _pick(key + "|dialect", dialect_names)
    text = _flavoured(situation.text, dialect)
    as_digits = _pick(key + "|digits", ("words", "digits")) == "digits"
    if as_digits:
        text = digits(text)
    caller, home = CALLERS[int(_pick(key + "|caller", [str(i) for i in range(len(CALLERS))]))]
    for mine in ("我家", "家里"):
        if caller and situation.text.startswith(mine):
            text = home + text[len(_flavoured(mine, dialect)) :]
            break
    else:
        caller = ""
    utterance = (
        _pick(key + "|opening", OPENINGS) + caller + text + _pick(key + "|closing", CLOSINGS)
    )
    style = f"{dialect}, {'digits' if as_digits else 'words'}{', for someone' if caller else ''}"
    return utterance, style


def utterances(situations: Sequence[Situation] | None = None) -> list[Utterance]:
    """Every situation said ``RENDERINGS`` ways (ids S<line>-<rendering>)."""
    situations = read_situations() if situations is None else situations
    out = []
    for situation in situations:
        seen: set[str] = set()
        for rendering in range(RENDERINGS):
            text, style = say(situation, rendering)
            if text in seen:
                continue
            seen.add(text)
            out.append(
                Utterance(
                    f"S{situation.line:03d}-{rendering}",
                    text,
                    situation.category,
                    situation.urgency,
                    f"S{situation.line:03d}",
                    style,
                )
            )
    return out
