"""Triton kernels that multiply by a generated matrix W = scale * R(key) of shape
(rows, cols), R at counter r * cols + c, without storing it:

- `seeded_matmul_kernel`: y[m, n] = sum_k x[m, k] W'[n, k] with W' = W (x @ W^T, the
  forward) or W' = W^T (x @ W, grad_x in the backward). Each program owns a [BLOCK_M,
  BLOCK_N] tile of y and generates the matching W tiles in registers as it walks k, in
  W's own row-major layout (so grouped multi-value hashes follow W's rows either way).
  Epilogue: * scale, + u @ v^T (a rank-r adapter term), + bias, cast, store.
  USE_DOT: tensor-core tl.dot (needs BLOCK_M >= 16); otherwise a broadcast multiply-sum
  in hash order (`tiles.accumulate_rows`), which is what decode (1-8 rows) wants.
- `rademacher32_gemv_kernel` + `split_k_epilogue_kernel`: decode of one row for the
  rademacher32 stream, the fastest one: every thread holds one 32-column hash group of
  many weight rows, tests the 32 bits at compile-time positions and adds x where the
  weight is -1 (a predicated add), y = sum(x) - 2 * that sum. A [BLOCK_N, GROUPS] tile
  per program and a split of K fill the GPU even for short outputs; the epilogue kernel
  sums the split partials.
- `rademacher32_nibble_table_kernel` + `rademacher32_nibble_kernel`: decode of 1-2 rows
  of large layers: x's 16 signed sums of every 4 columns are tabulated once, then each
  nibble of a hash (4 weights) costs one shared-memory lookup and one add instead of
  four predicated adds; same partials and epilogue kernel.
- `rademacher32_mma_kernel`: the same decode (2-16 rows) on tensor cores: the W tile,
  unpacked from hashes by `tiles.rademacher32_pair_tile` with its columns permuted (x is
  loaded in the same order), is the dot's first operand
  (swap-AB: W's rows fill the MMA's M, the few rows of x its N), same partials and
  epilogue kernel. PACKED_X: x was first written in that column order, padded to
  BLOCK_M rows and whole steps, by `rademacher32_pack_x_kernel`, so its tile loads are
  contiguous, unmasked and pipelined (large layers, where that launch pays).
- An adapter (LoRA) at decode rows: the three rademacher32 kernels take one more program
  per rank and K split (HAS_DOWN), which computes that split's share of x A^T
  (`_lowrank_down_split`) beside the programs generating W; `split_k_epilogue_kernel`
  sums the shares and adds c u B^T (`_add_lowrank`).
- The rademacher32 decode chain's kernels (x's preparation, the three decode kernels, the
  epilogue) start with `await_previous_kernel(DEPENDENT_LAUNCH)`, so the host may launch
  them with programmatic dependent launch (kernels/dependent_launch.py).
- `materialize_kernel`: writes W (scaled, cast; optionally + an adapter B A) for the
  materialise-then-cuBLAS path and for `generate_weight`.
Launch parameters and the shape heuristic live in randfx/ops/triton_backend.py.
"""

import triton
import triton.language as tl

from ..generators.device import hash_lo
from .dependent_launch import await_previous_kernel
from .tiles import (accumulate_rows, launch_key, rademacher32_operand_columns,
                    rademacher32_pair_tile, rademacher32_quad_tile, stream_tile)


@triton.jit
def _dot(a, b, acc, DOT_IN_FP32: tl.constexpr):
    """acc + a @ b on tensor cores with fp32 accumulation, in the operand dtype (exact
    fp32 when the activations are fp32). DOT_IN_FP32 (set under TRITON_INTERPRET=1, whose
    bf16 tl.dot is broken in triton 3.9) keeps W rounded to the operand dtype but
    multiplies in fp32."""
    if a.dtype == tl.float32:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    elif DOT_IN_FP32:
        acc = tl.dot(a.to(tl.float32), b.to(a.dtype).to(tl.float32), acc,
                     input_precision="ieee")
    else:
        acc = tl.dot(a, b.to(a.dtype), acc)
    return acc


@triton.jit
def _add_lowrank(acc, u_ptr, v_ptr, i, I, j, J, rank, u_splits, lowrank_scale, stride_us,
                 stride_ui, stride_ur, stride_vj, stride_vr, U_SPLITS_PAD: tl.constexpr,
                 RANK_BLOCK: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    """acc[i, j] + lowrank_scale * sum_r u[i, r] v[j, r]: a rank-r term (an adapter) added
    to a [BLOCK_I, BLOCK_J] tile, u given as the sum of u_splits (at most U_SPLITS_PAD)
    partial terms u[s] (stride_us apart: the decode kernels' split of an adapter's down
    projection, or one whole u). RANK_BLOCK ranks at a time, as tiles (a rank at a time read v's columns one
    strided element per row, and waited on every rank's loads in turn), multiplied on
    tensor cores where all three sides are at least 16, else as a broadcast sum."""
    for r0 in range(0, rank, RANK_BLOCK):
        r = r0 + tl.arange(0, RANK_BLOCK)
        u_at = u_ptr + i[:, None] * stride_ui + r[None, :] * stride_ur
        u_mask = (i < I)[:, None] & (r < rank)[None, :]
        # (the parentheses: Triton 3.2 and 3.3 refuse a chain of three boolean operands)
        if BLOCK_I == 1 or ((BLOCK_I >= 16 and BLOCK_J >= 16) and RANK_BLOCK >= 16):
            # a load per share, unrolled: faster here than the 3-D tile below (H200, 8
            # shares: 2.5 against 2.8 us per epilogue at one row, 4.0 against 4.7 at 16)
            u = tl.load(u_at, mask=u_mask, other=0.0).to(tl.float32)
            for s in tl.static_range(1, U_SPLITS_PAD):
                u += tl.load(u_at + s * stride_us,
                             mask=u_mask & (tl.full((1, 1), s, tl.int32) < u_splits),
                             other=0.0).to(tl.float32)
        else:
            # 2-8 rows: the shares as one 3-D tile (a load per share cost 5.2 against 3.2
            # us per epilogue at 4 rows and 8 shares)
            s = tl.arange(0, U_SPLITS_PAD)
            u = tl.load(u_at[None, :, :] + s[:, None, None] * stride_us,
                        mask=(s < u_splits)[:, None, None] & u_mask[None, :, :], other=0.0)
            u = tl.sum(u.to(tl.float32), axis=0)
        v = tl.load(v_ptr + j[:, None] * stride_vj + r[None, :] * stride_vr,
                    mask=(j < J)[:, None] & (r < rank)[None, :], other=0.0).to(tl.float32)
        if (BLOCK_I >= 16 and BLOCK_J >= 16) and RANK_BLOCK >= 16:
            acc = tl.dot(u * lowrank_scale, tl.trans(v), acc, input_precision="ieee")
        else:
            acc += tl.sum((u * lowrank_scale)[:, None, :] * v[None, :, :], axis=2)
    return acc


@triton.jit
def _epilogue_store(acc, y_ptr, bias_ptr, u_ptr, v_ptr, m, M, n, N, rank, scale,
                    lowrank_scale, stride_us, stride_um, stride_ur, stride_vn, stride_vr,
                    stride_ym, stride_yn, HAS_BIAS: tl.constexpr, HAS_LOWRANK: tl.constexpr,
                    u_splits, U_SPLITS_PAD: tl.constexpr, RANK_BLOCK: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """y[m, n] = acc * scale (+ lowrank_scale * u @ v^T, u in u_splits terms) (+ bias),
    cast to y's dtype."""
    acc = acc * scale
    if HAS_LOWRANK:
        acc = _add_lowrank(acc, u_ptr, v_ptr, m, M, n, N, rank, u_splits, lowrank_scale,
                           stride_us, stride_um, stride_ur, stride_vn, stride_vr,
                           U_SPLITS_PAD, RANK_BLOCK, BLOCK_M, BLOCK_N)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=n < N, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + m[:, None] * stride_ym + n[None, :] * stride_yn,
             acc.to(y_ptr.dtype.element_ty), mask=(m < M)[:, None] & (n < N)[None, :])


@triton.jit
def _lowrank_down_split(x_ptr, a_ptr, down_ptr, M, N, K, rank, k_per_split, stride_xm,
                        stride_xk, stride_ar, stride_ak, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, DOWN_K: tl.constexpr):
    """down[split, m, r] = sum over k in the split of x[m, k] a[r, k], in fp32: rank r of
    an adapter's down projection x A^T over one split of K, DOWN_K columns at a time. The
    decode kernels run it in programs of their own launch placed past the output's
    cdiv(N, BLOCK_N) tiles, program (tiles + r, split), beside the programs that generate
    W, in place of a cast of x and a GEMM launched on their own
    (`split_k_epilogue_kernel` sums the splits)."""
    r = tl.program_id(0) - tl.cdiv(N, BLOCK_N)
    split = tl.program_id(1)
    k_begin = split * k_per_split
    k_end = tl.minimum(K, k_begin + k_per_split)
    m = tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_M, DOWN_K), dtype=tl.float32)
    for k0 in range(k_begin, k_end, DOWN_K):
        k = k0 + tl.arange(0, DOWN_K)
        ak = tl.load(a_ptr + r * stride_ar + k * stride_ak, mask=k < k_end, other=0.0)
        xk = tl.load(x_ptr + m[:, None] * stride_xm + k[None, :] * stride_xk,
                     mask=(m < M)[:, None] & (k < k_end)[None, :], other=0.0)
        acc += xk.to(tl.float32) * ak.to(tl.float32)[None, :]
    tl.store(down_ptr + (split * M + m) * rank + r, tl.sum(acc, axis=1), mask=m < M)


@triton.jit(do_not_specialize=["M", "N", "K", "rank", "scale", "window"])
def seeded_matmul_kernel(x_ptr, key_ptr, bias_ptr, u_ptr, v_ptr, y_ptr,
                         M, N, K, rank, scale, window,
                         stride_xm, stride_xk, stride_um, stride_ur, stride_vn, stride_vr,
                         stride_ym, stride_yn,
                         GENERATOR: tl.constexpr, DIST: tl.constexpr,
                         LOG2_VALUES: tl.constexpr, NARROW: tl.constexpr,
                         TRANSPOSE: tl.constexpr, HAS_BIAS: tl.constexpr,
                         HAS_LOWRANK: tl.constexpr, USE_DOT: tl.constexpr,
                         DOT_IN_FP32: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         RANK_BLOCK: tl.constexpr = 1):
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    key = launch_key(key_ptr, window, NARROW)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_start = (pid_n * BLOCK_N).to(tl.int64)
    N64 = N.to(tl.int64)
    K64 = K.to(tl.int64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # without tensor cores, products are summed over k only once after the loop (a
    # reduction across threads per step costs more than the products themselves); the
    # forward keeps one partial sum per (row, weight row, hash group)
    if USE_DOT:
        products = tl.zeros((1, 1, 1), dtype=tl.float32)  # unused
    elif TRANSPOSE:
        products = tl.zeros((BLOCK_M, BLOCK_K, BLOCK_N), dtype=tl.float32)
    else:
        products = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_K >> LOG2_VALUES), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if TRANSPOSE:
            # W is (K, N): the tile is rows k, cols n, already in the k-major order of a @ b
            k = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + m[:, None] * stride_xm + k[None, :] * stride_xk,
                        mask=(m < M)[:, None] & (k < K)[None, :], other=0.0)
            w = stream_tile(k.to(tl.int64) * N64, n_start, key, BLOCK_K, BLOCK_N,
                            GENERATOR, DIST, LOG2_VALUES, NARROW)
            if USE_DOT:
                acc = _dot(x, w, acc, DOT_IN_FP32)
            else:
                products += x.to(tl.float32)[:, :, None] * w[None, :, :]
        elif USE_DOT:
            # W is (N, K): the tile is rows n, cols k; its transpose feeds a @ b
            k = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + m[:, None] * stride_xm + k[None, :] * stride_xk,
                        mask=(m < M)[:, None] & (k < K)[None, :], other=0.0)
            w = stream_tile(n.to(tl.int64) * K64, k0, key, BLOCK_N, BLOCK_K,
                            GENERATOR, DIST, LOG2_VALUES, NARROW)
            acc = _dot(x, tl.trans(w), acc, DOT_IN_FP32)
        else:  # decode GEMV: reduce along W's rows in hash order
            products = accumulate_rows(products, x_ptr, m, M, stride_xm, stride_xk, k0, K,
                                       n.to(tl.int64) * K64, key, BLOCK_N, BLOCK_K, GENERATOR,
                                       DIST, LOG2_VALUES, NARROW)
    if not USE_DOT:
        if TRANSPOSE:
            acc = tl.sum(products, axis=1)
        else:
            acc = tl.sum(products, axis=2)
    _epilogue_store(acc, y_ptr, bias_ptr, u_ptr, v_ptr, m, M, n, N, rank, scale, 1.0, 0,
                    stride_um, stride_ur, stride_vn, stride_vr, stride_ym, stride_yn, HAS_BIAS,
                    HAS_LOWRANK, 1, 1, RANK_BLOCK, BLOCK_M, BLOCK_N)


@triton.jit
def rademacher32_gemv_partial(x_ptr, key_ptr, M, K, k_begin, k_end, window, stride_xm,
                              stride_xk, n, GENERATOR: tl.constexpr, BLOCK_M: tl.constexpr,
                              BLOCK_N: tl.constexpr, GROUPS: tl.constexpr):
    """[BLOCK_M, BLOCK_N] fp32: sum over k in [k_begin, k_end) of x[m, k] R[n, k], R
    rademacher32 (value k of row n = bit k % 32 of the hash of group (n K + k) / 32, +1
    or -1). One row of x (BLOCK_M == 1: more rows go to tensor cores). Needs K % 32 == 0,
    k_begin a multiple of 32 * GROUPS, and every counter in one 2^32-group window (a
    NARROW key)."""
    tl.static_assert(BLOCK_M == 1)
    key = launch_key(key_ptr, window, True)
    m = tl.arange(0, BLOCK_M)
    group = tl.arange(0, GROUPS)
    row_group = ((n.to(tl.int64) * K.to(tl.int64)) >> 5).to(tl.uint32)
    # y = sum(x) - 2 * (the sum of x over the set bits, the -1 weights): a predicated add
    # per weight (a bit test straight into a predicate, then the add)
    acc = tl.zeros((BLOCK_M, BLOCK_N, GROUPS), dtype=tl.float32)
    for k0 in range(k_begin, k_end, 32 * GROUPS):
        g = k0 // 32 + group
        h = hash_lo(row_group[:, None] + g.to(tl.uint32)[None, :], key, GENERATOR)
        for position in tl.static_range(32):
            k = g * 32 + position
            xk = tl.load(x_ptr + m[:, None] * stride_xm + k[None, :] * stride_xk,
                         mask=(m < M)[:, None] & (k < K)[None, :], other=0.0).to(tl.float32)
            minus = ((h >> position) & 1) != 0
            acc = tl.where(minus[None, :, :], acc + xk[:, None, :], acc)
    x_sum = tl.zeros((BLOCK_M, 32 * GROUPS), dtype=tl.float32)
    for k0 in range(k_begin, k_end, 32 * GROUPS):
        k = k0 + tl.arange(0, 32 * GROUPS)
        x_sum += tl.load(x_ptr + m[:, None] * stride_xm + k[None, :] * stride_xk,
                         mask=(m < M)[:, None] & (k < K)[None, :], other=0.0).to(tl.float32)
    return tl.sum(x_sum, axis=1)[:, None] - 2.0 * tl.sum(acc, axis=2)


@triton.jit(do_not_specialize=["M", "N", "K", "k_per_split", "window", "rank"])
def rademacher32_gemv_kernel(x_ptr, key_ptr, partial_ptr, M, N, K, k_per_split, window,
                             stride_xm, stride_xk, down_x_ptr, a_ptr, down_ptr, rank,
                             stride_dxm, stride_dxk, stride_ar, stride_ak,
                             GENERATOR: tl.constexpr, BLOCK_M: tl.constexpr,
                             BLOCK_N: tl.constexpr, GROUPS: tl.constexpr,
                             HAS_DOWN: tl.constexpr = False, DOWN_K: tl.constexpr = 128,
                             DEPENDENT_LAUNCH: tl.constexpr = ""):
    """partial[split, m, n] = rademacher32_gemv_partial over the split's k. HAS_DOWN: rank
    programs more per split compute down[split] = that split's share of down_x @ a^T
    (`_lowrank_down_split`, DOWN_K columns at a time).
    Grid: (cdiv(N, BLOCK_N) (+ rank), splits); k_per_split a multiple of 32 * GROUPS."""
    await_previous_kernel(DEPENDENT_LAUNCH)
    if tl.program_id(0) * BLOCK_N >= N:  # past the output's tiles: the adapter's programs
        if HAS_DOWN:
            _lowrank_down_split(down_x_ptr, a_ptr, down_ptr, M, N, K, rank, k_per_split,
                                stride_dxm, stride_dxk, stride_ar, stride_ak, BLOCK_M, BLOCK_N,
                                DOWN_K)
    else:
        pid_s = tl.program_id(1)
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        m = tl.arange(0, BLOCK_M)
        k_begin = pid_s * k_per_split
        k_end = tl.minimum(K, k_begin + k_per_split)
        partial = rademacher32_gemv_partial(x_ptr, key_ptr, M, K, k_begin, k_end, window,
                                            stride_xm, stride_xk, n, GENERATOR, BLOCK_M,
                                            BLOCK_N, GROUPS)
        tl.store(partial_ptr + pid_s * M * N + m[:, None] * N + n[None, :], partial,
                 mask=(m < M)[:, None] & (n < N)[None, :])


@triton.jit(do_not_specialize=["M", "N", "K", "k_per_split", "window", "rank"])
def rademacher32_mma_kernel(x_ptr, key_ptr, partial_ptr, M, N, K, k_per_split, window,
                            stride_xm, stride_xk, down_x_ptr, a_ptr, down_ptr, rank,
                            stride_dxm, stride_dxk, stride_ar, stride_ak, x_scale_ptr,
                            GENERATOR: tl.constexpr, DOT_IN_FP32: tl.constexpr,
                            EVEN_K: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_N: tl.constexpr, GROUPS: tl.constexpr,
                            PACKED_X: tl.constexpr = False, FP8_X: tl.constexpr = False,
                            PROMOTE: tl.constexpr = False, HAS_DOWN: tl.constexpr = False,
                            DOWN_K: tl.constexpr = 128, DEPENDENT_LAUNCH: tl.constexpr = ""):
    """partial[split, m, n] as rademacher32_gemv_kernel, on tensor cores: acc[n, m] +=
    R[n, k-tile] @ x[m, k-tile]^T with R's tile built in registers from one hash per 32
    values, its columns in `rademacher32_operand_columns(GROUPS, 2)` order and x's rows
    loaded in the same order. x in bf16 or fp16 (R is exact in either); BLOCK_M >= 16; GROUPS a
    multiple of 4. Same grid as rademacher32_gemv_kernel, k_per_split a multiple of
    32 * GROUPS; EVEN_K: K is too.
    FP8_X: x was packed by `rademacher32_pack_x_fp8_kernel` into two e4m3 terms per row
    (rows 2 m and 2 m + 1, x = (hi + lo / 16) * x_scale[split, m]) in
    `rademacher32_operand_columns(GROUPS, 4)` order, and R's tile is e4m3 too
    (`rademacher32_quad_tile`, half the integer work per weight of the 16-bit tile). The
    tensor cores sum fp8 products with fewer than fp32's mantissa bits; PROMOTE starts
    each step's sum from zero and adds it to the accumulator on the CUDA cores, in fp32.
    HAS_DOWN: as rademacher32_gemv_kernel's, from down_x (x itself, never its packed
    copy)."""
    await_previous_kernel(DEPENDENT_LAUNCH)
    if tl.program_id(0) * BLOCK_N >= N:  # past the output's tiles: the adapter's programs
        if HAS_DOWN:
            _lowrank_down_split(down_x_ptr, a_ptr, down_ptr, M, N, K, rank, k_per_split,
                                stride_dxm, stride_dxk, stride_ar, stride_ak, BLOCK_M, BLOCK_N,
                                DOWN_K)
    else:
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        key = launch_key(key_ptr, window, True)
        n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m = tl.arange(0, BLOCK_M)
        X_ROWS: tl.constexpr = 2 * BLOCK_M if FP8_X else BLOCK_M
        x_rows = tl.arange(0, X_ROWS)
        group = tl.arange(0, GROUPS)
        row_group = ((n.to(tl.int64) * K.to(tl.int64)) >> 5).to(tl.uint32)
        acc = tl.zeros((BLOCK_N, X_ROWS), dtype=tl.float32)
        k_begin = tl.multiple_of(pid_s * k_per_split, 32 * GROUPS)
        k_end = tl.minimum(K, k_begin + k_per_split)
        if PACKED_X or FP8_X:  # x already in the tile's column order, X_ROWS rows, K padded
            columns = tl.arange(0, 32 * GROUPS)
        else:
            columns = rademacher32_operand_columns(GROUPS, 2)
        # x's addresses advance by one step per iteration instead of being rebuilt from k
        x_ptrs = x_ptr + x_rows[None, :] * stride_xm + (k_begin + columns)[:, None] * stride_xk
        mask = (m < M)[None, :]
        for k0 in range(k_begin, k_end, 32 * GROUPS):
            h = hash_lo(row_group[:, None] + (k0 // 32 + group).to(tl.uint32)[None, :],
                               key, GENERATOR)
            if PACKED_X or FP8_X:
                x_t = tl.load(x_ptrs)
            elif EVEN_K:
                x_t = tl.load(x_ptrs, mask=mask, other=0.0)
            else:  # past K, x is zero (and the +-1 it meets finite)
                x_t = tl.load(x_ptrs, mask=mask & ((k0 + columns) < K)[:, None], other=0.0)
            x_ptrs += 32 * GROUPS * stride_xk
            if FP8_X:
                w = rademacher32_quad_tile(h, BLOCK_N, GROUPS)
                if DOT_IN_FP32:
                    acc = tl.dot(w.to(tl.float32), x_t.to(tl.float32), acc,
                                 input_precision="ieee")
                elif PROMOTE:  # each step's sum from zero, added in fp32
                    acc += tl.dot(w, x_t)
                else:
                    acc = tl.dot(w, x_t, acc)
            else:
                if x_t.dtype == tl.float16:
                    w = rademacher32_pair_tile(h, BLOCK_N, GROUPS, 0x3C00, tl.float16)
                else:
                    w = rademacher32_pair_tile(h, BLOCK_N, GROUPS, 0x3F80, tl.bfloat16)
                # +-1 is exact in x's dtype: fp32 x (the interpreter's tests) keeps its precision
                acc = _dot(w.to(x_t.dtype), x_t, acc, DOT_IN_FP32)
        if FP8_X:
            hi, lo = tl.split(tl.reshape(acc, (BLOCK_N, BLOCK_M, 2)))
            result = (hi + lo * 0.0625) * tl.load(x_scale_ptr + pid_s * BLOCK_M + m)[None, :]
        else:
            result = acc
        tl.store(partial_ptr + pid_s * M * N + m[None, :] * N + n[:, None], result,
                 mask=(m < M)[None, :] & (n < N)[:, None])


@triton.jit
def rademacher32_nibble_table_kernel(x_ptr, table_ptr, M, K, stride_xm, stride_xk,
                                     BLOCK_Q: tl.constexpr,
                                     DEPENDENT_LAUNCH: tl.constexpr = ""):
    """table[m, q, e] = sum over t < 4 of (bit t of e set ? -x : +x)[m, 4 q + t]: for
    every 4 columns of x, the 16 sums their +-1 weights can give, fp32 (contiguous,
    (M, K / 4, 16)). Grid: (cdiv(K / 4, BLOCK_Q), M)."""
    await_previous_kernel(DEPENDENT_LAUNCH)
    q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    m = tl.program_id(1)
    entry = tl.arange(0, 16)
    acc = tl.zeros((BLOCK_Q, 16), dtype=tl.float32)
    for t in tl.static_range(4):
        k = 4 * q + t
        xk = tl.load(x_ptr + m * stride_xm + k * stride_xk, mask=k < K, other=0.0)
        xk = xk.to(tl.float32)[:, None]
        acc += tl.where(((entry >> t) & 1)[None, :] != 0, -xk, xk)
    tl.store(table_ptr + (m * (K // 4) + q[:, None]) * 16 + entry[None, :], acc,
             mask=(q < K // 4)[:, None])


@triton.jit(do_not_specialize=["M", "N", "K", "k_per_split", "window", "rank"])
def rademacher32_nibble_kernel(table_ptr, key_ptr, partial_ptr, M, N, K, k_per_split,
                               window, down_x_ptr, a_ptr, down_ptr, rank, stride_dxm,
                               stride_dxk, stride_ar, stride_ak, GENERATOR: tl.constexpr,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                               GROUPS: tl.constexpr, HAS_DOWN: tl.constexpr = False,
                               DOWN_K: tl.constexpr = 128,
                               DEPENDENT_LAUNCH: tl.constexpr = ""):
    """partial[split, m, n] as rademacher32_gemv_kernel, for 1 or 2 rows (BLOCK_M) of x of
    any float dtype, from the nibble tables of `rademacher32_nibble_table_kernel`: 4
    neighbouring weights of a row are one nibble of its hash, so their dot with x is one
    table entry, looked up through shared memory (a shift, an and, a load, an add per 4
    weights). Each step stages the tables of its GROUPS * 8 nibbles (2 KB for GROUPS = 4)
    and every lane of a warp reads the same 16-entry table (distinct banks: no
    conflicts). Same grid as rademacher32_gemv_kernel, k_per_split a multiple of
    32 * GROUPS; HAS_DOWN as its."""
    await_previous_kernel(DEPENDENT_LAUNCH)
    if tl.program_id(0) * BLOCK_N >= N:  # past the output's tiles: the adapter's programs
        if HAS_DOWN:
            _lowrank_down_split(down_x_ptr, a_ptr, down_ptr, M, N, K, rank, k_per_split,
                                stride_dxm, stride_dxk, stride_ar, stride_ak, BLOCK_M, BLOCK_N,
                                DOWN_K)
    else:
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        key = launch_key(key_ptr, window, True)
        n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_group = ((n.to(tl.int64) * K.to(tl.int64)) >> 5).to(tl.uint32)
        k_begin = pid_s * k_per_split
        k_end = tl.minimum(K, k_begin + k_per_split)
        group = tl.arange(0, GROUPS)
        nibble = (4 * tl.arange(0, 8)).to(tl.uint32)
        table_of = (tl.arange(0, GROUPS * 8) * 16)[:, None]
        entries = tl.arange(0, GROUPS * 128)
        # BLOCK_M is M rounded up to a power of two, so M == BLOCK_M; one accumulator per row
        # (a [BLOCK_M, ...] gather with the index broadcast kept ptxas busy for minutes)
        tl.static_assert(BLOCK_M <= 2)
        first = tl.zeros((GROUPS * 8 * BLOCK_N,), dtype=tl.float32)
        second = tl.zeros((GROUPS * 8 * BLOCK_N,), dtype=tl.float32)
        for k0 in range(k_begin, k_end, 32 * GROUPS):
            h = hash_lo(row_group[None, :] + (k0 // 32 + group).to(tl.uint32)[:, None],
                               key, GENERATOR)
            index = ((h[:, None, :] >> nibble[None, :, None]) & 15).to(tl.int32)
            index = tl.reshape(tl.reshape(index, (GROUPS * 8, BLOCK_N)) + table_of,
                               (GROUPS * 8 * BLOCK_N,))
            e = k0 * 4 + entries
            first += tl.gather(tl.load(table_ptr + e, mask=e < K * 4, other=0.0), index, 0)
            if BLOCK_M == 2:
                second += tl.gather(tl.load(table_ptr + K * 4 + e, mask=e < K * 4,
                                            other=0.0), index, 0)
        first_sum = tl.sum(tl.reshape(first, (GROUPS * 8, BLOCK_N)), axis=0)
        tl.store(partial_ptr + pid_s * M * N + n, first_sum, mask=n < N)
        if BLOCK_M == 2:
            second_sum = tl.sum(tl.reshape(second, (GROUPS * 8, BLOCK_N)), axis=0)
            tl.store(partial_ptr + pid_s * M * N + N + n, second_sum, mask=n < N)


@triton.jit
def rademacher32_pack_x_kernel(x_ptr, out_ptr, M, K, stride_xm, stride_xk, stride_om,
                               GROUPS: tl.constexpr, DEPENDENT_LAUNCH: tl.constexpr = ""):
    """out[m, s + L] = x[m, s + rademacher32_operand_columns(GROUPS, 2)[L]] for each step
    s of 32 * GROUPS columns; zero for rows m >= M and columns past K (out has BLOCK_M
    rows and whole steps). Grid: (steps, BLOCK_M)."""
    await_previous_kernel(DEPENDENT_LAUNCH)
    m = tl.program_id(1)
    L = tl.arange(0, 32 * GROUPS)
    k = tl.program_id(0) * 32 * GROUPS + rademacher32_operand_columns(GROUPS, 2)
    xk = tl.load(x_ptr + m * stride_xm + k * stride_xk,
                 mask=(k < K) & (m + tl.zeros_like(k) < M), other=0.0)
    tl.store(out_ptr + m * stride_om + tl.program_id(0) * 32 * GROUPS + L, xk)


@triton.jit
def _top_four_bits(v):
    """v (fp32) truncated to 4 significant bits, which e4m3 holds exactly in its normal
    range, so the conversion does not round (TRITON_INTERPRET=1's rounding to e4m3 loses
    the carry into the exponent: -31.5 became -16)."""
    return (v.to(tl.uint32, bitcast=True) & 0xFFF00000).to(tl.float32, bitcast=True)


@triton.jit(do_not_specialize=["M", "K", "k_per_split"])
def rademacher32_pack_x_fp8_kernel(x_ptr, out_ptr, scale_ptr, M, K, k_per_split, stride_xm,
                                   stride_xk, stride_om, GROUPS: tl.constexpr,
                                   BLOCK_M: tl.constexpr,
                                   DEPENDENT_LAUNCH: tl.constexpr = ""):
    """x split into two float8 e4m3 terms for the FP8_X tensor-core decode: over split s's
    columns, x[m, k] * 2^p = hi + lo / 16 with p chosen so that max |x[m, k]| * 2^p lies
    in (64, 256]; hi and lo go to out's rows 2 m and 2 m + 1 (zero for m >= M and past
    K), columns in `rademacher32_operand_columns(GROUPS, 4)` order per step of
    32 * GROUPS, and 2^-p to scale[s, m]. hi keeps the top 4 significant bits of x and lo
    the next 4 (truncated), so a bf16 x is kept whole down to 2^-14 of its split's
    largest value (e4m3's smallest normal), and to within 2^-19 of that largest value
    below. An infinite or NaN x makes its row's outputs NaN. Grid: (splits, BLOCK_M)."""
    await_previous_kernel(DEPENDENT_LAUNCH)
    pid_s = tl.program_id(0)
    m = tl.program_id(1)
    STEP: tl.constexpr = 32 * GROUPS
    L = tl.arange(0, STEP)
    columns = rademacher32_operand_columns(GROUPS, 4)
    k_begin = pid_s * k_per_split
    k_end = tl.minimum(K, k_begin + k_per_split)
    row_ok = (m + tl.zeros_like(columns)) < M
    x_row = x_ptr + m * stride_xm
    top = tl.zeros((STEP,), dtype=tl.float32)
    for k0 in range(k_begin, k_end, STEP):
        k = k0 + columns
        magnitude = tl.abs(tl.load(x_row + k * stride_xk, mask=(k < K) & row_ok,
                                   other=0.0).to(tl.float32))
        # NaN counts as infinite (a comparison with NaN is false)
        top = tl.maximum(top, tl.where(magnitude < float("inf"), magnitude, float("inf")))
    largest = tl.max(top, 0)
    # rows past M and all-zero rows keep 2^0 (the floor keeps log2 finite)
    exponent = tl.where(largest > 0, 8.0 - tl.ceil(tl.log2(tl.maximum(largest, 1e-30))), 0.0)
    scale = tl.exp2(tl.minimum(exponent, 100.0))
    for k0 in range(k_begin, k_end, STEP):
        k = k0 + columns
        xk = tl.load(x_row + k * stride_xk, mask=(k < K) & row_ok, other=0.0)
        xk = xk.to(tl.float32) * scale
        # below e4m3's normal range the conversion still rounds: lo takes what hi lost
        hi = _top_four_bits(xk).to(tl.float8e4nv)
        lo = _top_four_bits((xk - hi.to(tl.float32)) * 16.0).to(tl.float8e4nv)
        tl.store(out_ptr + 2 * m * stride_om + k0 + L, hi)
        tl.store(out_ptr + (2 * m + 1) * stride_om + k0 + L, lo)
    # e4m3 has no infinity (and the interpreter's e4m3 NaN reads back finite): a
    # non-finite x makes its row's partial NaN through the scale
    tl.store(scale_ptr + pid_s * BLOCK_M + m,
             tl.where(largest < float("inf"), 1.0 / scale, float("nan")))


@triton.jit(do_not_specialize=["M", "N", "rank", "scale", "lowrank_scale"])
def split_k_epilogue_kernel(partial_ptr, bias_ptr, u_ptr, v_ptr, y_ptr, M, N, rank, scale,
                            lowrank_scale, u_splits, stride_us, stride_um, stride_ur,
                            stride_vn, stride_vr, stride_ym, stride_yn, SPLITS: tl.constexpr,
                            HAS_BIAS: tl.constexpr, HAS_LOWRANK: tl.constexpr,
                            U_SPLITS_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_N: tl.constexpr, RANK_BLOCK: tl.constexpr = 1,
                            DEPENDENT_LAUNCH: tl.constexpr = ""):
    """y = (sum over SPLITS of partial[split]) * scale (+ lowrank_scale * u v^T, u the sum
    of u_splits terms) (+ bias). The splits are unrolled so that their loads are in
    flight together. Grid: (cdiv(N, BLOCK_N),)."""
    await_previous_kernel(DEPENDENT_LAUNCH)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    mask = (m < M)[:, None] & (n < N)[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for split in tl.static_range(SPLITS):
        acc += tl.load(partial_ptr + split * M * N + m[:, None] * N + n[None, :], mask=mask,
                       other=0.0)
    _epilogue_store(acc, y_ptr, bias_ptr, u_ptr, v_ptr, m, M, n, N, rank, scale,
                    lowrank_scale, stride_us, stride_um, stride_ur, stride_vn, stride_vr,
                    stride_ym, stride_yn, HAS_BIAS, HAS_LOWRANK, u_splits, U_SPLITS_PAD,
                    RANK_BLOCK, BLOCK_M,
                    BLOCK_N)


@triton.jit
def _lowrank_tile(u_ptr, v_ptr, i, I, j, J, rank, stride_ui, stride_ur, stride_vj, stride_vr,
                  BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, RANK_BLOCK: tl.constexpr,
                  DOT_IN_FP32: tl.constexpr):
    """sum_r u[i, r] v[j, r] for a [BLOCK_I, BLOCK_J] tile on tensor cores, RANK_BLOCK
    ranks per tl.dot: a weight-sized tile wants the adapter as a GEMM, not a rank loop."""
    acc = tl.zeros((BLOCK_I, BLOCK_J), dtype=tl.float32)
    for r0 in range(0, rank, RANK_BLOCK):
        q = r0 + tl.arange(0, RANK_BLOCK)
        u = tl.load(u_ptr + i[:, None] * stride_ui + q[None, :] * stride_ur,
                    mask=(i < I)[:, None] & (q < rank)[None, :], other=0.0)
        v_t = tl.load(v_ptr + q[:, None] * stride_vr + j[None, :] * stride_vj,
                      mask=(q < rank)[:, None] & (j < J)[None, :], other=0.0)
        acc = _dot(u, v_t, acc, DOT_IN_FP32)
    return acc


@triton.jit(do_not_specialize=["rows", "cols", "rank", "scale", "window"])
def materialize_kernel(key_ptr, u_ptr, v_ptr, index_ptr, w_ptr, rows, cols, rank, scale,
                       window, stride_ur, stride_uq, stride_vc, stride_vq,
                       GENERATOR: tl.constexpr, DIST: tl.constexpr, LOG2_VALUES: tl.constexpr,
                       NARROW: tl.constexpr, HAS_LOWRANK: tl.constexpr,
                       HAS_ROW_INDEX: tl.constexpr, DOT_IN_FP32: tl.constexpr,
                       RANK_BLOCK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """W[r, c] = scale * R[r, c] (+ sum_q u[r, q] v[c, q], an adapter folded into W on
    tensor cores: BLOCK_R, BLOCK_C and RANK_BLOCK >= 16 when HAS_LOWRANK; u and v of one
    dtype). HAS_ROW_INDEX (no adapter): output row r is row index[r] of R, so only the
    rows a caller names are generated (the row-sparse backward). `rows`: output rows.
    A 1-D grid over (row block, column block): any rows and cols fit in it."""
    col_blocks = tl.cdiv(cols, BLOCK_C)
    pid = tl.program_id(0)
    pid_c = pid % col_blocks
    pid_r = pid // col_blocks
    key = launch_key(key_ptr, window, NARROW)
    r = (pid_r * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cols64 = tl.cast(cols, tl.int64)  # cols may arrive as a constant (Inductor)
    source = r
    if HAS_ROW_INDEX:
        source = tl.load(index_ptr + r, mask=r < rows, other=0).to(tl.int64)
    w = stream_tile(source * cols64, (pid_c * BLOCK_C).to(tl.int64), key, BLOCK_R, BLOCK_C,
                    GENERATOR, DIST, LOG2_VALUES, NARROW) * scale
    if HAS_LOWRANK:
        w += _lowrank_tile(u_ptr, v_ptr, r, rows, c, cols, rank, stride_ur, stride_uq,
                           stride_vc, stride_vq, BLOCK_R, BLOCK_C, RANK_BLOCK, DOT_IN_FP32)
    tl.store(w_ptr + r[:, None] * cols64 + c[None, :], w.to(w_ptr.dtype.element_ty),
             mask=(r < rows)[:, None] & (c < cols)[None, :])
