"""Triton kernels behind `randfx.generators.generate` on CUDA (and on CPU under
TRITON_INTERPRET=1), and the generate-and-reduce kernels that measure the generation rate.

Layout: the output is a flat run of `n` elements whose counters are offset .. offset+n-1.
Each program owns BLOCK_GROUPS hash groups of VALUES values (VALUES = values per hash of
the distribution), so one hash feeds VALUES neighbouring outputs: a 2-D tile
[BLOCK_GROUPS, VALUES] whose rows share one hash. Groups are aligned to the counter, so
any offset works; elements of the first and last group outside the run are masked.
"""

import triton
import triton.language as tl

from ..generators import device


@triton.jit(do_not_specialize=["key", "offset", "n"])
def generate_kernel(out_ptr, key, offset, n,
                    GENERATOR: tl.constexpr, DIST: tl.constexpr,
                    LOG2_VALUES: tl.constexpr, BLOCK_GROUPS: tl.constexpr):
    VALUES: tl.constexpr = 1 << LOG2_VALUES
    # scalar arguments arrive as i32, u32 or i64 depending on their value: fix the types
    key = key.to(tl.uint32)
    offset = offset.to(tl.int64)
    n = n.to(tl.int64)
    pid = tl.program_id(0).to(tl.int64)
    # floor division, not >>: the interpreter shifts 0-d int64 scalars in 32 bits
    first_group = offset // VALUES
    group = first_group + pid * BLOCK_GROUPS + tl.arange(0, BLOCK_GROUPS).to(tl.int64)
    position = tl.arange(0, VALUES)
    counter = (group << LOG2_VALUES)[:, None] + position[None, :].to(tl.int64)
    out_index = counter - offset
    mask = (out_index >= 0) & (out_index < n)
    if VALUES == 1:
        value = device.sample(counter, key, GENERATOR, DIST)
    else:
        h = device.hash_at(group, key, GENERATOR)[:, None]
        if DIST == device.UNIFORM8X4:
            value = device.uniform8x4_from_hash(h, position[None, :].to(tl.uint32))
        else:
            value = device.rademacher32_from_hash(h, position[None, :].to(tl.uint32))
    tl.store(out_ptr + out_index, value.to(out_ptr.dtype.element_ty), mask=mask)


def launch_generate(out, key: int, offset: int, generator: str, dist: str):
    """Fill the contiguous tensor `out` with stream values for counters offset.. ."""
    gen_id = device.GENERATOR_IDS[generator]
    dist_id = device.DISTRIBUTION_IDS[dist]
    log2_values = device.LOG2_VALUES_PER_HASH[dist_id]
    n = out.numel()
    block_groups = max(16, 1024 >> log2_values)
    groups = ((offset + n - 1) >> log2_values) - (offset >> log2_values) + 1
    grid = (triton.cdiv(groups, block_groups),)
    generate_kernel[grid](out, key, offset, n, GENERATOR=gen_id, DIST=dist_id,
                          LOG2_VALUES=log2_values, BLOCK_GROUPS=block_groups)
    return out


@triton.jit(do_not_specialize=["key", "offset"])
def generate_sum_kernel(partial_ptr, key, offset,
                        GENERATOR: tl.constexpr, DIST: tl.constexpr,
                        LOG2_VALUES: tl.constexpr, BLOCK_GROUPS: tl.constexpr,
                        ITERS: tl.constexpr):
    """Each program generates ITERS runs of BLOCK_GROUPS hash groups (2^LOG2_VALUES
    consecutive values each) and writes their float32 sum: the generation rate with
    nothing stored, which is what a kernel that consumes weights in registers pays. A
    multi-value hash is unpacked at compile-time positions (constant shifts), the way a
    consuming kernel uses it. `offset` must be a multiple of 2^LOG2_VALUES."""
    VALUES: tl.constexpr = 1 << LOG2_VALUES
    key = key.to(tl.uint32)
    offset = offset.to(tl.int64)
    pid = tl.program_id(0).to(tl.int64)
    acc = tl.zeros([BLOCK_GROUPS], dtype=tl.float32)
    for it in range(ITERS):
        group = (offset // VALUES + (pid * ITERS + it) * BLOCK_GROUPS
                 + tl.arange(0, BLOCK_GROUPS).to(tl.int64))
        if VALUES == 1:
            acc += device.sample(group, key, GENERATOR, DIST)
        else:
            h = device.hash_at(group, key, GENERATOR)
            for position in tl.static_range(VALUES):
                if DIST == device.UNIFORM8X4:
                    acc += device.uniform8x4_from_hash(h, position)
                else:
                    acc += device.rademacher32_from_hash(h, position)
    tl.store(partial_ptr + pid, tl.sum(acc, axis=0))


@triton.jit(do_not_specialize=["seed"])
def philox_sum_kernel(partial_ptr, seed, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    """Baseline for the benchmark: Triton's own tl.rand (Philox) summed the same way."""
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for it in range(ITERS):
        acc += tl.rand(seed, (pid * ITERS + it) * BLOCK + tl.arange(0, BLOCK))
    tl.store(partial_ptr + pid, tl.sum(acc, axis=0))


def launch_generate_sum(partials, key: int, offset: int, generator: str, dist: str,
                        iters: int, block_groups: int = 1024):
    """Write into `partials` (one float32 per program) the sums of consecutive runs of
    `iters * block_groups * values_per_hash` stream values starting at `offset`; returns
    that run length."""
    dist_id = device.DISTRIBUTION_IDS[dist]
    log2_values = device.LOG2_VALUES_PER_HASH[dist_id]
    generate_sum_kernel[(partials.numel(),)](
        partials, key, offset, GENERATOR=device.GENERATOR_IDS[generator], DIST=dist_id,
        LOG2_VALUES=log2_values, BLOCK_GROUPS=block_groups, ITERS=iters)
    return iters * (block_groups << log2_values)
