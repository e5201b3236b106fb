"""analyze: find the weight layers, their shapes and ties, and the layer graph.

Requires: ctx.graph from capture (parameter nodes carry meta["randfx_param"]).
Guarantees:
  ctx.layers       {module name: LayerInfo} for every module holding a parameter of two
                   or more dimensions, in module order; `kind` is the LayerKind name that
                   can rewrite it, or None (no rule).
  ctx.layer_graph  a networkx.DiGraph with one node per entry of ctx.layers (attributes
                   kind, type, shape = canonical weight shape, weight = parameter name)
                   and an edge u -> v when u's output reaches v's input through any ops
                   that are not weight layers (residual adds, attention, norms,
                   activations). Also stored as ctx.report.layer_graph.
  LayerInfo.nodes  the graph nodes where the layer's weight is applied (each marked with
                   provenance); `functional_use` is True when the weight is used outside
                   its module's own forward (emit cannot swap such a use).
The model is not modified.
"""

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import networkx as nx
from torch import nn

from randfx.modules import layer_kind

from .manager import PassBase, PassResult, mark


@dataclass
class LayerInfo:
    name: str
    type_name: str
    kind: Optional[str]  # LayerKind name, or None where no rule applies
    weight_name: str  # canonical qualified name of the parameter (first registration)
    shape: Tuple[int, ...]  # canonical (out, in, *kernel) where kind is set, else raw
    tied_with: Tuple[str, ...] = ()  # other modules holding the same parameter
    functional_use: bool = False
    nodes: List[str] = field(default_factory=list)


def _matrix_param(module: nn.Module):
    weight = module._parameters.get("weight")
    if weight is not None and weight.dim() >= 2:
        return "weight", weight
    for name, param in module._parameters.items():
        if param is not None and param.dim() >= 2:
            return name, param
    return None, None


def find_layers(model: nn.Module):
    canonical = {id(p): name for name, p in model.named_parameters()}
    owners = {}  # id(param) -> names of the modules holding it
    found = []
    for name, module in model.named_modules():
        _, param = _matrix_param(module)
        if param is None or not name:
            continue
        owners.setdefault(id(param), []).append(name)
        kind = layer_kind(module)
        shape = kind.weight_shape(module) if kind else tuple(param.shape)
        found.append((id(param), LayerInfo(name, type(module).__name__,
                                           kind.name if kind else None,
                                           canonical[id(param)], shape)))
    for param_id, info in found:
        info.tied_with = tuple(n for n in owners[param_id] if n != info.name)
    return {info.name: info for _, info in found}


def _module_path(entry) -> str:
    path = entry[0] if isinstance(entry, tuple) else str(entry)
    # strict-mode stacks name modules like "L['self'].h.0"; keep the attribute path
    return path.split("L['self'].", 1)[-1].replace("L__self___", "")


def _pick_owner(owners, node):
    """The module among `owners` (of one tied parameter) whose forward made `node`, or
    None when the parameter is used outside every owner's forward."""
    stack = node.meta.get("nn_module_stack")
    if stack is None:  # symbolic_trace: a weight reached through get_attr is functional
        return None
    paths = [_module_path(entry) for entry in stack.values()]
    for path in reversed(paths):
        if path in owners:
            return path
    return None


def build_layer_graph(ctx):
    layers = ctx.layers
    owners_of = {}
    for info in layers.values():
        owners_of.setdefault(info.weight_name, set()).add(info.name)
    param_names = {}
    for info in layers.values():  # every alias of a tied parameter names the same owners
        for owner in (info.name,) + info.tied_with:
            param_names[f"{owner}.{info.weight_name.rsplit('.', 1)[-1]}"] = info.weight_name

    graph = nx.DiGraph()
    for info in layers.values():
        graph.add_node(info.name, kind=info.kind or "unsupported", type=info.type_name,
                       shape=info.shape, weight=info.weight_name)

    sources, weights = {}, {}  # node -> upstream layers / layers whose weight it carries
    for node in ctx.graph.graph.nodes:
        param = node.meta.get("randfx_param")
        if param is not None:
            owner_set = owners_of.get(param_names.get(param, param))
            if owner_set:
                weights[node] = frozenset(owner_set)
            sources[node] = frozenset()
            continue
        inputs = node.all_input_nodes
        if node.op == "call_module" and node.target in layers:
            layer = node.target
        else:
            carried = frozenset().union(*(weights.get(i, ()) for i in inputs))
            activations = [i for i in inputs if i not in weights]
            if carried and not activations:
                weights[node] = carried  # a view or transpose of a weight
                continue
            if not carried:
                sources[node] = frozenset().union(*(sources.get(i, ()) for i in inputs))
                continue
            layer = _pick_owner(carried, node)
            if layer is None:
                for name in carried:
                    layers[name].functional_use = True
                layer = sorted(carried)[0]
        upstream = frozenset().union(*(sources.get(i, ()) for i in inputs if i not in weights))
        graph.add_edges_from((u, layer) for u in upstream)
        sources[node] = frozenset((layer,))
        layers[layer].nodes.append(node.name)
        mark(node, "analyze", layer=layer, weight=layers[layer].weight_name)
    return graph


class Analyze(PassBase):
    name = "analyze"
    requires = ("source", "graph")

    def run(self, ctx):
        ctx.layers = find_layers(ctx.source)
        ctx.layer_graph = build_layer_graph(ctx)
        ctx.report.layer_graph = ctx.layer_graph
        return PassResult(False, f"{len(ctx.layers)} weight layers, "
                                 f"{ctx.layer_graph.number_of_edges()} edges")
