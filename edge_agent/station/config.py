"""[bench.station]: where the operator station listens, TLS, who may sign in, and the reasons offered on the page."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from edge_agent.schema import Expect

DEFAULT_CORRECTION_REASONS = [
    "misread by OCR",
    "slip smudged or torn",
    "handwritten value",
    "scanned barcode is right",
]
DEFAULT_REJECT_REASONS = ["not a return slip", "duplicate"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": nobody else on the network can reach it."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StationConfig(BaseModel):
    """The operator station. Loopback only unless `listen` says otherwise; then sign-in is required."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # Unset: on for the bench profile, off for truck and sensors (whose RSS budget is tight); true or
    # false decides for any profile.
    enabled: bool | None = None
    listen: Annotated[
        str, Field(min_length=1, max_length=253), Expect('an address such as "127.0.0.1" or "0.0.0.0"')
    ] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535), Expect("a TCP port 1-65535")] = 8480
    # TLS: both files or neither; relative paths are relative to the config file's folder.
    tls_cert: Annotated[Path | None, Expect("a path to a PEM certificate")] = None
    tls_key: Annotated[Path | None, Field(validate_default=True)] = None
    # TOML list of [[operator]] id, role, pin_scrypt / badge_scrypt (python -m edge_agent.station.operators add).
    operators_file: Annotated[Path | None, Field(validate_default=True)] = None
    # Who reviews when nobody signs in (loopback only, no operators file): put in the record as reviewer.
    local_operator: Annotated[str, Field(min_length=1, max_length=64), Expect("an operator id")] = "bench-operator"
    session_idle_min: Annotated[float, Field(gt=0, le=24 * 60), Expect("minutes > 0")] = 60.0
    correction_reasons: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=80)]], Expect("a list of short reason strings")
    ] = Field(default_factory=lambda: list(DEFAULT_CORRECTION_REASONS), min_length=1, max_length=20)
    reject_reasons: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=80)]], Expect("a list of short reason strings")
    ] = Field(default_factory=lambda: list(DEFAULT_REJECT_REASONS), min_length=1, max_length=20)
    max_body_kb: Annotated[int, Field(ge=1, le=1024), Expect("kilobytes 1-1024")] = 16

    @field_validator("tls_key")
    @classmethod
    def _tls_pair(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if (info.data.get("tls_cert") is None) != (v is None):
            raise PydanticCustomError("tls_pair", "tls_cert and tls_key together (both for HTTPS, or neither)")
        return v

    @field_validator("operators_file")
    @classmethod
    def _sign_in_off_loopback(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        listen = info.data.get("listen")
        if v is None and info.data.get("enabled") is not False and isinstance(listen, str) and not is_loopback(listen):
            raise PydanticCustomError(
                "sign_in_required",
                "an operators file because listen = {listen} is reachable from the network and needs "
                'sign-in (or listen = "127.0.0.1")',
                {"listen": listen},
            )
        return v

    def enabled_for(self, profile: str) -> bool:
        return self.enabled if self.enabled is not None else profile == "bench"

    @property
    def sign_in_required(self) -> bool:
        """Sign-in is needed whenever operators are configured, and always off loopback."""
        return self.operators_file is not None or not is_loopback(self.listen)

    @property
    def url(self) -> str:
        host = self.listen
        if host in ("0.0.0.0", "::"):  # noqa: S104 - only formatting a URL
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.tls_cert is not None else "http"
        return f"{scheme}://{host}:{self.port}/"
