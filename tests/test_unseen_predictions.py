"""Predictions on calls nobody tuned for (issue 15 item 5): the unseen test
set (tests/data/unseen/) is kept apart from the classifier's training data,
the bundled model is what its training data gives (retraining is
deterministic), and the call path's prefill decides category and urgency with
it.  How accurate it is on the unseen set is bench's job
(bench/unseen_predictions.py), not asserted here."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bench.unseen_predictions import DATA2, Row, load_rows
from ivr.prefill import PrefillDataError, Prefiller, load_gazetteer, load_taxonomy
from ivr.prefill.classifier import BUNDLED, load_classifier, training_hash
from ivr.prefill.train_classifier import (
    TRAINING,
    dump,
    fit,
    read_cues,
    read_regression,
    read_training,
    saved_choice,
    train,
)
from ivr.trial_call import place_call
from tests.audio_tools import pad, read_8k, write_wav
from tests.conftest import StartHotline, trial
from tests.test_call_path import wait_records
from tests.test_callbacks_live import busy_operator
from tests.test_speech_calls import espeak

ROOT = Path(__file__).resolve().parent.parent
DESCRIBE_PLAN = ROOT / "tests" / "data" / "dialplans" / "describe_then_operator.toml"
LOG = logging.getLogger("ivr.test.unseen")
HEAD_KEYS = ("labels", "weights", "intercepts")


def bigrams(text: str) -> set[str]:
    kept = "".join(c for c in text if c.isalnum())
    return {kept[i : i + 2] for i in range(len(kept) - 1)} or {kept}


def near_duplicate(a: str, b: str) -> bool:
    """The same utterance, or nearly: half or more of the character bigrams
    shared, or one (of 8 characters or more) inside the other."""
    x, y = bigrams(a), bigrams(b)
    if len(x & y) / len(x | y) >= 0.5:
        return True
    short, long_ = sorted((a, b), key=len)
    return len(short) >= 8 and short in long_


def by_id(*ids: str) -> list[Row]:
    rows = {row.id: row for row in load_rows()}
    return [rows[i] for i in ids]


def test_near_duplicate_sees_a_copy_with_other_punctuation_and_a_word_changed() -> None:
    said = "我们整栋楼冇水啦，搞了一整天了，打物业电话也冇人接"
    assert near_duplicate(said, "我们整栋楼冇水了搞了一整天了打物业电话也没人接")
    assert near_duplicate(
        "暖气管子在楼道里爆了热水喷得到处都是", "嗯，" + "暖气管子在楼道里爆了热水喷得到处都是"
    )
    assert not near_duplicate(said, "我家电表一个月走了八百多度，我们就两个老人")


def test_no_test_utterance_or_near_copy_of_one_is_in_the_training_data() -> None:
    first, second = load_rows(), load_rows(DATA2)
    assert len(first) >= 150 and len(second) >= 150
    test_rows = first + second
    training = read_training() + read_regression()
    copies = [
        (row.id, example.id)
        for row in test_rows
        for example in training
        if near_duplicate(row.transcript, example.transcript)
    ]
    assert copies == [], f"test rows (near-)copied into the training data: {copies}"
    saved = json.loads(BUNDLED.read_text(encoding="utf-8"))
    assert not any("unseen" in path for path in saved["training_files"]), saved["training_files"]


def test_the_bundled_model_is_what_its_training_data_gives() -> None:
    saved = json.loads(BUNDLED.read_text(encoding="utf-8"))
    paths = [ROOT / p for p in saved["training_files"]]
    assert TRAINING in paths
    retrain = "retrain: .venv/bin/python -m ivr.prefill.train_classifier"
    assert saved["training_sha256"] == training_hash(paths), f"training data changed; {retrain}"
    assert saved["version"].endswith(saved["training_sha256"][:8])
    # refitting with the choices its cross-validation made gives the same file, byte for byte
    again = dump(train(log=lambda _: None, choice=saved_choice(saved)))
    assert again == BUNDLED.read_text(encoding="utf-8"), f"not reproducible; {retrain}"


def test_the_run_time_model_scores_as_scikit_learn_did(tmp_path: Path) -> None:
    """The JSON weights read back and scored in plain Python/numpy give the
    labels and (within the rounding of the weights) the probabilities of the
    scikit-learn model they came from."""
    examples = read_training()[::3]
    fitted = fit(examples, 30.0, read_cues())
    saved = json.loads(BUNDLED.read_text(encoding="utf-8"))
    saved.update(
        vocabulary=fitted.grams,
        idf=fitted.idf,
        category=dict(zip(HEAD_KEYS, fitted.heads["category"], strict=True)),
        urgency=dict(zip(HEAD_KEYS, fitted.heads["urgency"], strict=True)),
    )
    path = tmp_path / "model.json"
    path.write_text(json.dumps(saved, ensure_ascii=False), encoding="utf-8")
    model = load_classifier(path)
    texts = [row.transcript for row in load_rows()[:60]]
    want_category, want_urgency = fitted.predict(texts)
    for text, category, urgency in zip(texts, want_category, want_urgency, strict=True):
        guess = model.guess(text)
        assert guess is not None
        assert (guess[0].label, guess[1].label) == (category.label, urgency.label), text
        assert guess[0].probability == pytest.approx(category.probability, abs=2e-3)
        assert guess[1].probability == pytest.approx(urgency.probability, abs=2e-3)


async def test_the_hotlines_prefill_labels_unseen_calls_with_the_model(
    start_hotline: StartHotline,
) -> None:
    hotline = await start_hotline()
    assert hotline.intake is not None
    prefiller = hotline.intake.prefiller
    assert prefiller.classifier is not None and prefiller.classifier.source == str(BUNDLED)
    rows = by_id("U008", "U039", "U118", "U157", "U180", "U200", "U202")
    for row in rows:
        prefill = prefiller.prefill(row.transcript)
        got = (prefill.category.value, prefill.urgency.value)
        assert got == (row.category, row.urgency), f"{row.id}: {row.transcript}"
        # every field says what it was heard from
        for evidence in prefill.category.evidence + prefill.urgency.evidence:
            assert row.transcript[evidence.start : evidence.end] == evidence.text
    # the ticket says why: the model's confidence and words it heard
    dialect = prefiller.prefill(by_id("U039")[0].transcript)
    assert dialect.urgency_reason.startswith("较急：分类模型判断"), dialect.urgency_reason
    # an emergency is still the rules' (and the ticket 紧急 whatever the model says)
    (gas,) = by_id("U040")
    prefill = prefiller.prefill(gas.transcript)
    assert prefill.emergency is not None and prefill.emergency.value == "gas_leak"
    assert (prefill.category.value, prefill.urgency.value) == ("燃气", "紧急")
    assert prefill.emergency_service is not None
    # nothing said: the model says nothing either (the rules' fallback, 一般)
    empty = prefiller.prefill("", caller_id="13812345678")
    assert (empty.category.value, empty.urgency.value) == ("其他", "一般")


async def test_a_described_call_gets_the_models_category_and_urgency(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """A whole call: the caller describes the problem (heard as an unseen row's
    words by the scripted recogniser) and the ticket carries that row's labels."""
    (row,) = by_id("U196")  # 3号楼 ... 电梯坏了我就不说了，主要是 ... 停水 ... 两点半
    said = espeak(tmp_path, "problem", "wo3 men5 lou2 ting2 shui3 le5.")
    voice = write_wav(tmp_path / "caller.wav", pad(read_8k(said, tmp_path), 3.0, 8.0))
    operator = busy_operator(tmp_path)
    await operator.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            dialplan=DESCRIBE_PLAN,
            ring_timeout=30.0,
            engine="scripted",
            script=[row.transcript],
        )
        result = await place_call(trial(hotline.endpoint.port, play=voice, duration=16.0), LOG)
        assert result.status == 200
        (record,) = await wait_records(hotline, 1)
    finally:
        await operator.stop()
    assert hotline.tickets is not None
    (ticket,) = await hotline.tickets.for_call(record.call_id)
    assert ticket.transcript == row.transcript
    assert (ticket.value("category"), ticket.value("urgency")) == (row.category, row.urgency)


def test_a_broken_model_file_is_refused_with_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    saved = json.loads(BUNDLED.read_text(encoding="utf-8"))
    cases: dict[str, tuple[str, str]] = {
        "missing.json": ("", "no such file"),
        "not_json.json": ("{weights", "not a classifier file"),
        "other_format.json": (json.dumps({"format": "something/2"}), "format must be"),
    }
    short = dict(saved, urgency=dict(saved["urgency"], weights=[[0.0]] * 3))
    cases["short_row.json"] = (json.dumps(short), "urgency: each weight row must have")
    no_policy = {k: v for k, v in saved.items() if k != "policy"}
    cases["no_policy.json"] = (json.dumps(no_policy), "missing 'policy'")
    bad_policy = dict(saved, policy=dict(saved["policy"], urgency="coin toss"))
    cases["bad_policy.json"] = (json.dumps(bad_policy), "'coin toss'")
    for name, (text, what) in cases.items():
        path = tmp_path / name
        if text:
            path.write_text(text, encoding="utf-8")
        with pytest.raises(PrefillDataError) as caught:
            load_classifier(path)
        assert str(path) in str(caught.value) and what in str(caught.value), str(caught.value)


LAMP_TAXONOMY = """
fallback = "其他"

[[category]]
name = "路灯"
strong = ["路灯"]
"""


def test_a_model_that_knows_categories_the_taxonomy_lacks_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lamps.toml"
    path.write_text(LAMP_TAXONOMY, encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        Prefiller(load_taxonomy(path), load_gazetteer(ROOT / "gazetteer.toml"), load_classifier())
    assert "供水" in str(caught.value) and str(path) in str(caught.value)


async def test_a_hotline_with_its_own_taxonomy_keeps_the_rules_and_says_so(
    start_hotline: StartHotline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lamps.toml"
    path.write_text(LAMP_TAXONOMY, encoding="utf-8")
    caplog.set_level(logging.WARNING, logger="ivr")
    hotline = await start_hotline(taxonomy=path)
    assert hotline.intake is not None and hotline.intake.prefiller.classifier is None
    prefill = hotline.intake.prefiller.prefill("我家楼下的路灯坏了")
    assert prefill.category.value == "路灯"
    warned = [r.getMessage() for r in caplog.records if "classifier" in r.getMessage()]
    assert warned and "rules alone" in warned[0] and str(path) in warned[0], warned
