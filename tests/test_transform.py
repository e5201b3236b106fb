"""The transform pipeline on small hand-built models: contract 4 (what the state_dict
holds), determinism, selection patterns, ties, the layer graph, fused vs materialised
execution, graph dumps and bad input (nothing the caller passed is modified)."""

import math

import pytest
import torch
from torch import nn

import randfx
from randfx.generators import DISTRIBUTIONS, derive_key, generate
from randfx.modules import SeededLayer, SeededMultiheadAttention


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 20, bias=False)

    def forward(self, ids):
        x = self.embed(ids)
        x = self.norm(x + self.fc2(torch.relu(self.fc1(x))))  # residual around the MLP
        return self.head(x)


def ids():
    return torch.randint(0, 20, (3, 5), generator=torch.Generator().manual_seed(0))


def test_state_dict_holds_seeds_coefficients_and_kept_tensors_only():
    model = randfx.transform(Net(), randfx.Config("random_base_lora", rank=3, seed=5))
    assert sorted(model.state_dict()) == sorted([
        "embed.weight", "norm.weight", "norm.bias",
        "fc1.seed", "fc1.lora_A", "fc1.lora_B", "fc1.bias",
        "fc2.seed", "fc2.lora_A", "fc2.lora_B", "fc2.bias",
        "head.seed", "head.lora_A", "head.lora_B"])
    assert model.fc1.seed.dtype == torch.int64
    assert int(model.fc1.seed) == derive_key(5, "fc1.weight")
    assert model.fc1.lora_A.shape == (3, 16) and model.fc1.lora_B.shape == (32, 3)
    assert not model.fc1.lora_B.any()
    assert model.randfx_config == randfx.Config("random_base_lora", rank=3, seed=5)
    assert model.randfx_report.rewritten == {name: "random_base_lora"
                                             for name in ("fc1", "fc2", "head")}


def test_scale_gives_the_default_init_variance():
    model = randfx.transform(Net(), randfx.Config("frozen", dist="rademacher"))
    assert model.fc1.scale == pytest.approx(math.sqrt(1 / (3 * 16)))
    weight = model.fc1.dense_weight()
    expected = generate((32, 16), key=derive_key(0, "fc1.weight"), dist="rademacher")
    torch.testing.assert_close(weight, expected * model.fc1.scale)
    uniform = randfx.transform(Net(), randfx.Config("frozen", init_std=0.02, dist="uniform"))
    assert uniform.fc1.scale == pytest.approx(0.02 / math.sqrt(DISTRIBUTIONS["uniform"].variance))
    default = randfx.transform(Net(), randfx.Config("frozen", init_std=0.02))
    assert default.randfx_config.dist == "rademacher32"  # variance 1: the scale is the std
    assert default.fc1.scale == pytest.approx(0.02)


def test_transform_is_deterministic_and_seeded_tensors_describe_the_weights():
    config = randfx.Config("subspace", dim=4, scope="global", seed=11)
    first, second = randfx.transform(Net(), config), randfx.transform(Net(), config)
    records = [r for m in first.modules() if isinstance(m, SeededLayer) for r in m.seeded_tensors()]
    again = [r for m in second.modules() if isinstance(m, SeededLayer) for r in m.seeded_tensors()]
    assert records == again
    names = [r.name for r in records]
    assert names == ["fc1.weight", "fc1.weight.basis", "fc2.weight", "fc2.weight.basis",
                     "head.weight", "head.weight.basis"]
    # the global basis hands out consecutive rows: offsets in counters (row * dim)
    assert [r.offset for r in records[1::2]] == [0, 32 * 16 * 4, (32 * 16 + 16 * 32) * 4]
    for record in records[::2]:
        layer = first.get_submodule(record.name.rsplit(".", 1)[0])
        expected = generate(record.shape, key=record.key, generator=record.generator,
                            dist=record.dist, offset=record.offset) * record.scale
        torch.testing.assert_close(layer.base_weight(torch.float32), expected)
    assert list(first.state_dict()).count("fc1.subspace.alpha") == 1
    assert sum(p.numel() for n, p in first.named_parameters() if "alpha" in n) == 4


@pytest.mark.parametrize("config", [
    randfx.Config("frozen"),
    randfx.Config("random_base_lora", rank=2),
    randfx.Config("subspace", dim=3),
    randfx.Config("subspace", dim=3, scope="global"),
])
def test_fused_execution_equals_the_materialised_weight(config):
    torch.manual_seed(0)
    model = randfx.transform(Net(), config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(4, 16)
    layer = model.fc1
    assert layer.execution == "fused"
    fused = layer(x)
    dense = torch.nn.functional.linear(x, layer.dense_weight(), layer.bias)
    torch.testing.assert_close(fused, dense, atol=1e-5, rtol=1e-5)


def test_target_and_exclude_patterns():
    def rewritten(**kwargs):
        model = randfx.transform(Net(), randfx.Config("frozen", **kwargs))
        return sorted(model.randfx_report.rewritten)
    assert rewritten() == ["fc1", "fc2", "head"]
    assert rewritten(target_modules="fc1") == ["fc1"]
    assert rewritten(target_modules="re:fc\\d") == ["fc1", "fc2"]
    assert rewritten(target_modules="all-linear", exclude_modules="head") == ["fc1", "fc2"]
    assert rewritten(target_modules=["embed", "fc2"]) == ["embed", "fc2"]


def test_tied_weight_is_one_seeded_tensor_used_twice():
    source = Net()
    source.head.weight = source.embed.weight
    dense = randfx.transform(source, randfx.Config("random_base_lora", rank=2))
    assert dense.randfx_report.left_dense == {
        "head": "its weight is tied to embed, which is not rewritten"}
    assert dense.head.weight is dense.embed.weight

    model = randfx.transform(source, randfx.Config("random_base_lora", rank=2,
                                                   target_modules=["embed", "head"]))
    assert model.head.lora_A is model.embed.lora_A and model.head.seed is model.embed.seed
    assert model.embed.scale == pytest.approx(1.0)  # embedding init: variance 1 (rademacher32)
    assert "head.lora_A" in model.state_dict()  # the tie is kept in both names
    with torch.no_grad():
        model.embed.lora_B.fill_(0.01)
    torch.testing.assert_close(model.head.dense_weight(), model.embed.dense_weight())
    dense_copy = randfx.materialize(model)
    assert dense_copy.head.weight is dense_copy.embed.weight
    torch.testing.assert_close(dense_copy(ids()), model(ids()), atol=1e-5, rtol=1e-5)


def test_layer_graph_follows_data_through_residuals():
    model = randfx.transform(Net(), randfx.Config("frozen"))
    graph = model.randfx_report.layer_graph
    assert set(graph.nodes) == {"embed", "fc1", "fc2", "head"}
    assert set(graph.edges) == {("embed", "fc1"), ("fc1", "fc2"), ("fc2", "head"),
                                ("embed", "head")}
    assert graph.nodes["fc1"]["kind"] == "linear" and graph.nodes["fc1"]["shape"] == (32, 16)


def test_export_path_gives_the_same_layer_graph():
    class Traceless(Net):
        def forward(self, ids):
            if ids.shape[0] == 0:  # control flow on a shape: symbolic_trace refuses
                return ids
            return super().forward(ids)
    with pytest.raises(ValueError, match="cannot capture Traceless.*example_inputs"):
        randfx.transform(Traceless(), randfx.Config("frozen"))
    model = randfx.transform(Traceless(), randfx.Config("frozen"), example_inputs=ids())
    assert model.randfx_report.capture_path == "export"
    assert set(model.randfx_report.layer_graph.edges) == {
        ("embed", "fc1"), ("fc1", "fc2"), ("fc2", "head"), ("embed", "head")}


class WithAttention(nn.Module):
    def __init__(self, capture, **attention):
        super().__init__()
        self.capture = capture
        self.attn = nn.MultiheadAttention(8, 2, **attention)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        if self.capture == "export" and x.shape[0] == 0:  # symbolic_trace refuses this
            return x
        return self.fc(self.attn(x, x, x)[0])


class CrossAttention(WithAttention):
    def forward(self, x):
        if self.capture == "export" and x.shape[0] == 0:
            return x
        return self.fc(self.attn(x, x[..., :6], x[..., :6])[0])


@pytest.mark.parametrize("capture", ["symbolic_trace", "export"])
def test_unsupported_layers_stay_dense_with_a_warning(capture):
    x = torch.randn(3, 2, 8)
    # key and value of another size: q_proj_weight, k_proj_weight, v_proj_weight, no rule
    with pytest.warns(UserWarning, match="attn stays dense: no randfx rule for "
                                         "MultiheadAttention \\(its parameter q_proj_weight"):
        model = randfx.transform(CrossAttention(capture, kdim=6, vdim=6),
                                 randfx.Config("frozen"), example_inputs=x)
    assert model.randfx_report.capture_path == capture
    assert type(model.attn) is nn.MultiheadAttention
    assert "attn" in model.randfx_report.left_dense
    assert model(x).shape == (3, 2, 8)


@pytest.mark.parametrize("capture", ["symbolic_trace", "export"])
@pytest.mark.parametrize("scheme", ["random_base_lora", "subspace"])
def test_multihead_attention_in_projection_is_seeded(capture, scheme, tmp_path):
    """MHA applies in_proj_weight in its own forward and passes out_proj.weight to a
    functional (a leaf call to symbolic_trace, a functional use to export): the module
    stays a MultiheadAttention whose in_proj_weight its seeded child generates, and the
    seeded out_proj generates its weight at the read."""
    x = torch.randn(3, 2, 8)
    torch.manual_seed(0)
    config = (randfx.Config(scheme, rank=2) if scheme == "random_base_lora"
              else randfx.Config(scheme, dim=4))
    model = randfx.transform(WithAttention(capture), config, example_inputs=x)
    report = model.randfx_report
    assert report.capture_path == capture
    assert sorted(report.rewritten) == ["attn", "attn.out_proj", "fc"]
    assert sorted(report.read_directly) == ["attn", "attn.out_proj"] and not report.left_dense
    assert isinstance(model.attn, SeededMultiheadAttention)
    assert isinstance(model.attn, nn.MultiheadAttention)
    assert not any(k.endswith("in_proj_weight") for k in model.state_dict())
    model(x).pow(2).sum().backward()
    coefficients = [p for n, p in model.attn.in_proj.named_parameters() if n != "bias"]
    assert coefficients and all(p.grad is not None for p in coefficients)

    dense = randfx.materialize(model)
    assert type(dense.attn) is nn.MultiheadAttention
    assert dense.attn.in_proj_weight.shape == (24, 8)
    torch.testing.assert_close(dense(x), model(x))
    randfx.save(model, tmp_path / "attention.rfx")
    loaded = randfx.load(tmp_path / "attention.rfx", like=lambda: WithAttention(capture),
                         example_inputs=x)
    assert torch.equal(loaded(x), model(x))



@pytest.mark.parametrize("training", [True, False])
def test_multihead_attention_generates_each_projection_once_per_call(training, monkeypatch):
    """MultiheadAttention.forward reads in_proj_weight in its fast-path checks too: the
    seeded module still generates in_proj's and out_proj's weights once per call."""
    model = randfx.transform(WithAttention("symbolic_trace"), randfx.Config("frozen"))
    model.train(training)
    generated = []
    dense_weight = SeededLayer.dense_weight
    monkeypatch.setattr(SeededLayer, "dense_weight",
                        lambda self, *a: generated.append(self) or dense_weight(self, *a))
    with torch.no_grad():
        model(torch.randn(3, 2, 8))
    assert sorted(id(layer) for layer in generated) == sorted(
        [id(model.attn.in_proj), id(model.attn.out_proj)])
    assert model.attn.in_proj.__dict__["_held_weight"] is None

def test_a_fresh_in_projection_has_the_variance_of_multihead_attentions_init():
    """xavier_uniform_ over (3E, E): variance 2 / (3E + E)."""
    model = randfx.transform(WithAttention("symbolic_trace"), randfx.Config("frozen"))
    weight = model.attn.in_proj_weight  # +-scale, rademacher32
    assert weight.shape == (24, 8)
    assert weight.pow(2).mean().item() == pytest.approx(2 / 32, rel=1e-6)


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.out = nn.Linear(8, 4)

    def forward(self, x):
        return self.out(torch.nn.functional.linear(self.fc(x), self.fc.weight))


def test_a_weight_read_functionally_is_generated_at_the_read():
    torch.manual_seed(0)
    model = randfx.transform(Functional(), randfx.Config("random_base_lora", rank=2))
    assert sorted(model.randfx_report.rewritten) == ["fc", "out"]
    assert "also used outside fc's forward" in model.randfx_report.read_directly["fc"]
    x = torch.randn(5, 8)
    # both uses of fc's weight, in fc's forward and the functional read, train its adapter
    dense = randfx.materialize(model)
    torch.testing.assert_close(model(x), dense(x))
    model(x).pow(2).sum().backward()
    dense(x).pow(2).sum().backward()
    grad_w = dense.fc.weight.grad  # dL/dW; W = s R + c B A, so dL/dB = c dL/dW A^T
    want_B = model.fc.lora_scaling * grad_w @ model.fc.lora_A.detach().T
    torch.testing.assert_close(model.fc.lora_B.grad, want_B)


def test_a_weight_read_functionally_stays_dense_under_a_sparse_backward():
    config = randfx.Config("random_base_lora", rank=2,
                           sparse_backward=randfx.SparseBackward(num_paths=4))
    with pytest.warns(UserWarning, match="fc stays dense: its weight fc.weight is also used "
                                         "outside fc's forward, which a sparse backward"):
        model = randfx.transform(Functional(), config)
    assert sorted(model.randfx_report.rewritten) == ["out"]
    assert not model.randfx_report.read_directly
    with pytest.warns(UserWarning, match="attn stays dense: MultiheadAttention applies it in "
                                         "its own forward, which a sparse backward"):
        model = randfx.transform(WithAttention("symbolic_trace"), config)
    assert sorted(model.randfx_report.left_dense) == ["attn", "attn.out_proj"]
    assert type(model.attn) is nn.MultiheadAttention


def test_graph_dumps_and_provenance(tmp_path):
    randfx.transform(Net(), randfx.Config("frozen"), dump_graphs=str(tmp_path))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "00_capture_after.txt" in names and "05_emit_after.txt" in names
    text = (tmp_path / "04_lower_after.txt").read_text()
    assert "'pass': 'reparameterize'" in text and "'execution': 'fused'" in text


def test_bad_input_is_refused_and_the_model_is_untouched():
    source = Net()
    before = {k: v.clone() for k, v in source.state_dict().items()}
    modules = dict(source.named_modules())
    with pytest.raises(ValueError, match="selects no weight.*target_modules=\\('nothing',\\)"):
        randfx.transform(source, randfx.Config("frozen", target_modules="nothing"))
    with pytest.raises(ValueError, match="itself a single layer.*nn.Sequential"):
        randfx.transform(nn.Linear(3, 3), randfx.Config("frozen"))
    with pytest.raises(TypeError, match="config must be a randfx.Config"):
        randfx.transform(source, {"scheme": "frozen"})
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        randfx.transform(lambda x: x, randfx.Config("frozen"))
    with pytest.raises(TypeError, match="example_inputs"):
        randfx.transform(source, randfx.Config("frozen"), example_inputs=3)
    assert dict(source.named_modules()) == modules
    assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())
    transformed = randfx.transform(source, randfx.Config("frozen"))
    with pytest.raises(ValueError, match="already transformed"):
        randfx.transform(transformed, randfx.Config("frozen"))
    with pytest.raises(ValueError, match="not made by randfx.transform"):
        randfx.materialize(source)


def test_dense_scheme_keeps_weights():
    source = Net()
    model = randfx.transform(source, randfx.Config("dense"))
    assert not any(isinstance(m, SeededLayer) for m in model.modules())
    assert torch.equal(model.fc1.weight, source.fc1.weight)
    assert model.fc1.weight is not source.fc1.weight


@pytest.mark.parametrize("conv,x", [
    (nn.Conv2d(3, 4, 3, stride=2, padding=1, padding_mode="reflect"), torch.randn(2, 3, 9, 9)),
    (nn.Conv1d(3, 4, 3, dilation=2, groups=1), torch.randn(2, 3, 11)),
])
def test_conv_layers_and_materialize_keep_hyper_parameters(conv, x):
    model = randfx.transform(nn.Sequential(conv), randfx.Config("random_base_lora", rank=2))
    assert model[0].execution == "materialize"
    with torch.no_grad():
        model[0].lora_B.fill_(0.05)
    dense = randfx.materialize(model)
    assert type(dense[0]) is type(conv)
    assert (dense[0].stride, dense[0].dilation, dense[0].padding_mode) == (
        conv.stride, conv.dilation, conv.padding_mode)
    torch.testing.assert_close(dense(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scheme", ["frozen", "random_base_lora"])
def test_a_bf16_model_stays_bf16_through_weight_and_materialize(scheme):
    # a frozen layer without bias has no parameter to take a dtype from, and LoRA's
    # coefficients are fp32: the dtype comes from the weight the layer replaced
    source = Net().to(torch.bfloat16)
    model = randfx.transform(source, randfx.Config(scheme, rank=2, seed=1))
    assert model.head.weight.dtype == torch.bfloat16
    dense = randfx.materialize(model)
    assert {p.dtype for p in dense.parameters()} == {torch.bfloat16}
    with torch.no_grad():  # the same weights; the seeded layers sum in fp32
        want, got = dense(ids()).float(), model(ids()).float()
    assert (got - want).abs().max() <= 2e-2 * want.abs().max()


def test_sparse_backward_pass_runs_and_materialize_removes_it():
    config = randfx.Config("random_base_lora", rank=2,
                           sparse_backward=randfx.SparseBackward(num_paths=4))
    model = randfx.transform(Net(), config)
    assert model.randfx_report.passes[-1][0] == "sparse_backward"
    assert hasattr(model, "randfx_sparse_backward")
    model.eval()
    dense = randfx.materialize(model)
    assert not hasattr(dense, "randfx_sparse_backward") and "forward" not in vars(dense)
    torch.testing.assert_close(dense(ids()), model(ids()), atol=1e-5, rtol=1e-5)


def test_emitted_modules_compile_as_one_graph():
    # the global scheme reads its alpha through a non-submodule reference: Dynamo must
    # still see it as a parameter, with no graph break
    model = randfx.transform(Net(), randfx.Config("subspace", dim=3, scope="global"))
    with torch.no_grad():
        model.fc1.subspace.alpha.fill_(0.5)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(ids())
    out.sum().backward()
    torch.testing.assert_close(out, model(ids()))
    assert model.fc1.subspace.alpha.grad is not None and model.fc1.subspace.alpha.grad.any()


@pytest.mark.parametrize("config", [randfx.Config("random_base_lora", rank=2),
                                    randfx.Config("subspace", dim=3, scope="global")])
def test_new_tensors_follow_the_replaced_weights_dtype(config):
    source = Net().double()
    model = randfx.transform(source, config)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model.fc1.seed.dtype == torch.int64
    assert model(ids()).dtype == torch.float64


def test_seeded_embedding_keeps_its_padding_row_at_zero():
    source = nn.Sequential(nn.Embedding(10, 8, padding_idx=2), nn.Linear(8, 3))
    model = randfx.transform(source, randfx.Config("random_base_lora", rank=2,
                                                   target_modules=["0", "1"]))
    with torch.no_grad():
        model[0].lora_B.fill_(0.1)
    weight = model[0].dense_weight()
    assert not weight[2].any() and weight[3].any()
    x = torch.tensor([[2, 3, 2]])
    torch.testing.assert_close(randfx.materialize(model)(x), model(x))


def test_weight_attribute_is_the_dense_weight_in_the_original_layout():
    model = randfx.transform(Net(), randfx.Config("random_base_lora", rank=2))
    with torch.no_grad():
        model.fc1.lora_B.fill_(0.2)
    assert "fc1.weight" not in model.state_dict()
    assert torch.equal(model.fc1.weight, model.fc1.dense_weight())
    assert model.fc1.weight.dtype == torch.float32 and model.fc1.weight.shape == (32, 16)
    model.fc1.weight.sum().backward()  # differentiable in the coefficients
    assert model.fc1.lora_A.grad is not None


def test_weight_attribute_of_a_transposed_hf_conv1d():
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    source = nn.Sequential(pytorch_utils.Conv1D(6, 4))  # nf=6 outputs, nx=4 inputs
    model = randfx.transform(source, randfx.Config("frozen"))
    assert model[0].weight_shape == (6, 4) and model[0].weight.shape == (4, 6)
    x = torch.randn(2, 4)
    torch.testing.assert_close(model(x), x @ model[0].weight + model[0].bias)
    assert isinstance(randfx.materialize(model)[0], pytorch_utils.Conv1D)
