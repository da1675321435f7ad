"""fastmlp: fast multilayer-perceptron training from Python.

Hand-written C++ kernels (AVX2/FMA, OpenMP) with CUDA variants, a thin Python layer, and a plain
NumPy reference (:mod:`fastmlp.reference`) that every kernel is tested against.
"""

from __future__ import annotations

from typing import Any

from . import _core, data, ops, optim, reference, schedules
from ._core import get_num_threads, set_num_threads
from .gradcheck import gradcheck
from .nn import MLP, load
from .trainer import EarlyStopping, History, Trainer

__version__: str = _core.__version__


def _cuda_info() -> dict[str, Any]:
    try:
        from . import _cuda  # type: ignore[attr-defined]
    except ImportError as exc:
        return {
            "compiled": False,
            "device_count": 0,
            "devices": [],
            "error": f"fastmlp was built without CUDA ({exc})",
        }
    info = dict(_cuda.device_info())
    info["compiled"] = True
    return info


def cuda_available() -> bool:
    """True when the CUDA module was compiled in and at least one GPU is usable."""
    info = _cuda_info()
    return bool(info["compiled"] and info["device_count"] > 0)


def build_info() -> dict[str, Any]:
    """How this fastmlp was built and what it sees on this machine.

    Keys: ``version``, ``compiler``, ``simd`` (the SIMD level the CPU kernels use: ``"avx2+fma"``
    or ``"generic"``), ``openmp`` (bool), ``num_threads`` (threads the kernels use),
    ``cuda_compiled`` (bool), ``cuda_devices`` (names of the GPUs it sees), and ``cuda_error``
    (why no GPU is usable, or ``""``).
    """
    info = dict(_core._build_info())
    cuda = _cuda_info()
    info["cuda_compiled"] = cuda["compiled"]
    info["cuda_devices"] = list(cuda.get("devices", []))
    info["cuda_error"] = cuda.get("error", "")
    return info


__all__ = [
    "MLP",
    "EarlyStopping",
    "History",
    "Trainer",
    "__version__",
    "build_info",
    "cuda_available",
    "data",
    "get_num_threads",
    "gradcheck",
    "load",
    "ops",
    "optim",
    "reference",
    "schedules",
    "set_num_threads",
]
