"""ctypes access to the C kernels' checked layer (native/kernels/bvit_api.h), for tests.

`build_library(out_dir, sanitize)` compiles native/kernels/*.c for the host into a shared
library (-std=c99 -Wall -Wextra -Werror; with `sanitize`, AddressSanitizer and
UndefinedBehaviorSanitizer, aborting on the first error). `Native(path)` loads it and
offers the functions of the MicroPython module `bvitnative` under the same names and
argument order (docs/native.md), on numpy arrays: every buffer is copied into a block of
exactly its size from the C library's malloc (so that, with ASan preloaded, one byte past
it is a red zone), the call is made, outputs are copied back, and an error message of the
checked layer becomes the TypeError or ValueError the module raises.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np

NATIVE = Path(__file__).resolve().parents[1]
KERNELS = NATIVE / "kernels"
SOURCES = sorted(KERNELS.glob("*.c"))
HEADERS = sorted(KERNELS.glob("*.h"))

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fPIC", "-shared", "-g"]
SANITIZE = ["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer"]

LUT_ENTRIES = 256 * 13

_TYPECODES = {np.dtype(np.int8): "b", np.dtype(np.uint8): "B", np.dtype(np.int16): "h",
              np.dtype(np.uint16): "H", np.dtype(np.int32): "i"}


def build_library(out_dir: Path, sanitize: bool = False) -> Path:
    """Compile the kernels into a shared library (cached by content and flags)."""
    flags = CFLAGS + (SANITIZE if sanitize else ["-O2"])
    h = hashlib.sha256("\0".join(flags).encode())
    for p in SOURCES + HEADERS:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    out = Path(out_dir) / f"libbvit-{'san-' if sanitize else ''}{h.hexdigest()[:16]}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["gcc", *flags, *map(str, SOURCES), "-o", str(tmp)], check=True,
                       capture_output=True, text=True)
        tmp.replace(out)
    return out


def sanitizer_preload() -> str:
    """The LD_PRELOAD value a Python process needs to load the sanitized library."""
    libs = []
    for name in ("libasan.so", "libubsan.so"):
        p = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True,
                           text=True, check=True).stdout.strip()
        if not os.path.isabs(p) or not os.path.exists(p):
            raise FileNotFoundError(f"gcc has no {name}")
        libs.append(os.path.realpath(p))
    return ":".join(libs)


class Buf(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("len", ctypes.c_size_t), ("type", ctypes.c_int)]


class Mult(ctypes.Structure):
    _fields_ = [("is_buffer", ctypes.c_int), ("M", ctypes.c_long), ("shift", ctypes.c_long),
                ("Mb", Buf), ("shiftb", Buf)]


_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]


class _Arg:
    """A numpy array copied into an exactly-sized malloc block (or None)."""

    def __init__(self, a, typecode=None):
        self.array = None
        self.ptr = None
        if a is None:
            self.buf = Buf(None, 0, 0)
            return
        if isinstance(a, (bytes, bytearray)):
            a = np.frombuffer(bytes(a), dtype=np.uint8)
        a = np.ascontiguousarray(a)
        self.array = a
        code = typecode or _TYPECODES.get(a.dtype, a.dtype.char)
        n = a.nbytes
        self.ptr = _libc.malloc(max(n, 1))
        if n:
            ctypes.memmove(self.ptr, a.ctypes.data, n)
        self.buf = Buf(self.ptr, n, ord(code) if isinstance(code, str) else code)

    def back(self, target):
        """Copy the C buffer back into the numpy array `target` (in place)."""
        if target is not None and self.ptr is not None and target.nbytes:
            ctypes.memmove(target.ctypes.data, self.ptr, target.nbytes)

    def free(self):
        if self.ptr is not None:
            _libc.free(self.ptr)
            self.ptr = None


class Native:
    """The bvitnative functions over numpy arrays, through the checked C layer."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))
        self._args = []

    # -- plumbing -------------------------------------------------------------
    def _buf(self, a, typecode=None):
        arg = _Arg(a, typecode)
        self._args.append(arg)
        return arg

    def _mult(self, M, shift):
        if isinstance(M, (int, np.integer)) and isinstance(shift, (int, np.integer)):
            return Mult(0, int(M), int(shift), Buf(None, 0, 0), Buf(None, 0, 0))
        mb, sb = self._buf(M), self._buf(shift)
        return Mult(1, 0, 0, mb.buf, sb.buf)

    def _call(self, name, *args, outs=()):
        fn = getattr(self.lib, "bvit_api_" + name)
        fn.restype = ctypes.c_char_p
        try:
            msg = fn(*args)
            if msg is None:
                for arg in outs:
                    arg.back(arg.array_target)
                return
            text = msg.decode()
            exc = {"T": TypeError, "V": ValueError}[text[0]]
            raise exc(text[1:])
        finally:
            for a in self._args:
                a.free()
            self._args = []

    def _out(self, a, typecode=None):
        arg = self._buf(a, typecode)
        arg.array_target = a
        return arg

    @staticmethod
    def _p(arg):
        return ctypes.byref(arg.buf)

    # -- the module's functions ----------------------------------------------
    def check_trits(self, packed, rows, n):
        p = self._buf(packed)
        where = ctypes.c_long(-1)
        self._call("check_trits", self._p(p), ctypes.c_long(rows), ctypes.c_long(n),
                   ctypes.byref(where))

    def unpack_trits(self, packed, rows, n, out):
        p, o = self._buf(packed), self._out(out)
        where = ctypes.c_long(-1)
        self._call("unpack_trits", self._p(p), ctypes.c_long(rows), ctypes.c_long(n),
                   self._p(o), ctypes.byref(where), outs=[o])
        return out

    def ternary_matvec(self, packed, rows, n, x, out):
        p, xb, o = self._buf(packed), self._buf(x), self._out(out)
        self._call("ternary_matvec", self._p(p), ctypes.c_long(rows), ctypes.c_long(n),
                   self._p(xb), self._p(o), outs=[o])
        return out

    def ternary_matvec_lut(self, packed, rows, n, x, out, table):
        p, xb, o, t = self._buf(packed), self._buf(x), self._out(out), self._buf(table)
        self._call("ternary_matvec_lut", self._p(p), ctypes.c_long(rows), ctypes.c_long(n),
                   self._p(xb), self._p(o), self._p(t), outs=[o])
        return out

    def ternary_linear(self, packed, rows, n, x, M, shift, bias, out, table=None, acc=None):
        p, xb = self._buf(packed), self._buf(x)
        m = self._mult(M, shift)
        b, o, t, a = self._buf(bias), self._out(out), self._buf(table), self._buf(acc)
        self._call("ternary_linear", self._p(p), ctypes.c_long(rows), ctypes.c_long(n),
                   self._p(xb), ctypes.byref(m), self._p(b), self._p(o), self._p(t), self._p(a),
                   outs=[o])
        return out

    def rshift_round(self, x, s):
        r = ctypes.c_long()
        self._call("rshift_round", ctypes.c_long(x), ctypes.c_long(s), ctypes.byref(r))
        return r.value

    def requant(self, acc, M, shift, lo=-128, hi=127):
        r = ctypes.c_long()
        self._call("requant", ctypes.c_long(acc), ctypes.c_long(M), ctypes.c_long(shift),
                   ctypes.c_long(lo), ctypes.c_long(hi), ctypes.byref(r))
        return r.value

    def requant_into(self, acc, M, shift, out):
        a = self._buf(acc)
        m = self._mult(M, shift)
        o = self._out(out)
        self._call("requant_vec", self._p(a), ctypes.byref(m), self._p(o), outs=[o])
        return out

    def sincos(self, phases, cos, sin):
        p, c, s = self._buf(phases), self._out(cos), self._out(sin)
        self._call("sincos", self._p(p), self._p(c), self._p(s), outs=[c, s])

    def butterfly(self, v, cos, sin, n_stages, n_pad):
        vb, c, s = self._out(v), self._buf(cos), self._buf(sin)
        self._call("butterfly", self._p(vb), self._p(c), self._p(s), ctypes.c_long(n_stages),
                   ctypes.c_long(n_pad), outs=[vb])
        return v

    def butterfly_stage(self, v, cos, sin, l, n_pad):
        vb, c, s = self._out(v), self._buf(cos), self._buf(sin)
        self._call("butterfly_stage", self._p(vb), self._p(c), self._p(s), ctypes.c_long(l),
                   ctypes.c_long(n_pad), outs=[vb])
        return v

    def butterfly_phase(self, v, phases, n_stages, n_pad):
        vb, p = self._out(v), self._buf(phases)
        self._call("butterfly_phase", self._p(vb), self._p(p), ctypes.c_long(n_stages),
                   ctypes.c_long(n_pad), outs=[vb])
        return v

    def rot_expand(self, phases, rot):
        p, r = self._buf(phases), self._out(rot)
        self._call("rot_expand", self._p(p), self._p(r), outs=[r])
        return rot

    def expert(self, x, P, phi_rot, theta_rot, n_stages, packed, M, shift, out, work, table):
        xb, pr, tr, pk = self._buf(x), self._buf(phi_rot), self._buf(theta_rot), self._buf(packed)
        m = self._mult(M, shift)
        o, w, t = self._out(out), self._buf(work), self._buf(table)
        self._call("expert", self._p(xb), ctypes.c_long(P), self._p(pr), self._p(tr),
                   ctypes.c_long(n_stages), self._p(pk), ctypes.byref(m), self._p(o), self._p(w),
                   self._p(t), outs=[o])
        return out

    def linear(self, x, w, bias, M, shift, out):
        xb, wb, b = self._buf(x), self._buf(w), self._buf(bias)
        m = self._mult(M, shift)
        o = self._out(out)
        self._call("linear", self._p(xb), self._p(wb), self._p(b), ctypes.byref(m), self._p(o),
                   outs=[o])
        return out

    def linear_acc(self, x, w, bias, out):
        xb, wb, b, o = self._buf(x), self._buf(w), self._buf(bias), self._out(out)
        self._call("linear_acc", self._p(xb), self._p(wb), self._p(b), self._p(o), outs=[o])
        return out

    def layernorm(self, x, G, B, shift, E, out):
        xb, g, b, o = self._buf(x), self._buf(G), self._buf(B), self._out(out)
        self._call("layernorm", self._p(xb), self._p(g), self._p(b), ctypes.c_long(shift),
                   ctypes.c_int64(E), self._p(o), outs=[o])
        return out

    def softmax(self, L, M, shift, out):
        lb, o = self._buf(L), self._out(out)
        self._call("softmax", self._p(lb), ctypes.c_long(M), ctypes.c_long(shift), self._p(o),
                   outs=[o])
        return out

    def attention(self, qkv, n_tokens, heads, score_M, score_shift, out_M, out_shift, out, work):
        q = self._buf(qkv)
        sm, om = self._mult(score_M, score_shift), self._mult(out_M, out_shift)
        o, w = self._out(out), self._buf(work)
        self._call("attention", self._p(q), ctypes.c_long(n_tokens), ctypes.c_long(heads),
                   ctypes.byref(sm), ctypes.byref(om), self._p(o), self._p(w), outs=[o])
        return out

    def relu(self, v):
        vb = self._out(v)
        self._call("relu", self._p(vb), outs=[vb])
        return v

    def residual_add(self, a, b, Ma, Mb, shift, out):
        ab, bb, o = self._buf(a), self._buf(b), self._out(out)
        self._call("residual_add", self._p(ab), self._p(bb), ctypes.c_long(Ma), ctypes.c_long(Mb),
                   ctypes.c_long(shift), self._p(o), outs=[o])
        return out

    def mean_pool(self, x, n_tokens, M, shift, out):
        xb, o = self._buf(x), self._out(out)
        self._call("mean_pool", self._p(xb), ctypes.c_long(n_tokens), ctypes.c_long(M),
                   ctypes.c_long(shift), self._p(o), outs=[o])
        return out

    def topk(self, L, k, out):
        lb, o = self._buf(L), self._out(out)
        self._call("topk", self._p(lb), ctypes.c_long(k), self._p(o), outs=[o])
        return out

    def mix(self, h, gates, out):
        hb, g, o = self._buf(h), self._buf(gates), self._out(out)
        self._call("mix", self._p(hb), self._p(g), self._p(o), outs=[o])
        return out

    # -- the board backend ------------------------------------------------------
    def matvec8(self, x, x0, n, w, rows, out):
        xb, wb, o = self._buf(x), self._buf(w), self._out(out)
        self._call("matvec8", self._p(xb), ctypes.c_long(x0), ctypes.c_long(n), self._p(wb),
                   ctypes.c_long(rows), self._p(o), outs=[o])
        return out

    def ternary_rows(self, packed, p0, rows, n, x, out):
        p, xb, o = self._buf(packed), self._buf(x), self._out(out)
        where = ctypes.c_long(-1)
        self._call("ternary_rows", self._p(p), ctypes.c_long(p0), ctypes.c_long(rows),
                   ctypes.c_long(n), self._p(xb), self._p(o), ctypes.byref(where), outs=[o])
        return out

    # -- whole layers -------------------------------------------------------------
    @staticmethod
    def _params(p):
        return (ctypes.c_long * len(p))(*[int(v) for v in p]), ctypes.c_size_t(len(p))

    def ln_tokens(self, x, n, G, B, shift, E, out, work):
        xb, g, b, o, w = self._buf(x), self._buf(G), self._buf(B), self._out(out), self._buf(work)
        self._call("ln_tokens", self._p(xb), ctypes.c_long(n), self._p(g), self._p(b),
                   ctypes.c_long(shift), ctypes.c_int64(E), self._p(o), self._p(w), outs=[o])
        return out

    def linear_tokens(self, x, w, bias, M, shift, out, work, params):
        xb, wb, b, m, s = self._buf(x), self._buf(w), self._buf(bias), self._buf(M), self._buf(shift)
        o, wk = self._out(out), self._buf(work)
        self._call("linear_tokens", self._p(xb), self._p(wb), self._p(b), self._p(m), self._p(s),
                   self._p(o), self._p(wk), *self._params(params), outs=[o])
        return out

    def route(self, a, w, idx, gates, work, params):
        ab, wb, i, g, wk = self._buf(a), self._buf(w), self._out(idx), self._out(gates), self._buf(work)
        self._call("route", self._p(ab), self._p(wb), self._p(i), self._p(g), self._p(wk),
                   *self._params(params), outs=[i, g])

    def ffn(self, a, x, idx, gates, phases, trits, in_M, in_shift, out_M, out_shift, out_B, work,
            params):
        bufs = [self._buf(a), self._out(x)] + [self._buf(v) for v in (
            idx, gates, phases, trits, in_M, in_shift, out_M, out_shift, out_B, work)]
        self._call("ffn", *[self._p(v) for v in bufs], *self._params(params), outs=[bufs[1]])
        return x

    def ffn_work_size(self, n_tokens, d, f, k, n_stages, slots):
        fn = self.lib.bvit_api_ffn_work_size
        fn.restype = ctypes.c_long
        n = fn(*[ctypes.c_long(v) for v in (n_tokens, d, f, k, n_stages, slots)])
        if n < 0:
            raise ValueError("ffn_work_size: sizes out of range")
        return n

    def butterfly_ph(self, v, raw, b0, n_stages, n_pad):
        vb, r = self._out(v), self._buf(raw)
        self._call("butterfly_ph", self._p(vb), self._p(r), ctypes.c_long(b0),
                   ctypes.c_long(n_stages), ctypes.c_long(n_pad), outs=[vb])
        return v

    def attn_scores(self, qkv, q0, k0, stride, n, hd, out):
        q, o = self._buf(qkv), self._out(out)
        self._call("attn_scores", self._p(q), ctypes.c_long(q0), ctypes.c_long(k0),
                   ctypes.c_long(stride), ctypes.c_long(n), ctypes.c_long(hd), self._p(o), outs=[o])

    def attn_pv(self, p, n, qkv, v0, stride, hd, out):
        pb, q, o = self._buf(p), self._buf(qkv), self._out(out)
        self._call("attn_pv", self._p(pb), ctypes.c_long(n), self._p(q), ctypes.c_long(v0),
                   ctypes.c_long(stride), ctypes.c_long(hd), self._p(o), outs=[o])
