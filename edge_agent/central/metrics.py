"""Prometheus metrics of an ingest worker: records, verify failures, anomalies, per-device lag, batch time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from edge_agent.central.ingest import Anomaly, BatchResult


class Metrics:
    """One registry per worker (not the global one), served on --metrics-port."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("central_messages", "MQTT messages taken from the broker", registry=r)
        self.records = Counter("central_records_stored", "records verified and committed", registry=r)
        self.duplicates = Counter("central_records_duplicate", "records received again (redelivery)", registry=r)
        self.verify_failures = Counter(
            "central_verify_failures", "records whose signature or hash did not verify", registry=r
        )
        self.resends = Counter("central_resends", "signed resend commands sent to devices for holes", registry=r)
        self.anomalies = Counter("central_anomalies", "anomalies recorded, by kind", ["kind"], registry=r)
        self.lag = Gauge(
            "central_device_lag_seconds", "ingest time minus device time of the newest record", ["device"], registry=r
        )
        self.ingest_lag = Histogram(
            "central_ingest_lag_seconds",
            "per record: commit time minus device time",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=r,
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def batch(self, result: BatchResult, n_messages: int) -> None:
        self.messages.inc(n_messages)
        self.records.inc(result.stored)
        self.duplicates.inc(result.duplicates)
        self.verify_failures.inc(result.verify_failures)
        for a in result.anomalies:
            self.anomalies.labels(a.kind).inc()
        for device, lag in result.lags_s.items():
            self.lag.labels(device).set(lag)
        for lag in result.record_lags_s:
            self.ingest_lag.observe(lag)

    def sweep(self, found: Iterable[Anomaly]) -> None:
        for a in found:
            self.anomalies.labels(a.kind).inc(0)  # the kind appears; counts come from process()
