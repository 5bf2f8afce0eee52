"""Per-token integer ops in pure MicroPython (docs/integer-spec.md §7-§13).

Requantisation of the layers' accumulators (§2, §7), LayerNorm (§8), softmax (§9), ReLU
and the residual add (§10), top-k and the smoothed-routing sums (§11), one query's
attention (§12) and mean pooling (§13): the steps bvit.model calls, exactly the integers of
host/butterflyvit/intops.py. The inner products that dominate the time are in
bvit.kernels (and its viper / native twins); attention_row() takes them as arguments. Conventions as in bvit.kernels: flat buffers, explicit offsets,
outputs into buffers the caller owns.
"""

from .tables import EXP2_Q14


# ---------------------------------------------------------------- spec §1-2

def requant(acc, M, shift, lo=-128, hi=127):
    """sat((acc * M + 2^(shift-1)) >> shift), no intermediate beyond 2^30 for |acc| < 2^29, shift <= 44
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


def requant_rows(acc, a0, out, o0, n, Ms, shifts, r0=0, bias=None, lo=-128, hi=127):
    """out[o0+i] = requant(acc[a0+i] + bias[r0+i], Ms[r0+i], shifts[r0+i]): per-row
    multipliers (and optional int32 bias) of rows r0 .. r0+n-1 of a layer. (requant's
    small-int form, written out: a call per element would cost more than the arithmetic.)"""
    for i in range(n):
        r = r0 + i
        v = acc[a0 + i]
        if bias is not None:
            v += bias[r]
        M = Ms[r]
        s = shifts[r]
        if M == 0:
            y = 0
        elif s >= 16:
            y = ((v >> 15) * M + (((v & 0x7FFF) * M) >> 15) + (1 << (s - 16))) >> (s - 15)
        elif v >= 65536:
            y = hi
        elif v <= -65536:
            y = lo
        else:
            y = (v * M + (1 << (s - 1))) >> s
        out[o0 + i] = lo if y < lo else hi if y > hi else y


# ---------------------------------------------------------------- spec §8

def bitlen(v):
    """Number of binary digits of v >= 0 (bitlen(0) = 0)."""
    e = 0
    while v >= 1 << 24:
        v >>= 24
        e += 24
    while v:
        v >>= 1
        e += 1
    return e


def isqrt(u):
    """floor(sqrt(u)) for 0 <= u < 2^32, digit by digit (spec §8.2 step 5)."""
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


def layernorm(x, x0, d, G, B, sh, E, out, o0, lo=-128, hi=127):
    """Integer LayerNorm of one token x[x0:x0+d] (int8 or int16) into out[o0:o0+d] (int8
    by default), spec §8.2. G, B: per-feature integer gamma/beta; sh: shift; E: eps term."""
    s1 = 0
    s2 = 0
    for i in range(x0, x0 + d):
        v = x[i]
        s1 += v
        s2 += v * v
    V = d * s2 - s1 * s1 + E
    rnd = 1 << (sh - 1)
    if V == 0:
        for i in range(d):
            y = (B[i] + rnd) >> sh
            out[o0 + i] = lo if y < lo else hi if y > hi else y
        return
    a = (30 - bitlen(V)) >> 1
    U = V << (2 * a) if a >= 0 else V >> (-2 * a)
    q = isqrt(U)
    R = ((1 << 29) + (q >> 1)) // q
    s = 19 - a                              # 5 .. 30 (int8 input: 5 .. 19)
    if s >= 16:                             # c*R split as in §2.3: no product beyond 2^30
        s15 = s - 15
        rn = 1 << (s - 16)
        for i in range(d):
            c = d * x[x0 + i] - s1
            n = ((c >> 15) * R + (((c & 0x7FFF) * R) >> 15) + rn) >> s15
            y = (n * G[i] + B[i] + rnd) >> sh
            out[o0 + i] = lo if y < lo else hi if y > hi else y
    else:
        rn = 1 << (s - 1)
        for i in range(d):
            n = ((d * x[x0 + i] - s1) * R + rn) >> s
            y = (n * G[i] + B[i] + rnd) >> sh
            out[o0 + i] = lo if y < lo else hi if y > hi else y


# ---------------------------------------------------------------- spec §9

def softmax_cutoff(M, shift):
    """The smallest d = max - L_j with e_j = 0 (spec §9.2); None when M = 0."""
    if M == 0:
        return None
    need = 3840 * (1 << shift) - (1 << (shift - 1))
    return -(-need // M)


def softmax(L, l0, n, M, shift, out, o0=0, cutoff=None):
    """Q15 probabilities (0..32768) of int32 logits L[l0:l0+n] into out[o0:o0+n] (spec §9).
    out may be L itself (same offset). cutoff: softmax_cutoff(M, shift), when the caller
    has it (saves a big-int computation per call on 32-bit ports)."""
    E2 = EXP2_Q14
    m = L[l0]
    for j in range(l0 + 1, l0 + n):
        if L[j] > m:
            m = L[j]
    if M == 0:
        for j in range(n):
            out[o0 + j] = 16384
        S = 16384 * n
    else:
        D = softmax_cutoff(M, shift) if cutoff is None else cutoff
        S = 0
        if shift <= 17:                     # d*M < 3840.5 * 2^shift < 2^30 below the cut-off
            rnd = 1 << (shift - 1)
            for j in range(n):
                dj = m - L[l0 + j]
                if dj >= D:
                    e = 0
                else:
                    t = (dj * M + rnd) >> shift
                    e = E2[t & 255] >> (t >> 8)
                out[o0 + j] = e
                S += e
        else:                               # §2.3 split of d*M
            rnd = 1 << (shift - 16)
            s15 = shift - 15
            for j in range(n):
                dj = m - L[l0 + j]
                if dj >= D:
                    e = 0
                else:
                    t = ((dj >> 15) * M + (((dj & 0x7FFF) * M) >> 15) + rnd) >> s15
                    e = E2[t & 255] >> (t >> 8)
                out[o0 + j] = e
                S += e
    b = bitlen(S)
    Sp = S >> (b - 15)
    R = ((1 << 29) + (Sp >> 1)) // Sp
    rnd = 1 << (b - 2)
    s = b - 1
    for j in range(o0, o0 + n):
        out[j] = (out[j] * R + rnd) >> s


# ---------------------------------------------------------------- spec §10

def relu(v, v0, n):
    """max(v, 0) in place on v[v0:v0+n]."""
    for i in range(v0, v0 + n):
        if v[i] < 0:
            v[i] = 0


def expert_input(a, a0, d, P, u, dp):
    """u = a[a0:a0+d] * 2^P (int8 -> int16), zero-padded to dp (spec §6.4)."""
    for q in range(d):
        u[q] = a[a0 + q] << P
    for q in range(d, dp):
        u[q] = 0


def mix_add(mix, h, gate, f, first):
    """The expert mixture (docs/integer-model.md step 14): mix[q] = (or +=) gate * h[q]."""
    if first:
        for q in range(f):
            mix[q] = gate * h[q]
    else:
        for q in range(f):
            mix[q] += gate * h[q]


def mix_round(mix, m, f):
    """m[q] = sat16(rshift_round(mix[q], 15)): the mixture back to int16."""
    for q in range(f):
        v = (mix[q] + 16384) >> 15
        m[q] = 32767 if v > 32767 else -32768 if v < -32768 else v


def residual_add(a, a0, b, b0, n, Ma, Mb, shift, out, o0, lo=-32768, hi=32767):
    """out[o0+i] = sat(rshift_round(a[a0+i]*Ma + b[b0+i]*Mb, shift)) (spec §10.2); out may
    be a (same offset). Default range int16, the residual stream's."""
    rnd = 1 << (shift - 1)
    for i in range(n):
        y = (a[a0 + i] * Ma + b[b0 + i] * Mb + rnd) >> shift
        out[o0 + i] = lo if y < lo else hi if y > hi else y


# ---------------------------------------------------------------- spec §11

def topk(L, l0, n, k, idx, i0=0):
    """Indices of the k largest of L[l0:l0+n] into idx[i0:i0+k], largest first, ties to
    the lower index (spec §11.1)."""
    for p in range(k):
        best = -1
        bv = 0
        for j in range(n):
            v = L[l0 + j]
            if best < 0 or v > bv:
                taken = False
                for q in range(i0, i0 + p):
                    if idx[q] == j:
                        taken = True
                        break
                if not taken:
                    best = j
                    bv = v
        idx[i0 + p] = best


def neighbour_sum_rows(L, mid, up, down, c, grid, E, out):
    """Smoothed-routing sums of the token in column c of a grid row (spec §11.2):
    out[e] = its logit plus those of its existing 4-neighbours. L holds grid rows of
    grid x E logits: this row starts at L[mid], the rows above and below at L[up] and
    L[down] (-1: no such row, the token is on the top or bottom edge). Returns the count
    of summed patches (1, 3, 4 or 5)."""
    base = mid + c * E
    for e in range(E):
        out[e] = L[base + e]
    cnt = 1
    if up >= 0:
        nb = up + c * E
        for e in range(E):
            out[e] += L[nb + e]
        cnt += 1
    if down >= 0:
        nb = down + c * E
        for e in range(E):
            out[e] += L[nb + e]
        cnt += 1
    if c > 0:
        nb = base - E
        for e in range(E):
            out[e] += L[nb + e]
        cnt += 1
    if c < grid - 1:
        nb = base + E
        for e in range(E):
            out[e] += L[nb + e]
        cnt += 1
    return cnt


# ---------------------------------------------------------------- spec §12

def attention_row(buf, q0, k0, v0, stride, n, dim, heads, score_M, score_sh, out_M, out_sh,
                  out, o0, srow, acc, scores, pv, cutoff=None):
    """Attention (spec §12) of one query over n tokens, every head, into out[o0:o0+dim]
    (int8). The query's dim values are at buf[q0:], token j's keys at buf[k0 + j*stride:]
    and values at buf[v0 + j*stride:] (int8). srow: n ints of scratch (scores, then
    probabilities); acc: dim/heads ints; scores, pv: the inner products of a kernel backend
    (bvit.ops); cutoff: softmax_cutoff(score_M, score_sh), when the caller has it."""
    hd = dim // heads
    if cutoff is None:
        cutoff = softmax_cutoff(score_M, score_sh)
    for h in range(heads):
        c0 = h * hd
        scores(buf, q0 + c0, k0 + c0, stride, n, hd, srow)
        softmax(srow, 0, n, score_M, score_sh, srow, 0, cutoff)
        pv(srow, n, buf, v0 + c0, stride, hd, acc)
        o = o0 + c0
        for c in range(hd):
            out[o + c] = requant(acc[c], out_M, out_sh)


# ---------------------------------------------------------------- spec §13

def mean_pool(x, n, dim, M, shift, out, o0=0, lo=-32768, hi=32767):
    """out[o0+i] = requant(sum_t x[t*dim + i], M, shift) (spec §13), int16 by default."""
    for i in range(dim):
        s = 0
        for j in range(i, n * dim, dim):
            s += x[j]
        out[o0 + i] = requant(s, M, shift, lo, hi)


