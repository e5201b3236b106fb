"""`randfx.inspect(model)`: what a transformed model regenerates, what it stores, and what
each rewritten weight costs per forward on a given device.

(This module is not called inspect.py: importing a submodule `randfx.inspect` would
rebind the package attribute `randfx.inspect` from the function to the module.)

Per rewritten weight: module path, original layer type and weight shape, scheme, bytes
stored before (the dense weight) and after (its seeds and coefficients), values
generated per forward, FLOPs and bytes moved as sympy expressions in the batch size B and
sequence length T (randfx.roofline), their values at the requested sizes, the kernel the
ops run at those sizes, and whether it is memory- or compute-bound on the device. Then
the tensors kept dense with their bytes, totals and the compression ratio.

Rows per forward. A linear layer sees M rows: by default M = B*T (every token of every
sequence; T = 1 for inputs without a sequence). With `example_inputs`, the model runs
once and each layer's M is read from its actual input: M = c*B*T when it equals c times
the example's B*T (batch = dim 0, sequence = dim 1 of the first input when it has one),
else c*B, else the constant seen. A convolution's FLOPs need that run too (they depend on
the output's spatial size); without it they are left out and the row says so.
"""

import html
import math
from dataclasses import dataclass, field

import sympy
import torch
from torch import nn

from . import roofline


@dataclass
class Report:
    """Returned by `randfx.inspect`. str() is a table; to_dict() / to_html() the same."""

    device: roofline.Device
    dtype: str
    sizes: dict
    weights: list = field(default_factory=list)
    kept_dense: list = field(default_factory=list)
    shared: list = field(default_factory=list)
    totals: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    _COLUMNS = ("module", "layer", "shape", "scheme", "bytes_before", "bytes_after",
                "generated", "flops", "bytes_moved", "kernel", "bound")

    def _rows(self):
        return [{**row, "generated": row["generated_at"], "flops": row["flops_at"],
                 "bytes_moved": row["bytes_moved_at"], "shape": "x".join(map(str, row["shape"]))}
                for row in self.weights]

    def __str__(self) -> str:
        from .bench.common import format_table

        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        lines = [f"randfx.inspect: {len(self.weights)} rewritten weights, {self.dtype}, "
                 f"evaluated at {sizes} on {self.device.name} ({self.device.source})", "",
                 format_table(self._rows(), self._COLUMNS), "",
                 "per forward, as expressions in B (batch) and T (sequence):"]
        lines += [f"  {row['module']}: generated {row['generated_expr']}, flops "
                  f"{row['flops_expr']}, bytes moved {row['bytes_moved_expr']}"
                  for row in self.weights]
        if self.shared:
            lines += ["", "shared coefficients:"]
            lines += [f"  {t['name']}  {t['shape']}  {t['bytes']} bytes" for t in self.shared]
        lines += ["", f"kept dense ({len(self.kept_dense)} tensors):"]
        lines += [f"  {t['name']}  {t['shape']}  {t['bytes']} bytes" for t in self.kept_dense]
        t = self.totals
        lines += ["", f"total stored: {t['bytes_before']} bytes dense -> {t['bytes_after']} "
                      f"bytes (compression {t['compression_ratio']:.1f}x); generated per "
                      f"forward: {t['generated_at']} values"]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"device": {"name": self.device.name, "matmul_flops": self.device.matmul_flops,
                           "bandwidth": self.device.bandwidth, "alu_ops": self.device.alu_ops,
                           "source": self.device.source},
                "dtype": self.dtype, "sizes": dict(self.sizes),
                "weights": [dict(row) for row in self.weights],
                "shared": list(self.shared), "kept_dense": list(self.kept_dense),
                "totals": dict(self.totals), "notes": list(self.notes)}

    def to_html(self) -> str:
        def table(rows, columns):
            head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>"
                                            for c in columns) + "</tr>" for r in rows)
            return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

        t = self.totals
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        expressions = ("module", "generated_expr", "flops_expr", "bytes_moved_expr")
        return "\n".join([
            "<div class=\"randfx-report\">",
            f"<p>{len(self.weights)} rewritten weights, {html.escape(self.dtype)}, at "
            f"{html.escape(sizes)} on {html.escape(self.device.name)} "
            f"({html.escape(self.device.source)})</p>",
            table(self._rows(), self._COLUMNS),
            table(self.weights, expressions),
            "<h4>shared coefficients</h4>", table(self.shared, ("name", "shape", "bytes")),
            "<h4>kept dense</h4>", table(self.kept_dense, ("name", "shape", "bytes")),
            f"<p>total stored: {t['bytes_before']} bytes dense &rarr; {t['bytes_after']} bytes "
            f"(compression {t['compression_ratio']:.1f}x)</p>",
            *(f"<p>note: {html.escape(note)}</p>" for note in self.notes),
            "</div>"])

    def _repr_html_(self) -> str:
        return self.to_html()


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _seeded_layers(model: nn.Module):
    return [(name, module) for name, module in model.named_modules()
            if callable(getattr(module, "seeded_tensors", None))
            and hasattr(module, "weight_shape")]


def _own_tensors(module: nn.Module):
    """(name, tensor) of a seeded layer's seeds and coefficients: its own parameters and
    buffers except the bias, which is kept dense."""
    tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
    return [(name, t) for name, t in tensors if name != "bias" and t is not None]


def _rows_seen(model: nn.Module, layers, example_inputs):
    """{layer name: (rows M, output spatial numel per row)} from one forward."""
    seen = {}

    def hook(name):
        def record(module, args, output):
            x = args[0]
            seen[name] = (x.numel() // max(1, x.shape[-1]) if module.kind.linear else x.shape[0],
                          output[0, 0].numel() if not module.kind.linear and output.dim() > 2
                          else 1)
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in layers]
    args = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for handle in handles:
            handle.remove()
    return seen, args[0]


def _rows_expression(rows: int, batch: int, seq):
    """rows as c*B*T, c*B or a constant, matched against the example's batch and seq
    (None when the example has no sequence dimension)."""
    if seq is not None and rows % (batch * seq) == 0:
        return rows // (batch * seq) * roofline.B * roofline.T
    if rows % batch == 0:
        return rows // batch * roofline.B
    return sympy.Integer(rows)


def inspect(model: nn.Module, example_inputs=None, *, batch_size: int = 1, seq_len: int = 1,
            device=roofline.DEFAULT_DEVICE, dtype=None) -> Report:
    """A Report of `model` (made by randfx.transform or randfx.load) evaluated at
    B=batch_size, T=seq_len on `device` (a preset of randfx.roofline.DEVICES or a
    randfx.roofline.Device). `dtype`: the activation dtype costed (default: the dtype of
    the model's first floating parameter)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"inspect: model must be a torch.nn.Module, got {type(model).__name__}")
    dev = roofline.device(device)
    sizes = {"B": batch_size, "T": seq_len}
    roofline.substitutions(sizes)  # validates them
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                     torch.get_default_dtype())
    dtype_name = roofline.dtype_name(dtype)
    act_bytes = torch.empty((), dtype=dtype).element_size()
    layers = _seeded_layers(model)
    report = Report(dev, dtype_name, sizes)
    if not layers:
        report.notes.append("no rewritten weight: apply randfx.transform(model, config) first")

    seen, example = {}, None
    if example_inputs is not None:
        seen, example = _rows_seen(model, layers, example_inputs)
        example_batch = example.shape[0]
        example_seq = example.shape[1] if example.dim() >= 2 and (
            not example.is_floating_point() or example.dim() >= 3) else None

    owned, generated_total = set(), sympy.Integer(0)
    for name, module in layers:
        shape = tuple(module.weight_shape)
        n, k = shape[0], math.prod(shape[1:])
        weight_dtype = next((t.dtype for _, t in _own_tensors(module) if t.is_floating_point()),
                            dtype)
        before = n * k * torch.empty((), dtype=weight_dtype).element_size()
        tensors = _own_tensors(module)
        owned.update(id(t) for _, t in tensors)
        after = sum(_nbytes(t) for _, t in tensors)
        coefficient_bytes = sum(_nbytes(t) for _, t in tensors if t.is_floating_point())
        if module.bias is not None:
            coefficient_bytes += _nbytes(module.bias)
        records = module.seeded_tensors()
        base = records[0]
        dim = getattr(module, "dim", 0)
        rank = getattr(module, "rank", 0)

        if module.kind.linear:
            if name in seen:
                m = _rows_expression(seen[name][0], example_batch, example_seq)
            else:
                m = roofline.B * roofline.T
            m_at = int(m.subs(roofline.substitutions(sizes)))
            if module.scheme == "subspace":
                kernel = "materialize"  # subspace_linear builds W = W0 + P alpha in one pass
            else:
                kernel = roofline.choose_kernel(m_at, base.dist, dtype, shape=(n, k))
            extra = 2 * m * rank * (n + k)  # the LoRA adapter's two thin GEMMs
            cost = roofline.seeded_linear_cost(m, n, k, kernel=kernel, generator=base.generator,
                                               dist=base.dist, act_bytes=act_bytes,
                                               coefficient_bytes=coefficient_bytes,
                                               extra_flops=extra)
        else:
            kernel = "materialize"  # no fused conv / embedding op: W is built per forward
            if module.kind.applied_by_owner:  # its owner multiplies every token by W
                m = roofline.B * roofline.T
                flops = 2 * m * n * k
            elif name in seen:
                m = _rows_expression(seen[name][0], example_batch, example_seq)
                flops = 0 if module.kind.name == "embedding" else 2 * m * seen[name][1] * n * k
            else:
                m, flops = roofline.B, None
                report.notes.append(f"{name}: {module.kind.name} FLOPs need example_inputs "
                                    "(they depend on the output size); counted as 0")
            cost = roofline.Cost(sympy.sympify(flops or 0),
                                 sympy.sympify(2 * n * k * act_bytes + coefficient_bytes),
                                 sympy.Integer(n * k),
                                 n * k * roofline.generation_ops(base.generator, base.dist))
        if dim:  # the subspace delta: P (numel x dim) generated, P alpha computed
            basis = records[1]
            cost = cost + roofline.Cost(
                sympy.Integer(2 * n * k * dim), sympy.Integer(0), sympy.Integer(n * k * dim),
                n * k * dim * roofline.generation_ops(basis.generator, basis.dist))

        at = cost.at(sizes)
        generated_total += cost.generated
        timing = roofline.roofline(cost, dev, dtype_name, sizes)
        template = getattr(module, "_template", None)
        report.weights.append({
            "module": name, "layer": type(template).__name__ if template is not None
            else module.kind.name, "shape": list(shape), "scheme": module.scheme,
            "bytes_before": before, "bytes_after": after,
            "rows_expr": str(m), "generated_expr": str(cost.generated),
            "flops_expr": str(cost.flops), "bytes_moved_expr": str(cost.bytes),
            "generated_at": at["generated"], "flops_at": at["flops"],
            "bytes_moved_at": at["bytes"], "alu_ops_at": at["alu_ops"], "kernel": kernel,
            "bound": timing["bound"], "limiter": timing["limiter"],
            "time_s": timing["time_s"]})

    from .modules import GlobalSubspace
    shared = {id(t) for module in model.modules() if isinstance(module, GlobalSubspace)
              for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))}
    seen_ids = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in owned or id(tensor) in seen_ids:
            continue
        seen_ids.add(id(tensor))  # a tied tensor is stored once, under its first name
        entry = {"name": name, "shape": list(tensor.shape), "bytes": _nbytes(tensor)}
        (report.shared if id(tensor) in shared else report.kept_dense).append(entry)

    kept = sum(t["bytes"] for t in report.kept_dense)
    before = sum(row["bytes_before"] for row in report.weights) + kept
    after = (sum(row["bytes_after"] for row in report.weights)
             + sum(t["bytes"] for t in report.shared) + kept)
    report.totals = {"bytes_before": before, "bytes_after": after,
                     "compression_ratio": before / after if after else float("inf"),
                     "kept_dense_bytes": kept, "generated_expr": str(generated_total),
                     "generated_at": sum(row["generated_at"] for row in report.weights)}
    return report
