"""Data-parallel training of a randfx-transformed GPT-2-small-size model (DDP, FSDP2 or
PRANC's distributed basis), compared against one process on the same global batch.

One command runs everything: a 1-rank run, the N-rank runs, the per-step loss comparison
and the tokens/s scaling table (each run launched with torchrun):

    python examples/distributed_train.py --ranks 2                    # N GPUs, NCCL
    python examples/distributed_train.py --ranks 2,4,8                # a scaling table
    python examples/distributed_train.py --ranks 2 --wrap fsdp2
    python examples/distributed_train.py --ranks 2 --scheme subspace --scope global \\
        --dim 4096 --wrap pranc                                       # sharded basis
    python examples/distributed_train.py --ranks 2 --device cpu --preset tiny  # gloo

Each rank (`--worker`, what torchrun starts; runnable by hand as
`torchrun --nproc_per_node N examples/distributed_train.py --worker ...`):
init the process group (NCCL on GPUs, gloo on CPU), build the model on every rank
from the same torch seed, `randfx.transform` it, `randfx.distributed.verify_seeds`
(every rank must regenerate the same weights), wrap it, train `--steps` steps on its
slice of each global batch, save one artifact from rank 0 (`--save`).

The global batch is fixed (`--batch` sequences of `--block` tokens, split across the
ranks), so every run sees the same data and the mean loss per step must match the
1-rank run up to floating-point reduction order: `--rtol` is the accepted relative
difference. tokens/s = global batch tokens / median step time after `--warmup` steps.

The NCCL settings the GPU hosts need (NVLink multicast off) are set here, before any
process starts: NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1.

Data: `--data FILE` (e.g. tinyshakespeare/input.txt), read as bytes (vocabulary 256,
padded to --vocab); without it, fixed pseudo-random tokens (enough for the loss
comparison and the throughput; the loss then cannot fall below ln(256)).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# before torch.distributed creates any communicator, in this process and its children
os.environ["NCCL_NVLS_ENABLE"] = "0"
os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] = "1"

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import randfx  # noqa: E402
from randfx import distributed as rdist  # noqa: E402

INIT_STD = 0.02  # GPT-2's initializer_range, for the embeddings and the generated weights
PRESETS = {  # GPT-2 small (124M), and a tiny model for CPU checks
    "gpt2-small": dict(n_layer=12, n_head=12, n_embd=768, block=1024, vocab=50304),
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block=32, vocab=256),
}


# ---------------------------------------------------------------- the model (nanoGPT)

class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        q, k, v = self.c_attn(self.ln_1(x)).split(x.shape[-1], dim=-1)
        heads = [t.unflatten(-1, (self.n_head, -1)).transpose(1, 2) for t in (q, k, v)]
        y = F.scaled_dot_product_attention(*heads, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).flatten(-2))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, block, vocab):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block, n_embd)
        for embedding in (self.wte, self.wpe):
            nn.init.normal_(embedding.weight, std=INIT_STD)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def build_model(preset):
    torch.manual_seed(0)  # the same dense weights (embeddings, norms, biases) on every rank
    return GPT(**PRESETS[preset])


def config_from(args):
    # lm_head is tied to wte (kept dense); generated weights get GPT-2's init scale
    common = dict(seed=args.seed, exclude_modules=("lm_head",), init_std=INIT_STD)
    if args.scheme == "subspace":
        return randfx.Config(scheme="subspace", dim=args.dim, scope=args.scope, **common)
    if args.scheme == "random_base_lora":
        return randfx.Config(scheme="random_base_lora", rank=args.rank, **common)
    return randfx.Config(scheme=args.scheme, **common)


# ---------------------------------------------------------------- data

def global_batches(args, vocab, block, steps):
    """[steps, batch, block + 1] token ids, the same on every rank."""
    g = torch.Generator().manual_seed(1234)
    if args.data:
        with open(args.data, "rb") as f:
            data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8).long()
        starts = torch.randint(0, len(data) - block - 1, (steps * args.batch,), generator=g)
        rows = torch.stack([data[s:s + block + 1] for s in starts.tolist()])
        return rows.view(steps, args.batch, block + 1)
    return torch.randint(0, min(vocab, 256), (steps, args.batch, block + 1), generator=g)


# ---------------------------------------------------------------- one rank

def wrap(model, args, device):
    if args.wrap == "ddp":
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.wrap == "pranc":
        rdist.shard_subspace_basis(model)  # then DDP for the dense params, alpha_shard ignored
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    # an explicit mesh: the default one is CUDA whenever a GPU exists, even under gloo
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    if args.scope != "global":
        # a global alpha is shared by every block: it must stay in the root's group
        for block in model.h:
            fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def train(args) -> dict:
    """Train on this rank of the initialised default process group; the run's facts."""
    rank, world = dist.get_rank(), dist.get_world_size()
    cuda = args.device == "cuda"
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    if args.batch % world:
        raise ValueError(f"--batch {args.batch} must be divisible by the {world} ranks")
    per_rank = args.batch // world
    preset = PRESETS[args.preset]
    block = preset["block"] if args.block is None else args.block

    # example inputs (one row of token ids): torch 2.6's symbolic trace cannot follow the
    # GPT's arange over a traced length, and capture then falls back to torch.export
    example = torch.zeros(1, block, dtype=torch.long)
    model = randfx.transform(build_model(args.preset), config_from(args), example).to(device)
    rdist.verify_seeds(model)  # before DDP broadcasts rank 0's buffers over any mismatch
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model = wrap(model, args, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    batches = global_batches(args, preset["vocab"], block, args.steps)
    losses, step_s = [], []
    for step in range(args.steps):
        tokens = batches[step, rank * per_rank:(rank + 1) * per_rank].to(device)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        step_s.append(time.perf_counter() - start)
        losses.append(loss.detach())
    # mean over ranks of the local mean losses = the global batch's mean loss
    losses = torch.stack(losses)
    dist.all_reduce(losses)
    losses = (losses / world).tolist()

    if args.save:
        rdist.save_on_rank0(model, args.save, like=lambda: build_model(args.preset),
                            example_inputs=example)
    timed = step_s[args.warmup:] or step_s
    return {
        "ranks": world, "wrap": args.wrap, "scheme": args.scheme, "scope": args.scope,
        "preset": args.preset, "batch": args.batch, "block": block,
        "trainable_parameters": trainable, "losses": losses, "step_s": step_s,
        "tokens_per_s": args.batch * block / statistics.median(timed),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "backend": dist.get_backend(), "torch": torch.__version__,
    }


def worker(args):
    """One torchrun process: NCCL on its GPU (LOCAL_RANK), or gloo on CPU threads."""
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    if not cuda:
        torch.set_num_threads(max(1, args.threads // dist.get_world_size()))
    result = train(args)
    if dist.get_rank() == 0 and args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    dist.destroy_process_group()


# ---------------------------------------------------------------- launcher

def launch(args, ranks, out):
    """One torchrun job of `ranks` processes running this file with --worker."""
    forwarded = [a for a in sys.argv[1:] if a not in ("--worker",)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={ranks}", os.path.abspath(__file__), *forwarded,
               "--worker", "--out", out]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, args.threads // ranks)))
    subprocess.run(command, env=env, check=True)
    with open(out) as f:
        return json.load(f)


def compare(args):
    if args.device == "cuda" and torch.cuda.device_count() < max(args.ranks):
        sys.exit(f"--ranks {max(args.ranks)} needs {max(args.ranks)} GPUs, this host has "
                 f"{torch.cuda.device_count()}")
    with tempfile.TemporaryDirectory() as folder:
        runs = [launch(args, ranks, os.path.join(folder, f"ranks{ranks}.json"))
                for ranks in sorted({1, *args.ranks})]
    single = runs[0]
    rows = []
    for run in runs:
        diff = max(abs(a - b) for a, b in zip(run["losses"], single["losses"]))
        rows.append({
            "ranks": run["ranks"], "wrap": run["wrap"],
            "tokens_per_s": run["tokens_per_s"],
            "speedup": run["tokens_per_s"] / single["tokens_per_s"],
            "efficiency": run["tokens_per_s"] / single["tokens_per_s"] / run["ranks"],
            "first_loss": run["losses"][0], "last_loss": run["losses"][-1],
            "max_loss_diff": diff})
    header = ("ranks", "wrap", "tokens_per_s", "speedup", "efficiency", "first_loss",
              "last_loss", "max_loss_diff")
    print(f"{args.preset} ({single['trainable_parameters']} trainable), scheme "
          f"{args.scheme}{'/' + args.scope if args.scheme == 'subspace' else ''}, global "
          f"batch {args.batch}x{single['block']}, {args.steps} steps, {single['device']}")
    print("  ".join(f"{h:>14}" for h in header))
    for row in rows:
        print("  ".join(f"{row[h]:>14.6g}" if isinstance(row[h], float) else f"{row[h]:>14}"
                        for h in header))
    worst = max(row["max_loss_diff"] for row in rows)
    tolerance = args.rtol * max(abs(x) for x in single["losses"])
    matched = worst <= tolerance
    print(f"loss vs 1 rank: max |diff| {worst:.3g}, tolerance {tolerance:.3g}: "
          f"{'match' if matched else 'MISMATCH'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(["python", *sys.argv]), "rows": rows,
                       "runs": runs, "loss_tolerance": tolerance, "matched": matched}, f,
                      indent=2)
    return 0 if matched else 1


def _rank_counts(text):
    counts = [int(part) for part in text.split(",")]
    if any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError(f"rank counts must be >= 1, got {text!r}")
    return counts


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=_rank_counts, default=[2],
                   help="ranks of the distributed runs, e.g. 2 or 2,4,8 (1 always runs)")
    p.add_argument("--device", choices=("cuda", "cpu"),
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpt2-small")
    p.add_argument("--wrap", choices=("ddp", "fsdp2", "pranc"), default="ddp")
    p.add_argument("--scheme", choices=("random_base_lora", "subspace", "frozen", "dense"),
                   default="random_base_lora")
    p.add_argument("--scope", choices=("layer", "global"), default="layer")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank")
    p.add_argument("--dim", type=int, default=1024, help="subspace dimension")
    p.add_argument("--seed", type=int, default=1337, help="randfx root seed")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of tokens/s")
    p.add_argument("--batch", type=int, default=16, help="global batch, in sequences")
    p.add_argument("--block", type=int, default=None, help="sequence length (preset's)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rtol", type=float, default=1e-3,
                   help="accepted |loss - 1-rank loss| / max 1-rank loss")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="CPU threads shared by the ranks")
    p.add_argument("--data", help="a text file, read as bytes (default: random tokens)")
    p.add_argument("--save", help="write the trained artifact here (rank 0)")
    p.add_argument("--json", help="write the comparison table and both runs as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.wrap == "pranc" and (args.scheme, args.scope) != ("subspace", "global"):
        p.error("--wrap pranc needs --scheme subspace --scope global")
    if any(args.batch % ranks for ranks in args.ranks):
        p.error(f"--batch {args.batch} must be divisible by every --ranks entry {args.ranks}")
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.worker:
        worker(arguments)
    else:
        sys.exit(compare(arguments))
