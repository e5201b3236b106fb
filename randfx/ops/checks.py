"""Argument checks shared by every randfx op: each error names the op, the argument and
what was expected. They look only at metadata (dtype, shape, device), so the fake kernels
run them too and a bad call fails at trace time under torch.compile."""

import torch

from ..generators import spec

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def fail(op: str, message: str, error=ValueError):
    raise error(f"randfx.ops.{op}: {message}")


def key(op: str, key, device, argument: str = "key") -> None:
    """A key is a 0-d (or one-element) int64 tensor on the op's device."""
    if not isinstance(key, torch.Tensor):
        fail(op, f"{argument} must be a 0-d int64 tensor, got {type(key).__name__}", TypeError)
    if key.dtype != torch.int64:
        fail(op, f"{argument} must be an int64 tensor, got dtype {key.dtype}", TypeError)
    if key.numel() != 1:
        fail(op, f"{argument} must hold one value (a 0-d tensor), got shape {tuple(key.shape)}")
    if key.device != torch.device(device):
        fail(op, f"{argument} is on {key.device} but the op runs on {device}")


def key_value(op: str, key: torch.Tensor, argument: str = "key") -> int:
    """The key as a Python int, checked against the generator's range (reads the tensor)."""
    value = int(key.reshape(()).item())
    if not 0 <= value <= spec.MAX_KEY:
        fail(op, f"{argument}={value} is outside the accepted range [0, 2^32 - 1]")
    return value


def floating(op: str, argument: str, tensor, device=None, dtypes=FLOAT_DTYPES) -> None:
    if not isinstance(tensor, torch.Tensor):
        fail(op, f"{argument} must be a tensor, got {type(tensor).__name__}", TypeError)
    if tensor.dtype not in dtypes:
        fail(op, f"{argument} has dtype {tensor.dtype}; accepted: {list(dtypes)}", TypeError)
    if device is not None and tensor.device != torch.device(device):
        fail(op, f"{argument} is on {tensor.device} but the op runs on {device}")


def shape(op: str, argument: str, tensor: torch.Tensor, expected: tuple) -> None:
    if tuple(tensor.shape) != tuple(expected):
        fail(op, f"{argument} has shape {tuple(tensor.shape)}, expected {tuple(expected)}")


def positive_int(op: str, argument: str, value, minimum: int = 1) -> None:
    # SymInt: under torch.compile with dynamic shapes sizes arrive symbolic
    if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)) or value < minimum:
        fail(op, f"{argument} must be an int >= {minimum}, got {value!r}")


def stream(op: str, generator: str, dist: str, dist_argument: str = "dist") -> None:
    if generator not in spec.GENERATORS:
        fail(op, f"generator={generator!r} is unknown; accepted: {sorted(spec.GENERATORS)}")
    if dist not in spec.DISTRIBUTIONS:
        fail(op, f"{dist_argument}={dist!r} is unknown; accepted: {sorted(spec.DISTRIBUTIONS)}")


def counter_range(op: str, argument: str, offset: int, count: int) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 \
            or offset + count - 1 > spec.MAX_INDEX:
        fail(op, f"{argument}={offset!r} with {count} counters leaves the accepted range "
                 f"[0, 2^63 - 1]")


def linear_input(op: str, x, in_features=None, argument: str = "x") -> None:
    floating(op, argument, x)
    if x.dim() < 1:
        fail(op, f"{argument} must have at least one dimension (..., features)")
    if in_features is not None and x.shape[-1] != in_features:
        fail(op, f"{argument} has {x.shape[-1]} features in its last dimension, expected "
                 f"{in_features}")


def bias(op: str, bias, out_features: int, device) -> None:
    if bias is not None:
        floating(op, "bias", bias, device)
        shape(op, "bias", bias, (out_features,))


def compute_dtype(*dtypes) -> torch.dtype:
    """float64 when any input is float64 (gradcheck), else float32 accumulation."""
    return torch.float64 if torch.float64 in dtypes else torch.float32
