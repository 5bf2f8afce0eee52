"""Differential fuzz of the model file's rules (bvit.schema): the host reader and the board's
reader accept exactly the same files, refuse the others with the same ModelFormatError
message, and every accepted file gives the same int32 logits on the host and on every
kernel backend of the board.

A few hundred seeded mutations of the tiny test models (plain, smoothed routing, RGB), the
container always valid past its checksum (re-encoded, or the CRC recomputed after a byte
edit), so that the integer model's own rules are what stands: metadata edits (config keys,
quantisation parameters, logit_scale, class names; huge, negative, boundary, float, bool,
null, string, array and object values; deleted and extra keys), section values at the
rules' boundaries and the dtypes' extremes, trit bytes, dtypes and shapes, dropped and extra
sections, truncations. The board is the real MicroPython unix port with a 96 KB heap
(the package precompiled, as on a small board), one process for all files.
"""

import copy
import json
import random
import struct
import zlib

import numpy as np
import pytest

from bvit import schema
from butterflyvit.config import ModelConfig
from butterflyvit.intmodel import IntModel
from butterflyvit.modelfile import ModelFormatError, Trits, decode_model, encode_model
from butterflyvit.quantize import INT_FORMAT, INT_VERSION
from test_device_model import mpy_package
from test_intmodel import VARIANTS, _json_paths, tiny_bytes

CASES = 320
SEED = 20261201
FRAME = bytes(b % 256 for b in range(7, 7 + 64 * 37, 37))     # an 8x8 GRAYSCALE frame
# The documented refusals (docs/model-format.md: the container's, then the integer model's).
REFUSALS = ("bad integer model: ", "not an integer ButterflyViT model", "integer model version",
            "file truncated: ", "section '", "metadata ")

# Reads the files listed in argv[1] with the kernel backend argv[3] (one backend per
# process: a 96 KB heap holds one); for each file one JSON line: ["OK", logits] or
# ["ERR", exception class, message] (["BUG", ...] for anything else).
RUNNER = r"""
import sys, json, gc
import bvit.model
from bvit.frames import Frame
from bvit.model import Classifier
be = sys.argv[3]
KEEP = ("bvit", "bvit.model", "bvit.frames")
frame = Frame(open(sys.argv[2], "rb").read(), 8, 8, "GRAYSCALE")
for line in open(sys.argv[1]):
    net = None
    try:
        net = Classifier(line.strip(), backend=be, weight_buffer=256)
        out = ["OK", list(net.classify_frame(frame))]
    except ValueError as e:
        out = ["ERR", type(e).__name__, e.args[0] if e.args else ""]
    except Exception as e:
        import io
        tb = io.StringIO()
        sys.print_exception(e, tb)
        out = ["BUG", type(e).__name__, str(e), tb.getvalue()]
    if net is not None:
        net.close()
    net = None
    # The kernels go too (a board opens one model per boot; 96 KB does not hold the
    # kernels and the loader at once).
    bvit.model.N = None
    for name in [m for m in sys.modules if m.startswith("bvit.") and m not in KEEP]:
        sys.modules.pop(name)
        try:
            delattr(bvit, name[5:])
        except AttributeError:
            pass
    gc.collect()
    print(json.dumps(out))
"""


# ------------------------------------------------------------------ mutations

def _values_for(rng):
    return rng.choice([0, 1, -1, 2, 3, 5, 7, 15, 16, 29, 30, 31, 61, 62, 63, 16383, 16384, 32767,
                       32768, 65535, (1 << 30) - 1, 1 << 30, (1 << 31) - 1, 1 << 31, (1 << 40) - 1,
                       1 << 40, 1 << 63, -(1 << 31), 10 ** 30, 0.5, 1.0, 16.0, 1e-31, 1e-6, 1e31,
                       1e308, True, False, None, "x", "butterfly", [], [1], [16384, 20],
                       [1, 2, 3], {}, {"shift": 5, "eps": 3}])


def edit_metadata(data, rng):
    m = decode_model(data)
    meta = copy.deepcopy(m.metadata)
    kind = rng.random()
    if kind < 0.15:                       # a config change the arrays may or may not support
        cfg = meta["config"]
        key = rng.choice(sorted(cfg))
        if rng.random() < 0.5:
            cfg[key] = _values_for(rng)
        elif key == "smooth_routing":
            cfg[key] = not cfg[key]
        elif isinstance(cfg[key], int) and not isinstance(cfg[key], bool):
            cfg[key] = rng.choice([1, 2, 4, 8, 16, 2 ** 31, cfg[key] + 1, cfg[key] - 1])
        else:
            del cfg[key]
    elif kind < 0.2:
        tgt = rng.choice([meta["config"], meta["quant"]["blocks"][0]["ffn"]["gates"], meta])
        tgt[rng.choice(["2", "extra", "depth2"])] = rng.choice([1, [16384, 20]])
    else:
        keys = ["logit_scale", "classes", "format", "int_version", "quant", "config"]
        paths = [p for p in _json_paths(meta) if p and p[0] in keys]
        path = rng.choice(paths)
        node = meta
        for k in path[:-1]:
            node = node[k]
        if rng.random() < 0.15:
            del node[path[-1]]
        else:
            node[path[-1]] = _values_for(rng)
    return encode_model(m.arrays(), meta)


def edit_arrays(data, rng):
    m = decode_model(data)
    arrays = m.arrays()
    name = rng.choice(sorted(arrays))
    a = arrays[name]
    kind = rng.random()
    if kind < 0.6 and not isinstance(a, Trits):       # one value at a boundary or extreme
        a = a.copy().ravel()
        info = np.iinfo(a.dtype)
        pool = [info.min, info.max, info.min + 1, 0, -1, 1, 16383, 16384, 24, 25, 62, 63,
                (1 << 30) - 1, 1 << 30, -(1 << 30) + 1, -(1 << 30), 32767, -32767, -32768]
        v = rng.choice([p for p in pool if info.min <= p <= info.max])
        idx = rng.randrange(a.size) if rng.random() < 0.8 else slice(None)
        a[idx] = v
        arrays[name] = a.reshape(m.info(name).shape)
    elif kind < 0.7:                                   # another dtype
        if isinstance(a, Trits):
            arrays[name] = a.values.astype(np.int8)
        else:
            arrays[name] = a.astype(rng.choice([np.int8, np.int16, np.int32, np.uint8]))
    elif kind < 0.8:                                   # another shape
        v = a.values if isinstance(a, Trits) else a
        flat = v.ravel()
        cut = flat[:max(1, flat.size - rng.choice([1, 5, flat.size // 2]))]
        arrays[name] = Trits(cut.reshape(1, -1)) if isinstance(a, Trits) else (
            cut if rng.random() < 0.5 else flat.reshape(1, -1))
    elif kind < 0.9:
        del arrays[name]
    else:
        arrays["zz.extra"] = np.arange(5, dtype=np.int16)       # an extra section: allowed
    return encode_model(arrays, m.metadata)


def edit_bytes(data, rng):
    """Bytes of the sections changed (trit bytes included), the CRC recomputed; or the
    file truncated."""
    m = decode_model(data)
    out = bytearray(data)
    if rng.random() < 0.15:
        return bytes(out[:rng.randrange(len(out))])
    s = m.info(rng.choice(m.names))
    for _ in range(rng.randint(1, 3)):
        if s.nbytes:
            out[s.offset + rng.randrange(s.nbytes)] = rng.choice([0, 121, 242, 243, 255, 0x80,
                                                                  0x7F, rng.randrange(256)])
    struct.pack_into("<I", out, 12, zlib.crc32(bytes(out[16:])))
    return bytes(out)


def mutants(n, seed):
    rng = random.Random(seed)
    bases = {v: tiny_bytes(v) for v in sorted(VARIANTS)}
    files = [bases[v] for v in sorted(bases)]          # the unmutated models first
    while len(files) < n:
        data = bases[rng.choice(sorted(bases))]
        for _ in range(1 if rng.random() < 0.8 else 2):
            try:
                data = rng.choice([edit_metadata, edit_metadata, edit_arrays, edit_bytes])(data, rng)
            except ModelFormatError:
                break                      # a truncated file: no second edit
        files.append(data)
    return files


# ------------------------------------------------------------------ the readers

def host_result(data):
    """["OK", logits] or ["ERR", "ModelFormatError", message]; any other exception fails."""
    try:
        m = IntModel(decode_model(data))
    except ModelFormatError as exc:
        return ["ERR", "ModelFormatError", str(exc)]
    return ["OK", [int(v) for v in m.forward_frame(FRAME, 8, 8, "GRAYSCALE").logits]]


BATCH = 40      # files per MicroPython process (a long run fragments a 96 KB heap)


def board_results(micropython, tmp_path, files):
    """{backend: [result per file]} for every kernel backend this port has."""
    board = tmp_path / "board"
    mpy_package(board)
    paths = []
    for i, data in enumerate(files):
        p = tmp_path / f"m{i:04d}.bvit"
        p.write_bytes(data)
        paths.append(str(p))
    (tmp_path / "frame.gray").write_bytes(FRAME)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    out = {}
    for be in ("python", "viper", "native"):
        lines = []
        for start in range(0, len(paths), BATCH):
            (tmp_path / "list.txt").write_text("\n".join(paths[start:start + BATCH]) + "\n")
            res = micropython.run(script, args=[tmp_path / "list.txt", tmp_path / "frame.gray", be],
                                  heapsize="96k", timeout=600, extra_path=[board]).check()
            lines += [json.loads(line) for line in res.stdout.splitlines()]
            if lines[0][0] == "ERR" and "unavailable on this port" in lines[0][2]:
                break                       # (the C module: a port built with it, docs/native.md)
        else:
            assert len(lines) == len(files)
            out[be] = lines
    return out


def test_host_and_board_accept_the_same_files_with_the_same_logits(micropython, tmp_path):
    files = mutants(CASES, SEED)
    board = board_results(micropython, tmp_path, files)
    assert {"python", "viper"} <= set(board)
    counts = {"refused": 0, "accepted": 0, "accepted, mutated": 0}
    messages = set()
    for i, data in enumerate(files):
        want = host_result(data)
        for be, got in board.items():
            assert got[i] == want, f"file {i}, backend {be}: board {got[i]}, host {want}"
        if want[0] == "ERR":
            counts["refused"] += 1
            messages.add(want[2].split(",")[0][:60])
            assert want[2].startswith(REFUSALS), want
        else:
            counts["accepted"] += 1
            counts["accepted, mutated"] += data not in files[:3]
    print(f"\n{len(files)} files, backends {sorted(board)}: {counts}, {len(messages)} kinds of refusal")
    assert counts["refused"] >= CASES // 3 and counts["accepted, mutated"] >= 20, counts
    assert len(messages) >= 40, sorted(messages)


# ------------------------------------------------------------------ the schema itself

def test_schema_matches_the_host_config_and_constants():
    """The schema's configuration keys are ModelConfig's, its format constants the
    packer's, and its sections the tiny model's (names, dtypes, shapes)."""
    from dataclasses import fields

    assert [r[0] for r in schema._rows(schema.CONFIG)] == [f.name for f in fields(ModelConfig)]
    assert (schema.FORMAT, schema.INT_VERSION) == (INT_FORMAT, INT_VERSION)
    m = decode_model(tiny_bytes("plain"))
    c = schema.config(m.metadata)
    assert {name: (dt, shape) for _, name, dt, shape, _ in schema.sections(c)} == \
        {n: (m.info(n).dtype, m.info(n).shape) for n in m.names}
    slots = dict(schema.board_slots())
    assert slots["EMW"] == schema.names(schema.GLOBAL).index("embed.weight")
    assert slots["Q_GATES"][1] == (17, 18) and slots["QB"] == 23


@pytest.mark.parametrize("value, ok", [(0, True), (16384, True), (32767, True), (1, False),
                                       (16383, False), (32768, False), (-1, False)])
def test_multiplier_rule(value, ok):
    assert schema.outside([16384, value], schema.rules()["mult"]) is not ok


def test_hostile_configs_are_refused_before_any_loop():
    """config.depth = 2**31 (and other huge sizes) are refused at once, not looped over."""
    base = decode_model(tiny_bytes("plain")).metadata
    for key, v in (("depth", 2 ** 31), ("num_experts", 10 ** 9), ("dim", 1 << 20),
                   ("image_size", 1 << 30), ("num_classes", 2 ** 40)):
        meta = copy.deepcopy(base)
        meta["config"][key] = v
        with pytest.raises(schema.ModelError, match=f"config '{key}' has the wrong type or value"):
            schema.check_metadata(meta)
    for v, ok in ((1e308, False), (10 ** 400, False), (0.0, False), (-1.0, False), (True, False),
                  (7.2e-05, True), (3, True)):
        meta = dict(base, logit_scale=v)
        if ok:
            assert schema.check_metadata(meta)[3] == float(v)
        else:
            with pytest.raises(schema.ModelError, match="logit_scale"):
                schema.check_metadata(meta)


def test_board_tables_refuse_what_the_board_refuses(tmp_path):
    """`butterflyvit boards --model`: a configuration the board refuses (depth 2**31) is a
    ModelFormatError with the schema's message, not a figure computed from it."""
    from butterflyvit.boards import model_needs

    m = decode_model(tiny_bytes("plain"))
    meta = copy.deepcopy(m.metadata)
    meta["config"]["depth"] = 2 ** 31
    p = tmp_path / "hostile.bvit"
    p.write_bytes(encode_model(m.arrays(), meta))
    with pytest.raises(ModelFormatError, match=r"config 'depth' has the wrong type or value "
                                               r"\(an integer in 1..64\), got 2147483648"):
        model_needs(p)
    p.write_bytes(tiny_bytes("plain"))
    assert model_needs(p)["buffers"] > 0


# ------------------------------------------------------------------ the metadata's JSON

JSON_TEXTS = [
    '{}', '{"a":[1,2,{"b":null}],"c":-0.5e-3,"d":"x\\u0041\\n","e":[],"f":{}}', ' { "a" : 1 }\n',
    '{"k":"caf\u00e9 \\u00e9","n":-0,"big":123456789012345678901234567890,"e":1E5}',
    '{"a":1,}', '{"a":[1,]}', '{"a" 1}', '{"a":[1 2]}', '{"a":[01]}', '{"a":1,"a":2}',
    '{"a":{"b":1,"b":2},"a":3}', '{"a":NaN}', '{"a":-Infinity}', '{"a":Infinity}', '{"a":1e400}',
    '{"a":-1E400}', '{"a":"\x01"}', '{"a":"\\x"}', '{"a":"\\u12"}', '{1:2}', '{"a":tru}',
    '{"a":1}x', '', '{"a":1.}', '{"a":.5}', '{"a":-}', '{"a":1e}', '{"a":}', '{,}', '[1]',
    '"s"', '{"a":[[],{}],"b":[true,false,null],"c":"a\\"b"}', '{"a":1}{"b":2}', '{"a":"x',
]


def bare_container(meta: bytes) -> bytes:
    """A model file holding only `meta` as its metadata (no sections), CRC included."""
    out = bytearray(struct.pack("<4sHHIIIIHHII", b"BVIT", 1, 64, 64 + len(meta), 0, 64, 0, 80,
                                0, 64, len(meta)) + bytes(28) + meta)
    struct.pack_into("<I", out, 12, zlib.crc32(bytes(out[16:])))
    return bytes(out)


READ_META = r"""
import sys, json
from bvit.loader import load
for line in open(sys.argv[1]):
    try:
        load(line.strip()).file.close()
        print(json.dumps(["OK"]))
    except ValueError as e:
        print(json.dumps(["ERR", type(e).__name__, e.args[0]]))
"""


def test_metadata_json_is_as_strict_on_the_board(micropython, tmp_path):
    """The board's loader refuses the metadata JSON the host refuses (syntax, duplicate
    keys, non-finite numbers) with the host's message (for syntax errors its first words:
    the host adds the parser's detail); the rest it reads on (and refuses as files that
    are not integer models, as the host does)."""
    paths = []
    for i, text in enumerate(JSON_TEXTS):
        p = tmp_path / f"j{i}.bvit"
        p.write_bytes(bare_container(text.encode("utf-8")))
        paths.append(str(p))
    (tmp_path / "list.txt").write_text("\n".join(paths) + "\n")
    (tmp_path / "read.py").write_text(READ_META)
    res = micropython.run(tmp_path / "read.py", args=[tmp_path / "list.txt"], heapsize="256k").check()
    board = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(board) == len(JSON_TEXTS)
    refused = 0
    for text, got in zip(JSON_TEXTS, board):
        try:
            IntModel(decode_model(bare_container(text.encode())))
            want = ["OK"]
        except ModelFormatError as exc:
            want = ["ERR", "ModelFormatError", str(exc)]
            refused += not want[2].startswith("not an integer ButterflyViT model")
        if want[0] == "ERR" and want[2].startswith("metadata is not valid JSON"):
            assert got == ["ERR", "ModelFormatError", "metadata is not valid JSON"], (text, got)
        else:
            assert got == want, (text, got, want)
    assert refused >= 25
