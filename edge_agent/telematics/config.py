"""The [telematics] section of the config (owned by the truck pipeline)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class TelematicsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
