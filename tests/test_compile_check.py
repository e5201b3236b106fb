"""Every launch the Triton tests make compiles for NVIDIA GPUs under the installed Triton,
without a GPU (scripts/compile_check.py; the interpreter tests check what the kernels
compute, not that Triton's compiler lowers them). The launches are recorded in
tests/kernel_launches.json; after a change to a kernel's parameters, or a new kernel,
record them again:

    python scripts/compile_check.py record tests/kernel_launches.json
"""

import importlib
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCHES = ROOT / "tests" / "kernel_launches.json"
RECORD = "record them again: python scripts/compile_check.py record tests/kernel_launches.json"

pytest.importorskip("triton")


def _kernels():
    """The names of randfx's Triton kernels: its `*_kernel` Triton functions in
    randfx.kernels that no Triton function calls (a kernel is launched, `name[grid](...)`;
    a device function such as `await_previous_kernel` is called)."""
    import randfx.kernels
    names, source = set(), ""
    for info in pkgutil.iter_modules(randfx.kernels.__path__):
        module = importlib.import_module(f"randfx.kernels.{info.name}")
        source += inspect.getsource(module)
        names |= {name for name, value in vars(module).items()
                  if name.endswith("_kernel") and hasattr(value, "fn")}
    return {name for name in names if not re.search(rf"(?<!def )\b{name}\(", source)}


def test_recorded_launches_cover_every_kernel_with_its_current_parameters():
    specs = json.loads(LAUNCHES.read_text())
    for spec in specs:
        kernel = getattr(importlib.import_module(spec["module"]), spec["kernel"])
        parameters = list(inspect.signature(kernel.fn).parameters)
        assert parameters == list(spec["arguments"]), \
            f"{spec['kernel']}'s parameters changed since its launches were recorded: {RECORD}"
    missing = _kernels() - {spec["kernel"] for spec in specs}
    assert not missing, f"kernels with no recorded launch: {sorted(missing)}; {RECORD}"


def test_every_recorded_launch_compiles_for_sm90_and_sm80():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "compile_check.py"),
                          "compile", str(LAUNCHES)], env=env, capture_output=True, text=True,
                         cwd=ROOT)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-4000:]
    assert " 0 failed" in run.stdout and "compiled 0 launches" not in run.stdout, run.stdout
