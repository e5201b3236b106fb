"""Seed 003 (PRANC) in a page: a whole MNIST classifier as a random init plus a linear
combination of pseudo-random basis models, learned only through the mixing coefficients.

    python examples/pranc_mnist.py [--data DIR] [--dim 64] [--steps 400]

theta = theta0(seed) + P(seed) @ alpha over every weight of the network (randfx's
"subspace" scheme with scope="global"): theta0 and the `dim` basis models P are
regenerated from one seed, never stored; alpha (dim numbers) and the small biases are
learned. The artifact is those numbers plus the seeds. Prints the test accuracy and the
artifact's size against the dense checkpoint.

Data: the four MNIST gzip IDX files in DIR/mnist (--data, default $RANDFX_DATA, else
../shared/data beside the checkout). Images are average-pooled to 14x14 so that the
defaults run on a CPU in about half a minute; the basis is regenerated at every step, so
time grows with dim x weights. On a GPU try --size 28 --hidden 128 --dim 1000.
"""

import argparse
import os
import sys
import tempfile
import time

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.nn import functional as F

import randfx
from randfx.bench.mnist import FILES, load_mnist

DEFAULT_DATA = os.environ.get("RANDFX_DATA") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--data", default=DEFAULT_DATA, help="folder holding mnist/")
parser.add_argument("--dim", type=int, default=64, help="basis models (coefficients)")
parser.add_argument("--hidden", type=int, default=16)
parser.add_argument("--size", type=int, default=14, choices=(7, 14, 28), help="image side")
parser.add_argument("--steps", type=int, default=400)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--seed", type=int, default=0, help="root seed of theta0 and the basis")
parser.add_argument("--out", help="artifact path (default: a temporary file)")
args = parser.parse_args()

folder = os.path.join(args.data, "mnist")
missing = [name for split in FILES.values() for name in split
           if not os.path.exists(os.path.join(folder, name))]
if missing:
    sys.exit(f"MNIST not found: {missing} missing from {folder}; pass --data DIR (the folder "
             "holding mnist/) or set RANDFX_DATA")
device = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(args.seed)


def images_at(images):
    """(N, 784) -> (N, size * size) by average pooling."""
    pooled = F.avg_pool2d(images.view(-1, 1, 28, 28), 28 // args.size)
    return pooled.flatten(1)


train_x, train_y = load_mnist(folder, "train", device)
test_x, test_y = load_mnist(folder, "test", device)
train_x, test_x = images_at(train_x), images_at(test_x)


def build():
    return nn.Sequential(nn.Linear(args.size ** 2, args.hidden), nn.ReLU(),
                         nn.Linear(args.hidden, 10))


# ---- randfx: every weight lives in one global random subspace of `dim` directions
config = randfx.Config(scheme="subspace", dim=args.dim, scope="global", seed=args.seed)
dense = build()
model = randfx.transform(dense, config).to(device)
weights = sum(p.numel() for n, p in dense.named_parameters() if n.endswith("weight"))
print(f"MLP {args.size ** 2}-{args.hidden}-10: {weights:,} weights expressed by "
      f"{args.dim} coefficients; learned in all: "
      f"{sum(p.numel() for p in model.parameters()):,} numbers")


@torch.no_grad()
def test_accuracy(net):
    return (net(test_x).argmax(1) == test_y).float().mean().item()


# ---- training: Adam on alpha (and the biases)
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
draw = torch.Generator(device=device).manual_seed(args.seed)
started = time.perf_counter()
for step in range(1, args.steps + 1):
    index = torch.randint(len(train_x), (args.batch_size,), generator=draw, device=device)
    loss = F.cross_entropy(model(train_x[index]), train_y[index])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if step % 100 == 0 or step == args.steps:
        print(f"step {step:5d}  loss {loss.item():.3f}  "
              f"({time.perf_counter() - started:.0f} s)")
accuracy = test_accuracy(model.eval())
print(f"test accuracy {accuracy:.1%} (chance 10%)")

# ---- the artifact: alpha, biases and seeds; load regenerates theta0 and the basis
with tempfile.TemporaryDirectory() as scratch:
    out = args.out or os.path.join(scratch, "pranc_mnist.rfx")
    randfx.save(model, out)
    artifact_bytes = os.path.getsize(out)
    reloaded = randfx.load(out, like=build).to(device).eval()
dense_bytes = len(safetensors_bytes(dense.state_dict()))
print(f"artifact {artifact_bytes:,} bytes vs dense checkpoint {dense_bytes:,} bytes "
      f"({dense_bytes / artifact_bytes:.1f}x smaller); reloaded accuracy "
      f"{test_accuracy(reloaded):.1%}, outputs identical: "
      f"{torch.equal(reloaded(test_x[:256]), model(test_x[:256]))}")
