"""`status` on a running daemon shows the station (its address, or why it did not start) and each device's fault."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomlkit

from edge_agent.app import read_runtime
from edge_agent.cli.main import render_config
from edge_agent.settings import load_config
from edge_agent.spine.keys import generate_key
from tests.broker import Broker, free_port
from tests.helpers import wait_until
from tests.process.test_daemon import run_status, start_agent, stop_agent


def _truck(tmp_path: Path, url: str, station_port: int) -> Path:
    """A truck whose GPS is not plugged in, with the station on `station_port`."""
    cfg = tmp_path / "config.toml"
    doc = tomlkit.parse(render_config("truck", "truck-3", "depot", url, tmp_path / "state"))
    doc["telematics"]["gps"]["port"] = str(tmp_path / "ttyACM0")  # type: ignore[index]
    doc.setdefault("bench", tomlkit.table())["station"] = {"enabled": True, "port": station_port}  # type: ignore[index]
    cfg.write_text(tomlkit.dumps(doc), encoding="utf-8")
    generate_key(load_config(cfg).key_path)
    return cfg


def _status_of_running_agent(cfg: Path) -> tuple[str, str]:
    """`status` of a running agent once its runtime.json has the GPS fault (the driver tried to open it), and
    the agent's log after it stopped."""
    state = load_config(cfg).state_dir

    def gps_failed() -> object:
        return ((read_runtime(state) or {}).get("devices") or {}).get("gps", {}).get("last_error")

    proc = start_agent(cfg)
    try:
        r = run_status(cfg) if wait_until(gps_failed, 30) else None
    finally:
        code, log = stop_agent(proc)
    if r is None:
        pytest.fail(f"no GPS fault in runtime.json in 30 s; agent said:\n{log[-3000:]}")
    assert code == 0, log[-3000:]
    assert r.returncode == 0, r.stderr
    return r.stdout, log


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on, as when a second station or a stray server holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def test_status__says_why_the_station_did_not_start_and_which_device_is_missing(
    broker: Broker, tmp_path: Path, taken_port: int
) -> None:
    cfg = _truck(tmp_path, broker.url, taken_port)
    out, log = _status_of_running_agent(cfg)
    assert "station not started, the daemon runs on without it" in log  # the log line stays
    want = f"station:       not started: bench.station: cannot listen on 127.0.0.1:{taken_port}: Address already in use"
    assert want in out, out
    gps = f"device gps:    not connected: {tmp_path / 'ttyACM0'}: cannot open"
    assert gps in out, out
    assert "last error:    station not started: bench.station: cannot listen on" in out, out


def test_status__shows_the_station_address_while_it_serves(broker: Broker, tmp_path: Path) -> None:
    port = free_port()
    cfg = _truck(tmp_path, broker.url, port)
    out, _ = _status_of_running_agent(cfg)
    assert f"station:       http://127.0.0.1:{port}/" in out, out
    assert "last error:    gps: " in out, out
