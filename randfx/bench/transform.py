"""python -m randfx.bench transform [--json OUT] [--repeat N]

Time to `randfx.transform` a GPT-2-small-size model (124M parameters, built from its
config, CPU; target < 5 s), against a plain copy.deepcopy of the same model measured in
the same run, and the state_dict bytes of the result (random_base_lora rank 16 on every
attention and MLP projection, embeddings dense) against the dense checkpoint's bytes.
"""

import copy

import torch

from . import common


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes of a state_dict, counting storage shared by tied entries once."""
    seen, total = set(), 0
    for tensor in model.state_dict().values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.numel())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def coefficient_bytes(model: torch.nn.Module) -> int:
    """Bytes of the learned coefficients (LoRA A/B, subspace alpha) alone."""
    return sum(p.numel() * p.element_size() for name, p in model.named_parameters()
               if name.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "alpha"))


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    from transformers import GPT2Config, GPT2LMHeadModel

    import randfx
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())
    config = randfx.Config("random_base_lora", rank=16, seed=1337,
                           target_modules=["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"])
    transformed = randfx.transform(model, config)  # also the warm-up
    copy_s = common.median_seconds(lambda: copy.deepcopy(model), args.repeat)
    transform_s = common.median_seconds(lambda: randfx.transform(model, config), args.repeat)
    dense_bytes, seeded_bytes = state_bytes(model), state_bytes(transformed)
    coefficients = coefficient_bytes(transformed)
    parameters = sum(p.numel() for p in model.parameters())
    rows = [
        {"case": "deepcopy (baseline)", "seconds": copy_s, "ratio": 1.0},
        {"case": "transform rbl r16", "seconds": transform_s, "ratio": transform_s / copy_s},
    ]
    common.emit("transform", rows, ["case", "seconds", "ratio"], device="cpu",
                json_path=args.json, notes={
                    "model": f"GPT-2 small from config, {parameters} parameters",
                    "capture_path": transformed.randfx_report.capture_path,
                    "rewritten_layers": len(transformed.randfx_report.rewritten),
                    "dense_state_dict_bytes": dense_bytes,
                    "transformed_state_dict_bytes": seeded_bytes,
                    "bytes_ratio": seeded_bytes / dense_bytes,
                    "coefficient_bytes": coefficients,
                    "target_seconds": 5.0})
    print(f"GPT-2 small ({parameters / 1e6:.1f}M parameters), "
          f"capture path {transformed.randfx_report.capture_path}, "
          f"{len(transformed.randfx_report.rewritten)} layers rewritten")
    print(f"state_dict bytes: dense {dense_bytes:,}  random_base_lora r16 {seeded_bytes:,}  "
          f"ratio {seeded_bytes / dense_bytes:.4f}  (target transform time < 5 s: "
          f"{'met' if transform_s < 5.0 else 'NOT met'})")
    print(f"of which LoRA coefficients {coefficients:,} bytes; the rest is what stays dense "
          f"(embeddings, norms, biases) and 8-byte seeds")
    return 0
