"""Seed 004's experiment: MNIST, MLP 784-256-128-10, Adam 1e-3, batch 128, full
backprop against the random-walk sparse backward with 10, 50 and 200 paths.

    python -m randfx.bench mnist [--json OUT] [--data DIR] [--epochs N] [--paths 10,50,200]

Columns: test accuracy after the last epoch; row-updates (rows the walks selected, the
only ones given gradient, summed over layers and steps; full backprop: all 394 rows every
step) and their fraction of full's; ms/step (forward + backward + Adam step + the walks,
averaged over all steps; the models train in lockstep on the same batches, each step
timed alone, so every method sees the same machine load); sample ms (one draw of the
walks alone, median, so the sampler's share is visible); ratio = ms/step of full /
ms/step of this run. --temperature/--epsilon/--weighting/--propagate set the
randfx.SparseBackward options. --compile runs every model (full and sparse alike) under
torch.compile. The first step at each batch shape is left out of ms/step (a warm-up; under
--compile, the compilation, reported as compile_s).
The data are read from gzip IDX files by path, never downloaded.
"""

import gzip
import os
import struct
import time

import torch
from torch import nn

from . import common

# $RANDFX_DATA/mnist, else shared/data/mnist beside a source checkout (../shared/data)
DEFAULT_DATA = os.path.join(os.environ.get("RANDFX_DATA") or os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data")), "mnist")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_idx(path: str) -> torch.Tensor:
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    if len(body) != int(torch.Size(shape).numel()):
        raise ValueError(f"{path}: {len(body)} bytes of data for shape {shape} (truncated?)")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(shape)


def load_mnist(data_dir: str = DEFAULT_DATA, split: str = "train", device="cpu"):
    """(images (N, 784) float32 in [0, 1], normalised like the usual MNIST recipe;
    labels (N,) int64) from the gzip IDX files in data_dir."""
    images_file, labels_file = FILES[split]
    for name in (images_file, labels_file):
        if not os.path.exists(os.path.join(data_dir, name)):
            raise FileNotFoundError(f"MNIST file {name} not found in {data_dir!r} (give "
                                    f"--data DIR holding the four gzip IDX files)")
    images = _read_idx(os.path.join(data_dir, images_file)).flatten(1).float().div_(255.0)
    images = (images - 0.1307) / 0.3081
    labels = _read_idx(os.path.join(data_dir, labels_file)).long()
    return images.to(device), labels.to(device)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def sparse_model(model: nn.Module, num_paths: int, seed: int = 0, **options) -> nn.Module:
    """`model` with the random-walk sparse backward (dense weights kept)."""
    import randfx
    config = randfx.Config(scheme="dense", seed=seed,
                           sparse_backward=randfx.SparseBackward(num_paths=num_paths, **options))
    return randfx.transform(model, config, torch.zeros(1, 784))


@torch.no_grad()
def accuracy(model: nn.Module, images, labels, batch: int = 2000) -> float:
    model.eval()
    correct = sum(int((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
                  for i in range(0, len(images), batch))
    return correct / len(images)


def train(models, train_data, *, epochs: int, batch: int = 128, lr: float = 1e-3,
          seed: int = 0):
    """Adam training of every model in lockstep on the same batches: each model's step is
    timed on its own, so all of them see the same machine load over time. Returns per
    model (ms per step, steps, rows updated in all, seconds of the first step at each
    batch shape, which ms per step leaves out)."""
    images, labels = train_data
    device = images.device
    loss_fn = nn.CrossEntropyLoss()
    runs = []
    for model in models:
        runs.append({"model": model, "plan": getattr(model, "randfx_sparse_backward", None),
                     "optimizer": torch.optim.Adam(model.parameters(), lr=lr),
                     "seconds": 0.0, "timed": 0, "warmup_seconds": 0.0, "shapes": set(),
                     "drawn": torch.zeros((), dtype=torch.int64, device=device)})
        model.train()
    shuffle = torch.Generator(device).manual_seed(seed)
    steps = 0
    for _ in range(epochs):
        order = torch.randperm(len(images), device=device, generator=shuffle)
        for i in range(0, len(images), batch):
            x, y = images[order[i:i + batch]], labels[order[i:i + batch]]
            for run in runs:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                run["optimizer"].zero_grad(set_to_none=True)
                loss_fn(run["model"](x), y).backward()
                run["optimizer"].step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if x.shape in run["shapes"]:
                    run["seconds"] += time.perf_counter() - start
                    run["timed"] += 1
                else:  # the first step at this batch shape: warm-up or compilation
                    run["shapes"].add(x.shape)
                    run["warmup_seconds"] += time.perf_counter() - start
                if run["plan"] is not None:
                    # counted now, on the device: a compiled model's next step may reuse
                    # the memory of this draw (CUDA graphs)
                    run["drawn"] += sum((r >= 0).sum()
                                        for r in run["plan"].last_sample.rows.values())
            steps += 1
    results = []
    for run in runs:
        if run["plan"] is None:
            rows = steps * sum(m.out_features for m in run["model"].modules()
                               if isinstance(m, nn.Linear))
        else:
            rows = int(run["drawn"])
        results.append((run["seconds"] * 1e3 / max(1, run["timed"]), steps, rows,
                        run["warmup_seconds"]))
    return results


def run(paths, *, data_dir=DEFAULT_DATA, epochs=5, device="cpu", train_limit=None, seed=0,
        compile=None, **walk_options):
    train_data = load_mnist(data_dir, "train", device)
    if train_limit:
        train_data = tuple(t[:train_limit] for t in train_data)
    test_data = load_mnist(data_dir, "test", device)
    methods = [None] + list(paths)
    models = [mlp(seed).to(device) if n is None
              else sparse_model(mlp(seed), n, seed, **walk_options).to(device) for n in methods]
    if compile:
        # the models share their forward's code, so each one's graphs (train, eval, the
        # short last batch) count against one recompile limit: raise it, or the later
        # models would silently fall back to eager
        config = torch._dynamo.config
        limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, limit, max(getattr(config, limit), 16 * len(models)))
        models = [torch.compile(model, mode=compile) for model in models]
    results = train(models, train_data, epochs=epochs, seed=seed)
    rows = []
    for num_paths, model, (ms, steps, updates, warmup_s) in zip(methods, models, results):
        row = {"method": "full" if num_paths is None else f"{num_paths} paths",
               "accuracy": 100.0 * accuracy(model, *test_data), "row_updates": updates,
               "ms_per_step": ms, "steps": steps, "compile_s": warmup_s}
        if num_paths is not None:
            row["sample_ms"] = common.time_ms(model.randfx_sparse_backward.resample,
                                              device=device)
        rows.append(row)
    full = rows[0]
    for row in rows:
        row["update_fraction"] = row["row_updates"] / full["row_updates"]
        row["ratio"] = full["ms_per_step"] / row["ms_per_step"]
    return rows


def main(argv=None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="directory of the gzip IDX files")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--paths", default="10,50,200", help="comma-separated path counts")
    p.add_argument("--train-limit", type=int, default=None,
                   help="use only the first N training images (a quick check)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--epsilon", type=float, default=0.0)
    p.add_argument("--weighting", default="magnitude", choices=("magnitude", "uniform"))
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   help="torch.compile every model, full and sparse alike, in this mode "
                        "(default, reduce-overhead, ...)")
    p.add_argument("--propagate", default="kept_rows", choices=("kept_rows", "all_rows"),
                   help="all_rows: seed 004's semantics (weight gradients masked to the "
                        "rows, input gradients dense)")
    args = p.parse_args(argv)
    paths = [int(n) for n in args.paths.split(",") if n]
    walk = {"temperature": args.temperature, "epsilon": args.epsilon,
            "weighting": args.weighting, "propagate": args.propagate}
    rows = run(paths, data_dir=args.data, epochs=args.epochs, device=args.device,
               train_limit=args.train_limit, seed=args.seed, compile=args.compile, **walk)
    columns = ["method", "accuracy", "row_updates", "update_fraction", "ms_per_step",
               "sample_ms", "ratio"] + (["compile_s"] if args.compile else [])
    common.emit("mnist", rows, columns, device=args.device, json_path=args.json,
                notes={"epochs": args.epochs, "batch": 128, "lr": 1e-3, "seed": args.seed,
                       "compile": args.compile,
                       "model": "784-256-128-10 ReLU", "train_limit": args.train_limit,
                       **walk})
    return 0
