"""Field finding that generalises: tolerant label matching on OCR boxes, the value beside, under or after it.

Merchants' labels form an open set (平台订单编号, 退货商品SKU码, 实退数量(件), 售后申请日期/Date, 订 单 号).
The tolerance lives in the matcher, not in longer synonym lists: a template label (a keyword) counts
inside a longer label, full- or half-width, in any case, with spaces or brackets between its
characters, with one OCR confusion (3+ characters), with a colon or none. The value is looked for
after the label in the same box, then in the box to its right on the same line (the next table cell,
the second field of a line), then in the box under it (values under their labels, header tables).
A field no label names falls back to its value's shape (a date), with a confidence that sends it to
review.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from edge_agent.pipelines.bench.normalize import (
    ONE_TWINS,
    SPLIT_MARKS,
    clean_code_token,
    hamming,
    simplified,
    to_halfwidth,
)
from edge_agent.pipelines.bench.types import TextLine, box_corners

# Characters a label may have between or around its keyword's characters without changing it.
_IGNORED = set(" \t\u3000[]()（）【】<>《》「」『』·•*_")
_COLON = set(":：;；")
# What OCR makes of a capital I at the start of a Latin label ("|tem Code"); never a label's own character.
_LATIN_LOOKALIKE = {"|": "i", "!": "i", "¦": "i"}
# A slash and a Latin word that runs to the end of the box or to a mark (no more letters or digits after it),
# and the digits (and the l) a recogniser reads for look-alike letters in such a word.
_TRANSLATION = re.compile(r"[/|]([a-z0-9]{2,12})(?![a-z0-9])")
_DIGIT_AS_LETTER = str.maketrans("1l0582", "iiosbz")
_GLUED = re.compile(r"[/|]([a-z0-9]{3,32})")
# A Latin keyword must not be the tail of a longer word ("date" in "update").
_LATIN = re.compile(r"[a-z]")
# How far after a label its value may start in the same box, in characters of decoration
# ("(件)", "/Qty", "码", " ID").
MAX_DECORATION = 10
# Confidence factors (docs/records-bench.md, "Calibration"): a label read with one wrong character,
# a value under its label rather than beside it, a value found by its shape alone.
FUZZY_LABEL = 0.85
# A count's label followed in its own box by one stroke that reads as a count (1, l, I, |, 一), with a count
# in the box beside or under it: the stroke is a rule or a table cell's wall. Hard tuning slip 2595 read a
# grid's [数量/Qty] and its wall as [数量/Qty]1, the 2 in the next cell; hard 2673 read 退货数量 and the rule
# after it as 退货数量一, 12 under it. Both passed as 1. The stroke stays a candidate, at STROKE of its
# confidence: two counts disagree, and the slip goes to review with the count beside or under the label shown.
# The strokes, in capitals: 1, its twins (normalize.ONE_TWINS: I, L, a bar...) and the numeral 一.
STROKES = frozenset({"1", "一"} | ONE_TWINS)
STROKE = 0.5
BELOW = 0.97
SHAPE_ONLY = 0.6
# The shortest Latin keyword guessed with one wrong character: "reason", "itemno", "customerid", not "qty".
FUZZY_LATIN_MIN = 6


# What OCR makes of the space between two words of a Latin label: a dot or comma between letters is
# dropped ("[Item.Code]:" on hard tuning slip 85, printed [Item Code]:). Not between a letter and a digit
# (No.123).
_SPACE_READ = set(".,")
# A CJK keyword of this many characters or more is still found when its first character was lost (a faint
# 商 left 品编号 for 商品编号 on hard tuning slip 108), as one misread is: three characters are left.
LOST_FIRST_MIN = 4
# A Latin keyword of this many letters or more likewise, its first letter lost at the start of a word: the
# spaced, faint "Customer ID" of typical tuning slip 468 in unseen faces came out of the detector as
# "ustomer" and "ID". Seven letters are left; "tem No" (Item No) is too short to say.
LATIN_LOST_FIRST_MIN = 8


def _latin_letter_at(text: str, k: int) -> bool:
    return 0 <= k < len(text) and text[k].isascii() and text[k].isalpha()


@dataclass(frozen=True, slots=True)
class Folded:
    """A text lower-cased and half-width with ignorable characters dropped, and each char's original index."""

    text: str
    index: tuple[int, ...]


def fold_label(text: str) -> Folded:
    out: list[str] = []
    idx: list[int] = []
    half = to_halfwidth(text)
    for i, ch in enumerate(half):
        if (
            ch in _IGNORED
            or ch.isspace()
            or (ch in _SPACE_READ and all(_latin_letter_at(half, k) for k in (i - 1, i + 1)))
        ):
            continue
        low = _LATIN_LOOKALIKE.get(ch, simplified(ch).lower())
        if ch == "0" and any(_latin_letter_at(half, k) for k in (i - 1, i + 1)):
            low = "o"  # a letter O inside a Latin word read as a zero ("0RDER ID")
        elif ch == "l" and not _latin_letter_at(half, i - 1) and _latin_letter_at(half, i + 1):
            low = "i"  # a capital I opening a Latin word read as a lowercase l, its twin in sans faces ("ltem", "lD")
        out.append(low if len(low) == 1 else ch)
        idx.append(i)
    return Folded("".join(out), tuple(idx))


@dataclass(frozen=True, slots=True)
class Hit:
    """A label in one box: what it names (a field, or another role), where it starts and ends in the box text."""

    role: str
    start: int
    end: int  # index after the label's last character
    fuzzy: bool
    glued: str = ""  # a word of the label's translation after its slash, read with no space before a code


@dataclass(frozen=True, slots=True)
class Found:
    """One candidate value for a field: the text it is parsed from, the box(es) it came from, how found."""

    field: str
    text: str
    confidence: float  # of the OCR box the value sits in, times the factors of how it was found
    line: TextLine
    how: str  # "same", "right", "below", "unparsed"
    fuzzy: bool
    label: TextLine | None
    char_conf: tuple[float, ...] = ()  # each character's OCR probability, aligned with text (when known)
    lost_start: str = ""  # a mark read just before a code alone in its box: what is left of its first letters
    glued: str = ""  # the label's translation word the code starts with, read with no space between (Hit.glued)
    alt: str = ""  # each character's runner-up reading (TextLine.alt), aligned with text (when known)


def _cc(line: TextLine, start: int, stop: int) -> tuple[float, ...]:
    return line.char_conf[start:stop] if len(line.char_conf) == len(line.text) else ()


def _ca(line: TextLine, start: int, stop: int) -> str:
    return line.alt[start:stop] if len(line.alt) == len(line.text) else ""


def _word_start(keyword: str, f: Folded, at: int) -> bool:
    """False where a Latin keyword would start inside a longer word ("date" in "update"). Folding drops
    the space between two words, so a letter before it counts only when nothing was dropped between
    them: "Return Date", "Return Qty" and "Product SKU" are labels of their last word."""
    return not (
        _LATIN.match(keyword[0]) and at > 0 and _LATIN.match(f.text[at - 1]) and f.index[at] - f.index[at - 1] == 1
    )


class Labels:
    """Template labels as keywords, matched tolerantly inside a box's text."""

    def __init__(
        self,
        roles: dict[str, str],
        fuzzy_roles: Collection[str] = (),
        words: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        # keyword (folded) -> role; longest first so 订单编号 wins over 编号-like shorter ones
        folded = {fold_label(k).text: r for k, r in roles.items()}
        folded.pop("", None)
        self.keywords = sorted(folded.items(), key=lambda kv: -len(kv[0]))
        # Only field labels are guessed when misread: a guessed 退货人 in 退货请... would hide text. A Latin
        # keyword is guessed only from FUZZY_LATIN_MIN letters ("Custcmer ID"; not "Oty" or "Dale").
        self.fuzzy = [
            (k, r) for k, r in self.keywords if r in fuzzy_roles and len(k) >= (FUZZY_LATIN_MIN if k.isascii() else 3)
        ]
        # ...but a guess inside a longer keyword of another kind read with one wrong character is that keyword:
        # 快道单号 is 快递单号, a waybill number's label, not 订单号 (typical tuning slip 61).
        self.longer = [k for k, r in self.keywords if r not in fuzzy_roles and not k.isascii() and len(k) >= 4]
        # The words of each field's Latin keywords (item, no, code, sku...): after a label's slash, such a
        # word alone is the label's translation (商品编号/Item), not the value.
        self.words = {r: {fold_label(w).text for w in ws} for r, ws in (words or {}).items()}

    def find(self, text: str) -> list[Hit]:
        f = fold_label(text)
        taken = [False] * len(f.text)
        hits: list[tuple[int, int, str, bool]] = []
        for kw, role in self.keywords:
            start = f.text.find(kw)
            while start >= 0:
                end = start + len(kw)
                if _word_start(kw, f, start) and not any(taken[start:end]):
                    for k in range(start, end):
                        taken[k] = True
                    hits.append((start, end, role, False))
                start = f.text.find(kw, start + 1)
        if not any(not fz and r != "other" for _, _, r, fz in hits):
            for kw, role in self.fuzzy:
                at = _guessed(kw, f, taken)
                if at is not None and not _inside_another(at, f.text, self.longer):
                    for k in range(*at):
                        taken[k] = True
                    hits.append((*at, role, True))
        hits.sort()
        merged: list[tuple[int, int, str, bool]] = []
        for h in hits:
            # 退货日期/Date, 商品编号／Item No.: two keywords of one field make one label, unless the second
            # is a Latin keyword running straight on into a code: in 货号 SKU90601227 the SKU starts the value.
            gap = f.text[merged[-1][1] : h[0]] if merged else ""
            starts_code = _LATIN.match(f.text[h[0]]) and _runs_into_code(f.text, h[1])
            if merged and merged[-1][2] == h[2] and len(gap) <= 2 and all(c in "/|-" for c in gap) and not starts_code:
                s, _, r, fz = merged[-1]
                merged[-1] = (s, h[1], r, fz and h[3])
            else:
                merged.append(h)
        merged = [(s, self._translated(text, f, e, r), r, fz) for s, e, r, fz in merged]
        return [Hit(r, f.index[s], f.index[e - 1] + 1, fz, self._glued(text, f, e, r)) for s, e, r, fz in merged]

    def _glued(self, text: str, f: Folded, end: int, role: str) -> str:
        """The word of a label's translation that starts the code after its slash, as printed, where the
        recogniser left out the space between them: 客户编号／ＩＤ U36207699 was read 客户编号/IDU36207699 (clean
        tuning slip 1325), and IDU36207699 passed. Either may be right (货号 SKU90601227): the value is a doubt."""
        m = _GLUED.match(f.text, end)
        if not m:
            return ""
        run = m.group(1)
        for n in range(len(run) - 1, 1, -1):
            word, rest = run[:n], run[n:]
            if self._keyword(word, role) and any(map(str.isdigit, rest)):
                return text[f.index[m.start(1)] : f.index[m.start(1) + n - 1] + 1]
        return ""

    def _translated(self, text: str, f: Folded, end: int, role: str) -> int:
        """The end of a label, over a slash and a word of its field's Latin keywords after it, read with a
        digit for a look-alike letter (道货商品维号/1tem on hard tuning slip 305 unseen: its 1TEM was taken
        for the SKU, which stood in the next cell). The word ends where the print has a space, which folding
        drops: in 商品编码/SKU SKU59438488 (clean tuning slip 1858) the value is SKU59438488, read whole."""
        m = _TRANSLATION.match(f.text, end)
        if m and self._keyword(m.group(1), role):
            return m.end()
        m = _GLUED.match(f.text, end)
        if m:
            for k in range(m.start(1) + 2, min(m.end(1), m.start(1) + 12)):
                spaced = any(c.isspace() for c in text[f.index[k - 1] + 1 : f.index[k]])
                if spaced and self._keyword(f.text[m.start(1) : k], role):
                    return k
        return end

    def _keyword(self, word: str, role: str) -> bool:
        """Whether a folded word is one of the field's Latin keywords, or one read with a digit for a letter."""
        return bool({word, word.translate(_DIGIT_AS_LETTER)} & self.words.get(role, set()))


def _guessed(keyword: str, f: Folded, taken: list[bool]) -> tuple[int, int] | None:
    """Where in the folded text `keyword` stands with one character misread, or, a CJK keyword of
    LOST_FIRST_MIN or more or a Latin one of LATIN_LOST_FIRST_MIN, with its first character lost; not over
    another label (`taken`)."""
    text, n = f.text, len(keyword)
    first, second = keyword[0], keyword[1]  # fuzzy keywords have three characters or more
    for s in range(len(text) - n + 1):
        if text[s] != first and text[s + 1] != second:
            continue  # two characters misread already: the test below would say so, slower
        if (
            _word_start(keyword, f, s)
            and not any(taken[s : s + n])
            and hamming(text[s : s + n], keyword) == 1
            and not _code_for_last(keyword, text, s + n)
        ):
            return s, s + n
    rest = keyword[1:]
    cut_short = (n >= LOST_FIRST_MIN and all(map(_ideograph, keyword))) or (
        n >= LATIN_LOST_FIRST_MIN and keyword.isascii()
    )
    s = text.find(rest) if cut_short else -1
    return (s, s + n - 1) if s >= 0 and _word_start(rest, f, s) and not any(taken[s : s + n - 1]) else None


def _code_for_last(keyword: str, text: str, end: int) -> bool:
    """Is the one wrong character of a CJK keyword guessed to end at `end` its last, a Latin letter or digit
    that a letter or digit follows: the first of a code after a label that lost its last character? Typical
    tuning slip 670 in unseen faces: 会员号 came out 会员 and 90561293759 beside it, and 会员9 was taken for
    the label, leaving 0561293759 to pass as the customer id."""
    return (
        _ideograph(keyword[-1])
        and text[end - 1] != keyword[-1]
        and _ascii_alnum(text[end - 1])
        and _ascii_alnum(text[end : end + 1] or " ")
    )


def _inside_another(at: tuple[int, int], text: str, keywords: Sequence[str]) -> bool:
    """Does the guess at `at` lie inside one of `keywords`, longer than it, read with one wrong character?"""
    s, e = at
    for kw in keywords:
        n = len(kw)
        if n > e - s and any(
            hamming(text[k : k + n], kw) <= 1 for k in range(max(0, e - n), min(s, len(text) - n) + 1)
        ):
            return True
    return False


def _labels_only(text: str, hits: list[Hit], kinds: dict[str, str], parses: Callable[[str, str], bool]) -> list[Hit]:
    """The hits that are labels, not a keyword inside a value.

    A field's keyword counts when it is followed by a colon or ends the box, or when only label text
    precedes it (平台 in 平台订单号, no digits) and either a separator follows or what follows reads
    as its value (退货原因尺码不符). So 理由 in the reason 七天无理由退货 is no label, nor SKU in
    "SKU: SKU252239748". Other labels (privacy, noise) count before a colon or at the end of a box
    only, so 尺码 does not end the reason 尺码不符, nor 买家 start a label in 买家退货原因.
    """
    out: list[Hit] = []
    for h in hits:
        if (
            kinds.get(h.role) == "code"
            and _ascii_alnum(text[h.end - 1])
            and _runs_into_code(text, h.end)
            # 退货SKUX63603-18: after label text that is no keyword (退货) the keyword ends the label, and
            # the space before the code was not read (tuning 575)
            and not (h.start > 0 and _ideograph(text[h.start - 1]) and all(o.end != h.start for o in hits))
            # SKUSKU93641623: the keyword, then a code that opens with it (the space between not read;
            # typical tuning slip 409 in unseen faces)
            and not _doubled(text, h)
            # 买家会员IDC6987480453: a keyword with characters of its own (客户ID, 会员ID) ends in its Latin
            # letters; the colon or space after it was not read (typical tuning slip 538 in unseen faces)
            and not any(map(_ideograph, text[h.start : h.end]))
        ):
            continue  # SKU01557005210: a Latin keyword running straight on into letters or digits starts a code
        after = text[h.end : h.end + 4].lstrip(" )）】]")
        # Text before the keyword other than an opening bracket: 【理由】 is a label, though 【理由 reads as
        # 无理由 with one character wrong (clean tuning slip 1910: its reason was not found)
        opened = bool(text[: h.start].strip(" \u3000" + "".join(_OPENING_BRACKETS)))
        if not after.strip() and opened and h.role in kinds and parses(h.role, text):
            continue  # 七天无理由: a value that ends with its field's keyword, not a label
        if not after.strip() or after[:1] in _COLON:
            out.append(h)
            continue
        if h.role not in kinds:
            continue
        if kinds[h.role] == "reason" and opened and parses(h.role, text[: h.end]):
            # 七天无理由 - 外箱压扁: a reason whose phrase ends with its field's keyword, and more of it after
            # (a header table's cell on clean tuning slip 1077: 理由 was taken for a label, and the reason and
            # the date beside it were found by their shapes alone)
            continue
        before = text[: h.start]
        leading = not any(o.role in kinds for o in out) and len(before.strip()) <= 6
        leading = leading and not any(c.isdigit() for c in before)
        runs_on = _ideograph(after[0]) and h.start > 0
        vs = value_start(text, h.end, kinds[h.role])
        if leading and (not runs_on or (vs is not None and parses(h.role, text[vs:]))):
            out.append(h)
        elif leading and _label_suffix(text, h.end) and not parses(h.role, text):
            # 原因说明, 退货原因描述: the keyword with a short suffix, and the box holds no value of the field
            out.append(h)
        elif kinds[h.role] == "code" and before[-1:].isspace() and vs is not None and parses(h.role, text[vs:]):
            # 地址：…光谷大道572号 客户ID U39201798: a second field on the line, after a gap, its code ending
            # the box (two fields the detector took as one box; hard tuning slip 572)
            out.append(h)
        elif kinds[h.role] != "code" and before[-1:].isspace() and vs is not None:
            # 订单号 548574889923  数量 2: a second field on the line after a gap, with no colon, its value
            # read up to the next label
            stop = min((o.start for o in hits if o.start >= h.end), default=len(text))
            if parses(h.role, text[vs:stop]):
                out.append(h)
    return _not_inside_a_value(text, out, kinds, parses)


def _doubled(text: str, h: Hit) -> bool:
    """Is the keyword at `h` written again right after it (SKUSKU93641623)?"""
    kw = to_halfwidth(text[h.start : h.end]).upper()
    return to_halfwidth(text[h.end : h.end + len(kw)]).upper() == kw


def _not_inside_a_value(
    text: str, hits: list[Hit], kinds: dict[str, str], parses: Callable[[str, str], bool]
) -> list[Hit]:
    """Drops a field's keyword that sits inside the value after an earlier label of the same field
    (理由 in 买家退货原因 七天无理由, where it ends the box and so looked like a label of its own)."""
    kept: list[Hit] = []
    for h in hits:
        prev = next((k for k in reversed(kept) if k.role == h.role), None)
        if prev is not None and h.role in kinds:
            vs = value_start(text, prev.end, kinds[h.role])
            if vs is not None and parses(h.role, text[vs:]):
                continue
        kept.append(h)
    return kept


# How many characters a label may run on after its keyword (说明, 描述, 类型) when the box holds no value.
MAX_LABEL_SUFFIX = 4
# A Latin keyword run straight on by a few letters that end the word (SKUID, SKUNO, SKUCODE) is a label:
# a code that starts with the keyword goes on with digits (SKU01557005210).
_LABEL_RUN_ON = re.compile(r"[A-Za-z]{1,4}(?![A-Za-z0-9])")


def _ideograph(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def _runs_into_code(text: str, end: int) -> bool:
    """Does a Latin keyword ending at `end` run straight on into a code (SKU01557005210), rather than into
    a short run of letters that ends the label (SKUID)?"""
    return _ascii_alnum(text[end : end + 1] or " ") and not _LABEL_RUN_ON.match(to_halfwidth(text[end:]))


def _label_suffix(text: str, end: int) -> bool:
    rest = fold_label(text[end:]).text
    return 0 < len(rest) <= MAX_LABEL_SUFFIX and not any(c.isdigit() for c in rest)


def _is_label(text: str, hits: list[Hit], kinds: dict[str, str]) -> bool:
    """Is this box a label (so not the value of the label beside or above it)?

    It starts with a label; a field's label may carry decoration without digits (退回数量(个)), any other
    label needs a colon or nothing after it (尺码 starts the reason 尺码不符 but is no label there).
    """
    if not hits:
        return False
    before = text[: hits[0].start]
    if len(before.strip()) > 6 or any(c.isdigit() for c in before):
        return False
    rest = text[hits[0].end :].strip()
    if not rest or rest[0] in _COLON or _bracket_closed_as(before, rest):
        return True
    return hits[0].role in kinds and not any(c.isdigit() for c in rest)


_OPENING_BRACKETS = frozenset("[(（【〔<《")


def _bracket_closed_as(before: str, rest: str) -> bool:
    """Is `rest`, all that follows a label opened by a bracket (and the dot of No.), its closing bracket read
    as a 1? Hard tuning slip 808 read 【Order No.】 as "[Order No.1". (Read as l, I or |, it holds no digit.)"""
    return before.strip()[-1:] in _OPENING_BRACKETS and to_halfwidth(rest).lstrip(".") == "1"


def _vcentre(b: TextLine) -> float:
    return b.box[1] + b.box[3] / 2


def _same_line(a: TextLine, b: TextLine) -> bool:
    return a.box[1] <= _vcentre(b) <= a.box[1] + a.box[3] and b.box[1] <= _vcentre(a) <= b.box[1] + b.box[3]


# A label the detector cut into boxes on its line: at most this many line heights between two of them, and at
# most this many boxes. Printed with gaps of two characters' width between its characters (客 户 I D), a label
# comes out of the detector as one box per character; with gaps of one and a half, as one box.
SPLIT_LABEL_GAP = 2.5
SPLIT_LABEL_PARTS = 4


def join_split_labels(lines: Sequence[TextLine], labels: Labels, fields: Collection[str]) -> tuple[TextLine, ...]:
    """The lines, with two to four boxes side by side on one line (SPLIT_LABEL_GAP) joined by spaces where
    the keyword of a field's label runs across them and no box alone holds one: the detector cut the label
    (typical tuning slip 40 in an unseen face: 【千台客户 | (ID] over the customer id, so no label named it),
    as it may a label printed with wide gaps between its characters (订 | 单 | 号：). The joined box is the
    union of the boxes, its confidence their mean per character, as the recogniser gives a line's."""
    out = list(lines)

    def field_hits(text: str) -> list[Hit]:
        return [h for h in labels.find(text) if h.role in fields]

    def right_of(a: TextLine) -> TextLine | None:
        near = [
            b
            for _, b in _right_on_line(a, out)
            if b.box[3] > 0 and _gap(a, b) <= SPLIT_LABEL_GAP * min(a.box[3], b.box[3])
        ]
        return min(near, key=lambda b: b.box[0]) if near else None

    i = 0
    while i < len(out):
        if field_hits(out[i].text):
            i += 1
            continue
        chain = [out[i]]
        while len(chain) < SPLIT_LABEL_PARTS and chain[-1].box[3] > 0 and (nxt := right_of(chain[-1])) is not None:
            chain.append(nxt)
        # the fewest boxes a keyword runs across, read as it is before one read with a wrong character
        # (客 户 I D: not 客户号 guessed in 客 户 I)
        best: tuple[bool, int, str] | None = None
        for k in range(2, len(chain) + 1):
            if field_hits(chain[k - 1].text):
                break
            text = " ".join(b.text for b in chain[:k])
            ends = [sum(len(b.text) + 1 for b in chain[: m + 1]) - 1 for m in range(k - 1)]  # the joining spaces
            across = [h for h in field_hits(text) if any(h.start < at < h.end - 1 for at in ends)]
            if across and (best is None or (best[0] and not any(h.fuzzy for h in across))):
                best = (all(h.fuzzy for h in across), k, text)
        if best is None:
            i += 1
            continue
        parts = chain[: best[1]]
        at = [m for m, b in enumerate(out) if any(b is q for q in parts)]
        out[at[0]] = _joined(parts, best[2])
        for m in reversed(at[1:]):
            del out[m]
        i = at[0]  # the joined box may join the next on its line too
    return tuple(out)


def _gap(a: TextLine, b: TextLine) -> int:
    """How far b starts after a ends, in x (less than 0 where they overlap)."""
    return b.box[0] - (a.box[0] + a.box[2])


def _right_on_line(a: TextLine, boxes: Sequence[TextLine]) -> list[tuple[int, TextLine]]:
    """(index, box) of the boxes on a's line that start right of its middle."""
    return [
        (k, b) for k, b in enumerate(boxes) if b is not a and _same_line(a, b) and b.box[0] > a.box[0] + a.box[2] / 2
    ]


def _left_on_line(a: TextLine, boxes: Sequence[TextLine]) -> list[tuple[int, TextLine]]:
    """(index, box) of the boxes on a's line that end left of its middle."""
    return [
        (k, b)
        for k, b in enumerate(boxes)
        if b is not a and _same_line(a, b) and b.box[0] + b.box[2] < a.box[0] + a.box[2] / 2
    ]


def next_on_line(a: TextLine, boxes: Sequence[TextLine]) -> TextLine | None:
    """The first box on a's line that starts right of its middle, or None."""
    right = _right_on_line(a, boxes)
    return min(right, key=lambda kb: kb[1].box[0])[1] if right else None


def _joined(parts: list[TextLine], text: str) -> TextLine:
    """One box for boxes side by side on a line: the union of their boxes, the first's left corners and the
    last's right ones."""
    x0, y0 = min(b.box[0] for b in parts), min(b.box[1] for b in parts)
    x1 = max(b.box[0] + b.box[2] for b in parts)
    y1 = max(b.box[1] + b.box[3] for b in parts)
    qa, qb = parts[0].quad or box_corners(parts[0].box), parts[-1].quad or box_corners(parts[-1].box)
    conf = sum(b.confidence * len(b.text) for b in parts) / max(1, sum(len(b.text) for b in parts))
    chars: tuple[float, ...] = ()
    if all(len(b.char_conf) == len(b.text) for b in parts):
        chars = tuple(c for m, b in enumerate(parts) for c in ((1.0,) if m else ()) + b.char_conf)
    return TextLine(text, round(conf, 4), (x0, y0, x1 - x0, y1 - y0), chars, (qa[0], qb[1], qb[2], qa[3]))


def _x_overlap(a: TextLine, b: TextLine) -> float:
    lo = max(a.box[0], b.box[0])
    hi = min(a.box[0] + a.box[2], b.box[0] + b.box[2])
    return max(0, hi - lo) / max(1, min(a.box[2], b.box[2]))


def value_start(text: str, start: int, kind: str) -> int | None:
    """Where a value of `kind` begins in text[start:], skipping label decoration and a colon; None if none."""
    limit = min(len(text), start + MAX_DECORATION + 1)
    colon = next((i for i in range(start, limit) if text[i] in _COLON), None)
    if colon is not None and not any(c.isdigit() for c in text[start:colon]):
        start = colon + 1
    if kind in ("code", "int"):
        for i in range(start, min(len(text), start + MAX_DECORATION + 1)):
            ch = to_halfwidth(text[i])
            if kind == "int" and (
                ch.isdigit() or ch in "零〇一二两三四五六七八九十" or (i == start and ch in "liIOoSB|")
            ):
                # x2, ×2, 共2件: keep a multiplication sign just before the number
                return i - 1 if i > start and to_halfwidth(text[i - 1]) in "xX×*" else i
            if kind == "code" and ch.isascii() and ch.isalnum() and (i == start or not _ascii_alnum(text[i - 1])):
                run = re.match(r"[A-Za-z0-9][A-Za-z0-9\-_/.]*", to_halfwidth(text[i:]))
                if run and any(c.isdigit() for c in run.group(0)):
                    return i
        if kind == "code" and (start == 0 or colon is not None):
            # A code of capital letters only (BSCJER, or OIRV0LQI with its zero read as O) when it is all
            # there is after the colon or in the box: label decoration ("ID", "/Qty") never stands alone.
            whole = _LETTERS_CODE.fullmatch(to_halfwidth(text[start:]))
            if whole:
                return start + whole.start(1)
        return None
    return start


_LETTERS_CODE = re.compile(r"\s*([A-Z](?:[A-Z]|[-_/.](?=[A-Z])){3,31})\s*")


def _ascii_alnum(ch: str) -> bool:
    ch = to_halfwidth(ch)
    return ch.isascii() and ch.isalnum()


# Text slanted by more than this (a photo whose label outline could not be straightened) is laid out again
# in its own frame before "beside" and "under" are judged: axis-aligned boxes of slanted lines overlap
# the lines above and below them.
MAX_SLANT_DEG = 2.0
# Rows whose slants spread this much (degrees), over at least this many wide lines, fan out from a
# vanishing point (a photo in perspective) rather than all being turned alike.
MIN_FAN_DEG = 4.0
MIN_FAN_LINES = 5
# A vanishing point nearer the text than this many times its width is no perspective to undo; nor is one
# whose direction from the text is steeper than 45 degrees (cosine below this).
FAN_MIN_DISTANCE = 1.5
FAN_MAX_TILT = 0.7


def text_slant(lines: Sequence[TextLine]) -> float:
    """The slant of the text in degrees: the median angle of the top edges of lines at least twice as wide
    as they are high (0 with fewer than three such lines)."""
    angles = []
    for ln in lines:
        q = ln.quad
        if q is None or len(q) != 4:
            continue
        dx, dy = q[1][0] - q[0][0], q[1][1] - q[0][1]
        if dx > 2 * math.hypot(q[3][0] - q[0][0], q[3][1] - q[0][1]):
            angles.append(math.degrees(math.atan2(dy, dx)))
    return statistics.median(angles) if len(angles) >= 3 else 0.0


def _unslanted(lines: Sequence[TextLine], degrees: float) -> list[TextLine]:
    """The lines with their boxes taken in the text's own frame (rotated by -degrees)."""
    c, s = math.cos(math.radians(-degrees)), math.sin(math.radians(-degrees))
    out = []
    for ln in lines:
        pts = ln.quad if ln.quad is not None else box_corners(ln.box)
        xs = [px * c - py * s for px, py in pts]
        ys = [px * s + py * c for px, py in pts]
        x0, y0 = math.floor(min(xs)), math.floor(min(ys))
        out.append(replace(ln, box=(x0, y0, math.ceil(max(xs)) - x0, math.ceil(max(ys)) - y0)))
    return out


def _corners4(ln: TextLine) -> tuple[tuple[float, float], ...]:
    return tuple(ln.quad) if ln.quad is not None and len(ln.quad) == 4 else box_corners(ln.box)


def _row_axes(
    corners: Sequence[Sequence[tuple[float, float]]],
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The centre line (left edge's middle, right edge's middle) of each box at least twice as wide as high."""
    out = []
    for q in corners:
        left = ((q[0][0] + q[3][0]) / 2, (q[0][1] + q[3][1]) / 2)
        right = ((q[1][0] + q[2][0]) / 2, (q[1][1] + q[2][1]) / 2)
        if math.hypot(right[0] - left[0], right[1] - left[1]) > 2 * math.hypot(q[3][0] - q[0][0], q[3][1] - q[0][1]):
            out.append((left, right))
    return out


def _angle(axis: tuple[tuple[float, float], tuple[float, float]]) -> float:
    (lx, ly), (rx, ry) = axis
    return math.degrees(math.atan2(ry - ly, rx - lx))


def _vanishing_point(lines: Sequence[TextLine]) -> tuple[float, float] | None:
    """Where the rows' centre lines meet, when they fan out (a photo in perspective: the rows slant more
    the further they are from the camera's axis, 1 degree at the top of a slip and 20 at its foot); None
    when they run parallel (a photo only turned) or too few are wide enough to say."""
    axes = _row_axes([_corners4(ln) for ln in lines])
    angles = [_angle(ax) for ax in axes]
    if len(axes) < MIN_FAN_LINES or max(angles) - min(angles) < MIN_FAN_DEG:
        return None
    saa = sab = sbb = sac = sbc = 0.0
    for (lx, ly), (rx, ry) in axes:  # least squares: the point nearest every row's line, long rows counting more
        length = math.hypot(rx - lx, ry - ly)
        a, b = -(ry - ly) / length, (rx - lx) / length
        c = -(a * lx + b * ly)
        saa, sab, sbb = saa + length * a * a, sab + length * a * b, sbb + length * b * b
        sac, sbc = sac + length * a * c, sbc + length * b * c
    det = saa * sbb - sab * sab
    if abs(det) < 1e-9 * (saa + sbb) ** 2:
        return None
    return ((-sac * sbb + sbc * sab) / det, (-sbc * saa + sac * sab) / det)


def _unfanned(lines: Sequence[TextLine], vp: tuple[float, float]) -> tuple[list[TextLine], float] | None:
    """The lines with their boxes taken through the projective map that sends the vanishing point `vp`
    to infinity along the rows, so every line through it comes out level; and how far from level the
    rows then are (the median of their slants' sizes, degrees). None when `vp` is too near the text for
    that map to be tame (it would tear the page between the text and the point)."""
    pts = [p for ln in lines for p in _corners4(ln)]
    cx, cy = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    ux, uy = vp[0] - cx, vp[1] - cy
    d = math.hypot(ux, uy)
    span = max(p[0] for p in pts) - min(p[0] for p in pts)
    if d < FAN_MIN_DISTANCE * span:
        return None
    ux, uy = ux / d, uy / d
    if abs(ux) < FAN_MAX_TILT:  # rows meeting above or below the text: no row through that point reads across
        return None
    if ux < 0:  # the point is left of the text: keep the rows reading left to right
        ux, uy, d = -ux, -uy, -d
    if min(1.0 - ((px - cx) * ux + (py - cy) * uy) / d for px, py in pts) < 1 - 1 / FAN_MIN_DISTANCE:
        return None  # some text near the point: the map would stretch it out of all proportion

    def to_level(px: float, py: float) -> tuple[float, float]:
        x, y = (px - cx) * ux + (py - cy) * uy, -(px - cx) * uy + (py - cy) * ux
        k = 1.0 - x / d
        return x / k, y / k

    out, mapped = [], []
    for ln in lines:
        m = [to_level(px, py) for px, py in _corners4(ln)]
        mapped.append(m)
        xs, ys = [p[0] for p in m], [p[1] for p in m]
        x0, y0 = math.floor(min(xs)), math.floor(min(ys))
        out.append(replace(ln, box=(x0, y0, math.ceil(max(xs)) - x0, math.ceil(max(ys)) - y0)))
    axes = _row_axes(mapped)
    return (out, statistics.median(abs(_angle(ax)) for ax in axes)) if axes else None


def _text_frame(lines: Sequence[TextLine]) -> tuple[list[TextLine], dict[int, TextLine]]:
    """The boxes with text, laid out level when the text is slanted, and each level box's original.

    A photo only turned is turned back; one in perspective, whose rows fan out from a vanishing point,
    is mapped so that the rows through that point come out level (turning it by their median slant
    left the top rows 5 degrees off and their values a line below their labels: hard tuning slip 663)."""
    boxes = [ln for ln in lines if ln.text.strip()]
    slant = text_slant(boxes)
    if abs(slant) <= MAX_SLANT_DEG:
        return boxes, {id(b): b for b in boxes}
    level = _unslanted(boxes, slant)
    vp = _vanishing_point(boxes)
    fan = _unfanned(boxes, vp) if vp is not None else None
    if fan is not None:
        # Whichever lays the rows more nearly level: a turned photo's slants spread a little too (short
        # rows measure their slant badly), and a point fitted to that spread is no perspective.
        turned = statistics.median(abs(_angle(ax) - slant) for ax in _row_axes([_corners4(b) for b in boxes]))
        if fan[1] < turned:
            level = fan[0]
    return level, {id(g): b for g, b in zip(level, boxes, strict=True)}


def o_read_as_zero(lines: Sequence[TextLine], labels: Labels) -> str:
    """The first label read with a zero for its letter O ("[0rder#]"), or "": then the slip's print is one
    the recogniser reads O as 0 in, surely (tuning slip 67, LXGW WenKai Mono: the SKU RDD1388O came back
    RDD13880 with its 0 at 1.0, beside the label 0rder#), and no 0 or O in its codes is sure."""
    for ln in lines:
        for h in labels.find(ln.text):
            if not h.fuzzy and "0" in to_halfwidth(ln.text[h.start : h.end]):
                return ln.text[h.start : h.end]
    return ""


def locate(
    lines: Sequence[TextLine],
    labels: Labels,
    kinds: dict[str, str],
    parses: Callable[[str, str], bool],
) -> dict[str, list[Found]]:
    """Candidate values per field. `kinds` maps field -> kind; `parses(field, text)` says a text holds a value."""
    boxes, original = _text_frame(lines)
    return {
        name: [
            replace(f, line=original[id(f.line)], label=None if f.label is None else original[id(f.label)])
            for f in found
        ]
        for name, found in _locate(boxes, labels, kinds, parses).items()
    }


def unclaimed(
    lines: Sequence[TextLine],
    labels: Labels,
    kinds: dict[str, str],
    parses: Callable[[str, str], bool],
) -> list[TextLine]:
    """The boxes no label names: no label in them, and not the box beside or under a label of any kind
    (a waybill number under 运单号 is claimed even though it is no field) unless the label's value is
    in its own box (退款金额：V1460.90 over 编码：GU-7117-BOX-L)."""
    boxes, original = _text_frame(lines)
    raw = [labels.find(b.text) for b in boxes]
    hits, is_label = _label_hits(boxes, raw, kinds, parses)
    claimed = {id(b) for b, found in zip(boxes, raw, strict=True) if found}
    for bi, lab in enumerate(is_label):
        if lab and not any(c.isalnum() for c in boxes[bi].text[max(h.end for h in hits[bi]) :]):
            claimed |= {id(other) for _, other in _neighbours(bi, boxes, is_label)}
    return [original[id(b)] for b in boxes if id(b) not in claimed]


def _label_hits(
    boxes: list[TextLine], raw: list[list[Hit]], kinds: dict[str, str], parses: Callable[[str, str], bool]
) -> tuple[list[list[Hit]], list[bool]]:
    """Per box, from its keywords (`raw`, Labels.find): the labels in it (not keywords inside a value), and
    whether the box is a label."""
    hits = [_labels_only(b.text, h, kinds, parses) for b, h in zip(boxes, raw, strict=True)]
    return hits, [_is_label(b.text, h, kinds) for b, h in zip(boxes, hits, strict=True)]


def _locate(
    boxes: list[TextLine],
    labels: Labels,
    kinds: dict[str, str],
    parses: Callable[[str, str], bool],
) -> dict[str, list[Found]]:
    hits, is_label = _label_hits(boxes, [labels.find(b.text) for b in boxes], kinds, parses)
    found: dict[str, list[Found]] = {f: [] for f in kinds}
    for bi, (box, bh) in enumerate(zip(boxes, hits, strict=True)):
        for j, hit in enumerate(bh):
            if hit.role not in kinds:
                continue
            kind = kinds[hit.role]
            stop = bh[j + 1].start if j + 1 < len(bh) else len(box.text)
            words = labels.words.get(hit.role, set())
            same = _value_beside(box, hit, stop, kind, boxes=boxes, is_label=is_label, parses=parses, words=words)
            if same is not None and kind == "int" and same.text.strip().upper() in STROKES and j + 1 == len(bh):
                near = _value_near(bi, hit, kind, boxes=boxes, hits=hits, is_label=is_label, parses=parses)
                if near is not None:  # the stroke after the label is a rule or a cell's wall: a doubt, not a count
                    same = replace(same, confidence=same.confidence * STROKE)
                    found[hit.role].append(near)
            if same is not None:
                found[hit.role].append(same)
                continue
            # A label with a colon and something after it that is no value: a format issue, not a missing field.
            raw = re.split(r"[:：;；]", box.text[hit.end : stop], maxsplit=1)
            unparsed = raw[1].strip() if len(raw) == 2 else ""
            if not any(c.isalnum() for c in unparsed):
                unparsed = ""  # a stray bracket or dash after the colon ("订单号(平台):(") is no value
            if j + 1 < len(bh) or unparsed:
                if unparsed:
                    found[hit.role].append(Found(hit.role, unparsed, box.confidence, box, "unparsed", hit.fuzzy, box))
                continue  # nothing to look for beside or under this label
            near = _value_near(bi, hit, kind, boxes=boxes, hits=hits, is_label=is_label, parses=parses)
            if near is not None:
                found[hit.role].append(near)
    return found


def _value_near(
    bi: int,
    hit: Hit,
    kind: str,
    *,
    boxes: list[TextLine],
    hits: list[list[Hit]],
    is_label: list[bool],
    parses: Callable[[str, str], bool],
) -> Found | None:
    """The value of boxes[bi]'s label `hit` in the box beside it or under it (_neighbours), when one parses."""
    box = boxes[bi]
    for how, other in _neighbours(bi, boxes, is_label):
        text = other.text
        oh = hits[boxes.index(other)]
        if oh and oh[0].start > 0:
            text = text[: oh[0].start]
        vs = value_start(text, 0, kind) if kind in ("code", "int") else 0
        if vs is not None and text[vs:].strip() and parses(hit.role, text[vs:]):
            cc, ca = _cc(other, vs, len(text)), _ca(other, vs, len(text))
            text, conf = text[vs:], other.confidence * (BELOW if how == "below" else 1.0)
            lost = ""
            if kind == "code" and not oh:
                lost = _fragment_before(other.text, vs)
                text, conf, cc, ca = _continued(text, conf, cc, other, box, ca=ca, boxes=boxes, is_label=is_label)
                if vs == 0 and how == "below":
                    text, conf, cc, ca = _continued(
                        text, conf, cc, other, box, ca=ca, boxes=boxes, is_label=is_label, leftward=True
                    )
            return Found(hit.role, text, conf, other, how, hit.fuzzy, box, cc, lost, alt=ca)
    return None


# Marks a code may carry in front of it in its own box ("#123456", "№ 42"): not fragments of a letter, nor is
# a colon (a label's, where the value's box starts with it).
_CODE_MARKS = "#№"


def _fragment_before(text: str, at: int) -> str:
    """The mark just before a code that starts at `at` in a box holding no label, when it may be what is left of
    the code's first letters: on a hard tuning slip 'LO4I2_BF8I_H65S' faded to ')4I2_BF8I_H65S', and the code
    passed as 4I2_BF8I_H65S but for its I/1 doubts. A label's decoration never stands alone in a value's box."""
    if at == 0 or text[at - 1].isspace():
        return ""
    mark = text[:at].strip()
    return "" if all(to_halfwidth(c) in _CODE_MARKS or c in _COLON for c in mark) else mark


def _value_beside(
    box: TextLine,
    hit: Hit,
    stop: int,
    kind: str,
    *,
    boxes: list[TextLine],
    is_label: list[bool],
    parses: Callable[[str, str], bool],
    words: Collection[str] = (),
) -> Found | None:
    """The value after a label in its own box, up to `stop`, when it parses. A word of capitals between
    them (_WORD_BEFORE) that is none of the label's own `words` (folded: SKU, ID) is the value's lost start."""
    start = value_start(box.text[:stop], hit.end, kind)
    if start is None or not box.text[start:stop].strip():
        return None
    text, conf, cc, ca = box.text[start:stop], box.confidence, _cc(box, start, stop), _ca(box, start, stop)
    if kind == "code" and stop == len(box.text):
        # joined first: a part of a code need not be a value on its own (8 digits of an order number)
        text, conf, cc, ca = _continued(text, conf, cc, box, box, ca=ca, boxes=boxes, is_label=is_label)
    if not parses(hit.role, text):
        return None
    glued = hit.glued if hit.glued and kind == "code" else ""
    if glued and not clean_code_token(text).startswith(to_halfwidth(glued).upper()):
        glued = ""  # the word was the label's after all: the value starts past a space or a colon
    word = _WORD_BEFORE.fullmatch(to_halfwidth(box.text[hit.end : start])) if kind == "code" else None
    lost = word.group(1) if word and fold_label(word.group(1)).text not in words else ""
    return Found(hit.role, text, conf, box, "same", hit.fuzzy, box, cc, alt=ca, glued=glued, lost_start=lost)


# A word of capitals alone between a label's colon and a code, one space or a mark (a colon, a plus...) before
# it: the code's own prefix with its separator lost or misread, or label decoration. value_start skips it (a
# value holds a digit), so it is a doubt: hard tuning slip 1611 printed Customer ID: KH-2022-82158, its hyphen
# faded, and 2022-82158 passed; hard 1712 printed 货号：MC-3722-BLK-42, its hyphen read as a colon, and
# 3722-BLK-42 passed; hard 2171 printed 客户编号：KH-2020-30583, read KH+2020-30583, and 2020-30583 passed.
_WORD_BEFORE = re.compile(rf"\s*:?\s*([A-Z]{{2,4}})(?: |\s*[{re.escape(SPLIT_MARKS)}]\s*)")


def _continued(
    text: str,
    conf: float,
    cc: tuple[float, ...],
    box: TextLine,
    label: TextLine,
    *,
    ca: str,
    boxes: list[TextLine],
    is_label: list[bool],
    leftward: bool = False,
) -> tuple[str, float, tuple[float, ...], str]:
    """A code the detector split in two ("24101592" "683426"): the boxes that continue it on its line,
    closer than a character's height, joined; the confidence is the lowest of the parts. A box that is
    another label's value is no continuation: in a header table an order number fills its cell up to
    the customer id in the next (tuning seeds 551, 560). `leftward` joins the boxes that continue it to
    the left instead, for a value found under its label: the label names the piece nearest its own
    centre (hard tuning slip 267: [客户编号] set right in its cell over C9274 | 60828 named 60828). The
    characters' probabilities (cc) and runner-ups (ca) are joined alike: the space put between two pieces is
    read surely (1.0, no runner-up); either is unknown ((), "") once a piece's is."""
    cur = box
    while True:
        h = cur.box[3]
        side = _left_on_line(cur, boxes) if leftward else _right_on_line(cur, boxes)
        gaps = [(_gap(b, cur) if leftward else _gap(cur, b), k, b) for k, b in side]
        near = [(gap, k, b) for gap, k, b in gaps if -0.8 * h <= gap <= 0.8 * h]
        if not near:
            return text, conf, cc, ca
        _, k, b = min(near, key=lambda gkb: gkb[0])  # the nearest on that side
        # Only a box that is all code continues one: "2件/pcs" in the next cell of a table is a quantity.
        if is_label[k] or not re.fullmatch(r"[A-Za-z0-9\-_/.]+", to_halfwidth(b.text.strip())):
            return text, conf, cc, ca
        if _value_of_another_label(b, label, boxes, is_label):
            return text, conf, cc, ca
        more, also, bare = _cc(b, 0, len(b.text)), _ca(b, 0, len(b.text)), b.text == b.text.strip()
        joined = (*more, 1.0, *cc) if leftward else (*cc, 1.0, *more)
        cc = joined if cc and more and bare else ()
        ca = (f"{also} {ca}" if leftward else f"{ca} {also}") if ca and also and bare else ""
        text = f"{b.text.strip()} {text}" if leftward else f"{text} {b.text.strip()}"
        conf, cur = min(conf, b.confidence), b


def _value_of_another_label(b: TextLine, label: TextLine, boxes: list[TextLine], is_label: list[bool]) -> bool:
    """Is b the box beside or under a label other than `label`?"""
    return any(
        other is b
        for li, lab in enumerate(is_label)
        if lab and boxes[li] is not label
        for _, other in _neighbours(li, boxes, is_label)
    )


def _right_of_a_label(b: TextLine, boxes: list[TextLine], is_label: list[bool]) -> bool:
    """Is the nearest box left of b on its line a label? Then b is that label's value (a grid's next cell),
    not the value of a label above it."""
    left = [o for o in boxes if o is not b and _same_line(o, b) and o.box[0] + o.box[2] / 2 < b.box[0]]
    if not left:
        return False
    nearest = max(left, key=lambda o: o.box[0] + o.box[2])
    return is_label[boxes.index(nearest)]


def _neighbours(bi: int, boxes: list[TextLine], is_label: list[bool]) -> list[tuple[str, TextLine]]:
    """The box right of boxes[bi] on its line (unless that is a label), then the box under it."""
    me = boxes[bi]
    out: list[tuple[str, TextLine]] = []
    right = [
        b for k, b in enumerate(boxes) if k != bi and _same_line(me, b) and b.box[0] >= me.box[0] + me.box[2] * 0.6
    ]
    if right:
        nearest = min(right, key=lambda b: b.box[0])
        if not is_label[boxes.index(nearest)]:
            out.append(("right", nearest))
    me_bottom = me.box[1] + me.box[3]
    # A header row of labels (header tables, stacked labels): each box under it belongs to the label
    # whose centre is nearest, as cells are centred or left-aligned under wider labels.
    row = [b for k, b in enumerate(boxes) if is_label[k] and _same_line(me, b)] or [me]

    def cx(b: TextLine) -> float:
        return b.box[0] + b.box[2] / 2

    below = [
        b
        for b in boxes
        if b is not me
        # detector boxes are padded: a tight stack overlaps by up to a third of a line (measured 12 px of 35)
        and b.box[1] >= me_bottom - me.box[3] * 0.5
        and b.box[1] - me_bottom <= 2.5 * me.box[3]
        and (_x_overlap(me, b) >= 0.3 or min(row, key=lambda lab: abs(cx(lab) - cx(b))) is me)
        and not _right_of_a_label(b, boxes, is_label)
    ]
    if below:
        top = min(b.box[1] for b in below)
        first = [b for b in below if b.box[1] <= top + me.box[3] * 0.5]
        nearest = min(first, key=lambda b: abs(cx(b) - cx(me)))
        if not is_label[boxes.index(nearest)]:
            out.append(("below", nearest))
    return out
