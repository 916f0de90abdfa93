"""Fixtures shared by the unit and integration suites: a throwaway PostgreSQL.

One cluster per test session (initdb and start cost about a second), a fresh
database per test. Without the PostgreSQL binaries the PostgreSQL tests FAIL,
so a machine or CI that lacks them cannot pass as if both backends were
proven; SMDP_SKIP_POSTGRES=1 skips them instead, on purpose.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests import pg

# Property tests explore new inputs on every developer run; under CI (CI=true)
# they replay a fixed sequence so a landing never hinges on a lucky draw, and
# no per-example deadline applies on a shared, busy machine.
settings.register_profile("dev", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True,
                          database=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg.PgCluster]:
    if os.environ.get("SMDP_SKIP_POSTGRES") == "1":
        pytest.skip("SMDP_SKIP_POSTGRES=1: PostgreSQL tests skipped")
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(pg.cluster())
        except pg.PostgresUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        yield cluster


@pytest.fixture
def new_pg_dsn(pg_cluster: pg.PgCluster) -> Iterator[Callable[[], str]]:
    """Make as many fresh databases as a test needs; all dropped after it."""
    made: list[str] = []

    def make() -> str:
        made.append(pg_cluster.create_database())
        return made[-1]

    yield make
    for dsn in made:
        pg_cluster.drop_database(dsn)


@pytest.fixture
def pg_dsn(new_pg_dsn: Callable[[], str]) -> str:
    """One fresh, empty database for this test."""
    return new_pg_dsn()
