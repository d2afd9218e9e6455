"""Who decides the ticket's category and urgency: the keyword rules or the
learned classifier (ivr/prefill/classifier.py).  The policy is chosen by
cross-validation on the training set when the model is trained and saved in
the model file, so the prefill runs exactly what was measured.

Category: the rules decide when their keyword score reaches
``rules_category_at`` (they heard strong words for one category); otherwise
the model decides when its probability reaches ``model_category_at``; otherwise
the rules (their fallback 其他 included).

Urgency, by ``urgency``:
- ``rules``: the rules alone;
- ``model``: the model, except that an emergency (fire, gas leak, violence,
  medical, a cry for help) or words of distress always make the ticket 紧急;
- ``model_rules_urgent``: the model, except that whatever the rules call 紧急
  (an emergency, distress, danger to life, an old person alone in the cold)
  stays 紧急;
- ``higher``: the more urgent of the rules and the model."""

from __future__ import annotations

from dataclasses import dataclass

from ivr.prefill import phrases
from ivr.prefill.fields import SPEECH, FieldValue, spans
from ivr.prefill.urgency import NORMAL, SOON, URGENT

URGENCY_MODES = ("rules", "model", "model_rules_urgent", "higher")
RANK = {URGENT: 0, SOON: 1, NORMAL: 2}


@dataclass(frozen=True)
class Guess:
    """The model's answer for one field: the label, its probability (0..1) and
    the n-grams (start, end in the transcript) that weighed most for it."""

    label: str
    probability: float
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Policy:
    rules_category_at: int = 1_000  # rules' keyword score from which the rules decide
    model_category_at: float = 0.0  # the model's least probability to decide
    urgency: str = "model_rules_urgent"

    def __post_init__(self) -> None:
        if self.urgency not in URGENCY_MODES:
            raise ValueError(f"urgency policy {self.urgency!r} not in {URGENCY_MODES}")

    def to_json(self) -> dict[str, object]:
        return {
            "rules_category_at": self.rules_category_at,
            "model_category_at": self.model_category_at,
            "urgency": self.urgency,
        }


def category_label(policy: Policy, rules: str, rules_score: int, model: Guess) -> str:
    """Only the label (cross-validation uses this)."""
    if rules_score >= policy.rules_category_at:
        return rules
    return model.label if model.probability >= policy.model_category_at else rules


def urgency_label(policy: Policy, rules: str, rules_emergency: bool, model: Guess) -> str:
    """Only the label. ``rules_emergency``: an emergency or distress was heard."""
    if policy.urgency == "rules":
        return rules
    if policy.urgency == "higher":
        return min(rules, model.label, key=RANK.__getitem__)
    if rules_emergency or (policy.urgency == "model_rules_urgent" and rules == URGENT):
        return rules
    return model.label


def decide_category(
    policy: Policy, text: str, rules: FieldValue, rules_score: int, model: Guess
) -> FieldValue:
    label = category_label(policy, rules.value, rules_score, model)
    if label == rules.value and (rules.evidence or label != model.label):
        return rules
    return FieldValue(label, spans(text, model.spans), SPEECH)


def decide_urgency(
    policy: Policy,
    text: str,
    rules: tuple[FieldValue, str],
    rules_emergency: bool,
    model: Guess,
) -> tuple[FieldValue, str]:
    level = rules[0]
    label = urgency_label(policy, level.value, rules_emergency, model)
    if label == level.value:
        return rules
    heard = phrases.quote(text, list(model.spans), limit=3)
    because = f"，听到{heard}" if heard else ""
    return (
        FieldValue(label, spans(text, model.spans), SPEECH),
        f"{label}：分类模型判断（把握{model.probability:.0%}）{because}",
    )
