"""The training benchmark runs and writes its JSON (a tiny GPT-2 on the CPU; the numbers
are checked for sense, never for speed)."""

import json

import pytest

pytest.importorskip("transformers")

from randfx.bench import train  # noqa: E402


def test_train_bench_times_dense_and_seeded_steps(tmp_path):
    out = tmp_path / "train.json"
    assert train.main(["--device", "cpu", "--models", "gpt2", "--gpt2-layers", "1",
                       "--gpt2-embd", "64", "--seq", "16", "--batch", "2", "--rank", "4",
                       "--json", str(out)]) == 0
    dense, lora, frozen = json.loads(out.read_text())["rows"]
    assert [r["scheme"] for r in (dense, lora, frozen)] == [
        "dense (baseline)", "random_base_lora", "frozen"]
    for row in (lora, frozen):
        assert row["x_dense"] == pytest.approx(dense["ms_per_step"] / row["ms_per_step"])
        assert row["trainable"] < dense["trainable"]
        assert row["bytes_ratio"] == pytest.approx(row["checkpoint_bytes"]
                                                   / dense["checkpoint_bytes"])
        assert row["checkpoint_bytes"] < dense["checkpoint_bytes"]
    # LoRA trains rank x (in + out) adapter values per projection on top of what frozen
    # trains: c_attn 64 -> 192, attn.c_proj 64 -> 64, c_fc 64 -> 256, mlp.c_proj 256 -> 64
    adapters = sum(4 * (n_in + n_out) for n_in, n_out in ((64, 192), (64, 64), (64, 256),
                                                          (256, 64)))
    assert lora["trainable"] - frozen["trainable"] == adapters


def test_train_bench_refuses_a_batch_list_of_the_wrong_length():
    with pytest.raises(SystemExit):
        train.main(["--device", "cpu", "--models", "gpt2", "--batch", "2", "3"])
