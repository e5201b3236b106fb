"""The sparse_backward pass through randfx.transform: gradients equal the dense backward
with every layer's output gradient masked to the walked rows (float64), for every scheme,
on MLP, residual/attention, conv and Hugging Face GPT-2 models; many paths give dense
backprop; unreachable layers are reported and keep a dense backward; bad input errors."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import randfx
from randfx.modules import SeededLayer, SeededLoRA
from randfx.passes.sparse_backward import strip_sparse_backward


def _mlp(sizes=(10, 16, 12, 5), seed=0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).double()


class Block(nn.Module):
    """Pre-norm transformer block: attention (q, k, v, o) and an MLP, both residual."""

    def __init__(self, d=8, heads=2):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = (p(h).view(b, t, self.heads, -1).transpose(1, 2)
                   for p in (self.q, self.k, self.v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(att.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class TinyTransformer(nn.Module):
    def __init__(self, d=8, vocab=11):
        super().__init__()
        self.inp = nn.Linear(6, d)
        self.blocks = nn.Sequential(Block(d), Block(d))
        self.head = nn.Linear(d, vocab)

    def forward(self, x):
        return self.head(self.blocks(self.inp(x)))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 4, 3, stride=2, padding=1, groups=2)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).flatten(1))


def _masked_reference(transformed, x):
    """(loss gradients) of a pass-free copy of `transformed` with each layer's output
    gradient masked to the rows of the transformed model's last draw."""
    plan = transformed.randfx_sparse_backward
    reference = strip_sparse_backward(copy.deepcopy(transformed))
    modules = dict(reference.named_modules())
    for name, rows in plan.last_sample.rows.items():
        out = plan.layers[name].module
        mask = torch.zeros(plan.sampler.layers[name].out_features, dtype=torch.float64,
                           device=rows.device)
        mask[rows[rows >= 0]] = 1.0
        channel_dim = 1 if isinstance(out, nn.Conv2d) or getattr(out, "kind", None) and \
            out.kind.name.startswith("conv") else -1

        def hook(module, inputs, output, mask=mask, channel_dim=channel_dim):
            shape = [1] * output.dim()
            shape[channel_dim] = -1
            output.register_hook(lambda g: g * mask.view(shape).to(g.dtype))
        modules[name].register_forward_hook(hook)
    reference.train()
    _loss(reference, x).backward()
    return {n: p.grad for n, p in reference.named_parameters()}


def _loss(model, x):
    y = model(x)
    y = y.logits if hasattr(y, "logits") else y
    return (y * torch.linspace(0.5, 1.5, y.shape[-1], dtype=y.dtype, device=y.device)).sum()


def _sparse_grads(model, x):
    model.train()
    _loss(model, x).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def _assert_grads_equal(got, want, tol=1e-10):
    assert got.keys() == want.keys()
    for name in got:
        if want[name] is None:
            assert got[name] is None or not got[name].any(), name
            continue
        torch.testing.assert_close(got[name], want[name], rtol=tol * 10, atol=tol, msg=name)


SCHEME_OPTIONS = {"random_base_lora": {"rank": 2}, "subspace": {"dim": 5},
                  "subspace-global": {"dim": 7, "scope": "global"}}


def _transform(model, x, scheme="dense", paths=4, **kwargs):
    extra = SCHEME_OPTIONS.get(scheme, {})
    config = randfx.Config(scheme=scheme.split("-")[0], seed=3, **extra,
                           sparse_backward=randfx.SparseBackward(num_paths=paths, **kwargs))
    return randfx.transform(model, config, x)


@pytest.mark.parametrize("scheme", ["dense", "frozen", "random_base_lora", "subspace",
                                    "subspace-global"])
def test_mlp_grads_equal_masked_dense_backward(scheme):
    model, x = _mlp(), torch.randn(7, 10, dtype=torch.float64)
    before = copy.deepcopy(model.state_dict())
    t = _transform(model, x, scheme, temperature=0.5, epsilon=0.1)
    with torch.no_grad():  # adapters and alpha start at 0: give them values to check
        for p in t.parameters():
            p.normal_()
    with torch.no_grad():
        dense_out = strip_sparse_backward(copy.deepcopy(t))(x)
    t.train()
    torch.testing.assert_close(t(x), dense_out, rtol=1e-12, atol=1e-12)  # forward is dense
    got = _sparse_grads(t, x)
    _assert_grads_equal(got, _masked_reference(t, x))
    rows = t.randfx_sparse_backward.last_sample.rows
    assert all((r >= 0).sum() <= 4 for r in rows.values())
    for name, value in before.items():  # the caller's model is untouched
        assert torch.equal(model.state_dict()[name], value)


def _all_rows_reference(transformed, x):
    """propagate="all_rows" by hand on a pass-free copy: each layer's output gradient is
    masked to the drawn rows for its own tensors, and the rest of the gradient (outside
    the rows) reaches the layer's input, and a LoRA layer's lora_A, through a term that
    adds zero to the output: rest - rest.detach(), rest = x @ W^T with the row-indexed
    tensors (weight, lora_B, the subspace delta) detached."""
    plan = transformed.randfx_sparse_backward
    reference = strip_sparse_backward(copy.deepcopy(transformed))
    modules = dict(reference.named_modules())
    for name, rows in plan.last_sample.rows.items():
        mask = torch.zeros(plan.sampler.layers[name].out_features, device=rows.device)
        mask[rows[rows >= 0]] = 1.0

        def hook(module, inputs, output, mask=mask):
            mask = mask.to(output.dtype)
            if isinstance(module, SeededLoRA):
                delta = module.lora_B.detach() @ module.lora_A * module.lora_scaling
                weight = module.base_weight(output.dtype) + delta.view(module.weight_shape)
            elif isinstance(module, SeededLayer):
                weight = module.dense_weight().detach()
            else:
                weight = module.weight.detach()
            output.register_hook(lambda g: g * mask)
            rest = F.linear(inputs[0], weight)
            if not rest.requires_grad:  # the first layer of a frozen scheme
                return output
            rest = rest - rest.detach()
            rest.register_hook(lambda g: g * (1 - mask))
            return output + rest
        modules[name].register_forward_hook(hook)
    reference.train()
    _loss(reference, x).backward()
    return {n: p.grad for n, p in reference.named_parameters()}


@pytest.mark.parametrize("scheme", ["dense", "frozen", "random_base_lora", "subspace",
                                    "subspace-global"])
def test_all_rows_masks_each_layers_own_gradients_and_propagates_densely(scheme):
    model, x = _mlp(), torch.randn(7, 10, dtype=torch.float64)
    t = _transform(model, x, scheme, temperature=0.5, epsilon=0.1, propagate="all_rows")
    with torch.no_grad():
        for p in t.parameters():
            p.normal_()
    got = _sparse_grads(t, x)
    _assert_grads_equal(got, _all_rows_reference(t, x))
    # the same draw under contract 6's "kept_rows" gives the lower layers less gradient
    kept_rows = _masked_reference(t, x)
    assert any(not torch.allclose(got[n], kept_rows[n]) for n in got if got[n] is not None)


def test_state_dict_is_emits_and_eval_is_dense():
    model, x = _mlp(), torch.randn(3, 10, dtype=torch.float64)
    t = _transform(model, x)
    assert list(t.state_dict()) == list(model.state_dict())
    t.eval()
    t.randfx_sparse_backward.last_sample = None
    _loss(t, x).backward()  # eval: no walks, dense backward
    assert t.randfx_sparse_backward.last_sample is None
    _loss(model, x).backward()
    _assert_grads_equal({n: p.grad for n, p in t.named_parameters()},
                        {n: p.grad for n, p in model.named_parameters()})


def test_very_many_paths_give_dense_backprop():
    model, x = _mlp(), torch.randn(6, 10, dtype=torch.float64)
    t = _transform(model, x, paths=3000)
    got = _sparse_grads(t, x)
    assert all((r >= 0).all() for r in t.randfx_sparse_backward.last_sample.rows.values())
    model.zero_grad()
    _loss(model, x).backward()
    _assert_grads_equal(got, {n: p.grad for n, p in model.named_parameters()})


def test_walks_are_redrawn_every_training_step():
    model, x = _mlp((10, 64, 64, 5)), torch.randn(4, 10, dtype=torch.float64)
    t = _transform(model, x, paths=3)
    draws = []
    for _ in range(3):
        _loss(t, x).backward()
        draws.append(t.randfx_sparse_backward.last_sample.rows["2"].clone())
    assert not (torch.equal(draws[0], draws[1]) and torch.equal(draws[1], draws[2]))


@pytest.mark.parametrize("scheme", ["dense", "random_base_lora"])
def test_residual_attention_model(scheme):
    torch.manual_seed(1)
    model, x = TinyTransformer().double(), torch.randn(2, 5, 6, dtype=torch.float64)
    t = _transform(model, x, scheme, paths=6)
    plan = t.randfx_sparse_backward
    assert plan.outputs == ["head"] and plan.unreachable == []
    assert set(plan.layers) == {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if scheme == "random_base_lora":
        with torch.no_grad():
            for n, p in t.named_parameters():
                if "lora_B" in n:
                    p.normal_()
    _assert_grads_equal(_sparse_grads(t, x), _masked_reference(t, x))
    # over a few draws every layer gets some rows: walks cross the skips and q, k, v
    reached = set()
    for _ in range(12):
        _loss(t, x).backward()
        reached |= {n for n, v in plan.last_sample.visits.items() if v.any()}
    assert reached == set(plan.layers)


@pytest.mark.parametrize("scheme", ["dense", "frozen"])
def test_conv_model(scheme):
    torch.manual_seed(2)
    model, x = ConvNet().double(), torch.randn(2, 3, 6, 6, dtype=torch.float64)
    t = _transform(model, x, scheme, paths=3)
    assert set(t.randfx_sparse_backward.layers) == {"c1", "c2", "fc"}
    _assert_grads_equal(_sparse_grads(t, x), _masked_reference(t, x))



@pytest.mark.parametrize("scheme", ["dense", "random_base_lora"])
def test_autocast_runs_row_sparse_layers_in_its_dtype(scheme):
    """Under torch.autocast the row-sparse layers compute in the autocast dtype, as the
    F.linear / F.conv2d they stand for do; parameters keep float32 gradients."""
    torch.manual_seed(2)
    model, x = ConvNet(), torch.randn(2, 3, 6, 6)
    t = _transform(model, x, scheme, paths=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, plain = t(x), model(x)
    assert out.dtype == plain.dtype == torch.bfloat16
    if scheme == "dense":  # same weights, so the same forward
        torch.testing.assert_close(out, plain)
    out.float().sum().backward()
    grads = [p.grad for p in t.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)

def test_unreachable_layers_are_reported_and_stay_dense():
    class Gated(nn.Module):  # a Bilinear layer has no row-sparse rule
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.mix = nn.Bilinear(6, 6, 5)
            self.out = nn.Linear(5, 3)

        def forward(self, x):
            h = self.a(x)
            return self.out(self.mix(h, h))

    torch.manual_seed(3)
    model, x = Gated().double(), torch.randn(5, 4, dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"no walk can reach \['a'\]"):
        t = _transform(model, x, paths=1)
    assert t.randfx_sparse_backward.unreachable == ["a"]
    assert set(t.randfx_sparse_backward.layers) == {"out"}
    grads = _sparse_grads(t, x)
    assert grads["a.weight"].abs().sum(1).gt(0).all()  # dense: every row
    assert grads["out.weight"].abs().sum(1).gt(0).sum() == 1  # one walk, one row


def test_no_eligible_layer_is_refused():
    """A seeded embedding is rewritten but has no row-sparse rule (its rows are tokens)."""
    model = nn.Sequential(nn.Embedding(10, 4))
    config = randfx.Config(scheme="frozen", target_modules=("0",),
                           sparse_backward=randfx.SparseBackward(num_paths=2))
    with pytest.raises(ValueError, match="no eligible layer"):
        randfx.transform(model, config, torch.randint(0, 10, (2, 3)))


@pytest.mark.parametrize("kwargs,match", [({"num_paths": 0}, "num_paths"),
                                          ({"num_paths": 3, "temperature": 0}, "temperature"),
                                          ({"num_paths": 3, "epsilon": 2}, "epsilon"),
                                          ({"num_paths": 3, "propagate": "some"},
                                           "propagate")])
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        randfx.SparseBackward(**kwargs)


def test_hf_gpt2_trains_with_sparse_backward():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=50,
                                     n_positions=16)
    torch.manual_seed(4)
    model = transformers.GPT2LMHeadModel(config).double()
    ids = torch.randint(0, 50, (2, 8))
    t = _transform(model, {"input_ids": ids}, paths=8)
    plan = t.randfx_sparse_backward
    assert "lm_head" in plan.outputs
    assert {"transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_proj"} <= set(plan.layers)
    t.train()
    loss = t(input_ids=ids, labels=ids).loss
    loss.backward()
    c_fc = t.transformer.h[1].mlp.c_fc.weight.grad  # Conv1D: (in, out), rows are columns
    kept = plan.last_sample.rows["transformer.h.1.mlp.c_fc"]
    outside = torch.ones(c_fc.shape[1], dtype=torch.bool)
    outside[kept[kept >= 0]] = False
    assert not c_fc[:, outside].any()


@pytest.mark.cuda
@pytest.mark.parametrize("propagate", ["kept_rows", "all_rows"])
@pytest.mark.parametrize("scheme", ["dense", "frozen", "random_base_lora"])
def test_cuda_pass_equals_masked_dense_backward(scheme, propagate):
    """The same checks on the GPU: Triton backward kernels, sampler on the device."""
    model, x = _mlp((64, 96, 80, 10)).float(), torch.randn(33, 64)
    t = _transform(model, x, scheme, paths=20, temperature=0.7, propagate=propagate).cuda()
    if scheme == "random_base_lora":
        with torch.no_grad():
            for n, p in t.named_parameters():
                if "lora_B" in n:
                    p.normal_()
    x = x.cuda()
    got = _sparse_grads(t, x)
    assert all(r.is_cuda for r in t.randfx_sparse_backward.last_sample.rows.values())
    reference = _masked_reference if propagate == "kept_rows" else _all_rows_reference
    _assert_grads_equal(got, reference(t, x), tol=1e-4)


@pytest.mark.cuda
def test_cuda_graphed_draws_equal_eager_draws_and_follow_the_weights():
    """On a GPU resample() replays the draw as a CUDA graph: each step's walks equal an
    eager draw of that step, in-place weight updates are seen, a moved weight is
    recaptured, an earlier draw is not overwritten by the next, and copies work."""
    model, x = _mlp((64, 96, 80, 10)).float(), torch.randn(33, 64)
    t = _transform(model, x, "random_base_lora", paths=20).cuda()
    plan = t.randfx_sparse_backward

    def check_draw():
        step = plan.step.item()
        expected = plan.sampler.sample(torch.tensor(step, device="cuda"))
        got = plan.resample()
        assert plan.step.item() == step + 1
        for part in ("rows", "visits"):
            for name, value in getattr(expected, part).items():
                assert torch.equal(getattr(got, part)[name], value), (part, name, step)
        return got

    first = check_draw()
    kept = {n: r.clone() for n, r in first.rows.items()}
    check_draw()
    assert all(torch.equal(first.rows[n], kept[n]) for n in kept)  # not overwritten
    with torch.no_grad():  # in place, as an optimizer step: the graph reads new values
        t[4].lora_B.normal_()
        t[4].lora_A.normal_()
    assert plan.graphed.graph is not None
    graph = plan.graphed.graph
    check_draw()
    assert plan.graphed.graph is graph
    t[2].lora_A.data = t[2].lora_A.data.clone() * 3  # moved: captured again
    check_draw()
    assert plan.graphed.graph is not graph
    twin = copy.deepcopy(t)
    _loss(twin, x.cuda()).backward()
    assert twin.randfx_sparse_backward.graphed.graph is not None


@pytest.mark.cuda
def test_cuda_failed_capture_warns_and_draws_eagerly(monkeypatch):
    model, x = _mlp((64, 96, 80, 10)).float(), torch.randn(33, 64)
    t = _transform(model, x, paths=20).cuda()
    plan = t.randfx_sparse_backward
    sample = plan.sampler.sample

    def refuses_capture(step):
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError("operation not permitted when stream is capturing")
        return sample(step)
    monkeypatch.setattr(plan.sampler, "sample", refuses_capture)
    with pytest.warns(RuntimeWarning, match="drawing them eagerly"):
        first = plan.resample()
    second = plan.resample()  # no second attempt, no second warning
    assert plan.graphed.eager and plan.step.item() == 2
    for step, drawn in ((0, first), (1, second)):
        expected = sample(torch.tensor(step, device="cuda"))
        assert all(torch.equal(drawn.rows[n], r) for n, r in expected.rows.items())


def test_a_deep_copy_walks_on_its_own_weights():
    model, x = _mlp(), torch.randn(4, 10, dtype=torch.float64)
    t = _transform(model, x, paths=200)
    twin = copy.deepcopy(t)
    with torch.no_grad():
        twin[4].weight.zero_()
        twin[4].weight[:, 3] = 1.0  # the twin's output layer only reads feature 3
    _loss(twin, x).backward()
    rows = twin.randfx_sparse_backward.last_sample.rows["2"]
    assert rows.tolist() == [3] + [-1] * (len(rows) - 1)
    assert twin[2].weight.grad.abs().sum(1).nonzero().flatten().tolist() == [3]
    _loss(t, x).backward()  # the original still walks on its own weights
    assert (t.randfx_sparse_backward.last_sample.rows["2"] >= 0).sum() > 1


def _assert_compiled_step_matches(eager, twin, compiled, x):
    """One training step of `eager` and of `compiled` (torch.compile of `twin`, a deep copy
    of it): the same loss and gradients."""
    eager.zero_grad()
    twin.zero_grad()
    expected, got = _loss(eager, x), _loss(compiled, x)
    expected.backward()
    got.backward()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    _assert_grads_equal({n: p.grad for n, p in twin.named_parameters()},
                        {n: p.grad for n, p in eager.named_parameters()})


def test_compiles_fullgraph_and_matches_eager_step_for_step():
    """The walks' randomness is counter-based (key, step buffer), so the pre-hook traces:
    one graph, no break, and the compiled twin draws the same walks as eager each step."""
    from randfx.backend import randfx_op_names
    # two layers: every kernel costs Inductor a C++ compile (seconds on 2 cores)
    model, x = _mlp((10, 16, 5)), torch.randn(5, 10, dtype=torch.float64)
    t = _transform(model, x, "random_base_lora", paths=4, temperature=0.5, epsilon=0.1)
    with torch.no_grad():  # lora_B starts at 0: give the adapters gradient to check
        for p in t.parameters():
            p.normal_()
    t.train()
    twin = copy.deepcopy(t)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(copy.deepcopy(t))(x)
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0
    # the row-sparse forwards are traced (autograd functions whose bodies Inductor
    # compiles): the seeded base's fused op is inside them, not an opaque row-sparse op
    ops = {name for g in explanation.graphs for name in randfx_op_names(g.graph)}
    assert {"randfx::seeded_linear", "randfx::walk_draw"} <= ops, ops
    assert not any("row_sparse" in op for op in ops), ops
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(twin, backend="randfx", fullgraph=True)
    draws = []
    for step in (1, 2):  # the second step redraws inside the same compiled graph
        _assert_compiled_step_matches(t, twin, compiled, x)
        plan, twin_plan = t.randfx_sparse_backward, twin.randfx_sparse_backward
        assert plan.step.item() == twin_plan.step.item() == step
        rows = plan.last_sample.rows
        assert rows.keys() == twin_plan.last_sample.rows.keys()
        for name in rows:
            assert torch.equal(twin_plan.last_sample.rows[name], rows[name]), name
        assert 0 < t[0].lora_B.grad.abs().sum(1).gt(0).sum() <= 4  # the walked rows only
        draws.append({name: r.clone() for name, r in rows.items()})
    assert any(not torch.equal(draws[0][n], draws[1][n]) for n in draws[0])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_compiled_convnet_matches_eager():
    """Convolutions (one grouped) and a linear layer, traced by torch.compile with their
    row-sparse autograd functions: the same loss and gradients as eagerly, two steps."""
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    t = _transform(ConvNet().double(), x, paths=3)
    t.train()
    twin = copy.deepcopy(t)
    torch._dynamo.reset()
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    for _ in range(2):
        _assert_compiled_step_matches(t, twin, compiled, x)
    torch._dynamo.reset()


def _guard_kind(guard) -> str:
    """Guard.create_fn_name(), which torch 2.6 does not have."""
    create = guard.create_fn
    return getattr(create, "func", create).__name__


def test_compiled_step_guards_little_more_than_the_plain_model():
    from randfx.backend import randfx_op_names
    # Dynamo checks every guard again on every compiled call, and a small model's step is
    # host-bound: the sampler's Python state must stay out of them (the draw is one
    # allow_in_graph call, passes/sparse_backward.py _TracedDraw). Traced by Dynamo it
    # added ~250 guards to this MLP's ~90 (torch 2.13); kept out, 68, and 91 since the
    # row-sparse ops' bodies and backwards are traced too (identity checks of the
    # backward's helpers, in C++: seed 004's MLP's cache lookup 17-19 -> 19-20 us per
    # call, its compiled step 4-8 % faster). The walks are drawn by the root's instance
    # forward, not a forward pre-hook: hooks send Dynamo down torch.nn's hooked call path,
    # which guards every hook dict of the model (181 -> 160 on torch 2.13, 208 -> 176 on
    # 2.14, whose hooked path guards more). And no randfx module may be reached by two
    # names (`torch` read as a global of randfx modules as well as torch.nn's): each such
    # pair is an identity guard evaluated in Python
    model, x = _mlp((12, 16, 8, 4)), torch.randn(2, 12, dtype=torch.float64)
    sparse = _transform(copy.deepcopy(model), x, paths=10)
    assert not sparse._forward_pre_hooks and not sparse._forward_hooks
    guards, duplicates = {}, {}
    for name, m in (("full", model), ("sparse", sparse)):
        m.train()
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(m)(x)
        assert explanation.graph_count == 1 and explanation.graph_break_count == 0
        guards[name] = len(explanation.out_guards)
        duplicates[name] = [g.name for g in explanation.out_guards
                            if _guard_kind(g) == "DUPLICATE_INPUT"]
        if name == "sparse":  # randfx's work: the "randfx" backend must not say "nothing"
            assert randfx_op_names(explanation.graphs[0].graph) == ["randfx::walk_draw"]
    torch._dynamo.reset()
    assert guards["sparse"] <= guards["full"] + 90, guards
    assert not [n for n in duplicates["sparse"] if "randfx" in n], duplicates


class _DoublingNet(nn.Module):
    """A root whose forward is an instance attribute (a bound method), as a user may set."""

    def __init__(self):
        super().__init__()
        self.body = _mlp()
        self.forward = self.doubled

    def forward(self, x):
        return self.body(x)

    def doubled(self, x):
        return 2 * self.body(x)


def test_root_forward_draws_then_runs_the_roots_forward_and_strip_gives_it_back():
    import inspect
    import io
    x = torch.randn(3, 10, dtype=torch.float64)
    plain = _mlp()
    t = _transform(copy.deepcopy(plain), x, paths=3)
    assert inspect.signature(t.forward) == inspect.signature(plain.forward)
    buffer = io.BytesIO()
    torch.save(t, buffer)
    buffer.seek(0)
    for copied in (copy.deepcopy(t), torch.load(buffer, weights_only=False)):
        copied.train()
        _loss(copied, x).backward()  # each copy draws on its own step, for its own layers
        assert copied.randfx_sparse_backward.step.item() == 1
        assert t.randfx_sparse_backward.step.item() == 0
        assert all(p.grad is not None for p in copied.parameters())
    doubling = _transform(_DoublingNet(), x, paths=3)
    doubling.train()
    torch.testing.assert_close(doubling(x), 2 * doubling.body(x))
    assert doubling.randfx_sparse_backward.step.item() == 1
    strip_sparse_backward(doubling)
    assert doubling.forward.__func__ is _DoublingNet.doubled
    assert doubling.forward.__self__ is doubling


def test_step_counter_is_a_non_persistent_buffer_advanced_by_training_forwards():
    model, x = _mlp(), torch.randn(3, 10, dtype=torch.float64)
    t = _transform(model, x, paths=3)
    plan = t.randfx_sparse_backward
    assert plan.step.item() == 0 and plan.step.dtype == torch.int64
    assert "randfx_walk_step" in dict(t.named_buffers()) and list(t.state_dict()) == list(
        model.state_dict())
    t.train()
    _loss(t, x).backward()
    assert plan.step.item() == 1
    first = {n: r.clone() for n, r in plan.last_sample.rows.items()}
    with torch.no_grad():  # no backward to build: no draw
        t(x)
    t.eval()
    t(x)
    assert plan.step.item() == 1
    redrawn = plan.sampler.sample(0).rows  # step 0 again: the first draw, exactly
    assert all(torch.equal(redrawn[n], first[n]) for n in first)
    stripped = strip_sparse_backward(copy.deepcopy(t))
    assert "randfx_walk_step" not in dict(stripped.named_buffers())
