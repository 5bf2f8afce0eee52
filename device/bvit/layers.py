# The integer ButterflyViT with the native module's whole-layer functions (docs/device.md,
# docs/native.md): bvit.model.Classifier uses this module when its backend is bvitnative
# and the model's bytes are read in place; MicroPython reads each layer's small per-row
# parameters and passes offsets into the model's bytes, the C code runs every token.
# Kept out of bvit.model so that boards reading a model row by row do not hold its code.
#
# The slot and parameter names (_m.EMW, _m.QB, _m.Q_N1S, ...) are bvit.model's globals,
# bound there from bvit.schema's BOARD table when a model is opened.

from array import array

from . import model as _m


def alloc(self):
    """The buffers of the whole-layer path (bvit.schema.ram_layers): activations, the
    parameters of one layer, and one scratch buffer (bytearray: zeroed in place)."""
    c = self.cfg
    d, E, k = c["dim"], c["num_experts"], c["top_k"]
    n, C, S, pd = c["tokens"], c["in_channels"], c["image_size"], c["patch_dim"]
    rows = max(3 * d, c["ffn_dim"], E, c["num_classes"])
    from .schema import layer_work
    self._work = bytearray(4 * layer_work(c))
    _m._unload("bvit.schema")
    zero = memoryview(bytes(3 * n * d))

    def a(tc, count):
        return array(tc, zero[0:count])

    self._qkv = a("b", 3 * n * d)           # q, k, v of every token
    self._x = a("h", n * d)                 # residual stream, int16
    self._a = a("b", n * d)                 # LayerNorm output, then attention output
    self._tok = a("b", n * pd)
    self._pix = bytearray(C * S * S)
    self._M, self._S, self._B = a("h", rows), a("b", rows), a("i", rows)
    self._M2, self._S2, self._B2 = a("h", d), a("b", d), a("i", d)
    self._G, self._Bn = a("h", d), a("i", d)
    self._idx = a("H", n * k)
    self._gates = a("i", n * k)
    self._y = a("h", d)
    zero = None


def forward(self, probe):
    """Steps 1-19 with the native module's whole-layer functions on the weights in
    place: a few calls per layer, the same integers (docs/native.md)."""
    c = self.cfg
    k = self.k
    n, d, f, pd, nc = c["tokens"], c["dim"], c["ffn_dim"], c["patch_dim"], c["num_classes"]
    E, kk, nl, g = c["num_experts"], c["top_k"], c["butterfly_stages"], c["grid"]
    W, q = self.weights, self._q
    mem, at = W.memory(), W.offset
    x, a, qkv, work = self._x, self._a, self._qkv, self._work
    M, S, B, M2, S2, B2 = self._M, self._S, self._B, self._M2, self._S2, self._B2
    G, Bn, idx, gates = self._G, self._Bn, self._idx, self._gates
    lin = k.linear_tokens
    # 1. x = embed(tokens) + per-token bias (position embedding), int16
    W.params(_m.EMM, _m.EMS, None, d, M, S, None)
    lin(self._tok, mem, mem, M, S, x, work,
        (n, pd, d, at(_m.EMW), at(_m.EMB), d, 0, d, 16, 0, 0, 1))
    for i in range(c["depth"]):
        b = _m.QB * i
        o = _m.NGLOBAL + i * _m.NBLOCK
        # 2-6. a = LN1(x); qkv; attention into a; x = x + proj(a)
        W.read(o + _m.N1G, 0, G, 2 * d)
        W.read(o + _m.N1B, 0, Bn, 4 * d)
        k.ln_tokens(x, n, G, Bn, q[b + _m.Q_N1S], q[b + _m.Q_N1E], a, work)
        W.params(o + _m.QKVM, o + _m.QKVS, o + _m.QKVB, 3 * d, M, S, B)
        lin(a, mem, B, M, S, qkv, work,
            (n, d, 3 * d, at(o + _m.QKVW), 0, 0, 0, 3 * d, 8, 0, 0, 1))
        k.attention(qkv, n, c["heads"], q[b + _m.Q_SCM], q[b + _m.Q_SCS], q[b + _m.Q_OUM],
                    q[b + _m.Q_OUS], a, work)
        W.params(o + _m.PRM, o + _m.PRS, o + _m.PRB, d, M, S, B)
        lin(a, mem, B, M, S, x, work, (n, d, d, at(o + _m.PRW), 0, 0, 0, d, 17,
                                        q[b + _m.Q_R1A], q[b + _m.Q_R1B], q[b + _m.Q_R1S]))
        if probe is not None:
            probe()
        # 7-16. a = LN2(x); routing; experts, mixture, W_out; x = x + y
        W.read(o + _m.N2G, 0, G, 2 * d)
        W.read(o + _m.N2B, 0, Bn, 4 * d)
        k.ln_tokens(x, n, G, Bn, q[b + _m.Q_N2S], q[b + _m.Q_N2E], a, work)
        gm = [q[b + j] for pair in _m.Q_GATES for j in pair]
        k.route(a, mem, idx, gates, work,
                (g, d, E, kk, 1 if c["smooth_routing"] else 0, at(o + _m.RTW)) + tuple(gm))
        W.params(o + _m.WINM, o + _m.WINS, None, f, M, S, None)
        W.params(o + _m.WOM, o + _m.WOS, o + _m.WOB, d, M2, S2, B2)
        k.ffn(a, x, idx, gates, mem, mem, M, S, M2, S2, B2, work,
              (n, d, f, kk, nl, q[b + _m.Q_P], E, at(o + _m.PHI), at(o + _m.THETA),
               at(o + _m.WIN), at(o + _m.WOUT), q[b + _m.Q_R2A], q[b + _m.Q_R2B], q[b + _m.Q_R2S]))
        if probe is not None:
            probe()
    # 17-19. mean pool, LayerNorm, head
    b = _m.QB * c["depth"]
    y = self._y
    k.mean_pool(x, n, q[b + _m.Q_POM], q[b + _m.Q_POS], y)
    W.read(_m.NG, 0, G, 2 * d)
    W.read(_m.NB, 0, Bn, 4 * d)
    k.ln_tokens(y, 1, G, Bn, q[b + _m.Q_NS], q[b + _m.Q_NE], a, work)
    logits = array("i", bytes(4 * nc))
    lin(a, mem, mem, None, None, logits, work,
        (1, d, nc, at(_m.HDW), at(_m.HDB), 0, 0, nc, 32, 0, 0, 1))
    return logits

