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


# ---------------------------------------------------------------- §5 ternary matvec

NS = [1, 2, 3, 4, 5, 6, 7, 13, 64, 65, 66, 100, 130, 256, 1000, 1024]


def _inputs(rng, n, dtype):
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, n).astype(dtype)
    x[: min(n, 2)] = [info.min, info.max][: min(n, 2)]
    return x


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_ternary_matvec_plain_and_lut_equal_the_reference(nat, rng, n, dtype):
    rows = 7
    t = rand_trits(rng, rows, n)
    t[0] = 0
    t[1] = 1
    t[2] = -1
    p = packed_of(t)
    x = _inputs(rng, n, dtype)
    ref = I.ternary_matvec(p.tobytes(), rows, n, x)
    assert (I.ternary_matvec_lut(p.tobytes(), rows, n, x) == ref).all()
    out = np.zeros(rows, np.int32)
    assert (nat.ternary_matvec(p, rows, n, x, out) == ref).all()
    out[:] = 0
    assert (nat.ternary_matvec_lut(p, rows, n, x, out, np.zeros(LUT, np.int32)) == ref).all()


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
    x = _inputs(rng, n, np.int16)
    a = nat.ternary_matvec(p, rows, n, x, np.zeros(rows, np.int32))
    b = nat.ternary_matvec_lut(p, rows, n, x, np.zeros(rows, np.int32), np.zeros(LUT, np.int32))
    fixed = p.copy()
    fixed[[0, 7, 19]] = 121
    assert (a == b).all()
    assert (a == I.ternary_matvec(fixed.tobytes(), rows, n, x)).all()


def _mult(rng, rows, per_row, small=False):
    if per_row:
        M = rng.integers(16384, 32768, rows).astype(np.int16)
        shift = rng.integers(8 if small else 16, 30, rows).astype(np.uint8)
        M[0] = 0
        shift[0] = 1
        return M, shift
    return int(rng.integers(16384, 32768)), int(rng.integers(16, 28))


@pytest.mark.parametrize("n", [1, 7, 64, 66, 256])
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("out_dtype", [np.int8, np.int16])
def test_ternary_linear(nat, rng, n, per_row, out_dtype):
    rows = 9
    p = packed_of(rand_trits(rng, rows, n))
    x = _inputs(rng, n, np.int16)
    M, shift = _mult(rng, rows, per_row, small=True)
    bias = rng.integers(-2**20, 2**20, rows).astype(np.int32)
    bits = 8 if out_dtype == np.int8 else 16
    for b in (None, bias):
        ref = I.ternary_linear(p.tobytes(), rows, n, x, M, shift, b, bits)
        for table, acc in ((None, None), (np.zeros(LUT, np.int32), np.zeros(rows, np.int32))):
            out = np.zeros(rows, out_dtype)
            nat.ternary_linear(p, rows, n, x, M, shift, b, out, table, acc)
            assert (out == ref).all()


# ---------------------------------------------------------------- §1-2 requantisation

def test_requant_scalar_matches_reference(nat, rng):
    accs = [0, 1, -1, 2**15, -2**15, 2**16 - 1, -(2**16) + 1, 2**16, -(2**16), 2**29, -2**29,
            2**31 - 1, -2**31] + rng.integers(-2**31, 2**31, 300).tolist()
    Ms = [0, 1, 16383, 16384, 20000, 32767]
    for shift in list(range(1, 63)):
        for M in Ms:
            for bits, (lo, hi) in ((8, (-128, 127)), (16, (-32768, 32767))):
                a = np.array(accs[:40] if shift % 7 else accs, np.int64)
                ref = I.requant(a, M, shift, bits)
                got = [nat.requant(int(v), M, shift, lo, hi) for v in a]
                assert got == ref.tolist(), (M, shift, bits)
    assert nat.rshift_round(-5, 1) == -2 and nat.rshift_round(5, 1) == 3
    assert nat.rshift_round(-(2**31), 31) == -1 and nat.rshift_round(2**31 - 1, 31) == 1


def test_requant_vector(nat, rng):
    acc = rng.integers(-2**31, 2**31, 300).astype(np.int32)
    for per_row in (False, True):
        M, shift = _mult(rng, 300, per_row, small=True)
        for dtype, bits in ((np.int8, 8), (np.int16, 16)):
            out = np.zeros(300, dtype)
            assert (nat.requant_into(acc, M, shift, out) == I.requant(acc, M, shift, bits)).all()


# ---------------------------------------------------------------- §6 butterfly

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


@pytest.mark.parametrize("n_pad", [2, 4, 8, 16, 32, 64, 128, 256, 1024])
def test_butterfly_equals_reference(nat, rng, n_pad):
    L = n_pad.bit_length() - 1
    for n_stages in sorted({0, 1, min(4, L), L}):
        half = n_pad // 2
        ph = rng.integers(0, 65536, n_stages * half).astype(np.uint16)
        cos, sin = I.sincos_q14(ph)
        x = rng.integers(-32768, 32768, n_pad).astype(np.int16)  # saturates sometimes
        x[:2] = [-32768, 32767]
        ref = I.butterfly_q14(x, cos.reshape(max(n_stages, 0), half), sin.reshape(max(n_stages, 0), half)) \
            if n_stages else x
        v = x.copy()
        assert (nat.butterfly(v, cos, sin, n_stages, n_pad) == ref).all()
        v = x.copy()
        assert (nat.butterfly_phase(v, ph, n_stages, n_pad) == ref).all()
        v = x.copy()
        for l in range(n_stages):
            nat.butterfly_stage(v, cos, sin, l, n_pad)
        assert (v == ref).all()
    # out-of-spec tables (|c| + |s| up to 32768): still the reference's saturating result
    cos = rng.choice(np.array([-16384, 16384, 12000, -12000]), L * (n_pad // 2)).astype(np.int16)
    sin = rng.choice(np.array([-16384, 16384, 0, 9000]), L * (n_pad // 2)).astype(np.int16)
    x = rng.integers(-32768, 32768, n_pad).astype(np.int16)
    ref = I.butterfly_q14(x, cos.reshape(L, -1), sin.reshape(L, -1))
    assert (nat.butterfly(x.copy(), cos, sin, L, n_pad) == ref).all()


# ---------------------------------------------------------------- §15 expert

def _expert_case(nat, rng, dim, ffn, n_stages, big=False, P=5):
    pin, pout = I.padded_size(dim), I.padded_size(ffn)
    ph_in = (rng.normal(0, 0.5, n_stages * pin // 2) * 65536 / (2 * np.pi)).astype(np.int64) & 0xFFFF
    ph_out = (rng.normal(0, 0.5, n_stages * pout // 2) * 65536 / (2 * np.pi)).astype(np.int64) & 0xFFFF
    ph_in, ph_out = ph_in.astype(np.uint16), ph_out.astype(np.uint16)
    t = rand_trits(rng, ffn, dim)
    p = packed_of(t)
    x = rng.integers(-128, 128, dim).astype(np.int8)
    x[:2] = [-128, 127]
    M = rng.integers(16384, 32768, ffn).astype(np.int16)
    shift = rng.integers(14 if big else 18, 22 if big else 26, ffn).astype(np.uint8)
    # reference: spec §15 step 4
    ci, si = I.sincos_q14(ph_in)
    co, so = I.sincos_q14(ph_out)
    u = I.butterfly_q14(x.astype(np.int64) * (1 << P), ci.reshape(n_stages, -1), si.reshape(n_stages, -1))
    acc = I.ternary_matvec(p.tobytes(), ffn, dim, u)
    h = I.requant(acc, M, shift, 16)
    h = I.butterfly_q14(h, co.reshape(n_stages, -1), so.reshape(n_stages, -1))
    ref = I.relu(h)
    rin, rout = np.zeros(2 * len(ph_in), np.int32), np.zeros(2 * len(ph_out), np.int32)
    nat.rot_expand(ph_in, rin)
    nat.rot_expand(ph_out, rout)
    out = np.zeros(ffn, np.int16)
    nat.expert(x, P, rin, rout, n_stages, p, M, shift, out, np.zeros(pin + pout, np.int32),
               np.zeros(LUT, np.int32))
    assert (out == ref).all()
    return ref


@pytest.mark.parametrize("dim,ffn,n_stages", [(64, 256, 4), (5, 7, 2), (2, 2, 1), (100, 30, 3),
                                              (64, 256, 6), (130, 64, 5)])
def test_expert_equals_the_composed_reference(nat, rng, dim, ffn, n_stages):
    _expert_case(nat, rng, dim, ffn, n_stages)
    ref = _expert_case(nat, rng, dim, ffn, n_stages, big=True)  # saturating h: checked stages
    if dim == 64:
        assert (ref == 32767).any() or (np.abs(ref) > 8192).any()


# ---------------------------------------------------------------- §7 linear

@pytest.mark.parametrize("n,out_n", [(1, 1), (3, 5), (4, 4), (16, 64), (64, 192), (64, 256),
                                     (255, 3), (256, 10), (260, 7), (1024, 3)])
def test_linear_equals_reference(nat, rng, n, out_n):
    x = rng.integers(-128, 128, n).astype(np.int8)
    w = rng.integers(-127, 128, (out_n, n)).astype(np.int8)
    w[0] = -128
    x[0] = -128
    bias = rng.integers(-2**24, 2**24, out_n).astype(np.int32)
    acc = np.zeros(out_n, np.int32)
    for b in (None, bias):
        assert (nat.linear_acc(x, w, b, acc) == I.linear_acc(x, w, b)).all()
        for per_row in (False, True):
            M, shift = _mult(rng, out_n, per_row)
            for dtype, bits in ((np.int8, 8), (np.int16, 16)):
                out = np.zeros(out_n, dtype)
                nat.linear(x, w, b, M, shift, out)
                assert (out == I.linear(x, w, b, M, shift, bits)).all()


# ---------------------------------------------------------------- §8 LayerNorm

@pytest.mark.parametrize("d", [1, 2, 3, 8, 64, 100, 256, 1024])
@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_layernorm_equals_reference(nat, rng, d, dtype):
    gamma = rng.normal(1, 0.5, d)
    beta = rng.normal(0, 0.5, d)
    info = np.iinfo(dtype)
    for trial in range(4):
        scale_x = float(rng.choice([0.01, 0.1, 1.0]))
        p = I.layernorm_params(gamma, beta, 1e-5, scale_x, float(rng.choice([0.02, 0.05])))
        if trial == 0:
            x = np.full(d, 7, dtype)          # constant: V = E only
        elif trial == 1:
            x = np.zeros(d, dtype)
            x[0] = info.max                    # one spike
        else:
            x = rng.integers(info.min, info.max + 1, d).astype(dtype)
        ref = I.layernorm(x, p)
        out = np.zeros(d, np.int8)
        nat.layernorm(x, p.G.astype(np.int32), p.B.astype(np.int32), p.shift, int(p.E), out)
        assert (out == ref).all(), trial
    # E = 0 and a constant input: V = 0, the outputs are the rounded B alone
    p = I.layernorm_params(gamma, beta, 0.0, 1.0, 0.05)
    x = np.full(d, -3, dtype)
    out = np.zeros(d, np.int8)
    nat.layernorm(x, p.G.astype(np.int32), p.B.astype(np.int32), p.shift, 0, out)
    assert (out == I.layernorm(x, p)).all()


# ---------------------------------------------------------------- §9 softmax, §12 attention

@pytest.mark.parametrize("n", [1, 2, 3, 49, 64, 300, 2000])
def test_softmax_equals_reference(nat, rng, n):
    for scale in (1e-4, 1e-2, 0.3, 5.0):
        M, shift = I.softmax_multiplier(scale)
        L = rng.integers(-2**30, 2**30, n).astype(np.int32) if scale < 1e-3 else \
            rng.integers(-2000, 2000, n).astype(np.int32)
        L[0] = L.max()
        out = np.zeros(n, np.uint16)
        assert (nat.softmax(L, M, shift, out) == I.softmax(L, M, shift)).all()
    L = np.full(n, -(2**30), np.int32)
    L[-1] = 2**30 - 1
    M, shift = I.softmax_multiplier(1e-6)
    assert (nat.softmax(L, M, shift, np.zeros(n, np.uint16)) == I.softmax(L, M, shift)).all()
    L = np.full(n, 5, np.int32)
    out = nat.softmax(L, *I.softmax_multiplier(0.1), np.zeros(n, np.uint16))
    assert len(set(out.tolist())) == 1


@pytest.mark.parametrize("N,dim,heads", [(1, 4, 1), (49, 64, 4), (10, 12, 3)])
def test_attention_equals_reference(nat, rng, N, dim, heads):
    qkv = rng.integers(-128, 128, (N, 3 * dim)).astype(np.int8)
    q, k, v = qkv[:, :dim], qkv[:, dim:2 * dim], qkv[:, 2 * dim:]
    hd = dim // heads
    sm = I.softmax_multiplier(0.01 * 0.01 / math.sqrt(hd))
    om = I.quantize_multiplier(0.02 * 2**-15 / 0.03)
    ref = I.attention(q, k, v, heads, sm, om)
    out = np.zeros(N * dim, np.int8)
    work = np.zeros(N + (N + 1) // 2, np.int32)
    nat.attention(qkv, N, heads, sm[0], sm[1], om[0], om[1], out, work)
    assert (out.reshape(N, dim) == ref).all()
    sM = np.array([sm[0]] * heads, np.int16)
    sS = np.array([sm[1]] * heads, np.uint8)
    oM = np.array([om[0]] * heads, np.int16)
    oS = np.array([om[1]] * heads, np.uint8)
    out[:] = 0
    nat.attention(qkv, N, heads, sM, sS, oM, oS, out, work)
    assert (out.reshape(N, dim) == ref).all()


# ---------------------------------------------------------------- §10, §11.1, §13

def test_relu_residual_pool_topk(nat, rng):
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        v = rng.integers(info.min, info.max, 100, dtype=np.int64).astype(dtype)
        ref = I.relu(v)
        assert (nat.relu(v) == ref).all()
    for dtype in (np.int8, np.int16):
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max + 1, 200).astype(dtype)
        b = rng.integers(info.min, info.max + 1, 200).astype(dtype)
        a[:2], b[:2] = info.min, info.max
        for sa, sb, sz in ((0.1, 0.05, 0.12), (1.0, 1.0, 0.5), (1e-3, 1e-9, 1e-3)):
            Ma, Mb, sh = I.residual_params(sa, sb, sz)
            for odt, bits in ((np.int8, 8), (np.int16, 16)):
                out = np.zeros(200, odt)
                nat.residual_add(a, b, Ma, Mb, sh, out)
                assert (out == I.residual_add(a, b, Ma, Mb, sh, bits)).all()
        x = rng.integers(info.min, info.max + 1, (49, 64)).astype(dtype)
        M, sh = I.quantize_multiplier(1 / 49 * 0.7)
        for odt, bits in ((np.int8, 8), (np.int16, 16)):
            out = np.zeros(64, odt)
            assert (nat.mean_pool(x, 49, M, sh, out) == I.mean_pool(x, M, sh, bits)).all()
    L = np.array([5, 7, 7, 1], np.int32)
    assert nat.topk(L, 2, np.zeros(2, np.uint16)).tolist() == [1, 2]
    L = rng.integers(-5, 5, 64).astype(np.int32)
    for k in (1, 2, 8, 64):
        assert nat.topk(L, k, np.zeros(k, np.uint16)).tolist() == I.topk(L, k).tolist()


def test_mix(nat, rng):
    for k, f in ((1, 5), (2, 256), (8, 17)):
        g = I.softmax(rng.integers(-500, 500, k).astype(np.int32), *I.softmax_multiplier(0.01))
        h = rng.integers(-32768, 32768, (k, f)).astype(np.int16)
        h[:, 0] = 32767
        h[:, 1] = -32768
        ref = I.saturate(I.rshift_round((g.astype(np.int64)[:, None] * h).sum(0), 15), 16)
        out = np.zeros(f, np.int16)
        assert (nat.mix(h, g, out) == ref).all()
    with pytest.raises(ValueError, match="sum"):
        nat.mix(np.zeros(4, np.int16), np.array([32768, 100], np.uint16), np.zeros(2, np.int16))
    with pytest.raises(ValueError):
        nat.mix(np.zeros(5, np.int16), np.array([16384, 16384], np.uint16), np.zeros(2, np.int16))


# ---------------------------------------------------------------- the board backend

def _device_kernels():
    from beds.micropython import device_module
    return device_module("bvit.kernels")


def _stream(rng, t0, rows, n):
    """A trit stream of rows*n trits from trit t0 (random trits before and after)."""
    total = t0 + rows * n
    t = rng.integers(-1, 2, total).astype(np.int8)
    nbytes = -(-total // 5)
    return np.frombuffer(I.pack_trits(np.concatenate([t, np.zeros(nbytes * 5 - total, np.int8)])[None, :]),
                         np.uint8).copy(), t[t0:].reshape(rows, n)


def test_backend_functions_equal_the_device_kernels(nat, rng):
    K = _device_kernels()
    from array import array
    for n, rows, x0 in ((0, 3, 0), (1, 1, 0), (16, 5, 3), (63, 7, 1), (64, 64, 64)):
        x = rng.integers(-128, 128, x0 + n + 2).astype(np.int8)
        w = rng.integers(-128, 128, rows * n + 3).astype(np.int8)
        out = np.zeros(rows + 1, np.int32)
        nat.matvec8(x, x0, n, w, rows, out)
        ref = K.matvec8(array("b", x.tobytes()), x0, n, array("b", w.tobytes()), rows, [0] * (rows + 1))
        assert out.tolist() == ref
    for t0 in (0, 1, 3, 7):
        for rows, n in ((1, 1), (3, 4), (9, 13), (7, 64), (5, 66), (4, 256)):
            packed, trits = _stream(rng, t0, rows, n)
            for dtype in (np.int8, np.int16):
                x = _inputs(rng, n, dtype)
                out = np.zeros(rows, np.int32)
                nat.ternary_stream(packed, t0, rows, n, x, out)
                assert (out == trits.astype(np.int64) @ x.astype(np.int64)).all()
                ref = K.ternary_stream(bytes(packed), t0, rows, n, x.tolist(), [0] * rows)
                assert out.tolist() == ref
                sgn = packed.astype(np.int8)          # a signed buffer: bytes read as 0..255
                assert nat.ternary_stream(sgn, t0, rows, n, x, np.zeros(rows, np.int32)).tolist() == ref
            rows_out = np.zeros(rows * -(-n // 5), np.uint8)
            nat.stream_to_rows(packed, t0, rows, n, rows_out)
            assert rows_out.tobytes() == I.pack_trits(trits)
    bad, _ = _stream(rng, 2, 3, 10)
    bad[3] = 250
    with pytest.raises(ValueError):
        nat.ternary_stream(bad, 2, 3, 10, np.zeros(10, np.int16), np.zeros(3, np.int32))
    with pytest.raises(ValueError):
        K.ternary_stream(bytes(bad), 2, 3, 10, [0] * 10, [0] * 3)
    for n_pad, nl in ((16, 3), (64, 4), (256, 4), (2, 1)):
        for b0 in (0, 1, 5):
            ph = rng.integers(0, 65536, nl * n_pad // 2).astype(np.uint16)
            raw = bytes(rng.integers(0, 256, b0).astype(np.uint8)) + ph.astype("<u2").tobytes() + b"\x07"
            v = rng.integers(-32768, 32768, n_pad).astype(np.int16)
            ref = K.butterfly_ph(array("h", v.tobytes()), raw, b0, nl, n_pad)
            got = nat.butterfly_ph(v.copy(), np.frombuffer(raw, np.uint8), b0, nl, n_pad)
            assert got.tolist() == list(ref)
    N, dim, heads = 49, 64, 4
    hd, stride = dim // heads, 2 * dim
    kv = rng.integers(-128, 128, N * stride + dim).astype(np.int8)
    kvb = array("b", kv.tobytes())
    q0 = N * stride
    for h in range(heads):
        out = np.zeros(N, np.int32)
        nat.attn_scores(kv, q0 + h * hd, h * hd, stride, N, hd, out)
        ref = [0] * N
        K.attn_scores(kvb, q0 + h * hd, h * hd, stride, N, hd, ref)
        assert out.tolist() == ref
        p = I.softmax(out, *I.softmax_multiplier(0.001)).astype(np.int32)
        acc = np.zeros(hd, np.int32)
        nat.attn_pv(p, N, kv, dim + h * hd, stride, hd, acc)
        ref = [0] * hd
        K.attn_pv(p.tolist(), N, kvb, dim + h * hd, stride, hd, ref)
        assert acc.tolist() == ref
    cases = [
        (ValueError, lambda: nat.matvec8(np.zeros(10, np.int8), 5, 6, np.zeros(12, np.int8), 2, np.zeros(2, np.int32))),
        (ValueError, lambda: nat.matvec8(np.zeros(10, np.int8), 0, 6, np.zeros(11, np.int8), 2, np.zeros(2, np.int32))),
        (ValueError, lambda: nat.matvec8(np.zeros(10, np.int8), 0, 6, np.zeros(12, np.int8), 2, np.zeros(1, np.int32))),
        (TypeError, lambda: nat.matvec8(np.zeros(10, np.uint8), 0, 6, np.zeros(12, np.int8), 2, np.zeros(2, np.int32))),
        (ValueError, lambda: nat.ternary_stream(np.full(2, 121, np.uint8), 1, 2, 7, np.zeros(7, np.int8), np.zeros(2, np.int32))),
        (ValueError, lambda: nat.ternary_stream(np.full(4, 121, np.uint8), 0, 2, 7, np.zeros(6, np.int8), np.zeros(2, np.int32))),
        (ValueError, lambda: nat.ternary_stream(np.full(4, 121, np.uint8), -1, 2, 7, np.zeros(7, np.int8), np.zeros(2, np.int32))),
        (ValueError, lambda: nat.stream_to_rows(np.full(4, 121, np.uint8), 0, 2, 7, np.zeros(3, np.uint8))),
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


# ---------------------------------------------------------------- wrong calls

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
    """Re-run this file against the ASan+UBSan build (LD_PRELOAD'ed into a child Python)."""
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
                           "-k", "not asan", __file__], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert "passed" in proc.stdout and "error" not in proc.stdout.lower().split("passed")[-1], tail
