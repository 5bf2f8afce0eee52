# Viper twins of bvit.frames' per-pixel steps (spec §14): the same arguments, the same
# bytes. With the native module's whole-layer path the forward takes about 90 M
# instructions and the frame's two Python loops would add 2.5 M more; bvit.ops gives these
# to the native backend where viper compiles (a separate module: boards running the viper
# or pure backends keep the pure steps and do not hold this code).

from array import array

import micropython


@micropython.viper
def _row_gray(row, r0: int, x0: int, src, S: int, C: int, pix, o: int):
    pr = ptr8(row)
    ps = ptr16(src)
    pp = ptr8(pix)
    plane = S * S
    for j in range(S):
        g = pr[r0 + x0 + ps[j]]
        pp[o + j] = g
        if C == 3:
            pp[plane + o + j] = g
            pp[2 * plane + o + j] = g


@micropython.viper
def _row_565(row, r0: int, x0: int, src, S: int, C: int, pix, o: int):
    pr = ptr8(row)
    ps = ptr16(src)
    pp = ptr8(pix)
    plane = S * S
    for j in range(S):
        p = r0 + 2 * (x0 + ps[j])
        hi = int(pr[p])
        lo = int(pr[p + 1])
        r5 = hi >> 3
        g6 = ((hi & 7) << 3) | (lo >> 5)
        b5 = lo & 31
        r = (r5 << 3) | (r5 >> 2)
        g = (g6 << 2) | (g6 >> 4)
        b = (b5 << 3) | (b5 >> 2)
        if C == 3:
            pp[o + j] = r
            pp[plane + o + j] = g
            pp[2 * plane + o + j] = b
        else:
            pp[o + j] = (77 * r + 150 * g + 29 * b + 128) >> 8


def frame_row_pixels(row, r0, fmt, x0, src, S, C, pix, i):
    if not isinstance(src, array):               # a list: frames wider than 65535 pixels
        from .frames import frame_row_pixels as py
        return py(row, r0, fmt, x0, src, S, C, pix, i)
    (_row_gray if fmt == "GRAYSCALE" else _row_565)(row, r0, x0, src, S, C, pix, i * S)


@micropython.viper
def _patches(pix, C: int, S: int, p: int, g: int, tables, out):
    pp = ptr8(pix)
    pt = ptr8(tables)                            # int8 table entries copied as bytes
    po = ptr8(out)
    plane = S * S
    o = 0
    for gr in range(g):
        for gc in range(g):
            for c in range(C):
                tb = 256 * c
                base = c * plane + gr * p * S + gc * p
                for r in range(p):
                    rb = base + r * S
                    for j in range(rb, rb + p):
                        po[o] = pt[tb + pp[j]]
                        o += 1


def quantize_patches(pix, C, S, p, tables, out):
    _patches(pix, C, S, p, S // p, tables, out)
    return out
