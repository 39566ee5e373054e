"""Capture triggers: the still detector on rendered slip photos, the double-scan debouncer, the manual request file."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.demo.slipgen import generate_slip
from edge_agent.pipelines.bench.capture_config import TriggerConfig
from edge_agent.pipelines.bench.triggers import (
    DebounceState,
    StillState,
    changed_frac,
    debounce,
    request_capture,
    request_path,
    step_still,
    take_capture_request,
    thumbnail,
)

CFG = TriggerConfig(mode="still", still_s=0.5)
FRAME_DT_S = 0.1


@pytest.fixture(scope="module")
def scenes() -> dict[str, np.ndarray]:
    slip, _ = generate_slip(11, "typical")
    empty, _ = generate_slip(11, "typical", defect="no_label")  # the same bench without the slip
    other, _ = generate_slip(12, "typical")
    # A quarter size keeps the test quick; the detector looks at a 160 px thumbnail either way.
    return {
        k: cv2.resize(v, (400, 300), interpolation=cv2.INTER_AREA)
        for k, v in {"slip": slip, "empty": empty, "other": other}.items()
    }


def _noisy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise of a few grey levels, as every real frame has."""
    noise = rng.integers(-4, 5, size=image.shape, dtype=np.int16)
    noisy: np.ndarray = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return noisy


def _run(frames: list[np.ndarray], state: StillState, t0: float) -> tuple[list[int], StillState, float]:
    fired = []
    t = t0
    for i, frame in enumerate(frames):
        state, fire = step_still(state, thumbnail(frame, CFG.still_width_px), t, CFG)
        if fire:
            fired.append(i)
        t += FRAME_DT_S
    return fired, state, t


def test_step_still__label_at_rest_is_captured_once(scenes: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    empty = [_noisy(scenes["empty"], rng) for _ in range(8)]
    moving = [np.roll(scenes["slip"], 15 * k, axis=1) for k in range(6, 0, -1)]  # the hand slides it in
    resting = [_noisy(scenes["slip"], rng) for _ in range(15)]
    fired, state, t = _run(empty + moving + resting, StillState(), 0.0)
    assert len(fired) == 1
    # Captured after still_s of rest, not while it moved in.
    first_rest = len(empty) + len(moving)
    assert first_rest + 4 <= fired[0] <= first_rest + 7
    # Taken away, and the bench is empty again: nothing to capture.
    fired, state, t = _run(
        [np.roll(scenes["slip"], 75, axis=0)] + [_noisy(scenes["empty"], rng) for _ in range(10)], state, t
    )
    assert fired == []
    # The next parcel's slip comes to rest: captured.
    fired, state, t = _run([_noisy(scenes["other"], rng) for _ in range(10)], state, t)
    assert len(fired) == 1


def test_step_still__a_hand_wobbling_the_label_does_not_recapture(scenes: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(2)
    frames = [_noisy(scenes["empty"], rng) for _ in range(8)] + [_noisy(scenes["slip"], rng) for _ in range(10)]
    fired, state, t = _run(frames, StillState(), 0.0)
    assert len(fired) == 1
    wobble = [np.roll(scenes["slip"], 10, axis=0), scenes["slip"]] + [_noisy(scenes["slip"], rng) for _ in range(10)]
    fired, _, _ = _run(wobble, state, t)
    assert fired == []


def test_step_still__sensor_noise_alone_never_fires(scenes: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(3)
    fired, _, _ = _run([_noisy(scenes["empty"], rng) for _ in range(30)], StillState(), 0.0)
    assert fired == []


def test_changed_frac__sizes_that_differ_count_as_all_changed() -> None:
    a = np.zeros((10, 10), np.uint8)
    assert changed_frac(a, np.zeros((10, 12), np.uint8), 25) == 1.0
    b = a.copy()
    b[:5] = 200
    assert changed_frac(a, b, 25) == pytest.approx(0.5)


def test_thumbnail__keeps_aspect_and_accepts_grey() -> None:
    assert thumbnail(np.zeros((1200, 1600, 3), np.uint8), 160).shape == (120, 160)
    assert thumbnail(np.zeros((300, 100), np.uint8), 50).shape == (150, 50)


def test_trigger_config__motion_must_be_below_change() -> None:
    with pytest.raises(ValueError, match="motion_frac must be below change_frac"):
        TriggerConfig(motion_frac=0.2, change_frac=0.1)


# ---------------------------------------------------------------- debounce


def test_debounce__double_scan_is_dropped_and_a_later_one_kept() -> None:
    s = DebounceState()
    s, ok1 = debounce(s, "RMA-1", 10.0, 2.0)
    s, ok2 = debounce(s, "RMA-1", 11.5, 2.0)
    s, ok3 = debounce(s, "RMA-2", 11.6, 2.0)
    s, ok4 = debounce(s, "RMA-1", 11.7, 2.0)
    s, ok5 = debounce(s, "RMA-1", 13.8, 2.0)
    assert [ok1, ok2, ok3, ok4, ok5] == [True, False, True, True, True]


@given(st.lists(st.tuples(st.sampled_from("ABC"), st.floats(0, 5)), max_size=60))
def test_debounce__accepted_scans_never_repeat_within_the_window(steps: list[tuple[str, float]]) -> None:
    s, t = DebounceState(), 0.0
    seen: list[tuple[str, float, bool]] = []
    for code, dt in steps:
        t += dt
        s, ok = debounce(s, code, t, 2.0)
        seen.append((code, t, ok))
    accepted = [(c, t_c) for c, t_c, ok in seen if ok]
    for (c1, t1), (c2, t2) in itertools.pairwise(accepted):
        assert c1 != c2 or t2 - t1 >= 2.0
    # A code different from the scan before it is always accepted.
    for (c_prev, _, _), (c, _, ok) in itertools.pairwise(seen):
        assert ok or c == c_prev
    assert not seen or seen[0][2]


# ---------------------------------------------------------------- manual request


def test_request_capture__round_trip_with_code(tmp_path: Path) -> None:
    assert take_capture_request(tmp_path) is None
    path = request_capture(tmp_path, code="RMA-9")
    assert path == request_path(tmp_path) and path.exists()
    req = take_capture_request(tmp_path)
    assert req is not None and req.code == "RMA-9" and req.requested_utc.endswith("+00:00")
    assert take_capture_request(tmp_path) is None  # consumed once
    assert list(path.parent.iterdir()) == []


def test_take_capture_request__malformed_file_still_counts_without_code(tmp_path: Path) -> None:
    path = request_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff{not json")
    req = take_capture_request(tmp_path)
    assert req is not None and req.code is None
    path.write_text(json.dumps(["x"]))
    req = take_capture_request(tmp_path)
    assert req is not None and req.code is None


# ---------------------------------------------------------------- shipped sample


def test_capture_config__shipped_sample_sections_parse_when_uncommented() -> None:
    """Uncomment the first alternative of each capture section in config/bench.toml: it must validate."""
    import re
    import tomllib

    from edge_agent.drivers.camera.driver import OpenCvCameraConfig
    from edge_agent.drivers.scanner.driver import SerialScannerConfig
    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.resources import config_file

    text = config_file("bench.toml").read_text(encoding="utf-8")
    block = text[text.index("# ---------------------------------------------------------------- bench capture") :]
    lines = [re.sub(r"^# (\[bench\.|[a-z_]+ = )", r"\1", line) for line in block.splitlines()]
    data = tomllib.loads("\n".join(lines))
    bench = BenchConfig.model_validate(data["bench"])
    assert isinstance(bench.camera, OpenCvCameraConfig) and bench.camera.source == "/dev/video0"
    assert isinstance(bench.scanner, SerialScannerConfig) and bench.scanner.terminator == "\r"
    assert bench.trigger == TriggerConfig()
