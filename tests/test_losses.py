"""Losses: fastmlp.ops against fastmlp.reference, gradient checks on the reference, bad input.

Tolerances are written next to each assertion. The kernels take float32 inputs, evaluate exp/log
in float32 where noted and accumulate in float64; the reference is float64 throughout on the same
float32 inputs. Gradients of mean losses carry a 1/N (or 1/(N F)) factor, so they are compared
after multiplying that factor back out, which makes an absolute tolerance mean the same thing
for every batch size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastmlp
from fastmlp import _core, ops, reference

# (1, 1), one row, one column, odd and prime sizes, and a large batch split across threads.
SHAPES = [(1, 1), (1, 10), (7, 1), (3, 5), (13, 31), (97, 101), (2049, 1031)]
LARGE = (2049, 1031)
LOSSES = ["softmax_cross_entropy", "mse_loss", "multiclass_hinge_loss", "bce_with_logits"]


def make_inputs(rng: np.random.Generator, name: str, shape: tuple[int, int], scale: float = 3.0):
    """(input, second argument) for the loss `name`: labels, targets in [0, 1] or real targets."""
    n, c = shape
    x = (scale * rng.standard_normal(shape)).astype(np.float32)
    if name in ("softmax_cross_entropy", "multiclass_hinge_loss"):
        return x, rng.integers(0, c, n)
    if name == "bce_with_logits":
        t = rng.uniform(0.0, 1.0, shape).astype(np.float32)
        t.reshape(-1)[::3] = np.round(t.reshape(-1)[::3])  # hard 0/1 targets too
        return x, t
    return x, rng.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- against the reference


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_softmax_cross_entropy_matches_reference(rng, shape, eps):
    z, y = make_inputs(rng, "softmax_cross_entropy", shape)
    loss, dz = ops.softmax_cross_entropy(z, y, label_smoothing=eps)
    ref_loss, ref_dz = reference.softmax_cross_entropy(z, y, label_smoothing=eps)
    assert isinstance(loss, float) and dz.dtype == np.float32 and dz.shape == shape
    # log s comes from a float64 sum of float32 exp terms (relative error ~u = 6e-8 each), the
    # rest is float64: the loss is within ~1e-7 absolute per row.
    assert loss == pytest.approx(ref_loss, rel=1e-6, abs=1e-6)
    # N * dz = p - q: p_j = exp(z_j - m) / s rounded a few times (relative ~3u), minus q_j:
    # absolute error < 1e-6 on values in [-1, 1].
    n = shape[0]
    np.testing.assert_allclose(n * dz, n * ref_dz, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_mse_matches_reference(rng, shape):
    p, t = make_inputs(rng, "mse_loss", shape)
    loss, dp = ops.mse_loss(p, t)
    ref_loss, ref_dp = reference.mse_loss(p, t)
    # Differences of float32 values are exact in float64 and squared/summed in float64: only the
    # summation order differs from the reference (~N F 2^-53 relative).
    assert loss == pytest.approx(ref_loss, rel=1e-10)
    # 2 (p - t) / (N F): (p - t) rounded to float32, times the float32 2/(N F): 2 roundings, 2u.
    np.testing.assert_allclose(dp, ref_dp, rtol=2.5e-7, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("margin", [1.0, 0.5, 2.0, 0.0])
def test_multiclass_hinge_matches_reference(rng, shape, margin):
    # Margins exactly representable in float32, so the kernel (float32 margin, float64 sums) and
    # the reference (float64) evaluate s_j - s_y + margin to the same float64 number.
    s, y = make_inputs(rng, "multiclass_hinge_loss", shape)
    loss, ds = ops.multiclass_hinge_loss(s, y, margin=margin)
    ref_loss, ref_ds = reference.multiclass_hinge_loss(s, y, margin=margin)
    # Same float64 margins; only the summation order differs.
    assert loss == pytest.approx(ref_loss, rel=1e-12, abs=1e-12)
    # Entries are k / N: one float32 rounding.
    np.testing.assert_allclose(ds, ref_ds, rtol=1.2e-7, atol=0)


@pytest.mark.parametrize("margin", [1.0, 0.5, 2.0, 0.0])
def test_multiclass_hinge_at_margins_of_exactly_zero(rng, margin):
    """At the kink, margin_ij == 0 counts as not violated ([margin_ij > 0], losses.cpp and the
    reference): scores on a grid of halves in [-2, 2] put many margins exactly on 0. Halves and
    the margins are exact in float32 and float64, every margin and loss term a multiple of 1/2
    and every sum exact; a batch of 64 makes k / 64 exact in float32: loss and gradient must
    equal the reference's exactly, whatever the summation order."""
    s = (rng.integers(-4, 5, (64, 10)) / 2).astype(np.float32)
    y = rng.integers(0, 10, 64)
    rows = np.arange(64)
    m = s.astype(np.float64) - s[rows, y][:, None] + margin
    m[rows, y] = np.nan
    assert (m == 0).sum() >= 20, "too few margins on the kink"  # 36 to 69 of 576 here
    loss, ds = ops.multiclass_hinge_loss(s, y, margin=margin)
    ref_loss, ref_ds = reference.multiclass_hinge_loss(s, y, margin=margin)
    assert loss == ref_loss
    np.testing.assert_array_equal(ds, ref_ds)
    # By hand: margins 0 (j = 1) and 0.5 (j = 2), label 0, margin 1: only j = 2 is violated.
    loss, ds = ops.multiclass_hinge_loss(np.array([[1.0, 0.0, 0.5]], np.float32), [0])
    assert loss == 0.5
    np.testing.assert_array_equal(ds, [[-1.0, 0.0, 1.0]])


@pytest.mark.parametrize("shape", SHAPES)
def test_bce_with_logits_matches_reference(rng, shape):
    z, t = make_inputs(rng, "bce_with_logits", shape)
    loss, dz = ops.bce_with_logits(z, t)
    ref_loss, ref_dz = reference.bce_with_logits(z, t)
    # Per element: max(z,0) - z t in float64 (exact), log1p(exp(-|z|)) in float32 (<= ~2u of a
    # value <= log 2): absolute error < 1e-7 per element, so < 1e-7 on the mean.
    assert loss == pytest.approx(ref_loss, rel=0, abs=1e-7)
    # N F dz = sigmoid(z) - t with sigmoid in float32 (a few u) minus t: absolute < 1e-6.
    size = z.size
    np.testing.assert_allclose(size * dz, size * ref_dz, rtol=0, atol=1e-6)


def test_bce_log_term_is_within_one_and_a_half_ulp():
    # One element per call (a mean rounds its terms' errors away): with t = 0 and z <= 0, or t = 1
    # and -z, the loss is log1p(exp(z)) in float32, common/exp_math.h's exp (~1 ulp) and log1p_unit
    # (0.87 ulp over every float in [0, 1], a one-off sweep): 1.27 ulp at most on these z.
    z = np.concatenate([-np.geomspace(1e-30, 104, 3000), np.linspace(-20, 0, 1000)])
    z = z.astype(np.float32)
    exact = np.log1p(np.exp(z.astype(np.float64)))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    for sign, target in ((1.0, 0.0), (-1.0, 1.0)):
        t = np.full((1, 1), target, np.float32)
        got = np.array(
            [ops.bce_with_logits(np.float32([[sign * v]]), t, need_grad=False)[0] for v in z]
        )
        assert (np.abs(got - exact) / ulp).max() <= 1.5


@pytest.mark.parametrize("name", LOSSES)
def test_need_grad_false_gives_the_same_loss_and_no_gradient(rng, name):
    x, other = make_inputs(rng, name, (37, 11))
    fn = getattr(ops, name)
    loss, _ = fn(x, other)
    loss_only, none = fn(x, other, need_grad=False)
    assert none is None
    assert loss_only == loss  # same arithmetic in the same order: bit-identical
    ref_loss, ref_none = getattr(reference, name)(x, other, need_grad=False)
    assert ref_none is None and ref_loss == pytest.approx(loss, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("device", [None, "cuda"])  # checked before the device is chosen
@pytest.mark.parametrize("value", ["False", "no", 0, 1, None], ids=repr)
@pytest.mark.parametrize("name", LOSSES)
def test_need_grad_takes_a_bool_only(rng, name, value, device):
    # bool("False") is True: a truthy flag used to compute the gradient nobody asked for.
    x, other = make_inputs(rng, name, (3, 4))
    fn = getattr(ops, name)
    with pytest.raises(
        TypeError, match=rf"^need_grad: expected True or False, got {type(value).__name__}$"
    ):
        fn(x, other, need_grad=value, device=device)
    loss, grad = fn(x, other, need_grad=np.True_)  # NumPy bools are bools
    assert grad is not None and grad.shape == x.shape
    assert fn(x, other, need_grad=np.False_) == (loss, None)


def test_cross_entropy_of_uniform_logits_is_log_c_to_the_last_bits():
    # Every exp term is exactly 1, so s = C and the loss is log C: the double log of the sum
    # (cpu/row_exp.h's log_of_sum, fdlibm's, < 1 ulp; four rows at a time with AVX2) against
    # NumPy's. One row per call and a batch of rows (the grouped path) give the same value.
    classes = np.unique(np.geomspace(1, 5000, 60).astype(int))
    for c in classes:
        z = np.zeros((1, c), np.float32)
        loss, _ = ops.softmax_cross_entropy(z, np.array([0]), need_grad=False)
        assert loss == pytest.approx(math.log(c), rel=3e-16, abs=3e-16), c
        batch, _ = ops.softmax_cross_entropy(np.zeros((7, c), np.float32), np.zeros(7, np.int64))
        assert batch == pytest.approx(math.log(c), rel=5e-16, abs=5e-16), c
        y = ops.log_softmax(np.zeros((5, c), np.float32))
        assert np.all(y == np.float32(-math.log(c))), c


def test_known_values():
    # Uniform logits: every p = 1/C, so the loss is ln C (float32 exp(0) = 1 exactly).
    z = np.zeros((4, 10), np.float32)
    loss, dz = ops.softmax_cross_entropy(z, np.arange(4))
    assert loss == pytest.approx(math.log(10), rel=1e-12)
    # dz = (p - onehot) / N with p = 0.1: float32 roundings of 0.1/4 and 0.9/4, < 1e-8.
    np.testing.assert_allclose(dz, (0.1 - np.eye(10)[:4]) / 4, rtol=0, atol=1e-8)
    # Full smoothing: q is uniform as well, so p - q = 0 exactly.
    loss1, dz1 = ops.softmax_cross_entropy(z, np.arange(4), label_smoothing=1.0)
    assert loss1 == pytest.approx(math.log(10), rel=1e-12)
    np.testing.assert_allclose(dz1, 0.0, atol=1e-9)  # 0.1/4 - 0.1/4 after float32 rounding
    # Course example (CS231n notes): scores [3.2, 5.1, -1.7], label 0, margin 1 -> loss 2.9.
    s = np.array([[3.2, 5.1, -1.7]], np.float32)
    loss, ds = ops.multiclass_hinge_loss(s, [0])
    assert loss == pytest.approx(2.9, abs=1e-6)  # float32 inputs: 1e-6 absolute
    np.testing.assert_array_equal(ds, [[-1.0, 1.0, 0.0]])
    # MSE: mean of squares.
    loss, dp = ops.mse_loss(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))
    assert loss == 2.5
    np.testing.assert_array_equal(dp, [[1.0, 2.0]])
    # BCE at z = 0: log 2 whatever the target.
    loss, _ = ops.bce_with_logits(np.zeros((2, 3)), np.full((2, 3), 0.3))
    assert loss == pytest.approx(math.log(2), rel=1e-7)


def test_single_class_is_zero_loss():
    z = np.array([[5.0], [-3.0]], np.float32)
    loss, dz = ops.softmax_cross_entropy(z, [0, 0])
    assert loss == 0.0 and not dz.any()  # p = 1 = q exactly
    loss, ds = ops.multiclass_hinge_loss(z, [0, 0])
    assert loss == 0.0 and not ds.any()  # no j != y


# ---------------------------------------------------------------- stability


def test_huge_logits_give_finite_loss_and_gradient():
    z = np.array(
        [[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0], [-1000.0, -1000.0, -1000.0]],
        np.float32,
    )
    y = np.array([1, 0, 2])
    loss, dz = ops.softmax_cross_entropy(z, y)
    assert math.isfinite(loss) and np.isfinite(dz).all()
    # Row 0: -log p_1 = 2000; row 1: 2000 + log 2; row 2: log 3. The float64 formula
    # log s + (m - z_y) keeps every digit of these.
    expected = (2000.0 + 2000.0 + math.log(2) + math.log(3)) / 3
    assert loss == pytest.approx(expected, rel=1e-7)
    ref_loss, ref_dz = reference.softmax_cross_entropy(z, y)
    assert loss == pytest.approx(ref_loss, rel=1e-7)
    np.testing.assert_allclose(3 * dz, 3 * ref_dz, rtol=0, atol=1e-6)  # as in the shape sweep
    for eps in (0.1, 1.0):
        loss, dz = ops.softmax_cross_entropy(z, y, label_smoothing=eps)
        ref_loss, ref_dz = reference.softmax_cross_entropy(z, y, label_smoothing=eps)
        assert math.isfinite(loss) and loss == pytest.approx(ref_loss, rel=1e-7)
        np.testing.assert_allclose(3 * dz, 3 * ref_dz, rtol=0, atol=1e-6)
    t = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0], [0.0, 1.0, 0.25]], np.float32)
    loss, dz = ops.bce_with_logits(z, t)
    ref_loss, ref_dz = reference.bce_with_logits(z, t)
    assert math.isfinite(loss) and np.isfinite(dz).all()
    assert loss == pytest.approx(ref_loss, rel=1e-7)  # the terms are exact multiples of 1000
    np.testing.assert_allclose(9 * dz, 9 * ref_dz, rtol=0, atol=1e-6)
    loss, ds = ops.multiclass_hinge_loss(z, y)
    ref_loss, ref_ds = reference.multiclass_hinge_loss(z, y)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(ds, ref_ds, rtol=1.2e-7)


@pytest.mark.parametrize(
    "scores",
    [[np.nan, 1.0, 2.0], [1.0, np.nan, 2.0], [np.inf, np.inf, 0.0]],
    ids=["nan-label-score", "nan-other-score", "inf-minus-inf"],
)
def test_hinge_propagates_nan_margins_as_the_reference(scores):
    """A NaN margin used to fail `m > 0` and drop out of the sum: loss 0 for a NaN score."""
    s = np.array([scores], np.float32)
    loss, ds = ops.multiclass_hinge_loss(s, [0])
    with np.errstate(invalid="ignore"):  # inf - inf
        ref_loss, ref_ds = reference.multiclass_hinge_loss(s, [0])
    assert math.isnan(loss) and math.isnan(ref_loss)
    np.testing.assert_array_equal(ds, ref_ds)  # NaN margins count as not violated


def test_mse_gradient_that_fits_float32_does_not_overflow():
    """p - t = 6e38 overflows float32, 2 (p - t) / 4 = 3e38 does not."""
    p = np.array([[3e38, 0, 0, 0]], np.float32)
    t = np.array([[-3e38, 0, 0, 0]], np.float32)
    _, dp = ops.mse_loss(p, t)
    _, ref_dp = reference.mse_loss(p, t)
    np.testing.assert_allclose(dp, ref_dp, rtol=1e-7)
    assert np.isfinite(dp).all()


def test_minus_inf_logit_off_the_label():
    """p_j = 0 for a class that is not the label costs nothing (the reference used to give
    0 * -inf = NaN); with label smoothing that class has q_j > 0 and the loss is inf."""
    z = np.array([[-np.inf, 0.0, 1.0]], np.float32)
    loss, dz = ops.softmax_cross_entropy(z, [2])
    ref_loss, ref_dz = reference.softmax_cross_entropy(z, [2])
    expected = math.log(1.0 + math.e) - 1.0  # -log(e / (1 + e))
    assert loss == pytest.approx(expected, rel=1e-7) and ref_loss == pytest.approx(expected)
    np.testing.assert_allclose(dz, ref_dz, rtol=1e-6, atol=1e-7)
    with np.errstate(invalid="ignore"):
        smoothed, _ = reference.softmax_cross_entropy(z, [2], label_smoothing=0.1)
    assert smoothed == math.inf
    assert ops.softmax_cross_entropy(z, [2], label_smoothing=0.1)[0] == math.inf


# ---------------------------------------------------------------- thread-count independence


@pytest.mark.parametrize("name", LOSSES)
def test_results_do_not_depend_on_thread_count(rng, restore_threads, name):
    x, other = make_inputs(rng, name, LARGE)
    fn = getattr(ops, name)
    results = []
    for threads in (1, 2, 3):
        _core.set_num_threads(threads)
        results.append(fn(x, other))
    for loss, grad in results[1:]:
        assert loss == results[0][0]  # bit-identical
        np.testing.assert_array_equal(grad, results[0][1])  # bit-identical


# ---------------------------------------------------------------- gradient checks (reference)


def numeric_gradient(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (f(x + e) - f(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (5, 3), (6, 7)])
def test_reference_gradient_by_finite_differences(rng, name, shape):
    x, other = make_inputs(rng, name, shape, scale=2.0)
    x = x.astype(np.float64)
    ref = getattr(reference, name)
    kwargs = [{}]
    if name == "softmax_cross_entropy":
        kwargs = [{"label_smoothing": 0.0}, {"label_smoothing": 0.3}]
    elif name == "multiclass_hinge_loss":
        kwargs = [{"margin": 1.0}, {"margin": 0.5}]
        # The hinge is not differentiable where a margin is 0: keep every margin >= 1e-3 away.
        rows = np.arange(shape[0])
        for kw in kwargs:
            m = x - x[rows, other][:, None] + kw["margin"]
            m[rows, other] = 1.0
            assert np.abs(m).min() > 1e-3, "pick another seed: a margin sits on the kink"
    for kw in kwargs:
        _, analytic = ref(x, other, **kw)
        numeric = numeric_gradient(lambda v, kw=kw: ref(v, other, **kw)[0], x)
        # Central differences in float64, h = 1e-6: truncation h^2 |f'''| / 6 < 1e-12, rounding
        # ~ 1e-16 |loss| / h < 1e-9 (the hinge is piecewise linear: rounding only).
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", LOSSES)
def test_wrong_dtype_raises_type_error(rng, name):
    x, other = make_inputs(rng, name, (4, 3))
    fn = getattr(ops, name)
    with pytest.raises(TypeError, match=r"^(logits|pred|scores): expected a floating-point"):
        fn(x.astype(np.int64), other)
    if name in ("mse_loss", "bce_with_logits"):
        with pytest.raises(TypeError, match=r"^(target|targets): expected a floating-point"):
            fn(x, np.ones((4, 3), np.int32))
    else:
        with pytest.raises(TypeError, match=r"^labels: expected integer class labels"):
            fn(x, other.astype(np.float64))  # float labels


@pytest.mark.parametrize("name", LOSSES)
def test_wrong_ndim_and_empty_batch_raise_value_error(rng, name):
    x, other = make_inputs(rng, name, (4, 3))
    fn = getattr(ops, name)
    with pytest.raises(ValueError, match=r"^(logits|pred|scores): expected a 2-D array"):
        fn(x[0], other)
    empty_other = other[:0]
    with pytest.raises(ValueError, match=r"^(logits|pred|scores): empty batch"):
        fn(x[:0], empty_other)
    with pytest.raises(ValueError, match=r"^(logits|pred|scores): expected at least one column"):
        fn(x[:, :0], other if other.ndim == 1 else other[:, :0])


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "multiclass_hinge_loss"])
@pytest.mark.parametrize("bad", [-1, 3, 100])
def test_labels_out_of_range(rng, name, bad):
    x, labels = make_inputs(rng, name, (4, 3))
    labels[2] = bad
    # int64 labels are checked by the binding (with the index), others before the conversion.
    with pytest.raises(
        ValueError, match=rf"^labels: label {bad} at index 2 is out of range \[0, 3\)"
    ):
        getattr(ops, name)(x, labels.astype(np.int64))
    with pytest.raises(ValueError, match=rf"^labels: label {bad} is out of range \[0, 3\)"):
        getattr(ops, name)(x, labels.astype(np.int32))
    # The binding checks too, for callers of _core.
    with pytest.raises(ValueError, match=rf"^labels: label {bad} at index 2 is out of range"):
        getattr(_core, name)(x, labels.astype(np.int64), 0.0 if "entropy" in name else 1.0, True)


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "multiclass_hinge_loss"])
def test_labels_wrong_length_or_shape(rng, name):
    x, labels = make_inputs(rng, name, (4, 3))
    fn = getattr(ops, name)
    with pytest.raises(ValueError, match=r"^labels: expected 4 labels \(one per row\), got 3"):
        fn(x, labels[:3])
    with pytest.raises(ValueError, match=r"^labels: expected a 1-D array"):
        fn(x, labels[:, None])
    with pytest.raises(TypeError, match=r"^labels: expected an? int64 array"):
        getattr(_core, name)(x, labels.astype(np.int32), 0.5, True)


@pytest.mark.parametrize("name", ["mse_loss", "bce_with_logits"])
def test_mismatched_shapes(rng, name):
    x, other = make_inputs(rng, name, (4, 3))
    fn = getattr(ops, name)
    arg = "target" if name == "mse_loss" else "targets"
    first = "pred" if name == "mse_loss" else "logits"
    with pytest.raises(ValueError, match=rf"^{arg}: expected the shape of {first} \(4, 3\)"):
        fn(x, other.T.copy())
    with pytest.raises(ValueError, match=rf"^{arg}: expected a 2-D array"):
        fn(x, other.reshape(-1))
    with pytest.raises(ValueError, match=rf"^{arg}: expected shape \(4, 3\)"):
        getattr(_core, name)(x, np.ascontiguousarray(other[:2]), True)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), float("inf"), -float("inf")])
def test_bce_targets_outside_unit_interval_or_non_finite(rng, bad):
    z, t = make_inputs(rng, "bce_with_logits", (4, 3))
    t[1, 2] = bad
    with pytest.raises(ValueError, match=r"^targets: expected values in \[0, 1\]"):
        ops.bce_with_logits(z, t)
    with pytest.raises(ValueError, match=r"^targets: expected values in \[0, 1\]"):
        ops.bce_with_logits(z, t, need_grad=False)


def test_messages_print_values_in_full(rng):
    # The C++ messages printed floats with a stream's 6 digits: "expected values in [0, 1], got 1"
    # for 1.0000001, a message that contradicts itself.
    z, t = make_inputs(rng, "bce_with_logits", (2, 3))
    t[0, 0] = np.float32(1.0000001)
    with pytest.raises(ValueError, match=r"got 1\.0000001 at"):
        ops.bce_with_logits(z, t)


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan")])
def test_bad_label_smoothing(rng, eps):
    z, y = make_inputs(rng, "softmax_cross_entropy", (4, 3))
    with pytest.raises(ValueError, match=r"^label_smoothing: expected a probability in \[0, 1\]"):
        ops.softmax_cross_entropy(z, y, label_smoothing=eps)
    with pytest.raises(ValueError, match=r"^label_smoothing: expected a value in \[0, 1\]"):
        _core.softmax_cross_entropy(z, y, eps, True)


@pytest.mark.parametrize(
    ("margin", "shown"),
    [(1e39, r"1e\+39"), (10**400, r"1e\+400"), (-(10**400), r"-1e\+400")],
    ids=["1e39", "10**400", "-10**400"],
)
def test_margin_beyond_float32_is_named_as_given(rng, margin, shown):
    # Checked in Python as the other ops' scalars: the C++ check saw only the float32 inf, and
    # float(10**400) raised a bare OverflowError.
    s, y = make_inputs(rng, "multiclass_hinge_loss", (4, 3))
    pattern = rf"^margin: expected a finite value, got {shown} \(inf in float32"
    with pytest.raises(ValueError, match=pattern):
        ops.multiclass_hinge_loss(s, y, margin=margin)


def test_label_smoothing_beyond_float_range(rng):
    z, y = make_inputs(rng, "softmax_cross_entropy", (4, 3))
    with pytest.raises(ValueError, match=r"^label_smoothing: expected a finite value, got 1e\+400"):
        ops.softmax_cross_entropy(z, y, label_smoothing=10**400)


def test_masked_labels_and_inputs_are_refused(rng):
    z, y = make_inputs(rng, "softmax_cross_entropy", (4, 3))
    masked_y = np.ma.masked_array(y, mask=[0, 1, 0, 0])
    with pytest.raises(TypeError, match=r"^labels: masked arrays are not supported"):
        ops.softmax_cross_entropy(z, masked_y)
    with pytest.raises(TypeError, match=r"^logits: masked arrays are not supported"):
        ops.softmax_cross_entropy(np.ma.masked_array(z), y)


@pytest.mark.parametrize("margin", [-1.0, float("nan"), float("inf")])
def test_bad_margin(rng, margin):
    s, y = make_inputs(rng, "multiclass_hinge_loss", (4, 3))
    # ">= 0" for a negative margin; NaN and inf are refused by check_real, as other ops' scalars.
    with pytest.raises(ValueError, match=r"^margin: expected a finite value"):
        ops.multiclass_hinge_loss(s, y, margin=margin)
    with pytest.raises(ValueError, match=r"^margin: expected a finite value >= 0"):
        _core.multiclass_hinge_loss(s, y, margin, True)


@pytest.mark.parametrize("classes", [1, 7, 10, 300, 1000])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_loss_alone_equals_the_loss_with_its_gradient(rng, classes, smoothing):
    # Both sum the same exp terms in the same double lanes (cpu/row_exp.h): the same bits.
    x = (5 * rng.standard_normal((33, classes))).astype(np.float32)
    y = rng.integers(0, classes, 33)
    with_grad, _ = ops.softmax_cross_entropy(x, y, label_smoothing=smoothing)
    alone, grad = ops.softmax_cross_entropy(x, y, label_smoothing=smoothing, need_grad=False)
    assert grad is None and alone == with_grad


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "multiclass_hinge_loss"])
def test_binding_itself_refuses_a_label_equal_to_the_class_count(rng, name):
    """The bindings refuse the label C with a message that ends at the range; the kernels' own
    re-check (which blames another thread for rewriting the labels) is not what catches it."""
    x, labels = make_inputs(rng, name, (4, 3))
    labels[2] = 3
    with pytest.raises(ValueError, match=r"^labels: label 3 at index 2 is out of range \[0, 3\)$"):
        getattr(_core, name)(x, labels, 0.0 if "entropy" in name else 1.0, True)
    # The engine's binding uses the same check.
    model = fastmlp.MLP([3, 5, 3], seed=0)
    with pytest.raises(ValueError, match=r"^y: label 3 at index 2 is out of range \[0, 3\)$"):
        model._net.loss_and_gradients(x, labels, 0 if "entropy" in name else 2)


@pytest.mark.parametrize("name", ["mse_loss", "bce_with_logits"])
def test_core_refuses_rows_without_columns(name):
    """The compiled losses refuse a (4, 0) input themselves (fastmlp.ops checks it first)."""
    empty_x, empty_other = np.zeros((4, 0), np.float32), np.zeros((4, 0), np.float32)
    with pytest.raises(ValueError, match=r"^(pred|logits): expected at least one column"):
        getattr(_core, name)(empty_x, empty_other, True)


@pytest.mark.parametrize("flat_index", [0, 5, 11])
def test_core_checks_every_bce_target(rng, flat_index):
    """The compiled BCE checks every target, the last one included."""
    x, t = make_inputs(rng, "bce_with_logits", (4, 3))
    t.reshape(-1)[flat_index] = 2.0
    with pytest.raises(
        ValueError,
        match=rf"^targets: expected values in \[0, 1\], got 2 at flat index {flat_index}$",
    ):
        _core.bce_with_logits(x, t, True)
