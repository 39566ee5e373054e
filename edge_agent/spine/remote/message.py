"""The command message: its format, what is signed, signing one (central) and checking one (device)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from edge_agent.errors import EdgeAgentError, KeyError_
from edge_agent.schema import Expect, format_validation_error
from edge_agent.spine.clock import format_ts
from edge_agent.spine.keys import key_id_for, load_public_keys
from edge_agent.spine.records import canonical, loads_strict, sign_detached, verify_detached

log = logging.getLogger(__name__)

COMMAND_VERSION = 1
COMMANDS = ("patch_config", "status", "resend", "rotate_key", "replace_manifest")
# A command may live at most this long; the nonce table only has to remember this far back.
MAX_TTL_S = 7 * 24 * 3600
# issued_at may lie this far ahead of the device clock (central's and the device's clocks drift);
# further ahead is refused, so a command cannot be minted now to stay valid long after its window.
MAX_FUTURE_SKEW_S = 300
KEY_ID_PATTERN = r"^ed25519:[0-9a-f]{16}$"


class CommandRefused(EdgeAgentError):
    """A command that is not obeyed; `reason` is a short code, the message says what was wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CommandMessage(BaseModel):
    """A command as central sends it; `sig` covers the RFC 8785 bytes of every other field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Annotated[Literal[1], Expect("1 (command format version)")]
    device: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"), Expect("a device id")]
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$"), Expect("a command name such as resend")]
    nonce: Annotated[
        str, Field(pattern=r"^[A-Za-z0-9_-]{16,128}$"), Expect("16-128 random letters, digits, '-' or '_'")
    ]
    issued_at: Annotated[AwareDatetime, Expect("an ISO 8601 time with a zone, e.g. 2025-01-31T12:00:00Z")]
    expires_at: Annotated[AwareDatetime, Expect("an ISO 8601 time with a zone, e.g. 2025-01-31T12:10:00Z")]
    args: Annotated[dict[str, Any], Expect("a JSON object")]
    key: Annotated[str, Field(pattern=KEY_ID_PATTERN), Expect("a key id like ed25519:0123456789abcdef")]
    sig: Annotated[str, Expect("a base64 Ed25519 signature")]


def signing_bytes(message: Mapping[str, Any]) -> bytes:
    """What is signed: RFC 8785 canonical JSON of the message without `sig`."""
    return canonical({k: v for k, v in message.items() if k != "sig"})


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


class _CentralKey:
    """A central private key in the shape sign_detached takes (it signs, and has a key id)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.key_id = key_id_for(private.public_key())

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def sign_command(
    private: Ed25519PrivateKey,
    *,
    device: str,
    name: str,
    args: Mapping[str, Any],
    ttl_s: float,
    now: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """Build and sign one command message (what `edge-agent central sign-command` prints)."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s: expected seconds in (0, {MAX_TTL_S}], got {ttl_s!r}")
    t = now or datetime.now(UTC)
    key = _CentralKey(private)
    msg: dict[str, Any] = {
        "v": COMMAND_VERSION,
        "device": device,
        "name": name,
        "nonce": nonce or new_nonce(),
        "issued_at": format_ts(t),
        "expires_at": format_ts(t + timedelta(seconds=ttl_s)),
        "args": dict(args),
        "key": key.key_id,
    }
    msg["sig"] = sign_detached(key, msg)
    return msg


def short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verify_command(  # noqa: PLR0912 - one refusal reason per branch, in the order they are checked
    payload: bytes,
    *,
    topic_name: str | None,
    device: str,
    trusted: Mapping[str, Ed25519PublicKey],
    now: datetime,
    max_bytes: int,
) -> CommandMessage:
    """Check one command message on its own (no replay check); raise CommandRefused with the first reason.

    Order: size, JSON, signature present, key trusted, signature valid, then the shape, the
    topic, the addressee and the validity window. The signature comes before the shape so that
    whatever an unsigned sender writes is called what it is: unsigned or wrongly signed.
    """
    if len(payload) > max_bytes:
        raise CommandRefused("oversized", f"{len(payload)} bytes, more than commands.max_bytes ({max_bytes})")
    try:
        obj = loads_strict(payload)
    except ValueError as exc:
        raise CommandRefused("malformed", short(str(exc), 120)) from None
    if not isinstance(obj, dict):
        raise CommandRefused("malformed", f"expected a JSON object, got {type(obj).__name__}")
    sig, key_id = obj.get("sig"), obj.get("key")
    if sig is None or sig == "":
        raise CommandRefused("unsigned", "no `sig` field: commands must be signed by a trusted central key")
    if not isinstance(key_id, str) or not isinstance(sig, str):
        raise CommandRefused("malformed", "`key` and `sig` must be strings")
    if not trusted:
        raise CommandRefused("untrusted_key", "commands.trusted_keys is empty: this device obeys no remote command")
    public = trusted.get(key_id)
    if public is None:
        raise CommandRefused("untrusted_key", f"signed by {short(key_id, 40)!r}, which is not in commands.trusted_keys")
    if not verify_detached(public, obj, sig):
        raise CommandRefused("bad_signature", f"signature does not verify with key {key_id}")
    try:
        msg = CommandMessage.model_validate(obj)
    except ValidationError as exc:
        raise CommandRefused("malformed", "; ".join(format_validation_error("command", exc, CommandMessage))) from None
    if topic_name is not None and msg.name != topic_name:
        raise CommandRefused("wrong_topic", f"name {msg.name!r} differs from the topic's last level {topic_name!r}")
    if msg.device != device:
        raise CommandRefused("wrong_device", f"addressed to device {msg.device!r}, this is {device!r}")
    if msg.expires_at <= msg.issued_at:
        raise CommandRefused("malformed", "expires_at is not after issued_at")
    if (msg.expires_at - msg.issued_at).total_seconds() > MAX_TTL_S:
        raise CommandRefused("malformed", f"valid for more than {MAX_TTL_S} s (the longest a command may live)")
    if (msg.issued_at - now).total_seconds() > MAX_FUTURE_SKEW_S:
        raise CommandRefused(
            "from_future",
            f"issued at {format_ts(msg.issued_at)}, more than {MAX_FUTURE_SKEW_S} s after device time "
            f"{format_ts(now)} (central's or this device's clock is wrong)",
        )
    if now >= msg.expires_at:
        raise CommandRefused("expired", f"expired at {format_ts(msg.expires_at)}, device time is {format_ts(now)}")
    return msg


def load_trusted(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """key id -> public key for every PEM file in commands.trusted_keys; unreadable files are logged and skipped."""
    out: dict[str, Ed25519PublicKey] = {}
    for p in paths:
        try:
            for k in load_public_keys(p):
                out[key_id_for(k)] = k
        except KeyError_ as exc:
            log.error("commands.trusted_keys: %s", exc)
    return out


def load_trusted_strict(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """Like load_trusted, but a file that does not load is an error (a config change is proved with it)."""
    out: dict[str, Ed25519PublicKey] = {}
    for p in paths:
        for k in load_public_keys(p):
            out[key_id_for(k)] = k
    return out


# ---------------------------------------------------------------- per-command arguments


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    pass


class PatchConfigArgs(_Args):
    # dotted key -> new value (JSON null removes the key, so its default applies).
    set: Annotated[
        dict[str, Any], Field(min_length=1), Expect('a table of dotted keys, e.g. {"health.interval_s": 30}')
    ]


MAX_RESEND_SPAN = 1_000_000  # records one resend may ask for


class ResendArgs(_Args):
    first_seq: Annotated[int, Field(ge=1), Expect("a seq >= 1")]
    last_seq: Annotated[int, Field(ge=1), Expect(f"a seq from first_seq to first_seq + {MAX_RESEND_SPAN - 1:,}")]

    @field_validator("last_seq")
    @classmethod
    def _within_span(cls, last: int, info: ValidationInfo) -> int:
        # Checked where the command is signed (central sign-command) as well as where it is obeyed.
        first = info.data.get("first_seq")
        if first is not None and not first <= last < first + MAX_RESEND_SPAN:
            raise ValueError("outside the span")
        return last


class ReplaceManifestArgs(_Args):
    data_b64: Annotated[str, Field(min_length=1), Expect("the manifest file (CSV or JSON), base64")]


ARGS_MODELS: dict[str, type[_Args]] = {
    "patch_config": PatchConfigArgs,
    "status": NoArgs,
    "resend": ResendArgs,
    "rotate_key": NoArgs,
    "replace_manifest": ReplaceManifestArgs,
}


def parse_args(name: str, args: dict[str, Any]) -> _Args:
    model = ARGS_MODELS.get(name)
    if model is None:
        raise CommandRefused("unknown_command", f"{name!r} is not a command (known: {', '.join(COMMANDS)})")
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        problems = format_validation_error(f"{name}", exc, model)
        raise CommandRefused("bad_args", short("; ".join(problems), 400)) from None
