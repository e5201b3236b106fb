"""One draw of the random walks replayed as a CUDA graph.

An eager draw is a few dozen small kernels per layer (hash, cumulative weights, search,
row counts, compaction), so on a GPU it is bound by kernel launches: about 2 ms for a
3-layer MLP on an H100, far more than the GPU work. The draw has no host synchronisation
and a fixed shape (randfx.random_walk), so it can be captured once and replayed.

`GraphedWalks(sampler, inputs)(step)` draws step `step` (a 0-d int64 CUDA tensor) and
advances it in place, like `sampler.sample(step); step.add_(1)`, and returns the same
WalkSample an eager draw gives (tested bit for bit). The graph reads the weights from the
addresses it was captured with: `inputs()` lists every tensor the draw reads (the
layers' parameters and buffers), and the draw is captured again whenever one of them,
or the step, has moved or changed shape (`.to()`, a replaced `.data`). The outputs are
copied out of the graph's memory in one copy, so a draw stays valid after the next one
(a forward's saved rows must not change under its backward). If a capture fails, it
warns once and draws eagerly from then on: the walks are the same either way.
"""

import warnings
from typing import Callable, List, Tuple

import torch

from .random_walk import RandomWalkSampler, WalkSample

_WARMUP_DRAWS = 2  # lazy initialisation (cuBLAS handles, caching allocator) before capture


class GraphedWalks:
    """`sampler`'s draws replayed from one CUDA graph; `inputs()` lists the tensors the
    draw reads (module doc)."""

    def __init__(self, sampler: RandomWalkSampler, inputs: Callable[[], List[torch.Tensor]]):
        self.sampler = sampler
        self.inputs = inputs
        self.captured_for: Tuple = ()
        self.graph = None
        self.eager = False  # set when a capture failed

    def __getstate__(self):
        # a copy (deepcopy, pickle) captures its own graph on its first draw
        return {"sampler": self.sampler, "inputs": self.inputs, "captured_for": (),
                "graph": None, "eager": self.eager}

    def __call__(self, step: torch.Tensor) -> WalkSample:
        if self.eager:
            return self.draw_eagerly(step)
        placement = tuple((t.data_ptr(), t.shape, t.dtype) for t in (*self.inputs(), step))
        if placement != self.captured_for:
            try:
                self._capture(step)
            except RuntimeError as error:
                self.eager, self.graph = True, None
                warnings.warn(f"randfx sparse_backward: capturing the draw of the walks as a "
                              f"CUDA graph failed ({error}); drawing them eagerly from now on "
                              f"(the same walks, more kernel launches)", RuntimeWarning)
                return self.draw_eagerly(step)
            self.captured_for = placement
        self.graph.replay()
        return self._unpack(self.flat.clone())

    def draw_eagerly(self, step: torch.Tensor) -> WalkSample:
        """The same draw without a graph (any device; what torch.compile traces)."""
        sample = self.sampler.sample(step)
        step.add_(1)
        return sample

    def _capture(self, step: torch.Tensor):
        with torch.cuda.device(step.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(_WARMUP_DRAWS):
                    self.sampler.sample(step)  # pure: the step is not advanced
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                sample = self.sampler.sample(step)
                step.add_(1)
                self.layout = [(kind, name, part.numel())
                               for kind, parts in (("rows", sample.rows),
                                                   ("visits", sample.visits))
                               for name, part in parts.items()]
                self.flat = torch.cat([part for parts in (sample.rows, sample.visits)
                                       for part in parts.values()])
        self.graph = graph

    def _unpack(self, flat: torch.Tensor) -> WalkSample:
        parts = {"rows": {}, "visits": {}}
        for (kind, name, _), piece in zip(self.layout,
                                          flat.split([n for _, _, n in self.layout])):
            parts[kind][name] = piece
        return WalkSample(visits=parts["visits"], rows=parts["rows"])
