"""The board's integer kernels (device/bvit/kernels.py, nn.py, frames.py, and the viper twins
in kviper.py) against the numpy reference (butterflyvit.intops), on real MicroPythons.

One MicroPython process runs every case (random and edge inputs of every op of
docs/integer-spec.md) with every kernel backend that loads there, and prints the integers;
the test compares them with intops, bit for bit:
- the unix port (MicroPython 1.29, viper works): backends "viper" and "python";
- the WebAssembly port from npm (1.27, no viper): "python" only, which is also how the
  code runs on CircuitPython (tests/test_device_wasm.py runs the model there).
"""

import json
import math

import numpy as np
import pytest

from butterflyvit import intops as I
from test_device_wasm import wasm_micropython  # noqa: F401  (fixture)

RUNNER = r"""
import sys, json
from array import array
from bvit import kernels as K, nn as N, frames as F, ops

BACKENDS = [ops.load(n) for n in ops.available()]
print(json.dumps({"backends": [b.NAME for b in BACKENDS]}))
try:
    from bvit import kviper
    assert list(kviper.SIN_Q14) == list(K.SIN_Q14)
except (ImportError, SyntaxError):   # no viper on this port
    pass

def arr(t, v):
    return array(t, v)

def each(fn):
    # run fn(backend) on every backend; {name: result or "ERR: message"}
    out = {}
    for b in BACKENDS:
        try:
            out[b.NAME] = fn(b)
        except Exception as e:
            out[b.NAME] = "ERR: %s" % e
    return out

def do_requant(a):
    lo, hi = (-128, 127) if a["bits"] == 8 else (-32768, 32767)
    return [N.requant(v, M, s, lo, hi) for v, M, s in zip(a["acc"], a["M"], a["shift"])]

def do_requant_rows(a):
    n = len(a["acc"])
    lo, hi, tc = (-128, 127, "b") if a["bits"] == 8 else (-32768, 32767, "h")
    def run(b):
        res = []
        for bias in (arr("i", a["bias"]), None):
            out = arr(tc, [0] * (n + 3))
            ops.get(b, "requant_rows")(arr("i", [0] + a["acc"]), 1, out, 3, n, arr("h", a["M"]),
                                       arr("b", a["shift"]), 0, bias, lo, hi)
            res.append(list(out)[3:])
        return res
    return each(run)

def do_elementwise(a):
    f, d, P, dp = len(a["h"]), len(a["a"]), a["P"], a["dp"]
    def run(b):
        h = arr("h", a["h"])
        ops.get(b, "relu")(h, 0, f)
        u = arr("h", [7] * dp)
        ops.get(b, "expert_input")(arr("b", [0] + a["a"]), 1, d, P, u, dp)
        mix = arr("i", [0] * f)
        ops.get(b, "mix_add")(mix, arr("h", a["h"]), a["g"][0], f, True)
        ops.get(b, "mix_add")(mix, arr("h", a["h2"]), a["g"][1], f, False)
        m = arr("h", [0] * f)
        ops.get(b, "mix_round")(mix, m, f)
        return [list(h), list(u), list(mix), list(m)]
    return each(run)

def do_ternary(a):
    rows, n = a["rows"], a["n"]
    packed = bytes(a["packed"])
    x = arr("h", a["x"])
    res = {}
    try:
        res["python"] = list(K.ternary_matvec(packed, rows, n, x, arr("i", [0] * rows)))
    except Exception as e:
        res["python"] = "ERR: %s" % e
    t = arr("i", [0] * K.lut_size(n))
    K.build_luts(x, n, t)
    try:
        res["lut"] = list(K.ternary_matvec_lut(packed, rows, n, t, arr("i", [0] * rows)))
    except Exception as e:
        res["lut"] = "ERR: %s" % e
    try:
        res["unpack"] = list(K.unpack_trits(packed, rows, n))
    except Exception as e:
        res["unpack"] = "ERR: %s" % e
    return res

def do_stream(a):
    rows, n, t0 = a["rows"], a["n"], a["t0"]
    packed = bytes(a["packed"])
    x = arr("h", a["x"])
    res = each(lambda b: list(b.ternary_stream(packed, t0, rows, n, x, arr("i", [0] * rows))))
    signed = arr("b", [v - 256 if v > 127 else v for v in a["packed"]])   # the weight buffer's type
    for name, r in each(lambda b: list(b.ternary_stream(signed, t0, rows, n, x,
                                                         arr("i", [0] * rows)))).items():
        res[name + "-signed"] = r
    return res

def do_sincos(a):
    ph = a["phases"]
    raw = bytearray(2 * len(ph))
    for i, p in enumerate(ph):
        raw[2 * i] = p & 255
        raw[2 * i + 1] = p >> 8
    c = arr("h", [0] * len(ph))
    s = arr("h", [0] * len(ph))
    K.sincos_raw(raw, 0, len(ph), c, s)
    res = {"python": [list(c), list(s)]}
    res["scalar"] = [[K.sincos_q14(p)[0] for p in ph], [K.sincos_q14(p)[1] for p in ph]]
    return res

def do_butterfly(a):
    v = arr("h", a["v"])
    K.butterfly(v, arr("h", a["cos"]), arr("h", a["sin"]), a["n_l"], len(v))
    res = {"python-arrays": list(v)}
    raw = bytearray(3) + bytearray(2 * len(a["phases"]))   # phases from byte 3 on
    for i, p in enumerate(a["phases"]):
        raw[3 + 2 * i] = p & 255
        raw[4 + 2 * i] = p >> 8
    def run_ph(b):
        v = arr("h", a["v"])
        b.butterfly_ph(v, raw, 3, a["n_l"], len(v))
        return list(v)
    for name, r in each(run_ph).items():
        res[name + "-ph"] = r
    return res

def do_matvec8(a):
    rows, n = a["rows"], a["n"]
    x = arr("b", [0] * a["x0"] + a["x"])
    w = arr("b", a["w"])
    res = each(lambda b: list(b.matvec8(x, a["x0"], n, w, rows, arr("i", [0] * rows))))
    wb = bytes([v & 255 for v in a["w"]])   # int8 bit patterns in bytes (a frozen model's view)
    for b in BACKENDS:
        if b.NAME == "viper":          # viper reads raw memory: int8 weights in place in bytes
            res[b.NAME + "-bytes"] = list(b.matvec8(x, a["x0"], n, wb, rows, arr("i", [0] * rows)))
    return res

def do_layernorm(a):
    d = a["d"]
    x = arr("h", a["x"])
    n = len(a["x"]) // d
    out = arr("b", [0] * (n * d))
    G, B = arr("i", a["G"]), arr("i", a["B"])
    for t in range(n):
        N.layernorm(x, t * d, d, G, B, a["sh"], a["E"], out, t * d)
    return list(out)

def do_softmax(a):
    n = a["n"]
    L = arr("i", a["L"])
    rows = len(a["L"]) // n
    out = arr("i", [0] * len(a["L"]))
    for r in range(rows):
        N.softmax(L, r * n, n, a["M"], a["shift"], out, r * n)
    inplace = arr("i", a["L"])
    for r in range(rows):
        N.softmax(inplace, r * n, n, a["M"], a["shift"], inplace, r * n,
                  N.softmax_cutoff(a["M"], a["shift"]))
    return [list(out), list(inplace)]

def do_residual(a):
    n = len(a["a"])
    lo, hi = (-128, 127) if a["bits"] == 8 else (-32768, 32767)
    x = arr("h", a["a"])
    N.residual_add(x, 0, arr("h", a["b"]), 0, n, a["Ma"], a["Mb"], a["shift"], x, 0, lo, hi)
    r = arr("h", a["a"])
    N.relu(r, 0, n)
    return [list(x), list(r)]

def do_topk(a):
    n, k = a["n"], a["k"]
    rows = len(a["L"]) // n
    idx = arr("H", [0] * (rows * k))
    for r in range(rows):
        N.topk(a["L"], r * n, n, k, idx, r * k)
    return list(idx)

def do_route(a):
    n, E, k = a["n"], a["E"], a["k"]
    gm = [None] * 6
    for c, m in a["gm"].items():
        gm[int(c)] = tuple(m)
    idx = arr("H", [0] * (n * k))
    gates = arr("i", [0] * (n * k))
    N.route(arr("i", a["L"]), n, E, k, gm, idx, gates, a["smooth"], a["grid"])
    return [list(idx), list(gates)]

def do_attention(a):
    n, dim, heads = a["n"], a["dim"], a["heads"]
    qkv = arr("b", a["qkv"])
    def run(b):
        out = arr("b", [0] * (n * dim))
        N.attention(qkv, n, dim, heads, a["sM"], a["ssh"], a["oM"], a["osh"], out,
                    arr("i", [0] * n), arr("i", [0] * (dim // heads)), b.attn_scores, b.attn_pv)
        return list(out)
    return each(run)

def do_pool(a):
    dim = a["dim"]
    n = len(a["x"]) // dim
    out = arr("h", [0] * dim)
    N.mean_pool(arr("h", a["x"]), n, dim, a["M"], a["shift"], out)
    return list(out)

def do_frame(a):
    try:
        pix = F.frame_to_pixels(bytes(a["buf"]), a["w"], a["h"], a["fmt"], a["S"], a["C"])
    except ValueError as e:
        return "ERR: %s" % e
    t = F.input_tables(a["A"], a["B"], a["sh"])
    p = a["p"]
    out = arr("b", [0] * (a["C"] * a["S"] * a["S"]))
    F.quantize_patches(pix, a["C"], a["S"], p, t, out)
    return [list(pix), list(t), list(out)]

for line in open(sys.argv[1]):
    case = json.loads(line)
    print(json.dumps(globals()["do_" + case["op"]](case["a"])))
"""

# Hot loops must not allocate: heap_lock() raises MemoryError on any allocation.
NOALLOC = r"""
import micropython
from array import array
from bvit import kernels as K, nn as N, ops
n, rows, dim, heads, T = 64, 256, 64, 4, 49
x = array("h", range(-n // 2, n // 2))
xb = array("b", range(-n // 2, n // 2))
packed = bytes([(i * 7) % 243 for i in range(rows * 13)])
w = array("b", [(i * 5) % 255 - 127 for i in range(rows * n)])
acc = array("i", bytes(4 * rows))
tables = array("i", bytes(4 * K.lut_size(n)))
cos = array("h", [16384, 0, -11585, 11585] * 32)
sin = array("h", [0, 16384, 11585, 11585] * 32)
raw = bytes(range(256))
qkv = array("b", [(i * 11) % 256 - 128 for i in range(T * 3 * dim)])
att = array("b", bytes(T * dim))
srow = array("i", bytes(4 * T))
hacc = array("i", bytes(4 * (dim // heads)))
out8 = array("b", bytes(n))
G = array("i", [300] * n)
B = array("i", [-5000] * n)
L = array("i", [(i * 37) % 1000 for i in range(T * 8)])
idx = array("H", bytes(2 * T * 2))
gates = array("i", bytes(4 * T * 2))
gm = [None, (20000, 20), None, (20000, 21), (20000, 22), (20000, 22)]
sel = array("i", bytes(8))
srow8 = array("i", bytes(32))
cut = N.softmax_cutoff(20000, 20)
Ms = array("h", [20000] * rows)
shs = array("b", [20] * rows)
bias = array("i", [7] * rows)
for name in ops.available():
    b = ops.load(name)
    rq, relu, xin, mixadd, mixround = [ops.get(b, f) for f in ops.OPTIONAL]
    micropython.heap_lock()
    try:
        K.ternary_matvec(packed, rows, n, x, acc)
        b.ternary_stream(packed, 3, rows, n, x, acc)
        b.matvec8(xb, 0, n, w, rows, acc)
        K.butterfly(x, cos, sin, 4, n)
        b.butterfly_ph(x, raw, 0, 2, n)
        K.sincos_raw(raw, 0, 128, cos, sin)
        N.attention(qkv, T, dim, heads, 20000, 20, 20000, 30, att, srow, hacc,
                    b.attn_scores, b.attn_pv)
        N.attention_row(qkv, 0, dim, 2 * dim, 3 * dim, T, dim, heads, 20000, 20, 20000, 30, att,
                        0, srow, hacc, b.attn_scores, b.attn_pv, 5000)
        K.build_luts(x, n, tables)
        K.ternary_matvec_lut(packed, rows, n, tables, acc)
        N.requant_rows(acc, 0, x, 0, n, Ms, shs, 0, bias, -32768, 32767)
        rq(acc, 0, x, 0, n, Ms, shs, 0, bias, -32768, 32767)
        rq(acc, 0, xb, 0, n, Ms, shs, 0, None)
        relu(x, 0, n)
        xin(xb, 0, n, 5, x, n)
        mixadd(acc, x, 20000, n, False)
        mixround(acc, x, n)
        N.layernorm(x, 0, n, G, B, 12, 1000, out8, 0)
        N.softmax(L, 0, 8, 20000, 20, L, 0, cut)
        N.route(L, T, 8, 2, gm, idx, gates, True, 7, srow8, sel)
        N.residual_add(x, 0, x, 0, n, 20000, 10000, 15, x, 0)
    finally:
        micropython.heap_unlock()
    print("ok", name)
"""


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(20260306)


def _gen_cases(rng):
    """(cases, check functions): each case one op with its inputs; check(result) asserts."""
    cases, checks = [], []

    def add(op, a, check):
        cases.append({"op": op, "a": a})
        checks.append(check)

    def ints(lo, hi, size):
        return rng.integers(lo, hi, size=size, endpoint=True)

    # §2 requant, scalar (small-int form) and per-row with bias, int8 and int16
    for bits in (8, 16):
        acc = np.concatenate([ints(-2**31, 2**31 - 1, 300), ints(-70000, 70000, 300),
                              [0, 1, -1, 65535, 65536, -65536, -65537, 2**31 - 1, -2**31]])
        scales = 10 ** rng.uniform(-9, 0.5, size=acc.size)
        Ms, shs = I.quantize_multipliers(scales)
        Ms[:5] = 0
        shs[:5] = 1
        ref = [int(I.requant(v, m, s, bits)) for v, m, s in zip(acc, Ms, shs)]
        add("requant", {"acc": acc.tolist(), "M": Ms.tolist(), "shift": shs.tolist(), "bits": bits},
            lambda r, ref=ref: r == ref)
    for bits in (8, 16):     # per row, with and without bias; |acc| past 2^29 and shifts up to 62
        acc = np.concatenate([ints(-2**29, 2**29, 200), ints(-2**30, 2**30, 40),
                              ints(-70000, 70000, 100), [2**31 - 1, -2**31, 2**30 - 1, 2**29]])
        bias = np.concatenate([ints(-2**28, 2**28, 340), [0, 0, -1, 0]])
        acc = np.clip(acc, -2**31 - np.minimum(bias, 0), 2**31 - 1 - np.maximum(bias, 0))
        Ms, shs = I.quantize_multipliers(10 ** rng.uniform(-13, 0.5, size=acc.size))
        Ms[:4], shs[:4] = 0, 1
        Ms[4:8], shs[4:8] = 30000, [46, 47, 48, 62]
        ref = [I.requant(acc.astype(np.int64) + bias, Ms, shs, bits).tolist(),
               I.requant(acc, Ms, shs, bits).tolist()]
        add("requant_rows", {"acc": acc.tolist(), "bias": bias.tolist(), "M": Ms.tolist(),
                             "shift": shs.tolist(), "bits": bits},
            lambda r, ref=ref: all(v == ref for v in r.values()))
    # the expert's per-element steps (docs/integer-model.md 10, 13, 14)
    for f, d, dp, P in [(256, 64, 64, 5), (7, 5, 8, 2), (1, 1, 2, 7)]:
        h = ints(-32768, 32767, f)
        h2 = ints(-32768, 32767, f)
        a = ints(-128, 127, d)
        g = [int(v) for v in ints(0, 32768, 2)]
        h[:1] = -32768
        mix = g[0] * h.astype(np.int64) + g[1] * h2
        ref = [I.relu(h).tolist(), (a * 2 ** P).tolist() + [0] * (dp - d), mix.tolist(),
               I.saturate(I.rshift_round(mix, 15), 16).tolist()]
        add("elementwise", {"h": h.tolist(), "h2": h2.tolist(), "a": a.tolist(), "g": g, "P": P,
                            "dp": dp}, lambda r, ref=ref: all(v == ref for v in r.values()))

    # §4-5 ternary matvec: every n mod 5, edges of int16, all-zero rows; bad bytes, bad padding
    for n, rows in [(1, 3), (2, 5), (4, 1), (5, 7), (7, 11), (13, 4), (64, 17), (69, 9), (256, 3)]:
        t = ints(-1, 1, (rows, n))
        t[0] = 0
        x = ints(-32768, 32767, n)
        x[: min(3, n)] = [-32768, 32767, -32768][: min(3, n)]
        packed = I.pack_trits(t)
        ref = I.ternary_matvec(packed, rows, n, x).tolist()
        unpacked = I.unpack_trits(packed, rows, n).ravel().tolist()

        def check(r, ref=ref, unpacked=unpacked):
            return all(r[k] == ref for k in r if k != "unpack") and r["unpack"] == unpacked
        add("ternary", {"rows": rows, "n": n, "packed": list(packed), "x": x.tolist()}, check)
    packed = bytearray(I.pack_trits(np.zeros((2, 10), np.int8)))
    packed[3] = 250
    add("ternary", {"rows": 2, "n": 10, "packed": list(packed), "x": [1] * 10},
        lambda r: all(isinstance(v, str) and "byte value 250 is not valid" in v for v in r.values()))

    # §5.1 on trit streams (docs/integer-model.md): rows start anywhere in a byte
    for n, rows, t0 in [(64, 256, 0), (256, 64, 0), (64, 7, 3), (1, 9, 4), (3, 11, 2), (7, 5, 1),
                        (10, 4, 0), (13, 6, 4), (2, 1, 0)]:
        t = ints(-1, 1, (rows, n))
        x = ints(-32768, 32767, n)
        pre = ints(-1, 1, t0)
        packed = I.pack_trits(np.concatenate([pre, t.ravel()])[None, :])
        ref = I.ternary_matvec(I.pack_trits(t), rows, n, x).tolist()
        add("stream", {"rows": rows, "n": n, "t0": t0, "packed": list(packed), "x": x.tolist()},
            lambda r, ref=ref: all(v == ref for v in r.values()))
    packed = bytearray(I.pack_trits(np.zeros((1, 30), np.int8)))
    packed[4] = 243
    add("stream", {"rows": 3, "n": 10, "t0": 0, "packed": list(packed), "x": [1] * 10},
        lambda r: all(isinstance(v, str) and "byte value 243 is not valid" in v for v in r.values()))

    # §6.2 sin/cos of phases, §6.3 butterfly (incl. saturation, n_l up to log2 n_pad)
    phases = np.concatenate([[0, 1, 63, 64, 65, 16383, 16384, 16385, 32767, 32768, 49152, 65535],
                             ints(0, 65535, 500)])
    c, s = I.sincos_q14(phases)
    ref = [c.tolist(), s.tolist()]
    add("sincos", {"phases": phases.tolist()}, lambda r, ref=ref: all(v == ref for v in r.values()))
    for n_pad, n_l, amp in [(2, 1, 2**13), (8, 3, 2**12), (64, 4, 2**12), (256, 4, 2**12),
                            (32, 5, 2**11), (16, 4, 32767)]:
        ph = ints(0, 65535, (n_l, n_pad // 2))
        cc, ss = I.sincos_q14(ph)
        v = ints(-amp, amp, n_pad)
        ref = I.butterfly_q14(v, cc, ss).tolist()
        add("butterfly", {"v": v.tolist(), "cos": cc.ravel().tolist(), "sin": ss.ravel().tolist(),
                          "phases": ph.ravel().tolist(), "n_l": n_l},
            lambda r, ref=ref: len(r) >= 2 and all(v == ref for v in r.values()))

    # §7 int8 products
    for n, rows, x0 in [(1, 1, 0), (16, 64, 3), (64, 192, 0), (37, 10, 5)]:
        x = ints(-128, 127, n)
        w = ints(-128, 127, (rows, n))
        x[0], w[0, 0] = -128, -128
        ref = I.linear_acc(x, w).tolist()
        add("matvec8", {"x": x.tolist(), "x0": x0, "w": w.ravel().tolist(), "rows": rows, "n": n},
            lambda r, ref=ref: all(v == ref for v in r.values()))

    # §8 LayerNorm: int8 and int16 inputs, constant tokens (with and without eps), d 1..1024
    for d, lo, hi, eps_zero in [(64, -128, 127, False), (64, -32768, 32767, False),
                                (7, -3, 3, False), (1, -100, 100, False), (16, 5, 5, True),
                                (1024, -32768, 32767, False), (64, -20, 20, True)]:
        x = ints(lo, hi, (6, d))
        x[0] = lo                       # a constant token
        gamma = rng.normal(1, 0.3, d)
        beta = rng.normal(0, 0.2, d)
        p = I.layernorm_params(gamma, beta, 0.0 if eps_zero else 1e-5, 0.01, 0.02)
        ref = I.layernorm(x, p).ravel().tolist()
        add("layernorm", {"x": x.ravel().tolist(), "d": d, "G": p.G.tolist(), "B": p.B.tolist(),
                          "sh": int(p.shift), "E": int(p.E)}, lambda r, ref=ref: r == ref)

    # §9 softmax: shifts <= 17 and > 17, M = 0, one element, equal logits, far logits
    for n, scale, spread in [(1, 0.1, 100), (4, 0.1, 0), (49, 1e-3, 5000), (49, 1e-5, 2**20),
                             (300, 3e-4, 30000), (2, 10.0, 10**6), (9, 0.0, 100), (64, 0.02, 2**29)]:
        L = ints(-spread, spread, (3, n))
        M, sh = I.softmax_multiplier(scale) if scale else (0, 1)
        ref = I.softmax(L, M, sh).astype(np.int64).ravel().tolist()
        add("softmax", {"L": L.ravel().tolist(), "n": n, "M": M, "shift": sh},
            lambda r, ref=ref: r[0] == ref and r[1] == ref)

    # §10 residual add (int8 and int16 ranges) and ReLU
    for bits, lo, hi in [(16, -32768, 32767), (8, -128, 127)]:
        a = ints(lo, hi, 300)
        b = ints(lo, hi, 300)
        Ma, Mb, sh = I.residual_params(*(10 ** rng.uniform(-3, -1, size=3)))
        ref = [I.residual_add(a, b, Ma, Mb, sh, bits).tolist(), I.relu(a).tolist()]
        add("residual", {"a": a.tolist(), "b": b.tolist(), "Ma": int(Ma), "Mb": int(Mb),
                         "shift": int(sh), "bits": bits}, lambda r, ref=ref: r == ref)

    # §11 top-k ties, routing with and without smoothing (grids 1..7)
    L = np.array([[5, 7, 7, 1], [3, 3, 3, 3], [-4, -4, -2, -9], [0, 0, 0, 1]])
    for k in (1, 2, 3, 4):
        ref = I.topk(L, k).ravel().tolist()
        add("topk", {"L": L.ravel().tolist(), "n": 4, "k": k}, lambda r, ref=ref: r == ref)
    for grid, E, k, spread in [(1, 4, 2, 1000), (2, 8, 2, 5), (3, 5, 1, 3000), (7, 64, 2, 2**20),
                               (4, 8, 3, 2), (5, 16, 2, 2**24)]:
        L = ints(-spread, spread, (grid * grid, E))
        gm = I.gate_multipliers(10 ** rng.uniform(-5, -2))
        for smooth in (False, True):
            idx, gates = I.route(L, k, gm, smooth, grid)
            ref = [idx.ravel().tolist(), gates.astype(np.int64).ravel().tolist()]
            add("route", {"L": L.ravel().tolist(), "n": grid * grid, "E": E, "k": k,
                          "gm": {str(c): list(m) for c, m in gm.items()}, "smooth": smooth,
                          "grid": grid}, lambda r, ref=ref: r == ref)

    # §12 attention
    for n, dim, heads in [(1, 8, 1), (5, 8, 2), (49, 64, 4), (16, 32, 4)]:
        qkv = ints(-128, 127, (n, 3 * dim))
        hd = dim // heads
        sM, ssh = I.softmax_multiplier(0.05 * 0.04 / math.sqrt(hd))
        oM, osh = I.quantize_multiplier(0.03 / 32768 / 0.02)
        ref = I.attention(qkv[:, :dim], qkv[:, dim:2 * dim], qkv[:, 2 * dim:], heads,
                          (sM, ssh), (oM, osh)).ravel().tolist()
        add("attention", {"qkv": qkv.ravel().tolist(), "n": n, "dim": dim, "heads": heads,
                          "sM": sM, "ssh": ssh, "oM": oM, "osh": osh},
            lambda r, ref=ref: all(v == ref for v in r.values()))

    # §13 mean pooling
    for n, dim in [(1, 4), (49, 64), (3, 2)]:
        x = ints(-32768, 32767, (n, dim))
        M, sh = I.quantize_multiplier(1.7 / n)
        ref = I.mean_pool(x, M, sh, 16).tolist()
        add("pool", {"x": x.ravel().tolist(), "dim": dim, "M": M, "shift": sh},
            lambda r, ref=ref: r == ref)

    # §14 frames: any size, both formats, 1 and 3 channels; quantisation tables; patches
    sizes = [(28, 28), (1, 1), (1, 9), (9, 1), (3, 2), (31, 17), (17, 31), (40, 30), (5, 64)]
    for i, (w, h) in enumerate(sizes):
        for fmt, bpp in (("GRAYSCALE", 1), ("RGB565", 2)):
            C = 1 if (i + bpp) % 2 else 3
            S, p = (8, 4) if i % 2 else (6, 2)
            buf = ints(0, 255, w * h * bpp).astype(np.uint8).tobytes()
            mean, std = rng.uniform(0.2, 0.6, C), rng.uniform(0.2, 0.4, C)
            A, B, sh = I.input_quant_params(mean, std, rng.uniform(0.01, 0.05))
            pix = I.frame_to_pixels(buf, w, h, fmt, S, C)
            ref = [pix.ravel().tolist(), I.input_tables(A, B, sh).ravel().tolist(),
                   I.preprocess_frame(buf, w, h, fmt, S, C, p, A, B, sh).ravel().tolist()]
            add("frame", {"buf": list(buf), "w": w, "h": h, "fmt": fmt, "S": S, "C": C, "p": p,
                          "A": A.tolist(), "B": B.tolist(), "sh": sh.tolist()},
                lambda r, ref=ref: r == ref)
    # bad frames: the host's messages
    for buf, w, h, fmt in [(bytes(5), 3, 2, "GRAYSCALE"), (bytes(6), 3, 2, "RGB565"),
                           (b"", 0, 5, "GRAYSCALE"), (bytes(4), 2, 2, "JPEG")]:
        with pytest.raises(ValueError) as exc:
            I.frame_to_pixels(buf, w, h, fmt, 4, 1)
        msg = str(exc.value)
        add("frame", {"buf": list(buf), "w": w, "h": h, "fmt": fmt, "S": 4, "C": 1, "p": 2,
                      "A": [1], "B": [0], "sh": [1]}, lambda r, msg=msg: r == "ERR: " + msg)
    return cases, checks


@pytest.fixture(scope="module")
def kernel_cases(rng, tmp_path_factory):
    cases, checks = _gen_cases(rng)
    d = tmp_path_factory.mktemp("kernels")
    path = d / "cases.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    runner = d / "runner.py"
    runner.write_text(RUNNER)
    return cases, checks, path, runner


def _compare(out, cases, checks, want_backends):
    lines = out.strip().splitlines()
    head = json.loads(lines[0])
    # a MicroPython built with the native module (docs/native.md) runs it first, as well
    assert head["backends"] in (want_backends, ["native"] + want_backends), head
    results = [json.loads(line) for line in lines[1:]]
    assert len(results) == len(cases)
    bad = [(c["op"], r if len(str(r)) < 300 else str(r)[:300]) for c, r, chk in
           zip(cases, results, checks) if not chk(r)]
    assert not bad, f"{len(bad)} of {len(cases)} cases differ from intops, first: {bad[:2]}"
    return len(cases)


def test_every_op_bit_exact_on_unix_micropython(micropython, kernel_cases):
    cases, checks, path, runner = kernel_cases
    res = micropython.run(runner, args=[path], heapsize="16m", timeout=300).check()
    assert _compare(res.stdout, cases, checks, ["viper", "python"]) > 80


def test_every_op_bit_exact_on_wasm_micropython(wasm_micropython, kernel_cases):
    """The WebAssembly MicroPython has no viper: the pure kernels, as on CircuitPython."""
    cases, checks, path, runner = kernel_cases
    res = wasm_micropython(runner, args=["/cases.jsonl"], copies={path: "/cases.jsonl"})
    assert _compare(res.stdout, cases, checks, ["python"]) > 80


def test_hot_loops_do_not_allocate(micropython):
    res = micropython.run(code=NOALLOC, heapsize="512k").check()
    assert res.stdout.split() in (["ok", "viper", "ok", "python"],
                                  ["ok", "native", "ok", "viper", "ok", "python"])
