"""The native module's whole-layer functions (native/kernels/layers.c) on the host.

The board's native backend runs a model in a few calls per layer (`ln_tokens`,
`linear_tokens`, `attention`, `route`, `ffn`, docs/native.md) on the weights in place.
Here those calls are made through the checked C layer (ctypes, as in test_native_host.py)
in the order device/bvit/model.py makes them, straight on the model file's bytes, and the
logits must be the integer reference's (butterflyvit.intmodel) on every model and input:
the shipped model, pico-shaped random weights (smoothed routing), the tiny models (plain,
smooth, RGB; odd sizes), and tokens at the int8 extremes. The binding and the device code
around these calls are checked on a real MicroPython built with the module
(tests/test_native_micropython.py, tests/test_firmware.py, with a MicroPython checkout).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from bvit import schema
from butterflyvit.intmodel import IntModel
from butterflyvit.modelfile import decode_model, encode_model
from test_device_model import SHIPPED, pico_random_model
from test_intmodel import tiny_bytes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "native" / "tests"))
import bvit_ctypes as BC  # noqa: E402


@pytest.fixture(scope="module")
def nat(tmp_path_factory):
    out = Path(os.environ.get("BVIT_NATIVE_LIBDIR") or tmp_path_factory.mktemp("native"))
    # under test_native_host.py's sanitizer re-run: the ASan + UBSan build
    return BC.Native(BC.build_library(out, sanitize=os.environ.get("BVIT_NATIVE_SANITIZE") == "1"))


def layer_forward(nat, data: bytes, tokens: np.ndarray, slots: int | None = None):
    """Logits of a model file's bytes for int8 patch tokens (n x patch_dim), with the
    module's layer functions, called as bvit.model.Classifier._forward_layers calls them."""
    m = decode_model(data)
    c = schema.derive(m.metadata["config"])
    q = schema.quant(m.metadata, c)
    slot = {}
    board = dict(schema.board_slots())
    for s, name, _, _, _ in schema.sections(c):
        slot[name] = m.info(name).offset
    at = slot.__getitem__
    mem = np.frombuffer(data, np.uint8)
    n, d, f, pd, nc = c["tokens"], c["dim"], c["ffn_dim"], c["patch_dim"], c["num_classes"]
    E, kk, nl, g = c["num_experts"], c["top_k"], c["butterfly_stages"], c["grid"]
    QB = board["QB"]
    work = np.zeros(schema.layer_work(c), np.int32)
    if slots is not None:                       # fewer rotation-table slots than experts
        work = np.zeros(nat.ffn_work_size(n, d, f, kk, nl, slots), np.int32)

    def arr(name, dt):
        return np.frombuffer(data, dt, count=m.info(name).nbytes // np.dtype(dt).itemsize,
                             offset=at(name)).copy()

    def mult(prefix, bias=True):
        return (arr(prefix + ".mult", np.int16), arr(prefix + ".shift", np.int8),
                arr(prefix + ".bias", np.int32) if bias else None)

    x = np.zeros(n * d, np.int16)
    a = np.zeros(n * d, np.int8)
    qkv = np.zeros(3 * n * d, np.int8)
    idx = np.zeros(n * kk, np.uint16)
    gates = np.zeros(n * kk, np.int32)
    M, S, _ = mult("embed", bias=False)
    nat.linear_tokens(tokens.ravel().astype(np.int8), mem, mem, M, S, x, work,
                      (n, pd, d, at("embed.weight"), at("embed.bias"), d, 0, d, 16, 0, 0, 1))
    for i in range(c["depth"]):
        b, p = QB * i, f"blocks.{i}."
        Q = lambda key: q[b + board[key]]      # noqa: E731 - a block's parameter by slot name
        nat.ln_tokens(x, n, arr(p + "norm1.g", np.int16), arr(p + "norm1.b", np.int32),
                      Q("Q_N1S"), Q("Q_N1E"), a, work)
        M, S, B = mult(p + "attn.qkv")
        nat.linear_tokens(a, mem, B, M, S, qkv, work,
                          (n, d, 3 * d, at(p + "attn.qkv.weight"), 0, 0, 0, 3 * d, 8, 0, 0, 1))
        nat.attention(qkv, n, c["heads"], Q("Q_SCM"), Q("Q_SCS"), Q("Q_OUM"), Q("Q_OUS"), a,
                      work)
        M, S, B = mult(p + "attn.proj")
        nat.linear_tokens(a, mem, B, M, S, x, work, (n, d, d, at(p + "attn.proj.weight"), 0, 0,
                                                     0, d, 17, Q("Q_R1A"), Q("Q_R1B"), Q("Q_R1S")))
        nat.ln_tokens(x, n, arr(p + "norm2.g", np.int16), arr(p + "norm2.b", np.int32),
                      Q("Q_N2S"), Q("Q_N2E"), a, work)
        gm = [q[b + j] for pair in board["Q_GATES"] for j in pair]
        nat.route(a, mem, idx, gates, work,
                  (g, d, E, kk, 1 if c["smooth_routing"] else 0, at(p + "ffn.router.weight"), *gm))
        iM, iS, _ = mult(p + "ffn.w_in", bias=False)
        oM, oS, oB = mult(p + "ffn.w_out")
        nat.ffn(a, x, idx, gates, mem, mem, iM, iS, oM, oS, oB, work,
                (n, d, f, kk, nl, Q("Q_P"), E, at(p + "ffn.phi"), at(p + "ffn.theta"),
                 at(p + "ffn.w_in"), at(p + "ffn.w_out"), Q("Q_R2A"), Q("Q_R2B"), Q("Q_R2S")))
    b = QB * c["depth"]
    y = np.zeros(d, np.int16)
    nat.mean_pool(x, n, q[b + board["Q_POM"]], q[b + board["Q_POS"]], y)
    nat.ln_tokens(y, 1, arr("norm.g", np.int16), arr("norm.b", np.int32), q[b + board["Q_NS"]],
                  q[b + board["Q_NE"]], a, work)
    logits = np.zeros(nc, np.int32)
    nat.linear_tokens(a, mem, mem, None, None, logits, work,
                      (1, d, nc, at("head.weight"), at("head.bias"), 0, 0, nc, 32, 0, 0, 1))
    return logits


def token_sets(cfg, rng, count):
    n, pd = cfg.grid * cfg.grid, cfg.patch_dim
    yield np.full((n, pd), -128, np.int8)
    yield np.full((n, pd), 127, np.int8)
    yield np.zeros((n, pd), np.int8)
    for _ in range(count):
        yield rng.integers(-128, 128, size=(n, pd)).astype(np.int8)


def model_bytes(name):
    """A test model's file bytes by name (None: the shipped model is not in this checkout)."""
    if name == "shipped":
        return SHIPPED.read_bytes() if SHIPPED.exists() else None
    if name == "pico-random":
        return encode_model(*pico_random_model())
    return tiny_bytes(name[len("tiny-"):])


@pytest.mark.parametrize("name", ["shipped", "pico-random", "tiny-plain", "tiny-smooth",
                                  "tiny-rgb"])
def test_layer_functions_give_the_reference_logits(nat, name):
    data = model_bytes(name)
    if data is None:
        pytest.skip("this checkout has no shipped model")
    ref = IntModel(decode_model(data))
    rng = np.random.default_rng(7)
    cfg = ref.cfg
    for tokens in token_sets(cfg, rng, 12):
        want = ref.forward_tokens(tokens).logits
        got = layer_forward(nat, data, tokens)
        assert np.array_equal(got, want), name


def test_one_rotation_slot_gives_the_same_logits(nat):
    """The expert cache only saves work: with a single slot (every other expert expanded
    again) the integers are the same."""
    data = encode_model(*pico_random_model())
    rng = np.random.default_rng(3)
    tokens = rng.integers(-128, 128, size=(49, 16)).astype(np.int8)
    assert np.array_equal(layer_forward(nat, data, tokens, slots=1),
                          layer_forward(nat, data, tokens))


def test_work_size_formula_is_the_modules(nat):
    """bvit.schema.layer_work (the board's RAM budget) covers the module's own ffn_work_size."""
    for d, f, k, nl in ((64, 256, 2, 4), (24, 40, 1, 2), (7, 13, 3, 2), (128, 512, 2, 6)):
        c = {"dim": d, "ffn_dim": f, "num_experts": 8, "top_k": k, "butterfly_stages": nl,
             "tokens": 16, "grid": 4, "smooth_routing": True, "num_classes": 10}
        assert schema.layer_work(c) >= nat.ffn_work_size(16, d, f, k, nl, min(2 * k, 8))


def test_bad_calls_are_refused(nat):
    """Every size and offset is checked before the loops: no call reads outside a buffer."""
    data = encode_model(*pico_random_model())
    mem = np.frombuffer(data, np.uint8)
    a = np.zeros(49 * 64, np.int8)
    x = np.zeros(49 * 64, np.int16)
    idx = np.zeros(98, np.uint16)
    gates = np.full(98, 16384, np.int32)
    M, S, B = np.full(256, 16384, np.int16), np.full(256, 20, np.int8), np.zeros(64, np.int32)
    work = np.zeros(schema.layer_work(schema.derive(decode_model(data).metadata["config"])),
                    np.int32)
    ok = (49, 64, 256, 2, 4, 5, 64, 0, 0, 0, 0, 16384, 16384, 15)
    with pytest.raises(ValueError, match="out of range"):      # weights past the file's end
        nat.ffn(a, x, idx, gates, mem, mem, M, S, M[:64], S[:64], B, work,
                ok[:7] + (len(data) - 10,) + ok[8:])
    bad_idx = idx.copy()
    bad_idx[5] = 64
    with pytest.raises(ValueError, match="expert >= E"):
        nat.ffn(a, x, bad_idx, gates, mem, mem, M, S, M[:64], S[:64], B, work, ok)
    with pytest.raises(ValueError, match="work is too small"):
        nat.ffn(a, x, idx, gates, mem, mem, M, S, M[:64], S[:64], B, work[:100], ok)
    with pytest.raises(ValueError, match="wrong number of parameters"):
        nat.ffn(a, x, idx, gates, mem, mem, M, S, M[:64], S[:64], B, work, ok[:-1])
    with pytest.raises(ValueError, match="out is too short"):
        nat.linear_tokens(a, mem, None, M, S, np.zeros(10, np.int8), work,
                          (49, 64, 64, 0, 0, 0, 0, 64, 8, 0, 0, 1))
    with pytest.raises(ValueError, match="mode must be"):
        nat.linear_tokens(a, mem, None, M, S, x, work, (49, 64, 64, 0, 0, 0, 0, 64, 9, 0, 0, 1))
    with pytest.raises(ValueError, match="bias"):
        nat.linear_tokens(a, mem, mem, M, S, x, work,
                          (49, 64, 64, 0, len(data) - 8, 64, 0, 64, 16, 0, 0, 1))
    with pytest.raises(ValueError, match="k must be"):
        nat.route(a, mem, idx, gates, work, (7, 64, 64, 17, 1, 0) + (16384, 20) * 4)
    with pytest.raises(ValueError, match="gate multipliers"):
        nat.route(a, mem, idx, gates, work, (7, 64, 64, 2, 1, 0) + (16384, 0) * 4)
    with pytest.raises(ValueError, match="work must be"):
        nat.ln_tokens(x, 49, np.zeros(64, np.int16), np.zeros(64, np.int32), 10, 0, a,
                      np.zeros(64, np.int16))
