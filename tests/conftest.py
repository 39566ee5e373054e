"""Shared pytest fixtures: the real-mosquitto fixtures, and a provisioned device in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, parse_config
from edge_agent.keys import DeviceKey, generate_key
from tests.broker_fixtures import *  # noqa: F403


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
