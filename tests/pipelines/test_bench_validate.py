"""Validation: format rules, the expected-returns manifest (CSV/JSON, replaced by central), the decision."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.pipelines.bench.decide import (
    PHOTO_BARCODE_ALONE,
    Retake,
    barcode_alone,
    cross_check_order,
    retake_advice,
    review_reasons,
)
from edge_agent.pipelines.bench.fields import FieldValue, Issue, load_reasons, load_template
from edge_agent.pipelines.bench.manifest import (
    MAX_PROBLEMS,
    ManifestError,
    active_manifest,
    load_manifest,
    parse_manifest,
    replace_manifest,
)
from edge_agent.pipelines.bench.normalize import ambiguous_positions, ean13_valid
from edge_agent.pipelines.bench.rules_config import FieldsConfig, ValidationConfig
from edge_agent.pipelines.bench.types import Barcode, ImageReading, QualityReport, TextLine
from edge_agent.pipelines.bench.validate import validate_fields

TEMPLATE = load_template(FieldsConfig())
REASONS = load_reasons(ValidationConfig())
RULES = ValidationConfig(return_window_days=30)
TODAY = date(2025, 4, 1)
CSV = (
    b"order_no,sku,quantity,customer_id,order_date\n"
    b"123456789012,AB-1234-BLK-M,2,C0123456789,2025-03-01\n"
    b"123456789012,SKU123456789,1,C0123456789,2025-03-01\n"
    b"250307-123456789012345,A12345-07,5,,\n"
)


def vals(**kw: object) -> dict[str, FieldValue]:
    base: dict[str, object] = {
        "order_no": "123456789012",
        "sku": "AB-1234-BLK-M",
        "quantity": 2,
        "reason": "少件",
        "customer_id": "C0123456789",
        "return_date": "2025-03-27",
    }
    base.update(kw)
    return {k: FieldValue(k, v, 0.97) for k, v in base.items()}  # type: ignore[arg-type]


def codes(values: dict[str, FieldValue], manifest: object = None) -> set[str]:
    return {
        i.code
        for i in validate_fields(
            values,
            TEMPLATE,
            RULES,
            REASONS,
            manifest=manifest,  # type: ignore[arg-type]
            today=TODAY,
        )
    }


def test_validate_fields__good_values_pass_with_and_without_manifest() -> None:
    assert codes(vals()) == set()
    assert codes(vals(), parse_manifest(CSV)) == set()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"order_no": "999999999999"}, "unknown_order"),
        ({"sku": "ZZ-0000-RED-S"}, "sku_not_in_order"),
        ({"quantity": 3}, "quantity_over_ordered"),
        ({"customer_id": "C9999999999"}, "customer_mismatch"),
        ({"return_date": "2025-02-27"}, "date_outside_window"),
    ],
)
def test_validate_fields__manifest_rules(change: dict[str, object], code: str) -> None:
    assert code in codes(vals(**change), parse_manifest(CSV))


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"quantity": 0}, "quantity_out_of_range"),
        ({"quantity": 1000}, "quantity_out_of_range"),
        ({"reason": "其他原因"}, "unknown_reason"),
        ({"return_date": "2025-04-02"}, "date_in_future"),
        ({"return_date": "2025-02-01"}, "date_outside_window"),
        ({"order_no": "12-34"}, "bad_format"),
    ],
)
def test_validate_fields__format_rules_without_manifest(change: dict[str, object], code: str) -> None:
    assert code in codes(vals(**change))


def test_validate_fields__return_before_order_date() -> None:
    m = parse_manifest(CSV)
    assert "date_before_order" in {
        i.code
        for i in validate_fields(
            vals(return_date="2025-02-28"),
            TEMPLATE,
            ValidationConfig(return_window_days=365),
            REASONS,
            manifest=m,
            today=TODAY,
        )
    }


def test_parse_manifest__json_shapes_agree_with_csv() -> None:
    nested = {
        "orders": [
            {
                "order_no": "123456789012",
                "customer_id": "C0123456789",
                "order_date": "2025-03-01",
                "items": [{"sku": "AB-1234-BLK-M", "quantity": 2}, {"sku": "SKU123456789", "quantity": 1}],
            }
        ]
    }
    flat = [{"order_no": "123456789012", "sku": "ab-1234-blk-m", "quantity": "2"}]
    a, b = parse_manifest(json.dumps(nested).encode()), parse_manifest(json.dumps(flat).encode())
    assert a.get("123456789012") == parse_manifest(CSV).get("123456789012")
    assert b.get("123456789012").items == {"AB-1234-BLK-M": 2}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"order,sku\n1,2\n", r"header: expected columns order_no, sku, quantity .*missing order_no, quantity"),
        (b"order_no,sku,quantity\n123,A1,two\n", r"line 2: quantity: expected an integer >= 1, got 'two'"),
        (b"order_no,sku,quantity,colour\n123,A1,1,red\n", r"line 2: colour: unknown column"),
        (b"order_no,sku,quantity,order_date\n123,A1,1,27/03/2025\n", r"order_date: expected a date YYYY-MM-DD"),
        (b'{"orders": 3}', r"expected a JSON list of rows or an object with orders"),
        (b"[{]", r"not valid JSON"),
        (b"\xff\xfe", r"expected UTF-8 text"),
    ],
)
def test_parse_manifest__errors_say_where_expected_and_got(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(data, "m.csv")


def test_parse_manifest__every_bad_row_is_counted_and_the_first_ones_kept() -> None:
    """It stopped at MAX_PROBLEMS, so doctor said "(and 18 more)" of a file with 5000 bad lines."""
    rows = "".join(f"{n},A1,none\n" for n in range(5000)) + "1,A1,1\n1,A2,1,C1\n1,A3,1,C2\n"
    with pytest.raises(ManifestError) as exc:
        parse_manifest(b"order_no,sku,quantity,customer_id\n" + rows.encode(), "m.csv")
    assert exc.value.count == 5001  # and the customer_id clash at the end
    assert len(exc.value.problems) == MAX_PROBLEMS
    assert exc.value.problems[0] == "m.csv: line 2: quantity: expected an integer >= 1, got 'none'"


def test_load_manifest__missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nope.csv: manifest file not found"):
        load_manifest(tmp_path / "nope.csv")


def test_replace_manifest__central_copy_wins_and_a_bad_one_keeps_the_old(tmp_path: Path) -> None:
    configured = tmp_path / "site.csv"
    configured.write_bytes(b"order_no,sku,quantity\n111111111111,A1,1\n")
    assert active_manifest(tmp_path, configured).get("111111111111") is not None  # type: ignore[union-attr]
    replace_manifest(tmp_path, CSV)
    assert (tmp_path / "manifest.csv").stat().st_mode & 0o777 == 0o600
    m = active_manifest(tmp_path, configured)
    assert m is not None and m.get("111111111111") is None and m.get("123456789012") is not None
    with pytest.raises(ManifestError):
        replace_manifest(tmp_path, b"order_no,sku,quantity\nX,Y,0\n")
    assert active_manifest(tmp_path, configured).get("123456789012") is not None  # type: ignore[union-attr]
    replace_manifest(tmp_path, json.dumps([{"order_no": "5", "sku": "S", "quantity": 1}]).encode())
    assert not (tmp_path / "manifest.csv").exists()
    assert set(active_manifest(tmp_path, None).orders) == {"5"}  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parse_manifest__any_bytes_parse_or_raise_manifest_error(data: bytes) -> None:
    try:
        parse_manifest(data)
    except ManifestError as exc:
        assert exc.problems


PATTERN = TEMPLATE.spec("order_no").pattern


def test_cross_check_order__barcode_and_text_agree_and_barcode_keeps_the_dash() -> None:
    ocr = FieldValue("order_no", "250307123456789012345", 0.9)
    check, value, issues = cross_check_order(ocr, None, [Barcode("250307-123456789012345", "Code128")], PATTERN)
    assert check.agree is True and issues == []
    assert value.value == "250307-123456789012345" and value.confidence > 0.99 and value.source == "barcode"


def test_cross_check_order__slip_text_that_is_only_part_of_a_longer_code_on_the_slip() -> None:
    """Seen on a grid slip: 'ORDER ID 4131247' while 11474131247 is printed under the barcode."""
    ocr = FieldValue("order_no", "4131247", 0.99)
    _, value, issues = cross_check_order(ocr, None, [], PATTERN, {"11474131247", "4131247", "YT12"})
    assert [i.code for i in issues] == ["order_mismatch"] and "11474131247" in issues[0].message
    assert value.confidence <= 0.5
    # the whole number printed twice is no problem
    _, whole, none = cross_check_order(FieldValue("order_no", "11474131247", 0.99), None, [], PATTERN, {"11474131247"})
    assert none == [] and whole.value == "11474131247"


def test_cross_check_order__disagreement_is_a_review_reason() -> None:
    ocr = FieldValue("order_no", "123456789012", 0.99)
    check, value, issues = cross_check_order(ocr, "123456789013", [Barcode("123456789012", "Code128")], PATTERN)
    assert check.agree is False and [i.code for i in issues] == ["order_mismatch"]
    assert value.confidence <= 0.5


def test_cross_check_order__a_barcode_the_slip_prints_as_another_code_with_one_misread_is_ignored() -> None:
    """The courier's barcode fits the order pattern; the slip prints its number, read with 3 as 8."""
    ocr = FieldValue("order_no", "55542869098", 0.99)
    bars = [Barcode("ZTO865981113595157", "Code128")]
    _, value, issues = cross_check_order(ocr, None, bars, PATTERN, {"ZT0865981118595157", "55542869098"})
    assert issues == [] and value.value == "55542869098"
    # an order number read with one character wrong still disagrees with its own barcode
    ocr = FieldValue("order_no", "55542869099", 0.99)
    bars = [Barcode("55542869098", "Code128")]
    _, value, issues = cross_check_order(ocr, None, bars, PATTERN, {"55542869099", "55542869098"})
    assert [i.code for i in issues] == ["order_mismatch"] and value.value == "55542869098"


def test_cross_check_order__a_second_barcode_is_another_code_when_one_is_the_order_the_slip_prints() -> None:
    """Tuning split, seed 106 (waybill): the order's barcode matches the slip text, and the courier's
    SF556425265184080 fits the order pattern too; it is another code, not a disagreement. With no
    barcode that another source confirms, two order-like barcodes still disagree."""
    ocr = FieldValue("order_no", "26020455059611", 0.99)
    bars = [Barcode("SF556425265184080", "Code128"), Barcode("26020455059611", "Code128")]
    check, value, issues = cross_check_order(ocr, None, bars, PATTERN)
    assert issues == [] and check.agree is True and value.value == "26020455059611"
    assert value.source == "barcode"
    unread = FieldValue("order_no", None, 0.0)
    _, _, issues = cross_check_order(unread, None, bars, PATTERN)
    assert [i.code for i in issues] == ["order_mismatch"]
    _, _, issues = cross_check_order(ocr, "26020455059612", bars, PATTERN)  # the scan disagrees
    assert [i.code for i in issues] == ["order_mismatch"]


def test_cross_check_order__a_code_no_label_names_is_the_unread_orders_own_print_not_another_code() -> None:
    """Tuning slips 638 (typical, hard) and 642 (hard): OCR lost the # of Order#, so no label named the order
    number printed under it, and the order's barcode was ignored as "printed as another code". Only a code
    a label names is another code when the slip text gave no order number; with one, every printed code
    still is (the grouped waybill print under its barcode)."""
    unread = FieldValue("order_no", None, 0.0)
    bars = [Barcode("DD2025103071169", "QRCode"), Barcode("DD2025103071169", "Code128")]
    printed = {"DD2025103071169", "ZTO681145477741", "15183510454"}
    check, value, issues = cross_check_order(unread, None, bars, PATTERN, printed, labelled_codes=set())
    assert value.value == "DD2025103071169" and value.source == "barcode" and issues == []
    assert barcode_alone(check)  # a person still confirms (judge): it could be a courier's code
    # printed under a label of something else (运单号), it is that code
    named = {"DD2025103071169"}
    _, value, issues = cross_check_order(unread, None, bars, PATTERN, printed, labelled_codes=named)
    assert value.value is None and issues == []
    # without labelled_codes, as before: every printed code is another code
    _, value, _ = cross_check_order(unread, None, bars, PATTERN, printed)
    assert value.value is None


def test_cross_check_order__a_barcode_one_digit_read_in_apart_from_the_slip_is_its_order_read_wrong() -> None:
    """Tuning slip 652 (typical): the slip text read 58467243867784731752 for 8467243867784731752, whose
    barcode and its digits under it say otherwise. One character read in (or lost) apart, the barcode is the
    same order read wrong, not another code: the sources disagree, and the barcode's value is shown."""
    ocr = FieldValue("order_no", "58467243867784731752", 0.97)
    bars = [Barcode("8467243867784731752", "Code128")]
    printed = {"58467243867784731752", "8467243867784731752"}
    check, value, issues = cross_check_order(ocr, None, bars, PATTERN, printed, labelled_codes={"58467243867784731752"})
    assert [i.code for i in issues] == ["order_mismatch"] and check.agree is False
    assert value.value == "8467243867784731752" and value.source == "barcode"
    # two codes further apart are two codes: the waybill under its barcode is not this order
    far = [Barcode("8467243867784731799", "Code128")]
    _, value, issues = cross_check_order(ocr, None, far, PATTERN, {*printed, "8467243867784731799"})
    assert value.value == "58467243867784731752" and issues == []


def test_cross_check_order__barcode_fills_an_unread_order_for_a_person_and_product_barcodes_are_ignored() -> None:
    ocr = FieldValue("order_no", None, 0.0)
    bars = [Barcode("http://example.com/x", "QRCode"), Barcode("123456789012", "Code128")]
    check, value, issues = cross_check_order(ocr, None, bars, PATTERN)
    assert value.value == "123456789012" and check.agree is None and issues == []
    # a courier's waybill barcode is order-shaped too: a barcode alone is not enough to pass (judge)
    assert barcode_alone(check)
    # the operator's RF scan alone is: the operator chose what to scan
    scan_check, scanned, none = cross_check_order(ocr, "123456789012", [], PATTERN)
    assert scanned.value == "123456789012" and scanned.source == "scan" and none == []
    assert not barcode_alone(scan_check)
    assert not barcode_alone(cross_check_order(FieldValue("order_no", "123456789012", 0.9), None, bars, PATTERN)[0])


def test_evaluate__an_order_number_only_a_barcode_gives_goes_to_a_person_unless_the_manifest_knows_it(
    tmp_path: Path,
) -> None:
    """Seen on generated slip 313 (typical, waybill): the printed order number was cut off, and the
    courier's barcode ZTO6933473774288 became the order number."""
    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Rules, evaluate
    from edge_agent.pipelines.bench.manifest import load_manifest

    rules = Rules.from_config(BenchConfig())
    full = _ambiguous_reading((1.0,) * 8, (Barcode("ZTO6933473774288", "Code128"),))
    reading = ImageReading(full.quality, full.lines[1:], full.barcodes, full.engine)  # the order line unread
    res = evaluate(reading, rules, manifest=None, today=date(2025, 3, 2))
    assert res.fields["order_no"] == "ZTO6933473774288" and res.needs_review
    assert [i.message for i in res.review_reasons if i.field == "order_no"] == [PHOTO_BARCODE_ALONE]
    path = tmp_path / "m.csv"
    path.write_text("order_no,sku,quantity,customer_id\nZTO6933473774288,O10W-BCA,2,C1234567\n", encoding="utf-8")
    known = evaluate(reading, rules, manifest=load_manifest(path), today=date(2025, 3, 2))
    assert not known.needs_review, known.review_reasons


def test_review_reasons__quality_is_a_hint_read_first_judge_after() -> None:
    bad = QualityReport(False, ("glare on the label: 8% blown out > 3%",), 900.0, 200.0, 0.08, True)
    # every field confident and valid: the photo passes whatever its glare
    assert review_reasons(vals(), [], FieldsConfig(), bad) == ()
    assert retake_advice((), bad) == ()
    # a field that falls short names the likely cause, and a retake says which field and why
    values = vals()
    values["quantity"] = FieldValue("quantity", 2, 0.6)
    got = review_reasons(values, [], FieldsConfig(), bad)
    assert [(i.code, i.field) for i in got] == [("low_confidence", "quantity")]
    assert got[0].message.endswith("(likely cause: glare on the label: 8% blown out > 3%)")
    assert retake_advice(got, bad) == (Retake("quantity", "glare on the label: 8% blown out > 3%"),)
    assert retake_advice(got, None)[0].cause.startswith("nothing wrong with the photo was measured")
    # rule breaks are for a person, not a retake
    rule = [Issue("unknown_order", "order_no", "order_no: 1 is not in the manifest")]
    assert retake_advice(review_reasons(vals(), rule, FieldsConfig(), bad), bad) == ()
    # a photo with nothing on it is the one thing refused outright
    blank = QualityReport(False, (), 0.0, 3.0, 0.0, False, blank="the photo is black")
    assert review_reasons(vals(), [], FieldsConfig(), blank)[0].code == "image_quality"
    assert retake_advice((), blank) == (Retake(None, "the photo is black"),)
    assert review_reasons(vals(), [], FieldsConfig(min_confidence={"sku": 0.98})) != ()
    assert review_reasons(vals(), [], FieldsConfig()) == ()


def test_bench_toml__shipped_section_is_valid_and_matches_defaults() -> None:
    import tomllib

    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.resources import config_file

    data = tomllib.loads(config_file("bench.toml").read_text(encoding="utf-8"))
    bench = BenchConfig.model_validate(data["bench"])
    defaults = BenchConfig()
    for section in ("fields", "validation", "review", "privacy"):
        assert getattr(bench, section) == getattr(defaults, section)


def _ambiguous_reading(sku_conf: tuple[float, ...], barcodes: tuple[Barcode, ...] = ()) -> ImageReading:
    text = "SKU:O10W-BCA"
    lines = (
        TextLine("订单号:1234567890", 0.99, (20, 0, 400, 30), char_conf=(1.0,) * 14),
        TextLine(text, 0.99, (20, 40, 400, 30), char_conf=(1.0,) * 4 + sku_conf),
        TextLine("数量:1", 0.99, (20, 80, 400, 30)),
        TextLine("原因:破损", 0.99, (20, 120, 400, 30)),
        TextLine("客户ID:C1234567", 0.99, (20, 160, 400, 30), char_conf=(1.0,) * 13),
        TextLine("退货日期:2025-03-01", 0.99, (20, 200, 400, 30)),
    )
    return ImageReading(QualityReport(True, (), 900.0, 180.0, 0.0, True), lines, barcodes, "onnx")


def test_evaluate__confusable_pair_both_legal_is_a_review_reason_not_a_guess() -> None:
    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Rules, evaluate

    rules = Rules.from_config(BenchConfig())
    day = date(2025, 3, 2)
    # O read with high confidence, but not the certainty the model shows for O/0 it gets right
    doubtful = evaluate(_ambiguous_reading((0.999, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)), rules, manifest=None, today=day)
    assert doubtful.fields["sku"] == "O10W-BCA" and doubtful.needs_review
    [amb] = [i for i in doubtful.review_reasons if i.code == "ambiguous_value"]
    assert amb.field == "sku" and "O or 0 at character 1" in amb.message
    assert doubtful.confidence["sku"] < FieldsConfig().default_min_confidence
    # the model's certainty (>= 0.99995 on every confusable) passes
    sure = evaluate(_ambiguous_reading((1.0,) * 8), rules, manifest=None, today=day)
    assert not sure.needs_review and sure.fields["sku"] == "O10W-BCA"
    # a barcode in the photo that reads the same up to confusables settles it, with its exact text
    settled = evaluate(
        _ambiguous_reading((0.99,) * 8, (Barcode("010W-BCA", "Code128"),)), rules, manifest=None, today=day
    )
    assert not settled.needs_review
    assert settled.fields["sku"] == "010W-BCA" and settled.sources["sku"] == "barcode"


def test_evaluate__manifest_settles_a_confusable_sku(tmp_path: Path) -> None:
    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Rules, evaluate
    from edge_agent.pipelines.bench.manifest import load_manifest

    path = tmp_path / "m.csv"
    path.write_text("order_no,sku,quantity,customer_id\n1234567890,O10W-BCA,2,C1234567\n", encoding="utf-8")
    res = evaluate(
        _ambiguous_reading((0.9,) * 8),
        Rules.from_config(BenchConfig()),
        manifest=load_manifest(path),
        today=date(2025, 3, 2),
    )
    assert not res.needs_review, res.review_reasons
    assert res.fields["sku"] == "O10W-BCA" and res.sources["sku"] == "manifest"


def test_ambiguous_positions__pattern_and_check_digit_decide_what_is_ambiguous() -> None:
    import re

    sku = re.compile(r"[A-Z0-9](?:[A-Z0-9]|[-_/.](?=[A-Z0-9])){2,31}")
    order = re.compile(r"[A-Z]{0,4}\d{3,24}(?:-\d{4,20}){0,2}")
    assert [p for p, _, _ in ambiguous_positions("AK05", sku)] == [2, 3]  # no probabilities: all doubtful
    assert ambiguous_positions("AK05", sku, (1.0, 1.0, 1.0, 1.0)) == []
    assert ambiguous_positions("AK05", sku, (1.0, 1.0, 0.9999, 1.0)) == [(2, "0", "O")]
    assert ambiguous_positions("AK05", sku, (1.0, 1.0, 1.0, 0.9995)) == []  # 5/S: 0.999 is sure enough
    # The threshold goes by the character as read: the model reads a printed I as 1 at up to 0.9989,
    # a printed 1 as I once in 249 reads, at 0.68 (calibrated on the tuning split), so I at 0.95 is sure
    # and 1 at 0.995 is not.
    assert ambiguous_positions("I1Z2", sku, (0.995, 0.995, 0.995, 0.995)) == [(1, "1", "I")]
    assert ambiguous_positions("S5B8", sku, (0.995, 0.995, 0.995, 0.995)) == [(0, "S", "5"), (2, "B", "8")]
    assert ambiguous_positions("I1Z2", sku, (0.95, 0.9995, 0.995, 0.98)) == [(3, "2", "Z")]
    assert ambiguous_positions("I1Z2", sku, (0.85, 0.9995, 0.995, 0.995)) == [(0, "I", "1")]
    # digits only after a letter prefix: an O inside the digits cannot be meant, only at the boundary
    assert ambiguous_positions("SO749737", order) == [(1, "O", "0")]
    assert ambiguous_positions("7204567890", order) == []
    # A code's first 0 before a digit may be a letter O, however sure the recogniser (tuning slip 1446 read
    # O91870_08 as 091870_08 at 1.0); before a letter, or later in the code, a sure 0 is a 0.
    assert ambiguous_positions("091870_08", sku, (1.0,) * 9) == [(0, "0", "O")]
    assert ambiguous_positions("0LW-ANRK", sku, (1.0,) * 8) == []
    assert ambiguous_positions("A091870", sku, (1.0,) * 7) == []
    assert ean13_valid("6951506339283") and not ean13_valid("6951506339281")
    # A Q may be an O with a speck for a tail (hard tuning slip 304: BOX read as BQX, its Q at 0.59); an O read
    # as such stays a 0-or-O doubt only.
    assert ambiguous_positions("BQX4", sku, (1.0, 0.59, 1.0, 1.0)) == [(1, "Q", "O")]
    assert ambiguous_positions("BQX4", sku, (1.0, 0.995, 1.0, 1.0)) == []
    assert ambiguous_positions("BOX4", sku, (1.0, 0.59, 1.0, 1.0)) == [(1, "O", "0")]

    # A 0 between digits in a run of eight or more is a zero (a GTIN, the digits after SKU), and so is any 0
    # of a run of four or more between two separators (a style number); at a run's ends, in a shorter run,
    # in a code's first or last segment, or read as O, it stays in doubt.
    def ring_unsure(v: str) -> tuple[float, ...]:  # sure of every character but its rings
        return tuple(0.99 if c in "0O" else 1.0 for c in v)

    for value, doubted in [
        ("SKU5203103921", []),
        ("6910177134820", [12]),  # the last character: a code may end on a letter O
        ("SKU0203103921", [3]),  # the first digit after letters: SO20260402 holds an O there
        ("UY3940-BLU", [5]),  # a run of four, not set apart
        ("UY-3940-BLU", []),  # a run of four between two separators
        ("EE-1300-WHT-XL", []),  # its last 0 too
        ("060207/68", [0, 2, 4]),  # the code's first segment: O60207/68 is printed so
        ("VK-4597-WHT-01", [12]),  # its last: VK-4597-WHT-O1, and a run of two
        ("A-0-10-B", [2, 5]),  # runs of one and two
        ("AB1203456", [4]),  # a run of seven
        ("69101O7134825", [3, 5]),  # read as O: a doubt, and it cuts the run
    ]:
        assert [p for p, _, _ in ambiguous_positions(value, sku, ring_unsure(value))] == doubted, value

    # A letter read among the three letters of a middle segment is a letter (the colour word of UQ-4461-OLV-S:
    # clean tuning slip 2600); a digit read there, another length of word, or a code's first or last segment
    # stays in doubt.
    for value, doubted in [
        ("UQ-4461-OLV-S", []),
        ("LE-3748-BOX-42", []),
        ("AB_GOLD_7", [4]),  # four letters: XW82B-KVWH0-BCHZB printed a 0 among them (tuning slip 2762)
        ("UQ-4461-0LV-S", [8]),  # read as a digit
        ("UQ-4461-O1V-S", [8]),  # a digit in the word
        ("UQ-4461-OL-S", [8]),  # a word of two
        ("OLV-4461-S", [0]),  # the first segment: SO20260402
        ("UQ-4461-OLV", [8]),  # the last: VK-4597-WHT-O1
    ]:
        assert [p for p, _, _ in ambiguous_positions(value, sku, ring_unsure(value))] == doubted, value


def test_evaluate__a_waybill_barcode_printed_in_groups_is_no_order_number() -> None:
    """A courier's barcode that fits the order pattern, printed in groups for reading aloud (ZT08 6598 ...,
    an O read as 0), is the waybill, not a second order number that disagrees with the slip's."""
    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Rules, evaluate

    rules = Rules.from_config(BenchConfig())
    # the last group as short as one character: tuning slip 577
    for code, printed in (
        ("ZTO865981113595157", "ZT08 6598 1113 5951 57"),
        ("YD881726346021930", "YD88 1726 3460 2193 0"),
    ):
        base = _ambiguous_reading((1.0,) * 8, (Barcode(code, "Code128"),))
        grouped = TextLine(printed, 0.97, (20, 240, 400, 30))
        reading = ImageReading(base.quality, (*base.lines, grouped), base.barcodes, "onnx")
        res = evaluate(reading, rules, manifest=None, today=date(2025, 3, 2))
        assert res.fields["order_no"] == "1234567890", printed
        assert not [i for i in res.review_reasons if i.code == "order_mismatch"], (printed, res.review_reasons)
        # without the grouped print on the slip, the same barcode is a second order number: a disagreement
        alone = evaluate(base, rules, manifest=None, today=date(2025, 3, 2))
        assert [i.code for i in alone.review_reasons if i.code == "order_mismatch"] == ["order_mismatch"]


def test_ambiguous_positions__the_recognisers_runner_up_of_the_same_kind_is_a_doubt() -> None:
    import re

    from edge_agent.pipelines.bench.normalize import doubts_named, runner_up_doubt

    customer = re.compile(r"[A-Z]{0,4}\d{6,12}")
    sure = (1.0,) * 11
    # hard tuning slip 871: the dotted zero of VIP52075409 read as 8 at 0.71, with 0 as the runner-up
    assert ambiguous_positions("VIP52075489", customer, sure, "         0 ") == [(9, "8", "0")]
    assert ambiguous_positions("VIP52075489", customer, sure, " " * 11) == []
    assert ambiguous_positions("VIP52075489", customer, sure) == []  # runner-ups unknown
    assert ambiguous_positions("VIP52075489", customer, sure, "0") == []  # not aligned with the value
    # a letter for a letter; the pattern must allow it
    assert ambiguous_positions("VIP52075489", customer, sure, " R         ") == [(1, "I", "R")]
    assert ambiguous_positions("VIP52075489", customer, sure, "   Z       ") == []  # a letter for a digit
    # a letter for a digit, or the same letter in the other case, is no runner-up's doubt: the confusable
    # pairs and their thresholds decide those
    assert not runner_up_doubt("8", "B") and not runner_up_doubt("O", "0") and not runner_up_doubt("P", "p")
    assert runner_up_doubt("8", "0") and runner_up_doubt("E", "F") and not runner_up_doubt("8", "")
    assert not runner_up_doubt("8", "８")  # a full-width digit is the same reading, not another
    # the review page shows the doubt as a switch, as it does a confusable pair's
    message = "customer_id: VIP52075489 could be read two ways (8 or 0 at character 10)"
    assert doubts_named(message, "VIP52075489") == [(9, "8", "0")]
    assert doubts_named(message, "VIP52075409") == []  # a person changed it


def test_ctc_decode_steps__a_runner_up_is_kept_only_of_the_same_kind_and_likely_enough() -> None:
    from edge_agent.pipelines.bench.normalize import RUNNER_UP
    from edge_agent.pipelines.bench.ocr_onnx import ctc_decode_steps

    charset = ["", "8", "0", "B", "7", "b", "E"]

    def steps(*rows: dict[int, float]) -> np.ndarray:
        probs = np.zeros((1, len(rows), len(charset)), np.float32)
        for t, row in enumerate(rows):
            for k, p in row.items():
                probs[0, t, k] = p
        return probs

    likely, unlikely = 0.7, 1.0 - RUNNER_UP / 2
    ((text, _, _, _, alt),) = ctc_decode_steps(
        steps({1: likely, 2: 1 - likely}, {0: 1.0}, {1: unlikely, 2: 1 - unlikely}, {0: 1.0}, {4: 0.6, 3: 0.4}),
        charset,
    )
    assert (text, alt) == ("887", "0  ")  # the 7's runner-up is a letter: the confusable pairs' to judge
    ((_, _, _, _, alt),) = ctc_decode_steps(steps({1: likely, 0: 1 - likely}), charset)
    assert alt == " "  # the blank is no reading
    # a letter's other case is the same reading (its kin): the runner-up is the next reading after both
    ((text, _, _, _, alt),) = ctc_decode_steps(steps({3: 0.5, 5: 0.3, 6: 0.2}), charset)
    assert (text, alt) == ("B", "E")


def test_evaluate__the_manifest_settles_a_code_read_glued_to_its_labels_translation(tmp_path: Path) -> None:
    """Clean tuning slip 1325: 客户编号／ＩＤ U36207699 read without its space. The manifest's customer of the
    order is the value without the label's word: it settles the doubt; a customer it does not know leaves it."""
    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Rules, evaluate
    from edge_agent.pipelines.bench.manifest import load_manifest

    path = tmp_path / "m.csv"
    rules, day = Rules.from_config(BenchConfig()), date(2025, 3, 2)
    for customer, settled in (("C1234567", True), ("C7654321", False)):
        path.write_text(f"order_no,sku,quantity,customer_id\nSO317236,AB-1234,1,{customer}\n", encoding="utf-8")
        reading = _doubted_reading("SO317236", (1.0,) * 8)
        glued = TextLine("客户编号/IDC1234567", 0.99, (20, 160, 400, 30), char_conf=(1.0,) * 16)
        reading = replace(reading, lines=tuple(glued if "客户" in ln.text else ln for ln in reading.lines))
        res = evaluate(reading, rules, manifest=load_manifest(path), today=day)
        if settled:
            assert res.fields["customer_id"] == "C1234567" and res.sources["customer_id"] == "manifest"
            assert not res.needs_review, res.review_reasons
        else:
            assert res.fields["customer_id"] == "IDC1234567" and res.needs_review
            assert "(C1234567)" in " ".join(i.message for i in res.review_reasons if i.field == "customer_id")


def _doubted_reading(order: str, order_conf: tuple[float, ...], customer_alt: str = "") -> ImageReading:
    """A slip read with a doubtful order number (its characters' probabilities) and customer id C1234567
    (its runner-up readings, `customer_alt`)."""
    lines = (
        TextLine(f"订单号:{order}", 0.99, (20, 0, 400, 30), char_conf=(1.0,) * 4 + order_conf),
        TextLine("SKU:AB-1234", 0.99, (20, 40, 400, 30), char_conf=(1.0,) * 11),
        TextLine("数量:1", 0.99, (20, 80, 400, 30)),
        TextLine("原因:破损", 0.99, (20, 120, 400, 30)),
        TextLine("客户ID:C1234567", 0.99, (20, 160, 400, 30), char_conf=(1.0,) * 13, alt=" " * 5 + customer_alt),
        TextLine("退货日期:2025-03-01", 0.99, (20, 200, 400, 30)),
    )
    return ImageReading(QualityReport(True, (), 900.0, 180.0, 0.0, True), lines, (), "onnx")


def test_evaluate__the_manifest_settles_the_readings_a_doubt_names(tmp_path: Path) -> None:
    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.decide import named_readings
    from edge_agent.pipelines.bench.fields import Issue
    from edge_agent.pipelines.bench.inspect import Rules, evaluate
    from edge_agent.pipelines.bench.manifest import load_manifest

    two = [Issue("ambiguous_value", "order_no", "order_no: S0317235 could be read two ways (0 or O at character 2)")]
    two.append(
        Issue("ambiguous_value", "order_no", "order_no: S0317235 could be read two ways (3 or 8 at character 7)")
    )
    assert named_readings("S0317235", two) == ["S0317235", "SO317235", "S0317285", "SO317285"]
    assert named_readings("S0317235", []) == ["S0317235"]

    path = tmp_path / "m.csv"
    path.write_text(
        "order_no,sku,quantity,customer_id\nSO317235,AB-1234,2,C1234507\nSO317236,AB-1234,2,C1234567\n",
        encoding="utf-8",
    )
    rules, day, manifest = Rules.from_config(BenchConfig()), date(2025, 3, 2), load_manifest(path)
    unsure = (1.0, 0.99) + (1.0,) * 6  # the order's 0 at 0.99: 0 or O
    # the order read S0317235: of its two readings the manifest knows SO317235 alone, and the customer id's
    # 6 (with 0 its runner-up) is 0 by the manifest's customer for that order
    res = evaluate(_doubted_reading("S0317235", unsure, "      0 "), rules, manifest=manifest, today=day)
    assert res.fields["order_no"] == "SO317235" and res.sources["order_no"] == "manifest"
    assert res.fields["customer_id"] == "C1234507" and res.sources["customer_id"] == "manifest"
    assert not res.needs_review, res.review_reasons
    # without the doubt named, the manifest does not change a customer id that differs from its own
    res = evaluate(_doubted_reading("S0317235", unsure), rules, manifest=manifest, today=day)
    assert res.fields["customer_id"] == "C1234567" and res.needs_review
    # the order read as it is printed is not moved to another order the manifest holds
    res = evaluate(_doubted_reading("SO317236", (1.0,) * 8), rules, manifest=manifest, today=day)
    assert res.fields["order_no"] == "SO317236" and not res.needs_review, res.review_reasons
    # two orders among the readings: the manifest does not choose, a person does
    path.write_text(
        "order_no,sku,quantity,customer_id\nSO317235,AB-1234,2,C1234567\nS0317235,AB-1234,2,C1234567\n",
        encoding="utf-8",
    )
    res = evaluate(_doubted_reading("S0317235", unsure), rules, manifest=load_manifest(path), today=day)
    assert res.fields["order_no"] == "S0317235" and res.needs_review
    assert "ambiguous_value" in [i.code for i in res.review_reasons if i.field == "order_no"]
