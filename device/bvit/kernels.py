"""The kernel backend "python": the model's hot loops in pure MicroPython (docs/integer-spec.md),
no numpy, no viper.

The ternary product of packed trit rows (§4-5), the Q14 butterfly with each rotation's cos/sin
computed from its phase (§6), and the int8 products of the linear layers and attention (§7,
§12): exactly the integers of the host reference (host/butterflyvit/intops.py). bvit.nn has
the per-token ops (§7-§13), bvit.frames the camera frames (§14). Runs unchanged on
MicroPython with or without viper, on CircuitPython and on the WebAssembly port (the tests
use all three, against golden vectors from intops: tests/golden.py).

Conventions: vectors are flat sequences (array('b'/'h'/'i'/'H'), bytearray, list) with an
explicit start offset, so one buffer can hold a whole (tokens x features) activation and
the kernels write into buffers the caller owns (no allocation in the hot loops). Hot
loops stay inside MicroPython small ints (|v| < 2^30) for the sizes the spec allows
(§2.3 form of requant, §9.2 cut-off of softmax); elsewhere (LayerNorm's variance, one per
token) big ints may appear on 32-bit ports, exactly.

The hot loops the model uses (matvec8, ternary_rows, butterfly_ph, attn_scores, attn_pv)
have viper twins in bvit.kviper (and C twins in the native module); bvit.ops picks one.
"""

from .tables import SIN_Q14

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

def ternary_rows(packed, p0, rows, n, x, out):
    """acc_r = sum_c T[r, c] * x_c (spec §5.1) for a ternary matrix in spec §4 rows: row r
    is the ceil(n/5) bytes from packed[p0 + r * ceil(n/5)] (trit c: digit c % 5 of byte
    c // 5; padding trits are zero). x: n int8/int16 values; out: rows int32 accumulators.
    packed may be a signed buffer (array('b')): its bytes are read as 0..255."""
    rb = (n + 4) // 5
    need = p0 + rows * rb
    if p0 < 0 or len(packed) < need:
        raise ValueError("packed trits: expected %d bytes, got %d" % (need, len(packed)))
    D = DIGITS
    last = n - 5 * (rb - 1)                     # trits in a row's last byte
    p = p0
    for r in range(rows):
        acc = 0
        c = 0
        for q in range(rb):
            b = packed[p] & 255
            p += 1
            if b != 121:                        # five zero trits contribute nothing
                if b > 242:
                    raise ValueError("packed trits: byte value %d is not valid (0..242)" % b)
                pb = 5 * b
                for j in range(5 if q < rb - 1 else last):
                    d = D[pb + j]
                    if d == 2:
                        acc += x[c + j]
                    elif d == 0:
                        acc -= x[c + j]
            c += 5
        out[r] = acc
    return out


# ---------------------------------------------------------------- spec §6

def butterfly_ph(v, raw, b0, n_stages, n_pad):
    """The Q14 butterfly of spec §6.3 in place on v (zero-padded to n_pad), each rotation's
    cos/sin computed from its uint16 phase (§6.2), read little-endian from raw at byte b0
    (stage-major, as in the model file): no cos/sin arrays in RAM."""
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


