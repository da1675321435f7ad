"""One MLP training step: fastmlp against the anchor-style NumPy step and PyTorch eager.

Cases (issue "Performance: ahead of NumPy and PyTorch on the CPU"): 784-256-128-10 at batch
32/128/1024, 784-1024-1024-10 at 256, 2-16-2 at 32; each with every optimizer of --optimizers.
All contenders run in one process, in rotation (--rounds rounds of --round-ms each, after a
warm-up), and the table gives the median time per step and the speed-ups (peer time / ours).
The step code is in python/fastmlp/_bench.py (shared with ``fastmlp bench``).

In one process PyTorch shares fastmlp's libgomp, so it runs under the passive wait policy that
importing fastmlp sets, not its users' spinning default; and the NumPy step's update temporaries
cost page faults (the table counts them). To see each peer as its users run it, time it alone
(``../shared/anchors/mlp_anchor.py``, or ``--no-numpy --no-torch`` for ours);
benchmarks/RESULTS.md ("Issue targets, 2026-11-24") gives both.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_step.py
    python benchmarks/bench_step.py --optimizers adam,sgd --threads 1 --json step.json
"""

from __future__ import annotations

import json
import sys

from fastmlp import _bench


def main(argv: list[str] | None = None) -> int:
    ap = _bench.OneLineParser(description=__doc__.splitlines()[0])
    # Every value is checked here, so that a bad one is a one-line error naming its option before
    # anything is timed, not a traceback (or an empty table) later.
    ap.add_argument(
        "--optimizers",
        type=_bench.option(_bench.parse_optimizers),
        default="adam",
        help=f"comma-separated, from {','.join(_bench.OPTIMIZERS)} (default adam)",
    )
    ap.add_argument(
        "--threads",
        type=_bench.option(_bench.positive_int),
        help="threads for every contender (default: theirs)",
    )
    ap.add_argument(
        "--rounds",
        type=_bench.option(_bench.positive_int),
        default=21,
        help="timed rounds per contender (21)",
    )
    ap.add_argument(
        "--round-ms",
        type=_bench.option(_bench.positive_float),
        default=100.0,
        help="length of a round (100 ms)",
    )
    ap.add_argument(
        "--warmup-ms",
        type=_bench.option(_bench.nonnegative_float),
        default=300.0,
        help="warm-up per contender",
    )
    ap.add_argument(
        "--gap-ms",
        type=_bench.option(_bench.nonnegative_float),
        default=_bench.GAP_S * 1000,
        help=f"pause before each timed round ({_bench.GAP_S * 1000:g} ms)",
    )
    ap.add_argument(
        "--settle-ms",
        type=_bench.option(_bench.nonnegative_float),
        default=_bench.SETTLE_S * 1000,
        help=f"untimed steps after each pause ({_bench.SETTLE_S * 1000:g} ms)",
    )
    ap.add_argument(
        "--cases",
        type=_bench.option(_bench.parse_cases),
        default=_bench.FULL_CASES,
        help="e.g. 784-256-128-10:128,2-16-2:32 (default: the issue's)",
    )
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    ap.add_argument("--no-numpy", action="store_true", help="skip NumPy")
    ap.add_argument("--json", metavar="PATH", help="also write header and rows as JSON")
    ap.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown")
    a = ap.parse_args(argv)

    use_torch = not a.no_torch and _bench.torch_available()
    # The thread counts found here come back at the end (this may run in someone's process).
    with _bench.thread_settings(a.threads, use_torch) as threads:
        head = _bench.header(threads)
        print("\n".join(_bench.format_table(head, []).splitlines()), flush=True)
        rows = _bench.run_cases(
            a.cases,
            a.optimizers,
            rounds=a.rounds,
            round_s=a.round_ms / 1000,
            warmup_s=a.warmup_ms / 1000,
            use_torch=use_torch,
            use_numpy=not a.no_numpy,
            gap_s=a.gap_ms / 1000,
            settle_s=a.settle_ms / 1000,
            progress=lambda line: print(line, flush=True),
        )
    head["load_average_end"] = _bench.header(threads)["load_average"]
    print(f"load at the end: {head['load_average_end']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": head, "rows": rows}, f, indent=1)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(_bench.format_markdown(head, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
