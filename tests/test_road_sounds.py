"""Roads listed in the gazetteer (roads = [...] under each district): found
as written and, like districts and streets, by sound where Whisper wrote a
homophone (温山路 -> 文三路); an unlisted road still by its suffix; the
district told only by a road listed under one district; no road found in
ordinary sentences; a broken roads list named by its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.prefill_accuracy import FIELDS, load_rows, score
from ivr.prefill import (
    Gazetteer,
    Prefill,
    PrefillDataError,
    Prefiller,
    Taxonomy,
    load_gazetteer,
    load_taxonomy,
)

ROOT = Path(__file__).resolve().parent.parent
GAZETTEER = ROOT / "gazetteer.toml"


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy()


@pytest.fixture(scope="module")
def prefiller(taxonomy: Taxonomy) -> Prefiller:
    return Prefiller(taxonomy, load_gazetteer(GAZETTEER))


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _district(p: Prefill) -> str | None:
    return p.district.value if p.district is not None else None


def _address(p: Prefill) -> str | None:
    return p.address.value if p.address is not None else None


def _heard(p: Prefill) -> str | None:
    return p.address.evidence[0].text if p.address is not None else None


# --- the sample gazetteer -----------------------------------------------------


def test_sample_lists_hangzhou_roads_under_their_districts() -> None:
    roads = load_gazetteer(GAZETTEER).roads
    for road in (
        "文三路", "文二路", "文一路", "文一西路", "天目山路", "教工路", "学院路", "古墩路",
        "莫干山路", "湖墅南路", "延安路", "解放路", "庆春路", "凤起路", "体育场路", "中河路",
        "秋涛路", "钱江路", "江南大道", "滨盛路", "东新路", "石桥路", "余杭塘路", "西溪路",
    ):  # fmt: skip
        assert road in roads, road
    assert roads["天目山路"] == ("西湖区",)
    assert roads["江南大道"] == ("滨江区",)
    assert set(roads["延安路"]) == {"上城区", "拱墅区"}
    assert len(roads["余杭塘路"]) >= 2


# --- by name and by sound -----------------------------------------------------


def test_listed_road_by_exact_name(prefiller: Prefiller) -> None:
    p = prefiller.prefill("我住在天目山路八号，电话13812345678")
    assert p.address_parts == {"road": "天目山路", "number": "8号"}
    assert _heard(p) == "天目山路八号"
    assert _district(p) == "西湖区"
    assert p.district is not None and p.district.evidence[0].text == "天目山路"


@pytest.mark.parametrize(
    ("heard", "address", "parts", "evidence", "district"),
    [
        # measured: espeak-ng -> 8 kHz G.711 -> Whisper base
        (
            "我住在西虎区温山路口",
            "西湖区文三路",
            {"district": "西湖区", "road": "文三路"},
            "西虎区温山路",
            "西湖区",
        ),
        (
            "地址是天母山路八号",
            "天目山路8号",
            {"road": "天目山路", "number": "8号"},
            "天母山路八号",
            "西湖区",
        ),
        (
            "我住在西虎区温山路九十号",
            "西湖区文三路90号",
            {"district": "西湖区", "road": "文三路", "number": "90号"},
            "西虎区温山路九十号",
            "西湖区",
        ),
    ],
)
def test_measured_mishearings_give_the_listed_road(
    prefiller: Prefiller,
    heard: str,
    address: str,
    parts: dict[str, str],
    evidence: str,
    district: str,
) -> None:
    p = prefiller.prefill(heard)
    assert _address(p) == address
    assert p.address_parts == parts
    assert _heard(p) == evidence  # the words actually heard, not the listed name
    assert _district(p) == district


@pytest.mark.parametrize(
    ("heard", "road", "district"),
    [
        ("地址是四桥路五号", "石桥路", "拱墅区"),  # shi -> si
        ("我家住西湖区莫干三路", "莫干山路", "西湖区"),  # shan -> san
        ("住在东兴路8号", "东新路", "拱墅区"),  # xing -> xin
        ("我住在冰森路", "滨盛路", "滨江区"),  # bing -> bin, sheng -> sen
        ("我在湖树南路", "湖墅南路", "拱墅区"),  # 墅/树 are both shu
        ("我家住余杭堂路二十号", "余杭塘路", None),  # not the alias 余杭; three districts
    ],
)
def test_southern_folds(prefiller: Prefiller, heard: str, road: str, district: str | None) -> None:
    p = prefiller.prefill(heard)
    assert p.address_parts["road"] == road
    assert _district(p) == district


def test_exact_name_wins_and_the_closer_sound_wins(tmp_path: Path, taxonomy: Taxonomy) -> None:
    path = _write(
        tmp_path,
        "gaz.toml",
        '[[district]]\nname = "西湖区"\nroads = ["文三路", "文山路"]\n',
    )
    p = Prefiller(taxonomy, load_gazetteer(path))
    assert p.prefill("住在文山路5号").address_parts["road"] == "文山路"
    assert p.prefill("住在文三路5号").address_parts["road"] == "文三路"
    # 温山 is wen-shan: 文山 without any fold, 文三 only with sh -> s
    assert p.prefill("住在温山路5号").address_parts["road"] == "文山路"


def test_unlisted_road_still_by_its_suffix(prefiller: Prefiller) -> None:
    p = prefiller.prefill("我住在胜利路三号")
    assert p.address_parts == {"road": "胜利路", "number": "3号"}
    assert p.district is None
    # a longer unlisted road that ends like a listed one stays itself
    assert prefiller.prefill("住在新文三路5号").address_parts["road"] == "新文三路"
    assert prefiller.prefill("住在大温山路5号").address_parts["road"] == "大温山路"


def test_listed_road_is_not_swallowed_by_a_word_before_it(prefiller: Prefiller) -> None:
    p = prefiller.prefill("住在门前文三路90号")
    assert _address(p) == "文三路90号"
    assert _district(p) == "西湖区"


def test_a_road_tells_its_district_only_when_listed_under_one(prefiller: Prefiller) -> None:
    assert _district(prefiller.prefill("我住在湖墅南路100号")) == "拱墅区"
    # 延安路 runs through 上城区 and 拱墅区; 余杭塘路 through three districts
    p = prefiller.prefill("我住在延安路100号")
    assert _address(p) == "延安路100号" and p.district is None
    assert prefiller.prefill("我家住余杭塘路二十号").district is None
    assert _district(prefiller.prefill("我住在上城区延安路")) == "上城区"
    # the district the caller says wins over the road's
    assert _district(prefiller.prefill("我住在拱墅区文三路")) == "拱墅区"


def test_a_road_listed_in_a_deployment_file(tmp_path: Path, taxonomy: Taxonomy) -> None:
    path = _write(
        tmp_path,
        "ningbo.toml",
        'city = "宁波市"\n\n[[district]]\nname = "鄞州区"\nroads = ["钱湖北路", "中山东路"]\n\n'
        '[[district]]\nname = "海曙区"\nroads = ["中山东路"]\n',
    )
    gazetteer = load_gazetteer(path)
    assert dict(gazetteer.roads) == {"钱湖北路": ("鄞州区",), "中山东路": ("鄞州区", "海曙区")}
    p = Prefiller(taxonomy, gazetteer)
    got = p.prefill("我住在前湖北路12号")
    assert got.address_parts == {"road": "钱湖北路", "number": "12号"}
    assert _district(got) == "鄞州区"
    assert p.prefill("地址是中山东路5号").district is None


# --- no false positives -------------------------------------------------------


def test_suffix_must_be_written_and_whole(tmp_path: Path, taxonomy: Taxonomy) -> None:
    path = _write(
        tmp_path,
        "gaz.toml",
        '[[district]]\nname = "西湖区"\nstreets = ["北山街道"]\n'
        'roads = ["北山街", "学院路", "中街"]\n',
    )
    p = Prefiller(taxonomy, load_gazetteer(path))
    assert p.prefill("我住在北山街道").address_parts == {"street": "北山街道"}
    assert p.prefill("我住在北山街").address_parts == {"road": "北山街"}
    assert p.prefill("我住在北三街道").address_parts.get("road") is None  # 街道 is no 街
    assert p.prefill("住在北山道5号").address_parts.get("road") != "北山街"  # 道 is no 街
    assert p.prefill("住在学院大道5号").address_parts.get("road") == "学院大道"  # 大道 is no 路
    assert p.prefill("我从医学院路过").district is None  # 学院路 inside a word
    assert p.prefill("在雪院路过").address_parts.get("road") != "学院路"
    # a one-character name is taken only as written
    assert p.prefill("我住在中街").address_parts == {"road": "中街"}
    assert p.prefill("我住在钟街").address_parts.get("road") != "中街"


@pytest.mark.parametrize(
    "said",
    [
        "我在马路边上等公交车等了一个小时",
        "我家楼下的路灯坏了",
        "在路口那个红绿灯",
        "现在健身房关门跑路了",
        "这条路太堵了，走路都走不动",
        "他们把东西弄坏了也不管",
        "小巷子里堆满了垃圾",
        "我每天过马路去上班",
        "修路修了一个月了还没好",
        "高速公路上有辆车抛锚了",
        "逛街的时候钱包丢了",
        "一路上都没有路灯",
        "我问了好几个人才找到路",
    ],
)
def test_ordinary_sentences_name_no_road(prefiller: Prefiller, said: str) -> None:
    p = prefiller.prefill(said)
    assert "road" not in p.address_parts
    assert p.district is None


def test_labelled_set_is_no_worse_with_roads(taxonomy: Taxonomy) -> None:
    with_roads = load_gazetteer(GAZETTEER)
    by_district: dict[str, list[str]] = {d: [] for d in with_roads.districts}
    for street, district in with_roads.streets.items():
        by_district[district].append(street)
    without_roads = Gazetteer.build(
        province=with_roads.province,
        city=with_roads.city,
        area_code=with_roads.area_code,
        districts={d: tuple(s) for d, s in by_district.items()},
        aliases=with_roads.aliases,
    )
    rows = load_rows()
    before = score(rows, Prefiller(taxonomy, without_roads))
    after = score(rows, Prefiller(taxonomy, with_roads))
    for field in (*FIELDS, "overall"):
        assert after[field] >= before[field], field


# --- a broken roads list ------------------------------------------------------


def test_road_without_a_road_suffix_names_its_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "gaz.toml",
        '[[district]]\nname = "西湖区"\nroads = [\n    "文三路",\n    "文新街道",\n]\n',
    )
    with pytest.raises(PrefillDataError, match=r"gaz\.toml:5: road '文新街道' must be a name"):
        load_gazetteer(path)
    bare = _write(tmp_path, "bare.toml", '[[district]]\nname = "西湖区"\nroads = ["路"]\n')
    with pytest.raises(PrefillDataError, match=r"bare\.toml:3: road '路'"):
        load_gazetteer(bare)
    typed = _write(tmp_path, "typed.toml", '[[district]]\nname = "西湖区"\nroads = [1]\n')
    with pytest.raises(PrefillDataError, match=r"typed\.toml:3: 西湖区: roads must be strings"):
        load_gazetteer(typed)


def test_road_twice_in_one_district_names_the_second_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "gaz.toml",
        '[[district]]\nname = "西湖区"\nroads = [\n    "文三路",\n    "天目山路",\n'
        '    "文三路",\n]\n',
    )
    with pytest.raises(
        PrefillDataError,
        match=r"gaz\.toml:6: road '文三路' is listed twice under 西湖区 \(also line 4\)",
    ):
        load_gazetteer(path)
    same_line = _write(
        tmp_path,
        "same.toml",
        '[[district]]\nname = "西湖区"\nroads = ["文三路", "文三路"]\n',
    )
    with pytest.raises(PrefillDataError, match=r"same\.toml:3: road '文三路' is listed twice"):
        load_gazetteer(same_line)


def test_road_under_two_districts_is_fine_but_not_as_an_alias(tmp_path: Path) -> None:
    both = _write(
        tmp_path,
        "both.toml",
        '[[district]]\nname = "上城区"\nroads = ["延安路"]\n\n'
        '[[district]]\nname = "拱墅区"\nroads = ["延安路"]\n',
    )
    assert load_gazetteer(both).roads["延安路"] == ("上城区", "拱墅区")
    alias = _write(
        tmp_path,
        "alias.toml",
        '[[district]]\nname = "上城区"\nroads = ["延安路"]\n\n[aliases]\n"延安路" = "上城区"\n',
    )
    with pytest.raises(
        PrefillDataError, match=r"alias\.toml:6: alias '延安路' is also listed as a road"
    ):
        load_gazetteer(alias)
    unknown = _write(tmp_path, "unknown.toml", '[[district]]\nname = "上城区"\nroad = ["延安路"]\n')
    with pytest.raises(PrefillDataError, match=r"unknown\.toml:3: unknown key 'road'"):
        load_gazetteer(unknown)
