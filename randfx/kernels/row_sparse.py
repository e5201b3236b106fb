"""Triton kernels of the row-sparse linear backward (randfx.ops.row_sparse).

`rows` (K,) int64 lists the kept output rows I of a weight W (out, in), padded with -1.
With g = grad_y (M, out) and x (M, in):

    grad_input  (M, in)   = g[:, I] @ W[I, :]            row_sparse_grad_input_kernel
    grad_weight (out, in) : rows I = g[:, I]^T @ x       row_sparse_grad_weight_kernel
    grad_bias   (out,)    : rows I = sum_m g[m, I]       (same kernel, column-tile 0)

The gathers happen inside the GEMM loads (the K loop of grad_input reads g's columns and
W's rows through `rows`; grad_weight reads g's columns through `rows`), so no gathered
copy is ever written, and grad_weight stores straight into rows I of a zeroed gradient.
A padded slot (-1) loads zeros and stores nothing.

Seeded weights (SEEDED=1): instead of loading W[r, n], grad_input regenerates it as
scale * value(key, r * in + n) with the generator device functions (the ops' convention:
a generated (out, in) weight holds counter p at flat position p), so only rows I of the
seeded weight are ever generated. The key is loaded from its 0-d int64 tensor (no sync).
"""

import torch
import triton
import triton.language as tl

from ..generators import device

_GRAD_INPUT_CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=4),
]
# small BLOCK_K / BLOCK_N keep enough programs for few kept rows (1/64 of 4096 = 64)
_GRAD_WEIGHT_CONFIGS = [
    triton.Config({"BLOCK_K": 32, "BLOCK_N": 64, "BLOCK_M": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_K": 64, "BLOCK_N": 64, "BLOCK_M": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_K": 128, "BLOCK_N": 128, "BLOCK_M": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_K": 128, "BLOCK_N": 256, "BLOCK_M": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_K": 64, "BLOCK_N": 256, "BLOCK_M": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_K": 128, "BLOCK_N": 128, "BLOCK_M": 64}, num_warps=8, num_stages=4),
]
# the interpreter runs one tiny configuration (it is slow and autotuning would multiply it)
_INTERPRETER_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}


@triton.jit
def _grad_input_tiles(g_ptr, w_ptr, key_ptr, rows_ptr, out_ptr, scale, M, N, K,
                      stride_gm, stride_gk, stride_wr, stride_wn, stride_om, stride_on,
                      SEEDED: tl.constexpr, GENERATOR: tl.constexpr, DIST: tl.constexpr,
                      IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr):
    # column tiles vary fastest: the programs sharing one gathered tile of g run together
    # and read it from L2; the kept rows of W (K x in) are small enough to stay there
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if SEEDED:
        key = tl.load(key_ptr).to(tl.uint32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        r = tl.load(rows_ptr + k, mask=k < K, other=-1)
        kept = r >= 0
        a = tl.load(g_ptr + m[:, None] * stride_gm + r[None, :] * stride_gk,
                    mask=(m[:, None] < M) & kept[None, :], other=0.0)
        b_mask = kept[:, None] & (n[None, :] < N)
        if SEEDED:
            counter = r[:, None] * N + n[None, :]
            b = device.sample(counter, key, GENERATOR, DIST) * scale
            b = tl.where(b_mask, b, 0.0).to(a.dtype)
        else:
            b = tl.load(w_ptr + r[:, None] * stride_wr + n[None, :] * stride_wn,
                        mask=b_mask, other=0.0)
        if IEEE:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
    tl.store(out_ptr + m[:, None] * stride_om + n[None, :] * stride_on,
             acc.to(out_ptr.dtype.element_ty), mask=(m[:, None] < M) & (n[None, :] < N))


@triton.jit(do_not_specialize=["scale"])
def row_sparse_grad_input_fixed(g_ptr, w_ptr, key_ptr, rows_ptr, out_ptr, scale, M, N, K,
                                stride_gm, stride_gk, stride_wr, stride_wn, stride_om,
                                stride_on, SEEDED: tl.constexpr, GENERATOR: tl.constexpr,
                                DIST: tl.constexpr, IEEE: tl.constexpr,
                                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                BLOCK_K: tl.constexpr):
    _grad_input_tiles(g_ptr, w_ptr, key_ptr, rows_ptr, out_ptr, scale, M, N, K, stride_gm,
                      stride_gk, stride_wr, stride_wn, stride_om, stride_on, SEEDED,
                      GENERATOR, DIST, IEEE, BLOCK_M, BLOCK_N, BLOCK_K)


row_sparse_grad_input_tuned = triton.autotune(
    configs=_GRAD_INPUT_CONFIGS, key=["M", "N", "K", "SEEDED"])(row_sparse_grad_input_fixed)


@triton.jit
def _grad_weight_tiles(g_ptr, x_ptr, rows_ptr, gw_ptr, gb_ptr, M, N, K,
                       stride_gm, stride_gk, stride_xm, stride_xn, stride_wr, stride_wn,
                       HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, BLOCK_K: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    pid_n = tl.program_id(0)  # fastest, as in grad_input: one gathered g tile, many x tiles
    pid_k = tl.program_id(1)
    k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    r = tl.load(rows_ptr + k, mask=k < K, other=-1)
    kept = r >= 0
    n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    bias_acc = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for m0 in range(0, M, BLOCK_M):
        m = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
        # loaded (tokens, kept rows) so that neighbouring lanes read neighbouring columns
        # of one row of g, then transposed in registers
        a = tl.trans(tl.load(g_ptr + m[:, None] * stride_gm + r[None, :] * stride_gk,
                             mask=(m[:, None] < M) & kept[None, :], other=0.0))
        b = tl.load(x_ptr + m[:, None] * stride_xm + n[None, :] * stride_xn,
                    mask=(m[:, None] < M) & (n[None, :] < N), other=0.0)
        if IEEE:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
        if HAS_BIAS:
            bias_acc += tl.sum(a.to(tl.float32), axis=1)
    tl.store(gw_ptr + r[:, None] * stride_wr + n[None, :] * stride_wn,
             acc.to(gw_ptr.dtype.element_ty), mask=kept[:, None] & (n[None, :] < N))
    if HAS_BIAS:
        if pid_n == 0:
            tl.store(gb_ptr + r, bias_acc.to(gb_ptr.dtype.element_ty), mask=kept)


@triton.jit
def row_sparse_grad_weight_fixed(g_ptr, x_ptr, rows_ptr, gw_ptr, gb_ptr, M, N, K,
                                 stride_gm, stride_gk, stride_xm, stride_xn, stride_wr,
                                 stride_wn, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
                                 BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
                                 BLOCK_M: tl.constexpr):
    _grad_weight_tiles(g_ptr, x_ptr, rows_ptr, gw_ptr, gb_ptr, M, N, K, stride_gm,
                       stride_gk, stride_xm, stride_xn, stride_wr, stride_wn, HAS_BIAS,
                       IEEE, BLOCK_K, BLOCK_N, BLOCK_M)


row_sparse_grad_weight_tuned = triton.autotune(
    configs=_GRAD_WEIGHT_CONFIGS, key=["M", "N", "K", "HAS_BIAS"])(row_sparse_grad_weight_fixed)


def _interpreted(tensor) -> bool:
    return tensor.device.type != "cuda"


def launch_grad_input(grad, weight, rows, out, *, key=None, scale: float = 1.0,
                      generator: str = "pcg", dist: str = "uniform"):
    """out (M, in) = grad[:, rows] @ W[rows, :]. `weight` is None for a seeded W: then
    W[r, n] = scale * stream value at counter r * in + n under `key` (0-d int64 tensor)."""
    M, N, K = grad.shape[0], out.shape[1], rows.shape[0]
    seeded = weight is None
    w = out if seeded else weight  # any pointer: the SEEDED branch never reads it
    key = rows if key is None else key  # likewise unused unless SEEDED
    ieee = grad.dtype == torch.float32
    args = (grad, w, key, rows, out, scale, M, N, K, grad.stride(0), grad.stride(1),
            w.stride(0), w.stride(1), out.stride(0), out.stride(1))
    meta = dict(SEEDED=int(seeded), GENERATOR=device.GENERATOR_IDS[generator],
                DIST=device.DISTRIBUTION_IDS[dist], IEEE=int(ieee))
    if _interpreted(grad):
        c = _INTERPRETER_CONFIG
        grid = (triton.cdiv(N, c["BLOCK_N"]), triton.cdiv(M, c["BLOCK_M"]))
        row_sparse_grad_input_fixed[grid](*args, **meta, **c)
    else:
        grid = lambda c: (triton.cdiv(N, c["BLOCK_N"]), triton.cdiv(M, c["BLOCK_M"]))  # noqa: E731
        row_sparse_grad_input_tuned[grid](*args, **meta)
    return out


def launch_grad_weight(grad, x, rows, grad_weight, grad_bias=None):
    """Rows `rows` of the zeroed grad_weight (out, in) = grad[:, rows]^T @ x; the same
    rows of grad_bias = grad[:, rows].sum(0) when grad_bias is given."""
    M, N, K = grad.shape[0], x.shape[1], rows.shape[0]
    has_bias = grad_bias is not None
    args = (grad, x, rows, grad_weight, grad_bias if has_bias else grad_weight, M, N, K,
            grad.stride(0), grad.stride(1), x.stride(0), x.stride(1),
            grad_weight.stride(0), grad_weight.stride(1))
    meta = dict(HAS_BIAS=int(has_bias), IEEE=int(grad.dtype == torch.float32))
    if _interpreted(grad):
        c = _INTERPRETER_CONFIG
        grid = (triton.cdiv(N, c["BLOCK_N"]), triton.cdiv(K, c["BLOCK_K"]))
        row_sparse_grad_weight_fixed[grid](*args, **meta, **c)
    else:
        grid = lambda c: (triton.cdiv(N, c["BLOCK_N"]), triton.cdiv(K, c["BLOCK_K"]))  # noqa: E731
        row_sparse_grad_weight_tuned[grid](*args, **meta)
    return grad_weight, grad_bias
