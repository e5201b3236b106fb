"""emit: build the transformed model by swapping seeded layers into a copy of the source.

Requires: ctx.plans (lower has set `execution`), ctx.source, ctx.config.
Guarantees: ctx.model is a deep copy of ctx.source (same class, methods, config and
forward signature: a Hugging Face model stays that model) in which every planned module
is replaced, at every path where it is registered, by the randfx.modules seeded layer
built from its plan, on the device and in the dtype of the weight it replaces (a kind
whose module applies the weight itself, nn.MultiheadAttention's in_proj_weight, keeps
the module and installs the seeded layer inside it: LayerKind.install). The copied
layer keeps its own bias Parameter; its weight is never copied (a meta placeholder
stands in during the copy, so emit costs no weight memory).
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
from randfx.modules import LAYER_KINDS, GlobalSubspace, meta_parameter, seeded_layer

from .manager import PassBase, PassResult
from .reparameterize import GLOBAL_BASIS_NAME

SUBSPACE_ATTRIBUTE = "subspace"


def _copy_without_weights(source: nn.Module, weights) -> nn.Module:
    # deepcopy consults the memo before copying: mapping a weight to a meta stand-in
    # copies everything else while skipping the (large) weights that are replaced anyway
    memo = {id(w): meta_parameter(w) for w in weights}
    return copy.deepcopy(source, memo)


class Emit(PassBase):
    name = "emit"
    requires = ("plans", "source", "config")

    def run(self, ctx):
        source, plans = ctx.source, ctx.plans
        source_modules = dict(source.named_modules())

        def replaced_weight(name):
            return getattr(source_modules[name], LAYER_KINDS[plans[name].kind].weight_attribute)
        model = _copy_without_weights(source, [replaced_weight(name) for name in plans])
        paths = {}  # id(module) -> every (parent, attribute) it is registered at
        for name, module in model.named_modules(remove_duplicate=False):
            if name:
                parent_name, _, attribute = name.rpartition(".")
                paths.setdefault(id(module), []).append(
                    (model.get_submodule(parent_name), attribute))

        subspace = None
        if plans and next(iter(plans.values())).shared_basis:
            first = replaced_weight(next(iter(plans)))
            subspace = GlobalSubspace(ctx.config.dim,
                                      derive_key(ctx.config.seed, GLOBAL_BASIS_NAME),
                                      ctx.global_rows, dtype=first.dtype).to(first.device)

        built = {}  # weight name -> the first seeded layer built for it
        for name, plan in plans.items():
            original = model.get_submodule(name)
            kind = LAYER_KINDS[plan.kind]
            template, bias = kind.split(original)
            layer = seeded_layer(plan, template, bias, subspace)
            weight = replaced_weight(name)  # new tensors follow the weight they replace
            layer.to(device=weight.device, dtype=weight.dtype)
            if plan.name in built:
                layer.share_weight_with(built[plan.name])
            else:
                built[plan.name] = layer
            if subspace is not None and len(built) == 1 and layer is built[plan.name]:
                # hosted by the first layer rather than the root: a root Sequential
                # would call every child, and this one has no forward
                layer.add_module(SUBSPACE_ATTRIBUTE, subspace)
            replacement = kind.install(original, layer)
            for parent, attribute in paths[id(original)]:
                setattr(parent, attribute, replacement)

        replaced_names = {f"{name}.{LAYER_KINDS[plan.kind].weight_attribute}"
                          for name, plan in plans.items()}
        leaked = [key for key in model.state_dict() if key in replaced_names]
        if leaked:
            raise RuntimeError(f"randfx emit left generated weights in the state_dict: {leaked}")
        model.randfx_config = ctx.config
        model.randfx_report = ctx.report
        ctx.model = model
        return PassResult(bool(plans), f"{len(plans)} layers replaced")
