"""fastmlp's CUDA GEMMs (FP32 SIMT and TF32 tensor cores) against cuBLAS, on one GPU.

    python benchmarks/bench_cuda_gemm.py [--quick] [--out benchmarks/RESULTS_cuda_gemm.md]

cuBLAS is reached through PyTorch (FP32 with allow_tf32 off, TF32 with it on) or, without
PyTorch, CuPy (FP32 only: CuPy picks TF32 from the CUPY_TF32 environment variable at import).
Every operand is the same device memory for both (shared through DLPack), so both read the same
bytes. Timing: CUDA events on the legacy default stream, where fastmlp, PyTorch's default stream
and CuPy's null stream all queue their work; each sample times a batch of back-to-back calls
(at least ~2 ms of GPU work) and the table reports the median over the samples, after a warm-up.
Small shapes rotate among several operand sets so that they are not timed out of a warm L2.
Each row also checks our result against cuBLAS (relative Frobenius error): a fast wrong kernel
shows up there. Prints a Markdown table with the GPU name, date and command line.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
from collections.abc import Callable

import numpy as np

import fastmlp
from fastmlp import cuda

# (m, n, k, trans_a, trans_b, label): square sizes of the issue, then the GEMMs of one training
# step of a 784-512-256-10 MLP at batch 256 and 4096 (forward NN, input gradient NT, weight
# gradient TN).
SQUARE = [(s, s, s, False, False, f"{s}^3 NN") for s in (1024, 4096, 8192)]


def mlp_shapes(batch: int) -> list[tuple[int, int, int, bool, bool, str]]:
    out = []
    for fan_in, fan_out in ((784, 512), (512, 256), (256, 10)):
        out.append((batch, fan_out, fan_in, False, False, f"B{batch} fwd {fan_in}->{fan_out} NN"))
        out.append((batch, fan_in, fan_out, False, True, f"B{batch} dX {fan_out}->{fan_in} NT"))
        out.append((fan_in, fan_out, batch, True, False, f"B{batch} dW {fan_in}x{fan_out} TN"))
    return out


class Backend:
    """cuBLAS through torch or cupy, and CUDA events on the legacy default stream."""

    def __init__(self) -> None:
        try:
            import torch

            if not torch.cuda.is_available():
                raise ImportError("torch without CUDA")
            self.torch, self.cupy, self.name = torch, None, f"torch {torch.__version__}"
        except ImportError:
            import cupy

            self.torch, self.cupy, self.name = None, cupy, f"cupy {cupy.__version__}"

    def event(self) -> object:
        if self.torch is not None:
            return self.torch.cuda.Event(enable_timing=True)
        return self.cupy.cuda.Event()

    def elapsed_ms(self, start: object, end: object) -> float:
        end.synchronize()  # type: ignore[attr-defined]
        if self.torch is not None:
            return float(start.elapsed_time(end))  # type: ignore[attr-defined]
        return float(self.cupy.cuda.get_elapsed_time(start, end))

    def view(self, d: cuda.DeviceArray) -> object:
        lib = self.torch if self.torch is not None else self.cupy
        return lib.from_dlpack(d)

    def gemm(
        self, c: object, a: object, b: object, ta: bool, tb: bool, tf32: bool
    ) -> Callable[[], None] | None:
        if self.torch is not None:
            torch = self.torch
            opa = a.t() if ta else a  # type: ignore[attr-defined]
            opb = b.t() if tb else b  # type: ignore[attr-defined]

            def run() -> None:
                torch.backends.cuda.matmul.allow_tf32 = tf32
                torch.mm(opa, opb, out=c)

            return run
        if tf32:
            return None  # CuPy's TF32 switch is fixed at import (CUPY_TF32)
        cp = self.cupy
        opa = a.T if ta else a  # type: ignore[attr-defined]
        opb = b.T if tb else b  # type: ignore[attr-defined]
        return lambda: cp.matmul(opa, opb, out=c)


def time_ms(backend: Backend, calls: list[Callable[[], None]], samples: int) -> float:
    """Median milliseconds per call; each sample is a batch of back-to-back calls."""
    for f in calls:  # warm-up: module load, cuBLAS handle and heuristics
        f()
    start, end = backend.event(), backend.event()
    start.record()  # type: ignore[attr-defined]
    calls[0]()
    end.record()  # type: ignore[attr-defined]
    one = max(backend.elapsed_ms(start, end), 1e-3)
    per_batch = max(1, int(2.0 / one))
    results = []
    for s in range(samples):
        start.record()  # type: ignore[attr-defined]
        for i in range(per_batch):
            calls[(s * per_batch + i) % len(calls)]()
        end.record()  # type: ignore[attr-defined]
        results.append(backend.elapsed_ms(start, end) / per_batch)
    return statistics.median(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, no 8192^3")
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args()
    if not fastmlp.cuda_available():
        print(f"no usable GPU: {fastmlp._cuda_info()['error']}", file=sys.stderr)
        return 1
    backend = Backend()
    info = fastmlp._cuda_info()
    samples = 7 if args.quick else args.samples
    shapes = (
        [s for s in SQUARE if not (args.quick and s[0] > 4096)] + mlp_shapes(256) + mlp_shapes(4096)
    )
    rng = np.random.default_rng(0)

    rows = []
    for m, n, k, ta, tb, label in shapes:
        sets = 1 if m * n * k >= 1024**3 else 4  # rotate small operands out of L2
        ours: dict[bool, list[Callable[[], None]]] = {False: [], True: []}
        blas: dict[bool, list[Callable[[], None]]] = {False: [], True: []}
        errs = {False: 0.0, True: 0.0}
        for _ in range(sets):
            a = cuda.to_device(rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32))
            b = cuda.to_device(rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32))
            c_ours = {t: cuda.empty((m, n)) for t in (False, True)}
            c_blas = {t: cuda.empty((m, n)) for t in (False, True)}
            for tf32 in (False, True):
                co = c_ours[tf32]
                ours[tf32].append(
                    lambda co=co, a=a, b=b, ta=ta, tb=tb, tf32=tf32: cuda.gemm(
                        co, a, b, trans_a=ta, trans_b=tb, tf32=tf32
                    )
                )
                f = backend.gemm(
                    backend.view(c_blas[tf32]), backend.view(a), backend.view(b), ta, tb, tf32
                )
                if f is not None:
                    blas[tf32].append(f)
            for tf32 in (False, True):  # correctness of this shape, against cuBLAS FP32
                ours[tf32][-1]()
                blas[False][-1]()
                mine, ref = c_ours[tf32].numpy(), c_blas[False].numpy()
                errs[tf32] = max(
                    errs[tf32], float(np.linalg.norm(mine - ref) / max(np.linalg.norm(ref), 1e-30))
                )
        flops = 2.0 * m * n * k
        row = [label]
        for tf32 in (False, True):
            t_ours = time_ms(backend, ours[tf32], samples)
            t_blas = time_ms(backend, blas[tf32], samples) if blas[tf32] else float("nan")
            row += [
                f"{flops / t_ours / 1e9:.2f}",  # FLOP per ms / 1e9 = TFLOP/s
                f"{flops / t_blas / 1e9:.2f}",
                f"{100 * t_blas / t_ours:.0f}%",
                f"{errs[tf32]:.1e}",
            ]
        rows.append(row)
        print(" | ".join(row), file=sys.stderr, flush=True)

    header = [
        "shape (m,n,k)",
        "ours FP32 TFLOP/s",
        "cuBLAS FP32",
        "ours/cuBLAS",
        "rel err",
        "ours TF32 TFLOP/s",
        "cuBLAS TF32",
        "ours/cuBLAS",
        "rel err",
    ]
    lines = [
        f"## fastmlp CUDA GEMM vs cuBLAS on {info['devices'][0]}",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- fastmlp {fastmlp.__version__}, cuBLAS through {backend.name}, CUDA runtime "
        f"{info['runtime_version']}, driver {info['driver_version']}, {platform.node()}",
        f"- median of {samples} samples (CUDA events, batches of back-to-back calls); rel err ="
        " ||ours - cuBLAS FP32||_F / ||cuBLAS FP32||_F",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(table + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
