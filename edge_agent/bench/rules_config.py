"""Config models for the bench's rules stages (placeholder until the stage lands)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FieldsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReviewConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValidationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
