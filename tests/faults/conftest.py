"""Fault-injection options: --long for the long run, FAULTS_SEED=N (or --faults-seed N) to replay one."""

from __future__ import annotations

import os
import random

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False, help="fault injection: the long run (by hand)")
    parser.addoption("--faults-seed", type=int, default=None, help="fault injection: replay this seed")


@pytest.fixture
def fault_seed(request: pytest.FixtureRequest) -> int:
    seed = request.config.getoption("--faults-seed")
    if seed is None and os.environ.get("FAULTS_SEED"):
        seed = int(os.environ["FAULTS_SEED"])
    if seed is None:
        seed = random.SystemRandom().randrange(1, 2**31)
    # Printed (and shown on failure) so any run can be replayed with --faults-seed.
    print(f"\nfault injection seed: {seed} (replay: pytest -m faults tests/faults --faults-seed {seed})")
    return seed


@pytest.fixture
def fault_rounds(request: pytest.FixtureRequest) -> int:
    return 40 if request.config.getoption("--long") else 6
