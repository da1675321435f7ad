"""The public Python API of fastmlp.MLP, fastmlp.optim and fastmlp.load: construction, weights,
inference per loss, persistence, modes, and one test per argument rule."""

from __future__ import annotations

import copy
import inspect
import io
import json
import math
import pickle
import sys
import threading
import typing

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import ops
from fastmlp.reference.network import ReferenceMLP


def data(rng, n=10, d=4, classes=3):
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, classes, n)


# ---------------------------------------------------------------- construction


def test_layout_and_description():
    model = fm.MLP([4, 6, 5, 3], activation=["relu", "prelu"], dropout=[0.0, 0.25], seed=1)
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(4, 6), (6,), (6, 5), (5,), (5, 3), (3,), (1,)]
    assert (
        model.num_parameters
        == sum(math.prod(s) for s in shapes)
        == 4 * 6 + 6 + 6 * 5 + 5 + 5 * 3 + 3 + 1
    )
    assert model.layer_sizes == [4, 6, 5, 3]
    assert model.activations == ["relu", "prelu"]
    assert model.dropout == [0.0, 0.25]
    assert model.loss == "cross_entropy"
    assert model.get_weights()[-1][0] == np.float32(0.25)  # PyTorch's PReLU init
    text = repr(model)
    for part in (
        "Linear(in_features=4, out_features=6)",
        "ReLU()",
        "PReLU(init=0.25)",
        "Dropout(p=0.25)",
        "parameters=",
        "cross_entropy",
    ):
        assert part in text
    assert all(w.dtype == np.float32 for w in model.get_weights())


def test_no_hidden_layer_is_logistic_regression(rng):
    model = fm.MLP([4, 3], seed=0)
    x, y = data(rng)
    w, b = model.get_weights()
    np.testing.assert_allclose(model(x), x @ w + b, rtol=1e-5, atol=1e-6)  # float32 GEMM
    opt = fm.optim.SGD(model, lr=0.1)
    assert math.isfinite(model.train_step(x, y, optimizer=opt))


@pytest.mark.parametrize("init", ["he", "xavier", "normal", "uniform"])
def test_init_distributions(init):
    fan_in, fan_out = 400, 300
    model = fm.MLP([fan_in, fan_out, 2], init=init, seed=3)
    w, b = model.get_weights()[:2]
    assert (b == 0).all()
    # 120000 draws: the sample std is within ~0.5% of the true one (5 sigma ~ 1.3%); 3% bound.
    if init == "he":
        assert w.std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    elif init == "normal":
        assert w.std() == pytest.approx(0.01, rel=0.03)
    else:
        bound = math.sqrt(6 / (fan_in + fan_out)) if init == "xavier" else 1 / math.sqrt(fan_in)
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.99 * bound  # fills the interval
        assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)  # uniform's std


def test_init_is_deterministic_from_the_seed():
    a = fm.MLP([5, 7, 2], seed=42).get_weights()
    b = fm.MLP([5, 7, 2], seed=42).get_weights()
    c = fm.MLP([5, 7, 2], seed=43).get_weights()
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


def test_activation_alpha():
    m = fm.MLP([3, 4, 4, 2], activation=["leaky_relu", "relu"], activation_alpha=0.2)
    assert m.activation_alphas == [pytest.approx(0.2), 0.0]
    m = fm.MLP([3, 4, 4, 2], activation=["elu", "prelu"], activation_alpha=[0.5, 0.1])
    assert m.get_weights()[-1][0] == np.float32(0.1)
    x = np.array([[-1.0, 2.0, -3.0]], np.float32)
    r = ReferenceMLP.from_model(m)
    np.testing.assert_allclose(m(x), r.forward(m.get_weights(), x)[0], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- weights


def test_get_weights_returns_copies(rng):
    model = fm.MLP([3, 4, 2], seed=0)
    w = model.get_weights()
    w[0][:] = 123.0
    assert (model.get_weights()[0] != 123.0).all()


@pytest.mark.parametrize("value", [1e39, -1e300, 2.0**128 - 2.0**103])
def test_set_weights_beyond_float32_are_named_not_reported_as_infinite(value):
    # The cast warned ("overflow encountered in cast") and the check then reported NaN/inf that
    # the caller never passed.
    model = fm.MLP([2, 3, 2], seed=0)
    good = model.get_weights()
    w = [a.astype(np.float64) for a in good]
    w[2][1, 0] = value
    with pytest.raises(
        ValueError, match=r"^weights\[2\]: \S+ at \[1, 0\] is too large for float32 "
    ):
        model.set_weights(w)
    w[2][1, 0] = np.nextafter(2.0**128 - 2.0**103, 0)  # rounds to float32's largest value
    model.set_weights(w)
    assert model.get_weights()[2][1, 0] == np.finfo(np.float32).max
    w[2][1, 0] = np.inf  # infinite in the input: still the finiteness check's message
    with pytest.raises(ValueError, match=r"^weights\[2\]: contains NaN or infinite values"):
        model.set_weights(w)


def test_load_of_weights_beyond_float32_names_them(tmp_path):
    model = fm.MLP([2, 3, 2], seed=0)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["param_0"] = arrays["param_0"].astype(np.float64)
    arrays["param_0"][0, 2] = 1e39
    np.savez(tmp_path / "big.npz", **arrays)
    with pytest.raises(
        ValueError, match=r"^path: '.*big\.npz': weights\[0\]: 1e\+39 at \[0, 2\] is too large"
    ):
        fm.load(tmp_path / "big.npz")


def test_inputs_and_targets_beyond_float32_are_named(rng):
    model = fm.MLP([3, 4, 2], loss="mse", seed=0)
    opt = fm.optim.SGD(model, lr=0.1)
    x, t = np.ones((5, 3)), np.zeros((5, 2))
    x[3, 1] = 1e39
    with pytest.raises(ValueError, match=r"^x: 1e\+39 at \[3, 1\] is too large for float32"):
        model.predict(x)
    with pytest.raises(ValueError, match=r"^x: 1e\+39 at \[3, 1\] is too large for float32"):
        model.train_step(x, t, optimizer=opt)
    x[3, 1], t[4, 0] = 1.0, -1e39
    with pytest.raises(ValueError, match=r"^y: -1e\+39 at \[4, 0\] is too large for float32"):
        model.train_step(x, t, optimizer=opt)


def test_set_weights_round_trip_and_conversion():
    model = fm.MLP([3, 4, 2], seed=0)
    new = [np.full(w.shape, 0.5, dtype=np.float64) for w in model.get_weights()]
    model.set_weights(new)  # float64 accepted and converted
    for w in model.get_weights():
        assert w.dtype == np.float32 and (w == 0.5).all()


def test_set_weights_rules():
    model = fm.MLP([3, 4, 2], seed=0)
    good = model.get_weights()
    with pytest.raises(ValueError, match=r"^weights: expected 4 arrays, got 3"):
        model.set_weights(good[:3])
    with pytest.raises(ValueError, match=r"^weights\[2\]: expected shape \(4, 2\)"):
        model.set_weights([good[0], good[1], good[2].T, good[3]])
    with pytest.raises(TypeError, match=r"^weights\[0\]: expected a floating-point array"):
        model.set_weights([good[0].astype(np.int32), *good[1:]])
    bad = [w.copy() for w in good]
    bad[1][0] = np.nan
    with pytest.raises(ValueError, match=r"^weights\[1\]: contains NaN"):
        model.set_weights(bad)
    with pytest.raises(TypeError, match=r"^weights: expected a list"):
        model.set_weights(good[0])
    for u, v in zip(model.get_weights(), good):  # failed calls changed nothing
        np.testing.assert_array_equal(u, v)


# ---------------------------------------------------------------- inference per loss


def test_forward_and_call_are_eval_mode(rng):
    model = fm.MLP([4, 16, 3], dropout=0.5, seed=0)
    assert model.training
    x, _ = data(rng)
    r = ReferenceMLP.from_model(model)
    expected = r.forward(model.get_weights(), x)[0]
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-6)  # float32 vs float64
    np.testing.assert_array_equal(model(x), model.forward(x))
    assert model.rng_offset == 0  # no dropout draws


def test_predict_cross_entropy_and_hinge(rng):
    for loss in ("cross_entropy", "hinge"):
        model = fm.MLP([4, 8, 3], seed=1, loss=loss)
        x, _ = data(rng)
        z = model(x).astype(np.float64)
        p = model.predict_proba(x)
        e = np.exp(z - z.max(1, keepdims=True))
        np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), rtol=1e-5)  # float32 softmax
        np.testing.assert_array_equal(model.predict(x), z.argmax(1))
        assert model.predict(x).dtype == np.int64


def test_predict_bce(rng):
    model = fm.MLP([4, 8, 1], seed=1, loss="bce")
    x, _ = data(rng, n=40)
    z = model(x)[:, 0].astype(np.float64)
    np.testing.assert_allclose(model.predict_proba(x), 1 / (1 + np.exp(-z)), rtol=1e-5)
    np.testing.assert_array_equal(model.predict(x), (z > 0).astype(np.int64))
    assert model.predict(x).shape == (40,)
    multi = fm.MLP([4, 8, 3], seed=1, loss="bce")
    assert multi.predict(x).shape == (40, 3) and multi.predict_proba(x).shape == (40, 3)


def test_predict_proba_bce_keeps_relative_accuracy_for_negative_logits():
    # sigmoid(z) for z down to -80 to float32 relative accuracy, not rounded to 0 (log of the
    # probability stays finite); the 1x1 identity model makes the logits exactly z.
    model = fm.MLP([1, 1], loss="bce", seed=0)
    model.set_weights([np.ones((1, 1), np.float32), np.zeros(1, np.float32)])
    z = np.array([-80.0, -30.0, -20.0, -17.0, -10.0, 0.0, 10.0, 30.0], np.float32)[:, None]
    p = model.predict_proba(z)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z[:, 0].astype(np.float64))), rtol=1e-6)
    assert p.dtype == np.float32 and p.shape == (8,)


def test_predict_mse(rng):
    model = fm.MLP([4, 8, 2], seed=1, loss="mse")
    x, _ = data(rng)
    np.testing.assert_array_equal(model.predict(x), model(x))
    # One output: 1-D, as scikit-learn's MLPRegressor and this model's 1-D targets; an (n, 1)
    # prediction minus an (n,) target would broadcast to (n, n).
    single = fm.MLP([4, 8, 1], seed=1, loss="mse")
    assert single.predict(x).shape == (10,) and single.predict(x).dtype == np.float32
    np.testing.assert_array_equal(single.predict(x), single(x)[:, 0])
    with pytest.raises(ValueError, match=r"^loss: predict_proba needs a classification loss"):
        model.predict_proba(x)


def test_train_step_with_a_loss_sets_the_model_loss(rng):
    model = fm.MLP([4, 8, 1], seed=1)
    opt = fm.optim.SGD(model, lr=0.1)
    x, _ = data(rng)
    model.train_step(x, (x[:, 0] > 0).astype(np.float32), loss="bce", optimizer=opt)
    assert model.loss == "bce"
    model.loss = "mse"
    assert model.loss == "mse"
    with pytest.raises(ValueError, match=r"^loss: unknown 'l1'"):
        model.loss = "l1"


def test_train_and_eval_modes(rng):
    model = fm.MLP([4, 8, 3], dropout=0.5, seed=0)
    assert model.eval() is model and not model.training
    assert model.train() is model and model.training
    x, y = data(rng)
    opt = fm.optim.SGD(model, lr=0.0)  # lr 0: only the mode matters
    model.eval()
    model.train_step(x, y, optimizer=opt)
    assert model.rng_offset == 0  # eval: no dropout in the step
    model.train()
    model.train_step(x, y, optimizer=opt)
    assert model.rng_offset == 10 * 8


def test_training_reduces_the_loss(rng):
    """A smoke test of the whole path: a separable problem is learned."""
    x = rng.standard_normal((200, 2)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = fm.MLP([2, 16, 2], seed=0)
    opt = fm.optim.Adam(model, lr=0.05)
    first = model.evaluate(x, y)
    for _ in range(100):
        model.train_step(x, y, optimizer=opt)
    last = model.evaluate(x, y)
    assert last["loss"] < 0.5 * first["loss"]
    assert last["accuracy"] > 0.95


# ---------------------------------------------------------------- persistence


def test_save_load_round_trip_is_exact(rng, tmp_path):
    model = fm.MLP(
        [5, 9, 7, 3],
        activation=["elu", "prelu"],
        dropout=[0.1, 0.3],
        init="xavier",
        seed=17,
        activation_alpha=[0.7, 0.2],
        loss="hinge",
    )
    opt = fm.optim.Adam(model, lr=0.01)
    x, y = data(rng, n=20, d=5)
    for _ in range(3):
        model.train_step(x, y, optimizer=opt)
    model.eval()
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fm.load(path)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(x), loaded.predict(x))
    np.testing.assert_array_equal(model(x), loaded(x))
    assert repr(model) == repr(loaded)
    assert (loaded.loss, loaded.training, loaded.rng_offset, loaded.seed) == (
        "hinge",
        False,
        model.rng_offset,
        17,
    )
    assert loaded.activation_alphas == model.activation_alphas
    # The dropout stream continues where it was: the same next training step.
    model.train()
    loaded.train()
    a = model.train_step(x, y, optimizer=opt)
    b = loaded.train_step(x, y, optimizer=fm.optim.SGD(loaded, lr=0.0))
    assert a == b


def test_save_adds_npz_and_load_finds_it(tmp_path):
    model = fm.MLP([3, 4, 2], seed=5)
    model.save(tmp_path / "m")  # NumPy appends .npz
    assert (tmp_path / "m.npz").exists()
    for path in (tmp_path / "m", tmp_path / "m.npz", str(tmp_path / "m.npz")):
        np.testing.assert_array_equal(fm.load(path).get_weights()[0], model.get_weights()[0])


def test_save_refuses_a_diverged_model_that_load_could_not_read(tmp_path):
    """An update can overflow with a finite loss and gradient (lr = 1e30 here); the next step
    would raise, but save() must not write a file that load() rejects."""
    model = fm.MLP([4, 3], loss="mse")
    opt = fm.optim.SGD(model, lr=1e30)
    model.train_step(np.full((2, 4), 1e10, np.float32), np.zeros((2, 3), np.float32), optimizer=opt)
    assert not all(np.isfinite(w).all() for w in model.get_weights())
    with pytest.raises(ValueError, match=r"^model: weights\[0\] contains NaN or infinite"):
        model.save(tmp_path / "diverged")
    assert not (tmp_path / "diverged.npz").exists()


def test_deepcopy_and_pickle_snapshot_the_model(rng):
    model = fm.MLP([5, 7, 6, 3], activation=["prelu", "elu"], dropout=0.3, seed=4, loss="hinge")
    x = rng.standard_normal((8, 5)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    opt = fm.optim.Adam(model, lr=1e-2)
    model.train_step(x, y, optimizer=opt)
    for copy_of in (copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))):
        snap = copy_of(model)
        assert type(snap) is fm.MLP and snap._net is not model._net
        for a, b in zip(snap.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)
        assert (snap.loss, snap.training, snap.rng_offset) == ("hinge", True, model.rng_offset)
        assert (snap.activations, snap.dropout) == (model.activations, model.dropout)
        # Independent from here on, and the same steps give the same bits (dropout included).
        before = [w.copy() for w in snap.get_weights()]
        a = model.train_step(x, y, optimizer=fm.optim.SGD(model, lr=0.1))
        for w, w0 in zip(snap.get_weights(), before):
            np.testing.assert_array_equal(w, w0)
        model.set_weights(before)
        model.rng_offset = snap.rng_offset
        b = snap.train_step(x, y, optimizer=fm.optim.SGD(snap, lr=0.1))
        assert a == b


class _LabelledMLP(fm.MLP):
    """A user's subclass with a constructor of its own and an attribute it adds."""

    def __init__(self, classes: list[str]) -> None:
        super().__init__([2, 3, len(classes)], seed=1)
        self.classes_ = classes


def test_copies_keep_the_subclass_and_added_attributes():
    # PyTorch's deepcopy of a Module keeps its class and attributes; a copy that came back as a
    # plain MLP lost what a subclass adds (here, the class names).
    model = _LabelledMLP(["cat", "dog"])
    model.note = {"run": 3}
    x = np.ones((2, 2), np.float32)
    for copy_of in (copy.deepcopy, copy.copy, lambda m: pickle.loads(pickle.dumps(m))):
        snap = copy_of(model)
        assert type(snap) is _LabelledMLP and snap._net is not model._net
        assert snap.classes_ == ["cat", "dog"] and snap.note == {"run": 3}
        np.testing.assert_array_equal(snap.forward(x), model.forward(x))
    assert copy.deepcopy(model).note is not model.note  # a deep copy of the added state too


def test_mlp_attribute_list_matches_the_attributes_mlp_sets(rng):
    # __reduce__ rebuilds these and copies every other attribute: the list must name them all.
    from fastmlp.nn import _MLP_ATTRIBUTES

    model = fm.MLP([4, 5, 3], activation="prelu", dropout=0.2, seed=0)
    x, y = data(rng)
    model.train_step(x, y, optimizer=fm.optim.Adam(model))
    model.loss = "hinge"
    model.eval()
    model.to("cpu")
    model.fused = False
    assert set(vars(model)) == _MLP_ATTRIBUTES


def test_save_refuses_a_folder(tmp_path):
    # np.savez would write "folder/" as the hidden file "folder/.npz", which load cannot find.
    model = fm.MLP([3, 2])
    (tmp_path / "taken.npz").mkdir()  # "taken" would be written as the folder taken.npz
    for target in (str(tmp_path) + "/", tmp_path, str(tmp_path), tmp_path / "taken"):
        with pytest.raises(ValueError, match=r"^path: .* is a folder; give a file name"):
            model.save(target)
    assert list(tmp_path.iterdir()) == [tmp_path / "taken.npz"]


def test_load_turns_an_unsupported_zip_into_a_value_error(tmp_path):
    # zipfile raises NotImplementedError for an archive version (or compression) it cannot
    # read; load() documents ValueError for every file that is not a readable model.
    path = tmp_path / "m.npz"
    fm.MLP([3, 2]).save(path)
    raw = bytearray(path.read_bytes())
    entry = raw.index(b"PK\x01\x02")  # the first central-directory entry
    raw[entry + 6] = 110  # "version needed to extract": 11.0
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"^path: .* is not a fastmlp model .*NotImplementedError"):
        fm.load(path)


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ValueError, match=r"^path: .* is not a fastmlp model"):
        fm.load(path)


def _model_file(tmp_path, edit=None, arrays=None):
    """A file MLP.save wrote, its config changed by ``edit`` and its arrays by ``arrays``."""
    model = fm.MLP([3, 4, 2], seed=0)
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path) as f:
        config, params = json.loads(str(f["config"])), {k: f[k] for k in f.files if k != "config"}
    if edit is not None:
        edit(config)
    if arrays is not None:
        arrays(params)
    np.savez(path, config=np.array(json.dumps(config)), **params)
    return path


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.write_text("not a model"), r"not an \.npz archive"),
        (lambda p: p.write_bytes(b""), r"not an \.npz archive"),
        (lambda p: np.save(p, np.zeros(3)), r"a single \.npy array"),
        (lambda p: np.savez(p, config=np.array("[1, 2]")), "its config is not a JSON object"),
        (lambda p: np.savez(p, config=np.array("{")), "its config is not JSON"),
        (
            lambda p: np.savez(p, config=np.array([{"a": 1}], dtype=object)),
            "config: ValueError: Object arrays cannot be loaded",
        ),
    ],
)
def test_load_names_files_that_are_not_models(tmp_path, make, fragment):
    path = tmp_path / "m.npz"
    make(path)
    if not path.exists():
        path = tmp_path / "m.npz.npy"  # np.save adds .npy
    with pytest.raises(
        ValueError, match=rf"^path: .* is not a fastmlp model written by MLP\.save \(.*{fragment}"
    ):
        fm.load(path)


@pytest.mark.parametrize(
    ("edit", "arrays", "fragment"),
    [
        (lambda c: c.pop("layer_sizes"), None, "its config lacks layer_sizes"),
        (lambda c: c.update(version=True), None, "version True"),
        (None, lambda a: a.update(param_extra=np.zeros(1)), "expected param_0..param_4"),
        (None, lambda a: a.pop("param_1"), "expected param_0..param_2"),
        # A tiny file whose config claims huge layers: refused before any model is built.
        (lambda c: c.update(layer_sizes=[3, 40000, 40000, 2]), None, r"4 arrays for 3 layers"),
        (lambda c: c.update(layer_sizes=[3, 5, 2]), None, r"param_0 has shape \(3, 4\)"),
        (lambda c: c.update(layer_sizes="3,4,2"), None, "layer_sizes: expected a list of ints"),
    ],
)
def test_load_checks_config_and_arrays_before_building(tmp_path, edit, arrays, fragment):
    path = _model_file(tmp_path, edit, arrays)
    with pytest.raises(ValueError, match=rf"^path: .* is not a fastmlp model .*{fragment}"):
        fm.load(path)


def test_load_names_the_file_in_model_errors_and_reads_file_objects(tmp_path):
    path = _model_file(tmp_path, lambda c: c.update(training="yes"))
    with pytest.raises(ValueError, match=r"^path: '.*m\.npz': mode: expected True or False"):
        fm.load(path)
    path = _model_file(tmp_path, lambda c: c.update(version=2))
    with pytest.raises(ValueError, match=r"is a fastmlp model of format version 2; this fastmlp"):
        fm.load(path)
    # A file that cannot be read is not called "not a model": the OS error comes through.
    with pytest.raises(IsADirectoryError):
        fm.load(tmp_path)
    model, buffer = fm.MLP([3, 4, 2], seed=1), io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    for a, b in zip(fm.load(buffer).get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- optimizers


def test_optimizer_lr_and_step_count(rng):
    model = fm.MLP([4, 8, 3], seed=0)
    opt = fm.optim.SGD(model, lr=0.1, momentum=0.9)
    assert opt.lr == 0.1 and opt.step_count == 0
    x, y = data(rng)
    model.train_step(x, y, optimizer=opt)
    opt.lr = 0.02
    assert opt.lr == 0.02
    model.train_step(x, y, optimizer=opt)
    assert opt.step_count == 2
    assert "SGD(lr=0.02" in repr(opt)
    with pytest.raises(ValueError, match=r"^lr: expected a value >= 0"):
        opt.lr = -1.0


def test_a_new_optimizer_starts_from_zero_state(rng):
    x, y = data(rng)
    a, b = fm.MLP([4, 8, 3], seed=0), fm.MLP([4, 8, 3], seed=0)
    oa = fm.optim.Adam(a, lr=0.01)
    a.train_step(x, y, optimizer=oa)
    a.set_weights(b.get_weights())
    a.train_step(x, y, optimizer=fm.optim.Adam(a, lr=0.01))  # fresh moments, step 1
    b.train_step(x, y, optimizer=fm.optim.Adam(b, lr=0.01))
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)
    assert oa.step_count == 1


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "pattern"),
    [
        (fm.optim.SGD, {"lr": -0.1}, ValueError, "^lr: "),
        (fm.optim.SGD, {"lr": "0.1"}, TypeError, "^lr: "),
        (fm.optim.SGD, {"lr": 0.1, "momentum": -0.5}, ValueError, "^momentum: "),
        (fm.optim.SGD, {"lr": 0.1, "nesterov": True}, ValueError, "^nesterov: "),
        (fm.optim.SGD, {"lr": 0.1, "dampening": 2.0}, ValueError, "^dampening: "),
        (fm.optim.SGD, {"lr": 0.1, "weight_decay": -1.0}, ValueError, "^weight_decay: "),
        (fm.optim.SGD, {"lr": 0.1, "l1": float("nan")}, ValueError, "^l1: "),
        (fm.optim.AdaGrad, {"eps": 0.0}, ValueError, "^eps: "),
        (fm.optim.AdaGrad, {"lr_decay": -1.0}, ValueError, "^lr_decay: "),
        (fm.optim.RMSProp, {"alpha": 1.5}, ValueError, "^alpha: "),
        (fm.optim.Adam, {"betas": (0.9, 1.0)}, ValueError, r"^betas\[1\]: "),
        (fm.optim.Adam, {"betas": 0.9}, ValueError, "^betas: "),
        (fm.optim.AdamW, {"weight_decay": -0.01}, ValueError, "^weight_decay: "),
        # float32 is what the kernels get: a value that vanishes or overflows there is named as
        # the user wrote it, not as the engine's "got 0" / "got inf".
        (fm.optim.Adam, {"eps": 1e-50}, ValueError, r"^eps: .*got 1e-50 \(0 in float32"),
        (fm.optim.SGD, {"lr": 1e39}, ValueError, r"^lr: .*got 1e\+39 \(inf in float32"),
        (fm.optim.SGD, {"lr": None}, TypeError, "^lr: expected a real number, got NoneType"),
        # bool("False") is True: these turned Nesterov momentum / centering on.
        (fm.optim.SGD, {"momentum": 0.9, "nesterov": "False"}, TypeError, "^nesterov: expected T"),
        (fm.optim.SGD, {"nesterov": 0}, TypeError, "^nesterov: expected True or False, got int"),
        (fm.optim.RMSProp, {"centered": "no"}, TypeError, "^centered: expected True or False"),
    ],
)
def test_optimizer_argument_rules(cls, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        cls(fm.MLP([2, 2]), **kwargs)


def test_train_mode_takes_a_bool_only():
    model = fm.MLP([2, 2])
    assert model.train(np.bool_(True)).training and not model.train(False).training
    with pytest.raises(TypeError, match=r"^mode: expected True or False, got str"):
        model.train("no")  # bool("no") is True: training would switch on
    assert not model.training


def test_optimizer_hyperparameters_other_than_lr_are_read_only():
    # The engine takes them at construction: an edit changed nothing but what repr() showed.
    model = fm.MLP([4, 8, 3], seed=0)
    opt = fm.optim.SGD(model, lr=0.1, momentum=0.9, nesterov=np.True_)
    assert opt.defaults["nesterov"] is True
    with pytest.raises(TypeError):
        opt.defaults["momentum"] = 0.0  # type: ignore[index]
    with pytest.raises(AttributeError, match=r"^momentum: fixed at construction .*only lr can"):
        opt.momentum = 0.0
    with pytest.raises(AttributeError):
        opt.defaults = {}  # type: ignore[misc]
    adam = fm.optim.Adam(model)
    with pytest.raises(AttributeError, match=r"^betas: fixed at construction"):
        adam.betas = (0.5, 0.5)
    assert repr(opt) == (
        "SGD(lr=0.1, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.0, l1=0.0)"
    )
    opt.lr = 0.2  # lr stays settable, and so do other attributes
    opt.note = "mine"
    assert opt.lr == 0.2 and opt.note == "mine"
    # The defaults rebuild the optimizer, as the copy error suggests.
    again = type(adam)(model, lr=adam.lr, **adam.defaults)
    assert repr(again) == repr(adam)


def test_optimizer_copy_is_refused_as_it_would_share_the_engine_state():
    model = fm.MLP([4, 8, 3], seed=0)
    opt = fm.optim.SGD(model, lr=0.1)
    # copy.copy shared the C++ state: setting lr on the copy changed the original's steps.
    with pytest.raises(TypeError, match=r"^cannot copy an optimizer \(SGD\): .*share.* SGD\(model"):
        copy.copy(opt)
    with pytest.raises(TypeError):
        copy.deepcopy(opt)


def test_optimizer_needs_a_model():
    with pytest.raises(TypeError, match=r"^model: expected a fastmlp.MLP"):
        fm.optim.Adam(object())


# ---------------------------------------------------------------- argument rules


def test_layer_sizes_from_numpy():
    assert fm.MLP(np.array([4, 8, 2])).layer_sizes == [4, 8, 2]
    assert fm.MLP([np.int64(4), np.int32(2)]).layer_sizes == [4, 2]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"layer_sizes": [4]}, ValueError, "^layer_sizes: expected at least 2"),
        ({"layer_sizes": [4, 0, 2]}, ValueError, "^layer_sizes: entry 1 is 0"),
        ({"layer_sizes": [4, 2.5, 2]}, TypeError, "^layer_sizes: entry 1"),
        ({"layer_sizes": "784,10"}, TypeError, "^layer_sizes: "),
        ({"layer_sizes": np.array([4.0, 3.0])}, TypeError, "^layer_sizes: entry 0"),
        # 2**64 weights: wrapped to 0 in the engine's int64 count (131073 parameters reported),
        # then NumPy's "array is too big" from the initialisation.
        (
            {"layer_sizes": [2**48, 2**16, 1]},
            ValueError,
            r"^layer_sizes: \[281474976710656, 65536, 1\] has 18446744073709682689 parameters, "
            r"more than can be allocated",
        ),
        ({"layer_sizes": [2**30, 2**30 + 1, 1]}, ValueError, r"^layer_sizes: .* more than can"),
        (
            {"activation": "elu", "activation_alpha": 1e-46},
            ValueError,
            r"^activation_alpha: .*0 in",
        ),
        ({"activation": "swish"}, ValueError, "^activation: unknown 'swish'"),
        ({"activation": ["relu"]}, ValueError, "^activation: expected 2 entries"),
        ({"dropout": 1.0}, ValueError, "^dropout: entry 0 is 1.0"),
        ({"dropout": -0.1}, ValueError, "^dropout: entry 0"),
        ({"dropout": [0.1, 0.2, 0.3]}, ValueError, "^dropout: expected 2 entries"),
        ({"dropout": "0.1"}, TypeError, "^dropout: "),
        ({"init": "zeros"}, ValueError, "^init: unknown 'zeros'"),
        ({"seed": -1}, ValueError, "^seed: "),
        ({"seed": 1.5}, TypeError, "^seed: "),
        ({"device": "tpu"}, ValueError, "^device: unknown device 'tpu'"),
        ({"device": "cuda:1"}, ValueError, "^device: only the first GPU"),
        ({"device": 0}, TypeError, "^device: expected a string"),
        ({"activation_alpha": 0.1}, ValueError, "^activation_alpha: "),  # relu takes none
        ({"activation": "elu", "activation_alpha": 0.0}, ValueError, "^activation_alpha: "),
        ({"activation": "leaky_relu", "activation_alpha": "x"}, TypeError, "^activation_alpha"),
        ({"loss": "l2"}, ValueError, "^loss: unknown 'l2'; known: 'cross_entropy'"),
    ],
)
def test_constructor_rules(kwargs, error, pattern):
    args = {"layer_sizes": [4, 5, 6, 3], **kwargs}
    with pytest.raises(error, match=pattern):
        fm.MLP(**args)


def test_layers_too_large_for_memory_are_named():
    # Within the engine's 2**60 bound but not this machine's memory: the engine's MemoryError
    # said only "std::bad_alloc".
    with pytest.raises(
        MemoryError,
        match=r"^layer_sizes: \[2, 100000000, 100000000, 2\] has 10,000,000,600,000,002 "
        r"parameters, more than this machine could allocate",
    ):
        fm.MLP([2, 10**8, 10**8, 2])


def test_set_num_threads_takes_an_int_at_least_one(restore_threads):
    fm.set_num_threads(np.int64(1))
    assert fm.get_num_threads() == 1
    # pybind11 took True as 1 and answered 1.5 with its signature dump.
    with pytest.raises(TypeError, match=r"^n: expected an int, got bool"):
        fm.set_num_threads(True)
    with pytest.raises(TypeError, match=r"^n: expected an int, got float"):
        fm.set_num_threads(1.5)
    with pytest.raises(ValueError, match=r"^n: expected >= 1, got 0"):
        fm.set_num_threads(0)
    with pytest.raises(ValueError, match=r"^n: expected <= 1024"):
        fm.set_num_threads(2**31)
    assert fm.get_num_threads() == 1


@pytest.fixture
def setup(rng):
    model = fm.MLP([4, 6, 3], seed=0)
    opt = fm.optim.SGD(model, lr=0.1)
    x, y = data(rng)
    return model, opt, x, y


def _step(model, opt, x, y, **kw):
    return model.train_step(x, y, optimizer=opt, **kw)


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        (lambda x, y: (x[:, :3], y), ValueError, "^x: expected 4 columns"),
        (lambda x, y: (x[0], y), ValueError, "^x: expected a 2-D array"),
        (lambda x, y: (x, y[:-1]), ValueError, "^y: expected 10 labels"),
        (lambda x, y: (x, y + 3), ValueError, "^y: label .* is out of range"),
        (lambda x, y: (x, y - 1), ValueError, "^y: label -1 is out of range"),
        (lambda x, y: (x[:0], y[:0]), ValueError, "^x: empty batch"),
        (lambda x, y: (np.where(x > 1, np.inf, x), y), ValueError, "^x: contains NaN or inf"),
        (lambda x, y: (x.astype(np.int64), y), TypeError, "^x: expected a floating-point"),
        (lambda x, y: (x, y.astype(np.float32)), TypeError, "^y: expected integer class labels"),
        (lambda x, y: ("abc", y), TypeError, "^x: "),
    ],
)
def test_train_step_argument_rules(setup, change, error, pattern):
    model, opt, x, y = setup
    before = model.get_weights()
    xb, yb = change(x, y)
    with pytest.raises(error, match=pattern):
        _step(model, opt, xb, yb)
    with pytest.raises(error, match=pattern):
        model.loss_and_gradients(xb, yb)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert opt.step_count == 0


def test_float_target_rules(setup):
    model, opt, x, _ = setup
    t = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match=r"^y: expected shape \(10, 3\)"):
        _step(model, opt, x, t[:, :2], loss="mse")
    with pytest.raises(ValueError, match=r"^y: bce targets must lie in"):
        _step(model, opt, x, t + 2, loss="bce")
    with pytest.raises(ValueError, match=r"^y: contains NaN"):
        _step(model, opt, x, t * np.nan, loss="mse")


def test_masked_arrays_are_refused_by_every_entry_point(setup):
    # The mask would be dropped (np.asarray, or the engine reading the buffer): refused instead.
    model, opt, x, y = setup
    mx = np.ma.masked_array(x, mask=np.zeros_like(x, dtype=bool))
    my = np.ma.masked_array(y, mask=np.arange(len(y)) == 0)
    before = model.get_weights()
    pattern = r"^{}: masked arrays are not supported; pass \.filled\(\.\.\.\) or the unmasked"
    with pytest.raises(TypeError, match=pattern.format("x")):
        model.train_step(mx, y, optimizer=opt)  # float32 C-contiguous: the fast path's shape
    with pytest.raises(TypeError, match=pattern.format("y")):
        model.train_step(x, my, optimizer=opt)
    with pytest.raises(TypeError, match=pattern.format("y")):
        model.train_step(x, np.ma.masked_array(np.zeros((10, 3), np.float32)), "mse", opt)
    with pytest.raises(TypeError, match=pattern.format("x")):
        model.forward(mx)
    with pytest.raises(TypeError, match=pattern.format("y")):
        model.evaluate(x, my)
    with pytest.raises(TypeError, match=pattern.format("y")):
        model.loss_and_gradients(x, my)
    with pytest.raises(TypeError, match=pattern.format(r"weights\[0\]")):
        model.set_weights([np.ma.masked_array(w) for w in before])
    assert opt.step_count == 0
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (
            lambda m, x, y, opt: m.evaluate(x, y, batch_size=2**63),  # pybind11's argument dump
            r"^batch_size: expected <= 9223372036854775807, got 9223372036854775808$",
        ),
        (
            lambda m, x, y, opt: m.train_step(x, y, optimizer=opt, label_smoothing=10**400),
            r"^label_smoothing: expected a finite value, got 1e\+400 \(inf in float32",
        ),
    ],
)
def test_out_of_range_scalars_are_named(setup, call, pattern):
    model, opt, x, y = setup
    with pytest.raises(ValueError, match=pattern):
        call(model, x, y, opt)


def test_evaluate_takes_any_int64_batch_size(setup):
    model, _, x, y = setup
    assert model.evaluate(x, y, batch_size=2**63 - 1) == model.evaluate(x, y)


def test_train_step_optimizer_is_required_in_every_call_form(setup):
    model, opt, x, y = setup
    # The call forms in use: optimizer by keyword (with or without loss), or fourth positionally.
    assert math.isfinite(model.train_step(x, y, optimizer=opt))
    assert math.isfinite(model.train_step(x, y, loss="cross_entropy", optimizer=opt))
    assert math.isfinite(model.train_step(x, y, "cross_entropy", opt))
    assert math.isfinite(model.train_step(x, y, None, opt, label_smoothing=0.1))
    with pytest.raises(TypeError, match=r"^optimizer: .*\(it is required\), got None"):
        model.train_step(x, y)
    # The optimizer third, in loss's place: said so, not "optimizer: ... got None".
    pattern = r"^loss: expected a loss name, got an optimizer \(SGD\); .*optimizer=opt"
    with pytest.raises(TypeError, match=pattern):
        model.train_step(x, y, opt)
    with pytest.raises(TypeError, match=pattern):
        model.evaluate(x, y, opt)
    with pytest.raises(TypeError, match=pattern):
        model.loss_and_gradients(x, y, opt)
    assert opt.step_count == 4
    if sys.version_info >= (3, 11):  # typing.get_overloads
        # The annotation says it is required: no overload gives optimizer a default.
        overloads = typing.get_overloads(fm.MLP.train_step)
        assert len(overloads) == 2
        for f in overloads:
            param = inspect.signature(f).parameters["optimizer"]
            assert param.default is inspect.Parameter.empty, f


def test_loss_and_optimizer_rules(setup):
    model, opt, x, y = setup
    with pytest.raises(ValueError, match=r"^loss: unknown 'l1'; known: 'cross_entropy', 'mse'"):
        _step(model, opt, x, y, loss="l1")
    with pytest.raises(ValueError, match=r"^optimizer: it was built for another model"):
        model.train_step(x, y, optimizer=fm.optim.SGD(fm.MLP([4, 6, 3]), lr=0.1))
    with pytest.raises(TypeError, match=r"^optimizer: expected a fastmlp.optim optimizer"):
        model.train_step(x, y, optimizer=None)
    with pytest.raises(ValueError, match=r"^label_smoothing: only 'cross_entropy'"):
        _step(model, opt, x, np.zeros((10, 3), np.float32), loss="mse", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"^label_smoothing: expected a value in \[0, 1\]"):
        _step(model, opt, x, y, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"^loss: 'hinge' needs at least 2 outputs"):
        fm.MLP([4, 1]).loss_and_gradients(x, np.zeros(10, np.int64), "hinge")
    with pytest.raises(ValueError, match=r"^batch_size: expected >= 1"):
        model.evaluate(x, y, batch_size=0)


def test_engine_checks_survive_a_bypassed_python_layer(setup):
    """The bindings check again: a float64 x, a wrong shape or bad labels passed straight to
    _core raise instead of reading the wrong memory."""
    model, opt, x, y = setup
    net = model._net
    with pytest.raises(TypeError, match=r"^x: expected a float32 array"):
        net.loss_and_gradients(x.astype(np.float64), y, 0)
    with pytest.raises(ValueError, match=r"^x: expected shape \(\*, 4\)"):
        net.loss_and_gradients(np.ascontiguousarray(x[:, :3]), y, 0)
    with pytest.raises(ValueError, match=r"^y: label 7 at index 0 is out of range"):
        net.loss_and_gradients(x, np.full(10, 7, np.int64), 0)
    with pytest.raises(ValueError, match=r"^x: empty batch"):
        net.forward(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match=r"^loss: unknown loss kind"):
        net.loss_and_gradients(x, y, 9)
    # An optimizer's state is sized by its first step; _core refuses it for another model.
    other = fm.MLP([4, 7, 3])
    other._net.train_step(x, y, 0, 0.0, True, opt._state)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"^optimizer: its state was built for a model with 59"):
        net.train_step(x, y, 0, 0.0, True, opt._state)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_engine_hands_out_copies_of_parameters_and_gradients(setup):
    model, _, x, y = setup
    flat = model._net.parameters()
    flat[:] = 7.0  # the caller's copy: the model does not change
    assert not np.any(model._net.parameters() == 7.0)
    _, grads = model._net.loss_and_gradients(x, y, 0)
    grads[:] = 7.0
    assert not np.any(model._net.gradients() == 7.0)


def test_gradients_and_weights_read_while_another_thread_steps_are_consistent(rng):
    """loss_and_gradients and get_weights copy under the engine's lock, in the same call as the
    pass they report: another thread's train_step cannot swap in its own gradients or tear the
    weights half-way through an update (before, 5-10% of such reads were wrong)."""
    x1, y1 = data(rng, n=256, d=64, classes=10)
    x2, y2 = data(rng, n=256, d=64, classes=10)
    model = fm.MLP([64, 256, 10], seed=0)
    frozen = fm.optim.SGD(model, lr=0.0)  # steps that rewrite the gradients, not the weights
    _, expected = model.loss_and_gradients(x1, y1)
    stop = threading.Event()

    def step_other_batch():
        while not stop.is_set():
            model.train_step(x2, y2, optimizer=frozen)

    stepper = threading.Thread(target=step_other_batch)
    stepper.start()
    try:
        wrong = 0
        for _ in range(300):
            _, grads = model.loss_and_gradients(x1, y1)
            wrong += not all(np.array_equal(g, e) for g, e in zip(grads, expected))
    finally:
        stop.set()
        stepper.join()
    assert wrong == 0

    # Weights read during updates must each be a state the model passed through.
    reference = fm.MLP([64, 256, 10], seed=0)
    ref_opt = fm.optim.SGD(reference, lr=0.05)
    states = [np.concatenate([w.ravel() for w in reference.get_weights()])]
    for _ in range(40):
        reference.train_step(x1, y1, optimizer=ref_opt)
        states.append(np.concatenate([w.ravel() for w in reference.get_weights()]))
    model = fm.MLP([64, 256, 10], seed=0)
    opt = fm.optim.SGD(model, lr=0.05)
    snapshots = _read_while_training(
        lambda: np.concatenate([w.ravel() for w in model.get_weights()]), model, opt, x1, y1, 40
    )
    torn = sum(not any(np.array_equal(s, t) for t in states) for s in snapshots)
    assert snapshots and torn == 0


def test_threads_can_train_models_concurrently(rng):
    """The engine releases the GIL; concurrent steps on separate models give the same results
    as sequential ones (no shared scratch)."""
    x, y = data(rng, n=64, d=4)

    def run(out, i):
        model = fm.MLP([4, 32, 3], seed=i)
        opt = fm.optim.Adam(model, lr=0.01)
        for _ in range(20):
            model.train_step(x, y, optimizer=opt)
        out[i] = model.get_weights()

    sequential, concurrent = {}, {}
    for i in range(3):
        run(sequential, i)
    threads = [threading.Thread(target=run, args=(concurrent, i)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        for a, b in zip(sequential[i], concurrent[i]):
            np.testing.assert_array_equal(a, b)


def test_fused_flag_on_the_cpu():
    # fused= only chooses a CUDA path; on the CPU it is kept (for .to("cuda")) and never used.
    model = fm.MLP([4, 8, 2])
    assert model.fused is True and model.uses_fused() is False
    model = fm.MLP([4, 8, 2], fused=False)
    assert model.fused is False and model.uses_fused(training=False) is False
    model.fused = True
    assert model.fused is True
    with pytest.raises(TypeError, match="fused: expected True or False, got int"):
        fm.MLP([4, 8, 2], fused=1)
    with pytest.raises(TypeError, match="fused: expected True or False, got str"):
        model.fused = "yes"


@pytest.mark.parametrize("value", ["no", "False", 0, 1, None], ids=repr)
def test_uses_fused_takes_a_bool_only(value):
    # Checked on every device: bool("no") is True, and a CUDA model would answer for training.
    model = fm.MLP([4, 8, 2])
    with pytest.raises(
        TypeError, match=rf"^training: expected True or False, got {type(value).__name__}$"
    ):
        model.uses_fused(training=value)
    assert model.uses_fused(training=np.False_) is False


def test_probabilities_that_round_to_one_in_float32_are_refused_as_given():
    """0.99999999 < 1, but the kernels take float32 and would see 1.0: refused in Python, with
    the value the user wrote (the C++ check could only say "got 1")."""
    p = 0.99999999
    note = r"0\.99999999 \(1\.0 in float32"
    with pytest.raises(ValueError, match=rf"^dropout: entry 0 is {note}"):
        fm.MLP([3, 4, 2], dropout=p)
    model = fm.MLP([3, 4, 2])
    with pytest.raises(ValueError, match=rf"^betas\[1\]: expected a value in \[0, 1\), got {note}"):
        fm.optim.Adam(model, betas=(0.9, p))
    with pytest.raises(ValueError, match=rf"^p: expected a probability in \[0, 1\), got {note}"):
        fm.ops.dropout(np.ones((2, 2), np.float32), p, seed=0)


def test_forward_with_dropout_draws_the_training_masks(rng):
    """forward(x, dropout=True): the masks a training step would draw at rng_offset (checked
    against the reference), the offset advancing; the default stays eval mode in either mode."""
    model = fm.MLP([5, 16, 3], dropout=0.5, seed=2)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    plain = model.forward(x)
    offset = model.rng_offset
    noisy = model.forward(x, dropout=True)
    assert model.rng_offset == offset + 4 * 16 and not np.array_equal(noisy, plain)
    w1, b1, w2, b2 = model.get_weights()
    h = np.maximum(x @ w1 + b1, 0) * fm.reference.dropout_mask((4, 16), 0.5, seed=2, offset=offset)
    np.testing.assert_allclose(noisy, h @ w2 + b2, rtol=1e-5, atol=1e-6)
    model.train()
    np.testing.assert_array_equal(model.forward(x), plain)  # training mode alone: no dropout
    with pytest.raises(TypeError, match=r"^dropout: expected a bool"):
        model.forward(x, dropout=1)


def test_dropout_offsets_skip_layers_without_dropout(rng):
    """A hidden layer with dropout 0 draws nothing: the next dropout layer's masks start at
    rng_offset itself, and the pass advances it by that layer's n * width only (the class
    docstring says so)."""
    model = fm.MLP([5, 7, 16, 3], dropout=[0.0, 0.5], seed=2)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    offset = model.rng_offset
    noisy = model.forward(x, dropout=True)
    assert model.rng_offset == offset + 4 * 16
    w1, b1, w2, b2, w3, b3 = model.get_weights()
    h1 = np.maximum(x @ w1 + b1, 0)
    mask = fm.reference.dropout_mask((4, 16), 0.5, seed=2, offset=offset)
    h2 = np.maximum(h1 @ w2 + b2, 0) * mask
    np.testing.assert_allclose(noisy, h2 @ w3 + b3, rtol=1e-5, atol=1e-6)
    doc = " ".join(fm.MLP.__doc__.split())
    assert "every earlier layer with ``dropout > 0``" in doc


def test_arrays_that_went_through_pickle_are_accepted(rng):
    """An unpickled array (multiprocessing, joblib) has a float32 dtype object of its own: equal
    to np.float32's, not the same object. The bindings compared identity and refused it with
    "expected a float32 array, got float32"."""
    x, y = data(rng, n=6, d=4)
    px, py, pw = (pickle.loads(pickle.dumps(a)) for a in (x, y.astype(np.int64), x[:4, :3]))
    assert px.dtype == np.float32 and px.dtype is not np.dtype(np.float32)
    np.testing.assert_array_equal(ops.relu(px), ops.relu(x))
    np.testing.assert_array_equal(ops.matmul(px, pw), ops.matmul(x, x[:4, :3]))
    logits = np.zeros((6, 3), np.float32)
    assert ops.softmax_cross_entropy(logits, py)[0] == ops.softmax_cross_entropy(logits, y)[0]
    param = pickle.loads(pickle.dumps(np.ones(3, np.float32)))
    ops.sgd_step(param, np.ones(3, np.float32), lr=0.5, step=1)
    np.testing.assert_array_equal(param, np.full(3, 0.5, np.float32))

    model, twin = fm.MLP([4, 8, 3], seed=0), fm.MLP([4, 8, 3], seed=0)
    model.set_weights([pickle.loads(pickle.dumps(w)) for w in model.get_weights()])
    np.testing.assert_array_equal(model.predict_proba(px), twin.predict_proba(x))
    loss = model.train_step(px, py, optimizer=fm.optim.SGD(model, lr=0.1))
    assert loss == twin.train_step(x, y, optimizer=fm.optim.SGD(twin, lr=0.1))


@pytest.mark.parametrize("how", ["pickle", "save"])
def test_a_snapshot_taken_while_another_thread_trains_is_one_step(how):
    # pickle read the dropout offset and then the weights, save the other way round, in two
    # locked calls: a step on another thread fell between them in 60 of 61 pickles (weights of
    # step k, offset of step k + 1), and a model loaded from one replayed other dropout masks.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 64)).astype(np.float32)
    y = rng.integers(0, 10, 256)

    def make():
        model = fm.MLP([64, 128, 64, 10], dropout=0.1, seed=1)
        return model, fm.optim.Adam(model, lr=1e-2)

    def key(weights):
        return b"".join(w.tobytes() for w in weights)

    model, opt = make()
    replay = {key(model.get_weights()): model.rng_offset}  # serial: the state after each step
    for _ in range(100):
        model.train_step(x, y, optimizer=opt)
        replay[key(model.get_weights())] = model.rng_offset

    model, opt = make()

    def take():
        if how == "pickle":
            copy_ = pickle.loads(pickle.dumps(model))
        else:
            buf = io.BytesIO()
            model.save(buf)
            buf.seek(0)
            copy_ = fm.load(buf)
        return copy_.get_weights(), copy_.rng_offset

    snapshots = _read_while_training(take, model, opt, x, y, 100)
    assert snapshots
    torn = [offset for weights, offset in snapshots if replay.get(key(weights)) != offset]
    assert not torn, f"{len(torn)} of {len(snapshots)} snapshots mix two steps"


def _read_while_training(read, model, opt, x, y, steps):
    """Calls ``read()`` on a second thread, over and over, while this one takes ``steps``
    training steps; returns what it read."""
    done, results = threading.Event(), []

    def loop():
        while not done.is_set():
            results.append(read())

    reader = threading.Thread(target=loop)
    reader.start()
    try:
        for _ in range(steps):
            model.train_step(x, y, optimizer=opt)
    finally:
        done.set()
        reader.join()
    return results


def test_optimizer_defaults_are_the_documented_pytorch_ones():
    """The optimizers' defaults, as documented and as PyTorch's (the engine tests compare with
    the reference through ops' own defaults, so a changed class default went unseen)."""
    model = fm.MLP([2, 3, 2], seed=0)
    adagrad = fm.optim.AdaGrad(model)
    assert adagrad.lr == 0.01
    assert dict(adagrad.defaults) == {"lr_decay": 0.0, "weight_decay": 0.0, "eps": 1e-10, "l1": 0.0}
    rms = fm.optim.RMSProp(model)
    assert rms.lr == 0.01
    assert dict(rms.defaults) == {
        "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False,
        "l1": 0.0,
    }  # fmt: skip
    adam, adamw = fm.optim.Adam(model), fm.optim.AdamW(model)
    assert adam.lr == adamw.lr == 1e-3
    assert dict(adam.defaults) == {
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "l1": 0.0,
    }
    assert dict(adamw.defaults) == {**adam.defaults, "weight_decay": 0.01}
    sgd = fm.optim.SGD(model)
    assert sgd.lr == 0.01
    assert dict(sgd.defaults) == {
        "momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0, "l1": 0.0,
    }  # fmt: skip


def test_optimizer_defaults_match_torch_optim():
    """Same check against torch.optim's signatures where torch is installed (SGD's lr aside:
    torch's is 1e-3)."""
    torch = pytest.importorskip("torch")
    pairs = [
        (fm.optim.SGD, torch.optim.SGD, {"lr"}),
        (fm.optim.AdaGrad, torch.optim.Adagrad, set()),
        (fm.optim.RMSProp, torch.optim.RMSprop, set()),
        (fm.optim.Adam, torch.optim.Adam, set()),
        (fm.optim.AdamW, torch.optim.AdamW, set()),
    ]
    for ours, theirs, skip in pairs:
        mine = inspect.signature(ours.__init__).parameters
        other = inspect.signature(theirs.__init__).parameters
        for name in (set(mine) & set(other)) - skip - {"self", "params"}:
            assert mine[name].default == other[name].default, (ours.__name__, name)


def test_predict_bce_at_a_logit_of_exactly_zero_is_class_zero():
    """predict is ``sigmoid > 0.5``, i.e. logit > 0, as evaluate's accuracy counts it: a logit
    of exactly 0 (probability 0.5) is class 0."""
    model = fm.MLP([2, 1], loss="bce", seed=0)
    model.set_weights([np.zeros((2, 1), np.float32), np.zeros(1, np.float32)])
    x = np.ones((4, 2), np.float32)
    assert (model(x) == 0).all()
    np.testing.assert_array_equal(model.predict(x), np.zeros(4, np.int64))
    assert model.evaluate(x, np.zeros(4, np.float32))["accuracy"] == 1.0


def test_set_weights_finds_nan_in_a_bias_wider_than_a_check_block():
    """check_finite reads blocks of 65536 / columns rows: a 1-D array of more than 32768 values
    is one row per block, and a NaN in its last value is still found."""
    model = fm.MLP([1, 40000, 2], seed=0)
    weights = model.get_weights()
    weights[1] = weights[1].copy()
    weights[1][-1] = np.nan
    with pytest.raises(ValueError, match=r"^weights\[1\]: contains NaN or infinite values"):
        model.set_weights(weights)


def test_engine_refuses_what_the_python_layer_would_when_bypassed(rng):
    """The engine's own checks, reached through model._net and _core.Network: label smoothing
    with a loss other than cross-entropy, NaN weights, a dropout probability of 1."""
    model = fm.MLP([4, 6, 3], seed=0)
    net = model._net
    x, y = data(rng)
    opt = fm.optim.SGD(model, lr=0.1)
    before = model.get_weights()
    for call in (
        lambda: net.loss_and_gradients(x, y, 2, 0.1),
        lambda: net.train_step(x, y, 2, 0.1, True, opt._state),
    ):
        with pytest.raises(ValueError, match=r"^label_smoothing: only the cross_entropy loss"):
            call()
    bad = net.parameters()
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"^weights: contain NaN or infinite values"):
        net.set_parameters(bad)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(
        ValueError, match=r"^dropout: entry 0 is 1, expected a probability in \[0, 1\)"
    ):
        fm._core.Network([4, 6, 3], [1], [0.0], [1.0], 0)
