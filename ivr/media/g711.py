"""G.711 mu-law and A-law with numpy lookup tables (ITU-T G.711).

Ours rather than aiortp's, whose PCMA has the sign inverted. Encoding looks
the sample up in a 65536-entry table indexed by its bit pattern; decoding in
a 256-entry table. Tables are built once and read-only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SILENCE_ULAW = 0xFF
SILENCE_ALAW = 0xD5

_BIAS = 0x84


def _ulaw_encode_one(sample: int) -> int:
    # 14-bit magnitude (arithmetic shift, as the reference does), biased by 33
    value = sample >> 2
    mask = 0xFF
    if value < 0:
        value = -value
        mask = 0x7F
    value = min(value, 8159) + 0x21
    segment = max(0, value.bit_length() - 6)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def _ulaw_decode_one(code: int) -> int:
    code = ~code & 0xFF
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return -magnitude if sign else magnitude


def _alaw_encode_one(sample: int) -> int:
    # A-law works on 13-bit magnitudes: drop the 3 low bits first
    if sample >= 0:
        sign = 0xD5  # sign bit set (positive) with the even-bit inversion 0x55
        magnitude = sample >> 3
    else:
        sign = 0x55
        magnitude = (-sample - 1) >> 3
    if magnitude < 32:
        code = magnitude >> 1
    else:
        exponent = magnitude.bit_length() - 5
        code = (exponent << 4) | ((magnitude >> exponent) & 0x0F)
        if exponent > 7:
            code = 0x7F
    return (code ^ sign) & 0xFF


def _alaw_decode_one(code: int) -> int:
    code ^= 0x55
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    if exponent == 0:
        magnitude = (mantissa << 4) + 8
    else:
        magnitude = ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if sign else -magnitude


def _tables() -> tuple[
    npt.NDArray[np.uint8], npt.NDArray[np.int16], npt.NDArray[np.uint8], npt.NDArray[np.int16]
]:
    samples = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)
    ulaw_enc = np.array([_ulaw_encode_one(int(s)) for s in samples], dtype=np.uint8)
    alaw_enc = np.array([_alaw_encode_one(int(s)) for s in samples], dtype=np.uint8)
    ulaw_dec = np.array([_ulaw_decode_one(c) for c in range(256)], dtype=np.int16)
    alaw_dec = np.array([_alaw_decode_one(c) for c in range(256)], dtype=np.int16)
    for table in (ulaw_enc, ulaw_dec, alaw_enc, alaw_dec):
        table.flags.writeable = False
    return ulaw_enc, ulaw_dec, alaw_enc, alaw_dec


_ULAW_ENC, _ULAW_DEC, _ALAW_ENC, _ALAW_DEC = _tables()


def _index(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.uint16]:
    return np.ascontiguousarray(pcm, dtype=np.int16).view(np.uint16)


def encode_ulaw(pcm: npt.NDArray[np.int16]) -> bytes:
    return _ULAW_ENC[_index(pcm)].tobytes()


def decode_ulaw(data: bytes) -> npt.NDArray[np.int16]:
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def encode_alaw(pcm: npt.NDArray[np.int16]) -> bytes:
    return _ALAW_ENC[_index(pcm)].tobytes()


def decode_alaw(data: bytes) -> npt.NDArray[np.int16]:
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]
