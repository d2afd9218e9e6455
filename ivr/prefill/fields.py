"""The prefilled ticket (工单) fields and the words each came from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

SPEECH = "speech"
CALLER_ID = "caller_id"
DEFAULT = "default"


class PrefillDataError(Exception):
    """A taxonomy or gazetteer file is unreadable or wrong (the message names
    the file, the line when it can be found, and what is wrong)."""


@dataclass(frozen=True)
class Evidence:
    """Where a value was heard: ``transcript[start:end] == text``."""

    start: int
    end: int
    text: str

    @staticmethod
    def of(transcript: str, start: int, end: int) -> Evidence:
        return Evidence(start, end, transcript[start:end])

    def to_json(self) -> dict[str, object]:
        return {"start": self.start, "end": self.end, "text": self.text}


@dataclass(frozen=True)
class FieldValue:
    value: str
    evidence: tuple[Evidence, ...]
    source: str = SPEECH  # "speech", "caller_id" or "default"

    def to_json(self) -> dict[str, object]:
        return _entry(self.value, self.evidence, self.source)


def spans(transcript: str, pairs: Iterable[tuple[int, int]]) -> tuple[Evidence, ...]:
    """Evidence for (start, end) pairs, sorted, duplicates dropped."""
    return tuple(Evidence.of(transcript, s, e) for s, e in sorted(set(pairs)))


def _entry(value: object, evidence: tuple[Evidence, ...], source: str) -> dict[str, object]:
    return {"value": value, "evidence": [e.to_json() for e in evidence], "source": source}


def _absent() -> dict[str, object]:
    return _entry(None, (), DEFAULT)


@dataclass(frozen=True)
class Prefill:
    transcript: str
    name: FieldValue | None
    phone: FieldValue | None
    address: FieldValue | None
    address_parts: dict[str, str]
    district: FieldValue | None
    category: FieldValue
    urgency: FieldValue
    urgency_reason: str
    sentiment: FieldValue
    needs_counsellor: bool
    emergency: FieldValue | None
    emergency_service: str | None
    counsellor_evidence: tuple[Evidence, ...] = field(default=())

    def to_json(self) -> dict[str, object]:
        """Every field as ``{"value", "evidence": [{start, end, text}], "source"}``
        (the transcript itself as a plain string)."""

        def opt(fv: FieldValue | None) -> dict[str, object]:
            return fv.to_json() if fv is not None else _absent()

        address_evidence = self.address.evidence if self.address is not None else ()
        emergency_evidence = self.emergency.evidence if self.emergency is not None else ()
        return {
            "transcript": self.transcript,
            "name": opt(self.name),
            "phone": opt(self.phone),
            "address": opt(self.address),
            "address_parts": _entry(
                dict(self.address_parts),
                address_evidence,
                SPEECH if self.address_parts else DEFAULT,
            ),
            "district": opt(self.district),
            "category": self.category.to_json(),
            "urgency": self.urgency.to_json(),
            "urgency_reason": _entry(
                self.urgency_reason, self.urgency.evidence, self.urgency.source
            ),
            "sentiment": self.sentiment.to_json(),
            "needs_counsellor": _entry(
                self.needs_counsellor,
                self.counsellor_evidence,
                SPEECH if self.needs_counsellor else DEFAULT,
            ),
            "emergency": opt(self.emergency),
            "emergency_service": (
                _entry(self.emergency_service, emergency_evidence, SPEECH)
                if self.emergency_service is not None
                else _absent()
            ),
        }
