"""Optimizers for :class:`fastmlp.MLP`, with PyTorch's ``torch.optim`` update rules.

An optimizer is bound to one model and owns its state (momentum, moments) as flat float32 buffers
in C++ (``csrc/engine/optimizer_state.h``), laid out like the model's parameters and allocated on
the first step. It does nothing by itself: ``model.train_step(x, y, optimizer=opt)`` computes the
gradients and applies the update in the same C++ call, in one pass over all parameters. All
parameters (biases and PReLU slopes included) share the hyperparameters, and weight decay applies
to biases too, as PyTorch's default.

Notation: ``p`` parameter, ``g`` gradient, ``t`` the step number (from 1), ``lr`` the learning
rate. Every rule first folds regularisation into the gradient (coupled L2 and L1)::

    g' = g + weight_decay * p + l1 * sign(p)

that is, the gradient of ``loss + (weight_decay / 2) * sum(p^2) + l1 * sum(|p|)``, where ``loss``
is the mean over the batch (the course notes' ``lambda R(W)`` with ``R = sum(W^2)`` is
``weight_decay = 2 * lambda`` when their loss is a mean too). (AdamW instead decays the weights
directly.) AdaGrad, RMSProp and Adam are PyTorch's (squared gradients, square roots, Adam's bias
correction), not the course slides' simplified ``|g|`` forms: see :mod:`fastmlp.reference.optim`.

``opt.lr`` may be changed between steps (that is how :mod:`fastmlp.schedules` works); the other
hyperparameters are fixed at construction and listed in ``opt.defaults`` (read-only; setting
``opt.momentum`` and the like raises ``AttributeError``). ``opt.step_count`` counts the updates
applied; a step that raises ``FloatingPointError`` is not counted and changes nothing. An optimizer
cannot be copied (``copy.copy``, ``copy.deepcopy``, pickle): build a new one for the model.

Checkpoints: ``opt.state_dict()`` returns the step count, ``lr`` and a copy of the state buffers
(plain Python and NumPy values, for ``pickle``), and ``opt.load_state_dict(state)`` puts them into
an optimizer of the same class and hyperparameters for a model of the same size, so that training
resumed from ``model.save`` + ``opt.state_dict()`` takes exactly the steps it would have taken::

    pickle.dump(opt.state_dict(), f); model.save("model.npz")          # save
    model = fm.load("model.npz"); opt = fm.optim.Adam(model, lr=1e-3)   # resume
    opt.load_state_dict(pickle.load(f))

That is a loop of ``train_step`` calls. A :class:`fastmlp.Trainer` run also has an epoch count, a
schedule, a shuffling Generator and early stopping: save :meth:`fastmlp.Trainer.state_dict`
beside the two and give it back with ``load_state_dict`` (without it, a new Trainer would start
its schedule and its shuffles over, from the optimizer's current rate).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

import numpy as np

from . import _core
from ._checks import (
    check_bool,
    check_int,
    check_not_masked,
    check_positive,
    check_real,
    check_unit_interval,
    to_float32,
)

__all__ = ["SGD", "AdaGrad", "Adam", "AdamW", "Optimizer", "RMSProp"]


def _nonneg(value: object, name: str) -> float:
    v = check_real(value, name)
    if v < 0.0:
        raise ValueError(f"{name}: expected a value >= 0, got {v}")
    return v


def check_lr(value: object) -> float:
    """``value`` as a learning rate: a real number >= 0, finite in float32 (the engine's
    precision); the error names ``lr``."""
    return _nonneg(value, "lr")


def _betas(betas: object) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
    return check_unit_interval(betas[0], "betas[0]"), check_unit_interval(betas[1], "betas[1]")


def _as_tuple(value: object) -> object:
    """A pair such as ``betas`` as a tuple, whether it was saved as a tuple, list or array."""
    return tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else value


# The state buffers that hold running sums of squares: >= 0, and +inf is a state a step can leave
# (AdaGrad's sum may outgrow float32 while the weights stay finite). The others are finite.
_SQUARE_BUFFERS = frozenset({"sum", "square_avg", "exp_avg_sq"})


def _state_buffer(buffer: object, name: str) -> np.ndarray:
    """A saved state buffer as a float32 array, checked: 1-D floats that float32 holds exactly
    (``state_dict``'s arrays, or lists of their values), no NaN, sums of squares >= 0, the other
    buffers finite. Its length is the engine's to check."""
    check_not_masked(buffer, name)
    array = np.asarray(buffer)
    if array.dtype.kind != "f":
        raise TypeError(f"{name}: expected an array of floats, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {array.shape}")
    # A value beyond float32's range (1e39) is named there, with no overflow warning of the cast.
    values = to_float32(array, name)
    if values is array:  # a private copy, as the checks below and the engine must see one state
        values = array.copy()
    if not np.array_equal(values, array, equal_nan=True):
        raise ValueError(
            f"{name}: holds values that float32 cannot represent (the state is float32)"
        )
    if np.isnan(values).any():
        raise ValueError(f"{name}: the saved state holds NaN")
    if name in _SQUARE_BUFFERS:
        if (values < 0).any():
            raise ValueError(f"{name}: a running sum of squares, expected values >= 0")
    elif not np.isfinite(values).all():
        raise ValueError(f"{name}: the saved state holds infinite values")
    return values  # to_float32's C-contiguous result, or a copy of it


def check_built_for(optimizer: Any, model: Any) -> None:
    """Raise ``ValueError`` unless ``optimizer`` was built for ``model`` on the device the model is
    on now (an optimizer's state lives on the device of the model it was made for; ``MLP.to``
    builds a new engine). Objects without ``model`` / ``device`` attributes pass (duck typing:
    :class:`fastmlp.Trainer` takes MLP-like models)."""
    if getattr(optimizer, "model", model) is not model:
        raise ValueError(
            f"optimizer: it was built for another model; build it for this one, e.g. "
            f"{type(optimizer).__name__}(model, ...)"
        )
    device = getattr(model, "device", None)
    if getattr(optimizer, "device", device) != device:
        raise ValueError(
            f"optimizer: it was built while the model was on {optimizer.device!r}, and the "
            f"model is now on {device!r}; build the optimizer after model.to()"
        )


def _state_class(model: Any) -> Any:
    """The engine's OptimizerState class for the device of ``model`` (CPU or CUDA)."""
    if model.device == "cpu":
        return _core.OptimizerState
    from . import _cuda  # type: ignore[attr-defined]

    return _cuda.OptimizerState


class Optimizer:
    """Base class: the model it updates, its C++ state, ``lr``, ``step_count`` and ``defaults``."""

    def __init__(self, model: Any, state: Any, lr: float, defaults: dict[str, Any]) -> None:
        self.model = model
        self.device = model.device  # its state lives there (see MLP.to)
        self._state = state
        self._lr = lr  # as given; the engine holds it rounded to float32
        # Held across the two writes of the lr setter: two threads setting lr at once could leave
        # the engine with one rate and opt.lr reporting the other (44 of 3000 trials).
        self._lr_lock = threading.Lock()
        # Read-only: the engine took these values at construction, so an edit would change
        # nothing but what repr() shows.
        self._defaults: Mapping[str, Any] = MappingProxyType(dict(defaults))

    @property
    def defaults(self) -> Mapping[str, Any]:
        """The hyperparameters other than ``lr``, as given at construction (read-only)."""
        return self._defaults

    def __setattr__(self, name: str, value: Any) -> None:
        # opt.momentum = 0.0 would otherwise add an attribute the engine never reads.
        if name in self.__dict__.get("_defaults", ()):
            raise AttributeError(
                f"{name}: fixed at construction (see opt.defaults); only lr can change between "
                f"steps: build a new {type(self).__name__} for another {name}"
            )
        super().__setattr__(name, value)

    def __copy__(self) -> NoReturn:
        # Without this, copy.copy would share self._state: stepping or setting lr on the copy
        # would change the original (deepcopy and pickle already fail on the C++ state).
        name = type(self).__name__
        raise TypeError(
            f"cannot copy an optimizer ({name}): the copy would share its C++ state (lr, step "
            f"count, momentum or moments) with the original; build a new one instead: "
            f"{name}(model, lr=opt.lr, **opt.defaults)"
        )

    @staticmethod
    def _check_model(model: object) -> None:
        from .nn import MLP

        if not isinstance(model, MLP):
            raise TypeError(f"model: expected a fastmlp.MLP, got {type(model).__name__}")

    @property
    def lr(self) -> float:
        """The learning rate (read/write; the engine uses it rounded to float32)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        lr = check_lr(value)
        with self._lr_lock:
            self._state.lr = lr
            self._lr = lr

    @property
    def step_count(self) -> int:
        """Number of updates applied so far."""
        return int(self._state.step)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {"lr": self.lr, **self.defaults}.items())
        return f"{type(self).__name__}({args})"

    def state_dict(self) -> dict[str, Any]:
        """A copy of the optimizer's state, to resume training from (as PyTorch's ``state_dict``).

        Keys: ``"optimizer"`` (the class name), ``"lr"``, ``"defaults"`` (the other
        hyperparameters), ``"step"`` (updates applied), ``"num_parameters"`` (the parameter count
        the buffers are laid out for; None before the first step) and ``"state"``: the state
        buffers by PyTorch's names (``momentum_buffer``; AdaGrad ``sum``; RMSProp
        ``square_avg``, ``momentum_buffer``, ``grad_avg``; Adam ``exp_avg``, ``exp_avg_sq``),
        each a float32 array of ``num_parameters`` values in the order of
        ``model.get_weights()`` flattened (``{}`` before the first step or for plain SGD).
        """
        step, size, buffers = self._state.export_state()
        return {
            "optimizer": type(self).__name__,
            "lr": self.lr,
            "defaults": dict(self.defaults),
            "step": int(step),
            "num_parameters": int(size) if size >= 0 else None,
            "state": dict(buffers),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`: step count, state buffers and ``lr``.

        The state must come from an optimizer of this class with the same hyperparameters
        (``defaults``) for a model with as many parameters; its buffers must be float32 values
        (arrays, or lists of their values) of that size, without NaN, the sums of squares >= 0
        and the others finite. Anything else raises ``TypeError`` / ``ValueError`` naming what
        does not fit, and leaves this optimizer unchanged. ``lr`` and ``step`` must be Python or
        NumPy scalars (``np.savez`` turns them into 0-d arrays: take ``.item()``).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict: expected a mapping from Optimizer.state_dict(), got "
                f"{type(state_dict).__name__}"
            )
        keys = ("optimizer", "lr", "defaults", "step", "num_parameters", "state")
        missing = [k for k in keys if k not in state_dict]
        if missing:
            raise ValueError(f"state_dict: missing {', '.join(map(repr, missing))}")
        name = type(self).__name__
        if state_dict["optimizer"] != name:
            raise ValueError(
                f"state_dict: saved from {state_dict['optimizer']!r}, this optimizer is {name}"
            )
        saved = state_dict["defaults"]
        if not isinstance(saved, Mapping) or set(saved) != set(self.defaults):
            raise ValueError(f"defaults: expected the keys {sorted(self.defaults)}, got {saved!r}")
        for key, value in self.defaults.items():
            if _as_tuple(saved[key]) != _as_tuple(value):
                raise ValueError(
                    f"{key}: the state was saved with {saved[key]!r}, this {name} has {value!r} "
                    f"(build the optimizer with the saved hyperparameters)"
                )
        lr = _nonneg(state_dict["lr"], "lr")
        step = check_int(state_dict["step"], "step", 0, 2**63 - 1)
        size = state_dict["num_parameters"]
        if size is not None:
            size = check_int(size, "num_parameters", 0)
        if size is not None and size != self.model.num_parameters:
            raise ValueError(
                f"num_parameters: the state is for {size} parameters, the model has "
                f"{self.model.num_parameters}"
            )
        buffers = state_dict["state"]
        if not isinstance(buffers, Mapping):
            raise TypeError(f"state: expected a mapping of arrays, got {type(buffers).__name__}")
        # A state without steps has no buffers: the engine refuses any given with it.
        checked = {
            str(key): buffer if size is None else _state_buffer(buffer, str(key))
            for key, buffer in buffers.items()
        }
        # The engine checks the names and sizes, and replaces nothing unless all of it fits.
        self._state.restore_state(step, -1 if size is None else size, checked)
        self.lr = lr


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``::

        g' = g + weight_decay * p + l1 * sign(p)
        b  = g'  on the first step,  else  b = momentum * b + (1 - dampening) * g'
        d  = g' + momentum * b  if nesterov  else  b          (d = g' when momentum == 0)
        p  = p - lr * d

    Momentum: Polyak (1964); Nesterov as in Sutskever et al., "On the importance of
    initialization and momentum in deep learning", ICML 2013
    (https://proceedings.mlr.press/v28/sutskever13.html).
    """

    def __init__(
        self,
        model: Any,
        lr: float = 0.01,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        l1: float = 0.0,
    ) -> None:
        self._check_model(model)
        lr = _nonneg(lr, "lr")
        momentum = _nonneg(momentum, "momentum")
        dampening = check_unit_interval(dampening, "dampening", allow_one=True)
        nesterov = check_bool(nesterov, "nesterov")
        if nesterov and (momentum <= 0.0 or dampening != 0.0):
            raise ValueError("nesterov: needs momentum > 0 and dampening == 0 (as PyTorch)")
        defaults = {
            "momentum": momentum,
            "dampening": dampening,
            "nesterov": nesterov,
            "weight_decay": _nonneg(weight_decay, "weight_decay"),
            "l1": _nonneg(l1, "l1"),
        }
        super().__init__(model, _state_class(model).sgd(lr=lr, **defaults), lr, defaults)


class AdaGrad(Optimizer):
    """AdaGrad, as ``torch.optim.Adagrad``::

        g'  = g + weight_decay * p + l1 * sign(p)
        clr = lr / (1 + (t - 1) * lr_decay)
        s   = s + g'^2
        p   = p - clr * g' / (sqrt(s) + eps)

    Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011 (https://jmlr.org/papers/v12/duchi11a.html).
    """

    def __init__(
        self,
        model: Any,
        lr: float = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        eps: float = 1e-10,
        l1: float = 0.0,
    ) -> None:
        self._check_model(model)
        lr = _nonneg(lr, "lr")
        defaults = {
            "lr_decay": _nonneg(lr_decay, "lr_decay"),
            "weight_decay": _nonneg(weight_decay, "weight_decay"),
            "eps": check_positive(eps, "eps"),
            "l1": _nonneg(l1, "l1"),
        }
        super().__init__(model, _state_class(model).adagrad(lr=lr, **defaults), lr, defaults)


class RMSProp(Optimizer):
    """RMSProp, as ``torch.optim.RMSprop`` (but for the clamp below)::

        g' = g + weight_decay * p + l1 * sign(p)
        v  = alpha * v + (1 - alpha) * g'^2
        centered: a = alpha * a + (1 - alpha) * g',  denom = sqrt(max(v - a^2, 0)) + eps
        else:     denom = sqrt(v) + eps
        momentum > 0: b = momentum * b + g' / denom,  p = p - lr * b
        else:         p = p - lr * g' / denom

    One deliberate difference from PyTorch: ``v - a^2`` (a variance, non-negative in exact
    arithmetic) is clamped at 0 before the square root, where float32 rounding can make it
    negative and PyTorch gives NaN.

    Tieleman & Hinton, Coursera "Neural Networks for Machine Learning", lecture 6.5
    (https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf); centered
    variant: Graves, "Generating Sequences With Recurrent Neural Networks", 2013
    (https://arxiv.org/abs/1308.0850).
    """

    def __init__(
        self,
        model: Any,
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        l1: float = 0.0,
    ) -> None:
        self._check_model(model)
        lr = _nonneg(lr, "lr")
        defaults = {
            "alpha": check_unit_interval(alpha, "alpha"),
            "eps": check_positive(eps, "eps"),
            "weight_decay": _nonneg(weight_decay, "weight_decay"),
            "momentum": _nonneg(momentum, "momentum"),
            "centered": check_bool(centered, "centered"),
            "l1": _nonneg(l1, "l1"),
        }
        super().__init__(model, _state_class(model).rmsprop(lr=lr, **defaults), lr, defaults)


class Adam(Optimizer):
    """Adam with coupled L2 weight decay, as ``torch.optim.Adam``::

        g' = g + weight_decay * p + l1 * sign(p)
        m  = beta1 * m + (1 - beta1) * g'
        v  = beta2 * v + (1 - beta2) * g'^2
        p  = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015
    (https://arxiv.org/abs/1412.6980).
    """

    _decoupled = False

    def __init__(
        self,
        model: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        l1: float = 0.0,
    ) -> None:
        self._check_model(model)
        lr = _nonneg(lr, "lr")
        beta1, beta2 = _betas(betas)
        defaults = {
            "betas": (beta1, beta2),
            "eps": check_positive(eps, "eps"),
            "weight_decay": _nonneg(weight_decay, "weight_decay"),
            "l1": _nonneg(l1, "l1"),
        }
        state = _state_class(model).adam(
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=defaults["eps"],
            weight_decay=defaults["weight_decay"],
            decoupled_weight_decay=self._decoupled,
            l1=defaults["l1"],
        )
        super().__init__(model, state, lr, defaults)


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``::

        g' = g + l1 * sign(p)             (sign of p before the decay; no weight decay in g')
        p  = p * (1 - lr * weight_decay)
        then the Adam update of this decayed p with g'.

    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019
    (https://arxiv.org/abs/1711.05101).
    """

    _decoupled = True

    def __init__(
        self,
        model: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        l1: float = 0.0,
    ) -> None:
        super().__init__(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, l1=l1)
