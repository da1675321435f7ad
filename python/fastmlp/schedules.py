"""Learning-rate schedules, with PyTorch's ``torch.optim.lr_scheduler`` semantics.

Two kinds:

* **Epoch schedules** (:class:`StepLR`, :class:`MultiStepLR`, :class:`ExponentialLR`,
  :class:`PolynomialLR`, :class:`CosineAnnealingLR`) are pure functions of the 0-based epoch:
  ``lr_at(epoch, base_lr)`` gives the rate to use *during* that epoch, ``base_lr`` at epoch 0
  (PyTorch's closed forms: epoch ``e`` here is the rate PyTorch's optimizer holds after ``e``
  calls of ``scheduler.step()``). They keep no state, so one object can serve
  several runs.
* **Metric schedules** (:class:`ReduceLROnPlateau`) are stateful: ``reset(lr)`` at the start of a
  run, then ``step(metric)`` once per epoch returns the rate for the next epoch.

:class:`fastmlp.Trainer` sets ``optimizer.lr`` from the schedule before every epoch. By hand::

    sched = CosineAnnealingLR(T_max=50)
    for epoch in range(50):
        opt.lr = sched.lr_at(epoch, base_lr=1e-2)
        ...
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, Union

import numpy as np

from ._checks import check_int, check_real

__all__ = [
    "CosineAnnealingLR",
    "EpochSchedule",
    "ExponentialLR",
    "MultiStepLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "Schedule",
    "StepLR",
    "make_schedule",
]


# The history entries a metric schedule or early stopping can follow.
MONITORS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def _finite(value: float, name: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    value = float(value)
    if (
        not math.isfinite(value)
        or (lo is not None and value < lo)
        or (hi is not None and value > hi)
    ):
        where = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ValueError(f"{name}: expected a finite value in {where}, got {value}")
    return value


class EpochSchedule:
    """Base class of the epoch schedules: subclasses define ``_lr(epoch, base_lr)``.

    ``base_lr`` given here is used when ``lr_at`` is called without one; otherwise the caller
    (the Trainer: the optimizer's rate when the Trainer was built) supplies it.
    """

    def __init__(self, base_lr: float | None = None) -> None:
        self.base_lr = None if base_lr is None else _finite(base_lr, "base_lr", lo=0.0)

    def _lr(self, epoch: int, base_lr: float) -> float:
        raise NotImplementedError

    def lr_at(self, epoch: int, base_lr: float | None = None) -> float:
        """Learning rate for ``epoch`` (0-based), given the rate ``base_lr`` of epoch 0."""
        base = self.base_lr if base_lr is None else _finite(base_lr, "base_lr", lo=0.0)
        if base is None:
            raise ValueError(f"base_lr: {type(self).__name__} has no base rate; pass base_lr=")
        return self._lr(check_int(epoch, "epoch", 0), base)

    def _fields(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "base_lr"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._fields().items())
        return f"{type(self).__name__}({args})"


def _decayed(base_lr: float, gamma: float, n: int) -> float:
    """``base_lr * gamma ** n``, inf where that is beyond a float (PyTorch's epoch-by-epoch products
    reach inf there; the Trainer then names the schedule and the epoch) rather than the
    OverflowError of ``gamma ** n`` alone, which may overflow where the product does not."""
    try:
        return base_lr * gamma**n
    except OverflowError:
        if base_lr == 0.0:
            return 0.0
        try:  # gamma > 1 here: the logs are defined
            return math.exp(math.log(base_lr) + n * math.log(gamma))
        except OverflowError:
            return math.inf


class StepLR(EpochSchedule):
    """Decay by ``gamma`` every ``step_size`` epochs:

    ``lr(e) = base_lr * gamma ** (e // step_size)``.
    """

    def __init__(self, step_size: int, gamma: float = 0.1, base_lr: float | None = None) -> None:
        super().__init__(base_lr)
        self.step_size = check_int(step_size, "step_size", 1)
        self.gamma = _finite(gamma, "gamma", lo=0.0)

    def _lr(self, epoch: int, base_lr: float) -> float:
        return _decayed(base_lr, self.gamma, epoch // self.step_size)


class MultiStepLR(EpochSchedule):
    """Multiply by ``gamma`` at each milestone ("divide by 10 at epochs 30 and 60"):

    ``lr(e) = base_lr * gamma ** |{m in milestones : m <= e}|``; a milestone listed twice counts
    twice, as in PyTorch.
    """

    def __init__(
        self, milestones: Iterable[int], gamma: float = 0.1, base_lr: float | None = None
    ) -> None:
        super().__init__(base_lr)
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Iterable):
            raise TypeError(
                f"milestones: expected a list of epochs like [30, 60], "
                f"got {type(milestones).__name__}"
            )
        ms = list(milestones)
        self.milestones = sorted(check_int(m, "milestones", 1) for m in ms)
        self.gamma = _finite(gamma, "gamma", lo=0.0)

    def _lr(self, epoch: int, base_lr: float) -> float:
        return _decayed(base_lr, self.gamma, bisect.bisect_right(self.milestones, epoch))


class ExponentialLR(EpochSchedule):
    """Decay by ``gamma`` every epoch: ``lr(e) = base_lr * gamma ** e``."""

    def __init__(self, gamma: float, base_lr: float | None = None) -> None:
        super().__init__(base_lr)
        self.gamma = _finite(gamma, "gamma", lo=0.0)

    def _lr(self, epoch: int, base_lr: float) -> float:
        return _decayed(base_lr, self.gamma, epoch)


class PolynomialLR(EpochSchedule):
    """Polynomial decay to zero over ``total_epochs`` (YOLO's "polynomial rate decay with a power
    of 4"; PyTorch's ``PolynomialLR`` with ``total_iters=total_epochs``):

    ``lr(e) = base_lr * (1 - min(e, total_epochs) / total_epochs) ** power``, so the rate is 0
    from epoch ``total_epochs`` on (for ``power > 0``; ``power = 0`` keeps ``base_lr``, as
    ``0 ** 0 = 1`` does in PyTorch).
    """

    def __init__(self, total_epochs: int, power: float = 1.0, base_lr: float | None = None) -> None:
        super().__init__(base_lr)
        self.total_epochs = check_int(total_epochs, "total_epochs", 1)
        self.power = _finite(power, "power", lo=0.0)

    def _lr(self, epoch: int, base_lr: float) -> float:
        return base_lr * (1.0 - min(epoch, self.total_epochs) / self.total_epochs) ** self.power


class CosineAnnealingLR(EpochSchedule):
    """Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` epochs (SGDR without
    restarts; PyTorch's closed form):

    ``lr(e) = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2``.

    Past ``T_max`` the cosine continues, rising back to ``base_lr`` at ``2 T_max`` (as PyTorch
    does); set ``T_max`` to the number of epochs to end at ``eta_min``.
    """

    def __init__(self, T_max: int, eta_min: float = 0.0, base_lr: float | None = None) -> None:
        super().__init__(base_lr)
        self.T_max = check_int(T_max, "T_max", 1)
        self.eta_min = _finite(eta_min, "eta_min", lo=0.0)

    def _lr(self, epoch: int, base_lr: float) -> float:
        cos = math.cos(math.pi * epoch / self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * (1.0 + cos) / 2.0


class ReduceLROnPlateau:
    """Multiply the rate by ``factor`` when a monitored metric stops improving (PyTorch's
    ``ReduceLROnPlateau``, same rules):

    * ``mode="min"``, ``threshold_mode="rel"``: a value ``a`` improves on the best ``b`` if
      ``a < b * (1 - threshold)``; ``"abs"``: if ``a < b - threshold``. ``mode="max"`` mirrors
      this (``a > b * (1 + threshold)``, ``a > b + threshold``). NaN never improves.
    * After more than ``patience`` epochs in a row without improvement:
      ``lr <- max(lr * factor, min_lr)`` (skipped if that changes it by less than ``eps``), the
      count restarts, and the next ``cooldown`` epochs are not counted.

    ``monitor`` names the history entry the Trainer feeds to :meth:`step` (``"val_loss"``,
    ``"val_accuracy"``, ``"train_loss"``, ...); ``mode=None`` picks ``"max"`` for accuracies and
    ``"min"`` otherwise.
    """

    def __init__(
        self,
        mode: str | None = None,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
        monitor: str = "val_loss",
    ) -> None:
        if monitor not in MONITORS:
            raise ValueError(f"monitor: expected one of {', '.join(MONITORS)}, got {monitor!r}")
        if mode is None:
            mode = "max" if "acc" in monitor else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode: expected 'rel' or 'abs', got {threshold_mode!r}")
        factor = _finite(factor, "factor")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor: expected 0 < factor < 1, got {factor}")
        self.monitor = monitor
        self.mode = mode
        self.factor = factor
        self.patience = check_int(patience, "patience", 0)
        self.threshold = _finite(threshold, "threshold", lo=0.0)
        self.threshold_mode = threshold_mode
        self.cooldown = check_int(cooldown, "cooldown", 0)
        self.min_lr = _finite(min_lr, "min_lr", lo=0.0)
        self.eps = _finite(eps, "eps", lo=0.0)
        self.lr: float | None = None
        self.reset(None)

    def __repr__(self) -> str:
        return (
            f"ReduceLROnPlateau(monitor={self.monitor!r}, mode={self.mode!r}, "
            f"factor={self.factor}, patience={self.patience}, threshold={self.threshold}, "
            f"threshold_mode={self.threshold_mode!r}, cooldown={self.cooldown}, "
            f"min_lr={self.min_lr})"
        )

    def reset(self, lr: float | None) -> None:
        """Start a run at rate ``lr``: forget the best value and the counters."""
        self.lr = None if lr is None else _finite(lr, "lr", lo=0.0)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    _STATE_KEYS = ("lr", "best", "num_bad_epochs", "cooldown_counter")

    def state_dict(self) -> dict[str, Any]:
        """Where the run stands (rate, best value, counters), to resume it with
        :meth:`load_state_dict` (as PyTorch's); the settings are not included."""
        return {k: getattr(self, k) for k in self._STATE_KEYS}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back a :meth:`state_dict`; ValueError naming what is missing or out of range,
        with the schedule unchanged."""
        if not isinstance(state, Mapping) or set(state) != set(self._STATE_KEYS):
            raise ValueError(
                f"state: expected a ReduceLROnPlateau.state_dict() with keys "
                f"{', '.join(self._STATE_KEYS)}"
            )
        lr = None if state["lr"] is None else _finite(state["lr"], "state['lr']", lo=0.0)
        best = check_real(state["best"], "state['best']", finite=False)
        if math.isnan(best):
            raise ValueError("state['best']: expected a number or +-inf, got nan")
        bad = check_int(state["num_bad_epochs"], "state['num_bad_epochs']", 0)
        cooldown = check_int(state["cooldown_counter"], "state['cooldown_counter']", 0)
        self.lr, self.best, self.num_bad_epochs, self.cooldown_counter = lr, best, bad, cooldown

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            ref = (
                best * (1.0 - self.threshold)
                if self.threshold_mode == "rel"
                else best - self.threshold
            )
            return a < ref
        ref = (
            best * (1.0 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold
        )
        return a > ref

    def step(self, metric: float) -> float:
        """Record this epoch's ``metric``; return the learning rate for the next epoch."""
        if self.lr is None:
            raise RuntimeError("ReduceLROnPlateau: call reset(lr) before step()")
        current = float(metric)
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.lr


# What Trainer(schedule=...) takes besides a name: an epoch schedule or a metric schedule.
Schedule = Union[EpochSchedule, ReduceLROnPlateau]

_NAMES: dict[str, type] = {
    "step": StepLR,
    "multistep": MultiStepLR,
    "exponential": ExponentialLR,
    "poly": PolynomialLR,
    "polynomial": PolynomialLR,
    "cosine": CosineAnnealingLR,
    "plateau": ReduceLROnPlateau,
}


def make_schedule(name_or_obj: str | Schedule | None, **kwargs: Any) -> Schedule | None:
    """Resolve a schedule from its name (``"step"``, ``"multistep"``, ``"exponential"``,
    ``"poly"``, ``"cosine"``, ``"plateau"``) and constructor arguments, or pass an object through.

    ``make_schedule("cosine", T_max=30)`` is ``CosineAnnealingLR(T_max=30)``; ``None`` gives
    ``None`` (constant rate). An object must have ``lr_at(epoch, base_lr)`` or
    ``reset(lr)`` + ``step(metric)``; keyword arguments are refused with an object.
    """
    if name_or_obj is None:
        if kwargs:
            raise ValueError("schedule: keyword arguments given without a schedule name")
        return None
    if isinstance(name_or_obj, str):
        key = name_or_obj.strip().lower()
        if key not in _NAMES:
            raise ValueError(
                f"schedule: unknown schedule {name_or_obj!r}; known: {', '.join(sorted(_NAMES))}"
            )
        cls = _NAMES[key]
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise TypeError(f"schedule: {name_or_obj!r} ({cls.__name__}): {exc}") from None
    if kwargs:
        raise ValueError("schedule: keyword arguments are only for a schedule given by name")
    if isinstance(name_or_obj, type):
        raise TypeError(
            f"schedule: got the class {name_or_obj.__name__}; pass an instance, "
            f"e.g. {name_or_obj.__name__}(...), or a name"
        )
    if callable(getattr(name_or_obj, "lr_at", None)) or (
        callable(getattr(name_or_obj, "step", None))
        and callable(getattr(name_or_obj, "reset", None))
    ):
        return name_or_obj
    raise TypeError(
        f"schedule: expected a name or an object with lr_at(epoch, base_lr) or reset()/step(), "
        f"got {type(name_or_obj).__name__}"
    )
