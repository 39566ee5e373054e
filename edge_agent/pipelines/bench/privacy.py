"""Personal data on slips: names, phone numbers, ID-card numbers, addresses and e-mails masked in any stored text."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from edge_agent.pipelines.bench.fields import Extraction
from edge_agent.pipelines.bench.normalize import to_halfwidth, to_simplified
from edge_agent.pipelines.bench.rules_config import PrivacyConfig

TAGS = {
    "name": "[NAME]",
    "address": "[ADDRESS]",
    "phone": "[PHONE]",
    "id": "[ID]",
    "email": "[EMAIL]",
    "other": "[MASKED]",
}

_D = r"[0-9OoIlSB]"  # a digit, or a letter OCR reads in its place
# Chinese mobile numbers, with +86 and spaces or dashes anywhere (138 1234 5678, 138-1234-5678).
_MOBILE = re.compile(r"(?<![0-9])(?:\+?\s?86[\s-]?)?1[3-9]" + _D + r"(?:[\s-]?" + _D + r"){8}(?![0-9])")
# Landlines: area code 0xx/0xxx then 7-8 digits (010-12345678, 0571 8888 1234).
_LANDLINE = re.compile(r"(?<![0-9A-Za-z])\(?0\d{2,3}\)?[\s-]?\d{3,4}[\s-]?\d{4}(?![0-9])")
# Resident ID (GB 11643): 6-digit region, birth date 19xx/20xx, 3-digit sequence, check digit or X;
# and the old 15-digit form. The check digit is not required: a misread one still identifies a person.
_ID18 = re.compile(
    r"(?<![0-9])[1-9]\d{5}\s?(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?\d{3}[0-9Xx]"
    r"(?![0-9])"
)
_ID15 = re.compile(r"(?<![0-9])[1-9]\d{5}\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}(?![0-9])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# International numbers: +country code then 7-14 more digits, spaces, dashes or one (area) anywhere.
_INTL_PHONE = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[\s.-]?\(?\d{1,4}\)?){2,6}(?![\d])")
# Contact formats inside QR codes (MECARD, vCard): the keys whose values are a person's.
_CONTACT_KEYS = re.compile(
    r"(?i)(?<![A-Z])(N|FN|NICKNAME|TEL(?:;[^:\n]*)?|EMAIL(?:;[^:\n]*)?|ADR(?:;[^:\n]*)?|BDAY|SOUND)"
    r":([^;\n]+)(?=;|\n|$)"
)
_CONTACT_TAG = {"N": "name", "FN": "name", "NICKNAME": "name", "SOUND": "name", "TEL": "phone", "EMAIL": "email"}
# Latin-script addresses: a house number, capitalised words, a street word ("21 Baker Street").
_LATIN_STREET = (
    r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl|Square|Sq|"
    r"Terrace|Close|Crescent|Highway|Hwy|Parkway|Pkwy|Strasse|Straße|Rue|Via|Calle)"
)
_LATIN_ADDR = re.compile(
    r"(?<![\w])\d{1,5}[A-Za-z]?,?\s+(?:[A-Z][\w'-]*\.?\s+){0,4}" + _LATIN_STREET + r"\b\.?"
    r"(?:,\s*[A-Z][\w'-]*(?:\s+[A-Z0-9][\w'-]*){0,3})?"
)
# Latin names: a title and a name, or two or three capitalised words right before an address or phone.
_LATIN_TITLED = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+[A-Z][a-z'-]+(?:\s+[A-Z][a-z'-]+)?")
_LATIN_NAME_BEFORE = re.compile(
    r"\b[A-Z][a-z'-]+(?:\s+[A-Z]\.)?(?:\s+[A-Z][a-z'-]+){1,2}(?=\s*[,;]?\s*(?:\[ADDRESS\]|\[PHONE\]))"
)
# A labelled value ends at a line end, a separator, or where a tag of an earlier mask starts.
_VALUE_END = r"[\n;；|\[]"
# A Chinese name right before a phone number ("张三 138...") is how slips print the sender.
_NAME_BEFORE_PHONE = re.compile(r"[\u4e00-\u9fff]{2,4}(?:先生|女士)?\s*(?=\[PHONE\])")
# Addresses without a label: a run that names an administrative area and then a street or building.
_ADDR_RUN = re.compile(r"[\u4e00-\u9fff0-9A-Za-z#()\-]{4,}")
_ADDR_SHAPE = re.compile(
    r"(?:省|市|区|县|州|旗).*?(?:路|街|道|号|弄|巷|村|镇|乡|室|栋|幢|楼|单元|大厦|小区)"
    r"|\d+\s*(?:号楼|号院|弄|栋|幢|室)"
)


def _kept(text: str, keep: Iterable[str]) -> list[tuple[int, int]]:
    spans = []
    for k in keep:
        if len(k) >= 4:
            spans += [(m.start(), m.end()) for m in re.finditer(re.escape(k), text, re.IGNORECASE)]
    return spans


def _sub(rx: re.Pattern[str], tag: str, text: str, keep: Iterable[str]) -> str:
    protected = _kept(text, keep)

    def repl(m: re.Match[str]) -> str:
        if any(s < m.end() and m.start() < e for s, e in protected):
            return m.group(0)
        return tag

    return rx.sub(repl, text)


def _labelled(text: str, labels: Mapping[str, Iterable[str]], enabled: Mapping[str, bool]) -> str:
    """The value after each personal-data label ("收件人:王小明", "Name: John Smith") replaced by its tag."""
    for role, words in labels.items():
        if not enabled.get(role, False):
            continue
        alts = sorted({w for w in words if w.strip()}, key=len, reverse=True)
        if not alts:
            continue
        guard = r"(?<![A-Za-z])"
        rx = re.compile(
            "(" + "|".join(guard + r"\s*".join(re.escape(c) for c in to_simplified(w)) for w in alts) + r")"
            r"(\s*[:：]\s*|\s+)(?!\[)([^\n;；|\[]+?)(?=\s*(?:" + _VALUE_END + r"|$|\s{2,}))",
            re.IGNORECASE,
        )
        # Matched on the text in simplified characters (one for one, so its places hold): 電話 is 电话.
        parts, last = [], 0
        for m in rx.finditer(to_simplified(text)):
            parts += [text[last : m.start(3)], TAGS[role]]
            last = m.end(3)
        text = "".join(parts) + text[last:]
    return text


def _contacts(text: str, enabled: Mapping[str, bool]) -> str:
    """MECARD / vCard values of a person (name, phone, e-mail, address) replaced by their tags."""

    def repl(m: re.Match[str]) -> str:
        key = m.group(1).split(";")[0].upper()
        role = _CONTACT_TAG.get(key, "address" if key == "ADR" else "other")
        if not enabled.get(role, True):
            return m.group(0)
        return f"{m.group(1)}:{TAGS[role]}"

    return _CONTACT_KEYS.sub(repl, text) if re.search(r"(?i)MECARD:|BEGIN:VCARD", text) else text


def mask_text(
    text: str,
    cfg: PrivacyConfig | None = None,
    *,
    keep: Iterable[str] = (),
    labels: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """Text with personal data replaced by tags ([PHONE], [ID], [NAME], [ADDRESS], [EMAIL]).

    Every text that leaves the device goes through here: the slip's text, barcode contents, review
    messages. `labels` maps "name", "address", "phone", "id" to the template's labels for them; the
    value after such a label is masked whatever it looks like. `keep` lists field values (order number,
    SKU, customer id) that are sent anyway and must stay readable even where they look like a phone
    or ID number.
    """
    cfg = cfg or PrivacyConfig()
    keep = tuple(keep)
    enabled = {
        "name": cfg.mask_names,
        "address": cfg.mask_addresses,
        "phone": cfg.mask_phones,
        "id": cfg.mask_id_cards,
        "email": cfg.mask_emails,
    }
    out = to_halfwidth(text)
    out = _contacts(out, enabled)
    if cfg.mask_emails:
        out = _sub(_EMAIL, TAGS["email"], out, keep)
    if cfg.mask_id_cards:
        out = _sub(_ID18, TAGS["id"], out, keep)
        out = _sub(_ID15, TAGS["id"], out, keep)
    if cfg.mask_phones:
        out = _sub(_MOBILE, TAGS["phone"], out, keep)
        out = _sub(_LANDLINE, TAGS["phone"], out, keep)
        out = _sub(_INTL_PHONE, TAGS["phone"], out, keep)
        if cfg.mask_names:
            out = _sub(_NAME_BEFORE_PHONE, TAGS["name"] + " ", out, keep)
    if cfg.mask_addresses:
        out = _sub(_LATIN_ADDR, TAGS["address"], out, keep)
    if cfg.mask_names:
        out = _sub(_LATIN_TITLED, TAGS["name"], out, keep)
        out = _sub(_LATIN_NAME_BEFORE, TAGS["name"], out, keep)
    if labels:
        out = _labelled(out, labels, enabled)
    if cfg.mask_addresses:
        protected = _kept(out, keep)

        def addr(m: re.Match[str]) -> str:
            if _ADDR_SHAPE.search(m.group(0)) and not any(s < m.end() and m.start() < e for s, e in protected):
                return TAGS["address"]
            return m.group(0)

        out = _ADDR_RUN.sub(addr, out)
    for p in cfg.extra_patterns:
        out = _sub(re.compile(p), TAGS["other"], out, keep)
    return out


def masked_slip_text(
    extraction: Extraction,
    cfg: PrivacyConfig | None = None,
    *,
    keep: Iterable[str] = (),
    labels: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """The slip's OCR text, one row per line, with labelled personal values and pattern matches masked."""
    cfg = cfg or PrivacyConfig()
    enabled = {"name": cfg.mask_names, "address": cfg.mask_addresses, "phone": cfg.mask_phones, "id": cfg.mask_id_cards}
    rows = [r.text for r in extraction.rows]
    # Replace from the right so earlier offsets in the same row stay valid.
    for span in sorted(extraction.spans, key=lambda s: (s.row, -s.start)):
        if not enabled.get(span.role, False):
            continue
        text = rows[span.row]
        value = text[span.start : span.end]
        if value.strip():
            lead = len(value) - len(value.lstrip())
            trail = len(value) - len(value.rstrip())
            rows[span.row] = text[: span.start + lead] + TAGS[span.role] + text[span.end - trail :]
    return "\n".join(mask_text(r, cfg, keep=keep, labels=labels) for r in rows)
