"""Fixtures of the central tests: one real PostgreSQL server per session, a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.central.pg import Postgres


@pytest.fixture(autouse=True)
def _no_worker_left_running() -> Iterator[None]:
    """A test that fails between starting a worker and stopping it must not leave the process behind."""
    from tests.central.procs import LIVE

    yield
    while LIVE:
        w = LIVE.pop()
        if w.proc is not None and w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(10)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = Postgres().start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def pg_dsn(postgres: Postgres) -> str:
    return postgres.new_database()


@pytest.fixture
def sqlite_dsn(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'central.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes `dsn` runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central.db'}"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.new_database()
