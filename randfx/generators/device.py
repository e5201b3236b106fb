"""Triton device functions for every stream in `spec.py`, callable from any randfx kernel.

They compute the same bits as `reference.py` (tests check it under TRITON_INTERPRET=1 and
on CUDA). Conventions: counters are int64 tensors, hashes and keys uint32. A key arrives
as a kernel argument; declare that argument in `do_not_specialize` (Triton turns the value
1 into a compile-time constant) and convert it with `key.to(tl.uint32)` (a value >= 2^31
arrives as int64).

Fast paths for kernels: a kernel whose counters lie within one 2^32 window can compute
`window_key(key, hi)` once and call `hash_lo` on 32-bit counters; multi-value
distributions expose `*_from_hash` so a kernel can spend one hash on several elements.

Interpreter pitfall (triton 3.9, TRITON_INTERPRET=1): `>>` on a 0-d int64 scalar is done
in 32 bits. Shift tensors, or use `//` on non-negative scalars.
"""

import triton
import triton.language as tl

from . import spec

SQ5_NOISE1: tl.constexpr = tl.constexpr(spec.SQ5_NOISE1)
SQ5_NOISE2: tl.constexpr = tl.constexpr(spec.SQ5_NOISE2)
SQ5_NOISE3: tl.constexpr = tl.constexpr(spec.SQ5_NOISE3)
SQ5_NOISE4: tl.constexpr = tl.constexpr(spec.SQ5_NOISE4)
SQ5_NOISE5: tl.constexpr = tl.constexpr(spec.SQ5_NOISE5)
PCG_MULTIPLIER: tl.constexpr = tl.constexpr(spec.PCG_MULTIPLIER)
PCG_INCREMENT: tl.constexpr = tl.constexpr(spec.PCG_INCREMENT)
PCG_KEY_MULTIPLIER: tl.constexpr = tl.constexpr(spec.PCG_KEY_MULTIPLIER)
PCG_OUTPUT_MULTIPLIER: tl.constexpr = tl.constexpr(spec.PCG_OUTPUT_MULTIPLIER)
HIGH_WORD_MULTIPLIER: tl.constexpr = tl.constexpr(spec.HIGH_WORD_MULTIPLIER)
NORMAL_SECOND_KEY_XOR: tl.constexpr = tl.constexpr(spec.NORMAL_SECOND_KEY_XOR)

# generator and distribution ids for constexpr dispatch (kernels take these, not strings)
SQUIRREL5: tl.constexpr = tl.constexpr(0)
PCG: tl.constexpr = tl.constexpr(1)
GENERATOR_IDS = {"squirrel5": 0, "pcg": 1}

UNIFORM: tl.constexpr = tl.constexpr(0)
UNIFORM01: tl.constexpr = tl.constexpr(1)
RADEMACHER: tl.constexpr = tl.constexpr(2)
UNIFORM8X4: tl.constexpr = tl.constexpr(3)
RADEMACHER32: tl.constexpr = tl.constexpr(4)
NORMAL: tl.constexpr = tl.constexpr(5)
DISTRIBUTION_IDS = {
    "uniform": 0, "uniform01": 1, "rademacher": 2, "uniform8x4": 3, "rademacher32": 4,
    "normal": 5,
}
# log2 of values per hash, by distribution id
LOG2_VALUES_PER_HASH = {0: 0, 1: 0, 2: 0, 3: 2, 4: 5, 5: 0}


@triton.jit
def squirrel5_u32(lo, seed):
    h = lo * SQ5_NOISE1
    h = h + seed
    h = h ^ (h >> 9)
    h = h + SQ5_NOISE2
    h = h ^ (h >> 11)
    h = h * SQ5_NOISE3
    h = h ^ (h >> 13)
    h = h + SQ5_NOISE4
    h = h ^ (h >> 15)
    h = h * SQ5_NOISE5
    return h ^ (h >> 17)


@triton.jit
def pcg_u32(lo, key):
    state = lo * PCG_MULTIPLIER + PCG_INCREMENT + key * PCG_KEY_MULTIPLIER
    word = ((state >> ((state >> 28) + 4)) ^ state) * PCG_OUTPUT_MULTIPLIER
    return (word >> 22) ^ word


@triton.jit
def window_key(key, hi):
    """The key of the 2^32-counter window `hi` (uint32); equals key for hi == 0."""
    return key ^ (hi * HIGH_WORD_MULTIPLIER)


@triton.jit
def hash_lo(lo, key, GENERATOR: tl.constexpr):
    """Hash of 32-bit counters `lo` (uint32) under a window key."""
    if GENERATOR == SQUIRREL5:
        h = squirrel5_u32(lo, key)
    else:
        h = pcg_u32(lo, key)
    return h


@triton.jit
def hash_at(index, key, GENERATOR: tl.constexpr):
    """Hash of 64-bit counters `index` (int64) under `key` (uint32)."""
    lo = (index & 0xFFFFFFFF).to(tl.uint32)
    hi = (index >> 32).to(tl.uint32)
    return hash_lo(lo, window_key(key, hi), GENERATOR)


# Floats are built from bits (exponent of 1.0 OR-ed with mantissa bits, then exact
# float arithmetic) rather than by int->float conversion, which runs at a quarter of the
# rate of other instructions on NVIDIA GPUs; the values are the same as reference.py's.
ONE_BITS: tl.constexpr = tl.constexpr(0x3F800000)


@triton.jit
def _one_plus_mantissa(mantissa):
    """1 + mantissa * 2^-23 for mantissa (uint32) < 2^23, exactly."""
    return (mantissa | ONE_BITS).to(tl.float32, bitcast=True)


@triton.jit
def uniform_from_hash(h):
    """((h >> 8) - 2^23) * 2^-23: [-1, 1) in steps of 2^-23, exact."""
    f = _one_plus_mantissa((h >> 8) & 0x7FFFFF)
    return tl.where((h >> 31) != 0, f - 1.0, f - 2.0)


@triton.jit
def uniform01_from_hash(h):
    """(h >> 8) * 2^-24: [0, 1) in steps of 2^-24, exact."""
    f = _one_plus_mantissa((h >> 8) & 0x7FFFFF)
    return tl.where((h >> 31) != 0, f, f - 1.0) * 0.5


@triton.jit
def rademacher_from_hash(h):
    """1 - 2 * (h >> 31): the hash's top bit becomes the sign of 1.0."""
    return ((h & 0x80000000) | ONE_BITS).to(tl.float32, bitcast=True)


@triton.jit
def uniform8x4_from_hash(h, position):
    """Value `position` (0..3, uint32) of the 4 bytes in hash h: (2 * byte - 255) / 256."""
    f = _one_plus_mantissa(((h >> (position * 8)) & 0xFF) << 15)  # 1 + byte / 256
    return f * 2.0 - 2.99609375


@triton.jit
def rademacher32_from_hash(h, position):
    """Value `position` (0..31, uint32) of the 32 bits in hash h: bit b -> 1 - 2b."""
    return ((((h >> position) & 1) << 31) | ONE_BITS).to(tl.float32, bitcast=True)


@triton.jit
def normal_from_hashes(h1, h2):
    u1 = ((h1 >> 8) + 1).to(tl.int32).to(tl.float32) * 5.9604644775390625e-08
    u2 = (h2 >> 8).to(tl.int32).to(tl.float32) * 5.9604644775390625e-08
    return tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)


@triton.jit
def sample(index, key, GENERATOR: tl.constexpr, DIST: tl.constexpr):
    """float32 value of distribution DIST at element counters `index` (int64).

    Generic per-element form: multi-value distributions hash once per element here; a
    kernel that lays elements out by hash group should use `*_from_hash` directly.
    """
    if DIST == UNIFORM:
        out = uniform_from_hash(hash_at(index, key, GENERATOR))
    elif DIST == UNIFORM01:
        out = uniform01_from_hash(hash_at(index, key, GENERATOR))
    elif DIST == RADEMACHER:
        out = rademacher_from_hash(hash_at(index, key, GENERATOR))
    elif DIST == UNIFORM8X4:
        out = uniform8x4_from_hash(hash_at(index >> 2, key, GENERATOR),
                                   (index & 3).to(tl.uint32))
    elif DIST == RADEMACHER32:
        out = rademacher32_from_hash(hash_at(index >> 5, key, GENERATOR),
                                     (index & 31).to(tl.uint32))
    else:
        out = normal_from_hashes(hash_at(index, key, GENERATOR),
                                 hash_at(index, key ^ NORMAL_SECOND_KEY_XOR, GENERATOR))
    return out
