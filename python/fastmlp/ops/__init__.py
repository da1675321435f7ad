"""The fastmlp kernels as functions on NumPy arrays.

Every function here is a thin wrapper over a C++ kernel in ``fastmlp._core`` (which releases the
GIL) and has a plain NumPy twin of the same name in :mod:`fastmlp.reference`.

Input conversion: read-only float inputs may be any floating dtype and layout and are converted to
C-contiguous float32; arrays updated in place (parameters, optimizer state) must already be
float32, C-contiguous and writable; labels may be any integer dtype. Read-only inputs may also be
lists or array-likes implementing NumPy's array protocol (a pandas DataFrame, a CPU
``torch.Tensor``), converted as ``np.asarray`` converts them. Anything else raises ``TypeError``
or ``ValueError`` naming the argument. See :mod:`fastmlp._checks`.
"""

from __future__ import annotations

from ._activations import *  # noqa: F403
from ._activations import __all__ as _activations_all
from ._dropout import *  # noqa: F403
from ._dropout import __all__ as _dropout_all
from ._gemm import *  # noqa: F403
from ._gemm import __all__ as _gemm_all
from ._losses import *  # noqa: F403
from ._losses import __all__ as _losses_all
from ._optim import *  # noqa: F403
from ._optim import __all__ as _optim_all

__all__ = [*_gemm_all, *_activations_all, *_losses_all, *_dropout_all, *_optim_all]
