"""The training loop: mini-batches, validation, schedules, early stopping, history, Ctrl-C.

A :class:`Trainer` drives any model with the :class:`fastmlp.MLP` training interface
(``train_step``, ``evaluate``, ``train``/``eval``, ``get_weights``/``set_weights``) and an optimizer
with a read/write ``lr``. Each epoch it

1. sets ``optimizer.lr`` from the schedule (if any),
2. shuffles the rows with a NumPy ``Generator`` seeded by ``seed`` (same seed, same model seed:
   the same run) and takes one fused ``model.train_step`` per mini-batch, the last partial batch
   included,
3. evaluates the model (eval mode: no dropout) on the validation set,
4. appends a row to the :class:`History`, then lets :class:`~fastmlp.schedules.ReduceLROnPlateau`,
   :class:`EarlyStopping` and the callbacks look at it.

``train_loss`` is the mean of the batch losses weighted by batch size, as seen *during* the
epoch (with dropout, while the weights move), and so, by default, is ``train_accuracy``: the
fraction of the epoch's training predictions that each step got right before its update, counted
by the engine from the logits it computed anyway (free). ``eval_train=True`` instead evaluates the
whole training set after the epoch (eval mode, the weights the epoch ended with), which costs a
forward pass over the training set, about a third of the epoch's arithmetic. Models without the
engine's counters (anything that is not a :class:`fastmlp.MLP`) always get that evaluation.

Mini-batches are gathered with ``ndarray.take`` into two buffers allocated once per ``fit`` (no
allocation per batch), and the targets are converted once per ``fit`` (integer labels to int64,
float targets to float32), so every step takes the engine's fast path. The arrays handed to
``model.train_step`` are therefore overwritten by the next batch: a model that keeps them must
copy them.

A model on ``"cuda"`` trains from a copy of ``(X, y)`` in device memory, made once per ``fit``:
each epoch uploads only its permutation (drawn from the same ``Generator``, so the batches are
those of a CPU run with the same seed) and every batch is gathered on the GPU. When the copy
would take more than half of the free device memory, ``fit`` warns (``RuntimeWarning``) and
copies each batch from the host instead.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from ._checks import (
    as_float_input,
    check_bool,
    check_finite,
    check_int,
    check_nonempty,
    check_not_masked,
    check_probability,
    check_real,
    to_float32,
)
from .optim import Adam, check_built_for, check_lr
from .schedules import MONITORS, Schedule, make_schedule

__all__ = ["EarlyStopping", "History", "Trainer"]

LOSSES = ("cross_entropy", "mse", "hinge", "bce")
# Losses whose evaluate() has no accuracy (None): a schedule or early stopping that monitors one
# is refused by fit() before the first step, not after an epoch has already moved the weights.
_NO_ACCURACY = ("mse",)

Callback = Callable[["History", int], Any]


def _mode_for(monitor: str) -> str:
    return "max" if monitor.endswith("accuracy") else "min"


class History:
    """Per-epoch metrics of one :meth:`Trainer.fit` run.

    Lists, one entry per completed epoch: ``epoch`` (0-based), ``train_loss``,
    ``train_accuracy``, ``val_loss``, ``val_accuracy`` (``None`` where not available: no
    validation set, or a loss without an accuracy such as ``"mse"``), ``lr`` (the rate used during
    the epoch) and ``time`` (wall seconds of the epoch, evaluation included).

    Also ``history["val_loss"]`` (same lists by key), ``best_epoch`` (0-based index of the best
    value of ``monitor``), ``restored_epoch`` (0-based epoch whose weights early stopping put
    back at the end of the run; ``None`` when it restored nothing), ``stopped_early`` (early
    stopping or a callback ended the run), ``interrupted`` (Ctrl-C ended it), ``n_steps``
    (optimizer steps taken) and ``to_dict()``. As with a dict, ``keys()``, ``"val_loss" in
    history`` and ``for key in history`` go over the metric names; ``len(history)`` is the number
    of epochs.

    ``best_epoch`` is the plain best value and ignores :class:`EarlyStopping`'s ``min_delta``;
    early stopping restores the last epoch that improved by more than ``min_delta`` (Keras's
    rule), which can be an earlier one: ``restored_epoch`` is the epoch the model holds.
    """

    KEYS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "time")

    def __init__(self, monitor: str = "train_loss", mode: str | None = None) -> None:
        self.epoch: list[int] = []
        self.train_loss: list[float] = []
        self.train_accuracy: list[float | None] = []
        self.val_loss: list[float | None] = []
        self.val_accuracy: list[float | None] = []
        self.lr: list[float] = []
        self.time: list[float] = []
        self.monitor = monitor
        self.mode = _mode_for(monitor) if mode is None else mode
        self.stopped_early = False
        self.interrupted = False
        self.n_steps = 0
        # Set by Trainer.fit when EarlyStopping put weights back; differs from best_epoch when
        # min_delta > 0 made later, slightly better epochs not count as improvements.
        self.restored_epoch: int | None = None

    def __getitem__(self, key: str) -> list[Any]:
        if key not in self.KEYS:
            raise KeyError(f"{key!r}: not a history key; known: {', '.join(self.KEYS)}")
        return getattr(self, key)

    def __len__(self) -> int:
        return len(self.epoch)

    def __iter__(self) -> Iterator[str]:
        return iter(self.KEYS)

    def __contains__(self, key: object) -> bool:
        return key in self.KEYS

    def keys(self) -> tuple[str, ...]:
        """The metric names, as a dict's keys (``history[key]`` is the list of one)."""
        return self.KEYS

    def _truncate(self) -> None:
        # Ctrl-C can land between the appends of one row: keep complete rows only.
        n = min(len(self[k]) for k in self.KEYS)
        for k in self.KEYS:
            del self[k][n:]

    @property
    def best_epoch(self) -> int | None:
        """0-based epoch with the best ``monitor`` value (``mode``: "min" by default for a loss,
        "max" for an accuracy, or early stopping's mode); the first one on ties; ``None`` if no
        epoch has a finite value.

        It ignores early stopping's ``min_delta``, so it can be later than the epoch whose
        weights early stopping restored: that one is :attr:`restored_epoch`."""
        values = [
            (i, v) for i, v in enumerate(self[self.monitor]) if v is not None and math.isfinite(v)
        ]
        if not values:
            return None
        if self.mode == "max":
            return max(values, key=lambda iv: (iv[1], -iv[0]))[0]
        return min(values, key=lambda iv: (iv[1], iv[0]))[0]

    def to_dict(self) -> dict[str, list[Any]]:
        """The metric lists by key (copies), e.g. for ``json.dump`` or ``pandas.DataFrame``."""
        return {k: list(self[k]) for k in self.KEYS}

    def __repr__(self) -> str:
        flags = "".join(
            f", {name}=True" for name in ("stopped_early", "interrupted") if getattr(self, name)
        )
        restored = "" if self.restored_epoch is None else f", restored_epoch={self.restored_epoch}"
        return (
            f"History(epochs={len(self)}, monitor={self.monitor!r}, "
            f"best_epoch={self.best_epoch}{restored}{flags})"
        )


class EarlyStopping:
    """Stop when ``monitor`` has not improved for ``patience`` epochs in a row.

    An epoch improves if its value beats the best so far by more than ``min_delta``
    (``value < best - min_delta`` for losses, ``value > best + min_delta`` for accuracies;
    ``mode=None`` chooses from the name). NaN never improves. With ``restore_best=True`` the
    weights of the best epoch are kept (``model.get_weights()``) and put back at the end of the
    run, whether it stopped early or ran all its epochs (not after Ctrl-C: an interrupted run
    keeps its last step).

    "Best" here is the last epoch that improved in the sense above (:attr:`best_epoch`, as in
    Keras): with ``min_delta > 0`` a later epoch that is better by less than ``min_delta`` does
    not replace it, so it can differ from :attr:`History.best_epoch`, which ignores
    ``min_delta``. The history's ``restored_epoch`` names the epoch whose weights were restored.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 10,
        min_delta: float = 0.0,
        restore_best: bool = True,
        mode: str | None = None,
    ) -> None:
        if monitor not in MONITORS:
            raise ValueError(f"monitor: expected one of {', '.join(MONITORS)}, got {monitor!r}")
        patience = check_int(patience, "patience", 1)
        min_delta = check_real(min_delta, "min_delta", finite=False)
        if not (min_delta >= 0.0 and math.isfinite(min_delta)):
            raise ValueError(f"min_delta: expected a finite value >= 0, got {min_delta}")
        mode = _mode_for(monitor) if mode is None else mode
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.restore_best = check_bool(restore_best, "restore_best")
        self.mode = mode
        self.reset()

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
            f"min_delta={self.min_delta}, restore_best={self.restore_best}, mode={self.mode!r})"
        )

    def reset(self) -> None:
        """Forget the best value and weights (the Trainer calls this at the start of ``fit``)."""
        self.best: float = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_weights: list[np.ndarray] | None = None
        self.wait = 0

    def _improves(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, epoch: int, model: Any) -> bool:
        """Record ``value`` for ``epoch``; keep the weights if it is the best; True = stop now."""
        if self._improves(float(value)):
            self.best = float(value)
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best:
                self.best_weights = [np.array(w, copy=True) for w in model.get_weights()]
            return False
        self.wait += 1
        return self.wait >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Where the run stands (best value and epoch, epochs without improvement, a copy of the
        best weights), to resume it with :meth:`load_state_dict`; the settings are not included."""
        weights = self.best_weights
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "best_weights": None if weights is None else [np.array(w, copy=True) for w in weights],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back a :meth:`state_dict`; ValueError naming what is wrong, with this object
        unchanged."""
        keys = ("best", "best_epoch", "wait", "best_weights")
        if not isinstance(state, Mapping) or set(state) != set(keys):
            raise ValueError(
                f"state: expected an EarlyStopping.state_dict() with keys {', '.join(keys)}"
            )
        best = check_real(state["best"], "state['best']", finite=False)
        if math.isnan(best):
            raise ValueError("state['best']: expected a number or +-inf, got nan")
        best_epoch = state["best_epoch"]
        if best_epoch is not None:
            best_epoch = check_int(best_epoch, "state['best_epoch']", 0)
        wait = check_int(state["wait"], "state['wait']", 0)
        weights = state["best_weights"]
        if weights is not None:
            if not isinstance(weights, (list, tuple)) or not all(
                isinstance(w, np.ndarray) for w in weights
            ):
                raise ValueError("state['best_weights']: expected a list of arrays or None")
            weights = [np.array(w, copy=True) for w in weights]
        self.best, self.best_epoch, self.wait, self.best_weights = best, best_epoch, wait, weights

    def restore(self, model: Any) -> bool:
        """Put the best weights back into ``model``; True if it did."""
        if not self.restore_best or self.best_weights is None:
            return False
        model.set_weights([np.array(w, copy=True) for w in self.best_weights])
        return True


def _annotate(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(note)
    else:  # older Pythons: fold it into the message
        exc.args = (f"{exc.args[0] if exc.args else exc} ({note})", *exc.args[1:])


# Models in a Trainer.fit, by id() (a model is alive while fitted, and a subclass need not be
# hashable), each with the thread running it and how deep its fits are nested.
_fits_lock = threading.Lock()
_fitting: dict[int, tuple[int, int]] = {}


@contextmanager
def _sole_fit(model: Any) -> Iterator[None]:
    """Refuses a second thread's fit of a model being fitted: the two would share its training
    mode and step counts (another fit's end of epoch turned dropout off for the next steps, and
    each history mixed both runs' accuracies)."""
    me, key = threading.get_ident(), id(model)
    with _fits_lock:
        owner, depth = _fitting.get(key, (me, 0))
        if owner != me:
            raise RuntimeError(
                "model: another thread is running Trainer.fit on this model; fit it from one "
                "thread at a time (or train a copy: copy.deepcopy(model))"
            )
        _fitting[key] = (me, depth + 1)
    try:
        yield
    finally:
        with _fits_lock:
            if depth == 0:
                del _fitting[key]
            else:
                _fitting[key] = (me, depth)


def _scheduled_lr(value: object, epoch: int) -> float:
    """The rate a schedule gives for ``epoch``, checked as ``optimizer.lr`` checks it, but with an
    error that names the schedule (the user set no such rate: ``ExponentialLR(gamma=1e200)``
    reaches float32's inf a few epochs in)."""
    try:
        return check_lr(value)
    except (TypeError, ValueError) as exc:
        message = f"schedule: the rate for epoch {epoch} (0-based) is unusable: {exc}"
        raise type(exc)(message) from None


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:6.2f}%" if pct else f"{value:.4f}"


class Trainer:
    """Mini-batch training of a model on arrays ``X`` (n, d) and targets ``y``.

    Parameters
    ----------
    model:
        an :class:`fastmlp.MLP` (or anything with the same ``train_step`` / ``evaluate`` /
        ``train`` / ``eval`` / ``get_weights`` / ``set_weights`` methods).
    optimizer:
        a :mod:`fastmlp.optim` optimizer bound to ``model``; default ``Adam(model, lr=1e-3)``.
        Its ``lr`` when the Trainer is built is the schedule's base rate.
    loss:
        ``"cross_entropy"``, ``"mse"``, ``"hinge"`` or ``"bce"``; ``None`` uses ``model.loss`` if
        the model has one, else ``"cross_entropy"``.
    batch_size:
        rows per step; ``1`` is online SGD, ``None`` full batch (one step per epoch).
    epochs:
        number of passes over the data (fewer if early stopping or Ctrl-C ends the run).
    schedule:
        ``None`` (constant rate), a :mod:`fastmlp.schedules` object, or a name for
        :func:`~fastmlp.schedules.make_schedule` (``"cosine"`` gets ``T_max=epochs``,
        ``"poly"`` ``total_epochs=epochs``). Epoch schedules set ``optimizer.lr`` before each
        epoch from the base rate (``fit`` checks every epoch's rate before the first step);
        :class:`~fastmlp.schedules.ReduceLROnPlateau` (or any object with
        ``reset(lr)``/``step(metric)`` and no ``lr_at``) starts each run at the base rate and is
        stepped after each epoch with the history entry named by its ``monitor``. A rate that
        is not a usable ``lr`` raises an error that names the schedule and the epoch.
    early_stopping:
        an :class:`EarlyStopping`, or ``None``.
    seed:
        seeds the shuffling ``Generator``; the same seed (and a model built with the same seed)
        gives the same run. ``None`` draws fresh OS entropy (not reproducible). The Trainer keeps
        one Generator: each ``fit`` call continues it, so calling ``fit`` again shuffles anew
        (a new Trainer, or setting ``seed``, starts it again).
    verbose:
        ``"auto"``: when stderr is a terminal, one line per epoch on stdout plus a tqdm bar per
        epoch on stderr (when tqdm is installed); silent otherwise (scripts, logs, CI).
        ``True``/``1``: the lines only; ``2``: lines and bar even when stderr is not a terminal
        (lines only without tqdm); ``False``/``0``: silent.
    shuffle:
        reshuffle the rows every epoch (``False``: fixed order, still every row once).
    label_smoothing:
        in [0, 1]; passed to ``train_step`` for ``loss="cross_entropy"`` when non-zero (PyTorch's
        convention: targets ``(1 - eps) * onehot + eps / classes``).
    callbacks:
        callables ``cb(history, epoch)`` run after each epoch; one returning ``True`` (a Python
        or NumPy bool, e.g. ``np.mean(h.val_loss) < 0.1``) stops the run
        (``history.stopped_early`` is set). Any other result (``False``, ``None``, numbers, other
        objects) lets it go on, so a callback that returns something incidental (a count, a
        list's ``append``) never stops training by accident.
    eval_train:
        ``False`` (default): ``train_accuracy`` is counted during the epoch (see the module
        docstring); ``True``: from ``model.evaluate`` on the whole training set after the epoch.

    ``fit`` leaves the model in eval mode. Ctrl-C during ``fit`` stops it: the model keeps its
    last completed step, ``history.interrupted`` is True and the history is returned. A
    ``FloatingPointError`` from ``train_step`` (the model is unchanged) propagates, noting the
    epoch and batch. :meth:`state_dict` and :meth:`load_state_dict` save a run at an epoch
    boundary and resume it exactly (with the model and the optimizer's ``state_dict``).
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any = None,
        loss: str | None = None,
        batch_size: int | None = 128,
        epochs: int = 20,
        schedule: Schedule | str | None = None,
        early_stopping: EarlyStopping | None = None,
        seed: int | None = 0,
        verbose: bool | int | str = "auto",
        shuffle: bool = True,
        label_smoothing: float = 0.0,
        callbacks: Iterable[Callback] | None = None,
        eval_train: bool = False,
    ) -> None:
        for method in ("train_step", "evaluate"):
            if not callable(getattr(model, method, None)):
                raise TypeError(
                    f"model: expected a fastmlp.MLP-like object with train_step() and "
                    f"evaluate(), got {type(model).__name__}"
                )
        self.model = model
        if optimizer is None:
            optimizer = Adam(model, lr=1e-3)
        if not hasattr(optimizer, "lr"):
            raise TypeError(
                f"optimizer: expected a fastmlp.optim optimizer (with an lr attribute), "
                f"got {type(optimizer).__name__}"
            )
        # Checked here, not at fit's first step (after fit has already changed the model's mode).
        check_built_for(optimizer, model)
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)

        if loss is None:
            loss = getattr(model, "loss", None) or "cross_entropy"
        if loss not in LOSSES:
            raise ValueError(f"loss: unknown loss {loss!r}; known: {', '.join(LOSSES)}")
        self.loss = loss

        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size", 1)
        self.epochs = check_int(epochs, "epochs", 1)

        if isinstance(schedule, str):
            key = schedule.strip().lower()
            defaults = {
                "cosine": {"T_max": self.epochs},
                "poly": {"total_epochs": self.epochs},
                "polynomial": {"total_epochs": self.epochs},
            }
            schedule = make_schedule(key, **defaults.get(key, {}))
        else:
            schedule = make_schedule(schedule)
        self.schedule = schedule

        if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
            raise TypeError(
                f"early_stopping: expected an EarlyStopping or None, "
                f"got {type(early_stopping).__name__}"
            )
        if early_stopping is not None and early_stopping.restore_best:
            for method in ("get_weights", "set_weights"):
                if not callable(getattr(model, method, None)):
                    raise TypeError(f"early_stopping: restore_best needs model.{method}()")
        self.early_stopping = early_stopping

        # Where the current (or last) run stands, for state_dict(): completed epochs, its history
        # and the Generator after the last completed epoch; a loaded state, for the next fit().
        self._epochs_done = 0
        self._history: History | None = None
        self._resume: dict[str, Any] | None = None
        self.seed = seed  # checked, and seeds the shuffling Generator (see the property)
        if verbose not in ("auto", True, False, 0, 1, 2):
            raise ValueError(f"verbose: expected 'auto', True, False, 0, 1 or 2, got {verbose!r}")
        self.verbose = verbose
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle: expected a bool, got {type(shuffle).__name__}")
        self.shuffle = bool(shuffle)
        # [0, 1] as MLP.train_step (PyTorch's range): 1 is uniform targets, a valid extreme.
        label_smoothing = check_probability(label_smoothing, "label_smoothing", allow_one=True)
        if label_smoothing and loss != "cross_entropy":
            raise ValueError(f"label_smoothing: only for loss='cross_entropy', not {loss!r}")
        self.label_smoothing = label_smoothing
        if callbacks is not None and (callable(callbacks) or not isinstance(callbacks, Iterable)):
            raise TypeError(
                f"callbacks: expected a list of callables like [fn], got {type(callbacks).__name__}"
            )
        self.callbacks = list(callbacks) if callbacks is not None else []
        if not isinstance(eval_train, (bool, np.bool_)):
            raise TypeError(f"eval_train: expected a bool, got {type(eval_train).__name__}")
        self.eval_train = bool(eval_train)
        for cb in self.callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks: expected callables, got {type(cb).__name__}")

    @property
    def seed(self) -> int | None:
        """The seed of the shuffling ``Generator``; setting it starts that Generator again."""
        return self._seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        if value is not None:
            value = check_int(value, "seed", 0)
        self._seed = value
        # One Generator for the Trainer's life, not one per fit(): a second fit() (or a loop of
        # fit() calls of one epoch each) continues its stream instead of repeating the first
        # call's shuffles, as PyTorch's DataLoader reshuffles on every pass.
        self._rng = np.random.default_rng(value)
        self._rng_at_epoch_end = self._rng.bit_generator.state

    def _metric_schedule(self) -> Any:
        """The schedule if it follows a metric (ReduceLROnPlateau, or anything with
        ``reset``/``step`` and no ``lr_at``), else None."""
        sched = self.schedule
        return sched if sched is not None and not hasattr(sched, "lr_at") else None

    def _resumable_metric_schedule(self, why: str) -> Any:
        """:meth:`_metric_schedule`, refused (TypeError, ``why`` saying what cannot be done)
        when it has no ``state_dict()``/``load_state_dict()`` to save and resume it with."""
        sched = self._metric_schedule()
        if sched is not None and not (
            callable(getattr(sched, "state_dict", None))
            and callable(getattr(sched, "load_state_dict", None))
        ):
            raise TypeError(
                f"schedule: {type(sched).__name__} has no state_dict()/load_state_dict(), so {why}"
            )
        return sched

    def state_dict(self) -> dict[str, Any]:
        """Where the run stands after its last completed epoch, to resume it with
        :meth:`load_state_dict`: the epochs done, the base rate, the shuffling Generator's state,
        the state of a metric schedule (:class:`~fastmlp.schedules.ReduceLROnPlateau`) and of
        early stopping, and the history so far (plain Python and NumPy values, for ``pickle``).

        A checkpoint is exact at an epoch boundary: save it with the model and the optimizer
        from a callback (or after ``fit`` returns), and a Trainer built with the same arguments,
        given the three back, continues the run with the steps, rates and shuffles the
        uninterrupted run would have taken::

            def checkpoint(history, epoch):
                pickle.dump({"trainer": trainer.state_dict(), "opt": opt.state_dict()}, f)
                model.save("model.npz")

            model = fm.load("model.npz"); opt = fm.optim.Adam(model, lr=1e-3)   # resume
            trainer = fm.Trainer(model, opt, schedule=..., epochs=...)
            opt.load_state_dict(ck["opt"]); trainer.load_state_dict(ck["trainer"])
            history = trainer.fit(X, y)   # the remaining epochs; the history has them all

        After Ctrl-C the model holds the steps of a partial epoch, which a resumed run does
        again. A metric schedule without ``state_dict()``/``load_state_dict()`` cannot be saved
        (TypeError).
        """
        sched = self._resumable_metric_schedule("the run cannot be saved")
        sched_state = None if sched is None else sched.state_dict()
        done = self._epochs_done
        h = self._history
        return {
            "epoch": done,
            "base_lr": self.base_lr,
            "rng": self._rng_at_epoch_end,
            "schedule": sched_state,
            "early_stopping": None
            if self.early_stopping is None
            else self.early_stopping.state_dict(),
            # The rows of the completed epochs (Ctrl-C can land after a row and before the count).
            "history": None
            if h is None
            else {**{k: list(h[k][:done]) for k in History.KEYS}, "n_steps": h.n_steps},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back a :meth:`state_dict`, so that the next :meth:`fit` continues that run from
        its next epoch up to ``epochs`` (the one after starts a new run, as usual). The Trainer
        must have been built like the one that saved it (its schedule and early stopping of the
        same kinds, at least as many epochs). ValueError naming what does not fit, with the
        Trainer unchanged."""
        keys = ("epoch", "base_lr", "rng", "schedule", "early_stopping", "history")
        if not isinstance(state, Mapping) or set(state) != set(keys):
            raise ValueError(f"state: expected a Trainer.state_dict() with keys {', '.join(keys)}")
        epoch = check_int(state["epoch"], "state['epoch']", 0)
        if epoch > self.epochs:
            raise ValueError(
                f"state['epoch']: the run was saved after {epoch} epochs, more than this "
                f"Trainer's epochs={self.epochs}"
            )
        try:
            base_lr = check_lr(state["base_lr"])
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"state['base_lr']: {exc}") from None
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = state["rng"]
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"state['rng']: not a PCG64 Generator state ({exc})") from None
        history = state["history"]
        if history is not None:
            lists = {
                k: history.get(k) if isinstance(history, Mapping) else None for k in History.KEYS
            }
            if not all(isinstance(v, list) and len(v) == epoch for v in lists.values()):
                raise ValueError(
                    f"state['history']: expected the lists {', '.join(History.KEYS)} of "
                    f"{epoch} entries each, and n_steps"
                )
            n_steps = check_int(history.get("n_steps"), "state['history']['n_steps']", 0)
        elif epoch > 0:
            raise ValueError(f"state['history']: expected the history of {epoch} epochs, got None")
        sched = self._metric_schedule()
        plateau = sched is not None
        for who, mine, saved in (
            ("schedule", plateau, state["schedule"]),
            ("early_stopping", self.early_stopping is not None, state["early_stopping"]),
        ):
            if mine != (saved is not None):
                raise ValueError(
                    f"{who}: the run was saved {'with' if saved is not None else 'without'} "
                    f"{'a metric schedule' if who == 'schedule' else 'early stopping'}, and this "
                    "Trainer has " + ("one" if mine else "none")
                )
        self._resumable_metric_schedule("a saved run cannot be put back into it")
        # Each object checks its own state before changing anything; the schedule's is put back
        # if early stopping's is refused, so that a refusal leaves the Trainer as it was.
        old_sched = sched.state_dict() if plateau else None
        if plateau:
            sched.load_state_dict(state["schedule"])
        if self.early_stopping is not None:
            try:
                self.early_stopping.load_state_dict(state["early_stopping"])
            except BaseException:
                if plateau:
                    sched.load_state_dict(old_sched)
                raise
        self.base_lr = base_lr
        self._rng = rng
        self._rng_at_epoch_end = rng.bit_generator.state
        self._epochs_done = epoch
        restored = History()
        if history is not None:
            for k in History.KEYS:
                restored[k].extend(lists[k])
            restored.n_steps = n_steps
        self._history = restored
        self._resume = {"epoch": epoch, "history": restored}

    def __repr__(self) -> str:
        return (
            f"Trainer(loss={self.loss!r}, batch_size={self.batch_size}, epochs={self.epochs}, "
            f"optimizer={type(self.optimizer).__name__}(lr={self.base_lr:g}), "
            f"schedule={self.schedule!r}, early_stopping={self.early_stopping!r}, seed={self.seed})"
        )

    # ----------------------------------------------------------------------------------------

    def _check_data(self, X: Any, y: Any, xname: str, yname: str) -> tuple[np.ndarray, np.ndarray]:
        X = as_float_input(X, xname, ndim=2)
        check_nonempty(X, xname)
        check_not_masked(y, yname)  # before np.asarray, which would drop the mask
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != X.shape[0]:
            raise ValueError(
                f"{yname}: expected {X.shape[0]} rows (one per row of {xname}), got shape {y.shape}"
            )
        # Checked once per fit, before the first step: the engine would only find a bad value at
        # the step whose batch holds it, part way through training (and blame "x" or "y").
        check_finite(X, xname)
        check_targets = getattr(self.model, "_y", None)  # fastmlp.MLP's own target check
        if check_targets is not None:
            return X, check_targets(y, self.loss, X.shape[0], yname)
        # Once per fit, so that no batch needs a conversion (the engine reads int64 labels and
        # float32 targets); other dtypes are left for the model to accept or refuse.
        if y.dtype.kind in "iu":
            y = np.ascontiguousarray(y, dtype=np.int64)
        elif y.dtype.kind == "f":
            y = to_float32(y, yname)
        return X, y

    def _progress(self) -> tuple[bool, Any]:
        """(print epoch lines?, tqdm class or None)."""
        if self.verbose in (False, 0) or (self.verbose == "auto" and not _stderr_isatty()):
            return False, None
        want_bar = self.verbose in (2, "auto")
        if not want_bar:
            return True, None
        try:
            from tqdm import tqdm
        except ImportError:
            return True, None
        return True, tqdm

    def fit(
        self, X: np.ndarray, y: np.ndarray, validation: tuple[np.ndarray, np.ndarray] | None = None
    ) -> History:
        """Train for ``epochs`` epochs on ``(X, y)``; evaluate on ``validation=(X_val, y_val)``.

        Returns the :class:`History`. See the class docstring for what happens each epoch. One
        fit at a time per model: a fit of the same model already running on another thread is a
        ``RuntimeError`` (a callback may still call fit on its own thread).
        """
        with _sole_fit(self.model):
            return self._fit(X, y, validation)

    def _fit(
        self, X: np.ndarray, y: np.ndarray, validation: tuple[np.ndarray, np.ndarray] | None
    ) -> History:
        X, y = self._check_data(X, y, "X", "y")
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise TypeError("validation: expected a pair (X_val, y_val) or None")
            Xv, yv = self._check_data(validation[0], validation[1], "X_val", "y_val")
            if Xv.shape[1] != X.shape[1]:
                raise ValueError(f"X_val: expected {X.shape[1]} columns like X, got {Xv.shape[1]}")
        has_val = validation is not None
        sched = self.schedule
        plateau = self._metric_schedule()
        plateau_monitor = getattr(plateau, "monitor", "val_loss") if plateau is not None else None
        for who, monitor in (
            ("early_stopping", getattr(self.early_stopping, "monitor", None)),
            ("schedule", plateau_monitor),
        ):
            if monitor is not None and monitor.startswith("val_") and not has_val:
                raise ValueError(
                    f"{who}: monitors {monitor!r} but fit() got no validation data; "
                    f"pass validation=(X_val, y_val) or monitor a train_ metric"
                )
            # Here, before any step: found by _monitored after the first epoch, the error would
            # leave a model that has already trained for an epoch.
            if monitor is not None and monitor.endswith("accuracy") and self.loss in _NO_ACCURACY:
                raise ValueError(
                    f"{who}: monitors {monitor!r} but loss={self.loss!r} has no accuracy; "
                    f"monitor a loss ('val_loss' or 'train_loss')"
                )

        # An epoch schedule is a pure function of the epoch: every rate is checked here, before
        # any step, rather than the run stopping at the first bad one with the model half trained.
        rates = None
        if sched is not None and plateau is None:
            rates = [_scheduled_lr(sched.lr_at(e, self.base_lr), e) for e in range(self.epochs)]

        n = X.shape[0]
        bs = n if self.batch_size is None else min(self.batch_size, n)
        n_batches = -(-n // bs)
        rng = self._rng
        model, opt = self.model, self.optimizer
        steps_before = opt.step_count
        # Gather buffers for shuffled batches (allocated once; a partial batch uses their head).
        xbuf = np.empty((bs, *X.shape[1:]), X.dtype) if self.shuffle else None
        ybuf = np.empty((bs, *y.shape[1:]), y.dtype) if self.shuffle else None
        # A model on the GPU trains from a copy of (X, y) in device memory when it fits.
        on_gpu = getattr(model, "device", "cpu") == "cuda"
        device_data = _DeviceData.create(model, X, y, self.loss, bs) if on_gpu else None
        take_counts = None if self.eval_train else getattr(model, "_take_train_counts", None)
        step_kw: dict[str, Any] = {"loss": self.loss, "optimizer": opt}
        if self.label_smoothing:
            step_kw["label_smoothing"] = self.label_smoothing

        monitor = (
            self.early_stopping.monitor
            if self.early_stopping is not None
            else ("val_loss" if has_val else "train_loss")
        )
        history = History(
            monitor=monitor, mode=self.early_stopping.mode if self.early_stopping else None
        )
        es = self.early_stopping
        # A run put back by load_state_dict goes on from its next epoch, with its history and
        # the states of early stopping and the metric schedule as they were saved.
        resume, self._resume = self._resume, None
        first_epoch = 0 if resume is None else resume["epoch"]
        if resume is not None:
            for k in History.KEYS:
                history[k].extend(resume["history"][k])
            history.n_steps = resume["history"].n_steps
        else:
            if es is not None:
                es.reset()
            if plateau is not None:
                plateau.reset(self.base_lr)
                opt.lr = self.base_lr
        self._history = history
        self._epochs_done = first_epoch
        self._rng_at_epoch_end = rng.bit_generator.state
        lines, tqdm = self._progress()
        write = tqdm.write if tqdm is not None else print
        bar = None

        try:
            for epoch in range(first_epoch, self.epochs):
                if rates is not None:
                    opt.lr = rates[epoch]
                lr = float(opt.lr)
                t0 = time.perf_counter()
                if tqdm is not None:
                    bar = tqdm(
                        total=n_batches,
                        desc=f"epoch {epoch + 1}/{self.epochs}",
                        leave=False,
                        file=sys.stderr,
                        unit="batch",
                    )
                order = rng.permutation(n) if self.shuffle else None
                if device_data is not None:
                    device_data.set_order(order)
                _call(model, "train")
                if take_counts is not None:
                    take_counts()  # start the epoch's count from zero
                total = 0.0
                for b in range(n_batches):
                    lo, hi = b * bs, min(n, (b + 1) * bs)
                    if device_data is not None:
                        xb, yb = device_data.batch(lo, hi)
                    elif order is None or xbuf is None or ybuf is None:
                        xb, yb = X[lo:hi], y[lo:hi]  # no shuffle: contiguous views, no copy
                    else:
                        # mode="clip": the indices are a permutation, always in range, and
                        # NumPy buffers `out` for the default mode="raise" (a second copy;
                        # 34 vs 21 ms per 60000x784 epoch, measured). The method with positional
                        # arguments (axis, out, mode): np.take's wrapper and keywords cost 1.9 us
                        # a call against 0.5, a quarter of a 2-16-2 step's 11 us.
                        idx = order[lo:hi]
                        xb = X.take(idx, 0, xbuf[: hi - lo], "clip")
                        yb = y.take(idx, 0, ybuf[: hi - lo], "clip")
                    try:
                        if device_data is not None:
                            # y was validated once, in _DeviceData (model._y).
                            loss = model._train_step_device(
                                xb, yb, hi - lo, self.loss, opt, self.label_smoothing, True
                            )
                        else:
                            loss = model.train_step(xb, yb, **step_kw)
                    except FloatingPointError as exc:
                        _annotate(
                            exc,
                            f"Trainer.fit: epoch {epoch} (0-based), batch {b} of "
                            f"{n_batches} (rows {lo}..{hi - 1} of this epoch's order)",
                        )
                        raise
                    history.n_steps += 1
                    total += float(loss) * (hi - lo)
                    if bar is not None:
                        bar.update(1)
                if bar is not None:
                    bar.close()
                    bar = None

                _call(model, "eval")
                if take_counts is not None:
                    correct, counted = take_counts()
                    train_acc = correct / counted if counted else None
                else:
                    train_acc = _opt_float(model.evaluate(X, y, loss=self.loss).get("accuracy"))
                val_eval = model.evaluate(Xv, yv, loss=self.loss) if has_val else {}
                history.epoch.append(epoch)
                history.train_loss.append(total / n)
                history.train_accuracy.append(train_acc)
                history.val_loss.append(_opt_float(val_eval.get("loss")))
                history.val_accuracy.append(_opt_float(val_eval.get("accuracy")))
                history.lr.append(lr)
                history.time.append(time.perf_counter() - t0)
                self._epochs_done = epoch + 1
                self._rng_at_epoch_end = rng.bit_generator.state
                if lines:
                    write(self._line(history))

                stop = False
                if plateau is not None:
                    rate = plateau.step(_monitored(history, plateau_monitor, "schedule"))
                    opt.lr = _scheduled_lr(rate, epoch + 1)
                if es is not None and es.update(
                    _monitored(history, es.monitor, "early_stopping"), epoch, model
                ):
                    stop = True
                    if lines:
                        write(
                            f"early stopping: no improvement in {es.monitor} for {es.patience} "
                            f"epochs (best: epoch {_human_epoch(es.best_epoch)})"
                        )
                for cb in self.callbacks:
                    # A bool, NumPy's included (a comparison of NumPy values gives np.bool_);
                    # anything else, truthy or not, means "go on" (see the class docstring).
                    result = cb(history, epoch)
                    if isinstance(result, (bool, np.bool_)) and result:
                        stop = True
                if stop:
                    history.stopped_early = True
                    break
        except KeyboardInterrupt:
            history.interrupted = True
            # Ctrl-C lands between C++ steps (a step runs with the GIL released and completes), but
            # it may land after a step returned and before the count above: ask the optimizer.
            history.n_steps = (
                opt.step_count - steps_before + (0 if resume is None else resume["history"].n_steps)
            )
            history._truncate()
            if bar is not None:
                bar.close()
            if lines:
                print(
                    f"interrupted after {history.n_steps} steps; returning the history so far",
                    file=sys.stderr,
                )
        else:
            if es is not None and es.restore(model):
                history.restored_epoch = es.best_epoch
                if lines and es.best_epoch != len(history) - 1:
                    write(
                        f"restored the weights of epoch {_human_epoch(es.best_epoch)} "
                        f"({es.monitor} {_fmt(es.best, es.monitor.endswith('accuracy'))})"
                    )
        finally:
            if bar is not None:
                bar.close()
            _call(model, "eval")
        return history

    def _line(self, h: History) -> str:
        e = h.epoch[-1]
        width = len(str(self.epochs))
        parts = [f"epoch {e + 1:>{width}}/{self.epochs}", f"loss {_fmt(h.train_loss[-1])}"]
        if h.train_accuracy[-1] is not None:
            parts.append(f"acc {_fmt(h.train_accuracy[-1], True)}")
        if h.val_loss[-1] is not None:
            parts.append(f"val_loss {_fmt(h.val_loss[-1])}")
        if h.val_accuracy[-1] is not None:
            parts.append(f"val_acc {_fmt(h.val_accuracy[-1], True)}")
        parts.append(f"lr {h.lr[-1]:.3g}")
        parts.append(f"{h.time[-1]:.2f}s")
        return "  ".join(parts)


def _human_epoch(epoch: int | None) -> str:
    return "-" if epoch is None else str(epoch + 1)


def _call(model: Any, method: str) -> None:
    fn = getattr(model, method, None)
    if callable(fn):
        fn()


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _monitored(history: History, key: str, who: str) -> float:
    value = history[key][-1]
    if value is None:
        raise ValueError(f"{who}: {key!r} is not available (no accuracy for this loss?)")
    return value


class _DeviceData:
    """The training set of a CUDA model in device memory: X and the targets uploaded once, each
    epoch's order (the permutation the CPU path draws from the same seeded Generator, so both see
    the same batches) uploaded once per epoch, and every batch gathered on the GPU."""

    def __init__(self, model: Any, X: np.ndarray, y: np.ndarray, loss: str | None, bs: int):
        from . import cuda

        self._mod = cuda._module()
        n = X.shape[0]
        x32 = model._x(X)  # float32, C-contiguous, the model's column count
        t = model._y(y, model._loss_or_default(loss), n)  # int64 labels or float32 targets
        self.n = n
        self.x_row_bytes = x32.shape[1] * 4
        self.y_row_bytes = t.itemsize * (t.shape[1] if t.ndim == 2 else 1)
        self.X = cuda.to_device(x32)
        self.y = cuda.to_device(t)
        self.order = cuda.to_device(np.arange(n, dtype=np.int64))
        self.xb = cuda.empty((bs, x32.shape[1]), np.float32)
        self.yb = cuda.empty((bs, *t.shape[1:]), t.dtype)

    @classmethod
    def create(
        cls, model: Any, X: np.ndarray, y: np.ndarray, loss: str | None, bs: int
    ) -> _DeviceData | None:
        """The device copy, or None (with a RuntimeWarning) when it would take more than half
        of the free device memory: then each batch is copied from the host as it is used."""
        from . import cuda

        n = X.shape[0]
        y_row = 8 if y.ndim == 1 else 4 * int(np.prod(y.shape[1:]))
        need = (n + bs) * (4 * X.shape[1] + y_row) + 8 * n
        free, _ = cuda._module().mem_get_info()
        if need > free // 2:
            import warnings

            warnings.warn(
                f"Trainer.fit: the training set needs {need / 2**20:.0f} MiB on the GPU and "
                f"{free / 2**20:.0f} MiB are free; streaming each batch from host memory instead",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return cls(model, X, y, loss, bs)

    def set_order(self, order: np.ndarray | None) -> None:
        """This epoch's row order (None: the rows in order)."""
        if order is None:
            order = np.arange(self.n, dtype=np.int64)
        self.order.copy_from(np.ascontiguousarray(order, dtype=np.int64))

    def batch(self, lo: int, hi: int) -> tuple[Any, Any]:
        """Rows order[lo:hi] of X and y, gathered into the batch buffers (their first hi - lo
        rows)."""
        rows = hi - lo
        for dst, src, row_bytes in (
            (self.xb, self.X, self.x_row_bytes),
            (self.yb, self.y, self.y_row_bytes),
        ):
            self._mod.gather_rows(dst._buf, src._buf, self.order._buf, lo, rows, self.n, row_bytes)
        return self.xb, self.yb


def _stderr_isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
