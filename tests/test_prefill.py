"""Ticket prefill (ivr.prefill): accuracy on the labelled hotline utterances,
and the tricky parts one by one."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from bench.prefill_accuracy import FIELDS, load_rows, score, table
from ivr.prefill import (
    Evidence,
    FieldValue,
    Gazetteer,
    Prefill,
    PrefillDataError,
    Prefiller,
    Taxonomy,
    load_gazetteer,
    load_taxonomy,
)
from ivr.prefill.chinese_numbers import digit_string, to_arabic

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "hotline_utterances.tsv"
GAZETTEER = ROOT / "gazetteer.toml"
REQUIRED_CATEGORIES = (
    "供水", "供暖", "供电", "燃气", "噪音扰民", "道路交通", "环境卫生", "物业",
    "欠薪", "消费维权", "医疗", "教育", "住房", "政策咨询", "其他",
)  # fmt: skip


@pytest.fixture(scope="module")
def prefiller() -> Prefiller:
    return Prefiller(load_taxonomy(), load_gazetteer(GAZETTEER))


def fill(prefiller: Prefiller, text: str, caller_id: str | None = None) -> Prefill:
    return prefiller.prefill(text, caller_id=caller_id)


def value(field: FieldValue | None) -> str | None:
    return field.value if field is not None else None


def all_evidence(p: Prefill) -> list[Evidence]:
    fields = [p.name, p.phone, p.address, p.district, p.category, p.urgency, p.sentiment]
    found = [e for f in fields if f is not None for e in f.evidence]
    if p.emergency is not None:
        found += p.emergency.evidence
    return found + list(p.counsellor_evidence)


# --- the labelled set -------------------------------------------------------


def test_labelled_set_accuracy(prefiller: Prefiller) -> None:
    rows = load_rows(DATA)
    accuracy = score(rows, prefiller)
    print()
    print(table(accuracy))
    for field in FIELDS:
        assert accuracy[field] >= 0.9, f"{field}: {accuracy[field]:.3f}"
    assert accuracy["overall"] >= 0.93


def test_labelled_set_covers_every_category_and_field() -> None:
    rows = load_rows(DATA)
    assert len(rows) >= 45
    assert len({r.id for r in rows}) == len(rows)
    categories = Counter(r.expected["category"] for r in rows)
    for name in REQUIRED_CATEGORIES:
        assert categories[name] >= 2, f"{name} appears {categories[name]} times"
    assert set(categories) <= set(load_taxonomy().names)
    for field in ("name", "phone", "address", "district"):
        present = sum(r.expected[field] is not None for r in rows)
        assert present >= 15, f"{field} non-null in only {present} rows"
    assert {r.expected["emergency"] for r in rows} == {
        None,
        "fire",
        "gas_leak",
        "violence",
        "medical",
    }
    assert {r.expected["urgency"] for r in rows} == {"紧急", "较急", "一般"}
    assert {r.expected["sentiment"] for r in rows} == {"平静", "不满", "愤怒", "求助"}
    assert sum(r.expected["needs_counsellor"] is True for r in rows) >= 2
    # the caller ID is the callback number when none is spoken
    fallback = [
        r
        for r in rows
        if r.caller_id
        and r.expected["phone"] is not None
        and str(r.expected["phone"]) in digit_string(r.caller_id)
        and str(r.expected["phone"]) not in digit_string(r.transcript)
    ]
    assert len(fallback) >= 3
    spoken_landlines = [
        r
        for r in rows
        if str(r.expected["phone"]).startswith("0")
        and str(r.expected["phone"]) in digit_string(r.transcript)
    ]
    assert len(spoken_landlines) >= 2


def test_labelled_rows_are_well_formed() -> None:
    for row in load_rows(DATA):
        assert row.expected["needs_counsellor"] in (True, False)
        assert "\t" not in row.transcript and row.transcript.strip()


# --- phone numbers ----------------------------------------------------------


def test_yao_and_dong_digits(prefiller: Prefiller) -> None:
    p = fill(prefiller, "我手机号是幺三九幺二三四五六七八")
    assert value(p.phone) == "13912345678"
    assert p.phone is not None and p.phone.source == "speech"
    assert p.phone.evidence[0].text == "幺三九幺二三四五六七八"
    p = fill(prefiller, "手机号码 幺五九 洞洞七两 三四五六 谢谢")
    assert value(p.phone) == "15900723456"


def test_grouped_arabic_digits_and_dashes(prefiller: Prefiller) -> None:
    assert value(fill(prefiller, "电话是138-1234-5678，谢谢").phone) == "13812345678"
    assert value(fill(prefiller, "我的联系方式是139 0571 2468").phone) == "13905712468"
    assert value(fill(prefiller, "手机号1 3 8 1 2 3 4 5 6 7 8").phone) == "13812345678"


def test_landlines(prefiller: Prefiller) -> None:
    assert value(fill(prefiller, "电话0571-87654321").phone) == "057187654321"
    assert value(fill(prefiller, "电话是零五七幺八七六五四三二幺").phone) == "057187654321"
    assert value(fill(prefiller, "北京的座机010-12345678").phone) == "01012345678"
    # a local number after a phone cue gets the deployment's area code
    assert value(fill(prefiller, "你打我家电话87654321就行").phone) == "057187654321"


def test_12345_and_other_short_numbers_are_not_phones(prefiller: Prefiller) -> None:
    p = fill(prefiller, "我打了12345好几次了，还打过110，楼下3幢501室")
    assert p.phone is None
    assert fill(prefiller, "我打12345", caller_id="12345").phone is None


def test_number_after_address_is_not_glued_to_it(prefiller: Prefiller) -> None:
    p = fill(prefiller, "住在文三路100号3幢2单元501 13812345678")
    assert value(p.phone) == "13812345678"
    assert p.address_parts.get("room") == "501室"


def test_caller_id_fallback(prefiller: Prefiller) -> None:
    p = fill(prefiller, "我们小区停水了", caller_id="+8613812345678")
    assert p.phone == FieldValue("13812345678", (), "caller_id")
    assert value(fill(prefiller, "停水了", caller_id="8613812345678").phone) == "13812345678"
    assert value(fill(prefiller, "停水了", caller_id="057187654321").phone) == "057187654321"
    assert fill(prefiller, "停水了", caller_id="anonymous").phone is None
    assert fill(prefiller, "停水了", caller_id="").phone is None
    spoken = fill(prefiller, "电话13912345678", caller_id="13812345678")
    assert spoken.phone is not None
    assert (spoken.phone.value, spoken.phone.source) == ("13912345678", "speech")


def test_empty_transcript_gives_caller_id_and_defaults(prefiller: Prefiller) -> None:
    p = fill(prefiller, "", caller_id="13812345678")
    assert value(p.phone) == "13812345678"
    assert p.name is None and p.address is None and p.district is None
    assert (p.category.value, p.category.evidence, p.category.source) == ("其他", (), "default")
    assert (p.urgency.value, p.sentiment.value) == ("一般", "平静")
    assert p.emergency is None and p.emergency_service is None


# --- numbers and addresses -------------------------------------------------


@pytest.mark.parametrize(
    ("spoken", "arabic"),
    [
        ("二十三", "23"),
        ("一百零八", "108"),
        ("五零一", "501"),
        ("十二", "12"),
        ("十", "10"),
        ("一百二", "120"),
        ("两百", "200"),
        ("三千五", "3500"),
        ("一千零一", "1001"),
        ("零五", "05"),
        ("幺洞两", "102"),
        ("１００", "100"),
        ("100", "100"),
    ],
)
def test_chinese_numerals(spoken: str, arabic: str) -> None:
    assert to_arabic(spoken) == arabic


def test_address_numbers_are_normalised(prefiller: Prefiller) -> None:
    p = fill(prefiller, "我住在西湖区文三路一百零八号三幢二单元五零一室，电话13812345678")
    assert value(p.address) == "西湖区文三路108号3幢2单元501室"
    assert p.address_parts == {
        "district": "西湖区",
        "road": "文三路",
        "number": "108号",
        "building": "3幢",
        "unit": "2单元",
        "room": "501室",
    }
    p = fill(prefiller, "家住拱墅区大关小区二十三号楼一单元三零二")
    assert value(p.address) == "拱墅区大关小区23号楼1单元302室"


def test_full_address_with_province_and_city(prefiller: Prefiller) -> None:
    p = fill(prefiller, "地址：浙江省杭州市西湖区文新街道文三路100号3幢2单元501室")
    assert value(p.address) == "浙江省杭州市西湖区文新街道文三路100号3幢2单元501室"
    assert p.address_parts["province"] == "浙江省"
    assert p.address_parts["city"] == "杭州市"
    assert p.address_parts["street"] == "文新街道"


def test_road_names_keep_their_numerals(prefiller: Prefiller) -> None:
    p = fill(prefiller, "住在文一西路二十号")
    assert value(p.address) == "文一西路20号"


def test_district_from_street_alias_and_sound(prefiller: Prefiller) -> None:
    p = fill(prefiller, "我住在文新街道，这边停水了")
    assert value(p.district) == "西湖区"
    assert p.district is not None and p.district.evidence[0].text == "文新街道"
    assert value(fill(prefiller, "我是萧山这边的").district) == "萧山区"
    assert value(fill(prefiller, "我以前是江干区的").district) == "上城区"  # renamed district
    # Whisper's homophones before 区
    assert value(fill(prefiller, "我是宾江区的").district) == "滨江区"
    assert value(fill(prefiller, "我是肖山区的").district) == "萧山区"


def test_alias_inside_a_road_name_is_not_a_district(prefiller: Prefiller) -> None:
    p = fill(prefiller, "我家住余杭塘路二十号")
    assert p.district is None
    assert value(p.address) == "余杭塘路20号"
    assert fill(prefiller, "在西湖大道上堵车了").district is None


def test_district_alone_is_not_an_address(prefiller: Prefiller) -> None:
    p = fill(prefiller, "我是余杭区的，想咨询一下社保")
    assert p.address is None and p.address_parts == {}
    assert value(p.district) == "余杭区"


def test_sentence_without_address_gives_none(prefiller: Prefiller) -> None:
    for text in (
        "我在马路边上等公交车等了一个小时",
        "我家楼下的路灯坏了",
        "在路口那个红绿灯",
        "现在健身房关门跑路了",
    ):
        assert fill(prefiller, text).address is None, text


# --- names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("我叫张伟，电话13812345678", "张伟"),
        ("你好我是李秀英我住在拱墅区", "李秀英"),
        ("本人刘洋家住西湖区", "刘洋"),
        ("我的名字叫欧阳娜娜", "欧阳娜娜"),
        ("我叫王强电话是幺三八", "王强"),
        ("我姓王，住在文三路", "王"),
        ("我姓王，王先生", "王先生"),
        ("我是黄女士", "黄女士"),
        ("免贵姓周，周女士", "周女士"),
        ("我姓王叫王建国", "王建国"),
        ("我是说那个红绿灯坏了", None),
        ("我是这个小区的业主", None),
        ("我是余杭区的", None),
        ("我是萧山区瓜沥镇的", None),
        ("我是房东，租客不交房租", None),
        ("我是王明的家属", None),
    ],
)
def test_names(prefiller: Prefiller, text: str, name: str | None) -> None:
    assert value(fill(prefiller, text).name) == name


# --- evidence --------------------------------------------------------------


def test_evidence_points_at_the_words(prefiller: Prefiller) -> None:
    text = (
        "喂你好，我叫张伟，家住西湖区文三路100号3幢2单元501室，我们家厨房闻到煤气味，"
        "已经停水好几天了，家里有老人，电话是13812345678，求求你们帮帮我"
    )
    p = fill(prefiller, text)
    evidence = all_evidence(p)
    assert evidence
    for e in evidence:
        assert 0 <= e.start < e.end <= len(text)
        assert text[e.start : e.end] == e.text
    assert p.name is not None and "张伟" in p.name.evidence[0].text
    assert p.phone is not None and p.phone.evidence[0].text == "13812345678"
    assert p.address is not None and p.address.evidence[0].text == "西湖区文三路100号3幢2单元501室"
    assert p.emergency is not None and p.emergency.value == "gas_leak"
    assert any("煤气" in e.text for e in p.emergency.evidence)
    assert any("帮帮" in e.text or "求求" in e.text for e in p.sentiment.evidence)
    assert p.urgency.value == "紧急" and "燃气" in p.urgency_reason


def test_category_evidence_and_reason(prefiller: Prefiller) -> None:
    p = fill(prefiller, "我们这边停水了，自来水到现在都没来")
    assert p.category.value == "供水"
    assert {e.text for e in p.category.evidence} >= {"停水", "自来水"}
    p = fill(prefiller, "暖气不热已经一个星期了家里有个八十岁的老人")
    assert (p.category.value, p.urgency.value) == ("供暖", "较急")
    assert "一个星期" in p.urgency_reason
    assert any(e.text == "老人" for e in p.urgency.evidence)


# --- categories, urgency, sentiment, emergencies ----------------------------


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("水压太小了，楼上都没水", "供水"),
        ("暖气不热", "供暖"),
        ("家里老是跳闸，整栋楼停电", "供电"),
        ("天然气的燃气费怎么交", "燃气"),
        ("楼上装修太吵了", "噪音扰民"),
        ("路口的红绿灯坏了，堵车", "道路交通"),
        ("垃圾堆着没人清，臭得很", "环境卫生"),
        ("电梯坏了物业不修", "物业"),
        ("老板拖欠工资三个月", "欠薪"),
        ("商家卖假货不给退款", "消费维权"),
        ("医院挂号太难，医保报销不了", "医疗"),
        ("孩子入学的学位不够", "教育"),
        ("公租房怎么租，房租多少", "住房"),
        ("我想咨询一下这个政策怎么办理", "政策咨询"),
        ("你好，我想问个事", "其他"),
    ],
)
def test_categories(prefiller: Prefiller, text: str, category: str) -> None:
    assert fill(prefiller, text).category.value == category


def test_gas_billing_is_not_an_emergency(prefiller: Prefiller) -> None:
    for text in (
        "我想问一下燃气费是怎么算的，这个月燃气费太贵了",
        "天然气公司的电话是多少",
        "燃气灶点不着火了",
    ):
        p = fill(prefiller, text)
        assert p.emergency is None, text
        assert p.emergency_service is None
        assert p.category.value == "燃气"
        assert p.urgency.value == "一般"


@pytest.mark.parametrize(
    ("text", "kind", "service"),
    [
        ("楼下着火了，好大的烟", "fire", "119"),
        ("闻到煤气味，好像是漏气了", "gas_leak", "119"),
        ("有人拿着刀在砍人", "violence", "110"),
        ("我老公又打我了，他家暴", "violence", "110"),
        ("我爸心脏病发作了，喘不上气", "medical", "120"),
        ("有个老人晕倒在地上了", "medical", "120"),
        ("我婆婆说不出话了，是不是中风了", "medical", "120"),
        ("有人在店里闹事，还打了我们店员", "violence", "110"),
    ],
)
def test_emergencies(prefiller: Prefiller, text: str, kind: str, service: str) -> None:
    p = fill(prefiller, text)
    assert value(p.emergency) == kind
    assert p.emergency_service == service
    assert p.urgency.value == "紧急"


def test_negated_emergency_words(prefiller: Prefiller) -> None:
    for text in ("还好没有着火", "不是漏气，是燃气表坏了", "我打电话给他没人接", "差点打起来"):
        assert fill(prefiller, text).emergency is None, text


def test_counsellor(prefiller: Prefiller) -> None:
    p = fill(prefiller, "工资要不回来，我真的不想活了，活着没意思")
    assert p.needs_counsellor
    assert p.urgency.value == "紧急"
    assert p.sentiment.value == "求助"
    assert p.counsellor_evidence and all("活" in e.text for e in p.counsellor_evidence)
    assert not fill(prefiller, "工资要不回来").needs_counsellor


@pytest.mark.parametrize(
    ("text", "urgency"),
    [
        ("有人被困在电梯里了", "紧急"),
        ("我妈一个人住，八十多岁了，暖气坏了冻得不行", "紧急"),
        ("路灯坏了好几天了", "较急"),
        ("楼下太吵，孩子没法睡觉", "较急"),
        ("想问一下社保怎么交", "一般"),
        ("这两天停过一次电", "一般"),
    ],
)
def test_urgency(prefiller: Prefiller, text: str, urgency: str) -> None:
    p = fill(prefiller, text)
    assert p.urgency.value == urgency
    assert p.urgency_reason.startswith(urgency)


@pytest.mark.parametrize(
    ("text", "sentiment"),
    [
        ("你们是干什么吃的，气死我了", "愤怒"),
        ("我要投诉你们，太过分了", "愤怒"),
        ("反映了好几次了怎么还没人管", "不满"),
        ("求求你们帮帮我，我实在没办法了", "求助"),
        ("想问一下医保卡怎么办理", "平静"),
    ],
)
def test_sentiment(prefiller: Prefiller, text: str, sentiment: str) -> None:
    assert fill(prefiller, text).sentiment.value == sentiment


# --- the object itself -------------------------------------------------------


def test_to_json_shape(prefiller: Prefiller) -> None:
    text = "我叫张伟，住在西湖区文三路100号，停水了，电话13812345678"
    p = fill(prefiller, text, caller_id="057100000000")
    data = p.to_json()
    json.dumps(data, ensure_ascii=False)  # JSON-ready
    assert data["transcript"] == text
    for key, entry in data.items():
        if key == "transcript":
            continue
        assert isinstance(entry, dict) and set(entry) == {"value", "evidence", "source"}, key
        assert entry["source"] in ("speech", "caller_id", "default")
        for e in entry["evidence"]:
            assert text[e["start"] : e["end"]] == e["text"]
    assert data["name"] == {
        "value": "张伟",
        "evidence": [{"start": 2, "end": 4, "text": "张伟"}],
        "source": "speech",
    }
    assert data["emergency"]["value"] is None  # type: ignore[index]
    assert data["address_parts"]["value"]["road"] == "文三路"  # type: ignore[index]
    assert data["needs_counsellor"]["value"] is False  # type: ignore[index]


def test_prefill_is_pure_and_frozen(prefiller: Prefiller) -> None:
    text = "我叫张伟住在西湖区文三路100号停水了"
    first = fill(prefiller, text)
    assert fill(prefiller, text) == first
    with pytest.raises(FrozenInstanceError):
        first.urgency_reason = "x"  # type: ignore[misc]


def test_fast_enough(prefiller: Prefiller) -> None:
    rows = load_rows(DATA)
    text = "".join(r.transcript for r in rows)[:200]
    assert len(text) == 200
    fill(prefiller, text)
    times = []
    for _ in range(50):
        t = time.perf_counter()
        fill(prefiller, text, caller_id="13812345678")
        times.append((time.perf_counter() - t) * 1000)
    assert statistics.median(times) < 5.0


# --- data files ---------------------------------------------------------------


def test_bundled_taxonomy_and_sample_gazetteer() -> None:
    taxonomy = load_taxonomy()
    assert isinstance(taxonomy, Taxonomy)
    for name in REQUIRED_CATEGORIES:
        assert name in taxonomy.names
    assert taxonomy.fallback == "其他"
    gazetteer = load_gazetteer(GAZETTEER)
    assert isinstance(gazetteer, Gazetteer)
    assert (gazetteer.province, gazetteer.city) == ("浙江省", "杭州市")
    assert set(gazetteer.districts) == set(
        [
            "上城区",
            "拱墅区",
            "西湖区",
            "滨江区",
            "萧山区",
            "余杭区",
            "临平区",
            "钱塘区",
            "富阳区",
            "临安区",
        ]
    )
    assert gazetteer.streets["文新街道"] == "西湖区"
    assert gazetteer.aliases["西湖"] == "西湖区"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_bad_taxonomy_names_the_file(tmp_path: Path) -> None:
    broken = _write(tmp_path, "broken.toml", '[[category]]\nname = 供水\nstrong = ["停水"]\n')
    with pytest.raises(PrefillDataError, match=r"broken\.toml:2: not valid TOML"):
        load_taxonomy(broken)
    twice = _write(
        tmp_path,
        "twice.toml",
        '[[category]]\nname = "供水"\nstrong = ["停水"]\n\n'
        '[[category]]\nname = "供电"\nstrong = ["停电", "停水"]\n',
    )
    with pytest.raises(PrefillDataError, match=r"twice\.toml:7: keyword '停水'"):
        load_taxonomy(twice)
    typo = _write(tmp_path, "typo.toml", '[[category]]\nname = "供水"\nstorng = ["停水"]\n')
    with pytest.raises(PrefillDataError, match=r"typo\.toml:3: unknown key 'storng'"):
        load_taxonomy(typo)
    with pytest.raises(PrefillDataError, match=r"missing\.toml: no such file"):
        load_taxonomy(tmp_path / "missing.toml")


def test_bad_gazetteer_names_the_file(tmp_path: Path) -> None:
    broken = _write(tmp_path, "gaz.toml", 'city = "杭州市\n')
    with pytest.raises(PrefillDataError, match=r"gaz\.toml.*TOML"):
        load_gazetteer(broken)
    street = _write(
        tmp_path,
        "street.toml",
        'city = "杭州市"\n\n[[district]]\nname = "西湖区"\nstreets = ["文新街道", "文三路"]\n',
    )
    with pytest.raises(PrefillDataError, match=r"street\.toml:5: street '文三路'"):
        load_gazetteer(street)
    alias = _write(
        tmp_path,
        "alias.toml",
        '[[district]]\nname = "西湖区"\n\n[aliases]\n"滨江" = "滨江区"\n',
    )
    with pytest.raises(PrefillDataError, match=r"alias\.toml:5: alias '滨江'"):
        load_gazetteer(alias)
    twice = _write(
        tmp_path,
        "twice.toml",
        '[[district]]\nname = "西湖区"\nstreets = ["文新街道"]\n\n'
        '[[district]]\nname = "滨江区"\nstreets = ["文新街道"]\n',
    )
    with pytest.raises(PrefillDataError, match=r"twice\.toml:7: street '文新街道' is listed twice"):
        load_gazetteer(twice)


def test_a_deployment_gazetteer_changes_the_city(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "ningbo.toml",
        'province = "浙江省"\ncity = "宁波市"\narea_code = "0574"\n\n'
        '[[district]]\nname = "鄞州区"\naliases = ["鄞州"]\nstreets = ["钟公庙街道"]\n',
    )
    p = Prefiller(load_taxonomy(), load_gazetteer(path))
    got = p.prefill("我住在钟公庙街道，电话87654321")
    assert value(got.district) == "鄞州区"
    assert value(got.phone) == "057487654321"
    assert p.prefill("我住在西湖区").district is None


def test_recogniser_soundalikes_of_yao_inside_a_number(prefiller: Prefiller) -> None:
    # what Whisper base wrote for an espeak-ng voice reading 幺三八 幺二三四 五六七八
    got = prefiller.prefill("有 三 八 有二 三 四五六 七 八", caller_id=None)
    assert got.phone is not None and got.phone.value == "13812345678"
    # 有/要 that are not inside a number stay words
    assert prefiller.prefill("我有三个孩子，要三天", caller_id=None).phone is None


@pytest.mark.parametrize(
    ("said", "name", "district"),
    [
        (
            "我母亲叫张秀英，电话幺三九零零零零幺幺幺幺，住在杭州市西湖区文三路九十号",
            "张秀英",
            "西湖区",
        ),
        ("老人姓王，王大爷，住在拱墅区", "王大爷", "拱墅区"),
        ("她是李桂兰，家住余杭区", "李桂兰", "余杭区"),
        ("老人是独居的，名字叫陈玉梅", "陈玉梅", None),
        ("我是她儿子，我妈叫刘淑珍", "刘淑珍", None),
        ("我叫王强，帮我奶奶反映一下", None, None),  # the relative's own name, not hers
    ],
)
def test_beneficiary_fields_from_what_a_relative_says(
    prefiller: Prefiller, said: str, name: str | None, district: str | None
) -> None:
    from ivr.tickets.intake import _beneficiary_fields

    fields = _beneficiary_fields(prefiller.prefill(said, caller_id="", about="beneficiary"))
    assert fields["beneficiary_name"]["value"] == name
    assert fields["beneficiary_district"]["value"] == district
    assert fields["proxy"]["value"] is True
    for entry in fields["beneficiary_name"]["evidence"]:
        assert said[entry["start"] : entry["end"]] == entry["text"]


def test_name_stops_where_the_spoken_number_starts(prefiller: Prefiller) -> None:
    # Whisper on a caller who runs name and number together writes 有 for 幺
    # (heard through a call): 有 starts the number, not the name.
    p = fill(prefiller, "我的名字叫马龙有三八有二三四五六七八我的地址是天母山路八号")
    assert value(p.name) == "马龙" and value(p.phone) == "13812345678"
    assert p.name is not None and p.name.evidence[0].text == "马龙"
    # a name that has 有 in it, said apart from the number, is kept whole
    assert value(fill(prefiller, "我叫王有才，电话13812345678").name) == "王有才"
    # a surname cue is not cut to nothing
    assert value(fill(prefiller, "我姓王有三八幺二三四五六七八").name) == "王"


def test_a_deployment_adds_its_own_emergency_words(tmp_path: Path) -> None:
    bundled = Prefiller(load_taxonomy(), load_gazetteer(Path("gazetteer.toml")))
    # built in, a cry for help is not an emergency: it is as often a figure of speech
    assert bundled.prefill("救命啊，快来人").emergency is None
    text = (Path(__file__).parent.parent / "ivr" / "prefill" / "taxonomy.toml").read_text()
    own = _write(
        tmp_path,
        "taxonomy.toml",
        text + '\n[emergency_words]\nhelp = ["救命啊", "救救我"]\nfire = ["走水了"]\n',
    )
    local = Prefiller(load_taxonomy(own), load_gazetteer(Path("gazetteer.toml")))
    p = local.prefill("救命啊！救命啊")
    assert value(p.emergency) == "help" and p.emergency_service == "110"
    assert p.emergency is not None and [e.text for e in p.emergency.evidence] == ["救命啊"] * 2
    assert value(p.urgency) == "紧急" and "呼救" in str(p.urgency_reason)
    # a built-in kind outranks a cry for help; a local word joins its kind
    assert value(local.prefill("救命啊，着火了").emergency) == "fire"
    assert local.prefill("仓库走水了").emergency_service == "119"
    # said as not happening, it does not count
    assert local.prefill("不是救命啊那种事").emergency is None
    assert local.prefill("这是我的救命钱").emergency is None


def test_bad_emergency_words_name_the_line(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "ivr" / "prefill" / "taxonomy.toml").read_text()
    lines = text.count("\n")
    kind = _write(tmp_path, "kind.toml", text + '\n[emergency_words]\nflood = ["淹了"]\n')
    with pytest.raises(
        PrefillDataError, match=rf"kind\.toml:{lines + 3}: unknown emergency 'flood'"
    ):
        load_taxonomy(kind)
    empty = _write(tmp_path, "empty.toml", text + '\n[emergency_words]\nhelp = ["救命", ""]\n')
    with pytest.raises(PrefillDataError, match=r"empty\.toml:\d+: emergency_words help"):
        load_taxonomy(empty)
