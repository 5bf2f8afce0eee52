"""The integer model's arithmetic, op by op: the numpy golden implementation.

Every function here implements one section of docs/integer-spec.md (cited as "spec §N")
bit-exactly. The C kernels (native/) and the MicroPython device code (device/bvit/) must
give the same integers for the same inputs; floating point appears only in the host-side
helpers that turn float scales into integer parameters (`quantize_multiplier`,
`layernorm_params`, ...), whose integer results are stored in the model file.

numpy works in int64 here. Where the spec says an intermediate is int32 (or uint32), the
value is checked and `OverflowError` raised if it would not fit: a C kernel would silently
wrap there, so the reference refuses instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# ------------------------------------------------------------------ constants (spec §0, §6, §9)

INT8_MIN, INT8_MAX = -128, 127
INT16_MIN, INT16_MAX = -32768, 32767
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

Q14_ONE = 1 << 14          # cos/sin of the butterfly rotations (spec §6)
PROB_ONE = 1 << 15         # softmax probabilities are Q15 in 0..32768 (spec §9)
LN_Z_FRAC = 10             # normalised LayerNorm value z in Q10 (spec §8)
SOFTMAX_T_FRAC = 8         # softmax exponent in Q8 log2 units (spec §9)
SOFTMAX_T_MAX = 15 << 8    # t >= this gives e = 0 (spec §9)
MULT_BITS = 15             # requantisation multipliers M in [2^14, 2^15) (spec §2)
MAX_SHIFT = 62

# The spec's constant tables (§0.2): SIN_Q14[i] = floor(16384 sin(i pi / 512) + 0.5) for
# i = 0..256 (a quarter sine wave) and EXP2_Q14[f] = floor(16384 2^(-f/256) + 0.5) for
# f = 0..255. Written once, in the board's package, which the host imports as bvit.
from bvit.tables import EXP2_Q14, SIN_Q14  # noqa: E402

_SIN = np.array(SIN_Q14, dtype=np.int64)
_EXP2 = np.array(EXP2_Q14, dtype=np.int64)


def hround(x):
    """Host rounding of floats to integers (spec §0): floor(x + 0.5), i.e. halves go up.

    Used only when the host turns float parameters into stored integers."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


# ------------------------------------------------------------------ checks and saturation (spec §0)

def _i64(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iub":
        raise TypeError(f"integer input expected, got dtype {a.dtype}")
    return a.astype(np.int64)


def check_range(x, lo: int, hi: int, what: str) -> np.ndarray:
    """Raise OverflowError when some value of x lies outside lo..hi (the spec's width)."""
    a = np.asarray(x)
    if a.size and (a.min() < lo or a.max() > hi):
        raise OverflowError(f"{what} out of range [{lo}, {hi}]: min {a.min()}, max {a.max()}")
    return a


def check_int32(x, what: str) -> np.ndarray:
    return check_range(x, INT32_MIN, INT32_MAX, what)


def saturate(x, bits: int) -> np.ndarray:
    """Clamp to the signed range of `bits` bits (spec §0): sat8 = [-128, 127], sat16 ..."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(_i64(x), lo, hi)


def _out_dtype(bits):
    return {8: np.int8, 16: np.int16, 32: np.int32}[bits]


def bit_length(x) -> np.ndarray:
    """Elementwise number of bits of non-negative integers < 2^53 (0 for 0)."""
    a = _i64(x)
    if a.size and (a.min() < 0 or a.max() >= 1 << 53):
        raise ValueError("bit_length takes integers in 0 .. 2^53 - 1")
    return np.frexp(a.astype(np.float64))[1].astype(np.int64)


# ------------------------------------------------------------------ rounding shift (spec §1)

def rshift_round(x, s) -> np.ndarray:
    """Spec §1: (x + 2^(s-1)) >> s with an arithmetic (flooring) shift, s >= 1.

    Rounds to nearest, halves towards +infinity: 2.5 -> 3, -2.5 -> -2, -3.5 -> -3."""
    x = _i64(x)
    s = _i64(s)
    if s.size and (s.min() < 1 or s.max() > MAX_SHIFT):
        raise ValueError(f"rounding shift must be in 1..{MAX_SHIFT}")
    return (x + np.left_shift(np.int64(1), s - 1)) >> s


# ------------------------------------------------------------------ requantisation (spec §2)

def quantize_multiplier(scale: float) -> tuple[int, int]:
    """Spec §2.2: (M, shift) with M * 2^-shift ~= scale, M in [2^14, 2^15), shift in 1..62.

    scale 0 (or below 2^-48, where every int32 accumulator maps to 0) gives (0, 1).
    Raises ValueError for negative, non-finite, or too large (>= 2^14) scales."""
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be finite and >= 0, got {scale}")
    if scale == 0.0:
        return 0, 1
    m, e = math.frexp(scale)                      # scale = m * 2^e, m in [0.5, 1)
    M = int(math.floor(m * (1 << MULT_BITS) + 0.5))
    if M == 1 << MULT_BITS:
        M, e = M >> 1, e + 1
    shift = MULT_BITS - e
    if shift < 1:
        raise ValueError(f"scale {scale} too large for a requantisation multiplier (< 2^14)")
    if shift > MAX_SHIFT:
        return 0, 1
    return M, shift


def quantize_multipliers(scales) -> tuple[np.ndarray, np.ndarray]:
    """quantize_multiplier for each element: (M int32 array, shift int32 array)."""
    pairs = [quantize_multiplier(s) for s in np.asarray(scales, dtype=np.float64).ravel()]
    shape = np.shape(scales)
    M = np.array([p[0] for p in pairs], dtype=np.int32).reshape(shape)
    sh = np.array([p[1] for p in pairs], dtype=np.int32).reshape(shape)
    return M, sh


def _check_mult(M, shift):
    M, shift = _i64(M), _i64(shift)
    check_range(M, 0, (1 << MULT_BITS) - 1, "requant multiplier M")
    check_range(shift, 1, MAX_SHIFT, "requant shift")
    return M, shift


def requant(acc, M, shift, bits: int = 8) -> np.ndarray:
    """Spec §2.1: sat_bits(rshift_round(acc * M, shift)); acc int32, product int64.

    M and shift broadcast against acc (per-tensor scalars, or per-row arrays)."""
    acc = _i64(acc)
    check_int32(acc, "requant accumulator")
    M, shift = _check_mult(M, shift)
    return saturate(rshift_round(acc * M, shift), bits).astype(_out_dtype(bits))


def requant_small_int(acc: int, M: int, shift: int, bits: int = 8) -> int:
    """Spec §2.3: the same result as `requant`, computed so that every intermediate fits a
    MicroPython small int (|v| < 2^30) for |acc| < 2^29 and shift <= 44. Pure Python, for
    scalars; the form device code uses. (For shift <= 15 it relies on saturation.)"""
    if bits > 16:
        raise ValueError("requant_small_int saturates to int8 or int16")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if M == 0:
        return 0
    if shift >= 16:
        h = acc >> 15                     # acc = h * 2^15 + l, 0 <= l < 2^15
        l = acc & 0x7FFF
        t = h * M + ((l * M) >> 15) + (1 << (shift - 16))
        r = t >> (shift - 15)
    else:
        # M >= 2^14 so scale = M * 2^-shift >= 2^-1: |acc| >= 2^16 saturates int8/int16.
        if acc >= 1 << 16:
            return hi
        if acc <= -(1 << 16):
            return lo
        r = (acc * M + (1 << (shift - 1))) >> shift
    return lo if r < lo else hi if r > hi else r


# ------------------------------------------------------------------ trits (spec §4)

TRITS_PER_BYTE = 5
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.int64)
# DIGITS[b, i] = digit i of byte b (b = 0..242), trit = digit - 1.
DIGITS = (np.arange(243)[:, None] // _POW3[None, :]) % 3


def packed_row_bytes(n: int) -> int:
    """Bytes per packed row of n trits: ceil(n / 5) (spec §4)."""
    if n < 1:
        raise ValueError(f"a row needs at least one trit, got n={n}")
    return -(-n // TRITS_PER_BYTE)


def pack_trits(trits) -> bytes:
    """Spec §4: (rows, n) trits in {-1, 0, +1} -> rows * ceil(n/5) bytes, row-major.

    Trit i of a row lives in byte i // 5 as digit i % 5: byte = sum_k (t_k + 1) * 3^k;
    the last byte of a row is padded with zero trits (digit 1)."""
    t = np.asarray(trits)
    if t.ndim == 1:
        t = t[None, :]
    if t.ndim != 2:
        raise ValueError(f"trits must be (rows, n), got shape {t.shape}")
    t = _i64(t)
    if t.size and (t.min() < -1 or t.max() > 1):
        raise ValueError("trits must be -1, 0 or +1")
    rows, n = t.shape
    nb = packed_row_bytes(n)
    d = np.ones((rows, nb * TRITS_PER_BYTE), dtype=np.int64)   # padding: zero trit = digit 1
    d[:, :n] = t + 1
    b = (d.reshape(rows, nb, TRITS_PER_BYTE) * _POW3).sum(-1)
    return b.astype(np.uint8).tobytes()


def _packed_array(packed, rows: int, n: int) -> np.ndarray:
    nb = packed_row_bytes(n)
    b = np.frombuffer(bytes(packed), dtype=np.uint8) if not isinstance(packed, np.ndarray) \
        else packed.astype(np.uint8).ravel()
    if b.size != rows * nb:
        raise ValueError(f"packed trits: expected {rows} rows x {nb} bytes = {rows * nb} bytes "
                         f"for n={n}, got {b.size}")
    if b.size and b.max() > 242:
        bad = int(np.argmax(b > 242))
        raise ValueError(f"packed trits: byte {bad} has value {b[bad]} (valid bytes are 0..242)")
    return b.reshape(rows, nb)


def unpack_trits(packed, rows: int, n: int) -> np.ndarray:
    """Spec §4: bytes -> (rows, n) int8 trits. Rejects (ValueError) a wrong length, bytes
    243..255, and non-zero padding trits."""
    b = _packed_array(packed, rows, n)
    d = DIGITS[b].reshape(rows, -1)                 # (rows, nb*5)
    if (d[:, n:] != 1).any():
        raise ValueError("packed trits: padding trits past n must be zero (digit 1)")
    return (d[:, :n] - 1).astype(np.int8)


# ------------------------------------------------------------------ ternary matvec (spec §5)

def ternary_matvec(packed, rows: int, n: int, x) -> np.ndarray:
    """Spec §5.1: acc_r = sum_i t_ri * x_i (int32) for x of shape (..., n), int8 or int16.

    Returns (..., rows) int32."""
    x = _i64(x)
    if x.shape[-1] != n:
        raise ValueError(f"x has {x.shape[-1]} elements, the matrix takes {n}")
    check_range(x, INT16_MIN, INT16_MAX, "ternary matvec input")
    t = unpack_trits(packed, rows, n).astype(np.int64)
    return check_int32(x @ t.T, "ternary accumulator").astype(np.int32)


def ternary_matvec_lut(packed, rows: int, n: int, x) -> np.ndarray:
    """Spec §5.2: the lookup-table kernel. For each group g of 5 inputs a table
    T_g[b] = sum_k (digit_k(b) - 1) * x_{5g+k} (b = 0..242, inputs past n are 0), then
    acc_r = sum_g T_g[byte_rg]. Equal to `ternary_matvec` by construction; x is (n,)."""
    x = _i64(x)
    if x.shape != (n,):
        raise ValueError(f"x must have shape ({n},), got {x.shape}")
    b = _packed_array(packed, rows, n)
    nb = b.shape[1]
    xp = np.zeros(nb * TRITS_PER_BYTE, dtype=np.int64)
    xp[:n] = x
    tables = xp.reshape(nb, TRITS_PER_BYTE) @ (DIGITS - 1).T      # (nb, 243)
    acc = tables[np.arange(nb)[None, :], b.astype(np.int64)].sum(-1)
    return check_int32(acc, "ternary accumulator").astype(np.int32)


def ternary_linear(packed, rows: int, n: int, x, M, shift, bias=None, bits: int = 8):
    """Spec §5.3: ternary matvec, + int32 bias (optional), per-row requant to `bits`."""
    acc = ternary_matvec(packed, rows, n, x).astype(np.int64)
    if bias is not None:
        acc = check_int32(acc + _i64(bias), "ternary accumulator + bias")
    return requant(acc, M, shift, bits)


# ------------------------------------------------------------------ butterfly (spec §6)

def angles_to_phase(angles) -> np.ndarray:
    """Spec §6.1 (host): phase = floor(angle * 65536 / (2 pi) + 0.5) mod 65536, uint16."""
    a = np.asarray(angles, dtype=np.float64)
    return (hround(a * (65536.0 / (2.0 * math.pi))) & 0xFFFF).astype(np.uint16)


def _quarter_sin(r: np.ndarray) -> np.ndarray:
    """Q(r) of spec §6.2: sin(r/16384 * pi/2) in Q14 for r = 0..16384, table + interpolation."""
    idx = r >> 6
    frac = r & 63
    lo = _SIN[np.minimum(idx, 256)]
    hi = _SIN[np.minimum(idx + 1, 256)]
    return np.where(frac == 0, lo, lo + (((hi - lo) * frac + 32) >> 6))


def sincos_q14(phase) -> tuple[np.ndarray, np.ndarray]:
    """Spec §6.2: (cos, sin) in Q14 (int16, -16384..16384) of uint16 phases, integers only."""
    p = _i64(phase)
    check_range(p, 0, 0xFFFF, "phase")
    q = p >> 14
    r = p & 0x3FFF
    a = _quarter_sin(r)              # sin of the angle within its quadrant
    b = _quarter_sin(16384 - r)      # cos of the angle within its quadrant
    sin = np.select([q == 0, q == 1, q == 2], [a, b, -a], -b)
    cos = np.select([q == 0, q == 1, q == 2], [b, -a, -b], a)
    return cos.astype(np.int16), sin.astype(np.int16)


def cos_sin_q14(angles) -> tuple[np.ndarray, np.ndarray]:
    """Host convenience: float angles -> phases -> (cos, sin) Q14 exactly as the board does."""
    return sincos_q14(angles_to_phase(angles))


def butterfly_input_shift(n_stages: int) -> int:
    """Spec §6.4: P = 7 - ceil(n_l / 2): int8 values * 2^P stay below 2^14 after n_l stages."""
    p = 7 - (n_stages + 1) // 2
    if p < 0:
        raise ValueError(f"{n_stages} stages leave no headroom for an int8 input")
    return p


def padded_size(n: int) -> int:
    if n < 1:
        raise ValueError(f"dimension must be >= 1, got {n}")
    return 1 << (n - 1).bit_length()


def butterfly_q14(x, cos, sin) -> np.ndarray:
    """Spec §6.3: the fixed-point butterfly B on the last axis of int16 x (..., n).

    cos, sin: Q14 int16 of shape (n_l, n_pad/2), or (..., n_l, n_pad/2) broadcasting per
    row. x is zero-padded to n_pad, stages l = 0..n_l-1 are applied in order, each pair as
        y1 = sat16((c*x1 - s*x2 + 2^13) >> 14),  y2 = sat16((s*x1 + c*x2 + 2^13) >> 14)
    and the result is truncated back to n. Returns int16."""
    x = _i64(x)
    check_range(x, INT16_MIN, INT16_MAX, "butterfly input")
    cos, sin = _i64(cos), _i64(sin)
    check_range(cos, -Q14_ONE, Q14_ONE, "cos Q14")
    check_range(sin, -Q14_ONE, Q14_ONE, "sin Q14")
    if cos.shape != sin.shape:
        raise ValueError("cos and sin must have the same shape")
    n = x.shape[-1]
    n_l, half = cos.shape[-2], cos.shape[-1]
    n_pad = 2 * half
    if n_pad != padded_size(n):
        raise ValueError(f"angles for padded size {n_pad} do not fit dimension {n}")
    if n_l > n_pad.bit_length() - 1:
        raise ValueError(f"{n_l} stages exceed log2({n_pad})")
    lead = np.broadcast_shapes(x.shape[:-1], cos.shape[:-2])
    v = np.zeros((*lead, n_pad), dtype=np.int64)
    v[..., :n] = x
    for l in range(n_l):
        s = 2 << l
        h = s // 2
        vv = v.reshape(*lead, n_pad // s, 2, h)
        x1, x2 = vv[..., 0, :], vv[..., 1, :]
        c = cos[..., l, :].reshape(*cos.shape[:-2], n_pad // s, h)
        sn = sin[..., l, :].reshape(*sin.shape[:-2], n_pad // s, h)
        y1 = np.clip((c * x1 - sn * x2 + (1 << 13)) >> 14, INT16_MIN, INT16_MAX)
        y2 = np.clip((sn * x1 + c * x2 + (1 << 13)) >> 14, INT16_MIN, INT16_MAX)
        v = np.stack((y1, y2), axis=-2).reshape(*lead, n_pad)
    return v[..., :n].astype(np.int16)


def butterfly_float(x, angles) -> np.ndarray:
    """Float64 butterfly with the same conventions (for error measurements only)."""
    x = np.asarray(x, dtype=np.float64)
    angles = np.asarray(angles, dtype=np.float64)
    n = x.shape[-1]
    n_l, half = angles.shape[-2], angles.shape[-1]
    n_pad = 2 * half
    lead = np.broadcast_shapes(x.shape[:-1], angles.shape[:-2])
    v = np.zeros((*lead, n_pad))
    v[..., :n] = x
    for l in range(n_l):
        s = 2 << l
        h = s // 2
        vv = v.reshape(*lead, n_pad // s, 2, h)
        x1, x2 = vv[..., 0, :], vv[..., 1, :]
        a = angles[..., l, :].reshape(*angles.shape[:-2], n_pad // s, h)
        c, sn = np.cos(a), np.sin(a)
        v = np.stack((c * x1 - sn * x2, sn * x1 + c * x2), axis=-2).reshape(*lead, n_pad)
    return v[..., :n]


# ------------------------------------------------------------------ int8 linear (spec §7)

def linear_acc(x, w, bias=None) -> np.ndarray:
    """Spec §7: acc_o = sum_i w_oi * x_i + b_o, int32. x (..., n) int8, w (out, n) int8,
    bias (out,) int32 or None."""
    x, w = _i64(x), _i64(w)
    check_range(x, INT8_MIN, INT8_MAX, "linear input")
    check_range(w, INT8_MIN, INT8_MAX, "linear weight")
    acc = x @ w.T
    if bias is not None:
        acc = acc + check_int32(_i64(bias), "bias")
    return check_int32(acc, "linear accumulator").astype(np.int32)


def linear(x, w, bias, M, shift, bits: int = 8) -> np.ndarray:
    """Spec §7: int8 linear layer with per-output-channel requantisation (M, shift)."""
    return requant(linear_acc(x, w, bias), M, shift, bits)


def quantize_weights(w, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Host: symmetric per-output-channel weight quantisation: (w_q int8, scale per row),
    w_q = clamp(hround(w / scale), -127, 127), scale = max|w_row| / 127 (1 if the row is 0)."""
    w = np.asarray(w, dtype=np.float64)
    qmax = (1 << (bits - 1)) - 1
    amax = np.abs(w).max(axis=-1)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    q = np.clip(hround(w / scale[..., None]), -qmax, qmax)
    return q.astype(np.int8), scale


# ------------------------------------------------------------------ LayerNorm (spec §8)

def isqrt_bitwise(u: int) -> int:
    """Spec §8.2: floor(sqrt(u)) for 0 <= u < 2^32, the digit-by-digit algorithm (no divide,
    no multiply). Any exact floor square root gives the same result."""
    if not 0 <= u < 1 << 32:
        raise ValueError("isqrt_bitwise takes 0 <= u < 2^32")
    r = 0
    bit = 1 << 30
    while bit > u:
        bit >>= 2
    while bit:
        if u >= r + bit:
            u -= r + bit
            r = (r >> 1) + bit
        else:
            r >>= 1
        bit >>= 2
    return r


def isqrt(u) -> np.ndarray:
    """Elementwise exact floor(sqrt(u)) for 0 <= u < 2^52 (vectorised; same as isqrt_bitwise)."""
    u = _i64(u)
    r = np.floor(np.sqrt(u.astype(np.float64))).astype(np.int64)
    for _ in range(3):
        r = np.where(r * r > u, r - 1, r)
        r = np.where((r + 1) * (r + 1) <= u, r + 1, r)
    return r


@dataclass
class LayerNormParams:
    """Integer LayerNorm parameters (spec §8.1): per-element G (int32, |G| < 2^15),
    B (int32, |B| < 2^30), one shift (1..30), eps term E (int, >= 0)."""
    G: np.ndarray
    B: np.ndarray
    shift: int
    E: int


def layernorm_params(gamma, beta, eps: float, in_scale: float, out_scale: float) -> LayerNormParams:
    """Spec §8.1 (host): G_i = hround(gamma_i/s_y * 2^(sh-10)), B_i = hround(beta_i/s_y * 2^sh),
    sh the largest in 1..30 with max|G| < 2^15 and max|B| < 2^30; E = hround(eps d^2 / s_x^2)."""
    gamma = np.asarray(gamma, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    d = gamma.shape[-1]
    g = gamma / out_scale
    b = beta / out_scale
    for sh in range(30, 0, -1):
        G = hround(g * 2.0 ** (sh - LN_Z_FRAC))
        B = hround(b * 2.0 ** sh)
        if np.abs(G).max(initial=0) < 1 << 15 and np.abs(B).max(initial=0) < 1 << 30:
            break
    else:
        raise ValueError("LayerNorm gamma/beta too large for the output scale")
    E = int(hround(eps * d * d / (in_scale * in_scale)))
    if E >= 1 << 40:
        raise ValueError("LayerNorm eps term too large: the input scale is tiny")
    return LayerNormParams(G.astype(np.int32), B.astype(np.int32), sh, E)


def layernorm(x, p: LayerNormParams, bits: int = 8) -> np.ndarray:
    """Spec §8.2: integer LayerNorm over the last axis of int8 or int16 x (..., d)."""
    x = _i64(x)
    check_range(x, INT16_MIN, INT16_MAX, "LayerNorm input")
    d = x.shape[-1]
    if d > 1024:
        raise ValueError("LayerNorm is specified for d <= 1024")
    s1 = x.sum(-1, keepdims=True)
    s2 = (x * x).sum(-1, keepdims=True)
    V = d * s2 - s1 * s1 + p.E                      # int64, >= 0
    e = bit_length(V)
    a = (30 - e) >> 1
    U = np.where(a >= 0, V << np.maximum(2 * a, 0), V >> np.maximum(-2 * a, 0))
    zero = V == 0
    U = np.where(zero, 1 << 28, U)                  # placeholder; outputs forced below
    check_range(U, 1 << 28, (1 << 30) - 1, "normalised variance U")
    q = isqrt(U)
    R = ((1 << 29) + (q >> 1)) // q                 # one division per token
    c = d * x - s1
    n = rshift_round(c * R, 19 - a)                 # z in Q10
    n = np.where(zero, 0, n)
    acc = n * _i64(p.G) + _i64(p.B)
    check_int32(acc, "LayerNorm affine accumulator")
    return saturate(rshift_round(acc, p.shift), bits).astype(_out_dtype(bits))


def layernorm_float(x, gamma, beta, eps: float) -> np.ndarray:
    """Float64 LayerNorm (biased variance, as torch) for error measurements."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


# ------------------------------------------------------------------ softmax (spec §9)

def softmax_multiplier(scale: float) -> tuple[int, int]:
    """Spec §9.1 (host): (M, shift) mapping one logit unit to Q8 log2 units:
    M * 2^-shift ~= scale * log2(e) * 256, scale = real value of one logit unit."""
    return quantize_multiplier(scale * math.log2(math.e) * (1 << SOFTMAX_T_FRAC))


def softmax_exp(L, M, shift) -> np.ndarray:
    """Spec §9.2: e_j = EXP2_Q14[t & 255] >> (t >> 8), t = rshift_round((max L - L_j) M, shift),
    e_j = 0 for t >= 15*256. Last axis. Returns int64 (0..16384)."""
    L = _i64(L)
    check_range(L, -(1 << 30), (1 << 30) - 1, "softmax logits")
    M, shift = _check_mult(M, shift)
    d = L.max(-1, keepdims=True) - L
    t = rshift_round(d * M, shift)
    small = t < SOFTMAX_T_MAX
    tc = np.where(small, t, 0)
    return np.where(small, _EXP2[tc & 255] >> (tc >> 8), 0)


def softmax_normalise(e) -> np.ndarray:
    """Spec §9.3: Q15 probabilities from e (last axis): b = bitlen(S), S' = S >> (b-15),
    R = (2^29 + S'/2) // S', p_j = (e_j R + 2^(b-2)) >> (b-1). uint16 in 0..32768."""
    e = _i64(e)
    S = e.sum(-1, keepdims=True)
    check_range(S, 1 << 14, INT32_MAX, "softmax sum")
    b = bit_length(S)
    Sp = S >> (b - 15)
    R = ((1 << 29) + (Sp >> 1)) // Sp               # one division per row
    p = (e * R + (np.int64(1) << (b - 2))) >> (b - 1)
    check_range(e * R + (np.int64(1) << (b - 2)), 0, (1 << 32) - 1, "softmax product")
    return p.astype(np.uint16)


def softmax(L, M, shift) -> np.ndarray:
    """Spec §9: integer softmax over the last axis of int32 logits -> Q15 uint16."""
    return softmax_normalise(softmax_exp(L, M, shift))


def softmax_float(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    z = np.exp(v - v.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


# ------------------------------------------------------------------ elementwise (spec §10)

def relu(x) -> np.ndarray:
    """Spec §10.1: max(x, 0), same dtype."""
    a = np.asarray(x)
    return np.maximum(a, 0).astype(a.dtype)


def residual_params(scale_a: float, scale_b: float, scale_out: float) -> tuple[int, int, int]:
    """Spec §10.2 (host): (Ma, Mb, shift) with Ma 2^-shift ~= s_a/s_z, Mb 2^-shift ~= s_b/s_z,
    the larger of Ma, Mb in [2^14, 2^15)."""
    ra, rb = scale_a / scale_out, scale_b / scale_out
    big, sh = quantize_multiplier(max(ra, rb))
    small = int(hround(min(ra, rb) * 2.0 ** sh))
    return (big, small, sh) if ra >= rb else (small, big, sh)


def residual_add(a, b, Ma: int, Mb: int, shift: int, bits: int = 8) -> np.ndarray:
    """Spec §10.2: sat(rshift_round(a*Ma + b*Mb, shift)) for int8/int16 a, b (int64 sum)."""
    a, b = _i64(a), _i64(b)
    check_range(a, INT16_MIN, INT16_MAX, "residual input a")
    check_range(b, INT16_MIN, INT16_MAX, "residual input b")
    _check_mult(Ma, shift)
    _check_mult(Mb, shift)
    return saturate(rshift_round(a * Ma + b * Mb, shift), bits).astype(_out_dtype(bits))


# ------------------------------------------------------------------ routing (spec §11)

def topk(L, k: int) -> np.ndarray:
    """Spec §11.1: indices of the k largest values on the last axis, largest first; among
    equal values the lowest index comes first. Returns int64 (..., k)."""
    L = _i64(L)
    if not 1 <= k <= L.shape[-1]:
        raise ValueError(f"k must be in 1..{L.shape[-1]}, got {k}")
    return np.argsort(-L, axis=-1, kind="stable")[..., :k]


def neighbour_sum(L, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Spec §11.2: for (grid*grid, E) logits in row-major patch order, the sum over each
    patch and its existing 4-neighbours (int32) and the count of summed patches (1, 3, 4, 5)."""
    L = _i64(L)
    n, E = L.shape[-2], L.shape[-1]
    if n != grid * grid:
        raise ValueError(f"{n} tokens do not form a {grid}x{grid} grid")
    x = L.reshape(*L.shape[:-2], grid, grid, E)
    s = x.copy()
    s[..., 1:, :, :] += x[..., :-1, :, :]
    s[..., :-1, :, :] += x[..., 1:, :, :]
    s[..., :, 1:, :] += x[..., :, :-1, :]
    s[..., :, :-1, :] += x[..., :, 1:, :]
    cnt = np.ones((grid, grid), dtype=np.int64)
    cnt[1:, :] += 1
    cnt[:-1, :] += 1
    cnt[:, 1:] += 1
    cnt[:, :-1] += 1
    return check_int32(s, "smoothed logit sum").reshape(L.shape).astype(np.int32), cnt.reshape(n)


def gate_multipliers(logit_scale: float) -> dict[int, tuple[int, int]]:
    """Spec §11.3 (host): softmax multipliers for smoothed logit sums of `count` patches,
    i.e. softmax_multiplier(logit_scale / count), for count in 1, 3, 4, 5."""
    return {c: softmax_multiplier(logit_scale / c) for c in (1, 3, 4, 5)}


def route(L, k: int, gate_mult: dict[int, tuple[int, int]], smooth: bool = False,
          grid: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Spec §11.3: router logits (N, E) int32 -> (idx (N, k) int64, gates (N, k) Q15 uint16).

    Without smoothing: top-k of L, gates = softmax over the k selected with gate_mult[1].
    With smoothing: the same on the neighbour sums, gates with gate_mult[count]."""
    L = _i64(L)
    if smooth:
        L, cnt = neighbour_sum(L, grid)
        L = L.astype(np.int64)
    else:
        cnt = np.ones(L.shape[0], dtype=np.int64)
    idx = topk(L, k)
    sel = np.take_along_axis(L, idx, axis=-1)
    gates = np.zeros(sel.shape, dtype=np.uint16)
    for c in np.unique(cnt):
        rows = cnt == c
        M, sh = gate_mult[int(c)]
        gates[rows] = softmax(sel[rows], M, sh)
    return idx, gates


# ------------------------------------------------------------------ attention (spec §12)

def attention(q, k, v, heads: int, score_mult, out_mult) -> np.ndarray:
    """Spec §12: multi-head attention core on int8 q, k, v of shape (N, dim).

    score_mult = (M, shift) from softmax_multiplier(s_q s_k / sqrt(hd)) (one per tensor, or
    sequences of one per head); out_mult = (M, shift) ~= s_v 2^-15 / s_o (same). Returns int8
    (N, dim), heads concatenated."""
    q, k, v = _i64(q), _i64(k), _i64(v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_range(t, INT8_MIN, INT8_MAX, f"attention {name}")
    n, dim = q.shape
    if dim % heads:
        raise ValueError(f"dim {dim} not divisible by {heads} heads")
    hd = dim // heads
    out = np.empty((n, dim), dtype=np.int8)
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        sm = _per_head(score_mult, h)
        om = _per_head(out_mult, h)
        scores = check_int32(q[:, sl] @ k[:, sl].T, "attention score")
        p = softmax(scores, *sm).astype(np.int64)
        acc = check_int32(p @ v[:, sl], "attention PV accumulator")
        out[:, sl] = requant(acc, *om, bits=8)
    return out


def _per_head(mult, h):
    M, sh = mult
    if np.ndim(M):
        return int(M[h]), int(sh[h])
    return int(M), int(sh)


# ------------------------------------------------------------------ pooling (spec §13)

def mean_pool(x, M: int, shift: int, bits: int = 8) -> np.ndarray:
    """Spec §13: sum over tokens (axis -2, int32), times (M, shift) ~= s_x / (N s_y)."""
    x = _i64(x)
    check_range(x, INT16_MIN, INT16_MAX, "pooling input")
    s = check_int32(x.sum(-2), "pooling sum")
    return requant(s, M, shift, bits)


# ------------------------------------------------------------------ camera frames (spec §14)

FRAME_FORMATS = {"GRAYSCALE": 1, "RGB565": 2}


def _frame_bytes(buf, width: int, height: int, fmt: str) -> np.ndarray:
    if fmt not in FRAME_FORMATS:
        raise ValueError(f"frame format must be one of {sorted(FRAME_FORMATS)}, got {fmt!r}")
    if width < 1 or height < 1:
        raise ValueError(f"frame size must be at least 1x1, got {width}x{height}")
    bpp = FRAME_FORMATS[fmt]
    raw = np.frombuffer(bytes(buf), dtype=np.uint8)
    if raw.size != width * height * bpp:
        raise ValueError(f"{fmt} frame of {width}x{height} needs {width * height * bpp} bytes "
                         f"({bpp} per pixel), got {raw.size}")
    return raw


def rgb565_to_rgb(hi, lo):
    """Spec §14.1: the two bytes of a big-endian RGB565 pixel (int arrays) -> 8-bit (R, G, B),
    each field widened by repeating its top bits below it."""
    v = (hi << 8) | lo
    r5, g6, b5 = v >> 11, (v >> 5) & 63, v & 31
    return (r5 << 3) | (r5 >> 2), (g6 << 2) | (g6 >> 4), (b5 << 3) | (b5 >> 2)


def decode_frame(buf, width: int, height: int, fmt: str) -> np.ndarray:
    """A whole camera frame -> uint8 pixels, (H, W) for GRAYSCALE, (H, W, 3) for RGB565 (for
    looking at a frame; the model's own path is frame_to_pixels)."""
    raw = _frame_bytes(buf, width, height, fmt)
    if fmt == "GRAYSCALE":
        return raw.reshape(height, width).copy()
    px = raw.reshape(height, width, 2).astype(np.int64)
    return np.stack(rgb565_to_rgb(px[..., 0], px[..., 1]), axis=-1).astype(np.uint8)


def frame_to_pixels(buf, width: int, height: int, fmt: str, image_size: int,
                    channels: int) -> np.ndarray:
    """Spec §14.1-14.3: a camera frame -> (channels, S, S) uint8 pixels.

    GRAYSCALE: one byte per pixel. RGB565: two bytes per pixel, big-endian (first byte
    RRRRRGGG, second GGGBBBBB). Rows top to bottom, pixels left to right. Centre crop to a
    square, nearest-neighbour resize to S = image_size, then to the model's channels."""
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if channels not in (1, 3):
        raise ValueError(f"the model takes 1 or 3 channels, got {channels}")
    raw = _frame_bytes(buf, width, height, fmt)
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    i = np.arange(image_size, dtype=np.int64)
    src = (2 * i + 1) * side // (2 * image_size)
    rows, cols = y0 + src, x0 + src
    if fmt == "GRAYSCALE":
        g = raw.reshape(height, width)[np.ix_(rows, cols)].astype(np.int64)
        if channels == 1:
            return g[None].astype(np.uint8)
        return np.repeat(g[None], 3, axis=0).astype(np.uint8)
    px = raw.reshape(height, width, 2)[np.ix_(rows, cols)].astype(np.int64)
    rgb = np.stack(rgb565_to_rgb(px[..., 0], px[..., 1]))
    if channels == 3:
        return rgb.astype(np.uint8)
    y = (77 * rgb[0] + 150 * rgb[1] + 29 * rgb[2] + 128) >> 8
    return y[None].astype(np.uint8)


def input_quant_params(mean, std, input_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spec §14.4 (host): per-channel (A, B, shift) with
    q = sat8(rshift_round(p*A + B, shift)) ~= (p/255 - mean)/std / input_scale.
    shift is the largest in 1..24 with 255|A| + |B| < 2^30."""
    mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    std = np.atleast_1d(np.asarray(std, dtype=np.float64))
    if (std <= 0).any() or input_scale <= 0:
        raise ValueError("std and input_scale must be positive")
    A, B, S = [], [], []
    for m, s in zip(mean, std):
        a = 1.0 / (255.0 * s * input_scale)
        b = -m / (s * input_scale)
        for sh in range(24, 0, -1):
            Ai, Bi = int(hround(a * 2.0 ** sh)), int(hround(b * 2.0 ** sh))
            if 255 * abs(Ai) + abs(Bi) < 1 << 30:
                break
        else:
            raise ValueError("input normalisation too large for the input scale")
        A.append(Ai)
        B.append(Bi)
        S.append(sh)
    return np.array(A, np.int32), np.array(B, np.int32), np.array(S, np.int32)


def input_tables(A, B, shift) -> np.ndarray:
    """Spec §14.4: the (C, 256) int8 lookup tables, equal to quantize_pixels by construction."""
    p = np.arange(256, dtype=np.int64)
    A, B, shift = _i64(A)[:, None], _i64(B)[:, None], _i64(shift)[:, None]
    return saturate(rshift_round(p * A + B, shift), 8).astype(np.int8)


def quantize_pixels(pix, A, B, shift) -> np.ndarray:
    """Spec §14.4: (C, S, S) uint8 -> int8 at the model's input scale."""
    pix = _i64(pix)
    c = (slice(None),) + (None,) * (pix.ndim - 1)
    A, B, shift = _i64(A)[c], _i64(B)[c], _i64(shift)[c]
    return saturate(rshift_round(pix * A + B, shift), 8).astype(np.int8)


def patchify(img, patch: int) -> np.ndarray:
    """Spec §14.5: (C, S, S) -> (N, C*patch*patch), tokens row-major over the grid, each
    patch flattened channel-major (c, row, col) as vit.patchify."""
    img = np.asarray(img)
    c, h, w = img.shape
    if h % patch or w % patch:
        raise ValueError(f"image {h}x{w} is not a multiple of patch {patch}")
    gh, gw = h // patch, w // patch
    x = img.reshape(c, gh, patch, gw, patch).transpose(1, 3, 0, 2, 4)
    return x.reshape(gh * gw, c * patch * patch)


def preprocess_frame(buf, width: int, height: int, fmt: str, image_size: int, channels: int,
                     patch: int, A, B, shift) -> np.ndarray:
    """Spec §14: camera frame -> (N, C*p*p) int8 patch vectors for the patch embedding."""
    pix = frame_to_pixels(buf, width, height, fmt, image_size, channels)
    return patchify(quantize_pixels(pix, A, B, shift), patch)


def softmax_cutoff(M: int, shift: int) -> int | None:
    """Spec §9.2: the smallest difference d = max - L_j with t >= 15*256 (so e_j = 0);
    None when M = 0 (t is always 0). Kernels may compare d against it instead of
    multiplying: equal by construction since t grows with d."""
    if M == 0:
        return None
    # rshift_round(d M, sh) >= 3840  <=>  d M >= 3840 * 2^sh - 2^(sh-1)
    need = SOFTMAX_T_MAX * (1 << shift) - (1 << (shift - 1))
    return -(-need // M)
