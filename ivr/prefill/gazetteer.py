"""The deployment's places (gazetteer.toml): its province and city, the
city's districts (区/县), their streets (街道/镇/乡) and roads (路/街/大道/
巷/弄), and aliases callers use (西湖 -> 西湖区, 江干区 -> 上城区 after the
2021 merger).

Names are found as written, and also by sound when Whisper wrote a
homophone before a place suffix (宾江区 -> 滨江区, 肖山区 -> 萧山区, 温山路 ->
文三路): the toneless pinyin must agree syllable by syllable, with the
initials and finals southern speakers merge (zh/z, ch/c, sh/s, l/n, -ng/-n)
counted as the same; the suffix itself must be written exactly.  Where two
listed names sound alike, the one closer to what was written wins (more
characters the same, then more syllables the same before folding).

A road may run through several districts: it tells the district only when
the file lists it under one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from pypinyin import Style, pinyin

from ivr.prefill.data_files import error, line_of, read_toml, string_list, table_line

PROVINCE = "province"
CITY = "city"
DISTRICT = "district"
STREET = "street"
ROAD = "road"

DISTRICT_SUFFIXES = ("自治县", "区", "县", "市", "旗")
STREET_SUFFIXES = ("街道", "镇", "乡")
ROAD_SUFFIXES = ("大道", "路", "街", "巷", "弄")  # 大道 before any shorter suffix
# A road's suffix followed by these is part of another word: 文三街道 is a
# street, not 文三街.
NOT_ROAD_ENDINGS = ("街道",)
# Words a heard road suffix may start that are not the end of a road name
# (学院路过 is "passing the college"; 弄坏 "broke"): a road is not taken by
# sound there, only as written.
WORDS_AFTER_NOT_ROADS = (
    "路过", "路费", "路线", "路程", "路人", "路子", "路数",
    "弄坏", "弄好", "弄丢", "弄脏", "弄得", "弄了", "弄清", "弄错",
)  # fmt: skip


@dataclass(frozen=True)
class Place:
    name: str  # canonical, e.g. 西湖区
    level: str  # province, city, district, street or road
    # the district a street belongs to (a district's own name); for a road,
    # its district when the file lists it under exactly one, else None
    district: str | None = None


@dataclass(frozen=True)
class PlaceMatch:
    place: Place
    start: int
    end: int
    how: str  # "name", "alias" or "sound"


@dataclass(frozen=True)
class _Sound:
    syllables: tuple[frozenset[str], ...]  # loose readings of each character of base
    exact: tuple[frozenset[str], ...]  # toneless readings before folding
    base: str
    suffix: str
    place: Place


def loose(syllable: str) -> str:
    """A toneless pinyin syllable with the distinctions many speakers (and
    Whisper's guesses) lose: zh/z, ch/c, sh/s, l/n, -ang/-an, -eng/-en, -ing/-in."""
    s = syllable.lower()
    for hard, soft in (("zh", "z"), ("ch", "c"), ("sh", "s")):
        if s.startswith(hard):
            s = soft + s[2:]
            break
    if s.startswith("l"):
        s = "n" + s[1:]
    if s.endswith("ng") and not s.endswith("ong"):
        s = s[:-1]
    return s


def toneless(char: str) -> frozenset[str]:
    """Every toneless pinyin reading of one character (empty for non-Han)."""
    if not "\u4e00" <= char <= "\u9fff":
        return frozenset()
    got = pinyin(char, style=Style.NORMAL, heteronym=True, errors="ignore")
    return frozenset(p.lower() for group in got for p in group)


def readings(char: str) -> frozenset[str]:
    """Every loose toneless reading of one character (empty for non-Han)."""
    return frozenset(loose(p) for p in toneless(char))


def suffix_of(name: str, suffixes: tuple[str, ...]) -> str | None:
    """The first of ``suffixes`` that ``name`` ends with."""
    return next((s for s in suffixes if name.endswith(s)), None)


def _sound_of(place: Place) -> _Sound | None:
    """How a district, street or road is matched by sound (None: by name only,
    e.g. a one-character name before its suffix)."""
    suffixes = {DISTRICT: DISTRICT_SUFFIXES, STREET: STREET_SUFFIXES, ROAD: ROAD_SUFFIXES}
    if place.level not in suffixes:
        return None
    suffix = suffix_of(place.name, suffixes[place.level])
    if suffix is None:
        return None
    base = place.name[: -len(suffix)]
    if len(base) < 2:
        return None
    return _Sound(
        tuple(readings(c) for c in base), tuple(toneless(c) for c in base), base, suffix, place
    )


def _closeness(sound: _Sound, heard: str, exact: dict[str, frozenset[str]]) -> tuple[int, int]:
    """How near ``heard`` is to ``sound.base``: characters the same, then
    syllables the same before the loose folds."""
    same = sum(a == b for a, b in zip(sound.base, heard, strict=True))
    for c in heard:
        if c not in exact:
            exact[c] = toneless(c)
    syllables = sum(bool(want & exact[c]) for want, c in zip(sound.exact, heard, strict=True))
    return same, syllables


@dataclass(frozen=True)
class Gazetteer:
    province: str | None
    city: str | None
    area_code: str | None
    districts: tuple[str, ...]
    streets: Mapping[str, str]  # street -> its district
    roads: Mapping[str, tuple[str, ...]]  # road -> every district it is listed under
    aliases: Mapping[str, str]  # alias -> canonical name
    source: str = ""
    _by_first: Mapping[str, tuple[tuple[str, Place, str], ...]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    # suffix -> the names that end with it, matched by sound
    _sounds: Mapping[str, tuple[_Sound, ...]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    @staticmethod
    def build(
        *,
        province: str | None,
        city: str | None,
        area_code: str | None = None,
        districts: Mapping[str, tuple[str, ...]],
        district_roads: Mapping[str, tuple[str, ...]] | None = None,
        aliases: Mapping[str, str] | None = None,
        source: str = "",
    ) -> Gazetteer:
        """A gazetteer from names (``districts``: district -> its streets;
        ``district_roads``: district -> the roads that run through it)."""
        places: dict[str, Place] = {}
        if province:
            places[province] = Place(province, PROVINCE)
        if city:
            places[city] = Place(city, CITY)
        streets: dict[str, str] = {}
        for district, its_streets in districts.items():
            places[district] = Place(district, DISTRICT, district)
            for street in its_streets:
                places[street] = Place(street, STREET, district)
                streets[street] = district
        roads: dict[str, tuple[str, ...]] = {}
        for district, its_roads in (district_roads or {}).items():
            for road in its_roads:
                if district not in roads.get(road, ()):
                    roads[road] = (*roads.get(road, ()), district)
        for road, road_districts in roads.items():
            only = road_districts[0] if len(road_districts) == 1 else None
            places[road] = Place(road, ROAD, only)
        alias_map = dict(aliases or {})
        surfaces: list[tuple[str, Place, str]] = [(n, p, "name") for n, p in places.items()]
        surfaces += [(a, places[target], "alias") for a, target in alias_map.items()]
        by_first: dict[str, list[tuple[str, Place, str]]] = {}
        for entry in surfaces:
            by_first.setdefault(entry[0][0], []).append(entry)
        frozen = {
            k: tuple(sorted(v, key=lambda e: len(e[0]), reverse=True)) for k, v in by_first.items()
        }
        sounds: dict[str, list[_Sound]] = {}
        for place in places.values():
            sound = _sound_of(place)
            if sound is not None:
                sounds.setdefault(sound.suffix, []).append(sound)
        return Gazetteer(
            province=province,
            city=city,
            area_code=area_code,
            districts=tuple(districts),
            streets=MappingProxyType(streets),
            roads=MappingProxyType(roads),
            aliases=MappingProxyType(alias_map),
            source=source,
            _by_first=MappingProxyType(frozen),
            _sounds=MappingProxyType({k: tuple(v) for k, v in sounds.items()}),
        )

    def district_of(self, place: Place) -> str | None:
        """The district a place tells: its own, a street's, or a road's when
        the road is listed under one district only."""
        return place.district if place.level in (DISTRICT, STREET, ROAD) else None

    def place_at(self, text: str, i: int) -> PlaceMatch | None:
        """The longest place name or alias written at ``i``."""
        if i >= len(text):
            return None
        for surface, place, how in self._by_first.get(text[i], ()):
            if text.startswith(surface, i):
                end = i + len(surface)
                if place.level == ROAD and _ends_another_word(text, end - 1, NOT_ROAD_ENDINGS):
                    continue
                return PlaceMatch(place, i, end, how)
        return None

    def matches(self, text: str) -> dict[int, PlaceMatch]:
        """For each position where a place starts: the longest one, written
        (name or alias) or, failing that, sounding like a district, street or
        road followed by its suffix.  A road is not taken by sound where it
        overlaps a name written as listed, nor before words like 路过."""
        found: dict[int, PlaceMatch] = {}
        for i, c in enumerate(text):
            if c in self._by_first:
                m = self.place_at(text, i)
                if m is not None:
                    found[i] = m
        written = [(m.start, m.end) for m in found.values() if m.how == "name"]
        cache: dict[str, frozenset[str]] = {}
        exact: dict[str, frozenset[str]] = {}

        def read(c: str) -> frozenset[str]:
            if c not in cache:
                cache[c] = readings(c)
            return cache[c]

        # start -> (end, closeness, match): the longest, then the closest
        heard_as: dict[int, tuple[int, tuple[int, int], PlaceMatch]] = {}
        for suffix, sounds in self._sounds.items():
            at = text.find(suffix, 1)
            while at != -1:
                end = at + len(suffix)
                for sound in sounds:
                    start = at - len(sound.base)
                    if start < 0 or not _free(found.get(start), sound.place, end):
                        continue
                    heard = text[start:at]
                    if heard == sound.base or not all(
                        want & read(c) for want, c in zip(sound.syllables, heard, strict=True)
                    ):
                        continue
                    if sound.place.level == ROAD and (
                        _ends_another_word(text, at, NOT_ROAD_ENDINGS + WORDS_AFTER_NOT_ROADS)
                        or any(s < end and start < e for s, e in written)
                    ):
                        continue
                    rank = (end, _closeness(sound, heard, exact))
                    if start not in heard_as or rank > heard_as[start][:2]:
                        heard_as[start] = (*rank, PlaceMatch(sound.place, start, end, "sound"))
                at = text.find(suffix, at + 1)
        for start, (_, _, m) in heard_as.items():
            found[start] = m
        return found


def _free(written: PlaceMatch | None, place: Place, end: int) -> bool:
    """Whether a name heard by sound may start where ``written`` does: where
    nothing is written, or a road where only an alias starts its name (余杭堂路
    is 余杭塘路, not the alias 余杭 of 余杭区)."""
    if written is None:
        return True
    return place.level == ROAD and written.how == "alias" and written.end < end


def _ends_another_word(text: str, at: int, words: tuple[str, ...]) -> bool:
    """Whether the suffix at ``at`` starts one of ``words``."""
    return any(text.startswith(w, at) for w in words)


_TOP_KEYS = {"province", "city", "area_code", "aliases", "district"}
_DISTRICT_KEYS = {"name", "aliases", "streets", "roads"}


def _line_of_occurrence(text: str, needle: str, nth: int, *, after: int) -> int | None:
    """The line of the ``nth`` (0-based) occurrence of ``needle`` outside
    comments at or after line ``after``."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if number < after:
            continue
        seen += line.split("#", 1)[0].count(needle)
        if seen > nth:
            return number
    return None


def load_gazetteer(path: Path) -> Gazetteer:
    """Read and check a gazetteer file (format: see gazetteer.toml)."""
    data, text = read_toml(path)
    for key in data:
        if key not in _TOP_KEYS:
            raise error(
                path, line_of(text, key), f"unknown key {key!r} (known: {sorted(_TOP_KEYS)})"
            )
    names: dict[str, int | None] = {}  # every name and alias but roads -> its line
    road_lines: dict[str, int | None] = {}  # every road -> the line it is first listed on

    def claim(name: str, line: int | None, what: str) -> None:
        if name in names:
            raise error(path, line, f"{what} {name!r} is listed twice (also line {names[name]})")
        if name in road_lines:
            raise error(
                path, line, f"{what} {name!r} is also listed as a road (line {road_lines[name]})"
            )
        names[name] = line

    def text_value(key: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise error(path, line_of(text, key), f"{key} must be a non-empty string")
        return value.strip()

    province = text_value("province")
    city = text_value("city")
    area_code = text_value("area_code")
    if area_code is not None and not (
        area_code.isdigit() and area_code.startswith("0") and 3 <= len(area_code) <= 4
    ):
        raise error(
            path, line_of(text, "area_code"), f"area_code {area_code!r} is not like 0571 or 010"
        )
    for key, value in (("province", province), ("city", city)):
        if value is not None:
            claim(value, line_of(text, key), key)

    tables = data.get("district", [])
    if not isinstance(tables, list) or not tables:
        raise error(path, None, "no districts: add [[district]] tables with name and streets")
    districts: dict[str, tuple[str, ...]] = {}
    district_roads: dict[str, tuple[str, ...]] = {}
    aliases: dict[str, str] = {}
    for index, table in enumerate(tables):
        at = table_line(text, "district", index)
        if not isinstance(table, dict):
            raise error(path, at, "a [[district]] entry must be a table")
        for key in table:
            if key not in _DISTRICT_KEYS:
                raise error(
                    path,
                    line_of(text, key, after=at or 0),
                    f"unknown key {key!r} in [[district]] (known: {sorted(_DISTRICT_KEYS)})",
                )
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            raise error(path, at, '[[district]] needs name = "...区"')
        name = name.strip()
        line = line_of(text, f'"{name}"', after=at or 0)
        if not name.endswith(DISTRICT_SUFFIXES):
            raise error(path, line, f"district {name!r} must end with one of {DISTRICT_SUFFIXES}")
        claim(name, line, "district")
        streets = string_list(table.get("streets", []))
        if streets is None:
            raise error(
                path, line_of(text, "streets", after=at or 0), f"{name}: streets must be strings"
            )
        for street in streets:
            street_line = line_of(text, f'"{street}"', after=at or 0)
            if not street.endswith(STREET_SUFFIXES):
                raise error(
                    path, street_line, f"street {street!r} must end with one of {STREET_SUFFIXES}"
                )
            claim(street, street_line, "street")
        districts[name] = tuple(streets)
        roads = string_list(table.get("roads", []))
        if roads is None:
            raise error(
                path, line_of(text, "roads", after=at or 0), f"{name}: roads must be strings"
            )
        its_roads: dict[str, int | None] = {}
        for road in roads:
            nth = 1 if road in its_roads else 0  # a repeat: the line of the second
            road_line = _line_of_occurrence(text, f'"{road}"', nth, after=at or 0)
            suffix = suffix_of(road, ROAD_SUFFIXES)
            if suffix is None or len(road) == len(suffix):
                raise error(
                    path,
                    road_line,
                    f"road {road!r} must be a name ending with one of {ROAD_SUFFIXES} "
                    "(streets, ending with 街道, 镇 or 乡, go in streets)",
                )
            if road in its_roads:
                raise error(
                    path,
                    road_line,
                    f"road {road!r} is listed twice under {name} (also line {its_roads[road]}); "
                    "a road may be listed once under each district it runs through",
                )
            if road in names:
                raise error(
                    path,
                    road_line,
                    f"road {road!r} is also listed as a place or alias (line {names[road]})",
                )
            its_roads[road] = road_line
            road_lines.setdefault(road, road_line)
        district_roads[name] = tuple(its_roads)
        its_aliases = string_list(table.get("aliases", []))
        if its_aliases is None:
            raise error(
                path, line_of(text, "aliases", after=at or 0), f"{name}: aliases must be strings"
            )
        for alias in its_aliases:
            claim(alias, line_of(text, f'"{alias}"', after=at or 0), "alias")
            aliases[alias] = name

    extra = data.get("aliases", {})
    if not isinstance(extra, dict):
        raise error(path, line_of(text, "aliases"), "[aliases] must be a table of alias = name")
    for alias, target in extra.items():
        line = line_of(text, f'"{alias}"', after=line_of(text, "[aliases]") or 0)
        if not isinstance(target, str) or target not in names or target in aliases:
            raise error(
                path,
                line,
                f"alias {alias!r} points to {target!r}, which is not the province, the city, "
                "a district or a street of this file",
            )
        claim(alias, line, "alias")
        aliases[alias] = target
    return Gazetteer.build(
        province=province,
        city=city,
        area_code=area_code,
        districts=districts,
        district_roads=district_roads,
        aliases=aliases,
        source=str(path),
    )
