"""Sanity check from the course notes, independent of the training engine.

A freshly initialised classifier with small weights outputs nearly equal scores for every class,
so its softmax is nearly uniform and its cross-entropy is nearly ln(C): for 10 classes, ~2.303.
A loss far from that at step 0 means the loss, the softmax or the forward pass is wrong.
"""

from __future__ import annotations

import math

import numpy as np

from fastmlp import ops


def test_fresh_network_cross_entropy_is_ln_num_classes():
    rng = np.random.default_rng(2024)
    batch, d_in, d_hidden, classes = 256, 784, 100, 10
    x = rng.uniform(0.0, 1.0, (batch, d_in)).astype(np.float32)  # pixel intensities in [0, 1]
    labels = rng.integers(0, classes, batch)
    # Weights N(0, 0.01^2) and zero biases, as in the course notes.
    w1 = (0.01 * rng.standard_normal((d_in, d_hidden))).astype(np.float32)
    b1 = np.zeros(d_hidden, np.float32)
    w2 = (0.01 * rng.standard_normal((d_hidden, classes))).astype(np.float32)
    b2 = np.zeros(classes, np.float32)

    hidden = ops.linear(x, w1, b1, activation="relu")
    scores = ops.linear(hidden, w2, b2)
    loss, dscores = ops.softmax_cross_entropy(scores, labels)

    # Hidden pre-activations have std ~ 0.01 sqrt(784 / 3) ~ 0.16, so the scores have std
    # ~ 0.01 sqrt(100 E[h^2]) ~ 0.01 and the loss exceeds ln 10 by ~ Var(score) / 2 ~ 1e-4:
    # 0.01 is a bound that only a wrong softmax, loss or forward pass breaks.
    assert abs(loss - math.log(classes)) < 0.01
    # And the gradient at the start is (p - onehot) / N with p ~ 1/C: every row sums to ~0 and
    # the label entries are ~ (0.1 - 1) / N (p_y = 0.1 +- ~0.001 from the score spread, so 1%).
    np.testing.assert_allclose(dscores.sum(axis=1), 0.0, atol=1e-7)  # float32 sum of 10 terms
    label_entries = dscores[np.arange(batch), labels] * batch
    np.testing.assert_allclose(label_entries, 1.0 / classes - 1.0, rtol=0.01)
