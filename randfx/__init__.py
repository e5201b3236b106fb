"""randfx: regenerate large weights from seeds inside fused kernels; learn and save only
small coefficients.

The package imports lazily: ``import randfx`` loads neither Triton nor CUDA. Public names
resolve on first use through ``__getattr__`` from the table below.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "generators": "randfx.generators",
    "derive_key": "randfx.generators",
    "generate": "randfx.generators",
    "ArtifactError": "randfx.errors",
    "Config": "randfx.config",
    "SparseBackward": "randfx.config",
    "transform": "randfx.pipeline",
    "materialize": "randfx.pipeline",
    "save": "randfx.artifact",
    "load": "randfx.artifact",
    "inspect": "randfx.report",
    "draw": "randfx.drawing",
    "distributed": "randfx.distributed",
}


def __getattr__(name):
    module_name = _PUBLIC.get(name)
    if module_name is None:
        raise AttributeError(f"module 'randfx' has no attribute {name!r}")
    module = import_module(module_name)
    value = module if module_name.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = sorted(_PUBLIC)
