"""`randfx demo` (also `python -m randfx demo`): the whole product in about twenty seconds.

Transforms an MLP on scikit-learn's bundled digits (1,797 8x8 images, no download) so its
hidden weights are regenerated from seeds, trains the small coefficients with a progress
bar, saves the artifact, reloads it into a freshly built MLP, checks the predictions are
identical, and prints the accuracy, the artifact's bytes against the dense checkpoint's,
and what was rewritten.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import time
from functools import partial

import torch
from torch import nn

SCHEMES = ("random_base_lora", "frozen", "subspace", "dense")


def build_mlp(hidden: int = 256) -> nn.Module:
    """The untransformed architecture: 64 pixels -> hidden -> hidden -> 10 digits."""
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, 10))


def load_digits_split(seed: int, test_fraction: float = 0.2):
    """(x_train, y_train, x_test, y_test): pixels scaled to [0, 1], a seeded shuffle."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("randfx demo needs scikit-learn for its bundled digits data: "
                         "pip install 'randfx[demo]' (or scikit-learn)") from None
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def train(model, x, y, *, epochs: int, batch_size: int, lr: float, seed: int,
          progress: bool):
    """AdamW on the model's trainable parameters (the coefficients), with a tqdm bar."""
    from tqdm import tqdm

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    shuffle = torch.Generator().manual_seed(seed)
    bar = tqdm(range(epochs), desc="training", unit="epoch", disable=not progress,
               file=sys.stderr)
    model.train()
    for _ in bar:
        order = torch.randperm(len(x), generator=shuffle).to(x.device)
        total = 0.0
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        bar.set_postfix(loss=f"{total / len(x):.4f}")
    model.eval()


@torch.no_grad()
def predict(model, x) -> torch.Tensor:
    return model(x)


def dense_checkpoint_bytes(model: nn.Module) -> int:
    """Bytes of the untransformed model's state_dict written as safetensors."""
    from safetensors.torch import save as safetensors_bytes

    return len(safetensors_bytes({k: v.contiguous() for k, v in model.state_dict().items()}))


def parse_args(argv):
    p = argparse.ArgumentParser(prog="randfx demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--scheme", choices=SCHEMES, default="random_base_lora")
    p.add_argument("--rank", type=int, default=4, help="adapter rank (random_base_lora)")
    p.add_argument("--dim", type=int, default=64, help="coefficients per layer (subspace)")
    p.add_argument("--hidden", type=int, default=256, help="hidden width of the MLP")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0, help="root seed of the generated weights")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    p.add_argument("--out", help="artifact path (default: digits.rfx in a temporary folder)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: this model's tensors are too small "
                        "to gain from more, and extra threads on a busy machine cost a lot)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    for name in ("rank", "dim", "hidden", "epochs", "batch_size", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    try:
        torch.device(args.device)
    except RuntimeError:
        p.error(f"--device {args.device!r} is not a torch device (e.g. cpu, cuda, cuda:1)")
    return args


def scheme_config(args):
    import randfx

    extra = {"rank": args.rank} if args.scheme == "random_base_lora" else (
        {"dim": args.dim} if args.scheme == "subspace" else {})
    return randfx.Config(scheme=args.scheme, seed=args.seed, **extra)


@contextlib.contextmanager
def _program_state(threads: int):
    """Run with `threads` torch threads and a forked RNG, then restore both, so that
    calling main() in-process (tests, notebooks) leaves torch as it found it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(previous)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with _program_state(args.threads):
        return run(args)


def run(args) -> int:
    import randfx

    started = time.perf_counter()
    torch.manual_seed(args.seed)  # the dense parts (biases) start the same on every run
    x_train, y_train, x_test, y_test = (t.to(args.device)
                                        for t in load_digits_split(args.seed))
    factory = partial(build_mlp, args.hidden)
    dense = factory()
    config = scheme_config(args)
    model = randfx.transform(dense, config).to(args.device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"randfx demo: digits ({len(x_train)} train / {len(x_test)} test 8x8 images), "
          f"MLP 64-{args.hidden}-{args.hidden}-10")
    print(f"config: {config.to_dict()}")
    print(f"trainable parameters: {trainable:,} (the dense MLP has "
          f"{sum(p.numel() for p in dense.parameters()):,})")

    train(model, x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
          lr=args.lr, seed=args.seed, progress=not args.no_progress)
    logits = predict(model, x_test)
    accuracy = (logits.argmax(1) == y_test).float().mean().item()
    print(f"test accuracy: {accuracy:.1%} (chance: 10%)")

    with tempfile.TemporaryDirectory(prefix="randfx-demo-") as folder:
        path = args.out or os.path.join(folder, "digits.rfx")
        randfx.save(model, path)
        artifact_bytes = os.path.getsize(path)
        dense_bytes = dense_checkpoint_bytes(dense)
        print(f"artifact: {artifact_bytes:,} bytes ({path}); dense checkpoint: "
              f"{dense_bytes:,} bytes; {dense_bytes / artifact_bytes:.1f}x smaller")
        reloaded = randfx.load(path, like=factory).to(args.device)
    reloaded_logits = predict(reloaded, x_test)
    identical = torch.equal(logits, reloaded_logits)
    print(f"reloaded into a freshly built MLP: predictions "
          f"{'identical' if identical else 'DIFFERENT'} "
          f"(max |logit difference| {float((logits - reloaded_logits).abs().max()):.3g})")
    print()
    print(randfx.inspect(reloaded, batch_size=args.batch_size))
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0 if identical else 1
