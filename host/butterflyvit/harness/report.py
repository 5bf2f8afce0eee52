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
    return chance + min(chance / 2, (1 - chance) / 3)


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


def plot_report(report: dict, path) -> None:
    """The PNG: latency per image, the latency histogram, the energy per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    _plot_latency(axes[0], report)
    _plot_histogram(axes[1], report)
    _plot_energy(axes[2], report)
    b = report.get("board", {})
    fig.suptitle(f"butterflyvit harness: {b.get('name', '?')} on {report.get('port')}, "
                 f"{Path(report['model']['path']).name}, status {report.get('status')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_latency(ax, report):
    """ms per image over the images, those that differ from the host (or did once) marked."""
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
    ax.set_xlabel("test image")
    ax.set_ylabel("ms per image (ticks_us)")
    ax.set_title(f"bit-exact {s.get('bit_exact', 0)}/{len(res)} ({100 * s.get('agreement', 0):.0f}%)")
    ax.legend(loc="best", fontsize=8)


def _plot_histogram(ax, report):
    ms = [r["us"] / 1000 for r in report["results"]]
    if ms:
        ax.hist(ms, bins=min(30, max(5, len(ms) // 2)), color="tab:blue")
    lat = report.get("summary", {}).get("latency_ms", {})
    if lat:
        ax.axvline(lat["median"], color="k", ls="--", label=f"median {lat['median']:.1f} ms")
        ax.legend(fontsize=8)
    ax.set_xlabel("ms per image")
    ax.set_ylabel("images")
    ax.set_title("latency")


def _plot_energy(ax, report):
    """Measured and analytical joules per inference, log scale."""
    e = report.get("energy", {})
    labels, vals, colors = [], [], []
    m = e.get("measured", {})
    if m.get("energy_per_inference_j"):
        labels.append("measured\n(time x power)")
        vals.append(m["energy_per_inference_j"])
        colors.append("tab:orange")
    a = e.get("analytical")
    if a:
        for key, lab, col in (("butterfly_j", "ButterflyViT\n(analytical)", "tab:green"),
                              ("moe_int8_j", "std MoE int8\n(analytical)", "tab:gray"),
                              ("moe_fp32_j", "std MoE fp32\n(analytical)", "tab:red")):
            labels.append(lab)
            vals.append(a[key])
            colors.append(col)
    if vals:
        ax.bar(range(len(vals)), vals, color=colors)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_yscale("log")
    ax.set_ylabel("J per inference")
    ax.set_title("energy per inference")


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
        f"top-1: board {100 * s['accuracy_board']:.1f}%, host {100 * s['accuracy_host']:.1f}% "
        f"(labels of the {s['done']} images)",
        f"latency: mean {lat['mean']:.1f} ms, median {lat['median']:.1f}, p90 {lat['p90']:.1f}, "
        f"min {lat['min']:.1f}, max {lat['max']:.1f} (first image {lat['first']:.1f})",
        f"heap: peak {s['heap_peak_max'] / 1024:.1f} KB of {report['setup']['heap_total'] / 1024:.0f} KB "
        f"(buffers {report['setup']['ram_buffers'] / 1024:.1f} KB)",
    ]
    return "\n".join(lines + _energy_lines(report.get("energy", {})))


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

