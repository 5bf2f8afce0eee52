"""The harness's report: the JSON (a new run's, or the one a run resumes), its summary
(bit-exact count, top-1 against the labels and whether it is near chance), the energy per
image two ways, the plot and the summary printed at the end."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import statistics
from pathlib import Path

import numpy as np

from .transport import HarnessError

REPORT_VERSION = 1


def now():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def new_report(o, board, model_path: Path, model_bytes: bytes, cfg, remote_model_path: str,
               images_source: dict) -> dict:
    """The report of a run that starts afresh (no result yet)."""
    return {"tool": "butterflyvit harness", "report_version": REPORT_VERSION,
            "status": "running", "error": None, "started": now(),
            "port": o.port,
            "board": {"name": board.name, "title": board.title, "kind": board.kind,
                      "heap": board.heap, "flash": board.flash, "clock_hz": board.clock_hz,
                      "power": {s: board.power_source(s) for s in ("active", "idle", "sleep")}},
            "model": {"path": str(model_path), "sha256": hashlib.sha256(model_bytes).hexdigest(),
                      "file_size": len(model_bytes), "config": cfg.to_dict(),
                      "remote_path": remote_model_path},
            "images": {**images_source, "first": o.first, "count": o.images},
            "results": []}


def resumed_report(path: Path, model_bytes: bytes, board, first: int, images_source: dict) -> dict:
    """The report at `path` to continue, checked to be this model's, board's, images' and
    first image's; its "resumed" count goes up by one."""
    try:
        report = json.loads(path.read_text())
    except ValueError as exc:
        raise HarnessError(f"cannot resume: {path} is not a harness report ({exc})") from None
    old = report.get("images", {})
    if report.get("model", {}).get("sha256") != hashlib.sha256(model_bytes).hexdigest():
        raise HarnessError(f"cannot resume: {path} was made with another model "
                           f"({report.get('model', {}).get('path')})")
    if report.get("board", {}).get("name") != board.name or old.get("first") != first:
        raise HarnessError(f"cannot resume: {path} is for board "
                           f"{report.get('board', {}).get('name')}, first image {old.get('first')}")
    same = ("source", "dataset", "folder", "data")
    if any(old.get(k) != images_source.get(k) for k in same):
        raise HarnessError(f"cannot resume: {path} sent other images ("
                           + ", ".join(f"{k} {old.get(k)}" for k in same if old.get(k)) + ")")
    report["resumed"] = report.get("resumed", 0) + 1
    return report


def save(report: dict, path: Path) -> None:
    """Write the report as it stands, with its summary (after every image)."""
    report["updated"] = now()
    report["summary"] = summarise(report)
    write_json(path, report)


def save_failed(report: dict, path: Path, board, cfg, power_w, error: dict) -> None:
    """Write the partial report of a run that stopped: its error, summary and energy."""
    report["status"] = "failed"
    report["error"] = error
    report["summary"] = summarise(report)
    report["energy"] = energy_section(report, board, cfg, power_w)
    report["updated"] = now()
    write_json(path, report)


def finish(report: dict, path: Path, plot_path: Path, board, cfg, power_w) -> dict:
    """The finished report: summary, energy, written with its plot."""
    report["results"].sort(key=lambda r: r["index"])
    report["summary"] = summarise(report)
    report["energy"] = energy_section(report, board, cfg, power_w)
    report["updated"] = now()
    report["plot"] = str(plot_path)
    write_json(path, report)
    plot_report(report, plot_path)
    return report


def summarise(report: dict) -> dict:
    res = report["results"]
    n = len(res)
    out = {"done": n, "asked": report["images"]["count"]}
    if not n:
        return out
    exact = sum(r["match"] for r in res)
    ms = [r["us"] / 1000 for r in res]
    out.update({
        "bit_exact": exact, "agreement": exact / n,
        "mismatched_images": [r["index"] for r in res if not r["match"]],
        # images whose first run differed from the host: run again once before counting
        "rerun_images": [r["index"] for r in res if r.get("rerun")],
        # result lines that failed their CRC-32 on the wire and were sent again
        "lines_resent": sum(r.get("line_resends", 0) for r in res),
        "top1_agreement": sum(r["top1_board"] == r["top1_host"] for r in res) / n,
        **top1_check(res, report["model"]["config"]["num_classes"]),
        "latency_ms": {"mean": statistics.fmean(ms), "median": statistics.median(ms),
                       "min": min(ms), "max": max(ms),
                       "stdev": statistics.stdev(ms) if n > 1 else 0.0,
                       "p90": float(np.percentile(ms, 90)),
                       "first": ms[0], "mean_after_first": statistics.fmean(ms[1:]) if n > 1 else ms[0]},
        "heap_peak_max": max(r["heap_peak"] for r in res),
        "heap_forward_max": max(r["heap_peak"] - r["heap_before"] for r in res),
    })
    return out


# The top-1 check. Too few labelled images say nothing: below MIN_LABELLED the run gives no
# verdict. Otherwise the board's top-1 is "near chance" below chance + min(chance / 2,
# (1 - chance) / 3): 1.5x chance for 3 or more classes (15% for 10 classes, 50% for 3), and
# 67% for 2 classes, where 1.5x chance would be 75%. A model that works is far above it; one
# fed images that are not its data set, labels that are not its classes, or untrained
# weights lands near chance.
MIN_LABELLED = 20


def near_chance_threshold(num_classes: int) -> float:
    chance = 1 / num_classes
    return round(chance + min(chance / 2, (1 - chance) / 3), 9)   # 0.15, not 0.15000000000000002


def top1_check(results: list, num_classes: int) -> dict:
    """Top-1 of board and host over the labelled images, and the verdict on the board's:
    "ok", "near-chance", "too-few-labels" (fewer than MIN_LABELLED) or "no-labels"."""
    lab = [r for r in results if r.get("label") is not None]
    n = len(lab)
    out = {"labelled": n,
           "accuracy_board": sum(r["top1_board"] == r["label"] for r in lab) / n if n else None,
           "accuracy_host": sum(r["top1_host"] == r["label"] for r in lab) / n if n else None}
    thr = near_chance_threshold(num_classes)
    if not n:
        verdict = "no-labels"
    elif n < MIN_LABELLED:
        verdict = "too-few-labels"
    else:
        verdict = "near-chance" if out["accuracy_board"] < thr else "ok"
    out["top1_check"] = {"verdict": verdict, "chance": 1 / num_classes, "threshold": thr,
                         "min_labelled": MIN_LABELLED}
    return out


def top1_warning(report: dict) -> str | None:
    """The warning printed when the board's top-1 is near chance, else None."""
    s = report.get("summary", {})
    c = s.get("top1_check", {})
    if c.get("verdict") != "near-chance":
        return None
    return (f"warning: top-1 on the board is {100 * s['accuracy_board']:.1f}% over {s['labelled']} "
            f"labelled images, near chance ({100 * c['chance']:.1f}% for "
            f"{report['model']['config']['num_classes']} classes; below {100 * c['threshold']:.1f}% "
            "counts as near chance): are these the model's images and classes "
            f"({_images_words(report['images'])}), and is the model trained?")


def _images_words(images: dict) -> str:
    if images.get("source") == "images-from":
        return f"--images-from {images.get('folder')}"
    return f"data set {images.get('dataset')}, classes matched {images.get('classes_matched')}"


def energy_section(report: dict, board, cfg, power_w: float | None) -> dict:
    from .. import energy

    onchip = board.flash if board.kind == "mcu" and board.flash else energy.DEFAULT_ONCHIP
    ana = energy.compare(cfg, onchip_bytes=onchip)
    out = {"analytical": {
        "model": ana["model"], "source": ana["source"], "constants_pj": ana["constants_pj"],
        "assumptions": ana["assumptions"], "onchip_bytes": onchip,
        "butterfly_j": ana["butterfly"]["energy_pj"]["total"] * 1e-12,
        "moe_fp32_j": ana["moe_fp32"]["energy_pj"]["total"] * 1e-12,
        "moe_int8_j": ana["moe_int8"]["energy_pj"]["total"] * 1e-12,
        "butterfly_pj_by_cause": ana["butterfly"]["energy_pj"],
        "saving_vs_moe_fp32": ana["saving_vs_moe_fp32"], "saving_vs_moe_int8": ana["saving_vs_moe_int8"],
        "ops": ana["butterfly"]["ops"]}}
    s = report.get("summary", {})
    src = board.power_source("active")
    watts = power_w if power_w is not None else src["watts"]
    m = {"method": "measured board time (ticks_us around classify_frame) x active power",
         "power_w": watts,
         "power_source": "--power-w (given on the command line)" if power_w is not None else src}
    if watts is None:
        m["note"] = (f"no power figure for board {board.name}: measured energy not computed "
                     "(pass --power-w W)")
    elif s.get("latency_ms"):
        m["energy_per_inference_j"] = s["latency_ms"]["mean"] / 1000 * watts
        m["energy_per_inference_j_median"] = s["latency_ms"]["median"] / 1000 * watts
        m["ratio_to_analytical"] = m["energy_per_inference_j"] / out["analytical"]["butterfly_j"]
        m["note"] = ("the measured figure includes the MicroPython interpreter, the whole board's "
                     "draw and everything the analytical floor leaves out; the ratio shows that overhead")
    out["measured"] = m
    return out


# Below this many images the latency distribution is a strip of dots (one per image): a
# histogram of a handful of values is one or two blocks that hide them.
STRIP_BELOW = 20


def plot_report(report: dict, path):
    """The PNG (returns the figure): latency per image, the latency distribution, and the
    energy per image two ways on separate axes (measured: time x board power; analytical:
    the op-count floor), with a line under them saying why the two differ so much."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.6))
    _plot_latency(axes[0, 0], report)
    _plot_distribution(axes[0, 1], report)
    _plot_measured_energy(axes[1, 0], report)
    _plot_analytical_energy(axes[1, 1], report)
    b = report.get("board", {})
    fig.suptitle(f"butterflyvit harness: {b.get('name', '?')} on {report.get('port')}, "
                 f"{Path(report['model']['path']).name}, {_images_title(report)}, "
                 f"status {report.get('status')}", fontsize=10)
    explanation = energy_explanation(report.get("energy", {}))
    fig.tight_layout(rect=(0, 0.07 if explanation else 0, 1, 0.97))
    if explanation:
        fig.text(0.01, 0.01, explanation, fontsize=8, va="bottom", wrap=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return fig


def energy_explanation(e: dict) -> str | None:
    """Why measured and analytical energy differ by orders of magnitude: what each counts."""
    m, a = e.get("measured", {}), e.get("analytical")
    if not m.get("energy_per_inference_j") or not a:
        return None
    return (f"Why measured is {m['ratio_to_analytical']:,.0f}x analytical: measured = the whole board's "
            f"draw ({m['power_w']:g} W) for the forward's ticks_us time, so it includes the MicroPython "
            "interpreter, control flow, address arithmetic, clocks and idle peripherals.\nAnalytical = only "
            "the model's arithmetic and weight/activation reads, priced per operation at 45 nm (Horowitz, "
            "ISSCC 2014): the floor that dedicated hardware would approach, and the fair basis for comparing "
            "ButterflyViT with a standard MoE.")


def _num(v: float) -> str:
    """A value for a label: 3 significant digits, thousands separated, no exponent."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _images_title(report) -> str:
    im = report.get("images", {})
    if im.get("source") == "images-from":
        return f"images from {Path(im.get('folder', '?')).name}/"
    return f"{im.get('dataset', '?')} test images"


def _plot_latency(ax, report):
    """ms per image over the images, those that differ from the host (or did once) marked."""
    from matplotlib.ticker import MaxNLocator

    res = report["results"]
    s = report.get("summary", {})
    ax.plot([r["index"] for r in res], [r["us"] / 1000 for r in res], ".-", color="tab:blue",
            label="board latency")
    bad = [(r["index"], r["us"] / 1000) for r in res if not r["match"]]
    if bad:
        ax.plot(*zip(*bad), "x", color="red", ms=10, label="logits differ from host")
    again = [(r["index"], r["us"] / 1000) for r in res if r.get("rerun") and r["match"]]
    if again:
        ax.plot(*zip(*again), "o", mfc="none", color="tab:orange", ms=9, label="differed once, exact on re-run")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("test image (index)")
    ax.set_ylabel("latency (ms per image, board ticks_us)")
    ax.set_title(f"bit-exact {s.get('bit_exact', 0)}/{len(res)} ({100 * s.get('agreement', 0):.0f}%); "
                 + _top1_words(s))
    ax.legend(loc="best", fontsize=8)


def _top1_words(s: dict) -> str:
    if s.get("accuracy_board") is None:
        return "no labels: no top-1"
    c = s.get("top1_check", {})
    words = f"top-1 {100 * s['accuracy_board']:.0f}% of {s['labelled']}"
    return words + {"near-chance": f" (NEAR CHANCE: {100 * c['chance']:.0f}%)",
                    "too-few-labels": " (too few to judge)"}.get(c.get("verdict"), "")


def _plot_distribution(ax, report):
    """The latency distribution: one dot per image below STRIP_BELOW images, else a
    histogram with numpy's 'auto' bins; the median marked."""
    from matplotlib.ticker import MaxNLocator

    ms = np.array([r["us"] / 1000 for r in report["results"]])
    if len(ms) and len(ms) < STRIP_BELOW:
        jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(ms))   # fixed: same plot each time
        ax.plot(ms, jitter, "o", color="tab:blue", alpha=0.7, label=f"one image each ({len(ms)})")
        ax.set_ylim(-1, 1)
        ax.set_yticks([])
        ax.set_title(f"latency of each image ({len(ms)} images: too few for a histogram)")
    elif len(ms):
        bins = np.histogram_bin_edges(ms, bins="auto")
        ax.hist(ms, bins=bins[:: max(1, (len(bins) - 1) // 30)] if len(bins) > 31 else bins, color="tab:blue")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("images")
        ax.set_title(f"latency histogram ({len(ms)} images)")
    lat = report.get("summary", {}).get("latency_ms", {})
    if lat:
        ax.axvline(lat["median"], color="k", ls="--", label=f"median {lat['median']:.1f} ms")
        ax.legend(fontsize=8)
    ax.set_xlabel("latency (ms per image)")


def _plot_measured_energy(ax, report):
    """Measured: mean board time x the board's active power, in mJ per image."""
    m = report.get("energy", {}).get("measured", {})
    ax.set_title("measured energy: board time x board power")
    ax.set_ylabel("mJ per image")
    if not m.get("energy_per_inference_j"):
        ax.text(0.5, 0.5, m.get("note") or "no energy (no image classified)", ha="center", va="center",
                wrap=True, fontsize=9, transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    mj = m["energy_per_inference_j"] * 1e3
    ps = m.get("power_source")
    kind = "--power-w" if isinstance(ps, str) else (ps or {}).get("kind", "?")
    ax.bar([0], [mj], color="tab:orange", width=0.5)
    mean_ms = report.get("summary", {}).get("latency_ms", {}).get("mean", 0.0)
    ax.set_xticks([0], [f"mean latency {_num(mean_ms)} ms x {m['power_w']:g} W (power: {kind})"], fontsize=9)
    ax.set_xlim(-1, 1)
    ax.annotate(f"{_num(mj)} mJ", (0, mj), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=9)
    ax.set_ylim(0, mj * 1.2)


def _plot_analytical_energy(ax, report):
    """Analytical (op counts x 45 nm energies), in uJ per image, log scale: ButterflyViT and
    the standard MoEs of the same shape, each labelled with its value and its ratio."""
    a = report.get("energy", {}).get("analytical")
    ax.set_title("analytical energy: op counts x 45 nm energy per op")
    ax.set_ylabel("\u00b5J per image (log scale)")
    if not a:
        ax.set_xticks([])
        return
    bars = [("ButterflyViT", a["butterfly_j"], "tab:green"),
            ("standard MoE int8", a["moe_int8_j"], "tab:gray"),
            ("standard MoE fp32", a["moe_fp32_j"], "tab:red")]
    uj = [v * 1e6 for _, v, _ in bars]
    ax.bar(range(3), uj, color=[c for _, _, c in bars], width=0.6)
    ax.set_xticks(range(3), [n for n, _, _ in bars], fontsize=9)
    ax.set_yscale("log")
    ax.set_ylim(min(uj) / 3, max(uj) * 8)
    for i, v in enumerate(uj):
        ratio = "" if i == 0 else f"\n{v / uj[0]:,.0f}x ButterflyViT"
        ax.annotate(f"{_num(v)} \u00b5J{ratio}", (i, v), xytext=(0, 3), textcoords="offset points",
                    ha="center", fontsize=8)


def format_summary(report: dict) -> str:
    s = report.get("summary", {})
    lines = [f"board {report['board']['name']} on {report['port']} "
             f"({report.get('board_info', {}).get('implementation', '?')} "
             f"{report.get('board_info', {}).get('version', '')}, "
             f"backend {report.get('setup', {}).get('backend', '?')})"]
    if not s.get("done"):
        lines.append("no image classified")
        return "\n".join(lines)
    lat = s["latency_ms"]
    lines += [
        f"bit-exact: {s['bit_exact']}/{s['done']} images ({100 * s['agreement']:.1f}%)"
        + (f"; differ: {s['mismatched_images'][:10]}" if s["mismatched_images"] else ""),
    ]
    if s.get("rerun_images"):
        again = [i for i in s["rerun_images"] if i not in s["mismatched_images"]]
        lines.append(f"re-run after differing from the host: {s['rerun_images'][:10]}"
                     + (f" (exact on the re-run: {again[:10]})" if again else " (differed again)"))
    if s.get("lines_resent"):
        lines.append(f"serial: {s['lines_resent']} result line(s) failed their checksum and were sent again")
    lines += [
        _top1_line(s),
        f"latency: mean {lat['mean']:.1f} ms, median {lat['median']:.1f}, p90 {lat['p90']:.1f}, "
        f"min {lat['min']:.1f}, max {lat['max']:.1f} (first image {lat['first']:.1f})",
        f"heap: peak {s['heap_peak_max'] / 1024:.1f} KB live (collected) of {report['setup']['heap_total'] / 1024:.0f} KB "
        f"(buffers {report['setup']['ram_buffers'] / 1024:.1f} KB)",
    ]
    return "\n".join(lines + _energy_lines(report.get("energy", {})))


def _top1_line(s: dict) -> str:
    if s.get("accuracy_board") is None:
        return "top-1: no labelled image (unlabelled images are compared with the host only)"
    c = s["top1_check"]
    line = (f"top-1: board {100 * s['accuracy_board']:.1f}%, host {100 * s['accuracy_host']:.1f}% "
            f"(labels of {s['labelled']} of the {s['done']} images; chance {100 * c['chance']:.1f}%)")
    if c["verdict"] == "too-few-labels":
        line += f"; fewer than {c['min_labelled']} labelled images: no near-chance check"
    return line


def _energy_lines(e: dict) -> list:
    lines = []
    m, a = e.get("measured", {}), e.get("analytical", {})
    if m.get("energy_per_inference_j"):
        ps = m["power_source"]
        kind = ps if isinstance(ps, str) else f"{ps.get('kind')}: {ps.get('source', '')[:80]}"
        lines.append(f"energy, measured: {m['energy_per_inference_j'] * 1e3:.3f} mJ per image "
                     f"(mean time x {m['power_w'] * 1e3:.0f} mW; power {kind})")
    elif m:
        lines.append(f"energy, measured: {m.get('note')}")
    if a:
        lines.append(f"energy, analytical: ButterflyViT {a['butterfly_j'] * 1e6:.2f} uJ; standard MoE "
                     f"fp32 {a['moe_fp32_j'] * 1e6:,.1f} uJ ({100 * a['saving_vs_moe_fp32']:.1f}% saved), "
                     f"int8 {a['moe_int8_j'] * 1e6:,.1f} uJ ({100 * a['saving_vs_moe_int8']:.1f}% saved); "
                     "Horowitz ISSCC 2014 45 nm constants (in the report)")
    return lines

