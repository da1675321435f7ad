"""CUDA checks. Everything here skips, with the reason, on a machine without a usable GPU."""

from __future__ import annotations

import pytest

import fastmlp

_info = fastmlp._cuda_info()
pytestmark = pytest.mark.skipif(
    not fastmlp.cuda_available(),
    reason=f"no usable CUDA GPU: {_info.get('error') or 'fastmlp was built without CUDA'}",
)


def test_devices_are_listed_with_compute_capability() -> None:
    info = fastmlp._cuda_info()
    assert info["device_count"] == len(info["devices"]) >= 1
    assert all(cc >= 50 for cc in info["compute_capabilities"])
    assert fastmlp.build_info()["cuda_devices"] == info["devices"]
