"""Shared test fixtures. Each test seeds its own generator so that failures reproduce."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def restore_threads() -> Iterator[None]:
    """Puts fastmlp's thread count back after a test that sets it."""
    import fastmlp

    saved = fastmlp.get_num_threads()
    yield
    fastmlp.set_num_threads(saved)


def _run_simd_paths(script: str, tmp_path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Runs ``script`` (which writes an .npz to ``sys.argv[1]``, with a ``simd`` entry from
    ``_core._build_info()``) once with ``FASTMLP_SIMD=generic`` and once natively, each in its own
    interpreter (the variable is read once per process); returns the two results by label. Skips
    the test on a CPU with no AVX2/FMA, where only the generic path exists."""
    results = {}
    for label, env_value in [("generic", "generic"), ("native", None)]:
        env = dict(os.environ)
        env.pop("FASTMLP_SIMD", None)
        if env_value is not None:
            env["FASTMLP_SIMD"] = env_value
        path = tmp_path / f"{label}.npz"
        subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True)
        with np.load(path) as data:
            results[label] = dict(data)
    assert str(results["generic"]["simd"]) == "generic"
    if str(results["native"]["simd"]) == "generic":
        pytest.skip("this CPU has no AVX2/FMA: only the generic path exists")
    return results


@pytest.fixture
def run_simd_paths(tmp_path: Path) -> Callable[[str], dict[str, dict[str, np.ndarray]]]:
    """``run_simd_paths(script)``: see :func:`_run_simd_paths`."""
    return lambda script: _run_simd_paths(script, tmp_path)
