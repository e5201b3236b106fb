"""Counter-based, bit-exact, versioned random streams (DESIGN.md contract 1).

    squirrel5(index, seed)    SquirrelNoise5 of 64-bit counters -> uint32 (in int64)
    pcg(index, key)           the cheaper PCG-RXS-M-XS hash, same interface
    generate(shape, key=...)  a tensor of one distribution; element i depends only on
                              (key, offset + i), so any slice can be generated alone
    derive_key(root, name)    a per-tensor key from a root seed and a stable tensor name

On CPU `generate` runs the torch reference (`reference.py`); on CUDA a Triton kernel
(`randfx/kernels/generate.py`) built from the device functions in `device.py`. Both give
the same bits; the golden vectors in tests/test_generators.py pin every stream.
"""

import hashlib
import math

import torch

from . import reference, spec
from .spec import (DEFAULT_DISTRIBUTION, DEFAULT_GENERATOR, DISTRIBUTIONS, GENERATORS,
                   DistributionSpec, GeneratorSpec, distribution_spec, generator_spec)

__all__ = [
    "squirrel5", "pcg", "generate", "derive_key", "GENERATORS", "DISTRIBUTIONS",
    "DEFAULT_GENERATOR", "DEFAULT_DISTRIBUTION", "GeneratorSpec", "DistributionSpec",
    "generator_spec", "distribution_spec", "stream_versions",
]

_DERIVE_KEY_DOMAIN = b"randfx.derive_key.v1\x00"


def _counters(index) -> torch.Tensor:
    index = torch.as_tensor(index)
    if index.dtype != torch.int64:
        raise ValueError(f"index must be an int64 tensor, got dtype {index.dtype}")
    if index.numel() and int(index.min()) < 0:
        raise ValueError("index must be non-negative (counters lie in [0, 2^63 - 1])")
    return index


def squirrel5(index, seed: int) -> torch.Tensor:
    """SquirrelNoise5 (Squirrel Eiserloh) at each counter of the int64 tensor `index`.

    For index < 2^32 and seed < 2^32 this is exactly SquirrelNoise5(index, seed); the high
    counter word is folded into the seed (see spec.py). Returns uint32 values as int64.
    """
    spec.check_key(seed, "seed")
    return reference.hash_u32(_counters(index), seed, "squirrel5")


def pcg(index, key: int) -> torch.Tensor:
    """PCG-RXS-M-XS hash at each counter of `index` under `key`; uint32 values as int64."""
    spec.check_key(key, "key")
    return reference.hash_u32(_counters(index), key, "pcg")


def derive_key(root_seed: int, name: str) -> int:
    """A 32-bit key for the tensor called `name` under `root_seed`.

    BLAKE2b over a domain tag, the root seed (8 bytes little-endian) and the UTF-8 name:
    identical on every process, platform and Python version (unlike `hash()`).
    """
    if isinstance(root_seed, bool) or not isinstance(root_seed, int):
        raise ValueError(f"root_seed must be an int in [0, 2^64 - 1], got {root_seed!r}")
    if not 0 <= root_seed <= spec.MAX_ROOT_SEED:
        raise ValueError(f"root_seed={root_seed} is outside the accepted range [0, 2^64 - 1]")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    digest = hashlib.blake2b(
        _DERIVE_KEY_DOMAIN + root_seed.to_bytes(8, "little") + name.encode("utf-8"),
        digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _check_shape(shape) -> tuple:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be an int or a sequence of ints, got {shape!r}") from None
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"shape must hold non-negative ints, got {shape!r}")
    return shape


_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def generate(shape, *, key: int, generator: str = DEFAULT_GENERATOR,
             dist: str = DEFAULT_DISTRIBUTION, dtype: torch.dtype = torch.float32,
             device="cpu", offset: int = 0, backend: str = "auto") -> torch.Tensor:
    """A tensor of `shape` whose flattened element i is the value of stream
    (generator, dist) at counter offset + i under `key`.

    Values are computed in float32 and rounded to `dtype`. `backend`: "auto" (Triton on
    CUDA, torch reference on CPU), "reference", or "triton" (on CPU it needs
    TRITON_INTERPRET=1).
    """
    shape = _check_shape(shape)
    spec.check_key(key)
    generator_spec(generator)
    distribution_spec(dist)
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {_FLOAT_DTYPES}, got {dtype}")
    numel = math.prod(shape)
    spec.check_index_range(offset, numel)
    device = torch.device(device)
    if backend not in ("auto", "reference", "triton"):
        raise ValueError(f"backend={backend!r}; accepted: 'auto', 'reference', 'triton'")
    use_triton = backend == "triton" or (backend == "auto" and device.type == "cuda")
    if use_triton:
        from .._triton import triton_runs_on
        if not triton_runs_on(device):
            raise ValueError(
                f"backend='triton' cannot run on device {device}: it needs CUDA with Triton, "
                "or a CPU with TRITON_INTERPRET=1")
        from ..kernels.generate import launch_generate
        out = torch.empty(numel, dtype=dtype, device=device)
        if numel:
            launch_generate(out, key, offset, generator, dist)
        return out.view(shape)
    return reference.sample_range(offset, numel, key, generator, dist, device).to(dtype).view(
        shape)


def stream_versions() -> dict:
    """{"generators": {name: version}, "distributions": {name: version}} for artifacts."""
    return {
        "generators": {name: g.version for name, g in GENERATORS.items()},
        "distributions": {name: d.version for name, d in DISTRIBUTIONS.items()},
    }
