"""Config models for the bench's capture stages (placeholder until the stage lands)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class CameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScannerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TriggerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
