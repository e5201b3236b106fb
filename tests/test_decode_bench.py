"""The whole-model decode benchmark runs on the CPU (tiny preset) and checks what it
times: the transformed model against its materialised copy (the numbers are checked for
sense, never for speed)."""

import json

import pytest
import torch

from randfx.bench import decode


def test_decode_bench_compares_a_transformed_decoder_with_its_dense_copy(tmp_path):
    out = tmp_path / "decode.json"
    assert decode.main(["--device", "cpu", "--preset", "tiny", "--batch", "1", "3",
                        "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["scheme"], r["batch"]) for r in rows] == [
        ("frozen", 1), ("frozen", 3), ("random_base_lora", 1), ("random_base_lora", 3)]
    for row in rows:
        assert row["max_rel_err"] < decode.MAX_REL_ERR
        assert row["x"] == pytest.approx(row["dense_ms"] / row["seeded_ms"])
        # seeds and scales only (frozen) or adapters too: far below the dense weights
        assert row["seeded_weights_MB"] < row["dense_weights_MB"] / 2


def test_the_decode_step_writes_the_cache_at_its_position():
    dim, layers, heads, kv_heads, ffn, vocab, context = decode.PRESETS["tiny"]
    model = decode.Decoder(dim, layers, heads, kv_heads, ffn, vocab)
    caches = torch.zeros(layers, 2, 2, kv_heads, context, dim // heads)
    model(torch.tensor([[1], [2]]), caches, torch.tensor([5]))
    written = caches.abs().sum(dim=(0, 1, 2, 3, 5)) > 0
    assert written.tolist() == [t == 5 for t in range(context)]


def test_decode_bench_runs_the_subspace_scheme_with_its_dim(tmp_path):
    out = tmp_path / "decode.json"
    assert decode.main(["--device", "cpu", "--preset", "tiny", "--batch", "1", "--layers",
                        "1", "--schemes", "subspace", "--dim", "4", "--json", str(out)]) == 0
    row, = json.loads(out.read_text())["rows"]
    assert row["scheme"] == "subspace" and row["layers"] == 1
    # 4 coefficients per layer (the preset's width is 64): 8 linear layers, fp32 alpha,
    # int64 seed and basis seed
    assert row["seeded_weights_MB"] * 2 ** 20 == 8 * (4 * 4 + 8 + 8)
    assert row["max_rel_err"] < decode.MAX_REL_ERR


@pytest.mark.parametrize("argv", [["--preset", "7b"], ["--schemes", "dense"],
                                  ["--preset", "tiny", "--layers", "0"]])
def test_decode_bench_refuses_bad_arguments(argv):
    with pytest.raises(SystemExit):
        decode.main(["--device", "cpu", *argv])
