"""The stream specification: every generator and distribution randfx ships, by name and
version. This file is the single source of truth for the constants; the torch reference
(`reference.py`) and the Triton device functions (`device.py`) both read them from here.

A stream is identified by (generator name, generator version, distribution name,
distribution version). Streams are never changed in place: a changed algorithm gets a new
name or version, and the golden-vector tests fail on purpose if anyone edits one.

Counter layout. A generator maps (key, index) -> uint32 where key is a 32-bit unsigned
integer and index a 64-bit counter. The index is split into words lo = index & 0xFFFFFFFF
and hi = index >> 32; the high word is folded into the key,

    effective_key = key XOR (hi * HIGH_WORD_MULTIPLIER  mod 2^32)

so that for index < 2^32 the generator is the plain 32-bit function of (lo, key) and
above 2^32 each high word selects a different stream (nothing wraps silently).
"""

from dataclasses import dataclass

MASK32 = 0xFFFFFFFF
MAX_KEY = MASK32
MAX_INDEX = (1 << 63) - 1
MAX_ROOT_SEED = (1 << 64) - 1

# golden-ratio constant (odd): a bijection on uint32, so distinct high words give distinct keys
HIGH_WORD_MULTIPLIER = 0x9E3779B9

# SquirrelNoise5, Squirrel Eiserloh (GDC 2017 "Noise-based RNG"; SquirrelNoise5.hpp,
# CC-BY-3.0), as used by RANDUMB's Triton PMV kernel.
SQ5_NOISE1 = 0xD2A80A3F
SQ5_NOISE2 = 0xA884F197
SQ5_NOISE3 = 0x6C736F4B
SQ5_NOISE4 = 0xB79F3ABB
SQ5_NOISE5 = 0x1B56C4F5

# PCG-RXS-M-XS 32-bit output permutation (O'Neill 2014) used as a hash, as in Jarzynski &
# Olano, "Hash Functions for GPU Rendering" (JCGT 2020). The key enters through the
# state increment, multiplied by an odd constant so every key selects a distinct stream.
PCG_MULTIPLIER = 747796405
PCG_INCREMENT = 2891336453
PCG_KEY_MULTIPLIER = 0x9E3779B9
PCG_OUTPUT_MULTIPLIER = 277803737

# "normal" draws its second uniform from the same counter under this key, so that one
# element still depends only on (key, index)
NORMAL_SECOND_KEY_XOR = 0x5BD1E995


@dataclass(frozen=True)
class GeneratorSpec:
    name: str
    version: int
    description: str


@dataclass(frozen=True)
class DistributionSpec:
    name: str
    version: int
    values_per_hash: int  # elements drawn from one 32-bit hash
    bits_per_value: int
    variance: float  # of one element; the ops scale by 1/sqrt(variance) where needed
    exact: bool  # bit-exact on every backend (False: tolerance below)
    description: str
    tolerance: float = 0.0  # max abs difference between backends where exact is False
    mean: float = 0.0


GENERATORS = {
    "squirrel5": GeneratorSpec(
        "squirrel5", 1, "SquirrelNoise5 (Eiserloh); 3 multiplies, 5 xor-shifts per value"),
    "pcg": GeneratorSpec(
        "pcg", 1, "PCG-RXS-M-XS hash; 2 multiplies, cheapest per hash"),
}
DEFAULT_GENERATOR = "pcg"

DISTRIBUTIONS = {
    "uniform": DistributionSpec(
        "uniform", 1, 1, 24, 1.0 / 3.0, True,
        "uniform on [-1, 1) in steps of 2^-23: ((h >> 8) - 2^23) * 2^-23"),
    "uniform01": DistributionSpec(
        "uniform01", 1, 1, 24, 1.0 / 12.0, True,
        "uniform on [0, 1) in steps of 2^-24: (h >> 8) * 2^-24", mean=0.5),
    "rademacher": DistributionSpec(
        "rademacher", 1, 1, 1, 1.0, True, "+1 or -1 from the top bit of the hash"),
    "uniform8x4": DistributionSpec(
        "uniform8x4", 1, 4, 8, (256.0 ** 2 - 1.0) / (3.0 * 256.0 ** 2), True,
        "4 values per hash: byte b of hash (index >> 2), b = index & 3, "
        "mapped to (2 * byte - 255) / 256, symmetric in (-1, 1)"),
    "rademacher32": DistributionSpec(
        "rademacher32", 1, 32, 1, 1.0, True,
        "32 values per hash: bit b of hash (index >> 5), b = index & 31, mapped to +1/-1"),
    "normal": DistributionSpec(
        "normal", 1, 1, 48, 1.0, False,
        "Box-Muller on two 24-bit uniforms (counter index under key and under "
        "key ^ 0x5BD1E995); cos and log differ by a few ulp between libraries",
        tolerance=1e-5),
}
DEFAULT_DISTRIBUTION = "rademacher32"


def generator_spec(name: str) -> GeneratorSpec:
    try:
        return GENERATORS[name]
    except KeyError:
        raise ValueError(
            f"generator={name!r} is unknown; accepted: {sorted(GENERATORS)}") from None


def distribution_spec(name: str) -> DistributionSpec:
    try:
        return DISTRIBUTIONS[name]
    except KeyError:
        raise ValueError(
            f"dist={name!r} is unknown; accepted: {sorted(DISTRIBUTIONS)}") from None


def check_key(key, argument: str = "key") -> int:
    if isinstance(key, bool) or not isinstance(key, int):
        raise ValueError(f"{argument} must be an int in [0, 2^32 - 1], got {key!r}")
    if not 0 <= key <= MAX_KEY:
        raise ValueError(f"{argument}={key} is outside the accepted range [0, 2^32 - 1]")
    return key


def check_index_range(offset: int, numel: int, argument: str = "offset") -> None:
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise ValueError(f"{argument} must be an int in [0, 2^63 - 1], got {offset!r}")
    if offset < 0 or offset + numel - 1 > MAX_INDEX:
        raise ValueError(
            f"{argument}={offset} with {numel} elements leaves the accepted index range "
            f"[0, 2^63 - 1]")
