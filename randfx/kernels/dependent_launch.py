"""Programmatic dependent launch (Hopper and later GPUs, Triton 3.5 and later).

A kernel launched with it (`launch_pdl=True`) may be placed on the GPU while the kernel
before it in the stream is still running, so that its launch and ramp-up hide under the
other's tail instead of following it: the decode path's chain of short kernels (pack or
table, split-K main kernel, epilogue, then the next layer's) loses most of its gaps.

`await_previous_kernel` is the first statement of every kernel that takes part: it
blocks until the previous kernel has finished and its writes are visible (so no load
of the kernel may come before it). DEPENDENT_LAUNCH says when the next kernel may be
placed: "release_at_start" right after that wait (its programs then wait on the GPU for
this kernel to end), "release_at_exit" as this kernel's programs end; "" (a launch
without the attribute) runs as always.
"""

import triton
import triton.language as tl

if hasattr(getattr(tl.extra, "cuda", None), "gdc_wait"):
    @triton.jit
    def await_previous_kernel(DEPENDENT_LAUNCH: tl.constexpr):
        if DEPENDENT_LAUNCH != "":
            tl.extra.cuda.gdc_wait()
        if DEPENDENT_LAUNCH == "release_at_start":
            tl.extra.cuda.gdc_launch_dependents()
else:
    # Triton before 3.4 has no grid dependency control, and compiling a kernel resolves
    # every name in its callees' source, a branch not taken included: so no mention of
    # it here. The host never asks for dependent launch there
    # (ops/triton_backend.py, triton_has_dependent_launch).
    @triton.jit
    def await_previous_kernel(DEPENDENT_LAUNCH: tl.constexpr):
        tl.static_assert(DEPENDENT_LAUNCH == "", "this Triton has no dependent launch")
