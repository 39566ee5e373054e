"""Helpers for config models: `Expect` (what a key expects) and the one formatter of validation errors.

A leaf: settings, drivers and pipelines all phrase config errors through it, so it imports nothing from edge_agent.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError


def format_ts(t: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a Z, as records carry it (pipelines and the spine both write it)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class Expect:
    """Field metadata: how to say what a field expects, in an error message."""

    def __init__(self, text: str) -> None:
        self.text = text


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(\S+)")
SECRET_MASK = "********"  # noqa: S105 - the mask, not a password


def _mask_one_url(m: re.Match[str]) -> str:
    """scheme://user:secret@host/... -> scheme://user:********@host/...

    The password may itself hold '@' (or '/'), so the credentials run to the LAST '@' of the URL;
    masking a little too much is better than showing part of a password.
    """
    scheme, rest = m.group(1), m.group(2)
    at = rest.rfind("@")
    if at < 0:
        return m.group(0)
    user, colon, _secret = rest[:at].partition(":")
    if not colon or "/" in user:
        return m.group(0)
    return f"{scheme}{user}:{SECRET_MASK}@{rest[at + 1 :]}"


def mask_url_credentials(text: str) -> str:
    """Every URL's password in `text` masked: what a config holds may be shown, logged or shared."""
    return _URL.sub(_mask_one_url, text)


def _describe_got(value: Any) -> str:
    if isinstance(value, str):
        return '"' + mask_url_credentials(value).replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _members(ann: Any) -> list[type[BaseModel]]:
    """The model classes an annotation allows (a model, or the models of a union, Annotated unwrapped)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out: list[type[BaseModel]] = []
    for arg in getattr(ann, "__args__", ()):
        out.extend(_members(arg))
    return out


_NAME = re.compile(r"^(?!\d+$)[A-Za-z0-9_-]{1,64}$")


def _by_name(items: Any, index: int) -> str | None:
    """The `name` of items[index] where it names that item alone (a dotted key can then say it, as
    `config set` takes it: sensors.meters.chiller.unit_id)."""
    if not isinstance(items, list) or not 0 <= index < len(items) or not isinstance(items[index], dict):
        return None
    name = items[index].get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        return None
    same = [it for it in items if isinstance(it, dict) and it.get("name") == name]
    return name if len(same) == 1 else None


def _step(node: Any, part: Any) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _locate(model: type[BaseModel], loc: tuple[Any, ...], data: Any = None) -> tuple[Any, tuple[str, ...]]:
    """The FieldInfo at an error location and the dotted path to show, without union tags; a list item is
    shown by its name when the data (the validated input) gives it one of its own."""
    candidates: list[type[BaseModel]] = [model]
    info = None
    shown: list[str] = []
    node = data
    for part in loc:
        if isinstance(part, int):
            shown.append(_by_name(node, part) or str(part))
            node = _step(node, part)
            continue
        owners = [m for m in candidates if part in m.model_fields]
        if not owners:
            # A discriminated union's tag (e.g. "opencv" in bench.camera.opencv.width): pick that member.
            tagged = [m for m in candidates if _kind_of(m) == part]
            if tagged:
                candidates = tagged
                continue
            shown.append(str(part))
            info = None
            candidates = []
            node = _step(node, part)
            continue
        info = owners[0].model_fields[part]
        shown.append(str(part))
        candidates = _members(info.annotation)
        node = _step(node, part)
    return info, tuple(shown)


def _kind_of(m: type[BaseModel]) -> str | None:
    f = m.model_fields.get("kind")
    args: tuple[Any, ...] = getattr(f.annotation, "__args__", ()) if f is not None else ()
    return str(args[0]) if len(args) == 1 else None


_EXPECT_BY_TYPE = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "path_type": "a file path (string)",
    "list_type": "a list",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
}


def format_validation_error(source: str, exc: ValidationError, model: type[BaseModel], data: Any = None) -> list[str]:
    """One line per problem: FILE: dotted.key: expected X, got Y. With the input `data`, a list item that
    has a name of its own is named by it (sensors.meters.chiller.unit_id, not sensors.meters.1.unit_id)."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        info, shown = _locate(model, loc, data)
        path = ".".join(shown) or "(top level)"
        etype = err["type"]
        got = err.get("input")
        if etype == "extra_forbidden":
            msg = f"{source}: {path}: unknown key (not part of the schema; check its spelling and section)"
        elif etype == "missing":
            msg = f"{source}: {path}: required key is missing"
        else:
            expected = None
            if info is not None:
                for meta in info.metadata:
                    if isinstance(meta, Expect):
                        expected = meta.text
            # A validator's own words (a check across keys): what it found, where 'a list' or 'a table' says nothing.
            reason = str(err["ctx"]["error"]) if etype == "value_error" and "error" in err.get("ctx", {}) else None
            if expected is None and reason is not None:
                problems.append(f"{source}: {path}: {reason}")
                continue
            if expected is None:
                if etype == "literal_error":
                    expected = "one of " + err["ctx"]["expected"]
                else:
                    expected = _EXPECT_BY_TYPE.get(etype, err["msg"].lower())
            shown_got = SECRET_MASK if "password" in shown[-1:] else _describe_got(got)
            if reason is not None and isinstance(got, dict | list):
                shown_got += f" ({reason})"
            msg = f"{source}: {path}: expected {expected}, got {shown_got}"
        problems.append(msg)
    return problems
