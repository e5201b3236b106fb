"""Plain-torch reference of every randfx op (the CPU kernels, and the fallback for float64
on CUDA). Generated matrices are materialised in chunks of at most CHUNK_ELEMENTS values,
so memory stays bounded for any weight or basis size.

Arguments arrive checked (see `library.py`); keys arrive as Python ints. Matrices are 2-D
here: the op layer flattens leading dimensions.
"""

import torch

from ..generators import reference

CHUNK_ELEMENTS = 1 << 22


def stream_rows(key: int, first_counter: int, rows: int, cols: int, generator: str,
                dist: str, dtype: torch.dtype, device, row_stride=None) -> torch.Tensor:
    """[rows, cols] stream values at counters first_counter + r * row_stride + c, in dtype
    (row_stride None: cols, a contiguous block)."""
    if row_stride is None or row_stride == cols:
        values = reference.sample_range(first_counter, rows * cols, key, generator, dist,
                                        device)
    else:
        counters = (first_counter
                    + torch.arange(rows, dtype=torch.int64, device=device)[:, None] * row_stride
                    + torch.arange(cols, dtype=torch.int64, device=device)).reshape(-1)
        values = reference.sample(counters, key, generator, dist)
    return values.to(dtype).view(rows, cols)


def _row_chunks(rows: int, cols: int):
    step = max(1, CHUNK_ELEMENTS // max(cols, 1))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def generate_weight(key: int, shape, scale: float, generator: str, dist: str,
                    dtype: torch.dtype, device) -> torch.Tensor:
    numel = 1
    for size in shape:
        numel *= size
    cols = shape[-1] if len(shape) and shape[-1] else 1
    rows = numel // cols
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    out = torch.empty(rows, cols, dtype=dtype, device=device)
    for start, stop in _row_chunks(rows, cols):
        chunk = stream_rows(key, start * cols, stop - start, cols, generator, dist, compute,
                            device)
        out[start:stop] = (chunk * scale).to(dtype)
    return out.view(shape)


def seeded_matmul(x: torch.Tensor, key: int, rows: int, cols: int, scale: float,
                  transpose: bool, bias, lowrank_u, lowrank_v, generator: str,
                  dist: str) -> torch.Tensor:
    """y = x @ W^T (transpose False, x [M, cols]) or y = x @ W (x [M, rows]) with
    W = scale * R(key) of shape (rows, cols); then y += lowrank_u @ lowrank_v^T + bias."""
    dtypes = [x.dtype] + [t.dtype for t in (bias, lowrank_u, lowrank_v) if t is not None]
    compute = torch.float64 if torch.float64 in dtypes else torch.float32
    xc = x.to(compute)
    y = torch.zeros(x.shape[0], cols if transpose else rows, dtype=compute, device=x.device)
    for start, stop in _row_chunks(rows, cols):
        w = stream_rows(key, start * cols, stop - start, cols, generator, dist, compute,
                        x.device) * scale
        if transpose:
            y += xc[:, start:stop] @ w
        else:
            y[:, start:stop] = xc @ w.T
    if lowrank_u is not None:
        y += lowrank_u.to(compute) @ lowrank_v.to(compute).T
    if bias is not None:
        y += bias.to(compute)
    return y.to(x.dtype)


def lora_factors(x: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor,
                 lora_scaling: float):
    """(u, v) with x @ (c B A)^T = u @ v^T: the adapter of W as a rank-r term on y,
    computed in the promoted dtype. With (lora_B^T, lora_A^T) in place of (lora_A, lora_B)
    it is the term of grad_y @ (c B A), the backward's."""
    dtype = torch.promote_types(torch.promote_types(x.dtype, lora_A.dtype), lora_B.dtype)
    x, lora_A = x.to(dtype), lora_A.to(dtype)
    # the scaling rides in the GEMM's alpha (a separate multiply was one more kernel
    # launch per decode call); with beta=0 addmm never reads its (uninitialised) input
    unread = torch.empty((), dtype=dtype, device=x.device).expand(x.shape[0], lora_A.shape[0])
    return (torch.addmm(unread, x, lora_A.T, beta=0, alpha=lora_scaling),
            lora_B.to(dtype))


def lora_linear(x: torch.Tensor, key: int, out_features: int, scale: float, lora_A, lora_B,
                lora_scaling: float, bias, generator: str, dist: str):
    """y = x @ W^T + bias, W = scale R + lora_scaling * lora_B @ lora_A."""
    u, v = lora_factors(x, lora_A, lora_B, lora_scaling)
    return seeded_matmul(x, key, out_features, x.shape[1], scale, False, bias, u, v,
                         generator, dist)


def lora_grad_input(grad_y: torch.Tensor, key: int, scale: float, lora_A, lora_B,
                    lora_scaling: float, generator: str, dist: str):
    """grad_x = grad_y @ W, W = scale R + lora_scaling * lora_B @ lora_A."""
    u, v = lora_factors(grad_y, lora_B.T, lora_A.T, lora_scaling)
    return seeded_matmul(grad_y, key, lora_B.shape[0], lora_A.shape[1], scale, True, None, u,
                         v, generator, dist)


def subspace_weight(alpha: torch.Tensor, key: int, numel: int, basis_offset: int,
                    basis_scale: float, generator: str, dist: str,
                    row_stride=None) -> torch.Tensor:
    """out[j] = basis_scale * sum_k P[j, k] alpha[k], P[j, k] at counter offset + j*s + k
    with row stride s = row_stride, or d = alpha.numel() when None."""
    d = alpha.numel()
    stride = d if row_stride is None else row_stride
    compute = torch.float64 if alpha.dtype == torch.float64 else torch.float32
    a = alpha.reshape(d).to(compute)
    out = torch.empty(numel, dtype=compute, device=alpha.device)
    for start, stop in _row_chunks(numel, d):
        basis = stream_rows(key, basis_offset + start * stride, stop - start, d, generator,
                            dist, compute, alpha.device, stride)
        out[start:stop] = (basis @ a) * basis_scale
    return out.to(alpha.dtype)


def subspace_weight_backward(grad: torch.Tensor, key: int, d: int, basis_offset: int,
                             basis_scale: float, generator: str, dist: str,
                             row_stride=None) -> torch.Tensor:
    """grad_alpha = basis_scale * P^T grad, in float32 (float64 for a float64 grad); P as
    in subspace_weight."""
    numel = grad.numel()
    stride = d if row_stride is None else row_stride
    compute = torch.float64 if grad.dtype == torch.float64 else torch.float32
    g = grad.reshape(numel).to(compute)
    out = torch.zeros(d, dtype=compute, device=grad.device)
    for start, stop in _row_chunks(numel, d):
        basis = stream_rows(key, basis_offset + start * stride, stop - start, d, generator,
                            dist, compute, grad.device, stride)
        out += g[start:stop] @ basis
    return out * basis_scale


def subspace_linear_weight(base_key: int, base_scale: float, alpha: torch.Tensor,
                           basis_key: int, basis_offset: int, basis_scale: float,
                           out_features: int, in_features: int, generator: str,
                           base_dist: str, basis_dist: str, dtype: torch.dtype) -> torch.Tensor:
    """W = base_scale * R(base_key) + reshape(subspace_weight(alpha), (out, in)), in dtype."""
    compute = torch.float64 if torch.float64 in (alpha.dtype, dtype) else torch.float32
    base = generate_weight(base_key, (out_features, in_features), base_scale, generator,
                           base_dist, compute, alpha.device)
    delta = subspace_weight(alpha.to(compute), basis_key, out_features * in_features,
                            basis_offset, basis_scale, generator, basis_dist)
    return (base + delta.view(out_features, in_features)).to(dtype)
