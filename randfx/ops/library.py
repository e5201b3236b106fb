"""The `torch.ops.randfx.*` ops: schemas, argument checks, fake kernels and autograd.

Each op body is written once, against a backend module: `reference` (plain torch; the CPU
kernel, keys read as ints) or `triton_backend` (the CUDA kernel, keys stay on the device).
`run(name, backend, *args)` calls a body directly, which is how the tests force the Triton
path on CPU tensors under TRITON_INTERPRET=1.

Public ops (contract 3): generate_weight, seeded_linear, seeded_lora_linear,
subspace_weight, subspace_linear. Internal ops used by the backward passes (and by the
compile backend, which knows them by schema): seeded_matmul (y = x W^T or x W with a
low-rank and bias epilogue), seeded_lora_grad_input (grad_y @ (scale R + c B A): the
adapter folded into W when W is materialised), subspace_weight_backward (P^T g),
subspace_linear_weight (W0 + reshape(P alpha) materialised in one pass).
"""

import functools
from typing import Optional, Sequence

import torch

from . import checks, eager, reference

_DEFAULT_GENERATOR = "pcg"
_DEFAULT_DIST = "uniform"


def _triton_backend():
    from . import triton_backend  # imports Triton lazily, only when a CUDA op runs
    return triton_backend


def _key(backend, op: str, key: torch.Tensor, argument: str = "key"):
    """The reference reads keys as ints; Triton kernels load them from device memory."""
    return checks.key_value(op, key, argument) if backend is reference else key


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


# ---------------------------------------------------------------- argument checks (metadata)

def _check_generate_weight(key, shape, generator, dist, dtype):
    op = "generate_weight"
    checks.key(op, key, key.device if isinstance(key, torch.Tensor) else "cpu")
    for size in shape:
        if not isinstance(size, (int, torch.SymInt)) or isinstance(size, bool) or size < 0:
            checks.fail(op, f"shape must hold non-negative ints, got {list(shape)}")
    checks.stream(op, generator, dist)
    if dtype not in checks.FLOAT_DTYPES:
        checks.fail(op, f"dtype={dtype}; accepted: {list(checks.FLOAT_DTYPES)}", TypeError)


def _check_seeded_matmul(op, x, key, rows, cols, transpose, bias, lowrank_u, lowrank_v,
                         generator, dist):
    checks.positive_int(op, "rows (out_features)", rows)
    checks.positive_int(op, "cols (in_features)", cols)
    checks.linear_input(op, x, rows if transpose else cols)
    checks.key(op, key, x.device)
    out = cols if transpose else rows
    checks.bias(op, bias, out, x.device)
    if (lowrank_u is None) != (lowrank_v is None):
        checks.fail(op, "lowrank_u and lowrank_v must be given together")
    if lowrank_u is not None:
        checks.floating(op, "lowrank_u", lowrank_u, x.device)
        checks.floating(op, "lowrank_v", lowrank_v, x.device)
        m = _rows(x).shape[0]
        if lowrank_u.dim() != 2 or lowrank_u.shape[0] != m:
            checks.fail(op, f"lowrank_u must have shape ({m}, rank), got {tuple(lowrank_u.shape)}")
        checks.shape(op, "lowrank_v", lowrank_v, (out, lowrank_u.shape[1]))
    checks.stream(op, generator, dist)


def _check_lora(x, key, lora_A, lora_B, bias, generator, dist, op="seeded_lora_linear"):
    """The forward's x is (..., in); the grad-input op's grad_y is (..., out)."""
    grad_input = op == "seeded_lora_grad_input"
    argument = "grad_y" if grad_input else "x"
    checks.linear_input(op, x, argument=argument)
    checks.key(op, key, x.device)
    checks.floating(op, "lora_A", lora_A, x.device)
    checks.floating(op, "lora_B", lora_B, x.device)
    if lora_A.dim() != 2 or lora_B.dim() != 2:
        checks.fail(op, f"lora_A [r, in] and lora_B [out, r] must be 2-D, got "
                        f"{tuple(lora_A.shape)} and {tuple(lora_B.shape)}")
    rank = lora_A.shape[0]
    in_features = lora_A.shape[1] if grad_input else x.shape[-1]
    out_features = x.shape[-1] if grad_input else lora_B.shape[0]
    checks.shape(op, "lora_A", lora_A, (rank, in_features))
    checks.shape(op, "lora_B", lora_B, (out_features, rank))
    if out_features < 1:
        checks.fail(op, "lora_B must have at least one row (out_features >= 1)")
    checks.bias(op, bias, out_features, x.device)
    checks.stream(op, generator, dist)


def _check_row_stride(op, row_stride, d):
    if row_stride is not None:
        checks.positive_int(op, "row_stride", row_stride, minimum=d)


def _basis_counters(numel, d, row_stride):
    """How many counters past basis_offset a (numel, d) basis block reaches."""
    return (numel - 1) * (d if row_stride is None else row_stride) + d


def _check_subspace(op, alpha, key, numel, basis_offset, generator, dist, dist_argument="dist",
                    row_stride=None):
    checks.floating(op, "alpha", alpha)
    if alpha.dim() != 1 or alpha.numel() < 1:
        checks.fail(op, f"alpha must be 1-D with d >= 1 coefficients, got shape "
                        f"{tuple(alpha.shape)}")
    checks.key(op, key, alpha.device, "key" if op == "subspace_weight" else "basis_key")
    checks.positive_int(op, "numel", numel)
    _check_row_stride(op, row_stride, alpha.numel())
    checks.counter_range(op, "basis_offset", basis_offset,
                         _basis_counters(numel, alpha.numel(), row_stride))
    checks.stream(op, generator, dist, dist_argument)


# ---------------------------------------------------------------- op bodies, per backend

def _not_a_view(body):
    """`body`, handing out its output as a tensor that is not a view. The bodies reshape
    their kernels' outputs, and autograd refuses in-place changes to a custom op's or
    autograd.Function's output that is a view made inside it, as an nn.ReLU(inplace=True)
    after a seeded layer makes (torchvision's AlexNet, VGG, MobileNetV3). detach() keeps
    the memory and drops the view: the bodies run below autograd (inside the op, or in an
    autograd.Function's forward)."""
    @functools.wraps(body)
    def run(*args, **kwargs):
        output = body(*args, **kwargs)
        return output.detach() if output._base is not None else output
    return run


@_not_a_view
def _generate_weight(backend, key, shape, scale, generator, dist, dtype):
    _check_generate_weight(key, shape, generator, dist, dtype)
    return backend.generate_weight(_key(backend, "generate_weight", key), tuple(shape), scale,
                                   generator, dist, dtype, key.device)


@_not_a_view
def _seeded_matmul(backend, x, key, rows, cols, scale, transpose, bias, lowrank_u, lowrank_v,
                   generator, dist, op="seeded_matmul"):
    _check_seeded_matmul(op, x, key, rows, cols, transpose, bias, lowrank_u, lowrank_v,
                         generator, dist)
    y = backend.seeded_matmul(_rows(x), _key(backend, op, key), rows, cols, scale, transpose,
                              bias, lowrank_u, lowrank_v, generator, dist)
    return y.view(*x.shape[:-1], y.shape[-1])


def _seeded_linear(backend, x, key, out_features, scale, bias, generator, dist):
    return _seeded_matmul(backend, x, key, out_features, x.shape[-1] if x.dim() else 0, scale,
                          False, bias, None, None, generator, dist, op="seeded_linear")


def _adapter_dtype(x, lora_A, lora_B):
    """The adapter gradients' dtype: 16-bit activations keep theirs (the thin GEMMs
    accumulate in fp32, as autocast's Linear computes its weight gradient; promoting
    would copy x and grad_y whole into fp32), else the promoted dtype (fp64 gradcheck)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.dtype
    return torch.promote_types(torch.promote_types(x.dtype, lora_A.dtype), lora_B.dtype)


@_not_a_view
def _seeded_lora_linear(backend, x, key, lora_A, lora_B, scale, lora_scaling, bias,
                        generator, dist):
    _check_lora(x, key, lora_A, lora_B, bias, generator, dist)
    y = backend.lora_linear(_rows(x), _key(backend, "seeded_lora_linear", key),
                            lora_B.shape[0], scale, lora_A, lora_B, lora_scaling, bias,
                            generator, dist)
    return y.view(*x.shape[:-1], y.shape[-1])


@_not_a_view
def _seeded_lora_grad_input(backend, grad_y, key, scale, lora_A, lora_B, lora_scaling,
                            generator, dist):
    op = "seeded_lora_grad_input"
    _check_lora(grad_y, key, lora_A, lora_B, None, generator, dist, op=op)
    grad_x = backend.lora_grad_input(_rows(grad_y), _key(backend, op, key), scale, lora_A,
                                     lora_B, lora_scaling, generator, dist)
    return grad_x.view(*grad_y.shape[:-1], grad_x.shape[-1])


@_not_a_view
def _subspace_weight(backend, alpha, key, numel, basis_offset, basis_scale, generator, dist,
                     row_stride=None):
    _check_subspace("subspace_weight", alpha, key, numel, basis_offset, generator, dist,
                    row_stride=row_stride)
    return backend.subspace_weight(alpha, _key(backend, "subspace_weight", key), numel,
                                   basis_offset, basis_scale, generator, dist, row_stride)


@_not_a_view
def _subspace_weight_backward(backend, grad, key, d, basis_offset, basis_scale, generator,
                              dist, row_stride=None):
    op = "subspace_weight_backward"
    checks.floating(op, "grad", grad)
    checks.key(op, key, grad.device)
    checks.positive_int(op, "d", d)
    _check_row_stride(op, row_stride, d)
    checks.counter_range(op, "basis_offset", basis_offset,
                         _basis_counters(max(grad.numel(), 1), d, row_stride))
    checks.stream(op, generator, dist)
    return backend.subspace_weight_backward(grad, _key(backend, op, key), d, basis_offset,
                                            basis_scale, generator, dist, row_stride)


@_not_a_view
def _subspace_linear_weight(backend, base_key, base_scale, alpha, basis_key, basis_offset,
                            basis_scale, out_features, in_features, generator, base_dist,
                            basis_dist, dtype, op="subspace_linear_weight"):
    checks.positive_int(op, "out_features", out_features)
    checks.positive_int(op, "in_features", in_features)
    _check_subspace(op, alpha, basis_key, out_features * in_features, basis_offset, generator,
                    basis_dist, "basis_dist")
    checks.key(op, base_key, alpha.device, "base_key")
    checks.stream(op, generator, base_dist, "base_dist")
    return backend.subspace_linear_weight(
        _key(backend, op, base_key, "base_key"), base_scale, alpha,
        _key(backend, op, basis_key, "basis_key"), basis_offset, basis_scale, out_features,
        in_features, generator, base_dist, basis_dist, dtype)


def _subspace_matmul_dtype(x, alpha):
    """float64 for gradcheck; the activation dtype on CUDA (tensor cores); float32 on CPU."""
    if torch.float64 in (x.dtype, alpha.dtype):
        return torch.float64
    return x.dtype if x.is_cuda else torch.float32


@_not_a_view
def _subspace_linear(backend, x, base_key, base_scale, alpha, basis_key, basis_offset,
                     basis_scale, out_features, bias, generator, base_dist, basis_dist):
    op = "subspace_linear"
    checks.linear_input(op, x)
    checks.floating(op, "alpha", alpha, x.device)
    checks.bias(op, bias, out_features, x.device)
    dtype = _subspace_matmul_dtype(x, alpha)
    w = _subspace_linear_weight(backend, base_key, base_scale, alpha, basis_key, basis_offset,
                                basis_scale, out_features, x.shape[-1], generator, base_dist,
                                basis_dist, dtype, op=op)
    b = None if bias is None else bias.to(dtype)
    return torch.nn.functional.linear(x.to(dtype), w, b).to(x.dtype)


BODIES = {
    "generate_weight": _generate_weight,
    "seeded_matmul": _seeded_matmul,
    "seeded_linear": _seeded_linear,
    "seeded_lora_linear": _seeded_lora_linear,
    "seeded_lora_grad_input": _seeded_lora_grad_input,
    "subspace_weight": _subspace_weight,
    "subspace_weight_backward": _subspace_weight_backward,
    "subspace_linear_weight": _subspace_linear_weight,
    "subspace_linear": _subspace_linear,
}


def run(name: str, backend: str, *args):
    """Call op `name` through `backend` ("reference" or "triton") with the op's positional
    arguments, bypassing the dispatcher (tests force the Triton path on CPU this way)."""
    module = reference if backend == "reference" else _triton_backend()
    return BODIES[name](module, *args)


def _define(name, schema_fn):
    """Register `schema_fn` (its signature is the schema) as randfx::name: the reference
    body on every device, the Triton body on CUDA."""
    body = BODIES[name]
    op = torch.library.custom_op(f"randfx::{name}", mutates_args=())(schema_fn)
    op.register_kernel("cuda")(lambda *args: body(_triton_backend(), *args))
    return op


# ---------------------------------------------------------------- schemas

def _generate_weight_schema(key: torch.Tensor, shape: Sequence[int], scale: float,
                            generator: str, dist: str, dtype: torch.dtype) -> torch.Tensor:
    return _generate_weight(reference, key, shape, scale, generator, dist, dtype)


def _seeded_matmul_schema(x: torch.Tensor, key: torch.Tensor, rows: int, cols: int,
                          scale: float, transpose: bool, bias: Optional[torch.Tensor],
                          lowrank_u: Optional[torch.Tensor], lowrank_v: Optional[torch.Tensor],
                          generator: str, dist: str) -> torch.Tensor:
    return _seeded_matmul(reference, x, key, rows, cols, scale, transpose, bias, lowrank_u,
                          lowrank_v, generator, dist)


def _seeded_linear_schema(x: torch.Tensor, key: torch.Tensor, out_features: int, scale: float,
                          bias: Optional[torch.Tensor], generator: str,
                          dist: str) -> torch.Tensor:
    return _seeded_linear(reference, x, key, out_features, scale, bias, generator, dist)


def _seeded_lora_linear_schema(x: torch.Tensor, key: torch.Tensor, lora_A: torch.Tensor,
                               lora_B: torch.Tensor, scale: float, lora_scaling: float,
                               bias: Optional[torch.Tensor], generator: str,
                               dist: str) -> torch.Tensor:
    return _seeded_lora_linear(reference, x, key, lora_A, lora_B, scale, lora_scaling, bias,
                               generator, dist)


def _seeded_lora_grad_input_schema(grad_y: torch.Tensor, key: torch.Tensor, scale: float,
                                   lora_A: torch.Tensor, lora_B: torch.Tensor,
                                   lora_scaling: float, generator: str,
                                   dist: str) -> torch.Tensor:
    return _seeded_lora_grad_input(reference, grad_y, key, scale, lora_A, lora_B, lora_scaling,
                                   generator, dist)


def _subspace_weight_schema(alpha: torch.Tensor, key: torch.Tensor, numel: int,
                            basis_offset: int, basis_scale: float, generator: str,
                            dist: str, row_stride: Optional[int] = None) -> torch.Tensor:
    return _subspace_weight(reference, alpha, key, numel, basis_offset, basis_scale, generator,
                            dist, row_stride)


def _subspace_weight_backward_schema(grad: torch.Tensor, key: torch.Tensor, d: int,
                                     basis_offset: int, basis_scale: float, generator: str,
                                     dist: str, row_stride: Optional[int] = None
                                     ) -> torch.Tensor:
    return _subspace_weight_backward(reference, grad, key, d, basis_offset, basis_scale,
                                     generator, dist, row_stride)


def _subspace_linear_weight_schema(base_key: torch.Tensor, base_scale: float,
                                   alpha: torch.Tensor, basis_key: torch.Tensor,
                                   basis_offset: int, basis_scale: float, out_features: int,
                                   in_features: int, generator: str, base_dist: str,
                                   basis_dist: str, dtype: torch.dtype) -> torch.Tensor:
    return _subspace_linear_weight(reference, base_key, base_scale, alpha, basis_key,
                                   basis_offset, basis_scale, out_features, in_features,
                                   generator, base_dist, basis_dist, dtype)


def _subspace_linear_schema(x: torch.Tensor, base_key: torch.Tensor, base_scale: float,
                            alpha: torch.Tensor, basis_key: torch.Tensor, basis_offset: int,
                            basis_scale: float, out_features: int,
                            bias: Optional[torch.Tensor], generator: str, base_dist: str,
                            basis_dist: str) -> torch.Tensor:
    return _subspace_linear(reference, x, base_key, base_scale, alpha, basis_key, basis_offset,
                            basis_scale, out_features, bias, generator, base_dist, basis_dist)


generate_weight_op = _define("generate_weight", _generate_weight_schema)
seeded_matmul_op = _define("seeded_matmul", _seeded_matmul_schema)
seeded_linear_op = _define("seeded_linear", _seeded_linear_schema)
seeded_lora_linear_op = _define("seeded_lora_linear", _seeded_lora_linear_schema)
seeded_lora_grad_input_op = _define("seeded_lora_grad_input", _seeded_lora_grad_input_schema)
subspace_weight_op = _define("subspace_weight", _subspace_weight_schema)
subspace_weight_backward_op = _define("subspace_weight_backward",
                                      _subspace_weight_backward_schema)
subspace_linear_weight_op = _define("subspace_linear_weight", _subspace_linear_weight_schema)
subspace_linear_op = _define("subspace_linear", _subspace_linear_schema)


# ---------------------------------------------------------------- fake kernels

@generate_weight_op.register_fake
def _(key, shape, scale, generator, dist, dtype):
    _check_generate_weight(key, shape, generator, dist, dtype)
    return key.new_empty(tuple(shape), dtype=dtype)


@seeded_matmul_op.register_fake
def _(x, key, rows, cols, scale, transpose, bias, lowrank_u, lowrank_v, generator, dist):
    _check_seeded_matmul("seeded_matmul", x, key, rows, cols, transpose, bias, lowrank_u,
                         lowrank_v, generator, dist)
    return x.new_empty(*x.shape[:-1], cols if transpose else rows)


@seeded_linear_op.register_fake
def _(x, key, out_features, scale, bias, generator, dist):
    _check_seeded_matmul("seeded_linear", x, key, out_features, x.shape[-1], False, bias, None,
                         None, generator, dist)
    return x.new_empty(*x.shape[:-1], out_features)


@seeded_lora_linear_op.register_fake
def _(x, key, lora_A, lora_B, scale, lora_scaling, bias, generator, dist):
    _check_lora(x, key, lora_A, lora_B, bias, generator, dist)
    return x.new_empty(*x.shape[:-1], lora_B.shape[0])


@seeded_lora_grad_input_op.register_fake
def _(grad_y, key, scale, lora_A, lora_B, lora_scaling, generator, dist):
    _check_lora(grad_y, key, lora_A, lora_B, None, generator, dist, op="seeded_lora_grad_input")
    return grad_y.new_empty(*grad_y.shape[:-1], lora_A.shape[1])


@subspace_weight_op.register_fake
def _(alpha, key, numel, basis_offset, basis_scale, generator, dist, row_stride=None):
    _check_subspace("subspace_weight", alpha, key, numel, basis_offset, generator, dist,
                    row_stride=row_stride)
    return alpha.new_empty(numel)


@subspace_weight_backward_op.register_fake
def _(grad, key, d, basis_offset, basis_scale, generator, dist, row_stride=None):
    checks.floating("subspace_weight_backward", "grad", grad)
    dtype = checks.compute_dtype(grad.dtype)
    return grad.new_empty(d, dtype=dtype)


@subspace_linear_weight_op.register_fake
def _(base_key, base_scale, alpha, basis_key, basis_offset, basis_scale, out_features,
      in_features, generator, base_dist, basis_dist, dtype):
    _check_subspace("subspace_linear_weight", alpha, basis_key, out_features * in_features,
                    basis_offset, generator, basis_dist, "basis_dist")
    return alpha.new_empty(out_features, in_features, dtype=dtype)


@subspace_linear_op.register_fake
def _(x, base_key, base_scale, alpha, basis_key, basis_offset, basis_scale, out_features,
      bias, generator, base_dist, basis_dist):
    checks.linear_input("subspace_linear", x)
    checks.bias("subspace_linear", bias, out_features, x.device)
    _check_subspace("subspace_linear", alpha, basis_key, out_features * x.shape[-1],
                    basis_offset, generator, basis_dist, "basis_dist")
    return x.new_empty(*x.shape[:-1], out_features)


# ---------------------------------------------------------------- autograd

def _seeded_matmul_setup(ctx, inputs, output):
    x, key, rows, cols, scale, transpose, bias, u, v, generator, dist = inputs
    ctx.save_for_backward(key, u, v)
    ctx.meta = (rows, cols, scale, transpose, generator, dist, x.dtype, bias is not None)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _seeded_matmul_backward(ctx, grad_y):
    key, u, v = ctx.saved_tensors
    rows, cols, scale, transpose, generator, dist, x_dtype, has_bias = ctx.meta
    needs = ctx.needs_input_grad
    grad_x = grad_bias = grad_u = grad_v = None
    if needs[0]:
        grad_x = seeded_matmul(grad_y.to(x_dtype), key, rows, cols, scale, not transpose,
                               None, None, None, generator, dist)
    if has_bias and needs[6]:
        grad_bias = _rows(grad_y).sum(0).to(ctx.bias_dtype)
    g2 = _rows(grad_y)
    if u is not None and needs[7]:
        grad_u = (g2.to(v.dtype) @ v).to(u.dtype)
    if u is not None and needs[8]:
        grad_v = (g2.T.to(u.dtype) @ u).to(v.dtype)
    return grad_x, None, None, None, None, None, grad_bias, grad_u, grad_v, None, None


seeded_matmul_op.register_autograd(_seeded_matmul_backward, setup_context=_seeded_matmul_setup)


def _seeded_linear_setup(ctx, inputs, output):
    x, key, out_features, scale, bias, generator, dist = inputs
    ctx.save_for_backward(key)
    ctx.meta = (out_features, x.shape[-1], scale, generator, dist)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _seeded_linear_backward(ctx, grad_y):
    (key,) = ctx.saved_tensors
    out_features, in_features, scale, generator, dist = ctx.meta
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = seeded_matmul(grad_y, key, out_features, in_features, scale, True, None,
                               None, None, generator, dist)
    if ctx.bias_dtype is not None and ctx.needs_input_grad[4]:
        grad_bias = _rows(grad_y).sum(0).to(ctx.bias_dtype)
    return grad_x, None, None, None, grad_bias, None, None


seeded_linear_op.register_autograd(_seeded_linear_backward, setup_context=_seeded_linear_setup)


def _lora_setup(ctx, inputs, output):
    x, key, lora_A, lora_B, scale, lora_scaling, bias, generator, dist = inputs
    ctx.save_for_backward(x, key, lora_A, lora_B)
    ctx.meta = (scale, lora_scaling, generator, dist)
    ctx.bias_dtype = None if bias is None else bias.dtype


def adapter_grads(g, z, lora_A, lora_B, lora_scaling, need_a, need_b):
    """(c (g B)^T z, c g^T (z A^T)), each only when asked: the adapter's gradients for
    y = z (s R + c B A)^T with upstream g, and, with z = gg, the double backward's."""
    dtype = _adapter_dtype(z, lora_A, lora_B)
    g2, z2 = _rows(g).to(dtype), _rows(z).to(dtype)
    grad_a = grad_b = None
    if need_a:
        t = g2 @ lora_B.to(dtype)  # [M, r]: g projected onto the adapter's rank space
        grad_a = ((t.T @ z2) * lora_scaling).to(lora_A.dtype)
    if need_b:
        grad_b = ((g2.T @ (z2 @ lora_A.to(dtype).T)) * lora_scaling).to(lora_B.dtype)
    return grad_a, grad_b


def _lora_backward(ctx, grad_y):
    x, key, lora_A, lora_B = ctx.saved_tensors
    scale, lora_scaling, generator, dist = ctx.meta
    needs = ctx.needs_input_grad
    grad_x = grad_bias = None
    if needs[0]:
        grad_x = seeded_lora_grad_input(grad_y.to(x.dtype), key, scale, lora_A, lora_B,
                                        lora_scaling, generator, dist)
    grad_a, grad_b = adapter_grads(grad_y, x, lora_A, lora_B, lora_scaling, needs[2],
                                   needs[3])
    if ctx.bias_dtype is not None and needs[6]:
        grad_bias = _rows(grad_y).sum(0).to(ctx.bias_dtype)
    return grad_x, None, grad_a, grad_b, None, None, grad_bias, None, None


seeded_lora_linear_op.register_autograd(_lora_backward, setup_context=_lora_setup)


def _lora_grad_input_setup(ctx, inputs, output):
    grad_y, key, scale, lora_A, lora_B, lora_scaling, generator, dist = inputs
    ctx.save_for_backward(grad_y, key, lora_A, lora_B)
    ctx.meta = (scale, lora_scaling, generator, dist)


def _lora_grad_input_backward(ctx, gg):
    """Double backward through a LoRA layer: grad_x = g W, W = s R + c B A, so
    d/dg = gg W^T (the forward op), d/dA = c (g B)^T gg, d/dB = c g^T (gg A^T)."""
    grad_y, key, lora_A, lora_B = ctx.saved_tensors
    scale, lora_scaling, generator, dist = ctx.meta
    needs = ctx.needs_input_grad
    d_grad_y = None
    if needs[0]:
        d_grad_y = seeded_lora_linear(gg.to(grad_y.dtype), key, lora_A, lora_B, scale,
                                      lora_scaling, None, generator, dist)
    d_a, d_b = adapter_grads(grad_y, gg, lora_A, lora_B, lora_scaling, needs[3], needs[4])
    return d_grad_y, None, None, d_a, d_b, None, None, None


seeded_lora_grad_input_op.register_autograd(_lora_grad_input_backward,
                                            setup_context=_lora_grad_input_setup)


def _subspace_weight_setup(ctx, inputs, output):
    alpha, key, numel, basis_offset, basis_scale, generator, dist, row_stride = inputs
    ctx.save_for_backward(key)
    ctx.meta = (alpha.numel(), basis_offset, basis_scale, generator, dist, alpha.dtype,
                row_stride)


def _subspace_weight_grad(ctx, grad_out):
    (key,) = ctx.saved_tensors
    d, basis_offset, basis_scale, generator, dist, alpha_dtype, row_stride = ctx.meta
    grad_alpha = torch.ops.randfx.subspace_weight_backward(grad_out, key, d, basis_offset,
                                                           basis_scale, generator, dist,
                                                           row_stride)
    return grad_alpha.to(alpha_dtype), None, None, None, None, None, None, None


subspace_weight_op.register_autograd(_subspace_weight_grad, setup_context=_subspace_weight_setup)


def _subspace_weight_backward_setup(ctx, inputs, output):
    grad, key, d, basis_offset, basis_scale, generator, dist, row_stride = inputs
    ctx.save_for_backward(key)
    ctx.meta = (grad.numel(), grad.shape, grad.dtype, basis_offset, basis_scale, generator,
                dist, row_stride)


def _subspace_weight_backward_grad(ctx, grad_alpha):
    # the map g -> s P^T g is linear; its adjoint is a -> s P a, i.e. subspace_weight
    (key,) = ctx.saved_tensors
    numel, shape, dtype, basis_offset, basis_scale, generator, dist, row_stride = ctx.meta
    grad = torch.ops.randfx.subspace_weight(grad_alpha, key, numel, basis_offset, basis_scale,
                                            generator, dist, row_stride)
    return grad.view(shape).to(dtype), None, None, None, None, None, None, None


subspace_weight_backward_op.register_autograd(_subspace_weight_backward_grad,
                                              setup_context=_subspace_weight_backward_setup)


def _subspace_linear_weight_setup(ctx, inputs, output):
    (base_key, base_scale, alpha, basis_key, basis_offset, basis_scale, out_features,
     in_features, generator, base_dist, basis_dist, dtype) = inputs
    ctx.save_for_backward(basis_key)
    ctx.meta = (alpha.numel(), basis_offset, basis_scale, generator, basis_dist, alpha.dtype)


def _subspace_linear_weight_grad(ctx, grad_w):
    (basis_key,) = ctx.saved_tensors
    d, basis_offset, basis_scale, generator, basis_dist, alpha_dtype = ctx.meta
    grad_alpha = torch.ops.randfx.subspace_weight_backward(
        grad_w.reshape(-1), basis_key, d, basis_offset, basis_scale, generator, basis_dist)
    return (None, None, grad_alpha.to(alpha_dtype)) + (None,) * 9


subspace_linear_weight_op.register_autograd(_subspace_linear_weight_grad,
                                            setup_context=_subspace_linear_weight_setup)


def _subspace_linear_setup(ctx, inputs, output):
    (x, base_key, base_scale, alpha, basis_key, basis_offset, basis_scale, out_features, bias,
     generator, base_dist, basis_dist) = inputs
    ctx.save_for_backward(x, base_key, alpha, basis_key)
    ctx.meta = (base_scale, basis_offset, basis_scale, out_features, generator, base_dist,
                basis_dist)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _subspace_linear_backward(ctx, grad_y):
    x, base_key, alpha, basis_key = ctx.saved_tensors
    (base_scale, basis_offset, basis_scale, out_features, generator, base_dist,
     basis_dist) = ctx.meta
    needs = ctx.needs_input_grad
    dtype = _subspace_matmul_dtype(x, alpha)
    g2 = _rows(grad_y).to(dtype)
    grad_x = grad_alpha = grad_bias = None
    if needs[0]:
        # W is rebuilt (one fused pass) rather than kept alive between forward and backward
        w = torch.ops.randfx.subspace_linear_weight(
            base_key, base_scale, alpha, basis_key, basis_offset, basis_scale, out_features,
            x.shape[-1], generator, base_dist, basis_dist, dtype)
        grad_x = (g2 @ w).to(x.dtype).view(x.shape)
    if needs[3]:
        grad_w = g2.T @ _rows(x).to(dtype)
        grad_alpha = torch.ops.randfx.subspace_weight_backward(
            grad_w.reshape(-1), basis_key, alpha.numel(), basis_offset, basis_scale, generator,
            basis_dist).to(alpha.dtype)
    if ctx.bias_dtype is not None and needs[8]:
        grad_bias = _rows(grad_y).sum(0).to(ctx.bias_dtype)
    return (grad_x, None, None, grad_alpha, None, None, None, None, grad_bias, None, None, None)


subspace_linear_op.register_autograd(_subspace_linear_backward,
                                     setup_context=_subspace_linear_setup)


# ---------------------------------------------------------------- eager twins

def _on_device(name):
    """Op `name`'s body on the backend its registered kernels would use: Triton for CUDA
    tensors, the reference elsewhere."""
    body = BODIES[name]

    def run(*args):
        cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
        return body(_triton_backend() if cuda else reference, *args)
    return run


# what randfx.ops and the backward formulas above call: the op while traced (as the packet
# torch.ops.randfx.<name>, the target the compile backend's passes match), else the same
# body and autograd without the dispatcher's round trips (randfx/ops/eager.py)
generate_weight = eager.twin("generate_weight", torch.ops.randfx.generate_weight,
                             _on_device("generate_weight"))
seeded_linear = eager.twin("seeded_linear", torch.ops.randfx.seeded_linear,
                           _on_device("seeded_linear"), _seeded_linear_setup,
                           _seeded_linear_backward)
seeded_lora_linear = eager.twin("seeded_lora_linear", torch.ops.randfx.seeded_lora_linear,
                                _on_device("seeded_lora_linear"), _lora_setup, _lora_backward)
subspace_weight = eager.twin("subspace_weight", torch.ops.randfx.subspace_weight,
                             _on_device("subspace_weight"), _subspace_weight_setup,
                             _subspace_weight_grad)
subspace_linear = eager.twin("subspace_linear", torch.ops.randfx.subspace_linear,
                             _on_device("subspace_linear"), _subspace_linear_setup,
                             _subspace_linear_backward)
seeded_matmul = eager.twin("seeded_matmul", torch.ops.randfx.seeded_matmul,
                           _on_device("seeded_matmul"), _seeded_matmul_setup,
                           _seeded_matmul_backward)
seeded_lora_grad_input = eager.twin("seeded_lora_grad_input",
                                    torch.ops.randfx.seeded_lora_grad_input,
                                    _on_device("seeded_lora_grad_input"), _lora_grad_input_setup,
                                    _lora_grad_input_backward)
