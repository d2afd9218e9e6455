"""Prefiller: one transcript (and the caller ID) in, a prefilled ticket out."""

from __future__ import annotations

from ivr.prefill.address import Address, find_address, find_places
from ivr.prefill.categories import Taxonomy
from ivr.prefill.classifier import Classifier
from ivr.prefill.deciding import decide_category, decide_urgency
from ivr.prefill.distress import distress
from ivr.prefill.emergency import detect, service
from ivr.prefill.fields import SPEECH, Evidence, FieldValue, Prefill
from ivr.prefill.gazetteer import Gazetteer
from ivr.prefill.names import before, beneficiary_name, caller_name
from ivr.prefill.phone_numbers import caller_id_phone, spoken_phone
from ivr.prefill.sentiment import sentiment
from ivr.prefill.urgency import urgency


class Prefiller:
    """Pure and synchronous: the same transcript always gives the same ticket.
    With a ``classifier`` (ivr/prefill/classifier.py) the category and urgency
    are decided by the rules and the model together, as its policy says
    (ivr/prefill/deciding.py); the model must know only the taxonomy's names."""

    def __init__(
        self, taxonomy: Taxonomy, gazetteer: Gazetteer, classifier: Classifier | None = None
    ) -> None:
        self.taxonomy = taxonomy
        self.gazetteer = gazetteer
        if classifier is not None and (unknown := classifier.fits(taxonomy.names)):
            raise ValueError(
                f"classifier {classifier.source}: categories {unknown} are not in the "
                f"taxonomy {taxonomy.source or '(bundled)'}"
            )
        self.classifier = classifier

    def prefill(
        self, transcript: str, *, caller_id: str | None = None, about: str = "caller"
    ) -> Prefill:
        """``about="beneficiary"``: the words are a relative's about the person
        they report for (亲友代办): the name is looked for after 老人叫, 我母亲叫..."""
        text = transcript
        find_name = beneficiary_name if about == "beneficiary" else caller_name
        spoken = spoken_phone(text, self.gazetteer.area_code)
        phone = spoken or caller_id_phone(caller_id)
        address = find_address(text, self.gazetteer)
        address_value = (
            FieldValue(address.value, (Evidence.of(text, address.start, address.end),), SPEECH)
            if address is not None
            else None
        )
        emergency = detect(text, self.taxonomy.emergency_patterns)
        category, rules_score = self.taxonomy.classify_scored(text)
        guess = self.classifier.guess(text) if self.classifier is not None else None
        if guess is not None and self.classifier is not None:
            policy = self.classifier.policy
            category = decide_category(policy, text, category, rules_score, guess[0])
        if emergency is not None and emergency.value in self.taxonomy.emergency_categories:
            category = FieldValue(
                self.taxonomy.emergency_categories[emergency.value], emergency.evidence, SPEECH
            )
        heard_distress = distress(text)
        level, reason = urgency(
            text, emergency=emergency, distress=heard_distress, category=category.value
        )
        if guess is not None and self.classifier is not None:
            level, reason = decide_urgency(
                self.classifier.policy,
                text,
                (level, reason),
                emergency is not None or bool(heard_distress),
                guess[1],
            )
        return Prefill(
            transcript=text,
            name=before(
                find_name(text, self.gazetteer),
                text,
                spoken.evidence[0].start if spoken is not None else None,
            ),
            phone=phone,
            address=address_value,
            address_parts=address.as_dict() if address is not None else {},
            district=self._district(text, address),
            category=category,
            urgency=level,
            urgency_reason=reason,
            sentiment=sentiment(text, heard_distress),
            needs_counsellor=bool(heard_distress),
            emergency=emergency,
            emergency_service=service(emergency.value if emergency is not None else None),
            counsellor_evidence=heard_distress,
        )

    def _district(self, text: str, address: Address | None) -> FieldValue | None:
        """The gazetteer district: said in the address, else the district of
        a street said there, else any district or street named in the call."""
        if address is not None:
            for kind in ("district", "street"):
                for part in address.parts:
                    if part.kind == kind and part.district is not None:
                        return FieldValue(
                            part.district, (Evidence.of(text, part.start, part.end),), SPEECH
                        )
        for m in find_places(text, self.gazetteer):
            district = self.gazetteer.district_of(m.place)
            if district is not None:
                return FieldValue(district, (Evidence.of(text, m.start, m.end),), SPEECH)
        return None
