"""The MicroPython module `bvitnative` itself, on a real MicroPython built with it.

No package registry has MicroPython's source, so CI cannot build the binding: these tests
are skipped unless BVITNATIVE_MICROPYTHON names a MicroPython executable built with the
module (`scripts/build_firmware.py --port unix`, docs/firmware.md).  They run the module on
bytes / bytearray / array / memoryview buffers against the numpy reference and against
the board's pure-MicroPython kernels on the same interpreter, and check
that wrong calls raise TypeError / ValueError and leave the interpreter running.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from butterflyvit import intops as I

REPO = Path(__file__).resolve().parents[1]
MP = os.environ.get("BVITNATIVE_MICROPYTHON")

pytestmark = pytest.mark.skipif(not MP, reason="set BVITNATIVE_MICROPYTHON to a MicroPython "
                                "built with the module (scripts/build_firmware.py --port unix, docs/firmware.md)")

SCRIPT = r"""
import sys, json
from array import array
import bvitnative as bn
sys.path.insert(0, DEVICE)
from bvit import kernels as K, nn as N

V = json.loads(open(VECTORS).read())
R = {}

def ar(code, v):
    return array(code, v)

# trits and ternary products, every buffer kind for the packed bytes
p = bytes(V["packed"])
rows, n = V["rows"], V["n"]
for kind, pk in (("bytes", p), ("bytearray", bytearray(p)), ("memoryview", memoryview(p))):
    for code in "bh":
        x = ar(code, V["x_" + code])
        out = ar("i", [0] * rows)
        R["tm_%s_%s" % (kind, code)] = list(bn.ternary_matvec(pk, rows, n, x, out))
        table = ar("i", [0] * bn.LUT_ENTRIES)
        out2 = ar("i", [0] * rows)
        R["lut_%s_%s" % (kind, code)] = list(bn.ternary_matvec_lut(pk, rows, n, x, out2, table))
t = ar("b", [0] * (rows * n))
R["unpack"] = list(bn.unpack_trits(p, rows, n, t))
out = ar("h", [0] * rows)
bn.ternary_linear(p, rows, n, ar("h", V["x_h"]), ar("h", V["M"]), bytes(V["shift"]),
                  ar("i", V["bias"]), out, ar("i", [0] * bn.LUT_ENTRIES))
R["tlin"] = list(out)

# requantisation, rounding, sincos, butterfly
R["requant"] = [bn.requant(a, m, s) for a, m, s in V["rq"]]
R["requant_py"] = [N.requant(a, m, s) for a, m, s in V["rq"]]
R["rshift"] = [bn.rshift_round(a, s) for a, s in V["rs"]]
R["sincos1"] = [list(bn.sincos_q14(ph)) for ph in V["phases"][:50]]
c, s = ar("h", [0] * len(V["phases"])), ar("h", [0] * len(V["phases"]))
bn.sincos(ar("H", V["phases"]), c, s)
R["cos"], R["sin"] = list(c), list(s)
nl, npad = V["n_stages"], V["n_pad"]
v = ar("h", V["v"])
bn.butterfly(v, ar("h", V["bcos"]), ar("h", V["bsin"]), nl, npad)
R["bf"] = list(v)
v = ar("h", V["v"])
R["bfph"] = list(bn.butterfly_phase(v, ar("H", V["bph"]), nl, npad))

# one butterfly expert at the shipped shape
e = V["expert"]
rin = bn.rot_expand(ar("H", e["ph_in"]), ar("i", [0] * (2 * len(e["ph_in"]))))
rout = bn.rot_expand(ar("H", e["ph_out"]), ar("i", [0] * (2 * len(e["ph_out"]))))
out = ar("h", [0] * e["ffn"])
work = ar("i", [0] * (e["pin"] + e["pout"]))
table = ar("i", [0] * bn.LUT_ENTRIES)
bn.expert(ar("b", e["x"]), e["P"], rin, rout, e["n_stages"], bytes(e["packed"]),
          ar("h", e["M"]), bytes(e["shift"]), out, work, table)
R["expert"] = list(out)

# linear, LayerNorm, softmax, attention, mixture, elementwise
l = V["linear"]
out = ar("h", [0] * l["out_n"])
bn.linear(ar("b", l["x"]), ar("b", l["w"]), ar("i", l["bias"]), ar("h", l["M"]), bytes(l["shift"]), out)
R["linear"] = list(out)
acc = ar("i", [0] * l["out_n"])
R["linear_acc"] = list(bn.linear_acc(ar("b", l["x"]), ar("b", l["w"]), None, acc))
ln = V["ln"]
out = ar("b", [0] * len(ln["x"]))
R["ln"] = list(bn.layernorm(ar("h", ln["x"]), ar("i", ln["G"]), ar("i", ln["B"]), ln["shift"], ln["E"], out))
sm = V["sm"]
out = ar("H", [0] * len(sm["L"]))
R["sm"] = list(bn.softmax(ar("i", sm["L"]), sm["M"], sm["shift"], out))
at = V["att"]
out = ar("b", [0] * (at["N"] * at["dim"]))
work = ar("i", [0] * (at["N"] + (at["N"] + 1) // 2))
R["att"] = list(bn.attention(ar("b", at["qkv"]), at["N"], at["heads"], at["sM"], at["sS"],
                             at["oM"], at["oS"], out, work))
mx = V["mix"]
R["mix"] = list(bn.mix(ar("h", mx["h"]), ar("H", mx["g"]), ar("h", [0] * mx["f"])))
R["topk"] = list(bn.topk(ar("i", V["tk"]), 2, ar("H", [0, 0])))
R["relu"] = list(bn.relu(ar("h", V["x_h"])))
ra = V["res"]
R["res"] = list(bn.residual_add(ar("h", ra["a"]), ar("h", ra["b"]), ra["Ma"], ra["Mb"], ra["sh"],
                                ar("h", [0] * len(ra["a"]))))
R["pool"] = list(bn.mean_pool(ar("h", V["pool"]["x"]), V["pool"]["N"], V["pool"]["M"],
                              V["pool"]["sh"], ar("h", [0] * V["pool"]["d"])))

# the board backend (device/bvit/ops.py NAMES): same results as the pure kernels
from bvit import ops
R["backend_names"] = [nm for nm in ops.NAMES if hasattr(bn, nm)] + [bn.NAME]
bk = V["backend"]
kv = ar("b", bk["kv"])
w = ar("b", bk["w"])
a8 = ar("b", bk["a"])
o1, o2 = ar("i", [0] * 8), ar("i", [0] * 8)
bn.matvec8(a8, 3, 16, w, 8, o1)
K.matvec8(a8, 3, 16, w, 8, o2)
R["matvec8"] = [list(o1), list(o2)]
st = bytes(bk["rows"])
u = ar("h", bk["u"])
o1, o2 = ar("i", [0] * 9), ar("i", [0] * 9)
bn.ternary_rows(st, 3, 9, 64, u, o1)
K.ternary_rows(st, 3, 9, 64, u, o2)
R["trows"] = [list(o1), list(o2)]
raw = bytes(bk["raw"])
v1, v2 = ar("h", bk["v"]), ar("h", bk["v"])
bn.butterfly_ph(v1, raw, 1, 4, 64)
K.butterfly_ph(v2, raw, 1, 4, 64)
R["bph"] = [list(v1), list(v2)]
s1, s2 = ar("i", [0] * 9), ar("i", [0] * 9)
bn.attn_scores(kv, 9 * 32, 0, 32, 9, 16, s1)
K.attn_scores(kv, 9 * 32, 0, 32, 9, 16, s2)
R["scores"] = [list(s1), list(s2)]
probs = ar("i", bk["p"])
a1, a2 = ar("i", [0] * 16), ar("i", [0] * 16)
bn.attn_pv(probs, 9, kv, 16, 32, 16, a1)
K.attn_pv(probs, 9, kv, 16, 32, 16, a2)
R["pv"] = [list(a1), list(a2)]

# wrong calls: each must raise the right exception, and the interpreter must go on
x = ar("b", V["x_b"])
out = ar("i", [0] * rows)
errors = []
def expect(exc, f, *a):
    try:
        f(*a)
    except exc as ex:
        errors.append("%s: %s" % (type(ex).__name__, ex))
        return
    errors.append("NO ERROR for %s" % (a[:2],))
expect(ValueError, bn.ternary_matvec, p[:-1], rows, n, x, out)
expect(ValueError, bn.ternary_matvec, p, rows, n, ar("b", V["x_b"][:-1]), out)
expect(ValueError, bn.ternary_matvec, p, rows + 1, n, x, out)
expect(TypeError, bn.ternary_matvec, p, rows, n, ar("f", [0.0] * n), out)
expect(TypeError, bn.ternary_matvec, p, rows, n, x, bytes(4 * rows))
expect(TypeError, bn.ternary_matvec, p, rows, n, x, None)
expect(TypeError, bn.ternary_matvec, [1, 2], rows, n, x, out)
expect(ValueError, bn.ternary_matvec_lut, p, rows, n, x, out, ar("i", [0] * 100))
expect(ValueError, bn.check_trits, bytes([243] * len(p)), rows, n)
expect(ValueError, bn.unpack_trits, bytes([243] * len(p)), rows, n, ar("b", [0] * (rows * n)))
expect(ValueError, bn.requant, 5, 40000, 20)
expect(ValueError, bn.requant, 5, 20000, 0)
expect(TypeError, bn.requant_into, ar("i", [1, 2]), 20000, ar("b", [20, 20]), ar("b", [0, 0]))
expect(ValueError, bn.butterfly, ar("h", [0] * 8), ar("h", [0] * 11), ar("h", [0] * 12), 3, 8)
expect(ValueError, bn.butterfly, ar("h", [0] * 8), ar("h", [0] * 12), ar("h", [0] * 12), 3, 6)
expect(ValueError, bn.expert, ar("b", e["x"]), 9, rin, rout, e["n_stages"], bytes(e["packed"]),
       ar("h", e["M"]), bytes(e["shift"]), ar("h", [0] * e["ffn"]), ar("i", [0] * 8), table)
expect(ValueError, bn.softmax, ar("i", [1 << 30]), 20000, 20, ar("H", [0]))
expect(ValueError, bn.layernorm, ar("b", [1, 2]), ar("i", [1, 2]), ar("i", [1]), 10, 0, ar("b", [0, 0]))
expect(ValueError, bn.sincos_q14, 65536)
expect(ValueError, bn.mix, ar("h", [0, 0]), ar("H", [40000]), ar("h", [0, 0]))
expect(TypeError, bn.relu, ar("f", [1.0]))
R["errors"] = errors
# memoryview slices are fine: a window of a bigger output buffer
big = ar("i", [7] * (rows + 2))
bn.ternary_matvec(p, rows, n, x, memoryview(big)[1:1 + rows])
R["window"] = list(big)
print("RESULT " + json.dumps(R))
"""


def _vectors(rng):
    rows, n = 7, 13
    t = rng.integers(-1, 2, (rows, n)).astype(np.int8)
    t[0] = 1
    packed = np.frombuffer(I.pack_trits(t), np.uint8)
    x_b = rng.integers(-128, 128, n).astype(np.int8)
    x_h = rng.integers(-32768, 32768, n).astype(np.int16)
    M = rng.integers(16384, 32768, rows).astype(np.int16)
    shift = rng.integers(16, 24, rows).astype(np.uint8)
    bias = rng.integers(-1000, 1000, rows).astype(np.int32)
    rq = [(int(a), int(m), int(s)) for a, m, s in zip(rng.integers(-2**28, 2**28, 40),
                                                      rng.integers(16384, 32768, 40),
                                                      rng.integers(1, 40, 40))]
    rs = [(int(a), int(s)) for a, s in zip(rng.integers(-2**28, 2**28, 20), rng.integers(1, 20, 20))]
    phases = rng.integers(0, 65536, 300).astype(np.uint16)
    n_stages, n_pad = 3, 16
    bph = rng.integers(0, 65536, n_stages * n_pad // 2).astype(np.uint16)
    bcos, bsin = I.sincos_q14(bph)
    v = rng.integers(-20000, 20000, n_pad).astype(np.int16)
    # expert, pico shape
    dim, ffn, L = 64, 256, 4
    et = rng.integers(-1, 2, (ffn, dim)).astype(np.int8)
    ex = dict(x=rng.integers(-128, 128, dim).tolist(), P=5, n_stages=L, ffn=ffn, pin=64, pout=256,
              ph_in=rng.integers(0, 65536, L * 32).tolist(), ph_out=rng.integers(0, 65536, L * 128).tolist(),
              packed=list(I.pack_trits(et)), M=rng.integers(16384, 32768, ffn).tolist(),
              shift=rng.integers(18, 24, ffn).tolist())
    lin = dict(x=rng.integers(-128, 128, 64).tolist(), out_n=48,
               w=rng.integers(-127, 128, 48 * 64).tolist(), bias=rng.integers(-9999, 9999, 48).tolist(),
               M=rng.integers(16384, 32768, 48).tolist(), shift=rng.integers(16, 24, 48).tolist())
    lp = I.layernorm_params(rng.normal(1, 0.3, 64), rng.normal(0, 0.3, 64), 1e-5, 0.05, 0.03)
    ln = dict(x=rng.integers(-3000, 3000, 64).tolist(), G=lp.G.tolist(), B=lp.B.tolist(), shift=lp.shift,
              E=int(lp.E))
    sm_M, sm_s = I.softmax_multiplier(0.01)
    sm = dict(L=rng.integers(-3000, 3000, 49).tolist(), M=sm_M, shift=sm_s)
    N, adim, heads = 9, 16, 4
    sM, sS = I.softmax_multiplier(1e-4)
    oM, oS = I.quantize_multiplier(0.02 * 2**-15 / 0.03)
    att = dict(qkv=rng.integers(-128, 128, N * 3 * adim).tolist(), N=N, dim=adim, heads=heads,
               sM=sM, sS=sS, oM=oM, oS=oS)
    g = I.softmax(np.array([300, 100], np.int32), *I.softmax_multiplier(0.01))
    mix = dict(h=rng.integers(0, 32768, 2 * 20).tolist(), g=g.tolist(), f=20)
    Ma, Mb, rsh = I.residual_params(0.1, 0.05, 0.12)
    res = dict(a=rng.integers(-32768, 32768, 30).tolist(), b=rng.integers(-32768, 32768, 30).tolist(),
               Ma=Ma, Mb=Mb, sh=rsh)
    pM, psh = I.quantize_multiplier(0.7 / 49)
    pool = dict(x=rng.integers(-32768, 32768, 49 * 8).tolist(), N=49, d=8, M=pM, sh=psh)
    backend = dict(kv=rng.integers(-128, 128, 9 * 32 + 32).tolist(), w=rng.integers(-128, 128, 8 * 16).tolist(),
                   a=rng.integers(-128, 128, 20).tolist(), rows=[7, 200, 0] + list(I.pack_trits(rng.integers(-1, 2, (9, 64)).astype(np.int8))),
                   u=rng.integers(-32768, 32768, 64).tolist(), raw=rng.integers(0, 256, 1 + 4 * 32 * 2).tolist(),
                   v=rng.integers(-20000, 20000, 64).tolist(),
                   p=I.softmax(rng.integers(-300, 300, 9).astype(np.int32), *I.softmax_multiplier(0.01)).tolist())
    return dict(backend=backend, rows=rows, n=n, packed=packed.tolist(), x_b=x_b.tolist(), x_h=x_h.tolist(),
                M=M.tolist(), shift=shift.tolist(), bias=bias.tolist(), rq=rq, rs=rs,
                phases=phases.tolist(), n_stages=n_stages, n_pad=n_pad, bph=bph.tolist(),
                bcos=bcos.tolist(), bsin=bsin.tolist(), v=v.tolist(), expert=ex, linear=lin, ln=ln,
                sm=sm, att=att, mix=mix, tk=[5, 7, 7, 1], res=res, pool=pool)


def test_bvitnative_on_micropython(tmp_path):
    rng = np.random.default_rng(7)
    V = _vectors(rng)
    (tmp_path / "vectors.json").write_text(json.dumps(V))
    script = tmp_path / "run.py"
    script.write_text(f"DEVICE = {str(REPO / 'device')!r}\nVECTORS = {str(tmp_path / 'vectors.json')!r}\n"
                      + SCRIPT)
    proc = subprocess.run([MP, "-X", "heapsize=4m", str(script)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    R = json.loads(proc.stdout.split("RESULT ", 1)[1])
    rows, n = V["rows"], V["n"]
    packed = bytes(V["packed"])
    for code in "bh":
        x = np.array(V["x_" + code])
        ref = I.ternary_matvec(packed, rows, n, x).tolist()
        for kind in ("bytes", "bytearray", "memoryview"):
            assert R[f"tm_{kind}_{code}"] == ref
            assert R[f"lut_{kind}_{code}"] == ref
    assert R["unpack"] == I.unpack_trits(packed, rows, n).ravel().tolist()
    assert R["tlin"] == I.ternary_linear(packed, rows, n, np.array(V["x_h"]), np.array(V["M"]),
                                         np.array(V["shift"]), np.array(V["bias"]), 16).tolist()
    assert R["requant"] == R["requant_py"] == [int(I.requant(a, m, s)) for a, m, s in V["rq"]]
    assert R["rshift"] == [int(I.rshift_round(a, s)) for a, s in V["rs"]]
    c, s = I.sincos_q14(np.array(V["phases"]))
    assert R["cos"] == c.tolist() and R["sin"] == s.tolist()
    assert R["sincos1"] == [[int(a), int(b)] for a, b in zip(c[:50], s[:50])]
    L, half = V["n_stages"], V["n_pad"] // 2
    ref = I.butterfly_q14(np.array(V["v"]), np.array(V["bcos"]).reshape(L, half),
                          np.array(V["bsin"]).reshape(L, half)).tolist()
    assert R["bf"] == R["bfph"] == ref
    e = V["expert"]
    ci, si = I.sincos_q14(np.array(e["ph_in"]))
    co, so = I.sincos_q14(np.array(e["ph_out"]))
    u = I.butterfly_q14(np.array(e["x"]) * 2**e["P"], ci.reshape(4, -1), si.reshape(4, -1))
    h = I.requant(I.ternary_matvec(bytes(e["packed"]), e["ffn"], 64, u), np.array(e["M"]),
                  np.array(e["shift"]), 16)
    assert R["expert"] == I.relu(I.butterfly_q14(h, co.reshape(4, -1), so.reshape(4, -1))).tolist()
    li = V["linear"]
    w = np.array(li["w"]).reshape(li["out_n"], -1)
    assert R["linear"] == I.linear(np.array(li["x"]), w, np.array(li["bias"]), np.array(li["M"]),
                                   np.array(li["shift"]), 16).tolist()
    assert R["linear_acc"] == I.linear_acc(np.array(li["x"]), w).tolist()
    ln = V["ln"]
    lp = I.LayerNormParams(np.array(ln["G"]), np.array(ln["B"]), ln["shift"], ln["E"])
    assert R["ln"] == I.layernorm(np.array(ln["x"]), lp).tolist()
    assert R["sm"] == I.softmax(np.array(V["sm"]["L"]), V["sm"]["M"], V["sm"]["shift"]).tolist()
    at = V["att"]
    q = np.array(at["qkv"]).reshape(at["N"], 3 * at["dim"])
    d = at["dim"]
    ref = I.attention(q[:, :d], q[:, d:2 * d], q[:, 2 * d:], at["heads"], (at["sM"], at["sS"]),
                      (at["oM"], at["oS"]))
    assert R["att"] == ref.ravel().tolist()
    mx = V["mix"]
    hm = np.array(mx["h"]).reshape(2, -1)
    assert R["mix"] == I.saturate(I.rshift_round((np.array(mx["g"])[:, None] * hm).sum(0), 15), 16).tolist()
    assert R["topk"] == [1, 2]
    assert R["relu"] == np.maximum(V["x_h"], 0).tolist()
    ra = V["res"]
    assert R["res"] == I.residual_add(np.array(ra["a"]), np.array(ra["b"]), ra["Ma"], ra["Mb"], ra["sh"],
                                      16).tolist()
    po = V["pool"]
    assert R["pool"] == I.mean_pool(np.array(po["x"]).reshape(po["N"], po["d"]), po["M"], po["sh"],
                                    16).tolist()
    assert R["backend_names"] == ["matvec8", "ternary_rows", "butterfly_ph", "attn_scores", "attn_pv", "native"]
    for key in ("matvec8", "trows", "bph", "scores", "pv"):
        assert R[key][0] == R[key][1], key
    bk = V["backend"]
    assert R["trows"][0] == I.ternary_matvec(bytes(bk["rows"][3:]), 9, 64, np.array(bk["u"])).tolist()
    assert not [m for m in R["errors"] if m.startswith("NO ERROR")], R["errors"]
    assert len(R["errors"]) == 21
    assert R["window"][0] == 7 and R["window"][-1] == 7
    assert R["window"][1:-1] == I.ternary_matvec(packed, rows, n, np.array(V["x_b"])).tolist()
