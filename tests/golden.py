"""Golden vectors: inputs and expected integers of every kernel op, from the numpy reference.

The one generator of test cases for the implementations of docs/integer-spec.md other than
host/butterflyvit/intops.py itself: the board's kernels on real MicroPythons
(tests/test_device_kernels.py), the C kernels through ctypes (tests/test_native_host.py)
and the C kernels cross-compiled and run under QEMU (tests/test_native_cross.py).

    cases(op) -> [case, ...]     one op's cases: random and edge inputs, and "want"

A case is a dict: "name" (what it exercises, for failure messages), the op's inputs (ints,
or numpy arrays in the spec's integer types) and the reference's outputs ("want", and for
ops with more than one output "want_<what>"). A few cases carry "error" instead: the
message the reference raises. Each op has its own random stream (seeded from its name),
so adding a case to one op changes no other op's vectors. Every consumer parametrises over
OPS (the ops it implements), so a failure names the op.
"""

from __future__ import annotations

import math
import zlib
from functools import lru_cache

import numpy as np

from butterflyvit import intops as I

OPS = ("requant", "requant_rows", "relu", "expert_input", "mix", "ternary_matvec",
       "ternary_linear", "ternary_rows", "sincos", "butterfly", "expert", "matvec8", "linear",
       "layernorm", "softmax", "residual_add", "topk", "route", "attention", "mean_pool", "frame")

I8, I16 = (-128, 127), (-32768, 32767)


def _rng(op: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(op.encode()))


def _ints(rng, lo, hi, size, dtype=np.int64):
    return rng.integers(lo, hi, size=size, endpoint=True).astype(dtype)


def _bits_range(bits):
    return I8 if bits == 8 else I16


@lru_cache(maxsize=None)
def cases(op: str) -> tuple[dict, ...]:
    """The cases of one op (cached: consumers share them; do not modify)."""
    if op not in OPS:
        raise KeyError(f"golden: no op {op!r} (ops: {', '.join(OPS)})")
    out = tuple(globals()["_" + op](_rng(op)))
    for c in out:
        c["op"] = op
    return out


def all_cases() -> dict[str, tuple[dict, ...]]:
    return {op: cases(op) for op in OPS}


def jsonable(case: dict) -> dict:
    """The case with numpy arrays as (nested) lists and bytes as lists of ints: for JSON."""
    def conv(v):
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, (bytes, bytearray)):
            return list(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v
    return {k: conv(v) for k, v in case.items()}


# ---------------------------------------------------------------- spec §1-2

def _requant(rng):
    for bits in (8, 16):
        acc = np.concatenate([_ints(rng, -2**31, 2**31 - 1, 300), _ints(rng, -70000, 70000, 300),
                              [0, 1, -1, 65535, 65536, -65536, -65537, 2**31 - 1, -2**31]])
        M, shift = I.quantize_multipliers(10 ** rng.uniform(-9, 0.5, size=acc.size))
        M[:5], shift[:5] = 0, 1                                   # M = 0: the output is 0
        yield dict(name=f"int{bits} scales 1e-9..3", acc=acc, M=M.astype(np.int64),
                   shift=shift.astype(np.int64), bits=bits, want=I.requant(acc, M, shift, bits))
        # any multiplier and shift the spec allows (shift 1..62), saturating both ways
        M = _ints(rng, 0, 32767, acc.size)
        M[:3] = [0, 16384, 32767]
        shift = _ints(rng, 1, 62, acc.size)
        yield dict(name=f"int{bits} any M, shift 1..62", acc=acc, M=M, shift=shift, bits=bits,
                   want=I.requant(acc, M, shift, bits))


def _requant_rows(rng):
    # per row, with and without bias; |acc + bias| past 2^29 and shifts up to 62
    for bits in (8, 16):
        acc = np.concatenate([_ints(rng, -2**29, 2**29, 200), _ints(rng, -2**30, 2**30, 40),
                              _ints(rng, -70000, 70000, 100), [2**31 - 1, -2**31, 2**30 - 1, 2**29]])
        bias = np.concatenate([_ints(rng, -2**28, 2**28, 340), [0, 0, -1, 0]])
        acc = np.clip(acc, -2**31 - np.minimum(bias, 0), 2**31 - 1 - np.maximum(bias, 0))
        M, shift = I.quantize_multipliers(10 ** rng.uniform(-13, 0.5, size=acc.size))
        M, shift = M.astype(np.int64), shift.astype(np.int64)
        M[:4], shift[:4] = 0, 1
        M[4:8], shift[4:8] = 30000, [46, 47, 48, 62]
        yield dict(name=f"int{bits} with bias", acc=acc, bias=bias, M=M, shift=shift, bits=bits,
                   want=I.requant(acc + bias, M, shift, bits))
        yield dict(name=f"int{bits} no bias", acc=acc, bias=None, M=M, shift=shift, bits=bits,
                   want=I.requant(acc, M, shift, bits))


# ---------------------------------------------------------------- spec §10, §6.4, the mixture

def _relu(rng):
    for n in (1, 7, 256):
        v = _ints(rng, *I16, n, np.int16)
        v[0] = -32768
        yield dict(name=f"n={n}", v=v, want=I.relu(v))


def _expert_input(rng):
    for d, dp, P in [(64, 64, 5), (5, 8, 2), (1, 2, 7), (100, 128, 4)]:
        a = _ints(rng, *I8, d, np.int8)
        a[0] = -128
        want = np.zeros(dp, np.int16)
        want[:d] = a.astype(np.int64) << P
        yield dict(name=f"d={d} pad {dp} P={P}", a=a, P=P, dp=dp, want=want)


def _mix(rng):
    # gates from a softmax (they sum to at most 2^15: the mixture stays inside int32)
    for k, f, spread in [(2, 256, 500), (1, 7, 0), (3, 20, 5000), (2, 1, 10)]:
        h = _ints(rng, *I16, (k, f), np.int16)
        h[:, 0] = -32768
        g = I.softmax(_ints(rng, -spread, spread, k, np.int32), *I.softmax_multiplier(0.01))
        acc = (g.astype(np.int64)[:, None] * h).sum(0)
        yield dict(name=f"k={k} f={f}", h=h, g=g.astype(np.int32), want_acc=acc.astype(np.int32),
                   want=I.saturate(I.rshift_round(acc, 15), 16).astype(np.int16))


# ---------------------------------------------------------------- spec §4-5

def _trits(rng, rows, n):
    t = _ints(rng, -1, 1, (rows, n), np.int8)
    t[0] = 0                                      # an all-zero row (bytes 121)
    if rows > 2:
        t[1], t[2] = 1, -1
    return t


def _ternary_matvec(rng):
    # every n mod 5, int8 and int16 extremes, zero rows; the shipped shapes (64 -> 256, 256 -> 64)
    for n, rows in [(1, 3), (2, 5), (4, 1), (5, 7), (7, 11), (13, 8), (64, 17), (66, 8),
                    (69, 9), (256, 3), (64, 256), (1024, 2)]:
        t = _trits(rng, rows, n)
        packed = I.pack_trits(t)
        for bits in (8, 16):
            lo, hi = _bits_range(bits)
            x = _ints(rng, lo, hi, n, np.int8 if bits == 8 else np.int16)
            x[:3] = [lo, hi, lo][:n]
            yield dict(name=f"{rows}x{n} int{bits}", rows=rows, n=n, packed=packed, x=x, bits=bits,
                       trits=t.ravel(), want=I.ternary_matvec(packed, rows, n, x).astype(np.int32))


def _ternary_linear(rng):
    # the product, an optional bias, per-tensor or per-row requantisation to int8 / int16
    for n, rows, bits, per_row, with_bias in [(1, 9, 8, False, True), (7, 9, 16, True, False),
                                              (64, 9, 8, True, True), (66, 16, 16, True, True),
                                              (256, 9, 16, False, False)]:
        t = _trits(rng, rows, n)
        packed = I.pack_trits(t)
        x = _ints(rng, *I16, n, np.int16)
        x[:2] = [-32768, 32767][:n]
        if per_row:
            M = _ints(rng, 16384, 32767, rows, np.int16)
            shift = _ints(rng, 8, 29, rows, np.uint8)
            M[0], shift[0] = 0, 1
        else:
            M, shift = int(rng.integers(16384, 32768)), int(rng.integers(16, 28))
        bias = _ints(rng, -2**20, 2**20, rows, np.int32) if with_bias else None
        yield dict(name=f"{rows}x{n} -> int{bits}" + (" per row" if per_row else "")
                   + (" bias" if with_bias else ""), rows=rows, n=n, packed=packed, x=x, M=M,
                   shift=shift, bias=bias, bits=bits,
                   want=I.ternary_linear(packed, rows, n, x, M, shift, bias, bits))


def _ternary_rows(rng):
    # a matrix in spec §4 rows at byte p0 of a larger buffer (the model file's bytes)
    for n, rows, p0 in [(64, 256, 0), (256, 64, 0), (64, 9, 3), (1, 9, 4), (3, 11, 2), (7, 5, 1),
                        (10, 4, 0), (13, 6, 4), (2, 1, 0)]:
        t = _trits(rng, rows, n)
        x = _ints(rng, *I16, n, np.int16)
        x[:2] = [-32768, 32767][:n]
        before = _ints(rng, 0, 242, p0, np.uint8).tobytes()          # other sections' bytes
        packed = before + I.pack_trits(t) + bytes([121, 7])
        yield dict(name=f"{rows}x{n} at byte {p0}", rows=rows, n=n, p0=p0, packed=packed, x=x,
                   want=(t.astype(np.int64) @ x).astype(np.int32))


# ---------------------------------------------------------------- spec §6

def _sincos(rng):
    phases = np.concatenate([[0, 1, 63, 64, 65, 16383, 16384, 16385, 32767, 32768, 49152, 65535],
                             _ints(rng, 0, 65535, 500)]).astype(np.uint16)
    c, s = I.sincos_q14(phases)
    yield dict(name="quadrant edges and random", phases=phases, want_cos=c.astype(np.int16),
               want_sin=s.astype(np.int16))


def _butterfly(rng):
    # incl. saturation (amplitude 32767), n_l up to log2 n_pad, the shipped 256 x 4 stages
    for n_pad, n_l, amp in [(2, 1, 2**13), (8, 3, 2**12), (64, 4, 2**12), (256, 4, 32767),
                            (32, 5, 2**11), (16, 4, 32767), (1024, 2, 2**12), (8, 0, 32767)]:
        ph = _ints(rng, 0, 65535, (n_l, n_pad // 2)).astype(np.uint16)
        c, s = I.sincos_q14(ph)
        v = _ints(rng, -amp, amp, n_pad, np.int16)
        yield dict(name=f"n_pad={n_pad} stages={n_l} |v|<={amp}", v=v, phases=ph, n_stages=n_l,
                   cos=c.astype(np.int16), sin=s.astype(np.int16),
                   want=I.butterfly_q14(v, c, s).astype(np.int16))


def _expert(rng):
    # spec §15 step 4: butterfly in, ternary product, requant to int16, butterfly out, ReLU;
    # the shipped shape (64 -> 256, 4 stages) first; `big` multipliers saturate h
    for dim, ffn, n_l, big in [(64, 256, 4, False), (64, 256, 4, True), (5, 7, 2, False),
                               (2, 2, 1, True), (100, 30, 3, False), (130, 64, 5, True)]:
        pin, pout, P = I.padded_size(dim), I.padded_size(ffn), 5
        phase = lambda k: (rng.normal(0, 0.5, k) * 65536 / (2 * np.pi)).astype(np.int64) & 0xFFFF  # noqa: E731
        ph_in = phase(n_l * pin // 2).astype(np.uint16).reshape(n_l, -1)
        ph_out = phase(n_l * pout // 2).astype(np.uint16).reshape(n_l, -1)
        t = _trits(rng, ffn, dim)
        packed = I.pack_trits(t)
        x = _ints(rng, *I8, dim, np.int8)
        x[:2] = [-128, 127][:dim]
        M = _ints(rng, 16384, 32767, ffn, np.int16)
        shift = _ints(rng, 14 if big else 18, 21 if big else 25, ffn, np.uint8)
        ci, si = I.sincos_q14(ph_in)
        co, so = I.sincos_q14(ph_out)
        u = I.butterfly_q14(np.concatenate([x.astype(np.int64) << P, np.zeros(pin - dim, np.int64)]),
                            ci, si)
        h = I.requant(I.ternary_matvec(packed, ffn, dim, u[:dim]), M, shift, 16)
        h = I.butterfly_q14(np.concatenate([h, np.zeros(pout - ffn, np.int64)]), co, so)
        yield dict(name=f"{dim} -> {ffn}, {n_l} stages" + (" saturating" if big else ""),
                   x=x, P=P, n_stages=n_l, phases_in=ph_in, phases_out=ph_out, packed=packed,
                   M=M, shift=shift, want=I.relu(h[:ffn]).astype(np.int16))


# ---------------------------------------------------------------- spec §7

def _linear_inputs(rng, rows, n):
    x = _ints(rng, *I8, n, np.int8)
    w = _ints(rng, *I8, (rows, n), np.int8)
    x[0], w[0, 0] = -128, -128
    return x, w


def _matvec8(rng):
    for n, rows in [(1, 1), (16, 64), (64, 192), (37, 10), (63, 64)]:
        x, w = _linear_inputs(rng, rows, n)
        yield dict(name=f"{rows}x{n}", x=x, w=w, want=I.linear_acc(x, w).astype(np.int32))


def _linear(rng):
    for n, rows, bits, with_bias in [(64, 64, 8, True), (64, 192, 8, True), (63, 64, 16, False),
                                     (7, 3, 16, True), (1, 1, 8, False)]:
        x, w = _linear_inputs(rng, rows, n)
        bias = _ints(rng, -2**20, 2**20, rows, np.int32) if with_bias else None
        M = _ints(rng, 16384, 32767, rows, np.int16)
        shift = _ints(rng, 14, 22, rows, np.uint8)
        yield dict(name=f"{rows}x{n} -> int{bits}" + (" bias" if with_bias else ""), x=x, w=w,
                   bias=bias, M=M, shift=shift, bits=bits,
                   want=I.linear(x, w, bias, M, shift, bits))


# ---------------------------------------------------------------- spec §8-9

def _layernorm(rng):
    # int8 and int16 inputs, constant tokens (with and without eps), d 1..1024
    for d, bits, lo, hi, eps_zero in [(64, 8, -128, 127, False), (64, 16, -32768, 32767, False),
                                      (7, 8, -3, 3, False), (1, 8, -100, 100, False),
                                      (16, 8, 5, 5, True), (1024, 16, -32768, 32767, False),
                                      (64, 8, -20, 20, True), (100, 16, -30000, 30000, False)]:
        x = _ints(rng, lo, hi, (4, d), np.int8 if bits == 8 else np.int16)
        x[0] = lo                               # a constant token
        x[1] = 0
        x[1, 0] = hi                            # one spike
        p = I.layernorm_params(rng.normal(1, 0.3, d), rng.normal(0, 0.2, d),
                               0.0 if eps_zero else 1e-5, 0.01, 0.02)
        yield dict(name=f"d={d} int{bits} in [{lo},{hi}]" + (" eps=0" if eps_zero else ""),
                   x=x, bits=bits, G=p.G.astype(np.int32), B=p.B.astype(np.int32),
                   shift=int(p.shift), E=int(p.E), want=I.layernorm(x, p))


def _softmax(rng):
    # shifts <= 17 and > 17, M = 0, one element, equal logits, far logits
    for n, scale, spread in [(1, 0.1, 100), (4, 0.1, 0), (49, 1e-3, 5000), (49, 1e-5, 2**20),
                             (300, 3e-4, 30000), (2, 10.0, 10**6), (9, 0.0, 100), (64, 0.02, 2**29),
                             (49, 0.003, 5000), (5, 1e-6, 2**30 - 1)]:
        L = _ints(rng, -spread, spread, (3, n), np.int32)
        M, shift = I.softmax_multiplier(scale) if scale else (0, 1)
        yield dict(name=f"n={n} scale={scale} spread={spread}", L=L, M=M, shift=shift,
                   want=I.softmax(L, M, shift).astype(np.int32))


# ---------------------------------------------------------------- spec §10-13

def _residual_add(rng):
    for bits, n in [(16, 300), (8, 300), (16, 1)]:
        lo, hi = _bits_range(bits)
        a = _ints(rng, lo, hi, n, np.int16)
        b = _ints(rng, lo, hi, n, np.int16)
        a[0], b[0] = lo, lo
        Ma, Mb, shift = I.residual_params(*(10 ** rng.uniform(-3, -1, size=3)))
        yield dict(name=f"int{bits} n={n}", a=a, b=b, Ma=int(Ma), Mb=int(Mb), shift=int(shift),
                   bits=bits, want=I.residual_add(a, b, Ma, Mb, shift, bits))


def _topk(rng):
    L = np.array([[5, 7, 7, 1], [3, 3, 3, 3], [-4, -4, -2, -9], [0, 0, 0, 1]], np.int32)
    for k in (1, 2, 3, 4):                        # ties go to the lower index
        yield dict(name=f"ties k={k}", L=L, k=k, want=I.topk(L, k).astype(np.uint16))
    L = _ints(rng, -5, 5, (3, 64), np.int32)
    for k in (2, 8):
        yield dict(name=f"64 logits k={k}", L=L, k=k, want=I.topk(L, k).astype(np.uint16))


def _route(rng):
    # with and without smoothing, grids 1..7
    for grid, E, k, spread in [(1, 4, 2, 1000), (2, 8, 2, 5), (3, 5, 1, 3000), (7, 64, 2, 2**20),
                               (4, 8, 3, 2), (5, 16, 2, 2**24)]:
        L = _ints(rng, -spread, spread, (grid * grid, E), np.int32)
        gm = I.gate_multipliers(10 ** rng.uniform(-5, -2))
        for smooth in (False, True):
            idx, gates = I.route(L, k, gm, smooth, grid)
            yield dict(name=f"grid {grid} E={E} k={k}" + (" smoothed" if smooth else ""), L=L,
                       grid=grid, k=k, gate_mult={c: list(m) for c, m in gm.items()},
                       smooth=smooth, want_idx=idx.astype(np.uint16),
                       want_gates=gates.astype(np.int32))


def _attention(rng):
    for n, dim, heads in [(1, 8, 1), (5, 8, 2), (49, 64, 4), (16, 32, 4), (10, 12, 3)]:
        qkv = _ints(rng, *I8, (n, 3 * dim), np.int8)
        hd = dim // heads
        sM, ssh = I.softmax_multiplier(0.05 * 0.04 / math.sqrt(hd))
        oM, osh = I.quantize_multiplier(0.03 / 32768 / 0.02)
        want = I.attention(qkv[:, :dim], qkv[:, dim:2 * dim], qkv[:, 2 * dim:], heads,
                           (sM, ssh), (oM, osh))
        yield dict(name=f"{n} tokens dim {dim} {heads} heads", qkv=qkv, heads=heads,
                   score_M=sM, score_shift=ssh, out_M=oM, out_shift=osh, want=want)


def _mean_pool(rng):
    for n, dim, bits in [(1, 4, 16), (49, 64, 16), (3, 2, 16), (49, 64, 8)]:
        x = _ints(rng, *I16, (n, dim), np.int16)
        M, shift = I.quantize_multiplier(1.7 / n)
        yield dict(name=f"{n} tokens dim {dim} -> int{bits}", x=x, M=M, shift=shift, bits=bits,
                   want=I.mean_pool(x, M, shift, bits))


# ---------------------------------------------------------------- spec §14 (frames: the board)

def _frame(rng):
    # any size, both formats, 1 and 3 channels; the quantisation tables; the patches
    sizes = [(28, 28), (1, 1), (1, 9), (9, 1), (3, 2), (31, 17), (17, 31), (40, 30), (5, 64)]
    for i, (w, h) in enumerate(sizes):
        for fmt, bpp in (("GRAYSCALE", 1), ("RGB565", 2)):
            C = 1 if (i + bpp) % 2 else 3
            S, p = (8, 4) if i % 2 else (6, 2)
            buf = _ints(rng, 0, 255, w * h * bpp).astype(np.uint8).tobytes()
            A, B, sh = I.input_quant_params(rng.uniform(0.2, 0.6, C), rng.uniform(0.2, 0.4, C),
                                            rng.uniform(0.01, 0.05))
            yield dict(name=f"{w}x{h} {fmt} -> {C}x{S}x{S}", buf=buf, w=w, h=h, fmt=fmt, S=S, C=C,
                       p=p, A=A, B=B, sh=sh,
                       want_pixels=I.frame_to_pixels(buf, w, h, fmt, S, C).ravel(),
                       want_tables=I.input_tables(A, B, sh).ravel(),
                       want=I.preprocess_frame(buf, w, h, fmt, S, C, p, A, B, sh).ravel())
    for buf, w, h, fmt in [(bytes(5), 3, 2, "GRAYSCALE"), (bytes(6), 3, 2, "RGB565"),
                           (b"", 0, 5, "GRAYSCALE"), (bytes(4), 2, 2, "JPEG")]:
        try:
            I.frame_to_pixels(buf, w, h, fmt, 4, 1)
        except ValueError as e:
            yield dict(name=f"bad frame {w}x{h} {fmt} {len(buf)} bytes", buf=buf, w=w, h=h,
                       fmt=fmt, S=4, C=1, p=2, A=np.array([1]), B=np.array([0]),
                       sh=np.array([1]), error=str(e))
        else:
            raise AssertionError(f"intops accepted the bad frame {w}x{h} {fmt}")
