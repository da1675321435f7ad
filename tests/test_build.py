"""The package, its build information and the thread setting."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fastmlp


def test_build_info_reports_simd_threads_and_cuda() -> None:
    info = fastmlp.build_info()
    assert info["version"] == fastmlp.__version__
    assert info["simd"] in {"avx2+fma", "generic"}
    assert isinstance(info["openmp"], bool)
    assert info["num_threads"] == fastmlp.get_num_threads() >= 1
    assert isinstance(info["cuda_compiled"], bool)
    assert isinstance(info["cuda_devices"], list)
    if not fastmlp.cuda_available():
        assert info["cuda_error"], "no usable GPU must come with a reason"


def test_set_num_threads_round_trips_and_rejects_zero() -> None:
    before = fastmlp.get_num_threads()
    try:
        fastmlp.set_num_threads(1)
        assert fastmlp.get_num_threads() == 1
        assert fastmlp.build_info()["num_threads"] == 1
        with pytest.raises(ValueError, match=r"^n: "):
            fastmlp.set_num_threads(0)
        assert fastmlp.get_num_threads() == 1
    finally:
        fastmlp.set_num_threads(before)


def test_generic_simd_path_can_be_forced() -> None:
    code = "import fastmlp; print(fastmlp.build_info()['simd'])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"FASTMLP_SIMD": "generic", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "generic"


def test_omp_num_threads_sets_the_default() -> None:
    code = "import fastmlp; print(fastmlp.get_num_threads())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "1"


def test_cuda_module_reports_instead_of_failing() -> None:
    info = fastmlp._cuda_info()
    if not info["compiled"]:
        pytest.skip("fastmlp was built without CUDA")
    assert info["device_count"] >= 0
    assert isinstance(info["runtime_version"], int) and info["runtime_version"] > 0
    if info["device_count"] == 0:
        assert info["error"]
    else:
        assert len(info["devices"]) == info["device_count"]
