"""The agent's one TOML config: schema (model), loading and error lines (load), safe edits (edit)."""

from __future__ import annotations

from edge_agent.files import atomic_write
from edge_agent.schema import format_validation_error
from edge_agent.settings.edit import edit_text, patch_text, set_value, validate_text
from edge_agent.settings.load import (
    DEFAULT_CONFIG_PATH,
    ENV_CONFIG,
    PATH_KEYS,
    absolutise_paths,
    load_config,
    masked_dict,
    parse_config,
    resolve_config_path,
    run_problems,
    run_warnings,
)
from edge_agent.settings.model import (
    AgentConfig,
    CheckpointConfig,
    CommandsConfig,
    DeviceConfig,
    HealthConfig,
    LogConfig,
    MqttConfig,
    OutboxConfig,
    Port,
    PositiveFloat,
    SpineConfig,
    Strict,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_CONFIG",
    "PATH_KEYS",
    "AgentConfig",
    "CheckpointConfig",
    "CommandsConfig",
    "DeviceConfig",
    "HealthConfig",
    "LogConfig",
    "MqttConfig",
    "OutboxConfig",
    "Port",
    "PositiveFloat",
    "SpineConfig",
    "Strict",
    "absolutise_paths",
    "atomic_write",
    "edit_text",
    "format_validation_error",
    "load_config",
    "masked_dict",
    "parse_config",
    "patch_text",
    "resolve_config_path",
    "run_problems",
    "run_warnings",
    "set_value",
    "validate_text",
]
