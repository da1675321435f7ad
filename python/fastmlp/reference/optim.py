"""Optimizer updates in plain float64 NumPy: SGD (momentum, Nesterov), AdaGrad, RMSprop, Adam(W).

Each function takes the parameter, its gradient and its state, and returns new float64 arrays
``(param, *state)``; nothing is modified in place. The rules are PyTorch's ``torch.optim`` ones
(which are also what :mod:`fastmlp.ops` implements in float32), written in the course notes'
notation: ``p`` parameter, ``g`` gradient, ``lr`` learning rate, ``t`` step (from 1), with
regularisation folded into the gradient first::

    g' = g + weight_decay * p + l1 * sign(p)        (L2 "weight decay" and L1, coupled)

Relation to the course slides: SGD and momentum match them up to naming (a velocity written
``v = mu v - lr g; p += v`` is PyTorch's ``b = mu b + g; p -= lr b`` with ``v = -lr b`` while lr is
constant and dampening is 0). The slides' AdaGrad, RMSProp and Adam are simplified forms that
accumulate ``|g|`` and divide by it (Adam there: ``m = gamma m + (1 - gamma) |g|`` with
``gamma = 0.99``, no bias correction). We follow PyTorch (and Adam's paper) deliberately: they
accumulate ``g^2`` and divide by its square root, Adam with ``beta2 = 0.999`` and bias correction,
so that results can be compared with torch.optim and the usual published hyper-parameters apply.
At equal ``lr`` the steps differ from the slides' rules.
"""

from __future__ import annotations

import numpy as np

__all__ = ["adagrad_step", "adam_step", "adamw_step", "rmsprop_step", "sgd_step"]


def _f64(x: np.ndarray | None) -> np.ndarray | None:
    return None if x is None else np.array(x, dtype=np.float64)


def _regularized(g: np.ndarray, p: np.ndarray, weight_decay: float, l1: float) -> np.ndarray:
    """g' = g + weight_decay * p + l1 * sign(p)."""
    return g + weight_decay * p + l1 * np.sign(p)


def sgd_step(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None = None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    l1: float = 0.0,
    step: int = 1,
) -> tuple[np.ndarray, np.ndarray | None]:
    """SGD with momentum (torch.optim.SGD). Returns ``(param, momentum_buffer)``::

        g' = g + weight_decay * p + l1 * sign(p)
        b  = g'  on step 1,  else  b = momentum * b + (1 - dampening) * g'
        d  = g' + momentum * b  (Nesterov)  or  b  (or g' without momentum)
        p  = p - lr * d

    ``momentum_buffer`` may be None when ``momentum == 0``; on step 1 its value is not used.
    """
    p, g, b = _f64(param), _f64(grad), _f64(momentum_buffer)
    gr = _regularized(g, p, weight_decay, l1)
    d = gr
    if momentum != 0.0:
        b = gr.copy() if step == 1 else momentum * b + (1.0 - dampening) * gr
        d = gr + momentum * b if nesterov else b
    return p - lr * d, b


def adagrad_step(
    param: np.ndarray,
    grad: np.ndarray,
    sum_sq: np.ndarray,
    *,
    lr: float = 0.01,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    l1: float = 0.0,
    step: int,
) -> tuple[np.ndarray, np.ndarray]:
    """AdaGrad (Duchi et al., 2011; torch.optim.Adagrad). Returns ``(param, sum_sq)``::

        g'  = g + weight_decay * p + l1 * sign(p)
        clr = lr / (1 + (t - 1) * lr_decay)
        s   = s + g'^2                     (the slides accumulate |g|; see the module docstring)
        p   = p - clr * g' / (sqrt(s) + eps)

    ``sum_sq`` starts at zero.
    """
    p, g, s = _f64(param), _f64(grad), _f64(sum_sq)
    gr = _regularized(g, p, weight_decay, l1)
    clr = lr / (1.0 + (step - 1) * lr_decay)
    s = s + gr * gr
    return p - clr * gr / (np.sqrt(s) + eps), s


def rmsprop_step(
    param: np.ndarray,
    grad: np.ndarray,
    square_avg: np.ndarray,
    momentum_buffer: np.ndarray | None = None,
    grad_avg: np.ndarray | None = None,
    *,
    lr: float = 0.01,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    l1: float = 0.0,
    step: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """RMSprop (Hinton's lecture 6e; torch.optim.RMSprop).
    Returns ``(param, square_avg, momentum_buffer, grad_avg)``::

        g' = g + weight_decay * p + l1 * sign(p)
        v  = alpha * v + (1 - alpha) * g'^2      (the slides average |g|; see the module docstring)
        centered: a = alpha * a + (1 - alpha) * g',  denom = sqrt(max(v - a^2, 0)) + eps
        else:     denom = sqrt(v) + eps
        momentum: b = momentum * b + g' / denom,  p = p - lr * b
        else:     p = p - lr * g' / denom

    ``step`` is unused (no bias correction); it is accepted to mirror the kernel's signature.
    """
    del step
    p, g, v = _f64(param), _f64(grad), _f64(square_avg)
    b, a = _f64(momentum_buffer), _f64(grad_avg)
    gr = _regularized(g, p, weight_decay, l1)
    v = alpha * v + (1.0 - alpha) * gr * gr
    if centered:
        a = alpha * a + (1.0 - alpha) * gr
        denom = np.sqrt(np.maximum(v - a * a, 0.0)) + eps
    else:
        denom = np.sqrt(v) + eps
    if momentum != 0.0:
        b = momentum * b + gr / denom
        p = p - lr * b
    else:
        p = p - lr * gr / denom
    return p, v, b, a


def _adam(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    l1: float,
    decoupled: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, g, m, v = _f64(param), _f64(grad), _f64(m), _f64(v)
    beta1, beta2 = betas
    if decoupled:
        gr = _regularized(g, p, 0.0, l1)
        p = p * (1.0 - lr * weight_decay)
    else:
        gr = _regularized(g, p, weight_decay, l1)
    m = beta1 * m + (1.0 - beta1) * gr
    v = beta2 * v + (1.0 - beta2) * gr * gr
    m_hat = m / (1.0 - beta1**step)
    v_hat = v / (1.0 - beta2**step)
    # PyTorch adds eps to sqrt(v_hat), i.e. after the bias correction of v.
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adam_step(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    step: int,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    l1: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adam (Kingma & Ba, 2015; torch.optim.Adam, coupled L2). Returns ``(param, m, v)``::

        g'    = g + weight_decay * p + l1 * sign(p)
        m     = beta1 * m + (1 - beta1) * g'          (first moment)
        v     = beta2 * v + (1 - beta2) * g'^2        (second moment)
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)     (bias correction)
        p     = p - lr * m_hat / (sqrt(v_hat) + eps)

    ``m`` and ``v`` start at zero; ``t`` counts from 1.
    """
    return _adam(param, grad, m, v, step, lr, betas, eps, weight_decay, l1, decoupled=False)


def adamw_step(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    step: int,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    l1: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AdamW (Loshchilov & Hutter, 2019; torch.optim.AdamW). Returns ``(param, m, v)``::

        g' = g + l1 * sign(p)                     (no weight decay in the gradient)
        p  = p * (1 - lr * weight_decay)          (decay applied to the weights directly)
        then the Adam update of :func:`adam_step` with g'.

    The decay is decoupled from the gradient, so it is not rescaled by 1 / sqrt(v_hat).
    """
    return _adam(param, grad, m, v, step, lr, betas, eps, weight_decay, l1, decoupled=True)
