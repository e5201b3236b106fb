"""Test-session setup shared by every test file.

Without a GPU, Triton kernels run on CPU tensors under the interpreter: TRITON_INTERPRET
must be set before any kernel module is imported, so it is set here. Tests marked `cuda`
are skipped without a GPU. `TRITON_DEVICES` lists the devices Triton kernels can be tested
on in this session; parametrise kernel tests over it.
"""

import importlib.util
import os
import re

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _interpreter_fault():
    """Why Triton's interpreter cannot run the kernels here, or None. Before 3.7 (what
    torch 2.6-2.10 bring) it hands a kernel its scalar arguments as one-element arrays,
    which numpy 2.4 no longer converts to an int ("only 0-dimensional arrays can be
    converted to Python scalars", at the first `range` over one)."""
    if not (HAS_TRITON and INTERPRETED):
        return None
    import numpy
    import triton

    def version(text):
        return tuple(int(part) for part in re.findall(r"\d+", text)[:2])
    if version(triton.__version__) < (3, 7) and version(numpy.__version__) >= (2, 4):
        return (f"Triton {triton.__version__}'s interpreter fails with numpy "
                f"{numpy.__version__}: pip install 'numpy<2.4' to run the kernels on the CPU")
    return None


INTERPRETER_FAULT = _interpreter_fault()
TRITON_DEVICES = []
if HAS_TRITON and INTERPRETED:
    TRITON_DEVICES.append(pytest.param(
        "cpu", marks=[pytest.mark.skip(reason=INTERPRETER_FAULT)] if INTERPRETER_FAULT else []))
TRITON_DEVICES.append(pytest.param("cuda", marks=pytest.mark.cuda))


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA and HAS_TRITON:
        return
    reason = "needs a CUDA GPU with Triton" if not HAS_CUDA else "needs Triton"
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
