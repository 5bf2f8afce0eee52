# A model's weights, left in flash and read when the forward needs them (bvit.model): from
# the model file (seek, then readinto one RAM buffer of `weight_buffer` bytes) or in place
# from a bytes-like object (frozen, ROMFS, or a file loaded into RAM).
#
# Sections are named by slot (bvit.schema's BOARD table, bound in bvit.model); `off[slot]`
# is a section's byte offset in the file. A matrix larger than the buffer is read in row
# blocks; a block stays until another is needed, so a matrix that fits is read once per
# layer however many tokens use it.

from array import array


def first(buf, n):
    """buf itself when it holds n items, else a memoryview of its first n."""
    return buf if len(buf) == n else memoryview(buf)[0:n]


class Weights:
    """The sections of an open model: read from `file` (an open file object) or, when
    `mem` (a bytes-like object) is given, in place. `off`: byte offset of each slot."""

    def __init__(self, file, mem, off):
        self._file = file
        self._mem = mem
        self._off = array("I", off)
        # What the weight buffer holds, one key per half: slot * 65536 + first row for an
        # int8 block (rows < 65536), -2 - that for trits, -1 for nothing; small ints, so a
        # read allocates nothing. A key is cleared before its read and set after it: it
        # stays true from one image to the next.
        self._keys = [-1, -1]
        self._wn = 0                            # rows of the int8 block held
        self._tv = None                         # (w_in's half, w_out's half) when both fit
        self.phi = self.theta = None            # one expert's phases, read from a file

    def take(self, buf, tin, tout, nphi, ntheta):
        """The weight buffer (int8; trits as bytes), allocated among the classifier's buffers
        while the heap is in one piece. tin, tout: bytes of w_in and w_out (they stay for a
        whole layer when both fit); nphi, ntheta: bytes of one expert's phases."""
        self._w = buf
        if self._mem is None:
            if len(buf) >= tin + tout:
                self._tv = (memoryview(buf)[0:tin], memoryview(buf)[tin:tin + tout])
            raw = bytearray(max(nphi, ntheta))
            self.phi = memoryview(raw)[0:nphi]
            self.theta = memoryview(raw)[0:ntheta]

    def memory(self):
        """The model's bytes when they are read in place (else None)."""
        return self._mem

    def offset(self, slot):
        """Byte offset of section `slot` in the model."""
        return self._off[slot]

    def close(self):
        if self._file is not None:
            self._file.close()
        self._file = None
        self._mem = None

    def read(self, slot, start, buf, nbytes):
        """nbytes of section `slot`, from its byte `start`, into buf (any array type)."""
        off = self._off[slot] + start
        mem = self._mem
        if mem is None:
            f = self._file
            f.seek(off)
            got = f.readinto(buf) or 0
            if got < nbytes:                    # a short read: finish it (1-byte buffers)
                mv = memoryview(buf)
                while got < nbytes:
                    r = f.readinto(mv[got:nbytes])
                    if not r:
                        raise OSError("model file: read failed at offset %d" % (off + got))
                    got += r
        elif len(buf) == nbytes:                # 1-byte items: copied straight from the view
            buf[0:nbytes] = mem[off:off + nbytes]
        else:
            buf[0:len(buf)] = array("h" if 2 * len(buf) == nbytes else "i",
                                    bytes(mem[off:off + nbytes]))

    def params(self, slot_m, slot_s, slot_b, rows, M, S, B):
        """A layer's per-row (mult, shift[, bias]) into M, S, B (slot_b None: no bias)."""
        self.read(slot_m, 0, first(M, rows), 2 * rows)
        self.read(slot_s, 0, first(S, rows), rows)
        if slot_b is not None:
            self.read(slot_b, 0, first(B, rows), 4 * rows)

    def rows(self, slot, rows, n, r0, end=0):
        """Rows r0.. (up to `end`, default all) of an int8 (rows x n) matrix in the weight
        buffer: (buffer, row count). As many rows as fit are read, and stay until another
        block is needed: a matrix that fits is read once per layer."""
        keys = self._keys
        key = slot * 65536 + r0
        if keys[0] != key:
            keys[0] = keys[1] = -1
            per = len(self._w) // n
            nr = rows - r0 if rows - r0 < per else per
            self.read(slot, r0 * n, first(self._w, nr * n), nr * n)
            keys[0] = key
            self._wn = nr
        nr = self._wn
        if end and end - r0 < nr:
            nr = end - r0
        return self._w, nr

    def trit_rows(self, slot, rows, n, r0, second):
        """Rows r0.. of a (rows x n) ternary matrix in spec §4 rows of ceil(n/5) bytes:
        (bytes-like, byte offset of row r0 in it, row count). When w_in and w_out fit the
        buffer together they stay there for the whole layer (second: w_out's place);
        otherwise row blocks are read."""
        rb = (n + 4) // 5
        if self._mem is not None:
            return self._mem, self._off[slot] + r0 * rb, rows - r0
        keys = self._keys
        if self._tv is not None:
            key = -2 - slot * 65536             # the whole matrix (from row 0), in its half
            view = self._tv[second]
            if keys[second] != key:
                if keys[1 - second] >= 0:       # an int8 block over both halves
                    keys[1 - second] = -1
                keys[second] = -1
                self.read(slot, 0, view, rows * rb)
                keys[second] = key
            return view, r0 * rb, rows - r0
        w = self._w
        per = len(w) // rb
        nr = rows - r0 if rows - r0 < per else per
        key = -2 - (slot * 65536 + r0)
        if keys[0] != key:
            keys[0] = keys[1] = -1
            self.read(slot, r0 * rb, first(w, nr * rb), nr * rb)
            keys[0] = key
        return w, 0, nr

    def phases(self, slot, e, count, view):
        """(bytes-like, byte offset) of expert e's `count` phases (uint16) of a phi/theta
        section; view (phi or theta) receives them when they are read from a file."""
        if self._mem is not None:
            return self._mem, self._off[slot] + 2 * e * count
        self.read(slot, 2 * e * count, view, 2 * count)
        return view, 0
