"""The [sensors] section of the config (owned by the sensor-point pipeline)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SensorsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
