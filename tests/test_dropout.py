"""Seeded inverted dropout: the Philox4x32-10 generator (C++ and NumPy reference) against the
published known-answer vectors, masks bit-identical to fastmlp.reference, statistics of the mask,
thread-count independence, backward and bad input.

Exact comparisons (array_equal) are used where both sides compute the same float32 operations:
the uniforms are exact multiples of 2**-24, the keep test and the float32 scale 1 / (1 - p) are the
same on both sides, and y = x * scale is one correctly rounded float32 multiply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import fastmlp
from fastmlp import _core, ops
from fastmlp import reference as ref

# Philox4x32-10 known-answer vectors from Random123's kat_vectors (Salmon et al., SC 2011):
# (counter words, key words, output words).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
LARGE = 1_000_000


@pytest.mark.parametrize(("counter", "key", "expected"), PHILOX_KAT)
def test_philox_known_answers_cpp(counter, key, expected) -> None:
    assert tuple(_core._philox4x32(list(counter), list(key))) == expected


@pytest.mark.parametrize(("counter", "key", "expected"), PHILOX_KAT)
def test_philox_known_answers_reference(counter, key, expected) -> None:
    out = ref.philox4x32_10(np.array(counter), np.array(key))
    assert out.dtype == np.uint32
    assert tuple(int(w) for w in out) == expected


def test_philox_reference_vectorised_matches_cpp() -> None:
    rng = np.random.default_rng(0)
    counters = rng.integers(0, 2**32, size=(64, 4), dtype=np.uint64)
    keys = rng.integers(0, 2**32, size=(64, 2), dtype=np.uint64)
    batch = ref.philox4x32_10(counters, keys)
    for c, k, out in zip(counters, keys, batch):
        assert _core._philox4x32([int(w) for w in c], [int(w) for w in k]) == out.tolist()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 31, 1031])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 6, 2**32 - 1, 2**64 - 6])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_mask_bit_identical_to_reference(n: int, offset: int, p: float) -> None:
    # offsets cover every lane alignment, the 2**32 counter-word carry and the 2**64 wrap-around.
    seed = 0x123456789ABCDEF0
    expected = ref.dropout_mask(n, p, seed=seed, offset=offset)
    np.testing.assert_array_equal(ops.dropout_mask(n, p, seed=seed, offset=offset), expected)


def test_mask_large_bit_identical_and_keep_fraction() -> None:
    p = 0.3
    mask = ops.dropout_mask(LARGE, p, seed=2024)
    np.testing.assert_array_equal(mask, ref.dropout_mask(LARGE, p, seed=2024))
    # Values: exactly 0 or the float32 scale.
    scale = np.float32(1) / (np.float32(1) - np.float32(p))
    assert set(np.unique(mask).tolist()) == {0.0, float(scale)}


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9])
def test_keep_fraction_binomial(p: float) -> None:
    # The kept count is Binomial(n, 1 - p) for an ideal generator; we allow 6 standard deviations
    # (two-sided probability ~2e-9 of failing by chance), i.e. |frac - (1 - p)| <= 6 sqrt(p(1-p)/n).
    mask = ops.dropout_mask(LARGE, p, seed=17 + int(100 * p))
    frac = np.count_nonzero(mask) / LARGE
    assert abs(frac - (1 - p)) <= 6 * np.sqrt(p * (1 - p) / LARGE)


def test_uniforms_fill_every_lane_evenly() -> None:
    # Each of the four Philox output words feeds one lane: the keep fraction of each lane alone is
    # Binomial(n / 4, 1 - p); 6 standard deviations as above.
    p = 0.5
    mask = ops.dropout_mask(LARGE, p, seed=5)
    for lane in range(4):
        kept = np.count_nonzero(mask[lane::4]) / (LARGE // 4)
        assert abs(kept - (1 - p)) <= 6 * np.sqrt(p * (1 - p) / (LARGE // 4))


def test_same_seed_same_mask_any_thread_count(restore_threads: None) -> None:
    x = np.random.default_rng(1).standard_normal(LARGE).astype(np.float32)
    outs = []
    for threads in (1, 2, 3, 4):
        fastmlp.set_num_threads(threads)
        outs.append(
            (
                ops.dropout_mask(LARGE, 0.4, seed=9, offset=3),
                ops.dropout(x, 0.4, seed=9, offset=3),
                ops.dropout_backward(x, 0.4, seed=9, offset=3),
            )
        )
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


def test_offset_selects_global_indices() -> None:
    # Element i of a call with offset k is global index k + i: a shifted call is a slice.
    whole = ops.dropout_mask(4096, 0.5, seed=77, offset=0)
    for k in (1, 2, 3, 4, 5, 1000):
        np.testing.assert_array_equal(ops.dropout_mask(4096 - k, 0.5, seed=77, offset=k), whole[k:])


def _keep_correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a != 0, b != 0)[0, 1])


def test_disjoint_offsets_and_seeds_are_independent() -> None:
    # The keep indicators of independent masks have correlation ~ N(0, 1/n); 6 / sqrt(n) bound.
    n, p = LARGE, 0.5
    base = ops.dropout_mask(n, p, seed=3, offset=0)
    next_range = ops.dropout_mask(n, p, seed=3, offset=n)
    other_seed = ops.dropout_mask(n, p, seed=4, offset=0)
    shifted = ops.dropout_mask(n, p, seed=3, offset=1)  # overlaps, but element i sees index i + 1
    bound = 6 / np.sqrt(n)
    for other in (next_range, other_seed, shifted):
        assert not np.array_equal(base, other)
        assert abs(_keep_correlation(base, other)) <= bound


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5, 7), (1031, 13)])
def test_forward_backward_match_reference_and_mask(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    kw: dict[str, Any] = dict(seed=123, offset=5)
    mask = ops.dropout_mask(shape, 0.25, **kw)
    y = ops.dropout(x, 0.25, **kw)
    dx = ops.dropout_backward(dy, 0.25, **kw)
    assert y.shape == shape and y.dtype == np.float32 and dx.shape == shape
    np.testing.assert_array_equal(y, ref.dropout(x, 0.25, **kw))
    np.testing.assert_array_equal(dx, ref.dropout_backward(dy, 0.25, **kw))
    # Forward and backward apply the same factors (one float32 multiply each).
    np.testing.assert_array_equal(y, mask * x)
    np.testing.assert_array_equal(dx, mask * dy)
    np.testing.assert_array_equal(mask, ref.dropout_mask(shape, 0.25, **kw))


def test_p_zero_is_identity() -> None:
    x = np.random.default_rng(2).standard_normal((33, 9)).astype(np.float32)
    np.testing.assert_array_equal(ops.dropout(x, 0.0, seed=1), x)
    np.testing.assert_array_equal(ops.dropout_backward(x, 0.0, seed=1), x)
    np.testing.assert_array_equal(ops.dropout_mask(x.shape, 0.0, seed=1), np.ones_like(x))


def test_eval_mode_copies() -> None:
    x = np.arange(10, dtype=np.float32)
    y = ops.dropout(x, 0.9, seed=1, training=False)
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(x, y)


def test_dropped_elements_are_zero_even_if_not_finite() -> None:
    x = np.full(4096, np.inf, dtype=np.float32)
    x[::2] = np.nan
    y = ops.dropout(x, 0.5, seed=8)
    kept = ops.dropout_mask(x.shape, 0.5, seed=8) != 0
    assert np.all(y[~kept] == 0.0)
    np.testing.assert_array_equal(y[kept], x[kept] * np.float32(2.0))
    np.testing.assert_array_equal(y, ref.dropout(x, 0.5, seed=8))


def test_input_converted_from_any_float_dtype_and_layout() -> None:
    x64 = np.random.default_rng(3).standard_normal((40, 30)).T  # float64, Fortran order
    x32 = np.ascontiguousarray(x64, np.float32)
    np.testing.assert_array_equal(ops.dropout(x64, 0.5, seed=6), ops.dropout(x32, 0.5, seed=6))


def test_core_in_place_forward() -> None:
    # The kernels allow y to be x (read, then write, per element).
    x = np.random.default_rng(4).standard_normal(1031).astype(np.float32)
    expected = ops.dropout(x, 0.3, seed=10, offset=2)
    _core.dropout_forward(x, x, p=0.3, seed=10, offset=2)
    np.testing.assert_array_equal(x, expected)


def test_core_refuses_shifted_overlap() -> None:
    # y may be x itself (dropout.h), but a view shifted by one element would read inputs the
    # kernel had already overwritten (and race between threads): refused, for backward too.
    x = np.arange(1, 1 + 1032, dtype=np.float32)
    before = x.copy()
    with pytest.raises(ValueError, match=r"^y: may be x itself but must not partly overlap it"):
        _core.dropout_forward(x[1:], x[:-1], p=0.5, seed=1, offset=0)
    with pytest.raises(ValueError, match=r"^dx: may be dy itself but must not partly overlap it"):
        _core.dropout_backward(x[:-1], x[1:], p=0.5, seed=1, offset=0)
    np.testing.assert_array_equal(x, before)  # refused before anything was written
    _core.dropout_backward(x, x, p=0.5, seed=1, offset=0)  # exact aliasing stays allowed
    np.testing.assert_array_equal(x, ops.dropout_backward(before, 0.5, seed=1))


def test_empty() -> None:
    assert ops.dropout(np.zeros((0, 3), np.float32), 0.5, seed=1).shape == (0, 3)
    assert ops.dropout_mask(0, 0.5, seed=1).shape == (0,)


# ---------------------------------------------------------------- bad input, one test per rule
X = np.ones(8, dtype=np.float32)
BAD_CALLS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("p negative", lambda: ops.dropout(X, -0.1, seed=1), ValueError, "p"),
    ("p one", lambda: ops.dropout(X, 1.0, seed=1), ValueError, "p"),
    ("p nan", lambda: ops.dropout_mask(8, float("nan"), seed=1), ValueError, "p"),
    (
        "p beyond the float range",  # float(10**400) raised a bare OverflowError
        lambda: ops.dropout(X, 10**400, seed=1),
        ValueError,
        "p: expected a finite value, got 1e+400 (inf in float32",
    ),
    (
        "masked x",
        lambda: ops.dropout(np.ma.masked_array(X, mask=X > 2), 0.5, seed=1),
        TypeError,
        "x: masked arrays are not supported",
    ),
    ("p too big backward", lambda: ops.dropout_backward(X, 1.5, seed=1), ValueError, "p"),
    ("negative seed", lambda: ops.dropout(X, 0.5, seed=-1), ValueError, "seed"),
    ("seed 2**64", lambda: ops.dropout(X, 0.5, seed=2**64), ValueError, "seed"),
    ("float seed", lambda: ops.dropout(X, 0.5, seed=1.5), TypeError, "seed"),
    ("bool seed", lambda: ops.dropout(X, 0.5, seed=True), TypeError, "seed"),
    ("negative offset", lambda: ops.dropout_mask(8, 0.5, seed=1, offset=-4), ValueError, "offset"),
    ("int x", lambda: ops.dropout(np.ones(8, dtype=np.int32), 0.5, seed=1), TypeError, "x"),
    ("string dy", lambda: ops.dropout_backward("abc", 0.5, seed=1), TypeError, "dy"),
    ("negative shape", lambda: ops.dropout_mask((3, -1), 0.5, seed=1), ValueError, "shape"),
    ("float shape", lambda: ops.dropout_mask((3.5,), 0.5, seed=1), TypeError, "shape"),
    # seed and offset refuse bools; so does shape (True was taken as (1,))
    ("bool shape", lambda: ops.dropout_mask(True, 0.5, seed=1), TypeError, "shape"),
    ("bool dim", lambda: ops.dropout_mask((2, False), 0.5, seed=1), TypeError, "shape"),
    (
        "core read-only y",
        lambda: _core.dropout_forward(
            np.broadcast_to(np.float32(0), (8,)), X, p=0.5, seed=1, offset=0
        ),
        ValueError,
        "y",
    ),
    (
        "core y shape",
        lambda: _core.dropout_forward(np.ones(7, np.float32), X, p=0.5, seed=1, offset=0),
        ValueError,
        "y",
    ),
    (
        "core float64 x",
        lambda: _core.dropout_forward(np.ones(8, np.float32), np.ones(8), p=0.5, seed=1, offset=0),
        TypeError,
        "x",
    ),
    (
        "core p = 1",
        lambda: _core.dropout_mask(np.ones(8, np.float32), p=1.0, seed=1, offset=0),
        ValueError,
        "p",
    ),
]


@pytest.mark.parametrize(
    ("call", "exc", "name"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input(call: Callable[[], Any], exc: type[Exception], name: str) -> None:
    with pytest.raises(exc) as info:
        call()
    assert str(info.value).startswith(name), str(info.value)


@pytest.mark.parametrize("device", [None, "cuda"])  # checked before the device is chosen
@pytest.mark.parametrize("value", ["False", "no", 0, 1, None], ids=repr)
def test_training_takes_a_bool_only(value: object, device: str | None) -> None:
    # bool("False") is True: a truthy flag used to drop elements in what was meant as eval mode.
    with pytest.raises(
        TypeError, match=rf"^training: expected True or False, got {type(value).__name__}$"
    ):
        ops.dropout(X, 0.5, seed=1, training=value, device=device)
    np.testing.assert_array_equal(ops.dropout(X, 0.5, seed=1, training=np.False_), X)
    np.testing.assert_array_equal(
        ops.dropout(X, 0.5, seed=1, training=np.True_), ops.dropout(X, 0.5, seed=1)
    )


def test_input_beyond_float32_is_named() -> None:
    x = np.ones(8)
    x[5] = -1e39
    with pytest.raises(ValueError, match=r"^x: -1e\+39 at \[5\] is too large for float32"):
        ops.dropout(x, 0.5, seed=1)
    with pytest.raises(ValueError, match=r"^dy: -1e\+39 at \[5\] is too large for float32"):
        ops.dropout_backward(x, 0.5, seed=1)


def test_an_element_whose_uniform_equals_p_is_kept() -> None:
    """An element is kept iff its uniform u >= p: with p set to element k's own uniform (a
    multiple of 2^-24, exact in float32 and float64), element k is kept, as in the reference."""
    from fastmlp.reference.dropout import _uniforms

    u = _uniforms(64, 5, 0)
    x = np.ones(64, np.float32)
    ks = np.flatnonzero((u > 0.05) & (u < 0.95))[:8]
    assert len(ks) == 8
    for k in ks:
        p = float(u[k])
        y = ops.dropout(x, p, seed=5)
        assert y[k] != 0.0, (k, p)
        np.testing.assert_array_equal(y, ref.dropout(x, p, seed=5))
        np.testing.assert_array_equal(
            ops.dropout_mask(64, p, seed=5), ref.dropout_mask(64, p, seed=5)
        )


def test_p_zero_copies_every_element_even_a_single_one() -> None:
    """p = 0 is a copy, for every size, one element included (the outputs start as NaN, so an
    element left unwritten shows)."""
    for n in (1, 2, 5):
        dy = np.arange(1, n + 1, dtype=np.float32)
        dx = np.full(n, np.nan, np.float32)
        _core.dropout_backward(dx, dy, p=0.0, seed=1, offset=0)
        np.testing.assert_array_equal(dx, dy)
        y = np.full(n, np.nan, np.float32)
        _core.dropout_forward(y, dy, p=0.0, seed=1, offset=0)
        np.testing.assert_array_equal(y, dy)


def test_core_accepts_adjacent_views_that_share_no_byte() -> None:
    """Two halves of one buffer touch but do not overlap: the bindings' overlap check lets them
    through (it refused them as "must not partly overlap" when it compared with <=)."""
    buf = np.arange(1, 1 + 2 * 1032, dtype=np.float32)
    x = buf[1032:].copy()
    _core.dropout_forward(buf[:1032], buf[1032:], p=0.5, seed=1, offset=3)  # y just before x
    np.testing.assert_array_equal(buf[:1032], ops.dropout(x, 0.5, seed=1, offset=3))
    dy = buf[:1032].copy()
    _core.dropout_backward(buf[1032:], buf[:1032], p=0.5, seed=1, offset=3)  # dx just after dy
    np.testing.assert_array_equal(buf[1032:], ops.dropout_backward(dy, 0.5, seed=1, offset=3))
