"""reparameterize: express every selected weight in the config's scheme.

Requires: ctx.selection (select), ctx.layers, ctx.config.
Guarantees: ctx.plans maps each selected module to a WeightPlan (randfx.modules) that is
a pure function of (config, weight name, canonical shape): re-running transform on a
fresh model of the same architecture gives identical keys, scales and coefficient
shapes. Tied modules get plans with the same name, key and scales. Nothing is built or
generated here; emit builds the modules. Scheme "dense" plans nothing.

Keys (randfx.generators.derive_key under config.seed):
  base weight            "<weight name>"             e.g. "h.0.attn.c_attn.weight"
  LoRA A initialisation  "<weight name>.lora_A"
  per-layer basis P      "<weight name>.basis"
  global basis P         "randfx_subspace.basis"
Scales: the generated base weight has the variance of the layer's usual init (config.
init_std squared, else LayerKind.init_variance: 1/(3 fan_in) for Linear/Conv, 1 for
Embedding), so scale = sqrt(variance / Var[dist]). The basis is normalised like
RANDUMB's sqrt(d/3): basis_scale = sqrt(variance / (dim * Var[dist])), so an alpha with
unit entries moves the weight by one init standard deviation per element.
"""

import math
from dataclasses import replace

from randfx.generators import DISTRIBUTIONS, derive_key
from randfx.modules import LAYER_KINDS, WeightPlan

from .manager import PassBase, PassResult, mark

GLOBAL_BASIS_NAME = "randfx_subspace.basis"


def weight_plan(config, info) -> WeightPlan:
    """The plan for the weight of layer `info` (its first owner, for a tied weight)."""
    variance = (config.init_std ** 2 if config.init_std is not None
                else LAYER_KINDS[info.kind].init_variance(info.shape))
    dist_variance = DISTRIBUTIONS[config.dist].variance
    plan = WeightPlan(name=info.weight_name, kind=info.kind, shape=info.shape,
                      scheme=config.scheme, generator=config.generator, dist=config.dist,
                      key=derive_key(config.seed, info.weight_name),
                      scale=math.sqrt(variance / dist_variance))
    if config.scheme == "random_base_lora":
        return replace(plan, rank=config.rank, lora_scaling=config.lora_scaling,
                       lora_init_key=derive_key(config.seed, info.weight_name + ".lora_A"))
    if config.scheme == "subspace":
        plan = replace(plan, dim=config.dim,
                       basis_scale=math.sqrt(variance / (config.dim * dist_variance)))
        if config.scope == "global":
            return replace(plan, shared_basis=True,
                           basis_key=derive_key(config.seed, GLOBAL_BASIS_NAME))
        return replace(plan, basis_key=derive_key(config.seed, info.weight_name + ".basis"))
    return plan


class Reparameterize(PassBase):
    name = "reparameterize"
    requires = ("selection", "layers", "config")

    def run(self, ctx):
        config = ctx.config
        ctx.plans = {}
        if config.scheme == "dense":
            return PassResult(False, "scheme 'dense': weights stay as they are")
        nodes = {node.name: node for node in ctx.graph.graph.nodes}
        first_owner = {}  # weight name -> plan of its first owner in module order
        next_row = 0  # global basis: rows of P handed out so far
        for name in ctx.selection:
            info = ctx.layers[name]
            owner = first_owner.get(info.weight_name)
            if owner is None:
                plan = weight_plan(config, info)
                if plan.shared_basis:
                    plan = replace(plan, basis_offset=next_row * config.dim)
                    next_row += plan.numel
                first_owner[info.weight_name] = plan
            else:  # a tied co-owner: the same seeded tensor, applied by its own kind
                plan = replace(owner, kind=info.kind)
            ctx.plans[name] = plan
            ctx.report.rewritten[name] = config.scheme
            for node_name in info.nodes:
                mark(nodes[node_name], self.name, scheme=plan.scheme, key=plan.key,
                     scale=round(plan.scale, 6))
        ctx.global_rows = next_row
        return PassResult(True, f"{len(ctx.plans)} weights planned as {config.scheme}")
