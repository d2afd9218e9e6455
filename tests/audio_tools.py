"""Audio helpers for tests: resampling with sox, RTP pcaps for sipp, and
finding one sound inside another (normalised cross-correlation)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from ivr.media import codec as codecs

Pcm = npt.NDArray[np.int16]


def read_8k(path: Path, tmp: Path) -> Pcm:
    """Any WAV as 8 kHz mono int16 (converted by sox)."""
    out = tmp / (path.stem + ".8k.wav")
    # -D: no dither, so the same file gives the same samples on every run
    subprocess.run(
        ["sox", "-D", str(path), "-r", "8000", "-c", "1", "-b", "16", str(out)], check=True
    )
    data, rate = sf.read(str(out), dtype="int16")
    assert rate == 8000
    # a sample of -32768 (sox clips espeak-ng's loud syllables there) is what
    # baresip 1.0.0's G.711 encoder sends as 0: a click in every loud syllable,
    # enough for Whisper base to lose 四 in a number.  Phones do not send it.
    return np.clip(np.asarray(data, dtype=np.int16), -32767, 32767)


def write_wav(path: Path, pcm: Pcm, rate: int = 8000) -> Path:
    sf.write(str(path), pcm, rate, subtype="PCM_16")
    return path


def pad(pcm: Pcm, before: float, after: float, rate: int = 8000) -> Pcm:
    return np.concatenate(
        [np.zeros(int(before * rate), np.int16), pcm, np.zeros(int(after * rate), np.int16)]
    )


def write_rtp_pcap(path: Path, pcm: Pcm, codec: str, payload_type: int) -> Path:
    """An RTP stream in a pcap (Ethernet/IPv4/UDP) that sipp can play."""
    data = codecs.encode(pcm, codec)
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    seq, ts, ssrc = 1000, 16000, 0x12345678
    for n, i in enumerate(range(0, len(data) - 159, 160)):
        rtp = struct.pack("!BBHII", 0x80, payload_type | (0x80 if n == 0 else 0), seq, ts, ssrc)
        rtp += data[i : i + 160]
        udp = struct.pack("!HHHH", 6000, 6002, 8 + len(rtp), 0) + rtp
        ip = (
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(udp),
                n & 0xFFFF,
                0,
                64,
                17,
                0,
                bytes([127, 0, 0, 1]),
                bytes([127, 0, 0, 1]),
            )
            + udp
        )
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        t = n * 0.02
        out += struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(frame), len(frame)) + frame
        seq += 1
        ts += 160
    path.write_bytes(bytes(out))
    return path


def best_match(haystack: Pcm, needle: Pcm) -> tuple[float, int]:
    """Highest normalised cross-correlation of ``needle`` anywhere in
    ``haystack`` (1.0 = identical up to gain) and the sample offset."""
    h = haystack.astype(np.float64)
    n = needle.astype(np.float64)
    if len(h) < len(n) or not np.any(n):
        return 0.0, 0
    size = 1 << int(np.ceil(np.log2(len(h) + len(n))))
    corr = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(n, size)), size)
    corr = corr[: len(h) - len(n) + 1]
    energy = np.concatenate([[0.0], np.cumsum(h * h)])
    window = energy[len(n) :] - energy[: len(h) - len(n) + 1]
    denom = np.sqrt(np.maximum(window, 1e-9) * float(np.dot(n, n)))
    score = corr / denom
    best = int(np.argmax(score))
    return float(score[best]), best


def rms(pcm: Pcm) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0
