"""Multi-party consultation (issue 14 item 2): the N-1 mixer, the conference
on real RTP streams, and calls with three real SIP peers (a caller, an
operator, a department) where each must hear the other two."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from ivr.conference import CALLER, GUEST, OPERATOR, Conference, Party
from ivr.media import codec as codecs
from ivr.media.clock import MediaClock
from ivr.media.mixer import FRAME_SAMPLES, encode_rows, mix_minus
from ivr.media.ports import RtpPorts
from ivr.media.rtp import RtpStream
from ivr.trial_call import TrialResult, place_call, to_frames
from tests.audio_tools import pad, read_8k, write_wav
from tests.conftest import StartHotline, trial
from tests.peers import Baresip, SippUas, free_port_block, free_udp_port
from tests.sip_raw import RawPeer, header, raw_peer, sdp, status_of
from tests.test_call_path import wait_records
from tests.test_web_console import CHROMIUM, browser, log_in, shot  # noqa: F401 (a fixture)
from tests.web_client import PASSWORD

if TYPE_CHECKING:
    from ivr.server import Hotline

LOG = logging.getLogger("test.conference")
RATE = 8000
# each party speaks at its own pitch: who hears whom is told by frequency
CALLER_HZ, OPERATOR_HZ, DEPARTMENT_HZ = 500.0, 1100.0, 1700.0
BUSY_TONE_HZ = 450.0  # what the operator hears when a department cannot come
DATA = Path(__file__).parent / "data" / "sipp"
BUSY, SILENT = DATA / "uas_busy.xml", DATA / "uas_silent.xml"


def sine(hz: float, seconds: float, amplitude: int = 6000) -> npt.NDArray[np.int16]:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def level(pcm: npt.NDArray[np.int16], hz: float) -> float:
    """The amplitude of the ``hz`` component of ``pcm`` (one DFT bin, Goertzel's)."""
    if len(pcm) == 0:
        return 0.0
    x = pcm.astype(np.float64)
    n = np.arange(len(x))
    return float(2 * abs(np.dot(x, np.exp(-2j * np.pi * hz * n / RATE))) / len(x))


# -- the mixer ------------------------------------------------------------------


def test_each_party_hears_the_sum_of_the_others_not_itself() -> None:
    a, b, c = (np.full(FRAME_SAMPLES, v, dtype=np.int16) for v in (100, 2000, -700))
    heard = mix_minus(np.stack([a, b, c]))
    assert heard.dtype == np.int16 and heard.shape == (3, FRAME_SAMPLES)
    assert (heard[0] == 2000 - 700).all()
    assert (heard[1] == 100 - 700).all()
    assert (heard[2] == 100 + 2000).all()


def test_loud_parties_are_clipped_not_wrapped_around() -> None:
    loud = np.full(FRAME_SAMPLES, 30000, dtype=np.int16)
    heard = mix_minus(np.stack([loud, loud, loud]))
    assert (heard == 32767).all(), "two at 30000 sum to 60000: clipped, not wrapped"
    heard = mix_minus(np.stack([-loud, -loud, -loud, -loud]))
    assert (heard == -32768).all(), "three at -30000 sum to -90000: clipped, not wrapped"
    heard = mix_minus(np.stack([loud, -loud, loud]))
    assert heard[1].tolist() == [32767] * FRAME_SAMPLES and (heard[0] == 0).all()


def test_a_silent_party_adds_nothing_and_still_hears_the_others() -> None:
    voice = sine(800, 0.02)
    silent = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    heard = mix_minus(np.stack([voice, silent]))
    assert (heard[0] == 0).all(), "the speaker hears the silent party: nothing"
    assert (heard[1] == voice).all(), "the silent party hears the speaker as they spoke"
    alone = mix_minus(np.stack([voice]))
    assert (alone == 0).all(), "a party alone hears nobody, not themselves"


def test_a_tone_for_one_party_only() -> None:
    frames = np.zeros((3, FRAME_SAMPLES), dtype=np.int16)
    frames[0] = 1000
    extra = np.zeros((3, FRAME_SAMPLES), dtype=np.int32)
    extra[1] = 500
    heard = mix_minus(frames, extra)
    assert (heard[1] == 1500).all() and (heard[2] == 1000).all() and (heard[0] == 0).all()


def test_rows_are_encoded_in_each_partys_codec() -> None:
    rows = np.stack([sine(440, 0.02), sine(440, 0.02)])
    ulaw, alaw = encode_rows(rows, ["PCMU", "PCMA"])
    assert len(ulaw) == len(alaw) == FRAME_SAMPLES
    assert ulaw == codecs.encode(rows[0], "PCMU") and alaw == codecs.encode(rows[1], "PCMA")


# -- the conference on real RTP streams ---------------------------------------------


class Phone:
    """A far end over real UDP: plays a tone, keeps what it hears."""

    def __init__(self, clock: MediaClock, ports: RtpPorts, hz: float | None) -> None:
        self.stream = RtpStream(clock, LOG)
        self.ports = ports
        self.hz = hz
        self.heard: list[npt.NDArray[np.int16]] = []

    def audio(self, last: float | None = None) -> npt.NDArray[np.int16]:
        pcm = np.concatenate(self.heard) if self.heard else np.zeros(0, dtype=np.int16)
        return pcm if last is None else pcm[-int(last * RATE) :]


async def conference_with(
    clock: MediaClock, ports: RtpPorts, tones: Mapping[str, float | None], **kwargs: object
) -> tuple[Conference, dict[str, Phone], dict[str, RtpStream]]:
    conference = Conference(clock, LOG, **kwargs)  # type: ignore[arg-type]
    phones: dict[str, Phone] = {}
    legs: dict[str, RtpStream] = {}
    roles = {"caller": CALLER, "operator": OPERATOR}
    for name, hz in tones.items():
        phone = Phone(clock, ports, hz)
        leg = RtpStream(clock, LOG)
        await phone.stream.open(ports)
        await leg.open(ports)
        codec = "PCMA" if name == "department" else "PCMU"  # one leg of another codec
        pt = 8 if codec == "PCMA" else 0
        phone.stream.set_remote(("127.0.0.1", leg.local_port), codec, pt, None)
        leg.set_remote(("127.0.0.1", phone.stream.local_port), codec, pt, None)
        phone.stream.pcm_listeners.append(phone.heard.append)
        if hz is not None:  # None: a phone that sends no RTP at all
            phone.stream.start_sending()
            phone.stream.play(to_frames(sine(hz, 1.0), codec), loop_forever=True)
        conference.add(name, roles.get(name, GUEST), leg)
        phones[name], legs[name] = phone, leg
    return conference, phones, legs


async def test_three_streams_each_hear_the_other_two_and_go_on_when_one_leaves() -> None:
    clock = MediaClock(LOG)
    ports = RtpPorts("127.0.0.1", *free_port_block(40))
    tones = {"caller": CALLER_HZ, "operator": OPERATOR_HZ, "department": DEPARTMENT_HZ}
    conference, phones, legs = await conference_with(clock, ports, tones, silent_after=30.0)
    recorded: list[npt.NDArray[np.int16]] = []
    conference.caller_hears.append(recorded.append)
    try:
        await asyncio.sleep(1.5)
        for name, phone in phones.items():
            heard = phone.audio(last=1.0)
            for other, hz in tones.items():
                assert hz is not None
                if other == name:
                    assert level(heard, hz) < 300, f"{name} hears themselves"
                else:
                    assert level(heard, hz) > 2000, f"{name} does not hear {other}"
        mix = np.concatenate(recorded)[-RATE:]
        assert level(mix, OPERATOR_HZ) > 2000 and level(mix, DEPARTMENT_HZ) > 2000
        assert level(mix, CALLER_HZ) < 300, "what the caller hears holds the others only"

        conference.remove("operator")
        legs["operator"].close()
        await asyncio.sleep(1.0)
        caller, department = phones["caller"].audio(0.5), phones["department"].audio(0.5)
        assert level(caller, DEPARTMENT_HZ) > 2000 and level(caller, OPERATOR_HZ) < 300
        assert level(department, CALLER_HZ) > 2000 and level(department, OPERATOR_HZ) < 300
    finally:
        conference.close()
        for phone in phones.values():
            phone.stream.close()
        for leg in legs.values():
            leg.close()
        clock.stop()


async def test_a_party_that_sends_no_rtp_is_reported_and_the_others_go_on() -> None:
    clock = MediaClock(LOG)
    ports = RtpPorts("127.0.0.1", *free_port_block(40))
    silent: list[Party] = []
    tones = {"caller": CALLER_HZ, "operator": OPERATOR_HZ, "department": None}
    conference, phones, legs = await conference_with(
        clock, ports, tones, silent_after=1.0, on_silent=silent.append
    )
    try:
        await asyncio.sleep(2.5)
        assert [p.name for p in silent] == ["department"], "the mute department was not noticed"
        assert level(phones["caller"].audio(1.0), OPERATOR_HZ) > 2000
        assert level(phones["operator"].audio(1.0), CALLER_HZ) > 2000
        assert level(phones["department"].audio(1.0), CALLER_HZ) > 2000, (
            "a silent party still hears the others until it is dropped"
        )
    finally:
        conference.close()
        for phone in phones.values():
            phone.stream.close()
        for leg in legs.values():
            leg.close()
        clock.stop()


def test_a_party_cannot_join_twice() -> None:
    async def run() -> None:
        clock = MediaClock(LOG)
        conference = Conference(clock, LOG, silent_after=5.0)
        stream = RtpStream(clock, LOG)
        conference.add("caller", CALLER, stream)
        with pytest.raises(ValueError, match="caller is in the conference already"):
            conference.add("caller", CALLER, stream)
        conference.close()
        clock.stop()

    asyncio.run(run())


# -- calls with three real peers ------------------------------------------------------

WINDOW_S = 0.5
HEARD = 1500.0  # a party's tone is heard: amplitude over this (they send 6000)
NOT_HEARD = 300.0


def windows(pcm: npt.NDArray[np.int16]) -> list[npt.NDArray[np.int16]]:
    step = int(WINDOW_S * RATE)
    return [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]


def heard_both(pcm: npt.NDArray[np.int16], hz: tuple[float, float], own: float) -> int:
    """How many windows of ``pcm`` hold both tones ``hz`` and not the listener's ``own``."""
    return sum(
        1
        for w in windows(pcm)
        if all(level(w, f) > HEARD for f in hz) and level(w, own) < NOT_HEARD
    )


def heard_only(pcm: npt.NDArray[np.int16], hz: float, absent: float) -> int:
    """Windows with ``hz`` heard and ``absent`` not."""
    return sum(1 for w in windows(pcm) if level(w, hz) > HEARD and level(w, absent) < NOT_HEARD)


async def tone_phone(tmp_path: Path, name: str, hz: float, **kwargs: object) -> Baresip:
    voice = write_wav(tmp_path / f"{name}.wav", sine(hz, 90.0))
    phone = Baresip(
        tmp_path / name,
        free_udp_port(),
        play=voice,
        auto_answer=True,
        user=name,
        **kwargs,  # type: ignore[arg-type]
    )
    await phone.start()
    return phone


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting: {what}")
        await asyncio.sleep(0.1)


def heard_by(phone: Baresip, tmp_path: Path) -> npt.NDArray[np.int16]:
    (recording,) = phone.recordings("dec")
    return read_8k(recording, tmp_path)


class Events:
    """The consultation events the operator's screen gets."""

    def __init__(self, hotline: Hotline) -> None:
        self.seen: list[dict[str, object]] = []
        hotline.events.on_publish.append(self._published)

    def _published(self, kind: str, body: dict[str, object]) -> None:
        if kind == "consultation":
            self.seen.append(body)

    def states(self, name: str) -> list[object]:
        return [e["state"] for e in self.seen if e.get("name") == name]


async def caller_with_tone(
    hotline: Hotline, tmp_path: Path, duration: float
) -> asyncio.Future[TrialResult]:
    voice = write_wav(tmp_path / "caller.wav", pad(sine(CALLER_HZ, duration), 0.0, 0.0))
    options = trial(
        hotline.endpoint.port,
        digits="0",
        digit_delay=1.0,
        duration=duration,
        play=voice,
        record=tmp_path / "caller-heard.wav",
    )
    return asyncio.ensure_future(place_call(options, LOG))


def caller_heard(tmp_path: Path) -> npt.NDArray[np.int16]:
    data, rate = sf.read(str(tmp_path / "caller-heard.wav"), dtype="int16")
    assert rate == RATE
    return np.asarray(data, dtype=np.int16)


async def test_caller_operator_and_department_each_hear_the_other_two(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """The operator keys *71 on their phone: 住建局 joins; all three hear each
    other; 住建局 hangs up and caller and operator still hear each other; the
    conversation recording holds the caller left and the others right."""
    operator = await tone_phone(tmp_path, "operator", OPERATOR_HZ)
    department = await tone_phone(tmp_path, "zjj", DEPARTMENT_HZ)
    try:
        hotline = await start_hotline(
            [operator.uri],
            extra=f'[consultation]\ndirectory = {{ "住建局" = "{department.uri}" }}\n',
        )
        events = Events(hotline)
        call = await caller_with_tone(hotline, tmp_path, 24.0)
        await until(lambda: operator.saw("established"), 20, "the operator answers")
        await asyncio.sleep(1.5)
        await operator.keys("*71", gap=0.3)
        await until(lambda: department.saw("established"), 15, "the department answers")
        await asyncio.sleep(4.0)
        (talk,) = hotline.consultations.conversations.values()
        assert talk.conference is not None
        assert talk.conference.names() == ["caller", "operator", "住建局"]
        await department.hangup()
        await until(lambda: "left" in events.states("住建局"), 10, "the department leaves")
        await asyncio.sleep(4.0)
        assert not call.done(), "the call ended when the department left"
        result = await asyncio.wait_for(call, 30)
        (record,) = await wait_records(hotline, 1)
    finally:
        await operator.quit()
        await department.quit()
    assert result.ended_by == "caller"
    assert events.states("住建局") == ["ringing", "joined", "left"]
    assert "consult:住建局" in record.path

    caller = caller_heard(tmp_path)
    assert heard_both(caller, (OPERATOR_HZ, DEPARTMENT_HZ), CALLER_HZ) >= 4, (
        "the caller did not hear operator and department together"
    )
    assert heard_only(caller[-3 * RATE :], OPERATOR_HZ, DEPARTMENT_HZ) >= 4, (
        "after the department left, the caller no longer hears the operator alone"
    )
    by_operator = heard_by(operator, tmp_path)
    assert heard_both(by_operator, (CALLER_HZ, DEPARTMENT_HZ), OPERATOR_HZ) >= 4
    assert heard_only(by_operator, CALLER_HZ, DEPARTMENT_HZ) >= 4, (
        "the operator does not hear the caller alone after the department left"
    )
    by_department = heard_by(department, tmp_path)
    assert heard_both(by_department, (CALLER_HZ, OPERATOR_HZ), DEPARTMENT_HZ) >= 4

    (conversation,) = (tmp_path / "recordings" / "calls").rglob("*.wav")
    stereo, rate = sf.read(str(conversation), dtype="int16")
    assert rate == RATE and stereo.shape[1] == 2
    left, right = stereo[:, 0], stereo[:, 1]
    assert heard_both(right, (OPERATOR_HZ, DEPARTMENT_HZ), CALLER_HZ) >= 4, (
        "the recording's right channel lacks the department's part"
    )
    assert heard_only(left, CALLER_HZ, DEPARTMENT_HZ) >= 8, "the caller's channel"


async def test_a_busy_department_leaves_caller_and_operator_talking_and_the_operator_told(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    operator = await tone_phone(tmp_path, "operator", OPERATOR_HZ)
    busy = SippUas(tmp_path / "busy", free_udp_port(), free_udp_port(even=True), scenario=str(BUSY))
    await busy.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            extra=f'[consultation]\ndirectory = {{ "水务集团" = "{busy.uri}" }}\n',
        )
        events = Events(hotline)
        call = await caller_with_tone(hotline, tmp_path, 16.0)
        await until(lambda: operator.saw("established"), 20, "the operator answers")
        await asyncio.sleep(1.0)
        await operator.keys("*79", gap=0.3)  # no 9th entry: told so, nobody rung
        await until(lambda: events.states("*79") == ["not_found"], 10, "no entry 9")
        await operator.keys("*71", gap=0.3)
        await until(lambda: "busy" in events.states("水务集团"), 10, "the busy department")
        await asyncio.sleep(3.0)
        assert not call.done(), "the call ended with the busy department"
        result = await asyncio.wait_for(call, 30)
        (record,) = await wait_records(hotline, 1)
    finally:
        await operator.quit()
        await busy.stop()
    assert result.ended_by == "caller" and record.end_reason == "caller_hangup"
    assert events.states("水务集团") == ["ringing", "busy"]
    told = next(e for e in events.seen if e["state"] == "busy")
    assert told["status"] == 486 and "忙线" in str(told["words"])
    assert told["operator"] == operator.uri
    by_operator = heard_by(operator, tmp_path)
    assert sum(1 for w in windows(by_operator) if level(w, BUSY_TONE_HZ) > HEARD) >= 1, (
        "the operator did not hear the busy tone"
    )
    caller = caller_heard(tmp_path)
    assert all(level(w, BUSY_TONE_HZ) < NOT_HEARD for w in windows(caller)), (
        "the busy tone is for the operator only, not the caller"
    )
    # after the busy tone, caller and operator still hear each other
    assert heard_only(caller[-3 * RATE :], OPERATOR_HZ, BUSY_TONE_HZ) >= 4
    assert heard_only(by_operator[-4 * RATE :], CALLER_HZ, BUSY_TONE_HZ) >= 4


async def test_warm_hand_over_to_110_the_operator_leaves_caller_and_police_go_on(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """The operator keys *71 (the first in the list: 110, no departments
    configured), stays until 110 answers, then hangs up; caller and police go on
    talking, and the operator is free for the next call meanwhile."""
    operator = await tone_phone(tmp_path, "operator", OPERATOR_HZ)
    police = await tone_phone(tmp_path, "police", DEPARTMENT_HZ)
    try:
        hotline = await start_hotline(
            [operator.uri], extra=f'[emergency]\npolice = "{police.uri}"\n'
        )
        events = Events(hotline)
        call = await caller_with_tone(hotline, tmp_path, 22.0)
        await until(lambda: operator.saw("established"), 20, "the operator answers")
        await asyncio.sleep(1.0)
        await operator.keys("*71", gap=0.3)
        await until(lambda: police.saw("established"), 15, "110 answers")
        await asyncio.sleep(3.0)
        await operator.hangup()
        (op,) = hotline.desk.operators_named(operator.uri)
        await until(lambda: op.state.value != "talking", 10, "the operator freed")
        await asyncio.sleep(5.0)
        assert not call.done(), "the call ended when the operator left"
        assert hotline.desk.current_call(operator.uri) is None
        result = await asyncio.wait_for(call, 30)
        (record,) = await wait_records(hotline, 1)
    finally:
        await operator.quit()
        await police.quit()
    assert result.ended_by == "caller"
    assert events.states("110 报警") == ["ringing", "joined"]
    assert "consult:110 报警" in record.path
    caller = caller_heard(tmp_path)
    assert heard_both(caller, (OPERATOR_HZ, DEPARTMENT_HZ), CALLER_HZ) >= 4, (
        "while the operator stayed, the caller heard both"
    )
    assert heard_only(caller[-4 * RATE :], DEPARTMENT_HZ, OPERATOR_HZ) >= 6, (
        "after the operator left, the caller still hears 110 alone"
    )
    by_police = heard_by(police, tmp_path)
    assert heard_both(by_police, (CALLER_HZ, OPERATOR_HZ), DEPARTMENT_HZ) >= 4
    assert heard_only(by_police, CALLER_HZ, OPERATOR_HZ) >= 8, (
        "110 no longer hears the caller once the operator left"
    )


async def test_a_department_that_sends_no_rtp_is_hung_up_and_the_call_goes_on(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    operator = await tone_phone(tmp_path, "operator", OPERATOR_HZ)
    mute = SippUas(
        tmp_path / "mute",
        free_udp_port(),
        free_udp_port(even=True),
        scenario=str(SILENT),
        trace=True,
    )
    await mute.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            extra=f'[consultation]\nsilent_after = 2\ndirectory = {{ "专家" = "{mute.uri}" }}\n',
        )
        events = Events(hotline)
        call = await caller_with_tone(hotline, tmp_path, 16.0)
        await until(lambda: operator.saw("established"), 20, "the operator answers")
        await asyncio.sleep(1.0)
        await operator.keys("*71", gap=0.3)
        await until(lambda: "dropped_silent" in events.states("专家"), 15, "the mute one dropped")
        await until(lambda: "BYE sip:" in mute.messages(), 10, "the mute phone hung up")
        await asyncio.sleep(2.0)
        assert not call.done()
        (talk,) = hotline.consultations.conversations.values()
        assert talk.conference is not None and talk.conference.names() == ["caller", "operator"]
        result = await asyncio.wait_for(call, 30)
    finally:
        await operator.quit()
        await mute.stop()
    assert result.ended_by == "caller"
    assert events.states("专家") == ["ringing", "joined", "dropped_silent"]
    caller = caller_heard(tmp_path)
    assert heard_only(caller[-3 * RATE :], OPERATOR_HZ, CALLER_HZ) >= 4


async def test_the_operators_phone_transfers_by_refer_and_the_department_joins(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """baresip's transfer sends REFER with the department's URI: 202, NOTIFYs
    with the outcome; the department joins, and baresip, taking the transfer
    as done, hangs up: caller and department go on."""
    operator = await tone_phone(tmp_path, "operator", OPERATOR_HZ)
    department = await tone_phone(tmp_path, "zjj", DEPARTMENT_HZ)
    try:
        hotline = await start_hotline(
            [operator.uri],
            extra=f'[consultation]\ndirectory = {{ "住建局" = "{department.uri}" }}\n',
        )
        events = Events(hotline)
        call = await caller_with_tone(hotline, tmp_path, 16.0)
        await until(lambda: operator.saw("established"), 20, "the operator answers")
        await asyncio.sleep(1.0)
        await operator.send(f"/transfer {department.uri}\n")
        await until(lambda: department.saw("established"), 15, "the department answers")
        await until(lambda: operator.saw("terminated"), 10, "the operator's phone hangs up")
        await asyncio.sleep(4.0)
        assert not call.done(), "the call ended with the operator's transfer"
        result = await asyncio.wait_for(call, 30)
    finally:
        await operator.quit()
        await department.quit()
    assert result.ended_by == "caller"
    assert events.states("住建局") == ["ringing", "joined"]
    assert operator.saw("transfer") and not operator.saw("transfer failed")
    by_department = heard_by(department, tmp_path)
    assert heard_only(by_department, CALLER_HZ, OPERATOR_HZ) >= 6, "the department hears the caller"
    caller = caller_heard(tmp_path)
    assert heard_only(caller[-3 * RATE :], DEPARTMENT_HZ, OPERATOR_HZ) >= 4


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
async def test_the_operator_brings_departments_in_from_the_screen_pop(
    start_hotline: StartHotline,
    tmp_path: Path,
    browser: Any,  # noqa: F811 (the fixture)
) -> None:
    """In Chromium: the screen pop of the bridged call lists the directory; 水务集团
    (busy) says 忙线 on the screen, 住建局 joins and is shown in the call."""
    operator = await tone_phone(tmp_path, "operator", OPERATOR_HZ)
    department = await tone_phone(tmp_path, "zjj", DEPARTMENT_HZ)
    busy = SippUas(tmp_path / "busy", free_udp_port(), free_udp_port(even=True), scenario=str(BUSY))
    await busy.start()
    try:
        hotline = await start_hotline(
            [operator.uri],
            extra=(
                "[consultation]\n"
                f'directory = {{ "水务集团" = "{busy.uri}", "住建局" = "{department.uri}" }}\n'
            ),
        )
        assert hotline.accounts is not None
        await hotline.accounts.add_user("op1", PASSWORD, "operator", sip_uri=operator.uri)
        base = f"http://127.0.0.1:{hotline.api.port}"
        page = await log_in(browser, base, "op1")
        await page.wait_for_url(f"{base}/operator")
        call = await caller_with_tone(hotline, tmp_path, 25.0)
        await page.locator("#consult-buttons button").first.wait_for(timeout=30_000)
        names = await page.locator("#consult-buttons button").all_text_contents()
        assert names == ["邀请 水务集团", "邀请 住建局"]
        await page.click("#consult-buttons button[data-name='水务集团']")
        await page.wait_for_selector("#consult-said:has-text('忙线')", timeout=15_000)
        await page.click("#consult-buttons button[data-name='住建局']")
        await page.wait_for_selector("#consult-parties:has-text('住建局')", timeout=20_000)
        assert "来电人" in (await page.locator("#consult-parties").text_content() or "")
        assert await page.locator("#consult-buttons button[data-name='住建局']").is_disabled()
        await shot(page, "operator-consultation")
        await until(lambda: department.saw("established"), 5, "the department answered")
        result = await asyncio.wait_for(call, 40)
    finally:
        await operator.quit()
        await department.quit()
        await busy.stop()
    assert result.ended_by == "caller"
    by_department = heard_by(department, tmp_path)
    assert heard_both(by_department, (CALLER_HZ, OPERATOR_HZ), DEPARTMENT_HZ) >= 4


# -- the directory in config.toml --------------------------------------------------


def test_the_directory_is_read_in_order_and_a_bad_uri_is_named_at_its_line(
    tmp_path: Path,
) -> None:
    from ivr.config import ConfigError, load_settings
    from ivr.consultation import directory

    good = tmp_path / "good.toml"
    good.write_text(
        '[queues.general]\noperators = ["sip:op@127.0.0.1:5080"]\n'
        '[emergency]\nfire = "sip:119@127.0.0.1:5090"\n'
        "[consultation]\nring_timeout = 20\n"
        'directory = { "水务集团" = "sip:water@10.0.0.4:5060", '
        '"住建局" = "sip:zjj@10.0.0.3:5060" }\n'
    )
    settings = load_settings(good)
    assert settings.consultation.ring_timeout == 20.0
    listed = [(e.number, e.name, e.kind) for e in directory(settings)]
    assert listed == [
        (1, "水务集团", "department"),
        (2, "住建局", "department"),
        (3, "119 火警", "emergency"),
    ]
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[queues.general]\noperators = ["sip:op@127.0.0.1:5080"]\n\n'
        "[consultation]\n"
        "silent_after = 0\n"
        "[consultation.directory]\n"
        '"住建局" = "zjj@10.0.0.3"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(bad)
    said = str(caught.value)
    assert f"{bad}:5: consultation.silent_after = 0: must be a number of seconds > 0" in said
    assert f"{bad}:7: consultation.directory.住建局" in said and "sip:user@host:port" in said


# -- REFER from the operator's phone, byte by byte ----------------------------------


def _answer(request: str, status: str, port: int, body: str = "") -> str:
    """A response to ``request`` (its Vias, From, To with our tag, Call-ID, CSeq)."""
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    vias = [line for line in head if line.lower().startswith("via:")]
    to = header(request, "To") or ""
    if ";tag=" not in to:
        to += ";tag=rawop"
    lines = [f"SIP/2.0 {status}", *vias, f"From: {header(request, 'From')}", f"To: {to}"]
    lines += [f"Call-ID: {header(request, 'Call-ID')}", f"CSeq: {header(request, 'CSeq')}"]
    lines.append(f"Contact: <sip:operator@127.0.0.1:{port}>")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


async def _next(peer: RawPeer, wanted: Callable[[str], bool], timeout: float = 15.0) -> str:
    """The next message ``wanted`` (others on the way are passed over)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await peer.expect(max(0.1, deadline - loop.time()))
        if wanted(message):
            return message


async def test_a_refer_names_a_directory_entry_or_is_refused_and_notifies_say_how_it_went(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    """The operator's phone is a raw SIP peer: a REFER to a URI not in the
    directory gets 403 and the call goes on; one to 水务集团 (sipp, busy) gets
    202, then NOTIFY 100 Trying and NOTIFY 486 Busy Here (Event: refer,
    message/sipfrag, the last one terminated). Then *71 as SIP INFO keys rings
    it again."""
    phone = await raw_peer()
    busy = SippUas(tmp_path / "busy", free_udp_port(), free_udp_port(even=True), scenario=str(BUSY))
    await busy.start()
    try:
        hotline = await start_hotline(
            [f"sip:operator@127.0.0.1:{phone.port}"],
            extra=f'[consultation]\ndirectory = {{ "水务集团" = "{busy.uri}" }}\n',
        )
        events = Events(hotline)
        call = await caller_with_tone(hotline, tmp_path, 14.0)
        offer = await _next(phone, lambda m: m.startswith("INVITE "), 20.0)
        phone.send(_answer(offer, "200 OK", phone.port, sdp(9, "0")), hotline.endpoint.port)
        await _next(phone, lambda m: m.startswith("ACK "))
        await asyncio.sleep(0.5)

        ivr_contact = (header(offer, "Contact") or "").strip("<>")
        allowed = {m.strip() for m in (header(offer, "Allow") or "").split(",")}
        assert {"REFER", "INFO"} <= allowed, "the IVR's INVITE to the operator must allow them"

        def refer(cseq: int, target: str) -> str:
            return "\r\n".join(
                [
                    f"REFER {ivr_contact} SIP/2.0",
                    f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bKrefer{cseq}",
                    "Max-Forwards: 70",
                    f"From: {header(offer, 'To')};tag=rawop",
                    f"To: {header(offer, 'From')}",
                    f"Call-ID: {header(offer, 'Call-ID')}",
                    f"CSeq: {cseq} REFER",
                    f"Contact: <sip:operator@127.0.0.1:{phone.port}>",
                    f"Refer-To: <{target}>",
                    "Content-Length: 0",
                    "",
                    "",
                ]
            )

        phone.send(refer(1, "sip:stranger@127.0.0.1:9"), hotline.endpoint.port)
        refused = await _next(phone, lambda m: m.startswith("SIP/2.0") and "REFER" in m)
        assert status_of(refused) == 403 and "Directory" in refused
        phone.send(refer(2, busy.uri), hotline.endpoint.port)
        accepted = await _next(phone, lambda m: m.startswith("SIP/2.0") and "2 REFER" in m)
        assert status_of(accepted) == 202
        notifies: list[str] = []
        while len(notifies) < 2:
            notify = await _next(phone, lambda m: m.startswith("NOTIFY "))
            phone.send(_answer(notify, "200 OK", phone.port), hotline.endpoint.port)
            notifies.append(notify)
        # keys as SIP INFO from the same phone: *71 rings 水务集团 again
        for cseq, key in enumerate("*71", start=3):
            info = refer(cseq, busy.uri).replace(f"{cseq} REFER", f"{cseq} INFO")
            info = info.replace(f"REFER {ivr_contact}", f"INFO {ivr_contact}")
            info = info.replace(f"Refer-To: <{busy.uri}>\r\n", "")
            body = f"Signal={key}\r\nDuration=160\r\n"
            info = info.replace(
                "Content-Length: 0\r\n",
                f"Content-Type: application/dtmf-relay\r\nContent-Length: {len(body)}\r\n",
            )
            phone.send(info + body, hotline.endpoint.port)
            await asyncio.sleep(0.2)
        await until(lambda: events.states("水务集团").count("busy") == 2, 10, "rung by INFO keys")
        await asyncio.sleep(2.0)
        assert not call.done(), "the call ended with the refused or failed REFER"
        result = await asyncio.wait_for(call, 30)
    finally:
        phone.close()
        await busy.stop()
    assert result.ended_by == "caller"
    for notify in notifies:
        assert header(notify, "Event") == "refer"
        assert (header(notify, "Content-Type") or "").startswith("message/sipfrag")
    assert notifies[0].endswith("SIP/2.0 100 Trying\r\n")
    assert header(notifies[0], "Subscription-State") == "active;expires=60"
    assert notifies[1].endswith("SIP/2.0 486 Busy Here\r\n")
    assert (header(notifies[1], "Subscription-State") or "").startswith("terminated")
    assert events.states("水务集团") == ["ringing", "busy", "ringing", "busy"]
