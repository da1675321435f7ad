"""The CUDA training engine (``MLP(..., device="cuda")``, csrc/engine/network_cuda.h) against the
CPU engine, which the other test files check against ``fastmlp.reference``.

The GPU tests skip, with the reason, on a machine without a usable GPU; the device rules at the
top run everywhere. Tolerances: both engines compute the same functions in float32, but their
GEMMs sum in different orders, so results agree to a few float32 roundings per product, not bit
for bit: forward and gradients within rtol 1e-4 (relative to the largest element), and after 10
optimizer steps within 1e-3 (differences compound through the updates).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp as fm

HAVE_GPU = fm.cuda_available()
_info = fm._cuda_info()
requires_gpu = pytest.mark.skipif(
    not HAVE_GPU,
    reason=f"no usable CUDA GPU: {_info.get('error') or 'fastmlp was built without CUDA'}",
)

OPTIMIZERS = {
    "sgd": lambda m: fm.optim.SGD(m, lr=0.05),
    "momentum": lambda m: fm.optim.SGD(m, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adagrad": lambda m: fm.optim.AdaGrad(m, lr=0.05),
    "rmsprop": lambda m: fm.optim.RMSProp(m, lr=0.01, momentum=0.5, centered=True),
    "adam": lambda m: fm.optim.Adam(m, lr=0.01),
    "adamw": lambda m: fm.optim.AdamW(m, lr=0.01, weight_decay=0.1),
}
LOSSES = ["cross_entropy", "mse", "hinge", "bce"]


def targets(rng: np.random.Generator, loss: str, n: int, classes: int) -> np.ndarray:
    if loss in ("cross_entropy", "hinge"):
        return rng.integers(0, classes, n).astype(np.int64)
    if loss == "bce":
        return (rng.random((n, classes)) > 0.5).astype(np.float32)
    return rng.standard_normal((n, classes)).astype(np.float32)


def close(a, b, rtol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max(), 1e-30)
    return np.abs(a - b).max() <= rtol * scale


# ------------------------------------------------------------------ everywhere
@pytest.mark.skipif(HAVE_GPU, reason="checks the error raised when no GPU is usable")
def test_cuda_device_without_gpu_says_why():
    with pytest.raises(RuntimeError, match=r"^device: .*CUDA is not available"):
        fm.MLP([4, 3], device="cuda")
    model = fm.MLP([4, 3])
    with pytest.raises(RuntimeError, match=r"^device: "):
        model.to("cuda")
    assert model.device == "cpu"  # unchanged by the failed move


def test_device_property_and_to_cpu_is_identity():
    model = fm.MLP([4, 5, 3], seed=1)
    assert model.device == "cpu"
    assert model.to("cpu") is model
    opt = fm.optim.Adam(model)
    assert opt.device == "cpu"


# ------------------------------------------------------------------ GPU engine vs CPU engine
@requires_gpu
@pytest.mark.parametrize("activation", ["relu", "tanh", "prelu", "elu", "sigmoid", "leaky_relu"])
def test_forward_and_gradients_match_cpu(rng, activation):
    sizes = [13, 37, 9, 5]
    cpu = fm.MLP(sizes, activation=activation, seed=3)
    gpu = fm.MLP(sizes, activation=activation, seed=3, device="cuda")
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_array_equal(a, b)  # same seed, same initial weights
    x = rng.standard_normal((67, 13)).astype(np.float32)
    assert close(gpu(x), cpu(x), 1e-4)
    for loss in LOSSES:
        y = targets(rng, loss, 67, 5)
        lc, gc = cpu.loss_and_gradients(x, y, loss)
        lg, gg = gpu.loss_and_gradients(x, y, loss)
        assert abs(lg - lc) <= 1e-4 * max(abs(lc), 1e-6), (loss, lc, lg)
        for a, b in zip(gg, gc):
            assert close(a, b, 1e-4), loss


@requires_gpu
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("loss", LOSSES)
def test_ten_steps_match_cpu(rng, opt_name, loss):
    sizes = [11, 24, 6]
    cpu = fm.MLP(sizes, seed=5)
    gpu = fm.MLP(sizes, seed=5, device="cuda")
    oc, og = OPTIMIZERS[opt_name](cpu), OPTIMIZERS[opt_name](gpu)
    for _ in range(10):
        x = rng.standard_normal((32, 11)).astype(np.float32)
        y = targets(rng, loss, 32, 6)
        lc = cpu.train_step(x, y, loss, oc)
        lg = gpu.train_step(x, y, loss, og)
        assert abs(lg - lc) <= 1e-3 * max(abs(lc), 1e-6)
    assert og.step_count == oc.step_count == 10
    for a, b in zip(gpu.get_weights(), cpu.get_weights()):
        assert close(a, b, 1e-3)


@requires_gpu
def test_same_seed_same_dropout_masks(rng):
    # Same seed and offsets: the GPU draws the CPU's masks, so the losses agree to rounding.
    sizes = [8, 64, 64, 4]
    cpu = fm.MLP(sizes, dropout=0.5, seed=9)
    gpu = fm.MLP(sizes, dropout=0.5, seed=9, device="cuda")
    x = rng.standard_normal((40, 8)).astype(np.float32)
    y = rng.integers(0, 4, 40)
    for _ in range(3):
        lc, gc = cpu.loss_and_gradients(x, y)
        lg, gg = gpu.loss_and_gradients(x, y)
        assert abs(lg - lc) <= 1e-4 * abs(lc)
        assert close(gg[0], gc[0], 1e-4)
    assert gpu.rng_offset == cpu.rng_offset > 0


@requires_gpu
def test_to_round_trip_keeps_weights_and_offset(rng):
    model = fm.MLP([5, 7, 3], dropout=0.2, seed=2)
    model.loss_and_gradients(rng.standard_normal((10, 5)).astype(np.float32), np.zeros(10, int))
    weights, offset = model.get_weights(), model.rng_offset
    assert model.to("cuda") is model and model.device == "cuda"
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    assert model.rng_offset == offset
    model.to("cpu")
    opt_cpu = fm.optim.SGD(model, lr=0.1)
    model.to("cuda")
    with pytest.raises(ValueError, match=r"^optimizer: it was built while the model was on 'cpu'"):
        model.train_step(np.ones((2, 5), np.float32), np.zeros(2, int), optimizer=opt_cpu)


@requires_gpu
def test_non_finite_step_leaves_model_unchanged(rng):
    model = fm.MLP([4, 8, 3], seed=0, device="cuda")
    opt = fm.optim.Adam(model, lr=1e-3)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    model.train_step(x, np.zeros(6, int), optimizer=opt)
    before, offset = model.get_weights(), model.rng_offset
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"^x: contains NaN"):
        model.train_step(bad, np.zeros(6, int), optimizer=opt)
    with pytest.raises(FloatingPointError, match=r"^loss: the loss is"):
        model.train_step(np.full((6, 4), 3e38, np.float32), np.zeros(6, int), optimizer=opt)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert opt.step_count == 1 and model.rng_offset == offset


@requires_gpu
def test_device_step_matches_host_step(rng):
    a = fm.MLP([6, 10, 4], seed=4, device="cuda")
    b = fm.MLP([6, 10, 4], seed=4, device="cuda")
    oa, ob = fm.optim.Adam(a, lr=0.01), fm.optim.Adam(b, lr=0.01)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    y = rng.integers(0, 4, 16).astype(np.int64)
    la = a.train_step(x, y, optimizer=oa)
    step = b._net.train_step_device  # (x, y, n, loss code, label_smoothing, training, state)
    lb = step(fm.to_device(x)._buf, fm.to_device(y)._buf, 16, 0, 0.0, True, ob._state)
    assert la == lb  # same kernels, same inputs: the same bits
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    bad = y.copy()
    bad[3] = 4
    with pytest.raises(ValueError, match=r"^y: a label is out of range"):
        step(fm.to_device(x)._buf, fm.to_device(bad)._buf, 16, 0, 0.0, True, ob._state)


@requires_gpu
def test_out_of_device_memory_is_memory_error():
    # 2^38 floats: 1 TiB of weights, more than any GPU holds (2^35, 128 GiB, would fit an H200's
    # parameters and fail on the gradients instead).
    with pytest.raises(MemoryError, match="parameters"):
        fm.MLP([1 << 20, 1 << 18, 2], device="cuda")


@requires_gpu
def test_trainer_fit_on_gpu_matches_cpu(rng):
    X, y = fm.data.make_circles(n_samples=400, seed=0)
    hist = {}
    for device in ("cpu", "cuda"):
        model = fm.MLP([2, 32, 2], seed=0, device=device)
        opt = fm.optim.Adam(model, lr=1e-2)
        hist[device] = fm.Trainer(
            model, optimizer=opt, batch_size=32, epochs=3, seed=0, verbose=0
        ).fit(X, y)
    assert np.allclose(hist["cuda"].train_loss, hist["cpu"].train_loss, rtol=1e-3)


@requires_gpu
def test_gather_rows_matches_take(rng):
    from fastmlp import _cuda, cuda

    src = rng.standard_normal((97, 13)).astype(np.float32)
    order = rng.permutation(97).astype(np.int64)
    dst = cuda.empty((40, 13))
    _cuda.gather_rows(
        dst._buf, fm.to_device(src)._buf, fm.to_device(order)._buf, 50, 40, 97, 13 * 4
    )
    np.testing.assert_array_equal(dst.numpy(), src[order[50:90]])


@requires_gpu
def test_trainer_streams_when_the_data_set_does_not_fit(rng, monkeypatch):
    # The device-resident path and the streaming path feed the same batches to the same kernels.
    from fastmlp import _cuda

    X = rng.standard_normal((300, 5)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    hist = []
    for tight in (False, True):
        if tight:
            monkeypatch.setattr(_cuda, "mem_get_info", lambda: (1024, 1 << 30))
        model = fm.MLP([5, 16, 3], seed=1, dropout=0.1, device="cuda")
        trainer = fm.Trainer(model, fm.optim.SGD(model, lr=0.1), batch_size=64, epochs=2, verbose=0)
        if tight:
            with pytest.warns(RuntimeWarning, match=r"^Trainer.fit: the training set needs"):
                hist.append(trainer.fit(X, y))
        else:
            hist.append(trainer.fit(X, y))
    assert hist[0].train_loss == hist[1].train_loss


@requires_gpu
def test_prelu_dropout_chunked_forward_evaluate_and_counts_match_cpu(rng):
    # PReLU (the slope read on the device) with dropout, forward past the 1024-row chunk, evaluate
    # in uneven chunks and the training counters, each against the CPU engine.
    sizes = [7, 33, 17, 4]
    kw = {"activation": ["prelu", "tanh"], "dropout": [0.3, 0.2], "seed": 11}
    cpu, gpu = fm.MLP(sizes, **kw), fm.MLP(sizes, **kw, device="cuda")
    x = rng.standard_normal((64, 7)).astype(np.float32)
    for loss in LOSSES:
        y = targets(rng, loss, 64, 4)
        lc, gc = cpu.loss_and_gradients(x, y, loss)
        lg, gg = gpu.loss_and_gradients(x, y, loss)
        assert abs(lg - lc) <= 1e-4 * max(abs(lc), 1e-6), (loss, lc, lg)
        for a, b in zip(gg, gc):
            assert close(a, b, 1e-4), loss
    assert gpu.rng_offset == cpu.rng_offset == 4 * 64 * (33 + 17)
    assert close(gpu._net.forward(x, True), cpu._net.forward(x, True), 1e-4)  # same masks
    assert gpu.rng_offset == cpu.rng_offset == 5 * 64 * (33 + 17)

    xl = rng.standard_normal((2500, 7)).astype(np.float32)  # 3 chunks of at most 1024 rows
    assert close(gpu(xl), cpu(xl), 1e-4)
    for loss in LOSSES:
        y = targets(rng, loss, 2500, 4)
        ec = cpu.evaluate(xl, y, loss, batch_size=700)
        eg = gpu.evaluate(xl, y, loss, batch_size=700)
        assert abs(eg["loss"] - ec["loss"]) <= 1e-4 * abs(ec["loss"]), loss
        if ec["accuracy"] is None:
            assert eg["accuracy"] is None
        else:  # a near-tie of two logits may round the other way on one device
            assert abs(eg["accuracy"] - ec["accuracy"]) <= 1e-3, loss

    oc, og = fm.optim.SGD(cpu, lr=0.01), fm.optim.SGD(gpu, lr=0.01)
    cpu._take_train_counts()  # start both counts from zero
    gpu._take_train_counts()
    for _ in range(3):
        y = targets(rng, "cross_entropy", 64, 4)
        cpu.train_step(x, y, "cross_entropy", oc)
        gpu.train_step(x, y, "cross_entropy", og)
    counts = gpu._take_train_counts()
    assert counts == cpu._take_train_counts() and counts[1] == 3 * 64


@requires_gpu
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_trainer_one_output_float_targets_on_gpu(rng, monkeypatch, loss):
    # 1-D float targets of a one-output model: the model reads them as (n, 1), so the device copy
    # gathers rows of 4 bytes (labels: 8). Device-resident, streamed and CPU runs must agree.
    from fastmlp import _cuda

    X = rng.standard_normal((200, 3)).astype(np.float32)
    if loss == "bce":
        y = (rng.random(200) > 0.5).astype(np.float32)
    else:
        y = rng.standard_normal(200).astype(np.float32)
    hist = {}
    for run in ("cpu", "cuda", "stream"):
        device = "cpu" if run == "cpu" else "cuda"
        model = fm.MLP([3, 16, 1], seed=2, dropout=0.1, device=device, loss=loss)
        trainer = fm.Trainer(
            model, fm.optim.Adam(model, lr=1e-2), batch_size=48, epochs=2, verbose=0
        )
        if run == "stream":
            monkeypatch.setattr(_cuda, "mem_get_info", lambda: (1024, 1 << 30))
            with pytest.warns(RuntimeWarning, match=r"^Trainer.fit: the training set needs"):
                hist[run] = trainer.fit(X, y)
        else:
            hist[run] = trainer.fit(X, y)
    assert hist["cuda"].train_loss == hist["stream"].train_loss
    assert hist["cuda"].train_accuracy == hist["stream"].train_accuracy
    assert np.allclose(hist["cuda"].train_loss, hist["cpu"].train_loss, rtol=1e-3)


@requires_gpu
def test_workspace_out_of_memory_leaves_a_working_model(rng):
    # Last in the file: were the bug back, it would end every later CUDA call of the process.
    # One hidden layer of 2^20 units: 16 MiB of workspace per batch row, so 2^16 rows ask for
    # 1 TiB. The failed growth frees the old workspace first; the next, smaller step must
    # allocate a new one instead of running on none.
    model = fm.MLP([1, 1 << 20, 1], loss="mse", seed=0, device="cuda")
    opt = fm.optim.SGD(model, lr=1e-3)
    x = rng.standard_normal((1 << 16, 1)).astype(np.float32)
    y = rng.standard_normal((1 << 16, 1)).astype(np.float32)
    model.train_step(x[:8], y[:8], optimizer=opt)
    before = model.get_weights()
    with pytest.raises(MemoryError, match="workspace"):
        model.train_step(x, y, optimizer=opt)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert opt.step_count == 1
    model.train_step(x[:4], y[:4], optimizer=opt)
    assert opt.step_count == 2
