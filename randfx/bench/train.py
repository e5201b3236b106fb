"""python -m randfx.bench train [--models vit_b_16 resnet50 gpt2] [--schemes ...] [--json OUT]

One training step (forward, backward, AdamW step) of real third-party models at their
real sizes, from random init on random data (nothing downloaded): torchvision's ViT-B/16
and ResNet-50 on 224 x 224 images, Hugging Face GPT-2 small on 1024-token sequences.
Each scheme's model is `randfx.transform` of the model (default targets: every Linear
and Conv weight, rank 16 for random_base_lora) and trains its coefficients, biases and
norms; the baseline, timed in the same run, is the untransformed model training every
parameter. bf16 autocast on CUDA, float32 elsewhere; both models eager, or both under
torch.compile with --compile (the seeded one with backend "randfx").

Columns: ms per step (median; CUDA events on a GPU), x dense (dense ms / this ms),
samples per second, peak memory (CUDA), trainable parameters, and the bytes of
randfx.save's artifact against the dense model's safetensors checkpoint.
"""

import math
import os
import tempfile

import torch

from . import common

MODELS = ("vit_b_16", "resnet50", "gpt2")
SCHEMES = ("random_base_lora", "frozen")


def _torchvision(name: str, **kwargs):
    try:
        from torchvision import models
    except (ImportError, RuntimeError) as error:  # PyPI wheels beside a CPU torch: RuntimeError
        raise SystemExit(f"bench train: model {name!r} needs torchvision, which does not "
                         f"import here ({type(error).__name__}: {error})") from None
    return getattr(models, name)(**kwargs)


def _builders(args):
    """name -> (zero-argument model factory, batch factory, loss of (model, batch))."""
    def images(batch, device):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, args.image_size, args.image_size, generator=generator)
        return x.to(device), torch.randint(0, 1000, (batch,), generator=generator).to(device)

    def image_loss(model, batch):
        x, labels = batch
        return torch.nn.functional.cross_entropy(model(x).float(), labels)

    def tokens(batch, device):
        generator = torch.Generator().manual_seed(0)
        return torch.randint(0, 50257, (batch, args.seq), generator=generator).to(device)

    def token_loss(model, ids):
        return model(ids, labels=ids).loss

    def gpt2():
        from transformers import GPT2Config, GPT2LMHeadModel
        return GPT2LMHeadModel(GPT2Config(n_layer=args.gpt2_layers, n_embd=args.gpt2_embd,
                                          n_head=max(1, args.gpt2_embd // 64),
                                          n_positions=max(1024, args.seq)))

    return {"vit_b_16": (lambda: _torchvision("vit_b_16", image_size=args.image_size),
                         images, image_loss),
            "resnet50": (lambda: _torchvision("resnet50"), images, image_loss),
            "gpt2": (gpt2, tokens, token_loss)}


def _checkpoint_bytes(model, folder) -> int:
    from safetensors.torch import save_model
    path = os.path.join(folder, "dense.safetensors")
    save_model(model, path)  # shared tensors (GPT-2's tied head) stored once
    return os.path.getsize(path)


def _artifact_bytes(model, folder) -> int:
    import randfx
    path = os.path.join(folder, "model.rfx")
    randfx.save(model, path)
    return os.path.getsize(path)


def _model_bytes(model) -> int:
    return sum(t.numel() * t.element_size()
               for t in list(model.parameters()) + list(model.buffers()))


def _step_time(model, batch, loss_of, device, compile_backend, compile_mode=None):
    """(median ms of one training step, peak bytes, loss) for `model` on `batch`. Peak
    bytes: the model's parameters and buffers plus the most memory allocated beyond what
    was allocated on entry (so neither the baseline model, kept alive for the next
    transform, nor a previous run's leftovers count)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        at_entry = torch.cuda.memory_allocated(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    run = (torch.compile(model, backend=compile_backend, mode=compile_mode)
           if compile_backend else model)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    last_loss = []

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_of(run, batch)
        loss.backward()
        optimizer.step()
        last_loss[:] = [loss.detach()]

    step()  # allocates the optimizer's state; compiles under --compile
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    # a second of steps on a GPU: a step takes 20-60 ms, so do_bench's default 100 ms
    # would give a median of 2-5 samples
    ms = common.time_ms(step, device=device, warmup=1, repeat=3, cuda_ms=1000)
    peak = None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - at_entry + _model_bytes(model)
    if compile_backend:
        torch._dynamo.reset()  # frees the compiled graphs (and CUDA graph pools) now
    last = float(last_loss[0])
    if not math.isfinite(last):
        raise RuntimeError(f"bench train: the training loss became {last}")
    return ms, peak, last


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES)
    p.add_argument("--batch", type=int, nargs="+", default=None,
                   help="batch per model, in --models order (default: 64 images / 8 sequences)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--seq", type=int, default=1024, help="GPT-2 sequence length")
    p.add_argument("--gpt2-layers", type=int, default=12)
    p.add_argument("--gpt2-embd", type=int, default=768)
    p.add_argument("--compile", action="store_true",
                   help="both models under torch.compile (seeded: backend 'randfx')")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode with --compile, e.g. reduce-overhead (CUDA graphs)")
    args = p.parse_args(argv)
    import randfx

    device = torch.device(args.device)
    builders = _builders(args)
    batches = args.batch or [8 if m == "gpt2" else 64 for m in args.models]
    if len(batches) != len(args.models):
        p.error(f"--batch takes one size per model ({len(args.models)}), got {len(batches)}")
    rows = []
    for name, batch_size in zip(args.models, batches):
        build, make_batch, loss_of = builders[name]
        batch = make_batch(batch_size, device)
        torch.manual_seed(0)
        dense = build().to(device)
        with tempfile.TemporaryDirectory(prefix="randfx-bench-") as folder:
            dense_bytes = _checkpoint_bytes(dense, folder)
            dense_ms, dense_peak, dense_loss = _step_time(
                dense, batch, loss_of, device, "inductor" if args.compile else None,
                args.compile_mode)
            rows.append({"model": name, "batch": batch_size, "scheme": "dense (baseline)",
                         "ms_per_step": dense_ms, "x_dense": 1.0,
                         "samples_per_s": batch_size * 1e3 / dense_ms,
                         "peak_mb": dense_peak and dense_peak / 2**20,
                         "trainable": sum(p.numel() for p in dense.parameters()),
                         "checkpoint_bytes": dense_bytes, "bytes_ratio": 1.0,
                         "loss": dense_loss})
            print(common.format_table(rows[-1:], list(rows[-1])), flush=True)
            for scheme in args.schemes:
                config = randfx.Config(scheme, rank=args.rank, seed=0) \
                    if scheme == "random_base_lora" else randfx.Config(scheme, seed=0)
                model = randfx.transform(dense, config)
                artifact = _artifact_bytes(model, folder)
                ms, peak, loss = _step_time(model, batch, loss_of, device,
                                            "randfx" if args.compile else None,
                                            args.compile_mode)
                rows.append({"model": name, "batch": batch_size, "scheme": scheme,
                             "ms_per_step": ms, "x_dense": dense_ms / ms,
                             "samples_per_s": batch_size * 1e3 / ms,
                             "peak_mb": peak and peak / 2**20,
                             "trainable": sum(p.numel() for p in model.parameters()
                                              if p.requires_grad),
                             "checkpoint_bytes": artifact,
                             "bytes_ratio": artifact / dense_bytes, "loss": loss,
                             "left_dense": len(model.randfx_report.left_dense)})
                print(common.format_table(rows[-1:], list(rows[-1])), flush=True)
                del model
        del dense
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print()
    common.emit("train", rows, ["model", "batch", "scheme", "ms_per_step", "x_dense",
                                "samples_per_s", "peak_mb", "trainable", "checkpoint_bytes",
                                "bytes_ratio"],
                device=device, json_path=args.json,
                notes={"compile": args.compile, "compile_mode": args.compile_mode,
                       "rank": args.rank,
                       "image_size": args.image_size, "seq": args.seq})
    return 0
