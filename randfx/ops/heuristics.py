"""The shape heuristic shared by the CUDA ops, the compile backend and the cost model,
kept free of Triton so `randfx.inspect` and the backend's passes import it anywhere.

Up to FUSED_MAX_ROWS rows of x, y = x @ W^T runs a fused kernel (W generated in
registers, never in memory); above it W is materialised once and multiplied by cuBLAS.
Among the fused kernels: the general one multiplies on CUDA cores ("gemv") up to
GEMV_MAX_ROWS rows and on tensor cores ("gemm") above; the rademacher32 stream with 16-bit
x has its own pair, CUDA cores up to SIGN_GEMV_MAX_ROWS rows and tensor cores above
(for bf16 x on large layers in an fp8 form), and for one row of large layers (two of x
that is not bf16) a nibble-table kernel, on CUDA cores too.
Tuned on an H100, the rademacher32 split on an H200 (docs/performance.md); the linear
benchmark's --tune may rebind them.
"""

FUSED_MAX_ROWS = 16
GEMV_MAX_ROWS = 8
SIGN_GEMV_MAX_ROWS = 1
# On layers of at least SIGN_PREP_MIN_WEIGHTS weights the rademacher32 decode prepares x
# in a launch of its own: up to SIGN_NIBBLE_MAX_ROWS rows (any float x) the nibble-table
# kernel reads x's tables, more rows of 16-bit x the tensor-core kernel reads x packed in
# its tile's column order. bf16 x from 2 rows on layers of SIGN_FP8_MIN_WEIGHTS weights
# or more takes the fp8 form of the tensor-core kernel instead (x split exactly into two
# e4m3 terms, half the integer work per weight). Since the decode chain's kernels are
# launched dependently (triton_backend.DEPENDENT_LAUNCH) x's launch costs less, and the
# thresholds came down a power of two each. H200, eight layers per graph, us per layer,
# against the kernel without x's launch, same lab run (scripts/decode_lab.py --sections
# dependent_launch): the nibble kernel at one row of 11008x4096 6.61 against 8.61, of
# 4096^2 5.18 against 5.04 (not taken); the fp8 form at 4096^2, 2 / 4 / 8 / 16 rows:
# frozen 5.84 / 6.34 / 6.26 / 7.43 against 6.15 / 6.20 / 6.42 / 7.32, LoRA 7.82 / 8.02 /
# 8.98 / 9.55 against 9.02 / 9.11 / 10.00 / 10.08. Serialized (sixth session): the
# nibble kernel 0.95-1.00x at 4096x8192 and 8192x4096, 1.12-1.13x at 8192^2, 1.47x at
# 28672x8192; the fp8 form 1.21-1.26x of packed x at 8192^2, 1.19-1.44x at 28672x8192.
SIGN_NIBBLE_MAX_ROWS = 2
# A LoRA layer (its down projection inside the decode kernel) takes the nibble kernel at
# up to SIGN_LORA_NIBBLE_MAX_ROWS rows whatever its size: H200, eight layers per graph,
# one row, us per layer, same lab run (--sections launch_sweep_lora): 4096^2 6.80 against
# 8.06 on the CUDA-core kernel as tuned for frozen layers (6.95 as tuned before).
SIGN_LORA_NIBBLE_MAX_ROWS = 1
SIGN_PREP_MIN_WEIGHTS = 1 << 25
SIGN_FP8_MIN_WEIGHTS = 1 << 24
SIXTEEN_BIT = ("torch.bfloat16", "torch.float16")


def uses_fused_kernel(rows: int) -> bool:
    return rows <= FUSED_MAX_ROWS


def uses_fp8_kernel(m: int, out_features: int, in_features: int, dtype=None,
                    fp8_tensor_cores: bool = True) -> bool:
    """Whether the rademacher32 decode of m rows of x in `dtype` (a torch.dtype or its
    name) through an (out_features, in_features) weight takes the fp8 tensor-core kernel:
    bf16 only, whose 8 significant bits two e4m3 terms hold exactly (fp16's 11 would be
    cut), on a GPU with fp8 tensor cores (`fp8_tensor_cores`: compute capability 8.9 or
    later)."""
    return (fp8_tensor_cores and SIGN_GEMV_MAX_ROWS < m and str(dtype) == "torch.bfloat16"
            and out_features * in_features >= SIGN_FP8_MIN_WEIGHTS)


def uses_nibble_kernel(m: int, out_features: int, in_features: int, dtype=None,
                       fp8_tensor_cores: bool = True, lora: bool = False) -> bool:
    """Whether the rademacher32 decode of m rows of x in `dtype` through an
    (out_features, in_features) weight (with a LoRA adapter's down projection: lora)
    takes the nibble-table kernel."""
    large = m <= SIGN_NIBBLE_MAX_ROWS and out_features * in_features >= SIGN_PREP_MIN_WEIGHTS
    return ((large or (lora and m <= SIGN_LORA_NIBBLE_MAX_ROWS))
            and not uses_fp8_kernel(m, out_features, in_features, dtype, fp8_tensor_cores))


def fused_kernel(rows: int, dist=None, dtype=None, transpose: bool = False,
                 shape=None) -> str:
    """"gemv" (CUDA cores) or "gemm" (tensor cores) for a fused seeded matmul of `rows`
    rows of x in `dtype` (a torch.dtype or its name) with W from distribution `dist`;
    `shape`, W's (out_features, in_features) where known, names the nibble kernel's
    layers (CUDA cores; the fp8 kernel is a tensor-core one)."""
    sign_kernels = (dist == "rademacher32" and not transpose
                    and str(dtype) in SIXTEEN_BIT)
    if sign_kernels and shape is not None and uses_nibble_kernel(rows, *shape, dtype):
        return "gemv"
    return "gemv" if rows <= (SIGN_GEMV_MAX_ROWS if sign_kernels else GEMV_MAX_ROWS) \
        else "gemm"
