# The integer ButterflyViT on the board: the forward of host/butterflyvit/intmodel.py, step
# by step (docs/integer-model.md), with the weights left in flash.
#
#     from bvit.model import Classifier
#     net = Classifier("model.bvit")             # or a frozen / ROMFS bytes object
#     logits = net.classify_frame(frame)         # a bvit.frames frame: GRAYSCALE / RGB565
#     net.top(logits, 3)                         # [(class index, logit), ...]
#
# Opening (bvit.loader, unloaded afterwards with bvit.modelfile and bvit.schema) checks the
# file by the schema's rules and keeps the section offsets and scalar parameters. RAM then
# holds the activation buffers, allocated once (bvit.schema.ram_needed sizes them first:
# a board without the room gets a MemoryError saying how much is needed), and one buffer
# for weights read from a file in slices of at most `weight_buffer` bytes; a model given
# as bytes is read in place. bvit.weights reads them (the file or bytes, the weight buffer
# and what it holds); this module opens the model, allocates the buffers and runs the forward.
# Nothing is allocated per image apart from a few small objects.
#
# Every step calls the op intmodel.py calls (bvit.nn / frames and the hot loops of the
# kernel backend, bvit.ops); tests/test_device_model.py checks the logits bit for bit.

import gc
from array import array

from .weights import Weights, first

# bvit.frames, bvit.nn and the kernel backend are imported after the buffers are allocated
# (Classifier.__init__): their many small objects fill gaps that a buffer could not use.
F = N = None

# Section slots and scalar-parameter indices (INA, EMW, ..., QKVW, ..., Q_N1S, ..., QB):
# module globals that Classifier binds by name when it opens a model, from bvit.schema's
# BOARD table. Section `slot` is read with self.weights; block i's parameters are
# self._q[QB * i + Q_...], the model's last ones self._q[QB * depth + Q_...]. (Bound as
# data, not assigned here: code at the top level of a module stays in a board's RAM.)


def _pad(n):
    p = 1
    while p < n:
        p <<= 1
    return p


def requirements(source, weight_buffer=4096):
    """(bytes of buffers, bytes of JSON metadata) of a model file, from its header and
    configuration only (bvit.schema.requirements); None if it cannot be told."""
    try:
        from .schema import requirements
        return requirements(source, weight_buffer)
    except Exception:
        return None
    finally:
        _unload("bvit.schema")


class Classifier:
    """An integer ButterflyViT from a model file (a path) or a bytes-like object.

    backend: "auto" (native C module, else viper, else pure MicroPython) or one by name.
    weight_buffer: bytes of RAM for weights read from a file (a matrix that does not fit is
    read in row blocks). verify: check the file's CRC-32 when opening. probe: called with no
    argument at a few points of every forward (classify.py measures the heap there)."""

    def __init__(self, source, backend="auto", weight_buffer=4096, verify=True, probe=None):
        global F, N
        self.probe = probe
        gc.collect()
        from . import loader
        try:
            # The native module's whole-layer functions run when the weights can be read
            # in place (loader.in_place): MicroPython then calls them once per layer.
            source, self.layers = loader.in_place(source, backend)
            r = loader.load(source, verify, weight_buffer, self.layers)
        finally:
            loader = None
            _unload("bvit.loader")
            _unload("bvit.modelfile")
            _unload("bvit.schema")
        gc.collect()
        g = globals()                           # the slot numbers, by name (r.slots: the
        for k, v in r.slots:                    # schema's generator, its last use)
            g[k] = v
        g = r.slots = None
        # Keep copies made after the loader's garbage is gone: the originals lie scattered
        # through the heap, and the buffers below need long free runs.
        gc.collect()
        self.cfg = dict(r.cfg)
        self._q = list(r.quant)
        self.classes = ["%s" % x for x in r.classes]
        self.logit_scale = r.logit_scale * 1.0
        self.file_size = r.file_size
        self.ram, wlen = r.ram                  # (bytes of all buffers, of the weight buffer)
        file = r.file                           # (None when the model is read in place)
        if file is not None and isinstance(source, str):   # reopened: the new file object
            file.close()                                   # sits low too
            file = open(source, "rb")
        self.weights = Weights(file, r.mem, r.off)
        file = r = None
        self.num_classes = self.cfg["num_classes"]
        gc.collect()
        free = gc.mem_free()
        try:                                    # too little room, or no free run long enough
            if self.ram > free:
                raise MemoryError
            if self.layers:
                from . import layers         # only where it runs: its code stays off the heap
                layers.alloc(self)           # of boards that read the model row by row
            else:
                self._alloc(wlen)
        except MemoryError:
            self.close()
            raise MemoryError("the model needs %d KB of RAM for its buffers, %d KB %s" % (
                (self.ram + 1023) // 1024, free // 1024,
                "are free" if self.ram > free else "were free (fragmented heap)"))
        gc.collect()
        from . import frames, nn, ops
        F, N = frames, nn
        self.k = k = ops.load(backend)
        if self.layers and k.NAME != "native":   # "auto" found no native module after all
            raise ValueError("the native module's layer functions did not load")
        self._rq = ops.get(k, "requant_rows")
        self._relu = ops.get(k, "relu")
        self._xin = ops.get(k, "expert_input")
        self._mixadd = ops.get(k, "mix_add")
        self._mixround = ops.get(k, "mix_round")
        self._rowpix = ops.get(k, "frame_row_pixels")
        self._patches = ops.get(k, "quantize_patches")
        C = self.cfg["in_channels"]
        A, B, sh = array("i", bytes(4 * C)), array("i", bytes(4 * C)), array("i", bytes(4 * C))
        W = self.weights
        W.read(INA, 0, A, 4 * C)
        W.read(INB, 0, B, 4 * C)
        W.read(INS, 0, sh, 4 * C)
        self._in = F.input_tables(A, B, sh)     # spec §14.4

    # ------------------------------------------------------------------ buffers

    def _alloc(self, wlen):
        c = self.cfg
        d, f, E, k, nl = c["dim"], c["ffn_dim"], c["num_experts"], c["top_k"], c["butterfly_stages"]
        n, g, C, S, pd = c["tokens"], c["grid"], c["in_channels"], c["image_size"], c["patch_dim"]
        dp, fp = _pad(d), _pad(f)
        rows = max(3 * d, f, E, c["num_classes"])
        ring = (3 if c["smooth_routing"] else 1) * g * E
        tin, tout = f * ((d + 4) // 5), d * ((f + 4) // 5)     # w_in, w_out (spec §4 rows)
        # One zero initialiser for every array (array(tc, bytes(n)) would make a temporary
        # as large as each buffer); the largest buffers first, while the heap is in one piece.
        zero = memoryview(bytes(max(2 * n * d + d, n * d, ring, wlen)))

        def a(tc, count):
            return array(tc, zero[0:count])

        self._kv = a("b", 2 * n * d + d)        # keys and values of every token, one query
        self._x = a("h", n * d)                 # residual stream, int16
        self._ring = a("i", ring)               # router logits of up to 3 grid rows
        wbuf = a("b", wlen)                     # weights read from a file (int8; trits as bytes)
        self._a = a("b", n * d)                 # LayerNorm output, then attention output
        self._tok = a("b", n * pd)
        self._pix = bytearray(C * S * S)
        self._acc = a("i", rows)
        self._M, self._S, self._B = a("h", rows), a("b", rows), a("i", rows)
        self._mix = a("i", f)
        self._h = a("h", fp)
        self._m = a("h", f)
        self._idx = a("H", n * k)
        self._gates = a("i", n * k)
        self._u = a("h", dp)
        self._y = a("h", d)
        self._srow = a("i", max(n, E))
        self._hacc = a("i", d)
        self._sel = a("i", k)
        self._M2, self._S2, self._B2 = a("h", d), a("b", d), a("i", d)
        self._G, self._Bn = a("h", d), a("i", d)
        zero = None
        self.weights.take(wbuf, tin, tout, nl * dp, nl * fp)

    def close(self):
        self.weights.close()

    # ------------------------------------------------------------------ the forward

    def frame_to_tokens(self, frame):
        """A frame (GRAYSCALE / RGB565, any size) -> int8 patch tokens (spec §14)."""
        c = self.cfg
        S, C = c["image_size"], c["in_channels"]
        fmt = frame.format
        F.frame_bpp(fmt)
        x0, y0, src = F.frame_geometry(frame.width, frame.height, S)
        pix = self._pix
        for i in range(S):
            row, r0 = frame.row(y0 + src[i])
            self._rowpix(row, r0, fmt, x0, src, S, C, pix, i)
        self._patches(pix, C, S, c["patch_size"], self._in, self._tok)
        return self._tok

    def classify_frame(self, frame):
        self.frame_to_tokens(frame)
        return self.forward()

    def forward(self, tokens=None):
        """int8 patch tokens (default: those of the last frame) -> int32 logits, array('i')."""
        if tokens is not None and tokens is not self._tok:
            t = self._tok
            for i in range(len(t)):
                t[i] = tokens[i]
        probe = self.probe
        if self.layers:
            from . import layers
            return layers.forward(self, probe)
        self._embed()
        for i in range(self.cfg["depth"]):
            self._attention(i)
            if probe is not None:
                probe()
            self._ffn(i)
            if probe is not None:
                probe()
        return self._head()

    def _embed(self):
        """1. x = linear(tokens; embed.*), int16; the bias holds the position embedding."""
        c = self.cfg
        k = self.k
        n, d, pd = c["tokens"], c["dim"], c["patch_dim"]
        M, S, B, acc, x, tok = self._M, self._S, self._B, self._acc, self._x, self._tok
        W = self.weights
        W.params(EMM, EMS, None, d, M, S, None)
        Bt = first(B, d)
        r0 = 0
        while r0 < d:
            w, nr = W.rows(EMW, d, pd, r0)
            for t in range(n):
                W.read(EMB, 4 * t * d, Bt, 4 * d)              # token t's bias row
                k.matvec8(tok, t * pd, pd, w, nr, acc)
                self._rq(acc, 0, x, t * d + r0, nr, M, S, r0, B, -32768, 32767)
            r0 += nr

    def _ln(self, x, n, d, slot_g, slot_b, sh, E, out):
        G, Bn = self._G, self._Bn
        self.weights.read(slot_g, 0, G, 2 * d)
        self.weights.read(slot_b, 0, Bn, 4 * d)
        for t in range(n):
            N.layernorm(x, t * d, d, G, Bn, sh, E, out, t * d)

    def _attention(self, i):
        """2-6. a = LN1(x); qkv; attention; x = x + proj(o). Keys and values of every token
        are kept (kv: n x 2d); each query is computed when its turn comes, and its output
        overwrites its LayerNorm row in a, which only its query still needed."""
        c = self.cfg
        k = self.k
        n, d = c["tokens"], c["dim"]
        q = self._q
        b = QB * i
        sh1, E1, sM, ssh = q[b + Q_N1S], q[b + Q_N1E], q[b + Q_SCM], q[b + Q_SCS]
        oM, osh = q[b + Q_OUM], q[b + Q_OUS]
        o = NGLOBAL + i * NBLOCK
        x, a, kv, acc = self._x, self._a, self._kv, self._acc
        M, S, B = self._M, self._S, self._B
        W = self.weights
        self._ln(x, n, d, o + N1G, o + N1B, sh1, E1, a)
        d2, d3 = 2 * d, 3 * d
        W.params(o + QKVM, o + QKVS, o + QKVB, d3, M, S, B)
        r0 = d
        while r0 < d3:                          # k and v: row blocks of the weight, all tokens
            w, nr = W.rows(o + QKVW, d3, d, r0)
            for t in range(n):
                k.matvec8(a, t * d, d, w, nr, acc)
                self._rq(acc, 0, kv, t * d2 + r0 - d, nr, M, S, r0, B)
            r0 += nr
        q0 = n * d2                             # the query lives after the keys and values
        cut = N.softmax_cutoff(sM, ssh)
        heads, srow, hacc = c["heads"], self._srow, self._hacc
        scores, pv = k.attn_scores, k.attn_pv
        for t in range(n):
            r0 = 0
            while r0 < d:
                w, nr = W.rows(o + QKVW, d3, d, r0, d)
                k.matvec8(a, t * d, d, w, nr, acc)
                self._rq(acc, 0, kv, q0 + r0, nr, M, S, r0, B)
                r0 += nr
            N.attention_row(kv, q0, 0, d, d2, n, d, heads, sM, ssh, oM, osh, a, t * d, srow,
                            hacc, scores, pv, cut)
        W.params(o + PRM, o + PRS, o + PRB, d, M, S, B)
        y = self._y
        Ma, Mb, rsh = q[b + Q_R1A], q[b + Q_R1B], q[b + Q_R1S]
        for t in range(n):
            r0 = 0
            while r0 < d:
                w, nr = W.rows(o + PRW, d, d, r0)
                k.matvec8(a, t * d, d, w, nr, acc)
                self._rq(acc, 0, y, r0, nr, M, S, r0, B, -32768, 32767)
                r0 += nr
            N.residual_add(x, t * d, y, 0, d, Ma, Mb, rsh, x, t * d)

    def _router_row(self, i, r, dst):
        """8. Router logits (int32) of the tokens of grid row r into ring row dst."""
        c = self.cfg
        k = self.k
        g, d, E = c["grid"], c["dim"], c["num_experts"]
        slot = NGLOBAL + i * NBLOCK + RTW
        ring, acc, a, W = self._ring, self._acc, self._a, self.weights
        for col in range(g):
            t = r * g + col
            o = (dst * g + col) * E
            r0 = 0
            while r0 < E:
                w, nr = W.rows(slot, E, d, r0)
                k.matvec8(a, t * d, d, w, nr, acc)
                for j in range(nr):
                    ring[o + r0 + j] = acc[j]
                r0 += nr

    def _route(self, i):
        """9. Experts and Q15 gates of every token (spec §11), on neighbour sums when the
        model routes smoothly; the logits are computed one grid row ahead (3 rows kept)."""
        c = self.cfg
        g, E, kk = c["grid"], c["num_experts"], c["top_k"]
        ring, idx, gates, sel, srow = self._ring, self._idx, self._gates, self._sel, self._srow
        smooth = c["smooth_routing"]
        row = g * E
        q = self._q
        b = QB * i
        if smooth:
            self._router_row(i, 0, 0)
        for r in range(g):
            if smooth:
                if r + 1 < g:
                    self._router_row(i, r + 1, (r + 1) % 3)
                mid = (r % 3) * row
                up = ((r - 1) % 3) * row if r > 0 else -1
                down = ((r + 1) % 3) * row if r + 1 < g else -1
            else:
                self._router_row(i, r, 0)
            for col in range(g):
                i0 = (r * g + col) * kk
                if smooth:
                    cnt = N.neighbour_sum_rows(ring, mid, up, down, col, g, E, srow)
                    src, s0 = srow, 0
                else:
                    cnt = 1
                    src, s0 = ring, col * E
                N.topk(src, s0, E, kk, idx, i0)
                for j in range(kk):
                    sel[j] = src[s0 + idx[i0 + j]]
                gm, gs = Q_GATES[cnt - 2 if cnt > 1 else 0]       # counts 1, 3, 4, 5
                N.softmax(sel, 0, kk, q[b + gm], q[b + gs], gates, i0)

    def _ffn(self, i):
        """7-16. a = LN2(x); routing; butterfly experts; mixture; x = x + W_out m."""
        c = self.cfg
        k = self.k
        n, d, f, kk, nl = c["tokens"], c["dim"], c["ffn_dim"], c["top_k"], c["butterfly_stages"]
        q = self._q
        b = QB * i
        sh2, E2, P = q[b + Q_N2S], q[b + Q_N2E], q[b + Q_P]
        o = NGLOBAL + i * NBLOCK
        x, a = self._x, self._a
        self._ln(x, n, d, o + N2G, o + N2B, sh2, E2, a)
        self._route(i)
        dp, fp = _pad(d), _pad(f)
        nph, nth = nl * dp // 2, nl * fp // 2
        M, S, M2, S2, B2 = self._M, self._S, self._M2, self._S2, self._B2
        W = self.weights
        W.params(o + WINM, o + WINS, None, f, M, S, None)
        W.params(o + WOM, o + WOS, o + WOB, d, M2, S2, B2)
        u, h, mix, m, y, acc = self._u, self._h, self._mix, self._m, self._y, self._acc
        idx, gates = self._idx, self._gates
        bfly, tern, rq = k.butterfly_ph, k.ternary_rows, self._rq
        xin, relu, mixadd = self._xin, self._relu, self._mixadd
        Ma, Mb, rsh = q[b + Q_R2A], q[b + Q_R2B], q[b + Q_R2S]
        for t in range(n):
            ao = t * d
            for j in range(kk):
                e = idx[t * kk + j]
                xin(a, ao, d, P, u, dp)         # 10. u = a * 2^P (int16), zero-padded
                raw, b0 = W.phases(o + PHI, e, nph, W.phi)
                bfly(u, raw, b0, nl, dp)        # 11. u = B(phi_e) u
                r0 = 0
                while r0 < f:                   # 12. h = requant(W_in u), int16
                    tr, t0, nr = W.trit_rows(o + WIN, f, d, r0, 0)
                    tern(tr, t0, nr, d, u, acc)
                    rq(acc, 0, h, r0, nr, M, S, r0, None, -32768, 32767)
                    r0 += nr
                for q in range(f, fp):
                    h[q] = 0
                raw, b0 = W.phases(o + THETA, e, nth, W.theta)
                bfly(h, raw, b0, nl, fp)        # 13. h = relu(B(theta_e) h)
                relu(h, 0, f)
                mixadd(mix, h, gates[t * kk + j], f, j == 0)   # 14. sum_j g_j h_j (int32)
            self._mixround(mix, m, f)
            r0 = 0
            while r0 < d:                       # 15. y = requant(W_out m + b), int16
                tr, t0, nr = W.trit_rows(o + WOUT, d, f, r0, 1)
                tern(tr, t0, nr, f, m, acc)
                rq(acc, 0, y, r0, nr, M2, S2, r0, B2, -32768, 32767)
                r0 += nr
            N.residual_add(x, ao, y, 0, d, Ma, Mb, rsh, x, ao)   # 16.

    def _head(self):
        """17-19. Mean pool, LayerNorm, head: int32 logits."""
        c = self.cfg
        n, d, nc = c["tokens"], c["dim"], c["num_classes"]
        y, z, acc, B = self._y, self._a, self._acc, self._B
        q = self._q
        b = QB * c["depth"]
        N.mean_pool(self._x, n, d, q[b + Q_POM], q[b + Q_POS], y)
        self._ln(y, 1, d, NG, NB, q[b + Q_NS], q[b + Q_NE], z)
        logits = array("i", bytes(4 * nc))
        W = self.weights
        r0 = 0
        while r0 < nc:
            w, nr = W.rows(HDW, nc, d, r0)
            self.k.matvec8(z, 0, d, w, nr, acc)
            for j in range(nr):
                logits[r0 + j] = acc[j]
            r0 += nr
        W.read(HDB, 0, first(B, nc), 4 * nc)
        for j in range(nc):
            logits[j] += B[j]
        return logits

    # ------------------------------------------------------------------ results

    def top(self, logits, k=3):
        """[(class index, logit)] of the k largest logits, ties to the lower index."""
        k = min(k, len(logits))
        idx = array("H", bytes(2 * k))
        N.topk(logits, 0, len(logits), k, idx, 0)
        return [(i, logits[i]) for i in idx]

    def probabilities(self, logits):
        """Float softmax of the logits at their real scale (for printing only)."""
        import math
        s = self.logit_scale
        m = max(logits)
        e = [math.exp((v - m) * s) for v in logits]
        z = sum(e)
        return [v / z for v in e]


def _unload(name):
    import sys
    sys.modules.pop(name, None)
    pkg, _, mod = name.rpartition(".")
    try:
        delattr(sys.modules[pkg], mod)
    except (KeyError, AttributeError, TypeError):
        pass

