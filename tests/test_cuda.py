"""CUDA kernels, DeviceArray and the device dispatch of fastmlp.ops.

Two groups:

* ``requires_gpu`` tests (the module's former module-level skip, now a mark on each of them) run
  every CUDA op against ``fastmlp.reference`` (float64) and skip, with the reason, on a machine
  without a usable GPU. Tolerances are the CPU tests' (same formulas, same float32 roundings),
  except where a comment says why the GPU differs (TF32 has its own bound; elu, sigmoid and tanh
  use common/exp_math.h on both, meant to give the same bits).
* The rest run everywhere: without a GPU, asking for CUDA raises RuntimeError with the reason, and
  the CPU path is unchanged by the new ``device`` argument.

Every GPU test draws fresh random inputs and poisons outputs where the API lets it, so an element
left unwritten shows up as NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import fastmlp
from fastmlp import cuda, ops, reference

_info = fastmlp._cuda_info()
HAVE_GPU = fastmlp.cuda_available()
requires_gpu = pytest.mark.skipif(
    not HAVE_GPU,
    reason=f"no usable CUDA GPU: {_info.get('error') or 'fastmlp was built without CUDA'}",
)

EPS32 = float(np.finfo(np.float32).eps)
TF32_EPS = 2.0**-11  # unit roundoff of TF32's 10-bit mantissa (round to nearest)
TRANS = [(False, False), (False, True), (True, False), (True, True)]
TRANS_IDS = ["NN", "NT", "TN", "TT"]
# GEMM sizes: 1, primes and odd sizes, around the tiles (64/128 in m and n, 8/16 in k) and large.
GEMM_SHAPES = [
    (1, 1, 1),
    (1, 7, 3),
    (5, 1, 17),
    (3, 5, 1),
    (17, 31, 13),
    (63, 65, 9),
    (64, 64, 16),
    (127, 129, 33),
    (129, 127, 255),
    (131, 257, 97),
    (1000, 3, 1031),
    (3, 1000, 517),
    (521, 1031, 263),
    (1537, 1543, 67),  # >= 132 tiles of 128 x 128: the large-tile configurations (H100: 132 SMs)
]
ROW_SHAPES = [(1, 1), (1, 33), (7, 1), (13, 31), (64, 10), (257, 1000), (2049, 3)]
ELEM_SHAPES = [(1,), (7,), (33, 5), (1023, 1025)]
ACTIVATIONS = ["identity", "relu", "leaky_relu", "prelu", "elu", "sigmoid", "tanh"]
ALPHAS = {"leaky_relu": 0.03, "prelu": 0.2, "elu": 0.7}


def dev(x: np.ndarray) -> cuda.DeviceArray:
    return fastmlp.to_device(x)


def host(x: object) -> np.ndarray:
    assert isinstance(x, cuda.DeviceArray), "results of DeviceArray inputs stay on the device"
    return x.numpy()


def gemm_tol(k: int, scale: np.ndarray) -> np.ndarray:
    # As tests/test_gemm.py: ~sqrt(k) eps32 random-walk error of a length-k float32 dot product,
    # doubled, plus two eps32 for the final alpha/beta/bias roundings, against
    # scale = |alpha| (|op(A)| @ |op(B)|) + |beta C| + |bias|.
    return (2.0 * np.sqrt(max(k, 1)) + 2.0) * EPS32 * scale


def tf32_tol(k: int, scale: np.ndarray) -> np.ndarray:
    # TF32 rounds each operand once (relative error <= 2^-11 each), so every product a_ip b_pj is
    # off by at most ~2 * 2^-11 of |a_ip b_pj|: at most 2^-10 * scale in the worst case where all
    # the errors add up, on top of the FP32 accumulation bound. Dropping one k8 step or a tile's
    # worth of terms is far above this for the k used here.
    return 2.0 * TF32_EPS * scale + gemm_tol(k, scale)


# ====================================================================== tests without a GPU
@pytest.mark.skipif(HAVE_GPU, reason="checks the error raised where no GPU is usable")
def test_to_device_without_gpu_says_why() -> None:
    reason = _info.get("error") or "built without CUDA"
    with pytest.raises(RuntimeError, match="CUDA is not available") as exc:
        fastmlp.to_device(np.ones(3, dtype=np.float32))
    assert str(reason) in str(exc.value)  # the reason fastmlp._cuda_info() gives


@pytest.mark.skipif(HAVE_GPU, reason="checks the error raised where no GPU is usable")
@pytest.mark.parametrize(
    "call",
    [
        lambda a: ops.matmul(a, a, device="cuda"),
        lambda a: ops.relu(a, device="cuda"),
        lambda a: ops.softmax(a, device="cuda"),
        lambda a: ops.mse_loss(a, a, device="cuda"),
        lambda a: ops.dropout(a, 0.5, seed=1, device="cuda"),
        lambda a: ops.dropout_mask(3, 0.5, seed=1, device="cuda"),
        lambda a: ops.sgd_step(a.copy(), a, lr=0.1, device="cuda"),
        lambda a: cuda.empty((2, 2)),
    ],
    ids=["matmul", "relu", "softmax", "mse", "dropout", "dropout_mask", "sgd", "empty"],
)
def test_ops_on_cuda_without_gpu_raise_runtime_error(call) -> None:
    a = np.ones((3, 3), dtype=np.float32)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        call(a)


def test_unknown_device_is_a_value_error() -> None:
    a = np.ones((2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"^device: unknown device 'tpu'"):
        ops.matmul(a, a, device="tpu")
    with pytest.raises(TypeError, match=r"^device: "):
        ops.relu(a, device=0)  # type: ignore[arg-type]


_UNREAD: Any = None  # an argument the flag check comes before


@pytest.mark.parametrize("value", ["False", "no", 0, 1, None], ids=repr)
@pytest.mark.parametrize(
    ("flag", "call"),
    [
        ("trans_a", lambda v: cuda.gemm(_UNREAD, _UNREAD, _UNREAD, trans_a=v)),
        ("trans_b", lambda v: cuda.gemm(_UNREAD, _UNREAD, _UNREAD, trans_b=v)),
        ("tf32", lambda v: cuda.gemm(_UNREAD, _UNREAD, _UNREAD, tf32=v)),
        ("training", lambda v: cuda.fused_mlp_forward(_UNREAD, [], [], training=v)),
    ],
    ids=["gemm-trans_a", "gemm-trans_b", "gemm-tf32", "fused_forward-training"],
)
def test_device_flags_take_a_bool_only(flag, call, value) -> None:
    # Checked first, with or without a GPU: bool("False") is True (a transposed product, TF32,
    # or three results instead of the logits).
    with pytest.raises(TypeError, match=rf"^{flag}: expected True or False, got "):
        call(value)


def test_device_cpu_is_the_unchanged_cpu_path(rng) -> None:
    a = rng.standard_normal((37, 19)).astype(np.float32)
    b = rng.standard_normal((19, 23)).astype(np.float32)
    # Bit-identical: device="cpu" and device=None are the same code path.
    np.testing.assert_array_equal(ops.matmul(a, b, device="cpu"), ops.matmul(a, b))
    np.testing.assert_array_equal(ops.softmax(a, device="cpu"), ops.softmax(a))
    loss_cpu, grad_cpu = ops.mse_loss(a, a + 1, device="cpu")
    loss, grad = ops.mse_loss(a, a + 1)
    assert loss_cpu == loss
    np.testing.assert_array_equal(grad_cpu, grad)


def test_cuda_info_reports_a_reason_when_unavailable() -> None:
    info = fastmlp._cuda_info()
    assert info["compiled"] in (True, False)
    if not fastmlp.cuda_available():
        assert info["error"], "no GPU usable but no reason given"


# ====================================================================== DeviceArray
@requires_gpu
def test_to_device_names_values_beyond_float32() -> None:
    x = np.ones((2, 3))
    x[1, 2] = -1e39
    with pytest.raises(ValueError, match=r"^x: -1e\+39 at \[1, 2\] is too large for float32"):
        fastmlp.to_device(x)
    with pytest.raises(ValueError, match=r"^x: -1e\+39 at \[1, 2\] is too large for float32"):
        ops.relu(x, device="cuda")
    np.testing.assert_array_equal(fastmlp.to_device(np.array([np.inf, 1.0])).numpy(), [np.inf, 1])


@requires_gpu
def test_devices_are_listed_with_compute_capability() -> None:
    info = fastmlp._cuda_info()
    assert info["device_count"] == len(info["devices"]) >= 1
    assert all(cc >= 50 for cc in info["compute_capabilities"])
    assert fastmlp.build_info()["cuda_devices"] == info["devices"]


@requires_gpu
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 5), (2, 3, 4), (0, 4), (1001, 257)])
def test_device_array_round_trip(rng, shape) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    d = fastmlp.to_device(x)
    assert d.shape == shape and d.dtype == np.float32 and d.size == x.size
    assert d.nbytes == x.nbytes and d.ndim == len(shape)
    np.testing.assert_array_equal(d.numpy(), x)  # a copy: bit-identical
    labels = rng.integers(-5, 5, size=shape)
    np.testing.assert_array_equal(fastmlp.to_device(labels).numpy(), labels.astype(np.int64))


@requires_gpu
def test_device_array_conversions_and_views(rng) -> None:
    x64 = rng.standard_normal((4, 6))
    d = fastmlp.to_device(x64)  # float64 -> float32, as the CPU conversion policy
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d.numpy(), x64.astype(np.float32))
    np.testing.assert_array_equal(
        fastmlp.to_device(x64[:, ::2]).numpy(), x64[:, ::2].astype(np.float32)
    )
    v = d.reshape(3, -1)
    assert v.shape == (3, 8) and v.ptr == d.ptr  # a view of the same memory
    c = d.copy()
    assert c.ptr != d.ptr
    np.testing.assert_array_equal(c.numpy(), d.numpy())
    d.copy_from(np.zeros((4, 6), dtype=np.float32))
    np.testing.assert_array_equal(d.numpy(), 0.0)
    np.testing.assert_array_equal(cuda.zeros((5, 2)).numpy(), np.zeros((5, 2), np.float32))
    with pytest.raises(TypeError, match=r"^dtype: "):
        cuda.empty(3, np.float16)
    with pytest.raises(TypeError, match=r"^x: "):
        fastmlp.to_device(np.array([True, False]))
    with pytest.raises(TypeError, match=r"\.numpy\(\)"):
        np.asarray(d)  # no silent device-to-host copies
    with pytest.raises(ValueError, match=r"^shape: "):
        d.reshape(5, 5)
    assert "cuda:" in repr(d)


@pytest.mark.parametrize("shape", [(2**62, 4), (2**31, 2**31, 2**31), (2**61,)])
def test_device_shapes_too_large_are_refused_before_allocating(shape) -> None:
    # NumPy's int64 product wraps (2**62 * 4 == 0), which made a 0-byte buffer for a shape that
    # the kernels then indexed; the shape is checked before any GPU call, so this runs anywhere.
    with pytest.raises(ValueError, match=r"^shape: .* more than 2\*\*60 elements"):
        cuda.empty(shape)


@requires_gpu
def test_out_of_device_memory_is_a_memory_error_naming_the_allocation() -> None:
    with pytest.raises(
        MemoryError, match=r"allocating a float32 array of shape \(1099511627776,\)"
    ):
        cuda.empty((2**40,))  # 4 TiB
    fastmlp.to_device(np.ones(4, np.float32))  # and the device is still usable afterwards


@requires_gpu
def test_cuda_array_interface_v3() -> None:
    d = fastmlp.to_device(np.arange(6, dtype=np.float32).reshape(2, 3))
    cai = d.__cuda_array_interface__
    assert cai["version"] == 3 and cai["shape"] == (2, 3) and cai["typestr"] == "<f4"
    assert cai["data"] == (d.ptr, False) and cai["strides"] is None and cai["stream"] == 1
    assert d.__dlpack_device__() == (2, d.device)


@requires_gpu
def test_cupy_reads_without_copy(rng) -> None:
    cp = pytest.importorskip("cupy")
    x = rng.standard_normal((33, 17)).astype(np.float32)
    d = fastmlp.to_device(x)
    for view in (cp.asarray(d), cp.from_dlpack(d)):
        assert view.data.ptr == d.ptr  # the same memory, no copy
        np.testing.assert_array_equal(cp.asnumpy(view), x)
    # And back: fastmlp ops on memory CuPy then changed.
    cp.asarray(d)[0, 0] = 123.0
    assert d.numpy()[0, 0] == 123.0


@requires_gpu
def test_torch_reads_without_copy(rng) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch has no CUDA")
    x = rng.standard_normal((9, 5)).astype(np.float32)
    d = fastmlp.to_device(x)
    t = torch.from_dlpack(d)
    assert t.is_cuda and t.data_ptr() == d.ptr and tuple(t.shape) == (9, 5)
    np.testing.assert_array_equal(t.cpu().numpy(), x)
    labels = fastmlp.to_device(np.array([3, 1, 2]))
    assert torch.from_dlpack(labels).dtype == torch.int64
    t2 = torch.as_tensor(d, device="cuda")  # through __cuda_array_interface__
    assert t2.data_ptr() == d.ptr
    del d
    torch.cuda.synchronize()
    np.testing.assert_array_equal(t.cpu().numpy(), x)  # the capsule keeps the memory alive


# ====================================================================== GEMM
def _gemm_case(rng, m, n, k, ta, tb):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    return a, b


@requires_gpu
@pytest.mark.parametrize(("ta", "tb"), TRANS, ids=TRANS_IDS)
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("tf32", [False, True], ids=["fp32", "tf32"])
def test_gemm_matches_reference(rng, shape, ta, tb, tf32) -> None:
    m, n, k = shape
    a, b = _gemm_case(rng, m, n, k, ta, tb)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    alpha, beta = 0.75, -0.5
    c = fastmlp.to_device(c0)
    z = cuda.empty((m, n))
    cuda.gemm(
        c,
        dev(a),
        dev(b),
        trans_a=ta,
        trans_b=tb,
        alpha=alpha,
        beta=beta,
        bias=dev(bias),
        activation="identity",
        preactivation=z,
        tf32=tf32,
    )
    ref = reference.matmul(a, b, trans_a=ta, trans_b=tb, alpha=alpha, out=c0, beta=beta) + bias
    opa = np.abs(a.T if ta else a).astype(np.float64)
    opb = np.abs(b.T if tb else b).astype(np.float64)
    scale = abs(alpha) * (opa @ opb) + abs(beta) * np.abs(c0) + np.abs(bias)
    tol = tf32_tol(k, scale) if tf32 else gemm_tol(k, scale)
    got = c.numpy()
    assert np.all(np.abs(got - ref) <= tol), f"max err {np.max(np.abs(got - ref) - tol)} over tol"
    np.testing.assert_array_equal(z.numpy(), got)  # identity: preactivation == output
    if tf32 and m * n * k >= 10**6:
        # Typical TF32 error is far below the worst case: ~3e-4 relative in the Frobenius norm.
        rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert rel < 2e-3, rel


@requires_gpu
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("tf32", [False, True], ids=["fp32", "tf32"])
def test_linear_epilogue_matches_reference(rng, activation, tf32) -> None:
    m, k, n = 131, 67, 259
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    alpha = ALPHAS.get(activation)
    y, z = cuda.empty((m, n)), cuda.empty((m, n))
    y.copy_from(np.full((m, n), np.nan, np.float32))  # beta == 0: the old C is never read
    cuda.gemm(
        y,
        dev(x),
        dev(w),
        bias=dev(bias),
        activation=activation,
        activation_alpha=alpha,
        preactivation=z,
        tf32=tf32,
    )
    ref_z = x.astype(np.float64) @ w + bias
    scale = np.abs(x).astype(np.float64) @ np.abs(w) + np.abs(bias)
    tol = tf32_tol(k, scale) if tf32 else gemm_tol(k, scale)
    assert np.all(np.abs(z.numpy() - ref_z) <= tol)
    # The activation of the stored z, against the reference: the forward tolerance of
    # test_activations (<= 10 ulp for the transcendental ones: common/exp_math.h on both).
    np.testing.assert_allclose(
        y.numpy(), reference.activation(z.numpy(), activation, alpha), rtol=1e-6, atol=1e-38
    )
    # ops.linear with device="cuda" returns NumPy and agrees with the device call bit for bit.
    if not tf32:
        y2, z2 = ops.linear(
            x, w, bias, activation=activation, alpha=alpha, return_preactivation=True, device="cuda"
        )
        assert isinstance(y2, np.ndarray)
        np.testing.assert_array_equal(y2, y.numpy())
        np.testing.assert_array_equal(z2, z.numpy())


@requires_gpu
def test_gemm_k_zero_and_empty(rng) -> None:
    # k == 0: C = act(beta C + bias); m or n == 0: nothing.
    c0 = rng.standard_normal((5, 3)).astype(np.float32)
    c = dev(c0)
    cuda.gemm(c, cuda.empty((5, 0)), cuda.empty((0, 3)), beta=2.0)
    np.testing.assert_allclose(c.numpy(), 2.0 * c0, rtol=EPS32, atol=0)  # one rounding
    out = ops.matmul(cuda.empty((0, 4)), cuda.empty((4, 6)))
    assert out.shape == (0, 6)


@requires_gpu
@pytest.mark.parametrize("tf32", [False, True], ids=["fp32", "tf32"])
def test_gemm_beyond_the_grid_row_limit(rng, tf32) -> None:
    # More than 65,535 row tiles of 128 (gridDim.y's limit): the rows run as several launches.
    # The CPU GEMM has no such limit, and a batch this tall reaches the GPU's products too.
    m = 65535 * 128 + 77
    a = rng.standard_normal((m, 3)).astype(np.float32)
    b = rng.standard_normal((3, 2)).astype(np.float32)
    bias = np.array([0.5, -0.5], np.float32)
    pre = cuda.empty((m, 2))
    c = cuda.gemm(
        cuda.empty((m, 2)),
        dev(a),
        dev(b),
        bias=dev(bias),
        activation="relu",
        preactivation=pre,
        tf32=tf32,
    )
    z = a.astype(np.float64) @ b + bias
    bound = (4 * TF32_EPS if tf32 else 4 * EPS32) * (np.abs(a) @ np.abs(b) + np.abs(bias))
    assert np.all(np.abs(host(pre) - z) <= bound + 1e-30)  # every row, the last slab's too
    assert np.all(np.abs(host(c) - np.maximum(z, 0.0)) <= bound + 1e-30)
    # trans_a: the slabs start at columns of the stored A^T
    ct = cuda.gemm(
        cuda.empty((m, 2)), dev(np.ascontiguousarray(a.T)), dev(b), trans_a=True, tf32=tf32
    )
    assert np.all(np.abs(host(ct) - (z - bias)) <= bound + 1e-30)


@requires_gpu
@pytest.mark.parametrize("tf32", [False, True], ids=["fp32", "tf32"])
def test_gemm_alpha_zero_reads_neither_a_nor_b(rng, tf32) -> None:
    # As BLAS and the CPU: alpha == 0 gives beta * C, even with inf/NaN in A and B.
    a = rng.standard_normal((37, 19)).astype(np.float32)
    b = rng.standard_normal((19, 23)).astype(np.float32)
    a[3, 4], b[5, 6] = np.inf, np.nan
    c0 = rng.standard_normal((37, 23)).astype(np.float32)
    c = dev(c0)
    cuda.gemm(c, dev(a), dev(b), alpha=0.0, beta=0.5, tf32=tf32)
    np.testing.assert_array_equal(c.numpy(), np.float32(0.5) * c0)


@requires_gpu
def test_matmul_dispatch_and_errors(rng) -> None:
    a = rng.standard_normal((7, 5)).astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    r_host = ops.matmul(a, b, device="cuda")
    assert isinstance(r_host, np.ndarray)
    r_dev = ops.matmul(dev(a), dev(b))
    assert isinstance(r_dev, cuda.DeviceArray)
    np.testing.assert_array_equal(r_host, r_dev.numpy())  # same kernel: same bits
    out = np.zeros((7, 3), np.float32)
    ops.matmul(a, b, out=out, beta=1.0, device="cuda")
    np.testing.assert_array_equal(out, r_host)  # 0 * beta + r: exact
    with pytest.raises(ValueError, match=r"^b: "):
        ops.matmul(dev(a), dev(a))
    with pytest.raises(TypeError, match=r"^a: "):
        ops.matmul(fastmlp.to_device(np.ones((2, 2), np.int64)), dev(b))
    with pytest.raises(ValueError, match=r"^device: 'cpu'"):
        ops.matmul(dev(a), dev(b), device="cpu")


@requires_gpu
def test_gemm_repeats_bit_identically(rng) -> None:
    a = rng.standard_normal((517, 263)).astype(np.float32)
    b = rng.standard_normal((263, 389)).astype(np.float32)
    for tf32 in (False, True):
        results = []
        for _ in range(3):
            c = cuda.empty((517, 389))
            cuda.gemm(c, dev(a), dev(b), tf32=tf32)
            results.append(c.numpy())
        np.testing.assert_array_equal(results[0], results[1])
        np.testing.assert_array_equal(results[0], results[2])


# ====================================================================== activations
@requires_gpu
@pytest.mark.parametrize("shape", ELEM_SHAPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_match_reference(rng, name, shape) -> None:
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    dy = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    alpha = ALPHAS.get(name)
    y = host(ops.activation(dev(x), name, alpha))
    # The CPU tests' forward tolerances: exact for identity/relu, 2u for one product, < 10u for
    # the transcendental kinds (common/exp_math.h's functions on both devices).
    rtol, atol = {
        "identity": (0, 0),
        "relu": (0, 0),
        "leaky_relu": (2e-7, 0),
        "prelu": (2e-7, 0),
    }.get(name, (1e-6, 1e-38))
    np.testing.assert_allclose(y, reference.activation(x, name, alpha), rtol=rtol, atol=atol)
    dx = host(ops.activation_backward(dev(x), dev(y), dev(dy), name, alpha))
    # As the CPU test: derivatives from the float32 y cancel near |y| = 1 (absolute error
    # ~4e-7 |dy|), rtol 1e-5 elsewhere.
    ref = reference.activation_backward(x, None, dy, name, alpha)
    np.testing.assert_allclose(dx, ref, rtol=1e-5, atol=1e-6)


@requires_gpu
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (33, 65), (2001, 37), (3, 5000)])
@pytest.mark.parametrize("per_column", [False, True])
def test_prelu_and_column_sum_match_reference(rng, shape, per_column) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    slope = rng.uniform(0.0, 0.5, shape[1] if per_column else 1).astype(np.float32)
    np.testing.assert_allclose(
        host(ops.prelu(dev(x), dev(slope))), reference.prelu(x, slope), rtol=2e-7, atol=0
    )  # one rounding of slope * x
    dx, dslope = ops.prelu_backward(dev(x), dev(slope), dev(dy))
    ref_dx, ref_dslope = reference.prelu_backward(x, slope, dy)
    np.testing.assert_allclose(host(dx), ref_dx, rtol=2e-7, atol=0)
    # dslope: double sums (error ~ n 2^-53 sum|terms|, in atol) rounded once to float32 (2u).
    terms = np.abs(dy.astype(np.float64) * np.minimum(x, 0))
    scale = terms.sum() if not per_column else terms.sum(axis=0)
    np.testing.assert_allclose(
        host(dslope), ref_dslope, rtol=2e-7, atol=1e-12 * np.max(scale) + 1e-30
    )
    atol = 1e-12 * float(np.abs(x).sum(axis=0).max()) + 1e-30  # as the CPU column_sum test
    np.testing.assert_allclose(
        host(ops.column_sum(dev(x))), reference.column_sum(x), rtol=1e-7, atol=atol
    )


@requires_gpu
@pytest.mark.parametrize("per_column", [False, True])
def test_prelu_slope_gradient_keeps_nan_as_the_cpu(per_column) -> None:
    # dslope sums dy * min(x, 0): a NaN in x makes its column's (or the shared) slope gradient
    # NaN on the CPU and in the reference; fminf(NaN, 0) = 0 on the GPU used to drop it.
    x = np.array([[1.0, -2.0], [np.nan, 3.0]], np.float32)
    dy = np.ones_like(x)
    slope = np.full(2 if per_column else 1, 0.25, np.float32)
    _, ref_dslope = reference.prelu_backward(x, slope, dy)
    _, cpu_dslope = ops.prelu_backward(x, slope, dy)
    _, gpu_dslope = ops.prelu_backward(dev(x), dev(slope), dev(dy))
    np.testing.assert_array_equal(host(gpu_dslope), cpu_dslope)
    np.testing.assert_array_equal(host(gpu_dslope), np.asarray(ref_dslope, np.float32))


@requires_gpu
@pytest.mark.parametrize("shape", ROW_SHAPES)
def test_softmax_matches_reference(rng, shape) -> None:
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y = host(ops.softmax(dev(x)))
    np.testing.assert_allclose(y, reference.softmax(x), rtol=1e-5, atol=1e-7)  # as the CPU test
    ly = host(ops.log_softmax(dev(x)))
    np.testing.assert_allclose(ly, reference.log_softmax(x), rtol=1e-6, atol=1e-6)
    dx = host(ops.softmax_backward(dev(y), dev(dy)))
    np.testing.assert_allclose(dx, reference.softmax_backward(y, dy), rtol=1e-5, atol=1e-7)
    ldx = host(ops.log_softmax_backward(dev(ly), dev(dy)))
    atol = 1e-6 * max(1.0, float(np.abs(dy.sum(axis=1, dtype=np.float64)).max()))
    np.testing.assert_allclose(ldx, reference.log_softmax_backward(ly, dy), rtol=1e-5, atol=atol)


@requires_gpu
def test_softmax_is_stable_for_huge_logits() -> None:
    x = np.array([[1000.0, -1000.0, 0.0], [5e3, 5e3, 5e3]], dtype=np.float32)
    ly = ops.log_softmax(x, device="cuda")
    np.testing.assert_allclose(ly[0], [0.0, -2000.0, -1000.0], rtol=1e-7, atol=0)
    np.testing.assert_allclose(ly[1], np.log(1 / 3), rtol=1e-6)
    assert np.all(np.isfinite(ops.softmax(x, device="cuda")))


# ====================================================================== losses
@requires_gpu
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 3), (33, 10), (257, 1001), (4097, 2)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_matches_reference(rng, shape, smoothing) -> None:
    n, c = shape
    z = (rng.standard_normal(shape) * 3).astype(np.float32)
    y = rng.integers(0, c, n)
    loss, dz = ops.softmax_cross_entropy(dev(z), dev(y), label_smoothing=smoothing)
    ref_loss, ref_dz = reference.softmax_cross_entropy(z, y, label_smoothing=smoothing)
    assert loss == pytest.approx(ref_loss, rel=1e-6)  # double accumulation of float32 terms
    # As the CPU test: compare n * dz (the 1/n factor scaled out) with an absolute 1e-6.
    np.testing.assert_allclose(n * host(dz), n * ref_dz, rtol=0, atol=1e-6)
    loss2, none = ops.softmax_cross_entropy(
        z, y, label_smoothing=smoothing, need_grad=False, device="cuda"
    )
    assert none is None and loss2 == loss  # the same per-row terms and the same fixed-order sum


@requires_gpu
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (33, 10), (257, 1001), (4097, 2)])
def test_regression_losses_match_reference(rng, shape) -> None:
    p = rng.standard_normal(shape).astype(np.float32)
    t = rng.standard_normal(shape).astype(np.float32)
    loss, dp = ops.mse_loss(dev(p), dev(t))
    ref_loss, ref_dp = reference.mse_loss(p, t)
    assert loss == pytest.approx(ref_loss, rel=1e-12)  # double sums of exact float64 squares
    np.testing.assert_allclose(host(dp), ref_dp, rtol=2.5e-7, atol=0)  # as the CPU test
    z = (rng.standard_normal(shape) * 4).astype(np.float32)
    tb = rng.uniform(0, 1, shape).astype(np.float32)
    loss, dz = ops.bce_with_logits(dev(z), dev(tb))
    ref_loss, ref_dz = reference.bce_with_logits(z, tb)
    assert loss == pytest.approx(ref_loss, rel=1e-6)  # exp/log1p_unit terms, ~1 ulp each
    size = z.size
    np.testing.assert_allclose(size * host(dz), size * ref_dz, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"^targets: "):
        ops.bce_with_logits(dev(z), dev(tb + 2))


@requires_gpu
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (33, 10), (257, 1001)])
def test_hinge_loss_matches_reference(rng, shape) -> None:
    n, c = shape
    s = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, c, n)
    loss, ds = ops.multiclass_hinge_loss(dev(s), dev(y), margin=1.0)
    ref_loss, ref_ds = reference.multiclass_hinge_loss(s, y, margin=1.0)
    assert loss == pytest.approx(ref_loss, rel=1e-12)  # the same double margins, summed in double
    np.testing.assert_allclose(host(ds), ref_ds, rtol=1.2e-7, atol=0)  # as the CPU test


@requires_gpu
def test_loss_label_checks_on_device(rng) -> None:
    z = dev(rng.standard_normal((4, 3)).astype(np.float32))
    with pytest.raises(ValueError, match=r"^labels: "):
        ops.softmax_cross_entropy(z, dev(np.array([0, 1, 3, 0])))  # 3 is out of range
    with pytest.raises(ValueError, match=r"^labels: "):
        ops.multiclass_hinge_loss(z, dev(np.array([0, -1, 2, 0])))
    with pytest.raises(TypeError, match=r"^labels: "):
        ops.softmax_cross_entropy(z, dev(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match=r"^labels: "):
        ops.softmax_cross_entropy(np.zeros((4, 3), np.float32), [0, 1, 3, 0], device="cuda")


@requires_gpu
def test_losses_repeat_bit_identically(rng) -> None:
    z = dev((rng.standard_normal((3001, 97)) * 3).astype(np.float32))
    y = dev(rng.integers(0, 97, 3001))
    first = ops.softmax_cross_entropy(z, y)
    for _ in range(3):
        again = ops.softmax_cross_entropy(z, y)
        assert again[0] == first[0]
        np.testing.assert_array_equal(again[1].numpy(), first[1].numpy())
    sums = [ops.column_sum(z).numpy() for _ in range(3)]
    np.testing.assert_array_equal(sums[0], sums[1])
    np.testing.assert_array_equal(sums[0], sums[2])


# ====================================================================== dropout
@requires_gpu
@pytest.mark.parametrize("n", [1, 3, 4, 5, 1023, 100_003])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 2**64 - 2])
def test_dropout_masks_equal_across_devices(rng, n, offset) -> None:
    p, seed = 0.3, 2**40 + 17
    cpu_mask = ops.dropout_mask(n, p, seed=seed, offset=offset)
    gpu_mask = ops.dropout_mask(n, p, seed=seed, offset=offset, device="cuda")
    np.testing.assert_array_equal(gpu_mask, cpu_mask)  # bit for bit: same Philox, same float ops
    np.testing.assert_array_equal(gpu_mask, reference.dropout_mask(n, p, seed=seed, offset=offset))
    x = rng.standard_normal(n).astype(np.float32)
    x[:: max(1, n // 3)] = np.nan  # dropped elements are exactly 0 even where x is NaN
    np.testing.assert_array_equal(
        host(ops.dropout(dev(x), p, seed=seed, offset=offset)),
        ops.dropout(x, p, seed=seed, offset=offset),
    )
    np.testing.assert_array_equal(
        host(ops.dropout_backward(dev(x), p, seed=seed, offset=offset)),
        ops.dropout_backward(x, p, seed=seed, offset=offset),
    )
    np.testing.assert_array_equal(ops.dropout(x, 0.0, seed=seed, device="cuda"), x)


# ====================================================================== optimizers
OPTIMIZERS = {
    "sgd": (
        ops.sgd_step,
        ["momentum_buffer"],
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    ),
    "sgd_plain": (ops.sgd_step, [], {"lr": 0.05, "l1": 1e-3}),
    "adagrad": (ops.adagrad_step, ["sum_sq"], {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 1e-3}),
    "rmsprop": (
        ops.rmsprop_step,
        ["square_avg", "momentum_buffer", "grad_avg"],
        {"lr": 0.01, "momentum": 0.5, "centered": True, "l1": 1e-4},
    ),
    "adam": (ops.adam_step, ["m", "v"], {"lr": 1e-2, "weight_decay": 1e-2}),
    "adamw": (ops.adamw_step, ["m", "v"], {"lr": 1e-2, "weight_decay": 1e-1}),
}


@requires_gpu
@pytest.mark.parametrize("n", [1, 7, 4096, 4097, 100_001])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizers_match_cpu_bit_for_bit(rng, name, n) -> None:
    fn, state_names, hyper = OPTIMIZERS[name]
    p_cpu = rng.standard_normal(n).astype(np.float32)
    states_cpu = {s: np.zeros(n, np.float32) for s in state_names}
    p_gpu = dev(p_cpu)
    states_gpu = {s: cuda.zeros(n) for s in state_names}
    for step in range(1, 4):
        g = rng.standard_normal(n).astype(np.float32)
        step_arg = {"step": step}
        fn(p_cpu, g, **states_cpu, **hyper, **step_arg)
        fn(p_gpu, dev(g), **states_gpu, **hyper, **step_arg)
    # optim.cu is built with --fmad=false and uses the CPU's scalar rules: identical bits.
    np.testing.assert_array_equal(p_gpu.numpy(), p_cpu)
    for s in state_names:
        np.testing.assert_array_equal(states_gpu[s].numpy(), states_cpu[s], err_msg=s)


@requires_gpu
def test_optimizer_numpy_buffers_on_cuda_are_updated_in_place(rng) -> None:
    p = rng.standard_normal(33).astype(np.float32)
    g = rng.standard_normal(33).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    p_ref, m_ref, v_ref = p.copy(), m.copy(), v.copy()
    # The reference gets the float32-rounded hyper-parameters the kernels use (see test_optim).
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    reference_p, reference_m, reference_v = reference.adam_step(
        p, g, m, v, 1, lr=f32(0.01), betas=(f32(0.9), f32(0.999))
    )
    ops.adam_step(p, g, m, v, 1, lr=0.01, device="cuda")
    ops.adam_step(p_ref, g, m_ref, v_ref, 1, lr=0.01)
    np.testing.assert_array_equal(p, p_ref)  # bit-identical to the CPU
    np.testing.assert_array_equal(m, m_ref)
    np.testing.assert_array_equal(v, v_ref)
    # And the float64 reference within test_optim's one-step bound, 2e-6 * max |array|.
    for got, want in ((p, reference_p), (m, reference_m), (v, reference_v)):
        scale = max(np.abs(got).max(), np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale)
    with pytest.raises(ValueError, match=r"^v: shares memory with m"):
        mm = cuda.zeros(33)
        ops.adam_step(dev(p), dev(g), mm, mm, 1)


@requires_gpu
def test_multi_tensor_launch_matches_per_tensor_cpu_steps(rng) -> None:
    """The kernels' multi-tensor path: 40 tensors (over the 32 of one launch), empty ones, and
    sizes around the 4096-element block chunk, in one call; each must equal its own CPU step."""
    from fastmlp import _cuda

    sizes = [0, 1, 4095, 4096, 4097, 10_001, 3, 0, 8192, 77] * 4 + [5]  # 33 non-empty
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    cpu = [p.copy() for p in params]
    m_cpu = [np.zeros(n, np.float32) for n in sizes]
    v_cpu = [np.zeros(n, np.float32) for n in sizes]
    dev_p = [dev(p) for p in params]
    dev_m = [cuda.zeros(n) for n in sizes]
    dev_v = [cuda.zeros(n) for n in sizes]
    for step in (1, 2):
        grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        dev_g = [dev(g) for g in grads]
        _cuda.adam_step(
            [d._buf for d in dev_p],
            [d._buf for d in dev_g],
            sizes,
            [d._buf for d in dev_m],
            [d._buf for d in dev_v],
            lr=1e-2,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            decoupled_weight_decay=True,
            l1=0.0,
            step=step,
        )
        for i in range(len(sizes)):
            ops.adamw_step(cpu[i], grads[i], m_cpu[i], v_cpu[i], step, lr=1e-2, weight_decay=0.0)
    for i in range(len(sizes)):
        np.testing.assert_array_equal(dev_p[i].numpy(), cpu[i], err_msg=f"tensor {i}")
        np.testing.assert_array_equal(dev_v[i].numpy(), v_cpu[i], err_msg=f"tensor {i}")


@requires_gpu
def test_masked_arrays_are_refused_on_the_way_to_the_gpu():
    x = np.ma.array(np.ones(3, np.float32), mask=[0, 1, 0])
    with pytest.raises(TypeError, match=r"^x: masked arrays are not supported"):
        cuda.to_device(x)
    dev = cuda.zeros((3,))
    with pytest.raises(TypeError, match=r"^src: masked arrays are not supported"):
        dev.copy_from(x)
