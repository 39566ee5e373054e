"""Doctor checks of the MQTT broker: TCP, TLS, the client certificate's dates, and a real login."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from edge_agent.cli.doctor.base import (
    BROKER_TIMEOUT_S,
    CERT_WARN_DAYS,
    FAIL,
    OK,
    WARN,
    Check,
)
from edge_agent.errors import EdgeAgentError
from edge_agent.settings import AgentConfig

log = logging.getLogger(__name__)


def check_broker_tcp(cfg: AgentConfig) -> Check:
    m = cfg.mqtt
    try:
        with socket.create_connection((m.host, m.port), timeout=1.0):
            pass
    except socket.gaierror as exc:
        return Check(
            "broker reachable",
            FAIL,
            f"cannot resolve {m.host!r} ({exc.strerror})",
            "check mqtt.url and the device's DNS (cat /etc/resolv.conf)",
        )
    except OSError as exc:
        return Check(
            "broker reachable",
            FAIL,
            f"{m.host}:{m.port}: {exc.strerror or exc}",
            "check the network link and mqtt.url (host and port), and that the broker runs",
        )
    return Check("broker reachable", OK, f"{m.host}:{m.port} accepts TCP connections")


def check_broker_tls(cfg: AgentConfig) -> Check | None:
    m = cfg.mqtt
    if not m.tls:
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(m.ca_file) if m.ca_file else None)
        if m.cert_file and m.key_file:
            ctx.load_cert_chain(str(m.cert_file), str(m.key_file))
    except (OSError, ssl.SSLError) as exc:
        return Check(
            "broker TLS",
            FAIL,
            f"cannot load the CA or client certificate: {exc}",
            "check mqtt.ca_file, mqtt.cert_file and mqtt.key_file point at PEM files",
        )
    try:
        with socket.create_connection((m.host, m.port), timeout=1.0) as raw:
            raw.settimeout(1.0)
            with ctx.wrap_socket(raw, server_hostname=m.host) as tls:
                version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        return Check(
            "broker TLS",
            FAIL,
            f"the broker's certificate is not trusted ({exc.verify_message})",
            "set mqtt.ca_file to the CA that signed the broker's certificate (ask the central team)",
        )
    except (OSError, ssl.SSLError) as exc:
        return Check(
            "broker TLS",
            FAIL,
            f"TLS handshake with {m.host}:{m.port} failed ({exc})",
            "check that the port speaks TLS (mqtts://, usually 8883) and the CA file",
        )
    return Check("broker TLS", OK, f"{version} handshake verified with {m.ca_file or 'the system CAs'}")


def check_client_cert(cfg: AgentConfig, now: datetime) -> Check | None:
    from cryptography import x509

    m = cfg.mqtt
    if m.cert_file is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(Path(m.cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        return Check(
            "client certificate",
            FAIL,
            f"{m.cert_file}: not a readable PEM certificate ({exc})",
            "install the client certificate the central team issued for this device",
        )
    left = cert.not_valid_after_utc - now
    when = f"{cert.not_valid_after_utc:%Y-%m-%d}"
    if left <= timedelta(0):
        return Check(
            "client certificate",
            FAIL,
            f"{m.cert_file} expired on {when}",
            "install a renewed client certificate (ask the central team)",
        )
    if left < timedelta(days=CERT_WARN_DAYS):
        return Check(
            "client certificate",
            WARN,
            f"{m.cert_file} expires in {left.days} day(s) ({when})",
            "ask the central team for a renewed client certificate now",
        )
    return Check("client certificate", OK, f"valid until {when} ({left.days} days)")


def check_broker_login(cfg: AgentConfig) -> Check:
    """A full MQTT CONNECT with the device's credentials, under its own client id (never the agent's)."""
    from edge_agent.spine.sync import describe_connect_error, make_client

    m = cfg.mqtt
    client_id = f"{m.client_id or f'edge-agent-{cfg.device.site}-{cfg.device.id}'}-doctor"
    try:
        client = make_client(m, client_id)
    except (EdgeAgentError, OSError) as exc:
        return Check("broker login", FAIL, str(exc), "fix the file paths under [mqtt]")
    result: list[Any] = []
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        result.append(reason)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(m.host, m.port, 30)
    except (OSError, ssl.SSLError) as exc:
        return Check("broker login", FAIL, describe_connect_error(exc, m), "see the broker checks above")
    deadline = time.monotonic() + BROKER_TIMEOUT_S
    try:
        while not done.is_set() and time.monotonic() < deadline:
            if client.loop(timeout=0.2) != 0:
                break
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
    if not result:
        return Check(
            "broker login",
            FAIL,
            f"no answer to CONNECT from {m.host}:{m.port} within {BROKER_TIMEOUT_S:g} s",
            "check that mqtt.url points at an MQTT broker and mqtt.protocol matches it",
        )
    reason = result[0]
    if reason.is_failure:
        return Check(
            "broker login",
            FAIL,
            f"broker refused the login: {reason}",
            "check mqtt.username and mqtt.password_file (or the client certificate) with the central team",
        )
    return Check("broker login", OK, f"credentials accepted (MQTT {m.protocol})")
