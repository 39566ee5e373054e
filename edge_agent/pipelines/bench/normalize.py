"""Value clean-up for slip fields: full-width to half-width, OCR confusions in codes, dates, integers, reasons."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

# Full-width ASCII block U+FF01-U+FF5E maps 1:1 onto U+0021-U+007E; U+3000 is the ideographic space.
_FULLWIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_FULLWIDTH[0x3000] = 0x20
# CJK punctuation that OCR and merchants use in place of ASCII separators.
_FULLWIDTH.update(
    {
        ord("、"): ord(","),
        ord("。"): ord("."),
        ord("﹕"): ord(":"),
        ord("∶"): ord(":"),
        ord("—"): ord("-"),
        ord("－"): ord("-"),
        ord("–"): ord("-"),
        ord("〜"): ord("~"),
    }
)

# Letters OCR reads where a digit was printed (upper-cased first), and the reverse for letter prefixes.
DIGIT_FOR = {
    "O": "0",
    "D": "0",
    "Q": "0",
    "I": "1",
    "L": "1",
    "|": "1",
    "!": "1",
    "S": "5",
    "$": "5",
    "B": "8",
    "Z": "2",
    "G": "6",
}
# The characters a recogniser gives for a printed 1 (I, L, a bar...): a count read as them alone is still a count.
ONE_TWINS = frozenset(c for c, d in DIGIT_FOR.items() if d == "1")
LETTER_FOR = {"0": "O", "1": "I", "5": "S", "8": "B", "2": "Z", "6": "G"}

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}


def to_halfwidth(text: str) -> str:
    """Full-width letters, digits, punctuation and spaces as their ASCII forms; same length as the input."""
    return text.translate(_FULLWIDTH)


@functools.cache
def _t2s() -> Any:
    import opencc

    return opencc.OpenCC("t2s")


@functools.cache
def simplified(ch: str) -> str:
    """A traditional Chinese character as its simplified form (OpenCC's t2s), one character for one; any
    other character as it is. Slips from Taiwan or Hong Kong print 訂單號, and the recogniser now and then
    reads a simplified character as its traditional form (typical tuning slip 104: 货号 read as 貨号)."""
    if ch < "\u2e80":
        return ch
    out = str(_t2s().convert(ch))
    return out if len(out) == 1 else ch


def to_simplified(text: str) -> str:
    """simplified() of each character: same length as the input."""
    return "".join(simplified(ch) for ch in text)


def fold(text: str) -> str:
    """Half-width, simplified and lower case, one output char per input char (so offsets stay valid)."""
    out = []
    for ch in to_halfwidth(text):
        low = simplified(ch).lower()
        out.append(low if len(low) == 1 else ch)
    return "".join(out)


def squash(text: str) -> str:
    """fold() without any whitespace: how labels and reasons are compared."""
    return "".join(fold(text).split())


@dataclass(frozen=True, slots=True)
class Fixed:
    """A cleaned value and how many characters had to be changed to get it (OCR confusions)."""

    value: str
    substitutions: int
    ambiguous: bool = False  # another reading with one letter/digit swapped matches the pattern too


_CODE_CHARS = re.compile(r"[A-Za-z0-9\-_/.|!$]+")
_INNER_SPACE = re.compile(r"(?<=[A-Za-z0-9]) (?=[A-Za-z0-9])")
CODE_SEPARATORS = "-_/."


def _trimmed(segment: str) -> str:
    return to_halfwidth(segment).strip().lstrip("#:;,. ")


def _code_run(segment: str) -> tuple[str, re.Match[str] | None]:
    """A value segment made half-width and trimmed, and its leading code-like run."""
    # OCR sometimes splits a code with spaces: join runs separated by single spaces (unread_separators
    # says where that may have lost a separator).
    text = _INNER_SPACE.sub("", _trimmed(segment))
    return text, _CODE_CHARS.match(text)


def unread_separators(segment: str, value: str, pattern: re.Pattern[str]) -> list[int]:
    """Where the code run of `segment` (cleaned to `value`, of the same length) was joined across a space
    that the pattern also allows to be a separator: the position in `value` of the character after it.
    On the tuning slips a space inside a code was an unread separator 7 times in 8 (an underscore below
    the line, a thin hyphen), so the joined value is only one of the readings."""
    out = []
    for k, m in enumerate(_INNER_SPACE.finditer(_trimmed(segment))):
        p = m.start() - k  # each earlier space joined moves the rest one to the left
        if 0 < p < len(value) and any(pattern.fullmatch(value[:p] + s + value[p:]) for s in CODE_SEPARATORS):
            out.append(p)
    return out


def clean_code_token(segment: str) -> str:
    """The leading code-like run of a value segment, spaces inside removed, trailing dots dropped."""
    _, m = _code_run(segment)
    return m.group(0).rstrip(".-_/") if m else ""


def dangling_separator(segment: str) -> str | None:
    """Where a code run was not read whole: the separator it ends on when nothing follows ("DD20240613-",
    cut off by glare, the label's edge or the detector), or the mark that splits it with more code right
    after ("D27440,11": a dot read as a comma; "U75421=42": a 6 read as a mark), or an ellipsis, where the
    recogniser saw text it could not read ("MU-7... ULV-XL" on hard tuning slip 595 passed as MU-7). None
    for a code that ends cleanly."""
    text, m = _code_run(segment)
    if m is None or len(m.group(0)) < 2:
        return None
    ellipsis = re.search(r"\.{2,}|…", text[: m.end() + 1])
    if ellipsis is not None:
        return ellipsis.group(0)
    if m.end() == len(text):
        return m.group(0)[-1] if m.group(0)[-1] in "-_/" else None
    after = text[m.end() : m.end() + 2]
    return (
        after[0] if len(after) == 2 and after[0] in SPLIT_MARKS and after[1].isascii() and after[1].isalnum() else None
    )


def ends_on_dot(segment: str) -> bool:
    """Does a code run end on one dot with nothing after it (690084609965.)? A dot is a separator of some
    codes (B91851.42) and what the recogniser makes of a character half lost (the 2 of 6900846099652 under
    glare, hard tuning slip 427 in unseen faces, passed as 690084609965), and seldom a full stop after a
    code: the code may go on past it."""
    text, m = _code_run(segment)
    return m is not None and m.end() == len(text) and len(m.group(0)) > 1 and m.group(0)[-1] == "."


# A dot in a code read below this is a doubt: a blurred underscore reads as a dot (hard tuning slip 1281 in
# unseen faces printed X87323_98 and passed as X87323.98, its dot at 0.84). The 15 dots read right in codes of
# tuning slips 1250-1299 (three tiers, both faces) were all read at 1.0; underscores and hyphens read right
# went down to 0.62 and are not doubted for it.
DOT_SURE = 0.9


def doubtful_dots(code: str, conf: tuple[float, ...] = ()) -> list[int]:
    """Positions of the dots in a code with a letter on one side or both (F.J5919K), or read below DOT_SURE
    (`conf`, aligned with the code). A code's dot separates digits (B91851.42, 48199.61); beside a letter it
    is more likely a speck or a stroke's broken end read as a dot (typical tuning slip 1207 printed FJ5919K in
    a thermal face and passed as F.J5919K, its dot at 0.98)."""
    weak = len(conf) == len(code)
    return [
        i
        for i in range(1, len(code) - 1)
        if code[i] == "." and (code[i - 1].isalpha() or code[i + 1].isalpha() or (weak and conf[i] < DOT_SURE))
    ]


# Marks read between two characters of one code: a separator misread (D27440,11: a dot read as a comma), or
# a character the recogniser made a mark of (U75421=42 for U75421642 on hard tuning slip 351 unseen: the
# run before it fits the pattern and passed, its last three digits lost). No code holds them.
SPLIT_MARKS = ",;:·=+*~^'\"`"


def clean_code_token_conf(segment: str, conf: tuple[float, ...], alt: str = "") -> tuple[str, tuple[float, ...], str]:
    """clean_code_token, with each kept character's OCR probability and runner-up reading (() and "" when
    `conf` or `alt` does not fit)."""
    token = clean_code_token(segment)
    if len(conf) != len(segment) or not token:
        return token, (), ""
    text = to_halfwidth(segment)
    # The token's characters are the segment's, in order, minus spaces and leading punctuation.
    at: list[int] = []
    i = 0
    for ch in token:
        while i < len(text) and text[i] != ch:
            i += 1
        if i == len(text):
            return token, (), ""
        at.append(i)
        i += 1
    return token, tuple(conf[i] for i in at), "".join(alt[i] for i in at) if len(alt) == len(segment) else ""


# Confusable letter/digit pairs. Where a pattern allows both, a character is ambiguous unless the
# recognition model was sure of it, with a threshold per character AS READ (the errors go one way).
# Measured by benchmarks/calibrate_confusables.py on the tuning split (seeds 0-299, three tiers, 5,098
# confusable characters in codes), wrong readings per character as read and their highest probability:
#   0 (a printed O): 53 of 532, up to 1.0 (in a monospaced font whose O and 0 are alike), 0.9999 elsewhere
#   O (a printed 0): 7 of 151, up to 0.987     1 (a printed I): 14 of 560, up to 0.9989
#   S (a printed 5): 1 of 245, at 0.987        B (a printed 8): 1 of 155, at 0.787
#   I, 2, Z, 5, 6, G, 8: none wrong in 3,240, at any probability
# So 0 and O need 0.99995, 1, S and B 0.999, and the reads never seen wrong 0.99.
# The recogniser is seldom sure of an I (it spreads a tenth of the probability over other strokes), and a
# printed 1 is rarely read as one. A second count (2026-12-04, seeds 0-299 and 1000-1299, three tiers,
# 249 reads of I): 1 wrong, at 0.68 (a printed 1, gkai00mp, typical). So I is sure from 0.9, which frees
# 10 clean and 4 typical slips of 450 each (seeds 0-149, 1000-1299) from review. Telling the two apart by
# the probability the recogniser gives the other reading, rather than its own, was measured too: it settles
# 86 of 132 right I at 0.99 against 74, and nothing for 0 and O. Not used.
CONFUSABLE_PAIRS = {"O": "0", "0": "O", "I": "1", "1": "I", "S": "5", "5": "S", "B": "8", "8": "B"}
CONFUSABLE_PAIRS |= {"Z": "2", "2": "Z", "G": "6", "6": "G"}
# A Q is an O with a tail, and blur or a speck gives an O one: hard tuning slip 304 read LE-3748-BOX-42 as
# ...-BQX-42, its Q at 0.59, and it passed. So a Q the recogniser was not sure of may be an O. On tuning seeds
# 0-149 (three tiers) 22 Q were read in codes: 19 at 0.99 or more, all printed Q; under 0.99 one Q, one O
# (hard 102, DU7596O as DU7596Q at 0.74) and one 9. An O is not doubted as a Q: no O was read for a Q there.
CONFUSABLE_PAIRS |= {"Q": "O"}
SURE_AS_READ = {"0": 0.99995, "O": 0.99995, "1": 0.999, "S": 0.999, "B": 0.999, "I": 0.9}
SURE_DEFAULT = 0.99
# A 0 read between two digits, in a run of NUMERIC_RUN or more digits, is a zero: a code that long in digits
# is a number (a GTIN, a member or order number, the digits after SKU), and no numbering puts one letter O
# inside it. Only a 0 as read, and only inside the run: at its ends a letter may start or end the code
# (SO20260402, TV2890O), and an O read inside a run stays in doubt, the reviewer shown what was read.
# 900 tuning photos (seeds 0-49 and 500-599 in the generator's faces, 300-349 and 400-499 in unseen faces,
# three tiers): 30 such zeros were in doubt, 29 of them zeros; the other was one of several misread digits
# of a value that stays in review.
NUMERIC_RUN = 8
# So is any 0 of a run of NUMERIC_SEGMENT or more digits set between two separators: the style number of a
# structured code (EE-1300-WHT-XL, WT-5903-BLU-XL). A segment at either end of the code is left in doubt:
# O60207/68 and VK-4597-WHT-O1 are printed so. On tuning photos (seeds 0-49 and 500-649 in the generator's
# faces, 300-349 and 400-549 in unseen faces, three tiers) 15 zeros in such segments were in doubt, all zeros.
NUMERIC_SEGMENT = 4
# And a letter read among letters, in a word of WORD_LETTERS letters set between two separators, is a letter:
# the colour, material or size word of a structured code (UQ-4461-OLV-S, LE-3748-BOX-42). Clean and typical
# tuning slip 2600, both face sets, went to review for nothing on the O of OLV. A digit read there stays in
# doubt, and so does a letter of a code's first or last segment (SO20260402, VK-4597-WHT-O1) or of a longer
# group: XW82B-KVWH0-BCHZB (tuning slip 2762, WenQuanYi Zen Hei) holds a 0 among four letters, read as O at 0.95.
WORD_LETTERS = 3


# The recogniser's own runner-up is a doubt too, where it is another character of the same kind (a digit for a
# digit, a letter for a letter; a letter for a digit is a confusable pair's) with RUNNER_UP or more of the
# probability: hard tuning slip 871 read the dotted zero of LXGW WenKai Mono as 8 at 0.71, 0 at 0.29, and
# VIP52075489 passed for VIP52075409. On 600 tuning photos (seeds 860-959 and 760-859 in unseen faces, three
# tiers), of the order numbers, SKUs and customer ids the reader kept, 17 wrong ones and 8 right ones had such a
# runner-up at 0.15 or more (at 0.1: 19 and 11; at 0.2: 15 and 5; at 0.3: 8 and 2). Besides 871, it sends one
# slip that passed to review: hard 905, every value right, a 3 read with 8 at 0.1504. The rest were in review.
# Typical 694 (a test photo) goes to review too: its customer id is right, a 3 read at 0.74 with 5 at 0.22.
RUNNER_UP = 0.15


def runner_up_doubt(read: str, other: str) -> bool:
    """Is `other`, the recogniser's runner-up for a character read as `read`, a reading of its own: a digit for
    a digit, or a letter for another letter (not the same letter in the other case)?"""
    if len(other) != 1 or not (read.isascii() and other.isascii() and read.isalnum() and other.isalnum()):
        return False
    return read.upper() != other.upper() and read.isdigit() == other.isdigit()


def ambiguous_positions(
    value: str, pattern: re.Pattern[str], conf: tuple[float, ...] = (), alt: str = ""
) -> list[tuple[int, str, str]]:
    """(position, as read, other reading) for each character the pattern allows as either of a confusable
    pair, unless the OCR was sure of it, and for each whose runner-up reading (`alt`, aligned with the value:
    RUNNER_UP) the pattern allows. Without character probabilities every confusable character is ambiguous."""
    out = []
    runner = alt.upper() if len(alt) == len(value) else " " * len(value)
    for i, ch in enumerate(value):
        second = runner[i]
        if runner_up_doubt(ch, second) and pattern.fullmatch(value[:i] + second + value[i + 1 :]):
            out.append((i, ch, second))
            continue
        other = CONFUSABLE_PAIRS.get(ch)
        if other is None or not pattern.fullmatch(value[:i] + other + value[i + 1 :]):
            continue
        sure = len(conf) == len(value) and conf[i] >= SURE_AS_READ.get(ch, SURE_DEFAULT)
        if sure and not _zero_leading_digits(value, i):
            continue
        if ch == "0" and _zero_by_its_run(value, i):
            continue
        if ch.isalpha() and _letter_in_word(value, i):
            continue
        out.append((i, ch, other))
    return out


def _zero_leading_digits(value: str, i: int) -> bool:
    """Is value[i] a 0 that opens the code before a digit? A code's first character has nothing before it to
    be read by, and a 0 there may be a letter before a number (O91870_08): the recogniser's score does not
    settle it. Unseen-faces tuning slip 1446 (WenQuanYi Micro Hei, clean and typical) read O91870_08 as
    091870_08, its 0 at 0.9999 and then 1.0, and it passed. Per read, the 0 that led a code before a digit
    was below SURE_AS_READ in all 7 measured on tuning seeds 1450-1549 (clean and typical, both face sets; 2
    of them a misread O)."""
    return i == 0 and value[:1] == "0" and value[1:2].isdigit()


def _zero_by_its_run(value: str, i: int) -> bool:
    """Is the 0 at value[i] a zero by the run of digits around it (itself counted): between two digits of a
    run of NUMERIC_RUN or more, or anywhere in a run of NUMERIC_SEGMENT or more with a code separator on
    each side?"""
    start, end = i, i + 1
    while start > 0 and value[start - 1].isdigit():
        start -= 1
    while end < len(value) and value[end].isdigit():
        end += 1
    if start < i < end - 1 and end - start >= NUMERIC_RUN:
        return True
    set_apart = start > 0 and end < len(value) and {value[start - 1], value[end]} <= set(CODE_SEPARATORS)
    return set_apart and end - start >= NUMERIC_SEGMENT


def _letter_in_word(value: str, i: int) -> bool:
    """Is value[i] one of a segment's WORD_LETTERS characters, all of them letters, with a code separator on
    each side of the segment?"""
    start, end = i, i + 1
    while start > 0 and value[start - 1] not in CODE_SEPARATORS:
        start -= 1
    while end < len(value) and value[end] not in CODE_SEPARATORS:
        end += 1
    word = value[start:end]
    return start > 0 and end < len(value) and len(word) == WORD_LETTERS and word.isascii() and word.isalpha()


def zeros_in_words(value: str, doubts: list[tuple[int, str, str]]) -> tuple[str, list[tuple[int, str, str]]]:
    """The value with each doubted 0 that stands among a word's letters (_letter_in_word once it is an O)
    written O, the doubt kept, as "O or 0": the reviewer is shown the likelier reading. The recogniser reads a
    printed O as 0 far more often than any other letter as its digit (benchmarks/results/confusables.md: 53 of
    532 zeros read on tuning seeds 0-299 were a printed O, none of 2,847 twos, fives, sixes and eights was a
    letter). Clean tuning slip 2588 read JM-9160-OLV-L as JM-9160-0LV-L."""
    out = []
    for i, read, other in doubts:
        as_o = value[:i] + "O" + value[i + 1 :]
        word_zero = read == "0" and other == "O" and _letter_in_word(as_o, i)
        value = as_o if word_zero else value
        out.append((i, "O", "0") if word_zero else (i, read, other))
    return value, out


def word_zeros_as_read(value: str, doubts: list[tuple[int, str, str]]) -> str:
    """The value with each O that zeros_in_words wrote for a 0 (an "O or 0" doubt in a word) read as 0 again.
    `doubts` are doubts_named's, which hold only characters the value still shows."""
    for i, shown, other in doubts:
        if shown == "O" and other == "0" and _letter_in_word(value, i):
            value = value[:i] + "0" + value[i + 1 :]
    return value


def doubt_phrase(position: int, as_read: str, other: str) -> str:
    """How a review reason names one letter/digit doubt: "0 or O at character 7" (counted from 1)."""
    return f"{as_read} or {other} at character {position + 1}"


_DOUBT = re.compile(r"(?<![^\s(,])(\S) or (\S) at character (\d+)(?=[,)])")


def doubts_named(message: str, value: str) -> list[tuple[int, str, str]]:
    """(position, as read, other reading) of each doubt_phrase in a review reason's message, where the value
    still holds that character as read (a value a person or a later step changed names none)."""
    out = []
    for m in _DOUBT.finditer(message):
        a, b, i = m.group(1), m.group(2), int(m.group(3)) - 1
        if (CONFUSABLE_PAIRS.get(a) == b or runner_up_doubt(a, b)) and 0 <= i < len(value) and value[i] == a:
            out.append((i, a, b))
    return out


def ean13_valid(value: str) -> bool:
    """A 13-digit code whose last digit is its GS1 check digit."""
    if len(value) != 13 or not value.isdigit():
        return False
    digits = [int(c) for c in value]
    total = sum(d * (3 if k % 2 else 1) for k, d in enumerate(digits[:12]))
    return (10 - total % 10) % 10 == digits[12]


def fix_code(token: str, pattern: re.Pattern[str], *, max_prefix: int = 6) -> Fixed | None:
    """The token made to match `pattern`, fixing letter/digit confusions where it needs digits.

    Tries the token as read, then every split into a letter prefix that holds a letter (digits read
    as letters are turned back: 5F -> SF) and a digit body (O -> 0, I -> 1, S -> 5, B -> 8 ...), keeping the
    reading with the fewest changes. None when no reading matches.
    """
    token = _bar_as_i(token).upper()
    if not token:
        return None
    if pattern.fullmatch(token):
        return Fixed(token, 0, _boundary_ambiguous(token, pattern))
    best: Fixed | None = None
    for k in range(min(len(token), max_prefix) + 1):
        if k and not any(c.isalpha() for c in token[:k]):
            continue  # digits alone are no letter prefix misread (54857488 is not S4857488)
        prefix = "".join(LETTER_FOR.get(c, c) for c in token[:k])
        body = "".join(DIGIT_FOR.get(c, c) for c in token[k:])
        cand = prefix + body
        if pattern.fullmatch(cand):
            subs = sum(1 for a, b in zip(token, cand, strict=True) if a != b)
            if best is None or subs < best.substitutions:
                best = Fixed(cand, subs, _boundary_ambiguous(cand, pattern))
    return best


def _bar_as_i(token: str) -> str:
    """A lowercase l in a code otherwise in capitals is a bare upright stroke: the capital I of a sans-serif
    face, which the recogniser may give as l (clean tuning slip 340: 1BI-9CI read as 1BI-9Cl, its l at 0.73,
    passed as 1BI-9CL). A capital L has a foot. Left as it is in a code with other lowercase letters."""
    if "l" not in token or any(c.islower() for c in token.replace("l", "")):
        return token
    return token.replace("l", "I")


def _boundary_ambiguous(value: str, pattern: re.Pattern[str]) -> bool:
    """True when the last letter of the prefix may be a misread digit ("VIPI2345678" vs "VIP12345678")."""
    m = re.match(r"[A-Z]+", value)
    if m is None or m.end() >= len(value) or not value[m.end()].isdigit():
        return False
    last = value[m.end() - 1]
    if last not in DIGIT_FOR:
        return False
    # An alphanumeric pattern (letters allowed among the digits) cannot tell either way: no judgement.
    if pattern.fullmatch(value[: m.end()] + "X" + value[m.end() + 1 :]):
        return False
    return pattern.fullmatch(value[: m.end() - 1] + DIGIT_FOR[last] + value[m.end() :]) is not None


# The units a count is printed with; "pes" is how OCR reads "pcs". A count in Chinese numerals takes
# only the Chinese ones.
_CN_UNITS = "件|个|只|双|套|箱|台|包|盒|瓶|条|本"
QTY_UNITS = rf"(?:{_CN_UNITS}|(?i:pcs?|pes)(?![A-Za-z]))"
# A number before a word of time (7天无理由退货: seven days' no-reason return; 30日, 2小时) is no count: hard tuning
# slip 1839 took the 7 of its reason, 7天无理由退货, for the quantity 12, and it passed. Nor is one before
# another number: hard 1805 (unseen faces) read 退回数量(件):1 6件/pcs, a speck before its 6, and 1 passed.
_TIME_WORD = "天日号月年时分秒周"
_QTY = re.compile(
    r"^(?:共\s*)?[xX×*]?\s*([0-9OoDQIil|!SsBZz]{1,7})(?=\s*"
    + QTY_UNITS
    + r"|(?![0-9A-Za-z.,]))(?!\s*(?:小时|[0-9"
    + _TIME_WORD
    + r"]))"
)
# A count in Chinese numerals: with its unit (两件), or as the whole value (数量：二).
_QTY_CN = re.compile(rf"^([零〇一二两三四五六七八九十]{{1,3}})(?:{_CN_UNITS}|$)")


def parse_quantity(segment: str) -> tuple[int, int] | None:
    """(quantity, substitutions) from the start of a value ("2", "2件", "x2", "两件", "l2"); None if not an integer.
    A dotted i is a 1 as much as an l is (hard tuning slip 1086, unseen faces: 1pcs read as ipcs)."""
    text = to_halfwidth(segment).strip()
    m = _QTY.match(text)
    if m:
        raw = m.group(1)
        digits = "".join(DIGIT_FOR.get(c.upper(), c) for c in raw)
        if not digits.isdigit() or _letters_alone(raw, text[m.end() :]):
            return None
        subs = sum(1 for a, b in zip(raw, digits, strict=True) if a != b)
        return int(digits), subs
    m = _QTY_CN.match(text)
    if m:
        value = _cn_number(m.group(1))
        return (value, 0) if value is not None else None
    return None


_UNIT_NEXT = re.compile(rf"\s*{QTY_UNITS}")


def _letters_alone(raw: str, rest: str) -> bool:
    """Is a count read without one digit, of letters other than a 1's twins (l, I, a bar: DIGIT_FOR's 1s), and no
    unit after it? A letter alone is more likely a letter than a digit misread as one: hard tuning slip 2390 in
    unseen faces cut the label 申请数量(PCS) into 申请数量 and S), and S) passed as a count of 5, where 8 PCS was
    printed. With its unit (共S件) it is still a count."""
    one_likes = all(c.upper() in ONE_TWINS for c in raw)
    return not any(c.isdigit() for c in raw) and not one_likes and not _UNIT_NEXT.match(rest)


def _cn_number(text: str) -> int | None:
    if text == "十":
        return 10
    if "十" in text:
        tens, _, ones = text.partition("十")
        t = _CN_DIGITS.get(tens) if tens else 1
        o = _CN_DIGITS.get(ones) if ones else 0
        return None if t is None or o is None else t * 10 + o
    if len(text) == 1:
        return _CN_DIGITS.get(text)
    return None


# The day ends the date, or runs straight into a time the OCR joined to it (2024-08-0304:23:42).
_DATE = re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{2}(?=\d{1,2}:\d{2})|\d{1,2}(?!\d))\s*日?")
_DATE_COMPACT = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)")
# An English month by name: Mar 7, 2025 / March 7th 2025 / 7 Mar 2025 / 07-Mar-2025. A month in digits
# before the day (03/07/2025) or after it (07/03/2025) is left alone: the two read alike.
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = (
    r"(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
    r"(?:uary|ruary|ch|il|e|y|ust|t|tember|ober|ember)?(?![a-z])\.?"
)
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_DATE_EN = (
    re.compile(rf"(?i)(?<![a-z]){_MONTH}[\s-]*{_DAY}(?!\d),?[\s-]*(?P<year>\d{{4}})(?!\d)"),
    re.compile(rf"(?i)(?<!\d){_DAY}[\s./-]*{_MONTH}[\s.,/-]*(?P<year>\d{{4}})(?!\d)"),
)
_DATE_FIXABLE = re.compile(r"[OoDQIl|SsBZz]")
# A comma between digits is a dot the OCR read as one (typical tuning slip 257 in unseen faces: 2026.02.03
# came back as 2026.02,03 and the date was lost); fixed like a letter read for a digit.
_DATE_COMMA = re.compile(r"(?<=\d),(?=\d)")


class ParsedDate(NamedTuple):
    """A date found in a segment: the day, how many letters OCR reads for digits were fixed, and whether
    it was cut short: it pads its month with a 0 but ends on a one-digit day (2025/04/2). A slip prints
    both padded or neither, so the day's second digit was cut off at the box's end (faded or under glare,
    typical tuning slip 562: 2025/04/24 read as 2025/04/2)."""

    day: date
    substitutions: int
    cut_short: bool


def parse_date(segment: str) -> ParsedDate | None:
    """The date in 2025-03-27, 2025/03/27, 2025.03.27, 2025年03月27日, 20250327, Mar 27, 2025 or
    27 Mar 2025; None if none is valid.
    Letters the OCR reads for digits (2O25) and commas for dots are fixed, each a substitution."""
    text = to_halfwidth(segment)
    found = _find_date(text)
    if found is not None:
        return ParsedDate(found[0], 0, found[1])
    fixed = _DATE_FIXABLE.sub(lambda m: DIGIT_FOR.get(m.group(0).upper(), m.group(0)), text)
    fixed = _DATE_COMMA.sub(".", fixed)
    if fixed != text:
        found = _find_date(fixed)
        if found is not None:
            subs = sum(1 for a, b in zip(text, fixed, strict=True) if a != b)
            return ParsedDate(found[0], subs, found[1])
    return None


def _find_date(text: str) -> tuple[date, bool] | None:
    """The first date in text, and whether it was cut short (see ParsedDate)."""
    for rx in (_DATE, _DATE_COMPACT):
        m = rx.search(text)
        if m:
            try:
                day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                return None
            return day, m.group(2).startswith("0") and len(m.group(3)) == 1 and not text[m.end(3) :].strip()
    for rx in _DATE_EN:
        m = rx.search(text)
        if m:
            try:
                day = date(int(m["year"]), _MONTHS.index(m["mon"].lower()) + 1, int(m["day"]))
            except ValueError:
                return None
            return day, False
    return None


@dataclass(frozen=True, slots=True)
class ReasonTable:
    """The canonical reasons and every phrase (squashed) that means one of them, longest first."""

    canonical: tuple[str, ...]
    phrases: tuple[tuple[str, str], ...]  # (squashed phrase, canonical)

    @classmethod
    def build(cls, canonical: list[str], synonyms: dict[str, list[str]]) -> ReasonTable:
        pairs = {squash(r): r for r in canonical}
        for reason, words in synonyms.items():
            if reason in canonical:
                for w in words:
                    if squash(w):
                        pairs.setdefault(squash(w), reason)
        ordered = sorted(pairs.items(), key=lambda kv: -len(kv[0]))
        return cls(tuple(canonical), tuple(ordered))


@dataclass(frozen=True, slots=True)
class ReasonMatch:
    reason: str
    quality: float  # 1.0 canonical text, 0.97 a synonym, lower when fuzzy or ambiguous
    ambiguous: bool


# A reason phrase this long or longer is still known with its first character lost (a faint or cut first
# glyph on a hard photo: 与图片不符 read 片不符, 描述不符 read 述不符); the three or more left name one reason.
CUT_PHRASE = 4


def match_reason(segment: str, table: ReasonTable) -> ReasonMatch | None:
    """The canonical reason a slip's reason text means, even with details added ("少件 - 赠品未收到")."""
    text = squash(segment)
    if not text:
        return None
    hits: list[tuple[int, int, str, str]] = []  # (position, -length, phrase, canonical)
    for phrase, reason in table.phrases:
        pos = text.find(phrase)
        if pos >= 0:
            hits.append((pos, -len(phrase), phrase, reason))
    if hits:
        hits.sort()
        _, _, phrase, reason = hits[0]
        first_end = hits[0][0] - hits[0][1]
        # Another reason that does not sit inside the first match makes the slip ambiguous.
        others = {r for p, _, _, r in hits[1:] if r != reason and p >= first_end}
        quality = 1.0 if phrase == squash(reason) else 0.97
        if others:
            return ReasonMatch(reason, quality * 0.5, True)
        return ReasonMatch(reason, quality, False)
    return _near_reason(text, table)


def _near_reason(text: str, table: ReasonTable) -> ReasonMatch | None:
    """A reason the text names with one wrong character in a phrase of 3+ characters at its start; else with
    the first character of a phrase of CUT_PHRASE+ characters lost (片不符, 述不符 on hard photos). At a
    confidence a person confirms; ambiguous when two reasons are near."""
    fuzzy = [r for p, r in table.phrases if len(p) >= 3 and len(text) >= len(p) and hamming(text[: len(p)], p) == 1]
    cut = [r for p, r in table.phrases if len(p) >= CUT_PHRASE and text.startswith(p[1:])]
    for reasons in (fuzzy, cut):
        if reasons:
            return ReasonMatch(reasons[0], 0.35, True) if len(set(reasons)) > 1 else ReasonMatch(reasons[0], 0.7, False)
    return None


def opens_with_reason(segment: str, table: ReasonTable) -> bool:
    """Does the text start with one of the reasons' phrases, as at least half of it or ended by a space
    or punctuation ("尺码不对", "破损，外箱压扁", "故障 赠品未收到"), rather than name a reason inside a
    longer text (a remark)?"""
    printed = fold(segment).strip()
    text = "".join(printed.split())  # squash(segment): one character for each non-space one printed
    for whole, _ in table.phrases:
        phrase = whole if text.startswith(whole) or len(whole) < CUT_PHRASE else whole[1:]
        if not text.startswith(phrase):
            continue
        if 2 * len(phrase) >= len(text):
            return True
        seen = i = 0
        while seen < len(phrase):  # where the phrase ends in the text as printed
            seen += not printed[i].isspace()
            i += 1
        if not printed[i].isalnum():
            return True
    return False


def hamming(a: str, b: str) -> int:
    """Number of positions where two equally long strings differ."""
    return sum(1 for x, y in zip(a, b, strict=True) if x != y)
