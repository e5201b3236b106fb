"""Generator throughput: `python -m randfx.bench generators [--json OUT]`.

Two columns per stream, both in values per second:
- store: `generate` writing float32 to memory (bounded by memory bandwidth on a GPU),
  next to torch.rand / torch.randn doing the same;
- fused: the generate-and-reduce kernel, every value made in registers and summed, nothing
  stored: the rate a kernel that consumes generated weights pays, next to Triton's own
  tl.rand (Philox) summed the same way.
On CPU only the store column is measured (the Triton kernels need a GPU for timing).
"""

import sys

import torch

from ..generators import DISTRIBUTIONS, GENERATORS, generate
from .common import emit, parser, time_ms


def main(argv=None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--log2n", type=int, default=None,
                   help="values per measurement, as a power of two (default 28 GPU, 22 CPU)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    n = 1 << (args.log2n or (28 if cuda else 22))
    rows = []

    def record(name, dist, store_ms=None, fused_ms=None):
        rows.append({
            "generator": name, "dist": dist, "values": n,
            "store_ms": store_ms, "store_Gval_s": n / store_ms / 1e6 if store_ms else None,
            "fused_ms": fused_ms, "fused_Gval_s": n / fused_ms / 1e6 if fused_ms else None,
        })

    out = torch.empty(n, dtype=torch.float32, device=device)
    record("torch.rand", "uniform01", store_ms=time_ms(lambda: torch.rand(n, out=out), device=device))
    record("torch.randn", "normal", store_ms=time_ms(lambda: torch.randn(n, out=out), device=device))
    if cuda:
        from ..kernels.generate import launch_generate, launch_generate_sum, philox_sum_kernel
        iters, block = 16, 1024  # each sum-kernel program sums iters runs of `block` hashes
        partials = torch.empty(n // (block * iters), dtype=torch.float32, device=device)
        fused = time_ms(lambda: philox_sum_kernel[(partials.numel(),)](
            partials, 1234, BLOCK=block, ITERS=iters), device=device)
        record("triton tl.rand (philox)", "uniform01", fused_ms=fused)
    for generator in GENERATORS:
        for dist in DISTRIBUTIONS:
            if cuda:
                store = time_ms(lambda: launch_generate(out, 99, 0, generator, dist), device=device)
                per_program = iters * block * DISTRIBUTIONS[dist].values_per_hash
                partials = torch.empty(n // per_program, dtype=torch.float32, device=device)
                fused = time_ms(lambda: launch_generate_sum(partials, 99, 0, generator, dist,
                                                            iters=iters, block_groups=block),
                                device=device)
            else:
                store = time_ms(lambda: generate((n,), key=99, generator=generator, dist=dist),
                                device=device, repeat=5)
                fused = None
            record(generator, dist, store_ms=store, fused_ms=fused)
    columns = ["generator", "dist", "values", "store_ms", "store_Gval_s", "fused_ms", "fused_Gval_s"]
    emit("generators", rows, columns, device=device, json_path=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
