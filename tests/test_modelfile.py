"""The packed model file (host side): round trips, every reader error, and a bounded fuzzer.

The error cases and the mutation generator here are reused by test_modelfile_device.py,
which runs the board's reader (device/bvit/modelfile.py) on the real MicroPython.
"""

import json
import random
import re
import struct
import time
import zlib

import numpy as np
import pytest

from butterflyvit.modelfile import (
    ALIGN, ENTRY_SIZE, HEADER_SIZE, MAGIC, ModelFormatError, Trits, decode_model, encode_model,
    pack_trit5, read_model, trit5_row_bytes, unpack_trit5, write_model)

# ------------------------------------------------------------------ building blocks

# Header fields: (offset, struct code) as docs/model-format.md lists them.
HEADER_FIELDS = {
    "magic": (0, "4s"), "version": (4, "H"), "header_size": (6, "H"), "file_size": (8, "I"),
    "crc32": (12, "I"), "table_offset": (16, "I"), "section_count": (20, "I"),
    "entry_size": (24, "H"), "reserved26": (26, "H"), "metadata_offset": (28, "I"),
    "metadata_size": (32, "I"), "reserved36": (36, "28s"),
}
# Section-table entry fields, relative to the entry.
ENTRY_FIELDS = {
    "name": (0, "48s"), "dtype": (48, "B"), "ndim": (49, "B"), "reserved50": (50, "H"),
    "dim0": (52, "I"), "dim1": (56, "I"), "dim2": (60, "I"), "dim3": (64, "I"),
    "offset": (68, "I"), "nbytes": (72, "I"), "reserved76": (76, "I"),
}


def fix_crc(data: bytearray) -> bytearray:
    struct.pack_into("<I", data, 12, zlib.crc32(bytes(data[16:])))
    return data


def setf(data, field, value, entry=None, crc=True) -> bytes:
    """A copy of data with one header field (or field of table entry `entry`) set."""
    out = bytearray(data)
    if entry is None:
        offset, code = HEADER_FIELDS[field]
    else:
        offset, code = ENTRY_FIELDS[field]
        offset += struct.unpack_from("<I", data, 16)[0] + entry * ENTRY_SIZE
    struct.pack_into("<" + code, out, offset, value)
    return bytes(fix_crc(out) if crc else out)


def getf(data, field, entry=None):
    if entry is None:
        offset, code = HEADER_FIELDS[field]
    else:
        offset, code = ENTRY_FIELDS[field]
        offset += struct.unpack_from("<I", data, 16)[0] + entry * ENTRY_SIZE
    return struct.unpack_from("<" + code, data, offset)[0]


def set_bytes(data, offset, raw, crc=True) -> bytes:
    out = bytearray(data)
    out[offset:offset + len(raw)] = raw
    return bytes(fix_crc(out) if crc else out)


def set_metadata(data, text: bytes) -> bytes:
    """Replace the metadata bytes in place (same length: padded with spaces)."""
    off, size = getf(data, "metadata_offset"), getf(data, "metadata_size")
    assert len(text) <= size, (text, size)
    return set_bytes(data, off, text + b" " * (size - len(text)))


BASE_META = {"config": {"dim": 8, "depth": 1}, "classes": ["cat", "dog"], "mean": 1.5,
             "name": "test-model"}


def base_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "a.trits": Trits(rng.integers(-1, 2, (3, 7))),       # cols % 5 = 2: padded rows
        "b.int8": rng.integers(-128, 128, (2, 3, 5), dtype=np.int8),
        "c.int16": rng.integers(-2**15, 2**15, (4,), dtype=np.int16),
        "d.int32": rng.integers(-2**31, 2**31, (2, 2), dtype=np.int32),
        "e.uint8": rng.integers(0, 256, (9,), dtype=np.uint8),
    }


def base_model(seed=0) -> bytes:
    return encode_model(base_arrays(seed), BASE_META)


def entry_index(data, name):
    count = getf(data, "section_count")
    for i in range(count):
        if getf(data, "name", i).rstrip(b"\0") == name.encode():
            return i
    raise KeyError(name)


def error_cases():
    """(case id, file bytes, host message regex, device message or None=same as host,
    device_lax: the board's lenient JSON parser may accept it)."""
    d = base_model()
    n = len(d)
    crc = getf(d, "crc32")
    t = entry_index(d, "a.trits")
    i8 = entry_index(d, "b.int8")
    u8 = entry_index(d, "e.uint8")
    t_off = getf(d, "offset", t)
    meta_end = getf(d, "metadata_offset") + getf(d, "metadata_size")
    bad_crc = bytearray(d)
    bad_crc[-1] ^= 0x01
    actual = zlib.crc32(bytes(bad_crc[16:]))
    c = []

    def add(case, data, msg, device=None, lax=False):
        c.append((case, bytes(data), msg, device, lax))

    add("magic", set_bytes(d, 0, b"BVIX", crc=False),
        re.escape("not a butterflyvit model file (magic b'BVIX', expected b'BVIT')"))
    add("magic-binary", set_bytes(d, 0, b"\x89'\\\x00", crc=False),
        re.escape("not a butterflyvit model file (magic b'\\x89\\x27\\x5c\\x00', expected b'BVIT')"))
    add("empty", b"", re.escape("not a butterflyvit model file (magic b'', expected b'BVIT')"))
    add("short-magic", b"BV", re.escape("not a butterflyvit model file (magic b'BV', expected b'BVIT')"))
    add("short-header", d[:40], re.escape("file truncated: 40 bytes, shorter than the 64-byte header"))
    add("version", setf(d, "version", 2), re.escape("unsupported format version 2 (this reader reads version 1)"))
    add("version0", setf(d, "version", 0), re.escape("unsupported format version 0 (this reader reads version 1)"))
    add("header-size", setf(d, "header_size", 80), re.escape("bad header size 80 (version 1 headers are 64 bytes)"))
    add("truncated", d[:-5], re.escape(f"file truncated: header says {n} bytes, file has {n - 5}"))
    add("truncated-to-header", d[:64], re.escape(f"file truncated: header says {n} bytes, file has 64"))
    add("trailing", d + b"\0", re.escape(f"file too long: header says {n} bytes, file has {n + 1} (trailing data)"))
    add("checksum", bad_crc, re.escape(f"checksum mismatch: header says 0x{crc:08x}, contents give "
                                       f"0x{actual:08x} (file corrupted)"))
    add("checksum-field", setf(d, "crc32", crc ^ 0x80000000, crc=False),
        re.escape(f"checksum mismatch: header says 0x{crc ^ 0x80000000:08x}, contents give 0x{crc:08x}"))
    add("reserved26", setf(d, "reserved26", 1), re.escape("reserved header field at offset 26 is not zero"))
    add("reserved36", set_bytes(d, 50, b"\x01"), re.escape("reserved header bytes 36..63 are not zero"))
    add("entry-size", setf(d, "entry_size", 64), re.escape("bad section entry size 64 (version 1 entries are 80 bytes)"))
    add("table-in-header", setf(d, "table_offset", 32),
        re.escape("section table at offset 32 overlaps the header (which ends at 64)"))
    add("table-past-end", setf(d, "section_count", 1000),
        re.escape(f"section table (1000 entries of 80 bytes at offset 64) runs past the end of the file ({n} bytes)"))
    add("table-count-huge", setf(d, "section_count", 0xFFFFFFFF),
        re.escape(f"section table (4294967295 entries of 80 bytes at offset 64) runs past the end"))
    add("meta-in-table", setf(d, "metadata_offset", 100),
        re.escape(f"metadata at offset 100 overlaps the section table (which ends at {64 + 5 * 80})"))
    add("meta-past-end", setf(d, "metadata_size", n),
        re.escape(f"metadata ({n} bytes at offset {64 + 5 * 80}) runs past the end of the file ({n} bytes)"))
    add("name-after-nul", set_bytes(d, 64 + 9, b"x"),  # "a.trits" + NUL, then garbage
        re.escape("section #0: name field has bytes after its terminating NUL"))
    add("name-empty", setf(d, "name", b"", 0), re.escape("section #0: empty name"))
    add("name-space", setf(d, "name", b"a trits", 0),
        re.escape("section #0: name b'a trits' has a byte that is not printable ASCII"))
    add("name-high", setf(d, "name", b"a.tr\xe9ts", 0),
        re.escape("section #0: name b'a.tr\\xe9ts' has a byte that is not printable ASCII"))
    add("name-duplicate", setf(d, "name", b"a.trits", 1), re.escape("duplicate section name 'a.trits'"))
    add("name-order", setf(d, "name", b"zz", 1),
        re.escape("section names out of order: 'c.int16' after 'zz' (names must be sorted)"))
    add("dtype0", setf(d, "dtype", 0, i8), re.escape("section 'b.int8': unknown dtype code 0"))
    add("dtype6", setf(d, "dtype", 6, i8), re.escape("section 'b.int8': unknown dtype code 6"))
    add("reserved50", setf(d, "reserved50", 7, i8), re.escape("section 'b.int8': reserved entry fields are not zero"))
    add("reserved76", setf(d, "reserved76", 7, i8), re.escape("section 'b.int8': reserved entry fields are not zero"))
    add("ndim5", setf(d, "ndim", 5, i8), re.escape("section 'b.int8': ndim 5 is more than 4"))
    add("dim-beyond-ndim", setf(d, "dim3", 1, i8),
        re.escape("section 'b.int8': shape entries beyond ndim 3 are not zero"))
    add("trit5-1d", setf(setf(d, "ndim", 1, t), "dim1", 0, t),
        re.escape("section 'a.trits': a trit5 section must be 2-D, got ndim 1"))
    add("size-mismatch", setf(d, "dim0", 3, i8),
        re.escape("section 'b.int8': int8 shape (3, 3, 5) needs 45 bytes, table says 30"))
    add("size-trit5", setf(d, "dim1", 11, t),
        re.escape("section 'a.trits': trit5 shape (3, 11) needs 9 bytes, table says 6"))
    add("size-overflow", setf(setf(d, "dim0", 0xFFFFFFFF, i8), "dim1", 0xFFFFFFFF, i8),
        re.escape("section 'b.int8': int8 shape (4294967295, 4294967295, 5) needs more than 4294967295 "
                  "bytes, table says 30"))
    add("unaligned", setf(d, "offset", getf(d, "offset", i8) + 4, i8),
        re.escape(f"section 'b.int8': offset {getf(d, 'offset', i8) + 4} is not a multiple of 16"))
    add("overlap-prev", setf(d, "offset", t_off, i8),
        re.escape(f"section 'b.int8' at offset {t_off} overlaps the previous region (which ends at {t_off + 6})"))
    meta_al = meta_end // 16 * 16
    add("overlap-meta", setf(d, "offset", meta_al, t),
        re.escape(f"section 'a.trits' at offset {meta_al} overlaps the previous region (which ends at {meta_end})"))
    past = -(-n // 16) * 16
    add("past-end", setf(d, "offset", past, u8),
        re.escape(f"section 'e.uint8' (9 bytes at offset {past}) runs past the end of the file ({n} bytes)"))
    add("meta-utf8", set_metadata(d, b'{"a":"\xff"}'), re.escape("metadata is not valid UTF-8"))
    add("meta-json", set_metadata(d, b'{"a":1'), re.escape("metadata is not valid JSON: "),
        device="metadata is not valid JSON")
    add("meta-json-trailing-comma", set_metadata(d, b'{"a":1,}'), re.escape("metadata is not valid JSON: "),
        device="metadata is not valid JSON", lax=True)
    add("meta-array", set_metadata(d, b"[1,2]"), re.escape("metadata must be a JSON object, got an array"))
    add("meta-string", set_metadata(d, b'"x"'), re.escape("metadata must be a JSON object, got a string"))
    add("meta-number", set_metadata(d, b"12"), re.escape("metadata must be a JSON object, got a number"))
    add("meta-null", set_metadata(d, b"null"), re.escape("metadata must be a JSON object, got null"))
    add("meta-bool", set_metadata(d, b"true"), re.escape("metadata must be a JSON object, got a boolean"))
    add("meta-duplicate", set_metadata(d, b'{"a":1,"a":2}'), re.escape("metadata has a duplicate key 'a'"),
        lax=True)
    add("meta-nan", set_metadata(d, b'{"a":NaN}'), re.escape("metadata contains a non-finite number (NaN)"),
        device="metadata is not valid JSON")
    add("meta-inf", set_metadata(d, b'{"a":1e999}'), re.escape("metadata contains a non-finite number (1e999)"),
        lax=True)
    add("trit5-byte", set_bytes(d, t_off + 3, b"\xfa"),  # row 1, byte 1
        re.escape("section 'a.trits': byte 250 at row 1, byte 1 is not a valid trit5 byte (243..255 are invalid)"))
    add("trit5-byte-last", set_bytes(d, t_off + 1, b"\xf3"),  # 243 in a padded last byte
        re.escape("section 'a.trits': byte 243 at row 0, byte 1 is not a valid trit5 byte"))
    # row 2's last byte holds 2 trits (cols 5, 6); digit 0 in position 2 is a padding trit -1
    last = d[t_off + 5]
    add("trit5-padding", set_bytes(d, t_off + 5, bytes([last - 9])),
        re.escape("section 'a.trits': padding trits of row 2 are not 0"))
    return c


ERROR_CASES = error_cases()


# ------------------------------------------------------------------ trit5 packing

def test_trit5_byte_formula():
    # digits d = t + 1, byte = sum d_i 3^i from the lowest column
    assert pack_trit5([[-1, 0, 1, 1, -1]]).tolist() == [[0 + 1 * 3 + 2 * 9 + 2 * 27 + 0 * 81]]
    assert pack_trit5([[1, 1, 1, 1, 1]]).tolist() == [[242]]
    assert pack_trit5([[-1, -1, -1, -1, -1]]).tolist() == [[0]]
    # padding trits are 0 (digit 1): one column of +1 -> 2 + 3 + 9 + 27 + 81
    assert pack_trit5([[1]]).tolist() == [[122]]
    assert pack_trit5([[0, 0, 0, 0, 0, -1]]).tolist() == [[121, 0 + 120]]


def test_trit5_all_bytes_round_trip():
    every = np.arange(243, dtype=np.uint8).reshape(-1, 1)
    trits = unpack_trit5(every, 5)
    assert trits.dtype == np.int8 and set(np.unique(trits)) <= {-1, 0, 1}
    assert np.array_equal(pack_trit5(trits), every)
    with pytest.raises(ValueError, match="243"):
        unpack_trit5(np.array([[243]], dtype=np.uint8), 5)
    with pytest.raises(ValueError, match="padding"):
        unpack_trit5(np.array([[0]], dtype=np.uint8), 4)  # digit 4 = 0: a padding trit -1
    with pytest.raises(ValueError):
        pack_trit5([[2]])
    with pytest.raises(ValueError):
        pack_trit5([1, 0])


def test_trit5_is_the_integer_spec_packing():
    """The container stores what intops (docs/integer-spec.md §4) packs, byte for byte."""
    from butterflyvit import intops
    t = np.random.default_rng(5).integers(-1, 2, (4, 13))
    model = decode_model(encode_model({"w": Trits(t)}, {}))
    assert model.raw("w") == intops.pack_trits(t)
    assert np.array_equal(intops.unpack_trits(model.raw("w"), 4, 13), t)
    assert pack_trit5(np.zeros((0, 7))).shape == (0, 2) and unpack_trit5(np.zeros((3, 0)), 0).shape == (3, 0)


@pytest.mark.parametrize("cols", [1, 2, 4, 5, 6, 9, 10, 11, 64])
def test_trit5_round_trip_shapes(cols):
    rng = np.random.default_rng(cols)
    t = rng.integers(-1, 2, (3, cols)).astype(np.int8)
    p = pack_trit5(t)
    assert p.shape == (3, trit5_row_bytes(cols)) and p.dtype == np.uint8
    assert np.array_equal(unpack_trit5(p, cols), t)


# ------------------------------------------------------------------ round trips

def random_arrays(rng):
    arrays = {}
    shapes = [(), (1,), (0,), (1, 1), (3, 0), (2, 3), (7, 5, 3), (2, 1, 3, 2), (17,)]
    for k in range(int(rng.integers(1, 9))):
        kind = rng.choice(["int8", "uint8", "int16", "int32", "trit5"])
        name = f"s{k}.{kind}.{rng.integers(1000)}"
        if kind == "trit5":
            shape = (int(rng.integers(0, 6)), int(rng.integers(0, 13)))
            arrays[name] = Trits(rng.integers(-1, 2, shape))
        else:
            shape = shapes[int(rng.integers(len(shapes)))]
            info = np.iinfo(kind)
            arrays[name] = rng.integers(info.min, info.max, shape, endpoint=True, dtype=kind)
    return arrays


def assert_same(model, arrays, metadata):
    assert model.metadata == metadata
    assert sorted(model.names) == sorted(arrays)
    for name, want in arrays.items():
        got = model[name]
        info = model.info(name)
        if isinstance(want, Trits):
            assert info.dtype == "trit5" and got.dtype == np.int8
            assert np.array_equal(got, want.values)
            assert np.array_equal(model.packed(name), want.packed())
            assert model.trits(name) == want
        else:
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(got, want)
        assert info.offset % ALIGN == 0


@pytest.mark.parametrize("seed", range(40))
def test_round_trip_random(seed, tmp_path):
    rng = np.random.default_rng(seed)
    arrays = random_arrays(rng)
    metadata = {"seed": seed, "classes": [f"c{i}" for i in range(3)], "scale": 0.25,
                "nested": {"ok": True, "none": None}, "text": "ünïcode ✓"}
    path = tmp_path / "m.bvit"
    size = write_model(path, arrays, metadata)
    assert size == path.stat().st_size
    model = read_model(path)
    assert_same(model, arrays, metadata)
    # canonical: what was read re-encodes to the same bytes
    assert encode_model(model.arrays(), model.metadata) == path.read_bytes()


def test_empty_model_and_metadata():
    data = encode_model({}, {})
    assert len(data) == HEADER_SIZE + 2  # header + "{}"
    model = decode_model(data)
    assert model.names == [] and model.metadata == {}


def test_layout_matches_doc():
    d = base_model()
    assert d[:4] == MAGIC
    assert getf(d, "version") == 1 and getf(d, "header_size") == 64
    assert getf(d, "file_size") == len(d) and getf(d, "crc32") == zlib.crc32(d[16:])
    assert getf(d, "table_offset") == 64 and getf(d, "section_count") == 5
    assert getf(d, "entry_size") == 80 and getf(d, "metadata_offset") == 64 + 5 * 80
    meta = d[getf(d, "metadata_offset"):][:getf(d, "metadata_size")]
    assert json.loads(meta) == BASE_META and meta.isascii()
    names = [getf(d, "name", i).rstrip(b"\0") for i in range(5)]
    assert names == sorted(names)
    prev_end = getf(d, "metadata_offset") + getf(d, "metadata_size")
    for i in range(5):
        off = getf(d, "offset", i)
        assert off == -(-prev_end // 16) * 16  # the writer packs sections at the next 16 bytes
        assert not any(d[prev_end:off])        # padding is zero
        prev_end = off + getf(d, "nbytes", i)
    assert prev_end == len(d)
    t = entry_index(d, "a.trits")
    assert (getf(d, "dtype", t), getf(d, "ndim", t), getf(d, "dim0", t), getf(d, "dim1", t),
            getf(d, "nbytes", t)) == (5, 2, 3, 7, 6)


def test_accessors_and_describe():
    arrays = base_arrays()
    model = decode_model(base_model())
    assert_same(model, arrays, BASE_META)
    a = model["b.int8"]
    a[0, 0, 0] ^= 1  # a copy: writable and independent
    assert np.array_equal(model["b.int8"], arrays["b.int8"])
    assert model.info("a.trits").row_bytes == 2
    with pytest.raises(KeyError, match="no section named 'nope'"):
        model["nope"]
    with pytest.raises(ValueError, match="not trit5"):
        model.packed("b.int8")
    text = model.describe()
    assert f"{model.file_size} bytes" in text and "a.trits" in text and "trit5" in text
    assert "3x7" in text and "alignment padding" in text
    regions = model.layout()
    assert sum(size for _, _, size in regions) == model.file_size
    assert [r[0] for r in regions if r[0] not in ("(padding)",)][:3] == ["header", "section table", "metadata"]


def test_numpy_metadata_and_big_endian_input():
    arrays = {"x": np.arange(6, dtype=">i4").reshape(2, 3)}
    meta = {"n": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "v": np.arange(3)}
    model = decode_model(encode_model(arrays, meta))
    assert model.metadata == {"n": 3, "f": 0.5, "b": True, "v": [0, 1, 2]}
    assert model["x"].dtype == np.int32 and model["x"].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("arrays, metadata, match", [
    ({"x y": np.zeros(1, np.int8)}, {}, "bad section name"),
    ({"": np.zeros(1, np.int8)}, {}, "bad section name"),
    ({"é": np.zeros(1, np.int8)}, {}, "bad section name"),
    ({"x" * 49: np.zeros(1, np.int8)}, {}, "bad section name"),
    ({"x": np.zeros(1, np.float32)}, {}, "dtype float32 cannot be stored"),
    ({"x": np.zeros(1, np.int64)}, {}, "dtype int64 cannot be stored"),
    ({"x": np.zeros(1, bool)}, {}, "dtype bool cannot be stored"),
    ({"x": np.zeros((1,) * 5, np.int8)}, {}, "5 dimensions, at most 4"),
    ({"x": [1, 2]}, {}, "expected a numpy array or Trits"),
    ({}, {"a": float("nan")}, "metadata cannot be stored as JSON"),
    ({}, {"a": object()}, "metadata cannot be stored as JSON"),
    ({}, [1], "metadata must be a dict"),
])
def test_writer_rejects(arrays, metadata, match):
    with pytest.raises((ValueError, TypeError), match=match):
        encode_model(arrays, metadata)


def test_trits_rejects():
    with pytest.raises(ValueError):
        Trits(np.zeros(3))
    with pytest.raises(ValueError):
        Trits([[0, 2]])


def test_write_is_atomic(tmp_path):
    path = tmp_path / "m.bvit"
    write_model(path, base_arrays(), BASE_META)
    assert [p.name for p in tmp_path.iterdir()] == ["m.bvit"]


# ------------------------------------------------------------------ every error path

@pytest.mark.parametrize("case, data, msg, device, lax", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_reader_errors(case, data, msg, device, lax, tmp_path):
    with pytest.raises(ModelFormatError, match="^" + msg) as info:
        decode_model(data)
    assert isinstance(info.value, ValueError)
    path = tmp_path / "bad.bvit"
    path.write_bytes(data)
    with pytest.raises(ModelFormatError, match="^" + msg):
        read_model(path)


def test_error_cases_cover_every_message():
    """Every ModelFormatError the reader can raise appears in ERROR_CASES."""
    import inspect
    import butterflyvit.modelfile as mf
    source = inspect.getsource(mf)
    raised = re.findall(r'raise ModelFormatError\(f?"([^"{]*)', source)
    covered = [c[2] for c in ERROR_CASES]
    for prefix in raised:
        plain = re.escape(prefix.replace("\\'", "'"))
        assert any(m.startswith(plain[:20]) for m in covered), f"no error case for {prefix!r}"


# ------------------------------------------------------------------ the fuzzer

INTERESTING = [0, 1, 2, 3, 4, 5, 6, 15, 16, 17, 64, 80, 127, 128, 255, 256, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]
FIELD_LIMIT = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF}


def fuzz_bases():
    """Small models of different shapes (kept small so the fuzzer is fast)."""
    rng = np.random.default_rng(1234)
    bases = [base_model(0), encode_model({}, {"k": 1})]
    for _ in range(2):
        bases.append(encode_model(random_arrays(rng), {"classes": ["a", "b"], "q": 3, "s": 0.5}))
    return bases


def mutate(rng: random.Random, data: bytes):
    """One random mutation: (kind, mutated bytes, CRC recomputed?)."""
    n = len(data)
    kind = rng.choice(["flip", "flip", "truncate", "extend", "field", "field", "field", "entry",
                       "entry", "entry", "flip_fixed", "resize_fixed", "name_copy", "data_fixed"])
    out = bytearray(data)
    count = struct.unpack_from("<I", data, 20)[0]
    if kind == "name_copy" and count > 1:  # a neighbour's name: duplicates and disorder
        i = rng.randrange(count - 1)
        a, b = (i, i + 1) if rng.random() < 0.5 else (i + 1, i)
        return kind, setf(data, "name", getf(data, "name", a), b), True
    if kind == "data_fixed" and count:     # a section's bytes (trit5 ones: invalid bytes, padding)
        i = rng.randrange(count)
        offset, nbytes = getf(data, "offset", i), getf(data, "nbytes", i)
        if nbytes:
            out[offset + rng.randrange(nbytes)] = rng.choice([rng.randrange(256), 242, 243, 255, 0, 121])
            return kind, bytes(fix_crc(out)), True
    if kind in ("name_copy", "data_fixed"):
        kind = "flip"
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(n)
            out[i] = rng.choice([out[i] ^ (1 << rng.randrange(8)), rng.randrange(256)])
        return kind, bytes(out), False
    if kind == "truncate":
        return kind, data[:rng.randrange(n)], False
    if kind == "extend":
        return kind, data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))), False
    if kind == "flip_fixed":
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(16, n)
            out[i] = rng.choice([out[i] ^ (1 << rng.randrange(8)), rng.randrange(256)])
        return kind, bytes(fix_crc(out)), True
    if kind == "resize_fixed":  # truncate or extend, then make size and CRC agree
        if rng.random() < 0.5 and n > 64:
            out = out[:rng.randrange(64, n)]
        else:
            out += bytes(rng.randrange(2) * rng.randrange(256) for _ in range(rng.randint(1, 40)))
        struct.pack_into("<I", out, 8, len(out))
        return kind, bytes(fix_crc(out)), True
    if kind == "entry" and count:
        field = rng.choice(list(ENTRY_FIELDS))
        entry = rng.randrange(count)
        offset, code = ENTRY_FIELDS[field]
        offset += struct.unpack_from("<I", data, 16)[0] + entry * ENTRY_SIZE
    else:
        kind = "field"
        field = rng.choice([f for f in HEADER_FIELDS if f != "crc32"])
        offset, code = HEADER_FIELDS[field]
    if code.endswith("s"):
        size = struct.calcsize(code)
        raw = bytearray(out[offset:offset + size])
        pos = rng.randrange(size)
        raw[pos] = rng.choice([0, 0x20, 0x41, 0x7A, 0x80, 0xFF, raw[pos] ^ 1])
        out[offset:offset + size] = raw
    else:
        old = struct.unpack_from("<" + code, data, offset)[0]
        choice = rng.choice(INTERESTING + [old + 1, old - 1, old + 16, old - 16, old * 2,
                                           n, n - old, rng.randrange(FIELD_LIMIT[code[-1]] + 1)])
        struct.pack_into("<" + code, out, offset, choice % (FIELD_LIMIT[code[-1]] + 1))
    return f"{kind}:{field}", bytes(fix_crc(out)), True


def check_consistent(model):
    """A model that read successfully from a mutated file must be whole and self-consistent."""
    for name in model.names:
        info = model.info(name)
        a = model[name]
        assert a.shape == info.shape
        if info.dtype == "trit5":
            assert a.dtype == np.int8 and (a.size == 0 or (a.min() >= -1 and a.max() <= 1))
            assert np.array_equal(pack_trit5(a), model.packed(name))
        else:
            assert a.dtype == np.dtype(info.dtype)
    again = decode_model(encode_model(model.arrays(), model.metadata))
    assert again.metadata == model.metadata and again.names == model.names
    for name in model.names:
        assert np.array_equal(again[name], model[name])
    return again


def fuzz_outcome(data, base, crc_fixed):
    """"ok", or the error message; raises AssertionError on anything the contract forbids."""
    try:
        model = decode_model(data)
    except ModelFormatError as exc:
        return str(exc)
    if not crc_fixed:  # the CRC held: it must be the very same model
        assert encode_model(model.arrays(), model.metadata) == base, "a different model read silently"
    check_consistent(model)
    return "ok"


def message_template(message):
    """The message with names and numbers blanked (and JSON parser details cut)."""
    if message.startswith("metadata is not valid JSON"):
        return "metadata is not valid JSON"
    message = re.sub(r"shape \([^)]*\)", "shape S", message)
    return re.sub(r"'[^']*'|0x[0-9a-f]+|(?<![a-z])\d+", "#", message)


def test_fuzz_reader():
    rng = random.Random(20260307)
    bases = fuzz_bases()
    start = time.perf_counter()
    messages = {}
    kinds = {}
    cases = 5000
    for k in range(cases):
        base = bases[k % len(bases)]
        kind, data, fixed = mutate(rng, base)
        try:
            outcome = fuzz_outcome(data, base, fixed)
        except Exception as exc:  # noqa: BLE001 - any other exception is the bug we look for
            raise AssertionError(f"fuzz case {k} ({kind}): {type(exc).__name__}: {exc}") from exc
        template = message_template(outcome)
        messages[template] = messages.get(template, 0) + 1
        kinds[kind.split(":")[0]] = kinds.get(kind.split(":")[0], 0) + 1
    elapsed = time.perf_counter() - start
    # the structural checks, not only the CRC, were exercised
    assert len(messages) >= 35, sorted(messages)
    assert messages.get("ok", 0) > 0
    print(f"\n{cases} fuzz cases in {elapsed:.2f} s; kinds {kinds}; {len(messages)} distinct outcomes")
