"""The torch.compile backend "randfx" (DESIGN.md contract 7).

    torch.compile(model, backend="randfx")

resolves through the `torch_dynamo_backends` entry point declared in pyproject.toml, so it
works after `pip install` without importing randfx first. The name is deliberately NOT
registered again at import: Dynamo asserts on a second registration of the same name.

Pipeline. Dynamo hands over one FX graph per frame. Inductor's `compile_fx` runs
aot_autograd on it (functionalise, decompose to aten, build the joint graph, partition it
into forward and backward) and calls its `inner_compile` once per resulting graph: the
forward (or inference) graph and, lazily at the first backward, the backward graph. We
pass an `inner_compile` that first runs randfx's lowering passes on that aten graph and
then hands it to Inductor's own `compile_fx_inner`. So the forward and backward compilers
both lower randfx ops, and everything else is compiled exactly as Inductor would.

The lowering passes are `randfx.passes.backend_*`:

    BEFORE_AUTOGRAD  backend_fuse_generation: generate_weight + linear -> seeded_linear, on
                     the Dynamo graph (after partitioning, the weight would already be
                     saved for the backward and could not be fused away);
                     backend_inline_generation: on CUDA, seeded linears that materialise
                     W (more rows than the fused kernels take) -> an autograd.Function
                     whose generator launch aot_autograd traces, so Inductor launches
                     it (no Python op call per layer and step)
    AFTER_AUTOGRAD   backend_select_kernels: per seeded matmul, by its shape, the fused
                     GEMV / GEMM kernel or materialise-then-matmul (the ops' heuristic)

Inductor keeps the remaining randfx nodes as calls to the op's kernel (on CUDA a Triton
kernel that regenerates weight tiles) and compiles the surrounding work as usual.

A graph with no randfx op (a model that was never transformed) is compiled by Inductor
unchanged, and the backend says so once per compiled frame (NothingRewrittenWarning).
"""

import functools
import importlib
import logging
import warnings

import torch

log = logging.getLogger(__name__)

NAMESPACE = "randfx"


class NothingRewrittenWarning(UserWarning):
    """torch.compile(backend="randfx") found no randfx op: the model was compiled by
    Inductor as is. Call randfx.transform(model, config) first to rewrite its weights."""


def randfx_op_names(graph: torch.fx.Graph) -> list:
    """Qualified names ("randfx::seeded_linear") of the randfx ops called in `graph`, in
    graph order, one entry per call, including those in the subgraphs its module holds
    (the bodies of higher-order ops: Dynamo traces a row-sparse layer's autograd.Function
    into a forward and a backward body)."""
    names = []
    for node in graph.nodes:
        if node.op == "get_attr" and graph.owning_module is not None:
            held = functools.reduce(getattr, node.target.split("."), graph.owning_module)
            if isinstance(held, torch.fx.GraphModule):
                names += randfx_op_names(held.graph)
        if node.op != "call_function":
            continue
        name = _qualified_op_name(node.target)
        if name is not None and name.startswith(NAMESPACE + "::"):
            names.append(name)
    return names


def _qualified_op_name(target):
    # OpOverload ("randfx::seeded_linear") and OpOverloadPacket both name their schema;
    # a randfx callable that Dynamo keeps as one call (the sparse backward's draw of the
    # walks) declares `randfx_op_name`; other Python callables have none of these
    if isinstance(target, torch._ops.OpOverload):
        return target.name()
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name
    return getattr(target, "randfx_op_name", None)


# frames already told that nothing was rewritten: recompiles and backward graphs of the
# same frame must not repeat the message
_TOLD_FRAMES = set()


def _say_nothing_rewritten() -> None:
    compile_id = torch._guards.CompileContext.current_compile_id()
    frame = getattr(compile_id, "frame_id", None)
    if frame is not None:
        if frame in _TOLD_FRAMES:
            return
        _TOLD_FRAMES.add(frame)
    warnings.warn(
        "randfx backend: the graph calls no randfx op, so nothing was rewritten; compiling "
        "it with Inductor as is. Apply randfx.transform(model, config) before torch.compile "
        "to regenerate weights from seeds.", NothingRewrittenWarning, stacklevel=2)


# the lowering passes (modules of randfx.passes), in the order they run: on the Dynamo
# graph before aot_autograd, then on each aten graph (forward, backward) it produces
BEFORE_AUTOGRAD = ("backend_fuse_generation", "backend_inline_generation")
AFTER_AUTOGRAD = ("backend_select_kernels",)


def run_passes(gm: torch.fx.GraphModule, names) -> dict:
    """Run the passes `names` on `gm` in place; {pass name: whether it changed gm}."""
    return {name: importlib.import_module(f"randfx.passes.{name}").run(gm) for name in names}


def _lower_then_inductor(gm, example_inputs, *args, inductor_compile, **kwargs):
    if randfx_op_names(gm.graph):
        changed = run_passes(gm, AFTER_AUTOGRAD)
        log.debug("randfx lowering of the %s graph: %s",
                  "backward" if kwargs.get("is_backward") else "forward", changed)
    return inductor_compile(gm, example_inputs, *args, **kwargs)


def randfx_backend(gm: torch.fx.GraphModule, example_inputs, options=None, mode=None):
    """Dynamo backend: lower randfx ops in the forward and backward aten graphs, then
    compile with Inductor. `options` (torch.compile(..., options={...})) are Inductor
    config settings, applied to this compile as Inductor applies its own; `mode`
    (torch.compile(..., mode="reduce-overhead")) is one of Inductor's modes, whose
    settings `options` may override."""
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"randfx backend: options must be a dict of Inductor config "
                        f"settings, got {type(options).__name__}")
    if mode is not None:
        from torch._inductor import list_mode_options
        modes = list_mode_options()  # every mode's settings
        if mode not in modes:
            raise ValueError(f"randfx backend: mode={mode!r} is not one of Inductor's "
                             f"modes: {', '.join(sorted(modes))}")
        options = {**modes[mode], **(options or {})}
    if not randfx_op_names(gm.graph):
        _say_nothing_rewritten()
    else:
        changed = run_passes(gm, BEFORE_AUTOGRAD)
        log.debug("randfx lowering of the Dynamo graph: %s", changed)
    from torch._inductor.compile_fx import compile_fx, compile_fx_inner
    inner = functools.partial(_lower_then_inductor, inductor_compile=compile_fx_inner)
    return compile_fx(gm, example_inputs, inner_compile=inner, config_patches=options)
