"""fastmlp.ops.matmul / linear (the fused CPU GEMM) against fastmlp.reference (float64).

Tolerance (``gemm_tol``): a float32 dot product of length k carries a rounding error of about
sqrt(k) * eps32 * sum_p |a_ip b_pj| (random-walk estimate; the worst case is k * eps32). We allow
twice that plus two eps32 for the final alpha/beta/bias roundings, elementwise against
scale_ij = |alpha| (|op(A)| @ |op(B)|)_ij + |beta C_ij| + |bias_j|. Dropping or doubling a single
term of a sum, or applying beta twice, exceeds it by orders of magnitude.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fastmlp import _core, ops, reference

EPS32 = float(np.finfo(np.float32).eps)
TRANS = [(False, False), (False, True), (True, False), (True, True)]
TRANS_IDS = ["NN", "NT", "TN", "TT"]
ACTIVATIONS = ["identity", "relu", "leaky_relu", "prelu", "elu", "sigmoid", "tanh"]
# Sizes around the block edges: MR = 6, NR = 16, MC = 144, KC = 384, NC = 4080.
AWKWARD = [
    (1, 1, 1),
    (5, 7, 17),
    (7, 17, 5),
    (17, 5, 7),
    (97, 143, 145),
    (143, 145, 257),
    (145, 257, 143),
    (257, 97, 255),
    (31, 47, 383),
    (47, 31, 385),
    (13, 200, 769),
    (1, 1031, 97),
    (1031, 1, 257),
    (5, 7, 1031),
    (97, 1031, 17),
    (7, 4097, 3),
]


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request: pytest.FixtureRequest):
    old = _core.get_num_threads()
    _core.set_num_threads(request.param)
    yield request.param
    _core.set_num_threads(old)


def random_operands(rng, m, n, k, trans_a, trans_b):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    return a, b


def gemm_tol(k: int, scale: np.ndarray) -> np.ndarray:
    # See the module docstring: 2 sqrt(k) eps32 for the sums, 2 eps32 for the final roundings.
    return (2.0 * np.sqrt(max(k, 1)) + 2.0) * EPS32 * scale


def abs_scale(a, b, trans_a, trans_b, alpha=1.0, beta=0.0, c=None, bias=None):
    op_a = np.abs(a.T if trans_a else a).astype(np.float64)
    op_b = np.abs(b.T if trans_b else b).astype(np.float64)
    scale = abs(alpha) * (op_a @ op_b)
    if beta != 0.0:
        scale = scale + abs(beta) * np.abs(c.astype(np.float64))
    if bias is not None:
        scale = scale + np.abs(bias.astype(np.float64))
    return scale


def assert_close(got: np.ndarray, want: np.ndarray, tol: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = np.abs(got.astype(np.float64) - want)
    bad = ~(err <= tol)  # also catches NaN
    if bad.any():
        idx = np.argwhere(bad)[:5]
        lines = [
            f"  {tuple(i)}: got {got[tuple(i)]!r}, want {want[tuple(i)]!r}, tol {tol[tuple(i)]:.3g}"
            for i in idx
        ]
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} mismatches\n" + "\n".join(lines))


def check_matmul(rng, m, n, k, trans_a, trans_b, alpha=1.0, beta=0.0):
    a, b = random_operands(rng, m, n, k, trans_a, trans_b)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    out = c0.copy()
    got = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, out=out)
    assert got is out
    want = reference.matmul(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, out=c0, beta=beta)
    tol = gemm_tol(k, abs_scale(a, b, trans_a, trans_b, alpha, beta, c0))
    assert_close(
        got, want, tol, f"m={m} n={n} k={k} trans=({trans_a},{trans_b}) a={alpha} b={beta}"
    )
    return got


@pytest.mark.parametrize(("trans_a", "trans_b"), TRANS, ids=TRANS_IDS)
def test_matmul_every_m_n_up_to_40(rng, trans_a, trans_b):
    k = 9
    a_full, b_full = random_operands(rng, 40, 40, k, trans_a, trans_b)
    for m in range(1, 41):
        for n in range(1, 41):
            a = a_full[:, :m] if trans_a else a_full[:m]
            b = b_full[:n] if trans_b else b_full[:, :n]
            got = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
            want = reference.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
            tol = gemm_tol(k, abs_scale(a, b, trans_a, trans_b))
            assert_close(got, want, tol, f"m={m} n={n} k={k}")


@pytest.mark.parametrize(("trans_a", "trans_b"), TRANS, ids=TRANS_IDS)
def test_matmul_every_k_up_to_40(rng, trans_a, trans_b):
    for k in range(41):  # includes k == 0: the result is all zeros
        check_matmul(rng, 13, 19, k, trans_a, trans_b)


@pytest.mark.parametrize(("trans_a", "trans_b"), TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize(("m", "n", "k"), AWKWARD)
def test_matmul_awkward_sizes(rng, threads, m, n, k, trans_a, trans_b):
    check_matmul(rng, m, n, k, trans_a, trans_b)


@pytest.mark.parametrize(("trans_a", "trans_b"), TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize(
    ("m", "n", "k"), [(50, 40, 512), (512, 40, 50), (50, 40, 513), (513, 40, 50), (50, 300, 100)]
)
def test_matmul_a_in_place_or_packed(rng, threads, m, n, k, trans_a, trans_b):
    # op(A) is read in place for narrow n (40 columns: 3 panels), unless A's stride (k for A,
    # m for A^T) is a multiple of 512 floats: (50, 40, 512) packs A, (512, 40, 50) packs A^T,
    # the two 513s read each in place. n = 300 packs A on one thread and, 2 threads splitting the
    # columns, reads it in place. k = 512 and 513 are 2 k-blocks.
    check_matmul(rng, m, n, k, trans_a, trans_b, alpha=0.5, beta=-1.5)


@pytest.mark.parametrize(("trans_a", "trans_b"), TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize(("m", "n", "k"), [(512, 1031, 700), (128, 784, 256), (300, 4100, 70)])
def test_matmul_large(rng, threads, m, n, k, trans_a, trans_b):
    check_matmul(rng, m, n, k, trans_a, trans_b, alpha=0.5, beta=-1.5)


@pytest.mark.parametrize(("trans_a", "trans_b"), TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("alpha", [1.0, -1.5, 0.25])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5, -2.0])
def test_matmul_alpha_beta(rng, alpha, beta, trans_a, trans_b):
    # k = 500 > KC: a beta applied on every k-block instead of once would be caught.
    check_matmul(rng, 37, 45, 500, trans_a, trans_b, alpha=alpha, beta=beta)


@pytest.mark.parametrize(("trans_a", "trans_b"), TRANS, ids=TRANS_IDS)
def test_matmul_every_n_up_to_40_with_beta_over_k_blocks(rng, trans_a, trans_b):
    # Every edge-tile width (n % NR = 1..15, and 0) with beta != 0 and k = 900 > 2 KC: the
    # micro-kernel reads C back through its column masks for the caller's beta and again, with
    # beta = 1, for each k-block after the first. An edge tile that drops the beta*C term of some
    # of its columns (say, of a second 8-column half holding one column, n % 16 == 9) is off by
    # ~|beta C| + sqrt(k), thousands of tolerances. m = 7: a full 6-row panel and a 1-row edge.
    for n in range(1, 41):
        check_matmul(rng, 7, n, 900, trans_a, trans_b, alpha=0.5, beta=-1.5)


def test_results_do_not_depend_on_thread_count(rng):
    # Each element's k-sum runs in the same order whatever the split of C among threads, so the
    # results are bit-identical; the shapes are split over rows (m >= n) and over columns.
    old = _core.get_num_threads()
    try:
        # (128, 20, 500): 2 threads split the rows 66 + 62, and 62 ends in two 4-row panels.
        # (128, 784, 256), (128, 200, 140) and (300, 700, 900): one thread packs op(A), more
        # split the columns and read it in place (the last over 3 row blocks and 3 k-blocks).
        # (700, 300, 900): shared op(B), 3 k-blocks. (122, 700, 512): A's stride is 2 KiB, so it
        # is packed, by 2 threads together in chunks of 4 row panels, one of which ends between
        # the two 4-row panels that end the block.
        for m, n, k in [
            (1031, 97, 257),
            (128, 784, 256),
            (150, 33, 129),
            (6, 4097, 20),
            (128, 20, 500),
            (128, 200, 140),
            (300, 700, 900),
            (700, 300, 900),
            (122, 700, 512),
        ]:
            a, b = random_operands(rng, m, n, k, False, False)
            results = []
            for t in (1, 2, 3, 7):  # 7: more threads than cores and a prime grid
                _core.set_num_threads(t)
                results.append(ops.matmul(a, b))
            for t, r in zip((2, 3, 7), results[1:]):
                assert np.array_equal(results[0], r), (m, n, k, t)
    finally:
        _core.set_num_threads(old)


def test_the_most_threads_give_the_same_bits(rng, restore_threads):
    # MAX_THREADS, more than C has tiles: the grid search starts at the tile count (it walked
    # down from the thread count in O(threads^2), with the GIL released).
    for m, n, k in [(64, 64, 64), (128, 20, 500), (13, 300, 7)]:
        a, b = random_operands(rng, m, n, k, False, True)
        _core.set_num_threads(1)
        one = ops.matmul(a, b, trans_b=True)
        _core.set_num_threads(_core.MAX_THREADS)
        assert np.array_equal(ops.matmul(a, b, trans_b=True), one), (m, n, k)


@pytest.mark.parametrize("nt", [2, 3, 7])
@pytest.mark.parametrize(("m", "n", "k"), [(64, 100, 30), (128, 784, 256), (40, 200, 500)])
def test_column_split_cuts_the_leftover_panels_by_rows(rng, nt, m, n, k):
    # When the threads split C's columns and do not divide its panels evenly, the panels left
    # over are cut by rows (gemm.cpp, split_leftover): (64, 100) is 7 panels, the last one 4
    # columns wide, (128, 784) 49 and (40, 200) 13, so 7 threads share 6 leftover panels of 40
    # rows (7 row panels), wider than the one panel each gets whole. The epilogue (bias,
    # preactivation, activation) and the k-blocks (k = 500) run on those blocks too.
    old = _core.get_num_threads()
    try:
        _core.set_num_threads(nt)
        check_linear(rng, m, n, k, "relu", True)
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = rng.standard_normal((k, n)).astype(np.float32)
        split = ops.matmul(x, w)
        _core.set_num_threads(1)
        assert np.array_equal(split, ops.matmul(x, w))
    finally:
        _core.set_num_threads(old)


def test_shared_packing_over_several_column_blocks(rng):
    # Rows split between threads that pack op(B) together, with n > NC = 4080: the shared blocks
    # are walked over two column blocks. k = 2 keeps it cheap; C is 4104 x 4090.
    m, n, k = 4104, 4090, 2
    a, b = random_operands(rng, m, n, k, False, False)
    old = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        one = ops.matmul(a, b)
        _core.set_num_threads(2)
        two = ops.matmul(a, b)
    finally:
        _core.set_num_threads(old)
    assert np.array_equal(one, two)
    rows = slice(0, m, 97)
    want = reference.matmul(a[rows], b)
    tol = gemm_tol(k, abs_scale(a[rows], b, False, False))
    assert_close(two[rows], want, tol, "every 97th row")


@pytest.mark.parametrize(("m", "n", "k"), [(3, 5, 7), (300, 200, 300)])
def test_beta_zero_ignores_nan_in_out(rng, threads, m, n, k):
    a, b = random_operands(rng, m, n, k, False, False)
    out = np.full((m, n), np.nan, dtype=np.float32)
    ops.matmul(a, b, out=out, beta=0.0)
    assert np.isfinite(out).all()
    assert_close(out, reference.matmul(a, b), gemm_tol(k, abs_scale(a, b, False, False)), "nan out")


def test_alpha_zero_reads_neither_a_nor_b(rng):
    # As in BLAS: with alpha == 0 the result is beta * out, even when a holds inf or NaN.
    a = np.full((4, 6), np.inf, dtype=np.float32)
    b = rng.standard_normal((6, 5)).astype(np.float32)
    out = rng.standard_normal((4, 5)).astype(np.float32)
    want = 0.5 * out.astype(np.float64)
    ops.matmul(a, b, alpha=0.0, beta=0.5, out=out)
    assert_close(out, want, EPS32 * np.abs(want), "alpha=0")


def test_k_zero_scales_out_and_empty_shapes(rng):
    out = rng.standard_normal((3, 4)).astype(np.float32)
    want = -2.0 * out.astype(np.float64)
    ops.matmul(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), out=out, beta=-2.0)
    assert_close(out, want, EPS32 * np.abs(want), "k=0")
    assert ops.matmul(np.zeros((0, 5)), np.zeros((5, 3))).shape == (0, 3)
    assert ops.matmul(np.zeros((4, 5)), np.zeros((5, 0))).shape == (4, 0)


def test_converts_dtype_and_layout(rng):
    a = rng.standard_normal((20, 30))  # float64, and a transposed (non-contiguous) view below
    b = rng.standard_normal((20, 11)).astype(np.float16)
    got = ops.matmul(a.T, b)
    a32, b32 = a.T.astype(np.float32), b.astype(np.float32)
    assert_close(
        got,
        reference.matmul(a32, b32),
        gemm_tol(20, abs_scale(a32, b32, False, False)),
        "converted",
    )


F32_MAX = float(np.finfo(np.float32).max)
# The smallest magnitude float32 rounds to inf (halfway between FLT_MAX and 2^128), and below it.
ROUNDS_TO_INF = 2.0**128 - 2.0**103
ROUNDS_TO_MAX = np.nextafter(ROUNDS_TO_INF, 0.0)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1e39, r"1e\+39"),
        (-1e300, r"-1e\+300"),
        (ROUNDS_TO_INF, r"3\.40282e\+38"),
        (np.finfo(np.float64).max, r"1\.79769e\+308"),
    ],
)
def test_values_beyond_float32_are_named_not_turned_into_inf(value, shown):
    # The cast used to warn (RuntimeWarning: overflow encountered in cast, an error in these
    # tests) and hand the kernels inf, reported later as "contains NaN or infinite values".
    a = np.ones((3, 2))
    a[2, 1] = value
    b = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match=rf"^a: {shown} at \[2, 1\] is too large for float32 \("):
        ops.matmul(a, b)
    with pytest.raises(ValueError, match=rf"^a: {shown} at \[1, 2\] is too large for float32"):
        ops.matmul(a.T, b.T, trans_a=True, trans_b=True)  # a transposed float64 view
    with pytest.raises(ValueError, match=rf"^x: {shown} at \[2, 1\] is too large for float32"):
        ops.linear(a, b)
    with pytest.raises(ValueError, match=rf"^bias: {shown} at \[3\] is too large for float32"):
        ops.linear(b.T, b, np.array([0.0, 0.0, 0.0, value]))


@pytest.mark.skipif(np.finfo(np.longdouble).max <= 1e308, reason="long double is float64 here")
def test_a_long_double_beyond_float64_is_shown_as_it_is():
    # f"{value:g}" went through a Python float and printed "inf is too large for float32".
    with pytest.raises(ValueError, match=r"^x: 1e\+4000 is too large for float32 \(finite in"):
        ops.relu(np.longdouble("1e4000"))


def test_float64_values_float32_holds_or_that_are_not_finite_convert_as_before():
    a = np.array([[ROUNDS_TO_MAX, -ROUNDS_TO_MAX, np.inf, -np.inf, np.nan, 1e-50]])
    got = ops.matmul(a, np.ones((1, 1), np.float32), trans_a=True)[:, 0]
    np.testing.assert_array_equal(got, [F32_MAX, -F32_MAX, np.inf, -np.inf, np.nan, 0.0])
    wide = np.array([[np.longdouble(1e39)]])  # long double on x86 (float64 elsewhere)
    with pytest.raises(ValueError, match=r"^a: 1e\+39 at \[0, 0\] is too large for float32"):
        ops.matmul(wide, np.ones((1, 1), np.float32))


def check_linear(rng, m, n, k, activation, with_bias, alpha=None):
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    y, z = ops.linear(x, w, bias, activation=activation, alpha=alpha, return_preactivation=True)
    y_ref, z_ref = reference.linear(
        x, w, bias, activation=activation, alpha=alpha, return_preactivation=True
    )
    tol_z = gemm_tol(k, abs_scale(x, w, False, False, bias=bias))
    assert_close(z, z_ref, tol_z, f"z {activation} m={m} n={n} k={k}")
    # Every activation here is 1-Lipschitz (elu with alpha <= 1), so the error in z carries over;
    # 8 eps32 relative covers the float32 exp/tanh of the epilogue (common/exp_math.h).
    assert_close(y, y_ref, tol_z + 8 * EPS32 * np.abs(y_ref), f"y {activation} m={m} n={n} k={k}")
    y_only = ops.linear(x, w, bias, activation=activation, alpha=alpha)
    assert np.array_equal(y_only, y)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("m", "n", "k"), [(1, 1, 1), (37, 29, 45), (33, 70, 500), (128, 256, 100)])
def test_linear_epilogue(rng, threads, activation, with_bias, m, n, k):
    # k = 500 > KC: an activation applied after every k-block instead of the last would be caught.
    alpha = 0.2 if activation == "prelu" else None
    check_linear(rng, m, n, k, activation, with_bias, alpha)


@pytest.mark.parametrize("activation", ["identity", "relu"])
@pytest.mark.parametrize(("m", "n", "k"), [(7, 9, 5), (7, 25, 5), (7, 9, 500), (13, 25, 500)])
def test_linear_bias_on_edge_tiles_with_a_lone_ninth_column(rng, activation, m, n, k):
    # n % NR == 9: the edge tile's second 8-column half holds a single column, whose bias (and,
    # for k = 500 > KC, partial sum from the first k-block) must still be loaded.
    check_linear(rng, m, n, k, activation, True)


@pytest.mark.parametrize(("activation", "alpha"), [("leaky_relu", 0.3), ("elu", 0.7)])
def test_linear_explicit_alpha(rng, activation, alpha):
    check_linear(rng, 20, 17, 9, activation, True, alpha)


def test_linear_with_no_inputs_is_act_of_bias(rng):
    bias = rng.standard_normal(5).astype(np.float32)
    y = ops.linear(
        np.zeros((3, 0), np.float32), np.zeros((0, 5), np.float32), bias, activation="relu"
    )
    assert np.array_equal(y, np.broadcast_to(np.maximum(bias, 0), (3, 5)))


def test_simd_level_follows_env():
    # Run under FASTMLP_SIMD=generic by test_generic_kernel_in_subprocess: proves that run took
    # the portable path.
    if os.environ.get("FASTMLP_SIMD") == "generic":
        assert _core._build_info()["simd"] == "generic"
    else:
        assert _core._build_info()["simd"] in ("generic", "avx2+fma")


def test_generic_kernel_in_subprocess():
    # SIMD detection is cached per process, so the portable micro-kernel is tested by running this
    # file's small cases again in a child process with FASTMLP_SIMD=generic.
    env = dict(os.environ, FASTMLP_SIMD="generic")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        __file__,
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        "not subprocess and not large and not thread_count",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


# ---------------------------------------------------------------- bad input, one test per rule


def test_rejects_integer_arrays():
    with pytest.raises(TypeError, match=r"^a: "):
        ops.matmul(np.ones((2, 2), dtype=np.int64), np.ones((2, 2)))
    with pytest.raises(TypeError, match=r"^weight: "):
        ops.linear(np.ones((2, 2)), np.ones((2, 2), dtype=np.int32))


@pytest.mark.parametrize(("trans_a", "trans_b"), TRANS, ids=TRANS_IDS)
def test_matmul_and_linear_take_transposed_views(rng, trans_a, trans_b):
    # x.T of a C-ordered float32 x is read where it lies (the kernel's flag flipped): the same
    # product, bit for bit, as the C-ordered copy passed with the same flags.
    m, n, k = 37, 29, 45
    a, b = random_operands(rng, m, n, k, trans_a, trans_b)
    a_view = np.ascontiguousarray(a.T).T  # a's values and shape, laid out column by column
    b_view = np.ascontiguousarray(b.T).T
    assert a_view.flags.f_contiguous and not a_view.flags.c_contiguous
    want = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    for x, y in [(a_view, b), (a, b_view), (a_view, b_view)]:
        got = ops.matmul(x, y, trans_a=trans_a, trans_b=trans_b, alpha=1.0)
        assert np.array_equal(got, want)
    out = np.zeros((m, n), np.float32)
    ops.matmul(a_view, b_view, trans_a=trans_a, trans_b=trans_b, out=out, beta=0.5)
    assert np.array_equal(out, want)

    # linear with a PyTorch-style (out_features, in_features) weight, given as weight.T.
    x = rng.standard_normal((m, k)).astype(np.float32)
    w_torch = rng.standard_normal((n, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    y, z = ops.linear(x, w_torch.T, bias, activation="relu", return_preactivation=True)
    y_copy, z_copy = ops.linear(
        x, np.ascontiguousarray(w_torch.T), bias, activation="relu", return_preactivation=True
    )
    assert np.array_equal(y, y_copy) and np.array_equal(z, z_copy)
    y_both = ops.linear(np.ascontiguousarray(x.T).T, w_torch.T, bias, activation="relu")
    assert np.array_equal(y_both, y_copy)


def test_transposed_view_of_out_is_copied_not_aliased(rng):
    # out.T as an input shares out's memory: it is copied first (as before views were read in
    # place), so the product is the one of out's old values.
    c = rng.standard_normal((4, 4)).astype(np.float32)
    eye = np.eye(4, dtype=np.float32)
    want = c.T.copy()
    got = ops.matmul(c.T, eye, out=c)
    assert got is c and np.array_equal(c, want)


def test_transposed_view_errors_name_what_was_passed():
    a = np.ones((100, 5), np.float32).T  # shape (5, 100), column by column
    with pytest.raises(ValueError, match=r"^b: expected 100 rows.*\(a \(5, 100\), b \(784, 3\), "):
        ops.matmul(a, np.ones((784, 3), np.float32))
    w = np.ones((2, 4), np.float32).T  # shape (4, 2)
    with pytest.raises(ValueError, match=r"^weight: expected 3 rows .*got shape \(4, 2\)"):
        ops.linear(np.ones((2, 3), np.float32), w)


def test_rejects_wrong_ndim():
    with pytest.raises(ValueError, match=r"^b: expected a 2-D array"):
        ops.matmul(np.ones((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match=r"^x: expected a 2-D array"):
        ops.linear(np.ones((2, 3, 1)), np.ones((3, 2)))


def test_rejects_mismatched_inner_dims():
    with pytest.raises(ValueError, match=r"^b: expected 100 rows"):
        ops.matmul(np.ones((5, 100)), np.ones((784, 3)))
    with pytest.raises(ValueError, match=r"^b: expected 100 columns"):
        ops.matmul(np.ones((5, 100)), np.ones((3, 784)), trans_b=True)
    with pytest.raises(ValueError, match=r"^weight: expected 3 rows"):
        ops.linear(np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"^bias: expected shape"):
        ops.linear(np.ones((2, 3)), np.ones((3, 2)), np.ones(3))


def test_rejects_bad_out():
    a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"^out: expected a C-contiguous"):
        ops.matmul(a, b, out=np.ones((4, 2), np.float32).T)
    readonly = np.ones((2, 4), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match=r"^out: array is read-only"):
        ops.matmul(a, b, out=readonly)
    with pytest.raises(TypeError, match=r"^out: expected a float32"):
        ops.matmul(a, b, out=np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"^out: expected shape"):
        ops.matmul(a, b, out=np.ones((4, 2), np.float32))
    shared = np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"^out: must not share memory"):
        ops.matmul(shared, shared, out=shared)


@pytest.mark.parametrize("device", [None, "cuda"])  # checked before the device is chosen
@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"alpha": "2"}, TypeError, r"^alpha: expected a real number, got str"),
        ({"alpha": 1e39}, ValueError, r"^alpha: expected a finite value, got 1e\+39 \(inf in"),
        ({"alpha": float("nan")}, ValueError, r"^alpha: expected a finite value"),
        ({"alpha": -(10**400)}, ValueError, r"^alpha: expected a finite value, got -1e\+400"),
        ({"beta": None}, TypeError, r"^beta: expected a real number, got NoneType"),
        ({"beta": -1e39}, ValueError, r"^beta: expected a finite value"),
        ({"trans_a": "False"}, TypeError, r"^trans_a: expected True or False, got str"),
        ({"trans_b": 1}, TypeError, r"^trans_b: expected True or False, got int"),
        ({"trans_b": None}, TypeError, r"^trans_b: expected True or False, got NoneType"),
    ],
)
def test_rejects_bad_scalars(kwargs, error, pattern, device):
    a, b = np.ones((3, 3), np.float32), np.ones((3, 3), np.float32)
    with pytest.raises(error, match=pattern):
        ops.matmul(a, b, out=np.zeros((3, 3), np.float32), device=device, **kwargs)


@pytest.mark.parametrize("device", [None, "cuda"])  # checked before the device is chosen
@pytest.mark.parametrize("value", ["no", "False", 0, 1, None], ids=repr)
def test_linear_return_preactivation_takes_a_bool_only(value, device):
    # bool("no") is True: a truthy flag used to return a (y, z) tuple instead of y.
    x, w = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    pattern = rf"^return_preactivation: expected True or False, got {type(value).__name__}$"
    with pytest.raises(TypeError, match=pattern):
        ops.linear(x, w, return_preactivation=value, device=device)
    y, z = ops.linear(x, w, return_preactivation=np.True_)
    assert np.array_equal(y, z) and np.array_equal(
        ops.linear(x, w, return_preactivation=np.False_), y
    )


def test_accepts_numpy_scalars():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((2, 4), np.float32)
    got = ops.matmul(a, b, trans_a=np.bool_(True), alpha=np.float32(2.0))
    np.testing.assert_array_equal(got, 2 * a.T @ b)
    out = np.ones((3, 4), np.float32)
    ops.matmul(a, b, trans_a=True, trans_b=np.False_, out=out, beta=np.int64(1))
    np.testing.assert_array_equal(out, a.T @ b + 1)


def test_rejects_masked_arrays():
    # np.asarray would drop the mask: the product would use the masked-out values as data.
    a = np.ma.masked_array(np.ones((2, 3), np.float32), mask=[[0, 1, 0], [0, 0, 0]])
    b = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match=r"^a: masked arrays are not supported; pass \.filled"):
        ops.matmul(a, b)
    with pytest.raises(TypeError, match=r"^weight: masked arrays are not supported"):
        ops.linear(b.T.copy(), a.T)
    with pytest.raises(TypeError, match=r"^out: masked arrays are not supported"):
        ops.matmul(b.T.copy(), b, out=np.ma.masked_array(np.zeros((4, 4), np.float32)))


def test_rejects_beta_without_out():
    with pytest.raises(ValueError, match=r"^beta: "):
        ops.matmul(np.ones((2, 3)), np.ones((3, 4)), beta=1.0)


def test_rejects_unknown_activation():
    msg = "^activation: unknown 'swish'; known: identity, relu"
    with pytest.raises(ValueError, match=msg):
        ops.linear(np.ones((2, 3)), np.ones((3, 2)), activation="swish")


def test_prelu_needs_alpha():
    with pytest.raises(ValueError, match=r"^alpha: prelu needs"):
        ops.linear(np.ones((2, 3)), np.ones((3, 2)), activation="prelu")


@pytest.mark.parametrize(
    ("activation", "alpha", "error", "pattern"),
    [
        ("leaky_relu", -1.0, ValueError, r"^alpha: leaky_relu expects alpha >= 0"),
        ("elu", 0.0, ValueError, r"^alpha: elu expects alpha > 0"),
        # Positive, but 0 in float32: the kernel would get elu with alpha 0 (relu).
        ("elu", 1e-46, ValueError, r"^alpha: elu expects alpha > 0, got 1e-46 \(0 in float32"),
        pytest.param(
            "elu",
            10**400,
            ValueError,
            r"^alpha: expected a finite value, got 1e\+400 \(inf in",
            id="elu-10**400",
        ),
        ("leaky_relu", float("nan"), ValueError, r"^alpha: expected a finite value"),
        ("prelu", float("inf"), ValueError, r"^alpha: expected a finite value"),
        ("relu", 0.1, ValueError, r"^alpha: activation 'relu' takes no alpha"),
        ("elu", "1", TypeError, r"^alpha: expected a real number"),
        (3, None, TypeError, r"^activation: expected a name \(str\), got int"),
    ],
)
def test_linear_checks_alpha_as_activation_does(activation, alpha, error, pattern):
    with pytest.raises(error, match=pattern):
        ops.linear(np.ones((2, 3)), np.ones((3, 2)), activation=activation, alpha=alpha)


@pytest.mark.parametrize("m", [1, 7, 40])  # 40 x 300 x 33: several k-blocks, an edge panel
def test_fused_relu_propagates_nan(rng, threads, m):
    """relu(NaN) is NaN in the epilogue, as in ops.relu, np.maximum and PyTorch: a NaN mapped to
    0 there would hide a diverged layer behind finite outputs."""
    x = rng.standard_normal((m, 300)).astype(np.float32)
    w = rng.standard_normal((300, 33)).astype(np.float32)
    x[m // 2, 5] = np.nan
    y, z = ops.linear(x, w, activation="relu", return_preactivation=True)
    assert np.isnan(y[m // 2]).all() and np.isnan(z[m // 2]).all()
    others = np.delete(np.arange(m), m // 2)
    assert np.isfinite(y[others]).all()
    np.testing.assert_array_equal(np.isnan(ops.relu(z)), np.isnan(z))
    np.testing.assert_array_equal(np.isnan(reference.relu(z)), np.isnan(z))


def test_core_checks_arguments_again():
    # The binding is the last line of defence when _core is called directly.
    c = np.zeros((2, 4), np.float32)
    a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match=r"^a: expected a float32"):
        _core.gemm(c, a.astype(np.float64), b)
    with pytest.raises(ValueError, match=r"^b: expected 3 rows"):
        _core.gemm(c, a, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"^c: expected shape"):
        _core.gemm(np.zeros((4, 2), np.float32), a, b)
    with pytest.raises(ValueError, match=r"^c: must not share memory"):
        square = np.ones((3, 3), np.float32)
        _core.gemm(square, square, square)
    with pytest.raises(ValueError, match=r"^preactivation: may share memory with c only"):
        _core.gemm(c, a, b, activation="relu", preactivation=c)
    # _core.matmul: ops.matmul's call, into out or (out None) a new array.
    with pytest.raises(TypeError, match=r"^b: expected a float32"):
        _core.matmul(a, b.astype(np.float64), False, False, 1.0, None, 0.0)
    with pytest.raises(ValueError, match=r"^a: expected a C-contiguous"):
        _core.matmul(np.ones((3, 2), np.float32).T, b, False, False, 1.0, None, 0.0)
    with pytest.raises(ValueError, match=r"^a: expected a 2-D array"):
        _core.matmul(np.ones(3, np.float32), b, False, False, 1.0, None, 0.0)
    with pytest.raises(ValueError, match=r"^b: expected 3 rows"):
        _core.matmul(a, b, False, True, 1.0, None, 0.0)
    with pytest.raises(ValueError, match=r"^beta: 1 scales out, so out= must be given"):
        _core.matmul(a, b, False, False, 1.0, None, 1.0)
    with pytest.raises(TypeError, match=r"^out: expected a float32"):
        _core.matmul(a, b, False, False, 1.0, c.astype(np.float64), 0.0)
    with pytest.raises(ValueError, match=r"^out: expected shape \(2, 4\), got \(4, 2\)"):
        _core.matmul(a, b, False, False, 1.0, c.reshape(4, 2), 0.0)
    readonly = c.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match=r"^out: array is read-only"):
        _core.matmul(a, b, False, False, 1.0, readonly, 0.0)
    square = np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"^out: must not share memory with a"):
        _core.matmul(square, np.ones((3, 3), np.float32), False, False, 1.0, square, 0.0)
    with pytest.raises(ValueError, match=r"^out: must not share memory with b"):
        _core.matmul(np.ones((3, 3), np.float32), square[:, :], False, False, 1.0, square, 0.0)
    assert np.array_equal(
        _core.matmul(a, b, False, False, 2.0, None, 0.0), np.full((2, 4), 6, np.float32)
    )
    out = np.ones((2, 4), np.float32)
    assert _core.matmul(a, b, False, False, 2.0, out, 0.5) is out
    assert np.array_equal(out, np.full((2, 4), 6.5, np.float32))


def test_core_gemm_refuses_every_output_input_overlap():
    """Each output (c, preactivation) against each input it could overlap (a, b, bias) and the
    other output: a bias inside preactivation was read after the kernel overwrote it."""
    a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    c = np.zeros((2, 4), np.float32)
    z = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"^preactivation: must not share memory with bias"):
        _core.gemm(c, a, b, bias=z[1], activation="relu", preactivation=z)
    with pytest.raises(ValueError, match=r"^preactivation: must not share memory with bias"):
        _core.gemm(c, a, b, bias=z[0], preactivation=z)  # identity too
    with pytest.raises(ValueError, match=r"^c: must not share memory with bias"):
        _core.gemm(c, a, b, bias=c[1])
    flat = np.zeros(16, np.float32)  # a is floats 0-5, preactivation 4-11
    with pytest.raises(ValueError, match=r"^preactivation: must not share memory with a"):
        _core.gemm(c, flat[:6].reshape(2, 3), b, preactivation=flat[4:12].reshape(2, 4))
    # Identity: preactivation may be c itself (gemm.h), not a shifted part of it.
    buf = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"^preactivation: may be c itself but must not partly"):
        _core.gemm(buf[:2], a, b, preactivation=buf[1:])
    _core.gemm(c, a, b, bias=np.ones(4, np.float32), preactivation=c)
    np.testing.assert_array_equal(c, np.full((2, 4), 4, np.float32))
