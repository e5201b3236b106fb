"""Backend lowering pass: pick the kernel of every seeded matmul by its shape.

Runs in the randfx torch.compile backend on the aten graphs aot_autograd produces
(forward, backward or inference), after backend_fuse_generation, before Inductor.

Requires: an aten-level FX graph whose nodes carry `meta["val"]` (fake tensors).

For each `randfx.seeded_linear` / `randfx.seeded_matmul` node whose row count M (the
product of x's leading dimensions) is a concrete int, `randfx.roofline.choose_kernel`
applies the ops' shape heuristic: few rows (decode) keep the fused kernel, which
generates W tiles in registers ("gemv" / "gemm"); more rows materialise W once. The op
would materialise internally too; doing it in the graph instead lets Inductor see the
dense `aten.mm` (its GEMM choice, the bias and the following pointwise ops fused into
the epilogue). So the node becomes `generate_weight` + `aten.mm` (+ the low-rank and bias
epilogue as aten ops).

Guarantees after: every seeded matmul node is either kept with meta["randfx"] naming the
kernel ("gemv", "gemm", or "runtime" when M is symbolic and the op applies the same
rule per call), or replaced by an equivalent materialised computation marked "materialize".
Values agree up to float rounding. seeded_lora_linear, seeded_lora_grad_input and
subspace_linear are left to their ops (they already choose internally), and only marked.
"""

import math

import torch

from randfx import roofline

from .backend_graph_edit import insert_call
from .manager import mark

NAME = "backend_select_kernels"
aten = torch.ops.aten
randfx_ops = torch.ops.randfx


def _matmul_args(node):
    """(x, key, rows, cols, scale, transpose, bias, u, v, generator, dist) of a seeded
    linear or seeded matmul node."""
    if node.target is randfx_ops.seeded_matmul.default:
        return node.args
    x, key, out_features, scale, bias, generator, dist = node.args
    return (x, key, out_features, x.meta["val"].shape[-1], scale, False, bias, None, None,
            generator, dist)


def _materialize(graph, node, args) -> torch.fx.Node:
    """y = x W^T (or x W) with W generated once, as aten ops placed before `node`."""
    x, key, rows, cols, scale, transpose, bias, u, v, generator, dist = args
    x_val = x.meta["val"]
    leading = list(x_val.shape[:-1])
    m = math.prod(leading)
    w = insert_call(graph, node, randfx_ops.generate_weight.default,
                    (key, [rows, cols], scale, generator, dist, x_val.dtype))
    if not transpose:
        w = insert_call(graph, node, aten.permute.default, (w, [1, 0]))
    # reshape, not view: x may be a transposed view (MultiheadAttention's batch_first
    # input), which only a copy can flatten
    x2 = insert_call(graph, node, aten.reshape.default, (x, [m, x_val.shape[-1]]))
    y = insert_call(graph, node, aten.mm.default, (x2, w))
    if u is not None:
        vt = insert_call(graph, node, aten.permute.default, (v, [1, 0]))
        low_rank = insert_call(graph, node, aten.mm.default, (u, vt))
        y = insert_call(graph, node, aten.add.Tensor, (y, low_rank))
    if bias is not None:
        y = insert_call(graph, node, aten.add.Tensor, (y, bias))
    out = node.meta["val"]
    if y.meta["val"].dtype != out.dtype:
        y = insert_call(graph, node, torch.ops.prims.convert_element_type.default,
                        (y, out.dtype))
    return insert_call(graph, node, aten.view.default, (y, list(out.shape)))


def run(gm: torch.fx.GraphModule) -> bool:
    """Select in place; True when a node was replaced."""
    changed = False
    for node in list(gm.graph.nodes):
        if node.target in (randfx_ops.seeded_lora_linear.default,
                           randfx_ops.seeded_lora_grad_input.default,
                           randfx_ops.subspace_linear.default):
            mark(node, NAME, kernel="op")
            continue
        if node.target not in (randfx_ops.seeded_linear.default,
                               randfx_ops.seeded_matmul.default):
            continue
        args = _matmul_args(node)
        x_val = args[0].meta["val"]
        m = math.prod(x_val.shape[:-1])
        if not isinstance(m, int):
            mark(node, NAME, kernel="runtime", rows=str(m))
            continue
        kernel = roofline.choose_kernel(m, args[10], x_val.dtype, args[5])
        if kernel != "materialize":
            mark(node, NAME, kernel=kernel, rows=m)
            continue
        replacement = _materialize(gm.graph, node, args)
        mark(replacement, NAME, kernel="materialize", rows=m, replaced=str(node.target))
        node.replace_all_uses_with(replacement)
        gm.graph.erase_node(node)
        changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
    return changed
