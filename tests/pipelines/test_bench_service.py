"""The bench service end to end: scanner and camera twins, the real Inspector (real OCR), records, review queue."""

from __future__ import annotations

import importlib.util
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.cli.main import main as cli_main
from edge_agent.demo.slipgen import generate_slip
from edge_agent.drivers.camera.twin import FolderCameraTwin
from edge_agent.drivers.scanner.twin import ScannerTwin
from edge_agent.errors import ConfigError
from edge_agent.pipelines.bench.inspect import Inspector
from edge_agent.pipelines.bench.manifest import parse_manifest, replace_manifest
from edge_agent.pipelines.bench.review import IMAGES_DIR, ReviewQueue, queue_path
from edge_agent.pipelines.bench.service import BenchService
from edge_agent.service import ServiceContext
from edge_agent.settings import AgentConfig, load_config, parse_config
from edge_agent.spine.clock import Clock

STX, ETX = "\x02", "\x03"


class Records:
    """A list-collecting emit: the honest seam where the spine would sign and chain."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def emit(self, kind: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.items.append((kind, body))

    def of(self, kind: str, event: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [b for k, b in self.items if k == kind and (event is None or b.get("event") == event)]


def _wait(cond: Callable[[], object], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def slips() -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    return {
        "good": generate_slip(1, "clean"),
        "blurred": generate_slip(4, "clean", defect="blur"),
        "other": generate_slip(2, "clean"),
    }


def _bench_cfg(tmp_path: Path, bench: dict[str, Any]) -> AgentConfig:
    return parse_config(
        {
            "profile": "bench",
            "device": {"id": "bench-1", "site": "wh1"},
            "state_dir": str(tmp_path / "state"),
            "bench": bench,
        },
        "config.toml",
    )


def _inspector(cfg: AgentConfig, truth: dict[str, Any]) -> Inspector:
    # The generated slips carry fixed dates: inspect them as on a day inside the return window.
    today = date.fromisoformat(truth["return_date"]) + timedelta(days=3)
    # The expected returns, as a bench has them: they settle a SKU whose 0/O the photo leaves open.
    row = f"{truth['order_no']},{truth['sku']},{int(truth['quantity']) + 1},{truth['customer_id']}\n"
    manifest = parse_manifest(("order_no,sku,quantity,customer_id\n" + row).encode(), "expected-returns.csv")
    return Inspector(cfg.bench, today=lambda: today, manifest=manifest)


@pytest.fixture
def folder_bench(
    tmp_path: Path, slips: dict[str, tuple[np.ndarray, dict[str, Any]]]
) -> Iterator[tuple[BenchService, Records, ScannerTwin, FolderCameraTwin, AgentConfig]]:
    twin = ScannerTwin(tmp_path / "ttyACM0", prefix=STX, suffix=ETX, terminator="\r\n")
    twin.start()
    cfg = _bench_cfg(
        tmp_path,
        {
            "camera": {"kind": "folder", "path": str(tmp_path / "drop"), "settle_s": 0, "poll_interval_s": 0.05},
            "scanner": {
                "kind": "serial",
                "port": twin.path,
                "prefix": STX,
                "suffix": ETX,
                "terminator": "\r\n",
                "name": "rf-1",
            },
            "trigger": {"timeout_s": 2.5, "debounce_s": 2.0},
        },
    )
    records = Records()
    svc = BenchService(inspector=_inspector(cfg, slips["good"][1]))
    camera = FolderCameraTwin(tmp_path / "drop")
    ctx = ServiceContext(config=cfg, emit=records.emit, clock=Clock(), state_dir=cfg.state_dir, stop=threading.Event())
    svc.start(ctx)
    try:
        yield svc, records, twin, camera, cfg
    finally:
        svc.stop()
        twin.stop()


def test_bench_service__confident_slip_becomes_a_return_inspection(
    folder_bench: tuple[BenchService, Records, ScannerTwin, FolderCameraTwin, AgentConfig],
    slips: dict[str, tuple[np.ndarray, dict[str, Any]]],
) -> None:
    svc, records, scanner, camera, cfg = folder_bench
    image, truth = slips["good"]
    _wait(lambda: svc.status()["scanner"]["connected"])
    scanner.scan(truth["order_no"])
    scanner.scan(truth["order_no"])  # the worker pulls the trigger twice: one parcel
    _wait(lambda: svc.status()["counts"]["double_scans"] == 1)
    camera.drop(image, ".png")
    _wait(lambda: records.of("return_inspection"))
    assert svc.heartbeat() > time.monotonic() - 2
    svc.stop()  # the worker is joined: whatever it would emit for this photo is emitted
    [body] = records.of("return_inspection")
    assert body["fields"]["order_no"] == truth["order_no"]
    assert body["fields"]["sku"] == truth["sku"]
    assert body["fields"]["quantity"] == truth["quantity"]
    assert body["order_check"]["scan"] == truth["order_no"] and body["order_check"]["agree"] is True
    assert body["human_reviewed"] is False and body["review_reasons"] == []
    assert body["capture"]["trigger"] == "file" and body["capture"]["scanner"] == "rf-1"
    assert body["capture"]["scan_to_photo_ms"] > 0
    assert truth["phone"] not in repr(body) and truth["name"] not in repr(body)
    st = svc.status()
    assert st["counts"]["double_scans"] == 1 and st["counts"]["emitted"] == 1
    assert st["counts"]["queued_for_review"] == 0
    # Nothing raw is kept for an accepted slip: not in the camera folder, not in the state dir.
    assert list((cfg.state_dir / IMAGES_DIR).glob("*")) == []
    assert not (cfg.state_dir / "images").exists()
    assert [p for p in camera.folder.iterdir() if p.is_file()] == []


def test_bench_service__doubtful_slip_waits_for_review_then_is_emitted(
    folder_bench: tuple[BenchService, Records, ScannerTwin, FolderCameraTwin, AgentConfig],
    slips: dict[str, tuple[np.ndarray, dict[str, Any]]],
) -> None:
    svc, records, scanner, camera, cfg = folder_bench
    image, truth = slips["blurred"]
    _wait(lambda: svc.status()["scanner"]["connected"])
    camera.drop(image)  # photo first, then the scan: paired all the same
    _wait(lambda: svc.status()["camera"]["frames_ok"] == 1)
    scanner.scan(truth["order_no"])
    _wait(lambda: records.of("event", "bench_review_queued"))
    [event] = records.of("event", "bench_review_queued")
    assert "missing_field" in event["reasons"]  # read first: the blurred photo is read, and falls short
    assert set(event) == {"event", "review_id", "reasons"}  # no field values, no personal data
    assert records.of("return_inspection") == []
    with ReviewQueue(queue_path(cfg.state_dir)) as rq:
        [item] = rq.list("pending")
        assert item.id == event["review_id"]
        assert item.body["order_check"]["scan"] == truth["order_no"]
        assert {r["field"] for r in item.body["retake"]} >= {"sku"}  # a retake, with the field and the cause
        assert all(r["cause"].startswith("blurry") for r in item.body["retake"])
        assert item.image_path is not None and item.image_path.parent == cfg.state_dir / IMAGES_DIR
        assert stat.S_IMODE(item.image_path.stat().st_mode) == 0o600
        kept = cv2.imread(str(item.image_path))
        assert kept is not None and kept.shape == image.shape
        rq.correct(item.id, "tester", {"sku": truth["sku"]}, "read from the slip")
    _wait(lambda: records.of("return_inspection"), 5)
    [body] = records.of("return_inspection")
    assert body["human_reviewed"] is True and body["review_id"] == item.id
    assert body["fields"]["order_no"] == truth["order_no"]  # from the scan: the blurred photo was unreadable
    assert body["fields"]["sku"] == truth["sku"] and body["field_source"]["sku"] == "review"

    # The worker emits the record, then marks the item: wait for the mark, do not race it.
    def emitted() -> bool:
        with ReviewQueue(queue_path(cfg.state_dir)) as rq:
            return rq.get(item.id).status == "emitted"

    _wait(emitted, 5)
    with ReviewQueue(queue_path(cfg.state_dir)) as rq:
        assert rq.get(item.id).status == "emitted"
    assert not item.image_path.exists()  # kept until reviewed, and no longer


def test_bench_service__scan_without_photo_is_reported(
    folder_bench: tuple[BenchService, Records, ScannerTwin, FolderCameraTwin, AgentConfig],
) -> None:
    svc, records, scanner, _camera, _cfg = folder_bench
    _wait(lambda: svc.status()["scanner"]["connected"])
    scanner.scan("251120-000000000000001")
    _wait(lambda: records.of("event", "bench_scan_without_photo"), 6)
    assert records.of("event", "bench_scan_without_photo") == [{"event": "bench_scan_without_photo", "scanner": "rf-1"}]
    assert svc.status()["counts"]["scans_without_photo"] == 1


def test_bench_service__broken_file_does_not_stop_the_bench(
    folder_bench: tuple[BenchService, Records, ScannerTwin, FolderCameraTwin, AgentConfig],
    slips: dict[str, tuple[np.ndarray, dict[str, Any]]],
) -> None:
    svc, records, scanner, camera, _cfg = folder_bench
    image, truth = slips["good"]
    camera.drop_bytes(b"\xff\xd8\xff\xe0 not really a jpeg", ".jpg")
    _wait(lambda: svc.status()["camera"]["frames_bad"] == 1, 5)
    scanner.scan(truth["order_no"])
    camera.drop(image, ".png")
    _wait(lambda: records.of("return_inspection"))
    assert (camera.folder / "rejected").is_dir() and len(list((camera.folder / "rejected").iterdir())) == 1


def test_bench_service__a_damaged_review_queue_is_moved_aside_and_the_bench_starts(
    tmp_path: Path, slips: dict[str, tuple[np.ndarray, dict[str, Any]]]
) -> None:
    camera = {"kind": "folder", "path": str(tmp_path / "drop"), "settle_s": 0}
    cfg = _bench_cfg(tmp_path, {"camera": camera, "trigger": {"mode": "still"}})
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "review.db").write_bytes(b"this is not a database " * 300)
    svc = BenchService(inspector=_inspector(cfg, slips["good"][1]))
    records = Records()
    ctx = ServiceContext(config=cfg, emit=records.emit, clock=Clock(), state_dir=cfg.state_dir, stop=threading.Event())
    svc.start(ctx)
    try:
        assert [p.name[:18] for p in (tmp_path / "state").glob("review.db.corrupt-*")] == ["review.db.corrupt-"]
        with ReviewQueue(queue_path(cfg.state_dir)) as rq:
            assert rq.counts() == {"pending": 0, "decided": 0, "emitted": 0}
    finally:
        svc.stop()


def test_bench_service__a_damaged_manifest_sends_slips_to_review_until_central_replaces_it(
    tmp_path: Path, slips: dict[str, tuple[np.ndarray, dict[str, Any]]]
) -> None:
    """The bench used to refuse to start on a manifest it could not read, and the agent with it: central could
    not even send a good one. Now it runs, a person checks each slip, and a replaced manifest is taken up."""
    image, truth = slips["good"]
    camera = {"kind": "folder", "path": str(tmp_path / "drop"), "settle_s": 0, "poll_interval_s": 0.05}
    # The slips carry 2025 dates: a window wide enough that the date alone sends none to review.
    bench = {"camera": camera, "trigger": {"mode": "still"}, "validation": {"return_window_days": 3650}}
    cfg = _bench_cfg(tmp_path, bench)
    cfg.state_dir.mkdir(parents=True)
    (cfg.state_dir / "manifest.csv").write_bytes(b"order_no,sku,quantity\n\xff\xfe damaged")
    svc = BenchService()  # its own inspector, which takes the manifest as the daemon's does
    records = Records()
    ctx = ServiceContext(config=cfg, emit=records.emit, clock=Clock(), state_dir=cfg.state_dir, stop=threading.Event())
    svc.start(ctx)
    try:
        problem = svc.status()["manifest"]["problem"]
        assert "manifest.csv" in problem and "UTF-8" in problem
        shot = FolderCameraTwin(tmp_path / "drop")
        shot.drop(image, ".png")
        _wait(lambda: records.of("event", "bench_review_queued"), 60)
        [event] = records.of("event", "bench_review_queued")
        assert "manifest_unreadable" in event["reasons"]
        with ReviewQueue(queue_path(cfg.state_dir)) as rq:
            [item] = rq.list("pending")
        [reason] = [r for r in item.body["review_reasons"] if r["code"] == "manifest_unreadable"]
        assert "order was not checked" in reason["message"] and "manifest.csv" in reason["message"]
        row = f"{truth['order_no']},{truth['sku']},{truth['quantity']},{truth['customer_id']}\n"
        replace_manifest(cfg.state_dir, ("order_no,sku,quantity,customer_id\n" + row).encode())
        _wait(lambda: (svc.status()["manifest"] or {}).get("orders") == 1, 20)
        shot.drop(image, ".png")
        _wait(lambda: records.of("return_inspection"), 60)
        [body] = records.of("return_inspection")
        assert body["review_reasons"] == [] and body["manifest_sha256"] == svc.status()["manifest"]["sha256"]
        assert body["fields"]["sku"] == truth["sku"]
    finally:
        svc.stop()


def test_bench_service__a_manifest_with_many_bad_rows_is_logged_with_their_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    camera = {"kind": "folder", "path": str(tmp_path / "drop"), "settle_s": 0, "poll_interval_s": 0.05}
    cfg = _bench_cfg(tmp_path, {"camera": camera, "trigger": {"mode": "still"}})
    cfg.state_dir.mkdir(parents=True)
    rows = "".join(f"{n},A1,none\n" for n in range(25))
    (cfg.state_dir / "manifest.csv").write_text("order_no,sku,quantity\n" + rows, encoding="utf-8")
    svc = BenchService()
    ctx = ServiceContext(
        config=cfg, emit=Records().emit, clock=Clock(), state_dir=cfg.state_dir, stop=threading.Event()
    )
    caplog.set_level("ERROR", logger="edge_agent.pipelines.bench.service")
    svc.start(ctx)
    try:
        [line] = [r.getMessage() for r in caplog.records if "manifest cannot be read" in r.getMessage()]
        assert "line 2: quantity" in line and "line 4: quantity" in line and "(and 22 more bad rows)" in line
    finally:
        svc.stop()


def _write_video(path: Path, image: np.ndarray, n: int = 3) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 5, (image.shape[1], image.shape[0]))
    for _ in range(n):
        writer.write(image)
    writer.release()


def test_bench_service__manual_capture_from_the_cli(
    tmp_path: Path, slips: dict[str, tuple[np.ndarray, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    image, truth = slips["other"]
    video = tmp_path / "camera.avi"
    _write_video(video, image)
    config = tmp_path / "config.toml"
    config.write_text(f"""profile = "bench"
state_dir = "state"
[device]
id = "bench-2"
site = "wh1"
[bench.camera]
kind = "opencv"
source = "{video}"
silence_timeout_s = 0.3
[bench.trigger]
mode = "manual"
""")
    cfg = load_config(config)
    records = Records()
    svc = BenchService(inspector=_inspector(cfg, truth))
    svc.start(
        ServiceContext(config=cfg, emit=records.emit, clock=Clock(), state_dir=cfg.state_dir, stop=threading.Event())
    )
    try:
        _wait(lambda: svc.status()["camera"]["frames_ok"] > 0, 5)
        rc = cli_main(["bench", "capture", "--config", str(config), "--code", truth["order_no"], "--wait", "5"])
        assert rc == 0
        assert "capture taken by the bench daemon" in capsys.readouterr().out
        _wait(lambda: records.of("return_inspection"))
        [body] = records.of("return_inspection")
    finally:
        svc.stop()
    assert svc.status()["counts"] == {**svc.status()["counts"], "inspected": 1, "emitted": 1, "photos": 1}
    assert body["capture"]["trigger"] == "manual" and body["capture"]["scanner"] == "manual"
    assert body["order_check"] == {**body["order_check"], "scan": truth["order_no"], "agree": True}
    assert body["fields"]["sku"] == truth["sku"]


def test_bench_capture_cli__without_a_daemon_withdraws_the_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('profile = "bench"\nstate_dir = "state"\n[device]\nid = "b"\nsite = "s"\n')
    rc = cli_main(["bench", "capture", "--config", str(config), "--wait", "0.2"])
    assert rc == 1
    assert "did not take the request within 0.2 s" in capsys.readouterr().err
    assert not (tmp_path / "state" / "bench" / "capture.request").exists()


def test_bench_service__camera_section_is_required(tmp_path: Path) -> None:
    cfg = _bench_cfg(tmp_path, {"scanner": {"kind": "serial", "port": "/dev/ttyACM0"}})
    ctx = ServiceContext(
        config=cfg, emit=Records().emit, clock=Clock(), state_dir=cfg.state_dir, stop=threading.Event()
    )
    with pytest.raises(ConfigError, match=r"config: bench\.camera: required for the bench profile"):
        BenchService().start(ctx)


def test_bench_config__scan_then_capture_needs_a_scanner_in_check_and_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `config check` and `run` load the config through the same model: a config one refuses, so does the other.
    camera = {"kind": "folder", "path": str(tmp_path)}
    with pytest.raises(
        ConfigError, match=r'config\.toml: bench\.scanner: expected a \[bench\.scanner\] section.*"scan-then-capture"'
    ):
        _bench_cfg(tmp_path, {"camera": camera})
    path = tmp_path / "config.toml"
    path.write_text(
        f'profile = "bench"\n[device]\nid = "b1"\nsite = "s1"\n[bench.camera]\nkind = "folder"\npath = "{tmp_path}"\n',
        encoding="utf-8",
    )
    assert cli_main(["config", "check", "--config", str(path)]) == 2
    assert "bench.scanner: expected a [bench.scanner] section" in capsys.readouterr().err
    # the other modes need no scanner; a device of another profile carries no bench camera and no rule
    assert _bench_cfg(tmp_path, {"camera": camera, "trigger": {"mode": "manual"}}).bench.scanner is None
    assert parse_config({"profile": "truck", "device": {"id": "t1", "site": "s1"}}).bench.scanner is None


def test_bench_service__streaming_camera_takes_the_frame_after_the_scan(
    tmp_path: Path, slips: dict[str, tuple[np.ndarray, dict[str, Any]]]
) -> None:
    image, truth = slips["good"]
    video = tmp_path / "camera.avi"
    _write_video(video, image, n=2)
    with ScannerTwin(tmp_path / "ttyUSB0") as scanner:
        # The video ends after two frames: the camera "stops delivering", is reopened with backoff
        # and delivers again -- the photo must be a frame from after the scan all the same.
        cfg = _bench_cfg(
            tmp_path,
            {
                "camera": {"kind": "opencv", "source": str(video), "silence_timeout_s": 0.3, "max_fps": 30},
                "scanner": {"kind": "serial", "port": scanner.path},
                "trigger": {"mode": "scan-then-capture", "timeout_s": 5, "capture_delay_s": 0.2},
            },
        )
        records = Records()
        svc = BenchService(inspector=_inspector(cfg, truth))
        svc.start(
            ServiceContext(
                config=cfg, emit=records.emit, clock=Clock(), state_dir=cfg.state_dir, stop=threading.Event()
            )
        )
        try:
            _wait(lambda: svc.status()["camera"]["frames_ok"] > 0 and svc.status()["scanner"]["connected"], 5)
            scanner.scan(truth["order_no"])
            _wait(lambda: records.of("return_inspection"))
        finally:
            svc.stop()
    [body] = records.of("return_inspection")
    assert body["capture"]["trigger"] == "scan"
    assert body["capture"]["scan_to_photo_ms"] >= 200
    assert body["fields"]["order_no"] == truth["order_no"] and body["order_check"]["agree"] is True


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here")
def test_bench_service__missing_picamera2_is_a_clean_config_error(tmp_path: Path) -> None:
    cfg = _bench_cfg(tmp_path, {"camera": {"kind": "picamera2"}, "trigger": {"mode": "manual"}})
    ctx = ServiceContext(
        config=cfg, emit=Records().emit, clock=Clock(), state_dir=cfg.state_dir, stop=threading.Event()
    )
    with pytest.raises(
        ConfigError,
        match=r"config: bench\.camera: picamera2 not installed: apt install "
        r"python3-picamera2 and create the venv with --system-site-packages",
    ):
        BenchService().start(ctx)
