"""The address (地址) as said, in the order addresses are said in Chinese:
省 市 区/县 街道/镇/乡 路/街/大道/巷/弄 号 小区/社区/花园/苑/家园/新村 栋/幢/号楼 单元 室.

Places of the gazetteer (its districts, streets and listed roads) are
recognised by name, alias or sound (温山路 -> 文三路); the rest by their
suffix (胜利路 where the gazetteer does not list it, 大关小区).  A listed road
is taken only where its name starts a word: at the start, after punctuation,
a cue, another place, or a character never inside a name (新文三路 is not
文三路, 医学院路过 names no road).  An address starts at a gazetteer place,
after a cue (住在, 家住, 地址是, 在 ...), or at a road or estate followed by
a house or building number; it goes on while each next part is finer than
the last, allowing small fillers between parts (的, 那个, a comma).  Numbers
are normalised to Arabic digits: 三幢 -> 3幢, 五零一室 -> 501室, 一百零八号 ->
108号, 二十三号楼 -> 23号楼; a bare number after a unit is a room (501 -> 501室).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ivr.prefill.chinese_numbers import ADDRESS_NUMERAL_CHARS, to_arabic
from ivr.prefill.gazetteer import Gazetteer, PlaceMatch

PROVINCE, CITY, DISTRICT, STREET, ROAD, NUMBER = (
    "province", "city", "district", "street", "road", "number",
)  # fmt: skip
COMMUNITY, BUILDING, UNIT, ROOM = "community", "building", "unit", "room"
RANK = {
    PROVINCE: 0, CITY: 1, DISTRICT: 2, STREET: 3, ROAD: 4, NUMBER: 5,
    COMMUNITY: 6, BUILDING: 7, UNIT: 8, ROOM: 9,
}  # fmt: skip

# Suffixes of place names the gazetteer does not list, longest first where
# two start at the same character.
SUFFIXES: tuple[tuple[str, str], ...] = (
    ("街道", STREET), ("大道", ROAD), ("小区", COMMUNITY), ("社区", COMMUNITY),
    ("花园", COMMUNITY), ("家园", COMMUNITY), ("新村", COMMUNITY), ("公寓", COMMUNITY),
    ("苑", COMMUNITY), ("村", COMMUNITY), ("路", ROAD), ("街", ROAD), ("巷", ROAD),
    ("弄", ROAD), ("镇", STREET), ("乡", STREET), ("区", DISTRICT), ("县", DISTRICT),
)  # fmt: skip
_SUFFIX_STARTS = frozenset(s[0] for s, _ in SUFFIXES)
# Estate suffixes that may follow an estate's name: 翠苑|小区, 景芳|三区, 新城|二期.
ESTATE_TAILS = ("小区", "社区", "花园", "家园", "新村", "公寓")
MIN_NAME = {"苑": 1}  # name characters before the suffix (others: 2)
MAX_NAME = 7
MAX_ROAD_NAME = 5  # 天目山路, 文一西路; a longer "road" is a sentence ending in 跑路
# Characters that never occur inside a place name the way callers say them.
STOP = frozenset(
    "的了在是我你他她它们这那个吗呢吧啊呀哦嗯呃么说就都也还很没不想要请给把被让到去从有"
    "与及或但而又再已时候号栋幢室单住里"
)
# Characters that may be inside a name but do not start one found without a cue
# (门口延安路100号 is 延安路, not 门口延安路).
WEAK_START = frozenset("和跟对往向边旁附近面前后左右上下门口楼外内中间条座")
CUES = re.compile(r"住在|家住|住址是|住址|地址是|地址在|地址|位于|是在|(?<![现正还实存所好自不])在")
# Words of place after a cue that are not part of the address (在门口延安路100号).
LOCATIVES = (
    "门口", "旁边", "对面", "附近", "隔壁", "楼下", "楼上", "里面", "外面", "前面",
    "后面", "边上", "这边", "那边", "这里", "那里",
)  # fmt: skip
# Last characters of place names: a listed road may follow one directly
# (翠苑一区文三路, 大关小区旁).
NAME_ENDS = frozenset("省市区县镇乡道村园苑寓路街巷弄")
FILLERS = ("那个", "这个", "就是", "的", "，", ",", "、", "呃", "嗯", "啊", " ", "　", "\t")
FILLER_REACH = 4

_N = re.escape(ADDRESS_NUMERAL_CHARS)
_NUMBERED = re.compile(rf"([{_N}]+)\s*(号楼|号房|单元|号|栋|幢|座|楼|室|房)")
_NUMBERED_KIND = {
    "号楼": BUILDING, "栋": BUILDING, "幢": BUILDING, "座": BUILDING, "楼": BUILDING,
    "单元": UNIT, "号": NUMBER, "室": ROOM, "号房": ROOM, "房": ROOM,
}  # fmt: skip
_DIGITS_ONLY = "0123456789０１２３４５６７８９零〇一二三四五六七八九幺"
_BARE_ROOM = re.compile(rf"[{_DIGITS_ONLY}]{{3,4}}(?![{_N}号楼栋幢单室房])")
_ESTATE_NUMBER = re.compile(rf"[{_N}]{{1,3}}[区期]")


@dataclass(frozen=True)
class Part:
    kind: str
    value: str  # normalised
    start: int
    end: int
    district: str | None = None  # the gazetteer district of a district or street


@dataclass(frozen=True)
class Address:
    parts: tuple[Part, ...]

    @property
    def start(self) -> int:
        return self.parts[0].start

    @property
    def end(self) -> int:
        return self.parts[-1].end

    @property
    def value(self) -> str:
        return "".join(p.value for p in self.parts)

    def as_dict(self) -> dict[str, str]:
        return {p.kind: p.value for p in self.parts}

    def is_address(self) -> bool:
        """Fine enough to find a door: a street, road or estate, or two
        numbered parts (3号楼2单元).  A district alone is not an address."""
        kinds = {p.kind for p in self.parts}
        if kinds & {STREET, ROAD, COMMUNITY}:
            return True
        return sum(RANK[k] >= RANK[NUMBER] for k in kinds) >= 2


@dataclass(frozen=True)
class _Generic:
    kind: str
    end: int
    name_end: int  # where the suffix starts


def _is_cjk(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff"


def _estate_tail(text: str, i: int) -> int:
    """Absorb what may follow an estate's name: 翠苑|小区, 景芳|三区."""
    while True:
        tail = next((t for t in ESTATE_TAILS if text.startswith(t, i)), None)
        if tail is not None:
            i += len(tail)
            continue
        m = _ESTATE_NUMBER.match(text, i)
        if m is not None:
            i = m.end()
            continue
        return i


def generic_at(text: str, p: int, *, weak_start_ok: bool) -> _Generic | None:
    """A place name ending with a suffix (文三路, 大关小区, 朝阳区) at ``p``."""
    if p >= len(text) or (not weak_start_ok and text[p] in WEAK_START):
        return None
    i = p
    while i < len(text) and i - p <= MAX_NAME:
        if i - p >= 2 and text[i] in ADDRESS_NUMERAL_CHARS:
            estate = _ESTATE_NUMBER.match(text, i)
            if estate is not None:  # 景芳三区, 新城二期
                return _Generic(COMMUNITY, _estate_tail(text, estate.end()), i)
        for suffix, kind in SUFFIXES if text[i] in _SUFFIX_STARTS else ():
            if text.startswith(suffix, i) and i - p >= MIN_NAME.get(suffix, 2):
                end = i + len(suffix)
                if kind == COMMUNITY:
                    end = _estate_tail(text, end)
                if (kind == DISTRICT and i - p > 4) or (kind == ROAD and i - p > MAX_ROAD_NAME):
                    return None
                return _Generic(kind, end, i)
        c = text[i]
        if not _is_cjk(c) or c in STOP:
            return None
        i += 1
    return None


def find_places(text: str, gazetteer: Gazetteer) -> list[PlaceMatch]:
    """Gazetteer places in ``text``, left to right, not overlapping, with an
    alias dropped where it only starts a longer name (余杭塘路, 西湖大道) and
    a road where it only ends one (美院路 is not 学院路)."""
    found: list[PlaceMatch] = []
    matches = gazetteer.matches(text)
    word_ends = {m.end for m in matches.values()} | {c.end() for c in CUES.finditer(text)}
    end = 0
    for start in sorted(matches):
        if start < end:
            continue
        m = _checked(text, matches[start], word_ends)
        if m is not None:
            found.append(m)
            end = m.end
    return found


def _starts_a_word(text: str, i: int, word_ends: set[int]) -> bool:
    """Whether a name at ``i`` stands on its own rather than ending a longer one."""
    if i == 0 or i in word_ends:
        return True
    c = text[i - 1]
    return not _is_cjk(c) or c in STOP or c in WEAK_START or c in NAME_ENDS


def _checked(text: str, m: PlaceMatch, word_ends: set[int]) -> PlaceMatch | None:
    if m.place.level == ROAD:
        return m if _starts_a_word(text, m.start, word_ends) else None
    if m.how != "alias":
        return m
    g = generic_at(text, m.start, weak_start_ok=True)
    if g is not None and g.kind in (ROAD, COMMUNITY, STREET) and g.name_end - m.end <= 1:
        return None
    return m


def _skip_fillers(text: str, i: int) -> int:
    start = i
    moved = True
    while moved and i - start < FILLER_REACH:
        moved = False
        for f in FILLERS:
            if text.startswith(f, i):
                i += len(f)
                moved = True
                break
    return i


def _part_at(
    text: str,
    q: int,
    places: dict[int, PlaceMatch],
    last: Part | None,
    *,
    weak_start_ok: bool,
) -> Part | None:
    last_rank = RANK[last.kind] if last is not None else -1
    place = places.get(q)
    if place is not None:
        kind = place.place.level
        if RANK[kind] <= last_rank:
            return None
        return Part(kind, place.place.name, q, place.end, place.place.district)
    m = _NUMBERED.match(text, q)
    if m is not None:
        kind = _NUMBERED_KIND[m.group(2)]
        if RANK[kind] <= last_rank:
            return None
        return Part(kind, to_arabic(m.group(1)) + m.group(2), q, m.end())
    if last is not None and last.kind in (BUILDING, UNIT):
        bare = _BARE_ROOM.match(text, q)
        if bare is not None:
            return Part(ROOM, to_arabic(bare.group()) + "室", q, bare.end())
    g = generic_at(text, q, weak_start_ok=weak_start_ok)
    if g is None or RANK[g.kind] <= last_rank:
        return None
    if g.kind == ROAD and any(
        (inner := places.get(i)) is not None and inner.place.level == ROAD and inner.end == g.end
        for i in range(q + 1, g.name_end)
    ):
        return None  # 门前文三路: the listed road 文三路, not a road called 门前文三路
    return Part(g.kind, text[q : g.end], q, g.end)


def _chain(
    text: str, p: int, places: dict[int, PlaceMatch], *, weak_start_ok: bool
) -> Address | None:
    parts: list[Part] = []
    pos = p
    while True:
        q = _skip_fillers(text, pos) if parts else pos
        part = _part_at(
            text,
            q,
            places,
            parts[-1] if parts else None,
            weak_start_ok=weak_start_ok or bool(parts),
        )
        if part is None:
            break
        parts.append(part)
        pos = part.end
    return Address(tuple(parts)) if parts else None


def find_address(text: str, gazetteer: Gazetteer) -> Address | None:
    """The most detailed address said (the first of equally detailed ones)."""
    places = {m.start: m for m in find_places(text, gazetteer)}
    starts: dict[int, bool] = {}  # start -> found after a cue
    for start in places:
        starts[start] = True
    for m in CUES.finditer(text):
        q = m.end()
        moved = True
        while moved:
            moved = False
            while q < len(text) and text[q] in " 　:：":
                q += 1
            for word in LOCATIVES:
                if text.startswith(word, q):
                    q += len(word)
                    moved = True
        starts[q] = True
    chains: list[Address] = []
    covered = 0
    for p in range(len(text)):
        if p < covered:
            continue
        cued = starts.get(p, False)
        if cued:
            chain = _chain(text, p, places, weak_start_ok=True)
        else:
            c = text[p]
            numeral = c in ADDRESS_NUMERAL_CHARS
            if not numeral and (not _is_cjk(c) or c in STOP or c in WEAK_START):
                continue
            if numeral and p > 0 and text[p - 1] in ADDRESS_NUMERAL_CHARS:
                continue
            chain = _chain(text, p, places, weak_start_ok=False)
            # found without a cue: a road or estate followed by a number, or a
            # building followed by its unit (三号楼二单元)
            if chain is None or len(chain.parts) < 2:
                continue
            first, second = chain.parts[0].kind, chain.parts[1].kind
            if not (
                (first in (ROAD, COMMUNITY) and second in (NUMBER, BUILDING))
                or (first == BUILDING and second == UNIT)
            ):
                continue
        if chain is None:
            continue
        chains.append(chain)
        covered = chain.end
    best: Address | None = None
    for chain in chains:
        if chain.is_address() and (best is None or len(chain.parts) > len(best.parts)):
            best = chain
    return best
