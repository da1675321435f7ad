"""
fastmlp compiled core: CPU kernels (AVX2/FMA, OpenMP) and the training engine.
"""

from __future__ import annotations

import collections.abc
import typing

import numpy
import numpy.typing

__all__: list[str] = [
    "ACTIVATION_KINDS",
    "MAX_THREADS",
    "Network",
    "OptimizerState",
    "activation_backward",
    "activation_forward",
    "adagrad_step",
    "adam_step",
    "bce_with_logits",
    "column_sum",
    "dropout_backward",
    "dropout_forward",
    "dropout_mask",
    "gemm",
    "get_num_threads",
    "log_softmax_backward",
    "log_softmax_forward",
    "matmul",
    "mse_loss",
    "multiclass_hinge_loss",
    "prelu_backward",
    "prelu_forward",
    "rmsprop_step",
    "set_num_threads",
    "sgd_step",
    "softmax_backward",
    "softmax_cross_entropy",
    "softmax_forward",
]

class OptimizerState:
    """
    One optimizer's hyperparameters, step count and flat state buffers (engine/optimizer_state.h). Built by the fastmlp.optim classes.
    """
    @staticmethod
    def adagrad(
        lr: float, lr_decay: float, weight_decay: float, eps: float, l1: float
    ) -> OptimizerState: ...
    @staticmethod
    def adam(
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
        decoupled_weight_decay: bool,
        l1: float,
    ) -> OptimizerState: ...
    @staticmethod
    def rmsprop(
        lr: float,
        alpha: float,
        eps: float,
        weight_decay: float,
        momentum: float,
        centered: bool,
        l1: float,
    ) -> OptimizerState: ...
    @staticmethod
    def sgd(
        lr: float, momentum: float, dampening: float, nesterov: bool, weight_decay: float, l1: float
    ) -> OptimizerState: ...
    def export_state(self) -> tuple[int, int, dict]:
        """
        A copy of the step count, parameter count and state buffers (see restore_state).
        """
    def restore_state(self, step: int, size: int, buffers: dict) -> None:
        """
        Replaces the step count and state buffers with saved ones (export_state's); ValueError if they do not fit this optimizer, and then nothing changes.
        """
    @property
    def kind(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @lr.setter
    def lr(self, arg1: float) -> None: ...
    @property
    def step(self) -> int: ...

class Network:
    """
    The CPU training engine (engine/network.h). Use fastmlp.MLP instead.
    """

    FORWARD_CHUNK_ROWS: typing.ClassVar[int] = 1024
    def __init__(
        self,
        sizes: collections.abc.Sequence[int],
        activations: collections.abc.Sequence[int],
        alphas: collections.abc.Sequence[float],
        dropouts: collections.abc.Sequence[float],
        seed: int,
    ) -> None: ...
    def debug_unchecked_labels(
        self,
        call: str,
        x: numpy.ndarray,
        y: numpy.ndarray,
        loss: int,
        optimizer: OptimizerState | None = None,
    ) -> float:
        """
        Debug (tests): train_step or loss_and_gradients (training mode, no label smoothing) or evaluate without the label range check, which the loss kernels then make; returns the loss.
        """
    def evaluate(
        self, x: numpy.ndarray, y: numpy.ndarray, loss: int, batch_size: int
    ) -> tuple[float, int, int]:
        """
        (mean loss, correct, total) in eval mode; total is 0 for mse.
        """
    def forward(
        self, x: numpy.ndarray, training: bool = False
    ) -> numpy.typing.NDArray[numpy.float32]:
        """
        Logits (n, out). training=True applies dropout and advances rng_offset.
        """
    def gradients(self) -> numpy.typing.NDArray[numpy.float32]:
        """
        Float32 copy (P,) of the gradients of the last loss_and_gradients/train_step.
        """
    def loss_and_gradients(
        self,
        x: numpy.ndarray,
        y: numpy.ndarray,
        loss: int,
        label_smoothing: float = 0.0,
        training: bool = False,
    ) -> tuple[float, numpy.typing.NDArray[numpy.float32]]:
        """
        (mean loss, float32 copy (P,) of its gradients), taken in one locked engine call.
        """
    def parameters(self) -> numpy.typing.NDArray[numpy.float32]:
        """
        Float32 copy (P,) of the flat parameter buffer (layout: engine/network.h).
        """
    def set_parameters(self, values: numpy.ndarray) -> None: ...
    def snapshot(self) -> tuple[numpy.typing.NDArray[numpy.float32], int]:
        """
        (parameters(), rng_offset) from one locked copy: a step on another thread cannot fall between them.
        """
    def step_is_batch_parallel(self, n: int) -> bool:
        """
        Debug: whether a training step on n rows now takes the batch-parallel passes.
        """
    def take_train_counts(self) -> tuple[int, int]:
        """
        (correct, total) predictions of the train_steps since the last call; resets them.
        """
    def train_step(
        self,
        x: numpy.ndarray,
        y: numpy.ndarray,
        loss: int,
        label_smoothing: float,
        training: bool,
        optimizer: OptimizerState,
    ) -> float: ...
    def train_step_fast(
        self, x: typing.Any, y: typing.Any, loss: int, training: bool, optimizer: OptimizerState
    ) -> float | None:
        """
        train_step without label smoothing when x and y are already exactly what the engine reads (float32/int64, C-contiguous, right shapes, valid targets); None otherwise (nothing ran), and the caller takes the checked path.
        """
    def workspace_bytes(self) -> int:
        """
        Debug: bytes held by the activation workspace (it only grows with the batch size).
        """
    def workspace_rows(self) -> int:
        """
        Debug: the batch size the workspace is sized for.
        """
    @property
    def num_parameters(self) -> int: ...
    @property
    def rng_offset(self) -> int: ...
    @rng_offset.setter
    def rng_offset(self, arg1: int) -> None: ...
    @property
    def seed(self) -> int: ...
    @property
    def sizes(self) -> list[int]: ...

def _build_info() -> dict: ...
def _philox4x32(
    counter: typing.Annotated[collections.abc.Sequence[int], "FixedSize(4)"],
    key: typing.Annotated[collections.abc.Sequence[int], "FixedSize(2)"],
) -> typing.Annotated[list[int], "FixedSize(4)"]:
    """
    Test hook: Philox4x32-10 of a 4-word counter and 2-word key (words as ints < 2**32).
    """

def activation_backward(
    x: numpy.ndarray, y: numpy.ndarray, dy: numpy.ndarray, kind: int, alpha: float
) -> numpy.typing.NDArray[numpy.float32]:
    """
    dx = dy * f'(x), given y = f(x); same shapes.
    """

def activation_forward(
    x: numpy.ndarray, kind: int, alpha: float
) -> numpy.typing.NDArray[numpy.float32]:
    """
    y = f(x) elementwise; x float32 C-contiguous, any shape.
    """

def adagrad_step(
    param: numpy.ndarray,
    sum_sq: numpy.ndarray,
    grad: numpy.ndarray,
    *,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    l1: float,
    step: int,
) -> None:
    """
    In-place AdaGrad step (torch.optim.Adagrad rule, plus L1); see fastmlp.ops.adagrad_step.
    """

def adam_step(
    param: numpy.ndarray,
    m: numpy.ndarray,
    v: numpy.ndarray,
    grad: numpy.ndarray,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    l1: float,
    step: int,
) -> None:
    """
    In-place Adam / AdamW step (torch.optim.Adam / AdamW rule, plus L1); see fastmlp.ops.adam_step and fastmlp.ops.adamw_step.
    """

def bce_with_logits(logits: numpy.ndarray, targets: numpy.ndarray, need_grad: bool = True) -> tuple:
    """
    Mean binary cross-entropy on logits; returns (loss, dlogits or None).
    """

def column_sum(x: numpy.ndarray) -> numpy.typing.NDArray[numpy.float32]:
    """
    out[j] = sum_i x[i, j]; thread-count independent.
    """

def dropout_backward(
    dx: numpy.ndarray, dy: numpy.ndarray, *, p: float, seed: int, offset: int
) -> None:
    """
    dx = dy * mask / (1 - p), regenerating forward's mask; dx may be dy.
    """

def dropout_forward(
    y: numpy.ndarray, x: numpy.ndarray, *, p: float, seed: int, offset: int
) -> None:
    """
    y = x * mask / (1 - p) with the Philox mask of (seed, offset + i); y may be x.
    """

def dropout_mask(mask: numpy.ndarray, *, p: float, seed: int, offset: int) -> None:
    """
    mask[i] = 1 / (1 - p) if element i is kept, else 0.
    """

def gemm(
    c: numpy.ndarray,
    a: numpy.ndarray,
    b: numpy.ndarray,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
    alpha: float = 1.0,
    beta: float = 0.0,
    bias: numpy.ndarray | None = None,
    activation: str = "identity",
    activation_alpha: float = 0.0,
    preactivation: numpy.ndarray | None = None,
) -> None:
    """
    c = act(alpha * op(a) @ op(b) + beta * c + bias), in place. a, b, c, bias and preactivation are C-contiguous float32; op(x) is x.T when trans_x. With beta == 0, c is not read. preactivation, if given, receives the value before the activation.
    """

def get_num_threads() -> int:
    """
    Number of threads fastmlp kernels use.
    """

def log_softmax_backward(
    y: numpy.ndarray, dy: numpy.ndarray
) -> numpy.typing.NDArray[numpy.float32]:
    """
    dx = dy - exp(y) * sum(dy) per row, given y = log_softmax(x).
    """

def log_softmax_forward(x: numpy.ndarray) -> numpy.typing.NDArray[numpy.float32]:
    """
    Row-wise log-softmax of a 2-D float32 array.
    """

def matmul(
    a: numpy.ndarray,
    b: numpy.ndarray,
    trans_a: bool,
    trans_b: bool,
    alpha: typing.SupportsFloat | typing.SupportsIndex,
    out: numpy.ndarray | None,
    beta: typing.SupportsFloat | typing.SupportsIndex,
) -> numpy.ndarray:
    """
    alpha * op(a) @ op(b) + beta * out, written into out (returned) or, when out is None, into a new float32 array (beta must then be 0). a, b and out are C-contiguous float32, op(x) is x.T when trans_x; out may not overlap a or b, and with beta == 0 it is not read. Arguments are positional for speed (see fastmlp.ops.matmul).
    """

def mse_loss(pred: numpy.ndarray, target: numpy.ndarray, need_grad: bool = True) -> tuple:
    """
    Mean squared error over all elements; returns (loss, dpred or None).
    """

def multiclass_hinge_loss(
    scores: numpy.ndarray, labels: numpy.ndarray, margin: float = 1.0, need_grad: bool = True
) -> tuple:
    """
    Mean multiclass SVM hinge loss; returns (loss, dscores or None).
    """

def prelu_backward(x: numpy.ndarray, slope: numpy.ndarray, dy: numpy.ndarray) -> tuple:
    """
    Returns (dx, dslope) for PReLU.
    """

def prelu_forward(x: numpy.ndarray, slope: numpy.ndarray) -> numpy.typing.NDArray[numpy.float32]:
    """
    PReLU: x (rows, cols), slope (1,) or (cols,).
    """

def rmsprop_step(
    param: numpy.ndarray,
    square_avg: numpy.ndarray,
    momentum_buffer: typing.Any,
    grad_avg: typing.Any,
    grad: numpy.ndarray,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    l1: float,
    step: int,
) -> None:
    """
    In-place RMSprop step (torch.optim.RMSprop rule, plus L1); see fastmlp.ops.rmsprop_step.
    """

def set_num_threads(n: int) -> None:
    """
    Set the number of threads every fastmlp kernel uses (1..MAX_THREADS).
    """

def sgd_step(
    param: numpy.ndarray,
    momentum_buffer: typing.Any,
    grad: numpy.ndarray,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    l1: float,
    step: int,
) -> None:
    """
    In-place SGD step (torch.optim.SGD rule, plus L1); see fastmlp.ops.sgd_step.
    """

def softmax_backward(y: numpy.ndarray, dy: numpy.ndarray) -> numpy.typing.NDArray[numpy.float32]:
    """
    dx = y * (dy - sum(dy * y)) per row, given y = softmax(x).
    """

def softmax_cross_entropy(
    logits: numpy.ndarray,
    labels: numpy.ndarray,
    label_smoothing: float = 0.0,
    need_grad: bool = True,
) -> tuple:
    """
    Mean softmax cross-entropy; returns (loss, dlogits or None).
    """

def softmax_forward(x: numpy.ndarray) -> numpy.typing.NDArray[numpy.float32]:
    """
    Row-wise softmax of a 2-D float32 array.
    """

ACTIVATION_KINDS: dict = {
    "identity": 0,
    "relu": 1,
    "leaky_relu": 2,
    "prelu": 3,
    "elu": 4,
    "sigmoid": 5,
    "tanh": 6,
}
MAX_THREADS: int = 1024
__version__: str = "0.1.0"
