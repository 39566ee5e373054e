"""The spine's config sections (device, state_dir, mqtt, outbox, health, commands, checkpoint, log).

settings/ composes the whole AgentConfig from these plus each pipeline's section; the spine
reads only what is declared here, so it never imports a pipeline's config (or its drivers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from edge_agent.schema import Expect

Port = Annotated[int, Field(ge=1, le=65535), Expect("an integer 1-65535")]
PositiveFloat = Annotated[float, Field(ge=0), Expect("a number of seconds >= 0")]
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class DeviceConfig(Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN), Expect("1-64 letters, digits, '.', '_' or '-' (no '/', '+', '#')")]
    site: Annotated[str, Field(pattern=ID_PATTERN), Expect("1-64 letters, digits, '.', '_' or '-' (no '/', '+', '#')")]


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


class SpineConfig(Strict):
    """Everything the spine reads: who the device is, where its state lives, how it talks to central."""

    device: DeviceConfig
    state_dir: Path = Path("/var/lib/edge-agent")
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @property
    def key_path(self) -> Path:
        return self.state_dir / "keys" / "device.key"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "outbox.db"


# Sections a remote patch may not touch: they change only with a restart (and a technician).
RESTART_ONLY_KEYS = ("device", "state_dir", "profile")
