"""Run the integration suite on the backend SMDP_TEST_BACKEND names
(``sqlite`` by default, or ``postgresql``): ``make test`` runs it on both."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration import harness


@pytest.fixture(autouse=True)
def default_backend(request: pytest.FixtureRequest) -> Iterator[None]:
    backend = os.environ.get("SMDP_TEST_BACKEND", "sqlite")
    if backend == "postgresql":
        harness.DEFAULT_BACKEND = ("postgresql", request.getfixturevalue("new_pg_dsn"))
    elif backend != "sqlite":
        raise pytest.UsageError(f"SMDP_TEST_BACKEND={backend!r}: use sqlite or postgresql")
    yield
    harness.DEFAULT_BACKEND = ("sqlite", None)
