"""Camera drivers on real images: folder camera fed by its twin, OpenCV on a real video file, picamera2 absent."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.drivers.base import DeviceUnavailable, DriverError, DriverRunner, FrameError
from edge_agent.drivers.camera.driver import (
    PICAMERA2_MISSING,
    FolderCamera,
    FolderCameraConfig,
    OpenCvCamera,
    OpenCvCameraConfig,
    Picamera2Camera,
    Picamera2Config,
    check_camera,
    decode_image,
    redact_source,
)
from edge_agent.drivers.camera.imagefile import check_image_bytes
from edge_agent.drivers.camera.twin import FolderCameraTwin
from edge_agent.drivers.readings import Frame
from edge_agent.errors import ConfigError
from edge_agent.settings import parse_config
from tests.bombs import bomb_png
from tests.helpers import wait_until

DATA = Path(__file__).parents[1] / "data" / "bench_capture"
EAN_PHOTO = DATA / "ean13-2_04.png"
CODE128_SCAN = DATA / "code128-3_1.png"


def _imread(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None
    return image


def _expected(image_path: Path) -> str:
    return image_path.with_suffix(".txt").read_text().strip()


def _folder_cfg(tmp_path: Path, **kw: object) -> FolderCameraConfig:
    return FolderCameraConfig.model_validate({"kind": "folder", "path": tmp_path / "drop", "settle_s": 0, **kw})


def _read(cam: FolderCamera, timeout_s: float = 2.0) -> Frame | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frame = cam.read(0.2)
        if frame is not None:
            return frame
    return None


# ---------------------------------------------------------------- folder camera


def test_folder_camera__reads_dropped_photo_pixel_exact_and_moves_it(tmp_path: Path) -> None:
    cfg = _folder_cfg(tmp_path, after="move")
    twin = FolderCameraTwin(cfg.path)
    dropped = twin.drop(EAN_PHOTO)
    cam = FolderCamera(cfg)
    cam.open()
    frame = _read(cam)
    assert frame is not None
    assert np.array_equal(np.asarray(frame.image), _imread(EAN_PHOTO))
    assert [r.text for r in zxingcpp.read_barcodes(np.asarray(frame.image))] == [_expected(EAN_PHOTO)]
    assert not dropped.exists()
    assert frame.path is not None
    assert Path(frame.path).parent == cfg.path / "processed"
    assert Path(frame.path).read_bytes() == EAN_PHOTO.read_bytes()
    assert cam.read(0.1) is None  # each file is read once
    cam.close()


def test_folder_camera__deletes_by_default_leaving_nothing(tmp_path: Path) -> None:
    cfg = _folder_cfg(tmp_path)
    FolderCameraTwin(cfg.path).drop(CODE128_SCAN)
    cam = FolderCamera(cfg)
    cam.open()
    frame = _read(cam)
    assert frame is not None
    assert frame.path is None
    assert [p.name for p in cfg.path.iterdir()] == ["rejected"]


def test_folder_camera__oldest_file_first(tmp_path: Path) -> None:
    cfg = _folder_cfg(tmp_path)
    twin = FolderCameraTwin(cfg.path)
    first = twin.drop(CODE128_SCAN)
    second = twin.drop(EAN_PHOTO)
    os.utime(first, (time.time() - 10, time.time() - 10))
    os.utime(second, (time.time() - 5, time.time() - 5))
    cam = FolderCamera(cfg)
    cam.open()
    a, b = _read(cam), _read(cam)
    assert a is not None and b is not None
    assert np.asarray(a.image).shape == _imread(CODE128_SCAN).shape
    assert np.asarray(b.image).shape == _imread(EAN_PHOTO).shape


def test_folder_camera__ignores_temp_and_partial_uploads(tmp_path: Path) -> None:
    cfg = _folder_cfg(tmp_path)
    cfg.path.mkdir()
    data = EAN_PHOTO.read_bytes()
    for name in (".IMG_1.png.tmp", "IMG_2.png.part", ".hidden.png", "notes.txt"):
        (cfg.path / name).write_bytes(data)
    cam = FolderCamera(cfg)
    cam.open()
    assert cam.read(0.2) is None
    assert sorted(p.name for p in cfg.path.iterdir() if p.is_file()) == [
        ".IMG_1.png.tmp",
        ".hidden.png",
        "IMG_2.png.part",
        "notes.txt",
    ]  # all left alone


def test_folder_camera__waits_until_an_in_place_upload_settles(tmp_path: Path) -> None:
    cfg = _folder_cfg(tmp_path, settle_s=0.4)
    twin = FolderCameraTwin(cfg.path, atomic=False)
    path = twin.drop(EAN_PHOTO)
    cam = FolderCamera(cfg)
    cam.open()
    assert cam.read(0.1) is None  # still "uploading" (too fresh)
    assert path.exists()
    frame = _read(cam, 2.0)
    assert frame is not None
    assert np.array_equal(np.asarray(frame.image), _imread(EAN_PHOTO))


def test_folder_camera__broken_image_is_rejected_with_its_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _folder_cfg(tmp_path)
    twin = FolderCameraTwin(cfg.path)
    bad = twin.drop_bytes(EAN_PHOTO.read_bytes()[:200], ".png", name="IMG_0001.png")
    os.utime(bad, (time.time() - 5, time.time() - 5))
    twin.drop(CODE128_SCAN)
    cam = FolderCamera(cfg)
    cam.open()
    with pytest.raises(FrameError, match=r"IMG_0001\.png: not a readable image"):
        cam.read(1.0)
    assert (cfg.path / "rejected" / "IMG_0001.png").exists()
    assert cam.rejected == 1
    # the technician sees it in the log at WARNING (the runner counts bad frames at debug only)
    [warned] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "IMG_0001.png: not a readable image" in warned.getMessage()
    assert f"moved to {cfg.path / 'rejected' / 'IMG_0001.png'}" in warned.getMessage()
    frame = _read(cam)  # the next good file still comes through
    assert frame is not None
    assert [r.text for r in zxingcpp.read_barcodes(np.asarray(frame.image))] == [_expected(CODE128_SCAN)]


def test_folder_camera__empty_file_says_so(tmp_path: Path) -> None:
    cfg = _folder_cfg(tmp_path)
    FolderCameraTwin(cfg.path).drop_bytes(b"", ".jpg", name="empty.jpg")
    cam = FolderCamera(cfg)
    cam.open()
    with pytest.raises(FrameError, match=r"empty\.jpg: empty file"):
        cam.read(1.0)


@pytest.mark.parametrize(("side", "declared"), [(12000, "12000x12000 px"), (30000, "more than 179 megapixels")])
def test_folder_camera__decompression_bomb_refused_from_its_header(tmp_path: Path, side: int, declared: str) -> None:
    cfg = _folder_cfg(tmp_path)
    twin = FolderCameraTwin(cfg.path)
    bomb = twin.drop_bytes(bomb_png(side, side), ".png", name="bomb.png")
    assert bomb.stat().st_size < 200_000  # a small file on disk
    os.utime(bomb, (time.time() - 5, time.time() - 5))
    twin.drop(CODE128_SCAN)
    cam = FolderCamera(cfg)
    cam.open()
    with pytest.raises(
        FrameError, match=rf"bomb\.png: image too large: its header declares {declared}.*before decoding"
    ):
        cam.read(1.0)
    # moved aside, so a restart does not meet it again; the next photo still comes through
    assert (cfg.path / "rejected" / "bomb.png").exists() and not bomb.exists()
    frame = _read(cam)
    assert frame is not None and frame.image.shape[:2] == _imread(CODE128_SCAN).shape[:2]


def test_check_image_bytes__size_limit_and_unknown_header() -> None:
    assert check_image_bytes(bomb_png(100, 80), "ok.png") == (100, 80)
    with pytest.raises(FrameError, match=r"small\.png: image too large: its header declares 100x80 px"):
        check_image_bytes(bomb_png(100, 80), "small.png", max_pixels=7999)
    with pytest.raises(FrameError, match=r"x\.bin: not a readable image"):
        check_image_bytes(b"GIF87a" + b"\0" * 3, "x.bin")


def test_folder_camera__same_name_twice_is_kept_apart(tmp_path: Path) -> None:
    cfg = _folder_cfg(tmp_path, after="move")
    twin = FolderCameraTwin(cfg.path)
    cam = FolderCamera(cfg)
    cam.open()
    twin.drop_bytes(EAN_PHOTO.read_bytes(), name="shot.png")
    first = _read(cam)
    twin.drop_bytes(CODE128_SCAN.read_bytes(), name="shot.png")
    second = _read(cam)
    assert first is not None and second is not None and first.path != second.path
    assert Path(str(first.path)).read_bytes() == EAN_PHOTO.read_bytes()
    assert Path(str(second.path)).read_bytes() == CODE128_SCAN.read_bytes()


def test_folder_camera__missing_folder_is_device_unavailable(tmp_path: Path) -> None:
    cam = FolderCamera(_folder_cfg(tmp_path))
    with pytest.raises(DeviceUnavailable, match=r"drop: folder not found \(is the camera's share mounted\?\)"):
        cam.open()


def test_folder_camera__runner_recovers_when_share_comes_back(tmp_path: Path) -> None:
    cfg = _folder_cfg(tmp_path)
    got: list[Frame] = []
    stop = threading.Event()
    runner = DriverRunner(
        FolderCamera(cfg), got.append, stop, backoff_min_s=0.05, backoff_max_s=0.1, read_timeout_s=0.1
    )
    runner.start()
    try:
        assert wait_until(lambda: runner.last_error is not None, 3), "the missing folder was not reported"
        assert not runner.connected
        FolderCameraTwin(cfg.path).drop(CODE128_SCAN)  # the share is mounted again
        deadline = time.monotonic() + 3
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(got) == 1
        # The share goes away mid-run: the runner notices and reopens once it is back.
        for p in cfg.path.rglob("*"):
            if p.is_file():
                p.unlink()
        for p in sorted(cfg.path.rglob("*"), reverse=True):
            p.rmdir()
        cfg.path.rmdir()
        assert wait_until(lambda: not runner.connected, 3), "the share going away was not noticed"
        FolderCameraTwin(cfg.path).drop(EAN_PHOTO)
        deadline = time.monotonic() + 3
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(got) == 2
        assert runner.reconnects >= 1
    finally:
        stop.set()
        runner.join()


def test_folder_camera_twin__play_drops_in_order(tmp_path: Path) -> None:
    cfg = _folder_cfg(tmp_path)
    twin = FolderCameraTwin(cfg.path).play([CODE128_SCAN, EAN_PHOTO], interval_s=0.05)
    cam = FolderCamera(cfg)
    cam.open()
    frames = [_read(cam), _read(cam)]
    twin.stop()
    texts = [zxingcpp.read_barcodes(np.asarray(f.image))[0].text for f in frames if f is not None]
    assert texts == [_expected(CODE128_SCAN), _expected(EAN_PHOTO)]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_decode_image__any_bytes_give_an_image_or_frame_error(data: bytes) -> None:
    try:
        image = decode_image(data, "x.jpg")
    except FrameError as exc:
        assert str(exc).startswith("x.jpg: ")
    else:
        assert image.ndim == 3


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=EAN_PHOTO.stat().st_size - 1))
def test_decode_image__truncated_photo_never_crashes(cut: int) -> None:
    data = EAN_PHOTO.read_bytes()[:cut]
    try:
        image = decode_image(data, "cut.png")
    except FrameError as exc:
        assert "cut.png" in str(exc)
    else:
        assert image.shape[2] == 3


# ---------------------------------------------------------------- OpenCV


def _write_video(path: Path, n: int = 12) -> list[float]:
    """A real MJPG AVI whose frames have known brightness levels; returns those levels."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (160, 120))
    assert writer.isOpened()
    levels = [float(20 + 15 * i) for i in range(n)]
    for level in levels:
        writer.write(np.full((120, 160, 3), level, np.uint8))
    writer.release()
    return levels


def test_opencv_camera__reads_frames_from_a_real_stream(tmp_path: Path) -> None:
    video = tmp_path / "cam.avi"
    levels = _write_video(video)
    cam = OpenCvCamera(OpenCvCameraConfig(kind="opencv", source=str(video), max_fps=None))
    cam.open()
    seen = []
    for _ in levels:
        frame = cam.read(1.0)
        assert frame is not None
        assert np.asarray(frame.image).shape == (120, 160, 3)
        seen.append(float(np.asarray(frame.image).mean()))
    cam.close()
    cam.close()  # idempotent
    assert seen == pytest.approx(levels, abs=3)


def _write_numbered_video(path: Path, n: int) -> None:
    """A real MJPG AVI of 320x240 frames, each showing its index in binary as ten black or white stripes."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (320, 240))
    assert writer.isOpened()
    for i in range(n):
        image = np.zeros((240, 320, 3), np.uint8)
        for bit in range(10):
            if i >> bit & 1:
                image[:, bit * 32 : (bit + 1) * 32] = 255
        writer.write(image)
    writer.release()


def _frame_index(frame: Frame) -> int:
    image = np.asarray(frame.image)
    return sum(1 << bit for bit in range(10) if image[:, bit * 32 + 6 : (bit + 1) * 32 - 6].mean() > 128)


def test_opencv_camera__max_fps_hands_on_fresh_frames_only(tmp_path: Path) -> None:
    """Two reads in a row: the second waits out the period (1 / max_fps), grabbing meanwhile, so it hands on
    the freshest frame rather than the next one. A file decodes far faster than real time (well under 1 ms a
    frame here; 10 ms would still do), so frames are grabbed and dropped within the 20 ms."""
    video = tmp_path / "cam.avi"
    _write_numbered_video(video, 400)
    cam = OpenCvCamera(OpenCvCameraConfig(kind="opencv", source=str(video), max_fps=50))
    cam.open()
    try:
        first, second = cam.read(1.0), cam.read(1.0)
    finally:
        cam.close()
    assert first is not None and second is not None
    assert second.t_mono - first.t_mono >= 0.02
    assert _frame_index(first) == 0
    assert _frame_index(second) >= 2, "the frames grabbed while waiting were dropped"


def test_opencv_camera__silent_stream_raises_and_runner_reopens(tmp_path: Path) -> None:
    video = tmp_path / "cam.avi"
    levels = _write_video(video, n=5)
    got: list[Frame] = []
    stop = threading.Event()
    cfg = OpenCvCameraConfig(kind="opencv", source=str(video), max_fps=None, silence_timeout_s=0.2)
    cam = OpenCvCamera(cfg)
    cam.open()
    for _ in levels:
        assert cam.read(1.0) is not None
    with pytest.raises(DeviceUnavailable, match=r"no frame for 0.2 s \(camera stopped delivering\)"):
        for _ in range(20):
            cam.read(0.1)
    cam.close()
    runner = DriverRunner(cam, got.append, stop, backoff_min_s=0.05, backoff_max_s=0.1, read_timeout_s=0.1)
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while runner.reconnects < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        runner.join()
    assert runner.reconnects >= 2
    assert len(got) >= 2 * len(levels)  # every reopen delivered the stream again


def test_opencv_camera__missing_device_is_device_unavailable(tmp_path: Path) -> None:
    cam = OpenCvCamera(OpenCvCameraConfig(kind="opencv", source=str(tmp_path / "video9")))
    with pytest.raises(DeviceUnavailable, match=r"video9: no such camera device or file"):
        cam.open()
    with pytest.raises(DeviceUnavailable, match="not open"):
        cam.read(0.1)


# ---------------------------------------------------------------- picamera2


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here")
def test_picamera2_camera__missing_library_says_how_to_install() -> None:
    cfg = Picamera2Config(kind="picamera2")
    with pytest.raises(
        DriverError,
        match=r"picamera2 not installed: apt install python3-picamera2 and create "
        r"the venv with --system-site-packages",
    ):
        check_camera(cfg)
    with pytest.raises(DeviceUnavailable, match="apt install python3-picamera2"):
        Picamera2Camera(cfg).open()
    assert "python3-picamera2" in PICAMERA2_MISSING


# ---------------------------------------------------------------- config


def _bench(section: dict[str, object]) -> object:
    return parse_config({"profile": "bench", "device": {"id": "b1", "site": "s1"}, "bench": section}, "config.toml")


def test_camera_config__kind_picks_the_model(tmp_path: Path) -> None:
    still = {"mode": "still"}  # scan-then-capture would need a scanner section
    cfg = _bench({"camera": {"kind": "opencv", "source": "rtsp://10.0.0.9/stream1", "width": 1920}, "trigger": still})
    assert isinstance(cfg.bench.camera, OpenCvCameraConfig)  # type: ignore[attr-defined]
    cfg = _bench({"camera": {"kind": "folder", "path": str(tmp_path)}, "trigger": still})
    assert isinstance(cfg.bench.camera, FolderCameraConfig)  # type: ignore[attr-defined]


def test_camera_config__unknown_kind_names_the_choices() -> None:
    with pytest.raises(
        ConfigError,
        match=r'config.toml: bench.camera: expected a table with kind = "folder", '
        r'"opencv" or "picamera2"',
    ):
        _bench({"camera": {"kind": "webcam"}})


def test_camera_config__unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"bench\.camera\.path_to: unknown key"):
        _bench({"camera": {"kind": "folder", "path": "/srv/ftp", "path_to": "x"}})


def test_opencv_camera__rtsp_password_never_reaches_the_error(tmp_path: Path) -> None:
    cfg = OpenCvCameraConfig(kind="opencv", source="rtsp://admin:s3cret@127.0.0.1:1/stream1", open_timeout_s=1)
    cam = OpenCvCamera(cfg)
    with pytest.raises(DeviceUnavailable, match=r"rtsp://\*\*\*@127\.0\.0\.1:1/stream1: cannot open camera") as err:
        cam.open()
    assert "s3cret" not in str(err.value) and "admin" not in str(err.value)
    assert redact_source("rtsp://10.0.0.9/live") == "rtsp://10.0.0.9/live"
    assert redact_source(0) == "0"
