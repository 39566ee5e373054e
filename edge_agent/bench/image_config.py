"""Config models for the bench's image stages (placeholder until the stage lands)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class OcrConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreprocessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QualityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
