"""`ivr call`: our own SIP caller, for tests and for admins trying a plan.

It dials TARGET, plays a WAV as the caller's voice, presses keys at set
times (RFC 4733, SIP INFO or in-band tones), records what it hears, and
prints a JSON summary of what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from ivr.media import codec as codecs
from ivr.media.clock import MediaClock
from ivr.media.ports import RtpPorts
from ivr.media.prompt_audio import FRAME_SAMPLES, SAMPLE_RATE
from ivr.media.rtp import RtpStream
from ivr.sip.dialog import DialogEnd
from ivr.sip.endpoint import SipEndpoint
from ivr.sip.incoming import uri_addr
from ivr.sip.outgoing import Answered
from ivr.sip.sdp import build_offer, choose

DTMF_FREQS = {
    "1": (697, 1209),
    "2": (697, 1336),
    "3": (697, 1477),
    "A": (697, 1633),
    "4": (770, 1209),
    "5": (770, 1336),
    "6": (770, 1477),
    "B": (770, 1633),
    "7": (852, 1209),
    "8": (852, 1336),
    "9": (852, 1477),
    "C": (852, 1633),
    "*": (941, 1209),
    "0": (941, 1336),
    "#": (941, 1477),
    "D": (941, 1633),
}


@dataclass
class TrialOptions:
    target: str
    play: Path | None = None
    digits: str = ""
    digit_delay: float = 2.0
    digit_gap: float = 1.0
    dtmf_mode: str = "rfc4733"  # rfc4733 | info | inband, or two joined by "+" (sent both ways)
    duration: float = 10.0  # hang up after this many seconds (if the IVR has not)
    record: Path | None = None
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    caller: str = "13800138000"
    local_host: str = "127.0.0.1"
    rtp_ports: tuple[int, int] = (40000, 40999)


@dataclass
class TrialResult:
    status: int
    reason: str
    codec: str | None = None
    digits_sent: str = ""
    ended_by: str = ""
    seconds: float = 0.0
    packets_in: int = 0
    packets_out: int = 0
    recorded: str | None = None
    key_samples: list[int] = field(default_factory=list)  # heard samples when each key went
    notes: list[str] = field(default_factory=list)


def load_voice(path: Path) -> npt.NDArray[np.int16]:
    """A WAV as 8 kHz int16 mono (linear interpolation is fine for a test voice)."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        n = int(len(mono) * SAMPLE_RATE / rate)
        mono = np.interp(np.arange(n) * rate / SAMPLE_RATE, np.arange(len(mono)), mono)
    pcm: npt.NDArray[np.int16] = np.clip(mono * 32767, -32768, 32767).astype(np.int16)
    return pcm


def tone(digit: str, ms: int = 120) -> npt.NDArray[np.int16]:
    low, high = DTMF_FREQS[digit.upper()]
    t = np.arange(int(SAMPLE_RATE * ms / 1000)) / SAMPLE_RATE
    wave = 0.35 * np.sin(2 * np.pi * low * t) + 0.35 * np.sin(2 * np.pi * high * t)
    return (wave * 32767).astype(np.int16)


def to_frames(pcm: npt.NDArray[np.int16], codec: str) -> tuple[bytes, ...]:
    pad = (-len(pcm)) % FRAME_SAMPLES
    padded = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
    data = codecs.encode(padded, codec)
    return tuple(data[i : i + FRAME_SAMPLES] for i in range(0, len(data), FRAME_SAMPLES))


async def place_call(options: TrialOptions, log: logging.Logger) -> TrialResult:
    endpoint = SipEndpoint(
        host=options.local_host,
        port=0,
        public_host=options.local_host,
        user_agent="12345-ivr-trial-caller",
        log=log,
    )
    await endpoint.start()
    clock = MediaClock(log)
    ports = RtpPorts(options.local_host, *options.rtp_ports)
    stream = RtpStream(clock, log)
    heard: list[npt.NDArray[np.int16]] = []
    started = time.monotonic()
    try:
        await stream.open(ports)
        # like a phone: offer telephone-event only if it sends keys that way
        events = "rfc4733" in options.dtmf_mode
        sdp = build_offer(
            options.local_host, stream.local_port, options.codecs, dtmf_pt=101 if events else None
        )
        outgoing = endpoint.invite(
            options.target,
            uri_addr(options.target, ("127.0.0.1", 5060)),
            from_user=options.caller,
            sdp=sdp,
        )
        # --duration also bounds the wait for an answer (before, Timer B: 32 s)
        waiting = asyncio.ensure_future(outgoing.result())
        await asyncio.wait({waiting}, timeout=options.duration)
        if not waiting.done():
            where = f"{outgoing.addr[0]}:{outgoing.addr[1]}"
            if outgoing.heard_from.is_set():
                outgoing.cancel()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiting), 2.0)
                reason = f"{where} did not answer within {options.duration:g} s (--duration)"
            else:
                reason = (
                    f"nothing answered at {where} within {options.duration:g} s (--duration): "
                    "no SIP response at all; is the IVR running there?"
                )
            waiting.cancel()
            return TrialResult(
                status=408, reason=reason, seconds=round(time.monotonic() - started, 2)
            )
        answer = waiting.result()
        if not isinstance(answer, Answered):
            return TrialResult(status=answer.status, reason=answer.reason)
        dialog = answer.dialog
        dialog.local_sdp = sdp
        chosen = choose(answer.media, options.codecs)
        if chosen is None:
            await dialog.bye()
            return TrialResult(status=488, reason="answer has no codec we offered")
        stream.set_remote(
            (answer.media.address, answer.media.port),
            chosen.codec,
            chosen.payload_type,
            chosen.dtmf_pt,
        )
        stream.pcm_listeners.append(heard.append)
        stream.start_sending()
        if options.play is not None:
            stream.play(to_frames(load_voice(options.play), chosen.codec))
        result = TrialResult(status=200, reason="OK", codec=chosen.codec)
        ended_task = asyncio.ensure_future(asyncio.shield(dialog.ended))

        async def press_keys() -> None:
            await asyncio.sleep(options.digit_delay)
            for digit in options.digits:
                if dialog.ended.done():
                    return
                result.key_samples.append(sum(len(chunk) for chunk in heard))
                modes = options.dtmf_mode.split("+")
                if "info" in modes:
                    request = dialog.new_request(
                        "INFO",
                        body=f"Signal={digit}\r\nDuration=160\r\n".encode(),
                        content_type="application/dtmf-relay",
                    )
                    endpoint.send_request(request, dialog.remote_addr)
                if "inband" in modes:
                    stream.play(to_frames(tone(digit), chosen.codec))
                if "rfc4733" in modes:
                    stream.send_digit(digit)
                result.digits_sent += digit
                await asyncio.sleep(options.digit_gap)

        keys = asyncio.ensure_future(press_keys())
        done, _ = await asyncio.wait({ended_task}, timeout=options.duration)
        keys.cancel()
        if ended_task in done:
            result.ended_by = (
                "ivr" if ended_task.result() is DialogEnd.REMOTE_BYE else str(ended_task.result())
            )
        else:
            result.ended_by = "caller"
            await dialog.bye()
        result.seconds = round(time.monotonic() - started, 2)
        result.packets_in = stream.packets_in
        result.packets_out = stream.packets_out
        stream.flush()
        if options.record is not None:
            audio = np.concatenate(heard) if heard else np.zeros(0, dtype=np.int16)
            options.record.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(options.record), audio, SAMPLE_RATE, subtype="PCM_16")
            result.recorded = str(options.record)
        return result
    finally:
        stream.close()
        clock.stop()
        await asyncio.sleep(0.05)
        endpoint.close()


def summary(result: TrialResult) -> dict[str, object]:
    return asdict(result)
