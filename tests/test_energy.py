"""The analytical energy model (butterflyvit.energy): counts that follow from the shapes,
placement of the weights, and results that carry their constants."""

import math

import pytest

from butterflyvit import energy as E
from butterflyvit.presets import preset_config


def test_constants_are_horowitz_as_in_paper_md():
    K = E.CONSTANTS
    assert (K["int32_add"], K["int32_mult"], K["fp32_add"], K["fp32_mult"]) == (0.1, 3.1, 0.9, 3.7)
    assert K["sram_small_read32"] == 5.0 and K["dram_read32"] == 640.0
    assert "Horowitz" in E.SOURCE and "ISSCC 2014" in E.SOURCE


def test_expert_counts_follow_the_shapes():
    cfg = preset_config("pico")
    d, f, n_l, k, L, N = cfg.dim, cfg.ffn_dim, cfg.butterfly_stages, cfg.top_k, cfg.depth, 49
    rows = N * k
    bf = E.count(cfg, "butterfly").ops["experts"]
    rot = n_l * (d // 2) + n_l * (f // 2)
    # ternary products: one add per trit, no multiplies; rotations 4 mult + 2 add
    assert bf["int32_add"] == L * (rows * 2 * rot + rows * f * d + rows * f + rows * f + N * d * f + N * d)
    assert bf["int32_mult"] == L * (rows * 4 * rot + rows * f + rows * f + N * d)
    assert "int8_mult" not in bf and "fp32_mult" not in bf
    fp = E.count(cfg, "moe_fp32").ops["experts"]
    assert fp["fp32_mult"] == L * (rows * 2 * d * f + rows * d)
    i8 = E.count(cfg, "moe_int8").ops["experts"]
    assert i8["int8_mult"] == fp["fp32_mult"]
    # the shared parts are identical
    for part in ("embedding", "attention", "router", "norms", "head"):
        assert E.count(cfg, "butterfly").ops[part] == E.count(cfg, "moe_fp32").ops[part]


def test_expected_experts_read():
    c = preset_config("pico").to_dict()
    assert E.expected_experts_read(c) == pytest.approx(64 * (1 - (62 / 64) ** 49))
    assert E.expected_experts_read(dict(c, num_experts=2, top_k=2)) == 2


def test_stored_bytes():
    cfg = preset_config("paper")
    std = E.stored_bytes(cfg, "moe_fp32")
    # the paper's 939,524,096 B of fp32 expert matrices are inside the standard model
    assert std > 939_524_096
    assert E.stored_bytes(cfg, "butterfly") < 6e6 < E.stored_bytes(cfg, "moe_int8")


def test_placement_and_savings():
    cfg = preset_config("pico")
    r = E.compare(cfg)
    assert r["butterfly"]["weights_location"].startswith("on-chip")
    assert r["moe_fp32"]["weights_location"] == "off-chip DRAM"
    assert r["saving_vs_moe_fp32"] > 0.99 and r["saving_vs_moe_int8"] > 0.9
    assert r["ratio_moe_fp32"] == pytest.approx(
        r["moe_fp32"]["energy_pj"]["total"] / r["butterfly"]["energy_pj"]["total"])
    e = r["butterfly"]["energy_pj"]
    assert e["total"] == pytest.approx(e["compute"] + e["weights"] + e["activations"])
    assert r["constants_pj"]["dram_read32"] == 640.0 and r["assumptions"]
    # everything on chip (a huge budget): the int8 MoE's weights move to the cheap memory
    big = E.compare(cfg, onchip_bytes=1 << 40)
    assert big["moe_int8"]["weights_location"].startswith("on-chip")
    assert big["saving_vs_moe_int8"] < r["saving_vs_moe_int8"]
    # an override of one constant is used and reported
    o = E.compare(cfg, constants={"dram_read32": 1280.0})
    assert o["constants_pj"]["dram_read32"] == 1280.0
    assert o["moe_fp32"]["energy_pj"]["weights"] == pytest.approx(2 * r["moe_fp32"]["energy_pj"]["weights"])


def test_format_names_constants_and_assumptions():
    text = E.format_compare(E.compare(preset_config("pico")))
    assert "ButterflyViT saves" in text and "fp32_mult 3.7" in text and "assumptions:" in text
    assert not math.isnan(E.compare(preset_config("tiny"))["saving_vs_moe_fp32"])
