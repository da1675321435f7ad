"""Seeded inverted dropout with a counter-based RNG (Philox4x32-10).

Element ``i`` of the flattened (C-order) array is kept iff ``u(seed, offset + i) >= p`` and kept
elements are scaled by ``1 / (1 - p)``, dropped ones are 0. ``u`` is the uniform in [0, 1) of
``csrc/common/random.h``: Philox4x32-10 keyed by the 64-bit ``seed``, counter ``(offset + i) // 4``,
word ``(offset + i) % 4``, top 24 bits times 2**-24. The mask is therefore a pure function of
``(seed, offset + i)``: the same on any thread count, on the GPU, and in
:func:`fastmlp.reference.dropout_mask`; backward regenerates it instead of storing it. Calls that
must draw independent masks from one seed use disjoint ``offset`` ranges.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np

from .. import _core
from .._checks import as_float_input, check_bool, check_probability
from . import _dispatch

__all__ = ["dropout", "dropout_backward", "dropout_mask"]


def _uint64(x: object, name: str) -> int:
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an int, got bool")
    try:
        value = operator.index(x)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name}: expected an int, got {type(x).__name__}") from None
    if not 0 <= value < 2**64:
        raise ValueError(f"{name}: expected an int in [0, 2**64), got {value}")
    return value


def _args(p: object, seed: object, offset: object) -> tuple[float, int, int]:
    return check_probability(p, "p"), _uint64(seed, "seed"), _uint64(offset, "offset")


def dropout(
    x: np.ndarray,
    p: float,
    *,
    seed: int,
    offset: int = 0,
    training: bool = True,
    device: str | None = None,
) -> np.ndarray:
    """Inverted dropout: ``y = x * mask``, ``mask[i] = 1 / (1 - p)`` if kept else 0.

    ``p`` in [0, 1) is the probability of dropping an element; ``seed`` and ``offset`` are
    non-negative ints below 2**64 and select the mask (see the module docstring). With
    ``training=False`` (or ``p == 0``) ``y`` is a float32 copy of ``x``. Returns a new float32
    array of ``x``'s shape. ``device="cuda"`` (or a DeviceArray ``x``) draws the same mask on the
    GPU.
    """
    training = check_bool(training, "training")  # bool("False") would drop elements
    if _dispatch.use_cuda(device, x):
        p, seed, offset = _args(p, seed, offset)
        return _dispatch.dropout(x, p, seed, offset, training, "x")
    x = as_float_input(x, "x")
    p, seed, offset = _args(p, seed, offset)
    if not training:
        return x.copy()
    y = np.empty_like(x)
    _core.dropout_forward(y, x, p=p, seed=seed, offset=offset)
    return y


def dropout_backward(
    dy: np.ndarray, p: float, *, seed: int, offset: int = 0, device: str | None = None
) -> np.ndarray:
    """Gradient of :func:`dropout`: ``dx = dy * mask`` with the mask forward used (same ``p``,
    ``seed``, ``offset``). Returns a new float32 array of ``dy``'s shape."""
    if _dispatch.use_cuda(device, dy):
        p, seed, offset = _args(p, seed, offset)
        return _dispatch.dropout(dy, p, seed, offset, True, "dy")
    dy = as_float_input(dy, "dy")
    p, seed, offset = _args(p, seed, offset)
    dx = np.empty_like(dy)
    _core.dropout_backward(dx, dy, p=p, seed=seed, offset=offset)
    return dx


def dropout_mask(
    shape: int | Sequence[int],
    p: float,
    *,
    seed: int,
    offset: int = 0,
    device: str | None = None,
) -> np.ndarray:
    """The factors :func:`dropout` multiplies by: a float32 array of ``shape`` holding
    ``1 / (1 - p)`` where the element is kept and 0 where it is dropped. ``device="cuda"`` draws
    it on the GPU (and returns it as NumPy): the same bits as on the CPU."""
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    try:
        raw = tuple(dims)  # type: ignore[arg-type]
        if any(isinstance(d, (bool, np.bool_)) for d in raw):
            raise TypeError  # True is an int to Python, never meant as a size here
        dims = tuple(operator.index(d) for d in raw)
    except TypeError:
        raise TypeError(f"shape: expected an int or a sequence of ints, got {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"shape: dimensions must be >= 0, got {dims}")
    p, seed, offset = _args(p, seed, offset)
    if _dispatch.use_cuda(device):
        return _dispatch.dropout_mask(dims, p, seed, offset)
    mask = np.empty(dims, dtype=np.float32)
    _core.dropout_mask(mask, p=p, seed=seed, offset=offset)
    return mask
