"""The benchmark tooling: ``fastmlp._bench``, ``fastmlp bench`` and ``benchmarks/bench_*.py``.

Nothing here times anything: the scripts run with rounds of a millisecond or two (or with their
workers faked), and the tests check what the tooling does around the timing (thread settings put
back, bad options refused in one line, missing peers noted, tables written), never a speed.
"""

from __future__ import annotations

import importlib.util
import json
import runpy
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import _bench, cli

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
# Options that make bench_step.py take a few milliseconds: one tiny case, ours alone, no pauses.
TINY_STEP = [
    "--cases", "2-16-2:32", "--rounds", "1", "--round-ms", "1", "--warmup-ms", "1",
    "--gap-ms", "0", "--settle-ms", "0", "--no-torch", "--no-numpy",
]  # fmt: skip
TINY_GEMM = [
    "--threads", "1", "--sizes", "32", "--no-mlp", "--repeat", "1", "--sample-ms", "1",
    "--pause-ms", "0", "--settle-ms", "0",
]  # fmt: skip


def blas_threads() -> list[int]:
    """NumPy's BLAS thread counts (threadpoolctl), or [] without threadpoolctl."""
    try:
        import threadpoolctl
    except ImportError:
        return []
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture
def fm_threads():
    """fastmlp, and NumPy's BLAS where threadpoolctl can set it, at 3 threads for the test (a
    count no benchmark below asks for, and no library's default, so that a restore that did
    nothing would show), put back after."""
    old = fm.get_num_threads()
    fm.set_num_threads(3)
    try:
        import threadpoolctl
    except ImportError:
        limiter = None
    else:
        limiter = threadpoolctl.threadpool_limits(3, user_api="blas")
        assert all(n == 3 for n in blas_threads())
    yield 3
    fm.set_num_threads(old)
    if limiter is not None:
        limiter.restore_original_limits()


def run_script(monkeypatch: pytest.MonkeyPatch, name: str, *args: str) -> int:
    """Run ``benchmarks/<name>`` as ``python <name> args`` would, in this process; its exit
    status."""
    monkeypatch.setattr(sys, "argv", [name, *args])
    try:
        runpy.run_path(str(BENCH / name), run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def load_script(name: str) -> ModuleType:
    """``benchmarks/<name>`` as a module (its ``main`` not run), so that a test can patch it."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), BENCH / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]


# ------------------------------------------------------------------------------ thread settings
def test_thread_settings_applies_then_restores(fm_threads):
    blas = blas_threads()
    with _bench.thread_settings(1, use_torch=False) as used:
        assert fm.get_num_threads() == 1 and used["fastmlp"] == 1
        assert all(n == 1 for n in blas_threads())
    assert fm.get_num_threads() == fm_threads
    assert blas_threads() == blas


def test_thread_settings_restores_after_an_exception(fm_threads):
    blas = blas_threads()
    with pytest.raises(KeyError), _bench.thread_settings(1, use_torch=False):
        raise KeyError("a benchmark that failed")
    assert fm.get_num_threads() == fm_threads
    assert blas_threads() == blas


def test_thread_settings_none_changes_nothing(fm_threads):
    with _bench.thread_settings(None, use_torch=False) as used:
        assert used["fastmlp"] == fm_threads
    assert fm.get_num_threads() == fm_threads


def test_thread_settings_restores_torch(fm_threads):
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with _bench.thread_settings(1, use_torch=True) as used:
            assert torch.get_num_threads() == 1 and used["torch"] == 1
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(old)


def test_thread_settings_without_threadpoolctl_says_blas_not_limited(monkeypatch, fm_threads):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import raises ImportError
    with _bench.thread_settings(1, use_torch=False) as used:
        assert "not limited" in used["numpy_blas"]
    assert fm.get_num_threads() == fm_threads


def test_cli_bench_restores_threads(monkeypatch, capsys, fm_threads):
    """``fastmlp.cli.main(["bench", "--threads", "1"])`` from Python: 1 thread during the run,
    the caller's counts after it. run_cases is faked: the thread counts are the point here."""
    blas = blas_threads()
    seen = []

    def fake_run_cases(*args, **kwargs):
        seen.append((fm.get_num_threads(), blas_threads()))
        return []

    def fake_gemm_case(*args, **kwargs):  # the products run at the same counts
        seen.append((fm.get_num_threads(), blas_threads()))
        return {"trans": "NN", "ours_gflops": 1.0, "numpy_gflops": 1.0, "ratio": 1.0}

    monkeypatch.setattr(_bench, "run_cases", fake_run_cases)
    monkeypatch.setattr(_bench, "gemm_case", fake_gemm_case)
    assert cli.main(["bench", "--threads", "1", "--no-torch"]) == 0
    assert seen == [(1, [1] * len(blas))] * (1 + len(_bench.QUICK_GEMM_CASES))
    assert fm.get_num_threads() == fm_threads
    assert blas_threads() == blas


def test_bench_step_restores_threads_and_writes_dashes(monkeypatch, capsys, tmp_path, fm_threads):
    """bench_step.py run in this process (runpy) puts the thread counts back; with NumPy and
    PyTorch left out, its Markdown shows ``-`` in their cells, as the text table does."""
    blas = blas_threads()
    md = tmp_path / "step.md"
    assert (
        run_script(
            monkeypatch, "bench_step.py", *TINY_STEP, "--threads", "1", "--markdown", str(md)
        )
        == 0
    )
    assert fm.get_num_threads() == fm_threads
    assert blas_threads() == blas
    text = md.read_text()
    assert "nan" not in text
    row = next(line for line in text.splitlines() if line.startswith("| 2-16-2 "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["2-16-2", "32", "adam"] and float(cells[3]) > 0
    assert cells[4:8] == ["-", "-", "-", "-"]


def test_format_markdown_dashes_for_missing_contenders():
    head = {
        "machine": "m", "date": "d", "command": "c", "threads": {}, "env": {},
        "load_average": None,
    }  # fmt: skip
    row = {
        "sizes": [2, 16, 2], "batch": 32, "optimizer": "sgd", "us": {"ours": 5.0, "torch": 10.0},
        "speedup": {"torch": 2.0}, "faults_per_step": {"ours": 0.0, "torch": 0.0},
    }  # fmt: skip
    line = _bench.format_markdown(head, [row]).splitlines()[-1]
    assert "nan" not in line
    assert [c.strip() for c in line.strip("|").split("|")][3:8] == [
        "5.0",
        "-",
        "10.0",
        "-",
        "2.00x",
    ]


# ------------------------------------------------------------------------------ option checks
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--rounds", "0"], "--rounds"),
        (["--cases", "784-256"], "--cases"),
        (["--cases", "2-16-2:0"], "--cases"),
        (["--cases", "2-x-2:32"], "--cases"),
        (["--threads", "0"], "--threads"),
        (["--optimizers", ","], "--optimizers"),
        (["--optimizers", "adam,lbfgs"], "--optimizers"),
        (["--round-ms", "0"], "--round-ms"),
        (["--gap-ms", "-1"], "--gap-ms"),
    ],
)
def test_bench_step_bad_option_is_a_one_line_error(monkeypatch, capsys, args, option):
    # The tiny options first: a check that let the bad value through would then run for ms only.
    assert run_script(monkeypatch, "bench_step.py", *TINY_STEP, *args) == 2
    assert_one_line_error(capsys.readouterr().err, f"argument {option}")


def test_parse_cases_and_optimizers():
    assert _bench.parse_cases("784-256-10:128, 2-16-2:32") == [
        ([784, 256, 10], 128),
        ([2, 16, 2], 32),
    ]
    assert _bench.parse_optimizers(" adam , sgd ,") == ["adam", "sgd"]
    for bad in ("784", "784-256", "784-0-10:8", "2-16-2:-1", "2-16-2:x", ""):
        with pytest.raises(ValueError, match="NETWORK:BATCH"):
            _bench.parse_cases(bad)
    with pytest.raises(ValueError, match="no optimizer"):
        _bench.parse_optimizers(" , ")


def test_cli_bench_empty_optimizer_list_is_an_error(capsys):
    rc = cli.main(["bench", "--no-torch", "--optimizers", ","])
    err = capsys.readouterr().err
    assert rc == 2
    assert_one_line_error(err, "--optimizers: no optimizer given")


# ------------------------------------------------------------------------------ bench_gemm.py
def test_bench_gemm_without_threadpoolctl_says_numpy_threads_not_limited(
    monkeypatch, capsys, tmp_path, fm_threads
):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    md = tmp_path / "gemm.md"
    assert run_script(monkeypatch, "bench_gemm.py", *TINY_GEMM, "--markdown", str(md)) == 0
    out = capsys.readouterr().out
    assert "NumPy's BLAS threads could not be limited" in out
    assert fm.get_num_threads() == fm_threads
    text = md.read_text()
    assert "could not be limited" in text and "| square 32 " in text


def test_bench_gemm_restores_threads_and_writes_markdown(monkeypatch, capsys, tmp_path, fm_threads):
    blas = blas_threads()
    md, js = tmp_path / "gemm.md", tmp_path / "gemm.json"
    args = [*TINY_GEMM, "--markdown", str(md), "--json", str(js)]
    assert run_script(monkeypatch, "bench_gemm.py", *args) == 0
    assert fm.get_num_threads() == fm_threads
    assert blas_threads() == blas
    rows = [line for line in md.read_text().splitlines() if line.startswith("| square 32 ")]
    assert len(rows) == 1
    assert json.loads(js.read_text())["rows"][0]["threads"] == 1


def test_bench_gemm_bad_threads_is_a_one_line_error(monkeypatch, capsys):
    assert run_script(monkeypatch, "bench_gemm.py", *TINY_GEMM, "--threads", "1,0") == 2
    assert_one_line_error(capsys.readouterr().err, "argument --threads")


# ------------------------------------------------------------------------------ bench_epoch.py
@pytest.mark.parametrize("contenders", ["foo", "fastmlp,foo", ","])
def test_bench_epoch_unknown_contender_is_a_one_line_error(monkeypatch, capsys, contenders):
    assert run_script(monkeypatch, "bench_epoch.py", "--contenders", contenders) == 2
    assert_one_line_error(capsys.readouterr().err, "argument --contenders")


def test_bench_epoch_worker_notes_a_missing_library(monkeypatch, capsys, tmp_path):
    """A worker whose library does not import says "skipped" (one JSON line), before it loads
    any data (there is none in tmp_path)."""
    epoch = load_script("bench_epoch.py")
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.neural_network", None)
    epoch.worker("sklearn", str(tmp_path), None)
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == {"skipped": "scikit-learn not installed"}


def _fake_subprocess(worker_outcomes: dict[str, tuple[int, str, str]], calls: list[str]):
    """A stand-in for bench_epoch's ``subprocess``: --make-data succeeds, each --worker NAME
    returns ``worker_outcomes[NAME]`` (exit status, stdout, stderr)."""

    class Fake:
        CompletedProcess = subprocess.CompletedProcess

        @staticmethod
        def run(cmd, **kwargs):
            if "--make-data" in cmd:
                return subprocess.CompletedProcess(cmd, 0, "", "")
            name = cmd[cmd.index("--worker") + 1]
            calls.append(name)
            rc, out, err = worker_outcomes[name]
            return subprocess.CompletedProcess(cmd, rc, out, err)

    return Fake


OK_RESULT = json.dumps(
    {
        "seconds": 1.0, "test_accuracy": 0.9, "params": 100, "base_rss_mib": 100.0,
        "peak_rss_mib": 300.0, "data_mib": 200.0, "model_mib": 1.0,
    }
)  # fmt: skip


def test_bench_epoch_skips_missing_peer_and_fails_on_a_crash(monkeypatch, capsys):
    epoch = load_script("bench_epoch.py")
    calls: list[str] = []
    outcomes = {
        "fastmlp": (0, OK_RESULT + "\n", ""),
        "sklearn": (0, json.dumps({"skipped": "scikit-learn not installed"}) + "\n", ""),
        "torch": (1, "", "Traceback (most recent call last):\nRuntimeError: boom\n"),
    }
    monkeypatch.setattr(epoch, "subprocess", _fake_subprocess(outcomes, calls))
    monkeypatch.setattr(sys, "argv", ["bench_epoch.py", "--repeats", "2"])
    assert epoch.main() == 1  # torch, installed, crashed: the run failed
    out, err = capsys.readouterr()
    assert calls.count("sklearn") == 1 and calls.count("fastmlp") == 2  # a skip is not retried
    assert out.count("sklearn  skipped: scikit-learn not installed") == 1
    assert "sklearn: failed" not in err and "Traceback" not in out
    assert "torch: failed" in err and "RuntimeError: boom" in err
    table_rows = [line.split() for line in out.splitlines() if line.startswith("fastmlp ")]
    assert table_rows and table_rows[0][1] == "1.00"  # the table still has the others


def test_bench_epoch_missing_peer_alone_exits_zero(monkeypatch, capsys):
    epoch = load_script("bench_epoch.py")
    calls: list[str] = []
    outcomes = {
        "fastmlp": (0, OK_RESULT + "\n", ""),
        "torch": (0, json.dumps({"skipped": "torch not installed"}) + "\n", ""),
    }
    monkeypatch.setattr(epoch, "subprocess", _fake_subprocess(outcomes, calls))
    monkeypatch.setattr(
        sys, "argv", ["bench_epoch.py", "--repeats", "1", "--contenders", "fastmlp,torch"]
    )
    assert epoch.main() == 0
    out, err = capsys.readouterr()
    assert "torch: skipped: torch not installed" in out
    assert err == ""


# ------------------------------------------------------------------------------ bench_ops.py
# One tiny shape, two samples of 1 ms, no untimed calls: a few milliseconds per op.
TINY_OPS = [
    "--threads", "1", "--shapes", "8x16", "--repeat", "2", "--sample-ms", "1",
    "--settle-ms", "0",
]  # fmt: skip


def test_bench_ops_restores_threads_and_writes_rows(monkeypatch, capsys, tmp_path, fm_threads):
    blas = blas_threads()
    md, js = tmp_path / "ops.md", tmp_path / "ops.json"
    args = [*TINY_OPS, "--ops", "relu", "--no-torch", "--markdown", str(md), "--json", str(js)]
    assert run_script(monkeypatch, "bench_ops.py", *args) == 0
    assert fm.get_num_threads() == fm_threads
    assert blas_threads() == blas
    rows = json.loads(js.read_text())["rows"]
    assert [(r["op"], r["rows"], r["cols"]) for r in rows] == [("relu", 8, 16)]
    row = rows[0]
    assert row["threads"]["fastmlp"] == 1 and "torch" not in row["threads"]
    assert set(row["us"]) == {"ours", "numpy"} and row["us"]["ours"] > 0
    assert set(row["ratio"]) == set(row["ratio_paired"]) == {"numpy"}
    assert len(row["samples_s"]["ours"]) == len(row["samples_s"]["numpy"]) == 2
    line = next(s for s in md.read_text().splitlines() if s.startswith("| relu "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:3] == ["relu", "8x16", "1"]
    assert cells[5] == "-" and cells[8:] == ["-", "-"]  # PyTorch left out: dashes, not nan
    assert "load average at end" in md.read_text()


def test_bench_ops_every_op_with_torch_agrees(monkeypatch, capsys, tmp_path, fm_threads):
    """Every op with all three contenders at a tiny shape: each peer's expression computes what
    ours does (the script checks that before timing a row, and exits 1 otherwise)."""
    torch = pytest.importorskip("torch")
    ops_script = load_script("bench_ops.py")
    old = torch.get_num_threads()
    js = tmp_path / "ops.json"
    assert run_script(monkeypatch, "bench_ops.py", *TINY_OPS, "--json", str(js)) == 0
    assert torch.get_num_threads() == old and fm.get_num_threads() == fm_threads
    rows = json.loads(js.read_text())["rows"]
    assert [r["op"] for r in rows] == list(ops_script.OPS)
    for r in rows:
        assert set(r["us"]) == {"ours", "numpy", "torch"}, r["op"]
        assert r["threads"]["torch"] == 1


@pytest.mark.parametrize(
    "numpy_fn",
    [lambda x: x, lambda x: np.where(x > 0, x, np.float64(0.01) * x)],
    ids=["wrong-values", "float64-result"],
)
def test_bench_ops_peer_that_differs_is_an_error(monkeypatch, capsys, fm_threads, numpy_fn):
    ops_script = load_script("bench_ops.py")
    monkeypatch.setitem(
        ops_script.OPS,
        "leaky_relu",
        ("act", "", ops_script.act_forward("leaky_relu", numpy_fn, "")),
    )
    assert ops_script.main([*TINY_OPS, "--ops", "leaky_relu", "--no-torch"]) == 1
    assert_one_line_error(capsys.readouterr().err, "leaky_relu 8x16: numpy's result differs")
    assert fm.get_num_threads() == fm_threads


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--ops", "relu,gelu"], "--ops"),
        (["--ops", ","], "--ops"),
        (["--shapes", "8x0"], "--shapes"),
        (["--shapes", "8"], "--shapes"),
        (["--threads", "1,0"], "--threads"),
        (["--repeat", "0"], "--repeat"),
        (["--sample-ms", "0"], "--sample-ms"),
        (["--settle-ms", "-1"], "--settle-ms"),
    ],
)
def test_bench_ops_bad_option_is_a_one_line_error(monkeypatch, capsys, args, option):
    assert run_script(monkeypatch, "bench_ops.py", *TINY_OPS, "--no-torch", *args) == 2
    assert_one_line_error(capsys.readouterr().err, f"argument {option}")
