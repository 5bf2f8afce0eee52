"""Camera frames to int8 patches in pure MicroPython (docs/integer-spec.md §14).

GRAYSCALE (1 byte per pixel) and RGB565 (2 bytes, big-endian) frames of any size: centre
crop to a square, nearest-neighbour resize, colour conversion, the input quantisation
tables, and the patch vectors the patch embedding takes. Exactly the integers of
intops.frame_to_pixels / quantize_pixels / patchify. A frame need not be in RAM: a reader
hands over one source row at a time (frame_row_pixels; Frame, FrameFile below).
"""

from array import array

FORMATS = {"GRAYSCALE": 1, "RGB565": 2}   # bytes per pixel (spec §14.1)


def frame_bpp(fmt):
    """Bytes per pixel of a frame format; ValueError with the accepted names otherwise."""
    bpp = FORMATS.get(fmt) if isinstance(fmt, str) else None
    if bpp is None:
        raise ValueError("frame format must be one of ['GRAYSCALE', 'RGB565'], got %r" % (fmt,))
    return bpp


def check_frame(nbytes, width, height, fmt):
    """Validate a frame's format, size and byte count (spec §14.1); returns bytes per pixel."""
    bpp = frame_bpp(fmt)
    if width < 1 or height < 1:
        raise ValueError("frame size must be at least 1x1, got %dx%d" % (width, height))
    if nbytes != width * height * bpp:
        raise ValueError("%s frame of %dx%d needs %d bytes (%d per pixel), got %d"
                         % (fmt, width, height, width * height * bpp, bpp, nbytes))
    return bpp


def frame_geometry(width, height, image_size):
    """(x0, y0, src) of the centre crop and nearest-neighbour resize (spec §14.2):
    output index i takes source index src[i] (0 <= src[i] < side) of the cropped square."""
    if image_size < 1:
        raise ValueError("image_size must be >= 1, got %d" % image_size)
    side = width if width < height else height
    src = array("H", bytes(2 * image_size)) if side < 65536 else [0] * image_size
    for i in range(image_size):
        src[i] = (2 * i + 1) * side // (2 * image_size)
    return (width - side) // 2, (height - side) // 2, src


def frame_row_pixels(row, r0, fmt, x0, src, S, C, pix, i):
    """Fill output row i of the (C, S, S) uint8 image pix from one frame row (its bytes
    start at row[r0]): columns x0 + src[j], colour conversion of spec §14.3."""
    plane = S * S
    o = i * S
    if fmt == "GRAYSCALE":
        for j in range(S):
            g = row[r0 + x0 + src[j]]
            pix[o + j] = g
            if C == 3:
                pix[plane + o + j] = g
                pix[2 * plane + o + j] = g
        return
    for j in range(S):
        p = r0 + 2 * (x0 + src[j])
        hi = row[p]
        lo = row[p + 1]
        r5 = hi >> 3
        g6 = ((hi & 7) << 3) | (lo >> 5)
        b5 = lo & 31
        r = (r5 << 3) | (r5 >> 2)
        g = (g6 << 2) | (g6 >> 4)
        b = (b5 << 3) | (b5 >> 2)
        if C == 3:
            pix[o + j] = r
            pix[plane + o + j] = g
            pix[2 * plane + o + j] = b
        else:
            pix[o + j] = (77 * r + 150 * g + 29 * b + 128) >> 8


def frame_to_pixels(buf, width, height, fmt, S, C, pix=None):
    """A camera frame held in memory -> (C, S, S) uint8 pixels, flat (spec §14.1-14.3)."""
    bpp = check_frame(len(buf), width, height, fmt)
    if C != 1 and C != 3:
        raise ValueError("the model takes 1 or 3 channels, got %d" % C)
    x0, y0, src = frame_geometry(width, height, S)
    if pix is None:
        pix = bytearray(C * S * S)
    stride = width * bpp
    for i in range(S):
        frame_row_pixels(buf, (y0 + src[i]) * stride, fmt, x0, src, S, C, pix, i)
    return pix


def input_tables(A, B, shift):
    """The (C x 256) int8 input tables of spec §14.4: table[c*256 + p] =
    sat8(rshift_round(p*A_c + B_c, shift_c))."""
    C = len(A)
    t = array("b", bytes(256 * C))
    for c in range(C):
        a = A[c]
        b = B[c] + (1 << (shift[c] - 1))
        s = shift[c]
        for p in range(256):
            y = (p * a + b) >> s
            t[256 * c + p] = -128 if y < -128 else 127 if y > 127 else y
    return t


def quantize_patches(pix, C, S, p, tables, out):
    """(C, S, S) uint8 pixels -> int8 patch vectors (N x C*p*p) through the input tables:
    tokens row-major over the grid, each patch channel-major (c, row, col), spec §14.4-5."""
    g = S // p
    plane = S * S
    o = 0
    for gr in range(g):
        for gc in range(g):
            for c in range(C):
                tb = 256 * c
                base = c * plane + gr * p * S + gc * p
                for r in range(p):
                    rb = base + r * S
                    for j in range(rb, rb + p):
                        out[o] = tables[tb + pix[j]]
                        o += 1
    return out


# ---------------------------------------------------------------- frame sources
# A frame: .width, .height, .format and .row(y) -> (buffer, offset of row y's first byte).
# The classifier reads only the rows its resize needs (28 of a 240-row frame), so a frame
# file larger than the heap is fine.

EXTENSIONS = {".gray": "GRAYSCALE", ".grey": "GRAYSCALE", ".rgb565": "RGB565"}


def _swap_row(src, a, n, dst):
    # little-endian 16-bit pixels -> big-endian bytes
    for i in range(0, n, 2):
        dst[i] = src[a + i + 1]
        dst[i + 1] = src[a + i]


class Frame:
    """A frame in memory. byteswap=True: RGB565 pixels stored as little-endian 16-bit words
    (rows are swapped into a small buffer as they are read; the frame is not copied)."""

    def __init__(self, buf, width, height, fmt, byteswap=False):
        self.bpp = check_frame(len(buf), width, height, fmt)
        self.buf = buf
        self.width = width
        self.height = height
        self.format = fmt
        self.stride = width * self.bpp
        self._swap = bytearray(self.stride) if byteswap and self.bpp == 2 else None

    def row(self, y):
        if self._swap is None:
            return self.buf, y * self.stride
        _swap_row(self.buf, y * self.stride, self.stride, self._swap)
        return self._swap, 0


class FrameFile:
    """A raw frame file (rows top to bottom, no header), read one row at a time."""

    def __init__(self, path, width, height, fmt):
        import os
        bpp = frame_bpp(fmt)
        try:
            size = os.stat(path)[6]
        except OSError:
            raise OSError("frame file %s: no such file" % path)
        try:
            check_frame(size, width, height, fmt)
        except ValueError as e:
            raise ValueError("frame file %s: %s" % (path, e))
        self.path = path
        self.width = width
        self.height = height
        self.format = fmt
        self.stride = width * bpp
        self._buf = bytearray(self.stride)
        self._f = open(path, "rb")

    def row(self, y):
        f = self._f
        f.seek(y * self.stride)
        n = f.readinto(self._buf)
        if n != self.stride:
            raise OSError("frame file %s: short read at row %d" % (self.path, y))
        return self._buf, 0

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_size(size):
    """'WxH' (or (w, h)) -> (w, h)."""
    if isinstance(size, str):
        parts = size.lower().split("x")
        try:
            w, h = int(parts[0]), int(parts[1])
            if len(parts) != 2:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError("frame size %r is not WIDTHxHEIGHT" % size)
        return w, h
    return int(size[0]), int(size[1])


def frame_format(path):
    """GRAYSCALE or RGB565 from a file name's extension."""
    dot = path.rfind(".")
    fmt = EXTENSIONS.get(path[dot:].lower()) if dot >= 0 else None
    if fmt is None:
        raise ValueError("%s: a raw frame file must be named *.gray or *.rgb565" % path)
    return fmt


def size_from_name(path):
    """'WxH' from a file name like cam_160x120.rgb565, or None."""
    name = path.split("/")[-1].rsplit(".", 1)[0]
    part = name.split("_")[-1]
    w, _, h = part.partition("x")
    return part if w.isdigit() and h.isdigit() else None


def frame_file(path, size=None):
    """A FrameFile; size 'WxH' (or (w, h)), or None to take it from the file name."""
    if size is None:
        size = size_from_name(path)
        if size is None:
            raise ValueError("%s: give the frame size, or name the file NAME_WxH%s"
                             % (path, path[path.rfind("."):] if "." in path else ".gray"))
    w, h = parse_size(size)
    return FrameFile(path, w, h, frame_format(path))
