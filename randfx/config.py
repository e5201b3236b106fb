"""What `randfx.transform` should do to a model: versioned, JSON-serialisable settings.

`Config` says how each selected weight is expressed (the scheme, DESIGN.md contract 3),
which weights are selected, and from which root seed every generated tensor derives its
key. `SparseBackward` configures the random-walk sparse backward (contract 6). Both are
frozen dataclasses validated on construction: a bad value raises ValueError naming the
field and the accepted range. `to_dict()` / `from_dict()` round-trip through JSON; the
artifact stores `Config.to_dict()` and `load` rebuilds the same transform from it.
"""

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, Optional, Tuple

from .generators.spec import (DEFAULT_DISTRIBUTION, DEFAULT_GENERATOR, MAX_ROOT_SEED,
                              distribution_spec, generator_spec)

SCHEMES = ("dense", "frozen", "random_base_lora", "subspace")
# named so that asking for them gets "not implemented yet" instead of "unknown"
PLANNED_SCHEMES = ("fastfood",)
SCOPES = ("layer", "global")
WEIGHTINGS = ("magnitude", "uniform")
RESAMPLES = ("every_step",)
PROPAGATIONS = ("kept_rows", "all_rows")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_positive_int(owner: str, name: str, value) -> None:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{owner}.{name} must be an int >= 1, got {value!r}")


def _check_choice(owner: str, name: str, value, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"{owner}.{name}={value!r}; accepted: {', '.join(map(repr, accepted))}")


def _from_dict(cls, data: dict):
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known - {"version"})
    if unknown:
        raise ValueError(f"{cls.__name__}.from_dict: unknown field(s) {unknown}; "
                         f"accepted: {sorted(known)}")
    version = data.get("version", cls.VERSION)
    if not _is_int(version) or version < 1:
        raise ValueError(f"{cls.__name__} version must be an int >= 1, got {version!r}")
    if version > cls.VERSION:
        raise ValueError(f"{cls.__name__} version {version} is newer than this randfx "
                         f"understands (up to {cls.VERSION}); upgrade randfx")
    return cls(**{k: v for k, v in data.items() if k != "version"})


@dataclass(frozen=True)
class SparseBackward:
    """Random-walk sparse backward: `num_paths` walks per step pick the rows that get
    gradients. `temperature` sharpens (<1) or flattens (>1) the row weighting,
    `epsilon` mixes in that much uniform probability, `weighting` is "magnitude" (rows
    by weight magnitude) or "uniform", `resample` when walks are redrawn.

    `propagate` is what the layer below receives. "kept_rows" (DESIGN.md contract 6):
    only the kept rows carry gradient down, so the whole backward shrinks with them.
    "all_rows" (seed 004's semantics, a dense backward with the weight gradients masked
    to the kept rows): weights and biases still get gradient only in the kept rows, but
    the input gradient goes through every row, so only the weight-gradient GEMM shrinks.
    It learns faster at few paths (MNIST, 10 paths: docs/performance.md)."""

    VERSION: ClassVar[int] = 1

    num_paths: int
    temperature: float = 1.0
    epsilon: float = 0.0
    weighting: str = "magnitude"
    resample: str = "every_step"
    propagate: str = "kept_rows"

    def __post_init__(self):
        owner = "SparseBackward"
        _check_positive_int(owner, "num_paths", self.num_paths)
        if not _is_real(self.temperature) or self.temperature <= 0:
            raise ValueError(f"{owner}.temperature must be a finite number > 0, "
                             f"got {self.temperature!r}")
        if not _is_real(self.epsilon) or not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"{owner}.epsilon must be a number in [0, 1], got {self.epsilon!r}")
        _check_choice(owner, "weighting", self.weighting, WEIGHTINGS)
        _check_choice(owner, "resample", self.resample, RESAMPLES)
        _check_choice(owner, "propagate", self.propagate, PROPAGATIONS)

    def to_dict(self) -> dict:
        return {"version": self.VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "SparseBackward":
        return _from_dict(cls, data)


@dataclass(frozen=True)
class Config:
    """How `randfx.transform` rewrites a model.

    scheme           "dense" (weights untouched; other passes such as sparse_backward
                     still apply), "frozen" (W = s * R(key)), "random_base_lora"
                     (W = s * R(key) + lora_scaling * lora_B @ lora_A), "subspace"
                     (W = W0(key) + P(key') @ alpha). "fastfood" is planned, not built.
    seed             root seed in [0, 2^64 - 1]; every key is derive_key(seed, name)
    rank, lora_alpha LoRA rank and alpha (lora_scaling = lora_alpha / rank; None: alpha
                     = rank, scaling 1)
    dim, scope       subspace dimension; scope "layer" gives every weight its own alpha
                     of `dim` entries, "global" one alpha of `dim` for all (PRANC)
    target_modules   None: every Linear and Conv layer. Otherwise entries, each one of
                     "all-linear" (every Linear-like layer), "re:<regex>" (full match of
                     the module's qualified name), or a qualified name / name suffix
                     ("c_attn" matches "h.0.attn.c_attn"). Embeddings are rewritten
                     only when named here.
    exclude_modules  entries as above; matching modules stay dense
    generator, dist  the stream of every generated tensor (randfx.generators names)
    init_std         None: generated weights get PyTorch's default init variance
                     (1/(3 fan_in) for Linear/Conv, 1 for Embedding); a number: that
                     standard deviation (e.g. a Hugging Face config's initializer_range)
    sparse_backward  a SparseBackward, or None for the ordinary dense backward
    """

    VERSION: ClassVar[int] = 1

    scheme: str
    seed: int = 0
    rank: int = 16
    lora_alpha: Optional[float] = None
    dim: Optional[int] = None
    scope: str = "layer"
    target_modules: Optional[Tuple[str, ...]] = None
    exclude_modules: Tuple[str, ...] = ()
    generator: str = DEFAULT_GENERATOR
    dist: str = DEFAULT_DISTRIBUTION
    init_std: Optional[float] = None
    sparse_backward: Optional[SparseBackward] = field(default=None)

    def __post_init__(self):
        owner = "Config"
        if self.scheme in PLANNED_SCHEMES:
            raise ValueError(f"Config.scheme={self.scheme!r} is not implemented yet; "
                             f"accepted: {', '.join(map(repr, SCHEMES))}")
        _check_choice(owner, "scheme", self.scheme, SCHEMES)
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_ROOT_SEED:
            raise ValueError(f"Config.seed must be an int in [0, 2^64 - 1], got {self.seed!r}")
        _check_positive_int(owner, "rank", self.rank)
        if self.lora_alpha is not None and (not _is_real(self.lora_alpha) or self.lora_alpha <= 0):
            raise ValueError(f"Config.lora_alpha must be a finite number > 0 or None, "
                             f"got {self.lora_alpha!r}")
        if self.dim is not None:
            _check_positive_int(owner, "dim", self.dim)
        if self.scheme == "subspace" and self.dim is None:
            raise ValueError("Config.dim is required for scheme='subspace' (an int >= 1: "
                             "coefficients per weight, or in all with scope='global')")
        if self.scheme != "subspace" and self.dim is not None:
            raise ValueError(f"Config.dim applies only to scheme='subspace', "
                             f"not scheme={self.scheme!r}")
        _check_choice(owner, "scope", self.scope, SCOPES)
        if self.scope == "global" and self.scheme != "subspace":
            raise ValueError(f"Config.scope='global' applies only to scheme='subspace', "
                             f"not scheme={self.scheme!r}")
        object.__setattr__(self, "target_modules",
                           None if self.target_modules is None
                           else _module_patterns("target_modules", self.target_modules))
        object.__setattr__(self, "exclude_modules",
                           _module_patterns("exclude_modules", self.exclude_modules))
        if self.target_modules == ():
            raise ValueError("Config.target_modules is empty; give None (every Linear and "
                             "Conv layer) or at least one entry")
        try:
            generator_spec(self.generator)
            distribution_spec(self.dist)
        except ValueError as error:
            raise ValueError(f"Config: {error}") from None
        if self.init_std is not None and (not _is_real(self.init_std) or self.init_std <= 0):
            raise ValueError(f"Config.init_std must be a finite number > 0 or None, "
                             f"got {self.init_std!r}")
        if isinstance(self.sparse_backward, dict):
            object.__setattr__(self, "sparse_backward",
                               SparseBackward.from_dict(self.sparse_backward))
        if self.sparse_backward is not None and not isinstance(self.sparse_backward,
                                                               SparseBackward):
            raise TypeError(f"Config.sparse_backward must be a randfx.SparseBackward or None, "
                            f"got {type(self.sparse_backward).__name__}")

    @property
    def lora_scaling(self) -> float:
        return (self.rank if self.lora_alpha is None else self.lora_alpha) / self.rank

    def to_dict(self) -> dict:
        data = {"version": self.VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, SparseBackward):
                value = value.to_dict()
            data[f.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        return _from_dict(cls, data)


def _module_patterns(name: str, value) -> Tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        patterns = tuple(value)
    except TypeError:
        raise TypeError(f"Config.{name} must be a str or a sequence of str, "
                        f"got {type(value).__name__}") from None
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"Config.{name} entries must be non-empty str, got {pattern!r}")
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as error:
                raise ValueError(f"Config.{name} entry {pattern!r} is not a valid regex: "
                                 f"{error}") from None
    return patterns
