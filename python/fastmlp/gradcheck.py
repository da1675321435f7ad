"""Numerical gradient check of the C++ engine's backward pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import check_int, check_real
from .reference.network import ReferenceMLP, loss_and_dlogits

__all__ = ["gradcheck"]


def gradcheck(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    loss: str | None = None,
    *,
    label_smoothing: float = 0.0,
    eps: float = 1e-6,
    samples: int | None = None,
    seed: int = 0,
) -> float:
    """Largest relative error between the engine's gradients and central differences.

    The analytic gradients are the engine's (float32, ``model.loss_and_gradients``). The numerical
    ones are computed in float64 on :class:`fastmlp.reference.network.ReferenceMLP` with the
    model's current weights (converted to float64)::

        numeric_i = (loss(theta + eps e_i) - loss(theta - eps e_i)) / (2 eps)

    In float64 with ``eps = 1e-6`` the truncation error (~eps^2) and rounding error
    (~1e-16 / eps) are both far below float32 precision, so the result measures the engine.
    For each parameter tensor (``W_l``, ``b_l``, PReLU slope) the error is normwise::

        max_i |analytic_i - numeric_i| / max(max_i |numeric_i|, max_i |analytic_i|, max_i T_i)

    where ``T_i`` is the sum of the magnitudes of the terms that backpropagation adds up to form
    gradient ``i`` (backpropagation run on absolute values), which is what float32 rounding is
    relative to: a gradient whose terms cancel to ~0 (say the biases of a layer whose hinge
    indicators cancel column by column) is compared with its terms, not with its own rounding
    noise. It stays near float32 rounding (~1e-6) for a correct engine; the function returns the
    largest over tensors, and ``inf`` when either gradient holds NaN or inf. A correct engine
    gives < 1e-4; a wrong formula gives O(1).

    Entries whose two perturbations put a kink between them (a relu, leaky-relu, PReLU or ELU
    pre-activation, or a hinge margin, on different sides of 0 at ``theta + eps e_i`` and
    ``theta - eps e_i``) are left out: there the difference quotient averages two one-sided
    slopes and is not the derivative.

    Costs two reference forward passes per checked entry: use small models, or ``samples`` to
    check that many randomly chosen entries per tensor (chosen with ``seed``).
    The model must not apply dropout (call ``model.eval()`` or use ``dropout=0``).
    """
    from .nn import MLP

    if not isinstance(model, MLP):
        raise TypeError(f"model: expected a fastmlp.MLP, got {type(model).__name__}")
    if model.training and any(p > 0.0 for p in model.dropout):
        raise ValueError(
            "model: gradcheck needs dropout off (call model.eval() or build it with dropout=0)"
        )
    eps = check_real(eps, "eps")  # finite: an inf step gives 0/0 differences
    if not eps > 0.0:
        raise ValueError(f"eps: expected a step > 0, got {eps}")
    if samples is not None:  # 0 would check nothing and report a perfect 0.0
        samples = check_int(samples, "samples", 1)
    seed = check_int(seed, "seed", 0)
    kind = model.loss if loss is None else loss
    _, analytic = model.loss_and_gradients(x, y, kind, label_smoothing=label_smoothing)

    ref = ReferenceMLP.from_model(model)
    params = [w.astype(np.float64) for w in model.get_weights()]
    x64 = np.asarray(x, dtype=np.float64)
    y_ref = np.asarray(y)
    term_scales = _term_magnitudes(ref, params, x64, y_ref, kind, label_smoothing)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for param, grad, terms in zip(params, analytic, term_scales):
        flat = param.reshape(-1)  # a view: perturbing it perturbs params[t]
        idx = np.arange(flat.size)
        if samples is not None and samples < flat.size:
            idx = rng.choice(flat.size, size=samples, replace=False)
        numeric = np.empty(idx.size)
        smooth = np.ones(idx.size, dtype=bool)
        for j, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + eps
            plus, plus_sides = _loss_and_kink_sides(ref, params, x64, y_ref, kind, label_smoothing)
            flat[i] = old - eps
            minus, minus_sides = _loss_and_kink_sides(
                ref, params, x64, y_ref, kind, label_smoothing
            )
            flat[i] = old
            numeric[j] = (plus - minus) / (2.0 * eps)
            smooth[j] = np.array_equal(plus_sides, minus_sides)
        ana = grad.reshape(-1)[idx].astype(np.float64)
        if not (np.isfinite(ana).all() and np.isfinite(numeric).all()):
            # NaN would drop out of max() and inf / inf is NaN: a non-finite gradient, on either
            # side, is the worst error there is.
            return float("inf")
        ana, numeric = ana[smooth], numeric[smooth]
        scale = max(
            np.abs(numeric).max(initial=0.0),
            np.abs(ana).max(initial=0.0),
            float(terms.reshape(-1)[idx].max(initial=0.0)),
            1e-30,
        )
        worst = max(worst, float(np.abs(ana - numeric).max(initial=0.0) / scale))
    return worst


def _kinked(name: str, alpha: float) -> bool:
    """Whether activation ``name``'s derivative jumps at 0 (ELU's only when alpha != 1)."""
    return name in ("relu", "leaky_relu", "prelu") or (name == "elu" and alpha != 1.0)


def _loss_and_kink_sides(
    ref: ReferenceMLP, params: list, x: np.ndarray, y: np.ndarray, kind: str, smoothing: float
) -> tuple[float, np.ndarray]:
    """The reference loss, and on which side of 0 every kink of the loss surface lies: the
    pre-activations of kinked activations and, for the hinge loss, the margins."""
    logits, cache = ref.forward(params, x)
    value = loss_and_dlogits(logits, y, kind, smoothing)[0]
    sides = [
        z > 0.0
        for z, name, alpha in zip(cache["z"], ref.activations, cache["alphas"])
        if _kinked(name, alpha)
    ]
    if kind == "hinge":
        rows = np.arange(logits.shape[0])
        labels = np.asarray(y, dtype=np.int64)
        sides.append(logits - logits[rows, labels][:, None] + 1.0 > 0.0)
    flat = [s.reshape(-1) for s in sides]
    return value, np.concatenate(flat) if flat else np.zeros(0, dtype=bool)


def _term_magnitudes(
    ref: ReferenceMLP, params: list, x: np.ndarray, y: np.ndarray, kind: str, smoothing: float
) -> list[np.ndarray]:
    """For every gradient entry, the sum of the magnitudes of the terms backpropagation adds up
    to form it (ReferenceMLP.backward on absolute values)."""
    logits, cache = ref.forward(params, x)
    _, dlogits = loss_and_dlogits(logits, y, kind, smoothing)
    return ref.backward(cache, dlogits, magnitudes=True)
