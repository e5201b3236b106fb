"""Row-sparse backward ops: equal (float64) to the dense backward with the gradient's
columns outside the kept rows zeroed; opcheck; gradcheck; the CUDA ops against the CPU
reference; seeded weights regenerate only rows I."""

import pytest
import torch
import torch.nn.functional as F

from randfx.generators import generate
from randfx.ops import row_sparse
from randfx.ops.row_sparse import (masks_densely, row_sparse_conv, row_sparse_grad_input,
                                   row_sparse_grad_weight, row_sparse_linear,
                                   row_sparse_seeded_linear)


@pytest.fixture(autouse=True, params=["gathered", "masked"])
def formulation(request, monkeypatch):
    """Every test runs both backward formulations: gather the kept columns, or zero the
    others and run the dense backward (row_sparse.masks_densely)."""
    monkeypatch.setattr(row_sparse, "DENSE_MASK_FRACTION",
                        1.0 if request.param == "gathered" else 0.0)
    return request.param


def test_formulation_follows_the_capacity_of_the_rows_tensor(formulation, monkeypatch):
    monkeypatch.setattr(row_sparse, "DENSE_MASK_FRACTION", 0.75)
    rows = torch.full((200,), -1, dtype=torch.int64)
    assert masks_densely(rows, 256)  # 200 walks may keep 78 % of 256 rows
    assert not masks_densely(rows[:50], 256)
    assert masks_densely(rows[:10], 10)  # an output layer of 10 rows


def _rows(kept, size):
    """Padded rows tensor: the kept rows ascending, then -1 up to `size`."""
    kept = sorted(kept)
    return torch.tensor(kept + [-1] * (size - len(kept)), dtype=torch.int64)


def _mask(rows, out):
    mask = torch.zeros(out, dtype=torch.float64)
    mask[rows[rows >= 0]] = 1.0
    return mask


def _dense_masked_grads(fn, inputs, grad, mask, channel_dim=-1):
    """Gradients of fn(*inputs) under upstream `grad` with the rows outside `mask` zeroed."""
    shape = [1] * grad.dim()
    shape[channel_dim] = -1
    out = fn(*inputs)
    return torch.autograd.grad(out, inputs, grad * mask.view(shape).to(grad.dtype))


def test_linear_equals_masked_dense_backward():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 12, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 12, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, dtype=torch.float64, requires_grad=True)
    rows = _rows([0, 3, 4, 8], 6)
    grad = torch.randn(3, 5, 9, dtype=torch.float64)
    sparse = torch.autograd.grad(row_sparse_linear(x, w, b, rows), (x, w, b), grad)
    dense = _dense_masked_grads(F.linear, (x, w, b), grad, _mask(rows, 9))
    for got, want in zip(sparse, dense):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # rows outside I get exactly zero, rows inside get the dense gradient
    assert torch.count_nonzero(sparse[1].abs().sum(1)) == 4
    assert torch.count_nonzero(sparse[2]) == 4
    y = row_sparse_linear(x, w, b, rows)
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=0, atol=0)


def test_all_rows_kept_equals_dense_backward():
    torch.manual_seed(1)
    x = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(7, 5, dtype=torch.float64)
    sparse = torch.autograd.grad(row_sparse_linear(x, w, None, torch.arange(5)), (x, w), grad)
    dense = torch.autograd.grad(F.linear(x, w), (x, w), grad)
    for got, want in zip(sparse, dense):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_kept_row_zero_next_to_padding():
    """Padded slots gather column 0 of grad; with row 0 also kept, its gradient must be
    the true one, not overwritten by a padded slot."""
    torch.manual_seed(3)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    rows = _rows([0, 3], 4)
    g = torch.randn(4, 5, dtype=torch.float64)
    sparse = torch.autograd.grad(row_sparse_linear(x, w, b, rows), (x, w, b), g)
    masked = g * _mask(rows, 5)
    dense = torch.autograd.grad(torch.nn.functional.linear(x, w, b), (x, w, b), masked)
    for got, want in zip(sparse, dense):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_no_rows_kept_gives_zero_gradients():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    gx, gw = torch.autograd.grad(row_sparse_linear(x, w, None, _rows([], 3)).sum(), (x, w))
    assert not gx.any() and not gw.any()


def test_gradcheck_and_opcheck():
    torch.manual_seed(2)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    rows = _rows([1, 2], 4)
    weighting = _mask(rows, 5)  # the function of rows I alone has the sparse gradient
    assert torch.autograd.gradcheck(
        lambda x, w, b: row_sparse_linear(x, w, b, rows) * weighting, (x, w, b))
    g = torch.randn(4, 5, dtype=torch.float64)
    torch.library.opcheck(torch.ops.randfx.row_sparse_grad_input.default, (g, w.detach(), rows))
    torch.library.opcheck(torch.ops.randfx.row_sparse_grad_weight.default,
                          (g, x.detach(), rows, 5, True))
    key = torch.tensor(7, dtype=torch.int64)
    for all_rows in (False, True):
        torch.library.opcheck(torch.ops.randfx.row_sparse_linear.default,
                              (x, w, b, rows, all_rows))
        torch.library.opcheck(torch.ops.randfx.row_sparse_linear.default,
                              (x, w, None, rows, all_rows))
        for needs in ((True, True, True), (False, True, False), (True, False, False)):
            torch.library.opcheck(torch.ops.randfx.row_sparse_linear_backward.default,
                                  (g, x.detach(), w.detach(), rows, *needs, all_rows))
        torch.library.opcheck(torch.ops.randfx.row_sparse_seeded_linear.default,
                              (x, key, 0.5, b, rows, 5, "pcg", "uniform", all_rows))
        torch.library.opcheck(torch.ops.randfx.row_sparse_conv.default,
                              (torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True),
                               torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True),
                               None, _rows([0, 2], 3), [1, 1], [1, 1], [1, 1], 1, all_rows))
    torch.library.opcheck(torch.ops.randfx.row_sparse_seeded_grad_input.default,
                          (g, key, 0.5, 5, 6, rows, "pcg", "uniform"))


@pytest.mark.parametrize("generator,dist", [("pcg", "uniform"), ("squirrel5", "rademacher"),
                                            ("pcg", "uniform8x4")])
def test_seeded_equals_masked_dense_backward(generator, dist):
    torch.manual_seed(3)
    out, inp, key, scale = 9, 13, 1234, 0.25
    weight = (generate((out, inp), key=key, generator=generator, dist=dist)
              .to(torch.float64) * scale).requires_grad_(False)
    x = torch.randn(6, inp, dtype=torch.float64, requires_grad=True)
    b = torch.randn(out, dtype=torch.float64, requires_grad=True)
    rows = _rows([2, 5, 6], 5)
    grad = torch.randn(6, out, dtype=torch.float64)
    y = row_sparse_seeded_linear(x, torch.tensor(key), scale, b, rows, out, generator, dist)
    torch.testing.assert_close(y, F.linear(x, weight, b), rtol=1e-6, atol=1e-6)
    sparse = torch.autograd.grad(y, (x, b), grad)
    dense = _dense_masked_grads(lambda x, b: F.linear(x, weight, b), (x, b), grad,
                                _mask(rows, out))
    for got, want in zip(sparse, dense):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)


def test_lora_term_gets_gradient_only_through_rows():
    """rows I of A @ B are A[I] @ B: the composition the pass uses for random_base_lora."""
    torch.manual_seed(4)
    x = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    a = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    rows = _rows([1, 4], 3)
    grad = torch.randn(5, 6, dtype=torch.float64)
    sparse = torch.autograd.grad(row_sparse_linear(F.linear(x, b), a, None, rows), (x, a, b), grad)
    dense = _dense_masked_grads(lambda x, a, b: F.linear(x, a @ b), (x, a, b), grad,
                                _mask(rows, 6))
    for got, want in zip(sparse, dense):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert torch.count_nonzero(sparse[1].abs().sum(1)) == 2


def _dense_then_masked(fn, inputs, grad, masked_rows):
    """Seed 004's semantics (propagate_all_rows): the plain dense backward of fn, then
    the gradients of the inputs at positions `masked_rows` (row-indexed by the output)
    zeroed outside `mask`: {position: mask}."""
    grads = list(torch.autograd.grad(fn(*inputs), inputs, grad))
    for position, mask in masked_rows.items():
        shape = [-1] + [1] * (grads[position].dim() - 1)
        grads[position] = grads[position] * mask.view(shape)
    return grads


def test_linear_all_rows_masks_weight_gradients_and_propagates_densely():
    torch.manual_seed(10)
    x = torch.randn(3, 5, 12, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 12, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, dtype=torch.float64, requires_grad=True)
    rows = _rows([0, 3, 4, 8], 6)
    grad = torch.randn(3, 5, 9, dtype=torch.float64)
    got = torch.autograd.grad(row_sparse_linear(x, w, b, rows, propagate_all_rows=True),
                              (x, w, b), grad)
    mask = _mask(rows, 9)
    want = _dense_then_masked(F.linear, (x, w, b), grad, {1: mask, 2: mask})
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)
    kept_only = torch.autograd.grad(row_sparse_linear(x, w, b, rows), (x,), grad)[0]
    assert not torch.allclose(got[0], kept_only)  # the input gradient is the dense one


def test_seeded_all_rows_propagates_through_every_row_of_r():
    torch.manual_seed(11)
    out, inp, key, scale = 9, 13, 99, 0.5
    weight = generate((out, inp), key=key).to(torch.float64) * scale
    x = torch.randn(6, inp, dtype=torch.float64, requires_grad=True)
    b = torch.randn(out, dtype=torch.float64, requires_grad=True)
    rows = _rows([1, 7], 4)
    grad = torch.randn(6, out, dtype=torch.float64)
    y = row_sparse_seeded_linear(x, torch.tensor(key), scale, b, rows, out,
                                 propagate_all_rows=True)
    got = torch.autograd.grad(y, (x, b), grad)
    want = _dense_then_masked(lambda x, b: F.linear(x, weight, b), (x, b), grad,
                              {1: _mask(rows, out)})
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-7)


def test_lora_term_all_rows_masks_only_the_row_factor():
    """propagate_all_rows on the LoRA composition: the row-indexed factor (a, rows of
    a @ b) gets gradient in rows I; b and x, upstream of it, get the dense gradient."""
    torch.manual_seed(12)
    x = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    a = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    rows = _rows([1, 4], 3)
    grad = torch.randn(5, 6, dtype=torch.float64)
    got = torch.autograd.grad(
        row_sparse_linear(F.linear(x, b), a, None, rows, propagate_all_rows=True),
        (x, a, b), grad)
    want = _dense_then_masked(lambda x, a, b: F.linear(x, a @ b), (x, a, b), grad,
                              {1: _mask(rows, 6)})
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("all_rows", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_equals_masked_dense_backward(groups, all_rows):
    """kept_rows: the dense backward with grad's other channels zeroed; all_rows: the
    dense backward with the weight and bias gradients' other channels zeroed."""
    torch.manual_seed(5)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4 // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    rows = _rows([0, 3, 5], 4)
    y = row_sparse_conv(x, w, b, rows, [2, 2], [1, 1], [1, 1], groups,
                        propagate_all_rows=all_rows)
    conv = lambda x, w, b: F.conv2d(x, w, b, 2, 1, 1, groups)  # noqa: E731
    torch.testing.assert_close(y, conv(x, w, b), rtol=0, atol=0)
    grad = torch.randn_like(y)
    sparse = torch.autograd.grad(y, (x, w, b), grad)
    mask = _mask(rows, 6)
    if all_rows:
        dense = _dense_then_masked(conv, (x, w, b), grad, {1: mask, 2: mask})
    else:
        dense = _dense_masked_grads(conv, (x, w, b), grad, mask, channel_dim=1)
    for got, want in zip(sparse, dense):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_bad_rows_are_refused():
    x, w = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="rows must be a 1-d int64"):
        row_sparse_linear(x, w, None, torch.tensor([0, 1], dtype=torch.int32))
    with pytest.raises(ValueError, match="input features"):
        row_sparse_linear(torch.randn(2, 5), w, None, torch.tensor([0]))
    with pytest.raises(ValueError, match="key must be a 0-d int64"):
        row_sparse_seeded_linear(x, torch.tensor([1]), 1.0, None, torch.tensor([0]), 4)


# ---- Triton kernels: the interpreter on CPU, the real thing on CUDA ---------------------

def _kernel_case(device, dtype, m=37, out=41, inp=35):
    torch.manual_seed(6)
    g = torch.randn(m, out, device=device, dtype=dtype)
    x = torch.randn(m, inp, device=device, dtype=dtype)
    w = torch.randn(out, inp, device=device, dtype=dtype)
    rows = _rows([0, 3, 7, 8, 20, 33, 40], 19).to(device)  # K crosses a 16-wide block
    return g, x, w, rows


@pytest.mark.cuda
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("side_stream", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_op_matches_cpu_reference(dtype, side_stream, compiled, monkeypatch):
    """side_stream: grad_W on the side stream (row_sparse.SIDE_STREAM_MIN_MACS) when run
    eagerly; compiled (Dynamo traces the op's autograd.Function), the streams are left to
    Inductor and the values must not change."""
    monkeypatch.setattr(row_sparse, "SIDE_STREAM_MIN_MACS", 0 if side_stream else 1 << 62)
    g, x, w, rows = _kernel_case("cuda", dtype, m=300, out=257, inp=190)
    x.requires_grad_(True)
    w.requires_grad_(True)
    b = torch.zeros(w.shape[0], device="cuda", dtype=dtype, requires_grad=True)
    torch._dynamo.reset()
    layer = torch.compile(row_sparse_linear, fullgraph=True) if compiled else row_sparse_linear
    got = torch.autograd.grad(layer(x, w, b, rows), (x, w, b), g)
    xc, wc, bc = (t.detach().cpu().double().requires_grad_(True) for t in (x, w, b))
    want = torch.autograd.grad(row_sparse_linear(xc, wc, bc, rows.cpu()), (xc, wc, bc),
                               g.cpu().double())
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    for a, e in zip(got, want):
        torch.testing.assert_close(a.cpu().double(), e, rtol=tol, atol=tol * 10)


@pytest.mark.cuda
@pytest.mark.parametrize("generator,dist,dtype,inp,tol", [
    ("squirrel5", "uniform8x4", torch.float32, 190, 1e-4),  # per-element hashes
    ("pcg", "rademacher32", torch.bfloat16, 256, 2e-2)])    # one hash per 32 weights
def test_cuda_seeded_op_matches_cpu_reference(generator, dist, dtype, inp, tol):
    """The GPU backward generates the kept rows of R with a Triton kernel; the CPU
    reference with the torch stream."""
    g, x, _, rows = _kernel_case("cuda", dtype, m=300, out=257, inp=inp)
    key, scale = torch.tensor(99, device="cuda"), 0.125
    x.requires_grad_(True)
    got = torch.autograd.grad(row_sparse_seeded_linear(x, key, scale, None, rows, 257,
                                                       generator, dist), x, g)[0]
    xc = x.detach().cpu().double().requires_grad_(True)
    want = torch.autograd.grad(row_sparse_seeded_linear(xc, key.cpu(), scale, None, rows.cpu(),
                                                        257, generator, dist),
                               xc, g.cpu().double())[0]
    torch.testing.assert_close(got.cpu().double(), want, rtol=tol, atol=tol * 10)
