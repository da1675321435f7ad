"""fastmlp.ops optimizer steps against the float64 NumPy reference (and torch.optim if installed).

Tolerances: the kernels compute in float32, the reference in float64. The reference is given the
hyper-parameters rounded to float32, the values the kernels actually use (beta2 = 0.999 is
0.99900001 in float32, which moves 1 - beta2 by 1.3e-5 relative: a different hyper-parameter,
not an error). The per-step comparison feeds the reference the kernel's own float32 state, so
each comparison covers one step only. Every output is its old value plus terms of at most the
size of the values involved, and is at most ~12 float32 operations away from its inputs, each
rounding by at most u = 2**-24 (6e-8) of its result; so one step is off by at most ~12u times
the largest magnitude in that array before or after the step. We allow, per element,

    |actual - desired| <= 2e-6 * scale + sensitivity,   scale = max |x| over the array, old and new

(about 3x that bound; normwise, because outputs that cancel, such as m = beta1 m + (1 - beta1) g
or a momentum buffer changing sign, keep only that absolute accuracy), where sensitivity is how
far the float64 step moves when g is perturbed by +-2u (|g| + weight_decay |p| + l1), the
rounding error of forming g' in float32. It is negligible except where g' nearly cancels to
~eps, where AdaGrad / RMSprop / Adam's g' / (sqrt(.) + eps) is ill-conditioned and no float32
implementation can do better.
The free-running test (no re-synchronisation, 10 steps, no L1 or weight decay) lets the one-step
errors accumulate: 10 x the one-step bound, so rtol = 2e-5 and atol = 2e-5 * max |array|.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fastmlp
from fastmlp import ops
from fastmlp import reference as ref

STEP_TOL = 2e-6  # one float32 step vs float64, relative to max |array| (module docstring)
RUN_RTOL = RUN_ATOL = 2e-5  # ten float32 steps vs ten float64 steps

SMALL_SIZES = [1, 7, 1031]
LARGE = 1_000_000  # above the kernels' threading grain: several threads take part

# optimizer -> {configuration name: keyword arguments}. The last configuration of each optimizer
# turns every option on; it is also the one run at the large, multi-threaded size.
CASES: dict[str, dict[str, dict[str, Any]]] = {
    "sgd": {
        "plain": dict(lr=0.1),
        "momentum": dict(lr=0.1, momentum=0.9),
        "dampening": dict(lr=0.1, momentum=0.9, dampening=0.3),
        "nesterov": dict(lr=0.1, momentum=0.8, nesterov=True),
        "regularised": dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, l1=0.01),
    },
    "adagrad": {
        "plain": dict(lr=0.1),
        "lr_decay": dict(lr=0.1, lr_decay=0.05),
        "regularised": dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, l1=0.01, eps=1e-6),
    },
    "rmsprop": {
        "plain": dict(lr=0.01),
        "momentum": dict(lr=0.01, momentum=0.9),
        "centered": dict(lr=0.01, centered=True, alpha=0.9),
        "regularised": dict(
            lr=0.01, momentum=0.5, centered=True, weight_decay=0.1, l1=0.01, eps=1e-6
        ),
    },
    "adam": {
        "plain": dict(lr=0.01),
        "betas": dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
        "regularised": dict(lr=0.01, weight_decay=0.1, l1=0.01),
    },
    "adamw": {
        "plain": dict(lr=0.01),
        "regularised": dict(lr=0.01, weight_decay=0.1, l1=0.01, betas=(0.85, 0.995)),
    },
}
# State buffers, passed positionally after grad in this order (None where an option is off).
STATE_NAMES = {
    "sgd": ["momentum_buffer"],
    "adagrad": ["sum_sq"],
    "rmsprop": ["square_avg", "momentum_buffer", "grad_avg"],
    "adam": ["m", "v"],
    "adamw": ["m", "v"],
}
ALL_CASES = [(opt, cfg) for opt, cfgs in CASES.items() for cfg in cfgs]


def _new_state(opt: str, kwargs: dict[str, Any], param: np.ndarray, rng) -> list[np.ndarray | None]:
    """Zeroed state, except SGD's momentum buffer: junk, because step 1 must overwrite it."""
    if opt == "sgd":
        junk = rng.standard_normal(param.shape).astype(np.float32)
        return [junk if kwargs.get("momentum") else None]
    if opt == "rmsprop":
        return [
            np.zeros_like(param),
            np.zeros_like(param) if kwargs.get("momentum") else None,
            np.zeros_like(param) if kwargs.get("centered") else None,
        ]
    return [np.zeros_like(param) for _ in STATE_NAMES[opt]]


def _call(module: Any, opt: str, param, grad, state, step: int, kwargs: dict[str, Any]):
    fn: Callable[..., Any] = getattr(module, f"{opt}_step")
    if opt in ("adam", "adamw"):
        return fn(param, grad, *state, step, **kwargs)
    return fn(param, grad, *state, step=step, **kwargs)


def _ops_step(opt, param, grad, state, step, kwargs) -> None:
    _call(ops, opt, param, grad, state, step, kwargs)


def _as_float32_value(x: Any) -> Any:
    if isinstance(x, tuple):
        return tuple(_as_float32_value(v) for v in x)
    if isinstance(x, float):
        return float(np.float32(x))
    return x


def _ref_step(opt, param, grad, state, step, kwargs) -> list[np.ndarray | None]:
    """Reference step with the kernels' float32 hyper-parameters; returns [param, *state] as
    float64 arrays (None for absent state)."""
    defaults = {
        name: prm.default
        for name, prm in inspect.signature(getattr(ops, f"{opt}_step")).parameters.items()
        if prm.kind is inspect.Parameter.KEYWORD_ONLY and prm.default is not inspect.Parameter.empty
    }
    ref_kwargs = {k: _as_float32_value(v) for k, v in {**defaults, **kwargs}.items()}
    ref_kwargs.pop("step", None)
    ref_kwargs.pop("device", None)
    return list(_call(ref, opt, param, grad, state, step, ref_kwargs))


def _assert_step_close(actual: list, desired: list, names: list[str], rtol: float, atol: float):
    for name, a, d in zip(names, actual, desired):
        if d is None:
            assert a is None, name
            continue
        scale = float(np.max(np.abs(d), initial=0.0))
        np.testing.assert_allclose(a, d, rtol=rtol, atol=atol * scale, err_msg=name)


def _grad_rounding(opt: str, kwargs: dict[str, Any], param: np.ndarray, grad: np.ndarray):
    """Bound on the float32 rounding error of g' = g + weight_decay * p + l1 * sign(p)."""
    wd = 0.0 if opt == "adamw" else kwargs.get("weight_decay", 0.0)
    l1 = kwargs.get("l1", 0.0)
    u = 2.0**-24
    return 2 * u * (np.abs(grad.astype(np.float64)) + wd * np.abs(param) + l1)


def _run_stepwise(opt: str, cfg: str, n: int, seed: int, steps: int = 10) -> None:
    rng = np.random.default_rng(seed)
    kwargs = CASES[opt][cfg]
    param = rng.standard_normal(n).astype(np.float32)
    state = _new_state(opt, kwargs, param, rng)
    names = ["param", *STATE_NAMES[opt]]
    for step in range(1, steps + 1):
        grad = rng.standard_normal(n).astype(np.float32)
        before = [None if x is None else x.copy() for x in (param, *state)]
        desired = _ref_step(opt, param, grad, state, step, kwargs)
        delta = _grad_rounding(opt, kwargs, param, grad)
        plus = _ref_step(opt, param, grad + delta, state, step, kwargs)
        minus = _ref_step(opt, param, grad - delta, state, step, kwargs)
        _ops_step(opt, param, grad, state, step, kwargs)
        for name, a, d, b, dp, dm in zip(names, (param, *state), desired, before, plus, minus):
            if d is None:
                assert a is None, name
                continue
            # One step from the same float32 state: see the module docstring.
            scale = max(float(np.max(np.abs(b))), float(np.max(np.abs(d))))
            sensitivity = np.maximum(np.abs(dp - d), np.abs(dm - d))
            bound = STEP_TOL * scale + sensitivity
            bad = np.flatnonzero(np.abs(a - d) > bound)
            assert bad.size == 0, (
                f"{opt}/{cfg} n={n} step {step} {name}: {bad.size} mismatches, first at "
                f"{bad[:5].tolist()}: actual {a[bad[:5]].tolist()} desired {d[bad[:5]].tolist()} "
                f"bound {bound[bad[:5]].tolist()}"
            )


@pytest.mark.parametrize("n", SMALL_SIZES)
@pytest.mark.parametrize(("opt", "cfg"), ALL_CASES)
def test_matches_reference_each_step(opt: str, cfg: str, n: int) -> None:
    _run_stepwise(opt, cfg, n, seed=1000 + n)


@pytest.mark.parametrize("opt", list(CASES))
def test_matches_reference_large(opt: str) -> None:
    # The configuration with every option on, at a size that runs multi-threaded.
    cfg = list(CASES[opt])[-1]
    _run_stepwise(opt, cfg, LARGE, seed=7, steps=3)


@pytest.mark.parametrize(("opt", "cfg"), [c for c in ALL_CASES if "l1" not in CASES[c[0]][c[1]]])
def test_ten_steps_free_running(opt: str, cfg: str) -> None:
    # Float32 and float64 trajectories from the same start, never re-synchronised. (No L1 here:
    # l1 * sign(p) jumps where p crosses 0, so the two trajectories could legitimately split.)
    rng = np.random.default_rng(99)
    kwargs = CASES[opt][cfg]
    n = 1031
    param = rng.standard_normal(n).astype(np.float32)
    state = _new_state(opt, kwargs, param, rng)
    ref_param: Any = param.astype(np.float64)
    ref_state: list[Any] = [None if s is None else s.astype(np.float64) for s in state]
    for step in range(1, 11):
        grad = rng.standard_normal(n).astype(np.float32)
        ref_param, *ref_state = _ref_step(opt, ref_param, grad, ref_state, step, kwargs)
        _ops_step(opt, param, grad, state, step, kwargs)
    # Ten accumulated steps: RUN_RTOL in the module docstring.
    names = ["param", *STATE_NAMES[opt]]
    _assert_step_close([param, *state], [ref_param, *ref_state], names, RUN_RTOL, RUN_ATOL)


@pytest.mark.parametrize("opt", list(CASES))
def test_thread_count_bit_identical(opt: str, restore_threads: None) -> None:
    cfg = list(CASES[opt])[-1]
    kwargs = CASES[opt][cfg]
    rng = np.random.default_rng(3)
    param0 = rng.standard_normal(LARGE).astype(np.float32)
    state0 = _new_state(opt, kwargs, param0, rng)
    grads = [rng.standard_normal(LARGE).astype(np.float32) for _ in range(3)]
    results = []
    for threads in (1, 2, 3):
        fastmlp.set_num_threads(threads)
        param = param0.copy()
        state = [None if s is None else s.copy() for s in state0]
        for step, grad in enumerate(grads, start=1):
            _ops_step(opt, param, grad, state, step, kwargs)
        results.append([param, *state])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert (a is None and b is None) or np.array_equal(a, b)


def test_sgd_first_step_overwrites_buffer_and_later_steps_use_it() -> None:
    # Hand-computed: p = 1, g = 2, momentum 0.5, dampening 0.5, lr 0.1.
    p = np.array([1.0], dtype=np.float32)
    b = np.array([123.0], dtype=np.float32)
    kw = dict(lr=0.1, momentum=0.5, dampening=0.5)
    ops.sgd_step(p, np.array([2.0]), b, step=1, **kw)  # b = 2, p = 1 - 0.2
    assert b[0] == 2.0
    assert p[0] == pytest.approx(0.8, rel=1e-7)  # one float32 rounding of 0.8
    ops.sgd_step(p, np.array([2.0]), b, step=2, **kw)  # b = 0.5*2 + 0.5*2 = 2, p = 0.8 - 0.2
    assert b[0] == 2.0
    assert p[0] == pytest.approx(0.6, rel=1e-6)  # two float32 roundings


def test_adamw_decouples_weight_decay() -> None:
    # With a zero gradient Adam's step is 0/eps = 0, so only AdamW's decay moves p.
    p = np.array([2.0, -4.0], dtype=np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    ops.adamw_step(p, np.zeros(2), m, v, 1, lr=0.1, weight_decay=0.5)
    np.testing.assert_allclose(p, [2.0 * 0.95, -4.0 * 0.95], rtol=1e-7)  # one rounding
    assert not m.any() and not v.any()


@pytest.mark.parametrize(
    ("lr", "weight_decay"), [(0.3, 3.3333333), (0.5, 1.9999999), (0.1, 9.99999), (0.001, 999.0)]
)
def test_adamw_decay_near_total_is_computed_from_the_exact_rates(lr, weight_decay) -> None:
    # 1 - lr * weight_decay from float32-rounded rates is off by ~1e-8: with lr * weight_decay
    # near 1 that was all of it (0.3, 3.3333333: p * -1.6e-8 instead of PyTorch's p * 1e-8).
    factor = 1.0 - lr * weight_decay
    p = np.array([1.0, -2.0, 3e30], dtype=np.float32)
    ops.adamw_step(p, np.zeros(3), np.zeros(3, np.float32), np.zeros(3, np.float32), 1, lr=lr,
                   weight_decay=weight_decay)  # fmt: skip
    np.testing.assert_allclose(p, np.array([1.0, -2.0, 3e30]) * factor, rtol=2e-7)
    # The same through the engine: targets equal to the outputs, so every gradient is 0.
    model = fastmlp.MLP([3, 2], loss="mse", seed=0)
    x = np.ones((4, 3), np.float32)
    w0 = model.get_weights()[0].astype(np.float64)
    opt = fastmlp.optim.AdamW(model, lr=lr, weight_decay=weight_decay)
    model.train_step(x, model.forward(x), optimizer=opt)
    np.testing.assert_allclose(model.get_weights()[0], w0 * factor, rtol=2e-7)


def test_adamw_l1_uses_the_sign_of_p_before_the_decay() -> None:
    # lr * weight_decay = 3 flips p's sign: 1 decays to -2. g' = 0 + l1 * sign(p) is +1 with the
    # sign before the decay (p = -2 - lr * 1 / (1 + eps) = -3), -1 with the sign after (-1).
    p = np.array([1.0], dtype=np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    ops.adamw_step(p, np.zeros(1), m, v, 1, lr=1.0, weight_decay=3.0, l1=1.0)
    np.testing.assert_allclose(p, [-3.0], rtol=1e-6)
    expected, _, _ = ref.adamw_step(
        np.array([1.0]), np.zeros(1), np.zeros(1), np.zeros(1), 1, lr=1.0, weight_decay=3.0, l1=1.0
    )
    np.testing.assert_allclose(p, expected, rtol=1e-6)


def test_optimizer_docstrings_state_what_the_engine_does() -> None:
    # AdamW: g' takes the sign of p before the decay (the test above), so the docstring writes
    # g' first.
    adamw = fastmlp.optim.AdamW.__doc__
    assert adamw.index("g' = g + l1 * sign(p)") < adamw.index("p  = p * (1 - lr * weight_decay)")
    assert "sign of p before the decay" in adamw
    # Centered RMSProp clamps v - a^2 at 0, where PyTorch would take sqrt of a negative (NaN).
    rmsprop = " ".join(fastmlp.optim.RMSProp.__doc__.split())
    assert "sqrt(max(v - a^2, 0))" in rmsprop and "clamped at 0" in rmsprop
    readme = Path(__file__).resolve().parents[1] / "README.md"
    if readme.is_file():  # the README's conventions say so too
        text = " ".join(readme.read_text(encoding="utf-8").split())
        assert "except that centered RMSProp clamps `v - a^2` at 0" in text


def test_adam_eps_after_bias_correction() -> None:
    # Tiny gradients make eps's place visible (random O(1) gradients cannot): PyTorch divides by
    # sqrt(v) / sqrt(1 - beta2) + eps = |g| + eps, so p moves by lr * g / (|g| + eps) = lr / 1.1.
    # eps inside the correction, (sqrt(v) + eps) / sqrt(1 - beta2), would give lr * 0.24.
    p = np.zeros(3, dtype=np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    ops.adam_step(p, np.full(3, 1e-7), m, v, 1, lr=0.1, eps=1e-8)
    np.testing.assert_allclose(p, -0.1 / 1.1, rtol=1e-6)  # a few float32 roundings


@pytest.mark.parametrize("n", [3, 1031, LARGE])
def test_grad_may_alias_param(n: int) -> None:
    # p - 0.25 * p: g' = g exactly (no regularisation), so each element is one float32 multiply
    # and one subtraction, which NumPy reproduces bit for bit. The compiled kernel is called
    # directly too, since fastmlp.ops copies an overlapping grad first.
    p0 = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    expected = p0 - np.float32(0.25) * p0
    p = p0.copy()
    ops.sgd_step(p, p, lr=0.25)
    np.testing.assert_array_equal(p, expected)
    p = p0.copy()
    fastmlp._core.sgd_step(
        p,
        None,
        p,
        lr=0.25,
        momentum=0.0,
        dampening=0.0,
        nesterov=False,
        weight_decay=0.0,
        l1=0.0,
        step=1,
    )
    np.testing.assert_array_equal(p, expected)


_CORE_HYPER = {
    "sgd_step": dict(
        lr=0.1, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0, l1=0.0, step=2
    ),
    "adagrad_step": dict(lr=0.1, lr_decay=0.0, weight_decay=0.0, eps=1e-10, l1=0.0, step=1),
    "rmsprop_step": dict(
        lr=0.1, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.9, centered=True, l1=0.0, step=1
    ),
    "adam_step": dict(
        lr=0.1,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        decoupled_weight_decay=False,
        l1=0.0,
        step=1,
    ),
}
# Each binding's in-place buffers in argument order (param first), then the grad position.
_CORE_BUFFERS = {
    "sgd_step": ["param", "momentum_buffer"],
    "adagrad_step": ["param", "sum_sq"],
    "rmsprop_step": ["param", "square_avg", "momentum_buffer", "grad_avg"],
    "adam_step": ["param", "m", "v"],
}


def _core_call(fn: str, buffers: dict[str, np.ndarray], grad: np.ndarray) -> None:
    getattr(fastmlp._core, fn)(*buffers.values(), grad, **_CORE_HYPER[fn])


def _core_overlap_cases() -> list[tuple[str, str, str, str]]:
    """(function, buffer a, buffer b, expected message) for every pair of arrays the binding
    must keep apart: two written buffers, or grad and a state buffer (grad may be param exactly,
    not a shifted view of it)."""
    cases = []
    for fn, names in _CORE_BUFFERS.items():
        for i, later in enumerate(names):
            for earlier in names[:i]:
                cases.append((fn, later, earlier, f"{later}: must not share memory with {earlier}"))
            if later != "param":
                cases.append((fn, "grad", later, f"grad: must not share memory with {later}"))
        cases.append((fn, "grad", "param", "grad: may be param itself but must not partly"))
    return cases


@pytest.mark.parametrize(("fn", "a", "b", "message"), _core_overlap_cases())
def test_core_refuses_overlapping_buffers(fn: str, a: str, b: str, message: str) -> None:
    # _core is the last line of defence behind fastmlp.ops (which refuses overlapping state and
    # copies an overlapping grad): m and v as one array gave v the update of m, silently.
    n = 16
    arrays = {name: np.zeros(n, np.float32) for name in _CORE_BUFFERS[fn]}
    arrays["grad"] = np.ones(n, np.float32)
    shared = np.ones(n + 1, np.float32)
    arrays[a] = shared[:n]
    # The same array, except grad and param: those may be one array, not shifted views.
    arrays[b] = shared[1:] if (a, b) == ("grad", "param") else shared[:n]
    snapshot = {k: v.copy() for k, v in arrays.items()}
    grad = arrays.pop("grad")
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        _core_call(fn, arrays, grad)
    arrays["grad"] = grad
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, snapshot[k], err_msg=k)  # refused before any write


@pytest.mark.parametrize("fn", list(_CORE_BUFFERS))
def test_core_grad_may_be_param_itself(fn: str) -> None:
    # optim.cpp: grad is read before param is written, element by element, so grad may be param.
    p = np.linspace(-1, 1, 16, dtype=np.float32)
    buffers = {name: np.zeros(16, np.float32) for name in _CORE_BUFFERS[fn]}
    buffers["param"] = p
    expected = {k: v.copy() for k, v in buffers.items()}
    _core_call(fn, expected, p.copy())
    _core_call(fn, buffers, p)
    for k, v in buffers.items():
        np.testing.assert_array_equal(v, expected[k], err_msg=k)


def test_grad_any_float_dtype_and_layout() -> None:
    rng = np.random.default_rng(5)
    p1 = rng.standard_normal((4, 6)).astype(np.float32)
    p2 = p1.copy()
    g = rng.standard_normal((6, 4)).T  # float64, Fortran-ordered
    ops.sgd_step(p1, g, lr=0.1)
    ops.sgd_step(p2, np.ascontiguousarray(g, dtype=np.float32), lr=0.1)
    np.testing.assert_array_equal(p1, p2)


def test_empty_param() -> None:
    p = np.zeros(0, dtype=np.float32)
    ops.adam_step(p, p.copy(), np.zeros(0, np.float32), np.zeros(0, np.float32), 1)


@pytest.mark.parametrize(("opt", "cfg"), [c for c in ALL_CASES if "l1" not in CASES[c[0]][c[1]]])
def test_matches_torch(opt: str, cfg: str) -> None:
    torch = pytest.importorskip("torch")
    kwargs = dict(CASES[opt][cfg])
    cls = {
        "sgd": torch.optim.SGD,
        "adagrad": torch.optim.Adagrad,
        "rmsprop": torch.optim.RMSprop,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
    }[opt]
    rng = np.random.default_rng(11)
    n = 1031
    param = rng.standard_normal(n).astype(np.float32)
    state = _new_state(opt, kwargs, param, rng)
    state = [None if s is None else np.zeros_like(param) for s in state]
    t_param = torch.nn.Parameter(torch.from_numpy(param.copy()))
    torch_kwargs = dict(kwargs)
    if opt == "adamw" and "weight_decay" not in torch_kwargs:
        torch_kwargs["weight_decay"] = 0.01  # our default (and torch's)
    optimizer = cls([t_param], foreach=False, **torch_kwargs)
    for step in range(1, 11):
        grad = rng.standard_normal(n).astype(np.float32)
        _ops_step(opt, param, grad, state, step, kwargs)
        t_param.grad = torch.from_numpy(grad.copy())
        optimizer.step()
    # Both in float32 with different operation order: ~1 ulp per operation per step, 10 steps.
    np.testing.assert_allclose(param, t_param.detach().numpy(), rtol=RUN_RTOL, atol=RUN_ATOL)


# ---------------------------------------------------------------- bad input, one test per rule
def _params(n: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    p = np.ones(n, dtype=np.float32)
    return p, np.ones(n, dtype=np.float32), np.zeros(n, dtype=np.float32), np.zeros(n, np.float32)


def _adam_with(**kw: Any) -> None:
    p, g, m, v = _params()
    args = dict(param=p, grad=g, m=m, v=v, step=1)
    args.update(kw)
    ops.adam_step(**args)


BAD_CALLS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("float64 param", lambda: _adam_with(param=np.ones(5)), TypeError, "param"),
    ("list param", lambda: _adam_with(param=[1.0] * 5), TypeError, "param"),
    (
        "non-contiguous param",
        lambda: _adam_with(param=np.ones(10, np.float32)[::2]),
        ValueError,
        "param",
    ),
    (
        "read-only param",
        lambda: _adam_with(param=np.broadcast_to(np.float32(1), (5,))),
        ValueError,
        "param",
    ),
    ("grad shape", lambda: _adam_with(grad=np.ones(6)), ValueError, "grad"),
    ("int grad", lambda: _adam_with(grad=np.ones(5, dtype=np.int64)), TypeError, "grad"),
    ("m shape", lambda: _adam_with(m=np.zeros(4, np.float32)), ValueError, "m"),
    ("v float64", lambda: _adam_with(v=np.zeros(5)), TypeError, "v"),
    ("m is v", lambda: (lambda b: _adam_with(m=b, v=b))(np.zeros(5, np.float32)), ValueError, "v"),
    ("negative lr", lambda: _adam_with(lr=-1e-3), ValueError, "lr"),
    ("nan lr", lambda: _adam_with(lr=float("nan")), ValueError, "lr"),
    ("string lr", lambda: _adam_with(lr="0.1"), TypeError, "lr"),
    ("beta1 = 1", lambda: _adam_with(betas=(1.0, 0.999)), ValueError, "betas"),
    ("negative beta2", lambda: _adam_with(betas=(0.9, -0.1)), ValueError, "betas"),
    ("one beta", lambda: _adam_with(betas=(0.9,)), ValueError, "betas"),
    (
        "beta2 that is 1 in float32",
        lambda: _adam_with(betas=(0.9, 0.99999999)),
        ValueError,
        "betas[1]: expected a value in [0, 1), got 0.99999999 (1.0 in float32",
    ),
    ("eps = 0", lambda: _adam_with(eps=0.0), ValueError, "eps"),
    (
        "eps that is 0 in float32",  # as fastmlp.optim.Adam says, not the C++ check's "got 0"
        lambda: _adam_with(eps=1e-50),
        ValueError,
        "eps: expected a value > 0, got 1e-50 (0 in float32, the precision the kernels use)",
    ),
    (
        "adagrad eps that is 0 in float32",
        lambda: ops.adagrad_step(*_params()[:3], eps=1e-50, step=1),
        ValueError,
        "eps: expected a value > 0, got 1e-50 (0 in float32",
    ),
    (
        "rmsprop eps that is 0 in float32",
        lambda: ops.rmsprop_step(*_params()[:3], eps=1e-50),
        ValueError,
        "eps: expected a value > 0, got 1e-50 (0 in float32",
    ),
    (
        "lr beyond the float range",  # float(10**400) raised a bare OverflowError
        lambda: _adam_with(lr=10**400),
        ValueError,
        "lr: expected a finite value, got 1e+400 (inf in float32",
    ),
    (
        "optim lr beyond the float range",
        lambda: fastmlp.optim.SGD(fastmlp.MLP([2, 2]), lr=10**400),
        ValueError,
        "lr: expected a finite value, got 1e+400",
    ),
    (
        "masked param",
        lambda: _adam_with(param=np.ma.masked_array(np.ones(5, np.float32))),
        TypeError,
        "param: masked arrays are not supported",
    ),
    (
        "masked grad",
        lambda: _adam_with(grad=np.ma.masked_array(np.ones(5), mask=[1, 0, 0, 0, 0])),
        TypeError,
        "grad: masked arrays are not supported",
    ),
    ("negative weight decay", lambda: _adam_with(weight_decay=-0.1), ValueError, "weight_decay"),
    ("negative l1", lambda: _adam_with(l1=-0.1), ValueError, "l1"),
    ("step 0", lambda: _adam_with(step=0), ValueError, "step"),
    ("float step", lambda: _adam_with(step=1.5), TypeError, "step"),
    (
        "adagrad eps = 0",
        lambda: ops.adagrad_step(*_params()[:3], eps=0.0, step=1),
        ValueError,
        "eps",
    ),
    (
        "adagrad negative lr_decay",
        lambda: ops.adagrad_step(*_params()[:3], lr_decay=-1.0, step=1),
        ValueError,
        "lr_decay",
    ),
    (
        "rmsprop eps < 0",
        lambda: ops.rmsprop_step(*_params()[:3], eps=-1e-8),
        ValueError,
        "eps",
    ),
    ("rmsprop alpha = 1", lambda: ops.rmsprop_step(*_params()[:3], alpha=1.0), ValueError, "alpha"),
    (
        "rmsprop centered without grad_avg",
        lambda: ops.rmsprop_step(*_params()[:3], centered=True),
        ValueError,
        "grad_avg",
    ),
    (
        "rmsprop momentum without buffer",
        lambda: ops.rmsprop_step(*_params()[:3], momentum=0.9),
        ValueError,
        "momentum_buffer",
    ),
    (
        "sgd momentum without buffer",
        lambda: ops.sgd_step(*_params()[:2], lr=0.1, momentum=0.9),
        ValueError,
        "momentum_buffer",
    ),
    (
        "sgd momentum without a step number",  # step=1 left implicit would reset the buffer
        lambda: ops.sgd_step(*_params()[:3], lr=0.1, momentum=0.9),
        ValueError,
        "step: required when momentum != 0",
    ),
    (
        "sgd bool step",
        lambda: ops.sgd_step(*_params()[:3], lr=0.1, momentum=0.9, step=True),
        TypeError,
        "step: expected an int, got bool",
    ),
    (
        "sgd negative momentum",
        lambda: ops.sgd_step(*_params()[:3], lr=0.1, momentum=-0.5, step=1),
        ValueError,
        "momentum",
    ),
    (
        "sgd nesterov without momentum",
        lambda: ops.sgd_step(*_params()[:2], lr=0.1, nesterov=True),
        ValueError,
        "nesterov",
    ),
    (
        "sgd nesterov with dampening",
        lambda: ops.sgd_step(
            *_params()[:3], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True, step=1
        ),
        ValueError,
        "nesterov",
    ),
    (
        "sgd dampening > 1",
        lambda: ops.sgd_step(*_params()[:3], lr=0.1, momentum=0.9, dampening=1.5, step=1),
        ValueError,
        "dampening",
    ),
    (
        "sgd buffer is param",
        lambda: (lambda p: ops.sgd_step(p, p.copy(), p, lr=0.1, momentum=0.9, step=1))(
            _params()[0]
        ),
        ValueError,
        "momentum_buffer",
    ),
    # The compiled layer checks on its own too (last line of defence behind fastmlp.ops).
    (
        "core float64 state",
        lambda: fastmlp._core.adagrad_step(
            np.ones(3, np.float32),
            np.zeros(3),
            np.ones(3, np.float32),
            lr=0.1,
            lr_decay=0.0,
            weight_decay=0.0,
            eps=1e-10,
            l1=0.0,
            step=1,
        ),
        TypeError,
        "sum_sq",
    ),
    (
        "core grad shape",
        lambda: fastmlp._core.sgd_step(
            np.ones(3, np.float32),
            None,
            np.ones(4, np.float32),
            lr=0.1,
            momentum=0.0,
            dampening=0.0,
            nesterov=False,
            weight_decay=0.0,
            l1=0.0,
            step=1,
        ),
        ValueError,
        "grad",
    ),
]


@pytest.mark.parametrize(
    ("call", "exc", "name"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input(call: Callable[[], Any], exc: type[Exception], name: str) -> None:
    with pytest.raises(exc) as info:
        call()
    assert str(info.value).startswith(name), str(info.value)


def _flag_step(flag: str, value: object, device: str | None = None) -> np.ndarray:
    """One step with ``nesterov=value`` (SGD) or ``centered=value`` (RMSprop); the new param."""
    p, g, b, a = _params()
    g[:] = 0.5
    if flag == "nesterov":
        ops.sgd_step(p, g, b, lr=0.1, momentum=0.9, nesterov=value, step=1, device=device)
    else:
        ops.rmsprop_step(p, g, b, None, a, centered=value, device=device)
    return p


@pytest.mark.parametrize("device", [None, "cuda"])  # checked before the device is chosen
@pytest.mark.parametrize("value", ["yes", "False", 0, 1, None], ids=repr)
@pytest.mark.parametrize("flag", ["nesterov", "centered"])
def test_flags_take_a_bool_only(flag: str, value: object, device: str | None) -> None:
    # bool("False") is True: a truthy flag used to switch on Nesterov momentum or centering.
    pattern = rf"^{flag}: expected True or False, got {type(value).__name__}$"
    with pytest.raises(TypeError, match=pattern):
        _flag_step(flag, value, device)
    assert not np.array_equal(_flag_step(flag, False), _flag_step(flag, True))
    for b in (False, True):  # NumPy bools are bools
        np.testing.assert_array_equal(_flag_step(flag, np.bool_(b)), _flag_step(flag, b))


def test_grad_beyond_float32_is_named_and_leaves_param_untouched() -> None:
    p, g, m, v = _params()
    grad = g.astype(np.float64)
    grad[2] = 1e39
    with pytest.raises(ValueError, match=r"^grad: 1e\+39 at \[2\] is too large for float32"):
        ops.adam_step(p, grad, m, v, 1)
    np.testing.assert_array_equal(p, 1.0)


def test_bad_input_leaves_param_untouched() -> None:
    p, g, m, v = _params()
    with pytest.raises(ValueError):
        ops.adam_step(p, g, m, v, 1, betas=(0.9, 1.5))
    np.testing.assert_array_equal(p, 1.0)


_PATHS_SCRIPT = """
import sys
import numpy as np
from fastmlp import _core, ops
CASES = {cases!r}
out = {{"simd": np.array(_core._build_info()["simd"])}}
for opt, cfgs in CASES.items():
    for cfg, kwargs in cfgs.items():
        rng = np.random.default_rng(5)
        param = rng.standard_normal(1031).astype(np.float32)  # a tail past the vector width
        zeros = np.zeros_like(param)
        if opt == "sgd":
            state = [zeros.copy() if kwargs.get("momentum") else None]
        elif opt == "rmsprop":
            state = [zeros.copy()] + [
                zeros.copy() if kwargs.get(k) else None for k in ("momentum", "centered")
            ]
        else:
            state = [zeros.copy() for _ in range(1 if opt == "adagrad" else 2)]
        fn = getattr(ops, opt + "_step")
        for step in (1, 2, 3):
            grad = rng.standard_normal(param.shape).astype(np.float32)
            if opt in ("adam", "adamw"):
                fn(param, grad, *state, step, **kwargs)
            else:
                fn(param, grad, *state, step=step, **kwargs)
        for i, a in enumerate([param, *state]):
            if a is not None:
                out[f"{{opt}}__{{cfg}}__{{i}}"] = a
np.savez(sys.argv[1], **out)
"""


def test_simd_and_generic_paths_are_bit_identical(run_simd_paths) -> None:
    """The AVX copy of the update loops (cpu/optim_avx2.cpp) rounds exactly like the baseline one:
    same operations, no FMA contraction. FASTMLP_SIMD=generic is read once per process, so each
    path runs in its own interpreter."""
    results = run_simd_paths(_PATHS_SCRIPT.format(cases=CASES))
    assert results["generic"].keys() == results["native"].keys()
    for key, value in results["generic"].items():
        if key != "simd":
            np.testing.assert_array_equal(results["native"][key], value, err_msg=key)


def test_centered_rmsprop_on_a_constant_gradient_stays_finite() -> None:
    """On a constant gradient grad_avg -> g and square_avg -> g^2, so square_avg - grad_avg^2 -> 0
    and float32 rounding takes it below 0 (from step 131 for some of these elements): the update
    clamps it at 0 (common/optim_math.h), where sqrt would give NaN."""
    g = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    p, v, a = np.zeros_like(g), np.zeros_like(g), np.zeros_like(g)
    for step in range(1, 201):
        ops.rmsprop_step(p, g, v, None, a, lr=1e-3, alpha=0.9, centered=True, step=step)
    assert np.isfinite(p).all()


def test_sgd_dampening_of_one_is_accepted() -> None:
    """dampening is in [0, 1], 1 included (as torch.optim.SGD): the first step sets the buffer to
    the gradient, later ones only decay it (momentum * b)."""
    p = np.array([1.0, -2.0], np.float32)
    g = np.array([0.5, 0.25], np.float32)
    b = np.zeros(2, np.float32)
    for step in (1, 2):
        want = ref.optim.sgd_step(p, g, b, lr=0.1, momentum=0.9, dampening=1.0, step=step)
        ops.sgd_step(p, g, b, lr=0.1, momentum=0.9, dampening=1.0, step=step)
        np.testing.assert_allclose(p, want[0], rtol=1e-6)
        np.testing.assert_allclose(b, want[1], rtol=1e-6)
    np.testing.assert_allclose(b, [0.45, 0.225], rtol=1e-6)


@pytest.mark.parametrize("betas", [(1.0, 0.999), (0.9, 1.0)])
def test_the_compiled_adam_refuses_a_beta_of_one(betas: tuple[float, float]) -> None:
    """The C++ check itself (fastmlp.ops checks betas before calling it), and the parameters are
    left as they were."""
    p = np.ones(3, np.float32)
    m, v, g = np.zeros(3, np.float32), np.zeros(3, np.float32), np.ones(3, np.float32)
    kw: dict[str, Any] = dict(
        lr=0.1, eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, l1=0.0, step=1
    )
    with pytest.raises(ValueError, match=r"^betas: expected beta[12] in \[0, 1\)"):
        fastmlp._core.adam_step(p, m, v, g, beta1=betas[0], beta2=betas[1], **kw)
    np.testing.assert_array_equal(p, 1.0)


@pytest.mark.parametrize("opt", ["sgd", "adagrad", "rmsprop", "adam"])
def test_the_reference_has_the_kernels_defaults(opt: str) -> None:
    """The step comparisons above pass every hyper-parameter to the reference explicitly (the
    kernels' defaults filled in), so they would not see a reference whose own defaults differ:
    a user calling ``fastmlp.reference.optim`` with its defaults gets the kernels' update."""
    ours = inspect.signature(getattr(ops, f"{opt}_step")).parameters
    theirs = inspect.signature(getattr(ref.optim, f"{opt}_step")).parameters
    shared = [k for k, p in ours.items() if p.default is not inspect.Parameter.empty]
    shared = [k for k in shared if k not in ("step", "device")]
    assert shared and set(shared) <= set(theirs), sorted(set(shared) - set(theirs))
    assert {k: theirs[k].default for k in shared} == {k: ours[k].default for k in shared}


def test_core_accepts_a_grad_adjacent_to_param() -> None:
    """The optimizer bindings' overlap check lets through a gradient that starts where the
    parameters end (adjacent, no shared byte)."""
    buf = np.linspace(-1.0, 1.0, 2 * 37, dtype=np.float32)
    param, grad = buf[:37], buf[37:]
    expected = param - np.float32(0.1) * grad  # p -= lr * g, one float32 multiply and subtract
    fastmlp._core.sgd_step(
        param, None, grad, lr=0.1, momentum=0.0, dampening=0.0, nesterov=False,
        weight_decay=0.0, l1=0.0, step=1,
    )  # fmt: skip
    np.testing.assert_array_equal(param, expected)
