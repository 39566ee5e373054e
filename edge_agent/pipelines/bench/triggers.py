"""Capture triggers: a frame-differencing still detector, a double-scan debouncer, and the manual request file."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.pipelines.bench.capture_config import TriggerConfig

Gray = NDArray[np.uint8]

REQUEST_NAME = "capture.request"
MAX_REQUEST_BYTES = 4096


# ---------------------------------------------------------------- still detection


def thumbnail(image: Any, width_px: int) -> Gray:
    """A small blurred grey copy of a BGR (or grey) frame: cheap to compare, blind to sensor noise."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    h, w = img.shape[:2]
    height_px = max(1, round(h * width_px / max(w, 1)))
    small = cv2.resize(img, (width_px, height_px), interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.GaussianBlur(small, (5, 5), 0), dtype=np.uint8)


def changed_frac(a: Gray, b: Gray, pixel_delta: int) -> float:
    """Fraction of pixels whose grey level differs by more than pixel_delta (1.0 when the sizes differ)."""
    if a.shape != b.shape:
        return 1.0
    return float(np.count_nonzero(cv2.absdiff(a, b) > pixel_delta)) / a.size


@dataclass(frozen=True, slots=True)
class StillState:
    """What the still detector remembers: the previous thumbnail, since when the scene is still, references."""

    prev: Gray | None = None
    still_since: float | None = None
    empty: Gray | None = None  # the bench without a label: the first still scene, tracked for light drift
    last_shot: Gray | None = None  # the scene last captured, so a label that stays is captured once
    fired: bool = False  # already captured this still period


def step_still(state: StillState, thumb: Gray, t_mono: float, cfg: TriggerConfig) -> tuple[StillState, bool]:
    """Feed one thumbnail; return the new state and True when a label has come to rest and should be captured.

    The bench is assumed empty when the detector starts (its first still scene is the reference).
    """
    if state.prev is None or changed_frac(state.prev, thumb, cfg.pixel_delta) > cfg.motion_frac:
        return StillState(prev=thumb, empty=state.empty, last_shot=state.last_shot), False
    since = state.still_since if state.still_since is not None else t_mono
    if t_mono - since < cfg.still_s or state.fired:
        return StillState(thumb, since, state.empty, state.last_shot, state.fired), False
    # Still long enough, for the first time this still period: decide once.
    if state.empty is None:
        return StillState(thumb, since, thumb, state.last_shot, True), False
    if changed_frac(state.empty, thumb, cfg.pixel_delta) <= cfg.change_frac:
        # Back to the empty bench: follow slow light changes, and let the same label be shot again later.
        return StillState(thumb, since, thumb, None, True), False
    same_as_last = state.last_shot is not None and (
        changed_frac(state.last_shot, thumb, cfg.pixel_delta) <= cfg.change_frac
    )
    return StillState(thumb, since, state.empty, state.last_shot if same_as_last else thumb, True), not same_as_last


# ---------------------------------------------------------------- double scans


@dataclass(frozen=True, slots=True)
class DebounceState:
    """The last accepted code and when it was accepted."""

    code: str | None = None
    t_mono: float = float("-inf")


def debounce(state: DebounceState, code: str, t_mono: float, debounce_s: float) -> tuple[DebounceState, bool]:
    """Accept a scan unless it repeats the last accepted code within debounce_s (a double scan)."""
    if code == state.code and t_mono - state.t_mono < debounce_s:
        return state, False
    return DebounceState(code, t_mono), True


# ---------------------------------------------------------------- manual trigger


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """A manual capture asked for through the request file; `code` pairs it with a typed barcode."""

    requested_utc: str
    code: str | None = None


def request_path(state_dir: Path) -> Path:
    return state_dir / "bench" / REQUEST_NAME


def request_capture(state_dir: Path, code: str | None = None) -> Path:
    """Ask the running bench service for one capture: write the request file atomically; return its path."""
    path = request_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"requested_utc": datetime.now(UTC).isoformat(timespec="milliseconds"), "code": code}
    tmp = path.with_name(f".{REQUEST_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body), encoding="utf-8")
    os.replace(tmp, path)
    return path


def take_capture_request(state_dir: Path) -> CaptureRequest | None:
    """Consume a pending request file, if any (a malformed one still counts as a request without a code)."""
    path = request_path(state_dir)
    claimed = path.with_name(f".{REQUEST_NAME}.taken")
    try:
        os.replace(path, claimed)  # claim it first so a new request written meanwhile is not lost
    except FileNotFoundError:
        return None
    try:
        with claimed.open("rb") as f:
            data = json.loads(f.read(MAX_REQUEST_BYTES))
    except (OSError, ValueError):
        data = {}
    finally:
        with contextlib.suppress(FileNotFoundError):
            claimed.unlink()
    if not isinstance(data, dict):
        data = {}
    code = data.get("code")
    requested = data.get("requested_utc")
    return CaptureRequest(
        requested_utc=requested if isinstance(requested, str) else datetime.now(UTC).isoformat(),
        code=code if isinstance(code, str) and code.strip() else None,
    )
