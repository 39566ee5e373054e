"""The [bench] section of the config (owned by the bench pipeline)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
