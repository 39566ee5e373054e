"""The agent's one TOML config: schema, loading, error messages a technician can act on, safe edits."""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import tomlkit
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from edge_agent.errors import ConfigError
from edge_agent.pipelines.bench.config import BenchConfig
from edge_agent.pipelines.sensors.config import SensorsConfig
from edge_agent.pipelines.truck.config import TelematicsConfig
from edge_agent.schema import Expect, format_validation_error

DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/config.toml")
ENV_CONFIG = "EDGE_AGENT_CONFIG"


Port = Annotated[int, Field(ge=1, le=65535), Expect("an integer 1-65535")]
PositiveFloat = Annotated[float, Field(ge=0), Expect("a number of seconds >= 0")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DeviceConfig(Strict):
    id: Annotated[
        str,
        Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
        Expect("1-64 letters, digits, '.', '_' or '-' (no '/', '+', '#')"),
    ]
    site: Annotated[
        str,
        Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
        Expect("1-64 letters, digits, '.', '_' or '-' (no '/', '+', '#')"),
    ]


class MqttConfig(Strict):
    url: Annotated[str, Expect("mqtt://host:port or mqtts://host:port")] = "mqtt://127.0.0.1:1883"
    topic_prefix: Annotated[
        str,
        Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"),
        Expect("topic levels of letters, digits, '.', '_', '-' separated by '/'"),
    ] = "edge"
    protocol: Annotated[Literal["5", "3.1.1"], Expect('"5" or "3.1.1"')] = "5"
    client_id: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600), Expect("an integer 5-3600")] = 30
    session_expiry_s: Annotated[int, Field(ge=0), Expect("an integer >= 0")] = 7 * 24 * 3600
    inflight_max: Annotated[int, Field(ge=1, le=65535), Expect("an integer 1-65535")] = 500
    backoff_min_s: Annotated[float, Field(gt=0), Expect("a number of seconds > 0")] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0), Expect("a number of seconds > 0")] = 60.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("bad url")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError("bad port") from exc
        if port is not None and not 1 <= port <= 65535:
            raise ValueError("bad port")
        return v

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    def password_value(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return None


class OutboxConfig(Strict):
    max_mb: Annotated[float, Field(gt=0), Expect("a size in MB > 0")] = 512.0
    retention_h: Annotated[float, Field(ge=0), Expect("hours >= 0 to keep delivered records")] = 72.0
    batch_max: Annotated[int, Field(ge=1, le=10000), Expect("an integer 1-10000")] = 512


class HealthConfig(Strict):
    interval_s: PositiveFloat = 60.0


class CommandsConfig(Strict):
    # PEM public keys (SubjectPublicKeyInfo) of central keys whose signed commands are obeyed.
    trusted_keys: list[Path] = Field(default_factory=list)
    max_bytes: Annotated[int, Field(ge=256, le=16 * 1024 * 1024), Expect("an integer 256-16777216")] = 1024 * 1024


class CheckpointConfig(Strict):
    interval_s: PositiveFloat = 300.0


class LogConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class AgentConfig(Strict):
    profile: Annotated[Literal["bench", "truck", "sensors"], Expect('"bench", "truck" or "sensors"')]
    device: DeviceConfig
    state_dir: Path = Path("/var/lib/edge-agent")
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    telematics: TelematicsConfig = Field(default_factory=TelematicsConfig)
    sensors: SensorsConfig = Field(default_factory=SensorsConfig)

    # Where this config was read from; relative paths in it resolve against its folder.
    source: Path | None = Field(default=None, exclude=True)

    @property
    def key_path(self) -> Path:
        return self.state_dir / "keys" / "device.key"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "outbox.db"


# ---------------------------------------------------------------- locating


def resolve_config_path(cli_path: str | os.PathLike[str] | None) -> Path:
    """--config PATH, else $EDGE_AGENT_CONFIG, else /etc/edge-agent/config.toml."""
    if cli_path:
        return Path(cli_path)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH


# ---------------------------------------------------------------- loading


def parse_config(data: dict[str, Any], source: str = "config") -> AgentConfig:
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, AgentConfig)) from None
    return cfg


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
        data["mqtt"]["password"] = "********"  # noqa: S105 - the mask, not a password
    masked: dict[str, Any] = _mask_url_credentials(data)
    return masked


_URL_CREDENTIALS = re.compile(r"(://[^:/@\s]+:)[^@/\s]+@")


def _mask_url_credentials(node: Any) -> Any:
    """rtsp://user:secret@cam/... -> rtsp://user:********@cam/... anywhere in the config."""
    if isinstance(node, str):
        return _URL_CREDENTIALS.sub(r"\1********@", node)
    if isinstance(node, dict):
        return {k: _mask_url_credentials(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask_url_credentials(v) for v in node]
    return node


# ---------------------------------------------------------------- editing


def _parse_value(raw: str) -> Any:
    """A CLI value as TOML would read it: 8883 -> int, true -> bool, "x" or x -> str."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def set_value(path: str | os.PathLike[str], dotted: str, raw_value: str) -> AgentConfig:
    """Change one dotted key in place, keeping comments; validate first; write atomically."""
    p = Path(path)
    try:
        doc = tomlkit.parse(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{p}: file not found"]) from None
    except Exception as exc:  # noqa: BLE001 - tomlkit raises several parse errors
        raise ConfigError([f"{p}: not valid TOML: {exc}"]) from None
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError([f"{p}: {dotted}: expected a dotted key like mqtt.url, got {dotted!r}"])
    table: Any = doc
    for k in keys[:-1]:
        if k not in table:
            table[k] = tomlkit.table()
        table = table[k]
        if not isinstance(table, dict):
            raise ConfigError([f"{p}: {dotted}: {k} is a value, not a section"])
    table[keys[-1]] = _parse_value(raw_value)
    new_text = tomlkit.dumps(doc)
    data = tomllib.loads(new_text)
    absolutise_paths(data, p.parent.resolve())
    cfg = parse_config(data, str(p))
    atomic_write(p, new_text.encode("utf-8"))
    return cfg


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write to a temp file in the same folder, fsync, rename over the target, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        elif path.exists():
            os.fchmod(fd, path.stat().st_mode & 0o777)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
