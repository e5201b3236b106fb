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

Randomness is counter-based, so a draw is a pure function of (key, step, weights) that
torch.compile traces into the graph (a torch.Generator cannot be traced): every random
quantity has a fixed slot s (the start rows, and per layer its column, epsilon, epsilon
column, predecessor and slice draws), and walk w of step t reads the PCG hash of
`randfx.generators` (reference.hash_u32, the bit-exact stream) under `key` at counter
t * (num_paths * slots) + s * num_paths + w. Successive steps use consecutive counter
ranges: no counter is used twice, and no hash value repeats within a 2^32-counter block
(the high counter word folds into the key). A uniform in [0, 1) is the top 24 bits of the
hash (the "uniform01" distribution); an integer in [0, high) is (hash * high) >> 32 (bias
below high / 2^32). The numbers, so the walks, are the same on every device (a magnitude
draw could differ only where the float cdf rounds differently).
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import networkx as nx
import torch

from .generators import reference as stream
from .generators import spec

WEIGHTINGS = ("magnitude", "uniform")
HASH = "pcg"  # the cheaper of the project's two hashes; any stream would do
WORD_BLOCK_WORDS = 1 << 15  # CPU draws hash their words this many at a time (_words)
_LAYER_DRAWS = ("column", "epsilon", "epsilon column", "predecessor")  # slots per layer


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

    weight_rows(rows, *inputs) returns W[rows] for an int64 tensor of row indices: shape
    (len(rows), in_features // groups, *kernel). Only those rows are read (a seeded layer
    regenerates just them). inputs are the layer's tensors when the caller of `sample`
    passes them (a traced draw must receive every tensor it reads as an argument), else
    none and weight_rows reads its own. in_features is the layer's number of input
    features/channels.
    """
    weight_rows: Callable[..., torch.Tensor]
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
    key: the 32-bit key of the walks' random stream (module doc); `sample(step)` draws
    step `step` of it.
    """

    def __init__(self, graph, layers: Dict[str, WalkLayer], *, num_paths: int,
                 temperature: float = 1.0, epsilon: float = 0.0,
                 weighting: str = "magnitude", outputs: Optional[Sequence[str]] = None,
                 device=None, key: int = 0):
        check_walk_options(num_paths, temperature, epsilon, weighting)
        self.key = spec.check_key(key, "sparse_backward: key")
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
            if max(layer.out_features, layer.in_features) >= 1 << 31:
                raise ValueError(f"sparse_backward: layer {name!r}: out_features and "
                                 "in_features must be below 2^31")
        self.predecessors: Dict[str, List[str]] = {
            n: [u for u in self.graph.predecessors(n) if u in reached] for n in self.reachable}
        # the counter slot of every random quantity of a draw; slot 0: the start rows
        self._slot: Dict[tuple, int] = {}
        for name in self.reachable:
            if not self.predecessors[name]:
                continue  # the walks end here: nothing to draw
            for what in _LAYER_DRAWS:
                self._slot[name, what] = len(self._slot) + 1
            for pred in self.predecessors[name]:  # a fused predecessor: which slice
                if _sliced(layers[pred].out_features, layers[name].in_features):
                    self._slot[name, pred] = len(self._slot) + 1
        self._slots = len(self._slot) + 1
        self._word_block = None  # (first step, words of a run of steps): CPU draws

    def sample(self, step=0, inputs: Optional[Dict[str, Sequence[torch.Tensor]]] = None
               ) -> WalkSample:
        """Draw the walks of step `step` (an int >= 0, or a 0-d int64 tensor holding one:
        the walks are drawn on its device); no host synchronisation, no per-walk Python work.
        `inputs` (layer name -> tensors) is handed to the layers' weight_rows (WalkLayer).
        The same (key, step, weights) always give the same walks."""
        inputs = inputs or {}
        if isinstance(step, torch.Tensor) and step.dtype == torch.int64 and step.dim() == 0:
            device = step.device
        else:
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"sparse_backward: step must be an int >= 0 or a 0-d int64 "
                                 f"tensor, got {step!r}")
            if self.device is None:  # the weights' device, found once
                self.device = self.layers[self.outputs[0]].weight_rows(
                    torch.zeros(1, dtype=torch.int64)).device
            device = self.device
        n = self.num_paths
        words = self._words(step, device)
        state = self._start(words[0])
        visits, rows = {}, {}
        for name in self.order:
            if name not in state:
                continue
            layer = self.layers[name]
            row, alive = state.pop(name)
            # counted in int32: Inductor turns an int32 index_add_ into one atomic-add
            # kernel, while an int64 one falls back to a sort-based aten index_put_ (about
            # eight kernels, each a CUDA graph node with its launch cost)
            count = torch.zeros(layer.out_features, dtype=torch.int32, device=device)
            visits[name] = count.index_add_(0, row, alive.to(torch.int32)).to(torch.int64)
            rows[name] = _compact(visits[name], min(layer.out_features, n))
            preds = self.predecessors[name]
            if not preds:
                continue
            draws = {what: words[self._slot[name, what]] for what in _LAYER_DRAWS}
            feature = self._draw_columns(layer, row, draws, inputs.get(name, ()))
            which = _below(draws["predecessor"], len(preds)) if len(preds) > 1 else None
            for k, pred in enumerate(preds):
                moving = alive if which is None else alive & (which == k)
                pred_row = self._map_feature(name, pred, feature, words)
                if pred in state:
                    old_row, old_alive = state[pred]
                    state[pred] = (torch.where(moving, pred_row, old_row), old_alive | moving)
                else:
                    state[pred] = (torch.where(moving, pred_row, 0), moving)
        for name in self.reachable:  # reachable but no walk arrived this time
            if name not in visits:
                out = self.layers[name].out_features
                visits[name] = torch.zeros(out, dtype=torch.int64, device=device)
                rows[name] = torch.full((min(out, n),), -1, dtype=torch.int64, device=device)
        return WalkSample(visits=visits, rows=rows)

    def _words(self, step, device) -> torch.Tensor:
        """Every random word of step `step`: words[s, w] is slot s of walk w. On the CPU,
        for a plain int or tensor step outside torch.compile, the words of a run of steps
        (WORD_BLOCK_WORDS words in all) are hashed at once and kept (they do not depend on
        the weights, and one hash over a block costs about what one step's dozens of small
        ops cost); elsewhere (a GPU, a traced or fake step) each draw hashes its own, inside
        the traced or captured graph."""
        n = self.num_paths
        per_step = self._slots * n
        plain_step = isinstance(step, int) or type(step) is torch.Tensor
        if device.type != "cpu" or not plain_step or torch.compiler.is_compiling():
            counters = step * per_step + torch.arange(per_step, device=device).view(-1, n)
            return stream.hash_u32(counters, self.key, HASH)
        step = int(step)  # a CPU tensor: no device to wait for
        steps = max(1, WORD_BLOCK_WORDS // per_step)
        first = step - step % steps
        if self._word_block is None or self._word_block[0] != first:
            counters = first * per_step + torch.arange(steps * per_step)
            self._word_block = (first, stream.hash_u32(counters, self.key, HASH)
                                .view(steps, self._slots, n))
        return self._word_block[1][step - first]

    def _start(self, words: torch.Tensor):
        """Each walk's first row, uniform over the union of all output layers' rows."""
        sizes = [self.layers[o].out_features for o in self.outputs]
        start = _below(words, sum(sizes))
        if len(sizes) == 1:
            return {self.outputs[0]: (start, torch.ones_like(start, dtype=torch.bool))}
        state, first = {}, 0
        for name, size in zip(self.outputs, sizes):
            inside = (start >= first) & (start < first + size)
            state[name] = (torch.where(inside, start - first, 0), inside)
            first += size
        return state

    def _map_feature(self, name: str, pred: str, feature: torch.Tensor,
                     words: torch.Tensor) -> torch.Tensor:
        """Row of `pred` producing input `feature` of layer `name` (module doc)."""
        in_features, pred_out = self.layers[name].in_features, self.layers[pred].out_features
        if pred_out == in_features:
            return feature
        if _sliced(pred_out, in_features):  # the slice: uniform per walk
            slices = _below(words[self._slot[name, pred]], pred_out // in_features)
            return feature + slices * in_features
        return torch.div(feature * pred_out, in_features, rounding_mode="floor")

    def _draw_columns(self, layer: WalkLayer, row: torch.Tensor,
                      draws: Dict[str, torch.Tensor], inputs) -> torch.Tensor:
        """For every walk at `row` of `layer`, an input feature index drawn from P(j | row),
        from the walks' random words `draws` (column, epsilon, epsilon column)."""
        columns = layer.in_features // layer.groups
        if self.weighting == "uniform" or self.epsilon == 1.0:
            column = _below(draws["column"], columns)
        else:
            whole = _sums_every_row(layer.out_features, self.num_paths)
            summed = torch.arange(layer.out_features, device=row.device) if whole else row
            weight = layer.weight_rows(summed, *inputs).detach().abs().float()
            if weight.dim() > 2:  # conv: one weight per input channel, summed over the window
                weight = weight.flatten(2).sum(2)
            tiny = torch.finfo(weight.dtype).tiny
            if self.temperature != 1.0:  # scaled by the row's max so 1/T cannot overflow
                peak = weight.amax(1, keepdim=True).clamp_min(tiny)
                weight = (weight / peak).pow(1.0 / self.temperature)
            # every weight at least the smallest normal float: a row of zeros draws
            # uniformly, a zero among normal weights keeps probability ~1e-38 / row sum
            cdf = weight.clamp_min(tiny).cumsum(1)
            if whole:
                cdf = cdf.index_select(0, row)
            target = _uniform(draws["column"])[:, None] * cdf[:, -1:]
            # the columns whose cumulative weight is at most the target: searchsorted's
            # right insertion point on a nondecreasing cdf, as one fused compare-and-sum
            # (searchsorted is an extra library call on the CPU and a kernel of its own)
            column = (cdf <= target).sum(1).clamp_(max=columns - 1)
            if self.epsilon > 0.0:
                column = torch.where(_uniform(draws["epsilon"]) < self.epsilon,
                                     _below(draws["epsilon column"], columns), column)
        if layer.groups > 1:
            column = column + torch.div(row, layer.out_features // layer.groups,
                                        rounding_mode="floor") * columns
        return column


def _sums_every_row(out_features: int, num_paths: int) -> bool:
    """Whether a draw turns every row of a layer into cumulative sums once, each walk then
    reading its row's (no more rows than walks: 200 walks through a 128-row layer sum 128
    rows, not 200), rather than each walk summing its own row. Both give the same sums bit
    for bit, so the same walks."""
    return out_features <= num_paths


def _sliced(pred_out: int, in_features: int) -> bool:
    """Whether a predecessor of pred_out rows is a fused projection of stacked slices."""
    return pred_out != in_features and pred_out % in_features == 0


def _uniform(words: torch.Tensor) -> torch.Tensor:
    """float32 in [0, 1) from uint32 words: their top 24 bits (the "uniform01" stream)."""
    return (words >> 8).to(torch.float32) * 2.0 ** -24


def _below(words: torch.Tensor, high: int) -> torch.Tensor:
    """int64 in [0, high) from uint32 words: (word * high) >> 32, bias < high / 2^32
    (high < 2^31, so the product fits in int64)."""
    return (words * high) >> 32


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
