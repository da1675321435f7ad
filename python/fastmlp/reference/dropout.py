"""Inverted dropout and its Philox4x32-10 random numbers, in plain vectorised NumPy.

Dropout (Srivastava et al., 2014) keeps each unit with probability ``1 - p`` during training and
scales the kept ones by ``1 / (1 - p)`` ("inverted" dropout), so the expected activation is
unchanged and inference needs no rescaling::

    mask[i] = 1 / (1 - p) if u_i >= p else 0,      y = x * mask,      dx = dy * mask

The uniforms ``u_i`` come from Philox4x32-10 (Salmon et al., SC 2011), computed here exactly as
``csrc/common/random.h`` does, so the masks are bit-identical to the C++ and CUDA kernels:
``j = (offset + i) mod 2**64``, key = the two 32-bit halves of ``seed`` (low first), counter =
``(j // 4) low word, high word, 0, 0``, ``r`` = word ``j % 4`` of the output,
``u = (r >> 8) * 2**-24``. The 32x32 -> 64-bit products of a Philox round are formed in uint64,
where they are exact. ``p`` and the scale are float32, as in the kernels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dropout", "dropout_backward", "dropout_mask", "philox4x32_10"]

_MASK32 = np.uint64(0xFFFFFFFF)
_M0 = np.uint64(0xD2511F53)  # Philox4x32 round multipliers
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)  # Weyl key increments: golden ratio, sqrt(3) - 1
_W1 = np.uint64(0xBB67AE85)


def philox4x32_10(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Philox4x32 with 10 rounds.

    ``counter`` has shape ``(..., 4)`` and ``key`` ``(..., 2)`` (broadcast against each other), all
    words integers in [0, 2**32). Returns the ``(..., 4)`` uint32 output words. One round::

        hi0:lo0 = M0 * c0,   hi1:lo1 = M1 * c2              (64-bit products)
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
        (k0, k1) += (W0, W1)  (mod 2**32)
    """
    counter = np.asarray(counter, dtype=np.uint64)
    key = np.asarray(key, dtype=np.uint64)
    c0, c1, c2, c3 = (counter[..., w] for w in range(4))
    k0, k1 = key[..., 0], key[..., 1]
    for _ in range(10):
        prod0 = _M0 * c0
        prod1 = _M1 * c2
        c0, c1, c2, c3 = (
            (prod1 >> np.uint64(32)) ^ c1 ^ k0,
            prod1 & _MASK32,
            (prod0 >> np.uint64(32)) ^ c3 ^ k1,
            prod0 & _MASK32,
        )
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return np.stack(np.broadcast_arrays(c0, c1, c2, c3), axis=-1).astype(np.uint32)


def _uniforms(n: int, seed: int, offset: int) -> np.ndarray:
    """float32 uniforms u_i, i < n, for global indices j = (offset + i) mod 2**64."""
    j = np.arange(n, dtype=np.uint64) + np.uint64(offset)  # uint64 array addition wraps mod 2**64
    c = j >> np.uint64(2)
    counter = np.stack([c & _MASK32, c >> np.uint64(32), np.zeros_like(c), np.zeros_like(c)], -1)
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint64)
    words = philox4x32_10(counter, key)
    lane = (j & np.uint64(3)).astype(np.intp)
    r = np.take_along_axis(words, lane[:, None], axis=1)[:, 0]
    return (r >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)


def _keep_and_scale(n: int, p: float, seed: int, offset: int) -> tuple[np.ndarray, np.float32]:
    p32 = np.float32(p)
    keep = _uniforms(n, seed, offset) >= p32
    return keep, np.float32(1.0) / (np.float32(1.0) - p32)


def dropout_mask(
    shape: int | tuple[int, ...], p: float, *, seed: int, offset: int = 0
) -> np.ndarray:
    """``mask`` of ``shape`` (float32): ``1 / (1 - p)`` where kept (``u >= p``), 0 where dropped."""
    size = int(np.prod(shape, dtype=np.int64))
    keep, scale = _keep_and_scale(size, p, seed, offset)
    return np.where(keep, scale, np.float32(0.0)).astype(np.float32).reshape(shape)


def dropout(
    x: np.ndarray, p: float, *, seed: int, offset: int = 0, training: bool = True
) -> np.ndarray:
    """``y = x * mask`` in float32 (dropped elements are exactly 0, even where x is NaN or inf);
    a float32 copy of ``x`` when not training."""
    x = np.asarray(x, dtype=np.float32)
    if not training:
        return x.copy()
    keep, scale = _keep_and_scale(x.size, p, seed, offset)
    flat = np.where(keep, x.reshape(-1) * scale, np.float32(0.0))
    return flat.astype(np.float32).reshape(x.shape)


def dropout_backward(dy: np.ndarray, p: float, *, seed: int, offset: int = 0) -> np.ndarray:
    """``dx = dy * mask``: the same mask forward drew from ``(seed, offset)``."""
    return dropout(dy, p, seed=seed, offset=offset, training=True)
