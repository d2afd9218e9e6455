"""The survey node: what a citizen's words count as (不满意 contains 满意),
the matter sentence made from a ticket, and the node checked like every
other (file:line for each problem)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.dialplan.graph import plan_graph
from ivr.dialplan.load import DialPlanError, load_dialplan, parse_dialplan
from ivr.dialplan.model import SurveyNode
from ivr.followups import Outcome
from ivr.followups.survey import heard_answer, matter_sentence

ROOT = Path(__file__).resolve().parents[1]
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("said", "outcome"),
    [
        ("满意", Outcome.SATISFIED),
        ("非常满意。", Outcome.SATISFIED),
        ("嗯，我很满意，谢谢", Outcome.SATISFIED),
        ("基本满意", Outcome.BASICALLY),
        ("还行吧", Outcome.BASICALLY),
        ("一般", Outcome.BASICALLY),
        ("不满意", Outcome.UNSATISFIED),
        ("不太满意", Outcome.UNSATISFIED),
        ("很不满意！", Outcome.UNSATISFIED),
        ("不是很满意", Outcome.UNSATISFIED),
        ("不满一", Outcome.UNSATISFIED),  # a recogniser's near-homophone: sound match
        ("满一", Outcome.SATISFIED),
        ("三", Outcome.UNSATISFIED),  # the key said, not pressed
        ("按一", Outcome.SATISFIED),
        ("2", Outcome.BASICALLY),
        ("", None),
        ("喂，你好，哪位？", None),
        ("我不知道", None),
    ],
)
def test_what_a_spoken_answer_counts_as(said: str, outcome: Outcome | None) -> None:
    assert heard_answer(said) is outcome


def fields(**values: str) -> dict[str, object]:
    return {k: {"value": v, "evidence": [], "source": "prefill"} for k, v in values.items()}


def test_the_matter_sentence_says_date_place_and_category() -> None:
    reported = datetime(2026, 12, 3, 10, 30, tzinfo=SHANGHAI).timestamp()
    template = "您于{date}反映的{place}{category}问题已办结。"
    said = matter_sentence(
        template, fields(district="西湖区", address="文三路", category="停水"), reported, SHANGHAI
    )
    assert said == "您于十二月三日反映的西湖区文三路停水问题已办结。"
    # an address that already names its district says it once; missing parts are left out
    said = matter_sentence(
        template, fields(district="西湖区", address="西湖区文三路"), reported, SHANGHAI
    )
    assert said == "您于十二月三日反映的西湖区文三路问题已办结。"
    assert matter_sentence(template, {}, reported, SHANGHAI) == "您于十二月三日反映的问题已办结。"


def test_the_bundled_followup_plan_loads() -> None:
    plan = load_dialplan(
        ROOT / "dialplans" / "followup.toml", queues={"general"}, dialects={"mandarin", "yue"}
    )
    survey = plan.nodes[plan.start]
    assert isinstance(survey, SurveyNode)
    assert {"survey_question", "survey_again", "survey_comment"} <= plan.prompt_keys()
    assert plan.needs_speech()
    graph = plan_graph(plan)
    assert {"id": "survey", "type": "survey", "label": "survey_question", "line": survey.line} in (
        graph["nodes"]
    )


BAD = """\
[plan]
name = "f"
start = "survey"

[prompts]
q = "满意请按一"

[nodes.survey]
type = "survey"
matter = "您于{day}反映的问题已办结"
prompt = "q"
comment_prompt = "nope"
next = "bye"
on_no_answer = "byebye"
timeout = 0

[nodes.bye]
type = "hangup"
"""


def test_a_bad_survey_node_is_reported_at_its_lines() -> None:
    with pytest.raises(DialPlanError) as caught:
        parse_dialplan(BAD, "followup.toml")
    text = str(caught.value)
    assert "followup.toml:10:" in text and "{day}" in text and "{date}" in text
    assert "followup.toml:15:" in text and "timeout 0 s out of range 1..60" in text
    fixed = BAD.replace("{day}", "{date}").replace("timeout = 0", "timeout = 5")
    with pytest.raises(DialPlanError) as caught:
        parse_dialplan(fixed, "followup.toml")
    text = str(caught.value)
    assert "followup.toml:14:" in text and "unknown node 'byebye'" in text
    fixed = fixed.replace('"byebye"', '"bye"')
    with pytest.raises(DialPlanError) as caught:
        parse_dialplan(fixed, "followup.toml")
    assert "followup.toml:12:" in str(caught.value) and "'nope' has no text" in str(caught.value)
    missing = fixed.replace('matter = "您于{date}反映的问题已办结"\n', "")
    with pytest.raises(DialPlanError, match="missing matter"):
        parse_dialplan(missing, "followup.toml")
