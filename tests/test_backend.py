"""The torch.compile backend "randfx": entry point, lowering passes, Inductor compiles.

Inductor compiles on CPU take seconds each on CI's 2 cores, so only two tests compile with
Inductor; the lowering passes are checked on aot_autograd graphs without Inductor.
"""

import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

import randfx
from randfx import backend

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def _lora_mlp(device):
    model = randfx.transform(_mlp(), randfx.Config(scheme="random_base_lora", rank=2, seed=7))
    with torch.no_grad():  # lora_B starts at 0; make the adapter path carry gradient
        for module in model.modules():
            if hasattr(module, "lora_B"):
                module.lora_B.copy_(torch.randn(module.lora_B.shape) * 0.1)
    return model.to(device)


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_entry_point_resolves_without_importing_randfx():
    code = (
        "import sys, torch\n"
        "assert 'randfx' not in sys.modules\n"
        "fn = torch._dynamo.lookup_backend('randfx')\n"
        "import randfx.backend\n"
        "assert fn is randfx.backend.randfx_backend, fn\n"
        "assert 'randfx' in torch._dynamo.list_backends()\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_backend_does_not_register_its_name_at_import():
    # a second registration of "randfx" would make Dynamo assert on lookup
    source = open(backend.__file__).read()
    assert "register_backend" not in source


@pytest.mark.parametrize("config", [
    dict(scheme="frozen"), dict(scheme="random_base_lora", rank=2),
    dict(scheme="subspace", dim=4), dict(scheme="subspace", dim=4, scope="global")],
    ids=lambda c: "-".join(map(str, c.values())))
def test_every_scheme_captures_as_one_graph(config):
    model = randfx.transform(_mlp(), randfx.Config(seed=3, **config))
    explanation = torch._dynamo.explain(model)(torch.randn(3, 16))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    ops = {name for graph in explanation.graphs for name in backend.randfx_op_names(graph.graph)}
    assert ops and all(name.startswith("randfx::") for name in ops)


def _compare_training_step(model, run, x, atol=1e-4):
    """run(x) and model(x): the same outputs and gradients (x's and every parameter's)."""
    x_run, x_eager = (x.clone().requires_grad_(True) for _ in range(2))
    model.zero_grad()
    out = run(x_run)
    out.square().sum().backward()
    grads = _grads(model)
    model.zero_grad()
    expected = model(x_eager)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=atol)
    torch.testing.assert_close(x_run.grad, x_eager.grad, rtol=1e-4, atol=atol)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=atol, msg=name)


def _dynamic_rows(x):
    torch._dynamo.mark_dynamic(x, 0)
    return x


@pytest.mark.parametrize("device", DEVICES)
def test_transformed_model_compiles_fullgraph_once_and_matches_eager(device):
    model = _lora_mlp(device)
    explanation = torch._dynamo.explain(model)(torch.randn(3, 16, device=device))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(model, backend="randfx", fullgraph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", backend.NothingRewrittenWarning)
        for batch in (3, 5, 40):  # 3 and 5 rows: fused kernel; 40: materialised at runtime
            _compare_training_step(model, lambda x: compiled(_dynamic_rows(x)),
                                   torch.randn(batch, 16, device=device), atol=1e-5)
    # one dynamic graph serves all three batch sizes on the CPU; on CUDA the backend
    # guards on the side of the fused kernels' 16 rows the row count lies: 3 and 5 rows
    # share a graph, 40 rows compile one that launches the generator from Inductor
    expected_graphs = 1 if device == "cpu" else 2
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == expected_graphs


def test_untransformed_model_is_compiled_as_inductor_and_said_once():
    model = _mlp()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="randfx")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in (2, 3, 4):  # the second call recompiles with a dynamic batch
            x = torch.randn(batch, 16)
            torch.testing.assert_close(compiled(x), model(x))
    told = [w for w in caught if issubclass(w.category, backend.NothingRewrittenWarning)]
    assert len(told) == 1
    assert "nothing was rewritten" in str(told[0].message)


# ------------------------------------------------ lowering passes, without Inductor

def _aot_lowered(model, x, seen):
    """Compile `model` with aot_autograd whose forward and backward compilers run the
    AFTER_AUTOGRAD passes and keep the graphs in `seen` (no Inductor: fast)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def lowered(gm, example_inputs):
        backend.run_passes(gm, backend.AFTER_AUTOGRAD)
        seen.append(gm)
        return make_boxed_func(gm.forward)

    def dynamo_backend(gm, example_inputs):
        backend.run_passes(gm, backend.BEFORE_AUTOGRAD)
        seen.append(gm)
        return aot_autograd(fw_compiler=lowered, bw_compiler=lowered)(gm, example_inputs)

    torch._dynamo.reset()
    return torch.compile(model, backend=dynamo_backend, dynamic=False)


def _targets(gm):
    return [node.target for node in gm.graph.nodes if node.op == "call_function"]


class _GeneratedLinear(nn.Module):
    """A layer written against the ops by hand: generate the weight, then F.linear."""

    def __init__(self, in_features, out_features, key):
        super().__init__()
        self.register_buffer("seed", torch.tensor(key))
        self.bias = nn.Parameter(torch.linspace(-1, 1, out_features))
        self.shape = (out_features, in_features)

    def forward(self, x):
        weight = randfx.ops.generate_weight(self.seed, self.shape, 0.2)
        return nn.functional.linear(x, weight, self.bias)


@pytest.mark.parametrize("rows,kernel", [(4, "gemv"), (12, "gemm"), (40, "materialize")])
def test_generation_is_fused_and_kernel_chosen_by_rows(rows, kernel):
    model = nn.Sequential(_GeneratedLinear(16, 24, 3), nn.Tanh(), _GeneratedLinear(24, 8, 5))
    seen = []
    compiled = _aot_lowered(model, None, seen)
    x = torch.randn(rows, 16, requires_grad=True)
    out = compiled(x)
    out.sum().backward()
    x_eager = x.detach().clone().requires_grad_(True)
    expected = model(x_eager)
    expected.sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x_eager.grad, rtol=1e-5, atol=1e-5)

    dynamo_graph, forward, backward_graph = seen
    # fused before autograd: the Dynamo graph no longer materialises the weights
    assert torch.ops.randfx.generate_weight not in _targets(dynamo_graph)
    assert _targets(dynamo_graph).count(torch.ops.randfx.seeded_linear.default) == 2
    for graph in (forward, backward_graph):
        marks = [entry for node in graph.graph.nodes
                 for entry in node.meta.get("randfx", [])
                 if entry["pass"] == "backend_select_kernels"]
        assert marks and all(entry["kernel"] == kernel for entry in marks)
        targets = _targets(graph)
        if kernel == "materialize":
            assert torch.ops.randfx.seeded_linear.default not in targets
            assert torch.ops.randfx.seeded_matmul.default not in targets
            assert torch.ops.randfx.generate_weight.default in targets
        else:
            assert torch.ops.randfx.generate_weight.default not in targets
    # the backward needs no weight saved from the forward: only keys cross over
    saved = [node for node in backward_graph.graph.nodes if node.op == "placeholder"]
    assert not any(tuple(node.meta["val"].shape) in ((24, 16), (8, 24), (16, 24), (24, 8))
                   for node in saved)


def test_generated_weight_with_other_uses_is_left_materialised():
    class TwoUses(_GeneratedLinear):
        def forward(self, x):
            weight = randfx.ops.generate_weight(self.seed, self.shape, 0.2)
            return nn.functional.linear(x, weight, self.bias), weight.sum()

    seen = []
    model = TwoUses(16, 8, 1)
    compiled = _aot_lowered(model, None, seen)
    x = torch.randn(3, 16)
    out, total = compiled(x)
    expected, expected_total = model(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(total, expected_total)
    assert torch.ops.randfx.generate_weight in _targets(seen[0])


def test_lora_backward_through_the_backend_matches_eager():
    # 40 rows: the LoRA backward's grad_x is one seeded_lora_grad_input, which folds the
    # adapter into the W it materialises; the backend leaves it to the op
    model = _lora_mlp("cpu")
    seen = []
    compiled = _aot_lowered(model, None, seen)
    x = torch.randn(40, 16, requires_grad=True)
    compiled(x).square().sum().backward()
    grads = _grads(model)
    model.zero_grad()
    x_eager = x.detach().clone().requires_grad_(True)
    model(x_eager).square().sum().backward()
    torch.testing.assert_close(x.grad, x_eager.grad, rtol=1e-5, atol=1e-5)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)
    backward_graph = seen[-1]
    assert torch.ops.randfx.seeded_matmul.default not in _targets(backward_graph)
    grad_input = [n for n in backward_graph.graph.nodes
                  if n.target is torch.ops.randfx.seeded_lora_grad_input.default]
    assert grad_input and all(n.meta["randfx"][-1]["kernel"] == "op" for n in grad_input)



def _backed_symint(shape_env, hint: int):
    """A dynamic size whose example value is `hint` (as Dynamo makes for a dynamic dim)."""
    from torch._dynamo.source import ConstantSource
    from torch.fx.experimental.symbolic_shapes import DimDynamic
    source = ConstantSource(f"rows{hint}")
    symbol = shape_env.create_symbol(hint, source, dynamic_dim=DimDynamic.DYNAMIC)
    return shape_env.create_symintnode(symbol, hint=hint, source=source)


def test_inline_generation_takes_cuda_layers_above_the_fused_rows():
    """backend_inline_generation's choice on a Dynamo-style graph of fake tensors (fake
    CUDA tensors need no GPU): CUDA x of 32 or 16 bits above 16 rows becomes
    inline_generation.linear, with its output's fake value; 16 rows, CPU, float64 and an
    unbacked row count keep the op; a dynamic row count is decided by its example value,
    under a guard. generate_weight with a CUDA key becomes
    inline_generation.generate_weight in 32 and 16 bits; CPU and float64 keep the op."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    from randfx.ops import inline_generation
    from randfx.passes import backend_inline_generation
    mode = FakeTensorMode(shape_env=ShapeEnv())
    graph = torch.fx.Graph()

    def placeholder(name, value):
        node = graph.placeholder(name)
        node.meta["example_value"] = value
        return node

    def call(op, args, value):
        node = graph.call_function(op, args)
        node.meta["example_value"] = value
        return node

    with mode:
        keys = {device: torch.zeros((), dtype=torch.int64, device=device)
                for device in ("cpu", "cuda")}
        lora_a = torch.empty(2, 16, device="cuda", requires_grad=True)
        lora_b = torch.empty(24, 2, device="cuda", requires_grad=True)
    cases = {  # name: (rows, device, dtype, rewritten)
        "bf16_40": (40, "cuda", torch.bfloat16, True),
        "fp16_17": (17, "cuda", torch.float16, True),
        "fp32_64": (64, "cuda", torch.float32, True),
        "bf16_16": (16, "cuda", torch.bfloat16, False),
        "cpu_40": (40, "cpu", torch.float32, False),
        "fp64_40": (40, "cuda", torch.float64, False),
        "unbacked": (mode.shape_env.create_unbacked_symint(), "cuda", torch.bfloat16, False),
        "dynamic_40": (_backed_symint(mode.shape_env, 40), "cuda", torch.bfloat16, True),
        "dynamic_8": (_backed_symint(mode.shape_env, 8), "cuda", torch.bfloat16, False),
    }
    key_nodes = {device: placeholder(f"key_{device}", key) for device, key in keys.items()}
    a_node, b_node = placeholder("lora_a", lora_a), placeholder("lora_b", lora_b)
    outputs, expected = [], {}
    for name, (rows, device, dtype, rewritten) in cases.items():
        with mode:
            x = torch.empty(rows, 16, device=device, dtype=dtype, requires_grad=True)
            y = torch.empty(rows, 24, device=device, dtype=dtype, requires_grad=True)
        x_node = placeholder(f"x_{name}", x)
        frozen = call(torch.ops.randfx.seeded_linear.default,
                      (x_node, key_nodes[device], 24, 0.1, None, "pcg", "uniform"), y)
        outputs.append(frozen)
        expected[frozen.name] = rewritten
        if device == "cuda":
            lora = call(torch.ops.randfx.seeded_lora_linear.default,
                        (x_node, key_nodes[device], a_node, b_node, 0.1, 2.0, None, "pcg",
                         "uniform"), y)
            outputs.append(lora)
            expected[lora.name] = rewritten
    generated = {}  # name: (device, dtype, rewritten)
    for name, (device, dtype, rewritten) in {"cuda_bf16": ("cuda", torch.bfloat16, True),
                                             "cuda_fp32": ("cuda", torch.float32, True),
                                             "cuda_fp64": ("cuda", torch.float64, False),
                                             "cpu_fp32": ("cpu", torch.float32, False)}.items():
        with mode:
            weight = torch.empty(8, 3, 3, 3, device=device, dtype=dtype)
        node = call(torch.ops.randfx.generate_weight.default,
                    (key_nodes[device], [8, 3, 3, 3], 0.5, "pcg", "uniform", dtype), weight)
        outputs.append(node)
        expected[node.name] = rewritten
        generated[node.name] = inline_generation.generate_weight
    graph.output(tuple(outputs))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    outputs_before = [node.meta["example_value"] for node in outputs]

    assert backend_inline_generation.run(gm)
    results = list(gm.graph.nodes)[-1].args[0]
    for before, node, (name, rewritten) in zip(outputs_before, results, expected.items()):
        replacement = generated.get(name, inline_generation.linear)
        assert (node.target is replacement) is rewritten, name
        assert node.meta["example_value"] is before
        if rewritten:
            assert node.meta["randfx"][-1]["pass"] == "backend_inline_generation"
    lora_rewritten = [node for node in results if node.target is inline_generation.linear
                      and node.args[2] is not None]
    assert lora_rewritten and all(node.args[2] is a_node and node.args[3] is b_node
                                  and node.args[5] == 24 and node.args[7] == 2.0
                                  for node in lora_rewritten)
    # the dynamic row counts were decided by their example values, under one guard each
    size = {name: str(cases[name][0].node.expr) for name in ("dynamic_40", "dynamic_8")}
    guards = {str(guard.expr) for guard in mode.shape_env.guards}
    assert guards == {f"{size['dynamic_40']} > 16", f"{size['dynamic_8']} <= 16"}, guards
    weights = [node for node in results if node.target is inline_generation.generate_weight]
    assert len(weights) == 2 and all(
        node.args[1:5] == ([8, 3, 3, 3], 0.5, "pcg", "uniform") for node in weights)


@pytest.mark.cuda
@pytest.mark.parametrize("scheme", ["frozen", "random_base_lora"])
def test_materialising_layers_launch_generation_from_inductor(scheme):
    """On CUDA, above the fused kernels' rows, the layers become inline_generation.linear
    before autograd: the aten graphs call no randfx op (no Python per layer and step), the
    generator is a traced Triton launch, and the values are the eager ones."""
    if scheme == "frozen":
        model = randfx.transform(_mlp(), randfx.Config(scheme="frozen", seed=7)).cuda()
    else:
        model = _lora_mlp("cuda")
    x = torch.randn(4, 16, 16, device="cuda")  # 64 rows
    seen = []
    _compare_training_step(model, _aot_lowered(model, None, seen), x)
    dynamo_graph, forward, backward_graph = seen
    marks = [entry for node in dynamo_graph.graph.nodes for entry in node.meta.get("randfx", [])
             if entry["pass"] == "backend_inline_generation"]
    assert len(marks) == 2 and all(entry["rows"] == 64 for entry in marks)
    for graph in (forward, backward_graph):
        assert not backend.randfx_op_names(graph.graph)
        assert any("triton_kernel_wrapper" in str(target) for target in _targets(graph))
    torch._dynamo.reset()
    _compare_training_step(model, torch.compile(model, backend="randfx", fullgraph=True), x)


class _ConvAttention(nn.Module):
    """A conv, then a batch_first MultiheadAttention over its pixels: MHA transposes its
    input before the in-projection, and reads its projections' weights itself."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        tokens = self.conv(x).flatten(2).transpose(1, 2)
        mixed, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return self.head(mixed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheme", ["frozen", "random_base_lora"])
def test_conv_and_attention_layers_compile_and_match_eager(device, scheme):
    """Seeded conv and attention weights through the backend's passes: the values and
    gradients of eager (128 rows: materialised). On CUDA every generation is a traced
    Triton launch: the aten graphs call no randfx op."""
    model = randfx.transform(_ConvAttention(), randfx.Config(scheme=scheme, rank=2, seed=7))
    model = model.to(device)
    x = torch.randn(2, 3, 8, 8, device=device)
    seen = []
    _compare_training_step(model, _aot_lowered(model, None, seen), x)
    if device == "cpu":  # the ops stay, the conv's and attention's generations among them
        assert "randfx::generate_weight" in backend.randfx_op_names(seen[0].graph)
    else:
        for graph in seen[1:]:
            assert not backend.randfx_op_names(graph.graph)
        torch._dynamo.reset()
        _compare_training_step(model, torch.compile(model, backend="randfx", fullgraph=True),
                               x)


def test_compile_modes_reach_inductor_config(monkeypatch):
    """torch.compile(..., backend="randfx", mode=...) applies Inductor's settings for
    that mode (reduce-overhead: CUDA graphs, which CPU tensors skip), and an unknown mode
    names the known ones."""
    import torch._inductor.compile_fx as compile_fx_module
    original, patches = compile_fx_module.compile_fx, []

    def spy(*args, **kwargs):
        patches.append(kwargs.get("config_patches"))
        return original(*args, **kwargs)
    monkeypatch.setattr(compile_fx_module, "compile_fx", spy)
    model = _lora_mlp("cpu")
    x = torch.randn(2, 16)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="randfx", mode="reduce-overhead")
    torch.testing.assert_close(compiled(x), model(x))
    assert {"triton.cudagraphs": True} in patches
    torch._dynamo.reset()
    with pytest.raises(Exception, match="mode='bogus' is not one of Inductor's modes: "
                                        ".*reduce-overhead"):
        torch.compile(model, backend="randfx", mode="bogus")(x)


def test_options_reach_inductor_config():
    model = _lora_mlp("cpu")
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="randfx", options={"no_such_setting": 1})
    with pytest.raises(Exception, match="no_such_setting does not exist"):
        compiled(torch.randn(2, 16))
