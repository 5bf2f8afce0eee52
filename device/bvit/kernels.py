"""Integer kernels in pure MicroPython (docs/integer-spec.md), no numpy, no viper.

A transcription of the host reference (host/butterflyvit/intops.py) for the core ops:
rounding shift and requantisation (spec §1-2), trit unpacking and the ternary matvec
(spec §4-5), integer sin/cos of phases and the Q14 butterfly (spec §6). Every function
returns exactly the integers the host reference returns. The hot loops stay within
MicroPython small ints (|v| < 2^30) for the sizes the spec allows.

Buffers: packed trits are bytes/bytearray/memoryview; vectors are array('b'), array('h'),
array('i') or lists; cos/sin are flat sequences of n_l * n_pad/2 Q14 values, stage-major.
"""

from array import array

# SIN_Q14[i] = floor(16384 * sin(i * pi / 512) + 0.5), i = 0..256 (spec §6.2).
SIN_Q14 = array("h", (
    0, 101, 201, 302, 402, 503, 603, 704, 804, 904, 1005, 1105, 1205, 1306, 1406, 1506,
    1606, 1706, 1806, 1906, 2006, 2105, 2205, 2305, 2404, 2503, 2603, 2702, 2801, 2900, 2999, 3098,
    3196, 3295, 3393, 3492, 3590, 3688, 3786, 3883, 3981, 4078, 4176, 4273, 4370, 4467, 4563, 4660,
    4756, 4852, 4948, 5044, 5139, 5235, 5330, 5425, 5520, 5614, 5708, 5803, 5897, 5990, 6084, 6177,
    6270, 6363, 6455, 6547, 6639, 6731, 6823, 6914, 7005, 7096, 7186, 7276, 7366, 7456, 7545, 7635,
    7723, 7812, 7900, 7988, 8076, 8163, 8250, 8337, 8423, 8509, 8595, 8680, 8765, 8850, 8935, 9019,
    9102, 9186, 9269, 9352, 9434, 9516, 9598, 9679, 9760, 9841, 9921, 10001, 10080, 10159, 10238, 10316,
    10394, 10471, 10549, 10625, 10702, 10778, 10853, 10928, 11003, 11077, 11151, 11224, 11297, 11370,
    11442, 11514, 11585, 11656, 11727, 11797, 11866, 11935, 12004, 12072, 12140, 12207, 12274, 12340,
    12406, 12472, 12537, 12601, 12665, 12729, 12792, 12854, 12916, 12978, 13039, 13100, 13160, 13219,
    13279, 13337, 13395, 13453, 13510, 13567, 13623, 13678, 13733, 13788, 13842, 13896, 13949, 14001,
    14053, 14104, 14155, 14206, 14256, 14305, 14354, 14402, 14449, 14497, 14543, 14589, 14635, 14680,
    14724, 14768, 14811, 14854, 14896, 14937, 14978, 15019, 15059, 15098, 15137, 15175, 15213, 15250,
    15286, 15322, 15357, 15392, 15426, 15460, 15493, 15525, 15557, 15588, 15619, 15649, 15679, 15707,
    15736, 15763, 15791, 15817, 15843, 15868, 15893, 15917, 15941, 15964, 15986, 16008, 16029, 16049,
    16069, 16088, 16107, 16125, 16143, 16160, 16176, 16192, 16207, 16221, 16235, 16248, 16261, 16273,
    16284, 16295, 16305, 16315, 16324, 16332, 16340, 16347, 16353, 16359, 16364, 16369, 16373, 16376,
    16379, 16381, 16383, 16384, 16384,
))


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


# ---------------------------------------------------------------- spec §1-2

def rshift_round(x, s):
    """(x + 2^(s-1)) >> s, s >= 1: round to nearest, halves towards +infinity."""
    return (x + (1 << (s - 1))) >> s


def requant(acc, M, shift, lo=-128, hi=127):
    """sat(rshift_round(acc * M, shift)), no intermediate beyond 2^30 for |acc| < 2^29, shift <= 44
    (spec §2.3). lo/hi: the output range, inside int16 (int8 by default)."""
    if M == 0:
        return 0
    if shift >= 16:
        h = acc >> 15
        r = (h * M + (((acc & 0x7FFF) * M) >> 15) + (1 << (shift - 16))) >> (shift - 15)
    elif acc >= 65536:
        return hi
    elif acc <= -65536:
        return lo
    else:
        r = (acc * M + (1 << (shift - 1))) >> shift
    if r < lo:
        return lo
    if r > hi:
        return hi
    return r


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


def ternary_matvec(packed, rows, n, x, out=None):
    """acc_r = sum_i t_ri * x_i from packed trits (spec §5.1). x: n int8/int16 values.
    Returns (or fills) array('i') of rows accumulators."""
    nb = (n + 4) // 5
    if len(packed) != rows * nb:
        raise ValueError("packed trits: expected %d bytes, got %d" % (rows * nb, len(packed)))
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
            p = 5 * b
            for k in range(5):
                d = D[p + k]
                if d == 2:
                    acc += x[i]
                elif d == 0:
                    acc -= x[i]
                i += 1
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
