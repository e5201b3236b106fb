"""randfx.inspect and the roofline cost model."""

import json

import pytest
import sympy
import torch
from torch import nn

import randfx
from randfx import roofline


def _model(scheme="random_base_lora", **config):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 8))
    return randfx.transform(model, randfx.Config(scheme=scheme, seed=1, **config))


def test_public_name_is_the_function():
    assert callable(randfx.inspect) and randfx.inspect.__name__ == "inspect"


def test_lora_report_bytes_flops_kernels_and_totals():
    report = randfx.inspect(_model(rank=2), batch_size=4, seq_len=8, device="H100")
    first, second = report.weights
    assert (first["module"], first["layer"], first["shape"]) == ("0", "Linear", [32, 16])
    assert first["scheme"] == "random_base_lora"
    assert first["bytes_before"] == 32 * 16 * 4
    # seed (8 bytes) + lora_A (2x16) + lora_B (32x2) in float32
    assert first["bytes_after"] == 8 + (2 * 16 + 32 * 2) * 4
    B, T = roofline.B, roofline.T
    assert sympy.simplify(sympy.sympify(first["flops_expr"], locals={"B": B, "T": T})
                          - (2 * B * T * 32 * 16 + 2 * B * T * 2 * (32 + 16))) == 0
    assert first["flops_at"] == 32 * (2 * 32 * 16 + 2 * 2 * 48)
    assert first["generated_at"] == 32 * 16
    assert first["kernel"] == "materialize"  # 32 rows: above the fused kernel's 16
    kept = {t["name"]: t["bytes"] for t in report.kept_dense}
    assert kept == {"0.bias": 128, "1.weight": 128, "1.bias": 128, "2.bias": 32}
    totals = report.totals
    assert totals["bytes_before"] == 32 * 16 * 4 + 8 * 32 * 4 + 416
    assert totals["bytes_after"] == first["bytes_after"] + second["bytes_after"] + 416
    assert totals["compression_ratio"] == pytest.approx(totals["bytes_before"]
                                                        / totals["bytes_after"])
    text = str(report)
    assert "random_base_lora" in text and "kept dense (4 tensors)" in text and "H100" in text
    json.dumps(report.to_dict())  # plain data only
    assert "<table>" in report.to_html() and "1.weight" in report.to_html()


def test_kernel_and_bound_follow_sizes():
    model = _model(scheme="frozen")
    decode = randfx.inspect(model, batch_size=1, seq_len=1)
    assert [w["kernel"] for w in decode.weights] == ["gemv", "gemv"]
    # one row: the seeded weight costs ALU time to regenerate, nothing to read
    assert decode.weights[0]["limiter"] == "generation"
    assert decode.weights[0]["bound"] == "compute"
    prefill = randfx.inspect(model, batch_size=64, seq_len=512, dtype=torch.bfloat16)
    assert [w["kernel"] for w in prefill.weights] == ["materialize", "materialize"]
    assert prefill.dtype == "bfloat16"


def test_rows_come_from_example_inputs():
    model = _model(scheme="frozen")
    report = randfx.inspect(model, torch.randn(3, 5, 16))
    assert [w["rows_expr"] for w in report.weights] == ["B*T", "B*T"]
    report = randfx.inspect(model, torch.randn(3, 16))
    assert [w["rows_expr"] for w in report.weights] == ["B", "B"]


def test_subspace_counts_the_basis():
    report = randfx.inspect(_model(scheme="subspace", dim=4))
    first = report.weights[0]
    assert first["generated_at"] == 32 * 16 * (1 + 4)
    assert first["kernel"] == "materialize"


def test_untransformed_model_says_so():
    report = randfx.inspect(nn.Linear(4, 4))
    assert report.weights == [] and "no rewritten weight" in str(report)
    assert report.totals["compression_ratio"] == 1.0


def test_roofline_numbers_and_bad_input():
    cost = roofline.dense_linear(roofline.B, 1000, 1000, act_bytes=2, weight_bytes=2,
                                 bias=False)
    at = roofline.roofline(cost, "h100", "bfloat16", {"B": 1})
    assert at["bound"] == "memory"  # a GEMV reads the whole weight for 2 FLOPs per value
    assert at["memory_s"] == pytest.approx((2000 * 2 + 1000 * 1000 * 2) / 3.35e12)
    big = roofline.roofline(cost, "h100", "bfloat16", {"B": 8192})
    assert big["bound"] == "compute"
    with pytest.raises(ValueError, match="not a preset"):
        roofline.device("TPU")
    with pytest.raises(ValueError, match="size B"):
        randfx.inspect(_model(scheme="frozen"), batch_size=0)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        randfx.inspect("model")


# ------------------------------------------------------------------ randfx.draw

def _walked_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 4))
    return randfx.transform(model, randfx.Config(
        scheme="frozen", exclude_modules=("2",), sparse_backward=randfx.SparseBackward(8)))


def test_draw_dot_highlights_rewritten_layers_and_walks(tmp_path):
    pytest.importorskip("pydot")
    model = _walked_mlp()
    path = randfx.draw(model, tmp_path / "layers.dot")
    text = path.read_text()
    from randfx.drawing import SCHEME_COLOURS
    lines = {name: next(line for line in text.splitlines() if line.strip().startswith(f'"{name}"'))
             for name in ("0", "2", "4")}
    assert SCHEME_COLOURS["frozen"] in lines["0"] and SCHEME_COLOURS["frozen"] in lines["4"]
    assert "fillcolor=white" in lines["2"] and "dense" in lines["2"]
    assert "walk rows" in lines["4"] and "/4" in lines["4"]
    # drawing is a pure draw of the next step: the model's walks are untouched
    plan = model.randfx_sparse_backward
    assert plan.last_sample is None and plan.step.item() == 0


@pytest.mark.skipif(__import__("shutil").which("dot") is None, reason="needs Graphviz dot")
def test_draw_svg(tmp_path):
    pytest.importorskip("pydot")
    path = randfx.draw(_model(), tmp_path / "layers.svg")
    assert "<svg" in path.read_text()


def test_draw_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"\.svg"):
        randfx.draw(_model(), tmp_path / "layers.jpg")
    monkeypatch.setitem(__import__("sys").modules, "pydot", None)
    with pytest.raises(ImportError, match=r"randfx\[viz\]"):
        randfx.draw(_model(), tmp_path / "layers.svg")
    monkeypatch.undo()
    pytest.importorskip("pydot")
    with pytest.raises(ValueError, match="randfx.transform"):
        randfx.draw(nn.Linear(2, 2), tmp_path / "layers.svg")


@pytest.mark.parametrize("config", [
    dict(scheme="frozen"), dict(scheme="random_base_lora", rank=2),
    dict(scheme="subspace", dim=4), dict(scheme="subspace", dim=4, scope="global")],
    ids=lambda c: "-".join(map(str, c.values())))
def test_bytes_after_is_what_the_state_dict_stores(config):
    model = _model(**config)
    report = randfx.inspect(model)
    stored = {id(t): t.numel() * t.element_size() for t in model.state_dict(keep_vars=True).values()}
    assert report.totals["bytes_after"] == sum(stored.values())
    dense = sum(p.numel() * 4 for p in nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32),
                                                       nn.Linear(32, 8)).parameters())
    assert report.totals["bytes_before"] == dense
    if config.get("scope") == "global":
        assert [t["name"].rsplit(".", 1)[1] for t in report.shared] == ["alpha", "seed"]
