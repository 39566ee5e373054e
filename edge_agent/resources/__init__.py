"""Files shipped with the package: config templates (config/) and the model manifest (models/)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def config_file(name: str) -> Path:
    """Path of a file shipped from the repository's config/ folder."""
    return Path(str(resources.files("edge_agent.resources.config").joinpath(name)))


def models_file(name: str) -> Path:
    """Path of a file shipped from the repository's models/ folder."""
    return Path(str(resources.files("edge_agent.resources.models").joinpath(name)))
