"""python -m randfx.bench passes [--json OUT] [--repeat N] [--scheme S ...]

Time of each pass of the `randfx.transform` pipeline (capture, analyze, select,
reparameterize, lower, emit, ...) on a GPT-2-small-size model (124M parameters, built
from its config, CPU), per scheme; target: all passes together < 2 s. The pass manager
records every pass's wall time (TransformReport.passes); the median over --repeat runs is
shown, next to a plain copy.deepcopy of the same model measured in the same run (the
least any transform that returns a copy must spend). One warm-up transform per scheme is
not counted.
"""

import copy
import statistics
import time

import torch

from . import common

TARGET_SECONDS = 2.0
SCHEMES = {"frozen": {}, "random_base_lora": {"rank": 16}, "subspace": {"dim": 1024}}


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--scheme", action="append", choices=sorted(SCHEMES),
                   help="scheme(s) to time (default: all)")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    from transformers import GPT2Config, GPT2LMHeadModel

    import randfx
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())
    parameters = sum(t.numel() for t in model.parameters())
    copy_s = statistics.median(_seconds(lambda: copy.deepcopy(model))
                               for _ in range(args.repeat))
    rows = [{"scheme": "-", "pass": "deepcopy (baseline)", "seconds": copy_s, "ratio": 1.0}]
    verdicts = {}
    for scheme in args.scheme or list(SCHEMES):
        config = randfx.Config(scheme, seed=1337, **SCHEMES[scheme])
        randfx.transform(model, config)  # warm-up: imports, first-call caches
        runs = [randfx.transform(model, config).randfx_report.passes
                for _ in range(args.repeat)]
        names = [name for name, _, _ in runs[0]]
        medians = {name: statistics.median(run[i][2] for run in runs)
                   for i, name in enumerate(names)}
        total = sum(medians.values())
        rows += [{"scheme": scheme, "pass": name, "seconds": s, "ratio": s / copy_s}
                 for name, s in medians.items()]
        rows.append({"scheme": scheme, "pass": "all passes", "seconds": total,
                     "ratio": total / copy_s})
        verdicts[scheme] = {"seconds": total, "met": total < TARGET_SECONDS,
                            "slowest_pass": max(medians, key=medians.get)}
    common.emit("passes", rows, ["scheme", "pass", "seconds", "ratio"], device="cpu",
                json_path=args.json,
                notes={"model": f"GPT-2 small from config, {parameters} parameters",
                       "target_seconds": TARGET_SECONDS, "repeat": args.repeat,
                       "verdicts": verdicts})
    for scheme, verdict in verdicts.items():
        print(f"{scheme}: all passes {verdict['seconds']:.2f} s, target < {TARGET_SECONDS} s "
              f"{'met' if verdict['met'] else 'NOT met'} (slowest: {verdict['slowest_pass']})")
    return 0
