"""Data sets and preprocessing: toy 2-D problems, splits, standardisation, digits and MNIST files.

Every generator returns ``(X, y)`` with ``X`` float32 of shape ``(n_samples, 2)`` and ``y`` int64
class labels, drawn from a NumPy ``Generator`` seeded by ``seed``: the same seed gives the same
arrays on every platform NumPy supports. Classes are balanced (sizes differ by at most one) and
rows are shuffled so that the classes are interleaved.

Nothing here downloads anything: :func:`load_digits` uses scikit-learn's bundled copy and
:func:`load_mnist` reads the four standard IDX files from a folder you supply.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ._checks import _shape_str, as_host_array, check_bool, check_int, check_real

__all__ = [
    "Standardizer",
    "load_digits",
    "load_mnist",
    "make_circles",
    "make_moons",
    "make_spirals",
    "make_xor",
    "train_val_test_split",
]


# --------------------------------------------------------------------------------------------
# Toy 2-D generators
# --------------------------------------------------------------------------------------------


def _check_n_samples(n_samples: int, n_classes: int) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"n_samples: expected an int, got {type(n_samples).__name__}")
    if n_samples < n_classes:
        raise ValueError(
            f"n_samples: expected at least {n_classes} (one per class), got {n_samples}"
        )
    return int(n_samples)


def _check_noise(noise: float) -> float:
    noise = check_real(noise, "noise")
    if not noise >= 0.0:
        raise ValueError(f"noise: expected a finite value >= 0, got {noise}")
    return noise


def _check_seed(seed: int | None) -> int | None:
    """``seed`` for ``np.random.default_rng``: None (fresh OS entropy) or an int >= 0."""
    return None if seed is None else check_int(seed, "seed", 0)


def _class_sizes(n_samples: int, n_classes: int) -> list[int]:
    """Split ``n_samples`` into ``n_classes`` sizes differing by at most one (first ones larger)."""
    base, extra = divmod(n_samples, n_classes)
    return [base + (1 if k < extra else 0) for k in range(n_classes)]


def _finish(parts: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-class point clouds, label them 0..K-1 and shuffle the rows together."""
    X = np.concatenate(parts, axis=0)
    y = np.concatenate([np.full(len(p), k, dtype=np.int64) for k, p in enumerate(parts)])
    order = rng.permutation(len(y))
    return np.ascontiguousarray(X[order], dtype=np.float32), y[order]


def make_circles(
    n_samples: int = 1000, noise: float = 0.13, factor: float = 0.5, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The course's *Circle* data: two concentric noisy rings, outer class 0, inner class 1.

    A point of class ``k`` is ``r_k (cos t, sin t) + noise * e`` with ``t ~ U[0, 2 pi)``,
    ``e ~ N(0, I_2)``, ``r_0 = 1`` and ``r_1 = factor`` (scikit-learn's ``make_circles``
    convention: ``noise`` is the standard deviation added to each coordinate). The course notes
    show the data but give no radii, noise or size: these defaults are fastmlp's choice.

    The default ``noise=0.13`` makes the rings overlap near the boundary on purpose: the Bayes
    classifier (which knows the generating distributions) is right about 97.2% of the time
    (Monte-Carlo estimate on 4e5 points; 99.3% at ``noise=0.1``, 96.2% at ``0.14``), so a good
    MLP reaches the 95-97% test accuracy the course reports and cannot do much better.

    Returns ``X`` float32 ``(n_samples, 2)`` and ``y`` int64 ``(n_samples,)``.
    """
    n_samples = _check_n_samples(n_samples, 2)
    noise = _check_noise(noise)
    factor = check_real(factor, "factor")
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor: expected 0 < factor < 1 (inner radius / outer), got {factor}")
    rng = np.random.default_rng(_check_seed(seed))
    parts = []
    for radius, n in zip((1.0, factor), _class_sizes(n_samples, 2)):
        t = rng.uniform(0.0, 2.0 * np.pi, n)
        parts.append(
            radius * np.stack([np.cos(t), np.sin(t)], axis=1) + noise * rng.standard_normal((n, 2))
        )
    return _finish(parts, rng)


def make_moons(
    n_samples: int = 1000, noise: float = 0.1, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (scikit-learn's ``make_moons`` geometry).

    Class 0: ``(cos t, sin t)``; class 1: ``(1 - cos t, 0.5 - sin t)``; ``t ~ U[0, pi]``; plus
    ``noise * N(0, I_2)`` on each point. Returns ``X`` float32 ``(n, 2)``, ``y`` int64.
    """
    n_samples = _check_n_samples(n_samples, 2)
    noise = _check_noise(noise)
    rng = np.random.default_rng(_check_seed(seed))
    n0, n1 = _class_sizes(n_samples, 2)
    t0 = rng.uniform(0.0, np.pi, n0)
    t1 = rng.uniform(0.0, np.pi, n1)
    upper = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    lower = np.stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    upper += noise * rng.standard_normal(upper.shape)
    lower += noise * rng.standard_normal(lower.shape)
    return _finish([upper, lower], rng)


def make_spirals(
    n_samples: int = 1000,
    n_classes: int = 2,
    noise: float = 0.05,
    turns: float = 1.0,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved spiral arms, one per class (the CS231n / TensorFlow-playground spiral).

    A point of class ``k`` is ``r (cos a, sin a) + noise * N(0, I_2)`` with ``r ~ U[0, 1]`` and
    ``a = 2 pi (turns * r + k / n_classes)``: each arm makes ``turns`` revolutions from the
    centre, and the arms are rotated ``2 pi / n_classes`` apart. Returns ``X`` float32 ``(n, 2)``
    in about ``[-1, 1]^2`` and ``y`` int64 in ``[0, n_classes)``.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
        raise TypeError(f"n_classes: expected an int, got {type(n_classes).__name__}")
    if n_classes < 2:
        raise ValueError(f"n_classes: expected at least 2, got {n_classes}")
    n_samples = _check_n_samples(n_samples, int(n_classes))
    noise = _check_noise(noise)
    turns = check_real(turns, "turns")
    if not turns > 0.0:
        raise ValueError(f"turns: expected a finite value > 0, got {turns}")
    rng = np.random.default_rng(_check_seed(seed))
    parts = []
    for k, n in enumerate(_class_sizes(n_samples, int(n_classes))):
        r = rng.uniform(0.0, 1.0, n)
        a = 2.0 * np.pi * (turns * r + k / n_classes)
        parts.append(
            r[:, None] * np.stack([np.cos(a), np.sin(a)], axis=1)
            + noise * rng.standard_normal((n, 2))
        )
    return _finish(parts, rng)


def make_xor(
    n_samples: int = 1000, noise: float = 0.1, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The XOR problem: points uniform in ``[-1, 1]^2`` labelled ``[x_1 > 0] xor [x_2 > 0]``,
    then ``noise * N(0, I_2)`` added (after labelling, so classes overlap near the axes). Not
    linearly separable; one hidden layer of two units suffices in principle.
    Each class is drawn uniformly over its own two quadrants (class 0: the signs agree), so the
    class sizes differ by at most one, as for the other generators, rather than by chance.
    Returns ``X`` float32 ``(n, 2)`` and ``y`` int64 in ``{0, 1}``.
    """
    n_samples = _check_n_samples(n_samples, 2)
    noise = _check_noise(noise)
    rng = np.random.default_rng(_check_seed(seed))
    parts = []
    for k, n in enumerate(_class_sizes(n_samples, 2)):
        sign = rng.choice([-1.0, 1.0], n)
        # Class 0 in the quadrants where the coordinates' signs agree, class 1 where they differ.
        quadrant = np.stack([sign, sign if k == 0 else -sign], axis=1)
        parts.append(quadrant * rng.uniform(0.0, 1.0, (n, 2)) + noise * rng.standard_normal((n, 2)))
    return _finish(parts, rng)


# --------------------------------------------------------------------------------------------
# Splitting and scaling
# --------------------------------------------------------------------------------------------


def _largest_remainder(
    total: int, weights: np.ndarray, caps: np.ndarray, tie_order: np.ndarray
) -> np.ndarray:
    """Integers proportional to ``weights`` summing to ``total``, each at most its cap.

    Hamilton's method: floors of the quotas first, then one unit at a time to the largest
    remainders among the entries that still have room, equal remainders (classes of one size)
    taken in ``tie_order`` (a permutation of the entries: the first listed goes first).
    """
    quotas = total * weights / weights.sum()
    counts = np.minimum(np.floor(quotas).astype(np.int64), caps)
    remainders = quotas - counts
    rank = np.empty_like(tie_order)
    rank[tie_order] = np.arange(len(tie_order))
    while counts.sum() < total:
        left = np.where(counts < caps, remainders, -np.inf)
        tied = np.flatnonzero(left == left.max())
        k = int(tied[np.argmin(rank[tied])])
        counts[k] += 1
        remainders[k] -= 1.0
    return counts


def train_val_test_split(
    X: np.ndarray,
    y: np.ndarray,
    val: float = 0.15,
    test: float = 0.15,
    seed: int | None = 0,
    stratify: bool = True,
) -> tuple[
    tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]
]:
    """Shuffle and split into ``(X_train, y_train), (X_val, y_val), (X_test, y_test)``.

    The test and validation sets get ``round(test * n)`` and ``round(val * n)`` rows, the training
    set the rest; ``val=0`` (or ``test=0``) gives an empty set. With ``stratify=True`` (integer
    labels only) each class is split in the same proportions, the per-class counts being rounded
    by the largest-remainder method so that the totals are exact. The three sets are disjoint,
    cover every row, and each is in random order; the same ``seed`` gives the same split.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim < 1:
        raise ValueError(
            f"X: expected an array with one row per sample, got shape {_shape_str(X.shape)}"
        )
    n = X.shape[0]
    if y.ndim < 1 or y.shape[0] != n:
        raise ValueError(
            f"y: expected {n} rows (one per row of X), got shape {_shape_str(y.shape)}"
        )
    val, test = check_real(val, "val"), check_real(test, "test")
    for name, frac in (("val", val), ("test", test)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name}: expected a fraction in [0, 1), got {frac}")
    if val + test >= 1.0:
        raise ValueError(f"val: val + test must be < 1 to leave training data, got {val} + {test}")
    n_test, n_val = round(test * n), round(val * n)
    if n - n_test - n_val < 1:
        raise ValueError(f"X: {n} rows are too few to split with val={val}, test={test}")
    for name, frac, count in (("val", val, n_val), ("test", test, n_test)):
        if frac > 0 and count == 0:
            raise ValueError(
                f"{name}: {frac} of {n} rows rounds to an empty set; use 0 or a larger fraction"
            )
    seed = _check_seed(seed)
    rng = np.random.default_rng(seed)

    if check_bool(stratify, "stratify"):
        if y.dtype.kind not in "iub" or y.ndim != 1:
            raise TypeError(
                f"y: stratify=True needs 1-D integer class labels, got dtype {y.dtype} "
                f"shape {_shape_str(y.shape)}; pass stratify=False for other targets"
            )
        classes, inverse = np.unique(y, return_inverse=True)
        groups = [rng.permutation(np.flatnonzero(inverse == c)) for c in range(len(classes))]
        sizes = np.array([len(g) for g in groups], dtype=np.int64)
        # Which classes get the rows left over when the quotas round down is drawn at random
        # (as scikit-learn's stratified splits do): ties to the lower label would shorten the
        # test and validation sets of the same classes for every seed, and leave training with
        # more of the others. The validation set's ties go first to the classes whose test
        # share did not round up, so that the training set stays as even as the classes are.
        # The orders come from a Generator of their own (spawned from the seed, as rng.spawn,
        # which NumPy < 1.25 lacks), so the shuffles drawn from rng, and splits without ties, are
        # what they were.
        tie_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        weights = sizes.astype(float)
        test_k = _largest_remainder(n_test, weights, sizes, tie_rng.permutation(len(sizes)))
        val_order = tie_rng.permutation(len(sizes))
        test_excess = test_k - weights * test  # > 0 where the test share rounded up
        val_order = val_order[np.argsort(test_excess[val_order], kind="stable")]
        val_k = _largest_remainder(n_val, weights, sizes - test_k, val_order)
        te = np.concatenate([g[:t] for g, t in zip(groups, test_k)])
        va = np.concatenate([g[t : t + v] for g, t, v in zip(groups, test_k, val_k)])
        tr = np.concatenate([g[t + v :] for g, t, v in zip(groups, test_k, val_k)])
        tr, va, te = rng.permutation(tr), rng.permutation(va), rng.permutation(te)
    else:
        order = rng.permutation(n)
        te, va, tr = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return (X[tr], y[tr]), (X[va], y[va]), (X[te], y[te])


def _as_float64(X: object, name: str) -> np.ndarray:
    """``X`` as a 2-D float64 array: float input of any precision keeps it (a float32 round
    first would lose what float64 data carries, e.g. a spread of 0.01 around 1e6), and integer
    input (raw pixel counts) is taken as scikit-learn's StandardScaler takes it. Array-likes (a
    pandas DataFrame) are converted as features are everywhere (:func:`as_host_array`)."""
    X = as_host_array(X, name)
    if X.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a floating-point or integer array, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {_shape_str(X.shape)}")
    return np.asarray(X, dtype=np.float64)


class Standardizer:
    """Standardisation ``z = (x - mean) / scale``, fitted on the training set only.

    ``per_feature=True`` (default): one mean and scale per column. ``per_feature=False``: a
    single mean and scale over all entries, the usual choice for image pixels, which share one
    scale: per-pixel scaling would blow up near-constant border pixels (a pixel that is 0 in
    all but a few training images gets a tiny standard deviation, so it turns into a huge input
    wherever it is not 0).

    ``mean_`` and ``scale_`` (the population standard deviation, ``ddof=0``), arrays of shape
    ``(n_features,)`` either way, are computed in float64; a column with zero variance (constant)
    gets ``scale_ = 1`` so it maps to 0 instead of NaN. ``transform`` and ``inverse_transform``
    return float32.
    """

    def __init__(self, per_feature: bool = True) -> None:
        self.per_feature = check_bool(per_feature, "per_feature")
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def __repr__(self) -> str:
        n = "unfitted" if self.mean_ is None else f"n_features={self.mean_.shape[0]}"
        return f"Standardizer(per_feature={self.per_feature}, {n})"

    def fit(self, X: np.ndarray) -> Standardizer:
        """Compute the means and standard deviations of ``X`` (n, d); returns ``self``."""
        X = _as_float64(X, "X")
        if X.shape[0] == 0:
            raise ValueError("X: cannot fit on 0 rows")
        if not np.isfinite(X).all():
            raise ValueError("X: contains NaN or infinite values")
        axis = 0 if self.per_feature else None
        mean = np.broadcast_to(X.mean(axis=axis), X.shape[1:]).copy()
        std = np.broadcast_to(X.std(axis=axis), X.shape[1:]).copy()
        # Constant columns: a variance no larger than the rounding error of computing it (the
        # bound scikit-learn's StandardScaler uses), so a constant column whose float64 mean is
        # off by an ulp is caught, while a genuinely small spread (1e-8 around 0) is scaled.
        n = X.shape[0] if self.per_feature else X.size
        eps = np.finfo(np.float64).eps
        var = std**2
        tiny = var <= n * eps * var + (n * mean * eps) ** 2
        self.mean_ = mean
        self.scale_ = np.where(tiny, 1.0, std)
        return self

    def _check(self, X: np.ndarray) -> np.ndarray:
        if self.mean_ is None or self.scale_ is None:
            raise RuntimeError("Standardizer: call fit() before transform()")
        X = _as_float64(X, "X")
        if X.shape[1] != self.mean_.shape[0]:
            raise ValueError(
                f"X: expected {self.mean_.shape[0]} columns (as in fit), got {X.shape[1]}"
            )
        return X

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(X - mean_) / scale_`` as float32."""
        X = self._check(X)
        return ((X - self.mean_) / self.scale_).astype(np.float32)

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        """``Z * scale_ + mean_`` as float32 (undoes :meth:`transform`)."""
        Z = self._check(Z)
        return (Z * self.scale_ + self.mean_).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Real data sets
# --------------------------------------------------------------------------------------------


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), bundled with it.

    Returns ``X`` float32 ``(1797, 64)`` with the pixel counts 0..16 divided by 16 (so in
    ``[0, 1]``) and ``y`` int64 in ``[0, 10)``.
    Needs scikit-learn: ``pip install scikit-learn`` (the ``[datasets]`` extra).
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "sklearn":
            raise ImportError(
                "load_digits needs scikit-learn: pip install scikit-learn (the [datasets] extra)"
            ) from exc
        # scikit-learn is there but one of its own imports failed (a broken SciPy, say): saying
        # it is missing would send the user to reinstall the wrong package.
        raise ImportError(f"load_digits: scikit-learn failed to import: {exc}") from exc
    bunch = _sk_load_digits()
    X = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32)
    return np.ascontiguousarray(X), np.asarray(bunch.target, dtype=np.int64)


_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_UBYTE = 0x08  # the only element type MNIST uses


def _idx_candidates(prefix: str, what: str, ndim: int) -> list[str]:
    # The original site's names, then the dotted variant some mirrors use; each plain or gzipped.
    stems = [f"{prefix}-{what}-idx{ndim}-ubyte", f"{prefix}-{what}.idx{ndim}-ubyte"]
    return [s + ext for s in stems for ext in ("", ".gz")]


def _read_idx(folder: Path, prefix: str, what: str, ndim: int) -> np.ndarray:
    names = _idx_candidates(prefix, what, ndim)
    for name in names:
        path = folder / name
        if path.is_file():
            break
    else:
        raise FileNotFoundError(
            f"path: no MNIST {what} file in {folder} (looked for {', '.join(names)})"
        )
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    # gzip.BadGzipFile is an OSError, a truncated gzip an EOFError, a corrupt stream a zlib.error.
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(
            f"{path}: cannot read it as {'gzip' if name.endswith('.gz') else 'a file'} ({exc})"
        ) from exc
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    expected = (_IDX_UBYTE << 8) | ndim
    if magic != expected:
        raise ValueError(
            f"{path}: bad magic number 0x{magic:08x}, expected 0x{expected:08x} "
            f"(unsigned-byte IDX with {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    size = math.prod(dims)  # Python ints: four 32-bit dimensions can overflow int64
    if len(raw) - header != size:
        raise ValueError(
            f"{path}: header says dimensions {tuple(dims)} ({size} bytes of data) but the file "
            f"holds {len(raw) - header}"
        )
    if 0 in dims:
        raise ValueError(f"{path}: holds no data (dimensions {tuple(dims)})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(
    path: str | os.PathLike[str], kind: str = "train", num_classes: int | None = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST (or a data set in its format, e.g. Fashion-MNIST) from the IDX files in ``path``.

    ``kind="train"`` reads ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``,
    ``kind="test"`` the ``t10k-`` pair; each may be gzipped (``.gz``) and the dotted names
    (``train-images.idx3-ubyte``) are accepted too. Magic numbers, sizes and the image/label
    counts are checked, and every label against ``[0, num_classes)`` (10 for MNIST,
    Fashion-MNIST and KMNIST; ``None`` accepts any byte): a corrupt label byte would otherwise
    make a model with hundreds of classes. Returns ``X`` float32 ``(n, rows * cols)`` (784 for
    MNIST) with pixels divided by 255, so in ``[0, 1]``, and ``y`` int64. Nothing is downloaded.
    """
    if kind not in _IDX_PREFIX:
        raise ValueError(f"kind: expected 'train' or 'test', got {kind!r}")
    if num_classes is not None:
        num_classes = check_int(num_classes, "num_classes", 1)
    folder = Path(os.path.expanduser(os.fspath(path)))
    if not folder.is_dir():
        raise FileNotFoundError(f"path: MNIST folder {folder} does not exist or is not a folder")
    prefix = _IDX_PREFIX[kind]
    images = _read_idx(folder, prefix, "images", 3)
    labels = _read_idx(folder, prefix, "labels", 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"path: {kind} images and labels disagree on the count ({images.shape[0]} images, "
            f"{labels.shape[0]} labels)"
        )
    if num_classes is not None:
        bad = np.flatnonzero(labels >= num_classes)
        if bad.size:
            raise ValueError(
                f"path: {kind} label {labels[bad[0]]} at index {bad[0]} is outside "
                f"[0, {num_classes}) ({bad.size} such labels); pass num_classes= for a data set "
                "with more classes"
            )
    X = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
    return X, labels.astype(np.int64)
