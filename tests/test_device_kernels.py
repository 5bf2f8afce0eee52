"""The board's integer code (device/bvit: the kernel backends of bvit.ops, bvit.nn,
bvit.frames) against the golden vectors of the numpy reference (tests/golden.py), on real
MicroPythons, bit for bit.

One MicroPython process per port runs every case (tests/device_golden.py) with every kernel
backend that loads there; the tests then check one op of one implementation each, so a
failure names both:
- the unix port (MicroPython 1.29, viper works): backends "viper" and "python";
- the WebAssembly port from npm (1.27, no viper): "python" only, which is also how the
  code runs on CircuitPython (tests/test_device_wasm.py runs the model there).
Implementation "nn" is the code every backend shares (bvit.nn, bvit.frames).
"""

import json
import tempfile
from pathlib import Path

import pytest

import golden
from test_device_wasm import wasm_micropython  # noqa: F401  (fixture)

RUNNER = Path(__file__).with_name("device_golden.py")

# The ops of golden.OPS the board has, and who implements them: every kernel backend
# (the hot loops and the steps bvit.ops lets a backend replace), or the shared bvit.nn.
BACKEND_OPS = ("requant_rows", "relu", "expert_input", "mix", "ternary_rows", "butterfly",
               "matvec8", "linear", "attention", "frame")
NN_OPS = ("requant", "layernorm", "softmax", "residual_add", "topk", "route", "mean_pool")
# The C module's own ops with no board counterpart (the board streams trits, computes cos/sin
# inside the butterfly, and composes the expert in bvit.model, which tests/test_device_model.py
# checks): test_native_host.py and test_native_cross.py check them.
NOT_ON_THE_BOARD = ("ternary_matvec", "ternary_linear", "sincos", "expert")


def _expected(op, case):
    """What tests/device_golden.py prints for a case: the reference in that shape."""
    if "error" in case:
        return "ERR: " + case["error"]
    w = golden.jsonable(case)
    if op == "mix":
        return [w["want_acc"], w["want"]]
    if op == "softmax":
        return [sum(w["want"], [])] * 2                   # into a buffer, and in place
    if op in ("layernorm", "topk", "attention"):
        return sum(w["want"], [])
    if op == "route":
        return [sum(w["want_idx"], []), sum(w["want_gates"], [])]
    if op == "frame":
        return [w["want_pixels"], w["want_tables"], w["want"]]
    return w["want"]


def _run_cases(run):
    """Every board op's cases through `run(runner, cases_path)` (one process): {"backends":
    [...], op: [{implementation: result} per case]}."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cases.jsonl"
        with path.open("w") as f:
            for op in BACKEND_OPS + NN_OPS:
                for c in golden.cases(op):
                    f.write(json.dumps(golden.jsonable(c)) + "\n")
        lines = run(RUNNER, path).strip().splitlines()
    out = json.loads(lines[0])
    it = iter(lines[1:])
    for op in BACKEND_OPS + NN_OPS:
        out[op] = [json.loads(next(it)) for _ in golden.cases(op)]
    assert next(it, None) is None, "the runner printed more lines than there are cases"
    return out


def _check(results, op, impl):
    got = results[op]
    bad = []
    for case, res in zip(golden.cases(op), got):
        want = _expected(op, case)
        r = res[impl]
        variants = r if op in ("ternary_rows", "matvec8") and isinstance(r, list) else [r]
        if any(v != want for v in variants):
            bad.append(f"{case['name']}: {str(r)[:200]}")
    assert not bad, f"{op} on {impl}: {len(bad)} of {len(got)} cases differ from intops: {bad[:3]}"


def test_the_golden_ops_are_all_accounted_for():
    assert sorted(BACKEND_OPS + NN_OPS + NOT_ON_THE_BOARD) == sorted(golden.OPS)


@pytest.fixture(scope="module")
def unix_results(micropython):
    return _run_cases(lambda runner, path: micropython.run(
        runner, args=[path], heapsize="16m", timeout=300).check().stdout)


@pytest.fixture(scope="module")
def wasm_results(wasm_micropython):
    return _run_cases(lambda runner, path: wasm_micropython(
        runner, args=["/cases.jsonl"], copies={path: "/cases.jsonl"}).stdout)


UNIX = ([(op, b) for op in BACKEND_OPS for b in ("viper", "python")] + [(op, "nn") for op in NN_OPS]
        + [("frame", "kframes")])          # the native backend's frame steps (bvit.kframes)
WASM = [(op, "python") for op in BACKEND_OPS] + [(op, "nn") for op in NN_OPS]


def test_unix_micropython_has_viper_and_python(unix_results):
    # a MicroPython built with the native module (docs/native.md) runs it first, as well
    assert unix_results["backends"] in (["viper", "python"], ["native", "viper", "python"])


@pytest.mark.parametrize("op,impl", UNIX)
def test_op_bit_exact_on_unix_micropython(unix_results, op, impl):
    _check(unix_results, op, impl)


def test_native_backend_if_built_in_bit_exact(unix_results):
    if "native" not in unix_results["backends"]:
        pytest.skip("this MicroPython has no bvitnative module (docs/native.md)")
    for op in BACKEND_OPS:
        _check(unix_results, op, "native")


def test_wasm_micropython_has_only_the_pure_kernels(wasm_results):
    assert wasm_results["backends"] == ["python"]


@pytest.mark.parametrize("op,impl", WASM)
def test_op_bit_exact_on_wasm_micropython(wasm_results, op, impl):
    """The WebAssembly MicroPython has no viper: the pure kernels, as on CircuitPython."""
    _check(wasm_results, op, impl)


BAD_TRITS = r"""
from array import array
from bvit import ops
packed = bytearray(6)
for i in range(6):
    packed[i] = 121                 # five zero trits
packed[4] = 243
for name in ops.available():
    try:
        ops.load(name).ternary_rows(packed, 0, 3, 10, array("h", [1] * 10), array("i", [0] * 3))
        print(name, "accepted")
    except ValueError as e:
        print(name, e)
"""


def test_invalid_trit_bytes_are_refused_by_every_backend(micropython):
    out = micropython.run(code=BAD_TRITS).check().stdout.splitlines()
    assert out[-2:] == ["viper packed trits: byte value 243 is not valid (0..242)",
                        "python packed trits: byte value 243 is not valid (0..242)"]


# Hot loops must not allocate: heap_lock() raises MemoryError on any allocation.
NOALLOC = r"""
import micropython
from array import array
from bvit import nn as N, ops
n, rows, dim, heads, T = 64, 256, 64, 4, 49
x = array("h", range(-n // 2, n // 2))
xb = array("b", range(-n // 2, n // 2))
packed = bytes([(i * 7) % 243 for i in range(3 + rows * 13)])
w = array("b", [(i * 5) % 255 - 127 for i in range(rows * n)])
acc = array("i", bytes(4 * rows))
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
        b.ternary_rows(packed, 3, rows, n, x, acc)
        b.matvec8(xb, 0, n, w, rows, acc)
        b.butterfly_ph(x, raw, 0, 2, n)
        N.attention_row(qkv, 0, dim, 2 * dim, 3 * dim, T, dim, heads, 20000, 20, 20000, 30, att,
                        0, srow, hacc, b.attn_scores, b.attn_pv, 5000)
        N.requant_rows(acc, 0, x, 0, n, Ms, shs, 0, bias, -32768, 32767)
        rq(acc, 0, x, 0, n, Ms, shs, 0, bias, -32768, 32767)
        rq(acc, 0, xb, 0, n, Ms, shs, 0, None)
        relu(x, 0, n)
        xin(xb, 0, n, 5, x, n)
        mixadd(acc, x, 20000, n, False)
        mixround(acc, x, n)
        N.layernorm(x, 0, n, G, B, 12, 1000, out8, 0)
        N.softmax(L, 0, 8, 20000, 20, L, 0, cut)
        N.neighbour_sum_rows(L, 8, 0, 16, 2, 1, 8, srow8)   # routing, as bvit.model runs it
        N.topk(srow8, 0, 8, 2, idx, 2)
        N.softmax(sel, 0, 2, 20000, 21, gates, 2)
        N.residual_add(x, 0, x, 0, n, 20000, 10000, 15, x, 0)
    finally:
        micropython.heap_unlock()
    print("ok", name)
"""


def test_hot_loops_do_not_allocate(micropython):
    res = micropython.run(code=NOALLOC, heapsize="512k").check()
    assert res.stdout.split() in (["ok", "viper", "ok", "python"],
                                  ["ok", "native", "ok", "viper", "ok", "python"])
