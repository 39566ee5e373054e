"""`edge-agent init --profile sensors` output, and `sensors list` / `sensors watch` against meter twins on ptys."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from edge_agent.cli.main import main, render_config
from edge_agent.drivers.modbus.twin import ModbusTwin, sdm120_scenario, xy_md02_scenario
from edge_agent.settings import load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, meters: list[dict[str, object]]) -> Path:
    path = tmp_path / "config.toml"
    lines = ['profile = "sensors"', f'state_dir = "{tmp_path}"', "[device]", 'id = "d1"', 'site = "wh1"']
    for m in meters:
        lines.append("[[sensors.meters]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in m.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- the shipped [sensors] section


def test_sensors_toml__rendered_profile_config_validates(tmp_path: Path) -> None:
    text = render_config("sensors", "dev-1", "wh-1", "mqtt://127.0.0.1:1883", tmp_path)
    assert "[sensors]" in text and "[sensors.grid]" in text
    path = tmp_path / "config.toml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.profile == "sensors"
    assert cfg.sensors.grid.factor == "grid_uk_2025"
    assert cfg.sensors.meters == []


def test_sensors_toml__commented_meter_examples_validate() -> None:
    section = (ROOT / "config" / "sensors.toml").read_text(encoding="utf-8")
    start = section.index("# [[sensors.meters]]")
    # Uncomment the example tables and keys; the prose between them stays comments.
    examples = "\n".join(
        line[2:] if re.match(r"^# (\[|[a-z_]+ = )", line) else line for line in section[start:].splitlines()
    )
    data = tomllib.loads(section[:start] + "\n" + examples)
    cfg = parse_config({"profile": "sensors", "device": {"id": "d", "site": "s"}, **data}, "sensors.toml")
    names = [m.name for m in cfg.sensors.meters]
    assert names == ["main-board", "cold-room-1", "chiller"]
    chiller = cfg.sensors.meters[2]
    assert chiller.energy_register == "energy_kwh"
    assert {r.name for r in chiller.all_registers} == {"supply_temp_c", "energy_kwh"}
    assert cfg.sensors.meters[0].baud == cfg.sensors.meters[1].baud == 9600


# ---------------------------------------------------------------- sensors list


def test_sensors_list__probes_port_and_shows_configured_meter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ModbusTwin(tmp_path / "ttyRS485", scenario=xy_md02_scenario()) as twin:
        cfg = write_config(tmp_path, [{"name": "cold-room", "port": twin.path, "map": "xy-md02"}])
        rc = main(["sensors", "list", "--config", str(cfg), "--port", twin.path, "--json", "--timeout-s", "0.3"])
    assert rc == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    mine = next(e for e in entries if e["port"] == twin.path)
    assert mine["likely"] == "modbus"
    assert mine["configured"] == "meter cold-room (XY XY-MD02 (SHT20), unit 1)"


def test_sensors_list__no_probe_and_missing_port_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "ttyGone")
    cfg = write_config(tmp_path, [])
    assert main(["sensors", "list", "--config", str(cfg), "--port", missing, "--timeout-s", "0.1"]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(missing))
    assert "ttyGone" in line.split(":", 1)[1]  # pyserial's reason names the missing device


def test_sensors_list__exits_1_only_when_no_port_given_could_be_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "ttyGone")
    regular = tmp_path / "notes.txt"
    regular.write_text("not a serial port\n")
    for extra in ([], ["--json"]):
        rc = main(["sensors", "list", "--port", missing, "--port", str(regular), "--timeout-s", "0.1", *extra])
        out, err = capsys.readouterr()
        assert rc == 1
        assert len(out.splitlines()) == 2 and f"{regular}: cannot open" in out  # what was found is still printed
        assert err.count("\n") == 1 and f"could be opened ({missing}, {regular})" in err, err
    with ModbusTwin(tmp_path / "ttyRS485", scenario=xy_md02_scenario()) as twin:
        rc = main(["sensors", "list", "--port", missing, "--port", twin.path, "--json", "--timeout-s", "0.3"])
    out, err = capsys.readouterr()
    assert rc == 0 and err == ""
    assert [json.loads(x)["likely"] for x in out.splitlines()] == [None, "modbus"]


def test_sensors_list__bad_config_exits_2_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, [{"name": "m", "port": "/dev/x", "map": "xy-md02", "parity": "X"}])
    with pytest.raises(SystemExit) as exc:
        main(["sensors", "list", "--config", str(cfg), "--no-probe"])
    assert exc.value.code == 2
    assert 'sensors.meters.m.parity: expected "N" (none), "E" (even) or "O" (odd), got "X"' in capsys.readouterr().err


# ---------------------------------------------------------------- sensors watch


def test_sensors_watch__prints_live_readings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ModbusTwin(tmp_path / "ttySDM", scenario=sdm120_scenario(time_scale=5000)) as twin:
        cfg = write_config(
            tmp_path, [{"name": "main-board", "port": twin.path, "map": "eastron-sdm120", "poll_interval_s": 0.2}]
        )
        rc = main(["sensors", "watch", "main-board", "--config", str(cfg), "--count", "3", "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    readings = [json.loads(line) for line in captured.out.splitlines()]
    assert len(readings) == 3
    kwh = [r["values"]["total_active_energy_kwh"] for r in readings]
    assert kwh == sorted(kwh) and kwh[-1] > kwh[0]
    assert readings[0]["units"]["voltage_v"] == "V"
    assert "watching main-board" in captured.err and "3 reading(s)" in captured.err


def test_sensors_watch__text_lines_with_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ModbusTwin(tmp_path / "ttyMD", scenario=xy_md02_scenario(start_c=-5.0, drift_c_per_s=0.0)) as twin:
        cfg = write_config(tmp_path, [{"name": "freezer", "port": twin.path, "map": "xy-md02", "poll_interval_s": 0.2}])
        assert main(["sensors", "watch", "freezer", "--config", str(cfg), "--count", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"\d\d:\d\d:\d\d  humidity_pct=61\.5 %RH  temperature_c=-5 °C", line)


def test_sensors_watch__unknown_meter_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, [{"name": "a", "port": "/dev/x", "map": "xy-md02"}])
    assert main(["sensors", "watch", "b", "--config", str(cfg)]) == 2
    assert "sensors.meters: no meter named 'b' (meters: a)" in capsys.readouterr().err


def test_sensors_watch__with_count_it_gives_up_on_a_meter_that_never_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--count 2` on a missing port waited for ever; a script gets an error instead, with the reason."""
    cfg = write_config(tmp_path, [{"name": "cold-room", "port": str(tmp_path / "ttyNOPE"), "map": "xy-md02"}])
    assert main(["sensors", "watch", "cold-room", "--config", str(cfg), "--count", "2", "--timeout-s", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "cold-room: no reading in 0.5 s (" in err and "ttyNOPE: cannot open" in err


def test_sensors_list__shows_a_trucks_configured_ports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It listed only [[sensors.meters]]: on a truck, the GPS and OBD adapter of the config were missing."""
    text = render_config("truck", "t1", "bj", "mqtt://127.0.0.1:1883", tmp_path / "state")
    text = text.replace(
        "[telematics.gps]", f'[telematics.fuel]\nkind = "elm327"\nport = "{tmp_path}/obd"\n\n[telematics.gps]'
    )
    path = tmp_path / "config.toml"
    path.write_text(text)
    gps_port = load_config(path).telematics.gps.port  # type: ignore[union-attr]
    assert main(["sensors", "list", "--config", str(path), "--no-probe", "--json"]) == 0
    rows = {r["port"]: r["configured"] for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows[gps_port] == "telematics.gps (nmea)" and rows[f"{tmp_path}/obd"] == "telematics.fuel (elm327)"
