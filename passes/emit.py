"""emit: build the transformed model by swapping seeded layers into a copy of the source.

Requires: ctx.plans (lower has set `execution`), ctx.source, ctx.config.
Guarantees: ctx.model is a deep copy of ctx.source (same class, methods, config and
forward signature: a Hugging Face model stays that model) in which every planned module
is replaced, at every path where it is registered, by the randfx.modules seeded layer
built from its plan, on the device and in the dtype of the weight it replaces. The
copied layer keeps its own bias Parameter; its weight is never copied (a meta placeholder stands in during the copy, so emit costs no weight memory).
Tied modules share one seed buffer and one set of coefficients. Scope "global" adds a
GlobalSubspace as child `subspace` of the first rewritten layer (state_dict keys
"<first layer>.subspace.alpha" and ".subspace.seed"); every global layer reads it. The copy gets the attributes
`randfx_config` (the Config) and `randfx_report` (a TransformReport). Its state_dict
holds no generated weight (DESIGN.md contract 4; checked here). ctx.source is untouched.
"""

import copy

import torch
from torch import nn

from randfx.generators import derive_key
from randfx.modules import GlobalSubspace, seeded_layer

from .manager import PassBase, PassResult
from .reparameterize import GLOBAL_BASIS_NAME

SUBSPACE_ATTRIBUTE = "subspace"


def _meta_like(param: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(torch.empty(param.shape, dtype=param.dtype, device="meta"),
                        requires_grad=param.requires_grad)


def _copy_without_weights(source: nn.Module, weights) -> nn.Module:
    # deepcopy consults the memo before copying: mapping a weight to a meta stand-in
    # copies everything else while skipping the (large) weights that are replaced anyway
    memo = {id(w): _meta_like(w) for w in weights}
    return copy.deepcopy(source, memo)


def _as_template(module: nn.Module) -> nn.Module:
    """Detach `module`'s parameters (moving them to meta): what is left is its class and
    hyper-parameters, kept by the seeded layer for apply() and materialize()."""
    for name, param in list(module._parameters.items()):
        if param is not None:
            module._parameters[name] = _meta_like(param)
    return module


class Emit(PassBase):
    name = "emit"
    requires = ("plans", "source", "config")

    def run(self, ctx):
        source, plans = ctx.source, ctx.plans
        source_modules = dict(source.named_modules())
        replaced = [getattr(source_modules[name], "weight", None) for name in plans]
        model = _copy_without_weights(source, [w for w in replaced if w is not None])
        paths = {}  # id(module) -> every (parent, attribute) it is registered at
        for name, module in model.named_modules(remove_duplicate=False):
            if name:
                parent_name, _, attribute = name.rpartition(".")
                paths.setdefault(id(module), []).append(
                    (model.get_submodule(parent_name), attribute))

        subspace = None
        if plans and next(iter(plans.values())).shared_basis:
            first = source_modules[next(iter(plans))].weight
            subspace = GlobalSubspace(ctx.config.dim,
                                      derive_key(ctx.config.seed, GLOBAL_BASIS_NAME),
                                      ctx.global_rows, dtype=first.dtype).to(first.device)

        built = {}  # weight name -> the first seeded layer built for it
        for name, plan in plans.items():
            original = model.get_submodule(name)
            bias = original._parameters.get("bias")
            layer = seeded_layer(plan, _as_template(original), bias, subspace)
            weight = source_modules[name].weight  # new tensors follow the weight they replace
            layer.to(device=weight.device, dtype=weight.dtype)
            if plan.name in built:
                layer.share_weight_with(built[plan.name])
            else:
                built[plan.name] = layer
            if subspace is not None and len(built) == 1 and layer is built[plan.name]:
                # hosted by the first layer rather than the root: a root Sequential
                # would call every child, and this one has no forward
                layer.add_module(SUBSPACE_ATTRIBUTE, subspace)
            for parent, attribute in paths[id(original)]:
                setattr(parent, attribute, layer)

        replaced_names = {f"{name}.weight" for name in plans}
        leaked = [key for key in model.state_dict() if key in replaced_names]
        if leaked:
            raise RuntimeError(f"randfx emit left generated weights in the state_dict: {leaked}")
        model.randfx_config = ctx.config
        model.randfx_report = ctx.report
        ctx.model = model
        return PassResult(bool(plans), f"{len(plans)} layers replaced")
