"""Shared pytest fixtures: the real-mosquitto fixtures, and a provisioned device in a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from edge_agent.settings import AgentConfig, parse_config
from edge_agent.spine.keys import DeviceKey, generate_key
from tests.broker_fixtures import *  # noqa: F403

# CI: the same examples on every run (a new one found locally becomes a fixed regression test)
# and no per-example deadline, since a loaded CI machine is slower than a developer's.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def device(tmp_path: Path) -> tuple[AgentConfig, DeviceKey]:
    """A sensors-profile config with a fresh state dir and device key (no broker reachable)."""
    cfg = parse_config(
        {
            "profile": "sensors",
            "device": {"id": "dev-1", "site": "site-a"},
            "state_dir": str(tmp_path / "state"),
            "mqtt": {"url": "mqtt://127.0.0.1:9", "backoff_min_s": 0.2, "backoff_max_s": 1.0},
        }
    )
    key = generate_key(cfg.key_path)
    return cfg, key
