"""One harness run: the board's integer outputs, timings and heap against the host reference.

    report = run_harness(HarnessOptions(port="/dev/ttyACM0", board="rp2040-pico",
                                        model="models/pico-fmnist.bvit", images=50))

Steps: read the model (host reference: IntModel) and N Fashion-MNIST test images; connect
to the board's raw REPL; copy the device code and the model where the board's copies are
missing or differ (by hash); load the classifier on the board; send each image as a raw
frame and read back one line (integer logits, ticks_us of the forward, heap; asked for again
when its CRC-32 fails); compare with the host's logits bit for bit (an image that differs is
run once more before it counts). After every image the report (JSON) is rewritten, so a board
that dies leaves a partial report and `--resume` continues where it stopped. At the end:
latency statistics, energy two ways (measured time x the board profile's power, and the
analytical model of butterflyvit.energy) and a PNG plot.
"""

from __future__ import annotations

import base64
import datetime as _dt
import gzip
import hashlib
import json
import os
import statistics
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .transport import BoardDisconnected, BoardException, HarnessError, RawRepl

REPO = Path(__file__).resolve().parents[3]
DEVICE_DIR = REPO / "device"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
REPORT_VERSION = 1


@dataclass
class HarnessOptions:
    port: str
    board: str
    model: str
    images: int = 20
    report: str = "harness-report.json"
    plot: str | None = None              # default: the report's name with .png
    resume: bool = False
    first: int = 0                       # index of the first test image
    data: str | None = None              # Fashion-MNIST folder (IDX files)
    baud: int = 115200
    timeout: float = 60.0                # seconds the board may stay silent per step
    remote_dir: str = ""                 # folder on the board for bvit/, classify.py, the model
    remote_model: str | None = None      # the model's name on the board (default: its file name)
    transfer: str = "repl"               # repl | ampy | drive | none
    drive: str | None = None             # a mounted board drive (CircuitPython CIRCUITPY)
    device_dir: str | None = None
    power_w: float | None = None         # overrides the profile's active power
    backend: str = "auto"
    weight_buffer: int = 4096            # the classifier's weight buffer on the board
    mpy: bool = False                    # copy the package precompiled with mpy-cross
    progress: bool = True
    log: object = field(default=None, repr=False)   # a callable(str) for messages (default: stderr)


# ------------------------------------------------------------------ images

def _read_idx(path: Path) -> np.ndarray:
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(data) < 4 or data[0] or data[1] or data[2] != 0x08:
        raise HarnessError(f"{path}: not a uint8 IDX file")
    nd = data[3]
    dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * nd).reshape(dims)


def load_test_images(first: int, count: int, folder=None):
    """Fashion-MNIST test images first..first+count-1 (uint8 28x28) and their labels."""
    root = Path(folder) if folder else FASHION_MNIST_DIR

    def find(stem):
        for name in (stem + ".gz", stem):
            if (root / name).is_file():
                return root / name
        raise HarnessError(f"{stem}[.gz] not found in {root} (Debian: apt install dataset-fashion-mnist, "
                           "or --data FOLDER)")

    x = _read_idx(find("t10k-images-idx3-ubyte"))
    y = _read_idx(find("t10k-labels-idx1-ubyte"))
    if first < 0 or first + count > len(x):
        raise HarnessError(f"images {first}..{first + count - 1} asked for; the test set has {len(x)}")
    return x[first:first + count], y[first:first + count]


def frame_for(image: np.ndarray, channels: int):
    """A 28x28 grey image as the camera frame the model takes: GRAYSCALE for 1 channel,
    big-endian RGB565 (grey in all three) for 3 channels."""
    h, w = image.shape
    if channels == 1:
        return image.tobytes(), w, h, "GRAYSCALE"
    from ..intmodel import rgb_to_rgb565

    return rgb_to_rgb565(np.stack([image] * 3, axis=-1)), w, h, "RGB565"


# ------------------------------------------------------------------ the board side

AGENT = """
import sys, gc
_root = {root!r}
if _root not in sys.path:
    sys.path.insert(0, _root)
from binascii import a2b_base64 as _a2b
from bvit.model import Classifier
from bvit.timing import ticks_us, ticks_diff, HeapProbe
_hp = HeapProbe(False)
def _bvload():
    s = {model!r}
    if s.startswith('module:'):          # a model frozen into the firmware (bytes NAME.MODEL)
        s = __import__(s[7:]).MODEL
    return Classifier(s, backend={backend!r}, weight_buffer={weight_buffer!r}, probe=_hp)
gc.collect()
try:
    _bvnet = _bvload()
except MemoryError:
    # what the failed attempt (or an earlier run) left may be garbage now: free it, try once more
    print('BVIT-RETRY')
    gc.collect()
    try:
        _bvnet = _bvload()
    except MemoryError as e:
        raise MemoryError('%s; again after freeing and collecting the heap' % e)
gc.collect()
from bvit.frames import Frame           # after the classifier: its buffers want the heap in one piece
try:
    from binascii import crc32 as _crc
except ImportError:                     # a port without it: the package's pure-Python CRC-32
    from bvit.modelfile import crc32_py as _crc
import time as _t
print('BVIT-READY', repr((_bvnet.ram, _hp.total, gc.mem_alloc(), gc.mem_free(),
      getattr(_bvnet.k, '__name__', str(_bvnet.k)), 'us' if hasattr(_t, 'ticks_us') else 'ms')))
_t = None
_bvline = ''
def _bv(i, b, w, h, f):
    global _bvline
    fr = Frame(_a2b(b), w, h, f)
    b = None
    gc.collect()
    a0 = gc.mem_alloc()
    _hp.peak = a0
    t = ticks_us()
    lg = _bvnet.classify_frame(fr)
    t = ticks_diff(ticks_us(), t)
    p = '%d %d %d %d %s' % (i, t, _hp.peak, a0, ' '.join([str(v) for v in lg]))
    _bvline = 'BVIT %s %08x' % (p, _crc(p.encode()) & 0xFFFFFFFF)
    print(_bvline)
def _bvr():
    print(_bvline)
"""

# How often a result line that fails its checksum is asked for again before giving up.
LINE_TRIES = 4


# Forget what an earlier run left on the board (the REPL keeps its globals and modules): the
# classifier's buffers, and the bvit modules, so that files copied now are imported afresh.
CLEANUP = """
import sys, gc
_g = globals()
if '_bvnet' in _g:
    try:
        _bvnet.close()
    except Exception:
        pass
for _n in ('_bvnet', '_bv', '_bvr', '_bvload', '_bvline', '_hp', '_a2b', '_crc', '_src', '_root',
           'Classifier', 'Frame', 'ticks_us', 'ticks_diff', 'HeapProbe'):
    if _n in _g:
        del _g[_n]
for _n in [k for k in sys.modules if k == 'bvit' or k.startswith('bvit.')]:
    del sys.modules[_n]
del _g
gc.collect()
"""


def parse_result(text: str, index: int, classes: int):
    """The result dict from the board's answer for image `index`, or (None, why) when no
    line in it passes its CRC-32 (damaged on the wire, or cut short): then ask again."""
    import zlib

    why = "no result line"
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("BVIT "):
            continue
        payload, _, crc = line[5:].rpartition(" ")
        if f"{zlib.crc32(payload.encode()):08x}" != crc:
            why = f"checksum mismatch in {line[:120]!r}"
            continue
        try:
            vals = [int(v) for v in payload.split()]
        except ValueError:
            vals = []
        if len(vals) < 5:
            raise HarnessError(f"the board's result line is not one the harness knows: {line[:200]!r}")
        i, us, peak, base, logits = vals[0], vals[1], vals[2], vals[3], vals[4:]
        if i != index or len(logits) != classes:
            raise HarnessError(f"the board answered for image {i} with {len(logits)} logits, "
                               f"image {index} with {classes} expected: {line[:200]!r}")
        return {"us": us, "heap_peak": peak, "heap_before": base, "logits": logits}, None
    return None, why


def classify_on_board(repl, index, call, classes, timeout):
    """Run `call` (a `_bv(...)` line) on the board and read its result line; a line that
    fails its checksum is asked for again (`_bvr()` prints it again, the forward is not
    re-run), LINE_TRIES times at most. Returns (result, resends)."""
    doing = f"classifying image {index}"
    text = repl.exec(call, timeout, doing=doing)
    for resends in range(LINE_TRIES):
        r, why = parse_result(text, index, classes)
        if r is not None:
            return r, resends
        if resends + 1 < LINE_TRIES:
            text = repl.exec("_bvr()\n", timeout, doing=f"asking again for the result of image {index}")
    raise HarnessError(f"the board's result line for image {index} failed its check {LINE_TRIES} times "
                       f"(last: {why}; the board said {text[-200:]!r}): the serial line damages data - "
                       "check the cable and its length, or try a lower --baud")


# ------------------------------------------------------------------ report

def _now():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
        "accuracy_board": sum(r["top1_board"] == r["label"] for r in res) / n,
        "accuracy_host": sum(r["top1_host"] == r["label"] for r in res) / n,
        "latency_ms": {"mean": statistics.fmean(ms), "median": statistics.median(ms),
                       "min": min(ms), "max": max(ms),
                       "stdev": statistics.stdev(ms) if n > 1 else 0.0,
                       "p90": float(np.percentile(ms, 90)),
                       "first": ms[0], "mean_after_first": statistics.fmean(ms[1:]) if n > 1 else ms[0]},
        "heap_peak_max": max(r["heap_peak"] for r in res),
        "heap_forward_max": max(r["heap_peak"] - r["heap_before"] for r in res),
    })
    return out


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["results"]
    s = report.get("summary", {})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    idx = [r["index"] for r in res]
    ms = [r["us"] / 1000 for r in res]
    ax.plot(idx, ms, ".-", color="tab:blue", label="board latency")
    bad = [(r["index"], r["us"] / 1000) for r in res if not r["match"]]
    if bad:
        ax.plot(*zip(*bad), "x", color="red", ms=10, label="logits differ from host")
    again = [(r["index"], r["us"] / 1000) for r in res if r.get("rerun") and r["match"]]
    if again:
        ax.plot(*zip(*again), "o", mfc="none", color="tab:orange", ms=9, label="differed once, exact on re-run")
    ax.set_xlabel("test image")
    ax.set_ylabel("ms per image (ticks_us)")
    exact = s.get("bit_exact", 0)
    ax.set_title(f"bit-exact {exact}/{len(res)} ({100 * s.get('agreement', 0):.0f}%)")
    ax.legend(loc="best", fontsize=8)
    ax = axes[1]
    if ms:
        ax.hist(ms, bins=min(30, max(5, len(ms) // 2)), color="tab:blue")
    lat = s.get("latency_ms", {})
    if lat:
        ax.axvline(lat["median"], color="k", ls="--", label=f"median {lat['median']:.1f} ms")
        ax.legend(fontsize=8)
    ax.set_xlabel("ms per image")
    ax.set_ylabel("images")
    ax.set_title("latency")
    ax = axes[2]
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
    b = report.get("board", {})
    fig.suptitle(f"butterflyvit harness: {b.get('name', '?')} on {report.get('port')}, "
                 f"{Path(report['model']['path']).name}, status {report.get('status')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


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
    e = report.get("energy", {})
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
    return "\n".join(lines)


# ------------------------------------------------------------------ the run

def run_harness(o: HarnessOptions) -> dict:
    """Run the harness; returns the report (also written to o.report). Raises HarnessError
    after writing a partial report when the board fails."""
    from ..boards import get_board
    from ..intmodel import IntModel

    log = o.log or (lambda msg: print(msg, file=sys.stderr))
    board = get_board(o.board)
    model_path = Path(o.model)
    if not model_path.is_file():
        raise HarnessError(f"model file {model_path} not found")
    ref = IntModel.load(model_path)
    cfg = ref.cfg
    model_bytes = model_path.read_bytes()
    model_sha = hashlib.sha256(model_bytes).hexdigest()
    report_path = Path(o.report)
    plot_path = Path(o.plot) if o.plot else report_path.with_suffix(".png")
    remote_model = o.remote_model or model_path.name
    root = o.remote_dir.rstrip("/")
    frozen_model = remote_model.startswith("module:")
    remote_model_path = remote_model if frozen_model or not root else f"{root}/{remote_model}"

    images_spec = {"dataset": "fashion-mnist", "split": "test", "folder": str(o.data or FASHION_MNIST_DIR),
                   "first": o.first, "count": o.images}
    report = None
    resumed = 0
    if o.resume and report_path.is_file():
        try:
            report = json.loads(report_path.read_text())
        except ValueError as exc:
            raise HarnessError(f"cannot resume: {report_path} is not a harness report ({exc})") from None
        old = report.get("images", {})
        if report.get("model", {}).get("sha256") != model_sha:
            raise HarnessError(f"cannot resume: {report_path} was made with another model "
                               f"({report.get('model', {}).get('path')})")
        if report.get("board", {}).get("name") != board.name or old.get("first") != o.first:
            raise HarnessError(f"cannot resume: {report_path} is for board "
                               f"{report.get('board', {}).get('name')}, first image {old.get('first')}")
        resumed = report["resumed"] = report.get("resumed", 0) + 1
    elif o.resume:
        log(f"no report {report_path} to resume: starting afresh")
    if report is None:
        report = {"tool": "butterflyvit harness", "report_version": REPORT_VERSION,
                  "status": "running", "error": None, "started": _now(),
                  "port": o.port,
                  "board": {"name": board.name, "title": board.title, "kind": board.kind,
                            "heap": board.heap, "flash": board.flash, "clock_hz": board.clock_hz,
                            "power": {s: board.power_source(s) for s in ("active", "idle", "sleep")}},
                  "model": {"path": str(model_path), "sha256": model_sha, "file_size": len(model_bytes),
                            "config": cfg.to_dict(), "remote_path": remote_model_path},
                  "images": images_spec, "results": []}
    report["port"] = o.port
    report["status"] = "running"
    report["error"] = None
    report["updated"] = _now()
    done = {r["index"] for r in report["results"]}
    # A resumed report keeps every image it holds: the run covers at least those.
    count = max([o.images] + [i - o.first + 1 for i in done])
    report["images"]["count"] = count
    todo = [o.first + j for j in range(count) if o.first + j not in done]
    if resumed:
        log(f"resuming {report_path}: {len(done)} image(s) done, asked for {o.images}: "
            + (f"{len(todo)} to go" if todo else "nothing to do"))
    if not todo:
        report["status"] = "complete"
        return _finish(report, report_path, plot_path, board, cfg, o.power_w)

    x, y = load_test_images(o.first, count, o.data)

    def save():
        report["updated"] = _now()
        report["summary"] = summarise(report)
        _write_json(report_path, report)

    repl = None
    stage = "connecting"
    current = None
    try:
        repl = RawRepl.connect(o.port, o.baud, timeout=min(o.timeout, 20))
        stage = "reading the board's facts"
        info = repl.info(o.timeout)
        report["board_info"] = info
        log(f"connected to {info['implementation']} {info['version']} on {o.port} "
            f"({info['machine']}, heap {info['heap_total'] // 1024} KB)")
        repl.exec(CLEANUP, o.timeout, doing="clearing what an earlier run left on the board")
        if info["implementation"] == "circuitpython":
            repl.exec("try:\n import supervisor\n supervisor.runtime.autoreload = False\n"
                      "except Exception:\n pass\n", o.timeout, doing="turning off auto-reload")

        stage = "copying the device code and the model"
        from . import files as F

        dev = Path(o.device_dir) if o.device_dir else DEVICE_DIR
        want = F.device_files(dev, root)
        stale = []
        if o.mpy:
            import tempfile

            tmp = tempfile.TemporaryDirectory(prefix="bvit-mpy-")
            compiled = F.compile_mpy(want, info.get("mpy"), Path(tmp.name))
            # a .py beside its .mpy would be imported first: remove the board's .py copies
            stale = [r for (_, r), (_, c) in zip(want, compiled) if r != c]
            want = compiled
        else:
            stale = [r[:-3] + ".mpy" for _, r in want if r.endswith(".py") and "/bvit/" in "/" + r]
        want += [] if frozen_model else [(model_bytes, remote_model_path)]
        if o.transfer == "repl":
            bar = _bytes_bar(o.progress)
            actions = F.sync(repl, want, timeout=o.timeout, progress=bar.update if bar else None)
            if bar:
                bar.close()
        elif o.transfer == "drive":
            if not o.drive:
                raise HarnessError("--transfer drive needs --drive PATH (the mounted board drive)")
            actions = F.copy_to_drive(want, Path(o.drive))
        elif o.transfer == "ampy":
            repl.close()
            repl = None
            actions = F.ampy_put(o.port, want, o.baud)
            repl = RawRepl.connect(o.port, o.baud, timeout=min(o.timeout, 20))
        elif o.transfer == "none":
            actions = []
        else:
            raise HarnessError(f"unknown transfer {o.transfer!r} (repl, ampy, drive or none)")
        if o.transfer == "repl" and stale:
            gone = F.remove(repl, stale, o.timeout)
            if gone:
                log(f"removed stale copies on the board: {', '.join(gone)}")
        copied = [a for a in actions if a["action"] == "copied"]
        report.setdefault("transfers", []).append({"at": _now(), "how": o.transfer, "files": actions})
        log(f"device code and model: {len(copied)} file(s) copied "
            f"({sum(a['bytes'] for a in copied):,} bytes), {len(actions) - len(copied)} already the same")
        if o.transfer == "ampy":          # check what ampy wrote, by the board's own hashes
            hashes = F.remote_hashes(repl, [a["path"] for a in actions], o.timeout)
            bad = [a["path"] for a in actions if hashes.get(a["path"]) is None or
                   (hashes[a["path"]].startswith("sha256:") and hashes[a["path"]] != a["hash"])]
            if bad:
                raise HarnessError(f"files on the board differ from the host's after copying: {bad}")

        stage = "loading the model on the board"
        code = AGENT.format(root=root, model=remote_model_path, backend=o.backend,
                            weight_buffer=o.weight_buffer)
        out = repl.exec(code, max(o.timeout, 120), doing=stage)
        ready = [ln for ln in out.splitlines() if ln.startswith("BVIT-READY")]
        if not ready:
            raise HarnessError(f"the board did not report the model loaded: {out[-300:]!r}")
        import ast

        ram, heap_total, alloc, free, backend, timer = ast.literal_eval(
            ready[-1][len("BVIT-READY"):].strip())
        report["setup"] = {"ram_buffers": ram, "heap_total": heap_total, "heap_after_load": alloc,
                           "heap_free_after_load": free, "backend": backend,
                           "timer": "time.ticks_us" if timer == "us" else
                           "millisecond ticks (no time.ticks_us on this port)"}
        if "BVIT-RETRY" in out:
            report["setup"]["load_retried"] = True
            log("the board ran out of heap loading the model; it loaded after freeing and collecting")
        log(f"model loaded on the board: buffers {ram / 1024:.1f} KB, heap in use {alloc / 1024:.1f} KB "
            f"of {heap_total / 1024:.0f} KB, backend {backend}")
        save()

        stage = "classifying"
        bar = _image_bar(o.progress, len(todo), len(done), count)
        classes = cfg.num_classes
        for idx in todo:
            current = idx
            img = x[idx - o.first]
            buf, w, h, fmt = frame_for(img, cfg.in_channels)
            host = ref.forward_frame(buf, w, h, fmt)
            hl = [int(v) for v in host.logits]
            call = f"_bv({idx}, {base64.b64encode(buf)!r}, {w}, {h}, {fmt!r})\n"
            r, resends = classify_on_board(repl, idx, call, classes, o.timeout)
            entry = {"index": idx, "label": int(y[idx - o.first]), "format": fmt, "width": w, "height": h}
            if r["logits"] != hl:
                # a checked line that differs from the host: run the image once more before it
                # counts, so that a one-off fault (a glitch, a brown-out) is told from a real one
                entry["rerun"] = True
                entry["first_try"] = {"logits_board": r["logits"], "us": r["us"]}
                r, more = classify_on_board(repl, idx, call, classes, o.timeout)
                resends += more
            top_b = int(np.argmax(np.asarray(r["logits"])))   # first maximum, as intops.topk
            top_h = host.top(1)[0][0]
            entry.update({"logits_board": r["logits"], "logits_host": hl, "match": r["logits"] == hl,
                          "top1_board": top_b, "top1_host": top_h, "us": r["us"],
                          "heap_peak": r["heap_peak"], "heap_before": r["heap_before"]})
            if resends:
                entry["line_resends"] = resends
            report["results"].append(entry)
            save()
            if bar:
                s = report["summary"]
                bar.set_postfix_str(f"exact {s['bit_exact']}/{s['done']}, {r['us'] / 1000:.0f} ms")
                bar.update(1)
        if bar:
            bar.close()
        current = None
        report["results"].sort(key=lambda r: r["index"])
        report["status"] = "complete"
    except (HarnessError, OSError) as exc:
        what = f"{stage}" + (f" (image {current})" if current is not None else "")
        if isinstance(exc, BoardException) and exc.traceback:
            detail = f"the board raised {exc.traceback.splitlines()[-1]}\n{exc.traceback}"
        else:
            detail = str(exc)
        report["status"] = "failed"
        report["error"] = {"stage": what, "message": detail, "type": type(exc).__name__,
                           "disconnected": isinstance(exc, BoardDisconnected)}
        report["summary"] = summarise(report)
        report["energy"] = energy_section(report, board, cfg, o.power_w)
        report["updated"] = _now()
        _write_json(report_path, report)
        n = len(report["results"])
        head = f"harness failed while {what}: {detail}"
        if "MemoryError" in detail:
            head += "\n" + memory_advice(o, board, detail)
        msg = (f"{head}\n"
               f"partial report kept: {report_path} ({n} of {report['images']['count']} images done); "
               f"run again with --resume to continue")
        raise HarnessError(msg) from None
    finally:
        if repl is not None:
            if report.get("status") == "complete":
                try:                      # give the board its heap back
                    repl.exec(CLEANUP, o.timeout, doing="clearing up on the board")
                except HarnessError:
                    pass
            repl.close()

    return _finish(report, report_path, plot_path, board, cfg, o.power_w)


def _finish(report, report_path, plot_path, board, cfg, power_w) -> dict:
    """The finished report: summary, energy, written with its plot."""
    report["results"].sort(key=lambda r: r["index"])
    report["summary"] = summarise(report)
    report["energy"] = energy_section(report, board, cfg, power_w)
    report["updated"] = _now()
    report["plot"] = str(plot_path)
    _write_json(report_path, report)
    plot_report(report, plot_path)
    return report


def memory_advice(o: HarnessOptions, board, detail: str) -> str:
    """What to do when the board ran out of heap. Loading the model, the agent has already
    freed and collected once and tried again; what is left then is the heap's own state: a
    board that ran earlier harness runs since its reset keeps their leftovers scattered
    through its heap (strings interned for good, modules), and the model's buffers want long
    free runs. Only a reset clears that."""
    if board.kind == "host":
        reset = "restart its micropython process: the unix port has no reset"
    else:
        reset = f"mpremote connect {o.port} reset, or press its reset button"
    reset = (f"reset the board ({reset}) and run the same command again with --resume: what "
             "earlier runs left since its last reset fragments the heap")
    tips = ([] if o.mpy else ["--mpy (the package precompiled, nothing compiled on the board)"])
    tips += [f"--weight-buffer {o.weight_buffer // 2}"] if o.weight_buffer > 1024 else []
    tips += ["firmware with the package frozen (boards/<name>/manifest.py)"]
    tips = "try " + (", ".join(tips[:-1]) + " or " if len(tips) > 1 else "") + tips[-1]
    again = " (also after freeing and collecting it)" if "after freeing and collecting" in detail else ""
    if o.mpy:       # nothing left to compile on the board: the heap's state is the suspect
        return f"the board ran out of heap{again}: {reset}. If a freshly reset board runs out too, {tips}"
    return f"the board ran out of heap{again}: {tips}. On a board used since its last reset, {reset}"


def _image_bar(enabled, total, initial, asked):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=asked, initial=initial, unit="img", desc="images", file=sys.stderr,
                dynamic_ncols=True, disable=None)


class _BytesBar:
    """One progress bar over all the bytes copied to the board."""

    def __init__(self):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None

    def update(self, name, sent, total):
        if self.bar is None:
            self.bar = self._tqdm(total=total, unit="B", unit_scale=True, desc="copy to board",
                                  file=sys.stderr, dynamic_ncols=True, disable=None)
        self.bar.set_postfix_str(name, refresh=False)
        self.bar.n = sent
        self.bar.refresh()

    def close(self):
        if self.bar:
            self.bar.n = self.bar.total
            self.bar.close()


def _bytes_bar(enabled):
    return _BytesBar() if enabled else None


__all__ = ["HarnessOptions", "run_harness", "load_test_images", "frame_for", "summarise",
           "plot_report", "format_summary", "energy_section", "parse_result", "classify_on_board",
           "memory_advice", "AGENT", "CLEANUP", "LINE_TRIES"]
