"""Finding, reading and validating the config file; error lines name the file, the key, expected and got."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge_agent.errors import ConfigError
from edge_agent.schema import SECRET_MASK, format_validation_error, mask_url_credentials
from edge_agent.settings.model import AgentConfig

DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/config.toml")
ENV_CONFIG = "EDGE_AGENT_CONFIG"


def resolve_config_path(cli_path: str | os.PathLike[str] | None) -> Path:
    """--config PATH, else $EDGE_AGENT_CONFIG, else /etc/edge-agent/config.toml."""
    if cli_path:
        return Path(cli_path)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH


def parse_config(data: dict[str, Any], source: str = "config") -> AgentConfig:
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, AgentConfig, data)) from None
    # Files the active profile's section names (factor tables, their rows) are read here, after
    # validation, never inside a validator; the section knows what to check.
    section = {"truck": cfg.telematics, "sensors": cfg.sensors}.get(cfg.profile)
    check = getattr(section, "check_references", None)
    problems: list[str] = check(source) if check is not None else []
    if cfg.state_dir.exists() and not cfg.state_dir.is_dir():
        problems.append(f"{source}: state_dir: expected a folder, got a file ({cfg.state_dir})")
    if problems:
        raise ConfigError(problems)
    return cfg


def run_problems(cfg: AgentConfig, source: str) -> list[str]:
    """What the daemon needs beyond a valid config: the MQTT client's files (CA, client certificate, password
    file), made as `run` makes them, and a bench's camera. `config check` and doctor say it first."""
    from edge_agent.errors import SyncError
    from edge_agent.spine.sync import make_client

    problems = []
    try:
        make_client(cfg.mqtt, "edge-agent-config-check")
    except SyncError as exc:
        problems.append(f"{source}: {exc}")
    check = getattr({"bench": cfg.bench}.get(cfg.profile), "check_runnable", None)
    return problems + (check(source) if check is not None else [])


def run_warnings(cfg: AgentConfig, source: str) -> list[str]:
    """What the daemon starts without, but works worse for (a bench's manifest): `config check` says it and
    still exits 0, as `run` would start."""
    check = getattr({"bench": cfg.bench}.get(cfg.profile), "check_warnings", None)
    return check(source, cfg.state_dir) if check is not None else []


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and validate one TOML file; raise ConfigError with one message per problem."""
    p = Path(path)
    name = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"{name}: file not found (create one with `edge-agent init` or pass --config PATH)"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{name}: cannot read: {exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{name}: not valid TOML: {exc}"]) from None
    absolutise_paths(data, p.parent.resolve())
    cfg = parse_config(data, name)
    cfg.source = p
    return cfg


# Keys that name files or folders: relative values are relative to the config file's folder.
# "[]" walks a list; a meter's `map` is a path only when it looks like one (else a shipped map's name).
PATH_KEYS = (
    "state_dir",
    "mqtt.ca_file",
    "mqtt.cert_file",
    "mqtt.key_file",
    "mqtt.password_file",
    "commands.trusted_keys[]",
    "bench.fields.templates[]",
    "bench.validation.manifest",
    "bench.ocr.manifest",
    "bench.camera.path",
    "bench.camera.processed_dir",
    "bench.camera.rejected_dir",
    "telematics.emissions.factors_file",
    "telematics.can.spn_map",
    "sensors.grid.factors_file",
    "sensors.meters[].map",
)


def absolutise_paths(data: dict[str, Any], base: Path) -> None:
    """Make the relative paths at PATH_KEYS absolute against `base`, before validation reads them."""

    def fix(value: Any, key: str) -> Any:
        if not isinstance(value, str) or not value or value.startswith(("/", "~")) or "://" in value:
            return value
        if key == "map" and not (value.endswith(".toml") or "/" in value):
            return value
        return str(base / value)

    def walk(node: Any, parts: list[str]) -> None:
        if not parts or not isinstance(node, dict):
            return
        head, rest = parts[0], parts[1:]
        is_list = head.endswith("[]")
        key = head.removesuffix("[]")
        if key not in node:
            return
        if not rest:
            if is_list and isinstance(node[key], list):
                node[key] = [fix(v, key) for v in node[key]]
            elif not is_list:
                node[key] = fix(node[key], key)
            return
        children = node[key] if is_list and isinstance(node[key], list) else [node[key]]
        for child in children:
            walk(child, rest)

    for dotted in PATH_KEYS:
        walk(data, dotted.split("."))


def masked_dict(cfg: AgentConfig) -> dict[str, Any]:
    """The effective config as plain data, secrets masked."""
    data = cfg.model_dump(mode="json")
    if cfg.mqtt.password is not None:
        data["mqtt"]["password"] = SECRET_MASK
    masked: dict[str, Any] = _mask_url_credentials(data)
    return masked


def _mask_url_credentials(node: Any) -> Any:
    """rtsp://user:secret@cam/... -> rtsp://user:********@cam/... anywhere in the config."""
    if isinstance(node, str):
        return mask_url_credentials(node)
    if isinstance(node, dict):
        return {k: _mask_url_credentials(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask_url_credentials(v) for v in node]
    return node
