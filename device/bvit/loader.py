# Opening a model file on the board: container checks (bvit.modelfile: magic, version,
# sizes, CRC-32, section table), then the integer model's own (docs/integer-model.md):
# metadata format and version, configuration, every section present with the dtype and
# shape the configuration implies, and the per-tensor parameters in range. Keeps what the
# forward needs: section offsets (one array), the scalar parameters, the class names.
#
# bvit.model imports this module only while opening and unloads it (and bvit.modelfile)
# afterwards: the validation code does not stay in RAM next to the activations.

from array import array

from . import modelfile as MF

FORMAT = "butterflyvit-integer"
INT_VERSION = 1

# Sections, in the order of the slot numbers bvit.model uses (model.GLOBAL_* / BLOCK_*).
GLOBAL = ("input.a", "input.b", "input.shift", "embed.weight", "embed.bias", "embed.mult",
          "embed.shift", "norm.g", "norm.b", "head.weight", "head.bias")
BLOCK = ("norm1.g", "norm1.b", "attn.qkv.weight", "attn.qkv.bias", "attn.qkv.mult",
         "attn.qkv.shift", "attn.proj.weight", "attn.proj.bias", "attn.proj.mult",
         "attn.proj.shift", "norm2.g", "norm2.b", "ffn.router.weight", "ffn.phi", "ffn.theta",
         "ffn.w_in", "ffn.w_in.mult", "ffn.w_in.shift", "ffn.w_out", "ffn.w_out.bias",
         "ffn.w_out.mult", "ffn.w_out.shift")


class ModelError(ValueError):
    """A valid container that is not a model this code runs (another kind or version, a bad
    configuration, a section missing or of the wrong type, a parameter out of range)."""


def pad(n):
    p = 1
    while p < n:
        p <<= 1
    return p


def _int(v, lo, hi, what):
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ModelError("bad model parameter %s = %r (expected an integer in %d..%d)"
                         % (what, v, lo, hi))
    return v


def _mult(pair, what, n=2):
    if not isinstance(pair, list) or len(pair) != n:
        raise ModelError("bad model parameter %s = %r" % (what, pair))
    for i in range(n - 1):
        _int(pair[i], 0, 32767, what)
    _int(pair[n - 1], 1, 62, what)
    return tuple(pair)


def config(meta):
    cfg = meta.get("config")
    if not isinstance(cfg, dict):
        raise ModelError("bad model configuration: %r" % (cfg,))
    if cfg.get("ffn", "butterfly") != "butterfly":
        raise ModelError("this is a %r model; the board runs ButterflyViT models" % cfg.get("ffn"))
    c = {}
    for key in ("image_size", "in_channels", "patch_size", "num_classes", "dim", "depth",
                "heads", "ffn_dim", "num_experts", "top_k", "butterfly_stages"):
        c[key] = _int(cfg.get(key), 1, 1 << 20, "config." + key)
    c["smooth_routing"] = bool(cfg.get("smooth_routing", False))
    if (c["image_size"] % c["patch_size"] or c["dim"] % c["heads"] or c["top_k"] > c["num_experts"]
            or c["dim"] < 2 or c["ffn_dim"] < 2 or c["dim"] > 1024
            or 1 << c["butterfly_stages"] > min(pad(c["dim"]), pad(c["ffn_dim"]))):
        raise ModelError("bad model configuration: %r" % (cfg,))
    if c["in_channels"] not in (1, 3):
        raise ModelError("the board takes 1- or 3-channel models, not %d" % c["in_channels"])
    c["grid"] = c["image_size"] // c["patch_size"]
    c["tokens"] = c["grid"] * c["grid"]
    c["patch_dim"] = c["in_channels"] * c["patch_size"] * c["patch_size"]
    return c


def expected(c):
    """(dtype, shape) of each GLOBAL and BLOCK section (as quantize.expected_shapes)."""
    d, f, E, nl = c["dim"], c["ffn_dim"], c["num_experts"], c["butterfly_stages"]
    C, n, pd, nc = c["in_channels"], c["tokens"], c["patch_dim"], c["num_classes"]
    dp, fp = pad(d) // 2, pad(f) // 2
    i8, i16, i32 = "int8", "int16", "int32"
    g = ((i32, (C,)), (i32, (C,)), (i32, (C,)), (i8, (d, pd)), (i32, (n, d)), (i16, (d,)),
         (i8, (d,)), (i16, (d,)), (i32, (d,)), (i8, (nc, d)), (i32, (nc,)))
    b = ((i16, (d,)), (i32, (d,)), (i8, (3 * d, d)), (i32, (3 * d,)), (i16, (3 * d,)),
         (i8, (3 * d,)), (i8, (d, d)), (i32, (d,)), (i16, (d,)), (i8, (d,)), (i16, (d,)),
         (i32, (d,)), (i8, (E, d)), (i16, (E, nl, dp)), (i16, (E, nl, fp)),
         ("trit5", (1, f * d)), (i16, (f,)), (i8, (f,)), ("trit5", (1, d * f)), (i32, (d,)),
         (i16, (d,)), (i8, (d,)))
    return g, b


def sections(m, c):
    """array('I') of section offsets, slot = GLOBAL index, or len(GLOBAL) + block *
    len(BLOCK) + BLOCK index; ModelError for a missing or mistyped section."""
    want_g, want_b = expected(c)
    depth = c["depth"]
    nb = len(BLOCK)
    ng = len(GLOBAL)
    off = array("I", bytes(4 * (ng + depth * nb)))
    seen = bytearray(len(off))
    for s in m.sections():
        name = s.name
        if name.startswith("blocks."):
            rest = name[7:]
            dot = rest.find(".")
            try:
                i = int(rest[:dot])
                j = BLOCK.index(rest[dot + 1:])
            except ValueError:
                continue
            if i >= depth:
                continue
            want = want_b[j]
            slot = ng + i * nb + j
        elif name in GLOBAL:
            slot = GLOBAL.index(name)
            want = want_g[slot]
        else:
            continue
        got = (MF.DTYPE_NAMES[s.dtype], tuple(s.shape))
        if got != want:
            raise ModelError("section %r is %s %r, expected %s %r"
                             % (name, got[0], got[1], want[0], want[1]))
        off[slot] = s.offset
        seen[slot] = 1
    for slot in range(len(off)):
        if not seen[slot]:
            if slot < ng:
                name = GLOBAL[slot]
            else:
                name = "blocks.%d.%s" % ((slot - ng) // nb, BLOCK[(slot - ng) % nb])
            raise ModelError("section %r is missing" % name)
    return off


# The scalar parameters, flat: QB ints per block, then pool (M, shift) and norm (shift, E).
QB = 23
#  0 norm1 shift, 1 norm1 E, 2-3 attention score (M, shift), 4-5 attention out (M, shift),
#  6-8 attention residual (Ma, Mb, shift), 9 norm2 shift, 10 norm2 E, 11 input shift P,
#  12-14 ffn residual (Ma, Mb, shift), 15-22 gate softmax (M, shift) for counts 1, 3, 4, 5


def quant(meta, c):
    """The scalar integer parameters as one flat list of ints (layout above)."""
    q = meta.get("quant")
    if not isinstance(q, dict) or not isinstance(q.get("blocks"), list):
        raise ModelError("model metadata lacks the quantisation parameters ('quant')")
    blocks = q["blocks"]
    if len(blocks) != c["depth"]:
        raise ModelError("quantisation parameters for %d blocks, the model has %d"
                         % (len(blocks), c["depth"]))
    out = []
    for i in range(len(blocks)):
        b = blocks[i]
        w = "quant.blocks[%d]." % i
        try:
            a, f = b["attn"], b["ffn"]
            n1, n2 = b["norm1"], b["norm2"]
            out.append(_int(n1["shift"], 1, 30, w + "norm1.shift"))
            out.append(_int(n1["eps"], 0, 1 << 40, w + "norm1.eps"))
            out.extend(_mult(a["score"], w + "attn.score"))
            out.extend(_mult(a["out"], w + "attn.out"))
            out.extend(_mult(a["residual"], w + "attn.residual", 3))
            out.append(_int(n2["shift"], 1, 30, w + "norm2.shift"))
            out.append(_int(n2["eps"], 0, 1 << 40, w + "norm2.eps"))
            out.append(_int(f["input_shift"], 0, 7, w + "ffn.input_shift"))
            out.extend(_mult(f["residual"], w + "ffn.residual", 3))
            for cnt in ("1", "3", "4", "5"):
                if cnt == "1" or c["smooth_routing"]:
                    out.extend(_mult(f["gates"][cnt], w + "ffn.gates." + cnt))
                else:
                    out.extend((0, 1))
        except (KeyError, TypeError) as e:
            raise ModelError("bad quantisation parameters of block %d (%r)" % (i, e))
    try:
        out.extend(_mult(q["pool"], "quant.pool"))
        out.append(_int(q["norm"]["shift"], 1, 30, "quant.norm.shift"))
        out.append(_int(q["norm"]["eps"], 0, 1 << 40, "quant.norm.eps"))
    except (KeyError, TypeError) as e:
        raise ModelError("bad quantisation parameters (%r)" % (e,))
    return out


class Loaded:
    pass


def load(source, verify=True):
    """Open and check a model: a path (the file stays open, returned as .file) or a
    bytes-like object (.mem, read in place). Raises ModelFormatError (the container) or
    ModelError (the integer model), both ValueError."""
    m = MF.Model(source, verify=verify)
    try:
        meta = m.metadata
        if meta.get("format") != FORMAT:
            raise ModelError("not an integer ButterflyViT model (metadata format %r, expected %r)"
                             % (meta.get("format"), FORMAT))
        if meta.get("int_version") != INT_VERSION:
            raise ModelError("integer model version %r is not supported (this code runs version %d)"
                             % (meta.get("int_version"), INT_VERSION))
        r = Loaded()
        r.cfg = c = config(meta)
        r.off = sections(m, c)
        r.quant = quant(meta, c)
        classes = meta.get("classes")
        if not isinstance(classes, list) or len(classes) != c["num_classes"]:
            raise ModelError("metadata 'classes' must list %d class names" % c["num_classes"])
        r.classes = [str(x) for x in classes]
        ls = meta.get("logit_scale", 1.0)
        r.logit_scale = float(ls) if isinstance(ls, (int, float)) and ls > 0 else 1.0
        r.file_size = m.file_size
    except BaseException:
        m.close()
        raise
    m.metadata = None
    r.file = m._file                            # keep the open file; the reader goes
    r.mem = m._mem
    m._file = None
    return r
