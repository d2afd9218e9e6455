"""G.711 bit-exact against the reference codec (Python 3.11's audioop)."""

from __future__ import annotations

import warnings

import numpy as np

from ivr.media import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_SAMPLES = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_all_inputs() -> None:
    assert g711.encode_ulaw(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)


def test_alaw_encode_all_inputs() -> None:
    assert g711.encode_alaw(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)


def test_ulaw_decode_all_codes() -> None:
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    assert np.array_equal(g711.decode_ulaw(ALL_CODES), expected)


def test_alaw_decode_all_codes() -> None:
    expected = np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), dtype=np.int16)
    assert np.array_equal(g711.decode_alaw(ALL_CODES), expected)


def test_alaw_sign_is_right() -> None:
    # aiortp's PCMA inverts the sign; ours must keep a positive sample positive
    assert g711.decode_alaw(g711.encode_alaw(np.array([1000], np.int16)))[0] > 0
    assert g711.decode_alaw(g711.encode_alaw(np.array([-1000], np.int16)))[0] < 0


def test_silence_codes_decode_to_near_zero() -> None:
    assert abs(int(g711.decode_ulaw(bytes([g711.SILENCE_ULAW]))[0])) == 0
    assert abs(int(g711.decode_alaw(bytes([g711.SILENCE_ALAW]))[0])) <= 8
