"""Whether Triton can be used here, without importing it at randfx import time."""

import functools
import importlib.util
import os


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_runs_on(device) -> bool:
    """True where a Triton kernel can run on tensors of `device`: CUDA with Triton, or
    CPU under TRITON_INTERPRET=1 (the interpreter executes kernels with numpy)."""
    if not triton_available():
        return False
    kind = device.type if hasattr(device, "type") else str(device).split(":")[0]
    return kind == "cuda" or (kind == "cpu" and interpreter_enabled())
