"""Triton kernels that expose device helpers of randfx/kernels/tiles.py to the tests
(imported only where Triton is available)."""

import triton
import triton.language as tl

from randfx.generators import device
from randfx.kernels.tiles import launch_key, rademacher32_operand_columns, rademacher32_pair_tile


@triton.jit(do_not_specialize=["K", "window"])
def pair_tile_kernel(key_ptr, tile_ptr, column_ptr, K, window, ROWS: tl.constexpr,
                     GROUPS: tl.constexpr):
    """Step s (program s) of rows 0..ROWS-1 of a (ROWS, K) rademacher32 weight under the
    pcg generator, as `rademacher32_pair_tile` builds it: tile[r, 32 GROUPS s + L] and,
    in column[32 GROUPS s + L], the weight column it claims to hold."""
    step = tl.program_id(0)
    key = launch_key(key_ptr, window, True)
    r = tl.arange(0, ROWS)
    row_group = ((r.to(tl.int64) * K) >> 5).to(tl.uint32)
    group = step * GROUPS + tl.arange(0, GROUPS)
    h = device.hash_lo(row_group[:, None] + group.to(tl.uint32)[None, :], key, device.PCG)
    tile = rademacher32_pair_tile(h, ROWS, GROUPS, 0x3F80, tl.bfloat16)
    L = step * 32 * GROUPS + tl.arange(0, 32 * GROUPS)
    tl.store(tile_ptr + r[:, None] * K + L[None, :], tile)
    tl.store(column_ptr + L, step * 32 * GROUPS + rademacher32_operand_columns(GROUPS, 2))
