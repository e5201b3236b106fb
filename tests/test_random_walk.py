"""The random-walk sampler: its statistics match the stated distribution (chi-square at a
fixed key), graph rules (residual, attention, fan-out, conv groups, cycles), reporting of
unreachable layers, bad input, a draw is a pure function of (key, step), no host
synchronisation on CUDA and the same walks on CPU and CUDA."""

import networkx as nx
import pytest
import torch
from scipy.stats import chisquare

from randfx import random_walk
from randfx.generators.reference import hash_u32
from randfx.random_walk import RandomWalkSampler, WalkLayer

P_CRITICAL = 1e-3  # a correct sampler fails one of these tests with probability ~1e-3


def _dense(weight):
    return WalkLayer(weight_rows=lambda rows: weight[rows], out_features=weight.shape[0],
                     in_features=weight.shape[1])


def _chain(weight_top, pred_out):
    """'top' (the output layer, weight_top) fed by 'below' (pred_out rows)."""
    graph = nx.DiGraph([("below", "top")])
    layers = {"top": _dense(weight_top),
              "below": _dense(torch.ones(pred_out, 3))}
    return graph, layers


def _expected_columns(weight, temperature, epsilon, weighting):
    w = weight.abs().double() ** (1.0 / temperature)
    p = w / w.sum(1, keepdim=True)
    p[w.sum(1) == 0] = 1.0 / p.shape[1]  # a row of zeros draws uniformly
    if weighting == "uniform":
        p = torch.full_like(p, 1.0 / p.shape[1])
    p = (1 - epsilon) * p + epsilon / p.shape[1]
    return p.mean(0)  # start rows are uniform over the output layer


@pytest.mark.parametrize("temperature,epsilon,weighting", [
    (1.0, 0.0, "magnitude"), (0.5, 0.0, "magnitude"), (2.0, 0.3, "magnitude"),
    (1.0, 0.0, "uniform"), (1.0, 1.0, "magnitude")])
def test_column_distribution_matches_the_stated_rule(temperature, epsilon, weighting):
    weight = torch.tensor([[0.1, -2.0, 0.5, 0.0, 1.0, 0.3],
                           [1.0, 1.0, -1.0, 3.0, 0.2, 0.0],
                           [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # all-zero row: uniform
                           [-0.7, 0.05, 0.4, 0.9, -1.5, 2.0]])
    graph, layers = _chain(weight, 6)
    n = 40000
    sampler = RandomWalkSampler(graph, layers, num_paths=n, temperature=temperature,
                                epsilon=epsilon, weighting=weighting,
                                key=11)
    visits = sampler.sample().visits
    assert visits["top"].sum() == n
    assert chisquare(visits["top"].numpy(), [n / 4] * 4).pvalue > P_CRITICAL
    expected = _expected_columns(weight, temperature, epsilon, weighting)
    got = visits["below"].double()
    assert got.sum() == n
    assert chisquare(got.numpy(), (expected * n).numpy()).pvalue > P_CRITICAL


def test_zero_weight_columns_are_never_drawn_without_epsilon():
    weight = torch.tensor([[0.0, 1.0, 0.0, 2.0]])
    graph, layers = _chain(weight, 4)
    visits = RandomWalkSampler(graph, layers, num_paths=5000,
                               key=0).sample().visits
    assert visits["below"][0] == 0 and visits["below"][2] == 0
    ratio = visits["below"][3].item() / visits["below"][1].item()
    assert 1.8 < ratio < 2.2


def _mlp_layers(sizes, seed=0):
    torch.manual_seed(seed)
    names = [f"fc{i}" for i in range(len(sizes) - 1)]
    layers = {name: _dense(torch.randn(sizes[i + 1], sizes[i])) for i, name in enumerate(names)}
    return nx.DiGraph(list(zip(names, names[1:]))), layers


def test_every_row_of_every_layer_with_very_many_paths():
    graph, layers = _mlp_layers([12, 9, 7, 5])
    sample = RandomWalkSampler(graph, layers, num_paths=4000,
                               key=1).sample()
    for name, layer in layers.items():
        assert (sample.visits[name] > 0).all(), name
        torch.testing.assert_close(sample.rows[name], torch.arange(layer.out_features))


def test_rows_are_the_visited_rows_padded():
    graph, layers = _mlp_layers([50, 40, 30, 20])
    sample = RandomWalkSampler(graph, layers, num_paths=6,
                               key=2).sample()
    for name, layer in layers.items():
        rows = sample.rows[name]
        assert rows.shape == (min(6, layer.out_features),)
        visited = torch.nonzero(sample.visits[name]).flatten()
        torch.testing.assert_close(rows[: len(visited)], visited)
        assert (rows[len(visited):] == -1).all()
        assert sample.visits[name].sum() == 6  # each walk crosses each layer once


def test_residual_skip_is_taken_half_the_time():
    """c's input is a + b (a residual add); b reads a. Walks from c continue into a
    directly (the skip) or into b, one of them chosen uniformly."""
    graph = nx.DiGraph([("a", "b"), ("b", "c"), ("a", "c")])
    torch.manual_seed(3)
    layers = {name: _dense(torch.rand(8, 8) + 0.1) for name in "abc"}
    n = 20000
    visits = RandomWalkSampler(graph, layers, num_paths=n,
                               key=3).sample().visits
    through_b = visits["b"].sum().item()
    assert chisquare([through_b, n - through_b], [n / 2, n / 2]).pvalue > P_CRITICAL
    assert visits["a"].sum() == n  # every walk ends in a, by the skip or through b


def test_attention_block_and_fan_out():
    """Two pre-norm transformer blocks: q/k/v -> o, o and the previous block's down
    projection feed the MLP through the residual stream; ln outputs fan out to q, k, v."""
    edges = []
    for blk in ("h0", "h1"):
        src = ["h0.mlp.down"] if blk == "h1" else []
        for p in ("q", "k", "v"):
            edges += [(s, f"{blk}.attn.{p}") for s in src]
            edges.append((f"{blk}.attn.{p}", f"{blk}.attn.o"))
        edges += [(f"{blk}.attn.o", f"{blk}.mlp.up"), (f"{blk}.mlp.up", f"{blk}.mlp.down")]
        edges += [(s, f"{blk}.mlp.up") for s in src]  # the residual stream skips attention
    edges.append(("h1.mlp.down", "head"))
    edges.append(("h1.attn.o", "head"))  # residual stream skips the last MLP
    graph = nx.DiGraph(edges)
    torch.manual_seed(4)
    d, hidden, vocab = 16, 32, 11
    shapes = {"attn.q": (d, d), "attn.k": (d, d), "attn.v": (d, d), "attn.o": (d, d),
              "mlp.up": (hidden, d), "mlp.down": (d, hidden)}
    layers = {f"{b}.{s}": _dense(torch.randn(*shape)) for b in ("h0", "h1")
              for s, shape in shapes.items()}
    layers["head"] = _dense(torch.randn(vocab, d))
    sampler = RandomWalkSampler(graph, layers, num_paths=3000,
                                key=4)
    assert sampler.outputs == ["head"] and sampler.unreachable == []
    visits = sampler.sample().visits
    for name in layers:
        assert visits[name].sum() > 0, name  # every layer is reached
    # attention: every walk at o continues into one of q, k, v, uniformly
    qkv = [visits[f"h1.attn.{p}"].sum().item() for p in "qkv"]
    assert sum(qkv) == visits["h1.attn.o"].sum()
    assert chisquare(qkv, [sum(qkv) / 3] * 3).pvalue > P_CRITICAL
    # fan-out: h0.mlp.down gathers the walks of h1's q, k, v and of the skip from h1.mlp.up
    assert visits["h0.mlp.down"].sum() > sum(qkv)
    assert visits["h0.mlp.down"].sum() < sum(qkv) + visits["h1.mlp.up"].sum()


def test_conv_columns_stay_in_the_row_group_and_sum_the_window():
    # conv: 4 output channels, 6 input channels, groups 2 -> each row sees 3 channels
    weight = torch.zeros(4, 3, 3, 3)
    weight[:, 1] = 1.0  # only input channel 1 of the row's group carries weight
    weight[0, 1, 0, 0] = -5.0  # signs do not matter: |W| summed over the window
    conv = WalkLayer(weight_rows=lambda rows: weight[rows], out_features=4, in_features=6,
                     groups=2)
    below = _dense(torch.ones(6, 2))
    graph = nx.DiGraph([("below", "conv")])
    visits = RandomWalkSampler(graph, {"conv": conv, "below": below}, num_paths=2000,
                               key=5).sample().visits
    # rows 0, 1 (group 0) read channels 0..2 -> channel 1; rows 2, 3 read 3..5 -> channel 4
    assert visits["below"][[0, 2, 3, 5]].sum() == 0
    assert visits["below"][1] + visits["below"][4] == 2000
    assert 800 < visits["below"][1] < 1200  # half the walks start in each group


def test_flatten_maps_features_to_channels():
    """A linear over a flattened (C=4, H*W=9) conv output maps feature j to channel j // 9."""
    graph = nx.DiGraph([("conv", "fc")])
    fc_weight = torch.zeros(3, 36)
    fc_weight[:, 9:18] = 1.0  # only channel 1's features
    layers = {"fc": _dense(fc_weight),
              "conv": WalkLayer(lambda r: torch.ones(len(r), 2, 3, 3), 4, 2)}
    visits = RandomWalkSampler(graph, layers, num_paths=500,
                               key=6).sample().visits
    assert visits["conv"].tolist() == [0, 500, 0, 0]


def test_layer_used_twice_is_entered_once_per_walk():
    graph = nx.DiGraph([("a", "shared"), ("shared", "b"), ("b", "shared"), ("b", "out")])
    torch.manual_seed(7)
    layers = {n: _dense(torch.randn(6, 6)) for n in ("a", "shared", "b", "out")}
    sampler = RandomWalkSampler(graph, layers, num_paths=50,
                                key=7)
    assert ("b", "shared") not in sampler.graph.edges  # the edge closing the cycle
    visits = sampler.sample().visits
    assert all(visits[n].sum() == 50 for n in layers)


def test_unreachable_layers_are_reported():
    graph = nx.DiGraph([("a", "b"), ("c", "d")])
    layers = {n: _dense(torch.ones(3, 3)) for n in "abcd"}
    sampler = RandomWalkSampler(graph, layers, num_paths=5, outputs=["b"])
    assert sampler.unreachable == ["c", "d"]
    sample = sampler.sample()
    assert set(sample.visits) == {"a", "b"}


@pytest.mark.parametrize("kwargs,match", [
    ({"num_paths": 0}, "num_paths must be an int >= 1"),
    ({"num_paths": -3}, "num_paths must be an int >= 1"),
    ({"num_paths": 2.5}, "num_paths must be an int >= 1"),
    ({"temperature": 0.0}, "temperature must be a finite float > 0"),
    ({"temperature": -1.0}, "temperature must be a finite float > 0"),
    ({"epsilon": 1.5}, r"epsilon must lie in \[0, 1\]"),
    ({"epsilon": -0.1}, r"epsilon must lie in \[0, 1\]"),
    ({"weighting": "l2"}, "weighting must be one of"),
    ({"key": 1 << 32}, r"key=4294967296 is outside the accepted range \[0, 2\^32 - 1\]"),
    ({"key": "7"}, r"key must be an int in \[0, 2\^32 - 1\]"),
])
def test_bad_options_are_refused(kwargs, match):
    graph, layers = _mlp_layers([4, 3, 2])
    options = {"num_paths": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        RandomWalkSampler(graph, layers, **options)


def test_no_eligible_layer_is_refused():
    with pytest.raises(ValueError, match="no eligible layer"):
        RandomWalkSampler(nx.DiGraph([("relu", "softmax")]), {}, num_paths=3)


@pytest.mark.cuda
def test_cuda_sampling_never_syncs_with_the_host():
    graph, layers = _mlp_layers([64, 48, 32, 10])
    layers = {n: _dense(l.weight_rows(torch.arange(l.out_features)).cuda())
              for n, l in layers.items()}
    sampler = RandomWalkSampler(graph, layers, num_paths=100, temperature=0.7, epsilon=0.1,
                                device="cuda", key=0)
    step = torch.zeros((), dtype=torch.int64, device="cuda")
    sampler.sample(step)  # warm-up: allocations, lazy init
    torch.cuda.set_sync_debug_mode("error")
    try:
        sample = sampler.sample(step)
        step.add_(1)  # as the sparse_backward pre-hook advances its step buffer
        sampler.sample(7)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert sample.visits["fc2"].sum().item() == 100


@pytest.mark.cuda
def test_cpu_and_cuda_draw_the_same_walks():
    """The uniforms are the bit-exact hash stream, so the walks agree across devices
    (uniform weighting: a magnitude draw could also differ where a float cdf rounds
    differently)."""
    graph, layers = _mlp_layers([24, 16, 12, 10])
    cuda_layers = {n: _dense(l.weight_rows(torch.arange(l.out_features)).cuda())
                   for n, l in layers.items()}
    options = dict(num_paths=300, epsilon=0.1, weighting="uniform", key=21)
    cpu = RandomWalkSampler(graph, layers, **options).sample(5)
    cuda = RandomWalkSampler(graph, cuda_layers, **options).sample(
        torch.tensor(5, device="cuda"))
    for name in layers:
        assert torch.equal(cuda.visits[name].cpu(), cpu.visits[name]), name


def test_fused_projection_slices_are_chosen_uniformly():
    """c_attn (3d rows: q | k | v) feeds c_proj (d inputs): feature j is row j, d + j or
    2d + j of c_attn, each a third of the time."""
    d = 4
    proj = torch.zeros(2, d)
    proj[:, 1] = 1.0  # every walk takes feature 1
    graph = nx.DiGraph([("c_attn", "c_proj")])
    layers = {"c_proj": _dense(proj), "c_attn": _dense(torch.ones(3 * d, d))}
    visits = RandomWalkSampler(graph, layers, num_paths=3000,
                               key=8).sample().visits
    hits = visits["c_attn"][[1, d + 1, 2 * d + 1]]
    assert hits.sum() == 3000
    assert chisquare(hits.numpy(), [1000] * 3).pvalue > P_CRITICAL


def test_a_draw_is_a_pure_function_of_key_and_step():
    graph, layers = _mlp_layers([12, 9, 7, 5])
    sampler = RandomWalkSampler(graph, layers, num_paths=64, temperature=0.7, epsilon=0.2,
                                key=9)
    first = sampler.sample(3).visits
    again = sampler.sample(torch.tensor(3)).visits  # the step as a tensor (a buffer)
    next_step = sampler.sample(4).visits
    other_key = RandomWalkSampler(graph, layers, num_paths=64, temperature=0.7, epsilon=0.2,
                                  key=10).sample(3).visits
    assert all(torch.equal(first[n], again[n]) for n in layers)
    assert not all(torch.equal(first[n], next_step[n]) for n in layers)
    assert not all(torch.equal(first[n], other_key[n]) for n in layers)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("temperature,epsilon", [(1.0, 0.0), (0.6, 0.25)])
def test_summing_every_row_once_draws_the_walks_of_summing_each_walks_row(
        monkeypatch, temperature, epsilon, device):
    """A layer with no more rows than walks turns all its rows into cumulative sums once;
    the walks must be those of each walk summing its own row, bit for bit."""
    graph, layers = _mlp_layers([30, 20, 12, 6], seed=3)
    layers = {n: _dense(l.weight_rows(torch.arange(l.out_features)).to(device))
              for n, l in layers.items()}
    torch.manual_seed(4)
    conv_weight = torch.randn(8, 3, 3, 3, device=device)  # grouped: 8 channels, groups 2
    layers["conv"] = WalkLayer(weight_rows=lambda rows: conv_weight[rows], out_features=8,
                               in_features=6, groups=2)
    layers["fc0"] = _dense(torch.randn(20, 8, device=device))
    layers["stem"] = _dense(torch.randn(6, 5, device=device))
    graph.add_edges_from([("stem", "conv"), ("conv", "fc0")])

    def draws(rule):
        monkeypatch.setattr(random_walk, "_sums_every_row", rule)
        sampler = RandomWalkSampler(graph, layers, num_paths=10, temperature=temperature,
                                    epsilon=epsilon, device=device, key=13)
        return [sampler.sample(torch.tensor(step, device=device)) for step in range(6)]

    assert random_walk._sums_every_row(6, 10) and not random_walk._sums_every_row(12, 10)
    mixed = draws(random_walk._sums_every_row)  # fc2 and conv once, fc1 and fc0 per walk
    for rule in (lambda out, paths: True, lambda out, paths: False):
        for got, want in zip(draws(rule), mixed):
            for name in layers:
                assert torch.equal(got.visits[name], want.visits[name]), name
                assert torch.equal(got.rows[name], want.rows[name]), name


def test_cpu_draws_hash_their_words_in_blocks_of_steps_with_the_same_bits():
    """On the CPU a draw's words come from a block hashed for a run of steps; every
    step's words equal hashing that step alone, across block boundaries, in any order."""
    graph, layers = _mlp_layers([12, 9, 7, 5])
    sampler = RandomWalkSampler(graph, layers, num_paths=50, epsilon=0.2, key=11)
    per_step = sampler._slots * 50
    block = random_walk.WORD_BLOCK_WORDS // per_step
    assert block > 2  # the blocks span several steps
    for step in (block + 1, 0, block - 1, block, 5 * block + 3, 1):
        counters = step * per_step + torch.arange(per_step).view(-1, 50)
        alone = hash_u32(counters, sampler.key, random_walk.HASH)
        assert torch.equal(sampler._words(torch.tensor(step), torch.device("cpu")), alone)


@pytest.mark.parametrize("step", [-1, 2.0, True, torch.tensor(2.0), torch.tensor([2])])
def test_bad_step_is_refused(step):
    graph, layers = _mlp_layers([4, 3, 2])
    with pytest.raises(ValueError, match="step must be an int >= 0 or a 0-d int64 tensor"):
        RandomWalkSampler(graph, layers, num_paths=2).sample(step)
