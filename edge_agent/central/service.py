"""Long-running central processes: the ingest worker (signals, metrics endpoint) and the fleet simulator."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from edge_agent.central.metrics import Metrics
from edge_agent.central.simulate import Publisher, build_fleet, run, write_report
from edge_agent.central.worker import IngestWorker, WorkerSettings
from edge_agent.signals import SignalRelay, stack_dumps
from edge_agent.spine.config import MqttConfig

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """One stop event, set by SIGTERM and SIGINT (systemd stop, Ctrl-C)."""
    stop = threading.Event()
    with SignalRelay(lambda _signum: stop.set()):
        yield stop


def run_ingest(settings: WorkerSettings, *, metrics_port: int | None = None, metrics_addr: str = "127.0.0.1") -> int:
    """Run one worker until SIGTERM/SIGINT; returns an exit code."""
    metrics = Metrics()
    if metrics_port is not None:
        try:
            metrics.serve(metrics_port, metrics_addr)
        except OSError as exc:
            log.error("metrics: cannot listen on %s:%s (%s)", metrics_addr, metrics_port, exc.strerror)
            return 1
        log.info("metrics on http://%s:%s/metrics", metrics_addr, metrics_port)
    with stack_dumps(), stop_on_signals() as stop:
        worker = IngestWorker(settings, stop, metrics)
        worker.run()
    log.info("ingest stopped: %d record(s) stored in %d batch(es)", worker.stored, worker.batches)
    return 1 if worker.failed else 0


def run_simulation(
    m: MqttConfig,
    *,
    devices: int,
    rate_hz: float,
    duration_s: float,
    seed: str,
    site: str,
    misbehave: dict[str, int],
    at_seq: int,
    register_dsn: str | None,
    report_path: str | None,
    records: int | None = None,
    name_prefix: str = "sim",
) -> int:
    fleet = build_fleet(devices, seed=seed, site=site, misbehave=misbehave, at_seq=at_seq, name_prefix=name_prefix)
    if register_dsn:
        from edge_agent.central.db import open_db
        from edge_agent.central.simulate import register_fleet

        db = open_db(register_dsn)
        try:
            n = register_fleet(db, fleet)
        finally:
            db.close()
        log.info("registered %d simulated device(s) in %s", n, db.where)
    pub = Publisher(m, m.client_id or f"edge-central-sim-{seed}")
    pub.connect()
    with stop_on_signals() as stop:
        t0 = time.monotonic()
        try:
            published = run(
                fleet,
                publish=pub.publish,
                prefix=m.topic_prefix,
                rate_hz=rate_hz,
                duration_s=duration_s,
                stop=stop,
                records=records,
            )
            ok = pub.wait_acked(60.0)
        finally:
            pub.close()
    elapsed = time.monotonic() - t0
    if report_path:
        write_report(report_path, fleet, published)
    print(
        f"published {published} message(s) from {devices} device(s) in {elapsed:.1f} s"
        + ("" if ok else f"; only {pub.acked} acknowledged by the broker")
    )
    return 0 if ok else 1
