"""Triton device helper shared by the seeded kernels: a 2-D tile of stream values.

`stream_tile(row_base, col_start, ...)` returns the [BLOCK_R, BLOCK_C] values at counters
row_base[r] + col_start + c. A generated matrix of shape (rows, cols) passes
row_base = r * cols; a subspace basis P[j, k] passes row_base = basis_offset + j * d.

Two fast paths, chosen on the host (see `tile_plan` in randfx/ops/triton_backend.py):
- NARROW: every counter of the launch lies in one 2^32 window, so the caller folds the
  window into the key once and the tile hashes 32-bit counters (no 64-bit arithmetic).
- GROUPED (multi-value distributions): row_base, col_start and BLOCK_C are multiples of
  the values per hash, so one hash feeds VALUES neighbouring elements of a row.
A multi-value distribution that cannot be grouped falls back to one hash per element
(`device.sample` on 64-bit counters, NARROW off).

"uniform" avoids the int->float conversion (a quarter-rate instruction on NVIDIA GPUs):
for a = h >> 9 and b = bit 8 of h, f = bitcast(0x3F800000 | a) = 1 + a 2^-23 and the
value ((h >> 8) - 2^23) 2^-23 = (2a + b) 2^-23 - 1 = (2f - 3) + b 2^-23, every step exact
in float32 (tests compare these bits with the reference stream).
"""

import triton
import triton.language as tl

from ..generators import device


@triton.jit
def uniform_from_hash_bits(h):
    f = ((h >> 9) | 0x3F800000).to(tl.float32, bitcast=True)
    low = tl.where(((h >> 8) & 1) != 0, 1.1920928955078125e-07, 0.0)
    return (f * 2.0 - 3.0) + low


@triton.jit
def _hash(counter, key, GENERATOR: tl.constexpr, NARROW: tl.constexpr):
    if NARROW:
        h = device.hash_lo(counter.to(tl.uint32), key, GENERATOR)
    else:
        h = device.hash_at(counter, key, GENERATOR)
    return h


@triton.jit
def stream_tile(row_base, col_start, key, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                GENERATOR: tl.constexpr, DIST: tl.constexpr, LOG2_VALUES: tl.constexpr,
                NARROW: tl.constexpr):
    """float32 [BLOCK_R, BLOCK_C] stream values; row_base int64 [BLOCK_R], col_start a
    scalar. LOG2_VALUES > 0 selects the grouped layout (one hash per VALUES elements)."""
    if LOG2_VALUES > 0:
        VALUES: tl.constexpr = 1 << LOG2_VALUES
        GROUPS: tl.constexpr = BLOCK_C // VALUES
        group = (row_base // VALUES)[:, None] + \
            (col_start // VALUES + tl.arange(0, GROUPS).to(tl.int64))[None, :]
        h = _hash(group, key, GENERATOR, NARROW)[:, :, None]
        position = tl.arange(0, VALUES).to(tl.uint32)[None, None, :]
        if DIST == device.UNIFORM8X4:
            values = device.uniform8x4_from_hash(h, position)
        else:
            values = device.rademacher32_from_hash(h, position)
        out = tl.reshape(values, (BLOCK_R, BLOCK_C))
    else:
        counter = row_base[:, None] + (col_start + tl.arange(0, BLOCK_C).to(tl.int64))[None, :]
        if DIST == device.UNIFORM8X4 or DIST == device.RADEMACHER32:
            out = device.sample(counter, key, GENERATOR, DIST)
        elif DIST == device.NORMAL:
            out = device.normal_from_hashes(
                _hash(counter, key, GENERATOR, NARROW),
                _hash(counter, key ^ device.NORMAL_SECOND_KEY_XOR, GENERATOR, NARROW))
        else:
            h = _hash(counter, key, GENERATOR, NARROW)
            if DIST == device.UNIFORM:
                out = uniform_from_hash_bits(h)
            elif DIST == device.UNIFORM01:
                out = device.uniform01_from_hash(h)
            else:
                out = device.rademacher_from_hash(h)
    return out


@triton.jit
def launch_key(key_ptr, window, NARROW: tl.constexpr):
    """The key loaded from device memory (no host sync); under NARROW folded with the
    launch's 2^32 window once, so tiles hash 32-bit counters."""
    key = tl.load(key_ptr).to(tl.uint32)
    if NARROW:
        key = device.window_key(key, window.to(tl.uint32))
    return key
