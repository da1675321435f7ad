"""The C++ training engine (fastmlp._core.Network via fastmlp.MLP) against the float64 NumPy
reference network (fastmlp.reference.network) and the reference optimizers and dropout masks.

Tolerances: the engine works in float32 (GEMM accumulation, float32 activations), the reference
in float64, so agreement is to float32 rounding amplified by the sums of a small network:
relative ~1e-6. Each assertion states its bound and why; a wrong formula gives errors of O(1e-2)
or more, far above every bound used here.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import _core
from fastmlp import reference as ref
from fastmlp.reference.network import ReferenceMLP

ACTIVATIONS = ["identity", "relu", "leaky_relu", "prelu", "elu", "sigmoid", "tanh"]
LOSSES = ["cross_entropy", "mse", "hinge", "bce"]


def make_data(rng: np.random.Generator, n: int, d_in: int, d_out: int, loss: str):
    x = rng.standard_normal((n, d_in)).astype(np.float32)
    if loss in ("cross_entropy", "hinge"):
        y = rng.integers(0, d_out, size=n)
    elif loss == "mse":
        y = rng.standard_normal((n, d_out)).astype(np.float32)
    else:  # bce: soft targets in [0, 1]
        y = rng.uniform(0.0, 1.0, (n, d_out)).astype(np.float32)
    return x, y


def assert_tensors_close(actual, expected, rel: float, what: str) -> None:
    """Normwise per tensor: max|a - e| <= rel * max(max|e|, 1e-3) (absolute below 1e-3, where
    float32 rounding of the terms, not of the result, dominates)."""
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == np.shape(e), f"{what}[{i}]: shape {a.shape} vs {np.shape(e)}"
        err = np.abs(a.astype(np.float64) - e).max(initial=0.0)
        scale = max(np.abs(e).max(initial=0.0), 1e-3)
        assert err <= rel * scale, f"{what}[{i}]: max error {err:.3g} vs scale {scale:.3g}"


def distance_to_kinks(model: fm.MLP, x: np.ndarray, y: np.ndarray, loss: str) -> float:
    """Smallest |z| over hidden pre-activations of kinked activations, and smallest |margin| of
    the hinge loss: a kink closer than the finite-difference step would spoil a gradient check."""
    r = ReferenceMLP.from_model(model)
    logits, cache = r.forward([w.astype(np.float64) for w in model.get_weights()], x)
    dist = math.inf
    for z, name in zip(cache["z"][:-1], model.activations):
        if name in ("relu", "leaky_relu", "prelu", "elu"):
            dist = min(dist, float(np.abs(z).min()))
    if loss == "hinge":
        rows = np.arange(len(y))
        margins = logits - logits[rows, y][:, None] + 1.0
        margins[rows, y] = np.inf
        dist = min(dist, float(np.abs(margins).min()))
    return dist


# ---------------------------------------------------------------- forward, loss, gradients


@pytest.mark.parametrize("batch", [1, 37])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_forward_loss_gradients_match_reference(loss, activation, batch):
    rng = np.random.default_rng(zlib.crc32(f"{loss}/{activation}/{batch}".encode()))
    sizes = [7, 13, 5, 6]  # odd widths, two hidden layers
    model = fm.MLP(sizes, activation=activation, init="xavier", seed=3)
    if activation == "prelu":  # move the slopes off their init so a slope bug cannot hide
        w = model.get_weights()
        w[-2][:] = 0.1
        w[-1][:] = 0.4
        model.set_weights(w)
    x, y = make_data(rng, batch, sizes[0], sizes[-1], loss)
    r = ReferenceMLP.from_model(model)
    params = [w.astype(np.float64) for w in model.get_weights()]
    if activation == "prelu":
        assert len(params) == 2 * 3 + 2

    logits_ref, _ = r.forward(params, x)
    # Forward: logits of O(1); float32 rounding through two hidden layers -> ~1e-6 relative.
    np.testing.assert_allclose(model.forward(x), logits_ref, rtol=1e-5, atol=1e-5)

    loss_ref, grads_ref = r.loss_and_gradients(params, x, y, loss)
    value, grads = model.loss_and_gradients(x, y, loss)
    # The loss is accumulated in double from float32 logits: relative ~1e-6.
    assert value == pytest.approx(loss_ref, rel=1e-5, abs=1e-6)
    # Gradients: float32 GEMMs over <= 37 rows; normwise 1e-4 is ~100x the expected rounding.
    assert_tensors_close(grads, grads_ref, 1e-4, f"grads {loss}/{activation}/{batch}")


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_single_output_accepts_1d_targets(loss, rng):
    model = fm.MLP([4, 9, 1], activation="tanh", seed=1)
    x = rng.standard_normal((11, 4)).astype(np.float32)
    y = rng.uniform(0, 1, 11).astype(np.float32)
    v1, g1 = model.loss_and_gradients(x, y, loss)
    v2, g2 = model.loss_and_gradients(x, y[:, None], loss)
    assert v1 == v2  # the same call after a reshape: bit-identical
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)
    r = ReferenceMLP.from_model(model)
    loss_ref, grads_ref = r.loss_and_gradients(model.get_weights(), x, y[:, None], loss)
    assert v1 == pytest.approx(loss_ref, rel=1e-5)  # float32 vs float64, as above
    assert_tensors_close(g1, grads_ref, 1e-4, loss)


def test_label_smoothing_matches_reference(rng):
    model = fm.MLP([5, 8, 4], activation="elu", seed=2)
    x, y = make_data(rng, 9, 5, 4, "cross_entropy")
    r = ReferenceMLP.from_model(model)
    loss_ref, grads_ref = r.loss_and_gradients(model.get_weights(), x, y, "cross_entropy", 0.1)
    value, grads = model.loss_and_gradients(x, y, "cross_entropy", label_smoothing=0.1)
    plain, _ = model.loss_and_gradients(x, y, "cross_entropy")
    assert value != plain  # smoothing changes the loss
    assert value == pytest.approx(loss_ref, rel=1e-5)  # float32 vs float64, as above
    assert_tensors_close(grads, grads_ref, 1e-4, "label smoothing")


def test_reference_network_agrees_with_autodiff_free_check(rng):
    """The reference itself: its backward matches its own central differences (float64)."""
    r = ReferenceMLP([3, 4, 2], ["tanh"], [0.0])
    params = [rng.standard_normal(s) for s in [(3, 4), (4,), (4, 2), (2,)]]
    x = rng.standard_normal((5, 3))
    y = rng.integers(0, 2, 5)
    _, grads = r.loss_and_gradients(params, x, y, "cross_entropy")
    eps = 1e-6
    for p, g in zip(params, grads):
        flat, gflat = p.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            up = r.loss(params, x, y, "cross_entropy")
            flat[i] = old - eps
            down = r.loss(params, x, y, "cross_entropy")
            flat[i] = old
            # Central differences in float64: error ~eps^2 + 1e-16/eps ~ 1e-10.
            assert (up - down) / (2 * eps) == pytest.approx(gflat[i], abs=1e-8)


# ---------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_gradcheck(loss, activation):
    rng = np.random.default_rng(zlib.crc32(f"gc/{loss}/{activation}".encode()))
    model = fm.MLP([6, 7, 5, 4], activation=activation, init="xavier", seed=5)
    x, y = make_data(rng, 8, 6, 4, loss)
    # By construction: no kink within 1e-4 of any point, 100x the finite-difference step.
    assert distance_to_kinks(model, x, y, loss) > 1e-4
    # Engine float32 vs float64 differences: ~1e-6 normwise; the contract is < 1e-4.
    assert fm.gradcheck(model, x, y, loss) < 1e-4


def test_gradients_through_saturated_elu_units(rng):
    # Hidden pre-activations of about -15: elu's derivative alpha e^z (3e-7) keeps its relative
    # accuracy, so W1's and b1's gradients (~1e-7) do too (computed as f(z) + alpha it had 2.6%
    # error here). Against the float64 reference's analytic gradients: central differences of the
    # loss (~0.7) carry ~1e-10 of rounding, 1e-3 of gradients this small.
    model = fm.MLP([3, 4, 2], activation="elu", seed=0)
    w = model.get_weights()
    w[0][:] = 0.01
    w[1][:] = -15.0
    model.set_weights(w)
    x, y = rng.normal(size=(8, 3)).astype(np.float32), np.arange(8) % 2
    _, grads = model.loss_and_gradients(x, y)
    params = [p.astype(np.float64) for p in model.get_weights()]
    _, exact = ReferenceMLP.from_model(model).loss_and_gradients(
        params, x.astype(np.float64), y, "cross_entropy"
    )
    for g, e in zip(grads, exact):
        assert np.abs(g - e).max() <= 1e-5 * np.abs(e).max()


def test_gradcheck_detects_a_wrong_gradient(rng):
    class Broken(fm.MLP):
        def loss_and_gradients(self, x, y, loss=None, *, label_smoothing=0.0):
            value, grads = super().loss_and_gradients(x, y, loss, label_smoothing=label_smoothing)
            grads[2] = grads[2] * 1.01  # a 1% error in W_2
            return value, grads

    model = Broken([4, 5, 3], activation="tanh", seed=0)
    x, y = make_data(rng, 6, 4, 3, "cross_entropy")
    assert fm.gradcheck(model, x, y) > 5e-3  # the 1% error shows as ~1e-2


def hinge_model_with_cancelling_bias_gradients() -> tuple[fm.MLP, np.ndarray, np.ndarray]:
    """A linear-hidden-layer net and batch (found by a user review) where the hinge indicators
    cancel column by column: the exact gradients of both biases are 0, the engine's ~1.5e-8."""
    rng = np.random.default_rng(16)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    model = fm.MLP([5, 7, 4], activation="identity", seed=16)
    return model, x, rng.integers(0, 4, 6)


def test_gradcheck_compares_cancelling_gradients_with_their_terms():
    model, x, y = hinge_model_with_cancelling_bias_gradients()
    params = [w.astype(np.float64) for w in model.get_weights()]
    _, exact = ReferenceMLP.from_model(model).loss_and_gradients(params, x, y, "hinge")
    assert np.abs(exact[1]).max() < 1e-15 and np.abs(exact[3]).max() < 1e-15  # the premise
    # Normwise against the gradients alone this was 1.0 (rounding noise over exact zeros).
    assert fm.gradcheck(model, x, y, "hinge") < 1e-6


def test_gradcheck_detects_a_wrong_gradient_that_should_cancel():
    class Broken(fm.MLP):
        def loss_and_gradients(self, x, y, loss=None, *, label_smoothing=0.0):
            value, grads = super().loss_and_gradients(x, y, loss, label_smoothing=label_smoothing)
            grads[3] = grads[3] + np.float32(1e-3)  # b_2's exact gradient is 0; its terms ~1/6
            return value, grads

    model, x, y = hinge_model_with_cancelling_bias_gradients()
    broken = Broken([5, 7, 4], activation="identity", seed=16)
    broken.set_weights(model.get_weights())
    assert fm.gradcheck(broken, x, y, "hinge") > 1e-3


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "prelu", "elu"])
def test_gradcheck_leaves_out_entries_whose_perturbations_straddle_a_kink(rng, activation):
    # Hidden unit 0's pre-activation on row 0 sits 1e-7 from 0, inside the 1e-6 step: perturbing
    # b_1[0] moves it across the kink, where the difference quotient averages the two slopes.
    alpha = 0.5 if activation == "elu" else None  # elu's derivative jumps at 0 unless alpha = 1
    model = fm.MLP([3, 4, 2], activation=activation, activation_alpha=alpha, seed=1)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    w = model.get_weights()
    z0 = float(x[0].astype(np.float64) @ w[0][:, 0].astype(np.float64))
    w[1][0] = np.float32(1e-7 - z0)
    model.set_weights(w)
    z = x.astype(np.float64) @ w[0].astype(np.float64) + w[1]
    assert 0 < abs(z[0, 0]) < 1e-6  # the premise
    assert fm.gradcheck(model, x, np.arange(5) % 2) < 1e-4


def test_gradcheck_leaves_out_entries_whose_perturbations_straddle_a_hinge_margin(rng):
    model = fm.MLP([3, 2], seed=2)  # no hidden layer: logits = x W + b
    x = rng.standard_normal((4, 3)).astype(np.float32)
    y = np.array([0, 1, 0, 1])
    w = model.get_weights()
    logits = x.astype(np.float64) @ w[0].astype(np.float64) + w[1]
    # Row 0's margin for class 1, z_1 - z_0 + 1, moved to 1e-7 through b_1 - b_0.
    w[1][1] = np.float32(w[1][1] - (logits[0, 1] - logits[0, 0] + 1.0) + 1e-7)
    model.set_weights(w)
    z = x.astype(np.float64) @ w[0].astype(np.float64) + w[1]
    assert 0 < abs(z[0, 1] - z[0, 0] + 1.0) < 1e-6  # the premise
    assert fm.gradcheck(model, x, y, "hinge") < 1e-4


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("tensor", [0, 1, 3])
def test_gradcheck_reports_a_non_finite_gradient_as_inf(rng, bad, tensor):
    """max() kept the running worst when a tensor's error was NaN (and inf / inf is NaN), so a
    gradient with a NaN or inf entry passed the check."""

    class Broken(fm.MLP):
        def loss_and_gradients(self, x, y, loss=None, *, label_smoothing=0.0):
            value, grads = super().loss_and_gradients(x, y, loss, label_smoothing=label_smoothing)
            grads[tensor].reshape(-1)[0] = bad
            return value, grads

    model = Broken([4, 5, 3], activation="tanh", seed=0)
    x, y = make_data(rng, 6, 4, 3, "cross_entropy")
    assert fm.gradcheck(model, x, y) == np.inf


@pytest.mark.parametrize(
    ("kw", "error", "pattern"),
    [
        ({"eps": np.inf}, ValueError, r"^eps: expected a finite value"),
        ({"eps": None}, TypeError, r"^eps: expected a real number, got NoneType"),
        ({"eps": True}, TypeError, r"^eps: expected a real number, got bool"),
        ({"seed": -1}, ValueError, r"^seed: expected >= 0"),
        ({"seed": 1.5}, TypeError, r"^seed: expected an int"),
    ],
)
def test_gradcheck_argument_errors(rng, kw, error, pattern):
    model = fm.MLP([4, 5, 3], seed=0)
    x, y = make_data(rng, 6, 4, 3, "cross_entropy")
    with pytest.raises(error, match=pattern):
        fm.gradcheck(model, x, y, **kw)


def test_gradcheck_samples_a_subset_of_a_larger_model(rng):
    model = fm.MLP([30, 40, 10], activation="sigmoid", seed=1)
    x, y = make_data(rng, 16, 30, 10, "cross_entropy")
    # 5 random entries per tensor instead of all 1650; float32 vs float64 as above.
    assert fm.gradcheck(model, x, y, samples=5) < 1e-4
    assert fm.gradcheck(model, x, y, samples=np.int64(2)) < 1e-4
    with pytest.raises(ValueError, match=r"^samples: expected >= 1"):
        fm.gradcheck(model, x, y, samples=0)  # would check nothing and report 0.0
    with pytest.raises(TypeError, match=r"^samples: expected an int"):
        fm.gradcheck(model, x, y, samples=2.5)


def test_gradcheck_needs_dropout_off(rng):
    model = fm.MLP([4, 5, 3], dropout=0.5, seed=0)
    x, y = make_data(rng, 6, 4, 3, "cross_entropy")
    with pytest.raises(ValueError, match=r"^model: gradcheck needs dropout off"):
        fm.gradcheck(model, x, y)
    model.eval()
    assert fm.gradcheck(model, x, y) < 1e-4  # eval mode: no dropout; float32 as above


# ---------------------------------------------------------------- dropout


@pytest.mark.parametrize("activation", [["prelu", "elu"], ["sigmoid", "tanh"], ["tanh", "sigmoid"]])
def test_dropout_masks_follow_the_documented_scheme(rng, activation):
    sizes, ps, seed = [6, 11, 9, 3], [0.3, 0.5], 1234
    # Backward needs the slope gradient (PReLU) and the pre-dropout output a_l, not the dropped-out
    # h_l: ELU, sigmoid and tanh take their derivatives from it.
    model = fm.MLP(sizes, activation=activation, dropout=ps, seed=seed)
    model.rng_offset = 77  # any start
    r = ReferenceMLP.from_model(model)
    params = [w.astype(np.float64) for w in model.get_weights()]
    for n in (5, 1, 8):
        x, y = make_data(rng, n, 6, 3, "cross_entropy")
        o1 = model.rng_offset
        o2 = o1 + n * sizes[1]
        masks = [
            ref.dropout_mask((n, sizes[1]), ps[0], seed=seed, offset=o1),
            ref.dropout_mask((n, sizes[2]), ps[1], seed=seed, offset=o2),
        ]
        assert (masks[0] == 0).any() and (masks[0] != 0).any()  # the test is not vacuous
        value, grads = model.loss_and_gradients(x, y)  # training mode: dropout on
        assert model.rng_offset == o2 + n * sizes[2]
        loss_ref, grads_ref = r.loss_and_gradients(params, x, y, "cross_entropy", masks=masks)
        assert value == pytest.approx(loss_ref, rel=1e-5)  # float32 vs float64, as above
        assert_tensors_close(grads, grads_ref, 1e-4, f"dropout n={n}")
    # The raw training-mode forward draws the same way.
    o1 = model.rng_offset
    out = model._net.forward(x, True)
    masks = [
        ref.dropout_mask((8, sizes[1]), ps[0], seed=seed, offset=o1),
        ref.dropout_mask((8, sizes[2]), ps[1], seed=seed, offset=o1 + 8 * sizes[1]),
    ]
    np.testing.assert_allclose(out, r.forward(params, x, masks)[0], rtol=1e-5, atol=1e-5)
    # Eval mode: no dropout and no draws.
    model.eval()
    before = model.rng_offset
    np.testing.assert_allclose(model(x), r.forward(params, x)[0], rtol=1e-5, atol=1e-5)
    model.loss_and_gradients(x, y)
    assert model.rng_offset == before


def _train_with_dropout(threads: int) -> tuple[list[np.ndarray], list[float]]:
    saved = fm.get_num_threads()
    fm.set_num_threads(threads)
    try:
        rng = np.random.default_rng(7)
        # 512 x 256 = 131072 elements per hidden layer: large enough that the dropout, activation
        # and GEMM kernels split the work across threads when given 2.
        model = fm.MLP([20, 256, 128, 5], activation=["tanh", "relu"], dropout=[0.2, 0.4], seed=11)
        opt = fm.optim.SGD(model, lr=0.05, momentum=0.9)
        losses = []
        for _ in range(3):
            x, y = make_data(rng, 512, 20, 5, "cross_entropy")
            losses.append(model.train_step(x, y, optimizer=opt))
        return model.get_weights(), losses
    finally:
        fm.set_num_threads(saved)


def test_dropout_training_is_deterministic_across_runs_and_threads():
    w1, l1 = _train_with_dropout(1)
    w1b, l1b = _train_with_dropout(1)
    w2, l2 = _train_with_dropout(2)
    # Same seed: bit-identical runs. Kernels sum in a thread-count independent order, so the
    # thread count does not change a bit either.
    assert l1 == l1b == l2
    for a, b, c in zip(w1, w1b, w2):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_dropout_differs_between_steps_and_seeds(rng):
    x, y = make_data(rng, 16, 8, 3, "cross_entropy")
    m1 = fm.MLP([8, 32, 3], dropout=0.5, seed=1)
    a = m1.loss_and_gradients(x, y)[0]
    b = m1.loss_and_gradients(x, y)[0]
    assert a != b  # a fresh mask for each pass
    m2 = fm.MLP([8, 32, 3], dropout=0.5, seed=2)
    m2.set_weights(m1.get_weights())
    m2.rng_offset = 0
    m1.rng_offset = 0
    assert m1.loss_and_gradients(x, y)[0] == a  # same seed and offset: same mask
    assert m2.loss_and_gradients(x, y)[0] != a  # another seed: another mask


# ---------------------------------------------------------------- optimizers

OPTIMIZERS = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "l1": 1e-3}),
    ("adagrad", {"lr": 0.05}),
    ("adagrad", {"lr": 0.05, "lr_decay": 0.1, "weight_decay": 0.01, "l1": 1e-3}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.01}),
    ("rmsprop", {"lr": 0.01, "centered": True, "alpha": 0.9, "l1": 1e-3}),
    ("rmsprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.01, "l1": 1e-3}),
    ("adamw", {"lr": 0.01}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1, "eps": 1e-6}),
]
_CLASSES = {
    "sgd": fm.optim.SGD,
    "adagrad": fm.optim.AdaGrad,
    "rmsprop": fm.optim.RMSProp,
    "adam": fm.optim.Adam,
    "adamw": fm.optim.AdamW,
}


class ReferenceOptimizer:
    """fastmlp.reference.*_step over each parameter tensor, state in float64."""

    def __init__(self, kind: str, config: dict, params: list[np.ndarray]) -> None:
        self.kind, self.config = kind, dict(config)
        self.params = [p.astype(np.float64) for p in params]
        zeros = [np.zeros_like(p) for p in self.params]
        self.state = [[z.copy(), z.copy(), z.copy()] for z in zeros]
        self.t = 0

    def step(self, grads: list[np.ndarray], lr: float | None = None) -> None:
        self.t += 1
        cfg = dict(self.config)
        if lr is not None:
            cfg["lr"] = lr
        for i, (p, g) in enumerate(zip(self.params, grads)):
            s = self.state[i]
            if self.kind == "sgd":
                p, s[0] = ref.sgd_step(p, g, s[0], step=self.t, **cfg)
            elif self.kind == "adagrad":
                p, s[0] = ref.adagrad_step(p, g, s[0], step=self.t, **cfg)
            elif self.kind == "rmsprop":
                p, s[0], s[1], s[2] = ref.rmsprop_step(p, g, s[0], s[1], s[2], step=self.t, **cfg)
            elif self.kind == "adam":
                p, s[0], s[1] = ref.adam_step(p, g, s[0], s[1], self.t, **cfg)
            else:
                p, s[0], s[1] = ref.adamw_step(p, g, s[0], s[1], self.t, **cfg)
            self.params[i] = p


@pytest.mark.parametrize(("kind", "config"), OPTIMIZERS)
def test_ten_optimizer_steps_match_reference_updates(kind, config):
    """Each update given the engine's gradients at the engine's weights (checked against the
    reference above) matches fastmlp.reference's update rule; the lr changes midway as a
    schedule would change it."""
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{config}".encode()))
    model = fm.MLP([5, 9, 7, 3], activation=["tanh", "prelu"], seed=4)
    opt = _CLASSES[kind](model, **config)
    reference = ReferenceOptimizer(kind, config, model.get_weights())
    for step in range(10):
        if step == 5:
            opt.lr = config["lr"] * 0.5
        x, y = make_data(rng, 13, 5, 3, "cross_entropy")
        value, grads = model.loss_and_gradients(x, y)
        assert model.train_step(x, y, optimizer=opt) == value  # same weights, same code: exact
        reference.step(grads, lr=opt.lr)
        assert opt.step_count == step + 1
        # float32 parameters and state vs float64: each step adds ~1e-7 relative rounding;
        # a wrong rule is off by O(lr) = 1e-3..1e-1 per step.
        for i, (a, e) in enumerate(zip(model.get_weights(), reference.params)):
            np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-6, err_msg=f"{kind} param {i}")
        # Keep the reference on the engine's float32 weights so rounding does not accumulate.
        reference.params = [w.astype(np.float64) for w in model.get_weights()]


@pytest.mark.parametrize(
    ("kind", "config"),
    [("sgd", {"lr": 0.1, "momentum": 0.9}), ("adam", {"lr": 0.01}), ("rmsprop", {"lr": 0.01})],
)
def test_ten_fused_steps_match_a_reference_training_loop(kind, config):
    """End to end: the engine's 10 fused train_steps vs a float64 loop of reference forward,
    backward and update, each on its own weights."""
    rng = np.random.default_rng(99)
    model = fm.MLP([6, 10, 4], activation="tanh", seed=8)
    opt = _CLASSES[kind](model, **config)
    r = ReferenceMLP.from_model(model)
    reference = ReferenceOptimizer(kind, config, model.get_weights())
    for _ in range(10):
        x, y = make_data(rng, 17, 6, 4, "cross_entropy")
        value = model.train_step(x, y, optimizer=opt)
        loss_ref, grads = r.loss_and_gradients(reference.params, x, y, "cross_entropy")
        reference.step(grads)
        assert value == pytest.approx(loss_ref, rel=1e-4)  # float32 drift over <= 10 steps
    # Ten steps of float32 rounding (~1e-7 each), amplified at most by the adaptive
    # normalisation of small gradients: 1e-4 relative to the largest weight.
    assert_tensors_close(model.get_weights(), reference.params, 1e-4, kind)


def test_weight_decay_reaches_biases_and_slopes():
    model = fm.MLP([3, 4, 2], activation="prelu", seed=0)
    w = model.get_weights()
    w[1][:] = 1.0  # biases of layer 1
    model.set_weights(w)
    opt = fm.optim.SGD(model, lr=0.1, weight_decay=0.5)
    x = np.zeros((2, 3), np.float32)  # no signal reaches b_1 through x; only decay moves it
    before = model.get_weights()
    _, grads = model.loss_and_gradients(x, np.array([0, 1]))
    model.train_step(x, np.array([0, 1]), optimizer=opt)
    after = model.get_weights()
    # b_1' = b_1 - lr (g + wd b_1); float32 arithmetic on O(1) values: 1e-6.
    np.testing.assert_allclose(after[1], before[1] - 0.1 * (grads[1] + 0.5 * before[1]), atol=1e-6)
    assert after[-1][0] != before[-1][0]  # the PReLU slope is decayed too (its grad is 0 here)


# ---------------------------------------------------------------- safety


def test_non_finite_step_raises_and_changes_nothing(rng):
    model = fm.MLP([10, 16, 3], dropout=0.2, seed=0)
    opt = fm.optim.Adam(model, lr=1e-2)
    x, y = make_data(rng, 32, 10, 3, "cross_entropy")
    model.train_step(x, y, optimizer=opt)  # some optimizer state exists
    opt_sgd = fm.optim.SGD(model, lr=1e30)
    raised = False
    for _ in range(5):
        before, offset, steps = model.get_weights(), model.rng_offset, opt_sgd.step_count
        try:
            model.train_step(x * 100, y, optimizer=opt_sgd)
        except FloatingPointError as exc:
            assert str(exc).startswith(("loss:", "gradients:"))
            raised = True
            for a, b in zip(model.get_weights(), before):
                np.testing.assert_array_equal(a, b)
            assert opt_sgd.step_count == steps
            assert model.rng_offset == offset
            break
    assert raised, "lr=1e30 should make the loss overflow within a few steps"

    # The Adam optimizer was untouched by the failed SGD step; it keeps working.
    model.set_weights(fm.MLP([10, 16, 3], seed=0).get_weights())
    assert math.isfinite(model.train_step(x, y, optimizer=opt))
    assert opt.step_count == 2


@pytest.mark.parametrize("batch", [4, 256])  # the serial and the batch-parallel backward
@pytest.mark.parametrize(
    "make_opt",
    [
        lambda m: fm.optim.SGD(m, lr=1e-30),
        lambda m: fm.optim.AdaGrad(m, lr=1e-30),
        lambda m: fm.optim.RMSProp(m, lr=1e-30, centered=True, momentum=0.9),
        lambda m: fm.optim.Adam(m, lr=1e-30),
    ],
)
def test_a_gradient_whose_square_overflows_is_refused_before_the_update(make_opt, batch):
    """A finite gradient of 2^64 or more squares to inf in float32: centered RMSProp then wrote
    -inf into a weight (inf - inf, clamped to 0, as the denominator) and Adam took a silent zero
    step, and the step reported success. The update is refused like a NaN gradient, and nothing
    changes; loss_and_gradients, which updates nothing, still returns such gradients."""
    x = np.full((batch, 40), 1e10, np.float32)
    t = np.zeros((batch, 64), np.float32)
    model = fm.MLP([40, 64, 64], activation="identity", seed=0, loss="mse")
    loss, grads = model.loss_and_gradients(x, t)  # mse ~1e20 and gradients ~1e21: finite
    assert math.isfinite(loss) and max(np.abs(g).max() for g in grads) >= 2.0**64
    assert np.isfinite(np.concatenate([g.ravel() for g in grads])).all()
    opt = make_opt(model)
    before, offset = model.get_weights(), model.rng_offset
    with pytest.raises(FloatingPointError, match=r"^gradients: NaN, infinite, or 2\^64"):
        model.train_step(x, t, optimizer=opt)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert opt.step_count == 0 and model.rng_offset == offset
    model.train_step(x / 1e10, t, optimizer=opt)  # and the optimizer is still usable
    assert opt.step_count == 1


@pytest.mark.parametrize("batch", [4, 256])
@pytest.mark.parametrize(
    "make_opt",
    [
        lambda m: fm.optim.RMSProp(m, lr=1e-3, centered=True, weight_decay=10.0),
        lambda m: fm.optim.AdaGrad(m, lr=1e-3, weight_decay=10.0),
        lambda m: fm.optim.Adam(m, lr=1e-3, l1=2.0**64),
    ],
)
def test_the_bound_covers_weight_decay_and_l1(make_opt, batch):
    """g' = g + weight_decay * p + l1 * sign(p) is what the rules square: a weight of 1e21 under
    weight_decay=10 overflowed with g = 0 (centered RMSProp wrote NaN). AdamW's decoupled decay
    is not part of g': the same weight trains."""
    x = np.full((batch, 40), 0.1, np.float32)
    x[:, 0] = 0.0  # input 0 is always 0: W_1[0, 0]'s gradient is 0
    t = np.zeros((batch, 64), np.float32)
    model = fm.MLP([40, 64, 64], activation="identity", seed=0, loss="mse")
    assert model._net.step_is_batch_parallel(batch) == (batch == 256)
    weights = model.get_weights()
    weights[0][0, 0] = 1e21
    model.set_weights(weights)
    opt = make_opt(model)
    with pytest.raises(FloatingPointError, match=r"^gradients: NaN, infinite, or 2\^64"):
        model.train_step(x, t, optimizer=opt)
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    assert opt.step_count == 0
    adamw = fm.optim.AdamW(model, lr=1e-3, weight_decay=10.0)
    model.train_step(x, t, optimizer=adamw)
    assert np.isfinite(model.get_weights()[0]).all() and adamw.step_count == 1


def test_failed_step_keeps_the_optimizer_state(rng):
    """A step that raises leaves moments and step count alone: the next good step equals the
    step a twin model takes without the failure in between."""
    x, y = make_data(rng, 12, 4, 3, "cross_entropy")
    a = fm.MLP([4, 6, 3], seed=1)
    b = fm.MLP([4, 6, 3], seed=1)
    oa, ob = fm.optim.Adam(a, lr=0.01), fm.optim.Adam(b, lr=0.01)
    a.train_step(x, y, optimizer=oa)
    b.train_step(x, y, optimizer=ob)
    with pytest.raises(FloatingPointError):
        a.train_step(np.full_like(x, 3e38), y, optimizer=oa)  # logits overflow to inf
    assert oa.step_count == 1
    a.train_step(x, y, optimizer=oa)
    b.train_step(x, y, optimizer=ob)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_no_allocation_once_a_batch_size_was_seen(rng):
    model = fm.MLP([30, 40, 20, 5], dropout=0.1, seed=0)
    opt = fm.optim.Adam(model)
    x, y = make_data(rng, 64, 30, 5, "cross_entropy")
    model.train_step(x, y, optimizer=opt)
    size = model._net.workspace_bytes()
    assert size > 0
    for n in (64, 1, 17, 64, 33):
        model.train_step(x[:n], y[:n], optimizer=opt)
        model.loss_and_gradients(x[:n], y[:n])
        model.evaluate(x[:n], y[:n], batch_size=64)
        assert model._net.workspace_bytes() == size
    # Prediction on many rows runs in chunks: the workspace grows to at most the chunk size.
    big = rng.standard_normal((5000, 30)).astype(np.float32)
    model.predict(big)
    assert model._net.workspace_rows() == max(64, _core.Network.FORWARD_CHUNK_ROWS)
    grown = model._net.workspace_bytes()
    model.predict(big)
    model.train_step(x, y, optimizer=opt)
    assert model._net.workspace_bytes() == grown


def test_chunked_prediction_equals_one_pass(rng):
    model = fm.MLP([12, 20, 4], seed=0)
    x = rng.standard_normal((2500, 12)).astype(np.float32)
    whole = model(x)  # 2500 rows > 1024: three chunks
    # Rows are independent and the kernels do not depend on the row count: identical bits.
    np.testing.assert_array_equal(whole[:7], model(x[:7]))
    np.testing.assert_array_equal(whole[2400:], model(x[2400:]))


def test_initial_cross_entropy_of_a_normal_init_net_is_log10(rng):
    model = fm.MLP([784, 256, 128, 10], init="normal", seed=0)
    x = rng.uniform(0, 1, (256, 784)).astype(np.float32)  # MNIST-like pixels
    y = rng.integers(0, 10, 256)
    value, _ = model.loss_and_gradients(x, y)
    # N(0, 0.01^2) weights give near-zero logits, so softmax ~ uniform: CE ~ ln(10).
    assert abs(value - math.log(10)) < 0.02


def test_evaluate_matches_reference_and_does_not_depend_on_batch_size(rng):
    for loss in LOSSES:
        model = fm.MLP([5, 8, 3], activation="sigmoid", seed=2, loss=loss)
        x, y = make_data(rng, 50, 5, 3, loss)
        z = model(x).astype(np.float64)
        from fastmlp.reference.network import loss_and_dlogits

        expected = loss_and_dlogits(z, y, loss)[0]
        r1 = model.evaluate(x, y)
        r2 = model.evaluate(x, y, batch_size=7)
        # double accumulation of float32 losses: the chunking changes the sum order only.
        assert r1["loss"] == pytest.approx(expected, rel=1e-6)
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-9)
        assert r1["accuracy"] == r2["accuracy"]
        if loss in ("cross_entropy", "hinge"):
            assert r1["accuracy"] == np.mean(z.argmax(1) == y)
        elif loss == "bce":
            assert r1["accuracy"] == np.mean((z > 0) == (y > 0.5))
        else:
            assert r1["accuracy"] is None


@pytest.mark.parametrize(
    ("sizes", "what"),
    [
        ([2**48, 2**16, 1], "the parameter count"),  # 2**64 weights wrapped to 0: 131073 reported
        ([1, 2**61, 1], "the parameter count"),
        ([2**40, 2**20], "the parameter count"),
        ([1] + [2**59] * 4, "the parameter count"),  # each layer fits; their sum does not
    ],
)
def test_core_network_refuses_counts_that_overflow(sizes, what):
    """_core.Network is reachable without MLP's own size check: the engine refuses (ValueError,
    as every argument error) a layout whose float counts would leave int64, before allocating."""
    hidden = len(sizes) - 2
    with pytest.raises(ValueError, match=rf"^layer_sizes: {what} would exceed 2\^60 floats"):
        _core.Network(sizes, [1] * hidden, [0.0] * hidden, [0.0] * hidden, 0)


def test_a_forked_child_runs_on_one_thread_and_gives_the_same_results():
    # libgomp's threads do not survive fork: a child forked after the parent's first parallel
    # region waited forever in its own first one (multiprocessing's default start method on
    # Linux), and set_num_threads(2) in the child brought the hang back. A subprocess with
    # timeouts, so that a hang fails the test instead of pytest.
    code = textwrap.dedent(
        """
        import os, sys
        import numpy as np
        import fastmlp as fm

        fm.set_num_threads(2)
        rng = np.random.default_rng(0)
        model = fm.MLP([64, 256, 10], seed=0)
        x = rng.standard_normal((2048, 64)).astype(np.float32)
        y = rng.integers(0, 10, 2048)
        parent = model.predict_proba(x)  # starts the OpenMP threads
        pid = os.fork()
        if pid == 0:
            ok = fm.get_num_threads() == 1
            ok = ok and np.array_equal(model.predict_proba(x), parent)
            model.train_step(x, y, optimizer=fm.optim.SGD(model, lr=0.1))
            ok = ok and np.array_equal(fm.ops.relu(x), np.maximum(x, 0))
            try:  # more threads would hang in the next parallel region: refused, by name
                fm.set_num_threads(2)
                ok = False
            except RuntimeError as exc:
                ok = ok and str(exc).startswith("n: this process was forked")
            fm.set_num_threads(1)
            ok = ok and fm.get_num_threads() == 1
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status), "parent threads", fm.get_num_threads())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["child", "0", "parent", "threads", "2"]


def test_a_batch_too_large_for_memory_is_a_memory_error_naming_x():
    # The workspace's std::bad_alloc reached Python as "MemoryError: std::bad_alloc". A
    # subprocess whose address space is capped at 2 GiB, so that the allocation fails at once.
    code = textwrap.dedent(
        """
        import resource
        import numpy as np
        import fastmlp as fm

        model = fm.MLP([64, 512, 256, 10], seed=0)
        opt = fm.optim.SGD(model, lr=0.1)
        before = model.get_weights()
        x = np.zeros((400_000, 64), np.float32)  # 100 MiB; the workspace would need ~5 GiB
        y = np.zeros(400_000, np.int64)
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, resource.RLIM_INFINITY))
        for call in (lambda: model.train_step(x, y, optimizer=opt),
                     lambda: model.loss_and_gradients(x, y)):
            try:
                call()
            except MemoryError as exc:
                assert str(exc).startswith("x: a batch of 400000 rows needs "), str(exc)
            else:
                raise AssertionError("no MemoryError")
        assert opt.step_count == 0
        assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok"]


def test_prelu_slope_is_updated_in_a_network_of_several_update_pieces(rng):
    """100 * 100 + 100 + 100 * 3 + 3 + 1 = 10404 parameters, more than one piece of the engine's
    update (8192): the PReLU slope, after the last bias, is updated as its own piece. One SGD step
    moves every tensor, the slope included, by -lr * its gradient."""
    model = fm.MLP([100, 100, 3], activation="prelu", seed=0)
    x = rng.standard_normal((32, 100)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    before = model.get_weights()
    _, grads = model.loss_and_gradients(x, y)
    assert grads[-1].any()  # the slope has a gradient: the test is not vacuous
    model.train_step(x, y, optimizer=fm.optim.SGD(model, lr=0.5))
    for w0, g, w1 in zip(before, grads, model.get_weights()):
        np.testing.assert_allclose(w1, w0 - np.float32(0.5) * g, rtol=1e-6, atol=1e-7)


_BATCH_PARALLEL_GRADIENTS = """
import sys
import numpy as np
import fastmlp as fm
fm.set_num_threads(2)
rng = np.random.default_rng(3)
model = fm.MLP([100, 96, 10], activation="tanh", seed=0)
assert model._net.step_is_batch_parallel(256)
x = rng.standard_normal((256, 100)).astype(np.float32)
y = rng.integers(0, 10, 256)
value, grads = model.loss_and_gradients(x, y)
arrays = {f"g{i}": g for i, g in enumerate(grads)}
arrays.update({f"w{i}": w for i, w in enumerate(model.get_weights())})
np.savez(sys.argv[1], x=x, y=y, value=value, simd=fm._core._build_info()["simd"], **arrays)
"""


def test_batch_parallel_gradients_match_the_reference_on_both_simd_paths(run_simd_paths):
    """The batch-parallel backward at 2 threads (the bias gradients are column sums over slices
    of the columns: 10 columns, row stride 10, a 2-column last slice) against the reference, on
    the AVX2 kernels and on the generic ones (FASTMLP_SIMD=generic), which no other engine test
    runs."""
    results = run_simd_paths(_BATCH_PARALLEL_GRADIENTS)
    for path, got in results.items():
        weights = [got[f"w{i}"] for i in range(4)]
        model = fm.MLP([100, 96, 10], activation="tanh", seed=0)
        model.set_weights(weights)
        params = [w.astype(np.float64) for w in weights]
        loss_ref, grads_ref = ReferenceMLP.from_model(model).loss_and_gradients(
            params, got["x"], got["y"], "cross_entropy"
        )
        assert float(got["value"]) == pytest.approx(loss_ref, rel=1e-5), path
        assert_tensors_close([got[f"g{i}"] for i in range(4)], grads_ref, 1e-4, path)


def test_forward_through_a_layer_wider_than_one_gemm_column_block(rng):
    """The GEMM packs the weights in blocks of NC = 4080 columns: a 4100-wide layer has a second
    block, whose packed weights start after the first's."""
    model = fm.MLP([5, 4100, 3], activation="relu", seed=0).eval()
    x = rng.standard_normal((7, 5)).astype(np.float32)
    params = [w.astype(np.float64) for w in model.get_weights()]
    want = ReferenceMLP.from_model(model).forward(params, x)[0]
    np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_eval_mode_on_the_batch_parallel_path_draws_no_dropout(rng, restore_threads):
    """An eval-mode loss_and_gradients or train_step large enough for the batch-parallel passes
    (2 threads, 512 rows) draws no dropout and leaves rng_offset alone, as the serial passes do
    (the other eval-mode checks use batches of at most 16 rows, which take the serial ones)."""
    fm.set_num_threads(2)
    sizes, activation = [20, 256, 128, 5], ["tanh", "relu"]
    model = fm.MLP(sizes, activation=activation, dropout=[0.2, 0.4], seed=11).eval()
    x, y = make_data(rng, 512, 20, 5, "cross_entropy")
    assert model._net.step_is_batch_parallel(512)
    model.rng_offset = 5
    value, _ = model.loss_and_gradients(x, y)
    assert model.rng_offset == 5
    model.train_step(x, y, optimizer=fm.optim.SGD(model, lr=0.0))
    assert model.rng_offset == 5
    # No dropout was applied either: the loss of the same weights without dropout layers.
    plain = fm.MLP(sizes, activation=activation, seed=11)
    plain.set_weights(model.get_weights())
    assert plain.loss_and_gradients(x, y)[0] == value
