"""One training step of fastmlp against a plain NumPy step and PyTorch eager, in one process;
and ``ops.matmul`` against ``numpy.matmul`` (the GEMM section below).

Used by ``benchmarks/bench_step.py`` and ``bench_gemm.py`` (the full tables) and ``fastmlp bench``
(a short version of both).
The NumPy step is the one of ``/work/shared/anchors/mlp_anchor.py`` (forward, softmax
cross-entropy, backward, optimizer update in float32 NumPy) generalised to every optimizer; the
PyTorch step is the anchor's eager step (``zero_grad``, forward, ``CrossEntropyLoss``,
``backward``, ``optimizer.step``) with the matching ``torch.optim`` class. Ours is the public
``MLP.train_step`` call, Python wrapper included.

Timing: the contenders run in rotation, one *round* at a time (a round is enough steps to last
``round_s`` seconds), so that all of them see the same machine load; the reported time is the
median over rounds of the time per step, after a warm-up.

Page faults: the minor page faults per timed step of each contender are counted too (Unix). The
NumPy step allocates temporaries of up to ~800 KiB per parameter update; glibc's malloc serves
those with mmap or trims them back to the OS after each step, depending on its thresholds (which
move with the process's allocation history), so in some processes NumPy pays ~1000 page faults
per step (measured: ~3.5 us each on the development VM) and in others none. The column makes
that visible; ``MALLOC_TRIM_THRESHOLD_=268435456 MALLOC_MMAP_THRESHOLD_=67108864`` in the
environment keeps glibc from returning that memory and gives NumPy's fault-free time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import numpy as np

# Optimizer name -> (fastmlp.optim class, kwargs), shared by the three contenders.
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "adam": ("Adam", {"lr": 1e-3}),
    "adamw": ("AdamW", {"lr": 1e-3, "weight_decay": 0.01}),
    "sgd": ("SGD", {"lr": 0.01}),
    "momentum": ("SGD", {"lr": 0.01, "momentum": 0.9}),
    "nesterov": ("SGD", {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
    "adagrad": ("AdaGrad", {"lr": 0.01}),
    "rmsprop": ("RMSProp", {"lr": 0.01}),
}

# (layer sizes, batch): the cases of the issue "ahead of NumPy and PyTorch on the CPU".
FULL_CASES: list[tuple[list[int], int]] = [
    ([784, 256, 128, 10], 32),
    ([784, 256, 128, 10], 128),
    ([784, 256, 128, 10], 1024),
    ([784, 1024, 1024, 10], 256),
    ([2, 16, 2], 32),
]
QUICK_CASES: list[tuple[list[int], int]] = [([784, 256, 128, 10], 128), ([2, 16, 2], 32)]

Step = Callable[[], object]


# ------------------------------------------------------------------------------------ contenders
def numpy_step(sizes: Sequence[int], optimizer: str, x: np.ndarray, y: np.ndarray) -> Step:
    """The anchor's NumPy step, with ``optimizer`` written as torch.optim does it."""
    rng = np.random.default_rng(0)
    Ws = [
        (rng.standard_normal((i, o)) * np.sqrt(2.0 / i)).astype(np.float32)
        for i, o in zip(sizes[:-1], sizes[1:])
    ]
    bs = [np.zeros(o, np.float32) for o in sizes[1:]]
    params = Ws + bs
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = [0]
    kw = OPTIMIZERS[optimizer][1]
    lr = kw["lr"]
    rows = np.arange(len(y))

    def update(i: int, p: np.ndarray, g: np.ndarray) -> None:
        step = t[0]
        if optimizer in ("adam", "adamw"):
            b1, b2, eps = 0.9, 0.999, 1e-8
            if optimizer == "adamw":
                p *= 1 - lr * kw["weight_decay"]
            m[i] *= b1
            m[i] += (1 - b1) * g
            v[i] *= b2
            v[i] += (1 - b2) * g * g
            mh = m[i] / (1 - b1**step)
            vh = v[i] / (1 - b2**step)
            p -= lr * mh / (np.sqrt(vh) + eps)
        elif optimizer == "sgd":
            p -= lr * g
        elif optimizer in ("momentum", "nesterov"):
            if step == 1:
                m[i][...] = g
            else:
                m[i] *= 0.9
                m[i] += g
            p -= lr * (g + 0.9 * m[i] if optimizer == "nesterov" else m[i])
        elif optimizer == "adagrad":
            v[i] += g * g
            p -= lr * g / (np.sqrt(v[i]) + 1e-10)
        else:  # rmsprop
            v[i] *= 0.99
            v[i] += 0.01 * g * g
            p -= lr * g / (np.sqrt(v[i]) + 1e-8)

    def step() -> object:
        hs = [x]
        h = x
        for k, (W, b) in enumerate(zip(Ws, bs)):
            a = h @ W + b
            h = np.maximum(a, 0) if k < len(Ws) - 1 else a
            hs.append(h)
        z = h - h.max(1, keepdims=True)
        e = np.exp(z)
        p = e / e.sum(1, keepdims=True)
        loss = -np.log(p[rows, y] + 1e-12).mean()
        g = p
        g[rows, y] -= 1
        g /= len(y)
        gW: list[Any] = [None] * len(Ws)
        gb: list[Any] = [None] * len(bs)
        for k in reversed(range(len(Ws))):
            gW[k] = hs[k].T @ g
            gb[k] = g.sum(0)
            if k:
                g = (g @ Ws[k].T) * (hs[k] > 0)
        t[0] += 1
        for i, (p_, g_) in enumerate(zip(params, gW + gb)):
            update(i, p_, g_)
        return loss

    return step


def torch_step(sizes: Sequence[int], optimizer: str, x: np.ndarray, y: np.ndarray) -> Step:
    """The anchor's PyTorch eager step with the matching torch.optim optimizer."""
    import torch

    layers: list[Any] = []
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(i, o))
        if k < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    kw = dict(OPTIMIZERS[optimizer][1])
    cls = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "sgd": torch.optim.SGD,
        "momentum": torch.optim.SGD,
        "nesterov": torch.optim.SGD,
        "adagrad": torch.optim.Adagrad,
        "rmsprop": torch.optim.RMSprop,
    }[optimizer]
    opt = cls(model.parameters(), **kw)
    lossf = torch.nn.CrossEntropyLoss()
    tx, ty = torch.tensor(x), torch.tensor(y)

    def step() -> object:
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(tx), ty)
        loss.backward()
        opt.step()
        return loss

    return step


def ours_step(sizes: Sequence[int], optimizer: str, x: np.ndarray, y: np.ndarray) -> Step:
    """``MLP.train_step`` through the public API (the Python wrapper is part of the time)."""
    import fastmlp as fm

    model = fm.MLP(list(sizes), seed=0)
    cls_name, kw = OPTIMIZERS[optimizer]
    opt = getattr(fm.optim, cls_name)(model, **kw)
    train_step = model.train_step

    def step() -> object:
        return train_step(x, y, optimizer=opt)

    return step


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------ timing
def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where getrusage is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _steps_per_round(fn: Step, round_s: float) -> int:
    t = time.perf_counter()
    fn()
    single = max(time.perf_counter() - t, 1e-7)
    return max(1, int(round_s / single))


# Defaults of the pause before each timed round and of the untimed steps after it. OpenBLAS's
# idle threads spin for 100 ms and more after its last call and take the cores from whatever runs
# next: on the 2-core development VM a fastmlp round right after a NumPy round ran at 2.3 ms per
# 784-256-128-10 step (batch 128) with no pause, 1.7 ms after 30 ms, 1.36 ms after 250 ms, against
# 1.3 ms alone; NumPy's own time did not change (fastmlp's threads sleep at once). After a pause
# that VM's cores also run slowly for their first tens of milliseconds (the GEMM benchmark found
# the same), hence the untimed steps before each round, as bench_gemm.py's --settle-ms.
GAP_S = 0.25
SETTLE_S = 0.06


def time_contenders(
    steps: dict[str, Step],
    rounds: int,
    round_s: float,
    warmup_s: float,
    gap_s: float = GAP_S,
    faults: dict[str, float] | None = None,
    settle_s: float = SETTLE_S,
) -> dict[str, float]:
    """Median seconds per step of each contender; rounds interleaved across contenders, each
    after a pause of ``gap_s`` (so that the previous contender's idle worker threads, which
    OpenBLAS keeps spinning for a while after a call, have gone to sleep) and ``settle_s`` of
    untimed steps (at least one). ``faults``, when given, receives each contender's minor page
    faults per timed step."""
    counts = {}
    for name, fn in steps.items():
        end = time.perf_counter() + warmup_s
        fn()
        while time.perf_counter() < end:
            fn()
        counts[name] = _steps_per_round(fn, round_s)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    fault_count = dict.fromkeys(steps, 0)
    for _ in range(rounds):
        for name, fn in steps.items():
            n = counts[name]
            if gap_s > 0:
                time.sleep(gap_s)
            settled = time.perf_counter() + settle_s
            fn()  # untimed: the caches and the core's clock come back
            while time.perf_counter() < settled:
                fn()
            f0 = _minor_faults()
            t = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t) / n)
            fault_count[name] += _minor_faults() - f0
    if faults is not None:
        for name in steps:
            faults[name] = fault_count[name] / (rounds * counts[name])
    return {name: statistics.median(s) for name, s in samples.items()}


# ------------------------------------------------------------------------------------- GEMM
# ops.matmul against numpy.matmul, used by benchmarks/bench_gemm.py and ``fastmlp bench``.

# The backprop products of a 784-256 layer at batch 128 (name, m, n, k, trans_a, trans_b):
#   forward   z = x @ W            NN  (128,784) @ (784,256)
#   backward  dX = dZ @ W^T        NT  (128,256) @ (784,256)^T
#   backward  dW = X^T @ dZ        TN  (128,784)^T @ (128,256)
MLP_GEMM_CASES: list[tuple[str, int, int, int, bool, bool]] = [
    ("mlp fwd   x@W", 128, 256, 784, False, False),
    ("mlp dX  dZ@W^T", 128, 784, 256, False, True),
    ("mlp dW  X^T@dZ", 784, 256, 128, True, False),
]
# The products ``fastmlp bench`` times: those three, and 1024^3.
QUICK_GEMM_CASES = [*MLP_GEMM_CASES, ("square 1024", 1024, 1024, 1024, False, False)]


# Idle time before each GEMM sample and untimed calls after it (see time_pair), the defaults of
# bench_gemm.py and fastmlp bench. On the development VM, settling for 20-40 ms instead of 60
# after a 0.1 s pause measured our 2-thread 128x256x784 at 91-108 GFLOP/s instead of 155.
GEMM_PAUSE_S = 0.25
GEMM_SETTLE_S = 0.06


def calls_per_sample(fn: Callable[[], object], target_s: float) -> int:
    """How many calls of ``fn`` last about ``target_s`` seconds (at least 1)."""
    t = time.perf_counter()
    fn()
    single = max(time.perf_counter() - t, 1e-7)
    return max(1, int(target_s / single))


def time_pair(
    ours: Callable[[], object],
    theirs: Callable[[], object],
    repeat: int,
    sample_s: float,
    pause_s: float,
    settle_s: float,
) -> tuple[list[float], list[float]]:
    """Seconds per call of each function, one entry per sample, samples taken alternately.

    Each sample starts after a pause: OpenBLAS's idle worker threads busy-wait for a while after a
    call (and OpenMP's, for a shorter while), and that spinning takes a core from the next sample
    of the other library (measured here: our 2-thread 1024^3 at 49 GFLOP/s right after a NumPy
    call, 79 after 0.3 s). After the pause, ``settle_s`` of untimed calls: on this VM the cores
    come back from idle slowly (the first ~30 ms of calls after a 0.25 s sleep ran at half the
    steady speed, on 1 thread as on 2), and a sample taken in that ramp measures the host's
    frequency and scheduling, not the kernel.
    """
    for fn in (ours, theirs):  # warm-up: page faults, packing buffers, BLAS thread start
        fn()
        fn()
    n_ours, n_theirs = calls_per_sample(ours, sample_s), calls_per_sample(theirs, sample_s)
    t_ours: list[float] = []
    t_theirs: list[float] = []
    for _ in range(repeat):
        for fn, n, out in ((ours, n_ours, t_ours), (theirs, n_theirs, t_theirs)):
            time.sleep(pause_s)
            settle_end = time.perf_counter() + settle_s
            while time.perf_counter() < settle_end:
                fn()
            t = time.perf_counter()
            for _ in range(n):
                fn()
            out.append((time.perf_counter() - t) / n)
    return t_ours, t_theirs


def gemm_case(
    name: str,
    m: int,
    n: int,
    k: int,
    trans_a: bool,
    trans_b: bool,
    *,
    repeat: int,
    sample_s: float,
    pause_s: float,
    settle_s: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Time ``ops.matmul`` against ``numpy.matmul`` on random float32 operands of op(A) (m, k)
    and op(B) (k, n), at the thread counts in force (the caller sets them); GFLOP/s = 2mnk/time
    of the median sample, ``ratio`` = NumPy's time / ours (> 1: ours faster), ``ratio_paired``
    the median of that ratio over samples taken back to back, and the best sample of each."""
    from . import ops

    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    op_a = a.T if trans_a else a  # views: NumPy passes the transpose flag to BLAS, no copy
    op_b = b.T if trans_b else b

    # Both calls allocate their result, as a user's `x @ w` does.
    def ours() -> None:
        ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)

    def theirs() -> None:
        np.matmul(op_a, op_b)

    s_ours, s_np = time_pair(ours, theirs, repeat, sample_s, pause_s, settle_s)
    flop = 2.0 * m * n * k
    return {
        "case": name,
        "m": m,
        "n": n,
        "k": k,
        "trans": ("T" if trans_a else "N") + ("T" if trans_b else "N"),
        "ours_gflops": flop / statistics.median(s_ours) / 1e9,
        "numpy_gflops": flop / statistics.median(s_np) / 1e9,
        "ratio": statistics.median(s_np) / statistics.median(s_ours),
        "ratio_paired": statistics.median(t / o for o, t in zip(s_ours, s_np)),
        # Best sample of each: closer to the unloaded speed when other processes share the cores.
        "ours_best_gflops": flop / min(s_ours) / 1e9,
        "numpy_best_gflops": flop / min(s_np) / 1e9,
        "ratio_best": min(s_np) / min(s_ours),
        "samples_ours_s": s_ours,
        "samples_numpy_s": s_np,
    }


# ------------------------------------------------------------------------------------ options
class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``prog: error: message``, exit status 2)
    instead of the usage block and then the message; the ``fastmlp`` command's parser too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def option(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` as an argparse ``type=``: its ValueError message becomes the error text
    (``argument --cases: <message>``) instead of argparse's bare "invalid value"."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def positive_int(text: str) -> int:
    """An int >= 1 (thread counts, rounds); ValueError otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"expected an int >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0 (the length of a timed round); ValueError otherwise."""
    return _finite_float(text, "> 0", lambda v: v > 0)


def nonnegative_float(text: str) -> float:
    """A finite float >= 0 (warm-up, pause, settling time); ValueError otherwise."""
    return _finite_float(text, ">= 0", lambda v: v >= 0)


def _finite_float(text: str, bound: str, ok: Callable[[float], bool]) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"expected a number {bound}, got {text!r}")
    return value


# ------------------------------------------------------------------------------------ report
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def header(threads: dict[str, Any]) -> dict[str, Any]:
    import fastmlp as fm

    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("OMP_", "GOMP_", "OPENBLAS_", "MKL_", "FASTMLP_", "MALLOC_"))
    }
    return {
        "machine": f"{cpu_model()}, {os.cpu_count()} logical cores",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "fastmlp": fm.__version__,
        "numpy": np.__version__,
        "threads": threads,
        "env": env,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


@contextlib.contextmanager
def thread_settings(n: int | None, use_torch: bool = True) -> Iterator[dict[str, Any]]:
    """Apply ``n`` threads to fastmlp, PyTorch (if ``use_torch`` and installed) and NumPy's BLAS
    (threadpoolctl, if installed) for the ``with`` block; yield what each uses.

    The counts found on entry are put back on exit, exception or not: ``fastmlp bench`` runs in
    the caller's process (``fastmlp.cli.main`` is callable from Python, and the scripts can be run
    with ``runpy``), where a benchmark's ``--threads 1`` must not outlive the benchmark.
    """
    import fastmlp as fm

    restore: list[Callable[[], object]] = []  # undo actions, run in reverse order
    try:
        if n is not None:
            old_fm = fm.get_num_threads()
            fm.set_num_threads(n)
            restore.append(lambda: fm.set_num_threads(old_fm))
        out: dict[str, Any] = {"fastmlp": fm.get_num_threads()}
        try:
            import threadpoolctl
        except ImportError:
            # Say so in the header: a "--threads 1" row would otherwise hide a multi-threaded BLAS.
            out["numpy_blas"] = "not limited (threadpoolctl not installed)"
        else:
            if n is not None:
                limiter = threadpoolctl.threadpool_limits(n, user_api="blas")
                restore.append(limiter.restore_original_limits)
            out["numpy_blas"] = [
                f"{i.get('internal_api')} {i.get('num_threads')}"
                for i in threadpoolctl.threadpool_info()
                if i.get("user_api") == "blas"
            ]
        if use_torch and torch_available():
            import torch

            if n is not None:
                old_torch = torch.get_num_threads()
                torch.set_num_threads(n)
                restore.append(lambda: torch.set_num_threads(old_torch))
            out["torch"] = torch.get_num_threads()
        yield out
    finally:
        for undo in reversed(restore):
            undo()


def parse_names(text: str, known: Sequence[str], what: str) -> list[str]:
    """``"a, b,"`` -> ``["a", "b"]``, each in ``known``, repeats dropped; ValueError (a one-line
    message naming the ``what``) for an unknown name or an empty list, which would time nothing
    and print an empty table."""
    names = [o.strip() for o in text.split(",") if o.strip()]
    listed = ", ".join(known)
    if not names:
        raise ValueError(f"no {what} given; known: {listed}")
    for o in names:
        if o not in known:
            raise ValueError(f"unknown {o!r}; known: {listed}")
    return list(dict.fromkeys(names))


def parse_optimizers(text: str) -> list[str]:
    """``"adam,sgd"`` -> ``["adam", "sgd"]`` (see :func:`parse_names`)."""
    return parse_names(text, OPTIMIZERS, "optimizer")


def parse_cases(text: str) -> list[tuple[list[int], int]]:
    """``"784-256-128-10:128,2-16-2:32"`` -> ``[([784, 256, 128, 10], 128), ([2, 16, 2], 32)]``.

    ValueError (a one-line message) unless every item is at least two layer sizes >= 1
    joined by ``-``, then ``:`` and a batch >= 1: checked here, before any timing, instead of
    surfacing as a traceback from ``int()`` or the engine halfway through a run."""
    cases = []
    for item in text.split(","):
        net, sep, batch = item.strip().partition(":")
        try:
            sizes = [int(s) for s in net.split("-")]
            rows = int(batch)
        except ValueError:
            sizes, rows = [], 0
        if not sep or len(sizes) < 2 or min(sizes) < 1 or rows < 1:
            raise ValueError(
                f"expected NETWORK:BATCH items such as 784-256-128-10:128 (layer sizes "
                f">= 1, at least two; batch >= 1), got {item.strip()!r}"
            )
        cases.append((sizes, rows))
    return cases


def run_cases(
    cases: Sequence[tuple[Sequence[int], int]],
    optimizers: Sequence[str],
    *,
    rounds: int = 15,
    round_s: float = 0.05,
    warmup_s: float = 0.1,
    use_torch: bool = True,
    use_numpy: bool = True,
    gap_s: float = GAP_S,
    settle_s: float = SETTLE_S,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per (case, optimizer): seconds per step of each contender and the speed-ups."""
    rows = []
    for sizes, batch in cases:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], batch)
        for opt in optimizers:
            steps = {"ours": ours_step(sizes, opt, x, y)}
            if use_numpy:
                steps["numpy"] = numpy_step(sizes, opt, x, y)
            if use_torch:
                steps["torch"] = torch_step(sizes, opt, x, y)
            faults: dict[str, float] = {}
            times = time_contenders(
                steps, rounds, round_s, warmup_s, gap_s=gap_s, settle_s=settle_s, faults=faults
            )
            row: dict[str, Any] = {
                "sizes": list(sizes),
                "batch": batch,
                "optimizer": opt,
                "us": {k: v * 1e6 for k, v in times.items()},
                "faults_per_step": faults,
            }
            row["speedup"] = {k: times[k] / times["ours"] for k in times if k != "ours"}
            rows.append(row)
            if progress is not None:
                progress(format_row(row))
    return rows


TABLE_HEAD = (
    f"{'network':<20} {'batch':>5} {'opt':<8} {'ours us':>9} {'numpy us':>9} {'torch us':>9} "
    f"{'vs numpy':>9} {'vs torch':>9}  {'faults/step o/n/t'}"
)


def _faults_cell(row: dict[str, Any]) -> str:
    f = row.get("faults_per_step", {})
    return "/".join(f"{f[k]:.0f}" if k in f else "-" for k in ("ours", "numpy", "torch"))


def format_row(row: dict[str, Any]) -> str:
    us, sp = row["us"], row["speedup"]

    def cell(d: dict[str, float], k: str, fmt: str) -> str:
        return format(d[k], fmt) if k in d else "-"

    return (
        f"{'-'.join(map(str, row['sizes'])):<20} {row['batch']:>5} {row['optimizer']:<8} "
        f"{us['ours']:>9.1f} {cell(us, 'numpy', '9.1f'):>9} {cell(us, 'torch', '9.1f'):>9} "
        f"{cell(sp, 'numpy', '8.2f') + 'x' if 'numpy' in sp else '-':>9} "
        f"{cell(sp, 'torch', '8.2f') + 'x' if 'torch' in sp else '-':>9}  {_faults_cell(row)}"
    )


def format_table(head: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        f"machine: {head['machine']}",
        f"date:    {head['date']}",
        f"command: {head['command']}",
        f"threads: {head['threads']}",
        f"env:     {head['env'] or '-'}",
        f"load:    {head['load_average']}",
        "one training step (forward, softmax cross-entropy, backward, update); median us per "
        "step; 'vs X' = X time / ours time (> 1: ours faster); minor page faults per step of "
        "ours/numpy/torch",
        TABLE_HEAD,
    ]
    lines += [format_row(r) for r in rows]
    return "\n".join(lines)


def _md_cell(d: dict[str, float], k: str, fmt: str, suffix: str = "") -> str:
    """A Markdown cell: ``-`` for a contender left out, as in the text table (not ``nan``)."""
    return format(d[k], fmt) + suffix if k in d else "-"


def format_markdown(head: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The table as Markdown, with the header facts above it."""
    out = [
        f"- machine: {head['machine']}",
        f"- date: {head['date']}",
        f"- command: `{head['command']}`",
        f"- threads: {head['threads']}",
        f"- env: {head['env'] or '-'}",
        f"- load average (1, 5, 15 min) at start: {head['load_average']}, "
        f"at end: {head.get('load_average_end')}",
        "",
        "| network | batch | optimizer | ours (us) | NumPy (us) | PyTorch (us) | vs NumPy "
        "| vs PyTorch | page faults/step (ours/NumPy/PyTorch) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        us, sp = r["us"], r["speedup"]
        out.append(
            f"| {'-'.join(map(str, r['sizes']))} | {r['batch']} | {r['optimizer']} "
            f"| {us['ours']:.1f} | {_md_cell(us, 'numpy', '.1f')} | {_md_cell(us, 'torch', '.1f')} "
            f"| {_md_cell(sp, 'numpy', '.2f', 'x')} | {_md_cell(sp, 'torch', '.2f', 'x')} "
            f"| {_faults_cell(r)} |"
        )
    return "\n".join(out) + "\n"
