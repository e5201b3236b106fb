"""select: decide which weight layers the config rewrites.

Requires: ctx.layers (analyze), ctx.config.
Guarantees: ctx.selection lists the module names to rewrite, in module order. A layer is
selected when it matches target_modules (default: every layer whose kind is rewritten by
default, i.e. Linear, HF Conv1D, Conv and MultiheadAttention's in_proj_weight) and not
exclude_modules, has a rule (a LayerKind), and every module tied to its weight is
selected too (a tied weight becomes one seeded tensor, or stays dense everywhere). A layer whose weight other code reads
(functionally, or a parent that reads it instead of calling it, as nn.MultiheadAttention
does with out_proj, or whose kind is applied by its owner) is selected and listed in
ctx.report.read_directly: the seeded layer's `weight` generates the weight at each read.
Under a sparse backward such a layer stays dense, since the walks follow layers'
forwards only. Every matched layer left dense is in ctx.report.left_dense with the
reason, and a warning is issued for each, except those excluded by exclude_modules.
Raises ValueError when nothing is selected, naming the patterns and some candidates.

Pattern entries: "all-linear" (every Linear-like layer), "re:<regex>" (full match of the
qualified name), or an exact qualified name or dot-separated suffix of one.
"""

import re

from randfx.modules import LAYER_KINDS, layer_kind

from .manager import PassBase, PassResult


def matches(name: str, patterns, kind) -> bool:
    for pattern in patterns:
        if pattern == "all-linear":
            if kind is not None and LAYER_KINDS[kind].linear:
                return True
        elif pattern.startswith("re:"):
            if re.fullmatch(pattern[3:], name):
                return True
        elif name == pattern or name.endswith("." + pattern):
            return True
    return False


EXCLUDED = "excluded by exclude_modules"


def _no_rule(info) -> str:
    return (f"no randfx rule for {info.type_name} "
            f"(its parameter {info.weight_name.rsplit('.', 1)[-1]})")


def _read_directly(name: str, info) -> str:
    """Why code other than the layer's own forward reads its weight, or "" when none
    does (as the layer's `weight`, which the seeded layer generates at each read)."""
    if LAYER_KINDS[info.kind].applied_by_owner:
        return f"{info.type_name} applies it in its own forward"
    if info.functional_use:
        return f"its weight {info.weight_name} is also used outside {name}'s forward"
    if not info.nodes:
        return ("the captured graph never applies it through its own forward: a parent "
                "applies it or reads its weight inside a module the capture does not "
                "enter (nn.MultiheadAttention reads out_proj's weight; "
                "nn.TransformerEncoderLayer calls its linears), or it is unused")
    return ""


class Select(PassBase):
    name = "select"
    requires = ("layers", "config")

    def run(self, ctx):
        config, report = ctx.config, ctx.report
        wanted, read_directly = [], {}
        for name, info in ctx.layers.items():
            if config.target_modules is None:
                if info.kind is None:
                    report.left_dense[name] = _no_rule(info)
                    continue
                if not LAYER_KINDS[info.kind].default_selected:
                    continue  # embeddings are rewritten only when named
            elif not matches(name, config.target_modules, info.kind):
                continue
            if matches(name, config.exclude_modules, info.kind):
                report.left_dense[name] = EXCLUDED
                continue
            read = _read_directly(name, info) if info.kind is not None else ""
            if info.kind is None:
                report.left_dense[name] = _no_rule(info)
            elif read and config.sparse_backward is not None:
                report.left_dense[name] = f"{read}, which a sparse backward cannot follow"
            else:
                wanted.append(name)
                if read:
                    read_directly[name] = read
        chosen = set(wanted)
        for name in wanted:
            missing = [t for t in ctx.layers[name].tied_with if t not in chosen]
            if missing:
                report.left_dense[name] = (f"its weight is tied to {', '.join(missing)}, "
                                           f"which is not rewritten")
        ctx.selection = [name for name in wanted if name not in report.left_dense]
        report.read_directly.update((name, read_directly[name]) for name in ctx.selection
                                    if name in read_directly)
        for name, reason in report.left_dense.items():
            if reason != EXCLUDED:
                report.warn(f"randfx: {name} stays dense: {reason}")
        if not ctx.selection:
            candidates = [n for n, i in ctx.layers.items() if i.kind is not None]
            raise ValueError(
                f"Config selects no weight to rewrite in {type(ctx.source).__name__}: "
                f"target_modules={config.target_modules!r}, "
                f"exclude_modules={config.exclude_modules!r}"
                + (f"; left dense: {report.left_dense}" if report.left_dense else "")
                + f"; rewritable layers: {candidates[:12]}"
                + (" ..." if len(candidates) > 12 else "")
                + ("; the model is itself a single layer: wrap it, e.g. nn.Sequential(layer)"
                   if layer_kind(ctx.source) is not None else ""))
        return PassResult(False, f"{len(ctx.selection)} selected, "
                                 f"{len(report.left_dense)} left dense")
