"""The shape heuristic shared by the CUDA ops, the compile backend and the cost model,
kept free of Triton so `randfx.inspect` and the backend's passes import it anywhere.

Up to FUSED_MAX_ROWS rows of x, y = x @ W^T runs the fused kernel (W generated in
registers, never in memory); above it W is materialised once and multiplied by cuBLAS.
Tuned on an H100 (docs/performance.md); the linear benchmark's --tune may rebind it.
"""

FUSED_MAX_ROWS = 16


def uses_fused_kernel(rows: int) -> bool:
    return rows <= FUSED_MAX_ROWS
