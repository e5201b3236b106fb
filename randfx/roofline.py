"""A small roofline cost model on sympy: FLOPs, bytes moved and generated values of one
forward of a (seeded or dense) linear layer as expressions in the batch size B and the
sequence length T, and whether a kernel is memory- or compute-bound on a named device.

Symbols: B (batch size) and T (sequence length; 1 for inputs without one). A layer sees
M rows per forward, an expression in B and T (B*T for a token-wise layer of a transformer).
For y = x W^T with W of shape (N, K):

    matmul FLOPs    2 M N K                       (a multiply-add is 2 FLOPs)
    dense bytes     (M K + M N) a + N K w         (activations a, weights w bytes/value)
    fused bytes     (M K + M N) a + coefficients  (the weight is never read: regenerated)
    materialise     fused bytes + 2 N K w         (write W once, read it once)
    generated       N K per pass over the weight (once per forward for every kernel
                    randfx runs: the fused ones cover all rows in one block)

Generation is counted in 32-bit ALU instructions (GENERATION_OPS below), which run on the
CUDA cores, not the tensor cores. The time of a kernel is the roofline maximum of the
three terms; the one that reaches the maximum is the limiter and decides the bound:
"memory" (bytes) or "compute" (tensor-core matmul or ALU generation).
"""

from dataclasses import dataclass

import sympy

from .generators import spec

B, T = sympy.symbols("B T", positive=True, integer=True)
SYMBOLS = {"B": B, "T": T}


@dataclass(frozen=True)
class Device:
    """Peak rates of one accelerator. `matmul_flops` maps a dtype name to dense
    tensor-core FLOP/s (float32 without TF32, torch's default precision);
    `alu_ops` is 32-bit integer instructions per second (SMs x 64 lanes x boost clock:
    Ampere, Ada and Hopper issue 64 INT32 operations per SM per clock)."""
    name: str
    matmul_flops: dict
    bandwidth: float  # bytes/s of device memory
    alu_ops: float
    source: str

    def matmul_rate(self, dtype_name: str) -> float:
        # float64 (gradcheck, tests) is costed at the float32 rate: a lower bound on its time
        try:
            return self.matmul_flops["float32" if dtype_name == "float64" else dtype_name]
        except KeyError:
            raise ValueError(f"device {self.name!r} has no matmul rate for dtype "
                             f"{dtype_name!r}; known: {sorted(self.matmul_flops)}") from None


DEVICES = {
    "H100": Device(
        "H100", {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}, 3.35e12,
        132 * 64 * 1.98e9,
        "NVIDIA H100 SXM5 datasheet: 989 TFLOP/s bf16/fp16 dense, 67 TFLOP/s fp32, "
        "3.35 TB/s HBM3; 132 SMs at 1.98 GHz"),
    "H200": Device(
        "H200", {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}, 4.8e12,
        132 * 64 * 1.98e9,
        "NVIDIA H200 SXM datasheet: 989 TFLOP/s bf16/fp16 dense, 67 TFLOP/s fp32, "
        "4.8 TB/s HBM3e; 132 SMs at 1.98 GHz"),
    "A100": Device(
        "A100", {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12}, 2.039e12,
        108 * 64 * 1.41e9,
        "NVIDIA A100 SXM4 80GB datasheet: 312 TFLOP/s bf16/fp16 dense, 19.5 TFLOP/s fp32, "
        "2.039 TB/s HBM2e; 108 SMs at 1.41 GHz"),
    "RTX4090": Device(
        "RTX4090", {"bfloat16": 165.2e12, "float16": 165.2e12, "float32": 82.6e12},
        1.008e12, 128 * 64 * 2.52e9,
        "NVIDIA Ada whitepaper (RTX 4090): 165.2 TFLOP/s bf16/fp16 dense with fp32 "
        "accumulate, 82.6 TFLOP/s fp32, 1.008 TB/s GDDR6X; 128 SMs at 2.52 GHz"),
}
DEFAULT_DEVICE = "H100"


def device(name_or_device) -> Device:
    """A Device from a preset name (case-insensitive) or a Device instance."""
    if isinstance(name_or_device, Device):
        return name_or_device
    for name, preset in DEVICES.items():
        if str(name_or_device).lower() == name.lower():
            return preset
    raise ValueError(f"device={name_or_device!r} is not a preset; choose from "
                     f"{sorted(DEVICES)} or pass a randfx.roofline.Device")


# ALU instructions per generated value, counted from randfx/generators/device.py: the hash
# (squirrel5: 3 multiplies + 5 xor-shift pairs + 3 adds = 16; pcg with the key term hoisted
# out of the loop: 10), 2 for the counter, the conversion to float of each distribution,
# and 1 for the scale. Multi-value distributions share one hash between several values.
_HASH_OPS = {"squirrel5": 16, "pcg": 10}
_COUNTER_OPS = 2
_CONVERSION_OPS = {"uniform": 4, "uniform01": 3, "rademacher": 3, "uniform8x4": 5,
                   "rademacher32": 4, "normal": 40}
_HASHES_PER_VALUE = {"normal": 2}


def generation_ops(generator: str, dist: str) -> sympy.Rational:
    """ALU instructions to generate one value of stream (generator, dist)."""
    if generator not in _HASH_OPS or dist not in _CONVERSION_OPS:
        raise ValueError(f"no generation cost for generator={generator!r}, dist={dist!r}; "
                         f"known: {sorted(_HASH_OPS)} x {sorted(_CONVERSION_OPS)}")
    values_per_hash = spec.DISTRIBUTIONS[dist].values_per_hash
    hashes = sympy.Rational(_HASHES_PER_VALUE.get(dist, 1), values_per_hash)
    return hashes * (_HASH_OPS[generator] + _COUNTER_OPS) + _CONVERSION_OPS[dist] + 1


@dataclass(frozen=True)
class Cost:
    """One forward of one kernel, each field a sympy expression in B and T."""
    flops: sympy.Expr  # tensor-core matmul FLOPs
    bytes: sympy.Expr  # bytes read + written in device memory
    generated: sympy.Expr  # generated values
    alu_ops: sympy.Expr  # ALU instructions spent generating them

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.flops + other.flops, self.bytes + other.bytes,
                    self.generated + other.generated, self.alu_ops + other.alu_ops)

    def at(self, sizes: dict) -> dict:
        """The four numbers at concrete sizes, e.g. {"B": 8, "T": 1024}."""
        subs = substitutions(sizes)
        return {field: _number(getattr(self, field).subs(subs))
                for field in ("flops", "bytes", "generated", "alu_ops")}


def substitutions(sizes: dict) -> dict:
    subs = {}
    for name, value in sizes.items():
        if name not in SYMBOLS:
            raise ValueError(f"unknown size {name!r}; sizes are {sorted(SYMBOLS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"size {name}={value!r} must be an int >= 1")
        subs[SYMBOLS[name]] = value
    return subs


def _number(expr):
    if expr.free_symbols:
        raise ValueError(f"{expr} still depends on {sorted(map(str, expr.free_symbols))}; "
                         "give a size for each")
    value = sympy.nsimplify(expr)
    return int(value) if value.is_integer else float(value)


def dense_linear(m, n: int, k: int, *, act_bytes: int, weight_bytes: int,
                 bias: bool) -> Cost:
    """y = x W^T (+ b) with a stored weight: the baseline a rewrite is compared with."""
    flops = 2 * m * n * k
    moved = (m * k + m * n) * act_bytes + (n * k + (n if bias else 0)) * weight_bytes
    return Cost(sympy.sympify(flops), sympy.sympify(moved), sympy.Integer(0),
                sympy.Integer(0))


def seeded_linear(m, n: int, k: int, *, kernel: str, act_bytes: int, weight_bytes: int,
                  coefficient_bytes: int, weight_passes, ops_per_value,
                  extra_flops=0) -> Cost:
    """y = x W^T with W regenerated from a seed.

    kernel: "materialize" (generate W to memory, then a dense matmul), or a fused kernel
    ("gemv", "gemm": W is generated tile by tile in registers). `weight_passes` is how
    many times every weight value is generated per forward, `coefficient_bytes` the learned tensors the kernel reads (adapters,
    subspace coordinates, bias), `extra_flops` their matmul FLOPs."""
    generated = n * k * weight_passes
    moved = (m * k + m * n) * act_bytes + coefficient_bytes
    if kernel == "materialize":
        moved = moved + 2 * n * k * weight_bytes
    return Cost(sympy.sympify(2 * m * n * k + extra_flops), sympy.sympify(moved),
                sympy.sympify(generated), sympy.sympify(generated * ops_per_value))


def roofline(cost: Cost, dev, dtype_name: str, sizes: dict) -> dict:
    """Time of `cost` on device `dev` at `sizes` under the roofline model: the largest of
    matmul time, generation time and memory time, the limiter, and the bound."""
    dev = device(dev)
    numbers = cost.at(sizes)
    times = {"matmul": numbers["flops"] / dev.matmul_rate(dtype_name),
             "generation": numbers["alu_ops"] / dev.alu_ops,
             "memory": numbers["bytes"] / dev.bandwidth}
    limiter = max(times, key=times.get)
    intensity = numbers["flops"] / numbers["bytes"] if numbers["bytes"] else float("inf")
    return {"time_s": times[limiter], "limiter": limiter,
            "bound": "memory" if limiter == "memory" else "compute",
            "arithmetic_intensity": intensity, **{f"{k}_s": v for k, v in times.items()}}


KERNELS = ("gemv", "gemm", "materialize")


def choose_kernel(m: int, dist=None, dtype=None, transpose: bool = False,
                  shape=None) -> str:
    """The kernel the seeded matmul ops run for `m` rows of x, by the ops' own shape
    heuristic (randfx/ops/heuristics.py): up to FUSED_MAX_ROWS rows a fused kernel that
    generates W tiles in registers ("gemv" on CUDA cores, "gemm" on tensor cores, by the
    rows, the stream `dist`, x's `dtype` and, where given, W's `shape`), above it W is
    materialised once in the activation dtype and multiplied densely."""
    from .ops.heuristics import fused_kernel, uses_fused_kernel
    if not uses_fused_kernel(m):
        return "materialize"
    return fused_kernel(m, dist, dtype, transpose, shape)


def seeded_linear_cost(m, n: int, k: int, *, kernel: str, generator: str, dist: str,
                       act_bytes: int, coefficient_bytes=0, extra_flops=0) -> Cost:
    """Cost of y = x W^T with W (n, k) regenerated by `kernel`: every kernel generates
    each weight value once per forward (the fused ones cover all rows in one block); the
    materialised weight has the activations' dtype."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r}; accepted: {KERNELS}")
    return seeded_linear(m, n, k, kernel=kernel, act_bytes=act_bytes, weight_bytes=act_bytes,
                         coefficient_bytes=coefficient_bytes, weight_passes=1,
                         ops_per_value=generation_ops(generator, dist),
                         extra_flops=extra_flops)


_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def dtype_name(dtype) -> str:
    """"bfloat16" for torch.bfloat16; float64 is costed at the float32 rates."""
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPE_BYTES:
        raise ValueError(f"no cost model for dtype {dtype}; known: {sorted(_DTYPE_BYTES)}")
    return name
