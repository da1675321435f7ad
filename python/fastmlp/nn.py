"""The user-facing model: :class:`MLP`, a multilayer perceptron trained by the C++ engine.

The model is a thin handle on ``fastmlp._core.Network`` (``csrc/engine/network.h``; with
``device="cuda"``, ``fastmlp._cuda.Network``, ``csrc/engine/network_cuda.h``), which keeps
the parameters, gradients and activations in flat float32 buffers and runs a whole training step
(forward, loss, backward, optimizer update) in one call with the GIL released. This module only
converts and checks arguments, initialises the weights, and saves and loads models.

Layers compute ``z = h @ W + b`` with ``W`` of shape ``(in, out)``; hidden layers apply an
activation, then (in training mode, in :meth:`MLP.train_step` and :meth:`MLP.loss_and_gradients`)
inverted dropout. The last layer is linear: its outputs are logits, and the loss applies the
softmax or sigmoid.

Losses (``loss=``; formulas in :mod:`fastmlp.reference.network` and ``csrc/cpu/losses.h``):

* ``"cross_entropy"``: softmax + cross-entropy, ``y`` integer labels ``(n,)``; optional
  ``label_smoothing`` (PyTorch's convention, targets ``(1 - eps) onehot + eps / classes``).
* ``"mse"``: mean squared error over all outputs, ``y`` float ``(n, out)`` (``(n,)`` if out == 1).
* ``"hinge"``: multiclass (Weston-Watkins) hinge with margin 1, ``y`` integer labels ``(n,)``.
* ``"bce"``: sigmoid + binary cross-entropy on logits, ``y`` float in ``[0, 1]`` of shape
  ``(n, out)`` (``(n,)`` if out == 1).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import zipfile
from collections.abc import Callable, Sequence
from typing import IO, Any, Union, overload

import numpy as np

from . import _core
from ._checks import (
    as_float_input,
    as_labels,
    check_bool,
    check_finite,
    check_int,
    check_nonempty,
    check_real,
    float32_rounding_note,
    in_unit_interval,
    names_folder,
)
from .ops._activations import DEFAULT_ALPHA, resolve_activation, sigmoid
from .optim import Optimizer, check_built_for

__all__ = ["INITS", "LOSSES", "MLP", "load"]

# Loss name -> fastmlp::LossKind (csrc/engine/network.h).
LOSSES: dict[str, int] = {"cross_entropy": 0, "mse": 1, "hinge": 2, "bce": 3}
_LABEL_LOSSES = ("cross_entropy", "hinge")
INITS = ("he", "xavier", "normal", "uniform")
_FORMAT = "fastmlp.MLP"
_FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]

# The most parameters (weights and biases) a model may have: 2**60 float32 values, 4 EiB, past
# what any machine addresses; the engine's limit (kMaxLayoutFloats, csrc/engine/layout.h).
_MAX_PARAMETERS = 2**60


def _check_loss(loss: object) -> str:
    if isinstance(loss, Optimizer):  # model.train_step(x, y, opt): the third argument is loss
        raise TypeError(
            f"loss: expected a loss name, got an optimizer ({type(loss).__name__}); pass the "
            "optimizer by keyword: model.train_step(x, y, optimizer=opt)"
        )
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss: unknown {loss!r}; known: {', '.join(map(repr, LOSSES))}")
    return loss


def _per_hidden(value: object, name: str, hidden: int) -> list:
    """A scalar repeated for every hidden layer, or a list with one entry per hidden layer."""
    if isinstance(value, (list, tuple)):
        if len(value) != hidden:
            raise ValueError(
                f"{name}: expected {hidden} entries (one per hidden layer), got {len(value)}"
            )
        return list(value)
    return [value] * hidden


def _weight_count(sizes: list[int]) -> int:
    """Weights and biases of the layers ``sizes`` (PReLU slopes not counted)."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _check_sizes(layer_sizes: object) -> list[int]:
    if isinstance(layer_sizes, np.ndarray) and layer_sizes.ndim == 1:
        layer_sizes = layer_sizes.tolist()  # NumPy integers become ints, anything else fails below
    if isinstance(layer_sizes, (str, bytes)) or not isinstance(layer_sizes, Sequence):
        raise TypeError(
            f"layer_sizes: expected a list of ints like [784, 256, 10], "
            f"got {type(layer_sizes).__name__}"
        )
    sizes = list(layer_sizes)
    if len(sizes) < 2:
        raise ValueError(f"layer_sizes: expected at least 2 sizes (in, out), got {sizes}")
    for i, s in enumerate(sizes):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"layer_sizes: entry {i} is {s!r}, expected an int")
        if s < 1:
            raise ValueError(f"layer_sizes: entry {i} is {s}, expected >= 1")
    sizes = [int(s) for s in sizes]
    # Python ints do not overflow: refuse here, with the count, what NumPy would call "array is
    # too big" (and the engine, csrc/engine/layout.h, refuses on its own side too).
    count = _weight_count(sizes)
    if count > _MAX_PARAMETERS:
        raise ValueError(
            f"layer_sizes: {sizes} has {count} parameters, more than can be allocated "
            "(at most 2**60 float32 values)"
        )
    return sizes


def _check_device(device: object) -> str:
    """``"cpu"`` or ``"cuda"`` (``"cuda:0"`` is the same device); RuntimeError saying why when a
    GPU is asked for and none is usable."""
    if not isinstance(device, str):
        raise TypeError(f"device: expected a string such as 'cpu', got {type(device).__name__}")
    if device == "cpu":
        return "cpu"
    if device in ("cuda", "cuda:0"):
        from .cuda import _module

        try:
            _module()
        except RuntimeError as e:
            raise RuntimeError(f"device: {e}; use device='cpu'") from None
        return "cuda"
    if device.startswith("cuda:"):
        raise ValueError(
            f"device: only the first GPU ('cuda' or 'cuda:0') is supported, got {device!r}"
        )
    raise ValueError(f"device: unknown device {device!r}; known: 'cpu', 'cuda'")


def _engine(device: str) -> Any:
    """The compiled module holding the engine of ``device``: ``_core`` (CPU) or ``_cuda``."""
    if device == "cpu":
        return _core
    from . import _cuda  # type: ignore[attr-defined]

    return _cuda


def _resolve_activations(
    activation: object, activation_alpha: object, hidden: int
) -> tuple[list[str], list[float], list[int]]:
    """Names, alphas and C++ enum values, one per hidden layer."""
    names = _per_hidden(activation, "activation", hidden)
    for name in names:
        resolve_activation(name)  # ValueError "activation: unknown ..." for a bad name
    if isinstance(activation_alpha, (list, tuple)):
        alphas_in = _per_hidden(activation_alpha, "activation_alpha", hidden)
    else:
        if activation_alpha is not None and hidden and not any(n in DEFAULT_ALPHA for n in names):
            raise ValueError(
                f"activation_alpha: none of the activations {names} takes an alpha "
                f"(those that do: {', '.join(DEFAULT_ALPHA)})"
            )
        # A single alpha goes to the layers whose activation takes one.
        alphas_in = [activation_alpha if n in DEFAULT_ALPHA else None for n in names]
    kinds, alphas = [], []
    for name, alpha in zip(names, alphas_in):
        try:
            kind, a = resolve_activation(name, alpha)
        except (TypeError, ValueError) as exc:
            msg = str(exc)
            msg = msg[len("alpha") :] if msg.startswith("alpha") else ": " + msg
            raise type(exc)("activation_alpha" + msg) from None
        kinds.append(kind)
        alphas.append(a)
    return list(names), alphas, kinds


def _check_dropouts(dropout: object, hidden: int) -> list[float]:
    ps = _per_hidden(dropout, "dropout", hidden)
    for i, p in enumerate(ps):
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise TypeError(f"dropout: entry {i} is {p!r}, expected a float")
        if not in_unit_interval(float(p)):
            raise ValueError(
                f"dropout: entry {i} is {p}{float32_rounding_note(float(p))}, "
                "expected a probability in [0, 1)"
            )
    return [float(p) for p in ps]


def _init_weights(sizes: list[int], init: str, seed: int) -> list[np.ndarray]:
    """``[W_1, b_1, ...]`` drawn from ``np.random.default_rng(seed)`` layer by layer (float64
    draws, cast to float32); biases are zero."""
    rng = np.random.default_rng(seed)
    params: list[np.ndarray] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        shape = (fan_in, fan_out)
        if init == "he":
            w = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
        elif init == "xavier":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-bound, bound, shape)
        elif init == "normal":
            w = rng.normal(0.0, 0.01, shape)
        else:  # "uniform"
            bound = 1.0 / math.sqrt(fan_in)
            w = rng.uniform(-bound, bound, shape)
        params += [w.astype(np.float32), np.zeros(fan_out, dtype=np.float32)]
    return params


class MLP:
    """A multilayer perceptron ``layer_sizes[0] -> ... -> layer_sizes[-1]`` on the C++ engine.

    Parameters
    ----------
    layer_sizes:
        widths ``[in_features, hidden_1, ..., out_features]`` (at least 2 entries, all >= 1).
    activation:
        hidden-layer activation: ``"relu"``, ``"leaky_relu"``, ``"prelu"``, ``"elu"``,
        ``"sigmoid"``, ``"tanh"`` or ``"identity"``, or a list with one name per hidden layer.
        The output layer is always linear.
    dropout:
        probability of *dropping* each unit of a hidden layer's output (a float for all, or a
        list), applied in training mode only, with the kept units scaled by ``1 / (1 - p)``
        (inverted dropout, PyTorch's convention). The course notes' ``p`` is the probability of
        keeping a unit and scales at test time instead: their ``p = 0.8`` is ``dropout=0.2``.
    init:
        weight initialisation, drawn with ``np.random.default_rng(seed)``; biases are 0:
        ``"he"`` N(0, 2/fan_in) (He et al., 2015), ``"xavier"`` U(+-sqrt(6/(fan_in+fan_out)))
        (Glorot & Bengio, 2010), ``"normal"`` N(0, 0.01^2) (the course notes), ``"uniform"``
        U(+-1/sqrt(fan_in)) (PyTorch's nn.Linear default).
    seed:
        an int in ``[0, 2**64)``: seeds the initialisation and keys the dropout random numbers.
    device:
        ``"cpu"`` or ``"cuda"`` (the first GPU; RuntimeError saying why when none is usable).
        See :meth:`to`.
    activation_alpha:
        the leaky_relu slope (default 0.01), elu alpha (default 1.0) or PReLU initial slope
        (default 0.25, as PyTorch); a float for every layer that takes one, or a per-layer list.
    loss:
        the default loss of :meth:`train_step`, :meth:`evaluate`, :meth:`predict`, ...; a
        ``train_step`` with an explicit ``loss=`` also sets it.
    fused:
        on ``"cuda"``, let the engine run nets whose every width is at most 128 through the
        fused narrow-MLP kernels (one launch per pass; same results as the layer-by-layer
        path). ``False`` turns them off. No effect on the CPU. See :attr:`fused`.

    Parameters are float32 and laid out as ``get_weights()`` returns them:
    ``[W_1, b_1, ..., W_L, b_L]`` with ``W_l`` of shape ``(in, out)`` and ``b_l`` ``(out,)``,
    then one ``(1,)`` array per PReLU hidden layer holding its learned slope, in layer order.

    Dropout masks are reproducible: layer ``l`` of a training-mode pass uses
    ``fastmlp.reference.dropout_mask((n, width_l), p_l, seed=seed, offset=o)`` where ``o`` is
    :attr:`rng_offset` before the pass plus ``n * width`` of every earlier layer with
    ``dropout > 0`` (a layer with ``p = 0`` draws nothing); the pass then advances
    :attr:`rng_offset` by the total. A failed step leaves it as it was.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        activation: str | Sequence[str] = "relu",
        dropout: float | Sequence[float] = 0.0,
        init: str = "he",
        seed: int = 0,
        device: str = "cpu",
        activation_alpha: float | Sequence[float | None] | None = None,
        loss: str = "cross_entropy",
        fused: bool = True,
    ) -> None:
        sizes = _check_sizes(layer_sizes)
        hidden = len(sizes) - 2
        names, alphas, kinds = _resolve_activations(activation, activation_alpha, hidden)
        dropouts = _check_dropouts(dropout, hidden)
        if not isinstance(init, str) or init not in INITS:
            raise ValueError(f"init: unknown {init!r}; known: {', '.join(map(repr, INITS))}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed: expected an int in [0, 2**64), got {seed}")
        device = _check_device(device)
        self.loss = loss
        self._sizes = sizes
        self._activations = names
        self._alphas = alphas
        self._dropouts = dropouts
        self._init = init
        self._seed = int(seed)
        self._device = device
        self._training = True
        self._kinds = kinds
        self._shapes = [s for a, b in zip(sizes[:-1], sizes[1:]) for s in ((a, b), (b,))]
        self._shapes += [(1,) for name in names if name == "prelu"]
        prelu_alphas = [np.float32(a).reshape(1) for n, a in zip(names, alphas) if n == "prelu"]
        try:
            self._net = _engine(device).Network(sizes, kinds, alphas, dropouts, self._seed)
            self.fused = fused  # checks it and passes it to a CUDA engine
            self.set_weights(_init_weights(sizes, init, self._seed) + prelu_alphas)
        except MemoryError:  # the engine's says only "std::bad_alloc", NumPy's names no argument
            raise MemoryError(
                f"layer_sizes: {sizes} has {_weight_count(sizes):,} parameters, more than this "
                "machine could allocate"
            ) from None
        # Bound once: one lookup less per step. The CUDA engine has no fast path (its step copies
        # the batch to the device anyway); None sends every call through the checked path.
        self._step_fast = getattr(self._net, "train_step_fast", None)

    # ------------------------------------------------------------------ description
    @property
    def layer_sizes(self) -> list[int]:
        """``[in_features, hidden..., out_features]`` (a copy)."""
        return list(self._sizes)

    @property
    def activations(self) -> list[str]:
        """The activation of each hidden layer."""
        return list(self._activations)

    @property
    def activation_alphas(self) -> list[float]:
        """Each hidden layer's alpha (for PReLU, its *initial* slope; see :meth:`get_weights`)."""
        return list(self._alphas)

    @property
    def dropout(self) -> list[float]:
        """The dropout probability of each hidden layer."""
        return list(self._dropouts)

    @property
    def seed(self) -> int:
        """The seed of the initial weights and of the dropout masks."""
        return self._seed

    @property
    def init(self) -> str:
        """The initialisation the weights were drawn with ("he", "xavier", ...)."""
        return self._init

    @property
    def device(self) -> str:
        """Where the parameters, gradients and workspace live: ``"cpu"`` or ``"cuda"``."""
        return self._device

    def to(self, device: str) -> MLP:
        """Move the model to ``device`` (``"cpu"`` or ``"cuda"``) and return it. Weights, mode
        and dropout offset move with it; optimizers do not: build them after moving the model
        (as in PyTorch), since their state lives on the device of the model they were made for."""
        device = _check_device(device)
        if device == self._device:
            return self
        net = _engine(device).Network(
            self._sizes, self._kinds, self._alphas, self._dropouts, self._seed
        )
        flat, offset = self._net.snapshot()
        net.set_parameters(flat)
        net.rng_offset = int(offset)
        self._net = net
        self._step_fast = getattr(net, "train_step_fast", None)
        self._device = device
        self.fused = self._fused
        return self

    @property
    def fused(self) -> bool:
        """Whether the fused narrow-MLP CUDA kernels may run (see the ``fused`` argument). Which
        passes do run them on the current device: :meth:`uses_fused`."""
        return self._fused

    @fused.setter
    def fused(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"fused: expected True or False, got {type(value).__name__}")
        self._fused = value
        if self._device == "cuda":
            self._net.fused = value

    def uses_fused(self, training: bool = True) -> bool:
        """Whether the fused kernels run now for a training step in training mode
        (``training=True``: :meth:`train_step`, :meth:`loss_and_gradients`, ``Trainer.fit``) or
        for inference (``training=False``: eval-mode calls, :meth:`predict`, :meth:`evaluate`).
        Always False on the CPU. Inference takes every net whose widths are at most 128 (up to 8
        layers, within the GPU's shared memory per block); training also needs hidden
        activations other than identity and PReLU, and no dropout."""
        training = check_bool(training, "training")  # on every device: bool("no") is True
        if self._device != "cuda":
            return False
        return bool(self._net.uses_fused(training))

    @property
    def num_parameters(self) -> int:
        """Number of trainable scalars (weights, biases and PReLU slopes)."""
        return int(self._net.num_parameters)

    @property
    def loss(self) -> str:
        """The default loss (``"cross_entropy"``, ``"mse"``, ``"hinge"`` or ``"bce"``)."""
        return self._loss

    @loss.setter
    def loss(self, value: str) -> None:
        self._loss = _check_loss(value)
        self._loss_code = LOSSES[self._loss]  # cached for the train_step fast path

    @property
    def training(self) -> bool:
        """True in training mode (dropout on in train_step and loss_and_gradients)."""
        return self._training

    @property
    def rng_offset(self) -> int:
        """Dropout random-number offset: element draws made so far (see the class docstring)."""
        return int(self._net.rng_offset)

    @rng_offset.setter
    def rng_offset(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"rng_offset: expected an int, got {type(value).__name__}")
        if not 0 <= int(value) < 2**64:
            raise ValueError(f"rng_offset: expected an int in [0, 2**64), got {value}")
        self._net.rng_offset = int(value)

    def train(self, mode: bool = True) -> MLP:
        """Training mode (dropout active in train_step / loss_and_gradients); returns self."""
        # A bool only, as torch.nn.Module.train: bool("no") would switch training on.
        if not isinstance(mode, (bool, np.bool_)):
            raise TypeError(f"mode: expected True or False, got {type(mode).__name__}")
        self._training = bool(mode)
        return self

    def eval(self) -> MLP:
        """Evaluation mode (no dropout anywhere); returns self."""
        return self.train(False)

    def __repr__(self) -> str:
        names = {
            "identity": "Identity()",
            "relu": "ReLU()",
            "sigmoid": "Sigmoid()",
            "tanh": "Tanh()",
        }
        lines = []
        for l, (a, b) in enumerate(zip(self._sizes[:-1], self._sizes[1:])):
            parts = [f"Linear(in_features={a}, out_features={b})"]
            if l < len(self._activations):
                act, alpha = self._activations[l], self._alphas[l]
                if act in names:
                    parts.append(names[act])
                elif act == "leaky_relu":
                    parts.append(f"LeakyReLU(negative_slope={alpha:g})")
                elif act == "elu":
                    parts.append(f"ELU(alpha={alpha:g})")
                else:
                    parts.append(f"PReLU(init={alpha:g})")
                if self._dropouts[l] > 0.0:
                    parts.append(f"Dropout(p={self._dropouts[l]:g})")
            lines.append(f"  ({l}): " + ", ".join(parts))
        return (
            "MLP(\n" + "\n".join(lines) + f"\n)  # loss={self._loss!r}, "
            f"parameters={self.num_parameters}, device={self._device!r}"
        )

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> list[np.ndarray]:
        """Float32 copies ``[W_1, b_1, ..., W_L, b_L, slope_1, ...]`` (slopes: PReLU layers)."""
        # One locked copy of the whole buffer: a step running on another thread cannot tear it.
        return self._unflatten(self._net.parameters())

    def _unflatten(self, flat: np.ndarray) -> list[np.ndarray]:
        """The flat engine layout (P,) as ``[W_1, b_1, ..., slope_1, ...]``, each array its own."""
        out, pos = [], 0
        for shape in self._shapes:
            size = math.prod(shape)
            out.append(flat[pos : pos + size].reshape(shape).copy())
            pos += size
        return out

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Replace every parameter; ``weights`` as :meth:`get_weights` returns them (any float
        dtype, converted to float32; shapes must match exactly; values must be finite)."""
        if isinstance(weights, np.ndarray) or not isinstance(weights, Sequence):
            raise TypeError(
                f"weights: expected a list of arrays like get_weights() returns, "
                f"got {type(weights).__name__}"
            )
        if len(weights) != len(self._shapes):
            raise ValueError(f"weights: expected {len(self._shapes)} arrays, got {len(weights)}")
        parts = []
        for i, (w, shape) in enumerate(zip(weights, self._shapes)):
            a = as_float_input(w, f"weights[{i}]")
            if a.shape != shape:
                raise ValueError(f"weights[{i}]: expected shape {shape}, got {a.shape}")
            check_finite(a, f"weights[{i}]")
            parts.append(a.reshape(-1))
        self._net.set_parameters(np.concatenate(parts).astype(np.float32, copy=False))

    # ------------------------------------------------------------------ argument checks
    def _x(self, x: object) -> np.ndarray:
        # No finiteness pass here: the engine checks x in forward/evaluate and diagnoses it when a
        # training step's loss or gradient check fires (csrc/engine/network.h explains why that
        # catches every NaN/inf); either way a bad x raises "x: contains NaN or infinite values".
        x = as_float_input(x, "x", ndim=2)
        if x.shape[1] != self._sizes[0]:
            raise ValueError(
                f"x: expected {self._sizes[0]} columns (the model's in_features), got {x.shape[1]}"
            )
        check_nonempty(x, "x")
        return x

    def _y(self, y: object, loss: str, n: int, name: str = "y") -> np.ndarray:
        out = self._sizes[-1]
        if loss in _LABEL_LOSSES:
            if out < 2:
                raise ValueError(f"loss: {loss!r} needs at least 2 outputs (classes), got {out}")
            return as_labels(y, name, n, out)
        t = as_float_input(y, name)
        if t.ndim == 1 and out == 1:
            t = t.reshape(-1, 1)
        if t.ndim != 2 or t.shape != (n, out):
            raise ValueError(
                f"{name}: expected shape ({n}, {out}) for loss {loss!r}, got {t.shape}"
            )
        check_finite(t, name)
        if loss == "bce" and (t.min() < 0.0 or t.max() > 1.0):
            raise ValueError(f"{name}: bce targets must lie in [0, 1]")
        return t

    def _label_smoothing(self, label_smoothing: object, loss: str) -> float:
        ls = check_real(label_smoothing, "label_smoothing")
        if not 0.0 <= ls <= 1.0:
            raise ValueError(f"label_smoothing: expected a value in [0, 1], got {ls}")
        if ls and loss != "cross_entropy":
            raise ValueError(f"label_smoothing: only 'cross_entropy' takes it, not {loss!r}")
        return ls

    # ------------------------------------------------------------------ inference
    def forward(self, x: np.ndarray, *, dropout: bool = False) -> np.ndarray:
        """Raw outputs (logits) ``(n, out)`` float32, in eval mode (no dropout) whatever the
        model's mode. ``dropout=True`` applies the training-mode dropout masks instead (drawn at
        :attr:`rng_offset`, which then advances, as a training step's would): averaging several
        such passes is Monte-Carlo dropout, the course notes' alternative to the expectation."""
        if not isinstance(dropout, (bool, np.bool_)):
            raise TypeError(f"dropout: expected a bool, got {type(dropout).__name__}")
        return self._net.forward(self._x(x), bool(dropout))

    __call__ = forward

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, per :attr:`loss`: softmax of the logits (cross_entropy, hinge)
        or elementwise sigmoid (bce; 1-D when there is one output). ValueError for mse."""
        if self._loss == "mse":
            raise ValueError(
                "loss: predict_proba needs a classification loss; the model's is 'mse'"
            )
        z = self.forward(x)
        if self._loss == "bce":
            # The library's stable sigmoid: (1 + tanh(z / 2)) / 2 would round to 0 for z < -17.
            p = sigmoid(z)
            return p[:, 0] if p.shape[1] == 1 else p
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions, per :attr:`loss`: the arg-max class (cross_entropy, hinge; int64 ``(n,)``),
        ``sigmoid > 0.5`` i.e. logit > 0 (bce; int64, 1-D when there is one output), or the
        outputs themselves (mse; float32, 1-D when there is one output, as scikit-learn's
        ``MLPRegressor.predict`` gives for 1-D targets: ``predict(x) - y`` with ``y`` of shape
        ``(n,)`` would otherwise broadcast to ``(n, n)``). :meth:`forward` always gives
        ``(n, outputs)``."""
        z = self.forward(x)
        if self._loss == "mse":
            return z[:, 0] if z.shape[1] == 1 else z
        if self._loss == "bce":
            p = (z > 0).astype(np.int64)
            return p[:, 0] if p.shape[1] == 1 else p
        return z.argmax(axis=1).astype(np.int64)

    # ------------------------------------------------------------------ training
    def _loss_or_default(self, loss: str | None) -> str:
        return self._loss if loss is None else _check_loss(loss)

    # optimizer is required, but it comes after the optional loss, which Python's own signature
    # cannot say; these overloads tell type checkers the two valid forms:
    # train_step(x, y, loss, optimizer) and train_step(x, y[, loss=...], optimizer=...).
    @overload
    def train_step(
        self,
        x: np.ndarray,
        y: np.ndarray,
        loss: str | None,
        optimizer: Optimizer,
        *,
        label_smoothing: float = ...,
    ) -> float: ...

    @overload
    def train_step(
        self,
        x: np.ndarray,
        y: np.ndarray,
        loss: str | None = ...,
        *,
        optimizer: Optimizer,
        label_smoothing: float = ...,
    ) -> float: ...

    def train_step(
        self,
        x: np.ndarray,
        y: np.ndarray,
        loss: str | None = None,
        optimizer: Optimizer | None = None,
        *,
        label_smoothing: float = 0.0,
    ) -> float:
        """One fused step (forward, loss, backward, ``optimizer`` update) on a mini-batch; returns
        the mean loss before the update. Dropout is applied in training mode.

        ``optimizer`` is required: a :mod:`fastmlp.optim` optimizer built for this model, passed
        by keyword or as the fourth argument (its ``None`` default only lets ``loss`` be left out
        before it, and raises ``TypeError``).
        ``loss=None`` uses :attr:`loss`; an explicit loss becomes the model's :attr:`loss`.
        A non-finite loss or gradient, or a gradient of 2^64 (1.8e19) or more with the optimizer's
        weight decay and L1 added, whose square the adaptive optimizers cannot hold in float32,
        raises ``FloatingPointError`` before anything
        changes (parameters, optimizer state and step count, dropout offset); when the cause is a
        NaN or inf in ``x`` or ``y`` it is ``ValueError`` naming the argument instead.

        Float32 C-contiguous ``x`` with int64 labels (or float32 targets) and no label smoothing
        take a fast path with no conversion or extra pass over the data in Python."""
        # Fast path: when x and y are already what the engine reads (float32 C-contiguous x, int64
        # labels or float32 targets of the right shapes) the binding checks them without creating
        # any Python object and runs the step; otherwise it returns None having done nothing, and
        # the checked path below converts the arguments or raises with their names.
        if (
            (loss is None or (type(loss) is str and loss == self._loss))
            and type(label_smoothing) in (float, int)
            and label_smoothing == 0
            and self._step_fast is not None
            # The binding takes any ndarray: a masked one (whose mask it would ignore) goes to
            # the checked path, which refuses it. isinstance only for subclasses: it costs.
            and (type(x) is np.ndarray or not isinstance(x, np.ma.MaskedArray))
            and (type(y) is np.ndarray or not isinstance(y, np.ma.MaskedArray))
            and isinstance(optimizer, Optimizer)
            and optimizer.model is self
            and optimizer.device == self._device
        ):
            value = self._step_fast(x, y, self._loss_code, self._training, optimizer._state)
            if value is not None:
                return value
        if isinstance(loss, Optimizer):  # train_step(x, y, opt): say so, not "optimizer: None"
            _check_loss(loss)
        if optimizer is None:
            raise TypeError(
                "optimizer: expected a fastmlp.optim optimizer (it is required), got None; e.g. "
                "model.train_step(x, y, optimizer=fastmlp.optim.SGD(model, lr=0.1))"
            )
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer: expected a fastmlp.optim optimizer, got {type(optimizer).__name__}"
            )
        check_built_for(optimizer, self)
        kind = self._loss_or_default(loss)
        xa = self._x(x)
        ya = self._y(y, kind, xa.shape[0])
        ls = self._label_smoothing(label_smoothing, kind)
        value = self._net.train_step(xa, ya, LOSSES[kind], ls, self._training, optimizer._state)
        self.loss = kind
        return value

    def _train_step_device(
        self,
        x: Any,
        y: Any,
        n: int,
        loss: str | None,
        optimizer: Any,
        label_smoothing: float,
        targets_checked: bool = False,
    ) -> float:
        """:meth:`train_step` on the first ``n`` rows of device arrays already on this model's
        GPU (``fastmlp.cuda.DeviceArray``: x float32 (rows, in); y int64 labels or float32
        targets, range-checked on the device unless ``targets_checked``: the caller validated
        them already). Used by :class:`fastmlp.Trainer` for CUDA models."""
        if self._device != "cuda":
            raise ValueError(
                f"x: device arrays need a model on 'cuda', this one is on {self._device!r}"
            )
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer: expected a fastmlp.optim optimizer, got {type(optimizer).__name__}"
            )
        check_built_for(optimizer, self)
        kind = self._loss_or_default(loss)
        ls = self._label_smoothing(label_smoothing, kind)
        value = self._net.train_step_device(
            x._buf,
            y._buf,
            int(n),
            LOSSES[kind],
            ls,
            self._training,
            optimizer._state,
            bool(targets_checked),
        )
        self.loss = kind
        return value

    def _take_train_counts(self) -> tuple[int, int]:
        """(correct, total) predictions of the train_steps since the last call (each step's own
        forward pass, before its update); resets them. Used by :class:`fastmlp.Trainer`."""
        correct, total = self._net.take_train_counts()
        return int(correct), int(total)

    def loss_and_gradients(
        self,
        x: np.ndarray,
        y: np.ndarray,
        loss: str | None = None,
        *,
        label_smoothing: float = 0.0,
    ) -> tuple[float, list[np.ndarray]]:
        """Mean loss and its gradients (float32 copies laid out like :meth:`get_weights`), with
        no update. In training mode dropout is applied (and :attr:`rng_offset` advances)."""
        kind = self._loss_or_default(loss)
        xa = self._x(x)
        ya = self._y(y, kind, xa.shape[0])
        ls = self._label_smoothing(label_smoothing, kind)
        # The gradients come back from the same locked engine call as the loss: read separately,
        # they could be those of a step another thread ran in between.
        value, flat = self._net.loss_and_gradients(xa, ya, LOSSES[kind], ls, self._training)
        return value, self._unflatten(flat)

    def evaluate(
        self, x: np.ndarray, y: np.ndarray, loss: str | None = None, batch_size: int = 4096
    ) -> dict[str, float | None]:
        """``{"loss": mean loss, "accuracy": fraction correct}`` in eval mode, ``batch_size`` rows
        at a time. Accuracy: arg-max == label (cross_entropy, hinge), (logit > 0) == (target > 0.5)
        per output (bce), None (mse). A non-finite loss is returned as is, not raised."""
        kind = self._loss_or_default(loss)
        # The engine takes an int64; any batch_size >= len(x) means the whole set at once.
        batch_size = check_int(batch_size, "batch_size", 1, 2**63 - 1)
        xa = self._x(x)
        ya = self._y(y, kind, xa.shape[0])
        value, correct, total = self._net.evaluate(xa, ya, LOSSES[kind], batch_size)
        return {"loss": float(value), "accuracy": correct / total if total else None}

    # ------------------------------------------------------------------ persistence
    def _snapshot(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        """The config and weights from one locked engine copy: read apart, a step on another
        thread could fall between them (the weights of step k with the dropout offset of k + 1)."""
        flat, offset = self._net.snapshot()
        return self._config(int(offset)), self._unflatten(flat)

    def _config(self, rng_offset: int) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "layer_sizes": self._sizes,
            "activation": self._activations,
            "activation_alpha": [
                a if n in DEFAULT_ALPHA else None for n, a in zip(self._activations, self._alphas)
            ],
            "dropout": self._dropouts,
            "init": self._init,
            "seed": self._seed,
            "loss": self._loss,
            "training": self._training,
            "rng_offset": rng_offset,
        }

    def __reduce__(self) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        # pickle and copy.deepcopy (a snapshot of the model, as PyTorch users take one): a model
        # of the same class with the same config, weights, mode, dropout offset and device, its
        # C++ engine rebuilt, and the attributes that a subclass or the user added (MLP's own
        # are rebuilt, not copied: the engine cannot be).
        extra = {k: v for k, v in vars(self).items() if k not in _MLP_ATTRIBUTES}
        config, weights = self._snapshot()
        args = (config, weights, self.device, self.fused, type(self))
        return _restore, args, extra

    def save(self, path: PathLike) -> None:
        """Write the weights and a JSON config to an ``.npz`` file (NumPy adds the suffix when
        missing). :func:`load` restores the model exactly: same weights bit for bit, same
        architecture, loss, mode and dropout offset. Optimizer state is not saved: keep
        ``opt.state_dict()`` beside it to resume training exactly (:mod:`fastmlp.optim`).

        Raises ``ValueError`` if a weight is NaN or infinite (a diverged run): :func:`load`, like
        :meth:`set_weights`, accepts finite weights only, so such a file could not be read back.
        """
        if isinstance(path, (str, os.PathLike)):
            target = os.fspath(path)
            written = target if target.endswith(".npz") else target + ".npz"  # as np.savez
            if names_folder(target) or names_folder(written):
                raise ValueError(f"path: {target!r} is a folder; give a file name, e.g. model.npz")
        config, weights = self._snapshot()
        for i, w in enumerate(weights):
            if not np.isfinite(w).all():
                raise ValueError(
                    f"model: weights[{i}] contains NaN or infinite values (training diverged); "
                    "not saved, as load() could not restore it"
                )
        arrays = {f"param_{i}": w for i, w in enumerate(weights)}
        np.savez(path, config=np.array(json.dumps(config)), **arrays)


# The attributes MLP sets itself: __reduce__ rebuilds them through _restore instead of copying
# them (tests/test_nn_api.py checks the list against a model that has trained and moved).
_MLP_ATTRIBUTES = frozenset(
    {
        "_activations",
        "_alphas",
        "_device",
        "_dropouts",
        "_fused",
        "_init",
        "_kinds",
        "_loss",
        "_loss_code",
        "_net",
        "_seed",
        "_shapes",
        "_sizes",
        "_step_fast",
        "_training",
    }
)

_CONFIG_KEYS = (
    "layer_sizes",
    "activation",
    "activation_alpha",
    "dropout",
    "init",
    "seed",
    "loss",
    "training",
    "rng_offset",
)


# What np.load and the archive raise for a file that is not a readable .npz (zipfile raises
# NotImplementedError for a zip version or compression method it does not support).
_UNREADABLE = (ValueError, EOFError, zipfile.BadZipFile, NotImplementedError)


def _read_archive(
    source: IO[bytes], invalid: Callable[[str], ValueError], name: str
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The config and weights of a file :meth:`MLP.save` wrote, read from ``source``."""
    try:
        archive = np.load(source, allow_pickle=False)
    except _UNREADABLE as exc:
        # Not OSError: a file that cannot be read (missing, a folder, no permission) says so
        # itself, and may well be a model.
        # NumPy's own message for a non-NumPy file suggests loading it with pickles allowed:
        # not advice to pass on for a file that was meant to be a model.
        raise invalid(f"not an .npz archive: {type(exc).__name__}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise invalid("a single .npy array, not an .npz archive")
    with archive as f:

        def read(key: str) -> np.ndarray:
            try:
                return f[key]
            except _UNREADABLE as exc:
                # e.g. an object array, which allow_pickle=False refuses to read
                raise invalid(f"{key}: {type(exc).__name__}: {exc}") from None

        if "config" not in f.files:
            raise invalid("no config")
        try:
            config = json.loads(str(read("config")))
        except json.JSONDecodeError as exc:
            raise invalid(f"its config is not JSON: {exc}") from None
        if not isinstance(config, dict):
            raise invalid("its config is not a JSON object")
        version = config.get("version")
        if config.get("format") != _FORMAT or type(version) is not int:
            raise invalid(f"format {config.get('format')!r} version {version!r}")
        if version != _FORMAT_VERSION:
            raise ValueError(
                f"path: {name} is a fastmlp model of format version {version}; this fastmlp "
                f"reads version {_FORMAT_VERSION}"
            )
        missing = [key for key in _CONFIG_KEYS if key not in config]
        if missing:
            raise invalid(f"its config lacks {', '.join(missing)}")
        names = [n for n in f.files if n != "config"]
        expected = [f"param_{i}" for i in range(len(names))]
        if sorted(names) != sorted(expected):
            raise invalid(f"arrays {sorted(names)}, expected param_0..param_{len(names) - 1}")
        weights = [read(n) for n in expected]
    return config, weights


def load(path: PathLike | IO[bytes]) -> MLP:
    """Load a model written by :meth:`MLP.save`: ``path`` with or without the ``.npz`` that
    ``save`` adds, or a binary file object.

    Raises ``ValueError`` naming the file when it is not a model ``save`` wrote (another file
    type, a damaged archive, a config or weights that do not fit together); nothing is unpickled.
    """
    if isinstance(path, (str, os.PathLike)):
        if not os.path.exists(path) and os.path.exists(os.fspath(path) + ".npz"):
            path = os.fspath(path) + ".npz"
        name = repr(os.fspath(path))
    else:
        name = repr(getattr(path, "name", "the file object"))

    def invalid(why: str) -> ValueError:
        return ValueError(f"path: {name} is not a fastmlp model written by MLP.save ({why})")

    if isinstance(path, (str, os.PathLike)):
        # Opened here rather than by np.load, which leaves the file it opened open when the zip
        # reader raises (NotImplementedError, for a zip version it does not support).
        with open(path, "rb") as source:
            config, weights = _read_archive(source, invalid, name)
    else:
        config, weights = _read_archive(path, invalid, name)
    _check_weight_shapes(config["layer_sizes"], weights, invalid)
    try:
        return _restore(config, weights)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"path: {name}: {exc}") from None


def _check_weight_shapes(
    sizes: Any, weights: list[np.ndarray], invalid: Callable[[str], ValueError]
) -> None:
    """The shapes of W_l and b_l against the config's layer sizes, before the model is built: a
    small file whose config claims huge layers must not make load() allocate them."""
    try:
        sizes = _check_sizes(sizes)  # MLP's own rule, applied before anything is allocated
    except (TypeError, ValueError) as exc:
        raise invalid(str(exc)) from None
    layers = len(sizes) - 1
    if len(weights) < 2 * layers:
        raise invalid(f"{len(weights)} arrays for {layers} layers (W and b each)")
    for l in range(layers):
        for k, shape in ((2 * l, (sizes[l], sizes[l + 1])), (2 * l + 1, (sizes[l + 1],))):
            if weights[k].shape != shape:
                raise invalid(
                    f"param_{k} has shape {weights[k].shape}, layer_sizes call for {shape}"
                )


def _restore(
    config: dict[str, Any],
    weights: list[np.ndarray],
    device: str = "cpu",
    fused: bool = True,
    cls: type[MLP] | None = None,
) -> MLP:
    """The model a ``_snapshot()`` describes (load and unpickling): an MLP,
    or an instance of the subclass ``cls`` built by MLP's constructor (the subclass's may take
    other arguments; unpickling then restores its attributes, as for any pickled object)."""
    model = MLP.__new__(cls or MLP)
    MLP.__init__(
        model,
        config["layer_sizes"],
        activation=config["activation"],
        dropout=config["dropout"],
        init=config["init"],
        seed=config["seed"],
        activation_alpha=config["activation_alpha"],
        loss=config["loss"],
        device=device,
        fused=fused,
    )
    model.set_weights(weights)
    model.train(config["training"])
    model.rng_offset = config["rng_offset"]
    return model
