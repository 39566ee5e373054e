"""Loading a truck config and building its service imports no ML or meter library (run in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("cv2", "numpy", "onnxruntime", "pymodbus", "rapidocr", "zxingcpp")

TRUCK_CONFIG = """
profile = "truck"
state_dir = "{state}"
[device]
id = "truck-1"
site = "depot"
[telematics.gps]
kind = "nmea"
port = "/dev/ttyACM0"
[telematics.fuel]
kind = "elm327"
port = "/dev/ttyUSB0"
[telematics.weight]
kind = "scale"
port = "/dev/ttyUSB1"
"""

PROBE = """
import json, sys
from edge_agent.settings import load_config
from edge_agent.drivers.registry import make_driver

cfg = load_config(sys.argv[1])
after_config = sorted(m for m in {heavy!r} if m in sys.modules)
from edge_agent.app import make_service  # the composition root's own path: PROFILES -> the truck service

service = make_service(cfg)
assert type(service).__name__ == "TelematicsService", type(service)
drivers = [make_driver(d) for d in (cfg.telematics.gps, cfg.telematics.fuel, cfg.telematics.weight)]
after_service = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps({{"config": after_config, "service": after_service, "drivers": [d.name for d in drivers]}}))
"""


def _run(code: str, *args: str) -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, list[str]] = json.loads(out.stdout)
    return result


def test_truck_config__loading_and_building_the_service_import_no_heavy_library(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(TRUCK_CONFIG.format(state=tmp_path / "state"))
    got = _run(PROBE.format(heavy=HEAVY), str(path))
    assert got["config"] == []
    assert got["service"] == []
    assert got["drivers"] == ["gps", "elm327", "scale"]


def test_driver_configs__each_imports_only_pydantic_and_the_stdlib() -> None:
    code = (
        "import json, sys\n"
        "from edge_agent.drivers.registry import DRIVER_KINDS, config_class\n"
        "for kind in DRIVER_KINDS: config_class(kind)\n"
        "import edge_agent.drivers.camera.config, edge_agent.drivers.scanner.config\n"
        "print(json.dumps({'loaded': sorted(m for m in ('serial', 'pynmea2', 'can', 'cantools', *"
        + repr(HEAVY)
        + ") if m in sys.modules)}))\n"
    )
    assert _run(code) == {"loaded": []}


CLI_PROBE = """
import contextlib, io, json, sys
from edge_agent.cli.main import main

with contextlib.redirect_stdout(io.StringIO()):
    rc = main(sys.argv[1:])
print(json.dumps({{"rc": rc, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""

CLI_HEAVY = (*HEAVY, "sqlite_utils", "web3", "eth", "psycopg", "starlette", "uvicorn", "can", "serial", "pynmea2")


def test_cli__status_and_config_check_import_no_heavy_library(tmp_path: Path) -> None:
    # Every CLI call pays for what the parser imports: command groups register with light modules
    # and import their handlers' libraries when those commands run.
    path = tmp_path / "config.toml"
    path.write_text(TRUCK_CONFIG.format(state=tmp_path / "state"))
    for argv in (["status", "--config", str(path)], ["config", "check", "--config", str(path)]):
        got = _run(CLI_PROBE.format(heavy=CLI_HEAVY), *argv)
        assert got == {"rc": 0, "heavy": []}, argv


OUTBOX_PROBE = """
import json, sys
from pathlib import Path
from edge_agent.spine.outbox import Outbox

ob, _ = Outbox.open_checked(Path(sys.argv[1]))  # a fresh file: the schema is built with sqlite-utils
ob.close()
print(json.dumps({"heavy": sorted(m for m in ("numpy", "pandas") if m in sys.modules)}))
"""


def test_outbox__building_the_schema_leaves_numpy_unloaded(tmp_path: Path) -> None:
    # sqlite-utils would import numpy (installed with opencv) for type mapping the outbox never uses
    got = _run(OUTBOX_PROBE, str(tmp_path / "outbox.db"))
    assert got == {"heavy": []}
