# Runs golden cases (tests/golden.py) through the board's code on a MicroPython:
#
#     micropython device_golden.py CASES.jsonl       (bvit on the module path)
#
# prints a first line {"backends": [...]} (the kernel backends that load on this port), then
# one JSON line per case: {implementation: result}, where the implementation is a backend
# name for the hot loops and the per-element steps a backend may replace (bvit.ops), and
# "nn" for the ops every backend shares (bvit.nn, bvit.frames). A result is the op's
# integers, or "ERR: message" when it raised. tests/test_device_kernels.py compares them
# with the cases' "want". Test code, not the board's: it calls the board's ops the way
# bvit.model does (route and whole-sequence attention are composed here from them).

import sys
import json
from array import array

from bvit import frames as F, nn as N, ops

BACKENDS = [ops.load(name) for name in ops.available()]


def flat(v):
    # a nested list (a numpy array's tolist()) -> a flat list
    out = []
    for e in v:
        if isinstance(e, list):
            out.extend(flat(e))
        else:
            out.append(e)
    return out


def bounds(bits):
    return (-128, 127) if bits == 8 else (-32768, 32767)


def raw_phases(ph, at):
    # uint16 phases little-endian from byte `at` (as in a model file)
    raw = bytearray(at + 2 * len(ph))
    for i, p in enumerate(ph):
        raw[at + 2 * i] = p & 255
        raw[at + 2 * i + 1] = p >> 8
    return raw


# ---------------------------------------------------------------- per backend

def b_requant_rows(b, a):
    n = len(a["acc"])
    lo, hi = bounds(a["bits"])
    out = array("b" if a["bits"] == 8 else "h", [0] * (n + 3))
    bias = None if a["bias"] is None else array("i", a["bias"])
    ops.get(b, "requant_rows")(array("i", [0] + a["acc"]), 1, out, 3, n, array("h", a["M"]),
                               array("b", a["shift"]), 0, bias, lo, hi)
    return list(out)[3:]


def b_relu(b, a):
    v = array("h", [0] + a["v"])
    ops.get(b, "relu")(v, 1, len(a["v"]))
    return list(v)[1:]


def b_expert_input(b, a):
    u = array("h", [7] * a["dp"])
    ops.get(b, "expert_input")(array("b", [0] + a["a"]), 1, len(a["a"]), a["P"], u, a["dp"])
    return list(u)


def b_mix(b, a):
    f = len(a["h"][0])
    mix = array("i", [0] * f)
    for j, h in enumerate(a["h"]):
        ops.get(b, "mix_add")(mix, array("h", h), a["g"][j], f, j == 0)
    m = array("h", [0] * f)
    ops.get(b, "mix_round")(mix, m, f)
    return [list(mix), list(m)]


def b_ternary_rows(b, a):
    # the packed bytes as bytes, and as the model's int8 weight buffer
    rows, n, p0 = a["rows"], a["n"], a["p0"]
    x = array("h", a["x"])
    res = []
    for packed in (bytes(a["packed"]), array("b", [v - 256 if v > 127 else v for v in a["packed"]])):
        res.append(list(b.ternary_rows(packed, p0, rows, n, x, array("i", [0] * rows))))
    return res


def b_butterfly(b, a):
    v = array("h", a["v"])
    b.butterfly_ph(v, raw_phases(flat(a["phases"]), 3), 3, a["n_stages"], len(v))
    return list(v)


def b_matvec8(b, a):
    rows, n = len(a["w"]), len(a["x"])
    x = array("b", [0, 0, 0] + a["x"])
    w = flat(a["w"])
    res = [list(b.matvec8(x, 3, n, array("b", w), rows, array("i", [0] * rows)))]
    if b.NAME == "viper":      # viper reads raw memory: int8 weights in place in bytes (a ROMFS model)
        res.append(list(b.matvec8(x, 3, n, bytes([v & 255 for v in w]), rows, array("i", [0] * rows))))
    return res


def b_linear(b, a):
    # the model's linear layer: the int8 product, then per-row requantisation with bias
    rows, n = len(a["w"]), len(a["x"])
    acc = b.matvec8(array("b", a["x"]), 0, n, array("b", flat(a["w"])), rows, array("i", [0] * rows))
    lo, hi = bounds(a["bits"])
    out = array("b" if a["bits"] == 8 else "h", [0] * rows)
    bias = None if a["bias"] is None else array("i", a["bias"])
    ops.get(b, "requant_rows")(acc, 0, out, 0, rows, array("h", a["M"]), array("b", a["shift"]),
                               0, bias, lo, hi)
    return list(out)


def b_attention(b, a):
    # every query's attention_row over the (n x 3 dim) q | k | v rows, as bvit.model runs it
    qkv = array("b", flat(a["qkv"]))
    n, dim, heads = len(a["qkv"]), len(a["qkv"][0]) // 3, a["heads"]
    out = array("b", [0] * (n * dim))
    srow, acc = array("i", [0] * n), array("i", [0] * (dim // heads))
    cut = N.softmax_cutoff(a["score_M"], a["score_shift"])
    for t in range(n):
        N.attention_row(qkv, t * 3 * dim, dim, 2 * dim, 3 * dim, n, dim, heads, a["score_M"],
                        a["score_shift"], a["out_M"], a["out_shift"], out, t * dim, srow, acc,
                        b.attn_scores, b.attn_pv, cut)
    return list(out)


# ---------------------------------------------------------------- shared (bvit.nn, bvit.frames)

def n_requant(a):
    lo, hi = bounds(a["bits"])
    return [N.requant(v, M, s, lo, hi) for v, M, s in zip(a["acc"], a["M"], a["shift"])]


def n_layernorm(a):
    rows, d = len(a["x"]), len(a["x"][0])
    x = array("b" if a["bits"] == 8 else "h", flat(a["x"]))
    out = array("b", [0] * (rows * d))
    G, B = array("i", a["G"]), array("i", a["B"])
    for t in range(rows):
        N.layernorm(x, t * d, d, G, B, a["shift"], a["E"], out, t * d)
    return list(out)


def n_softmax(a):
    # into another buffer, and in place with the cut-off given (as attention_row calls it)
    rows, n = len(a["L"]), len(a["L"][0])
    L = array("i", flat(a["L"]))
    out = array("i", [0] * (rows * n))
    inplace = array("i", L)
    cut = N.softmax_cutoff(a["M"], a["shift"])
    for r in range(rows):
        N.softmax(L, r * n, n, a["M"], a["shift"], out, r * n)
        N.softmax(inplace, r * n, n, a["M"], a["shift"], inplace, r * n, cut)
    return [list(out), list(inplace)]


def n_residual_add(a):
    n = len(a["a"])
    lo, hi = bounds(a["bits"])
    x = array("h", a["a"])
    N.residual_add(x, 0, array("h", a["b"]), 0, n, a["Ma"], a["Mb"], a["shift"], x, 0, lo, hi)
    return list(x)


def n_topk(a):
    rows, n, k = len(a["L"]), len(a["L"][0]), a["k"]
    L = array("i", flat(a["L"]))
    idx = array("H", [0] * (rows * k))
    for r in range(rows):
        N.topk(L, r * n, n, k, idx, r * k)
    return list(idx)


def n_route(a):
    # bvit.model's routing: (smoothed) sums, top-k, the gate softmax of the chosen logits
    grid, k = a["grid"], a["k"]
    E = len(a["L"][0])
    L = array("i", flat(a["L"]))
    gm = a["gate_mult"]
    idx, gates = array("H", [0] * (grid * grid * k)), array("i", [0] * (grid * grid * k))
    srow, sel = array("i", [0] * E), array("i", [0] * k)
    row = grid * E
    for t in range(grid * grid):
        r, col = t // grid, t % grid
        if a["smooth"]:
            cnt = N.neighbour_sum_rows(L, r * row, (r - 1) * row if r > 0 else -1,
                                       (r + 1) * row if r + 1 < grid else -1, col, grid, E, srow)
            src, s0 = srow, 0
        else:
            cnt, src, s0 = 1, L, t * E
        N.topk(src, s0, E, k, idx, t * k)
        for j in range(k):
            sel[j] = src[s0 + idx[t * k + j]]
        M, sh = gm[str(cnt)]
        N.softmax(sel, 0, k, M, sh, gates, t * k)
    return [list(idx), list(gates)]


def n_mean_pool(a):
    n, dim = len(a["x"]), len(a["x"][0])
    lo, hi = bounds(a["bits"])
    out = array("h", [0] * dim)
    N.mean_pool(array("h", flat(a["x"])), n, dim, a["M"], a["shift"], out, 0, lo, hi)
    return list(out)


def b_frame(b, a):
    # frame_to_pixels's checks and geometry, the backend's row step and patch quantisation
    buf, w, h, fmt, S, C = bytes(a["buf"]), a["w"], a["h"], a["fmt"], a["S"], a["C"]
    F.frame_to_pixels(buf, w, h, fmt, S, C)          # the board's errors for bad frames
    x0, y0, src = F.frame_geometry(w, h, S)
    stride = w * F.frame_bpp(fmt)
    pix = bytearray(C * S * S)
    row = ops.get(b, "frame_row_pixels")
    for i in range(S):
        row(buf, (y0 + src[i]) * stride, fmt, x0, src, S, C, pix, i)
    t = F.input_tables(a["A"], a["B"], a["sh"])
    out = array("b", [0] * (C * S * S))
    ops.get(b, "quantize_patches")(pix, C, S, a["p"], t, out)
    return [list(pix), list(t), list(out)]


def run(fn, *args):
    try:
        return fn(*args)
    except Exception as e:
        return "ERR: %s" % e


class _FrameSteps:
    """What bvit.ops gives the native backend for the frame's steps (bvit.kframes, viper),
    tested here on any MicroPython with viper, the C module built in or not."""
    NAME = "native"


print(json.dumps({"backends": [b.NAME for b in BACKENDS]}))
for line in open(sys.argv[1]):
    case = json.loads(line)
    op = case["op"]
    fn = globals().get("b_" + op)
    if fn is not None:
        res = {b.NAME: run(fn, b, case) for b in BACKENDS}
        if op == "frame" and "viper" in res:
            res["kframes"] = run(fn, _FrameSteps, case)
        print(json.dumps(res))
    else:
        print(json.dumps({"nn": run(globals()["n_" + op], case)}))
