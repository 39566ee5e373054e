"""Fault-injection options.

The suite runs fixed seeds (each names a run of faults that once found a defect), so the same faults
are injected on every CI run; `--faults-seed N` (or FAULTS_SEED=N) replays one seed, and
`--faults-seed random` (or FAULTS_SEED=random) draws a new one, for soaks and the `--long` run by hand.
"""

from __future__ import annotations

import os
import random

import pytest

# 870349697: outages, a cut WAL, a full disk and two broker kills (a kill lost what the broker had queued);
# 59: agent kill, cut WAL, broker kill, outage, truncated and zeroed outbox.
SUITE_SEEDS = (870349697, 59)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False, help="fault injection: the long run (by hand)")
    parser.addoption(
        "--faults-seed", default=None, help="fault injection: replay this seed, or 'random' to draw a new one"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fault_seed" not in metafunc.fixturenames:
        return
    given = metafunc.config.getoption("--faults-seed") or os.environ.get("FAULTS_SEED")
    if given is None:
        seeds = list(SUITE_SEEDS)
    elif given == "random":
        seeds = [random.SystemRandom().randrange(1, 2**31)]
    else:
        try:
            seeds = [int(given)]
        except ValueError:
            raise pytest.UsageError(
                f"--faults-seed / FAULTS_SEED: expected a number or 'random', got {given!r}"
            ) from None
    metafunc.parametrize("fault_seed", seeds, ids=[f"seed{s}" for s in seeds])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # 40 rounds take 5-10 minutes: past the suite's 300 s per test (setup.cfg), which is for the 6 rounds.
    if config.getoption("--long"):
        for item in items:
            if "fault_seed" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.timeout(1800))


@pytest.fixture
def fault_rounds(request: pytest.FixtureRequest) -> int:
    return 40 if request.config.getoption("--long") else 6
