"""Losses with their gradients on NumPy arrays (kernels in ``fastmlp._core``).

Each returns ``(loss, grad)``: the loss as a Python float and the gradient of that loss with respect
to the first argument as a new float32 array of its shape, or ``None`` with ``need_grad=False`` (the
gradient is then not computed at all). Inputs are 2-D: (batch, classes) or (batch, features).
Sums are accumulated in float64 in a fixed order, so results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from .._checks import (
    as_float_input,
    as_labels,
    check_bool,
    check_nonempty,
    check_probability,
    check_real,
    check_same_shape,
)
from . import _dispatch

__all__ = [
    "bce_with_logits",
    "mse_loss",
    "multiclass_hinge_loss",
    "softmax_cross_entropy",
]


def _batch_input(x: object, name: str) -> np.ndarray:
    x = as_float_input(x, name, ndim=2)
    check_nonempty(x, name)
    if x.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one column, got shape {x.shape}")
    return x


def softmax_cross_entropy(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    label_smoothing: float = 0.0,
    need_grad: bool = True,
    device: str | None = None,
) -> tuple[float, np.ndarray | None]:
    """Mean softmax cross-entropy of ``logits`` (N, C) against integer ``labels`` (N,).

    With ``p_i = softmax(z_i)`` and the smoothed target ``q_i = (1 - eps) onehot(y_i) + eps / C``
    (``eps = label_smoothing`` in [0, 1], PyTorch's convention)::

        loss = -(1/N) sum_i sum_j q_ij log p_ij
        dlogits = (p - q) / N

    With ``eps = 0`` this is ``-(1/N) sum_i log p_{i, y_i}``. Computed from the log-sum-exp with the
    row max subtracted, so logits of any size give a finite loss and gradient.
    """
    need_grad = check_bool(need_grad, "need_grad")
    if _dispatch.use_cuda(device, logits, labels):
        return _dispatch.softmax_cross_entropy(logits, labels, label_smoothing, need_grad)
    z = _batch_input(logits, "logits")
    y = as_labels(labels, "labels", z.shape[0], z.shape[1], kernel_checks_range=True)
    eps = check_probability(label_smoothing, "label_smoothing", allow_one=True)
    loss, grad = _core.softmax_cross_entropy(z, y, eps, need_grad)
    return float(loss), grad


def mse_loss(
    pred: np.ndarray, target: np.ndarray, *, need_grad: bool = True, device: str | None = None
) -> tuple[float, np.ndarray | None]:
    """Mean squared error over all elements (PyTorch's ``reduction='mean'``).

    For ``pred`` and ``target`` of shape (N, F)::

        loss = sum_ij (pred_ij - target_ij)^2 / (N F)
        dpred = 2 (pred - target) / (N F)
    """
    need_grad = check_bool(need_grad, "need_grad")
    if _dispatch.use_cuda(device, pred, target):
        return _dispatch.mse_loss(pred, target, need_grad)
    p = _batch_input(pred, "pred")
    t = as_float_input(target, "target", ndim=2)
    check_same_shape(p, "pred", t, "target")
    loss, grad = _core.mse_loss(p, t, need_grad)
    return float(loss), grad


def multiclass_hinge_loss(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    margin: float = 1.0,
    need_grad: bool = True,
    device: str | None = None,
) -> tuple[float, np.ndarray | None]:
    """Multiclass SVM (hinge) loss of the course notes, mean over the batch.

    For ``scores`` s (N, C) and labels y (N,)::

        loss = (1/N) sum_i sum_{j != y_i} max(0, s_ij - s_{i,y_i} + margin)
        dscores_ij = [s_ij - s_{i,y_i} + margin > 0] / N              for j != y_i
        dscores_{i,y_i} = -(number of j != y_i with a positive margin) / N

    Unlike ``torch.nn.MultiMarginLoss`` the per-sample sum is not divided by the number of classes C
    (this loss is C times torch's with ``p=1``). ``margin`` must be finite and >= 0.
    """
    need_grad = check_bool(need_grad, "need_grad")
    if _dispatch.use_cuda(device, scores, labels):
        return _dispatch.multiclass_hinge_loss(scores, labels, margin, need_grad)
    s = _batch_input(scores, "scores")
    y = as_labels(labels, "labels", s.shape[0], s.shape[1], kernel_checks_range=True)
    margin = check_real(margin, "margin")  # finite in float32 too: 1e39 is inf in the kernel
    if margin < 0.0:
        raise ValueError(f"margin: expected a finite value >= 0, got {margin}")
    loss, grad = _core.multiclass_hinge_loss(s, y, margin, need_grad)
    return float(loss), grad


def bce_with_logits(
    logits: np.ndarray, targets: np.ndarray, *, need_grad: bool = True, device: str | None = None
) -> tuple[float, np.ndarray | None]:
    """Binary cross-entropy on logits, mean over all elements (PyTorch's ``BCEWithLogitsLoss``).

    For logits z and targets t in [0, 1], both (N, F), in the stable form that never takes the exp
    of a positive number::

        loss = mean_ij ( max(z_ij, 0) - z_ij t_ij + log(1 + exp(-|z_ij|)) )
        dlogits = (sigmoid(z) - t) / (N F)

    Targets outside [0, 1], NaN or infinite raise ``ValueError``.
    """
    need_grad = check_bool(need_grad, "need_grad")
    if _dispatch.use_cuda(device, logits, targets):
        return _dispatch.bce_with_logits(logits, targets, need_grad)
    z = _batch_input(logits, "logits")
    t = as_float_input(targets, "targets", ndim=2)
    check_same_shape(z, "logits", t, "targets")
    # The binding refuses targets outside [0, 1] (NaN included) before computing anything.
    loss, grad = _core.bce_with_logits(z, t, need_grad)
    return float(loss), grad
