"""fastmlp: fast multilayer-perceptron training from Python.

Hand-written C++ kernels (AVX2/FMA, OpenMP) with CUDA variants, a thin Python layer, and a plain
NumPy reference (:mod:`fastmlp.reference`) that every kernel is tested against.
"""

from __future__ import annotations

import os
from typing import Any

# OpenMP wait policy, set before _core loads libgomp (which reads it once, at load): unless the
# user chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT), idle fastmlp threads sleep instead of
# spinning. libgomp's default spins each waiting thread for ~300,000 iterations (milliseconds);
# on a shared machine a spinning worker holds a core that the thread it waits for needs, and every
# barrier of a step can then cost a scheduler time slice. Measured with benchmarks/bench_step.py
# on the 2-core EPYC under load (load average 3-4, other builds running), Adam step of
# 784-256-128-10: batch 128 48.0 ms (default) vs 2.2 ms (passive); batch 1024 114 ms vs 14.5 ms;
# 1 thread: 4.6 ms / 14.4 ms. Lightly loaded (load ~1.3), with the engine's batch-parallel passes
# (few sync points per step), three alternating pairs at batch 128 gave 1.13/1.40/1.24 ms passive
# vs 1.09/1.27/2.25 ms with libgomp's default spinning (GOMP_SPINCOUNT=300000): passive costs up
# to ~10% when the machine is calm and saves 2-40x when it is not. To keep libgomp's spinning,
# set OMP_WAIT_POLICY=active (or any GOMP_SPINCOUNT) before importing fastmlp.
# A bounded spin was measured as the alternative (2026-11-23, bench_step.py, Adam step of
# 784-256-128-10 at batch 128, median us, alternating runs): quiet machine, passive 1764/1944/1956
# vs GOMP_SPINCOUNT=3000 1304/1358 and 10000 1371/1533/1536 (25-30% faster); with one competing
# busy process (`python -c "while True: pass"`), passive 2300/2389/2393/3149 vs 3000 3061/3437/
# 3588 and 10000 4669/5114/5537/6025 (1.3-2.6x slower). A standalone 256^3 matmul after 250 ms
# idle: quiet, 49-58 GFLOP/s passive, 45-48 with 3000 (too short to bridge the gaps between
# calls), 68-96 with 10000; with the busy process 55 passive vs 26-29 with 10000. Spinning gains
# up to 30% (1.7x for isolated small products) on free cores but loses up to 2.6x as soon as one
# other process runs, the usual state of a shared 2-core machine, so passive stays the default.
# The setting is process-wide: other libgomp users in the process (PyTorch) share it, and it has
# no effect if libgomp was already loaded (e.g. torch imported first).
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "passive"

from . import _core, data, ops, optim, reference, schedules
from ._checks import check_int as _check_int
from ._core import get_num_threads
from .cuda import DeviceArray, to_device
from .gradcheck import gradcheck
from .nn import MLP, load
from .trainer import EarlyStopping, History, Trainer

__version__: str = _core.__version__


def set_num_threads(n: int) -> None:
    """Set the number of threads every fastmlp CPU kernel uses (an int from 1 to 1024,
    ``fastmlp._core.MAX_THREADS``; process-wide). :func:`get_num_threads` returns it.

    A process forked from one that has imported fastmlp (``multiprocessing``'s default
    ``"fork"`` start method on Linux) runs on 1 thread, and asking for more there is a
    ``RuntimeError``: OpenMP's threads do not survive a fork, and more than one would wait for them
    forever. Use the ``"spawn"`` or ``"forkserver"`` start method for children that should use
    several threads."""
    # Checked here: the binding would take True as 1 and answer 1.5 with pybind11's signature dump.
    _core.set_num_threads(_check_int(n, "n", 1, _core.MAX_THREADS))


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
    or ``"generic"``), ``avx512f_cpu`` (whether the CPU has AVX-512F; the kernels use AVX2 on
    it too), ``openmp`` (bool), ``num_threads`` (threads the kernels use),
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
    "DeviceArray",
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
    "to_device",
]
