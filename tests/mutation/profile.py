"""pytest plugin for mutation runs (``-p tests.mutation.profile``).

A mutant's outcome must not hinge on a lucky draw: property tests replay the
same examples for every mutant (derandomized, no example database), as under
CI. Loaded in ``pytest_configure``, after ``tests/conftest.py`` chose its
profile and before the test modules (whose ``@settings`` inherit from it)
are imported.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings


def pytest_configure(config: pytest.Config) -> None:
    settings.register_profile("mutate", deadline=None, derandomize=True, database=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("mutate")
