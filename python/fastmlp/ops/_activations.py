"""Activations, PReLU, column sums and row softmaxes on NumPy arrays (kernels in ``fastmlp._core``).

Formulas (``csrc/common/activation_math.h``; at ``x == 0`` the left derivative, as in PyTorch)::

    identity    f(x) = x                                 f'(x) = 1
    relu        f(x) = max(x, 0)                         f'(x) = [x > 0]
    leaky_relu  f(x) = x if x > 0 else alpha * x         f'(x) = 1 if x > 0 else alpha
    prelu       f(x) = x if x > 0 else slope * x         (slope learned, see prelu_backward)
    elu         f(x) = x if x > 0 else alpha (e^x - 1)   f'(x) = 1 if x > 0 else alpha e^x
    sigmoid     f(x) = 1 / (1 + e^-x)                    f'(x) = f(x) (1 - f(x))
    tanh        f(x) = tanh(x)                           f'(x) = 1 - f(x)^2

NaN passes through every forward, relu included (as ``np.maximum`` and PyTorch's relu); the
sign tests are false for NaN.

Every function takes float arrays (converted to C-contiguous float32) and returns new float32
arrays; with ``device="cuda"`` or DeviceArray inputs they run on the GPU (:mod:`fastmlp.cuda`).
``ACTIVATIONS`` (name -> ``fastmlp::Activation`` enum value) and ``DEFAULT_ALPHA`` are the
one table of activation names; other modules validate names through :func:`resolve_activation`.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from .._checks import as_float_input, check_real, check_same_shape, float32_zero_note
from . import _dispatch

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_ALPHA",
    "activation",
    "activation_backward",
    "column_sum",
    "elu",
    "identity",
    "leaky_relu",
    "log_softmax",
    "log_softmax_backward",
    "prelu",
    "prelu_backward",
    "relu",
    "resolve_activation",
    "sigmoid",
    "softmax",
    "softmax_backward",
    "tanh",
]

# Name -> value of the C++ enum fastmlp::Activation (common/activation_math.h). The tests check it
# against _core.ACTIVATION_KINDS, which the bindings build from the enum itself.
ACTIVATIONS: dict[str, int] = {
    "identity": 0,
    "relu": 1,
    "leaky_relu": 2,
    "prelu": 3,
    "elu": 4,
    "sigmoid": 5,
    "tanh": 6,
}

# The activations that take a parameter, and its default (PyTorch's defaults; 0.25 is PReLU's
# initial slope). The others take no alpha.
DEFAULT_ALPHA: dict[str, float] = {"leaky_relu": 0.01, "elu": 1.0, "prelu": 0.25}


def resolve_activation(name: object, alpha: float | None = None) -> tuple[int, float]:
    """Check an activation name and its alpha; return ``(enum value, alpha as float)``.

    ``alpha=None`` takes the default of ``DEFAULT_ALPHA`` (0.0 for activations without one).
    Raises ``TypeError`` for a name that is not a str, ``ValueError`` for an unknown name, an
    alpha given to an activation that takes none, a non-finite alpha, ``leaky_relu`` alpha < 0 or
    ``elu`` alpha <= 0.
    """
    if not isinstance(name, str):
        raise TypeError(f"activation: expected a name (str), got {type(name).__name__}")
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: unknown {name!r}; known: {', '.join(ACTIVATIONS)}")
    if alpha is None:
        return ACTIVATIONS[name], DEFAULT_ALPHA.get(name, 0.0)
    if name not in DEFAULT_ALPHA:
        raise ValueError(f"alpha: activation {name!r} takes no alpha, got {alpha!r}")
    a = check_real(alpha, "alpha")  # finite in float32 too: 1e39 would reach the kernels as inf
    # The backward passes tell x > 0 from x <= 0, so f must keep the sign of x (y > 0 exactly when
    # x > 0): leaky_relu with alpha >= 0 and elu with alpha > 0; a negative alpha also makes f
    # non-monotonic, and elu with alpha = 0 is relu (use "relu"). The backward needs x itself, not
    # y (elu's derivative is alpha e^x: keep the preactivation, e.g. linear's
    # return_preactivation). prelu's slope is learned, so any finite slope is accepted.
    if name == "leaky_relu" and a < 0.0:
        raise ValueError(f"alpha: leaky_relu expects alpha >= 0, got {a}")
    if name == "elu" and (a <= 0.0 or float32_zero_note(a)):  # 1e-46 is 0 in the kernels
        raise ValueError(f"alpha: elu expects alpha > 0, got {a}{float32_zero_note(a)}")
    return ACTIVATIONS[name], a


def resolve_linear_activation(name: object, alpha: float | None) -> tuple[int, float]:
    """:func:`resolve_activation` for ``linear``, where prelu has no default slope (the layer's
    slope is a parameter the caller owns)."""
    if isinstance(name, str) and name == "prelu" and alpha is None:
        raise ValueError("alpha: prelu needs its slope alpha")
    return resolve_activation(name, alpha)


def activation(
    x: np.ndarray, name: str, alpha: float | None = None, *, device: str | None = None
) -> np.ndarray:
    """``y = f(x)`` elementwise for the activation ``name`` (any shape); formulas above."""
    kind, a = resolve_activation(name, alpha)
    if _dispatch.use_cuda(device, x):
        return _dispatch.activation(x, kind, a)
    return _core.activation_forward(as_float_input(x, "x"), kind, a)


def activation_backward(
    x: np.ndarray,
    y: np.ndarray,
    dy: np.ndarray,
    name: str,
    alpha: float | None = None,
    *,
    device: str | None = None,
) -> np.ndarray:
    """``dx = dy * f'(x)``, given the forward input ``x`` and output ``y = f(x)`` (same shapes);
    relu selects as PyTorch does, ``dx = 0 if x <= 0 else dy`` (inf or NaN in ``dy`` stays out of
    dead units, a NaN ``x`` passes ``dy`` on)."""
    kind, a = resolve_activation(name, alpha)
    if _dispatch.use_cuda(device, x, y, dy):
        return _dispatch.activation_backward(x, y, dy, kind, a)
    x = as_float_input(x, "x")
    y = as_float_input(y, "y")
    dy = as_float_input(dy, "dy")
    check_same_shape(x, "x", y, "y")
    check_same_shape(x, "x", dy, "dy")
    return _core.activation_backward(x, y, dy, kind, a)


def identity(x: np.ndarray, *, device: str | None = None) -> np.ndarray:
    """``f(x) = x`` (as a float32 copy)."""
    return activation(x, "identity", device=device)


def relu(x: np.ndarray, *, device: str | None = None) -> np.ndarray:
    """``f(x) = max(x, 0)``."""
    return activation(x, "relu", device=device)


def leaky_relu(x: np.ndarray, alpha: float = 0.01, *, device: str | None = None) -> np.ndarray:
    """``f(x) = x if x > 0 else alpha * x`` (``alpha >= 0``)."""
    return activation(x, "leaky_relu", alpha, device=device)


def elu(x: np.ndarray, alpha: float = 1.0, *, device: str | None = None) -> np.ndarray:
    """``f(x) = x if x > 0 else alpha * (exp(x) - 1)`` (``alpha > 0``)."""
    return activation(x, "elu", alpha, device=device)


def sigmoid(x: np.ndarray, *, device: str | None = None) -> np.ndarray:
    """``f(x) = 1 / (1 + exp(-x))``, evaluated without overflow for any ``x``."""
    return activation(x, "sigmoid", device=device)


def tanh(x: np.ndarray, *, device: str | None = None) -> np.ndarray:
    """``f(x) = tanh(x)``."""
    return activation(x, "tanh", device=device)


def _prelu_args(x: object, slope: object) -> tuple[np.ndarray, np.ndarray]:
    x = as_float_input(x, "x", ndim=2)
    slope = as_float_input(slope, "slope", ndim=1)
    cols = x.shape[1]
    if slope.shape[0] not in (1, cols):
        raise ValueError(
            f"slope: expected shape (1,) or ({cols},) (one slope, or one per column of x), "
            f"got ({slope.shape[0]},)"
        )
    return x, slope


def prelu(x: np.ndarray, slope: np.ndarray, *, device: str | None = None) -> np.ndarray:
    """PReLU: ``y[i, j] = x[i, j] if x[i, j] > 0 else slope[j] * x[i, j]``.

    ``x`` is (rows, cols); ``slope`` is (1,) (shared by all columns) or (cols,) (one per column).
    """
    if _dispatch.use_cuda(device, x, slope):
        return _dispatch.prelu(x, slope)
    x, slope = _prelu_args(x, slope)
    return _core.prelu_forward(x, slope)


def prelu_backward(
    x: np.ndarray, slope: np.ndarray, dy: np.ndarray, *, device: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of PReLU: ``(dx, dslope)``.

    ``dx = dy * (1 if x > 0 else slope)``; ``dslope[j] = sum_i dy[i, j] * min(x[i, j], 0)`` for a
    (cols,) slope, and the sum over all elements for a (1,) slope. ``dslope`` has ``slope``'s shape.
    """
    if _dispatch.use_cuda(device, x, slope, dy):
        return _dispatch.prelu_backward(x, slope, dy)
    x, slope = _prelu_args(x, slope)
    dy = as_float_input(dy, "dy", ndim=2)
    check_same_shape(x, "x", dy, "dy")
    return _core.prelu_backward(x, slope, dy)


def column_sum(x: np.ndarray, *, device: str | None = None) -> np.ndarray:
    """``out[j] = sum_i x[i, j]`` for a 2-D ``x`` (the bias gradient), accumulated in float64.

    The summation order is fixed, so the result is the same for every thread count.
    """
    if _dispatch.use_cuda(device, x):
        return _dispatch.column_sum(x)
    return _core.column_sum(as_float_input(x, "x", ndim=2))


def softmax(x: np.ndarray, *, device: str | None = None) -> np.ndarray:
    """Row-wise ``softmax(x)_ij = exp(x_ij - m_i) / sum_k exp(x_ik - m_i)``, ``m_i = max_k x_ik``.

    The row max is subtracted first, so no exp overflows whatever the logits.
    """
    if _dispatch.use_cuda(device, x):
        return _dispatch.row_forward("softmax_forward", x)
    return _core.softmax_forward(as_float_input(x, "x", ndim=2))


def log_softmax(x: np.ndarray, *, device: str | None = None) -> np.ndarray:
    """Row-wise ``log_softmax(x)_ij = (x_ij - m_i) - log sum_k exp(x_ik - m_i)``."""
    if _dispatch.use_cuda(device, x):
        return _dispatch.row_forward("log_softmax_forward", x)
    return _core.log_softmax_forward(as_float_input(x, "x", ndim=2))


def _row_backward_args(y: object, dy: object) -> tuple[np.ndarray, np.ndarray]:
    y = as_float_input(y, "y", ndim=2)
    dy = as_float_input(dy, "dy", ndim=2)
    check_same_shape(y, "y", dy, "dy")
    return y, dy


def softmax_backward(y: np.ndarray, dy: np.ndarray, *, device: str | None = None) -> np.ndarray:
    """Given ``y = softmax(x)``: ``dx = y * (dy - sum_j dy_j y_j)`` per row."""
    if _dispatch.use_cuda(device, y, dy):
        return _dispatch.row_backward("softmax_backward", y, dy)
    return _core.softmax_backward(*_row_backward_args(y, dy))


def log_softmax_backward(y: np.ndarray, dy: np.ndarray, *, device: str | None = None) -> np.ndarray:
    """Given ``y = log_softmax(x)``: ``dx = dy - exp(y) * sum_j dy_j`` per row."""
    if _dispatch.use_cuda(device, y, dy):
        return _dispatch.row_backward("log_softmax_backward", y, dy)
    return _core.log_softmax_backward(*_row_backward_args(y, dy))
