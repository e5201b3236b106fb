"""Triton kernels for the subspace scheme: the basis P[j, k] (stream value at counter
basis_offset + j * row_stride + k, row_stride = d unless a column slice of a wider basis
is read) is generated tile by tile in registers and never stored.

- `pmv_kernel` (RANDUMB's "PMV"): out[j] = basis_scale * sum_k P[j, k] alpha[k], plus
  optionally base_scale * R_base[j] (W0 of subspace_linear, counter j under base_key), so
  W = W0 + P alpha is written in a single pass.
- `pmv_grad_kernel`: partial[s, k] = sum_{j in split s} P[j, k] g[j], the fused
  generate-and-reduce behind grad_alpha = basis_scale * P^T g; the host sums the splits
  (deterministic, no atomics).
"""

import triton
import triton.language as tl

from ..generators import device
from .tiles import accumulate_rows, group_hashes, launch_key, stream_tile, value_in_hash


@triton.jit(do_not_specialize=["numel", "d", "row_stride", "offset", "window", "basis_scale",
                               "base_scale"])
def pmv_kernel(alpha_ptr, key_ptr, base_key_ptr, out_ptr, numel, d, row_stride, offset, window,
               basis_scale, base_scale, stride_alpha,
               GENERATOR: tl.constexpr, DIST: tl.constexpr, LOG2_VALUES: tl.constexpr,
               NARROW: tl.constexpr, HAS_BASE: tl.constexpr, BASE_DIST: tl.constexpr,
               BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr):
    key = launch_key(key_ptr, window, NARROW)
    j = tl.program_id(0).to(tl.int64) * BLOCK_J + tl.arange(0, BLOCK_J).to(tl.int64)
    row_base = offset.to(tl.int64) + j * row_stride.to(tl.int64)
    products = tl.zeros((1, BLOCK_J, BLOCK_K >> LOG2_VALUES), dtype=tl.float32)
    one_row = tl.arange(0, 1)
    for k0 in range(0, d, BLOCK_K):
        products = accumulate_rows(products, alpha_ptr, one_row, 1, 0, stride_alpha, k0, d,
                                   row_base, key, BLOCK_J, BLOCK_K, GENERATOR, DIST,
                                   LOG2_VALUES, NARROW)
    acc = tl.sum(tl.sum(products, axis=2), axis=0)
    acc = acc * basis_scale
    if HAS_BASE:
        base_key = tl.load(base_key_ptr).to(tl.uint32)
        acc += device.sample(j, base_key, GENERATOR, BASE_DIST) * base_scale
    tl.store(out_ptr + j, acc.to(out_ptr.dtype.element_ty), mask=j < numel)


@triton.jit(do_not_specialize=["numel", "d", "row_stride", "offset", "window",
                               "rows_per_split"])
def pmv_grad_kernel(grad_ptr, key_ptr, partial_ptr, numel, d, row_stride, offset, window,
                    stride_grad, rows_per_split,
                    GENERATOR: tl.constexpr, DIST: tl.constexpr, LOG2_VALUES: tl.constexpr,
                    NARROW: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_k = tl.program_id(0)
    split = tl.program_id(1)
    key = launch_key(key_ptr, window, NARROW)
    k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_start = (pid_k * BLOCK_K).to(tl.int64)
    d64 = d.to(tl.int64)
    stride64 = row_stride.to(tl.int64)
    first = split.to(tl.int64) * rows_per_split
    if LOG2_VALUES > 0:
        # grouped: accumulate [GROUPS, VALUES] in hash order, store it interleaved
        VALUES: tl.constexpr = 1 << LOG2_VALUES
        GROUPS: tl.constexpr = BLOCK_K // VALUES
        position = tl.arange(0, VALUES)
        products = tl.zeros((BLOCK_J, GROUPS, VALUES), dtype=tl.float32)
        for j0 in range(0, rows_per_split, BLOCK_J):
            j = first + j0 + tl.arange(0, BLOCK_J).to(tl.int64)
            g = tl.load(grad_ptr + j * stride_grad, mask=j < numel, other=0.0).to(tl.float32)
            h = group_hashes(offset.to(tl.int64) + j * stride64, k_start, key, GROUPS, GENERATOR,
                             LOG2_VALUES, NARROW)
            p = value_in_hash(h[:, :, None], position.to(tl.uint32)[None, None, :], DIST)
            products += p * g[:, None, None]
        acc3 = tl.sum(products, axis=0)  # across j once, not per step
        k3 = k_start + tl.arange(0, GROUPS)[:, None] * VALUES + position[None, :]
        tl.store(partial_ptr + split.to(tl.int64) * d64 + k3, acc3, mask=k3 < d)
    else:
        products = tl.zeros((BLOCK_J, BLOCK_K), dtype=tl.float32)
        for j0 in range(0, rows_per_split, BLOCK_J):
            j = first + j0 + tl.arange(0, BLOCK_J).to(tl.int64)
            g = tl.load(grad_ptr + j * stride_grad, mask=j < numel, other=0.0).to(tl.float32)
            p = stream_tile(offset.to(tl.int64) + j * stride64, k_start, key, BLOCK_J, BLOCK_K,
                            GENERATOR, DIST, LOG2_VALUES, NARROW)
            products += p * g[:, None]
        acc = tl.sum(products, axis=0)
        tl.store(partial_ptr + split.to(tl.int64) * d64 + k, acc, mask=k < d)
