"""Activations, PReLU, column_sum and softmaxes: fastmlp.ops against fastmlp.reference.

Tolerances are written next to each assertion. The kernels compute in float32 (sums in float64);
the reference computes in float64 from the same float32 inputs, so the differences measured are
the kernels' own rounding errors (float32 unit roundoff u = 2^-24 ~ 6e-8).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastmlp import _core, ops, reference
from fastmlp.ops._activations import ACTIVATIONS, DEFAULT_ALPHA

NAMES = list(ACTIVATIONS)
# (1, 1), a single row, a single column, odd and prime sizes, and one large matrix that is split
# across threads by every kernel here.
SHAPES = [(1, 1), (1, 7), (7, 1), (3, 5), (13, 31), (97, 101), (2049, 1031)]
LARGE = (2049, 1031)
# A non-default alpha for each activation that takes one, so the parameter is really passed.
ALPHAS = {"leaky_relu": 0.2, "elu": 0.7, "prelu": 0.3}


def make_x(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 3.0) -> np.ndarray:
    """Both signs, magnitudes up to ~15 and exact zeros (the kink of relu/leaky/elu)."""
    x = (scale * rng.standard_normal(shape)).astype(np.float32)
    x.reshape(-1)[::5] = 0.0
    return x


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def results_for_threads(fn, threads=(1, 2, 3)):
    out = []
    for t in threads:
        _core.set_num_threads(t)
        out.append(fn())
    return out


# ---------------------------------------------------------------- the name table


def test_activation_table_matches_core_enum_and_reference():
    # The bindings build ACTIVATION_KINDS from the C++ enum itself.
    assert ACTIVATIONS == _core.ACTIVATION_KINDS
    assert set(DEFAULT_ALPHA) == {"leaky_relu", "elu", "prelu"}
    for name, alpha in DEFAULT_ALPHA.items():
        x = np.array([-2.0], dtype=np.float32)
        # The reference's own defaults agree with DEFAULT_ALPHA: f(-2) = -2 alpha (leaky, prelu).
        if name != "elu":
            assert reference.activation(x, name)[0] == pytest.approx(-2.0 * alpha, rel=1e-12)
    x = np.linspace(-3, 3, 7, dtype=np.float32)
    for name in NAMES:
        reference.activation(x, name)  # every name is known to the reference too


# ---------------------------------------------------------------- forward / backward vs reference

# Per-activation tolerance of the forward (rtol, atol):
# identity/relu are exact; leaky/prelu round alpha*x once (and alpha itself to float32): ~2u;
# elu/sigmoid/tanh use common/exp_math.h's exp/expm1 (<= 2.5 ulp, measured below): < 10u.
# atol 1e-38 (the smallest normal float32) only absorbs sigmoid values that underflow to
# subnormals, where float32 has no relative precision left.
FORWARD_TOL = {
    "identity": (0.0, 0.0),
    "relu": (0.0, 0.0),
    "leaky_relu": (2e-7, 0.0),
    "prelu": (2e-7, 0.0),
    "elu": (1e-6, 1e-38),
    "sigmoid": (1e-6, 1e-38),
    "tanh": (1e-6, 1e-38),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_activation_forward_matches_reference(rng, name, shape):
    x = make_x(rng, shape)
    alpha = ALPHAS.get(name)
    y = ops.activation(x, name, alpha)
    assert y.dtype == np.float32 and y.shape == shape
    rtol, atol = FORWARD_TOL[name]
    np.testing.assert_allclose(y, reference.activation(x, name, alpha), rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_activation_backward_matches_reference(rng, name, shape):
    x = make_x(rng, shape)
    dy = rng.uniform(-1.0, 1.0, shape).astype(np.float32)  # |dy| <= 1 keeps atol meaningful
    alpha = ALPHAS.get(name)
    y = ops.activation(x, name, alpha)
    dx = ops.activation_backward(x, y, dy, name, alpha)
    assert dx.dtype == np.float32 and dx.shape == shape
    ref = reference.activation_backward(x, None, dy, name, alpha)
    # The kernel computes sigmoid' = y(1 - y) and tanh' = 1 - y^2 from the float32 output y,
    # whose absolute error near |y| = 1 is ~1-2 ulp(1) ~ 1e-7;
    # these expressions cancel to small values there, so the error is absolute: <= ~4e-7 * |dy|.
    # rtol 1e-5 covers the relative error (a few u) where there is no cancellation.
    np.testing.assert_allclose(dx, ref, rtol=1e-5, atol=1e-6)


def test_activation_shapes_any_ndim(rng):
    # Elementwise activations accept any shape: 1-d, 3-d and empty. (0-d comes back as (1,):
    # _checks.as_float_input uses np.ascontiguousarray, which returns ndim >= 1.)
    for shape in [(5,), (2, 3, 4), (0, 3)]:
        x = rng.standard_normal(shape).astype(np.float32)
        y = ops.relu(x)
        assert y.shape == x.shape
        np.testing.assert_array_equal(y, np.maximum(x, 0))  # relu is exact


def test_convenience_functions_match_activation(rng):
    x = make_x(rng, (13, 17))
    # Same kernel underneath: bit-identical.
    np.testing.assert_array_equal(ops.relu(x), ops.activation(x, "relu"))
    np.testing.assert_array_equal(ops.leaky_relu(x), ops.activation(x, "leaky_relu", 0.01))
    np.testing.assert_array_equal(ops.leaky_relu(x, 0.3), ops.activation(x, "leaky_relu", 0.3))
    np.testing.assert_array_equal(ops.elu(x), ops.activation(x, "elu", 1.0))
    np.testing.assert_array_equal(ops.elu(x, 0.5), ops.activation(x, "elu", 0.5))
    np.testing.assert_array_equal(ops.sigmoid(x), ops.activation(x, "sigmoid"))
    np.testing.assert_array_equal(ops.tanh(x), ops.activation(x, "tanh"))
    np.testing.assert_array_equal(ops.identity(x), x)


def test_float64_and_strided_inputs_are_converted(rng):
    x64 = rng.standard_normal((9, 14))
    y = ops.sigmoid(x64[:, ::2])  # float64, non-contiguous
    assert y.dtype == np.float32 and y.shape == (9, 7)
    # Same as the float32 contiguous input: the conversion is the only difference.
    np.testing.assert_array_equal(y, ops.sigmoid(np.ascontiguousarray(x64[:, ::2], np.float32)))


def test_kinks_at_zero_take_the_left_derivative():
    x = np.array([[-1.0, -0.0, 0.0, 1.0]], dtype=np.float32)
    dy = np.ones_like(x)
    expected = {
        # name: (f(x), f'(x)) exactly, for x = -1, -0, 0, 1
        "relu": ([0, 0, 0, 1], [0, 0, 0, 1]),
        "leaky_relu": ([-0.25, 0, 0, 1], [0.25, 0.25, 0.25, 1]),
        "prelu": ([-0.25, 0, 0, 1], [0.25, 0.25, 0.25, 1]),
        "elu": ([np.expm1(np.float32(-1)) * 0.5, 0, 0, 1], [None, 0.5, 0.5, 1]),
    }
    for name, (f, df) in expected.items():
        alpha = {"relu": None, "elu": 0.5}.get(name, 0.25)
        y = ops.activation(x, name, alpha)
        dx = ops.activation_backward(x, y, dy, name, alpha)
        # rtol 1e-6: elu(-1) goes through expm1f; the other entries are exact.
        np.testing.assert_allclose(y[0], np.array(f, dtype=np.float64), rtol=1e-6, atol=0)
        for got, want in zip(dx[0], df):
            if want is not None:
                assert got == want, name  # exact: a branch picks 1, 0 or alpha
        # The reference agrees at the kink.
        ref_df = reference.activation_derivative(x, name, alpha)[0]
        assert list(ref_df[1:]) == [w for w in df[1:]], name


def test_relu_backward_selects_as_pytorch():
    """relu's backward is PyTorch's threshold_backward, ``x <= 0 ? 0 : dy``: a dead unit passes
    no gradient even when dy is inf or NaN (``dy * 0`` gave NaN), a NaN input passes dy on
    (``dy * [x > 0]`` gave 0). 40 elements: the AVX2 loop and its scalar tail both see each case.
    (torch.relu(x).backward(dy) gives the same values.)"""
    x = np.tile(np.array([np.nan, -1.0, -1.0, 0.0, -0.0, 2.0, np.inf, -np.inf], np.float32), 5)
    dy = np.tile(np.array([0.5, np.inf, np.nan, -np.inf, 3.0, -2.0, 1.0, 7.0], np.float32), 5)
    expected = np.tile(np.array([0.5, 0, 0, 0, 0, -2.0, 1.0, 0], np.float32), 5)
    for got in (
        ops.activation_backward(x, ops.relu(x), dy, "relu"),
        ops.activation_backward(x[None, :35], ops.relu(x[None, :35]), dy[None, :35], "relu")[0],
        reference.activation_backward(x, None, dy, "relu"),
    ):
        np.testing.assert_array_equal(got, expected[: got.shape[-1]])
        assert not np.signbit(got[got == 0]).any()  # +0, as a select gives (dy * 0 could be -0)
    # The fused linear forward (relu in the GEMM epilogue) and the reference agree that relu
    # passes NaN; 40 columns: full 16-column tiles and an edge tile.
    w = np.tile(np.array([[np.nan, -1.0, 2.0, -0.0, 3.0]], np.float32), (1, 8))
    fused = ops.linear(np.ones((1, 1), np.float32), w, activation="relu")
    relu_z = reference.linear(np.ones((1, 1)), w.astype(np.float64), activation="relu")
    np.testing.assert_array_equal(fused, relu_z)
    assert np.isnan(relu_z[0, ::5]).all() and np.isnan(fused[0, ::5]).all()


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "elu"])
def test_large_inputs_stay_finite(name):
    x = np.array([[-1000.0, -100.0, -88.0, -20.0, 0.0, 20.0, 88.0, 100.0, 1000.0]], np.float32)
    y = ops.activation(x, name)
    dx = ops.activation_backward(x, y, np.ones_like(x), name)
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    # Saturation values, exact in float32 at |x| = 1000.
    lo, hi = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "elu": (-1.0, 1000.0)}[name]
    assert y[0, 0] == lo and y[0, -1] == hi
    if name != "elu":
        assert dx[0, 0] == 0.0 and dx[0, -1] == 0.0  # flat tails: exactly 0 derivative
    # And still against the reference (tolerances as in the forward/backward tests).
    np.testing.assert_allclose(y, reference.activation(x, name), rtol=1e-6, atol=1e-38)
    np.testing.assert_allclose(dx, reference.activation_derivative(x, name), rtol=1e-5, atol=1e-6)


def every_kth_float32(lo: float, hi: float, k: int) -> np.ndarray:
    """Every k-th float32 of [lo, hi] in order (both signs, the subnormals and zeros included)."""

    def rank(v: float) -> int:  # the float's position on the number line, as an integer
        i = int(np.array(v, np.float32).view(np.int32))
        return i if i >= 0 else -(i & 0x7FFFFFFF)

    r = np.arange(rank(lo), rank(hi) + 1, k, dtype=np.int64)
    return np.where(r < 0, (-r) | 0x80000000, r).astype(np.uint32).view(np.float32)


def ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the last place of exact rounded to float32."""
    ulp = np.maximum(np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64), 2.0**-149)
    return np.abs(got.astype(np.float64) - exact) / ulp


@pytest.mark.parametrize(
    "name, exact, bound",
    [
        ("elu", lambda x: np.where(x > 0, x, np.expm1(x)), 1.05),
        ("sigmoid", lambda x: np.exp(-np.logaddexp(0.0, -x)), 2.5),
        ("tanh", np.tanh, 2.5),
    ],
)
def test_exponential_activations_are_accurate_to_a_few_ulps(name, exact, bound):
    # Every 997th float32 from -110 to 100 (~2.2 million: both overflow ends, the subnormals).
    # common/exp_math.h's functions over all 2^32 floats (a one-off sweep): elu' 1.01 ulp,
    # sigmoid 2.40, tanh 2.42 (elu 0.83 over every 97th); the C library's are ~1 ulp, 5-20x slower.
    x = every_kth_float32(-110.0, 100.0, 997)[None, :]
    x64 = x.astype(np.float64)
    y = ops.activation(x, name)
    with np.errstate(over="ignore"):
        assert ulps(y, exact(x64)).max() <= bound
        if name == "elu":
            dx = ops.activation_backward(x, y, np.ones_like(x), "elu")
            assert ulps(dx, np.where(x64 > 0, 1.0, np.exp(x64))).max() <= 1.05
    # The special values: NaN through, the signed zeros kept, the saturated ends exact.
    special = np.array([[np.nan, -0.0, 0.0, -np.inf, np.inf]], np.float32)
    ys = ops.activation(special, name)
    assert np.isnan(ys[0, 0])
    if name != "sigmoid":
        np.testing.assert_array_equal(np.signbit(ys[0, 1:3]), [True, False])
    lo, hi = {"elu": (-1.0, np.inf), "sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}[name]
    np.testing.assert_array_equal(ys[0, 3:], [lo, hi])


def test_elu_derivative_is_accurate_in_its_tail():
    # f'(x) = alpha e^x for x <= 0, to a few ulps relative even where it is tiny: computed from
    # f(x) + alpha it cancels to one rounding step of alpha (4e-4 relative error at x = -10, 0 from
    # x = -20).
    for cols in (5, 67):
        x = np.linspace(-30.0, -5.0, cols, dtype=np.float32)[None, :]
        for alpha in (1.0, 0.7):
            dx = ops.activation_backward(x, ops.elu(x, alpha), np.ones_like(x), "elu", alpha)
            exact = reference.activation_derivative(x, "elu", alpha)
            assert (dx > 0).all()
            np.testing.assert_allclose(dx, exact, rtol=1e-6, atol=0)


# ---------------------------------------------------------------- finite differences (reference)


def central_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f(x) / dx elementwise for an elementwise f, in float64."""
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("name", NAMES)
def test_reference_derivative_by_finite_differences(rng, name):
    x = rng.uniform(-6.0, 6.0, 400)
    x = x[np.abs(x) > 1e-3]  # away from the kink at 0, where f is not differentiable
    alpha = ALPHAS.get(name)
    numeric = central_difference(lambda v: reference.activation(v, name, alpha), x)
    analytic = reference.activation_derivative(x, name, alpha)
    # Central difference in float64 with h = 1e-6: truncation h^2 |f'''| / 6 < 1e-12, rounding
    # ~ 1e-16 |f| / h < 1e-9 for |f| <= 6.
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "prelu", "elu"])
def test_reference_derivative_at_zero_is_the_left_difference(name):
    h = 1e-7
    alpha = ALPHAS.get(name)
    left = (
        reference.activation(np.array([0.0]), name, alpha)
        - reference.activation(np.array([-h]), name, alpha)
    ) / h
    # One-sided difference: the elu curve contributes an O(h) = 1e-7 truncation error.
    np.testing.assert_allclose(
        reference.activation_derivative(np.array([0.0]), name, alpha), left, rtol=0, atol=1e-6
    )


def test_reference_prelu_gradients_by_finite_differences(rng):
    h = 1e-6
    x = rng.standard_normal((6, 5))
    x[np.abs(x) < 1e-3] = 0.5  # away from the kink
    dy = rng.standard_normal((6, 5))
    for slope in (np.array([0.3]), rng.uniform(-0.5, 0.5, 5)):
        dx, dslope = reference.prelu_backward(x, slope, dy)

        def loss(xv, sv):
            return float((dy * reference.prelu(xv, sv)).sum())

        num_dslope = np.array(
            [
                (loss(x, slope + h * e) - loss(x, slope - h * e)) / (2 * h)
                for e in np.eye(slope.size)
            ]
        )
        num_dx = np.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            e = np.zeros_like(x)
            e[idx] = h
            num_dx[idx] = (loss(x + e, slope) - loss(x - e, slope)) / (2 * h)
        # L is linear in slope and piecewise linear in x: only rounding error, ~1e-16 |L| / h.
        np.testing.assert_allclose(dslope, num_dslope, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(dx, num_dx, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
def test_reference_softmax_backward_by_finite_differences(rng, which):
    h = 1e-6
    x = rng.standard_normal((4, 7)) * 2
    g = rng.standard_normal((4, 7))
    fwd = getattr(reference, which)
    bwd = getattr(reference, which + "_backward")
    analytic = bwd(fwd(x), g)
    numeric = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        numeric[idx] = ((g * fwd(x + e)).sum() - (g * fwd(x - e)).sum()) / (2 * h)
    # Smooth function, float64: truncation ~h^2 < 1e-11, rounding ~1e-16 * 10 / h = 1e-9.
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- PReLU


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_column", [False, True])
def test_prelu_matches_reference(rng, shape, per_column):
    x = make_x(rng, shape)
    dy = rng.standard_normal(shape).astype(np.float32)
    cols = shape[1]
    slope = (
        rng.uniform(-0.5, 0.5, cols).astype(np.float32)
        if per_column
        else np.array([0.3], np.float32)
    )
    y = ops.prelu(x, slope)
    # One float32 rounding of slope * x: rtol 2u.
    np.testing.assert_allclose(y, reference.prelu(x, slope), rtol=2e-7, atol=0)
    dx, dslope = ops.prelu_backward(x, slope, dy)
    ref_dx, ref_dslope = reference.prelu_backward(x, slope, dy)
    assert dx.dtype == np.float32 and dslope.dtype == np.float32 and dslope.shape == slope.shape
    np.testing.assert_allclose(dx, ref_dx, rtol=2e-7, atol=0)  # one rounding of dy * slope
    # dslope: products float*float are exact in float64 and summed in float64, so the only
    # sizeable error is the final rounding to float32 (u relative) plus summation-order error
    # ~ n 2^-53 sum|terms|, covered by atol.
    terms = np.abs(dy.astype(np.float64) * np.minimum(x, 0))
    scale = terms.sum(axis=0) if per_column else terms.sum()
    np.testing.assert_allclose(dslope, ref_dslope, rtol=2e-7, atol=1e-12 * np.max(scale) + 1e-30)


def test_prelu_equals_leaky_relu_for_a_shared_slope(rng):
    x = make_x(rng, (31, 17))
    # Same formula, same float32 rounding: bit-identical.
    np.testing.assert_array_equal(
        ops.prelu(x, np.array([0.2], np.float32)), ops.leaky_relu(x, np.float32(0.2))
    )


# ---------------------------------------------------------------- column_sum


@pytest.mark.parametrize("shape", [*SHAPES, (0, 5), (5000, 3)])
def test_column_sum_matches_reference(rng, shape):
    x = make_x(rng, shape)
    out = ops.column_sum(x)
    assert out.dtype == np.float32 and out.shape == (shape[1],)
    # Summed in float64 (error ~ rows * 2^-53 * sum|x|, covered by atol), then rounded once to
    # float32 (rtol u).
    atol = 1e-12 * float(np.abs(x).sum(axis=0).max(initial=0.0)) + 1e-30
    np.testing.assert_allclose(out, reference.column_sum(x), rtol=1e-7, atol=atol)


# ---------------------------------------------------------------- softmax / log_softmax


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_matches_reference(rng, shape):
    x = make_x(rng, shape)
    y = ops.softmax(x)
    # p_j = exp(x_j - m) / s: x_j - m rounds with relative error u, which becomes an error of
    # |x_j - m| u in p_j relative; it matters only where p_j is tiny, so relative 1e-5 for the
    # probabilities that matter and 1e-7 absolute (float32 resolution near 1 is 6e-8).
    np.testing.assert_allclose(y, reference.softmax(x), rtol=1e-5, atol=1e-7)
    # Rows sum to 1 up to cols float32 roundings of ~u each.
    np.testing.assert_allclose(y.sum(axis=1, dtype=np.float64), 1.0, rtol=0, atol=1e-6)
    ly = ops.log_softmax(x)
    # log p = (x_j - m) - log s: absolute error ~u (|x_j - m| + log s), relative 1e-6 of |log p|.
    np.testing.assert_allclose(ly, reference.log_softmax(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_backward_matches_reference(rng, shape):
    x = make_x(rng, shape)
    dy = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    y = ops.softmax(x)
    dx = ops.softmax_backward(y, dy)
    # Against the reference applied to the same float32 y: y_j (dy_j - dot) with dot in float64;
    # the rounding of dy_j - dot (|.| <= 2) gives absolute error <= ~2u y_j: atol 1e-7 suffices
    # because y_j <= 1, rtol 1e-5 for the rest.
    np.testing.assert_allclose(dx, reference.softmax_backward(y, dy), rtol=1e-5, atol=1e-7)
    ly = ops.log_softmax(x)
    ldx = ops.log_softmax_backward(ly, dy)
    # dy_j - exp(y_j) * sum(dy): sum(dy) ~ sqrt(cols) in size, exp's relative error ~1u, so the
    # absolute error is ~2u |sum(dy)| exp(y_j) + u |dy|: 1e-6 covers sum(dy) up to ~8 (cols <= 1031
    # with uniform dy gives |sum| < 60, hence scaled by it).
    atol = 1e-6 * max(1.0, float(np.abs(dy.sum(axis=1, dtype=np.float64)).max()))
    np.testing.assert_allclose(ldx, reference.log_softmax_backward(ly, dy), rtol=1e-5, atol=atol)


def test_softmax_is_stable_for_huge_logits():
    x = np.array(
        [[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [1e30, 1e30, -1e30]], np.float32
    )
    y = ops.softmax(x)
    ly = ops.log_softmax(x)
    assert np.isfinite(y).all() and np.isfinite(ly).all()
    # Exact: the max term is exp(0) = 1 and the others underflow to 0 (or are equal).
    expected = np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]], np.float32)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_allclose(ly[0], [0.0, -2000.0, -1000.0], rtol=1e-7, atol=0)
    np.testing.assert_allclose(ly[1], np.log(1 / 3), rtol=1e-6)  # three equal terms
    np.testing.assert_allclose(ly, reference.log_softmax(x), rtol=1e-6, atol=1e-6)


def test_softmax_of_empty_rows_or_columns():
    for shape in [(0, 4), (3, 0)]:
        x = np.zeros(shape, np.float32)
        assert ops.softmax(x).shape == shape and ops.log_softmax(x).shape == shape


# ---------------------------------------------------------------- thread-count independence


def test_results_do_not_depend_on_thread_count(rng, restore_threads):
    x = make_x(rng, LARGE)
    dy = rng.standard_normal(LARGE).astype(np.float32)
    slope = rng.uniform(-0.5, 0.5, LARGE[1]).astype(np.float32)
    cases = {name: lambda n=name: ops.activation(x, n) for name in NAMES}
    cases.update(
        {f"{name}'": lambda n=name: ops.activation_backward(x, x, dy, n) for name in NAMES}
    )
    cases["prelu_forward"] = lambda: ops.prelu(x, slope)
    cases["prelu_backward"] = lambda: ops.prelu_backward(x, slope, dy)
    cases["prelu_backward_shared"] = lambda: ops.prelu_backward(x, slope[:1], dy)
    cases["column_sum"] = lambda: ops.column_sum(x)
    cases["column_sum_tall"] = lambda: ops.column_sum(x.reshape(-1, 3)[:100_000])
    cases["softmax"] = lambda: ops.softmax(x)
    cases["log_softmax"] = lambda: ops.log_softmax(x)
    cases["softmax_backward"] = lambda: ops.softmax_backward(x, dy)
    cases["log_softmax_backward"] = lambda: ops.log_softmax_backward(x, dy)
    for label, fn in cases.items():
        first, *others = (as_tuple(r) for r in results_for_threads(fn))
        for other in others:
            for a, b in zip(first, other):
                np.testing.assert_array_equal(a, b, err_msg=label)  # bit-identical: no tolerance


# ---------------------------------------------------------------- bad input


def test_unknown_activation_name():
    x = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"^activation: unknown 'foo'; known: identity, relu"):
        ops.activation(x, "foo")
    with pytest.raises(ValueError, match=r"^activation: unknown 'foo'"):
        ops.activation_backward(x, x, x, "foo")
    with pytest.raises(ValueError, match=r"^activation: unknown 'foo'"):
        reference.activation(x, "foo")
    with pytest.raises(ValueError, match=r"^kind: unknown activation enum value 7"):
        _core.activation_forward(x, 7, 0.0)
    # Not a name at all: TypeError, as ops.linear gives (was ValueError "unknown None").
    for call in (
        lambda: ops.activation(x, None),
        lambda: ops.activation_backward(x, x, x, 3),
        lambda: ops.linear(x, x, activation=None),
    ):
        with pytest.raises(TypeError, match=r"^activation: expected a name \(str\), got"):
            call()


@pytest.mark.parametrize(
    ("name", "alpha", "error", "pattern"),
    [
        ("leaky_relu", -0.1, ValueError, r"^alpha: leaky_relu expects alpha >= 0"),
        ("elu", 0.0, ValueError, r"^alpha: elu expects alpha > 0"),
        ("elu", -1.0, ValueError, r"^alpha: elu expects alpha > 0"),
        ("leaky_relu", float("nan"), ValueError, r"^alpha: expected a finite value"),
        ("prelu", float("inf"), ValueError, r"^alpha: expected a finite value"),
        ("elu", 1e39, ValueError, r"^alpha: expected a finite value, got 1e\+39 \(inf in float32"),
        ("relu", 0.1, ValueError, r"^alpha: activation 'relu' takes no alpha"),
        ("sigmoid", 1.0, ValueError, r"^alpha: activation 'sigmoid' takes no alpha"),
        ("leaky_relu", "0.1", TypeError, r"^alpha: expected a real number"),
    ],
)
def test_bad_alpha(name, alpha, error, pattern):
    x = np.zeros((2, 2), np.float32)
    with pytest.raises(error, match=pattern):
        ops.activation(x, name, alpha)
    with pytest.raises(error, match=pattern):
        ops.activation_backward(x, x, x, name, alpha)


def test_zero_alpha_leaky_relu_is_relu(rng):
    x = make_x(rng, (5, 6))
    np.testing.assert_array_equal(ops.leaky_relu(x, 0.0), ops.relu(x))  # exact


def test_wrong_dtype_raises_type_error():
    xi = np.ones((3, 4), dtype=np.int64)
    xf = np.ones((3, 4), dtype=np.float32)
    for call in [
        lambda: ops.relu(xi),
        lambda: ops.activation_backward(xf, xf, xi, "relu"),
        lambda: ops.prelu(xi, np.ones(1, np.float32)),
        lambda: ops.column_sum(xi),
        lambda: ops.softmax(xi),
        lambda: ops.log_softmax(xi),
        lambda: ops.softmax_backward(xf, xi),
    ]:
        with pytest.raises(TypeError, match=r"^(x|dy): expected a floating-point array"):
            call()
    with pytest.raises(TypeError, match=r"^slope: expected a floating-point array"):
        ops.prelu(xf, np.ones(1, np.int32))
    # The bindings check again, for callers of _core: float64 is refused there.
    with pytest.raises(TypeError, match=r"^x: expected a float32 array, got float64"):
        _core.activation_forward(np.ones(3), 1, 0.0)
    with pytest.raises(TypeError, match=r"^x: expected a float32 array"):
        _core.softmax_forward(np.ones((2, 2)))


def test_wrong_ndim_raises_value_error():
    x1 = np.ones(5, np.float32)
    x3 = np.ones((2, 3, 4), np.float32)
    for call, pattern in [
        (lambda: ops.softmax(x1), r"^x: expected a 2-D array, got shape \(5,\)"),
        (lambda: ops.log_softmax(x3), r"^x: expected a 2-D array"),
        (lambda: ops.column_sum(x1), r"^x: expected a 2-D array"),
        (lambda: ops.prelu(x3, np.ones(1, np.float32)), r"^x: expected a 2-D array"),
        (lambda: ops.softmax_backward(x1, x1), r"^y: expected a 2-D array"),
        (lambda: _core.column_sum(x1), r"^x: expected a 2-D array"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            call()


def test_mismatched_shapes_raise_value_error():
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"^dy: expected the shape of x \(3, 4\), got \(4, 3\)"):
        ops.activation_backward(a, a, b, "relu")
    with pytest.raises(ValueError, match=r"^y: expected the shape of x"):
        ops.activation_backward(a, b, a, "sigmoid")
    with pytest.raises(ValueError, match=r"^dy: expected the shape of y"):
        ops.softmax_backward(a, b)
    with pytest.raises(ValueError, match=r"^dy: expected the shape of y"):
        ops.log_softmax_backward(a, b)
    with pytest.raises(ValueError, match=r"^dy: expected the shape of x"):
        ops.prelu_backward(a, np.ones(1, np.float32), b)
    # Same checks in the bindings.
    with pytest.raises(ValueError, match=r"^dy: expected the shape of x"):
        _core.activation_backward(a, a, b, 1, 0.0)
    with pytest.raises(ValueError, match=r"^dy: expected the shape of y"):
        _core.softmax_backward(a, b)


@pytest.mark.parametrize("slope_shape", [(2,), (5,), (1, 4), ()])
def test_bad_slope_shape(slope_shape):
    x = np.ones((3, 4), np.float32)
    slope = np.ones(slope_shape, np.float32)
    with pytest.raises(ValueError, match=r"^slope: expected"):
        ops.prelu(x, slope)
    with pytest.raises(ValueError, match=r"^slope: expected"):
        ops.prelu_backward(x, slope, x)
    if len(slope_shape) == 1:
        with pytest.raises(ValueError, match=r"^slope: expected shape \(1,\) or \(4,\)"):
            _core.prelu_forward(x, slope)


# ---------------------------------------------------------------- SIMD and generic paths

_PATHS_SCRIPT = """
import sys
import numpy as np
from fastmlp import _core, ops
rng = np.random.default_rng(7)
x = (3 * rng.standard_normal((37, 61))).astype(np.float32)
x.reshape(-1)[::5] = 0.0
x[0, :4] = [np.nan, np.inf, -np.inf, -0.0]
dy = rng.standard_normal(x.shape).astype(np.float32)
dy[0, :4] = [0.5, np.nan, np.inf, np.inf]  # non-finite gradients into NaN, inf, -inf, -0
out = {"simd": np.array(_core._build_info()["simd"])}
for name in ops.ACTIVATIONS:
    y = ops.activation(x, name)
    out[name] = y
    out[name + "_backward"] = ops.activation_backward(x, y, dy, name)
# Non-default alphas (elu's default is 1, so a path that dropped elu's alpha for 1 went unseen).
for name, alpha in [("leaky_relu", 0.37), ("prelu", 0.37), ("elu", 0.37), ("elu", 1.7)]:
    y = ops.activation(x, name, alpha)
    out[f"{name}_{alpha}"] = y
    out[f"{name}_{alpha}_backward"] = ops.activation_backward(x, y, dy, name, alpha)
# The exponentials (common/exp_math.h vs cpu/exp_avx2.h) over their whole range: clamps, the
# overflow and underflow ends, subnormals, and rows with and without a scalar tail.
wide = np.concatenate([np.linspace(-110, 100, 4003), np.geomspace(1e-45, 1e-30, 50),
                       -np.geomspace(1e-45, 1e-30, 50), [88.72, 88.73, 89.0, -87.5, -103.9]])
wide = wide.astype(np.float32)[None, :]
for name in ("elu", "sigmoid", "tanh"):
    out["wide_" + name] = ops.activation(wide, name)
    out["wide_" + name + "_backward"] = ops.activation_backward(
        wide, out["wide_" + name], np.ones_like(wide), name)
    if name == "elu":
        out["wide_elu_1.7"] = ops.activation(wide, "elu", 1.7)
        out["wide_elu_1.7_backward"] = ops.activation_backward(
            wide, out["wide_elu_1.7"], np.ones_like(wide), "elu", 1.7)
    # Fused into the GEMM epilogue (16-column tiles and an edge tile) vs applied afterwards.
    a = rng.standard_normal((13, 29)).astype(np.float32)
    w = (3 * rng.standard_normal((29, 37))).astype(np.float32)
    b = rng.standard_normal(37).astype(np.float32)
    out["linear_fused_" + name] = ops.linear(a, w, b, activation=name)
    out["linear_then_" + name] = ops.activation(ops.linear(a, w, b), name)
for cols in (61, 5, 8):  # with a tail, narrower than one vector, exactly one vector
    xc, dyc = x[:, :cols].copy(), dy[:, :cols].copy()
    for label, slope in [("shared", np.array([0.3], np.float32)),
                         ("percol", rng.uniform(-0.5, 0.5, cols).astype(np.float32))]:
        out[f"prelu_{label}_{cols}"] = ops.prelu(xc, slope)
        dx, dslope = ops.prelu_backward(xc, slope, dyc)
        out[f"prelu_dx_{label}_{cols}"] = dx
        out[f"prelu_dslope_{label}_{cols}"] = dslope
# Column sums: blocks of 32 and 4 columns and single ones, over several row chunks, NaN and inf.
# In each 32-row chunk a large value and its negative two rows apart: the sum keeps the row
# between them only if it is added out of the order the scalar loop adds in.
xs = rng.standard_normal((300, 71)).astype(np.float32)
for r in range(0, 290, 32):
    xs[r] = 1e20
    xs[r + 2] = -1e20
xs[7, 3], xs[9, 40], xs[11, 70] = np.nan, np.inf, -np.inf
for cols in (71, 36, 3):
    out[f"column_sum_{cols}"] = ops.column_sum(xs[:, :cols].copy())
# Row softmaxes (common/exp_math.h's exp on eight lanes, masked row tails; 8-lane double sums).
# 19 rows: rows of at most 16 go eight at a time through log_softmax's transposed path, then 3.
for cols in (1, 5, 8, 9, 10, 16, 17, 300):
    xs = (4 * rng.standard_normal((19, cols))).astype(np.float32)
    # Rows the row max must treat alike on both paths: a NaN first or later, +inf, all -inf,
    # and both zeros as the max.
    xs[1, -1] = np.nan
    xs[2, 0] = np.nan
    xs[3, cols // 2] = np.inf
    xs[4] = -np.inf
    xs[5] = -np.abs(xs[5])
    xs[5, ::2] = 0.0
    xs[5, 1::3] = -0.0
    xs[6, 0], xs[6, -1] = np.inf, np.nan  # NaNs of both signs in one row (inf - inf is -NaN)
    xs[10, -1] = np.nan  # a NaN in the second group of eight
    # Terms 1 and e^-24..e^-31 (2^-35..2^-45): their double sum rounds, so its order shows in
    # the log of the sum.
    xs[7] = -np.linspace(24, 31, cols)
    xs[7, 0] = 0.0
    xs[12] = xs[7][::-1]
    dys = rng.standard_normal((19, cols)).astype(np.float32)
    for log in (False, True):
        key = f"{'log_' if log else ''}softmax_{cols}"
        out[key] = ops.log_softmax(xs) if log else ops.softmax(xs)
        backward = ops.log_softmax_backward if log else ops.softmax_backward
        out[key + "_backward"] = backward(out[key], dys)
    labels = rng.integers(0, cols, 19)
    for smoothing in (0.0, 0.1):
        loss, grad = ops.softmax_cross_entropy(xs, labels, label_smoothing=smoothing)
        out[f"ce_{cols}_{smoothing}"] = np.array([loss])
        out[f"ce_grad_{cols}_{smoothing}"] = grad
        loss_only, _ = ops.softmax_cross_entropy(xs, labels, label_smoothing=smoothing,
                                                 need_grad=False)
        out[f"ce_loss_only_{cols}_{smoothing}"] = np.array([loss_only])
# Binary cross-entropy (common/exp_math.h's exp and log1p on eight lanes, masked row tails), with
# NaN, infinities, signed zeros and large logits; per-row losses for the order of the row sums.
for cols in (1, 5, 8, 10, 17, 300):
    zb = (6 * rng.standard_normal((9, cols))).astype(np.float32)
    zb[0, 0], zb[1, -1], zb[2, 0], zb[3, -1] = np.nan, np.inf, -np.inf, -0.0
    zb[4] = 0.0
    zb[5] *= 40
    tb = rng.uniform(0, 1, (9, cols)).astype(np.float32)
    tb[6] = np.round(tb[6])
    loss, grad = ops.bce_with_logits(zb, tb)
    out[f"bce_{cols}"] = np.array([loss])  # NaN (row 0), the same NaN on both paths
    out[f"bce_grad_{cols}"] = grad
    out[f"bce_rows_{cols}"] = np.array(
        [ops.bce_with_logits(zb[i:i + 1], tb[i:i + 1], need_grad=False)[0] for i in range(4, 9)])
# Mean squared error (eight double lanes, masked row tails), with NaN, infinities and differences
# beyond float's range; per-row losses for the order of the row sums.
for cols in (1, 5, 8, 10, 17, 300):
    pm = (3 * rng.standard_normal((7, cols))).astype(np.float32)
    tm = rng.standard_normal((7, cols)).astype(np.float32)
    pm[0, 0], pm[1, -1], tm[2, 0] = np.nan, np.inf, -np.inf
    pm[3], tm[3] = 3e38, -3e38
    loss, grad = ops.mse_loss(pm, tm)
    out[f"mse_{cols}"] = np.array([loss])
    out[f"mse_grad_{cols}"] = grad
    out[f"mse_rows_{cols}"] = np.array(
        [ops.mse_loss(pm[i:i + 1], tm[i:i + 1], need_grad=False)[0] for i in range(3, 7)])
# One row at a time (a mean over rows rounds the last bits away), rows whose double sums of
# terms from 1 down to e^-80 are inexact, so that they show the order of the row sums.
for cols in (37, 300):
    xw = rng.uniform(-80, 0, (64, cols)).astype(np.float32)
    yw = rng.integers(0, cols, 64)
    out[f"ce_rows_{cols}"] = np.array(
        [ops.softmax_cross_entropy(xw[i:i + 1], yw[i:i + 1], need_grad=False)[0]
         for i in range(64)])
np.savez(sys.argv[1], **out)
"""


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32 if a.itemsize == 4 else np.uint64) if a.dtype.kind == "f" else a


def test_simd_and_generic_paths_are_bit_identical(run_simd_paths):
    results = run_simd_paths(_PATHS_SCRIPT)
    for path in ("native", "generic"):
        for name in ("elu", "sigmoid", "tanh"):
            # The GEMM epilogue applies the same function as the activation kernel.
            out = results[path]
            key = f"linear_fused_{name}"
            np.testing.assert_array_equal(bits(out[key]), bits(out[f"linear_then_{name}"]), key)
    for key, value in results["generic"].items():
        # (The matrix products themselves differ: the micro-kernels sum in different orders.)
        if key != "simd" and not key.startswith("linear_"):
            # Same float operations on both paths: bit-identical, NaN and the sign of 0 included.
            np.testing.assert_array_equal(bits(results["native"][key]), bits(value), err_msg=key)
