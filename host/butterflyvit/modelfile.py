"""The packed model file, format version 1: named integer arrays plus JSON metadata.

One file holds every array a board needs, each in its own 16-byte aligned section so a
microcontroller reads it in place from flash (file slices, or a memoryview of a frozen /
ROMFS bytes object). The byte-by-byte layout is in docs/model-format.md; the board's reader
is device/bvit/modelfile.py and gives the same error messages as this one.

    write_model(path, {"blocks.0.ffn.w_in": Trits(t), "head.bias": b32}, {"config": {...}})
    model = read_model(path)        # validates everything, raises ModelFormatError
    model["head.bias"]               # numpy array (a copy)
    model["blocks.0.ffn.w_in"]       # trit5: unpacked int8 in {-1, 0, 1}, shape (rows, cols)
    model.packed("blocks.0.ffn.w_in")  # trit5: the packed bytes, uint8 (rows, ceil(cols/5))
    print(model.describe())

Ternary matrices are stored 5 trits per byte (trit5) exactly as docs/integer-spec.md §4
packs them: row-major, each row padded with trits of value 0 to a multiple of 5;
byte = sum(d_i * 3**i), d_i = trit + 1, i = 0..4 from the lowest column index; bytes
243..255 are invalid. The packing code is intops.pack_trits / unpack_trits.
"""

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from . import intops

__all__ = [
    "ModelFormatError", "Trits", "SectionInfo", "Model",
    "write_model", "encode_model", "read_model", "decode_model",
    "pack_trit5", "unpack_trit5", "trit5_row_bytes",
    "MAGIC", "VERSION", "HEADER_SIZE", "ENTRY_SIZE", "NAME_SIZE", "MAX_NDIM", "ALIGN",
    "DTYPE_CODES", "DTYPE_NAMES",
]

MAGIC = b"BVIT"
VERSION = 1
HEADER_SIZE = 64
ENTRY_SIZE = 80
NAME_SIZE = 48
MAX_NDIM = 4
ALIGN = 16
CRC_START = 16  # the checksum covers bytes [16, file_size): everything after its own field
MAX_U32 = 0xFFFFFFFF

# magic, version, header_size, file_size, crc32, table_offset, section_count,
# entry_size, reserved (u16), metadata_offset, metadata_size; then 28 reserved bytes.
_HEADER = struct.Struct("<4sHHIIIIHHII")
_HEADER_RESERVED = (36, HEADER_SIZE)
# name[48], dtype, ndim, reserved (u16), shape[4], offset, nbytes, reserved (u32)
_ENTRY = struct.Struct("<48sBBH4IIII")
assert _HEADER.size == 36 and _ENTRY.size == ENTRY_SIZE

DTYPE_CODES = {"int8": 1, "uint8": 2, "int16": 3, "int32": 4, "trit5": 5}
DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}
_NUMPY = {"int8": np.dtype("<i1"), "uint8": np.dtype("<u1"),
          "int16": np.dtype("<i2"), "int32": np.dtype("<i4")}
_ITEMSIZE = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4}


class ModelFormatError(ValueError):
    """The bytes are not a valid butterflyvit model file; the message says what is wrong."""


# ---------------------------------------------------------------------------- trit5 packing
# The packing itself is intops.pack_trits / unpack_trits (docs/integer-spec.md §4); these
# wrappers add the empty shapes (0 rows or 0 columns) that a generic container allows.

_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.int32)


def trit5_row_bytes(cols: int) -> int:
    """Bytes per packed row of `cols` trits: ceil(cols / 5) (0 for 0 columns)."""
    return (cols + 4) // 5


def pack_trit5(trits) -> np.ndarray:
    """2-D trits {-1, 0, 1} -> packed uint8 (rows, ceil(cols/5)), by intops.pack_trits."""
    t = np.asarray(trits)
    if t.ndim != 2:
        raise ValueError(f"pack_trit5 needs a 2-D array, got shape {t.shape}")
    rows, cols = t.shape
    if not rows or not cols:
        return np.zeros((rows, trit5_row_bytes(cols)), dtype=np.uint8)
    return np.frombuffer(intops.pack_trits(t), dtype=np.uint8).reshape(rows, trit5_row_bytes(cols)).copy()


def unpack_trit5(packed, cols: int) -> np.ndarray:
    """Packed uint8 (rows, ceil(cols/5)) -> int8 (rows, cols), by intops.unpack_trits
    (ValueError on bytes 243..255 or non-zero padding)."""
    p = np.asarray(packed, dtype=np.uint8)
    if p.ndim != 2 or p.shape[1] != trit5_row_bytes(cols):
        raise ValueError(f"packed shape {p.shape} does not hold rows of {cols} trits "
                         f"({trit5_row_bytes(cols)} bytes each)")
    rows = p.shape[0]
    if not rows or not cols:
        return np.zeros((rows, cols), dtype=np.int8)
    return intops.unpack_trits(p, rows, cols)


class Trits:
    """A ternary matrix to be stored as a trit5 section: values in {-1, 0, 1}, shape (rows, cols)."""

    def __init__(self, values):
        v = np.asarray(values)
        if v.ndim != 2:
            raise ValueError(f"Trits needs a 2-D array, got shape {v.shape}")
        if v.dtype.kind not in "iub":
            raise ValueError(f"Trits needs integer values, got dtype {v.dtype}")
        if v.size and (v.min() < -1 or v.max() > 1):
            raise ValueError("Trits values must be -1, 0 or 1")
        self.values = v.astype(np.int8)

    @classmethod
    def from_packed(cls, packed, cols: int) -> "Trits":
        return cls(unpack_trit5(packed, cols))

    @property
    def shape(self):
        return self.values.shape

    def packed(self) -> np.ndarray:
        return pack_trit5(self.values)

    def __eq__(self, other):
        return isinstance(other, Trits) and np.array_equal(self.values, other.values)

    def __repr__(self):
        return f"Trits(shape={self.shape})"


# ---------------------------------------------------------------------------- helpers

def _show(raw: bytes) -> str:
    """bytes shown as b'...' with \\xNN escapes; the board's reader formats them identically."""
    out = []
    for c in raw:
        out.append(chr(c) if 0x20 <= c < 0x7F and c not in (0x27, 0x5C) else "\\x%02x" % c)
    return "b'" + "".join(out) + "'"


def _needed_bytes(dtype: str, shape: tuple):
    """Bytes a section of this dtype and shape occupies, or None when above 2**32 - 1."""
    if dtype == "trit5":
        n = shape[0] * trit5_row_bytes(shape[1])
    else:
        n = math.prod(shape) * _ITEMSIZE[dtype]
    return n if n <= MAX_U32 else None


def _valid_name(raw: bytes) -> bool:
    return 0 < len(raw) <= NAME_SIZE and all(0x21 <= c <= 0x7E for c in raw)


def _json_default(obj):
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _json_kind(value) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    return "a " + type(value).__name__


# ---------------------------------------------------------------------------- writing

def encode_model(arrays: dict, metadata: dict) -> bytes:
    """The bytes of a model file holding `arrays` (name -> np.ndarray or Trits) and `metadata`."""
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        meta = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False, default=_json_default).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata cannot be stored as JSON: {exc}") from None

    entries = []  # (name bytes, dtype name, shape, payload bytes)
    for name, value in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"section names must be str, got {name!r}")
        raw = name.encode("ascii", "replace")
        if not _valid_name(raw) or raw.decode("ascii") != name:
            raise ValueError(f"bad section name {name!r}: 1..{NAME_SIZE} printable ASCII "
                             "characters, no spaces")
        if isinstance(value, Trits):
            dtype, shape = "trit5", value.shape
            payload = value.packed().tobytes()
        elif isinstance(value, np.ndarray):
            dtype = {("i", 1): "int8", ("u", 1): "uint8", ("i", 2): "int16",
                     ("i", 4): "int32"}.get((value.dtype.kind, value.dtype.itemsize))
            if dtype is None:
                raise ValueError(f"section {name!r}: dtype {value.dtype} cannot be stored "
                                 "(use int8, uint8, int16, int32, or Trits for ternary)")
            shape = value.shape
            if len(shape) > MAX_NDIM:
                raise ValueError(f"section {name!r}: {len(shape)} dimensions, at most {MAX_NDIM}")
            payload = np.ascontiguousarray(value, dtype=_NUMPY[dtype]).tobytes()
        else:
            raise TypeError(f"section {name!r}: expected a numpy array or Trits, "
                            f"got {type(value).__name__}")
        if any(d > MAX_U32 for d in shape) or len(payload) > MAX_U32:
            raise ValueError(f"section {name!r} is too large for format version {VERSION}")
        entries.append((raw, dtype, tuple(int(d) for d in shape), payload))
    entries.sort(key=lambda e: e[0])

    table_offset = HEADER_SIZE
    meta_offset = table_offset + ENTRY_SIZE * len(entries)
    pos = meta_offset + len(meta)
    table = bytearray()
    layout = []
    for raw, dtype, shape, payload in entries:
        pos = -(-pos // ALIGN) * ALIGN
        dims = list(shape) + [0] * (MAX_NDIM - len(shape))
        table += _ENTRY.pack(raw, DTYPE_CODES[dtype], len(shape), 0, *dims, pos, len(payload), 0)
        layout.append((pos, payload))
        pos += len(payload)
    file_size = pos
    if file_size > MAX_U32:
        raise ValueError(f"model of {file_size} bytes is too large for format version {VERSION}")

    out = bytearray(file_size)
    out[table_offset:meta_offset] = table
    out[meta_offset:meta_offset + len(meta)] = meta
    for offset, payload in layout:
        out[offset:offset + len(payload)] = payload
    out[0:_HEADER.size] = _HEADER.pack(MAGIC, VERSION, HEADER_SIZE, file_size, 0, table_offset,
                                       len(entries), ENTRY_SIZE, 0, meta_offset, len(meta))
    struct.pack_into("<I", out, 12, zlib.crc32(memoryview(out)[CRC_START:]))
    return bytes(out)


def write_model(path, arrays: dict, metadata: dict) -> int:
    """Write a model file atomically: a temporary file beside `path`, renamed into place,
    and removed again whatever fails. Returns the size. A `path` that is a directory, or
    whose folder does not exist, raises IsADirectoryError / FileNotFoundError naming it."""
    import errno

    data = encode_model(arrays, metadata)
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a directory", path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"no such folder {folder}", path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:  # a full disk, no permission, Ctrl-C: leave nothing behind
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return len(data)


# ---------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class SectionInfo:
    name: str
    dtype: str          # "int8", "uint8", "int16", "int32" or "trit5"
    shape: tuple        # logical shape; trit5: (rows, cols) in trits
    offset: int         # from the start of the file, a multiple of 16
    nbytes: int         # bytes stored

    @property
    def row_bytes(self) -> int:
        """Bytes per row (first index) as stored; trit5: ceil(cols / 5)."""
        rows = self.shape[0] if self.shape else 1
        return self.nbytes // rows if rows else 0


class Model:
    """A validated model file held in memory. Arrays are returned as fresh numpy copies."""

    def __init__(self, data: bytes, version: int, crc32: int, metadata: dict, sections: list,
                 meta_offset: int, meta_size: int):
        self._data = data
        self.version = version
        self.crc32 = crc32
        self.metadata = metadata
        self.sections = {s.name: s for s in sections}
        self.metadata_offset = meta_offset
        self.metadata_size = meta_size

    @property
    def file_size(self) -> int:
        return len(self._data)

    @property
    def names(self) -> list:
        return list(self.sections)

    def __contains__(self, name):
        return name in self.sections

    def __len__(self):
        return len(self.sections)

    def __iter__(self):
        return iter(self.sections)

    def info(self, name: str) -> SectionInfo:
        try:
            return self.sections[name]
        except KeyError:
            raise KeyError(f"no section named {name!r} in this model") from None

    def raw(self, name: str) -> bytes:
        """The section's stored bytes."""
        s = self.info(name)
        return self._data[s.offset:s.offset + s.nbytes]

    def packed(self, name: str) -> np.ndarray:
        """A trit5 section's packed bytes, uint8 (rows, ceil(cols/5))."""
        s = self.info(name)
        if s.dtype != "trit5":
            raise ValueError(f"section {name!r} is {s.dtype}, not trit5")
        return np.frombuffer(self.raw(name), dtype=np.uint8).reshape(
            s.shape[0], trit5_row_bytes(s.shape[1])).copy()

    def __getitem__(self, name: str) -> np.ndarray:
        """The array; trit5 sections come unpacked as int8 in {-1, 0, 1}."""
        s = self.info(name)
        if s.dtype == "trit5":
            return unpack_trit5(self.packed(name), s.shape[1])
        dt = _NUMPY[s.dtype]
        return np.frombuffer(self.raw(name), dtype=dt).astype(dt.newbyteorder("="), copy=True).reshape(s.shape)

    def trits(self, name: str) -> Trits:
        return Trits(self[name])

    def arrays(self) -> dict:
        """Everything, as write_model takes it (trit5 sections as Trits)."""
        return {n: (self.trits(n) if s.dtype == "trit5" else self[n]) for n, s in self.sections.items()}

    def layout(self) -> list:
        """(what, offset, bytes) for every region of the file in file order, padding included."""
        regions = [("header", 0, HEADER_SIZE),
                   ("section table", HEADER_SIZE, ENTRY_SIZE * len(self.sections)),
                   ("metadata", self.metadata_offset, self.metadata_size)]
        regions += [(s.name, s.offset, s.nbytes) for s in self.sections.values()]
        out, pos = [], 0
        for what, offset, size in sorted(regions, key=lambda r: r[1]):
            if offset > pos:
                out.append(("(padding)", pos, offset - pos))
            out.append((what, offset, size))
            pos = max(pos, offset + size)
        return out

    def describe(self) -> str:
        """A human-readable size-by-section summary."""
        rows = [f"butterflyvit model file, format version {self.version}: {self.file_size} bytes, "
                f"CRC-32 0x{self.crc32:08x}, {len(self.sections)} sections"]
        width = max([len(n) for n in self.sections] + [20])
        rows.append(f"  {'section':<{width}}  {'dtype':<5}  {'shape':<16} {'bytes':>9} {'offset':>9}")
        for s in self.sections.values():
            shape = "x".join(map(str, s.shape)) or "scalar"
            rows.append(f"  {s.name:<{width}}  {s.dtype:<5}  {shape:<16} {s.nbytes:>9} {s.offset:>9}")
        data = sum(s.nbytes for s in self.sections.values())
        padding = sum(size for what, _, size in self.layout() if what == "(padding)")
        rows.append(f"  arrays {data} B, metadata {self.metadata_size} B, header {HEADER_SIZE} B, "
                    f"section table {ENTRY_SIZE * len(self.sections)} B, alignment padding {padding} B")
        return "\n".join(rows)


def read_model(source) -> Model:
    """Read and fully validate a model file (a path, or the file's bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_model(bytes(source))
    with open(source, "rb") as f:
        return decode_model(f.read())


def _strict_json(text: str):
    def pairs(items):
        out = {}
        for k, v in items:
            if k in out:
                raise ModelFormatError(f"metadata has a duplicate key {k!r}")
            out[k] = v
        return out

    def constant(s):
        raise ModelFormatError(f"metadata contains a non-finite number ({s})")

    def number(s):
        v = float(s)
        if not math.isfinite(v):
            constant(s)
        return v

    return json.loads(text, object_pairs_hook=pairs, parse_constant=constant, parse_float=number)


def decode_model(data: bytes) -> Model:
    """Validate the bytes of a model file; checks run in the documented order."""
    n = len(data)
    if n < 4 or data[:4] != MAGIC:
        raise ModelFormatError(f"not a butterflyvit model file (magic {_show(data[:4])}, "
                               f"expected {_show(MAGIC)})")
    if n < HEADER_SIZE:
        raise ModelFormatError(f"file truncated: {n} bytes, shorter than the {HEADER_SIZE}-byte header")
    (_, version, header_size, file_size, stored_crc, table_offset, count, entry_size, reserved,
     meta_offset, meta_size) = _HEADER.unpack_from(data, 0)
    if version != VERSION:
        raise ModelFormatError(f"unsupported format version {version} (this reader reads version {VERSION})")
    if header_size != HEADER_SIZE:
        raise ModelFormatError(f"bad header size {header_size} (version {VERSION} headers are {HEADER_SIZE} bytes)")
    if n < file_size:
        raise ModelFormatError(f"file truncated: header says {file_size} bytes, file has {n}")
    if n > file_size:
        raise ModelFormatError(f"file too long: header says {file_size} bytes, file has {n} (trailing data)")
    crc = zlib.crc32(memoryview(data)[CRC_START:])
    if crc != stored_crc:
        raise ModelFormatError(f"checksum mismatch: header says 0x{stored_crc:08x}, contents give "
                               f"0x{crc:08x} (file corrupted)")
    if reserved:
        raise ModelFormatError("reserved header field at offset 26 is not zero")
    if any(data[_HEADER_RESERVED[0]:_HEADER_RESERVED[1]]):
        raise ModelFormatError(f"reserved header bytes {_HEADER_RESERVED[0]}..{_HEADER_RESERVED[1] - 1} are not zero")
    if entry_size != ENTRY_SIZE:
        raise ModelFormatError(f"bad section entry size {entry_size} (version {VERSION} entries are {ENTRY_SIZE} bytes)")
    if table_offset < HEADER_SIZE:
        raise ModelFormatError(f"section table at offset {table_offset} overlaps the header "
                               f"(which ends at {HEADER_SIZE})")
    table_end = table_offset + count * ENTRY_SIZE
    if table_end > file_size:
        raise ModelFormatError(f"section table ({count} entries of {ENTRY_SIZE} bytes at offset "
                               f"{table_offset}) runs past the end of the file ({file_size} bytes)")
    if meta_offset < table_end:
        raise ModelFormatError(f"metadata at offset {meta_offset} overlaps the section table "
                               f"(which ends at {table_end})")
    meta_end = meta_offset + meta_size
    if meta_end > file_size:
        raise ModelFormatError(f"metadata ({meta_size} bytes at offset {meta_offset}) runs past the "
                               f"end of the file ({file_size} bytes)")

    sections = []
    prev_name, prev_end = None, meta_end
    for i in range(count):
        (raw, code, ndim, res16, d0, d1, d2, d3, offset, nbytes,
         res32) = _ENTRY.unpack_from(data, table_offset + i * ENTRY_SIZE)
        nul = raw.find(b"\0")
        name_b = raw if nul < 0 else raw[:nul]
        if nul >= 0 and any(raw[nul:]):
            raise ModelFormatError(f"section #{i}: name field has bytes after its terminating NUL")
        if not name_b:
            raise ModelFormatError(f"section #{i}: empty name")
        if not _valid_name(name_b):
            raise ModelFormatError(f"section #{i}: name {_show(name_b)} has a byte that is not "
                                   "printable ASCII")
        name = name_b.decode("ascii")
        if prev_name is not None and name_b <= prev_name:
            if name_b == prev_name:
                raise ModelFormatError(f"duplicate section name '{name}'")
            raise ModelFormatError(f"section names out of order: '{name}' after "
                                   f"'{prev_name.decode('ascii')}' (names must be sorted)")
        prev_name = name_b
        dtype = DTYPE_NAMES.get(code)
        if dtype is None:
            raise ModelFormatError(f"section '{name}': unknown dtype code {code}")
        if res16 or res32:
            raise ModelFormatError(f"section '{name}': reserved entry fields are not zero")
        if ndim > MAX_NDIM:
            raise ModelFormatError(f"section '{name}': ndim {ndim} is more than {MAX_NDIM}")
        dims = (d0, d1, d2, d3)
        if any(dims[ndim:]):
            raise ModelFormatError(f"section '{name}': shape entries beyond ndim {ndim} are not zero")
        shape = dims[:ndim]
        if dtype == "trit5" and ndim != 2:
            raise ModelFormatError(f"section '{name}': a trit5 section must be 2-D, got ndim {ndim}")
        need = _needed_bytes(dtype, shape)
        if need != nbytes:
            raise ModelFormatError(f"section '{name}': {dtype} shape {shape} needs "
                                   f"{'more than %d' % MAX_U32 if need is None else need} bytes, "
                                   f"table says {nbytes}")
        if offset % ALIGN:
            raise ModelFormatError(f"section '{name}': offset {offset} is not a multiple of {ALIGN}")
        if offset < prev_end:
            raise ModelFormatError(f"section '{name}' at offset {offset} overlaps the previous region "
                                   f"(which ends at {prev_end})")
        if offset + nbytes > file_size:
            raise ModelFormatError(f"section '{name}' ({nbytes} bytes at offset {offset}) runs past the "
                                   f"end of the file ({file_size} bytes)")
        prev_end = offset + nbytes
        sections.append(SectionInfo(name, dtype, shape, offset, nbytes))

    raw_meta = data[meta_offset:meta_end]
    try:
        text = raw_meta.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFormatError("metadata is not valid UTF-8") from None
    try:
        metadata = _strict_json(text)
    except ModelFormatError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ModelFormatError(f"metadata is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise ModelFormatError(f"metadata must be a JSON object, got {_json_kind(metadata)}")

    for s in sections:
        if s.dtype == "trit5":
            _check_trit5(s, data)
    return Model(data, version, stored_crc, metadata, sections, meta_offset, meta_size)


def _check_trit5(s: SectionInfo, data: bytes):
    rows, cols = s.shape
    nb = trit5_row_bytes(cols)
    if not rows or not nb:
        return
    p = np.frombuffer(data, dtype=np.uint8, count=s.nbytes, offset=s.offset).reshape(rows, nb)
    invalid = p > 242
    bad = invalid.copy()
    used = cols - 5 * (nb - 1)  # trits in the last byte of a row
    if used < 5:
        pad = p[:, -1].astype(np.int32) // int(_POW3[used])  # the padding digits as a base-3 number
        want = (3 ** (5 - used) - 1) // 2                      # every padding digit 1 (trit 0)
        bad[:, -1] |= pad != want
    if bad.any():  # report the first bad byte in file order, as the board's check_trit5 does
        r, j = divmod(int(np.argmax(bad.reshape(-1))), nb)
        if invalid[r, j]:
            raise ModelFormatError(f"section '{s.name}': byte {int(p[r, j])} at row {r}, byte {j} "
                                   "is not a valid trit5 byte (243..255 are invalid)")
        raise ModelFormatError(f"section '{s.name}': padding trits of row {r} are not 0")
