"""transform on real architectures from small configs: Hugging Face GPT-2, Llama and
BERT, a ResNet-style convnet with BatchNorm, and an MLP.

Each case: transform -> forward -> backward -> optimizer step -> state_dict into a
transform of a freshly (differently) initialised model -> identical outputs, and
materialize -> the same outputs from plain torch modules. The caller's model must come
out of transform bit-for-bit unchanged.
"""

import pytest
import torch
from torch import nn

import randfx
from randfx.modules import SeededLayer

transformers = pytest.importorskip("transformers")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
VOCAB = 64


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class TinyResNet(nn.Module):
    def __init__(self, channels=8, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.blocks = nn.Sequential(Block(channels), Block(channels))
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        return self.head(self.blocks(x).mean(dim=(2, 3)))


def mlp():
    return nn.Sequential(nn.Linear(16, 48), nn.GELU(), nn.Linear(48, 48), nn.ReLU(),
                         nn.Linear(48, 10))


def gpt2():
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=16,
        bos_token_id=0, eos_token_id=0))


def llama():
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=VOCAB, max_position_embeddings=16,
        bos_token_id=0, eos_token_id=0, pad_token_id=0))


def bert(hidden=32):
    return transformers.BertModel(transformers.BertConfig(
        num_hidden_layers=2, hidden_size=hidden, intermediate_size=2 * hidden,
        num_attention_heads=2, vocab_size=VOCAB, max_position_embeddings=16))


def token_ids(device):
    return torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3)).to(device)


def output_of(model, inputs):
    out = model(inputs)
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


CASES = {
    "mlp": (mlp, lambda d: torch.randn(4, 16, generator=torch.Generator().manual_seed(1)).to(d)),
    "resnet": (TinyResNet,
               lambda d: torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)).to(d)),
    "gpt2": (gpt2, token_ids),
    "llama": (llama, token_ids),
    "bert": (bert, token_ids),
}

SCHEMES = {
    "frozen": randfx.Config("frozen", seed=7),
    "lora": randfx.Config("random_base_lora", rank=2, lora_alpha=4, seed=7),
    "subspace": randfx.Config("subspace", dim=5, seed=7),
    "global": randfx.Config("subspace", dim=6, scope="global", seed=7),
}

COMBINATIONS = ([(model, "lora") for model in CASES]
                + [(model, scheme) for model in ("mlp", "resnet")
                   for scheme in ("frozen", "subspace", "global")]
                + [("gpt2", "global")])


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,scheme", COMBINATIONS)
def test_train_step_round_trip_and_materialize(case, scheme, device):
    build, make_inputs = CASES[case]
    config = SCHEMES[scheme]
    torch.manual_seed(0)
    source = build()
    before = snapshot(source)
    model = randfx.transform(source, config).to(device)
    after = source.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "transform changed its input"
    assert type(model) is type(source)
    assert any(isinstance(m, SeededLayer) for m in model.modules())

    inputs = make_inputs(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    output_of(model, inputs).float().pow(2).mean().backward()
    coefficients = [p for n, p in model.named_parameters()
                    if n.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "alpha")]
    assert (scheme == "frozen") != bool(coefficients)
    optimizer.step()
    if coefficients:
        assert any(p.abs().sum() > 0 for p in coefficients), "the step moved no coefficient"

    model.eval()
    with torch.no_grad():
        reference = output_of(model, inputs)
    torch.manual_seed(1)  # a differently initialised twin
    again = randfx.transform(build(), config).to(device)
    again.load_state_dict(model.state_dict())
    again.eval()
    with torch.no_grad():
        assert torch.equal(output_of(again, inputs), reference)

    dense = randfx.materialize(model)
    assert not any(isinstance(m, SeededLayer) for m in dense.modules())
    assert not hasattr(dense, "randfx_config")
    with torch.no_grad():
        torch.testing.assert_close(output_of(dense, inputs), reference, atol=2e-5, rtol=1e-4)



def in_place_mlp(in_place):
    return nn.Sequential(nn.Linear(16, 48), nn.ReLU(inplace=in_place), nn.Linear(48, 48),
                         nn.Hardswish(inplace=in_place), nn.Linear(48, 10))


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_in_place_activation_after_a_seeded_layer(scheme):
    """nn.ReLU(inplace=True) right after a seeded Linear (torchvision's AlexNet, VGG,
    MobileNetV3) trains, with the gradients of the out-of-place model: autograd refuses
    in-place changes to an op output that is a view made inside the op."""
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    grads = []
    for in_place in (False, True):
        torch.manual_seed(0)
        model = randfx.transform(in_place_mlp(in_place), SCHEMES[scheme])
        model(x).pow(2).mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert torch.equal(grads[1][name], grad), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheme", ["frozen", "lora", "subspace"])
def test_autocast_runs_seeded_linears_in_its_dtype(scheme, device):
    """Under torch.autocast a seeded Linear computes in the autocast dtype, as the
    nn.Linear it replaced does (its fused op is a custom op, which autocast leaves
    alone), and its coefficients keep float32 gradients."""
    torch.manual_seed(0)
    model = randfx.transform(mlp(), SCHEMES[scheme]).to(device)
    dense = randfx.materialize(model)
    x = torch.randn(8, 16, device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        got, want = model(x), dense(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), atol=3e-2, rtol=3e-2)
    got.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)

def test_hugging_face_model_keeps_its_api():
    source = gpt2()
    model = randfx.transform(source, randfx.Config("random_base_lora", rank=2))
    assert isinstance(model, transformers.GPT2LMHeadModel)
    assert model.config is not source.config and model.config.n_layer == 2
    model.eval()
    generated = model.generate(token_ids("cpu")[:1], max_new_tokens=3, do_sample=False)
    assert generated.shape == (1, 9)
    assert model.randfx_report.capture_path == "export"
    # GPT-2 ties lm_head to the embedding, which stays dense: so does lm_head
    assert "lm_head" in model.randfx_report.left_dense
    assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.parametrize("scheme", ["frozen", "random_base_lora"])
def test_a_bf16_llama_generates_like_its_materialised_copy(scheme):
    # the dense copy keeps the model's bf16 (a frozen layer has no parameter of its own
    # to take a dtype from; LoRA's coefficients are fp32 here)
    torch.manual_seed(0)
    model = randfx.transform(llama().to(torch.bfloat16),
                             randfx.Config(scheme, rank=2, seed=3)).eval()
    dense = randfx.materialize(model).eval()
    assert {p.dtype for p in dense.parameters()} == {torch.bfloat16}
    ids = token_ids("cpu")
    with torch.no_grad():
        want, got = dense(ids).logits.float(), model(ids).logits.float()
    assert (got - want).abs().max() <= 2e-2 * want.abs().max()
    assert dense.generate(ids[:1], max_new_tokens=3, do_sample=False).shape == (1, 9)


def layer_inputs(model, inputs, names):
    """The input each named layer receives in one forward of `model`."""
    captured, hooks = {}, []
    modules = dict(model.named_modules())
    for name in names:
        hooks.append(modules[name].register_forward_hook(
            lambda module, args, out, name=name: captured.__setitem__(name, args[0])))
    with torch.no_grad():
        output_of(model, inputs)
    for hook in hooks:
        hook.remove()
    return captured


def unit_variance(out, channel_dim):
    """Mean over output units of each unit's variance (biases and input means cancel)."""
    units = out.movedim(channel_dim, 0).reshape(out.shape[channel_dim], -1)
    return units.var(dim=1).mean().item()


def wide_mlp():
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 128))


VARIANCE_MODELS = {"mlp": wide_mlp, "resnet": lambda: TinyResNet(channels=16, classes=64),
                   "bert": lambda: bert(hidden=128)}


@pytest.mark.parametrize("case,config,inputs", [
    ("mlp", randfx.Config("frozen"), torch.randn(512, 64)),
    ("resnet", randfx.Config("random_base_lora", rank=4), torch.randn(16, 3, 8, 8)),
    ("resnet", randfx.Config("subspace", dim=8), torch.randn(16, 3, 8, 8)),
    # BERT initialises every Linear with N(0, initializer_range^2)
    ("bert", randfx.Config("frozen", init_std=0.02), None),
])
def test_layer_output_variance_at_init_matches_untransformed(case, config, inputs):
    torch.manual_seed(0)
    source = VARIANCE_MODELS[case]().eval()
    if inputs is None:
        inputs = torch.randint(0, VOCAB, (16, 12), generator=torch.Generator().manual_seed(0))
    model = randfx.transform(source, config).eval()
    names = list(model.randfx_report.rewritten)
    assert names
    source_layers, seeded_layers = dict(source.named_modules()), dict(model.named_modules())
    # every layer gets the input its original saw, so each ratio measures one weight
    for name, x in layer_inputs(source, inputs, names).items():
        channel_dim = 1 if isinstance(source_layers[name], nn.Conv2d) else -1
        with torch.no_grad():
            expected = unit_variance(source_layers[name](x), channel_dim)
            got = unit_variance(seeded_layers[name](x), channel_dim)
        assert 0.7 < got / expected < 1.43, f"{name}: output variance {got:.3g} vs {expected:.3g}"


@pytest.mark.parametrize("device", DEVICES)
def test_transform_a_model_already_on_the_device(device):
    source = gpt2().to(device)  # export captures it with its dummy inputs moved there
    model = randfx.transform(source, randfx.Config("random_base_lora", rank=2))
    assert {t.device.type for t in model.state_dict().values()} == {torch.device(device).type}
    model.eval()
    with torch.no_grad():
        logits = output_of(model, token_ids(device))
    assert logits.shape == (2, 6, VOCAB) and torch.isfinite(logits).all()


def test_export_capture_in_training_mode_leaves_batchnorm_statistics_alone():
    class Untraceable(TinyResNet):
        def forward(self, x):
            if x.shape[0] == 0:  # control flow on a shape: symbolic_trace refuses
                return x
            return super().forward(x)
    source = Untraceable().train()
    before = snapshot(source)
    model = randfx.transform(source, randfx.Config("frozen"),
                             example_inputs=torch.randn(2, 3, 8, 8))
    assert model.randfx_report.capture_path == "export"
    assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())
    graph = model.randfx_report.layer_graph
    assert {("stem", "blocks.0.conv1"), ("stem", "blocks.1.conv1"), ("stem", "head"),
            ("blocks.0.conv1", "blocks.0.conv2")} <= set(graph.edges)
    assert ("blocks.0.conv1", "head") not in graph.edges
