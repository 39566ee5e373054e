"""Merchant layouts for diverse slips: each draws a SlipContent onto flat paper and says what it drew."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from edge_agent.demo.slipgen.code128 import render_code128, render_qr
from edge_agent.demo.slipgen.values import FIELDS, SlipContent, colon, style_label

# Every CJK font Debian packages here (.ci/apt-packages.txt). A fixed list, so a seed draws the same
# font on every machine; a missing one is an error naming its package rather than a silently other photo.
FONTS: tuple[tuple[str, str, int], ...] = (  # (path, Debian package, face index in a .ttc)
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "fonts-wqy-microhei", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", "fonts-wqy-zenhei", 0),
    ("/usr/share/fonts/truetype/arphic/uming.ttc", "fonts-arphic-uming", 0),
    ("/usr/share/fonts/truetype/arphic/ukai.ttc", "fonts-arphic-ukai", 0),
    ("/usr/share/fonts/truetype/arphic-gbsn00lp/gbsn00lp.ttf", "fonts-arphic-gbsn00lp", 0),
    ("/usr/share/fonts/truetype/arphic-gkai00mp/gkai00mp.ttf", "fonts-arphic-gkai00mp", 0),
    ("/usr/share/fonts/truetype/lxgw-wenkai/LXGWWenKai-Regular.ttf", "fonts-lxgw-wenkai", 0),
    ("/usr/share/fonts/truetype/lxgw-wenkai/LXGWWenKaiMono-Regular.ttf", "fonts-lxgw-wenkai", 0),
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "fonts-noto-cjk", 2),  # SC face
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", "fonts-noto-cjk", 2),
    ("/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc", "fonts-noto-cjk", 2),
)
# Faces of the same packages that no rule of the reader was tuned on (fonts="unseen"): other weights, the
# monospaced and bitmap-like cuts, Japanese and Taiwanese glyph forms. A test of fonts the reader never saw.
UNSEEN_FONTS: tuple[tuple[str, str, int], ...] = (
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "fonts-wqy-microhei", 1),  # Micro Hei Mono
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", "fonts-wqy-zenhei", 1),  # Zen Hei Mono
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", "fonts-wqy-zenhei", 2),  # Zen Hei Sharp
    ("/usr/share/fonts/truetype/arphic/uming.ttc", "fonts-arphic-uming", 2),  # UMing TW
    ("/usr/share/fonts/truetype/arphic/ukai.ttc", "fonts-arphic-ukai", 2),  # UKai TW
    ("/usr/share/fonts/truetype/lxgw-wenkai/LXGWWenKai-Bold.ttf", "fonts-lxgw-wenkai", 0),
    ("/usr/share/fonts/truetype/lxgw-wenkai/LXGWWenKai-Light.ttf", "fonts-lxgw-wenkai", 0),
    ("/usr/share/fonts/truetype/lxgw-wenkai/LXGWWenKaiMono-Bold.ttf", "fonts-lxgw-wenkai", 0),
    ("/usr/share/fonts/truetype/lxgw-wenkai/LXGWWenKaiMono-Light.ttf", "fonts-lxgw-wenkai", 0),
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "fonts-noto-cjk", 0),  # JP face
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "fonts-noto-cjk", 7),  # Sans Mono SC
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", "fonts-noto-cjk", 7),  # Sans Mono SC Bold
    ("/usr/share/fonts/opentype/noto/NotoSerifCJK-Bold.ttc", "fonts-noto-cjk", 2),  # Serif SC Bold
)
FONT_SETS = {"seen": FONTS, "unseen": UNSEEN_FONTS}

LAYOUTS = ("colon_lines", "two_per_line", "grid", "header_table", "stacked", "waybill", "thermal")


def check_fonts() -> None:
    """Raise RuntimeError naming the Debian packages of the fonts that are missing."""
    missing = sorted({pkg for path, pkg, _ in (*FONTS, *UNSEEN_FONTS) if not Path(path).exists()})
    if missing:
        raise RuntimeError(
            "slipgen: CJK fonts missing: expected the Debian packages " + ", ".join(missing) + " (apt-get install them)"
        )


Font = tuple[str, str, int]  # an entry of FONTS or UNSEEN_FONTS


@cache
def _font(font: Font, size: int) -> ImageFont.FreeTypeFont:
    path, _, face = font
    return ImageFont.truetype(path, size, index=face)


@cache
def _cmap(font: Font) -> frozenset[int]:
    from fontTools.ttLib import TTCollection, TTFont

    path, _, face = font
    tt = TTCollection(path).fonts[face] if path.endswith(".ttc") else TTFont(path, lazy=True)
    return frozenset(tt.getBestCmap())


def covers(font: Font, text: str) -> bool:
    """Whether the font draws every character of text (no tofu boxes in the truth's slips)."""
    cmap = _cmap(font)
    return all(ord(c) in cmap or c.isspace() for c in text)


def font_name(font: Font) -> str:
    """The file's name; for an unseen face of a file that holds others in the lists, with its index."""
    path, _, face = font
    shared = any(p == path and f != face for p, _, f in (*FONTS, *UNSEEN_FONTS))
    return f"{Path(path).name}#{face}" if shared and font not in FONTS else Path(path).name


@dataclass
class Pen:
    """Font, ink and paper for one slip, and the drawing surface."""

    rng: random.Random
    face: Font
    size: int
    ink: tuple[int, int, int]
    img: Image.Image
    draw: ImageDraw.ImageDraw
    w: int
    margin: int
    codes: list[dict[str, str]]

    def font(self, scale: float = 1.0) -> ImageFont.FreeTypeFont:
        return _font(self.face, max(12, int(self.size * scale)))

    def width(self, text: str, scale: float = 1.0) -> float:
        return float(self.draw.textlength(text, font=self.font(scale)))

    def text(
        self, xy: tuple[float, float], text: str, scale: float = 1.0, fill: tuple[int, int, int] | None = None
    ) -> None:
        self.draw.text(xy, text, font=self.font(scale), fill=fill or self.ink)

    def fit(self, text: str, max_w: float, scale: float = 1.0) -> float:
        """The largest scale <= scale at which text fits into max_w pixels."""
        while scale > 0.45 and self.width(text, scale) > max_w:
            scale *= 0.92
        return scale

    def paste(self, arr: NDArray[Any], xy: tuple[int, int]) -> None:
        self.img.paste(Image.fromarray(arr).convert("RGB"), xy)

    def hline(self, y: float, x0: float, x1: float, dashed: bool = False, width: int = 2) -> None:
        if dashed:
            x = x0
            while x < x1:
                self.draw.line((x, y, min(x1, x + 12), y), fill=self.ink, width=width)
                x += 20
        else:
            self.draw.line((x0, y, x1, y), fill=self.ink, width=width)


def _items(c: SlipContent, rng: random.Random) -> list[tuple[str, str, str]]:
    """(field or "", label as printed, value) for the six fields and the noise lines, in slip order."""
    values = {
        "order_no": c.order_no,
        "sku": c.sku,
        "quantity": c.quantity_text,
        "reason": c.reason,
        "customer_id": c.customer_id,
        "return_date": c.return_date_text,
    }
    fields = [(k, style_label(rng, c.labels[k]), values[k]) for k in FIELDS]
    rng.shuffle(fields)
    if rng.random() < 0.7:  # most slips print the order number first
        fields.sort(key=lambda t: t[0] != "order_no")
    noise = [("", lab, val) for lab, val in c.extras]
    out = fields + noise
    if rng.random() < 0.5:  # noise mixed in between the fields
        rng.shuffle(out)
    return out


@dataclass(frozen=True, slots=True)
class Drawn:
    """A rendered flat slip and what is on it."""

    image: Image.Image
    layout: str
    font: str
    barcodes: tuple[dict[str, str], ...]  # {"format", "text", "role"}
    printed_labels: dict[str, str]


def _barcode(pen: Pen, text: str, max_w: int, height_scale: float = 2.0) -> NDArray[Any]:
    for module in (3, 2):
        bar = render_code128(text, module, int(pen.size * height_scale))
        if bar.shape[1] <= max_w:
            return bar
    return render_code128(text, 2, int(pen.size * height_scale))


def _header(pen: Pen, c: SlipContent, y: int) -> int:
    w, margin = pen.w, pen.margin
    rng = pen.rng
    if rng.random() < 0.35:
        band = rng.choice(((200, 30, 40), (20, 90, 170), (230, 120, 20), (40, 40, 40)))
        pen.draw.rectangle((0, y - margin // 2, w, y + int(pen.size * 1.9)), fill=band)
        pen.text((margin, y), c.shop, fill=(255, 255, 255))
        y += int(pen.size * 2.5)
    else:
        pen.text((margin, y), c.shop, 0.8)
        y += int(pen.size * 1.3)
    scale = pen.fit(c.title, w - 2 * margin, 1.5)
    tw = pen.width(c.title, scale)
    pen.text(((w - tw) / 2, y), c.title, scale)
    return y + int(pen.size * scale * 1.6)


def _order_barcode(pen: Pen, c: SlipContent, y: int) -> int:
    w, margin, codes = pen.w, pen.margin, pen.codes
    bar = _barcode(pen, c.order_no, w - 2 * margin)
    x = margin if pen.rng.random() < 0.6 else (w - bar.shape[1]) // 2
    pen.paste(bar, (x, y))
    codes.append({"format": "Code128", "text": c.order_no, "role": "order_no"})
    y += bar.shape[0] + 4
    if pen.rng.random() < 0.5:  # human-readable line under the bars
        pen.text((x + 20, y), c.order_no, 0.7)
        y += int(pen.size * 0.9)
    return y + int(pen.size * 0.5)


def _footer(pen: Pen, c: SlipContent, y: int) -> int:
    w, margin, codes = pen.w, pen.margin, pen.codes
    y += int(pen.size * 0.4)
    pen.hline(y, margin, w - margin, dashed=pen.rng.random() < 0.5, width=1)
    y += int(pen.size * 0.5)
    note_y = y
    if pen.rng.random() < 0.3:
        qr = render_qr(c.order_no, 4 if w < 800 else 5)
        if qr.shape[1] < w // 3:
            pen.paste(qr, (w - margin - qr.shape[1], y))
            codes.append({"format": "QRCode", "text": c.order_no, "role": "order_no"})
            y += qr.shape[0]
    pen.text((margin, note_y), c.note, pen.fit(c.note, w * 0.6 - margin, 0.75))
    return max(y, note_y + int(pen.size * 1.2)) + margin


def _colon_lines(pen: Pen, c: SlipContent, y: int, items: list[tuple[str, str, str]]) -> int:
    w, margin = pen.w, pen.margin
    rng = pen.rng
    line_h = int(pen.size * rng.uniform(1.45, 1.9))
    aligned = rng.random() < 0.4  # labels padded to a column, values aligned
    label_w = max(pen.width(lab) for _, lab, _ in items) + pen.size * 0.6
    for key, lab, val in items:
        scale = 1.0 if key else rng.choice((0.8, 0.9, 1.0))
        if aligned:
            pen.text((margin, y), lab + colon(rng).strip(), scale)
            vs = pen.fit(val, w - 2 * margin - label_w, scale)
            pen.text((margin + label_w, y), val, vs)
        else:
            text = lab + colon(rng) + val
            pen.text((margin, y), text, pen.fit(text, w - 2 * margin, scale))
        y += int(line_h * max(scale, 0.85))
    return y


def _two_per_line(pen: Pen, c: SlipContent, y: int, items: list[tuple[str, str, str]]) -> int:
    w, margin = pen.w, pen.margin
    rng = pen.rng
    line_h = int(pen.size * rng.uniform(1.5, 1.9))
    col2 = margin + int((w - 2 * margin) * rng.uniform(0.48, 0.56))
    gap = pen.size
    queue = list(items)
    while queue:
        _key, lab, val = queue.pop(0)
        text = lab + colon(rng) + val
        if pen.width(text) > col2 - margin - gap or not queue:
            pen.text((margin, y), text, pen.fit(text, w - 2 * margin))
            y += line_h
            continue
        pen.text((margin, y), text)
        _k2, l2, v2 = queue[0]
        t2 = l2 + colon(rng) + v2
        if pen.width(t2) <= w - margin - col2:
            queue.pop(0)
            pen.text((col2, y), t2)
        y += line_h
    return y


def _grid(pen: Pen, c: SlipContent, y: int, items: list[tuple[str, str, str]]) -> int:
    w, margin = pen.w, pen.margin
    rng = pen.rng
    cols = 2 if w > 1150 and rng.random() < 0.7 else 1
    col_w = (w - 2 * margin) // cols
    label_w = int(max(pen.width(lab, 0.9) for _, lab, _ in items) + pen.size * 0.8)
    label_w = min(label_w, col_w // 2)
    row_h = int(pen.size * rng.uniform(1.7, 2.1))
    shade = rng.random() < 0.5
    col = 0
    for _key, lab, val in items:
        wide = cols == 2 and pen.width(val) > col_w - label_w - 16
        if wide and col:
            y += row_h
            col = 0
        x0 = margin + col * col_w
        x1 = w - margin if wide else x0 + col_w
        if shade:
            pen.draw.rectangle((x0, y, x0 + label_w, y + row_h), fill=(215, 215, 215))
        pen.draw.rectangle((x0, y, x1, y + row_h), outline=pen.ink, width=2)
        pen.draw.line((x0 + label_w, y, x0 + label_w, y + row_h), fill=pen.ink, width=2)
        ls = pen.fit(lab, label_w - 12, 0.9)
        pen.text((x0 + 6, y + (row_h - pen.size * ls) / 2), lab, ls)
        vs = pen.fit(val, x1 - x0 - label_w - 16)
        pen.text((x0 + label_w + 8, y + (row_h - pen.size * vs) / 2), val, vs)
        if wide or cols == 1 or col == 1:
            y += row_h
            col = 0
        else:
            col = 1
    if col:
        y += row_h
    return y + int(pen.size * 0.6)


def _header_table(pen: Pen, c: SlipContent, y: int, items: list[tuple[str, str, str]]) -> int:
    """Labels in a header row, values in the row under them."""
    w, margin = pen.w, pen.margin
    rng = pen.rng
    ncols = 3 if w > 1150 else 2
    col_w = (w - 2 * margin) / ncols
    row_h = int(pen.size * 1.8)
    for start in range(0, len(items), ncols):
        chunk = items[start : start + ncols]
        for i, (_key, lab, val) in enumerate(chunk):
            x0 = margin + i * col_w
            pen.draw.rectangle((x0, y, x0 + col_w, y + row_h), outline=pen.ink, width=2)
            pen.draw.rectangle((x0, y + row_h, x0 + col_w, y + 2 * row_h), outline=pen.ink, width=2)
            ls = pen.fit(lab, col_w - 12, 0.85)
            lw = pen.width(lab, ls)
            lx = x0 + (col_w - lw) / 2 if rng.random() < 0.5 else x0 + 6
            pen.text((lx, y + (row_h - pen.size * ls) / 2), lab, ls)
            vs = pen.fit(val, col_w - 12)
            pen.text((x0 + 6, y + row_h + (row_h - pen.size * vs) / 2), val, vs)
        y += 2 * row_h + int(pen.size * 0.3)
    return y + int(pen.size * 0.4)


def _stacked(pen: Pen, c: SlipContent, y: int, items: list[tuple[str, str, str]]) -> int:
    """A small label above its value, in one or two columns."""
    w, margin = pen.w, pen.margin
    rng = pen.rng
    cols = 2 if w > 1150 else 1
    col_w = (w - 2 * margin) / cols
    grey = tuple(min(255, v + 90) for v in pen.ink)
    col = 0
    for _key, lab, val in items:
        x0 = margin + col * col_w
        ls = 0.7
        pen.text((x0, y), lab + (colon(rng).strip() if rng.random() < 0.3 else ""), ls, fill=grey)  # type: ignore[arg-type]
        vs = pen.fit(val, col_w - pen.size, 1.1)
        pen.text((x0, y + pen.size * 0.95), val, vs)
        col += 1
        if col == cols:
            col = 0
            y += int(pen.size * 2.6)
    if col:
        y += int(pen.size * 2.6)
    return y


def _waybill(pen: Pen, c: SlipContent, y: int, items: list[tuple[str, str, str]]) -> int:
    """A courier waybill: the waybill barcode big, sender/receiver boxes, then the return block."""
    w, margin, codes = pen.w, pen.margin, pen.codes
    rng = pen.rng
    pen.text((margin, y), c.courier, 1.2)
    pen.text((w - margin - pen.width("退货件", 1.0), y), "退货件")
    y += int(pen.size * 1.8)
    bar = _barcode(pen, c.waybill, w - 2 * margin, 2.6)
    pen.paste(bar, ((w - bar.shape[1]) // 2, y))
    codes.append({"format": "Code128", "text": c.waybill, "role": "waybill"})
    y += bar.shape[0] + 4
    spaced = " ".join(c.waybill[i : i + 4] for i in range(0, len(c.waybill), 4))
    pen.text(((w - pen.width(spaced, 0.8)) / 2, y), spaced, 0.8)
    y += int(pen.size * 1.3)
    box_h = int(pen.size * 3.4)
    for who, name, addr in (
        ("收", "售后仓 退货组", "浙江省杭州市余杭区仓前街道 退货中心"),
        ("寄", c.name[0] + "**", c.address),
    ):
        pen.draw.rectangle((margin, y, w - margin, y + box_h), outline=pen.ink, width=2)
        pen.text((margin + 8, y + 8), who, 1.3)
        pen.text((margin + pen.size * 2, y + 6), name + "  " + c.phone[:3] + "****" + c.phone[-4:], 0.8)
        pen.text((margin + pen.size * 2, y + 6 + pen.size), addr, pen.fit(addr, w - 2 * margin - pen.size * 2.5, 0.75))
        y += box_h
    y += int(pen.size * 0.5)
    if rng.random() < 0.7:
        y = _order_barcode(pen, c, y)
    inner = rng.choice((_colon_lines, _two_per_line))
    return inner(pen, c, y, items)


def _thermal(pen: Pen, c: SlipContent, y: int, items: list[tuple[str, str, str]]) -> int:
    """A narrow receipt-printer slip: dashed rules, values wrapped under long labels."""
    w, margin = pen.w, pen.margin
    rng = pen.rng
    line_h = int(pen.size * 1.45)
    pen.hline(y, margin, w - margin, dashed=True)
    y += int(pen.size * 0.6)
    for _key, lab, val in items:
        text = lab + colon(rng) + val
        if pen.width(text) <= w - 2 * margin:
            pen.text((margin, y), text)
        else:
            pen.text((margin, y), lab + colon(rng).strip())
            y += line_h
            pen.text((margin + pen.size, y), val, pen.fit(val, w - 2 * margin - pen.size))
        y += line_h
    pen.hline(y, margin, w - margin, dashed=True)
    return y + int(pen.size * 0.6)


def render(rng: random.Random, c: SlipContent, layout: str | None = None, fonts: str = "seen") -> Drawn:
    """Draw the slip: returns the flat image (RGB) and what is on it. fonts: "seen" draws from FONTS, the
    faces the reader was tuned on; "unseen" from UNSEEN_FONTS."""
    check_fonts()
    layout = layout or rng.choice(LAYOUTS)
    items = _items(c, rng)
    all_text = (
        "".join(lab + val for _, lab, val in items)
        + c.shop
        + c.title
        + c.note
        + c.courier
        + c.address
        + "：:*退货件收寄"
    )
    # only fonts that draw every character (the GB2312 fonts lack ¥): no tofu boxes in a slip with a truth
    face = rng.choice([f for f in FONT_SETS[fonts] if covers(f, all_text)])
    if layout == "thermal":
        w = rng.choice((576, 640))  # 80 mm at 203 dpi, or a wider roll
        size = rng.randrange(24, 30)
    elif layout in ("grid", "header_table", "two_per_line", "stacked") and rng.random() < 0.6:
        w = rng.randrange(1250, 1450)
        size = rng.randrange(28, 38)
    else:
        w = rng.randrange(940, 1100)
        size = rng.randrange(26, 36)
    paper = (rng.randrange(230, 250), rng.randrange(230, 250), rng.randrange(222, 246))
    img = Image.new("RGB", (w, 3200), paper)
    ink = rng.choice(((20, 20, 20), (40, 40, 50), (10, 30, 80), (60, 30, 30))) if layout != "thermal" else (35, 35, 35)
    margin = int(w * rng.uniform(0.04, 0.08))
    codes: list[dict[str, str]] = []
    pen = Pen(rng, face, size, ink, img, ImageDraw.Draw(img), w, margin, codes)
    y = _header(pen, c, margin)
    if layout == "waybill":
        y = _waybill(pen, c, y, items)
    else:
        top_bar = rng.random() < 0.6
        if top_bar:
            y = _order_barcode(pen, c, y)
        draw: dict[str, Callable[..., int]] = {
            "colon_lines": _colon_lines,
            "two_per_line": _two_per_line,
            "grid": _grid,
            "header_table": _header_table,
            "stacked": _stacked,
            "thermal": _thermal,
        }
        y = draw[layout](pen, c, y, items)
        if not top_bar:
            y = _order_barcode(pen, c, y + int(size * 0.5))
    if rng.random() < 0.15 and layout != "thermal":  # a small SKU barcode, as warehouse labels carry
        bar = render_code128(c.sku, 2, int(size * 1.4))
        if bar.shape[1] < w - 2 * margin:
            pen.paste(bar, (w - margin - bar.shape[1], y))
            codes.append({"format": "Code128", "text": c.sku, "role": "sku"})
            y += bar.shape[0] + 4
    y = _footer(pen, c, y)
    img = img.crop((0, 0, w, min(img.height, y)))
    labels = {k: lab for k, lab, _ in items if k}
    return Drawn(img, layout, font_name(face), tuple(codes), labels)


def as_array(img: Image.Image) -> NDArray[Any]:
    return np.asarray(img)
