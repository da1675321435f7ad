"""fastmlp.Trainer, History and EarlyStopping on the real MLP (small nets, a few epochs).

Model doubles here are subclasses of ``fastmlp.MLP`` that record what the Trainer feeds
``train_step`` or raise at a chosen step; everything else is the real engine.
"""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import trainer as trainer_module
from fastmlp.schedules import ExponentialLR, ReduceLROnPlateau, StepLR


@pytest.fixture(scope="module")
def circles():
    X, y = fm.data.make_circles(240, seed=1)
    (Xtr, ytr), (Xv, yv), _ = fm.data.train_val_test_split(X, y, val=0.25, test=0.0, seed=1)
    s = fm.data.Standardizer().fit(Xtr)
    return s.transform(Xtr), ytr, s.transform(Xv), yv


def _model(seed: int = 0, **kw) -> fm.MLP:
    return fm.MLP([2, 16, 2], seed=seed, **kw)


class RecordingMLP(fm.MLP):
    """Records each step's batch, lr and kwargs, and the weights after each completed step;
    raises ``fail_with`` at step ``fail_at`` (1-based) before touching anything."""

    def __init__(self, *args, fail_at: int | None = None, fail_with=KeyboardInterrupt, **kw):
        super().__init__(*args, **kw)
        self.batches: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.kwargs: list[dict] = []
        self.after_step: list[list[np.ndarray]] = []
        self.fail_at, self.fail_with = fail_at, fail_with

    def train_step(self, x, y, loss=None, optimizer=None, **kw):
        if self.fail_at is not None and len(self.losses) + 1 == self.fail_at:
            raise self.fail_with("injected")
        value = super().train_step(x, y, loss=loss, optimizer=optimizer, **kw)
        self.batches.append(np.array(x))
        self.labels.append(np.array(y))
        self.lrs.append(optimizer.lr)
        self.losses.append(value)
        self.kwargs.append(dict(kw))
        self.after_step.append(self.get_weights())
        return value


def test_train_accuracy_is_counted_during_the_epoch(circles):
    """Default: the fraction of the epoch's rows each step predicted right before its update;
    replayed here batch by batch (no dropout, so the eval-mode forward is the step's forward)."""
    Xtr, ytr, _, _ = circles
    model = RecordingMLP([2, 16, 2], seed=0)
    h = fm.Trainer(model, fm.optim.Adam(model, lr=1e-2), batch_size=32, epochs=2, verbose=0).fit(
        Xtr, ytr
    )
    replay = _model()
    opt = fm.optim.Adam(replay, lr=1e-2)
    for epoch in range(2):
        correct = 0
        for xb, yb in zip(model.batches[6 * epoch : 6 * (epoch + 1)], model.labels[6 * epoch :]):
            correct += int((replay.predict(xb) == yb).sum())
            replay.train_step(xb, yb, optimizer=opt)
        # An exact count: both sides count the same integers.
        assert h.train_accuracy[epoch] == correct / len(ytr)
    assert _same_weights(replay.get_weights(), model.get_weights())


def test_eval_train_evaluates_the_training_set(circles):
    Xtr, ytr, _, _ = circles
    model = _model()
    h = fm.Trainer(model, batch_size=32, epochs=2, verbose=0, eval_train=True).fit(Xtr, ytr)
    # The same evaluate call on the same weights: equal floats.
    assert h.train_accuracy[-1] == model.evaluate(Xtr, ytr)["accuracy"]
    with pytest.raises(TypeError, match=r"^eval_train: expected a bool"):
        fm.Trainer(model, eval_train="yes")


def test_fit_gathers_batches_into_reused_buffers(circles):
    """Shuffled batches are np.take-n into two buffers allocated once per fit: every batch
    handed to train_step is a view of the same memory, and holds the rows of the permutation."""
    Xtr, ytr, _, _ = circles
    seen = []

    class Spy(fm.MLP):
        def train_step(self, x, y, loss=None, optimizer=None, **kw):
            seen.append((x.__array_interface__["data"][0], x.copy(), y.copy(), y.dtype))
            return super().train_step(x, y, loss=loss, optimizer=optimizer, **kw)

    model = Spy([2, 16, 2], seed=0)
    fm.Trainer(model, batch_size=32, epochs=1, seed=3, verbose=0).fit(Xtr, ytr.astype(np.int32))
    assert len({addr for addr, *_ in seen}) == 1
    order = np.random.default_rng(3).permutation(len(ytr))
    for b, (_, xb, yb, dtype) in enumerate(seen):
        idx = order[32 * b : 32 * (b + 1)]
        np.testing.assert_array_equal(xb, Xtr[idx].astype(np.float32))
        np.testing.assert_array_equal(yb, ytr[idx])
        assert dtype == np.int64  # converted once per fit, for the engine's fast path


def _same_weights(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def _fit_with_snapshots(model, data, *, lr, batch_size, epochs, early_stopping, val_labels=None):
    """Adam on the circles with ``early_stopping``, validating on ``val_labels`` (default the
    true ones); returns the History and the weights after each epoch."""
    Xtr, ytr, Xv, yv = data
    snaps: list = []
    history = fm.Trainer(
        model,
        fm.optim.Adam(model, lr=lr),
        batch_size=batch_size,
        epochs=epochs,
        early_stopping=early_stopping,
        verbose=0,
        callbacks=[lambda hist, epoch: snaps.append(model.get_weights())],
    ).fit(Xtr, ytr, validation=(Xv, yv if val_labels is None else val_labels))
    return history, snaps


# ---------------------------------------------------------------------------------------------
# History and the basic loop
# ---------------------------------------------------------------------------------------------


def test_fit_fills_the_history(circles):
    Xtr, ytr, Xv, yv = circles
    model = _model()
    opt = fm.optim.Adam(model, lr=1e-2)
    h = fm.Trainer(model, opt, batch_size=32, epochs=3, verbose=0).fit(
        Xtr, ytr, validation=(Xv, yv)
    )
    assert isinstance(h, fm.History) and len(h) == 3
    assert h.epoch == [0, 1, 2] and h["epoch"] is h.epoch
    assert h.lr == [pytest.approx(1e-2)] * 3
    assert all(t > 0 for t in h.time)
    for key in ("train_loss", "val_loss"):
        assert all(np.isfinite(v) and v > 0 for v in h[key])
    for key in ("train_accuracy", "val_accuracy"):
        assert all(0.0 <= v <= 1.0 for v in h[key])
    # val_* are model.evaluate after the epoch; the last row must match
    assert h.val_loss[-1] == pytest.approx(model.evaluate(Xv, yv)["loss"], rel=1e-12)
    d = h.to_dict()
    assert list(d) == list(fm.History.KEYS) and d["val_loss"] == h.val_loss
    assert d["val_loss"] is not h.val_loss  # a copy
    assert h.monitor == "val_loss"
    assert h.best_epoch == int(np.argmin(h.val_loss))
    assert not h.stopped_early and not h.interrupted
    assert len(ytr) == 180 and h.n_steps == 3 * 6  # ceil(180 / 32) = 6 steps per epoch
    assert not model.training  # fit leaves eval mode
    # dict-like over the metric names (a missing __iter__ made `in` and `list` index 0, 1, ...)
    assert "val_loss" in h and "loss" not in h and 0 not in h
    assert list(h) == list(h.keys()) == list(fm.History.KEYS)
    assert dict(h) == {k: h[k] for k in fm.History.KEYS}
    with pytest.raises(KeyError, match="known"):
        h["accuracy"]
    assert "epochs=3" in repr(h)


def test_without_validation_val_entries_are_none(circles):
    Xtr, ytr, _, _ = circles
    h = fm.Trainer(_model(), epochs=2, verbose=0).fit(Xtr, ytr)
    assert h.val_loss == [None, None] and h.val_accuracy == [None, None]
    assert h.monitor == "train_loss" and h.best_epoch in (0, 1)


def test_same_seed_same_run_and_other_seed_differs(circles):
    Xtr, ytr, Xv, yv = circles

    def run(trainer_seed):
        model = _model(seed=3, dropout=0.2)  # dropout masks must repeat too
        opt = fm.optim.SGD(model, lr=0.1, momentum=0.9)
        h = fm.Trainer(model, opt, batch_size=16, epochs=3, seed=trainer_seed, verbose=0).fit(
            Xtr, ytr, validation=(Xv, yv)
        )
        return h, model.get_weights()

    h1, w1 = run(5)
    h2, w2 = run(5)
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert h1[key] == h2[key]  # bit-identical, not approximately
    assert _same_weights(w1, w2)
    h3, _ = run(6)
    assert h3.train_loss != h1.train_loss


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_row_once_per_epoch_last_partial_batch_used(shuffle):
    X = np.arange(20, dtype=np.float32).reshape(10, 2) / 20
    y = np.arange(10) % 2
    model = RecordingMLP([2, 4, 2], seed=0)
    opt = fm.optim.SGD(model, lr=0.05)
    h = fm.Trainer(model, opt, batch_size=4, epochs=2, shuffle=shuffle, verbose=0).fit(X, y)
    assert [len(b) for b in model.batches] == [4, 4, 2, 4, 4, 2]
    for e in range(2):
        rows = np.concatenate(model.batches[3 * e : 3 * e + 3])
        labels = np.concatenate(model.labels[3 * e : 3 * e + 3])
        order = np.argsort(rows[:, 0])
        np.testing.assert_array_equal(rows[order], X)
        np.testing.assert_array_equal(labels[order], y)
        if not shuffle:
            np.testing.assert_array_equal(rows, X)
        # train_loss: batch losses weighted by batch size
        losses = model.losses[3 * e : 3 * e + 3]
        assert h.train_loss[e] == pytest.approx(
            (4 * losses[0] + 4 * losses[1] + 2 * losses[2]) / 10, rel=1e-12
        )
    if shuffle:
        assert not np.array_equal(np.concatenate(model.batches[:3]), X)


def test_shuffle_draws_a_new_order_every_epoch_and_repeats_the_run():
    """One Generator for the whole run: each epoch's permutation is a fresh draw (not the first
    epoch's order again), and the same seed repeats the sequence of orders."""
    X = np.arange(20, dtype=np.float32).reshape(10, 2) / 20
    y = np.arange(10) % 2

    def orders(seed):
        model = RecordingMLP([2, 4, 2], seed=0)
        opt = fm.optim.SGD(model, lr=0.05)
        fm.Trainer(model, opt, batch_size=4, epochs=3, seed=seed, verbose=0).fit(X, y)
        rows = [np.concatenate(model.batches[3 * e : 3 * e + 3]) for e in range(3)]
        return [np.rint(r[:, 0] * 10).astype(int) for r in rows]  # row indices into X

    first = orders(7)
    for order in first:
        np.testing.assert_array_equal(np.sort(order), np.arange(10))
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert not np.array_equal(first[a], first[b]), (a, b)
    for order, again in zip(first, orders(7)):
        np.testing.assert_array_equal(order, again)


def test_online_and_full_batch(circles):
    Xtr, ytr, _, _ = circles
    n = len(ytr)
    model = RecordingMLP([2, 8, 2], seed=0)
    h = fm.Trainer(model, fm.optim.SGD(model, lr=0.01), batch_size=1, epochs=2, verbose=0).fit(
        Xtr, ytr
    )
    assert h.n_steps == 2 * n and {len(b) for b in model.batches} == {1}
    model = RecordingMLP([2, 8, 2], seed=0)
    h = fm.Trainer(model, fm.optim.SGD(model, lr=0.1), batch_size=None, epochs=3, verbose=0).fit(
        Xtr, ytr
    )
    assert h.n_steps == 3 and [len(b) for b in model.batches] == [n] * 3
    # one batch: the epoch loss is the step loss, up to the ulp of (loss * n) / n in float64
    assert h.train_loss == pytest.approx(model.losses, rel=1e-14)
    model = RecordingMLP([2, 8, 2], seed=0)
    h = fm.Trainer(model, fm.optim.SGD(model, lr=0.1), batch_size=10 * n, epochs=1, verbose=0).fit(
        Xtr, ytr
    )
    assert h.n_steps == 1  # a batch larger than the data is the whole data


def test_defaults_optimizer_and_loss(circles):
    Xtr, ytr, _, _ = circles
    model = _model(loss="hinge")
    trainer = fm.Trainer(model, epochs=1, verbose=0)
    assert isinstance(trainer.optimizer, fm.optim.Adam) and trainer.optimizer.lr == pytest.approx(
        1e-3
    )
    assert trainer.loss == "hinge"  # loss=None follows the model
    trainer.fit(Xtr, ytr)
    assert model.loss == "hinge"


def test_mse_with_one_hot_targets_has_no_accuracy(circles):
    Xtr, ytr, Xv, yv = circles
    model = _model()
    onehot = np.eye(2, dtype=np.float32)
    h = fm.Trainer(model, loss="mse", epochs=2, verbose=0).fit(
        Xtr, onehot[ytr], validation=(Xv, onehot[yv])
    )
    assert h.train_accuracy == [None, None] and h.val_accuracy == [None, None]
    assert all(np.isfinite(h.val_loss))


def test_label_smoothing_is_passed_to_train_step(circles):
    Xtr, ytr, _, _ = circles
    model = RecordingMLP([2, 8, 2], seed=0)
    fm.Trainer(model, batch_size=None, epochs=1, label_smoothing=0.1, verbose=0).fit(Xtr, ytr)
    assert model.kwargs == [{"label_smoothing": 0.1}]
    model = RecordingMLP([2, 8, 2], seed=0)
    fm.Trainer(model, batch_size=None, epochs=1, verbose=0).fit(Xtr, ytr)
    assert model.kwargs == [{}]


def test_label_smoothing_range_is_train_steps(circles):
    # MLP.train_step takes [0, 1] (PyTorch's range; 1 gives uniform targets): so does Trainer.
    Xtr, ytr, _, _ = circles
    model = RecordingMLP([2, 8, 2], seed=0)
    fm.Trainer(model, batch_size=None, epochs=1, label_smoothing=1.0, verbose=0).fit(Xtr, ytr)
    assert model.kwargs == [{"label_smoothing": 1.0}]
    with pytest.raises(ValueError, match=r"^label_smoothing: expected a probability in \[0, 1\]"):
        fm.Trainer(model, label_smoothing=1.5)


# ---------------------------------------------------------------------------------------------
# Early stopping
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("restore_best", [True, False])
def test_early_stopping_stops_and_restores_the_best_weights(circles, restore_best):
    model = _model()
    # Validating on flipped labels: the better the model learns, the worse val_loss gets, so
    # the best epoch comes early and the run must stop `patience` epochs after it.
    es = fm.EarlyStopping(patience=3, restore_best=restore_best)
    h, snaps = _fit_with_snapshots(
        model,
        circles,
        lr=1e-2,
        batch_size=32,
        epochs=50,
        early_stopping=es,
        val_labels=1 - circles[3],
    )
    assert h.stopped_early and len(h) < 50
    assert h.best_epoch == es.best_epoch == int(np.argmin(h.val_loss))
    assert len(h) == es.best_epoch + 3 + 1  # patience epochs without improvement after the best
    expected = snaps[es.best_epoch] if restore_best else snaps[-1]
    assert _same_weights(model.get_weights(), expected)
    if es.best_epoch != len(h) - 1:
        assert not _same_weights(snaps[es.best_epoch], snaps[-1])  # the restore did something


def test_early_stopping_restores_at_the_end_of_a_full_run(circles):
    model = _model()
    es = fm.EarlyStopping(monitor="val_accuracy", patience=100)
    h, snaps = _fit_with_snapshots(
        model, circles, lr=5e-2, batch_size=16, epochs=8, early_stopping=es
    )
    assert not h.stopped_early and len(h) == 8
    assert h.monitor == "val_accuracy"
    best = h.best_epoch
    assert h.val_accuracy[best] == max(h.val_accuracy)
    assert best == h.val_accuracy.index(max(h.val_accuracy))  # first of ties
    assert _same_weights(model.get_weights(), snaps[best])


def test_min_delta_restores_the_last_real_improvement_and_says_so(circles):
    """With min_delta > 0, early stopping restores the last epoch that improved by more than
    min_delta (Keras's rule); History.best_epoch ignores min_delta, and History.restored_epoch
    names the epoch whose weights the model holds."""
    model = _model()
    # min_delta=10: only epoch 0 (better than +inf) counts as an improvement; training at this
    # rate lowers val_loss every epoch, by far less than 10.
    es = fm.EarlyStopping(patience=100, min_delta=10.0)
    h, snaps = _fit_with_snapshots(
        model, circles, lr=1e-2, batch_size=32, epochs=4, early_stopping=es
    )
    assert es.best_epoch == 0 and h.restored_epoch == 0
    assert h.best_epoch == int(np.argmin(h.val_loss)) != 0  # ignores min_delta
    assert _same_weights(model.get_weights(), snaps[0])
    assert "restored_epoch=0" in repr(h)
    # Nothing restored: restore_best=False, or no early stopping at all.
    Xtr, ytr, Xv, yv = circles
    for early_stopping in (fm.EarlyStopping(patience=100, restore_best=False), None):
        h = fm.Trainer(_model(), epochs=2, early_stopping=early_stopping, verbose=0).fit(
            Xtr, ytr, validation=(Xv, yv)
        )
        assert h.restored_epoch is None and "restored_epoch" not in repr(h)


def test_early_stopping_rules():
    class Weights:
        def get_weights(self):
            return [np.zeros(1, np.float32)]

    es = fm.EarlyStopping(monitor="val_loss", patience=2, min_delta=0.1)
    m = Weights()
    assert not es.update(1.0, 0, m)
    assert not es.update(0.95, 1, m)  # not better by more than min_delta: wait 1
    assert es.best == 1.0 and es.wait == 1
    assert not es.update(0.85, 2, m)  # improves by 0.15: reset
    assert es.best_epoch == 2 and es.wait == 0
    assert not es.update(float("nan"), 3, m)  # NaN never improves
    assert es.update(0.8, 4, m)  # second epoch without improvement: stop
    acc = fm.EarlyStopping(monitor="val_accuracy", patience=1)
    assert acc.mode == "max"
    assert not acc.update(0.5, 0, m) and acc.update(0.4, 1, m)


def test_early_stopping_min_delta_in_max_mode():
    """An accuracy improves only if it beats the best by more than min_delta: value > best +
    min_delta (not best - min_delta, which would count small drops as improvements)."""

    class Weights:
        def get_weights(self):
            return [np.zeros(1, np.float32)]

    m = Weights()
    es = fm.EarlyStopping(monitor="val_accuracy", patience=1, min_delta=0.05)
    assert not es.update(0.5, 0, m)
    assert es.update(0.52, 1, m)  # better, but by less than min_delta: no improvement, stop
    assert es.best == 0.5 and es.best_epoch == 0
    es = fm.EarlyStopping(monitor="val_accuracy", patience=2, min_delta=0.05)
    assert not es.update(0.5, 0, m)
    assert not es.update(0.49, 1, m) and es.wait == 1  # a drop never improves
    assert not es.update(0.56, 2, m)  # beats 0.5 + 0.05: improves, the count restarts
    assert es.best == 0.56 and es.best_epoch == 2 and es.wait == 0


# ---------------------------------------------------------------------------------------------
# Schedules in the loop
# ---------------------------------------------------------------------------------------------


def test_epoch_schedule_sets_the_rate_before_each_epoch(circles):
    Xtr, ytr, _, _ = circles
    model = RecordingMLP([2, 8, 2], seed=0)
    opt = fm.optim.SGD(model, lr=0.08)
    h = fm.Trainer(
        model, opt, batch_size=None, epochs=5, schedule=StepLR(2, gamma=0.5), verbose=0
    ).fit(Xtr, ytr)
    assert h.lr == pytest.approx([0.08, 0.08, 0.04, 0.04, 0.02], rel=1e-6)  # opt.lr is float32
    assert model.lrs == h.lr  # what train_step saw
    # a second fit repeats the schedule from the base rate
    h2 = fm.Trainer(model, opt, batch_size=None, epochs=2, schedule=StepLR(1, 0.5), verbose=0).fit(
        Xtr, ytr
    )
    assert h2.lr == pytest.approx([0.02, 0.01], rel=1e-6)  # base rate: opt.lr when built


def test_schedule_by_name_uses_the_epoch_count(circles):
    Xtr, ytr, _, _ = circles
    model = _model()
    trainer = fm.Trainer(model, fm.optim.SGD(model, lr=0.1), epochs=4, schedule="cosine", verbose=0)
    h = trainer.fit(Xtr, ytr)
    expected = [0.1 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)]
    assert h.lr == pytest.approx(expected, rel=1e-6)


def test_user_schedule_objects(circles):
    Xtr, ytr, _, _ = circles

    class Halving:  # the epoch protocol: lr_at(epoch, base_lr)
        def lr_at(self, epoch, base_lr):
            return base_lr / 2**epoch

    class Countdown:  # the metric protocol: reset(lr), step(metric) -> next lr
        monitor = "train_loss"

        def reset(self, lr):
            self.lr, self.seen = lr, []

        def step(self, metric):
            self.seen.append(metric)
            self.lr *= 0.1
            return self.lr

    model = _model()
    h = fm.Trainer(model, fm.optim.SGD(model, lr=0.1), epochs=3, schedule=Halving(), verbose=0).fit(
        Xtr, ytr
    )
    assert h.lr == pytest.approx([0.1, 0.05, 0.025], rel=1e-6)
    countdown = Countdown()
    h = fm.Trainer(model, fm.optim.SGD(model, lr=0.1), epochs=3, schedule=countdown, verbose=0).fit(
        Xtr, ytr
    )
    assert h.lr == pytest.approx([0.1, 0.01, 0.001], rel=1e-5)
    assert countdown.seen == h.train_loss


def test_float_targets_beyond_float32_are_named_for_a_model_without_its_own_check():
    class Plain(fm.MLP):
        _y = None  # no target check of its own: fit converts float targets itself

    X = np.zeros((4, 2))
    y = np.array([0.0, 1.0, 1e39, 0.0])
    with pytest.raises(ValueError, match=r"^y: 1e\+39 at \[2\] is too large for float32"):
        fm.Trainer(Plain([2, 1], seed=0), loss="mse", verbose=0).fit(X, y)


def test_an_unusable_scheduled_rate_is_refused_before_any_step(circles):
    # ExponentialLR(gamma=1e200) passes its own checks but reaches float32's inf at epoch 1; the
    # error used to come after a trained epoch and named "lr", which the user never set.
    Xtr, ytr, _, _ = circles
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    opt = fm.optim.SGD(model, lr=0.01)
    trainer = fm.Trainer(model, opt, epochs=3, schedule=ExponentialLR(gamma=1e200), verbose=0)
    unusable = r"^schedule: the rate for epoch 1 \(0-based\) is unusable: lr"
    with pytest.raises(ValueError, match=unusable):
        trainer.fit(Xtr, ytr)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert opt.step_count == 0 and opt.lr == 0.01

    # Beyond a float, not just float32: gamma ** epoch overflowed Python's float and raised a bare
    # OverflowError, before the Trainer could name the schedule.
    opt = fm.optim.SGD(model, lr=1e-300)
    trainer = fm.Trainer(model, opt, epochs=3, schedule=ExponentialLR(gamma=1e200), verbose=0)
    with pytest.raises(ValueError, match=r"^schedule: the rate for epoch 2 \(0-based\)"):
        trainer.fit(Xtr, ytr)
    assert opt.step_count == 0

    class Negative:  # a user's epoch schedule gone wrong
        def lr_at(self, epoch, base_lr):
            return base_lr - 0.01 * epoch

    with pytest.raises(ValueError, match=r"^schedule: the rate for epoch 2 .*>= 0"):
        fm.Trainer(model, fm.optim.SGD(model, lr=0.015), epochs=3, schedule=Negative(),
                   verbose=0).fit(Xtr, ytr)  # fmt: skip

    class Rising:  # a metric schedule whose next rate is not finite
        monitor = "train_loss"

        def reset(self, lr):
            pass

        def step(self, metric):
            return float("inf")

    with pytest.raises(ValueError, match=r"^schedule: the rate for epoch 1 \(0-based\)"):
        fm.Trainer(model, fm.optim.SGD(model, lr=0.01), epochs=2, schedule=Rising(),
                   verbose=0).fit(Xtr, ytr)  # fmt: skip


def test_reduce_on_plateau_lowers_the_optimizer_rate(circles):
    Xtr, ytr, Xv, yv = circles
    model = RecordingMLP([2, 16, 2], seed=0)
    opt = fm.optim.Adam(model, lr=1e-2)
    plateau = ReduceLROnPlateau(factor=0.5, patience=1)
    h = fm.Trainer(model, opt, batch_size=32, epochs=8, schedule=plateau, verbose=0).fit(
        Xtr,
        ytr,
        validation=(Xv, 1 - yv),  # val_loss keeps getting worse: a plateau
    )
    assert h.lr[0] == pytest.approx(1e-2, rel=1e-6)
    assert min(h.lr) < 1e-2 and all(a >= b for a, b in zip(h.lr, h.lr[1:]))
    # replay the rule on the recorded metric: the Trainer fed val_loss and applied the result
    replay = ReduceLROnPlateau(factor=0.5, patience=1)
    replay.reset(1e-2)
    expected = [1e-2] + [replay.step(v) for v in h.val_loss[:-1]]
    assert h.lr == pytest.approx(expected, rel=1e-6)
    assert opt.lr == pytest.approx(replay.step(h.val_loss[-1]), rel=1e-6)
    assert sorted(set(model.lrs)) == sorted(set(h.lr))


# ---------------------------------------------------------------------------------------------
# Ctrl-C, NaN, callbacks
# ---------------------------------------------------------------------------------------------


def test_keyboard_interrupt_mid_epoch_returns_partial_history(circles, capsys):
    Xtr, ytr, Xv, yv = circles
    model = RecordingMLP([2, 16, 2], seed=0, fail_at=15)  # 6 steps per epoch: in the third
    h = fm.Trainer(model, batch_size=32, epochs=10, verbose=1).fit(Xtr, ytr, validation=(Xv, yv))
    assert h.interrupted and not h.stopped_early
    assert len(h) == 2 and h.n_steps == 14  # two complete epochs, two steps of the third
    assert _same_weights(model.get_weights(), model.after_step[-1])  # last completed step kept
    assert not model.training
    assert "interrupted after 14 steps" in capsys.readouterr().err


def test_keyboard_interrupt_from_a_callback_keeps_that_epoch(circles):
    Xtr, ytr, _, _ = circles
    model = _model()
    snaps: list = []

    def cb(history, epoch):
        snaps.append(model.get_weights())
        if epoch == 1:
            raise KeyboardInterrupt

    es = fm.EarlyStopping(monitor="train_loss", patience=1)
    h = fm.Trainer(model, epochs=5, verbose=0, callbacks=[cb], early_stopping=es).fit(Xtr, ytr)
    assert h.interrupted and len(h) == 2
    assert _same_weights(model.get_weights(), snaps[-1])  # no restore after Ctrl-C


def test_callback_returning_true_stops(circles):
    Xtr, ytr, _, _ = circles
    h = fm.Trainer(_model(), epochs=5, verbose=0, callbacks=[lambda h, e: e == 2]).fit(Xtr, ytr)
    assert len(h) == 3 and h.stopped_early and not h.interrupted


def test_callback_returning_numpy_true_stops(circles):
    """A comparison of NumPy values gives np.bool_, which stops the run like True."""
    Xtr, ytr, _, _ = circles
    cb = lambda h, e: np.int64(e) == 2  # noqa: E731
    h = fm.Trainer(_model(), epochs=5, verbose=0, callbacks=[cb]).fit(Xtr, ytr)
    assert len(h) == 3 and h.stopped_early


@pytest.mark.parametrize("result", [None, False, np.False_, 1, np.float64(1.0), "stop", [True]])
def test_callback_returning_anything_but_true_goes_on(circles, result):
    Xtr, ytr, _, _ = circles
    h = fm.Trainer(_model(), epochs=3, verbose=0, callbacks=[lambda h, e: result]).fit(Xtr, ytr)
    assert len(h) == 3 and not h.stopped_early


def test_floating_point_error_propagates_with_epoch_and_batch(circles):
    Xtr, ytr, _, _ = circles
    model = RecordingMLP([2, 16, 2], seed=0)
    opt = fm.optim.SGD(model, lr=1e35)  # the first step blows the weights up to ~1e35
    with pytest.raises(FloatingPointError) as info:
        fm.Trainer(model, opt, batch_size=32, epochs=3, verbose=0).fit(Xtr, ytr)
    text = str(info.value) + " ".join(getattr(info.value, "__notes__", []))
    assert "epoch 0 (0-based), batch" in text
    # the step that failed changed nothing: the model holds the last completed step's weights
    assert model.after_step and _same_weights(model.get_weights(), model.after_step[-1])


def test_injected_floating_point_error_names_the_batch(circles):
    Xtr, ytr, _, _ = circles
    model = RecordingMLP([2, 8, 2], seed=0, fail_at=8, fail_with=FloatingPointError)
    with pytest.raises(FloatingPointError) as info:
        fm.Trainer(model, batch_size=32, epochs=3, verbose=0).fit(Xtr, ytr)
    text = str(info.value) + " ".join(getattr(info.value, "__notes__", []))
    assert "epoch 1 (0-based), batch 1 of 6" in text


# ---------------------------------------------------------------------------------------------
# Progress output
# ---------------------------------------------------------------------------------------------


def test_verbose_lines_and_silence(circles, capsys):
    Xtr, ytr, Xv, yv = circles
    fm.Trainer(_model(), epochs=3, verbose=1).fit(Xtr, ytr, validation=(Xv, yv))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[0].startswith("epoch 1/3") and "val_acc" in out[0]
    fm.Trainer(_model(), epochs=2, verbose=0).fit(Xtr, ytr)
    assert capsys.readouterr() == ("", "")
    fm.Trainer(_model(), epochs=2, verbose="auto").fit(Xtr, ytr)  # stderr is not a TTY here
    assert capsys.readouterr() == ("", "")


def test_verbose_auto_shows_lines_on_a_terminal(circles, capsys, monkeypatch):
    Xtr, ytr, _, _ = circles
    monkeypatch.setitem(sys.modules, "tqdm", None)  # lines only, whatever is installed
    monkeypatch.setattr(trainer_module, "_stderr_isatty", lambda: True)
    fm.Trainer(_model(), epochs=2, verbose="auto").fit(Xtr, ytr)
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 and captured.out.startswith("epoch 1/2")


def test_verbose_2_uses_tqdm_when_installed(circles, capsys):
    pytest.importorskip("tqdm")
    Xtr, ytr, _, _ = circles
    fm.Trainer(_model(), epochs=2, verbose=2).fit(Xtr, ytr)
    captured = capsys.readouterr()
    assert "epoch 1/2" in captured.err  # the bar (on stderr)
    assert len(captured.out.splitlines()) == 2  # epoch lines through tqdm.write


def test_verbose_2_without_tqdm_falls_back_to_lines(circles, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    Xtr, ytr, _, _ = circles
    fm.Trainer(_model(), epochs=2, verbose=2).fit(Xtr, ytr)
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 and captured.err == ""


# ---------------------------------------------------------------------------------------------
# Argument errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"batch_size": 0}, ValueError, r"^batch_size"),
        ({"batch_size": 2.5}, TypeError, r"^batch_size"),
        ({"batch_size": True}, TypeError, r"^batch_size"),
        ({"epochs": 0}, ValueError, r"^epochs"),
        ({"loss": "l2"}, ValueError, r"^loss: unknown loss 'l2'; known"),
        ({"schedule": "warmup"}, ValueError, r"^schedule"),
        ({"schedule": 3}, TypeError, r"^schedule"),
        ({"early_stopping": 5}, TypeError, r"^early_stopping"),
        ({"seed": -1}, ValueError, r"^seed"),
        ({"verbose": "loud"}, ValueError, r"^verbose"),
        ({"shuffle": "yes"}, TypeError, r"^shuffle"),
        ({"label_smoothing": 1.5}, ValueError, r"^label_smoothing"),  # [0, 1], as train_step
        ({"label_smoothing": float("nan")}, ValueError, r"^label_smoothing"),
        ({"label_smoothing": "a"}, TypeError, r"^label_smoothing: expected a real number, got str"),
        ({"label_smoothing": None}, TypeError, r"^label_smoothing: expected a real number"),
        ({"label_smoothing": True}, TypeError, r"^label_smoothing: expected a real number"),
        ({"label_smoothing": 0.1, "loss": "mse"}, ValueError, r"^label_smoothing"),
        ({"callbacks": [1]}, TypeError, r"^callbacks"),
        ({"callbacks": lambda h, e: None}, TypeError, r"^callbacks: expected a list"),
        ({"callbacks": 3}, TypeError, r"^callbacks: expected a list"),
        # the class itself, not an instance: lr_at is a function of the class, which looked fine
        ({"schedule": ExponentialLR}, TypeError, r"^schedule: got the class ExponentialLR"),
        ({"schedule": ReduceLROnPlateau}, TypeError, r"^schedule: got the class"),
        ({"optimizer": object()}, TypeError, r"^optimizer"),
    ],
)
def test_constructor_errors(kw, exc, match):
    with pytest.raises(exc, match=match):
        fm.Trainer(_model(), **kw)


def test_model_and_fit_errors(circles):
    Xtr, ytr, Xv, yv = circles
    with pytest.raises(TypeError, match=r"^model"):
        fm.Trainer(object())
    t = fm.Trainer(_model(), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"^y: expected 180 rows"):
        t.fit(Xtr, ytr[:-1])
    with pytest.raises(TypeError, match=r"^X"):
        t.fit(Xtr.astype(np.int64), ytr)
    with pytest.raises(ValueError, match=r"^X"):
        t.fit(Xtr[:0], ytr[:0])
    with pytest.raises(TypeError, match=r"^validation"):
        t.fit(Xtr, ytr, validation=Xv)
    with pytest.raises(ValueError, match=r"^X_val: expected 2 columns"):
        t.fit(Xtr, ytr, validation=(Xv[:, :1], yv))
    with pytest.raises(ValueError, match=r"^y_val"):
        t.fit(Xtr, ytr, validation=(Xv, yv[:3]))
    es = fm.Trainer(_model(), early_stopping=fm.EarlyStopping(), verbose=0)
    with pytest.raises(
        ValueError, match=r"^early_stopping: monitors 'val_loss' but fit\(\) got no"
    ):
        es.fit(Xtr, ytr)
    pl = fm.Trainer(_model(), schedule=ReduceLROnPlateau(), verbose=0)
    with pytest.raises(ValueError, match=r"^schedule: monitors 'val_loss'"):
        pl.fit(Xtr, ytr)
    for kw, match in [
        ({"monitor": "loss"}, "^monitor"),
        ({"patience": 0}, "^patience"),
        ({"min_delta": -1}, "^min_delta"),
        ({"mode": "up"}, "^mode"),
    ]:
        with pytest.raises(ValueError, match=match):
            fm.EarlyStopping(**kw)


def test_early_stopping_argument_types():
    # bool("False") is True and float("abc") names no argument.
    with pytest.raises(TypeError, match=r"^restore_best: expected True or False, got str"):
        fm.EarlyStopping(restore_best="False")
    with pytest.raises(TypeError, match=r"^min_delta: expected a real number, got str"):
        fm.EarlyStopping(min_delta="abc")
    assert fm.EarlyStopping(restore_best=np.False_, min_delta=np.float32(0.5)).restore_best is False


def test_an_optimizer_of_another_model_is_refused_by_the_constructor(circles):
    # Refused only at fit's first step, the error came after fit had put the model in eval mode
    # and a plateau schedule had reset opt.lr.
    model = _model()
    opt = fm.optim.SGD(_model(), lr=0.1)
    with pytest.raises(ValueError, match=r"^optimizer: it was built for another model"):
        fm.Trainer(model, optimizer=opt, schedule=ReduceLROnPlateau(), verbose=0)
    assert model.training and opt.lr == 0.1


def test_an_optimizer_built_before_the_model_moved_is_refused_by_the_constructor():
    # MLP.to builds a new engine; an optimizer made before the move has its state on the old
    # device. (No GPU is needed: the optimizer's record of its device is what is compared.)
    model = _model()
    opt = fm.optim.SGD(model, lr=0.1)
    opt.device = "cuda"  # what it records when built while the model was on the GPU
    with pytest.raises(ValueError, match=r"^optimizer: it was built while the model was on 'cuda'"):
        fm.Trainer(model, optimizer=opt, verbose=0)


def test_fit_refuses_masked_arrays(circles):
    # np.asarray(y) dropped the mask: fit trained on the masked-out labels as if they were data.
    Xtr, ytr, Xv, yv = circles
    t = fm.Trainer(_model(), epochs=1, verbose=0)
    masked_y = np.ma.masked_array(ytr, mask=np.arange(len(ytr)) == 3)
    with pytest.raises(TypeError, match=r"^y: masked arrays are not supported; pass \.filled"):
        t.fit(Xtr, masked_y)
    with pytest.raises(TypeError, match=r"^X: masked arrays are not supported"):
        t.fit(np.ma.masked_array(Xtr), ytr)
    with pytest.raises(TypeError, match=r"^y_val: masked arrays are not supported"):
        t.fit(Xtr, ytr, validation=(Xv, np.ma.masked_array(yv)))


@pytest.mark.parametrize("monitor", ["val_accuracy", "train_accuracy"])
@pytest.mark.parametrize("who", ["early_stopping", "schedule"])
def test_accuracy_monitor_with_mse_fails_before_the_first_step(circles, monitor, who):
    """loss='mse' has no accuracy: monitoring one is refused by fit() before any step, not
    after the first epoch has already changed the weights."""
    Xtr, ytr, Xv, yv = circles
    onehot = np.eye(2, dtype=np.float32)
    model = _model()
    opt = fm.optim.SGD(model, lr=0.1)
    before = model.get_weights()
    kw = (
        {"early_stopping": fm.EarlyStopping(monitor=monitor)}
        if who == "early_stopping"
        else {"schedule": ReduceLROnPlateau(monitor=monitor)}
    )
    trainer = fm.Trainer(model, opt, loss="mse", epochs=2, verbose=0, **kw)
    with pytest.raises(ValueError, match=rf"^{who}: monitors '{monitor}' but loss='mse' has no"):
        trainer.fit(Xtr, onehot[ytr], validation=(Xv, onehot[yv]))
    assert opt.step_count == 0
    assert _same_weights(model.get_weights(), before)


def test_fit_checks_all_its_data_before_the_first_step(circles):
    """Bad values anywhere in the training or validation set fail fit() before any step (the
    engine alone would find them at the batch that holds them, and name "x" or "y")."""
    Xtr, ytr, Xv, yv = circles
    bad_x, bad_labels = Xtr.copy(), ytr.copy()
    bad_x[-1, 1] = np.nan
    bad_labels[-1] = 2
    bad_xv, bad_yv = Xv.copy(), yv.copy()
    bad_xv[-1, 0] = np.inf
    bad_yv[-1] = -1
    for X, y, validation, match in [
        (bad_x, ytr, None, r"^X: contains NaN or infinite values"),
        (Xtr, bad_labels, None, r"^y: label 2 is out of range \[0, 2\)"),
        (Xtr, ytr, (bad_xv, yv), r"^X_val: contains NaN or infinite values"),
        (Xtr, ytr, (Xv, bad_yv), r"^y_val: label -1 is out of range \[0, 2\)"),
        (Xtr, ytr, (Xv, yv.astype(np.float32)), r"^y_val: expected integer class labels"),
    ]:
        model = _model()
        opt = fm.optim.SGD(model, lr=0.1)
        before = model.get_weights()
        with pytest.raises(ValueError if "integer" not in match else TypeError, match=match):
            fm.Trainer(model, opt, epochs=2, batch_size=16, verbose=0).fit(X, y, validation)
        assert opt.step_count == 0
        assert _same_weights(model.get_weights(), before)
    targets = np.eye(2, dtype=np.float32)[ytr]
    targets[5, 0] = np.nan
    with pytest.raises(ValueError, match=r"^y: contains NaN"):
        fm.Trainer(_model(loss="mse"), epochs=1, verbose=0).fit(Xtr, targets)


_CTRL_C_SCRIPT = """
import os, signal, threading
import numpy as np
import fastmlp as fm

# A shell that starts a command in the background without job control makes it ignore SIGINT,
# and the child Python then never raises KeyboardInterrupt: restore Python's own handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
X, y = fm.data.make_circles(n_samples=3000, seed=0)
EPOCHS = 100_000


class StopAt(fm.MLP):
    # Raises KeyboardInterrupt before step `stop_at` (1-based): the replay of a Ctrl-C there.
    stop_at = None

    def train_step(self, *args, **kw):
        if self.stop_at is not None and kw["optimizer"].step_count + 1 == self.stop_at:
            raise KeyboardInterrupt
        return super().train_step(*args, **kw)


def run(stop_at=None, signal_after=None):
    model = StopAt([2, 64, 64, 2], seed=0)
    model.stop_at = stop_at
    if signal_after is not None:
        threading.Timer(signal_after, os.kill, (os.getpid(), signal.SIGINT)).start()
    # Far more epochs than 0.5 s can run, so the SIGINT lands mid-run however fast the machine;
    # the replay stops at the same step either way.
    h = fm.Trainer(model, fm.optim.Adam(model, lr=1e-3), batch_size=1, epochs=EPOCHS, seed=0,
                   verbose=0).fit(X, y)
    return model, h


model, h = run(signal_after=0.5)  # a real SIGINT, mid-epoch
assert h.interrupted and 0 < h.n_steps < EPOCHS * len(X), h
replay, h2 = run(stop_at=h.n_steps + 1)  # the same run stopped right after step n_steps
assert h2.interrupted and h2.n_steps == h.n_steps
same = all(np.array_equal(a, b) for a, b in zip(model.get_weights(), replay.get_weights()))
assert same, "the interrupted model is not at its last completed step"
assert len(h) == len(h2) and len(h) == h.n_steps // len(X)  # only completed epochs are kept
print("ok", h.n_steps)
"""


def test_real_ctrl_c_keeps_the_last_completed_step() -> None:
    """A real SIGINT during fit: fit returns the history, the model holds exactly the weights of
    the last completed step (compared with a deterministic replay stopped there)."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", _CTRL_C_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")


def test_fit_again_continues_the_shuffle_instead_of_repeating_it(circles):
    # One Generator per Trainer: two fit() calls of one epoch are the run of one fit() of two
    # epochs, not the first epoch twice (PyTorch's DataLoader also reshuffles on every pass).
    Xtr, ytr, _, _ = circles

    def trained(calls: int, epochs: int, trainer_seed: int = 3) -> list[np.ndarray]:
        model = _model(seed=0)
        opt = fm.optim.SGD(model, lr=0.1)
        trainer = fm.Trainer(model, opt, batch_size=16, epochs=epochs, seed=trainer_seed, verbose=0)
        for _ in range(calls):
            trainer.fit(Xtr, ytr)
        return model.get_weights()

    for a, b in zip(trained(calls=2, epochs=1), trained(calls=1, epochs=2)):
        np.testing.assert_array_equal(a, b)
    # The first epoch repeated would be another run: the orders differ.
    model = _model(seed=0)
    trainer = fm.Trainer(model, fm.optim.SGD(model, lr=0.0), batch_size=16, epochs=1, verbose=0)
    seen = []
    original = model.train_step

    def record(x, y, **kw):
        seen.append(np.array(y))
        return original(x, y, **kw)

    model.train_step = record
    trainer.fit(Xtr, ytr)
    trainer.fit(Xtr, ytr)
    first, second = np.concatenate(seen[: len(seen) // 2]), np.concatenate(seen[len(seen) // 2 :])
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)
    # Setting the seed starts the Generator again: the first call's order comes back.
    seen.clear()
    trainer.seed = trainer.seed
    trainer.fit(Xtr, ytr)
    np.testing.assert_array_equal(np.concatenate(seen), first)


def test_a_second_thread_cannot_fit_a_model_being_fitted(circles):
    # Two fits at once shared the model's training mode and step counts: one's end of epoch turned
    # dropout off for the other's steps, and both histories mixed their accuracies.
    import threading

    Xtr, ytr, _, _ = circles
    model = _model(dropout=0.25)
    started, tried = threading.Event(), threading.Event()
    errors = []

    def hold(history, epoch):
        started.set()
        tried.wait(timeout=60)

    def first():
        try:
            fm.Trainer(model, epochs=2, verbose=0, callbacks=[hold]).fit(Xtr, ytr)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=first)
    worker.start()
    try:
        assert started.wait(timeout=60)
        with pytest.raises(RuntimeError, match=r"^model: another thread is running Trainer.fit"):
            fm.Trainer(model, epochs=1, verbose=0).fit(Xtr, ytr)
    finally:
        tried.set()
        worker.join()
    assert not errors
    # Once the first fit is over, the model can be fitted again, and a callback may fit it on the
    # fit's own thread.
    nested = []

    def refit(history, epoch):
        if not nested:
            nested.append(fm.Trainer(model, epochs=1, verbose=0).fit(Xtr, ytr))

    h = fm.Trainer(model, epochs=1, verbose=0, callbacks=[refit]).fit(Xtr, ytr)
    assert len(h) == 1 and len(nested[0]) == 1

    class Unhashable(fm.MLP):  # __eq__ without __hash__: the guard must not need a hash
        def __eq__(self, other):
            return self is other

    assert len(fm.Trainer(Unhashable([2, 4, 2], seed=0), epochs=1, verbose=0).fit(Xtr, ytr)) == 1


# ---------------------------------------------------------------- checkpoints (state_dict)


def _run_trainer(model, opt, schedule_factory, es_factory, seed, callbacks=()):
    """The Trainer of the checkpoint tests: 6 epochs of batches of 32."""
    return fm.Trainer(
        model,
        opt,
        batch_size=32,
        epochs=6,
        schedule=schedule_factory(),
        early_stopping=es_factory(),
        seed=seed,
        verbose=False,
        callbacks=list(callbacks),
    )


def _resumable_run(circles, schedule_factory, es_factory, checkpoint_after):
    """A 6-epoch run (dropout on, so the model's random stream matters too) whose callback
    pickles model, optimizer and Trainer state after epoch ``checkpoint_after``.
    Returns (model, history, checkpoint)."""
    Xtr, ytr, Xv, yv = circles
    model = _model(seed=3, dropout=0.1)
    opt = fm.optim.Adam(model, lr=0.02)
    saved = {}

    def checkpoint(history, epoch):
        if epoch == checkpoint_after:
            saved["blob"] = pickle.dumps(
                {"model": model, "opt": opt.state_dict(), "trainer": trainer.state_dict()}
            )

    trainer = _run_trainer(model, opt, schedule_factory, es_factory, 7, [checkpoint])
    history = trainer.fit(Xtr, ytr, validation=(Xv, yv))
    return model, history, saved["blob"]


def _resume(circles, blob, schedule_factory, es_factory):
    Xtr, ytr, Xv, yv = circles
    ck = pickle.loads(blob)
    model = ck["model"]
    opt = fm.optim.Adam(model, lr=0.02)
    # Restored first: the Trainer then sees the saved (scheduled) rate, not the base rate.
    opt.load_state_dict(ck["opt"])
    # seed=123: the saved Generator state replaces this one's.
    trainer = _run_trainer(model, opt, schedule_factory, es_factory, 123)
    trainer.load_state_dict(ck["trainer"])
    return model, trainer, trainer.fit(Xtr, ytr, validation=(Xv, yv))


@pytest.mark.parametrize(
    ("schedule_factory", "es_factory"),
    [
        (lambda: None, lambda: None),
        (lambda: fm.schedules.CosineAnnealingLR(T_max=6), lambda: None),
        (
            lambda: ReduceLROnPlateau(factor=0.5, patience=0, monitor="val_loss"),
            lambda: fm.EarlyStopping(patience=4, restore_best=True),
        ),
    ],
    ids=["constant", "cosine", "plateau+early-stopping"],
)
def test_a_run_resumed_from_a_checkpoint_takes_the_steps_of_the_uninterrupted_one(
    circles, schedule_factory, es_factory
):
    # A user review found a resumed Trainer restarting the schedule at epoch 0 from the
    # optimizer's decayed rate, and its shuffles from the seed: other rates, other weights.
    full_model, full, blob = _resumable_run(circles, schedule_factory, es_factory, 2)
    model, trainer, resumed = _resume(circles, blob, schedule_factory, es_factory)
    assert resumed.epoch == full.epoch == list(range(6))
    assert resumed.lr == full.lr
    assert resumed.train_loss == full.train_loss and resumed.val_loss == full.val_loss
    assert resumed.n_steps == full.n_steps == 6 * 6
    assert resumed.restored_epoch == full.restored_epoch
    for a, b in zip(model.get_weights(), full_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The next fit is a new run of all its epochs, as without a checkpoint.
    assert len(trainer.fit(circles[0], circles[1], validation=circles[2:])) == 6


def test_trainer_state_dict_before_and_after_fit(circles):
    trainer = fm.Trainer(_model(), epochs=2, verbose=False, seed=5)
    fresh = trainer.state_dict()
    assert fresh["epoch"] == 0 and fresh["history"] is None
    assert fresh["rng"] == np.random.default_rng(5).bit_generator.state
    trainer.fit(circles[0], circles[1])
    done = trainer.state_dict()
    assert done["epoch"] == 2 and len(done["history"]["train_loss"]) == 2
    assert done["history"]["n_steps"] == 2 * 2  # 180 rows in batches of 128


def test_trainer_load_state_dict_refuses_a_mismatch_and_changes_nothing(circles):
    Xtr, ytr, Xv, yv = circles
    saver = fm.Trainer(
        _model(), epochs=3, schedule=ReduceLROnPlateau(patience=0), verbose=False, seed=1
    )
    saver.fit(Xtr, ytr, validation=(Xv, yv))
    state = saver.state_dict()
    sched = ReduceLROnPlateau(patience=0)
    es = fm.EarlyStopping(patience=2)
    target = fm.Trainer(_model(), epochs=3, schedule=sched, early_stopping=es, verbose=False)
    before = (target.state_dict(), sched.state_dict())
    with pytest.raises(ValueError, match=r"^early_stopping: the run was saved without"):
        target.load_state_dict(state)
    with pytest.raises(ValueError, match=r"^state\['epoch'\]: the run was saved after 3 epochs"):
        fm.Trainer(_model(), epochs=2, schedule=ReduceLROnPlateau(), verbose=False).load_state_dict(
            state
        )
    with pytest.raises(ValueError, match=r"^schedule: the run was saved with a metric schedule"):
        fm.Trainer(_model(), epochs=3, verbose=False).load_state_dict(state)
    with pytest.raises(ValueError, match=r"^state: expected a Trainer.state_dict\(\)"):
        target.load_state_dict({"epoch": 1})
    bad_rng = {**state, "rng": {"bit_generator": "MT19937"}}
    with pytest.raises(ValueError, match=r"^state\['rng'\]"):
        fm.Trainer(_model(), epochs=3, schedule=ReduceLROnPlateau(), verbose=False).load_state_dict(
            bad_rng
        )
    # Early stopping's state refused after the schedule's was accepted: the schedule is put back.
    es_state = {
        **state,
        "early_stopping": {"best": 0.0, "best_epoch": None, "wait": -1, "best_weights": None},
    }
    with pytest.raises(ValueError, match=r"^state\['wait'\]"):
        target.load_state_dict(es_state)
    assert (target.state_dict()["epoch"], sched.state_dict()) == (before[0]["epoch"], before[1])
    assert target.state_dict()["rng"] == before[0]["rng"]


def test_a_metric_schedule_without_state_methods_cannot_be_saved_or_restored(circles):
    class Halving:  # a metric schedule by the Trainer's protocol: reset(lr), step(metric)
        def reset(self, lr):
            self.lr = lr

        def step(self, metric):
            self.lr /= 2
            return self.lr

    trainer = fm.Trainer(_model(), epochs=1, schedule=Halving(), verbose=False)
    with pytest.raises(TypeError, match=r"^schedule: Halving has no state_dict\(\)"):
        trainer.state_dict()
    saver = fm.Trainer(_model(), epochs=1, schedule=ReduceLROnPlateau(), verbose=False)
    saver.fit(circles[0], circles[1], validation=circles[2:])
    with pytest.raises(TypeError, match=r"^schedule: Halving has no state_dict\(\)/load_state"):
        trainer.load_state_dict(saver.state_dict())


def test_plateau_and_early_stopping_states_round_trip():
    sched = ReduceLROnPlateau(patience=1)
    sched.reset(0.1)
    for metric in (1.0, 2.0, 3.0):
        sched.step(metric)
    other = ReduceLROnPlateau(patience=1)
    other.load_state_dict(sched.state_dict())
    assert [other.step(m) for m in (4.0, 5.0, 0.1)] == [sched.step(m) for m in (4.0, 5.0, 0.1)]
    with pytest.raises(ValueError, match=r"^state\['best'\]: expected a number or \+-inf"):
        other.load_state_dict({**sched.state_dict(), "best": float("nan")})

    model = _model()
    es = fm.EarlyStopping(patience=3)
    es.update(0.5, 0, model)
    es.update(0.7, 1, model)
    copy = fm.EarlyStopping(patience=3)
    copy.load_state_dict(es.state_dict())
    assert (copy.best, copy.best_epoch, copy.wait) == (0.5, 0, 1)
    for a, b in zip(copy.best_weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"^state: expected an EarlyStopping.state_dict\(\)"):
        copy.load_state_dict({"best": 1.0})


def test_best_epoch_is_the_first_of_equal_values():
    """best_epoch is the first one on ties, in min and max mode."""
    h = fm.History(monitor="train_loss")
    h.train_loss.extend([0.5, 0.3, 0.3, 0.4])
    assert h.best_epoch == 1
    h = fm.History(monitor="val_accuracy")  # max mode (already tested; the pair belongs together)
    h.val_accuracy.extend([0.5, 0.9, 0.9, 0.8])
    assert h.best_epoch == 1


@pytest.mark.parametrize(
    ("shape", "where"),
    [((65537, 1), (65535, 0)), ((3, 40000), (2, 7))],
    ids=["last-row-of-a-block", "one-row-per-block"],
)
def test_fit_finds_nan_anywhere_in_a_large_X_before_the_first_step(shape, where):
    """fit checks X a block of 65536 / columns rows at a time: a NaN in the last row of a block
    (or anywhere, when a block is one row) is still found before any step, under fit's own name
    for the array, not by the engine at the batch that holds it, after the batches before it
    have trained."""
    X = np.ones(shape, np.float32)
    X[where] = np.nan
    y = np.arange(shape[0]) % 2
    model = fm.MLP([shape[1], 2], seed=0)
    before = model.get_weights()
    bs = (shape[0] + 1) // 2  # two batches in order: the NaN is in the second
    trainer = fm.Trainer(
        model, fm.optim.SGD(model, lr=0.1), batch_size=bs, epochs=1, shuffle=False, verbose=0
    )
    with pytest.raises(ValueError, match=r"^X: contains NaN or infinite values"):
        trainer.fit(X, y)
    assert _same_weights(model.get_weights(), before)


def test_verbose_auto_shows_the_bar_on_a_terminal(circles, capsys, monkeypatch):
    """On a terminal, verbose="auto" shows a bar per epoch, as verbose=2 does (a stand-in
    tqdm: the real one need not be installed)."""
    Xtr, ytr, _, _ = circles
    bars: list[dict] = []

    class FakeTqdm:
        def __init__(self, **kw):
            bars.append(kw)

        def update(self, n):
            pass

        def close(self):
            pass

        @staticmethod
        def write(line):
            print(line)

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeTqdm))
    monkeypatch.setattr(trainer_module, "_stderr_isatty", lambda: True)
    fm.Trainer(_model(), batch_size=32, epochs=2, verbose="auto").fit(Xtr, ytr)
    assert [b["desc"] for b in bars] == ["epoch 1/2", "epoch 2/2"]
    assert bars[0]["total"] == 6  # 180 rows in batches of 32
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_ctrl_c_in_a_resumed_run_counts_the_saved_steps_too(circles):
    """A resumed run's history holds all its epochs, and n_steps all their steps, also when it is
    interrupted."""
    Xtr, ytr, _, _ = circles
    model = RecordingMLP([2, 16, 2], seed=0)
    opt = fm.optim.Adam(model, lr=1e-2)
    first = fm.Trainer(model, opt, batch_size=32, epochs=2, verbose=0)
    assert first.fit(Xtr, ytr).n_steps == 12
    model.fail_at = len(model.losses) + 3  # Ctrl-C before the third step of the resumed run
    resumed = fm.Trainer(model, opt, batch_size=32, epochs=4, verbose=0)
    resumed.load_state_dict(first.state_dict())
    h = resumed.fit(Xtr, ytr)
    assert h.interrupted and len(h) == 2
    assert h.n_steps == 12 + 2 == opt.step_count


def test_a_new_fit_starts_a_plateau_schedule_at_the_base_rate(circles):
    """Each fit is a new run of the schedule from the base rate, as for an epoch schedule."""
    Xtr, ytr, Xv, yv = circles
    model = _model()
    opt = fm.optim.Adam(model, lr=1e-2)
    plateau = ReduceLROnPlateau(factor=0.5, patience=0)
    trainer = fm.Trainer(model, opt, batch_size=32, epochs=4, schedule=plateau, verbose=0)
    first = trainer.fit(Xtr, ytr, validation=(Xv, 1 - yv))  # val_loss gets worse: cuts
    assert first.lr[-1] < 1e-2 and opt.lr < 1e-2
    second = trainer.fit(Xtr, ytr, validation=(Xv, 1 - yv))
    assert second.lr[0] == pytest.approx(1e-2, rel=1e-6)


class _InterruptOnFloat:
    def __float__(self):
        raise KeyboardInterrupt


class InterruptedBetweenAppends(fm.MLP):
    """Ctrl-C landing between the appends of an epoch's history row: the second validation's
    accuracy raises KeyboardInterrupt when the Trainer converts it, after the row's first four
    entries are appended."""

    evaluations = 0

    def evaluate(self, x, y, loss=None, batch_size=4096):
        result = super().evaluate(x, y, loss=loss, batch_size=batch_size)
        self.evaluations += 1
        if self.evaluations == 2:
            result["accuracy"] = _InterruptOnFloat()
        return result


def test_ctrl_c_between_the_appends_of_a_row_keeps_complete_rows_only(circles):
    """A Ctrl-C between the appends of an epoch's row leaves complete rows only: History
    truncates every list to the shortest."""
    Xtr, ytr, Xv, yv = circles
    model = InterruptedBetweenAppends([2, 16, 2], seed=0)
    h = fm.Trainer(model, batch_size=32, epochs=4, verbose=0).fit(Xtr, ytr, validation=(Xv, yv))
    assert h.interrupted and model.evaluations == 2
    assert {k: len(h[k]) for k in h.keys()} == {k: 1 for k in h.keys()}
    assert len(h) == 1 and h.epoch == [0]


def test_train_accuracy_counts_only_the_epochs_own_steps(circles):
    """Steps taken outside fit (here with lr 0, which moves nothing) are not part of the
    first epoch's train_accuracy."""
    Xtr, ytr, _, _ = circles

    def accuracy(steps_before_fit: int) -> list:
        model = _model(seed=0)
        idle = fm.optim.SGD(model, lr=0.0)
        for _ in range(steps_before_fit):
            model.train_step(Xtr[:50], 1 - ytr[:50], optimizer=idle)
        trainer = fm.Trainer(model, fm.optim.SGD(model, lr=0.1), batch_size=32, epochs=1, verbose=0)
        return trainer.fit(Xtr, ytr).train_accuracy

    assert accuracy(3) == accuracy(0)
