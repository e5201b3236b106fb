"""Seed 004 in a page: train an MNIST MLP with the random-walk sparse backward.

    python examples/sparse_backward_mnist.py [--paths 50] [--epochs 5] [--data DIR]
                                             [--propagate kept_rows|all_rows] [--compile]

Each training step draws `paths` random walks backward from the output neurons; only
the rows they visit get gradient. With kept_rows (the default) only they carry gradient
to the layer below; with all_rows (seed 004's semantics) the layer below gets the full
gradient, which learns better with few paths. --compile runs the model under
torch.compile: the walks and the row-sparse ops become a few fused kernels, which is
what makes a sparse step cheaper than a full one on a CPU (docs/performance.md).
The full comparison table (full backprop vs 10/50/200 paths) is
`python -m randfx.bench mnist`.

Data: the four MNIST gzip IDX files in DIR/mnist (--data, default $RANDFX_DATA, else
../shared/data beside the checkout), read by path, never downloaded.
"""

import argparse
import os
import sys

import torch
from torch import nn

import randfx
from randfx.bench.mnist import accuracy, load_mnist

DEFAULT_DATA = os.environ.get("RANDFX_DATA") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--paths", type=int, default=50)
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--data", default=DEFAULT_DATA, help="folder holding mnist/")
parser.add_argument("--propagate", default="kept_rows", choices=("kept_rows", "all_rows"))
parser.add_argument("--compile", action="store_true", help="train under torch.compile")
parser.add_argument("--train-limit", type=int, default=None,
                    help="use only the first N training images (a quick run)")
args = parser.parse_args()

device = "cuda" if torch.cuda.is_available() else "cpu"
try:
    images, labels = load_mnist(os.path.join(args.data, "mnist"), "train", device)
    test_images, test_labels = load_mnist(os.path.join(args.data, "mnist"), "test", device)
except FileNotFoundError as error:
    sys.exit(f"{error}; pass --data DIR (the folder holding mnist/) or set RANDFX_DATA")
images, labels = images[:args.train_limit], labels[:args.train_limit]

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                      nn.Linear(128, 10)).to(device)

# scheme "dense" keeps the weights as they are; the pass adds the sparse backward
config = randfx.Config(scheme="dense",
                       sparse_backward=randfx.SparseBackward(num_paths=args.paths,
                                                             propagate=args.propagate))
model = randfx.transform(model, config, torch.zeros(1, 784, device=device))
plan = model.randfx_sparse_backward  # the sampler and the last draw of walks
step_model = torch.compile(model) if args.compile else model

optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(args.epochs):
    model.train()
    order = torch.randperm(len(images), device=device)
    for i in range(0, len(images), 128):
        index = order[i:i + 128]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(step_model(images[index]), labels[index]).backward()  # walks drawn in forward
        optimizer.step()
    rows = plan.row_updates()
    print(f"epoch {epoch + 1}: test accuracy {100 * accuracy(model, test_images, test_labels):.2f}%"
          f"  rows updated in the last step: {rows}")
