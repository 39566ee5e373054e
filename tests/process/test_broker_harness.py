"""The real-broker harness itself: each variant delivers QoS 1, refuses what it should, survives restarts."""

# ruff: noqa: F811  - pytest fixtures imported below are redefined as test arguments by design

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.broker import (
    TEST_USERS,
    Broker,
    Pki,
    Subscriber,
    connect_and_wait,
    free_port,
    make_pki,
    new_client,
    publish,
    wait_closed,
)

# Imported here so this file runs on its own; tests/conftest.py offers the same fixtures to everyone.
from tests.broker_fixtures import broker, broker_pki, mtls_broker, password_broker, tls_broker  # noqa: F401


def _variant(tmp_path: Path, pki: Pki, name: str) -> Broker:
    if name == "plain":
        return Broker(tmp_path)
    if name == "password":
        return Broker(tmp_path, users=TEST_USERS)
    if name == "tls":
        return Broker(tmp_path, tls=True, pki=pki)
    return Broker(tmp_path, mtls=True, pki=pki)


@pytest.mark.parametrize("variant", ["plain", "password", "tls", "mtls"])
def test_broker__qos1_roundtrip_in_each_variant(tmp_path: Path, broker_pki: Pki, variant: str) -> None:
    with _variant(tmp_path, broker_pki, variant) as b, Subscriber(b, "edge/site/dev/rec/#") as sub:
        assert b.url == f"{'mqtts' if variant in ('tls', 'mtls') else 'mqtt'}://127.0.0.1:{b.port}"
        payloads = [f"record {i}".encode() for i in range(5)]
        publish(b, "edge/site/dev/rec/trip", payloads)
        got = sub.wait_for(5, topic="edge/site/dev/rec/trip")
        assert [m.payload for m in got] == payloads
        assert {m.qos for m in got} == {1}
        assert sub.messages("edge/site/dev/rec/other") == []
    assert wait_closed(b.port), "mosquitto still accepts connections after the context exit"


def test_broker__fixtures_match_their_names(
    broker: Broker,
    password_broker: Broker,
    tls_broker: Broker,
    mtls_broker: Broker,
) -> None:
    assert (broker.tls, broker.users) == (False, {})
    assert password_broker.users == TEST_USERS and not password_broker.tls
    assert (tls_broker.tls, tls_broker.mtls) == (True, False)
    assert (mtls_broker.tls, mtls_broker.mtls) == (True, True)
    assert len({broker.port, password_broker.port, tls_broker.port, mtls_broker.port}) == 4
    assert "require_certificate true" in mtls_broker.conf_path.read_text()
    assert "require_certificate" not in tls_broker.conf_path.read_text()
    with pytest.raises(RuntimeError, match="no PKI"):
        _ = broker.pki


def test_broker__wrong_ca_fails_tls_handshake(tls_broker: Broker) -> None:
    client = new_client("wrong-ca")
    client.tls_set(ca_certs=str(tls_broker.pki.wrong_ca_pem), cert_reqs=ssl.CERT_REQUIRED)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        client.connect(tls_broker.host, tls_broker.port)


def test_broker__tls_hostname_is_verified_against_san(tls_broker: Broker) -> None:
    ctx = ssl.create_default_context(cafile=str(tls_broker.pki.ca_pem))
    for name in ("127.0.0.1", "localhost"):
        with (
            socket.create_connection((tls_broker.host, tls_broker.port), timeout=1) as raw,
            ctx.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with (
        socket.create_connection((tls_broker.host, tls_broker.port), timeout=1) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="mismatch"),
    ):
        ctx.wrap_socket(raw, server_hostname="broker.example.com")


def _connect_refused(b: Broker, configure: Any) -> str:
    """Connect with a client set up by `configure`; return what went wrong (never a CONNACK success)."""
    client = new_client("refused")
    configure(client)
    failed = threading.Event()
    reasons: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        reasons.append(f"connack {rc}")
        failed.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        reasons.append(f"disconnect {rc}")
        failed.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(b.host, b.port)
        client.loop_start()
        failed.wait(3)
    except (ssl.SSLError, OSError) as exc:
        reasons.append(f"handshake {exc}")
    finally:
        client.disconnect()
        client.loop_stop()
    return "; ".join(reasons)


def test_broker__mtls_refuses_client_without_certificate(mtls_broker: Broker) -> None:
    outcome = _connect_refused(mtls_broker, lambda c: mtls_broker.configure(c, client_cert=False))
    assert "Success" not in outcome
    assert mtls_broker.wait_for_log("peer did not return a certificate"), mtls_broker.log_text()[-800:]


def test_broker__mtls_refuses_certificate_from_wrong_ca(mtls_broker: Broker) -> None:
    pki = mtls_broker.pki
    outcome = _connect_refused(
        mtls_broker,
        lambda c: c.tls_set(
            ca_certs=str(pki.ca_pem), certfile=str(pki.wrong_client_pem), keyfile=str(pki.wrong_client_key)
        ),
    )
    assert "Success" not in outcome
    assert mtls_broker.wait_for_log("certificate verify failed"), mtls_broker.log_text()[-800:]


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("edge-device", "not the password"),
        ("nobody", "correct horse battery staple"),
        (None, None),
    ],
)
def test_broker__wrong_credentials_refused(password_broker: Broker, user: str | None, password: str | None) -> None:
    client = new_client("bad-login")
    if user is not None:
        client.username_pw_set(user, password)
    ack = connect_and_wait(client, password_broker)
    client.loop_stop()
    assert ack.is_failure
    assert str(ack.reason_code) in ("Not authorized", "Bad user name or password")


def test_broker__queued_messages_survive_restart(broker: Broker) -> None:
    sub = Subscriber(broker, "edge/+/+/rec/#", client_id="central-1").start()
    sub.stop()  # offline, but its persistent session and QoS 1 subscription stay on the broker
    payloads = [f"queued {i}".encode() for i in range(20)]
    publish(broker, "edge/s1/d1/rec/sensor", payloads)
    port = broker.port
    broker.restart()
    assert broker.port == port and broker.starts == 2
    with sub:
        assert sub.session_present, "the broker forgot the subscriber's session across the restart"
        got = sub.wait_for(20)
    assert [m.payload for m in got] == payloads
    assert "Saving in-memory database" in broker.log_text() or (broker.db_dir / "mosquitto.db").exists()


def test_broker__without_persistence_restart_loses_queue(tmp_path: Path) -> None:
    # The contrast that proves the previous test depends on persistence, not on luck.
    with Broker(tmp_path, persistence=False) as b:
        Subscriber(b, "t/#", client_id="central-1").start().stop()
        publish(b, "t/x", [b"lost"])
        b.restart()
        with Subscriber(b, "t/#", client_id="central-1") as sub:
            assert sub.session_present is False
            with pytest.raises(TimeoutError, match="expected 1 message"):
                sub.wait_for(1, timeout_s=0.5)


def test_broker__start_failure_reports_log_tail(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        b = Broker(tmp_path, port=taken)
        with pytest.raises(RuntimeError, match=r"did not start(.|\n)*Address already in use"):
            b.start()
    assert not b.running
    b.stop()  # idempotent after a failed start


def test_broker__stop_is_idempotent_and_restart_keeps_port(tmp_path: Path) -> None:
    b = Broker(tmp_path, port=free_port())
    b.stop()
    b.start()
    port = b.port
    b.stop()
    b.stop()
    assert wait_closed(port)
    b.start()
    try:
        assert b.port == port and b.running
    finally:
        b.stop()


def test_make_pki__server_cert_names_loopback_and_chains_to_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.ca_pem.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server_pem.read_bytes())
    wrong = x509.load_pem_x509_certificate(pki.wrong_ca_pem.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    server.verify_directly_issued_by(ca)
    with pytest.raises(ValueError, match=r"[Ii]ssuer"):
        server.verify_directly_issued_by(wrong)
    assert ca.public_key() != wrong.public_key()
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    for key in (pki.server_key, pki.client_key, pki.wrong_client_key):
        assert key.stat().st_mode & 0o777 == 0o600


def test_subscriber__wait_for_times_out_with_count(broker: Broker) -> None:
    with Subscriber(broker, "a/b") as sub:
        publish(broker, "a/b", [b"one"])
        with pytest.raises(TimeoutError, match=r"expected 2 message\(s\) on a/b within 0.3 s, got 1"):
            sub.wait_for(2, topic="a/b", timeout_s=0.3)
