# Viper twins of the hot loops of bvit.kernels: the same arguments, the same integers.
#
# Imported only where MicroPython's viper emitter exists (bvit.ops catches the failure
# elsewhere: CircuitPython, the WebAssembly port, ports built without it). Viper ints are
# machine words: 32 bits on the boards, 64 on the unix port. Every value here is int32 by
# the spec's bounds (docs/integer-spec.md §5-§7, §12), so both give the same results.
# Buffer element types are fixed (viper reads raw memory):
#   matvec8         x, w int8 (array('b'), or bytes holding int8 bit patterns); out array('i')
#   ternary_rows    packed trits (bytes 0..242, any 1-byte buffer); x array('h'); out array('i')
#   butterfly_ph    v array('h'); raw: phases as little-endian uint16 bytes
#   attn_*          qkv int8; p array('i') (Q15); out array('i')
#   requant_rows    acc, bias array('i'); Ms array('h'); shifts array('b'); out 'b' or 'h'
#   relu, expert_input, mix_add, mix_round: int16 vectors array('h'), int32 array('i')
# Loads from ptr8/ptr16 are unsigned: int8/int16 values are sign-extended with
# (v ^ 0x80) - 0x80 and (v ^ 0x8000) - 0x8000.

from array import array

import micropython

from .nn import requant_rows as _requant_rows_py
from .tables import SIN_Q14

NAME = "viper"
EXTRAS = ("requant_rows", "relu", "expert_input", "mix_add", "mix_round")   # bvit.ops.OPTIONAL


@micropython.viper
def matvec8(x, x0: int, n: int, w, rows: int, out):
    px = ptr8(x)
    pw = ptr8(w)
    po = ptr32(out)
    j = 0
    for r in range(rows):
        acc = 0
        i = x0
        for jj in range(j, j + n):
            acc += ((int(pw[jj]) ^ 0x80) - 0x80) * ((int(px[i]) ^ 0x80) - 0x80)
            i += 1
        po[r] = acc
        j += n
    return out


@micropython.viper
def _rows(packed, p0: int, rows: int, n: int, x, out) -> int:
    # Returns -1, or the offset of the first invalid byte (243..255). Each trit adds
    # (digit - 1) * x: one multiply, no branch. Padding trits are zero (checked at load)
    # and x has no element past n-1 to multiply them with, so the last byte stops at n.
    pp = ptr8(packed)
    px = ptr16(x)
    po = ptr32(out)
    p = p0
    for r in range(rows):
        acc = 0
        c = 0
        while c < n:
            b = int(pp[p])
            p += 1
            end = c + 5
            if end > n:
                end = n
            if b != 121:                      # five zero trits
                if b > 242:
                    return p - 1
                for j in range(c, end):
                    q = (b * 171) >> 9        # b // 3 for 0 <= b <= 255
                    acc += (b - 3 * q - 1) * ((int(px[j]) ^ 0x8000) - 0x8000)
                    b = q
            c = end
        po[r] = acc
    return -1


def ternary_rows(packed, p0, rows, n, x, out):
    need = p0 + rows * ((n + 4) // 5)
    if p0 < 0 or len(packed) < need:
        raise ValueError("packed trits: expected %d bytes, got %d" % (need, len(packed)))
    bad = _rows(packed, p0, rows, n, x, out)
    if bad >= 0:
        raise ValueError("packed trits: byte value %d is not valid (0..242)" % (packed[bad] & 255))
    return out


@micropython.viper
def butterfly_ph(v, raw, b0: int, n_stages: int, n_pad: int):
    pv = ptr16(v)
    pr = ptr8(raw)
    S = ptr16(SIN_Q14)
    j = b0
    for l in range(n_stages):
        h = 1 << l
        s = h << 1
        blk = 0
        while blk < n_pad:
            for i1 in range(blk, blk + h):
                ph = int(pr[j]) | (int(pr[j + 1]) << 8)
                j += 2
                r = ph & 0x3FFF
                idx = r >> 6
                frac = r & 63
                a = int(S[idx])
                if frac:
                    a += ((int(S[idx + 1]) - a) * frac + 32) >> 6
                r = 16384 - r
                idx = r >> 6
                frac = r & 63
                b = int(S[idx])
                if frac:
                    b += ((int(S[idx + 1]) - b) * frac + 32) >> 6
                q = ph >> 14
                if q == 0:
                    c = b
                    sn = a
                elif q == 1:
                    c = 0 - a
                    sn = b
                elif q == 2:
                    c = 0 - b
                    sn = 0 - a
                else:
                    c = a
                    sn = 0 - b
                i2 = i1 + h
                x1 = (int(pv[i1]) ^ 0x8000) - 0x8000
                x2 = (int(pv[i2]) ^ 0x8000) - 0x8000
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
                pv[i1] = y1
                pv[i2] = y2
            blk += s
    return v


@micropython.viper
def attn_scores(qkv, q0: int, k0: int, stride: int, n: int, hd: int, out):
    p = ptr8(qkv)
    po = ptr32(out)
    kj = k0
    for j in range(n):
        s = 0
        i = q0
        for c in range(kj, kj + hd):
            s += ((int(p[i]) ^ 0x80) - 0x80) * ((int(p[c]) ^ 0x80) - 0x80)
            i += 1
        po[j] = s
        kj += stride


@micropython.viper
def attn_pv(pr, n: int, qkv, v0: int, stride: int, hd: int, out):
    pp = ptr32(pr)
    p = ptr8(qkv)
    po = ptr32(out)
    for c in range(hd):
        po[c] = 0
    vj = v0
    for j in range(n):
        pj = int(pp[j])
        if pj:
            i = vj
            for c in range(hd):
                po[c] = int(po[c]) + pj * ((int(p[i]) ^ 0x80) - 0x80)
                i += 1
        vj += stride


# ---------------------------------------------------------------- per-element steps

@micropython.viper
def _requant_rows(acc, a0: int, out, o0: int, n: int, Ms, shifts, r0: int, bias, has_bias: int,
                  lo: int, hi: int) -> int:
    # nn.requant_rows for |acc + bias| < 2^29, where every intermediate of spec §2.3 fits
    # 32 bits; returns -1, or the index of the first element outside (done in Python).
    pa = ptr32(acc)
    pb = ptr32(bias)
    pm = ptr16(Ms)
    ps = ptr8(shifts)
    p8 = ptr8(out)
    p16 = ptr16(out)
    wide = hi > 127
    big = 1 << 29
    for i in range(n):
        r = r0 + i
        v = int(pa[a0 + i])
        if has_bias:
            v += int(pb[r])
        if v >= big or v < 0 - big:
            return i
        M = int(pm[r])
        s = int(ps[r])
        if M == 0 or s >= 47:
            y = 0
        elif s >= 16:
            y = ((v >> 15) * M + (((v & 0x7FFF) * M) >> 15) + (1 << (s - 16))) >> (s - 15)
        elif v >= 65536:
            y = hi
        elif v <= -65536:
            y = lo
        else:
            y = (v * M + (1 << (s - 1))) >> s
        if y < lo:
            y = lo
        elif y > hi:
            y = hi
        if wide:
            p16[o0 + i] = y
        else:
            p8[o0 + i] = y
    return -1


def requant_rows(acc, a0, out, o0, n, Ms, shifts, r0=0, bias=None, lo=-128, hi=127):
    """bvit.nn.requant_rows (spec §2.3 per row): out array('b') for int8, array('h') for
    int16; Ms array('h'), shifts array('b'), acc and bias array('i')."""
    i = 0
    while i < n:
        j = _requant_rows(acc, a0 + i, out, o0 + i, n - i, Ms, shifts, r0 + i,
                          acc if bias is None else bias, 0 if bias is None else 1, lo, hi)
        if j < 0:
            return
        i += j
        _requant_rows_py(acc, a0 + i, out, o0 + i, 1, Ms, shifts, r0 + i, bias, lo, hi)
        i += 1


@micropython.viper
def relu(v, v0: int, n: int):
    p = ptr16(v)
    for i in range(v0, v0 + n):
        if int(p[i]) & 0x8000:
            p[i] = 0


@micropython.viper
def expert_input(a, a0: int, d: int, P: int, u, dp: int):
    # u = a[a0:a0+d] * 2^P (int8 -> int16), zero-padded to dp (spec §6.4)
    pa = ptr8(a)
    pu = ptr16(u)
    for q in range(d):
        pu[q] = ((int(pa[a0 + q]) ^ 0x80) - 0x80) << P
    for q in range(d, dp):
        pu[q] = 0


@micropython.viper
def mix_add(mix, h, gate: int, f: int, first: int):
    # mix[q] (=, or += when not first) gate * h[q]: Q15 gate, int16 h, int32 mix
    pm = ptr32(mix)
    ph = ptr16(h)
    if first:
        for q in range(f):
            pm[q] = gate * ((int(ph[q]) ^ 0x8000) - 0x8000)
    else:
        for q in range(f):
            pm[q] = int(pm[q]) + gate * ((int(ph[q]) ^ 0x8000) - 0x8000)


@micropython.viper
def mix_round(mix, m, f: int):
    # m[q] = sat16(rshift_round(mix[q], 15))
    pm = ptr32(mix)
    po = ptr16(m)
    top = 1 << 29
    top = top << 2                # 2^31, made at run time: mpy-cross keeps small-int literals < 2^30
    for q in range(f):
        v = int(pm[q])
        v = (((v ^ top) - top) + 16384) >> 15    # sign-extended where ints have 64 bits
        if v > 32767:
            v = 32767
        elif v < -32768:
            v = -32768
        po[q] = v

