"""The deployment's places (gazetteer.toml): its province and city, the
city's districts (区/县) and their streets (街道/镇/乡), and aliases callers
use (西湖 -> 西湖区, 江干区 -> 上城区 after the 2021 merger).

Names are found as written, and also by sound when Whisper wrote a
homophone before a place suffix (宾江区 -> 滨江区, 肖山区 -> 萧山区): the
toneless pinyin must agree syllable by syllable, with the initials and
finals southern speakers merge (zh/z, ch/c, sh/s, l/n, -ng/-n) counted as
the same."""

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

DISTRICT_SUFFIXES = ("自治县", "区", "县", "市", "旗")
STREET_SUFFIXES = ("街道", "镇", "乡")


@dataclass(frozen=True)
class Place:
    name: str  # canonical, e.g. 西湖区
    level: str  # province, city, district or street
    district: str | None = None  # the district a street belongs to (a district's own name)


@dataclass(frozen=True)
class PlaceMatch:
    place: Place
    start: int
    end: int
    how: str  # "name", "alias" or "sound"


@dataclass(frozen=True)
class _Sound:
    syllables: tuple[frozenset[str], ...]
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


def readings(char: str) -> frozenset[str]:
    """Every loose toneless reading of one character (empty for non-Han)."""
    if not "\u4e00" <= char <= "\u9fff":
        return frozenset()
    got = pinyin(char, style=Style.NORMAL, heteronym=True, errors="ignore")
    return frozenset(loose(p) for group in got for p in group)


@dataclass(frozen=True)
class Gazetteer:
    province: str | None
    city: str | None
    area_code: str | None
    districts: tuple[str, ...]
    streets: Mapping[str, str]  # street -> its district
    aliases: Mapping[str, str]  # alias -> canonical name
    source: str = ""
    _by_first: Mapping[str, tuple[tuple[str, Place, str], ...]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    _sounds: tuple[_Sound, ...] = field(default=(), repr=False, compare=False)

    @staticmethod
    def build(
        *,
        province: str | None,
        city: str | None,
        area_code: str | None = None,
        districts: Mapping[str, tuple[str, ...]],
        aliases: Mapping[str, str] | None = None,
        source: str = "",
    ) -> Gazetteer:
        """A gazetteer from names (``districts``: district -> its streets)."""
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
        alias_map = dict(aliases or {})
        surfaces: list[tuple[str, Place, str]] = [(n, p, "name") for n, p in places.items()]
        surfaces += [(a, places[target], "alias") for a, target in alias_map.items()]
        by_first: dict[str, list[tuple[str, Place, str]]] = {}
        for entry in surfaces:
            by_first.setdefault(entry[0][0], []).append(entry)
        frozen = {
            k: tuple(sorted(v, key=lambda e: len(e[0]), reverse=True)) for k, v in by_first.items()
        }
        sounds: list[_Sound] = []
        for place in places.values():
            if place.level not in (DISTRICT, STREET):
                continue
            suffixes = DISTRICT_SUFFIXES if place.level == DISTRICT else STREET_SUFFIXES
            suffix = next((s for s in suffixes if place.name.endswith(s)), None)
            if suffix is None:
                continue
            base = place.name[: -len(suffix)]
            if len(base) < 2:
                continue
            sounds.append(_Sound(tuple(readings(c) for c in base), base, suffix, place))
        return Gazetteer(
            province=province,
            city=city,
            area_code=area_code,
            districts=tuple(districts),
            streets=MappingProxyType(streets),
            aliases=MappingProxyType(alias_map),
            source=source,
            _by_first=MappingProxyType(frozen),
            _sounds=tuple(sounds),
        )

    def district_of(self, place: Place) -> str | None:
        return place.district if place.level in (DISTRICT, STREET) else None

    def place_at(self, text: str, i: int) -> PlaceMatch | None:
        """The longest place name or alias written at ``i``."""
        if i >= len(text):
            return None
        for surface, place, how in self._by_first.get(text[i], ()):
            if text.startswith(surface, i):
                return PlaceMatch(place, i, i + len(surface), how)
        return None

    def matches(self, text: str) -> dict[int, PlaceMatch]:
        """For each position where a place starts: the longest one, written
        (name or alias) or, failing that, sounding like a district or street
        followed by its suffix."""
        found: dict[int, PlaceMatch] = {}
        for i, c in enumerate(text):
            if c in self._by_first:
                m = self.place_at(text, i)
                if m is not None:
                    found[i] = m
        cache: dict[str, frozenset[str]] = {}

        def read(c: str) -> frozenset[str]:
            if c not in cache:
                cache[c] = readings(c)
            return cache[c]

        for sound in self._sounds:
            n = len(sound.base)
            at = text.find(sound.suffix, n)
            while at != -1:
                start = at - n
                heard = text[start:at]
                if (
                    start not in found
                    and heard != sound.base
                    and all(want & read(c) for want, c in zip(sound.syllables, heard, strict=True))
                ):
                    found[start] = PlaceMatch(sound.place, start, at + len(sound.suffix), "sound")
                at = text.find(sound.suffix, at + 1)
        return found


_TOP_KEYS = {"province", "city", "area_code", "aliases", "district"}
_DISTRICT_KEYS = {"name", "aliases", "streets"}


def load_gazetteer(path: Path) -> Gazetteer:
    """Read and check a gazetteer file (format: see gazetteer.toml)."""
    data, text = read_toml(path)
    for key in data:
        if key not in _TOP_KEYS:
            raise error(
                path, line_of(text, key), f"unknown key {key!r} (known: {sorted(_TOP_KEYS)})"
            )
    names: dict[str, int | None] = {}  # every name and alias -> its line

    def claim(name: str, line: int | None, what: str) -> None:
        if name in names:
            raise error(path, line, f"{what} {name!r} is listed twice (also line {names[name]})")
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
        aliases=aliases,
        source=str(path),
    )
