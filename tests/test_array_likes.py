"""Feature arrays given as array-likes: objects implementing the NumPy array protocol (a pandas
DataFrame, xarray, a CPU torch.Tensor) are converted as labels are, then checked as arrays are.

The stand-ins below implement only the protocol (no NumPy subclassing), so these tests need
neither pandas nor xarray; torch is used where it imports."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import cuda, ops


class Frame:
    """Has ``__array__`` only, as a pandas DataFrame or an xarray DataArray has."""

    def __init__(self, a: Any) -> None:
        self.a = a

    def __array__(self, dtype: object = None, copy: object = None) -> Any:
        return self.a


class Interface:
    """Has ``__array_interface__`` only (no ``__array__``)."""

    def __init__(self, a: np.ndarray) -> None:
        self._keep = a  # the interface points into a's memory
        self.__array_interface__ = a.__array_interface__


class Refusing:
    """An ``__array__`` that refuses, as a CUDA tensor's does."""

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        raise TypeError("cannot convert a device tensor; copy it to the host first")


WRAPPERS: list[Callable[[np.ndarray], Any]] = [Frame, Interface]


@pytest.fixture(scope="module")
def moons() -> tuple[np.ndarray, np.ndarray]:
    X, y = fm.data.make_moons(64, seed=0)
    return X.astype(np.float32), y


def _model() -> fm.MLP:
    return fm.MLP([2, 8, 2], seed=0)


def _fake_device_array(shape: tuple[int, ...]) -> cuda.DeviceArray:
    """A DeviceArray with no GPU memory behind it: enough for the host paths, which refuse it
    before reading anything (its ``__array__`` raises whatever its buffer)."""
    return cuda.DeviceArray(None, shape, np.dtype(np.float32))


# ----------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("wrap", WRAPPERS, ids=["__array__", "__array_interface__"])
def test_model_methods_take_array_likes(moons, wrap):
    X, y = moons
    model = _model()
    np.testing.assert_array_equal(model.predict(wrap(X)), model.predict(X))
    np.testing.assert_array_equal(model.predict_proba(wrap(X)), model.predict_proba(X))
    np.testing.assert_array_equal(model(wrap(X)), model.forward(X))
    assert model.evaluate(wrap(X), y) == model.evaluate(X, y)
    assert model.evaluate(wrap(X), wrap(y)) == model.evaluate(X, y)
    loss, grads = model.loss_and_gradients(wrap(X), y)
    loss_ref, grads_ref = model.loss_and_gradients(X, y)
    assert loss == loss_ref
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_array_equal(g, g_ref)


@pytest.mark.parametrize("wrap", WRAPPERS, ids=["__array__", "__array_interface__"])
def test_train_step_takes_array_likes(moons, wrap):
    X, y = moons
    a, b = _model(), _model()
    opt_a, opt_b = fm.optim.SGD(a, lr=0.1), fm.optim.SGD(b, lr=0.1)
    for _ in range(3):
        assert a.train_step(wrap(X), y, optimizer=opt_a) == b.train_step(X, y, optimizer=opt_b)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    # Float targets (mse) go through the same conversion, named y.
    m = fm.MLP([2, 4, 1], seed=0, loss="mse")
    t = y.astype(np.float64).reshape(-1, 1)
    assert np.isfinite(m.train_step(wrap(X), wrap(t), optimizer=fm.optim.SGD(m, lr=0.1)))


def test_trainer_fit_takes_array_likes(moons):
    X, y = moons

    def fit(X_: Any, y_: Any, val: Any) -> tuple[fm.History, list[np.ndarray]]:
        model = _model()
        trainer = fm.Trainer(model, batch_size=16, epochs=2, verbose=0)
        return trainer.fit(X_, y_, validation=val), model.get_weights()

    h_ref, w_ref = fit(X, y, (X[:16], y[:16]))
    h, w = fit(Frame(X), Frame(y), (Frame(X[:16]), Frame(y[:16])))
    for key in fm.History.KEYS:
        if key != "time":
            assert h[key] == h_ref[key], key
    for a, b in zip(w, w_ref):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("wrap", WRAPPERS, ids=["__array__", "__array_interface__"])
def test_standardizer_takes_array_likes(moons, wrap):
    X, _ = moons
    X64 = X.astype(np.float64) * 3 + 1
    s_ref = fm.data.Standardizer().fit(X64)
    s = fm.data.Standardizer().fit(wrap(X64))
    np.testing.assert_array_equal(s.mean_, s_ref.mean_)
    np.testing.assert_array_equal(s.scale_, s_ref.scale_)
    np.testing.assert_array_equal(s.transform(wrap(X64)), s_ref.transform(X64))
    Z = s_ref.transform(X64)
    np.testing.assert_array_equal(s.inverse_transform(wrap(Z)), s_ref.inverse_transform(Z))
    np.testing.assert_array_equal(s.fit_transform(wrap(X64)), s_ref.fit_transform(X64))


@pytest.mark.parametrize("wrap", WRAPPERS, ids=["__array__", "__array_interface__"])
def test_ops_take_array_likes(rng, wrap):
    x = rng.standard_normal((5, 3)).astype(np.float32)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    np.testing.assert_array_equal(ops.relu(wrap(x)), ops.relu(x))
    np.testing.assert_array_equal(
        ops.linear(wrap(x), wrap(w), wrap(b), activation="relu"),
        ops.linear(x, w, b, activation="relu"),
    )
    np.testing.assert_array_equal(ops.matmul(wrap(x), wrap(w)), ops.matmul(x, w))


def test_lists_and_tuples_are_unchanged(moons):
    X, _ = moons
    model = _model()
    np.testing.assert_array_equal(model.predict(X.tolist()), model.predict(X))
    np.testing.assert_array_equal(model.predict(tuple(map(tuple, X))), model.predict(X))


# ----------------------------------------------------------------------------- the checks kept


def test_dtype_rules_apply_after_conversion(moons):
    X, y = moons
    model = _model()
    with pytest.raises(TypeError, match=r"^x: expected a floating-point array, got dtype bool"):
        model.predict(Frame(X > 0))
    with pytest.raises(TypeError, match=r"^x: expected a floating-point array, got dtype int64"):
        model.predict(Frame(np.ones((3, 2), np.int64)))
    with pytest.raises(TypeError, match=r"^x: expected a floating-point array, got dtype comp"):
        model.predict(Frame(np.ones((3, 2), np.complex64)))
    big = X.astype(np.float64)
    big[2, 1] = 1e39
    with pytest.raises(ValueError, match=r"^x: 1e\+39 at \[2, 1\] is too large for float32"):
        model.predict(Frame(big))
    with pytest.raises(ValueError, match=r"^x: expected a 2-D array, got shape \(64,\)"):
        model.predict(Frame(X[:, 0]))
    with pytest.raises(ValueError, match=r"^x: expected 2 columns"):
        model.predict(Frame(np.ones((3, 5), np.float32)))
    bad = X.copy()
    bad[5, 0] = np.nan
    with pytest.raises(ValueError, match=r"^x: contains NaN or infinite values"):
        model.predict(Frame(bad))
    with pytest.raises(ValueError, match=r"^X: contains NaN or infinite values"):
        fm.Trainer(_model(), epochs=1, verbose=0).fit(Frame(bad), y)
    with pytest.raises(TypeError, match=r"^X: expected a floating-point or integer array, got "):
        fm.data.Standardizer().fit(Frame(X > 0))


@pytest.mark.parametrize(
    "values",
    [
        np.array([[1.0, "a"], [2.0, None]], dtype=object),
        np.array([[1.0, 2.0], [3.0, 4.0]], dtype=object),  # numbers, but still object dtype
        np.array([["1", "2"], ["3", "4"]]),
    ],
    ids=["object", "numeric-object", "str"],
)
def test_object_and_string_arrays_are_refused(values):
    model = _model()
    pattern = r"^{}: expected a floating-point array, got dtype (object|<U1)$"
    with pytest.raises(TypeError, match=pattern.format("x")):
        model.predict(Frame(values))
    with pytest.raises(TypeError, match=pattern.format("X")):
        fm.Trainer(_model(), epochs=1, verbose=0).fit(Frame(values), np.array([0, 1]))
    with pytest.raises(TypeError, match=pattern.format("x")):
        ops.relu(Frame(values))
    with pytest.raises(TypeError, match=r"^X: expected a floating-point or integer array, got "):
        fm.data.Standardizer().fit(Frame(values))


def test_masked_array_behind_the_protocol_is_refused(moons):
    X, _ = moons
    masked = np.ma.masked_array(X, mask=X > 1)
    with pytest.raises(TypeError, match=r"^x: masked arrays are not supported"):
        _model().predict(Frame(masked))
    with pytest.raises(TypeError, match=r"^X: masked arrays are not supported"):
        fm.data.Standardizer().fit(Frame(masked))
    with pytest.raises(TypeError, match=r"^X: masked arrays are not supported"):
        fm.data.Standardizer().fit(masked)


def test_failed_conversions_name_the_argument(moons):
    _, y = moons
    model = _model()
    with pytest.raises(TypeError, match=r"^x: cannot convert Refusing to a NumPy array: cannot"):
        model.predict(Refusing())
    with pytest.raises(TypeError, match=r"^X: cannot convert Refusing to a NumPy array"):
        fm.Trainer(_model(), epochs=1, verbose=0).fit(Refusing(), y)
    with pytest.raises(ValueError, match=r"^x: cannot convert Frame to a NumPy array"):
        model.predict(Frame([[1.0, 2.0]]))  # an __array__ that returns a list
    with pytest.raises(ValueError, match=r"^x: cannot convert list to a NumPy array"):
        model.predict([[1.0, 2.0], [3.0]])  # ragged


@pytest.mark.parametrize("value", [object(), {"a": 1}, iter([[1.0, 2.0]]), "abc"])
def test_objects_without_the_protocol_are_still_refused(value):
    name = type(value).__name__
    with pytest.raises(TypeError, match=rf"^X: expected a NumPy array, got {name}$"):
        fm.data.Standardizer().fit(value)
    if not isinstance(value, str):  # a str is a scalar to the ops: refused by its dtype
        with pytest.raises(TypeError, match=rf"^x: expected a NumPy array, got {name}$"):
            _model().predict(value)


# ----------------------------------------------------------------------------- DeviceArray


def _device_arrays(shape: tuple[int, ...]) -> list[cuda.DeviceArray]:
    arrays = [_fake_device_array(shape)]
    if fm.cuda_available():
        arrays.append(cuda.to_device(np.zeros(shape, np.float32)))
    return arrays


def test_device_arrays_are_refused_by_host_paths(moons):
    """A DeviceArray's __array__ refuses (no hidden device-to-host copy); the host paths keep
    refusing it up front with a message naming the argument, not that unnamed error."""
    X, y = moons
    model = _model()
    calls: list[tuple[Callable[[Any], object], str]] = [
        (lambda d: model.predict(d), "x"),
        (lambda d: model.evaluate(d, y), "x"),
        (lambda d: model.train_step(d, y, optimizer=fm.optim.SGD(model)), "x"),
        (lambda d: model.loss_and_gradients(d, y), "x"),
        (lambda d: fm.Trainer(_model(), epochs=1, verbose=0).fit(d, y), "X"),
        (lambda d: fm.data.Standardizer().fit(d), "X"),
    ]
    for d in _device_arrays(X.shape):
        for call, name in calls:
            with pytest.raises(
                TypeError, match=rf"^{name}: expected a NumPy array, got DeviceArray$"
            ):
                call(d)
        with pytest.raises(ValueError, match=r"^device: 'cpu' asked for, but an input is a Device"):
            ops.relu(d, device="cpu")
        with pytest.raises(TypeError, match=r"implicit conversion to NumPy is not allowed"):
            np.asarray(d)  # unchanged: still no silent copy


# ----------------------------------------------------------------------------- torch


def test_torch_cpu_tensors_are_taken(moons):
    torch = pytest.importorskip("torch")
    X, y = moons
    model = _model()
    for t in (torch.tensor(X), torch.tensor(X, dtype=torch.float64)):
        np.testing.assert_array_equal(model.predict(t), model.predict(X))
        assert model.evaluate(t, torch.tensor(y)) == model.evaluate(X, y)
        np.testing.assert_array_equal(ops.relu(t), ops.relu(X))
        w = torch.ones((2, 3))
        np.testing.assert_array_equal(ops.linear(t, w), ops.linear(X, np.ones((2, 3), np.float32)))
    a, b = _model(), _model()
    assert a.train_step(torch.tensor(X), torch.tensor(y), optimizer=fm.optim.SGD(a)) == (
        b.train_step(X, y, optimizer=fm.optim.SGD(b))
    )
    h = fm.Trainer(_model(), batch_size=16, epochs=1, verbose=0).fit(
        torch.tensor(X), torch.tensor(y)
    )
    h_ref = fm.Trainer(_model(), batch_size=16, epochs=1, verbose=0).fit(X, y)
    assert h["train_loss"] == h_ref["train_loss"]
    s = fm.data.Standardizer().fit(torch.tensor(X))
    np.testing.assert_array_equal(s.mean_, fm.data.Standardizer().fit(X).mean_)


def test_torch_tensors_keep_the_dtype_rules(moons):
    torch = pytest.importorskip("torch")
    X, _ = moons
    model = _model()
    with pytest.raises(TypeError, match=r"^x: expected a floating-point array, got dtype bool"):
        model.predict(torch.tensor(X) > 0)
    with pytest.raises(TypeError, match=r"^x: expected a floating-point array, got dtype int64"):
        model.predict(torch.ones((3, 2), dtype=torch.int64))
    with pytest.raises(RuntimeError, match=r"^x: cannot convert Tensor to a NumPy array: .*grad"):
        model.predict(torch.tensor(X, requires_grad=True))
