"""randfx.distributed on 2 CPU processes with the gloo backend.

The two ranks are started once for the module (`ranks` fixture) and run each test's
worker function; an assertion failing on a rank fails the test with that rank's
traceback. The single-process reference is computed inside every rank on the whole
global batch, so no third process is needed: DDP / FSDP2 / the sharded PRANC basis on 2
ranks, each on its half of the batch, must reach the same coefficients as one process on
the global batch.
"""

import copy
import datetime
import functools
import json
import math
import os
import queue as queue_module
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import randfx
from randfx import distributed as rdist
from randfx.artifact import load
from randfx.ops import reference

from conftest import TRITON_DEVICES

WORLD = 2
BATCH = 8  # global batch; each rank takes BATCH // WORLD rows
STEPS = 3
COLLECTIVE_S = 60  # a rank that fails mid-collective releases the others after this
ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    "lora": randfx.Config(scheme="random_base_lora", rank=3, seed=11),
    "subspace_layer": randfx.Config(scheme="subspace", dim=5, seed=12),
    "subspace_global": randfx.Config(scheme="subspace", dim=7, scope="global", seed=13),
}
# float64 makes "equal" strict (~1e-10). The global alpha is created float32 whatever the
# model's dtype, and FSDP2 needs one dtype per parameter group, so that scheme runs a
# float32 model.
DTYPES = {"lora": torch.float64, "subspace_layer": torch.float64,
          "subspace_global": torch.float32}


# ---------------------------------------------------------------- harness

def _rank_main(rank, folder, backend, tasks, results):
    """One rank: join the group once, then run (worker, args) tasks until None. With
    NCCL, rank r computes on cuda:r."""
    torch.set_num_threads(1)
    if backend == "nccl":
        # NVLink multicast off, as the GPU hosts require (read when NCCL starts)
        os.environ.update(NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1")
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"file://{folder}/store", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=COLLECTIVE_S))
    try:
        for worker, args in iter(tasks.get, None):
            try:
                worker(rank, *args)
                results.put((rank, None))
            except BaseException:
                results.put((rank, traceback.format_exc()))
    finally:
        dist.destroy_process_group()


class Ranks:
    """WORLD processes in one process group (gloo on CPU, NCCL on GPUs), started once per
    test module: spawning a process costs seconds (importing torch), far more than the
    checks themselves."""

    def __init__(self, folder, backend):
        context = mp.get_context("spawn")
        self.results = context.Queue()
        self.tasks = [context.Queue() for _ in range(WORLD)]
        self.processes = [context.Process(target=_rank_main,
                                          args=(rank, folder, backend, self.tasks[rank],
                                                self.results),
                                          daemon=True) for rank in range(WORLD)]
        for process in self.processes:
            process.start()

    def run(self, worker, *args):
        """worker(rank, *args) on every rank; raise with each failing rank's
        traceback. After a failure the group is torn down (its collectives may no longer
        match) and the next call starts a new one."""
        for queue in self.tasks:
            queue.put((worker, args))
        failures = {}
        for _ in range(WORLD):
            try:
                rank, error = self.results.get(timeout=COLLECTIVE_S + 60)
            except queue_module.Empty:
                failures["?"] = "no answer: a rank hung or died"
                break
            if error:
                failures[rank] = error
        if failures:
            self.close()
            raise AssertionError("\n".join(f"rank {rank}:\n{error}"
                                           for rank, error in failures.items()))

    @property
    def alive(self):
        return all(process.is_alive() for process in self.processes)

    def close(self):
        for queue in self.tasks:
            queue.put(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def _ranks_fixture(backend):
    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory):
        holder = {}

        def get():
            if "ranks" not in holder or not holder["ranks"].alive:
                holder["ranks"] = Ranks(str(tmp_path_factory.mktemp("ranks")), backend)
            return holder["ranks"]

        yield get
        if "ranks" in holder:
            holder["ranks"].close()
    return fixture


ranks = _ranks_fixture("gloo")
cuda_ranks = _ranks_fixture("nccl")
needs_gpus = pytest.mark.skipif(torch.cuda.device_count() < WORLD,
                                reason=f"needs {WORLD} CUDA GPUs for NCCL")


def device():
    """This rank's device: cuda:<rank> under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def ddp(model):
    from torch.nn.parallel import DistributedDataParallel

    gpu = device().type == "cuda"
    return DistributedDataParallel(model, device_ids=[device().index] if gpu else None)


def base_model(dtype=torch.float64):
    torch.manual_seed(0)  # every rank builds the same dense layers (biases stay dense)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(),
                         nn.Linear(12, 3)).to(dtype)


def batch(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(BATCH, 6, generator=g, dtype=dtype).to(device()),
            torch.randn(BATCH, 3, generator=g, dtype=dtype).to(device()))


def local(tensor, rank):
    per_rank = BATCH // WORLD
    return tensor[rank * per_rank:(rank + 1) * per_rank]


def train(model, x, y, params=None, steps=STEPS):
    opt = torch.optim.AdamW(params if params is not None else model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return model


def assert_states_equal(actual: dict, expected: dict, what: str):
    """Equal up to the rounding of the lowest precision in `expected`: float64 models
    agree to ~1e-10; float32 ones (the global alpha is float32 whatever the model's
    dtype) round differently when the batch is split, and AdamW's normalised steps carry
    that to ~1e-6 absolute after a few steps (seen on a 16-core machine)."""
    assert actual.keys() == expected.keys(), (what, sorted(actual), sorted(expected))
    lowest = max((t.dtype for t in expected.values() if t.is_floating_point()),
                 key=lambda dtype: torch.finfo(dtype).eps)
    rtol, atol = (1e-10, 1e-12) if lowest == torch.float64 else (1e-5, 1e-5)
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name].cpu(), tensor.cpu(), rtol=rtol, atol=atol,
                                   msg=lambda m: f"{what}: {name} differs: {m}")


def trained_reference(config, dtype=torch.float64):
    """The single-process result: the transformed model trained on the global batch."""
    x, y = batch(dtype)
    return train(randfx.transform(base_model(dtype), config).to(device()), x, y)


# ---------------------------------------------------------------- seeds agree

def test_verify_seeds_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        rdist.verify_seeds(nn.Linear(2, 2))


def _verify_worker(rank, folder):
    same = randfx.transform(base_model(), CONFIGS["lora"])
    seeds = rdist.verify_seeds(same)
    assert seeds == {"0.seed": same[0].seed.item(), "2.seed": same[2].seed.item(),
                     "4.seed": same[4].seed.item()}

    # another root seed on rank 1: the first seed in state_dict order is named, with both
    # values and the ranks holding each
    other = randfx.transform(base_model(), randfx.Config(scheme="random_base_lora", rank=3,
                                                         seed=11 + rank))
    values = [randfx.transform(base_model(), randfx.Config(
        scheme="random_base_lora", rank=3, seed=s))[0].seed.item() for s in (11, 12)]
    with pytest.raises(ValueError) as error:
        rdist.verify_seeds(other)
    message = str(error.value)
    assert "seed tensor '0.seed' differs across ranks" in message, message
    assert f"{values[0]} on ranks [0]" in message and f"{values[1]} on ranks [1]" in message

    # a seed only one rank has (rank 1 rewrote one layer less)
    config = randfx.Config(scheme="random_base_lora", rank=3, seed=11,
                           exclude_modules=("4",) if rank == 1 else ())
    with pytest.raises(ValueError, match=r"seed tensor '4.seed' differs across ranks: "
                                         r"\d+ on ranks \[0\], 'absent' on ranks \[1\]"):
        rdist.verify_seeds(randfx.transform(base_model(), config))

    # same seeds (they derive from Config.seed and the names), different Config
    config = randfx.Config(scheme="random_base_lora", rank=3 + rank, seed=11)
    with pytest.raises(ValueError, match=r"Config differs across ranks: rank is 3 on ranks "
                                         r"\[0\], 4 on ranks \[1\]"):
        rdist.verify_seeds(randfx.transform(base_model(), config))


def test_verify_seeds_names_first_difference(ranks, tmp_path):
    ranks().run(_verify_worker, str(tmp_path))


# ---------------------------------------------------------------- DDP, FSDP2, artifact

def _case(name, config):
    """(like, x, y, the one-process trained reference, this rank's transformed model with
    its seeds verified across ranks) for one entry of CONFIGS."""
    like = functools.partial(base_model, DTYPES[name])
    x, y = batch(DTYPES[name])
    expected = trained_reference(config, DTYPES[name])
    model = randfx.transform(like(), config).to(device())
    rdist.verify_seeds(model)
    return like, x, y, expected, model


def _ddp_worker(rank, folder):
    for name, config in CONFIGS.items():
        like, x, y, expected, model = _case(name, config)
        wrapped = train(ddp(model), local(x, rank), local(y, rank))
        assert_states_equal(wrapped.module.state_dict(), expected.state_dict(), f"DDP {name}")

        # one artifact, written by rank 0 only; it loads on one process as the reference
        path = Path(folder) / f"ddp_{name}.rfx"
        assert rdist.save_on_rank0(wrapped, path) == (rank == 0)
        assert_states_equal(load(path, like=like).state_dict(),
                            expected.state_dict(), f"DDP {name} artifact")
    assert sorted(p.name for p in Path(folder).glob("*.rfx")) == sorted(
        f"ddp_{name}.rfx" for name in CONFIGS)


def test_ddp_on_two_ranks_equals_one_process_on_the_global_batch(ranks, tmp_path):
    ranks().run(_ddp_worker, str(tmp_path))


@pytest.mark.parametrize("worker", [pytest.param(w, id=w.strip("_"))
                                    for w in ("_ddp_worker", "_fsdp_worker", "_pranc_worker")])
@pytest.mark.cuda
@needs_gpus
def test_nccl_on_two_gpus_equals_one_gpu(cuda_ranks, tmp_path, worker):
    """The gloo checks again with NCCL, one GPU per rank (the lead's multi-GPU run)."""
    cuda_ranks().run(globals()[worker], str(tmp_path))


def _fsdp_worker(rank, folder):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    for name, config in CONFIGS.items():
        like, x, y, expected, model = _case(name, config)
        # an explicit mesh: the default one is CUDA whenever a GPU exists, even under gloo
        mesh = init_device_mesh(device().type, (dist.get_world_size(),))
        if config.scope == "layer":
            # per-layer groups; a global alpha is shared by all layers, so it stays in
            # the root's group (sharding it with one layer would free it under the others)
            for layer in (model[0], model[2]):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        assert any(isinstance(p, DTensor) for p in model.parameters())
        train(model, local(x, rank), local(y, rank))
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        assert_states_equal(full, expected.state_dict(), f"FSDP2 {name}")

        path = Path(folder) / f"fsdp_{name}.rfx"
        assert rdist.save_on_rank0(model, path, like=like) == (rank == 0)
        assert_states_equal(load(path, like=like).state_dict(),
                            expected.state_dict(), f"FSDP2 {name} artifact")


@pytest.mark.skipif(torch.__version__ < "2.7",
                    reason="FSDP2 on CPU ranks needs torch 2.7: 2.6's fully_shard records "
                           "events on the ranks' streams, and a CPU stream has no record_event")
def test_fsdp2_on_two_ranks_equals_one_process_on_the_global_batch(ranks, tmp_path):
    ranks().run(_fsdp_worker, str(tmp_path))


# ---------------------------------------------------------------- PRANC's distributed basis

def test_row_stride_reads_a_column_slice_of_a_wider_basis():
    """The op under the distributed basis: columns [k0, k0 + d) of a basis with D columns
    (row stride D) equal the matching slice of the full basis, forward and backward."""
    from randfx.generators import generate

    key, numel, D, k0, d, offset = torch.tensor(5), 9, 11, 4, 3, 22
    full = generate((numel * D,), key=5, offset=offset).double().view(numel, D)
    alpha = torch.randn(d, dtype=torch.float64, requires_grad=True)
    out = randfx.ops.subspace_weight(alpha, key, numel, offset + k0, 0.25, row_stride=D)
    torch.testing.assert_close(out, 0.25 * full[:, k0:k0 + d] @ alpha, rtol=0, atol=1e-15)
    g = torch.randn(numel, dtype=torch.float64)
    out.backward(g)
    torch.testing.assert_close(alpha.grad, 0.25 * full[:, k0:k0 + d].T @ g, rtol=0,
                               atol=1e-15)
    torch.autograd.gradcheck(lambda a: randfx.ops.subspace_weight(
        a, key, numel, offset + k0, 0.25, row_stride=D), (alpha.detach().requires_grad_(),))
    args = (alpha.detach(), key, numel, offset + k0, 0.25, "pcg", "uniform", D)
    torch.library.opcheck(torch.ops.randfx.subspace_weight.default, args)
    with pytest.raises(ValueError, match="row_stride must be an int >= 3, got 2"):
        randfx.ops.subspace_weight(alpha, key, numel, 0, row_stride=2)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("dist_name", ["uniform", "rademacher32"])
def test_row_stride_triton_matches_reference(device, dist_name):
    from randfx.ops import library

    key = torch.tensor(9, device=device)
    numel, D, k0, d, offset = 40, 64, 32, 32, 128
    alpha = torch.randn(d, device=device)
    grad = torch.randn(numel, device=device)
    for op, first in (("subspace_weight", alpha), ("subspace_weight_backward", grad)):
        size = numel if op == "subspace_weight" else d
        args = (first, key, size, offset + k0, 0.5, "pcg", dist_name, D)
        torch.testing.assert_close(library.run(op, "triton", *args),
                                   library.run(op, "reference", *args), rtol=1e-5, atol=1e-5)


def _global_subspace(model):
    (subspace,) = [m for m in model.modules() if type(m).__name__ == "GlobalSubspace"]
    return subspace


def _pranc_worker(rank, folder):
    config, dtype = CONFIGS["subspace_global"], DTYPES["subspace_global"]
    like = functools.partial(base_model, dtype)
    x, y = batch(dtype)
    reference_model = randfx.transform(like(), config).to(device())
    subspace = _global_subspace(reference_model)
    with torch.no_grad():  # nonzero alpha, so the forward check sees the basis
        subspace.alpha.copy_(torch.randn(subspace.dim,
                                         generator=torch.Generator().manual_seed(2)))
    dim, basis_key = subspace.dim, int(subspace.seed)
    model = copy.deepcopy(reference_model)
    rdist.shard_subspace_basis(model)
    start, stop = rdist.column_range(dim, rank, WORLD)
    assert (start, stop) == ((0, 3), (3, 7))[rank]

    # forward and backward regenerate only this rank's columns of the basis
    generated = []
    original = reference.stream_rows

    def spy(key, first, rows, cols, generator, dist, dtype, device, row_stride=None):
        if key == basis_key:
            stride = cols if row_stride is None else row_stride
            generated.append((first + torch.arange(rows)[:, None] * stride
                              + torch.arange(cols)).reshape(-1))
        return original(key, first, rows, cols, generator, dist, dtype, device, row_stride)

    reference.stream_rows = spy
    try:
        wrapped = ddp(model)  # alive until backward ends: its reducer averages the grads
        nn.functional.mse_loss(wrapped(local(x, rank)), local(y, rank)).backward()
    finally:
        reference.stream_rows = original
    expected = torch.cat([
        (layer.basis_offset + torch.arange(math.prod(layer.weight_shape))[:, None] * dim
         + torch.arange(start, stop)).reshape(-1)
        for layer in model.modules() if isinstance(layer, rdist.ShardedSubspaceLayer)])
    if device().type == "cpu":  # on a GPU, float32 runs the Triton kernels, not the spy
        assert torch.equal(torch.cat(generated).unique(), expected.unique())

    # the summed partial weights and the gradients are those of one process
    nn.functional.mse_loss(reference_model(x), y).backward()
    for mine, theirs in zip(model.modules(), reference_model.modules()):
        if isinstance(mine, rdist.ShardedSubspaceLayer):
            torch.testing.assert_close(mine.dense_weight(), theirs.dense_weight())
    torch.testing.assert_close(_sharded(model).alpha_shard.grad,
                               subspace.alpha.grad[start:stop], rtol=1e-5, atol=1e-7)
    for name, param in reference_model.named_parameters():
        if name.endswith("bias"):
            torch.testing.assert_close(model.get_parameter(name).grad, param.grad)

    # training: DDP averages the dense parameters and leaves alpha_shard to this rank
    expected_model = train(copy.deepcopy(reference_model), x, y)
    trained = train(ddp(model), local(x, rank), local(y, rank)).module
    torch.testing.assert_close(rdist.gather_subspace_alpha(trained),
                               _global_subspace(expected_model).alpha, rtol=1e-5, atol=1e-6)
    path = Path(folder) / "pranc.rfx"
    assert rdist.save_on_rank0(trained, path, like=like) == (rank == 0)
    assert_states_equal(load(path, like=like).state_dict(), expected_model.state_dict(),
                        "sharded basis artifact")

    with pytest.raises(ValueError, match="already sharded"):
        rdist.shard_subspace_basis(trained)
    with pytest.raises(ValueError, match="has no global subspace"):
        rdist.shard_subspace_basis(randfx.transform(like(), CONFIGS["lora"]))
    narrow = randfx.transform(like(), randfx.Config(scheme="subspace", dim=1, scope="global"))
    with pytest.raises(ValueError, match=r"dim=1 coefficients, fewer than the 2 ranks"):
        rdist.shard_subspace_basis(narrow)


def _sharded(model):
    (holder,) = [m for m in model.modules() if isinstance(m, rdist.ShardedGlobalSubspace)]
    return holder


def test_sharded_basis_equals_one_process_and_generates_only_its_columns(ranks, tmp_path):
    ranks().run(_pranc_worker, str(tmp_path))


# ---------------------------------------------------------------- examples/distributed_train.py

EXAMPLE = ROOT / "examples" / "distributed_train.py"


def _example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("distributed_train", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _example_worker(rank, folder):
    example = _example()
    for extra in (["--wrap", "ddp"],
                  ["--wrap", "pranc", "--scheme", "subspace", "--scope", "global", "--dim", "8"]):
        path = str(Path(folder) / f"{extra[1]}.rfx")
        args = example.parse(["--device", "cpu", "--preset", "tiny", "--steps", "2",
                              "--warmup", "0", "--batch", "4", "--save", path, *extra])
        result = example.train(args)

        # one process on the global batch: the same losses, step by step
        reference_model = randfx.transform(example.build_model("tiny"),
                                           example.config_from(args),
                                           torch.zeros(1, result["block"], dtype=torch.long))
        optimizer = torch.optim.AdamW(reference_model.parameters(), lr=args.lr)
        batches = example.global_batches(args, 256, result["block"], args.steps)
        expected = []
        for tokens in batches:
            optimizer.zero_grad()
            logits = reference_model(tokens[:, :-1])
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
            loss.backward()
            optimizer.step()
            expected.append(loss.item())
        assert result["ranks"] == WORLD
        torch.testing.assert_close(torch.tensor(result["losses"]), torch.tensor(expected),
                                   rtol=1e-5, atol=1e-6)
        loaded = load(path, like=lambda: example.build_model("tiny"),
                      example_inputs=torch.zeros(1, result["block"], dtype=torch.long))
        assert_states_equal(loaded.state_dict(), reference_model.state_dict(), extra[1])


def test_example_trains_like_one_process(ranks, tmp_path):
    ranks().run(_example_worker, str(tmp_path))


@pytest.mark.slow
def test_example_command_compares_one_and_two_ranks(tmp_path):
    """The one command of the example's docstring, on CPU (gloo): two torchrun jobs."""
    out = tmp_path / "compare.json"
    subprocess.run([sys.executable, str(EXAMPLE), "--device", "cpu", "--preset", "tiny",
                    "--ranks", "2", "--steps", "3", "--warmup", "1", "--batch", "4",
                    "--threads", "2", "--json", str(out)], check=True, cwd=tmp_path)
    report = json.loads(out.read_text())
    assert report["matched"] and [row["ranks"] for row in report["rows"]] == [1, 2]
    assert report["rows"][1]["max_loss_diff"] <= report["loss_tolerance"]
