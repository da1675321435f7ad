"""Plain NumPy reference for every fastmlp kernel, written to be read beside the course formulas.

Clarity over speed: float64 where precision matters, loops where they make the maths plainer.
The tests hold ``fastmlp.ops`` (and the engine) to these functions.
"""

from __future__ import annotations

from .activations import *  # noqa: F403
from .activations import __all__ as _activations_all
from .dropout import *  # noqa: F403
from .dropout import __all__ as _dropout_all
from .gemm import *  # noqa: F403
from .gemm import __all__ as _gemm_all
from .losses import *  # noqa: F403
from .losses import __all__ as _losses_all
from .optim import *  # noqa: F403
from .optim import __all__ as _optim_all

__all__ = [*_gemm_all, *_activations_all, *_losses_all, *_dropout_all, *_optim_all]
