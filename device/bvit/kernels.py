"""Integer kernels in pure MicroPython (docs/integer-spec.md): no numpy, no viper.

A transcription of the host reference (host/butterflyvit/intops.py). This module: trits
and the ternary matvec, plain and lookup-table forms (§4-5), integer sin/cos of phases and the Q14 butterfly (§6), and the
int8 products of the linear layers and attention (§7, §12). bvit.nn has the per-token
ops (§7-§13), bvit.frames the camera frames (§14). Every function gives exactly the
integers the host reference gives. Runs unchanged on MicroPython with or without viper,
on CircuitPython, on the WebAssembly port, and under CPython (the tests use all four).

Conventions: vectors are flat sequences (array('b'/'h'/'i'/'H'), bytearray, list) with an
explicit start offset, so one buffer can hold a whole (tokens x features) activation and
the kernels write into buffers the caller owns (no allocation in the hot loops). Hot
loops stay inside MicroPython small ints (|v| < 2^30) for the sizes the spec allows
(§2.3 form of requant, §9.2 cut-off of softmax); elsewhere (LayerNorm's variance, one per
token) big ints may appear on 32-bit ports, exactly.

The hot loops the model uses (matvec8, ternary_stream, butterfly_ph, attn_scores, attn_pv)
have viper twins in bvit.kviper (and C twins in the native module); bvit.ops picks one.
"""

from array import array

from .nn import requant, rshift_round  # noqa: F401  (spec §1-2; part of this module's API)
from .tables import SIN_Q14  # noqa: F401  (spec §6.2; callers take it from here too)

NAME = "python"


def _make_digits():
    # DIGITS[5*b + k] = digit k of byte b (b = 0..242); trit = digit - 1 (spec §4).
    t = bytearray(243 * 5)
    for b in range(243):
        v = b
        for k in range(5):
            t[5 * b + k] = v % 3
            v //= 3
    return bytes(t)


DIGITS = _make_digits()


# ---------------------------------------------------------------- spec §4-5

def unpack_trits(packed, rows, n):
    """Packed bytes -> array('b') of rows*n trits (row-major). ValueError on bad input."""
    nb = (n + 4) // 5
    if len(packed) != rows * nb:
        raise ValueError("packed trits: expected %d bytes, got %d" % (rows * nb, len(packed)))
    out = array("b", bytes(rows * n))
    D = DIGITS
    o = 0
    for r in range(rows):
        base_byte = r * nb
        i = 0
        for g in range(nb):
            b = packed[base_byte + g]
            if b > 242:
                raise ValueError("packed trits: byte value %d is not valid (0..242)" % b)
            p = 5 * b
            for k in range(5):
                d = D[p + k]
                if i < n:
                    out[o] = d - 1
                    o += 1
                elif d != 1:
                    raise ValueError("packed trits: padding trits must be zero")
                i += 1
    return out


def _check_packed(packed, rows, nb):
    if len(packed) < rows * nb:
        raise ValueError("packed trits: expected %d bytes, got %d" % (rows * nb, len(packed)))


def ternary_matvec(packed, rows, n, x, out=None):
    """acc_r = sum_i t_ri * x_i from packed trits (spec §5.1). x: n int8/int16 values.
    Returns (or fills) array('i') of rows accumulators. `packed` may be longer than
    rows * ceil(n/5) (a buffer reused for smaller blocks): the first rows are used."""
    nb = (n + 4) // 5
    _check_packed(packed, rows, nb)
    if out is None:
        out = array("i", bytes(4 * rows))
    D = DIGITS
    full = n // 5          # groups with 5 real inputs
    tail = n - 5 * full    # inputs in the last, partial group
    off = 0
    for r in range(rows):
        acc = 0
        i = 0
        for g in range(full):
            b = packed[off + g]
            if b > 242:
                raise ValueError("packed trits: byte value %d is not valid (0..242)" % b)
            if b != 121:                  # five zero trits contribute nothing
                p = 5 * b
                for k in range(5):
                    d = D[p + k]
                    if d == 2:
                        acc += x[i + k]
                    elif d == 0:
                        acc -= x[i + k]
            i += 5
        if tail:
            b = packed[off + full]
            if b > 242:
                raise ValueError("packed trits: byte value %d is not valid (0..242)" % b)
            p = 5 * b
            for k in range(tail):
                d = D[p + k]
                if d == 2:
                    acc += x[i]
                elif d == 0:
                    acc -= x[i]
                i += 1
        out[r] = acc
        off += nb
    return out


def ternary_stream(packed, t0, rows, n, x, out):
    """acc_r = sum_c T[r, c] * x_c (spec §5.1) for a ternary matrix stored as a trit stream
    (docs/integer-model.md): trit r*n + c of the matrix is trit t0 + r*n + c of `packed`
    (digit i % 5 of byte i // 5, §4), rows need not start on a byte. x: n int8/int16
    values; out: rows int32 accumulators. packed may be a signed buffer (array('b')): its
    bytes are read as 0..255."""
    need = (t0 + rows * n + 4) // 5
    if len(packed) < need:
        raise ValueError("packed trits: expected %d bytes, got %d" % (need, len(packed)))
    D = DIGITS
    p = t0 // 5
    k = t0 - 5 * p
    for r in range(rows):
        acc = 0
        c = 0
        if k:                                   # the row starts inside a byte
            b = packed[p] & 255
            if b > 242:
                raise ValueError("packed trits: byte value %d is not valid (0..242)" % b)
            m = 5 - k
            if m > n:
                m = n
            pb = 5 * b + k
            for j in range(m):
                d = D[pb + j]
                if d == 2:
                    acc += x[j]
                elif d == 0:
                    acc -= x[j]
            c = m
            k += m
            if k == 5:
                k = 0
                p += 1
        while c + 5 <= n:                       # whole bytes
            b = packed[p] & 255
            p += 1
            if b != 121:                        # five zero trits contribute nothing
                if b > 242:
                    raise ValueError("packed trits: byte value %d is not valid (0..242)" % b)
                pb = 5 * b
                for j in range(5):
                    d = D[pb + j]
                    if d == 2:
                        acc += x[c + j]
                    elif d == 0:
                        acc -= x[c + j]
            c += 5
        if c < n:                               # the row ends inside a byte
            b = packed[p] & 255
            if b > 242:
                raise ValueError("packed trits: byte value %d is not valid (0..242)" % b)
            pb = 5 * b
            for j in range(n - c):
                d = D[pb + j]
                if d == 2:
                    acc += x[c + j]
                elif d == 0:
                    acc -= x[c + j]
            k = n - c
        out[r] = acc
    return out


def lut_size(n):
    """Entries of the lookup tables for an input of n values (spec §5.2): 243 per group of 5."""
    return 243 * ((n + 4) // 5)


def build_luts(x, n, tables):
    """T_g[b] = sum_k (digit_k(b) - 1) * x_{5g+k} into tables[243 g + b] (spec §5.2):
    inputs past n count as 0. tables: array('i') of lut_size(n)."""
    ng = (n + 4) // 5
    for g in range(ng):
        i = 5 * g
        v0 = x[i]
        v1 = x[i + 1] if i + 1 < n else 0
        v2 = x[i + 2] if i + 2 < n else 0
        v3 = x[i + 3] if i + 3 < n else 0
        v4 = x[i + 4] if i + 4 < n else 0
        b = 243 * g
        s4 = -(v0 + v1 + v2 + v3 + v4)     # byte 0: all five trits -1
        for _ in range(3):                 # digit 4, then 3, 2, 1, 0 (innermost)
            s3 = s4
            for _ in range(3):
                s2 = s3
                for _ in range(3):
                    s1 = s2
                    for _ in range(3):
                        tables[b] = s1
                        tables[b + 1] = s1 + v0
                        tables[b + 2] = s1 + v0 + v0
                        b += 3
                        s1 += v1
                    s2 += v2
                s3 += v3
            s4 += v4


def ternary_matvec_lut(packed, rows, n, tables, out, check=True):
    """acc_r = sum_g T_g[byte_rg] (spec §5.2), tables from build_luts; equal to
    ternary_matvec. Pays off when rows is above ~60 (one lookup replaces five trits)."""
    nb = (n + 4) // 5
    _check_packed(packed, rows, nb)
    off = 0
    for r in range(rows):
        acc = 0
        t = 0
        for g in range(off, off + nb):
            b = packed[g]
            if check and b > 242:
                raise ValueError("packed trits: byte value %d is not valid (0..242)" % b)
            acc += tables[t + b]
            t += 243
        out[r] = acc
        off += nb
    return out


# ---------------------------------------------------------------- spec §6

def _quarter_sin(r):
    idx = r >> 6
    frac = r & 63
    lo = SIN_Q14[idx]
    if frac == 0:
        return lo
    return lo + (((SIN_Q14[idx + 1] - lo) * frac + 32) >> 6)


def sincos_q14(phase):
    """(cos, sin) in Q14 of a uint16 phase (angle = phase * 2 pi / 65536), spec §6.2."""
    q = phase >> 14
    r = phase & 0x3FFF
    a = _quarter_sin(r)
    b = _quarter_sin(16384 - r)
    if q == 0:
        return b, a
    if q == 1:
        return -a, b
    if q == 2:
        return -b, -a
    return a, -b


def sincos_raw(raw, b0, count, cos, sin):
    """cos[i], sin[i] (Q14) of `count` uint16 phases stored little-endian in raw bytes from
    byte b0 (as in the model file; an int16 section holds the bit patterns). Spec §6.2."""
    S = SIN_Q14
    j = b0
    for i in range(count):
        ph = raw[j] | (raw[j + 1] << 8)
        j += 2
        r = ph & 0x3FFF
        idx = r >> 6
        frac = r & 63
        a = S[idx]
        if frac:
            a += ((S[idx + 1] - a) * frac + 32) >> 6
        r = 16384 - r
        idx = r >> 6
        frac = r & 63
        b = S[idx]
        if frac:
            b += ((S[idx + 1] - b) * frac + 32) >> 6
        q = ph >> 14
        if q == 0:
            cos[i] = b
            sin[i] = a
        elif q == 1:
            cos[i] = -a
            sin[i] = b
        elif q == 2:
            cos[i] = -b
            sin[i] = -a
        else:
            cos[i] = a
            sin[i] = -b


def butterfly_stage(v, cos, sin, l, n_pad):
    """Stage l of the Q14 butterfly, in place on v (length n_pad), spec §6.3."""
    h = 1 << l
    s = h << 1
    a = l * (n_pad >> 1)
    blk = 0
    while blk < n_pad:   # (a range with a variable step would allocate)
        for i1 in range(blk, blk + h):
            i2 = i1 + h
            c = cos[a]
            sn = sin[a]
            a += 1
            x1 = v[i1]
            x2 = v[i2]
            y1 = (c * x1 - sn * x2 + 8192) >> 14
            y2 = (sn * x1 + c * x2 + 8192) >> 14
            if y1 > 32767:
                y1 = 32767
            elif y1 < -32768:
                y1 = -32768
            if y2 > 32767:
                y2 = 32767
            elif y2 < -32768:
                y2 = -32768
            v[i1] = y1
            v[i2] = y2
        blk += s


def butterfly(v, cos, sin, n_stages, n_pad):
    """All stages l = 0..n_stages-1 in order, in place on v (already zero-padded to n_pad)."""
    for l in range(n_stages):
        butterfly_stage(v, cos, sin, l, n_pad)
    return v


def butterfly_ph(v, raw, b0, n_stages, n_pad):
    """The Q14 butterfly of spec §6.3 in place on v (zero-padded to n_pad), each rotation's
    cos/sin computed from its uint16 phase (§6.2), read little-endian from raw at byte b0
    (stage-major, as in the model file). Equal to sincos_raw then butterfly, without the
    cos/sin arrays."""
    S = SIN_Q14
    j = b0
    for l in range(n_stages):
        h = 1 << l
        s = h << 1
        blk = 0
        while blk < n_pad:
            for i1 in range(blk, blk + h):
                ph = raw[j] | (raw[j + 1] << 8)
                j += 2
                r = ph & 0x3FFF
                idx = r >> 6
                frac = r & 63
                a = S[idx]
                if frac:
                    a += ((S[idx + 1] - a) * frac + 32) >> 6
                r = 16384 - r
                idx = r >> 6
                frac = r & 63
                b = S[idx]
                if frac:
                    b += ((S[idx + 1] - b) * frac + 32) >> 6
                q = ph >> 14
                if q == 0:
                    c = b
                    sn = a
                elif q == 1:
                    c = -a
                    sn = b
                elif q == 2:
                    c = -b
                    sn = -a
                else:
                    c = a
                    sn = -b
                i2 = i1 + h
                x1 = v[i1]
                x2 = v[i2]
                y1 = (c * x1 - sn * x2 + 8192) >> 14
                y2 = (sn * x1 + c * x2 + 8192) >> 14
                if y1 > 32767:
                    y1 = 32767
                elif y1 < -32768:
                    y1 = -32768
                if y2 > 32767:
                    y2 = 32767
                elif y2 < -32768:
                    y2 = -32768
                v[i1] = y1
                v[i2] = y2
            blk += s
    return v


def butterfly_input_shift(n_stages):
    """Spec §6.4: P = 7 - ceil(n_l / 2)."""
    return 7 - (n_stages + 1) // 2


def padded_size(n):
    p = 1
    while p < n:
        p <<= 1
    return p


# ---------------------------------------------------------------- spec §7, §12: int8 products

def matvec8(x, x0, n, w, rows, out):
    """out[r] = sum_i w[r*n + i] * x[x0 + i] for r < rows (int8 x and w, int32 out), spec §7."""
    j = 0
    for r in range(rows):
        acc = 0
        i = x0
        for jj in range(j, j + n):
            acc += w[jj] * x[i]
            i += 1
        out[r] = acc
        j += n
    return out


def attn_scores(qkv, q0, k0, stride, n, hd, out):
    """out[j] = sum_c qkv[q0+c] * qkv[k0 + j*stride + c] for j < n (int8 q, k; int32 out)."""
    kj = k0
    for j in range(n):
        s = 0
        i = q0
        for c in range(kj, kj + hd):
            s += qkv[i] * qkv[c]
            i += 1
        out[j] = s
        kj += stride


def attn_pv(p, n, qkv, v0, stride, hd, out):
    """out[c] = sum_j p[j] * qkv[v0 + j*stride + c] for c < hd (Q15 p, int8 v; int32 out)."""
    for c in range(hd):
        out[c] = 0
    vj = v0
    for j in range(n):
        pj = p[j]
        if pj:
            i = vj
            for c in range(hd):
                out[c] += pj * qkv[i]
                i += 1
        vj += stride


