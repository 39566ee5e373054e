"""The one TOML editor: `config set` and the remote `patch_config` both change dotted keys through it."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit

from edge_agent.errors import ConfigError
from edge_agent.files import atomic_write
from edge_agent.settings.load import absolutise_paths, parse_config
from edge_agent.settings.model import AgentConfig

# Marks a key to remove (JSON null in a patch): its default applies again.
REMOVE = None


def _parse_value(raw: str) -> Any:
    """A CLI value as TOML would read it: 8883 -> int, true -> bool, "x" or x -> str."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def edit_text(old_text: str, changes: Mapping[str, Any], source: str, *, locked: tuple[str, ...] = ()) -> str:
    """Apply dotted-key changes to a TOML text, keeping its comments; None removes a key.

    Keys under a `locked` top-level section are refused. Raises ConfigError, one line per problem.
    """
    try:
        doc = tomlkit.parse(old_text)
    except Exception as exc:  # noqa: BLE001 - tomlkit raises several parse errors
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from None
    problems = []
    for dotted, value in changes.items():
        keys = dotted.split(".")
        if not all(keys):
            problems.append(f"{source}: {dotted}: expected a dotted key like mqtt.url, got {dotted!r}")
            continue
        if keys[0] in locked:
            problems.append(f"{source}: {dotted}: changes only on the device (needs a restart), not remotely")
            continue
        problem, table = _section(doc, keys)
        if problem:
            problems.append(f"{source}: {dotted}: {problem}")
            continue
        if value is REMOVE:
            table.pop(keys[-1], None)
        else:
            table[keys[-1]] = value
    if problems:
        raise ConfigError(problems)
    return tomlkit.dumps(doc)


def _section(doc: Any, keys: list[str]) -> tuple[str, Any]:
    """("", the table that holds keys[-1]), made where missing; (what is wrong, None) otherwise."""
    table: Any = doc
    for n, k in enumerate(keys[:-1]):
        if isinstance(table, list):  # [[sensors.meters]]: one table of the list, by its name or index
            problem, table = _element(table, k, ".".join(keys[:n]))
            if problem:
                return problem, None
            continue
        if k not in table:
            table[k] = tomlkit.table()
        table = table[k]
        if isinstance(table, list) and table and all(isinstance(t, dict) for t in table):
            continue
        if not isinstance(table, dict):
            return f"{k} is a value, not a section", None
    if isinstance(table, list):
        where = ".".join(keys[:-1])
        return f"{where} is a list of tables: name one, e.g. {where}.NAME.{keys[-1]}", None
    return "", table


def _element(tables: list[Any], key: str, where: str) -> tuple[str, Any]:
    """("", the table) of a list of tables by its `name` or its index; (what is wrong, None) otherwise."""
    for t in tables:
        if t.get("name") == key:
            return "", t
    if key.isdigit() and int(key) < len(tables):
        return "", tables[int(key)]
    names = ", ".join(str(t.get("name")) for t in tables if "name" in t) or "none"
    return (
        f"{where} has no table named {key!r} (names: {names}; or an index 0-{len(tables) - 1});"
        f" a new one is added by editing the file",
        None,
    )


def validate_text(text: str, path: Path) -> AgentConfig:
    """Validate a config text as if it were the file at `path` (relative paths resolve beside it)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    absolutise_paths(data, path.parent.resolve())
    cfg = parse_config(data, str(path))
    cfg.source = path
    return cfg


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None


def set_value(path: str | os.PathLike[str], dotted: str, raw_value: str) -> AgentConfig:
    """Change one dotted key in place, keeping comments; validate first; write atomically."""
    p = Path(path)
    old_text = read_text(p)
    value = _parse_value(raw_value)
    new_text = edit_text(old_text, {dotted: value}, str(p))
    try:
        cfg = validate_text(new_text, p)
    except ConfigError as first:
        if isinstance(value, str):
            raise
        # A key that takes text, given digits (`mqtt.protocol 5`, `device.id 1042`, a numeric password): the
        # value as typed, as a string, when that is what the key accepts; else the first error stands.
        new_text = edit_text(old_text, {dotted: raw_value}, str(p))
        try:
            cfg = validate_text(new_text, p)
        except ConfigError:
            raise first from None
    atomic_write(p, new_text.encode("utf-8"))
    return cfg


def patch_text(
    old_text: str, changes: Mapping[str, Any], path: Path, *, locked: tuple[str, ...]
) -> tuple[str, AgentConfig]:
    """A remote patch: edit, validate; return the new text and config (nothing is written)."""
    new_text = edit_text(old_text, changes, str(path), locked=locked)
    return new_text, validate_text(new_text, path)
