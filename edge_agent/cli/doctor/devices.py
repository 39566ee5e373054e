"""Doctor checks of configured devices: each asks the driver's own probe (drivers/<kind>/probe.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from edge_agent.cli.doctor.base import SERIAL_LISTEN_S, Check
from edge_agent.drivers.registry import DRIVER_KINDS, probe_device
from edge_agent.settings import AgentConfig


def iter_models(obj: Any, path: str = "") -> Iterator[tuple[str, BaseModel]]:
    """Every nested pydantic model in the config with its dotted path."""
    if isinstance(obj, BaseModel):
        yield path, obj
        for name in type(obj).model_fields:
            yield from iter_models(getattr(obj, name), f"{path}.{name}" if path else name)
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from iter_models(item, f"{path}[{i}]")


def serial_devices(cfg: AgentConfig) -> list[tuple[str, Any]]:
    """Configured devices of the active profile: a registered driver kind, or any section with a port."""
    section = {"truck": "telematics", "sensors": "sensors", "bench": "bench"}[cfg.profile]
    return [
        (p, m)
        for p, m in iter_models(getattr(cfg, section), section)
        if isinstance(getattr(m, "kind", None), str)
        and (getattr(m, "kind", None) in DRIVER_KINDS or isinstance(getattr(m, "port", None), str))
    ]


def check_serial_device(path: str, dev: Any, listen_s: float = SERIAL_LISTEN_S) -> Check:
    """One configured device, checked by its driver's probe."""
    outcome = probe_device(dev, listen_s)
    return Check(f"{path} ({dev.kind})", outcome.status, outcome.message, outcome.remedy)
