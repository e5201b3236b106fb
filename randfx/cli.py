"""The `randfx` command (also `python -m randfx`): one subcommand per task.

    randfx demo [...]       train, save, reload and inspect a model on bundled data
    randfx inspect [...]    summarise an artifact or a model
    randfx bench NAME [...] run a benchmark (same as python -m randfx.bench)
"""

import importlib
import sys

# subcommand -> (module, function, one-line help)
SUBCOMMANDS = {
    "demo": ("randfx.demo", "main", "transform, train, save, reload and inspect an MLP on digits"),
    "inspect": ("randfx.inspect_cli", "main", "summarise an artifact (PATH) or a model (--model)"),
    "bench": ("randfx.bench.__main__", "main", "run a benchmark: randfx bench NAME [--json OUT]"),
}


def _usage() -> str:
    lines = ["usage: randfx {%s} [options]" % ",".join(SUBCOMMANDS), ""]
    lines += [f"  {name:<8} {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name = argv[0]
    if name not in SUBCOMMANDS:
        print(f"randfx: unknown command {name!r}\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function, _ = SUBCOMMANDS[name]
    return getattr(importlib.import_module(module_name), function)(argv[1:]) or 0
