"""Instruction counts of the native kernels on Cortex-M0+ (and rv32imc) under QEMU.

    .venv/bin/python benchmarks/native_bench.py [--out benchmarks/results/native.md]

Builds benchmarks/native_bench_main.c with the kernels (native/kernels/*.c, -O2, the flags
the module gets in firmware) through the cross-compilation test bed (tests/beds/cross.py),
counts the exact instructions of each function under QEMU with the bed's TCG plugin, checks
the butterfly expert's output against the numpy reference, and writes a Markdown report:
per token for one expert at the shipped shape (butterfly expert vs dense int8 expert vs the
naive ternary loop), per token for the feed-forward block, per image for the whole model
(an actual run of the whole integer model's data flow on random weights), the estimated time
at 133 MHz, and the code size of the kernels (arm-none-eabi-size).
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "host"))

from beds.cross import CORTEX_M0PLUS_BIG, RV32IMC, c_header, set_build_dir  # noqa: E402
from butterflyvit import intops as I  # noqa: E402

KERNELS = REPO / "native" / "kernels"
SOURCES = sorted(KERNELS.glob("*.c"))
MAIN = REPO / "benchmarks" / "native_bench_main.c"

N, D, F, E, K, NL, PD, C = 49, 64, 256, 64, 2, 4, 16, 10
MHZ = 133e6
CPI = (1.0, 1.4)  # cycles per instruction assumed for the time estimates (see the report)


def bench_data(seed: int = 11) -> tuple[str, dict]:
    rng = np.random.default_rng(seed)

    def i8(*shape, lo=-127, hi=128):
        return rng.integers(lo, hi, shape).astype(np.int8)

    def mults(rows, scale):
        M, s = I.quantize_multiplier(scale)
        return np.full(rows, M, np.int16), np.full(rows, s, np.uint8)

    def packed(rows, n):
        t = rng.choice(np.array([-1, 0, 1]), size=(rows, n), p=[0.33, 0.34, 0.33]).astype(np.int8)
        return np.frombuffer(I.pack_trits(t), np.uint8).copy()

    lp = I.layernorm_params(rng.normal(1, 0.2, D), rng.normal(0, 0.2, D), 1e-5, 1 / 256, 1 / 40)
    A = {
        "tokens": i8(N * PD, lo=-100, hi=100), "bench_x": i8(D, lo=-100, hi=100),
        "embed_w": i8(D * PD), "embed_b": rng.integers(-5000, 5000, D).astype(np.int32),
        "lin_m": mults(D, 0.1)[0], "lin_s": mults(D, 0.1)[1],
        "ln_g": lp.G.astype(np.int32), "ln_b": lp.B.astype(np.int32),
        "qkv_w": i8(3 * D * D), "qkv_b": rng.integers(-5000, 5000, 3 * D).astype(np.int32),
        "qkv_m": mults(3 * D, 0.003)[0], "qkv_s": mults(3 * D, 0.003)[1],
        "proj_w": i8(D * D), "proj_b": rng.integers(-5000, 5000, D).astype(np.int32),
        "router_w": i8(E * D),
        "w_in_packed": packed(F, D), "w_in_m": mults(F, 0.15)[0], "w_in_s": mults(F, 0.15)[1],
        "phi_ph": (rng.normal(0, 0.5, E * NL * 32) * 65536 / (2 * np.pi)).astype(np.int64).astype(np.uint16),
        "theta_ph": (rng.normal(0, 0.5, E * NL * 128) * 65536 / (2 * np.pi)).astype(np.int64).astype(np.uint16),
        "w_out_packed": packed(D, F), "w_out_bias": rng.integers(-5000, 5000, D).astype(np.int32),
        "w_out_m": mults(D, 0.15)[0], "w_out_s": mults(D, 0.15)[1],
        "head_w": i8(C * D), "head_b": rng.integers(-5000, 5000, C).astype(np.int32),
        "dense_w1": i8(F * D), "dense_w2": i8(D * F),
    }
    sM, sS = I.softmax_multiplier(0.05 * 0.05 / 4)
    oM, oS = I.quantize_multiplier(2.0**-15)
    gM, gS = I.softmax_multiplier(1 / 3000)
    Ma, Mb, rsh = I.residual_params(1.0, 1.0, 1.2)
    pM, pS = I.quantize_multiplier(1 / 49)
    defines = dict(LN_SHIFT=lp.shift, LN_E=int(lp.E), SCORE_M=sM, SCORE_S=sS, ATT_OUT_M=oM,
                   ATT_OUT_S=oS, GATE_M=gM, GATE_S=gS, RES_MA=Ma, RES_MB=Mb, RES_SH=rsh,
                   POOL_M=pM, POOL_S=pS)
    text = c_header(A, guard="BENCH_DATA_H")
    text = text.replace("#endif /* BENCH_DATA_H */",
                        "".join(f"#define {k} {v}\n" for k, v in defines.items()) + "#endif\n")
    return text, A


def expert_reference(A) -> list[int]:
    ph_in, ph_out = A["phi_ph"][: NL * 32], A["theta_ph"][: NL * 128]
    ci, si = I.sincos_q14(ph_in)
    co, so = I.sincos_q14(ph_out)
    u = I.butterfly_q14(A["bench_x"].astype(np.int64) * 32, ci.reshape(NL, -1), si.reshape(NL, -1))
    h = I.requant(I.ternary_matvec(A["w_in_packed"].tobytes(), F, D, u), A["w_in_m"], A["w_in_s"], 16)
    return I.relu(I.butterfly_q14(h, co.reshape(NL, -1), so.reshape(NL, -1))).tolist()


FUNCS = ["bvit_expert_forward", "bvit_rot_expand", "naive_expert", "dense_expert", "dense_expert_full",
         "bvit_mix",
         "bvit_ternary_matvec_lut_i16", "bvit_ternary_matvec_i16", "butterfly_ffn_token",
         "dense_ffn_token", "bvit_butterfly32", "bvit_lut_build_i32", "bvit_lut_rows",
         "bvit_requant_q16_inplace", "bvit_linear", "bvit_relu_i16"]
STAGES = ["model_forward", "stage_embed", "stage_attention", "stage_router", "stage_experts",
          "stage_mix_out", "stage_head", "bvit_rot_expand", "bvit_expert_forward", "bvit_attention",
          "bvit_layernorm", "bvit_ternary_linear"]
HELPERS = ["__aeabi_uidiv", "__aeabi_uidivmod", "__aeabi_lmul", "__aeabi_llsl", "__aeabi_llsr",
           "__aeabi_lasr", "__aeabi_uldivmod", "__aeabi_ldivmod", "__udivsi3", "__muldi3",
           "__ashldi3", "__lshrdi3", "__ashrdi3"]


def run_target(target, header, A):
    prog = target.build([*SOURCES, MAIN], include_dirs=[KERNELS], generated={"bench_data.h": header},
                        name="native_bench")
    syms = prog.symbols()
    res = prog.count_calls(FUNCS, timeout=600)
    out = res.stdout
    got = [int(v) for v in re.search(r"^expert (.*)$", out, re.M).group(1).split()]
    if got != expert_reference(A):
        raise SystemExit(f"[{target.name}] the expert's output differs from the numpy reference")
    if "naive_equal 1" not in out:
        raise SystemExit(f"[{target.name}] the naive expert's output differs")
    model = target.build([*SOURCES, MAIN], include_dirs=[KERNELS], generated={"bench_data.h": header},
                         defines={"BENCH_MODEL_ONLY": None}, name="native_bench_model")
    helpers = [h for h in HELPERS if h in model.symbols()]
    mres = model.count_calls(STAGES + helpers, timeout=900)
    used = int(re.search(r"used_experts (\d+)", mres.stdout).group(1))
    return prog, res.calls, mres.calls, used, helpers, syms


# Cortex-M0+ cycles per instruction (ARM DDI 0484C, with the RP2040's single-cycle
# multiplier; no wait states: code and data assumed in cache or SRAM)
def _cycles(mn: str, ops: str, taken: bool) -> int:
    m = mn.split(".")[0]
    if m in ("ldr", "ldrb", "ldrh", "ldrsb", "ldrsh", "str", "strb", "strh"):
        return 2
    if m in ("ldmia", "ldm", "stmia", "stm", "push", "pop"):
        n = ops.count(",") + 1
        for r in re.findall(r"r(\d+)-r(\d+)", ops):
            n += int(r[1]) - int(r[0])
        return 1 + n + (2 if m == "pop" and "pc" in ops else 0)
    if m == "bl":
        return 3
    if m in ("bx", "blx"):
        return 2
    if m == "b" or (m.startswith("b") and m[1:] in ("eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs",
                                                    "vc", "hi", "ls", "ge", "lt", "gt", "le")):
        return 2 if taken else 1
    if m in ("mov", "add") and ops.startswith("pc"):
        return 2
    return 1


def measured_cpi(target, header) -> dict:
    """Exact instruction mix of one butterfly expert and one dense expert from QEMU's exec
    trace, turned into Cortex-M0+ cycles: {function: (instructions, cycles)}."""
    prog = target.build([*SOURCES, MAIN], include_dirs=[KERNELS], generated={"bench_data.h": header},
                        defines={"BENCH_CPI": None}, name="native_bench_cpi")
    log = build_dir_path() / "cpi_trace.log"
    prog.run(extra_args=["-singlestep", "-d", "exec,nochain", "-D", str(log)], timeout=600).check()
    pcs = [int(pc, 16) for pc in re.findall(r"^Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/", log.read_text(), re.M)]
    log.unlink()
    out = subprocess.run([target._tool("objdump"), "-d", "--no-show-raw-insn", str(prog.path)],
                         capture_output=True, text=True, check=True).stdout
    insn = {}
    rows = re.findall(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$", out, re.M)
    for i, (a, mn, ops) in enumerate(rows):
        nxt = int(rows[i + 1][0], 16) if i + 1 < len(rows) else int(a, 16) + 2
        insn[int(a, 16)] = (mn, ops.split("@")[0].strip(), nxt - int(a, 16))
    res = {}
    for fn in ("bvit_expert_forward", "dense_expert"):
        entry = prog.symbol(fn)[0]
        i = pcs.index(entry)
        prev = pcs[i - 1]
        ret = prev + insn[prev][2]
        n = cyc = 0
        while pcs[i] != ret:
            mn, ops, size = insn[pcs[i]]
            cyc += _cycles(mn, ops, pcs[i + 1] != pcs[i] + size)
            n += 1
            i += 1
        res[fn] = (n, cyc)
    return res


def build_dir_path() -> Path:
    from beds.cross import build_dir
    return build_dir()


def code_size() -> list[tuple[str, int]]:
    """text bytes of each kernel object, as the module compiles them for an RP2040."""
    rows = []
    tmp = Path("/tmp") / f"bvit-size-{int(time.time())}"
    tmp.mkdir(exist_ok=True)
    for src in SOURCES:
        obj = tmp / (src.stem + ".o")
        subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb", "-std=c99", "-O2",
                        "-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra", "-Werror",
                        "-c", str(src), "-o", str(obj)], check=True)
        out = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True,
                             check=True).stdout.splitlines()[1].split()
        rows.append((src.name, int(out[0]), int(out[1]) + int(out[2])))
    return rows


def fmt(n):
    return f"{n:,}"


def ms(n, cpi):
    return n * cpi / MHZ * 1e3


def report(results, sizes, used, cmd, cpi) -> str:
    arm = results["cortex-m0plus"]
    rv = results.get("rv32imc")
    c, m = arm["calls"], arm["model"]
    expert = c["bvit_expert_forward"][0]
    expand = c["bvit_rot_expand"][0] + c["bvit_rot_expand"][1]
    dense = c["dense_expert"][0]
    dense_full = c["dense_expert_full"][0]
    naive = c["naive_expert"][0]
    lut, plain = c["bvit_ternary_matvec_lut_i16"][0], c["bvit_ternary_matvec_i16"][0]
    bf_ffn, dn_ffn = c["butterfly_ffn_token"][0], c["dense_ffn_token"][0]
    b32 = c["bvit_butterfly32"]
    model = m["model_forward"][0]
    L = []
    L.append("# Native kernels: exact instruction counts (Cortex-M0+ under QEMU)\n")
    L.append(f"Command: `{cmd}`  ")
    L.append("Kernels: `native/kernels/*.c`, `arm-none-eabi-gcc -mcpu=cortex-m0plus -mthumb -O2` "
             "(the flags `native/micropython.cmake` gives them on rp2); driver "
             "`benchmarks/native_bench_main.c`; counts by the test bed's QEMU plugin "
             "(`docs/test-beds.md`): every instruction from a function's entry to its return, "
             "callees (libgcc helpers included) counted.  The butterfly expert's output was "
             "checked against the numpy reference in the same run.\n")
    L.append("Shape: the shipped *pico* model: 49 tokens, dim 64, ffn 256, 4 blocks, 4 heads, "
             "64 experts, top-2, n_l = 4 butterfly stages.\n")
    L.append("## One expert, one token (dim 64 -> ffn 256)\n")
    L.append("| | instructions | vs dense int8 |")
    L.append("|---|---:|---:|")
    L.append(f"| **butterfly expert**: B(phi), ternary product from packed trits (LUT), requant16, B(theta), ReLU (`bvit_expert_forward`) | **{fmt(expert)}** | **{expert / dense:.3f}x** |")
    L.append(f"| butterfly expert + expanding its 640 phases to cos/sin for this one token (`bvit_rot_expand`; worst case: an expert used by a single token) | {fmt(expert + expand)} | {(expert + expand) / dense:.2f}x |")
    L.append(f"| dense int8 expert of the same shape: int8 linear 64 -> 256, requant16, ReLU (`bvit_linear` + `bvit_relu_i16`) | {fmt(dense)} | 1.00x |")
    L.append(f"| the butterfly expert with the naive ternary loop (plain form: each trit decoded and applied) and the int16 butterflies | {fmt(naive)} | {naive / dense:.2f}x |")
    L.append(f"| a standard MoE expert: int8 64 -> 256, ReLU, 256 -> 64 (two matrices; the butterfly expert's output projection is shared, counted per token below) | {fmt(dense_full)} | {dense_full / dense:.2f}x |")
    L.append("")
    L.append("Parts of the butterfly expert:\n")
    L.append("| part | instructions |")
    L.append("|---|---:|")
    L.append(f"| B(phi) on 64 (128 rotations, no saturation check needed) | {fmt(b32[0])} |")
    L.append(f"| 13 lookup tables of 243 partial sums (`bvit_lut_build_i32`) | {fmt(c['bvit_lut_build_i32'][0])} |")
    L.append(f"| 256 rows x 13 packed bytes, one lookup each (`bvit_lut_rows`) | {fmt(c['bvit_lut_rows'][0])} |")
    L.append(f"| requantisation to int16, 256 rows (`bvit_requant_q16_inplace`) | {fmt(c['bvit_requant_q16_inplace'][0])} |")
    L.append(f"| B(theta) on 256 (512 rotations) | {fmt(b32[1])} |")
    L.append(f"| rest (scaling, padding, ReLU, calls) | {fmt(expert - b32[0] - b32[1] - c['bvit_lut_build_i32'][0] - c['bvit_lut_rows'][0] - c['bvit_requant_q16_inplace'][0])} |")
    L.append(f"| *expanding the expert's phases (per expert and image, not per token)* | *{fmt(expand)}* |")
    L.append("")
    L.append(f"The ternary product alone (256 x 64, int16 input): LUT form {fmt(lut)}, plain form "
             f"{fmt(plain)} ({plain / lut:.1f}x more).\n")
    L.append("## One token's feed-forward block (top-2)\n")
    L.append("| | instructions |")
    L.append("|---|---:|")
    L.append(f"| butterfly: 2 experts + mixture + shared ternary W_out 256 -> 64 with bias | {fmt(bf_ffn)} |")
    L.append(f"| standard MoE, int8: 2 experts of 64 -> 256 -> 64 (ReLU) + mixture | {fmt(dn_ffn)} |")
    L.append(f"| ratio | {bf_ffn / dn_ffn:.2f}x |")
    L.append("")
    L.append("## One image, the whole model\n")
    L.append("An actual run of the integer model's data flow (`docs/integer-model.md` steps 1-19) "
             "with the kernels, on random weights in the quantiser's ranges (`model_forward`): "
             "the experts run grouped by expert, each expert used in a layer has its phases "
             f"expanded once ({used} expansions in the 4 layers of this run, of 392 token-expert "
             "pairs).\n")
    L.append("| stage (4 layers unless noted) | instructions | share |")
    L.append("|---|---:|---:|")
    names = [("stage_embed", "patch embedding (once)"), ("stage_attention", "LN1, qkv, attention, proj, residual"),
             ("stage_router", "LN2, router, top-2, gates"), ("stage_experts", "experts (incl. phase expansion)"),
             ("stage_mix_out", "mixture, ternary W_out, residual"), ("stage_head", "pool, LN, head (once)")]
    for key, label in names:
        tot = sum(m[key])
        L.append(f"| {label} | {fmt(tot)} | {100 * tot / model:.1f}% |")
    L.append(f"| **whole model** | **{fmt(model)}** | 100% |")
    L.append("")
    L.append(f"Within the experts: `bvit_expert_forward` {fmt(sum(m['bvit_expert_forward']))} "
             f"({len(m['bvit_expert_forward'])} calls), `bvit_rot_expand` {fmt(sum(m['bvit_rot_expand']))} "
             f"({len(m['bvit_rot_expand'])} calls); attention core {fmt(sum(m['bvit_attention']))}; "
             f"LayerNorm {fmt(sum(m['bvit_layernorm']))} ({len(m['bvit_layernorm'])} tokens).\n")
    hl = [h for h in results["cortex-m0plus"]["helpers"] if m.get(h)]
    if hl:
        L.append("libgcc helpers called in the whole model (their instructions are inside the "
                 "counts above): " + ", ".join(f"`{h}` {len(m[h])} calls / {fmt(sum(m[h]))} instructions"
                                               for h in hl) + ".\n")
    L.append("What a board runs end to end (the device code on real MicroPython, these kernels "
             "called once per layer through `bvitnative`): `benchmarks/board_path.py`, results in "
             "`benchmarks/results/board_path.md`.\n")
    L.append("### Estimated time on an RP2040 (133 MHz)\n")
    (ne, ce), (nd, cd) = cpi["bvit_expert_forward"], cpi["dense_expert"]
    L.append("Cycles = instructions x CPI.  A Cortex-M0+ runs ALU ops and MULS (RP2040: single-cycle "
             "multiplier) in 1 cycle, loads and stores in 2, LDM/STM/PUSH/POP in 1 + registers, "
             "taken branches in 2, BL in 3.  Applied to the exact instruction sequence of one "
             f"call (QEMU's exec trace): butterfly expert {fmt(ce)} cycles for {fmt(ne)} "
             f"instructions, **CPI {ce / ne:.2f}**; dense int8 expert {fmt(cd)} cycles for "
             f"{fmt(nd)}, **CPI {cd / nd:.2f}** (cycle ratio {ce / cd:.2f}x).  The estimates "
             "below use **CPI 1.4** for everything, above both (1.0 is the floor).  Code runs "
             "from flash through the RP2040's 16 KiB XIP cache; the hot loops are small, so "
             "cache misses are not modelled.\n")
    L.append("| | instructions | 133 MHz, CPI 1.0 | 133 MHz, CPI 1.4 |")
    L.append("|---|---:|---:|---:|")
    L.append(f"| one butterfly expert, one token | {fmt(expert)} | {ms(expert, 1.0):.3f} ms | {ms(expert, 1.4):.3f} ms |")
    L.append(f"| one dense int8 expert, one token | {fmt(dense)} | {ms(dense, 1.0):.3f} ms | {ms(dense, 1.4):.3f} ms |")
    L.append(f"| **whole model, one image** | **{fmt(model)}** | **{ms(model, 1.0):.0f} ms** | **{ms(model, 1.4):.0f} ms** |")
    worst = model + (392 - used) * expand
    L.append(f"| whole model, phases expanded per token-expert pair (no grouping) | {fmt(worst)} | {ms(worst, 1.0):.0f} ms | {ms(worst, 1.4):.0f} ms |")
    L.append("")
    L.append("Target (issue 5): butterfly expert at most 0.5x the dense int8 expert: "
             f"**{expert / dense:.3f}x** in instructions ({'met' if expert / dense <= 0.5 else 'not met'}), "
             f"{ce / cd:.3f}x in estimated cycles; "
             f"whole model under 1 s per image on an RP2040: **{ms(model, 1.4):.0f} ms** at CPI 1.4 "
             f"({'met' if ms(model, 1.4) < 1000 else 'not met'}).\n")
    if rv is not None:
        rc, rm = rv["calls"], rv["model"]
        L.append("## rv32imc (ESP32-C3 class), same code\n")
        L.append("| | instructions |")
        L.append("|---|---:|")
        L.append(f"| butterfly expert | {fmt(rc['bvit_expert_forward'][0])} ({rc['bvit_expert_forward'][0] / rc['dense_expert'][0]:.2f}x dense) |")
        L.append(f"| dense int8 expert | {fmt(rc['dense_expert'][0])} |")
        L.append(f"| naive ternary expert | {fmt(rc['naive_expert'][0])} |")
        L.append(f"| whole model | {fmt(rm['model_forward'][0])} |")
        L.append("")
    L.append("## Code size (Cortex-M0+, -O2, `arm-none-eabi-size` of each object)\n")
    L.append("| file | text | data+bss |")
    L.append("|---|---:|---:|")
    for name, text, data in sizes:
        L.append(f"| `{name}` | {fmt(text)} | {data} |")
    L.append(f"| **kernels, total** | **{fmt(sum(s[1] for s in sizes))}** | {sum(s[2] for s in sizes)} |")
    L.append("")
    L.append("The binding (`native/bvitnative.c`) needs MicroPython's headers, so it is not "
             "compiled here; see docs/native.md for its size in a unix-port build.  RAM: the "
             "kernels allocate nothing; the LUT form needs a caller scratch of 3,328 int32 "
             "(13 KiB), the expert 320 int32 more, and the rotation tables of one expert "
             "1,280 int32 (5 KiB).\n")
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "native.md"))
    ap.add_argument("--no-rv32", action="store_true")
    args = ap.parse_args(argv)
    set_build_dir(Path("/tmp") / "bvit-native-bench")
    header, A = bench_data()
    results = {}
    for target in [CORTEX_M0PLUS_BIG] + ([] if args.no_rv32 else [RV32IMC]):
        t0 = time.time()
        _prog, calls, model, used, helpers, _ = run_target(target, header, A)
        key = "cortex-m0plus" if target is CORTEX_M0PLUS_BIG else target.name
        results[key] = dict(calls=calls, model=model, helpers=helpers)
        print(f"{target.name}: expert {calls['bvit_expert_forward'][0]}, dense {calls['dense_expert'][0]}, "
              f"model {model['model_forward'][0]} ({time.time() - t0:.0f} s)")
    used = used  # noqa: PLW0127  (from the last target: the same routing on both)
    cmd = "python benchmarks/native_bench.py" + (" --no-rv32" if args.no_rv32 else "")
    cpi = measured_cpi(CORTEX_M0PLUS_BIG, header)
    text = report(results, code_size(), used, cmd, cpi)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
