"""Slip fields from OCR lines: templates of label synonyms and value patterns, values cleaned and scored."""

from __future__ import annotations

import functools
import logging
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError
from edge_agent.pipelines.bench.locate import (
    FUZZY_LABEL,
    SHAPE_ONLY,
    Found,
    Labels,
    locate,
    o_read_as_zero,
    unclaimed,
)
from edge_agent.pipelines.bench.normalize import (
    CODE_SEPARATORS,
    QTY_UNITS,
    ReasonTable,
    ambiguous_positions,
    clean_code_token_conf,
    dangling_separator,
    doubt_phrase,
    doubtful_dots,
    ean13_valid,
    ends_on_dot,
    fix_code,
    fold,
    hamming,
    match_reason,
    opens_with_reason,
    parse_date,
    parse_quantity,
    squash,
    to_halfwidth,
    unread_separators,
    zeros_in_words,
)
from edge_agent.pipelines.bench.rules_config import FIELD_NAMES, FieldsConfig, PrivacyConfig, ValidationConfig
from edge_agent.pipelines.bench.types import TextLine
from edge_agent.resources import config_file

log = logging.getLogger(__name__)

CUT_OFF = "the rest of the code was not read"  # the problem of a code that ends on a separator

KINDS = ("code", "int", "date", "reason")
PRIVACY_ROLES = ("name", "address", "phone", "id")

# Confidence factors. Measured on generated slips (docs/records-bench.md, "Calibration"): each
# OCR confusion fixed, a value found on the next row, and two different values for one field each make a
# wrong value likelier (a label read with one wrong character: locate.FUZZY_LABEL).
PER_SUBSTITUTION = 0.9
CONFLICT = 0.5
AMBIGUOUS_CODE = 0.6
# Each 0 and O in the codes of a slip with a label read with a zero for its O (locate.o_read_as_zero) is at
# most this sure: below every SURE_AS_READ threshold, so where the pattern allows both it is a doubt.
O_ZERO_UNSURE = 0.5
# A code with a character the recogniser gave less than even odds (less likely than every other reading
# together) is no surer than that character, whatever its line's confidence: hard tuning slip 1061 read the
# customer id M94323709035 as M9432370901 (its 9 at 0.496, the 1 that ends it at 0.51) in a line at 0.905.
EVEN_ODDS = 0.5


@dataclass(frozen=True, slots=True)
class Issue:
    """Why an item needs a person: a code a program can act on, the field, and a sentence for the reviewer."""

    code: str
    field: str | None
    message: str

    def to_json(self) -> dict[str, str | None]:
        return {"code": self.code, "field": self.field, "message": self.message}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: str
    labels: tuple[str, ...]
    pattern: re.Pattern[str]
    required: bool = True


@dataclass(frozen=True, slots=True)
class Template:
    """Label synonyms and value patterns for the six fields, plus labels that only end a value."""

    fields: tuple[FieldSpec, ...]
    other_labels: tuple[str, ...]
    name_labels: tuple[str, ...]
    address_labels: tuple[str, ...]
    phone_labels: tuple[str, ...]
    id_labels: tuple[str, ...]

    @property
    def privacy_labels(self) -> dict[str, tuple[str, ...]]:
        """Labels whose values are personal data, by role (name, address, phone, id)."""
        return {role: getattr(self, f"{role}_labels") for role in PRIVACY_ROLES}

    def spec(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


# ---------------------------------------------------------------- templates


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: template file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def _str_list(src: Path, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError([f"{src}: {key}: expected a list of non-empty strings, got {value!r}"])
    return list(value)


def _merge_field(cur: dict[str, Any], spec: dict[str, Any], name: str, src: Path) -> list[str]:
    problems = []
    for key, value in spec.items():
        where = f"{src}: fields.{name}.{key}"
        if key == "labels":
            cur["labels"] += _str_list(src, f"fields.{name}.{key}", value)
        elif key == "kind" and value in KINDS:
            cur["kind"] = value
        elif key == "kind":
            problems.append(f"{where}: expected one of {', '.join(KINDS)}, got {value!r}")
        elif key == "pattern":
            try:
                cur["pattern"] = re.compile(str(value))
            except re.error as exc:
                problems.append(f"{where}: expected a regular expression, got {value!r} ({exc})")
        elif key == "required" and isinstance(value, bool):
            cur["required"] = value
        elif key == "required":
            problems.append(f"{where}: expected true or false, got {value!r}")
        else:
            problems.append(f"{where}: unknown key (expected labels, kind, pattern or required)")
    return problems


def _merge_template(acc: dict[str, Any], data: dict[str, Any], src: Path) -> None:
    problems = [
        f"{src}: {key}: unknown key (expected fields, other, privacy or name)"
        for key in data
        if key not in ("fields", "other", "privacy", "name")
    ]
    for name, spec in (data.get("fields") or {}).items():
        if name not in FIELD_NAMES:
            problems.append(f"{src}: fields.{name}: unknown field (expected one of {', '.join(FIELD_NAMES)})")
        elif not isinstance(spec, dict):
            problems.append(f"{src}: fields.{name}: expected a table, got {spec!r}")
        else:
            cur = acc["fields"].setdefault(name, {"labels": [], "kind": None, "pattern": None, "required": True})
            problems += _merge_field(cur, spec, name, src)
    if "other" in data:
        acc["other"] += _str_list(src, "other.labels", (data["other"] or {}).get("labels", []))
    for role in PRIVACY_ROLES:
        key = f"{role}_labels"
        if key in (data.get("privacy") or {}):
            acc[key] += _str_list(src, f"privacy.{key}", data["privacy"][key])
    if problems:
        raise ConfigError(problems)


def load_template(
    fields_cfg: FieldsConfig, privacy_cfg: PrivacyConfig | None = None, base_dir: Path | None = None
) -> Template:
    """The shipped template merged with the site's template files and extra labels from the config."""
    acc: dict[str, Any] = {"fields": {}, "other": []}
    for role in PRIVACY_ROLES:
        acc[f"{role}_labels"] = []
    files = [config_file("templates/default.toml")] if fields_cfg.builtin_template else []
    files += [p if p.is_absolute() or base_dir is None else base_dir / p for p in fields_cfg.templates]
    for path in files:
        _merge_template(acc, _read_toml(path), path)
    for name, labels in fields_cfg.extra_labels.items():
        acc["fields"].setdefault(name, {"labels": [], "kind": None, "pattern": None, "required": True})
        acc["fields"][name]["labels"] += labels
    if privacy_cfg is not None:
        acc["name_labels"] += privacy_cfg.extra_name_labels
        acc["address_labels"] += privacy_cfg.extra_address_labels
    specs = []
    problems = []
    for name in FIELD_NAMES:
        cur = acc["fields"].get(name)
        if cur is None or not cur["labels"] or cur["kind"] is None or cur["pattern"] is None:
            problems.append(
                f"templates: fields.{name}: needs labels, kind and pattern (none of the templates "
                f"{', '.join(str(p) for p in files) or '(none)'} gives all three)"
            )
            continue
        specs.append(FieldSpec(name, cur["kind"], tuple(dict.fromkeys(cur["labels"])), cur["pattern"], cur["required"]))
    if problems:
        raise ConfigError(problems)
    return Template(
        tuple(specs),
        tuple(acc["other"]),
        tuple(acc["name_labels"]),
        tuple(acc["address_labels"]),
        tuple(acc["phone_labels"]),
        tuple(acc["id_labels"]),
    )


def load_reasons(cfg: ValidationConfig) -> ReasonTable:
    """The canonical reasons (config, else config/reasons.toml) with every phrase meaning each."""
    src = config_file("reasons.toml")
    data = _read_toml(src)
    shipped: dict[str, list[str]] = {}
    for i, entry in enumerate(data.get("reason", [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError([f"{src}: reason[{i}]: expected a table with name and synonyms"])
        shipped[entry["name"]] = _str_list(src, f"reason[{i}].synonyms", entry.get("synonyms", []))
    canonical = list(cfg.reasons) or list(shipped)
    synonyms: dict[str, list[str]] = {r: list(shipped.get(r, [])) for r in canonical}
    for reason, words in cfg.reason_synonyms.items():
        if reason not in canonical:
            raise ConfigError(
                [
                    f"config: bench.validation.reason_synonyms.{reason}: expected one of the reasons "
                    f"({', '.join(canonical)}), got {reason!r}"
                ]
            )
        synonyms[reason] += words
    return ReasonTable.build(canonical, synonyms)


# ---------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class Row:
    """OCR boxes on one visual line, left to right, joined by spaces; one confidence per character."""

    text: str
    confs: tuple[float, ...]
    box_starts: frozenset[int]


def group_rows(lines: Sequence[TextLine]) -> tuple[Row, ...]:
    """Boxes whose vertical centres fall inside each other's band form one row, sorted top to bottom."""
    boxed = [ln for ln in lines if ln.box[3] > 0]
    unboxed = [ln for ln in lines if ln.box[3] <= 0]
    boxed.sort(key=lambda ln: ln.box[1] + ln.box[3] / 2)
    groups: list[list[TextLine]] = []
    for ln in boxed:
        cy = ln.box[1] + ln.box[3] / 2
        if groups:
            last = groups[-1]
            top = min(b.box[1] for b in last)
            bottom = max(b.box[1] + b.box[3] for b in last)
            lcy = sum(b.box[1] + b.box[3] / 2 for b in last) / len(last)
            if top <= cy <= bottom and ln.box[1] <= lcy <= ln.box[1] + ln.box[3]:
                last.append(ln)
                continue
        groups.append([ln])
    groups += [[ln] for ln in unboxed]
    rows = []
    for g in groups:
        g.sort(key=lambda b: b.box[0])
        text, confs, starts = "", [], set()
        for b in g:
            if text:
                text += " "
                confs.append(1.0)
            starts.add(len(text))
            text += b.text
            confs += [max(0.0, min(1.0, float(b.confidence)))] * len(b.text)
        rows.append(Row(text, tuple(confs), frozenset(starts)))
    return tuple(rows)


# ---------------------------------------------------------------- labels


@dataclass(frozen=True, slots=True)
class LabelHit:
    start: int
    end: int  # after the label and its colon
    role: str  # a field name, "name"/"address"/"phone"/"id", or "other"
    fuzzy: bool


class LabelMatcher:
    """Finds template labels in row text; a label counts before a colon, or alone at the start of a box."""

    def __init__(self, template: Template) -> None:
        roles: dict[str, str] = {}
        for f in template.fields:
            for lab in f.labels:
                roles.setdefault(squash(lab), f.name)
        for role in PRIVACY_ROLES:
            for lab in getattr(template, f"{role}_labels"):
                roles.setdefault(squash(lab), role)
        for lab in template.other_labels:
            roles.setdefault(squash(lab), "other")
        roles.pop("", None)
        self.roles = roles
        words = {f.name: [w for lab in f.labels if lab.isascii() for w in lab.split()] for f in template.fields}
        self.labels = Labels(roles, FIELD_NAMES, words)
        alts = []
        for lab in sorted(roles, key=len, reverse=True):
            body = r"\s*".join(re.escape(c) for c in lab)
            guard = r"(?<![a-z0-9])" if lab[0].isascii() and lab[0].isalnum() else ""
            alts.append(guard + body)
        self.rx = re.compile("(?:" + "|".join(alts) + r")(?P<colon>\s*[:;])?")
        # Only field labels are guessed when misread (one wrong character, 3+ characters long).
        self.fuzzy = [(lab, role) for lab, role in roles.items() if role in FIELD_NAMES and len(lab) >= 3]

    def find(self, row: Row) -> list[LabelHit]:
        text = fold(row.text)
        hits: list[LabelHit] = []
        for m in self.rx.finditer(text):
            start, end = m.span()
            label = "".join(text[m.start() : m.end() - len(m.group("colon") or "")].split())
            after = text[end : end + 1]
            at_box = start in row.box_starts or start == 0
            if m.group("colon") or end == len(text) or (at_box and after.isspace()):
                hits.append(LabelHit(start, end, self.roles[label], False))
        hits += self._fuzzy_hits(text, hits)
        hits.sort(key=lambda h: h.start)
        return hits

    def _fuzzy_hits(self, text: str, hits: list[LabelHit]) -> list[LabelHit]:
        out = []
        covered = [(h.start, h.end) for h in hits]
        for m in re.finditer(r"[:;]", text):
            pos = m.start()
            if any(s <= pos < e for s, e in covered):
                continue
            region_start = max([e for s, e in covered if e <= pos] + [0])
            before = text[region_start:pos].rstrip()
            found = {
                (lab, role)
                for lab, role in self.fuzzy
                if len(before) >= len(lab) and hamming(before[-len(lab) :], lab) == 1
            }
            if len({role for _, role in found}) == 1:
                lab, role = found.pop()
                out.append(LabelHit(region_start + len(before) - len(lab), pos + 1, role, True))
        return out


# ---------------------------------------------------------------- extraction


@dataclass(frozen=True, slots=True)
class FieldValue:
    """One field: its clean value (None if not found or unreadable) and how likely it is right (0-1)."""

    name: str
    value: str | int | None
    confidence: float
    source: str = "ocr"  # "ocr", "barcode", "scan", "manifest", "review"


@dataclass(frozen=True, slots=True)
class Span:
    """Where a labelled value sits in a row: used by privacy masking to hide personal values."""

    row: int
    start: int
    end: int
    role: str


@dataclass(frozen=True, slots=True)
class Extraction:
    values: dict[str, FieldValue]
    issues: tuple[Issue, ...]
    rows: tuple[Row, ...]
    spans: tuple[Span, ...]
    where: dict[str, TextLine] = field(default_factory=dict)  # the OCR box each found value was read from
    # The boxes no label names (locate.unclaimed), worked out when first asked: only a code found by its
    # shape, or an order number the slip text did not give, needs them.
    unclaimed: Callable[[], tuple[TextLine, ...]] = tuple


@dataclass(frozen=True, slots=True)
class _Candidate:
    value: str | int | None
    confidence: float
    problem: str | None


def _span_conf(row: Row, start: int, end: int) -> float:
    vals = [c for ch, c in zip(row.text[start:end], row.confs[start:end], strict=True) if not ch.isspace()]
    return min(vals) if vals else 0.0


# "No." written before a number (No.548574889923). Only taken off when the code does not match its pattern
# with it: a SKU may begin NO.5-BLK.
_NUMBER_MARK = re.compile(r"(?i)no\.(?=[A-Z0-9])")


def _parse_code(
    spec: FieldSpec, text: str, reasons: ReasonTable, conf: tuple[float, ...] = (), alt: str = ""
) -> tuple[str | int | None, float, str | None]:
    token, tconf, talt = clean_code_token_conf(text, conf, alt)
    if not token:
        return None, 0.0, "empty"
    cut = dangling_separator(text)
    if cut is not None:
        return None, 0.0, f"{token[:40]}{cut} ends in {cut!r}: {CUT_OFF}"
    fixed = fix_code(token, spec.pattern)
    mark = _NUMBER_MARK.match(token)
    if fixed is None and mark:  # 订单号：No.548574889923: "No." before the number, not its letters
        token, tconf, talt = token[mark.end() :], tconf[mark.end() :], talt[mark.end() :]
        fixed = fix_code(token, spec.pattern)
    if fixed is None:
        return None, 0.0, f"{token[:40]!r} does not match the expected pattern"
    # Confusable letters and digits where the pattern allows both: a review reason, not a guess
    # (a barcode, the scan, the manifest or a check digit may settle it later).
    amb = [] if ean13_valid(fixed.value) else ambiguous_positions(fixed.value, spec.pattern, tconf, talt)
    value, amb = zeros_in_words(fixed.value, amb)
    gaps = unread_separators(text, fixed.value, spec.pattern)
    dot = ends_on_dot(text)
    specks = doubtful_dots(fixed.value, tconf)
    doubt = amb or gaps or dot or specks
    factor = PER_SUBSTITUTION**fixed.substitutions * (AMBIGUOUS_CODE if fixed.ambiguous or doubt else 1.0)
    weakest = min(tconf, default=1.0)
    if weakest < EVEN_ODDS:
        factor *= weakest
    if doubt:
        where = [doubt_phrase(i, a, b) for i, a, b in amb[:4]]
        seps = " ".join(CODE_SEPARATORS)
        where += [f"a space before character {i + 1}: a separator ({seps}) or none" for i in gaps[:2]]
        where += ["a dot after it: the code may go on past it"] if dot else []
        where += [f"a dot at character {i + 1}: a separator or a speck" for i in specks[:2]]
        return value, factor, f"{value[:40]} could be read two ways ({', '.join(where)})"
    return value, factor, ("could be read two ways (letter or digit)" if fixed.ambiguous else None)


def _parse_int(
    spec: FieldSpec, text: str, reasons: ReasonTable, conf: tuple[float, ...] = (), alt: str = ""
) -> tuple[str | int | None, float, str | None]:
    q = parse_quantity(text)
    if q is None:
        return None, 0.0, "not a whole number" if text.strip() else "empty"
    return q[0], PER_SUBSTITUTION ** q[1], None


def _parse_date(
    spec: FieldSpec, text: str, reasons: ReasonTable, conf: tuple[float, ...] = (), alt: str = ""
) -> tuple[str | int | None, float, str | None]:
    d = parse_date(text)
    if d is None:
        return None, 0.0, "not a date (expected e.g. 2025-03-27)" if text.strip() else "empty"
    value, factor = d.day.isoformat(), PER_SUBSTITUTION**d.substitutions
    if d.cut_short:
        cut = f"{value} or a later day: its month is padded with a 0 and its day is one digit at the end"
        return value, factor * AMBIGUOUS_CODE, cut
    return value, factor, None


def _parse_reason(
    spec: FieldSpec, text: str, reasons: ReasonTable, conf: tuple[float, ...] = (), alt: str = ""
) -> tuple[str | int | None, float, str | None]:
    r = match_reason(text, reasons)
    if r is None:
        return None, 0.0, "not one of the configured reasons" if text.strip() else "empty"
    return r.reason, r.quality, ("names more than one reason" if r.ambiguous else None)


# A quantity by its shape alone: a count with its unit ("20 PCS", "共3件", or in two languages, "10件/pcs") or
# after a times sign ("x8", "×2件"), nothing else in the segment.
_QTY_SHAPE = re.compile(
    rf"(?:共\s*)?[0-9]{{1,5}}\s*{QTY_UNITS}(?:\s*/\s*{QTY_UNITS})?|[xX×]\s*[0-9]{{1,4}}(?:\s*{QTY_UNITS})?"
)

# (value, factor, problem) for one value segment, by field kind; problem says why it is not usable.
_PARSERS = {"code": _parse_code, "int": _parse_int, "date": _parse_date, "reason": _parse_reason}


GLUED = "no space was read after it"
_GLUED_READING = re.compile(r"may start with its label's '[^']*' \(([^()]*)\): " + GLUED)


def glued_readings(message: str) -> list[str]:
    """The other readings a value's glued-label doubts name (the value without the label's word: U36207699 of
    "IDU36207699 may start with its label's 'ID' (U36207699): ...")."""
    return _GLUED_READING.findall(message)


def _start_doubt(
    it: Found, value: str | int | None, factor: float, problem: str | None
) -> tuple[str | int | None, float, str | None]:
    """A parsed value whose box shows a mark just before it (locate.Found.lost_start), or that starts with its
    label's translation (locate.Found.glued): a doubt of its own."""
    if value is None or not (it.lost_start or it.glued):
        return value, factor, problem
    if it.glued:
        rest = str(value)[len(to_halfwidth(it.glued)) :]
        lost = f"{str(value)[:40]} may start with its label's {it.glued[:8]!r} ({rest[:40]}): {GLUED}"
    else:
        lost = f"{str(value)[:40]} may have lost its start: {it.lost_start[:8]!r} was read just before it"
    return (value, factor, f"{problem}; {lost}") if problem else (value, factor * AMBIGUOUS_CODE, lost)


def extract_fields(
    lines: Sequence[TextLine], template: Template, reasons: ReasonTable, matcher: LabelMatcher | None = None
) -> Extraction:
    """The six fields from the OCR lines of one slip, each with a confidence; issues say what is wrong."""
    matcher = matcher or LabelMatcher(template)
    rows = group_rows(lines)
    row_hits = [matcher.find(r) for r in rows]
    spans: list[Span] = []
    for i, (row, hits) in enumerate(zip(rows, row_hits, strict=True)):
        for j, hit in enumerate(hits):
            end = hits[j + 1].start if j + 1 < len(hits) else len(row.text)
            vrow, vstart, vend = i, hit.end, end
            if not row.text[vstart:vend].strip() and j + 1 == len(hits) and i + 1 < len(rows):
                nxt = row_hits[i + 1]
                if not nxt or nxt[0].start > 0:
                    vrow, vstart, vend = i + 1, 0, nxt[0].start if nxt else len(rows[i + 1].text)
            spans.append(Span(vrow, vstart, vend, hit.role))
    kinds = {f.name: f.kind for f in template.fields}

    zero_o = o_read_as_zero(lines, matcher.labels)

    def parse(
        name: str, text: str, conf: tuple[float, ...] = (), alt: str = ""
    ) -> tuple[str | int | None, float, str | None]:
        spec = template.spec(name)
        if zero_o and len(conf) == len(text):
            conf = tuple(min(c, O_ZERO_UNSURE) if ch in "0O０Ｏ" else c for ch, c in zip(text, conf, strict=True))
        return _PARSERS[spec.kind](spec, text, reasons, conf, alt)

    found = locate(lines, matcher.labels, kinds, lambda n, t: parse(n, t)[0] is not None)
    cands: dict[str, list[_Candidate]] = {f.name: [] for f in template.fields}
    boxes: dict[str, dict[object, TextLine]] = {f.name: {} for f in template.fields}
    for name, items in found.items():
        for it in items:
            value, f, problem = _start_doubt(it, *parse(name, it.text, it.char_conf, it.alt))
            # A label read with one wrong character may be another field's; not a reason's, whose value names
            # one of the configured reasons itself (Rcason over 实物与描述不符: clean tuning slip 1177 unseen).
            conf = it.confidence * f * (FUZZY_LABEL if it.fuzzy and kinds[name] != "reason" else 1.0)
            cands[name].append(_Candidate(value, conf, problem))
            boxes[name].setdefault(value, it.line)
    _by_shape(lines, template, labels=matcher.labels, reasons=reasons, cands=cands, boxes=boxes, parse=parse)
    by_shape: dict[str, str] = {}
    shaped = [n for n in _CODE_SHAPES if not cands[n] and template.spec(n).kind == "code"]
    seen = tuple(lines)  # as they are now, whenever asked
    free = functools.cache(
        lambda: tuple(unclaimed(seen, matcher.labels, kinds, lambda n, t: parse(n, t)[0] is not None))
    )
    if shaped:
        for name in shaped:  # the SKU first: a customer id is taken only beside a SKU already found
            value = _code_by_shape(name, free(), template, cands=cands, boxes=boxes, parse=parse)
            if value is not None:
                by_shape[name] = value
    values: dict[str, FieldValue] = {}
    issues: list[Issue] = []
    where: dict[str, TextLine] = {}
    for spec in template.fields:
        fv, found_issues = _choose(spec, cands[spec.name])
        values[spec.name] = fv
        issues += found_issues
        shape_value = by_shape.get(spec.name)
        if shape_value is not None and fv.value == shape_value:
            issues.append(
                Issue("found_by_shape", spec.name, f"{spec.name}: no label names it; {shape_value} taken by its shape")
            )
        if fv.value is not None and fv.value in boxes[spec.name]:
            where[spec.name] = boxes[spec.name][fv.value]
    return Extraction(values, tuple(issues), rows, tuple(spans), where, free)


def _by_shape(
    lines: Sequence[TextLine],
    template: Template,
    *,
    labels: Labels,
    reasons: ReasonTable,
    cands: dict[str, list[_Candidate]],
    boxes: dict[str, dict[object, TextLine]],
    parse: Callable[[str, str], tuple[str | int | None, float, str | None]],
) -> None:
    """Candidates for fields no label names, found by their shape alone (SHAPE_ONLY: a person decides)."""
    if not cands["return_date"]:
        # A date-shaped text anywhere, but not after a label of another date (下单日期, 付款时间, Order Date
        # under [other] in the template): a person is not to be shown the order's date as the return's.
        for ln in lines:
            if any(h.role == "other" for h in labels.find(ln.text)):
                continue
            value, f, problem = parse("return_date", ln.text)
            if value is not None:
                cands["return_date"].append(_Candidate(value, ln.confidence * f * SHAPE_ONLY, problem))
                boxes["return_date"].setdefault(value, ln)
    # After the colon of a label that was not read (Qty read as QV, 原因 as 原园), in a box with no label
    # that was: a count with its unit (20 PCS, 3件; also alone in a box, as in a table cell), or one of
    # the configured reasons (also alone in a box when the box opens with it: a stacked slip's small grey
    # label lost on a hard photo, and 尺码不对 under it).
    wanted = [
        n for n, kind in (("quantity", "int"), ("reason", "reason")) if not cands[n] and template.spec(n).kind == kind
    ]
    for ln in lines if wanted else ():
        parts = re.split(r"[:：]", to_halfwidth(ln.text))
        segment = parts[-1].strip()
        if not segment:
            continue
        alone = len(parts) < 2 and opens_with_reason(segment, reasons)
        # Words of other labels after the last colon are the value's (问题原图：尺码不符-颜色不对: 尺码, 颜色).
        colon = _last_colon(ln.text)
        hits = [h for h in labels.find(ln.text) if h.role in cands or h.start < colon or colon < 0]
        # A box that is one of the reasons (尺码不对) may hold a word that is another kind of label (尺码),
        # or the reason's own keyword (理由 in 七天无理由退货, hard tuning slip 434).
        if any(h.role in cands and not (alone and h.role == "reason") for h in hits) or (hits and not alone):
            continue
        for name in wanted:
            if name == "quantity" and not _QTY_SHAPE.fullmatch(segment):
                continue
            if name == "reason" and len(parts) < 2 and not alone:
                continue
            value, f, problem = parse(name, segment)
            if value is not None:
                cands[name].append(_Candidate(value, ln.confidence * f * SHAPE_ONLY, problem))
                boxes[name].setdefault(value, ln)


def _last_colon(text: str) -> int:
    """Index of the last colon, half- or full-width; -1 when there is none."""
    return max(text.rfind(":"), text.rfind("："))


# A SKU by its shape alone: one box of letters and digits together (AB-1234-BLK-M, T82528/06), read
# clearly. On the tuning split (seeds 0-99, three tiers) reads below these took noise for a SKU on hard
# photos (J00.00 at 0.89, 5P89/0 at 0.73; a character at 0.33).
_SKU_SHAPE = re.compile(r"(?=[A-Z0-9\-_/.]*[A-Z])(?=[A-Z0-9\-_/.]*[0-9])[A-Z0-9][A-Z0-9\-_/.]*")
# A customer id by its shape alone: letters, then digits (KH-2022-49094, C0535067271, VIP05796006), at
# most 11 digits. Digits alone are not taken (a phone number, an amount or a postcode has that shape too),
# nor 12 digits and more: a waybill number whose label was not read (YD246211012983789, ZTO8848...; tuning
# seeds 492, 514, 527).
_CUSTOMER_SHAPE = re.compile(r"(?!(?:[^0-9]*[0-9]){12})[A-Z]{1,4}[-_]?[0-9][A-Z0-9\-_/.]*")
# The fields taken by their shape when no label names them, in that order.
_CODE_SHAPES = {"sku": _SKU_SHAPE, "customer_id": _CUSTOMER_SHAPE}
SKU_SHAPE_MIN_LINE = 0.95
SKU_SHAPE_MIN_CHAR = 0.9


def _code_by_shape(
    name: str,
    free: Sequence[TextLine],
    template: Template,
    *,
    cands: dict[str, list[_Candidate]],
    boxes: dict[str, dict[object, TextLine]],
    parse: Callable[[str, str, tuple[float, ...]], tuple[str | int | None, float, str | None]],
) -> str | None:
    """The SKU or customer id when its label was not read: the one box no label names that holds nothing
    but a code of its shape (_CODE_SHAPES), alone or after the colon of a short label no keyword names
    (编码：, the 商品 of 商品编码 lost on a hard photo), read clearly, and is not the value of another field (the
    order number under its barcode). A SKU is not shaped like an order or waybill number
    (YT6143564467180), and no code is shaped like a count (X10, 12PCS); a customer id is taken only when the
    SKU was found, so that the one free code is not the SKU. Two such boxes: none is taken. A person decides
    (SHAPE_ONLY, and the issue found_by_shape). Returns the value taken."""
    if name == "customer_id" and not any(c.value is not None for c in cands["sku"]):
        return None
    taken = {str(c.value) for n in ("order_no", "sku", "customer_id") for c in cands[n] if c.value is not None}
    order_shape = re.compile(template.spec("order_no").pattern)
    found: dict[str | int, tuple[_Candidate, TextLine]] = {}
    for ln in free:
        raw, chars = ln.text, ln.char_conf
        k = _last_colon(raw)
        after_label = k >= 0 and 0 < len(raw[:k].strip()) <= 8 and not any(c.isdigit() for c in raw[:k])
        if after_label:
            # after the colon of a label no keyword names (编码：GU-7117-BOX-L): the value's characters
            lead = len(raw) - len(raw[k + 1 :].lstrip())
            raw = raw[lead:].rstrip()
            chars = chars[lead : lead + len(raw)] if len(chars) == len(ln.text) else chars
        text = to_halfwidth(raw).strip()
        cc = chars if len(chars) == len(raw) else ()
        # ...and their confidence: the label's, misread (KID: for 买家ID:, hard tuning slip 22), say nothing of it
        clear = sum(cc) / len(cc) if after_label and cc else ln.confidence
        if not _CODE_SHAPES[name].fullmatch(text) or clear < SKU_SHAPE_MIN_LINE:
            continue
        if name == "sku" and order_shape.fullmatch(text):
            continue
        if _QTY_SHAPE.fullmatch(text):  # a count (X10 under 申请数量(件) whose value it is: hard tuning slip 1161)
            continue
        if chars and min(chars) < SKU_SHAPE_MIN_CHAR:
            continue
        value, f, problem = parse(name, text, cc)
        if value is not None and str(value) not in taken:
            found.setdefault(value, (_Candidate(value, clear * f * SHAPE_ONLY, problem), ln))
    if len(found) != 1:
        return None
    ((value, (cand, ln)),) = found.items()
    cands[name].append(cand)
    boxes[name].setdefault(value, ln)
    return str(value)


def _choose(spec: FieldSpec, cands: list[_Candidate]) -> tuple[FieldValue, list[Issue]]:
    name = spec.name
    good = [c for c in cands if c.value is not None]
    bad = [c for c in cands if c.value is None and c.problem != "empty"]
    if not good:
        if bad:
            return FieldValue(name, None, 0.0), [Issue("bad_format", name, f"{name}: {bad[0].problem}")]
        if spec.required:
            return FieldValue(name, None, 0.0), [Issue("missing_field", name, f"{name}: not found on the slip")]
        return FieldValue(name, None, 0.0), []
    best = max(good, key=lambda c: c.confidence)
    issues = []
    conf = best.confidence
    if len({c.value for c in good}) > 1:
        conf *= CONFLICT
        issues.append(
            Issue("conflicting_values", name, f"{name}: the slip gives {len({c.value for c in good})} different values")
        )
    elif best.problem:
        issues.append(Issue("ambiguous_value", name, f"{name}: {best.problem}"))
    return FieldValue(name, best.value, round(conf, 4)), issues
