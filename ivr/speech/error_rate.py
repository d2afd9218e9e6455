"""Character error rate, the usual accuracy figure for Chinese speech
recognition: edits (substitutions, deletions, insertions) needed to turn the
hypothesis into the reference, over the reference's length.

Punctuation, symbols and whitespace are removed first (Whisper punctuates,
Vosk does not; neither is what the caller said) and Latin letters are
lower-cased. Both texts should already be in the same script (simplified).
"""

from __future__ import annotations

import unicodedata


def spoken_characters(text: str) -> str:
    """``text`` without punctuation, symbols or whitespace, lower-cased."""
    kept = []
    for char in unicodedata.normalize("NFKC", text):
        category = unicodedata.category(char)
        if category[0] in "PSZC":  # punctuation, symbols, separators, controls
            continue
        kept.append(char.lower())
    return "".join(kept)


def edit_distance(reference: str, hypothesis: str) -> int:
    """Levenshtein distance between two strings, counted in characters."""
    if len(reference) < len(hypothesis):
        reference, hypothesis = hypothesis, reference
    previous = list(range(len(hypothesis) + 1))
    for i, ref_char in enumerate(reference, start=1):
        current = [i]
        for j, hyp_char in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion
                    current[j - 1] + 1,  # insertion
                    previous[j - 1] + (ref_char != hyp_char),  # substitution or match
                )
            )
        previous = current
    return previous[-1]


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Edits over reference characters, after removing punctuation and
    whitespace. Can exceed 1.0 when the hypothesis inserts a lot. An empty
    reference scores 0.0 against an empty hypothesis and 1.0 otherwise."""
    ref = spoken_characters(reference)
    hyp = spoken_characters(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)
