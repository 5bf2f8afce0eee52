"""The integer model (quantize.py + intmodel.py): pinned outputs, agreement with the float
model, load-time checks and a bounded fuzzer of the integer-model reader.

The pinned tests build a tiny model from a numpy RNG (no torch: the pins cannot depend on
torch's float arithmetic) and literal calibration ranges, run fixed camera frames through
the golden forward and compare the integer logits and routing with literals. A board port
(device/bvit, native/) can replay exactly these cases. Regenerate the pins, after a
deliberate change of the integer model, with `python tests/test_intmodel.py`.
"""

import json
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from butterflyvit import intops
from butterflyvit.config import ModelConfig
from butterflyvit.intmodel import IntModel, image_to_frame, read_raw_frame, rgb_to_rgb565
from butterflyvit.modelfile import ModelFormatError, Trits, decode_model, encode_model
from butterflyvit.quantize import QuantizeError, build_integer_model, expected_shapes, site_names

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ the tiny deterministic model


def tiny_config(**kw) -> ModelConfig:
    d = dict(image_size=8, in_channels=1, patch_size=2, num_classes=4, dim=16, depth=2, heads=2,
             ffn_dim=32, ffn="butterfly", num_experts=4, top_k=2, butterfly_stages=3)
    d.update(kw)
    return ModelConfig(**d)


def tiny_params(cfg: ModelConfig, seed: int = 1234) -> dict:
    """Float parameters in quantize.float_params' format, from a numpy RNG only."""
    rng = np.random.default_rng(seed)
    d, f, E, n_l, C = cfg.dim, cfg.ffn_dim, cfg.num_experts, cfg.butterfly_stages, cfg.num_classes

    def nrm(s, *shape):
        return rng.normal(0.0, s, shape)

    p = {"patch_embed.weight": nrm(1 / np.sqrt(cfg.patch_dim), d, cfg.patch_dim),
         "patch_embed.bias": nrm(0.05, d), "pos_embed": nrm(0.2, cfg.num_patches, d)}
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        for ln in ("norm1", "norm2"):
            p[b + ln + ".weight"] = 1 + nrm(0.1, d)
            p[b + ln + ".bias"] = nrm(0.05, d)
        p[b + "attn.qkv.weight"] = nrm(1 / np.sqrt(d), 3 * d, d)
        p[b + "attn.qkv.bias"] = nrm(0.05, 3 * d)
        p[b + "attn.proj.weight"] = nrm(1 / np.sqrt(d), d, d)
        p[b + "attn.proj.bias"] = nrm(0.05, d)
        p[b + "ffn.router.weight"] = nrm(0.5, E, d)
        p[b + "ffn.phi"] = nrm(0.4, E, n_l, intops.padded_size(d) // 2)
        p[b + "ffn.theta"] = nrm(0.4, E, n_l, intops.padded_size(f) // 2)
        p[b + "ffn.w_in.trits"] = rng.integers(-1, 2, (f, d)).astype(np.int8)
        p[b + "ffn.w_in.gamma"] = rng.uniform(0.2, 0.4, f)
        p[b + "ffn.w_out.trits"] = rng.integers(-1, 2, (d, f)).astype(np.int8)
        p[b + "ffn.w_out.gamma"] = rng.uniform(0.1, 0.2, d)
        p[b + "ffn.w_out.bias"] = nrm(0.05, d)
    p["norm.weight"] = 1 + nrm(0.1, d)
    p["norm.bias"] = nrm(0.05, d)
    p["head.weight"] = nrm(0.5, C, d)
    p["head.bias"] = nrm(0.1, C)
    return p


# Calibration maxima of the tiny model (measured once with quantize.calibrate on 256 random
# images, rounded to 2 digits; literals so that no float forward is involved in the pins).
TINY_RANGES = {
    "embed": 5.1, "pool": 3.3, "norm": 2.9,
    "blocks.0.ln1": 3.4, "blocks.0.q": 3.6, "blocks.0.k": 3.2, "blocks.0.v": 3.8,
    "blocks.0.attn": 2.7, "blocks.0.proj": 2.0, "blocks.0.res1": 5.0, "blocks.0.ln2": 3.4,
    "blocks.0.hidden": 4.6, "blocks.0.ffn": 1.6, "blocks.0.res2": 5.0,
    "blocks.1.ln1": 3.3, "blocks.1.q": 4.0, "blocks.1.k": 4.2, "blocks.1.v": 4.1,
    "blocks.1.attn": 2.9, "blocks.1.proj": 2.5, "blocks.1.res1": 6.1, "blocks.1.ln2": 3.2,
    "blocks.1.hidden": 4.0, "blocks.1.ffn": 1.9, "blocks.1.res2": 6.0,
}
TINY_MEAN, TINY_STD = 0.4, 0.3
VARIANTS = {"plain": {}, "smooth": {"smooth_routing": True}, "rgb": {"in_channels": 3}}


def tiny_arrays(variant: str = "plain"):
    cfg = tiny_config(**VARIANTS[variant])
    c = cfg.in_channels
    return build_integer_model(cfg, tiny_params(cfg), TINY_RANGES, [TINY_MEAN] * c,
                               [TINY_STD] * c, ["zero", "one", "two", "three"])


def tiny_model(variant: str = "plain") -> IntModel:
    return IntModel.from_arrays(*tiny_arrays(variant))


def tiny_bytes(variant: str = "plain") -> bytes:
    return encode_model(*tiny_arrays(variant))


def tiny_frames():
    """Fixed frames: three 8x8 GRAYSCALE (the model's size), a 13x10 GRAYSCALE (crop and
    resize), a 12x12 RGB565 and a 20x15 RGB565."""
    rng = np.random.default_rng(7)
    out = [("GRAYSCALE", 8, 8, rng.integers(0, 256, 64, dtype=np.uint8).tobytes()) for _ in range(3)]
    out.append(("GRAYSCALE", 13, 10, rng.integers(0, 256, 130, dtype=np.uint8).tobytes()))
    out.append(("RGB565", 12, 12, rng.integers(0, 256, 288, dtype=np.uint8).tobytes()))
    out.append(("RGB565", 20, 15, rng.integers(0, 256, 600, dtype=np.uint8).tobytes()))
    return out


def arrays_crc(arrays) -> int:
    """CRC-32 over the sections' bytes in name order: pins the quantiser's integer output."""
    crc = 0
    for name in sorted(arrays):
        a = arrays[name]
        raw = a.packed().tobytes() if isinstance(a, Trits) else np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
        crc = zlib.crc32(name.encode() + raw, crc)
    return crc


def run_pins(variant):
    m = tiny_model(variant)
    out = []
    for fmt, w, h, buf in tiny_frames():
        r = m.forward_frame(buf, w, h, fmt)
        out.append({"logits": [int(v) for v in r.logits],
                    "experts0": [int(e) for e in r.routes[0][0][:, 0]],
                    "gates1": [int(g) for g in r.routes[1][1][:4, 0]]})
    return out


# ------------------------------------------------------------------ pins
# logits: the int32 logits of each frame; experts0: the first-choice expert of every token in
# layer 0; gates1: the first gate (Q15) of tokens 0..3 in layer 1.

PINS_CRC = {'plain': 3522977543, 'rgb': 2136921681, 'smooth': 3522977543}  # format 2: trits in rows
PINS = {
    'plain': [
        {'logits': [1030, -8368, -2531, 3481], 'experts0': [3, 1, 3, 3, 1, 2, 3, 0, 2, 3, 0, 3, 0, 0, 3, 2], 'gates1': [20111, 30294, 28819, 32252]},
        {'logits': [-11229, -8878, -1395, -580], 'experts0': [2, 0, 1, 3, 1, 1, 3, 0, 3, 3, 2, 3, 1, 1, 3, 3], 'gates1': [19751, 30520, 24696, 26508]},
        {'logits': [-12192, -1068, -14308, 1592], 'experts0': [0, 3, 2, 1, 3, 1, 2, 2, 1, 2, 3, 2, 1, 0, 3, 0], 'gates1': [26617, 16672, 29558, 26857]},
        {'logits': [-11784, 1722, -11638, -831], 'experts0': [0, 1, 3, 2, 1, 1, 1, 0, 1, 2, 0, 3, 2, 3, 3, 0], 'gates1': [25322, 28292, 25718, 28558]},
        {'logits': [-8553, -5446, -10320, -3122], 'experts0': [3, 3, 3, 3, 1, 3, 3, 1, 1, 3, 1, 2, 3, 1, 1, 3], 'gates1': [18480, 17932, 27778, 29214]},
        {'logits': [-11896, -2442, 872, 2750], 'experts0': [1, 1, 0, 3, 0, 2, 1, 3, 3, 3, 3, 1, 3, 1, 1, 2], 'gates1': [17160, 18958, 31957, 19730]},
    ],
    'rgb': [
        {'logits': [-9229, -10759, 6508, 2547], 'experts0': [3, 1, 3, 1, 2, 1, 2, 2, 2, 2, 2, 1, 2, 2, 2, 3], 'gates1': [21407, 20132, 26494, 22771]},
        {'logits': [-6413, -11683, 8477, 6120], 'experts0': [3, 2, 1, 2, 1, 1, 1, 0, 3, 1, 3, 2, 1, 1, 2, 1], 'gates1': [26657, 18523, 19001, 19474]},
        {'logits': [-737, -8617, 8089, 8006], 'experts0': [2, 1, 1, 1, 3, 1, 0, 1, 1, 1, 1, 2, 1, 2, 1, 2], 'gates1': [18588, 19431, 25970, 24762]},
        {'logits': [-861, -8553, 5647, 9551], 'experts0': [1, 0, 2, 2, 0, 1, 1, 0, 1, 1, 2, 3, 1, 1, 3, 2], 'gates1': [23685, 17226, 23124, 19410]},
        {'logits': [-6130, -12174, 7890, -784], 'experts0': [3, 3, 3, 1, 2, 1, 2, 2, 3, 1, 2, 1, 1, 1, 3, 3], 'gates1': [31862, 21786, 22139, 28518]},
        {'logits': [-6970, -2500, 1362, 8498], 'experts0': [2, 2, 1, 1, 3, 2, 2, 2, 2, 1, 3, 3, 2, 3, 1, 3], 'gates1': [18436, 19623, 16495, 30294]},
    ],
    'smooth': [
        {'logits': [2745, -8329, -3651, 1446], 'experts0': [1, 3, 3, 3, 2, 3, 3, 3, 0, 3, 3, 3, 0, 3, 3, 2], 'gates1': [25430, 29039, 28303, 26086]},
        {'logits': [-5587, -8251, -4224, 855], 'experts0': [0, 0, 3, 0, 1, 3, 3, 3, 3, 2, 3, 3, 1, 3, 2, 3], 'gates1': [28166, 22256, 20047, 22062]},
        {'logits': [-9938, -1695, -15218, 1093], 'experts0': [3, 2, 2, 2, 1, 2, 2, 2, 1, 1, 2, 0, 1, 2, 0, 0], 'gates1': [25102, 21246, 20362, 24277]},
        {'logits': [-11789, 2320, -9514, 3035], 'experts0': [1, 1, 0, 0, 1, 1, 0, 0, 2, 1, 3, 0, 2, 3, 3, 3], 'gates1': [24192, 17315, 20612, 19878]},
        {'logits': [-5259, -4530, -13438, -4864], 'experts0': [3, 3, 3, 3, 1, 3, 3, 3, 3, 0, 3, 3, 0, 3, 1, 2], 'gates1': [24072, 19130, 22198, 28780]},
        {'logits': [-13738, -906, -5985, 3521], 'experts0': [1, 2, 0, 0, 3, 3, 3, 0, 3, 3, 1, 3, 0, 3, 0, 1], 'gates1': [23124, 19410, 25749, 22658]},
    ],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pinned_quantiser_output(variant):
    assert arrays_crc(tiny_arrays(variant)[0]) == PINS_CRC[variant]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pinned_outputs(variant):
    assert run_pins(variant) == PINS[variant]


def test_pins_are_not_degenerate():
    """The pinned cases exercise something: different frames give different answers, the
    routing uses several experts, smoothing changes it, and no activation saturates much."""
    plain, smooth = PINS["plain"], PINS["smooth"]
    assert len({tuple(p["logits"]) for p in plain}) == len(plain)
    assert len({int(np.argmax(p["logits"])) for p in plain + PINS["rgb"]}) >= 2
    assert len(set(plain[0]["experts0"])) >= 3
    assert any(a["experts0"] != b["experts0"] for a, b in zip(plain, smooth))
    r = tiny_model().forward_frame(tiny_frames()[0][3], 8, 8, "GRAYSCALE", trace=True)
    for name, v in r.trace.items():
        if v.dtype == np.int8:
            assert np.mean(np.abs(v.astype(int)) >= 127) < 0.05, name


# ------------------------------------------------------------------ structure of the forward


def test_trace_routes_and_frame_paths():
    m = tiny_model()
    cfg = m.cfg
    fmt, w, h, buf = tiny_frames()[0]
    r = m.forward_frame(buf, w, h, fmt, trace=True)
    assert r.logits.dtype == np.int32 and r.logits.shape == (cfg.num_classes,)
    assert len(r.routes) == cfg.depth
    for idx, gates in r.routes:
        assert idx.shape == gates.shape == (cfg.num_patches, cfg.top_k)
        assert gates.dtype == np.uint16
        assert np.all(np.abs(gates.astype(int).sum(1) - 32768) <= cfg.top_k)
        assert np.all(gates[:, 0] >= gates[:, 1])       # largest logit first
    n, d, f, k = cfg.num_patches, cfg.dim, cfg.ffn_dim, cfg.top_k
    want = {"tokens": (n, cfg.patch_dim), "embed": (n, d), "blocks.0.qkv": (n, 3 * d),
            "blocks.0.router": (n, cfg.num_experts), "blocks.0.hidden": (n * k, f),
            "blocks.0.mix": (n, f), "blocks.1.res2": (n, d), "pool": (d,), "norm": (d,),
            "logits": (cfg.num_classes,)}
    for name, shape in want.items():
        assert r.trace[name].shape == shape, name
    assert r.trace["embed"].dtype == np.int16 and r.trace["blocks.0.ln1"].dtype == np.int8
    assert np.array_equal(r.trace["logits"], r.logits)
    # the same image as 8-bit pixels gives the same integers as its same-size GRAYSCALE frame
    pix = np.frombuffer(buf, np.uint8).reshape(1, 8, 8)
    assert np.array_equal(m.forward_pixels(pix).logits, r.logits)
    # a 1-channel model fed an RGB565 frame of grey pixels sees the grey values
    g = np.frombuffer(buf, np.uint8).reshape(8, 8)
    grey = np.stack([g & 0xF8 | g >> 5, g & 0xFC | g >> 6, g & 0xF8 | g >> 5], -1)
    rgb_frame = rgb_to_rgb565(grey)
    y = m.frame_to_tokens(rgb_frame, 8, 8, "RGB565")
    px = intops.frame_to_pixels(rgb_frame, 8, 8, "RGB565", 8, 1)
    assert np.array_equal(y, intops.patchify(intops.quantize_pixels(px, m.w["input.a"], m.w["input.b"],
                                                                     m.w["input.shift"]), 2))
    # results are deterministic
    assert np.array_equal(m.forward_frame(buf, w, h, fmt).logits, r.logits)


def test_top_and_probabilities():
    m = tiny_model()
    fmt, w, h, buf = tiny_frames()[1]
    r = m.forward_frame(buf, w, h, fmt)
    top = r.top(3)
    assert [i for i, _ in top] == list(np.argsort(-r.logits.astype(np.int64), kind="stable")[:3])
    p = m.probabilities(r.logits)
    assert abs(p.sum() - 1) < 1e-9 and int(np.argmax(p)) == top[0][0]


def test_ternary_matrices_are_stored_in_whole_rows():
    """Format 2: w_in (f, d) and w_out (d, f) in spec §4 rows, each row on its own bytes
    (what the lookup-table kernel needs); version 1 files (trit streams) are refused with
    what to do."""
    arrays, meta = tiny_arrays("smooth")
    m = decode_model(encode_model(arrays, meta))
    c = tiny_config(smooth_routing=True)
    for name, rows, n in (("ffn.w_in", c.ffn_dim, c.dim), ("ffn.w_out", c.dim, c.ffn_dim)):
        info = m.info("blocks.0." + name)
        assert info.shape == (rows, n) and info.nbytes == rows * -(-n // 5)
        want = arrays["blocks.0." + name].values
        assert m.raw("blocks.0." + name) == intops.pack_trits(want)
    old = dict(meta, int_version=1)
    with pytest.raises(ModelFormatError, match="version 1 .* pack the checkpoint again"):
        IntModel(decode_model(encode_model(arrays, old)))

def test_expected_sections_and_names():
    arrays, meta = tiny_arrays()
    assert set(arrays) == set(expected_shapes(tiny_config()))
    assert all(len(n) <= 48 for n in expected_shapes(tiny_config(depth=12)))
    assert meta["format"] == "butterflyvit-integer" and meta["int_version"] == 2
    assert set(meta["scales"]) == set(site_names(tiny_config())) | {"input"}
    json.dumps(meta)


def test_refuses_baselines_and_bad_ranges():
    for kind in ("dense", "moe"):
        cfg = tiny_config(ffn=kind)
        with pytest.raises(QuantizeError, match="ButterflyViT"):
            build_integer_model(cfg, {}, TINY_RANGES, [0.4], [0.3])
    cfg = tiny_config()
    with pytest.raises(QuantizeError, match="missing"):
        build_integer_model(cfg, tiny_params(cfg), {"embed": 1.0}, [0.4], [0.3])
    with pytest.raises(QuantizeError, match="normalisation"):
        build_integer_model(cfg, tiny_params(cfg), TINY_RANGES, [0.4, 0.4], [0.3, 0.3])


# ------------------------------------------------------------------ against the float model


def torch_tiny(cfg, p):
    """The torch ViT holding the tiny parameters (latent ternary weights chosen so that the
    model's own absmean quantiser gives exactly the trits and gammas of `p`)."""
    import torch

    from butterflyvit.checkpoint import build_model
    m = build_model(cfg)
    sd = {}
    for k in m.state_dict():
        if k.endswith(("w_in.weight", "w_out.weight")):
            base = k[:-len(".weight")]
            t, g = p[base + ".trits"].astype(np.float64), p[base + ".gamma"]
            frac = np.abs(t).mean(1, keepdims=True)
            sd[k] = torch.tensor(np.where(frac > 0, t * g[:, None] / np.maximum(frac, 1e-9), 0.0),
                                 dtype=torch.float32)
        else:
            sd[k] = torch.tensor(p[k], dtype=torch.float32)
    m.load_state_dict(sd)
    return m.eval()


@pytest.mark.parametrize("variant", ["plain", "smooth"])
def test_integer_agrees_with_float(variant):
    torch = pytest.importorskip("torch")
    from butterflyvit.data import normalize
    from butterflyvit.quantize import quantize_model

    torch.manual_seed(0)
    cfg = tiny_config(**VARIANTS[variant])
    p = tiny_params(cfg)
    fm = torch_tiny(cfg, p)
    rng = np.random.default_rng(5)
    # images with structure: random low-resolution patterns upsampled, plus noise
    base = rng.integers(0, 256, (96, 1, 4, 4))
    imgs = np.clip(base.repeat(2, 2).repeat(2, 3) + rng.integers(-20, 21, (96, 1, 8, 8)), 0, 255)
    imgs = torch.tensor(imgs, dtype=torch.uint8)
    arrays, meta = quantize_model(fm, imgs[:64], [TINY_MEAN], [TINY_STD], ["a", "b", "c", "d"])
    m = IntModel.from_arrays(arrays, meta)
    with torch.no_grad():
        fl = fm(normalize(imgs, [TINY_MEAN], [TINY_STD])).numpy()
    il = np.stack([m.forward_pixels(im.numpy()).logits for im in imgs]).astype(np.float64)
    il *= meta["logit_scale"]
    agree = np.mean(il.argmax(1) == fl.argmax(1))
    assert agree >= 0.9, agree
    err = np.abs(il - fl).max() / np.abs(fl).max()
    assert err < 0.1, err


def test_shipped_model_agrees_with_its_checkpoint():
    """models/pico-fmnist.bvit (the repository's model) against models/pico-fmnist.pt on
    the first 200 Fashion-MNIST test images (the full test set is in models/README.md)."""
    bvit, ckpt = ROOT / "models/pico-fmnist.bvit", ROOT / "models/pico-fmnist.pt"
    if not bvit.exists() or not ckpt.exists():
        pytest.skip("the shipped model is not in this checkout")
    torch = pytest.importorskip("torch")
    from butterflyvit.checkpoint import load_model
    from butterflyvit.data import load_fashion_mnist, normalize
    try:
        ds = load_fashion_mnist()
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed")
    fm, ck = load_model(ckpt)
    m = IntModel.load(bvit)
    n = 200
    with torch.no_grad():
        fl = fm(normalize(ds.test.images[:n], ck["normalize"]["mean"], ck["normalize"]["std"])).argmax(-1).numpy()
    il = np.array([m.forward_pixels(ds.test.images[j].numpy()).top(1)[0][0] for j in range(n)])
    assert np.mean(il == fl) >= 0.97


# ------------------------------------------------------------------ load-time errors


def remeta(data: bytes, edit) -> bytes:
    """The model with its metadata edited by `edit(meta)` (re-encoded, so a valid container)."""
    m = decode_model(data)
    meta = json.loads(json.dumps(m.metadata))
    edit(meta)
    return encode_model(m.arrays(), meta)


def rearrays(data: bytes, edit) -> bytes:
    m = decode_model(data)
    arrays = m.arrays()
    edit(arrays)
    return encode_model(arrays, m.metadata)


def _set(path, value):
    def edit(meta):
        node = meta
        for k in path[:-1]:
            node = node[k]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return edit


ERRORS = [
    ("format", _set(["format"], "something-else"), "not an integer ButterflyViT model"),
    ("version", _set(["int_version"], 3), "integer model version 3 is not supported"),
    ("no config", _set(["config"], KeyError), "metadata 'config' must be an object"),
    ("config type", _set(["config", "dim"], 16.0), "config 'dim' has the wrong type"),
    ("config value", _set(["config", "heads"], 3), "dim 16 is not divisible by heads 3"),
    ("config ffn", _set(["config", "ffn"], "dense"), "ffn 'dense'"),
    ("config stages", _set(["config", "butterfly_stages"], 5), "stages"),
    ("config shape", _set(["config", "ffn_dim"], 64), "section 'blocks.0.ffn.theta' is int16"),
    ("classes", _set(["classes"], ["a"]), "must list 4 class names"),
    ("quant", _set(["quant"], KeyError), "metadata 'quant' must be an object"),
    ("blocks", _set(["quant", "blocks"], []), "metadata 'quant' must be an object whose 'blocks' lists 2 blocks"),
    ("ln shift", _set(["quant", "blocks", 0, "norm1", "shift"], 31), "quant.blocks[0].norm1.shift must be an integer in 1..30, got 31"),
    ("ln eps", _set(["quant", "norm", "eps"], -1), "quant.norm.eps must be an integer in 0..1099511627775, got -1"),
    ("mult", _set(["quant", "blocks", 1, "attn", "score"], [40000, 20]), "quant.blocks[1].attn.score.M must be 0 or an integer in 16384..32767, got 40000"),
    ("mult shape", _set(["quant", "pool"], [1]), "quant.pool must be"),
    ("shift", _set(["quant", "blocks", 0, "attn", "out"], [20000, 0]), "quant.blocks[0].attn.out.shift must be an integer in 1..62, got 0"),
    ("gates", _set(["quant", "blocks", 0, "ffn", "gates", "3"], KeyError), "quant.blocks[0].ffn.gates has no '3'"),
    ("input shift", _set(["quant", "blocks", 0, "ffn", "input_shift"], 3), "input_shift must be 5"),
    ("residual", _set(["quant", "blocks", 1, "ffn", "residual"], [1, 2, 70]), "quant.blocks[1].ffn.residual.shift must be an integer in 1..62, got 70"),
    ("bool", _set(["quant", "blocks", 1, "ffn", "residual"], [True, 2, 7]), "quant.blocks[1].ffn.residual.Ma must be an integer in 0..32767, got true"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[e[0] for e in ERRORS])
def test_metadata_errors(case):
    _, edit, msg = case
    data = remeta(tiny_bytes(), edit)
    with pytest.raises(ModelFormatError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        IntModel(decode_model(data))


def _drop(name):
    return lambda a: a.pop(name)


def _put(name, value):
    return lambda a: a.__setitem__(name, value)


ARRAY_ERRORS = [
    ("missing", _drop("blocks.1.ffn.w_out.bias"), "section 'blocks.1.ffn.w_out.bias' is missing"),
    ("dtype", _put("head.bias", np.zeros(4, np.int16)), "section 'head.bias' is int16 (4,), expected int32 (4,)"),
    ("shape", _put("embed.weight", np.zeros((16, 5), np.int8)), "section 'embed.weight' is int8 (16, 5)"),
    ("trit layout", _put("blocks.0.ffn.w_in", Trits(np.zeros((1, 512), np.int8))), "blocks.0.ffn.w_in' is trit5 (1, 512), expected trit5 (32, 16)"),
    ("mult", _put("blocks.0.attn.qkv.mult", np.full(48, -1, np.int16)), "'blocks.0.attn.qkv.mult' holds values outside 0 and 16384..32767"),
    ("shift", _put("embed.shift", np.zeros(16, np.int8)), "'embed.shift' holds values outside 1..62"),
    ("bias", _put("embed.bias", np.full((16, 16), 1 << 30, np.int32)), "'embed.bias' holds values outside"),
    ("ln bias", _put("norm.b", np.full(16, -(1 << 30), np.int32)), "'norm.b' holds values outside"),
    ("input", _put("input.a", np.array([1 << 25], np.int32)), "input.a / input.b are too large"),
    ("input shift", _put("input.shift", np.array([25], np.int32)), "'input.shift' holds values outside 1..24"),
]


@pytest.mark.parametrize("case", ARRAY_ERRORS, ids=[e[0] for e in ARRAY_ERRORS])
def test_array_errors(case):
    _, edit, msg = case
    data = rearrays(tiny_bytes(), edit)
    with pytest.raises(ModelFormatError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        IntModel(decode_model(data))


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        IntModel.load(tmp_path / "missing.bvit")
    p = tmp_path / "x.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ModelFormatError, match=r"not a butterflyvit model file \(magic b'\\x89PNG'"):
        IntModel.load(p)
    data = bytearray(tiny_bytes())
    data[-1] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="checksum mismatch"):
        IntModel.load(p)
    p.write_bytes(encode_model({"a": np.zeros(3, np.int8)}, {"config": {}}))
    with pytest.raises(ModelFormatError, match="not an integer ButterflyViT model"):
        IntModel.load(p)


def test_input_errors(tmp_path):
    m = tiny_model()
    with pytest.raises(ValueError, match="GRAYSCALE frame of 8x8 needs 64 bytes"):
        m.forward_frame(bytes(63), 8, 8, "GRAYSCALE")
    with pytest.raises(ValueError, match="RGB565 frame of 4x3 needs 24 bytes"):
        m.forward_frame(bytes(12), 4, 3, "RGB565")
    with pytest.raises(ValueError, match="frame format must be one of"):
        m.forward_frame(bytes(64), 8, 8, "JPEG")
    with pytest.raises(ValueError, match="at least 1x1"):
        m.forward_frame(b"", 0, 8, "GRAYSCALE")
    with pytest.raises(ValueError, match="image of shape"):
        m.forward_pixels(np.zeros((1, 9, 9), np.uint8))
    raw = tmp_path / "f.gray"
    raw.write_bytes(bytes(64))
    assert read_raw_frame(raw, "8x8") == (bytes(64), 8, 8, "GRAYSCALE")
    with pytest.raises(ValueError, match="not WIDTHxHEIGHT"):
        read_raw_frame(raw, "8by8")
    with pytest.raises(ValueError, match=r"\*.gray or \*.rgb565"):
        read_raw_frame(tmp_path / "f.raw", "8x8")


def test_image_files_become_frames(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    buf, w, h, fmt = image_to_frame(tmp_path / "a.png", channels=3)
    assert (w, h, fmt) == (14, 10, "RGB565") and buf == rgb_to_rgb565(rgb)
    v = int.from_bytes(buf[:2], "big")
    assert v >> 11 == rgb[0, 0, 0] >> 3 and (v >> 5) & 63 == rgb[0, 0, 1] >> 2 and v & 31 == rgb[0, 0, 2] >> 3
    buf, w, h, fmt = image_to_frame(tmp_path / "a.png", channels=1)
    assert (w, h, fmt, len(buf)) == (14, 10, "GRAYSCALE", 140)


# ------------------------------------------------------------------ fuzzer of the integer reader

FUZZ_CASES = 300


def _random_value(rng):
    return rng.choice([0, -1, 1, 2, 5, 31, 63, 1 << 15, 1 << 40, -(1 << 20), 0.5, "x", None, True,
                       [], [1], [1, 2], [0, 1, 2], {}])


def _json_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _json_paths(v, prefix + (i,))


def test_fuzz_integer_reader():
    """Seeded mutations of a valid model, always with a valid container (CRC recomputed, or
    re-encoded): the reader either refuses with ModelFormatError, or the model loads and
    its forward runs to int32 logits. Nothing else may come out."""
    rng = random.Random(20240601)
    bases = {v: tiny_bytes(v) for v in VARIANTS}
    frames = tiny_frames()
    outcomes = {"refused": 0, "ran": 0}
    for case in range(FUZZ_CASES):
        variant = rng.choice(sorted(bases))
        data = bases[variant]
        kind = rng.choice(["bytes", "meta", "meta", "array"])
        if kind == "bytes":  # flip bytes in section data, fix the checksum
            m = decode_model(data)
            start = min(s.offset for s in m.sections.values())
            out = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(start, len(out))] = rng.randrange(256)
            struct.pack_into("<I", out, 12, zlib.crc32(bytes(out[16:])))
            data = bytes(out)
        elif kind == "meta":
            meta0 = decode_model(data).metadata
            paths = [p for p in _json_paths(meta0) if p]
            path = list(rng.choice(paths))
            data = remeta(data, _set(path, KeyError if rng.random() < 0.2 else _random_value(rng)))
        else:
            m = decode_model(data)
            name = rng.choice(m.names)
            a = m.arrays()[name]
            if isinstance(a, Trits):
                v = a.values.copy().ravel()
                v[rng.randrange(v.size)] = rng.choice([-1, 0, 1])
                a = Trits(v.reshape(a.shape))
            else:
                a = a.copy().ravel()
                info = np.iinfo(a.dtype)
                a[rng.randrange(a.size)] = rng.choice([info.min, info.max, 0, -1, 1, info.max // 2])
                a = a.reshape(m.info(name).shape)
            data = rearrays(data, _put(name, a))
        try:
            model = IntModel(decode_model(data))
        except ModelFormatError:
            outcomes["refused"] += 1
            continue
        fmt, w, h, buf = frames[case % len(frames)]
        r = model.forward_frame(buf, w, h, fmt)
        assert r.logits.dtype == np.int32 and r.logits.shape == (model.cfg.num_classes,)
        outcomes["ran"] += 1
    print(f"\n{FUZZ_CASES} integer-model fuzz cases: {outcomes}")
    assert outcomes["refused"] > 20 and outcomes["ran"] > 20, outcomes


if __name__ == "__main__":  # print the pins (after a deliberate change of the integer model)
    print("PINS_CRC =", {v: arrays_crc(tiny_arrays(v)[0]) for v in sorted(VARIANTS)})
    print("PINS = {")
    for v in sorted(VARIANTS):
        print(f"    {v!r}: [")
        for p in run_pins(v):
            print(f"        {p!r},")
        print("    ],")
    print("}")
