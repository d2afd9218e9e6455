"""N-1 mixing of one 20 ms frame of a conference (多方通话).

Every party hears the sum of the others, never themselves: with the frames of
all parties stacked as rows, the sum of every row is taken once (int32, so
three or more loud voices cannot wrap around) and each party's own row is
subtracted from it; the result is clipped to int16. A party that sent nothing
this frame is a row of zeros: it adds nothing, and still hears the others.

All of it is a handful of numpy operations a frame, whatever the number of
parties: no loop over samples in Python.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ivr.media import codec as codecs

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
INT16_MIN, INT16_MAX = -32768, 32767

Frames = npt.NDArray[np.int16]  # shape (parties, FRAME_SAMPLES)


def mix_minus(frames: Frames, extra: npt.NDArray[np.int32] | None = None) -> Frames:
    """Row i of the result: the sum of every row but i (plus ``extra``'s row i,
    a tone for that party only), clipped to int16."""
    wide = frames.astype(np.int32)
    heard = wide.sum(axis=0, dtype=np.int32)[np.newaxis, :] - wide
    if extra is not None:
        heard += extra
    np.clip(heard, INT16_MIN, INT16_MAX, out=heard)
    clipped: Frames = heard.astype(np.int16)
    return clipped


def encode_rows(rows: Frames, codec_names: list[str]) -> list[bytes]:
    """Each row encoded in its party's codec: one look-up per codec."""
    out: list[bytes] = [b""] * len(codec_names)
    for name in set(codec_names):
        picked = [i for i, c in enumerate(codec_names) if c == name]
        data = codecs.encode(rows[picked].reshape(-1), name)
        for n, i in enumerate(picked):
            out[i] = data[n * FRAME_SAMPLES : (n + 1) * FRAME_SAMPLES]
    return out
