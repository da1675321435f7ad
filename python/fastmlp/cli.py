"""The ``fastmlp`` command line: ``fastmlp train``, ``fastmlp gradcheck``, ``fastmlp info``,
``fastmlp bench``.

``fastmlp train`` with no options trains an MLP on generated Circle data (2000 points, 70/15/15
split, standardised) and prints per-epoch metrics and the test accuracy. Every data set has its
own defaults (``DATA_DEFAULTS``); any option given on the command line overrides them.

Errors (a missing MNIST folder, a bad option value, a missing optional package) print one line
on stderr and exit with status 2; set ``FASTMLP_TRACEBACK=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._bench import OneLineParser
from ._checks import names_folder

ACTIVATIONS = ("relu", "leaky_relu", "prelu", "elu", "sigmoid", "tanh", "identity")
LOSSES = ("cross_entropy", "mse", "hinge", "bce")
OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "nesterov", "adagrad", "rmsprop")
INITS = ("he", "xavier", "normal", "uniform")
DATASETS = ("circles", "moons", "spirals", "xor", "digits", "mnist")
GENERATED = ("circles", "moons", "spirals", "xor")
# The optimizers --momentum applies to, and its default for each (torch.optim.SGD's is 0).
MOMENTUM_DEFAULTS = {"sgd": 0.0, "momentum": 0.9, "nesterov": 0.9}

# Per-data-set defaults for the options left unset. Data: the toy sets (2000 points) and digits
# are split 70/15/15 (stratified, --seed) and standardised on the training part (toy sets per
# column, digits with one mean and scale for all pixels); MNIST keeps its pixels in [0, 1], its
# test files as the test set and 10% of its training files as the validation set.
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "circles": {"hidden": [64, 64], "lr": 1e-2, "epochs": 30, "batch_size": 32},
    "moons": {"hidden": [64, 64], "lr": 1e-2, "epochs": 30, "batch_size": 32},
    "xor": {"hidden": [64, 64], "lr": 1e-2, "epochs": 30, "batch_size": 32},
    "spirals": {"hidden": [128, 128], "lr": 1e-2, "epochs": 50, "batch_size": 32},
    "digits": {"hidden": [256], "lr": 1e-3, "epochs": 30, "batch_size": 32},
    "mnist": {"hidden": [256, 128], "lr": 1e-3, "epochs": 10, "batch_size": 128},
}
TOY_SAMPLES = 2000
VAL_FRACTION = TEST_FRACTION = 0.15  # of the toy sets and digits (MNIST has its own test files)
MNIST_VAL_FRACTION = 0.1  # of MNIST's training files
MNIST_CLASSES = 10  # MNIST, Fashion-MNIST and KMNIST: labels 0..9
# What fastmlp.data's loaders divide the raw pixels by: load_digits the counts 0..16 by 16,
# load_mnist the bytes 0..255 by 255 (their docstrings and code, python/fastmlp/data.py). They
# return no raw pixels, so --save folds this division into the saved model's first layer along
# with the standardisation (raw_input_model); tests/test_cli.py checks the factors against the
# loaders, so a change there fails a test instead of silently skewing saved models.
PIXEL_DIVISORS = {"digits": 16.0, "mnist": 255.0}
# The input a model written by --save takes: the features as the data come, per data set.
SAVED_INPUTS = {
    "generated": "the generated points, as fastmlp.data.make_circles etc. return them",
    "digits": "the 64 pixel counts 0-16, as sklearn.datasets.load_digits().data holds them "
    "(not fastmlp.data.load_digits's, divided by 16)",
    "mnist": "the pixel bytes 0-255, as the IDX files hold them, one image a row (784 for "
    "MNIST; not fastmlp.data.load_mnist's, divided by 255)",
}


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# One-line errors instead of argparse's usage + message, as the benchmark scripts print them.
_Parser = OneLineParser


# ----------------------------------------------------------------------------------------------
# Option parsing helpers
# ----------------------------------------------------------------------------------------------


def _hidden(text: str) -> list[int]:
    text = text.strip()
    if text.lower() in ("", "none", "0"):
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths like 256,128, got {text!r}"
        ) from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be >= 1, got {text!r}")
    return sizes


def _batch_size(text: str) -> int | str:
    if text.lower() in ("full", "none", "all"):
        return "full"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1 or 'full', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1 or 'full', got {text!r}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0.0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _unit_float(text: str) -> float:
    """A number in [0, 1], such as --label-smoothing (MLP.train_step's range)."""
    value = _nonneg_float(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _int_at_least(text: str, lo: int) -> int:
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None or value < lo:
        raise argparse.ArgumentTypeError(f"expected an int >= {lo}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _seed(text: str) -> int:
    return _int_at_least(text, 0)


def _output_path(
    path: str | None, option: str, suffix: str = "", example: str = "out"
) -> str | None:
    """``path`` (with ``suffix`` added when missing), after checking that it names a file in a
    folder that exists, so that a typo fails before training rather than after it; ``example``
    is the file name the error for a folder suggests."""
    if path is None:
        return None
    if not path.strip():
        raise CLIError(f"{option}: expected a file name, got an empty one")
    final = path if not suffix or path.endswith(suffix) else path + suffix
    # "out/" would become the hidden file "out/.npz" (np.savez adds the suffix to an empty name):
    # refuse a folder rather than guess a file name in it.
    if names_folder(path) or names_folder(final):
        raise CLIError(
            f"{option}: {path} names a folder; give a file name, e.g. {os.path.join(path, example)}"
        )
    folder = os.path.dirname(os.path.abspath(final))
    if not os.path.isdir(folder):
        raise CLIError(f"{option}: folder {folder} does not exist")
    return final


def _plot_formats() -> dict[str, str]:
    """The file types matplotlib can write, ``{"png": "Portable Network Graphics", ...}``; a
    CLIError when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401  (first: matplotlib.figure may be cached on its own)
        from matplotlib.figure import Figure
    except ImportError:
        raise CLIError(
            "--plot needs matplotlib: pip install matplotlib (the [plot] extra)"
        ) from None
    return dict(Figure().canvas.get_supported_filetypes())


def _plot_path(path: str | None) -> str | None:
    """The file ``--plot`` will write: ``path``, with ``.png`` added when it has no extension
    (matplotlib would add its default one; adding it here lets the CLI print the real name).
    Matplotlib's presence and the file type are checked here, before training, as savefig would
    only fail after it (and after --save had written the model)."""
    if path is None:
        return None
    formats = _plot_formats()
    ext = os.path.splitext(path)[1]
    if ext and ext[1:].lower() not in formats:
        known = ", ".join(f".{f}" for f in sorted(formats))
        raise CLIError(f"--plot: matplotlib cannot write {ext!r} files; use one of {known}")
    return _output_path(path, "--plot", "" if ext else ".png", "curves.png")


def _check_data_options(args: argparse.Namespace) -> None:
    """Refuse the options the chosen data set and optimizer would silently ignore (only when the
    user gave them: their defaults are None)."""
    if args.momentum is not None and args.optimizer not in MOMENTUM_DEFAULTS:
        raise CLIError(
            f"--momentum: --optimizer {args.optimizer} has no momentum; it applies to "
            f"{', '.join(MOMENTUM_DEFAULTS)}"
        )
    if args.data not in GENERATED:
        for option, value in (("--noise", args.noise), ("--n-samples", args.n_samples)):
            if value is not None:
                raise CLIError(
                    f"{option}: --data {args.data} is not generated; {option} applies to "
                    f"{', '.join(GENERATED)}"
                )
    if args.data != "mnist" and args.data_dir is not None:
        raise CLIError(f"--data-dir: only --data mnist reads a folder, not --data {args.data}")


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: ``milestones=[10,20],gamma=0.5`` -> two parts."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_schedule(text: str, epochs: int) -> Any:
    """``NAME[:key=value,...]`` -> a schedule object; unset lengths default from ``epochs``.

    ``cosine`` (``T_max=epochs``), ``poly`` (``total_epochs=epochs``, ``power=1``), ``step``
    (``step_size=max(1, epochs // 3)``), ``multistep`` (``milestones=[epochs//2, 3*epochs//4]``),
    ``exponential`` (``gamma=0.95``), ``plateau`` (``patience=5``, monitors ``val_loss``).
    Example: ``--schedule multistep:milestones=[10,20],gamma=0.1``.
    """
    from . import schedules

    name, _, rest = text.partition(":")
    name = name.strip().lower()
    kwargs: dict[str, Any] = {}
    for item in _split_top_level(rest):
        key, eq, value = item.partition("=")
        if not eq:
            raise CLIError(f"--schedule: expected key=value after the name, got {item!r}")
        try:
            kwargs[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = value.strip()  # a bare word, e.g. mode=max
    defaults: dict[str, dict[str, Any]] = {
        "cosine": {"T_max": epochs},
        "poly": {"total_epochs": epochs},
        "polynomial": {"total_epochs": epochs},
        "step": {"step_size": max(1, epochs // 3)},
        "multistep": {"milestones": sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)})},
        "exponential": {"gamma": 0.95},
        "plateau": {"patience": 5},
    }
    kwargs = {**defaults.get(name, {}), **kwargs}
    try:
        return schedules.make_schedule(name, **kwargs)
    except (TypeError, ValueError) as exc:
        # make_schedule's own "schedule: " prefix would follow ours: "--schedule: schedule: ...".
        raise CLIError(f"--schedule: {str(exc).removeprefix('schedule: ')}") from None


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def _check_mnist_labels(y: np.ndarray, kind: str) -> None:
    """The labels of ``--data mnist`` against 0..9, in the command line's terms: load_mnist's own
    check suggests its ``num_classes=`` argument, which this command has no option for."""
    bad = np.flatnonzero((y < 0) | (y >= MNIST_CLASSES))
    if bad.size:
        files = "train" if kind == "train" else "test (t10k)"
        raise CLIError(
            f"--data-dir: {files} label {y[bad[0]]} at index {bad[0]} is outside 0..9 "
            f"({bad.size} such labels); --data mnist takes data sets of {MNIST_CLASSES} classes "
            "labelled 0..9 (MNIST, Fashion-MNIST, KMNIST)"
        )


def load_data(args: argparse.Namespace) -> dict[str, Any]:
    """Return ``{"train": (X, y), "val": (X, y) | None, "test": (X, y), "scaler", "classes",
    "pixel_divisor"}``: ``X`` as the model trains on it, the loader's pixel scaling (what it
    divided the raw pixels by, ``PIXEL_DIVISORS``; 1 for generated data) then ``scaler`` (None
    for MNIST) applied."""
    from . import data

    name = args.data
    scaler = None
    if name == "mnist":
        if args.data_dir is None:
            raise CLIError("--data-dir: --data mnist needs the folder holding the MNIST IDX files")
        Xtr, ytr = data.load_mnist(args.data_dir, "train", num_classes=None)
        _check_mnist_labels(ytr, "train")
        Xte, yte = data.load_mnist(args.data_dir, "test", num_classes=None)
        _check_mnist_labels(yte, "test")
        if Xte.shape[1] != Xtr.shape[1]:  # found here, not after the model has trained
            raise CLIError(
                f"--data-dir: the train images have {Xtr.shape[1]} pixels each and the test "
                f"(t10k) images {Xte.shape[1]}; both sets must have images of one size"
            )
        # 10% of the training files as validation; the test files stay untouched.
        try:
            (Xtr, ytr), (Xv, yv), _ = data.train_val_test_split(
                Xtr, ytr, val=MNIST_VAL_FRACTION, test=0.0, seed=args.seed
            )
        except ValueError:
            # The split's message names its val= argument, which no option sets: the fraction
            # is fixed, so the data set is what is too small.
            raise CLIError(
                f"--data-dir: the training files in {args.data_dir} hold {len(ytr)} images, too "
                f"few for --data mnist's validation set ({100 * MNIST_VAL_FRACTION:g}% of them, "
                "at least one image, with at least one left to train on)"
            ) from None
    else:
        if name == "digits":
            X, y = data.load_digits()
        else:
            n = args.n_samples if args.n_samples is not None else TOY_SAMPLES
            kw: dict[str, Any] = {"n_samples": n, "seed": args.seed}
            if args.noise is not None:
                kw["noise"] = args.noise
            gen = {
                "circles": data.make_circles,
                "moons": data.make_moons,
                "spirals": data.make_spirals,
                "xor": data.make_xor,
            }[name]
            X, y = gen(**kw)
        try:
            (Xtr, ytr), (Xv, yv), (Xte, yte) = data.train_val_test_split(
                X, y, val=VAL_FRACTION, test=TEST_FRACTION, seed=args.seed
            )
        except ValueError as exc:
            if args.n_samples is None:
                raise
            # The split's own rule, named by the option the user can change.
            raise CLIError(
                f"--n-samples: {args.n_samples} points are too few for the train/val/test split "
                f"({exc})"
            ) from None
        # Digits are images: one scale for all pixels (see Standardizer); toy sets: per column.
        scaler = data.Standardizer(per_feature=name != "digits").fit(Xtr)
        Xtr, Xv, Xte = scaler.transform(Xtr), scaler.transform(Xv), scaler.transform(Xte)
    classes = int(max(ytr.max(), yte.max())) + 1
    return {
        "train": (Xtr, ytr),
        "val": (Xv, yv) if len(yv) else None,
        "test": (Xte, yte),
        "scaler": scaler,
        "classes": classes,
        "pixel_divisor": PIXEL_DIVISORS.get(name, 1.0),
    }


def raw_input_model(model: Any, scaler: Any | None, pixel_divisor: float = 1.0) -> Any:
    """A copy of ``model`` that takes the raw features: the loader's pixel scaling
    ``x = r / pixel_divisor`` and the standardisation ``z = (x - mean) / scale`` that
    ``load_data`` applied (``scaler`` None: none) are folded into the first layer. With
    ``s = pixel_divisor * scale``, ``W' = W / s[:, None]`` and ``b' = b - (mean / scale) @ W``
    (in float64), so that ``raw_input_model(model, scaler, d).forward(r)`` equals
    ``model.forward(scaler.transform(r / d))`` to float32 rounding. ``--save`` writes this copy:
    a user who loads the file predicts on their own data, not on data scaled with factors and
    statistics the file would not hold."""
    import copy

    folded = copy.deepcopy(model)
    weights = folded.get_weights()
    w, b = weights[0].astype(np.float64), weights[1].astype(np.float64)
    mean = 0.0 if scaler is None else np.asarray(scaler.mean_, np.float64)
    scale = 1.0 if scaler is None else np.asarray(scaler.scale_, np.float64)
    # Broadcast to one entry per input: without a scaler (MNIST) mean and scale are scalars.
    inverse = np.broadcast_to(1.0 / (float(pixel_divisor) * scale), (w.shape[0],))
    weights[0] = w * inverse[:, None]
    weights[1] = b - np.broadcast_to(mean / scale, (w.shape[0],)) @ w
    folded.set_weights(weights)
    return folded


def _saved_model_note(args: argparse.Namespace, classes: int) -> str:
    """What the ``--save`` line tells about the model written: the input it takes and, for the
    losses whose ``predict`` gives no class labels, how to get them."""
    if args.data == "digits":
        note = (
            f"it takes raw pixel counts 0-16: the /{PIXEL_DIVISORS['digits']:g} scaling and the "
            "standardisation are in it"
        )
    elif args.data == "mnist":
        note = f"it takes raw pixel bytes 0-255: the /{PIXEL_DIVISORS['mnist']:g} scaling is in it"
    else:
        note = "it takes raw features: the standardisation is in it"
    outputs = {"mse": "its outputs", "bce": "0/1 per output (logit > 0)"}.get(args.loss)
    if outputs is not None:
        note += (
            f"; its predict gives {outputs}, an (n, {classes}) matrix: "
            "forward(X).argmax(axis=1) gives the class labels"
        )
    return note


def _targets(y: np.ndarray, loss: str, classes: int) -> np.ndarray:
    """Class labels for cross-entropy and hinge; one-hot float32 rows for MSE and BCE."""
    if loss in ("mse", "bce"):
        return np.eye(classes, dtype=np.float32)[y]
    return y


def _predicted_labels(model: Any, X: np.ndarray) -> np.ndarray:
    """The arg-max output: the predicted class for every loss (one-hot targets for mse/bce)."""
    return np.asarray(model.forward(X)).argmax(axis=1)


# ----------------------------------------------------------------------------------------------
# Model and optimizer
# ----------------------------------------------------------------------------------------------


def make_optimizer(name: str, model: Any, args: argparse.Namespace, lr: float) -> Any:
    """Build the optimizer ``name`` with the command line's lr / momentum / decay options;
    ``args.momentum`` None takes the optimizer's default in ``MOMENTUM_DEFAULTS``."""
    from . import optim

    extra: dict[str, Any] = {}
    if args.weight_decay:
        extra["weight_decay"] = args.weight_decay
    if args.l1:
        extra["l1"] = args.l1
    if name in MOMENTUM_DEFAULTS:  # "sgd --momentum 0.5" is "momentum --momentum 0.5"
        momentum = MOMENTUM_DEFAULTS[name] if args.momentum is None else args.momentum
        return optim.SGD(model, lr=lr, momentum=momentum, nesterov=name == "nesterov", **extra)
    cls = {"adam": "Adam", "adamw": "AdamW", "adagrad": "AdaGrad", "rmsprop": "RMSProp"}[name]
    return getattr(optim, cls)(model, lr=lr, **extra)


def save_plot(
    path: str,
    history: Any,
    model: Any,
    ds: dict[str, Any],
    title: str,
    accuracy_label: str = "accuracy",
) -> None:
    """Learning curves (loss, accuracy: train vs val) and, for 2-D inputs, the decision boundary
    over the test points in the original (unstandardised) coordinates. ``accuracy_label`` names
    the history's accuracy (bce's is per output, not per class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Xte, yte = ds["test"]
    two_d = Xte.shape[1] == 2
    fig, axes = plt.subplots(1, 3 if two_d else 2, figsize=(15 if two_d else 10, 4.2))
    epochs = [e + 1 for e in history["epoch"]]
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", accuracy_label)):
        for split, style in (("train", "-"), ("val", "--")):
            values = history[f"{split}_{key}"]
            pts = [(e, v) for e, v in zip(epochs, values) if v is not None]
            if pts:
                ax.plot(*zip(*pts), style, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    axes[0].set_title(title)
    if two_d:
        ax = axes[2]
        scaler = ds["scaler"]
        raw = scaler.inverse_transform(Xte) if scaler is not None else Xte
        lo, hi = raw.min(axis=0) - 0.3, raw.max(axis=0) + 0.3
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 250), np.linspace(lo[1], hi[1], 250))
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
        inputs = scaler.transform(grid) if scaler is not None else grid
        zz = _predicted_labels(model, inputs).reshape(gx.shape)
        ax.contourf(
            gx, gy, zz, alpha=0.3, levels=np.arange(ds["classes"] + 1) - 0.5, cmap="coolwarm"
        )
        ax.scatter(raw[:, 0], raw[:, 1], c=yte, s=8, cmap="coolwarm", edgecolors="none")
        ax.set_title("decision boundary (test points)")
        ax.set_aspect("equal", adjustable="box")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Subcommands
# ----------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    import fastmlp as fm

    # --threads sets the process-wide count; main() is callable from Python (the tests call it
    # in-process), so the caller's count is put back afterwards, as `fastmlp bench` does.
    threads = fm.get_num_threads()
    try:
        return _train(args)
    finally:
        fm.set_num_threads(threads)


def _train(args: argparse.Namespace) -> int:
    import fastmlp as fm

    defaults = DATA_DEFAULTS[args.data]
    hidden = args.hidden if args.hidden is not None else defaults["hidden"]
    lr = args.lr if args.lr is not None else defaults["lr"]
    epochs = args.epochs if args.epochs is not None else defaults["epochs"]
    batch_size = defaults["batch_size"] if args.batch_size is None else args.batch_size
    batch_size = None if batch_size == "full" else batch_size
    plot_path = _plot_path(args.plot)
    _check_data_options(args)
    if args.dropout > 0.0 and not hidden:
        raise CLIError("--dropout: the model has no hidden layer to apply it to (--hidden 0)")
    save_path = _output_path(args.save, "--save", ".npz", "model.npz")  # np.savez adds .npz
    if args.threads is not None:
        fm.set_num_threads(args.threads)
    schedule = parse_schedule(args.schedule, epochs) if args.schedule else None

    ds = load_data(args)
    Xtr, ytr = ds["train"]
    Xte, yte = ds["test"]
    classes = ds["classes"]
    sizes = [Xtr.shape[1], *hidden, classes]
    model = fm.MLP(
        sizes,
        activation=args.activation,
        dropout=args.dropout,
        init=args.init,
        seed=args.seed,
        device=args.device,
    )
    optimizer = make_optimizer(args.optimizer, model, args, lr)
    early = fm.EarlyStopping(patience=args.early_stopping) if args.early_stopping else None
    if early is not None and ds["val"] is None:
        raise CLIError("--early-stopping: needs a validation set")
    val = ds["val"]
    validation = None if val is None else (val[0], _targets(val[1], args.loss, classes))
    trainer = fm.Trainer(
        model,
        optimizer=optimizer,
        loss=args.loss,
        batch_size=batch_size,
        epochs=epochs,
        schedule=schedule,
        early_stopping=early,
        seed=args.seed,
        verbose=0 if args.quiet else ("auto" if sys.stderr.isatty() else 1),
        label_smoothing=args.label_smoothing,
    )
    if not args.quiet:
        n_val = 0 if val is None else len(val[1])
        print(
            f"{args.data}: {len(ytr)} train / {n_val} val / {len(yte)} test, "
            f"{Xtr.shape[1]} features, {classes} classes"
        )
        print(
            f"MLP {sizes} {args.activation}, {args.optimizer} lr {lr:g}, loss {args.loss}, "
            f"batch {batch_size if batch_size is not None else 'full'}, {epochs} epochs"
        )
        if args.loss == "bce":
            print(
                "acc and val_acc are bce's per-output accuracy (sigmoid > 0.5 vs the one-hot "
                "target, every output counted); the test line also gives the class accuracy"
            )
    t0 = time.perf_counter()
    history = trainer.fit(Xtr, _targets(ytr, args.loss, classes), validation=validation)
    elapsed = time.perf_counter() - t0

    test_eval = model.evaluate(Xte, _targets(yte, args.loss, classes), loss=args.loss)
    # The class accuracy (arg-max == label) for every loss: what a classification user wants.
    acc = float(np.mean(_predicted_labels(model, Xte) == yte))
    accuracy = f"accuracy {100 * acc:.2f}%"
    accuracy_label = "accuracy"
    if args.loss == "bce" and test_eval.get("accuracy") is not None:
        # The epoch lines' acc / val_acc (Trainer history) are bce's per-output accuracy, a
        # different number (it counts every 0 output of the one-hot target too): name both.
        accuracy = (
            f"class accuracy {100 * acc:.2f}%  per-output acc {100 * test_eval['accuracy']:.2f}%"
        )
        accuracy_label = "per-output accuracy"
    how = (
        " (interrupted)"
        if history.interrupted
        else (" (stopped early)" if history.stopped_early else "")
    )
    print(
        f"test: loss {test_eval['loss']:.4f}  {accuracy} ({len(yte)} samples); "
        f"{len(history)} epochs in {elapsed:.2f}s{how}"
    )
    if save_path:
        raw_input_model(model, ds["scaler"], ds["pixel_divisor"]).save(save_path)
        if not args.quiet:
            print(f"saved the model to {save_path} ({_saved_model_note(args, classes)})")
    if plot_path:
        title = f"{args.data}: test class accuracy {100 * acc:.2f}%"
        save_plot(plot_path, history, model, ds, title, accuracy_label)
        if not args.quiet:
            print(f"saved the plot to {plot_path}")
    return 0


def _gradcheck_targets(loss: str, rng: np.random.Generator, n: int, out: int) -> np.ndarray:
    if loss in ("cross_entropy", "hinge"):
        return rng.integers(0, out, n).astype(np.int64)
    if loss == "bce":
        return rng.uniform(0.0, 1.0, (n, out)).astype(np.float32)
    return rng.standard_normal((n, out)).astype(np.float32)


def cmd_gradcheck(args: argparse.Namespace) -> int:
    import fastmlp as fm

    rng = np.random.default_rng(args.seed)
    sizes = [5, 7, 4]
    x = rng.standard_normal((6, sizes[0])).astype(np.float32)
    width = max(len(a) for a in ACTIVATIONS)
    print(
        f"gradient check: MLP {sizes}, batch {x.shape[0]}, "
        f"max relative error (threshold {args.threshold:g})"
    )
    print(f"{'activation':<{width}}  " + "  ".join(f"{loss:>14}" for loss in LOSSES))
    failed = []
    for act in ACTIVATIONS:
        cells = []
        for loss in LOSSES:
            model = fm.MLP(sizes, activation=act, seed=args.seed)
            y = _gradcheck_targets(loss, rng, x.shape[0], sizes[-1])
            err = float(fm.gradcheck(model, x, y, loss=loss))
            ok = err <= args.threshold
            if not ok:
                failed.append((act, loss, err))
            cells.append(f"{err:9.2e} {'PASS' if ok else 'FAIL'}")
        print(f"{act:<{width}}  " + "  ".join(f"{c:>14}" for c in cells))
    if failed:
        print(f"{len(failed)} of {len(ACTIVATIONS) * len(LOSSES)} checks FAILED")
        return 1
    print(f"all {len(ACTIVATIONS) * len(LOSSES)} checks passed")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import fastmlp as fm

    info = fm.build_info()
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value)) or "-"
        print(f"{key:<{width}}  {value if value != '' else '-'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import _bench

    try:  # an empty list would print an empty table and exit 0
        optimizers = _bench.parse_optimizers(args.optimizers)
    except ValueError as exc:
        raise CLIError(f"--optimizers: {exc}") from None
    use_torch = not args.no_torch and _bench.torch_available()
    # The caller's thread counts come back afterwards (main() is callable from Python).
    with _bench.thread_settings(args.threads, use_torch) as threads:
        head = _bench.header(threads)
        print(_bench.format_table(head, []), flush=True)
        _bench.run_cases(
            _bench.QUICK_CASES,
            optimizers,
            rounds=args.rounds,
            round_s=0.04,
            warmup_s=0.08,
            use_torch=use_torch,
            use_numpy=not args.no_numpy,
            progress=lambda line: print(line, flush=True),
        )
        if not args.no_gemm and not args.no_numpy:
            _bench_gemm(args.rounds, threads)
    if not use_torch and not args.no_torch:
        print("(PyTorch is not installed: no PyTorch column)")
    print(
        "full benchmarks: benchmarks/bench_step.py, bench_gemm.py and bench_epoch.py in the "
        "fastmlp repository"
    )
    return 0


def _bench_gemm(rounds: int, threads: dict[str, Any]) -> None:
    """The GEMM table of ``fastmlp bench``: ops.matmul against numpy.matmul, at the thread
    counts of the step table, a row printed as each is measured."""
    from . import _bench

    blas = threads["numpy_blas"]
    print()
    print(
        f"matrix product, float32: fastmlp.ops.matmul vs numpy.matmul; GFLOP/s of the median of "
        f"{rounds} samples, taken alternately; threads: fastmlp {threads['fastmlp']}, NumPy's "
        f"BLAS {', '.join(blas) if isinstance(blas, list) else blas}"
    )
    print(f"{'case':<16} {'m x n x k':<15} op  {'ours':>7} {'numpy':>7}  vs numpy")
    rng = np.random.default_rng(0)
    for name, m, n, k, trans_a, trans_b in _bench.QUICK_GEMM_CASES:
        row = _bench.gemm_case(
            name,
            m,
            n,
            k,
            trans_a,
            trans_b,
            repeat=rounds,
            sample_s=0.02,
            # bench_gemm.py's defaults: after a shorter pause or settling, this VM's second core
            # still ramps up from idle, and our 2-thread products measured at half speed.
            pause_s=_bench.GEMM_PAUSE_S,
            settle_s=_bench.GEMM_SETTLE_S,
            rng=rng,
        )
        size = f"{m}x{n}x{k}"
        print(
            f"{name:<16} {size:<15} {row['trans']}  {row['ours_gflops']:7.1f} "
            f"{row['numpy_gflops']:7.1f}  {row['ratio']:7.2f}x",
            flush=True,
        )


# ----------------------------------------------------------------------------------------------
# Parser and entry point
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastmlp",
        description="Train multilayer perceptrons with fastmlp's C++ kernels.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train an MLP on a data set and report the test accuracy",
        description="Train an MLP (default: generated Circle data) and report the test accuracy. "
        "Options left out take per-data-set defaults: "
        + "; ".join(
            f"{k}: hidden {','.join(map(str, v['hidden']))}, lr {v['lr']:g}, "
            f"{v['epochs']} epochs, batch {v['batch_size']}"
            for k, v in DATA_DEFAULTS.items()
        ),
    )
    t.add_argument("--data", choices=DATASETS, default="circles", help="data set (default circles)")
    t.add_argument(
        "--data-dir", metavar="DIR", help="folder with the MNIST IDX files (--data mnist only)"
    )
    t.add_argument(
        "--n-samples",
        type=_positive_int,
        help=f"points of generated data: circles, moons, spirals, xor (default {TOY_SAMPLES})",
    )
    t.add_argument(
        "--noise",
        type=_nonneg_float,
        help="noise of generated data: circles, moons, spirals, xor (default: the generator's)",
    )
    t.add_argument(
        "--hidden", type=_hidden, metavar="W1,W2,..", help="hidden layer widths, e.g. 256,128"
    )
    t.add_argument(
        "--activation", choices=ACTIVATIONS, default="relu", help="hidden activation (default relu)"
    )
    t.add_argument(
        "--optimizer", choices=OPTIMIZERS, default="adam", help="optimizer (default adam)"
    )
    t.add_argument(
        "--init",
        choices=INITS,
        default="he",
        help="weight initialisation (default he; normal is the course notes' N(0, 0.01^2))",
    )
    t.add_argument("--lr", type=_nonneg_float, help="learning rate")
    t.add_argument(
        "--momentum",
        type=_nonneg_float,
        help="momentum of sgd (default 0), momentum and nesterov (default 0.9)",
    )
    t.add_argument("--epochs", type=_positive_int, help="number of epochs")
    t.add_argument(
        "--batch-size",
        type=_batch_size,
        metavar="N|full",
        help="rows per step; 1 = online, full = whole set",
    )
    t.add_argument(
        "--dropout",
        type=_nonneg_float,
        default=0.0,
        help="probability of dropping a hidden unit (default 0; the course notes' keep "
        "probability p is 1 - p here)",
    )
    t.add_argument(
        "--weight-decay", type=_nonneg_float, default=0.0, help="L2 weight decay (default 0)"
    )
    t.add_argument("--l1", type=_nonneg_float, default=0.0, help="L1 penalty (default 0)")
    t.add_argument(
        "--label-smoothing",
        type=_unit_float,
        default=0.0,
        help="label smoothing for cross_entropy, in [0, 1] (default 0)",
    )
    t.add_argument(
        "--schedule",
        metavar="NAME[:K=V,..]",
        help="step, multistep, exponential, poly, cosine or plateau, with optional arguments: "
        "cosine, step:step_size=10,gamma=0.5, multistep:milestones=[10,20]",
    )
    t.add_argument(
        "--early-stopping",
        type=_positive_int,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without a better val_loss; keep the best weights",
    )
    t.add_argument(
        "--loss", choices=LOSSES, default="cross_entropy", help="loss (default cross_entropy)"
    )
    t.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seeds the data, the split, the weights and the shuffling (default 0)",
    )
    t.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    t.add_argument(
        "--save",
        metavar="PATH",
        help="save the trained model to a file (.npz added if missing; fastmlp.load reads it). "
        "The command's scaling is folded into its first layer, so it takes the features as the "
        f"data come: for circles, moons, spirals and xor {SAVED_INPUTS['generated']}; for digits "
        f"{SAVED_INPUTS['digits']}; for mnist {SAVED_INPUTS['mnist']}. Its predict(X) gives "
        "class labels with --loss cross_entropy or hinge; with mse the (n, classes) outputs and "
        "with bce a 0/1 (n, classes) matrix (logit > 0), for which forward(X).argmax(axis=1) "
        "gives the labels (as it does for every loss, and as the command's accuracy counts)",
    )
    t.add_argument(
        "--plot",
        metavar="PATH",
        help="write the learning curves (and decision boundary for 2-D data) to a file, PNG "
        "unless PATH ends with another extension matplotlib writes (.pdf, .svg, ..)",
    )
    t.add_argument("--threads", type=_positive_int, metavar="N", help="threads for the CPU kernels")
    t.add_argument("--quiet", action="store_true", help="print only the final result")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser(
        "gradcheck",
        help="check backprop against finite differences for every activation and loss",
        description="Run fastmlp.gradcheck on a small random MLP for every activation x loss and "
        "print the maximum relative error; exit status 1 if any exceeds the threshold.",
    )
    g.add_argument(
        "--threshold",
        type=_nonneg_float,
        default=1e-4,
        help="largest relative error that passes (default 1e-4: fastmlp.gradcheck's bound for a "
        "correct engine; errors are float32 rounding, ~1e-7, and a wrong formula gives ~1)",
    )
    g.add_argument("--seed", type=_seed, default=0, help="seed of the weights and data (default 0)")
    g.set_defaults(func=cmd_gradcheck)

    i = sub.add_parser(
        "info", help="print how fastmlp was built", description="Print fastmlp.build_info()."
    )
    i.set_defaults(func=cmd_info)

    b = sub.add_parser(
        "bench",
        help="time a training step and matrix products against NumPy (and PyTorch if "
        "installed), about 30 seconds",
        description="Time one training step (forward, loss, backward, update) of fastmlp, a plain "
        "NumPy step and PyTorch eager (when importable) on 784-256-128-10 at batch 128 and "
        "2-16-2 at batch 32, then fastmlp.ops.matmul against numpy.matmul on the products of a "
        "784-256 layer at batch 128 and on 1024^3, in one process, and print the medians and "
        "speed-ups.",
    )
    b.add_argument(
        "--optimizers",
        default="adam",
        help="comma-separated: adam, adamw, sgd, momentum, "
        "nesterov, adagrad, rmsprop (default adam)",
    )
    b.add_argument("--threads", type=_positive_int, metavar="N", help="threads for every library")
    b.add_argument("--rounds", type=_positive_int, default=5, help="timed rounds (default 5)")
    b.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    b.add_argument("--no-numpy", action="store_true", help="leave NumPy out (and the products)")
    b.add_argument(
        "--no-gemm", action="store_true", help="leave out the matrix products against NumPy"
    )
    b.set_defaults(func=cmd_bench)
    return parser


_USER_ERRORS = (
    CLIError,
    FileNotFoundError,
    ValueError,
    TypeError,
    ImportError,
    OSError,
    RuntimeError,
    FloatingPointError,
    MemoryError,  # e.g. --hidden 100000000,100000000 (the message names the layer sizes)
)


# Library arguments that an option of another name sets: set_num_threads(n) (--threads),
# load_mnist(path) (--data-dir), MLP(layer_sizes) (--hidden, with the input and output sizes).
# Each is said as its option only where the user gave that option: a layer_sizes error with the
# default --hidden comes from the data's width, which --hidden would not fix.
_ARGUMENT_OPTIONS = {"n": "threads", "path": "data_dir", "layer_sizes": "hidden"}


def _name_option(message: str, args: argparse.Namespace) -> str:
    """``message`` with a leading library argument name that is also an option of this command
    (``dropout: ...``, ``n_samples: ...``) replaced by the option (``--dropout: ...``,
    ``--n-samples: ...``), the name the user typed; the names in ``_ARGUMENT_OPTIONS``
    (``n: ...``) become the option given for them (``--threads: ...``). Only an exact
    ``name: `` prefix is replaced; every option of this CLI is spelled ``--`` and its dest,
    ``_`` written ``-``."""
    name, sep, rest = message.partition(": ")
    if not sep or not name.isidentifier() or name in ("command", "func"):
        return message
    dest = _ARGUMENT_OPTIONS.get(name)
    if dest is not None and getattr(args, dest, None) is not None:
        return f"--{dest.replace('_', '-')}: {rest}"
    if name in vars(args):
        return f"--{name.replace('_', '-')}: {rest}"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastmlp`` command (``python -m fastmlp``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (2, already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:  # outside Trainer.fit, which handles its own Ctrl-C
        print(f"fastmlp {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fastmlp info | head -2`: the reader left; stop quietly
        # Later writes (the interpreter flushes stdout at exit) go nowhere instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except _USER_ERRORS as exc:
        if os.environ.get("FASTMLP_TRACEBACK"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, FloatingPointError):
            # The engine's "loss: the loss is nan" names its own argument, not an option of
            # ours (--loss chose the function, not the value).
            message = f"training diverged ({message}); try a smaller --lr"
        else:
            message = _name_option(message, args)
        print(f"fastmlp {args.command}: error: {message}", file=sys.stderr)
        return 2
