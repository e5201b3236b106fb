"""Compile every launch configuration of randfx's Triton kernels for NVIDIA GPUs, without
a GPU, under whichever Triton is installed: a check that a Triton release still lowers
the kernels (the interpreter tests run their Python semantics, not the compiler).

    python scripts/compile_check.py record launches.json   # interpreter, records launches
    python scripts/compile_check.py compile launches.json  # compiles them, sm_80 and sm_90

`record` runs the Triton tests under TRITON_INTERPRET=1 and writes each distinct launch
(kernel, argument types, constexpr values, num_warps / num_stages); `compile` compiles
each with `triton.compile` for sm_90 (Hopper) and sm_80 (Ampere), the way a CUDA launch
would, plus the variants only a GPU launch takes: programmatic dependent launch on
sm_90 (where this Triton has it) and tensor-core dots in their native precision instead
of the interpreter's fp32 (DOT_IN_FP32). Configurations a GPU never runs are left out:
e4m3 tensors on sm_80 (no fp8 tensor cores), 16-bit tensor-core dots on fp32 x, and
the launches the dispatch does not make on this Triton (the nibble-table kernel without
`tl.gather`, or carrying an adapter on Triton 3.3; dependent launch before 3.5). It prints
one line per failure and a count, and exits 1 if any failed. To check another Triton,
install it beside the same torch (`pip install --no-deps triton==3.2.0`) and run
`compile` again: recording does not depend on the Triton version.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDED_TESTS = ["tests/test_ops_triton.py", "tests/test_generators.py",
                  "tests/test_sparse_backward_op.py"]
POINTER_TYPES = {"torch.float32": "*fp32", "torch.float16": "*fp16", "torch.bfloat16": "*bf16",
                 "torch.float64": "*fp64", "torch.int64": "*i64", "torch.int32": "*i32",
                 "torch.uint8": "*u8", "torch.int8": "*i8", "torch.bool": "*i1",
                 "torch.float8_e4m3fn": "*fp8e4nv"}


def _argument(value):
    """A launch argument as recorded: a pointer type, a scalar type, or a constexpr value."""
    import torch
    if isinstance(value, torch.Tensor):
        return ["pointer", POINTER_TYPES[str(value.dtype)]]
    if isinstance(value, bool):
        return ["scalar", "i1"]
    if isinstance(value, int):
        return ["scalar", "i32" if -2**31 <= value < 2**31 else "i64"]
    if isinstance(value, float):
        return ["scalar", "fp32"]
    if value is None:
        return ["none", None]
    raise TypeError(f"unrecorded launch argument {value!r}")


def _constexpr(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"unrecorded constexpr {value!r}")


def record(out: Path):
    os.environ["TRITON_INTERPRET"] = "1"
    import inspect

    import pytest
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    launches = {}
    run = InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        parameters = inspect.signature(self.fn).parameters
        bound = dict(zip(parameters, args))
        options = {k: kwargs[k] for k in ("num_warps", "num_stages") if k in kwargs}
        bound.update({k: v for k, v in kwargs.items()
                      if k not in ("num_warps", "num_stages", "launch_pdl")})
        spec = {"module": self.fn.__module__, "kernel": self.fn.__name__, "options": options,
                "arguments": {}}
        for name, parameter in parameters.items():
            value = bound.get(name, parameter.default)
            if parameter.annotation is tl.constexpr:
                spec["arguments"][name] = ["constexpr", _constexpr(value)]
            else:
                spec["arguments"][name] = _argument(value)
        launches.setdefault(json.dumps(spec, sort_keys=True), spec)
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording_run
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-m", "not cuda"]
                       + [str(ROOT / t) for t in RECORDED_TESTS])
    if code != 0:
        sys.exit(f"compile_check record: the recorded tests failed (pytest exit {code})")
    # one launch per line; arguments stay in the kernel's parameter order
    lines = sorted(json.dumps(spec) for spec in launches.values())
    out.write_text("[\n" + ",\n".join(lines) + "\n]\n")
    print(f"{len(launches)} distinct launches of "
          f"{len({(s['module'], s['kernel']) for s in launches.values()})} kernels -> {out}")


def _variants(spec, capability):
    """The GPU launches a recorded (interpreter) launch stands for on this capability."""
    from randfx.ops import triton_backend as tb
    arguments = spec["arguments"]
    if spec["kernel"] == "rademacher32_nibble_kernel" \
            and not tb.nibble_kernel_usable(arguments["HAS_DOWN"][1]):
        return []  # the dispatch never picks it on this Triton
    constexprs = {n: a[1] for n, a in arguments.items() if a[0] == "constexpr"}
    pointer = {n: a[1] for n, a in arguments.items() if a[0] == "pointer"}
    if capability < 89 and "*fp8e4nv" in pointer.values():
        return []  # e4m3 x is made and used only where fp8 tensor cores are (8.9+)
    variant = dict(constexprs)
    if variant.get("DOT_IN_FP32"):
        if pointer.get("x_ptr") == "*fp32":
            return []  # fp32 x never reaches a tensor-core kernel on a GPU
        variant["DOT_IN_FP32"] = False
    variants = [(variant, False)]
    if "DEPENDENT_LAUNCH" in constexprs and capability >= 90 \
            and tb.triton_has_dependent_launch():
        variants += [(dict(variant, DEPENDENT_LAUNCH=release), True)
                     for release in ("release_at_start", "release_at_exit")]
    return variants


def _source(fn, spec, constexprs):
    """An ASTSource for this Triton. 3.3 and later: every argument in the signature
    (constexprs as "constexpr", None too), constants keyed by a tuple of argument indices;
    3.2: only the others in the signature (None as "*i8"), constants keyed by name."""
    from triton.compiler import ASTSource

    from randfx.ops.triton_backend import _TRITON_VERSION
    indexed = _TRITON_VERSION >= (3, 3)
    signature, constants = {}, {}
    for index, (name, (kind, value)) in enumerate(spec["arguments"].items()):
        if kind in ("constexpr", "none"):
            constants[(index,) if indexed else name] = constexprs.get(name, value)
            if indexed:
                signature[name] = "constexpr"
            elif kind == "none":
                signature[name] = "*i8"
        else:
            signature[name] = value
    return ASTSource(fn, signature, constants)


def _reason(error: BaseException) -> str:
    """The innermost cause of a compile error and its last line that is not a caret
    (Triton's CompilationError wraps the error of each callee in turn)."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    lines = [line for line in str(error).splitlines() if line.strip() not in ("", "^")]
    return f"{type(error).__name__}: {lines[-1].strip() if lines else ''}"


def _compile_one(task):
    """(label, capability, None or why it failed) of one compile; a worker's job."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    spec, capability, constexprs, options = task
    shown = {k: v for k, v in constexprs.items() if v is not None}
    label = f"sm_{capability} {spec['kernel']} {shown} {options}"
    fn = getattr(importlib.import_module(spec["module"]), spec["kernel"])
    try:
        triton.compile(_source(fn, spec, constexprs), target=GPUTarget("cuda", capability, 32),
                       options=options)
    except Exception as error:  # noqa: BLE001 - every failure is reported
        return label, capability, _reason(error)
    return label, capability, None


def compile_all(path: Path, jobs: int):
    import triton
    specs = json.loads(path.read_text())
    tasks = [(spec, capability, constexprs,
              dict(spec["options"], **({"launch_pdl": True} if dependent else {})))
             for spec in specs for capability in (90, 80)
             for constexprs, dependent in _variants(spec, capability)]
    done, failures, started = Counter(), [], time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for label, capability, failure in pool.map(_compile_one, tasks, chunksize=4):
            if failure is None:
                done[capability] += 1
            else:
                failures.append(f"{label}: {failure}")
                print("FAILED", failures[-1], flush=True)
    print(f"triton {triton.__version__}: compiled {done[90]} launches for sm_90, "
          f"{done[80]} for sm_80 ({len(specs)} recorded), {len(failures)} failed, "
          f"{time.perf_counter() - started:.0f} s")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["record", "compile"])
    parser.add_argument("launches", type=Path)
    parser.add_argument("--jobs", type=int, default=os.cpu_count(),
                        help="compiles at once (default: one per CPU)")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    if args.mode == "record":
        record(args.launches)
        return
    # a cache of its own: a kernel compiled earlier must be compiled again to count
    with tempfile.TemporaryDirectory(prefix="randfx-compile-check-") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        code = compile_all(args.launches, args.jobs)
    sys.exit(code)


if __name__ == "__main__":
    main()
