"""The pass interface and the pass manager that runs `randfx.transform`'s pipeline.

A pass is a `PassBase` subclass: `name`, `requires` (TransformContext attributes an
earlier pass must have set) and `run(ctx) -> PassResult`. Passes communicate only
through the `TransformContext`; none modifies `ctx.source` (the caller's model).

After every pass the manager lints and recompiles the captured FX graph (if any), and,
when a dump directory is given, writes the graph before and after each pass as
`NN_<pass>_before.txt` / `NN_<pass>_after.txt`. Passes that annotate graph nodes record
provenance with `mark(node, pass_name, **facts)` under `node.meta["randfx"]`.
"""

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import torch
from torch import nn


@dataclass
class TransformReport:
    """What transform did: rewritten weights, those left dense and why, warnings."""

    capture_path: str = ""
    rewritten: Dict[str, str] = field(default_factory=dict)  # module -> scheme
    left_dense: Dict[str, str] = field(default_factory=dict)  # module -> reason
    # rewritten modules whose weight other code reads (module -> how): each read of
    # `layer.weight` generates the whole weight, unfused
    read_directly: Dict[str, str] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    passes: List[Tuple[str, bool, float]] = field(default_factory=list)  # name, modified, s
    layer_graph: Any = None  # the networkx.DiGraph built by analyze

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, stacklevel=2)


@dataclass
class TransformContext:
    """State handed from pass to pass.

    source        the caller's model: read, never modified
    config        the randfx.Config
    example_args, example_kwargs   inputs for capture (may be empty)
    graph         the captured torch.fx.GraphModule (capture)
    layers        {module name: LayerInfo} for every module with a >= 2-D weight (analyze)
    layer_graph   networkx.DiGraph over those modules (analyze; see analyze.py)
    selection     module names to rewrite, in module order (select)
    plans         {module name: WeightPlan} (reparameterize; `execution` set by lower)
    global_rows   rows of the scope-"global" basis P: summed numel of its weights
    model         the emitted model: a rewritten deep copy of source (emit)
    """

    source: nn.Module
    config: Any
    example_args: tuple = ()
    example_kwargs: dict = field(default_factory=dict)
    graph: Optional[torch.fx.GraphModule] = None
    layers: Optional[Dict[str, Any]] = None
    layer_graph: Any = None
    selection: Optional[List[str]] = None
    plans: Optional[Dict[str, Any]] = None
    global_rows: int = 0  # rows of the global subspace basis (reparameterize)
    model: Optional[nn.Module] = None
    report: TransformReport = field(default_factory=TransformReport)


@dataclass(frozen=True)
class PassResult:
    modified: bool
    summary: str = ""


class PassBase:
    name: ClassVar[str]
    requires: ClassVar[Tuple[str, ...]] = ()

    def run(self, ctx: TransformContext) -> PassResult:
        raise NotImplementedError

    def check_requires(self, ctx: TransformContext) -> None:
        for attribute in self.requires:
            if getattr(ctx, attribute) is None:
                raise RuntimeError(f"pass {self.name!r} requires ctx.{attribute}, which no "
                                   f"earlier pass set; check the pass order")


def mark(node: torch.fx.Node, pass_name: str, **facts) -> None:
    """Record on `node` that `pass_name` looked at it and what it decided."""
    node.meta.setdefault("randfx", []).append({"pass": pass_name, **facts})


class PassManager:
    def __init__(self, passes, dump_dir: Optional[str] = None):
        self.passes = list(passes)
        self.dump_dir = dump_dir

    def _dump(self, ctx, index: int, pass_name: str, when: str) -> None:
        if self.dump_dir is None or ctx.graph is None:
            return
        os.makedirs(self.dump_dir, exist_ok=True)
        path = os.path.join(self.dump_dir, f"{index:02d}_{pass_name}_{when}.txt")
        lines = [node.format_node() or str(node) for node in ctx.graph.graph.nodes]
        lines += [f"    # {node.name}: {node.meta['randfx']}"
                  for node in ctx.graph.graph.nodes if "randfx" in node.meta]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def run(self, ctx: TransformContext) -> TransformContext:
        for index, p in enumerate(self.passes):
            p.check_requires(ctx)
            self._dump(ctx, index, p.name, "before")
            start = time.perf_counter()
            result = p.run(ctx)
            if ctx.graph is not None:
                ctx.graph.graph.lint()
                ctx.graph.recompile()
            ctx.report.passes.append((p.name, result.modified, time.perf_counter() - start))
            self._dump(ctx, index, p.name, "after")
        return ctx
