"""Seeded-weight ops (DESIGN.md contract 2): Python wrappers over `torch.ops.randfx.*`
(in eager mode their autograd.Function twins, randfx/ops/eager.py: same body and backward,
no dispatcher round trips).

Keys are 0-d int64 tensors (a module keeps its seed in a buffer). A generated weight of
shape (out, in) holds at flat row-major position p the stream value at counter p, times
`scale`; scales are chosen by the module, the ops only multiply.

    generate_weight     scale * R(key), any shape, no grad
    seeded_linear       y = x (scale R)^T + bias                      grads: x, bias
    seeded_lora_linear  W = scale R + lora_scaling * lora_B @ lora_A   grads: x, A, B, bias
    subspace_weight     basis_scale * P alpha (the PMV)               grad: alpha
    subspace_linear     W = base_scale R(base_key) + reshape(P alpha)  grads: x, alpha, bias

Importing this module registers the ops; Triton is imported only when a CUDA op runs.
"""

from typing import Optional, Sequence

import torch

from ..generators.spec import DEFAULT_DISTRIBUTION, DEFAULT_GENERATOR
from . import library  # registers torch.ops.randfx.* and their eager twins
from . import row_sparse  # noqa: F401  (row-sparse backward ops, contract 6)

__all__ = ["generate_weight", "seeded_linear", "seeded_lora_linear", "subspace_weight",
           "subspace_linear"]

_GENERATOR = DEFAULT_GENERATOR
_DIST = DEFAULT_DISTRIBUTION


def generate_weight(key: torch.Tensor, shape: Sequence[int], scale: float = 1.0,
                    generator: str = _GENERATOR, dist: str = _DIST,
                    dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """scale * R(key) of `shape` on `device` (default: the key's device)."""
    if device is not None and isinstance(key, torch.Tensor):
        key = key.to(device)
    return library.generate_weight(key, list(shape), float(scale), generator, dist, dtype)


def seeded_linear(x: torch.Tensor, key: torch.Tensor, out_features: int, scale: float,
                  bias: Optional[torch.Tensor] = None, generator: str = _GENERATOR,
                  dist: str = _DIST) -> torch.Tensor:
    """y = x @ (scale * R(key))^T + bias with R of shape (out_features, x.shape[-1])."""
    return library.seeded_linear(x, key, out_features, float(scale), bias, generator, dist)


def seeded_lora_linear(x: torch.Tensor, key: torch.Tensor, lora_A: torch.Tensor,
                       lora_B: torch.Tensor, scale: float, lora_scaling: float,
                       bias: Optional[torch.Tensor] = None, generator: str = _GENERATOR,
                       dist: str = _DIST) -> torch.Tensor:
    """y = x @ W^T + bias, W = scale * R(key) + lora_scaling * lora_B @ lora_A (PEFT layout:
    lora_A [r, in], lora_B [out, r])."""
    return library.seeded_lora_linear(x, key, lora_A, lora_B, float(scale),
                                      float(lora_scaling), bias, generator, dist)


def subspace_weight(alpha: torch.Tensor, key: torch.Tensor, numel: int, basis_offset: int = 0,
                    basis_scale: float = 1.0, generator: str = _GENERATOR,
                    dist: str = _DIST, row_stride: Optional[int] = None) -> torch.Tensor:
    """out[j] = basis_scale * sum_k P[j, k] alpha[k], P[j, k] the stream value at counter
    basis_offset + j * d + k (d = alpha.numel()). A slice of a global (PRANC) alpha for
    the parameters starting at position `start` uses basis_offset = start * d.

    row_stride (default d) spaces the rows of P further apart: counter basis_offset +
    j * row_stride + k. A column slice [k0, k0 + d) of a basis with D >= d columns is
    row_stride=D, basis_offset=first_counter + k0 (the distributed PRANC basis)."""
    return library.subspace_weight(alpha, key, int(numel), int(basis_offset),
                                   float(basis_scale), generator, dist,
                                   None if row_stride is None else int(row_stride))


def subspace_linear(x: torch.Tensor, base_key: torch.Tensor, base_scale: float,
                    alpha: torch.Tensor, basis_key: torch.Tensor, basis_offset: int,
                    basis_scale: float, out_features: int, bias: Optional[torch.Tensor] = None,
                    generator: str = _GENERATOR, base_dist: str = _DIST,
                    basis_dist: str = _DIST) -> torch.Tensor:
    """y = x @ W^T + bias, W = base_scale * R(base_key) + reshape(subspace_weight(alpha,
    basis_key, out*in, basis_offset, basis_scale), (out, in))."""
    return library.subspace_linear(
        x, base_key, float(base_scale), alpha, basis_key, int(basis_offset), float(basis_scale),
        int(out_features), bias, generator, base_dist, basis_dist)
