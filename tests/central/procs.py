"""Central processes for tests: ingest workers and the fleet simulator as real subprocesses of the CLI."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.central.db import open_db
from edge_agent.spine.verify import Verifier
from tests.broker import Broker
from tests.helpers import wait_until

CLI = [sys.executable, "-m", "edge_agent.cli", "central"]


def cli_out(*args: str) -> str:
    """`edge-agent ARGS...` as a process; its stdout, after asserting it succeeded (its output if not)."""
    r = subprocess.run([sys.executable, "-m", "edge_agent.cli", *args], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


# Every worker a test starts, so the conftest can stop what a failing test left running.
LIVE: list[Worker] = []


class Worker:
    """`edge-agent central ingest` as a process, logging to a file; restartable with the same client id."""

    def __init__(
        self, broker: Broker, dsn: str, log_dir: Path, client_id: str, *extra: str, share: str | None = "ingest"
    ):
        self.broker = broker
        self.dsn = dsn
        self.client_id = client_id
        self.args = [
            *CLI,
            "ingest",
            "--mqtt",
            broker.url,
            "--db",
            dsn,
            "--client-id",
            client_id,
            *(["--share", share] if share else []),
            "--sweep-every-s",
            "0.5",
            *extra,
        ]
        self.log_path = log_dir / f"{client_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout_s: float = 20.0) -> Worker:
        from edge_agent.central.db import open_db

        open_db(self.dsn).close()  # the database exists, as `central devices add` leaves it (ingest makes none)
        mark = self.log_text().count("subscribed to")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        LIVE.append(self)
        if not wait_until(
            lambda: self.log_text().count("subscribed to") > mark or self.proc.poll() is not None, timeout_s
        ):
            raise TimeoutError(
                f"worker {self.client_id} did not subscribe within {timeout_s} s:\n{self.log_text()[-3000:]}"
            )
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.client_id} exited {self.proc.returncode}:\n{self.log_text()[-3000:]}")
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            # SIGABRT: faulthandler writes every thread's stack to the log before the process dies.
            self.proc.send_signal(signal.SIGABRT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            raise AssertionError(
                f"worker {self.client_id} did not stop within 15 s of SIGTERM:\n{self.log_text()[-8000:]}"
            ) from None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def simulate(broker: Broker, dsn: str | None, report: Path, *args: str, wait: bool = True) -> subprocess.Popen[str]:
    cmd = [
        *CLI,
        "simulate",
        "--broker",
        broker.url,
        "--report",
        str(report),
        "--client-id",
        f"sim-{report.stem}",
        *args,
    ]
    if dsn:
        cmd += ["--register", dsn]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    return proc


def expected_records(report: dict[str, Any]) -> int:
    return sum(d["last_seq"] - len(d["withheld"]) for d in report["devices"].values())


def stored_count(dsn: str) -> int:
    db = open_db(dsn, migrate=False)
    try:
        row = db.query_one("SELECT COUNT(*) FROM records")
        return int(row[0]) if row else 0
    finally:
        db.close()


def check_chains(dsn: str, report: dict[str, Any]) -> dict[str, Verifier]:
    """Every device's stored chain, exported from the database, through the spine's own Verifier."""
    db = open_db(dsn, migrate=False)
    try:
        out = {}
        for device, info in report["devices"].items():
            keys = [Ed25519PublicKey.from_public_bytes(base64.b64decode(info["keys"][0]))]
            v = Verifier(keys, strict_order=True)
            for (text,) in db.query("SELECT record FROM records WHERE device = ? ORDER BY seq", (device,)):
                v.add(json.loads(text))
            v.finish()
            out[device] = v
        return out
    finally:
        db.close()


def anomaly_pairs(dsn: str, *, resolved: bool | None = None) -> list[tuple[str, str]]:
    """(device, kind) of every anomaly, or only of the open (resolved=False) or resolved (True) ones."""
    db = open_db(dsn, migrate=False)
    try:
        rows = db.query("SELECT device, kind, resolved_at FROM anomalies")
        return sorted((str(d), str(k)) for d, k, at in rows if resolved is None or (at is not None) == resolved)
    finally:
        db.close()


def env_without_proxy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
