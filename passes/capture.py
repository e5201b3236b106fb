"""capture: trace the caller's model into an FX graph for analysis.

Requires: ctx.source (any nn.Module), optionally example inputs.
Guarantees: ctx.graph is a torch.fx.GraphModule of the model's forward, and every
node that stands for a parameter (placeholder or get_attr) carries
`node.meta["randfx_param"]` = the parameter's qualified name in ctx.source.
ctx.report.capture_path says which path succeeded. The source model is not modified.

Two paths, tried in order:
  symbolic_trace  torch.fx.symbolic_trace: needs no inputs, keeps Linear/Conv as
                  call_module nodes. Fails on most Hugging Face models (transformers 5.x:
                  "co_varnames is too small") and on data-dependent control flow.
  export          torch.export.export(strict=False) on the example inputs (or, for a
                  Hugging Face model, its `dummy_inputs`); an aten-level graph whose
                  parameters are placeholders. Caches are turned off (`use_cache=False`
                  where the forward accepts it) because their objects are not pytrees.
The graph is used only for analysis: emit rewrites the model's own modules (see emit.py),
so a captured graph never replaces the model.
"""

import inspect

import torch

from .manager import PassBase, PassResult


class CaptureError(ValueError):
    """No capture path could trace the model."""


def _forward_accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _export_inputs(ctx):
    args, kwargs = ctx.example_args, dict(ctx.example_kwargs)
    if not args and not kwargs:
        dummy = getattr(ctx.source, "dummy_inputs", None)
        if isinstance(dummy, dict) and dummy:
            device = next(ctx.source.parameters()).device
            kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                      for k, v in dummy.items()}
    if (args or kwargs) and "use_cache" not in kwargs and _forward_accepts(ctx.source, "use_cache"):
        kwargs["use_cache"] = False
    return args, kwargs


def _symbolic_trace(ctx):
    graph_module = torch.fx.symbolic_trace(ctx.source)
    for node in graph_module.graph.nodes:
        if node.op == "get_attr":
            node.meta["randfx_param"] = node.target
    return graph_module


def _export(ctx):
    args, kwargs = _export_inputs(ctx)
    if not args and not kwargs:
        raise CaptureError("no example inputs: pass example_inputs to randfx.transform")
    program = torch.export.export(ctx.source, args, kwargs, strict=False)
    signature = program.graph_signature
    names = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}
    graph_module = program.graph_module
    for node in graph_module.graph.nodes:
        if node.op == "placeholder" and node.name in names:
            node.meta["randfx_param"] = names[node.name]
    return graph_module


class Capture(PassBase):
    name = "capture"
    requires = ("source",)

    def run(self, ctx):
        failures = []
        for path, trace in (("symbolic_trace", _symbolic_trace), ("export", _export)):
            try:
                ctx.graph = trace(ctx)
            except Exception as error:  # every tracer failure means: try the next path
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
                failures.append(f"{path}: {type(error).__name__}: {first_line}")
                continue
            ctx.report.capture_path = path
            return PassResult(True, f"captured with {path}")
        raise CaptureError(
            f"randfx.transform cannot capture {type(ctx.source).__name__}: "
            + "; ".join(failures)
            + ". Pass example_inputs (a tensor, a tuple of positional arguments or a dict "
              "of keyword arguments) that the model's forward accepts.")
