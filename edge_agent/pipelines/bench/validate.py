"""Field validation: format rules per field, and the expected-returns manifest when there is one."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

from edge_agent.pipelines.bench.fields import FieldValue, Issue, Template
from edge_agent.pipelines.bench.manifest import Manifest
from edge_agent.pipelines.bench.normalize import ReasonTable
from edge_agent.pipelines.bench.rules_config import ValidationConfig


def check_formats(
    values: Mapping[str, FieldValue], template: Template, rules: ValidationConfig, reasons: ReasonTable, today: date
) -> list[Issue]:
    """Rules that need no manifest: patterns, quantity range, reason on the list, date within the window."""
    issues = []
    for spec in template.fields:
        fv = values.get(spec.name)
        if fv is None or fv.value is None:
            continue
        v = fv.value
        if spec.kind == "code" and not spec.pattern.fullmatch(str(v)):
            issues.append(Issue("bad_format", spec.name, f"{spec.name}: {str(v)[:40]!r} does not match the pattern"))
    qty = _int(values, "quantity")
    if qty is not None and not 1 <= qty <= rules.max_quantity:
        issues.append(
            Issue("quantity_out_of_range", "quantity", f"quantity: expected 1-{rules.max_quantity}, got {qty}")
        )
    reason = _str(values, "reason")
    if reason is not None and reason not in reasons.canonical:
        issues.append(Issue("unknown_reason", "reason", f"reason: {reason!r} is not on the configured list"))
    d = _date(values)
    if d is not None:
        if d > today:
            issues.append(Issue("date_in_future", "return_date", f"return_date: {d} is after today ({today})"))
        elif d < today - timedelta(days=rules.return_window_days):
            issues.append(
                Issue(
                    "date_outside_window",
                    "return_date",
                    f"return_date: {d} is more than {rules.return_window_days} days before today ({today})",
                )
            )
    elif _str(values, "return_date") is not None:
        issues.append(Issue("bad_format", "return_date", "return_date: expected YYYY-MM-DD"))
    return issues


def check_manifest(values: Mapping[str, FieldValue], manifest: Manifest) -> list[Issue]:
    """The order exists, the SKU belongs to it, no more are returned than were ordered, same customer."""
    order_no = _str(values, "order_no")
    if order_no is None:
        return []
    order = manifest.get(order_no)
    if order is None:
        return [Issue("unknown_order", "order_no", f"order_no: {order_no} is not in the expected-returns manifest")]
    issues = []
    sku = _str(values, "sku")
    ordered = None
    if sku is not None:
        ordered = order.items.get(sku.upper())
        if ordered is None:
            issues.append(Issue("sku_not_in_order", "sku", f"sku: {sku} is not part of order {order_no}"))
    qty = _int(values, "quantity")
    if qty is not None and ordered is not None and qty > ordered:
        issues.append(Issue("quantity_over_ordered", "quantity", f"quantity: {qty} returned but {ordered} ordered"))
    customer = _str(values, "customer_id")
    if customer is not None and order.customer_id is not None and customer.upper() != order.customer_id:
        issues.append(
            Issue("customer_mismatch", "customer_id", f"customer_id: does not match the customer of order {order_no}")
        )
    d = _date(values)
    if d is not None and order.order_date is not None and d < order.order_date:
        issues.append(
            Issue("date_before_order", "return_date", f"return_date: {d} is before the order date {order.order_date}")
        )
    return issues


def validate_fields(
    values: Mapping[str, FieldValue],
    template: Template,
    rules: ValidationConfig,
    reasons: ReasonTable,
    *,
    manifest: Manifest | None,
    today: date,
) -> tuple[Issue, ...]:
    """Every rule the values break; format rules alone when there is no manifest."""
    issues = check_formats(values, template, rules, reasons, today)
    if manifest is not None:
        issues += check_manifest(values, manifest)
    return tuple(issues)


def _str(values: Mapping[str, FieldValue], name: str) -> str | None:
    fv = values.get(name)
    return None if fv is None or fv.value is None else str(fv.value)


def _int(values: Mapping[str, FieldValue], name: str) -> int | None:
    fv = values.get(name)
    return fv.value if fv is not None and isinstance(fv.value, int) else None


def _date(values: Mapping[str, FieldValue]) -> date | None:
    raw = _str(values, "return_date")
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None
