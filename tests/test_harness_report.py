"""The harness report's verdicts and plot, without a board: the near-chance rule on top-1,
and the PNG's axes (units, integer ticks, a strip of dots for a handful of images, measured
and analytical energy apart with the line that says why they differ)."""

import pytest
from matplotlib.ticker import MaxNLocator

from butterflyvit.boards import get_board
from butterflyvit.config import ModelConfig
from butterflyvit.harness import report as R

CFG = ModelConfig(image_size=28, in_channels=1, patch_size=4, num_classes=10, dim=64, depth=4, heads=4,
                  ffn_dim=256, num_experts=64, top_k=2, butterfly_stages=4)


def results(n, right, labelled=None):
    """n results, the first `right` of them top-1 right; the first `labelled` carry a label."""
    labelled = n if labelled is None else labelled
    out = []
    for i in range(n):
        top1 = i % 10 if i < right else (i + 1) % 10
        out.append({"index": i, "label": i % 10 if i < labelled else None, "top1_board": top1,
                    "top1_host": top1, "match": True, "us": 900_000 + 1000 * (i % 7),
                    "heap_peak": 90_000, "heap_before": 60_000})
    return out


def test_near_chance_threshold():
    assert R.near_chance_threshold(10) == pytest.approx(0.15)       # 1.5x chance
    assert R.near_chance_threshold(3) == pytest.approx(0.5)
    assert R.near_chance_threshold(2) == pytest.approx(2 / 3)       # not 75%: a third of the way to 100%


@pytest.mark.parametrize("n, right, labelled, verdict", [
    (20, 2, None, "near-chance"),       # 10%: chance for 10 classes
    (20, 3, None, "ok"),                # 15%: at the threshold is not below it
    (40, 5, None, "near-chance"),       # 12.5%
    (19, 0, None, "too-few-labels"),    # all wrong, but 19 labelled images say too little
    (30, 0, 19, "too-few-labels"),      # unlabelled images do not count
    (5, 0, 0, "no-labels"),
])
def test_top1_verdicts(n, right, labelled, verdict):
    out = R.top1_check(results(n, right, labelled), 10)
    assert out["top1_check"]["verdict"] == verdict
    nl = n if labelled is None else labelled
    assert out["labelled"] == nl
    if nl:
        assert out["accuracy_board"] == pytest.approx(min(right, nl) / nl)
    else:
        assert out["accuracy_board"] is None and out["accuracy_host"] is None


def report(n, right=None, power_w=0.5):
    r = {"board": {"name": "rp2040-pico"}, "port": "/dev/ttyACM0", "status": "complete",
         "model": {"path": "m.bvit", "config": CFG.to_dict()},
         "images": {"source": "dataset", "dataset": "fashion-mnist", "count": n},
         "setup": {"heap_total": 200_000, "ram_buffers": 40_000},
         "results": results(n, n if right is None else right)}
    r["summary"] = R.summarise(r)
    r["energy"] = R.energy_section(r, get_board("rp2040-pico"), CFG, power_w)
    return r


def test_warning_names_rule_and_images():
    r = report(20, right=1)
    w = R.top1_warning(r)
    assert w.startswith("warning: top-1 on the board is 5.0% over 20 labelled images, near chance "
                        "(10.0% for 10 classes; below 15.0% counts as near chance)")
    assert "data set fashion-mnist" in w
    assert R.top1_warning(report(20)) is None and R.top1_warning(report(5, right=0)) is None


def test_plot_few_images_is_a_strip_with_integer_ticks(tmp_path):
    r = report(5)
    fig = R.plot_report(r, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    lat, dist, measured, analytical = fig.axes
    # latency per image: integer image indices, ms on the other axis
    assert isinstance(lat.xaxis.get_major_locator(), MaxNLocator)
    assert [float(t) for t in lat.get_xticks() if 0 <= t <= 4] == [0, 1, 2, 3, 4]
    assert lat.get_xlabel() == "test image (index)" and "ms per image" in lat.get_ylabel()
    # 5 images: one dot each, no histogram bars
    assert dist.get_title() == "latency of each image (5 images: too few for a histogram)"
    assert not dist.patches and len(dist.lines[0].get_xdata()) == 5
    assert dist.get_xlabel() == "latency (ms per image)"


def test_plot_many_images_is_a_histogram(tmp_path):
    fig = R.plot_report(report(60), tmp_path / "p.png")
    dist = fig.axes[1]
    assert dist.get_title() == "latency histogram (60 images)" and 1 < len(dist.patches) <= 30
    assert sum(p.get_height() for p in dist.patches) == 60
    assert all(float(t).is_integer() for t in dist.get_yticks())


def test_plot_energy_apart_with_the_explanation(tmp_path):
    r = report(5, power_w=0.5)
    fig = R.plot_report(r, tmp_path / "p.png")
    measured, analytical = fig.axes[2:]
    m, a = r["energy"]["measured"], r["energy"]["analytical"]
    assert measured.get_ylabel() == "mJ per image"
    assert analytical.get_ylabel() == "\u00b5J per image (log scale)"
    assert len(measured.patches) == 1 and measured.patches[0].get_height() == pytest.approx(
        m["energy_per_inference_j"] * 1e3)
    assert [p.get_height() for p in analytical.patches] == pytest.approx(
        [a["butterfly_j"] * 1e6, a["moe_int8_j"] * 1e6, a["moe_fp32_j"] * 1e6])
    assert analytical.get_yscale() == "log" and measured.get_yscale() == "linear"
    labels = [t.get_text() for t in analytical.texts]
    fp32_ratio = a["moe_fp32_j"] / a["butterfly_j"]
    assert any(f"{fp32_ratio:,.0f}x ButterflyViT" in t for t in labels)
    line = " ".join(t.get_text() for t in fig.texts)
    assert f"Why measured is {m['ratio_to_analytical']:,.0f}x analytical" in line
    assert "MicroPython interpreter" in line and "Horowitz" in line
    assert m["ratio_to_analytical"] > 100


def test_plot_without_power_says_so(tmp_path):
    r = report(5, power_w=None)
    r["energy"]["measured"].pop("energy_per_inference_j", None)
    r["energy"]["measured"]["note"] = ("no power figure for board x: measured energy not computed "
                                       "(pass --power-w W)")
    fig = R.plot_report(r, tmp_path / "p.png")
    assert "pass --power-w W" in " ".join(t.get_text() for t in fig.axes[2].texts)
    assert not any("Why measured" in t.get_text() for t in fig.texts)   # no gap shown, none explained
