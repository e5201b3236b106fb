"""Data-parallel training of transformed models with torch.distributed.

A transformed model trains under DistributedDataParallel or FSDP2 (`fully_shard`) like any
other model: only its coefficients are parameters, so only they are reduced, and seeds
are buffers that every rank already holds. What is specific to seeded weights lives here:

    verify_seeds(model)          every rank must regenerate the same weights: compares
                                 seeds, Config, randfx and stream versions across ranks
                                 and raises ValueError naming the first difference and
                                 the ranks involved (on every rank, so none hangs)
    save_on_rank0(model, path)   gathers the full state (plain, DDP, FSDP2, sharded basis)
                                 and writes one randfx artifact, from rank 0 only
    shard_subspace_basis(model)  PRANC's distributed basis for scope "global": each rank
                                 regenerates only its slice of P's columns and owns that
                                 slice of alpha; the partial weights are all-reduced
    gather_subspace_alpha(model) the full alpha of a sharded model, on every rank

Call verify_seeds before wrapping: DDP broadcasts rank 0's buffers, seeds included, which
would hide ranks whose Configs differ (their layer scales and basis offsets still
differ), and FSDP2 broadcasts nothing, so each rank would train different weights.
"""

import math
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from . import ops
from .modules import GlobalSubspace, SeededGlobalSubspace

__all__ = ["verify_seeds", "seed_tensors", "save_on_rank0", "shard_subspace_basis",
           "gather_subspace_alpha", "ShardedGlobalSubspace", "ShardedSubspaceLayer",
           "unwrap"]


def _fail(function: str, message: str, error=ValueError):
    raise error(f"randfx.distributed.{function}: {message}")


def _require_process_group(function: str) -> None:
    if not dist.is_available() or not dist.is_initialized():
        _fail(function, "torch.distributed is not initialised; call "
                        "torch.distributed.init_process_group first", RuntimeError)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers.
    FSDP2 shards in place, so an FSDP2 model is its own module."""
    while True:
        inner = getattr(model, "module", None) if isinstance(
            model, nn.parallel.DistributedDataParallel) else getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


# ---------------------------------------------------------------- seeds agree on every rank

def seed_tensors(model: nn.Module) -> dict:
    """{state_dict name: value} of every seed buffer (int64 buffers named `seed` or
    `*_seed`: the keys of generated weights and bases, DESIGN.md contract 4)."""
    seeds = {}
    for name, buffer in unwrap(model).named_buffers():
        leaf = name.rsplit(".", 1)[-1]
        if buffer.dtype == torch.int64 and (leaf == "seed" or leaf.endswith("_seed")):
            seeds[name] = buffer.detach().cpu().tolist()
    return seeds


def _description(model: nn.Module) -> dict:
    """What must be equal on every rank for the ranks to regenerate the same weights."""
    from . import __version__
    from .generators import stream_versions

    config = getattr(unwrap(model), "randfx_config", None)
    return {"randfx": __version__, "streams": stream_versions(),
            "config": None if config is None else config.to_dict(),
            "seeds": seed_tensors(model)}


def verify_seeds(model: nn.Module, group=None) -> dict:
    """Check that every rank of `group` holds the same seeds, Config, randfx version and
    generator stream versions; return this rank's seeds ({name: value}).

    A collective: every rank of the group must call it. Every rank raises the same
    ValueError when anything differs, naming the first differing seed (in state_dict
    order) and which ranks hold which value.
    """
    _require_process_group("verify_seeds")
    mine = _description(model)
    world = dist.get_world_size(group)
    gathered = [None] * world
    dist.all_gather_object(gathered, mine, group=group)
    ranks = dist.get_process_group_ranks(group) if group is not None else list(range(world))

    def by_rank(values):
        """'12 on ranks [0, 2], 7 on ranks [1]': global ranks, as a user sees in logs."""
        groups = {}
        for index, value in enumerate(values):
            groups.setdefault(repr(value), []).append(ranks[index])
        return ", ".join(f"{value} on ranks {members}" for value, members in groups.items())

    for field, what, hint in (
            ("randfx", "randfx version", "install the same randfx on every node"),
            ("streams", "generator stream versions", "install the same randfx on every node")):
        values = [g[field] for g in gathered]
        if any(v != values[0] for v in values):
            _fail("verify_seeds", f"{what} differs across ranks: {by_rank(values)}; {hint}")

    # rank 0's state_dict order first, then names only other ranks have
    for name in dict.fromkeys(name for g in gathered for name in g["seeds"]):
        values = [g["seeds"].get(name, "absent") for g in gathered]
        if any(v != values[0] for v in values):
            _fail("verify_seeds",
                  f"seed tensor {name!r} differs across ranks: {by_rank(values)}. Every rank "
                  "must transform the same model with the same randfx.Config (same "
                  "Config.seed) before training; otherwise each rank regenerates "
                  "different weights")
    configs = [g["config"] or {} for g in gathered]
    for field in dict.fromkeys(k for c in configs for k in c):
        values = [c.get(field, "absent") for c in configs]
        if any(v != values[0] for v in values):
            _fail("verify_seeds",
                  f"the randfx Config differs across ranks: {field} is {by_rank(values)}. "
                  "Transform the model with the same Config on every rank")
    return mine["seeds"]


# ---------------------------------------------------------------- PRANC's distributed basis

class _SumOverRanks(torch.autograd.Function):
    """Forward: the sum of every rank's partial weight. Backward: the mean over ranks of
    the weight's gradient, i.e. the gradient of the ranks' mean loss, the objective that
    DDP's gradient averaging optimises for every other parameter."""

    @staticmethod
    def forward(ctx, partial, group):
        ctx.group = group
        total = partial.contiguous().clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad / dist.get_world_size(ctx.group), None


class ShardedGlobalSubspace(nn.Module):
    """This rank's slice alpha[start:stop] of the global (PRANC) coefficient vector, in
    place of the root's GlobalSubspace. `alpha_shard` is a parameter that this rank alone
    updates; `seed` is the basis key, `dim` the full length of alpha."""

    def __init__(self, source: GlobalSubspace, start: int, stop: int, group=None):
        super().__init__()
        self.dim, self.rows = source.dim, source.rows
        self.start, self.stop = start, stop
        self.group = group
        self.alpha_shard = nn.Parameter(source.alpha.detach()[start:stop].clone())
        self.register_buffer("seed", source.seed.detach().clone())

    def extra_repr(self):
        return f"dim={self.dim}, rows={self.rows}, columns=[{self.start}, {self.stop})"


class ShardedSubspaceLayer(SeededGlobalSubspace):
    """A global-subspace layer under `shard_subspace_basis`: it regenerates only the
    columns [start, stop) of its rows of P, forms its partial weight delta from this
    rank's alpha slice, and sums the partials over the ranks.

    Column k of row j of the layer's block is the counter basis_offset + j * dim + k, so
    the slice is read with row stride `dim` from counter basis_offset + start. The fused
    subspace_linear op needs the whole alpha, so the layer always materialises W."""

    @property
    def alpha(self) -> nn.Parameter:
        return self._subspace.alpha_shard

    def delta_weight(self) -> torch.Tensor:
        holder = self._subspace
        partial = ops.subspace_weight(holder.alpha_shard, holder.seed,
                                      math.prod(self.weight_shape),
                                      self.basis_offset + holder.start, self.basis_scale,
                                      generator=self.generator, dist=self.dist,
                                      row_stride=holder.dim)
        return _SumOverRanks.apply(partial, holder.group).view(self.weight_shape)

    def fused_linear(self, x):
        return self.kind.apply(self._template, x, self.dense_weight(self._dtype(x)), self.bias)


def column_range(dim: int, rank: int, world: int):
    """[start, stop) of the columns of P (entries of alpha) that `rank` of `world` owns:
    contiguous, sizes differing by at most one."""
    return rank * dim // world, (rank + 1) * dim // world


def shard_subspace_basis(model: nn.Module, group=None) -> nn.Module:
    """PRANC's distributed basis (seed 003, "Distributed learning") for a model transformed
    with Config(scheme="subspace", scope="global"), in place; returns `model`.

    Rank r of `group` keeps alpha[start:stop] (`column_range`) as the parameter
    `<subspace>.alpha_shard` and regenerates only those columns of the basis; every
    forward all-reduces the partial weights (sum), every backward all-reduces the weights'
    gradients (mean), and each rank's alpha_shard gets exactly the gradient that slice of
    the full alpha would get under DDP. Build the optimizer after this call.

    Dense parameters (biases, norms, embeddings) are still replicated: wrap the result in
    DistributedDataParallel, which this call tells to leave alpha_shard alone (each rank's
    slice is different, averaging them would be wrong). Not for FSDP2. Save with
    `save_on_rank0`, which gathers the full alpha. A collective: every rank calls it.
    """
    _require_process_group("shard_subspace_basis")
    if isinstance(model, nn.parallel.DistributedDataParallel):
        _fail("shard_subspace_basis", "the model is already wrapped in "
                                      "DistributedDataParallel; shard first, then wrap")
    root = unwrap(model)
    subspaces = [(name, module) for name, module in root.named_modules()
                 if type(module) is GlobalSubspace]
    if not subspaces:
        already = any(isinstance(m, ShardedGlobalSubspace) for m in root.modules())
        _fail("shard_subspace_basis",
              "the model's basis is already sharded" if already else
              f"model ({type(root).__name__}) has no global subspace; transform it with "
              "randfx.Config(scheme='subspace', scope='global', dim=...) first")
    verify_seeds(root, group)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    ignored = list(getattr(root, "_ddp_params_and_buffers_to_ignore", []))
    for name, subspace in subspaces:
        if subspace.dim < world:
            _fail("shard_subspace_basis",
                  f"{name or 'the root'} has dim={subspace.dim} coefficients, fewer than the "
                  f"{world} ranks of the group; each rank needs at least one (dim >= {world})")
        start, stop = column_range(subspace.dim, rank, world)
        holder = ShardedGlobalSubspace(subspace, start, stop, group)
        parent_name, _, leaf = name.rpartition(".")
        setattr(root.get_submodule(parent_name), leaf, holder)
        for layer in root.modules():
            if isinstance(layer, SeededGlobalSubspace) and layer._subspace is subspace:
                layer.__class__ = ShardedSubspaceLayer
                object.__setattr__(layer, "_subspace", holder)
        ignored.append(f"{name}.alpha_shard")
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        root, ignored)
    return model


def _sharded_subspaces(root: nn.Module):
    return [(name, m) for name, m in root.named_modules() if isinstance(m, ShardedGlobalSubspace)]


def _gather_alpha(holder: ShardedGlobalSubspace) -> torch.Tensor:
    # each rank fills its slice of a zero vector; a sum rebuilds alpha (any slice sizes)
    full = holder.alpha_shard.new_zeros(holder.dim)
    full[holder.start:holder.stop] = holder.alpha_shard.detach()
    dist.all_reduce(full, group=holder.group)
    return full


def gather_subspace_alpha(model: nn.Module) -> torch.Tensor:
    """The full alpha of a model under `shard_subspace_basis`, on every rank (a
    collective)."""
    _require_process_group("gather_subspace_alpha")
    sharded = _sharded_subspaces(unwrap(model))
    if len(sharded) != 1:
        _fail("gather_subspace_alpha", f"expected one sharded global subspace (see "
                                       f"shard_subspace_basis), the model has {len(sharded)}")
    return _gather_alpha(sharded[0][1])


# ---------------------------------------------------------------- one artifact, from rank 0

def _full_state_dict(root: nn.Module) -> Optional[dict]:
    """The state_dict of the unsharded model, on rank 0 (others: anything), or None on
    every rank when the model is not sharded (its own state_dict is whole). A collective."""
    from torch.distributed.tensor import DTensor

    fsdp = any(isinstance(p, DTensor) for p in root.parameters())
    sharded = _sharded_subspaces(root)
    if not fsdp and not sharded:
        return None
    if fsdp:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                             get_model_state_dict)
        state = get_model_state_dict(
            root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = root.state_dict()
    for name, holder in sharded:
        prefix = f"{name}." if name else ""
        full = _gather_alpha(holder)
        # alpha where the unsharded model has it, so `randfx.load` sees its own layout
        state = {(prefix + "alpha" if key == prefix + "alpha_shard" else key):
                 (full if key == prefix + "alpha_shard" else value)
                 for key, value in state.items()}
    return state


def _rebuilt(root: nn.Module, state: dict, like, example_inputs) -> nn.Module:
    """A plain transformed model holding `state`: `like` (the untransformed model or a
    zero-argument factory, as randfx.load takes) transformed with the model's Config
    (and `example_inputs`, for models transform captures only with inputs)."""
    from .artifact import load_whole_state
    from .pipeline import transform

    config = getattr(root, "randfx_config", None)
    if config is None:
        _fail("save_on_rank0", f"model ({type(root).__name__}) has no `randfx_config`; only "
                               "a model returned by randfx.transform can be saved")
    if like is None:
        _fail("save_on_rank0", "the model is sharded (FSDP2 or shard_subspace_basis), so "
                               "rank 0 rebuilds it whole to save it: pass like=<the "
                               "untransformed model, or a function that builds it>")
    source = like() if callable(like) and not isinstance(like, nn.Module) else like
    if not isinstance(source, nn.Module):
        _fail("save_on_rank0", f"like must be an nn.Module or a zero-argument function "
                               f"returning one, got {type(source).__name__}", TypeError)
    model = transform(source, config, example_inputs)  # a copy: `like` stays as it is
    load_whole_state(model, state)
    return model


def save_on_rank0(model: nn.Module, path, like=None, group=None, *,
                  example_inputs=None) -> bool:
    """Write `model` as one randfx artifact at `path` from rank 0 of `group`; return True
    on the rank that wrote. A collective: every rank calls it, and returns once the file
    exists. The model may be plain or wrapped in DDP / torch.compile; a model sharded
    with FSDP2 (fully_shard) or `shard_subspace_basis` also needs `like`, the
    untransformed model (or a function building it, as for randfx.load): its full state
    is gathered and rank 0 saves `like` transformed with the same Config and holding that
    state, so the file is exactly what randfx.save writes on one process. `example_inputs`
    go to that transform, as randfx.load's do, for models it can capture only with
    inputs."""
    from .artifact import save

    _require_process_group("save_on_rank0")
    root = unwrap(model)
    state = _full_state_dict(root)
    writer = dist.get_rank(group) == 0
    if writer:
        save(root if state is None else _rebuilt(root, state, like, example_inputs), path)
    dist.barrier(group=group)
    return writer
