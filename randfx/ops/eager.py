"""Eager twins of randfx's custom ops.

A custom op call crosses the dispatcher, the op's Python autograd wrapper and its device
kernel wrapper: tens of microseconds of host time per call (on the H200 machine's host,
one eager decode call through `torch.ops.randfx.seeded_linear` took 160-197 us, its body
114-156 us; `python scripts/decode_lab.py --sections eager`). Where nothing traces the call,
`twin` runs the same body, setup_context and backward as a torch.autograd.Function
instead. While torch.compile or torch.export traces, under a dispatch mode (FakeTensorMode,
make_fx) or with tensor subclasses among the arguments, the op itself runs, so graphs
still see one opaque node with its fake kernel and registered autograd.

An op whose body is plain torch (the row-sparse ops: a dense forward, a backward that
only changes which rows get gradient) may instead be `transparent` to Dynamo: under
torch.compile the autograd.Function runs there too, so Dynamo traces the body and the
backward into the graph and Inductor compiles them (fusing the forward's epilogue, with
no call back into Python per op and step), while the custom op stays what make_fx,
export and dispatch modes see.
"""

import torch
# bound once: traced code that reads a module (`torch`) that other traced code also reads
# under another name gets a Python-evaluated identity guard (Dynamo's DUPLICATE_INPUT),
# checked on every compiled call
from torch.compiler import is_compiling, is_dynamo_compiling

_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def plain_eager(args) -> bool:
    """Whether a call with these arguments may skip the dispatcher: no tracing, no
    dispatch mode, only plain tensors."""
    if is_compiling() or torch._C._len_torch_dispatch_stack():
        return False
    return all(type(a) in _PLAIN_TENSORS for a in args if isinstance(a, torch.Tensor))


def twin(name: str, op, body, setup_context=None, backward=None, transparent=False):
    """A callable that runs custom op `op` (randfx::name) when traced, else `body` as an
    autograd.Function with the op's setup_context and backward (body alone for an op with
    no autograd); `transparent`: the autograd.Function also while Dynamo traces (module
    doc). It takes every argument of the op, defaults included: the randfx.ops wrappers
    pass them all."""
    if backward is None:
        def call(*args):
            return body(*args) if plain_eager(args) else op(*args)
        return call

    def forward(ctx, *args):
        # the ctx-first form: a separate setup_context makes apply() bind its arguments
        # with inspect.signature on every call (tens of microseconds)
        output = body(*args)
        setup_context(ctx, args, output)
        return output
    function = type(f"{name}_eager", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward)})

    def call(*args):
        if (transparent and is_dynamo_compiling()) or plain_eager(args):
            return function.apply(*args)
        return op(*args)
    return call
