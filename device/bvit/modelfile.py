# The packed model file (format version 1) on the board: pure MicroPython / CircuitPython.
#
# Reads a model in place: from a file (seek + readinto, a few hundred bytes of RAM whatever
# the model's size) or from a bytes object (frozen / ROMFS: memoryview slices, no copy).
# Layout and error messages: docs/model-format.md; the host twin is
# host/butterflyvit/modelfile.py and gives the same messages in the same order.
#
#     m = Model("model.bvit")               # header, table, metadata, CRC-32 checked
#     s = m.section("blocks.0.ffn.w_in")    # a Section: name, dtype, shape, offset, nbytes
#     m.readinto(s, buf, start)             # len(buf) bytes of the section from byte `start`
#     m.view(s, a, b)                       # memoryview, models held as bytes only
#
# Only what a board runs is here: the tests' row and array readers are tests/device_readers.py.

import struct

try:
    from binascii import crc32 as _crc32
except ImportError:  # some CircuitPython and minimal ports
    _crc32 = None

MAGIC = b"BVIT"
VERSION = 1
HEADER_SIZE = 64
ENTRY_SIZE = 80
NAME_SIZE = 48
MAX_NDIM = 4
ALIGN = 16
CRC_START = 16
MAX_U32 = 0xFFFFFFFF

INT8 = 1
UINT8 = 2
INT16 = 3
INT32 = 4
TRIT5 = 5
DTYPE_NAMES = (None, "int8", "uint8", "int16", "int32", "trit5")
ITEMSIZE = (0, 1, 1, 2, 4, 1)
TYPECODES = (None, "b", "B", "h", "i", "B")  # array typecodes; trit5 = its packed bytes

_HEADER = "<4sHHIIIIHHII"  # 36 bytes; bytes 36..63 are reserved
_ENTRY = "<48sBBH4IIII"    # 80 bytes


class ModelFormatError(ValueError):
    pass


# ------------------------------------------------------------------------- CRC-32 fallback

_table = None


def crc32_py(data, crc=0):
    """CRC-32 (zlib polynomial), for ports without binascii.crc32. Slow, but small."""
    global _table
    if _table is None:
        import array
        t = array.array("I", [0] * 256)
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
            t[i] = c
        _table = t
    t = _table
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32(data, crc=0):
    if _crc32 is not None:
        return _crc32(data, crc) & 0xFFFFFFFF
    return crc32_py(data, crc)


# ------------------------------------------------------------------------- helpers

def _show(raw):
    out = "b'"
    for c in raw:
        if 0x20 <= c < 0x7F and c != 0x27 and c != 0x5C:
            out += chr(c)
        else:
            out += "\\x%02x" % c
    return out + "'"


def _needed(code, shape):
    """Bytes for this dtype and shape, or -1 when above 2**32 - 1."""
    if code == TRIT5:
        dims = (shape[0], (shape[1] + 4) // 5)
        item = 1
    else:
        dims = shape
        item = ITEMSIZE[code]
    for d in dims:
        if d == 0:
            return 0
    n = item
    for d in dims:
        n *= d
        if n > MAX_U32:
            return -1
    return n


def _json_kind(v):
    if isinstance(v, list):
        return "an array"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if v is None:
        return "null"
    return "a " + type(v).__name__


class Section:
    """One named array: dtype code, logical shape, offset and size in the file."""

    def __init__(self, index, name, dtype, shape, offset, nbytes):
        self.index = index
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.offset = offset
        self.nbytes = nbytes

    @property
    def dtype_name(self):
        return DTYPE_NAMES[self.dtype]

    @property
    def typecode(self):
        return TYPECODES[self.dtype]

    @property
    def rows(self):
        return self.shape[0] if self.shape else 1

    @property
    def cols(self):
        return self.shape[-1] if self.shape else 1

    @property
    def row_bytes(self):
        """Bytes per row (first index) as stored; trit5: ceil(cols / 5)."""
        r = self.rows
        return self.nbytes // r if r else 0

    def __repr__(self):
        return "Section(%r, %s, %r, offset=%d, nbytes=%d)" % (
            self.name, DTYPE_NAMES[self.dtype], self.shape, self.offset, self.nbytes)


# ------------------------------------------------------------------------- the model

class Model:
    """A validated model file, read in place.

    source: a path (opened here, closed by close()), an open binary file (seek/readinto),
    or bytes / bytearray / memoryview (a frozen or ROMFS model: read without copying).
    verify: check the CRC-32, streamed in `chunk`-byte pieces (on by default).
    metadata: parse the JSON metadata into self.metadata (else it is None).
    """

    def __init__(self, source, verify=True, metadata=True, chunk=512):
        self._file = None
        self._mem = None
        self._own = False
        if isinstance(source, str):
            self._file = open(source, "rb")
            self._own = True
        elif isinstance(source, (bytes, bytearray, memoryview)):
            self._mem = memoryview(source)
        else:
            self._file = source
        self._entry = bytearray(ENTRY_SIZE)
        self.metadata = None
        try:
            self._open(verify, metadata, chunk)
        except BaseException:
            self.close()
            raise

    # -- low level

    def _size(self):
        if self._mem is not None:
            return len(self._mem)
        self._file.seek(0, 2)
        return self._file.tell()

    def _read(self, offset, buf):
        """Fill buf (a bytearray or a memoryview of one) from the file at offset."""
        n = len(buf)
        if self._mem is not None:
            if offset + n > len(self._mem):
                raise ModelFormatError("file truncated: could not read %d bytes at offset %d" % (n, offset))
            buf[0:n] = self._mem[offset:offset + n]
            return
        f = self._file
        f.seek(offset)
        got = f.readinto(buf) or 0
        if got < n:  # a short read: finish it, or the file is shorter than it said
            mv = memoryview(buf)
            while got < n:
                k = f.readinto(mv[got:n])
                if not k:
                    raise ModelFormatError("file truncated: could not read %d bytes at offset %d"
                                           % (n, offset))
                got += k

    def _checksum(self, size, chunk):
        crc = 0
        if self._mem is not None:
            if _crc32 is not None:
                return crc32(self._mem[CRC_START:size])
            step = chunk
            pos = CRC_START
            while pos < size:
                end = min(pos + step, size)
                crc = crc32(self._mem[pos:end], crc)
                pos = end
            return crc
        buf = bytearray(chunk)
        pos = CRC_START
        while pos < size:  # full chunks are read without making any object
            n = min(chunk, size - pos)
            part = buf if n == chunk else memoryview(buf)[0:n]
            self._read(pos, part)
            crc = crc32(part, crc)
            pos += n
        return crc

    # -- validation, in the documented order (the host reader's order)

    def _open(self, verify, want_metadata, chunk):
        n = self._size()
        head = bytearray(min(n, HEADER_SIZE))
        self._read(0, head)
        if n < 4 or head[0:4] != MAGIC:
            raise ModelFormatError("not a butterflyvit model file (magic %s, expected %s)"
                                   % (_show(head[0:4]), _show(MAGIC)))
        if n < HEADER_SIZE:
            raise ModelFormatError("file truncated: %d bytes, shorter than the %d-byte header"
                                   % (n, HEADER_SIZE))
        (_, version, header_size, file_size, stored_crc, table_offset, count, entry_size,
         reserved, meta_offset, meta_size) = struct.unpack_from(_HEADER, head, 0)
        if version != VERSION:
            raise ModelFormatError("unsupported format version %d (this reader reads version %d)"
                                   % (version, VERSION))
        if header_size != HEADER_SIZE:
            raise ModelFormatError("bad header size %d (version %d headers are %d bytes)"
                                   % (header_size, VERSION, HEADER_SIZE))
        if n < file_size:
            raise ModelFormatError("file truncated: header says %d bytes, file has %d" % (file_size, n))
        if n > file_size:
            raise ModelFormatError("file too long: header says %d bytes, file has %d (trailing data)"
                                   % (file_size, n))
        if verify:
            crc = self._checksum(file_size, chunk)
            if crc != stored_crc:
                raise ModelFormatError("checksum mismatch: header says 0x%08x, contents give 0x%08x "
                                       "(file corrupted)" % (stored_crc, crc))
        if reserved:
            raise ModelFormatError("reserved header field at offset 26 is not zero")
        for i in range(36, HEADER_SIZE):
            if head[i]:
                raise ModelFormatError("reserved header bytes 36..63 are not zero")
        del head
        if entry_size != ENTRY_SIZE:
            raise ModelFormatError("bad section entry size %d (version %d entries are %d bytes)"
                                   % (entry_size, VERSION, ENTRY_SIZE))
        if table_offset < HEADER_SIZE:
            raise ModelFormatError("section table at offset %d overlaps the header (which ends at %d)"
                                   % (table_offset, HEADER_SIZE))
        table_end = table_offset + count * ENTRY_SIZE
        if table_end > file_size:
            raise ModelFormatError("section table (%d entries of %d bytes at offset %d) runs past the "
                                   "end of the file (%d bytes)" % (count, ENTRY_SIZE, table_offset, file_size))
        if meta_offset < table_end:
            raise ModelFormatError("metadata at offset %d overlaps the section table (which ends at %d)"
                                   % (meta_offset, table_end))
        meta_end = meta_offset + meta_size
        if meta_end > file_size:
            raise ModelFormatError("metadata (%d bytes at offset %d) runs past the end of the file "
                                   "(%d bytes)" % (meta_size, meta_offset, file_size))

        self.version = version
        self.file_size = file_size
        self.crc32 = stored_crc
        self.section_count = count
        self.table_offset = table_offset
        self.metadata_offset = meta_offset
        self.metadata_size = meta_size

        prev_name = None
        prev_end = meta_end
        for i in range(count):
            s = self._section(i, True)
            name_b = s.name
            if prev_name is not None and name_b <= prev_name:
                if name_b == prev_name:
                    raise ModelFormatError("duplicate section name '%s'" % name_b.decode())
                raise ModelFormatError("section names out of order: '%s' after '%s' (names must be sorted)"
                                       % (name_b.decode(), prev_name.decode()))
            prev_name = name_b
            name = name_b.decode()
            code = s.dtype
            if code < 1 or code > 5:
                raise ModelFormatError("section '%s': unknown dtype code %d" % (name, code))
            if s._reserved:
                raise ModelFormatError("section '%s': reserved entry fields are not zero" % name)
            ndim = s._ndim
            if ndim > MAX_NDIM:
                raise ModelFormatError("section '%s': ndim %d is more than %d" % (name, ndim, MAX_NDIM))
            dims = s.shape
            for d in dims[ndim:]:
                if d:
                    raise ModelFormatError("section '%s': shape entries beyond ndim %d are not zero"
                                           % (name, ndim))
            shape = dims[:ndim]
            if code == TRIT5 and ndim != 2:
                raise ModelFormatError("section '%s': a trit5 section must be 2-D, got ndim %d"
                                       % (name, ndim))
            need = _needed(code, shape)
            if need != s.nbytes:
                raise ModelFormatError("section '%s': %s shape %r needs %s bytes, table says %d"
                                       % (name, DTYPE_NAMES[code], shape,
                                          "more than %d" % MAX_U32 if need < 0 else str(need), s.nbytes))
            off = s.offset
            if off % ALIGN:
                raise ModelFormatError("section '%s': offset %d is not a multiple of %d" % (name, off, ALIGN))
            if off < prev_end:
                raise ModelFormatError("section '%s' at offset %d overlaps the previous region "
                                       "(which ends at %d)" % (name, off, prev_end))
            if off + s.nbytes > file_size:
                raise ModelFormatError("section '%s' (%d bytes at offset %d) runs past the end of the "
                                       "file (%d bytes)" % (name, s.nbytes, off, file_size))
            prev_end = off + s.nbytes
        if want_metadata:
            self.metadata = self.read_metadata()

    def _section(self, i, raw=False):
        """Table entry i. raw=True: unchecked fields, name as bytes (for validation)."""
        e = self._entry
        self._read(self.table_offset + i * ENTRY_SIZE, e)
        (field, code, ndim, res16, d0, d1, d2, d3, offset, nbytes,
         res32) = struct.unpack_from(_ENTRY, e, 0)
        nul = field.find(b"\0")
        name = field if nul < 0 else field[:nul]
        if raw:
            if nul >= 0:
                for c in field[nul:]:
                    if c:
                        raise ModelFormatError("section #%d: name field has bytes after its terminating NUL" % i)
            if not name:
                raise ModelFormatError("section #%d: empty name" % i)
            for c in name:
                if c < 0x21 or c > 0x7E:
                    raise ModelFormatError("section #%d: name %s has a byte that is not printable ASCII"
                                           % (i, _show(name)))
            s = Section(i, name, code, (d0, d1, d2, d3), offset, nbytes)
            s._ndim = ndim
            s._reserved = res16 or res32
            return s
        return Section(i, name.decode(), code, (d0, d1, d2, d3)[:ndim], offset, nbytes)

    def read_metadata(self):
        """Parse the JSON metadata (reads metadata_size bytes into RAM)."""
        raw = bytearray(self.metadata_size)
        self._read(self.metadata_offset, raw)
        try:
            text = str(raw, "utf-8")
        except MemoryError:
            raise
        except Exception:  # UnicodeError; not every port makes it a ValueError
            raise ModelFormatError("metadata is not valid UTF-8")
        del raw
        try:
            import json
            meta = json.loads(text)
        except MemoryError:
            raise
        except Exception:
            raise ModelFormatError("metadata is not valid JSON")
        if not isinstance(meta, dict):
            raise ModelFormatError("metadata must be a JSON object, got %s" % _json_kind(meta))
        return meta

    # -- sections

    def __len__(self):
        return self.section_count

    def sections(self):
        """Every section, in table (= name = file) order, read one entry at a time."""
        for i in range(self.section_count):
            yield self._section(i)

    def find(self, name):
        """The Section called name, or None: a binary search over the sorted table."""
        key = name.encode() if isinstance(name, str) else bytes(name)
        lo, hi = 0, self.section_count
        e = self._entry
        while lo < hi:
            mid = (lo + hi) // 2
            self._read(self.table_offset + mid * ENTRY_SIZE, e)
            field = bytes(e[0:NAME_SIZE])
            nul = field.find(b"\0")
            here = field if nul < 0 else field[:nul]
            if here == key:
                return self._section(mid)
            if here < key:
                lo = mid + 1
            else:
                hi = mid
        return None

    def section(self, name):
        s = self.find(name)
        if s is None:
            raise KeyError("no section named '%s' in this model" % name)
        return s

    def __contains__(self, name):
        return self.find(name) is not None

    def _sec(self, sec):
        return self.section(sec) if isinstance(sec, str) else sec

    def readinto(self, sec, buf, start=0):
        """Read len(buf) bytes of a section, from its byte `start`, into buf (1-byte items:
        bytearray, memoryview of one, array('b'/'B')). Returns the count."""
        sec = self._sec(sec)
        n = len(buf)
        if start < 0 or start + n > sec.nbytes:
            raise ValueError("bytes %d..%d are outside section '%s' (%d bytes)"
                             % (start, start + n, sec.name, sec.nbytes))
        self._read(sec.offset + start, buf)
        return n

    def view(self, sec, start=0, end=None):
        """A read-only memoryview of section bytes [start:end], without copying.
        Only for models given as bytes (frozen, ROMFS); files use readinto()."""
        sec = self._sec(sec)
        if end is None:
            end = sec.nbytes
        if self._mem is None:
            raise ValueError("view() needs a model held as bytes; use readinto() for files")
        if start < 0 or end < start or end > sec.nbytes:
            raise ValueError("bytes %d..%d are outside section '%s' (%d bytes)"
                             % (start, end, sec.name, sec.nbytes))
        return self._mem[sec.offset + start:sec.offset + end]

    def check_trit5(self, sec, chunk=256):
        """Check every byte of a trit5 section (no byte 243..255, padding trits 0), as the
        host reader does. Opening a model skips this (it reads every weight)."""
        sec = self._sec(sec)
        rows, cols = sec.shape
        nb = (cols + 4) // 5
        if not rows or not nb:
            return
        used = cols - 5 * (nb - 1)
        pad_want = (3 ** (5 - used) - 1) // 2
        div = 3 ** used
        buf = bytearray(min(chunk, sec.nbytes))
        last = nb - 1 if used < 5 else -1  # the byte of a row holding padding trits
        pos = 0
        r = 0
        j = 0
        while pos < sec.nbytes:
            n = min(len(buf), sec.nbytes - pos)
            part = buf if n == len(buf) else memoryview(buf)[0:n]
            self._read(sec.offset + pos, part)
            for b in part:
                if b > 242:
                    raise ModelFormatError("section '%s': byte %d at row %d, byte %d is not a valid "
                                           "trit5 byte (243..255 are invalid)" % (sec.name, b, r, j))
                if j == last and b // div != pad_want:
                    raise ModelFormatError("section '%s': padding trits of row %d are not 0" % (sec.name, r))
                j += 1
                if j == nb:
                    j = 0
                    r += 1
            pos += n

    def close(self):
        if self._own and self._file is not None:
            self._file.close()
        self._file = None
        self._mem = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
