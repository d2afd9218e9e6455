"""The learned category and urgency classifier of the prefill, beside the
keyword rules (docs/decisions.md says which decides what, and why).

A linear model over character n-grams (TF-IDF, sublinear term frequency, L2
norm), trained by ``python -m ivr.prefill.train_classifier`` from the training
set in ivr/prefill/training/ and saved as JSON (ivr/prefill/classifier.json):
vocabulary, idf and weights, with a version and the SHA-256 of the training
data.  This module only reads that file and scores with it, in plain Python
(no scikit-learn at run time): one transcript costs a few hundred dictionary
look-ups, well under a millisecond.

Beside the n-grams the model reads cues: groups of words (danger, a supply
cut, happening now, a question ...) listed in the model file; each group heard
is one feature, and each pair of groups heard together one more, so that the
linear model can learn e.g. "a supply cut, now" apart from "a supply cut, a
question about the bill".

Text is normalised one character for one character (so positions stay those of
the transcript and the n-grams that weighed most can be quoted as evidence):
NFKC (full-width to half-width), lower case, every digit to ``0`` (Whisper
writes 3号楼 and 三号楼; 5号楼 and 3号楼 say the same), punctuation and
spaces to one space."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from ivr.prefill.deciding import Guess, Policy
from ivr.prefill.fields import PrefillDataError

BUNDLED = Path(__file__).resolve().parent / "classifier.json"
FORMAT = "ivr-prefill-classifier/1"
NGRAMS = (1, 2)  # shortest and longest n-gram


def normalise(text: str) -> str:
    """``text`` with each character mapped to one character (see the module)."""
    out = []
    for ch in text:
        folded = unicodedata.normalize("NFKC", ch)
        c = folded if len(folded) == 1 else ch
        c = c.lower()
        if c.isdigit():
            c = "0"
        elif not (c.isalnum() or c == "0"):
            c = " "
        out.append(c)
    return "".join(out)


def char_ngrams(text: str) -> list[str]:
    """The n-grams the model reads (the analyzer used in training too): of the
    normalised text, without those that are only spaces."""
    norm = normalise(text)
    grams = []
    low, high = NGRAMS
    for n in range(low, high + 1):
        for i in range(len(norm) - n + 1):
            gram = norm[i : i + n]
            if gram.strip():
                grams.append(gram)
    return grams


def cue_features(text: str, cues: Sequence[tuple[str, Sequence[str]]]) -> list[int]:
    """The cue features of ``text`` (indices after the n-grams): group g heard
    is feature g; groups a < b both heard is feature G + (index of the pair)."""
    heard = [any(word in text for word in words) for _, words in cues]
    out = [g for g, yes in enumerate(heard) if yes]
    groups = len(cues)
    pair = groups
    for a in range(groups):
        for b in range(a + 1, groups):
            if heard[a] and heard[b]:
                out.append(pair)
            pair += 1
    return out


def cue_width(groups: int) -> int:
    return groups + groups * (groups - 1) // 2


def training_hash(paths: Sequence[Path]) -> str:
    """SHA-256 over the training files, in order (each file's bytes)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Head:
    """One linear model: labels, a weight per feature and label, intercepts."""

    labels: tuple[str, ...]
    weights: npt.NDArray[np.float64]  # [feature, label]
    intercepts: npt.NDArray[np.float64]  # [label]


@dataclass(frozen=True, eq=False)
class Classifier:
    version: str
    trained_on: str  # SHA-256 of the training data
    grams: tuple[str, ...]  # feature i is the n-gram grams[i]
    vocabulary: Mapping[str, int]  # n-gram -> feature
    idf: npt.NDArray[np.float64]
    cues: tuple[tuple[str, tuple[str, ...]], ...]  # (group, words): features after the n-grams
    cue_weight: float
    category: Head
    urgency: Head
    policy: Policy  # who decides (chosen by cross-validation in training)
    source: str = ""

    def vector(self, text: str) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """The model's input for ``text``, sparse: (features, values).  TF-IDF
        of the n-grams (sublinear tf, L2 norm), then the cues heard."""
        counts = Counter(g for g in char_ngrams(text) if g in self.vocabulary)
        features = [self.vocabulary[g] for g in counts]
        index = np.array(features, dtype=np.intp)
        values = (1.0 + np.log(np.array(list(counts.values()), dtype=np.float64))) * self.idf[index]
        norm = float(np.sqrt(values @ values)) if len(values) else 0.0
        if norm > 0:
            values = values / norm
        cues = [len(self.grams) + i for i in cue_features(text, self.cues)]
        if cues:
            index = np.concatenate([index, np.array(cues, dtype=np.intp)])
            values = np.concatenate([values, np.full(len(cues), self.cue_weight)])
        return index, values

    def guess(self, text: str) -> tuple[Guess, Guess] | None:
        """(category, urgency) for one transcript; None when it holds no n-gram
        the model knows (nothing said, or nothing it learnt from)."""
        index, values = self.vector(text)
        if not (index < len(self.grams)).any():
            return None
        norm = normalise(text)
        return (
            self._head(self.category, index, values, norm),
            self._head(self.urgency, index, values, norm),
        )

    def fits(self, names: Sequence[str]) -> list[str]:
        """The model's categories that ``names`` (a taxonomy's) lacks."""
        return [label for label in self.category.labels if label not in names]

    def _head(
        self,
        head: Head,
        index: npt.NDArray[np.intp],
        values: npt.NDArray[np.float64],
        norm: str,
    ) -> Guess:
        scores = head.intercepts + values @ head.weights[index]
        top = int(np.argmax(scores))  # the first of equals, as in training
        probability = 1.0 / float(np.exp(scores - scores[top]).sum())
        contribution = values * head.weights[index, top]
        return Guess(head.labels[top], probability, self._evidence(norm, index, contribution))

    def _evidence(
        self,
        norm: str,
        index: npt.NDArray[np.intp],
        contribution: npt.NDArray[np.float64],
    ) -> tuple[tuple[int, int], ...]:
        """Where the (up to three) n-grams of 2+ characters that weighed most
        for the answer are in the (normalised) text: what the model heard."""
        found: list[tuple[int, int]] = []
        for i in np.argsort(-contribution, kind="stable"):
            feature = int(index[i])
            if contribution[i] <= 0:
                break
            if feature >= len(self.grams) or len(self.grams[feature].strip()) < 2:
                continue
            gram = self.grams[feature]
            start = norm.find(gram)
            end = start + len(gram)
            if start < 0 or any(s < end and start < e for s, e in found):
                continue
            found.append((start, end))
            if len(found) == 3:
                break
        return tuple(sorted(found))


def load_classifier(path: Path | None = None) -> Classifier:
    """Read and check a model file; the bundled one when ``path`` is None.
    A wrong file raises PrefillDataError naming the file and what is wrong."""
    path = BUNDLED if path is None else path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PrefillDataError(
            f"{path}: no such file (train it: python -m ivr.prefill.train_classifier)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrefillDataError(f"{path}: not a classifier file: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PrefillDataError(f"{path}: format must be {FORMAT!r}")
    try:
        vocabulary = data["vocabulary"]
        idf = np.array([float(x) for x in data["idf"]], dtype=np.float64)
        if not isinstance(vocabulary, list) or len(vocabulary) != len(idf):
            raise ValueError("vocabulary and idf must be lists of the same length")
        cues = tuple(
            (str(group), tuple(str(w) for w in words)) for group, words in data["cues"].items()
        )
        width = len(idf) + cue_width(len(cues))
        heads = {name: _read_head(data[name], width, name) for name in ("category", "urgency")}
        grams = tuple(str(g) for g in vocabulary)
        return Classifier(
            version=str(data["version"]),
            trained_on=str(data["training_sha256"]),
            grams=grams,
            vocabulary=MappingProxyType({g: i for i, g in enumerate(grams)}),
            idf=idf,
            cues=cues,
            cue_weight=float(data["cue_weight"]),
            category=heads["category"],
            urgency=heads["urgency"],
            policy=_read_policy(data["policy"]),
            source=str(path),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise PrefillDataError(f"{path}: not a classifier file: {what}") from None


def _read_head(data: object, width: int, name: str) -> Head:
    if not isinstance(data, dict):
        raise ValueError(f"{name} must be an object")
    labels = tuple(str(x) for x in data["labels"])
    rows = [[float(x) for x in row] for row in data["weights"]]
    intercepts = np.array([float(x) for x in data["intercepts"]], dtype=np.float64)
    if not labels or len(rows) != len(labels) or len(intercepts) != len(labels):
        raise ValueError(f"{name}: one weight row and one intercept per label")
    if any(len(row) != width for row in rows):
        raise ValueError(f"{name}: each weight row must have {width} weights")
    weights = np.array(rows, dtype=np.float64).T.copy()  # [feature, label]
    return Head(labels, weights, intercepts)


def _read_policy(data: object) -> Policy:
    if not isinstance(data, dict):
        raise ValueError("policy must be an object")
    return Policy(
        rules_category_at=int(data["rules_category_at"]),
        model_category_at=float(data["model_category_at"]),
        urgency=str(data["urgency"]),
    )
