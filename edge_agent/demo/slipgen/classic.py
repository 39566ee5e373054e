"""The first slip generator ("classic" style): four layouts, fixed labels; kept so old seeds give the same photos."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from edge_agent.demo.slipgen.code128 import render_code128, render_qr
from edge_agent.demo.slipgen.photo import background, place

log = logging.getLogger(__name__)

TIERS = ("clean", "typical", "hard")
DEFECTS = ("blur", "dark", "overexposed", "glare", "no_label")
FRAME_W, FRAME_H = 1600, 1200

# Debian fonts (fonts-wqy-microhei, fonts-wqy-zenhei, fonts-arphic-uming, fonts-arphic-ukai).
# Body fonts are the ones merchants' slip printers plausibly use; UKai (brush style) only for titles.
_FONT_DIRS = (
    Path("/usr/share/fonts/truetype/wqy"),
    Path("/usr/share/fonts/truetype/arphic"),
)
# Only the fonts this style was first drawn with: a font installed later must not change old seeds' photos.
_BODY_FONTS = ("wqy-microhei.ttc", "wqy-zenhei.ttc", "uming.ttc")
_TITLE_FONTS = (*_BODY_FONTS, "ukai.ttc")

REASONS = ("破损", "质量问题", "发错货", "七天无理由", "尺码不合适", "少件", "与描述不符", "过期/临期")
_REASON_DETAILS = {
    "破损": ("外包装压坏", "屏幕碎裂", "瓶身漏液"),
    "质量问题": ("开线", "无法开机", "异味"),
    "发错货": ("颜色不对", "型号不符"),
    "七天无理由": ("不喜欢", "拍多了"),
    "尺码不合适": ("偏小", "偏大一码"),
    "少件": ("赠品未收到", "缺配件", "少1件"),
    "与描述不符": ("材质不符", "色差大"),
    "过期/临期": ("临近保质期", "已过期"),
}
_LABELS = {
    "order_no": ("订单号", "订单编号", "Order No."),
    "customer_id": ("客户ID", "会员ID"),
    "sku": ("SKU", "商品编码", "货号"),
    "return_date": ("退货日期", "申请日期"),
    "quantity": ("数量", "退货数量"),
    "reason": ("退货原因", "原因"),
    "name": ("联系人", "姓名", "收件人"),
    "phone": ("电话", "手机", "联系电话"),
    "address": ("地址", "寄件地址", "退货地址"),
}
_TITLES = ("退货单", "退换货申请单", "退货申请单", "售后退货单", "退货登记单")
_SHOPS = (
    "优品生活旗舰店",
    "云朵家纺专营店",
    "极客数码官方店",
    "小鹿母婴自营",
    "山野户外",
    "悦己美妆",
    "鲜果时光",
    "北辰五金",
    "Lumi Home",
    "鞋柜 ShoeBox",
)
_NOTES = (
    "请将本单随商品一同寄回",
    "退货请保持商品完好，吊牌齐全",
    "客服热线 400-820-8820",
    "签收后3个工作日内退款",
    "仓库收货后请扫码登记",
    "本单一式两联",
)
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕"
_PROVINCES = (
    ("广东省", "深圳市", "南山区"),
    ("浙江省", "杭州市", "余杭区"),
    ("江苏省", "苏州市", "工业园区"),
    ("上海市", "上海市", "浦东新区"),
    ("北京市", "北京市", "朝阳区"),
    ("四川省", "成都市", "武侯区"),
)
_STREETS = ("科技园南路", "文一西路", "星湖街", "张江路", "建国路", "天府大道")


@dataclass(frozen=True, slots=True)
class TierSpec:
    """How hard a tier makes the photo."""

    rotation_deg: float
    perspective: float  # corner jitter as a fraction of the slip size
    fill: tuple[float, float]  # slip height as a fraction of the frame height
    light: float  # strength of the uneven-light gradient, 0-1
    blur_sigma: tuple[float, float]
    noise_sigma: float
    jpeg_quality: tuple[int, int]
    glare_p: float
    tape_p: float
    shadow_p: float


SPECS = {
    "clean": TierSpec(3.0, 0.01, (0.78, 0.9), 0.08, (0.0, 0.3), 1.5, (88, 95), 0.0, 0.0, 0.0),
    "typical": TierSpec(12.0, 0.04, (0.68, 0.86), 0.3, (0.4, 1.0), 3.0, (70, 85), 0.25, 0.25, 0.2),
    "hard": TierSpec(25.0, 0.08, (0.58, 0.8), 0.5, (0.9, 1.6), 5.0, (50, 68), 0.7, 0.5, 0.5),
}


@cache
def _font_path(name: str) -> Path | None:
    for d in _FONT_DIRS:
        p = d / name
        if p.exists():
            return p
    return None


def available_fonts(kind: str = "body") -> tuple[Path, ...]:
    """CJK fonts installed on this machine; raises RuntimeError naming the Debian packages when none is."""
    names = _BODY_FONTS if kind == "body" else _TITLE_FONTS
    found = tuple(p for p in (_font_path(n) for n in names) if p is not None)
    if not found:
        raise RuntimeError(
            "no CJK font found in "
            + ", ".join(str(d) for d in _FONT_DIRS)
            + ": expected fonts-wqy-microhei (apt-get install fonts-wqy-microhei)"
        )
    return found


@cache
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


# ---------------------------------------------------------------- field values


def _order_no(rng: random.Random, d: date) -> str:
    style = rng.randrange(3)
    if style == 0:  # Taobao/Tmall-style: 19 digits
        return str(rng.randrange(1, 10)) + "".join(rng.choice("0123456789") for _ in range(18))
    if style == 1:  # JD-style: 12 digits
        return str(rng.randrange(1, 10)) + "".join(rng.choice("0123456789") for _ in range(11))
    # Pinduoduo-style: yymmdd-15 digits
    return d.strftime("%y%m%d") + "-" + "".join(rng.choice("0123456789") for _ in range(15))


def _sku(rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    style = rng.randrange(3)
    if style == 0:
        return (
            rng.choice(letters)
            + rng.choice(letters)
            + "-"
            + str(rng.randrange(1000, 9999))
            + "-"
            + rng.choice(("BLK", "WHT", "RED", "BLU", "GRY"))
            + "-"
            + rng.choice(("S", "M", "L", "XL", "42"))
        )
    if style == 1:
        return "SKU" + "".join(rng.choice("0123456789") for _ in range(9))
    return rng.choice(letters) + str(rng.randrange(10000, 99999)) + "-" + f"{rng.randrange(1, 99):02d}"


def _customer_id(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return "C" + "".join(rng.choice("0123456789") for _ in range(10))
    if style == 1:
        return "VIP" + "".join(rng.choice("0123456789") for _ in range(8))
    return "U" + str(rng.randrange(10_000_000, 99_999_999))


def _date_text(rng: random.Random, d: date) -> str:
    style = rng.randrange(3)
    if style == 0:
        return d.strftime("%Y-%m-%d")
    if style == 1:
        return d.strftime("%Y/%m/%d")
    return f"{d.year}年{d.month:02d}月{d.day:02d}日"


def _truth(rng: random.Random) -> dict[str, Any]:
    d = date(2024, 1, 1) + timedelta(days=rng.randrange(0, 700))
    reason = rng.choice(REASONS)
    reason_text = reason
    if rng.random() < 0.3:
        reason_text = reason + rng.choice((" - ", "-", "：", "，")) + rng.choice(_REASON_DETAILS[reason])
    province, city, district = rng.choice(_PROVINCES)
    phone = "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))
    return {
        "order_no": _order_no(rng, d),
        "sku": _sku(rng),
        "quantity": rng.choice((1, 1, 1, 2, 2, 3, 4, 5, 6, 10, 12)),
        "reason": reason_text,
        "reason_category": reason,
        "customer_id": _customer_id(rng),
        "return_date": d.isoformat(),
        "return_date_text": _date_text(rng, d),
        "name": rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2)))),
        "phone": phone,
        "address": (
            province
            + ("" if province == city else city)
            + district
            + rng.choice(_STREETS)
            + f"{rng.randrange(1, 999)}号"
            + f"{rng.randrange(1, 30)}栋{rng.randrange(101, 2999)}室"
        ),
    }


# ---------------------------------------------------------------- slip layout


def _colon(rng: random.Random) -> str:
    return rng.choice(("：", ":", ": ", "： "))


def _render_slip(rng: random.Random, t: dict[str, Any]) -> tuple[Image.Image, str]:  # noqa: PLR0912, PLR0915
    # One drawing script per slip, top to bottom; splitting it would scatter the layout across functions.
    """The flat slip as the merchant printed it; returns the image and the layout name."""
    body_path = rng.choice(available_fonts("body"))
    size = rng.randrange(28, 38)
    font = _font(body_path, size)
    title_font = _font(rng.choice(available_fonts("title")), int(size * 1.5))
    small = _font(body_path, max(18, int(size * 0.75)))
    layout = rng.choice(("lines", "pairs", "table", "waybill"))
    landscape = layout in ("pairs", "table") and rng.random() < 0.6
    w = rng.randrange(1250, 1450) if landscape else rng.randrange(980, 1100)
    h = 2400  # cut to the content at the end
    paper = (rng.randrange(232, 246), rng.randrange(232, 246), rng.randrange(224, 244))
    img = Image.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(img)
    ink = rng.choice(((20, 20, 20), (40, 40, 50), (10, 30, 80)))
    margin = int(w * 0.06)
    y = margin

    def lab(key: str) -> str:
        return rng.choice(_LABELS[key])

    qty = str(t["quantity"]) + rng.choice(("", "", " 件", "件"))
    items = [
        (lab("order_no"), t["order_no"]),
        (lab("customer_id"), t["customer_id"]),
        (lab("sku"), t["sku"]),
        (lab("quantity"), qty),
        (lab("return_date"), t["return_date_text"]),
        (lab("reason"), t["reason"]),
    ]
    people = [(lab("name"), t["name"]), (lab("phone"), t["phone"]), (lab("address"), t["address"])]
    rng.shuffle(items)
    # The order number comes first on most real slips; keep that habit most of the time.
    if rng.random() < 0.7:
        items.sort(key=lambda kv: kv[1] != t["order_no"])

    # header: shop name, title, optional coloured band
    shop = rng.choice(_SHOPS)
    if rng.random() < 0.4:
        band = rng.choice(((200, 30, 40), (20, 90, 170), (230, 120, 20), (40, 40, 40)))
        draw.rectangle((0, 0, w, int(size * 2.4)), fill=band)
        draw.text((margin, int(size * 0.5)), shop, font=font, fill=(255, 255, 255))
        y = int(size * 3.0)
    else:
        draw.text((margin, y), shop, font=small, fill=ink)
        y += int(size * 1.3)
    title = rng.choice(_TITLES)
    tw = draw.textlength(title, font=title_font)
    draw.text(((w - tw) / 2, y), title, font=title_font, fill=ink)
    y += int(size * 2.2)

    module = 3 if w > 1000 else 2
    bar = render_code128(t["order_no"], module, int(size * 2.2))
    if bar.shape[1] > w - 2 * margin:
        bar = render_code128(t["order_no"], 2, int(size * 2.2))
    qr = render_qr(t["order_no"], 5) if rng.random() < 0.3 else None

    if layout == "waybill" or rng.random() < 0.5:
        img.paste(Image.fromarray(bar).convert("RGB"), (margin, y))
        y += bar.shape[0] + int(size * 0.4)
        if rng.random() < 0.5:
            draw.text((margin + 10 * module, y), t["order_no"], font=small, fill=ink)
            y += int(size * 1.2)
        bar_placed = True
    else:
        bar_placed = False
    y += int(size * 0.5)

    line_h = int(size * rng.uniform(1.6, 1.9))
    if layout in ("lines", "waybill"):
        for k, v in items:
            draw.text((margin, y), k + _colon(rng) + v, font=font, fill=ink)
            y += line_h
    elif layout == "pairs":
        col2 = margin + int((w - 2 * margin) * 0.52)
        pairs = [items[i : i + 2] for i in range(0, len(items), 2)]
        for pair in pairs:
            x = margin
            for k, v in pair:
                text = k + _colon(rng) + v
                if draw.textlength(text, font=font) > col2 - margin - size and x == margin:
                    draw.text((x, y), text, font=font, fill=ink)
                    y += line_h
                    x = margin
                    continue
                draw.text((x, y), text, font=font, fill=ink)
                x = col2
            if x != margin:
                y += line_h
    else:  # table with ruled cells
        col_w = (w - 2 * margin) // 2
        label_w = int(size * 5.2)
        row_h = int(size * 1.9)
        col = 0  # 1 when the left half of the current row is taken
        for k, v in items:
            if draw.textlength(v, font=font) > col_w - label_w - 10:  # too wide for a half row: a whole row
                if col:
                    y += row_h
                    col = 0
                x0, x1 = margin, w - margin
            else:
                x0 = margin + col * col_w
                x1 = x0 + col_w
            draw.rectangle((x0, y, x1, y + row_h), outline=ink, width=2)
            draw.line((x0 + label_w, y, x0 + label_w, y + row_h), fill=ink, width=2)
            draw.text((x0 + 8, y + (row_h - size) // 2), k, font=font, fill=ink)
            draw.text((x0 + label_w + 10, y + (row_h - size) // 2), v, font=font, fill=ink)
            if x1 == w - margin or col:
                y += row_h
                col = 0
            else:
                col = 1
        if col:
            y += row_h
        y += int(size * 0.6)

    y += int(size * 0.4)
    draw.line((margin, y, w - margin, y), fill=ink, width=1)
    y += int(size * 0.5)
    if rng.random() < 0.5:  # name and phone on one line
        (k1, v1), (k2, v2), (k3, v3) = people
        draw.text((margin, y), k1 + _colon(rng) + v1 + "    " + k2 + _colon(rng) + v2, font=small, fill=ink)
        y += int(small.size * 1.6)
        draw.text((margin, y), k3 + _colon(rng) + v3, font=small, fill=ink)
        y += int(small.size * 1.6)
    else:
        for k, v in people:
            draw.text((margin, y), k + _colon(rng) + v, font=small, fill=ink)
            y += int(small.size * 1.6)

    if not bar_placed:
        img.paste(Image.fromarray(bar).convert("RGB"), (margin, y + int(size * 0.4)))
        y += bar.shape[0] + int(size * 0.8)
    y += int(size * 0.6)
    note_y = y
    if qr is not None:
        img.paste(Image.fromarray(qr).convert("RGB"), (w - margin - qr.shape[1], y))
        y += qr.shape[0] - int(small.size)
    draw.text((margin, note_y), rng.choice(_NOTES), font=small, fill=ink)
    y += int(small.size) + margin
    # The paper ends below the content, as a slip printer cuts it.
    img = img.crop((0, 0, w, min(h, y)))
    return img, layout


# ---------------------------------------------------------------- photo simulation


# the classic style's five surfaces (the diverse style adds cardboard); kept so its photos stay byte-identical
CLASSIC_SURFACES = ((95, 95, 98), (70, 105, 140), (45, 45, 50), (70, 115, 75), (140, 140, 135))


def _light_field(rng: random.Random, strength: float) -> NDArray[Any]:
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    lin = np.cos(a) * (xx / FRAME_W - 0.5) + np.sin(a) * (yy / FRAME_H - 0.5)
    cx, cy = rng.uniform(0, FRAME_W), rng.uniform(0, FRAME_H)
    rad = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / FRAME_W
    field = 1.0 - strength * (0.6 * (lin + 0.5) + 0.4 * np.clip(rad, 0, 1))
    out: NDArray[Any] = field * rng.uniform(0.9, 1.02)
    return out


def _add_glare(rng: random.Random, img: NDArray[Any], quad: NDArray[Any], strong: bool) -> None:
    t = rng.uniform(0.15, 0.85)
    u = rng.uniform(0.15, 0.85)
    top = quad[0] + (quad[1] - quad[0]) * t
    bottom = quad[3] + (quad[2] - quad[3]) * t
    cx, cy = top + (bottom - top) * u
    rx = rng.uniform(60, 140) * (2.0 if strong else 1)
    ry = rx * rng.uniform(0.4, 0.9)
    yy, xx = np.ogrid[0:FRAME_H, 0:FRAME_W]
    d2 = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    blob = np.exp(-d2 * 1.5).astype(np.float32)
    if strong:  # a blown-out patch, not just a sheen
        blob = np.minimum(blob * 2.5, 1.0)
    # A glossy slip washes out towards white; partial glare leaves the ink faintly visible.
    peak = 1.0 if strong else rng.uniform(0.45, 0.7)
    img += (255 - img) * (blob * peak)[..., None]


def _add_tape(rng: random.Random, img: NDArray[Any], quad: NDArray[Any]) -> None:
    t0, t1 = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)
    p0 = quad[0] + (quad[3] - quad[0]) * t0
    p1 = quad[1] + (quad[2] - quad[1]) * t1
    width = rng.uniform(35, 70)
    mask = np.zeros((FRAME_H, FRAME_W), np.uint8)
    cv2.line(mask, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 255, int(width))
    m = cv2.GaussianBlur(mask, (0, 0), 2).astype(np.float32)[..., None] / 255
    tint = np.array([rng.uniform(215, 245), rng.uniform(225, 245), rng.uniform(225, 250)], np.float32)
    # clear tape: a faint tint plus a sheen, not an opaque strip
    img[:] = img * (1 - 0.18 * m) + tint * 0.18 * m + 12 * m


def _add_shadow(rng: random.Random, img: NDArray[Any]) -> None:
    mask = np.zeros((FRAME_H, FRAME_W), np.uint8)
    x = rng.randrange(0, FRAME_W)
    pts = np.array(
        [
            [x, 0],
            [x + rng.randrange(200, 600), 0],
            [x + rng.randrange(-200, 400), FRAME_H],
            [x - rng.randrange(100, 400), FRAME_H],
        ],
        np.int32,
    )
    cv2.fillPoly(mask, [pts], 255)
    m = cv2.GaussianBlur(mask, (0, 0), 40).astype(np.float32)[..., None] / 255
    img *= 1 - rng.uniform(0.2, 0.4) * m


def generate_classic(
    seed: int, tier: str = "typical", defect: str | None = None
) -> tuple[NDArray[Any], dict[str, Any]]:
    """A camera-like BGR photo (1600x1200) of a return slip and its ground truth.

    The truth holds order_no, sku, quantity (int), reason (as printed), reason_category, customer_id,
    return_date (ISO), return_date_text (as printed), name, phone, address, plus tier, layout and
    label_quad (the slip's corners tl, tr, br, bl in the photo). `defect` makes a photo the quality
    gate must refuse: blur, dark, overexposed, glare or no_label.
    """
    if tier not in SPECS:
        raise ValueError(f"generate_slip: tier: expected one of {', '.join(TIERS)}, got {tier!r}")
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"generate_slip: defect: expected one of {', '.join(DEFECTS)}, got {defect!r}")
    spec = SPECS[tier]
    rng = random.Random(f"{tier}:{seed}")  # noqa: S311 - reproducible test data, not secrets
    nrng = np.random.default_rng(rng.randrange(2**32))
    truth = _truth(rng)
    slip, layout = _render_slip(rng, truth)
    slip_bgr = cv2.cvtColor(np.asarray(slip), cv2.COLOR_RGB2BGR)
    sh, sw = slip_bgr.shape[:2]
    quad = place(rng, sw, sh, spec)
    frame = background(nrng, CLASSIC_SURFACES)
    if defect != "no_label":
        src = np.array([[0, 0], [sw - 1, 0], [sw - 1, sh - 1], [0, sh - 1]], np.float32)
        m = cv2.getPerspectiveTransform(src, quad)
        warped = cv2.warpPerspective(slip_bgr, m, (FRAME_W, FRAME_H), flags=cv2.INTER_AREA).astype(np.float32)
        mask = cv2.warpPerspective(np.full((sh, sw), 255, np.uint8), m, (FRAME_W, FRAME_H))
        a = mask.astype(np.float32)[..., None] / 255
        frame = frame * (1 - a) + warped * a
    if rng.random() < spec.shadow_p:
        _add_shadow(rng, frame)
    frame *= _light_field(rng, spec.light)[..., None]
    if defect != "no_label" and rng.random() < spec.tape_p:
        _add_tape(rng, frame, quad)
    if defect != "no_label" and (defect == "glare" or rng.random() < spec.glare_p):
        _add_glare(rng, frame, quad, strong=defect == "glare")
    if defect == "dark":
        frame *= 0.12
    elif defect == "overexposed":
        frame = frame * 1.9 + 90
    sigma = 7.0 if defect == "blur" else rng.uniform(*spec.blur_sigma)
    if sigma > 0.05:
        frame = cv2.GaussianBlur(frame, (0, 0), sigma)
    frame += nrng.normal(0, spec.noise_sigma, frame.shape).astype(np.float32)
    out = np.clip(frame, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, rng.randrange(*spec.jpeg_quality)])
    if not ok:
        raise RuntimeError("generate_slip: JPEG encoding failed")
    photo = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert photo is not None  # noqa: S101 - we just encoded it
    truth.update(
        tier=tier,
        seed=seed,
        layout=layout,
        defect=defect,
        label_quad=[[round(float(x), 1), round(float(y), 1)] for x, y in quad],
    )
    return photo.astype(np.uint8), truth
