"""A plain NumPy float64 MLP: forward, loss and backward written out layer by layer.

This is the readable twin of the C++ engine (``csrc/engine/network.h``) and of
:class:`fastmlp.MLP`; the tests hold the engine to it and :func:`fastmlp.gradcheck` differentiates
it numerically. Import it as ``fastmlp.reference.network`` (it is not re-exported by
:mod:`fastmlp.reference`).

Notation (course notes / llm.c legend): layers ``l = 1..L`` map ``D_{l-1} -> D_l``::

    z_l = h_{l-1} @ W_l + b_l          W_l is (D_{l-1}, D_l), b_l is (D_l,), h_0 = x
    a_l = f_l(z_l)                     f_L is the identity: the last layer gives the logits
    h_l = a_l * mask_l                 inverted-dropout mask on hidden layers in training, else a_l

    backward, from dZ_L = dloss/dlogits:
    dW_l = h_{l-1}^T @ dZ_l,   db_l = sum_rows(dZ_l),   dH_{l-1} = dZ_l @ W_l^T
    dA_{l-1} = dH_{l-1} * mask_{l-1},   dZ_{l-1} = dA_{l-1} * f'(z_{l-1})
    PReLU slope s: ds = sum(dA * min(z, 0))

Parameters are a list in :meth:`fastmlp.MLP.get_weights` order:
``[W_1, b_1, ..., W_L, b_L]`` followed by one ``(1,)`` slope per PReLU hidden layer, in layer order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .activations import activation, activation_backward, activation_derivative
from .losses import bce_with_logits, mse_loss, multiclass_hinge_loss, softmax_cross_entropy

__all__ = ["LOSSES", "ReferenceMLP", "loss_and_dlogits"]

LOSSES = ("cross_entropy", "mse", "hinge", "bce")


def loss_and_dlogits(
    logits: np.ndarray, y: np.ndarray, loss: str, label_smoothing: float = 0.0
) -> tuple[float, np.ndarray]:
    """Mean loss over the batch and its gradient with respect to the logits ``(B, C)``, from the
    loss functions of :mod:`fastmlp.reference.losses` (their docstrings give the formulas):
    ``cross_entropy`` (softmax + CE, label smoothing), ``mse``, ``hinge`` (margin 1), ``bce``
    (on logits). Float targets of shape ``(B,)`` are taken as ``(B, 1)``."""
    z = np.asarray(logits, dtype=np.float64)
    if loss == "cross_entropy":
        labels = np.asarray(y, dtype=np.int64)
        value, dz = softmax_cross_entropy(z, labels, label_smoothing=label_smoothing)
    elif loss == "hinge":
        value, dz = multiclass_hinge_loss(z, np.asarray(y, dtype=np.int64), margin=1.0)
    elif loss in ("mse", "bce"):
        t = np.asarray(y, dtype=np.float64).reshape(z.shape)
        value, dz = mse_loss(z, t) if loss == "mse" else bce_with_logits(z, t)
    else:
        raise ValueError(f"loss: unknown {loss!r}; known: {', '.join(map(repr, LOSSES))}")
    assert dz is not None
    return value, dz


class ReferenceMLP:
    """The architecture of an MLP (sizes, activations, alphas), evaluated on explicit parameters.

    ``activations`` and ``alphas`` have one entry per hidden layer; for PReLU layers the alpha is
    the learned slope taken from the parameter list, not ``alphas``.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        activations: Sequence[str],
        alphas: Sequence[float] | None = None,
    ) -> None:
        self.layer_sizes = [int(s) for s in layer_sizes]
        self.num_layers = len(self.layer_sizes) - 1
        self.activations = list(activations)
        n_hidden = len(self.activations)
        self.alphas = [0.0] * n_hidden if alphas is None else [float(a) for a in alphas]
        if len(self.activations) != self.num_layers - 1 or len(self.alphas) != self.num_layers - 1:
            raise ValueError("activations: expected one entry per hidden layer")

    @classmethod
    def from_model(cls, model: object) -> ReferenceMLP:
        """The architecture of a :class:`fastmlp.MLP` (its weights come from ``get_weights()``)."""
        return cls(model.layer_sizes, model.activations, model.activation_alphas)  # type: ignore[attr-defined]

    def _unpack(self, params: Sequence[np.ndarray]) -> tuple[list, list, list]:
        ws = [np.asarray(params[2 * l], dtype=np.float64) for l in range(self.num_layers)]
        bs = [np.asarray(params[2 * l + 1], dtype=np.float64) for l in range(self.num_layers)]
        slopes = iter(params[2 * self.num_layers :])
        alphas = [
            float(np.asarray(next(slopes)).reshape(-1)[0]) if name == "prelu" else alpha
            for name, alpha in zip(self.activations, self.alphas)
        ]
        return ws, bs, alphas

    def forward(
        self,
        params: Sequence[np.ndarray],
        x: np.ndarray,
        masks: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, dict]:
        """Logits ``(B, D_L)`` and the cache for :meth:`backward`. ``masks[l]`` (one per hidden
        layer, ``None`` for no dropout) multiplies ``a_l``: ``1 / (1 - p)`` where kept, 0 where
        dropped, as :func:`fastmlp.reference.dropout_mask` returns it."""
        ws, bs, alphas = self._unpack(params)
        h = np.asarray(x, dtype=np.float64)
        cache: dict = {"h": [h], "z": [], "masks": [], "alphas": alphas, "ws": ws}
        for l in range(self.num_layers):
            z = h @ ws[l] + bs[l]
            cache["z"].append(z)
            if l == self.num_layers - 1:
                return z, cache
            h = activation(z, self.activations[l], alphas[l])
            mask = None if masks is None else masks[l]
            if mask is not None:
                h = h * np.asarray(mask, dtype=np.float64)
            cache["masks"].append(mask)
            cache["h"].append(h)
        raise AssertionError("unreachable")

    def backward(
        self, cache: dict, dlogits: np.ndarray, magnitudes: bool = False
    ) -> list[np.ndarray]:
        """Gradients of the loss, in the parameter-list order, given ``dloss/dlogits``.

        ``magnitudes=True`` runs the same pass on absolute values (``|dlogits|``, ``|h|``,
        ``|W|``, ``|f'(z)|``, ``|min(z, 0)|``): each entry is then the sum of the magnitudes of
        the terms its gradient adds up, the scale float32 rounding is relative to
        (:func:`fastmlp.gradcheck`)."""
        mag = np.abs if magnitudes else (lambda a: a)
        grads_w: list = [None] * self.num_layers
        grads_b: list = [None] * self.num_layers
        slope_grads: dict[int, np.ndarray] = {}
        dz = mag(np.asarray(dlogits, dtype=np.float64))
        for l in reversed(range(self.num_layers)):
            grads_w[l] = mag(cache["h"][l]).T @ dz
            grads_b[l] = dz.sum(axis=0)
            if l == 0:
                break
            da = dz @ mag(cache["ws"][l]).T  # dH_{l-1}
            mask = cache["masks"][l - 1]
            if mask is not None:
                da = da * mask
            z = cache["z"][l - 1]
            name, alpha = self.activations[l - 1], cache["alphas"][l - 1]
            if name == "prelu":
                slope_grads[l - 1] = np.array([(da * mag(np.minimum(z, 0.0))).sum()])
            if magnitudes:
                dz = da * np.abs(activation_derivative(z, name, alpha))
            else:
                dz = activation_backward(z, None, da, name, alpha)
        grads: list[np.ndarray] = []
        for l in range(self.num_layers):
            grads += [grads_w[l], grads_b[l]]
        prelu_layers = [l for l, name in enumerate(self.activations) if name == "prelu"]
        grads += [slope_grads[l] for l in prelu_layers]
        return grads

    def loss(
        self,
        params: Sequence[np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        loss: str,
        label_smoothing: float = 0.0,
        masks: Sequence[np.ndarray | None] | None = None,
    ) -> float:
        """The mean loss only (what :func:`fastmlp.gradcheck` differentiates numerically)."""
        logits, _ = self.forward(params, x, masks)
        return loss_and_dlogits(logits, y, loss, label_smoothing)[0]

    def loss_and_gradients(
        self,
        params: Sequence[np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        loss: str,
        label_smoothing: float = 0.0,
        masks: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[float, list[np.ndarray]]:
        """Mean loss and its gradient for every parameter (float64)."""
        logits, cache = self.forward(params, x, masks)
        value, dlogits = loss_and_dlogits(logits, y, loss, label_smoothing)
        return value, self.backward(cache, dlogits)
