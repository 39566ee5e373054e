"""AgentConfig: the spine's sections (spine/config.py) plus one section per pipeline profile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from edge_agent.pipelines.bench.config import BenchConfig
from edge_agent.pipelines.sensors.config import SensorsConfig
from edge_agent.pipelines.truck.config import TelematicsConfig
from edge_agent.schema import Expect
from edge_agent.spine.config import (
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
]


class AgentConfig(SpineConfig):
    profile: Annotated[Literal["bench", "truck", "sensors"], Expect('"bench", "truck" or "sensors"')]
    bench: BenchConfig = Field(default_factory=BenchConfig)
    telematics: TelematicsConfig = Field(default_factory=TelematicsConfig)
    sensors: SensorsConfig = Field(default_factory=SensorsConfig)

    # Where this config was read from; relative paths in it resolve against its folder.
    source: Path | None = Field(default=None, exclude=True)
