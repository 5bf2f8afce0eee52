# Opening a model file on the board: the container's checks (bvit.modelfile: magic,
# version, sizes, CRC-32, section table, and the bytes of every trit5 section as the host
# reader checks them), then the integer model's, by the rules of bvit.schema that the host
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


def _check_trit5(m, buf):
    """The host reader's check of every trit5 section (docs/model-format.md, check 22):
    no byte above 242, padding trits 0. A fast pass (max() of each chunk; the padding byte
    of a one-row stream); any doubt goes to Model.check_trit5, which words the error."""
    for s in m.sections():
        if s.dtype != MF.TRIT5:
            continue
        rows, cols = s.shape
        if rows > 1 and cols % 5:               # padding in every row: the slow check
            m.check_trit5(s)
            continue
        pos = 0
        while pos < s.nbytes:
            n = min(len(buf), s.nbytes - pos)
            part = buf if n == len(buf) else memoryview(buf)[0:n]
            m.readinto(s, part, pos)
            if max(part) > 242:
                m.check_trit5(s)
            pos += n
        if cols % 5 and s.nbytes:               # one row: its last byte holds the padding
            used = cols % 5
            m.readinto(s, memoryview(buf)[0:1], s.nbytes - 1)
            if buf[0] // 3 ** used != (3 ** (5 - used) - 1) // 2:
                m.check_trit5(s)


def load(source, verify=True, weight_buffer=4096):
    """Open and check a model: a path (the file stays open, returned as .file) or a
    bytes-like object (.mem, read in place). Raises ModelFormatError (ValueError) for any
    file the host reader refuses, with the host's message."""
    m = MF.Model(source, verify=verify)
    try:
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
        r.ram = S.ram_needed(c, weight_buffer), S.weight_bytes(c, weight_buffer)
        r.file_size = m.file_size
    except BaseException:
        m.close()
        raise
    r.file = m._file                            # keep the open file; the reader goes
    r.mem = m._mem
    m._file = None
    return r
