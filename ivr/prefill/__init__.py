"""Ticket prefill: a hotline call's transcript -> the fields of its ticket
(工单), each with the words it came from.

    prefiller = Prefiller(load_taxonomy(), load_gazetteer(Path("gazetteer.toml")))
    ticket = prefiller.prefill(transcript, caller_id="13812345678")
"""

from ivr.prefill.categories import Taxonomy, load_taxonomy
from ivr.prefill.fields import Evidence, FieldValue, Prefill, PrefillDataError
from ivr.prefill.gazetteer import Gazetteer, load_gazetteer
from ivr.prefill.prefiller import Prefiller

__all__ = [
    "Evidence",
    "FieldValue",
    "Gazetteer",
    "Prefill",
    "PrefillDataError",
    "Prefiller",
    "Taxonomy",
    "load_gazetteer",
    "load_taxonomy",
]
