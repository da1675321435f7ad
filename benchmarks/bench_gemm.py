"""GEMM throughput: fastmlp.ops.matmul against numpy.matmul (OpenBLAS here), same process.

For every case and thread count, ours and NumPy's calls are timed alternately (so that both see the
same machine load), each sample long enough (--sample-ms, several calls) to swamp the timer, after
a warm-up; the table shows the median GFLOP/s = 2 m n k / time and the ratio ours / numpy, the
paired ratio (the median over samples i of numpy_i / ours_i, two samples taken back to back: it
cancels the drifts of this VM's speed over a run, which the ratio of medians does not), then the
GFLOP/s and ratio of the best sample of each (closer to the unloaded speed when the cores are
shared).
Threads: ours through fastmlp._core.set_num_threads, NumPy's BLAS through threadpoolctl when it
is installed; without it NumPy's BLAS runs at its own default at every thread count, and the
header says so (the "thr" column is then ours alone). Both are put back at the end.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py --threads 1,2
    python benchmarks/bench_gemm.py --threads 1 --sizes 1024 --json gemm.json --markdown gemm.md
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
from typing import Any

import numpy as np

from fastmlp import _bench, _core
from fastmlp._bench import cpu_model

try:  # optional, as for bench_step.py: no peer (nor threadpoolctl) is a fastmlp dependency
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:
    threadpool_info = threadpool_limits = None


def blas_limits(threads: int) -> contextlib.AbstractContextManager[Any]:
    """NumPy's BLAS at ``threads`` for the ``with`` block (restored after), or nothing without
    threadpoolctl (the header then says that NumPy ran at its own default)."""
    if threadpool_limits is None:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def header() -> dict:
    blas = [
        {
            k: lib.get(k)
            for k in ("internal_api", "version", "threading_layer", "architecture", "num_threads")
        }
        for lib in (threadpool_info() if threadpool_info is not None else [])
        if lib.get("user_api") == "blas"
    ]
    env = {
        k: os.environ[k]
        for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")
        if k in os.environ
    }
    return {
        "machine": f"{cpu_model()}, {os.cpu_count()} logical cores",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "numpy": np.__version__,
        "blas": blas,
        "numpy_threads_limited": threadpool_limits is not None,
        "fastmlp": _core._build_info(),
        "env": env,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def run_case(name, m, n, k, trans_a, trans_b, threads, repeat, sample_s, pause_s, settle_s, rng):
    _core.set_num_threads(threads)
    with blas_limits(threads):
        row = _bench.gemm_case(
            name,
            m,
            n,
            k,
            trans_a,
            trans_b,
            repeat=repeat,
            sample_s=sample_s,
            pause_s=pause_s,
            settle_s=settle_s,
            rng=rng,
        )
    row["threads"] = threads
    row["numpy_threads"] = threads if threadpool_limits is not None else "default"
    return row


def int_list(text: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``, every value >= 1; ValueError otherwise."""
    try:
        return [_bench.positive_int(t.strip()) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated ints >= 1, got {text!r}") from None


def main(argv: list[str] | None = None) -> None:
    parser = _bench.OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads",
        type=_bench.option(int_list),
        default="1,2",
        help="comma-separated thread counts",
    )
    parser.add_argument(
        "--sizes",
        type=_bench.option(int_list),
        default="256,512,1024,2048",
        help="square sizes, comma-separated",
    )
    parser.add_argument("--large", action="store_true", help="also run 4096^3")
    parser.add_argument("--no-mlp", action="store_true", help="skip the MLP backprop shapes")
    parser.add_argument(
        "--repeat",
        type=_bench.option(_bench.positive_int),
        default=7,
        help="timed samples per case (median)",
    )
    parser.add_argument(
        "--sample-ms",
        type=_bench.option(_bench.positive_float),
        default=20.0,
        help="length of one timed sample (several calls)",
    )
    parser.add_argument(
        "--pause-ms",
        type=_bench.option(_bench.nonnegative_float),
        default=_bench.GEMM_PAUSE_S * 1000,
        help="idle time before each sample (see fastmlp._bench.time_pair)",
    )
    parser.add_argument(
        "--settle-ms",
        type=_bench.option(_bench.nonnegative_float),
        default=_bench.GEMM_SETTLE_S * 1000,
        help="untimed calls after each pause, before the sample (see fastmlp._bench.time_pair)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write header and rows as JSON")
    parser.add_argument(
        "--markdown", metavar="PATH", help="also write the header and table as Markdown"
    )
    args = parser.parse_args(argv)

    threads = args.threads
    sizes = args.sizes + ([4096] if args.large else [])
    cases = [(f"square {s}", s, s, s, False, False) for s in sizes]
    if not args.no_mlp:
        cases += _bench.MLP_GEMM_CASES

    info = header()
    notes = [f"machine: {info['machine']}", f"date: {info['date']}"]
    blas = ", ".join(
        f"{b['internal_api']} {b['version']} ({b['architecture']})" for b in info["blas"]
    )
    simd = info["fastmlp"]["simd"]
    notes.append(f"numpy {info['numpy']}, BLAS: {blas or 'unknown'}; fastmlp simd {simd}")
    if not info["numpy_threads_limited"]:
        # Without this line a "thr 1" row would pass for NumPy on one thread.
        notes.append(
            "threadpoolctl not installed: NumPy's BLAS threads could not be limited, the numpy "
            "columns ran at the BLAS's own default on every row (thr = fastmlp's threads only)"
        )
    if info["env"]:
        notes.append(f"env: {info['env']}")
    notes.append(f"command: {info['command']}")
    if info["load_average"] is not None:
        # Other processes on the cores skew the multi-thread rows most (a preempted thread stalls
        # the whole call); compare rows only from runs at a low load.
        notes.append(
            "load average at start (1, 5, 15 min): "
            + ", ".join(f"{x:.2f}" for x in info["load_average"])
        )
    notes.append(
        f"GFLOP/s = 2mnk / time; median (and best) of {args.repeat} samples of "
        f">= {args.sample_ms:g} ms, ours and numpy alternating, each after "
        f"{args.pause_ms:g} ms idle and {args.settle_ms:g} ms of untimed calls"
    )
    for note in notes:
        print(f"# {note}")
    print()
    cols = (
        f"| {'case':<16} | {'m x n x k':<16} | op | thr | {'ours GF/s':>9} | {'numpy GF/s':>10} "
        f"| ratio | paired | {'best: ours':>10} | {'numpy':>5} | ratio |"
    )
    table = [cols, "|" + "|".join("-" * (len(c)) for c in cols.split("|")[1:-1]) + "|"]
    print("\n".join(table))

    rng = np.random.default_rng(0)
    rows = []
    old_threads = _core.get_num_threads()
    try:
        for t in threads:
            for case in cases:
                r = run_case(
                    *case,
                    threads=t,
                    repeat=args.repeat,
                    sample_s=args.sample_ms / 1e3,
                    pause_s=args.pause_ms / 1e3,
                    settle_s=args.settle_ms / 1e3,
                    rng=rng,
                )
                rows.append(r)
                shape = f"{r['m']}x{r['n']}x{r['k']}"
                table.append(
                    f"| {r['case']:<16} | {shape:<16} | {r['trans']} | {t:>3} | "
                    f"{r['ours_gflops']:>9.1f} | {r['numpy_gflops']:>10.1f} | {r['ratio']:>5.2f} | "
                    f"{r['ratio_paired']:>6.2f} | "
                    f"{r['ours_best_gflops']:>10.1f} | {r['numpy_best_gflops']:>5.1f} | "
                    f"{r['ratio_best']:>5.2f} |"
                )
                print(table[-1], flush=True)
    finally:
        _core.set_num_threads(old_threads)
    if hasattr(os, "getloadavg"):
        notes.append(f"load average at end: {os.getloadavg()[0]:.2f}")
        print(f"# {notes[-1]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": info, "rows": rows}, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join([*(f"- {n}" for n in notes), "", *table]) + "\n")


if __name__ == "__main__":
    main()
