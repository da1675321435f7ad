"""Fused narrow-MLP passes (csrc/cuda/fused_mlp.cu: cuda.fused_mlp_forward / fused_mlp_backward).

Held to the float64 reference (fastmlp.reference) and to the unfused GPU chain they replace
(ops.linear per layer; gemm NT + ops.activation_backward), over every activation, widths 1..128
(odd ones and the tile edges 16/32/64/128) and batches that are not multiples of the kernels'
64-row chunk. Every test needs a GPU (requires_gpu): none touches the new API at import time, so
the module skips cleanly where fastmlp has no usable GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp
from fastmlp import cuda, ops, reference
from fastmlp.reference.network import ReferenceMLP

_info = fastmlp._cuda_info()
HAVE_GPU = fastmlp.cuda_available()
requires_gpu = pytest.mark.skipif(
    not HAVE_GPU,
    reason=f"no usable CUDA GPU: {_info.get('error') or 'fastmlp was built without CUDA'}",
)

EPS32 = float(np.finfo(np.float32).eps)
ACTIVATIONS = ["identity", "relu", "leaky_relu", "prelu", "elu", "sigmoid", "tanh"]
ALPHAS = {"leaky_relu": 0.03, "prelu": 0.2, "elu": 0.7}
NETS = [
    (16, 16),  # one layer: no hidden layer, an empty backward
    (7, 1),
    (1, 7, 1),
    (32, 64, 100, 128, 16),  # every tile width (16/32/64/128), 100 not a multiple of 4 x 16
    (128, 128, 128, 128, 16),
    (100, 7, 33, 1),
    (64, 64, 64, 64, 64, 1),
    (3, 64, 128, 17, 16, 8, 100, 7, 2),  # 8 layers: the limit
]
NET_IDS = ["-".join(map(str, s)) for s in NETS]
BATCHES = [1, 63, 65, 1000, 4097]  # around the 64-row chunk, and a partial last chunk
# Forward and dZ tolerance: RTOL_MAX times the largest magnitude of the sums behind each array
# (|h| @ |W| + |b| for z, |dZ| @ |W|^T * |f'| for dZ; at least the largest element). float32 dot
# products of length <= 128 err by ~sqrt(128) eps32 ~ 1e-6 of that magnitude, compounded over up
# to 8 layers, plus CUDA's expf/tanhf (<= 2 ulp); the sums run in another order than NumPy's
# float64 ones, so they cannot be compared more tightly. Scaling by the sums' magnitude rather than
# the result's keeps a value that cancels to near 0 (a single logit) from failing on rounding.
RTOL_MAX = 1e-5


def dev(x: np.ndarray) -> cuda.DeviceArray:
    return fastmlp.to_device(x)


def make_net(
    rng: np.random.Generator, sizes: tuple[int, ...], activation: str
) -> tuple[list[np.ndarray], list[np.ndarray], float | None]:
    """Random float32 weights (He-scaled, so activations stay O(1) through 8 layers) and biases."""
    ws = [
        (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32)
        for a, b in zip(sizes[:-1], sizes[1:])
    ]
    bs = [(0.1 * rng.standard_normal(b)).astype(np.float32) for b in sizes[1:]]
    return ws, bs, ALPHAS.get(activation)


def reference_mlp(
    sizes: tuple[int, ...], activation: str, alpha: float | None, ws: list, bs: list
) -> tuple[ReferenceMLP, list[np.ndarray]]:
    hidden = len(sizes) - 2
    alphas = [0.0 if alpha is None else alpha] * hidden
    net = ReferenceMLP(sizes, [activation] * hidden, alphas)
    params = [p for wb in zip(ws, bs) for p in wb]
    if activation == "prelu":  # the reference takes a PReLU slope from the parameter list
        params += [np.array([alpha], dtype=np.float32)] * hidden
    return net, params


def assert_close_to_max(got: np.ndarray, want: np.ndarray, scale: np.ndarray, what: str) -> None:
    """|got - want| <= RTOL_MAX * max(scale, |want|) everywhere (see RTOL_MAX)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values (an element left unwritten?)"
    tol = RTOL_MAX * max(float(np.abs(want).max()), float(np.abs(scale).max()), 1e-30)
    err = np.abs(got - want)
    if not np.all(err <= tol):
        first = np.argwhere(err > tol)[:5]
        raise AssertionError(
            f"{what}: max error {err.max():.3g} > {tol:.3g}; first mismatches at "
            f"{first.tolist()}: got {got[tuple(first.T)]}, want {want[tuple(first.T)]}"
        )


def forward_scales(ws: list[np.ndarray], bs: list[np.ndarray], hs: list[np.ndarray]) -> list:
    """|h_{l-1}| @ |W_l| + |b_l| per layer: the magnitude of the sums behind z_l (hs[0] = x)."""
    return [np.abs(h) @ np.abs(w.astype(np.float64)) + np.abs(b) for h, w, b in zip(hs, ws, bs)]


def reference_dz(
    ws: list[np.ndarray], zs: list[np.ndarray], dlogits: np.ndarray, activation: str, alpha
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """dZ_1..dZ_{L-1} in float64 and the magnitudes of their sums (|dZ_l| @ |W_l|^T * |f'|),
    with f' evaluated at the device's z: a z within rounding of relu's kink cannot then take the
    other branch in the reference than on the GPU."""
    a = 0.0 if alpha is None else alpha
    dz = dlogits.astype(np.float64)
    out: list[np.ndarray] = []
    scales: list[np.ndarray] = []
    for l in range(len(ws) - 1, 0, -1):
        w = ws[l].astype(np.float64)
        fprime = reference.activation_derivative(zs[l - 1], activation, a)
        scales.insert(0, (np.abs(dz) @ np.abs(w).T) * np.abs(fprime))
        dz = (dz @ w.T) * fprime
        out.insert(0, dz)
    return out, scales


# ====================================================================== forward
@requires_gpu
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("sizes", NETS, ids=NET_IDS)
def test_forward_matches_reference(rng, sizes, activation) -> None:
    for n in BATCHES:
        ws, bs, alpha = make_net(rng, sizes, activation)
        x = rng.standard_normal((n, sizes[0])).astype(np.float32)
        net, params = reference_mlp(sizes, activation, alpha, ws, bs)
        ref_logits, cache = net.forward(params, x)
        wd, bd = [dev(w) for w in ws], [dev(b) for b in bs]
        scales = forward_scales(ws, bs, cache["h"])
        logits = cuda.fused_mlp_forward(dev(x), wd, bd, activation, alpha)
        assert_close_to_max(logits.numpy(), ref_logits, scales[-1], f"logits (n={n})")
        logits_t, zs, hs = cuda.fused_mlp_forward(dev(x), wd, bd, activation, alpha, training=True)
        # Training mode computes the same thing and only stores more.
        np.testing.assert_array_equal(logits_t.numpy(), logits.numpy())
        assert len(zs) == len(hs) == len(sizes) - 2
        for h, (z, a) in enumerate(zip(zs, hs)):
            # |f'| <= 1 for every activation here: a inherits at most z's error.
            assert_close_to_max(z.numpy(), cache["z"][h], scales[h], f"z_{h + 1} (n={n})")
            assert_close_to_max(a.numpy(), cache["h"][h + 1], scales[h], f"a_{h + 1} (n={n})")


@requires_gpu
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    "sizes", [(7, 100, 33, 1), (64, 64, 64, 64, 64, 1), (128, 128, 128, 128, 16), (5, 128, 3)]
)
def test_fused_matches_unfused_bit_for_bit(rng, sizes, activation) -> None:
    # Same formulas and, by construction, the same float32 operations in the same order: each
    # output is one fmaf chain over k ascending from 0, then + b, as in gemm.cu (whose padded k
    # steps add exact zeros), and f / f' are the same FASTMLP_HD functions. Equal bits are what
    # lets a model switch between the fused and unfused paths without its results moving. If this
    # fails while test_*_matches_reference pass, an order or a contraction changed (fused_mlp.cu's
    # header says which ones are relied on).
    n = 1000
    ws, bs, alpha = make_net(rng, sizes, activation)
    x = rng.standard_normal((n, sizes[0])).astype(np.float32)
    dlogits = rng.standard_normal((n, sizes[-1])).astype(np.float32)
    wd, bd = [dev(w) for w in ws], [dev(b) for b in bs]
    slope = dev(np.array([alpha], np.float32)) if activation == "prelu" else alpha
    logits, zs, hs = cuda.fused_mlp_forward(dev(x), wd, bd, activation, slope, training=True)
    dzs = cuda.fused_mlp_backward(dev(dlogits), wd, zs, activation, slope)

    h = dev(x)
    for l, (w, b) in enumerate(zip(wd, bd)):
        if l == len(wd) - 1:
            np.testing.assert_array_equal(logits.numpy(), ops.linear(h, w, b).numpy())
            break
        a, z = ops.linear(h, w, b, activation=activation, alpha=alpha, return_preactivation=True)
        np.testing.assert_array_equal(zs[l].numpy(), z.numpy(), err_msg=f"z_{l + 1}")
        np.testing.assert_array_equal(hs[l].numpy(), a.numpy(), err_msg=f"a_{l + 1}")
        h = a
    dz = dev(dlogits)
    for l in range(len(wd) - 1, 0, -1):
        dh = cuda.gemm(cuda.empty((n, sizes[l])), dz, wd[l], trans_b=True)
        dz = ops.activation_backward(zs[l - 1], hs[l - 1], dh, activation, alpha)
        np.testing.assert_array_equal(dzs[l - 1].numpy(), dz.numpy(), err_msg=f"dZ_{l}")


# ====================================================================== backward
@requires_gpu
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("sizes", NETS, ids=NET_IDS)
def test_backward_matches_reference(rng, sizes, activation) -> None:
    for n in BATCHES:
        ws, bs, alpha = make_net(rng, sizes, activation)
        x = rng.standard_normal((n, sizes[0])).astype(np.float32)
        dlogits = rng.standard_normal((n, sizes[-1])).astype(np.float32)
        wd, bd = [dev(w) for w in ws], [dev(b) for b in bs]
        _, zs, _ = cuda.fused_mlp_forward(dev(x), wd, bd, activation, alpha, training=True)
        dzs = cuda.fused_mlp_backward(dev(dlogits), wd, zs, activation, alpha)
        z_host = [z.numpy() for z in zs]
        want, scales = reference_dz(ws, z_host, dlogits, activation, alpha)
        assert len(dzs) == len(want) == len(sizes) - 2
        for h, (got, ref, scale) in enumerate(zip(dzs, want, scales)):
            assert_close_to_max(got.numpy(), ref, scale, f"dZ_{h + 1} (n={n})")


@requires_gpu
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    "sizes", [(7, 1), (1, 7, 1), (32, 64, 100, 128, 16), (3, 64, 128, 17, 16, 8, 100, 7, 2)]
)
@pytest.mark.parametrize("n", [63, 4097])
def test_training_gradients_match_reference(rng, sizes, activation, n) -> None:
    # The whole training backward as a caller assembles it: fused forward and backward, then
    # dW_l = h_{l-1}^T dZ_l (gemm TN), db_l = column_sum(dZ_l) and, for PReLU, dH = dZ_l W_l^T
    # (gemm NT) + prelu_backward for the slope, against ReferenceMLP.backward. The reference
    # backward runs on the device's z and h (its cache), so relu's kink cannot split the two.
    ws, bs, alpha = make_net(rng, sizes, activation)
    x = rng.standard_normal((n, sizes[0])).astype(np.float32)
    dlogits = rng.standard_normal((n, sizes[-1])).astype(np.float32)
    wd, bd = [dev(w) for w in ws], [dev(b) for b in bs]
    # PReLU's slope as a device value, the way a learned slope is passed.
    slope = dev(np.array([alpha], np.float32)) if activation == "prelu" else alpha
    xd, dld = dev(x), dev(dlogits)
    _, zs, hs = cuda.fused_mlp_forward(xd, wd, bd, activation, slope, training=True)
    dzs = cuda.fused_mlp_backward(dld, wd, zs, activation, slope)

    layers = len(ws)
    h_dev, dz_dev = [xd, *hs], [*dzs, dld]
    grads = []
    for l in range(layers):
        dw = cuda.gemm(cuda.empty(ws[l].shape), h_dev[l], dz_dev[l], trans_a=True)
        grads += [dw.numpy(), ops.column_sum(dz_dev[l]).numpy()]
    if activation == "prelu":
        for l in range(1, layers):
            dh = cuda.gemm(cuda.empty((n, sizes[l])), dz_dev[l], wd[l], trans_b=True)
            dz_again, dslope = ops.prelu_backward(zs[l - 1], slope, dh)
            # prelu_backward's dx is the fused kernel's dZ, bit for bit (same formula, same dH).
            np.testing.assert_array_equal(dz_again.numpy(), dzs[l - 1].numpy())
            grads.append(dslope.numpy())

    net, _ = reference_mlp(sizes, activation, alpha, ws, bs)
    h64 = [x.astype(np.float64)] + [a.numpy().astype(np.float64) for a in hs]
    z64 = [z.numpy().astype(np.float64) for z in zs]
    cache = {
        "h": h64,
        "z": z64,
        "masks": [None] * (layers - 1),
        "alphas": [0.0 if alpha is None else alpha] * (layers - 1),
        "ws": [w.astype(np.float64) for w in ws],
    }
    want = net.backward(cache, dlogits)
    ref_dz = [*reference_dz(ws, z64, dlogits, activation, alpha)[0], dlogits.astype(np.float64)]
    assert len(grads) == len(want)
    for l in range(layers):
        habs, dzmax = np.abs(h64[l]), float(np.abs(ref_dz[l]).max())
        # dW: the float32 GEMM's error over n terms (as test_cuda's gemm_tol) plus what the dZ
        # tolerance above lets through: |H|^T |dZ err| <= colsum|H| * RTOL_MAX max|dZ|.
        tol_w = (2.0 * np.sqrt(n) + 2.0) * EPS32 * (habs.T @ np.abs(ref_dz[l]))
        tol_w += RTOL_MAX * dzmax * habs.sum(axis=0)[:, None] + 1e-30
        err = np.abs(grads[2 * l] - want[2 * l])
        assert np.all(err <= tol_w), f"dW_{l + 1}: max excess {np.max(err - tol_w):.3g}"
        # db: column_sum adds in double and rounds once; the rest is the dZ tolerance, n times.
        tol_b = EPS32 * np.abs(want[2 * l + 1]) + RTOL_MAX * dzmax * n + 1e-30
        err = np.abs(grads[2 * l + 1] - want[2 * l + 1])
        assert np.all(err <= tol_b), f"db_{l + 1}: max excess {np.max(err - tol_b):.3g}"
    for k, h in enumerate(range(1, layers) if activation == "prelu" else []):
        got, ref = grads[2 * layers + k], want[2 * layers + k]
        # dslope = sum(dH * min(z, 0)): dH within RTOL_MAX of its max (it is dZ_h / f'), summed.
        dh_ref = ref_dz[h] @ ws[h].astype(np.float64).T
        tol = (
            RTOL_MAX * float(np.abs(dh_ref).max()) * float(np.abs(np.minimum(z64[h - 1], 0)).sum())
        )
        assert abs(float(got[0]) - float(ref[0])) <= tol + 1e-30, f"dslope_{h}: {got} vs {ref}"


# ====================================================================== properties
@requires_gpu
def test_repeat_runs_are_bit_identical(rng) -> None:
    sizes = (32, 64, 100, 128, 16)
    n = 4097
    ws, bs, _ = make_net(rng, sizes, "tanh")
    x = dev(rng.standard_normal((n, sizes[0])).astype(np.float32))
    dlogits = dev(rng.standard_normal((n, sizes[-1])).astype(np.float32))
    wd, bd = [dev(w) for w in ws], [dev(b) for b in bs]
    runs = []
    for _ in range(3):
        logits, zs, hs = cuda.fused_mlp_forward(x, wd, bd, "tanh", training=True)
        dzs = cuda.fused_mlp_backward(dlogits, wd, zs, "tanh")
        runs.append([a.numpy() for a in (logits, *zs, *hs, *dzs)])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


@requires_gpu
def test_every_output_element_is_written(rng) -> None:
    # Through the binding, into NaN-filled buffers (the wrappers allocate their own outputs), and
    # with dz aliasing z, which the kernel allows: any element it skips stays NaN / stays z.
    sizes = [7, 100, 33, 1]
    n = 130  # two full 64-row chunks and a chunk of 2
    ws, bs, _ = make_net(rng, tuple(sizes), "elu")
    x = rng.standard_normal((n, sizes[0])).astype(np.float32)
    wd, bd = [dev(w) for w in ws], [dev(b) for b in bs]
    logits, zs, hs = cuda.fused_mlp_forward(dev(x), wd, bd, "elu", training=True)
    mod = cuda._module()

    def nans(d: int) -> cuda.DeviceArray:
        return dev(np.full((n, d), np.nan, np.float32))

    out, zp, ap = nans(sizes[-1]), [nans(d) for d in sizes[1:-1]], [nans(d) for d in sizes[1:-1]]
    kinds, alphas, slopes = [4, 4], [1.0, 1.0], [None, None]  # elu, its default alpha
    mod.fused_mlp_forward(
        out._buf,
        dev(x)._buf,
        [w._buf for w in wd],
        [b._buf for b in bd],
        sizes,
        kinds,
        alphas,
        slopes,
        n,
        training=True,
        z=[z._buf for z in zp],
        a=[a._buf for a in ap],
    )
    np.testing.assert_array_equal(out.numpy(), logits.numpy())
    for mine, want in zip(zp + ap, zs + hs):
        np.testing.assert_array_equal(mine.numpy(), want.numpy())
    dlogits = dev(rng.standard_normal((n, 1)).astype(np.float32))
    dzs = cuda.fused_mlp_backward(dlogits, wd, zs, "elu")
    mod.fused_mlp_backward(
        [z._buf for z in zp],  # dz aliasing z: overwritten in place
        dlogits._buf,
        [z._buf for z in zp],
        [w._buf for w in wd],
        sizes,
        kinds,
        alphas,
        slopes,
        n,
    )
    for mine, want in zip(zp, dzs):
        np.testing.assert_array_equal(mine.numpy(), want.numpy())


@requires_gpu
def test_no_bias_and_per_layer_activations(rng) -> None:
    sizes = (9, 40, 20, 70, 3)
    names = ["tanh", "prelu", "leaky_relu"]
    alphas = [None, 0.3, 0.1]
    ws, bs, _ = make_net(rng, sizes, "relu")
    biases = [bs[0], None, bs[2], None]
    n = 333
    x = rng.standard_normal((n, sizes[0])).astype(np.float32)
    logits = cuda.fused_mlp_forward(
        dev(x), [dev(w) for w in ws], [None if b is None else dev(b) for b in biases], names, alphas
    )
    h = x.astype(np.float64)
    for l, w in enumerate(ws):
        scale = np.abs(h) @ np.abs(w.astype(np.float64))
        h = h @ w.astype(np.float64) + (0.0 if biases[l] is None else biases[l])
        if l < len(names):
            h = reference.activation(h, names[l], alphas[l])
    assert_close_to_max(logits.numpy(), h, scale, "logits")


@requires_gpu
def test_empty_batch(rng) -> None:
    ws, bs, _ = make_net(rng, (4, 8, 2), "relu")
    wd, bd = [dev(w) for w in ws], [dev(b) for b in bs]
    logits, zs, hs = cuda.fused_mlp_forward(
        dev(np.zeros((0, 4), np.float32)), wd, bd, training=True
    )
    assert logits.shape == (0, 2) and zs[0].shape == (0, 8) and hs[0].shape == (0, 8)
    dzs = cuda.fused_mlp_backward(dev(np.zeros((0, 2), np.float32)), wd, zs, "relu")
    assert [d.shape for d in dzs] == [(0, 8)]


@requires_gpu
def test_nets_beyond_the_limits_raise_value_error(rng) -> None:
    x = dev(rng.standard_normal((5, 129)).astype(np.float32))
    too_wide = [dev(np.zeros((129, 4), np.float32)), dev(np.zeros((4, 2), np.float32))]
    with pytest.raises(ValueError, match=r"^weights: every width must be in \[1, 128\]"):
        cuda.fused_mlp_forward(x, too_wide, [None, None])
    narrow = [dev(np.zeros((4, 4), np.float32)) for _ in range(9)]
    with pytest.raises(ValueError, match=r"^weights: the fused kernels take 1 to 8 layers"):
        cuda.fused_mlp_forward(cuda.zeros((5, 4)), narrow, [None] * 9)
    with pytest.raises(ValueError, match=r"^x: expected 4 columns"):
        cuda.fused_mlp_forward(x, narrow[:2], [None, None])
    with pytest.raises(ValueError, match=r"^activations: expected one name per hidden layer"):
        cuda.fused_mlp_forward(cuda.zeros((5, 4)), narrow[:3], [None] * 3, ["relu"])
    with pytest.raises(ValueError, match=r"^alphas\[0\]: prelu needs its slope"):
        cuda.fused_mlp_forward(cuda.zeros((5, 4)), narrow[:2], [None] * 2, "prelu")
    with pytest.raises(ValueError, match=r"^zs: expected 1"):
        cuda.fused_mlp_backward(cuda.zeros((5, 4)), narrow[:2], [], "relu")
    # The launcher's own check, reached through the binding without the Python one.
    mod = cuda._module()
    wide = [dev(np.zeros((129, 4), np.float32))]
    with pytest.raises(ValueError, match=r"^sizes: every width must be in \[1, 128\]"):
        mod.fused_mlp_forward(
            cuda.zeros((5, 4))._buf,
            x._buf,
            [w._buf for w in wide],
            [None],
            [129, 4],
            [],
            [],
            [],
            5,
            training=False,
        )


# ------------------------------------------------------------------ engine selection (MLP fused=)
ENGINE_CASES = [
    ((16, 16), "relu", "cross_entropy"),  # no hidden layer: the fused backward has nothing to do
    ((64, 64, 64, 64, 64, 1), "relu", "mse"),
    ((128, 128, 128, 128, 16), "tanh", "cross_entropy"),
    ((5, 100, 33, 3), ["elu", "sigmoid"], "cross_entropy"),
    ((20, 16, 4), "leaky_relu", "hinge"),
    ((9, 32, 2), "relu", "bce"),
]


def _targets(rng: np.random.Generator, n: int, out: int, loss: str) -> np.ndarray:
    if loss in ("cross_entropy", "hinge"):
        return rng.integers(0, out, size=n)
    if loss == "bce":
        return (rng.random((n, out)) < 0.5).astype(np.float32)
    return rng.standard_normal((n, out)).astype(np.float32)


def _pair(sizes, activation, **kwargs):
    fused = fastmlp.MLP(list(sizes), activation=activation, seed=3, device="cuda", **kwargs)
    plain = fastmlp.MLP(
        list(sizes), activation=activation, seed=3, device="cuda", fused=False, **kwargs
    )
    return fused, plain


@requires_gpu
@pytest.mark.parametrize(("sizes", "activation", "loss"), ENGINE_CASES)
def test_engine_picks_fused_path_with_same_results(rng, sizes, activation, loss) -> None:
    # The fused kernels reproduce the unfused chain (kernels.h), so forward, gradients and ten
    # Adam steps agree bit for bit between fused=True and fused=False. (The 128-wide net needs
    # ~99 KB of shared memory per block: every GPU of sm_80 and later allows it.)
    fused, plain = _pair(sizes, activation)
    assert fused.uses_fused(training=True) and fused.uses_fused(training=False)
    assert not plain.uses_fused(training=True) and not plain.uses_fused(training=False)
    n = 1000  # not a multiple of the 64-row chunk
    x = rng.standard_normal((n, sizes[0])).astype(np.float32)
    y = _targets(rng, n, sizes[-1], loss)
    np.testing.assert_array_equal(fused.eval()(x), plain.eval()(x))
    fused.train()
    plain.train()
    lf, gf = fused.loss_and_gradients(x, y, loss=loss)
    lp, gp = plain.loss_and_gradients(x, y, loss=loss)
    assert lf == lp
    for a, b in zip(gf, gp):
        np.testing.assert_array_equal(a, b)
    of = fastmlp.optim.Adam(fused, lr=1e-3)
    op = fastmlp.optim.Adam(plain, lr=1e-3)
    for _ in range(10):
        assert fused.train_step(x, y, loss=loss, optimizer=of) == plain.train_step(
            x, y, loss=loss, optimizer=op
        )
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)


@requires_gpu
def test_engine_fused_training_matches_cpu_engine(rng) -> None:
    sizes = [32, 64, 64, 10]
    gpu = fastmlp.MLP(sizes, seed=1, device="cuda")
    cpu = fastmlp.MLP(sizes, seed=1)
    assert gpu.uses_fused(training=True)
    x = rng.standard_normal((300, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=300)
    lg, gg = gpu.loss_and_gradients(x, y)
    lc, gc = cpu.loss_and_gradients(x, y)
    assert lg == pytest.approx(lc, rel=1e-5)
    for a, b in zip(gg, gc):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))


@requires_gpu
def test_engine_falls_back_where_fused_kernels_do_not_apply(rng) -> None:
    # Too wide, too deep: unfused everywhere. Dropout: unfused in training, fused inference.
    # PReLU and identity hidden layers: fused inference only (the fused backward overwrites z
    # and keeps no dH for the PReLU slope).
    assert not fastmlp.MLP([784, 256, 10], device="cuda").uses_fused(training=False)
    assert not fastmlp.MLP([8] * 10, device="cuda").uses_fused(training=False)
    for kwargs in ({"dropout": 0.2}, {"activation": "prelu"}, {"activation": "identity"}):
        model = fastmlp.MLP([16, 32, 4], device="cuda", **kwargs)
        assert model.uses_fused(training=False), kwargs
        assert not model.uses_fused(training=True), kwargs
    fused, plain = _pair((16, 32, 32, 4), "relu", dropout=0.3)
    x = rng.standard_normal((130, 16)).astype(np.float32)
    y = rng.integers(0, 4, size=130)
    # Training mode with dropout: both unfused, the same masks, the same numbers.
    assert fused.train().loss_and_gradients(x, y)[0] == plain.train().loss_and_gradients(x, y)[0]
    np.testing.assert_array_equal(fused.eval()(x), plain.eval()(x))
    # Eval mode: no dropout in the pass, so the fused backward runs (the dropout buffers unused).
    lf, gf = fused.eval().loss_and_gradients(x, y)
    lp, gp = plain.eval().loss_and_gradients(x, y)
    assert lf == lp
    for a, b in zip(gf, gp):
        np.testing.assert_array_equal(a, b)
    ef = fused.evaluate(x, y, batch_size=100)  # chunks of 100 rows: not multiples of 64
    assert ef == plain.evaluate(x, y, batch_size=100)


@requires_gpu
@pytest.mark.parametrize("activation", ["prelu", "identity", "elu"])
def test_engine_fused_inference_of_every_activation(rng, activation) -> None:
    fused, plain = _pair((12, 40, 24, 5), activation)
    assert fused.uses_fused(training=False)
    x = rng.standard_normal((200, 12)).astype(np.float32)
    np.testing.assert_array_equal(fused.eval()(x), plain.eval()(x))
    np.testing.assert_array_equal(fused.predict_proba(x), plain.predict_proba(x))


@requires_gpu
def test_fused_flag_follows_the_model(rng) -> None:
    model = fastmlp.MLP([8, 16, 2], device="cuda")
    assert model.fused and model.uses_fused()
    model.fused = False
    assert not model.uses_fused()
    model.to("cpu")
    assert not model.fused and not model.uses_fused()
    model.to("cuda")
    assert not model.uses_fused()
    model.fused = True
    assert model.uses_fused()
