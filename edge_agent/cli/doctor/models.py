"""Doctor checks of the bench: cameras, the OCR models (hash against the manifest, one timed run) and the
expected-returns manifest."""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_agent.cli.doctor.base import (
    FAIL,
    MANIFEST_OLD_S,
    OCR_SLOW_S,
    OK,
    WARN,
    Check,
    human_s,
)
from edge_agent.settings import AgentConfig

log = logging.getLogger(__name__)


def check_camera(path: str, cam: Any) -> Check:
    """One [bench.camera] section, checked by the camera driver's probe."""
    from edge_agent.drivers.camera.probe import probe

    outcome = probe(cam)
    return Check(f"{path} ({cam.kind})", outcome.status, outcome.message, outcome.remedy)


def check_expected_returns(cfg: AgentConfig, now: datetime) -> Check:
    """The expected-returns manifest the bench would use (central's, else the configured file): readable, how
    many orders, how old. Without one, a letter/digit doubt in a SKU or customer id has nothing to settle it."""
    from edge_agent.pipelines.bench.manifest import ManifestError, active_manifest, configured_path

    name = "expected returns"
    try:
        manifest = active_manifest(cfg.state_dir, configured_path(cfg.bench.validation.manifest, cfg.source))
    except ManifestError as exc:
        path = configured_path(cfg.bench.validation.manifest, cfg.source)
        fix = (
            "fix the path in bench.validation.manifest (edge-agent config set)"
            if path is not None and not path.exists()
            else "fix the file (columns order_no, sku, quantity, customer_id, order_date)"
        )
        return Check(
            name,
            FAIL,
            exc.summary(),
            f"{fix}, or have central send one: until then the bench sends every slip to review (manifest_unreadable)",
        )
    if manifest is None:
        return Check(
            name,
            WARN,
            "no manifest: slips are checked against nothing, and a SKU or customer id whose O/0 or I/1 the "
            "reader cannot tell apart always goes to review",
            "set bench.validation.manifest to the expected-returns CSV or JSON (edge-agent config set), or have "
            "central send one (edge-agent central sign-command --name replace_manifest --manifest FILE)",
        )
    age_s = max(0.0, now.timestamp() - Path(manifest.source).stat().st_mtime)
    where = "from central" if Path(manifest.source).parent == Path(cfg.state_dir) else manifest.source
    n = len(manifest.orders)
    message = f"{n} order{'' if n == 1 else 's'} {where}, updated {human_s(age_s)} ago"
    if age_s > MANIFEST_OLD_S:
        return Check(
            name,
            WARN,
            message,
            "returns announced since then are not in it, and their slips go to review as unknown orders: "
            "update the file, or have central send a new one",
        )
    return Check(name, OK, message)


def _manifest_path(cfg: AgentConfig) -> Path:
    if cfg.bench.ocr.manifest is not None:
        return Path(cfg.bench.ocr.manifest)
    from edge_agent.resources import models_file

    return models_file("manifest.json")


def _model_file(entry: dict[str, Any], manifest: Path) -> Path:
    package = entry.get("package")
    if package:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(f"Python package {package!r} is not installed")
        return Path(spec.origin).parent / str(entry["file"])
    p = Path(entry["file"])
    return p if p.is_absolute() else manifest.parent / p


def check_ocr_models(cfg: AgentConfig, run: bool = True) -> list[Check]:
    from edge_agent.pipelines.bench.ocr_onnx import ModelError, ModelFile, verify_model

    manifest = _manifest_path(cfg)
    model = cfg.bench.ocr.model
    try:
        data = json.loads(manifest.read_text())
        entries: dict[str, dict[str, Any]] = data["models"][model]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [
            Check(
                "ocr models",
                FAIL,
                f"{manifest}: no usable entry for model {model!r} ({exc})",
                "reinstall edge-agent, or fix bench.ocr.manifest",
            )
        ]
    checks = []
    for role, entry in entries.items():
        name = f"ocr model {role}"
        try:
            path = _model_file(entry, manifest)
            if not path.is_file():
                raise FileNotFoundError(f"no file {path}")
        except (OSError, KeyError) as exc:
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{entry.get('file')}: missing ({exc})",
                    f"reinstall the package that ships it ({entry.get('package') or 'see the manifest'})",
                )
            )
            continue
        want = str(entry.get("sha256", "")).lower()
        try:
            # The hash check of the OCR pipeline itself, so doctor and the agent cannot disagree.
            verify_model(ModelFile(role, str(entry.get("name", role)), path, want))
        except ModelError as exc:
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{path}: sha256 differs from the manifest's {want[:12]}... ({str(exc).rsplit(', ', 1)[-1]})",
                    "reinstall it: the file is damaged or a different version",
                )
            )
            continue
        if not run:
            checks.append(Check(name, OK, f"{path.name}: sha256 matches the manifest"))
            continue
        checks.append(_timed_run(name, path))
    return checks


def _timed_run(name: str, path: Path) -> Check:
    """Load the model and run it once on a blank image of a size it accepts; time both."""
    import numpy as np
    import onnxruntime as ort

    t0 = time.perf_counter()
    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else 64) for i, d in enumerate(inp.shape)]
        if len(shape) == 4 and not isinstance(inp.shape[1], int):
            shape[1] = 3
        t1 = time.perf_counter()
        sess.run(None, {inp.name: np.zeros(shape, dtype=np.float32)})
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        return Check(
            name,
            FAIL,
            f"{path.name}: sha256 matches, but it does not run ({str(exc)[:120]})",
            "reinstall onnxruntime for this platform (pip install --force-reinstall onnxruntime)",
        )
    load_s, run_s = t1 - t0, time.perf_counter() - t1
    size = "x".join(map(str, shape))
    msg = f"{path.name}: sha256 matches; loads in {load_s:.2f} s, one {size} run in {run_s * 1000:.0f} ms"
    if load_s + run_s > OCR_SLOW_S:
        return Check(name, WARN, msg, "the device is slow or busy: check `top` and the CPU temperature (throttling)")
    return Check(name, OK, msg)
