"""Argument conversion and validation shared by the Python layer.

Conversion policy (documented in :mod:`fastmlp.ops`):

* Read-only float inputs may be any real floating dtype (float16/32/64) and any memory layout;
  they are converted to C-contiguous float32 (a copy only when needed). A finite value beyond
  float32's range (1e39 in float64) is refused, not turned into inf (:func:`to_float32`).
* Buffers updated in place (parameters, optimizer state, ``out=`` arrays) must already be
  float32, C-contiguous and writable: converting them would silently drop the update.
* Class labels may be any integer dtype and are converted to int64; floats, bools and
  out-of-range values are refused.
* Read-only array inputs may be NumPy arrays, lists, tuples or any object implementing the NumPy
  array protocol (``__array__``, ``__array_interface__``, ``__array_struct__``: a pandas
  DataFrame, a CPU ``torch.Tensor``), converted as ``np.asarray`` converts them and then checked
  as an array would be (:func:`as_host_array`). A :class:`fastmlp.cuda.DeviceArray` is refused
  where a host array is read: it would need a device-to-host copy, which it never makes
  implicitly.
* Everything else (ints or bools where floats are expected, complex, object arrays, masked
  arrays, whose mask a conversion would drop) is refused.

Errors are ``TypeError`` for a wrong dtype or type and ``ValueError`` for a wrong value or shape,
and the message starts with the argument's name.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence

import numpy as np

_FLOAT_KINDS = "f"
# The smallest magnitude that rounds to inf in float32: halfway between FLT_MAX and 2^128 (ties to
# even go up). A plain comparison: np.float32(v) under np.errstate costs ~4 us per argument.
_FLOAT32_ROUNDS_TO_INF = 2.0**128 - 2.0**103
# The largest magnitude that float32 rounds to 0: 2^-150, halfway between 0 and the smallest
# subnormal 2^-149 (ties to even go down); anything larger rounds to at least 2^-149.
_FLOAT32_ROUNDS_TO_ZERO = 2.0**-150
# The smallest value below 1 that float32 rounds to 1: halfway between 1 - 2^-24 (the float32
# below 1) and 1, where ties go to the even 1. Compared directly (np.float32(v) costs ~0.5 us).
_FLOAT32_ROUNDS_TO_ONE = 1.0 - 2.0**-25


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def names_folder(path: str) -> bool:
    """``path`` ends with a separator or is an existing folder: ``np.savez`` would write
    ``"out/"`` as the hidden file ``"out/.npz"``."""
    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    return path.endswith(separators) or os.path.isdir(path)


def check_not_masked(x: object, name: str) -> None:
    """Refuse a ``np.ma.MaskedArray``: converting it (np.asarray, or the kernels reading its
    buffer) silently drops the mask, computing on the masked-out values as if they were data."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name}: masked arrays are not supported; pass .filled(...) or the unmasked data"
        )


def _implements_array_protocol(x: object) -> bool:
    return (
        hasattr(x, "__array__")
        or hasattr(x, "__array_interface__")
        or hasattr(x, "__array_struct__")
    )


def as_host_array(x: object, name: str, *, scalars: bool = False) -> np.ndarray:
    """``x`` as a NumPy array in host memory, its dtype unchanged (the callers check it): an
    ndarray as is; a list, a tuple, a scalar (with ``scalars``) or an object implementing the
    NumPy array protocol (a pandas DataFrame, a CPU ``torch.Tensor``) converted as ``np.asarray``
    converts labels. ``TypeError`` naming ``name`` for anything else, a masked array or a
    :class:`fastmlp.cuda.DeviceArray`; a failed conversion (a CUDA tensor, a ragged list) keeps
    its exception type (``TypeError``, ``ValueError`` or ``RuntimeError``), its message prefixed
    with ``name``."""
    check_not_masked(x, name)
    if isinstance(x, np.ndarray):
        return x
    if not (isinstance(x, (list, tuple)) or (scalars and np.isscalar(x))):
        # Imported here: fastmlp.cuda imports this module. A DeviceArray implements __array__
        # only to refuse (no hidden device-to-host copy), with an error naming no argument.
        from .cuda import DeviceArray

        if isinstance(x, DeviceArray) or not _implements_array_protocol(x):
            raise TypeError(f"{name}: expected a NumPy array, got {type(x).__name__}")
    try:
        # asanyarray: an __array__ returning a masked array would lose its mask to asarray
        # before check_not_masked could see it.
        a = np.asanyarray(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        # A CUDA tensor's "use .cpu()", a tensor needing .detach(), a ragged list: the messages
        # name no argument. Re-raised as the base class it is, so callers see the usual types.
        kind = next(k for k in (TypeError, ValueError, RuntimeError) if isinstance(exc, k))
        raise kind(f"{name}: cannot convert {type(x).__name__} to a NumPy array: {exc}") from exc
    check_not_masked(a, name)
    return a


def as_float_input(x: object, name: str, ndim: int | None = None) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 array, checking its dtype kind and ``ndim``."""
    if (
        type(x) is np.ndarray
        and x.dtype == np.float32
        and x.flags.c_contiguous
        and (ndim is None or x.ndim == ndim)
    ):
        return x  # already what is asked for (the common case, checked first for speed)
    x = as_host_array(x, name, scalars=True)
    if x.dtype.kind not in _FLOAT_KINDS:
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {_shape_str(x.shape)}")
    return to_float32(x, name)


def to_float32(x: np.ndarray, name: str) -> np.ndarray:
    """A floating array ``x`` as C-contiguous float32 (a copy only when needed), refusing finite
    values beyond float32's range (float64's 1e39), which the cast would turn into inf: a
    ``ValueError`` naming ``name`` instead of NumPy's overflow warning and then a report of
    infinite values that the caller never passed. NaN and inf pass unchanged (exact in float32).

    No extra pass: float16/float32 cannot overflow, and for wider dtypes the cast itself flags
    the overflow (``np.errstate``); only then are the values searched, for the message."""
    if x.dtype.itemsize <= 4:
        return np.asarray(x, dtype=np.float32, order="C")
    try:
        with np.errstate(all="ignore", over="raise"):  # only overflow: the case to name
            return np.asarray(x, dtype=np.float32, order="C")
    except FloatingPointError:
        pass
    # Searched in x's own dtype (no cast, so no overflow): the first finite value float32 lacks.
    big = np.flatnonzero(np.isfinite(x) & (np.abs(x) >= _FLOAT32_ROUNDS_TO_INF))
    if big.size:
        item = x.reshape(-1)[big[0]]
        # f"{:g}" goes through a Python float: a long double beyond float64 would print as inf.
        wide = x.itemsize > 8
        value = np.format_float_scientific(item, precision=5, trim="-") if wide else f"{item:g}"
        if x.ndim:
            value += f" at [{', '.join(str(int(i)) for i in np.unravel_index(big[0], x.shape))}]"
    else:  # changed by another thread since the cast
        value = "a value"
    raise ValueError(
        f"{name}: {value} is too large for float32 (finite in {x.dtype}, but beyond float32's "
        "range of about +-3.4e38; float32 is the precision the kernels use)"
    )


def as_inplace(x: object, name: str, ndim: int | None = None) -> np.ndarray:
    """Check that ``x`` can be updated in place: float32, C-contiguous, writable."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(x).__name__}")
    check_not_masked(x, name)
    if x.dtype != np.float32:
        raise TypeError(f"{name}: expected a float32 array (it is updated in place), got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {_shape_str(x.shape)}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array (it is updated in place)")
    if not x.flags.writeable:
        raise ValueError(f"{name}: array is read-only")
    return x


def as_labels(
    y: object, name: str, n: int, num_classes: int, *, kernel_checks_range: bool = False
) -> np.ndarray:
    """Return labels as contiguous int64 of length ``n``, each in ``[0, num_classes)``.

    ``kernel_checks_range=True`` (for a ``_core`` call that checks every label itself, with the
    same message plus the label's index) skips the range check here for int64 labels, which
    need no conversion: it was a third of a 128 x 10 cross-entropy call.
    """
    check_not_masked(y, name)
    if (
        kernel_checks_range
        and type(y) is np.ndarray
        and y.dtype == np.int64
        and y.ndim == 1
        and y.shape[0] == n
        and y.flags.c_contiguous
    ):
        return y
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got shape {_shape_str(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels (one per row), got {y.shape[0]}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        # Looked up again for the message: another thread may have put the label back since.
        bad = y[(y < 0) | (y >= num_classes)]
        label = f"label {int(bad[0])}" if bad.size else "a label"
        raise ValueError(f"{name}: {label} is out of range [0, {num_classes})")
    return np.ascontiguousarray(y, dtype=np.int64)


def check_same_shape(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    """Raise ValueError unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{b_name}: expected the shape of {a_name} {_shape_str(a.shape)}, "
            f"got {_shape_str(b.shape)}"
        )


def check_nonempty(x: np.ndarray, name: str) -> None:
    """Raise ValueError for an empty batch (no rows)."""
    if x.shape[0] == 0:
        raise ValueError(f"{name}: empty batch (0 rows)")


def check_int(value: object, name: str, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int, checked: a Python or NumPy integer (not a bool) ``>= minimum`` and,
    when given, ``<= maximum`` (e.g. 2**63 - 1 for what the engine takes as int64)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}: expected <= {maximum}, got {value}")
    return int(value)


def check_bool(value: object, name: str) -> bool:
    """``value`` as a bool, checked: a Python or NumPy bool only (``bool("False")`` is True, and
    a 0/1 or None given for a flag is more likely a mistake than a choice)."""
    if type(value) is bool:
        return value
    if not isinstance(value, np.bool_):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__}")
    return bool(value)


def in_unit_interval(value: float, *, allow_one: bool = False) -> bool:
    """``0 <= value < 1`` (``<= 1`` with ``allow_one``), the bound checked in float32 too: the
    kernels take float32, where 0.99999999 is 1 (see :func:`float32_rounding_note`)."""
    if allow_one:
        return 0.0 <= value <= 1.0
    return 0.0 <= value < _FLOAT32_ROUNDS_TO_ONE


def check_finite(x: np.ndarray, name: str) -> None:
    """Raise ValueError if ``x`` holds NaN or infinity.

    Large arrays are checked a block of rows at a time, so that checking a whole data set
    needs no boolean array of its size."""
    rows = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
    step = max(1, (1 << 16) // max(1, rows.shape[1]))
    for r0 in range(0, rows.shape[0], step):
        if not np.isfinite(rows[r0 : r0 + step]).all():
            raise ValueError(f"{name}: contains NaN or infinite values")


def float32_rounding_note(value: float) -> str:
    """`` (1.0 in float32, ...)`` for a value below 1 that the kernels, which take float32, would
    see as 1; else ``""``. Appended to the message of a check that requires ``value < 1``."""
    if _FLOAT32_ROUNDS_TO_ONE <= value < 1.0:
        return " (1.0 in float32, the precision the kernels use)"
    return ""


def float32_zero_note(value: float) -> str:
    """`` (0 in float32, ...)`` for a non-zero value that the kernels, which take float32, would
    see as 0; else ``""``. Appended to the message of a check that requires ``value > 0``."""
    if value != 0.0 and abs(value) <= _FLOAT32_ROUNDS_TO_ZERO:
        return " (0 in float32, the precision the kernels use)"
    return ""


def _beyond_float64(value: object) -> str:
    """How a real number too large for a float (an int such as 10**400) is shown in a message:
    from its logarithm, as str() of a 400-digit int is long (and of a 4301-digit one refused)."""
    try:
        lg = math.log10(abs(value))  # type: ignore[arg-type]
    except (OverflowError, TypeError, ValueError):
        return "a value beyond the float range"
    e = math.floor(lg)
    return f"{'-' if value < 0 else ''}{10 ** (lg - e):.6g}e+{e}"  # type: ignore[operator]


def check_real(value: object, name: str, *, finite: bool = True) -> float:
    """``value`` as a float, checked: a Python or NumPy real number (not a bool, a string or
    None) that is finite, in float32 too (the kernels take float32, where 1e39 is inf);
    ``finite=False`` checks the type only, for callers whose range check also rejects NaN.
    A number too large even for float64 (``10**400``) is refused either way."""
    # float and int first: the ABC test alone costs ~1 us, and ops check several values per call.
    if type(value) is not float and type(value) is not int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # what float(10**400) raises, naming nothing
        raise ValueError(
            f"{name}: expected a finite value, got {_beyond_float64(value)} (inf in float32, "
            "the precision the kernels use)"
        ) from None
    if not finite:
        return v
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite value, got {v}")
    if abs(v) >= _FLOAT32_ROUNDS_TO_INF:
        raise ValueError(
            f"{name}: expected a finite value, got {v} (inf in float32, the precision the "
            "kernels use)"
        )
    return v


def check_positive(value: object, name: str) -> float:
    """``value`` as a float ``> 0`` (checked as :func:`check_real`), also in float32: 1e-50 is 0
    there, which the kernels would refuse (or divide by) as 0."""
    v = check_real(value, name)
    if v <= _FLOAT32_ROUNDS_TO_ZERO:
        raise ValueError(f"{name}: expected a value > 0, got {v}{float32_zero_note(v)}")
    return v


def check_unit_interval(
    value: object, name: str, *, allow_one: bool = False, what: str = "a value"
) -> float:
    """``value`` as a float in ``[0, 1)`` (``[0, 1]`` with ``allow_one``), the bound checked in
    float32 too; the message calls it ``what`` (e.g. "a probability")."""
    v = check_real(value, name, finite=False)  # the range test below rejects NaN and inf
    if not in_unit_interval(v, allow_one=allow_one):
        upper = "1]" if allow_one else "1)"
        raise ValueError(
            f"{name}: expected {what} in [0, {upper}, got {v}{float32_rounding_note(v)}"
        )
    return v


def check_probability(p: object, name: str, *, allow_one: bool = False) -> float:
    """Check ``0 <= p < 1`` (or ``<= 1``), also in float32, and return it as a float."""
    return check_unit_interval(p, name, allow_one=allow_one, what="a probability")
