"""The C kernels cross-compiled (-Wall -Wextra -Werror) for Cortex-M0+ and rv32imc, run
under QEMU on the golden vectors (tests/golden.py), and checked on the target
(native/tests/cross_main.c prints one line per case and form and exits with the failure
count). One run per target; one test per op and target, so a failure names both.

Targets: host, cortex-m0plus-big (ARMv6-M code, 4 MiB RAM: every case), rv32imc (every
case), and the micro:bit's real ARMv6-M core with 16 KiB of RAM and 256 KiB of flash (the
cases whose buffers fit; no LUT tables, no expert, no attention).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import golden
from beds.cross import *  # noqa: F401,F403  (fixtures)
from beds.cross import TARGETS, c_array

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "native" / "kernels"
SOURCES = sorted(KERNELS.glob("*.c"))
MAIN = REPO / "native" / "tests" / "cross_main.c"

TARGET_NAMES = ["host", "cortex-m0plus-big", "rv32imc", "cortex-m0plus"]
SMALL_BUFFER = 2048          # bytes: the largest RAM buffer a case may need on the 16 KiB core


# Per op: the struct fields of one case (cross_main.c declares `struct <op>_case`), its
# arrays, the RAM it needs (buffer name -> elements) and the forms cross_main.c reports.
# Each function takes a golden case and returns (fields, arrays, ram); an array value
# None is a NULL pointer.

def _i(v):
    return np.asarray(v)


def _f_requant(c):
    return ([len(c["acc"]), "acc", "M", "shift", c["bits"], "want"],
            dict(acc=c["acc"].astype(np.int32), M=c["M"].astype(np.int16),
                 shift=c["shift"].astype(np.uint8), want=c["want"].astype(np.int32)), {})


def _f_relu(c):
    n = len(c["v"])
    return [n, "v", "want"], dict(v=c["v"], want=c["want"]), {"out16": n}


def _f_mix(c):
    k, f = c["h"].shape
    return [k, f, "h", "g", "want"], dict(h=c["h"], g=c["g"].astype(np.uint16), want=c["want"]), \
        {"out16": f}


def _f_ternary_matvec(c):
    rows, n = c["rows"], c["n"]
    return ([rows, n, "packed", c["bits"], "x", "trits", "want"],
            dict(packed=_packed(c["packed"]), x=c["x"], trits=c["trits"], want=c["want"]),
            {"acc": rows, "out8": rows * n})


def _f_ternary_linear(c):
    rows, n, per_row = c["rows"], c["n"], not isinstance(c["M"], int)
    return ([rows, n, "packed", "x", "bias", "M", "shift", int(per_row), c["bits"], "want"],
            dict(packed=_packed(c["packed"]), x=c["x"], bias=c["bias"],
                 M=_i(c["M"]).astype(np.int16).reshape(-1), shift=_i(c["shift"]).astype(np.uint8).reshape(-1),
                 want=c["want"].astype(np.int16)), {"acc": rows, "out16": rows})


def _f_ternary_rows(c):
    rows, n = c["rows"], c["n"]
    return ([rows, n, c["p0"], "packed", "x", "want"],
            dict(packed=_packed(c["packed"]), x=c["x"], want=c["want"]), {"acc": rows})


def _f_sincos(c):
    return [len(c["phases"]), "phases", "cos", "sin"], \
        dict(phases=c["phases"], cos=c["want_cos"], sin=c["want_sin"]), {}


def _f_butterfly(c):
    n_pad = len(c["v"])
    raw = np.frombuffer(b"\x05" + c["phases"].astype("<u2").tobytes(), np.uint8)
    L = c["n_stages"]
    return ([n_pad, L, "v", "cos", "sin", "phases", "raw", "want"],
            dict(v=c["v"], cos=c["cos"] if L else None, sin=c["sin"] if L else None,
                 phases=c["phases"] if L else None, raw=raw, want=c["want"]), {"out16": n_pad})


def _f_expert(c):
    L, dim, ffn = c["n_stages"], len(c["x"]), len(c["M"])
    pin, pout = 2 * c["phases_in"].shape[1], 2 * c["phases_out"].shape[1]
    return ([dim, ffn, pin, pout, L, c["P"], "ph_in", "ph_out", "packed", "M", "shift", "x", "want"],
            dict(ph_in=c["phases_in"], ph_out=c["phases_out"], packed=_packed(c["packed"]),
                 M=c["M"], shift=c["shift"], x=c["x"], want=c["want"]),
            {"out16": ffn, "rot_in": L * pin, "rot_out": L * pout, "work_in": pin, "work_out": pout})


def _f_matvec8(c):
    rows, n = c["w"].shape
    return [rows, n, "x", "w", "want"], dict(x=c["x"], w=c["w"], want=c["want"]), {"acc": rows}


def _f_linear(c):
    rows, n = c["w"].shape
    return ([rows, n, "x", "w", "bias", "M", "shift", c["bits"], "want"],
            dict(x=c["x"], w=c["w"], bias=c["bias"], M=c["M"], shift=c["shift"],
                 want=c["want"].astype(np.int16)), {"out16": rows})


def _f_layernorm(c):
    rows, d = c["x"].shape
    return ([rows, d, c["bits"], "x", "G", "B", c["shift"], f"{c['E']}LL", "want"],
            dict(x=c["x"], G=c["G"], B=c["B"], want=c["want"]), {"out8": d})


def _f_softmax(c):
    rows, n = c["L"].shape
    return [rows, n, "L", c["M"], c["shift"], "want"], \
        dict(L=c["L"], want=c["want"].astype(np.uint16)), {"outu": n}


def _f_residual_add(c):
    dt = np.int8 if c["bits"] == 8 else np.int16
    return ([len(c["a"]), c["bits"], "a", "b", c["Ma"], c["Mb"], c["shift"], "want"],
            dict(a=c["a"].astype(dt), b=c["b"].astype(dt), want=c["want"].astype(np.int16)),
            {"out16": len(c["a"])})


def _f_topk(c):
    rows, n = c["L"].shape
    return [rows, n, c["k"], "L", "want"], dict(L=c["L"], want=c["want"]), {"outu": c["k"]}


def _f_attention(c):
    n, dim = c["qkv"].shape[0], c["qkv"].shape[1] // 3
    return ([n, dim, c["heads"], c["score_M"], c["score_shift"], c["out_M"], c["out_shift"], "qkv",
             "want"], dict(qkv=c["qkv"], want=c["want"]),
            {"out8": n * dim, "acc": n, "outu": n})


def _f_mean_pool(c):
    n, d = c["x"].shape
    return [n, d, c["M"], c["shift"], c["bits"], "x", "want"], \
        dict(x=c["x"], want=c["want"].astype(np.int16)), {"out16": d}


def _packed(b):
    return np.frombuffer(bytes(b), np.uint8)


# What cross_main.c reports for each case of an op; the small core leaves out the LUT forms
FORMS = {"ternary_matvec": ("plain", "lut", "unpack"), "ternary_linear": ("plain", "lut"),
         "ternary_rows": ("plain", "lut"), "butterfly": ("tables", "phase", "raw")}
SMALL_LEAVES_OUT = {"lut"}
NOT_ON_SMALL = {"expert", "attention"}          # their scratch does not fit 16 KiB
CROSS_OPS = tuple(op for op in golden.OPS if "_f_" + op in globals())
BUFFERS = ("acc", "out8", "out16", "outu", "rot_in", "rot_out", "work_in", "work_out")
ELEM = {"acc": 4, "out8": 1, "out16": 2, "outu": 2, "rot_in": 4, "rot_out": 4, "work_in": 4,
        "work_out": 4}


def _forms(op, small):
    return [f for f in FORMS.get(op, ("",)) if not (small and f in SMALL_LEAVES_OUT)]


def _cases(op, small):
    """(index, golden case, fields, arrays, ram) of the cases of `op` a target runs."""
    if small and op in NOT_ON_SMALL:
        return []
    out = []
    for i, c in enumerate(golden.cases(op)):
        fields, arrays, ram = globals()["_f_" + op](c)
        if small and any(ELEM[b] * k > SMALL_BUFFER for b, k in ram.items()):
            continue
        out.append((i, c, fields, arrays, ram))
    return out


def make_vectors(small: bool) -> str:
    """vectors.h for cross_main.c: every case's arrays, a case table per op, buffer sizes."""
    parts = ["#ifndef BVIT_VECTORS_H\n#define BVIT_VECTORS_H\n#include <stdint.h>\n"]
    need = dict.fromkeys(BUFFERS, 1)
    for op in CROSS_OPS:
        rows = []
        for i, c, fields, arrays, ram in _cases(op, small):
            for name, a in arrays.items():
                if a is not None:
                    parts.append(c_array(f"{op}_{i}_{name}", np.ascontiguousarray(a)))
            vals = [("NULL" if arrays[f] is None else f"{op}_{i}_{f}") if isinstance(f, str)
                    and f in arrays else str(f) for f in fields]
            rows.append(f"    {{{i}, {', '.join(vals)}}},")
            for b, k in ram.items():
                need[b] = max(need[b], k)
        if not rows and not (small and op in NOT_ON_SMALL):
            raise AssertionError(f"{op}: no golden case fits the {'small' if small else ''} target")
        parts.append(f"#define {op.upper()}_CASES {len(rows)}\n")
        if rows:
            parts.append(f"static const struct {op}_case {op}_cases[] = {{\n" + "\n".join(rows)
                         + "\n};\n")
    # one corrupted packed matrix: bvit_check_trits must name its first bad byte
    good = next(_packed(c["packed"]) for c in golden.cases("ternary_matvec")
                if (c["rows"], c["n"]) == (8, 13))
    bad = good.copy()
    bad[7] = 250
    parts += [c_array("good_packed", good), c_array("bad_packed", bad)]
    parts += [f"#define MAX_{b.upper()} {k}\n" for b, k in need.items()]
    parts.append("#endif /* BVIT_VECTORS_H */\n")
    return "\n".join(parts)


def _expected_lines(op, small):
    return [f"{op} {i} {f}".rstrip() + " ok" for i, *_ in _cases(op, small) for f in _forms(op, small)]


@pytest.fixture(scope="module")
def cross_runs(cross_build_dir):
    """The output of cross_main on each target, run once (lines by op), or why it could not run."""
    runs = {}

    def run(target):
        if target not in runs:
            t = TARGETS[target]
            if not t.available():
                runs[target] = f"{target}: missing {', '.join(t.missing_tools())}; run scripts/setup.sh"
            else:
                small = target == "cortex-m0plus"
                prog = t.build([*SOURCES, MAIN], include_dirs=[KERNELS],
                               generated={"vectors.h": make_vectors(small)},
                               defines={"BVIT_SMALL": None} if small else None, name="bvit_cross")
                res = prog.run(timeout=300)
                runs[target] = res
        return runs[target]

    return run


def test_every_c_op_is_cross_checked():
    assert set(golden.OPS) - set(CROSS_OPS) == {"requant_rows", "expert_input", "route", "frame"}


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_the_target_run_finishes_without_failures(target, cross_runs):
    res = cross_runs(target)
    if isinstance(res, str):
        pytest.fail(res)
    lines = res.stdout.splitlines()
    assert "check_trits -1 7" in lines, res.stdout[-3000:]
    assert lines[-1] == "failures 0" and res.returncode == 0, res.stdout[-3000:] + res.stderr


@pytest.mark.parametrize("op", CROSS_OPS)
@pytest.mark.parametrize("target", TARGET_NAMES)
def test_op_on_target_equals_the_golden_vectors(target, op, cross_runs):
    res = cross_runs(target)
    if isinstance(res, str):
        pytest.fail(res)
    small = target == "cortex-m0plus"
    got = [ln for ln in res.stdout.splitlines() if ln.split(" ", 1)[0] == op]
    want = _expected_lines(op, small)
    if small and op not in NOT_ON_SMALL:
        assert want, f"{op}: no case fits the small core"
    names = {i: c["name"] for i, c, *_ in _cases(op, small)}
    fails = [f"{ln} ({names.get(int(ln.split()[1]), '?')})" for ln in got if not ln.endswith(" ok")]
    assert not fails and got == want, f"{op} on {target}: {fails[:3] or got[:5]}"


def test_cross_build_has_no_thumb2_and_fits(cortex_m0plus):
    """The ARMv6-M build uses Thumb-1 only (it ran on the micro:bit's M0 above) and the
    module's kernels stay small: text of the kernel objects (arm-none-eabi-size)."""
    import subprocess

    prog = cortex_m0plus.build([*SOURCES, MAIN], include_dirs=[KERNELS],
                               generated={"vectors.h": make_vectors(small=True)},
                               defines={"BVIT_SMALL": None}, name="bvit_cross")
    syms = prog.symbols()
    for fn in ("bvit_lut_rows", "bvit_butterfly", "bvit_layernorm", "bvit_softmax"):
        assert fn in syms
    out = subprocess.run(["arm-none-eabi-objdump", "-d", str(prog.path)], capture_output=True,
                         text=True, check=True).stdout
    # 32-bit Thumb-2 encodings other than BL would show as ".w" forms or sdiv/udiv
    assert " sdiv" not in out and " udiv" not in out
