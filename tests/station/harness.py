"""A bench daemon with its station, the folder-camera and scanner twins, and headless Chromium, for tests and screenshots."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import tomlkit

from edge_agent.cli.main import render_config
from edge_agent.demo.bench import demo_slips, write_manifest
from edge_agent.drivers.camera.twin import FolderCameraTwin
from edge_agent.drivers.scanner.twin import ScannerTwin
from edge_agent.settings import load_config, set_value
from edge_agent.spine.keys import generate_key
from tests.broker import free_port
from tests.helpers import wait_until

DEVICE, SITE = "bench-7", "wh-east"
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1366,1000",
    "--lang=en-US",
)


class BenchRig:
    """`edge-agent run` for a bench, as a process, fed by twins; the station on a free loopback port."""

    def __init__(
        self,
        work: Path,
        broker_url: str,
        *,
        station: dict[str, Any] | None = None,
        review: dict[str, Any] | None = None,
    ) -> None:
        self.work = work
        self.broker_url = broker_url
        self.port = free_port()
        self.station = {"port": self.port, **(station or {})}
        self.review = review or {}
        self.scanner = ScannerTwin(link=work / "scanner")
        self.camera = FolderCameraTwin(work / "camera-drop")
        self.proc: subprocess.Popen[bytes] | None = None
        self.cfg_path = work / "config.toml"
        self.log_path = work / "agent.log"
        self.slips, self.truth = demo_slips()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def configure(self) -> Path:
        self.work.mkdir(parents=True, exist_ok=True)
        self.cfg_path.write_text(
            render_config("bench", DEVICE, SITE, self.broker_url, self.work / "state")
            + f'\n[bench.camera]\nkind = "folder"\npath = "{self.camera.folder}"\nsettle_s = 0\npoll_interval_s = 0.05\n'
            + f'\n[bench.scanner]\nkind = "serial"\nport = "{self.scanner.path}"\n',
            encoding="utf-8",
        )
        # Edited as a document, all keys at once: a LAN `listen` is only valid together with its operators file.
        doc = tomlkit.parse(self.cfg_path.read_text(encoding="utf-8"))
        bench = doc["bench"]
        for section, values in (("station", self.station), ("review", self.review)):
            table = bench.setdefault(section, tomlkit.table())  # type: ignore[union-attr]
            for key, value in values.items():
                table[key] = str(value) if isinstance(value, Path) else value
        self.cfg_path.write_text(tomlkit.dumps(doc), encoding="utf-8")
        write_manifest(self.work / "expected-returns.csv", self.truth)
        set_value(self.cfg_path, "bench.validation.manifest", f'"{self.work / "expected-returns.csv"}"')
        set_value(self.cfg_path, "bench.validation.return_window_days", "3650")  # the shipped slips are from 2024-25
        generate_key(load_config(self.cfg_path).key_path)
        return self.cfg_path

    def start(self) -> BenchRig:
        self.scanner.start()
        self.configure()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(self.cfg_path)],
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        ok = wait_until(lambda: self.alive() and self.get("healthz")[0] == 200, 60)
        assert ok, "station did not come up:\n" + self.log()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return request(self.url + path.lstrip("/"), headers=headers)

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.scanner.stop()
        return None if self.proc is None else self.proc.returncode

    def slip(self, name: str) -> dict[str, Any]:
        return dict(self.truth[name])

    def present(self, name: str, scan: str | None = None) -> None:
        """What the operator does: scan the slip's barcode (or `scan`), then lay the slip under the camera."""
        self.scanner.scan(scan if scan is not None else self.truth[name]["order_no"])
        self.camera.drop_bytes((self.slips / name).read_bytes(), ext=Path(name).suffix)

    @property
    def db_path(self) -> Path:
        return load_config(self.cfg_path).db_path

    def pub_key(self) -> Any:
        from edge_agent.spine.keys import load_key

        return load_key(load_config(self.cfg_path).key_path).public


def request(
    url: str, *, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """(status, body) of one plain HTTP request; 4xx/5xx are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback test server
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_chromium(profile_dir: Path | None = None) -> Any:
    """Headless Debian Chromium under chromedriver, with a fresh profile; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    assert paths is not None, "chromium and chromium-driver are needed (apt install chromium chromium-driver)"
    browser, driver = paths
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile_dir or tempfile.mkdtemp(prefix='station-chromium-')}")
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def json_of(body: bytes) -> Any:
    return json.loads(body.decode("utf-8"))
