# The integer model's rules, written once: what a model file's metadata and sections must
# hold (docs/integer-model.md, "Load-time checks"). The tables below name every
# configuration key with its limits, every section with its dtype, its shape as a function
# of the configuration and the range of its values, and every scalar quantisation
# parameter with its range. The configuration is checked before anything loops over it.
# Also the board's slot numbers (bvit.model) and the RAM of its buffers (ram_needed, which
# the host's board tables use too).
#
# Pure Python for MicroPython and CPython alike (no numpy): the board's loader (bvit.loader,
# bvit.model) and the host (butterflyvit.intmodel, quantize, boards, which import it as
# bvit.schema) call these same functions, so the two accept exactly the same files and
# refuse the others with the same message. A refusal raises ModelError; each reader
# re-raises it as its ModelFormatError with the same text.
#
#     c, q, classes, logit_scale = check_metadata(meta)
#     check_sections(c, find)       # find(slot, name) -> (dtype, shape) or None if absent
#     check_values(c, values)       # values(slot, name, dtype, count, rule) -> True if bad
#
# The tables are text (on a board one string object each, gone when this module is
# unloaded; names in code would stay interned in its RAM), columns split on spaces.

FORMAT = "butterflyvit-integer"
INT_VERSION = 2      # 2: ternary matrices in whole rows (1 stored them as trit streams)


class ModelError(ValueError):
    """A valid container that is not an integer model these readers run."""


def _fail(what):
    raise ModelError("bad integer model: " + what)


def _what(v):
    """A JSON value for a message, spelled the same by CPython and MicroPython (no float
    digits, no container reprs: their formatting and dict order differ between the two)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if -10 ** 18 < v < 10 ** 18 else "a huge integer"
    if isinstance(v, float):
        return "a non-integer number"
    if isinstance(v, str):
        for ch in v:
            if not 31 < ord(ch) < 127 or ord(ch) == 39 or ord(ch) == 92:   # ' and \
                return "a string"
        return "'" + v + "'" if len(v) <= 40 else "a string"
    if v is None:
        return "null"
    return "an array" if isinstance(v, list) else "an object"


def _rows(text):
    return [line.split() for line in text.split("\n") if line]


# ------------------------------------------------------------------ value ranges
# A rule is (lo, hi) or (lo, hi, True): lo..hi, with True also 0 (a third column). mult:
# multipliers M (spec §2), 0 or in [2^14, 2^15), which the board's small-int
# requantisation (§2.3) assumes; shift: rounding shifts (§1); res_m: the residual
# multipliers Ma, Mb (§10.2); bias: int32 biases, |b| < 2^30 (§7); ln_g, ln_shift, ln_eps:
# LayerNorm G (|G| < 2^15), shift and eps term (§8.1); in_shift: the input shift (§14.4).

RULES = """
mult     16384       32767         0
shift    1           62
res_m    0           32767
bias     -1073741823 1073741823
ln_g     -32767      32767
ln_shift 1           30
ln_eps   0           1099511627775
in_shift 1           24
"""


def rules():
    """{name: rule} of RULES."""
    out = {}
    for r in _rows(RULES):
        out[r[0]] = (int(r[1]), int(r[2]), True) if len(r) > 3 and r[3].isdigit() else \
            (int(r[1]), int(r[2]))                  # (a third column: 0 is allowed too)
    return out


def outside(v, r):
    """True when some value of the sequence v breaks rule r (every reader's test)."""
    if not len(v):
        return False
    mn, mx = min(v), max(v)
    if mn >= r[0] and mx <= r[1]:
        return False
    if len(r) < 3 or mn < 0 or mx > r[1]:
        return True
    for x in v:                         # below lo: allowed only when 0
        if x < r[0] and x != 0:
            return True
    return False


def _int(v, r, what):
    if not isinstance(v, int) or isinstance(v, bool) or outside((v,), r):
        _fail(("%s must be 0 or an integer in %d..%d, got %s" if len(r) > 2 else
               "%s must be an integer in %d..%d, got %s") % (what, r[0], r[1], _what(v)))
    return v


# ------------------------------------------------------------------ configuration
# Every key of the configuration (host: ModelConfig), in order; integers with their
# limits: generous for a microcontroller but finite, they bound every loop over the
# configuration and keep every accumulator of the spec inside int32 (dim <= 1024: spec §8).
# Also (config()): in_channels 1 or 3, (image_size / patch_size)^2 <= MAX_TOKENS, heads
# divides dim, top_k <= num_experts, butterfly_stages <= log2 of the padded dim and
# ffn_dim; ffn "butterfly", router_noise a number (training only), smooth_routing a boolean.

CONFIG = """
image_size       1 1024
in_channels      1 3
patch_size       1 64
num_classes      1 4096
dim              2 1024
depth            1 64
heads            1 1024
ffn_dim          2 8192
ffn              - -
num_experts      1 1024
top_k            1 1024
butterfly_stages 1 14
router_noise     - -
smooth_routing   - -
"""
MAX_TOKENS = 4096


def pad(n):
    """n rounded up to a power of two."""
    p = 1
    while p < n:
        p <<= 1
    return p


def derive(c):
    """The configuration dict with the sizes every reader uses: grid, tokens, patch_dim."""
    c = dict(c)
    c["grid"] = c["image_size"] // c["patch_size"]
    c["tokens"] = c["grid"] * c["grid"]
    c["patch_dim"] = c["in_channels"] * c["patch_size"] * c["patch_size"]
    c["smooth_routing"] = bool(c.get("smooth_routing", False))
    return c


def config(meta):
    """The checked configuration of a model's metadata, derived sizes added."""
    d = meta.get("config")
    if not isinstance(d, dict):
        _fail("metadata 'config' must be an object")
    keys = []
    for key, lo, hi in [r[:3] for r in _rows(CONFIG)]:
        keys.append(key)
        if key not in d:
            _fail("config has no '%s'" % key)
        v = d[key]
        if lo != "-":
            ok = isinstance(v, int) and not isinstance(v, bool) and int(lo) <= v <= int(hi)
            want = "an integer in %s..%s" % (lo, hi)
        elif key == "ffn":
            if v != "butterfly":
                _fail("ffn %s (the integer model is ButterflyViT)" % _what(v))
            ok = True
        elif key == "smooth_routing":
            ok, want = isinstance(v, bool), "true or false"
        else:
            ok, want = isinstance(v, (int, float)) and not isinstance(v, bool), "a number"
        if not ok:
            _fail("config '%s' has the wrong type or value (%s), got %s" % (key, want, _what(v)))
    extra = sorted(k for k in d if k not in keys)
    if extra:
        _fail("config has an unknown key %s" % _what(extra[0]))
    c = derive(d)
    if c["in_channels"] == 2:
        _fail("config 'in_channels' must be 1 or 3, got 2")
    if c["image_size"] % c["patch_size"]:
        _fail("config: image_size %d is not a multiple of patch_size %d"
              % (c["image_size"], c["patch_size"]))
    if c["tokens"] > MAX_TOKENS:
        _fail("config: %d tokens (image_size / patch_size squared), at most %d"
              % (c["tokens"], MAX_TOKENS))
    if c["dim"] % c["heads"]:
        _fail("config: dim %d is not divisible by heads %d" % (c["dim"], c["heads"]))
    if c["top_k"] > c["num_experts"]:
        _fail("config: top_k %d is more than num_experts %d" % (c["top_k"], c["num_experts"]))
    most = min(pad(c["dim"]), pad(c["ffn_dim"]))
    if 1 << c["butterfly_stages"] > most:
        _fail("config: butterfly_stages %d is more than log2 of the padded dim / ffn_dim (%d)"
              % (c["butterfly_stages"], most))
    return c


# ------------------------------------------------------------------ sections
# name, dtype, shape (the symbols of sections()), values (a RULES name; - any value of the
# dtype). Slots: GLOBAL's row, then NGLOBAL + block * NBLOCK + BLOCK's row. input.a with
# input.b: 255|A| + |B| < 2^30 (check_values); embed.bias: the patch-embedding bias plus the
# position embedding, per token; BLOCK's names are prefixed blocks.<i>.; ffn.phi, ffn.theta:
# uint16 phases as int16 bit patterns; ffn.w_in, ffn.w_out: the (f, d) and (d, f) ternary
# matrices in spec §4 rows (each row starts on a byte: what the lookup-table kernel needs).

GLOBAL = """
input.a      int32 C    -
input.b      int32 C    -
input.shift  int32 C    in_shift
embed.weight int8  d,pd -
embed.bias   int32 n,d  bias
embed.mult   int16 d    mult
embed.shift  int8  d    shift
norm.g       int16 d    ln_g
norm.b       int32 d    bias
head.weight  int8  nc,d -
head.bias    int32 nc   bias
"""
BLOCK = """
norm1.g           int16 d         ln_g
norm1.b           int32 d         bias
attn.qkv.weight   int8  3d,d      -
attn.qkv.bias     int32 3d        bias
attn.qkv.mult     int16 3d        mult
attn.qkv.shift    int8  3d        shift
attn.proj.weight  int8  d,d       -
attn.proj.bias    int32 d         bias
attn.proj.mult    int16 d         mult
attn.proj.shift   int8  d         shift
norm2.g           int16 d         ln_g
norm2.b           int32 d         bias
ffn.router.weight int8  E,d       -
ffn.phi           int16 E,nl,dp/2 -
ffn.theta         int16 E,nl,fp/2 -
ffn.w_in          trit5 f,d       -
ffn.w_in.mult     int16 f         mult
ffn.w_in.shift    int8  f         shift
ffn.w_out         trit5 d,f       -
ffn.w_out.bias    int32 d         bias
ffn.w_out.mult    int16 d         mult
ffn.w_out.shift   int8  d         shift
"""


def names(text):
    return tuple(r[0] for r in _rows(text))


def sections(c):
    """(slot, name, dtype, shape, rule) of every section, in slot order."""
    d, f = c["dim"], c["ffn_dim"]
    v = dict(zip(("C", "d", "pd", "n", "nc", "3d", "E", "nl", "dp/2", "fp/2", "f"),
                    (c["in_channels"], d, c["patch_dim"], c["tokens"], c["num_classes"], 3 * d,
                     c["num_experts"], c["butterfly_stages"], pad(d) // 2, pad(f) // 2,
                     f)))                          # the shape symbols of the tables
    rs = rules()
    slot = 0
    for i in range(-1, c["depth"]):                # -1: the global sections
        for r in _rows(GLOBAL if i < 0 else BLOCK):
            yield (slot, r[0] if i < 0 else "blocks.%d.%s" % (i, r[0]), r[1],
                   tuple(v[s] for s in r[2].split(",")), rs.get(r[3]))
            slot += 1


def slot_count(c):
    return len(names(GLOBAL)) + c["depth"] * len(names(BLOCK))


def check_sections(c, find):
    """Every section there with its dtype and shape. find(slot, name) -> (dtype name, shape
    tuple) of the file's section, or None when it has none of that name."""
    for slot, name, dt, shape, r in sections(c):
        got = find(slot, name)
        if got is None:
            _fail("section '%s' is missing" % name)
        if got[0] != dt or tuple(got[1]) != shape:
            _fail("section '%s' is %s %r, expected %s %r" % (name, got[0], tuple(got[1]), dt, shape))


def check_values(c, values):
    """Every section's values in range, then the input parameters. values(slot, name,
    dtype, count, rule) -> True when some value breaks rule (outside() of the values);
    with rule None -> the values (small sections only)."""
    ab = []
    for slot, name, dt, shape, r in sections(c):
        count = 1
        for n in shape:
            count *= n
        if r is not None and values(slot, name, dt, count, r):
            _fail(("section '%s' holds values outside 0 and %d..%d" if len(r) > 2 else
                   "section '%s' holds values outside %d..%d") % (name, r[0], r[1]))
        if slot < 2:                                # input.a, input.b
            ab.append(values(slot, name, dt, count, None))
    for i in range(c["in_channels"]):
        if 255 * abs(ab[0][i]) + abs(ab[1][i]) >= 1 << 30:
            _fail("input.a / input.b are too large (255|A| + |B| must be < 2^30)")


# ------------------------------------------------------------------ scalar parameters
# metadata quant: {"blocks": [one per block], "pool": [M, shift], "norm": {"shift", "eps"}}.
# Each parameter by name: its place (the object keys of the name; i/n: item i of an array
# of n), its values (a RULES name; P: the input shift of spec §6.4 for the model's stages).
# quant() returns them as one flat list: QUANT_BLOCK for every block, then QUANT_TOP.
# attn.score: the softmax multiplier (spec §9.1); attn.out: the requantisation of the
# attention output (§12); *.residual (§10.2); ffn.gates.<n>: the gate softmax for sums of n
# patches (§11.3); pool: mean pooling (§13).

QUANT_BLOCK = """
norm1.shift         -   ln_shift
norm1.eps           -   ln_eps
attn.score.M        0/2 mult
attn.score.shift    1/2 shift
attn.out.M          0/2 mult
attn.out.shift      1/2 shift
attn.residual.Ma    0/3 res_m
attn.residual.Mb    1/3 res_m
attn.residual.shift 2/3 shift
norm2.shift         -   ln_shift
norm2.eps           -   ln_eps
ffn.input_shift     -   P
ffn.residual.Ma     0/3 res_m
ffn.residual.Mb     1/3 res_m
ffn.residual.shift  2/3 shift
ffn.gates.1.M       0/2 mult
ffn.gates.1.shift   1/2 shift
ffn.gates.3.M       0/2 mult
ffn.gates.3.shift   1/2 shift
ffn.gates.4.M       0/2 mult
ffn.gates.4.shift   1/2 shift
ffn.gates.5.M       0/2 mult
ffn.gates.5.shift   1/2 shift
"""
QUANT_TOP = """
pool.M     0/2 mult
pool.shift 1/2 shift
norm.shift -   ln_shift
norm.eps   -   ln_eps
"""


def _params(v, what, text, P, out):
    rs = rules()
    for name, place, r in [r[:3] for r in _rows(text)]:
        node = v
        keys = name.split(".")
        if place != "-":
            keys.pop()                  # the item's label (M, shift...), not a key
        at = what
        for k in keys:
            if not isinstance(node, dict):
                _fail("%s must be an object, got %s" % (at, _what(node)))
            if k not in node:
                _fail("%s has no '%s'" % (at, k))
            node = node[k]
            at += "." + k
        if place != "-":
            i, n = place.split("/")
            if not isinstance(node, list) or len(node) != int(n):
                _fail("%s must be an array of %s integers, got %s" % (at, n, _what(node)))
            node = node[int(i)]
        at = what + "." + name
        if r == "P":
            if node != P or not isinstance(node, int) or isinstance(node, bool):
                _fail("%s must be %d for the model's butterfly stages, got %s"
                      % (at, P, _what(node)))
            out.append(P)
        else:
            out.append(_int(node, rs[r], at))


def quant(meta, c):
    """The scalar parameters of metadata 'quant', checked: one flat list of ints."""
    q = meta.get("quant")
    if not isinstance(q, dict) or not isinstance(q.get("blocks"), list) or \
            len(q["blocks"]) != c["depth"]:
        _fail("metadata 'quant' must be an object whose 'blocks' lists %d blocks" % c["depth"])
    P = 7 - (c["butterfly_stages"] + 1) // 2      # spec §6.4: 7 - ceil(n_l / 2)
    out = []
    for i in range(c["depth"]):
        b = q["blocks"][i]
        _params(b, "quant.blocks[%d]" % i, QUANT_BLOCK, P, out)
        if len(b["ffn"]["gates"]) != 4:     # (its keys 1, 3, 4, 5 are there)
            _fail("quant.blocks[%d].ffn.gates must have the keys 1, 3, 4, 5 only" % i)
    _params(q, "quant", QUANT_TOP, P, out)
    return out


def check_metadata(meta):
    """The metadata's rules, in order: format, version, config, quant, classes,
    logit_scale. Returns (config, quant list, class names, logit_scale)."""
    if meta.get("format") != FORMAT:
        raise ModelError("not an integer ButterflyViT model (metadata format %s, expected '%s')"
                         % (_what(meta.get("format")), FORMAT))
    v = meta.get("int_version")
    if v == 1 and not isinstance(v, bool):
        raise ModelError("integer model version 1 (ternary matrices as trit streams) is no longer "
                         "read: pack the checkpoint again with this version (butterflyvit pack)")
    if v != INT_VERSION or not isinstance(v, int) or isinstance(v, bool):
        raise ModelError("integer model version %s is not supported (this code runs version %d)"
                         % (_what(v), INT_VERSION))
    c = config(meta)
    q = quant(meta, c)
    classes = meta.get("classes")
    if not isinstance(classes, list) or len(classes) != c["num_classes"] or \
            any(not isinstance(x, str) for x in classes):
        _fail("metadata 'classes' must list %d class names" % c["num_classes"])
    ls = meta.get("logit_scale", 1.0)          # the real value of one logit unit (reports)
    if not isinstance(ls, (int, float)) or isinstance(ls, bool) or not 1e-30 <= ls <= 1e30:
        _fail("metadata 'logit_scale' must be a number in 1e-30..1e30")
    return c, q, classes, float(ls)


# ------------------------------------------------------------------ the board's slots
# bvit.model reads sections by slot and parameters by index into quant()'s list (block i:
# QB * i + Q_..., the last ones QB * depth + Q_...); the numbers are bound here by name
# (code at the top level of a module stays in a board's RAM; this module does not).

BOARD = """
INA input.a       INB input.b       INS input.shift   EMW embed.weight  EMB embed.bias
EMM embed.mult    EMS embed.shift   NG norm.g         NB norm.b         HDW head.weight
HDB head.bias
N1G norm1.g       N1B norm1.b       QKVW attn.qkv.weight  QKVB attn.qkv.bias
QKVM attn.qkv.mult  QKVS attn.qkv.shift  PRW attn.proj.weight  PRB attn.proj.bias
PRM attn.proj.mult  PRS attn.proj.shift  N2G norm2.g  N2B norm2.b  RTW ffn.router.weight
PHI ffn.phi  THETA ffn.theta  WIN ffn.w_in  WINM ffn.w_in.mult  WINS ffn.w_in.shift
WOUT ffn.w_out  WOB ffn.w_out.bias  WOM ffn.w_out.mult  WOS ffn.w_out.shift
Q_N1S norm1.shift  Q_N1E norm1.eps  Q_SCM attn.score.M  Q_SCS attn.score.shift
Q_OUM attn.out.M  Q_OUS attn.out.shift  Q_R1A attn.residual.Ma  Q_R1B attn.residual.Mb
Q_R1S attn.residual.shift  Q_N2S norm2.shift  Q_N2E norm2.eps  Q_P ffn.input_shift
Q_R2A ffn.residual.Ma  Q_R2B ffn.residual.Mb  Q_R2S ffn.residual.shift
Q_POM pool.M  Q_POS pool.shift  Q_NS norm.shift  Q_NE norm.eps
"""


def board_slots():
    """(name, number) of bvit.model's slot and parameter-index constants, bound by name
    (a generator: no list of them in RAM). BOARD pairs each constant with its section
    (GLOBAL, BLOCK) or parameter (QUANT_BLOCK, QUANT_TOP); Q_GATES holds the (M, shift)
    indices of the gate parameters per count 1, 3, 4, 5."""
    tables = (names(GLOBAL), names(BLOCK), names(QUANT_BLOCK), names(QUANT_TOP))
    for line in BOARD.split("\n"):              # a line at a time: small lists only
        w = line.split()
        for i in range(0, len(w), 2):
            for t in tables:
                if w[i + 1] in t:
                    yield w[i], t.index(w[i + 1])
                    break
            else:                               # (a name the tables do not have: a bug)
                raise KeyError(w[i + 1])
    q = tables[2]
    yield "Q_GATES", tuple((q.index("ffn.gates.%s.M" % n), q.index("ffn.gates.%s.shift" % n))
                           for n in "1345")
    yield "NGLOBAL", len(tables[0])
    yield "NBLOCK", len(tables[1])
    yield "QB", len(q)


# ------------------------------------------------------------------ RAM on the board

def ram_needed(c, weight_buffer=4096, layers=False):
    """Bytes of the buffers bvit.model.Classifier allocates for configuration c (config():
    with grid, tokens and patch_dim); the host's board tables (butterflyvit.boards) too.
    layers: the native module's whole-layer path (weights in place), else the row path."""
    if layers:
        return ram_layers(c)
    d, f, E, k, nl = c["dim"], c["ffn_dim"], c["num_experts"], c["top_k"], c["butterfly_stages"]
    n, g, C, S, pd = c["tokens"], c["grid"], c["in_channels"], c["image_size"], c["patch_dim"]
    dp, fp = pad(d), pad(f)
    rows = max(3 * d, f, E, c["num_classes"])
    b = C * S * S + n * pd + 256 * C              # pixels, patch tokens, input tables
    b += 2 * n * d + n * d + 2 * n * d + d        # residual (int16), LN / attention out, kv + q
    b += 4 * (3 if c["smooth_routing"] else 1) * g * E + 6 * n * k   # router logits, routes
    b += 2 * dp + 2 * fp + 6 * f + 2 * d          # u, h, mix (int32), m, y
    b += 4 * rows + 4 * max(n, E) + 4 * d + 4 * k  # accumulators and scratch
    b += 7 * rows + 7 * d + 6 * d                 # (mult, shift, bias) x 2, LayerNorm g, b
    b += weight_bytes(c, weight_buffer)           # weights read from a file
    b += nl * max(dp, fp)                         # phases read from a file
    b += max(2 * n * d + d, 4 * (3 if c["smooth_routing"] else 1) * g * E,
             weight_bytes(c, weight_buffer))      # the zero initialiser, while allocating
    return b


# The native whole-layer path (bvitnative.ffn and friends, weights read in place): its one
# int32 scratch buffer, sized as the module's ffn_work_size() with one rotation-table slot
# per chosen expert. LUT_ENTRIES: the module's lookup tables (256 x 13 int32).
LUT_ENTRIES = 3328


def layer_work(c):
    """int32 elements of the scratch buffer of the native layer functions."""
    d, f, E, k, nl = c["dim"], c["ffn_dim"], c["num_experts"], c["top_k"], c["butterfly_stages"]
    n, g = c["tokens"], c["grid"]
    dp, fp = pad(d), pad(f)
    ffn = LUT_ENTRIES + dp + fp + d + (k * f + f + d + n + 1) // 2 + k * (nl * (dp + fp) + 2)
    rows = max(3 * d, c["num_classes"])
    return max(ffn, (3 if c["smooth_routing"] else 1) * g * E + E, rows + (rows + 1) // 2,
               n + (n + 1) // 2, d)


def ram_layers(c):
    """Bytes of the buffers of the whole-layer path (bvit.model, ram_needed(layers=True))."""
    d, f, E, k = c["dim"], c["ffn_dim"], c["num_experts"], c["top_k"]
    n, C, S, pd = c["tokens"], c["in_channels"], c["image_size"], c["patch_dim"]
    rows = max(3 * d, f, E, c["num_classes"])
    b = C * S * S + n * pd + 256 * C              # pixels, patch tokens, input tables
    b += 2 * n * d + n * d + 3 * n * d            # residual (int16), LN / attention out, qkv
    b += 6 * n * k + 4 * layer_work(c)            # routes, scratch
    b += 7 * rows + 7 * d + 6 * d + 2 * d         # (mult, shift, bias) x 2, LayerNorm g, b, pool
    b += 3 * n * d                                # the zero initialiser, while allocating
    #                                               (the scratch is a bytearray: zeroed as made)
    return b


def weight_bytes(c, weight_buffer):
    """Bytes of the one weight buffer: int8 matrices and ternary rows read from a file.
    At most weight_buffer, at least one row of any matrix; no more than the largest need
    (the int8 matrices, or w_in and w_out together so that both stay for a whole layer)."""
    d, f = c["dim"], c["ffn_dim"]
    most = max(3 * d * d, c["num_experts"] * d, d * c["patch_dim"], c["num_classes"] * d,
               ternary_bytes(c))
    return max(min(weight_buffer, most), d, c["patch_dim"], (max(d, f) + 4) // 5)


def ternary_bytes(c):
    """Bytes of one layer's w_in and w_out (spec §4 rows of ceil(n/5) bytes)."""
    d, f = c["dim"], c["ffn_dim"]
    return f * ((d + 4) // 5) + d * ((f + 4) // 5)


def requirements(source, weight_buffer=4096):
    """(bytes of buffers, bytes of JSON metadata) of a model file (a path or its bytes),
    from its header and configuration only: no checks, little memory (a board's message
    after running out of memory). Only the "config" object of the metadata is parsed (it
    holds no nested object)."""
    import json
    import struct
    if isinstance(source, str):
        with open(source, "rb") as f:
            mo, ms = struct.unpack_from("<II", f.read(36), 28)
            f.seek(mo)
            text = f.read(ms)
    else:
        mo, ms = struct.unpack_from("<II", source, 28)
        text = bytes(source[mo:mo + ms])
    i = text.find(b"{", text.find(b'"config"'))
    return ram_needed(derive(json.loads(text[i:text.find(b"}", i) + 1])), weight_buffer), ms
