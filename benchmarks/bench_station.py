"""Verdict-to-page latency of the operator station: record committed -> verdict drawn in a real browser.

Run on one core:  taskset -c 0 .venv/bin/python benchmarks/bench_station.py
The real spine (ChainWriter over a SQLite outbox, Ed25519-signed) commits return_inspection
records; its commit hook wakes the station (in-process, on its own thread, as in the daemon);
headless Chromium shows each verdict. The page stamps the moment it drew record `seq`
(performance.timeOrigin + now, epoch ms); latency = that stamp - the record's `ts`, which the
outbox assigns just before the commit, so the figure is an upper bound of commit -> page.

Side by side, in the same run: the same page polling /api/state once a second, which is what a
page without a push channel (or a meta refresh) gives. OCR is left out on purpose: it happens
before the commit and is measured by bench_ocr.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.spine.chain import ChainWriter
from edge_agent.spine.clock import Clock
from edge_agent.spine.keys import generate_key
from edge_agent.spine.outbox import Outbox
from edge_agent.station.config import StationConfig
from edge_agent.station.feed import Levels
from edge_agent.station.server import Station, StationDeps
from tests.broker import free_port
from tests.station.harness import start_chromium

BODY: dict[str, Any] = {
    "v": 1,
    "fields": {
        "order_no": "250817-096066134633838",
        "sku": "J85177-30",
        "quantity": 4,
        "reason": "尺码不合适",
        "customer_id": "VIP24522915",
        "return_date": "2025-08-17",
    },
    "confidence": dict.fromkeys(("order_no", "sku", "quantity", "reason", "customer_id", "return_date"), 0.97),
    "order_check": {"scan": "250817-096066134633838", "barcode": "250817-096066134633838", "agree": True},
    "quality": {"ok": True, "reasons": []},
    "review_reasons": [],
    "timing_ms": {"total": 300.0},
    "human_reviewed": False,
}


def _ms(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000


def measure(mode: str, n: int, work: Path) -> list[float]:
    from selenium.webdriver.support.ui import WebDriverWait

    key = generate_key(work / f"{mode}.key")
    db = work / f"{mode}.db"
    outbox, _ = Outbox.open_checked(db)
    stop = threading.Event()
    station = Station(
        StationDeps(
            StationConfig(port=free_port()),
            "bench-bm",
            "bench",
            db,
            Levels({}),
            None,
            lambda: {"broker": {"connected": True}, "pipeline": {}},
            stop,
        )
    )
    writer = ChainWriter(
        outbox, device="bench-bm", key=key, clock=Clock(), max_bytes=64 << 20, on_commit=station.notify
    )
    writer.start()
    station.start()
    driver = start_chromium(work / f"{mode}-chromium")
    latencies: list[float] = []
    try:
        driver.get(station.url + ("?poll=1000" if mode == "poll" else ""))
        WebDriverWait(driver, 30, 0.02).until(lambda d: d.execute_script("return document.body.dataset.connected"))
        reader = Outbox(db, readonly=True)
        for i in range(n):
            # Spread the commits over the polling period, as slips arrive whenever they arrive.
            time.sleep(0.25 + (i * 0.377) % 1.0)
            writer.emit("return_inspection", BODY)
            writer.flush()
            seq = writer.head_seq
            shown = WebDriverWait(driver, 10, 0.005).until(
                lambda d, s=seq: d.execute_script("return (window.stationShown || {})[arguments[0]]", s)
            )
            [(ts,)] = reader.conn.execute("SELECT ts FROM records WHERE seq = ?", (seq,)).fetchall()
            latencies.append(float(shown) - _ms(ts))
        reader.close()
    finally:
        driver.quit()
        stop.set()
        station.stop()
        writer.stop()
        outbox.close()
    return latencies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=30)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode, label in (("sse", "station: server-sent events (this)"), ("poll", "the same page polling every 1 s")):
            lat = sorted(measure(mode, args.records, Path(tmp)))
            p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
            rows.append((label, statistics.median(lat), p95, lat[-1]))
    print(f"verdict-to-page latency, {args.records} records each, headless Chromium (record ts -> verdict drawn)\n")
    print("| page update | median | p95 | max | goal |")
    print("|---|---|---|---|---|")
    for label, med, p95, top in rows:
        goal = "< 300 ms" if label.startswith("station") else "-"
        print(f"| {label} | {med:.0f} ms | {p95:.0f} ms | {top:.0f} ms | {goal} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
