"""The second procedure that writes the classifier's training data (issue 15
item 5): situations per category and urgency, each said in callers' styles
(ivr/prefill/caller_styles.py), kept in one cross-validation fold."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from ivr.prefill.caller_styles import (
    RENDERINGS,
    digits,
    read_situations,
    say,
    utterances,
)
from ivr.prefill.categories import load_taxonomy
from ivr.prefill.train_classifier import folds, read_training
from ivr.prefill.urgency import NORMAL, SOON, URGENT


def test_each_situation_is_said_in_callers_styles_with_its_labels() -> None:
    situations = read_situations()
    said = utterances(situations)
    names = set(load_taxonomy().names)
    by_group = defaultdict(list)
    for utterance in said:
        by_group[utterance.group].append(utterance)
    assert len(by_group) == len(situations)
    for situation in situations:
        assert situation.category in names, situation
        assert situation.urgency in (URGENT, SOON, NORMAL), situation
        renderings = by_group[f"S{situation.line:03d}"]
        assert 1 <= len(renderings) <= RENDERINGS
        assert {(u.category, u.urgency) for u in renderings} == {
            (situation.category, situation.urgency)
        }
    # the styles are there: dialect words, digits as Whisper writes them, proxy callers
    texts = [u.transcript for u in said]
    for flavour in ("冇", "阿拉", "屋头", "咋"):
        assert any(flavour in t for t in texts), flavour
    assert any(c.isdigit() for t in texts for c in t.replace("12345", ""))
    assert any("帮我妈打的" in t for t in texts)
    # the same file always gives the same utterances
    assert utterances(situations) == said
    assert say(situations[0], 0) == say(situations[0], 0)


def test_numbers_are_said_as_whisper_writes_them() -> None:
    assert digits("停水三天了，我家住十二楼") == "停水3天了，我家住12楼"
    assert digits("欠了二十几个人的工钱") == "欠了二十几个人的工钱"  # a rough count stays words
    assert digits("说了一次，等了两个小时") == "说了一次，等了两个小时"


def test_a_bad_situations_file_is_refused_with_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "situations.tsv"
    path.write_text("category\turgency\tsituation\n供水\t较急\t没水了\n供水\t较急\n", "utf-8")
    with pytest.raises(ValueError) as caught:
        read_situations(path)
    assert f"{path}:3:" in str(caught.value)
    path.write_text("category\tsituation\n", "utf-8")
    with pytest.raises(ValueError, match=f"{path}:1: header"):
        read_situations(path)


def test_the_renderings_of_one_situation_stay_in_one_fold() -> None:
    examples = read_training()
    fold = folds(examples)
    where: dict[str, set[int]] = defaultdict(set)
    for example, k in zip(examples, fold, strict=True):
        where[example.group].add(k)
    styled = [g for g in where if g.startswith("S")]
    assert styled and all(len(where[g]) == 1 for g in styled)
    assert len(set(fold)) == 5


def test_a_bad_line_of_the_situations_names_its_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "situations.tsv"
    bad.write_text("category\turgency\tsituation\n供水\t一般\t停水了\n\n燃气\t紧急\n", "utf-8")
    with pytest.raises(ValueError, match=rf"{bad}:4: want 3 cells and a situation"):
        read_situations(bad)
    bad.write_text("类别\turgency\tsituation\n", "utf-8")
    with pytest.raises(ValueError, match=rf"{bad}:1: header must be"):
        read_situations(bad)
