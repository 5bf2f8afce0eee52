"""The integer arithmetic of docs/integer-spec.md: behaviour pinned op by op.

The numpy reference (butterflyvit.intops) is checked against plain integer maths, against
float within the error bounds the spec states, and (for the spec's small-int forms)
against the board's code under CPython. The board's, the C module's and the cross-compiled
kernels are checked against this reference with the golden vectors of tests/golden.py.
"""

import math

import numpy as np
import pytest

from beds.micropython import device_module
from butterflyvit import intops as I

N = device_module("bvit.nn")
T = device_module("bvit.tables")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---------------------------------------------------------------- §1 rounding shift

def test_rshift_round_halves_go_up_for_negatives_too():
    x = np.array([5, -5, 7, -7, 4, -4, 6, -6, 1, -1, 3, -3])
    # x / 2 = 2.5, -2.5, 3.5, -3.5, 2, -2, 3, -3, 0.5, -0.5, 1.5, -1.5
    assert I.rshift_round(x, 1).tolist() == [3, -2, 4, -3, 2, -2, 3, -3, 1, 0, 2, -1]
    # x / 4: -6/4 = -1.5 -> -1, -7/4 = -1.75 -> -2, 6/4 = 1.5 -> 2
    assert I.rshift_round(np.array([-6, -7, 6, -2, 2]), 2).tolist() == [-1, -2, 2, 0, 1]
    with pytest.raises(ValueError):
        I.rshift_round(1, 0)


def test_rshift_round_is_floor_of_x_over_2s_plus_half(rng):
    x = rng.integers(-2**40, 2**40, size=5000)
    for s in (1, 3, 14, 15, 31):
        ref = [math.floor(v / 2**s + 0.5) for v in x.tolist()]  # exact: halves are representable
        assert I.rshift_round(x, s).tolist() == ref


# ---------------------------------------------------------------- §2 requantisation

def test_quantize_multiplier_range_and_precision(rng):
    for scale in 10 ** rng.uniform(-12, 4, size=2000):
        M, sh = I.quantize_multiplier(scale)
        assert 1 << 14 <= M < 1 << 15 and 1 <= sh <= 62
        assert abs(M * 2.0 ** -sh / scale - 1) <= 2 ** -15
    assert I.quantize_multiplier(0.0) == (0, 1)
    assert I.quantize_multiplier(1.0) == (16384, 14)
    assert I.quantize_multiplier(0.5) == (16384, 15)
    assert I.quantize_multiplier(1e-30) == (0, 1)       # below 2^-48: every output is 0
    for bad in (-1.0, float("nan"), float("inf"), 2.0 ** 14):
        with pytest.raises(ValueError):
            I.quantize_multiplier(bad)


def test_requant_matches_float_within_one_lsb_and_saturates(rng):
    for scale in 10 ** rng.uniform(-6, 0, size=300):
        M, sh = I.quantize_multiplier(scale)
        acc = rng.integers(-2**24, 2**24, size=200)
        acc[:2] = [I.INT32_MIN, I.INT32_MAX]
        y = I.requant(acc, M, sh).astype(float)
        ref = acc * scale
        inside = np.abs(ref) < 126
        assert np.abs(y[inside] - ref[inside]).max(initial=0) <= 0.51
        assert (y[ref >= 128] == 127).all() and (y[ref <= -129] == -128).all()
        # int16 output: 0.5 LSB rounding + relative multiplier error 2^-15
        y16 = I.requant(acc, M, sh, bits=16).astype(float)
        inside = np.abs(ref) < 32000
        err = np.abs(y16[inside] - ref[inside])
        assert (err <= 0.5 + np.abs(ref[inside]) * 2 ** -15 + 1e-9).all()


def test_requant_per_row_and_int32_check():
    acc = np.array([[100, 100], [-100, -100]])
    M = np.array([16384, 16384])
    sh = np.array([14, 16])   # scale 1 and 1/4
    assert I.requant(acc, M, sh).tolist() == [[100, 25], [-100, -25]]
    assert I.requant(np.array([2]), 16384, 16).tolist() == [1]    # 0.5 -> 1
    assert I.requant(np.array([-2]), 16384, 16).tolist() == [0]   # -0.5 -> 0
    assert I.requant(np.array([-6]), 16384, 16).tolist() == [-1]  # -1.5 -> -1
    with pytest.raises(OverflowError):
        I.requant(np.array([2**31]), 16384, 14)
    with pytest.raises(OverflowError):
        I.requant(np.array([1]), 1 << 15, 14)     # M must be < 2^15


def test_requant_small_int_form_is_identical_and_stays_small(rng):
    accs = np.concatenate([rng.integers(-2**29, 2**29, size=3000), rng.integers(-300, 300, 500),
                           [0, 1, -1, 2**16, -2**16, 2**16 - 1, -2**16 + 1, 2**29 - 1, -2**29]])
    for _ in range(200):
        scale = 10 ** rng.uniform(-9, 3.5)
        M, sh = I.quantize_multiplier(scale)
        for bits in (8, 16):
            ref = I.requant(accs, M, sh, bits).tolist()
            got = [I.requant_small_int(int(a), M, sh, bits) for a in accs]
            assert got == ref
            lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            assert [N.requant(int(a), M, sh, lo, hi) for a in accs[::7]] == ref[::7]
        if 16 <= sh <= 44:   # the intermediates of spec §2.3 stay within small ints
            h = accs >> 15
            lo15 = accs & 0x7FFF
            t = h * M + ((lo15 * M) >> 15) + (1 << (sh - 16))
            assert np.abs(h * M).max() < 2**30 and (lo15 * M).max() < 2**30
            assert np.abs(t).max() < 2**30
    assert I.requant_small_int(10**6, 0, 1) == 0 == N.requant(10**6, 0, 1)


# ---------------------------------------------------------------- §4 trits

def test_pack_unpack_round_trip_random(rng):
    for rows, n in ((1, 1), (3, 4), (5, 5), (7, 6), (16, 64), (4, 1023), (2, 1024)):
        t = rng.integers(-1, 2, size=(rows, n))
        packed = I.pack_trits(t)
        assert len(packed) == rows * -(-n // 5) == rows * I.packed_row_bytes(n)
        assert (I.unpack_trits(packed, rows, n) == t).all()
        assert np.frombuffer(packed, np.uint8).max() <= 242


def test_all_243_byte_values_decode_to_their_base3_digits():
    packed = bytes(range(243))
    t = I.unpack_trits(packed, 243, 5).astype(int)
    for b in range(243):
        assert sum((t[b, k] + 1) * 3 ** k for k in range(5)) == b
    assert I.pack_trits(t) == packed
    # the spec's examples: all zero trits = 121, all -1 = 0, all +1 = 242, t0=+1 others 0 = 122
    assert I.pack_trits([[0] * 5]) == bytes([121])
    assert I.pack_trits([[-1] * 5]) == bytes([0])
    assert I.pack_trits([[1] * 5]) == bytes([242])
    assert I.pack_trits([[1, 0, 0, 0, 0]]) == bytes([122])
    assert I.pack_trits([[1, -1]]) == bytes([2 + 0 * 3 + 1 * 9 + 1 * 27 + 1 * 81])  # padded


def test_division_free_digit_extraction():
    # spec §4: floor(b / 3) == (b * 171) >> 9 for every byte value
    assert all((b * 171) >> 9 == b // 3 for b in range(256))


@pytest.mark.parametrize("bad", range(243, 256))
def test_invalid_bytes_are_rejected(bad):
    packed = bytearray(I.pack_trits(np.zeros((2, 7), int)))
    packed[3] = bad
    with pytest.raises(ValueError, match="valid bytes are 0..242"):
        I.unpack_trits(bytes(packed), 2, 7)
    with pytest.raises(ValueError, match="valid bytes are 0..242"):
        I.ternary_matvec_lut(bytes(packed), 2, 7, np.zeros(7, int))


def test_bad_packed_lengths_padding_and_values_are_rejected():
    good = I.pack_trits(np.ones((2, 7), int))
    with pytest.raises(ValueError, match="expected 2 rows x 2 bytes = 4 bytes"):
        I.unpack_trits(good[:-1], 2, 7)
    with pytest.raises(ValueError, match="padding"):
        I.unpack_trits(bytes([242]), 1, 3)        # trits 3, 4 of the byte are +1, not zero
    with pytest.raises(ValueError):
        I.pack_trits([[2, 0]])
    with pytest.raises(ValueError):
        I.packed_row_bytes(0)


# ---------------------------------------------------------------- §5 ternary matvec

def _matvec_cases(rng):
    yield rng.integers(-1, 2, size=(9, 37)), rng.integers(-128, 128, size=37)
    t = rng.integers(-1, 2, size=(4, 20))
    t[0] = 0
    t[1] = 1
    t[2] = -1
    for x in (np.full(20, 127), np.full(20, -128), np.tile([127, -128], 10)):
        yield t, x
    yield rng.integers(-1, 2, size=(3, 101)), rng.integers(-32768, 32768, size=101)  # int16 x
    yield np.ones((1, 1024), int), np.full(1024, -32768)
    yield -np.ones((1, 1024), int), np.full(1024, -32768)


def test_ternary_matvec_equals_integer_matmul_edges(rng):
    for t, x in _matvec_cases(rng):
        rows, n = t.shape
        packed = I.pack_trits(t)
        ref = t.astype(np.int64) @ x.astype(np.int64)
        assert I.ternary_matvec(packed, rows, n, x).tolist() == ref.tolist()
        assert I.ternary_matvec_lut(packed, rows, n, x).tolist() == ref.tolist()


def test_ternary_matvec_every_n_up_to_1024(rng):
    for n in range(1, 1025):
        t = rng.integers(-1, 2, size=(2, n))
        x = rng.integers(-128, 128, size=n)
        packed = I.pack_trits(t)
        ref = (t @ x).tolist()
        assert I.ternary_matvec(packed, 2, n, x).tolist() == ref
        if n % 37 == 0 or n < 12:
            assert I.ternary_matvec_lut(packed, 2, n, x).tolist() == ref


def test_ternary_matvec_batched_and_linear(rng):
    t = rng.integers(-1, 2, size=(6, 13))
    x = rng.integers(-128, 128, size=(4, 13))
    packed = I.pack_trits(t)
    assert (I.ternary_matvec(packed, 6, 13, x) == x @ t.T).all()
    gamma = rng.uniform(0.01, 0.1, size=6)
    M, sh = I.quantize_multipliers(0.02 * gamma / 0.05)
    bias = rng.integers(-500, 500, size=6)
    y = I.ternary_linear(packed, 6, 13, x, M, sh, bias)
    assert (y == I.requant(x @ t.T + bias, M, sh)).all()
    with pytest.raises(OverflowError):
        I.ternary_matvec(packed, 6, 13, np.full(13, 40000))


# ---------------------------------------------------------------- §6 butterfly

def test_tables_are_the_formulas():
    assert list(I.SIN_Q14) == [math.floor(16384 * math.sin(i * math.pi / 512) + 0.5) for i in range(257)]
    assert list(I.EXP2_Q14) == [math.floor(16384 * 2 ** (-f / 256) + 0.5) for f in range(256)]
    assert I.SIN_Q14 is T.SIN_Q14 and I.EXP2_Q14 is T.EXP2_Q14       # one copy: the board's


def test_sincos_exact_points_and_error():
    c, s = I.sincos_q14(np.array([0, 16384, 32768, 49152]))
    assert c.tolist() == [16384, 0, -16384, 0] and s.tolist() == [0, 16384, 0, -16384]
    p = np.arange(65536)
    c, s = I.sincos_q14(p)
    a = 2 * math.pi * p / 65536
    assert np.abs(c - 16384 * np.cos(a)).max() <= 1.0
    assert np.abs(s - 16384 * np.sin(a)).max() <= 1.0
    ang = np.random.default_rng(0).normal(0, 1.0, 20000)
    c, s = I.cos_sin_q14(ang)
    assert np.abs(c - 16384 * np.cos(ang)).max() <= 2.0
    assert np.abs(s - 16384 * np.sin(ang)).max() <= 2.0
    assert I.angles_to_phase([0.0, -1e-9, math.pi, -math.pi / 2]).tolist() == [0, 0, 32768, 49152]


@pytest.mark.parametrize("n,n_l", [(3, 0), (2, 1), (5, 3), (16, 4), (48, 4), (64, 6), (256, 4)])
def test_butterfly_zero_angles_is_identity_exactly(rng, n, n_l):
    n_pad = I.padded_size(n)
    c, s = I.cos_sin_q14(np.zeros((n_l, n_pad // 2)))
    x = rng.integers(-32768, 32768, size=(5, n))
    assert (I.butterfly_q14(x, c, s) == x).all()


def test_butterfly_close_to_float_and_to_the_torch_model(rng):
    import torch
    from butterflyvit import butterfly as bfly   # the float model's convention
    angle_mask, butterfly = bfly.angle_mask, bfly.butterfly
    worst = {}
    for n, n_l in ((64, 4), (48, 4), (256, 4), (1024, 10), (8, 3)):
        P = I.butterfly_input_shift(n_l)
        n_pad = I.padded_size(n)
        ang = rng.normal(0, 0.5, size=(3, n_l, n_pad // 2)) * angle_mask(n, n_l).numpy()
        x = rng.integers(-128, 128, size=(3, n)) * (1 << P)
        c, s = I.cos_sin_q14(ang)                  # per-row angles, like experts per token
        y = I.butterfly_q14(x, c, s)
        ref = butterfly(torch.tensor(x, dtype=torch.float64), torch.cos(torch.tensor(ang)),
                        torch.sin(torch.tensor(ang))).numpy()
        assert np.allclose(ref, I.butterfly_float(x, ang))
        err = np.abs(y - ref).max()
        worst[n, n_l] = err
        # spec §6.5: at most n_l * (0.5 + 2^-12 max|v|) working units
        assert err <= n_l * (0.5 + np.abs(ref).max() * 2 ** -12), (n, n_l, err)
        assert np.abs(y).max() <= 1 << 14       # the headroom of §6.4: no saturation


def test_butterfly_headroom_worst_case_inputs(rng):
    for n_l in range(0, 11):
        P = I.butterfly_input_shift(n_l)
        n_pad = 1 << max(n_l, 1)
        for _ in range(20):
            ang = rng.uniform(-math.pi, math.pi, size=(n_l, n_pad // 2))
            c, s = I.cos_sin_q14(ang)
            x = rng.choice([-128, 127], size=n_pad) * (1 << P)
            assert np.abs(I.butterfly_q14(x, c, s).astype(int)).max() <= (1 << 14) + 8 * n_l


def test_butterfly_saturates_instead_of_wrapping():
    c, s = I.cos_sin_q14(np.full((1, 1), math.pi / 4))
    y = I.butterfly_q14(np.array([30000, 30000]), c, s)
    assert y.tolist() == [0, 32767]          # sqrt(2) * 30000 = 42426 saturates
    y = I.butterfly_q14(np.array([-30000, -30000]), c, s)
    assert y.tolist() == [0, -32768]


def test_butterfly_rejects_mismatched_angles():
    c, s = I.cos_sin_q14(np.zeros((2, 8)))
    with pytest.raises(ValueError):
        I.butterfly_q14(np.zeros(32, int), c, s)
    with pytest.raises(OverflowError):
        I.butterfly_q14(np.full(16, 40000), c, s)


# ---------------------------------------------------------------- §7 int8 linear

def test_linear_is_exact_integer_matmul_then_requant(rng):
    x = rng.integers(-128, 128, size=(5, 64))
    w = rng.integers(-127, 128, size=(32, 64))
    b = rng.integers(-10000, 10000, size=32)
    acc = I.linear_acc(x, w, b)
    assert (acc == x @ w.T + b).all()
    M, sh = I.quantize_multipliers(rng.uniform(1e-4, 1e-2, size=32))
    assert (I.linear(x, w, b, M, sh) == I.requant(x @ w.T + b, M, sh)).all()
    assert (I.linear_acc(np.full((1, 1024), -128), np.full((1, 1024), -128)) == 2**24).all()
    with pytest.raises(OverflowError):
        I.linear_acc(np.full((1, 64), 200), w)


def test_quantize_weights_per_row():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]])
    q, s = I.quantize_weights(w)
    assert q.tolist() == [[64, -127, 32], [0, 0, 0]]
    assert s.tolist() == [1.0 / 127, 1.0]


# ---------------------------------------------------------------- §8 LayerNorm

def test_isqrt_bitwise_is_exact():
    vals = [0, 1, 2, 3, 4, 15, 16, 17, 2**28, 2**30 - 1, 2**30, 2**32 - 1]
    vals += [k * k + d for k in (3, 1000, 16383, 32767, 65535) for d in (-1, 0, 1)]
    vals += np.random.default_rng(5).integers(0, 2**32, size=2000).tolist()
    for v in vals:
        assert I.isqrt_bitwise(v) == math.isqrt(v)
    assert (I.isqrt(np.array(vals)) == np.array([math.isqrt(v) for v in vals])).all()


def test_layernorm_within_one_lsb_of_float(rng):
    worst = 0.0
    for _ in range(200):
        d = int(rng.choice([8, 64, 256, 1024]))
        sx = 10 ** rng.uniform(-3, 0)
        x = (rng.integers(-128, 128, size=(4, d)) * rng.uniform(0.02, 1)).astype(np.int64)
        gamma = rng.normal(1, 0.3, size=d)
        beta = rng.normal(0, 0.3, size=d)
        ref = I.layernorm_float(x * sx, gamma, beta, 1e-5)
        sy = np.abs(ref).max() / 127
        p = I.layernorm_params(gamma, beta, 1e-5, sx, sy)
        y = I.layernorm(x, p)
        worst = max(worst, np.abs(y - ref / sy).max())
    assert worst <= 0.6      # spec §8.4: 0.5 LSB rounding + < 0.1 LSB arithmetic


def test_layernorm_int16_input_and_constant_rows(rng):
    d = 64
    x = rng.integers(-32768, 32768, size=(3, d))
    gamma, beta = rng.normal(1, 0.2, d), rng.normal(0, 0.2, d)
    sx = 1e-3
    ref = I.layernorm_float(x * sx, gamma, beta, 1e-5)
    sy = np.abs(ref).max() / 127
    p = I.layernorm_params(gamma, beta, 1e-5, sx, sy)
    assert np.abs(I.layernorm(x, p) - ref / sy).max() <= 0.6
    # a constant row normalises to 0: output = beta, with or without the eps term
    const = np.full((1, d), 17)
    for eps in (1e-5, 0.0):
        p = I.layernorm_params(gamma, beta, eps, 0.1, 0.05)
        y = I.layernorm(const, p)
        assert (y == I.saturate(I.rshift_round(p.B, p.shift), 8)).all()
        assert np.abs(y - beta / 0.05).max() <= 0.51


def test_layernorm_hand_case():
    # x = [1, -1]: S1 = 0, S2 = 2, V = 2*2 - 0 = 4, E = 0 -> e = 3, a = 13, U = 4 << 26 = 2^28
    # q = 2^14, R = 2^15, c = [2, -2], n = rshift_round(2 * 2^15, 6) = 1024 (z = 1.0 in Q10)
    p = I.LayerNormParams(G=np.array([16384, 16384]), B=np.array([0, 0]), shift=18, E=0)
    # y = rshift_round(1024 * 16384, 18) = 64
    assert I.layernorm(np.array([1, -1]), p).tolist() == [64, -64]


# ---------------------------------------------------------------- §9 softmax

def test_softmax_close_to_float(rng):
    worst = 0.0
    for _ in range(300):
        n = int(rng.integers(1, 200))
        scale = 10 ** rng.uniform(-3.5, -1)
        L = rng.integers(-2**16, 2**16, size=(3, n))
        M, sh = I.softmax_multiplier(scale)
        p = I.softmax(L, M, sh).astype(np.int64)
        worst = max(worst, np.abs(p / 32768 - I.softmax_float(L * scale)).max())
        assert (np.abs(p.sum(-1) - 32768) <= 2 + n // 2).all()
    assert worst <= 1e-3     # spec §9.4


def test_softmax_edge_cases():
    M, sh = I.softmax_multiplier(0.1)
    assert I.softmax(np.array([5]), M, sh).tolist() == [32768]
    assert I.softmax(np.array([3, 3, 3, 3]), M, sh).tolist() == [8192] * 4
    assert I.softmax(np.array([0, -10**6]), M, sh).tolist() == [32768, 0]
    e = I.softmax_exp(np.array([0, -1]), 16384, 14)      # 1 logit unit = 1/256 of a log2 unit
    assert e.tolist() == [16384, I.EXP2_Q14[1]]
    e = I.softmax_exp(np.array([0, -256, -512, -3839, -3840]), 16384, 14)
    assert e.tolist() == [16384, 8192, 4096, I.EXP2_Q14[255] >> 14, 0]
    with pytest.raises(OverflowError):
        I.softmax(np.array([2**30, 0]), M, sh)


def test_softmax_cutoff(rng):
    for scale in 10 ** rng.uniform(-4, 0, size=200):
        M, sh = I.softmax_multiplier(scale)
        dc = I.softmax_cutoff(M, sh)
        e = I.softmax_exp(np.array([0, -(dc - 1), -dc, -(dc + 1)]), M, sh)
        assert e[2] == 0 and e[3] == 0
        t = I.rshift_round(np.array([dc - 1, dc]) * M, sh)
        assert t.tolist()[0] < I.SOFTMAX_T_MAX <= t.tolist()[1]
    assert I.softmax_cutoff(0, 1) is None


# ---------------------------------------------------------------- §10 relu, residual

def test_relu_and_residual_add(rng):
    assert I.relu(np.array([-5, 0, 7], np.int16)).tolist() == [0, 0, 7]
    for _ in range(100):
        sa, sb, sz = 10 ** rng.uniform(-3, -1, size=3)
        Ma, Mb, sh = I.residual_params(sa, sb, sz)
        assert max(Ma, Mb) >= 1 << 14
        a = rng.integers(-128, 128, 500)
        b = rng.integers(-128, 128, 500)
        z = I.residual_add(a, b, Ma, Mb, sh)
        ref = (a * sa + b * sb) / sz
        inside = np.abs(ref) < 126
        # spec §10.2: 0.5 rounding + 2^-15 relative (larger M) + 0.5 ulp of the smaller M
        bound = 0.5 + np.abs(ref) * 2 ** -15 + (np.abs(a) + np.abs(b)) * 2.0 ** -(sh + 1)
        assert (np.abs(z - ref)[inside] <= bound[inside] + 1e-9).all()
        assert (z[ref > 128] == 127).all() and (z[ref < -129] == -128).all()


# ---------------------------------------------------------------- §11 routing

def test_topk_ties_lowest_index_first():
    assert I.topk(np.array([5, 7, 7, 1]), 2).tolist() == [1, 2]
    assert I.topk(np.array([3, 3, 3, 3]), 3).tolist() == [0, 1, 2]
    assert I.topk(np.array([[1, 9, 9, 9], [-4, -4, -2, -9]]), 2).tolist() == [[1, 2], [2, 0]]
    with pytest.raises(ValueError):
        I.topk(np.array([1, 2]), 3)


def test_smoothed_routing_hand_case():
    # 3x3 grid, 2 experts; logits of expert 0 are 0..8 row-major, expert 1 is 5 everywhere
    L = np.stack([np.arange(9), np.full(9, 5)], axis=1)
    s, cnt = I.neighbour_sum(L, 3)
    assert cnt.tolist() == [3, 4, 3, 4, 5, 4, 3, 4, 3]
    # patch 0: 0 + 1 + 3 = 4; patch 1: 1 + 0 + 2 + 4 = 7; patch 4 (centre): 4+1+3+5+7 = 20
    # patch 5: 5 + 2 + 8 + 4 = 19; patch 8: 8 + 5 + 7 = 20
    assert s[:, 0].tolist() == [4, 7, 8, 13, 20, 19, 16, 25, 20]
    assert s[:, 1].tolist() == (5 * cnt).tolist()
    mults = I.gate_multipliers(0.5)
    # unsmoothed: expert 0 wins where i > 5, and at the tie i = 5 (lowest index)
    idx, gates = I.route(L, 1, mults)
    assert idx[:, 0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0]
    # smoothed: means of expert 0 are 4/3, 7/4, 8/3, 13/4, 4, 19/4, 16/3, 25/4, 20/3 vs 5
    idx, gates = I.route(L, 1, mults, smooth=True, grid=3)
    assert idx[:, 0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert gates.tolist() == [[32768]] * 9
    # k = 2 at the centre: sums 20 (expert 0) and 25 (expert 1), count 5, scale 0.5:
    # means 5 and 4, real logits 2.5 and 2.0 -> gates 1/(1+e^-0.5) = 0.6225 and 0.3775
    idx, gates = I.route(L, 2, mults, smooth=True, grid=3)
    assert idx[4].tolist() == [1, 0]
    assert np.abs(gates[4] / 32768 - [0.6225, 0.3775]).max() < 1e-3


def test_route_gates_follow_the_mean_logits(rng):
    grid, E, k = 4, 8, 2
    L = rng.integers(-3000, 3000, size=(grid * grid, E))
    scale = 2e-3
    idx, gates = I.route(L, k, I.gate_multipliers(scale), smooth=True, grid=grid)
    s, cnt = I.neighbour_sum(L, grid)
    mean = s / cnt[:, None]
    sel = np.take_along_axis(mean, idx, -1)
    # the selected experts are the k largest means, ties to the lowest index
    order = np.lexsort((np.arange(E)[None].repeat(grid * grid, 0), -mean), axis=-1)[:, :k]
    assert (idx == order).all()
    assert np.abs(gates / 32768 - I.softmax_float(sel * scale)).max() <= 1e-3
    idx0, gates0 = I.route(L, k, I.gate_multipliers(scale))
    assert (idx0 == I.topk(L, k)).all()


def test_route_tie_between_experts_goes_to_lowest_index():
    L = np.array([[4, 9, 9, 1]])
    idx, gates = I.route(L, 2, I.gate_multipliers(0.1))
    assert idx.tolist() == [[1, 2]] and gates.tolist() == [[16384, 16384]]


# ---------------------------------------------------------------- §12 attention, §13 pooling

def test_attention_close_to_float(rng):
    n, dim, heads = 16, 32, 4
    hd = dim // heads
    sq, sk, sv = 0.05, 0.04, 0.03
    q, k, v = (rng.integers(-128, 128, size=(n, dim)) for _ in range(3))
    qf, kf, vf = q * sq, k * sk, v * sv
    ref = np.concatenate([I.softmax_float(qf[:, h*hd:(h+1)*hd] @ kf[:, h*hd:(h+1)*hd].T
                                          / math.sqrt(hd)) @ vf[:, h*hd:(h+1)*hd]
                          for h in range(heads)], axis=1)
    so = np.abs(ref).max() / 127
    out = I.attention(q, k, v, heads, I.softmax_multiplier(sq * sk / math.sqrt(hd)),
                      I.quantize_multiplier(sv / 32768 / so))
    assert np.abs(out - ref / so).max() <= 1.0


def test_mean_pool():
    x = np.array([[1, -3], [2, -4], [4, -4]])
    M, sh = I.quantize_multiplier(1 / 3)
    assert I.mean_pool(x, M, sh).tolist() == [2, -4]   # 7/3 = 2.33, -11/3 = -3.67


# ---------------------------------------------------------------- §14 camera frames

def test_gray_frame_crop_and_resize_hand_cases():
    # 3 wide x 2 high: the centre square is columns 0..1 ((3-2)//2 = 0), rows 0..1
    frame = bytes([10, 20, 30,
                   40, 50, 60])
    assert I.frame_to_pixels(frame, 3, 2, "GRAYSCALE", 2, 1).tolist() == [[[10, 20], [40, 50]]]
    # to 1x1: source index (2*0+1)*2 // 2 = 1
    assert I.frame_to_pixels(frame, 3, 2, "GRAYSCALE", 1, 1).tolist() == [[[50]]]
    # up to 4x4: source indices (2i+1)*2 // 8 = 0, 0, 1, 1
    up = I.frame_to_pixels(frame, 3, 2, "GRAYSCALE", 4, 1)[0]
    assert up.tolist() == [[10, 10, 20, 20], [10, 10, 20, 20], [40, 40, 50, 50], [40, 40, 50, 50]]
    # 4 wide x 2 high: crop starts at column 1; 3 channels replicate the grey value
    frame = bytes([1, 2, 3, 4, 5, 6, 7, 8])
    rgb = I.frame_to_pixels(frame, 4, 2, "GRAYSCALE", 2, 3)
    assert rgb.tolist() == [[[2, 3], [6, 7]]] * 3
    # tall frame 1 wide x 3 high: crop row 1
    assert I.frame_to_pixels(bytes([9, 8, 7]), 1, 3, "GRAYSCALE", 1, 1).tolist() == [[[8]]]


def test_rgb565_big_endian_hand_cases():
    # red 0xF800, green 0x07E0, blue 0x001F, grey-ish 0x8410: bytes high first
    frame = bytes([0xF8, 0x00, 0x07, 0xE0,
                   0x00, 0x1F, 0x84, 0x10])
    rgb = I.frame_to_pixels(frame, 2, 2, "RGB565", 2, 3)
    assert rgb[:, 0, 0].tolist() == [255, 0, 0]
    assert rgb[:, 0, 1].tolist() == [0, 255, 0]
    assert rgb[:, 1, 0].tolist() == [0, 0, 255]
    assert rgb[:, 1, 1].tolist() == [132, 130, 132]   # 16 -> 132, 32 -> 130 by bit replication
    gray = I.frame_to_pixels(frame, 2, 2, "RGB565", 2, 1)[0]
    # Y = (77 R + 150 G + 29 B + 128) >> 8
    assert gray.tolist() == [[(77 * 255 + 128) >> 8, (150 * 255 + 128) >> 8],
                             [(29 * 255 + 128) >> 8, (77 * 132 + 150 * 130 + 29 * 132 + 128) >> 8]]
    assert gray.tolist() == [[77, 149], [29, 131]]


def test_any_frame_size_is_accepted(rng):
    for _ in range(30):
        w, h = (int(v) for v in rng.integers(1, 60, size=2))
        for fmt, bpp in (("GRAYSCALE", 1), ("RGB565", 2)):
            buf = rng.integers(0, 256, size=w * h * bpp).astype(np.uint8).tobytes()
            for ch in (1, 3):
                assert I.frame_to_pixels(buf, w, h, fmt, 8, ch).shape == (ch, 8, 8)


def test_bad_frames_raise_clear_errors():
    with pytest.raises(ValueError, match=r"GRAYSCALE frame of 3x2 needs 6 bytes \(1 per pixel\), got 5"):
        I.frame_to_pixels(bytes(5), 3, 2, "GRAYSCALE", 4, 1)
    with pytest.raises(ValueError, match=r"RGB565 frame of 3x2 needs 12 bytes \(2 per pixel\), got 6"):
        I.frame_to_pixels(bytes(6), 3, 2, "RGB565", 4, 1)
    with pytest.raises(ValueError, match="at least 1x1, got 0x5"):
        I.frame_to_pixels(b"", 0, 5, "GRAYSCALE", 4, 1)
    with pytest.raises(ValueError, match="format must be one of"):
        I.frame_to_pixels(bytes(4), 2, 2, "JPEG", 4, 1)
    with pytest.raises(ValueError, match="image_size"):
        I.frame_to_pixels(bytes(4), 2, 2, "GRAYSCALE", 0, 1)


def test_input_quantisation_table_and_float(rng):
    mean, std = [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]
    s_in = 2.2 / 127
    A, B, sh = I.input_quant_params(mean, std, s_in)
    tables = I.input_tables(A, B, sh)
    pix = rng.integers(0, 256, size=(3, 8, 8))
    q = I.quantize_pixels(pix, A, B, sh)
    for c in range(3):
        assert (q[c] == tables[c][pix[c]]).all()
        ref = (np.arange(256) / 255 - mean[c]) / std[c] / s_in
        inside = np.abs(ref) < 126
        assert np.abs(tables[c][inside] - ref[inside]).max() <= 0.51
    patches = I.patchify(q, 4)
    assert patches.shape == (4, 48)
    assert patches[1].tolist() == q[:, 0:4, 4:8].ravel().tolist()    # token 1 = row 0, col 1
    frame = rng.integers(0, 256, size=10 * 6 * 2).astype(np.uint8).tobytes()
    out = I.preprocess_frame(frame, 10, 6, "RGB565", 8, 3, 4, A, B, sh)
    assert out.shape == (4, 48) and out.dtype == np.int8
