"""The seam between pipelines and the spine: a pipeline hands the spine a kind and a body."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    from edge_agent.settings import AgentConfig


class Clock(Protocol):
    """The spine's clock as a pipeline sees it (spine.clock.Clock): the time, and GPS fixes fed to it."""

    def now(self) -> tuple[datetime, str]: ...

    def observe_gps(self, gps_utc: datetime) -> None: ...

    @property
    def gps_skew_s(self) -> float | None: ...


# emit(kind, body) queues a record for the one chain writer. It blocks while the
# writer's queue is full (back-pressure), never drops, and returns at once otherwise.
Emit = Callable[[str, dict[str, Any]], None]


@dataclass
class ServiceContext:
    """What the daemon gives each pipeline service when it starts it."""

    config: AgentConfig
    emit: Emit
    clock: Clock
    state_dir: Path
    stop: threading.Event
    # Commands from central that a service handles (name -> handler(body) -> result dict).
    command_handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)


class Service(Protocol):
    """A pipeline with a lifecycle: drivers in threads, stages behind bounded queues."""

    name: str

    def start(self, ctx: ServiceContext) -> None:
        """Start threads and return; raise ConfigError/DriverError only for unrecoverable setup."""

    def stop(self) -> None:
        """Stop producing; flush what is in hand through emit; return within a few seconds."""

    def heartbeat(self) -> float:
        """time.monotonic() of the last progress; a stuck stage stops the watchdog pings."""

    def status(self) -> dict[str, Any]:
        """Small JSON-able status for `edge-agent status` and health records."""


class Heartbeat:
    """A monotonic timestamp a stage bumps whenever it makes progress or idles on purpose."""

    def __init__(self) -> None:
        self.t = time.monotonic()

    def beat(self) -> None:
        self.t = time.monotonic()
