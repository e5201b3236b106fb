"""Triton kernel behind `randfx.generators.generate` on CUDA (and on CPU under
TRITON_INTERPRET=1).

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
