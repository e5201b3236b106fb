"""Torch reference of every stream: int64 tensors holding uint32 values, all arithmetic
masked to 32 bits and free of int64 overflow, so it gives the same bits on any CPU.

This is the definition the Triton device functions are tested against.
"""

import math

import torch

from . import spec

_M = spec.MASK32


def _mul32(a: torch.Tensor, constant: int) -> torch.Tensor:
    """(a * constant) mod 2^32 for a holding uint32 values, without int64 overflow: the
    constant is split in 16-bit halves so every partial product stays below 2^48."""
    low = a * (constant & 0xFFFF)
    high = ((a * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _M


def split_index(index: torch.Tensor):
    """(lo, hi) 32-bit words of a non-negative int64 counter."""
    return index & _M, (index >> 32) & _M


def effective_key(key: int, hi: torch.Tensor) -> torch.Tensor:
    return _mul32(hi, spec.HIGH_WORD_MULTIPLIER) ^ key


def squirrel5_u32(lo: torch.Tensor, seed) -> torch.Tensor:
    """SquirrelNoise5 of 32-bit positions `lo` under 32-bit `seed` (int or tensor)."""
    h = _mul32(lo, spec.SQ5_NOISE1)
    h = (h + seed) & _M
    h = h ^ (h >> 9)
    h = (h + spec.SQ5_NOISE2) & _M
    h = h ^ (h >> 11)
    h = _mul32(h, spec.SQ5_NOISE3)
    h = h ^ (h >> 13)
    h = (h + spec.SQ5_NOISE4) & _M
    h = h ^ (h >> 15)
    h = _mul32(h, spec.SQ5_NOISE5)
    return h ^ (h >> 17)


def pcg_u32(lo: torch.Tensor, key) -> torch.Tensor:
    """PCG-RXS-M-XS output permutation of the state lo * MULT + INC + key * KEY_MULT."""
    key_term = _mul32(torch.as_tensor(key, dtype=torch.int64), spec.PCG_KEY_MULTIPLIER)
    state = (_mul32(lo, spec.PCG_MULTIPLIER) + spec.PCG_INCREMENT + key_term) & _M
    word = _mul32((state >> ((state >> 28) + 4)) ^ state, spec.PCG_OUTPUT_MULTIPLIER)
    return (word >> 22) ^ word


_HASHES = {"squirrel5": squirrel5_u32, "pcg": pcg_u32}


def hash_u32(index: torch.Tensor, key: int, generator: str) -> torch.Tensor:
    """The generator's uint32 output (as int64) at each 64-bit counter in `index`."""
    lo, hi = split_index(index)
    return _HASHES[generator](lo, effective_key(key, hi))


def _uniform_pm1(h: torch.Tensor) -> torch.Tensor:
    return ((h >> 8) - (1 << 23)).to(torch.float32) * (2.0 ** -23)


def _uniform01(h: torch.Tensor) -> torch.Tensor:
    return (h >> 8).to(torch.float32) * (2.0 ** -24)


def sample(index: torch.Tensor, key: int, generator: str, dist: str) -> torch.Tensor:
    """float32 value of distribution `dist` at each element counter in `index`."""
    if dist == "uniform":
        return _uniform_pm1(hash_u32(index, key, generator))
    if dist == "uniform01":
        return _uniform01(hash_u32(index, key, generator))
    if dist == "rademacher":
        return (1 - 2 * (hash_u32(index, key, generator) >> 31)).to(torch.float32)
    if dist == "uniform8x4":
        h = hash_u32(index >> 2, key, generator)
        byte = (h >> ((index & 3) * 8)) & 0xFF
        return (2 * byte - 255).to(torch.float32) * (1.0 / 256.0)
    if dist == "rademacher32":
        h = hash_u32(index >> 5, key, generator)
        bit = (h >> (index & 31)) & 1
        return (1 - 2 * bit).to(torch.float32)
    if dist == "normal":
        h1 = hash_u32(index, key, generator)
        h2 = hash_u32(index, key ^ spec.NORMAL_SECOND_KEY_XOR, generator)
        u1 = ((h1 >> 8) + 1).to(torch.float32) * (2.0 ** -24)  # (0, 1]: log is finite
        u2 = (h2 >> 8).to(torch.float32) * (2.0 ** -24)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
    raise ValueError(f"dist={dist!r} is unknown; accepted: {sorted(spec.DISTRIBUTIONS)}")
