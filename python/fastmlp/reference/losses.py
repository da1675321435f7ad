"""Reference losses: plain float64 NumPy, each returning ``(loss, gradient of the loss)``.

Shapes: N = batch, C = classes, F = features. The losses are means (over the batch, or over all
elements for MSE and BCE), so every gradient carries a 1/N (or 1/(N F)) factor.
"""

from __future__ import annotations

import numpy as np

from .activations import log_softmax, softmax

__all__ = [
    "bce_with_logits",
    "mse_loss",
    "multiclass_hinge_loss",
    "softmax_cross_entropy",
]


def _f64(x: object) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def softmax_cross_entropy(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    label_smoothing: float = 0.0,
    need_grad: bool = True,
) -> tuple[float, np.ndarray | None]:
    """Softmax cross-entropy, mean over the batch, with optional label smoothing eps.

    Target distribution ``q = (1 - eps) onehot(y) + eps / C``; ``p = softmax(z)``::

        loss = -(1/N) sum_i sum_j q_ij log p_ij
        dz   = (p - q) / N           (from d(-sum_j q_j log p_j)/dz_k = p_k - q_k, as sum_j q_j = 1)

    ``log p`` comes from the stable log_softmax, so logits of +-1000 give a finite loss.
    """
    z = _f64(logits)
    n, c = z.shape
    eps = float(label_smoothing)
    onehot = np.zeros((n, c))
    onehot[np.arange(n), labels] = 1.0
    q = (1.0 - eps) * onehot + eps / c
    # Only the classes with q > 0 contribute: a logit of -inf elsewhere has log p = -inf, and
    # 0 * -inf would make the loss NaN.
    terms = np.zeros_like(z)
    used = q > 0
    terms[used] = q[used] * log_softmax(z)[used]
    loss = float(-terms.sum() / n)
    if not need_grad:
        return loss, None
    return loss, (softmax(z) - q) / n


def mse_loss(
    pred: np.ndarray, target: np.ndarray, *, need_grad: bool = True
) -> tuple[float, np.ndarray | None]:
    """Mean squared error over all N F elements.

    As PyTorch's ``reduction='mean'``::

        loss = mean((pred - target)^2)
        dpred = 2 (pred - target) / (N F)
    """
    diff = _f64(pred) - _f64(target)
    loss = float(np.mean(diff**2))
    return loss, (2.0 * diff / diff.size if need_grad else None)


def multiclass_hinge_loss(
    scores: np.ndarray, labels: np.ndarray, *, margin: float = 1.0, need_grad: bool = True
) -> tuple[float, np.ndarray | None]:
    """Multiclass SVM loss (course notes), mean over the batch, not divided by C.

    With an explicit margins matrix::

        margins_ij = max(0, s_ij - s_{i,y_i} + margin) for j != y_i, and 0 at j = y_i
        loss = (1/N) sum_ij margins_ij
        ds_ij = [margins_ij > 0] / N for j != y_i;   ds_{i,y_i} = -(sum_j [margins_ij > 0]) / N
    """
    s = _f64(scores)
    n = s.shape[0]
    rows = np.arange(n)
    correct = s[rows, labels][:, None]
    margins = np.maximum(0.0, s - correct + margin)
    margins[rows, labels] = 0.0
    loss = float(margins.sum() / n)
    if not need_grad:
        return loss, None
    violated = (margins > 0).astype(np.float64)
    ds = violated.copy()
    ds[rows, labels] = -violated.sum(axis=1)
    return loss, ds / n


def bce_with_logits(
    logits: np.ndarray, targets: np.ndarray, *, need_grad: bool = True
) -> tuple[float, np.ndarray | None]:
    """Binary cross-entropy on logits, mean over all elements.

    ``-[t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))]`` rewritten without exp of a positive
    number: ``max(z, 0) - z t + log(1 + exp(-|z|))``. Its derivative is ``sigmoid(z) - t``::

        loss = mean(max(z, 0) - z t + log1p(exp(-|z|)))
        dz   = (sigmoid(z) - t) / (N F)
    """
    z, t = _f64(logits), _f64(targets)
    loss = float(np.mean(np.maximum(z, 0.0) - z * t + np.log1p(np.exp(-np.abs(z)))))
    if not need_grad:
        return loss, None
    e = np.exp(-np.abs(z))
    sig = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return loss, (sig - t) / z.size
