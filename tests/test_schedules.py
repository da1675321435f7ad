"""fastmlp.schedules against hand-computed values (and PyTorch when it is installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastmlp import schedules as S

# Closed forms evaluated in float64 by the same expressions, so the comparisons are to ~1 ulp:
# rel=1e-12 leaves room only for the order of operations.
REL = 1e-12


def lrs(sched, n, base=1.0):
    return [sched.lr_at(e, base) for e in range(n)]


def test_step_lr():
    assert lrs(S.StepLR(step_size=3, gamma=0.5), 8) == pytest.approx(
        [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25], rel=REL
    )


def test_multistep_lr_divides_by_ten_at_milestones():
    got = lrs(S.MultiStepLR([5, 2], gamma=0.1), 7, base=0.1)  # unsorted input is sorted
    assert got == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001], rel=REL)
    twice = S.MultiStepLR([2, 2], gamma=0.5)  # a repeated milestone counts twice (PyTorch)
    assert twice.lr_at(2, 1.0) == pytest.approx(0.25, rel=REL)


def test_exponential_lr():
    assert lrs(S.ExponentialLR(0.9), 4, base=2.0) == pytest.approx([2, 1.8, 1.62, 1.458], rel=REL)


def test_polynomial_lr_power_four_like_yolo():
    sched = S.PolynomialLR(total_epochs=4, power=4.0)
    expected = [1.0, 0.75**4, 0.5**4, 0.25**4, 0.0, 0.0]
    assert lrs(sched, 6) == pytest.approx(expected, rel=REL, abs=0.0)
    assert lrs(S.PolynomialLR(total_epochs=4), 5, base=0.4) == pytest.approx(
        [0.4, 0.3, 0.2, 0.1, 0.0], rel=REL, abs=1e-15
    )


def test_cosine_annealing_lr():
    sched = S.CosineAnnealingLR(T_max=4, eta_min=0.1)
    c = [math.cos(math.pi * e / 4) for e in range(9)]
    expected = [0.1 + 0.9 * (1 + ce) / 2 for ce in c]
    assert lrs(sched, 9) == pytest.approx(expected, rel=REL)
    assert sched.lr_at(4, 1.0) == pytest.approx(0.1, rel=REL)  # reaches eta_min at T_max
    assert sched.lr_at(8, 1.0) == pytest.approx(1.0, rel=REL)  # and comes back at 2 T_max


def test_base_lr_from_constructor_or_call():
    sched = S.StepLR(2, gamma=0.5, base_lr=0.2)
    assert sched.lr_at(2) == pytest.approx(0.1, rel=REL)
    assert sched.lr_at(2, base_lr=1.0) == pytest.approx(0.5, rel=REL)
    with pytest.raises(ValueError, match=r"^base_lr"):
        S.StepLR(2).lr_at(0)
    with pytest.raises(ValueError, match=r"^epoch"):
        sched.lr_at(-1)
    with pytest.raises(TypeError, match=r"^epoch"):
        sched.lr_at(1.5)


def _plateau_run(sched, metrics, lr=1.0):
    sched.reset(lr)
    return [sched.step(m) for m in metrics]


def test_reduce_on_plateau_min_mode_by_hand():
    sched = S.ReduceLROnPlateau(factor=0.5, patience=2)
    # best: 1.0, 0.9; then three bad epochs: the third (> patience) halves the rate and restarts
    # the count; two more bad epochs are not enough; a third halves again.
    got = _plateau_run(sched, [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95])
    assert got == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_reduce_on_plateau_threshold_cooldown_min_lr_and_max_mode():
    # rel threshold 0.1: 0.95 is not better than 1.0 * (1 - 0.1) = 0.9
    sched = S.ReduceLROnPlateau(factor=0.5, patience=0, threshold=0.1)
    assert _plateau_run(sched, [1.0, 0.95]) == [1.0, 0.5]
    # abs threshold 0.01: 0.985 < 1.0 - 0.01 improves; 0.98 is not < 0.985 - 0.01
    sched = S.ReduceLROnPlateau(factor=0.5, patience=0, threshold=0.01, threshold_mode="abs")
    assert _plateau_run(sched, [1.0, 0.985, 0.98]) == [1.0, 1.0, 0.5]
    # cooldown 2: after a cut, two epochs do not count
    sched = S.ReduceLROnPlateau(factor=0.5, patience=0, cooldown=2)
    assert _plateau_run(sched, [1.0, 2, 2, 2, 2]) == [1.0, 0.5, 0.5, 0.5, 0.25]
    # min_lr floors the rate
    sched = S.ReduceLROnPlateau(factor=0.1, patience=0, min_lr=0.05)
    assert _plateau_run(sched, [1.0, 2, 2, 2]) == pytest.approx([1.0, 0.1, 0.05, 0.05], rel=REL)
    # accuracies: mode inferred as max
    sched = S.ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1)
    assert sched.mode == "max"
    assert _plateau_run(sched, [0.5, 0.6, 0.55, 0.6, 0.59]) == [1.0, 1.0, 1.0, 0.5, 0.5]
    # max mode, abs threshold 0.01: 0.505 is not > 0.5 + 0.01; 0.52 is
    sched = S.ReduceLROnPlateau(
        mode="max", factor=0.5, patience=0, threshold=0.01, threshold_mode="abs"
    )
    assert _plateau_run(sched, [0.5, 0.505, 0.52]) == [1.0, 0.5, 0.5]
    # NaN never improves
    sched = S.ReduceLROnPlateau(factor=0.5, patience=0)
    assert _plateau_run(sched, [float("nan"), float("nan")]) == [0.5, 0.25]


def test_reduce_on_plateau_needs_reset_and_checks_arguments():
    sched = S.ReduceLROnPlateau()
    with pytest.raises(RuntimeError, match="reset"):
        sched.step(1.0)
    for kw, name in [
        ({"mode": "up"}, "mode"),
        ({"factor": 1.0}, "factor"),
        ({"patience": -1}, "patience"),
        ({"threshold_mode": "x"}, "threshold_mode"),
        ({"min_lr": -1}, "min_lr"),
        ({"monitor": "val_acc"}, "monitor: expected one of train_loss"),  # at construction
    ]:
        with pytest.raises(ValueError, match=f"^{name}"):
            S.ReduceLROnPlateau(**kw)
    for kw, name in [({"cooldown": 1.5}, "cooldown"), ({"factor": "x"}, "factor")]:
        with pytest.raises(TypeError, match=f"^{name}"):
            S.ReduceLROnPlateau(**kw)


def test_numpy_integers_are_accepted_as_ints():
    """As everywhere else in the API (epoch counts often come out of NumPy arithmetic)."""
    three, ten = np.int64(3), np.int32(10)
    assert S.StepLR(three).lr_at(3, 1.0) == pytest.approx(0.1)
    assert S.MultiStepLR([three]).milestones == [3]
    assert S.CosineAnnealingLR(ten).lr_at(10, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert S.PolynomialLR(ten).lr_at(0, 1.0) == 1.0
    assert S.ReduceLROnPlateau(patience=three, cooldown=np.int8(1)).patience == 3


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: S.StepLR(0), ValueError, "^step_size"),
        (lambda: S.StepLR(2.5), TypeError, "^step_size"),
        (lambda: S.MultiStepLR([0, 3]), ValueError, "^milestones"),
        (lambda: S.MultiStepLR([1.5]), TypeError, "^milestones"),
        # Not "'int' object is not iterable", which names nothing.
        (lambda: S.MultiStepLR(10), TypeError, r"^milestones: expected a list .*got int"),
        (lambda: S.MultiStepLR("10"), TypeError, r"^milestones: expected a list .*got str"),
        (lambda: S.ExponentialLR(-0.5), ValueError, "^gamma"),
        (lambda: S.PolynomialLR(0), ValueError, "^total_epochs"),
        (lambda: S.CosineAnnealingLR(10, eta_min=float("inf")), ValueError, "^eta_min"),
    ],
)
def test_constructor_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_make_schedule():
    assert isinstance(S.make_schedule("step", step_size=2), S.StepLR)
    assert isinstance(S.make_schedule("multistep", milestones=[3]), S.MultiStepLR)
    assert isinstance(S.make_schedule("exponential", gamma=0.9), S.ExponentialLR)
    assert isinstance(S.make_schedule("poly", total_epochs=5, power=4), S.PolynomialLR)
    assert isinstance(S.make_schedule("Cosine", T_max=5), S.CosineAnnealingLR)
    assert isinstance(S.make_schedule("plateau", patience=3), S.ReduceLROnPlateau)
    obj = S.StepLR(3)
    assert S.make_schedule(obj) is obj
    assert S.make_schedule(None) is None
    with pytest.raises(ValueError, match=r"^schedule: unknown schedule 'warmup'; known: .*cosine"):
        S.make_schedule("warmup")
    with pytest.raises(TypeError, match=r"^schedule: 'step'"):
        S.make_schedule("step")  # step_size missing
    with pytest.raises(ValueError, match=r"^schedule"):
        S.make_schedule(obj, gamma=0.5)
    with pytest.raises(TypeError, match=r"^schedule"):
        S.make_schedule(42)


# ---------------------------------------------------------------------------------------------
# Against PyTorch's schedulers (skipped where torch is not installed)
# ---------------------------------------------------------------------------------------------


def _torch_lrs(make, n, base=0.1):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = make(torch.optim.lr_scheduler, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (S.StepLR(3, 0.5), lambda m, o: m.StepLR(o, 3, 0.5)),
        (S.MultiStepLR([2, 5], 0.1), lambda m, o: m.MultiStepLR(o, [2, 5], 0.1)),
        (S.ExponentialLR(0.9), lambda m, o: m.ExponentialLR(o, 0.9)),
        (S.PolynomialLR(6, 2.0), lambda m, o: m.PolynomialLR(o, total_iters=6, power=2.0)),
        (S.CosineAnnealingLR(6, 0.01), lambda m, o: m.CosineAnnealingLR(o, 6, 0.01)),
    ],
)
def test_epoch_schedules_match_torch(ours, theirs):
    expected = _torch_lrs(theirs, 10)
    # torch applies the epoch factors recursively in float64: agreement to ~1e-12 relative;
    # PolynomialLR reaches 0 exactly in both, hence the tiny absolute term
    assert lrs(ours, 10, base=0.1) == pytest.approx(expected, rel=1e-9, abs=1e-15)


_PLATEAU_METRICS = {
    # a plateau every threshold sees; steps of at most 0.002 that only threshold=1e-4 counts as
    # improvements; a step of 0.008 (from 0.38 or 0.62) that "rel" 0.01 counts and "abs" 0.01
    # does not: the three settings cut the rate at different epochs
    "min": [0.48, 0.48, 0.48, 0.48, 0.4, 0.398, 0.397, 0.3965, 0.38, 0.372, 0.371, 0.371, 0.371],
    "max": [0.52, 0.52, 0.52, 0.52, 0.6, 0.602, 0.604, 0.605, 0.62, 0.628, 0.629, 0.629, 0.629],
}


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize(
    ("threshold_mode", "threshold"), [("rel", 1e-4), ("rel", 0.01), ("abs", 0.01)]
)
def test_plateau_matches_torch(mode, threshold_mode, threshold):
    torch = pytest.importorskip("torch")
    metrics = _PLATEAU_METRICS[mode]
    kw = {"mode": mode, "factor": 0.5, "patience": 2, "cooldown": 1}
    kw.update(threshold=threshold, threshold_mode=threshold_mode)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
    expected = []
    for m in metrics:
        theirs.step(m)
        expected.append(opt.param_groups[0]["lr"])
    ours = S.ReduceLROnPlateau(**kw)
    assert _plateau_run(ours, metrics, lr=0.1) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "schedule",
    [S.ExponentialLR(2.0), S.StepLR(step_size=1, gamma=2.0), S.MultiStepLR(range(1, 1200), 2.0)],
    ids=["exponential", "step", "multistep"],
)
def test_growth_beyond_a_float_gives_inf_not_overflow_error(schedule):
    # PyTorch multiplies epoch by epoch and reaches inf; gamma ** 1100 alone raised OverflowError.
    assert schedule.lr_at(1100, base_lr=0.1) == math.inf
    # gamma ** 1100 is beyond a float, the product is not: computed, not inf
    assert schedule.lr_at(1100, base_lr=1e-300) == pytest.approx(1e-300 * 2.0**100 * 2.0**1000)
    assert schedule.lr_at(1100, base_lr=0.0) == 0.0
    assert schedule.lr_at(10, base_lr=0.1) == 0.1 * 2.0**10  # the exact path below overflow


def test_make_schedule_refuses_a_class():
    with pytest.raises(TypeError, match=r"^schedule: got the class CosineAnnealingLR; pass an"):
        S.make_schedule(S.CosineAnnealingLR)


def test_polynomial_with_power_zero_keeps_the_base_rate_as_torch():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    theirs = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=3, power=0.0)
    expected = []
    for _ in range(5):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        theirs.step()
    ours = S.PolynomialLR(3, power=0.0)
    assert [ours.lr_at(e, 0.1) for e in range(5)] == pytest.approx(expected, rel=1e-12)


def test_reduce_on_plateau_skips_a_cut_of_at_most_eps():
    """As PyTorch's, the rate is cut only when that changes it by more than eps (1e-8 by
    default)."""
    # lr 1e-8: a cut by 0.1 would change it by 9e-9 < eps: skipped (the count restarts anyway)
    sched = S.ReduceLROnPlateau(factor=0.1, patience=0)
    assert _plateau_run(sched, [1.0, 2.0, 2.0], lr=1e-8) == [1e-8, 1e-8, 1e-8]
    # a change of exactly eps is skipped too: 1 -> 0.5 (by 0.5 > 0.25), then 0.5 -> 0.25 is not
    sched = S.ReduceLROnPlateau(factor=0.5, patience=0, eps=0.25)
    assert _plateau_run(sched, [1.0, 2.0, 2.0], lr=1.0) == [1.0, 0.5, 0.5]


def test_reduce_on_plateau_eps_matches_torch():
    """The two runs above, against torch.optim.lr_scheduler.ReduceLROnPlateau where torch is
    installed."""
    torch = pytest.importorskip("torch")
    for kw, lr in [({"factor": 0.1}, 1e-8), ({"factor": 0.5, "eps": 0.25}, 1.0)]:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=lr)
        theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, **kw)
        expected = []
        for m in [1.0, 2.0, 2.0]:
            theirs.step(m)
            expected.append(opt.param_groups[0]["lr"])
        got = _plateau_run(S.ReduceLROnPlateau(patience=0, **kw), [1.0, 2.0, 2.0], lr=lr)
        assert got == pytest.approx(expected, rel=1e-12)
