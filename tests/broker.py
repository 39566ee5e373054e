"""A real mosquitto on a free loopback port for tests: plain, password, TLS, mTLS, persistent."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0


# Credentials of the password-protected test broker (test-only secrets, never used elsewhere).
TEST_USERS = {"edge-device": "correct horse battery staple", "central": "another-s3cret"}


# ---------------------------------------------------------------- PKI


@dataclass(frozen=True, slots=True)
class Pki:
    """File paths of a throw-away PKI: one CA signing a server and a client, plus an unrelated CA."""

    ca_pem: Path
    server_pem: Path
    server_key: Path
    client_pem: Path
    client_key: Path
    wrong_ca_pem: Path
    wrong_client_pem: Path  # signed by the wrong CA: an mTLS broker must refuse it
    wrong_client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-agent tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _make_ca(cn: str, now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(
    cn: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: dt.datetime,
    *,
    server: bool,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """Generate a CA, a server cert for 127.0.0.1/localhost, a client cert and a wrong CA under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_cert = _make_ca("edge-agent test CA", now)
    server_key, server_cert = _make_leaf("localhost", ca_key, ca_cert, now, server=True)
    client_key, client_cert = _make_leaf("edge-test-client", ca_key, ca_cert, now, server=False)
    wrong_key, wrong_cert = _make_ca("unrelated CA", now)
    wclient_key, wclient_cert = _make_leaf("edge-test-client", wrong_key, wrong_cert, now, server=False)
    pki = Pki(
        ca_pem=directory / "ca.pem",
        server_pem=directory / "server.pem",
        server_key=directory / "server.key",
        client_pem=directory / "client.pem",
        client_key=directory / "client.key",
        wrong_ca_pem=directory / "wrong-ca.pem",
        wrong_client_pem=directory / "wrong-client.pem",
        wrong_client_key=directory / "wrong-client.key",
    )
    _write_cert(pki.ca_pem, ca_cert)
    _write_cert(pki.server_pem, server_cert)
    _write_key(pki.server_key, server_key)
    _write_cert(pki.client_pem, client_cert)
    _write_key(pki.client_key, client_key)
    _write_cert(pki.wrong_ca_pem, wrong_cert)
    _write_cert(pki.wrong_client_pem, wclient_cert)
    _write_key(pki.wrong_client_key, wclient_key)
    return pki


# ---------------------------------------------------------------- broker


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


class Broker:
    """A real mosquitto process on 127.0.0.1, configured from a generated file in `base_dir`.

    Not a mock: clients speak real MQTT (and TLS) to it. `restart()` keeps the port and the
    persistence file, so sessions and queued QoS 1 messages survive as they would on a real outage.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        base_dir: Path,
        *,
        tls: bool = False,
        mtls: bool = False,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        max_packet_size: int | None = None,
        persistence: bool = True,
        port: int | None = None,
        pki: Pki | None = None,
    ) -> None:
        base = Path(base_dir)
        base.mkdir(parents=True, exist_ok=True)
        # A fresh folder per broker, so several brokers in one test's tmp_path never share files.
        self.dir = Path(tempfile.mkdtemp(prefix="mosquitto-", dir=base))
        self.tls = tls or mtls
        self.mtls = mtls
        self.users = dict(users) if users else {}
        self.acl = acl  # mosquitto acl_file text (`topic readwrite ...` lines), none when unset
        self.max_packet_size = max_packet_size  # mosquitto's max_packet_size, unlimited when unset
        self.persistence = persistence
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self._pki = pki
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "mosquitto.log"
        self.conf_path = self.dir / "mosquitto.conf"
        self.db_dir = self.dir / "db"
        self.starts = 0

    # -- properties ---------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def pki(self) -> Pki:
        if self._pki is None:
            raise RuntimeError("this broker has no PKI: create it with tls=True or mtls=True")
        return self._pki

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout_s: float = 2.0) -> bool:
        """True once `text` appears in mosquitto's log (it writes lines as events happen)."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log_text():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _log_bytes_from(self, offset: int) -> bytes:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read()

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- config -------------------------------------------------------------
    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db_dir.mkdir(exist_ok=True)
        lines = [
            "# generated by tests/broker.py",
            # mosquitto started as root drops to user "mosquitto", which cannot read a 0700 tmp dir.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.db_dir}/",
            "persistence_file mosquitto.db",
            # Large enough that tests of a long outage do not silently lose queued messages.
            "max_queued_messages 100000",
            f"listener {self.port} {self.host}",
        ]
        if self.users:
            pw_file = self.dir / "passwords"
            pw_file.unlink(missing_ok=True)
            for i, (name, password) in enumerate(self.users.items()):
                args = [MOSQUITTO_PASSWD, "-b"] + (["-c"] if i == 0 else []) + [str(pw_file), name, password]
                subprocess.run(args, check=True, capture_output=True, timeout=10)
            lines += ["allow_anonymous false", f"password_file {pw_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.max_packet_size is not None:
            lines.append(f"max_packet_size {self.max_packet_size}")
        if self.acl is not None:
            acl_file = self.dir / "acl"
            acl_file.write_text(self.acl)
            lines.append(f"acl_file {acl_file}")
        if self.tls:
            if self._pki is None:
                self._pki = make_pki(self.dir / "pki")
            lines += [
                f"cafile {self._pki.ca_pem}",
                f"certfile {self._pki.server_pem}",
                f"keyfile {self._pki.server_key}",
            ]
            if self.mtls:
                lines.append("require_certificate true")
        self.conf_path.write_text("\n".join(lines) + "\n")

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> Broker:
        """Start mosquitto and wait until its port accepts connections (at most 5 s)."""
        if self.running:
            return self
        attempts = 1 if self._fixed_port or self.starts else 3
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()  # someone took our free port between probe and bind
            self._write_config()
            if self._launch():
                self.starts += 1
                return self
            if "Address already in use" not in self.log_text():
                break
        raise RuntimeError(
            f"mosquitto did not start on {self.host}:{self.port} within {START_TIMEOUT_S} s; "
            f"log tail ({self.log_path}):\n{self._log_tail()}"
        )

    def _launch(self) -> bool:
        with self.log_path.open("ab") as log:
            log.write(f"---- start {time.strftime('%H:%M:%S')} port {self.port}\n".encode())
            log.flush()
            log_offset = log.tell()
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # Safety net: a test that fails between start() and stop() must not leave mosquitto running.
        weakref.finalize(self, _reap, self._proc)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            # "running" is logged once every listener is bound; only then is the port ours.
            if b" running" in self._log_bytes_from(log_offset) and _port_accepts(self.port):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file), wait, SIGKILL if it hangs. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL, as on a power cut: nothing is saved since the last autosave."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)

    def restart(self) -> Broker:
        """Stop and start again on the same port with the same persistence file."""
        self.stop()
        return self.start()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- client helpers -----------------------------------------------------
    def configure(self, client: mqtt.Client, *, client_cert: bool = True, user: str | None = None) -> None:
        """Set TLS (CA, and the client cert when `client_cert`) and credentials on a paho client.

        `user` picks one of `users`; without it the first user is used when the broker has any.
        """
        if self.tls:
            pki = self.pki
            client.tls_set(
                ca_certs=str(pki.ca_pem),
                certfile=str(pki.client_pem) if client_cert else None,
                keyfile=str(pki.client_key) if client_cert else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if self.users:
            name = user if user is not None else next(iter(self.users))
            client.username_pw_set(name, self.users[name])


# ---------------------------------------------------------------- clients


def new_client(client_id: str, *, protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5) -> mqtt.Client:
    """A paho 2.x client with the VERSION2 callback API."""
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)


@dataclass(frozen=True, slots=True)
class Connack:
    reason_code: ReasonCode
    session_present: bool

    @property
    def is_failure(self) -> bool:
        return bool(self.reason_code.is_failure)


def connect_and_wait(
    client: mqtt.Client,
    broker: Broker,
    *,
    clean_start: bool = True,
    session_expiry_s: int = 0,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> Connack:
    """Connect, start the network loop and wait for CONNACK; returns it (failure or not)."""
    got: list[Connack] = []
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, _p: Any) -> None:
        got.append(Connack(rc, bool(flags.session_present)))
        done.set()

    client.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    client.connect(broker.host, broker.port, keepalive=30, clean_start=clean_start, properties=props)
    client.loop_start()
    if not done.wait(timeout_s):
        client.loop_stop()
        raise TimeoutError(f"no CONNACK from {broker.url} within {timeout_s} s")
    return got[0]


def publish(
    broker: Broker,
    topic: str,
    payloads: Iterable[bytes],
    *,
    client_id: str = "test-publisher",
    user: str | None = None,
    timeout_s: float = 5.0,
    retain: bool = False,
) -> None:
    """Publish each payload at QoS 1 and wait for every PUBACK."""
    client = new_client(client_id)
    broker.configure(client, user=user)
    ack = connect_and_wait(client, broker)
    try:
        if ack.is_failure:
            raise ConnectionError(f"publisher refused by {broker.url}: {ack.reason_code}")
        infos = [client.publish(topic, p, qos=1, retain=retain) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout_s)
            if not info.is_published():
                raise TimeoutError(f"no PUBACK for mid {info.mid} within {timeout_s} s")
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Subscriber:
    """A QoS 1, MQTT 5, persistent-session subscriber that collects what it receives, per topic.

    `stop()` disconnects but the broker keeps the session (session expiry > 0, clean_start False),
    so messages published meanwhile are queued and delivered on the next `start()`.
    """

    def __init__(
        self,
        broker: Broker,
        topics: str | Iterable[str],
        *,
        client_id: str = "test-subscriber",
        session_expiry_s: int = 3600,
        user: str | None = None,
    ) -> None:
        self.broker = broker
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.client_id = client_id
        self.session_expiry_s = session_expiry_s
        self.user = user
        self._messages: list[Message] = []
        self._cond = threading.Condition()
        self._client: mqtt.Client | None = None
        self.session_present: bool | None = None

    def start(self, timeout_s: float = CONNECT_TIMEOUT_S) -> Subscriber:
        client = new_client(self.client_id)
        self.broker.configure(client, user=self.user)
        subscribed = threading.Event()
        client.on_message = self._on_message
        client.on_subscribe = lambda *_a: subscribed.set()
        # Back soon after a broker restart, as central's worker is; paho's default backoff grows to 120 s,
        # and meanwhile the broker queues this session's messages in memory only.
        client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client = client
        ack = connect_and_wait(
            client, self.broker, clean_start=False, session_expiry_s=self.session_expiry_s, timeout_s=timeout_s
        )
        if ack.is_failure:
            self.stop()
            raise ConnectionError(f"subscriber refused by {self.broker.url}: {ack.reason_code}")
        self.session_present = ack.session_present
        # Subscribing again on a resumed session is harmless and covers a broker that lost it.
        client.subscribe([(t, 1) for t in self.topics])
        if not subscribed.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"no SUBACK from {self.broker.url} within {timeout_s} s")
        return self

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self._messages.append(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self._cond.notify_all()

    def messages(self, topic: str | None = None) -> list[Message]:
        """A copy of what arrived so far, optionally only for one exact topic."""
        with self._cond:
            return [m for m in self._messages if topic is None or m.topic == topic]

    def wait_for(self, count: int, topic: str | None = None, timeout_s: float = 5.0) -> list[Message]:
        """Wait until at least `count` messages (on `topic`, if given) arrived; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                got = [m for m in self._messages if topic is None or m.topic == topic]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"expected {count} message(s) on {topic or 'any topic'} within {timeout_s} s, got {len(got)}"
                    )
                self._cond.wait(min(left, 0.5))


def wait_closed(port: int, timeout_s: float = 2.0) -> bool:
    """True once nothing accepts connections on the port (within `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _port_accepts(port):
            return True
        time.sleep(0.02)
    return False


__all__ = [
    "TEST_USERS",
    "Broker",
    "Connack",
    "Message",
    "Pki",
    "Subscriber",
    "connect_and_wait",
    "free_port",
    "make_pki",
    "new_client",
    "publish",
    "wait_closed",
]
