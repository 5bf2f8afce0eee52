"""The C kernels cross-compiled (-Wall -Wextra -Werror) for Cortex-M0+ and rv32imc, run
under QEMU on test vectors from the numpy reference, and checked on the target
(native/tests/cross_main.c prints one line per case and exits with the failure count).

Targets: host, cortex-m0plus-big (ARMv6-M code, 4 MiB RAM: every case), rv32imc (every
case), and the micro:bit's real ARMv6-M core with 16 KiB of RAM (the cases that fit:
no LUT tables, no expert, no attention).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from beds.cross import *  # noqa: F401,F403  (fixtures)
from beds.cross import TARGETS, c_header
from butterflyvit import intops as I

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "native" / "kernels"
SOURCES = sorted(KERNELS.glob("*.c"))
MAIN = REPO / "native" / "tests" / "cross_main.c"


def _packed(t):
    return np.frombuffer(I.pack_trits(t), np.uint8).copy()


def make_vectors(seed: int = 5) -> tuple[str, list[str]]:
    """The generated header, and the case names every full run must report ok."""
    rng = np.random.default_rng(seed)
    A = {}

    def trits(rows, n):
        t = rng.integers(-1, 2, (rows, n)).astype(np.int8)
        t[0] = 1
        t[1] = -1
        t[2] = 0
        return t

    # §4
    t = trits(5, 13)
    A["up_packed"] = _packed(t)
    bad = A["up_packed"].copy()
    bad[7] = 250
    A["up_bad"] = bad
    A["up_want"] = t.ravel()
    defines = {"UP_ROWS": 5, "UP_N": 13, "TM_ROWS": 8}
    # §5
    for n in (13, 64, 66):
        t = trits(8, n)
        p = _packed(t)
        x8 = rng.integers(-128, 128, n).astype(np.int8)
        x16 = rng.integers(-32768, 32768, n).astype(np.int16)
        x8[:2], x16[:2] = [-128, 127], [-32768, 32767]
        A[f"tm{n}_packed"] = p
        A[f"tm{n}_x8"], A[f"tm{n}_x16"] = x8, x16
        A[f"tm{n}_w8"] = I.ternary_matvec(p.tobytes(), 8, n, x8)
        A[f"tm{n}_w16"] = I.ternary_matvec(p.tobytes(), 8, n, x16)
    t = trits(16, 66)
    p = _packed(t)
    x = rng.integers(-20000, 20000, 66).astype(np.int16)
    M = rng.integers(16384, 32768, 16).astype(np.int16)
    S = rng.integers(16, 26, 16).astype(np.uint8)
    bias = rng.integers(-99999, 99999, 16).astype(np.int32)
    A.update(tl_packed=p, tl_x=x, tl_m=M, tl_s=S, tl_bias=bias,
             tl_want=I.ternary_linear(p.tobytes(), 16, 66, x, M, S, bias, 16))
    defines.update(TL_ROWS=16, TL_N=66)
    # trit streams: 9 rows of 64 trits from trit 3
    total = 3 + 9 * 64
    st = rng.integers(-1, 2, total).astype(np.int8)
    nbytes = -(-total // 5)
    st_packed = np.frombuffer(I.pack_trits(np.concatenate([st, np.zeros(5 * nbytes - total, np.int8)])[None]),
                              np.uint8).copy()
    mat = st[3:].reshape(9, 64)
    sx = rng.integers(-32768, 32768, 64).astype(np.int16)
    A.update(st_packed=st_packed, st_x=sx, st_want=(mat.astype(np.int64) @ sx).astype(np.int32),
             st_rows=np.frombuffer(I.pack_trits(mat), np.uint8).astype(np.int8))
    # §1-2
    acc = np.concatenate([[0, 1, -1, 2**16, -2**16, 2**31 - 1, -2**31],
                          rng.integers(-2**31, 2**31, 193)]).astype(np.int32)
    Ms = rng.integers(0, 32768, 200).astype(np.int16)
    Ms[:3] = [0, 16384, 32767]
    Ss = rng.integers(1, 63, 200).astype(np.uint8)
    A.update(rq_acc=acc, rq_m=Ms, rq_s=Ss, rq_w8=I.requant(acc, Ms, Ss, 8).astype(np.int32),
             rq_w16=I.requant(acc, Ms, Ss, 16).astype(np.int32))
    # §6
    ph = np.concatenate([[0, 16384, 32768, 49152, 65535, 1, 63, 64],
                         rng.integers(0, 65536, 292)]).astype(np.uint16)
    c, s = I.sincos_q14(ph)
    A.update(sc_ph=ph, sc_cos=c, sc_sin=s)
    bph = rng.integers(0, 65536, 4 * 128).astype(np.uint16)
    bc, bs = I.sincos_q14(bph)
    bx = rng.integers(-32768, 32768, 256).astype(np.int16)  # saturates somewhere
    A.update(bf_x=bx, bf_cos=bc, bf_sin=bs, bf_ph=bph,
             bf_raw=np.frombuffer(b"\x05" + bph.astype("<u2").tobytes(), np.uint8).copy(),
             bf_want=I.butterfly_q14(bx, bc.reshape(4, 128), bs.reshape(4, 128)))
    # §15 expert at the shipped shape
    t = trits(256, 64)
    p = _packed(t)
    x = rng.integers(-128, 128, 64).astype(np.int8)
    phin = (rng.normal(0, 0.5, 4 * 32) * 65536 / (2 * np.pi)).astype(np.int64).astype(np.uint16)
    phout = (rng.normal(0, 0.5, 4 * 128) * 65536 / (2 * np.pi)).astype(np.int64).astype(np.uint16)
    M = rng.integers(16384, 32768, 256).astype(np.int16)
    S = rng.integers(15, 22, 256).astype(np.uint8)  # some rows saturate int16
    ci, si = I.sincos_q14(phin)
    co, so = I.sincos_q14(phout)
    u = I.butterfly_q14(x.astype(np.int64) * 32, ci.reshape(4, -1), si.reshape(4, -1))
    h = I.requant(I.ternary_matvec(p.tobytes(), 256, 64, u), M, S, 16)
    A.update(ex_x=x, ex_phin=phin, ex_phout=phout, ex_packed=p, ex_m=M, ex_s=S,
             ex_want=I.relu(I.butterfly_q14(h, co.reshape(4, -1), so.reshape(4, -1))))
    # §7
    x = rng.integers(-128, 128, 64).astype(np.int8)
    w = rng.integers(-128, 128, (64, 64)).astype(np.int8)
    bias = rng.integers(-2**20, 2**20, 64).astype(np.int32)
    M = rng.integers(16384, 32768, 64).astype(np.int16)
    S = rng.integers(14, 22, 64).astype(np.uint8)
    A.update(li_x=x, li_w=w.ravel(), li_bias=bias, li_m=M, li_s=S,
             li_want=I.linear(x, w, bias, M, S, 8), li_acc=I.linear_acc(x, w),
             # 63 inputs from x[1:], weights row-major 64 x 63 in the same bytes (misaligned rows)
             li_odd=I.linear(x[1:], w.ravel()[:64 * 63].reshape(64, 63), None, M, S, 16))
    # §8
    lp = I.layernorm_params(rng.normal(1, 0.4, 64), rng.normal(0, 0.4, 64), 1e-5, 0.01, 0.04)
    lx = rng.integers(-30000, 30000, 64).astype(np.int16)
    lx8 = rng.integers(-128, 128, 64).astype(np.int8)
    lp8 = lp
    A.update(ln_x=lx, ln_x8=lx8, ln_g=lp.G.astype(np.int32), ln_b=lp.B.astype(np.int32),
             ln_e=np.array([lp.E], np.int64), ln_want=I.layernorm(lx, lp),
             ln_want8=I.layernorm(lx8, lp8))
    defines["LN_SHIFT"] = lp.shift
    # §9, §12
    sm_M, sm_S = I.softmax_multiplier(0.003)
    L = rng.integers(-5000, 5000, 49).astype(np.int32)
    A.update(sm_l=L, sm_want=I.softmax(L, sm_M, sm_S))
    defines.update(SM_M=sm_M, SM_S=sm_S)
    qkv = rng.integers(-128, 128, (49, 192)).astype(np.int8)
    aM, aS = I.softmax_multiplier(0.02 * 0.02 / 4)
    oM, oS = I.quantize_multiplier(0.03 * 2**-15 / 0.02)
    A.update(at_qkv=qkv.ravel(),
             at_want=I.attention(qkv[:, :64], qkv[:, 64:128], qkv[:, 128:], 4, (aM, aS), (oM, oS)).ravel())
    defines.update(AT_SM=aM, AT_SS=aS, AT_OM=oM, AT_OS=oS)
    # §10, §13, §15, §11.1
    a = rng.integers(-32768, 32768, 64).astype(np.int16)
    b = rng.integers(-32768, 32768, 64).astype(np.int16)
    Ma, Mb, sh = I.residual_params(0.2, 0.07, 0.25)
    A.update(ra_a=a, ra_b=b, ra_want=I.residual_add(a, b, Ma, Mb, sh, 16))
    defines.update(RA_MA=Ma, RA_MB=Mb, RA_SH=sh)
    px = rng.integers(-32768, 32768, (49, 64)).astype(np.int16)
    pM, psh = I.quantize_multiplier(0.9 / 49)
    A.update(po_x=px.ravel(), po_want=I.mean_pool(px, pM, psh, 16))
    defines.update(PO_M=pM, PO_SH=psh)
    g = I.softmax(np.array([900, 400], np.int32), *I.softmax_multiplier(0.01))
    mh = rng.integers(0, 32768, (2, 256)).astype(np.int16)
    A.update(mx_h=mh.ravel(), mx_g=g,
             mx_want=I.saturate(I.rshift_round((g.astype(np.int64)[:, None] * mh).sum(0), 15), 16).astype(np.int16))
    tl = rng.integers(-3, 3, 64).astype(np.int32)
    A.update(tk_l=tl, tk_want=I.topk(tl, 2).astype(np.uint16))

    text = c_header({k: (np.asarray(v) if not isinstance(v, np.ndarray) else v) for k, v in A.items()},
                    guard="BVIT_VECTORS_H")
    text = text.replace("#endif /* BVIT_VECTORS_H */",
                        "".join(f"#define {k} {v}\n" for k, v in defines.items())
                        + "#endif /* BVIT_VECTORS_H */")
    full = (["unpack"] + [f"tm{n}_{f}_{w}" for n in (13, 64, 66) for f in ("plain", "lut")
                         for w in ("i8", "i16")]
            + ["ternary_linear_plain", "ternary_linear_lut", "ternary_stream", "stream_to_rows",
               "requant", "sincos", "butterfly", "butterfly_phase", "butterfly_phase_raw", "expert", "linear", "linear_acc", "linear_odd", "layernorm_i16",
               "layernorm_i8", "softmax", "attention", "residual_add", "mean_pool", "mix", "topk"])
    return text, full


SMALL_ONLY_MISSING = {"expert", "attention", "ternary_linear_lut"} | {
    f"tm{n}_lut_{w}" for n in (13, 64, 66) for w in ("i8", "i16")}


@pytest.fixture(scope="module")
def vectors():
    return make_vectors()


@pytest.mark.parametrize("target", ["host", "cortex-m0plus-big", "rv32imc", "cortex-m0plus"])
def test_kernels_on_target_equal_the_reference(target, vectors, cross_build_dir):
    t = TARGETS[target]
    if not t.available():
        pytest.fail(f"{target}: missing {', '.join(t.missing_tools())}; run scripts/setup.sh")
    header, full = vectors
    small = target == "cortex-m0plus"
    prog = t.build([*SOURCES, MAIN], include_dirs=[KERNELS], generated={"vectors.h": header},
                   defines={"BVIT_SMALL": None} if small else None, name="bvit_cross")
    res = prog.run(timeout=120)
    lines = res.stdout.splitlines()
    want = [n for n in full if not (small and n in SMALL_ONLY_MISSING)]
    oks = [ln.split()[0] for ln in lines if ln.endswith(" ok")]
    assert oks == want, res.stdout
    assert "check_trits -1 7" in lines, res.stdout
    assert lines[-1] == "failures 0" and res.returncode == 0, res.stdout + res.stderr


def test_cross_build_has_no_thumb2_and_fits(cortex_m0plus, vectors):
    """The ARMv6-M build uses Thumb-1 only (it ran on the micro:bit's M0 above) and the
    module's kernels stay small: text of the kernel objects (arm-none-eabi-size)."""
    import subprocess

    header, _ = vectors
    prog = cortex_m0plus.build([*SOURCES, MAIN], include_dirs=[KERNELS], generated={"vectors.h": header},
                               defines={"BVIT_SMALL": None}, name="bvit_cross")
    syms = prog.symbols()
    for fn in ("bvit_lut_rows", "bvit_butterfly", "bvit_layernorm", "bvit_softmax"):
        assert fn in syms
    out = subprocess.run(["arm-none-eabi-objdump", "-d", str(prog.path)], capture_output=True,
                         text=True, check=True).stdout
    # 32-bit Thumb-2 encodings other than BL would show as ".w" forms or sdiv/udiv
    assert " sdiv" not in out and " udiv" not in out
