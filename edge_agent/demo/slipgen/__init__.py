"""Synthetic return-slip photos with exact ground truth, for tests, the demo and the OCR benchmark.

Two styles:

* ``classic`` (the default of ``generate_slip``, unchanged photos for existing seeds): four layouts and
  fixed label wordings. The reader was first tuned on it, so it proves little about unseen slips.
* ``diverse`` (``generate_slip(seed, tier, style="diverse")``, the benchmark and
  ``python -m edge_agent.demo.slipgen``): built to resemble slips the project has never seen.

Diverse slips
-------------
Content (``values.py``), drawn from ``random.Random(f"slip:{seed}")``, so one seed is the same slip
in every tier and only the photo differs:

* order numbers of several platforms: Taobao/Tmall (18-19 digits), JD (11-13), Pinduoduo
  (yymmdd-15 digits), Amazon (3-7-7 digits), Douyin (19), Vipshop (yymmdd + 8/10), Suning (SN + 11),
  shop systems (SO/WO/ORD + digits) and merchants' ERPs (RT20240115-00321);
* SKUs mixing letters and digits, with the confusable pairs 0/O, 1/I, 5/S, 8/B, 2/Z, 6/G all legal,
  lengths 4-20 and separators - _ / .; EAN-like 13-digit codes;
* customer ids in six formats, quantities with or without 件/个/pcs/x, dates in eight formats (some
  with a time), reasons worded as the site's reason list allows (name, listed phrase, name inside a
  longer phrase, with a detail appended);
* labels open-ended: a keyword (订单号, SKU, 数量, 原因, 客户ID, 日期, ...) with prefixes and suffixes
  (平台订单号, 退货SKU码, 实退数量(件), 售后申请日期/Date), full-width Latin, spaces between the
  characters (订 单 号), brackets, colon full/half width or none;
* noise: shop, title, product, waybill number and courier, amount, remark, and a fake sender (random
  name, often masked as 王**; random mobile number, often masked as 138****1234; a real district with a
  random street number). No real person's data.

Layouts (``layouts.py``): ``colon_lines`` (label：value, sometimes value-aligned), ``two_per_line``,
``grid`` (ruled label|value cells, one or two pairs a row, shaded label cells), ``header_table``
(labels in a header row, values in the cells under them), ``stacked`` (small grey label above its
value), ``waybill`` (courier waybill: waybill barcode, sender/receiver boxes, then the return block),
``thermal`` (576-640 px receipt roll, dashed rules, long values wrapped under their label). Fonts: every
CJK font in .ci/apt-packages.txt (WenQuanYi Micro Hei/Zen Hei, AR PL UMing/UKai, AR PL SungtiL/KaitiM
GB, LXGW WenKai and its mono, Noto Sans/Serif CJK SC), each slip in one that draws all its
characters. Barcodes: the order number as Code 128 on every slip except 30 % of waybills (which carry
their own number), plus sometimes a QR of it, a waybill Code 128 (``role: waybill``) or a small SKU
Code 128 (``role: sku``); the truth lists each with its role.

Tiers (``photo.py``), drawn from ``random.Random(f"photo:{tier}:{seed}")``:

* ``clean``: rotation within 3 deg, slight perspective, slip fills 80-92 % of the frame height; at
  most one mild augraphy paper/ink effect (InkBleed, BrightnessTexturize, SubtleNoise, NoiseTexturize,
  ColorPaper); albumentations brightness/contrast, gentle illumination gradient, blur sigma <= 0.4,
  JPEG 88-95.
* ``typical``: rotation within 12 deg, more perspective, 70-88 % fill; up to two augraphy effects
  (also low-ink lines, mottling, dirty drum, bleed-through, noisy lines, lighting gradient);
  clear tape 25 %, glare (augraphy ReflectedLight on the slip) 30 %, shadow 25 %, dim light 20 %, Gaussian
  blur 0.4-1.0, ISO and Gaussian noise, JPEG 70-88.
* ``hard``: rotation within 25 deg, strong perspective, 60-82 % fill; up to three augraphy effects;
  tape 50 %, glare 70 % (larger), shadow 50 %, dim light 50 %, motion blur, defocus or Gaussian blur
  0.8-1.6, more noise, JPEG 50-70.

Splits: seeds 0-999,999 are the TUNING split (look at them, tune on them; tests use seeds below
1000), seeds from 1,000,000 are the HELD-OUT split, for ``benchmarks/bench_ocr.py`` only: nobody
looks at those photos while tuning.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.demo.slipgen.classic import DEFECTS, FRAME_H, FRAME_W, TIERS, available_fonts, generate_classic
from edge_agent.demo.slipgen.code128 import code128_values, render_code128
from edge_agent.demo.slipgen.values import FIELDS, REASONS

if TYPE_CHECKING:
    from edge_agent.demo.slipgen.layouts import Drawn
    from edge_agent.demo.slipgen.values import SlipContent

__all__ = [
    "DEFECTS",
    "FIELDS",
    "FRAME_H",
    "FRAME_W",
    "REASONS",
    "SPLITS",
    "STYLES",
    "TIERS",
    "available_fonts",
    "code128_values",
    "draw_slip",
    "encode_png",
    "field_truth",
    "generate_slip",
    "render_code128",
    "split_of",
    "split_seeds",
]

STYLES = ("classic", "diverse")
HELD_OUT_BASE = 1_000_000
SPLITS = {"tune": (0, HELD_OUT_BASE), "heldout": (HELD_OUT_BASE, 2**31)}


def split_of(seed: int) -> str:
    """The split a seed belongs to: "tune" (0-999,999) or "heldout" (1,000,000 and up)."""
    if seed < 0:
        raise ValueError(f"slipgen: seed: expected 0 or more, got {seed}")
    return "tune" if seed < HELD_OUT_BASE else "heldout"


def split_seeds(split: str, n: int, start: int = 0) -> range:
    """n consecutive seeds of a split, from its first seed + start."""
    if split not in SPLITS:
        raise ValueError(f"slipgen: split: expected one of {', '.join(SPLITS)}, got {split!r}")
    lo, hi = SPLITS[split]
    if start < 0 or lo + start + n > hi:
        raise ValueError(f"slipgen: seeds {lo + start}..{lo + start + n - 1} fall outside the {split} split")
    return range(lo + start, lo + start + n)


def field_truth(truth: dict[str, Any]) -> dict[str, Any]:
    """The six fields as the reader should return them (reason as its category, date as ISO)."""
    return {
        "order_no": truth["order_no"],
        "sku": truth["sku"],
        "quantity": truth["quantity"],
        "reason": truth["reason_category"],
        "customer_id": truth["customer_id"],
        "return_date": truth["return_date"],
    }


def draw_slip(seed: int, layout: str | None = None, fonts: str = "seen") -> tuple[Drawn, SlipContent]:
    """The diverse slip of a seed as printed (flat, before any photo effect), and its content. fonts "unseen"
    draws it in faces the reader was never tuned on (layouts.UNSEEN_FONTS); the rest of the slip is the same."""
    from edge_agent.demo.slipgen import layouts, values

    crng = random.Random(f"slip:{seed}")  # noqa: S311 - reproducible test data, not secrets
    content = values.content(crng)
    return layouts.render(crng, content, layout, fonts), content


def _generate_diverse(
    seed: int, tier: str, defect: str | None, layout: str | None, fonts: str
) -> tuple[NDArray[Any], dict[str, Any]]:
    from edge_agent.demo.slipgen import photo

    drawn, content = draw_slip(seed, layout, fonts)
    prng = random.Random(f"photo:{tier}:{seed}")  # noqa: S311
    img, how = photo.photograph(prng, np.asarray(drawn.image), tier, drawn.layout == "thermal", defect)
    truth: dict[str, Any] = {
        "order_no": content.order_no,
        "sku": content.sku,
        "quantity": content.quantity,
        "quantity_text": content.quantity_text,
        "reason": content.reason,
        "reason_category": content.reason_category,
        "customer_id": content.customer_id,
        "return_date": content.return_date.isoformat(),
        "return_date_text": content.return_date_text,
        "name": content.name,
        "phone": content.phone,
        "address": content.address,
        "waybill": content.waybill,
        "platform": content.platform,
        "labels": drawn.printed_labels,
        "barcodes": [dict(b) for b in drawn.barcodes],
        "font": drawn.font,
        "fonts": fonts,
        "style": "diverse",
        "tier": tier,
        "seed": seed,
        "split": split_of(seed),
        "layout": drawn.layout,
        "defect": defect,
        **how,
    }
    return img, truth


def generate_slip(
    seed: int,
    tier: str = "typical",
    defect: str | None = None,
    *,
    style: str = "classic",
    layout: str | None = None,
    fonts: str = "seen",
) -> tuple[NDArray[Any], dict[str, Any]]:
    """A camera-like BGR photo (1600x1200) of a return slip and its ground truth; the same for the same arguments.

    The truth holds order_no, sku, quantity (int), reason (as printed), reason_category, customer_id,
    return_date (ISO), return_date_text (as printed), name, phone, address, plus tier, seed, layout,
    defect and label_quad (the slip's corners tl, tr, br, bl in the photo). The diverse style adds
    quantity_text, labels (field -> printed label), barcodes ({format, text, role}), platform, font,
    fonts, waybill, split and effects. `defect` makes a photo the quality gate must refuse: blur, dark,
    overexposed, glare or no_label. `layout` (diverse only) forces one of layouts.LAYOUTS. `fonts` (diverse
    only) "unseen" draws the slip in faces no rule of the reader was tuned on.
    """
    if tier not in TIERS:
        raise ValueError(f"generate_slip: tier: expected one of {', '.join(TIERS)}, got {tier!r}")
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"generate_slip: defect: expected one of {', '.join(DEFECTS)}, got {defect!r}")
    if style == "classic":
        if layout is not None or fonts != "seen":
            raise ValueError("generate_slip: layout, fonts: only the diverse style takes them")
        return generate_classic(seed, tier, defect)
    if style != "diverse":
        raise ValueError(f"generate_slip: style: expected one of {', '.join(STYLES)}, got {style!r}")
    from edge_agent.demo.slipgen.layouts import FONT_SETS, LAYOUTS

    if fonts not in FONT_SETS:
        raise ValueError(f"generate_slip: fonts: expected one of {', '.join(FONT_SETS)}, got {fonts!r}")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"generate_slip: layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    return _generate_diverse(seed, tier, defect, layout, fonts)


def encode_png(img: NDArray[Any]) -> bytes:
    """Lossless PNG bytes, so every reader of a written slip sees the same pixels."""
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("slipgen: PNG encoding failed")
    return bytes(buf)
