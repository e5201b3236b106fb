"""Benchmarks: `python -m randfx.bench NAME [--json out.json] ...`.

Each benchmark is a module `randfx.bench.NAME` with `main(argv) -> int`. It prints a
table and, with --json, writes its rows. Ratios are always against a baseline measured in
the same run. Shared plumbing (timing, tables, JSON, device facts) is in `common.py`.
"""

BENCHMARKS = ("generators", "linear", "decode", "sparse_backward", "transform", "passes",
              "mnist", "artifact", "train")
