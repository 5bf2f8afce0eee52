# Viper twins of the hot loops of bvit.kernels: the same arguments, the same integers.
#
# Imported only where MicroPython's viper emitter exists (bvit.ops catches the failure
# elsewhere: CircuitPython, the WebAssembly port, ports built without it). Viper ints are
# machine words: 32 bits on the boards, 64 on the unix port. Every value here is int32 by
# the spec's bounds (docs/integer-spec.md §5-§7, §12), so both give the same results.
# Buffer element types are fixed (viper reads raw memory):
#   matvec8     x, w int8 (array('b'), or bytes holding int8 bit patterns); out array('i')
#   ternary_*   packed uint8 bytes (0..242); x array('h'); out array('i')
#   butterfly   v, cos, sin array('h'); butterfly_ph: v array('h'), raw bytes (phases)
#   sincos_raw  raw bytes (little-endian uint16 phases); cos, sin array('h')
#   attn_*      qkv int8; p array('i') (Q15); out array('i')
# Loads from ptr8/ptr16 are unsigned: int8/int16 values are sign-extended with
# (v ^ 0x80) - 0x80 and (v ^ 0x8000) - 0x8000.

import micropython

from .tables import SIN_Q14


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
def _ternary(packed, rows: int, n: int, x, out) -> int:
    # Returns -1, or the offset of the first invalid byte (243..255).
    pp = ptr8(packed)
    px = ptr16(x)
    po = ptr32(out)
    nb = (n + 4) // 5
    full = n // 5
    tail = n - 5 * full
    off = 0
    for r in range(rows):
        acc = 0
        i = 0
        for g in range(off, off + full):
            b = int(pp[g])
            if b != 121:               # five zero trits
                if b > 242:
                    return g
                for k in range(5):
                    q = (b * 171) >> 9     # b // 3 for 0 <= b <= 255
                    d = b - 3 * q
                    if d == 2:
                        acc += (int(px[i + k]) ^ 0x8000) - 0x8000
                    elif d == 0:
                        acc -= (int(px[i + k]) ^ 0x8000) - 0x8000
                    b = q
            i += 5
        if tail:
            b = int(pp[off + full])
            if b > 242:
                return off + full
            for k in range(tail):
                q = (b * 171) >> 9
                d = b - 3 * q
                if d == 2:
                    acc += (int(px[i]) ^ 0x8000) - 0x8000
                elif d == 0:
                    acc -= (int(px[i]) ^ 0x8000) - 0x8000
                b = q
                i += 1
        po[r] = acc
        off += nb
    return -1


def ternary_matvec(packed, rows, n, x, out=None):
    nb = (n + 4) // 5
    if len(packed) < rows * nb:
        raise ValueError("packed trits: expected %d bytes, got %d" % (rows * nb, len(packed)))
    if out is None:
        from array import array
        out = array("i", bytes(4 * rows))
    bad = _ternary(packed, rows, n, x, out)
    if bad >= 0:
        raise ValueError("packed trits: byte value %d is not valid (0..242)" % packed[bad])
    return out


@micropython.viper
def _stream(packed, t0: int, rows: int, n: int, x, out) -> int:
    # Returns -1, or the offset of the first invalid byte (243..255).
    pp = ptr8(packed)
    px = ptr16(x)
    po = ptr32(out)
    p = t0 // 5
    k = t0 - 5 * p
    for r in range(rows):
        acc = 0
        c = 0
        if k:
            b = int(pp[p])
            if b > 242:
                return p
            for j in range(k):             # skip the digits of the previous row
                b = (b * 171) >> 9
            m = 5 - k
            if m > n:
                m = n
            for j in range(m):
                q = (b * 171) >> 9
                d = b - 3 * q
                if d == 2:
                    acc += (int(px[j]) ^ 0x8000) - 0x8000
                elif d == 0:
                    acc -= (int(px[j]) ^ 0x8000) - 0x8000
                b = q
            c = m
            k += m
            if k == 5:
                k = 0
                p += 1
        while c + 5 <= n:
            b = int(pp[p])
            p += 1
            if b != 121:
                if b > 242:
                    return p - 1
                for j in range(c, c + 5):
                    q = (b * 171) >> 9
                    d = b - 3 * q
                    if d == 2:
                        acc += (int(px[j]) ^ 0x8000) - 0x8000
                    elif d == 0:
                        acc -= (int(px[j]) ^ 0x8000) - 0x8000
                    b = q
            c += 5
        if c < n:
            b = int(pp[p])
            if b > 242:
                return p
            for j in range(c, n):
                q = (b * 171) >> 9
                d = b - 3 * q
                if d == 2:
                    acc += (int(px[j]) ^ 0x8000) - 0x8000
                elif d == 0:
                    acc -= (int(px[j]) ^ 0x8000) - 0x8000
                b = q
            k = n - c
        po[r] = acc
    return -1


def ternary_stream(packed, t0, rows, n, x, out):
    need = (t0 + rows * n + 4) // 5
    if len(packed) < need:
        raise ValueError("packed trits: expected %d bytes, got %d" % (need, len(packed)))
    bad = _stream(packed, t0, rows, n, x, out)
    if bad >= 0:
        raise ValueError("packed trits: byte value %d is not valid (0..242)" % packed[bad])
    return out


@micropython.viper
def butterfly(v, cos, sin, n_stages: int, n_pad: int):
    pv = ptr16(v)
    pc = ptr16(cos)
    ps = ptr16(sin)
    half = n_pad >> 1
    for l in range(n_stages):
        h = 1 << l
        s = h << 1
        a = l * half
        blk = 0
        while blk < n_pad:
            for i1 in range(blk, blk + h):
                i2 = i1 + h
                c = (int(pc[a]) ^ 0x8000) - 0x8000
                sn = (int(ps[a]) ^ 0x8000) - 0x8000
                a += 1
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
def sincos_raw(raw, b0: int, count: int, cos, sin):
    pr = ptr8(raw)
    pc = ptr16(cos)
    ps = ptr16(sin)
    S = ptr16(SIN_Q14)
    j = b0
    for i in range(count):
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
            pc[i] = b
            ps[i] = a
        elif q == 1:
            pc[i] = 0 - a
            ps[i] = b
        elif q == 2:
            pc[i] = 0 - b
            ps[i] = 0 - a
        else:
            pc[i] = a
            ps[i] = 0 - b


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
