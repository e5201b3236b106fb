"""Row-sparse backward against the dense backward of one linear layer.

    python -m randfx.bench sparse_backward [--json OUT] [--quick] [--dtype bf16]

For each keep fraction (1/64 ... 1/2 of the output rows, a sorted random subset, as the
sampler hands them over): dense = grad_x = g @ W and grad_W = g^T @ x (cuBLAS / ATen);
sparse = `row_sparse_linear_backward`, what the row-sparse linear's autograd runs (one
gather of the kept columns of g, one GEMM each for grad_x and grad_W, a row copy into a
zeroed grad_W). all_rows = the same op with propagate_all_rows (SparseBackward
propagate="all_rows": grad_x = g @ W through every row, grad_W in the kept rows only).
seeded_gx = grad_x of a seeded weight, generating only the kept rows of
R, against dense_gx = g @ W alone. sample = one draw of that many walks over a two-layer
chain of the same shape (the sampler's cost for one layer); speedup_incl_sample counts it.
Default shape 8192 tokens x 4096 x 4096 (bf16 on CUDA); --quick 256 x 512 x 512 (CPU).
On CUDA every timed call is replayed as a CUDA graph: GPU time, without the host's
dispatch of the ops (which torch.compile or a graphed training step also remove).
"""

import networkx as nx
import torch

from randfx.generators.spec import DEFAULT_DISTRIBUTION, DEFAULT_GENERATOR

from . import common

FRACTIONS = (64, 32, 16, 8, 4, 2)  # keep 1/n of the rows
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _sampler(weight, num_paths, device):
    from randfx.random_walk import RandomWalkSampler, WalkLayer
    layer = WalkLayer(lambda rows: weight[rows], weight.shape[0], weight.shape[1])
    graph = nx.DiGraph([("below", "top")])
    return RandomWalkSampler(graph, {"top": layer, "below": layer}, num_paths=num_paths,
                             device=device, key=0)


def run(tokens, out_features, in_features, dtype, device):
    from randfx.ops.row_sparse import row_sparse_linear_backward, row_sparse_seeded_grad_input
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(tokens, in_features, device=device, dtype=dtype, generator=gen)
    w = torch.randn(out_features, in_features, device=device, dtype=dtype, generator=gen)
    g = torch.randn(tokens, out_features, device=device, dtype=dtype, generator=gen)

    def dense():
        return g @ w, g.t() @ x

    def time_ms(fn):  # GPU time: replayed as a CUDA graph, no host dispatch in it
        return common.time_ms(common.graphed(fn, device), device=device)

    dense_ms = time_ms(dense)
    dense_gx_ms = time_ms(lambda: g @ w)
    key = torch.tensor(7, device=device)
    rows_out = []
    for n in FRACTIONS:
        keep = out_features // n
        rows = torch.randperm(out_features, device=device, generator=gen)[:keep].sort().values

        def sparse(all_rows=False):
            return row_sparse_linear_backward(g, x, w, rows, True, True, False, all_rows)

        def seeded_gx():
            return row_sparse_seeded_grad_input(g, key, 0.01, out_features, in_features, rows,
                                                DEFAULT_GENERATOR, DEFAULT_DISTRIBUTION)

        sampler = _sampler(w, keep, device)
        sparse_ms = time_ms(sparse)
        all_rows_ms = time_ms(lambda: sparse(all_rows=True))
        seeded_ms = time_ms(seeded_gx)
        sample_ms = time_ms(sampler.sample)
        rows_out.append({
            "keep": f"1/{n}", "rows": keep, "dense_ms": dense_ms, "sparse_ms": sparse_ms,
            "speedup": dense_ms / sparse_ms, "all_rows_ms": all_rows_ms,
            "all_rows_speedup": dense_ms / all_rows_ms, "dense_gx_ms": dense_gx_ms,
            "seeded_gx_ms": seeded_ms, "seeded_gx_speedup": dense_gx_ms / seeded_ms,
            "sample_ms": sample_ms, "speedup_incl_sample": dense_ms / (sparse_ms + sample_ms)})
    return rows_out


def main(argv=None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="256 x 512 x 512, for a CPU check")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--tokens", type=int, default=None)
    p.add_argument("--features", type=int, default=None, help="out = in features")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    tokens, features = (256, 512) if args.quick else (8192, 4096)
    tokens, features = args.tokens or tokens, args.features or features
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    rows = run(tokens, features, features, dtype, device)
    columns = ["keep", "rows", "dense_ms", "sparse_ms", "speedup", "all_rows_ms",
               "all_rows_speedup", "dense_gx_ms",
               "seeded_gx_ms", "seeded_gx_speedup", "sample_ms", "speedup_incl_sample"]
    common.emit("sparse_backward", rows, columns, device=device, json_path=args.json,
                notes={"tokens": tokens, "out_features": features, "in_features": features,
                       "dtype": str(dtype)})
    return 0
