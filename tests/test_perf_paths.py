"""The fast paths of the training step and what they must keep: the train_step fast path of the
binding (same results as the checked path, no effect when it declines), the finiteness rules now
enforced in C++ (argument named, nothing changed), the engine's running accuracy counts, the
small-step thread cap and the OpenMP wait-policy default. No timing assertions."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastmlp as fm

# Without OpenMP (a possible build) the batch-parallel passes are never taken.
_OMP = bool(fm.build_info()["openmp"])


def _pair(sizes=(5, 7, 3), seed=0, opt=fm.optim.Adam, **kw):
    a, b = fm.MLP(list(sizes), seed=seed, **kw), fm.MLP(list(sizes), seed=seed, **kw)
    return (a, opt(a)), (b, opt(b))


def _data(rng, n=11, d=5, c=3):
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, c, n)


# ------------------------------------------------------------------------------- fast path
@pytest.mark.parametrize("loss", ["cross_entropy", "hinge", "mse", "bce"])
def test_fast_path_matches_the_checked_path_bit_for_bit(rng, loss):
    """Fast path (float32 / int64 inputs as given) vs checked path (float64 x, int32 labels or
    float64 targets, converted by fastmlp.nn to the same float32/int64 values): the engine sees
    the same bytes, so every parameter must be identical after each step."""
    (m1, o1), (m2, o2) = _pair(loss=loss)
    for _ in range(3):
        x, labels = _data(rng)
        if loss in ("mse", "bce"):
            y = np.eye(3, dtype=np.float32)[labels]
            y_slow = y.astype(np.float64)
        else:
            y, y_slow = labels.astype(np.int64), labels.astype(np.int32)
        assert m1._net.train_step_fast(x, y, fm.nn.LOSSES[loss], True, o1._state) is not None
        v2 = m2.train_step(x.astype(np.float64), y_slow, optimizer=o2)
        assert np.isfinite(v2)
        for a, b in zip(m1.get_weights(), m2.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert o1.step_count == o2.step_count == 3


def _declined(x, y):
    return [
        (x.astype(np.float64), y),  # needs a conversion
        (np.asfortranarray(x), y),  # not C-contiguous
        (x[:, :4].copy(), y),  # wrong number of columns
        (x[:0], y[:0]),  # empty batch
        (x.astype(">f4"), y),  # non-native byte order
        (x, y.astype(np.int32)),  # labels need a conversion
        (x, y[:-1]),  # wrong number of labels
        (x, np.where(y == 0, 3, y)),  # label out of range
        (x, np.where(y == 0, -1, y)),  # negative label
        ([[0.0] * 5], y[:1]),  # not an array
        (x, list(y)),
    ]


def test_fast_path_declines_without_side_effects(rng):
    model = fm.MLP([5, 7, 3], seed=0)
    opt = fm.optim.Adam(model)
    x, y = _data(rng)
    before = model.get_weights()
    for xb, yb in _declined(x, y):
        assert model._net.train_step_fast(xb, yb, 0, True, opt._state) is None
    t = np.eye(3, dtype=np.float32)[y]
    t_inf = np.where(t > 0, np.float32(np.inf), t)
    for yb, loss in [(t + 0.5, "bce"), (t * np.nan, "mse"), (t_inf, "mse"), (t[:, :2], "mse")]:
        assert model._net.train_step_fast(x, yb, fm.nn.LOSSES[loss], True, opt._state) is None
    assert model._net.train_step_fast(x, y, 7, True, opt._state) is None  # unknown loss code
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert opt.step_count == 0 and model._take_train_counts() == (0, 0)


def test_declined_inputs_still_get_their_errors(rng):
    """Through MLP.train_step the declined inputs go to the checked path, which converts them or
    raises naming the argument."""
    model = fm.MLP([5, 7, 3], seed=0)
    opt = fm.optim.SGD(model, lr=0.1)
    x, y = _data(rng)
    with pytest.raises(ValueError, match=r"^y: label 3 is out of range \[0, 3\)"):
        model.train_step(x, np.where(y == 0, 3, y), optimizer=opt)
    with pytest.raises(ValueError, match=r"^x: expected 5 columns"):
        model.train_step(x[:, :4].copy(), y, optimizer=opt)
    with pytest.raises(ValueError, match=r"^y: bce targets must lie in"):
        model.train_step(x, np.eye(3, dtype=np.float32)[y] + 0.5, loss="bce", optimizer=opt)
    assert opt.step_count == 0
    # Converted inputs train (float64 x, Fortran order, int32 labels).
    assert np.isfinite(model.train_step(np.asfortranarray(x), y.astype(np.int32), optimizer=opt))
    assert opt.step_count == 1


# ------------------------------------------------------------------------------- finiteness
@pytest.mark.parametrize(
    ("activation", "loss"),
    [("relu", "cross_entropy"), ("identity", "cross_entropy"), ("tanh", "hinge"), ("relu", "mse")],
)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("n", [11, 200])  # 200 rows on 2 threads: the batch-parallel passes
def test_non_finite_x_raises_naming_x_and_changes_nothing(rng, activation, loss, bad, n):
    """No Python pass over x any more: the engine looks at x once the loss or the gradients come
    out non-finite (an activation or dropout could also hide a NaN), and then blames x."""
    d = 5 if n == 11 else 64  # 200 x (64*96 + 96*3) multiply-adds: above the serial cap
    model = fm.MLP([d, 96, 3], activation=activation, seed=0, loss=loss, dropout=0.2)
    opt = fm.optim.Adam(model)
    x, labels = _data(rng, n=n, d=d)
    y = np.eye(3, dtype=np.float32)[labels] if loss == "mse" else labels
    x[4, 2] = bad
    before, offset = model.get_weights(), model.rng_offset
    saved = fm.get_num_threads()
    fm.set_num_threads(2)
    try:
        assert model._net.step_is_batch_parallel(n) == (n == 200 and _OMP)
        with pytest.raises(ValueError, match=r"^x: contains NaN or infinite values"):
            model.train_step(x, y, optimizer=opt)  # fast path
    finally:
        fm.set_num_threads(saved)
    with pytest.raises(ValueError, match=r"^x: contains NaN or infinite values"):
        model.train_step(x.astype(np.float64), y, optimizer=opt)  # checked path
    with pytest.raises(ValueError, match=r"^x: contains NaN or infinite values"):
        model.loss_and_gradients(x, y)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert opt.step_count == 0 and model.rng_offset == offset


def test_non_finite_targets_raise_naming_y(rng):
    model = fm.MLP([5, 7, 3], seed=0, loss="mse")
    opt = fm.optim.Adam(model)
    x, labels = _data(rng)
    t = np.eye(3, dtype=np.float32)[labels]
    t[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"^y: contains NaN"):
        model.train_step(x, t, optimizer=opt)
    assert opt.step_count == 0


def test_forward_and_evaluate_check_x_even_when_relu_would_hide_nan(rng):
    model = fm.MLP([5, 7, 3], seed=0).eval()
    x, y = _data(rng)
    x[3, 0] = np.nan
    for call in (lambda: model.forward(x), lambda: model.predict(x), lambda: model.evaluate(x, y)):
        with pytest.raises(ValueError, match=r"^x: contains NaN or infinite values"):
            call()
    # evaluate checks chunk by chunk: a NaN in a later chunk is found too.
    big = rng.standard_normal((50, 5)).astype(np.float32)
    big[47, 4] = np.inf
    with pytest.raises(ValueError, match=r"^x: contains NaN or infinite values"):
        model.evaluate(big, rng.integers(0, 3, 50), batch_size=8)


@pytest.mark.parametrize("n", [11, 200])
def test_large_learning_rate_still_raises_floating_point_error(rng, n):
    """Finite inputs whose step overflows are still FloatingPointError (not blamed on x), and
    the failed step changes nothing (also on the batch-parallel passes, n = 200)."""
    d = 5 if n == 11 else 64
    model = fm.MLP([d, 96, 3], seed=0, activation="relu")
    opt = fm.optim.SGD(model, lr=1e30)
    x, y = _data(rng, n=n, d=d)
    saved = fm.get_num_threads()
    fm.set_num_threads(2)
    try:
        assert model._net.step_is_batch_parallel(n) == (n == 200 and _OMP)
        with pytest.raises(FloatingPointError):
            for _ in range(5):
                before, steps = model.get_weights(), opt.step_count
                model.train_step(x * np.float32(1e10), y, optimizer=opt)
    finally:
        fm.set_num_threads(saved)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert opt.step_count == steps


# ------------------------------------------------------------------------------- counts
@pytest.mark.parametrize("loss", ["cross_entropy", "hinge", "bce", "mse"])
def test_train_counts_are_the_steps_own_predictions(rng, loss):
    model = fm.MLP([5, 7, 3], seed=0, loss=loss)
    opt = fm.optim.Adam(model, lr=1e-2)
    expect_correct = expect_total = 0
    for _ in range(4):
        x, labels = _data(rng)
        y = np.eye(3, dtype=np.float32)[labels] if loss in ("mse", "bce") else labels
        logits = model.forward(x)  # no dropout: the step's forward gives the same logits
        if loss in ("cross_entropy", "hinge"):
            expect_correct += int((logits.argmax(1) == labels).sum())
            expect_total += len(labels)
        elif loss == "bce":
            expect_correct += int(((logits > 0) == (y > 0.5)).sum())
            expect_total += y.size
        model.train_step(x, y, optimizer=opt)
    # Integer counts of the same comparisons: exact.
    assert model._take_train_counts() == (expect_correct, expect_total)
    assert model._take_train_counts() == (0, 0)  # taking resets


# ------------------------------------------------------------------------------- threads
@pytest.mark.parametrize(
    ("sizes", "n", "kw"),
    [
        ([100, 96, 64, 5], 150, {"activation": "tanh", "dropout": 0.3}),  # batch-parallel
        ([100, 96, 64, 5], 97, {"activation": ["relu", "elu"], "dropout": [0.0, 0.2]}),
        ([100, 96, 5], 200, {"activation": "prelu", "dropout": 0.1}),  # PReLU: GEMM threads
        ([100, 96, 64, 5], 80, {"activation": "sigmoid"}),  # < 48 rows per thread: GEMM threads
        ([100, 96, 64, 5], 40, {"activation": "leaky_relu"}),  # below the serial cap
    ],
)
def test_steps_forward_and_evaluate_do_not_depend_on_the_thread_count(sizes, n, kw):
    """The batch-parallel passes (one region per pass, rows split across threads) must give the
    same bits as one thread: parameters and dropout offset after three steps, then forward and
    evaluate (both also batch-parallel for large inputs)."""
    saved = fm.get_num_threads()
    r = np.random.default_rng(7)
    x = r.standard_normal((n, sizes[0])).astype(np.float32)
    y = r.integers(0, sizes[-1], n)
    runs = []
    try:
        for threads in (1, 2, 3):
            fm.set_num_threads(threads)
            model = fm.MLP(sizes, seed=2, **kw)
            if threads == 2:  # the path this case is meant to cover
                parallel = "activation" in kw and kw["activation"] != "prelu" and n >= 96
                assert model._net.step_is_batch_parallel(n) == (parallel and _OMP)
            opt = fm.optim.Adam(model, lr=1e-2)
            losses = [model.train_step(x, y, optimizer=opt) for _ in range(3)]
            value, grads = model.loss_and_gradients(x, y)
            model.eval()
            runs.append(
                (
                    [*losses, value],
                    np.concatenate([w.ravel() for w in model.get_weights()]),
                    np.concatenate([g.ravel() for g in grads]),
                    model.forward(x),
                    model.evaluate(x, y)["loss"],
                    model.rng_offset,
                )
            )
    finally:
        fm.set_num_threads(saved)
    for other in runs[1:]:
        assert other[0] == runs[0][0]  # losses: equal floats
        for a, b in zip(other[1:5], runs[0][1:5]):
            np.testing.assert_array_equal(a, b)
        assert other[5] == runs[0][5]


def test_small_steps_cap_threads_only_while_they_run():
    """The engine's per-call thread cap (ScopedThreadLimit) must not leak into the setting, and
    the results must not depend on the thread count (small and large steps)."""
    saved = fm.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            fm.set_num_threads(threads)
            for sizes, n in (([2, 16, 2], 32), ([64, 256, 128, 10], 96)):
                model = fm.MLP(sizes, seed=1)
                opt = fm.optim.Adam(model)
                r = np.random.default_rng(5)
                x = r.standard_normal((n, sizes[0])).astype(np.float32)
                y = r.integers(0, sizes[-1], n)
                model.train_step(x, y, optimizer=opt)
                results.append(np.concatenate([w.ravel() for w in model.get_weights()]))
            assert fm.get_num_threads() == threads
        # Kernels split work so that results are bit-identical for every thread count.
        np.testing.assert_array_equal(results[0], results[2])
        np.testing.assert_array_equal(results[1], results[3])
    finally:
        fm.set_num_threads(saved)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: fm.optim.SGD(m, lr=0.05),
        lambda m: fm.optim.SGD(m, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda m: fm.optim.AdaGrad(m, lr=0.05, l1=1e-4),
        lambda m: fm.optim.RMSProp(m, lr=0.01, momentum=0.5, centered=True),
        lambda m: fm.optim.AdamW(m, lr=0.01),
    ],
)
def test_fused_update_matches_one_thread_for_every_optimizer(make):
    """On the batch-parallel path the update runs inside the backward region, each thread on the
    gradient blocks it computed (OptimizerState::apply_range): same bits and step count as one
    thread's single apply()."""
    saved = fm.get_num_threads()
    r = np.random.default_rng(3)
    x = r.standard_normal((150, 64)).astype(np.float32)
    y = r.integers(0, 4, 150)
    results = []
    try:
        for threads in (1, 2):
            fm.set_num_threads(threads)
            model = fm.MLP([64, 96, 64, 4], seed=4)
            assert model._net.step_is_batch_parallel(150) == (threads == 2 and _OMP)
            opt = make(model)
            for _ in range(3):
                model.train_step(x, y, optimizer=opt)
            results.append((np.concatenate([w.ravel() for w in model.get_weights()]), opt))
    finally:
        fm.set_num_threads(saved)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1].step_count == results[1][1].step_count == 3


# ------------------------------------------------------------------------------- packed weights
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("sizes", "n", "kw"),
    [
        # 600 inputs: three k-blocks of 200 in the packed W_1; widths off the 16-column panels.
        ([600, 37, 19, 5], 200, {"activation": "relu"}),  # batch-parallel, fused update
        ([600, 37, 19, 5], 13, {"activation": "tanh"}),  # serial passes, separate update
        ([600, 37, 5], 200, {"activation": "prelu"}),  # PReLU: slopes updated too
        ([3, 1, 17], 7, {"activation": "elu"}),  # a one-column weight, one-row W_1
    ],
)
def test_packed_weights_follow_every_change_of_the_weights(sizes, n, kw, threads):
    """The engine keeps each W packed for its forward products, repacked by the optimizer update
    and after set_weights. A model that reached its weights by training steps (or by
    set_weights) must give exactly the forward pass of a new model given those weights (whose
    packed copy was made from scratch), and a step that fails must leave it as it was."""
    saved = fm.get_num_threads()
    r = np.random.default_rng(11)
    x = r.standard_normal((n, sizes[0])).astype(np.float32)
    y = r.integers(0, sizes[-1], n)

    def assert_same_forward_as_a_fresh_copy(model):
        fresh = fm.MLP(sizes, seed=99, **kw)
        fresh.set_weights(model.get_weights())
        np.testing.assert_array_equal(model.forward(x), fresh.forward(x))

    try:
        fm.set_num_threads(threads)
        model = fm.MLP(sizes, seed=3, **kw)
        opt = fm.optim.Adam(model, lr=1e-2)
        before = model.forward(x)
        for _ in range(3):
            model.train_step(x, y, optimizer=opt)
            assert_same_forward_as_a_fresh_copy(model)
        assert not np.array_equal(model.forward(x), before)  # the steps did change the weights
        model.loss_and_gradients(x, y)  # no update: nothing to repack
        assert_same_forward_as_a_fresh_copy(model)
        model.set_weights([r.standard_normal(w.shape) for w in model.get_weights()])
        assert_same_forward_as_a_fresh_copy(model)
        logits = model.forward(x)
        bad = x.copy()
        bad[0, 0] = np.nan
        with pytest.raises(ValueError, match="x"):
            model.train_step(bad, y, optimizer=opt)
        np.testing.assert_array_equal(model.forward(x), logits)
        model.train_step(x, y, optimizer=opt)
        assert_same_forward_as_a_fresh_copy(model)
    finally:
        fm.set_num_threads(saved)


_ENV_PROBE = (
    "import os, fastmlp; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "passive None"),
        ({"OMP_WAIT_POLICY": "active"}, "active None"),
        ({"GOMP_SPINCOUNT": "10000"}, "None 10000"),
    ],
)
def test_openmp_wait_policy_default_respects_the_user(env, expected):
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run(
        [sys.executable, "-c", _ENV_PROBE],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == expected


def test_bce_counts_take_a_target_of_one_half_as_zero(rng):
    """A BCE target counts as 1 iff it is > 0.5: soft targets of exactly 0.5 are class 0, so a
    logit is a hit iff it is <= 0, as (logits > 0) == (y > 0.5) in NumPy."""
    model = fm.MLP([5, 7, 3], seed=0, loss="bce")
    x = rng.standard_normal((11, 5)).astype(np.float32)
    t = np.full((11, 3), 0.5, np.float32)
    logits = model.forward(x)
    assert 0 < (logits > 0).sum() < logits.size  # both outcomes occur
    model.train_step(x, t, optimizer=fm.optim.SGD(model, lr=0.0))
    assert model._take_train_counts() == (int(((logits > 0) == (t > 0.5)).sum()), t.size)


def test_label_counts_take_the_first_of_tied_logits(rng):
    """As np.argmax, the first of tied maxima is the prediction: with every weight 0 all logits
    tie and class 0 wins."""
    model = fm.MLP([5, 7, 3], seed=0)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    x = rng.standard_normal((11, 5)).astype(np.float32)
    model.train_step(x, np.zeros(11, np.int64), optimizer=fm.optim.SGD(model, lr=0.0))
    assert model._take_train_counts() == (11, 11)
