"""What a board runs, end to end: classify (device/bvit) on real MicroPython firmware built
with the project's C module, timed on an emulated Cortex-M3 (running Thumb-2 code, and
ARMv6-M code as an RP2040 would) and on the unix port.

    .venv/bin/python benchmarks/board_path.py --micropython ~/micropython
        [--images 10] [--backends native,viper] [--ports qemu,qemu-m0plus,unix]
        [--out benchmarks/results/board_path]

For each port, scripts/build_firmware.py builds MicroPython from the checkout with `native/`
as user C module and the device code and the model frozen (or --firmware-dir reuses what an
earlier run built). One board session per port then runs, for each backend, the board agent
(bvit.agent: `Classifier(bvitmodel.MODEL, backend=NAME)`, the frozen model read in place)
over the first N test images (Fashion-MNIST as 28x28 GRAYSCALE frames for a grey model, CIFAR-10
as 32x32 RGB565 frames for a colour one), twice:
- timed: `time.ticks_us` around `classify_frame`. On qemu (mps2-an385, `-icount shift=0`: one
  virtual ns per instruction) that is instructions, exact and the same on every run; on unix
  it is microseconds of wall clock;
- heap: the same images with a `gc.collect()` at each of the forward's probes (block
  boundaries; bvit.timing.HeapProbe(collect=True)): the peak live heap.
Every logit vector of both passes is compared with the host's integer model
(butterflyvit.intmodel) -> "exact". Writes OUT.json and OUT.md (the table, also printed).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
for sub in ("host", "tests", "scripts"):
    if str(REPO / sub) not in sys.path:
        sys.path.insert(0, str(REPO / sub))

import build_firmware  # noqa: E402  (scripts/build_firmware.py)
from beds.firmware import ICOUNT, QemuError, QemuRepl, switches_for_missing_submodules  # noqa: E402
from butterflyvit.harness.protocol import classify_call, parse_ready, parse_result, read_jobs  # noqa: E402
from butterflyvit.harness.transport import HarnessError  # noqa: E402

BACKENDS = ("native", "viper", "python")
# qemu: the emulated Cortex-M3 (Thumb-2 code); qemu-m0plus: the same board running ARMv6-M
# code, what an RP2040's Cortex-M0+ executes (scripts/build_firmware.py --board qemu-m0plus).
PORTS = ("qemu", "qemu-m0plus", "unix")
QEMU_PORTS = ("qemu-m0plus", "qemu")     # the RP2040 estimate from the first one measured
ARTIFACT = {"qemu": "firmware.elf", "qemu-m0plus": "firmware.elf", "unix": "micropython"}
ISA = {"qemu": "Cortex-M3 (ARMv7-M, Thumb-2)", "qemu-m0plus": "ARMv6-M (Cortex-M0+, RP2040)"}
MODEL = REPO / "models" / "pico-fmnist.bvit"
FMNIST_IMAGES = "t10k-images-idx3-ubyte.gz"

# The RP2040 estimate: ARMv6-M instructions (qemu-m0plus; else the Cortex-M3's) x cycles
# per instruction / clock.
# benchmarks/results/native.md measured CPI 1.38 for the kernels' Cortex-M0+ code.
CPI = 1.4
RP2040_HZ = 133e6
# Issue 11's targets: what the numbers are compared with (the script only reports).
TARGETS = {"ms_rp2040": 1000, "ratio_viper_to_native": 5, "heap_peak_bytes": 96 * 1024}


class BenchError(Exception):
    """A problem the user can fix: printed as one `board_path: error: ...` line."""


def rp2040_ms(instructions: float) -> float:
    """Milliseconds on an RP2040 at 133 MHz for this many instructions at CPI 1.4."""
    return instructions * CPI / RP2040_HZ * 1000


# ------------------------------------------------------------------ arguments

def _names(text, known, option):
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise BenchError(f"{option} {text!r}: choose from {', '.join(known)} (comma-separated)")
    return list(dict.fromkeys(names))


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="board_path.py", description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to every port's make (scripts/build_firmware.py); the unix "
               "build switches off btree/ssl by itself when the checkout lacks those submodules.")
    p.add_argument("--micropython", metavar="DIR", default=os.environ.get("MICROPYTHON_DIR"),
                   help="a MicroPython checkout to build from (default: $MICROPYTHON_DIR)")
    p.add_argument("--images", type=int, default=10, metavar="N",
                   help="test images 0..N-1 (default 10)")
    p.add_argument("--backends", default="native,viper", metavar="LIST",
                   help="kernel backends, of native, viper, python (default native,viper; python "
                        "takes about 15x longer than native)")
    p.add_argument("--ports", default="qemu,qemu-m0plus,unix", metavar="LIST",
                   help="qemu (emulated Cortex-M3: instructions), qemu-m0plus (the same board "
                        "running ARMv6-M code, as an RP2040), unix (microseconds); default all")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "board_path"),
                   metavar="PREFIX", help="writes PREFIX.json and PREFIX.md "
                                          "(default benchmarks/results/board_path)")
    p.add_argument("--model", default=str(MODEL), metavar="FILE.bvit",
                   help="the model to freeze and check against (default models/pico-fmnist.bvit)")
    p.add_argument("--build-dir", default=str(REPO / "build" / "board_path"), metavar="DIR",
                   help="where the firmware is built, DIR/qemu and DIR/unix (default build/board_path)")
    p.add_argument("--firmware-dir", metavar="DIR",
                   help="reuse the firmware an earlier run built in DIR (its --build-dir) instead "
                        "of building; its frozen model must be --model")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="the test images: for a grey model the Fashion-MNIST folder (default "
                        "/usr/share/datasets/fashion-mnist); for a colour model CIFAR-10 (the "
                        "pickle directory, its archive, or an image tree; required)")
    p.add_argument("--unix-heap", default="96k", metavar="SIZE",
                   help="the unix port's -X heapsize (default 96k)")
    p.add_argument("--timeout", type=float, default=900, metavar="S",
                   help="seconds one image may take on qemu (default 900)")
    p.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="make jobs for the builds")
    args = build_firmware.parse_with_make_args(p, argv)
    if args.images < 1:
        raise BenchError(f"--images {args.images}: give at least 1")
    args.backends = _names(args.backends, BACKENDS, "--backends")
    args.ports = _names(args.ports, PORTS, "--ports")
    if not Path(args.model).is_file():
        raise BenchError(f"--model {args.model}: no such file")
    if args.firmware_dir:
        for port in args.ports:
            f = Path(args.firmware_dir) / port / ARTIFACT[port]
            if not f.is_file():
                raise BenchError(f"--firmware-dir {args.firmware_dir}: no {port}/{ARTIFACT[port]} "
                                 "(a --build-dir of an earlier run); drop the option to build")
    elif not args.micropython:
        raise BenchError("no MicroPython checkout: pass --micropython DIR or set MICROPYTHON_DIR "
                         "(or --firmware-dir DIR with firmware an earlier run built)")
    elif not (Path(args.micropython) / "py" / "mkrules.mk").is_file():
        raise BenchError(f"--micropython {args.micropython}: not a MicroPython checkout "
                         "(no py/mkrules.mk)")
    if any(p in QEMU_PORTS for p in args.ports) and not shutil.which("qemu-system-arm"):
        raise BenchError("--ports qemu needs qemu-system-arm on PATH (Debian: apt install "
                         "qemu-system-arm), or use --ports unix")
    return args


# ------------------------------------------------------------------ inputs and reference

class Frames(NamedTuple):
    """What the board is sent: frames (bytes) of one size and pixel format."""
    data: list
    w: int
    h: int
    fmt: str
    what: str       # for the report, e.g. "Fashion-MNIST test images 0-9, 28x28 GRAYSCALE"


def load_frames(n, data=None, model=MODEL) -> Frames:
    """The first n test images of the model's kind: Fashion-MNIST as 28x28 GRAYSCALE frames
    for a grey model, CIFAR-10 (`data`) as 32x32 RGB565 frames, a camera's format, for a
    colour one. The board resizes a frame to the model's input either way."""
    from butterflyvit.modelfile import read_model

    if read_model(model).metadata["config"]["in_channels"] == 3:
        return _cifar_frames(n, data)
    from butterflyvit.data import FASHION_MNIST_DIR, read_idx

    path = Path(data or FASHION_MNIST_DIR) / FMNIST_IMAGES
    if not path.is_file():
        raise BenchError(f"{path}: no such file (Debian: apt install dataset-fashion-mnist, or "
                         "give --data DIR)")
    images = read_idx(path)
    if n > len(images):
        raise BenchError(f"--images {n}: {path} has {len(images)}")
    return Frames([images[i].tobytes() for i in range(n)], 28, 28, "GRAYSCALE",
                  f"Fashion-MNIST test images 0-{n - 1}, 28x28 GRAYSCALE")


def _cifar_frames(n, data):
    from butterflyvit.data import DataError, load_cifar10
    from butterflyvit.intmodel import rgb_to_rgb565

    if not data:
        raise BenchError("a colour model: give --data PATH, CIFAR-10 (the pickle directory, "
                         "its archive, or an image tree) for its test images")
    try:
        images = load_cifar10(data).test.images
    except (DataError, FileNotFoundError) as exc:
        raise BenchError(f"--data {data}: {exc}") from None
    if n > len(images):
        raise BenchError(f"--images {n}: {data} has {len(images)} test images")
    return Frames([rgb_to_rgb565(images[i].permute(1, 2, 0).numpy()) for i in range(n)], 32, 32,
                  "RGB565", f"CIFAR-10 test images 0-{n - 1}, 32x32 RGB565")


def host_logits(model, frames: Frames):
    from butterflyvit.intmodel import IntModel

    m = IntModel.load(model)
    return [[int(v) for v in m.forward_frame(f, frames.w, frames.h, frames.fmt).logits]
            for f in frames.data]


# ------------------------------------------------------------------ firmware

def firmware(port, args) -> Path:
    """The port's firmware: the one in --firmware-dir, or built now into --build-dir."""
    if args.firmware_dir:
        return Path(args.firmware_dir).resolve() / port / ARTIFACT[port]
    top = Path(args.micropython)
    extra = list(args.make_args)
    if port == "unix":
        extra += [s for s in switches_for_missing_submodules(top) if s not in extra]
    out = Path(args.build_dir).resolve() / port
    argv = ["--micropython", str(top), "--board", port, "--model", str(args.model), "--out",
            str(out), "--jobs", str(args.jobs)] + (["--", *extra] if extra else [])
    try:
        return build_firmware.build(argv)
    except build_firmware.BuildError as exc:
        raise BenchError(f"building the {port} firmware: {exc}") from None


# ------------------------------------------------------------------ on the board
# The code the board runs: the board agent (device/bvit/agent.py) on the frozen model,
# Classifier(bvitmodel.MODEL, backend=NAME); its result lines are the harness's
# (butterflyvit.harness.protocol), one per image: microseconds, heap peak, logits.

# What the firmware is: its MicroPython, and which model it has frozen (length, CRC-32).
INFO = """import sys, bvitmodel
try:
    from binascii import crc32
except ImportError:
    crc32 = None
print('BVIT-INFO', repr((sys.version, sys.implementation._machine, len(bvitmodel.MODEL),
      crc32(bvitmodel.MODEL) & 0xffffffff if crc32 else -1)))
"""


def start_code(backend_expr):
    """Load the model in the agent (backend_expr: Python for the backend's name) and print
    BVIT-READY. collect=True: the heap pass's peak is the live heap (the timed pass switches
    the collections off)."""
    return ("import gc\nfrom bvit.agent import Agent\n"
            f"_bva = Agent('module:{build_firmware.MODEL_MODULE}', {backend_expr}, collect=True)\n"
            "_bva.ready()\n_bv = _bva.frame\n")


PASS_CODE = "_bva.probe.collect = %r\n"  # the timed pass (False), then the heap pass (True)
PASSES = (False, True)
END_CODE = "_bva.close()\n_bva = _bv = None\ngc.collect()\n"


def parse_info(text, model: Path):
    line = next((ln for ln in text.splitlines() if ln.startswith("BVIT-INFO")), None)
    if line is None:
        raise BenchError("the firmware did not say what it is (was it built with a model frozen, "
                         f"--model?): {text[-300:]!r}")
    version, machine, size, crc = ast.literal_eval(line[len("BVIT-INFO"):].strip())
    data = model.read_bytes()
    if size != len(data) or crc not in (-1, zlib.crc32(data)):
        raise BenchError(f"the firmware's frozen model ({size} bytes) is not --model {model} "
                         f"({len(data)} bytes): rebuild it (drop --firmware-dir)")
    return {"micropython": version.split("; ", 1)[-1], "board": machine}


def backend_record(setup, results, want, backend, scale):
    """One backend's figures from the agent's lines: per image the timed pass's time (x
    scale), the heap pass's time and live heap peak, the logits and whether they match."""
    n = len(want)
    if setup is None or len(results) != 2 * n:
        raise BenchError(f"{backend}: {len(results)} result lines for {2 * n} classifications")
    if setup["backend"] != backend:
        raise BenchError(f"asked for the {backend} kernels, the board ran {setup['backend']}")
    timed, heap = results[:n], results[n:]
    images = [{"time": t["us"] * scale, "time_collected": h["us"] * scale,
               "heap_peak": h["heap_peak"], "heap_before": h["heap_before"], "logits": t["logits"],
               "exact": t["logits"] == w and h["logits"] == w}
              for t, h, w in zip(timed, heap, want)]
    return {"kernels": setup["backend"], "heap_total": setup["heap_total"],
            "heap_after_load": setup["heap_after_load"], "images": images}


def run_qemu(elf, frames, want, backends, model, timeout, port="qemu"):
    """All backends and images in one qemu session; a backend that fails is recorded as
    such (the board restarted) and the next one runs."""
    out = {"firmware": str(elf), "backends": {},
           "machine": f"mps2-an385 (Cortex-M3; {ISA[port]} code), " + subprocess.run(
                ["qemu-system-arm", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
           + ", -icount shift=0", "unit": "instructions"}
    board = QemuRepl(elf, *ICOUNT)
    try:
        out.update(parse_info(board.exec(INFO, 120), model))
        for backend in backends:
            t0 = time.monotonic()
            try:
                if board is None:  # the last backend's error ended it
                    board = QemuRepl(elf, *ICOUNT)
                setup = parse_ready(board.exec(start_code(repr(backend)), timeout))
                results = []
                for collect in PASSES:
                    board.exec(PASS_CODE % collect, 60)
                    for i, f in enumerate(frames.data):
                        text = board.exec(classify_call(i, f, frames.w, frames.h, frames.fmt), timeout)
                        r, why = parse_result(text, i, len(want[i]))
                        if r is None:
                            raise BenchError(f"image {i}: {why}: {text[-300:]!r}")
                        results.append(r)
                board.exec(END_CODE, 60)
                rec = backend_record(setup, results, want, backend, 1000)  # 1 us = 1000 instructions
            except (QemuError, BenchError) as exc:
                rec = {"error": str(exc).splitlines()[0][:300]}
                if board is not None:
                    board.close()
                    board = None
            rec["wall_s"] = round(time.monotonic() - t0, 1)
            out["backends"][backend] = rec
            progress(port, backend, rec)
    finally:
        if board is not None:
            board.close()
    return out


# The unix port runs the same agent calls as a script (one process per backend, each with a
# fresh heap of --unix-heap as a board after a reset): frames as base64 lines of a file,
# each decoded by Agent.frame as the qemu board's are.
UNIX_SCRIPT = """import gc
for _be in {backends!r}:
    print('BVIT-BACKEND', _be)
    try:
{start}
        for _c in {passes!r}:
            _bva.probe.collect = _c
            with open('frames.b64', 'rb') as _f:
                _i = 0
                for _l in _f:
                    _bv(_i, _l.strip(), {w}, {h}, {fmt!r})
                    _i += 1
                    _l = None
{end}
    except Exception as _e:
        print('BVIT-ERROR', repr(_e))
    _bva = _bv = None
    gc.collect()
"""


def unix_script(backends, frames: Frames):
    def indent(code):
        return "\n".join("        " + ln for ln in code.strip().splitlines())
    return INFO + UNIX_SCRIPT.format(backends=tuple(backends), start=indent(start_code("_be")),
                                     passes=PASSES, end=indent(END_CODE), w=frames.w, h=frames.h,
                                     fmt=frames.fmt)


def run_unix(exe, frames, want, backends, model, heap, path=".frozen"):
    """Each backend in its own process of the unix port (path: its MICROPYPATH; the default,
    only what is frozen, so that no device/ folder is used)."""
    import base64

    port = {"firmware": str(exe), "heap": heap, "backends": {}, "unit": "us", "wall_s": 0.0}
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="bvit-board-path-") as tmp:
            tmp = Path(tmp)
            (tmp / "frames.b64").write_bytes(b"".join(base64.b64encode(f) + b"\n" for f in frames.data))
            (tmp / "session.py").write_text(unix_script([backend], frames))
            t0 = time.monotonic()
            p = subprocess.run([str(exe), "-X", f"heapsize={heap}", "session.py"], cwd=tmp,
                               env=dict(os.environ, MICROPYPATH=path), capture_output=True,
                               text=True, timeout=3600)
            port["wall_s"] = round(port["wall_s"] + time.monotonic() - t0, 1)
        if "micropython" not in port:
            port.update(parse_info(p.stdout, model))
        part = p.stdout.split("BVIT-BACKEND ", 1)[1] if "BVIT-BACKEND " in p.stdout else ""
        err = [ln for ln in part.splitlines() if ln.startswith("BVIT-ERROR")]
        try:
            if err or not part:
                raise BenchError(err[0][len("BVIT-ERROR "):] if err else
                                 f"no output (status {p.returncode}): {p.stderr.strip()[-300:]}")
            (job,) = read_jobs(part)
            rec = backend_record(job["setup"], job["results"], want, backend, 1)
        except (BenchError, HarnessError, ValueError) as exc:
            rec = {"error": str(exc).splitlines()[0][:300]}
        port["backends"][backend] = rec
        progress("unix", backend, rec)
    return port


def progress(port, backend, rec):
    if "error" in rec:
        print(f"{port} {backend}: failed: {rec['error']}", flush=True)
    else:
        s = stats(rec)
        print(f"{port} {backend}: median {s['median']:,} per image, exact {s['exact']}, heap peak "
              f"{s['heap_peak']:,} B", flush=True)


# ------------------------------------------------------------------ results

def stats(rec):
    """Median / min / max time, the largest live heap peak, and 'k/n' exact, of a record."""
    t = [im["time"] for im in rec["images"]]
    return {"median": int(statistics.median(t)), "min": min(t), "max": max(t),
            "median_collected": int(statistics.median(im["time_collected"] for im in rec["images"])),
            "heap_peak": max(im["heap_peak"] for im in rec["images"]),
            "heap_between": max(im["heap_before"] for im in rec["images"]),
            "exact": f"{sum(im['exact'] for im in rec['images'])}/{len(rec['images'])}"}


def summarize(ports: dict, meta: dict) -> dict:
    """The JSON: issue 11's headline keys (from qemu), then each port's figures."""
    out = dict(meta)
    ok = bool(ports)
    for port in ports.values():
        for rec in port["backends"].values():
            ok = ok and "error" not in rec and all(im["exact"] for im in rec["images"])
    qport = next((p for p in QEMU_PORTS if p in ports), "qemu")
    q = {b: stats(r) for b, r in ports.get(qport, {}).get("backends", {}).items() if "error" not in r}
    native, viper = q.get("native", {}).get("median"), q.get("viper", {}).get("median")
    out.update({
        "instructions_of": ISA.get(qport),
        "instructions_per_image": native,
        "viper_instructions_per_image": viper,
        "ratio_viper_to_native": round(viper / native, 2) if native and viper else None,
        "ms_rp2040": round(rp2040_ms(native), 1) if native else None,
        "viper_ms_rp2040": round(rp2040_ms(viper), 1) if viper else None,
        "cpi": CPI, "rp2040_mhz": RP2040_HZ / 1e6,
        "exact": ok,
        "heap_peak_bytes": {b: s["heap_peak"] for b, s in q.items()},
    })
    if "python" in q:
        out["python_instructions_per_image"] = q["python"]["median"]
    for other in QEMU_PORTS:                    # the other emulated board's medians
        if other != qport and other in ports:
            out[other.replace("-", "_") + "_instructions_per_image"] = {
                b: stats(r)["median"] for b, r in ports[other]["backends"].items() if "error" not in r}
    heap = out["heap_peak_bytes"].get("native")
    out["targets"] = dict(TARGETS, exact=True)
    out["targets_met"] = {
        "ms_rp2040": out["ms_rp2040"] is not None and out["ms_rp2040"] <= TARGETS["ms_rp2040"],
        "ratio_viper_to_native": (out["ratio_viper_to_native"] or 0) >= TARGETS["ratio_viper_to_native"],
        "heap_peak_bytes": heap is not None and heap <= TARGETS["heap_peak_bytes"],
        "exact": ok}
    if "unix" in ports:
        u = ports["unix"]
        out["unix"] = {"micropython": u.get("micropython"), "board": u.get("board"),
                       "heap": u["heap"], "backends": {}}
        for b, r in u["backends"].items():
            if "error" in r:
                out["unix"]["backends"][b] = {"error": r["error"]}
                continue
            s = stats(r)
            out["unix"]["backends"][b] = {"median_us": s["median"], "min_us": s["min"],
                                          "heap_peak_bytes": s["heap_peak"], "exact": s["exact"]}
    out["ports"] = ports
    return out


def _kb(n):
    return f"{n / 1024:.1f} KB"


def _yes(flag, measured=True):
    if not measured:
        return "not measured in this run"
    return "met" if flag else "**not met**"


def markdown(res: dict) -> str:
    lines = [
        "# The board's path end to end: classify on MicroPython firmware with the native module",
        "",
        f"Command: `{res['command']}` (writes this file and the `.json` beside it; "
        f"{res['wall_s']:.0f} s in all, builds included).",
        f"Firmware: {res['micropython']}, built by `scripts/build_firmware.py` ({res['firmware']}) "
        "with `native/` as user C module, the device code and the model frozen (the model read "
        f"in place from flash). Model: `{res['model']}`, {res['model_bytes']:,} bytes. Images: "
        f"{res['frames']} frames sent to the board; every logit vector, on every backend and in "
        "both passes, compared with `butterflyvit.intmodel` (*exact*).",
    ]
    for qport in QEMU_PORTS:
        q = res["ports"].get(qport)
        if not q:
            continue
        lines += ["", f"## Emulated board, {ISA[qport]} code: {q['machine']}", "",
                  "| kernels | exact | instructions / image (median) | min - max | RP2040 estimate "
                  "(x CPI 1.4 / 133 MHz) | with a collection at each probe | heap peak (live) | "
                  "heap between images |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for b, r in q["backends"].items():
            if "error" in r:
                lines.append(f"| {b} | - | failed: {r['error']} | | | | | |")
                continue
            s = stats(r)
            lines.append(f"| {r['kernels']} | {s['exact']} | {s['median'] / 1e6:,.1f} M | "
                         f"{s['min'] / 1e6:,.1f} - {s['max'] / 1e6:,.1f} M | "
                         f"{rp2040_ms(s['median']):,.0f} ms | {s['median_collected'] / 1e6:,.1f} M | "
                         f"{_kb(s['heap_peak'])} | {_kb(s['heap_between'])} |")
    heap = res["heap_peak_bytes"].get("native")
    if res.get("instructions_of"):
        lines += ["", f"Targets (issue 11; {res['instructions_of']} instructions):", "",
                  "| target | measured | |", "|---|---:|---|",
                  f"| RP2040 estimate <= {TARGETS['ms_rp2040']} ms per image (native) | "
                  f"{format(res['ms_rp2040'], ',.0f') if res['ms_rp2040'] is not None else '-'} ms | "
                  f"{_yes(res['targets_met']['ms_rp2040'], res['ms_rp2040'] is not None)} |",
                  f"| native >= {TARGETS['ratio_viper_to_native']}x fewer instructions than viper | "
                  f"{res['ratio_viper_to_native'] if res['ratio_viper_to_native'] else '-'}x | "
                  f"{_yes(res['targets_met']['ratio_viper_to_native'], bool(res['ratio_viper_to_native']))} |",
                  f"| heap peak within 96 KB (native) | {_kb(heap) if heap else '-'} | "
                  f"{_yes(res['targets_met']['heap_peak_bytes'], bool(heap))} |",
                  f"| bit-exact, all images and backends | {'yes' if res['exact'] else 'no'} | "
                  f"{_yes(res['exact'])} |"]
    u = res["ports"].get("unix")
    if u:
        host = res.get("host")
        lines += ["", f"## unix port ({u.get('board', '?')}, `-X heapsize={u['heap']}`)", ""]
        if host:
            lines += [f"Wall clock on a host with {host['cores']} cores, load average "
                      f"{host['load_average']} when the run ended: *best* is the least disturbed "
                      "image.", ""]
        lines += ["| kernels | exact | ms / image (median) | best | with a collection at each probe | "
                  "heap peak (live) | heap between images |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for b, r in u["backends"].items():
            if "error" in r:
                lines.append(f"| {b} | - | failed: {r['error']} | | | | |")
                continue
            s = stats(r)
            lines.append(f"| {r['kernels']} | {s['exact']} | {s['median'] / 1000:,.1f} | "
                         f"{s['min'] / 1000:,.1f} | {s['median_collected'] / 1000:,.1f} | "
                         f"{_kb(s['heap_peak'])} | {_kb(s['heap_between'])} |")
    lines += [
        "", "What the numbers mean:",
        "- Time: `time.ticks_us` around `Classifier.classify_frame` in the board agent "
        "(`bvit.agent`): frame -> tokens -> logits, the model loaded once. On qemu with "
        "`-icount shift=0` one virtual nanosecond is one instruction, so the counts are exact "
        "(1,000-instruction resolution) and the same on every run; on the unix port (64-bit, "
        "a desktop core) they are wall-clock and vary with the host's load.",
        "- Two builds of the same emulated board: Cortex-M3 code (Thumb-2), and ARMv6-M code "
        "(`--board qemu-m0plus`: C compiled `-mcpu=cortex-m0plus`, frozen code `-march=armv6m`), "
        "the instruction set of an RP2040's Cortex-M0+, so its counts are the instructions a "
        "Pico executes (the M3 runs every ARMv6-M instruction). The RP2040 column is "
        "instructions x 1.4 cycles per instruction / 133 MHz; `benchmarks/results/native.md` "
        "measured CPI 1.38 for the kernels' Cortex-M0+ code (flash cache misses not modelled), "
        "so it is an estimate, not a measurement on the chip. The headline keys of the JSON come "
        "from the ARMv6-M build when it ran.",
        "- Heap: a second pass over the same images with `gc.collect()` at each of the "
        "forward's probes (block boundaries): *heap peak* is the largest live heap seen "
        "(the model's RAM buffers, the frame, the objects in use; frozen code and the frozen "
        "model are in flash, not on the heap). That pass's time is the *with a collection* "
        "column (what `classify.py` pays: it probes the same way); the first pass runs without "
        "them. *Heap between images*: the live heap after the collection before each image "
        "(what stays allocated: the model's buffers, the agent).",
    ]
    return "\n".join(lines) + "\n"


def write(res: dict, out) -> str:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    return md


def command_line(argv) -> str:
    return "python benchmarks/board_path.py " + " ".join(shlex.quote(a) for a in argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    t0 = time.monotonic()
    try:
        args = parse_args(argv)
        model = Path(args.model).resolve()
        frames = load_frames(args.images, args.data, model)
        want = host_logits(model, frames)
        elfs, build_s = {}, {}
        for port in args.ports:
            t = time.monotonic()
            elfs[port] = firmware(port, args)
            build_s[port] = round(time.monotonic() - t, 1)
        ports = {}
        for qport in QEMU_PORTS[::-1]:
            if qport in args.ports:
                ports[qport] = run_qemu(elfs[qport], frames, want, args.backends, model,
                                        args.timeout, qport)
        if "unix" in args.ports:
            ports["unix"] = run_unix(elfs["unix"], frames, want, args.backends, model, args.unix_heap)
    except (BenchError, QemuError) as exc:
        print(f"board_path: error: {exc}", file=sys.stderr)
        return 2
    for port in ports:
        ports[port]["build_s"] = build_s[port]
    version = next((p["micropython"] for p in ports.values() if p.get("micropython")), "unknown")
    meta = {"command": command_line(argv), "micropython": version,
            "model": str(model.relative_to(REPO)) if model.is_relative_to(REPO) else str(model),
            "model_bytes": model.stat().st_size, "images": args.images, "frames": frames.what,
            "backends": args.backends, "wall_s": round(time.monotonic() - t0, 1),
            "host": {"cores": os.cpu_count(), "load_average": round(os.getloadavg()[0], 1)},
            "firmware": (f"built by an earlier run, reused from {args.firmware_dir}"
                         if args.firmware_dir else "built by this run")}
    res = summarize(ports, meta)
    print(write(res, args.out))
    return 0 if res["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
