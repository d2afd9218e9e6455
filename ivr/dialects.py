"""The seven dialect groups a 12345 hotline may offer, and what the IVR can say in each.

A prompt in a dialect resolves through a fallback chain (ivr.prompts): a recording in
voices/<dialect>/ -> speech synthesis where espeak-ng has a voice that reads Chinese
characters in that dialect -> mandarin.  espeak-ng 1.51 reads characters as Mandarin
(cmn, cmn-latn-pinyin) and as Cantonese (yue); its "hak" voice spells characters out
in English ("Chinese letter"), so Hakka and the other groups fall back to mandarin
until recordings exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

MANDARIN = "mandarin"
DIALECTS: tuple[str, ...] = (MANDARIN, "wu", "yue", "min", "hakka", "xiang", "gan")

# what callers and operators call each group
DIALECT_NAMES: Mapping[str, str] = MappingProxyType(
    {
        MANDARIN: "普通话",
        "wu": "吴语",
        "yue": "粤语",
        "min": "闽语",
        "hakka": "客家话",
        "xiang": "湘语",
        "gan": "赣语",
    }
)

# espeak-ng voices that read Chinese text in the dialect (the defaults of [dialects.voices])
ESPEAK_VOICES: Mapping[str, str] = MappingProxyType({MANDARIN: "cmn-latn-pinyin", "yue": "yue"})

# everyday names of dialects -> the group meant (for "did you mean" in config errors)
DIALECT_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "putonghua": MANDARIN,
        "chinese": MANDARIN,
        "cmn": MANDARIN,
        "shanghainese": "wu",
        "cantonese": "yue",
        "hokkien": "min",
        "minnan": "min",
        "taiwanese": "min",
        "teochew": "min",
        "hak": "hakka",
        "hunanese": "xiang",
        "jiangxinese": "gan",
    }
)
