"""The Triton implementations of the randfx ops against the plain-torch reference.

Parametrised over conftest.TRITON_DEVICES: "cpu" runs the kernels under TRITON_INTERPRET=1
(tiny shapes: the interpreter is slow), "cuda" (marked `cuda`) runs the same checks on a
GPU. `library.run(name, backend, ...)` calls an op body with a chosen backend, so the
Triton path is forced even on CPU. Generated values must be bit-exact; products match to
floating-point tolerance.
"""

import pytest
import torch

from conftest import INTERPRETER_FAULT, TRITON_DEVICES
from randfx.ops import heuristics, library, triton_backend

KEY = 0x9E3779B9 + 12345  # above 2^31: exercises the uint32 key conversion in the kernels


def key_on(device, value=KEY):
    return torch.tensor(value, dtype=torch.int64, device=device)


def both(name, *args):
    return library.run(name, "reference", *args), library.run(name, "triton", *args)


def assert_close(got, want, dtype):
    tol = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    scale = want.double().abs().max().item() + 1e-12
    err = (got.double() - want.double()).abs().max().item() / scale
    assert got.dtype == want.dtype and got.shape == want.shape
    assert err <= tol, f"relative max error {err:.3g} > {tol}"


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("generator", ["pcg", "squirrel5"])
@pytest.mark.parametrize("dist", ["uniform", "uniform01", "rademacher", "uniform8x4",
                                  "rademacher32", "normal"])
def test_generate_weight_bits(device, generator, dist):
    # (2, 2, 512) is viewed as rows of 1024 values; the others as one flat row
    for shape, dtype in (((4, 64), torch.float32), ((5, 3, 7), torch.bfloat16),
                         ((33,), torch.float16), ((2, 2, 512), torch.float32)):
        want, got = both("generate_weight", key_on(device), list(shape), 0.75, generator,
                         dist, dtype)
        # normal: Box-Muller's cos/log differ by ulps between libraries (tolerance 1e-5,
        # plus one ulp of the output dtype); bf16 on the interpreter: numpy truncates
        # fp32 -> bf16 where GPUs round to nearest even (the fp32 bits are checked exact)
        if dist == "normal" or (dtype == torch.bfloat16 and device == "cpu"):
            eps = torch.finfo(dtype).eps
            assert torch.allclose(got.float(), want.float(), rtol=eps, atol=4e-5 if dist == "normal" else 0)
        else:
            assert torch.equal(got, want), (shape, dtype)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("dist", ["uniform", "uniform8x4", "rademacher32"])
def test_materialize_named_rows_bits(device, dist):
    """materialize(row_index=...) writes exactly those rows of the full W, in that order
    (the row-sparse backward of a seeded layer); bit-exact, grouped or not."""
    rows, cols = 70, 96
    index = torch.tensor([69, 0, 33, 34, 5, 0, 64], dtype=torch.int64, device=device)
    full = library.run("generate_weight", "reference", key_on(device), [rows, cols], 0.5,
                       "pcg", dist, torch.float32)
    got = triton_backend.materialize(key_on(device), rows, cols, 0.5, "pcg", dist,
                                     torch.float32, row_index=index)
    assert torch.equal(got, full[index])


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("groups", [4, 8])
def test_rademacher32_pair_tile_bits(device, groups):
    """The tensor-core decode's W tile: column L of a step holds exactly the weight
    column rademacher32_operand_columns(GROUPS, 2) names (a permutation of the step's columns), with
    the stream's +-1 bit for bit."""
    from _tile_kernels import pair_tile_kernel
    rows, steps = 8, 2
    cols = 32 * groups * steps
    tile = torch.empty(rows, cols, dtype=torch.bfloat16, device=device)
    column = torch.empty(cols, dtype=torch.int32, device=device)
    pair_tile_kernel[(steps,)](key_on(device), tile, column, cols, 0, ROWS=rows,
                               GROUPS=groups)
    full = library.run("generate_weight", "reference", key_on(device), [rows, cols], 1.0,
                       "pcg", "rademacher32", torch.float32)
    per_step = column.view(steps, -1).long() - torch.arange(steps, device=device)[:, None] \
        * 32 * groups
    assert torch.equal(per_step.sort(1).values,
                       torch.arange(32 * groups, device=device).expand(steps, -1))
    assert torch.equal(tile.float(), full[:, column.long()])


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("rows", [1, 3, 16, 40])  # 40 > FUSED_MAX_ROWS: materialise path
@pytest.mark.parametrize("transpose", [False, True])
def test_seeded_matmul(device, rows, transpose):
    """Several k blocks with a ragged last one, n not a multiple of the block; grouped
    (one hash for 4 or 32 weights) and per-element hashing, every epilogue."""
    out_f, in_f = 24, 320
    torch.manual_seed(rows)
    for dist, dtype, epilogue in (("uniform", torch.float32, True),
                                  ("uniform8x4", torch.bfloat16, False),
                                  ("rademacher32", torch.float16, True),
                                  ("rademacher", torch.float32, False)):
        k_dim, n_dim = (out_f, in_f) if transpose else (in_f, out_f)
        x = torch.randn(rows, 2 * k_dim, device=device).to(dtype)[:, ::2]  # non-contiguous
        bias = torch.randn(2 * n_dim, device=device)[::2] if epilogue else None
        u = torch.randn(rows, 3, device=device) if epilogue else None
        v = torch.randn(5, n_dim, device=device).T[:, :3] if epilogue else None
        want, got = both("seeded_matmul", x, key_on(device), out_f, in_f, 0.2, transpose, bias,
                         u, v, "pcg", dist)
        assert_close(got, want, dtype)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("rows, kernel", [(1, "gemv"), (2, "mma"), (3, "mma"), (9, "mma"),
                                          (1, "nibble"), (2, "nibble"), (3, "packed_mma"),
                                          (9, "packed_mma"), (2, "fp8_mma"), (3, "fp8_mma"),
                                          (9, "fp8_mma")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("in_f", [320, 384])
def test_rademacher32_decode_kernels(device, rows, kernel, dtype, in_f, monkeypatch):
    """The CUDA-core decode kernel (one row, a predicated add), the tensor-core one (2-16
    rows, its columns permuted; on large layers reading x packed in that order, or split
    into two e4m3 terms for bf16 x) and the nibble-table one (1-2 rows of large layers),
    the large-layer forms forced on a small layer, split over K with a ragged last split,
    K a whole number of k steps (384 = 3 steps of 4 hash groups) or not (320), with every
    epilogue, and a LoRA layer whose adapter's down projection the same kernel computes
    (11 ranks: more than its programs per split and than one unrolled step of the
    epilogue's rank loop); each must be the path taken."""
    if kernel.endswith("mma") and device == "cuda" and dtype == torch.float32:
        pytest.skip("fp32 x keeps the general kernel on a GPU (tested below)")
    if kernel == "fp8_mma" and dtype != torch.bfloat16:
        pytest.skip("the fp8 kernel serves bf16 x only (the dispatch test checks it)")
    if kernel == "nibble" and not triton_backend._HAS_GATHER:
        pytest.skip("this Triton has no tl.gather: the nibble kernel is not used")
    small = {bucket: (16, 2, 4) for bucket in triton_backend.SIGN_GEMV_CONFIGS}
    monkeypatch.setattr(triton_backend, "SIGN_GEMV_CONFIGS", small)
    monkeypatch.setattr(triton_backend, "SIGN_MMA_CONFIG", (16, 4, 4, 2))
    monkeypatch.setattr(triton_backend, "SIGN_FP8_CONFIG", (16, 4, 4, 2))
    monkeypatch.setattr(triton_backend, "SIGN_MMA_PROGRAMS_PER_SM", 4)
    monkeypatch.setattr(triton_backend, "SIGN_NIBBLE_CONFIGS", {1: (16, 2, 4), 2: (16, 2, 4)})
    monkeypatch.setattr(triton_backend, "SIGN_NIBBLE_TABLE_BLOCK", 16)
    monkeypatch.setattr(heuristics, "SIGN_PREP_MIN_WEIGHTS",
                        0 if kernel in ("nibble", "packed_mma") else 1 << 62)
    monkeypatch.setattr(heuristics, "SIGN_FP8_MIN_WEIGHTS",
                        0 if kernel == "fp8_mma" else 1 << 62)
    # a LoRA layer's one row takes the nibble kernel whatever its size: the CUDA-core
    # kernel's down projection (its form where tl.gather is missing) is tested here too
    monkeypatch.setattr(heuristics, "SIGN_LORA_NIBBLE_MAX_ROWS", 1 if kernel == "nibble" else 0)
    calls = []
    real = triton_backend._rademacher32_decode
    monkeypatch.setattr(triton_backend, "_rademacher32_decode",
                        lambda *args: calls.append((args[0], args[-1] is not None))
                        or real(*args))
    torch.manual_seed(rows)
    x = torch.randn(rows, 2 * in_f, device=device).to(dtype)[:, ::2]  # strided
    bias, u, v = (torch.randn(24, device=device), torch.randn(rows, 3, device=device),
                  torch.randn(24, 3, device=device))
    for epilogue in ((None, None, None), (bias, u, v)):
        want, got = both("seeded_matmul", x, key_on(device), 24, in_f, 0.2, False, *epilogue,
                         "pcg", "rademacher32")
        assert_close(got, want, dtype)
    lora_A = torch.randn(2 * 11, in_f, device=device)[::2]  # strided
    lora_B = torch.randn(24, 11, device=device)
    for down_k in (triton_backend.LORA_DOWN_K, 32):  # a split in one step, in several
        monkeypatch.setattr(triton_backend, "LORA_DOWN_K", down_k)
        want, got = both("seeded_lora_linear", x, key_on(device), lora_A, lora_B, 0.2, 0.3,
                         bias, "pcg", "rademacher32")
        assert_close(got, want, dtype)
    assert calls[:2] == [(kernel, False)] * 2 and [down for _, down in calls[2:]] == [True] * 2
    if kernel == "nibble" and not triton_backend.nibble_kernel_usable(lora=True):
        assert "nibble" not in [k for k, _ in calls[2:]]  # Triton 3.3: not with an adapter
    else:
        assert [k for k, _ in calls[2:]] == [kernel] * 2
    # in_features not a multiple of 32: the general kernel serves it
    want, got = both("seeded_matmul", x[:, :300], key_on(device), 24, 300, 0.2, False, None,
                     None, None, "pcg", "rademacher32")
    assert_close(got, want, dtype)
    assert len(calls) == 4


def test_rademacher32_decode_kernel_choice(monkeypatch):
    """On a GPU: the CUDA-core kernel up to SIGN_GEMV_MAX_ROWS rows, tensor cores above
    for 16-bit x only (fp32 x would be rounded), the general kernel for other layouts;
    layers of SIGN_PREP_MIN_WEIGHTS weights or more: the nibble kernel up to
    SIGN_NIBBLE_MAX_ROWS rows (any float x), tensor cores on packed x above; from 2 rows
    of bf16 x on layers of SIGN_FP8_MIN_WEIGHTS or more the fp8 tensor-core kernel where
    the GPU has fp8 tensor cores."""
    def choice(rows, dtype=torch.bfloat16, cols=320, transpose=False, dist="rademacher32",
               out=24, lora=False):
        x = torch.empty(rows, cols, dtype=dtype, device="meta")
        return triton_backend._rademacher32_decode_kernel(x, out, cols, transpose, dist, lora)
    assert choice(1) == choice(heuristics.SIGN_GEMV_MAX_ROWS) == "gemv"
    assert choice(heuristics.SIGN_GEMV_MAX_ROWS + 1) == choice(16) == "mma"
    assert choice(8, torch.float16) == "mma"
    assert choice(8, torch.float32) is None
    assert choice(8, cols=300) is None and choice(8, transpose=True) is None
    assert choice(8, dist="uniform8x4") is None
    assert heuristics.SIGN_FP8_MIN_WEIGHTS <= heuristics.SIGN_PREP_MIN_WEIGHTS
    big = {"out": 8192, "cols": heuristics.SIGN_PREP_MIN_WEIGHTS // 8192}
    smaller = {"out": 8192, "cols": big["cols"] - 32}
    fp8_smallest = {"out": 4096, "cols": heuristics.SIGN_FP8_MIN_WEIGHTS // 4096}
    assert choice(2, **big) == choice(16, **big) == choice(2, **fp8_smallest) == "fp8_mma"
    assert choice(16, out=4096, cols=fp8_smallest["cols"] - 32) == "mma"
    assert choice(heuristics.SIGN_NIBBLE_MAX_ROWS + 1, torch.float16, **big) \
        == choice(16, torch.float16, **big) == "packed_mma"
    assert choice(16, torch.float16, **smaller) == "mma"
    assert choice(16, torch.float32, **big) is None
    if triton_backend._HAS_GATHER:
        assert choice(1, **big) == choice(heuristics.SIGN_NIBBLE_MAX_ROWS, torch.float16, **big) \
            == choice(2, torch.float32, **big) == "nibble"
        assert choice(1, **smaller) == "gemv"
        # a LoRA layer: the nibble kernel up to SIGN_LORA_NIBBLE_MAX_ROWS rows, any size
        # (Triton 3.3, whose compiler fails on that launch: the CUDA-core kernel)
        lora_rows = heuristics.SIGN_LORA_NIBBLE_MAX_ROWS
        lora_kernel = "nibble" if triton_backend.nibble_kernel_usable(lora=True) else "gemv"
        assert choice(lora_rows, lora=True) == choice(1, torch.float32, lora=True) \
            == lora_kernel
        assert choice(lora_rows + 1, torch.float16, lora=True) == "mma"
    # a GPU without fp8 tensor cores (compute capability before 8.9): the 16-bit kernels
    monkeypatch.setattr(triton_backend, "_has_fp8_tensor_cores", lambda device: False)
    assert choice(16, **big) == "packed_mma" and choice(16, **smaller) == "mma"
    if triton_backend._HAS_GATHER:
        assert choice(2, **big) == "nibble"


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_fp8_terms_hold_bf16_x_exactly(device):
    """rademacher32_pack_x_fp8_kernel's two e4m3 terms give back every bf16 x whose
    magnitude is within 2^-14 of its split's largest (e4m3's normal range), whatever the
    row's scale, in `rademacher32_operand_columns(GROUPS, 4)` order, with rows past M and
    columns past K zero."""
    from randfx.kernels.seeded_matmul import rademacher32_pack_x_fp8_kernel
    torch.manual_seed(0)
    rows, cols, groups, block_m, k_per_split = 3, 600, 4, 8, 256
    magnitude = torch.exp2(torch.randint(-13, 1, (rows, cols)).float())
    row_scale = torch.tensor([2.0 ** 40, 1.0, 2.0 ** -30])[:, None]
    x = (torch.randn(rows, cols).sign() * magnitude * (1 + torch.rand(rows, cols))
         * row_scale).to(torch.bfloat16).to(device)
    steps = -(-cols // (32 * groups))
    splits = -(-cols // k_per_split)
    packed = torch.full((2 * block_m, steps * 32 * groups), 3.0,
                        device=device).to(torch.float8_e4m3fn)  # poison: never a term here
    scale = torch.empty(splits, block_m, device=device)
    rademacher32_pack_x_fp8_kernel[(splits, block_m)](
        x, packed, scale, rows, cols, k_per_split, x.stride(0), x.stride(1), packed.stride(0),
        GROUPS=groups, BLOCK_M=block_m)
    terms = packed.float().cpu()
    L = torch.arange(32 * groups)
    order = ((L & ~127) + 32 * ((L >> 2) & 3) + 2 * ((L >> 5) & 3) + ((L >> 4) & 1)
             + 8 * (L & 3))
    columns = (torch.arange(steps)[:, None] * 32 * groups + order[None, :]).flatten()
    back = (terms[0::2] + terms[1::2] / 16) * scale.cpu()[columns // k_per_split].T
    inside = columns < cols
    assert torch.equal(back[:rows, inside], x.float().cpu()[:, columns[inside]])
    assert not back[:rows, ~inside].any() and not back[rows:].any()


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_fp8_decode_keeps_non_finite_x_non_finite(device, monkeypatch):
    """e4m3 has no infinity: an inf (or NaN) in a row of x must still give non-finite
    outputs in that row through the fp8 kernel (never a finite wrong number), and leave
    the other rows as the reference has them."""
    monkeypatch.setattr(heuristics, "SIGN_FP8_MIN_WEIGHTS", 0)
    monkeypatch.setattr(triton_backend, "SIGN_FP8_CONFIG", (16, 4, 4, 1))
    monkeypatch.setattr(triton_backend, "SIGN_MMA_PROGRAMS_PER_SM", 4)
    calls = []
    real = triton_backend._rademacher32_decode
    monkeypatch.setattr(triton_backend, "_rademacher32_decode",
                        lambda *args: calls.append(args[0]) or real(*args))
    x = torch.randn(3, 384, device=device).to(torch.bfloat16)
    x[0, 5], x[1, 300] = float("inf"), float("nan")
    want, got = both("seeded_matmul", x, key_on(device), 24, 384, 0.2, False, None, None,
                     None, "pcg", "rademacher32")
    assert calls == ["fp8_mma"]
    assert not got[:2].isfinite().any() and not want[:2].isfinite().any()
    assert_close(got[2:], want[2:], torch.bfloat16)


@pytest.mark.cuda
@pytest.mark.parametrize("rows, dtype, kernel", [
    (1, torch.bfloat16, "nibble"), (2, torch.bfloat16, "fp8_mma"),
    (3, torch.bfloat16, "fp8_mma"), (16, torch.bfloat16, "fp8_mma"),
    (1, torch.float16, "nibble"), (2, torch.float16, "nibble"),
    (3, torch.float16, "packed_mma"), (16, torch.float16, "packed_mma")])
def test_rademacher32_decode_large_layer(rows, dtype, kernel, monkeypatch):
    """A layer large enough for the x-preparing kernels under the shipped threshold and
    launch configurations (8192 x 8192, 8 K splits): the dispatch takes them and matches
    the reference, with bias and adapter, given as factors or as a LoRA layer."""
    calls = []
    real = triton_backend._rademacher32_decode
    monkeypatch.setattr(triton_backend, "_rademacher32_decode",
                        lambda *args: calls.append(args[0]) or real(*args))
    out_f = in_f = 8192
    assert out_f * in_f >= heuristics.SIGN_PREP_MIN_WEIGHTS
    torch.manual_seed(rows)
    if kernel == "nibble" and not triton_backend._HAS_GATHER:
        pytest.skip("this Triton has no tl.gather: the nibble kernel is not used")
    x = torch.randn(rows, in_f, device="cuda").to(dtype)
    bias, u, v = (torch.randn(out_f, device="cuda"), torch.randn(rows, 3, device="cuda"),
                  torch.randn(out_f, 3, device="cuda"))
    want, got = both("seeded_matmul", x, key_on("cuda"), out_f, in_f, in_f ** -0.5, False,
                     bias, u, v, "pcg", "rademacher32")
    assert_close(got, want, dtype)
    # a rank-16 adapter, its down projection computed by the same kernel
    lora_A, lora_B = torch.randn(16, in_f, device="cuda"), torch.randn(out_f, 16, device="cuda")
    want, got = both("seeded_lora_linear", x, key_on("cuda"), lora_A, lora_B, in_f ** -0.5,
                     0.5, bias, "pcg", "rademacher32")
    assert_close(got, want, dtype)
    assert calls == [kernel, kernel]


@pytest.mark.skipif(INTERPRETER_FAULT is not None, reason=str(INTERPRETER_FAULT))
def test_dependent_launch_release_points(monkeypatch):
    """Every kernel of the decode chain asks for dependent launch; each lets the next be
    placed right after its wait, except the main kernel of a LoRA layer or of more than
    DEPENDENT_EARLY_MAX_ROWS rows (its epilogue is heavy), which releases at its exit.
    Recorded on the CPU (the interpreter never gets the launch option itself)."""
    requests = []
    monkeypatch.setattr(triton_backend, "_dependent_launch",
                        lambda device, release_at_start=True:
                        requests.append(release_at_start) or {})
    early = triton_backend.DEPENDENT_EARLY_MAX_ROWS
    x = torch.randn(early + 1, 64)
    lora_A, lora_B = torch.randn(3, 64), torch.randn(32, 3)
    # one row: the CUDA-core kernel (a LoRA layer: the nibble kernel after its table);
    # more rows: the tensor-core kernel
    for rows, lora, main_early in ((1, False, True), (early, False, True),
                                   (early + 1, False, False), (1, True, False),
                                   (early, True, False)):
        requests.clear()
        if lora:
            library.run("seeded_lora_linear", "triton", x[:rows], key_on("cpu"), lora_A,
                        lora_B, 0.2, 0.5, None, "pcg", "rademacher32")
        else:
            library.run("seeded_matmul", "triton", x[:rows], key_on("cpu"), 32, 64, 0.2,
                        False, None, None, None, "pcg", "rademacher32")
        # an x-preparing launch first where the chain has one (the LoRA nibble table)
        assert requests[-2:] == [main_early, True], (rows, lora, requests)
        assert all(requests[:-2]), (rows, lora, requests)


@pytest.mark.cuda
@pytest.mark.parametrize("size, rows, dtype", [
    (4096, 1, torch.bfloat16), (4096, 16, torch.bfloat16), (8192, 1, torch.bfloat16),
    (8192, 2, torch.float16), (8192, 16, torch.bfloat16), (8192, 16, torch.float16)])
def test_dependent_launch_chain_matches_serialized(size, rows, dtype, monkeypatch):
    """Eight square layers (frozen and LoRA, alternating), each one's output the next
    one's input, captured in one CUDA graph: launched dependently (each kernel may start
    under the previous one's tail and must wait for its writes before reading), the bits
    equal those of serialized launches, for every kernel chain of the decode dispatch
    (gemv, tensor cores, nibble table, packed and fp8 x). On Hopper with Triton 3.6 or
    later (the versions this was measured on) dependent launch must be what the dispatch
    uses; before Hopper it must not be."""
    device = torch.device("cuda")
    capability = torch.cuda.get_device_capability(device)
    if capability >= (9, 0) and triton_backend._TRITON_VERSION >= (3, 6):
        assert triton_backend._has_dependent_launch(device)
    if capability < (9, 0):
        assert not triton_backend._has_dependent_launch(device)
    torch.manual_seed(size + rows)
    keys = [key_on("cuda", KEY + layer) for layer in range(8)]
    adapters = [(torch.randn(16, size, device="cuda") * size ** -0.5,
                 torch.randn(size, 16, device="cuda") * 0.05) for _ in range(8)]
    x = torch.randn(rows, size, device="cuda").to(dtype)

    def chain():
        h = x
        for layer, (key, (lora_A, lora_B)) in enumerate(zip(keys, adapters)):
            if layer % 2:
                h = library.run("seeded_lora_linear", "triton", h, key, lora_A, lora_B,
                                size ** -0.5, 0.5, None, "pcg", "rademacher32")
            else:
                h = library.run("seeded_matmul", "triton", h, key, size, size, size ** -0.5,
                                False, None, None, None, "pcg", "rademacher32")
        return h

    def replayed():
        chain()  # compiled before the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = chain()
        graph.replay()
        torch.cuda.synchronize()
        return out.clone()

    dependent = replayed()
    monkeypatch.setattr(triton_backend, "DEPENDENT_LAUNCH", False)
    serialized = replayed()
    assert dependent.isfinite().all() and dependent.abs().max() > 0
    assert torch.equal(dependent, serialized)


def test_kernel_labels_follow_the_dispatch():
    """randfx.roofline.choose_kernel (Triton-free: inspect and the compile backend) names
    the kernel family the CUDA ops dispatch to."""
    from randfx.roofline import choose_kernel
    two, three = heuristics.SIGN_GEMV_MAX_ROWS, heuristics.SIGN_GEMV_MAX_ROWS + 1
    assert choose_kernel(two, "rademacher32", torch.bfloat16) == "gemv"
    assert choose_kernel(three, "rademacher32", torch.bfloat16) == "gemm"
    # 1-2 rows of a large layer: the nibble kernel, on CUDA cores, except for 2 rows of
    # bf16 x (the fp8 kernel, on tensor cores)
    nibble_rows = heuristics.SIGN_NIBBLE_MAX_ROWS
    large, smaller = (8192, heuristics.SIGN_PREP_MIN_WEIGHTS // 8192), (4096, 4096)
    assert choose_kernel(1, "rademacher32", torch.bfloat16, shape=large) == "gemv"
    assert choose_kernel(nibble_rows, "rademacher32", torch.float16, shape=large) == "gemv"
    assert choose_kernel(nibble_rows, "rademacher32", torch.bfloat16, shape=large) == "gemm"
    assert choose_kernel(nibble_rows, "rademacher32", torch.bfloat16, shape=smaller) == "gemm"
    assert choose_kernel(three, "rademacher32", torch.float32) == "gemv"
    assert choose_kernel(three, "rademacher32", torch.float16, transpose=True) == "gemv"
    assert choose_kernel(8, "uniform8x4", torch.bfloat16) == "gemv"
    assert choose_kernel(9, "uniform8x4", torch.bfloat16) == "gemm"
    assert choose_kernel(heuristics.FUSED_MAX_ROWS + 1, "rademacher32", torch.bfloat16) \
        == "materialize"


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_sixteen_rows_without_tensor_cores(device, monkeypatch):
    """The tuner may pick the broadcast path for 16 rows: same values as tl.dot."""
    monkeypatch.setitem(triton_backend.DECODE_CONFIGS, 16, (16, 16, 64, 4, False))
    x = torch.randn(16, 200, device=device)
    for transpose in (False, True):
        xt = x[:, :24] if transpose else x
        want, got = both("seeded_matmul", xt, key_on(device), 24, 200, 0.2, transpose, None,
                         None, None, "pcg", "uniform8x4")
        assert_close(got, want, torch.float32)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("rows", [3, 40])  # fused with the adapter epilogue; adapter in W
@pytest.mark.parametrize("rank", [4, 20])  # one and two tensor-core rank blocks of the fold
def test_seeded_linear_and_lora(device, rows, rank):
    x = torch.randn(rows, 2, 40, device=device)
    a, b = torch.randn(rank, 40, device=device), torch.randn(20, rank, device=device)
    bias = torch.randn(20, device=device)
    key = key_on(device)
    assert_close(*reversed(both("seeded_linear", x, key, 20, 0.1, bias, "squirrel5",
                                "uniform")), torch.float32)
    assert_close(*reversed(both("seeded_lora_linear", x, key, a, b, 0.1, 0.5, bias, "pcg",
                                "uniform8x4")), torch.float32)
    grad_y = torch.randn(rows, 2, 20, device=device)
    assert_close(*reversed(both("seeded_lora_grad_input", grad_y, key, 0.1, a, b, 0.5,
                                "pcg", "rademacher32")), torch.float32)
    # bf16 activations with bf16 adapters: the fold's tensor-core operands
    assert_close(*reversed(both("seeded_lora_grad_input", grad_y.bfloat16(), key, 0.1,
                                a.bfloat16(), b.bfloat16(), 0.5, "pcg", "rademacher32")),
                 torch.bfloat16)



@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("lora", [False, True], ids=["frozen", "lora"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
def test_inline_generation_matches_the_ops(device, lora, with_bias):
    """What the compile backend runs in place of a materialising seeded linear
    (randfx/ops/inline_generation.py): the ops' values and gradients, x, adapter and bias."""
    from randfx.ops import inline_generation
    torch.manual_seed(0)
    leaf = lambda *shape: torch.randn(*shape, device=device).requires_grad_()  # noqa: E731
    x, bias = leaf(20, 2, 40), leaf(24) if with_bias else None
    a, b = (leaf(4, 40), leaf(24, 4)) if lora else (None, None)
    key = key_on(device)
    grad_y = torch.randn(20, 2, 24, device=device)
    inputs = [t for t in (x, a, b, bias) if t is not None]

    def outputs_and_grads(y):
        return [y.detach()] + list(torch.autograd.grad(y, inputs, grad_y))
    got = outputs_and_grads(inline_generation.linear(x, key, a, b, bias, 24, 0.1, 0.5, "pcg",
                                                   "uniform"))
    if lora:
        want = torch.ops.randfx.seeded_lora_linear(x, key, a, b, 0.1, 0.5, bias, "pcg",
                                                   "uniform")
    else:
        want = torch.ops.randfx.seeded_linear(x, key, 24, 0.1, bias, "pcg", "uniform")
    for g, w in zip(got, outputs_and_grads(want)):
        assert_close(g, w, torch.float32)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (5, 7, 3)], ids=["flat_rows", "one_row"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_inline_generate_weight_is_the_op_bit_for_bit(device, shape, dtype):
    """What the compile backend runs in place of generate_weight on CUDA: the bits of the
    op's Triton body, for a size the kernel tiles as rows of 1024 values and one it takes
    as a single row."""
    from randfx.ops import inline_generation
    key = key_on(device)
    got = inline_generation.generate_weight(key, shape, 0.3, "pcg", "rademacher32", dtype)
    want = library.run("generate_weight", "triton", key, list(shape), 0.3, "pcg",
                       "rademacher32", dtype)
    assert got.shape == shape and got.dtype == dtype
    assert torch.equal(got, want)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("offset", [0, 3, (1 << 32) - 500, 5 << 32])
def test_subspace_pmv_and_grad(device, offset):
    """Unaligned offsets, counters straddling 2^32 and beyond it; d and numel not multiples
    of the blocks."""
    torch.manual_seed(0)
    for dist, d, numel in (("uniform", 37, 70), ("uniform8x4", 12, 130),
                           ("rademacher32", 64, 20)):
        alpha = torch.randn(d, device=device)
        want, got = both("subspace_weight", alpha, key_on(device), numel, offset, 0.3, "pcg",
                         dist)
        assert_close(got, want, torch.float32)
        grad = torch.randn(numel, device=device)
        want, got = both("subspace_weight_backward", grad, key_on(device), d, offset, 0.3,
                         "pcg", dist)
        assert_close(got, want, torch.float32)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_pmv_grad_splits_sum_to_the_whole(device, monkeypatch):
    """Many splits of the j range (as on a GPU) give the same grad_alpha as one."""
    grad = torch.randn(300, device=device)
    args = (grad, key_on(device), 9, 0, 1.0, "pcg", "uniform")
    one = library.run("subspace_weight_backward", "triton", *args)
    monkeypatch.setattr(triton_backend, "PMV_GRAD_PROGRAMS", 64)
    many = library.run("subspace_weight_backward", "triton", *args)
    assert_close(many, one, torch.float32)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_subspace_linear(device):
    x = torch.randn(5, 12, device=device)
    alpha, bias = torch.randn(6, device=device), torch.randn(8, device=device)
    want, got = both("subspace_linear", x, key_on(device, 7), 0.5, alpha, key_on(device), 40,
                     0.2, 8, bias, "pcg", "rademacher", "uniform")
    assert_close(got, want, torch.float32)
    want, got = both("subspace_linear_weight", key_on(device, 7), 0.5, alpha, key_on(device),
                     40, 0.2, 8, 12, "squirrel5", "uniform8x4", "uniform", torch.bfloat16)
    assert torch.allclose(got.float(), want.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.cuda
@pytest.mark.parametrize("rows", [1, 4, 16, 64])
def test_autograd_on_cuda_matches_cpu(rows):
    """torch.ops dispatch on CUDA (Triton forward and backward) against the CPU reference."""
    import randfx.ops as ops

    torch.manual_seed(0)  # inputs drawn once on the CPU: CUDA's RNG draws other values
    inputs = [torch.randn(shape) for shape in ((rows, 96), (8, 96), (64, 8), (64,), (16,))]

    def grads(device):
        x, a, b, bias, alpha = (t.to(device).requires_grad_() for t in inputs)
        key = key_on(device)
        y = ops.seeded_lora_linear(x, key, a, b, 0.1, 0.5, bias)
        y = y + ops.subspace_linear(x, key, 0.1, alpha, key_on(device, 3), 0, 0.05, 64)
        y = y + ops.seeded_linear(x, key, 64, 0.2, None, "squirrel5", "uniform8x4")
        y.square().sum().backward()
        return [t.detach().cpu() for t in (y, x.grad, a.grad, b.grad, bias.grad, alpha.grad)]

    for got, want in zip(grads("cuda"), grads("cpu")):
        assert_close(got, want, torch.float32)
