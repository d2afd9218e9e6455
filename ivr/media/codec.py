"""Codec by name: the two G.711 laws behind one small interface."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ivr.media import g711


def decode(payload: bytes, codec: str) -> npt.NDArray[np.int16]:
    return g711.decode_ulaw(payload) if codec == "PCMU" else g711.decode_alaw(payload)


def encode(pcm: npt.NDArray[np.int16], codec: str) -> bytes:
    return g711.encode_ulaw(pcm) if codec == "PCMU" else g711.encode_alaw(pcm)


def transcode(payload: bytes, source: str, target: str) -> bytes:
    if source == target:
        return payload
    return encode(decode(payload, source), target)


def silence_byte(codec: str) -> int:
    return g711.SILENCE_ULAW if codec == "PCMU" else g711.SILENCE_ALAW
