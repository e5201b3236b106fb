"""Seed 001 in a page: a character-level GPT on tiny Shakespeare whose attention and MLP
weights are random matrices regenerated from a seed, learned only through rank-r adapters.

    python examples/random_base_lora_shakespeare.py [--data DIR] [--steps 300] [--rank 8]

As in "Random Linear Maps + Learned Adapters" (parameter-golf PR #874): every attention
projection (qkv, out) and MLP layer (fc, proj) is W = s * R(seed) + B @ A with A, B of
rank r; embeddings, norms and biases are learned in full. The artifact holds the seeds,
the adapters and those small tensors; R costs zero bytes. Prints the validation loss in
bits per character, a sample, and the artifact's size against the dense checkpoint.

Data: tinyshakespeare/input.txt under --data (default $RANDFX_DATA, else ../shared/data
beside the checkout). Defaults run on a CPU in about a minute; on a GPU raise --steps,
--layers and --width toward the seed's 5 layers x 512 wide.
"""

import argparse
import math
import os
import sys
import tempfile
import time

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.nn import functional as F

import randfx

DEFAULT_DATA = os.environ.get("RANDFX_DATA") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--data", default=DEFAULT_DATA, help="folder holding tinyshakespeare/")
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--batch-size", type=int, default=16)
parser.add_argument("--block", type=int, default=64, help="context length in characters")
parser.add_argument("--layers", type=int, default=2)
parser.add_argument("--width", type=int, default=64)
parser.add_argument("--heads", type=int, default=4)
parser.add_argument("--rank", type=int, default=8, help="adapter rank (seed 001: 16 at 512)")
parser.add_argument("--lr", type=float, default=1e-2)
parser.add_argument("--seed", type=int, default=1337, help="root seed of the random bases")
parser.add_argument("--sample", type=int, default=200, help="characters to sample at the end")
parser.add_argument("--out", help="artifact path (default: a temporary file)")
args = parser.parse_args()

path = os.path.join(args.data, "tinyshakespeare", "input.txt")
if not os.path.exists(path):
    sys.exit(f"tiny Shakespeare not found at {path}: pass --data DIR (the folder holding "
             "tinyshakespeare/input.txt) or set RANDFX_DATA")
device = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(args.seed)

# ---- data: characters -> integer ids, 90% train / 10% validation
text = open(path, encoding="utf-8").read()
chars = sorted(set(text))
encode = {c: i for i, c in enumerate(chars)}
data = torch.tensor([encode[c] for c in text], dtype=torch.long)
split = int(0.9 * len(data))
train_data, val_data = data[:split], data[split:]


def batch(source):
    start = torch.randint(len(source) - args.block - 1, (args.batch_size,))
    x = torch.stack([source[i:i + args.block] for i in start])
    y = torch.stack([source[i + 1:i + 1 + args.block] for i in start])
    return x.to(device), y.to(device)


# ---- the model: a plain pre-norm GPT (nanoGPT's shape, no randfx in it)
class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.fc = nn.Linear(width, 4 * width)
        self.proj = nn.Linear(4 * width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, t, c))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(len(chars), args.width)
        self.position = nn.Embedding(args.block, args.width)
        self.blocks = nn.Sequential(*[Block(args.width, args.heads) for _ in range(args.layers)])
        self.ln = nn.LayerNorm(args.width)
        self.head = nn.Linear(args.width, len(chars), bias=False)
        self.head.weight = self.embed.weight  # tied, as in GPT-2
        for embedding in (self.embed, self.position):
            nn.init.normal_(embedding.weight, std=0.02)  # GPT-2's init: small first logits

    def forward(self, idx):
        positions = torch.arange(idx.shape[1], device=idx.device)
        return self.head(self.ln(self.blocks(self.embed(idx) + self.position(positions))))


# ---- randfx: random bases + rank-r adapters on the attention and MLP projections only
config = randfx.Config(scheme="random_base_lora", rank=args.rank, seed=args.seed,
                       target_modules=("qkv", "out", "fc", "proj"))
dense = GPT()
model = randfx.transform(dense, config, torch.zeros(1, args.block, dtype=torch.long)).to(device)
learned = sum(p.numel() for p in model.parameters())
print(f"{args.layers} layers x {args.width} wide, {len(chars)} characters: "
      f"{learned:,} learned parameters of {sum(p.numel() for p in dense.parameters()):,}")


@torch.no_grad()
def val_bits_per_char(batches=20):
    model.eval()
    loss = sum(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
               for x, y in (batch(val_data) for _ in range(batches))) / batches
    model.train()
    return loss / math.log(2)


# ---- training
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
started = time.perf_counter()
for step in range(args.steps + 1):
    if step % 100 == 0 or step == args.steps:
        print(f"step {step:5d}  val {val_bits_per_char():.3f} bits/char  "
              f"({time.perf_counter() - started:.0f} s)")
    if step == args.steps:
        break
    x, y = batch(train_data)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

# ---- a sample: draw each next character from the softmax
model.eval()
idx = torch.tensor([[encode["\n"]]], device=device)
with torch.no_grad():
    for _ in range(args.sample):
        probs = F.softmax(model(idx[:, -args.block:])[:, -1], dim=-1)
        idx = torch.cat([idx, torch.multinomial(probs, 1)], dim=1)
print("".join(chars[i] for i in idx[0].tolist()))

# ---- the artifact: seeds + adapters + small tensors, verified on load
with tempfile.TemporaryDirectory() as folder:
    out = args.out or os.path.join(folder, "shakespeare.rfx")
    randfx.save(model, out)
    artifact_bytes = os.path.getsize(out)
    dense_bytes = len(safetensors_bytes({k: v.contiguous() for k, v in dense.state_dict().items()
                                         if k != "head.weight"}))  # tied: stored once
    reloaded = randfx.load(out, like=GPT, example_inputs=torch.zeros(1, args.block,
                                                                       dtype=torch.long))
reloaded = reloaded.to(device).eval()
x, _ = batch(val_data)
with torch.no_grad():
    same = torch.equal(reloaded(x), model(x))
print(f"artifact {artifact_bytes:,} bytes vs dense checkpoint {dense_bytes:,} bytes "
      f"({dense_bytes / artifact_bytes:.1f}x smaller); reloaded outputs identical: {same}")
