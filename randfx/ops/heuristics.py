"""The shape heuristic shared by the CUDA ops, the compile backend and the cost model,
kept free of Triton so `randfx.inspect` and the backend's passes import it anywhere.

Up to FUSED_MAX_ROWS rows of x, y = x @ W^T runs a fused kernel (W generated in
registers, never in memory); above it W is materialised once and multiplied by cuBLAS.
Among the fused kernels: the general one multiplies on CUDA cores ("gemv") up to
GEMV_MAX_ROWS rows and on tensor cores ("gemm") above; the rademacher32 stream with 16-bit
x has its own pair, CUDA cores up to SIGN_GEMV_MAX_ROWS rows and tensor cores above.
Tuned on an H100, the rademacher32 split on an H200 (docs/performance.md); the linear
benchmark's --tune may rebind them.
"""

FUSED_MAX_ROWS = 16
GEMV_MAX_ROWS = 8
SIGN_GEMV_MAX_ROWS = 1
SIXTEEN_BIT = ("torch.bfloat16", "torch.float16")


def uses_fused_kernel(rows: int) -> bool:
    return rows <= FUSED_MAX_ROWS


def fused_kernel(rows: int, dist=None, dtype=None, transpose: bool = False) -> str:
    """"gemv" (CUDA cores) or "gemm" (tensor cores) for a fused seeded matmul of `rows`
    rows of x in `dtype` (a torch.dtype or its name) with W from distribution `dist`."""
    sign_kernels = (dist == "rademacher32" and not transpose
                    and str(dtype) in SIXTEEN_BIT)
    return "gemv" if rows <= (SIGN_GEMV_MAX_ROWS if sign_kernels else GEMV_MAX_ROWS) \
        else "gemm"
