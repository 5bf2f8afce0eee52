"""Float ButterflyViT checkpoint -> integer model (named integer arrays + JSON metadata).

The integer model is described in docs/integer-model.md (data flow, every section, every
metadata key); the arithmetic of each op in docs/integer-spec.md. This module is the host
side: it turns float parameters and calibrated activation ranges into the integers the
model file stores. Nothing here runs on a board.

Three steps, each usable alone:

1. `float_params(model)`: the float model's parameters as numpy float64 arrays, with the
   ternary matrices already split by the model's own quantiser into trits (int8) and row
   scales gamma (so the integer model uses exactly the trits the float model computes with).
2. `calibrate(model, images)`: the largest |value| at every activation site of the float
   model over a calibration batch (the "ranges"), computed in float64.
3. `build_integer_model(cfg, params, ranges, mean, std, classes)`: pure numpy, no torch:
   scales from ranges (rule below), then every integer parameter (spec §2.2, §7, §8.1,
   §10.2, §11.3, §14.4). Deterministic for given inputs, which is what the pinned tests
   rely on (they build `params` and `ranges` from a numpy RNG).

Packing is reproducible to the byte on any machine: the ternary row scales are summed in
order-independent fixed point (ternary.absmean_scale), the calibration runs in float64 and
each range is rounded to 10 significant bits (`round_range`) before any scale is formed;
everything after that is elementwise IEEE arithmetic, identical on every CPU.

Scale rule (per tensor, from the calibration maximum r of the site, after round_range):
- int8 sites (LayerNorm outputs, q, k, v, attention output): s = r / 127 (max-abs);
- int16 sites (residual stream, branch outputs, pooled vector): s = 2 r / 32767, i.e. one
  bit of headroom for images brighter or stranger than the calibration set;
- the expert hidden vector (int16, before the output-side butterfly): s = r / (2^14 /
  2^(n_l/2)), so the rotation cannot leave int16 (spec §6.4, §15 step 4);
- the input: exact, from the pixel range: s = max_c max(|0 - mean_c|, |1 - mean_c|) / std_c / 127.
Weights: int8 per output channel (patch embedding, qkv, proj), int8 per tensor where the
int32 accumulators are compared across rows (router, head); trits + per-row (M, shift)
for the substrate and the shared output projection.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from . import __version__, intops
from .config import ModelConfig
from .modelfile import Trits
from bvit.schema import FORMAT as INT_FORMAT, INT_VERSION  # one place for host and board

LN_EPS = 1e-5
HEADROOM16 = 2.0          # int16 sites: calibrated maximum at half the range
MAX_BIAS = 1 << 30        # |int32 bias| bound the packer guarantees (spec §7)


class QuantizeError(ValueError):
    """The checkpoint cannot be turned into an integer model (wrong kind, out of range)."""


# ------------------------------------------------------------------------- float side (torch)

def check_butterfly(cfg: ModelConfig) -> None:
    if cfg.ffn != "butterfly":
        raise QuantizeError(
            f"the integer model and its file format are for ButterflyViT (ffn='butterfly'); "
            f"this checkpoint is a {cfg.ffn!r} model (a baseline), which is not packed")


def float_params(model) -> dict:
    """name -> numpy array of the float model's parameters (float64, trits int8).

    Ternary layers are exported as `<layer>.trits` (int8 {-1,0,1}, the model's own
    TernaryLinear.trits()) and `<layer>.gamma` (float64 row scales, TernaryLinear.scales()).
    Butterfly angles are masked (padded pairs exactly 0) as the model uses them."""
    import torch  # noqa: F401  (the model is a torch module)

    cfg = model.cfg
    check_butterfly(cfg)

    def f64(t):
        return t.detach().cpu().double().numpy().copy()

    p = {"patch_embed.weight": f64(model.patch_embed.weight),
         "patch_embed.bias": f64(model.patch_embed.bias),
         "pos_embed": f64(model.pos_embed)}
    for i, blk in enumerate(model.blocks):
        b = f"blocks.{i}."
        for ln in ("norm1", "norm2"):
            mod = getattr(blk, ln)
            if abs(mod.eps - LN_EPS) > 1e-12:
                raise QuantizeError(f"{b}{ln}: LayerNorm eps {mod.eps} (the integer model assumes {LN_EPS})")
            p[b + ln + ".weight"] = f64(mod.weight)
            p[b + ln + ".bias"] = f64(mod.bias)
        for lin in ("qkv", "proj"):
            mod = getattr(blk.attn, lin)
            p[b + f"attn.{lin}.weight"] = f64(mod.weight)
            p[b + f"attn.{lin}.bias"] = f64(mod.bias)
        ffn = blk.ffn
        p[b + "ffn.router.weight"] = f64(ffn.router.weight)
        p[b + "ffn.phi"] = f64(ffn.phi * ffn.phi_mask)
        p[b + "ffn.theta"] = f64(ffn.theta * ffn.theta_mask)
        for lin in ("w_in", "w_out"):
            mod = getattr(ffn, lin)
            p[b + f"ffn.{lin}.trits"] = mod.trits().cpu().numpy().astype(np.int8)
            p[b + f"ffn.{lin}.gamma"] = f64(mod.scales())
        p[b + "ffn.w_out.bias"] = f64(ffn.w_out.bias)
    p["norm.weight"] = f64(model.norm.weight)
    p["norm.bias"] = f64(model.norm.bias)
    p["head.weight"] = f64(model.head.weight)
    p["head.bias"] = f64(model.head.bias)
    return p


def float_trace(model, x):
    """The float forward of `vit.ViT` written out step by step (the experts in the factored
    order the integer model uses), returning (logits, {site: tensor}). x: normalised
    float images (B, C, H, W). Sites are those of `site_names`."""
    import torch
    from torch.nn import functional as F

    from .butterfly import butterfly
    from .vit import patchify

    cfg = model.cfg
    t = {}
    with torch.no_grad():
        h = model.patch_embed(patchify(x, cfg.patch_size)) + model.pos_embed
        t["embed"] = h
        for i, blk in enumerate(model.blocks):
            b = f"blocks.{i}."
            a = blk.norm1(h)
            t[b + "ln1"] = a
            bsz, n, d = a.shape
            hd = d // cfg.heads
            qkv = blk.attn.qkv(a)
            q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
            t[b + "q"], t[b + "k"], t[b + "v"] = q, k, v

            def heads(z):
                return z.reshape(bsz, n, cfg.heads, hd).transpose(1, 2)

            o = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
            o = o.transpose(1, 2).reshape(bsz, n, d)
            t[b + "attn"] = o
            pr = blk.attn.proj(o)
            t[b + "proj"] = pr
            h = h + pr
            t[b + "res1"] = h
            a = blk.norm2(h)
            t[b + "ln2"] = a
            ffn = blk.ffn
            gates, idx, _ = ffn.router(a)
            kk = cfg.top_k
            rows = a.reshape(bsz * n, 1, d).expand(bsz * n, kk, d).reshape(-1, d)
            flat = idx.reshape(-1)
            cp, sp, ct, st = ffn._angles()
            hid = F.linear(butterfly(rows, cp[flat], sp[flat]), ffn.w_in.quantized_weight())
            t[b + "hidden"] = hid
            hid = F.relu(butterfly(hid, ct[flat], st[flat]))
            mix = (hid.reshape(bsz * n, kk, -1) * gates.reshape(bsz * n, kk, 1)).sum(1)
            y = ffn.w_out(mix).reshape(bsz, n, d)
            t[b + "ffn"] = y
            h = h + y
            t[b + "res2"] = h
        pooled = h.mean(dim=1)
        t["pool"] = pooled
        z = model.norm(pooled)
        t["norm"] = z
        logits = model.head(z)
    return logits, t


def site_names(cfg: ModelConfig) -> list:
    names = ["embed"]
    for i in range(cfg.depth):
        names += [f"blocks.{i}.{s}" for s in
                  ("ln1", "q", "k", "v", "attn", "proj", "res1", "ln2", "hidden", "ffn", "res2")]
    return names + ["pool", "norm"]


def calibrate(model, images, batch_size: int = 128) -> dict:
    """{site: max |value|} of the float model over `images` (normalised float, B x C x H x W).

    Runs a float64 copy of the model (the model itself is left as it is). Also checks that
    the step-by-step forward gives the model's own logits, so a change in the float model
    cannot silently desynchronise the quantiser from it."""
    import torch

    check_butterfly(model.cfg)
    # float64 throughout: a float32 forward's last bits depend on the BLAS kernel, SIMD
    # width and thread count, and site_scales' rounding absorbs float64's far smaller noise.
    model = copy.deepcopy(model).double().eval()
    images = images.double()
    ranges = {}
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        logits, t = float_trace(model, x)
        with torch.no_grad():
            ref = model(x)
        err = (logits - ref).abs().max().item()
        if err > 1e-3 * max(1.0, ref.abs().max().item()):
            raise RuntimeError(f"quantize.float_trace disagrees with the model's forward by {err}: "
                               "the float model changed; update float_trace")
        for name, v in t.items():
            ranges[name] = max(ranges.get(name, 0.0), float(v.abs().max()))
    return ranges


# ------------------------------------------------------------------------- integer side (numpy)

RANGE_BITS = 10           # significant bits a calibrated range keeps (see round_range)


def round_range(r: float) -> float:
    """r rounded to the nearest value with RANGE_BITS significant bits (within 0.1%).

    Every integer of the model derives from these ranges, and the float forward that
    measures them can differ in its last bits between CPUs, BLAS kernels and thread counts.
    Rounding to 10 bits makes the packed file identical on every machine unless a float64
    error of ~1e-15 straddles a rounding midpoint, which is vanishingly rare. (Nearest, not
    up: round numbers such as 4.0 sit on the grid, where rounding up would break on 1 ulp.)"""
    r = max(float(r), 1e-6)
    m, e = math.frexp(r)                          # r = m * 2^e, m in [0.5, 1)
    return math.ldexp(math.floor(m * (1 << RANGE_BITS) + 0.5), e - RANGE_BITS)


def _scale8(r: float) -> float:
    return max(r, 1e-6) / 127.0


def _scale16(r: float) -> float:
    return max(r, 1e-6) * HEADROOM16 / 32767.0


def site_scales(cfg: ModelConfig, ranges: dict, mean, std) -> dict:
    """{site: real value of one integer unit} from calibrated ranges (rule in the module doc)."""
    mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    std = np.atleast_1d(np.asarray(std, dtype=np.float64))
    if mean.shape != (cfg.in_channels,) or std.shape != (cfg.in_channels,):
        raise QuantizeError(f"normalisation has {mean.size} mean / {std.size} std values for a "
                            f"{cfg.in_channels}-channel model")
    s = {"input": float((np.maximum(np.abs(mean), np.abs(1.0 - mean)) / std).max() / 127.0)}
    missing = [n for n in site_names(cfg) if n not in ranges]
    if missing:
        raise QuantizeError(f"calibration ranges missing for {missing[:3]}...")
    hidden_max = 2.0 ** 14 / 2.0 ** (cfg.butterfly_stages / 2.0)
    for name in site_names(cfg):
        leaf = name.rsplit(".", 1)[-1]
        r = round_range(ranges[name])
        if leaf in ("ln1", "ln2", "q", "k", "v", "attn", "norm"):
            s[name] = _scale8(r)
        elif leaf == "hidden":
            s[name] = max(r, 1e-6) / hidden_max
        else:  # embed, proj, res1, ffn, res2, pool
            s[name] = _scale16(r)
    return s


def _mult_arrays(scales):
    M, sh = intops.quantize_multipliers(scales)
    return M.astype(np.int16), sh.astype(np.int8)


def _bias32(bias, denom, what):
    b = intops.hround(np.asarray(bias, dtype=np.float64) / denom)
    if b.size and np.abs(b).max() >= MAX_BIAS:
        raise QuantizeError(f"{what}: bias {np.abs(b).max()} does not fit (|b| < 2^30); "
                            "the input or weight scale is too small")
    return b.astype(np.int32)


def _per_tensor_weights(w):
    w = np.asarray(w, dtype=np.float64)
    amax = float(np.abs(w).max())
    s = amax / 127.0 if amax > 0 else 1.0
    return np.clip(intops.hround(w / s), -127, 127).astype(np.int8), s


def _ln(arrays, meta, name, gamma, beta, s_in, s_out):
    p = intops.layernorm_params(gamma, beta, LN_EPS, s_in, s_out)
    arrays[name + ".g"] = p.G.astype(np.int16)
    arrays[name + ".b"] = p.B.astype(np.int32)
    meta[name.rsplit(".", 1)[-1]] = {"shift": int(p.shift), "eps": int(p.E)}


def _linear8(arrays, name, w, bias, s_x, s_y):
    """int8 per-channel linear: weight, int32 bias, per-row (mult, shift) to s_y."""
    wq, sw = intops.quantize_weights(w)
    arrays[name + ".weight"] = wq
    arrays[name + ".bias"] = _bias32(bias, s_x * sw, name)
    arrays[name + ".mult"], arrays[name + ".shift"] = _mult_arrays(s_x * sw / s_y)


def _pair(mult):
    return [int(mult[0]), int(mult[1])]


def build_integer_model(cfg: ModelConfig, params: dict, ranges: dict, mean, std,
                        classes=None, extra_metadata: dict | None = None):
    """(arrays, metadata) of the integer model, docs/integer-model.md. Pure numpy."""
    check_butterfly(cfg)
    s = site_scales(cfg, ranges, mean, std)
    d, f, n_l, E = cfg.dim, cfg.ffn_dim, cfg.butterfly_stages, cfg.num_experts
    n_tok = cfg.num_patches
    arrays = {}
    quant = {"blocks": []}

    # input normalisation (spec §14.4)
    A, B, sh = intops.input_quant_params(mean, std, s["input"])
    arrays["input.a"], arrays["input.b"], arrays["input.shift"] = A, B, sh

    # patch embedding + position embedding folded into a per-token bias (spec §7, §15.1)
    wq, sw = intops.quantize_weights(params["patch_embed.weight"])
    arrays["embed.weight"] = wq
    bias = params["patch_embed.bias"][None, :] + params["pos_embed"]
    arrays["embed.bias"] = _bias32(bias, s["input"] * sw[None, :], "embed")
    arrays["embed.mult"], arrays["embed.shift"] = _mult_arrays(s["input"] * sw / s["embed"])

    s_res = s["embed"]
    P = intops.butterfly_input_shift(n_l)
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        g = lambda n: params[b + n]  # noqa: E731
        qb = {}
        # attention
        _ln(arrays, qb, b + "norm1", g("norm1.weight"), g("norm1.bias"), s_res, s[b + "ln1"])
        s_qkv = np.concatenate([np.full(d, s[b + "q"]), np.full(d, s[b + "k"]), np.full(d, s[b + "v"])])
        _linear8(arrays, b + "attn.qkv", g("attn.qkv.weight"), g("attn.qkv.bias"), s[b + "ln1"], s_qkv)
        hd = d // cfg.heads
        qb["attn"] = {
            "score": _pair(intops.softmax_multiplier(s[b + "q"] * s[b + "k"] / math.sqrt(hd))),
            "out": _pair(intops.quantize_multiplier(s[b + "v"] * 2.0 ** -15 / s[b + "attn"])),
        }
        _linear8(arrays, b + "attn.proj", g("attn.proj.weight"), g("attn.proj.bias"),
                 s[b + "attn"], s[b + "proj"])
        qb["attn"]["residual"] = list(intops.residual_params(s_res, s[b + "proj"], s[b + "res1"]))
        s_res = s[b + "res1"]

        # butterfly MoE feed-forward
        _ln(arrays, qb, b + "norm2", g("norm2.weight"), g("norm2.bias"), s_res, s[b + "ln2"])
        rq, sr = _per_tensor_weights(g("ffn.router.weight"))
        arrays[b + "ffn.router.weight"] = rq
        logit_scale = s[b + "ln2"] * sr
        gates = intops.gate_multipliers(logit_scale)
        arrays[b + "ffn.phi"] = intops.angles_to_phase(g("ffn.phi")).view(np.int16)
        arrays[b + "ffn.theta"] = intops.angles_to_phase(g("ffn.theta")).view(np.int16)
        arrays[b + "ffn.w_in"] = Trits(g("ffn.w_in.trits"))
        s_u = s[b + "ln2"] * 2.0 ** -P
        arrays[b + "ffn.w_in.mult"], arrays[b + "ffn.w_in.shift"] = _mult_arrays(
            s_u * g("ffn.w_in.gamma") / s[b + "hidden"])
        arrays[b + "ffn.w_out"] = Trits(g("ffn.w_out.trits"))
        go = g("ffn.w_out.gamma")
        arrays[b + "ffn.w_out.bias"] = _bias32(g("ffn.w_out.bias"), s[b + "hidden"] * go, b + "ffn.w_out")
        arrays[b + "ffn.w_out.mult"], arrays[b + "ffn.w_out.shift"] = _mult_arrays(
            s[b + "hidden"] * go / s[b + "ffn"])
        qb["ffn"] = {
            "input_shift": P,
            "gates": {str(c): _pair(m) for c, m in gates.items()},
            "residual": list(intops.residual_params(s_res, s[b + "ffn"], s[b + "res2"])),
        }
        s_res = s[b + "res2"]
        quant["blocks"].append(qb)

    quant["pool"] = _pair(intops.quantize_multiplier(s_res / (n_tok * s["pool"])))
    _ln(arrays, quant, "norm", params["norm.weight"], params["norm.bias"], s["pool"], s["norm"])
    hq, shead = _per_tensor_weights(params["head.weight"])
    arrays["head.weight"] = hq
    arrays["head.bias"] = _bias32(params["head.bias"], s["norm"] * shead, "head")

    shapes_ok(cfg, arrays)
    metadata = {
        "format": INT_FORMAT,
        "int_version": INT_VERSION,
        "config": cfg.to_dict(),
        "classes": list(classes) if classes is not None else [str(c) for c in range(cfg.num_classes)],
        "normalize": {"mean": [float(m) for m in np.atleast_1d(mean)],
                      "std": [float(v) for v in np.atleast_1d(std)]},
        "quant": quant,
        "logit_scale": s["norm"] * shead,
        "scales": {k: float(v) for k, v in s.items()},
        "packer": f"butterflyvit {__version__}",
    }
    if extra_metadata:
        metadata.update(extra_metadata)
    return arrays, metadata


def expected_shapes(cfg: ModelConfig) -> dict:
    """name -> (dtype, shape) of every section of the integer model: bvit.schema's tables
    (docs/integer-model.md), the rules every reader applies."""
    from bvit import schema

    return {name: (dtype, shape)
            for _, name, dtype, shape, _ in schema.sections(schema.derive(cfg.to_dict()))}


def shapes_ok(cfg: ModelConfig, arrays: dict) -> None:
    want = expected_shapes(cfg)
    if set(want) != set(arrays):
        raise AssertionError(f"sections differ: extra {sorted(set(arrays) - set(want))}, "
                             f"missing {sorted(set(want) - set(arrays))}")
    for name, (dtype, shape) in want.items():
        a = arrays[name]
        got = ("trit5", a.shape) if isinstance(a, Trits) else (
            {("i", 1): "int8", ("i", 2): "int16", ("i", 4): "int32"}.get((a.dtype.kind, a.dtype.itemsize)), a.shape)
        if got != (dtype, tuple(shape)):
            raise AssertionError(f"section {name}: {got}, expected {(dtype, shape)}")


# ------------------------------------------------------------------------- checkpoint -> model

def calibration_images(ds, n: int, seed: int = 0):
    """n training images of `ds` (uint8 tensor), a fixed-seed random subset."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = min(n, len(ds.train))
    idx = torch.randperm(len(ds.train), generator=g)[:n]
    return ds.train.images[idx]


def quantize_model(model, calib_uint8, mean, std, classes=None, extra_metadata=None):
    """A float ViT (eval mode) + uint8 calibration images -> (arrays, metadata)."""
    from .data import normalize

    check_butterfly(model.cfg)
    if len(calib_uint8) < 1:
        raise QuantizeError("calibration needs at least one image")
    x = normalize(calib_uint8, mean, std)
    ranges = calibrate(model, x)
    meta = dict(extra_metadata or {})
    meta.setdefault("calibration", {})
    meta["calibration"].update({"images": int(len(calib_uint8)), "rule": "max-abs per tensor site"})
    return build_integer_model(model.cfg, float_params(model), ranges, mean, std, classes, meta)
