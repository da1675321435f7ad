"""Reference activations, PReLU, column sums and softmaxes: plain float64 NumPy.

Each activation is a pair (f, f'), written as in the course notes::

    identity    f(x) = x                                 f'(x) = 1
    relu        f(x) = max(x, 0)                         f'(x) = [x > 0]
    leaky_relu  f(x) = x if x > 0 else alpha * x         f'(x) = 1 if x > 0 else alpha
    prelu       f(x) = x if x > 0 else alpha * x         f'(x) = 1 if x > 0 else alpha
    elu         f(x) = x if x > 0 else alpha (e^x - 1)   f'(x) = 1 if x > 0 else alpha e^x
    sigmoid     f(x) = 1 / (1 + e^-x)                    f'(x) = f(x) (1 - f(x))
    tanh        f(x) = tanh(x)                           f'(x) = 1 - tanh(x)^2

At x == 0 the derivative is the left one (relu'(0) = 0), as in PyTorch. NaN passes through
every forward, relu included (as ``np.maximum``). ``activation_backward`` is ``dy * f'(x)``
except for relu, which selects as PyTorch's backward does: ``dx = 0 if x <= 0 else dy``, so a
dead unit passes no gradient even when ``dy`` is inf or NaN, and a NaN input passes ``dy`` on.
Unlike the kernels, the reference derivative is written in x alone; ``activation_backward``
ignores ``y``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = [
    "activation",
    "activation_backward",
    "activation_derivative",
    "column_sum",
    "elu",
    "identity",
    "leaky_relu",
    "log_softmax",
    "log_softmax_backward",
    "prelu",
    "prelu_backward",
    "relu",
    "sigmoid",
    "softmax",
    "softmax_backward",
    "tanh",
]

_DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0, "prelu": 0.25}

Fn = Callable[[np.ndarray, float], np.ndarray]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) for x < 0: the same number, but e is never
    # raised to a positive power, so x = -1000 does not overflow.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


_FORWARD: dict[str, Fn] = {
    "identity": lambda x, a: x.copy(),
    # x < 0 rather than x > 0 lets NaN through, as np.maximum and PyTorch do.
    "relu": lambda x, a: np.where(x < 0, 0.0, x),
    "leaky_relu": lambda x, a: np.where(x > 0, x, a * x),
    "prelu": lambda x, a: np.where(x > 0, x, a * x),
    # expm1 of min(x, 0): the x > 0 branch is discarded, and this keeps exp from overflowing on it.
    "elu": lambda x, a: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0))),
    "sigmoid": lambda x, a: _sigmoid(x),
    "tanh": lambda x, a: np.tanh(x),
}

_DERIVATIVE: dict[str, Fn] = {
    "identity": lambda x, a: np.ones_like(x),
    "relu": lambda x, a: np.where(x > 0, 1.0, 0.0),
    "leaky_relu": lambda x, a: np.where(x > 0, 1.0, a),
    "prelu": lambda x, a: np.where(x > 0, 1.0, a),
    "elu": lambda x, a: np.where(x > 0, 1.0, a * np.exp(np.minimum(x, 0.0))),
    "sigmoid": lambda x, a: _sigmoid(x) * (1.0 - _sigmoid(x)),
    "tanh": lambda x, a: 1.0 - np.tanh(x) ** 2,
}


def _lookup(name: str, alpha: float | None) -> float:
    if name not in _FORWARD:
        raise ValueError(f"activation: unknown {name!r}; known: {', '.join(_FORWARD)}")
    return float(_DEFAULT_ALPHA.get(name, 0.0) if alpha is None else alpha)


def _f64(x: object) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def activation(x: np.ndarray, name: str, alpha: float | None = None) -> np.ndarray:
    """``f(x)`` elementwise, in float64."""
    a = _lookup(name, alpha)
    return _FORWARD[name](_f64(x), a)


def activation_derivative(x: np.ndarray, name: str, alpha: float | None = None) -> np.ndarray:
    """``f'(x)`` elementwise, in float64."""
    a = _lookup(name, alpha)
    return _DERIVATIVE[name](_f64(x), a)


def activation_backward(
    x: np.ndarray, y: np.ndarray | None, dy: np.ndarray, name: str, alpha: float | None = None
) -> np.ndarray:
    """Chain rule: ``dx = dy * f'(x)``, relu as a select (see the module docstring); ``y`` is
    accepted for the kernel's signature, unused."""
    del y
    if name == "relu":
        return np.where(_f64(x) <= 0, 0.0, _f64(dy))
    return _f64(dy) * activation_derivative(x, name, alpha)


def identity(x: np.ndarray) -> np.ndarray:
    return activation(x, "identity")


def relu(x: np.ndarray) -> np.ndarray:
    return activation(x, "relu")


def leaky_relu(x: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    return activation(x, "leaky_relu", alpha)


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return activation(x, "elu", alpha)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return activation(x, "sigmoid")


def tanh(x: np.ndarray) -> np.ndarray:
    return activation(x, "tanh")


def prelu(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """``x if x > 0 else slope * x`` with ``slope`` (1,) or (cols,) broadcast along the rows."""
    x = _f64(x)
    return np.where(x > 0, x, _f64(slope) * x)


def prelu_backward(
    x: np.ndarray, slope: np.ndarray, dy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``dx = dy * (1 if x > 0 else slope)``; ``dslope = sum of dy * min(x, 0)`` per slope entry.

    ``df/dslope = 0 if x > 0 else x = min(x, 0)``; a (1,) slope collects every element.
    """
    x, slope, dy = _f64(x), _f64(slope), _f64(dy)
    dx = dy * np.where(x > 0, 1.0, slope)
    contrib = dy * np.minimum(x, 0.0)
    dslope = contrib.sum(axis=0) if slope.shape[0] > 1 else np.array([contrib.sum()])
    return dx, dslope


def column_sum(x: np.ndarray) -> np.ndarray:
    """``out[j] = sum_i x[i, j]``: the bias gradient ``db = sum over the batch of dz``."""
    return _f64(x).sum(axis=0)


def softmax(x: np.ndarray) -> np.ndarray:
    """``softmax(x)_ij = exp(x_ij - max_k x_ik) / sum_k exp(x_ik - max_k x_ik)`` per row.

    Subtracting the row max changes nothing mathematically (it cancels) and keeps exp <= 1.
    """
    x = _f64(x)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """``log_softmax(x)_ij = (x_ij - m_i) - log sum_k exp(x_ik - m_i)``, ``m_i = max_k x_ik``."""
    x = _f64(x)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Given ``y = softmax(x)``: the Jacobian is ``diag(y) - y y^T`` per row, so
    ``dx = y * dy - y (y . dy) = y * (dy - sum_j dy_j y_j)``."""
    y, dy = _f64(y), _f64(dy)
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))


def log_softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Given ``y = log_softmax(x)``: ``d y_j / d x_k = [j == k] - softmax(x)_k``, so
    ``dx = dy - exp(y) * sum_j dy_j``."""
    y, dy = _f64(y), _f64(dy)
    return dy - np.exp(y) * dy.sum(axis=1, keepdims=True)
