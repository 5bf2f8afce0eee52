"""The C kernels (native/kernels/) on the host, through their checked layer (bvit_api.h).

Every kernel must give exactly the integers of the numpy reference (butterflyvit.intops)
on random and edge inputs; every wrong call must be refused with the TypeError or
ValueError the MicroPython module raises.  The library is built with -Wall -Wextra
-Werror; `test_everything_again_under_asan_and_ubsan` re-runs this whole file in a child
process against a build with AddressSanitizer and UndefinedBehaviorSanitizer (every
buffer is an exactly-sized malloc block there, so one element too many is caught).
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import golden
from butterflyvit import intops as I

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "native" / "tests"))
import bvit_ctypes as BC  # noqa: E402

SANITIZED = os.environ.get("BVIT_NATIVE_SANITIZE") == "1"
LUT = BC.LUT_ENTRIES


@pytest.fixture(scope="module")
def nat(tmp_path_factory):
    assert BC.SOURCES, "no native sources found under native/kernels"
    out = Path(os.environ.get("BVIT_NATIVE_LIBDIR") or tmp_path_factory.mktemp("native"))
    return BC.Native(BC.build_library(out, sanitize=SANITIZED))


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def rand_trits(rng, rows, n, p_zero=0.34):
    t = rng.choice(np.array([-1, 0, 1]), size=(rows, n), p=[(1 - p_zero) / 2, p_zero, (1 - p_zero) / 2])
    return t.astype(np.int8)


def packed_of(t):
    return np.frombuffer(I.pack_trits(t), dtype=np.uint8).copy()


# ---------------------------------------------------------------- tables (spec §0.2, §4)

def _c_array(name):
    text = (REPO / "native/kernels/bvit_tables.c").read_text()
    m = re.search(rf"{name}\[[^\]]*\](?:\[5\])?\s*=\s*\{{(.*?)\}};", text, re.S)
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    return [int(v) for v in re.findall(r"-?\d+", body)]


def test_table_literals_match_their_formulas():
    sin = _c_array("bvit_sin_q14")
    assert sin == [math.floor(16384 * math.sin(i * math.pi / 512) + 0.5) for i in range(257)]
    assert sin == list(I.SIN_Q14)
    text = (REPO / "native/kernels/bvit_tables.c").read_text()
    body = re.search(r"bvit_sin_w\[257\]\s*=\s*\{(.*?)\};", text, re.S).group(1)
    words = [int(v, 16) for v in re.findall(r"0x([0-9A-Fa-f]+)u", body)]
    slope = [sin[i + 1] - sin[i] for i in range(256)] + [0]
    assert words == [sin[i] | (slope[i] << 16) for i in range(257)]
    exp2 = _c_array("bvit_exp2_q14")
    assert exp2 == [math.floor(16384 * 2 ** (-f / 256) + 0.5) for f in range(256)]
    assert exp2 == list(I.EXP2_Q14)
    trit = np.array(_c_array("bvit_trit5")).reshape(256, 5)
    assert (trit[:243] == I.DIGITS - 1).all()
    assert (trit[243:] == 0).all()  # invalid bytes decode as zeros


# ---------------------------------------------------------------- §4 trits

def test_division_free_packed_row_bytes():
    """bvit_packed_row_bytes: ceil(n/5) as ((n + 4) * 52429) >> 18 in 32 bits, n <= 81915."""
    m = np.arange(0, 81920, dtype=np.uint64)
    assert ((m * 52429) < 2**32).all()
    assert (((m * 52429) >> 18) == m // 5).all()


@pytest.mark.parametrize("n", [1, 2, 4, 5, 6, 9, 10, 11, 64, 256, 1023])
def test_unpack_and_check_trits(nat, rng, n):
    rows = 3
    t = rand_trits(rng, rows, n)
    t[0] = 1
    t[1] = -1
    p = packed_of(t)
    out = np.zeros(rows * n, np.int8)
    nat.unpack_trits(p, rows, n, out)
    assert (out.reshape(rows, n) == t).all()
    nat.check_trits(p, rows, n)
    bad = p.copy()
    bad[-1] = 243
    with pytest.raises(ValueError, match="byte value"):
        nat.check_trits(bad, rows, n)
    with pytest.raises(ValueError, match="byte value"):
        nat.unpack_trits(bad, rows, n, out)
    if n % 5:
        pad = p.copy()
        nb = -(-n // 5)
        pad[nb - 1] = 0  # five -1 trits: the padding ones are not zero
        with pytest.raises(ValueError, match="padding trits must be zero"):
            nat.check_trits(pad, rows, n)
        with pytest.raises(ValueError):
            I.unpack_trits(pad.tobytes(), rows, n)


# ---------------------------------------------------------------- every op on the golden vectors

def _golden_requant(nat, c):
    lo, hi = (-128, 127) if c["bits"] == 8 else (-32768, 32767)
    yield "scalar", [nat.requant(int(a), int(M), int(s), lo, hi)
                     for a, M, s in zip(c["acc"], c["M"], c["shift"])]
    out = np.zeros(len(c["acc"]), np.int8 if c["bits"] == 8 else np.int16)
    yield "per element", nat.requant_into(c["acc"].astype(np.int32), c["M"].astype(np.int16),
                                          c["shift"].astype(np.uint8), out)


def _golden_relu(nat, c):
    yield "int16", nat.relu(c["v"].copy())
    # the same values as int32 (the module's third input type)
    yield "int32", nat.relu(c["v"].astype(np.int32))


def _golden_mix(nat, c):
    yield "", nat.mix(c["h"], c["g"].astype(np.uint16), np.zeros(c["h"].shape[1], np.int16))


def _golden_ternary_matvec(nat, c):
    rows, n, p = c["rows"], c["n"], np.frombuffer(c["packed"], np.uint8)
    yield "plain", nat.ternary_matvec(p, rows, n, c["x"], np.zeros(rows, np.int32))
    yield "lut", nat.ternary_matvec_lut(p, rows, n, c["x"], np.zeros(rows, np.int32),
                                        np.zeros(LUT, np.int32))


def _golden_ternary_linear(nat, c):
    rows, n, p = c["rows"], c["n"], np.frombuffer(c["packed"], np.uint8)
    for form, table, acc in (("plain", None, None),
                             ("lut", np.zeros(LUT, np.int32), np.zeros(rows, np.int32))):
        out = np.zeros(rows, np.int8 if c["bits"] == 8 else np.int16)
        yield form, nat.ternary_linear(p, rows, n, c["x"], c["M"], c["shift"], c["bias"], out,
                                       table, acc)


def _golden_ternary_rows(nat, c):
    rows, n, p0, p = c["rows"], c["n"], c["p0"], np.frombuffer(c["packed"], np.uint8)
    yield "bytes", nat.ternary_rows(p, p0, rows, n, c["x"], np.zeros(rows, np.int32))
    yield "signed buffer", nat.ternary_rows(p.astype(np.int8), p0, rows, n, c["x"],
                                            np.zeros(rows, np.int32))


def _golden_sincos(nat, c):
    cos, sin = np.zeros(len(c["phases"]), np.int16), np.zeros(len(c["phases"]), np.int16)
    nat.sincos(c["phases"], cos, sin)
    yield "", (cos, sin)


def _golden_butterfly(nat, c):
    v, L, n_pad = c["v"], c["n_stages"], len(c["v"])
    yield "cos/sin tables", nat.butterfly(v.copy(), c["cos"].ravel(), c["sin"].ravel(), L, n_pad)
    yield "phases", nat.butterfly_phase(v.copy(), c["phases"].ravel(), L, n_pad)
    w = v.copy()
    for l in range(L):
        nat.butterfly_stage(w, c["cos"].ravel(), c["sin"].ravel(), l, n_pad)
    yield "stage by stage", w
    raw = np.frombuffer(b"\x05" + c["phases"].astype("<u2").tobytes() + b"\x07", np.uint8)
    yield "raw phases (backend)", nat.butterfly_ph(v.copy(), raw, 1, L, n_pad)


def _golden_expert(nat, c):
    L, ffn = c["n_stages"], len(c["M"])
    pin, pout = 2 * c["phases_in"].shape[1], 2 * c["phases_out"].shape[1]
    rin, rout = np.zeros(L * pin, np.int32), np.zeros(L * pout, np.int32)
    nat.rot_expand(c["phases_in"].ravel(), rin)
    nat.rot_expand(c["phases_out"].ravel(), rout)
    out = np.zeros(ffn, np.int16)
    yield "", nat.expert(c["x"], c["P"], rin, rout, L, np.frombuffer(c["packed"], np.uint8),
                         c["M"], c["shift"], out, np.zeros(pin + pout, np.int32),
                         np.zeros(LUT, np.int32))


def _golden_matvec8(nat, c):
    x, w = c["x"], c["w"]
    rows, n = w.shape
    yield "linear_acc", nat.linear_acc(x, w, None, np.zeros(rows, np.int32))
    # the backend's form: x from an offset, weights flat (one spare element after each)
    xo = np.concatenate([np.zeros(3, np.int8), x, np.zeros(2, np.int8)])
    wf = np.concatenate([w.ravel(), np.zeros(3, np.int8)])
    yield "matvec8 (backend)", nat.matvec8(xo, 3, n, wf, rows, np.zeros(rows, np.int32))


def _golden_linear(nat, c):
    out = np.zeros(c["w"].shape[0], np.int8 if c["bits"] == 8 else np.int16)
    yield "", nat.linear(c["x"], c["w"], c["bias"], c["M"], c["shift"], out)


def _golden_layernorm(nat, c):
    x = c["x"]
    out = np.zeros(x.shape, np.int8)
    for t in range(x.shape[0]):
        nat.layernorm(x[t], c["G"], c["B"], c["shift"], c["E"], out[t])
    yield "", out


def _golden_softmax(nat, c):
    L = c["L"]
    out = np.zeros(L.shape, np.uint16)
    for r in range(L.shape[0]):
        nat.softmax(L[r], c["M"], c["shift"], out[r])
    yield "", out


def _golden_residual_add(nat, c):
    a, b = c["a"], c["b"]
    if c["bits"] == 8:                   # int8 inputs and output
        a, b = a.astype(np.int8), b.astype(np.int8)
    out = np.zeros(len(a), np.int8 if c["bits"] == 8 else np.int16)
    yield "", nat.residual_add(a, b, c["Ma"], c["Mb"], c["shift"], out)


def _golden_topk(nat, c):
    L, k = c["L"], c["k"]
    yield "", np.stack([nat.topk(row.copy(), k, np.zeros(k, np.uint16)) for row in L])


def _golden_attention(nat, c):
    qkv, heads = c["qkv"], c["heads"]
    n, dim = qkv.shape[0], qkv.shape[1] // 3
    sm, om = (c["score_M"], c["score_shift"]), (c["out_M"], c["out_shift"])
    work = np.zeros(n + (n + 1) // 2, np.int32)
    out = np.zeros(n * dim, np.int8)
    yield "one multiplier", nat.attention(qkv, n, heads, *sm, *om, out.copy(), work).reshape(n, dim)
    per_head = [np.array([v] * heads, t) for v, t in zip((*sm, *om), (np.int16, np.uint8) * 2)]
    yield "per head", nat.attention(qkv, n, heads, *per_head, out.copy(), work).reshape(n, dim)
    # the backend's products, composed as bvit.nn.attention_row does (reference softmax)
    hd = dim // heads
    flat = qkv.ravel()
    got = np.zeros((n, dim), np.int64)
    for t in range(n):
        for h in range(heads):
            s, acc = np.zeros(n, np.int32), np.zeros(hd, np.int32)
            nat.attn_scores(flat, t * 3 * dim + h * hd, dim + h * hd, 3 * dim, n, hd, s)
            p = I.softmax(s, *sm).astype(np.int32)
            nat.attn_pv(p, n, flat, 2 * dim + h * hd, 3 * dim, hd, acc)
            got[t, h * hd:(h + 1) * hd] = I.requant(acc, *om)
    yield "attn_scores + attn_pv (backend)", got


def _golden_mean_pool(nat, c):
    x = c["x"]
    out = np.zeros(x.shape[1], np.int8 if c["bits"] == 8 else np.int16)
    yield "", nat.mean_pool(x, x.shape[0], c["M"], c["shift"], out)


def _wants(op, c):
    if op == "sincos":
        return c["want_cos"], c["want_sin"]
    return c["want"]


# The golden ops the C kernels implement (the board's requant_rows, expert_input, routing
# and frames are MicroPython only: tests/test_device_kernels.py).
NATIVE_OPS = tuple(op for op in golden.OPS if "_golden_" + op in globals())


def test_native_ops_cover_the_golden_ops_but_the_boards_own():
    assert set(golden.OPS) - set(NATIVE_OPS) == {"requant_rows", "expert_input", "route", "frame"}


@pytest.mark.parametrize("op", NATIVE_OPS)
def test_op_equals_the_golden_vectors(nat, op):
    bad, count = [], 0
    for c in golden.cases(op):
        want = _wants(op, c)
        for form, got in globals()["_golden_" + op](nat, c):
            count += 1
            same = (all(np.array_equal(np.asarray(g), w) for g, w in zip(got, want))
                    if op == "sincos" else np.array_equal(np.asarray(got).ravel(),
                                                          np.asarray(want).ravel()))
            if not same:
                bad.append(f"{c['name']} {form}".strip())
    assert count and not bad, f"{op}: {len(bad)} of {count} differ from intops: {bad[:4]}"


# ---------------------------------------------------------------- §5 ternary matvec: limits

def test_ternary_saturating_inputs_and_shipped_shape(nat, rng):
    rows, n = 256, 64
    for fill in (-32768, 32767):
        x = np.full(n, fill, np.int16)
        t = np.ones((rows, n), np.int8)
        t[1::2] = -1
        p = packed_of(t)
        ref = I.ternary_matvec(p.tobytes(), rows, n, x)
        out = np.zeros(rows, np.int32)
        assert (nat.ternary_matvec_lut(p, rows, n, x, out, np.zeros(LUT, np.int32)) == ref).all()
        assert abs(int(ref[0])) == 64 * abs(fill)
    # the largest n the spec allows for int16 inputs: |acc| < 2^31
    n = 65535
    x = np.full(n, -32768, np.int16)
    p = packed_of(np.ones((1, n), np.int8))
    out = np.zeros(1, np.int32)
    nat.ternary_matvec_lut(p, 1, n, x, out, np.zeros(LUT, np.int32))
    assert out[0] == -32768 * 65535
    nat.ternary_matvec(p, 1, n, x, out)
    assert out[0] == -32768 * 65535


def test_invalid_trit_bytes_read_as_zeros_in_both_forms(nat, rng):
    rows, n = 5, 20
    p = packed_of(rand_trits(rng, rows, n))
    p[[0, 7, 19]] = [243, 250, 255]
    x = rng.integers(-32768, 32768, n).astype(np.int16)
    a = nat.ternary_matvec(p, rows, n, x, np.zeros(rows, np.int32))
    b = nat.ternary_matvec_lut(p, rows, n, x, np.zeros(rows, np.int32), np.zeros(LUT, np.int32))
    fixed = p.copy()
    fixed[[0, 7, 19]] = 121
    assert (a == b).all()
    assert (a == I.ternary_matvec(fixed.tobytes(), rows, n, x)).all()


# ---------------------------------------------------------------- §1-2, §6, mixture: limits

def test_rshift_round_at_the_int32_edges(nat):
    assert nat.rshift_round(-5, 1) == -2 and nat.rshift_round(5, 1) == 3
    assert nat.rshift_round(-(2**31), 31) == -1 and nat.rshift_round(2**31 - 1, 31) == 1


@pytest.mark.parametrize("n_pad", [2, 16, 256])
def test_butterfly_out_of_spec_tables_saturate_as_the_reference(nat, rng, n_pad):
    # |c| + |s| up to 32768 (no phase gives these): still the reference's saturating result
    L = n_pad.bit_length() - 1
    cos = rng.choice(np.array([-16384, 16384, 12000, -12000]), L * (n_pad // 2)).astype(np.int16)
    sin = rng.choice(np.array([-16384, 16384, 0, 9000]), L * (n_pad // 2)).astype(np.int16)
    x = rng.integers(-32768, 32768, n_pad).astype(np.int16)
    ref = I.butterfly_q14(x, cos.reshape(L, -1), sin.reshape(L, -1))
    assert (nat.butterfly(x.copy(), cos, sin, L, n_pad) == ref).all()


def test_mix_refuses_gates_over_one(nat):
    with pytest.raises(ValueError, match="sum"):
        nat.mix(np.zeros(4, np.int16), np.array([32768, 100], np.uint16), np.zeros(2, np.int16))
    with pytest.raises(ValueError):
        nat.mix(np.zeros(5, np.int16), np.array([16384, 16384], np.uint16), np.zeros(2, np.int16))


def test_sincos_all_phases_and_rotation_bound(nat):
    ph = np.arange(65536, dtype=np.uint16)
    c, s = np.zeros(65536, np.int16), np.zeros(65536, np.int16)
    nat.sincos(ph, c, s)
    rc, rs = I.sincos_q14(ph)
    assert (c == rc).all() and (s == rs).all()
    # the bound the expert kernel's unchecked stages rely on (expert.c)
    assert int((np.abs(c.astype(np.int64)) + np.abs(s.astype(np.int64))).max()) <= 23171
    rot = np.zeros(2 * 65536, np.int32)
    nat.rot_expand(ph, rot)
    assert (rot[0::2] == c).all() and (rot[1::2] == s).all()


# ---------------------------------------------------------------- wrong calls

def test_backend_functions_refuse_wrong_calls(nat):
    cases = [
        (ValueError, lambda: nat.matvec8(np.zeros(10, np.int8), 5, 6, np.zeros(12, np.int8), 2, np.zeros(2, np.int32))),
        (ValueError, lambda: nat.matvec8(np.zeros(10, np.int8), 0, 6, np.zeros(11, np.int8), 2, np.zeros(2, np.int32))),
        (ValueError, lambda: nat.matvec8(np.zeros(10, np.int8), 0, 6, np.zeros(12, np.int8), 2, np.zeros(1, np.int32))),
        (TypeError, lambda: nat.matvec8(np.zeros(10, np.uint8), 0, 6, np.zeros(12, np.int8), 2, np.zeros(2, np.int32))),
        (ValueError, lambda: nat.ternary_rows(np.full(4, 121, np.uint8), 1, 2, 7, np.zeros(7, np.int8), np.zeros(2, np.int32))),
        (ValueError, lambda: nat.ternary_rows(np.full(4, 121, np.uint8), 0, 2, 7, np.zeros(6, np.int8), np.zeros(2, np.int32))),
        (ValueError, lambda: nat.ternary_rows(np.full(4, 121, np.uint8), -1, 2, 7, np.zeros(7, np.int8), np.zeros(2, np.int32))),
        (ValueError, lambda: nat.ternary_rows(np.array([121, 121, 243, 121], np.uint8), 0, 2, 7, np.zeros(7, np.int8), np.zeros(2, np.int32))),
        (ValueError, lambda: nat.butterfly_ph(np.zeros(8, np.int16), np.zeros(23, np.uint8), 0, 3, 8)),
        (ValueError, lambda: nat.butterfly_ph(np.zeros(8, np.int16), np.zeros(24, np.uint8), 1, 3, 8)),
        (ValueError, lambda: nat.attn_scores(np.zeros(100, np.int8), 90, 0, 10, 9, 11, np.zeros(9, np.int32))),
        (ValueError, lambda: nat.attn_scores(np.zeros(100, np.int8), 0, 0, 10, 10, 11, np.zeros(10, np.int32))),
        (ValueError, lambda: nat.attn_pv(np.full(4, 2**23, np.int32), 4, np.zeros(100, np.int8), 0, 10, 5, np.zeros(5, np.int32))),
        (ValueError, lambda: nat.attn_pv(np.full(4, -1, np.int32), 4, np.zeros(100, np.int8), 0, 10, 5, np.zeros(5, np.int32))),
        (ValueError, lambda: nat.attn_pv(np.full(4, 1, np.int32), 4, np.zeros(100, np.int8), 0, 10, 5, np.zeros(4, np.int32))),
    ]
    for i, (exc, call) in enumerate(cases):
        with pytest.raises(exc):
            call()
            print("case", i, "was accepted")



def test_wrong_calls_are_refused_with_clear_errors(nat, rng):
    p = packed_of(rand_trits(rng, 4, 12))  # 4 rows x 3 bytes
    x8, x16 = np.zeros(12, np.int8), np.zeros(12, np.int16)
    acc4 = np.zeros(4, np.int32)
    tab = np.zeros(LUT, np.int32)
    cases = [
        (TypeError, lambda: nat.ternary_matvec(p.astype(np.int16), 4, 12, x8, acc4)),
        (ValueError, lambda: nat.ternary_matvec(p[:-1], 4, 12, x8, acc4)),
        (ValueError, lambda: nat.ternary_matvec(p, 5, 12, x8, acc4)),
        (ValueError, lambda: nat.ternary_matvec(p, 4, 11, x8, acc4)),
        (ValueError, lambda: nat.ternary_matvec(p, 4, 0, x8, acc4)),
        (ValueError, lambda: nat.ternary_matvec(p, 0, 12, x8, acc4)),
        (ValueError, lambda: nat.ternary_matvec(p, 4, 12, x8[:-1], acc4)),
        (TypeError, lambda: nat.ternary_matvec(p, 4, 12, x8.astype(np.int32), acc4)),
        (ValueError, lambda: nat.ternary_matvec(p, 4, 12, x16, acc4[:-1])),
        (TypeError, lambda: nat.ternary_matvec(p, 4, 12, x16, acc4.astype(np.int16))),
        (TypeError, lambda: nat.ternary_matvec(p, 4, 12, x16, None)),
        (ValueError, lambda: nat.ternary_matvec_lut(p, 4, 12, x16, acc4, tab[:-1])),
        (TypeError, lambda: nat.ternary_matvec_lut(p, 4, 12, x16, acc4, None)),
        (ValueError, lambda: nat.unpack_trits(p, 4, 12, np.zeros(47, np.int8))),
        (ValueError, lambda: nat.ternary_linear(p, 4, 12, x8, 40000, 20, None, np.zeros(4, np.int8))),
        (ValueError, lambda: nat.ternary_linear(p, 4, 12, x8, 20000, 0, None, np.zeros(4, np.int8))),
        (ValueError, lambda: nat.ternary_linear(p, 4, 12, x8, 20000, 63, None, np.zeros(4, np.int8))),
        (ValueError, lambda: nat.ternary_linear(p, 4, 12, x8, np.full(3, 20000, np.int16),
                                                np.full(4, 20, np.uint8), None, np.zeros(4, np.int8))),
        (ValueError, lambda: nat.ternary_linear(p, 4, 12, x8, np.full(4, -1, np.int16),
                                                np.full(4, 20, np.uint8), None, np.zeros(4, np.int8))),
        (ValueError, lambda: nat.ternary_linear(p, 4, 12, x8, np.full(4, 1, np.int16),
                                                np.full(4, 0, np.uint8), None, np.zeros(4, np.int8))),
        (ValueError, lambda: nat.ternary_linear(p, 4, 12, x8, 20000, 20, np.zeros(3, np.int32),
                                                np.zeros(4, np.int8))),
        (TypeError, lambda: nat.ternary_linear(p, 4, 12, x8, 20000, 20, None, np.zeros(4, np.int32))),
        (ValueError, lambda: nat.requant(2**31, 20000, 20)),
        (ValueError, lambda: nat.requant(1, 20000, 20, -40000, 0)),
        (ValueError, lambda: nat.rshift_round(1, 0)),
        (ValueError, lambda: nat.requant_into(acc4, 20000, 20, np.zeros(3, np.int8))),
        (ValueError, lambda: nat.butterfly(np.zeros(8, np.int16), np.zeros(11, np.int16),
                                           np.zeros(12, np.int16), 3, 8)),
        (ValueError, lambda: nat.butterfly(np.zeros(8, np.int16), np.zeros(12, np.int16),
                                           np.zeros(12, np.int16), 4, 8)),
        (ValueError, lambda: nat.butterfly(np.zeros(8, np.int16), np.zeros(12, np.int16),
                                           np.zeros(12, np.int16), 3, 6)),
        (ValueError, lambda: nat.butterfly(np.zeros(7, np.int16), np.zeros(12, np.int16),
                                           np.zeros(12, np.int16), 3, 8)),
        (TypeError, lambda: nat.butterfly(np.zeros(8, np.int32), np.zeros(12, np.int16),
                                          np.zeros(12, np.int16), 3, 8)),
        (ValueError, lambda: nat.butterfly_stage(np.zeros(8, np.int16), np.zeros(12, np.int16),
                                                 np.zeros(12, np.int16), 3, 8)),
        (ValueError, lambda: nat.butterfly_phase(np.zeros(8, np.int16), np.zeros(11, np.uint16), 3, 8)),
        (TypeError, lambda: nat.sincos(np.zeros(4, np.int16), np.zeros(4, np.int16), np.zeros(4, np.int16))),
        (ValueError, lambda: nat.rot_expand(np.zeros(4, np.uint16), np.zeros(7, np.int32))),
        (ValueError, lambda: nat.linear(x8, np.zeros(47, np.int8), None, 20000, 20, acc4.astype(np.int8))),
        (ValueError, lambda: nat.linear_acc(x8, np.zeros(48, np.int8), np.zeros(5, np.int32), acc4)),
        (ValueError, lambda: nat.layernorm(x8, np.zeros(12, np.int32), np.zeros(11, np.int32), 10, 0,
                                           np.zeros(12, np.int8))),
        (ValueError, lambda: nat.layernorm(x8, np.full(12, 40000, np.int32), np.zeros(12, np.int32), 10, 0,
                                           np.zeros(12, np.int8))),
        (ValueError, lambda: nat.layernorm(x8, np.zeros(12, np.int32), np.zeros(12, np.int32), 31, 0,
                                           np.zeros(12, np.int8))),
        (ValueError, lambda: nat.layernorm(x8, np.zeros(12, np.int32), np.zeros(12, np.int32), 10, 2**40,
                                           np.zeros(12, np.int8))),
        (ValueError, lambda: nat.layernorm(np.zeros(1025, np.int8), np.zeros(1025, np.int32),
                                           np.zeros(1025, np.int32), 10, 0, np.zeros(1025, np.int8))),
        (ValueError, lambda: nat.softmax(np.array([2**30], np.int32), 20000, 20, np.zeros(1, np.uint16))),
        (ValueError, lambda: nat.softmax(np.zeros(3, np.int32), 20000, 20, np.zeros(2, np.uint16))),
        (TypeError, lambda: nat.softmax(np.zeros(3, np.int32), 20000, 20, np.zeros(3, np.int16))),
        (ValueError, lambda: nat.attention(np.zeros(3 * 12 * 2 - 1, np.int8), 2, 3, 20000, 20, 20000, 20,
                                           np.zeros(24, np.int8), np.zeros(3, np.int32))),
        (ValueError, lambda: nat.attention(np.zeros(3 * 12 * 2, np.int8), 2, 5, 20000, 20, 20000, 20,
                                           np.zeros(24, np.int8), np.zeros(3, np.int32))),
        (ValueError, lambda: nat.attention(np.zeros(3 * 12 * 2, np.int8), 2, 3, 20000, 20, 20000, 20,
                                           np.zeros(24, np.int8), np.zeros(2, np.int32))),
        (TypeError, lambda: nat.relu(np.zeros(3, np.uint16))),
        (TypeError, lambda: nat.residual_add(x8, x16, 1, 1, 1, x8.copy())),
        (ValueError, lambda: nat.mean_pool(np.zeros(10, np.int8), 3, 20000, 20, np.zeros(3, np.int8))),
        (ValueError, lambda: nat.topk(acc4, 5, np.zeros(5, np.uint16))),
        (ValueError, lambda: nat.topk(acc4, 2, np.zeros(3, np.uint16))),
    ]
    for i, (exc, call) in enumerate(cases):
        with pytest.raises(exc):
            call()
            print("case", i, "was accepted")


def test_expert_wrong_calls(nat, rng):
    dim, ffn, L = 64, 256, 4
    x = np.zeros(dim, np.int8)
    rin, rout = np.zeros(L * 64, np.int32), np.zeros(L * 256, np.int32)
    p = packed_of(np.zeros((ffn, dim), np.int8))
    out = np.zeros(ffn, np.int16)
    work, tab = np.zeros(320, np.int32), np.zeros(LUT, np.int32)
    nat.expert(x, 5, rin, rout, L, p, 20000, 20, out, work, tab)
    for exc, kw in [(ValueError, dict(P=8)), (ValueError, dict(n_stages=7)),
                    (ValueError, dict(n_stages=0)), (ValueError, dict(rin=rin[:-2])),
                    (ValueError, dict(rout=np.zeros(L * 256 + 2, np.int32))),
                    (ValueError, dict(p=p[:-1])), (ValueError, dict(work=work[:-1])),
                    (ValueError, dict(tab=tab[:-1])), (TypeError, dict(x=x.astype(np.int16))),
                    (TypeError, dict(out=out.astype(np.int32))), (ValueError, dict(M=-5))]:
        a = dict(x=x, P=5, rin=rin, rout=rout, n_stages=L, p=p, M=20000, shift=20, out=out,
                 work=work, tab=tab)
        a.update(kw)
        with pytest.raises(exc):
            nat.expert(a["x"], a["P"], a["rin"], a["rout"], a["n_stages"], a["p"], a["M"],
                       a["shift"], a["out"], a["work"], a["tab"])


def test_misaligned_buffers_are_refused(nat):
    raw = BC._libc.malloc(64)
    try:
        for code, fn in ((ord("i"), "relu"), (ord("h"), "relu")):
            buf = BC.Buf(raw + 1, 8, code)
            f = getattr(nat.lib, "bvit_api_" + fn)
            f.restype = ctypes.c_char_p
            msg = f(ctypes.byref(buf)).decode()
            assert msg.startswith("V") and "aligned" in msg
        buf = BC.Buf(raw, 7, ord("i"))
        msg = nat.lib.bvit_api_relu(ctypes.byref(buf))
        assert b"whole number" in ctypes.c_char_p(msg).value
    finally:
        BC._libc.free(raw)


# ---------------------------------------------------------------- sanitizers

@pytest.mark.skipif(SANITIZED, reason="this is the sanitized run")
def test_everything_again_under_asan_and_ubsan(tmp_path_factory):
    """Re-run this file and the whole-layer tests (test_native_layers.py) against the
    ASan+UBSan build (LD_PRELOAD'ed into a child Python)."""
    libdir = tmp_path_factory.mktemp("native-san")
    try:
        BC.build_library(libdir, sanitize=True)
        preload = BC.sanitizer_preload()
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.fail(f"no sanitizer toolchain (gcc's libasan/libubsan; run scripts/setup.sh): {e}")
    env = dict(os.environ, BVIT_NATIVE_SANITIZE="1", BVIT_NATIVE_LIBDIR=str(libdir),
               LD_PRELOAD=preload,
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "-k", "not asan", __file__,
                           str(Path(__file__).with_name("test_native_layers.py"))], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert "passed" in proc.stdout and "error" not in proc.stdout.lower().split("passed")[-1], tail
