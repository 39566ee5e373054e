"""DriverRunner: reconnects with backoff, logs an outage once, recovers, survives bad frames and bugs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.drivers.base import DeviceUnavailable, DriverRunner
from edge_agent.drivers.readings import Weighing
from edge_agent.drivers.registry import DRIVER_KINDS, driver_classes, make_driver
from edge_agent.drivers.scale.driver import ScaleConfig, ScaleDriver
from edge_agent.drivers.scale.twin import ScaleScenario, ScaleSegment, ScaleTwin

BASE_LOGGER = "edge_agent.drivers.base"


def _twin(link: Path, kg: float = 10.0) -> ScaleTwin:
    return ScaleTwin(
        link, fmt="and", scenario=ScaleScenario((ScaleSegment(1e6, kg, True),), start_kg=kg), interval_s=0.02
    )


def _runner(
    port: str, sink: Callable[[Weighing], None], stop: threading.Event, **cfg: object
) -> DriverRunner[Weighing]:
    driver = ScaleDriver(ScaleConfig.model_validate({"kind": "scale", "port": port, **cfg}))
    return DriverRunner(driver, sink, stop, backoff_min_s=0.05, backoff_max_s=0.2, read_timeout_s=0.1)


def _wait(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == BASE_LOGGER and r.levelno == level]


def test_driver_runner__unplug_warns_once_then_info_on_recovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=BASE_LOGGER)
    got: list[Weighing] = []
    stop = threading.Event()
    with _twin(tmp_path / "scale") as twin:
        runner = _runner(twin.path, got.append, stop)
        runner.start()
        try:
            _wait(lambda: len(got) >= 3)
            twin.unplug()
            _wait(lambda: len(_records(caplog, logging.DEBUG)) >= 4)  # several quiet retries
            n_out = len(got)
            assert not runner.connected
            twin.replug()
            _wait(lambda: len(got) >= n_out + 3)
        finally:
            stop.set()
            runner.join()
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert warnings[0].startswith("scale: device lost (")
    infos = _records(caplog, logging.INFO)
    assert len(infos) == 1
    assert infos[0].startswith("scale: device back after ")
    assert runner.reconnects == 1
    assert runner.frames_bad == 0
    assert all(w.load_kg == 10.0 for w in got)


def test_driver_runner__absent_at_start_warns_once_and_backs_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=BASE_LOGGER)
    got: list[Weighing] = []
    stop = threading.Event()
    link = tmp_path / "scale"
    runner = _runner(str(link), got.append, stop)
    t0 = time.monotonic()
    runner.start()
    try:

        def attempts() -> int:
            return 1 + len([m for m in _records(caplog, logging.DEBUG) if "still unavailable" in m])

        _wait(lambda: attempts() >= 4)
        # Backoff 0.05 s doubling to 0.2 s, each within +-20 %: four attempts take 0.28 s at least (a hot loop, a
        # few milliseconds).
        assert time.monotonic() - t0 >= 0.25
        assert runner.last_error is not None and "cannot open" in runner.last_error
        twin = _twin(link).start()
        try:
            _wait(lambda: len(got) >= 2)
        finally:
            stop.set()
            runner.join()
            twin.stop()
    finally:
        stop.set()
        runner.join()
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert warnings[0].startswith("scale: device unavailable (")
    assert [m for m in _records(caplog, logging.INFO) if "device back after" in m]


def test_driver_runner__garbage_is_counted_not_fatal(tmp_path: Path) -> None:
    got: list[Weighing] = []
    stop = threading.Event()
    with _twin(tmp_path / "scale") as twin:
        runner = _runner(twin.path, got.append, stop)
        runner.start()
        try:
            _wait(lambda: len(got) >= 2)
            for _ in range(5):
                twin.inject(b"\xde\xad garbage\r\n")
            _wait(lambda: runner.frames_bad >= 5)
            n = len(got)
            _wait(lambda: len(got) >= n + 3)
        finally:
            stop.set()
            runner.join()
    assert runner.frames_bad == 5
    assert runner.reconnects == 0


def test_driver_runner__silent_device_backs_off_instead_of_flapping(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The port opens (adapter present) but the scale behind it says nothing.
    caplog.set_level(logging.DEBUG, logger=BASE_LOGGER)
    stop = threading.Event()
    runner = _runner("loop://", lambda w: None, stop, silence_timeout_s=0.05)
    t0 = time.monotonic()
    runner.start()
    try:
        _wait(lambda: runner.reconnects >= 3)
        # Each round is 0.05 s of silence and then a backoff (0.05 s doubling, +-20 %): 0.27 s at least for three.
        assert time.monotonic() - t0 >= 0.25
    finally:
        stop.set()
        runner.join()
    assert len(_records(caplog, logging.WARNING)) == 1
    assert not _records(caplog, logging.INFO)


def test_driver_runner__handler_bug_is_logged_once_and_reading_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=BASE_LOGGER)
    calls: list[Weighing] = []

    def broken(w: Weighing) -> None:
        calls.append(w)
        raise RuntimeError("pipeline bug")

    stop = threading.Event()
    with _twin(tmp_path / "scale") as twin:
        runner = _runner(twin.path, broken, stop)
        runner.start()
        try:
            _wait(lambda: len(calls) >= 5)
        finally:
            stop.set()
            runner.join()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert runner.reading_errors >= 5
    assert runner.reconnects == 0


class _BuggyDriver:
    """A driver whose read() has a bug (raises something other than a DriverError)."""

    name = "buggy"

    def __init__(self) -> None:
        self.opens = 0

    def open(self) -> None:
        self.opens += 1

    def read(self, timeout_s: float) -> Weighing | None:
        raise KeyError("bug")

    def close(self) -> None:
        pass


def test_driver_runner__driver_bug_reopens_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=BASE_LOGGER)
    stop = threading.Event()
    driver = _BuggyDriver()
    runner: DriverRunner[Weighing] = DriverRunner(driver, lambda w: None, stop, backoff_min_s=0.05, backoff_max_s=0.2)
    t0 = time.monotonic()
    runner.start()
    try:
        _wait(lambda: driver.opens >= 3)
        assert time.monotonic() - t0 >= 0.1, "reopened with backoff (0.12 s at least), not in a hot loop"
    finally:
        stop.set()
        runner.join()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].exc_info is not None  # unexpected: with a traceback


def test_driver_registry__kinds_build_drivers_without_io() -> None:
    assert {"nmea", "elm327", "lls", "scale", "modbus"} <= set(DRIVER_KINDS)
    for kind in ("nmea", "elm327", "lls", "scale"):
        config_cls, _ = driver_classes(kind)
        cfg = config_cls.model_validate({"kind": kind, "port": "/nonexistent/tty"})
        driver = make_driver(cfg)
        assert driver.name == cfg.name  # type: ignore[attr-defined]
        driver.close()  # idempotent before open
        with pytest.raises(DeviceUnavailable, match="/nonexistent/tty: cannot open"):
            driver.open()
