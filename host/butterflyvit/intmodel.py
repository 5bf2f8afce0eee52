"""The integer model's forward pass in numpy: the golden implementation.

A camera frame (GRAYSCALE or RGB565, any size) or a uint8 image goes in, int32 logits
come out, through nothing but the ops of `intops` (docs/integer-spec.md) with the integer
parameters read from a model file (docs/model-format.md). The data flow and every section
are in docs/integer-model.md; the board's code (device/bvit/) and the C kernels must
reproduce these integers exactly.

    m = IntModel.load("models/pico-fmnist.bvit")
    r = m.forward_frame(buf, 160, 120, "RGB565", trace=True)
    r.logits          # int32 (num_classes,)
    r.routes          # per MoE layer: (experts (N, k) int64, gates (N, k) Q15 uint16)
    r.trace           # per step: the integer tensor (when trace=True)

The forward is written as the board runs it: a sequence of whole-layer ops on an (N, dim)
activation (N = 49 tokens for the pico model), and per (token, selected expert) rows for
the butterfly experts. numpy vectorises over rows; nothing depends on doing so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from bvit import schema

from . import intops
from .config import ModelConfig
from .modelfile import Model, ModelFormatError, decode_model, encode_model, read_model

FRAME_EXT = {".gray": "GRAYSCALE", ".grey": "GRAYSCALE", ".rgb565": "RGB565"}


@dataclass
class Result:
    logits: np.ndarray                      # int32 (num_classes,)
    routes: list                            # per layer: (idx (N, k) int64, gates (N, k) uint16)
    trace: dict = field(default_factory=dict)

    def top(self, k: int = 5) -> list:
        """[(class index, logit)] of the k largest logits, ties to the lower index."""
        idx = intops.topk(self.logits, min(k, self.logits.size))
        return [(int(i), int(self.logits[i])) for i in idx]


class IntModel:
    """An integer ButterflyViT read from a validated model file."""

    def __init__(self, model: Model):
        """Checks the model by bvit.schema's rules (the board's loader applies the same):
        metadata, sections, every value in range; ModelFormatError when one fails."""
        meta = model.metadata
        try:
            c, _, self.classes, self.logit_scale = schema.check_metadata(meta)
            schema.check_sections(c, lambda slot, name: (model.info(name).dtype,
                                                         model.info(name).shape)
                                  if name in model else None)
            # Arrays, read once. Ternary matrices stay packed (5 trits per byte).
            self.w = {name: model.packed(name) if dtype == "trit5" else model[name]
                      for _, name, dtype, _, _ in schema.sections(c)}
            schema.check_values(c, lambda slot, name, dtype, count, rule: (
                schema.outside(self.w[name].ravel().tolist(), rule) if rule is not None
                else self.w[name].ravel().tolist()))
        except schema.ModelError as exc:
            raise ModelFormatError(str(exc)) from None
        self.cfg = ModelConfig.from_dict(meta["config"])
        self.file = model
        self.meta = meta
        self.quant = meta["quant"]
        c = self.cfg
        # Butterfly phases (stored as int16 bit patterns of uint16) -> Q14 cos/sin, per layer.
        self.rot = {}
        for i in range(c.depth):
            for side in ("phi", "theta"):
                ph = self.w[f"blocks.{i}.ffn.{side}"].view(np.uint16)
                self.rot[(i, side)] = intops.sincos_q14(ph)

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, path) -> "IntModel":
        return cls(read_model(path))

    @classmethod
    def from_arrays(cls, arrays: dict, metadata: dict) -> "IntModel":
        """From the packer's output in memory (through the same encoder and reader)."""
        return cls(decode_model(encode_model(arrays, metadata)))

    # ------------------------------------------------------------------ inputs (spec §14)

    def frame_to_tokens(self, buf, width: int, height: int, fmt: str) -> np.ndarray:
        c = self.cfg
        return intops.preprocess_frame(buf, width, height, fmt, c.image_size, c.in_channels,
                                       c.patch_size, self.w["input.a"], self.w["input.b"],
                                       self.w["input.shift"])

    def pixels_to_tokens(self, pixels) -> np.ndarray:
        """uint8 (C, S, S) image at the model's size -> int8 patch vectors (§14.4, §14.5)."""
        c = self.cfg
        pix = np.asarray(pixels)
        if pix.shape != (c.in_channels, c.image_size, c.image_size):
            raise ValueError(f"image of shape {pix.shape}, the model takes "
                             f"{(c.in_channels, c.image_size, c.image_size)}")
        q = intops.quantize_pixels(pix, self.w["input.a"], self.w["input.b"], self.w["input.shift"])
        return intops.patchify(q, c.patch_size)

    def forward_frame(self, buf, width: int, height: int, fmt: str, trace: bool = False) -> Result:
        return self.forward_tokens(self.frame_to_tokens(buf, width, height, fmt), trace)

    def forward_pixels(self, pixels, trace: bool = False) -> Result:
        return self.forward_tokens(self.pixels_to_tokens(pixels), trace)

    # ------------------------------------------------------------------ the forward (§15)

    def _ln(self, x, name, q):
        p = intops.LayerNormParams(self.w[name + ".g"], self.w[name + ".b"], q["shift"], q["eps"])
        return intops.layernorm(x, p, bits=8)

    def _linear(self, x, name, bits):
        w = self.w
        return intops.linear(x, w[name + ".weight"], w[name + ".bias"], w[name + ".mult"],
                             w[name + ".shift"], bits=bits)

    def forward_tokens(self, tokens, trace: bool = False) -> Result:
        """int8 patch vectors (N, C*p*p) -> Result. Every step is one intops call."""
        c, w, qm = self.cfg, self.w, self.quant
        d, f, k = c.dim, c.ffn_dim, c.top_k
        tr = {}
        rec = (lambda name, v: tr.__setitem__(name, v)) if trace else (lambda name, v: None)
        rec("tokens", tokens)

        # 1. patch embedding + position (per-token int32 bias) -> residual stream, int16
        x = self._linear(tokens, "embed", bits=16)
        rec("embed", x)
        routes = []
        n = x.shape[0]
        for i in range(c.depth):
            b = f"blocks.{i}."
            q = qm["blocks"][i]
            # 2. attention
            a = self._ln(x, b + "norm1", q["norm1"])
            rec(b + "ln1", a)
            qkv = self._linear(a, b + "attn.qkv", bits=8)
            rec(b + "qkv", qkv)
            o = intops.attention(qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:], c.heads,
                                 tuple(q["attn"]["score"]), tuple(q["attn"]["out"]))
            rec(b + "attn", o)
            p = self._linear(o, b + "attn.proj", bits=16)
            rec(b + "proj", p)
            x = intops.residual_add(x, p, *q["attn"]["residual"], bits=16)
            rec(b + "res1", x)
            # 3. routing
            a = self._ln(x, b + "norm2", q["norm2"])
            rec(b + "ln2", a)
            logits = intops.linear_acc(a, w[b + "ffn.router.weight"])
            rec(b + "router", logits)
            gm = {int(cnt): tuple(m) for cnt, m in q["ffn"]["gates"].items()}
            idx, gates = intops.route(logits, k, gm, c.smooth_routing, c.grid)
            routes.append((idx, gates))
            # 4. butterfly experts, one row per (token, selected expert)
            e = idx.reshape(-1)                                  # (n*k,)
            P = q["ffn"]["input_shift"]
            u = (np.repeat(a, k, axis=0).astype(np.int16) * np.int16(1 << P))
            cp, sp = self.rot[(i, "phi")]
            u = intops.butterfly_q14(u, cp[e], sp[e])
            h = intops.ternary_linear(w[b + "ffn.w_in"], f, d, u, w[b + "ffn.w_in.mult"],
                                      w[b + "ffn.w_in.shift"], bits=16)
            ct, st = self.rot[(i, "theta")]
            h = intops.relu(intops.butterfly_q14(h, ct[e], st[e]))
            rec(b + "hidden", h)
            # mixture: sum_k g_k h_k (Q15 gates), back to int16 at the hidden scale
            mix = (h.reshape(n, k, f).astype(np.int64) * gates.reshape(n, k, 1)).sum(1)
            intops.check_int32(mix, "expert mixture")
            m = intops.saturate(intops.rshift_round(mix, 15), 16).astype(np.int16)
            rec(b + "mix", m)
            y = intops.ternary_linear(w[b + "ffn.w_out"], d, f, m, w[b + "ffn.w_out.mult"],
                                      w[b + "ffn.w_out.shift"], bias=w[b + "ffn.w_out.bias"], bits=16)
            rec(b + "ffn", y)
            x = intops.residual_add(x, y, *q["ffn"]["residual"], bits=16)
            rec(b + "res2", x)
        # 5. mean pool -> LayerNorm -> head: int32 logits
        pooled = intops.mean_pool(x, *qm["pool"], bits=16)
        rec("pool", pooled)
        z = self._ln(pooled, "norm", qm["norm"])
        rec("norm", z)
        logits = intops.linear_acc(z, w["head.weight"], w["head.bias"])
        rec("logits", logits)
        return Result(logits, routes, tr)

    # ------------------------------------------------------------------ helpers for reports

    def probabilities(self, logits) -> np.ndarray:
        """Float softmax of the logits at their real scale (for printing only)."""
        return intops.softmax_float(np.asarray(logits, dtype=np.float64) * self.logit_scale)


# ------------------------------------------------------------------ image files -> frames

def image_to_frame(path, fmt: str | None = None, channels: int = 1):
    """A PNG/JPEG/... file -> (frame bytes, width, height, format) as a camera would deliver
    it: GRAYSCALE for a 1-channel model, RGB565 (big-endian) for a 3-channel one, unless
    `fmt` says otherwise. 16-bit images are scaled to 8 bits; images.read_image refuses
    what it cannot read (ImageError) and decompression bombs."""
    from .images import read_image

    fmt = fmt or ("GRAYSCALE" if channels == 1 else "RGB565")
    if fmt not in ("GRAYSCALE", "RGB565"):
        raise ValueError(f"frame format must be GRAYSCALE or RGB565, got {fmt!r}")
    if fmt == "GRAYSCALE":
        g = read_image(path, "L")
        return g.tobytes(), g.shape[1], g.shape[0], fmt
    rgb = read_image(path, "RGB")
    return rgb_to_rgb565(rgb), rgb.shape[1], rgb.shape[0], "RGB565"


def rgb_to_rgb565(rgb) -> bytes:
    """(H, W, 3) uint8 -> big-endian RGB565 bytes (spec §14.1): RRRRRGGG GGGBBBBB."""
    rgb = np.asarray(rgb, dtype=np.uint16)
    v = ((rgb[..., 0] >> 3) << 11) | ((rgb[..., 1] >> 2) << 5) | (rgb[..., 2] >> 3)
    return v.astype(">u2").tobytes()


def read_raw_frame(path, size: str | tuple):
    """A raw frame file NAME.gray / NAME.rgb565 with its size 'WxH' -> (bytes, w, h, fmt)."""
    import os

    ext = os.path.splitext(str(path))[1].lower()
    if ext not in FRAME_EXT:
        raise ValueError(f"{path}: a raw frame must be named *.gray or *.rgb565")
    if isinstance(size, str):
        try:
            wd, ht = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise ValueError(f"frame size {size!r} is not WIDTHxHEIGHT") from None
    else:
        wd, ht = size
    with open(path, "rb") as fh:
        data = fh.read()
    return data, wd, ht, FRAME_EXT[ext]
