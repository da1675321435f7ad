"""fastmlp.data: generators, splitting, standardisation, digits and the MNIST IDX reader."""

from __future__ import annotations

import gzip
import struct
import sys
import types

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import data

GENERATORS = [
    ("circles", data.make_circles, {}),
    ("moons", data.make_moons, {}),
    ("spirals2", data.make_spirals, {"n_classes": 2}),
    ("spirals3", data.make_spirals, {"n_classes": 3}),
    ("xor", data.make_xor, {}),
]


# ---------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "gen", "kw"), GENERATORS, ids=[g[0] for g in GENERATORS])
@pytest.mark.parametrize("n", [3, 4, 101, 1000])
def test_generator_shapes_dtypes_and_determinism(name, gen, kw, n):
    k = kw.get("n_classes", 2)
    X, y = gen(n_samples=n, seed=7, **kw)
    assert X.shape == (n, 2) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.shape == (n,) and y.dtype == np.int64
    assert np.isfinite(X).all()
    assert set(np.unique(y)) <= set(range(k))
    X2, y2 = gen(n_samples=n, seed=7, **kw)
    np.testing.assert_array_equal(X, X2)  # same seed: bit-identical
    np.testing.assert_array_equal(y, y2)
    X3, _ = gen(n_samples=n, seed=8, **kw)
    assert not np.array_equal(X, X3)


@pytest.mark.parametrize(("name", "gen", "kw"), GENERATORS, ids=[g[0] for g in GENERATORS])
def test_generators_balance_classes_and_interleave_rows(name, gen, kw):
    k = kw.get("n_classes", 2)
    _, y = gen(n_samples=1001, seed=0, **kw)
    counts = np.bincount(y, minlength=k)
    assert counts.max() - counts.min() <= 1
    assert not np.all(np.diff(y) >= 0)  # shuffled, not sorted by class


def test_circles_geometry_without_noise():
    X, y = data.make_circles(500, noise=0.0, factor=0.3, seed=1)
    r = np.hypot(X[:, 0].astype(np.float64), X[:, 1])
    # float32 coordinates of points on a circle: radius exact to a few ulps of 1.0
    np.testing.assert_allclose(r[y == 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(r[y == 1], 0.3, atol=1e-6)


def test_circles_default_noise_gives_the_documented_overlap():
    # The docstring promises a Bayes accuracy near 97.2%; the radial threshold 0.75 is within a
    # hair of the Bayes rule. 20000 points: standard error of the estimate ~0.12%, so [96%, 98%]
    # is ~8 standard errors wide each way and still fails if the noise default drifts by 0.02.
    X, y = data.make_circles(20000, seed=3)
    r = np.hypot(X[:, 0], X[:, 1])
    acc = np.mean((r < 0.75) == (y == 1))
    assert 0.96 <= acc <= 0.98


def test_moons_and_xor_geometry_without_noise():
    X, y = data.make_moons(400, noise=0.0, seed=2)
    upper, lower = X[y == 0].astype(np.float64), X[y == 1].astype(np.float64)
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0, atol=1e-6)
    X, y = data.make_xor(400, noise=0.0, seed=2)
    np.testing.assert_array_equal(y, (X[:, 0] > 0) ^ (X[:, 1] > 0))
    assert np.abs(X).max() <= 1.0


def test_spirals_arms_are_rotated_copies():
    X, y = data.make_spirals(3000, n_classes=3, noise=0.0, turns=1.0, seed=0)
    r = np.hypot(X[:, 0].astype(np.float64), X[:, 1])
    angle = np.arctan2(X[:, 1], X[:, 0])
    # without noise: angle = 2 pi (r + k/3) mod 2 pi; float32 coordinates -> ~1e-5 rad error
    expected = np.angle(np.exp(1j * 2 * np.pi * (r + y / 3)))
    diff = np.angle(np.exp(1j * (angle - expected)))
    assert np.abs(diff[r > 1e-3]).max() < 1e-4


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: data.make_circles(1), ValueError, "^n_samples"),
        (lambda: data.make_circles(True), TypeError, "^n_samples"),
        (lambda: data.make_circles(10.0), TypeError, "^n_samples"),
        (lambda: data.make_circles(10, noise=-1), ValueError, "^noise"),
        (lambda: data.make_circles(10, factor=1.0), ValueError, "^factor"),
        (lambda: data.make_moons(10, noise=float("nan")), ValueError, "^noise"),
        (lambda: data.make_spirals(10, n_classes=1), ValueError, "^n_classes"),
        (lambda: data.make_spirals(2, n_classes=3), ValueError, "^n_samples"),
        (lambda: data.make_spirals(10, turns=0), ValueError, "^turns"),
        (lambda: data.make_xor(0), ValueError, "^n_samples"),
        (lambda: data.make_circles(10, noise="a"), TypeError, "^noise: expected a real number"),
        (lambda: data.make_circles(10, factor=None), TypeError, "^factor: expected a real"),
        (lambda: data.make_spirals(10, turns="1"), TypeError, "^turns: expected a real"),
        (lambda: data.make_xor(10, noise=1e39), ValueError, r"^noise: .*inf in float32"),
        # NumPy's own messages ("expected non-negative integer", "SeedSequence expects int")
        # name no argument.
        (lambda: data.make_circles(10, seed=-1), ValueError, r"^seed: expected >= 0, got -1"),
        (lambda: data.make_moons(10, seed=-1), ValueError, r"^seed: expected >= 0"),
        (lambda: data.make_spirals(10, seed=1.5), TypeError, r"^seed: expected an int, got f"),
        (lambda: data.make_xor(10, seed=True), TypeError, r"^seed: expected an int, got bool"),
    ],
)
def test_generator_argument_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------------------------


def _indexed(n: int, k: int, rng: np.random.Generator):
    """X whose first column is the row number, so every split row can be traced back."""
    X = np.stack([np.arange(n), rng.standard_normal(n)], axis=1).astype(np.float32)
    y = rng.integers(0, k, n).astype(np.int64)
    return X, y


@pytest.mark.parametrize("stratify", [True, False])
@pytest.mark.parametrize(("n", "val", "test"), [(1000, 0.15, 0.15), (97, 0.1, 0.2), (10, 0.3, 0.3)])
def test_split_sizes_disjoint_and_complete(rng, stratify, n, val, test):
    X, y = _indexed(n, 3, rng)
    (Xtr, ytr), (Xv, yv), (Xte, yte) = data.train_val_test_split(
        X, y, val=val, test=test, seed=5, stratify=stratify
    )
    assert len(Xte) == round(test * n) and len(Xv) == round(val * n)
    assert len(Xtr) == n - len(Xte) - len(Xv)
    ids = np.concatenate([Xtr[:, 0], Xv[:, 0], Xte[:, 0]]).astype(np.int64)
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))  # disjoint and complete
    for Xs, ys in ((Xtr, ytr), (Xv, yv), (Xte, yte)):
        np.testing.assert_array_equal(ys, y[Xs[:, 0].astype(np.int64)])  # rows keep their labels


def test_split_is_stratified_and_deterministic(rng):
    y = np.repeat(np.arange(3), [600, 300, 100])
    X = np.arange(len(y), dtype=np.float32)[:, None]
    (Xtr, ytr), (_, yv), (Xte, yte) = data.train_val_test_split(X, y, val=0.15, test=0.15, seed=1)
    for ys, frac in ((yte, 0.15), (yv, 0.15), (ytr, 0.7)):
        # largest-remainder rounding: each class count within one of its exact share
        np.testing.assert_allclose(
            np.bincount(ys, minlength=3), frac * np.array([600, 300, 100]), atol=1
        )
    again = data.train_val_test_split(X, y, val=0.15, test=0.15, seed=1)
    np.testing.assert_array_equal(again[0][0], Xtr)
    np.testing.assert_array_equal(again[2][0], Xte)
    other = data.train_val_test_split(X, y, val=0.15, test=0.15, seed=2)
    assert not np.array_equal(other[2][0], Xte)
    # each set shuffled, not left in blocks of one class (in any order of the blocks, which
    # change label only k - 1 times for k classes)
    for ys in (ytr, yv, yte):
        assert np.count_nonzero(np.diff(ys)) > len(np.unique(ys)) - 1


@pytest.mark.parametrize("n_per_class", [3, 10, 11])
def test_split_draws_which_equal_classes_get_the_rows_left_over(n_per_class):
    # Equal classes tie in the largest-remainder rounding. Ties to the lower label gave the test
    # and validation sets' extra rows to classes 0, 1, ... for every seed (and made training
    # 6 rows for those against 8 for the others, n = 100); scikit-learn draws them.
    y = np.repeat(np.arange(10), n_per_class)
    X = np.zeros((len(y), 1), np.float32)
    tests = set()
    for seed in range(8):
        (_, ytr), (_, yv), (_, yte) = data.train_val_test_split(X, y, seed=seed)
        counts = np.bincount(yte, minlength=10), np.bincount(yv, minlength=10)
        tests.add(tuple(counts[0]))
        for c in (*counts, np.bincount(ytr, minlength=10)):
            assert c.max() - c.min() <= 1  # every set as even as its size allows
    assert len(tests) > 1  # the seed decides which classes get the extra test rows
    again = data.train_val_test_split(X, y, seed=3)
    np.testing.assert_array_equal(again[2][1], data.train_val_test_split(X, y, seed=3)[2][1])


def test_split_allows_empty_validation_and_float_targets_without_stratify(rng):
    X = rng.standard_normal((50, 3)).astype(np.float32)
    t = rng.standard_normal((50, 2))
    (Xtr, _), (Xv, tv), (Xte, _) = data.train_val_test_split(
        X, t, val=0.0, test=0.2, stratify=False
    )
    assert Xv.shape == (0, 3) and tv.shape == (0, 2)
    assert len(Xtr) == 40 and len(Xte) == 10


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"val": 0.5, "test": 0.5}, ValueError, "^val"),
        ({"val": -0.1}, ValueError, "^val"),
        ({"test": 1.0}, ValueError, "^test"),
        ({"val": 0.001}, ValueError, "^val"),
        ({"y": np.zeros(9, np.int64)}, ValueError, "^y"),
        ({"y": np.zeros(10)}, TypeError, "^y"),
        ({"val": "0.1"}, TypeError, "^val: expected a real number, got str"),
        ({"seed": 1.5}, TypeError, "^seed: expected an int, got float"),
        ({"seed": -1}, ValueError, "^seed: expected >= 0, got -1"),
        ({"stratify": "False"}, TypeError, "^stratify: expected True or False, got str"),
    ],
)
def test_split_errors(kw, exc, match):
    X = np.zeros((10, 2), np.float32)
    y = kw.pop("y", np.arange(10) % 2)
    with pytest.raises(exc, match=match):
        data.train_val_test_split(X, y, **kw)


# ---------------------------------------------------------------------------------------------
# Standardizer
# ---------------------------------------------------------------------------------------------


def test_standardizer_maths(rng):
    X = (rng.standard_normal((200, 4)) * [1.0, 10.0, 0.1, 3.0] + [5.0, -2.0, 0.0, 100.0]).astype(
        np.float32
    )
    s = data.Standardizer().fit(X)
    X64 = X.astype(np.float64)
    np.testing.assert_allclose(s.mean_, X64.mean(axis=0), rtol=1e-12)  # both float64 sums
    np.testing.assert_allclose(s.scale_, X64.std(axis=0), rtol=1e-12)
    Z = s.transform(X)
    assert Z.dtype == np.float32
    # float32 output of O(1) values: 1e-5 absolute covers the final rounding
    np.testing.assert_allclose(Z, (X64 - X64.mean(0)) / X64.std(0), atol=1e-5)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(Z.std(axis=0), 1.0, atol=1e-5)
    # round trip: relative 1e-5 ~ a few float32 ulps of the largest column (values ~100)
    np.testing.assert_allclose(s.inverse_transform(Z), X, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(data.Standardizer().fit_transform(X), Z)


def test_standardizer_zero_variance_columns_are_safe():
    X = np.array([[1.0, 3.0, 0.0], [2.0, 3.0, 0.0], [3.0, 3.0, 0.0]], np.float32)
    s = data.Standardizer().fit(X)
    Z = s.transform(X)
    assert np.isfinite(Z).all()
    np.testing.assert_array_equal(Z[:, 1:], 0.0)
    np.testing.assert_array_equal(s.scale_[1:], 1.0)
    np.testing.assert_allclose(s.inverse_transform(Z), X, atol=1e-6)


def test_standardizer_scales_small_spreads_and_catches_constant_columns(rng):
    """A column of spread 1e-8 around 0 is data (float32 holds it exactly) and is scaled to
    unit variance, as scikit-learn does; a constant column of 0.1 (whose float64 mean is off by
    rounding) is still constant."""
    X = rng.standard_normal((100, 3)) * [1e-8, 1.0, 0.0]
    X[:, 2] = 0.1
    X = X.astype(np.float32)
    s = data.Standardizer().fit(X)
    np.testing.assert_allclose(s.transform(X)[:, :2].std(axis=0), 1.0, rtol=1e-5)
    assert s.scale_[2] == 1.0 and not s.transform(X)[:, 2].any()


def test_standardizer_keeps_float64_precision_and_takes_integers(rng):
    """float64 data is standardised in float64 (a float32 round first turned a spread of 0.01
    around 1e6 into steps of 0.0625: scale 0.0028 instead of 0.0098); integer data (raw pixel
    counts) is taken as scikit-learn takes it."""
    X = np.stack([1e6 + 0.01 * rng.standard_normal(500), rng.standard_normal(500)], axis=1)
    s = data.Standardizer().fit(X)
    np.testing.assert_allclose(s.scale_, X.std(axis=0), rtol=1e-9)
    Z = s.transform(X)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z, (X - X.mean(0)) / X.std(0), atol=1e-5)
    np.testing.assert_allclose(s.inverse_transform(Z)[:, 1], X[:, 1], atol=1e-6)

    counts = rng.integers(0, 256, (40, 3)).astype(np.uint8)
    s = data.Standardizer().fit(counts)
    expected = (counts - counts.mean(0)) / counts.std(0)
    np.testing.assert_allclose(s.transform(counts), expected, atol=1e-5)
    np.testing.assert_allclose(data.Standardizer().fit([[1, 2], [3, 4]]).mean_, [2.0, 3.0])


def test_standardizer_global_scale_for_images(rng):
    X = rng.uniform(0.0, 1.0, (50, 6)).astype(np.float32)
    X[:, 0] = 0.0
    X[3, 0] = 1.0  # a "border pixel": nearly constant, so per-column scaling would blow it up
    s = data.Standardizer(per_feature=False).fit(X)
    X64 = X.astype(np.float64)
    np.testing.assert_allclose(s.mean_, np.full(6, X64.mean()), rtol=1e-12)
    np.testing.assert_allclose(s.scale_, np.full(6, X64.std()), rtol=1e-12)
    Z = s.transform(X)
    # float32 output of O(1) values: 1e-5 absolute covers the final rounding
    np.testing.assert_allclose(Z, (X64 - X64.mean()) / X64.std(), atol=1e-5)
    assert np.abs(Z[:, 0]).max() < 3.0
    assert np.abs(data.Standardizer().fit_transform(X)[:, 0]).max() > 6.0  # per column: ~7
    np.testing.assert_allclose(s.inverse_transform(Z), X, atol=1e-6)


def test_standardizer_errors():
    s = data.Standardizer()
    with pytest.raises(RuntimeError, match=r"fit"):
        s.transform(np.zeros((2, 2), np.float32))
    s.fit(np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"^X: expected 2 columns"):
        s.transform(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match=r"^X: expected a floating-point or integer array"):
        s.transform(np.zeros((2, 2), bool))
    with pytest.raises(TypeError, match=r"^X: expected a NumPy array, got str"):
        s.transform("abc")
    with pytest.raises(ValueError, match=r"^X: expected a 2-D array, got shape \(4,\)"):
        s.transform(np.zeros(4))
    with pytest.raises(ValueError, match=r"^X"):
        data.Standardizer().fit(np.zeros((0, 2), np.float32))
    with pytest.raises(ValueError, match=r"^X"):
        data.Standardizer().fit(np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(TypeError, match=r"^per_feature: expected True or False, got str"):
        data.Standardizer(per_feature="False")  # bool("False") is True


def test_seed_none_and_numpy_ints_are_accepted():
    assert data.make_moons(10, seed=None)[0].shape == (10, 2)
    np.testing.assert_array_equal(
        data.make_moons(10, seed=np.int64(3))[0], data.make_moons(10, seed=3)[0]
    )
    X = np.zeros((10, 2), np.float32)
    assert len(data.train_val_test_split(X, np.arange(10) % 2, seed=None)[0][0]) == 6


# ---------------------------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------------------------


def test_load_digits():
    pytest.importorskip("sklearn")
    X, y = data.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.unique(y), np.arange(10))


def test_load_digits_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn...` raise
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install scikit-learn \(the \[datasets\] extra\)"):
        data.load_digits()


def test_load_digits_with_a_broken_sklearn_dependency_says_what_failed(monkeypatch):
    """scikit-learn installed but one of its imports failing (a broken SciPy) is not reported
    as scikit-learn missing."""
    broken = types.ModuleType("sklearn.datasets")

    def fail(name: str) -> object:
        raise ImportError("libscipy.so: cannot open shared object file", name="scipy")

    broken.__getattr__ = fail  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", broken)
    with pytest.raises(ImportError, match=r"^load_digits: scikit-learn failed to import: libscipy"):
        data.load_digits()


# ---------------------------------------------------------------------------------------------
# MNIST IDX files
# ---------------------------------------------------------------------------------------------


def _idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    magic = (0x08 << 8) | arr.ndim if magic is None else magic
    head = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write_mnist(folder, kind="train", n=5, rows=4, cols=3, gz=False, dotted=False, rng=None):
    rng = rng or np.random.default_rng(0)
    images = rng.integers(0, 256, (n, rows, cols), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    prefix = "train" if kind == "train" else "t10k"
    sep = "." if dotted else "-"
    for what, arr, nd in (("images", images, 3), ("labels", labels, 1)):
        name = f"{prefix}-{what}{sep}idx{nd}-ubyte" + (".gz" if gz else "")
        raw = _idx_bytes(arr)
        (folder / name).write_bytes(gzip.compress(raw) if gz else raw)
    return images, labels


@pytest.mark.parametrize(
    ("gz", "dotted"), [(False, False), (True, False), (False, True), (True, True)]
)
@pytest.mark.parametrize("kind", ["train", "test"])
def test_load_mnist_reads_plain_and_gzipped_idx(tmp_path, gz, dotted, kind):
    images, labels = _write_mnist(tmp_path, kind, gz=gz, dotted=dotted)
    X, y = data.load_mnist(tmp_path, kind=kind)
    assert X.shape == (5, 12) and X.dtype == np.float32
    assert y.dtype == np.int64
    # x / 255 in float32: exact to one rounding
    np.testing.assert_allclose(X, images.reshape(5, -1) / 255.0, rtol=1e-7)
    assert 0.0 <= X.min() and X.max() <= 1.0
    np.testing.assert_array_equal(y, labels)
    X2, _ = data.load_mnist(str(tmp_path), kind=kind)  # str paths too
    np.testing.assert_array_equal(X, X2)


def test_load_mnist_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        data.load_mnist(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz") as info:
        data.load_mnist(tmp_path)
    assert "train-images-idx3-ubyte," in str(info.value)  # names every candidate
    _write_mnist(tmp_path, "train")
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels.*train-labels-idx1-ubyte"):
        data.load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte"):
        data.load_mnist(tmp_path, kind="test")
    with pytest.raises(ValueError, match=r"^kind"):
        data.load_mnist(tmp_path, kind="validation")


def test_load_mnist_rejects_corrupt_files(tmp_path):
    images, labels = _write_mnist(tmp_path, "train")
    img = tmp_path / "train-images-idx3-ubyte"
    lab = tmp_path / "train-labels-idx1-ubyte"
    good_img = img.read_bytes()

    img.write_bytes(_idx_bytes(images, magic=0x0801))  # labels' magic on the images file
    with pytest.raises(ValueError, match=r"bad magic number 0x00000801, expected 0x00000803"):
        data.load_mnist(tmp_path)
    img.write_bytes(good_img[:-1])  # one byte short
    with pytest.raises(ValueError, match=r"header says dimensions"):
        data.load_mnist(tmp_path)
    img.write_bytes(good_img[:6])
    with pytest.raises(ValueError, match=r"too short"):
        data.load_mnist(tmp_path)
    img.write_bytes(good_img)
    lab.write_bytes(_idx_bytes(labels[:4]))
    with pytest.raises(ValueError, match=r"disagree on the count"):
        data.load_mnist(tmp_path)

    lab.unlink()
    img.unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data")
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    with pytest.raises(ValueError, match=r"gzip"):
        data.load_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(good_img)[:-8])
    with pytest.raises(ValueError, match=r"gzip"):  # truncated stream
        data.load_mnist(tmp_path)
    corrupt = bytearray(gzip.compress(good_img))
    corrupt[10] = 0xFF  # the first byte of the deflate stream: an invalid block type (zlib.error)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: cannot read it as gzip"):
        data.load_mnist(tmp_path)


def test_load_mnist_checks_the_labels(tmp_path):
    # A corrupt label byte (200) would make the CLI build a 201-class model from MNIST.
    _, labels = _write_mnist(tmp_path, "train", n=6)
    labels[4] = 200
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
    with pytest.raises(ValueError, match=r"^path: train label 200 at index 4 is outside \[0, 10\)"):
        data.load_mnist(tmp_path)
    _, y = data.load_mnist(tmp_path, num_classes=None)  # a data set of this format with more
    assert y[4] == 200
    _, y = data.load_mnist(tmp_path, num_classes=201)
    assert y.max() == 200
    with pytest.raises(ValueError, match=r"^num_classes: "):
        data.load_mnist(tmp_path, num_classes=0)


@pytest.mark.parametrize("shape", [(0, 28, 28), (5, 0, 3)])
def test_load_mnist_rejects_files_with_no_data(tmp_path, shape):
    _write_mnist(tmp_path, "train")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros(shape, np.uint8)))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: holds no data"):
        data.load_mnist(tmp_path)


def test_load_mnist_huge_header_dimensions_report_the_true_size(tmp_path):
    _write_mnist(tmp_path, "train")
    head = struct.pack(">IIII", 0x0803, 2**32 - 1, 2**32 - 1, 2**32 - 1)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(head + b"\0" * 10)
    with pytest.raises(
        ValueError, match=rf"\({(2**32 - 1) ** 3} bytes of data\) but the file holds 10"
    ):
        data.load_mnist(tmp_path)


def test_public_names():
    assert fm.data.make_circles is data.make_circles
    for name in data.__all__:
        assert getattr(data, name).__doc__


def test_generators_give_the_rows_left_over_to_the_first_classes():
    """The rows that do not divide evenly go to the first classes, as the docstrings say."""
    for gen in (fm.data.make_circles, fm.data.make_moons, fm.data.make_xor):
        _, y = gen(n_samples=7, seed=0)
        assert np.bincount(y).tolist() == [4, 3], gen.__name__
    _, y = fm.data.make_spirals(n_samples=8, n_classes=3, seed=0)
    assert np.bincount(y).tolist() == [3, 3, 2]
