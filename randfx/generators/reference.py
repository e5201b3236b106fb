"""Torch reference of every stream: int64 tensors holding uint32 values, all arithmetic
masked to 32 bits and free of int64 overflow, so it gives the same bits on any CPU.

This is the definition the Triton device functions are tested against. On the CPU it
works through counters in chunks of CPU_CHUNK, so each step's int64 temporaries stay in
the cache (16M pcg hashes: 0.6 s in one pass, about 0.06 s in chunks, 2 cores), and
`sample_range` hashes each group of a packed distribution (rademacher32: 32 values per
hash) once instead of once per value.
"""

import math

import torch

from . import spec

_M = spec.MASK32
CPU_CHUNK = 1 << 14


def _mul32(a: torch.Tensor, constant: int) -> torch.Tensor:
    """(a * constant) mod 2^32 for a holding uint32 values, without int64 overflow: the
    constant is split in 16-bit halves so every partial product stays below 2^48."""
    high = a * (constant >> 16)
    high &= 0xFFFF
    high <<= 16
    high += a * (constant & 0xFFFF)
    return high.bitwise_and_(_M)


def split_index(index: torch.Tensor):
    """(lo, hi) 32-bit words of a non-negative int64 counter."""
    return index & _M, (index >> 32) & _M


def effective_key(key: int, hi: torch.Tensor) -> torch.Tensor:
    return _mul32(hi, spec.HIGH_WORD_MULTIPLIER) ^ key


def squirrel5_u32(lo: torch.Tensor, seed) -> torch.Tensor:
    """SquirrelNoise5 of 32-bit positions `lo` under 32-bit `seed` (int or tensor)."""
    h = (_mul32(lo, spec.SQ5_NOISE1) + seed).bitwise_and_(_M)  # seed may broadcast h
    h ^= h >> 9
    h += spec.SQ5_NOISE2
    h &= _M
    h ^= h >> 11
    h = _mul32(h, spec.SQ5_NOISE3)
    h ^= h >> 13
    h += spec.SQ5_NOISE4
    h &= _M
    h ^= h >> 15
    h = _mul32(h, spec.SQ5_NOISE5)
    h ^= h >> 17
    return h


def pcg_u32(lo: torch.Tensor, key) -> torch.Tensor:
    """PCG-RXS-M-XS output permutation of the state lo * MULT + INC + key * KEY_MULT."""
    key_term = _mul32(torch.as_tensor(key, dtype=torch.int64), spec.PCG_KEY_MULTIPLIER)
    state = (_mul32(lo, spec.PCG_MULTIPLIER) + key_term).add_(spec.PCG_INCREMENT)
    state &= _M  # the key term may broadcast lo
    word = state >> ((state >> 28) + 4)
    word ^= state
    word = _mul32(word, spec.PCG_OUTPUT_MULTIPLIER)
    word ^= word >> 22
    return word


_HASHES = {"squirrel5": squirrel5_u32, "pcg": pcg_u32}


def _in_chunks(function, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """function(index) elementwise, CPU_CHUNK counters at a time on the CPU."""
    if index.device.type != "cpu" or index.numel() <= CPU_CHUNK:
        return function(index)
    flat = index.reshape(-1)
    out = torch.empty(flat.shape, dtype=dtype)
    for start in range(0, flat.numel(), CPU_CHUNK):
        out[start:start + CPU_CHUNK] = function(flat[start:start + CPU_CHUNK])
    return out.view(index.shape)


def _hash(index: torch.Tensor, key: int, generator: str) -> torch.Tensor:
    lo, hi = split_index(index)
    return _HASHES[generator](lo, effective_key(key, hi))


def hash_u32(index: torch.Tensor, key: int, generator: str) -> torch.Tensor:
    """The generator's uint32 output (as int64) at each 64-bit counter in `index`."""
    return _in_chunks(lambda part: _hash(part, key, generator), index, torch.int64)


def _uniform_pm1(h: torch.Tensor) -> torch.Tensor:
    return ((h >> 8) - (1 << 23)).to(torch.float32) * (2.0 ** -23)


def _uniform01(h: torch.Tensor) -> torch.Tensor:
    return (h >> 8).to(torch.float32) * (2.0 ** -24)


# the distributions `_packed` decodes: log2 of their values per hash
_LOG2_VALUES = {name: spec.DISTRIBUTIONS[name].values_per_hash.bit_length() - 1
                for name in ("uniform8x4", "rademacher32")}


def _packed(h: torch.Tensor, position: torch.Tensor, dist: str) -> torch.Tensor:
    """Value `position` (0 .. values_per_hash - 1) of hash h, for the packed distributions."""
    if dist == "uniform8x4":
        byte = (h >> (position * 8)) & 0xFF
        return (2 * byte - 255).to(torch.float32) * (1.0 / 256.0)
    bit = (h >> position) & 1  # rademacher32
    return (1 - 2 * bit).to(torch.float32)


def _sample(index: torch.Tensor, key: int, generator: str, dist: str) -> torch.Tensor:
    if dist == "uniform":
        return _uniform_pm1(_hash(index, key, generator))
    if dist == "uniform01":
        return _uniform01(_hash(index, key, generator))
    if dist == "rademacher":
        return (1 - 2 * (_hash(index, key, generator) >> 31)).to(torch.float32)
    if dist in ("uniform8x4", "rademacher32"):
        shift = _LOG2_VALUES[dist]
        return _packed(_hash(index >> shift, key, generator), index & ((1 << shift) - 1), dist)
    if dist == "normal":
        h1 = _hash(index, key, generator)
        h2 = _hash(index, key ^ spec.NORMAL_SECOND_KEY_XOR, generator)
        u1 = ((h1 >> 8) + 1).to(torch.float32) * (2.0 ** -24)  # (0, 1]: log is finite
        u2 = (h2 >> 8).to(torch.float32) * (2.0 ** -24)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
    raise ValueError(f"dist={dist!r} is unknown; accepted: {sorted(spec.DISTRIBUTIONS)}")



def sample(index: torch.Tensor, key: int, generator: str, dist: str) -> torch.Tensor:
    """float32 value of distribution `dist` at each element counter in `index`."""
    return _in_chunks(lambda part: _sample(part, key, generator, dist), index, torch.float32)


def sample_range(first: int, count: int, key: int, generator: str, dist: str,
                 device=None) -> torch.Tensor:
    """sample() at the counters first .. first + count - 1: the same values, with each
    hash of a packed distribution computed once for its values_per_hash elements."""
    shift = _LOG2_VALUES.get(dist)
    if shift is None:
        return sample(torch.arange(first, first + count, dtype=torch.int64, device=device),
                      key, generator, dist)
    values = 1 << shift
    position = torch.arange(values, dtype=torch.int64, device=device)
    first_group, last_group = first >> shift, (first + count - 1) >> shift
    out = torch.empty(count, dtype=torch.float32, device=device)
    # a chunk's values take twice CPU_CHUNK: the per-value steps are fewer than a hash's
    groups_per_chunk = max(1, (2 * CPU_CHUNK) >> shift) if out.device.type == "cpu" else count
    for group in range(first_group, last_group + 1, groups_per_chunk):
        stop = min(last_group + 1, group + groups_per_chunk)
        h = _hash(torch.arange(group, stop, dtype=torch.int64, device=device), key, generator)
        chunk = _packed(h[:, None], position, dist).view(-1)
        begin = max(first, group << shift)  # the counters of this chunk that are wanted
        end = min(first + count, stop << shift)
        out[begin - first:end - first] = chunk[begin - (group << shift):end - (group << shift)]
    return out
