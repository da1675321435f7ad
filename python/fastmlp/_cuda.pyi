"""
fastmlp CUDA kernels and device memory (used through fastmlp.cuda and fastmlp.ops)
"""

from __future__ import annotations

import collections.abc
import typing

import numpy
import numpy.typing
import typing_extensions

__all__: list[str] = [
    "DeviceBuffer",
    "Network",
    "OptimizerState",
    "activation_backward",
    "activation_forward",
    "adagrad_step",
    "adam_step",
    "bce_with_logits",
    "column_sum",
    "current_device",
    "device_info",
    "dropout_backward",
    "dropout_forward",
    "dropout_mask",
    "fused_mlp_backward",
    "fused_mlp_forward",
    "gather_rows",
    "gemm",
    "log_softmax_backward",
    "log_softmax_forward",
    "mem_get_info",
    "mse_loss",
    "multiclass_hinge_loss",
    "prelu_backward",
    "prelu_forward",
    "rmsprop_step",
    "sgd_step",
    "softmax_backward",
    "softmax_cross_entropy",
    "softmax_forward",
    "stream_wait_default",
    "synchronize",
]

class DeviceBuffer:
    """
    Owning device allocation (cudaMalloc / cudaFree), the storage of a fastmlp.cuda.DeviceArray.
    """
    def __init__(self, nbytes: int, what: str) -> None: ...
    def copy_from(self, src: DeviceBuffer) -> None: ...
    def copy_from_host(self, src: numpy.ndarray) -> None: ...
    def copy_to_host(self, dst: numpy.ndarray) -> None: ...
    def dlpack(
        self, shape: collections.abc.Sequence[int], dtype: str, owner: typing.Any
    ) -> typing_extensions.CapsuleType:
        """
        A 'dltensor' capsule viewing this buffer (C-contiguous) that keeps `owner` alive.
        """
    def zero(self) -> None: ...
    @property
    def device(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def ptr(self) -> int: ...

class OptimizerState:
    """
    One optimizer's hyperparameters, step count and state buffers in device memory (engine/network_cuda.h).
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
    The CUDA training engine (engine/network_cuda.h). Use fastmlp.MLP(..., device='cuda') instead.
    """
    def __init__(
        self,
        sizes: collections.abc.Sequence[int],
        activations: collections.abc.Sequence[int],
        alphas: collections.abc.Sequence[float],
        dropouts: collections.abc.Sequence[float],
        seed: int,
    ) -> None: ...
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
    def train_step_device(
        self,
        x: DeviceBuffer,
        y: DeviceBuffer,
        n: int,
        loss: int,
        label_smoothing: float,
        training: bool,
        optimizer: OptimizerState,
        targets_checked: bool = False,
    ) -> float:
        """
        train_step on device buffers: x float32 (n, in), y int64 labels (n,) or float32 targets (n, out), both on this network's device.
        """
    def uses_fused(self, training: bool) -> bool:
        """
        Whether a pass in this mode (training: a step or loss_and_gradients) runs the fused kernels now.
        """
    def workspace_rows(self) -> int:
        """
        Debug: the batch size the workspace is sized for.
        """
    @property
    def device(self) -> int: ...
    @property
    def fused(self) -> bool:
        """
        Whether the fused narrow-MLP kernels may run (engine/network_cuda.h); on by default.
        """
    @fused.setter
    def fused(self, arg1: bool) -> None: ...
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

def activation_backward(
    dx: DeviceBuffer,
    x: DeviceBuffer,
    y: DeviceBuffer,
    dy: DeviceBuffer,
    n: int,
    kind: int,
    alpha: float,
) -> None: ...
def activation_forward(
    y: DeviceBuffer, x: DeviceBuffer, n: int, kind: int, alpha: float
) -> None: ...
def adagrad_step(
    params: collections.abc.Sequence[DeviceBuffer],
    grads: collections.abc.Sequence[DeviceBuffer],
    sizes: collections.abc.Sequence[int],
    sum_sq: collections.abc.Sequence[DeviceBuffer],
    *,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    l1: float,
    step: int,
) -> None: ...
def adam_step(
    params: collections.abc.Sequence[DeviceBuffer],
    grads: collections.abc.Sequence[DeviceBuffer],
    sizes: collections.abc.Sequence[int],
    m: collections.abc.Sequence[DeviceBuffer],
    v: collections.abc.Sequence[DeviceBuffer],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    l1: float,
    step: int,
) -> None: ...
def bce_with_logits(
    dlogits: DeviceBuffer, logits: DeviceBuffer, targets: DeviceBuffer, batch: int, features: int
) -> float: ...
def column_sum(out: DeviceBuffer, x: DeviceBuffer, rows: int, cols: int) -> None: ...
def current_device() -> int: ...
def device_info() -> dict: ...
def dropout_backward(
    dx: DeviceBuffer, dy: DeviceBuffer, n: int, *, p: float, seed: int, offset: int
) -> None: ...
def dropout_forward(
    y: DeviceBuffer, x: DeviceBuffer, n: int, *, p: float, seed: int, offset: int
) -> None: ...
def dropout_mask(mask: DeviceBuffer, n: int, *, p: float, seed: int, offset: int) -> None: ...
def fused_mlp_backward(
    dz: collections.abc.Sequence[DeviceBuffer],
    dlogits: DeviceBuffer,
    z: collections.abc.Sequence[DeviceBuffer],
    weights: collections.abc.Sequence[DeviceBuffer],
    sizes: collections.abc.Sequence[int],
    activations: collections.abc.Sequence[int],
    alphas: collections.abc.Sequence[float],
    prelu_slopes: collections.abc.Sequence[DeviceBuffer],
    n: int,
) -> None:
    """
    dz[h] = dZ of every hidden layer from dlogits and the forward's z, in one launch (the weight gradients are left to gemm TN and column_sum).
    """

def fused_mlp_forward(
    logits: DeviceBuffer,
    x: DeviceBuffer,
    weights: collections.abc.Sequence[DeviceBuffer],
    biases: collections.abc.Sequence[DeviceBuffer],
    sizes: collections.abc.Sequence[int],
    activations: collections.abc.Sequence[int],
    alphas: collections.abc.Sequence[float],
    prelu_slopes: collections.abc.Sequence[DeviceBuffer],
    n: int,
    *,
    training: bool,
    z: collections.abc.Sequence[DeviceBuffer] | None = None,
    a: collections.abc.Sequence[DeviceBuffer] | None = None,
) -> None:
    """
    logits = the MLP's forward of x in one launch (widths <= 128, <= 8 layers); training also stores every hidden layer's z and a = f(z).
    """

def gather_rows(
    dst: DeviceBuffer,
    src: DeviceBuffer,
    index: DeviceBuffer,
    index_offset: int,
    rows: int,
    src_rows: int,
    row_bytes: int,
) -> None:
    """
    dst rows = src rows at index[index_offset:index_offset + rows] (int64, each in [0, src_rows): the caller's permutation), rows of row_bytes bytes.
    """

def gemm(
    c: DeviceBuffer,
    a: DeviceBuffer,
    b: DeviceBuffer,
    m: int,
    n: int,
    k: int,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
    alpha: float = 1.0,
    beta: float = 0.0,
    bias: DeviceBuffer = None,
    activation: int = 0,
    activation_alpha: float = 0.0,
    preactivation: DeviceBuffer = None,
    tf32: bool = False,
) -> None:
    """
    c = act(alpha * op(a) @ op(b) + beta * c + bias) on contiguous device buffers.
    """

def log_softmax_backward(
    dx: DeviceBuffer, y: DeviceBuffer, dy: DeviceBuffer, rows: int, cols: int
) -> None: ...
def log_softmax_forward(y: DeviceBuffer, x: DeviceBuffer, rows: int, cols: int) -> None: ...
def mem_get_info() -> tuple[int, int]:
    """
    (free, total) bytes of device memory on the current device.
    """

def mse_loss(
    dpred: DeviceBuffer, pred: DeviceBuffer, target: DeviceBuffer, batch: int, features: int
) -> float: ...
def multiclass_hinge_loss(
    dscores: DeviceBuffer,
    scores: DeviceBuffer,
    labels: DeviceBuffer,
    batch: int,
    classes: int,
    margin: float,
) -> float: ...
def prelu_backward(
    dx: DeviceBuffer,
    dslope: DeviceBuffer,
    x: DeviceBuffer,
    slope: DeviceBuffer,
    dy: DeviceBuffer,
    rows: int,
    cols: int,
    n_slope: int,
) -> None: ...
def prelu_forward(
    y: DeviceBuffer, x: DeviceBuffer, slope: DeviceBuffer, rows: int, cols: int, n_slope: int
) -> None: ...
def rmsprop_step(
    params: collections.abc.Sequence[DeviceBuffer],
    grads: collections.abc.Sequence[DeviceBuffer],
    sizes: collections.abc.Sequence[int],
    square_avg: collections.abc.Sequence[DeviceBuffer],
    momentum_buffers: collections.abc.Sequence[DeviceBuffer] | None,
    grad_avg: collections.abc.Sequence[DeviceBuffer] | None,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    l1: float,
    step: int,
) -> None: ...
def sgd_step(
    params: collections.abc.Sequence[DeviceBuffer],
    grads: collections.abc.Sequence[DeviceBuffer],
    sizes: collections.abc.Sequence[int],
    momentum_buffers: collections.abc.Sequence[DeviceBuffer] | None,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    l1: float,
    step: int,
) -> None: ...
def softmax_backward(
    dx: DeviceBuffer, y: DeviceBuffer, dy: DeviceBuffer, rows: int, cols: int
) -> None: ...
def softmax_cross_entropy(
    dlogits: DeviceBuffer,
    logits: DeviceBuffer,
    labels: DeviceBuffer,
    batch: int,
    classes: int,
    label_smoothing: float,
) -> float: ...
def softmax_forward(y: DeviceBuffer, x: DeviceBuffer, rows: int, cols: int) -> None: ...
def stream_wait_default(stream: int) -> None: ...
def synchronize() -> None:
    """
    Wait for every queued kernel; raises the error of a kernel that failed.
    """
