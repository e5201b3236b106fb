"""The randfx ops on their CPU reference kernels: values against explicitly materialised
weights built from `randfx.generators.generate` (the stream definition), opcheck (schema,
fake kernels, autograd registration, aot dispatch), float64 gradcheck, bad input, and
non-contiguous inputs. The Triton kernels are checked against these in test_ops_triton.py.
"""

import pytest
import torch

import randfx.ops as ops
from randfx.generators import DEFAULT_DISTRIBUTION, generate

KEY = 0x1234ABCD
F64 = torch.float64


def key_tensor(value=KEY):
    return torch.tensor(value, dtype=torch.int64)


def dense(shape, key=KEY, scale=1.0, generator="pcg", dist=DEFAULT_DISTRIBUTION, offset=0):
    """The weight the ops must behave as if they had: stream values times scale (fp64)."""
    return generate(shape, key=key, generator=generator, dist=dist, offset=offset).double() * scale


def basis(numel, d, key=KEY, offset=0, generator="pcg", dist=DEFAULT_DISTRIBUTION):
    """P[j, k] = stream value at counter offset + j*d + k."""
    return dense((numel, d), key=key, generator=generator, dist=dist, offset=offset)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("generator", ["pcg", "squirrel5"])
@pytest.mark.parametrize("dist", ["uniform", "rademacher", "uniform8x4", "rademacher32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_generate_weight_is_the_scaled_stream(generator, dist, dtype):
    shape = (6, 3, 5)
    w = ops.generate_weight(key_tensor(), shape, 0.25, generator, dist, dtype)
    expected = (generate(shape, key=KEY, generator=generator, dist=dist) * 0.25).to(dtype)
    if dtype == F64:
        expected = generate(shape, key=KEY, generator=generator, dist=dist).double() * 0.25
    assert w.dtype == dtype and w.shape == shape
    assert torch.equal(w, expected)


def test_generate_weight_chunks_agree_with_one_piece(monkeypatch):
    from randfx.ops import reference
    whole = ops.generate_weight(key_tensor(), (37, 11), 1.0)
    monkeypatch.setattr(reference, "CHUNK_ELEMENTS", 50)
    assert torch.equal(ops.generate_weight(key_tensor(), (37, 11), 1.0), whole)


@pytest.mark.parametrize("dist", ["uniform", "uniform8x4"])
def test_seeded_linear_is_x_times_scaled_stream(dist):
    x = torch.randn(2, 3, 7, dtype=F64)
    bias = torch.randn(5, dtype=F64)
    y = ops.seeded_linear(x, key_tensor(), 5, 0.3, bias, "pcg", dist)
    assert torch.allclose(y, x @ dense((5, 7), scale=0.3, dist=dist).T + bias)


def test_seeded_linear_bf16_accumulates_in_fp32():
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    y = ops.seeded_linear(x, key_tensor(), 9, 0.1)
    ref = x.double() @ dense((9, 64), scale=0.1).T
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.double(), ref, rtol=1e-2, atol=1e-2)


def test_seeded_lora_linear_is_dense_with_adapter():
    x = torch.randn(3, 8, dtype=F64)
    a, b, bias = torch.randn(2, 8, dtype=F64), torch.randn(6, 2, dtype=F64), torch.randn(6, dtype=F64)
    y = ops.seeded_lora_linear(x, key_tensor(), a, b, 0.5, 1.5, bias)
    w = dense((6, 8), scale=0.5) + 1.5 * b @ a
    assert torch.allclose(y, x @ w.T + bias)



def test_lora_adapter_grads_of_bf16_activations_are_fp32_and_close():
    """bf16 x and grad_y with fp32 adapters (autocast's regime): the adapter gradients
    come out in the adapters' dtype, computed in bf16 with fp32 accumulation, within bf16
    rounding of the float64 gradients."""
    torch.manual_seed(0)
    x = torch.randn(64, 32).bfloat16()
    a = torch.randn(4, 32, requires_grad=True)
    b = torch.randn(16, 4, requires_grad=True)
    grad_y = torch.randn(64, 16).bfloat16()
    ops.seeded_lora_linear(x, key_tensor(), a, b, 0.5, 1.5, None).backward(grad_y)
    g, z = grad_y.double(), x.double()
    want_a = 1.5 * (g @ b.detach().double()).T @ z
    want_b = 1.5 * g.T @ (z @ a.detach().double().T)
    assert a.grad.dtype == b.grad.dtype == torch.float32
    for got, want in ((a.grad, want_a), (b.grad, want_b)):
        assert (got.double() - want).abs().max() <= 2e-2 * want.abs().max()

def test_subspace_weight_is_basis_times_alpha():
    alpha = torch.randn(5, dtype=F64)
    out = ops.subspace_weight(alpha, key_tensor(), 13, 7, 0.2)
    assert torch.allclose(out, 0.2 * basis(13, 5, offset=7) @ alpha)


def test_subspace_weight_slices_of_a_global_alpha_tile_the_whole():
    """PRANC: one alpha over the concatenated parameters; a layer starting at position
    `start` uses basis_offset = start * d and gets exactly its slice of the whole."""
    alpha = torch.randn(4, dtype=F64)
    whole = ops.subspace_weight(alpha, key_tensor(), 30, 0, 1.0)
    first = ops.subspace_weight(alpha, key_tensor(), 12, 0, 1.0)
    second = ops.subspace_weight(alpha, key_tensor(), 18, 12 * 4, 1.0)
    assert torch.equal(torch.cat([first, second]), whole)


def test_subspace_weight_counters_pass_2_to_the_32():
    alpha = torch.randn(3, dtype=F64)
    offset = (1 << 32) - 4  # the basis straddles the 2^32 boundary
    out = ops.subspace_weight(alpha, key_tensor(), 5, offset, 1.0)
    assert torch.allclose(out, basis(5, 3, offset=offset) @ alpha)
    plain = ops.subspace_weight(alpha, key_tensor(), 5, offset + (1 << 32), 1.0)
    assert not torch.allclose(plain, out)  # the high word selects another stream


def test_subspace_linear_is_base_plus_reshaped_pmv():
    x, alpha, bias = torch.randn(2, 4, dtype=F64), torch.randn(3, dtype=F64), torch.randn(6, dtype=F64)
    y = ops.subspace_linear(x, key_tensor(1), 0.5, alpha, key_tensor(2), 9, 0.1, 6, bias,
                            "squirrel5", "uniform", "rademacher")
    w = dense((6, 4), key=1, scale=0.5, generator="squirrel5", dist="uniform") \
        + 0.1 * (basis(24, 3, key=2, offset=9, generator="squirrel5", dist="rademacher")
                 @ alpha).view(6, 4)
    assert torch.allclose(y, x @ w.T + bias)


def test_non_contiguous_inputs_give_the_same_result():
    x = torch.randn(7, 10, dtype=F64)[:, ::2]  # stride 2 in the feature dimension
    a = torch.randn(5, 3, dtype=F64).T  # [3, 5], transposed storage
    b = torch.randn(4, 3, dtype=F64)
    assert not x.is_contiguous() and not a.is_contiguous()
    key = key_tensor()
    assert torch.allclose(ops.seeded_linear(x, key, 4, 1.0), ops.seeded_linear(x.contiguous(), key, 4, 1.0))
    assert torch.allclose(ops.seeded_lora_linear(x, key, a, b, 1.0, 2.0),
                          ops.seeded_lora_linear(x.contiguous(), key, a.contiguous(), b, 1.0, 2.0))
    alpha = torch.randn(6, dtype=F64)[::2]
    assert torch.allclose(ops.subspace_weight(alpha, key, 9), ops.subspace_weight(alpha.contiguous(), key, 9))


# ---------------------------------------------------------------- opcheck and gradcheck


def _op_cases():
    key, key2 = key_tensor(), key_tensor(77)
    x = torch.randn(3, 6, dtype=F64, requires_grad=True)
    bias = torch.randn(4, dtype=F64, requires_grad=True)
    a = torch.randn(2, 6, dtype=F64, requires_grad=True)
    b = torch.randn(4, 2, dtype=F64, requires_grad=True)
    alpha = torch.randn(5, dtype=F64, requires_grad=True)
    g = torch.randn(24, dtype=F64, requires_grad=True)
    u = torch.randn(3, 2, dtype=F64, requires_grad=True)
    v = torch.randn(4, 2, dtype=F64, requires_grad=True)
    return {
        "generate_weight": (key, [4, 6], 0.5, "pcg", "uniform", torch.float32),
        "seeded_linear": (x, key, 4, 0.5, bias, "pcg", "uniform"),
        "seeded_matmul": (x, key, 4, 6, 0.5, False, bias, u, v, "squirrel5", "uniform8x4"),
        "seeded_matmul_t": (torch.randn(3, 4, dtype=F64, requires_grad=True), key, 4, 6, 0.5,
                            True, None, None, None, "pcg", "rademacher"),
        "seeded_lora_linear": (x, key, a, b, 0.5, 2.0, bias, "pcg", "uniform"),
        # an op of the backward, differentiable for double backward
        "seeded_lora_grad_input": (torch.randn(3, 4, dtype=F64, requires_grad=True), key, 0.5,
                                   a, b, 2.0, "pcg", "rademacher32"),
        "subspace_weight": (alpha, key, 24, 3, 0.2, "pcg", "uniform"),
        "subspace_weight_backward": (g, key, 5, 3, 0.2, "pcg", "uniform"),
        "subspace_linear_weight": (key, 0.5, alpha, key2, 3, 0.2, 4, 6, "pcg", "uniform",
                                   "uniform", F64),
        "subspace_linear": (x, key, 0.5, alpha, key2, 3, 0.2, 4, bias, "pcg", "uniform",
                            "rademacher"),
    }


CASES = _op_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_opcheck(name):
    op = getattr(torch.ops.randfx, name.removesuffix("_t"))
    torch.library.opcheck(op, CASES[name])


def _differentiable(args):
    """Positions of the arguments that require grad."""
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]


def _gradcheck(call, args):
    """float64 gradcheck of call(*args) with respect to its arguments that require grad."""
    where = _differentiable(args)

    def f(*tensors):
        full = list(args)
        for i, t in zip(where, tensors):
            full[i] = t
        return call(*full)

    return torch.autograd.gradcheck(f, tuple(args[i] for i in where))


@pytest.mark.parametrize("name", sorted(n for n in CASES if n != "generate_weight"))
def test_gradcheck_float64(name):
    assert _gradcheck(getattr(torch.ops.randfx, name.removesuffix("_t")), CASES[name])


TWINNED = ("generate_weight", "seeded_linear", "seeded_lora_linear", "subspace_weight",
           "subspace_linear")


@pytest.mark.parametrize("name", TWINNED)
def test_eager_twin_equals_the_op(name):
    """Eagerly randfx.ops runs each op's autograd.Function twin (no dispatcher round trip):
    same values and float64 gradients as the op, and gradcheck passes through it."""
    from randfx.ops import library
    twin, op, args = getattr(library, name), getattr(torch.ops.randfx, name), CASES[name]
    if name == "subspace_weight":  # twins take every argument, defaults included
        args = args + (None,)
    got, want = twin(*args), op(*args)
    assert torch.equal(got, want)
    inputs = [args[i] for i in _differentiable(args)]
    if not inputs:  # generate_weight: no autograd, the body alone
        assert got.grad_fn is None
        return
    assert type(got.grad_fn).__name__ == f"{name}_eagerBackward"
    grads = torch.autograd.grad(got.square().sum(), inputs)
    expected = torch.autograd.grad(want.square().sum(), inputs)
    for g, e in zip(grads, expected):
        assert torch.allclose(g, e)
    assert _gradcheck(twin, args)


def test_traced_calls_take_the_op():
    """Under a dispatch mode (FakeTensorMode here; make_fx, export) and while torch.compile
    traces, randfx.ops calls the custom op, whose fake kernel gives the shape."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from randfx.ops import eager
    x = torch.randn(3, 6)
    assert eager.plain_eager((x, key_tensor()))
    with FakeTensorMode() as mode:
        fake_x = mode.from_tensor(x)
        assert not eager.plain_eager((fake_x,))
        y = ops.seeded_linear(fake_x, mode.from_tensor(key_tensor()), 4, 0.5)
    assert y.shape == (3, 4) and type(y).__name__ == "FakeTensor"
    seen = []

    def backend(gm, example_inputs):
        seen.extend(node.target for node in gm.graph.nodes if node.op == "call_function")
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(lambda t: ops.seeded_linear(t, key_tensor(), 4, 0.5),
                             backend=backend)
    assert torch.equal(compiled(x), ops.seeded_linear(x, key_tensor(), 4, 0.5))
    assert torch.ops.randfx.seeded_linear in seen


def test_seeded_linear_backward_matches_dense_autograd():
    x = torch.randn(3, 6, dtype=F64, requires_grad=True)
    a = torch.randn(2, 6, dtype=F64, requires_grad=True)
    b = torch.randn(4, 2, dtype=F64, requires_grad=True)
    ops.seeded_lora_linear(x, key_tensor(), a, b, 0.5, 2.0).square().sum().backward()
    grads = [t.grad.clone() for t in (x, a, b)]
    for t in (x, a, b):
        t.grad = None
    w = dense((4, 6), scale=0.5) + 2.0 * b @ a
    (x @ w.T).square().sum().backward()
    for got, t in zip(grads, (x, a, b)):
        assert torch.allclose(got, t.grad)


def test_lora_double_backward():
    """Second derivatives through a LoRA layer (gradient penalties, meta-learning): its
    backward's ops are differentiable."""
    x, a, b = (torch.randn(*shape, dtype=F64, requires_grad=True)
               for shape in ((3, 6), (2, 6), (4, 2)))

    def layer(x, a, b):
        return ops.seeded_lora_linear(x, key_tensor(), a, b, 0.5, 2.0)

    assert torch.autograd.gradgradcheck(layer, (x, a, b))


def test_lora_grad_input_is_grad_y_times_the_adapted_weight():
    g = torch.randn(2, 3, 4, dtype=F64)
    a, b = torch.randn(2, 6, dtype=F64), torch.randn(4, 2, dtype=F64)
    got = torch.ops.randfx.seeded_lora_grad_input(g, key_tensor(), 0.5, a, b, 2.0, "pcg",
                                                  DEFAULT_DISTRIBUTION)
    w = dense((4, 6), scale=0.5) + 2.0 * b @ a
    assert got.shape == (2, 3, 6) and torch.allclose(got, g @ w)


def test_generate_weight_under_fake_tensors_and_compile_tracing():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(8, 16, dtype=torch.bfloat16)
        y = ops.seeded_linear(x, torch.tensor(1), 32, 1.0)
        assert y.shape == (8, 32) and y.dtype == torch.bfloat16
        w = ops.subspace_weight(torch.empty(10), torch.tensor(1), 3 * 3 * 4 * 2)
        assert w.shape == (72,)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, words", [
    (lambda: ops.seeded_linear(torch.randn(2, 5), torch.tensor(1.0), 3, 1.0), ["seeded_linear", "key", "int64"]),
    (lambda: ops.seeded_linear(torch.randn(2, 5), torch.tensor([1, 2]), 3, 1.0), ["seeded_linear", "key", "one value"]),
    (lambda: ops.seeded_linear(torch.randn(2, 5), torch.tensor(-1), 3, 1.0), ["seeded_linear", "key", "2^32"]),
    (lambda: ops.seeded_linear(torch.randn(2, 5), torch.tensor(1), 3, 1.0, torch.randn(4)), ["seeded_linear", "bias", "(3,)"]),
    (lambda: ops.seeded_linear(torch.randint(0, 3, (2, 5)), torch.tensor(1), 3, 1.0), ["seeded_linear", "x", "dtype"]),
    (lambda: ops.seeded_linear(torch.randn(2, 5), torch.tensor(1), 0, 1.0), ["seeded_linear", "out_features"]),
    (lambda: ops.seeded_linear(torch.randn(2, 5), torch.tensor(1), 3, 1.0, None, "mt19937"), ["seeded_linear", "generator"]),
    (lambda: ops.seeded_lora_linear(torch.randn(2, 5), torch.tensor(1), torch.randn(2, 4), torch.randn(3, 2), 1.0, 1.0), ["seeded_lora_linear", "lora_A", "(2, 5)"]),
    (lambda: ops.seeded_lora_linear(torch.randn(2, 5), torch.tensor(1), torch.randn(2, 5), torch.randn(3, 4), 1.0, 1.0), ["seeded_lora_linear", "lora_B", "(3, 2)"]),
    (lambda: torch.ops.randfx.seeded_lora_grad_input(torch.randn(2, 5), torch.tensor(1), 1.0, torch.randn(2, 4), torch.randn(3, 2), 1.0, "pcg", "uniform"), ["seeded_lora_grad_input", "lora_B", "(5, 2)"]),
    (lambda: ops.subspace_weight(torch.randn(2, 2), torch.tensor(1), 5), ["subspace_weight", "alpha", "1-D"]),
    (lambda: ops.subspace_weight(torch.randn(4), torch.tensor(1), 5, -1), ["subspace_weight", "basis_offset"]),
    (lambda: ops.subspace_weight(torch.randn(4), torch.tensor(1), 0), ["subspace_weight", "numel"]),
    (lambda: ops.subspace_linear(torch.randn(2, 5), torch.tensor(1), 1.0, torch.randn(3), torch.tensor(1.5), 0, 1.0, 4), ["subspace_linear", "basis_key"]),
    (lambda: ops.subspace_linear(torch.randn(2, 5), torch.tensor(1), 1.0, torch.randn(3), torch.tensor(2), 0, 1.0, 4, None, "pcg", "gauss"), ["subspace_linear", "base_dist"]),
    (lambda: ops.generate_weight(torch.tensor(1), (2, 3), 1.0, dtype=torch.int32), ["generate_weight", "dtype"]),
    # a device mismatch, shown with the meta device (the fake kernel runs the same checks)
    (lambda: ops.seeded_linear(torch.randn(2, 5, device="meta"), torch.tensor(1), 3, 1.0), ["seeded_linear", "key", "meta"]),
    (lambda: ops.seeded_linear(torch.randn(2, 5), torch.tensor(1), 3, 1.0, torch.randn(3, device="meta")), ["seeded_linear", "bias", "meta"]),
])
def test_bad_input_names_op_and_argument(call, words):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
