"""The modules `randfx.transform` puts in place of the layers it rewrites.

A seeded layer replaces one Linear, Conv1d/2d/3d, Hugging Face Conv1D or (when asked)
Embedding, or sits inside an nn.MultiheadAttention as the generator of its
`in_proj_weight` (SeededMultiheadAttention). It keeps the layer's bias as a parameter,
its weight's key as a persistent int64 buffer `seed`, and only the scheme's coefficients
as parameters (DESIGN.md contract 4); the weight itself is regenerated on every forward:

    SeededFrozen          W = scale * R(seed)
    SeededLoRA            W = scale * R(seed) + lora_scaling * (lora_B @ lora_A)
    SeededSubspace        W = scale * R(seed) + reshape(basis_scale * P(basis_seed) @ alpha)
    SeededGlobalSubspace  the same, alpha and basis key shared by every layer through the
                          root's `GlobalSubspace` (PRANC), each layer reading its own rows
                          of P starting at `basis_offset`

R and P are randfx.generators streams; P is a (rows, dim) matrix in row-major counter
order: element i of a layer's flattened delta reads counters basis_offset + i * dim +
[0, dim). A per-layer basis starts at 0; a global one at (first row of the layer) * dim.

The layer type is a `LayerKind` (how its weight is laid out, how it is applied, its
default init variance); the scheme is the class. Linear-like kinds run the fused
`randfx.ops` linear ops (the weight never exists in full); conv and embedding kinds
regenerate W once per forward and call the layer's own functional form.
"""

import copy
import math
from dataclasses import dataclass, replace
from typing import ClassVar, Optional, Tuple

import torch
import torch.nn.functional as F
# bound once: traced code reading `torch` here and under other names elsewhere would get
# a Python-evaluated identity guard on every compiled call (see randfx/ops/eager.py)
from torch import get_autocast_dtype, is_autocast_enabled, nn

# the ops' wrappers by name, not as ops.x: traced, `randfx.ops` would be reached both as this
# module's `ops` and as the wrappers' own globals, and Dynamo checks such a pair's identity
# in Python on every compiled call
from .ops import (generate_weight, seeded_linear, seeded_lora_linear, subspace_linear,
                  subspace_weight)


# ---------------------------------------------------------------------------- layer kinds

def meta_parameter(param: torch.Tensor) -> nn.Parameter:
    """A stand-in for `param` on the meta device: its shape, dtype and requires_grad."""
    return nn.Parameter(torch.empty(param.shape, dtype=param.dtype, device="meta"),
                        requires_grad=param.requires_grad)


def meta_template(module: nn.Module) -> nn.Module:
    """`module` with its own parameters moved to the meta device: what is left is its
    class and hyper-parameters, kept by a seeded layer for apply() and materialize()."""
    for name, param in list(module._parameters.items()):
        if param is not None:
            module._parameters[name] = meta_parameter(param)
    return module


class LayerKind:
    """How one layer type holds and applies its weight. The canonical weight shape is
    (out, in, *kernel) for every kind, so a scheme needs no per-kind code. By default
    the seeded layer takes the module's place; a kind whose module applies the weight
    in a forward of its own (`applied_by_owner`) keeps the module and installs the
    seeded layer inside it."""

    name: ClassVar[str]
    base: ClassVar[type]
    linear: ClassVar[bool] = False  # y = x @ W.T + b: the fused seeded linear ops apply
    default_selected: ClassVar[bool] = True  # rewritten without being named in target_modules
    weight_attribute: ClassVar[str] = "weight"
    applied_by_owner: ClassVar[bool] = False

    def matches(self, module: nn.Module) -> bool:
        # a subclass with its own forward may use the weight in ways the rule does not know
        return isinstance(module, self.base) and type(module).forward is self.base.forward

    def weight_shape(self, module: nn.Module) -> Tuple[int, ...]:
        return tuple(getattr(module, self.weight_attribute).shape)

    def split(self, module: nn.Module) -> Tuple[nn.Module, Optional[nn.Parameter]]:
        """(template, bias) for the seeded layer replacing `module` (a copy, whose weight
        is already a meta stand-in): its meta template and the bias it keeps."""
        bias = module._parameters.get("bias")
        return meta_template(module), bias

    def install(self, module: nn.Module, layer: "SeededLayer") -> nn.Module:
        """What takes `module`'s place in the model once `layer` is built for it."""
        return layer

    def restore(self, layer: "SeededLayer", weight: nn.Parameter, places) -> None:
        """materialize: plain torch modules holding the dense `weight` at the
        (parent, attribute) places where `layer` is registered."""
        template = layer._template
        template._parameters["weight"] = weight
        if "bias" in template._parameters:
            template._parameters["bias"] = layer.bias
        for parent, attribute in places:
            setattr(parent, attribute, template)

    def init_variance(self, shape) -> float:
        """PyTorch's default init: kaiming_uniform(a=sqrt(5)) has variance 1/(3 fan_in)."""
        return 1.0 / (3.0 * math.prod(shape[1:]))

    def to_module_layout(self, weight: torch.Tensor) -> torch.Tensor:
        return weight

    def finish_weight(self, template: nn.Module, weight: torch.Tensor) -> torch.Tensor:
        """Constraints the layer type puts on its weight (none by default)."""
        return weight

    def apply(self, template: nn.Module, x, weight, bias):
        raise NotImplementedError


class _LinearKind(LayerKind):
    name, base, linear = "linear", nn.Linear, True

    def apply(self, template, x, weight, bias):
        return F.linear(x, weight, bias)


class _HFConv1DKind(LayerKind):
    """transformers.pytorch_utils.Conv1D (GPT-2): a Linear with a transposed (in, out)
    weight. Recognised by name so that randfx never imports transformers."""

    name, base, linear = "hf_conv1d", nn.Module, True

    def matches(self, module):
        cls = type(module)
        return cls.__name__ == "Conv1D" and cls.__module__ == "transformers.pytorch_utils"

    def weight_shape(self, module):
        return tuple(module.weight.shape[::-1])

    def to_module_layout(self, weight):
        return weight.t()

    def apply(self, template, x, weight, bias):
        return F.linear(x, weight, bias)


class _ConvKind(LayerKind):
    def apply(self, template, x, weight, bias):
        # the layer's own padding_mode / stride / dilation / groups handling
        return template._conv_forward(x, weight, bias)


class _Conv1dKind(_ConvKind):
    name, base = "conv1d", nn.Conv1d


class _Conv2dKind(_ConvKind):
    name, base = "conv2d", nn.Conv2d


class _Conv3dKind(_ConvKind):
    name, base = "conv3d", nn.Conv3d


class _EmbeddingKind(LayerKind):
    name, base, default_selected = "embedding", nn.Embedding, False

    def init_variance(self, shape):
        return 1.0  # nn.Embedding's default init is N(0, 1)

    def finish_weight(self, template, weight):
        # nn.Embedding keeps its padding row at zero (init zeroes it, it gets no gradient)
        if template.padding_idx is None:
            return weight
        index = torch.tensor([template.padding_idx], device=weight.device)
        return weight.index_fill(0, index, 0.0)

    def apply(self, template, x, weight, bias):
        return F.embedding(x, weight, template.padding_idx, template.max_norm,
                           template.norm_type, template.scale_grad_by_freq, template.sparse)


class _MultiheadAttentionKind(LayerKind):
    """nn.MultiheadAttention's packed query/key/value projection `in_proj_weight`
    (3E, E), present when query, key and value share the embedding size. The module's
    own forward applies it (F.multi_head_attention_forward, or the fused fast path), so
    the module stays: it becomes a SeededMultiheadAttention, whose in_proj_weight is
    generated at each read by the seeded layer it holds as child `in_proj`. Its
    in_proj_bias stays its own; out_proj is an nn.Linear for the Linear rule."""

    name, base = "multihead_attention", nn.MultiheadAttention
    weight_attribute, applied_by_owner = "in_proj_weight", True

    def matches(self, module):
        return (super().matches(module) and module._qkv_same_embed_dim
                and module.in_proj_weight is not None)

    def init_variance(self, shape):
        # MultiheadAttention._reset_parameters: xavier_uniform_, variance 2/(fan_in+fan_out)
        return 2.0 / (shape[0] + shape[1])

    def apply(self, template, x, weight, bias):
        raise TypeError("a multihead_attention seeded layer only generates in_proj_weight; "
                        "its nn.MultiheadAttention applies it: call that module")

    def split(self, module):
        weight = module.in_proj_weight
        template = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta",
                             dtype=weight.dtype)
        return template, None

    def install(self, module, layer):
        # the architecture it came from, for artifact fingerprints (a copy: the module's
        # own parameters and children stay)
        original = copy.deepcopy(module)
        for part in original.modules():
            meta_template(part)
        module.__class__ = SeededMultiheadAttention
        object.__setattr__(module, "_template", original)
        del module._parameters["in_proj_weight"]
        module.in_proj = layer
        return module

    def restore(self, layer, weight, places):
        for owner, attribute in places:
            owner.__class__ = nn.MultiheadAttention
            del owner._modules[attribute]
            object.__delattr__(owner, "_template")
            owner._parameters["in_proj_weight"] = weight


LAYER_KINDS = {kind.name: kind for kind in (
    _LinearKind(), _HFConv1DKind(), _Conv1dKind(), _Conv2dKind(), _Conv3dKind(),
    _EmbeddingKind(), _MultiheadAttentionKind())}


def layer_kind(module: nn.Module) -> Optional[LayerKind]:
    """The rule that can rewrite `module`'s weight, or None."""
    for kind in LAYER_KINDS.values():
        if kind.matches(module):
            return kind
    return None


# ------------------------------------------------------------------------- plans, records

@dataclass(frozen=True)
class WeightPlan:
    """Everything needed to build one seeded layer; a pure function of the config, the
    weight's name and its shape, so re-running transform gives identical plans."""

    name: str  # canonical parameter name ("h.0.attn.c_attn.weight"), keys derive from it
    kind: str
    shape: Tuple[int, ...]  # canonical (out, in, *kernel)
    scheme: str  # "frozen" | "random_base_lora" | "subspace"
    generator: str
    dist: str
    key: int
    scale: float
    rank: int = 0
    lora_scaling: float = 0.0
    lora_init_key: int = 0
    dim: int = 0
    basis_key: int = 0
    basis_offset: int = 0  # counter of this weight's first basis row: first row * dim
    basis_scale: float = 0.0
    shared_basis: bool = False  # scope "global": alpha and basis live in GlobalSubspace
    execution: str = "materialize"  # set by the lower pass: "fused" | "materialize"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SeededTensor:
    """One generated tensor: flattened element i is scale * stream(key)[offset + i]."""

    name: str
    key: int
    generator: str
    dist: str
    shape: Tuple[int, ...]
    offset: int
    scale: float


# ------------------------------------------------------------------------------- modules

def autocast_input(x: torch.Tensor) -> torch.Tensor:
    """x in the autocast dtype where autocast is on for its device, as F.linear's input
    would be: the fused linear ops are custom ops, which autocast does not cast. (Conv and
    embedding kinds call F.conv* / F.embedding, which autocast handles itself.)"""
    if x.is_floating_point() and is_autocast_enabled(x.device.type):
        return x.to(get_autocast_dtype(x.device.type))
    return x


class SeededLayer(nn.Module):
    """Base of every emitted layer. Subclasses define `scheme`, `scheme_weight(dtype)` and
    `fused_linear(x)`; everything else (bias, key buffer, forward dispatch, records,
    tying) lives here once."""

    scheme: ClassVar[str]

    def __init__(self, plan: WeightPlan, template: nn.Module, bias: Optional[nn.Parameter]):
        super().__init__()
        self.weight_name = plan.name
        self.kind = LAYER_KINDS[plan.kind]
        self.weight_shape = tuple(plan.shape)
        self.generator = plan.generator
        self.dist = plan.dist
        self.scale = float(plan.scale)
        self.execution = plan.execution
        self.register_buffer("seed", torch.tensor(plan.key, dtype=torch.int64))
        self.bias = bias
        # The original layer on the meta device: its class and hyper-parameters (stride,
        # padding_idx, ...) for `apply` and `materialize`. Set past nn.Module.__setattr__
        # so that it is no submodule: it adds nothing to state_dict, parameters() or .to().
        object.__setattr__(self, "_template", template)

    @property
    def out_features(self) -> int:
        return self.weight_shape[0]

    def param_dtype(self) -> torch.dtype:
        """The dtype of the layer's own parameters (coefficients, bias), else the default."""
        for tensor in self.parameters():
            return tensor.dtype
        return torch.get_default_dtype()

    def weight_dtype(self) -> torch.dtype:
        """The dtype of the weight this layer replaced (its meta template keeps it): the
        dtype of `weight`, of `materialize`'s dense weight and of an embedding's output,
        so a bf16 model stays bf16 whatever dtype its coefficients are in."""
        weight = getattr(self._template, "weight", None)
        return weight.dtype if isinstance(weight, torch.Tensor) else self.param_dtype()

    def _dtype(self, x: torch.Tensor) -> torch.dtype:
        # weights follow a floating input; an embedding's int input says nothing
        return x.dtype if x.is_floating_point() else self.weight_dtype()

    def base_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return generate_weight(self.seed, self.weight_shape, self.scale,
                               generator=self.generator, dist=self.dist, dtype=dtype,
                               device=self.seed.device)

    def scheme_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """W as the scheme defines it (before the layer type's constraints)."""
        raise NotImplementedError

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The full weight in canonical (out, in, *kernel) layout, differentiable with
        respect to the coefficients."""
        return self.kind.finish_weight(self._template,
                                       self.scheme_weight(dtype or self.weight_dtype()))

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight in the original module's layout, computed on each access (one
        full generation) unless held (`hold_weight`): for code that reads `layer.weight`
        (its dtype, device, or the values). Not a parameter or buffer, so not in
        state_dict; forward never uses it."""
        held = self.__dict__.get("_held_weight")
        if held is not None:
            return held
        return self.kind.to_module_layout(self.dense_weight())

    def hold_weight(self, weight: Optional[torch.Tensor]) -> None:
        """Serve reads of `weight` from this tensor (None: generate at each read again),
        for an owner that reads it several times in one call."""
        object.__setattr__(self, "_held_weight", weight)

    def fused_linear(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x):
        if self.execution == "fused":
            return self.fused_linear(autocast_input(x))
        return self.kind.apply(self._template, x, self.dense_weight(self._dtype(x)), self.bias)

    def seeded_tensors(self):
        """The generated tensors this layer regenerates (for artifact checksums)."""
        return [SeededTensor(self.weight_name, int(self.seed), self.generator, self.dist,
                             self.weight_shape, 0, self.scale)]

    def share_weight_with(self, other: "SeededLayer") -> None:
        """Make this layer use `other`'s seeded weight (a tied weight: one seeded tensor
        used twice); own bias stays."""
        if type(other) is not type(self) or other.weight_shape != self.weight_shape:
            raise ValueError(f"cannot tie {self.weight_name} to {other.weight_name}: "
                             f"{type(self).__name__}{self.weight_shape} vs "
                             f"{type(other).__name__}{other.weight_shape}")
        for name, _ in other.named_buffers(recurse=False):
            self._buffers[name] = other._buffers[name]
        for name, param in other.named_parameters(recurse=False):
            if name != "bias":
                self._parameters[name] = param

    def extra_repr(self) -> str:
        shape = "x".join(map(str, self.weight_shape))
        return (f"{self.kind.name} {shape}, weight={self.weight_name!r}, scale={self.scale:.4g}, "
                f"{self.generator}/{self.dist}, bias={self.bias is not None}, {self.execution}")


class SeededFrozen(SeededLayer):
    scheme = "frozen"

    def scheme_weight(self, dtype):
        return self.base_weight(dtype)

    def fused_linear(self, x):
        return seeded_linear(x, self.seed, self.out_features, self.scale, self.bias,
                             generator=self.generator, dist=self.dist)


class SeededLoRA(SeededLayer):
    scheme = "random_base_lora"

    def __init__(self, plan, template, bias):
        super().__init__(plan, template, bias)
        self.rank = plan.rank
        self.lora_scaling = float(plan.lora_scaling)
        fan_in = math.prod(self.weight_shape[1:])
        dtype = bias.dtype if bias is not None else torch.get_default_dtype()
        # PEFT's init: B = 0 so the layer starts as its base weight; A kaiming-uniform-like
        # (variance 1/(3 fan_in)). A is a saved parameter, not a regenerated tensor, so a
        # private torch.Generator seeded from a derived key is enough: transform stays
        # deterministic and never touches torch's global RNG.
        bound = 1.0 / math.sqrt(fan_in)
        lora_A = torch.empty(self.rank, fan_in, dtype=dtype).uniform_(
            -bound, bound, generator=torch.Generator().manual_seed(plan.lora_init_key))
        self.lora_A = nn.Parameter(lora_A)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, self.rank, dtype=dtype))

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A).mul(self.lora_scaling).view(self.weight_shape)

    def scheme_weight(self, dtype):
        return self.base_weight(dtype) + self.delta_weight().to(dtype)

    def fused_linear(self, x):
        return seeded_lora_linear(x, self.seed, self.lora_A, self.lora_B, self.scale,
                                  self.lora_scaling, self.bias, generator=self.generator,
                                  dist=self.dist)

    def extra_repr(self):
        return f"{super().extra_repr()}, rank={self.rank}, lora_scaling={self.lora_scaling:.4g}"


class SeededSubspace(SeededLayer):
    scheme = "subspace"

    def __init__(self, plan, template, bias):
        super().__init__(plan, template, bias)
        self.dim = plan.dim
        self.basis_offset = plan.basis_offset
        self.basis_scale = float(plan.basis_scale)
        if not plan.shared_basis:
            dtype = bias.dtype if bias is not None else torch.get_default_dtype()
            self.register_buffer("basis_seed", torch.tensor(plan.basis_key, dtype=torch.int64))
            self.alpha = nn.Parameter(torch.zeros(plan.dim, dtype=dtype))

    def delta_weight(self) -> torch.Tensor:
        numel = math.prod(self.weight_shape)
        return subspace_weight(self.alpha, self.basis_seed, numel, self.basis_offset,
                               self.basis_scale, generator=self.generator,
                               dist=self.dist).view(self.weight_shape)

    def scheme_weight(self, dtype):
        return self.base_weight(dtype) + self.delta_weight().to(dtype)

    def fused_linear(self, x):
        return subspace_linear(x, self.seed, self.scale, self.alpha, self.basis_seed,
                               self.basis_offset, self.basis_scale, self.out_features,
                               self.bias, generator=self.generator, base_dist=self.dist,
                               basis_dist=self.dist)

    def seeded_tensors(self):
        numel = math.prod(self.weight_shape)
        basis = SeededTensor(self.weight_name + ".basis", int(self.basis_seed), self.generator,
                             self.dist, (numel, self.dim), self.basis_offset,
                             self.basis_scale)
        return super().seeded_tensors() + [basis]

    def extra_repr(self):
        return (f"{super().extra_repr()}, dim={self.dim}, basis_offset={self.basis_offset}, "
                f"basis_scale={self.basis_scale:.4g}")


class SeededMultiheadAttention(nn.MultiheadAttention):
    """An nn.MultiheadAttention whose `in_proj_weight` is generated, at each read, by its
    child `in_proj` (a seeded layer of kind "multihead_attention": the seed and the
    scheme's coefficients). Made from an existing module by that rule (emit), never
    constructed; `_template` keeps the original on the meta device, the architecture
    it came from. Its forward is MultiheadAttention's, with each seeded projection's
    weight generated once per call."""

    @property
    def in_proj_weight(self) -> torch.Tensor:
        return self.in_proj.weight

    def forward(self, *args, **kwargs):
        # MultiheadAttention.forward reads in_proj_weight several times (its fast-path
        # checks: 4 generations per training forward, 7 per eval forward, where 2 do):
        # each seeded projection generates its weight once per call
        layers = [m for m in (self.in_proj, self.out_proj) if isinstance(m, SeededLayer)]
        for layer in layers:
            layer.hold_weight(layer.weight)
        try:
            return super().forward(*args, **kwargs)
        finally:
            for layer in layers:
                layer.hold_weight(None)


class GlobalSubspace(nn.Module):
    """The one coefficient vector of scope "global" (PRANC: the whole model is theta0 +
    P @ alpha). Registered once, as child `subspace` of the first global layer, so its
    state_dict entries are "<that layer>.subspace.alpha" and "<that layer>.subspace.seed"."""

    def __init__(self, dim: int, key: int, rows: int, dtype=None):
        super().__init__()
        self.dim = dim
        self.rows = rows  # total rows of P: the summed numel of every selected weight
        self.alpha = nn.Parameter(torch.zeros(dim, dtype=dtype or torch.get_default_dtype()))
        self.register_buffer("seed", torch.tensor(key, dtype=torch.int64))

    def extra_repr(self):
        return f"dim={self.dim}, rows={self.rows}"


class SeededGlobalSubspace(SeededSubspace):
    """A subspace layer whose alpha and basis key belong to the root's GlobalSubspace.
    It holds a plain reference to it (not a submodule), so the shared alpha appears
    once in state_dict and parameters()."""

    scheme = "subspace"

    def __init__(self, plan, template, bias, subspace: GlobalSubspace):
        super().__init__(replace(plan, shared_basis=True), template, bias)
        object.__setattr__(self, "_subspace", subspace)

    @property
    def alpha(self) -> nn.Parameter:
        return self._subspace.alpha

    @property
    def basis_seed(self) -> torch.Tensor:
        return self._subspace.seed


def seeded_layer(plan: WeightPlan, template: nn.Module, bias, subspace=None) -> SeededLayer:
    """The seeded layer for `plan` (GlobalSubspace required for shared-basis plans)."""
    if plan.scheme == "frozen":
        return SeededFrozen(plan, template, bias)
    if plan.scheme == "random_base_lora":
        return SeededLoRA(plan, template, bias)
    if plan.scheme == "subspace":
        if plan.shared_basis:
            return SeededGlobalSubspace(plan, template, bias, subspace)
        return SeededSubspace(plan, template, bias)
    raise ValueError(f"no seeded layer for scheme {plan.scheme!r}")
