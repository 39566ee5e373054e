"""Register map files (config/meters/*.toml): finding, reading and validating them; stdlib and pydantic only."""

from __future__ import annotations

import functools
import importlib.resources
import tomllib
from pathlib import Path

from pydantic import ValidationError

from edge_agent.drivers.modbus.config import MeterMap
from edge_agent.errors import ConfigError
from edge_agent.schema import format_validation_error


def shipped_maps() -> list[str]:
    """Names of the register maps shipped in config/meters/ (file names without .toml)."""
    folder = importlib.resources.files("edge_agent.resources.config") / "meters"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def map_path(name: str, base: Path | None = None) -> Path:
    """A shipped map's file, or a map given as a path (relative paths against `base`)."""
    if name.endswith(".toml") or "/" in name:
        p = Path(name)
        return p if p.is_absolute() or base is None else base / p
    folder = importlib.resources.files("edge_agent.resources.config") / "meters"
    return Path(str(folder / f"{name}.toml"))


@functools.lru_cache(maxsize=32)
def load_map(path: Path) -> MeterMap:
    """Read and validate one register map file; ConfigError names the map file and the key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(shipped_maps()) or "none"
        raise ConfigError([f"{path}: meter map not found (shipped maps: {known})"]) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read meter map: {exc}"]) from None
    try:
        return MeterMap.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc, MeterMap)) from None
