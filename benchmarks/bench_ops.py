"""Elementwise and row kernels alone: fastmlp.ops against NumPy and PyTorch, same process.

Ops (float32, C-contiguous inputs, every call allocating its result as a user's call does):
activations relu, leaky_relu (0.01), elu (1.0), sigmoid, tanh through ``ops.activation``; their
backward (relu, elu, sigmoid, tanh) through ``ops.activation_backward(x, y, dy, name)``; the row
ops ``ops.softmax``, ``ops.log_softmax`` and ``ops.softmax_cross_entropy``; the elementwise
losses ``ops.bce_with_logits`` and ``ops.mse_loss``. Ours is the public
Python call, argument checks included. NumPy's twin is the expression a NumPy user writes (see
``OPS``); PyTorch's is the ATen function on ``torch.from_numpy`` views (no copy in the timed call):
``torch.relu``, ``F.leaky_relu``, ``F.elu``, ``torch.sigmoid``, ``torch.tanh``,
``aten.threshold_backward``/``elu_backward``/``sigmoid_backward``/``tanh_backward`` (the kernels
autograd calls; a row shows "-" for PyTorch where the installed torch lacks one),
``torch.softmax``, ``torch.log_softmax``, ``F.cross_entropy``,
``F.binary_cross_entropy_with_logits`` and ``F.mse_loss``.
``ops.softmax_cross_entropy`` returns the loss *and* the gradient of the logits, so the
``cross_entropy`` row times the loss and gradient on every side: NumPy computes both, PyTorch runs
``F.cross_entropy`` forward and ``backward()`` on a leaf tensor; ``cross_entropy_loss`` times the
loss alone (ours with ``need_grad=False``, PyTorch without autograd); ``bce``/``bce_loss`` and
``mse``/``mse_loss`` likewise.
Default shapes: 1024x256 (a hidden layer at batch 1024) and 128x256 for the activations,
1024x1000, 4096x10 and 128x10 for the row ops, 1024x784 (an MNIST-sized output) and 128x10 for
bce and mse; ``--shapes`` replaces them for every op.

Before timing a row, every peer's result is checked against ours (same dtype and shape,
``np.allclose`` with rtol 1e-3, atol 1e-5): a peer computing something else would make the
ratio meaningless; a mismatch stops the run with exit status 1.

Timing, as bench_gemm.py: a warm-up of one sample's length per contender (the untimed calls also
give the number of calls per sample), then ``--repeat`` rounds, each one sample per contender in
the order ours, NumPy, PyTorch (every sample --sample-ms long, several calls, after --pause-ms of
idle and --settle-ms of untimed calls), so that all see the same machine load. The table gives
the median microseconds per call, the ratio peer / ours of the medians (> 1: fastmlp faster) and
the paired ratio, the median over rounds i of peer_i / ours_i: ours_i and numpy_i are back to
back, torch_i follows numpy_i; it cancels the VM's drifts over a run, which the ratio of medians
does not. The pause defaults to 0, not bench_gemm's 250 ms: no contender here calls a BLAS, so no
OpenBLAS worker spins after a sample, and fastmlp and PyTorch share one libgomp with a passive
wait policy (see benchmarks/README.md, bench_step.py).
Threads: ours through fastmlp.set_num_threads, PyTorch through torch.set_num_threads (both put
back at the end, with NumPy's BLAS limit, through fastmlp._bench.thread_settings); NumPy's
elementwise ufuncs and reductions run on one thread at every thread count.
Overflow warnings of NumPy's ``1 / (1 + np.exp(-x))`` (x < -88) are silenced with np.errstate.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_ops.py --threads 1,2
    python benchmarks/bench_ops.py --threads 1 --ops relu,softmax --json ops.json --markdown ops.md
    python benchmarks/bench_ops.py --ops cross_entropy --shapes 256x10 --repeat 21 --no-torch
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fastmlp import _bench, _core, ops

Fn = Callable[[], object]
Shape = tuple[int, int]

ACT_SHAPES: list[Shape] = [(1024, 256), (128, 256)]
ROW_SHAPES: list[Shape] = [(1024, 1000), (4096, 10), (128, 10)]
LOSS_SHAPES: list[Shape] = [(1024, 784), (128, 10)]
RTOL, ATOL = 1e-3, 1e-5


# ------------------------------------------------------------------------------------ contenders
def _torch() -> Any:
    import torch

    return torch


def act_forward(name: str, numpy_fn: Callable[[np.ndarray], object], torch_name: str):
    """Builder of an activation forward row: ``y = f(x)``."""

    def build(data: dict[str, np.ndarray], use_torch: bool) -> dict[str, Fn | None]:
        x = data["x"]
        fns: dict[str, Fn | None] = {
            "ours": lambda: ops.activation(x, name),
            "numpy": lambda: numpy_fn(x),
        }
        if use_torch:
            torch = _torch()
            tx = torch.from_numpy(x)
            F = torch.nn.functional
            tf = {
                "relu": lambda: torch.relu(tx),
                "leaky_relu": lambda: F.leaky_relu(tx, 0.01),
                "elu": lambda: F.elu(tx, 1.0),
                "sigmoid": lambda: torch.sigmoid(tx),
                "tanh": lambda: torch.tanh(tx),
            }[torch_name]
            fns["torch"] = tf
        return fns

    return build


def act_backward(name: str, numpy_fn: Callable[..., object], aten: str):
    """Builder of an activation backward row: ``dx = dy * f'(x)`` from x, y = f(x) and dy."""

    def build(data: dict[str, np.ndarray], use_torch: bool) -> dict[str, Fn | None]:
        x, y, dy = data["x"], data["y"], data["dy"]
        fns: dict[str, Fn | None] = {
            "ours": lambda: ops.activation_backward(x, y, dy, name),
            "numpy": lambda: numpy_fn(x, y, dy),
        }
        if use_torch:
            torch = _torch()
            if not hasattr(torch.ops.aten, aten):
                fns["torch"] = None  # "-" in the table, noted in the JSON
                return fns
            op = getattr(torch.ops.aten, aten)
            tx, ty, tdy = (torch.from_numpy(a) for a in (x, y, dy))
            # The arguments autograd passes for torch.relu / F.elu / torch.sigmoid / torch.tanh.
            fns["torch"] = {
                "threshold_backward": lambda: op(tdy, ty, 0),
                "elu_backward": lambda: op(tdy, 1.0, 1, 1, False, tx),
                "sigmoid_backward": lambda: op(tdy, ty),
                "tanh_backward": lambda: op(tdy, ty),
            }[aten]
        return fns

    return build


def _np_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(1, keepdims=True)
    return z


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _np_cross_entropy(x: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> tuple[float, Any]:
    """Mean cross-entropy and its gradient (softmax - onehot) / N, max subtracted."""
    z = x - x.max(1, keepdims=True)
    e = np.exp(z)
    s = e.sum(1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - z[rows, labels]))
    e /= s
    e[rows, labels] -= 1
    e /= len(labels)
    return loss, e


def _np_cross_entropy_loss(x: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> float:
    z = x - x.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[rows, labels]))


def row_op(kind: str):
    """Builder of a row op: softmax, log_softmax, cross_entropy (loss and gradient: ours returns
    both), cross_entropy_loss (the loss alone)."""

    def build(data: dict[str, np.ndarray], use_torch: bool) -> dict[str, Fn | None]:
        x, labels = data["x"], data["labels"]
        rows = np.arange(len(labels))
        fns: dict[str, Fn | None] = {
            "softmax": {
                "ours": lambda: ops.softmax(x),
                "numpy": lambda: _np_softmax(x),
            },
            "log_softmax": {
                "ours": lambda: ops.log_softmax(x),
                "numpy": lambda: _np_log_softmax(x),
            },
            "cross_entropy": {
                "ours": lambda: ops.softmax_cross_entropy(x, labels),
                "numpy": lambda: _np_cross_entropy(x, labels, rows),
            },
            "cross_entropy_loss": {
                "ours": lambda: ops.softmax_cross_entropy(x, labels, need_grad=False)[0],
                "numpy": lambda: _np_cross_entropy_loss(x, labels, rows),
            },
        }[kind]
        if use_torch:
            torch = _torch()
            F = torch.nn.functional
            tx, ty = torch.from_numpy(x), torch.from_numpy(labels)
            leaf = torch.from_numpy(x).requires_grad_()  # shares x's memory, as tx does

            def torch_ce() -> tuple[float, Any]:
                leaf.grad = None  # a fresh gradient each call, as ours returns a new array
                loss = F.cross_entropy(leaf, ty)
                loss.backward()
                return loss.item(), leaf.grad

            fns["torch"] = {
                "softmax": lambda: torch.softmax(tx, 1),
                "log_softmax": lambda: torch.log_softmax(tx, 1),
                "cross_entropy": torch_ce,
                "cross_entropy_loss": lambda: F.cross_entropy(tx, ty).item(),
            }[kind]
        return fns

    return build


def _np_bce(z: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy on logits (the stable form) and its gradient, float32."""
    e = np.exp(-np.abs(z))
    loss = float(np.mean(np.maximum(z, 0) - z * t + np.log1p(e)))
    sig = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    return loss, (sig - t) / np.float32(z.size)


def _np_mse(p: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    d = p - t
    return float(np.mean(d * d)), d * np.float32(2 / d.size)


def loss_op(kind: str):
    """Builder of an elementwise loss: bce (loss and gradient of the logits), bce_loss (the loss
    alone), mse, mse_loss; targets in [0, 1] for bce, normal for mse."""

    def build(data: dict[str, np.ndarray], use_torch: bool) -> dict[str, Fn | None]:
        x, t = data["x"], data["targets"]
        fns: dict[str, Fn | None] = {
            "bce": {"ours": lambda: ops.bce_with_logits(x, t), "numpy": lambda: _np_bce(x, t)},
            "bce_loss": {
                "ours": lambda: ops.bce_with_logits(x, t, need_grad=False)[0],
                "numpy": lambda: _np_bce(x, t)[0],
            },
            "mse": {"ours": lambda: ops.mse_loss(x, t), "numpy": lambda: _np_mse(x, t)},
            "mse_loss": {
                "ours": lambda: ops.mse_loss(x, t, need_grad=False)[0],
                "numpy": lambda: float(np.mean(np.square(x - t))),
            },
        }[kind]
        if use_torch:
            torch = _torch()
            F = torch.nn.functional
            tx, tt = torch.from_numpy(x), torch.from_numpy(t)
            leaf = torch.from_numpy(x).requires_grad_()
            loss_fn = F.binary_cross_entropy_with_logits if kind.startswith("bce") else F.mse_loss

            def torch_with_grad() -> tuple[float, Any]:
                leaf.grad = None
                loss = loss_fn(leaf, tt)
                loss.backward()
                return loss.item(), leaf.grad

            fns["torch"] = (
                (lambda: loss_fn(tx, tt).item()) if kind.endswith("_loss") else torch_with_grad
            )
        return fns

    return build


# name -> (kind of shapes: "act", "row" or "loss", what the row times, builder)
OPS: dict[str, tuple[str, str, Callable[..., dict[str, Fn | None]]]] = {
    "relu": ("act", "y = max(x, 0)", act_forward("relu", lambda x: np.maximum(x, 0), "relu")),
    "leaky_relu": (
        "act",
        "y = x > 0 ? x : 0.01 x",
        act_forward("leaky_relu", lambda x: np.where(x > 0, x, np.float32(0.01) * x), "leaky_relu"),
    ),
    "elu": (
        "act",
        "y = x > 0 ? x : exp(x) - 1",
        act_forward("elu", lambda x: np.where(x > 0, x, np.expm1(x)), "elu"),
    ),
    "sigmoid": (
        "act",
        "y = 1 / (1 + exp(-x))",
        act_forward("sigmoid", lambda x: 1 / (1 + np.exp(-x)), "sigmoid"),
    ),
    "tanh": ("act", "y = tanh(x)", act_forward("tanh", np.tanh, "tanh")),
    "relu_backward": (
        "act",
        "dx = dy [x > 0]",
        act_backward("relu", lambda x, y, dy: dy * (x > 0), "threshold_backward"),
    ),
    "elu_backward": (
        "act",
        "dx = x > 0 ? dy : dy e^x",
        act_backward("elu", lambda x, y, dy: np.where(x > 0, dy, dy * np.exp(x)), "elu_backward"),
    ),
    "sigmoid_backward": (
        "act",
        "dx = dy y (1 - y)",
        act_backward("sigmoid", lambda x, y, dy: dy * y * (1 - y), "sigmoid_backward"),
    ),
    "tanh_backward": (
        "act",
        "dx = dy (1 - y^2)",
        act_backward("tanh", lambda x, y, dy: dy * (1 - y * y), "tanh_backward"),
    ),
    "softmax": ("row", "row softmax", row_op("softmax")),
    "log_softmax": ("row", "row log-softmax", row_op("log_softmax")),
    "cross_entropy": (
        "row",
        "mean CE loss + dlogits (torch: forward + backward)",
        row_op("cross_entropy"),
    ),
    "cross_entropy_loss": ("row", "mean CE loss alone", row_op("cross_entropy_loss")),
    "bce": ("loss", "mean BCE on logits + dlogits (torch: forward + backward)", loss_op("bce")),
    "bce_loss": ("loss", "mean BCE on logits alone", loss_op("bce_loss")),
    "mse": ("loss", "mean squared error + dpred (torch: forward + backward)", loss_op("mse")),
    "mse_loss": ("loss", "mean squared error alone", loss_op("mse_loss")),
}
SHAPES_OF_KIND: dict[str, list[Shape]] = {"act": ACT_SHAPES, "row": ROW_SHAPES, "loss": LOSS_SHAPES}
ACTIVATION_OF = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "elu": "elu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu_backward": "relu",
    "elu_backward": "elu",
    "sigmoid_backward": "sigmoid",
    "tanh_backward": "tanh",
}


def make_data(op: str, shape: Shape, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The inputs of one row, shared by the contenders (C-contiguous float32, int64 labels)."""
    x = rng.standard_normal(shape, dtype=np.float32)
    data = {"x": x}
    if op in ACTIVATION_OF:
        data["y"] = ops.activation(x, ACTIVATION_OF[op])
        data["dy"] = rng.standard_normal(shape, dtype=np.float32)
    elif OPS[op][0] == "loss":
        bce = op.startswith("bce")
        data["targets"] = (
            rng.uniform(0, 1, shape).astype(np.float32)
            if bce
            else rng.standard_normal(shape, dtype=np.float32)
        )
    else:
        data["labels"] = rng.integers(0, shape[1], shape[0])
    return data


class Mismatch(Exception):
    """A peer's result differs from ours: the row would compare different computations."""


def _arrays(result: object) -> list[np.ndarray]:
    parts = result if isinstance(result, tuple) else (result,)
    out = []
    for p in parts:
        if hasattr(p, "detach"):  # a torch tensor
            p = p.detach().numpy()
        out.append(np.asarray(p))
    return out


def check_agree(op: str, shape: Shape, fns: dict[str, Fn]) -> None:
    ref = _arrays(fns["ours"]())
    for name, fn in fns.items():
        if name == "ours":
            continue
        got = _arrays(fn())
        # Same dtype too: a peer promoted to float64 (NumPy 2 scalars) would do other work.
        ok = len(got) == len(ref) and all(
            g.shape == r.shape and g.dtype == r.dtype and np.allclose(g, r, rtol=RTOL, atol=ATOL)
            for g, r in zip(got, ref)
        )
        if not ok:
            what = ", ".join(f"{g.dtype}{list(g.shape)}" for g in got)
            expected = ", ".join(f"{r.dtype}{list(r.shape)}" for r in ref)
            diff = max(
                (
                    float(np.max(np.abs(g.astype(np.float64) - r)))
                    for g, r in zip(got, ref)
                    if g.shape == r.shape
                ),
                default=float("nan"),
            )
            raise Mismatch(
                f"{op} {shape[0]}x{shape[1]}: {name}'s result differs from ours ({what} against "
                f"{expected}, max abs difference {diff:.3g})"
            )


# ------------------------------------------------------------------------------------ timing
def warm_up(fn: Fn, sample_s: float) -> int:
    """Untimed calls for about one sample (after a first call: page faults, thread start);
    returns how many calls fill a sample."""
    fn()
    n = 0
    t0 = time.perf_counter()
    end = t0 + sample_s
    while True:
        fn()
        n += 1
        t = time.perf_counter()
        if t >= end:
            break
    return max(1, round(n * sample_s / (t - t0)))


def time_rounds(
    fns: dict[str, Fn], repeat: int, sample_s: float, pause_s: float, settle_s: float
) -> dict[str, list[float]]:
    """Seconds per call of each contender, one entry per round; in each round one sample of each,
    in the order of ``fns`` (bench_gemm.py's time_pair for any number of contenders)."""
    counts = {name: warm_up(fn, sample_s) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            if pause_s > 0:
                time.sleep(pause_s)
            settled = time.perf_counter() + settle_s
            while time.perf_counter() < settled:
                fn()
            n = counts[name]
            t = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t) / n)
    return samples


def run_row(
    op: str,
    shape: Shape,
    threads: dict[str, Any],
    use_torch: bool,
    repeat: int,
    sample_s: float,
    pause_s: float,
    settle_s: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    _, what, build = OPS[op]
    data = make_data(op, shape, rng)
    built = build(data, use_torch)
    fns = {name: fn for name, fn in built.items() if fn is not None}
    check_agree(op, shape, fns)
    samples = time_rounds(fns, repeat, sample_s, pause_s, settle_s)
    med = {name: statistics.median(s) for name, s in samples.items()}
    ours = samples["ours"]
    row: dict[str, Any] = {
        "op": op,
        "computes": what,
        "rows": shape[0],
        "cols": shape[1],
        "threads": threads,
        "us": {name: m * 1e6 for name, m in med.items()},
        "best_us": {name: min(s) * 1e6 for name, s in samples.items()},
        "ratio": {name: med[name] / med["ours"] for name in med if name != "ours"},
        "ratio_paired": {
            name: statistics.median(p / o for o, p in zip(ours, s))
            for name, s in samples.items()
            if name != "ours"
        },
        "samples_s": samples,
    }
    if use_torch and "torch" not in fns:
        row["torch_missing"] = "the installed torch lacks this kernel"
    return row


# ------------------------------------------------------------------------------------ report
COLS = (
    f"| {'op':<18} | {'shape':<9} | thr | {'ours us':>8} | {'numpy us':>8} | {'torch us':>8} "
    f"| {'vs numpy':>8} | paired | {'vs torch':>8} | paired |"
)


def format_row(r: dict[str, Any], thr: int) -> str:
    us, ratio, paired = r["us"], r["ratio"], r["ratio_paired"]

    def cell(d: dict[str, float], k: str, fmt: str) -> str:
        return format(d[k], fmt) if k in d else "-"

    shape = f"{r['rows']}x{r['cols']}"
    return (
        f"| {r['op']:<18} | {shape:<9} | {thr:>3} "
        f"| {us['ours']:>8.1f} | {cell(us, 'numpy', '.1f'):>8} | {cell(us, 'torch', '.1f'):>8} "
        f"| {cell(ratio, 'numpy', '.2f'):>8} | {cell(paired, 'numpy', '.2f'):>6} "
        f"| {cell(ratio, 'torch', '.2f'):>8} | {cell(paired, 'torch', '.2f'):>6} |"
    )


# ------------------------------------------------------------------------------------ options
def int_list(text: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``, every value >= 1; ValueError otherwise."""
    try:
        return [_bench.positive_int(t.strip()) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated ints >= 1, got {text!r}") from None


def op_list(text: str) -> list[str]:
    """``"relu,softmax"`` -> ``["relu", "softmax"]``; ValueError for an unknown name or none."""
    return _bench.parse_names(text, list(OPS), "op")


def shape_list(text: str) -> list[Shape]:
    """``"1024x256,128x10"`` -> ``[(1024, 256), (128, 10)]``, both sizes >= 1."""
    shapes = []
    for item in text.split(","):
        r, sep, c = item.strip().partition("x")
        try:
            shape = (_bench.positive_int(r), _bench.positive_int(c))
        except ValueError:
            shape = None
        if not sep or shape is None:
            raise ValueError(f"expected ROWSxCOLS items such as 1024x256, got {item.strip()!r}")
        shapes.append(shape)
    return shapes


def main(argv: list[str] | None = None) -> int:
    ap = _bench.OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--threads", type=_bench.option(int_list), default="1,2", help="comma-separated (1,2)"
    )
    ap.add_argument(
        "--ops",
        type=_bench.option(op_list),
        default=",".join(OPS),
        help=f"comma-separated, from {','.join(OPS)} (default all)",
    )
    ap.add_argument(
        "--shapes",
        type=_bench.option(shape_list),
        help="ROWSxCOLS list for every op (default: 1024x256,128x256 for the activations, "
        "1024x1000,4096x10,128x10 for the row ops, 1024x784,128x10 for bce and mse)",
    )
    ap.add_argument(
        "--repeat",
        type=_bench.option(_bench.positive_int),
        default=15,
        help="timed samples per contender (15)",
    )
    ap.add_argument(
        "--sample-ms",
        type=_bench.option(_bench.positive_float),
        default=20.0,
        help="length of one timed sample, several calls (20)",
    )
    ap.add_argument(
        "--pause-ms",
        type=_bench.option(_bench.nonnegative_float),
        default=0.0,
        help="idle time before each sample (0: no BLAS worker spins here)",
    )
    ap.add_argument(
        "--settle-ms",
        type=_bench.option(_bench.nonnegative_float),
        default=2.0,
        help="untimed calls before each sample (2)",
    )
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    ap.add_argument("--json", metavar="PATH", help="also write header and rows as JSON")
    ap.add_argument("--markdown", metavar="PATH", help="also write the header and table")
    a = ap.parse_args(argv)

    use_torch = not a.no_torch and _bench.torch_available()
    plan = [(op, shape) for op in a.ops for shape in (a.shapes or SHAPES_OF_KIND[OPS[op][0]])]
    info = _bench.header(
        {"requested": a.threads, "numpy": "1 (elementwise ufuncs and reductions, no BLAS)"}
    )
    info["fastmlp_build"] = _core._build_info()
    info["torch"] = _torch().__version__ if use_torch else None
    notes = [
        f"machine: {info['machine']}",
        f"date: {info['date']}",
        f"command: {info['command']}",
        f"fastmlp {info['fastmlp']} (simd {info['fastmlp_build']['simd']}), numpy "
        f"{info['numpy']}, torch {info['torch'] or 'not used'}",
        "threads (thr): fastmlp and torch; NumPy's ufuncs run on one thread at every count",
    ]
    if info["env"]:
        notes.append(f"env: {info['env']}")
    if info["load_average"] is not None:
        notes.append(
            "load average at start (1, 5, 15 min): "
            + ", ".join(f"{x:.2f}" for x in info["load_average"])
        )
    notes.append(
        f"median us per call of {a.repeat} samples of >= {a.sample_ms:g} ms, contenders "
        f"alternating (each after {a.pause_ms:g} ms idle and {a.settle_ms:g} ms of untimed calls); "
        "vs X = X / ours (> 1: fastmlp faster); paired = median of X_i / ours_i; "
        "cross_entropy: loss + gradient on every side (torch: forward + backward)"
    )
    if use_torch:
        notes.append("torch: from_numpy views; '-' where the installed torch lacks the kernel")
    for note in notes:
        print(f"# {note}")
    print()
    table = [COLS, "|" + "|".join("-" * len(c) for c in COLS.split("|")[1:-1]) + "|"]
    print("\n".join(table), flush=True)

    rng = np.random.default_rng(0)
    rows = []
    try:
        # errstate: the sigmoid row's exp(-x) may overflow to inf (x < -88), which is fine there.
        with np.errstate(over="ignore"):
            for t in a.threads:
                # Sets fastmlp, torch and NumPy's BLAS to t threads; puts the old counts back.
                with _bench.thread_settings(t, use_torch) as used:
                    for op, shape in plan:
                        r = run_row(
                            op,
                            shape,
                            {k: v for k, v in used.items() if k != "numpy_blas"},
                            use_torch,
                            a.repeat,
                            a.sample_ms / 1e3,
                            a.pause_ms / 1e3,
                            a.settle_ms / 1e3,
                            rng,
                        )
                        rows.append(r)
                        table.append(format_row(r, t))
                        print(table[-1], flush=True)
    except Mismatch as exc:
        print(f"{ap.prog}: error: {exc}", file=sys.stderr)
        return 1
    if hasattr(os, "getloadavg"):
        info["load_average_end"] = list(os.getloadavg())
        notes.append(
            "load average at end: " + ", ".join(f"{x:.2f}" for x in info["load_average_end"])
        )
        print(f"# {notes[-1]}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": info, "rows": rows}, f, indent=1)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write("\n".join([*(f"- {n}" for n in notes), "", *table]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
