"""The ``fastmlp`` command line, in-process through ``main([...])`` plus two subprocess runs."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import cli
from fastmlp.schedules import CosineAnnealingLR, MultiStepLR, ReduceLROnPlateau, StepLR

SMALL = ["--n-samples", "200", "--epochs", "2", "--quiet"]


class ReachedTraining(Exception):
    """Raised by a stubbed Trainer.fit: main() does not catch it, so a test sees it."""


def _no_training(*args, **kwargs):
    raise ReachedTraining


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def test_train_default_data_quiet(capsys):
    rc, out, err = run(capsys, "train", "--epochs", "3", "--quiet")
    assert rc == 0 and err == ""
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("test: loss")
    assert "(300 samples); 3 epochs" in lines[0]  # 2000 points, 15% test
    acc = float(lines[0].split("accuracy ")[1].split("%")[0])
    assert 50.0 < acc <= 100.0


def test_train_prints_epochs_and_header(capsys):
    rc, out, _ = run(capsys, "train", "--n-samples", "300", "--epochs", "2")
    assert rc == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("circles: 210 train / 45 val / 45 test, 2 features, 2 classes")
    assert lines[1].startswith("MLP [2, 64, 64, 2] relu, adam lr 0.01")
    assert lines[2].startswith("epoch 1/2") and lines[3].startswith("epoch 2/2")
    assert lines[-1].startswith("test:")


@pytest.mark.parametrize("data", ["moons", "spirals", "xor"])
def test_train_other_toy_sets(capsys, data):
    rc, out, _ = run(capsys, "train", "--data", data, "--noise", "0.05", *SMALL)
    assert rc == 0 and "(30 samples)" in out


@pytest.mark.parametrize("optimizer", cli.OPTIMIZERS)
def test_train_every_optimizer(capsys, optimizer):
    rc, _, _ = run(capsys, "train", "--optimizer", optimizer, "--lr", "0.01", *SMALL)
    assert rc == 0


def _trained_weights(capsys, tmp_path, *argv: str) -> list[np.ndarray]:
    path = tmp_path / "w.npz"
    rc, _, err = run(capsys, "train", "--save", str(path), "--lr", "0.05", *argv, *SMALL)
    assert rc == 0, err
    return fm.load(path).get_weights()


def test_train_momentum_applies_to_sgd(capsys, tmp_path):
    """--optimizer sgd --momentum 0.5 is torch.optim.SGD(momentum=0.5), the same as --optimizer
    momentum --momentum 0.5; momentum and nesterov keep their default 0.9."""
    plain = _trained_weights(capsys, tmp_path, "--optimizer", "sgd")
    sgd_half = _trained_weights(capsys, tmp_path, "--optimizer", "sgd", "--momentum", "0.5")
    momentum_half = _trained_weights(
        capsys, tmp_path, "--optimizer", "momentum", "--momentum", "0.5"
    )
    assert not np.array_equal(plain[0], sgd_half[0])
    for a, b in zip(sgd_half, momentum_half):
        np.testing.assert_array_equal(a, b)
    for name in ("momentum", "nesterov"):
        default = _trained_weights(capsys, tmp_path, "--optimizer", name)
        explicit = _trained_weights(capsys, tmp_path, "--optimizer", name, "--momentum", "0.9")
        for a, b in zip(default, explicit):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--optimizer", "adam", "--momentum", "0.5"], "--momentum: --optimizer adam has no"),
        (["--optimizer", "rmsprop", "--momentum", "0"], "--momentum: --optimizer rmsprop"),
        (["--optimizer", "adagrad", "--momentum", "0.9"], "--momentum: --optimizer adagrad"),
        (["--data", "digits", "--noise", "0.1"], "--noise: --data digits is not generated"),
        (["--data", "digits", "--n-samples", "100"], "--n-samples: --data digits is not"),
        (["--data", "mnist", "--noise", "0"], "--noise: --data mnist is not generated"),
        (["--data-dir", "."], "--data-dir: only --data mnist reads a folder, not --data circles"),
        (["--data", "digits", "--data-dir", "."], "--data-dir: only --data mnist"),
    ],
)
def test_train_options_that_would_be_ignored_are_errors(capsys, monkeypatch, args, fragment):
    monkeypatch.setattr(fm.Trainer, "fit", _no_training)
    rc, _, err = run(capsys, "train", *args, "--epochs", "1", "--quiet")
    assert_one_line_error(rc, err, fragment)


def test_train_too_few_samples_names_the_option(capsys):
    rc, _, err = run(capsys, "train", "--n-samples", "3", "--epochs", "1", "--quiet")
    assert_one_line_error(
        rc, err, "--n-samples: 3 points are too few for the train/val/test split (val: 0.15 of 3"
    )
    rc, out, _ = run(capsys, "train", "--n-samples", "4", "--epochs", "1", "--quiet")
    assert rc == 0 and "(1 samples)" in out  # the minimum works


def test_cli_names_agree_with_the_library():
    from fastmlp import nn, trainer
    from fastmlp.ops import ACTIVATIONS

    assert set(cli.ACTIVATIONS) == set(ACTIVATIONS)
    assert set(cli.INITS) == set(nn.INITS) and set(cli.LOSSES) == set(trainer.LOSSES)


@pytest.mark.parametrize("init", cli.INITS)
def test_train_every_init(capsys, init):
    rc, out, _ = run(capsys, "train", "--init", init, *SMALL)
    assert rc == 0 and out.startswith("test:")


@pytest.mark.parametrize("loss", cli.LOSSES)
def test_train_every_loss(capsys, loss):
    rc, out, _ = run(capsys, "train", "--loss", loss, *SMALL)
    assert rc == 0 and "accuracy" in out


def _raw_circles_test_split(n_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The test set of ``fastmlp train`` on the Circle data, before its standardisation."""
    X, y = fm.data.make_circles(n_samples=n_samples, seed=seed)
    _, _, test = fm.data.train_val_test_split(
        X, y, val=cli.VAL_FRACTION, test=cli.TEST_FRACTION, seed=seed
    )
    return test


def test_train_bce_names_its_two_accuracies(capsys, tmp_path):
    """bce's history accuracy (acc/val_acc) is per output; the test line gives the class accuracy
    and that per-output accuracy, each named, and the epoch lines say which one they show."""
    argv = ["--loss", "bce", "--n-samples", "300", "--epochs", "2"]
    rc, out, _ = run(capsys, "train", *argv, "--save", str(tmp_path / "m.npz"))
    assert rc == 0
    lines = out.strip().splitlines()
    assert "acc and val_acc are bce's per-output accuracy" in lines[2]
    test_line = next(line for line in lines if line.startswith("test:"))
    Xte, yte = _raw_circles_test_split(n_samples=300)  # the saved model takes raw features
    model = fm.load(tmp_path / "m.npz")
    per_output = model.evaluate(Xte, np.eye(2, dtype=np.float32)[yte], loss="bce")["accuracy"]
    class_acc = np.mean(np.asarray(model(Xte)).argmax(axis=1) == yte)
    assert f"class accuracy {100 * class_acc:.2f}%  per-output acc {100 * per_output:.2f}% (" in (
        test_line
    )
    rc, out, _ = run(capsys, "train", "--loss", "cross_entropy", *argv[2:], "--quiet")
    assert "per-output" not in out and "  accuracy " in out  # the other losses: one accuracy


def test_train_options(capsys):
    # main() runs in this process: --threads 1 must apply to the run only. Two threads before
    # (whatever the machine's default), so that a count left at 1 shows.
    saved = fm.get_num_threads()
    fm.set_num_threads(2)
    try:
        rc, out, _ = run(
            capsys, "train", "--hidden", "8,8,8", "--activation", "tanh", "--dropout", "0.1",
            "--weight-decay", "1e-4", "--l1", "1e-5", "--batch-size", "full",
            "--schedule", "multistep:milestones=[1,2],gamma=0.5", "--early-stopping", "1",
            "--label-smoothing", "0.05", "--threads", "1", "--seed", "3", *SMALL,
        )  # fmt: skip
        assert rc == 0 and out.startswith("test:")
        assert fm.get_num_threads() == 2
    finally:
        fm.set_num_threads(saved)


def test_train_save_and_load(capsys, tmp_path):
    path = tmp_path / "model.npz"
    rc, _, _ = run(capsys, "train", "--save", str(path), *SMALL)
    assert rc == 0 and path.is_file()
    model = fm.load(path)
    assert model.layer_sizes == [2, 64, 64, 2]
    rc, _, _ = run(capsys, "train", "--save", str(path), *SMALL)  # same seed: same model
    again = fm.load(path)
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    rc, out, _ = run(
        capsys, "train", "--save", str(tmp_path / "m"), "--n-samples", "200", "--epochs", "1"
    )
    assert rc == 0 and (tmp_path / "m.npz").is_file()
    assert f"saved the model to {tmp_path / 'm.npz'}" in out  # the file np.savez wrote


def test_saved_model_takes_raw_features(capsys, tmp_path):
    # The CLI trains on standardised features; a saved model without that standardisation put
    # 96.7% on the Circle data down to chance on the raw features a user has.
    path = tmp_path / "model.npz"
    rc, out, _ = run(capsys, "train", "--save", str(path))
    assert rc == 0 and "it takes raw features" in out
    reported = float(out.split("accuracy ")[1].split("%")[0]) / 100
    Xte, yte = _raw_circles_test_split(n_samples=cli.TOY_SAMPLES)
    loaded = fm.load(path)
    assert abs(np.mean(loaded.predict(Xte) == yte) - reported) <= 1 / len(yte)
    assert reported > 0.9


def _spy_on_test_predictions(monkeypatch) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Record what ``fastmlp train`` computes its test accuracy from: the rows as the model
    trained on them (scaled), the model's outputs on them and the labels it predicts."""
    seen = []
    original = cli._predicted_labels

    def spy(model, X):
        labels = original(model, X)
        seen.append((np.array(X), np.asarray(model.forward(X)), labels))
        return labels

    monkeypatch.setattr(cli, "_predicted_labels", spy)
    return seen


def test_saved_digits_model_takes_raw_pixel_counts(capsys, tmp_path, monkeypatch):
    """load_digits divides scikit-learn's pixel counts 0..16 by 16: a saved model that left that
    division out scored 92.6% on the raw counts for 99.3% on load_digits's pixels."""
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_digits()
    X_raw, y = bunch.data, bunch.target
    # The factor folded into the model is the one the loader divides by.
    np.testing.assert_array_equal(fm.data.load_digits()[0] * cli.PIXEL_DIVISORS["digits"], X_raw)
    seen = _spy_on_test_predictions(monkeypatch)
    path = tmp_path / "digits.npz"
    argv = ["train", "--data", "digits", "--hidden", "16", "--epochs", "2"]
    rc, out, err = run(capsys, *argv, "--save", str(path))
    assert rc == 0, err
    assert f"saved the model to {path} (it takes raw pixel counts 0-16:" in out
    [(X_scaled, outputs, labels)] = seen
    _, _, (Xte_raw, yte) = fm.data.train_val_test_split(
        X_raw, y, val=cli.VAL_FRACTION, test=cli.TEST_FRACTION, seed=0
    )
    scaler = cli.load_data(cli.build_parser().parse_args(argv))["scaler"]
    np.testing.assert_allclose(  # the same rows, before the loader's and the command's scaling
        scaler.inverse_transform(X_scaled) * 16, Xte_raw, rtol=0, atol=1e-4
    )
    loaded = fm.load(path)
    np.testing.assert_array_equal(loaded.predict(Xte_raw), labels)
    np.testing.assert_allclose(loaded.forward(Xte_raw), outputs, rtol=0, atol=1e-4)
    assert f"accuracy {100 * np.mean(labels == yte):.2f}% (270 samples)" in out


def test_saved_mnist_model_takes_raw_pixel_bytes(capsys, tmp_path, monkeypatch):
    """load_mnist divides the IDX files' bytes by 255; the saved model takes the bytes."""
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (100, 4, 4)), "t10k": rng.integers(0, 256, (20, 4, 4))}
    for prefix, imgs in images.items():
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", imgs)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(len(imgs)) % 10)
    X_raw = images["t10k"].reshape(20, 16).astype(np.float64)  # the test set: the t10k files
    np.testing.assert_allclose(  # the factor folded into the model is the loader's
        fm.data.load_mnist(tmp_path, "test")[0] * cli.PIXEL_DIVISORS["mnist"], X_raw, atol=1e-4
    )
    seen = _spy_on_test_predictions(monkeypatch)
    path = tmp_path / "mnist.npz"
    rc, out, err = run(capsys, "train", "--data", "mnist", "--data-dir", str(tmp_path),
                       "--hidden", "8", "--epochs", "2", "--save", str(path))  # fmt: skip
    assert rc == 0, err
    assert "(it takes raw pixel bytes 0-255: the /255 scaling is in it)" in out
    [(X_scaled, outputs, labels)] = seen
    np.testing.assert_allclose(X_scaled * 255, X_raw, rtol=0, atol=1e-4)  # the same rows
    loaded = fm.load(path)
    np.testing.assert_array_equal(loaded.predict(X_raw), labels)
    np.testing.assert_allclose(loaded.forward(X_raw), outputs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_saved_model_of_a_non_label_loss_gives_labels_through_forward(
    capsys, tmp_path, monkeypatch, loss
):
    """A model trained with mse or bce keeps its loss: its predict gives the outputs (mse) or 0/1
    per output (bce), not labels; the --save line says how to get them, as the command counts."""
    seen = _spy_on_test_predictions(monkeypatch)
    path = tmp_path / "m.npz"
    rc, out, err = run(capsys, "train", "--loss", loss, "--n-samples", "300", "--epochs", "2",
                       "--save", str(path))  # fmt: skip
    assert rc == 0, err
    assert "forward(X).argmax(axis=1) gives the class labels" in out
    [(_, _, labels)] = seen
    Xte, yte = _raw_circles_test_split(n_samples=300)
    loaded = fm.load(path)
    assert loaded.loss == loss
    predicted = loaded.predict(Xte)
    assert predicted.shape == (45, 2)
    assert predicted.dtype == (np.float32 if loss == "mse" else np.int64)
    np.testing.assert_array_equal(np.asarray(loaded.forward(Xte)).argmax(axis=1), labels)
    assert f"accuracy {100 * np.mean(labels == yte):.2f}%" in out  # the class accuracy
    rc, out, _ = run(capsys, "train", "--n-samples", "300", "--epochs", "1", "--save", str(path))
    assert "argmax" not in out  # cross_entropy: predict gives the labels


def test_train_save_help_says_what_the_model_takes_and_predicts(capsys):
    rc, out, _ = run(capsys, "train", "--help")
    assert rc == 0
    text = " ".join(out.split())
    for fragment in (
        "sklearn.datasets.load_digits().data",
        "pixel counts 0-16",
        "pixel bytes 0-255, as the IDX files hold them",
        "with mse the (n, classes) outputs and with bce a 0/1 (n, classes) matrix",
        "forward(X).argmax(axis=1) gives the labels",
    ):
        assert fragment in text


@pytest.mark.parametrize("per_feature", [True, False])
def test_raw_input_model_folds_the_standardisation(rng, per_feature):
    X = rng.standard_normal((50, 5)) * [1.0, 10.0, 0.1, 3.0, 1.0] + [0.0, 5.0, -2.0, 100.0, 0.5]
    scaler = fm.data.Standardizer(per_feature=per_feature).fit(X)
    model = fm.MLP([5, 7, 3], activation="tanh", seed=2)
    folded = cli.raw_input_model(model, scaler)
    np.testing.assert_allclose(
        folded.forward(X.astype(np.float32)), model.forward(scaler.transform(X)), rtol=0, atol=2e-5
    )
    # A loader's pixel division before the standardisation, and one without a scaler (MNIST).
    raw = rng.integers(0, 256, (50, 5)).astype(np.float64)
    divided = cli.raw_input_model(model, scaler, 255.0)
    np.testing.assert_allclose(
        divided.forward(raw), model.forward(scaler.transform(raw / 255)), rtol=0, atol=2e-5
    )
    divided_only = cli.raw_input_model(model, None, 255.0)
    np.testing.assert_allclose(divided_only.forward(raw), model.forward(raw / 255), atol=2e-5)
    assert folded is not model  # the trained model itself is left as it was
    for a, b in zip(model.get_weights()[2:], folded.get_weights()[2:]):  # past the first layer
        np.testing.assert_array_equal(a, b)


def test_train_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    rc, _, err = run(capsys, "train", "--plot", str(path), *SMALL)
    assert rc == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, out, _ = run(capsys, "train", "--plot", str(tmp_path / "noext"), "--n-samples", "200",
                     "--epochs", "1")  # fmt: skip
    assert rc == 0 and f"saved the plot to {tmp_path / 'noext.png'}" in out
    assert (tmp_path / "noext.png").read_bytes()[:4] == b"\x89PNG"


def test_train_plot_prints_the_file_it_writes(capsys, tmp_path, monkeypatch):
    """No extension: .png is added, and the printed name is the file written (matplotlib stubbed,
    so that this runs without it)."""
    written = []
    monkeypatch.setattr(cli, "_plot_formats", lambda: {"png": "PNG", "pdf": "PDF"})
    monkeypatch.setattr(cli, "save_plot", lambda path, *args: written.append(path))
    rc, out, err = run(capsys, "train", "--plot", str(tmp_path / "curves"), "--n-samples", "200",
                       "--epochs", "1")  # fmt: skip
    assert rc == 0, err
    assert written == [str(tmp_path / "curves.png")]
    assert out.strip().splitlines()[-1] == f"saved the plot to {tmp_path / 'curves.png'}"


def test_train_plot_checks_the_file_type_before_training(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_plot_formats", lambda: {"png": "PNG", "pdf": "PDF"})
    monkeypatch.setattr(fm.Trainer, "fit", _no_training)
    model = tmp_path / "m.npz"
    rc, _, err = run(capsys, "train", "--plot", str(tmp_path / "x.foo"), "--save", str(model),
                     *SMALL)  # fmt: skip
    assert_one_line_error(
        rc, err, "--plot: matplotlib cannot write '.foo' files; use one of .pdf, .png"
    )
    assert not model.exists()
    with pytest.raises(ReachedTraining):  # upper case is fine: past the checks, into training
        cli.main(["train", "--plot", str(tmp_path / "X.PDF"), *SMALL])


def test_train_plot_formats_from_matplotlib():
    pytest.importorskip("matplotlib")
    formats = cli._plot_formats()
    assert "png" in formats and "pdf" in formats and "foo" not in formats


@pytest.mark.parametrize("option", ["--save", "--plot"])
def test_train_output_path_naming_a_folder_is_refused(capsys, tmp_path, monkeypatch, option):
    """A folder ("out/" made --save write the hidden file out/.npz): refused before training."""
    if option == "--plot":
        monkeypatch.setattr(cli, "_plot_formats", lambda: {"png": "PNG"})  # without matplotlib
    monkeypatch.setattr(fm.Trainer, "fit", _no_training)
    (tmp_path / "out").mkdir()
    for path in (
        str(tmp_path / "out") + os.sep,
        str(tmp_path / "out"),
        str(tmp_path / "new") + os.sep,
    ):
        rc, _, err = run(capsys, "train", option, path, *SMALL)
        assert_one_line_error(rc, err, f"{option}: {path} names a folder; give a file name")
    assert list(tmp_path.iterdir()) == [tmp_path / "out"] and not any((tmp_path / "out").iterdir())


def test_train_plot_without_matplotlib(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc, _, err = run(capsys, "train", "--plot", str(tmp_path / "x.png"), *SMALL)
    assert_one_line_error(rc, err, "pip install matplotlib")
    assert not (tmp_path / "x.png").exists()


def test_train_digits(capsys):
    pytest.importorskip("sklearn")
    rc, out, _ = run(capsys, "train", "--data", "digits", "--epochs", "1", "--quiet")
    assert rc == 0 and "(270 samples)" in out  # 15% of 1797


@pytest.mark.parametrize("data", ["circles", "digits"])
def test_load_data_fits_the_scaler_on_the_training_rows_only(data):
    """No validation or test rows in the scaler's statistics: the standardised training set has
    mean 0 and standard deviation 1 (per column for the toy sets; over all pixels for digits,
    which share one mean and scale)."""
    if data == "digits":
        pytest.importorskip("sklearn")
    ds = cli.load_data(cli.build_parser().parse_args(["train", "--data", data]))
    Xtr = ds["train"][0].astype(np.float64)
    assert ds["scaler"].per_feature == (data != "digits")
    axis = 0 if data != "digits" else None
    # float32 rounding only (~1e-8); a scaler fitted on all rows is off by 6e-4 to 2e-2 here
    np.testing.assert_allclose(Xtr.mean(axis=axis), 0.0, atol=1e-5)
    np.testing.assert_allclose(Xtr.std(axis=axis), 1.0, atol=1e-5)


def test_train_digits_without_sklearn(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    rc, _, err = run(capsys, "train", "--data", "digits", "--epochs", "1", "--quiet")
    assert_one_line_error(rc, err, "pip install scikit-learn")


def _write_idx(path, arr):
    raw = struct.pack(">I", (0x08 << 8) | arr.ndim) + b"".join(
        struct.pack(">I", d) for d in arr.shape
    )
    path.write_bytes(gzip.compress(raw + arr.astype(np.uint8).tobytes()))


def test_train_mnist_from_idx_files(capsys, tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 100), ("t10k", 20)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 4, 4)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    rc, out, _ = run(capsys, "train", "--data", "mnist", "--data-dir", str(tmp_path),
                     "--hidden", "8", "--epochs", "1")  # fmt: skip
    assert rc == 0
    assert out.startswith("mnist: 90 train / 10 val / 20 test, 16 features, 10 classes")


def test_train_mnist_test_images_of_another_size_fail_before_training(capsys, tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n, side in (("train", 100, 4), ("t10k", 20, 5)):
        images = rng.integers(0, 256, (n, side, side))
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    rc, out, err = run(capsys, "train", "--data", "mnist", "--data-dir", str(tmp_path),
                       "--hidden", "8", "--epochs", "1")  # fmt: skip
    assert_one_line_error(
        rc, err, "--data-dir: the train images have 16 pixels each and the test (t10k) images 25"
    )
    assert out == ""


def test_train_mnist_errors(capsys, tmp_path):
    rc, _, err = run(capsys, "train", "--data", "mnist")
    assert_one_line_error(rc, err, "--data-dir")
    rc, _, err = run(capsys, "train", "--data", "mnist", "--data-dir", str(tmp_path / "none"))
    assert_one_line_error(rc, err, f"error: --data-dir: MNIST folder {tmp_path / 'none'} does not")
    rc, _, err = run(capsys, "train", "--data", "mnist", "--data-dir", str(tmp_path))
    assert_one_line_error(rc, err, "train-images-idx3-ubyte")


def _write_mnist(folder, train_labels, test_labels, side=4) -> None:
    rng = np.random.default_rng(0)
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        images = rng.integers(0, 256, (len(labels), side, side))
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.asarray(labels))


def test_train_mnist_too_small_for_the_validation_split_says_so(capsys, tmp_path):
    """The split's "val: 0.1 of 5 rows rounds to an empty set" named an argument no option sets."""
    _write_mnist(tmp_path, np.arange(5) % 10, np.arange(3))
    rc, _, err = run(capsys, "train", "--data", "mnist", "--data-dir", str(tmp_path), "--quiet")
    assert_one_line_error(
        rc,
        err,
        f"error: --data-dir: the training files in {tmp_path} hold 5 images, too few for "
        "--data mnist's validation set (10% of them, at least one image,",
    )
    assert "val:" not in err
    _write_mnist(tmp_path, np.arange(6) % 10, np.arange(3))  # the smallest that splits
    rc, out, _ = run(capsys, "train", "--data", "mnist", "--data-dir", str(tmp_path),
                     "--hidden", "4", "--epochs", "1")  # fmt: skip
    assert rc == 0 and out.startswith("mnist: 5 train / 1 val / 3 test")


@pytest.mark.parametrize("files", ["train", "test (t10k)"])
def test_train_mnist_labels_beyond_9_name_the_data_set_not_num_classes(capsys, tmp_path, files):
    """An EMNIST-letters folder (labels 1..26): load_mnist's message suggests its num_classes=,
    which this command has no option for."""
    letters = np.arange(30) % 26 + 1
    if files == "train":
        _write_mnist(tmp_path, letters, np.arange(10))
    else:
        _write_mnist(tmp_path, np.arange(30) % 10, letters)
    rc, _, err = run(capsys, "train", "--data", "mnist", "--data-dir", str(tmp_path), "--quiet")
    assert_one_line_error(
        rc,
        err,
        f"error: --data-dir: {files} label 10 at index 9 is outside 0..9 (17 such labels); "
        "--data mnist takes data sets of 10 classes labelled 0..9",
    )
    assert "num_classes" not in err


@pytest.mark.parametrize("command", ["train", "bench"])
def test_threads_beyond_the_maximum_names_the_option(capsys, monkeypatch, command):
    """set_num_threads's "n: expected <= 1024" named its own argument, not --threads."""
    monkeypatch.setattr(fm.Trainer, "fit", _no_training)
    rc, _, err = run(
        capsys, command, "--threads", "2000", "--quiet" if command == "train" else "--no-torch"
    )
    assert_one_line_error(
        rc, err, f"error: --threads: expected <= {fm._core.MAX_THREADS}, got 2000"
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--hidden", "a,b"], "--hidden"),
        (["--hidden", "0"], None),  # "0" means no hidden layer: valid
        (["--lr", "-1"], "--lr"),
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--data", "cifar"], "--data"),
        (["--optimizer", "lbfgs"], "--optimizer"),
        (["--schedule", "warmup"], "unknown schedule 'warmup'"),
        (["--schedule", "step:gamma"], "--schedule"),
        (["--schedule", "step:size=3"], "--schedule"),
        (["--dropout", "1.5"], "dropout"),
        (["--label-smoothing", "1"], None),  # [0, 1], as MLP.train_step and Trainer
        (["--label-smoothing", "1.5"], "argument --label-smoothing: expected a number in [0, 1]"),
        (["--device", "tpu"], "device"),
        (["--seed", "-1"], "argument --seed: expected an int >= 0, got '-1'"),
        (["--hidden", "0", "--dropout", "0.5"], "--dropout: the model has no hidden layer"),
        (["--save", "/nonexistent-folder/m"], "--save: folder /nonexistent-folder does not exist"),
        (["--unknown"], "unrecognized arguments"),
    ],
)
def test_train_bad_options_give_one_line(capsys, args, fragment):
    rc, _, err = run(capsys, "train", *args, *SMALL)
    if fragment is None:
        assert rc == 0
    else:
        assert_one_line_error(rc, err, fragment)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        # The library's messages name its arguments (dropout, n_samples, ...): said as options.
        (["--dropout", "1"], "error: --dropout: entry 0 is 1.0, expected a probability"),
        (["--n-samples", "1"], "error: --n-samples: expected at least 2 (one per class), got 1"),
        (["--lr", "1e39"], "error: --lr: expected a finite value, got 1e+39"),
        (["--weight-decay", "1e39"], "error: --weight-decay: expected a finite value"),
        (["--momentum", "1e39", "--optimizer", "sgd"], "error: --momentum: expected a finite"),
        (
            ["--schedule", "multistep:milestones=10"],
            "error: --schedule: 'multistep' (MultiStepLR): milestones: expected a list of epochs",
        ),
    ],
)
def test_train_library_errors_name_the_option(capsys, args, fragment):
    rc, _, err = run(capsys, "train", "--epochs", "1", "--quiet", *args)
    assert_one_line_error(rc, err, fragment)


def test_train_layers_too_large_for_memory_are_a_one_line_error(capsys):
    # A MemoryError ("std::bad_alloc") went out as a traceback with exit status 1.
    rc, _, err = run(capsys, "train", "--hidden", "100000000,100000000", *SMALL)
    assert_one_line_error(
        rc, err, "error: --hidden: [2, 100000000, 100000000, 2] has 10,000,000,600,000,002"
    )
    assert "layer_sizes" not in err  # MLP's argument, which the user never typed


def test_only_an_exact_argument_name_becomes_an_option():
    args = cli.build_parser().parse_args(["train"])
    assert cli._name_option("n_samples: too few: 1", args) == "--n-samples: too few: 1"
    assert cli._name_option("lr: bad", args) == "--lr: bad"
    for message in [
        "lr_decay: bad",  # starts with an option's name, is another word
        "learning rate: bad",
        "dropouts: bad",
        "lr is bad: 1",
        "lr:bad",
        "x: expected 2 columns",  # no such option
        "func: bad",  # in the namespace, not an option
        "command: bad",
        "--lr: bad",  # already an option
        "",
    ]:
        assert cli._name_option(message, args) == message
    gradcheck = cli.build_parser().parse_args(["gradcheck"])
    assert cli._name_option("lr: bad", gradcheck) == "lr: bad"  # gradcheck has no --lr


def test_library_arguments_of_another_name_become_the_option_given_for_them():
    """set_num_threads(n), load_mnist(path) and MLP(layer_sizes) are set by --threads, --data-dir
    and --hidden: said as those options, but only where the user gave them."""
    given = cli.build_parser().parse_args(
        ["train", "--threads", "2", "--data", "mnist", "--data-dir", "d", "--hidden", "8"]
    )
    assert cli._name_option("n: expected <= 1024", given) == "--threads: expected <= 1024"
    assert cli._name_option("path: no folder d", given) == "--data-dir: no folder d"
    assert cli._name_option("layer_sizes: too big", given) == "--hidden: too big"
    left_out = cli.build_parser().parse_args(["train"])
    for message in ("n: expected <= 1024", "path: no folder d", "layer_sizes: too big"):
        assert cli._name_option(message, left_out) == message
    bench = cli.build_parser().parse_args(["bench", "--threads", "2"])
    assert cli._name_option("n: expected <= 1024", bench) == "--threads: expected <= 1024"


def test_train_divergence_is_a_one_line_error(capsys):
    rc, _, err = run(capsys, "train", "--optimizer", "sgd", "--lr", "1e35", *SMALL)
    assert_one_line_error(rc, err, "training diverged", "--lr")
    # The engine's "loss: the loss is nan" is not about the --loss option.
    assert "--loss" not in err


def test_train_schedule_overflow_names_the_schedule_before_training(capsys):
    rc, out, err = run(capsys, "train", "--schedule", "exponential:gamma=1e200", "--epochs", "3")
    assert_one_line_error(rc, err, "--schedule: the rate for epoch 1 (0-based) is unusable")
    assert "epoch 1/3" not in out  # refused before the first epoch, not after it


def test_train_save_to_an_empty_name_is_an_error(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("", "  "):
        rc, _, err = run(capsys, "train", "--save", name, "--epochs", "1", "--quiet")
        assert_one_line_error(rc, err, "--save: expected a file name, got an empty one")
    assert list(tmp_path.iterdir()) == []


def test_parse_schedule_defaults_from_epochs():
    assert isinstance(cli.parse_schedule("cosine", 30), CosineAnnealingLR)
    assert cli.parse_schedule("cosine", 30).T_max == 30
    assert cli.parse_schedule("step", 30).step_size == 10
    ms = cli.parse_schedule("multistep:milestones=[5, 9],gamma=0.5", 30)
    assert isinstance(ms, MultiStepLR) and ms.milestones == [5, 9] and ms.gamma == 0.5
    assert cli.parse_schedule("multistep", 40).milestones == [20, 30]
    assert cli.parse_schedule("poly:power=4", 12).total_epochs == 12
    pl = cli.parse_schedule("plateau:mode=max,monitor=val_accuracy", 10)
    assert isinstance(pl, ReduceLROnPlateau) and pl.mode == "max" and pl.patience == 5
    assert isinstance(cli.parse_schedule("step:step_size=2", 10), StepLR)


# ---------------------------------------------------------------------------------------------
# gradcheck, info, top level
# ---------------------------------------------------------------------------------------------


def test_gradcheck_table(capsys):
    rc, out, _ = run(capsys, "gradcheck")
    assert rc == 0
    rows = [
        line for line in out.splitlines() if line.split() and line.split()[0] in cli.ACTIVATIONS
    ]
    assert len(rows) == len(cli.ACTIVATIONS)
    assert all(row.count("PASS") == len(cli.LOSSES) for row in rows)
    assert f"all {len(cli.ACTIVATIONS) * len(cli.LOSSES)} checks passed" in out


def test_gradcheck_fails_with_exit_1(capsys):
    rc, out, _ = run(capsys, "gradcheck", "--threshold", "0")  # float32 errors are never 0
    assert rc == 1 and "FAIL" in out and "FAILED" in out


def test_info(capsys):
    rc, out, _ = run(capsys, "info")
    assert rc == 0
    assert f"version {fm.__version__}" in " ".join(out.split())
    assert "simd" in out and "num_threads" in out


def test_bench_prints_the_table(capsys):
    """A short run without PyTorch (whether or not it is installed): one row per case."""
    rc, out, _ = run(capsys, "bench", "--no-torch", "--rounds", "1", "--optimizers", "sgd")
    assert rc == 0
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("network"))
    rows = lines[head + 1 : head + 3]
    assert rows[0].split()[:3] == ["784-256-128-10", "128", "sgd"]
    assert rows[1].split()[:3] == ["2-16-2", "32", "sgd"]
    for row in rows:  # ours and NumPy timed, speed-up vs NumPy given, no PyTorch column
        cells = row.split()
        assert float(cells[3]) > 0 and float(cells[4]) > 0 and cells[5] == "-"
        assert cells[6].endswith("x") and cells[7] == "-"
    assert "machine:" in out and "threads:" in out
    # Then the matrix products against NumPy, one row each: GFLOP/s of both, and the ratio.
    head = next(i for i, line in enumerate(lines) if line.startswith("case "))
    products = lines[head + 1 : head + 5]
    assert [row.split()[-5:-3] for row in products] == [
        ["128x256x784", "NN"],
        ["128x784x256", "NT"],
        ["784x256x128", "TN"],
        ["1024x1024x1024", "NN"],
    ]
    for row in products:
        ours, numpy_, ratio = row.split()[-3:]
        assert float(ours) > 0 and float(numpy_) > 0 and ratio.endswith("x")


@pytest.mark.parametrize("flag", ["--no-gemm", "--no-numpy"])
def test_bench_can_leave_out_the_products(capsys, monkeypatch, flag):
    from fastmlp import _bench

    monkeypatch.setattr(_bench, "run_cases", lambda *args, **kwargs: [])
    rc, out, _ = run(capsys, "bench", "--no-torch", flag)
    assert rc == 0 and "matrix product" not in out


def test_bench_bad_optimizer_is_a_one_line_error(capsys):
    rc, _, err = run(capsys, "bench", "--no-torch", "--optimizers", "adam,lbfgs")
    assert_one_line_error(rc, err, "--optimizers: unknown 'lbfgs'")


def test_top_level(capsys):
    rc, out, _ = run(capsys)
    assert rc == 2 and "train" in out and "gradcheck" in out
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "usage" in out
    rc, out, _ = run(capsys, "train", "--help")
    assert rc == 0 and "--data-dir" in out
    rc, _, err = run(capsys, "fly")
    assert_one_line_error(rc, err, "invalid choice")


def _subprocess(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run(
        [sys.executable, "-m", "fastmlp", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_python_m_fastmlp_train():
    proc = _subprocess("train", "--epochs", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("test: loss") and proc.stderr == ""


def test_python_m_fastmlp_error_has_no_traceback(tmp_path):
    proc = _subprocess("train", "--data", "mnist", "--data-dir", str(tmp_path / "missing"))
    assert proc.returncode == 2
    assert_one_line_error(proc.returncode, proc.stderr, "does not exist")


def test_output_into_a_closed_pipe_stops_quietly():
    """`fastmlp info | head -1`: the reader closes the pipe; no "Broken pipe" error is printed."""
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastmlp", "info"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()  # before the interpreter has started: its first write fails
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 1
    assert err == ""
