"""Device memory and CUDA entry points: :class:`DeviceArray`, :func:`to_device`, :func:`gemm`,
and the fused passes of narrow MLPs, :func:`fused_mlp_forward` and :func:`fused_mlp_backward`.

A :class:`DeviceArray` owns one block of GPU memory (freed when the last reference goes away) and
has a shape and a dtype (``float32``, or ``int64`` for class labels); it is always C-contiguous.
``fastmlp.ops`` functions accept DeviceArrays and then leave their results on the device; with
NumPy inputs and ``device="cuda"`` they copy in, run on the GPU and return NumPy arrays.

Other libraries read a DeviceArray without a copy through ``__cuda_array_interface__`` (v3, CuPy,
Numba, PyTorch) and DLPack (``torch.from_dlpack``, ``cupy.from_dlpack``).

Streams: every fastmlp kernel and copy runs on the CUDA legacy default stream, so fastmlp calls are
ordered among themselves and with other libraries' work on that stream. ``.numpy()`` waits for the
queued kernels. ``__cuda_array_interface__`` reports ``stream=1`` (the legacy default stream) and
``__dlpack__(stream=s)`` makes stream ``s`` wait for fastmlp's queued work before it returns.

Without a usable GPU (fastmlp built without CUDA, no driver, no device) every function here raises
``RuntimeError`` saying which; :func:`fastmlp.cuda_available` tells beforehand. Running out of
device memory raises ``MemoryError`` naming the allocation. Kernels run asynchronously: an error
inside a running kernel (an illegal address) surfaces as ``RuntimeError`` at the next call that
waits for it (``.numpy()``, a loss, :func:`synchronize`), and CUDA then refuses all further work in
this process.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Union

import numpy as np

from ._checks import check_bool, check_not_masked, to_float32

__all__ = [
    "FUSED_MAX_LAYERS",
    "FUSED_MAX_WIDTH",
    "DeviceArray",
    "empty",
    "fused_mlp_backward",
    "fused_mlp_forward",
    "gemm",
    "synchronize",
    "to_device",
    "zeros",
]

_DTYPES = (np.dtype(np.float32), np.dtype(np.int64))
_KDLCUDA = 2  # DLPack device type of CUDA memory
# The _cuda module once a GPU was found usable. _cuda_info() calls cudaGetDeviceProperties, which
# takes ~1-10 ms, and _module() runs several times per op (dispatch, every empty(), the kernel
# call): without this cache that query would dominate every small GPU op.
_CUDA_MODULE: ModuleType | None = None


def _module() -> ModuleType:
    """The compiled ``fastmlp._cuda`` module, or ``RuntimeError`` saying why there is none."""
    global _CUDA_MODULE
    if _CUDA_MODULE is not None:
        return _CUDA_MODULE
    from . import _cuda_info

    info = _cuda_info()
    if not info["compiled"]:
        raise RuntimeError(f"CUDA is not available: {info['error']}")
    if info["device_count"] == 0:
        raise RuntimeError(f"CUDA is not available: no usable GPU ({info['error']})")
    from . import _cuda  # type: ignore[attr-defined]

    _CUDA_MODULE = _cuda
    return _cuda


_MAX_ELEMENTS = 2**60  # so that a size in bytes (8-byte elements at most) fits an int64


def _shape_tuple(shape: int | Sequence[int]) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    try:
        out = tuple(operator.index(d) for d in dims)  # type: ignore[union-attr]
    except TypeError:
        raise TypeError(f"shape: expected an int or a sequence of ints, got {shape!r}") from None
    if any(d < 0 for d in out):
        raise ValueError(f"shape: dimensions must be >= 0, got {out}")
    # In Python ints: NumPy's int64 product wraps (2**62 * 4 is 0), which would make a 0-byte
    # buffer for a shape the kernels then index.
    if math.prod(out) > _MAX_ELEMENTS:
        raise ValueError(f"shape: {out} has more than 2**60 elements")
    return out


def _check_dtype(dtype: object) -> np.dtype:
    dt = np.dtype(dtype)  # type: ignore[call-overload]
    if dt not in _DTYPES:
        raise TypeError(f"dtype: DeviceArray holds float32 or int64, got {dt}")
    return dt


class DeviceArray:
    """A C-contiguous float32 or int64 array in GPU memory (owning, reference-counted).

    Create one with :func:`to_device`, :func:`empty` or :func:`zeros`; read it back with
    :meth:`numpy`. Views made by :meth:`reshape` share the memory.
    """

    __slots__ = ("__weakref__", "_buf", "_dtype", "_shape")

    def __init__(self, buffer: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        # Internal: use to_device / empty / zeros. `buffer` is a fastmlp._cuda.DeviceBuffer.
        self._buf = buffer
        self._shape = shape
        self._dtype = dtype

    # ---------------------------------------------------------------- description
    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape, as NumPy's."""
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        """The element type (float32, or int64 for labels)."""
        return self._dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self._shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self._shape)

    @property
    def nbytes(self) -> int:
        """Bytes of device memory the elements take."""
        return self.size * self._dtype.itemsize

    @property
    def ptr(self) -> int:
        """Device address of the first element (0 for an empty array)."""
        return int(self._buf.ptr)

    @property
    def device(self) -> int:
        """Index of the GPU holding the memory."""
        return int(self._buf.device)

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d DeviceArray")
        return self._shape[0]

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self._shape}, dtype={self._dtype}, device='cuda:{self.device}')"

    # ---------------------------------------------------------------- data movement
    def numpy(self) -> np.ndarray:
        """A new NumPy array with the contents (waits for the kernels queued before it)."""
        out = np.empty(self._shape, dtype=self._dtype)
        self._buf.copy_to_host(out)
        return out

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        # As CuPy: no silent device-to-host copy (np.asarray would hide a transfer in a hot loop).
        raise TypeError("DeviceArray: implicit conversion to NumPy is not allowed; use .numpy()")

    def copy_from(self, src: np.ndarray | DeviceArray) -> None:
        """Overwrite the contents with ``src`` (same shape and dtype), from the host or device."""
        if isinstance(src, DeviceArray):
            if src.shape != self._shape or src.dtype != self._dtype:
                raise ValueError(
                    f"src: expected shape {self._shape} and dtype {self._dtype}, "
                    f"got {src.shape} and {src.dtype}"
                )
            self._buf.copy_from(src._buf)
            return
        check_not_masked(src, "src")
        arr = np.asarray(src)
        if arr.shape != self._shape:
            raise ValueError(f"src: expected shape {self._shape}, got {arr.shape}")
        if arr.dtype != self._dtype:
            raise TypeError(f"src: expected dtype {self._dtype}, got {arr.dtype}")
        self._buf.copy_from_host(np.ascontiguousarray(arr))

    def copy(self) -> DeviceArray:
        """A new DeviceArray with the same contents."""
        out = empty(self._shape, self._dtype)
        out._buf.copy_from(self._buf)
        return out

    def reshape(self, *shape: int | Sequence[int]) -> DeviceArray:
        """A view with another shape of the same size (shares the memory); one ``-1`` allowed."""
        given = shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape
        try:  # Python ints (operator.index turns NumPy integers into them): their product is exact
            dims = [operator.index(d) for d in given]  # type: ignore[union-attr]
        except TypeError:
            raise TypeError(f"shape: expected ints, got {given!r}") from None
        if dims.count(-1) > 1:
            raise ValueError("shape: only one dimension can be -1")
        if -1 in dims:
            known = math.prod(d for d in dims if d != -1)
            if known == 0 or self.size % known:
                raise ValueError(f"shape: cannot reshape size {self.size} into {tuple(dims)}")
            dims[dims.index(-1)] = self.size // known
        new = _shape_tuple(dims)
        if math.prod(new) != self.size:
            raise ValueError(f"shape: cannot reshape size {self.size} into {new}")
        return DeviceArray(self._buf, new, self._dtype)

    # ---------------------------------------------------------------- interop
    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        """Numba's CUDA Array Interface, version 3 (C-contiguous: ``strides`` is None)."""
        return {
            "shape": self._shape,
            "typestr": self._dtype.str,
            "data": (self.ptr, False),
            "version": 3,
            "strides": None,
            "stream": 1,  # the legacy default stream, where fastmlp queues its work
        }

    def __dlpack__(
        self,
        *,
        stream: int | None = None,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> Any:
        """Export as a DLPack capsule (no copy). ``stream`` is the consumer's stream: it is made
        to wait for the work fastmlp queued so far. Only ``copy`` None/False and this device."""
        if copy:
            raise BufferError("DeviceArray.__dlpack__: copy=True is not supported")
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError(f"DeviceArray.__dlpack__: cannot export to device {dl_device}")
        # None / 1 (legacy default) / 2 (per-thread default) need nothing: the legacy stream
        # already orders them; -1 means "no synchronisation wanted".
        if stream is not None and stream not in (-1, 1, 2):
            if not isinstance(stream, int) or stream == 0:
                raise ValueError(f"stream: expected a CUDA stream handle as an int, got {stream!r}")
            _module().stream_wait_default(stream)
        return self._buf.dlpack(list(self._shape), str(self._dtype), self)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (_KDLCUDA, self.device)


# -------------------------------------------------------------------- constructors
def empty(shape: int | Sequence[int], dtype: object = np.float32) -> DeviceArray:
    """An uninitialised DeviceArray (float32 or int64). ``MemoryError`` when the GPU is full."""
    dims = _shape_tuple(shape)
    dt = _check_dtype(dtype)
    nbytes = math.prod(dims) * dt.itemsize
    buf = _module().DeviceBuffer(nbytes, f"a {dt} array of shape {dims}")
    return DeviceArray(buf, dims, dt)


def zeros(shape: int | Sequence[int], dtype: object = np.float32) -> DeviceArray:
    """A DeviceArray of zeros (float32 or int64)."""
    out = empty(shape, dtype)
    out._buf.zero()
    return out


def to_device(x: object, dtype: object = None) -> DeviceArray:
    """Copy an array to the GPU.

    Floating arrays become float32 and integer arrays int64 (unless ``dtype`` says which of the
    two); a DeviceArray is returned as is when its dtype already matches. Raises ``RuntimeError``
    when no GPU is usable, ``TypeError`` for other dtypes.
    """
    _module()
    if isinstance(x, DeviceArray):
        if dtype is None or np.dtype(dtype) == x.dtype:  # type: ignore[call-overload]
            return x
        raise TypeError(f"x: a {x.dtype} DeviceArray cannot be converted to {dtype} on the GPU")
    check_not_masked(x, "x")
    arr = np.asarray(x)
    if dtype is None:
        if arr.dtype.kind == "f":
            dtype = np.float32
        elif arr.dtype.kind in "iu":
            dtype = np.int64
        else:
            raise TypeError(f"x: expected a floating or integer array, got dtype {arr.dtype}")
    dt = _check_dtype(dtype)
    if dt == np.float32 and arr.dtype.kind == "f":
        arr = to_float32(arr, "x")  # 1e39 in float64: a ValueError, not inf on the device
    host = np.ascontiguousarray(arr, dtype=dt)
    out = empty(host.shape, dt)
    out._buf.copy_from_host(host)
    return out


def synchronize() -> None:
    """Wait for all queued GPU work; raises the error of a kernel that failed."""
    _module().synchronize()


# -------------------------------------------------------------------- low-level GEMM
def gemm(
    c: DeviceArray,
    a: DeviceArray,
    b: DeviceArray,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
    alpha: float = 1.0,
    beta: float = 0.0,
    bias: DeviceArray | None = None,
    activation: str = "identity",
    activation_alpha: float | None = None,
    preactivation: DeviceArray | None = None,
    tf32: bool = False,
) -> DeviceArray:
    """``c = act(alpha * op(a) @ op(b) + beta * c + bias)`` in place on the GPU; returns ``c``.

    The device twin of ``fastmlp._core.gemm``: ``op(x)`` is ``x.T`` when ``trans_x``; all
    arguments are float32 DeviceArrays (``a`` (m, k) or (k, m), ``b`` (k, n) or (n, k), ``c`` and
    ``preactivation`` (m, n), ``bias`` (n,)). With ``beta == 0`` the old ``c`` is not read.
    ``tf32=True`` runs on the tensor cores with inputs rounded to TF32 (10-bit mantissa): about
    1e-3 relative error instead of FP32's 1e-6, several times faster on Ampere and Hopper.
    """
    from .ops._activations import resolve_activation
    from .ops._dispatch import check_device_f32

    # Checked, not coerced (bool("False") is True), before the GPU is looked for.
    trans_a = check_bool(trans_a, "trans_a")
    trans_b = check_bool(trans_b, "trans_b")
    tf32 = check_bool(tf32, "tf32")
    mod = _module()
    check_device_f32(a, "a", 2)
    check_device_f32(b, "b", 2)
    check_device_f32(c, "c", 2)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if kb != k:
        raise ValueError(f"b: expected {k} rows in op(b) to match the columns of op(a), got {kb}")
    if c.shape != (m, n):
        raise ValueError(f"c: expected shape {(m, n)}, got {c.shape}")
    if bias is not None:
        check_device_f32(bias, "bias", 1)
        if bias.shape != (n,):
            raise ValueError(f"bias: expected shape {(n,)}, got {bias.shape}")
    if preactivation is not None:
        check_device_f32(preactivation, "preactivation", 2)
        if preactivation.shape != (m, n):
            raise ValueError(f"preactivation: expected shape {(m, n)}, got {preactivation.shape}")
    if activation == "prelu" and activation_alpha is None:
        raise ValueError("activation_alpha: prelu needs its slope")
    kind, act_alpha = resolve_activation(activation, activation_alpha)
    for name, other in (("a", a), ("b", b), ("bias", bias)):
        if other is not None and other.ptr == c.ptr and c.size:
            raise ValueError(f"c: must not share memory with {name}")
    mod.gemm(
        c._buf,
        a._buf,
        b._buf,
        m,
        n,
        k,
        trans_a=trans_a,
        trans_b=trans_b,
        alpha=float(alpha),
        beta=float(beta),
        bias=None if bias is None else bias._buf,
        activation=kind,
        activation_alpha=act_alpha,
        preactivation=None if preactivation is None else preactivation._buf,
        tf32=tf32,
    )
    return c


# -------------------------------------------------------------------- fused narrow MLPs
# The limits of csrc/cuda/fused_mlp.cu (kFusedMlpMaxLayers, kFusedMlpMaxWidth in cuda/kernels.h).
FUSED_MAX_LAYERS = 8
FUSED_MAX_WIDTH = 128

# One hidden layer's activation parameter: a number, a (1,) DeviceArray (a PReLU slope read on
# the device) or None (the default). A string annotation: the union is not evaluated on Python 3.9.
Alpha = Union[float, "DeviceArray", None]


def _fused_net(
    weights: Sequence[DeviceArray],
    activations: str | Sequence[str],
    alphas: Alpha | Sequence[Alpha],
) -> tuple[list[int], list[Any], list[int], list[float], list[Any]]:
    """Checks the layers of a fused call; returns (sizes, weight buffers, activation kinds,
    alphas, PReLU slope buffers or None) as the ``_cuda.fused_mlp_*`` bindings take them."""
    from .ops._activations import resolve_activation
    from .ops._dispatch import check_device_f32

    if isinstance(weights, DeviceArray) or not isinstance(weights, Sequence):
        raise TypeError("weights: expected a sequence of (D_{l-1}, D_l) float32 DeviceArrays")
    layers = len(weights)
    if not 1 <= layers <= FUSED_MAX_LAYERS:
        raise ValueError(
            f"weights: the fused kernels take 1 to {FUSED_MAX_LAYERS} layers, got {layers}"
        )
    sizes: list[int] = []
    for l, w in enumerate(weights):
        if not isinstance(w, DeviceArray):
            raise TypeError(f"weights[{l}]: expected a float32 DeviceArray, got {type(w).__name__}")
        check_device_f32(w, f"weights[{l}]", 2)
        if l == 0:
            sizes.append(w.shape[0])
        elif w.shape[0] != sizes[-1]:
            raise ValueError(
                f"weights[{l}]: expected {sizes[-1]} rows (the outputs of weights[{l - 1}]), "
                f"got shape {w.shape}"
            )
        sizes.append(w.shape[1])
    if not all(1 <= d <= FUSED_MAX_WIDTH for d in sizes):
        raise ValueError(
            f"weights: every width must be in [1, {FUSED_MAX_WIDTH}] for the fused kernels, got "
            f"widths {sizes} (use the unfused layers: cuda.gemm and the activation ops)"
        )

    hidden = layers - 1
    names = [activations] * hidden if isinstance(activations, str) else list(activations)
    if len(names) != hidden:
        raise ValueError(
            f"activations: expected one name per hidden layer ({hidden}), got {len(names)}"
        )
    if alphas is None or isinstance(alphas, (numbers.Real, DeviceArray)):
        alpha_list: list[Alpha] = [alphas] * hidden  # type: ignore[list-item]
    else:
        alpha_list = list(alphas)  # type: ignore[arg-type]
        if len(alpha_list) != hidden:
            raise ValueError(
                f"alphas: expected one entry per hidden layer ({hidden}), got {len(alpha_list)}"
            )
    kinds: list[int] = []
    values: list[float] = []
    slopes: list[Any] = []
    for h, (name, alpha) in enumerate(zip(names, alpha_list)):
        if isinstance(alpha, DeviceArray):
            if name != "prelu":
                raise ValueError(
                    f"alphas[{h}]: a DeviceArray is a PReLU slope, but hidden layer {h + 1} is "
                    f"{name!r}"
                )
            check_device_f32(alpha, f"alphas[{h}]")
            if alpha.size != 1:
                raise ValueError(
                    f"alphas[{h}]: expected one shared PReLU slope, got shape {alpha.shape}"
                )
            kind, value = resolve_activation("prelu", 0.0)  # the kernel reads the slope itself
            slopes.append(alpha._buf)
        else:
            if name == "prelu" and alpha is None:
                raise ValueError(
                    f"alphas[{h}]: prelu needs its slope (a float or a (1,) DeviceArray)"
                )
            kind, value = resolve_activation(name, alpha)
            slopes.append(None)
        kinds.append(kind)
        values.append(value)
    return sizes, [w._buf for w in weights], kinds, values, slopes


def fused_mlp_forward(
    x: DeviceArray,
    weights: Sequence[DeviceArray],
    biases: Sequence[DeviceArray | None],
    activations: str | Sequence[str] = "relu",
    alphas: Alpha | Sequence[Alpha] = None,
    training: bool = False,
) -> DeviceArray | tuple[DeviceArray, list[DeviceArray], list[DeviceArray]]:
    """The forward pass of a narrow MLP in one kernel launch; returns the logits ``(n, D_L)``.

    Layers ``l = 1..L`` (at most :data:`FUSED_MAX_LAYERS`), every width ``D_0..D_L`` at most
    :data:`FUSED_MAX_WIDTH`; all arguments are float32 DeviceArrays::

        z_l = h_{l-1} @ W_l + b_l     h_0 = x (n, D_0), W_l = weights[l-1] (D_{l-1}, D_l)
        h_l = a_l = f_l(z_l)          l < L; the last layer is linear: logits = z_L

    ``biases[l-1]`` is ``b_l`` (``(D_l,)``) or None. ``activations`` names each hidden layer's
    ``f_l`` (one name for all, or a sequence of ``L - 1``; the names of
    :func:`fastmlp.ops.activation`); ``alphas`` their parameter, one value for all or one per
    hidden layer: leaky_relu's slope, elu's alpha, PReLU's one shared slope as a float or as a
    ``(1,)`` DeviceArray read on the device (a learned slope); None takes the defaults.

    The result has the bits of the unfused chain (:func:`gemm` with the bias and activation
    epilogue, layer by layer), faster because the hidden activations stay in the GPU's shared
    memory. With ``training=True`` it returns ``(logits, zs, activations_out)``: the ``L - 1``
    pre-activations ``z_l`` and outputs ``a_l`` ``(n, D_l)``, which :func:`fused_mlp_backward`
    and the weight gradients need. Raises ``ValueError`` for more layers or wider layers than
    the limits, or when the net does not fit in this GPU's shared memory.
    """
    from .ops._dispatch import check_device_f32

    training = check_bool(training, "training")  # bool("False") would return three results
    mod = _module()
    sizes, wbufs, kinds, values, slopes = _fused_net(weights, activations, alphas)
    if not isinstance(x, DeviceArray):
        raise TypeError(f"x: expected a float32 DeviceArray, got {type(x).__name__}")
    check_device_f32(x, "x", 2)
    if x.shape[1] != sizes[0]:
        raise ValueError(
            f"x: expected {sizes[0]} columns (the rows of weights[0]), got shape {x.shape}"
        )
    if isinstance(biases, DeviceArray) or not isinstance(biases, Sequence):
        raise TypeError("biases: expected a sequence of (D_l,) float32 DeviceArrays or None")
    if len(biases) != len(weights):
        raise ValueError(f"biases: expected {len(weights)} (one per layer), got {len(biases)}")
    bbufs = []
    for l, b in enumerate(biases):
        if b is None:
            bbufs.append(None)
            continue
        if not isinstance(b, DeviceArray):
            raise TypeError(f"biases[{l}]: expected a float32 DeviceArray, got {type(b).__name__}")
        check_device_f32(b, f"biases[{l}]", 1)
        if b.shape != (sizes[l + 1],):
            raise ValueError(f"biases[{l}]: expected shape {(sizes[l + 1],)}, got {b.shape}")
        bbufs.append(b._buf)
    n = x.shape[0]
    logits = empty((n, sizes[-1]))
    zs = [empty((n, d)) for d in sizes[1:-1]] if training else []
    outs = [empty((n, d)) for d in sizes[1:-1]] if training else []
    mod.fused_mlp_forward(
        logits._buf,
        x._buf,
        wbufs,
        bbufs,
        sizes,
        kinds,
        values,
        slopes,
        n,
        training=training,
        z=[z._buf for z in zs] if training else None,
        a=[a._buf for a in outs] if training else None,
    )
    if training:
        return logits, zs, outs
    return logits


def fused_mlp_backward(
    dlogits: DeviceArray,
    weights: Sequence[DeviceArray],
    zs: Sequence[DeviceArray],
    activations: str | Sequence[str],
    alphas: Alpha | Sequence[Alpha] = None,
) -> list[DeviceArray]:
    """The backward pass through the hidden layers of a narrow MLP in one kernel launch.

    Given ``dlogits = dloss/dlogits`` ``(n, D_L)`` and the ``L - 1`` pre-activations ``zs`` of
    :func:`fused_mlp_forward` (``training=True``), with the same ``weights``, ``activations``
    and ``alphas``, returns ``[dZ_1, ..., dZ_{L-1}]`` (each ``(n, D_l)``)::

        dZ_L = dlogits,   dZ_{l-1} = (dZ_l @ W_l^T) * f'_{l-1}(z_{l-1})   for l = L..2

    (the bits of :func:`gemm` NT followed by :func:`fastmlp.ops.activation_backward`). The
    parameter gradients are the caller's, because they sum over all rows:
    ``dW_l = h_{l-1}^T @ dZ_l`` (:func:`gemm` with ``trans_a=True``; ``h_0 = x``, ``h_l = a_l``),
    ``db_l = fastmlp.ops.column_sum(dZ_l)``, and a learned PReLU slope's
    ``sum(dH_{l-1} * min(z_{l-1}, 0))`` from ``dH_{l-1} = dZ_l @ W_l^T`` (:func:`gemm`,
    ``trans_b=True``) and :func:`fastmlp.ops.prelu_backward`. An empty list for one layer.
    """
    from .ops._dispatch import check_device_f32

    mod = _module()
    sizes, wbufs, kinds, values, slopes = _fused_net(weights, activations, alphas)
    if not isinstance(dlogits, DeviceArray):
        raise TypeError(f"dlogits: expected a float32 DeviceArray, got {type(dlogits).__name__}")
    check_device_f32(dlogits, "dlogits", 2)
    n = dlogits.shape[0]
    if dlogits.shape[1] != sizes[-1]:
        raise ValueError(
            f"dlogits: expected {sizes[-1]} columns (the outputs of weights[-1]), "
            f"got shape {dlogits.shape}"
        )
    if isinstance(zs, DeviceArray) or not isinstance(zs, Sequence):
        raise TypeError("zs: expected a sequence of float32 DeviceArrays (one per hidden layer)")
    if len(zs) != len(sizes) - 2:
        raise ValueError(f"zs: expected {len(sizes) - 2} (one per hidden layer), got {len(zs)}")
    for h, z in enumerate(zs):
        if not isinstance(z, DeviceArray):
            raise TypeError(f"zs[{h}]: expected a float32 DeviceArray, got {type(z).__name__}")
        check_device_f32(z, f"zs[{h}]", 2)
        if z.shape != (n, sizes[h + 1]):
            raise ValueError(f"zs[{h}]: expected shape {(n, sizes[h + 1])}, got {z.shape}")
    dzs = [empty((n, d)) for d in sizes[1:-1]]
    mod.fused_mlp_backward(
        [d._buf for d in dzs],
        dlogits._buf,
        [z._buf for z in zs],
        wbufs,
        sizes,
        kinds,
        values,
        slopes,
        n,
    )
    return dzs
