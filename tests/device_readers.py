# Readers of a model file's sections that only the tests use (one stored row, one trit5 row
# decoded to -1/0/1, a whole section as an array), on MicroPython and CPython alike. They
# live here, beside the tests, so the board's reader (device/bvit/modelfile.py) holds only
# what a board runs; they use its Model's section lookup and reads.
#
#     from device_readers import read_row, unpack_row, read_array
#     unpack_row(m, "blocks.0.ffn.w_in", r, out)

import array

from bvit.modelfile import TRIT5, TYPECODES, ModelFormatError


def unpack_trit5(packed, cols, out, pos=0):
    """Decode `cols` trits from packed bytes into out[pos:pos+cols] as -1, 0, 1."""
    j = 0
    for b in packed:
        if j >= cols:
            break
        if b > 242:
            raise ModelFormatError("byte %d is not a valid trit5 byte (243..255 are invalid)" % b)
        for _ in range(5):
            if j >= cols:
                break
            out[pos + j] = b % 3 - 1
            b //= 3
            j += 1
    if j < cols:
        raise ValueError("%d packed bytes hold fewer than %d trits" % (len(packed), cols))
    return out


def read_row(m, sec, r, buf=None):
    """Row r (first index) of a section as stored; into buf (row_bytes long) or a new bytearray."""
    sec = m._sec(sec)
    if not 0 <= r < sec.rows:
        raise IndexError("row %d out of range for section '%s' (%d rows)" % (r, sec.name, sec.rows))
    rb = sec.row_bytes
    if buf is None:
        buf = bytearray(rb)
    elif len(buf) != rb:
        raise ValueError("row buffer has %d bytes, section '%s' rows have %d" % (len(buf), sec.name, rb))
    m._read(sec.offset + r * rb, buf)
    return buf


def unpack_row(m, sec, r, out, buf=None):
    """Row r of a trit5 section as cols values -1/0/1 into out (e.g. array('b', cols));
    buf: optional scratch of row_bytes bytes."""
    sec = m._sec(sec)
    if sec.dtype != TRIT5:
        raise ValueError("section '%s' is %s, not trit5" % (sec.name, sec.dtype_name))
    try:
        return unpack_trit5(read_row(m, sec, r, buf), sec.shape[1], out)
    except ModelFormatError as exc:
        raise ModelFormatError("section '%s' row %d: %s" % (sec.name, r, exc))


def read_array(m, sec):
    """A whole (small) section as an array.array of its type; trit5 gives its packed bytes."""
    sec = m._sec(sec)
    raw = bytearray(sec.nbytes)
    m._read(sec.offset, raw)
    return array.array(TYPECODES[sec.dtype], raw)
