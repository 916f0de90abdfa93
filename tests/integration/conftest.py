"""Which backend each integration test's servers run on, and in which pass.

``make test`` runs the whole suite once (the default pass, SQLite), then the
integration suite again with ``SMDP_TEST_BACKEND=postgresql``. The rule:

- A test that names its backend (it takes the ``backend`` fixture, so its id
  ends in ``[sqlite]`` or ``[postgresql]``) runs in the default pass, once per
  backend, each time on the backend its id names; the same goes for a test
  marked ``own_backend`` (it sets its servers' backends itself, e.g.
  test_multinode.py). The PostgreSQL pass leaves these out (they show as
  deselected): running them again would repeat a run already made.
- Every other test runs in both passes, its servers on the pass's backend
  (``harness.DEFAULT_BACKEND``, which ``make_pair``, ``facing_stand_in`` and
  ``harness.pass_store`` follow).

So each test runs once per backend across the two passes, and no id lies
about where it ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import harness

BACKENDS = ("sqlite", "postgresql")
HERE = Path(__file__).resolve().parent


def pass_backend() -> str:
    """The backend this pass runs the unnamed tests on (SMDP_TEST_BACKEND)."""
    backend = os.environ.get("SMDP_TEST_BACKEND", "sqlite")
    if backend not in BACKENDS:
        raise pytest.UsageError(f"SMDP_TEST_BACKEND={backend!r}: use sqlite or postgresql")
    return backend


def named_backend(item: pytest.Item) -> str | None:
    """The backend a test's id names (its ``backend`` parameter), if any."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("backend") if callspec is not None else None


def chooses_its_backend(item: pytest.Item) -> bool:
    return named_backend(item) is not None or item.get_closest_marker("own_backend") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if pass_backend() == "sqlite":
        return
    drop = [item for item in items
            if item.path.resolve().is_relative_to(HERE) and chooses_its_backend(item)]
    if drop:
        config.hook.pytest_deselected(items=drop)
        dropped = set(map(id, drop))
        items[:] = [item for item in items if id(item) not in dropped]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test once per backend (default pass only): every server it
    starts through ``make_pair`` runs on the backend its id names."""
    return str(request.param)


@pytest.fixture(autouse=True)
def default_backend(request: pytest.FixtureRequest) -> Iterator[None]:
    backend = named_backend(request.node) or pass_backend()
    if backend == "postgresql":
        harness.DEFAULT_BACKEND = ("postgresql", request.getfixturevalue("new_pg_dsn"))
    else:
        harness.DEFAULT_BACKEND = ("sqlite", None)
    yield
    harness.DEFAULT_BACKEND = ("sqlite", None)
