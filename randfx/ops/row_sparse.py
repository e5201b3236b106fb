"""Row-sparse backward ops (DESIGN.md contract 6): forward dense, backward only through
the kept output rows I of the weight.

    row_sparse_linear(x, weight, bias, rows)             y = x W^T + b
    row_sparse_seeded_linear(x, key, scale, bias, rows, out_features, generator, dist)
                                                         y = x (scale R(key))^T + b
    row_sparse_conv(x, weight, bias, rows, stride, padding, dilation, groups)

(each with a last argument propagate_all_rows=False, below).

`rows` is an int64 tensor of distinct row indices, padded with -1 (the sampler's
`WalkSample.rows`; a fixed size, so nothing syncs with the host). With g = dL/dy:

    grad_x           = g[:, I] @ W[I, :]
    grad_weight[I]   = g[:, I]^T @ x,  every other row 0
    grad_bias[I]     = sum over tokens of g[:, I],  every other entry 0

i.e. exactly the dense backward of y with the columns of g outside I set to zero. Seeded
weights regenerate only rows I of R in the grad_x kernel. A LoRA term A @ B over a seeded
base is row_sparse_linear(F.linear(x, B), A, None, rows): rows I of A @ B are A[I] @ B, so
A gets gradient in rows I and B through them.

With `propagate_all_rows=True` (SparseBackward(propagate="all_rows"), seed 004's own
semantics: a dense backward whose weight gradients are masked to the kept rows) the
weight and bias gradients are the same, but grad_x = g @ W through every row, so the
layers below see the full gradient. For a LoRA term this leaves B's gradient in rows I
and gives A (input side of the product, like a layer below) the full gradient.

Every device runs the same torch formulation: gather the kept columns of g (and, for a
seeded weight, generate only rows I of R on the device: one Triton pass on a GPU, the
torch stream elsewhere), one dense GEMM
each for grad_x and grad_weight (cuBLAS on a GPU), and a row scatter into the gradient.
Where the rows tensor could hold more than DENSE_MASK_FRACTION of the layer's rows (its
fixed size, e.g. 200 walks over a 256-row layer), the kept rows may be nearly all of
them: the backward then zeroes g's other columns and runs the dense backward, which
saves the gather and scatter (fewer launches and copies, same values).
Triton kernels that gathered rows inside the GEMM loads were built and measured on an H100
(8192 tokens x 4096 x 4096 bf16): 0.70x dense backward at 1/8 of the rows against 3.9x
for this formulation, so they were removed (docs/performance.md).

The three layer ops are custom ops (`torch.ops.randfx.*`: what make_fx, torch.export and
dispatch modes see, with fake kernels and registered autograd). Eagerly and under
torch.compile they run as an autograd.Function with the same body and backward
(`_op_with_eager_twin`): Dynamo traces it, so the compiled graph holds the dense
forward's own aten ops, which Inductor fuses with their neighbours (as an opaque op, each
forward was a call back into Python every step: 2-core CPU, seed 004's MLP at 10 / 50 /
200 paths, `python -m randfx.bench mnist --compile --epochs 2` alternated twice, a
compiled step 1.05-1.06 / 1.01-1.03 / 0.86-0.87x full backprop's speed as an op,
1.11-1.14 / 1.05-1.07 / 0.89x traced).
"""

from typing import List, Optional, Tuple

import torch
# bound once: the wrappers and (traced by Dynamo, eager.twin) the ops' bodies and
# backwards run inside compiled frames, where reading them as torch.x would reach the
# `torch` module by a second name, and Dynamo guards that pair's identity in Python on
# every call
from torch import Tensor, int64, where, zeros, zeros_like
from torch.compiler import is_compiling
from torch.nn.functional import linear

from ..generators import reference as _stream
from ..generators.spec import DEFAULT_DISTRIBUTION
from . import eager

aten, randfx_ops = torch.ops.aten, torch.ops.randfx

# above this fraction of a layer's rows (the capacity of its rows tensor) the backward
# masks grad and runs dense GEMMs (masks_densely)
DENSE_MASK_FRACTION = 0.75
# on a GPU, from this many multiply-adds in the kept-rows GEMMs (tokens x rows x inputs)
# the grad_W GEMM runs on a side stream beside grad_x's: its few output tiles leave SMs
# idle (H200, 8192 x 4096^2 bf16 at 1/8 of the rows: 3.87x -> 4.17x dense backward);
# below, the stream switch costs more host time than it saves
SIDE_STREAM_MIN_MACS = 1 << 30


def _check(op: str, x: Tensor, features: int, weight_shape, rows: Tensor) -> None:
    """Validate a wrapper's arguments; `features` is x's number of input features."""
    if rows.dtype != int64 or rows.dim() != 1:
        raise ValueError(f"randfx.{op}: rows must be a 1-d int64 tensor (kept row indices, "
                         f"-1 = padding), got {rows.dtype} of shape {tuple(rows.shape)}")
    if rows.device != x.device:
        raise ValueError(f"randfx.{op}: rows is on {rows.device} but x is on {x.device}")
    if features != weight_shape[1]:
        raise ValueError(f"randfx.{op}: x has {features} input features, the weight "
                         f"{tuple(weight_shape)} expects {weight_shape[1]}")


def _gather_kept(grad: Tensor, rows: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(g[:, I], index, valid): padded slots gather column 0 of g (index 0, valid False);
    callers zero the matching weight rows or drop their results, so the full-size gather
    is never masked."""
    valid = rows >= 0
    index = rows.clamp(min=0)
    return grad.index_select(1, index), index, valid


def _scatter_rows(values: Tensor, index: Tensor, valid: Tensor, out_rows: int) -> Tensor:
    """A zero tensor of out_rows rows holding values[i] at row index[i] for valid i.
    Padded slots land in one spare row past the end, dropped by the returned view: a
    plain copy, no atomics, and kept rows are distinct."""
    full = values.new_zeros(out_rows + 1, *values.shape[1:])
    full.index_copy_(0, where(valid, index, out_rows), values)
    return full[:out_rows]


def _grad_input(kept: Tensor, weight_rows: Tensor, valid: Tensor) -> Tensor:
    """kept @ weight_rows with the padded slots' weight rows zeroed."""
    mask = valid.to(kept.dtype).unsqueeze(1)
    return kept @ (weight_rows.to(kept.dtype) * mask)


def _grad_weight(kept: Tensor, x: Tensor, index: Tensor, valid: Tensor,
                 out_features: int) -> Tensor:
    return _scatter_rows((kept.t() @ x).to(x.dtype), index, valid, out_features)


def _grad_bias(kept: Tensor, index: Tensor, valid: Tensor, out_features: int) -> Tensor:
    return _scatter_rows(kept.sum(0), index, valid, out_features)


def masks_densely(rows: Tensor, out_features: int) -> bool:
    """Whether the backward zeroes grad's other columns and runs the dense GEMMs instead
    of gathering: when the rows tensor (its fixed size, so no host sync) could hold more
    than DENSE_MASK_FRACTION of the rows, gathering and scattering would save little
    arithmetic and cost more launches and copies."""
    return rows.shape[0] > DENSE_MASK_FRACTION * out_features


def _kept_columns_mask(rows: Tensor, out_features: int, dtype) -> Tensor:
    """(out_features,) with 1 at the kept rows and 0 elsewhere (padding lands past the end)."""
    mask = zeros(out_features + 1, dtype=dtype, device=rows.device)
    mask.index_fill_(0, where(rows >= 0, rows, out_features), 1)
    return mask[:out_features]


# ---- backward building blocks: grad_input and grad_weight (+ bias) ---------------------

@torch.library.custom_op("randfx::row_sparse_grad_input", mutates_args=())
def row_sparse_grad_input(grad: Tensor, weight: Tensor, rows: Tensor) -> Tensor:
    """(M, in) = grad[:, rows] @ weight[rows, :] for grad (M, out), weight (out, in)."""
    kept, index, valid = _gather_kept(grad, rows)
    return _grad_input(kept, weight.index_select(0, index), valid)


@row_sparse_grad_input.register_fake
def _(grad, weight, rows):
    return grad.new_empty(grad.shape[0], weight.shape[1])


def _seeded_weight_rows(key: Tensor, scale: float, out_features: int, in_features: int,
                        index: Tensor, generator: str, dist: str, dtype) -> Tensor:
    """Rows `index` of W = scale * R(key) (out_features, in_features), in dtype: one Triton
    pass on a GPU (float64 and other devices: the torch stream, on the device)."""
    if index.is_cuda and dtype != torch.float64:
        from .triton_backend import materialize  # Triton is imported only on a GPU
        return materialize(key, out_features, in_features, scale, generator, dist, dtype,
                           row_index=index)
    counters = index[:, None] * in_features + torch.arange(in_features, device=index.device)
    # the key stays a tensor (no sync); scaled in the output precision, as the seeded ops do
    return _stream.sample(counters, key, generator, dist).to(dtype) * scale


@torch.library.custom_op("randfx::row_sparse_seeded_grad_input", mutates_args=())
def row_sparse_seeded_grad_input(grad: Tensor, key: Tensor, scale: float, out_features: int,
                                 in_features: int, rows: Tensor, generator: str,
                                 dist: str) -> Tensor:
    """grad[:, rows] @ W[rows, :] for W = scale * R(key) (out_features, in_features),
    generating only rows `rows` of R (counter r * in_features + n)."""
    kept, index, valid = _gather_kept(grad, rows)
    weight_rows = _seeded_weight_rows(key, scale, out_features, in_features, index,
                                      generator, dist, grad.dtype)
    return _grad_input(kept, weight_rows, valid)


@row_sparse_seeded_grad_input.register_fake
def _(grad, key, scale, out_features, in_features, rows, generator, dist):
    return grad.new_empty(grad.shape[0], in_features)


@torch.library.custom_op("randfx::row_sparse_grad_weight", mutates_args=())
def row_sparse_grad_weight(grad: Tensor, x: Tensor, rows: Tensor, out_features: int,
                           with_bias: bool) -> Tuple[Tensor, Tensor]:
    """(grad_weight (out, in), grad_bias (out,) or empty): rows `rows` hold
    grad[:, rows]^T @ x and grad[:, rows].sum(0); every other row is zero."""
    kept, index, valid = _gather_kept(grad, rows)
    return (_grad_weight(kept, x, index, valid, out_features),
            _grad_bias(kept, index, valid, out_features) if with_bias else grad.new_zeros(0))


@row_sparse_grad_weight.register_fake
def _(grad, x, rows, out_features, with_bias):
    return (x.new_empty(out_features, x.shape[1]),
            grad.new_empty(out_features if with_bias else 0))


def _masked_linear_backward(grad, x, weight, rows, need_input, need_weight, with_bias,
                            propagate_all_rows):
    masked = grad * _kept_columns_mask(rows, weight.shape[0], grad.dtype)
    return (((grad if propagate_all_rows else masked) @ weight.to(grad.dtype)) if need_input
            else grad.new_zeros(0),
            (masked.t() @ x).to(x.dtype) if need_weight else x.new_zeros(0),
            masked.sum(0) if with_bias else grad.new_zeros(0))


def _linear_backward_body(grad: Tensor, x: Tensor, weight: Tensor, rows: Tensor,
                          need_input: bool, need_weight: bool, with_bias: bool,
                          propagate_all_rows: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """row_sparse_grad_input (or grad @ weight when propagate_all_rows) and
    row_sparse_grad_weight from one gather of grad's kept columns (the gather reads
    nearly all of grad, so it is done once), or from grad with the other columns zeroed
    when nearly every row may be kept (masks_densely). Outputs not asked for are empty."""
    out_features = weight.shape[0]
    if masks_densely(rows, out_features):
        return _masked_linear_backward(grad, x, weight, rows, need_input, need_weight,
                                       with_bias, propagate_all_rows)
    kept, index, valid = _gather_kept(grad, rows)
    # streams are real only when the backward runs as written: a traced backward (Dynamo,
    # or AOTAutograd's tracing on fake tensors) leaves the schedule to its compiler
    beside = not is_compiling() and need_input and need_weight and grad.is_cuda \
        and type(grad) is Tensor \
        and grad.shape[0] * rows.shape[0] * x.shape[1] >= SIDE_STREAM_MIN_MACS
    if beside:  # grad_W's zero-fill, GEMM and row copy beside grad_x's GEMM
        main, side = torch.cuda.current_stream(grad.device), _side_stream(grad.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            grad_w = _grad_weight(kept, x, index, valid, out_features)
    elif need_weight:
        grad_w = _grad_weight(kept, x, index, valid, out_features)
    else:
        grad_w = x.new_zeros(0)
    if not need_input:
        grad_x = grad.new_zeros(0)
    elif propagate_all_rows:
        grad_x = grad @ weight.to(grad.dtype)
    else:
        grad_x = _grad_input(kept, weight.index_select(0, index), valid)
    if beside:
        main.wait_stream(side)
        grad_w.record_stream(main)  # made on the side stream, used and freed on main
    return (grad_x, grad_w,
            _grad_bias(kept, index, valid, out_features) if with_bias else grad.new_zeros(0))


_SIDE_STREAMS = {}


def _side_stream(device: torch.device):
    """One extra stream per GPU for the row-sparse backward's grad_W."""
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return _SIDE_STREAMS[device]


row_sparse_linear_backward = torch.library.custom_op(
    "randfx::row_sparse_linear_backward", mutates_args=())(_linear_backward_body)


@row_sparse_linear_backward.register_fake
def _(grad, x, weight, rows, need_input, need_weight, with_bias, propagate_all_rows):
    return (grad.new_empty(grad.shape[0], weight.shape[1]) if need_input
            else grad.new_empty(0),
            x.new_empty(weight.shape) if need_weight else x.new_empty(0),
            grad.new_empty(weight.shape[0] if with_bias else 0))


# ---- eager twins of the ops -------------------------------------------------------------

def _op_with_eager_twin(name: str, body, fake, setup_context, backward):
    """Register the custom op `randfx::<name>` (body, fake kernel, autograd) and return
    its twin (`eager.twin`, transparent: an autograd.Function with the same body,
    setup_context and backward, eagerly and under torch.compile, so Inductor compiles the
    dense forward with its neighbours; the op under make_fx, export and dispatch modes).
    The twin calls the op's overload (torch.ops.randfx.<name>.default, what the custom
    op's own __call__ calls): traced, that is one guarded identity rather than the custom
    op object's type, dict and method."""
    op = torch.library.custom_op(f"randfx::{name}", mutates_args=())(body)
    op.register_fake(fake)
    op.register_autograd(backward, setup_context=setup_context)
    return eager.twin(name, getattr(randfx_ops, name).default, body, setup_context,
                      backward, transparent=True)


# ---- row_sparse_linear -----------------------------------------------------------------

def _linear_body(x: Tensor, weight: Tensor, bias: Optional[Tensor], rows: Tensor,
                 propagate_all_rows: bool) -> Tensor:
    return linear(x, weight, bias)


def _linear_fake(x, weight, bias, rows, propagate_all_rows):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _linear_setup(ctx, inputs, output):
    x, weight, bias, rows, propagate_all_rows = inputs
    ctx.save_for_backward(x, weight, rows)
    ctx.has_bias = bias is not None
    ctx.propagate_all_rows = propagate_all_rows


def _linear_backward(ctx, grad):
    x, weight, rows = ctx.saved_tensors
    grad2 = grad.reshape(-1, grad.shape[-1])
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_b = need_b and ctx.has_bias
    grad_x, grad_w, grad_b = _linear_backward_body(
        grad2, x.reshape(-1, x.shape[-1]), weight, rows, need_x, need_w, need_b,
        ctx.propagate_all_rows)
    return (grad_x.reshape(x.shape) if need_x else None, grad_w if need_w else None,
            grad_b if need_b else None, None, None)


_row_sparse_linear = _op_with_eager_twin("row_sparse_linear", _linear_body, _linear_fake,
                                         _linear_setup, _linear_backward)


def row_sparse_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], rows: Tensor,
                      propagate_all_rows: bool = False) -> Tensor:
    """y = x W^T + b; weight and bias get gradient only in output rows `rows`, and so
    does x unless propagate_all_rows (see module doc)."""
    _check("row_sparse_linear", x, x.shape[-1], weight.shape, rows)
    return _row_sparse_linear(x, weight, bias, rows, propagate_all_rows)


# ---- row_sparse_seeded_linear: frozen seeded base W = scale * R(key) --------------------

def _seeded_body(x: Tensor, key: Tensor, scale: float, bias: Optional[Tensor], rows: Tensor,
                 out_features: int, generator: str, dist: str,
                 propagate_all_rows: bool) -> Tensor:
    # the ops' fused generate-and-multiply forward (the weight never exists in full)
    return randfx_ops.seeded_linear(x, key, out_features, scale, bias, generator, dist)


def _seeded_fake(x, key, scale, bias, rows, out_features, generator, dist,
                 propagate_all_rows):
    return x.new_empty(*x.shape[:-1], out_features)


def _seeded_setup(ctx, inputs, output):
    x, key, scale, bias, rows, out_features, generator, dist, propagate_all_rows = inputs
    ctx.save_for_backward(key, rows)
    ctx.meta = (scale, x.shape, bias is not None, out_features, generator, dist,
                propagate_all_rows)


def _seeded_backward(ctx, grad):
    key, rows = ctx.saved_tensors
    scale, x_shape, has_bias, out_features, generator, dist, all_rows = ctx.meta
    grad2 = grad.reshape(-1, grad.shape[-1])
    masked = None
    if masks_densely(rows, out_features):
        masked = grad2 * _kept_columns_mask(rows, out_features, grad2.dtype)
    grad_x = grad_b = None
    if ctx.needs_input_grad[0] and (all_rows or masked is not None):
        # the seeded ops' fused g @ W over every row of W
        grad_x = randfx_ops.seeded_matmul(grad2 if all_rows else masked, key, out_features,
                                          x_shape[-1], scale, True, None, None, None,
                                          generator, dist).reshape(x_shape)
    elif ctx.needs_input_grad[0]:
        grad_x = row_sparse_seeded_grad_input(grad2, key, scale, out_features, x_shape[-1],
                                              rows, generator, dist).reshape(x_shape)
    if has_bias and ctx.needs_input_grad[3] and masked is not None:
        grad_b = masked.sum(0)
    elif has_bias and ctx.needs_input_grad[3]:
        kept, index, valid = _gather_kept(grad2, rows)
        grad_b = _grad_bias(kept, index, valid, out_features)
    return grad_x, None, None, grad_b, None, None, None, None, None


_row_sparse_seeded_linear = _op_with_eager_twin("row_sparse_seeded_linear", _seeded_body,
                                                _seeded_fake, _seeded_setup, _seeded_backward)


def row_sparse_seeded_linear(x: Tensor, key: Tensor, scale: float, bias: Optional[Tensor],
                             rows: Tensor, out_features: int, generator: str = "pcg",
                             dist: str = DEFAULT_DISTRIBUTION,
                             propagate_all_rows: bool = False) -> Tensor:
    """y = x (scale * R(key))^T + b with R (out_features, in) generated (counter = flat
    position); the backward regenerates only rows `rows` of R, or all of R (fused, never
    stored) for grad_x when propagate_all_rows."""
    if key.dtype != int64 or key.dim() != 0:
        raise ValueError("randfx.row_sparse_seeded_linear: key must be a 0-d int64 tensor, "
                         f"got {key.dtype} of shape {tuple(key.shape)}")
    _check("row_sparse_seeded_linear", x, x.shape[-1], (out_features, x.shape[-1]), rows)
    return _row_sparse_seeded_linear(x, key, float(scale), bias, rows, out_features,
                                     generator, dist, propagate_all_rows)


# ---- row_sparse_conv: rows = output channels --------------------------------------------

def _conv_body(x: Tensor, weight: Tensor, bias: Optional[Tensor], rows: Tensor,
               stride: List[int], padding: List[int], dilation: List[int], groups: int,
               propagate_all_rows: bool) -> Tensor:
    return aten.convolution(x, weight, bias, stride, padding, dilation, False,
                            [0] * len(stride), groups)


def _conv_fake(x, weight, bias, rows, stride, padding, dilation, groups, propagate_all_rows):
    return aten.convolution(x, weight, bias, stride, padding, dilation, False,
                            [0] * len(stride), groups)


def _conv_setup(ctx, inputs, output):
    x, weight, bias, rows, stride, padding, dilation, groups, propagate_all_rows = inputs
    ctx.save_for_backward(x, weight, rows)
    ctx.meta = (bias is not None, stride, padding, dilation, groups, propagate_all_rows)


def _conv_backward(ctx, grad):
    """Dense convolution_backward on the kept output channels only: for groups == 1 the
    channels I are gathered (a smaller problem), for grouped convs, or when nearly every
    channel may be kept (masks_densely), the other channels of grad are zeroed (same
    values, no saving). With propagate_all_rows grad_x comes from the full grad in a
    second, input-only convolution_backward."""
    x, weight, rows = ctx.saved_tensors
    has_bias, stride, padding, dilation, groups, all_rows = ctx.meta
    kept = rows >= 0
    index = rows.clamp(min=0)
    conv_args = (stride, padding, dilation, False, [0] * len(stride), groups)
    need_x = ctx.needs_input_grad[0]
    mask = (need_x and not all_rows, ctx.needs_input_grad[1],
            has_bias and ctx.needs_input_grad[2])
    gathered = groups == 1 and not masks_densely(rows, weight.shape[0])
    if gathered:
        shape = (1, -1) + (1,) * (grad.dim() - 2)
        grad_kept = grad.index_select(1, index) * kept.view(shape).to(grad.dtype)
        weight_kept = weight.index_select(0, index)
    else:
        channel = _kept_columns_mask(rows, weight.shape[0], grad.dtype)
        grad_kept = grad * channel.view((1, -1) + (1,) * (grad.dim() - 2))
        weight_kept = weight
    grad_x, grad_wk, grad_bk = aten.convolution_backward(
        grad_kept, x, weight_kept, [weight_kept.shape[0]] if mask[2] else None, *conv_args,
        list(mask))
    if need_x and all_rows:
        grad_x = aten.convolution_backward(grad, x, weight, None, *conv_args,
                                           [True, False, False])[0]
    grad_w = grad_b = None
    if gathered and mask[1]:
        grad_w = zeros_like(weight).index_put_((index,), grad_wk, accumulate=True)
    elif mask[1]:
        grad_w = grad_wk
    if gathered and mask[2]:
        grad_b = weight.new_zeros(weight.shape[0]).index_put_((index,), grad_bk,
                                                              accumulate=True)
    elif mask[2]:
        grad_b = grad_bk
    return grad_x, grad_w, grad_b, None, None, None, None, None, None


_row_sparse_conv = _op_with_eager_twin("row_sparse_conv", _conv_body, _conv_fake,
                                       _conv_setup, _conv_backward)


def row_sparse_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], rows: Tensor,
                    stride, padding, dilation, groups: int,
                    propagate_all_rows: bool = False) -> Tensor:
    """Convolution (1-d/2-d/3-d by weight.dim()) whose weight and bias get gradient only
    in output channels `rows`, and so does x unless propagate_all_rows.
    stride/padding/dilation are int lists of the spatial rank."""
    _check("row_sparse_conv", x, x.shape[1], (weight.shape[0], weight.shape[1] * groups), rows)
    return _row_sparse_conv(x, weight, bias, rows, list(stride), list(padding),
                            list(dilation), groups, propagate_all_rows)
