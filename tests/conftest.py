"""Hypothesis profiles and shared fixtures.

Profiles (choose with ``HYPOTHESIS_PROFILE`` or ``--hypothesis-profile``):
- ``dev``  (default locally): quick, random, 50 examples per test;
- ``ci``   (default when ``CI`` is set, as in ``.ci/run``): derandomized, so every CI run draws the same
           cases and a failure reproduces; 400 examples per test, no deadline (first calls compile numba);
- ``deep``: 5000 examples, for a night run before a release.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import intsim  # noqa: F401  (first: sets OMP_WAIT_POLICY before any test imports torch or numba)

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=400,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("deep", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real ImageNet data folder ``../shared/data``; skips the test with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it is provided beside the checkout, never committed)")
    return SHARED_DATA
