"""Routing of ``fastmlp.ops`` calls to the GPU, and the GPU side of every op.

An op runs on the GPU when any of its array arguments is a :class:`fastmlp.cuda.DeviceArray` or
when it is called with ``device="cuda"``; otherwise it takes its CPU path, unchanged. On the GPU:

* DeviceArray inputs must be float32 (labels int64) with the op's ndim; NumPy inputs are converted
  exactly as on the CPU (:mod:`fastmlp._checks`) and copied to the device.
* When any input is a DeviceArray, results stay on the device (new DeviceArrays; in-place updates
  of DeviceArray parameters happen on the device). With only NumPy inputs and ``device="cuda"``,
  results come back as NumPy arrays (in-place buffers are copied back into the given arrays).
* Without a usable GPU, ``RuntimeError`` says why (built without CUDA, no driver, no device).

The kernels live in ``fastmlp._cuda`` (csrc/cuda/*.cu), one per CPU kernel, with the same formulas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._checks import _shape_str, as_float_input, as_labels, check_probability, check_real
from ..cuda import DeviceArray, _module, empty, to_device

Array = Any  # np.ndarray | DeviceArray


def use_cuda(device: str | None, *arrays: object) -> bool:
    """True when the call must run on the GPU (see the module docstring)."""
    on_device = any(isinstance(a, DeviceArray) for a in arrays)
    if device is None:
        return on_device
    if not isinstance(device, str):
        raise TypeError(f"device: expected 'cpu' or 'cuda', got {type(device).__name__}")
    if device == "cpu":
        if on_device:
            raise ValueError("device: 'cpu' asked for, but an input is a DeviceArray (.numpy()?)")
        return False
    if device == "cuda" or device == "cuda:0":
        _module()  # RuntimeError with the reason when there is no usable GPU
        return True
    raise ValueError(f"device: unknown device {device!r}; known: 'cpu', 'cuda'")


def check_device_f32(x: DeviceArray, name: str, ndim: int | None = None) -> None:
    if x.dtype != np.float32:
        raise TypeError(f"{name}: expected a float32 DeviceArray, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {_shape_str(x.shape)}")


class _Call:
    """One GPU call: brings inputs to the device and results back where the caller wants them."""

    def __init__(self, *arrays: object) -> None:
        self.keep_on_device = any(isinstance(a, DeviceArray) for a in arrays)

    def f32(self, x: object, name: str, ndim: int | None = None) -> DeviceArray:
        if isinstance(x, DeviceArray):
            check_device_f32(x, name, ndim)
            return x
        return to_device(as_float_input(x, name, ndim))

    def out(self, x: DeviceArray) -> Array:
        return x if self.keep_on_device else x.numpy()


def _same_shape(a: DeviceArray, a_name: str, b: DeviceArray, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{b_name}: expected the shape of {a_name} {_shape_str(a.shape)}, "
            f"got {_shape_str(b.shape)}"
        )


# ------------------------------------------------------------------------ GEMM
def matmul(
    a: object, b: object, trans_a: bool, trans_b: bool, alpha: float, out: object, beta: float
) -> Array:
    # trans_a, trans_b, alpha and beta come checked from ops.matmul (check_bool, check_real).
    call = _Call(a, b, out)
    da = call.f32(a, "a", 2)
    db = call.f32(b, "b", 2)
    m, k = (da.shape[1], da.shape[0]) if trans_a else da.shape
    kb, n = (db.shape[1], db.shape[0]) if trans_b else db.shape
    if kb != k:
        what = "columns (b is transposed)" if trans_b else "rows"
        raise ValueError(
            f"b: expected {k} {what} to match the inner dimension of op(a), got {kb} "
            f"(a {_shape_str(da.shape)}, b {_shape_str(db.shape)}, trans_a={trans_a}, "
            f"trans_b={trans_b})"
        )
    if out is None:
        if beta != 0.0:
            raise ValueError(f"beta: {beta} scales out, so out= must be given")
        dc = empty((m, n))
    elif isinstance(out, DeviceArray):
        check_device_f32(out, "out", 2)
        dc = out
    else:
        from .._checks import as_inplace

        out = as_inplace(out, "out", 2)
        dc = to_device(out) if beta != 0.0 else empty(out.shape)
    if dc.shape != (m, n):
        raise ValueError(f"out: expected shape {_shape_str((m, n))}, got {_shape_str(dc.shape)}")
    if dc.size and dc.ptr in (da.ptr, db.ptr):
        raise ValueError("out: must not share memory with a or b")
    _module().gemm(
        dc._buf,
        da._buf,
        db._buf,
        m,
        n,
        k,
        trans_a=trans_a,
        trans_b=trans_b,
        alpha=alpha,
        beta=beta,
    )
    if isinstance(out, np.ndarray):
        dc._buf.copy_to_host(out)
        return out
    return call.out(dc)


def linear(
    x: object,
    weight: object,
    bias: object | None,
    activation: str,
    alpha: float | None,
    return_preactivation: bool,
) -> Array | tuple[Array, Array]:
    from ._activations import resolve_linear_activation

    call = _Call(x, weight, bias)
    dx = call.f32(x, "x", 2)
    dw = call.f32(weight, "weight", 2)
    kind, alpha = resolve_linear_activation(activation, alpha)
    if dw.shape[0] != dx.shape[1]:
        raise ValueError(
            f"weight: expected {dx.shape[1]} rows (x has {dx.shape[1]} features), "
            f"got shape {_shape_str(dw.shape)}"
        )
    m, k, n = dx.shape[0], dx.shape[1], dw.shape[1]
    db = None
    if bias is not None:
        db = call.f32(bias, "bias", 1)
        if db.shape[0] != n:
            raise ValueError(f"bias: expected shape {_shape_str((n,))}, got {_shape_str(db.shape)}")
    y = empty((m, n))
    z = empty((m, n)) if return_preactivation else None
    _module().gemm(
        y._buf,
        dx._buf,
        dw._buf,
        m,
        n,
        k,
        bias=None if db is None else db._buf,
        activation=kind,
        activation_alpha=alpha,
        preactivation=None if z is None else z._buf,
    )
    if z is not None:
        return call.out(y), call.out(z)
    return call.out(y)


# ------------------------------------------------------------------------ activations
def activation(x: object, kind: int, alpha: float) -> Array:
    call = _Call(x)
    dx = call.f32(x, "x")
    y = empty(dx.shape)
    _module().activation_forward(y._buf, dx._buf, dx.size, kind, alpha)
    return call.out(y)


def activation_backward(x: object, y: object, dy: object, kind: int, alpha: float) -> Array:
    call = _Call(x, y, dy)
    dx_, dy_, ddy = call.f32(x, "x"), call.f32(y, "y"), call.f32(dy, "dy")
    _same_shape(dx_, "x", dy_, "y")
    _same_shape(dx_, "x", ddy, "dy")
    out = empty(dx_.shape)
    _module().activation_backward(out._buf, dx_._buf, dy_._buf, ddy._buf, dx_.size, kind, alpha)
    return call.out(out)


def _prelu_args(call: _Call, x: object, slope: object) -> tuple[DeviceArray, DeviceArray]:
    dx = call.f32(x, "x", 2)
    ds = call.f32(slope, "slope", 1)
    cols = dx.shape[1]
    if ds.shape[0] not in (1, cols):
        raise ValueError(
            f"slope: expected shape (1,) or ({cols},) (one slope, or one per column of x), "
            f"got ({ds.shape[0]},)"
        )
    return dx, ds


def prelu(x: object, slope: object) -> Array:
    call = _Call(x, slope)
    dx, ds = _prelu_args(call, x, slope)
    y = empty(dx.shape)
    _module().prelu_forward(y._buf, dx._buf, ds._buf, dx.shape[0], dx.shape[1], ds.shape[0])
    return call.out(y)


def prelu_backward(x: object, slope: object, dy: object) -> tuple[Array, Array]:
    call = _Call(x, slope, dy)
    dx, ds = _prelu_args(call, x, slope)
    ddy = call.f32(dy, "dy", 2)
    _same_shape(dx, "x", ddy, "dy")
    gx = empty(dx.shape)
    gs = empty(ds.shape)
    _module().prelu_backward(
        gx._buf, gs._buf, dx._buf, ds._buf, ddy._buf, dx.shape[0], dx.shape[1], ds.shape[0]
    )
    return call.out(gx), call.out(gs)


def column_sum(x: object) -> Array:
    call = _Call(x)
    dx = call.f32(x, "x", 2)
    out = empty((dx.shape[1],))
    _module().column_sum(out._buf, dx._buf, dx.shape[0], dx.shape[1])
    return call.out(out)


def row_forward(name: str, x: object) -> Array:
    call = _Call(x)
    dx = call.f32(x, "x", 2)
    y = empty(dx.shape)
    getattr(_module(), name)(y._buf, dx._buf, dx.shape[0], dx.shape[1])
    return call.out(y)


def row_backward(name: str, y: object, dy: object) -> Array:
    call = _Call(y, dy)
    d_y = call.f32(y, "y", 2)
    ddy = call.f32(dy, "dy", 2)
    _same_shape(d_y, "y", ddy, "dy")
    dx = empty(d_y.shape)
    getattr(_module(), name)(dx._buf, d_y._buf, ddy._buf, d_y.shape[0], d_y.shape[1])
    return call.out(dx)


# ------------------------------------------------------------------------ losses
def _batch_input(call: _Call, x: object, name: str) -> DeviceArray:
    d = call.f32(x, name, 2)
    if d.shape[0] == 0:
        raise ValueError(f"{name}: empty batch (0 rows)")
    if d.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one column, got shape {d.shape}")
    return d


def _labels(labels: object, name: str, n: int, classes: int) -> DeviceArray:
    if isinstance(labels, DeviceArray):
        if labels.dtype != np.int64:
            raise TypeError(f"{name}: expected an int64 DeviceArray of labels, got {labels.dtype}")
        if labels.shape != (n,):
            raise ValueError(f"{name}: expected {n} labels (one per row), got shape {labels.shape}")
        return labels  # the range is checked on the device by the kernel's caller
    return to_device(as_labels(labels, name, n, classes))


def _loss(call: _Call, fn: str, x: DeviceArray, need_grad: bool, *args: Any) -> tuple[float, Any]:
    grad = empty(x.shape) if need_grad else None
    loss = getattr(_module(), fn)(None if grad is None else grad._buf, x._buf, *args)
    return float(loss), (None if grad is None else call.out(grad))


def softmax_cross_entropy(
    logits: object, labels: object, label_smoothing: float, need_grad: bool
) -> tuple[float, Any]:
    call = _Call(logits, labels)
    z = _batch_input(call, logits, "logits")
    y = _labels(labels, "labels", z.shape[0], z.shape[1])
    eps = check_probability(label_smoothing, "label_smoothing", allow_one=True)
    return _loss(call, "softmax_cross_entropy", z, need_grad, y._buf, z.shape[0], z.shape[1], eps)


def mse_loss(pred: object, target: object, need_grad: bool) -> tuple[float, Any]:
    call = _Call(pred, target)
    p = _batch_input(call, pred, "pred")
    t = call.f32(target, "target", 2)
    _same_shape(p, "pred", t, "target")
    return _loss(call, "mse_loss", p, need_grad, t._buf, p.shape[0], p.shape[1])


def multiclass_hinge_loss(
    scores: object, labels: object, margin: object, need_grad: bool
) -> tuple[float, Any]:
    call = _Call(scores, labels)
    s = _batch_input(call, scores, "scores")
    y = _labels(labels, "labels", s.shape[0], s.shape[1])
    margin = check_real(margin, "margin")  # finite in float32 too: 1e39 is inf in the kernel
    if margin < 0.0:
        raise ValueError(f"margin: expected a finite value >= 0, got {margin}")
    return _loss(
        call, "multiclass_hinge_loss", s, need_grad, y._buf, s.shape[0], s.shape[1], margin
    )


def bce_with_logits(logits: object, targets: object, need_grad: bool) -> tuple[float, Any]:
    call = _Call(logits, targets)
    z = _batch_input(call, logits, "logits")
    t = call.f32(targets, "targets", 2)
    _same_shape(z, "logits", t, "targets")
    return _loss(call, "bce_with_logits", z, need_grad, t._buf, z.shape[0], z.shape[1])


# ------------------------------------------------------------------------ dropout
def dropout(x: object, p: float, seed: int, offset: int, training: bool, name: str) -> Array:
    call = _Call(x)
    dx = call.f32(x, name)
    y = empty(dx.shape)
    if not training:
        y._buf.copy_from(dx._buf)
    else:
        fn = "dropout_forward" if name == "x" else "dropout_backward"
        getattr(_module(), fn)(y._buf, dx._buf, dx.size, p=p, seed=seed, offset=offset)
    return call.out(y)


def dropout_mask(dims: tuple[int, ...], p: float, seed: int, offset: int) -> np.ndarray:
    mask = empty(dims)
    _module().dropout_mask(mask._buf, mask.size, p=p, seed=seed, offset=offset)
    return mask.numpy()


# ------------------------------------------------------------------------ optimizers
class _InPlace:
    """Device views of in-place buffers; NumPy ones are copied to the device and back."""

    def __init__(self, param: object) -> None:
        self.back: list[tuple[DeviceArray, np.ndarray]] = []
        self.names: list[str] = []
        self.call = _Call(param)

    def buf(self, x: object, name: str, like: DeviceArray | None = None) -> DeviceArray:
        if isinstance(x, DeviceArray):
            check_device_f32(x, name)
            d = x
        else:
            from .._checks import as_inplace

            host = as_inplace(x, name)
            # Overlapping host buffers get separate device copies, which _distinct cannot see and
            # finish() would copy back over each other: refuse them here, as the CPU path does.
            for other_name, (_, other) in zip(self.names, self.back):
                if np.may_share_memory(host, other):
                    raise ValueError(
                        f"{name}: shares memory with {other_name}; pass separate arrays"
                    )
            d = to_device(host)
            self.back.append((d, host))
            self.names.append(name)
        if like is not None:
            _same_shape(like, "param", d, name)
        return d

    def finish(self) -> None:
        for d, host in self.back:
            d._buf.copy_to_host(host)


def _distinct(named: dict[str, DeviceArray | None]) -> None:
    items = [(k, v) for k, v in named.items() if v is not None and v.size]
    for i, (name_a, a) in enumerate(items):
        for name_b, b in items[i + 1 :]:
            if a.ptr == b.ptr:
                raise ValueError(f"{name_b}: shares memory with {name_a}; pass separate arrays")


def optimizer_step(
    rule: str,
    param: object,
    grad: object,
    states: Sequence[tuple[str, object]],
    **hyper: Any,
) -> None:
    """One in-place update of ``param`` (and its ``states``) by the multi-tensor CUDA kernel."""
    io = _InPlace(param)
    p = io.buf(param, "param")
    g = io.call.f32(grad, "grad")
    _same_shape(p, "param", g, "grad")
    bufs = {name: (None if s is None else io.buf(s, name, p)) for name, s in states}
    _distinct({"param": p, **bufs})
    # grad may be param itself (same memory): each element is read before it is written.
    lists = [None if b is None else [b._buf] for b in bufs.values()]
    getattr(_module(), rule)([p._buf], [g._buf], [p.size], *lists, **hyper)
    io.finish()
