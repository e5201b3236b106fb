"""Triton device helpers shared by the seeded kernels: tiles of stream values.

A generated matrix S has S[r, c] = stream value at counter row_base[r] + c. A weight of
shape (rows, cols) passes row_base = r * cols; a subspace basis P[j, k] passes
row_base = basis_offset + j * d.

- `stream_tile`: the [BLOCK_R, BLOCK_C] tile of S at columns col_start + 0..BLOCK_C-1.
- `rademacher32_pair_tile` / `rademacher32_quad_tile`: rademacher32 hashes unpacked into
  a 16-bit float / e4m3 tile of +-1, a tensor-core operand, its columns permuted
  (`rademacher32_operand_columns`) so that a register of two / four values costs two
  instructions.
- `accumulate_rows`: acc[m, r] += sum_c vec[m, c] * S[r, c] over one column block, the
  inner step of a GEMV (decode, PMV). Multi-value distributions stay in hash order:
  each hash is expanded value by value against the matching strided slice of vec, so
  no [BLOCK_R, GROUPS, VALUES] -> [BLOCK_R, BLOCK_C] reshape (a register shuffle) occurs.

Two fast paths, chosen on the host (`tile_plan` in randfx/ops/triton_backend.py):
- NARROW: every hashed counter of the launch lies in one 2^32 window, so the caller folds
  the window into the key once (`launch_key`) and tiles hash 32-bit counters.
- LOG2_VALUES > 0 (grouped): row bases, col_start and BLOCK_C are multiples of the values
  per hash, so one hash feeds VALUES neighbouring elements of a row. A multi-value
  distribution that cannot be grouped is passed LOG2_VALUES = 0 and NARROW off, and
  hashes once per element (`sample`).
"""

import triton
import triton.language as tl

# names, not `device.x`: Inductor copies a user kernel's helpers into its own module by
# name when it compiles the kernel (randfx/ops/inline_generation.py), without their modules
from ..generators.device import (NORMAL, NORMAL_SECOND_KEY_XOR, RADEMACHER32, UNIFORM,
                                 UNIFORM01, UNIFORM8X4, hash_at, hash_lo,
                                 normal_from_hashes, rademacher32_from_hash,
                                 rademacher_from_hash, sample, uniform01_from_hash,
                                 uniform8x4_from_hash, uniform_from_hash, window_key)


@triton.jit
def launch_key(key_ptr, window, NARROW: tl.constexpr):
    """The key loaded from device memory (no host sync); under NARROW folded with the
    launch's 2^32 window once, so tiles hash 32-bit counters."""
    key = tl.load(key_ptr).to(tl.uint32)
    if NARROW:
        key = window_key(key, tl.cast(window, tl.uint32))
    return key


@triton.jit
def _counter_tile(row_base, col_start, BLOCK_C: tl.constexpr, NARROW: tl.constexpr):
    """row_base[:, None] + col_start + arange(BLOCK_C): uint32 low words under NARROW
    (a 32-bit add per element), int64 counters otherwise."""
    cols = col_start + tl.arange(0, BLOCK_C).to(tl.int64)
    if NARROW:
        counter = row_base.to(tl.uint32)[:, None] + cols.to(tl.uint32)[None, :]
    else:
        counter = row_base[:, None] + cols[None, :]
    return counter


@triton.jit
def _hash(counter, key, GENERATOR: tl.constexpr, NARROW: tl.constexpr):
    if NARROW:
        h = hash_lo(counter, key, GENERATOR)
    else:
        h = hash_at(counter, key, GENERATOR)
    return h


@triton.jit
def group_hashes(row_base, col_start, key, GROUPS: tl.constexpr, GENERATOR: tl.constexpr,
                 LOG2_VALUES: tl.constexpr, NARROW: tl.constexpr):
    """[BLOCK_R, GROUPS] hashes of the groups starting at row_base + col_start."""
    return _hash(_counter_tile(row_base >> LOG2_VALUES, col_start // (1 << LOG2_VALUES),
                               GROUPS, NARROW), key, GENERATOR, NARROW)


@triton.jit
def value_in_hash(h, position, DIST: tl.constexpr):
    """Value `position` (a constexpr or a uint32 tensor) of a multi-value hash."""
    if DIST == UNIFORM8X4:
        out = uniform8x4_from_hash(h, position)
    else:
        out = rademacher32_from_hash(h, position)
    return out


@triton.jit
def stream_tile(row_base, col_start, key, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                GENERATOR: tl.constexpr, DIST: tl.constexpr, LOG2_VALUES: tl.constexpr,
                NARROW: tl.constexpr):
    """float32 [BLOCK_R, BLOCK_C] stream values; row_base int64 [BLOCK_R]."""
    if LOG2_VALUES > 0:
        VALUES: tl.constexpr = 1 << LOG2_VALUES
        GROUPS: tl.constexpr = BLOCK_C // VALUES
        h = group_hashes(row_base, col_start, key, GROUPS, GENERATOR, LOG2_VALUES, NARROW)
        position = tl.arange(0, VALUES).to(tl.uint32)[None, None, :]
        out = tl.reshape(value_in_hash(h[:, :, None], position, DIST), (BLOCK_R, BLOCK_C))
    else:
        counter = _counter_tile(row_base, col_start, BLOCK_C, NARROW)
        if DIST == UNIFORM8X4 or DIST == RADEMACHER32:
            out = sample(counter, key, GENERATOR, DIST)
        elif DIST == NORMAL:
            out = normal_from_hashes(
                _hash(counter, key, GENERATOR, NARROW),
                _hash(counter, key ^ NORMAL_SECOND_KEY_XOR, GENERATOR, NARROW))
        else:
            h = _hash(counter, key, GENERATOR, NARROW)
            if DIST == UNIFORM:
                out = uniform_from_hash(h)
            elif DIST == UNIFORM01:
                out = uniform01_from_hash(h)
            else:
                out = rademacher_from_hash(h)
    return out


@triton.jit
def accumulate_rows(acc, vec_ptr, m, M, stride_vm, stride_vc, col_start, C, row_base, key,
                    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, GENERATOR: tl.constexpr,
                    DIST: tl.constexpr, LOG2_VALUES: tl.constexpr, NARROW: tl.constexpr):
    """acc[BLOCK_M, BLOCK_R, BLOCK_C >> LOG2_VALUES] + the products vec[m, c] * S[r, c] for
    c in [col_start, col_start + BLOCK_C), summed over the values of each hash only.
    The caller sums the last axis once after its loop (a reduction across threads per
    step would cost more than the products). vec outside m < M, c < C counts as zero."""
    if LOG2_VALUES > 0:
        VALUES: tl.constexpr = 1 << LOG2_VALUES
        GROUPS: tl.constexpr = BLOCK_C // VALUES
        h = group_hashes(row_base, col_start, key, GROUPS, GENERATOR, LOG2_VALUES, NARROW)
        group = tl.arange(0, GROUPS)
        for position in tl.static_range(VALUES):
            c = col_start + group * VALUES + position
            v = tl.load(vec_ptr + m[:, None] * stride_vm + c[None, :] * stride_vc,
                        mask=(m < M)[:, None] & (c < C)[None, :], other=0.0)
            w = value_in_hash(h, position, DIST)
            acc += v.to(tl.float32)[:, None, :] * w[None, :, :]
    else:
        c = col_start + tl.arange(0, BLOCK_C)
        v = tl.load(vec_ptr + m[:, None] * stride_vm + c[None, :] * stride_vc,
                    mask=(m < M)[:, None] & (c < C)[None, :], other=0.0)
        w = stream_tile(row_base, col_start, key, BLOCK_R, BLOCK_C, GENERATOR, DIST,
                        LOG2_VALUES, NARROW)
        acc += v.to(tl.float32)[:, None, :] * w[None, :, :]
    return acc


@triton.jit
def rademacher32_operand_columns(GROUPS: tl.constexpr, VALUES: tl.constexpr):
    """[GROUPS * 32] int32: the column, within a step of GROUPS hash groups (a multiple of
    4), that each column of `rademacher32_pair_tile` (VALUES = 2 per 32-bit register) or
    `rademacher32_quad_tile` (VALUES = 4) holds. Logical column
    L = 128 r + 8 VALUES b + 4 VALUES f + VALUES c + e is bit 2 b + f + (32 / VALUES) e of
    group 4 r + c."""
    L = tl.arange(0, 32 * GROUPS)
    e = L % VALUES
    c = (L // VALUES) % 4
    f = (L // (4 * VALUES)) % 2
    b = (L // (8 * VALUES)) % (16 // VALUES)
    return (L & ~127) + 32 * c + 2 * b + f + (32 // VALUES) * e


@triton.jit
def _sign_words(h, ROWS: tl.constexpr, GROUPS: tl.constexpr, VALUES: tl.constexpr,
                ONE_WORD: tl.constexpr):
    """[ROWS, GROUPS / 4, 16 / VALUES, 2, 4] uint32 operand registers (r, b, f, c) of
    [ROWS, GROUPS] rademacher32 hashes, in `rademacher32_operand_columns` order: each of a
    register's VALUES fields e holds at its top bit bit 2 b + f + (32 / VALUES) e of
    group 4 r + c, or-ed with ONE_WORD (1.0 in every field), so bit set = -1. One shift
    and one and-or per register: s = 2 b + f is a constant per register."""
    tl.static_assert(GROUPS % 4 == 0)
    FIELD: tl.constexpr = 32 // VALUES
    SIGNS: tl.constexpr = 0x80008000 if VALUES == 2 else 0x80808080
    h = tl.reshape(h, (ROWS, GROUPS // 4, 4))  # [row, r, c]: group 4 r + c
    b = tl.arange(0, 16 // VALUES)[:, None]
    f = tl.arange(0, 2)[None, :]
    low_bit = (2 * b + f).to(tl.uint32)  # 0 .. FIELD - 1
    return ((h[:, :, None, None, :] << (FIELD - 1 - low_bit)[None, None, :, :, None])
            & SIGNS) | ONE_WORD


@triton.jit
def rademacher32_pair_tile(h, ROWS: tl.constexpr, GROUPS: tl.constexpr, ONE: tl.constexpr,
                           OUT: tl.constexpr):
    """[ROWS, GROUPS] rademacher32 hashes (GROUPS a multiple of 4) -> [ROWS, GROUPS * 32]
    +-1 in the 16-bit float OUT whose 1.0 has the bits ONE (bit set = -1), columns in
    `rademacher32_operand_columns(GROUPS, 2)` order; a dot over them needs its other
    operand gathered in that order. The order follows a tensor-core A operand (a thread
    holds, per row, the column pairs 2 c + {0, 1} + 8 f of every 16-column block,
    c = lane % 4):
    - c picks the hash group, so each of the four lanes sharing a row hashes its own group
      once and uses all 32 bits (in hash order, each hash would be computed by all four);
    - a register's two values (e) are bits s and s + 16, s = 2 b + f a constant per
      register: one shift moves both to the 16-bit sign positions and one and-or makes
      them +-1, two instructions per two values and no re-layout of the operand."""
    words = _sign_words(h, ROWS, GROUPS, 2, ONE * 0x10001)
    halves = tl.join((words & 0xFFFF).to(tl.uint16), (words >> 16).to(tl.uint16))
    return tl.reshape(halves.to(OUT, bitcast=True), (ROWS, GROUPS * 32))


@triton.jit
def rademacher32_quad_tile(h, ROWS: tl.constexpr, GROUPS: tl.constexpr):
    """[ROWS, GROUPS] rademacher32 hashes (GROUPS a multiple of 4) -> [ROWS, GROUPS * 32]
    +-1 in float8 e4m3 (bit set = -1), columns in `rademacher32_operand_columns(GROUPS,
    4)` order. The 8-bit analogue of `rademacher32_pair_tile`: an 8-bit tensor-core A
    operand holds per row the column quads 4 c + {0..3} + 16 f of every 32-column block
    (c = lane % 4), so a register's four values (e) are bits s + 8 e, s = 2 b + f: one
    shift moves them to the four sign positions and one and-or makes them +-1, two
    instructions per four values."""
    words = _sign_words(h, ROWS, GROUPS, 4, 0x38383838)  # e4m3's 1.0 in every byte
    quads = tl.join(tl.join((words & 0xFF).to(tl.uint8), ((words >> 16) & 0xFF).to(tl.uint8)),
                    tl.join(((words >> 8) & 0xFF).to(tl.uint8), (words >> 24).to(tl.uint8)))
    return tl.reshape(quads.to(tl.float8e4nv, bitcast=True), (ROWS, GROUPS * 32))
