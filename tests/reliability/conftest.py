"""Shared fixture: a tiny prepared phantom (MR source, CT target); helpers in reliability_helpers."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def phantom_sets(tiny_phantom):
    """The shared tiny phantom of tests/conftest.py (48 px, as reliability_helpers.SIZE)."""
    return tiny_phantom
