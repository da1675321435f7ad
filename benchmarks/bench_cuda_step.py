"""One training step and one epoch on the GPU: fastmlp against PyTorch eager and PyTorch replaying
a captured CUDA graph (fused Adam), in one process on one GPU.

    python benchmarks/bench_cuda_step.py [--quick] [--out step.md] [--json step.json]

Step: 784-256-128-10, ReLU, softmax cross-entropy, Adam (lr 1e-3), at batch 128 and 1024 (the
``--cases`` option takes others). fastmlp runs ``MLP.train_step`` on a batch already on the GPU
(``_train_step_device``, what ``Trainer.fit`` does for a CUDA model) and, for reference, on a NumPy
batch (``train_step``, which copies it in). PyTorch runs the anchor's step
(/work/shared/anchors/mlp_anchor.py): ``zero_grad``, forward, ``CrossEntropyLoss``, ``backward``,
``Adam(fused=True, capturable=True).step()``, eagerly and as one CUDA-graph replay. Every timing
is wall time around a batch of back-to-back steps ended by a device synchronisation (a step whose
loss comes back to the host synchronises anyway), the median over samples after a warm-up.

Epoch: ``Trainer.fit`` for one epoch of a 60,000 x 784 synthetic data set (10 Gaussian classes) at
batch 128, against the same epoch in PyTorch (data on the GPU, ``randperm``, index, step), wall
time, median of --epoch-repeats runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import fastmlp as fm


def median_step_s(step: Callable[[], object], sync: Callable[[], None], samples: int) -> float:
    """Median seconds per step over `samples` batches of back-to-back steps (~20 ms each)."""
    for _ in range(10):
        step()
    sync()
    t = time.perf_counter()
    step()
    sync()
    per = max(1, int(0.02 / max(time.perf_counter() - t, 1e-6)))
    out = []
    for _ in range(samples):
        t = time.perf_counter()
        for _ in range(per):
            step()
        sync()
        out.append((time.perf_counter() - t) / per)
    return statistics.median(out)


def torch_model(torch: Any, sizes: list[int]) -> tuple[Any, Any, Any]:
    layers = []
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(i, o))
        if k < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True, capturable=True)
    return model, opt, torch.nn.CrossEntropyLoss()


def bench_step(sizes: list[int], batch: int, samples: int, torch: Any) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch).astype(np.int64)
    row: dict = {"network": "-".join(map(str, sizes)), "batch": batch}

    model = fm.MLP(sizes, seed=0, device="cuda")
    opt = fm.optim.Adam(model, lr=1e-3)
    xd, yd = fm.to_device(x), fm.to_device(y)
    row["ours_device_us"] = 1e6 * median_step_s(
        lambda: model._train_step_device(xd, yd, batch, "cross_entropy", opt, 0.0),
        fm.cuda.synchronize,
        samples,
    )
    row["ours_numpy_us"] = 1e6 * median_step_s(
        lambda: model.train_step(x, y, "cross_entropy", opt), fm.cuda.synchronize, samples
    )
    if torch is not None:
        sync = torch.cuda.synchronize
        tm, topt, lossf = torch_model(torch, sizes)
        tx, ty = torch.tensor(x, device="cuda"), torch.tensor(y, device="cuda")

        def eager() -> None:
            topt.zero_grad(set_to_none=True)
            lossf(tm(tx), ty).backward()
            topt.step()

        row["torch_eager_us"] = 1e6 * median_step_s(eager, sync, samples)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                eager()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        topt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            lossf(tm(tx), ty).backward()
            topt.step()
        row["torch_graph_us"] = 1e6 * median_step_s(graph.replay, sync, samples)
        row["vs_eager"] = row["torch_eager_us"] / row["ours_device_us"]
        row["vs_graph"] = row["torch_graph_us"] / row["ours_device_us"]
    return row


def bench_epoch(repeats: int, torch: Any) -> dict:
    rng = np.random.default_rng(1)
    n, d, c = 60_000, 784, 10
    centers = rng.standard_normal((c, d)).astype(np.float32)
    y = rng.integers(0, c, n).astype(np.int64)
    X = (centers[y] + 2.0 * rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
    out: dict = {"rows": n, "features": d, "batch": 128}
    times = []
    for r in range(repeats):
        model = fm.MLP([d, 256, 128, c], seed=r, device="cuda")
        trainer = fm.Trainer(
            model, fm.optim.Adam(model, lr=1e-3), batch_size=128, epochs=1, seed=r, verbose=0
        )
        fm.cuda.synchronize()
        t = time.perf_counter()
        trainer.fit(X, y)
        fm.cuda.synchronize()
        times.append(time.perf_counter() - t)
    out["ours_s"] = statistics.median(times)
    if torch is not None:
        Xt, yt = torch.tensor(X, device="cuda"), torch.tensor(y, device="cuda")
        times = []
        for r in range(repeats):
            torch.manual_seed(r)
            tm, topt, lossf = torch_model(torch, [d, 256, 128, c])
            torch.cuda.synchronize()
            t = time.perf_counter()
            perm = torch.randperm(n, device="cuda")
            for lo in range(0, n, 128):
                idx = perm[lo : lo + 128]
                topt.zero_grad(set_to_none=True)
                lossf(tm(Xt[idx]), yt[idx]).backward()
                topt.step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        out["torch_s"] = statistics.median(times)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="784-256-128-10:128,784-256-128-10:1024")
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--epoch-repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer samples, one epoch run")
    ap.add_argument("--out", help="also write the tables to this Markdown file")
    ap.add_argument("--json", help="also write the raw numbers to this JSON file")
    a = ap.parse_args()
    if not fm.cuda_available():
        print(f"no usable GPU: {fm._cuda_info()['error']}", file=sys.stderr)
        return 1
    try:
        import torch

        if not torch.cuda.is_available():
            torch = None
    except ImportError:
        torch = None
    samples = 5 if a.quick else a.samples
    repeats = 1 if a.quick else a.epoch_repeats
    info = fm._cuda_info()
    lines = [
        f"- GPU: {', '.join(info.get('devices', []))}; fastmlp {fm.__version__}"
        + (f"; torch {torch.__version__}" if torch is not None else "; no torch"),
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- command: `python {' '.join(sys.argv)}`",
        "",
        "| network | batch | ours, device batch (us) | ours, NumPy batch (us) | torch eager (us) "
        "| torch graph (us) | vs eager | vs graph |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for case in a.cases.split(","):
        net, batch = case.split(":")
        r = bench_step([int(s) for s in net.split("-")], int(batch), samples, torch)
        rows.append(r)
        lines.append(
            f"| {r['network']} | {r['batch']} | {r['ours_device_us']:.1f} | "
            f"{r['ours_numpy_us']:.1f} | {r.get('torch_eager_us', float('nan')):.1f} | "
            f"{r.get('torch_graph_us', float('nan')):.1f} | {r.get('vs_eager', float('nan')):.2f}x "
            f"| {r.get('vs_graph', float('nan')):.2f}x |"
        )
        print(lines[-1], flush=True)
    epoch = bench_epoch(repeats, torch)
    lines += [
        "",
        "| epoch of 60000 x 784, 784-256-128-10, batch 128 | ours (s) | torch loop (s) |",
        "|---|---:|---:|",
        f"| Trainer.fit vs PyTorch loop | {epoch['ours_s']:.4f} | "
        f"{epoch.get('torch_s', float('nan')):.4f} |",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"steps": rows, "epoch": epoch}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
