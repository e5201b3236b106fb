"""lower: choose how each planned weight is executed.

Requires: ctx.plans (reparameterize).
Guarantees: every plan's `execution` is "fused" or "materialize":
  fused        Linear-like kinds (nn.Linear, HF Conv1D): the layer calls the fused
               randfx ops (seeded_linear, seeded_lora_linear, subspace_linear), which
               regenerate weight tiles inside the matmul; the full weight never exists.
  materialize  Conv and Embedding kinds: the layer regenerates W once per forward with
               generate_weight / subspace_weight and calls the layer's own functional
               form (F.conv*, F.embedding), because no fused seeded conv op exists.
The graph nodes of each layer are marked with the choice. Kernel choice by shape (GEMV /
GEMM / materialise) happens later, inside the ops and the torch.compile backend.
"""

from dataclasses import replace

from randfx.modules import LAYER_KINDS

from .manager import PassBase, PassResult, mark


class Lower(PassBase):
    name = "lower"
    requires = ("plans",)

    def run(self, ctx):
        nodes = {node.name: node for node in ctx.graph.graph.nodes}
        for name, plan in ctx.plans.items():
            execution = "fused" if LAYER_KINDS[plan.kind].linear else "materialize"
            ctx.plans[name] = replace(plan, execution=execution)
            for node_name in ctx.layers[name].nodes:
                mark(nodes[node_name], self.name, execution=execution)
        return PassResult(True, f"{len(ctx.plans)} layers lowered")
