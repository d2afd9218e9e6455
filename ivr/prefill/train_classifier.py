"""Train the prefill's category and urgency classifier from the training data
in the repository, choose who decides (rules or model) by cross-validation on
that training data only, and write ivr/prefill/classifier.json.

    .venv/bin/python -m ivr.prefill.train_classifier           # train and write
    .venv/bin/python -m ivr.prefill.train_classifier --check   # retrain; exit 1
        if the file differs from what the training data gives now

Training data: ivr/prefill/training/utterances_train.tsv (written from the
categories' descriptions, apart from the unseen test sets in tests/data/unseen/,
which are never read here), ivr/prefill/training/situations.tsv said in
several callers' styles (ivr/prefill/caller_styles.py) and, when
cross-validation says it helps, the regression set
tests/data/hotline_utterances.tsv.  Deterministic: fixed folds
(seed 0), a deterministic solver, weights rounded to 5 decimals, no dates in
the file; retraining on the same data gives the same file.  Light: a few
seconds on one core.

Needs scikit-learn (a dependency of the project); the call path does not: it
reads the JSON (ivr/prefill/classifier.py)."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.prefill import caller_styles
from ivr.prefill.categories import Taxonomy, load_taxonomy
from ivr.prefill.classifier import (
    BUNDLED,
    FORMAT,
    NGRAMS,
    char_ngrams,
    cue_features,
    cue_width,
    training_hash,
)
from ivr.prefill.data_files import tsv_rows
from ivr.prefill.deciding import URGENCY_MODES, Guess, Policy, category_label, urgency_label
from ivr.prefill.distress import distress
from ivr.prefill.emergency import detect
from ivr.prefill.urgency import urgency

VERSION = 1  # raise when the features or the model change (not for new data)
HERE = Path(__file__).resolve().parent
TRAINING = HERE / "training" / "utterances_train.tsv"
CUES = HERE / "training" / "cues.toml"
REGRESSION = HERE.parent.parent / "tests" / "data" / "hotline_utterances.tsv"
HEADER = ["id", "transcript", "category", "urgency", "written"]
SEED = 0
FOLDS = 5
C_GRID = (10.0, 30.0)
CUE_WEIGHT = 1.0
RULES_AT_GRID = (1_000, 9, 6, 4, 3)
MODEL_AT_GRID = (0.0, 0.2, 0.3, 0.4, 0.5)


@dataclass(frozen=True)
class Example:
    id: str
    transcript: str
    category: str
    urgency: str
    own: bool  # from the training set (not the regression set)
    group: str = ""  # examples of one group stay in one fold (a situation's renderings)


def read_training(
    path: Path = TRAINING, situations: Path = caller_styles.SITUATIONS
) -> list[Example]:
    """The training utterances: the training TSV (header ``id transcript
    category urgency written``) and the situations said in callers' styles; a
    bad line raises ValueError naming ``file:line``."""
    out = [
        Example(cells[0], cells[1], cells[2], cells[3], True, cells[0])
        for _, cells in tsv_rows(path, HEADER, 1, "a transcript")
    ]
    for said in caller_styles.utterances(caller_styles.read_situations(situations)):
        out.append(Example(said.id, said.transcript, said.category, said.urgency, True, said.group))
    return out


def read_regression(path: Path = REGRESSION) -> list[Example]:
    """The regression set's transcripts with their category and urgency."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        if line.strip():
            cells = line.split("\t")
            expected = json.loads(cells[3])
            out.append(
                Example(cells[0], cells[2], expected["category"], expected["urgency"], False)
            )
    return out


@dataclass(frozen=True)
class Fitted:
    grams: list[str]
    idf: list[float]
    heads: dict[str, tuple[list[str], list[list[float]], list[float]]]
    predict: Callable[[Sequence[str]], tuple[list[Guess], list[Guess]]]


Cues = tuple[tuple[str, tuple[str, ...]], ...]


def read_cues(path: Path = CUES) -> Cues:
    """The cue groups: ``[cues]`` group = [words]."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    table = data.get("cues")
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{path}: needs a [cues] table of group = [words]")
    out = []
    for group, words in table.items():
        if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
            raise ValueError(f"{path}: cues.{group} must be a list of non-empty strings")
        out.append((str(group), tuple(words)))
    return tuple(out)


def features(vectorizer: Any, texts: Sequence[str], cues: Cues, fitting: bool = False) -> Any:
    """The model's input: TF-IDF n-grams, then the cue block (as the run-time
    Classifier.vector builds it)."""
    import numpy as np
    import scipy.sparse as sp

    x = vectorizer.fit_transform(texts) if fitting else vectorizer.transform(texts)
    block = np.zeros((len(texts), cue_width(len(cues))))
    for row, text in enumerate(texts):
        for index in cue_features(text, cues):
            block[row, index] = CUE_WEIGHT
    return sp.hstack([x, sp.csr_matrix(block)]).tocsr()


def fit(examples: Sequence[Example], c: float, cues: Cues) -> Fitted:
    """TF-IDF over char n-grams and the cues + multinomial logistic
    regression, one head for category and one for urgency, sharing the
    features."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(
        analyzer=char_ngrams, sublinear_tf=True, min_df=2, dtype=np.float64
    )
    x = features(vectorizer, [e.transcript for e in examples], cues, fitting=True)
    n_grams = len(vectorizer.idf_)
    heads: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for field in ("category", "urgency"):
        y = [getattr(e, field) for e in examples]
        model = LogisticRegression(C=c, max_iter=3000, solver="lbfgs")
        # the category reads the n-grams only (the cues are about urgency and
        # measured worse for the category): its cue weights are zero
        width = n_grams if field == "category" else x.shape[1]
        model.fit(x[:, :width], y)
        models[field] = (model, width)
        pad = [0.0] * (x.shape[1] - width)
        heads[field] = (
            [str(label) for label in model.classes_],
            [[round(float(w), 5) for w in row] + pad for row in model.coef_],
            [round(float(b), 5) for b in model.intercept_],
        )

    def predict(texts: Sequence[str]) -> tuple[list[Guess], list[Guess]]:
        xt = features(vectorizer, texts, cues)
        out: list[list[Guess]] = []
        for field in ("category", "urgency"):
            model, width = models[field]
            probabilities = model.predict_proba(xt[:, :width])
            guesses = []
            for row in probabilities:
                top = int(row.argmax())
                guesses.append(Guess(str(model.classes_[top]), float(row[top]), ()))
            out.append(guesses)
        return out[0], out[1]

    names = [str(g) for g in vectorizer.get_feature_names_out()]
    return Fitted(names, [round(float(v), 6) for v in vectorizer.idf_], heads, predict)


@dataclass(frozen=True)
class RulesView:
    """What the rules say of one transcript (they are fixed: nothing here is fitted)."""

    category: str
    score: int
    emergency: bool  # an emergency or distress heard
    text: str


def rules_view(taxonomy: Taxonomy, text: str) -> RulesView:
    emergency = detect(text, taxonomy.emergency_patterns)
    category, score = taxonomy.classify_scored(text)
    return RulesView(category.value, score, emergency is not None or bool(distress(text)), text)


def rules_urgency(taxonomy: Taxonomy, view: RulesView, category: str) -> str:
    """The rules' urgency given the category the ticket ends up with (as the
    Prefiller computes it)."""
    emergency = detect(view.text, taxonomy.emergency_patterns)
    if emergency is not None and emergency.value in taxonomy.emergency_categories:
        category = taxonomy.emergency_categories[emergency.value]
    level, _ = urgency(
        view.text, emergency=emergency, distress=distress(view.text), category=category
    )
    return level.value


def folds(examples: Sequence[Example]) -> list[int]:
    """The fold of each example: stratified by category, the examples of one
    group (renderings of one situation) in one fold, fixed seed."""
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    fold = [0] * len(examples)
    labels = [e.category for e in examples]
    groups = [e.group or e.id for e in examples]
    indices = list(range(len(examples)))
    for index, (_, held) in enumerate(splitter.split(indices, labels, groups)):
        for i in held:
            fold[int(i)] = index
    return fold


def held_out(examples: Sequence[Example], c: float, cues: Cues) -> tuple[list[Guess], list[Guess]]:
    """Each example's guesses by a model trained without its fold."""
    fold = folds(examples)
    categories: list[Guess | None] = [None] * len(examples)
    urgencies: list[Guess | None] = [None] * len(examples)
    for k in range(FOLDS):
        train = [e for e, f in zip(examples, fold, strict=True) if f != k]
        test = [i for i, f in enumerate(fold) if f == k]
        fitted = fit(train, c, cues)
        cats, urgs = fitted.predict([examples[i].transcript for i in test])
        for i, cat, urg in zip(test, cats, urgs, strict=True):
            categories[i], urgencies[i] = cat, urg
    assert all(g is not None for g in categories) and all(g is not None for g in urgencies)
    return [g for g in categories if g], [g for g in urgencies if g]


def score_policy(
    policy: Policy,
    examples: Sequence[Example],
    views: Sequence[RulesView],
    guesses: tuple[list[Guess], list[Guess]],
    taxonomy: Taxonomy,
    cache: dict[tuple[int, str], str],
) -> tuple[float, float]:
    """(category, urgency) accuracy of ``policy`` over the examples the
    training set holds (the regression rows only help to train)."""
    right_c = right_u = n = 0
    for i, (e, view) in enumerate(zip(examples, views, strict=True)):
        if not e.own:
            continue
        cat = category_label(policy, view.category, view.score, guesses[0][i])
        if (i, cat) not in cache:
            cache[(i, cat)] = rules_urgency(taxonomy, view, cat)
        urg = urgency_label(policy, cache[(i, cat)], view.emergency, guesses[1][i])
        n += 1
        right_c += cat == e.category
        right_u += urg == e.urgency
    return right_c / n, right_u / n


def cross_validate(
    own: list[Example],
    regression: list[Example],
    taxonomy: Taxonomy,
    cues: Cues,
    log: Callable[[str], None],
) -> tuple[bool, float, Policy, dict[str, Any]]:
    """Choose the training pool, C and the policy by held-out accuracy on the
    training set's own rows: category and urgency accuracy summed."""
    best: tuple[float, bool, float, Policy, dict[str, Any]] | None = None
    rules_only: tuple[float, float] | None = None
    for with_regression in (False, True):
        examples = own + (regression if with_regression else [])
        views = [rules_view(taxonomy, e.transcript) for e in examples]
        cache: dict[tuple[int, str], str] = {}
        for c in C_GRID:
            guesses = held_out(examples, c, cues)
            for urgency_mode in URGENCY_MODES:
                for rules_at in RULES_AT_GRID:
                    for model_at in MODEL_AT_GRID:
                        policy = Policy(rules_at, model_at, urgency_mode)
                        cat, urg = score_policy(policy, examples, views, guesses, taxonomy, cache)
                        key = cat + urg
                        if best is None or key > best[0] + 1e-12:
                            figures: dict[str, Any] = {
                                "category": round(cat, 3),
                                "urgency": round(urg, 3),
                            }
                            best = (key, with_regression, c, policy, figures)
            rules_only = score_policy(
                Policy(0, 1.1, "rules"), examples, views, guesses, taxonomy, cache
            )
            model_only = score_policy(
                Policy(1_000, 0.0, "model"), examples, views, guesses, taxonomy, cache
            )
            log(
                f"pool {'own+regression' if with_regression else 'own'}, C={c}: "
                f"model alone category {model_only[0]:.3f} urgency {model_only[1]:.3f}"
            )
    assert best is not None and rules_only is not None
    _, with_regression, c, policy, figures = best
    figures["rules_alone"] = {
        "category": round(rules_only[0], 3),
        "urgency": round(rules_only[1], 3),
    }
    log(f"rules alone: category {rules_only[0]:.3f} urgency {rules_only[1]:.3f}")
    log(f"chosen: {'own+regression' if with_regression else 'own'}, C={c}, {policy}: {figures}")
    return with_regression, c, policy, figures


Choice = tuple[bool, float, Policy, dict[str, Any]]  # regression set used, C, policy, figures


def train(log: Callable[[str], None] = print, choice: Choice | None = None) -> dict[str, Any]:
    """The model file's content (a JSON-ready dict).  With ``choice`` (what an
    earlier cross-validation chose) the cross-validation is skipped: the fit
    alone, as ``--check`` does."""
    taxonomy = load_taxonomy()
    own = read_training()
    unknown = {e.category for e in own} - set(taxonomy.names)
    if unknown:
        raise ValueError(f"{TRAINING}: categories {sorted(unknown)} are not in the taxonomy")
    regression = read_regression()
    cues = read_cues()
    if choice is None:
        choice = cross_validate(own, regression, taxonomy, cues, log)
    with_regression, c, policy, figures = choice
    paths = [TRAINING, caller_styles.SITUATIONS, CUES] + ([REGRESSION] if with_regression else [])
    fitted = fit(own + (regression if with_regression else []), c, cues)
    return {
        "format": FORMAT,
        "version": f"{VERSION}.{training_hash(paths)[:8]}",
        "training_files": [str(p.relative_to(HERE.parent.parent)) for p in paths],
        "training_sha256": training_hash(paths),
        "training_rows": len(own) + (len(regression) if with_regression else 0),
        "model": {
            "features": (
                f"char {NGRAMS[0]}-{NGRAMS[1]}-grams of the normalised text (tf-idf, sublinear"
                " tf, l2, min_df 2), then cue groups and pairs of groups (cues.toml)"
            ),
            "estimator": "LogisticRegression(lbfgs, multinomial)",
            "C": c,
            "folds": FOLDS,
            "seed": SEED,
        },
        "policy": policy.to_json(),
        "cross_validation": figures,
        "cue_weight": CUE_WEIGHT,
        "cues": {group: list(words) for group, words in cues},
        "vocabulary": fitted.grams,
        "idf": fitted.idf,
        "category": _head_json(fitted.heads["category"]),
        "urgency": _head_json(fitted.heads["urgency"]),
    }


def _head_json(head: tuple[list[str], list[list[float]], list[float]]) -> dict[str, Any]:
    labels, weights, intercepts = head
    return {"labels": labels, "weights": weights, "intercepts": intercepts}


def saved_choice(model: dict[str, Any]) -> Choice:
    """What the cross-validation chose when ``model`` (a saved file) was trained."""
    policy = model["policy"]
    return (
        str(REGRESSION.relative_to(HERE.parent.parent)) in model["training_files"],
        float(model["model"]["C"]),
        Policy(
            int(policy["rules_category_at"]), float(policy["model_category_at"]), policy["urgency"]
        ),
        dict(model["cross_validation"]),
    )


def dump(model: dict[str, Any]) -> str:
    return json.dumps(model, ensure_ascii=False, separators=(",", ":"), sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="refit with the saved file's choices (no cross-validation) and compare",
    )
    parser.add_argument("--out", type=Path, default=BUNDLED, help="where to write the model")
    args = parser.parse_args(argv)
    if args.check:
        if not args.out.exists():
            print(f"{args.out}: no such file")
            return 1
        saved = json.loads(args.out.read_text(encoding="utf-8"))
        text = dump(train(choice=saved_choice(saved)))
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'matches' if same else 'DIFFERS from'} the training data")
        return 0 if same else 1
    text = dump(train())
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
