"""The verdict on one slip: order-number cross-check (scan, barcode, text), confidence thresholds, review reasons."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from edge_agent.pipelines.bench.fields import FieldValue, Issue, glued_readings
from edge_agent.pipelines.bench.normalize import DIGIT_FOR, doubts_named, hamming
from edge_agent.pipelines.bench.rules_config import FieldsConfig
from edge_agent.pipelines.bench.types import Barcode, QualityReport

# Two independent readings that agree (a barcode has its own check character) are far
# more likely right than either alone.
AGREED_CONFIDENCE = 0.995
BARCODE_ONLY_CONFIDENCE = 0.95
# An order number that only a barcode in the photo gives (the slip text unread, no scan) goes to a person
# unless the manifest knows it: a courier's waybill barcode is order-shaped too (tuning seed 313, typical:
# ZTO6933473774288 taken for 373-7394116-4867555 when the printed number was cut off).
PHOTO_BARCODE_ALONE = "order_no: read from a barcode in the photo alone; no slip text or scan agrees"


@dataclass(frozen=True, slots=True)
class OrderCheck:
    """The order number as each source read it, and whether those present agree (None: fewer than two)."""

    scan: str | None
    barcode: str | None
    ocr: str | None
    agree: bool | None

    def to_json(self) -> dict[str, str | bool | None]:
        return {"scan": self.scan, "barcode": self.barcode, "ocr": self.ocr, "agree": self.agree}


def order_key(text: str) -> str:
    """What two readings of one order number share: letters and digits, upper case."""
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def confusable_key(text: str) -> str:
    """order_key with letters OCR confuses with digits read as those digits (ZTO596 and ZT0596 meet)."""
    return "".join(DIGIT_FOR.get(c, c) for c in order_key(text))


def _one_off(a: str, b: str) -> bool:
    """Two long codes (10+ characters) one misread apart: a character read wrong, or one read in or lost."""
    if min(len(a), len(b)) < 10 or a == b:
        return False
    if len(a) == len(b):
        return hamming(a, b) == 1
    short, long_ = sorted((a, b), key=len)
    if len(long_) - len(short) != 1:
        return False
    i = next((k for k, (x, y) in enumerate(zip(short, long_, strict=False)) if x != y), len(short))
    return short[i:] == long_[i + 1 :]


def cross_check_order(
    ocr: FieldValue,
    scan: str | None,
    barcodes: Sequence[Barcode],
    pattern: re.Pattern[str],
    other_codes: Collection[str] = (),
    *,
    labelled_codes: Collection[str] | None = None,
) -> tuple[OrderCheck, FieldValue, list[Issue]]:
    """Compare the order number from the RF scan, the photo's barcodes and the slip text.

    Returns the check, the order number to use, and an issue when they disagree. Barcodes
    that do not look like an order number (an EAN on the product, a URL) are ignored, and so is
    one the slip prints as another code (`other_codes`: the waybill number under 快递单号, or printed
    in groups under its barcode). When the slip text gave no order number, only the codes some label
    names (`labelled_codes`, when given) are other codes: a code printed with no label is then as
    likely the order number whose label OCR lost (Order# read as Order) as the digits under its
    barcode.
    """
    scan = scan.strip() if scan and scan.strip() else None
    ocr_text = str(ocr.value) if ocr.value is not None else None
    ocr_key = confusable_key(ocr_text or "")
    named = other_codes if ocr_text is not None or labelled_codes is None else labelled_codes
    elsewhere = {confusable_key(c) for c in named} - {ocr_key}

    def printed_elsewhere(text: str) -> bool:
        # The same code as the slip's, or one misread apart in a long one (a digit read in: 58467... for
        # 8467...), is this order number; so is one printed elsewhere with one misread (ZT08 6598 1118 ...).
        key = confusable_key(text)
        if key == ocr_key or _one_off(key, ocr_key):
            return False
        return key in elsewhere or any(_one_off(key, k) for k in elsewhere)

    bars = list(
        dict.fromkeys(
            b.text.strip()
            for b in barcodes
            if pattern.fullmatch(b.text.strip().upper()) and not printed_elsewhere(b.text)
        )
    )
    # Several order-like barcodes: prefer one that another source confirms.
    others = {confusable_key(x) for x in (scan, ocr_text) if x}
    barcode = next((b for b in bars if confusable_key(b) in others), bars[0] if bars else None)
    present = [x for x in (scan, barcode, ocr_text) if x]
    # Readings that differ only in confusable letters/digits agree: the machine-read one is taken. Every
    # order-like barcode counts, unless one of them is the order number another source read: the rest are
    # then other codes (a courier's waybill barcode whose number the slip does not print legibly).
    confirmed = barcode is not None and confusable_key(barcode) in others
    keys = {confusable_key(x) for x in present} | ({confusable_key(b) for b in bars} if not confirmed else set())
    agree = None if len(present) < 2 else len(keys) == 1
    check = OrderCheck(scan, barcode, ocr_text, agree)
    if not present:
        return check, ocr, []
    if ocr_text is not None and barcode is None and scan is None:
        # The slip text alone, and it is only the start or the end of a longer order-shaped code the slip
        # prints elsewhere (4131247 of 11474131247): part of the number was not read.
        key = confusable_key(ocr_text)
        longer = sorted(
            c
            for c in other_codes
            if len(c) > len(ocr_text)
            and pattern.fullmatch(c.upper())
            and (confusable_key(c).startswith(key) or confusable_key(c).endswith(key))
        )
        if longer:
            issue = Issue("order_mismatch", "order_no", f"order_no {ocr_text} is only part of {longer[0]} on the slip")
            return check, FieldValue("order_no", ocr_text, round(min(ocr.confidence, 0.5), 4), "ocr"), [issue]
    if len(keys) > 1:
        parts = [
            f"{name} {v}"
            for name, v in (("scan", scan), ("barcode", ", ".join(bars) or None), ("slip text", ocr_text))
            if v
        ]
        issue = Issue("order_mismatch", "order_no", "order_no differs between sources: " + "; ".join(parts))
        best = barcode or scan or ocr_text
        src = "barcode" if barcode else "scan" if scan else "ocr"
        return check, FieldValue("order_no", best, round(min(ocr.confidence or 0.5, 0.5), 4), src), [issue]
    # All present sources agree: the machine-read value is exact (keeps the dash OCR may drop).
    if barcode is not None or scan is not None:
        value = barcode or scan
        conf = AGREED_CONFIDENCE if len(present) >= 2 else BARCODE_ONLY_CONFIDENCE
        return check, FieldValue("order_no", value, max(conf, ocr.confidence), "barcode" if barcode else "scan"), []
    return check, ocr, []


def barcode_alone(check: OrderCheck) -> bool:
    """Did only a barcode in the photo give the order number (no slip text, no RF scan)?"""
    return check.barcode is not None and check.ocr is None and check.scan is None


# Issues that mean the photo did not give a usable reading (as opposed to a reading that breaks a rule).
READ_PROBLEMS = ("missing_field", "found_by_shape", "bad_format", "low_confidence", "glare_on_value", "reads_disagree")
NO_QUALITY_HINT = "nothing wrong with the photo was measured: the print may be faint, damaged or absent"


@dataclass(frozen=True, slots=True)
class Retake:
    """A field the photo did not give (None: the whole photo), and the likely cause from the quality measures."""

    field: str | None
    cause: str

    def to_json(self) -> dict[str, str | None]:
        return {"field": self.field, "cause": self.cause}


def review_reasons(
    values: Mapping[str, FieldValue],
    issues: Sequence[Issue],
    thresholds: FieldsConfig,
    quality: QualityReport | None = None,
) -> tuple[Issue, ...]:
    """Every reason a person must look at this item: empty means sign and send it as it is.

    Quality measures are hints: a photo whose fields all read confidently and validate passes whatever
    its glare; where a field falls short, its reason names the likely cause.
    """
    out: list[Issue] = []
    if quality is not None and quality.blank is not None:
        out.append(Issue("image_quality", None, f"retake the photo: {quality.blank}"))
    out += issues
    flagged = {i.field for i in out}
    for name, fv in values.items():
        limit = thresholds.threshold(name)
        if fv.value is not None and fv.confidence < limit and name not in flagged:
            out.append(Issue("low_confidence", name, f"low confidence on {name} ({fv.confidence:.2f} < {limit:.2f})"))
    if quality is not None and quality.reasons and quality.blank is None:
        hint = "; ".join(quality.reasons)
        out = [
            Issue(i.code, i.field, f"{i.message} (likely cause: {hint})") if i.code in READ_PROBLEMS else i for i in out
        ]
    seen: set[tuple[str, str | None, str]] = set()
    unique = []
    for i in out:
        if (i.code, i.field, i.message) not in seen:
            seen.add((i.code, i.field, i.message))
            unique.append(i)
    return tuple(unique)


def settle_confusables(
    values: dict[str, FieldValue],
    issues: list[Issue],
    machine_read: Mapping[str, Sequence[tuple[str, str]]],
) -> list[Issue]:
    """Settle letter/digit ambiguities with a machine-read value that matches up to confusables, or reads as
    one of the other readings the field's doubts name (named_readings: a runner-up's 8 for 0).

    `machine_read` maps a field to (exact value, source) from elsewhere: the photo's barcodes ("barcode"),
    the manifest's SKUs and customer of the order ("manifest"). One match takes its exact text at
    AGREED_CONFIDENCE and drops the field's ambiguous_value issue; none or several leave the review
    reason as it is.
    """
    out = list(issues)
    for name, candidates in machine_read.items():
        fv = values.get(name)
        amb = [i for i in out if i.field == name and i.code == "ambiguous_value"]
        if fv is None or fv.value is None or not amb:
            continue
        keys = {confusable_key(r) for r in named_readings(str(fv.value), amb)}
        matches = {c.strip().upper(): src for c, src in candidates if c and confusable_key(c) in keys}
        if len(matches) == 1:
            text, src = matches.popitem()
            values[name] = FieldValue(name, text, AGREED_CONFIDENCE, src)
            out = [i for i in out if i not in amb]
    return out


# The doubts of one value whose readings are tried (2 ** NAMED_READINGS of them at most).
NAMED_READINGS = 6


def named_readings(value: str, issues: Sequence[Issue]) -> list[str]:
    """The value as read, then every other reading the doubts named in `issues` allow (each doubtful character
    as read or as its other reading: "8 or 0 at character 10"), from the first NAMED_READINGS doubts, and the
    value without a word of its label's translation it was read glued to (fields.glued_readings)."""
    doubts = sorted({d for i in issues for d in doubts_named(i.message, value)})[:NAMED_READINGS]
    out = [value]
    for at, _, other in doubts:
        out += [v[:at] + other + v[at + 1 :] for v in out]
    out += [r for i in issues for r in glued_readings(i.message)]
    return list(dict.fromkeys(out))


def retake_advice(reasons: Sequence[Issue], quality: QualityReport | None) -> tuple[Retake, ...]:
    """What a retake could fix: the fields the photo did not give, each with the likely cause."""
    if quality is not None and quality.blank is not None:
        return (Retake(None, quality.blank),)
    cause = "; ".join(quality.reasons) if quality is not None and quality.reasons else NO_QUALITY_HINT
    fields = dict.fromkeys(i.field for i in reasons if i.code in READ_PROBLEMS and i.field is not None)
    return tuple(Retake(f, cause) for f in fields)
