"""What a diverse slip says: the six fields in many platforms' formats, label wordings, and fake noise text."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

FIELDS = ("order_no", "sku", "quantity", "reason", "customer_id", "return_date")

DIGITS = "0123456789"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Letters and digits that OCR confuses; SKUs draw from them on purpose so both readings occur.
CONFUSABLE = "0O1I5S8B2Z6G"

REASONS = ("破损", "质量问题", "发错货", "七天无理由", "尺码不合适", "少件", "与描述不符", "过期/临期")
# How a slip may word each reason: the canonical name, a phrase from config/reasons.toml, or the name
# inside a longer phrase. Only wordings that a site's reason list already covers: the reason list is
# site configuration, and this evaluation is about reading, not about guessing a merchant's vocabulary.
_REASON_WORDINGS = {
    "破损": ("破损", "商品破损", "包装破损", "损坏", "压坏", "破损/压坏"),
    "质量问题": ("质量问题", "商品质量问题", "有瑕疵", "故障", "质量问题(开线)"),
    "发错货": ("发错货", "商家发错货", "发错商品", "错发"),
    "七天无理由": ("七天无理由", "7天无理由", "七天无理由退货", "7天无理由退货", "无理由退货"),
    "尺码不合适": ("尺码不合适", "尺码不符", "尺寸不合适", "尺码不对"),
    "少件": ("少件", "少件/漏发", "漏发", "缺件", "少发"),
    "与描述不符": ("与描述不符", "实物与描述不符", "描述不符", "与图片不符"),
    "过期/临期": ("过期/临期", "过期", "临期", "临期商品"),
}
_REASON_DETAILS = ("屏幕碎裂", "外箱压扁", "无法开机", "颜色不对", "偏小", "赠品未收到", "色差大", "临近保质期")

# Label wordings per field: a keyword, often inside a longer label. Open-ended on purpose: each core
# combines with its own prefixes and suffixes, so most printed labels are in no synonym list.
# (core, weight, prefixes, suffixes)
_LABELS: dict[str, tuple[tuple[str, int, tuple[str, ...], tuple[str, ...]], ...]] = {
    "order_no": (
        (
            "订单号",
            5,
            ("原", "平台", "交易", "销售", "网店", "原始", "关联", "退货"),
            ("", "(平台)", "/Order No.", "码"),
        ),
        ("订单编号", 3, ("原", "平台", "交易", "销售"), ("", "(平台)")),
        ("Order No.", 1, (), ()),
        ("ORDER ID", 1, (), ()),
        ("Order#", 1, (), ()),
    ),
    "sku": (
        ("SKU", 4, ("商品", "退货", "产品", "退货商品"), ("", "码", "编码", "编号", " ID", "号")),
        ("商品编码", 3, ("退货",), ("", "(SKU)", "/SKU")),
        ("货号", 2, ("商品", "产品", "款式"), ("", "/SKU", "(SKU)")),
        ("商品编号", 1, ("退货",), ("", "/Item No.")),
        ("Item Code", 1, (), ()),
        ("物料编码", 1, (), ("", "/SKU")),
    ),
    "quantity": (
        ("数量", 6, ("退货", "退回", "申请", "商品", "实退", "退货商品"), ("", "(件)", "/Qty", "(个)", "(PCS)")),
        ("件数", 1, ("退货", "商品"), ("",)),
        ("Qty", 1, (), ()),
        ("QTY", 1, (), ()),
    ),
    "reason": (
        ("原因", 3, ("退货", "退款", "售后", "申请", "退换货", "问题"), ("", "说明", "/Reason", "类型")),
        ("退货原因", 4, ("客户", "买家"), ("", "说明", "/Reason")),
        ("理由", 1, ("退货", "退款", "申请"), ("",)),
        ("Reason", 1, (), ()),
    ),
    "customer_id": (
        ("客户ID", 2, ("平台",), ("", "(会员)")),
        ("会员ID", 2, ("平台", "买家"), ("",)),
        ("客户编号", 2, ("",), ("", "/ID")),
        ("会员号", 1, ("平台",), ("",)),
        ("用户ID", 1, ("",), ("",)),
        ("买家ID", 1, ("平台",), ("",)),
        ("Customer ID", 1, (), ()),
    ),
    "return_date": (
        ("日期", 3, ("退货", "申请", "售后申请", "登记", "寄回", "退回"), ("", "/Date", "(年月日)")),
        ("退货日期", 3, ("",), ("", "/Date")),
        ("申请时间", 1, ("售后", "退货"), ("",)),
        ("退货时间", 1, ("",), ("",)),
        ("Date", 1, (), ()),
    ),
}

COURIERS = (("顺丰速运", "SF"), ("中通快递", "ZTO"), ("圆通速递", "YT"), ("韵达快递", "YD"), ("京东物流", "JDV"))
SHOPS = (
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
    "南山茶叶铺",
    "九号宠物用品",
    "橙子童装",
    "简木家居",
)
TITLES = ("退货单", "退换货申请单", "退货申请单", "售后退货单", "退货登记单", "退货凭证", "售后服务单", "RETURN SLIP")
NOTES = (
    "请将本单随商品一同寄回",
    "退货请保持商品完好，吊牌齐全",
    "签收后3个工作日内退款",
    "仓库收货后请扫码登记",
    "本单一式两联，请妥善保管",
    "到付件拒收，请选择寄付",
    "如有疑问请联系在线客服",
    "易碎品请加固包装",
)
PRODUCTS = (
    "男士纯棉短袖T恤 白色 L",
    "儿童保温杯 500ml 粉色",
    "蓝牙耳机 Pro 2代",
    "真丝枕套 2只装",
    "不锈钢炒锅 32cm",
    "瑜伽垫 加厚10mm",
    "无线鼠标 M330 静音",
    "有机绿茶 250g 罐装",
    "猫粮 成猫 2kg",
    "女士运动鞋 37码",
)
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚华玉萍红玲芬燕"
_PLACES = (
    ("广东省", "深圳市", "南山区"),
    ("浙江省", "杭州市", "余杭区"),
    ("江苏省", "苏州市", "工业园区"),
    ("上海市", "上海市", "浦东新区"),
    ("北京市", "北京市", "朝阳区"),
    ("四川省", "成都市", "武侯区"),
    ("湖北省", "武汉市", "洪山区"),
    ("山东省", "青岛市", "黄岛区"),
)
_STREETS = ("科技园南路", "文一西路", "星湖街", "张江路", "建国路", "天府大道", "光谷大道", "长江路")


@dataclass(frozen=True, slots=True)
class SlipContent:
    """Everything a diverse slip prints, with the six fields' truth."""

    order_no: str
    platform: str
    sku: str
    quantity: int
    quantity_text: str
    reason: str
    reason_category: str
    customer_id: str
    return_date: date
    return_date_text: str
    labels: dict[str, str]  # field -> printed label (without the colon)
    name: str  # fake, printed masked or in full
    phone: str  # fake, printed masked or in full
    address: str  # fake
    waybill: str
    courier: str
    product: str
    amount: str
    shop: str
    title: str
    note: str
    extras: list[tuple[str, str]] = field(default_factory=list)  # (label, value) noise lines


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randrange(1, 10)) + "".join(rng.choice(DIGITS) for _ in range(n - 1))


def order_no(rng: random.Random, d: date) -> tuple[str, str]:  # noqa: PLR0911 - one return per platform
    """An order number in one of several platforms' formats; returns (value, platform)."""
    platform = rng.choice(("taobao", "jd", "pdd", "amazon", "douyin", "vip", "merchant", "suning", "shopify"))
    if platform == "taobao":  # 18-19 digits
        return _digits(rng, rng.choice((18, 19))), platform
    if platform == "jd":  # 11-13 digits
        return _digits(rng, rng.choice((11, 12, 13))), platform
    if platform == "pdd":  # yymmdd-15 digits
        return d.strftime("%y%m%d") + "-" + "".join(rng.choice(DIGITS) for _ in range(15)), platform
    if platform == "amazon":  # 3-7-7 digits
        return f"{_digits(rng, 3)}-{''.join(rng.choice(DIGITS) for _ in range(7))}-{_digits(rng, 7)}", platform
    if platform == "douyin":  # 19 digits starting with 6 or 4
        return rng.choice("46") + "".join(rng.choice(DIGITS) for _ in range(18)), platform
    if platform == "vip":  # yymmdd + 8-10 digits
        return d.strftime("%y%m%d") + "".join(rng.choice(DIGITS) for _ in range(rng.choice((8, 10)))), platform
    if platform == "suning":  # 11 digits with a letter prefix
        return rng.choice(("SN", "")) + _digits(rng, 11), platform
    if platform == "shopify":  # #1001-style with a shop prefix
        return rng.choice(("SO", "WO", "ORD")) + str(rng.randrange(1000, 999999)), platform
    # a merchant's own ERP: prefix, date and a running number
    prefix = rng.choice(("RT", "TH", "DD", "SO", "XS", "OR"))
    sep = rng.choice(("", "-", ""))
    return f"{prefix}{d.strftime('%Y%m%d')}{sep}{rng.randrange(1, 99999):05d}", "merchant"


def sku(rng: random.Random) -> str:  # noqa: PLR0911 - one return per format
    """A SKU: letters and digits (confusables included on purpose), several lengths and separators."""
    style = rng.randrange(7)
    if style == 0:  # AB-1234-BLK-M
        return "-".join(
            (
                rng.choice(UPPER) + rng.choice(UPPER),
                str(rng.randrange(1000, 9999)),
                rng.choice(("BLK", "WHT", "RED", "BLU", "GRY", "OLV", "BOX")),
                rng.choice(("S", "M", "L", "XL", "42", "O1")),
            )
        )
    if style == 1:  # mixed block where 0/O, 1/I, 5/S, 8/B are all legal: K0O1I8
        n = rng.randrange(6, 11)
        return "".join(rng.choice(UPPER + DIGITS + CONFUSABLE * 2) for _ in range(n))
    if style == 2:  # SKU + digits
        return rng.choice(("SKU", "SP", "P", "")) + "".join(rng.choice(DIGITS) for _ in range(rng.randrange(7, 13)))
    if style == 3:  # letter + digits with another separator
        sep = rng.choice(("-", "_", "/", "."))
        return rng.choice(UPPER) + str(rng.randrange(10000, 99999)) + sep + f"{rng.randrange(1, 99):02d}"
    if style == 4:  # groups of mixed characters
        sep = rng.choice(("-", "-", "_"))
        return sep.join(
            "".join(rng.choice(UPPER + DIGITS + CONFUSABLE) for _ in range(rng.randrange(3, 6)))
            for _ in range(rng.randrange(2, 4))
        )
    if style == 5:  # EAN-like 13 digits
        return "69" + "".join(rng.choice(DIGITS) for _ in range(11))
    # short model code: 2-3 letters, digits, letter suffix
    return (
        "".join(rng.choice(UPPER) for _ in range(rng.randrange(2, 4)))
        + str(rng.randrange(10, 9999))
        + rng.choice(UPPER)
    )


def customer_id(rng: random.Random) -> str:
    """A customer or member id in one of several formats."""
    style = rng.randrange(6)
    if style == 0:
        return "C" + "".join(rng.choice(DIGITS) for _ in range(10))
    if style == 1:
        return "VIP" + "".join(rng.choice(DIGITS) for _ in range(8))
    if style == 2:
        return "U" + str(rng.randrange(10_000_000, 99_999_999))
    if style == 3:
        return rng.choice(("M", "KH", "HY")) + "".join(rng.choice(DIGITS) for _ in range(rng.randrange(6, 12)))
    if style == 4:
        return _digits(rng, rng.randrange(8, 12))
    return f"KH-{rng.randrange(2019, 2026)}-{rng.randrange(1, 99999):05d}"


def date_text(rng: random.Random, d: date) -> str:  # noqa: PLR0911 - one return per format
    """The date as a slip prints it, in one of several formats (some with a time)."""
    style = rng.randrange(8)
    if style == 0:
        return d.strftime("%Y-%m-%d")
    if style == 1:
        return d.strftime("%Y/%m/%d")
    if style == 2:
        return f"{d.year}年{d.month:02d}月{d.day:02d}日"
    if style == 3:
        return f"{d.year}年{d.month}月{d.day}日"
    if style == 4:
        return d.strftime("%Y.%m.%d")
    if style == 5:
        return f"{d.year}-{d.month}-{d.day}"
    hh, mm, ss = rng.randrange(0, 24), rng.randrange(0, 60), rng.randrange(0, 60)
    if style == 6:
        return d.strftime("%Y-%m-%d") + f" {hh:02d}:{mm:02d}:{ss:02d}"
    return d.strftime("%Y/%m/%d") + f" {hh:02d}:{mm:02d}"


def quantity_text(rng: random.Random, n: int) -> str:
    """A quantity with or without a unit: 2, 2件, 2 件, 2个, 2pcs, 2 PCS, x2."""
    return rng.choice(
        (str(n), str(n), f"{n}件", f"{n} 件", f"{n}个", f"{n}pcs", f"{n} PCS", f"x{n}", f"{n}件/pcs", f"共{n}件")
    )


def label_for(rng: random.Random, key: str) -> str:
    """An open-ended label for a field: the keyword, often with other characters around it."""
    options = _LABELS[key]
    core, _, prefixes, suffixes = rng.choices(options, weights=[o[1] for o in options])[0]
    if prefixes and rng.random() < 0.5:
        core = rng.choice(prefixes) + core
    if suffixes and rng.random() < 0.35:
        core += rng.choice(suffixes)
    return core


def style_label(rng: random.Random, label: str) -> str:
    """Typographic variation: full-width Latin, spaces between characters, brackets."""
    r = rng.random()
    if r < 0.12:  # full-width Latin letters and digits
        label = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in label)
    elif r < 0.24 and len(label) <= 5 and not label.isascii():  # 订 单 号
        label = " ".join(label)
    elif r < 0.3:
        label = rng.choice(("【{}】", "[{}]", "{}")).format(label)
    return label


def colon(rng: random.Random) -> str:
    """The separator after a label: full- or half-width colon, with or without a space, or none."""
    return rng.choice(("：", ":", ": ", "： ", " :", " ", "："))


def fake_name(rng: random.Random) -> str:
    """A made-up Chinese name (random surname + given name), never a real person's data."""
    return rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2))))


def masked_name(rng: random.Random, name: str) -> str:
    return name[0] + "*" * (len(name) - 1) if rng.random() < 0.7 else name


def fake_phone(rng: random.Random) -> str:
    """A made-up mobile number (random digits)."""
    return "1" + rng.choice("3456789") + "".join(rng.choice(DIGITS) for _ in range(9))


def masked_phone(rng: random.Random, phone: str) -> str:
    return phone[:3] + "****" + phone[-4:] if rng.random() < 0.7 else phone


def fake_address(rng: random.Random) -> str:
    """A made-up address: a real district with a random street number and flat."""
    province, city, district = rng.choice(_PLACES)
    return (
        province
        + ("" if province == city else city)
        + district
        + rng.choice(_STREETS)
        + f"{rng.randrange(1, 999)}号"
        + (f"{rng.randrange(1, 30)}栋{rng.randrange(101, 2999)}室" if rng.random() < 0.6 else "")
    )


def content(rng: random.Random) -> SlipContent:
    """Draw one slip's content."""
    d = date(2024, 1, 1) + timedelta(days=rng.randrange(0, 900))
    order, platform = order_no(rng, d)
    category = rng.choice(REASONS)
    reason = rng.choice(_REASON_WORDINGS[category])
    if rng.random() < 0.25:
        reason += rng.choice((" - ", "-", "，", " ")) + rng.choice(_REASON_DETAILS)
    qty = rng.choice((1, 1, 1, 2, 2, 3, 4, 5, 6, 8, 10, 12, 20))
    courier, prefix = rng.choice(COURIERS)
    name = fake_name(rng)
    phone = fake_phone(rng)
    labels = {k: label_for(rng, k) for k in FIELDS}
    c = SlipContent(
        order_no=order,
        platform=platform,
        sku=sku(rng),
        quantity=qty,
        quantity_text=quantity_text(rng, qty),
        reason=reason,
        reason_category=category,
        customer_id=customer_id(rng),
        return_date=d,
        return_date_text=date_text(rng, d),
        labels=labels,
        name=name,
        phone=phone,
        address=fake_address(rng),
        waybill=prefix + "".join(rng.choice(DIGITS) for _ in range(rng.choice((12, 13, 15)))),
        courier=courier,
        product=rng.choice(PRODUCTS),
        amount=f"¥{rng.randrange(9, 2999)}.{rng.choice(('00', '90', '50', '99'))}",
        shop=rng.choice(SHOPS),
        title=rng.choice(TITLES),
        note=rng.choice(NOTES),
    )
    extras = [
        (rng.choice(("商品名称", "品名", "商品")), c.product),
        (rng.choice(("退货人", "联系人", "寄件人")), masked_name(rng, name)),
        (rng.choice(("电话", "手机", "联系电话")), masked_phone(rng, phone)),
        (rng.choice(("地址", "寄件地址", "退货地址")), c.address),
        (rng.choice(("快递单号", "运单号", "物流单号")), c.waybill),
        (rng.choice(("退款金额", "金额", "实付")), c.amount),
    ]
    if rng.random() < 0.4:
        extras.append(("备注", rng.choice(("无", "请尽快处理", "已与客服沟通", "外箱完好", "含赠品1件"))))
    rng.shuffle(extras)
    keep = rng.randrange(2, len(extras) + 1)
    c.extras.extend(extras[:keep])
    return c
