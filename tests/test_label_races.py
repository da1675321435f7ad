"""Labels that change after they were checked: the loss kernels must never index with them.

The bindings check the label range with the GIL held, then run the kernels without it on the
caller's own array, so another Python thread can rewrite a label in between. The kernels (CPU
cpu/losses.cpp, CUDA cuda/losses.cu) therefore check each label as they read it and raise
ValueError for one out of range, before the engine changes anything.

The deterministic tests hand the kernels an out-of-range label through the paths that skip the
up-front check (``Network.debug_unchecked_labels``; on a GPU, ``train_step_device`` with
``targets_checked=True``). The race test runs a writer thread against every label path for a
bounded time in a subprocess, so that a crash fails the test instead of ending pytest.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmlp as fm

LABEL_LOSSES = {"cross_entropy": 0, "hinge": 2}
CALLS = ["train_step", "loss_and_gradients", "evaluate"]
RACED = r"as the loss read it \(did another thread change the labels during the call\?\)"


def _model_and_data(rng: np.random.Generator, batch: int, *, wide: bool = False):
    """A model with dropout (so that a failed step could move rng_offset) and Adam (so that its
    moment buffers and step count could move), after one good step, and a batch for it."""
    sizes = [32, 256, 256, 10] if wide else [8, 16, 10]
    model = fm.MLP(sizes, activation="relu", dropout=0.25, seed=3)
    opt = fm.optim.Adam(model, lr=1e-2)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch).astype(np.int64)
    model.train_step(x, y, optimizer=opt)
    model._net.take_train_counts()
    return model, opt, x, y


@pytest.mark.parametrize("loss", sorted(LABEL_LOSSES))
@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("bad", [10, -1, 1 << 40, -(1 << 62)])
@pytest.mark.parametrize("batch", [5, 512])
def test_engine_refuses_a_label_out_of_range_and_changes_nothing(rng, loss, call, bad, batch):
    """batch 512 on the wide net takes the batch-parallel passes (the loss itself runs on one
    thread there: 512 x 10 is below its threading grain)."""
    wide = batch == 512
    model, opt, x, y = _model_and_data(rng, batch, wide=wide)
    twin, twin_opt, _, _ = _model_and_data(np.random.default_rng(12345), batch, wide=wide)
    net = model._net
    before = net.parameters()
    grads_before = net.gradients()
    offset, steps = net.rng_offset, opt.step_count
    y_bad = y.copy()
    y_bad[batch // 2] = bad
    with pytest.raises(ValueError, match=rf"^y: label {bad} at index {batch // 2} .*{RACED}"):
        net.debug_unchecked_labels(call, x, y_bad, LABEL_LOSSES[loss], opt._state)
    np.testing.assert_array_equal(net.parameters(), before)
    np.testing.assert_array_equal(net.gradients(), grads_before)
    assert net.rng_offset == offset and opt.step_count == steps
    assert net.take_train_counts() == (0, 0)
    # The optimizer's buffers too: the next good step gives the same bits as on a twin that never
    # saw the bad call.
    model.loss = loss
    twin.loss = loss
    assert model.train_step(x, y, optimizer=opt) == twin.train_step(x, y, optimizer=twin_opt)
    np.testing.assert_array_equal(net.parameters(), twin._net.parameters())


@pytest.mark.parametrize("threads", [1, 2])
def test_the_lowest_bad_row_is_reported_whatever_the_threads(rng, restore_threads, threads):
    """8192 x 10 logits: the loss splits its rows over the threads; two bad labels, one in each
    half, and the error names the lower row for every thread count (it named either before).
    128 inputs, so that the step's 8192 * 128 * 10 multiply-adds are above the engine's
    one-thread limit (Network::kSerialStepMacs, 2^20): with 4 inputs it ran on one thread
    whatever set_num_threads said, and reporting the highest bad row passed (mutation audit)."""
    fm.set_num_threads(threads)
    model = fm.MLP([128, 10], seed=0)
    x = rng.standard_normal((8192, 128)).astype(np.float32)
    y = rng.integers(0, 10, 8192).astype(np.int64)
    y[100], y[8000] = 10, -1
    for _ in range(5):
        with pytest.raises(ValueError, match=rf"^y: label 10 at index 100 .*{RACED}"):
            model._net.debug_unchecked_labels("loss_and_gradients", x, y, 0)


def test_debug_unchecked_labels_matches_the_checked_calls(rng):
    """The test hook runs the same engine calls as the checked methods when the labels are valid,
    so the tests above exercise the real paths."""
    model, opt, x, y = _model_and_data(rng, 7)
    twin, twin_opt, _, _ = _model_and_data(np.random.default_rng(12345), 7)
    net, tnet = model._net, twin._net
    assert net.debug_unchecked_labels("evaluate", x, y, 0) == tnet.evaluate(x, y, 0, 7)[0]
    value = net.debug_unchecked_labels("loss_and_gradients", x, y, 2)
    assert value == tnet.loss_and_gradients(x, y, 2, 0.0, True)[0]
    np.testing.assert_array_equal(net.gradients(), tnet.gradients())
    value = net.debug_unchecked_labels("train_step", x, y, 0, opt._state)
    assert value == tnet.train_step(x, y, 0, 0.0, True, twin_opt._state)
    np.testing.assert_array_equal(net.parameters(), tnet.parameters())
    with pytest.raises(ValueError, match=r"^optimizer: train_step needs one"):
        net.debug_unchecked_labels("train_step", x, y, 0)
    with pytest.raises(ValueError, match=r"^loss: expected a loss that takes labels"):
        net.debug_unchecked_labels("evaluate", x, y, 1)
    with pytest.raises(ValueError, match=r"^call: expected"):
        net.debug_unchecked_labels("forward", x, y, 0)


def test_first_bad_label_is_reported_on_one_thread(rng):
    """On one thread the rows are visited in order: the first bad row is the one named."""
    model, opt, x, y = _model_and_data(rng, 9)
    y_bad = y.copy()
    y_bad[[2, 6]] = [17, -4]
    threads = fm._core.get_num_threads()
    fm._core.set_num_threads(1)
    try:
        with pytest.raises(ValueError, match=r"^y: label 17 at index 2 is out of range \[0, 10\)"):
            model._net.debug_unchecked_labels("train_step", x, y_bad, 0, opt._state)
    finally:
        fm._core.set_num_threads(threads)


@pytest.mark.skipif(not fm.cuda_available(), reason="no usable CUDA GPU")
@pytest.mark.parametrize("loss", sorted(LABEL_LOSSES))
def test_cuda_kernels_refuse_a_label_out_of_range(rng, loss):
    """targets_checked=True skips the engine's own check (the Trainer checks once per fit), so
    the label reaches the CUDA loss kernels, which must refuse it without indexing with it."""
    model = fm.MLP([6, 10, 4], seed=4, device="cuda")
    twin = fm.MLP([6, 10, 4], seed=4, device="cuda")
    opt, twin_opt = fm.optim.Adam(model, lr=0.01), fm.optim.Adam(twin, lr=0.01)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    y = rng.integers(0, 4, 16).astype(np.int64)
    code = LABEL_LOSSES[loss]

    def step(m, o, labels):  # targets_checked=True: no range check before the kernels
        dx, dy = fm.to_device(x)._buf, fm.to_device(labels)._buf
        return m._net.train_step_device(dx, dy, 16, code, 0.0, True, o._state, True)

    step(model, opt, y)
    step(twin, twin_opt, y)
    for bad in (4, -1, 1 << 40):
        y_bad = y.copy()
        y_bad[11] = bad
        with pytest.raises(ValueError, match=rf"^y: a label is out of range \[0, 4\) {RACED}"):
            step(model, opt, y_bad)
    assert opt.step_count == 1
    assert step(model, opt, y) == step(twin, twin_opt, y)
    for wa, wb in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(wa, wb)


RACE_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    import fastmlp as fm
    from fastmlp import ops

    seconds = float(sys.argv[1])
    rng = np.random.default_rng(0)
    c = 10
    logits = rng.standard_normal((20000, c)).astype(np.float32)
    labels = np.zeros(20000, dtype=np.int64)
    model = fm.MLP([64, 256, 256, c], seed=0)
    opt = fm.optim.SGD(model, lr=0.0)
    x = rng.standard_normal((512, 64)).astype(np.float32)
    y = np.zeros(512, dtype=np.int64)
    stop = False

    def flip():
        while not stop:
            for arr in (labels, y):
                arr[-1] = c
                arr[-1] = 1 << 40
                arr[-1] = -1
                arr[-1] = 0

    calls = {
        "softmax_cross_entropy": lambda: ops.softmax_cross_entropy(logits, labels),
        "multiclass_hinge_loss": lambda: ops.multiclass_hinge_loss(logits, labels),
        "train_step_fast": lambda: model.train_step(x, y, optimizer=opt),
        "train_step_checked": lambda: model._net.train_step(x, y, 2, 0.0, True, opt._state),
        "loss_and_gradients": lambda: model._net.loss_and_gradients(x, y, 0, 0.0, True),
        "evaluate": lambda: model._net.evaluate(x, y, 0, 512),
    }
    counts = {name: [0, 0] for name in calls}
    writer = threading.Thread(target=flip)
    writer.start()
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            for name, call in calls.items():
                try:
                    call()
                    counts[name][0] += 1
                except ValueError as e:
                    assert "out of range" in str(e), (name, str(e))
                    counts[name][1] += 1
    finally:
        stop = True
        writer.join()
    assert np.isfinite(model._net.parameters()).all()
    print(counts)
    """
)


def test_labels_rewritten_by_another_thread_never_crash(tmp_path):
    """Every call either succeeds or raises ValueError; before the kernels checked, the engine
    path segfaulted within a few hundred steps and the ops wrote past the end of the gradient
    buffer (AddressSanitizer)."""
    script = tmp_path / "race.py"
    script.write_text(RACE_SCRIPT)
    run = subprocess.run(
        [sys.executable, str(script), "2.0"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr[-4000:]}"
