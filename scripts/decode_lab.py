"""Decode lab: one device call that checks and times candidate decode kernels against
cuBLAS and the shipped kernels (METHOD.md: one script, many variants), plus profiles of
the training, PMV and row-sparse paths.

    python scripts/decode_lab.py [--quick]
                                 [--sections decode,training,pmv,sparse,sparse_pipeline,
                                             eager,stress,timeline,
                                             chain,fused_fp8,lora_chain,lora_table,
                                             lora_epilogue,mnist_host,training_host,
                                             whole_k,adapter,
                                             epilogue,
                                             dependent_launch,launch_sweep,
                                             launch_sweep_lora,launch_sweep_fp8]
                                 [--candidates mma,tc,group,gemv,nibble,packed,fp8]
                                 [--variants NAME,...] [--rows 1,4,8,16]
                                 [--shapes 4096x4096,8192x8192]

The kept designs are randfx's own kernels: `shipped_rademacher32` times the dispatch
(`rademacher32_nibble_kernel` at 1-2 rows of large layers, `rademacher32_gemv_kernel`
at 1 row of smaller ones, `rademacher32_mma_kernel` above, on packed x for large
layers); the "mma", "packed", "nibble" and "gemv" candidates time those kernels under
other launch configurations, whatever the dispatch would pick. This script keeps the
rejected candidates and their checks:

Candidate "tc": "swap-AB" tensor-core decode, y^T = W @ x^T, W's tile generated in
registers as the dot's first operand (per-element bit positions), x^T (rows padded to
16) as the second; split-K partials in fp32 summed by torch.
Candidate "group": one 32-column hash group per [BLOCK_N, 32] tile (FMA, sign-flip xor,
or tl.dot).
Candidate "gemv" (1 row): the shipped CUDA-core kernel under other launch configs
("v..."), and with the split-K sum done by the last split of each tile to finish ("f...",
an atomic counter per tile; "z": counters zeroed per call), so no epilogue launch.
Candidate "contig" (any rows): the shipped tensor-core kernel with x's tile loaded in
memory order and permuted on chip (fewer instructions, measured no faster).
Candidate "flip" (one row): the CUDA-core kernel as shipped before 2026-12-01, a sign-bit
flip of x per weight instead of the shipped predicated add (one instruction more per
weight).
Candidate "join" (any rows): the tensor-core kernel as shipped before 2026-12-01: W's
tile unpacked in hash order by five `tl.join` shifts (about 6 SASS instructions per
weight, a third of them layout conversions) instead of the shipped bit-pair tile with
permuted columns (about 3).
The sparse section times the shipped row-sparse backward against variants (gather
forms, grad_W on a side stream, Triton gather and row placement) and profiles them. The
eager section measures the host cost of one eager decode call at each layer of the op
stack; the stress section calls the packed-x decode many times under several launch
configurations and checks every call (it found wrong sums with 8-group pipelined steps).
"""

import argparse
import functools
import math
import sys

import torch
import triton
import triton.language as tl

from randfx.generators import device as streams
from randfx.kernels.dependent_launch import await_previous_kernel
from randfx.kernels.seeded_matmul import (_dot, _lowrank_down_split, _top_four_bits,
                                          rademacher32_gemv_partial)
from randfx.kernels.tiles import (group_hashes, launch_key, rademacher32_operand_columns,
                                  rademacher32_pair_tile, rademacher32_quad_tile,
                                  stream_tile)
from randfx.ops import triton_backend as tb


@triton.jit
def rademacher32_bits_tile(row_base, col_start, key, BLOCK_R: tl.constexpr,
                           BLOCK_C: tl.constexpr, GENERATOR: tl.constexpr,
                           NARROW: tl.constexpr, ONE: tl.constexpr, OUT: tl.constexpr):
    GROUPS: tl.constexpr = BLOCK_C // 32
    h = group_hashes(row_base, col_start, key, GROUPS, GENERATOR, 5, NARROW)
    position = tl.arange(0, 32).to(tl.uint32)[None, None, :]
    bits = ((((h[:, :, None] >> position) & 1) << 15) | ONE).to(tl.uint16)
    return tl.reshape(bits.to(OUT, bitcast=True), (BLOCK_R, BLOCK_C))


@triton.jit
def join_sign_tile(h, ROWS: tl.constexpr, GROUPS: tl.constexpr, ONE: tl.constexpr,
                   OUT: tl.constexpr):
    """[ROWS, GROUPS] hashes -> [ROWS, GROUPS * 32] +-1 in hash order: bit p reaches the
    16-bit sign through five joins' shifts, then one and-or per value."""
    v = tl.join(h << 15, h >> 1)
    v = tl.join(v, v >> 8)
    v = tl.join(v, v >> 4)
    v = tl.join(v, v >> 2)
    v = tl.join(v, v >> 1)
    bits = (v & 0x8000) | ONE
    return tl.reshape(bits.to(tl.uint16).to(OUT, bitcast=True), (ROWS, GROUPS * 32))


@triton.jit(do_not_specialize=["M", "N", "K", "k_per_split", "window"])
def join_mma_kernel(x_ptr, key_ptr, partial_ptr, M, N, K, k_per_split, window, stride_xm,
                    stride_xk, GENERATOR: tl.constexpr, DOT_IN_FP32: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    key = launch_key(key_ptr, window, True)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    group = tl.arange(0, GROUPS)
    row_group = ((n.to(tl.int64) * K.to(tl.int64)) >> 5).to(tl.uint32)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    k_begin = pid_s * k_per_split
    k_end = tl.minimum(K, k_begin + k_per_split)
    for k0 in range(k_begin, k_end, 32 * GROUPS):
        h = streams.hash_lo(row_group[:, None] + (k0 // 32 + group).to(tl.uint32)[None, :],
                            key, GENERATOR)
        k = k0 + tl.arange(0, 32 * GROUPS)
        x_t = tl.load(x_ptr + m[None, :] * stride_xm + k[:, None] * stride_xk,
                      mask=(m < M)[None, :] & (k < K)[:, None], other=0.0)
        w = join_sign_tile(h, BLOCK_N, GROUPS, 0x3F80, tl.bfloat16)
        if DOT_IN_FP32:
            acc = tl.dot(w.to(tl.float32), x_t.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(w.to(x_t.dtype), x_t, acc)
    tl.store(partial_ptr + pid_s * M * N + m[None, :] * N + n[:, None], acc,
             mask=(m < M)[None, :] & (n < N)[:, None])


@triton.jit(do_not_specialize=["M", "N", "K", "k_per_split", "window"])
def contig_mma_kernel(x_ptr, key_ptr, partial_ptr, M, N, K, k_per_split, window,
                            stride_xm, stride_xk, GENERATOR: tl.constexpr,
                            DOT_IN_FP32: tl.constexpr, EVEN_K: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            GROUPS: tl.constexpr):
    """The shipped rademacher32_mma_kernel with x's tile loaded in memory order (contiguous,
    so Triton pipelines it with 16-byte cp.async copies) and permuted into the pair-column
    order in registers / shared memory, instead of gathered element by element."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    key = launch_key(key_ptr, window, True)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    group = tl.arange(0, GROUPS)
    row_group = ((n.to(tl.int64) * K.to(tl.int64)) >> 5).to(tl.uint32)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    k_begin = pid_s * k_per_split
    k_end = tl.minimum(K, k_begin + k_per_split)
    columns = tl.arange(0, 32 * GROUPS)
    x_ptrs = x_ptr + m[None, :] * stride_xm + (k_begin + columns)[:, None] * stride_xk
    mask = (m < M)[None, :]
    for k0 in range(k_begin, k_end, 32 * GROUPS):
        h = streams.hash_lo(row_group[:, None] + (k0 // 32 + group).to(tl.uint32)[None, :],
                           key, GENERATOR)
        if EVEN_K:
            x_t = tl.load(x_ptrs, mask=mask, other=0.0)
        else:  # past K, x is zero (and the +-1 it meets finite)
            x_t = tl.load(x_ptrs, mask=mask & ((k0 + columns) < K)[:, None], other=0.0)
        x_ptrs += 32 * GROUPS * stride_xk
        x_t = tl.reshape(x_t, (GROUPS // 4, 4, 2, 8, 2, BLOCK_M))
        x_t = tl.reshape(tl.permute(x_t, (0, 3, 4, 1, 2, 5)), (32 * GROUPS, BLOCK_M))
        if x_t.dtype == tl.float16:
            w = rademacher32_pair_tile(h, BLOCK_N, GROUPS, 0x3C00, tl.float16)
        else:
            w = rademacher32_pair_tile(h, BLOCK_N, GROUPS, 0x3F80, tl.bfloat16)
        # +-1 is exact in x's dtype: fp32 x (the interpreter's tests) keeps its precision
        acc = _dot(w.to(x_t.dtype), x_t, acc, DOT_IN_FP32)
    tl.store(partial_ptr + pid_s * M * N + m[None, :] * N + n[:, None], acc,
             mask=(m < M)[None, :] & (n < N)[:, None])




@triton.jit(do_not_specialize=["M", "N", "K", "k_per_split", "window"])
def flip_gemv_kernel(x_ptr, key_ptr, partial_ptr, M, N, K, k_per_split, window, stride_xm,
                     stride_xk, GENERATOR: tl.constexpr, BLOCK_N: tl.constexpr,
                     GROUPS: tl.constexpr):
    """The one-row CUDA-core decode as shipped before 2026-12-01: every weight flips the
    sign bit of x (shift, and-xor, add: 3 instructions) instead of a predicated add of
    the -1 weights' x (bit test into a predicate, add: 2)."""
    pid_s = tl.program_id(1)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k_begin = pid_s * k_per_split
    k_end = tl.minimum(K, k_begin + k_per_split)
    key = launch_key(key_ptr, window, True)
    group = tl.arange(0, GROUPS)
    row_group = ((n.to(tl.int64) * K.to(tl.int64)) >> 5).to(tl.uint32)
    acc = tl.zeros((BLOCK_N, GROUPS), dtype=tl.float32)
    for k0 in range(k_begin, k_end, 32 * GROUPS):
        g = k0 // 32 + group
        h = streams.hash_lo(row_group[:, None] + g.to(tl.uint32)[None, :], key, GENERATOR)
        for position in tl.static_range(32):
            k = g * 32 + position
            xk = tl.load(x_ptr + k * stride_xk, mask=k < K, other=0.0).to(tl.float32)
            sign = (h << (31 - position)) & 0x80000000
            flipped = xk.to(tl.uint32, bitcast=True)[None, :] ^ sign
            acc += flipped.to(tl.float32, bitcast=True)
    tl.store(partial_ptr + pid_s * N + n, tl.sum(acc, axis=1), mask=n < N)


@triton.jit(do_not_specialize=["M", "N", "K", "k_per_split", "window"])
def tc_decode_kernel(x_ptr, key_ptr, part_ptr, M, N, K, k_per_split, window,
                     stride_xm, stride_xk,
                     GENERATOR: tl.constexpr, DIST: tl.constexpr, LOG2_VALUES: tl.constexpr,
                     NARROW: tl.constexpr, BITS: tl.constexpr, DOT_IN_FP32: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    key = launch_key(key_ptr, window, NARROW)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    row_base = n.to(tl.int64) * K.to(tl.int64)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    k_begin = pid_s * k_per_split
    k_end = tl.minimum(K, k_begin + k_per_split)
    for k0 in range(k_begin, k_end, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        xt = tl.load(x_ptr + m[None, :] * stride_xm + k[:, None] * stride_xk,
                     mask=(m < M)[None, :] & (k < K)[:, None], other=0.0)
        if BITS:
            if xt.dtype == tl.bfloat16:
                w = rademacher32_bits_tile(row_base, k0, key, BLOCK_N, BLOCK_K, GENERATOR,
                                           NARROW, 0x3F80, tl.bfloat16)
            else:
                w = rademacher32_bits_tile(row_base, k0, key, BLOCK_N, BLOCK_K, GENERATOR,
                                           NARROW, 0x3C00, tl.float16)
        else:
            w = stream_tile(row_base, k0, key, BLOCK_N, BLOCK_K, GENERATOR, DIST,
                            LOG2_VALUES, NARROW).to(xt.dtype)
        if DOT_IN_FP32:
            acc = tl.dot(w.to(tl.float32), xt.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(w, xt, acc)
    out = part_ptr + pid_s * M * N + m[None, :] * N + n[:, None]
    tl.store(out, acc, mask=(m < M)[None, :] & (n < N)[:, None])


@triton.jit(do_not_specialize=["M", "N", "K", "k_per_split", "window"])
def group_decode_kernel(x_ptr, key_ptr, part_ptr, M, N, K, k_per_split, window,
                        stride_xm, stride_xk,
                        GENERATOR: tl.constexpr, NARROW: tl.constexpr, MODE: tl.constexpr,
                        UNROLL: tl.constexpr, DOT_IN_FP32: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """rademacher32 decode, one hash group (32 columns) per [BLOCK_N, 32] tile, so no
    reshape: MODE 0 float FMA, 1 sign flip by xor (BLOCK_M == 1), 2 tensor-core dot."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    key = launch_key(key_ptr, window, NARROW)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    position = tl.arange(0, 32)
    group_base = (n.to(tl.int64) * K.to(tl.int64)) >> 5
    if MODE == 2:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N, 32), dtype=tl.float32)
    k_begin = pid_s * k_per_split
    k_end = tl.minimum(K, k_begin + k_per_split)
    for k0 in range(k_begin, k_end, 32 * UNROLL):
        for u in tl.static_range(UNROLL):
            kk = k0 + u * 32
            k = kk + position
            if NARROW:
                h = streams.hash_lo(group_base.to(tl.uint32) + (kk // 32).to(tl.uint32), key,
                                    GENERATOR)
            else:
                h = streams.hash_at(group_base + kk // 32, key, GENERATOR)
            if MODE == 2:
                xt = tl.load(x_ptr + m[None, :] * stride_xm + k[:, None] * stride_xk,
                             mask=(m < M)[None, :] & (k < K)[:, None], other=0.0)
                bits = ((((h[:, None] >> position[None, :].to(tl.uint32)) & 1) << 15)
                        | 0x3F80).to(tl.uint16)
                w = bits.to(tl.bfloat16, bitcast=True)
                if DOT_IN_FP32:
                    acc = tl.dot(w.to(tl.float32), xt.to(tl.float32), acc,
                                 input_precision="ieee")
                else:
                    acc = tl.dot(w.to(xt.dtype), xt, acc)
            else:
                x = tl.load(x_ptr + m[:, None] * stride_xm + k[None, :] * stride_xk,
                            mask=(m < M)[:, None] & (k < K)[None, :], other=0.0)
                x = x.to(tl.float32)
                if MODE == 1:
                    sign = (h[:, None] >> position[None, :].to(tl.uint32)) << 31
                    flipped = x.to(tl.uint32, bitcast=True)[:, None, :] ^ sign[None, :, :]
                    acc += flipped.to(tl.float32, bitcast=True)
                else:
                    w = streams.rademacher32_from_hash(h[:, None],
                                                       position[None, :].to(tl.uint32))
                    acc += x[:, None, :] * w[None, :, :]
    if MODE == 2:
        out = acc
    else:
        out = tl.trans(tl.sum(acc, axis=2))
    ptrs = part_ptr + pid_s * M * N + m[None, :] * N + n[:, None]
    tl.store(ptrs, out, mask=(m < M)[None, :] & (n < N)[:, None])


def split_plan(k, step, n_blocks, programs):
    """(splits, k_per_split): K cut into whole steps so about `programs` programs run."""
    k_steps = triton.cdiv(k, step)
    splits = max(1, min(k_steps, programs // n_blocks))
    k_per_split = triton.cdiv(k_steps, splits) * step
    return triton.cdiv(k, k_per_split), k_per_split


def epilogue(partial, scale, dtype):
    """y = (sum over splits of partial (splits, m, rows)) * scale, as the shipped decode
    finishes."""
    _, m, rows = partial.shape
    y = torch.empty(m, rows, dtype=dtype, device=partial.device)
    return tb.split_k_epilogue(partial, None, None, None, y, scale)


def shipped_split(x, rows, step, n_blocks, programs_per_sm, max_splits):
    """The shipped decode's split of K (whole steps, about programs_per_sm programs per SM,
    at most max_splits) for x and a (rows, K) rademacher32 W: (splits, k_per_split, the
    fp32 partials, the NARROW window)."""
    m, k = x.shape
    splits, k_per_split = split_plan(k, step, n_blocks,
                                     programs_per_sm * tb._sm_count(x.device))
    splits = min(splits, max_splits)
    k_per_split = triton.cdiv(triton.cdiv(k, step), splits) * step
    splits = triton.cdiv(k, k_per_split)
    partial = torch.empty(splits, m, rows, dtype=torch.float32, device=x.device)
    _, _, window = tb.tile_plan("rademacher32", 0, rows * k - 1, k, 32)
    return splits, k_per_split, partial, window


def finish(part, scale, dtype):
    return (part.sum(0) * scale).to(dtype)


def group_decode(x, key, rows, scale, mode, block_n, unroll, warps, programs):
    m, k = x.shape
    block_m = max(16, 1 << (m - 1).bit_length()) if mode == 2 else 1 << (m - 1).bit_length()
    n_blocks = triton.cdiv(rows, block_n)
    split, k_per_split = split_plan(k, 32 * unroll, n_blocks, programs)
    part = torch.empty(split, m, rows, device=x.device, dtype=torch.float32)
    _, narrow, window = tb.tile_plan("rademacher32", 0, rows * k - 1, k, 32)
    group_decode_kernel[(n_blocks, split)](
        x, key, part, m, rows, k, k_per_split, window, x.stride(0), x.stride(1),
        GENERATOR=streams.GENERATOR_IDS["pcg"], NARROW=narrow, MODE=mode, UNROLL=unroll,
        DOT_IN_FP32=x.device.type == "cpu", BLOCK_M=block_m, BLOCK_N=block_n,
        num_warps=warps)
    return finish(part, scale, x.dtype)


def shipped_mma(x, key, rows, scale, block_n, groups, warps, stages, programs_per_sm,
                max_splits=8):
    """randfx's rademacher32_mma_kernel (the "mma" decode) with a given launch config."""
    tb.SIGN_MMA_CONFIG = (block_n, groups, warps, stages)
    tb.SIGN_MMA_PROGRAMS_PER_SM = programs_per_sm
    tb.SIGN_MMA_MAX_SPLITS = max_splits
    y = torch.empty(x.shape[0], rows, dtype=x.dtype, device=x.device)
    return tb._rademacher32_decode("mma", x, key, rows, x.shape[1], scale, None, None, None,
                                   y, "pcg")


def join_mma(x, key, rows, scale, block_n, groups, warps, stages, programs_per_sm):
    m, k = x.shape
    n_blocks = triton.cdiv(rows, block_n)
    split, k_per_split, part, window = shipped_split(x, rows, 32 * groups, n_blocks,
                                                     programs_per_sm, tb.SIGN_MMA_MAX_SPLITS)
    join_mma_kernel[(n_blocks, split)](
        x, key, part, m, rows, k, k_per_split, window, x.stride(0), x.stride(1),
        GENERATOR=streams.GENERATOR_IDS["pcg"], DOT_IN_FP32=x.device.type == "cpu",
        BLOCK_M=max(16, 1 << (m - 1).bit_length()), BLOCK_N=block_n, GROUPS=groups,
        num_warps=warps, num_stages=stages)
    return finish(part, scale, x.dtype)


def contig_mma(x, key, rows, scale, block_n, groups, warps, stages, programs_per_sm):
    """contig_mma_kernel with the shipped split and epilogue (K a multiple of 32 GROUPS)."""
    m, k = x.shape
    n_blocks = triton.cdiv(rows, block_n)
    split, k_per_split, partial, window = shipped_split(
        x, rows, 32 * groups, n_blocks, programs_per_sm, tb.SIGN_MMA_MAX_SPLITS)
    contig_mma_kernel[(n_blocks, split)](
        x, key, partial, m, rows, k, k_per_split, window, x.stride(0), x.stride(1),
        GENERATOR=streams.GENERATOR_IDS["pcg"], DOT_IN_FP32=x.device.type == "cpu",
        EVEN_K=k % (32 * groups) == 0, BLOCK_M=max(16, 1 << (m - 1).bit_length()),
        BLOCK_N=block_n, GROUPS=groups, num_warps=warps, num_stages=stages)
    return epilogue(partial, scale, x.dtype)


def packed_mma(x, key, rows, scale, block_n, groups, warps, stages, programs_per_sm):
    """randfx's rademacher32_mma_kernel on x packed by rademacher32_pack_x_kernel (the
    "packed_mma" decode of large layers) with a given launch config, whatever the layer."""
    tb.SIGN_MMA_CONFIG = (block_n, groups, warps, stages)
    tb.SIGN_MMA_PROGRAMS_PER_SM = programs_per_sm
    y = torch.empty(x.shape[0], rows, dtype=x.dtype, device=x.device)
    return tb._rademacher32_decode("packed_mma", x, key, rows, x.shape[1], scale, None, None,
                                   None, y, "pcg")


def fp8_mma(x, key, rows, scale, block_n, groups, warps, stages, programs_per_sm, promote):
    """randfx's rademacher32_mma_kernel on x split into two e4m3 terms by
    rademacher32_pack_x_fp8_kernel (the "fp8_mma" decode) with a given launch config."""
    tb.SIGN_FP8_CONFIG = (block_n, groups, warps, stages)
    tb.SIGN_MMA_PROGRAMS_PER_SM = programs_per_sm
    tb.SIGN_FP8_PROMOTE = promote
    y = torch.empty(x.shape[0], rows, dtype=x.dtype, device=x.device)
    return tb._rademacher32_decode("fp8_mma", x, key, rows, x.shape[1], scale, None, None,
                                   None, y, "pcg")


def flip_gemv(x, key, rows, scale, block_n, groups, warps, programs_per_sm, max_splits):
    """flip_gemv_kernel (one row) split and finished like the shipped kernel."""
    m, k = x.shape
    assert m == 1
    n_blocks = triton.cdiv(rows, block_n)
    split, k_per_split, part, window = shipped_split(x, rows, 32 * groups, n_blocks,
                                                     programs_per_sm, max_splits)
    flip_gemv_kernel[(n_blocks, split)](
        x, key, part, m, rows, k, k_per_split, window, x.stride(0), x.stride(1),
        GENERATOR=streams.GENERATOR_IDS["pcg"], BLOCK_N=block_n, GROUPS=groups,
        num_warps=warps)
    return epilogue(part, scale, x.dtype)


def tc_decode(x, key, rows, scale, dist, block_n, block_k, warps, stages, programs,
              bits=False):
    m, k = x.shape
    block_m = max(16, 1 << (m - 1).bit_length())
    n_blocks = triton.cdiv(rows, block_n)
    split, k_per_split = split_plan(k, block_k, n_blocks, programs)
    part = torch.empty(split, m, rows, device=x.device, dtype=torch.float32)
    log2_values, narrow, window = tb.tile_plan(dist, 0, rows * k - 1, k, block_k)
    tc_decode_kernel[(n_blocks, split)](
        x, key, part, m, rows, k, k_per_split, window, x.stride(0), x.stride(1),
        GENERATOR=streams.GENERATOR_IDS["pcg"], DIST=streams.DISTRIBUTION_IDS[dist],
        LOG2_VALUES=log2_values, NARROW=narrow, BITS=bits,
        DOT_IN_FP32=x.device.type == "cpu",
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps,
        num_stages=stages)
    return finish(part, scale, x.dtype)


# ---- candidate "gemv": the CUDA-core decode kernel under other launch configurations,
# and with the split-K reduction folded in (the last split of a tile to finish sums the
# partials: no epilogue launch) -----------------------------------------------------------

@triton.jit(do_not_specialize=["M", "N", "K", "k_per_split", "window", "splits", "scale"])
def gemv_last_split_kernel(x_ptr, key_ptr, partial_ptr, count_ptr, y_ptr, M, N, K,
                           k_per_split, window, splits, scale, stride_xm, stride_xk,
                           GENERATOR: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, GROUPS: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    mask = (m < M)[:, None] & (n < N)[None, :]
    k_begin = pid_s * k_per_split
    partial = rademacher32_gemv_partial(x_ptr, key_ptr, M, K, k_begin,
                                        tl.minimum(K, k_begin + k_per_split), window,
                                        stride_xm, stride_xk, n, GENERATOR, BLOCK_M, BLOCK_N,
                                        GROUPS)
    tl.store(partial_ptr + pid_s * M * N + m[:, None] * N + n[None, :], partial, mask=mask)
    tl.debug_barrier()  # every thread's partial is written before the tile counts it
    arrived = tl.atomic_add(count_ptr + pid_n, 1, sem="acq_rel")
    if arrived == splits - 1:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for split in range(0, splits):
            acc += tl.load(partial_ptr + split * M * N + m[:, None] * N + n[None, :],
                           mask=mask, other=0.0, cache_modifier=".cg")
        tl.store(y_ptr + m[:, None] * N + n[None, :], (acc * scale).to(y_ptr.dtype.element_ty),
                 mask=mask)
        tl.atomic_xchg(count_ptr + pid_n, 0)  # ready for the next launch


def shipped_nibble(x, key, rows, scale, block_n, groups, warps, programs_per_sm, max_splits):
    """randfx's rademacher32_nibble_kernel (the "nibble" decode, 1-2 rows) with a given
    launch config."""
    tb.SIGN_NIBBLE_CONFIGS = {1 << (x.shape[0] - 1).bit_length(): (block_n, groups, warps)}
    tb.SIGN_GEMV_PROGRAMS_PER_SM = programs_per_sm
    tb.SIGN_GEMV_MAX_SPLITS = max_splits
    y = torch.empty(x.shape[0], rows, dtype=x.dtype, device=x.device)
    return tb._rademacher32_decode("nibble", x, key, rows, x.shape[1], scale, None, None,
                                   None, y, "pcg")


_COUNTS = {}


def gemv_variant(x, key, rows, scale, block_n, groups, warps, programs_per_sm, max_splits,
                 fused=None):
    """The shipped CUDA-core decode with a launch config; fused: None (two kernels, the
    shipped epilogue), "cached" (last split reduces, counters kept zeroed between calls)
    or "zeroed" (the same, counters zeroed by a memset every call)."""
    if fused is None:
        tb.SIGN_GEMV_CONFIGS = {1: (block_n, groups, warps)}
        tb.SIGN_GEMV_PROGRAMS_PER_SM = programs_per_sm
        tb.SIGN_GEMV_MAX_SPLITS = max_splits
        y = torch.empty(x.shape[0], rows, dtype=x.dtype, device=x.device)
        return tb._rademacher32_decode("gemv", x, key, rows, x.shape[1], scale, None, None,
                                       None, y, "pcg")
    m, k = x.shape
    n_blocks = triton.cdiv(rows, block_n)
    splits, k_per_split, partial, window = shipped_split(x, rows, 32 * groups, n_blocks,
                                                         programs_per_sm, max_splits)
    if fused == "cached":
        counts = _COUNTS.get((x.device, n_blocks))
        if counts is None:
            counts = _COUNTS[x.device, n_blocks] = torch.zeros(n_blocks, dtype=torch.int32,
                                                               device=x.device)
    else:
        counts = torch.zeros(n_blocks, dtype=torch.int32, device=x.device)
    y = torch.empty(m, rows, dtype=x.dtype, device=x.device)
    gemv_last_split_kernel[(n_blocks, splits)](
        x, key, partial, counts, y, m, rows, k, k_per_split, window, splits, float(scale),
        x.stride(0), x.stride(1), GENERATOR=streams.GENERATOR_IDS["pcg"],
        BLOCK_M=1 << (m - 1).bit_length(), BLOCK_N=block_n, GROUPS=groups, num_warps=warps)
    return y


def graphed(fn):
    from randfx.bench.common import graphed as g
    return g(fn, torch.device("cuda"))


def profile_kernels(fn, label, steps=5):
    """Per-kernel GPU time of fn (torch.profiler), printed as a short table."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    print(f"--- {label}: per-step kernel us")
    total = 0.0
    for event in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:12]:
        us = event.device_time_total / steps
        total += us
        print(f"  {us:8.1f}  x{event.count // steps}  {event.key[:90]}")
    print(f"  {total:8.1f}  (top kernels)", flush=True)


def training_section(t_us):
    """LoRA fwd+bwd against dense fwd+bwd at 8192x4096x4096 bf16. GEMM clocks depend on
    the operands' bits (power), so dense is timed with three weight distributions: the
    linear benchmark's uniform(-0.5, 0.5), randn, and +-0.01 (the seeded weight's values)."""
    import randfx.ops as ops
    dev, dtype = torch.device("cuda"), torch.bfloat16
    tokens, out_f, in_f, rank = 8192, 4096, 4096, 16
    key = torch.tensor(12345, device=dev)
    a = (torch.randn(rank, in_f, device=dev, dtype=dtype) * 0.01).requires_grad_()
    b = (torch.randn(out_f, rank, device=dev, dtype=dtype) * 0.01).requires_grad_()
    x = torch.randn(tokens, in_f, device=dev, dtype=dtype, requires_grad=True)
    gy = torch.randn(tokens, out_f, device=dev, dtype=dtype)
    weights = {"uniform": torch.rand(out_f, in_f, device=dev, dtype=dtype) - 0.5,
               "randn": torch.randn(out_f, in_f, device=dev, dtype=dtype),
               "signs": (torch.randint(0, 2, (out_f, in_f), device=dev) * 2 - 1).to(dtype) * 0.01}
    dist = "rademacher32"

    def lora():
        x.grad = a.grad = b.grad = None
        ops.seeded_lora_linear(x, key, a, b, 0.01, 2.0, None, "pcg", dist).backward(gy)

    for round_ in range(2):  # twice: the ratios' spread within one run
        lora_us = t_us(lora)
        for name, w in weights.items():
            w.requires_grad_()

            def dense():
                x.grad = w.grad = None
                torch.nn.functional.linear(x, w).backward(gy)

            dense_us = t_us(dense)
            print(f"training 8192x4096x4096 round {round_}: dense ({name} W) {dense_us:.1f} us, "
                  f"lora {lora_us:.1f} us: x{dense_us / lora_us:.3f}", flush=True)
    mat = t_us(lambda: tb.materialize(key, out_f, in_f, 0.01, "pcg", dist, dtype))
    fold = t_us(lambda: tb.materialize(key, out_f, in_f, 0.01, "pcg", dist, dtype, b * 2.0, a.T))
    print(f"  materialize {dist}: {mat:.1f} us; with the adapter folded in {fold:.1f} us")
    profile_kernels(lora, f"lora fwd+bwd {dist}")


def pmv_section(t_us):
    import randfx.ops as ops
    from randfx.bench.linear import pranc_weight
    dev = torch.device("cuda")
    numel, d = 4096 * 4096, 1024
    key = torch.tensor(777, device=dev)
    alpha = torch.randn(d, device=dev)
    grad = torch.randn(numel, device=dev)
    from randfx.bench.common import time_ms
    base = time_ms(lambda: pranc_weight(alpha, numel, 0, 4), device=dev, warmup=1, repeat=5)
    for dist in ("uniform8x4", "rademacher32"):
        pmv = t_us(lambda: ops.subspace_weight(alpha, key, numel, 0, 0.03, "pcg", dist)) / 1e3
        gr = t_us(lambda: torch.ops.randfx.subspace_weight_backward(
            grad, key, d, 0, 0.03, "pcg", dist)) / 1e3
        print(f"pmv {dist}: PRANC {base:.2f} ms, pmv {pmv:.3f} ms x{base / pmv:.1f}, "
              f"grad {gr:.3f} ms", flush=True)


# ---- row-sparse candidates: the kept-column gather and the zero-fill + row copy as one
# Triton pass each (H200, 1/8 of 4096 rows: the gather 31-43 us against torch's 31, the
# placement 10 us against 11 + 10; the backward 3.9-4.1x against 4.15x: not shipped)

@triton.jit
def gather_columns_kernel(g_ptr, index_ptr, out_ptr, T, J, stride_gt, stride_gc,
                          BLOCK_T: tl.constexpr, BLOCK_J: tl.constexpr):
    """Grid: (cdiv(T, BLOCK_T), cdiv(J, BLOCK_J)); out is (T, J) contiguous."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    j = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
    column = tl.load(index_ptr + j, mask=j < J, other=0)
    mask = (t < T)[:, None] & (j < J)[None, :]
    values = tl.load(g_ptr + t.to(tl.int64)[:, None] * stride_gt + column[None, :] * stride_gc,
                     mask=mask)
    tl.store(out_ptr + t.to(tl.int64)[:, None] * J + j[None, :], values, mask=mask)


@triton.jit
def place_rows_kernel(values_ptr, inverse_ptr, out_ptr, R, C, BLOCK_R: tl.constexpr,
                      BLOCK_C: tl.constexpr):
    """Grid: (cdiv(R, BLOCK_R), cdiv(C, BLOCK_C)); values (k, C) and out (R, C)
    contiguous; inverse (R,) int32, -1 for a row that gets zeros."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    source = tl.load(inverse_ptr + r, mask=r < R, other=-1)
    values = tl.load(values_ptr + source.to(tl.int64)[:, None] * C + c[None, :],
                     mask=(source >= 0)[:, None] & (c < C)[None, :], other=0.0)
    tl.store(out_ptr + r.to(tl.int64)[:, None] * C + c[None, :], values,
             mask=(r < R)[:, None] & (c < C)[None, :])


@triton.jit
def gather_columns_staged_kernel(g_ptr, index_ptr, out_ptr, T, C, J, stride_gt,
                                 BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr,
                                 ROWS: tl.constexpr):
    """out[t, j] = g[t, index[j]] with g's rows read whole (contiguous, at bandwidth) and
    the kept columns picked on chip by tl.gather. Grid: (cdiv(T, ROWS),)."""
    cols = tl.arange(0, BLOCK_C)
    j = tl.arange(0, BLOCK_J)
    column = tl.load(index_ptr + j, mask=j < J, other=0).to(tl.int32)
    for r in tl.static_range(ROWS):
        t = tl.program_id(0) * ROWS + r
        row = tl.load(g_ptr + t.to(tl.int64) * stride_gt + cols,
                      mask=(cols < C) & ((t + tl.zeros_like(cols)) < T))
        tl.store(out_ptr + t.to(tl.int64) * J + j, tl.gather(row, column, 0),
                 mask=(j < J) & ((t + tl.zeros_like(j)) < T))


def sparse_case(t_us):
    """The row-sparse backward's lab case: x, w, g (8192 tokens x 4096^2 bf16) and the
    dense backward's time over them (grad_x and grad_W, cuBLAS)."""
    dev, dtype = torch.device("cuda"), torch.bfloat16
    x, w, g = (torch.randn(shape, device=dev, dtype=dtype)
               for shape in ((8192, 4096), (4096, 4096), (8192, 4096)))
    return x, w, g, t_us(lambda: (g @ w, g.t() @ x))


def sparse_keep(x, w, g, n):
    """1/n of w's rows as the sampler hands them over (a sorted random subset padded with
    keep / 8 slots of -1), and the shipped row-sparse backward over them."""
    from randfx.ops.row_sparse import row_sparse_linear_backward
    keep = w.shape[0] // n
    rows = torch.randperm(w.shape[0], device=w.device)[:keep].sort().values
    rows_padded = torch.cat([rows, torch.full((keep // 8,), -1, device=w.device)])

    def shipped():
        return row_sparse_linear_backward(g, x, w, rows_padded, True, True, False, False)[:2]
    return rows_padded, shipped


def sparse_section(t_us):
    from randfx.ops.row_sparse import _gather_kept, _grad_input
    x, w, g, dense = sparse_case(t_us)
    dev, dtype, (tokens, feat) = x.device, x.dtype, x.shape
    print(f"sparse: dense backward {dense:.1f} us; GEMM 8192x4096x4096 "
          f"{t_us(lambda: g @ w):.1f} us")
    for n in (64, 8, 4):
        rows_padded, shipped = sparse_keep(x, w, g, n)

        def one_gather(index_fn):
            def run():
                index = rows_padded.clamp(min=0)
                keep_mask = (rows_padded >= 0).to(dtype)[:, None]
                kept = index_fn(index)
                gx = kept @ (w.index_select(0, index) * keep_mask)
                gw = torch.zeros_like(w)
                gw.index_add_(0, index, (kept.t() @ x) * keep_mask)
                return gx, gw
            return run

        side = torch.cuda.Stream()

        def two_streams():
            """grad_W (zero-fill, GEMM, row copy) on a side stream beside grad_x's GEMM:
            the two are independent, and grad_W's 128 output tiles leave SMs idle."""
            main = torch.cuda.current_stream()
            kept, index, valid = _gather_kept(g, rows_padded)
            grad_w = torch.empty(feat + 1, feat, device=dev, dtype=dtype)  # main's memory
            side.wait_stream(main)
            with torch.cuda.stream(side):
                grad_w.zero_()
                grad_w.index_copy_(0, torch.where(valid, index, feat), kept.t() @ x)
            grad_x = _grad_input(kept, w.index_select(0, index), valid)
            main.wait_stream(side)
            return grad_x, grad_w[:feat]

        def triton_moves(block_t=32, block_j=128, block_r=16, block_c=256, beside=True):
            """two_streams with the gather and the zero-fill + row copy as one Triton
            pass each (randfx/kernels/rows.py)."""
            def run():
                main = torch.cuda.current_stream()
                valid = rows_padded >= 0
                index = rows_padded.clamp(min=0)
                kept = torch.empty(tokens, index.numel(), device=dev, dtype=dtype)
                gather_columns_kernel[(triton.cdiv(tokens, block_t),
                                       triton.cdiv(index.numel(), block_j))](
                    g, index, kept, tokens, index.numel(), g.stride(0), g.stride(1),
                    BLOCK_T=block_t, BLOCK_J=block_j)
                grad_w = torch.empty(feat, feat, device=dev, dtype=dtype)
                inverse = torch.full((feat + 1,), -1, device=dev, dtype=torch.int32)
                inverse.index_copy_(0, torch.where(valid, index, feat),
                                    torch.arange(index.numel(), device=dev,
                                                 dtype=torch.int32))
                if beside:
                    side.wait_stream(main)
                with torch.cuda.stream(side if beside else main):
                    compact = kept.t() @ x
                    place_rows_kernel[(triton.cdiv(feat, block_r), triton.cdiv(feat, block_c))](
                        compact, inverse, grad_w, feat, feat, BLOCK_R=block_r,
                        BLOCK_C=block_c)
                grad_x = _grad_input(kept, w.index_select(0, index), valid)
                if beside:
                    main.wait_stream(side)
                return grad_x, grad_w
            return run

        def staged(rows_per_program=4, early_zero=True, masked_fill=True):
            """two_streams with g's kept columns gathered from whole rows
            (gather_columns_staged_kernel), grad_W's zero-fill on the side stream while
            the gather runs, and the padded weight rows zeroed in place."""
            def run():
                main = torch.cuda.current_stream()
                valid = rows_padded >= 0
                index = rows_padded.clamp(min=0)
                grad_w = torch.empty(feat + 1, feat, device=dev, dtype=dtype)
                if early_zero:
                    side.wait_stream(main)
                    with torch.cuda.stream(side):
                        grad_w.zero_()
                kept = torch.empty(tokens, index.numel(), device=dev, dtype=dtype)
                gather_columns_staged_kernel[(triton.cdiv(tokens, rows_per_program),)](
                    g, index, kept, tokens, feat, index.numel(), g.stride(0),
                    BLOCK_C=triton.next_power_of_2(feat),
                    BLOCK_J=triton.next_power_of_2(index.numel()), ROWS=rows_per_program)
                side.wait_stream(main)
                with torch.cuda.stream(side):
                    if not early_zero:
                        grad_w.zero_()
                    grad_w.index_copy_(0, torch.where(valid, index, feat), kept.t() @ x)
                if masked_fill:
                    grad_x = kept @ w.index_select(0, index).masked_fill_(~valid[:, None], 0)
                else:
                    grad_x = _grad_input(kept, w.index_select(0, index), valid)
                main.wait_stream(side)
                return grad_x, grad_w[:feat]
            return run

        v_sel = one_gather(lambda i: g.index_select(1, i))
        v_adv = one_gather(lambda i: g[:, i])
        v_t = one_gather(lambda i: g.t().index_select(0, i).t())
        ref = shipped()
        variants = (("select", v_sel), ("advanced", v_adv), ("transposed", v_t),
                    ("two_streams", two_streams), ("triton_moves", triton_moves()),
                    ("triton_moves_t64", triton_moves(block_t=64, block_j=64)),
                    ("triton_moves_t16", triton_moves(block_t=16, block_j=256)),
                    ("triton_moves_one_stream", triton_moves(beside=False)),
                    ("staged", staged()), ("staged_r8", staged(8)), ("staged_r2", staged(2)),
                    ("staged_late_zero", staged(early_zero=False)),
                    ("staged_mask_mul", staged(masked_fill=False)))
        for name, fn in variants:
            got = fn()
            torch.cuda.synchronize()
            for a, b in zip(got, ref):
                assert torch.equal(a, b) or (a - b).abs().max() < 1e-1, name
        line = {"keep": f"1/{n}", "shipped": dense / t_us(shipped)}
        for name, fn in variants:
            line[name] = dense / t_us(fn)
        index = rows_padded.clamp(min=0)
        kept = g.index_select(1, index)
        line["gather_us"] = t_us(lambda: g.index_select(1, index))
        kept_t = torch.empty(tokens, index.numel(), device=dev, dtype=dtype)
        for bt, bj in ((32, 128), (64, 64), (16, 256), (8, 512)):
            line[f"triton_gather_{bt}x{bj}_us"] = t_us(
                lambda: gather_columns_kernel[(triton.cdiv(tokens, bt),
                                               triton.cdiv(index.numel(), bj))](
                    g, index, kept_t, tokens, index.numel(), g.stride(0), g.stride(1),
                    BLOCK_T=bt, BLOCK_J=bj))
        assert torch.equal(kept_t, g.index_select(1, index))
        for rows_per_program in (1, 2, 4, 8):
            line[f"staged_gather_r{rows_per_program}_us"] = t_us(
                lambda: gather_columns_staged_kernel[(triton.cdiv(tokens, rows_per_program),)](
                    g, index, kept_t, tokens, feat, index.numel(), g.stride(0),
                    BLOCK_C=triton.next_power_of_2(feat),
                    BLOCK_J=triton.next_power_of_2(index.numel()), ROWS=rows_per_program))
            assert torch.equal(kept_t, g.index_select(1, index))
        line["gemm_gx_us"] = t_us(lambda: kept @ w.index_select(0, index))
        line["gemm_gw_us"] = t_us(lambda: kept.t() @ x)
        line["zeros_us"] = t_us(lambda: torch.zeros_like(w))
        print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in line.items()},
              flush=True)
        profile_kernels(shipped, f"row_sparse_linear_backward 1/{n}")
        profile_kernels(triton_moves(), f"triton moves 1/{n}")
        profile_kernels(staged(), f"staged 1/{n}")


def sparse_pipeline_section(t_us):
    """The row-sparse backward (8192 tokens x 4096^2 bf16) with the gather of g's kept
    columns cut into token chunks on its own stream, so that grad_x's GEMM of chunk c
    (another stream) runs while chunk c + 1 is gathered: the memory-bound gather under
    the compute-bound GEMMs instead of before them. grad_W (zero-fill, GEMM over all
    tokens, row copy) on a third stream once every chunk is gathered; the zero-fill
    either at once or after the first chunk. Checked against the shipped op, timed as a
    CUDA graph, x dense backward."""
    x, w, g, dense = sparse_case(t_us)
    dev, dtype, (tokens, feat) = x.device, x.dtype, x.shape
    gather_stream, gx_stream, gw_stream = (torch.cuda.Stream() for _ in range(3))
    for n in (16, 8, 4):
        rows_padded, shipped = sparse_keep(x, w, g, n)

        def pipelined(chunks, zero_first=True, weight_rows_first=True):
            def run():
                main = torch.cuda.current_stream()
                valid = rows_padded >= 0
                index = rows_padded.clamp(min=0)
                width = index.numel()
                kept = torch.empty(tokens, width, device=dev, dtype=dtype)
                grad_x = torch.empty(tokens, feat, device=dev, dtype=dtype)
                grad_w = torch.empty(feat + 1, feat, device=dev, dtype=dtype)
                for stream in (gather_stream, gx_stream, gw_stream):
                    stream.wait_stream(main)
                if zero_first:
                    with torch.cuda.stream(gw_stream):
                        grad_w.zero_()
                with torch.cuda.stream(gx_stream):
                    if weight_rows_first:
                        weight_rows = w.index_select(0, index).masked_fill_(~valid[:, None], 0)
                step = tokens // chunks
                gathered = []
                with torch.cuda.stream(gather_stream):
                    for c in range(chunks):
                        part = slice(c * step, (c + 1) * step)
                        torch.index_select(g[part], 1, index, out=kept[part])
                        event = torch.cuda.Event()
                        event.record(gather_stream)
                        gathered.append(event)
                with torch.cuda.stream(gx_stream):
                    if not weight_rows_first:
                        weight_rows = w.index_select(0, index).masked_fill_(~valid[:, None], 0)
                    for c in range(chunks):
                        part = slice(c * step, (c + 1) * step)
                        gx_stream.wait_event(gathered[c])
                        torch.mm(kept[part], weight_rows, out=grad_x[part])
                with torch.cuda.stream(gw_stream):
                    gw_stream.wait_event(gathered[-1])
                    if not zero_first:
                        grad_w.zero_()
                    grad_w.index_copy_(0, torch.where(valid, index, feat), kept.t() @ x)
                for stream in (gather_stream, gx_stream, gw_stream):
                    main.wait_stream(stream)
                return grad_x, grad_w[:feat]
            return run

        ref = shipped()
        variants = [(f"c{c}{'' if z else ' late zero'}{'' if r else ' late rows'}",
                     pipelined(c, z, r))
                    for c in (1, 2, 4, 8, 16) for z in (True, False) for r in (True, False)]
        for name, fn in variants:
            got = fn()
            torch.cuda.synchronize()
            for a, b in zip(got, ref):
                assert torch.equal(a, b) or (a - b).abs().max() < 1e-1, name
        line = {"keep": f"1/{n}", "dense_us": dense, "shipped": dense / t_us(shipped)}
        for name, fn in variants:
            line[name] = dense / t_us(fn)
        print("sparse pipeline x dense: " + ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in line.items()),
            flush=True)
        best = max((name for name, _ in variants), key=line.get)
        profile_kernels(dict(variants)[best], f"pipelined {best} 1/{n}")


def eager_section(t_us):
    """Host cost of one eager decode call, layer by layer of the op stack: each callable
    issued 300 times back to back, the clock read after a synchronize (the GPU idles most
    of that time, so it is the host's cost), then a cProfile of the op's calls."""
    import cProfile
    import pstats
    import time

    import randfx.ops as ops
    from randfx.ops import library
    dev = torch.device("cuda")
    key = torch.tensor(12345, device=dev)
    for out_f, in_f, rows in ((4096, 4096, 1), (8192, 8192, 1), (8192, 8192, 16)):
        x = torch.randn(rows, in_f, device=dev, dtype=torch.bfloat16)
        w = torch.randn(out_f, in_f, device=dev, dtype=torch.bfloat16)
        scale = in_f ** -0.5
        y = torch.empty(rows, out_f, device=dev, dtype=x.dtype)
        partial = torch.empty(8, rows, out_f, device=dev)
        kernel = tb._rademacher32_decode_kernel(x, out_f, in_f, False, "rademacher32")
        calls = {
            "F.linear": lambda: torch.nn.functional.linear(x, w),
            "ops.seeded_linear": lambda: ops.seeded_linear(x, key, out_f, scale, None, "pcg",
                                                           "rademacher32"),
            "torch.ops.randfx (the op)": lambda: torch.ops.randfx.seeded_linear(
                x, key, out_f, scale, None, "pcg", "rademacher32"),
            "the op's body": lambda: library._seeded_linear(
                tb, x, key, out_f, scale, None, "pcg", "rademacher32"),
            "tb.seeded_matmul": lambda: tb.seeded_matmul(x, key, out_f, in_f, scale, False,
                                                         None, None, None, "pcg",
                                                         "rademacher32"),
            "tb._rademacher32_decode": lambda: tb._rademacher32_decode(
                kernel, x, key, out_f, in_f, scale, None, None, None, y, "pcg"),
            "one epilogue launch": lambda: tb.split_k_epilogue_kernel[(64,)](
                partial, y, y, y, y, rows, out_f, 0, 1.0, 1.0, 1, 0, 0, 0, 0, 0, y.stride(0),
                y.stride(1), SPLITS=8, HAS_BIAS=False, HAS_LOWRANK=False, U_SPLITS_PAD=1,
                BLOCK_M=1 << (rows - 1).bit_length(), BLOCK_N=64),
            "torch.empty": lambda: torch.empty(8, rows, out_f, device=dev),
        }
        print(f"eager host us per call, {out_f}x{in_f}, {rows} rows, kernel {kernel}:")
        for name, fn in calls.items():
            for _ in range(30):
                fn()
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(300):
                fn()
            torch.cuda.synchronize()
            print(f"  {name:28s} {(time.perf_counter() - start) / 300 * 1e6:8.1f}")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(300):
        ops.seeded_linear(x, key, out_f, scale, None, "pcg", "rademacher32")
    torch.cuda.synchronize()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(14)


def timeline_section(t_us):
    """Where a decode call's time goes when layers run back to back in one graph: per
    layer, the graph's time against the sum of its kernels' GPU time (the difference is
    launch gaps and tails)."""
    import randfx.ops as ops
    dev = torch.device("cuda")
    stack = 8
    for (out_f, in_f), rows in (((4096, 4096), 1), ((4096, 4096), 8), ((8192, 8192), 2),
                                ((8192, 8192), 8), ((8192, 8192), 16)):
        x = torch.randn(rows, in_f, device=dev, dtype=torch.bfloat16)
        keys = [torch.tensor(12345 + i, device=dev) for i in range(stack)]
        ws = [torch.randn(out_f, in_f, device=dev, dtype=torch.bfloat16) for _ in range(stack)]

        def seeded():
            for key in keys:
                ops.seeded_linear(x, key, out_f, in_f ** -0.5, None, "pcg", "rademacher32")

        def dense():
            for w in ws:
                torch.nn.functional.linear(x, w)

        def last_split(fused):  # the shipped one-row kernel, split-K summed by its last split
            shipped = (*tb.SIGN_GEMV_CONFIGS[1], tb.SIGN_GEMV_PROGRAMS_PER_SM,
                       tb.SIGN_GEMV_MAX_SPLITS)

            def run():
                for key in keys:
                    gemv_variant(x, key, out_f, in_f ** -0.5, *shipped, fused)
            return run
        runs = [("seeded", seeded), ("cublas", dense)]
        if rows == 1 and out_f * in_f < tb.heuristics.SIGN_PREP_MIN_WEIGHTS:
            runs += [("last_split_cached", last_split("cached")),
                     ("last_split_zeroed", last_split("zeroed"))]
        for label, fn in runs:
            print_timeline(f"timeline {out_f}x{in_f} rows {rows} {label}", fn, stack)
        del ws


@triton.jit(do_not_specialize=["M", "N", "K", "k_per_split", "window"])
def fused_fp8_mma_kernel(x_ptr, key_ptr, partial_ptr, M, N, K, k_per_split, window,
                         stride_xm, stride_xk, GENERATOR: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, GROUPS: tl.constexpr,
                         PER_STEP: tl.constexpr, DEPENDENT_LAUNCH: tl.constexpr = ""):
    """The shipped fp8 decode (rademacher32_mma_kernel, FP8_X, PROMOTE) with x's two e4m3
    terms made by each program from x itself instead of a launch of their own: per K
    split (the pack kernel's scale, so the same sums) or, PER_STEP, per step of 32 *
    GROUPS columns (one pass over x, each step's sum scaled as it is added). The hi and
    lo terms are two dots of BLOCK_M (>= 16) columns each: one dot over the terms
    interleaved (tl.join) does not compile (Triton 3.6 and 3.9: an illegal shared layout
    in TritonGPUOptimizeDotOperands)."""
    await_previous_kernel(DEPENDENT_LAUNCH)
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    key = launch_key(key_ptr, window, True)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    group = tl.arange(0, GROUPS)
    STEP: tl.constexpr = 32 * GROUPS
    row_group = ((n.to(tl.int64) * K.to(tl.int64)) >> 5).to(tl.uint32)
    k_begin = pid_s * k_per_split
    k_end = tl.minimum(K, k_begin + k_per_split)
    columns = rademacher32_operand_columns(GROUPS, 4)
    x_rows = x_ptr + m[None, :] * stride_xm
    row_ok = (m < M)[None, :]
    if not PER_STEP:
        top = tl.zeros((STEP, BLOCK_M), dtype=tl.float32)
        for k0 in range(k_begin, k_end, STEP):
            k = k0 + tl.arange(0, STEP)
            magnitude = tl.abs(tl.load(x_rows + k[:, None] * stride_xk,
                                       mask=row_ok & (k < K)[:, None], other=0.0).to(tl.float32))
            top = tl.maximum(top, tl.where(magnitude < float("inf"), magnitude, float("inf")))
        largest = tl.max(top, 0)
        exponent = tl.where(largest > 0,
                            8.0 - tl.ceil(tl.log2(tl.maximum(largest, 1e-30))), 0.0)
        scale = tl.exp2(tl.minimum(exponent, 100.0))
        sum_hi = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        sum_lo = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k0 in range(k_begin, k_end, STEP):
        h = streams.hash_lo(row_group[:, None] + (k0 // 32 + group).to(tl.uint32)[None, :],
                            key, GENERATOR)
        k = k0 + columns
        xk = tl.load(x_rows + k[:, None] * stride_xk, mask=row_ok & (k < K)[:, None],
                     other=0.0).to(tl.float32)
        if PER_STEP:
            magnitude = tl.abs(xk)
            largest = tl.max(tl.where(magnitude < float("inf"), magnitude, float("inf")), 0)
            exponent = tl.where(largest > 0,
                                8.0 - tl.ceil(tl.log2(tl.maximum(largest, 1e-30))), 0.0)
            scale = tl.exp2(tl.minimum(exponent, 100.0))
        xs = xk * scale[None, :]
        hi = _top_four_bits(xs)
        lo = _top_four_bits((xs - hi) * 16.0)
        w = rademacher32_quad_tile(h, BLOCK_N, GROUPS)
        step_hi = tl.dot(w, hi.to(tl.float8e4nv))
        step_lo = tl.dot(w, lo.to(tl.float8e4nv))
        if PER_STEP:
            acc += (step_hi + step_lo * 0.0625) * (1.0 / scale)[None, :]
        else:
            sum_hi += step_hi
            sum_lo += step_lo
    if not PER_STEP:
        acc = (sum_hi + sum_lo * 0.0625) * tl.where(largest < float("inf"), 1.0 / scale,
                                                    float("nan"))[None, :]
    tl.store(partial_ptr + pid_s * M * N + m[None, :] * N + n[:, None], acc,
             mask=(m < M)[None, :] & (n < N)[:, None])


def fused_fp8_layers(layers, x, block_n, groups, warps, max_splits, per_step,
                     programs_per_sm=None):
    """`layers`' frozen layers through fused_fp8_mma_kernel and the shipped epilogue."""
    dev = x.device
    m, cols = x.shape
    rows = layers.out_f
    block_m = max(16, tb._pow2_at_least(m))
    n_blocks = triton.cdiv(rows, block_n)
    per_sm = programs_per_sm or tb.SIGN_MMA_PROGRAMS_PER_SM
    splits, k_per_split = tb.k_splits(cols, 32 * groups, max_splits,
                                      per_sm * tb._sm_count(dev) // n_blocks)
    _, _, window = tb.tile_plan("rademacher32", 0, rows * cols - 1, cols, 32)

    def run():
        out = []
        for key in layers.keys:
            partial = torch.empty(splits, m, rows, dtype=torch.float32, device=dev)
            y = torch.empty(m, rows, dtype=x.dtype, device=dev)
            fused_fp8_mma_kernel[(n_blocks, splits)](
                x, key, partial, m, rows, cols, k_per_split, window, x.stride(0), x.stride(1),
                GENERATOR=streams.GENERATOR_IDS["pcg"], BLOCK_M=block_m, BLOCK_N=block_n,
                GROUPS=groups, PER_STEP=per_step, num_warps=warps, num_stages=1,
                **tb._dependent_launch(dev, m <= tb.DEPENDENT_EARLY_MAX_ROWS))
            out.append(tb.split_k_epilogue(partial, None, None, None, y, layers.scale))
        return out
    return run


def fused_fp8_section(t_us, stack=8):
    """x's e4m3 terms made inside the fp8 main kernel (no launch of their own): frozen
    layers, eight per graph, us per layer against cuBLAS and the shipped chain, every
    variant checked against the shipped layers."""
    dev = torch.device("cuda")
    variants = [(bn, g, w, s, ps) for ps in (False, True)
                for bn, g, w, s in ((128, 8, 4, 8), (256, 8, 8, 8), (128, 4, 4, 8),
                                    (128, 8, 4, 4), (256, 8, 4, 8), (64, 8, 4, 8),
                                    (128, 8, 8, 8), (256, 4, 8, 16))]
    for (out_f, in_f), rows_list in (((4096, 4096), (2, 4, 8, 16)), ((8192, 8192), (8, 16))):
        layers = LayerStack(out_f, in_f, stack, first_key=99)
        for rows in rows_list:
            x = torch.randn(rows, in_f, device=dev, dtype=torch.bfloat16)
            shipped = layers.frozen(x)
            want = [y.float() for y in shipped()]
            times = {"cublas": t_us(layers.cublas(x)), "shipped": t_us(shipped)}
            for bn, g, w, s, ps in variants:
                label = f"n{bn} g{g} w{w} s{s}{' step' if ps else ''}"
                try:
                    run = fused_fp8_layers(layers, x, bn, g, w, s, ps)
                    err = max(((a.float() - b).abs().max() / b.abs().max()).item()
                              for a, b in zip(run(), want))
                except Exception as error:  # a configuration Triton cannot compile
                    times[label] = f"FAILED {type(error).__name__}"
                    continue
                times[label] = t_us(run) if err < 1e-2 else f"WRONG {err:.1e}"
            cu = times["cublas"]
            print(f"fused fp8 {out_f}x{in_f} rows {rows}, us per layer (x cuBLAS): "
                  + ", ".join(f"{k} {v / stack:.2f} ({cu / v:.2f}x)" if isinstance(v, float)
                              else f"{k} {v}" for k, v in times.items()), flush=True)
        del layers


def chain_section(t_us, stack=8):
    """Where a multi-row decode layer's time goes at 4096^2 (eight frozen layers per
    graph): each chain's kernels serialized (their own times are their work) and launched
    dependently, the fp8 chain (x's e4m3 terms, main kernel, epilogue) against the 16-bit
    one (no x launch), beside cuBLAS."""
    dev = torch.device("cuda")
    layers = LayerStack(4096, 4096, stack)
    for rows in (1, 2, 4, 8, 16):
        x = torch.randn(rows, 4096, device=dev, dtype=torch.bfloat16)
        print_timeline(f"chain 4096x4096 rows {rows} cublas", layers.cublas(x), stack)
        for dependent in (False, True):
            print_timeline(f"chain 4096x4096 rows {rows} dependent={dependent} shipped",
                           pinned(layers.frozen(x), DEPENDENT_LAUNCH=dependent), stack)
            if rows > 1:
                print_timeline(f"chain 4096x4096 rows {rows} dependent={dependent} 16-bit",
                               pinned(layers.frozen(x), DEPENDENT_LAUNCH=dependent,
                                      heuristics_SIGN_FP8_MIN_WEIGHTS=1 << 62), stack)
    del layers


@triton.jit(do_not_specialize=["M", "K", "rank", "k_per_split", "down_splits"])
def nibble_table_down_kernel(x_ptr, table_ptr, a_ptr, down_ptr, M, K, rank, k_per_split,
                             down_splits, stride_xm, stride_xk, stride_ar, stride_ak,
                             BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr,
                             DOWN_K: tl.constexpr, DEPENDENT_LAUNCH: tl.constexpr = ""):
    """x's nibble tables (rademacher32_nibble_table_kernel's programs (q, m)) and, in
    programs placed past them, an adapter's down projection split over K
    (`_lowrank_down_split`, program (tables + r, split)): the LoRA layer's x-side work in
    the launch that already reads x, so the nibble kernel runs as for a frozen layer.
    Grid: (cdiv(K / 4, BLOCK_Q) + rank, max(M, down_splits))."""
    await_previous_kernel(DEPENDENT_LAUNCH)
    if tl.program_id(0) < tl.cdiv(K // 4, BLOCK_Q):
        if tl.program_id(1) < M:  # the shipped kernel's program, inlined; it must not
            # wait again, and Triton 3.6 passes a called kernel's default "" as a raw str
            tb.rademacher32_nibble_table_kernel(x_ptr, table_ptr, M, K, stride_xm, stride_xk,
                                                BLOCK_Q, "")
    elif tl.program_id(1) < down_splits:
        _lowrank_down_split(x_ptr, a_ptr, down_ptr, M, K // 4, K, rank, k_per_split,
                            stride_xm, stride_xk, stride_ar, stride_ak, BLOCK_M, BLOCK_Q,
                            DOWN_K)


def lora_table_down_layers(layers, x, down_splits, early, max_splits=None):
    """`layers`' LoRA layers at one row: nibble_table_down_kernel, the shipped nibble
    kernel as for a frozen layer (no programs of the adapter's, the frozen split cap),
    the shipped epilogue summing the down projection's splits. early: the nibble kernel
    lets the epilogue be placed right after its wait."""
    dev = x.device
    m, cols = x.shape
    rows = layers.out_f
    block_m = tb._pow2_at_least(m)
    block_n, groups, warps = tb.SIGN_NIBBLE_CONFIGS[block_m]
    n_blocks = triton.cdiv(rows, block_n)
    splits, k_per_split = tb.k_splits(
        cols, 32 * groups, max_splits or tb.SIGN_GEMV_MAX_SPLITS,
        tb.SIGN_GEMV_PROGRAMS_PER_SM * tb._sm_count(dev) // n_blocks)
    down_splits, k_per_down = tb.k_splits(cols, tb.LORA_DOWN_K, down_splits, down_splits)
    n_tables = triton.cdiv(cols // 4, tb.SIGN_NIBBLE_TABLE_BLOCK)
    _, _, window = tb.tile_plan("rademacher32", 0, rows * cols - 1, cols, 32)

    def run():
        out = []
        for key, (a, b) in zip(layers.keys, layers.adapters):
            rank = a.shape[0]
            table = torch.empty(m, 4 * cols, dtype=torch.float32, device=dev)
            u = torch.empty(down_splits, m, rank, dtype=torch.float32, device=dev)
            nibble_table_down_kernel[(n_tables + rank, max(m, down_splits))](
                x, table, a, u, m, cols, rank, k_per_down, down_splits, x.stride(0),
                x.stride(1), a.stride(0), a.stride(1), BLOCK_Q=tb.SIGN_NIBBLE_TABLE_BLOCK,
                BLOCK_M=block_m, DOWN_K=tb.LORA_DOWN_K, **tb._dependent_launch(dev))
            partial = torch.empty(splits, m, rows, dtype=torch.float32, device=dev)
            y = torch.empty(m, rows, dtype=x.dtype, device=dev)
            tb.rademacher32_nibble_kernel[(n_blocks, splits)](
                table, key, partial, m, rows, cols, k_per_split, window, y, y, y, 0, 0, 0, 0,
                0, GENERATOR=streams.GENERATOR_IDS["pcg"], BLOCK_M=block_m, BLOCK_N=block_n,
                GROUPS=groups, num_warps=warps, **tb._dependent_launch(dev, early))
            out.append(tb.split_k_epilogue(partial, None, u, b, y, layers.scale,
                                           layers.lora_scaling))
        return out
    return run


def lora_one_row_sweep(title, shapes, variants, t_us, stack=8):
    """For each (out, in) of `shapes`: eight LoRA layers at one row, us per layer against
    cuBLAS, the frozen layers and the shipped LoRA layers, then every variant of
    `variants(layers, x)` (label -> callable over the layers) checked against the shipped
    outputs and timed."""
    dev = torch.device("cuda")
    for out_f, in_f in shapes:
        layers = LayerStack(out_f, in_f, stack)
        x = torch.randn(1, in_f, device=dev, dtype=torch.bfloat16)
        shipped = layers.lora(x)
        want = [y.float() for y in shipped()]
        times = {"cublas": t_us(layers.cublas(x)), "frozen": t_us(layers.frozen(x)),
                 "shipped": t_us(shipped)}
        for label, run in variants(layers, x).items():
            err = max(((a.float() - b).abs().max() / b.abs().max()).item()
                      for a, b in zip(run(), want))
            times[label] = t_us(run) if err < 1e-2 else f"WRONG {err:.1e}"
        cu = times["cublas"]
        print(f"{title} {out_f}x{in_f} one row, us per layer (x cuBLAS): "
              + ", ".join(f"{k} {v / stack:.2f} ({cu / v:.2f}x)" if isinstance(v, float)
                          else f"{k} {v}" for k, v in times.items()), flush=True)
        del layers


def lora_table_section(t_us):
    """LoRA layers at one row with the down projection in the table launch
    (lora_table_down_layers): 4 / 8 / 16 down splits, the nibble kernel released early or
    at exit, at the frozen split cap or at 8."""
    def variants(layers, x):
        return {f"d{down_splits} {'early' if early else 'exit'}{' s8' if cap else ''}":
                lora_table_down_layers(layers, x, down_splits, early, cap)
                for down_splits in (4, 8, 16) for early in (True, False) for cap in (None, 8)}
    lora_one_row_sweep("lora table", ((4096, 4096), (11008, 4096), (4096, 11008),
                                      (8192, 8192), (14336, 4096), (4096, 14336)),
                       variants, t_us)


def lora_epilogue_section(t_us):
    """Whether a LoRA layer's epilogue may be placed early once it has fewer, wider
    programs: lora_table_down_layers (8 down splits) with the epilogue's columns per
    program pinned, released early and at exit."""
    def variants(layers, x):
        return {f"n{width} {'early' if early else 'exit'}":
                pinned(lora_table_down_layers(layers, x, 8, early),
                       EPILOGUE_BLOCK_N=(width, width))
                for width in (32, 64, 128, 256, 512) for early in (True, False)}
    lora_one_row_sweep("lora epilogue", ((4096, 4096), (11008, 4096), (8192, 8192),
                                         (4096, 11008)), variants, t_us)


def lora_chain_section(t_us, stack=8):
    """Where a LoRA layer's one-row decode time goes against a frozen one's (eight layers
    per graph, serialized and dependent): the frozen layer on its CUDA-core kernel and on
    the nibble kernel, the LoRA layer as shipped (nibble, the down projection's programs
    in the same launch, at most SIGN_LORA_MAX_SPLITS splits) and at the frozen split cap."""
    dev = torch.device("cuda")
    for out_f, in_f in ((4096, 4096), (11008, 4096)):
        layers = LayerStack(out_f, in_f, stack)
        x = torch.randn(1, in_f, device=dev, dtype=torch.bfloat16)
        print_timeline(f"lora chain {out_f}x{in_f} cublas", layers.cublas(x), stack)
        for dependent in (False, True):
            for label, fn in (
                    ("frozen", layers.frozen(x)),
                    ("frozen nibble",
                     pinned(layers.frozen(x), heuristics_SIGN_PREP_MIN_WEIGHTS=0)),
                    ("lora", layers.lora(x)),
                    ("lora 16 splits",
                     pinned(layers.lora(x), SIGN_LORA_MAX_SPLITS=tb.SIGN_GEMV_MAX_SPLITS))):
                print_timeline(f"lora chain {out_f}x{in_f} dependent={dependent} {label}",
                               pinned(fn, DEPENDENT_LAUNCH=dependent), stack)
        del layers


def print_timeline(label, fn, layers):
    """fn's graph replay timed, then profiled: per layer (fn runs `layers` of them), the
    graph's time, its kernels' GPU time by name, and the difference (launch gaps, tails)."""
    from torch.profiler import ProfilerActivity, profile
    replay = graphed(fn)
    # the replay itself is timed (a graph cannot capture another's replay)
    wall = 1e3 * triton.testing.do_bench(replay, warmup=10, rep=50,
                                         return_mode="median") / layers
    for _ in range(3):
        replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            replay()
        torch.cuda.synchronize()
    kernels = {e.key[:60]: e.device_time_total / 5 / layers for e in prof.key_averages()
               if e.device_time_total > 0}
    busy = sum(kernels.values())
    print(f"{label}: {wall:.2f} us per layer, kernels {busy:.2f} us, gaps {wall - busy:.2f} "
          "us; " + ", ".join(f"{k} {v:.2f}" for k, v in kernels.items()), flush=True)


def training_host_section(t_us):
    """Host cost of training-sized seeded LoRA calls, and a training step of real models
    under torch.compile(backend="randfx") with the pass backend_inline_generation whole
    ("inline"), taking linears only ("linears": generate_weight stays an op) and off
    ("ops"), in turn in one process (the models' builders are the train benchmark's);
    then torch.profiler's top host ops of one compiled ViT LoRA step. Per call: each
    callable issued 40 times back to back at 8192 x 768 -> 3072 bf16, the clock read
    before and after a synchronize."""
    import argparse
    import time

    import randfx
    from randfx import backend
    from randfx.bench import train
    from randfx.ops import library
    dev = torch.device("cuda")
    m, k, n, r = 8192, 768, 3072, 16
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    g = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
    a, b = torch.randn(r, k, device=dev) * 0.01, torch.randn(n, r, device=dev) * 0.01
    bias, key = torch.zeros(n, device=dev), torch.tensor(1234, device=dev)
    calls = {
        "F.linear": lambda: torch.nn.functional.linear(x, w),
        "torch.ops.randfx.seeded_lora_linear": lambda: torch.ops.randfx.seeded_lora_linear(
            x, key, a, b, 0.02, 2.0, bias, "pcg", "uniform"),
        "its body": lambda: library.run("seeded_lora_linear", "triton", x, key, a, b, 0.02,
                                        2.0, bias, "pcg", "uniform"),
        "tb.lora_linear": lambda: tb.lora_linear(x, key, n, 0.02, a, b, 2.0, bias, "pcg",
                                                 "uniform"),
        "tb.materialize": lambda: tb.materialize(key, n, k, 0.02, "pcg", "uniform",
                                                 torch.bfloat16),
        "torch.ops.randfx.seeded_lora_grad_input":
            lambda: torch.ops.randfx.seeded_lora_grad_input(g, key, 0.02, a, b, 2.0, "pcg",
                                                            "uniform"),
        "tb.lora_grad_input": lambda: tb.lora_grad_input(g, key, 0.02, a, b, 2.0, "pcg",
                                                         "uniform"),
    }
    print(f"host us per call, {m} x {k} -> {n}, bf16, rank {r} (issue / with the GPU's work):")
    for name, fn in calls.items():
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(40):
            fn()
        issue = (time.perf_counter() - start) / 40
        torch.cuda.synchronize()
        whole = (time.perf_counter() - start) / 40
        print(f"  {name:<44} {issue * 1e6:8.1f} / {whole * 1e6:8.1f}")
    from randfx.passes import backend_inline_generation as inline_pass
    from torch.profiler import ProfilerActivity, profile
    options = argparse.Namespace(image_size=224, seq=1024, gpt2_layers=12, gpt2_embd=768)
    every_pass, inline_weights = backend.BEFORE_AUTOGRAD, inline_pass._inline_generate_weight
    variants = {"inline": (every_pass, inline_weights),
                "linears": (every_pass, lambda gm, node: False),
                "ops": (tuple(p for p in every_pass if p != "backend_inline_generation"),
                        inline_weights)}
    runs = [("vit_b_16", 64, scheme, ("linears", "inline"))
            for scheme in ("frozen", "random_base_lora")]
    for model_name, size, scheme, labels in runs:
        build, make_batch, loss_of = train._builders(options)[model_name]
        try:
            torch.manual_seed(0)
            model = randfx.transform(build().to(dev),
                                     randfx.Config(scheme, rank=16, seed=0))
        except SystemExit as missing:  # torchvision absent
            print(missing)
            continue
        batch = make_batch(size, dev)
        for label in labels:
            backend.BEFORE_AUTOGRAD, inline_pass._inline_generate_weight = variants[label]
            torch._dynamo.reset()
            ms, peak, _ = train._step_time(model, batch, loss_of, dev, "randfx")
            print(f"{model_name} {scheme}, torch.compile, {label}: {ms:.2f} ms per step, "
                  f"peak {peak / 2**20:.0f} MB", flush=True)
        backend.BEFORE_AUTOGRAD, inline_pass._inline_generate_weight = variants["inline"]
        if model_name != "vit_b_16" or scheme == "frozen":
            continue
        torch._dynamo.reset()
        run = torch.compile(model, backend="randfx")
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = loss_of(run, batch)
            loss.backward()
            optimizer.step()
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
        averages = prof.key_averages()
        gpu = sum(e.self_device_time_total for e in averages) / 5 / 1e3
        host = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:20]
        print(f"{model_name} LoRA compiled step: GPU busy {gpu:.2f} ms; top self CPU us "
              "per step: " + "; ".join(f"{e.key[:60]} {e.self_cpu_time_total / 5:.0f} "
                                       f"(x{e.count // 5})" for e in host), flush=True)
        gpu_top = sorted(averages, key=lambda e: -e.self_device_time_total)[:15]
        print(f"{model_name} LoRA compiled step, top GPU us per step: " + "; ".join(
            f"{e.key[:60]} {e.self_device_time_total / 5:.0f} (x{e.count // 5})"
            for e in gpu_top), flush=True)
        torch._dynamo.reset()


def mnist_host_section(t_us, data_dir=".carry/mnist", steps=40):
    """Host time of one training step of seed 004's MLP (batch 128) under torch.compile
    "reduce-overhead", full backprop against 10 paths: wall ms per step, then the top
    host-side ops of each (torch.profiler, self CPU time per step)."""
    import time
    from torch.profiler import ProfilerActivity, profile
    from randfx.bench.mnist import load_mnist, mlp, sparse_model
    dev = torch.device("cuda")
    images, labels = load_mnist(data_dir, "train", device=dev)
    models = {"full": mlp(0).to(dev), "10 paths": sparse_model(mlp(0), 10).to(dev)}
    loss_fn = torch.nn.CrossEntropyLoss()
    for name, model in models.items():
        compiled = torch.compile(model, mode="reduce-overhead")
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(i):
            x, y = images[i * 128:(i + 1) * 128], labels[i * 128:(i + 1) * 128]
            opt.zero_grad(set_to_none=True)
            loss_fn(compiled(x), y).backward()
            opt.step()
        for i in range(10):
            step(i)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(steps):
            step(i)
        torch.cuda.synchronize()
        wall = (time.perf_counter() - start) * 1e3 / steps
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for i in range(steps):
                step(i)
            torch.cuda.synchronize()
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:14]
        gpu = sum(e.self_device_time_total for e in prof.key_averages()) / steps / 1e3
        print(f"mnist host {name}: {wall:.3f} ms per step, GPU busy {gpu:.3f} ms; "
              "top self CPU us per step: "
              + "; ".join(f"{e.key[:48]} {e.self_cpu_time_total / steps:.0f} (x{e.count // steps})"
                          for e in events), flush=True)
        # what the graphs hold: GPU kernels per step, by name
        kernels = sorted((e for e in prof.key_averages() if e.self_device_time_total > 0
                          and e.device_type == torch.autograd.DeviceType.CUDA),
                         key=lambda e: -e.count)
        print(f"mnist kernels {name}: {sum(e.count for e in kernels) / steps:.0f} per step; "
              + "; ".join(f"{e.key[:56]} x{e.count / steps:.1f} "
                          f"{e.self_device_time_total / e.count:.1f}us" for e in kernels[:40]),
              flush=True)


@triton.jit(do_not_specialize=["M", "N", "K", "window"])
def gemv_whole_k_kernel(x_ptr, key_ptr, y_ptr, M, N, K, window, stride_xm, stride_xk,
                        scale, GENERATOR: tl.constexpr, BLOCK_N: tl.constexpr,
                        GROUPS: tl.constexpr):
    """The shipped one-row kernel over all of K, y written at once (no split, no epilogue
    launch). Grid: (cdiv(N, BLOCK_N),)."""
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    partial = rademacher32_gemv_partial(x_ptr, key_ptr, M, K, 0, K, window, stride_xm,
                                        stride_xk, n, GENERATOR, 1, BLOCK_N, GROUPS)
    y = tl.sum(partial, axis=0) * scale
    tl.store(y_ptr + n, y.to(y_ptr.dtype.element_ty), mask=n < N)


def whole_k_section(t_us):
    """One row without a split of K: gemv_whole_k_kernel under several tiles against the
    shipped dispatch, one call per graph and eight layers per graph."""
    import randfx.ops as ops
    dev = torch.device("cuda")
    stack = 8
    for out_f, in_f in ((4096, 4096), (4096, 8192), (8192, 4096), (8192, 8192)):
        x = torch.randn(1, in_f, device=dev, dtype=torch.bfloat16)
        keys = [torch.tensor(12345 + i, device=dev) for i in range(stack)]
        scale = in_f ** -0.5
        _, _, window = tb.tile_plan("rademacher32", 0, out_f * in_f - 1, in_f, 32)
        ref = ops.seeded_linear(x.float(), keys[0], out_f, scale, None, "pcg",
                                "rademacher32")
        ws = [torch.randn(out_f, in_f, device=dev, dtype=torch.bfloat16) for _ in range(stack)]
        dense = t_us(lambda: torch.nn.functional.linear(x, ws[0]))
        dense_stack = t_us(lambda: [torch.nn.functional.linear(x, w) for w in ws]) / stack
        line = {"shape": f"{out_f}x{in_f}", "cublas_us": round(dense, 2),
                "cublas_stack_us": round(dense_stack, 2)}

        def shipped(key):
            return ops.seeded_linear(x, key, out_f, scale, None, "pcg", "rademacher32")
        line["shipped"] = (round(dense / t_us(lambda: shipped(keys[0])), 2),
                           round(dense_stack * stack / t_us(
                               lambda: [shipped(k) for k in keys]), 2))
        # a wide step (32-128 hash groups, K in 1-4 steps) spreads K over the program's
        # warps, which then sum across one another on chip: the split kernel's parallelism
        # without its partials and epilogue launch
        for block_n, groups, warps in ((32, 8, 4), (16, 16, 4), (32, 64, 8), (16, 64, 4),
                                       (16, 128, 8), (32, 128, 16), (8, 128, 4),
                                       (64, 64, 16), (32, 32, 4), (16, 32, 4), (64, 32, 8),
                                       (8, 64, 2), (32, 64, 4), (16, 128, 4),
                                       (16, 128, 2), (32, 128, 4), (32, 64, 2), (8, 128, 2),
                                       (16, 64, 2), (64, 64, 4), (32, 128, 8), (64, 128, 8),
                                       (64, 32, 4), (64, 64, 8), (32, 32, 2), (128, 32, 8)):
            def run(key, block_n=block_n, groups=groups, warps=warps):
                y = torch.empty(1, out_f, device=dev, dtype=x.dtype)
                gemv_whole_k_kernel[(triton.cdiv(out_f, block_n),)](
                    x, key, y, 1, out_f, in_f, window, x.stride(0), x.stride(1), scale,
                    GENERATOR=streams.GENERATOR_IDS["pcg"], BLOCK_N=block_n, GROUPS=groups,
                    num_warps=warps)
                return y
            err = ((run(keys[0]).float() - ref).norm() / ref.norm()).item()
            name = f"w{block_n}g{groups}w{warps}"
            if not err < 1e-2:
                line[name] = f"WRONG {err:.1e}"
                continue
            line[name] = (round(dense / t_us(lambda: run(keys[0])), 2),
                          round(dense_stack * stack / t_us(lambda: [run(k) for k in keys]), 2))
        print("whole_k", line, flush=True)
        del ws


def stress_section(t_us):
    """The packed-x and fp8 tensor-core decodes under several launch configurations,
    called many times on fresh x and checked every time against x @ W^T with W
    materialised once in fp32: a race (pipelined copies against the MMA) shows as an
    occasional wrong call."""
    import randfx.ops as ops
    dev = torch.device("cuda")
    key = torch.tensor(12345, device=dev)
    configs = [(128, 4, 4, 3), (128, 4, 4, 2), (128, 4, 4, 1), (128, 8, 4, 3), (128, 8, 4, 1),
               (256, 4, 8, 3)]
    default = tb.SIGN_MMA_CONFIG, tb.SIGN_FP8_CONFIG
    for out_f, in_f in ((8192, 8192), (28672, 8192)):
        scale = in_f ** -0.5
        w = ops.generate_weight(key, (out_f, in_f), scale, "pcg", "rademacher32")
        for kernel in ("packed_mma", "fp8_mma"):
            for config in configs:
                tb.SIGN_MMA_CONFIG = tb.SIGN_FP8_CONFIG = config
                bad = []
                worst = 0.0
                for rows in (3, 8, 16):
                    for trial in range(40):
                        x = torch.randn(rows, in_f, device=dev, dtype=torch.bfloat16)
                        y = torch.empty(rows, out_f, device=dev, dtype=x.dtype)
                        got = tb._rademacher32_decode(kernel, x, key, out_f, in_f, scale,
                                                      None, None, None, y, "pcg").float()
                        ref = x.float() @ w.T
                        err = ((got - ref).norm() / ref.norm()).item()
                        worst = max(worst, err) if err == err else float("inf")
                        if not err < 1e-2:
                            bad.append((rows, trial, err))
                print(f"stress {kernel} {out_f}x{in_f} config {config}: {len(bad)} wrong of "
                      f"120, worst rel err {worst:.1e} {bad[:4]}", flush=True)
    tb.SIGN_MMA_CONFIG, tb.SIGN_FP8_CONFIG = default


# ---- section "adapter": LoRA decode with the adapter's down projection inside the decode
# kernels (shipped) against torch's cast + addmm before them; the split-K epilogue with its
# splits and ranks unrolled (shipped) against the runtime loops shipped before -----------

@triton.jit(do_not_specialize=["M", "N", "splits", "rank", "scale"])
def loop_epilogue_kernel(partial_ptr, bias_ptr, u_ptr, v_ptr, y_ptr, M, N, splits, rank,
                         scale, stride_um, stride_ur, stride_vn, stride_vr, stride_ym,
                         stride_yn, HAS_BIAS: tl.constexpr, HAS_LOWRANK: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """split_k_epilogue_kernel as shipped before the sixth session of 2026-12-01: the
    splits and the adapter's ranks in runtime loops, u given whole."""
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    mask = (m < M)[:, None] & (n < N)[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for split in range(0, splits):
        acc += tl.load(partial_ptr + split * M * N + m[:, None] * N + n[None, :], mask=mask,
                       other=0.0)
    acc = acc * scale
    if HAS_LOWRANK:
        for r in range(0, rank):
            u = tl.load(u_ptr + m * stride_um + r * stride_ur, mask=m < M, other=0.0)
            v = tl.load(v_ptr + n * stride_vn + r * stride_vr, mask=n < N, other=0.0)
            acc += u.to(tl.float32)[:, None] * v.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=n < N, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + m[:, None] * stride_ym + n[None, :] * stride_yn,
             acc.to(y_ptr.dtype.element_ty), mask=mask)


class LoopEpilogue:
    """Stands in for tb.split_k_epilogue_kernel (same launch arguments; u given whole)
    with loop_epilogue_kernel."""

    def __getitem__(self, grid):
        def launch(partial, bias, u, v, y, M, N, rank, scale, lowrank_scale, u_splits,
                   stride_us, stride_um, stride_ur, stride_vn, stride_vr, stride_ym,
                   stride_yn, SPLITS, HAS_BIAS, HAS_LOWRANK, U_SPLITS_PAD, BLOCK_M, BLOCK_N,
                   RANK_BLOCK, **dependent_launch):  # launched without it
            assert u_splits == 1 and lowrank_scale == 1.0, "the loop epilogue takes u whole"
            loop_epilogue_kernel[grid](partial, bias, u, v, y, M, N, SPLITS, rank, scale,
                                       stride_um, stride_ur, stride_vn, stride_vr, stride_ym,
                                       stride_yn, HAS_BIAS=HAS_BIAS, HAS_LOWRANK=HAS_LOWRANK,
                                       BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
        return launch


def pinned(fn, **constants):
    """fn with attributes of triton_backend (constants, a kernel; or of its heuristics,
    named heuristics_NAME) set for the call, restored after it."""
    def run():
        shipped = {}
        for name, value in constants.items():
            module, attr = ((tb.heuristics, name[len("heuristics_"):])
                            if name.startswith("heuristics_") else (tb, name))
            shipped[(module, attr)] = getattr(module, attr)
            setattr(module, attr, value)
        try:
            return fn()
        finally:
            for (module, attr), value in shipped.items():
                setattr(module, attr, value)
    return run


def with_loop_epilogue(fn):
    """fn with the former epilogue launched in place of the shipped one (captured so)."""
    return pinned(fn, split_k_epilogue_kernel=LoopEpilogue())


class LayerStack:
    """`stack` distinct layers of one shape, to time per layer as a decode step runs them
    (one graph, layers back to back): dense bf16 weights for cuBLAS, keys for frozen
    seeded layers, fp32 rank-`rank` adapters for LoRA ones. Each method returns a
    callable over x that returns the layers' outputs."""

    def __init__(self, out_f, in_f, stack=8, rank=16, lora_scaling=2.0, first_key=777):
        dev = torch.device("cuda")
        self.out_f, self.scale, self.lora_scaling = out_f, in_f ** -0.5, lora_scaling
        self.keys = [torch.tensor(first_key + i, device=dev) for i in range(stack)]
        self.adapters = [(torch.randn(rank, in_f, device=dev) * in_f ** -0.5,
                          torch.randn(out_f, rank, device=dev) * 0.05) for _ in range(stack)]
        self.weights = [torch.randn(out_f, in_f, device=dev, dtype=torch.bfloat16)
                        * self.scale for _ in range(stack)]

    def cublas(self, x):
        return lambda: [torch.nn.functional.linear(x, w) for w in self.weights]

    def frozen(self, x):
        import randfx.ops as ops
        return lambda: [ops.seeded_linear(x, key, self.out_f, self.scale, None, "pcg",
                                          "rademacher32") for key in self.keys]

    def lora(self, x):
        import randfx.ops as ops
        return lambda: [ops.seeded_lora_linear(x, key, a, b, self.scale, self.lora_scaling,
                                               None, "pcg", "rademacher32")
                        for key, (a, b) in zip(self.keys, self.adapters)]


def adapter_section(t_us, rank=16, lora_scaling=2.0, stack=8, timeline=True):
    """Per layer, eight distinct layers per graph (a decode step's regime), bf16 x, fp32
    adapters: cuBLAS on a dense W; frozen seeded layers with the shipped and the former
    epilogue; LoRA layers as shipped (the down projection inside the decode kernel), as
    before (torch's cast of x and addmm, then the kernel with u given) with the shipped
    and with the former epilogue. Every variant is checked against the shipped LoRA
    layer first. timeline: where the frozen and the shipped LoRA layers' time goes."""
    from randfx.ops import reference
    dev = torch.device("cuda")
    for out_f, in_f in ((4096, 4096), (11008, 4096), (4096, 11008), (8192, 8192),
                        (28672, 8192)):
        layers = LayerStack(out_f, in_f, stack, rank, lora_scaling)
        scale = layers.scale
        for rows in (1, 4, 16):
            x = torch.randn(rows, in_f, device=dev, dtype=torch.bfloat16)
            cublas, frozen, lora_fused = layers.cublas(x), layers.frozen(x), layers.lora(x)

            def lora_factors():
                out = []
                for key, (a, b) in zip(layers.keys, layers.adapters):
                    u, v = reference.lora_factors(x, a, b, lora_scaling)
                    out.append(tb.seeded_matmul(x, key, out_f, in_f, scale, False, None, u, v,
                                                "pcg", "rademacher32"))
                return out
            want = [y.float() for y in lora_fused()]
            times = {"cublas": t_us(cublas)}
            for label, fn in (("frozen", frozen), ("frozen_loop", with_loop_epilogue(frozen)),
                              ("lora_fused", lora_fused),
                              ("lora_fused_k128", pinned(lora_fused, LORA_DOWN_K=128)),
                              ("lora_fused_k512", pinned(lora_fused, LORA_DOWN_K=512)),
                              ("lora_factors", lora_factors),
                              ("lora_factors_loop", with_loop_epilogue(lora_factors))):
                if label.startswith("lora"):
                    got = fn()
                    err = max(((g.float() - w).abs().max() / w.abs().max()).item()
                              for g, w in zip(got, want))
                    if not err < 2e-2:
                        times[label] = f"WRONG {err:.2e}"
                        continue
                times[label] = t_us(fn)
            cu = times["cublas"]
            print(f"adapter {out_f}x{in_f} rows {rows}, us per layer (x cuBLAS): "
                  + ", ".join(f"{k} {v / stack:.2f} ({cu / v:.2f}x)" if isinstance(v, float)
                              else f"{k} {v}" for k, v in times.items()), flush=True)
            if timeline:
                for label, fn in (("frozen", frozen), ("lora_fused", lora_fused)):
                    print_timeline(f"  timeline {label}", fn, stack)
        del layers


def epilogue_section(t_us, rank=16, stack=8):
    """The split-K epilogue alone, eight launches per graph (us per launch), on synthetic
    partials of a decode call's shape: without an adapter, with one whose u comes whole or
    in per-split terms (a LoRA layer's, as shipped)."""
    dev = torch.device("cuda")
    for rows, m, splits in ((4096, 1, 8), (4096, 4, 8), (4096, 16, 8), (28672, 4, 4),
                            (28672, 16, 4), (11008, 4, 8)):
        partial = torch.randn(splits, m, rows, device=dev)
        u_parts = torch.randn(splits, m, rank, device=dev)
        u_whole = torch.randn(m, rank, device=dev)
        v = torch.randn(rows, rank, device=dev)
        y = torch.empty(m, rows, device=dev, dtype=torch.bfloat16)

        def run(u):
            def launches():
                for _ in range(stack):
                    tb.split_k_epilogue(partial, None, u, v if u is not None else None, y,
                                        0.5, 2.0)
            return launches
        want = (partial.sum(0) * 0.5 + 2.0 * u_parts.sum(0) @ v.T)
        times = {}
        for label, fn in (("none", run(None)), ("whole", run(u_whole)),
                          ("per_split", run(u_parts))):
            fn()
            if label.startswith("per_split"):
                err = ((y.float() - want).abs().max() / want.abs().max()).item()
                if not err < 1e-2:
                    times[label] = f"WRONG {err:.1e}"
                    continue
            times[label] = t_us(fn) / stack
        print(f"epilogue n {rows} m {m} splits {splits}, us per launch: "
              + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in times.items()), flush=True)


# (label, constants) compared by dependent_launch_section against the shipped dispatch:
# the main kernel releasing its epilogue at its exit always, or at its start up to 16
# rows (frozen layers), and every layer preparing x in a launch of its own (the nibble
# table at one row, fp8 terms above) now that the extra launch is placed early
DEPENDENT_VARIANTS = [("main_exit", {"DEPENDENT_EARLY_MAX_ROWS": 0}),
                      ("main_start16", {"DEPENDENT_EARLY_MAX_ROWS": 16}),
                      ("prep_all", {"heuristics_SIGN_PREP_MIN_WEIGHTS": 0,
                                    "heuristics_SIGN_FP8_MIN_WEIGHTS": 0})]


def replayed_outputs(fn):
    """fn's outputs (a list of tensors) from one replay of its CUDA graph."""
    fn()  # compiled and warm before the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    graph.replay()
    torch.cuda.synchronize()
    return [o.clone() for o in outputs]


def dependent_launch_section(t_us, rank=16, lora_scaling=2.0, stack=8):
    """Per layer, eight distinct layers per graph, bf16 x: frozen and LoRA layers with
    the decode chain launched serialized, as shipped (dependent where supported) and
    under DEPENDENT_VARIANTS, against cuBLAS; launch modes must give the same bits. Then
    where the time goes at 4096^2 (one and 16 rows)."""
    dev = torch.device("cuda")
    print(f"dependent launch supported: {tb._has_dependent_launch(dev)}", flush=True)
    for out_f, in_f in ((4096, 4096), (11008, 4096), (8192, 8192), (28672, 8192)):
        layers = LayerStack(out_f, in_f, stack, rank, lora_scaling, first_key=4242)
        for rows in (1, 2, 4, 8, 16):
            x = torch.randn(rows, in_f, device=dev, dtype=torch.bfloat16)
            cublas, frozen, lora = layers.cublas(x), layers.frozen(x), layers.lora(x)
            for label, fn in (("frozen", frozen), ("lora", lora)):
                times = {"cublas": t_us(cublas)}
                serialized = pinned(fn, DEPENDENT_LAUNCH=False)
                want = replayed_outputs(serialized)
                times["serialized"] = t_us(serialized)
                for variant, constants in [("shipped", {})] + DEPENDENT_VARIANTS:
                    run = pinned(fn, **constants)
                    got = replayed_outputs(run)
                    # preparing x differently changes the rounding, not the bits of W
                    same = (all(torch.equal(a, b) for a, b in zip(got, want))
                            if variant != "prep_all" else
                            max(((a.float() - b.float()).abs().max() / b.float().abs().max())
                                .item() for a, b in zip(got, want)) < 2e-2)
                    times[variant] = t_us(run) if same else "DIFFERENT"
                cu = times["cublas"]
                print(f"dependent launch {label} {out_f}x{in_f} rows {rows}, us per layer "
                      "(x cuBLAS): "
                      + ", ".join(f"{k} {v / stack:.2f} ({cu / v:.2f}x)" if isinstance(v, float)
                                  else f"{k} {v}" for k, v in times.items()), flush=True)
            if out_f == in_f == 4096 and rows in (1, 16):
                for label, fn in (("frozen", frozen), ("lora", lora)):
                    print_timeline(f"  timeline {label}", fn, stack)
        del layers


def launch_sweep_section(t_us, stack=8, only=""):
    """The decode kernels' launch configurations again (one row: the CUDA-core and nibble
    kernels; more: the tensor-core kernel's split and its fp8 form's tile), now that the decode chain is
    launched dependently: frozen layers, and LoRA ones at one row, eight per graph, us
    per layer against cuBLAS; every variant checked against the shipped one."""
    dev = torch.device("cuda")
    gemv = [({"SIGN_GEMV_CONFIGS": {1: (block_n, groups, warps)},
              "SIGN_GEMV_PROGRAMS_PER_SM": per_sm, "SIGN_GEMV_MAX_SPLITS": splits},
             f"gemv n{block_n} g{groups} w{warps} p{per_sm} s{splits}")
            for block_n, groups, warps in ((128, 8, 4), (64, 8, 4), (256, 8, 8), (128, 4, 4),
                                           (64, 4, 2), (128, 8, 8), (256, 4, 4))
            for per_sm, splits in ((8, 8), (16, 16), (16, 8), (4, 8))]
    nibble = [({"SIGN_NIBBLE_CONFIGS": {1: (block_n, groups, warps), 2: (128, 4, 4)},
                "SIGN_GEMV_PROGRAMS_PER_SM": per_sm, "SIGN_GEMV_MAX_SPLITS": splits},
               f"nibble n{block_n} g{groups} w{warps} p{per_sm} s{splits}")
              for block_n, groups, warps in ((256, 4, 4), (128, 4, 4), (256, 2, 4),
                                             (512, 4, 8), (128, 8, 4))
              for per_sm, splits in ((8, 8), (16, 16), (4, 8))]
    mma = [({"SIGN_MMA_PROGRAMS_PER_SM": per_sm, "SIGN_MMA_MAX_SPLITS": splits},
            f"mma p{per_sm} s{splits}")
           for per_sm, splits in ((8, 8), (16, 16), (16, 8), (8, 16), (4, 4), (12, 12))]
    fp8 = [({"SIGN_FP8_CONFIG": config}, "fp8 n{} g{} w{} s{}".format(*config))
           for config in ((128, 8, 4, 1), (64, 8, 4, 1), (128, 4, 4, 1), (128, 4, 4, 2),
                          (64, 4, 4, 2), (256, 8, 8, 1), (128, 8, 8, 1), (64, 8, 2, 1),
                          (128, 4, 8, 2), (256, 4, 8, 2))]
    # LoRA layers at one row: the CUDA-core kernel's tile and split cap (the nibble
    # kernel, which the dispatch takes for them, turned off), and the nibble kernel (x's
    # tables in a launch of its own) at each split cap; the adapter's own cap lifted
    lora_one_row = [({"SIGN_GEMV_CONFIGS": {1: config}, "SIGN_GEMV_PROGRAMS_PER_SM": per_sm,
                      "SIGN_GEMV_MAX_SPLITS": splits, "SIGN_LORA_MAX_SPLITS": splits,
                      "heuristics_SIGN_LORA_NIBBLE_MAX_ROWS": int(nibble)},
                     f"{'nibble' if nibble else 'gemv'} n{config[0]} g{config[1]} "
                     f"p{per_sm} s{splits}")
                    for config in ((256, 4, 4), (128, 8, 4)) for nibble in (False, True)
                    for per_sm, splits in ((16, 16), (16, 8), (8, 8))
                    if not nibble or config == (256, 4, 4)]
    sweeps = [((4096, 4096), 1, gemv, False), ((11008, 4096), 1, nibble, False),
              ((8192, 8192), 1, nibble, False), ((4096, 4096), 4, mma, False),
              ((4096, 4096), 16, mma, False), ((8192, 8192), 4, mma, False),
              ((8192, 8192), 16, mma, False), ((28672, 8192), 16, mma, False),
              ((4096, 4096), 1, lora_one_row, True), ((11008, 4096), 1, lora_one_row, True),
              ((4096, 11008), 1, lora_one_row, True),
              ((4096, 4096), 4, fp8, False), ((4096, 4096), 16, fp8, False),
              ((8192, 8192), 8, fp8, False), ((8192, 8192), 16, fp8, False),
              ((28672, 8192), 16, fp8, False)]
    if only in ("lora", "fp8"):
        sweeps = [sweep for sweep in sweeps
                  if (sweep[3] if only == "lora" else sweep[2] is fp8)]
    for (out_f, in_f), rows, variants, lora in sweeps:
        stacked = LayerStack(out_f, in_f, stack, first_key=99)
        x = torch.randn(rows, in_f, device=dev, dtype=torch.bfloat16)
        layers = stacked.lora(x) if lora else stacked.frozen(x)
        cu = t_us(stacked.cublas(x))
        want = [y.float() for y in layers()]
        results = []
        for constants, label in variants:
            run = pinned(layers, **constants)
            err = max(((g.float() - w).abs().max() / w.abs().max()).item()
                      for g, w in zip(run(), want))
            results.append((t_us(run) if err < 1e-2 else float("inf"), label))
        results.sort()
        print(f"launch sweep {'lora' if lora else 'frozen'} {out_f}x{in_f} rows {rows}, cuBLAS {cu / stack:.2f} us per layer; "
              + ", ".join(f"{label} {t / stack:.2f} ({cu / t:.2f}x)" for t, label in results),
              flush=True)
        del stacked


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sections", default="decode,training,pmv,sparse",
                   help="comma-separated: decode, training, pmv, sparse, sparse_pipeline, "
                        "eager, stress, timeline, chain, fused_fp8, lora_chain, lora_table, "
                        "lora_epilogue, mnist_host (MNIST files under .carry/mnist), "
                        "training_host, whole_k, adapter, epilogue, dependent_launch, "
                        "launch_sweep, launch_sweep_lora, launch_sweep_fp8")
    p.add_argument("--candidates",
                   default="mma,contig,join,flip,tc,group,gemv,nibble,packed,fp8",
                   help="decode candidate families to check and time")
    p.add_argument("--rows", default="", help="comma-separated rows of x (default 1,4,8,16)")
    p.add_argument("--variants", default="",
                   help="comma-separated variant names to keep (default: every variant of "
                        "the chosen candidates)")
    p.add_argument("--shapes", default="",
                   help="comma-separated OUTxIN weight shapes (default 4096x4096,8192x8192,"
                        "28672x8192)")
    args = p.parse_args()
    sections = args.sections.split(",")
    cuda = torch.cuda.is_available() and not args.quick
    dev = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    import randfx.ops as ops
    key = torch.tensor(12345, device=dev)
    shapes = [(4096, 4096), (8192, 8192), (28672, 8192)] if cuda else [(128, 256)]
    rows_list = [1, 4, 8, 16] if cuda else [1, 3]
    if args.rows:
        rows_list = [int(r) for r in args.rows.split(",")]
    if args.shapes:
        shapes = [tuple(int(d) for d in shape.split("x")) for shape in args.shapes.split(",")]
    group_variants = [  # (name, mode, block_n, unroll, warps, programs)
        ("g_fma_32u4", 0, 32, 4, 4, 528), ("g_fma_64u4", 0, 64, 4, 4, 528),
        ("g_fma_16u8", 0, 16, 8, 4, 1056), ("g_fma_32u8w8", 0, 32, 8, 8, 528),
        ("g_xor_32u4", 1, 32, 4, 4, 528), ("g_xor_64u4", 1, 64, 4, 4, 528),
        ("g_xor_16u8", 1, 16, 8, 4, 1056),
        ("g_dot_64u4", 2, 64, 4, 4, 528), ("g_dot_128u4", 2, 128, 4, 8, 528),
        ("g_dot_32u8", 2, 32, 8, 4, 1056), ("g_dot_64u8", 2, 64, 8, 4, 1056),
    ]
    mma_variants = [  # (name, block_n, groups (a multiple of 4), warps, stages, programs/SM
                      #  [, max splits (default 8)])
        ("m128g4w4", 128, 4, 4, 3, 8), ("m256g4w8", 256, 4, 8, 3, 8),
        ("m256g4w4", 256, 4, 4, 3, 8), ("m128g8w4", 128, 8, 4, 3, 8),
        ("m256g8w8", 256, 8, 8, 3, 8), ("m64g4w4", 64, 4, 4, 3, 8),
        ("m128g4w8", 128, 4, 8, 3, 8), ("m128g4w4p16", 128, 4, 4, 3, 16),
        ("m256g4w8p16", 256, 4, 8, 3, 16), ("m128g4w4p4", 128, 4, 4, 3, 4),
        ("m64g8w4", 64, 8, 4, 3, 8), ("m128g4w4s2", 128, 4, 4, 2, 8),
        ("m128g4w4p16x16", 128, 4, 4, 3, 16, 16), ("m64g4w4p16x16", 64, 4, 4, 3, 16, 16),
        ("m128g4w4p32x32", 128, 4, 4, 3, 32, 32), ("m256g4w8p16x16", 256, 4, 8, 3, 16, 16),
        # fewer than 4 warps: mma.sync (HMMA, both operands in registers) instead of wgmma
        ("m128g4w2", 128, 4, 2, 3, 8), ("m64g4w2", 64, 4, 2, 3, 8),
        ("m64g4w1", 64, 4, 1, 3, 8), ("m128g4w2p16", 128, 4, 2, 3, 16),
        ("m64g4w2p16", 64, 4, 2, 3, 16), ("m128g8w2", 128, 8, 2, 3, 8),
    ]
    join_variants = [("j128g2s3p8", 128, 2, 4, 3, 8)]  # the kernel shipped before
    flip_variants = [("flip64g16w4", 64, 16, 4, 8, 4),  # the one-row kernel shipped before
                     ("flip128g8w4", 128, 8, 4, 8, 8)]  # ... in today's shipped launch
    packed_variants = [("p128g4w4s1", 128, 4, 4, 1, 8), ("p128g4w4s2", 128, 4, 4, 2, 8),
                       ("p128g4w4", 128, 4, 4, 3, 8), ("p256g4w8s1", 256, 4, 8, 1, 8),
                       ("p256g4w4s1", 256, 4, 4, 1, 8), ("p128g8w4s1", 128, 8, 4, 1, 8),
                       ("p64g4w4s1", 64, 4, 4, 1, 8), ("p128g4w4s1p16", 128, 4, 4, 1, 16),
                       ("p64g4w4", 64, 4, 4, 3, 8), ("p64g4w4p4", 64, 4, 4, 3, 4),
                       ("p128g4w4p4", 128, 4, 4, 3, 4), ("p128g4w4p16", 128, 4, 4, 3, 16),
                       ("p256g4w8", 256, 4, 8, 3, 8), ("p128g8w4", 128, 8, 4, 3, 8),
                       ("p128g4w4s4", 128, 4, 4, 4, 8)]
    fp8_variants = [  # (name, block_n, groups, warps, stages, programs/SM, promote)
        ("f128g4w4", 128, 4, 4, 3, 8, True), ("f128g4w4s1", 128, 4, 4, 1, 8, True),
        ("f128g4w4s2", 128, 4, 4, 2, 8, True), ("f128g4w4i", 128, 4, 4, 3, 8, False),
        ("f128g4w4s1i", 128, 4, 4, 1, 8, False), ("f128g8w4s1", 128, 8, 4, 1, 8, True),
        ("f256g4w8", 256, 4, 8, 3, 8, True), ("f256g4w4s1", 256, 4, 4, 1, 8, True),
        ("f64g4w4", 64, 4, 4, 3, 8, True), ("f128g4w4p16", 128, 4, 4, 3, 16, True),
        ("f128g4w4p4", 128, 4, 4, 3, 4, True), ("f128g4w8", 128, 4, 8, 3, 8, True),
        ("f128g16w4s1", 128, 16, 4, 1, 8, True), ("f256g8w8s1", 256, 8, 8, 1, 8, True),
        ("f64g8w4s1", 64, 8, 4, 1, 8, True), ("f128g8w4s1p16", 128, 8, 4, 1, 16, True),
        ("f128g8w4s1p4", 128, 8, 4, 1, 4, True), ("f128g8w4s1i", 128, 8, 4, 1, 8, False),
        ("f256g8w4s1", 256, 8, 4, 1, 8, True), ("f64g8w4s1p16", 64, 8, 4, 1, 16, True)]
    contig_variants = [("c128g4w4", 128, 4, 4, 3, 8), ("c256g4w8", 256, 4, 8, 3, 8),
                       ("c128g8w4", 128, 8, 4, 3, 8), ("c128g4w4s4", 128, 4, 4, 4, 8),
                       ("c128g4w4s2", 128, 4, 4, 2, 8)]
    gemv_variants = [  # (name, block_n, groups, warps, programs per SM, max splits, fused)
        ("v64g16w4", 64, 16, 4, 8, 4, None), ("v64g16w4s8", 64, 16, 4, 16, 8, None),
        ("v32g16w4", 32, 16, 4, 8, 4, None), ("v32g8w4s8", 32, 8, 4, 16, 8, None),
        ("v64g8w4s8", 64, 8, 4, 16, 8, None), ("v64g16w8", 64, 16, 8, 8, 4, None),
        ("v128g8w4", 128, 8, 4, 8, 8, None), ("v32g16w2s8", 32, 16, 2, 16, 8, None),
        ("f64g16w4", 64, 16, 4, 8, 4, "cached"), ("f64g16w4s8", 64, 16, 4, 16, 8, "cached"),
        ("f32g8w4s8", 32, 8, 4, 16, 8, "cached"), ("f64g8w4s8", 64, 8, 4, 16, 8, "cached"),
        ("f32g16w4s8", 32, 16, 4, 16, 8, "cached"), ("f64g16w4z", 64, 16, 4, 8, 4, "zeroed"),
        ("f64g8w4s8z", 64, 8, 4, 16, 8, "zeroed"),
        ("v128g8w4p16", 128, 8, 4, 16, 8, None), ("v256g8w8", 256, 8, 8, 8, 8, None),
        ("v128g4w4", 128, 4, 4, 8, 8, None), ("v256g4w4", 256, 4, 4, 8, 8, None),
        ("v128g8w8", 128, 8, 8, 8, 8, None), ("v256g8w4", 256, 8, 4, 8, 8, None),
        ("v128g16w4", 128, 16, 4, 8, 8, None), ("v128g8w2", 128, 8, 2, 8, 8, None),
        ("f128g8w4", 128, 8, 4, 8, 8, "cached"), ("f128g8w4z", 128, 8, 4, 8, 8, "zeroed"),
        ("f128g8w4s16", 128, 8, 4, 16, 16, "cached"), ("v128g8w4s16", 128, 8, 4, 16, 16, None),
    ]
    nibble_variants = [  # (name, block_n, groups, warps, programs per SM, max splits)
        ("n256g4w4", 256, 4, 4, 8, 8), ("n128g4w4", 128, 4, 4, 8, 8),
        ("n128g8w4", 128, 8, 4, 8, 8), ("n256g4w8", 256, 4, 8, 8, 8),
        ("n128g4w4p16", 128, 4, 4, 16, 16), ("n256g4w4p16", 256, 4, 4, 16, 16),
        ("n64g4w2", 64, 4, 2, 8, 8), ("n128g4w4p4", 128, 4, 4, 4, 4),
    ]
    variants = [  # (name, dist, bits, block_n, block_k, warps, stages, programs)
        ("tc64x128", "rademacher32", False, 64, 128, 4, 2, 528),
        ("tc64x128bits", "rademacher32", True, 64, 128, 4, 2, 528),
        ("tc128x128bits", "rademacher32", True, 128, 128, 8, 2, 528),
        ("tc64x256bits", "rademacher32", True, 64, 256, 4, 2, 528),
        ("tc32x256bits", "rademacher32", True, 32, 256, 4, 2, 528),
        ("tc16x256bits", "rademacher32", True, 16, 256, 4, 2, 1056),
        ("tc64x128bits_p1k", "rademacher32", True, 64, 128, 4, 2, 1056),
        ("tc64x128bits_p264", "rademacher32", True, 64, 128, 4, 2, 264),
        ("tc64x128_u8x4", "uniform8x4", False, 64, 128, 4, 2, 528),
        ("tc64x128_unif", "uniform", False, 64, 128, 4, 2, 528),
    ]
    if not cuda:
        variants = [(n, d, b, min(bn, 32), 64, w, s, 8) for n, d, b, bn, bk, w, s, pr
                    in variants[:2] + variants[-2:]]
    from triton.testing import do_bench

    def t_us(fn):
        if not cuda:
            return float("nan")
        return 1e3 * float(do_bench(graphed(fn), warmup=10, rep=50, return_mode="median"))

    results = []
    if cuda:
        for name, fn in (("training", training_section), ("pmv", pmv_section),
                         ("sparse", sparse_section),
                         ("sparse_pipeline", sparse_pipeline_section),
                         ("eager", eager_section),
                         ("stress", stress_section), ("timeline", timeline_section),
                         ("chain", chain_section), ("fused_fp8", fused_fp8_section),
                         ("lora_chain", lora_chain_section),
                         ("lora_table", lora_table_section),
                         ("lora_epilogue", lora_epilogue_section),
                         ("mnist_host", mnist_host_section), ("whole_k", whole_k_section),
                         ("training_host", training_host_section),
                         ("adapter", adapter_section), ("epilogue", epilogue_section),
                         ("dependent_launch", dependent_launch_section),
                         ("launch_sweep", launch_sweep_section),
                         ("launch_sweep_lora",
                          functools.partial(launch_sweep_section, only="lora")),
                         ("launch_sweep_fp8",
                          functools.partial(launch_sweep_section, only="fp8"))):
            if name in sections:
                try:
                    fn(t_us)
                except Exception as error:
                    print(f"section {name} failed: {type(error).__name__}: {error}")
    if "decode" not in sections:
        return results
    candidates = args.candidates.split(",")
    if "tc" not in candidates:
        variants = []
    if "group" not in candidates:
        group_variants = []
    if "mma" not in candidates:
        mma_variants = []
    if "join" not in candidates:
        join_variants = []
    if "flip" not in candidates:
        flip_variants = []
    if "contig" not in candidates:
        contig_variants = []
    if "packed" not in candidates:
        packed_variants = []
    if "fp8" not in candidates:
        fp8_variants = []
    if "gemv" not in candidates:
        gemv_variants = []
    if "nibble" not in candidates:
        nibble_variants = []
    if not cuda:
        nibble_variants = [(n, min(bn, 32), min(g, 2), 1, p, sp)
                           for n, bn, g, w, p, sp in nibble_variants[:2]]
    if args.variants:
        keep = set(args.variants.split(","))
        (variants, group_variants, mma_variants, join_variants, flip_variants, contig_variants,
         gemv_variants, nibble_variants, packed_variants, fp8_variants) = (
            [v for v in family if v[0] in keep]
            for family in (variants, group_variants, mma_variants, join_variants, flip_variants,
                           contig_variants, gemv_variants, nibble_variants, packed_variants,
                           fp8_variants))
    if not cuda:
        gemv_variants = [(n, min(bn, 16), min(g, 2), w, p, sp, f)
                         for n, bn, g, w, p, sp, f in gemv_variants]
    if not cuda:
        mma_variants = [(n, min(bn, 32), g, w, s, 8, *rest)
                        for n, bn, g, w, s, _, *rest in mma_variants]
        join_variants = [(n, min(bn, 32), g, w, s, 8) for n, bn, g, w, s, _ in join_variants]
        contig_variants = [(n, min(bn, 32), g, w, s, 8)
                           for n, bn, g, w, s, _ in contig_variants]
        packed_variants = [(n, min(bn, 32), g, w, s, 8)
                           for n, bn, g, w, s, _ in packed_variants[:1]]
        fp8_variants = [(n, min(bn, 32), g, w, s, 8, pr)
                        for n, bn, g, w, s, _, pr in fp8_variants[:1]]
    for out_f, in_f in shapes:
        scale = 1.0 / math.sqrt(in_f)
        w = torch.randn(out_f, in_f, device=dev, dtype=dtype)
        for rows in rows_list:
            x = torch.randn(rows, in_f, device=dev, dtype=dtype)
            dense = t_us(lambda: torch.nn.functional.linear(x, w))
            line = {"shape": f"{out_f}x{in_f}", "rows": rows, "cublas_us": dense}
            for dist in ("uniform8x4", "rademacher32"):
                line[f"shipped_{dist}"] = dense / t_us(
                    lambda: ops.seeded_linear(x, key, out_f, scale, None, "pcg", dist))
            def check_then_time(dist, run, error_key=None):
                """dense / variant time, or why the variant has no time; error_key: also
                record the largest error against the fp32 result, relative to its largest
                value."""
                ref = ops.seeded_linear(x.float(), key, out_f, scale, None, "pcg", dist)
                try:
                    got = run()
                except Exception as error:  # a variant that fails to compile: say so
                    return f"error {type(error).__name__}: {str(error)[:80]}"
                err = ((got.float() - ref).norm() / ref.norm()).item()
                if not err < 1e-2:
                    return f"WRONG rel err {err:.2e}"
                if error_key:
                    worst = (got.float() - ref).abs().max() / ref.abs().max()
                    line[error_key] = f"{worst.item():.1e}"
                ratio = dense / t_us(run)
                # again after the timed replays: state a kernel keeps between calls
                # (the last-split counters) must still be right
                err = ((run().float() - ref).norm() / ref.norm()).item()
                return ratio if err < 1e-2 else f"WRONG after timing, rel err {err:.2e}"

            mma_default = (tb.SIGN_MMA_CONFIG, tb.SIGN_MMA_PROGRAMS_PER_SM,
                           tb.SIGN_MMA_MAX_SPLITS)
            for name, bn, groups, warps, stages, programs, *max_splits in mma_variants:
                line[name] = check_then_time("rademacher32", functools.partial(
                    shipped_mma, x, key, out_f, scale, bn, groups, warps, stages, programs,
                    *max_splits))
            (tb.SIGN_MMA_CONFIG, tb.SIGN_MMA_PROGRAMS_PER_SM,
             tb.SIGN_MMA_MAX_SPLITS) = mma_default
            for name, bn, groups, warps, stages, programs in contig_variants:
                line[name] = check_then_time("rademacher32", functools.partial(
                    contig_mma, x, key, out_f, scale, bn, groups, warps, stages, programs))
            for name, bn, groups, warps, stages, programs in packed_variants:
                line[name] = check_then_time("rademacher32", functools.partial(
                    packed_mma, x, key, out_f, scale, bn, groups, warps, stages, programs),
                    f"{name}_err")
            fp8_default = tb.SIGN_FP8_PROMOTE, tb.SIGN_FP8_CONFIG
            for name, bn, groups, warps, stages, programs, promote in fp8_variants:
                line[name] = check_then_time("rademacher32", functools.partial(
                    fp8_mma, x, key, out_f, scale, bn, groups, warps, stages, programs,
                    promote), f"{name}_err")
            tb.SIGN_FP8_PROMOTE, tb.SIGN_FP8_CONFIG = fp8_default
            tb.SIGN_MMA_PROGRAMS_PER_SM = mma_default[1]
            (tb.SIGN_MMA_CONFIG, tb.SIGN_MMA_PROGRAMS_PER_SM,
             tb.SIGN_MMA_MAX_SPLITS) = mma_default
            for name, bn, groups, warps, programs, max_splits in flip_variants:
                if rows == 1:
                    line[name] = check_then_time("rademacher32", functools.partial(
                        flip_gemv, x, key, out_f, scale, bn, groups, warps, programs,
                        max_splits))
            for name, bn, groups, warps, stages, programs in join_variants:
                line[name] = check_then_time("rademacher32", functools.partial(
                    join_mma, x, key, out_f, scale, bn, groups, warps, stages, programs))
            gemv_default = (tb.SIGN_GEMV_CONFIGS, tb.SIGN_GEMV_PROGRAMS_PER_SM,
                            tb.SIGN_GEMV_MAX_SPLITS)
            for name, bn, groups, warps, programs, max_splits, fused in gemv_variants:
                if rows > 1:
                    continue
                line[name] = check_then_time("rademacher32", functools.partial(
                    gemv_variant, x, key, out_f, scale, bn, groups, warps, programs,
                    max_splits, fused))
            (tb.SIGN_GEMV_CONFIGS, tb.SIGN_GEMV_PROGRAMS_PER_SM,
             tb.SIGN_GEMV_MAX_SPLITS) = gemv_default
            nibble_default = (tb.SIGN_NIBBLE_CONFIGS, tb.SIGN_GEMV_PROGRAMS_PER_SM,
                              tb.SIGN_GEMV_MAX_SPLITS)
            for name, bn, groups, warps, programs, max_splits in nibble_variants:
                if rows <= 2:
                    line[name] = check_then_time("rademacher32", functools.partial(
                        shipped_nibble, x, key, out_f, scale, bn, groups, warps, programs,
                        max_splits))
            (tb.SIGN_NIBBLE_CONFIGS, tb.SIGN_GEMV_PROGRAMS_PER_SM,
             tb.SIGN_GEMV_MAX_SPLITS) = nibble_default
            for name, dist, bits, bn, bk, warps, stages, programs in variants:
                line[name] = check_then_time(dist, functools.partial(
                    tc_decode, x, key, out_f, scale, dist, bn, bk, warps, stages, programs,
                    bits))
            for name, mode, bn, unroll, warps, programs in group_variants:
                if mode == 1 and rows > 1:
                    continue
                if not cuda:
                    bn, programs = min(bn, 32), 8
                line[name] = check_then_time("rademacher32", functools.partial(
                    group_decode, x, key, out_f, scale, mode, bn, unroll, warps, programs))
            results.append(line)
            print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in line.items()},
                  flush=True)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
