"""The bench demo's simulated bench: an RF scanner twin and a folder-camera twin fed with shipped slips."""

from __future__ import annotations

import csv
import io
import json
import threading
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from edge_agent.demo.runner import free_port
from edge_agent.settings import set_value

SLIP_INTERVAL_S = 6.0


def demo_slips() -> tuple[Path, dict[str, dict[str, Any]]]:
    folder = Path(str(resources.files("edge_agent.demo").joinpath("slips")))
    truth: dict[str, dict[str, Any]] = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    return folder, truth


def sample_window_days(truth: dict[str, dict[str, Any]], today: date | None = None) -> int:
    """A return window (days) that holds every shipped slip's printed date today, plus the usual 30.

    The slips carry fixed dates that age; a fixed window would send them all to review one day.
    """
    today = today or datetime.now(UTC).date()
    oldest = min(date.fromisoformat(str(t["return_date"])) for t in truth.values())
    return min(3650, max(30, (today - oldest).days + 30))  # 3650: the config's upper bound


def sample_day(truth: dict[str, Any]) -> date:
    """The day a sample slip is judged on: the day after its printed return date, as at a real bench."""
    return date.fromisoformat(str(truth["return_date"])) + timedelta(days=1)


class BenchOperator:
    """Plays a warehouse worker: scan a slip's barcode, put the slip under the camera, next one."""

    def __init__(self, scanner: Any, camera: Any, interval_s: float = SLIP_INTERVAL_S) -> None:
        self.scanner = scanner
        self.camera = camera
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = 0

    def start(self) -> BenchOperator:
        self._thread = threading.Thread(target=self._run, name="demo-operator", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        folder, truth = demo_slips()
        names = sorted(truth)
        i = 0
        if self._stop.wait(3.0):  # let the agent load its OCR models first
            return
        while not self._stop.is_set():
            name = names[i % len(names)]
            self.scanner.scan(truth[name]["order_no"])
            self.camera.drop_bytes((folder / name).read_bytes(), ext=Path(name).suffix)
            self.done += 1
            i += 1
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)


def sample_manifest(truth: dict[str, dict[str, Any]]) -> bytes:
    """The expected returns for the demo slips (CSV), as central would send them."""
    out = io.StringIO(newline="")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["order_no", "sku", "quantity", "customer_id"])
    for t in truth.values():
        w.writerow([t["order_no"], t["sku"], max(int(t["quantity"]), 1) + 1, t["customer_id"]])
    return out.getvalue().encode("utf-8")


def write_manifest(path: Path, truth: dict[str, dict[str, Any]]) -> None:
    """The expected returns for the demo slips, as central would send them."""
    path.write_bytes(sample_manifest(truth))


def station_url(cfg_path: Path) -> str:
    """Where the demo's operator station listens (printed so the user can open it)."""
    from edge_agent.settings import load_config

    return load_config(cfg_path).bench.station.url


def setup_bench(cfg_path: Path, work: Path, twins: Any) -> None:
    from edge_agent.drivers.camera.twin import FolderCameraTwin
    from edge_agent.drivers.scanner.twin import ScannerTwin

    _, truth = demo_slips()
    drop = work / "camera-drop"
    drop.mkdir(parents=True, exist_ok=True)
    scanner = twins.add(ScannerTwin(link=work / "scanner"))
    camera = FolderCameraTwin(drop)
    write_manifest(work / "expected-returns.csv", truth)
    twins.add(BenchOperator(scanner, camera))
    with cfg_path.open("a", encoding="utf-8") as f:
        f.write(
            "\n# ---- added by `edge-agent demo`: the twins and the demo's expected returns\n"
            f'[bench.camera]\nkind = "folder"\npath = "{drop}"\n\n'
            f'[bench.scanner]\nkind = "serial"\nport = "{scanner.path}"\n'
        )
    set_value(cfg_path, "bench.validation.manifest", f'"{work / "expected-returns.csv"}"')
    # The operator station on a free loopback port, so a second demo (or a running bench) does not clash.
    set_value(cfg_path, "bench.station.port", str(free_port()))
    # The shipped demo slips carry fixed return dates: a window reaching back to the oldest keeps them in it.
    set_value(cfg_path, "bench.validation.return_window_days", str(sample_window_days(truth)))
