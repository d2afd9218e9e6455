"""Dial plan loading (each defect reported at its file:line) and the
interpreter walking a scripted call."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ivr.call import CallEnded, EndReason, TransferOutcome, TransferResult
from ivr.cli import main as cli_main
from ivr.dialplan.load import DialPlanError, load_dialplan, parse_dialplan
from ivr.dialplan.run import run_dialplan
from ivr.media.prompt_audio import PromptAudio
from ivr.speech.utterance import ListenSettings, Utterance, UtteranceEnd
from tests.conftest import ROOT

BROKEN = Path(__file__).parent / "data" / "dialplans"


def problems_of(name: str, **kwargs: object) -> list[str]:
    with pytest.raises(DialPlanError) as info:
        load_dialplan(BROKEN / name, **kwargs)  # type: ignore[arg-type]
    return [f"{Path(p.file).name}:{p.line}: {p.message}" for p in info.value.problems]


def test_bundled_plan_is_clean() -> None:
    plan = load_dialplan(ROOT / "dialplans" / "12345.toml", queues={"general"})
    assert plan.start == "welcome" and "main" in plan.nodes
    assert len(plan.version) == 12


def test_unknown_target_points_at_the_option_line() -> None:
    (problem,) = problems_of("unknown_target.toml")
    assert problem.startswith("unknown_target.toml:14: ")
    assert "unknown node 'nowhere'" in problem


def test_unreachable_node() -> None:
    (problem,) = problems_of("unreachable.toml")
    assert problem.startswith("unreachable.toml:12: ")
    assert "'island' cannot be reached" in problem


def test_missing_prompt_with_suggestion() -> None:
    (problem,) = problems_of("missing_prompt.toml")
    assert problem.startswith("missing_prompt.toml:10: ")
    assert "'greeting' has no text" in problem


def test_missing_prompt_is_fine_when_recorded() -> None:
    plan = load_dialplan(BROKEN / "missing_prompt.toml", recorded_prompts={"greeting"})
    assert plan.nodes["hello"].prompt == "greeting"  # type: ignore[union-attr]


def test_duplicate_key() -> None:
    (problem,) = problems_of("duplicate_key.toml")
    assert problem.startswith("duplicate_key.toml:15: ")
    assert "duplicate key" in problem


def test_bad_node_type() -> None:
    (problem,) = problems_of("bad_type.toml")
    assert problem.startswith("bad_type.toml:9: ")
    assert "unknown type 'ring'" in problem and "types: play, menu" in problem


def test_syntax_error_line() -> None:
    (problem,) = problems_of("syntax.toml")
    assert problem.startswith("syntax.toml:3: TOML syntax")


def test_bad_field_types_all_reported() -> None:
    found = problems_of("bad_field_type.toml")
    assert any(
        p.startswith("bad_field_type.toml:11: ") and "timeout must be a number" in p for p in found
    ), found


def test_unknown_queue() -> None:
    found = problems_of_plan(queues={"complaints"})
    assert any("queue 'general' is not in config.toml" in p for p in found)


def problems_of_plan(**kwargs: object) -> list[str]:
    with pytest.raises(DialPlanError) as info:
        load_dialplan(ROOT / "dialplans" / "12345.toml", **kwargs)  # type: ignore[arg-type]
    return [str(p) for p in info.value.problems]


def test_check_command_prints_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(
        [
            "--config",
            str(ROOT / "config.toml"),
            "dialplan",
            "check",
            str(BROKEN / "unknown_target.toml"),
        ]
    )
    assert code == 1
    assert "unknown_target.toml:14:" in capsys.readouterr().out
    code = cli_main(
        [
            "--config",
            str(ROOT / "config.toml"),
            "dialplan",
            "check",
            str(ROOT / "dialplans" / "12345.toml"),
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.startswith("OK: 12345")


def test_check_without_a_config_says_what_it_could_not_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plan naming a queue no config has: with no config found, the check
    must not pass it silently but say queues were not checked, and where it looked."""
    plan = tmp_path / "plan.toml"
    source = (ROOT / "tests" / "data" / "dialplans" / "straight_to_queue.toml").read_text()
    plan.write_text(source.replace('queue = "general"', 'queue = "no_such_queue"'))
    missing = tmp_path / "nowhere" / "config.toml"
    code = cli_main(["dialplan", "check", str(plan), "--config", str(missing)])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("OK:")
    assert "queue names" in out and "NOT checked" in out and str(missing) in out
    # with the server's config (given after the command), the unknown queue is an error
    code = cli_main(["dialplan", "check", str(plan), "--config", str(ROOT / "config.toml")])
    out = capsys.readouterr().out
    assert code == 1 and "no_such_queue" in out and "NOT checked" not in out


def test_config_is_taken_before_or_after_the_command() -> None:
    from ivr.cli import build_parser

    parser = build_parser()
    for argv in (
        ["--config", "a.toml", "serve"],
        ["serve", "--config", "a.toml"],
        ["callbacks", "list", "--config", "a.toml"],
        ["users", "add", "x", "--role", "admin", "--config", "a.toml"],
        ["dialplan", "check", "p.toml", "--config", "a.toml"],
        ["voices", "status", "--config", "a.toml"],
    ):
        assert parser.parse_args(argv).config == Path("a.toml"), argv
    assert parser.parse_args(["serve"]).config == Path("config.toml")


class ScriptedCall:
    """A Call whose caller presses keys from a script (None = no key)."""

    def __init__(
        self, keys: list[str | None], bridged: bool = True, said: list[str | None] | None = None
    ) -> None:
        self.keys = keys
        self.said = said or []  # what the caller says at each listen (None: silence)
        self.described: list[str] = []
        self.notes: list[str] = []
        self.declined = False
        self.bridged = bridged
        self.played: list[str] = []
        self.path: list[str] = []
        self.hung_up = False
        self.transfers: list[str] = []
        self.announced: list[str] = []

    @property
    def call_id(self) -> str:
        return "test"

    @property
    def caller(self) -> str:
        return "13800138000"

    def mark(self, node_id: str) -> None:
        self.path.append(node_id)

    async def play(self, prompt: PromptAudio, *, barge_in: bool = True) -> str | None:
        self.played.append(prompt.key)
        return None

    async def collect_digits(
        self, max_digits: int, timeout: float, *, terminator: str = "#"
    ) -> str:
        if not self.keys:
            raise CallEnded(EndReason.CALLER_HANGUP)
        return self.keys.pop(0) or ""

    async def transfer(
        self,
        queue: str,
        *,
        hold_prompt: PromptAudio | None,
        announce: Any = None,
        announce_every: float = 30.0,
        wait: Any = None,
    ) -> TransferResult:
        if announce is not None:
            self.announced.append(announce(3).key)
        self.transfers.append(queue)
        if self.bridged:
            return TransferResult(TransferOutcome.BRIDGED, operator="sip:op@127.0.0.1")
        return TransferResult(TransferOutcome.NO_OPERATOR)

    async def hangup(self) -> None:
        self.hung_up = True

    async def listen(self, settings: ListenSettings, *, stop_on_key: bool) -> Utterance | str:
        text = self.said.pop(0) if self.said else None
        if text is None:
            return Utterance(np.zeros(0, np.int16), UtteranceEnd.NO_SPEECH, 0.0, 0)
        pcm = np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int16)
        return Utterance(pcm, UtteranceEnd.SILENCE, 1.0, 50)

    async def recognise(self, utterance: Utterance, grammar: list[str] | None) -> str:
        return utterance.pcm.astype(np.uint8).tobytes().decode()

    async def describe(self, utterance: Utterance, *, about: str = "caller") -> None:
        text = await self.recognise(utterance, None)
        self.described.append(text if about == "caller" else f"{about}: {text}")

    async def note(self, text: str) -> None:
        self.notes.append(text)

    def decline_callback(self) -> None:
        self.declined = True

    speed = 1.0
    timeout_factor = 1.0

    def enter_elderly_mode(self) -> None:
        self.speed, self.timeout_factor = 0.8, 1.5

    enterprise: str | None = None

    def enter_enterprise_service(self) -> None:
        if self.enterprise is None:
            self.enterprise = ""

    dialect = "mandarin"
    callback_person = "caller"

    def set_dialect(self, dialect: str) -> None:
        self.dialect = dialect

    def set_speed(self, speed: float) -> None:
        self.speed, self.timeout_factor = speed, (1.0 if speed == 1.0 else 1.5)

    def callback_to(self, person: str) -> None:
        self.callback_person = person


class Prompts:
    def __init__(self) -> None:
        self.speeds: list[tuple[str, float]] = []
        self.dialects: list[tuple[str, str | None]] = []

    def get(self, key: str, speed: float = 1.0, dialect: str | None = None) -> PromptAudio:
        self.speeds.append((key, speed))
        self.dialects.append((key, dialect))
        return PromptAudio(
            key=key, pcm=np.zeros(160, np.int16), ulaw=b"\xff" * 160, alaw=b"\xd5" * 160
        )


@pytest.fixture
def plan() -> object:
    return load_dialplan(ROOT / "dialplans" / "12345.toml", queues={"general"})


async def test_key_zero_transfers(plan: object) -> None:
    call = ScriptedCall(["0"])
    assert await run_dialplan(plan, call, Prompts()) == "bridged"  # type: ignore[arg-type]
    assert call.path == ["welcome", "main", "operator"]
    assert call.transfers == ["general"]


async def test_invalid_then_valid(plan: object) -> None:
    call = ScriptedCall(["5", "1", "*", "0"])
    await run_dialplan(plan, call, Prompts())  # type: ignore[arg-type]
    assert call.path == ["welcome", "main", "policy", "main", "operator"]
    assert "invalid" in call.played


async def test_timeouts_go_to_after_retries(plan: object) -> None:
    call = ScriptedCall([None, None, None])
    await run_dialplan(plan, call, Prompts())  # type: ignore[arg-type]
    assert call.played.count("main_menu") == 3 and call.played.count("no_input") == 2
    assert call.path[-1] == "operator"


async def test_no_operator_hangs_up_with_sorry(plan: object) -> None:
    call = ScriptedCall(["0"], bridged=False)
    assert await run_dialplan(plan, call, Prompts()) == "hangup"  # type: ignore[arg-type]
    assert call.hung_up and call.played[-1] == "sorry"


async def test_goto_repeats_menu(plan: object) -> None:
    call = ScriptedCall(["9", "*", "0"])
    await run_dialplan(plan, call, Prompts())  # type: ignore[arg-type]
    assert call.path == ["welcome", "main", "more", "main_again", "main", "operator"]


@pytest.mark.parametrize(
    ("keys", "reached"),
    [(["9", "7"], "elderly"), (["9", "6"], "dialects"), (["9", "8"], "decline_callback")],
)
async def test_the_more_menu_leads_where_the_old_main_keys_did(
    plan: object, keys: list[str], reached: str
) -> None:
    call = ScriptedCall([*keys, None, None, None, None, None, None])
    with contextlib.suppress(CallEnded):
        await run_dialplan(plan, call, Prompts())  # type: ignore[arg-type]
    assert call.path[:4] == ["welcome", "main", "more", reached]
    # ... and the same keys still work straight from the main menu
    direct = ScriptedCall([keys[1], None, None, None, None, None, None])
    with contextlib.suppress(CallEnded):
        await run_dialplan(plan, direct, Prompts())  # type: ignore[arg-type]
    assert direct.path[:3] == ["welcome", "main", reached]


async def test_the_main_menu_is_short_and_says_the_operator_first(tmp_path: Path) -> None:
    """Before: eight choices, 32 s of espeak-ng speech before the caller heard them all."""
    from ivr.prompts import PromptLibrary

    bundled = load_dialplan(ROOT / "dialplans" / "12345.toml")
    text = bundled.prompts["main_menu"]
    said = re.findall(r"按(.)", text)
    assert len(said) <= 5, said
    assert said[0] == "零", "the operator comes first"
    assert set(said) >= {"零", "一", "二", "三"}
    library = PromptLibrary(tmp_path / "voices", tmp_path / "cache")
    await library.build({"main_menu": text})
    assert library.get("main_menu").duration <= 15.0


async def test_caller_leaving_propagates(plan: object) -> None:
    call = ScriptedCall([])
    with pytest.raises(CallEnded):
        await run_dialplan(plan, call, Prompts())  # type: ignore[arg-type]


def test_speech_nodes_are_checked_with_lines() -> None:
    problems = problems_of("bad_speech_nodes.toml")
    text = "\n".join(problems)
    where = "bad_speech_nodes.toml:19: node 'menu'"
    assert f"{where}: words for key '2', which is not an option" in text
    assert "bad_speech_nodes.toml:26: node 'ask': max_seconds 500 s out of range 3..120" in text


def test_describe_prompt_must_exist() -> None:
    text = (BROKEN / "bad_speech_nodes.toml").read_text()
    text = text.replace("max_seconds = 500", "max_seconds = 20").replace('2 = ["投诉"]', "")
    with pytest.raises(DialPlanError) as info:
        parse_dialplan(text, "plan.toml")
    assert "plan.toml:27: node 'ask': no_speech_prompt 'ask_again' has no text" in str(info.value)


def test_bundled_plan_listens() -> None:
    plan = load_dialplan(ROOT / "dialplans" / "12345.toml", queues={"general"})
    assert plan.needs_speech()
    assert plan.nodes["main"].words["0"][0] == "人工"  # type: ignore[union-attr]


async def test_spoken_option_chooses_like_a_key(plan: object) -> None:
    # the caller stays silent at the key prompt, then says a near-homophone of 投诉
    call = ScriptedCall([None, "1"], said=["我要头诉一个商家", "我叫王芳，电话幺三八"])
    await run_dialplan(plan, call, Prompts())  # type: ignore[arg-type]
    assert call.path == ["welcome", "main", "complaint", "complaint_info", "describe", "operator"]
    assert call.described == ["我叫王芳，电话幺三八"]


async def test_spoken_words_that_match_nothing_count_as_invalid(plan: object) -> None:
    call = ScriptedCall([None, "0"], said=["今天天气不错"])
    await run_dialplan(plan, call, Prompts())  # type: ignore[arg-type]
    assert "invalid" in call.played
    assert call.path == ["welcome", "main", "operator"]


async def test_describe_keeps_speech_and_moves_on(plan: object) -> None:
    call = ScriptedCall(["3"], said=["我叫李明，家里停水三天了"])
    assert await run_dialplan(plan, call, Prompts()) == "bridged"  # type: ignore[arg-type]
    assert call.path == ["welcome", "main", "help", "describe", "operator"]
    assert call.described == ["我叫李明，家里停水三天了"]
    assert call.played.count("describe") == 1


async def test_describe_silence_twice_goes_on_with_a_note(plan: object) -> None:
    call = ScriptedCall(["3"], said=[None, None])
    await run_dialplan(plan, call, Prompts())  # type: ignore[arg-type]
    assert call.played[-3:] == ["describe", "describe_again", "connecting"]
    assert call.described == [] and "said nothing" in call.notes[0]
    assert call.path[-1] == "operator"


async def test_caller_can_decline_a_callback(plan: object) -> None:
    call = ScriptedCall(["8", "0"])
    assert await run_dialplan(plan, call, Prompts()) == "bridged"  # type: ignore[arg-type]
    assert call.declined and call.path == [
        "welcome",
        "main",
        "decline_callback",
        "main",
        "operator",
    ]
    assert "no_callback" in call.played


async def test_elderly_service_slows_prompts_and_repeats_the_menu(plan: object) -> None:
    call = ScriptedCall(["7", None, "*", "0"])
    prompts = Prompts()
    await run_dialplan(plan, call, prompts)  # type: ignore[arg-type]
    assert call.path == ["welcome", "main", "elderly", "elderly_menu", "main", "operator"]
    assert ("welcome", 1.0) in prompts.speeds and ("elderly", 0.8) in prompts.speeds
    # after the switch: the menu at 0.8, said once more on silence without a "no input"
    after = prompts.speeds[prompts.speeds.index(("elderly", 0.8)) :]
    assert after.count(("elderly_menu", 0.8)) == 2 and ("no_input", 0.8) not in after


async def test_caller_chooses_cantonese_then_a_slower_speed(plan: object) -> None:
    call = ScriptedCall(["6", "2", "7", "2", "0"])
    prompts = Prompts()
    await run_dialplan(plan, call, prompts)  # type: ignore[arg-type]
    assert call.path == [
        "welcome", "main", "dialects", "to_yue", "main", "elderly", "elderly_menu",
        "speed_slower", "main", "operator",
    ]  # fmt: skip
    assert call.dialect == "yue" and call.speed == 0.65
    # prompts before the choice in the default dialect, after it in Cantonese
    assert prompts.dialects[0] == ("welcome", "mandarin")
    assert ("dialect_set", "yue") in prompts.dialects
    assert prompts.dialects[-3:] == [
        ("connecting", "yue"),
        ("hold", "yue"),
        ("queue_position_3", "yue"),
    ]
    assert ("main_menu", 0.65) in prompts.speeds


async def test_back_to_normal_speed(plan: object) -> None:
    call = ScriptedCall(["7", "3", "0"])
    await run_dialplan(plan, call, Prompts())  # type: ignore[arg-type]
    assert call.path[-3:] == ["speed_normal", "main", "operator"]
    assert call.speed == 1.0 and call.timeout_factor == 1.0


async def test_proxy_path_describes_the_beneficiary_and_chooses_the_callback(
    plan: object,
) -> None:
    call = ScriptedCall(
        ["7", "4", "2"], said=["老人叫张秀英，电话幺三九零零零零幺幺幺幺", "家里停水了"]
    )
    await run_dialplan(plan, call, Prompts())  # type: ignore[arg-type]
    assert call.path == [
        "welcome", "main", "elderly", "elderly_menu", "proxy", "proxy_callback",
        "callback_beneficiary", "describe", "operator",
    ]  # fmt: skip
    assert call.described == ["beneficiary: 老人叫张秀英，电话幺三九零零零零幺幺幺幺", "家里停水了"]
    assert call.callback_person == "beneficiary"


def test_wait_prompt_must_say_minutes_and_follow_the_place_in_line(tmp_path: Path) -> None:
    plan = """[plan]
name = "wait"
start = "op"

[prompts]
place = "您现在排在第{n}位。"
wait = "请耐心等待。"
bye = "再见。"

[nodes.op]
type = "transfer"
queue = "general"
wait_prompt = "wait"
on_no_operator = "bye"

[nodes.bye]
type = "hangup"
prompt = "bye"
"""
    path = tmp_path / "wait.toml"
    path.write_text(plan, encoding="utf-8")
    with pytest.raises(DialPlanError) as info:
        load_dialplan(path)
    problems = sorted(f"{p.line}: {p.message}" for p in info.value.problems)
    assert len(problems) == 2, problems
    assert problems[0].startswith("13: ") and "must say {n} where the minutes go" in problems[0]
    assert problems[1].startswith("13: ") and "set position_prompt too" in problems[1]
    path.write_text(
        plan.replace("请耐心等待。", "预计还需等待约{n}分钟。").replace(
            'wait_prompt = "wait"', 'position_prompt = "place"\nwait_prompt = "wait"'
        ),
        encoding="utf-8",
    )
    node = load_dialplan(path).nodes["op"]
    assert getattr(node, "wait_prompt", None) == "wait"
