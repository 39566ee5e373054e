"""Personal data on slips is masked in any text that is stored or sent; field values stay readable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.pipelines.bench.fields import extract_fields, load_reasons, load_template
from edge_agent.pipelines.bench.privacy import mask_text, masked_slip_text
from edge_agent.pipelines.bench.rules_config import FieldsConfig, PrivacyConfig, ValidationConfig
from edge_agent.pipelines.bench.types import TextLine

TEMPLATE = load_template(FieldsConfig())
REASONS = load_reasons(ValidationConfig())


def lines_of(*texts: str) -> list[TextLine]:
    return [TextLine(t, 0.97, (20, 40 * i, 600, 30)) for i, t in enumerate(texts)]


@pytest.mark.parametrize(
    "phone",
    [
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 13812345678",
        "１３８１２３４５６７８",
        "0571-88881234",
        "138l2345678",
    ],
)
def test_mask_text__phone_numbers(phone: str) -> None:
    out = mask_text(f"联系方式 {phone} 谢谢")
    assert "[PHONE]" in out
    assert "5678" not in out and "1234" not in out


@pytest.mark.parametrize("idno", ["11010519491231002X", "110105194912310021", "110105491231002"])
def test_mask_text__id_card_numbers(idno: str) -> None:
    assert mask_text(f"身份证 {idno}") == "身份证 [ID]"


def test_mask_text__name_before_phone_address_and_email() -> None:
    out = mask_text("张伟 13812345678 广东省深圳市南山区科技园南路12号3栋1201室 a.b@example.com")
    assert out == "[NAME] [PHONE] [ADDRESS] [EMAIL]"


def test_mask_text__kept_field_values_stay_readable() -> None:
    # a 19-digit order number can contain something shaped like a phone or ID number
    order = "1138123456789012345"
    assert mask_text(f"订单号 {order}", keep=[order]) == f"订单号 {order}"


def test_mask_text__switches_and_extra_patterns() -> None:
    cfg = PrivacyConfig(mask_phones=False, extra_patterns=[r"LC\d{6}"])
    assert mask_text("13812345678 LC123456", cfg) == "13812345678 [MASKED]"


def test_privacy_config__bad_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match=r"bad regular expression '\('"):
        PrivacyConfig(extra_patterns=["("])


def test_masked_slip_text__labels_in_traditional_characters_mask_their_values() -> None:
    ext = extract_fields(
        lines_of("聯絡電話：0912-345-678", "收件人：陳大文", "訂單號：123456789012"), TEMPLATE, REASONS
    )
    text = masked_slip_text(ext, keep=["123456789012"])
    assert "0912-345-678" not in text and "陳大文" not in text and "123456789012" in text


def test_masked_slip_text__labelled_personal_values_are_masked_fields_are_not() -> None:
    lines = lines_of(
        "订单号：123456789012 数量：1",
        "收件人：欧阳娜娜 手机：13912345678",
        "寄件地址：",
        "四川省成都市武侯区天府大道88号",
        "联系人: 李雷",
        "身份证号：11010519491231002X",
    )
    ext = extract_fields(lines, TEMPLATE, REASONS)
    text = masked_slip_text(ext, keep=["123456789012"])
    assert "123456789012" in text and "数量:1" in text  # stored text is half-width
    for secret in ("欧阳娜娜", "13912345678", "天府大道", "李雷", "11010519491231002X"):
        assert secret not in text
    assert "[NAME]" in text and "[PHONE]" in text and "[ADDRESS]" in text and "[ID]" in text


_given = "伟芳娜秀英敏静丽强磊军洋勇艳杰"


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(st.sampled_from("王李张刘陈杨黄赵"), st.text(alphabet=_given, min_size=1, max_size=2)),
    st.from_regex(r"1[3-9]\d{9}", fullmatch=True),
    st.sampled_from(["：", ":", ": "]),
    st.tuples(st.sampled_from(["姓名", "收件人", "联系人"]), st.sampled_from(["电话", "手机", "联系电话"])),
)
def test_masked_slip_text__generated_people_never_leak(
    person: tuple[str, str], phone: str, colon: str, labels: tuple[str, str]
) -> None:
    name = person[0] + person[1]
    name_label, phone_label = labels
    ext = extract_fields(lines_of(f"{name_label}{colon}{name}    {phone_label}{colon}{phone}"), TEMPLATE, REASONS)
    text = masked_slip_text(ext)
    assert name not in text and phone not in text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_mask_text__arbitrary_text_never_crashes(text: str) -> None:
    mask_text(text, keep=[text[:5]])


LABELS = TEMPLATE.privacy_labels


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("John Smith, 21 Baker Street", "[NAME], [ADDRESS]"),
        ("Ship to John A. Smith, 1600 Pennsylvania Avenue, Washington DC", "Ship to [NAME], [ADDRESS]"),
        ("Name: Maria Garcia  Order No: 1234567", "Name: [NAME]  Order No: 1234567"),
        ("Call +44 20 7946 0958 or ask Mrs. Brown", "Call [PHONE] or ask [NAME]"),
        ("收件人:王小明 13812345678 北京市朝阳区建国路88号", "收件人:[NAME] [PHONE] [ADDRESS]"),
        ("收件人：王小明；订单号:12345678", "收件人:[NAME];订单号:12345678"),
        # a slip printed in traditional characters: 電話 is the template's 电话, and a Taiwan mobile number
        # matches none of the phone patterns; the text keeps its own characters
        ("電話：0912-345-678；訂單號:12345678", "電話:[PHONE];訂單號:12345678"),
        (
            "MECARD:N:Sean Owen;TEL:+12125658770;EMAIL:srowen@google.com;;",
            "MECARD:N:[NAME];TEL:[PHONE];EMAIL:[EMAIL];;",
        ),
        (
            "BEGIN:VCARD\nFN:Jane Doe\nTEL;TYPE=cell:555 0100\nEND:VCARD",
            "BEGIN:VCARD\nFN:[NAME]\nTEL;TYPE=cell:[PHONE]\nEND:VCARD",
        ),
    ],
)
def test_mask_text__latin_script_labelled_and_contact_formats(text: str, masked: str) -> None:
    assert mask_text(text, labels=LABELS) == masked


@pytest.mark.parametrize(
    "text",
    [
        "Google Print Ads - T.G.I.A.F. - January 31, 2008",
        "http://arnaud.sahuguet.com/graffiti/test.php?ll=-74.00309961503218,40.74102573163046,0",
        "Order No: 250817-096066134633838 SKU J85177-30",
        "Reason: Damaged in transit, Qty 2",
    ],
)
def test_mask_text__business_text_stays_readable(text: str) -> None:
    assert mask_text(text, labels=LABELS) == text


def test_evaluate__barcode_contents_are_masked_like_the_slip_text() -> None:
    # A QR code on a slip holding the receiver's label went out in body.barcodes[].text (issue 9, defect 9).
    from datetime import date

    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Rules, evaluate
    from edge_agent.pipelines.bench.types import Barcode, ImageReading, QualityReport

    quality = QualityReport(True, (), 900.0, 180.0, 0.0, True)
    qr = "收件人:王小明 13812345678 广东省深圳市南山区科技园南路12号 / John Smith, 21 Baker Street"
    reading = ImageReading(
        quality,
        tuple(lines_of("订单号: 1234567890", "收件人: 李雷")),
        (Barcode(qr, "QRCode"), Barcode("1234567890", "Code128")),
        "onnx",
    )
    body = evaluate(reading, Rules.from_config(BenchConfig()), manifest=None, today=date(2025, 1, 1)).record_body()
    sent = str(body)
    for secret in ("王小明", "13812345678", "科技园", "John", "Baker", "李雷"):
        assert secret not in sent
    assert [b["text"] for b in body["barcodes"]] == [
        "收件人:[NAME] [PHONE] [ADDRESS] / [NAME], [ADDRESS]",
        "1234567890",  # the order number is sent anyway
    ]
