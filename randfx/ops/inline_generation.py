"""Seeded weights and linear layers as the randfx torch.compile backend compiles them on
CUDA: Python-free at run time.

Called as a custom op, a seeded linear costs host time at every call and step: the
dispatcher, the op's Python autograd and device wrappers, its argument checks and a
Triton launch from Python, 190-300 us per call on the H200 machine's host against ~25 us
for F.linear (`python -m randfx.bench train`'s models are host-bound under plain
torch.compile because of it); a `generate_weight` call (a conv's weight, a weight its
module reads itself, as MultiheadAttention does) costs 80-120 us. Above the fused
kernels' rows (`heuristics.FUSED_MAX_ROWS`) the linear op materialises W and calls cuBLAS
anyway, so the backend's pass `backend_inline_generation` replaces such calls, and every
CUDA `generate_weight`, in the Dynamo graph, before aot_autograd, by `linear` and
`generate_weight` below. They launch the generator kernel through
`torch.library.wrap_triton`, so aot_autograd traces the launch into the forward and
backward graphs, and Inductor launches it from its own code beside the GEMM or
convolution, as it launches its own kernels; the argument checks ran once, on fake
tensors, when Dynamo traced the op.

Values are the ops' (DESIGN.md contract 3): W = scale R(key) (+ lora_scaling B A, folded
in by the same kernel) in x's dtype, y = x W^T + bias. The linear's backward regenerates
W for grad_x rather than keeping it from the forward, and computes the adapter's
gradients with the ops' own helper (fp32 accumulation for 16-bit activations).
"""

from typing import Optional, Sequence

import torch

from . import library, triton_backend


def _traced(key: torch.Tensor) -> bool:
    """Whether to launch through wrap_triton: the interpreter's kernels (CPU tests) cannot
    be wrapped, there the launch is direct."""
    return key.is_cuda


def _weight(key, out_features, in_features, scale, lora_A, lora_B, lora_scaling, generator,
            dist, dtype) -> torch.Tensor:
    traced = _traced(key)
    if lora_A is None:
        return triton_backend.materialize(key, out_features, in_features, scale, generator,
                                          dist, dtype, traced=traced)
    return triton_backend.lora_weight(key, out_features, in_features, scale, lora_A, lora_B,
                                      lora_scaling, generator, dist, dtype, traced=traced)


class _MaterializedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, key, lora_A, lora_B, bias, out_features, scale, lora_scaling,
                generator, dist):
        in_features = x.shape[-1]
        ctx.save_for_backward(x, key, lora_A, lora_B)
        ctx.meta = (out_features, in_features, scale, lora_scaling, generator, dist)
        ctx.bias_dtype = None if bias is None else bias.dtype
        w = _weight(key, out_features, in_features, scale, lora_A, lora_B, lora_scaling,
                    generator, dist, x.dtype)
        return torch.nn.functional.linear(x, w, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad_y):
        x, key, lora_A, lora_B = ctx.saved_tensors
        out_features, in_features, scale, lora_scaling, generator, dist = ctx.meta
        needs = ctx.needs_input_grad
        grad_x = grad_a = grad_b = grad_bias = None
        if needs[0]:
            w = _weight(key, out_features, in_features, scale, lora_A, lora_B, lora_scaling,
                        generator, dist, x.dtype)
            grad_x = grad_y.to(x.dtype) @ w
        if lora_A is not None:
            grad_a, grad_b = library.adapter_grads(grad_y, x, lora_A, lora_B, lora_scaling,
                                                   needs[2], needs[3])
        if ctx.bias_dtype is not None and needs[4]:
            grad_bias = grad_y.reshape(-1, out_features).sum(0).to(ctx.bias_dtype)
        return grad_x, None, grad_a, grad_b, grad_bias, None, None, None, None, None


def linear(x: torch.Tensor, key: torch.Tensor, lora_A: Optional[torch.Tensor],
           lora_B: Optional[torch.Tensor], bias: Optional[torch.Tensor], out_features: int,
           scale: float, lora_scaling: float, generator: str, dist: str) -> torch.Tensor:
    """seeded_linear (lora_A = lora_B = None) or seeded_lora_linear, materialised, with
    the generator's launch visible to aot_autograd."""
    return _MaterializedLinear.apply(x, key, lora_A, lora_B, bias, out_features, scale,
                                     lora_scaling, generator, dist)


def generate_weight(key: torch.Tensor, shape: Sequence[int], scale: float, generator: str,
                    dist: str, dtype: torch.dtype) -> torch.Tensor:
    """randfx.generate_weight (float32 or 16-bit; no gradient: R is not learned), with the
    generator's launch visible to aot_autograd."""
    return triton_backend.generate_weight(key, tuple(shape), scale, generator, dist, dtype,
                                          key.device, traced=_traced(key))
