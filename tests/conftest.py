"""Shared test fixtures. Each test seeds its own generator so that failures reproduce."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
