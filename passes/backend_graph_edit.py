"""Graph-editing helpers shared by the backend lowering passes (`backend_*.py`): they
replace nodes and keep the fake value of every new node filled in (`meta["val"]` in
aten graphs, `meta["example_value"]` in Dynamo graphs), which later stages read."""

import torch
from torch._subclasses.fake_tensor import FakeTensor

# node.meta entries that say where a node came from; copied onto its replacement
_PROVENANCE = ("stack_trace", "nn_module_stack", "source_fn_stack", "seq_nr")


def op_arguments(node: torch.fx.Node, overload) -> dict:
    """{argument name: value} of a call of `overload`, positional and keyword alike,
    defaults filled in."""
    schema = overload._schema.arguments
    values = {arg.name: arg.default_value for arg in schema if arg.has_default_value()}
    values.update(zip((arg.name for arg in schema), node.args))
    values.update(node.kwargs)
    return values


def fake_value(target, args, meta_key: str):
    """What `target(*args)` returns on the args' fake values."""
    values = torch.fx.node.map_arg(args, lambda node: node.meta[meta_key])
    modes = [v.fake_mode for v in torch.utils._pytree.tree_leaves(values)
             if isinstance(v, FakeTensor)]
    with modes[0]:
        return target(*values)


def insert_call(graph: torch.fx.Graph, before: torch.fx.Node, target, args,
                meta_key: str = "val", value=None) -> torch.fx.Node:
    """A new call of `target(*args)` placed before `before`, its fake value filled in:
    `value` where the caller knows it, else what target returns on fake tensors."""
    with graph.inserting_before(before):
        node = graph.call_function(target, tuple(args))
    node.meta[meta_key] = fake_value(target, args, meta_key) if value is None else value
    return node


def replace_with_call(graph: torch.fx.Graph, old: torch.fx.Node, target, args,
                      meta_key: str = "val", same_value: bool = False) -> torch.fx.Node:
    """Put a call of `target(*args)` where `old` was; `old` is erased. same_value: the
    call returns what `old` did (its fake value is reused, target is not run on fakes)."""
    value = old.meta[meta_key] if same_value else None
    node = insert_call(graph, old, target, args, meta_key, value)
    node.meta.update({k: old.meta[k] for k in _PROVENANCE if k in old.meta})
    old.replace_all_uses_with(node)
    graph.erase_node(old)
    return node
