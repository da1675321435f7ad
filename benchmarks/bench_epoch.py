"""One training epoch of 60,000 x 784 (synthetic), 784-256-128-10, Adam (lr 1e-3), batch 128:
fastmlp's ``Trainer.fit`` against a plain PyTorch loop and scikit-learn's ``MLPClassifier``.

Every run is a fresh subprocess (so that peak memory is that contender's alone): it loads the
data set from .npy files written once by the parent, builds the model, times one shuffled epoch,
then measures the accuracy on a held-out test set of 10,000 rows. Reported per contender: the
median wall time of the epoch over --repeats runs, the speed-up (peer time / fastmlp time), test
accuracy, and peak resident memory (VmHWM of /proc/self/status, which counts C++ and BLAS
allocations, unlike tracemalloc, and unlike ``ru_maxrss`` does not inherit the parent's peak)
minus the resident memory after the imports, as a multiple of (data set + model parameters) bytes.
The workers get the user's environment as it was before the parent imported fastmlp (fastmlp
sets OMP_WAIT_POLICY in its own process, see fastmlp/__init__.py, which must not leak into the
peers' environment).

Data: 10 Gaussian classes in 784 dimensions (class means drawn N(0, 0.15^2), unit noise), float32;
hard enough that one epoch does not reach 100% test accuracy.

    python benchmarks/bench_epoch.py                 # 3 runs of each contender
    python benchmarks/bench_epoch.py --repeats 5 --json epoch.json --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

N_TRAIN, N_TEST, D, C = 60_000, 10_000, 784, 10
SIZES = [D, 256, 128, C]
BATCH, LR = 128, 1e-3


def make_data(folder: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((C, D), dtype=np.float32) * np.float32(0.15)
    for name, n in (("train", N_TRAIN), ("test", N_TEST)):
        y = rng.integers(0, C, n)
        X = rng.standard_normal((n, D), dtype=np.float32)
        X += means[y]
        np.save(os.path.join(folder, f"X_{name}.npy"), X)
        np.save(os.path.join(folder, f"y_{name}.npy"), y)


def rss_mib() -> float:
    """Peak resident memory of this process, MiB. VmHWM (Linux) is reset by exec; ru_maxrss is
    not (it keeps the parent's peak at fork time), so it is only the fallback."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ------------------------------------------------------------------------------------ workers
def run_fastmlp(X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
    import fastmlp as fm

    model = fm.MLP(SIZES, seed=0)
    trainer = fm.Trainer(model, fm.optim.Adam(model, lr=LR), batch_size=BATCH, epochs=1, verbose=0)
    t = time.perf_counter()
    trainer.fit(X, y)
    seconds = time.perf_counter() - t
    acc = float(np.mean(model.predict(Xt) == yt))
    return {"seconds": seconds, "test_accuracy": acc, "params": model.num_parameters}


def run_torch(X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    layers: list[Any] = []
    for k, (i, o) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(torch.nn.Linear(i, o))
        if k < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    lossf = torch.nn.CrossEntropyLoss()
    Xs, ys = torch.from_numpy(X), torch.from_numpy(y)  # shares the NumPy memory
    t = time.perf_counter()
    perm = torch.randperm(len(ys))
    for i in range(0, len(ys), BATCH):
        idx = perm[i : i + BATCH]
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(Xs[idx]), ys[idx])
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t
    with torch.no_grad():
        acc = float((model(torch.from_numpy(Xt)).argmax(1).numpy() == yt).mean())
    return {
        "seconds": seconds,
        "test_accuracy": acc,
        "params": sum(p.numel() for p in model.parameters()),
    }


def run_sklearn(X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=tuple(SIZES[1:-1]),
        solver="adam",
        learning_rate_init=LR,
        batch_size=BATCH,
        max_iter=1,
        alpha=0.0,  # no L2 penalty, as the other two
        shuffle=True,
        random_state=0,
    )
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    seconds = time.perf_counter() - t
    acc = float(np.mean(clf.predict(Xt) == yt))
    params = sum(w.size for w in clf.coefs_) + sum(b.size for b in clf.intercepts_)
    return {"seconds": seconds, "test_accuracy": acc, "params": params}


WORKERS = {"fastmlp": run_fastmlp, "torch": run_torch, "sklearn": run_sklearn}
IMPORTS = {"fastmlp": "fastmlp", "torch": "torch", "sklearn": "sklearn.neural_network"}
LIBRARIES = {"fastmlp": "fastmlp", "torch": "torch", "sklearn": "scikit-learn"}  # pip names


def worker(name: str, folder: str, threads: int | None) -> None:
    """Run contender ``name`` once and print its result as JSON on the last line of stdout; or
    ``{"skipped": ...}`` when its library is not installed (a peer is optional, not a failure)."""
    import importlib

    module = IMPORTS[name]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Only the library itself missing is a skip; a module missing inside an installed one (a
        # broken install) is a failure, with its traceback.
        if (exc.name or "").split(".")[0] != module.split(".")[0]:
            raise
        print(json.dumps({"skipped": f"{LIBRARIES[name]} not installed"}))
        return
    if threads is not None and name == "fastmlp":
        import fastmlp

        fastmlp.set_num_threads(threads)
    if threads is not None and name == "torch":
        import torch

        torch.set_num_threads(threads)
    base = current_rss_mib()
    X = np.load(os.path.join(folder, "X_train.npy"))
    y = np.load(os.path.join(folder, "y_train.npy"))
    Xt = np.load(os.path.join(folder, "X_test.npy"))
    yt = np.load(os.path.join(folder, "y_test.npy"))
    result = WORKERS[name](X, y, Xt, yt)
    result.update(
        base_rss_mib=base,
        peak_rss_mib=rss_mib(),
        data_mib=(X.nbytes + y.nbytes + Xt.nbytes + yt.nbytes) / 2**20,
    )
    result["model_mib"] = result["params"] * 4 / 2**20
    print(json.dumps(result))


class OneLineParser(argparse.ArgumentParser):
    """Errors as one line, exit status 2: fastmlp._bench.OneLineParser, which this file cannot
    import before parsing (a worker must not import fastmlp, which sets OMP_WAIT_POLICY in its
    process, before timing a peer)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return value


def contender_list(text: str) -> list[str]:
    """``"fastmlp,torch"`` -> ``["fastmlp", "torch"]``; an unknown name or an empty list is an
    argparse error here, not a KeyError in the first worker and an empty table."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    known = ", ".join(WORKERS)
    if not names:
        raise argparse.ArgumentTypeError(f"no contender given; known: {known}")
    for n in names:
        if n not in WORKERS:
            raise argparse.ArgumentTypeError(f"unknown {n!r}; known: {known}")
    return names


def run_contenders(
    names: list[str], repeats: int, run_one: Callable[[str], subprocess.CompletedProcess]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str], list[str]]:
    """Run every contender ``repeats`` times, interleaved (so that all see the same machine load),
    through ``run_one(name)`` (a worker subprocess). Returns the results of each, the contenders
    skipped (library not installed: a one-line note, not retried) with the reason, and those
    that failed (their stderr, the traceback, is printed)."""
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    skipped: dict[str, str] = {}
    failed: list[str] = []
    for _ in range(repeats):
        for name in names:
            if name in skipped:
                continue
            out = run_one(name)
            try:
                r = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
            except (IndexError, ValueError):  # exit status 0 but no result line
                r = None
            if r is None:
                print(
                    f"{name}: failed (exit status {out.returncode})\n{out.stderr}", file=sys.stderr
                )
                if name not in failed:
                    failed.append(name)
                continue
            if "skipped" in r:
                skipped[name] = r["skipped"]
                print(f"  {name:8s} skipped: {r['skipped']}", flush=True)
                continue
            results[name].append(r)
            print(f"  {name:8s} {r['seconds']:7.2f} s  acc {r['test_accuracy']:.4f}", flush=True)
    return results, skipped, failed


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=positive_int, default=3, help="runs per contender (median)")
    ap.add_argument("--threads", type=positive_int, help="threads for fastmlp, torch and BLAS")
    ap.add_argument(
        "--contenders",
        type=contender_list,
        default="fastmlp,torch,sklearn",
        help=f"comma-separated, from {','.join(WORKERS)} (default: all)",
    )
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--make-data", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker, a.data, a.threads)
        return 0
    if a.make_data:
        make_data(a.make_data)
        return 0

    env = dict(os.environ)  # the user's environment, before fastmlp is imported here
    from fastmlp import _bench

    if a.threads is not None:
        # BLAS pools (OpenBLAS for sklearn, MKL/OpenMP for torch) read these at start-up.
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = str(a.threads)
    head = _bench.header({"requested": a.threads or "default (all cores)"})
    head["env"] = {
        k: v
        for k, v in env.items()
        if k.startswith(("OMP_", "GOMP_", "OPENBLAS_", "MKL_", "MALLOC_"))
    }
    names: list[str] = a.contenders
    with tempfile.TemporaryDirectory() as folder:
        # In a subprocess: the parent stays small (a forked worker starts from its footprint).
        subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--make-data", folder], check=True
        )

        def run_one(name: str) -> subprocess.CompletedProcess:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--data", folder]
            if a.threads is not None:
                cmd += ["--threads", str(a.threads)]
            return subprocess.run(cmd, capture_output=True, text=True, env=env)

        results, skipped, failed = run_contenders(names, a.repeats, run_one)
    head["skipped"] = skipped
    head["failed"] = failed
    head["load_average_end"] = _bench.header({})["load_average"]
    rows = []
    ours = (
        statistics.median(r["seconds"] for r in results.get("fastmlp", []))
        if results.get("fastmlp")
        else None
    )
    for name in names:
        rs = results[name]
        if not rs:
            continue
        sec = statistics.median(r["seconds"] for r in rs)
        peak = statistics.median(r["peak_rss_mib"] - r["base_rss_mib"] for r in rs)
        budget = rs[0]["data_mib"] + rs[0]["model_mib"]
        rows.append(
            {
                "contender": name,
                "seconds": sec,
                "speedup_of_fastmlp": (sec / ours) if ours else None,
                "test_accuracy": statistics.median(r["test_accuracy"] for r in rs),
                "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in rs),
                "base_rss_mib": statistics.median(r["base_rss_mib"] for r in rs),
                "peak_over_base_mib": peak,
                "peak_over_base_ratio": peak / budget,
                "data_plus_model_mib": budget,
                "runs": len(rs),
            }
        )
    lines = [
        f"machine: {head['machine']}",
        f"date:    {head['date']}",
        f"command: {head['command']}",
        f"threads: {head['threads']}; env: {head['env'] or '-'}",
        f"load:    {head['load_average']} -> {head['load_average_end']}",
        f"one epoch, 60000x784 synthetic, {'-'.join(map(str, SIZES))}, Adam lr {LR}, "
        f"batch {BATCH}; median of {a.repeats} runs, each in a fresh process",
        f"{'contender':<9} {'epoch s':>8} {'fastmlp x':>10} {'test acc':>9} {'peak RSS':>9} "
        f"{'after imports':>13} {'peak-imports':>12} {'/(data+model)':>13}",
    ]
    for r in rows:
        sp = r["speedup_of_fastmlp"]
        lines.append(
            f"{r['contender']:<9} {r['seconds']:>8.2f} {(f'{sp:.2f}x' if sp else '-'):>10} "
            f"{r['test_accuracy']:>9.4f} {r['peak_rss_mib']:>7.0f}Mi {r['base_rss_mib']:>11.0f}Mi "
            f"{r['peak_over_base_mib']:>10.0f}Mi {r['peak_over_base_ratio']:>12.2f}x"
        )
    lines.append(f"data set + model = {rows[0]['data_plus_model_mib']:.0f} MiB" if rows else "")
    notes = [f"{n}: skipped: {why}" for n, why in skipped.items()]
    notes += [f"{n}: failed (traceback above)" for n in failed]
    lines += notes
    table = "\n".join(lines)
    print(table)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": head, "rows": rows, "runs": results}, f, indent=1)
    if a.markdown:
        md = [
            f"- machine: {head['machine']}",
            f"- date: {head['date']}",
            f"- command: `{head['command']}`",
            f"- threads: {head['threads']}; env: {head['env'] or '-'}",
            f"- load average at start: {head['load_average']}, at end: {head['load_average_end']}",
            "",
            "| contender | epoch (s) | fastmlp speed-up | test accuracy | peak RSS (MiB) "
            "| RSS after imports (MiB) | peak - imports (MiB) | / (data + model) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            sp = r["speedup_of_fastmlp"]
            md.append(
                f"| {r['contender']} | {r['seconds']:.2f} | {f'{sp:.2f}x' if sp else '-'} "
                f"| {r['test_accuracy']:.4f} | {r['peak_rss_mib']:.0f} | {r['base_rss_mib']:.0f} "
                f"| {r['peak_over_base_mib']:.0f} | {r['peak_over_base_ratio']:.2f}x |"
            )
        if notes:
            md += ["", *(f"- {n}" for n in notes)]
        with open(a.markdown, "w") as f:
            f.write("\n".join(md) + "\n")
    # A peer not installed is a note; an installed one that failed makes the run a failure.
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
