"""Seeded linear and subspace PMV against dense baselines measured in the same run.

    python -m randfx.bench linear [--json OUT] [--quick] [--dist rademacher32] [--stack 8]

Linear rows (shape out x in, rows of x): dense = F.linear with a materialised W in the
activation dtype (bf16 on CUDA: cuBLAS); seeded = randfx.ops.seeded_linear. Forward+backward:
dense computes grad_x and grad_W; seeded_lora_linear (rank 16 adapters) computes grad_x and
the adapter grads, which is what training a random-base LoRA model needs. `x` columns are
dense time / seeded time (> 1: seeded is faster). On CUDA every timed call is captured in
a CUDA graph and replayed (GPU time, as under torch.compile's "reduce-overhead" or a
graphed decode loop); `seeded_eager_us` / `dense_eager_us` time plain eager calls, host
(Python, dispatcher, launcher) overhead included. `*_stack_us` (decode rows, up to 16):
--stack distinct layers of the shape (dense: distinct W, more than the L2 cache holds;
seeded: distinct keys) called back to back in one graph, time per layer: a decode step's
regime, where one graph launch serves many layers; `stack_x` their ratio.
`seeded_extra_MB` is the peak memory the seeded forward allocates beyond its output (0
where W never exists in memory); `dense_W_MB` what the dense layer keeps resident.

--tune first sweeps the launch parameters (decode tiles per row bucket, the fused vs
materialise crossover, PMV and grad tiles, on 8192x8192 and d=1024), applies the fastest
for the rest of the run and prints them (`tuned` in the JSON).

PMV rows: subspace_weight (W = P alpha for one weight of `numel` values, d coefficients)
and its grad (P^T g) against a PRANC-style torch baseline: the basis drawn with
torch.randn from a torch.Generator, `chunk` basis vectors at a time, re-seeded per chunk,
accumulated with addmv (PRANC's reconstruction loop).
"""

import math

import torch
import torch.nn.functional as F

from . import common
from .common import graphed

SHAPES = [(4096, 4096), (8192, 8192), (28672, 8192)]
ROWS = [1, 4, 16, 256, 8192]
QUICK_SHAPES = [(256, 512)]
QUICK_ROWS = [1, 4, 64]
PMV_NUMEL = 4096 * 4096
QUICK_PMV_NUMEL = 128 * 128
PRANC_CHUNK_BYTES = 256 << 20  # basis vectors held at once by the baseline


def _peak_extra_mb(fn, device) -> float:
    """MB allocated at peak while fn() runs, beyond what it returns."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    kept = out.numel() * out.element_size() if isinstance(out, torch.Tensor) else 0
    return max(0, peak - kept) / 2 ** 20


def linear_rows(shapes, rows_list, dist, rank, dtype, device, time_ms, stack):
    import randfx.ops as ops
    from randfx.ops import heuristics
    key = torch.tensor(12345, device=device)
    out = []
    for out_f, in_f in shapes:
        scale = 1.0 / math.sqrt(in_f)
        w = (torch.rand(out_f, in_f, device=device, dtype=dtype) - 0.5).requires_grad_()
        a = (torch.randn(rank, in_f, device=device, dtype=dtype) * 0.01).requires_grad_()
        b = (torch.randn(out_f, rank, device=device, dtype=dtype) * 0.01).requires_grad_()
        # `stack` distinct layers of this shape, decoded back to back in one graph as a
        # model's decode step does: the per-call cost without a graph launch per call
        stack_ws = [torch.rand(out_f, in_f, device=device, dtype=dtype) - 0.5
                    for _ in range(stack)] \
            if any(heuristics.uses_fused_kernel(rows) for rows in rows_list) else []
        stack_keys = [torch.tensor(12345 + i, device=device) for i in range(stack)]
        for rows in rows_list:
            x = torch.randn(rows, in_f, device=device, dtype=dtype)
            gy = torch.randn(rows, out_f, device=device, dtype=dtype)
            xg = x.clone().requires_grad_()

            def dense_fwd():
                with torch.no_grad():
                    return F.linear(x, w)

            def seeded_fwd():
                return ops.seeded_linear(x, key, out_f, scale, None, "pcg", dist)

            def dense_fb():
                xg.grad = w.grad = None
                F.linear(xg, w).backward(gy)

            def lora_fb():
                xg.grad = a.grad = b.grad = None
                ops.seeded_lora_linear(xg, key, a, b, scale, 2.0, None, "pcg", dist).backward(gy)

            def dense_stack():
                with torch.no_grad():
                    for w_i in stack_ws:
                        F.linear(x, w_i)

            def seeded_stack():
                for key_i in stack_keys:
                    ops.seeded_linear(x, key_i, out_f, scale, None, "pcg", dist)

            timed = [("dense_fwd", dense_fwd), ("seeded_fwd", seeded_fwd),
                     ("dense_fb", dense_fb), ("lora_fb", lora_fb)]
            if stack_ws and heuristics.uses_fused_kernel(rows):
                timed += [("dense_stack", dense_stack), ("seeded_stack", seeded_stack)]
            t = {name: time_ms(graphed(fn, device)) for name, fn in timed}
            stacked = {}
            if "dense_stack" in t:
                stacked = {"dense_stack_us": t["dense_stack"] * 1e3 / stack,
                           "seeded_stack_us": t["seeded_stack"] * 1e3 / stack,
                           "stack_x": t["dense_stack"] / t["seeded_stack"]}
            out.append({
                "shape": f"{out_f}x{in_f}", "rows": rows, "dist": dist,
                "dense_fwd_us": t["dense_fwd"] * 1e3, "seeded_fwd_us": t["seeded_fwd"] * 1e3,
                "fwd_x": t["dense_fwd"] / t["seeded_fwd"],
                "dense_fb_us": t["dense_fb"] * 1e3, "lora_fb_us": t["lora_fb"] * 1e3,
                "fb_x": t["dense_fb"] / t["lora_fb"],
                "dense_eager_us": time_ms(dense_fwd) * 1e3,
                "seeded_eager_us": time_ms(seeded_fwd) * 1e3,
                "seeded_extra_MB": _peak_extra_mb(seeded_fwd, device),
                "dense_W_MB": w.numel() * w.element_size() / 2 ** 20,
                **stacked,
            })
            print(f"  {out[-1]['shape']} rows={rows}: fwd x{out[-1]['fwd_x']:.2f} "
                  f"fb x{out[-1]['fb_x']:.2f}"
                  + (f" stack x{stacked['stack_x']:.2f}" if stacked else ""), flush=True)
        del w, a, b, stack_ws
    return out


def pranc_weight(alpha, numel, seed, chunk):
    """PRANC's reconstruction: theta = sum_k alpha_k basis_k, basis drawn chunk by chunk
    from a re-seeded torch.Generator."""
    out = torch.zeros(numel, device=alpha.device, dtype=alpha.dtype)
    generator = torch.Generator(device=alpha.device)
    for start in range(0, alpha.numel(), chunk):
        generator.manual_seed(seed + start)
        count = min(chunk, alpha.numel() - start)
        basis = torch.randn(count, numel, generator=generator, device=alpha.device)
        out.addmv_(basis.T, alpha[start:start + count])
    return out


def pranc_grad(grad, d, seed, chunk):
    """PRANC's dL/dalpha = basis @ dL/dtheta, regenerating the same chunks."""
    out = torch.empty(d, device=grad.device, dtype=grad.dtype)
    generator = torch.Generator(device=grad.device)
    for start in range(0, d, chunk):
        generator.manual_seed(seed + start)
        count = min(chunk, d - start)
        basis = torch.randn(count, grad.numel(), generator=generator, device=grad.device)
        out[start:start + count] = basis @ grad
    return out


def pmv_rows(numel, ds, dists, device, time_ms):
    import randfx.ops as ops
    key = torch.tensor(777, device=device)
    out = []
    chunk = max(1, PRANC_CHUNK_BYTES // (4 * numel))
    for d in ds:
        alpha = torch.randn(d, device=device)
        grad = torch.randn(numel, device=device)
        base_w = time_ms(graphed(lambda: pranc_weight(alpha, numel, 0, chunk), device))
        base_g = time_ms(graphed(lambda: pranc_grad(grad, d, 0, chunk), device))
        for dist in dists:
            bs = 1.0 / math.sqrt(d)
            t_w = time_ms(graphed(lambda: ops.subspace_weight(alpha, key, numel, 0, bs, "pcg",
                                                              dist), device))
            t_g = time_ms(graphed(lambda: torch.ops.randfx.subspace_weight_backward(
                grad, key, d, 0, bs, "pcg", dist), device))
            out.append({"numel": numel, "d": d, "dist": dist, "pranc_chunk": chunk,
                        "pranc_pmv_ms": base_w, "pmv_ms": t_w, "pmv_x": base_w / t_w,
                        "pranc_grad_ms": base_g, "grad_ms": t_g, "grad_x": base_g / t_g,
                        "pmv_Gelem_s": numel * d / t_w / 1e6})
            print(f"  pmv d={d} {dist}: x{out[-1]['pmv_x']:.1f}, grad x{out[-1]['grad_x']:.1f}",
                  flush=True)
    return out


TUNE_DECODE = {  # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, USE_DOT)
    1: [(1, 32, 256, 4, False), (1, 16, 512, 4, False), (1, 64, 128, 4, False),
        (1, 32, 512, 8, False)],
    4: [(4, 16, 128, 4, False), (4, 32, 128, 4, False), (4, 16, 256, 8, False)],
    16: [(16, 32, 64, 4, True), (16, 64, 64, 4, True), (16, 16, 64, 4, False),
         (16, 16, 128, 8, False)],
}
TUNE_CROSSOVER_ROWS = (16, 64, 256)
TUNE_PMV = [(64, 128, 4), (32, 256, 4), (16, 256, 4), (128, 64, 4), (32, 128, 8)]


def tune_rows(device, t_us, size=8192, numel=PMV_NUMEL, dist="uniform8x4"):
    """Sweeps of the launch parameters: decode tiles per row bucket, the fused vs
    materialise crossover, PMV and grad tiles. Leaves the fastest of each applied in
    randfx.ops.triton_backend and returns (rows, chosen)."""
    import randfx.ops as ops
    from randfx.ops import heuristics, triton_backend as tb

    key = torch.tensor(12345, device=device)
    out, chosen = [], {}

    def record(sweep, rows, config, us, **extra):
        out.append({"sweep": sweep, "rows": rows, "config": str(config), "dist": dist,
                    "us": us, **extra})
        print(f"  {sweep} rows={rows} {config}: {us:.1f} us {extra or ''}", flush=True)
        return us

    for rows, configs in TUNE_DECODE.items():
        x = torch.randn(rows, size, device=device, dtype=torch.bfloat16)
        times = {}
        for config in configs:
            tb.DECODE_CONFIGS[rows] = config
            times[config] = record("decode", rows, config, t_us(
                graphed(lambda: ops.seeded_linear(x, key, size, 0.01, None, "pcg", dist),
                        device)))
        tb.DECODE_CONFIGS[rows] = chosen[f"decode_{rows}"] = min(times, key=times.get)
    saved_limit, fused_wins = heuristics.FUSED_MAX_ROWS, []
    for rows in TUNE_CROSSOVER_ROWS:
        x = torch.randn(rows, size, device=device, dtype=torch.bfloat16)
        times = {}
        for path, limit in (("fused", max(TUNE_CROSSOVER_ROWS)), ("materialise", 0)):
            heuristics.FUSED_MAX_ROWS = limit
            times[path] = record("crossover", rows, path, t_us(
                graphed(lambda: ops.seeded_linear(x, key, size, 0.01, None, "pcg", dist),
                        device)))
        fused_wins.append(times["fused"] < times["materialise"])
    # fused up to the last row count before materialising first wins
    limit = saved_limit if fused_wins[0] else TUNE_CROSSOVER_ROWS[0] // 2
    for rows, wins in zip(TUNE_CROSSOVER_ROWS, fused_wins):
        if not wins:
            break
        limit = rows
    heuristics.FUSED_MAX_ROWS = chosen["fused_max_rows"] = limit
    d = 1024
    alpha = torch.randn(d, device=device)
    grad = torch.randn(numel, device=device)
    pmv_times, grad_times = {}, {}
    for config in TUNE_PMV:
        tb.PMV_BLOCK = tb.PMV_GRAD_BLOCK = config
        pmv_times[config] = t_us(graphed(
            lambda: ops.subspace_weight(alpha, key, numel, 0, 0.03, "pcg", dist), device))
        grad_times[config] = t_us(graphed(lambda: torch.ops.randfx.subspace_weight_backward(
            grad, key, d, 0, 0.03, "pcg", dist), device))
        record("pmv", numel, config, pmv_times[config], grad_us=grad_times[config])
    tb.PMV_BLOCK = chosen["pmv_block"] = min(pmv_times, key=pmv_times.get)
    tb.PMV_GRAD_BLOCK = chosen["pmv_grad_block"] = min(grad_times, key=grad_times.get)
    print("tuned:", chosen, flush=True)
    return out, chosen


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small shapes (runs on CPU)")
    p.add_argument("--dist", default="rademacher32",
                   help="stream distribution of the seeded weight (default: the library's "
                        "default, rademacher32, 32 signs per hash; uniform8x4: 4 per hash)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--rows", type=int, nargs="*", help="override the rows of x")
    p.add_argument("--pmv-d", type=int, nargs="*", default=[1024])
    p.add_argument("--skip-linear", action="store_true")
    p.add_argument("--skip-pmv", action="store_true")
    p.add_argument("--stack", type=int, default=8,
                   help="decode rows (up to 16) also time this many distinct layers of each "
                        "shape called back to back in one CUDA graph, per layer "
                        "(0: skip)")
    p.add_argument("--tune", action="store_true",
                   help="also sweep launch parameters (CUDA only; 8192x8192, d=1024)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    quick = args.quick or device.type != "cuda"
    shapes = QUICK_SHAPES if quick else SHAPES
    rows = args.rows or (QUICK_ROWS if quick else ROWS)
    repeat = 3 if device.type != "cuda" else 20

    def time_ms(fn):
        return common.time_ms(fn, device=device, warmup=1, repeat=repeat)

    from randfx.ops import heuristics, triton_backend
    tuned, chosen = [], {}
    if args.tune and device.type == "cuda":
        from triton.testing import do_bench
        tuned, chosen = tune_rows(device, lambda fn: 1e3 * float(
            do_bench(fn, warmup=10, rep=40, return_mode="median")))
        common.emit("linear-tune", tuned, ["sweep", "rows", "config", "dist", "us", "grad_us"],
                    device=device)
    notes = {"dtype": str(dtype), "tuned": {k: str(v) for k, v in chosen.items()},
             "fused_max_rows": heuristics.FUSED_MAX_ROWS,
             "decode_configs": {str(k): v for k, v in triton_backend.DECODE_CONFIGS.items()},
             "pmv_block": triton_backend.PMV_BLOCK,
             "pmv_grad_block": triton_backend.PMV_GRAD_BLOCK}
    rows_out = []
    if not args.skip_linear:
        rows_out += linear_rows(shapes, rows, args.dist, args.rank, dtype, device, time_ms,
                                min(args.stack, 2) if quick else args.stack)
        common.emit("linear", rows_out,
                    ["shape", "rows", "dist", "dense_fwd_us", "seeded_fwd_us", "fwd_x",
                     "dense_fb_us", "lora_fb_us", "fb_x", "dense_stack_us",
                     "seeded_stack_us", "stack_x", "dense_eager_us", "seeded_eager_us",
                     "seeded_extra_MB", "dense_W_MB"],
                    device=device)
    pmv = []
    if not args.skip_pmv:
        ds = [min(d, 64) for d in args.pmv_d] if quick else args.pmv_d
        pmv = pmv_rows(QUICK_PMV_NUMEL if quick else PMV_NUMEL, ds,
                       ["uniform", "uniform8x4", "rademacher32"], device, time_ms)
        common.emit("linear-pmv", pmv,
                    ["numel", "d", "dist", "pranc_chunk", "pranc_pmv_ms", "pmv_ms", "pmv_x",
                     "pranc_grad_ms", "grad_ms", "grad_x", "pmv_Gelem_s"], device=device)
    if args.json:
        _write_json(args.json, rows_out, pmv, tuned, notes, device)
    return 0


def _write_json(path, linear, pmv, tuned, notes, device):
    """All tables in one file (common.emit writes one table per file)."""
    import json
    with open(path, "w") as f:
        json.dump({"benchmark": "linear", "facts": common.run_facts(device), "notes": notes,
                   "rows": linear, "pmv_rows": pmv, "tune_rows": tuned}, f, indent=2)
    print(f"wrote {path}")
