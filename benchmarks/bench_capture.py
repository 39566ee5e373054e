"""Bench capture benchmark: photo-on-disk to verdict through the running BenchService, beside `edge-agent ocr` per file.

The alternative a site would script without the daemon: a watcher that runs `edge-agent ocr --scan CODE FILE`
for every file the camera drops (a fresh process per slip: Python start, model load, OCR).

Run on one core, as the device has few:  taskset -c 0 /tmp/venv/bin/python benchmarks/bench_capture.py
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import cv2

from edge_agent.demo.slipgen import generate_slip
from edge_agent.drivers.camera.twin import FolderCameraTwin
from edge_agent.drivers.scanner.twin import ScannerTwin
from edge_agent.pipelines.bench.inspect import Inspector
from edge_agent.pipelines.bench.service import BenchService
from edge_agent.proc import memory_mb
from edge_agent.service import ServiceContext
from edge_agent.settings import parse_config
from edge_agent.spine.clock import Clock


def run_service(slips: list[tuple[Path, dict[str, Any]]], work: Path) -> tuple[list[float], list[float], float]:
    """(photo-to-verdict seconds, of which inspection seconds, RSS MB after) through BenchService with twins."""
    verdicts: list[tuple[float, dict[str, Any]]] = []
    done = threading.Event()

    def emit(kind: str, body: dict[str, Any]) -> None:
        if kind == "return_inspection" or body.get("event") == "bench_review_queued":
            verdicts.append((time.monotonic(), body))
            done.set()

    with ScannerTwin(work / "ttyACM0") as scanner:
        cfg = parse_config(
            {
                "profile": "bench",
                "device": {"id": "bench-bm", "site": "lab"},
                "state_dir": str(work / "state"),
                "bench": {
                    "camera": {"kind": "folder", "path": str(work / "drop"), "settle_s": 0, "poll_interval_s": 0.05},
                    "scanner": {"kind": "serial", "port": scanner.path},
                },
            },
            "bench.toml",
        )
        today = date.fromisoformat(slips[0][1]["return_date"]) + timedelta(days=3)
        camera = FolderCameraTwin(work / "drop")
        svc = BenchService(inspector=Inspector(cfg.bench, today=lambda: today))
        svc.start(ServiceContext(config=cfg, emit=emit, clock=Clock(), state_dir=cfg.state_dir, stop=threading.Event()))
        totals, inspect_s = [], []
        try:
            time.sleep(1.0)  # scanner port opened
            for path, truth in slips:
                done.clear()
                scanner.scan(truth["order_no"])
                time.sleep(0.2)
                t0 = time.monotonic()
                camera.drop(path)
                if not done.wait(30):
                    raise RuntimeError("no verdict within 30 s")
                t1, _ = verdicts[-1]
                totals.append(t1 - t0)
                inspect_s.append(svc.last_inspect_ms / 1000 if svc.last_inspect_ms else 0.0)
            rss = memory_mb()
        finally:
            svc.stop()
    return totals, inspect_s, rss


def run_cli(slips: list[tuple[Path, dict[str, Any]]]) -> tuple[list[float], float]:
    """Seconds per `edge-agent ocr --json --scan CODE FILE` process, and the largest child RSS (MB)."""
    exe = [str(Path(sys.executable).with_name("edge-agent"))]
    times = []
    for path, truth in slips:
        t0 = time.monotonic()
        subprocess.run(
            [*exe, "ocr", "--json", "--scan", truth["order_no"], str(path)],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        times.append(time.monotonic() - t0)
    return times, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slips", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        slips = []
        for seed in range(args.slips):
            image, truth = generate_slip(100 + seed, "typical")
            path = work / f"slip{seed}.png"
            cv2.imwrite(str(path), image)
            slips.append((path, truth))
        totals, inspect_s, rss = run_service(slips, work)
        cli_times, cli_rss = run_cli(slips)
    overhead = [t - i for t, i in zip(totals, inspect_s, strict=True)]

    def row(name: str, values: list[float], alt: str, alt_values: list[float] | None) -> str:
        ours = f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f}"
        theirs = f"{statistics.median(alt_values) * 1000:.0f} / {max(alt_values) * 1000:.0f}" if alt_values else "-"
        return f"| {name} | {ours} | {alt} | {theirs} |"

    print(f"\n{args.slips} generated slips (typical tier, 1600x1200 PNG), one core\n")
    print("| measure (ms, median / max) | BenchService (warm engine) | alternative | alternative value |")
    print("|---|---|---|---|")
    print(row("photo on disk -> verdict emitted", totals, "`edge-agent ocr` process per file", cli_times))
    print(row("  of which capture + pairing (folder poll, decode, queue)", overhead, "-", None))
    print(row("  of which inspection (OCR, fields, rules)", inspect_s, "-", None))
    print(
        f"| resident memory (MB) | {rss:.0f} (this whole process: service + slip generator) | largest `ocr` "
        f"process | {cli_rss:.0f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
