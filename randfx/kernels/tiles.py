"""Triton device helpers shared by the seeded kernels: tiles of stream values.

A generated matrix S has S[r, c] = stream value at counter row_base[r] + c. A weight of
shape (rows, cols) passes row_base = r * cols; a subspace basis P[j, k] passes
row_base = basis_offset + j * d.

- `stream_tile`: the [BLOCK_R, BLOCK_C] tile of S at columns col_start + 0..BLOCK_C-1.
- `rademacher32_sign_tile`: rademacher32 hashes unpacked into a 16-bit float tile of
  +-1, a tensor-core operand.
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
  hashes once per element (`device.sample`).
"""

import triton
import triton.language as tl

from ..generators import device


@triton.jit
def launch_key(key_ptr, window, NARROW: tl.constexpr):
    """The key loaded from device memory (no host sync); under NARROW folded with the
    launch's 2^32 window once, so tiles hash 32-bit counters."""
    key = tl.load(key_ptr).to(tl.uint32)
    if NARROW:
        key = device.window_key(key, window.to(tl.uint32))
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
        h = device.hash_lo(counter, key, GENERATOR)
    else:
        h = device.hash_at(counter, key, GENERATOR)
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
    if DIST == device.UNIFORM8X4:
        out = device.uniform8x4_from_hash(h, position)
    else:
        out = device.rademacher32_from_hash(h, position)
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
        if DIST == device.UNIFORM8X4 or DIST == device.RADEMACHER32:
            out = device.sample(counter, key, GENERATOR, DIST)
        elif DIST == device.NORMAL:
            out = device.normal_from_hashes(
                _hash(counter, key, GENERATOR, NARROW),
                _hash(counter, key ^ device.NORMAL_SECOND_KEY_XOR, GENERATOR, NARROW))
        else:
            h = _hash(counter, key, GENERATOR, NARROW)
            if DIST == device.UNIFORM:
                out = device.uniform_from_hash(h)
            elif DIST == device.UNIFORM01:
                out = device.uniform01_from_hash(h)
            else:
                out = device.rademacher_from_hash(h)
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
def rademacher32_sign_tile(h, ROWS: tl.constexpr, GROUPS: tl.constexpr, ONE: tl.constexpr,
                           OUT: tl.constexpr):
    """[ROWS, GROUPS] rademacher32 hashes -> [ROWS, GROUPS * 32] +-1 in the 16-bit float
    OUT whose 1.0 has the bits ONE (value p of a group: bit p of its hash, set = -1).
    tl.join adds register-local dimensions, so each group is unpacked by the thread that
    hashed it, with no per-element bit position: bit p reaches bit 15 (the 16-bit sign)
    through the joins' shifts (values 0-15 from h << 15, 16-31 from h >> 1), then one
    and-or per value."""
    v = tl.join(h << 15, h >> 1)
    v = tl.join(v, v >> 8)
    v = tl.join(v, v >> 4)
    v = tl.join(v, v >> 2)
    v = tl.join(v, v >> 1)
    bits = (v & 0x8000) | ONE
    return tl.reshape(bits.to(tl.uint16).to(OUT, bitcast=True), (ROWS, GROUPS * 32))
