"""Deadband sampling, kWh -> CO2e, and the sensors service end to end against meter twins on ptys."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.drivers.modbus.driver import ModbusMeterConfig
from edge_agent.drivers.modbus.twin import ModbusTwin, sdm120_scenario, xy_md02_scenario
from edge_agent.drivers.readings import MeterReading
from edge_agent.errors import ConfigError
from edge_agent.pipelines.sensors.config import lookup_grid_factor
from edge_agent.pipelines.sensors.service import (
    LastSent,
    MeterSampler,
    SampleSettings,
    SensorsService,
    energy_part,
    send_reason,
)
from edge_agent.service import ServiceContext
from edge_agent.settings import parse_config
from edge_agent.spine.clock import Clock

UK = lookup_grid_factor(None, "grid_uk_2025")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def reading(t_s: float, meter: str = "m", **values: float) -> MeterReading:
    return MeterReading(t_mono=t_s, t_utc=T0, meter=meter, values=values, units=dict.fromkeys(values, "u"))


S = SampleSettings(deadbands={"t": 0.5}, default_deadband=0.0, max_interval_s=60.0, min_interval_s=0.0)


# ---------------------------------------------------------------- send_reason


def test_send_reason__first_reading_is_sent() -> None:
    assert send_reason(None, reading(0, t=4.0, h=60.0), S) == ("first", ["h", "t"])


def test_send_reason__inside_deadband_is_held_beyond_is_sent() -> None:
    last = LastSent(0.0, {"t": 4.0})
    assert send_reason(last, reading(1, t=4.5), S) is None  # exactly the deadband: not beyond it
    assert send_reason(last, reading(1, t=3.4), S) == ("change", ["t"])


def test_send_reason__default_deadband_zero_sends_any_change() -> None:
    last = LastSent(0.0, {"t": 4.0, "h": 60.0})
    assert send_reason(last, reading(1, t=4.0, h=60.0), S) is None
    assert send_reason(last, reading(1, t=4.0, h=60.1), S) == ("change", ["h"])


def test_send_reason__heartbeat_after_max_interval() -> None:
    last = LastSent(0.0, {"t": 4.0})
    assert send_reason(last, reading(59.9, t=4.1), S) is None
    assert send_reason(last, reading(60.0, t=4.1), S) == ("heartbeat", [])


def test_send_reason__min_interval_holds_even_big_changes() -> None:
    s = SampleSettings({}, 0.0, 60.0, min_interval_s=10.0)
    last = LastSent(0.0, {"t": 4.0})
    assert send_reason(last, reading(5, t=40.0), s) is None
    assert send_reason(last, reading(10, t=40.0), s) == ("change", ["t"])


def test_send_reason__value_that_was_missing_counts_as_changed() -> None:
    assert send_reason(LastSent(0.0, {"t": 4.0}), reading(1, t=4.0, h=50.0), S) == ("change", ["h"])


@given(
    st.lists(st.tuples(st.floats(0.1, 30.0), st.floats(-30.0, 30.0)), min_size=1, max_size=60),
    st.floats(0.0, 3.0),
    st.floats(5.0, 120.0),
)
@settings(max_examples=200, deadline=None)
def test_meter_sampler__held_values_stay_within_deadband_and_interval(
    steps: list[tuple[float, float]], deadband: float, max_interval_s: float
) -> None:
    meter = ModbusMeterConfig.model_validate({"name": "m", "port": "/dev/x", "map": "xy-md02"})
    sampler = MeterSampler(meter, SampleSettings({"t": deadband}, 0.0, max_interval_s), None)
    t_s, sent_t, sent_value = 0.0, None, None
    for dt, value in steps:
        t_s += dt
        body = sampler.offer(reading(t_s, t=value))
        if body is not None:
            sent_t, sent_value = t_s, value
            assert body["values"] == {"t": value}
        else:
            # Nothing sent: the central copy is still within the deadband and not overdue.
            assert sent_value is not None and sent_t is not None
            assert abs(value - sent_value) <= deadband
            assert t_s - sent_t < max_interval_s
    assert sampler.sent >= 1 and sampler.seen == len(steps)


# ---------------------------------------------------------------- energy and CO2e


def test_energy_part__delta_times_grid_factor() -> None:
    part = energy_part(1250.0, 1240.0, UK, "total_active_energy_kwh")
    assert part["kwh_delta"] == 10.0
    assert part["co2_kg"] == pytest.approx(10.0 * 0.177)
    assert part["factor"]["name"] == "grid_uk_2025" and part["gas"] == part["factor"]["gas"] == "CO2e"
    cn = energy_part(1250.0, 1240.0, lookup_grid_factor(None, "grid_cn_2022"), "total_active_energy_kwh")
    assert cn["co2_kg"] == pytest.approx(10.0 * 0.5366) and cn["gas"] == "CO2"  # MEE/NBS count CO2 alone
    assert part["factor"]["year"] == 2025 and "DESNZ" in part["factor"]["source"]
    assert part["counter_reset"] is False


def test_energy_part__first_record_and_counter_reset_have_no_delta() -> None:
    assert energy_part(5.0, None, UK, "e")["kwh_delta"] is None
    reset = energy_part(5.0, 1240.0, UK, "e")
    assert reset["counter_reset"] is True and reset["co2_kg"] is None


@given(st.lists(st.floats(0.0, 5.0), min_size=2, max_size=50))
@settings(max_examples=100, deadline=None)
def test_meter_sampler__co2e_over_records_adds_up_to_total_kwh(increments: list[float]) -> None:
    meter = ModbusMeterConfig.model_validate({"name": "e", "port": "/dev/x", "map": "eastron-sdm120"})
    sampler = MeterSampler(meter, SampleSettings({"total_active_energy_kwh": 1.0}, 0.0, 1e9), UK)
    kwh, co2e, t_s = 1000.0, 0.0, 0.0
    bodies = []
    for inc in increments:
        kwh += inc
        t_s += 1
        body = sampler.offer(reading(t_s, meter="e", total_active_energy_kwh=kwh))
        if body is not None:
            bodies.append(body)
            co2e += body["energy"]["co2_kg"] or 0.0
    first, last = bodies[0]["energy"]["kwh_total"], bodies[-1]["energy"]["kwh_total"]
    assert co2e == pytest.approx((last - first) * 0.177, abs=1e-4)


def test_grid_factor__unknown_row_names_key_and_value() -> None:
    with pytest.raises(
        ConfigError,
        match=r"c.toml: sensors.grid.factor: expected the name of an electricity "
        r"\(kWh\) row.*got \"grid_xx\"",
    ):
        parse_config(
            {"profile": "sensors", "device": {"id": "d", "site": "s"}, "sensors": {"grid": {"factor": "grid_xx"}}},
            "c.toml",
        )


def test_sensors_config__duplicate_meter_names_rejected() -> None:
    meter = {"name": "a", "port": "/dev/x", "map": "xy-md02"}
    with pytest.raises(
        ConfigError,
        match=r"sensors.meters: expected a list of \[\[sensors.meters\]\] tables "
        r"with unique names",
    ):
        parse_config(
            {"profile": "sensors", "device": {"id": "d", "site": "s"}, "sensors": {"meters": [meter, meter]}}, "c.toml"
        )


def test_sensors_config__a_check_across_meters_names_the_meters_it_found() -> None:
    # 'got a list' was all a technician learnt of which meters clash after `config set ...name` or `...port`.
    base = {"port": "/dev/ttyUSB0", "map": "xy-md02"}
    cases = [
        ([{**base, "name": "a"}, {**base, "name": "a", "unit_id": 2}], "got a list (two meters named 'a')"),
        (
            [{**base, "name": "a"}, {**base, "name": "b", "unit_id": 2, "baud": 2400}],
            "got a list ('a' (9600 N 1) and 'b' (2400 N 1) on /dev/ttyUSB0 with different line settings)",
        ),
        ([{**base, "name": "a"}, {**base, "name": "b"}], "got a list ('a' and 'b' both unit 1 on /dev/ttyUSB0)"),
    ]
    for meters, got in cases:
        with pytest.raises(ConfigError) as info:
            parse_config({"profile": "sensors", "device": {"id": "d", "site": "s"}, "sensors": {"meters": meters}}, "c")
        (line,) = info.value.problems
        assert line.startswith("c: sensors.meters: expected a list of [[sensors.meters]] tables") and line.endswith(got)


# ---------------------------------------------------------------- the service on ptys


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_sensors_service__emits_sensor_records_from_two_meters(tmp_path: Path) -> None:
    md02 = ModbusTwin(tmp_path / "ttyMD02", scenario=xy_md02_scenario(start_c=3.0, drift_c_per_s=1.0)).start()
    sdm = ModbusTwin(tmp_path / "ttySDM", scenario=sdm120_scenario(start_kwh=500.0, time_scale=3000)).start()
    cfg = parse_config(
        {
            "profile": "sensors",
            "device": {"id": "d1", "site": "wh1"},
            "state_dir": str(tmp_path),
            "sensors": {
                "max_interval_s": 1.0,
                "meters": [
                    {"name": "cold-room", "port": md02.path, "map": "xy-md02", "poll_interval_s": 0.2},
                    {
                        "name": "main-board",
                        "port": sdm.path,
                        "map": "eastron-sdm120",
                        "poll_interval_s": 0.2,
                        "baud": 9600,
                    },
                ],
            },
        }
    )
    records: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()

    def emit(kind: str, body: dict[str, Any]) -> None:
        with lock:
            records.append((kind, body))

    stop = threading.Event()
    service = SensorsService()
    service.start(ServiceContext(config=cfg, emit=emit, clock=Clock(), state_dir=tmp_path, stop=stop))
    try:

        def enough() -> bool:
            with lock:
                energy = [b for _, b in records if b["meter"] == "main-board"]
                cold = [b for _, b in records if b["meter"] == "cold-room"]
            return len(energy) >= 3 and len(cold) >= 2

        assert wait_for(enough, 10)
        status = service.status()
        assert status["meters"]["cold-room"]["connected"] is True
        assert time.monotonic() - service.heartbeat() < 2
    finally:
        service.stop()
        md02.stop()
        sdm.stop()
    assert {k for k, _ in records} == {"sensor"}
    energy = [b for _, b in records if b["meter"] == "main-board"]
    cold = [b for _, b in records if b["meter"] == "cold-room"]
    assert energy[0]["reason"] == "first" and energy[0]["energy"]["kwh_delta"] is None
    assert energy[0]["model"] == "Eastron SDM120-Modbus"
    later = energy[-1]["energy"]
    assert later["kwh_delta"] > 0
    assert later["co2_kg"] == pytest.approx(later["kwh_delta"] * 0.177, rel=1e-4)
    assert cold[0]["units"] == {"humidity_pct": "%RH", "temperature_c": "°C"}
    assert "energy" not in cold[0]
    assert cold[1]["reason"] in ("change", "heartbeat")
    assert cold[-1]["values"]["temperature_c"] > cold[0]["values"]["temperature_c"]
    assert cold[0]["t"].endswith("Z")


def test_sensors_service__two_meters_share_one_rs485_line(tmp_path: Path) -> None:
    """The template says several meters can share one RS-485 line (one port, different unit ids). Each meter's
    driver opened the port itself: the second found it locked and never read. Now the line is opened once."""
    line = ModbusTwin(
        tmp_path / "ttyRS485",
        unit_id=1,
        scenario=sdm120_scenario(start_kwh=500.0, time_scale=3000),
        others={7: xy_md02_scenario(start_c=3.0, drift_c_per_s=1.0)},
    ).start()
    meters = [
        {
            "name": "main-board",
            "port": line.path,
            "map": "eastron-sdm120",
            "unit_id": 1,
            "baud": 9600,
            "poll_interval_s": 0.1,
        },
        {"name": "cold-room", "port": line.path, "map": "xy-md02", "unit_id": 7, "baud": 9600, "poll_interval_s": 0.1},
    ]
    cfg = parse_config(
        {
            "profile": "sensors",
            "device": {"id": "d1", "site": "wh1"},
            "state_dir": str(tmp_path),
            "sensors": {"max_interval_s": 1.0, "meters": meters},
        }
    )
    records: list[dict[str, Any]] = []
    lock = threading.Lock()

    def emit(_kind: str, body: dict[str, Any]) -> None:
        with lock:
            records.append(body)

    service = SensorsService()
    service.start(ServiceContext(config=cfg, emit=emit, clock=Clock(), state_dir=tmp_path, stop=threading.Event()))
    try:

        def both(n: int) -> bool:
            with lock:
                return all(sum(b["meter"] == m for b in records) >= n for m in ("main-board", "cold-room"))

        assert wait_for(lambda: both(3), 10), service.status()
    finally:
        service.stop()
        line.stop()
    assert line.bad_requests == 0, "no request crossed another on the wire"
    cold = [b for b in records if b["meter"] == "cold-room"]
    assert cold[0]["units"] == {"humidity_pct": "%RH", "temperature_c": "°C"}
    with pytest.raises(ConfigError, match=r"meters sharing a port \(one RS-485 line\) need different unit_id"):
        parse_config(
            {
                "profile": "sensors",
                "device": {"id": "d", "site": "s"},
                "sensors": {"meters": [meters[0], dict(meters[1], unit_id=1)]},
            },
            "c.toml",
        )
    with pytest.raises(ConfigError, match="the same baud, parity and stop_bits"):
        parse_config(
            {
                "profile": "sensors",
                "device": {"id": "d", "site": "s"},
                "sensors": {"meters": [meters[0], dict(meters[1], baud=19200)]},
            },
            "c.toml",
        )
