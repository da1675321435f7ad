"""Matrix products on the fused CPU GEMM (``_core.gemm``, csrc/cpu/gemm.cpp)."""

from __future__ import annotations

import numpy as np

from .. import _core
from .._checks import _shape_str, as_float_input, as_inplace, check_bool, check_real
from . import _dispatch
from ._activations import resolve_linear_activation

__all__ = ["linear", "matmul"]


def _inner_dims(
    a_shape: tuple[int, ...], b_shape: tuple[int, ...], trans_a: bool, trans_b: bool
) -> tuple[int, int, int]:
    m, k = (a_shape[1], a_shape[0]) if trans_a else a_shape
    kb, n = (b_shape[1], b_shape[0]) if trans_b else b_shape
    if kb != k:
        what = "columns (b is transposed)" if trans_b else "rows"
        raise ValueError(
            f"b: expected {k} {what} to match the inner dimension of op(a), got {kb} "
            f"(a {_shape_str(a_shape)}, b {_shape_str(b_shape)}, trans_a={trans_a}, "
            f"trans_b={trans_b})"
        )
    return m, n, k


def _matrix_operand(
    x: object, name: str, trans: bool, out: np.ndarray | None = None
) -> tuple[np.ndarray, bool]:
    """``x`` as a C-ordered float32 matrix for the kernels, with its ``trans`` flag. A float32
    matrix laid out column by column (``y.T`` of a C-ordered ``y``, say) is passed as its
    transpose with the flag flipped, read where it lies, as NumPy's matmul does for BLAS, unless
    it shares memory with ``out``; anything else goes through ``as_float_input`` (checked, and
    copied where it must be)."""
    if type(x) is np.ndarray and x.ndim == 2 and x.dtype == np.float32:
        flags = x.flags  # one flags object: each attribute access builds a new one
        if flags.c_contiguous:
            return x, trans
        if flags.f_contiguous and (out is None or not np.may_share_memory(x, out)):
            return x.T, not trans
    return as_float_input(x, name, 2), trans


def matmul(
    a: object,
    b: object,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
    alpha: float = 1.0,
    out: np.ndarray | None = None,
    beta: float = 0.0,
    device: str | None = None,
) -> np.ndarray:
    """Return ``alpha * op(a) @ op(b) + beta * out`` as float32, where ``op(x)`` is ``x.T`` if
    ``trans_x``.

    ``a`` is (m, k) or, with ``trans_a``, (k, m); ``b`` is (k, n) or, with ``trans_b``, (n, k).
    The result is written into ``out`` (float32, C-contiguous, writable, shape (m, n)) when given,
    else into a new array. ``beta != 0`` needs ``out``; with ``beta == 0`` the old contents of
    ``out`` are never read (NaN there does not propagate). As in BLAS, ``alpha == 0`` reads
    neither ``a`` nor ``b`` (the result is ``beta * out``, even where they hold NaN or inf).
    ``out`` may not share memory with ``a`` or ``b``.

    ``trans_a`` and ``trans_b`` are bools; ``alpha`` and ``beta`` real numbers, finite in float32.
    A transposed view (``x.T`` of a C-ordered float32 ``x``) is read where it lies, not copied.

    ``device="cuda"`` (or DeviceArray inputs) runs it on the GPU: see :mod:`fastmlp.cuda`.
    """
    # Checked, not coerced: float("2") and bool("False") would run a product nobody asked for.
    trans_a = check_bool(trans_a, "trans_a")
    trans_b = check_bool(trans_b, "trans_b")
    alpha = check_real(alpha, "alpha")
    beta = check_real(beta, "beta")
    # NumPy arrays only and no device= cannot mean the GPU: skip the DeviceArray checks.
    host_only = (
        device is None
        and type(a) is np.ndarray
        and type(b) is np.ndarray
        and (out is None or type(out) is np.ndarray)
    )
    if not host_only and _dispatch.use_cuda(device, a, b, out):
        return _dispatch.matmul(a, b, trans_a, trans_b, alpha, out, beta)
    # Errors speak of the arrays and flags the caller passed, not of a transposed view's base.
    # A transposed view of out itself is still copied (as before), so that out may be written.
    a, kernel_trans_a = _matrix_operand(a, "a", trans_a, out)
    b, kernel_trans_b = _matrix_operand(b, "b", trans_b, out)
    a_shape = a.shape if kernel_trans_a == trans_a else a.shape[::-1]
    b_shape = b.shape if kernel_trans_b == trans_b else b.shape[::-1]
    _inner_dims(a_shape, b_shape, trans_a, trans_b)
    if out is None:
        if beta != 0.0:
            raise ValueError(f"beta: {beta} scales out, so out= must be given")
    else:
        out = as_inplace(out, "out", 2)
    # The kernel call checks out's shape against the product's, and refuses an out that
    # overlaps a or b.
    return _core.matmul(a, b, kernel_trans_a, kernel_trans_b, alpha, out, beta)


def linear(
    x: object,
    weight: object,
    bias: object | None = None,
    *,
    activation: str = "identity",
    alpha: float | None = None,
    return_preactivation: bool = False,
    device: str | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Fully connected layer ``y = act(x @ weight + bias)`` in one fused GEMM.

    ``x`` is (batch, in_features), ``weight`` (in_features, out_features), ``bias``
    (out_features,) or None. ``activation`` is one of "identity", "relu", "leaky_relu", "prelu",
    "elu", "sigmoid", "tanh"; ``alpha`` is the negative slope of leaky_relu (default 0.01) and
    prelu (required, one slope shared by all units) or the scale of elu (default 1.0), checked
    as by :func:`activation` (the others take none). With ``return_preactivation`` the result
    is ``(y, z)`` with ``z = x @ weight + bias``, the value backprop needs. ``device="cuda"``
    (or DeviceArray inputs) runs it on the GPU's FP32 GEMM: see :mod:`fastmlp.cuda`.
    A transposed view (``w.T`` of a C-ordered float32 ``w`` of shape (out_features,
    in_features), PyTorch's layout) is read where it lies, not copied.
    """
    # Checked, not coerced: bool("no") would return a tuple nobody asked for.
    return_preactivation = check_bool(return_preactivation, "return_preactivation")
    if _dispatch.use_cuda(device, x, weight, bias):
        return _dispatch.linear(x, weight, bias, activation, alpha, return_preactivation)
    x, trans_x = _matrix_operand(x, "x", False)
    weight, trans_w = _matrix_operand(weight, "weight", False)
    _, alpha = resolve_linear_activation(activation, alpha)
    m, features = x.shape[::-1] if trans_x else x.shape
    w_rows, n = weight.shape[::-1] if trans_w else weight.shape
    if w_rows != features:
        raise ValueError(
            f"weight: expected {features} rows (x has {features} features), "
            f"got shape {_shape_str((w_rows, n))}"
        )
    if bias is not None:
        bias = as_float_input(bias, "bias", 1)
        if bias.shape[0] != n:
            raise ValueError(
                f"bias: expected shape {_shape_str((n,))}, got {_shape_str(bias.shape)}"
            )
    y = np.empty((m, n), dtype=np.float32)
    z = np.empty((m, n), dtype=np.float32) if return_preactivation else None
    _core.gemm(
        y,
        x,
        weight,
        trans_a=trans_x,
        trans_b=trans_w,
        bias=bias,
        activation=activation,
        activation_alpha=alpha,
        preactivation=z,
    )
    return (y, z) if return_preactivation else y
