"""In-place optimizer updates: SGD, AdaGrad, RMSprop, Adam and AdamW.

Each function updates ``param`` and its state buffers in place (float32, C-contiguous, writable,
the shape of ``param``) from ``grad`` (any floating array of that shape), following PyTorch's
``torch.optim`` formulas exactly, plus an optional L1 term. Every rule first forms the regularised
gradient

    g' = g + weight_decay * p + l1 * sign(p)        (sign(0) = 0)

(AdamW leaves weight_decay out of g' and decays p directly). ``step`` counts updates from 1. State
buffers start as zeros (``np.zeros_like(param)``). The hyper-parameters are checked in C++ and a
bad one raises ``ValueError`` naming it. With ``device="cuda"`` or DeviceArray buffers the update
runs on the GPU (one multi-tensor kernel, the same float32 bits as the CPU: csrc/cuda/optim.cu);
NumPy buffers are then copied to the device and the results back into them.
"""

from __future__ import annotations

import operator

import numpy as np

from .. import _core
from .._checks import (
    as_float_input,
    as_inplace,
    check_bool,
    check_positive,
    check_real,
    check_same_shape,
    check_unit_interval,
)
from . import _dispatch

__all__ = ["adagrad_step", "adam_step", "adamw_step", "rmsprop_step", "sgd_step"]


def _step(step: object) -> int:
    if isinstance(step, (bool, np.bool_)):
        raise TypeError("step: expected an int, got bool")
    try:
        value = operator.index(step)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"step: expected an int, got {type(step).__name__}") from None
    if not 1 <= value < 2**63:
        raise ValueError(f"step: expected an int >= 1 (steps count from 1), got {value}")
    return value


def _sgd_step_number(step: object, momentum: float) -> int:
    """sgd_step's ``step``: required with momentum (it decides whether the buffer restarts)."""
    if step is None:
        if momentum != 0.0:
            raise ValueError(
                "step: required when momentum != 0 (1 on the first call, which starts the "
                "momentum buffer from the gradient, then 2, 3, ...)"
            )
        return 1
    return _step(step)


def _param(param: object) -> np.ndarray:
    return as_inplace(param, "param")


def _grad(grad: object, param: np.ndarray) -> np.ndarray:
    g = as_float_input(grad, "grad")
    check_same_shape(param, "param", g, "grad")
    return g


def _state(buf: object, name: str, param: np.ndarray) -> np.ndarray:
    b = as_inplace(buf, name)
    check_same_shape(param, "param", b, name)
    return b


def _no_overlap(grad: np.ndarray, arrays: dict[str, np.ndarray | None]) -> np.ndarray:
    """Refuse state buffers that share memory with param or each other (their updates would
    collide), and return ``grad``, copied if it overlaps any of them: the kernels read each
    gradient element before writing that element, but a shifted overlap would race between
    elements."""
    named = [(k, v) for k, v in arrays.items() if v is not None]
    for i, (name_a, a) in enumerate(named):
        for name_b, b in named[i + 1 :]:
            if np.may_share_memory(a, b):
                raise ValueError(f"{name_b}: shares memory with {name_a}; pass separate arrays")
    if any(np.may_share_memory(grad, a) for _, a in named):
        grad = grad.copy()
    return grad


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
    step: int | None = None,
    device: str | None = None,
) -> None:
    """One SGD step in place, with torch.optim.SGD's rule (plus L1)::

        g' = g + weight_decay * p + l1 * sign(p)
        b  = g'                                      on step 1
        b  = momentum * b + (1 - dampening) * g'     on later steps
        d  = g' + momentum * b   if nesterov   else b      (d = g' when momentum == 0)
        p  = p - lr * d

    ``momentum_buffer`` (b) and ``step`` (1 on the first call, then 2, 3, ...) are required when
    ``momentum > 0``: on step 1 the buffer is overwritten (PyTorch creates it as a copy of g'), so
    a step number left at 1 would silently turn momentum off. Without momentum ``step`` is not
    needed. Nesterov needs ``momentum > 0`` and ``dampening == 0`` (as PyTorch); ``dampening``
    must lie in [0, 1].
    """
    nesterov = check_bool(nesterov, "nesterov")  # checked, not coerced: bool("no") is True
    if _dispatch.use_cuda(device, param, grad, momentum_buffer):
        momentum = check_real(momentum, "momentum")
        if momentum != 0.0 and momentum_buffer is None:
            raise ValueError("momentum_buffer: required when momentum != 0 (np.zeros_like(param))")
        return _dispatch.optimizer_step(
            "sgd_step",
            param,
            grad,
            [("momentum_buffer", momentum_buffer)],
            lr=check_real(lr, "lr"),
            momentum=momentum,
            dampening=check_real(dampening, "dampening"),
            nesterov=nesterov,
            weight_decay=check_real(weight_decay, "weight_decay"),
            l1=check_real(l1, "l1"),
            step=_sgd_step_number(step, momentum),
        )
    param = _param(param)
    g = _grad(grad, param)
    momentum = check_real(momentum, "momentum")
    if momentum != 0.0 and momentum_buffer is None:
        raise ValueError("momentum_buffer: required when momentum != 0 (np.zeros_like(param))")
    buf = None if momentum_buffer is None else _state(momentum_buffer, "momentum_buffer", param)
    g = _no_overlap(g, {"param": param, "momentum_buffer": buf})
    step = _sgd_step_number(step, momentum)
    _core.sgd_step(
        param,
        buf,
        g,
        lr=check_real(lr, "lr"),
        momentum=momentum,
        dampening=check_real(dampening, "dampening"),
        nesterov=nesterov,
        weight_decay=check_real(weight_decay, "weight_decay"),
        l1=check_real(l1, "l1"),
        step=_step(step),
    )


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
    device: str | None = None,
) -> None:
    """One AdaGrad step in place, with torch.optim.Adagrad's rule (plus L1)::

        g'  = g + weight_decay * p + l1 * sign(p)
        clr = lr / (1 + (step - 1) * lr_decay)
        s   = s + g'^2
        p   = p - clr * g' / (sqrt(s) + eps)

    ``sum_sq`` (s) starts at zero (PyTorch's default ``initial_accumulator_value=0``).
    """
    if _dispatch.use_cuda(device, param, grad, sum_sq):
        return _dispatch.optimizer_step(
            "adagrad_step",
            param,
            grad,
            [("sum_sq", sum_sq)],
            lr=check_real(lr, "lr"),
            lr_decay=check_real(lr_decay, "lr_decay"),
            weight_decay=check_real(weight_decay, "weight_decay"),
            eps=check_positive(eps, "eps"),
            l1=check_real(l1, "l1"),
            step=_step(step),
        )
    param = _param(param)
    g = _grad(grad, param)
    s = _state(sum_sq, "sum_sq", param)
    g = _no_overlap(g, {"param": param, "sum_sq": s})
    _core.adagrad_step(
        param,
        s,
        g,
        lr=check_real(lr, "lr"),
        lr_decay=check_real(lr_decay, "lr_decay"),
        weight_decay=check_real(weight_decay, "weight_decay"),
        eps=check_positive(eps, "eps"),
        l1=check_real(l1, "l1"),
        step=_step(step),
    )


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
    device: str | None = None,
) -> None:
    """One RMSprop step in place, with torch.optim.RMSprop's rule (plus L1)::

        g' = g + weight_decay * p + l1 * sign(p)
        v  = alpha * v + (1 - alpha) * g'^2
        centered:  a = alpha * a + (1 - alpha) * g';  denom = sqrt(v - a^2) + eps
        otherwise: denom = sqrt(v) + eps
        momentum > 0:  b = momentum * b + g' / denom;  p = p - lr * b
        otherwise:     p = p - lr * g' / denom

    ``square_avg`` (v), ``momentum_buffer`` (b, required when ``momentum > 0``) and ``grad_avg``
    (a, required when ``centered``) start at zero. ``alpha`` must lie in [0, 1). One deliberate
    difference from PyTorch: ``v - a^2`` (a variance, non-negative in exact arithmetic) is clamped
    at 0 before the square root, where float32 rounding would otherwise give NaN. ``step`` is only
    checked (RMSprop has no bias correction).
    """
    centered = check_bool(centered, "centered")  # checked, not coerced: bool("no") is True
    if _dispatch.use_cuda(device, param, grad, square_avg, momentum_buffer, grad_avg):
        momentum = check_real(momentum, "momentum")
        if momentum != 0.0 and momentum_buffer is None:
            raise ValueError("momentum_buffer: required when momentum != 0 (np.zeros_like(param))")
        if centered and grad_avg is None:
            raise ValueError("grad_avg: required when centered=True (np.zeros_like(param))")
        return _dispatch.optimizer_step(
            "rmsprop_step",
            param,
            grad,
            [
                ("square_avg", square_avg),
                ("momentum_buffer", momentum_buffer),
                ("grad_avg", grad_avg),
            ],
            lr=check_real(lr, "lr"),
            alpha=check_real(alpha, "alpha"),
            eps=check_positive(eps, "eps"),
            weight_decay=check_real(weight_decay, "weight_decay"),
            momentum=momentum,
            centered=centered,
            l1=check_real(l1, "l1"),
            step=_step(step),
        )
    param = _param(param)
    g = _grad(grad, param)
    v = _state(square_avg, "square_avg", param)
    momentum = check_real(momentum, "momentum")
    if momentum != 0.0 and momentum_buffer is None:
        raise ValueError("momentum_buffer: required when momentum != 0 (np.zeros_like(param))")
    if centered and grad_avg is None:
        raise ValueError("grad_avg: required when centered=True (np.zeros_like(param))")
    buf = None if momentum_buffer is None else _state(momentum_buffer, "momentum_buffer", param)
    avg = None if grad_avg is None else _state(grad_avg, "grad_avg", param)
    g = _no_overlap(g, {"param": param, "square_avg": v, "momentum_buffer": buf, "grad_avg": avg})
    _core.rmsprop_step(
        param,
        v,
        buf,
        avg,
        g,
        lr=check_real(lr, "lr"),
        alpha=check_real(alpha, "alpha"),
        eps=check_positive(eps, "eps"),
        weight_decay=check_real(weight_decay, "weight_decay"),
        momentum=momentum,
        centered=centered,
        l1=check_real(l1, "l1"),
        step=_step(step),
    )


def _betas(betas: object) -> tuple[float, float]:
    try:
        beta1, beta2 = betas  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}") from None
    # Checked here as well as in C++, to name the value as given: 0.99999999 is 1 in float32.
    return check_unit_interval(beta1, "betas[0]"), check_unit_interval(beta2, "betas[1]")


def _adam(
    param: object,
    grad: object,
    m: object,
    v: object,
    step: object,
    lr: object,
    betas: object,
    eps: object,
    weight_decay: object,
    l1: object,
    decoupled: bool,
    device: str | None = None,
) -> None:
    if _dispatch.use_cuda(device, param, grad, m, v):
        beta1, beta2 = _betas(betas)
        _dispatch.optimizer_step(
            "adam_step",
            param,
            grad,
            [("m", m), ("v", v)],
            lr=check_real(lr, "lr"),
            beta1=beta1,
            beta2=beta2,
            eps=check_positive(eps, "eps"),
            weight_decay=check_real(weight_decay, "weight_decay"),
            decoupled_weight_decay=decoupled,
            l1=check_real(l1, "l1"),
            step=_step(step),
        )
        return
    p = _param(param)
    g = _grad(grad, p)
    m_buf = _state(m, "m", p)
    v_buf = _state(v, "v", p)
    g = _no_overlap(g, {"param": p, "m": m_buf, "v": v_buf})
    beta1, beta2 = _betas(betas)
    _core.adam_step(
        p,
        m_buf,
        v_buf,
        g,
        lr=check_real(lr, "lr"),
        beta1=beta1,
        beta2=beta2,
        eps=check_positive(eps, "eps"),
        weight_decay=check_real(weight_decay, "weight_decay"),
        decoupled_weight_decay=decoupled,
        l1=check_real(l1, "l1"),
        step=_step(step),
    )


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
    device: str | None = None,
) -> None:
    """One Adam step in place, with torch.optim.Adam's rule (coupled L2, plus L1)::

        g' = g + weight_decay * p + l1 * sign(p)
        m  = beta1 * m + (1 - beta1) * g'
        v  = beta2 * v + (1 - beta2) * g'^2
        p  = p - (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)

    ``m`` and ``v`` start at zero; ``step`` counts from 1; ``0 <= beta1, beta2 < 1``, ``eps > 0``.
    AMSGrad is not provided.
    """
    _adam(param, grad, m, v, step, lr, betas, eps, weight_decay, l1, False, device)


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
    device: str | None = None,
) -> None:
    """One AdamW step in place, with torch.optim.AdamW's rule (decoupled weight decay, plus L1)::

        g' = g + l1 * sign(p)                 (sign of p before the decay)
        p  = p * (1 - lr * weight_decay)
        m  = beta1 * m + (1 - beta1) * g'
        v  = beta2 * v + (1 - beta2) * g'^2
        p  = p - (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)

    Same state and checks as :func:`adam_step`; only where weight decay enters differs.
    """
    _adam(param, grad, m, v, step, lr, betas, eps, weight_decay, l1, True, device)
