"""The cross-compilation test bed: the same C gives the same output on the
host, on a Cortex-M0+ (QEMU microbit) and on rv32imc (QEMU virt), and the
instruction counter agrees with what the disassembly predicts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from beds.cross import *  # noqa: F401,F403  (fixtures)
from beds.cross import MCU_TARGETS, BedError, BedTimeout, Insn, c_array, c_header

EXAMPLES = Path(__file__).parent / "beds" / "examples"
DOT = EXAMPLES / "dot.c"


def dot_vectors(n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20240601)
    a = rng.integers(-128, 128, n, dtype=np.int64).astype(np.int8)
    b = rng.integers(-128, 128, n, dtype=np.int64).astype(np.int8)
    # edge values in the first elements, which every prefix covers
    a[:7] = [-128, -128, 127, 127, -1, 0, 1]
    b[:7] = [-128, 127, -128, 127, -128, -128, 127]
    a[-3:] = -128
    b[-3:] = -128
    return a, b


def expected_dot_output(a: np.ndarray, b: np.ndarray) -> tuple[str, int]:
    lines, check = [], 0
    for n in (0, 1, 2, 3, 7, 16, 100, len(a)):
        d = int(np.dot(a[:n].astype(np.int64), b[:n].astype(np.int64)))
        lines.append(f"dot[{n}] = {d}")
        check = (check * 31 + (d & 0xFFFFFFFF)) & 0xFFFFFFFF
    lines.append(f"fixed = {int(np.dot(a[:16].astype(np.int64), b[:16].astype(np.int64)))}")
    x, y = 0xDEADBEEF, 12345
    h = x ^ ((y << 7) & 0xFFFFFFFF)
    h = (h + ((h >> 3) ^ y)) & 0xFFFFFFFF
    h ^= (h << 11) & 0xFFFFFFFF
    lines.append(f"mix32 = {(h + (x >> 5)) & 0xFFFFFFFF}")
    lines.append(f"check = {check}")
    return "\n".join(lines) + "\n", check % 200 + 1


def test_dot_product_identical_on_host_m0plus_rv32(cross_targets):
    a, b = dot_vectors()
    want_out, want_rc = expected_dot_output(a, b)
    header = c_header({"dot_a": a, "dot_b": b})
    outputs = {}
    for name, target in cross_targets.items():
        prog = target.build(
            [DOT, EXAMPLES / "dot_main.c"], include_dirs=[EXAMPLES], generated={"dot_data.h": header}
        )
        res = prog.run(timeout=30).check(want_rc)
        outputs[name] = res.stdout
    assert outputs["host"] == want_out
    assert outputs["cortex-m0plus"] == want_out
    assert outputs["rv32imc"] == want_out


# --- instruction counting ---------------------------------------------------

_ARM_COND = "eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al"


def is_control_flow(insn: Insn, target: str) -> bool:
    m = insn.mnemonic
    if target.startswith("cortex-m0plus"):
        return bool(re.fullmatch(rf"b({_ARM_COND})?(\.[nw])?|bl|blx|bx", m)) or (
            m == "pop" and "pc" in insn.operands
        )
    # RISC-V, as objdump spells base, compressed and pseudo instructions
    return bool(re.fullmatch(r"b(eq|ne|lt|ge|ltu|geu|gt|le|gtu|leu)z?|b(eqz|nez|lez|gez|ltz|gtz)|j|jal|jr|jalr|ret", m))


def branch_target(insn: Insn) -> int:
    m = re.search(r"\b([0-9a-f]+) <", insn.operands)
    assert m, f"no target in {insn}"
    return int(m.group(1), 16)


def predicted_loop_count(insns: list[Insn], trips: int, target: str) -> int:
    """Executed instructions of a function made of: straight code, one loop
    closed by a single backward conditional branch, straight code, return."""
    flow = [i for i in insns if is_control_flow(i, target)]
    assert flow[-1] is insns[-1], f"function must end with its return:\n{insns}"
    assert len(flow) == 2, "expected one loop branch and one return:\n" + "\n".join(map(str, insns))
    back = flow[0]
    head = branch_target(back)
    assert head < back.addr, f"the loop branch must go backwards: {back}"
    pre = [i for i in insns if i.addr < head]
    body = [i for i in insns if head <= i.addr <= back.addr]
    post = [i for i in insns if i.addr > back.addr]
    return len(pre) + trips * len(body) + len(post)


@pytest.fixture(scope="module")
def count_programs(cross_build_dir):
    """The counting example, built for each emulated MCU."""
    from beds.cross import TARGETS

    progs = {}
    for name in MCU_TARGETS:
        t = TARGETS[name]
        if t.available():
            progs[name] = t.build([DOT, EXAMPLES / "count_main.c"], include_dirs=[EXAMPLES])
    return progs


def test_count_straight_line_function(mcu_target, count_programs):
    prog = count_programs[mcu_target.name]
    insns = prog.disassemble("mix32")
    flow = [i for i in insns if is_control_flow(i, mcu_target.name)]
    assert flow == [insns[-1]], "mix32 should compile to straight-line code:\n" + "\n".join(map(str, insns))
    res = prog.count_calls("mix32")
    assert res.calls["mix32"] == [len(insns)] * 9  # 3 direct calls, 6 through mix32_twice


def test_count_fixed_trip_loop_matches_disassembly(mcu_target, count_programs):
    prog = count_programs[mcu_target.name]
    insns = prog.disassemble("dot_i8_fixed")
    want = predicted_loop_count(insns, 16, mcu_target.name)
    assert prog.count("dot_i8_fixed") == want
    # several functions at once, every call reported, in order
    res = prog.count_calls(["dot_i8_fixed", "mix32"])
    assert res.calls["dot_i8_fixed"] == [want] * 3
    assert res.calls["mix32"] == [len(prog.disassemble("mix32"))] * 9
    assert res.total > 3 * want


def test_count_includes_callees_and_tail_calls(mcu_target, count_programs):
    """mix32_twice calls mix32 twice (on rv32 the second call is a tail jump):
    its count is its own straight-line code plus two whole mix32 calls."""
    prog = count_programs[mcu_target.name]
    outer, inner = prog.disassemble("mix32_twice"), prog.disassemble("mix32")
    mix32_addr = prog.symbol("mix32")[0]
    for insn in outer:  # straight-line but for calls / jumps to mix32 and the final return
        if is_control_flow(insn, mcu_target.name) and insn is not outer[-1]:
            assert branch_target(insn) == mix32_addr, insn
    res = prog.count_calls(["mix32_twice", "mix32"])
    assert res.calls["mix32_twice"] == [len(outer) + 2 * len(inner)] * 3
    assert res.calls["mix32"] == [len(inner)] * 9  # tail-called ones included


def test_counts_agree_with_qemu_exec_trace(mcu_target, count_programs, tmp_path):
    """QEMU's own one-instruction-per-block exec trace gives the same numbers:
    instructions in the whole run, and from main's entry to its return
    (main calls printf and the rest of the C library)."""
    prog = count_programs[mcu_target.name]
    log = tmp_path / "exec.log"
    prog.run(extra_args=["-singlestep", "-d", "exec,nochain", "-D", str(log)]).check()
    # "Trace 0: 0x7f.. [cs_base/pc/flags/cflags] symbol"
    pcs = [int(pc, 16) for pc in re.findall(r"^Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/", log.read_text(), re.M)]
    counted = prog.count_calls(["main"])
    assert len(pcs) == counted.total
    i = pcs.index(prog.symbol("main")[0])
    call = prog.disassemble_range(pcs[i - 1], pcs[i - 1] + 4)[0]  # the caller's call of main
    j = pcs.index(call.addr + call.size, i)
    assert counted.calls["main"] == [j - i]


def test_counts_are_repeatable(mcu_target, count_programs):
    prog = count_programs[mcu_target.name]
    runs = [prog.count_calls(["dot_i8_fixed", "main"]) for _ in range(3)]
    assert all(r.calls == runs[0].calls and r.total == runs[0].total for r in runs)
    assert runs[0].stdout == runs[1].stdout != ""
    (main_count,) = runs[0].calls["main"]  # main returns to the startup code, counted too
    assert main_count > 3 * runs[0].calls["dot_i8_fixed"][0]


def test_count_instructions_helper_builds_and_counts(mcu_target):
    from beds.cross import count_instructions

    n = count_instructions(mcu_target.name, [DOT, EXAMPLES / "count_main.c"], "dot_i8_fixed", include_dirs=[EXAMPLES])
    assert 16 * 5 < n < 16 * 12


def test_count_unknown_function_is_a_clear_error(count_programs):
    prog = count_programs["rv32imc"]
    with pytest.raises(BedError, match="no symbol 'no_such_fn'"):
        prog.count("no_such_fn")


def test_host_cannot_count(host_c):
    with pytest.raises(BedError, match="emulated"):
        host_c.count([DOT, EXAMPLES / "count_main.c"], "mix32", include_dirs=[EXAMPLES])


# --- failures are reported, not hidden --------------------------------------


def test_warnings_are_errors(cross_target, tmp_path):
    src = tmp_path / "warn.c"
    src.write_text("int main(void) { int unused; return 0; }\n")
    with pytest.raises(BedError, match="unused"):
        cross_target.build(src)


def test_fault_exits_125(mcu_target, tmp_path):
    src = tmp_path / "fault.c"
    src.write_text(
        "#include <stdio.h>\n"
        "int main(void) {\n"
        '    printf("before\\n");\n'
        "#if defined(__arm__)\n"
        '    __asm__ volatile("udf #0");\n'
        "#else\n"
        '    __asm__ volatile(".word 0");\n'
        "#endif\n"
        "    return 0;\n"
        "}\n"
    )
    res = mcu_target.run(src)
    assert res.returncode == 125
    assert res.stdout.startswith("before\n")
    assert "fault" in res.stdout + res.stderr or "trap" in res.stdout


def test_hang_times_out(rv32imc, tmp_path):
    src = tmp_path / "hang.c"
    src.write_text("int main(void) { for (;;) { __asm__ volatile(\"\"); } }\n")
    with pytest.raises(BedTimeout):
        rv32imc.run(src, timeout=1)


def test_exit_status_and_stderr(cross_target, tmp_path):
    src = tmp_path / "status.c"
    src.write_text(
        "#include <stdio.h>\n#include <stdlib.h>\n"
        'int main(void) { printf("out\\n"); fflush(stdout); exit(42); }\n'
    )
    res = cross_target.run(src)
    assert (res.stdout, res.returncode) == ("out\n", 42)


def test_c_array_edge_literals(host_c, tmp_path):
    vals32 = np.array([-(2**31), 2**31 - 1, 0, -1], dtype=np.int32)
    vals16 = np.array([-(2**15), 2**15 - 1], dtype=np.int16)
    src = tmp_path / "arr.c"
    src.write_text(
        '#include <inttypes.h>\n#include <stdio.h>\n#include "arr.h"\n'
        "int main(void) {\n"
        "    int i;\n"
        '    for (i = 0; i < V32_LEN; i++) printf("%" PRId32 "\\n", v32[i]);\n'
        '    for (i = 0; i < V16_LEN; i++) printf("%d\\n", v16[i]);\n'
        '    for (i = 0; i < U8_LEN; i++) printf("%u\\n", u8[i]);\n'
        "    return 0;\n}\n"
    )
    header = c_header({"v32": vals32, "v16": vals16, "u8": ("uint8_t", [0, 255])}, guard="ARR_H")
    res = host_c.run(src, generated={"arr.h": header}).check()
    assert res.stdout.split() == [str(v) for v in [*vals32, *vals16, 0, 255]]
    with pytest.raises(ValueError):
        c_array("x", [1.5])


def test_big_memory_variant(cortex_m0plus, cortex_m0plus_big, tmp_path):
    """64 KiB of RAM does not fit the microbit's 16 KiB; the mps2-an385
    variant runs the same Cortex-M0+ code with 4 MiB."""
    src = tmp_path / "bigbuf.c"
    src.write_text(
        "#include <stdint.h>\n#include <stdio.h>\n"
        "static int32_t buf[16384];\n"
        "int main(void) {\n"
        "    int32_t i, s = 0;\n"
        "    for (i = 0; i < 16384; i++) buf[i] = i;\n"
        "    for (i = 0; i < 16384; i++) s += buf[i] & 7;\n"
        '    printf("%ld\\n", (long)s);\n'
        "    return 0;\n}\n"
    )
    with pytest.raises(BedError, match="overflow"):
        cortex_m0plus.build(src)
    assert cortex_m0plus_big.run(src).check().stdout == f"{sum(i & 7 for i in range(16384))}\n"


def test_build_cache_follows_included_headers(host_c, tmp_path):
    (tmp_path / "val.h").write_text("#define VAL 1\n")
    src = tmp_path / "val.c"
    src.write_text('#include <stdio.h>\n#include "val.h"\nint main(void) { printf("%d\\n", VAL); return 0; }\n')
    first = host_c.build(src)
    assert host_c.build(src).path == first.path  # cached
    (tmp_path / "val.h").write_text("#define VAL 2\n")
    second = host_c.build(src)
    assert second.path != first.path
    assert second.run().check().stdout == "2\n"


@pytest.mark.parametrize("name", ["host", "cortex-m0plus"])
def test_semihosting_file_input(name, cross_targets, tmp_path):
    """On Arm, newlib's fopen/fread reach host files through semihosting,
    relative to ``cwd``: another way to feed a program big inputs."""
    data = bytes(range(256)) * 40  # 10 KiB, more than half the microbit's RAM
    (tmp_path / "input.bin").write_bytes(data)
    src = tmp_path / "sum.c"
    src.write_text(
        "#include <stdio.h>\n"
        "int main(void) {\n"
        '    FILE *f = fopen("input.bin", "rb");\n'
        "    unsigned char buf[64];\n"
        "    unsigned long n = 0, sum = 0;\n"
        "    size_t got, i;\n"
        "    if (!f) return 2;\n"
        "    while ((got = fread(buf, 1, sizeof buf, f)) > 0)\n"
        "        for (i = 0; i < got; i++, n++) sum += buf[i];\n"
        "    fclose(f);\n"
        '    printf("%lu %lu\\n", n, sum);\n'
        "    return 0;\n}\n"
    )
    res = cross_targets[name].run(src, cwd=tmp_path).check()
    assert res.stdout == f"{len(data)} {sum(data)}\n"


def test_rv32_minstret_under_icount_agrees(rv32imc, tmp_path):
    """With -icount shift=0 the guest's own minstret counts instructions
    exactly; it agrees with the plugin."""
    src = tmp_path / "instret.c"
    src.write_text(
        "#include <stdint.h>\n#include <stdio.h>\n#include \"dot.h\"\n"
        "static uint32_t instret(void) { uint32_t v; __asm__ volatile(\"csrr %0, minstret\" : \"=r\"(v)); return v; }\n"
        "int main(void) {\n"
        "    uint32_t t0 = instret(), t1 = instret();\n"
        "    uint32_t h = mix32(t0, 3u);\n"
        "    uint32_t t2 = instret();\n"
        '    printf("%u %u %u\\n", (unsigned)(t1 - t0), (unsigned)(t2 - t1), (unsigned)(h & 1u));\n'
        "    return 0;\n}\n"
    )
    prog = rv32imc.build([src, DOT], include_dirs=[EXAMPLES])
    first, between, _ = prog.run(extra_args=["-icount", "shift=0"]).check().stdout.split()
    main = prog.disassemble("main")
    i0 = next(k for k, insn in enumerate(main) if insn.operands.endswith("minstret"))
    i1 = next(k for k, insn in enumerate(main) if k > i0 + 1 and insn.operands.endswith("minstret"))
    assert int(first) == 1
    # from the second csrr up to the third: main's own instructions plus one mix32 call
    assert int(between) == (i1 - (i0 + 1)) + prog.count("mix32")


def test_microbit_core_rejects_thumb2(cortex_m0plus, tmp_path):
    """The microbit's core is ARMv6-M: a Thumb-2 sdiv faults, as on an RP2040."""
    src = tmp_path / "sdiv.c"
    src.write_text(
        "#include <stdint.h>\n"
        "int main(void) {\n"
        "    int32_t q, a = 7, b = 2;\n"
        '    __asm__ volatile(".inst.w 0xfb90f0f1" : "=r"(q) : "r"(a), "r"(b));  /* sdiv r0, r0, r1 */\n'
        "    return (int)q;\n}\n"
    )
    res = cortex_m0plus.run(src)
    assert res.returncode == 125 and "fault pc=" in res.stderr
