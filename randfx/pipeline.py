"""`randfx.transform` and `randfx.materialize`: the public entry points of the pass pipeline.

(This file is not called transform.py: importing a submodule `randfx.transform` would
rebind the package attribute `randfx.transform` from the function to the module.)
"""

import copy
from typing import Optional

import torch
from torch import nn

from .config import Config
from .modules import SeededLayer


def _split_inputs(example_inputs):
    if example_inputs is None:
        return (), {}
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    raise TypeError(f"example_inputs must be a Tensor, a tuple/list of positional arguments "
                    f"or a dict of keyword arguments, got {type(example_inputs).__name__}")


def pipeline_passes(config: Config):
    """The passes transform runs for `config`, in order."""
    from randfx.passes.analyze import Analyze
    from randfx.passes.capture import Capture
    from randfx.passes.emit import Emit
    from randfx.passes.lower import Lower
    from randfx.passes.reparameterize import Reparameterize
    from randfx.passes.select import Select
    passes = [Capture(), Analyze(), Select(), Reparameterize(), Lower(), Emit()]
    if config.sparse_backward is not None:
        try:
            from randfx.passes.sparse_backward import SparseBackwardPass
        except ImportError as error:
            raise RuntimeError(
                "Config.sparse_backward is set but the sparse-backward pass "
                f"(randfx.passes.sparse_backward.SparseBackwardPass) is not available: "
                f"{error}") from error
        passes.append(SparseBackwardPass())
    return passes


def transform(model: nn.Module, config: Config, example_inputs=None, *,
              dump_graphs: Optional[str] = None) -> nn.Module:
    """A rewritten copy of `model` whose selected weights are regenerated from seeds.

    `model` is never modified, also when the transform fails. `example_inputs` (a
    tensor, a tuple of positional arguments or a dict of keyword arguments) are needed
    only for models torch.fx.symbolic_trace cannot trace; Hugging Face models fall back
    to their `dummy_inputs`. `dump_graphs`: a directory that receives the captured graph
    before and after every pass. Layers with no rule are left dense with a warning and
    listed in `result.randfx_report.left_dense`.
    """
    from randfx.passes.manager import PassManager, TransformContext
    if not isinstance(model, nn.Module):
        raise TypeError(f"randfx.transform: model must be a torch.nn.Module, "
                        f"got {type(model).__name__}")
    if not isinstance(config, Config):
        raise TypeError(f"randfx.transform: config must be a randfx.Config, "
                        f"got {type(config).__name__}")
    if hasattr(model, "randfx_config"):
        raise ValueError(f"randfx.transform: this {type(model).__name__} is already "
                         f"transformed; transform the original model instead")
    args, kwargs = _split_inputs(example_inputs)
    ctx = TransformContext(source=model, config=config, example_args=args,
                           example_kwargs=kwargs)
    PassManager(pipeline_passes(config), dump_dir=dump_graphs).run(ctx)
    return ctx.model


def materialize(model: nn.Module) -> nn.Module:
    """A copy of a transformed `model` in plain torch modules: every seeded layer becomes
    its original class (nn.Linear, nn.Conv2d, transformers Conv1D, ...) holding the dense
    weight it computes now, so outputs match and randfx is not needed to run it. Tied
    seeded layers of the same weight layout share one dense Parameter; a sparse backward
    is removed (dense training again). `model` is not modified."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"randfx.materialize: model must be a torch.nn.Module, "
                        f"got {type(model).__name__}")
    if not hasattr(model, "randfx_config"):
        raise ValueError(f"randfx.materialize: this {type(model).__name__} was not made by "
                         f"randfx.transform (it has no randfx_config)")
    result = copy.deepcopy(model)
    if hasattr(result, "randfx_sparse_backward"):
        from randfx.passes.sparse_backward import strip_sparse_backward
        strip_sparse_backward(result)
    paths = {}
    for name, module in result.named_modules(remove_duplicate=False):
        if isinstance(module, SeededLayer):
            parent_name, _, attribute = name.rpartition(".")
            paths.setdefault(id(module), (module, []))[1].append(
                (result.get_submodule(parent_name), attribute))
    dense = {}  # (weight name, layout) -> Parameter, so tied layers stay tied
    for layer, places in paths.values():
        shared = (layer.weight_name, type(layer.kind).to_module_layout)
        if shared not in dense:
            with torch.no_grad():
                weight = layer.dense_weight()
            dense[shared] = nn.Parameter(layer.kind.to_module_layout(weight).contiguous())
        layer.kind.restore(layer, dense[shared], places)
    for attribute in ("randfx_config", "randfx_report"):
        if hasattr(result, attribute):
            delattr(result, attribute)
    return result
