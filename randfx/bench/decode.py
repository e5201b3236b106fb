"""Whole-model decode: a Llama-shaped decoder, dense against randfx-transformed, tokens/s.

    python -m randfx.bench decode [--preset 7b] [--layers N] [--batch 1 4 16]
                                  [--schemes frozen random_base_lora subspace]
                                  [--rank 16] [--dim 64] [--json OUT]

The model (built here, random init, no download): token embedding, `layers` blocks of
RMSNorm -> attention (q, k, v, o projections, a KV cache of `context` positions) ->
RMSNorm -> SwiGLU MLP (gate, up, down), a final RMSNorm and the output projection. No
rotary embedding: it costs the same in both models. One decode step feeds one token per
sequence (`batch` rows through every linear layer) at cache position `context / 2`, and
attends over the whole cache under a mask, so its shapes are static and the step is
captured in a CUDA graph (GPU) and replayed, for both models alike.

For each scheme the model is transformed with `randfx.Config(scheme=...)` (every Linear,
the output projection included; embedding and norms stay dense), and the baseline is
`randfx.materialize` of the transformed model: the same weights, dense, in the activation
dtype (bf16 on CUDA: cuBLAS). Before timing, one step of each is run on the same cache
and `max_rel_err` (the largest logit difference over the largest logit) checks that they
compute the same thing. `x` is dense step time / seeded step time (> 1: seeded is
faster); `weights_MB`: what each model keeps resident for its linear layers' weights
(parameters and buffers of the transformed layers, the dense Linear weights).
"""


import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules import SeededLayer
from . import common
from .common import graphed

# dim, layers, heads, kv_heads, ffn, vocab, context
PRESETS = {
    "tiny": (64, 2, 4, 2, 128, 256, 32),           # CPU tests
    "1b": (2048, 16, 32, 8, 8192, 32000, 1024),    # Llama-3.2-1B-shaped, Llama-2 vocabulary
    "7b": (4096, 32, 32, 32, 11008, 32000, 1024),  # Llama-2-7B-shaped
    "8b": (4096, 32, 32, 8, 14336, 128256, 1024),  # Llama-3-8B-shaped
}
MAX_REL_ERR = 3e-2  # bf16 activations through every layer; far above it means a bug


class Attention(nn.Module):
    def __init__(self, dim, heads, kv_heads):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cache, position, visible):
        """x (batch, 1, dim); cache (2, batch, kv_heads, context, head_dim), written at
        `position` (1,); `visible` (1, context) bool, the positions attended."""
        batch = x.shape[0]
        q = self.q(x).view(batch, 1, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(batch, 1, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(batch, 1, self.kv_heads, self.head_dim).transpose(1, 2)
        cache[0].index_copy_(2, position, k)
        cache[1].index_copy_(2, position, v)
        out = F.scaled_dot_product_attention(q, cache[0], cache[1], attn_mask=visible,
                                             enable_gqa=self.kv_heads != self.heads)
        return self.o(out.transpose(1, 2).reshape(batch, 1, -1))


class Block(nn.Module):
    def __init__(self, dim, heads, kv_heads, ffn):
        super().__init__()
        self.attention_norm = nn.RMSNorm(dim)
        self.attention = Attention(dim, heads, kv_heads)
        self.mlp_norm = nn.RMSNorm(dim)
        self.gate = nn.Linear(dim, ffn, bias=False)
        self.up = nn.Linear(dim, ffn, bias=False)
        self.down = nn.Linear(ffn, dim, bias=False)

    def forward(self, x, cache, position, visible):
        x = x + self.attention(self.attention_norm(x), cache, position, visible)
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Decoder(nn.Module):
    """forward(tokens (batch, 1), caches (layers, 2, batch, kv_heads, context, head_dim),
    position (1,) int64) -> logits (batch, 1, vocab); the caches are written in place."""

    def __init__(self, dim, layers, heads, kv_heads, ffn, vocab):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, kv_heads, ffn) for _ in range(layers))
        self.norm = nn.RMSNorm(dim)
        self.output = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens, caches, position):
        visible = (torch.arange(caches.shape[4], device=tokens.device) <= position)[None, :]
        x = self.embed(tokens)
        for i, block in enumerate(self.blocks):
            x = block(x, caches[i], position, visible)
        return self.output(self.norm(x))


def _linear_weight_bytes(model: nn.Module) -> int:
    """Bytes the model keeps for its linear layers' weights: the dense Linear weights, or
    every parameter and buffer of the transformed layers (seeds, scales, adapters)."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
        elif isinstance(module, SeededLayer):
            total += sum(t.numel() * t.element_size()
                         for t in (*module.parameters(recurse=False),
                                   *module.buffers(recurse=False)))
    return total


def decode_rows(preset, layers, batches, schemes, rank, device, time_ms, seed=0,
                subspace_dim=64):
    dim, preset_layers, heads, kv_heads, ffn, vocab, context = PRESETS[preset]
    layers = layers or preset_layers
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    import randfx
    torch.manual_seed(seed)
    with torch.device(device):
        source = Decoder(dim, layers, heads, kv_heads, ffn, vocab).to(dtype).eval()
    rows = []
    for scheme in schemes:
        config = randfx.Config(scheme=scheme, rank=rank, seed=seed,
                               dim=subspace_dim if scheme == "subspace" else None)
        example = (torch.zeros(1, 1, dtype=torch.int64, device=device),
                   torch.zeros(layers, 2, 1, kv_heads, context, dim // heads, dtype=dtype,
                               device=device),
                   torch.zeros(1, dtype=torch.int64, device=device))
        seeded = randfx.transform(source, config, example).eval()
        dense = randfx.materialize(seeded).eval()
        for batch in batches:
            tokens = torch.randint(vocab, (batch, 1), device=device)
            position = torch.tensor([context // 2], device=device)
            # a cache of plausible keys and values (the graph reads it, whatever it holds)
            caches = torch.randn(layers, 2, batch, kv_heads, context, dim // heads,
                                 dtype=dtype, device=device)
            with torch.no_grad():
                want = dense(tokens, caches.clone(), position).float()
                got = seeded(tokens, caches.clone(), position).float()
                error = ((got - want).abs().max() / want.abs().max()).item()

                def step(model):
                    return lambda: model(tokens, caches, position)
                dense_ms = time_ms(graphed(step(dense), device))
                seeded_ms = time_ms(graphed(step(seeded), device))
            rows.append({"preset": preset, "layers": layers, "scheme": scheme,
                         "batch": batch, "dense_ms": dense_ms, "seeded_ms": seeded_ms,
                         "x": dense_ms / seeded_ms,
                         "dense_tokens_per_s": batch * 1e3 / dense_ms,
                         "seeded_tokens_per_s": batch * 1e3 / seeded_ms,
                         "dense_weights_MB": _linear_weight_bytes(dense) / 2 ** 20,
                         "seeded_weights_MB": _linear_weight_bytes(seeded) / 2 ** 20,
                         "max_rel_err": error})
            if not error < MAX_REL_ERR:
                raise RuntimeError(
                    f"randfx.bench decode: {scheme}, batch {batch}: the transformed model's "
                    f"logits differ from its materialised copy's by {error:.2e} of their "
                    f"largest (more than {MAX_REL_ERR}): not timing a wrong computation")
        del seeded, dense
    return rows


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--preset", default="7b", choices=sorted(PRESETS))
    p.add_argument("--layers", type=int, default=None,
                   help="blocks to build (default: the preset's); the step time grows with "
                        "them, the ratio hardly")
    p.add_argument("--batch", type=int, nargs="*", default=[1, 4, 16],
                   help="sequences decoded at once (rows of x in every linear layer)")
    p.add_argument("--schemes", nargs="*", default=["frozen", "random_base_lora"],
                   choices=["frozen", "random_base_lora", "subspace"])
    p.add_argument("--rank", type=int, default=16, help="random_base_lora's rank")
    p.add_argument("--dim", type=int, default=64,
                   help="subspace's coefficients per layer (--schemes subspace)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda" and args.preset != "tiny":
        p.error("presets other than tiny need a CUDA device (use --preset tiny on CPU)")
    if args.layers is not None and args.layers < 1:
        p.error("--layers must be >= 1")

    def time_ms(fn):
        return common.time_ms(fn, device=device, warmup=1, repeat=5)
    rows = decode_rows(args.preset, args.layers, args.batch, args.schemes, args.rank,
                       device, time_ms, subspace_dim=args.dim)
    common.emit("decode", rows,
                ["preset", "layers", "scheme", "batch", "dense_ms", "seeded_ms", "x",
                 "seeded_tokens_per_s", "dense_weights_MB", "seeded_weights_MB",
                 "max_rel_err"],
                device=device, json_path=args.json,
                notes={"preset": dict(zip(("dim", "layers", "heads", "kv_heads", "ffn",
                                           "vocab", "context"), PRESETS[args.preset]))})
    return 0
