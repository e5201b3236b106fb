"""Test-session setup shared by every test file.

Without a GPU, Triton kernels run on CPU tensors under the interpreter: TRITON_INTERPRET
must be set before any kernel module is imported, so it is set here. Tests marked `cuda`
are skipped without a GPU. `TRITON_DEVICES` lists the devices Triton kernels can be tested
on in this session; parametrise kernel tests over it.
"""

import importlib.util
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

TRITON_DEVICES = []
if HAS_TRITON and INTERPRETED:
    TRITON_DEVICES.append("cpu")
TRITON_DEVICES.append(pytest.param("cuda", marks=pytest.mark.cuda))


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA and HAS_TRITON:
        return
    reason = "needs a CUDA GPU with Triton" if not HAS_CUDA else "needs Triton"
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
