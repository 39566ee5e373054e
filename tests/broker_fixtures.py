"""pytest fixtures that start a real mosquitto per test: `from tests.broker_fixtures import *` in conftest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import TEST_USERS, Broker, Pki, make_pki


@pytest.fixture(scope="session")
def broker_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One throw-away PKI for the whole session (CA, server, client, wrong CA)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def _run(b: Broker) -> Iterator[Broker]:
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """Plain anonymous mosquitto with persistence, on mqtt://127.0.0.1:<free port>."""
    yield from _run(Broker(tmp_path))


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[Broker]:
    """Username/password required (users in TEST_USERS and in `.users`), anonymous refused."""
    yield from _run(Broker(tmp_path, users=TEST_USERS))


@pytest.fixture
def tls_broker(tmp_path: Path, broker_pki: Pki) -> Iterator[Broker]:
    """TLS with server verification (server cert for 127.0.0.1/localhost), on mqtts://."""
    yield from _run(Broker(tmp_path, tls=True, pki=broker_pki))


@pytest.fixture
def mtls_broker(tmp_path: Path, broker_pki: Pki) -> Iterator[Broker]:
    """TLS that also requires a client certificate signed by the test CA."""
    yield from _run(Broker(tmp_path, mtls=True, pki=broker_pki))


__all__ = ["TEST_USERS", "broker", "broker_pki", "mtls_broker", "password_broker", "tls_broker"]
