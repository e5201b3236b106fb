"""python -m randfx.bench artifact [--json OUT] [--repeat N] [--n-layer L] [--n-embd E]

The artifact of a GPT-2-small-size model (124M parameters, built from its config) with
random_base_lora rank 16 on every attention and MLP projection, embeddings dense: its
bytes on disk and the time of randfx.save / randfx.load (load = build `like`, verify,
transform, fill), against the dense checkpoint written and read with safetensors in the
same run (load = build the model, read, load_state_dict).
"""

import os
import tempfile

import torch

from . import common

TARGETS = ("c_attn", "attn.c_proj", "c_fc", "mlp.c_proj")


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--n-layer", type=int, default=12, help="GPT-2 layers (small: 12)")
    p.add_argument("--n-embd", type=int, default=768,
                   help="GPT-2 width (small: 768; a multiple of its 12 heads)")
    args = p.parse_args(argv)
    from safetensors.torch import load_file, save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    import randfx

    gpt2_config = GPT2Config(n_layer=args.n_layer, n_embd=args.n_embd)

    def build():
        return GPT2LMHeadModel(gpt2_config)

    torch.manual_seed(0)
    dense = build().to(args.device)
    config = randfx.Config("random_base_lora", rank=16, seed=1337, target_modules=TARGETS)
    model = randfx.transform(dense, config)
    # safetensors stores a tied tensor once: drop the tied head, as from_pretrained does
    dense_state = {k: v for k, v in dense.state_dict().items() if k != "lm_head.weight"}

    def load_dense(path):
        fresh = build()
        fresh.load_state_dict(load_file(path), strict=False)

    with tempfile.TemporaryDirectory(prefix="randfx-bench-") as folder:
        dense_path = os.path.join(folder, "dense.safetensors")
        artifact_path = os.path.join(folder, "model.rfx")
        save_dense_s = common.median_seconds(lambda: save_file(dense_state, dense_path), args.repeat)
        save_s = common.median_seconds(lambda: randfx.save(model, artifact_path), args.repeat)
        load_dense_s = common.median_seconds(lambda: load_dense(dense_path), args.repeat)
        load_s = common.median_seconds(lambda: randfx.load(artifact_path, like=build), args.repeat)
        dense_bytes = os.path.getsize(dense_path)
        artifact_bytes = os.path.getsize(artifact_path)

    parameters = sum(p.numel() for p in dense.parameters())
    coefficients = sum(p.numel() for n, p in model.named_parameters()
                       if n.rsplit(".", 1)[-1] in ("lora_A", "lora_B"))
    rows = [
        {"case": "dense safetensors save (baseline)", "seconds": save_dense_s,
         "ratio": 1.0, "bytes": dense_bytes, "bytes_ratio": 1.0},
        {"case": "randfx.save", "seconds": save_s, "ratio": save_s / save_dense_s,
         "bytes": artifact_bytes, "bytes_ratio": artifact_bytes / dense_bytes},
        {"case": "dense safetensors load (baseline)", "seconds": load_dense_s, "ratio": 1.0},
        {"case": "randfx.load (verified)", "seconds": load_s, "ratio": load_s / load_dense_s},
    ]
    common.emit("artifact", rows, ["case", "seconds", "ratio", "bytes", "bytes_ratio"],
                device=args.device, json_path=args.json, notes={
                    "model": f"GPT-2 from config: {args.n_layer} layers x {args.n_embd}, "
                             f"{parameters} parameters",
                    "config": config.to_dict(),
                    "lora_coefficients": coefficients,
                    "dense_bytes": dense_bytes, "artifact_bytes": artifact_bytes,
                    "artifact_over_dense": artifact_bytes / dense_bytes})
    print(f"artifact {artifact_bytes:,} bytes vs dense checkpoint {dense_bytes:,} bytes: "
          f"ratio {artifact_bytes / dense_bytes:.4f} ({dense_bytes / artifact_bytes:.2f}x "
          f"smaller); {coefficients:,} LoRA coefficients, embeddings and norms stored dense")
    return 0
