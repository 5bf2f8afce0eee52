# Opening a model file on the board: the container's checks (bvit.modelfile: magic,
# version, sizes, CRC-32, section table; here, as the host reader does, the metadata's
# JSON syntax strictly and the bytes of every trit5 section), then the integer model's, by the rules of bvit.schema that the host
# applies too: metadata format and version, configuration, quantisation parameters, every
# section with the dtype and shape the configuration implies, and every value in range.
# Keeps what the forward needs: section offsets (one array), the scalar parameters, the
# class names.
#
# bvit.model imports this module only while opening and unloads it (with bvit.modelfile
# and bvit.schema) afterwards: the validation code does not stay in RAM next to the
# activations. Values are checked in chunks of 256 bytes: little RAM whatever the model.

import gc
from array import array

from . import modelfile as MF


class Loaded:
    pass


def _bad_json():
    raise MF.ModelFormatError("metadata is not valid JSON")


def strict_json(t):
    """Refuse the metadata bytes t where the host's strict JSON reader does (checks 20-21:
    the syntax, duplicate keys, non-finite numbers), in the host's order: MicroPython's
    json is more lenient (missing or trailing commas, duplicate keys, 1e400 as inf). One
    pass over the bytes (indexing a str is slow on MicroPython) with a stack: per open
    container None (an array) or the keys of an object."""
    n = len(t)
    stack = []
    state = 0               # 0 a value, 1 after a value, 2 a key, 3 a colon
    empty = False           # just after { or [
    i = 0
    while True:
        while i < n and t[i] in b" \t\n\r":
            i += 1
        if i == n:
            if state != 1 or stack:
                _bad_json()
            return
        c = t[i]
        if state == 1:
            if not stack:
                _bad_json()                         # data after the value
            top = stack[-1]
            if c == 44:                             # ,
                state, empty = (0 if top is None else 2), False
            elif c == (93 if top is None else 125):     # ] or }
                stack.pop()
                for k in range(1, len(top or ())):  # an object's keys, in order
                    if top[k] in top[:k]:
                        raise MF.ModelFormatError("metadata has a duplicate key %r" % (top[k],))
            else:
                _bad_json()
            i += 1
            continue
        if state == 3:
            if c != 58:                             # :
                _bad_json()
            state = 0
            i += 1
            continue
        if empty and (c == 93 and state == 0 and stack[-1] is None or
                      c == 125 and state == 2 and stack[-1] is not None):
            stack.pop()                             # [] or {}
            state = 1
            i += 1
            continue
        if c == 34:                                 # a string: a value or a key
            j = i + 1
            while True:
                if j >= n or t[j] < 32:
                    _bad_json()
                if t[j] == 34:
                    break
                if t[j] == 92:                      # \
                    j += 1
                    if j >= n or t[j] not in b'"\\/bfnrtu':
                        _bad_json()
                    if t[j] == 117:                 # \uXXXX
                        if j + 5 > n:
                            _bad_json()
                        for h in t[j + 1:j + 5]:
                            if h not in b"0123456789abcdefABCDEF":
                                _bad_json()
                        j += 4
                j += 1
            if state == 2:
                import json
                stack[-1].append(json.loads(str(t[i:j + 1], "utf-8")))
                state = 3
            else:
                state = 1
            i = j + 1
            continue
        if state == 2:
            _bad_json()
        if c == 123 or c == 91:                     # { or [
            stack.append(None if c == 91 else [])
            state, empty = (0 if c == 91 else 2), True
            i += 1
            continue
        for w in (b"true", b"false", b"null", b"NaN", b"Infinity", b"-Infinity"):
            if t[i:i + len(w)] == w:
                if w[-1] == 121 or w == b"NaN":     # ...y: (-)Infinity
                    raise MF.ModelFormatError("metadata contains a non-finite number (%s)"
                                           % str(w, "ascii"))
                i += len(w)
                break
        else:                                       # a number
            j = i + (c == 45)                       # -
            if j < n and t[j] == 48:                # 0
                j += 1
            elif j < n and 49 <= t[j] <= 57:
                while j < n and 48 <= t[j] <= 57:
                    j += 1
            else:
                _bad_json()
            k = j
            if j < n and t[j] == 46:                # .
                j += 1
                if not (j < n and 48 <= t[j] <= 57):
                    _bad_json()
                while j < n and 48 <= t[j] <= 57:
                    j += 1
            if j < n and t[j] in b"eE":
                j += 1
                if j < n and t[j] in b"+-":
                    j += 1
                if not (j < n and 48 <= t[j] <= 57):
                    _bad_json()
                while j < n and 48 <= t[j] <= 57:
                    j += 1
            if j > k:                               # a fraction or exponent: a float
                v = float(str(t[i:j], "ascii"))
                if v - v != 0:                      # inf (a board's float may overflow)
                    raise MF.ModelFormatError("metadata contains a non-finite number (%s)"
                                           % str(t[i:j], "ascii"))
            i = j
        state = 1


def _check_trit5(m, buf):
    """The host reader's check of every trit5 section (docs/model-format.md, check 22):
    no byte above 242, padding trits 0. A fast pass over whole rows (max() of each chunk,
    the last byte of each row when rows are padded); any doubt goes to Model.check_trit5,
    which words the error."""
    for s in m.sections():
        if s.dtype != MF.TRIT5:
            continue
        rows, cols = s.shape
        rb = (cols + 4) // 5                    # bytes per row (spec §4)
        used = cols % 5                         # trits in a row's last byte (0: all five)
        pad = (3 ** (5 - used) - 1) // 2 if used else 0   # its value / 3^used: zero trits
        per = len(buf) // rb if rb <= len(buf) else 0
        if not per or not s.nbytes:             # rows longer than the buffer: the slow check
            if s.nbytes:
                m.check_trit5(s)
            continue
        r = 0
        while r < rows:
            k = min(per, rows - r)
            part = memoryview(buf)[0:k * rb]
            m.readinto(s, part, r * rb)
            bad = max(part) > 242
            if used and not bad:
                p3 = 3 ** used
                for i in range(rb - 1, k * rb, rb):
                    if part[i] // p3 != pad:
                        bad = True
                        break
            if bad:
                m.check_trit5(s)                # raises with the host's words
            r += k


def _layer_module(backend):
    """True when `backend` means the native module and it has the whole-layer functions
    (a built-in module: importing it takes no heap)."""
    if backend not in ("auto", "native"):
        return False
    try:
        import bvitnative
    except ImportError:
        return False
    return hasattr(bvitnative, "ffn")


def _mapped(source):
    """A path on a memory-mapped file system (ROMFS, MicroPython >= 1.25) -> the file's
    bytes in place (a memoryview of flash); any other source unchanged."""
    if not isinstance(source, str):
        return source
    try:
        with open(source, "rb") as f:
            return memoryview(f)
    except (TypeError, OSError, AttributeError):
        return source


# a file is read into RAM for the whole-layer path only with this much left over besides
LAYERS_SPARE = 128 * 1024


def _into_ram(path):
    """The model file's bytes in a bytearray when the heap holds them and LAYERS_SPARE more
    (boards with PSRAM; the unix port), else the path (read in slices, row by row)."""
    import os
    try:
        size = os.stat(path)[6]
    except OSError:
        return path                             # the loader says what is wrong
    gc.collect()
    if gc.mem_free() < size + LAYERS_SPARE:
        return path
    buf = bytearray(size)
    with open(path, "rb") as f:
        if f.readinto(buf) != size:
            return path
    return buf


def in_place(source, backend):
    """(source, layers): whether the native module's whole-layer path runs, and the source
    it reads in place: frozen or other bytes as given, a ROMFS file mapped, a file that the
    heap holds with LAYERS_SPARE to spare read into RAM; else the source unchanged (the
    row-by-row path). Here, not in bvit.model: this code is unloaded after opening."""
    if not _layer_module(backend):
        return source, False
    source = _mapped(source)
    if isinstance(source, str):
        source = _into_ram(source)
    return source, not isinstance(source, str)


def load(source, verify=True, weight_buffer=4096, layers=False):
    """Open and check a model: a path (the file stays open, returned as .file) or a
    bytes-like object (.mem, read in place). Raises ModelFormatError (ValueError) for any
    file the host reader refuses, with the host's message. layers: size the buffers of the
    native whole-layer path (bvit.schema.ram_layers)."""
    m = MF.Model(source, verify=verify, metadata=False)
    try:
        raw = bytearray(m.metadata_size)        # checks 20-21 as strictly as the host does,
        m._read(m.metadata_offset, raw)         # then MicroPython's (lenient) json parses
        strict_json(raw)
        raw = None
        m.metadata = m.read_metadata()
        buf = bytearray(256)
        _check_trit5(m, buf)
        # Only the metadata the checks read stays (reports' keys, e.g. the calibrated
        # scales, take RAM); the schema's code is loaded after that, and after the
        # metadata's parsing: the peak is lower.
        meta = {}
        for k in ("format", "int_version", "config", "quant", "classes", "logit_scale"):
            if k in m.metadata:
                meta[k] = m.metadata[k]
        m.metadata = None
        gc.collect()
        from . import schema as S
        r = Loaded()
        try:
            r.cfg, r.quant, r.classes, r.logit_scale = S.check_metadata(meta)
            c = r.cfg
            off = array("I", bytes(4 * S.slot_count(c)))

            def find(slot, name):
                s = m.find(name)
                if s is None:
                    return None
                off[slot] = s.offset
                return MF.DTYPE_NAMES[s.dtype], s.shape

            def values(slot, name, dt, count, rule):
                # int8/16/32 values as arrays made from the bytes read (little-endian, as
                # the boards are): one small array per chunk, never a tuple of ints
                code = MF.DTYPE_NAMES.index(dt)
                size, tc = MF.ITEMSIZE[code], MF.TYPECODES[code]
                if rule is None:                # a small section, whole
                    raw = bytearray(count * size)
                    m._read(off[slot], raw)
                    return array(tc, raw)
                pos, end = 0, count * size
                while pos < end:
                    n = min(256, end - pos)
                    part = buf if n == 256 else memoryview(buf)[0:n]
                    m._read(off[slot] + pos, part)
                    if S.outside(array(tc, buf if n == 256 else bytes(part)), rule):
                        return True
                    pos += n
                return False

            S.check_sections(c, find)
            S.check_values(c, values)
            find = values = meta = None
        except S.ModelError as e:
            raise MF.ModelFormatError(e.args[0])
        r.off = off
        r.slots = S.board_slots()
        r.ram = (S.ram_needed(c, weight_buffer, layers),
                 0 if layers else S.weight_bytes(c, weight_buffer))
        r.file_size = m.file_size
    except BaseException:
        m.close()
        raise
    r.file = m._file                            # keep the open file; the reader goes
    r.mem = m._mem
    m._file = None
    return r
