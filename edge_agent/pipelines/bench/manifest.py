"""The expected-returns manifest: which orders may come back, with which SKUs and how many; CSV or JSON."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from edge_agent.errors import EdgeAgentError
from edge_agent.files import atomic_write

log = logging.getLogger(__name__)

MAX_PROBLEMS = 20
CENTRAL_NAMES = ("manifest.json", "manifest.csv")
COLUMNS = ("order_no", "sku", "quantity", "customer_id", "order_date")


class ManifestError(EdgeAgentError):
    """A manifest file cannot be used; `problems` holds one message per problem (where, expected, got), the
    first MAX_PROBLEMS of `count` in all."""

    def __init__(self, problems: list[str], count: int | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.count = len(problems) if count is None else count

    def summary(self, shown: int = 1) -> str:
        """The first `shown` problems on one line, and how many more bad rows there are in all."""
        return " ".join(filter(None, ["; ".join(self.problems[:shown]), self.more(shown)]))

    def more(self, shown: int) -> str:
        """The "(and N more bad rows)" past the first `shown` problems, or "" when they are all."""
        n = self.count - min(shown, len(self.problems))
        return f"(and {n} more bad row{'s' * (n != 1)})" if n > 0 else ""


@dataclass(frozen=True, slots=True)
class Order:
    order_no: str
    items: dict[str, int]  # SKU -> quantity ordered
    customer_id: str | None = None
    order_date: date | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    orders: dict[str, Order]
    source: str
    sha256: str

    def get(self, order_no: str) -> Order | None:
        return self.orders.get(order_no.strip().upper())


def _rows_from_json(data: Any, src: str) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) pairs from either a list of rows or {"orders": [{..., "items": [...]}]}."""
    if isinstance(data, dict) and isinstance(data.get("orders"), list):
        rows = []
        for i, order in enumerate(data["orders"]):
            where = f"{src}: orders[{i}]"
            if not isinstance(order, dict) or not isinstance(order.get("items"), list):
                raise ManifestError([f"{where}: expected a table with order_no and a list of items"])
            for j, item in enumerate(order["items"]):
                if not isinstance(item, dict):
                    raise ManifestError([f"{where}.items[{j}]: expected a table with sku and quantity, got {item!r}"])
                row = {k: v for k, v in order.items() if k != "items"} | item
                rows.append((f"{where}.items[{j}]", row))
        return rows
    if isinstance(data, list):
        return [(f"{src}: [{i}]", row) for i, row in enumerate(data)]
    raise ManifestError([f"{src}: expected a JSON list of rows or an object with orders, got {type(data).__name__}"])


def parse_manifest(data: bytes, source: str = "manifest") -> Manifest:
    """Parse manifest bytes (JSON if they start with [ or {, else CSV with a header row)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError([f"{source}: expected UTF-8 text, got undecodable bytes at offset {exc.start}"]) from None
    stripped = text.lstrip()
    if stripped[:1] in ("[", "{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError([f"{source}: not valid JSON: {exc}"]) from None
        rows = _rows_from_json(parsed, source)
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in COLUMNS[:3] if c not in header]
            if missing:
                raise ManifestError(
                    [
                        f"{source}: header: expected columns order_no, sku, quantity "
                        f"(optional customer_id, order_date), missing {', '.join(missing)}"
                    ]
                )
            rows = [
                (f"{source}: line {i + 2}", {k.strip(): v for k, v in row.items() if k}) for i, row in enumerate(reader)
            ]
        except csv.Error as exc:
            raise ManifestError([f"{source}: line {reader.line_num}: not valid CSV: {exc}"]) from None
    return _build(rows, source, hashlib.sha256(data).hexdigest())


def _parse_row(where: str, row: Any) -> tuple[str, str, int, str | None, date | None] | str:  # noqa: PLR0911
    """(order_no, sku, quantity, customer_id, order_date) of one row, or the problem with it."""
    if not isinstance(row, dict):
        return f"{where}: expected a table with order_no, sku and quantity, got {row!r}"
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        return f"{where}: {unknown[0]}: unknown column (expected {', '.join(COLUMNS)})"
    order_no = str(row.get("order_no") or "").strip().upper()
    sku = str(row.get("sku") or "").strip().upper()
    if not order_no:
        return f"{where}: order_no: expected an order number, got {row.get('order_no')!r}"
    if not sku:
        return f"{where}: sku: expected a SKU, got {row.get('sku')!r}"
    qty_raw = row.get("quantity")
    try:
        qty = int(str(qty_raw).strip()) if not isinstance(qty_raw, bool | float) else -1
    except ValueError:
        qty = -1
    if qty < 1:
        return f"{where}: quantity: expected an integer >= 1, got {qty_raw!r}"
    customer = str(row.get("customer_id") or "").strip().upper() or None
    od_raw = str(row.get("order_date") or "").strip()
    try:
        od = date.fromisoformat(od_raw) if od_raw else None
    except ValueError:
        return f"{where}: order_date: expected a date YYYY-MM-DD, got {od_raw!r}"
    return order_no, sku, qty, customer, od


def _build(rows: list[tuple[str, dict[str, Any]]], source: str, digest: str) -> Manifest:
    problems: list[str] = []  # the first MAX_PROBLEMS; `count` counts every bad row, so "and N more" is true
    count = 0
    orders: dict[str, Order] = {}
    for where, row in rows:
        parsed = _parse_row(where, row)
        if isinstance(parsed, str):
            count += 1
            if len(problems) < MAX_PROBLEMS:
                problems.append(parsed)
            continue
        order_no, sku, qty, customer, od = parsed
        prev = orders.get(order_no)
        if prev is None:
            orders[order_no] = Order(order_no, {sku: qty}, customer, od)
            continue
        if customer and prev.customer_id and customer != prev.customer_id:
            count += 1
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"{where}: customer_id: order {order_no} already has another customer_id")
            continue
        items = dict(prev.items)
        items[sku] = items.get(sku, 0) + qty  # the same SKU on two lines of one order
        orders[order_no] = Order(order_no, items, prev.customer_id or customer, prev.order_date or od)
    if problems:
        raise ManifestError(problems, count)
    return Manifest(orders, source, digest)


def load_manifest(path: str | Path) -> Manifest:
    """Read a CSV or JSON manifest file; ManifestError with one message per problem."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ManifestError([f"{p}: manifest file not found"]) from None
    except OSError as exc:
        raise ManifestError([f"{p}: cannot read: {exc}"]) from None
    return parse_manifest(data, str(p))


def replace_manifest(state_dir: Path, data: bytes) -> Manifest:
    """Validate a manifest sent by central and make it the active one (atomically); the old one stays on error."""
    manifest = parse_manifest(data, "central manifest")
    name = "manifest.json" if data.decode("utf-8-sig").lstrip()[:1] in ("[", "{") else "manifest.csv"
    target = Path(state_dir) / name
    atomic_write(target, data, mode=0o600)
    for other in CENTRAL_NAMES:
        if other != name:
            (Path(state_dir) / other).unlink(missing_ok=True)
    log.info("manifest replaced from central: %s orders, sha256 %s", len(manifest.orders), manifest.sha256[:12])
    return Manifest(manifest.orders, str(target), manifest.sha256)


def configured_path(configured: Path | None, config_source: Path | None) -> Path | None:
    """bench.validation.manifest as a file: a relative path is taken from the config file's folder."""
    if configured is not None and not configured.is_absolute() and config_source is not None:
        return config_source.parent / configured
    return configured


def sent_by_central(state_dir: Path) -> Path | None:
    """The manifest file central sent, in the state dir, if there is one: it wins over the configured file."""
    return next((p for p in (Path(state_dir) / name for name in CENTRAL_NAMES) if p.exists()), None)


def active_manifest(state_dir: Path | None, configured: Path | None) -> Manifest | None:
    """The manifest central sent (in the state dir) if any, else the configured file, else None."""
    sent = sent_by_central(state_dir) if state_dir is not None else None
    if sent is not None:
        return load_manifest(sent)
    if configured is not None:
        return load_manifest(configured)
    return None
