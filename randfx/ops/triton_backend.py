"""The CUDA implementation of every randfx op: Triton launches, launch parameters and the
shape heuristic. Same signatures as `reference.py`, except that keys stay tensors (the
kernels load them from device memory, so nothing syncs with the host). Runs on CPU tensors
too under TRITON_INTERPRET=1, which is how the tests check it against the reference.

float64 has no Triton path: it falls back to the reference (on the tensors' device).

Shape heuristic for y = x @ W^T with W generated (`seeded_matmul`):
- M <= heuristics.FUSED_MAX_ROWS rows (decode): the fused kernel; W tiles are generated in registers
  and used at once, zero bytes of W in memory. Per row bucket (`DECODE_CONFIGS`): a
  broadcast multiply-sum (measured best up to 8 rows) or tensor-core tl.dot (16 rows).
  The rademacher32 stream (forward layout, in_features a multiple of 32) has its own
  kernels, split over K, then `split_k_epilogue_kernel`: up to
  heuristics.SIGN_GEMV_MAX_ROWS rows `rademacher32_gemv_kernel` (CUDA cores; 1.9-3.3x
  cuBLAS at one row on an H200), more rows of 16-bit x `rademacher32_mma_kernel` (tensor
  cores; 1.6-1.7x cuBLAS at 2-16 rows of 4096^2 on an H200, where the general kernel
  gives 0.3-1.3x). bf16 x on layers of heuristics.SIGN_FP8_MIN_WEIGHTS weights or more
  takes its fp8 form (x split into two e4m3 terms by a launch of its own, then half the
  integer work per weight: 2.5-3.0x at 8192^2, 3.5-4.6x at 28672x8192); fp16 x on layers
  of heuristics.SIGN_PREP_MIN_WEIGHTS weights or more is first packed into the tile's
  column order, so the kernel's x loads are contiguous and pipelined. fp32 x keeps the
  general kernel, which does not round it to 16 bits. One row of such large layers (and
  two of x that is not bf16, and a LoRA layer's one row) takes
  `rademacher32_nibble_kernel` (3.3x and 5.7x). A LoRA layer's down projection x A^T
  runs in extra programs of these kernels' own launch (`lora_down`), the adapter's term
  in the epilogue: no launch of its own. On Hopper the chain of kernels is launched with
  programmatic dependent launch (`DEPENDENT_LAUNCH`), each placed under the previous
  one's tail.
- more rows (training): materialise W in the activation dtype (one fused generate pass,
  peak extra memory = one layer's weight, freed on return) and call cuBLAS. A fused
  kernel would regenerate W once per row block, and generation costs more than reading W
  back once it is re-used by many rows.
"""

import functools
import math
import re

import torch
import triton

from ..generators import device as streams
from ..kernels.seeded_matmul import (materialize_kernel, rademacher32_gemv_kernel,
                                     rademacher32_mma_kernel, rademacher32_nibble_kernel,
                                     rademacher32_nibble_table_kernel,
                                     rademacher32_pack_x_fp8_kernel,
                                     rademacher32_pack_x_kernel, seeded_matmul_kernel,
                                     split_k_epilogue_kernel)
from ..kernels.subspace import pmv_grad_kernel, pmv_kernel
from . import checks, heuristics, reference

_TRITON_VERSION = tuple(int(part) for part in re.findall(r"\d+", triton.__version__)[:2])
# the nibble decode kernel looks its tables up with tl.gather (Triton 3.3 and later)
_HAS_GATHER = hasattr(triton.language, "gather")
# Triton 3.3's compiler fails on the nibble kernel carrying an adapter's down projection
# at its one-row tile (TritonGPUOptimizeThreadLocality; scripts/compile_check.py): there
# LoRA layers take the CUDA-core kernel
_NIBBLE_CARRIES_DOWN = _TRITON_VERSION >= (3, 4)


def nibble_kernel_usable(lora: bool) -> bool:
    """Whether this Triton can run the nibble-table decode kernel (for a LoRA layer: with
    its adapter's down projection)."""
    return _HAS_GATHER and (_NIBBLE_CARRIES_DOWN or not lora)

# rows-of-x bucket -> (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, USE_DOT) of the fused
# kernel, forward layout; the transposed layout (grad_x) swaps the roles of N and K, same
# tile budget. USE_DOT (tensor cores) needs BLOCK_M >= 16. Buckets above FUSED_MAX_ROWS
# are used only when a caller (the tuner) raises it. Tuned on an H100: docs/performance.md.
DECODE_CONFIGS = {1: (1, 16, 512, 4, False), 2: (2, 16, 256, 4, False),
                  4: (4, 16, 256, 8, False), 8: (8, 16, 64, 4, False),
                  16: (16, 32, 64, 4, True), 32: (32, 64, 64, 4, True),
                  64: (64, 64, 64, 4, True), 128: (64, 128, 64, 8, True),
                  256: (128, 128, 64, 8, True)}
# rows-of-x bucket -> (BLOCK_N, GROUPS of 32 columns, num_warps) of the rademacher32
# CUDA-core decode kernel; its grid is split along K until about SIGN_GEMV_PROGRAMS_PER_SM
# programs per SM run, in at most SIGN_GEMV_MAX_SPLITS splits (the nibble kernel's too).
# Picked again from 28 launch configurations on an H200 once the decode chain was
# launched dependently (scripts/decode_lab.py --sections launch_sweep): 4096^2 one row,
# eight layers per graph, 4.64-4.71 us per layer against 5.03-5.10 for the former
# (128, 8, 4) at 8 programs per SM and 8 splits; the nibble kernel at 16 / 16 too,
# 11008x4096 and 8192^2 6.25-6.56 and 7.53-7.58 us against 6.56-6.68 and 7.75-7.84.
SIGN_GEMV_CONFIGS = {1: (256, 4, 4)}  # buckets up to SIGN_GEMV_MAX_ROWS
SIGN_GEMV_PROGRAMS_PER_SM = 16
SIGN_GEMV_MAX_SPLITS = 16
# the split cap of a launch that carries a LoRA adapter's down projection, any kernel:
# H200, one row, eight layers per graph, the nibble kernel at 8 splits against 16:
# 4096^2 6.80 / 7.06 us, 11008x4096 8.76 / 8.90, 4096x11008 10.36 / 10.67
SIGN_LORA_MAX_SPLITS = 8
# the tensor-core rademacher32 decode kernel above heuristics.SIGN_GEMV_MAX_ROWS rows
# (x padded to 16 rows): (BLOCK_N, GROUPS (a multiple of 4), num_warps, num_stages),
# picked from twelve variants on an H200 (scripts/decode_lab.py); its split target,
# capped because every split adds an m x rows fp32 partial for the epilogue to read
SIGN_MMA_CONFIG = (128, 4, 4, 3)
SIGN_MMA_PROGRAMS_PER_SM = 8
SIGN_MMA_MAX_SPLITS = 8
# the same kernel on x split into e4m3 terms (bf16 x of large layers): its launch
# (BLOCK_N, GROUPS, num_warps, num_stages), picked from 21 variants in three lab runs on
# an H200, and whether each step's fp8 sum is added to the accumulator in fp32 (the
# tensor cores' own fp8 accumulation keeps fewer bits; promoting cost 0-5 %)
SIGN_FP8_CONFIG = (128, 8, 4, 1)
SIGN_FP8_PROMOTE = True
# rows-of-x bucket -> (BLOCK_N, GROUPS, num_warps) of the nibble-table decode kernel
# (up to heuristics.SIGN_NIBBLE_MAX_ROWS rows of large layers); programs per SM and split
# cap as the CUDA-core kernel's. Picked from eight configurations on an H200
# (scripts/decode_lab.py). Its table kernel's columns per program, over 4.
SIGN_NIBBLE_CONFIGS = {1: (256, 4, 4), 2: (128, 4, 4)}
SIGN_NIBBLE_TABLE_BLOCK = 64
EPILOGUE_BLOCK_N = (32, 256)  # the split-K epilogue's columns per program: min, max
# columns of x and of an adapter's A per step of the decode kernels' down projection
# (`_lowrank_down_split`)
LORA_DOWN_K = 256
# BLOCK_R, BLOCK_C, num_warps of `materialize`, plain and with an adapter folded in on
# tensor cores (H100, 4096^2 bf16: 16.8 us and 26.5 us)
MATERIALIZE_BLOCK = (8, 512, 4)
MATERIALIZE_LOWRANK_BLOCK = (64, 64, 4)
RANK_BLOCK = 16  # adapter ranks per tl.dot in the fold (its minimum K)
FLAT_ROW = 1024  # generate_weight views its output as rows of this many values
PMV_BLOCK = (64, 128, 4)  # BLOCK_J, BLOCK_K, num_warps
PMV_GRAD_BLOCK = (16, 256, 4)
PMV_GRAD_PROGRAMS = 2048  # splits of the j range so the grid fills the GPU
# the rademacher32 decode chain's kernels (pack or table, main, epilogue) are launched
# with programmatic dependent launch where the GPU and Triton have it
# (kernels/dependent_launch.py); off, each waits for the previous one to end before its
# launch starts. Each lets the next kernel be placed as soon as its own wait ends, but
# for the main kernel when its epilogue is heavy (an adapter's term, or more than
# DEPENDENT_EARLY_MAX_ROWS rows): there the epilogue placed early slowed the main kernel
# and it is released at the main kernel's exit. H200, eight layers per graph, us per
# layer against serialized launches (shipped configurations): frozen 4096^2 one row 5.86
# -> 4.65, 16 rows 8.54 -> 7.28; an earlier run, LoRA 4096^2 16 rows released at start
# 17.45, at exit 10.05, serialized 10.90 (scripts/decode_lab.py --sections
# dependent_launch, docs/performance.md)
DEPENDENT_LAUNCH = True
DEPENDENT_EARLY_MAX_ROWS = 8


def _ids(generator: str, dist: str):
    return streams.GENERATOR_IDS[generator], streams.DISTRIBUTION_IDS[dist]


def tile_plan(dist: str, first_counter: int, last_counter: int, row_alignment: int,
              block_cols: int):
    """(LOG2_VALUES, NARROW, window) for a launch whose counters lie in
    [first_counter, last_counter] and whose row bases are multiples of row_alignment.

    Grouping (one hash for several elements) needs rows and tiles aligned to the values
    per hash; NARROW (32-bit counters) needs one 2^32 window for the whole launch, and
    a multi-value distribution that cannot be grouped hashes 64-bit counters."""
    log2_values = streams.LOG2_VALUES_PER_HASH[streams.DISTRIBUTION_IDS[dist]]
    values = 1 << log2_values
    grouped = log2_values > 0 and row_alignment % values == 0 and block_cols % values == 0
    shift = log2_values if grouped else 0  # grouped tiles hash counter >> log2(values)
    window = first_counter >> shift >> 32
    narrow = window == (max(last_counter, first_counter) >> shift >> 32) \
        and (grouped or log2_values == 0)
    return shift, narrow, window


def _int_key(op, key):
    return checks.key_value(op, key)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


# ---------------------------------------------------------------- generated matrices

def materialize(key, rows: int, cols: int, scale: float, generator: str, dist: str,
                dtype: torch.dtype, lowrank_u=None, lowrank_v=None,
                row_index=None, traced: bool = False) -> torch.Tensor:
    """W = scale * R(key) (+ lowrank_u @ lowrank_v^T), (rows, cols), one Triton pass.
    row_index (int64 indices into W's rows, no adapter): only those rows of W, in that
    order, (len(row_index), cols). traced: launched through `torch.library.wrap_triton`,
    so that aot_autograd records the launch in its graph and Inductor launches the kernel
    from its own code (randfx/ops/inline_generation.py); CUDA tensors only (the wrapper
    refuses the interpreter's kernels)."""
    has_index = row_index is not None
    if has_index and lowrank_u is not None:
        raise ValueError("randfx materialize: row_index and an adapter cannot be combined")
    out_rows = row_index.numel() if has_index else rows
    out = torch.empty(out_rows, cols, dtype=dtype, device=key.device)
    if out.numel() == 0:
        return out
    has_lowrank = lowrank_u is not None
    block_r, block_c, warps = MATERIALIZE_LOWRANK_BLOCK if has_lowrank else MATERIALIZE_BLOCK
    # tl.dot (the adapter fold) needs 16 rows a tile
    block_r = max(16 if has_lowrank else 1, min(block_r, _pow2_at_least(out_rows)))
    # the plan covers every row of W, whichever the index names
    log2_values, narrow, window = tile_plan(dist, 0, rows * cols - 1, cols, block_c)
    gen_id, dist_id = _ids(generator, dist)
    if has_lowrank:
        common = torch.promote_types(lowrank_u.dtype, lowrank_v.dtype)
        u, v = lowrank_u.to(common), lowrank_v.to(common)
    else:
        u = v = out
    grid = (triton.cdiv(cols, block_c) * triton.cdiv(out_rows, block_r),)
    kernel = torch.library.wrap_triton(materialize_kernel) if traced else materialize_kernel
    kernel[grid](key, u, v, row_index if has_index else out, out, out_rows, cols,
                 u.shape[1] if has_lowrank else 0, float(scale), window,
                 u.stride(0), u.stride(1), v.stride(0), v.stride(1),
                 GENERATOR=gen_id, DIST=dist_id, LOG2_VALUES=log2_values,
                 NARROW=narrow, HAS_LOWRANK=has_lowrank, HAS_ROW_INDEX=has_index,
                 DOT_IN_FP32=key.device.type == "cpu", RANK_BLOCK=RANK_BLOCK,
                 BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps)
    return out


def generate_weight(key, shape, scale, generator, dist, dtype, device, traced: bool = False):
    """scale * R(key) of `shape` (counter = flat position); traced as in `materialize`."""
    if dtype == torch.float64:
        return reference.generate_weight(_int_key("generate_weight", key), shape, scale,
                                         generator, dist, dtype, device)
    numel = 1
    for size in shape:
        numel *= size
    # any (rows, cols) factorisation keeps counter = flat position: rows of 1024 give the
    # kernel 2-D tiles; one flat row serves other sizes (the grid's first axis has room)
    cols = FLAT_ROW if numel % FLAT_ROW == 0 else numel
    return materialize(key, numel // cols if cols else 1, cols, scale, generator, dist,
                       dtype, traced=traced).view(shape)


MIN_PROGRAMS_PER_SM = 2  # decode grids narrower than this leave SMs idle: shrink BLOCK_N
LOWRANK_TILE = 8192  # the largest rows x columns x ranks of an adapter's broadcast sum


def _rank_block(rank: int) -> int:
    """Adapter ranks per step of the epilogues' low-rank term: up to 16 (tl.dot's K)."""
    return min(16, _pow2_at_least(rank))


@functools.lru_cache(maxsize=None)
def _has_fp8_tensor_cores(device: torch.device) -> bool:
    """e4m3 MMA: compute capability 8.9 (Ada) or later; the interpreter (CPU) runs the fp8
    kernel too, for the tests."""
    if device.type != "cuda":
        return True
    return torch.cuda.get_device_capability(device) >= (8, 9)


@functools.lru_cache(maxsize=None)
def triton_has_dependent_launch() -> bool:
    """Whether this Triton compiles and launches kernels with grid dependency control:
    `tl.extra.cuda.gdc_wait` and the `launch_pdl` launch option, from 3.5 on (3.4.0 has
    both, but its gdc_wait takes `_builder` where its compiler passes `_semantic`, so no
    kernel calling it compiles)."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    cuda_extras = getattr(triton.language.extra, "cuda", None)
    return (_TRITON_VERSION >= (3, 5) and hasattr(cuda_extras, "gdc_wait")
            and "launch_pdl" in CUDAOptions.__dataclass_fields__)


@functools.lru_cache(maxsize=None)
def _has_dependent_launch(device: torch.device) -> bool:
    """Grid dependency control on this device: compute capability 9.0 (Hopper) or later,
    and a Triton that has it. Never under the interpreter (CPU tensors) nor on ROCm, whose
    "cuda" devices have no grid dependency control."""
    if device.type != "cuda" or torch.version.hip is not None:
        return False
    return triton_has_dependent_launch() and torch.cuda.get_device_capability(device) >= (9, 0)


def _dependent_launch(device: torch.device, release_at_start: bool = True) -> dict:
    """Launch options of a decode-chain kernel: launched early under the previous kernel's
    tail, waiting for its writes in its first statement, and letting the next kernel be
    placed right after that wait (release_at_start) or at its own exit; none where
    unsupported."""
    if DEPENDENT_LAUNCH and _has_dependent_launch(device):
        release = "release_at_start" if release_at_start else "release_at_exit"
        return {"DEPENDENT_LAUNCH": release, "launch_pdl": True}
    return {}


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def _decode_config(m: int, n: int, transpose: bool, device: torch.device):
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, USE_DOT) for the fused kernel: the row
    bucket's tile, with BLOCK_N halved (down to 8) until the grid gives every SM work."""
    block_m, block_n, block_k, warps, use_dot = \
        DECODE_CONFIGS[min(heuristics.FUSED_MAX_ROWS, _pow2_at_least(m))]
    if transpose:  # W's rows are now the reduction: keep the tile, swap the roles
        block_n, block_k = block_k, block_n
    wanted = MIN_PROGRAMS_PER_SM * _sm_count(device)
    while block_n > 8 and triton.cdiv(n, block_n) * triton.cdiv(m, block_m) < wanted:
        block_n //= 2
    return block_m, block_n, block_k, warps, use_dot and block_m >= 16


def _rademacher32_decode_kernel(x, rows, cols, transpose, dist, lora=False):
    """"nibble", "gemv", "mma" or None (the general kernel) for decode of y = x @ W^T
    (lora: with an adapter's down projection in the same launch)."""
    if dist != "rademacher32" or transpose or cols % 32:
        return None
    log2_values, narrow, _ = tile_plan(dist, 0, rows * cols - 1, cols, 32)
    if log2_values != 5 or not narrow:
        return None
    fp8 = _has_fp8_tensor_cores(x.device)
    if heuristics.uses_nibble_kernel(x.shape[0], rows, cols, x.dtype, fp8, lora) \
            and nibble_kernel_usable(lora):
        return "nibble"
    if x.shape[0] <= heuristics.SIGN_GEMV_MAX_ROWS:
        return "gemv"
    if heuristics.uses_fp8_kernel(x.shape[0], rows, cols, x.dtype, fp8):
        return "fp8_mma"
    # 16-bit x on tensor cores; on CPU (the interpreter's tests) any float x runs it too
    if str(x.dtype) in heuristics.SIXTEEN_BIT or x.device.type == "cpu":
        return "packed_mma" if rows * cols >= heuristics.SIGN_PREP_MIN_WEIGHTS else "mma"
    return None


def k_splits(cols: int, step: int, max_splits: int, programs: int):
    """(splits, k_per_split): K cut into at most max_splits and at most `programs`
    ranges (the programs per split the grid has room for), each a whole number of steps;
    no split left empty."""
    k_steps = triton.cdiv(cols, step)
    splits = max(1, min(k_steps, max_splits, programs))
    k_per_split = triton.cdiv(k_steps, splits) * step
    return triton.cdiv(cols, k_per_split), k_per_split


def _rademacher32_decode(kernel, x, key, rows, cols, scale, bias, u, v, y, generator,
                         lora_down=None):
    """y = x @ (scale R)^T (+ u v^T) (+ bias): `rademacher32_nibble_kernel` ("nibble",
    after `rademacher32_nibble_table_kernel`), `rademacher32_gemv_kernel` ("gemv") or
    `rademacher32_mma_kernel` ("mma"; "packed_mma": x packed first by
    `rademacher32_pack_x_kernel`; "fp8_mma": x split into e4m3 terms first by
    `rademacher32_pack_x_fp8_kernel`) split over K into fp32 partials, then
    `split_k_epilogue_kernel`. lora_down = (lora_A, lora_scaling), u None: u = lora_scaling
    * x @ lora_A^T, computed split for split by programs of the same launch (one per
    rank and split), summed by the epilogue: no launch of its own."""
    m = x.shape[0]
    operand, strides, x_scale = x, (x.stride(0), x.stride(1)), None
    prepare = _dependent_launch(x.device)
    if kernel == "nibble":
        block_m = _pow2_at_least(m)
        block_n, groups, warps = SIGN_NIBBLE_CONFIGS[block_m]
        table = torch.empty(m, 4 * cols, dtype=torch.float32, device=x.device)
        rademacher32_nibble_table_kernel[
            (triton.cdiv(cols // 4, SIGN_NIBBLE_TABLE_BLOCK), m)](
            x, table, m, cols, x.stride(0), x.stride(1), BLOCK_Q=SIGN_NIBBLE_TABLE_BLOCK,
            **prepare)
        launch, programs_per_sm, max_splits, options = (
            rademacher32_nibble_kernel, SIGN_GEMV_PROGRAMS_PER_SM, SIGN_GEMV_MAX_SPLITS, {})
        operand, strides = table, ()  # the tables stand in for x
    elif kernel == "gemv":
        block_m = _pow2_at_least(m)
        block_n, groups, warps = SIGN_GEMV_CONFIGS[block_m]
        launch, programs_per_sm, max_splits, options = (
            rademacher32_gemv_kernel, SIGN_GEMV_PROGRAMS_PER_SM, SIGN_GEMV_MAX_SPLITS, {})
    else:
        fp8 = kernel == "fp8_mma"
        # tl.dot's minimum N is 16 rows of x, or of x's terms (two per row in fp8)
        block_m = max(8 if fp8 else 16, _pow2_at_least(m))
        block_n, groups, warps, stages = SIGN_FP8_CONFIG if fp8 else SIGN_MMA_CONFIG
        launch, programs_per_sm, max_splits, options = (
            rademacher32_mma_kernel, SIGN_MMA_PROGRAMS_PER_SM, SIGN_MMA_MAX_SPLITS,
            {"num_stages": stages, "DOT_IN_FP32": x.device.type == "cpu",
             "EVEN_K": cols % (32 * groups) == 0, "PACKED_X": kernel == "packed_mma",
             "FP8_X": fp8, "PROMOTE": SIGN_FP8_PROMOTE})
        # pipelined copies of 8-group steps gave wrong sums on an H200 (Triton 3.6,
        # scripts/decode_lab.py --sections stress): such steps run unpipelined
        if kernel in ("packed_mma", "fp8_mma") and groups > 4:
            options["num_stages"] = 1
    has_down = lora_down is not None
    if has_down:  # every split adds rank programs and a share for the epilogue to sum
        max_splits = min(max_splits, SIGN_LORA_MAX_SPLITS)
    n_blocks = triton.cdiv(rows, block_n)
    step = 32 * groups
    k_steps = triton.cdiv(cols, step)
    splits, k_per_split = k_splits(cols, step, max_splits,
                                   programs_per_sm * _sm_count(x.device) // n_blocks)
    if kernel == "packed_mma":
        packed = torch.empty(block_m, k_steps * step, dtype=x.dtype, device=x.device)
        rademacher32_pack_x_kernel[(k_steps, block_m)](
            x, packed, m, cols, x.stride(0), x.stride(1), packed.stride(0), GROUPS=groups,
            **prepare)
        operand, strides = packed, (packed.stride(0), 1)
    elif kernel == "fp8_mma":
        packed = torch.empty(2 * block_m, k_steps * step, dtype=torch.float8_e4m3fn,
                             device=x.device)
        x_scale = torch.empty(splits, block_m, dtype=torch.float32, device=x.device)
        rademacher32_pack_x_fp8_kernel[(splits, block_m)](
            x, packed, x_scale, m, cols, k_per_split, x.stride(0), x.stride(1),
            packed.stride(0), GROUPS=groups, BLOCK_M=block_m, **prepare)
        operand, strides = packed, (packed.stride(0), 1)
    partial = torch.empty(splits, m, rows, dtype=torch.float32, device=x.device)
    if has_down:
        lora_A, lowrank_scale = lora_down
        rank = lora_A.shape[0]
        u = torch.empty(splits, m, rank, dtype=torch.float32, device=x.device)
        down = (x, lora_A, u, rank, x.stride(0), x.stride(1), lora_A.stride(0),
                lora_A.stride(1))
        options["DOWN_K"] = LORA_DOWN_K
    else:
        lowrank_scale = 1.0
        down = (y, y, y, 0, 0, 0, 0, 0)
    if launch is rademacher32_mma_kernel:
        down += (x_scale,)  # None but for fp8 x
    _, _, window = tile_plan("rademacher32", 0, rows * cols - 1, cols, 32)
    # an adapter's down projection: one more program per rank and split
    launch[(n_blocks + (rank if has_down else 0), splits)](
        operand, key, partial, m, rows, cols, k_per_split, window, *strides, *down,
        GENERATOR=streams.GENERATOR_IDS[generator], BLOCK_M=block_m, BLOCK_N=block_n,
        GROUPS=groups, HAS_DOWN=has_down, num_warps=warps, **options,
        **_dependent_launch(x.device, not has_down and m <= DEPENDENT_EARLY_MAX_ROWS))
    return split_k_epilogue(partial, bias, u, v, y, scale, lowrank_scale)


def split_k_epilogue(partial, bias, u, v, y, scale, lowrank_scale=1.0):
    """y = partial.sum(0) * scale (+ lowrank_scale * u' v^T) (+ bias) by
    `split_k_epilogue_kernel`; partial (splits, m, n) fp32; u None, (m, rank) or per-split
    terms (splits, m, rank) summed into u'."""
    splits, m, rows = partial.shape
    has_lowrank = u is not None
    if not has_lowrank:
        u, v, u_splits, u_strides = y, y, 1, (0, 0, 0)
    elif u.dim() == 3:
        u_splits, u_strides = u.shape[0], u.stride()
    else:
        u_splits, u_strides = 1, (0, *u.stride())
    rank_block = _rank_block(u.shape[-1] if has_lowrank else 0)
    block_m = _pow2_at_least(m)
    # narrow the tiles until every SM has two (a short output would otherwise leave most
    # of the GPU idle); an adapter's term on fewer than 16 rows is a broadcast sum, whose
    # tile stays within LOWRANK_TILE
    epilogue_n = EPILOGUE_BLOCK_N[1]
    while epilogue_n > EPILOGUE_BLOCK_N[0] and (
            triton.cdiv(rows, epilogue_n) < MIN_PROGRAMS_PER_SM * _sm_count(y.device)
            or (has_lowrank and block_m < 16
                and block_m * epilogue_n * rank_block > LOWRANK_TILE)):
        epilogue_n //= 2
    split_k_epilogue_kernel[(triton.cdiv(rows, epilogue_n),)](
        partial, bias if bias is not None else y, u, v, y, m, rows,
        u.shape[-1] if has_lowrank else 0, float(scale), float(lowrank_scale), u_splits,
        *u_strides, v.stride(0), v.stride(1), y.stride(0), y.stride(1), SPLITS=splits,
        HAS_BIAS=bias is not None, HAS_LOWRANK=has_lowrank,
        U_SPLITS_PAD=_pow2_at_least(u_splits), BLOCK_M=block_m, BLOCK_N=epilogue_n,
        RANK_BLOCK=rank_block, **_dependent_launch(y.device))
    return y


def seeded_matmul(x, key, rows, cols, scale, transpose, bias, lowrank_u, lowrank_v,
                  generator, dist, lora_down=None):
    """lora_down = (lora_A, lora_scaling) with lowrank_u None: the adapter's u is
    lora_scaling * x @ lora_A^T, which the rademacher32 decode kernels compute themselves
    and every other path by `reference.lora_factors`."""
    operands = (x, bias, lowrank_u, lowrank_v, lora_down[0] if lora_down else None)
    kernel = None
    if torch.float64 not in [t.dtype for t in operands if t is not None] and \
            heuristics.uses_fused_kernel(x.shape[0]):
        kernel = _rademacher32_decode_kernel(x, rows, cols, transpose, dist,
                                             lora_down is not None)
    if lora_down is not None and kernel is None:
        lowrank_u, lowrank_v = reference.lora_factors(x, lora_down[0], lowrank_v, lora_down[1])
        lora_down = None
    if torch.float64 in [t.dtype for t in (x, bias, lowrank_u, lowrank_v) if t is not None]:
        return reference.seeded_matmul(x, _int_key("seeded_matmul", key), rows, cols, scale,
                                       transpose, bias, lowrank_u, lowrank_v, generator, dist)
    m = x.shape[0]
    n = cols if transpose else rows
    if not heuristics.uses_fused_kernel(m):
        w = materialize(key, rows, cols, scale, generator, dist, x.dtype)
        y = x @ (w if transpose else w.T)
        if lowrank_u is not None:
            y = y.addmm_(lowrank_u.to(y.dtype), lowrank_v.to(y.dtype).T)
        if bias is not None:
            y += bias.to(y.dtype)
        return y
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return y
    if bias is not None:
        bias = bias.contiguous()  # the kernel reads bias[n] at unit stride
    if kernel is not None:
        return _rademacher32_decode(kernel, x, key, rows, cols, scale, bias, lowrank_u,
                                    lowrank_v, y, generator, lora_down)
    block_m, block_n, block_k, warps, use_dot = _decode_config(m, n, transpose, x.device)
    # grouped hashes run along W's rows: the k axis in the forward, n in the transpose
    block_cols = block_n if transpose else block_k
    log2_values, narrow, window = tile_plan(dist, 0, rows * cols - 1, cols, block_cols)
    gen_id, dist_id = _ids(generator, dist)
    has_lowrank = lowrank_u is not None
    u = lowrank_u if has_lowrank else y
    v = lowrank_v if has_lowrank else y
    grid = (triton.cdiv(n, block_n), triton.cdiv(m, block_m))
    seeded_matmul_kernel[grid](
        x, key, bias if bias is not None else y, u, v, y,
        m, n, rows if transpose else cols, u.shape[1] if has_lowrank else 0, float(scale),
        window, x.stride(0), x.stride(1), u.stride(0), u.stride(1), v.stride(0), v.stride(1),
        y.stride(0), y.stride(1),
        GENERATOR=gen_id, DIST=dist_id, LOG2_VALUES=log2_values, NARROW=narrow,
        TRANSPOSE=transpose, HAS_BIAS=bias is not None, HAS_LOWRANK=has_lowrank,
        USE_DOT=use_dot, DOT_IN_FP32=x.device.type == "cpu", BLOCK_M=block_m,
        BLOCK_N=block_n, BLOCK_K=block_k, RANK_BLOCK=_rank_block(u.shape[1] if has_lowrank else 0),
        num_warps=warps)
    return y


def lora_weight(key, out_features, in_features, scale, lora_A, lora_B, lora_scaling,
                generator, dist, dtype, traced: bool = False):
    """W = scale R + lora_scaling * lora_B @ lora_A, materialised in one pass."""
    return materialize(key, out_features, in_features, scale, generator, dist, dtype,
                       lora_B * lora_scaling, lora_A.T, traced=traced)


def _uses_factors(rows: int, *tensors) -> bool:
    """Decode (or float64, which has no Triton path): keep W unmaterialised and apply the
    adapter as a rank-r epilogue on the output."""
    return heuristics.uses_fused_kernel(rows) or torch.float64 in [t.dtype for t in tensors]


def lora_linear(x, key, out_features, scale, lora_A, lora_B, lora_scaling, bias, generator,
                dist):
    """y = x @ W^T + bias, W = scale R + lora_scaling * lora_B @ lora_A. Decode: the fused
    kernel with the adapter as a rank-r epilogue; training: the adapter folded into the
    materialised W (no extra pass over x or y), then cuBLAS."""
    if _uses_factors(x.shape[0], x, lora_A, lora_B):
        return seeded_matmul(x, key, out_features, x.shape[1], scale, False, bias, None,
                             lora_B, generator, dist, lora_down=(lora_A, lora_scaling))
    w = lora_weight(key, out_features, x.shape[1], scale, lora_A, lora_B, lora_scaling,
                     generator, dist, x.dtype)
    if bias is None:
        return x @ w.T
    return torch.addmm(bias.to(x.dtype), x, w.T)


def lora_grad_input(grad_y, key, scale, lora_A, lora_B, lora_scaling, generator, dist):
    """grad_x = grad_y @ W, W = scale R + lora_scaling * lora_B @ lora_A. Decode: the
    fused transposed kernel with the adapter as a rank-r epilogue; training: the adapter
    folded into the materialised W, then cuBLAS (no rank-r pass over grad_x)."""
    out_features, in_features = lora_B.shape[0], lora_A.shape[1]
    if _uses_factors(grad_y.shape[0], grad_y, lora_A, lora_B):
        return seeded_matmul(grad_y, key, out_features, in_features, scale, True, None, None,
                             lora_A.T, generator, dist, lora_down=(lora_B.T, lora_scaling))
    return grad_y @ lora_weight(key, out_features, in_features, scale, lora_A, lora_B,
                                 lora_scaling, generator, dist, grad_y.dtype)


# ---------------------------------------------------------------- subspace

def _pmv(alpha, key, numel, basis_offset, basis_scale, generator, dist, out_dtype,
         base_key=None, base_scale=0.0, base_dist="uniform", row_stride=None):
    d = alpha.numel()
    stride = d if row_stride is None else row_stride
    out = torch.empty(numel, dtype=out_dtype, device=alpha.device)
    block_j, block_k, warps = PMV_BLOCK
    log2_values, narrow, window = tile_plan(dist, basis_offset,
                                            basis_offset + (numel - 1) * stride + d - 1,
                                            math.gcd(basis_offset, stride),
                                            block_k)
    gen_id, dist_id = _ids(generator, dist)
    pmv_kernel[(triton.cdiv(numel, block_j),)](
        alpha, key, base_key if base_key is not None else key, out, numel, d, stride,
        basis_offset,
        window, float(basis_scale), float(base_scale), alpha.stride(0),
        GENERATOR=gen_id, DIST=dist_id, LOG2_VALUES=log2_values, NARROW=narrow,
        HAS_BASE=base_key is not None, BASE_DIST=streams.DISTRIBUTION_IDS[base_dist],
        BLOCK_J=block_j, BLOCK_K=block_k, num_warps=warps)
    return out


def subspace_weight(alpha, key, numel, basis_offset, basis_scale, generator, dist,
                    row_stride=None):
    if alpha.dtype == torch.float64:
        return reference.subspace_weight(alpha, _int_key("subspace_weight", key), numel,
                                         basis_offset, basis_scale, generator, dist,
                                         row_stride)
    return _pmv(alpha, key, numel, basis_offset, basis_scale, generator, dist, alpha.dtype,
                row_stride=row_stride)


def subspace_weight_backward(grad, key, d, basis_offset, basis_scale, generator, dist,
                             row_stride=None):
    if grad.dtype == torch.float64:
        return reference.subspace_weight_backward(grad, _int_key("subspace_weight_backward",
                                                                 key),
                                                  d, basis_offset, basis_scale, generator, dist,
                                                  row_stride)
    stride = d if row_stride is None else row_stride
    g = grad.reshape(-1)
    numel = g.numel()
    block_j, block_k, warps = PMV_GRAD_BLOCK
    k_blocks = triton.cdiv(d, block_k)
    splits = max(1, min(triton.cdiv(numel, block_j), PMV_GRAD_PROGRAMS // k_blocks))
    rows_per_split = triton.cdiv(triton.cdiv(numel, splits), block_j) * block_j
    splits = triton.cdiv(numel, rows_per_split)
    partial = torch.empty(splits, d, dtype=torch.float32, device=grad.device)
    log2_values, narrow, window = tile_plan(dist, basis_offset,
                                            basis_offset + (numel - 1) * stride + d - 1,
                                            math.gcd(basis_offset, stride),
                                            block_k)
    gen_id, dist_id = _ids(generator, dist)
    pmv_grad_kernel[(k_blocks, splits)](
        g, key, partial, numel, d, stride, basis_offset, window, g.stride(0), rows_per_split,
        GENERATOR=gen_id, DIST=dist_id, LOG2_VALUES=log2_values, NARROW=narrow,
        BLOCK_J=block_j, BLOCK_K=block_k, num_warps=warps)
    return partial.sum(0) * basis_scale


def subspace_linear_weight(base_key, base_scale, alpha, basis_key, basis_offset, basis_scale,
                           out_features, in_features, generator, base_dist, basis_dist, dtype):
    if torch.float64 in (alpha.dtype, dtype):
        op = "subspace_linear_weight"
        return reference.subspace_linear_weight(
            checks.key_value(op, base_key, "base_key"), base_scale, alpha,
            checks.key_value(op, basis_key, "basis_key"), basis_offset, basis_scale,
            out_features, in_features, generator, base_dist, basis_dist, dtype)
    out = _pmv(alpha, basis_key, out_features * in_features, basis_offset, basis_scale,
               generator, basis_dist, dtype, base_key=base_key, base_scale=base_scale,
               base_dist=base_dist)
    return out.view(out_features, in_features)
