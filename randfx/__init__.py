"""randfx: regenerate large weights from seeds inside fused kernels; learn and save only
small coefficients.

The package imports lazily: ``import randfx`` loads neither Triton nor CUDA. Public names
resolve on first use through ``__getattr__`` from the table below.
"""

import importlib.util
import os
import sys
from importlib import import_module

__version__ = "0.1.0"


def _bind_source_passes() -> None:
    """Make `randfx.passes` importable from a source checkout.

    The passes live in the top-level folder passes/, which pyproject installs as
    randfx.passes. When this package is imported from the checkout itself (`python -m
    randfx` or `python -m pytest` from the repository root put the checkout first on
    sys.path), randfx/passes does not exist: bind the sibling folder under that name.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    source = os.path.join(os.path.dirname(here), "passes")
    if "randfx.passes" in sys.modules or os.path.isdir(os.path.join(here, "passes")):
        return
    init = os.path.join(source, "__init__.py")
    if not os.path.isfile(init):
        return
    spec = importlib.util.spec_from_file_location("randfx.passes", init,
                                                  submodule_search_locations=[source])
    module = importlib.util.module_from_spec(spec)
    sys.modules["randfx.passes"] = module
    spec.loader.exec_module(module)
    globals()["passes"] = module


_bind_source_passes()

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
