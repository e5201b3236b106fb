"""sparse_backward: train along random-walk paths (seed 004, DESIGN.md contract 6).

Requires: ctx.model (emit), ctx.layer_graph (analyze), ctx.config.sparse_backward.
Guarantees: every eligible layer of ctx.model runs a row-sparse backward: its forward is
unchanged (dense, same values) and its backward flows only through the rows that this
step's random walks visited (randfx.ops.row_sparse); with propagate="all_rows" only its
weight and bias gradients are restricted to those rows and its input gradient is dense.
Eligible: nn.Linear, transformers Conv1D, nn.Conv1d/2d/3d with padding_mode "zeros" and
numeric padding, and the seeded layers of every scheme (randfx.modules). Walks are drawn
by randfx.random_walk over the layer graph restricted to eligible layers (on a GPU
replayed as a CUDA graph, randfx.graphed_walks); they start at the eligible layers that
feed the model output (no successor in the layer graph).

Layers the walks cannot reach (every path to the output crosses a non-eligible layer)
keep their dense backward; they are reported in `randfx_sparse_backward.unreachable`,
in ctx.report.warnings and by a warning, never silently frozen. No module is replaced
and no parameter or persistent buffer added: state_dict keys and values are exactly
emit's. Each eligible module gets an instance-level `forward` (a `RowSparseForward`), and
so does the root (`_sparse_root_forward`, its own forward after it): it redraws the walks
before every forward that can build a backward (training mode, grad enabled):
resample="every_step". Not a forward pre-hook: a module with hooks makes Dynamo trace
torch.nn's hooked call path, which guards the model's hook dicts, and every compiled call
checks those guards (MNIST's MLP: 184 guards with the hook, 162 without on torch 2.13;
211 and 178 on 2.14). The walks' randomness is
counter-based (randfx.random_walk): keyed on derive_key(config.seed,
"randfx.sparse_backward") and the root's non-persistent int64 buffer `randfx_walk_step`,
which the draw increments in place, so the draw traces into the graph and
torch.compile(model, fullgraph=True) captures one graph. There the draw is one opaque call
for Dynamo (`_TracedDraw`, torch.compiler.allow_in_graph) that AOTAutograd traces through:
Dynamo would otherwise guard on the sampler's Python state, and those guards, checked on
every compiled call, tripled a small model's guard time. `model.randfx_sparse_backward`
(a `SparseBackwardPlan`) holds the sampler and the last draw.

Scheme notes. frozen: grad_x regenerates only rows I of R (fused in the Triton kernel).
random_base_lora: rows I of B @ A are B[I] @ A, so lora_B gets gradient in rows I and
lora_A through them. subspace: grad alpha = P^T vec(grad_W) with grad_W zero outside rows
I (exact), but the ops' subspace backward regenerates all of P, and walks weigh rows by
the base R alone (the learned delta is left out of the walk probabilities).
"""

import functools
import inspect
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
# what the compiled forward calls of torch is bound here, not read as torch.x / F.x: a
# module object that traced code reaches by two names (this module's and torch.nn's)
# costs a Python-evaluated identity guard on every compiled call
from torch import is_grad_enabled
from torch.compiler import is_compiling
from torch.nn.functional import linear

from randfx.generators import derive_key
from randfx.generators import reference as stream
from randfx.graphed_walks import GraphedWalks
from randfx.modules import SeededLayer, SeededLoRA, SeededSubspace, autocast_input
from randfx.ops.row_sparse import (row_sparse_conv, row_sparse_linear,
                                   row_sparse_seeded_linear)
from randfx.random_walk import RandomWalkSampler, WalkLayer, WalkSample

from .manager import PassBase, PassResult

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _is_hf_conv1d(module) -> bool:
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__ == "transformers.pytorch_utils"


def layer_rule(module: nn.Module) -> Optional[str]:
    """The row-sparse rule for `module`, or None where none applies."""
    if isinstance(module, SeededLayer):
        if module.kind.linear:
            return "seeded_linear"
        return "seeded_conv" if module.kind.name.startswith("conv") else None
    if type(module).forward is nn.Linear.forward and isinstance(module, nn.Linear):
        return "linear"
    if _is_hf_conv1d(module):
        return "hf_conv1d"
    if isinstance(module, _CONVS) and type(module).forward in [c.forward for c in _CONVS] \
            and module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return "conv"
    return None


def _conv_args(module):
    return module.stride, module.padding, module.dilation, module.groups


def _sparse_forward(rule: str, module: nn.Module, x: torch.Tensor, rows: torch.Tensor,
                    all_rows: bool):
    # under autocast the row-sparse ops (custom ops) compute in its dtype, as the
    # F.linear / F.conv* they stand for would: x, and a dense layer's weight and bias
    x = autocast_input(x)
    bias = None if module.bias is None else module.bias.to(x.dtype)
    if rule in ("linear", "hf_conv1d", "conv"):
        weight = module.weight.to(x.dtype)
    if rule == "linear":
        return row_sparse_linear(x, weight, bias, rows, all_rows)
    if rule == "hf_conv1d":  # weight is (in, out)
        return row_sparse_linear(x, weight.t(), bias, rows, all_rows)
    if rule == "conv":
        return row_sparse_conv(x, weight, bias, rows, *_conv_args(module), all_rows)
    if rule == "seeded_conv":
        weight = module.dense_weight(module._dtype(x))
        return row_sparse_conv(x, weight, bias, rows, *_conv_args(module._template),
                               all_rows)
    out = module.out_features
    y = row_sparse_seeded_linear(x, module.seed, module.scale, bias, rows, out,
                                 module.generator, module.dist, all_rows)
    if isinstance(module, SeededLoRA):
        hidden = linear(x, module.lora_A.to(x.dtype))
        y = y + row_sparse_linear(hidden, (module.lora_B * module.lora_scaling).to(x.dtype),
                                  None, rows, all_rows)
    elif isinstance(module, SeededSubspace):
        delta = module.delta_weight().reshape(out, -1).to(x.dtype)
        y = y + row_sparse_linear(x, delta, None, rows, all_rows)
    return y


def _draw_inputs(rule: str, module: nn.Module) -> Tuple[torch.Tensor, ...]:
    """The tensors of `module` that `_weight_rows` reads."""
    if rule in ("linear", "conv", "hf_conv1d"):
        return (module.weight,)
    if isinstance(module, SeededLoRA):
        return module.seed, module.lora_B, module.lora_A
    return (module.seed,)


def _weight_rows(rule: str, module: nn.Module, rows: torch.Tensor, inputs) -> torch.Tensor:
    """W[rows] in canonical (out, in, *kernel) layout, computing only those rows; the
    tensors come from `inputs` (`_draw_inputs`), the constants from `module`."""
    # index_select: the same rows as indexing, without advanced indexing's overhead
    if rule in ("linear", "conv"):
        return inputs[0].detach().index_select(0, rows)
    if rule == "hf_conv1d":
        return inputs[0].detach().index_select(1, rows).t()
    shape = module.weight_shape
    row_numel = int(torch.Size(shape[1:]).numel())
    key = inputs[0]
    counters = rows[:, None] * row_numel + torch.arange(row_numel, device=key.device)
    weight = stream.sample(counters, key, module.generator, module.dist) * module.scale
    if isinstance(module, SeededLoRA):
        lora_B, lora_A = inputs[1:]
        delta = lora_B.detach()[rows] @ lora_A.detach()
        weight = weight + module.lora_scaling * delta.float()
    return weight.view(len(rows), *shape[1:])


class _WeightRows:
    """`weight_rows` for the sampler: an object, not a closure, so that a deep copy of the
    model samples from the copy's weights. Without inputs it reads the module's own."""

    def __init__(self, rule: str, module: nn.Module):
        self.rule = rule
        self.module = module

    def __call__(self, rows: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return _weight_rows(self.rule, self.module, rows,
                            inputs or _draw_inputs(self.rule, self.module))


def _walk_layer(rule: str, module: nn.Module) -> WalkLayer:
    rows = _WeightRows(rule, module)
    if rule in ("linear", "conv"):
        shape = module.weight.shape
        groups = module.groups if rule == "conv" else 1
        return WalkLayer(rows, shape[0], shape[1] * groups, groups)
    if rule == "hf_conv1d":
        return WalkLayer(rows, module.weight.shape[1], module.weight.shape[0])
    groups = module._template.groups if rule == "seeded_conv" else 1
    shape = module.weight_shape
    return WalkLayer(rows, shape[0], shape[1] * groups, groups)


class RowSparseForward:
    """The instance-level forward of one eligible layer: the module's own forward while
    `rows` is None (evaluation, no grad), else the row-sparse op over `rows`."""

    def __init__(self, module: nn.Module, rule: str, all_rows: bool):
        self.module = module
        self.rule = rule
        self.all_rows = all_rows
        self.rows: Optional[torch.Tensor] = None

    def __call__(self, x, *args, **kwargs):
        if self.rows is None or not is_grad_enabled() or args or kwargs:
            return type(self.module).forward(self.module, x, *args, **kwargs)
        return _sparse_forward(self.rule, self.module, x, self.rows, self.all_rows)


STEP_BUFFER = "randfx_walk_step"


def _device(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _submodule(root: nn.Module, name: str) -> nn.Module:
    # nn.Module.get_submodule, without its checks: Dynamo guards each global it reads
    for part in name.split("."):
        root = getattr(root, part)
    return root


class _TracedDraw:
    """The draw as torch.compile's frontend sees it: one opaque call on tensors.

    Traced by Dynamo, every piece of the sampler's Python state that a draw reads (sizes,
    slots, options, the layer graph, each layer's weight_rows and module) became a guard
    that every compiled call checks again: MNIST's 784-256-128-10 MLP had 339 guards
    against the plain model's 92 (torch._dynamo.explain), 34 us of guard checks per call
    against 13 on a 2-core CPU, in a host-bound step. Registered with
    torch.compiler.allow_in_graph, Dynamo guards only this object's identity and writes one
    call into the graph; AOTAutograd then traces through it, so Inductor compiles the same
    ops as before. allow_in_graph's contract holds: every tensor the draw reads comes in as
    an argument (the step, then each layer's `_draw_inputs`, in `names` order), it returns
    tensors (each layer's rows, then its visits), and the sampler never changes after
    construction, so its identity stands for its state."""

    __name__ = "randfx_walk_draw"  # the FX graph's node name
    randfx_op_name = "randfx::walk_draw"  # what the "randfx" backend lists as randfx's work

    def __init__(self, sampler: RandomWalkSampler, names, counts):
        self.sampler = sampler
        self.names = names
        self.counts = counts  # how many of the inputs each layer takes
        torch.compiler.allow_in_graph(self)

    def __setstate__(self, state):  # a copy (deepcopy, pickle) is another object to allow
        self.__dict__.update(state)
        torch.compiler.allow_in_graph(self)

    def __call__(self, step: torch.Tensor, *inputs: torch.Tensor):
        grouped, first = {}, 0
        for name, count in zip(self.names, self.counts):
            grouped[name] = inputs[first:first + count]
            first += count
        sample = self.sampler.sample(step, grouped)
        return tuple(sample.rows[n] for n in self.names) + tuple(
            sample.visits[n] for n in self.names)


class SparseBackwardPlan:
    """What the pass installed on a model (`root`): the sampler, the layers, the last
    draw. The root holds the step counter (STEP_BUFFER), so it moves with `.to()`.

    What a compiled training forward reads of it is kept small, since Dynamo guards every
    Python value it reads and checks those guards on every call: the layer names (a tuple
    of strings), the layers found from the root by name (the same guards as the
    forward's own), and `_TracedDraw`'s identity."""

    def __init__(self, options, modules: Dict[str, nn.Module], rules: Dict[str, str],
                 graph, outputs: List[str], seed: int, root: nn.Module):
        self.options = options
        self.seed = derive_key(seed, "randfx.sparse_backward")
        self.sampler = RandomWalkSampler(
            graph, {name: _walk_layer(rule, modules[name]) for name, rule in rules.items()},
            num_paths=options.num_paths, temperature=options.temperature,
            epsilon=options.epsilon, weighting=options.weighting, outputs=outputs,
            key=self.seed)
        self.outputs = self.sampler.outputs
        self.unreachable = self.sampler.unreachable
        all_rows = options.propagate == "all_rows"
        self.layers = {name: RowSparseForward(modules[name], rules[name], all_rows)
                       for name in self.sampler.reachable}
        self.names = tuple(self.layers)
        self.last_sample = None
        self.root = root
        self.graphed = GraphedWalks(self.sampler, self._walk_inputs)
        self.traced = _TracedDraw(self.sampler, self.names, tuple(
            len(_draw_inputs(rules[name], modules[name])) for name in self.names))
        root.register_buffer(STEP_BUFFER, torch.zeros(
            (), dtype=torch.int64, device=_device(next(iter(self.layers.values())).module)),
            persistent=False)

    @property
    def step(self) -> torch.Tensor:
        """The step of the next draw (training forwards drawn so far): a 0-d int64 tensor
        on the model's device."""
        return getattr(self.root, STEP_BUFFER)

    def _walk_inputs(self) -> List[torch.Tensor]:
        """Every tensor a draw reads: the layers' parameters and buffers."""
        return [t for forward in self.layers.values()
                for t in (*forward.module.parameters(), *forward.module.buffers())]

    def resample(self):
        """Draw this step's walks on the model's device, hand each layer its rows and
        advance the step (in place: no host sync, traceable by torch.compile). On a GPU,
        outside torch.compile and outside a caller's own graph capture, the draw is
        replayed as a CUDA graph (randfx.graphed_walks): the same walks, without the
        launches of its many small kernels."""
        self._resample(self.root)
        return self.last_sample

    def _resample(self, root: nn.Module):
        # the layers and the step are reached from `root`, the forward's own module: under
        # torch.compile those are the sources the forward guards anyway
        step = getattr(root, STEP_BUFFER)
        modules = [_submodule(root, name) for name in self.names]
        if is_compiling():
            # each layer's rule as its forward holds it: the forward's guards cover it
            drawn = self.traced(step, *(t for module in modules
                                        for t in _draw_inputs(module.forward.rule, module)))
            step.add_(1)
        else:
            if step.is_cuda and not torch.cuda.is_current_stream_capturing():
                sample = self.graphed(step)
            else:
                sample = self.graphed.draw_eagerly(step)
            drawn = tuple(sample.rows[n] for n in self.names) + tuple(
                sample.visits[n] for n in self.names)
        for module, rows in zip(modules, drawn):
            module.forward.rows = rows
        self._drawn = drawn  # one tuple: a compiled call stores it without building dicts

    @property
    def last_sample(self) -> Optional[WalkSample]:
        """The last training forward's draw (None before the first, or once set to None)."""
        if self._drawn is None:
            return None
        count = len(self.names)
        return WalkSample(visits=dict(zip(self.names, self._drawn[count:])),
                          rows=dict(zip(self.names, self._drawn[:count])))

    @last_sample.setter
    def last_sample(self, sample: Optional[WalkSample]):
        self._drawn = None if sample is None else tuple(
            sample.rows[n] for n in self.names) + tuple(sample.visits[n] for n in self.names)

    def before_forward(self, root: nn.Module):
        """What the root's forward does first: this step's walks in training with grad
        enabled, else every layer back on its own forward."""
        if root.training and is_grad_enabled():
            self._resample(root)
        else:
            for name in self.names:
                _submodule(root, name).forward.rows = None

    def row_updates(self) -> Dict[str, int]:
        """Rows that got gradient in the last draw, per layer (synchronises)."""
        if self.last_sample is None:
            return {}
        return {name: int((v > 0).sum()) for name, v in self.last_sample.visits.items()}


class SparseBackwardPass(PassBase):
    name = "sparse_backward"
    requires = ("model", "layer_graph")

    def run(self, ctx):
        options = ctx.config.sparse_backward
        model, graph = ctx.model, ctx.layer_graph
        modules = dict(model.named_modules())
        rules, skipped = {}, {}
        for name in graph.nodes:
            rule = layer_rule(modules[name]) if name in modules else None
            if rule is None:
                skipped[name] = type(modules.get(name)).__name__
            else:
                rules[name] = rule
        if not rules:
            raise ValueError(
                "sparse_backward: no eligible layer in this model (Linear, transformers "
                "Conv1D, Conv1d/2d/3d with zero padding, or seeded layers); layers found: "
                f"{skipped or 'none'}")
        outputs = [n for n in rules if graph.out_degree(n) == 0]
        if not outputs:
            raise ValueError("sparse_backward: no eligible layer feeds the model output; "
                             f"output layers: {[n for n in graph if graph.out_degree(n) == 0]}")
        plan = SparseBackwardPlan(options, modules, rules, graph.subgraph(list(rules)),
                                  outputs, ctx.config.seed, model)
        if plan.unreachable:
            ctx.report.warn(
                f"sparse_backward: no walk can reach {plan.unreachable} (every path to the "
                f"output crosses a layer without a row-sparse rule: {skipped}); they keep "
                f"their dense backward")
        for forward in plan.layers.values():
            forward.module.forward = forward
        model.randfx_sparse_backward = plan
        model.forward = _root_forward(model)
        return PassResult(True, f"{len(plan.layers)} row-sparse layers, "
                                f"{len(plan.unreachable)} unreachable kept dense")


def _sparse_root_forward(root: nn.Module, forward, *args, **kwargs):
    """The root's forward under the pass: the walks first (`before_forward`), then the
    forward the root had (`forward`: an instance-level one a user set; None: its class's;
    the root is never a layer itself, select refuses a single-layer model). A function of
    the root, not a method of an object, so that Dynamo traces it with the root as a
    local, the source its own forward and submodules are guarded by."""
    root.randfx_sparse_backward.before_forward(root)
    if forward is None:
        return type(root).forward(root, *args, **kwargs)
    return forward(*args, **kwargs)


def _root_forward(root: nn.Module) -> functools.partial:
    """`_sparse_root_forward` bound to the root and its former forward (a partial pickles and
    deep-copies with the model), showing that forward's signature to `inspect` (Hugging
    Face's generate() reads which arguments the forward takes)."""
    former = root.__dict__.get("forward")
    forward = functools.partial(_sparse_root_forward, root, former)
    forward.__signature__ = inspect.signature(root.forward)
    return forward


def strip_sparse_backward(model: nn.Module) -> nn.Module:
    """Undo the pass on `model` in place: modules get their class forward back, the root
    its own forward (an instance-level forward it had before the pass too), the step
    buffer and the plan go. For materialize or for switching back to dense training."""
    plan = getattr(model, "randfx_sparse_backward", None)
    if plan is None:
        return model
    root_forward = model.__dict__.pop("forward", None)
    former = (root_forward.args[1]
              if getattr(root_forward, "func", None) is _sparse_root_forward else None)
    for forward in plan.layers.values():
        forward.module.__dict__.pop("forward", None)
    if former is not None:
        model.forward = former
    delattr(model, STEP_BUFFER)
    del model.randfx_sparse_backward
    return model


__all__ = ["SparseBackwardPass", "SparseBackwardPlan", "RowSparseForward", "layer_rule",
           "strip_sparse_backward"]