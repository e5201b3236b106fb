"""Random walks backward over a layer graph, drawing the rows that get gradient (seed 004).

A walk starts at an output neuron (a row of an output layer) chosen uniformly over all
output layers' rows, and goes backward: at layer v, row i, it draws a column j of W_v[i, :]
with

    P(j | i) = (1 - epsilon) * |W_v[i, j]|^(1/T) / sum_k |W_v[i, k]|^(1/T) + epsilon / n

(weighting="magnitude"; a row of zeros falls back to uniform) or P(j | i) = 1 / n
(weighting="uniform"). Column j is an input feature of v; the walk moves to the row of a
predecessor layer u that produces that feature and repeats. A layer's row set is the union
of the rows its walks visit.

Rules beyond the seed's plain MLP (all of them keep every walk a single path, so at most
`num_paths` walks reach any layer and no layer is entered twice by one walk):

- Several predecessors (a residual add, attention's q/k/v -> out projection, a concat):
  the walk continues into ONE of them, chosen uniformly per walk. A skip connection is an
  edge like any other, so walks go through it.
- Index mapping between layers: feature j of v's input (v has C_in inputs) is row j of u
  when out_u == C_in. When out_u is a multiple m * C_in (u is a fused projection whose m
  stacked slices reach v, e.g. GPT-2's c_attn = q|k|v before c_proj, or gate|up before
  down) it is row s * C_in + j with the slice s uniform. Otherwise it is row
  floor(j * out_u / C_in), which maps a channel-major flatten (conv with C channels ->
  linear over C*H*W) to the channel.
- Conv layers: rows are output channels; the weight of column j (input channel j of the
  row's group) is the sum of |W[i, j, ...]| over the kernel window. Grouped and depthwise
  convs map column j of row i to input channel (i // (out / groups)) * (in / groups) + j.
- Layers shared by several paths (fan-out: one layer feeding several others) get the union
  of the rows arriving from all of them.
- A layer used several times (a cycle in the layer graph) is entered once per walk: edges
  that close a cycle, taken against the graph's node order (forward order), are dropped.
- Layers with no path to an output layer cannot be reached: `unreachable` lists them and
  the caller must decide (the sparse_backward pass keeps their backward dense and warns).

Everything per layer is vectorised torch on the device of the layers' weights: all walks
advance together as fixed-size tensors (a row and an alive flag per walk), so there is no
Python loop per walk or row and no host synchronisation. The Python loop runs over layers.
Sampling draws from a torch.Generator: walks are reproducible for a fixed seed on one
device, not bit-identical across devices (they choose rows, never weight values).
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import networkx as nx
import torch

WEIGHTINGS = ("magnitude", "uniform")


def check_walk_options(num_paths, temperature, epsilon, weighting) -> None:
    """ValueError naming the argument and its accepted range (randfx.SparseBackward
    checks the same when a Config is built; the sampler can be used without one)."""
    if isinstance(num_paths, bool) or not isinstance(num_paths, int) or num_paths <= 0:
        raise ValueError(f"sparse_backward: num_paths must be an int >= 1, got {num_paths!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not temperature > 0 or temperature == float("inf"):
        raise ValueError(
            f"sparse_backward: temperature must be a finite float > 0, got {temperature!r}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) \
            or not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"sparse_backward: epsilon must lie in [0, 1], got {epsilon!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(
            f"sparse_backward: weighting must be one of {WEIGHTINGS}, got {weighting!r}")


@dataclass(frozen=True)
class WalkLayer:
    """What the sampler needs to know of one layer.

    weight_rows(rows) returns W[rows] for an int64 tensor of row indices: shape
    (len(rows), in_features // groups, *kernel). Only those rows are read (a seeded layer
    regenerates just them). in_features is the layer's number of input features/channels.
    """
    weight_rows: Callable[[torch.Tensor], torch.Tensor]
    out_features: int
    in_features: int
    groups: int = 1


@dataclass
class WalkSample:
    """One draw. For each layer: visits (out_features,) int64, the number of walks through
    each row; rows (min(out_features, num_paths),) int64, the visited rows ascending,
    padded at the end with -1 (fixed size, so producing it needs no host sync)."""
    visits: Dict[str, torch.Tensor]
    rows: Dict[str, torch.Tensor]


class RandomWalkSampler:
    """Draws `num_paths` backward walks over `graph` (networkx.DiGraph over layer names,
    edge u -> v when u's output feeds v's input) for the layers in `layers`.

    outputs: the layers the walks start from (default: layers with no successor).
    """

    def __init__(self, graph, layers: Dict[str, WalkLayer], *, num_paths: int,
                 temperature: float = 1.0, epsilon: float = 0.0,
                 weighting: str = "magnitude", outputs: Optional[Sequence[str]] = None,
                 device=None, generator: Optional[torch.Generator] = None):
        check_walk_options(num_paths, temperature, epsilon, weighting)
        nodes = [n for n in graph.nodes if n in layers]
        if not nodes:
            raise ValueError(
                "sparse_backward: no eligible layer: the layer graph has no node with a "
                f"weight the walks can use (graph nodes: {list(graph.nodes)[:8]})")
        self.layers = layers
        self.num_paths = num_paths
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.weighting = weighting
        self.device = torch.device(device) if device is not None else None
        self.generator = generator
        self.graph = _acyclic(graph.subgraph(nodes))
        self.order = _reverse_topological(self.graph, nodes)
        if outputs is None:
            outputs = [n for n in nodes if self.graph.out_degree(n) == 0]
        unknown = [n for n in outputs if n not in layers]
        if unknown or not outputs:
            raise ValueError(f"sparse_backward: outputs {list(outputs)} must be a non-empty "
                             f"list of graph layers; not layers: {unknown}")
        self.outputs = list(outputs)
        reached = set(self.outputs)
        for name in self.outputs:
            reached |= nx.ancestors(self.graph, name)
        self.reachable = [n for n in nodes if n in reached]
        self.unreachable = [n for n in nodes if n not in reached]
        for name in self.reachable:
            layer = layers[name]
            if layer.groups < 1 or layer.out_features % layer.groups \
                    or layer.in_features % layer.groups:
                raise ValueError(
                    f"sparse_backward: layer {name!r}: groups={layer.groups} must divide "
                    f"out_features={layer.out_features} and in_features={layer.in_features}")
        self.predecessors: Dict[str, List[str]] = {
            n: [u for u in self.graph.predecessors(n) if u in reached] for n in self.reachable}

    def _rand(self, *shape):
        return torch.rand(shape, device=self.device, generator=self.generator)

    def _randint(self, high: int, n: int):
        return torch.randint(high, (n,), device=self.device, generator=self.generator)

    def sample(self) -> WalkSample:
        """Draw the walks; no host synchronisation, no per-walk Python work."""
        if self.device is None:  # the weights' device, found once
            probe = self.layers[self.outputs[0]].weight_rows(
                torch.zeros(1, dtype=torch.int64))
            self.device = probe.device
        n = self.num_paths
        state = self._start()
        visits, rows = {}, {}
        for name in self.order:
            if name not in state:
                continue
            layer = self.layers[name]
            row, alive = state.pop(name)
            count = torch.zeros(layer.out_features, dtype=torch.int64, device=self.device)
            visits[name] = count.index_add_(0, row, alive.to(torch.int64))
            rows[name] = _compact(visits[name], min(layer.out_features, n))
            preds = self.predecessors[name]
            if not preds:
                continue
            feature = self._draw_columns(layer, row)
            which = self._randint(len(preds), n) if len(preds) > 1 else None
            for k, pred in enumerate(preds):
                moving = alive if which is None else alive & (which == k)
                pred_row = self._map_feature(feature, layer.in_features,
                                             self.layers[pred].out_features)
                if pred in state:
                    old_row, old_alive = state[pred]
                    state[pred] = (torch.where(moving, pred_row, old_row), old_alive | moving)
                else:
                    state[pred] = (torch.where(moving, pred_row, 0), moving)
        for name in self.reachable:  # reachable but no walk arrived this time
            if name not in visits:
                out = self.layers[name].out_features
                visits[name] = torch.zeros(out, dtype=torch.int64, device=self.device)
                rows[name] = torch.full((min(out, n),), -1, dtype=torch.int64,
                                        device=self.device)
        return WalkSample(visits=visits, rows=rows)

    def _start(self):
        """Each walk's first row, uniform over the union of all output layers' rows."""
        n = self.num_paths
        sizes = [self.layers[o].out_features for o in self.outputs]
        start = self._randint(sum(sizes), n)
        if len(sizes) == 1:
            return {self.outputs[0]: (start, torch.ones(n, dtype=torch.bool, device=self.device))}
        state, first = {}, 0
        for name, size in zip(self.outputs, sizes):
            inside = (start >= first) & (start < first + size)
            state[name] = (torch.where(inside, start - first, 0), inside)
            first += size
        return state

    def _map_feature(self, feature, in_features: int, pred_out: int) -> torch.Tensor:
        """Row of the predecessor (pred_out rows) producing input `feature` (module doc)."""
        if pred_out == in_features:
            return feature
        if pred_out % in_features == 0:
            return feature + self._randint(pred_out // in_features, self.num_paths) * in_features
        return torch.div(feature * pred_out, in_features, rounding_mode="floor")

    def _draw_columns(self, layer: WalkLayer, row: torch.Tensor) -> torch.Tensor:
        """For every walk at `row` of `layer`, an input feature index drawn from P(j | row)."""
        n = self.num_paths
        columns = layer.in_features // layer.groups
        if self.weighting == "uniform" or self.epsilon == 1.0:
            column = self._randint(columns, n)
        else:
            weight = layer.weight_rows(row).detach().abs().float()
            if weight.dim() > 2:  # conv: one weight per input channel, summed over the window
                weight = weight.flatten(2).sum(2)
            tiny = torch.finfo(weight.dtype).tiny
            if self.temperature != 1.0:  # scaled by the row's max so 1/T cannot overflow
                peak = weight.amax(1, keepdim=True).clamp_min(tiny)
                weight = (weight / peak).pow(1.0 / self.temperature)
            # every weight at least the smallest normal float: a row of zeros draws
            # uniformly, a zero among normal weights keeps probability ~1e-38 / row sum
            cdf = weight.clamp_min(tiny).cumsum(1)
            target = self._rand(n, 1) * cdf[:, -1:]
            column = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=columns - 1)
            if self.epsilon > 0.0:
                column = torch.where(self._rand(n) < self.epsilon, self._randint(columns, n),
                                     column)
        if layer.groups > 1:
            column = column + torch.div(row, layer.out_features // layer.groups,
                                        rounding_mode="floor") * columns
        return column


def _compact(visits: torch.Tensor, size: int) -> torch.Tensor:
    """The visited rows ascending, padded with -1 to `size` (>= the number visited)."""
    out = visits.shape[0]
    index = torch.arange(out, device=visits.device)
    rows = torch.where(visits > 0, index, out).sort().values[:size]
    return rows.masked_fill_(rows == out, -1)


def _acyclic(graph):
    """The graph without the edges that close a cycle against its node order."""
    graph = nx.DiGraph(graph)
    if nx.is_directed_acyclic_graph(graph):
        return graph
    position = {n: i for i, n in enumerate(graph.nodes)}
    component = {n: k for k, members in enumerate(nx.strongly_connected_components(graph))
                 for n in members}
    graph.remove_edges_from([(u, v) for u, v in list(graph.edges)
                             if component[u] == component[v] and position[u] >= position[v]])
    return graph


def _reverse_topological(graph, nodes) -> List[str]:
    position = {n: i for i, n in enumerate(nodes)}
    order = list(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
    return order[::-1]
