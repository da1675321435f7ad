"""Fused narrow-MLP kernels (cuda.fused_mlp_forward / fused_mlp_backward) against the unfused GPU
layers and PyTorch (eager and a captured CUDA graph), training and inference, on one GPU.

    python benchmarks/bench_cuda_fused.py [--quick] [--out fused.md] [--json fused.json]

Nets 64-64-64-64-64-1 and 128-128-128-128-16 (ReLU), batch 2^14 .. 2^21 (``--nets``,
``--batches`` take others), FP32 throughout (PyTorch with TF32 off).

One training step, for every contender: forward, the MSE loss gradient
``dlogits = 2 (logits - y) / (n F)``, backward and an Adam update of all weights and biases.
  - fused: fused_mlp_forward (training) + fused_mlp_backward, then per layer dW = h^T dZ (gemm TN)
    and db = column_sum(dZ), then one multi-tensor adam_step.
  - unfused: per layer gemm with the bias/ReLU epilogue (storing z), and backward per layer gemm NT
    + activation_backward; the same weight gradients and Adam.
  - torch eager / graph: Sequential(Linear, ReLU, ...), F.mse_loss, backward,
    Adam(fused=True, capturable=True); the graph replays one captured step.
fastmlp has no loss op that stays on the device (its losses return the value to the host, which
synchronises), so both fastmlp paths form the MSE gradient with two queued calls: a device copy of
y into dlogits, then gemm(dlogits, logits, I, alpha=s, beta=-s) = s (logits - y) with s = 2/(nF).
Both fastmlp paths call the _cuda bindings on buffers allocated once: the Python wrappers allocate
their outputs on every call, and freeing device memory synchronises the GPU.
Inference: the forward alone (fused_mlp_forward without training; gemm with the epilogue per
layer; torch under no_grad, eager and graph).

Timing: wall time around batches of back-to-back steps (>= ~20 ms each) ended by a device
synchronisation, median over --samples batches after a warm-up; throughput = batch / time.
Each row also checks the fused logits against the unfused ones (max |difference|; the kernels are
built to give the same bits). Prints a Markdown table with the GPU name, date and command line.
Exits 1, saying why, when no GPU is usable.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

import fastmlp as fm
from bench_cuda_step import median_step_s
from fastmlp import cuda

RELU = 1  # fastmlp::Activation::Relu
ADAM = {
    "lr": 1e-3,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "decoupled_weight_decay": False,
    "l1": 0.0,
}


def median_s(step: Callable[[], object], sync: Callable[[], None], samples: int) -> float:
    """Median seconds per call over `samples` batches of back-to-back calls (~20 ms each), as
    bench_cuda_step.py times its steps."""
    return median_step_s(step, sync, samples)


class Ours:
    """One net and batch on fastmlp's GPU ops, every buffer allocated once."""

    def __init__(self, sizes: list[int], batch: int, rng: np.random.Generator) -> None:
        self.mod = cuda._module()
        self.sizes, self.n = sizes, batch
        self.layers = len(sizes) - 1
        ws = [
            (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32)
            for a, b in zip(sizes[:-1], sizes[1:])
        ]
        bs = [np.zeros(b, np.float32) for b in sizes[1:]]
        self.host_params = [p for wb in zip(ws, bs) for p in wb]
        self.params = [cuda.to_device(p) for p in self.host_params]
        self.w, self.b = self.params[0::2], self.params[1::2]
        self.grads = [cuda.empty(p.shape) for p in self.params]
        self.m = [cuda.zeros(p.shape) for p in self.params]
        self.v = [cuda.zeros(p.shape) for p in self.params]
        self.x = cuda.to_device(rng.standard_normal((batch, sizes[0])).astype(np.float32))
        self.y = cuda.to_device(rng.standard_normal((batch, sizes[-1])).astype(np.float32))
        hidden = sizes[1:-1]
        self.z = [cuda.empty((batch, d)) for d in hidden]
        self.a = [cuda.empty((batch, d)) for d in hidden]
        self.dz = [cuda.empty((batch, d)) for d in hidden]
        self.logits = cuda.empty((batch, sizes[-1]))
        self.dlogits = cuda.empty((batch, sizes[-1]))
        self.eye = cuda.to_device(np.eye(sizes[-1], dtype=np.float32))
        self.kinds, self.alphas, self.slopes = (
            [RELU] * len(hidden),
            [0.0] * len(hidden),
            [None] * len(hidden),
        )
        self.step_count = 0

    def _bufs(self, arrays: list[cuda.DeviceArray]) -> list[Any]:
        return [a._buf for a in arrays]

    # ------------------------------------------------------------ forward
    def forward_fused(self, training: bool) -> None:
        self.mod.fused_mlp_forward(
            self.logits._buf,
            self.x._buf,
            self._bufs(self.w),
            self._bufs(self.b),
            self.sizes,
            self.kinds,
            self.alphas,
            self.slopes,
            self.n,
            training=training,
            z=self._bufs(self.z) if training else None,
            a=self._bufs(self.a) if training else None,
        )

    def forward_unfused(self, training: bool) -> None:
        h = self.x
        for l in range(self.layers):
            k, d = self.sizes[l], self.sizes[l + 1]
            last = l == self.layers - 1
            out = self.logits if last else self.a[l]
            self.mod.gemm(
                out._buf,
                h._buf,
                self.w[l]._buf,
                self.n,
                d,
                k,
                bias=self.b[l]._buf,
                activation=0 if last else RELU,
                preactivation=None if (last or not training) else self.z[l]._buf,
            )
            h = out

    # ------------------------------------------------------------ the rest of a training step
    def loss_grad(self) -> None:
        f = self.sizes[-1]
        s = 2.0 / (self.n * f)
        self.dlogits._buf.copy_from(self.y._buf)
        self.mod.gemm(
            self.dlogits._buf, self.logits._buf, self.eye._buf, self.n, f, f, alpha=s, beta=-s
        )

    def backward_unfused(self) -> None:
        dz = self.dlogits
        for l in range(self.layers - 1, 0, -1):
            k, d = self.sizes[l], self.sizes[l + 1]
            dh = self.dz[l - 1]
            self.mod.gemm(dh._buf, dz._buf, self.w[l]._buf, self.n, k, d, trans_b=True)
            self.mod.activation_backward(
                dh._buf, self.z[l - 1]._buf, self.a[l - 1]._buf, dh._buf, self.n * k, RELU, 0.0
            )
            dz = dh

    def weight_grads_and_adam(self) -> None:
        hs, dzs = [self.x, *self.a], [*self.dz, self.dlogits]
        for l in range(self.layers):
            k, d = self.sizes[l], self.sizes[l + 1]
            self.mod.gemm(
                self.grads[2 * l]._buf, hs[l]._buf, dzs[l]._buf, k, d, self.n, trans_a=True
            )
            self.mod.column_sum(self.grads[2 * l + 1]._buf, dzs[l]._buf, self.n, d)
        self.step_count += 1
        self.mod.adam_step(
            self._bufs(self.params),
            self._bufs(self.grads),
            [p.size for p in self.params],
            self._bufs(self.m),
            self._bufs(self.v),
            step=self.step_count,
            **ADAM,
        )

    def train_fused(self) -> None:
        self.forward_fused(True)
        self.loss_grad()
        self.mod.fused_mlp_backward(
            self._bufs(self.dz),
            self.dlogits._buf,
            self._bufs(self.z),
            self._bufs(self.w),
            self.sizes,
            self.kinds,
            self.alphas,
            self.slopes,
            self.n,
        )
        self.weight_grads_and_adam()

    def train_unfused(self) -> None:
        self.forward_unfused(True)
        self.loss_grad()
        self.backward_unfused()
        self.weight_grads_and_adam()

    def logits_difference(self) -> float:
        """max |fused - unfused| of the logits for the current parameters."""
        self.forward_fused(False)
        fused = self.logits.numpy()
        self.forward_unfused(False)
        return float(np.abs(fused - self.logits.numpy()).max())


class Torch:
    """The same net, batch and initial parameters in PyTorch (FP32, TF32 off)."""

    def __init__(self, torch: Any, ours: Ours) -> None:
        self.torch = torch
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        layers = []
        for l, (a, b) in enumerate(zip(ours.sizes[:-1], ours.sizes[1:])):
            lin = torch.nn.Linear(a, b)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(ours.host_params[2 * l].T.copy()))
                lin.bias.copy_(torch.from_numpy(ours.host_params[2 * l + 1]))
            layers.append(lin)
            if l < ours.layers - 1:
                layers.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers).cuda()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True, capturable=True)
        self.x = torch.from_dlpack(ours.x).clone()
        self.y = torch.from_dlpack(ours.y).clone()
        self.mse = torch.nn.functional.mse_loss

    def train(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.mse(self.model(self.x), self.y).backward()
        self.opt.step()

    def infer(self) -> None:
        with self.torch.no_grad():
            self.model(self.x)

    def graphs(self) -> tuple[Callable[[], None], Callable[[], None]]:
        """CUDA-graph replays of one training step and of one inference forward."""
        torch = self.torch
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                self.train()
                self.infer()
        torch.cuda.current_stream().wait_stream(s)
        train_graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(train_graph):
            self.mse(self.model(self.x), self.y).backward()
            self.opt.step()
        infer_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(infer_graph), torch.no_grad():
            self.model(self.x)
        return train_graph.replay, infer_graph.replay


def bench(sizes: list[int], batch: int, samples: int, torch: Any) -> list[dict]:
    rng = np.random.default_rng(0)
    ours = Ours(sizes, batch, rng)
    diff = ours.logits_difference()
    net = "-".join(map(str, sizes))
    rows = []
    for mode in ("train", "infer"):
        row: dict = {"network": net, "batch": batch, "mode": mode, "max_abs_diff": diff}
        if mode == "train":
            row["fused_s"] = median_s(ours.train_fused, cuda.synchronize, samples)
            row["unfused_s"] = median_s(ours.train_unfused, cuda.synchronize, samples)
        else:
            row["fused_s"] = median_s(lambda: ours.forward_fused(False), cuda.synchronize, samples)
            row["unfused_s"] = median_s(
                lambda: ours.forward_unfused(False), cuda.synchronize, samples
            )
        rows.append(row)
    if torch is not None:
        tm = Torch(torch, ours)
        sync = torch.cuda.synchronize
        rows[0]["torch_eager_s"] = median_s(tm.train, sync, samples)
        rows[1]["torch_eager_s"] = median_s(tm.infer, sync, samples)
        train_replay, infer_replay = tm.graphs()
        rows[0]["torch_graph_s"] = median_s(train_replay, sync, samples)
        rows[1]["torch_graph_s"] = median_s(infer_replay, sync, samples)
    return rows


def rate(row: dict, key: str) -> str:
    t = row.get(key)
    return f"{row['batch'] / t / 1e6:.1f}" if t else "n/a"


def ratio(row: dict, slow: str) -> str:
    t = row.get(slow)
    return f"{t / row['fused_s']:.2f}x" if t else "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="64-64-64-64-64-1,128-128-128-128-16")
    ap.add_argument("--batches", default="14-21", help="log2 batch sizes: a range a-b or a list")
    ap.add_argument("--samples", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="batches 2^14, 2^17, 2^20; 5 samples")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--out", help="also write the table to this Markdown file")
    ap.add_argument("--json", help="also write the raw numbers to this JSON file")
    a = ap.parse_args()
    if not fm.cuda_available():
        print(f"no usable GPU: {fm._cuda_info()['error']}", file=sys.stderr)
        return 1
    if not hasattr(cuda._module(), "fused_mlp_forward"):
        print("this fastmlp build has no fused_mlp kernels (rebuild it)", file=sys.stderr)
        return 1
    torch = None
    if not a.no_torch:
        try:
            import torch

            if not torch.cuda.is_available():
                torch = None
        except ImportError:
            torch = None
    if a.quick:
        logs, samples = [14, 17, 20], 5
    elif "-" in a.batches:
        lo, hi = (int(v) for v in a.batches.split("-"))
        logs, samples = list(range(lo, hi + 1)), a.samples
    else:
        logs, samples = [int(v) for v in a.batches.split(",")], a.samples
    nets = [[int(s) for s in net.split("-")] for net in a.nets.split(",")]

    info = fm._cuda_info()
    lines = [
        f"- GPU: {', '.join(info.get('devices', []))}; fastmlp {fm.__version__}"
        + (f"; torch {torch.__version__} (TF32 off)" if torch is not None else "; no torch"),
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- throughput in million samples/s (batch / median step time over {samples} samples); "
        "speed-ups are the other's time / fused time; diff = max |fused - unfused| of the logits",
        "",
        "| network | batch | mode | fused | unfused | torch eager | torch graph "
        "| vs unfused | vs eager | vs graph | diff |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows: list[dict] = []
    for sizes in nets:
        for lg in logs:
            measured = bench(sizes, 2**lg, samples, torch)
            gc.collect()  # the last batch's buffers (up to ~20 GB at 2^21) go before the next
            if torch is not None:
                torch.cuda.empty_cache()
            for r in measured:
                rows.append(r)
                lines.append(
                    f"| {r['network']} | 2^{lg} | {r['mode']} | {rate(r, 'fused_s')} | "
                    f"{rate(r, 'unfused_s')} | {rate(r, 'torch_eager_s')} | "
                    f"{rate(r, 'torch_graph_s')} | {ratio(r, 'unfused_s')} | "
                    f"{ratio(r, 'torch_eager_s')} | {ratio(r, 'torch_graph_s')} | "
                    f"{r['max_abs_diff']:.1e} |"
                )
                print(lines[-1], file=sys.stderr, flush=True)
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
