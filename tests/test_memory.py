"""Memory accounting: the paper's numbers exactly, and a full count that matches the model."""

import json

import pytest

from butterflyvit import cli
from butterflyvit.config import ModelConfig
from butterflyvit.memory import (compare, full_accounting, paper_accounting, paper_sweep,
                                 stored_parameter_count, sweep, trit_bytes)


def test_paper_numbers_exact():
    p = paper_accounting()
    assert p["standard_bytes"] == 939_524_096
    assert p["butterfly_bytes"] == 2_656_174
    assert f"{p['ratio']:.1f}" == "353.7"
    assert p["angle_bytes_per_layer"] == 327_680
    assert int(p["substrate_bytes_per_layer"]) == 51_773
    assert round(p["ratio_with_fp32_projection"]) == 94


def test_paper_sweep():
    rows = paper_sweep()
    assert [r["experts"] for r in rows] == [8, 16, 32, 64, 128]
    assert rows[3]["butterfly_bytes"] == 2_656_174
    ratios = [r["ratio"] for r in rows]
    assert ratios == sorted(ratios)  # the advantage grows with the number of experts
    assert rows[0]["standard_bytes"] == 939_524_096 // 8


def test_cli_paper_table(capsys):
    assert cli.main(["memory", "--paper"]) == 0
    out = capsys.readouterr().out
    assert "939,524,096" in out and "2,656,174" in out and "353.7x" in out
    for e in ("8", "16", "32", "64", "128"):
        assert f"\n  {e:>7}   " in out


def test_cli_json_parses(capsys):
    assert cli.main(["memory", "--paper", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["paper"]["butterfly_bytes"] == 2_656_174
    assert data["compare"]["model"]["total_bytes"] > data["compare"]["model"]["expert_bytes"]
    assert len(data["paper_sweep"]) == 5 and len(data["sweep"]) == 5


def test_cli_plot_writes_png(tmp_path, capsys):
    png = tmp_path / "m.png"
    assert cli.main(["memory", "--preset", "pico", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_tells_the_counts_apart_and_labels_ratios(tmp_path):
    """The paper's count and the full count of the standard MoE coincide on a log axis: they
    differ in marker, fill and line style; every sweep point carries its ratio; the axes
    have byte units."""
    from butterflyvit.memory import _ratio, plot

    cfg = ModelConfig(dim=256, ffn_dim=1024, depth=7, num_experts=64, butterfly_stages=4)
    comp, rows, prow = compare(cfg), sweep(cfg), paper_sweep()
    fig = plot(tmp_path / "m.png", {"compare": comp, "sweep": rows, "paper_sweep": prow})
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    parts, ffn = fig.axes
    lines = {ln.get_label(): ln for ln in ffn.lines}
    paper = lines["paper count: standard MoE experts (fp32 weights)"]
    full = lines["full count: standard MoE FFN (+ biases)"]
    assert (paper.get_marker(), paper.get_linestyle()) != (full.get_marker(), full.get_linestyle())
    assert paper.get_markerfacecolor() == "none" and paper.get_markersize() > 2 * full.get_markersize()
    labels = [t.get_text() for t in ffn.texts]
    assert [_ratio(r["ratio"]) for r in prow] == labels[:5] and "354x" in labels
    assert [_ratio(r["expert_ratio"]) for r in rows] == labels[5:]
    assert "bytes" in ffn.get_ylabel() and ffn.get_xlabel() == "experts per layer"
    assert [t.get_text() for t in ffn.get_xticklabels()] == ["8", "16", "32", "64", "128"]
    assert "1 GB" in [ffn.yaxis.get_major_formatter()(v, 0) for v in ffn.get_yticks()]
    assert "bytes" in parts.get_xlabel() and f"({_ratio(comp['total_ratio'])} smaller)" in parts.get_title()
    assert [t.get_text() for t in parts.texts] == [f"{_ratio(comp['expert_ratio'])} smaller"]   # only experts differ


@pytest.mark.parametrize("ffn", ["butterfly", "moe", "dense"])
@pytest.mark.parametrize("shape", [dict(dim=64, ffn_dim=256, butterfly_stages=4),
                                   dict(dim=12, ffn_dim=20, butterfly_stages=2, heads=2)])
def test_full_count_matches_model_parameters(ffn, shape):
    from butterflyvit.vit import ViT
    cfg = ModelConfig(image_size=16, in_channels=3, patch_size=4, num_classes=7, depth=2,
                      num_experts=5, ffn=ffn, **shape)
    n_params = sum(p.numel() for p in ViT(cfg).parameters())
    assert stored_parameter_count(full_accounting(cfg)) == n_params


def test_full_count_units():
    cfg = ModelConfig(dim=64, ffn_dim=256, depth=4, num_experts=64, butterfly_stages=4)
    parts = {p.name: p for p in full_accounting(cfg)}
    assert parts["substrate W_in trits"].bytes == 4 * 256 * trit_bytes(64) == 4 * 3328  # rows
    assert parts["angles theta (output side)"].bytes == 4 * 64 * 4 * 128 * 2
    assert parts["W_in row scales"].bytes == 4 * 256 * 4
    r = compare(cfg)
    assert r["expert_ratio"] > 50 and r["standard_moe"]["expert_bytes"] == 4 * 64 * (2 * 64 * 256 + 256 + 64) * 4
    rows = sweep(cfg)
    assert [r["experts"] for r in rows] == [8, 16, 32, 64, 128]


def test_checkpoint_accounting(tmp_path, capsys):
    import torch
    from butterflyvit.checkpoint import save_checkpoint
    from butterflyvit.presets import preset_config
    from butterflyvit.vit import ViT
    cfg = preset_config("tiny")
    save_checkpoint(tmp_path / "t.pt", {"config": cfg.to_dict(), "model": ViT(cfg).state_dict()})
    assert cli.main(["memory", "--checkpoint", str(tmp_path / "t.pt"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["compare"]["config"]["num_experts"] == cfg.num_experts
