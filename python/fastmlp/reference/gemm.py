"""Reference matrix products in float64: what ``fastmlp.ops.matmul`` and ``linear`` compute."""

from __future__ import annotations

import numpy as np

__all__ = ["linear", "matmul"]


def matmul(
    a: np.ndarray,
    b: np.ndarray,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
    alpha: float = 1.0,
    out: np.ndarray | None = None,
    beta: float = 0.0,
) -> np.ndarray:
    """``alpha * op(a) @ op(b) + beta * out`` in float64, ``op(x) = x.T`` if ``trans_x``.

    ``out`` is only read (when ``beta != 0``), never written; the result is a new array.
    """
    op_a = np.asarray(a, dtype=np.float64)
    op_b = np.asarray(b, dtype=np.float64)
    if trans_a:
        op_a = op_a.T
    if trans_b:
        op_b = op_b.T
    result = alpha * (op_a @ op_b)
    if beta != 0.0:
        result = result + beta * np.asarray(out, dtype=np.float64)
    return result


def _activate(z: np.ndarray, activation: str, alpha: float) -> np.ndarray:
    if activation == "identity":
        return z
    if activation == "relu":
        return np.where(z < 0, 0.0, z)  # NaN passes through, as in the kernels
    if activation in ("leaky_relu", "prelu"):
        return np.where(z > 0, z, alpha * z)
    if activation == "elu":
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))
    if activation == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow
    if activation == "tanh":
        return np.tanh(z)
    raise ValueError(f"activation: unknown '{activation}'")


def linear(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    activation: str = "identity",
    alpha: float | None = None,
    return_preactivation: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``y = act(z)``, ``z = x @ weight + bias``; returns ``(y, z)`` with ``return_preactivation``.

    Same defaults for ``alpha`` as ``fastmlp.ops.linear``: 0.01 for leaky_relu, 1.0 for elu.
    """
    z = np.asarray(x, dtype=np.float64) @ np.asarray(weight, dtype=np.float64)
    if bias is not None:
        z = z + np.asarray(bias, dtype=np.float64)
    if alpha is None:
        alpha = {"leaky_relu": 0.01, "elu": 1.0}.get(activation, 0.0)
    y = _activate(z, activation, alpha)
    return (y, z) if return_preactivation else y
