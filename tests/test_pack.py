"""butterflyvit pack / classify / eval end to end on a tiny model, the size report measured
from the file, and the commands' errors."""

import json
import math
import os

import numpy as np
import pytest

from butterflyvit.cli import main
from butterflyvit.commands.pack import PARTS, paper_accounting, part_of, size_report
from butterflyvit.intmodel import IntModel
from butterflyvit.modelfile import write_model
from butterflyvit.presets import preset_config
from butterflyvit.quantize import build_integer_model, expected_shapes

from test_intmodel import tiny_bytes, tiny_params

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")  # the digits data set calibrates the tiny checkpoint


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A tiny ButterflyViT checkpoint for the digits data set (random weights, smoothed routing)."""
    from butterflyvit.checkpoint import build_model, save_checkpoint
    from butterflyvit.data import load_digits

    torch.manual_seed(0)
    ds = load_digits()
    cfg = preset_config("tiny", smooth_routing=True)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {"config": cfg.to_dict(), "model": model.state_dict(),
                           "normalize": {"mean": ds.mean, "std": ds.std}, "classes": ds.classes,
                           "dataset": "digits", "metrics": {"test_acc": 0.1}})
    return path


@pytest.fixture(scope="module")
def packed(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "tiny.bvit"
    assert main(["pack", str(tiny_ckpt), "-o", str(out), "--calib", "64", "--json"]) == 0
    return out


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_pack_report(packed, tiny_ckpt, capsys, tmp_path):
    capsys.readouterr()
    rep = size_report(packed)
    assert rep["file_size"] == os.path.getsize(packed)
    assert sum(rep["parts"].values()) == rep["file_size"]
    assert all(rep["parts"][k] > 0 for k, _ in PARTS)
    # bits per trit measured from the file: every trit5 section's bytes over its trits
    # whole rows of ceil(n/5) bytes (format 2): 1.6 bits/trit plus each row's last byte
    assert rep["bits_per_trit"] == pytest.approx(8 * rep["trit_bytes"] / rep["trits"])
    assert 1.6 <= rep["bits_per_trit"] <= 2.0
    assert rep["trit_efficiency"] == pytest.approx(math.log2(3) / rep["bits_per_trit"])
    m = IntModel.load(packed)
    assert m.meta["source"]["checkpoint"] == "tiny.pt" and m.meta["calibration"]["images"] == 64
    assert m.cfg.smooth_routing
    # the text report
    out = tmp_path / "again.bvit"
    rc, text, _ = run_cli(capsys, "pack", tiny_ckpt, "-o", out, "--calib", "16")
    assert rc == 0
    for _, label in PARTS:
        assert label in text
    assert "bits/trit" in text and "Raspberry Pi Pico" in text and "paper's accounting" in text
    rc, js, _ = run_cli(capsys, "pack", tiny_ckpt, "-o", out, "--calib", "16", "--json")
    assert json.loads(js)["file_size"] == os.path.getsize(out)


def test_bits_per_trit_pico_shape(tmp_path):
    """The Pico-shaped substrates (64 x 256) measure 1.625 bits/trit from the file: rows of
    64 trits in 13 bytes, of 256 in 52."""
    cfg = preset_config("pico")
    ranges = {**{f"blocks.{i}.{s}": 3.0 for i in range(cfg.depth)
                 for s in ("ln1", "q", "k", "v", "attn", "proj", "res1", "ln2", "hidden", "ffn", "res2")},
              "embed": 3.0, "pool": 3.0, "norm": 3.0}
    arrays, meta = build_integer_model(cfg, tiny_params(cfg), ranges, [0.286], [0.353])
    path = tmp_path / "pico.bvit"
    write_model(path, arrays, meta)
    rep = size_report(path)
    assert rep["trits"] == cfg.depth * 2 * cfg.dim * cfg.ffn_dim
    d, f = cfg.dim, cfg.ffn_dim
    assert rep["trit_bytes"] == cfg.depth * (f * math.ceil(d / 5) + d * math.ceil(f / 5))
    assert rep["bits_per_trit"] == 1.625
    assert rep["trit_efficiency"] > 0.97
    assert any("pico" in b["board"] and b["fits"] for b in rep["boards"])
    # every section belongs to a reported part
    assert {part_of(n) for n in expected_shapes(cfg)} == {k for k, _ in PARTS} - {"metadata", "container"}


def test_paper_accounting_matches_paper():
    pa = paper_accounting(preset_config("paper"))
    assert pa["standard_fp32"] == 939_524_096
    assert pa["butterfly"] == 2_656_174
    assert round(pa["ratio"], 1) == 353.7


def test_classify(packed, capsys, tmp_path):
    from PIL import Image

    from butterflyvit.data import load_digits
    ds = load_digits()
    img = ds.test.images[0, 0].numpy()
    Image.fromarray(img).resize((24, 16)).save(tmp_path / "d.png")
    (tmp_path / "d.gray").write_bytes(img.tobytes())
    rc, out, err = run_cli(capsys, "classify", packed, tmp_path / "d.png", tmp_path / "d.gray",
                           "--size", "8x8", "--top-k", "2")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(tmp_path / "d.png") + ": ")
    assert lines[0].count("(") == 2
    rc, out, _ = run_cli(capsys, "classify", packed, tmp_path / "d.gray", "--size", "8x8", "--json")
    res = json.loads(out)
    m = IntModel.load(packed)
    r = m.forward_frame(img.tobytes(), 8, 8, "GRAYSCALE")
    assert res["logits"] == r.logits.tolist()
    assert res["top"][0]["class"] == int(np.argmax(r.logits))
    assert res["experts"] == [idx.tolist() for idx, _ in r.routes]
    assert len(res["top"]) == 3


def test_eval(packed, tiny_ckpt, capsys):
    rc, out, err = run_cli(capsys, "eval", packed, "--dataset", "digits", "--checkpoint", tiny_ckpt,
                           "--limit", "40", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["images"] == 40 and 0 <= res["integer_top1"] <= 1 and 0 <= res["float_top1"] <= 1
    assert res["same_prediction"] >= 0.8
    rc, out, err = run_cli(capsys, "eval", packed, "--dataset", "digits", "--limit", "10", "--frames")
    assert rc == 0, err
    assert "integer reference top-1" in out and "frames GRAYSCALE" in out


def test_eval_limit_samples_every_class_of_a_sorted_test_set():
    """--limit N spreads its N images over the test set: an image tree's test set comes in
    class order, and its first N would all be one or two classes."""
    from butterflyvit.commands.eval import spread_indices

    labels = np.repeat(np.arange(10), 1000)
    assert np.bincount(labels[spread_indices(10000, 2000)]).tolist() == [200] * 10
    assert np.bincount(labels[spread_indices(10000, 7)], minlength=10).max() == 1
    assert spread_indices(5, 9).tolist() == [0, 1, 2, 3, 4]
    assert spread_indices(5, 0).tolist() == []


def test_command_errors(packed, tiny_ckpt, capsys, tmp_path):
    from butterflyvit.checkpoint import build_model, save_checkpoint
    for kind in ("dense", "moe"):
        cfg = preset_config("tiny", ffn=kind)
        path = tmp_path / f"{kind}.pt"
        save_checkpoint(path, {"config": cfg.to_dict(), "model": build_model(cfg).state_dict(),
                               "dataset": "digits"})
        rc, _, err = run_cli(capsys, "pack", path, "-o", tmp_path / "x.bvit")
        assert rc == 2 and "ButterflyViT" in err and repr(kind) in err
        assert not (tmp_path / "x.bvit").exists()
    rc, _, err = run_cli(capsys, "pack", tmp_path / "nope.pt", "-o", tmp_path / "x.bvit")
    assert rc == 2 and "no such file" in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    rc, _, err = run_cli(capsys, "pack", tmp_path / "junk.pt", "-o", tmp_path / "x.bvit")
    assert rc == 2 and "cannot read the checkpoint" in err
    rc, _, err = run_cli(capsys, "pack", tiny_ckpt, "-o", tmp_path / "x.bvit", "--calib", "0")
    assert rc == 2 and "--calib" in err

    rc, _, err = run_cli(capsys, "classify", tmp_path / "missing.bvit", tmp_path / "a.png")
    assert rc == 2 and "no such file" in err
    rc, _, err = run_cli(capsys, "classify", tiny_ckpt, tmp_path / "a.png")
    assert rc == 2 and "not a butterflyvit model file (magic b'PK\\x03\\x04'" in err
    (tmp_path / "f.gray").write_bytes(bytes(60))
    rc, _, err = run_cli(capsys, "classify", packed, tmp_path / "f.gray", "--size", "8x8")
    assert rc == 2 and "GRAYSCALE frame of 8x8 needs 64 bytes (1 per pixel), got 60" in err
    rc, _, err = run_cli(capsys, "classify", packed, tmp_path / "f.gray")
    assert rc == 2 and "--size" in err
    rc, _, err = run_cli(capsys, "classify", packed, tmp_path / "none.png")
    assert rc == 2 and "none.png: no such file" in err
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    rc, _, err = run_cli(capsys, "classify", packed, tmp_path / "bad.png")
    assert rc == 2 and "bad.png" in err
    (tmp_path / "other.bvit").write_bytes(tiny_bytes()[:-3])
    rc, _, err = run_cli(capsys, "classify", tmp_path / "other.bvit", tmp_path / "f.gray", "--size", "8x8")
    assert rc == 2 and "file truncated" in err

    rc, _, err = run_cli(capsys, "eval", tmp_path / "missing.bvit", "--dataset", "digits")
    assert rc == 2 and "no such file" in err
    rc, _, err = run_cli(capsys, "eval", packed, "--dataset", "fashion-mnist", "--data", tmp_path)
    assert rc == 2 and "cannot load" in err
