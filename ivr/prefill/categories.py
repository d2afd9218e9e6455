"""The ticket's category (诉求分类) from keywords of the taxonomy
(ivr/prefill/taxonomy.toml, or a deployment's own file).

Each category lists keywords in three weights: strong (3), medium (2) and
weak (1).  Every keyword heard adds its weight to its category (a keyword
counts at most twice; where keywords overlap the longer one is heard).  The
highest score wins if it reaches ``min_score``; a tie goes to the category
whose strong keyword was heard first, then to the one listed first.  With no
winner the ticket gets the fallback category (其他) and no evidence.  An
emergency (gas leak, medical ...) may name its category in ``[emergencies]``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ivr.prefill.data_files import error, line_of, read_toml, string_list, table_line
from ivr.prefill.emergency import KINDS
from ivr.prefill.fields import DEFAULT, SPEECH, FieldValue, spans
from ivr.prefill.phrases import alternation

WEIGHTS = {"strong": 3, "medium": 2, "weak": 1}
STRONG = WEIGHTS["strong"]
MAX_COUNT = 2
BUNDLED = Path(__file__).resolve().parent / "taxonomy.toml"


@dataclass(frozen=True)
class Category:
    name: str
    keywords: tuple[tuple[str, int], ...]  # (keyword, weight)


@dataclass(frozen=True)
class Taxonomy:
    categories: tuple[Category, ...]
    fallback: str
    min_score: int = 2
    emergency_categories: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # a deployment's own words of emergency, per kind ([emergency_words])
    emergency_patterns: Mapping[str, re.Pattern[str]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    source: str = ""
    _pattern: re.Pattern[str] = field(default=re.compile(r"(?!x)x"), repr=False, compare=False)
    _owner: Mapping[str, tuple[int, int]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    @staticmethod
    def build(
        categories: tuple[Category, ...],
        *,
        fallback: str,
        min_score: int = 2,
        emergency_categories: Mapping[str, str] | None = None,
        emergency_words: Mapping[str, tuple[str, ...]] | None = None,
        source: str = "",
    ) -> Taxonomy:
        owner: dict[str, tuple[int, int]] = {}
        for index, category in enumerate(categories):
            for word, weight in category.keywords:
                owner[word] = (index, weight)
        return Taxonomy(
            categories=categories,
            fallback=fallback,
            min_score=min_score,
            emergency_categories=MappingProxyType(dict(emergency_categories or {})),
            emergency_patterns=MappingProxyType(
                {k: alternation(words) for k, words in (emergency_words or {}).items() if words}
            ),
            source=source,
            _pattern=alternation(owner),
            _owner=MappingProxyType(owner),
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categories) + (
            (self.fallback,) if self.fallback not in {c.name for c in self.categories} else ()
        )

    def classify(self, text: str) -> FieldValue:
        return self.classify_scored(text)[0]

    def classify_scored(self, text: str) -> tuple[FieldValue, int]:
        """The category and the winner's keyword score (0 for the fallback)."""
        scores = [0] * len(self.categories)
        first_strong = [len(text) + 1] * len(self.categories)
        found: list[list[tuple[int, int]]] = [[] for _ in self.categories]
        counted: dict[str, int] = {}
        for m in self._pattern.finditer(text):
            word = m.group()
            index, weight = self._owner[word]
            found[index].append((m.start(), m.end()))
            if counted.get(word, 0) >= MAX_COUNT:
                continue
            counted[word] = counted.get(word, 0) + 1
            scores[index] += weight
            if weight >= STRONG:
                first_strong[index] = min(first_strong[index], m.start())
        best = min(
            range(len(self.categories)),
            key=lambda i: (-scores[i], first_strong[i], i),
            default=None,
        )
        if best is None or scores[best] < self.min_score:
            return FieldValue(self.fallback, (), DEFAULT), 0
        name = self.categories[best].name
        return FieldValue(name, spans(text, found[best]), SPEECH), scores[best]


def load_taxonomy(path: Path | None = None) -> Taxonomy:
    """Read and check a taxonomy file; the bundled one when ``path`` is None."""
    path = BUNDLED if path is None else path
    data, text = read_toml(path)
    known = {"fallback", "min_score", "emergencies", "emergency_words", "category"}
    for key in data:
        if key not in known:
            raise error(path, line_of(text, key), f"unknown key {key!r} (known: {sorted(known)})")
    fallback = data.get("fallback", "其他")
    if not isinstance(fallback, str) or not fallback.strip():
        raise error(path, line_of(text, "fallback"), "fallback must be a category name")
    min_score = data.get("min_score", 2)
    if not isinstance(min_score, int) or isinstance(min_score, bool) or min_score < 1:
        raise error(path, line_of(text, "min_score"), "min_score must be a whole number >= 1")
    tables = data.get("category")
    if not isinstance(tables, list) or not tables:
        raise error(path, None, "no categories: add [[category]] tables with name and keywords")
    categories: list[Category] = []
    seen_words: dict[str, str] = {}
    for index, table in enumerate(tables):
        at = table_line(text, "category", index)
        if not isinstance(table, dict):
            raise error(path, at, "a [[category]] entry must be a table")
        for key in table:
            if key != "name" and key not in WEIGHTS:
                raise error(
                    path,
                    line_of(text, key, after=at or 0),
                    f"unknown key {key!r} in [[category]] (known: name, {', '.join(WEIGHTS)})",
                )
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            raise error(path, at, '[[category]] needs name = "..."')
        name = name.strip()
        if any(c.name == name for c in categories):
            raise error(path, line_of(text, f'"{name}"', after=at or 0), f"{name!r} listed twice")
        keywords: list[tuple[str, int]] = []
        for tier, weight in WEIGHTS.items():
            words = string_list(table.get(tier, []))
            if words is None:
                raise error(
                    path,
                    line_of(text, tier, after=at or 0),
                    f"{name}: {tier} must be a list of non-empty strings",
                )
            for word in words:
                if word in seen_words:
                    raise error(
                        path,
                        line_of(text, f'"{word}"', after=at or 0),
                        f"keyword {word!r} is in both {seen_words[word]!r} and {name!r}",
                    )
                seen_words[word] = name
                keywords.append((word, weight))
        categories.append(Category(name, tuple(keywords)))
    names = {c.name for c in categories} | {fallback}
    emergencies = data.get("emergencies", {})
    if not isinstance(emergencies, dict):
        raise error(path, line_of(text, "[emergencies]"), "[emergencies] must be kind = category")
    for kind, target in emergencies.items():
        line = line_of(text, kind, after=line_of(text, "[emergencies]") or 0)
        if kind not in KINDS:
            raise error(path, line, f"unknown emergency {kind!r} (known: {', '.join(KINDS)})")
        if not isinstance(target, str) or target not in names:
            raise error(path, line, f"emergency {kind!r} names unknown category {target!r}")
    words_table = data.get("emergency_words", {})
    words_at = line_of(text, "[emergency_words]") or 0
    if not isinstance(words_table, dict):
        raise error(path, words_at or None, "[emergency_words] must be kind = [words]")
    emergency_words: dict[str, tuple[str, ...]] = {}
    for kind, words in words_table.items():
        line = line_of(text, kind, after=words_at)
        if kind not in KINDS:
            raise error(path, line, f"unknown emergency {kind!r} (known: {', '.join(KINDS)})")
        listed = string_list(words)
        if listed is None:
            raise error(path, line, f"emergency_words {kind}: must be a list of non-empty strings")
        emergency_words[str(kind)] = tuple(listed)
    return Taxonomy.build(
        tuple(categories),
        fallback=fallback.strip(),
        min_score=min_score,
        emergency_categories={str(k): str(v) for k, v in emergencies.items()},
        emergency_words=emergency_words,
        source=str(path),
    )
