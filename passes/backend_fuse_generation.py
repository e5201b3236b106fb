"""Backend lowering pass: fuse weight generation into the linear layers that consume it.

Runs in the randfx torch.compile backend on the graph Dynamo captured, BEFORE
aot_autograd. It must run before autograd: once aot_autograd has partitioned the graph,
a generated weight that feeds a matmul is also saved for the backward (W^T is needed for
the input gradient), so it can no longer be fused away. Fused before autograd, the
backward comes from seeded_linear's autograd formula, which regenerates W in a fused
seeded_matmul too: W never exists, in either direction.

Requires: a torch-level FX graph from Dynamo (nodes carry meta["example_value"]).

Finds `w = torch.ops.randfx.generate_weight(key, [N, K], scale, generator, dist, dtype)`
whose every use is `torch.nn.functional.linear(x, w[, bias])` with x of the same dtype,
and replaces each linear by `torch.ops.randfx.seeded_linear(x, key, N, scale, bias,
generator, dist)`.

Guarantees after: no such generate_weight remains; the graph computes the same values up
to float rounding (the fused kernel accumulates in float32). A generate_weight with any
other use (a conv, an add, an output) is left as it is: materialising it once is then
cheaper than regenerating it per use. Rewritten nodes are marked in meta["randfx"].
"""

import torch

from .backend_graph_edit import op_arguments, replace_with_call
from .manager import mark

NAME = "backend_fuse_generation"
_GENERATE = (torch.ops.randfx.generate_weight, torch.ops.randfx.generate_weight.default)
_LINEAR = (torch._C._nn.linear, torch.nn.functional.linear)
_META = "example_value"


def _linear_use(node: torch.fx.Node, weight: torch.fx.Node, dtype):
    """(x, bias) when `node` is linear(x, weight, bias) with x of `dtype`, else None."""
    if node.target not in _LINEAR:
        return None
    arguments = dict(zip(("input", "weight", "bias"), node.args), **node.kwargs)
    x = arguments.get("input")
    if arguments.get("weight") is not weight or not isinstance(x, torch.fx.Node):
        return None
    if x.meta[_META].dtype != dtype:
        return None
    return x, arguments.get("bias")


def run(gm: torch.fx.GraphModule) -> bool:
    """Fuse in place; True when the graph changed."""
    changed = False
    for weight in list(gm.graph.nodes):
        if weight.op != "call_function" or weight.target not in _GENERATE:
            continue
        arguments = op_arguments(weight, torch.ops.randfx.generate_weight.default)
        shape = arguments["shape"]
        if len(shape) != 2 or not all(isinstance(size, int) for size in shape):
            continue
        users = list(weight.users)
        uses = [_linear_use(user, weight, arguments["dtype"]) for user in users]
        if not uses or any(use is None for use in uses):
            continue
        for linear, (x, bias) in zip(users, uses):
            fused = replace_with_call(
                gm.graph, linear, torch.ops.randfx.seeded_linear.default,
                (x, arguments["key"], shape[0], arguments["scale"], bias,
                 arguments["generator"], arguments["dist"]), meta_key=_META)
            mark(fused, NAME, fused_from="generate_weight + linear")
        gm.graph.erase_node(weight)
        changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
    return changed
